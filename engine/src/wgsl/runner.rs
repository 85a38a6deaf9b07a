//! Runs `shaders/attention.wgsl` on a wgpu device of its own (tests, benchmarks) or one shared
//! with burn or the window: one compiled pipeline per head dimension and precision.

use std::collections::HashMap;
use std::sync::Mutex;

use wgpu::util::DeviceExt;

use super::tiling::{
    Precision, TileConfig, buffer_size, decode_values, encode_values, kernel_params, tile_config,
};
use crate::error::{EngineError, Result};
use crate::ops::{AttentionMask, AttentionShape};

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
            return Err(EngineError::InvalidSetting(format!(
                "empty attention {shape:?}"
            )));
        }
        let q_bytes = buffer_size(shape.bh * shape.tq * shape.head_dim, buffers.precision);
        let kv_bytes = buffer_size(shape.bh * shape.tk * shape.head_dim, buffers.precision);
        if buffers.q.size() < q_bytes
            || buffers.out.size() < q_bytes
            || buffers.k.size() < kv_bytes
            || buffers.v.size() < kv_bytes
        {
            return Err(EngineError::InvalidSetting(format!(
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
            return Err(EngineError::InvalidSetting(format!(
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
