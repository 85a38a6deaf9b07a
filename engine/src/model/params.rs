//! Moving parameters between reference-named tensors (PyTorch layout) and burn modules, and
//! drawing fresh ones with DiT's initialisation (Xavier-uniform linears with zero biases,
//! N(0, 0.02) label table and timestep MLP, zeroed adaLN modulations and output layer:
//! "adaLN-Zero", Peebles & Xie 2023).

use std::cell::Cell;
use std::collections::BTreeSet;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{EngineError, Result};
use crate::io::host::HostTensor;
use crate::io::weights::TensorFile;
use crate::io::writer::{SafetensorsWriter, Storage};
use crate::model::precision::Precision;

/// How a fresh parameter is drawn (DiT's initialisation). Ignored when reading a file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Xavier-uniform over (fan_in, fan_out).
    Xavier {
        fan_in: usize,
        fan_out: usize,
    },
    /// N(0, std²).
    Normal(f32),
    Zeros,
    /// All ones (normalisation gains).
    Ones,
}

/// How a linear layer is initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LinearInit {
    /// Xavier-uniform weight, zero bias: DiT's `_basic_init` of every linear.
    Xavier,
    /// Zero weight and bias: adaLN-Zero's modulations and output layer.
    AdaLnZero,
    /// N(0, std²) weight, zero bias (the timestep MLP).
    Normal(f32),
}

/// How to initialise fresh weights.
#[derive(Clone, Copy, Debug)]
pub struct InitOptions {
    pub seed: u64,
    /// DiT's adaLN-Zero and zero biases (true for training). False fills the zeroed layers and
    /// biases with random values too, so that tests exercise every parameter.
    pub zero_init: bool,
}

enum Source<'a> {
    File(&'a TensorFile),
    Fresh { rng: Box<StdRng>, zero_init: bool },
}

/// Where a model's parameters come from: a file (by reference key, checking every shape and
/// value, remembering what was used) or a fresh initialisation. The models' `load`
/// constructors name each parameter once with its shape and its initialisation, and serve both.
pub struct ParamSource<'a> {
    source: Source<'a>,
    device: Device,
    used: BTreeSet<String>,
    precision: Precision,
    /// Bytes uploaded since the device last drained its queue.
    unsynced: Cell<usize>,
}

/// Bytes of weights uploaded between two drains of the device's queue while loading.
const SYNC_EVERY_BYTES: usize = 64 << 20;

impl<'a> ParamSource<'a> {
    /// Reads from `file`.
    pub fn file(file: &'a TensorFile, device: &Device) -> Self {
        Self {
            source: Source::File(file),
            device: device.clone(),
            used: BTreeSet::new(),
            precision: Precision::F32,
            unsynced: Cell::new(0),
        }
    }

    /// Draws fresh weights (seeded; every parameter in the order the constructors ask).
    pub fn fresh(options: InitOptions, device: &Device) -> Self {
        Self {
            source: Source::Fresh {
                rng: Box::new(StdRng::seed_from_u64(options.seed)),
                zero_init: options.zero_init,
            },
            device: device.clone(),
            used: BTreeSet::new(),
            precision: Precision::F32,
            unsynced: Cell::new(0),
        }
    }

    /// Parameters are cast to `precision` as they are made, so a half-precision model never
    /// holds all of its weights in f32.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Uploads `t` in the model's precision. Every [`SYNC_EVERY_BYTES`] the device's queue is
    /// drained, so that a GPU's staging buffers are reused instead of piling up while a large
    /// model loads.
    fn on_device<const D: usize>(&self, t: &HostTensor) -> Result<Tensor<D>> {
        let x = t
            .to_device::<D>(&self.device)?
            .cast(self.precision.float_dtype());
        let pending = self.unsynced.get() + 4 * t.data.len();
        if pending >= SYNC_EVERY_BYTES {
            self.device
                .sync()
                .map_err(|e| EngineError::Unsupported(format!("the device failed: {e:?}")))?;
            self.unsynced.set(0);
        } else {
            self.unsynced.set(pending);
        }
        Ok(x)
    }

    /// Whether the file holds `key` (never, for fresh weights).
    pub fn contains(&self, key: &str) -> bool {
        match &self.source {
            Source::File(file) => file.tensors.contains_key(key),
            Source::Fresh { .. } => false,
        }
    }

