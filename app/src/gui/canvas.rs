//! The canvas of one run: the newest step's images as a grid the moment each step arrives, the
//! trajectory strip (every step's input and prediction) of the selected image, the teacher's
//! trajectory beside it with the per-step difference, per-step timings, and zoom on click.

use ard_engine::io::png_settings::GenerationSettings;
use ard_engine::io::preview;
use ard_engine::studio::{ModelInfo, StepEvent};
use eframe::egui;
use image::RgbImage;

/// An image on the GPU plus its pixels (for saving and copying).
pub struct Picture {
    pub texture: egui::TextureHandle,
    pub rgb: RgbImage,
}

impl Picture {
    fn new(ctx: &egui::Context, name: &str, rgb: RgbImage) -> Self {
        let texture = ctx.load_texture(name, color_image(&rgb), egui::TextureOptions::NEAREST);
        Self { texture, rgb }
    }

    /// Shows the picture at `side` points; a click opens the zoom window (and returns true).
    fn show(&self, ui: &mut egui::Ui, side: f32, caption: &str, zoom: &mut Option<Zoom>) -> bool {
        let sized = egui::load::SizedTexture::new(self.texture.id(), egui::vec2(side, side));
        let response = ui
            .add(
                egui::Image::new(sized)
                    .sense(egui::Sense::click())
                    .alt_text(caption),
            )
            .on_hover_text(format!("{caption} (click to zoom)"));
        if response.clicked() {
            *zoom = Some(Zoom {
                texture: self.texture.clone(),
                caption: caption.to_string(),
            });
        }
        response.clicked()
    }
}

/// An RGB image as egui wants it.
pub fn color_image(rgb: &RgbImage) -> egui::ColorImage {
    egui::ColorImage::from_rgb([rgb.width() as usize, rgb.height() as usize], rgb.as_raw())
}

/// One received step.
pub struct StepView {
    pub name: String,
    pub ms: f64,
    pub inputs: Vec<Picture>,
    pub predictions: Vec<Picture>,
    /// Teacher steps: RMSE and |difference| image against the generator, per image.
    pub difference: Vec<(f32, Picture)>,
}

impl StepView {
    fn new(ctx: &egui::Context, id: u64, tag: &str, step: StepEvent) -> Self {
        let pictures = |kind: &str, images: Vec<RgbImage>| -> Vec<Picture> {
            images
                .into_iter()
                .enumerate()
                .map(|(i, img)| {
                    Picture::new(ctx, &format!("run{id}-{tag}{}-{kind}{i}", step.step), img)
                })
                .collect()
        };
        let difference = step
            .difference
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, (rmse, img))| {
                let name = format!("run{id}-{tag}{}-diff{i}", step.step);
                (rmse, Picture::new(ctx, &name, img))
            })
            .collect();
        Self {
            name: step.name,
            ms: step.ms,
            inputs: pictures("in", step.inputs),
            predictions: pictures("pred", step.predictions),
            difference,
        }
    }
}

/// The zoom window's content.
pub struct Zoom {
    pub texture: egui::TextureHandle,
    pub caption: String,
}

/// One generation as the canvas shows it.
pub struct RunView {
    pub id: u64,
    pub running: bool,
    pub cancelled: bool,
    pub model: String,
    pub batch: usize,
    /// The generator's steps, in order of arrival.
    pub steps: Vec<StepView>,
    pub total_steps: usize,
    /// The comparison teacher's steps at the student's anchors, when asked for.
    pub teacher_steps: Vec<StepView>,
    pub teacher: Option<String>,
    pub final_images: Vec<RgbImage>,
    pub total_ms: Option<f64>,
    pub selected: usize,
    pub zoom: Option<Zoom>,
    pub settings: GenerationSettings,
}

impl RunView {
    pub fn new(
        id: u64,
        model: &ModelInfo,
        teacher: Option<&ModelInfo>,
        batch: usize,
        settings: GenerationSettings,
    ) -> Self {
        Self {
            id,
            running: true,
            cancelled: false,
            model: model.source.clone(),
            batch,
            steps: Vec::new(),
            total_steps: settings.steps,
            teacher_steps: Vec::new(),
            teacher: teacher.map(|t| t.source.clone()),
            final_images: Vec::new(),
            total_ms: None,
            selected: 0,
            zoom: None,
            settings,
        }
    }

    pub fn add_step(&mut self, ctx: &egui::Context, step: StepEvent) {
        use ard_engine::studio::Role;
        self.total_steps = step.total;
        match step.source {
            Role::Generator => self.steps.push(StepView::new(ctx, self.id, "s", step)),
            Role::Teacher => self
                .teacher_steps
                .push(StepView::new(ctx, self.id, "t", step)),
        }
    }

    pub fn finish(&mut self, images: Vec<RgbImage>, total_ms: f64) {
        self.final_images = images;
        self.total_ms = Some(total_ms);
        // The teacher comparison may still stream; the run is done when it has too.
        if self.teacher.is_none() {
            self.running = false;
        }
    }

    /// Called as teacher steps arrive: the comparison ends with its last anchor.
    fn comparison_done(&self) -> bool {
        self.teacher.is_none() || self.teacher_steps.len() >= self.total_steps
    }

    /// The final images as one grid, once the generator has finished.
    pub fn final_grid(&self) -> Option<RgbImage> {
        if self.final_images.is_empty() {
            return None;
        }
        let cols = (self.final_images.len() as f64).sqrt().ceil() as usize;
        Some(preview::grid(&self.final_images, cols))
    }

