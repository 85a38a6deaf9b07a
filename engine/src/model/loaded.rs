//! A loaded model of either kind (DiT teacher or ARD student), with the configuration it was
//! read with: ours from the file's metadata, a reference state_dict's read off its shapes.

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;

use crate::error::{EngineError, Result};
use crate::io::weights::TensorFile;
use crate::io::writer::{SafetensorsWriter, Storage};
use crate::model::config::{DitConfig, ModelKind, ModelMeta, StudentConfig};
use crate::model::dit::Dit;
use crate::model::params::{ParamSource, ParamWriter};
use crate::model::precision::{Precision, cast_params};
use crate::model::student::ArdStudent;

/// What the shapes of a reference file cannot tell, given by the user.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub num_heads: Option<usize>,
    pub history_layers: Option<usize>,
}

pub enum Model {
    Teacher(Dit),
    Student(ArdStudent),
}

/// A model together with its self-description.
pub struct LoadedModel {
    pub model: Model,
    pub meta: ModelMeta,
}

impl LoadedModel {
    /// Reads a safetensors or `.pt` file: ours describe themselves; reference files have
    /// their architecture read off the tensor shapes, plus `options`.
    pub fn load(path: impl AsRef<Path>, options: &LoadOptions, device: &Device) -> Result<Self> {
        Self::from_file(TensorFile::read(path)?, options, device)
    }

    /// [`Self::load`] in `precision` (each weight is cast as it is read, so the model never
    /// exists in f32 as a whole).
    pub fn load_in(
        path: impl AsRef<Path>,
        options: &LoadOptions,
        precision: Precision,
        device: &Device,
    ) -> Result<Self> {
        precision.check(device)?;
        Self::from_file_in(TensorFile::read(path)?, options, precision, device)
    }

    /// Builds the model from tensors already read.
    pub fn from_file(file: TensorFile, options: &LoadOptions, device: &Device) -> Result<Self> {
        Self::from_file_in(file, options, Precision::F32, device)
    }

    /// [`Self::from_file`] in `precision`.
    pub fn from_file_in(
        mut file: TensorFile,
        options: &LoadOptions,
        precision: Precision,
        device: &Device,
    ) -> Result<Self> {
        file.strip_prefix_to("x_embedder.proj.weight");
        let meta = resolve_meta(&file, options)?;
        let mut r = ParamSource::file(&file, device).with_precision(precision);
        let model = match meta.kind {
            ModelKind::Teacher => {
                Model::Teacher(cast_params(Dit::load(&mut r, &meta.dit)?, precision))
            }
            ModelKind::Student => {
                let student = meta.student.as_ref().expect("student meta");
                let s = ArdStudent::load(&mut r, &meta.dit, student)?;
                Model::Student(cast_params(s, precision))
            }
        };
        r.finish()?;
        Ok(Self { model, meta })
    }

    /// The model in `precision` (inference only: training keeps f32).
    pub fn in_precision(self, precision: Precision) -> Result<Self> {
        let model = match self.model {
            Model::Teacher(d) => {
                precision.check(&d.device())?;
                Model::Teacher(cast_params(d, precision))
            }
            Model::Student(s) => {
                precision.check(&s.dit.device())?;
                Model::Student(cast_params(s, precision))
            }
        };
        Ok(Self { model, ..self })
    }

    /// Writes the weights under reference key names with our metadata in the header.
    pub fn save(&self, path: impl AsRef<Path>, storage: Storage) -> Result<()> {
        self.writer(storage).write(path)
    }

    fn writer(&self, storage: Storage) -> SafetensorsWriter {
        let mut w = ParamWriter::new(storage);
        match &self.model {
            Model::Teacher(d) => d.save(&mut w),
            Model::Student(s) => s.save(&mut w),
        }
        self.meta.write_to(&mut w.writer);
        w.writer
    }

    /// A copy of the model on `device` (e.g. an inference copy of a model being trained);
    /// the copy's parameters are independent of the original's.
    pub fn copy_to(&self, device: &Device) -> Result<Self> {
        let bytes = self.writer(Storage::F32).to_bytes()?;
        let file = TensorFile::from_safetensors_bytes("<in-memory copy>", &bytes)?;
        Self::from_file(file, &LoadOptions::default(), device)
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        match &self.model {
            Model::Teacher(d) => d.device(),
            Model::Student(s) => s.dit.device(),
        }
    }

    /// What the weights are held in.
    pub fn precision(&self) -> Precision {
        let dtype = match &self.model {
            Model::Teacher(d) => d.pos_embed.val().dtype(),
            Model::Student(s) => s.dit.pos_embed.val().dtype(),
        };
        [Precision::F16, Precision::BF16]
            .into_iter()
            .find(|p| p.dtype() == dtype)
            .unwrap_or(Precision::F32)
    }

    pub fn num_params(&self) -> usize {
        match &self.model {
            Model::Teacher(d) => d.num_params(),
            Model::Student(s) => s.num_params(),
        }
    }
}

fn shape_of<'a>(file: &'a TensorFile, key: &str) -> Result<&'a [usize]> {
    file.tensors
        .get(key)
        .map(|t| t.shape.as_slice())
        .ok_or_else(|| EngineError::MissingKey {
            key: key.into(),
            hint: " (not a DiT or ARD weight file?)".into(),
        })
}

