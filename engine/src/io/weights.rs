//! Weight and tensor files: safetensors (ours carry the model's description in the header) and PyTorch
//! `torch.save` checkpoints (read through burn-store's PyTorch reader).
//!
//! Opening a file reads its header only; each tensor's bytes are read when a model asks for
//! them, so loading a model never holds a second copy of the whole file (DiT-XL/2's 2.7 GB
//! loads in about the model's own size, `ard-bench --imagenet DIR --load-only`).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::store::pytorch_reader::{self, DType as PtDtype, PytorchReader};
use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};

use crate::error::{EngineError, Result};
use crate::io::host::HostTensor;

/// The container a file was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Safetensors,
    PyTorch,
}

/// Where a tensor's bytes are.
#[derive(Clone)]
enum Bytes {
    /// Held in memory.
    Owned(Arc<Vec<u8>>),
    /// In an open safetensors file, `len` bytes from `offset`, read when asked.
    InFile {
        file: Arc<Mutex<File>>,
        offset: u64,
        len: usize,
    },
    /// In a PyTorch checkpoint, read through its reader when asked.
    Pickled(pytorch_reader::Tensor),
}

/// One stored tensor: its element type, shape and little-endian bytes (read on demand).
#[derive(Clone)]
pub struct RawTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    bytes: Bytes,
}

impl std::fmt::Debug for RawTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawTensor")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

/// Little-endian bytes of `dtype` as f32 (f16, bf16 and f64 are converted); `None` for
/// non-float types.
fn floats(dtype: Dtype, b: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        _ => return None,
    })
}

impl RawTensor {
    /// A tensor held in memory.
    pub fn in_memory(dtype: Dtype, shape: Vec<usize>, bytes: Vec<u8>) -> Self {
        Self {
            dtype,
            shape,
            bytes: Bytes::Owned(Arc::new(bytes)),
        }
    }

    /// The stored bytes as they are (read from the file now if they are still there).
    pub fn bytes(&self) -> std::io::Result<Cow<'_, [u8]>> {
        match &self.bytes {
            Bytes::Owned(b) => Ok(Cow::Borrowed(b.as_slice())),
            Bytes::InFile { file, offset, len } => {
                let mut buf = vec![0u8; *len];
                let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
                f.seek(SeekFrom::Start(*offset))?;
                f.read_exact(&mut buf)?;
                Ok(Cow::Owned(buf))
            }
            Bytes::Pickled(t) => t.read().map(Cow::Owned),
        }
    }

    /// The values as f32 (f16, bf16 and f64 are converted); `None` for non-float types.
    pub fn to_f32(&self) -> std::io::Result<Option<Vec<f32>>> {
        Ok(floats(self.dtype, &self.bytes()?))
    }

    /// The values as i64 (any integer type, or floats holding whole numbers).
    pub fn to_i64(&self) -> std::io::Result<Option<Vec<i64>>> {
        let b = self.bytes()?;
        Ok(match self.dtype {
            Dtype::I64 => Some(
                b.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            Dtype::I32 => Some(
                b.chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                    .collect(),
            ),
            Dtype::U8 => Some(b.iter().map(|&v| v as i64).collect()),
            dtype => floats(dtype, &b).and_then(|f| {
                (!f.iter().any(|v| v.fract() != 0.0))
                    .then(|| f.into_iter().map(|v| v as i64).collect())
            }),
        })
    }
}

