//! How `shaders/attention.wgsl` is laid out on the device: element precision, the tiling of
//! one head dimension within WebGPU's workgroup memory, the attention shape, ARD's trajectory
//! masks (none, block-causal, block-diagonal; with a KV cache's step offset), the kernel's
//! uniform parameters, and the byte layout of its buffers.

use crate::error::{EngineError, Result};
use crate::ops::{AttentionMask, AttentionShape};

pub(crate) const SOURCE: &str = include_str!("../../../shaders/attention.wgsl");
/// Workgroup memory the kernel may use: WebGPU's default limit, so it runs on every adapter.
pub const WORKGROUP_BYTES: usize = 16384;

/// Element type of the kernel's inputs and output in device memory. Scores, the softmax and
/// the output are accumulated in f32 either way; f16 halves the memory traffic and needs the
/// adapter's `SHADER_F16` feature.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    #[default]
    F32,
    F16,
}

impl Precision {
    pub(crate) fn wgsl_type(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        }
    }

    /// Bytes per element in device memory.
    pub fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 => 2,
        }
    }
}

/// How the kernel tiles one head dimension: `block_rows` query rows per workgroup against
/// `block_keys` keys staged at a time; each invocation computes a `score_rows` × `score_keys`
/// block of scores and `out_rows` rows of the output. The largest tiles that fit
/// [`WORKGROUP_BYTES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileConfig {
    pub head_dim: usize,
    pub block_rows: usize,
    pub block_keys: usize,
    pub score_rows: usize,
    pub score_keys: usize,
    pub out_rows: usize,
    pub precision: Precision,
}

impl TileConfig {
    /// The tiling for `head_dim`, or `None` when even the smallest tiles do not fit.
    pub fn for_head_dim(head_dim: usize) -> Option<Self> {
        [
            (32, 32, 4, 4, 2),
            (32, 16, 4, 2, 4),
            (16, 16, 2, 2, 2),
            (8, 8, 1, 1, 1),
            (8, 4, 1, 1, 1),
        ]
        .into_iter()
        .map(
            |(block_rows, block_keys, score_rows, score_keys, out_rows)| Self {
                head_dim,
                block_rows,
                block_keys,
                score_rows,
                score_keys,
                out_rows,
                precision: Precision::F32,
            },
        )
        .find(|c| head_dim > 0 && c.workgroup_bytes() <= WORKGROUP_BYTES)
    }

    /// The same tiling reading and writing `precision` elements.
    pub fn with_precision(self, precision: Precision) -> Self {
        Self { precision, ..self }
    }

    fn head_dim4(&self) -> usize {
        self.head_dim.div_ceil(4)
    }

    /// Bytes of workgroup memory: query, key and value tiles (vec4), scores, partial row
    /// maxima, the rows' running maxima and rescaling factors, and the key range.
    pub fn workgroup_bytes(&self) -> usize {
        let (br, bc) = (self.block_rows, self.block_keys);
        let part_max = br * bc / self.score_keys;
        (br + 2 * bc) * self.head_dim4() * 16 + (br * bc + part_max + 2 * br) * 4 + 8
    }

    /// One invocation per `score_rows` × `score_keys` block of the score tile.
    pub fn workgroup_size(&self) -> usize {
        (self.block_rows / self.score_rows) * (self.block_keys / self.score_keys)
    }

    /// Invocations that share `out_rows` rows of the output, each taking every
    /// `out_per_rows`-th vec4 column.
    pub fn out_per_rows(&self) -> usize {
        self.workgroup_size() * self.out_rows / self.block_rows
    }

    /// Workgroups for `bh` heads of `tq` queries: query blocks × heads.
    pub(crate) fn workgroups(&self, bh: usize, tq: usize) -> (u32, u32) {
        (tq.div_ceil(self.block_rows) as u32, bh as u32)
    }

    /// The kernel's WGSL with this tiling's sizes substituted.
    pub fn shader_source(&self) -> String {
        let (br, bc, d4) = (self.block_rows, self.block_keys, self.head_dim4());
        let out_cols = d4.div_ceil(self.out_per_rows());
        let enable = match self.precision {
            Precision::F32 => "",
            Precision::F16 => "enable f16;",
        };
        let src = SOURCE
            .replace("{{enable}}", enable)
            .replace("{{elem}}", self.precision.wgsl_type());
        [
            ("head_dim", self.head_dim),
            ("head_dim4", d4),
            ("block_rows", br),
            ("block_keys", bc),
            ("wg_size", self.workgroup_size()),
            ("score_rows", self.score_rows),
            ("score_keys", self.score_keys),
            ("score_regs", self.score_rows * self.score_keys),
            ("part_max_elems", br * bc / self.score_keys),
            ("out_rows", self.out_rows),
            ("out_per_rows", self.out_per_rows()),
            ("out_cols", out_cols),
            ("out_regs", self.out_rows * out_cols),
            ("q_elems", br * d4),
            ("kv_elems", bc * d4),
            ("s_elems", br * bc),
        ]
        .into_iter()
        .fold(src, |src, (name, value)| {
            src.replace(&format!("{{{{{name}}}}}"), &value.to_string())
        })
    }
}

pub(crate) fn tile_config(head_dim: usize, precision: Precision) -> Result<TileConfig> {
    TileConfig::for_head_dim(head_dim)
        .map(|c| c.with_precision(precision))
        .ok_or_else(|| {
        EngineError::Unsupported(format!(
            "head dimension {head_dim} does not fit the WGSL attention's {WORKGROUP_BYTES} bytes \
             of workgroup memory"
        ))
    })
}

/// The mask as the kernel's (mode, tokens per step, query step offset).
fn mask_params(mask: AttentionMask) -> (u32, u32, u32) {
    match mask {
        AttentionMask::None => (0, 1, 0),
        AttentionMask::BlockCausal {
            tokens_per_step,
            q_step_offset,
        } => (1, tokens_per_step as u32, q_step_offset as u32),
        AttentionMask::BlockDiagonal {
            tokens_per_step,
            q_step_offset,
        } => (2, tokens_per_step as u32, q_step_offset as u32),
    }
}

/// The kernel's `Params` uniform: bh, tq, tk, tokens per step, query step offset, mode, scale.
pub(crate) fn kernel_params(shape: AttentionShape, mask: AttentionMask) -> [u32; 8] {
    let (mode, tokens_per_step, q_step_offset) = mask_params(mask);
    let scale = (1.0 / (shape.head_dim as f64).sqrt()) as f32;
    [
        shape.bh as u32,
        shape.tq as u32,
        shape.tk as u32,
        tokens_per_step.max(1),
        q_step_offset,
        mode,
        scale.to_bits(),
        0,
    ]
}

/// Bytes of a buffer of `n` elements: wgpu binds, copies and maps storage buffers in whole
/// 4-byte words, so an odd count of f16 gets one element of padding.
pub(crate) fn buffer_size(n: usize, precision: Precision) -> u64 {
    (n * precision.bytes()).next_multiple_of(4) as u64
}

/// Little-endian bytes of `values` as `precision` elements.
pub(crate) fn encode_values(values: &[f32], precision: Precision) -> Vec<u8> {
    match precision {
        Precision::F32 => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Precision::F16 => values
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
    }
}

pub(crate) fn decode_values(bytes: &[u8], precision: Precision) -> Vec<f32> {
    match precision {
        Precision::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Precision::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    }
}
