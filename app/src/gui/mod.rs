//! The ARD Studio window: conditioning and model on the left, the streamed steps and the
//! trajectory in the middle, a training tab, and a status bar naming the compute device.
//!
//! The window talks to the engine only through [`Studio`]'s request/event channels; it never
//! waits on the engine: events are drained once per frame and the engine asks for a repaint
//! whenever it sends one.

mod canvas;
mod conditioning;
mod gan;
mod model_panel;
mod training;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ard_engine::io::png_settings::{GenerationSettings, read_settings, save_png_with_settings};
use ard_engine::studio::{Event, ModelInfo, Request, Role, Studio, StudioOptions};
use ard_engine::{Device, ModelKind};
use eframe::egui;

pub use model_panel::LoadingOptions;
use model_panel::model_panel;

pub use canvas::RunView;
pub use conditioning::Conditioning;
pub use training::TrainingPanel;

/// Which tab fills the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Generate,
    Train,
}

/// How the app starts.
pub struct AppOptions {
    pub device: Device,
    pub device_label: String,
    /// Loaded in order at start (the default teacher and student from `assets/`).
    pub models: Vec<PathBuf>,
    /// Default folder for training runs.
    pub runs_dir: PathBuf,
}

/// The default models shipped in `assets/`: the teacher first (so it is also the comparison
/// teacher), then the ARD student (so it is the generator), fine-tuned by stage 2 when shipped.
pub fn default_models() -> Vec<PathBuf> {
    let dir = assets_dir();
    // The generator: the adversarially fine-tuned student when it is there, else the distilled.
    let student = ["ard_gan.safetensors", "ard.safetensors"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists());
    std::iter::once(dir.join("teacher.safetensors"))
        .filter(|p| p.exists())
        .chain(student)
        .collect()
}

pub use crate::assets::assets_dir;

/// A message for the user: errors stay until dismissed, notes until the next one.
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    Error(String),
    Note(String),
}

/// The whole app state.
pub struct StudioApp {
    studio: Studio,
    pub device_label: String,
    pub tab: Tab,
    pub generator: Option<ModelInfo>,
    pub teacher: Option<ModelInfo>,
    /// The loaded VAE's file name and description (latent models' steps are decoded by it).
    pub vae: Option<(String, String)>,
    pub conditioning: Conditioning,
    pub run: Option<RunView>,
    pub training: TrainingPanel,
    pub notice: Option<Notice>,
    next_id: u64,
    /// Settings from a dropped PNG, waiting for the matching model before they apply.
    restored: Option<GenerationSettings>,
    /// How the next file is loaded.
    pub loading: LoadingOptions,
}

impl StudioApp {
    /// Starts the engine thread; `repaint` is called whenever it has news.
    pub fn new(options: AppOptions, repaint: Arc<dyn Fn() + Send + Sync>) -> Self {
        let studio = Studio::spawn(StudioOptions {
            device: options.device,
            device_label: options.device_label.clone(),
            initial_models: options.models,
            notify: repaint,
        });
        Self {
            studio,
            device_label: options.device_label,
            tab: Tab::Generate,
            generator: None,
            teacher: None,
            vae: None,
            conditioning: Conditioning::default(),
            run: None,
            training: TrainingPanel::new(options.runs_dir),
            notice: None,
            next_id: 1,
            restored: None,
            loading: LoadingOptions::default(),
        }
    }

    /// For eframe: repaints through the context.
    pub fn with_context(options: AppOptions, ctx: &egui::Context) -> Self {
        let ctx = ctx.clone();
        Self::new(options, Arc::new(move || ctx.request_repaint()))
    }

    pub fn send(&self, request: Request) {
        self.studio.send(request);
    }

