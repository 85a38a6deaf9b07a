//! Host side of `shaders/attention.wgsl`: fused attention with ARD's trajectory masks (none,
//! block-causal, block-diagonal) and a key/value cache, one pipeline per head dimension.
//!
//! The kernel runs on any wgpu device: its own (for tests and benchmarks) or one shared with
//! burn or the window. [`attention_reference`] is the float64 CPU definition it is tested
//! against.

use std::collections::HashMap;
use std::sync::Mutex;

use wgpu::util::DeviceExt;

use crate::error::{EngineError, Result};

const SOURCE: &str = include_str!("../../shaders/attention.wgsl");
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
    fn wgsl_type(self) -> &'static str {
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
    fn workgroups(&self, bh: usize, tq: usize) -> (u32, u32) {
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

fn tile_config(head_dim: usize, precision: Precision) -> Result<TileConfig> {
    TileConfig::for_head_dim(head_dim)
        .map(|c| c.with_precision(precision))
        .ok_or_else(|| {
        EngineError::Input(format!(
            "head dimension {head_dim} does not fit the WGSL attention's {WORKGROUP_BYTES} bytes \
             of workgroup memory"
        ))
    })
}

/// `[bh, tq, head_dim]` queries against `[bh, tk, head_dim]` keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub bh: usize,
    pub tq: usize,
    pub tk: usize,
    pub head_dim: usize,
}

/// Which keys a query sees. Tokens come in steps of `tokens_per_step`; query i is in step
/// `q_step_offset + i / tokens_per_step` (with a KV cache: the current step's index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionMask {
    None,
    BlockCausal {
        tokens_per_step: usize,
        q_step_offset: usize,
    },
    BlockDiagonal {
        tokens_per_step: usize,
        q_step_offset: usize,
    },
}

impl AttentionMask {
    /// Keys `[lo, hi)` visible to query row `i` of `tk` keys.
    pub fn key_range(&self, i: usize, tk: usize) -> (usize, usize) {
        match *self {
            Self::None => (0, tk),
            Self::BlockCausal {
                tokens_per_step: t,
                q_step_offset,
            } => (0, tk.min((q_step_offset + i / t + 1) * t)),
            Self::BlockDiagonal {
                tokens_per_step: t,
                q_step_offset,
            } => {
                let step = q_step_offset + i / t;
                (tk.min(step * t), tk.min((step + 1) * t))
            }
        }
    }

    fn params(&self) -> (u32, u32, u32) {
        match *self {
            Self::None => (0, 1, 0),
            Self::BlockCausal {
                tokens_per_step,
                q_step_offset,
            } => (1, tokens_per_step as u32, q_step_offset as u32),
            Self::BlockDiagonal {
                tokens_per_step,
                q_step_offset,
            } => (2, tokens_per_step as u32, q_step_offset as u32),
        }
    }
}

