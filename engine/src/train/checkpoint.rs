//! Training checkpoints: live weights, EMA weights, optimiser moments and the loss history in
//! one safetensors file, written atomically, so that a killed run resumes bit for bit.

use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::io::weights::TensorFile;
use crate::io::writer::SafetensorsWriter;
use crate::model::config::ModelMeta;
use crate::train::optim::optimizer;
use crate::train::options::TrainOptions;
use crate::train::trainer::Trainer;

/// What a checkpoint's header says about the run.
#[derive(Serialize, Deserialize)]
struct CheckpointHeader {
    iteration: u64,
    options: TrainOptions,
    losses: Vec<(u64, f32)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    metrics: Vec<(u64, Vec<f32>)>,
}

const CHECKPOINT_KEY: &str = "ard_studio_checkpoint";

impl<M: Module> Trainer<M> {
    /// Writes live weights, EMA weights, optimizer state and history to `path` atomically,
    /// with the model's description (so a resume can rebuild its structure).
    pub fn save_checkpoint(&self, path: &Path, meta: &ModelMeta) -> Result<()> {
        let to_bytes = |r: std::result::Result<Bytes, _>, what: &str| {
            r.map(|b: Bytes| b.to_vec())
                .map_err(|e| EngineError::Input(format!("cannot serialise the {what}: {e:?}")))
        };
        let model = to_bytes(self.model.clone().into_record().into_bytes(), "model")?;
        let ema = to_bytes(self.ema.clone().into_record().into_bytes(), "EMA")?;
        let optim = to_bytes(self.optim.into_bytes(), "optimizer")?;
        let mut w = SafetensorsWriter::new();
        let header = CheckpointHeader {
            iteration: self.iteration,
            options: self.options.clone(),
            losses: self.losses.clone(),
            metrics: self.metrics.clone(),
        };
        w.set_metadata(CHECKPOINT_KEY, serde_json::to_string(&header).unwrap());
        w.set_meta(meta);
        for (key, bytes) in [("model", model), ("ema", ema), ("optimizer", optim)] {
            w.add_bytes(key, bytes);
        }
        w.write(path)
    }

    /// Resumes from a checkpoint into `model` (a freshly built module of the same structure on
    /// the training device). The options stored in the checkpoint win, except `iterations`, which
    /// the caller may extend.
    pub fn resume(model: M, path: &Path, iterations: Option<u64>) -> Result<Self> {
        crate::device::keep_freed_memory();
        let file = TensorFile::read(path)?;
        let header: CheckpointHeader = file
            .header_json(CHECKPOINT_KEY)?
            .ok_or_else(|| EngineError::bad_file(path, "not an ARD Studio training checkpoint"))?;
        let record = |key: &str| -> Result<ModuleRecord> {
            let bytes = file.bytes(key)?.into_owned();
            ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
                .map_err(|e| EngineError::bad_file(path, format!("damaged `{key}` record: {e:?}")))
        };
        let ema_template = model.valid();
        let model = model.try_load_record(record("model")?).map_err(|e| {
            EngineError::bad_file(path, format!("checkpoint does not fit the model: {e:?}"))
        })?;
        let ema = ema_template.try_load_record(record("ema")?).map_err(|e| {
            EngineError::bad_file(path, format!("checkpoint does not fit the model: {e:?}"))
        })?;
        let optim_bytes = file.bytes("optimizer")?.into_owned();
        let optim = optimizer()
            .from_bytes(Bytes::from_bytes_vec(optim_bytes))
            .map_err(|e| EngineError::bad_file(path, format!("damaged optimizer state: {e:?}")))?;
        let mut options = header.options;
        if let Some(n) = iterations {
            options.iterations = n;
        }
        Ok(Self {
            model,
            ema,
            optim,
            options,
            iteration: header.iteration,
            losses: header.losses,
            metrics: header.metrics,
            workers: 1,
            micro_rows: 0,
        })
    }
}

/// The model description stored in a checkpoint.
pub fn checkpoint_meta(path: &Path) -> Result<ModelMeta> {
    TensorFile::read(path)?
        .model_meta()?
        .ok_or_else(|| EngineError::bad_file(path, "checkpoint without a model description"))
}
