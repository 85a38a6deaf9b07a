//! ARD's attention inside burn: a backend extension that launches `shaders/attention.wgsl` on
//! burn's own wgpu tensors, and the process-wide switch that routes the model's attention to it.

use burn::backend::wgpu::{CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::backend::{Backend, backend_extension, tensor::FloatTensor};
use burn::cubecl::prelude::{ExecutionMode, KernelId};
use burn::cubecl::server::{KernelArguments, MetadataBindingInfo};
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::{DType, Tensor};

use super::tiling::{Precision, TileConfig, buffer_size, kernel_params, tile_config};
use crate::device::on_wgpu;
use crate::ops::{AttentionMask, AttentionShape, Kernels};

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

/// Calls of [`fused_attention`] in this process.
static WGSL_ATTENTION_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many attentions our WGSL kernel has been handed in this process.
pub fn wgsl_attention_calls() -> u64 {
    WGSL_ATTENTION_CALLS.load(std::sync::atomic::Ordering::Relaxed)
}

/// `q: [B, h, Lq, d]`, `k, v: [B, h, Lk, d]` → `[B, h, Lq, d]` with our kernel on burn's wgpu
/// device. Check [`fused_attention_supported`] first. `f16_mode` stores
/// q, k, v and the output as f16 where the device has f16 shaders.
pub fn fused_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: AttentionMask,
    f16_mode: bool,
) -> Tensor<4> {
    WGSL_ATTENTION_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

/// Our WGSL attention (`shaders/attention.wgsl`) on burn's wgpu devices; the other ops are
/// burn's. `f16` stores the kernel's inputs and output as f16 (f32 arithmetic inside).
pub struct WgslKernels {
    pub f16: bool,
}

impl Kernels for WgslKernels {
    fn attention(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: AttentionMask,
    ) -> Tensor<4> {
        fused_attention(q, k, v, mask, self.f16)
    }
}