    /// The shape of `key` in the file (`None` if absent, and always for fresh weights).
    pub fn shape_of(&self, key: &str) -> Option<Vec<usize>> {
        match &self.source {
            Source::File(file) => file.tensors.get(key).map(|t| t.shape.clone()),
            Source::Fresh { .. } => None,
        }
    }

    /// A host tensor of exactly the `expected` shape, every value finite.
    pub fn host(&mut self, key: &str, expected: &[usize], init: Init) -> Result<HostTensor> {
        let file = match &mut self.source {
            Source::File(file) => *file,
            Source::Fresh { rng, .. } => return Ok(draw(rng, expected, init)),
        };
        let raw = file
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
        let t = file.f32(key)?;
        let bad = t.data.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(EngineError::NonFinite {
                key: key.to_string(),
                count: bad,
                total: t.data.len(),
            });
        }
        self.used.insert(key.to_string());
        Ok(t)
    }

    pub fn param<const D: usize>(
        &mut self,
        key: &str,
        expected: [usize; D],
        init: Init,
    ) -> Result<Param<Tensor<D>>> {
        let t = self.host(key, &expected, init)?;
        Ok(Param::from_tensor(self.on_device(&t)?))
    }

    /// `prefix.weight` (d_out, d_in) and `prefix.bias` (d_out) as a burn `Linear`.
    pub fn linear(
        &mut self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        init: LinearInit,
    ) -> Result<Linear> {
        let zero_init = match &self.source {
            Source::Fresh { zero_init, .. } => *zero_init,
            Source::File(_) => true,
        };
        let xavier = Init::Xavier {
            fan_in: d_in,
            fan_out: d_out,
        };
        let bias = if zero_init {
            Init::Zeros
        } else {
            Init::Normal(0.02)
        };
        let (w_init, b_init) = match init {
            LinearInit::Xavier => (xavier, bias),
            LinearInit::AdaLnZero if zero_init => (Init::Zeros, Init::Zeros),
            LinearInit::AdaLnZero => (xavier, bias),
            LinearInit::Normal(std) => (Init::Normal(std), Init::Zeros),
        };
        let w = self.host(&format!("{prefix}.weight"), &[d_out, d_in], w_init)?;
        let b = self.host(&format!("{prefix}.bias"), &[d_out], b_init)?;
        self.linear_from(w, b)
    }

    /// A conv weight (d_out, C, p, p) with stride p, read as a `Linear` over flattened patches
    /// (Xavier over the flattened patch, as DiT initialises it; zero bias).
    pub fn patch_linear(
        &mut self,
        prefix: &str,
        d_out: usize,
        shape: [usize; 3],
    ) -> Result<Linear> {
        let [c, p, q] = shape;
        let xavier = Init::Xavier {
            fan_in: c * p * q,
            fan_out: d_out,
        };
        let w = self.host(&format!("{prefix}.weight"), &[d_out, c, p, q], xavier)?;
        let b = self.host(&format!("{prefix}.bias"), &[d_out], Init::Zeros)?;
        self.linear_from(HostTensor::new(vec![d_out, c * p * q], w.data), b)
    }

    fn linear_from(&self, w: HostTensor, b: HostTensor) -> Result<Linear> {
        Ok(Linear {
            weight: Param::from_tensor(self.on_device(&transpose(&w))?),
            bias: Some(Param::from_tensor(self.on_device(&b)?)),
        })
    }

    /// Fails on keys of the file the model did not use.
    pub fn finish(self) -> Result<()> {
        let Source::File(file) = self.source else {
            return Ok(());
        };
        let unused: Vec<String> = file
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

/// A fresh tensor of `shape`.
fn draw(rng: &mut StdRng, shape: &[usize], init: Init) -> HostTensor {
    let n = shape.iter().product();
    let data = match init {
        Init::Xavier { fan_in, fan_out } => {
            let bound = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        }
        Init::Normal(std) => (0..n)
            .map(|_| std * rng.sample::<f32, _>(rand_distr::StandardNormal))
            .collect(),
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
    };
    HostTensor::new(shape.to_vec(), data)
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
