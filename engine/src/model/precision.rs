//! The float type a model is stored and computed in at inference: f32 (the reference's), or
//! f16 / bf16 where the device supports them (half the memory of the weights and the key/value
//! cache; on GPUs, the fast path). LayerNorm statistics and the samplers' state stay in f32,
//! and the network's outputs are handed back as f32; matrix products accumulate in f32 on
//! burn's kernels. Training is always f32.

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, Device, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// Storage and compute precision of a model's weights and activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
    BF16,
}

impl Precision {
    pub fn float_dtype(self) -> FloatDType {
        match self {
            Self::F32 => FloatDType::F32,
            Self::F16 => FloatDType::F16,
            Self::BF16 => FloatDType::BF16,
        }
    }

    pub fn is_f32(&self) -> bool {
        *self == Self::F32
    }

    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::BF16 => DType::BF16,
        }
    }

    /// Refuses a precision `device` cannot compute in.
    pub fn check(self, device: &Device) -> Result<()> {
        if self == Self::F32 || device.supports_dtype(self.dtype()) {
            Ok(())
        } else {
            Err(EngineError::Unsupported(format!(
                "this device does not compute in {self}; use f32{}",
                if self == Self::BF16 { " or f16" } else { "" }
            )))
        }
    }
}

impl FromStr for Precision {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::BF16),
            other => Err(EngineError::InvalidSetting(format!(
                "precision `{other}`: expected f32, f16 or bf16"
            ))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
        })
    }
}

/// Casts every float parameter of a module.
struct CastParams(FloatDType);

impl ModuleMapper for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

/// `module` with every float parameter in `precision` (a no-op for those already in it).
pub fn cast_params<M: Module>(module: M, precision: Precision) -> M {
    module.map(&mut CastParams(precision.float_dtype()))
}

/// `x` in the float type of `like` (a no-op when they agree).
pub fn cast_like<const D: usize, const E: usize>(x: Tensor<D>, like: &Tensor<E>) -> Tensor<D> {
    x.cast(FloatDType::from(like.dtype()))
}

/// `x` as f32 (a no-op for f32).
pub fn to_f32<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.cast(FloatDType::F32)
}