/// Every tensor of a file, by name, with the header metadata. The tensors' bytes stay in the
/// file until they are asked for.
#[derive(Clone, Debug)]
pub struct TensorFile {
    pub path: PathBuf,
    pub format: FileFormat,
    pub tensors: BTreeMap<String, RawTensor>,
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Opens a safetensors or PyTorch file, recognised by its first bytes, and reads its header.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut file = File::open(path).map_err(|e| EngineError::io(path, e))?;
        let mut head = Vec::with_capacity(9);
        (&mut file)
            .take(9)
            .read_to_end(&mut head)
            .map_err(|e| EngineError::io(path, e))?;
        // safetensors: an 8-byte header length, then the JSON header's `{`.
        let safetensors = head.get(8) == Some(&b'{');
        let pytorch = head.starts_with(b"PK\x03\x04")
            || (head.first() == Some(&0x80) && matches!(head.get(1), Some(2..=5)));
        if pytorch && !safetensors {
            Self::read_pytorch(path)
        } else {
            Self::open_safetensors(path, file)
        }
    }

    /// Parses safetensors bytes held in memory; `name` stands for the path in messages.
    pub fn from_safetensors_bytes(name: &str, bytes: &[u8]) -> Result<Self> {
        let path = Path::new(name);
        check_length(path, bytes.len() as u64)?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| not_safetensors(path, e))?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad_header(path, e))?;
        let tensors = st
            .iter()
            .map(|(name, view)| {
                let raw =
                    RawTensor::in_memory(view.dtype(), view.shape().to_vec(), view.data().to_vec());
                (name.to_string(), raw)
            })
            .collect();
        Ok(Self::safetensors(path, tensors, &header))
    }

    fn safetensors(path: &Path, tensors: BTreeMap<String, RawTensor>, header: &Metadata) -> Self {
        Self {
            path: path.to_path_buf(),
            format: FileFormat::Safetensors,
            tensors,
            metadata: header.metadata().clone().unwrap_or_default(),
        }
    }

    /// Validates the header against the file's length and notes where each tensor lies. The
    /// header is read with plain reads, not through a memory map, so a file that shrinks while
    /// it is opened (a copy still being written, say) gives an error rather than a SIGBUS.
    fn open_safetensors(path: &Path, mut file: File) -> Result<Self> {
        let len = file.metadata().map_err(|e| EngineError::io(path, e))?.len();
        check_length(path, len)?;
        let (n, header) = read_header(&mut file, len).map_err(|e| not_safetensors(path, e))?;
        let data_start = 8 + n;
        let file = Arc::new(Mutex::new(file));
        let tensors = header
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let (start, end) = info.data_offsets;
                let bytes = Bytes::InFile {
                    file: file.clone(),
                    offset: data_start + start as u64,
                    len: end - start,
                };
                let raw = RawTensor {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    bytes,
                };
                (name, raw)
            })
            .collect();
        Ok(Self::safetensors(path, tensors, &header))
    }

    /// Reads the file again by path: the reader's in-memory entry point takes plain pickles
    /// only, not the ZIP container `torch.save` writes. Tensors stay in the file until read.
    fn read_pytorch(path: &Path) -> Result<Self> {
        let reader = PytorchReader::new(path).map_err(|e| {
            EngineError::bad_file(path, format!("not a readable PyTorch checkpoint: {e}"))
        })?;
        let mut tensors = BTreeMap::new();
        for (name, t) in reader.into_tensors() {
            let dtype = match t.dtype() {
                PtDtype::F64 => Dtype::F64,
                PtDtype::F32 => Dtype::F32,
                PtDtype::F16 => Dtype::F16,
                PtDtype::BF16 => Dtype::BF16,
                PtDtype::I64 => Dtype::I64,
                PtDtype::I32 => Dtype::I32,
                PtDtype::U8 | PtDtype::Bool => Dtype::U8,
                // Other integer tensors never hold weights; keep them out of the way.
                _ => continue,
            };
            let raw = RawTensor {
                dtype,
                shape: t.shape().to_vec(),
                bytes: Bytes::Pickled(t),
            };
            tensors.insert(name, raw);
        }
        Ok(Self {
            path: path.to_path_buf(),
            format: FileFormat::PyTorch,
            tensors,
            metadata: HashMap::new(),
        })
    }

    /// An in-memory "file" of f32 tensors (freshly initialised weights, say).
    pub fn from_host(name: &str, tensors: impl IntoIterator<Item = (String, HostTensor)>) -> Self {
        let tensors = tensors
            .into_iter()
            .map(|(k, t)| {
                let bytes = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                (k, RawTensor::in_memory(Dtype::F32, t.shape, bytes))
            })
            .collect();
        Self {
            path: PathBuf::from(name),
            format: FileFormat::Safetensors,
            tensors,
            metadata: HashMap::new(),
        }
    }

    /// A JSON value stored in the safetensors header under `key`, if present.
    pub fn header_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(json) => serde_json::from_str(json).map(Some).map_err(|e| {
                EngineError::bad_file(&self.path, format!("unreadable `{key}` metadata: {e}"))
            }),
        }
    }

    /// The bytes of tensor `key`, as stored.
    pub fn bytes(&self, key: &str) -> Result<Cow<'_, [u8]>> {
        self.raw(key)?.bytes().map_err(|e| self.unreadable(key, e))
    }

    fn unreadable(&self, key: &str, e: std::io::Error) -> EngineError {
        EngineError::bad_file(
            &self.path,
            format!("tensor `{key}` could not be read (truncated or changed since opened?): {e}"),
        )
    }

    /// A float tensor by name.
    pub fn f32(&self, key: &str) -> Result<HostTensor> {
        let raw = self.raw(key)?;
        let data = raw.to_f32().map_err(|e| self.unreadable(key, e))?;
        let data = data.ok_or_else(|| {
            EngineError::bad_file(
                &self.path,
                format!(
                    "tensor `{key}` has type {:?}, expected a float type",
                    raw.dtype
                ),
            )
        })?;
        Ok(HostTensor::new(raw.shape.clone(), data))
    }

    /// A 1-D integer tensor (class labels) by name.
    pub fn labels(&self, key: &str) -> Result<Vec<i64>> {
        let raw = self.raw(key)?;
        if raw.shape.len() != 1 {
            return Err(EngineError::bad_file(
                &self.path,
                format!("labels `{key}` must be 1-D, found shape {:?}", raw.shape),
            ));
        }
        let values = raw.to_i64().map_err(|e| self.unreadable(key, e))?;
        values.ok_or_else(|| {
            EngineError::bad_file(
                &self.path,
                format!(
                    "tensor `{key}` ({:?}) does not hold integer labels",
                    raw.dtype
                ),
            )
        })
    }

    /// The tensor named `key` (its bytes not yet read).
    pub fn raw(&self, key: &str) -> Result<&RawTensor> {
        self.tensors.get(key).ok_or_else(|| {
            let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
            names.truncate(12);
            EngineError::bad_file(
                &self.path,
                format!(
                    "no tensor named `{key}` (the file has: {})",
                    names.join(", ")
                ),
            )
        })
    }

    /// Drops a common prefix such as `ema.`, `model.` or `module.` (training checkpoints) so
    /// that `probe` becomes a top-level key. Prefers `ema.` when several are present.
    pub fn strip_prefix_to(&mut self, probe: &str) {
        if self.tensors.contains_key(probe) {
            return;
        }
        let mut prefixes: Vec<String> = self
            .tensors
            .keys()
            .filter_map(|k| k.strip_suffix(probe).map(str::to_string))
            .collect();
        prefixes.sort_by_key(|p| (!p.starts_with("ema"), p.len()));
        if let Some(prefix) = prefixes.first().cloned() {
            self.tensors = std::mem::take(&mut self.tensors)
                .into_iter()
                .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|s| (s.to_string(), v)))
                .collect();
        }
    }
}

