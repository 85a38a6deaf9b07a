//! Fresh weights for a new teacher or student, with DiT's initialisation: Xavier-uniform
//! linears with zero biases, N(0, 0.02) label table and timestep MLP, sin-cos positions, and
//! zeroed adaLN modulations and output layer ("adaLN-Zero").

use std::collections::BTreeMap;

use burn::tensor::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::{DitConfig, ModelKind, ModelMeta, StudentConfig};
use crate::dit::Dit;
use crate::embedding::sincos_pos_embed_2d;
use crate::error::Result;
use crate::host::HostTensor;
use crate::model::{LoadedModel, Model};
use crate::params::ParamReader;
use crate::student::ArdStudent;
use crate::weights::TensorFile;

/// How to initialise.
#[derive(Clone, Copy, Debug)]
pub struct InitOptions {
    pub seed: u64,
    /// DiT's adaLN-Zero (true for training). False fills the zeroed layers with random
    /// values too, so that tests exercise every parameter.
    pub zero_init: bool,
}

struct Init {
    rng: StdRng,
    zero_init: bool,
    tensors: BTreeMap<String, HostTensor>,
}

impl Init {
    fn xavier(&mut self, key: String, fan_out: usize, fan_in: usize, shape: Vec<usize>) {
        let bound = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
        let n = fan_in * fan_out;
        let data = (0..n)
            .map(|_| self.rng.random_range(-bound..bound))
            .collect();
        self.tensors.insert(key, HostTensor::new(shape, data));
    }

    fn normal(&mut self, key: String, shape: Vec<usize>, std: f32) {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| std * self.rng.sample::<f32, _>(rand_distr::StandardNormal))
            .collect();
        self.tensors.insert(key, HostTensor::new(shape, data));
    }

    fn zeros(&mut self, key: String, shape: Vec<usize>) {
        self.tensors.insert(key, HostTensor::zeros(shape));
    }

    /// A linear layer; `zeroed` layers are zero under adaLN-Zero.
    fn linear(&mut self, prefix: &str, d_in: usize, d_out: usize, zeroed: bool) {
        if zeroed && self.zero_init {
            self.zeros(format!("{prefix}.weight"), vec![d_out, d_in]);
            self.zeros(format!("{prefix}.bias"), vec![d_out]);
        } else {
            self.xavier(format!("{prefix}.weight"), d_out, d_in, vec![d_out, d_in]);
            if self.zero_init {
                self.zeros(format!("{prefix}.bias"), vec![d_out]);
            } else {
                self.normal(format!("{prefix}.bias"), vec![d_out], 0.02);
            }
        }
    }

    fn final_layer(&mut self, prefix: &str, cfg: &DitConfig) {
        let h = cfg.hidden_size;
        let out = cfg.patch_size * cfg.patch_size * cfg.out_channels();
        self.linear(&format!("{prefix}.linear"), h, out, true);
        self.linear(&format!("{prefix}.adaLN_modulation.1"), h, 2 * h, true);
    }
}

/// Reference-named tensors of a freshly initialised teacher.
pub fn teacher_tensors(cfg: &DitConfig, options: InitOptions) -> BTreeMap<String, HostTensor> {
    let mut init = Init {
        rng: StdRng::seed_from_u64(options.seed),
        zero_init: options.zero_init,
        tensors: BTreeMap::new(),
    };
    let (h, p, c) = (cfg.hidden_size, cfg.patch_size, cfg.in_channels);
    init.xavier(
        "x_embedder.proj.weight".into(),
        h,
        c * p * p,
        vec![h, c, p, p],
    );
    init.zeros("x_embedder.proj.bias".into(), vec![h]);
    init.tensors.insert(
        "pos_embed".into(),
        HostTensor::new(
            vec![1, cfg.num_patches(), h],
            sincos_pos_embed_2d(h, cfg.grid_size()),
        ),
    );
    let f = cfg.frequency_embedding_size;
    init.normal("t_embedder.mlp.0.weight".into(), vec![h, f], 0.02);
    init.zeros("t_embedder.mlp.0.bias".into(), vec![h]);
    init.normal("t_embedder.mlp.2.weight".into(), vec![h, h], 0.02);
    init.zeros("t_embedder.mlp.2.bias".into(), vec![h]);
    init.normal(
        "y_embedder.embedding_table.weight".into(),
        vec![cfg.num_classes + 1, h],
        0.02,
    );
    for i in 0..cfg.depth {
        let b = format!("blocks.{i}");
        init.linear(&format!("{b}.attn.qkv"), h, 3 * h, false);
        init.linear(&format!("{b}.attn.proj"), h, h, false);
        init.linear(&format!("{b}.mlp.fc1"), h, cfg.mlp_hidden, false);
        init.linear(&format!("{b}.mlp.fc2"), cfg.mlp_hidden, h, false);
        init.linear(&format!("{b}.adaLN_modulation.1"), h, 6 * h, true);
    }
    init.final_layer("final_layer", cfg);
    init.tensors
}

/// A freshly initialised teacher.
pub fn init_teacher(
    cfg: &DitConfig,
    class_names: Option<Vec<String>>,
    options: InitOptions,
    device: &Device,
) -> Result<LoadedModel> {
    cfg.validate()?;
    let file = TensorFile::from_host("<new teacher>", teacher_tensors(cfg, options));
    let mut r = ParamReader::new(&file, device);
    let dit = Dit::load(&mut r, cfg)?;
    r.finish()?;
    Ok(LoadedModel {
        model: Model::Teacher(dit),
        meta: ModelMeta {
            kind: ModelKind::Teacher,
            dit: cfg.clone(),
            student: None,
            class_names,
            clip_denoised: false,
        },
    })
}

/// A student built from `teacher` (every head a copy of the teacher's final layer).
pub fn student_from_teacher(teacher: LoadedModel, student: StudentConfig) -> Result<LoadedModel> {
    let Model::Teacher(dit) = teacher.model else {
        return Err(crate::error::EngineError::Input(
            "a student is made from a teacher, and this model is already a student".into(),
        ));
    };
    let s = ArdStudent::from_teacher(dit, student.clone())?;
    Ok(LoadedModel {
        model: Model::Student(s),
        meta: ModelMeta {
            kind: ModelKind::Student,
            student: Some(student),
            ..teacher.meta
        },
    })
}