    /// Is a generation running?
    pub fn busy(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.running)
    }

    /// Starts a generation with the current settings.
    pub fn generate(&mut self) {
        let Some(model) = &self.generator else {
            self.notice = Some(Notice::Error(
                "no model is loaded: open or drop a weight file".into(),
            ));
            return;
        };
        if self.conditioning.chosen_label().is_none() {
            self.notice = Some(Notice::Error(
                "the prompt matches no class of this model: reword it or pick a class".into(),
            ));
            return;
        }
        let request = self.conditioning.request(self.next_id, model);
        let compare = request.compare_teacher && model.kind == ModelKind::Student;
        self.run = Some(RunView::new(
            request.id,
            model,
            compare.then(|| self.teacher.clone()).flatten().as_ref(),
            request.labels.len(),
            self.conditioning.settings(model, &request),
        ));
        self.next_id += 1;
        self.send(Request::Generate(request));
    }

    pub fn cancel(&mut self) {
        self.send(Request::Cancel);
    }

    /// Handles everything the engine sent since the last frame.
    pub fn poll(&mut self, ctx: &egui::Context) {
        while let Ok(event) = self.studio.events.try_recv() {
            self.on_event(ctx, event);
        }
    }

    fn on_event(&mut self, ctx: &egui::Context, event: Event) {
        match event {
            Event::Ready { device } => self.device_label = device,
            Event::ModelLoaded { role, info } => match role {
                Role::Generator => {
                    self.conditioning.model_changed(&info);
                    self.notice = Some(Notice::Note(format!("loaded {}", info.source)));
                    self.generator = Some(info);
                    self.apply_restored();
                }
                Role::Teacher => self.teacher = Some(info),
            },
            Event::VaeLoaded {
                source,
                description,
            } => {
                self.notice = Some(Notice::Note(format!(
                    "loaded {source}: latent models' steps are decoded through it"
                )));
                self.vae = Some((source, description));
            }
            Event::LoadFailed { path, message } => {
                let hint = if message.contains("--heads") || message.contains("--history-layers") {
                    " (set them under Loading > “Files without metadata” and open the file again)"
                } else {
                    ""
                };
                self.notice = Some(Notice::Error(format!(
                    "could not load {}: {message}{hint}{}",
                    path.display(),
                    match &self.generator {
                        Some(m) => format!(" — still using {}", m.source),
                        None => String::new(),
                    }
                )));
            }
            Event::Step(step) => {
                if let Some(run) = self.run.as_mut().filter(|r| r.id == step.id) {
                    run.add_step(ctx, step);
                }
            }
            Event::Done {
                id,
                images,
                total_ms,
            } => {
                if let Some(run) = self.run.as_mut().filter(|r| r.id == id) {
                    run.finish(images, total_ms);
                }
            }
            Event::Cancelled { id } => {
                if let Some(run) = self.run.as_mut().filter(|r| r.id == id) {
                    run.running = false;
                    run.cancelled = true;
                }
            }
            Event::GenerateFailed { id, message } => {
                if let Some(run) = self.run.as_mut().filter(|r| r.id == id) {
                    run.running = false;
                }
                self.notice = Some(Notice::Error(message));
            }
            Event::Training(e) => self.training.on_event(ctx, e),
        }
    }

    /// Opens a file the user dropped or picked: weights go to the engine, a PNG saved by
    /// ARD Studio restores its settings. Nothing here can fail the app.
    pub fn open_file(&mut self, path: &Path, bytes: Option<Vec<u8>>) {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "safetensors" | "pt" | "pth" | "bin" | "ckpt" => {
                self.notice = Some(Notice::Note(format!("loading {}…", path.display())));
                self.send(Request::LoadWeights {
                    path: path.to_path_buf(),
                    options: self.loading.options(),
                    precision: self.loading.precision,
                });
            }
            "png" => {
                let bytes = match bytes.map_or_else(|| std::fs::read(path), Ok) {
                    Ok(b) => b,
                    Err(e) => {
                        self.notice = Some(Notice::Error(format!("{}: {e}", path.display())));
                        return;
                    }
                };
                match read_settings(&bytes) {
                    Ok(Some(settings)) => self.restore(settings),
                    Ok(None) => {
                        self.notice = Some(Notice::Error(format!(
                            "{} holds no ARD Studio settings (only PNGs saved by ARD Studio do)",
                            path.display()
                        )))
                    }
                    Err(e) => self.notice = Some(Notice::Error(format!("{}: {e}", path.display()))),
                }
            }
            _ => {
                self.notice = Some(Notice::Error(format!(
                    "cannot open {}: drop a .safetensors or .pt weight file, or a PNG saved by \
                     ARD Studio",
                    path.display()
                )))
            }
        }
    }

    fn restore(&mut self, settings: GenerationSettings) {
        self.restored = Some(settings);
        self.apply_restored();
    }

    /// Applies restored settings; warns when they were made with another model.
    fn apply_restored(&mut self) {
        let (Some(settings), Some(model)) = (self.restored.take(), &self.generator) else {
            return;
        };
        match self.conditioning.restore(&settings, model) {
            Ok(()) => {
                self.notice = Some(if settings.model_fingerprint == model.fingerprint {
                    Notice::Note(format!(
                        "restored the settings of an image made with {}",
                        settings.model_file
                    ))
                } else {
                    Notice::Note(format!(
                        "restored the settings; they were made with {} ({}), not the loaded {}: \
                         load that file to get the same image",
                        settings.model_file, settings.model_fingerprint, model.source
                    ))
                })
            }
            Err(e) => self.notice = Some(Notice::Error(e)),
        }
    }

    /// Saves the finished run's images (a grid) with its settings.
    pub fn save_result(&mut self, path: &Path) -> Result<(), String> {
        let run = self.run.as_ref().ok_or("nothing generated yet")?;
        let image = run.final_grid().ok_or("the run has not finished")?;
        save_png_with_settings(&image, &run.settings, path).map_err(|e| e.to_string())?;
        self.notice = Some(Notice::Note(format!("saved {}", path.display())));
        Ok(())
    }

    fn handle_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped = ctx.input(|i| i.raw.dropped_files.clone());
        for file in dropped {
            let path = file.path().to_path_buf();
            let ext = path.extension().map(|e| e.to_ascii_lowercase());
            let bytes = if ext.as_deref() == Some(std::ffi::OsStr::new("png")) {
                file.bytes().ok()
            } else {
                None
            };
            self.open_file(&path, bytes);
        }
    }

    fn menu_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open weights…").clicked() {
                    if let Some(path) = rfd::FileDialog::new()
                        .add_filter("weights", &["safetensors", "pt", "pth", "bin"])
                        .add_filter("ARD Studio image", &["png"])
                        .pick_file()
                    {
                        self.open_file(&path, None);
                    }
                    ui.close();
                }
                let finished = self.run.as_ref().is_some_and(|r| r.final_grid().is_some());
                if ui
                    .add_enabled(finished, egui::Button::new("Save image…"))
                    .clicked()
                {
                    if let Some(path) = rfd::FileDialog::new()
                        .add_filter("PNG", &["png"])
                        .set_file_name("ard-studio.png")
                        .save_file()
                        && let Err(e) = self.save_result(&path)
                    {
                        self.notice = Some(Notice::Error(e));
                    }
                    ui.close();
                }
                if ui
                    .add_enabled(finished, egui::Button::new("Copy image"))
                    .clicked()
                {
                    if let Some(img) = self.run.as_ref().and_then(|r| r.final_grid()) {
                        ui.ctx().copy_image(canvas::color_image(&img));
                        self.notice = Some(Notice::Note("image copied".into()));
                    }
                    ui.close();
                }
            });
            ui.separator();
            ui.selectable_value(&mut self.tab, Tab::Generate, "Sampling");
            ui.selectable_value(&mut self.tab, Tab::Train, "Distillation");
        });
    }

    fn status_bar(&self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.label(format!("Device: {}", self.device_label));
            ui.separator();
            match &self.generator {
                Some(m) => ui.label(format!("Model: {}", m.source)),
                None => ui.label("No model loaded"),
            };
            if let Some(run) = &self.run {
                ui.separator();
                ui.label(run.status());
            }
            if self.training.is_running() {
                ui.separator();
                ui.label("Training…");
            }
        });
    }

    fn notice_bar(&mut self, ui: &mut egui::Ui) {
        let Some(notice) = self.notice.clone() else {
            return;
        };
        ui.horizontal(|ui| {
            match &notice {
                Notice::Error(text) => {
                    ui.colored_label(ui.visuals().error_fg_color, format!("Error: {text}"))
                }
                Notice::Note(text) => ui.label(text),
            };
            if ui.small_button("Dismiss").clicked() {
                self.notice = None;
            }
        });
        ui.separator();
    }

    /// The whole window, drawn into `ui`.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.poll(&ctx);
        self.handle_dropped_files(&ctx);
        egui::Panel::top("menu").show(ui, |ui| self.menu_bar(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
        match self.tab {
            Tab::Generate => {
                egui::Panel::left("controls")
                    .resizable(true)
                    .default_size(300.0)
                    .show(ui, |ui| {
                        egui::ScrollArea::vertical().show(ui, |ui| self.controls(ui));
                    });
                egui::CentralPanel::default().show(ui, |ui| {
                    self.notice_bar(ui);
                    match self.run.as_mut() {
                        Some(run) => run.show(ui),
                        None => {
                            ui.centered_and_justified(|ui| {
                                ui.label(
                                    "Pick a class or type a prompt, then Generate.\n\
                                     Drop a .safetensors / .pt file here to switch models.",
                                );
                            });
                        }
                    }
                });
            }
            Tab::Train => {
                let teacher = self.teacher.as_ref().map(|t| t.source.clone());
                egui::CentralPanel::default().show(ui, |ui| {
                    self.notice_bar(ui);
                    if let Some(request) = self.training.show(ui, teacher.as_deref()) {
                        self.send(request);
                    }
                });
            }
        }
        if ctx.input(|i| !i.raw.hovered_files.is_empty()) {
            let screen = ctx.content_rect();
            let painter = ctx.layer_painter(egui::LayerId::new(
                egui::Order::Foreground,
                egui::Id::unique("drop"),
            ));
            painter.rect_filled(screen, 0.0, egui::Color32::from_black_alpha(160));
            painter.text(
                screen.center(),
                egui::Align2::CENTER_CENTER,
                "Drop weights or a VAE (.safetensors, .pt) or an ARD Studio PNG",
                egui::TextStyle::Heading.resolve(&ctx.global_style()),
                egui::Color32::WHITE,
            );
        }
    }

    fn controls(&mut self, ui: &mut egui::Ui) {
        ui.heading("Model");
        model_panel(ui, self.generator.as_ref(), "Generator");
        if let Some(t) = &self.teacher
            && self
                .generator
                .as_ref()
                .is_some_and(|g| g.kind == ModelKind::Student)
        {
            ui.add_space(4.0);
            model_panel(ui, Some(t), "Comparison teacher");
        }
        if let Some((source, description)) = &self.vae {
            ui.add_space(4.0);
            ui.label(egui::RichText::new(format!("Decoder: {source}")).strong());
            ui.small(description);
        }
        self.loading.show(ui);
        ui.separator();
        let Some(model) = self.generator.clone() else {
            ui.label("Open a weight file (File > Open weights…) or drop one on the window.");
            return;
        };
        ui.heading("Conditioning");
        self.conditioning.show(ui, &model, self.teacher.is_some());
        ui.separator();
        ui.horizontal(|ui| {
            if self.busy() {
                if ui.button("Cancel").clicked() {
                    self.cancel();
                }
                ui.spinner();
            } else if ui
                .add(egui::Button::new("Generate").min_size(egui::vec2(120.0, 28.0)))
                .clicked()
            {
                self.generate();
            }
        });
    }
}

/// One labelled row of a two-column grid; the label names the widget for screen readers.
pub(crate) fn grid_row(
    ui: &mut egui::Ui,
    label: &str,
    widget: impl egui::Widget,
) -> egui::Response {
    let name = ui.label(label);
    let response = ui.add(widget).labelled_by(name.id);
    ui.end_row();
    response
}

impl eframe::App for StudioApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }
}
