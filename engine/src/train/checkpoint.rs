//! Training checkpoints: live weights, EMA weights, optimiser moments and the loss history in
//! one safetensors file, written atomically, so that a killed run resumes bit for bit.

use std::fs::{File, TryLockError};
use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::io::weights::TensorFile;
use crate::io::writer::{SafetensorsWriter, write_atomically};
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
                .map_err(|e| EngineError::Format(format!("cannot serialise the {what}: {e:?}")))
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
        meta.write_to(&mut w);
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
    ModelMeta::read(&TensorFile::read(path)?)?
        .ok_or_else(|| EngineError::bad_file(path, "checkpoint without a model description"))
}

/// Keeps the options a run was started with in `path`, beside its checkpoint. When `resuming`,
/// first compares them with the stored ones and refuses other settings, naming each one that
/// differs: a run is one recipe, and only its length (`train.iterations`) may change. A run
/// folder from before the options were kept resumes unchecked. The run folder exists already
/// ([`lock_run_folder`] makes it).
pub fn keep_run_options<T: Serialize>(path: &Path, options: &T, resuming: bool) -> Result<()> {
    let text = serde_json::to_string_pretty(options).expect("options are plain data");
    if resuming {
        match std::fs::read_to_string(path) {
            Ok(stored) => {
                let stored: serde_json::Value = serde_json::from_str(&stored)
                    .map_err(|e| EngineError::bad_file(path, e.to_string()))?;
                // Both sides through the same parser: the same float writes the same digits.
                let ours: serde_json::Value = serde_json::from_str(&text).expect("our own JSON");
                let mut differ = Vec::new();
                differences("", &stored, &ours, &mut differ);
                differ.retain(|d| !d.starts_with("train.iterations:"));
                if !differ.is_empty() {
                    let dir = path.parent().unwrap_or(path);
                    return Err(EngineError::RunFolder(format!(
                        "{} was started with other settings ({}; see {}): resume with the same ones (only --iterations may change), or use a new directory",
                        dir.display(),
                        differ.join(", "),
                        path.display()
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(EngineError::io(path, e)),
        }
    }
    write_atomically(path, text.as_bytes())
}

/// The lock file a running job holds in its run folder.
const RUN_LOCK_FILE: &str = ".lock";

/// Holds a run folder for one job (an exclusive lock on its `.lock` file, released when this
/// is dropped or the process ends, however it ends). A second job on the same folder, in this
/// process or another, is refused instead of interleaving its checkpoints with the first's.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Creates the run folder `dir`, takes its lock, and then removes the temporary files an
/// earlier job killed in the middle of a write left behind (`.NAME.tmp…`, from
/// [`write_atomically`]): under the lock no other job is writing them.
pub fn lock_run_folder(dir: &Path) -> Result<RunLock> {
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let path = dir.join(RUN_LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| EngineError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(EngineError::RunFolder(format!(
                "{}: another job is running in this folder (it holds {}); wait for it to end or use another directory",
                dir.display(),
                path.display()
            )));
        }
        Err(TryLockError::Error(e)) => return Err(EngineError::io(&path, e)),
    }
    for sub in [dir.to_path_buf(), dir.join("samples")] {
        let Ok(entries) = std::fs::read_dir(&sub) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.contains(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(RunLock { _file: file })
}

/// Every leaf where `was` and `now` differ, as `a.b: was → now`.
fn differences(at: &str, was: &serde_json::Value, now: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    let key = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match (was, now) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, u) in a {
                match b.get(k) {
                    Some(v) => differences(&key(k), u, v, out),
                    None => out.push(format!("{}: {u} → (none)", key(k))),
                }
            }
            for (k, v) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
                out.push(format!("{}: (none) → {v}", key(k)));
            }
        }
        _ if was != now => out.push(format!("{at}: {was} → {now}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::options::TrainOptions;

    /// A job's options as the distillation job keeps them: a nested recipe and its length.
    #[derive(Clone, Serialize)]
    struct Recipe {
        history_layers: usize,
        self_forcing: SelfForcing,
        train: TrainOptions,
    }

    #[derive(Clone, Serialize)]
    struct SelfForcing {
        fraction: f64,
    }

    #[test]
    fn run_options_refuse_another_recipe_but_not_another_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("distill-options.json");
        let ours = Recipe {
            history_layers: 2,
            self_forcing: SelfForcing { fraction: 0.0 },
            train: TrainOptions::paper(100),
        };
        // A run folder from before the options were kept resumes, and keeps them from now on.
        keep_run_options(&path, &ours, true).unwrap();
        assert!(path.exists());
        let mut longer = ours.clone();
        longer.train.iterations *= 2;
        keep_run_options(&path, &longer, true).unwrap();
        let mut other = longer.clone();
        other.history_layers = 3;
        other.self_forcing.fraction = 0.5;
        let msg = keep_run_options(&path, &other, true)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("history_layers: 2 → 3"), "{msg}");
        assert!(msg.contains("self_forcing.fraction: 0.0 → 0.5"), "{msg}");
        assert!(!msg.contains("train.iterations"), "{msg}");
        // Not resuming starts the run over with the new options.
        keep_run_options(&path, &other, false).unwrap();
        keep_run_options(&path, &other, true).unwrap();
        std::fs::write(&path, b"{ truncated").unwrap();
        let msg = keep_run_options(&path, &other, true)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("distill-options.json"), "{msg}");
    }

    #[test]
    fn a_run_folder_is_held_by_one_job_and_stale_temporaries_go() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(run.join("samples")).unwrap();
        let stale = [
            run.join(".checkpoint.safetensors.tmp4242-7-0000beef"),
            run.join("samples")
                .join(".grid-000100.png.tmp4242-8-0000cafe"),
        ];
        for p in &stale {
            std::fs::write(p, b"half a checkpoint").unwrap();
        }
        std::fs::write(run.join("checkpoint.safetensors"), b"kept").unwrap();
        let held = lock_run_folder(&run).unwrap();
        for p in &stale {
            assert!(!p.exists(), "{} was left", p.display());
        }
        assert!(run.join("checkpoint.safetensors").exists());
        // A second job is refused while the first holds the folder, and not after.
        let err = lock_run_folder(&run).unwrap_err();
        assert!(matches!(err, EngineError::RunFolder(_)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("another job is running"), "{msg}");
        assert!(msg.contains(&run.display().to_string()), "{msg}");
        drop(held);
        lock_run_folder(&run).unwrap();
        // A folder that does not exist yet is made.
        lock_run_folder(&dir.path().join("new/run")).unwrap();
    }
}
