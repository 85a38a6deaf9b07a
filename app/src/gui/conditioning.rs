//! What to generate: a class (searchable picker) or a prompt resolved to a class, the seed,
//! the batch size, and the teacher's guidance.

use ard_engine::ModelKind;
use ard_engine::conditioning::{PromptMatch, display_name, first_class_name, match_prompt};
use ard_engine::io::png_settings::GenerationSettings;
use ard_engine::studio::{GenerateRequest, ModelInfo};
use eframe::egui;

use super::grid_row;

/// How the class is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Class,
    Prompt,
}

/// The conditioning controls' state.
#[derive(Clone, Debug)]
pub struct Conditioning {
    pub mode: Mode,
    pub class_search: String,
    pub label: usize,
    pub prompt: String,
    /// Classes the prompt may mean, best first.
    pub matches: Vec<PromptMatch>,
    /// An alternative the user picked from `matches`.
    pub prompt_choice: Option<usize>,
    pub seed: u64,
    pub random_seed: bool,
    /// Images per run (1–16), shown as a grid.
    pub batch: usize,
    /// One image per class instead of the same class throughout.
    pub every_class: bool,
    pub cfg_scale: f32,
    pub teacher_steps: usize,
    /// Run the teacher from the same noise beside a student.
    pub compare: bool,
}

impl Default for Conditioning {
    fn default() -> Self {
        Self {
            mode: Mode::Class,
            class_search: String::new(),
            label: 0,
            prompt: String::new(),
            matches: Vec::new(),
            prompt_choice: None,
            seed: 0,
            random_seed: false,
            batch: 4,
            every_class: false,
            cfg_scale: 1.5,
            teacher_steps: 25,
            compare: true,
        }
    }
}

fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default() as u64;
    // SplitMix64 finaliser: nearby times give unrelated seeds.
    let mut z = nanos.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % 1_000_000_000
}

impl Conditioning {
    /// The class a run uses (the prompt's choice in prompt mode).
    pub fn chosen_label(&self) -> Option<usize> {
        match self.mode {
            Mode::Class => Some(self.label),
            Mode::Prompt => self
                .prompt_choice
                .or_else(|| self.matches.first().map(|m| m.label)),
        }
    }

    pub fn set_prompt(&mut self, prompt: &str, model: &ModelInfo) {
        self.prompt = prompt.to_string();
        self.matches = match_prompt(prompt, &model.class_names);
        self.prompt_choice = None;
        self.mode = Mode::Prompt;
    }

    /// Keeps the choices valid for a newly loaded model.
    pub fn model_changed(&mut self, model: &ModelInfo) {
        if self.label >= model.class_names.len() {
            self.label = 0;
        }
        self.matches = match_prompt(&self.prompt, &model.class_names);
        self.prompt_choice = None;
    }

    /// The request for the next run (draws a new seed first when the seed is random).
    pub fn request(&mut self, id: u64, model: &ModelInfo) -> GenerateRequest {
        if self.random_seed {
            self.seed = fresh_seed();
        }
        let classes = model.class_names.len();
        let label = self.chosen_label().unwrap_or(self.label).min(classes - 1);
        let labels = (0..self.batch.clamp(1, 16))
            .map(|i| {
                if self.every_class {
                    ((label + i) % classes) as i64
                } else {
                    label as i64
                }
            })
            .collect();
        GenerateRequest {
            id,
            labels,
            seed: self.seed,
            cfg_scale: self.cfg_scale,
            teacher_steps: self.teacher_steps,
            compare_teacher: self.compare,
        }
    }

    /// What a saved PNG records about `request`.
    pub fn settings(&self, model: &ModelInfo, request: &GenerateRequest) -> GenerationSettings {
        GenerationSettings {
            model_file: model.source.clone(),
            model_fingerprint: model.fingerprint.clone(),
            labels: request.labels.clone(),
            class_name: first_class_name(&request.labels, &model.class_names),
            prompt: (self.mode == Mode::Prompt).then(|| self.prompt.clone()),
            seed: request.seed,
            steps: match model.kind {
                ModelKind::Student => model.steps,
                ModelKind::Teacher => request.teacher_steps,
            },
            cfg_scale: request.cfg_scale,
        }
    }

    /// Takes the settings of a saved image.
    pub fn restore(&mut self, s: &GenerationSettings, model: &ModelInfo) -> Result<(), String> {
        let classes = model.class_names.len();
        let Some(&first) = s.labels.first() else {
            return Err("the saved settings list no class".into());
        };
        if s.labels.iter().any(|&l| l < 0 || l as usize >= classes) {
            return Err(format!(
                "the saved image used classes {:?}; the loaded model has {classes}",
                s.labels
            ));
        }
        self.label = first as usize;
        self.batch = s.labels.len().clamp(1, 16);
        self.every_class = s.labels.len() > 1 && s.labels.iter().any(|&l| l != first);
        self.seed = s.seed;
        self.random_seed = false;
        self.cfg_scale = s.cfg_scale;
        if model.kind == ModelKind::Teacher {
            self.teacher_steps = s.steps;
        }
        match &s.prompt {
            Some(p) => {
                self.set_prompt(p, model);
                if self.chosen_label() != Some(self.label) {
                    self.prompt_choice = Some(self.label);
                }
            }
            None => self.mode = Mode::Class,
        }
        Ok(())
    }

