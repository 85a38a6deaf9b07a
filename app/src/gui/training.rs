//! The training tab: choose a teacher (or train one on a dataset), N, K, batch and iterations;
//! run trajectory generation and distillation in the engine, and optionally the adversarial
//! stage after it; follow every phase with progress bars and ETA, a live loss plot (and the
//! GAN's generator, discriminator and adaptive-weight curves) and sample previews; stop, resume,
//! load the result.

use std::path::PathBuf;

use ard_engine::data::{DEFAULT_DATASET, IMAGE_FOLDER_CHANNELS, IMAGE_FOLDER_SIZE};
use ard_engine::distill::DistillLoss;
use ard_engine::distill::TrajectoryOptions;
use ard_engine::eval::EvalPoint;
use ard_engine::gan::GanOptions;
use ard_engine::jobs::{DistillOptions, TeacherOptions};
use ard_engine::model::LoadOptions;
use ard_engine::studio::{
    EvalRequest, GanRequest, Phase, Request, TeacherSource, TrainingEvent, TrainingRequest,
};
use ard_engine::train::{LrSchedule, SAMPLE_EVERY};
use eframe::egui;

use super::grid_row;
use egui_plot::{Legend, Line, Plot, PlotPoints};

/// Progress of one phase.
#[derive(Clone, Debug, Default)]
pub struct PhaseProgress {
    pub done: u64,
    pub total: u64,
    pub eta_s: f64,
    pub started: bool,
}

/// The training tab's state: the engine's option structs, edited in place (their defaults are
/// the `ard` commands' defaults).
pub struct TrainingPanel {
    pub teacher_file: String,
    pub train_teacher: bool,
    pub dataset: String,
    pub teacher: TeacherOptions,
    pub trajectories: TrajectoryOptions,
    pub distill: DistillOptions,
    pub preview_every: u64,
    /// Score the student along the way (FID, class agreement) with this feature network.
    pub evaluate: bool,
    pub eval: EvalRequest,
    /// The feature network's path as typed (`eval.feature_net` once a run starts).
    pub feature_net: String,
    /// Fine-tune the student adversarially after distilling it (stage 2).
    pub adversarial: bool,
    pub gan: GanOptions,
    /// Real images for the discriminator.
    pub gan_data: String,
    /// Fine-tune this student file instead of the run's own distillation (then skipped).
    pub gan_from_file: bool,
    pub gan_student: String,
    pub run_dir: String,
    pub running: bool,
    pub status: String,
    pub progress: [PhaseProgress; 4],
    /// (iteration, loss) per phase.
    pub losses: [Vec<[f64; 2]>; 4],
    /// The adversarial phase's loss parts per iteration (`GAN_METRICS`).
    pub gan_metrics: Vec<(u64, Vec<f32>)>,
    pub preview: Option<(String, egui::TextureHandle)>,
    /// The run's evaluation points per phase, and why there are none when the engine could not
    /// score.
    pub eval_points: [Vec<EvalPoint>; 4],
    pub eval_note: Option<String>,
    /// The distilled student once a run finishes.
    pub result: Option<PathBuf>,
}

fn index(phase: Phase) -> usize {
    match phase {
        Phase::Teacher => 0,
        Phase::Trajectories => 1,
        Phase::Distillation => 2,
        Phase::Adversarial => 3,
    }
}

const PHASE_NAMES: [&str; 4] = ["Teacher", "Trajectories", "Distillation", "GAN fine-tuning"];

fn fmt_eta(s: f64) -> String {
    if !s.is_finite() {
        return "–".into();
    }
    let s = s.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn loss_name(l: DistillLoss) -> &'static str {
    match l {
        DistillLoss::Mse => "MSE",
        DistillLoss::PseudoHuber => "pseudo-Huber",
        DistillLoss::L1 => "L1",
    }
}