fn check_length(path: &Path, len: u64) -> Result<()> {
    if len < 8 {
        return Err(EngineError::bad_file(
            path,
            format!("not a safetensors or PyTorch file ({len} bytes, too short for a header)"),
        ));
    }
    Ok(())
}

/// Largest header accepted (the safetensors crate's own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Reads a safetensors header from the start of `file` (`len` bytes long) and checks that the
/// tensors it lists fill the rest of the file exactly. Returns the header's length in bytes.
fn read_header(file: &mut File, len: u64) -> std::result::Result<(u64, Metadata), String> {
    let mut n = [0u8; 8];
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    file.read_exact(&mut n).map_err(|e| e.to_string())?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER_BYTES || n > len - 8 {
        return Err(format!("a header of {n} bytes in a file of {len}"));
    }
    let mut json = vec![0u8; n as usize];
    file.read_exact(&mut json).map_err(|e| e.to_string())?;
    let header: Metadata = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
    let described = 8 + n + header.data_len() as u64;
    if described != len {
        return Err(format!(
            "the header describes {described} bytes, the file has {len}"
        ));
    }
    Ok((n, header))
}

fn not_safetensors(path: &Path, e: impl std::fmt::Display) -> EngineError {
    EngineError::bad_file(
        path,
        format!("not a valid safetensors file (truncated or corrupt?): {e}"),
    )
}

fn bad_header(path: &Path, e: safetensors::SafeTensorError) -> EngineError {
    EngineError::bad_file(path, format!("bad safetensors header: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::writer::{SafetensorsWriter, Storage};

    #[test]
    fn safetensors_whose_header_length_starts_with_0x80_is_not_taken_for_a_pickle() {
        // Pad the metadata until the 8-byte header length's low byte is 0x80 (pickle's magic).
        for pad in 0..600 {
            let mut w = SafetensorsWriter::new();
            w.add_f32("x", &HostTensor::new(vec![2], vec![1.0, 2.0]), Storage::F32);
            w.set_metadata("pad", "p".repeat(pad));
            let bytes = w.to_bytes().unwrap();
            if bytes[0] == 0x80 {
                let dir = std::env::temp_dir().join(format!("ard-sniff-{}", std::process::id()));
                std::fs::write(&dir, &bytes).unwrap();
                let f = TensorFile::read(&dir);
                let _ = std::fs::remove_file(&dir);
                assert_eq!(f.unwrap().f32("x").unwrap().data, vec![1.0, 2.0]);
                return;
            }
        }
        panic!("no padding gave a 0x80 first byte");
    }

    #[test]
    fn a_file_that_changes_after_its_header_is_read_gives_errors_not_a_crash() {
        let mut w = SafetensorsWriter::new();
        w.add_f32(
            "x",
            &HostTensor::new(vec![4], vec![1.0, 2.0, 3.0, 4.0]),
            Storage::F32,
        );
        let bytes = w.to_bytes().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");

        // Extra bytes after the last tensor, and a header longer than the file.
        std::fs::write(&path, [&bytes[..], &[0u8; 3]].concat()).unwrap();
        let msg = TensorFile::read(&path).unwrap_err().to_string();
        assert!(msg.contains("the file has"), "{msg}");
        let mut long = bytes.clone();
        long[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        std::fs::write(&path, &long).unwrap();
        let msg = TensorFile::read(&path).unwrap_err().to_string();
        assert!(msg.contains("truncated or corrupt"), "{msg}");

        // Opened whole, then cut short before the tensor is read (a copy being rewritten).
        std::fs::write(&path, &bytes).unwrap();
        let file = TensorFile::read(&path).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(bytes.len() as u64 - 8)
            .unwrap();
        let msg = file.f32("x").unwrap_err().to_string();
        assert!(msg.contains("w.safetensors"), "{msg}");
    }
}