fn expect_rank(key: &str, shape: &[usize], rank: usize) -> Result<()> {
    if shape.len() == rank {
        Ok(())
    } else {
        Err(EngineError::Config(format!(
            "`{key}` has shape {shape:?}, expected {rank} dimensions"
        )))
    }
}

/// The metadata of `file`, or one read off its shapes when it has none. Reference files with
/// 1000 classes get the ImageNet class names.
pub fn resolve_meta(file: &TensorFile, options: &LoadOptions) -> Result<ModelMeta> {
    let mut meta = stored_or_inferred_meta(file, options)?;
    if meta.class_names.is_none() && meta.dit.num_classes == 1000 {
        meta.class_names = Some(crate::conditioning::imagenet());
    }
    Ok(meta)
}

fn stored_or_inferred_meta(file: &TensorFile, options: &LoadOptions) -> Result<ModelMeta> {
    if let Some(meta) = ModelMeta::read(file)? {
        if let Some(h) = options.num_heads.filter(|&h| h != meta.dit.num_heads) {
            return Err(EngineError::Mismatch(format!(
                "the file says {} attention heads but {h} were asked for",
                meta.dit.num_heads
            )));
        }
        if let (Some(n), Some(s)) = (options.history_layers, &meta.student)
            && n != s.history_layers
        {
            return Err(EngineError::Mismatch(format!(
                "the file says {} history layers but {n} were asked for",
                s.history_layers
            )));
        }
        return Ok(meta);
    }
    infer_meta(file, options)
}

/// Reads the architecture off a reference state_dict's shapes.
pub fn infer_meta(file: &TensorFile, options: &LoadOptions) -> Result<ModelMeta> {
    let patch = shape_of(file, "x_embedder.proj.weight")?;
    expect_rank("x_embedder.proj.weight", patch, 4)?;
    let (hidden, in_channels, p) = (patch[0], patch[1], patch[2]);
    let pos = shape_of(file, "pos_embed").map_err(|_| {
        EngineError::Config("no `pos_embed`: the image size cannot be read off this file".into())
    })?;
    expect_rank("pos_embed", pos, 3)?;
    let grid = (pos[1] as f64).sqrt().round() as usize;
    if grid * grid != pos[1] {
        return Err(EngineError::Config(format!(
            "`pos_embed` has {} tokens, not a square grid",
            pos[1]
        )));
    }
    let depth = (0..)
        .take_while(|i| {
            file.tensors
                .contains_key(&format!("blocks.{i}.attn.qkv.weight"))
        })
        .count();
    let mlp_hidden = shape_of(file, "blocks.0.mlp.fc1.weight")?[0];
    let num_classes = shape_of(file, "y_embedder.embedding_table.weight")?[0]
        .checked_sub(1)
        .filter(|&n| n > 0)
        .ok_or_else(|| EngineError::Config("the label table has no class rows".into()))?;
    let frequency_embedding_size = shape_of(file, "t_embedder.mlp.0.weight")?[1];
    let out = shape_of(file, "final_layer.linear.weight")?[0] / (p * p);
    let learn_sigma = match out {
        o if o == in_channels => false,
        o if o == 2 * in_channels => true,
        o => {
            return Err(EngineError::Config(format!(
                "the final layer gives {o} channels for {in_channels} input channels"
            )));
        }
    };
    // An official ImageNet checkpoint (4 latent channels, 1000 classes) of a published size
    // needs no --heads.
    let official = (in_channels == 4 && num_classes == 1000)
        .then(|| DitConfig::official_heads(hidden, depth))
        .flatten();
    let num_heads = options
        .num_heads
        .or(official.map(|(_, h)| h))
        .ok_or_else(|| {
            EngineError::InvalidSetting(
            "this file carries no ARD Studio metadata, and the number of attention heads cannot \
             be read off its shapes: give it (--heads H; DiT-XL/2 has 16)"
                .into(),
        )
        })?;
    let dit = DitConfig {
        input_size: grid * p,
        patch_size: p,
        in_channels,
        hidden_size: hidden,
        depth,
        num_heads,
        mlp_hidden,
        num_classes,
        learn_sigma,
        frequency_embedding_size,
        text: None,
    };
    dit.validate()?;
    let heads = 1
        + (2..)
            .take_while(|k| {
                file.tensors
                    .contains_key(&format!("final_layer{k}.linear.weight"))
            })
            .count();
    if heads == 1 {
        return Ok(ModelMeta {
            kind: ModelKind::Teacher,
            dit,
            student: None,
            class_names: None,
            clip_denoised: false,
        });
    }
    let history_layers = options.history_layers.ok_or_else(|| {
        EngineError::InvalidSetting(format!(
            "this is a {heads}-step ARD student without ARD Studio metadata: give the number of \
             history layers (--history-layers N)"
        ))
    })?;
    let student = StudentConfig::new(heads, history_layers);
    student.validate(&dit)?;
    Ok(ModelMeta {
        kind: ModelKind::Student,
        dit,
        student: Some(student),
        class_names: None,
        clip_denoised: false,
    })
}
