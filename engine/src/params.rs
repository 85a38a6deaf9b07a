//! Moving parameters between reference-named tensors (PyTorch layout) and burn modules.

use std::collections::BTreeSet;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};

use crate::error::{EngineError, Result};
use crate::host::HostTensor;
use crate::weights::{SafetensorsWriter, Storage, TensorFile};

/// Reads parameters by reference key, checking every shape, and remembers what it used.
pub struct ParamReader<'a> {
    file: &'a TensorFile,
    device: Device,
    used: BTreeSet<String>,
}

impl<'a> ParamReader<'a> {
    pub fn new(file: &'a TensorFile, device: &Device) -> Self {
        Self {
            file,
            device: device.clone(),
            used: BTreeSet::new(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn contains(&self, key: &str) -> bool {
        self.file.tensors.contains_key(key)
    }

    /// A host tensor with exactly the `expected` shape.
    pub fn host(&mut self, key: &str, expected: &[usize]) -> Result<HostTensor> {
        let raw = self
            .file
            .tensors
            .get(key)
            .ok_or_else(|| EngineError::MissingKey {
                key: key.to_string(),
                hint: missing_hint(key),
            })?;
        if raw.shape != expected {
            return Err(EngineError::WrongShape {
                key: key.to_string(),
                found: raw.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        let t = self.file.f32(key)?;
        self.used.insert(key.to_string());
        Ok(t)
    }

    pub fn param<const D: usize>(
        &mut self,
        key: &str,
        expected: [usize; D],
    ) -> Result<Param<Tensor<D>>> {
        let t = self.host(key, &expected)?;
        Ok(Param::from_tensor(t.to_device(&self.device)?))
    }

    /// `prefix.weight` (d_out, d_in) and `prefix.bias` (d_out) as a burn `Linear`.
    pub fn linear(&mut self, prefix: &str, d_in: usize, d_out: usize) -> Result<Linear> {
        let w = self.host(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let b = self.host(&format!("{prefix}.bias"), &[d_out])?;
        self.linear_from(w, b)
    }

    /// A conv weight (d_out, C, p, p) with stride p, read as a `Linear` over flattened patches.
    pub fn patch_linear(
        &mut self,
        prefix: &str,
        d_out: usize,
        shape: [usize; 3],
    ) -> Result<Linear> {
        let [c, p, q] = shape;
        let w = self.host(&format!("{prefix}.weight"), &[d_out, c, p, q])?;
        let b = self.host(&format!("{prefix}.bias"), &[d_out])?;
        self.linear_from(HostTensor::new(vec![d_out, c * p * q], w.data), b)
    }

    fn linear_from(&self, w: HostTensor, b: HostTensor) -> Result<Linear> {
        Ok(Linear {
            weight: Param::from_tensor(transpose(&w).to_device(&self.device)?),
            bias: Some(Param::from_tensor(b.to_device(&self.device)?)),
        })
    }

    /// Fails on keys the model did not use.
    pub fn finish(self) -> Result<()> {
        let unused: Vec<String> = self
            .file
            .tensors
            .keys()
            .filter(|k| !self.used.contains(*k))
            .cloned()
            .collect();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(EngineError::UnexpectedKeys { keys: unused })
        }
    }
}

fn missing_hint(key: &str) -> String {
    if key.starts_with("final_layer") && key.as_bytes().get(11).is_some_and(u8::is_ascii_digit) {
        " (a student needs one head per step: is this a teacher file, or is K wrong?)".into()
    } else if key.starts_with("blocks.") {
        " (fewer blocks than the configured depth?)".into()
    } else {
        String::new()
    }
}

/// Swaps the two axes of a 2-D host tensor (PyTorch's (out, in) ↔ burn's [in, out]).
pub fn transpose(t: &HostTensor) -> HostTensor {
    let (r, c) = (t.shape[0], t.shape[1]);
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = t.data[i * c + j];
        }
    }
    HostTensor::new(vec![c, r], out)
}

/// Writes burn modules under reference key names.
pub struct ParamWriter {
    pub writer: SafetensorsWriter,
    storage: Storage,
}

impl ParamWriter {
    pub fn new(storage: Storage) -> Self {
        Self {
            writer: SafetensorsWriter::new(),
            storage,
        }
    }

    pub fn tensor<const D: usize>(&mut self, key: &str, t: &Param<Tensor<D>>) {
        self.writer
            .add_f32(key, &HostTensor::from_tensor(t.val()), self.storage);
    }

    pub fn linear(&mut self, prefix: &str, l: &Linear) {
        let w = transpose(&HostTensor::from_tensor(l.weight.val()));
        self.writer
            .add_f32(format!("{prefix}.weight"), &w, self.storage);
        if let Some(b) = &l.bias {
            self.tensor(&format!("{prefix}.bias"), b);
        }
    }

    pub fn patch_linear(&mut self, prefix: &str, l: &Linear, shape: [usize; 3]) {
        let w = transpose(&HostTensor::from_tensor(l.weight.val()));
        let d_out = w.shape[0];
        let w = HostTensor::new(vec![d_out, shape[0], shape[1], shape[2]], w.data);
        self.writer
            .add_f32(format!("{prefix}.weight"), &w, self.storage);
        if let Some(b) = &l.bias {
            self.tensor(&format!("{prefix}.bias"), b);
        }
    }
}
