//! Writing files: safetensors (atomically, through a temporary file and a rename), the JSON
//! manifests of sharded sets, and short fingerprints of files and data.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, View};

use crate::error::{EngineError, Result};
use crate::io::host::HostTensor;

/// How floats are stored in a written file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Storage {
    #[default]
    F32,
    F16,
}

struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Entry {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Collects tensors and header metadata, then writes a safetensors file atomically.
#[derive(Default)]
pub struct SafetensorsWriter {
    entries: BTreeMap<String, Entry>,
    metadata: HashMap<String, String>,
}

impl SafetensorsWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_f32(&mut self, name: impl Into<String>, t: &HostTensor, storage: Storage) {
        let (dtype, bytes) = match storage {
            Storage::F32 => (
                Dtype::F32,
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            Storage::F16 => (
                Dtype::F16,
                t.data
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect(),
            ),
        };
        self.entries.insert(
            name.into(),
            Entry {
                dtype,
                shape: t.shape.clone(),
                bytes,
            },
        );
    }

    pub fn add_i64(&mut self, name: impl Into<String>, values: &[i64]) {
        self.entries.insert(
            name.into(),
            Entry {
                dtype: Dtype::I64,
                shape: vec![values.len()],
                bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            },
        );
    }

    /// An opaque byte blob (a U8 tensor), e.g. optimizer state in a checkpoint.
    pub fn add_bytes(&mut self, name: impl Into<String>, bytes: Vec<u8>) {
        self.entries.insert(
            name.into(),
            Entry {
                dtype: Dtype::U8,
                shape: vec![bytes.len()],
                bytes,
            },
        );
    }

    /// Stores `value` under `key` in the header. Keep to one key: safetensors writes its
    /// metadata map in hash order, so a file with one key has the same bytes (and fingerprint)
    /// every time it is written.
    pub fn set_metadata(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.metadata.insert(key.into(), value.into());
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let meta = (!self.metadata.is_empty()).then(|| self.metadata.clone());
        safetensors::serialize(self.entries.iter().map(|(k, v)| (k.as_str(), v)), meta)
            .map_err(|e| EngineError::Format(format!("cannot serialise tensors: {e}")))
    }

    /// Writes to a temporary file beside `path`, syncs it, then renames it into place, so a
    /// crash or a full disk never leaves a half-written file under `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomically(path.as_ref(), &self.to_bytes()?)
    }
}

/// Writes `manifest` to `path` as JSON, or, when the file is there, checks that it holds the
/// same one, so that a folder of shards never mixes two sets; `other` tells the user what a
/// different one means.
pub fn check_or_write_manifest<T>(path: &Path, manifest: &T, other: &str) -> Result<()>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq,
{
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let existing: T = serde_json::from_str(&text)
                .map_err(|e| EngineError::bad_file(path, e.to_string()))?;
            if &existing != manifest {
                return Err(EngineError::bad_file(path, other));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_atomically(
            path,
            serde_json::to_string_pretty(manifest).unwrap().as_bytes(),
        ),
        // Unreadable is not absent: writing a new manifest over it would mix the shards it
        // describes with shards made otherwise.
        Err(e) => Err(EngineError::io(path, e)),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        EngineError::InvalidSetting(format!("{}: not a file path", path.display()))
    })?;
    // Unique per process and per call: workers of one set may share a folder (and a pid, on
    // different hosts), threads of one process may write the same path.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(
        ".{}.tmp{}-{call}-{nanos:08x}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable once the folder is synced (not possible everywhere).
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(EngineError::io(path, e));
    }
    Ok(())
}

/// FNV-1a 64-bit hash state, for short fingerprints of files and datasets.
#[derive(Clone, Copy, Debug)]
pub struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    pub fn feed(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// Fingerprint of a file's bytes.
pub fn file_fingerprint(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let mut f = Fingerprint::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(f.hex()),
            Ok(n) => f.feed(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(EngineError::io(path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_is_written_once_checked_after_and_never_written_over_an_unreadable_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.json");
        let m = vec![1u32, 2, 3];
        check_or_write_manifest(&path, &m, "another set").unwrap();
        check_or_write_manifest(&path, &m, "another set").unwrap();
        let msg = check_or_write_manifest(&path, &vec![4u32], "another set")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("another set"), "{msg}");
        // Not UTF-8: reported, and left as it was.
        std::fs::write(&path, b"\xff\xfe").unwrap();
        assert!(check_or_write_manifest(&path, &m, "another set").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"\xff\xfe");
        // No temporary file is left behind by the writes.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