/// The kernel's `Params` uniform: bh, tq, tk, tokens per step, query step offset, mode, scale.
fn kernel_params(shape: AttentionShape, mask: AttentionMask) -> [u32; 8] {
    let (mode, tokens_per_step, q_step_offset) = mask.params();
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

/// Float64 attention on the CPU, the definition the kernel is tested against.
pub fn attention_reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttentionShape,
    mask: AttentionMask,
) -> Vec<f32> {
    let AttentionShape {
        bh,
        tq,
        tk,
        head_dim: d,
    } = shape;
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0f32; bh * tq * d];
    for b in 0..bh {
        for i in 0..tq {
            let (lo, hi) = mask.key_range(i, tk);
            let qi = &q[(b * tq + i) * d..][..d];
            let scores: Vec<f64> = (lo..hi)
                .map(|j| {
                    let kj = &k[(b * tk + j) * d..][..d];
                    scale
                        * qi.iter()
                            .zip(kj)
                            .map(|(&a, &c)| a as f64 * c as f64)
                            .sum::<f64>()
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            for (w, j) in weights.iter().zip(lo..hi) {
                let vj = &v[(b * tk + j) * d..][..d];
                for (o, &x) in out[(b * tq + i) * d..][..d].iter_mut().zip(vj) {
                    *o += (w / total * x as f64) as f32;
                }
            }
        }
    }
    out
}

/// Bytes of a buffer of `n` elements: wgpu binds, copies and maps storage buffers in whole
/// 4-byte words, so an odd count of f16 gets one element of padding.
fn buffer_size(n: usize, precision: Precision) -> u64 {
    (n * precision.bytes()).next_multiple_of(4) as u64
}

/// Little-endian bytes of `values` as `precision` elements.
fn encode_values(values: &[f32], precision: Precision) -> Vec<u8> {
    match precision {
        Precision::F32 => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Precision::F16 => values
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
    }
}

fn decode_values(bytes: &[u8], precision: Precision) -> Vec<f32> {
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

struct Pipeline {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    config: TileConfig,
}

/// Compiled attention pipelines on one wgpu device.
pub struct AttentionKernel {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pipelines: Mutex<HashMap<(usize, Precision), std::sync::Arc<Pipeline>>>,
}

/// GPU buffers of one attention call.
pub struct AttentionBuffers<'a> {
    pub q: &'a wgpu::Buffer,
    pub k: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
    pub out: &'a wgpu::Buffer,
    /// What the four buffers hold.
    pub precision: Precision,
}

impl AttentionKernel {
    pub fn new(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        Self {
            device,
            queue,
            pipelines: Mutex::new(HashMap::new()),
        }
    }

    /// A device of its own on the best adapter; a clear error when there is none.
    pub fn on_default_adapter() -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|_| {
            EngineError::Device(
                "no wgpu adapter found (no Vulkan, Metal or DX12 driver): the WGSL kernels need \
                 one; the CPU path uses burn's own attention"
                    .into(),
            )
        })?;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("ARD attention"),
            required_features: adapter.features() & wgpu::Features::SHADER_F16,
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| EngineError::Device(format!("wgpu device: {e}")))?;
        Ok(Self::new(device, queue))
    }

    /// Whether the device can run the kernel on f16 buffers.
    pub fn supports_f16(&self) -> bool {
        self.device.features().contains(wgpu::Features::SHADER_F16)
    }

    /// The compiled pipeline for `head_dim` and `precision`, built on first use.
    fn pipeline(&self, head_dim: usize, precision: Precision) -> Result<std::sync::Arc<Pipeline>> {
        if precision == Precision::F16 && !self.supports_f16() {
            return Err(EngineError::Device(
                "this adapter has no f16 shader support (wgpu's SHADER_F16): use f32".into(),
            ));
        }
        let mut cache = self.pipelines.lock().expect("pipeline cache");
        if let Some(p) = cache.get(&(head_dim, precision)) {
            return Ok(p.clone());
        }
        let config = tile_config(head_dim, precision)?;
        let bytes = config.workgroup_bytes();
        let limit = self.device.limits().max_compute_workgroup_storage_size as usize;
        if bytes > limit {
            return Err(EngineError::Device(format!(
                "head dimension {head_dim} needs {bytes} bytes of workgroup memory; this device \
                 has {limit}"
            )));
        }
        // SAFETY: every index in the shader is clamped into its array (rows, keys and the
        // padded vec4 lanes), and the host checks the buffers against the shape before each
        // launch, so wgpu's per-access bounds checks and loop counters are not needed.
        let module = unsafe {
            self.device.create_shader_module_trusted(
                wgpu::ShaderModuleDescriptor {
                    label: Some("attention.wgsl"),
                    source: wgpu::ShaderSource::Wgsl(config.shader_source().into()),
                },
                wgpu::ShaderRuntimeChecks::unchecked(),
            )
        };
        let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty,
            count: None,
        };
        let storage = |read_only: bool| wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        };
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("attention"),
                entries: &[
                    entry(0, storage(false)),
                    entry(1, storage(false)),
                    entry(2, storage(false)),
                    entry(3, storage(false)),
                    entry(
                        4,
                        wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Uniform,
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                    ),
                ],
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("attention"),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("attention"),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        let p = std::sync::Arc::new(Pipeline {
            pipeline,
            layout,
            config,
        });
        cache.insert((head_dim, precision), p.clone());
        Ok(p)
    }

    /// Records one attention into `encoder` on buffers already on the device (f16 buffers of an
    /// odd element count padded to whole 4-byte words, as wgpu binds storage).
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        buffers: AttentionBuffers,
        shape: AttentionShape,
        mask: AttentionMask,
    ) -> Result<()> {
        if shape.bh == 0 || shape.tq == 0 || shape.tk == 0 {
            return Err(EngineError::Input(format!("empty attention {shape:?}")));
        }
        let q_bytes = buffer_size(shape.bh * shape.tq * shape.head_dim, buffers.precision);
        let kv_bytes = buffer_size(shape.bh * shape.tk * shape.head_dim, buffers.precision);
        if buffers.q.size() < q_bytes
            || buffers.out.size() < q_bytes
            || buffers.k.size() < kv_bytes
            || buffers.v.size() < kv_bytes
        {
            return Err(EngineError::Input(format!(
                "attention buffers are smaller than {shape:?} needs"
            )));
        }
        let p = self.pipeline(shape.head_dim, buffers.precision)?;
        let params = kernel_params(shape, mask);
        let params = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("attention params"),
                contents: &params
                    .iter()
                    .flat_map(|p| p.to_le_bytes())
                    .collect::<Vec<u8>>(),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("attention"),
            layout: &p.layout,
            entries: &[
                (0, buffers.q),
                (1, buffers.k),
                (2, buffers.v),
                (3, buffers.out),
                (4, &params),
            ]
            .map(|(binding, buffer)| wgpu::BindGroupEntry {
                binding,
                resource: buffer.as_entire_binding(),
            }),
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("attention"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&p.pipeline);
        pass.set_bind_group(0, &bind, &[]);
        let (x, y) = p.config.workgroups(shape.bh, shape.tq);
        pass.dispatch_workgroups(x, y, 1);
        Ok(())
    }

    /// Uploads `q`, `k`, `v`, runs the kernel in f32 and reads the result back.
    pub fn run(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        shape: AttentionShape,
        mask: AttentionMask,
    ) -> Result<Vec<f32>> {
        self.run_with(q, k, v, shape, mask, Precision::F32)
    }

    /// [`Self::run`] with the buffers in `precision` (the values are rounded on upload).
    pub fn run_with(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        shape: AttentionShape,
        mask: AttentionMask,
        precision: Precision,
    ) -> Result<Vec<f32>> {
        let AttentionShape {
            bh,
            tq,
            tk,
            head_dim,
        } = shape;
        if q.len() != bh * tq * head_dim || k.len() != bh * tk * head_dim || v.len() != k.len() {
            return Err(EngineError::Input(format!(
                "attention {shape:?}: got {} / {} / {} values",
                q.len(),
                k.len(),
                v.len()
            )));
        }
        let upload = |data: &[f32]| {
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: None,
                    contents: &encode_values(data, precision),
                    usage: wgpu::BufferUsages::STORAGE,
                })
        };
        let (qb, kb, vb) = (upload(q), upload(k), upload(v));
        let size = buffer_size(q.len(), precision);
        let out = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("attention out"),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("attention readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        self.encode(
            &mut encoder,
            AttentionBuffers {
                q: &qb,
                k: &kb,
                v: &vb,
                out: &out,
                precision,
            },
            shape,
            mask,
        )?;
        encoder.copy_buffer_to_buffer(&out, 0, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        staging.map_async(wgpu::MapMode::Read, .., |_| {});
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| EngineError::Device(format!("wgpu poll: {e}")))?;
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| EngineError::Device(format!("reading the result back: {e}")))?;
        let mut values = decode_values(&view, precision);
        values.truncate(q.len());
        drop(view);
        staging.unmap();
        Ok(values)
    }

    /// Runs `iterations` attentions on device-resident buffers and waits: for benchmarks.
    pub fn time_resident(
        &self,
        shape: AttentionShape,
        mask: AttentionMask,
        precision: Precision,
        iterations: usize,
    ) -> Result<std::time::Duration> {
        let n_q = buffer_size(shape.bh * shape.tq * shape.head_dim, precision);
        let n_k = buffer_size(shape.bh * shape.tk * shape.head_dim, precision);
        let buffer = |size| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let (qb, kb, vb, ob) = (buffer(n_q), buffer(n_k), buffer(n_k), buffer(n_q));
        let run = |n: usize| -> Result<()> {
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
            for _ in 0..n {
                self.encode(
                    &mut encoder,
                    AttentionBuffers {
                        q: &qb,
                        k: &kb,
                        v: &vb,
                        out: &ob,
                        precision,
                    },
                    shape,
                    mask,
                )?;
            }
            self.queue.submit([encoder.finish()]);
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| EngineError::Device(format!("wgpu poll: {e}")))?;
            Ok(())
        };
        run(1)?;
        let start = std::time::Instant::now();
        run(iterations)?;
        Ok(start.elapsed())
    }
}

