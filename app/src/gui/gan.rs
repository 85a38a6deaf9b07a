//! The training tab's stage-2 parts: the adversarial fine-tuning settings and its curves (the
//! hinge losses, the regression term, the adaptive weight).

use ard_engine::gan::{GAN_METRICS, describe_metrics};
use eframe::egui;
use egui_plot::{Legend, Line, Plot, PlotPoints};

use super::grid_row;
use super::training::TrainingPanel;

/// The GAN plots, each with its curves (indices into `GAN_METRICS`): the two hinge losses, the
/// regression term, the adaptive weight.
const GAN_PLOTS: [(&str, &[usize]); 3] = [
    ("gan hinge", &[1, 2]),
    ("gan regression", &[0]),
    ("gan weight", &[3]),
];

impl TrainingPanel {
    /// The adversarial stage's settings (stage 2, after distillation or on a student file).
    pub(super) fn gan_form(&mut self, ui: &mut egui::Ui) {
        ui.add_space(6.0);
        ui.checkbox(
            &mut self.adversarial,
            "Adversarial fine-tuning (stage 2: GAN on the teacher's features)",
        );
        if !self.adversarial {
            return;
        }
        ui.checkbox(
            &mut self.gan_from_file,
            "Fine-tune a student file (skip distillation)",
        );
        if self.gan_from_file {
            let name = ui.label("Distilled student");
            ui.horizontal(|ui| {
                ui.text_edit_singleline(&mut self.gan_student)
                    .labelled_by(name.id);
                if ui.button("Browse…").clicked()
                    && let Some(file) = rfd::FileDialog::new()
                        .add_filter("weights", &["safetensors", "pt", "pth"])
                        .pick_file()
                {
                    self.gan_student = file.display().to_string();
                }
            });
        }
        let name = ui.label("Real images for the discriminator");
        ui.text_edit_singleline(&mut self.gan_data)
            .labelled_by(name.id);
        egui::Grid::new("gan form").num_columns(2).show(ui, |ui| {
            let g = &mut self.gan;
            grid_row(
                ui,
                "GAN iterations",
                egui::DragValue::new(&mut g.train.iterations).range(1..=10_000_000),
            );
            grid_row(
                ui,
                "GAN batch",
                egui::DragValue::new(&mut g.train.batch_size).range(2..=1024),
            );
            grid_row(
                ui,
                "Generator lr",
                egui::DragValue::new(&mut g.train.lr)
                    .speed(1e-5)
                    .range(1e-7..=1e-2),
            );
            grid_row(
                ui,
                "Discriminator lr",
                egui::DragValue::new(&mut g.disc_lr)
                    .speed(1e-5)
                    .range(1e-7..=1e-1),
            );
            grid_row(
                ui,
                "Weight factor",
                egui::DragValue::new(&mut g.weight_factor)
                    .speed(0.01)
                    .range(0.0..=100.0),
            )
            .on_hover_text(
                "Times the ratio of the regression and GAN gradient norms at the last layer",
            );
            grid_row(
                ui,
                "GAN warm-up",
                egui::DragValue::new(&mut g.warmup).range(0..=1_000_000),
            )
            .on_hover_text("Iterations in which only the discriminator learns from the GAN loss");
        });
    }

    /// The adversarial phase's curves: regression and adversarial terms, discriminator loss,
    /// adaptive weight.
    pub(super) fn gan_plot(&self, ui: &mut egui::Ui) {
        let Some((iteration, last)) = self.gan_metrics.last() else {
            return;
        };
        ui.label(format!(
            "GAN iteration {iteration}: {}",
            describe_metrics(last, ", ")
        ));
        // Three scales: the hinge losses (~1), the regression (~1e-3), the weight.
        ui.columns(GAN_PLOTS.len(), |cols| {
            for (col, (title, curves)) in cols.iter_mut().zip(GAN_PLOTS) {
                Plot::new(title)
                    .height(160.0)
                    .legend(Legend::default())
                    .x_axis_label("iteration")
                    .show(col, |plot| {
                        for &i in curves {
                            let points: Vec<[f64; 2]> = self
                                .gan_metrics
                                .iter()
                                .map(|(it, v)| [*it as f64, v[i] as f64])
                                .collect();
                            plot.line(Line::new(GAN_METRICS[i], PlotPoints::from(points)));
                        }
                    });
            }
        });
    }
}
