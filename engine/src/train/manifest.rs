//! A run's manifest: what a pipeline of jobs in one folder was trained with and how long each
//! stage took, assembled from the files the jobs wrote there (their options, the trajectory
//! set's manifest, the teacher's data, the last evaluation point, the model files'
//! fingerprints) and the stage times the pipeline script appended to `stage-times.tsv`. Nothing
//! in it is typed by hand.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::error::{EngineError, Result};
use crate::eval::monitor::{EVAL_LOG, read_eval_log};
use crate::io::writer::file_fingerprint;

/// The teacher job's description of its training data (beside its options).
pub const DATASET_FILE: &str = "dataset.json";
/// Lines `stage<TAB>seconds` appended by a pipeline script as each stage ends; a stage resumed
/// by a rerun has several lines, which add up.
pub const STAGE_TIMES_FILE: &str = "stage-times.tsv";

/// Files a job keeps in its run folder that describe how it ran.
const DESCRIPTIONS: [&str; 5] = [
    "teacher-options.json",
    "distill-options.json",
    "gan-options.json",
    "manifest.json",
    DATASET_FILE,
];

/// The manifest of the run folder `run`: each job folder in it (sorted by name) with its
/// descriptions, last evaluation point and model files; the weight files beside them; the
/// stage times.
pub fn run_manifest(run: &Path) -> Result<Value> {
    let entries = sorted_entries(run)?;
    let mut jobs = Map::new();
    let mut files = Map::new();
    for path in entries {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if path.is_dir() {
            let job = job_manifest(&path)?;
            if !job.is_empty() {
                jobs.insert(name, Value::Object(job));
            }
        } else if name.ends_with(".safetensors") {
            files.insert(name, json!(file_fingerprint(&path)?));
        }
    }
    Ok(json!({
        "run": run.display().to_string(),
        "stage_minutes": stage_minutes(&run.join(STAGE_TIMES_FILE))?,
        "jobs": jobs,
        "files": files,
    }))
}

/// One job folder's descriptions (by file name), last evaluation point and model files
/// (name → fingerprint); empty when it holds none of them.
fn job_manifest(dir: &Path) -> Result<Map<String, Value>> {
    let mut job = Map::new();
    for name in DESCRIPTIONS {
        let path = dir.join(name);
        if path.exists() {
            job.insert(name.into(), read_json(&path)?);
        }
    }
    if let Some(point) = read_eval_log(&dir.join(EVAL_LOG))?.pop() {
        job.insert("last_eval".into(), json!(point));
    }
    for path in sorted_entries(dir)? {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.ends_with(".safetensors") && name != "checkpoint.safetensors" {
            job.insert(name.into_owned(), json!(file_fingerprint(&path)?));
        }
    }
    Ok(job)
}

/// Minutes per stage (one decimal), in the order the stages first ended; none without a file.
fn stage_minutes(path: &Path) -> Result<Map<String, Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(EngineError::io(path, e)),
    };
    let mut seconds: Vec<(String, f64)> = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let parsed = line
            .split_once('\t')
            .and_then(|(stage, s)| Some((stage.to_string(), s.trim().parse::<f64>().ok()?)));
        let Some((stage, s)) = parsed else {
            return Err(EngineError::bad_file(
                path,
                format!("line {}: want `stage<TAB>seconds`, got {line:?}", n + 1),
            ));
        };
        match seconds.iter_mut().find(|(name, _)| *name == stage) {
            Some((_, total)) => *total += s,
            None => seconds.push((stage, s)),
        }
    }
    Ok(seconds
        .into_iter()
        .map(|(stage, s)| (stage, json!((s / 6.0).round() / 10.0)))
        .collect())
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| EngineError::bad_file(path, e.to_string()))
}

fn sorted_entries(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let read = std::fs::read_dir(dir).map_err(|e| EngineError::io(dir, e))?;
    let mut paths: Vec<_> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_times_add_up_per_stage_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STAGE_TIMES_FILE);
        std::fs::write(&path, "teacher\t600\ntrajectories\t90\nteacher\t1200\n").unwrap();
        let m = stage_minutes(&path).unwrap();
        assert_eq!(m["teacher"], json!(30.0));
        assert_eq!(m["trajectories"], json!(1.5));
        assert_eq!(m.keys().next().unwrap(), "teacher");
        std::fs::write(&path, "teacher 600\n").unwrap();
        let err = stage_minutes(&path).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