    /// One line for the status bar.
    pub fn status(&self) -> String {
        let done = self.steps.len();
        let mut s = if self.cancelled {
            format!("cancelled after {done} of {} steps", self.total_steps)
        } else if let Some(ms) = self.total_ms {
            format!("{} steps in {ms:.0} ms", self.total_steps)
        } else {
            format!("step {done} of {}", self.total_steps)
        };
        if self.teacher.is_some() && !self.teacher_steps.is_empty() {
            s += &format!(
                " · teacher {}/{}",
                self.teacher_steps.len(),
                self.total_steps
            );
        }
        s
    }

    pub fn show(&mut self, ui: &mut egui::Ui) {
        if self.running && self.total_ms.is_some() && self.comparison_done() {
            self.running = false;
        }
        let Some(latest) = self.steps.last() else {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Waiting for the first step…");
            });
            return;
        };
        let mut zoom = self.zoom.take();
        let mut selected = self.selected.min(self.batch - 1);
        egui::ScrollArea::vertical().show(ui, |ui| {
            ui.heading(format!(
                "Step {} of {} · {} · {:.1} ms",
                self.steps.len(),
                self.total_steps,
                latest.name,
                latest.ms
            ));
            let cols = (self.batch as f64).sqrt().ceil() as usize;
            let side =
                ((ui.available_width() - 8.0 * cols as f32) / cols as f32).clamp(64.0, 256.0);
            egui::Grid::new(("canvas", self.id))
                .spacing([6.0, 6.0])
                .show(ui, |ui| {
                    for (i, p) in latest.predictions.iter().enumerate() {
                        let caption = format!("image {} · {}", i + 1, latest.name);
                        let frame = if i == selected {
                            egui::Frame::new().stroke(ui.visuals().selection.stroke)
                        } else {
                            egui::Frame::new()
                        };
                        // A click zooms, and makes this image the one the trajectory shows.
                        if frame
                            .show(ui, |ui| p.show(ui, side, &caption, &mut zoom))
                            .inner
                        {
                            selected = i;
                        }
                        if (i + 1) % cols == 0 {
                            ui.end_row();
                        }
                    }
                });
            ui.add_space(8.0);
            ui.horizontal(|ui| {
                let name = ui.label("Trajectory of image");
                ui.add(
                    egui::Slider::new(&mut selected, 0..=self.batch - 1)
                        .custom_formatter(|v, _| format!("{}", v as usize + 1)),
                )
                .labelled_by(name.id);
            });
            self.trajectory(ui, selected, &mut zoom);
        });
        self.selected = selected;
        if let Some(z) = &zoom {
            let mut open = true;
            egui::Window::new(&z.caption)
                .id(egui::Id::unique("zoom"))
                .open(&mut open)
                .collapsible(false)
                .show(ui.ctx(), |ui| {
                    let sized =
                        egui::load::SizedTexture::new(z.texture.id(), egui::vec2(448.0, 448.0));
                    ui.add(egui::Image::new(sized));
                });
            if !open {
                zoom = None;
            }
        }
        self.zoom = zoom;
    }

    /// Rows: the generator's inputs and predictions, then the teacher's states, estimates and
    /// difference; one column per step.
    fn trajectory(&self, ui: &mut egui::Ui, i: usize, zoom: &mut Option<Zoom>) {
        let side = 96.0;
        egui::ScrollArea::horizontal()
            .id_salt("trajectory")
            .show(ui, |ui| {
                egui::Grid::new(("trajectory", self.id))
                    .spacing([6.0, 4.0])
                    .show(ui, |ui| {
                        ui.label("");
                        for (k, s) in self.steps.iter().enumerate() {
                            ui.vertical(|ui| {
                                ui.strong(format!("step {}", k + 1));
                                ui.small(format!("{} · {:.1} ms", s.name, s.ms));
                            });
                        }
                        ui.end_row();
                        ui.label("input");
                        for (k, s) in self.steps.iter().enumerate() {
                            if let Some(p) = s.inputs.get(i) {
                                p.show(ui, side, &format!("step {} input", k + 1), zoom);
                            }
                        }
                        ui.end_row();
                        ui.label(format!("{}\nprediction", self.model));
                        for (k, s) in self.steps.iter().enumerate() {
                            if let Some(p) = s.predictions.get(i) {
                                p.show(ui, side, &format!("step {} prediction", k + 1), zoom);
                            }
                        }
                        ui.end_row();
                        let Some(teacher) = &self.teacher else { return };
                        ui.label(format!("{teacher}\nstate x_t"));
                        for s in &self.teacher_steps {
                            if let Some(p) = s.inputs.get(i) {
                                p.show(ui, side, &format!("teacher state at {}", s.name), zoom);
                            }
                        }
                        ui.end_row();
                        ui.label("teacher\nx0 estimate");
                        for s in &self.teacher_steps {
                            if let Some(p) = s.predictions.get(i) {
                                p.show(ui, side, &format!("teacher {}", s.name), zoom);
                            }
                        }
                        ui.end_row();
                        ui.label("|student − teacher|");
                        for s in &self.teacher_steps {
                            if let Some((rmse, p)) = s.difference.get(i) {
                                ui.vertical(|ui| {
                                    p.show(ui, side, &format!("difference at {}", s.name), zoom);
                                    ui.small(format!("RMSE {rmse:.3}"));
                                });
                            }
                        }
                        ui.end_row();
                    });
            });
    }
}
