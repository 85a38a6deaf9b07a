//! The model panel's parts: what a loaded model is, and how the next file is loaded (its
//! precision, and what reference files without metadata cannot say about themselves).

use ard_engine::ModelKind;
use ard_engine::model::{LoadOptions, Precision};
use ard_engine::studio::ModelInfo;
use eframe::egui;

/// How files are loaded: applies to the next file opened or dropped.
#[derive(Clone, Debug, Default)]
pub struct LoadingOptions {
    /// Weights and activations of the next model (f16 / bf16 where the device computes in them).
    pub precision: Precision,
    /// Attention heads of files without ARD Studio metadata (their shapes cannot tell).
    pub heads: Option<usize>,
    /// History layers N of students without ARD Studio metadata.
    pub history: Option<usize>,
}

impl LoadingOptions {
    pub fn options(&self) -> LoadOptions {
        LoadOptions {
            num_heads: self.heads,
            history_layers: self.history,
        }
    }

    pub fn show(&mut self, ui: &mut egui::Ui) {
        egui::CollapsingHeader::new("Loading")
            .id_salt("reference options")
            .show(ui, |ui| {
                ui.horizontal(|ui| {
                    ui.label("Precision");
                    egui::ComboBox::from_id_salt("precision")
                        .selected_text(self.precision.to_string())
                        .show_ui(ui, |ui| {
                            for p in [Precision::F32, Precision::F16, Precision::BF16] {
                                ui.selectable_value(&mut self.precision, p, p.to_string());
                            }
                        })
                        .response
                        .on_hover_text(
                            "Weights and activations of the next model loaded: f16 or bf16 halve \
                             its memory (the GPU's fast path; slower on a CPU).",
                        );
                });
                ui.label(egui::RichText::new("Files without metadata").strong());
                ui.small(
                    "Reference checkpoints carry only tensors: give what their shapes cannot tell.",
                );
                optional_count(ui, "Attention heads", &mut self.heads, 16);
                optional_count(ui, "History layers N", &mut self.history, 6);
            });
    }
}

/// A number the user may leave unset ("from the file").
fn optional_count(ui: &mut egui::Ui, label: &str, value: &mut Option<usize>, default: usize) {
    ui.horizontal(|ui| {
        let mut set = value.is_some();
        if ui.checkbox(&mut set, label).changed() {
            *value = set.then_some(default);
        }
        if let Some(v) = value {
            ui.add(egui::DragValue::new(v).range(0..=64))
                .on_hover_text(label);
        }
    });
}

/// Kind, architecture, parameters and classes of a loaded model.
pub fn model_panel(ui: &mut egui::Ui, info: Option<&ModelInfo>, title: &str) {
    let Some(m) = info else {
        ui.label(format!("{title}: none"));
        return;
    };
    ui.label(egui::RichText::new(format!("{title}: {}", m.source)).strong());
    let kind = match m.kind {
        ModelKind::Teacher => "teacher (DDIM + guidance)".to_string(),
        ModelKind::Student => format!(
            "ARD student, {} steps{}",
            m.steps,
            match m.history_layers {
                Some(0) => " (step-distillation baseline)".to_string(),
                Some(n) => format!(", history in {n} blocks"),
                None => String::new(),
            }
        ),
    };
    ui.label(kind);
    ui.small(&m.architecture);
    let precision = if m.precision.is_f32() {
        String::new()
    } else {
        format!(" · {}", m.precision)
    };
    ui.small(format!(
        "{:.2} M parameters{precision} · {} classes · fingerprint {}",
        m.params as f64 / 1e6,
        m.class_names.len(),
        m.fingerprint
    ));
}