impl TrainingPanel {
    /// FID of the EMA and raw weights over the run, and the latest class agreement.
    fn eval_plot(&self, ui: &mut egui::Ui) {
        if let Some(note) = &self.eval_note {
            ui.weak(format!("No evaluation: {note}"));
        }
        // The latest phase that has points speaks in the label; each phase has its curves.
        let Some((phase, last)) = (0..4)
            .rev()
            .find_map(|i| self.eval_points[i].last().map(|p| (i, p)))
        else {
            return;
        };
        ui.label(format!(
            "{} iteration {}: FID {:.2} (EMA) / {:.2} (raw), class agreement {:.1}% / {:.1}% on {} samples",
            PHASE_NAMES[phase],
            last.iteration,
            last.ema.fid,
            last.raw.fid,
            100.0 * last.ema.class_agreement,
            100.0 * last.raw.class_agreement,
            last.samples
        ));
        let series = |points: &[EvalPoint], f: fn(&EvalPoint) -> f64| -> Vec<[f64; 2]> {
            points.iter().map(|p| [p.iteration as f64, f(p)]).collect()
        };
        Plot::new("eval")
            .height(180.0)
            .legend(Legend::default())
            .x_axis_label("iteration")
            .y_axis_label("FID")
            .show(ui, |plot| {
                for (i, points) in self.eval_points.iter().enumerate() {
                    if points.is_empty() {
                        continue;
                    }
                    let name = PHASE_NAMES[i].to_lowercase();
                    plot.line(Line::new(
                        format!("FID (EMA), {name}"),
                        PlotPoints::from(series(points, |p| p.ema.fid)),
                    ));
                    plot.line(Line::new(
                        format!("FID (raw), {name}"),
                        PlotPoints::from(series(points, |p| p.raw.fid)),
                    ));
                }
            });
    }