    /// The controls.
    pub fn show(&mut self, ui: &mut egui::Ui, model: &ModelInfo, has_teacher: bool) {
        ui.horizontal(|ui| {
            ui.selectable_value(&mut self.mode, Mode::Class, "Class");
            ui.selectable_value(&mut self.mode, Mode::Prompt, "Prompt");
        });
        match self.mode {
            Mode::Class => self.class_picker(ui, model),
            Mode::Prompt => self.prompt_box(ui, model),
        }
        ui.add_space(6.0);
        egui::Grid::new("generation settings")
            .num_columns(2)
            .show(ui, |ui| {
                let name = ui.label("Seed");
                ui.horizontal(|ui| {
                    ui.add_enabled(
                        !self.random_seed,
                        egui::DragValue::new(&mut self.seed).range(0..=u32::MAX as u64),
                    )
                    .labelled_by(name.id);
                    ui.checkbox(&mut self.random_seed, "random");
                });
                ui.end_row();
                grid_row(ui, "Batch", egui::Slider::new(&mut self.batch, 1..=16));
                ui.label("");
                ui.checkbox(&mut self.every_class, "one image per class");
                ui.end_row();
                grid_row(
                    ui,
                    "Guidance",
                    egui::Slider::new(&mut self.cfg_scale, 1.0..=8.0).step_by(0.1),
                )
                .on_hover_text("The teacher's classifier-free guidance scale (1 = off)");
                if model.kind == ModelKind::Teacher {
                    grid_row(
                        ui,
                        "DDIM steps",
                        egui::Slider::new(&mut self.teacher_steps, 1..=250),
                    );
                }
            });
        if model.kind == ModelKind::Student {
            ui.add_enabled(
                has_teacher,
                egui::Checkbox::new(&mut self.compare, "Compare with the teacher"),
            )
            .on_hover_text(
                "Run the teacher's DDIM from the same noise and show its estimates at the \
                 student's anchor steps, with the difference",
            );
        }
    }

    fn class_picker(&mut self, ui: &mut egui::Ui, model: &ModelInfo) {
        ui.add(
            egui::TextEdit::singleline(&mut self.class_search)
                .hint_text("search classes")
                .id_salt("class search"),
        );
        let needle = self.class_search.to_lowercase();
        egui::ScrollArea::vertical()
            .id_salt("class list")
            .max_height(180.0)
            .show(ui, |ui| {
                for (i, name) in model.class_names.iter().enumerate() {
                    if !needle.is_empty() && !name.to_lowercase().contains(&needle) {
                        continue;
                    }
                    ui.selectable_value(&mut self.label, i, format!("{i}: {}", display_name(name)))
                        .on_hover_text(name);
                }
            });
        if let Some(name) = model.class_names.get(self.label) {
            ui.label(format!("Class: {}", display_name(name)));
        }
    }

    fn prompt_box(&mut self, ui: &mut egui::Ui, model: &ModelInfo) {
        let response = ui.add(
            egui::TextEdit::singleline(&mut self.prompt)
                .hint_text("e.g. a pair of ankle boots")
                .id_salt("prompt"),
        );
        if response.changed() {
            self.matches = match_prompt(&self.prompt, &model.class_names);
            self.prompt_choice = None;
        }
        match self.chosen_label() {
            Some(label) => {
                let name = display_name(&model.class_names[label]);
                ui.label(egui::RichText::new(format!("Chosen: class {label}, {name}")).strong());
                let others: Vec<PromptMatch> = self
                    .matches
                    .iter()
                    .filter(|m| m.label != label)
                    .take(5)
                    .cloned()
                    .collect();
                if !others.is_empty() {
                    ui.horizontal_wrapped(|ui| {
                        ui.weak("or:");
                        for m in others {
                            let name = display_name(&model.class_names[m.label]);
                            if ui
                                .small_button(name)
                                .on_hover_text(format!("matched “{}”", m.matched))
                                .clicked()
                            {
                                self.prompt_choice = Some(m.label);
                            }
                        }
                    });
                }
            }
            None if self.prompt.trim().is_empty() => {
                ui.weak("Type what to generate; it is matched to the model's class names.");
            }
            None => {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    "No class matches this prompt; pick a class instead.",
                );
            }
        }
    }
}