// ---- On burn's own wgpu device -------------------------------------------------------------

use burn::backend::wgpu::{CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::backend::{Backend, DispatchDevice, backend_extension, tensor::FloatTensor};
use burn::cubecl::prelude::{ExecutionMode, KernelId};
use burn::cubecl::server::{KernelArguments, MetadataBindingInfo};
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::{DType, Tensor};

/// ARD's attention as a burn backend extension: on cubecl (wgpu) devices it launches
/// `shaders/attention.wgsl` on the tensors' own buffers; inside fusion it is a lazy custom op.
#[backend_extension(Cube, Fusion)]
pub trait ArdAttentionBackend: Backend {
    /// `q: [BH, Tq, D]`, `k, v: [BH, Tk, D]` → `[BH, Tq, D]`; `params` as [`kernel_params`].
    #[fusion(dtype = q, shape = q)]
    fn ard_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        params: [u32; 8],
    ) -> FloatTensor<Self>;
}

struct AttentionSource {
    config: TileConfig,
}

impl KernelSource for AttentionSource {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(self.config.shader_source())
    }

    fn id(&self) -> KernelId {
        // Unchecked: no loop counters; the shader clamps every index itself.
        KernelId::new::<Self>()
            .info(self.config)
            .mode(ExecutionMode::Unchecked)
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

impl ArdAttentionBackend for CubeBackend {
    fn ard_attention(q: CubeTensor, k: CubeTensor, v: CubeTensor, params: [u32; 8]) -> CubeTensor {
        let contiguous = burn::backend::wgpu::into_contiguous;
        let (q, k, v) = (contiguous(q), contiguous(k), contiguous(v));
        let shape = q.meta.shape().clone();
        let (bh, tq, d) = (shape[0], shape[1], shape[2]);
        assert!(
            q.dtype == k.dtype && q.dtype == v.dtype,
            "ard_attention: q, k, v dtypes differ ({:?}, {:?}, {:?})",
            q.dtype,
            k.dtype,
            v.dtype
        );
        let precision = match q.dtype {
            DType::F16 => Precision::F16,
            DType::F32 => Precision::F32,
            other => panic!("ard_attention reads f32 or f16, not {other:?}"),
        };
        let client = q.client.clone();
        let out = CubeTensor::new_contiguous(
            client.clone(),
            q.device.clone(),
            shape,
            client.empty(buffer_size(bh * tq * d, precision) as usize),
            q.dtype,
        );
        let config = tile_config(d, precision).expect("checked by fused_attention_supported");
        let (x, y) = config.workgroups(bh, tq);
        let info = params
            .chunks(2)
            .map(|w| w[0] as u64 | (w[1] as u64) << 32)
            .collect();
        client.launch(
            Box::new(SourceKernel::new(
                AttentionSource { config },
                CubeDim::new_1d(config.workgroup_size() as u32),
            )),
            CubeCount::Static(x, y, 1),
            KernelArguments::new()
                .with_buffer(q.handle.clone().binding())
                .with_buffer(k.handle.clone().binding())
                .with_buffer(v.handle.clone().binding())
                .with_buffer(out.handle.clone().binding())
                .with_info(MetadataBindingInfo::custom(info)),
        );
        out
    }
}

/// Whether [`fused_attention`] can run on `device`: wgpu (cubecl) devices outside autodiff, with
/// a head dimension that fits the kernel's workgroup memory.
pub fn fused_attention_supported(device: &burn::tensor::Device, head_dim: usize) -> bool {
    !device.is_autodiff() && on_wgpu(device) && TileConfig::for_head_dim(head_dim).is_some()
}

/// Whether `device` is one of burn's cubecl (wgpu) devices, where the kernel can run.
pub fn on_wgpu(device: &burn::tensor::Device) -> bool {
    matches!(device.as_dispatch(), DispatchDevice::Cube(_))
}

/// Whether and how the model's attention uses the kernel on wgpu devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusedAttention {
    /// burn's attention.
    Off,
    /// Our kernel on the f32 tensors.
    F32,
    /// Our kernel with queries, keys, values and output stored as f16 (cast around the kernel;
    /// f32 arithmetic inside); where the device has no f16, as `F32`.
    F16,
}