    pub fn new(runs_dir: PathBuf) -> Self {
        Self {
            teacher_file: super::assets_dir()
                .join("teacher.safetensors")
                .display()
                .to_string(),
            train_teacher: false,
            dataset: DEFAULT_DATASET.into(),
            teacher: TeacherOptions::default(),
            trajectories: TrajectoryOptions::default(),
            distill: DistillOptions::default(),
            preview_every: SAMPLE_EVERY,
            evaluate: true,
            eval: EvalRequest::new(PathBuf::new(), DEFAULT_DATASET),
            feature_net: super::assets_dir()
                .join("feature_net.safetensors")
                .display()
                .to_string(),
            adversarial: false,
            gan: GanOptions::default(),
            gan_data: DEFAULT_DATASET.into(),
            gan_from_file: false,
            gan_student: super::assets_dir()
                .join("ard.safetensors")
                .display()
                .to_string(),
            run_dir: runs_dir.join("studio-run").display().to_string(),
            running: false,
            status: String::new(),
            progress: Default::default(),
            losses: Default::default(),
            gan_metrics: Vec::new(),
            preview: None,
            eval_points: Default::default(),
            eval_note: None,
            result: None,
        }
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The request the Start button sends.
    pub fn request(&self) -> TrainingRequest {
        TrainingRequest {
            run_dir: PathBuf::from(&self.run_dir),
            teacher: if self.train_teacher {
                TeacherSource::Train {
                    dataset: self.dataset.clone(),
                    image_size: IMAGE_FOLDER_SIZE,
                    channels: IMAGE_FOLDER_CHANNELS,
                    options: self.teacher.clone(),
                }
            } else {
                TeacherSource::File(PathBuf::from(&self.teacher_file))
            },
            trajectories: self.trajectories.clone(),
            distill: self.distill.clone(),
            preview_every: self.preview_every,
            eval: self.evaluate.then(|| EvalRequest {
                feature_net: PathBuf::from(&self.feature_net),
                ..self.eval.clone()
            }),
            gan: self.adversarial.then(|| GanRequest {
                student: self.gan_from_file.then(|| PathBuf::from(&self.gan_student)),
                data: self.gan_data.clone(),
                options: self.gan.clone(),
            }),
        }
    }

    pub fn on_event(&mut self, ctx: &egui::Context, event: TrainingEvent) {
        match event {
            TrainingEvent::Phase { phase } => {
                self.progress[index(phase)].started = true;
                self.status = format!("{} phase", PHASE_NAMES[index(phase)]);
            }
            TrainingEvent::Progress {
                phase,
                done,
                total,
                loss,
                eta_s,
                ..
            } => {
                self.progress[index(phase)] = PhaseProgress {
                    done,
                    total,
                    eta_s,
                    started: true,
                };
                if let Some(loss) = loss {
                    let losses = &mut self.losses[index(phase)];
                    // A resumed run repeats nothing, but a restarted one starts over: keep one
                    // point per iteration.
                    losses.retain(|p| p[0] < done as f64);
                    losses.push([done as f64, loss as f64]);
                }
            }
            TrainingEvent::Resumed { phase, iteration } => {
                self.status = format!(
                    "{} resumed at iteration {iteration}",
                    PHASE_NAMES[index(phase)]
                );
            }
            TrainingEvent::Preview {
                phase,
                iteration,
                image,
                ..
            } => {
                let texture = ctx.load_texture(
                    "training preview",
                    super::canvas::color_image(&image),
                    egui::TextureOptions::NEAREST,
                );
                self.preview = Some((
                    format!(
                        "{} samples at iteration {iteration}",
                        PHASE_NAMES[index(phase)]
                    ),
                    texture,
                ));
            }
            TrainingEvent::Finished { student } => {
                self.running = false;
                self.status = format!("finished: {}", student.display());
                self.result = Some(student);
            }
            TrainingEvent::Checkpoint { .. } | TrainingEvent::Saved { .. } => {}
            TrainingEvent::Stopped { phase, .. } => {
                self.running = false;
                self.status = format!(
                    "stopped during the {} phase; Start resumes",
                    PHASE_NAMES[index(phase)].to_lowercase()
                );
            }
            TrainingEvent::Eval { phase, point } => {
                let points = &mut self.eval_points[index(phase)];
                points.retain(|p| p.iteration < point.iteration);
                points.push(point);
            }
            TrainingEvent::Metrics {
                iteration, values, ..
            } => {
                self.gan_metrics.retain(|(i, _)| *i < iteration);
                self.gan_metrics.push((iteration, values));
            }
            TrainingEvent::EvalUnavailable { reason } => self.eval_note = Some(reason),
            TrainingEvent::Failed { message } => {
                self.running = false;
                self.status = format!("failed: {message}");
            }
        }
    }

    /// Draws the tab; returns a request for the engine when a button asks for one.
    pub fn show(&mut self, ui: &mut egui::Ui, loaded_teacher: Option<&str>) -> Option<Request> {
        let mut request = None;
        egui::Panel::left("training form")
            .resizable(true)
            .default_size(320.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    request = self.form(ui, loaded_teacher);
                });
            });
        egui::CentralPanel::default().show(ui, |ui| self.monitor(ui));
        request
    }

    fn form(&mut self, ui: &mut egui::Ui, loaded_teacher: Option<&str>) -> Option<Request> {
        ui.heading("Distillation");
        ui.add_enabled_ui(!self.running, |ui| {
            self.teacher_form(ui, loaded_teacher);
            ui.add_space(6.0);
            self.distill_form(ui);
            self.eval_form(ui);
            self.gan_form(ui);
            let name = ui.label("Run folder (the same folder resumes)");
            ui.text_edit_singleline(&mut self.run_dir)
                .labelled_by(name.id);
        });
        ui.add_space(8.0);
        self.buttons(ui)
    }

    /// Where the teacher comes from: trained first on a dataset, or a weight file.
    fn teacher_form(&mut self, ui: &mut egui::Ui, loaded_teacher: Option<&str>) {
        ui.checkbox(&mut self.train_teacher, "Train a new teacher first");
        if self.train_teacher {
            let name = ui.label("Dataset (fashion-mnist or an ImageFolder / IDX folder)");
            ui.horizontal(|ui| {
                ui.text_edit_singleline(&mut self.dataset)
                    .labelled_by(name.id);
                if ui.button("Browse…").clicked()
                    && let Some(dir) = rfd::FileDialog::new().pick_folder()
                {
                    self.dataset = dir.display().to_string();
                }
            });
            egui::Grid::new("teacher form")
                .num_columns(2)
                .show(ui, |ui| {
                    grid_row(
                        ui,
                        "Teacher iterations",
                        egui::DragValue::new(&mut self.teacher.train.iterations)
                            .range(1..=1_000_000),
                    );
                    grid_row(
                        ui,
                        "Hidden size",
                        egui::DragValue::new(&mut self.teacher.hidden_size).range(16..=1152),
                    );
                    grid_row(
                        ui,
                        "Depth",
                        egui::DragValue::new(&mut self.teacher.depth).range(1..=28),
                    );
                });
        } else {
            let name = ui.label("Teacher weights");
            ui.horizontal(|ui| {
                ui.text_edit_singleline(&mut self.teacher_file)
                    .labelled_by(name.id);
                if ui.button("Browse…").clicked()
                    && let Some(file) = rfd::FileDialog::new()
                        .add_filter("weights", &["safetensors", "pt", "pth"])
                        .pick_file()
                {
                    self.teacher_file = file.display().to_string();
                }
            });
            if let Some(t) = loaded_teacher {
                ui.weak(format!("(the loaded teacher is {t})"));
            }
        }
    }

    /// The distillation's settings.
    fn distill_form(&mut self, ui: &mut egui::Ui) {
        egui::Grid::new("distill form")
            .num_columns(2)
            .show(ui, |ui| {
                grid_row(
                    ui,
                    "History layers N",
                    egui::DragValue::new(&mut self.distill.history_layers).range(0..=28),
                )
                .on_hover_text(
                    "Lower blocks that attend to the trajectory so far (0 = step distillation)",
                );
                grid_row(
                    ui,
                    "Steps K",
                    egui::DragValue::new(&mut self.trajectories.student_steps).range(1..=8),
                );
                grid_row(
                    ui,
                    "Trajectories",
                    egui::DragValue::new(&mut self.trajectories.count).range(1..=1_000_000),
                );
                grid_row(
                    ui,
                    "Batch",
                    egui::DragValue::new(&mut self.distill.train.batch_size).range(1..=1024),
                );
                grid_row(
                    ui,
                    "Iterations",
                    egui::DragValue::new(&mut self.distill.train.iterations).range(1..=10_000_000),
                );
                grid_row(
                    ui,
                    "Learning rate",
                    egui::DragValue::new(&mut self.distill.train.lr)
                        .speed(1e-5)
                        .range(1e-6..=1e-2),
                );
                let mut cosine =
                    matches!(self.distill.train.lr_schedule, LrSchedule::Cosine { .. });
                let name = ui.label("Cosine schedule");
                if ui
                    .checkbox(&mut cosine, "")
                    .labelled_by(name.id)
                    .on_hover_text(
                        "Warm-up, then a half cosine down to a small fraction of the rate",
                    )
                    .changed()
                {
                    self.distill.train.lr_schedule = if cosine {
                        LrSchedule::cosine()
                    } else {
                        LrSchedule::Constant
                    };
                }
                ui.end_row();
                let name = ui.label("Loss");
                egui::ComboBox::from_id_salt("distill loss")
                    .selected_text(loss_name(self.distill.loss))
                    .show_ui(ui, |ui| {
                        for l in [DistillLoss::Mse, DistillLoss::PseudoHuber, DistillLoss::L1] {
                            ui.selectable_value(&mut self.distill.loss, l, loss_name(l));
                        }
                    })
                    .response
                    .labelled_by(name.id);
                ui.end_row();
                grid_row(
                    ui,
                    "Self-forced share",
                    egui::DragValue::new(&mut self.distill.self_forcing.fraction)
                        .speed(0.01)
                        .range(0.0..=1.0),
                )
                .on_hover_text(format!(
                    "Share of each batch trained on the student's own earlier steps instead \
                     of the teacher's (0 = teacher forcing, the paper's); from iteration {}, \
                     ramped up over {}",
                    self.distill.self_forcing.start, self.distill.self_forcing.ramp
                ));
                grid_row(
                    ui,
                    "Preview every",
                    egui::DragValue::new(&mut self.preview_every).range(0..=100_000),
                );
            });
    }

    /// Evaluation while distilling.
    fn eval_form(&mut self, ui: &mut egui::Ui) {
        ui.checkbox(
            &mut self.evaluate,
            "Evaluate while distilling (FID, class agreement)",
        );
        if self.evaluate {
            egui::Grid::new("eval form").num_columns(2).show(ui, |ui| {
                grid_row(
                    ui,
                    "Evaluate every",
                    egui::DragValue::new(&mut self.eval.every).range(1..=1_000_000),
                );
                grid_row(
                    ui,
                    "Samples",
                    egui::DragValue::new(&mut self.eval.samples).range(2..=100_000),
                );
            });
            let name = ui.label("Feature network");
            ui.text_edit_singleline(&mut self.feature_net)
                .labelled_by(name.id);
        }
    }

    /// Start / resume, Stop and Load result; the request a click makes.
    fn buttons(&mut self, ui: &mut egui::Ui) -> Option<Request> {
        let mut request = None;
        ui.horizontal(|ui| {
            if self.running {
                if ui.button("Stop").clicked() {
                    self.status = "stopping after the current step…".into();
                    request = Some(Request::StopTraining);
                }
                ui.spinner();
            } else if ui.button("Start / resume").clicked() {
                self.running = true;
                self.result = None;
                self.eval_points = Default::default();
                self.eval_note = None;
                self.gan_metrics.clear();
                self.progress = Default::default();
                self.status = "starting…".into();
                request = Some(Request::StartTraining(Box::new(self.request())));
            }
            if let Some(result) = &self.result
                && ui.button("Load result").clicked()
            {
                request = Some(Request::LoadWeights {
                    path: result.clone(),
                    options: LoadOptions::default(),
                    precision: Default::default(),
                });
            }
        });
        request
    }

    fn monitor(&mut self, ui: &mut egui::Ui) {
        if !self.status.is_empty() {
            ui.label(&self.status);
        }
        for (i, p) in self.progress.iter().enumerate() {
            // Optional phases show once they start (distillation is skipped when a student
            // file is fine-tuned).
            let optional = i == 0 || i == 3 || (i == 2 && self.adversarial && self.gan_from_file);
            if optional && !p.started {
                continue;
            }
            let fraction = if p.total > 0 {
                p.done as f32 / p.total as f32
            } else {
                0.0
            };
            ui.horizontal(|ui| {
                ui.label(format!("{:<13}", PHASE_NAMES[i]));
                ui.add(egui::ProgressBar::new(fraction).text(if p.total > 0 {
                    format!("{}/{} · ETA {}", p.done, p.total, fmt_eta(p.eta_s))
                } else {
                    "waiting".into()
                }));
            });
        }
        ui.add_space(6.0);
        Plot::new("loss")
            .height(220.0)
            .legend(Legend::default())
            .x_axis_label("iteration")
            .y_axis_label("loss")
            .show(ui, |plot| {
                for (i, losses) in self.losses.iter().enumerate() {
                    if !losses.is_empty() {
                        plot.line(Line::new(
                            format!("{} loss", PHASE_NAMES[i]),
                            PlotPoints::from(losses.clone()),
                        ));
                    }
                }
            });
        self.gan_plot(ui);
        self.eval_plot(ui);
        if let Some((caption, texture)) = &self.preview {
            ui.label(caption);
            let size = texture.size_vec2();
            let scale = (ui.available_width() / size.x).min(3.0);
            ui.add(egui::Image::new(egui::load::SizedTexture::new(
                texture.id(),
                size * scale,
            )));
        }
    }
}