impl FusedAttention {
    /// From `ARD_WGSL`: `1` or `f32`, `f16` (any case); anything else (or unset) is off.
    pub fn from_env() -> Self {
        let value = std::env::var("ARD_WGSL").unwrap_or_default();
        match value.trim().to_ascii_lowercase().as_str() {
            "1" | "f32" => Self::F32,
            "f16" => Self::F16,
            _ => Self::Off,
        }
    }
}

/// 0 = not decided yet (read `ARD_WGSL` on first use), 1 = off, 2 = f32, 3 = f16.
static FUSED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Sets the model's use of the kernel for this process (overrides `ARD_WGSL`).
pub fn set_fused_attention(mode: FusedAttention) {
    let code = match mode {
        FusedAttention::Off => 1,
        FusedAttention::F32 => 2,
        FusedAttention::F16 => 3,
    };
    FUSED.store(code, std::sync::atomic::Ordering::Relaxed);
}

fn fused_mode() -> FusedAttention {
    use std::sync::atomic::Ordering::Relaxed;
    if FUSED.load(Relaxed) == 0 {
        set_fused_attention(FusedAttention::from_env());
    }
    match FUSED.load(Relaxed) {
        2 => FusedAttention::F32,
        3 => FusedAttention::F16,
        _ => FusedAttention::Off,
    }
}

/// Whether the model's attention uses the kernel: where supported and switched on (`ARD_WGSL`
/// or [`set_fused_attention`]). Off by default: on the one adapter measured so far (lavapipe)
/// burn's autotuned attention is faster (docs/benchmarks.md).
pub fn use_fused_attention(device: &burn::tensor::Device, head_dim: usize) -> bool {
    fused_mode() != FusedAttention::Off && fused_attention_supported(device, head_dim)
}

/// `q: [B, h, Lq, d]`, `k, v: [B, h, Lk, d]` → `[B, h, Lq, d]` with our kernel on burn's wgpu
/// device. Check [`fused_attention_supported`] first.
pub fn fused_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: AttentionMask) -> Tensor<4> {
    let [b, h, lq, d] = q.dims();
    let lk = k.dims()[2];
    let shape = AttentionShape {
        bh: b * h,
        tq: lq,
        tk: lk,
        head_dim: d,
    };
    let params = kernel_params(shape, mask);
    let dtype = q.dtype();
    // The kernel reads f32 or f16. f16 mode on an f32 model casts q, k and v (the whole key/value
    // cache) around every call.
    let f16_mode = fused_mode() == FusedAttention::F16;
    let device_f16 = f16_mode && q.device().supports_dtype(DType::F16);
    if f16_mode && !device_f16 {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            eprintln!("this device has no f16 shaders: our attention runs on f32 buffers")
        });
    }
    let f16 = dtype == DType::F16 || device_f16;
    let storage = if f16 { DType::F16 } else { DType::F32 };
    let prepare = |t: Tensor<4>, l: usize| t.cast(storage).reshape([b * h, l, d]).into_dispatch();
    let out = burn::backend::Dispatch::ard_attention(
        prepare(q, lq),
        prepare(k, lk),
        prepare(v, lk),
        params,
    );
    Tensor::<3>::from_dispatch(out)
        .cast(dtype)
        .reshape([b, h, lq, d])
}
