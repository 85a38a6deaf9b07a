//! Choosing where to compute: `flex` on the CPU, or `wgpu` on a GPU adapter.

use std::fmt;
use std::str::FromStr;

use burn::backend::DispatchDevice;
use burn::tensor::{Device, DeviceKind};

use crate::error::{EngineError, Result};

/// A compute device the user can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// burn's pure-Rust CPU backend.
    Cpu,
    /// burn's wgpu backend on the best adapter (Vulkan, Metal, DX12).
    Wgpu,
}

impl FromStr for DeviceChoice {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" | "flex" => Ok(Self::Cpu),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            other => Err(EngineError::InvalidSetting(format!(
                "unknown device `{other}` (use cpu or wgpu)"
            ))),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
        })
    }
}

/// Whether `device` computes on burn flex (directly or under autodiff).
pub fn on_flex(device: &Device) -> bool {
    match device.as_dispatch() {
        DispatchDevice::Flex(_) => true,
        DispatchDevice::Autodiff(inner) => matches!(&**inner, DispatchDevice::Flex(_)),
        _ => false,
    }
}

/// Whether `device` is one of burn's cubecl (wgpu) devices, outside autodiff.
pub fn on_wgpu(device: &Device) -> bool {
    matches!(device.as_dispatch(), DispatchDevice::Cube(_))
}

/// Name of the wgpu adapter burn would pick, or `None` when there is none.
pub fn wgpu_adapter_name() -> Option<String> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    }))
    .ok()?;
    let info = adapter.get_info();
    Some(format!(
        "{} ({:?}, {:?})",
        info.name, info.device_type, info.backend
    ))
}

impl DeviceChoice {
    /// wgpu when an adapter exists, else the CPU.
    pub fn auto() -> Self {
        if wgpu_adapter_name().is_some() {
            Self::Wgpu
        } else {
            Self::Cpu
        }
    }

    /// The burn device; fails with a clear message if wgpu has no adapter.
    pub fn device(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::flex()),
            Self::Wgpu => {
                if wgpu_adapter_name().is_none() {
                    return Err(EngineError::Device(
                        "no wgpu adapter found (no Vulkan, Metal or DX12 driver); use --device cpu"
                            .into(),
                    ));
                }
                Ok(Device::wgpu(DeviceKind::DefaultDevice))
            }
        }
    }

    /// Human-readable description of what this choice computes on.
    pub fn describe(self) -> String {
        match self {
            Self::Cpu => "cpu (burn flex)".into(),
            Self::Wgpu => match wgpu_adapter_name() {
                Some(name) => format!("wgpu: {name}"),
                None => "wgpu: no adapter".into(),
            },
        }
    }
}

/// Keeps the memory a training step frees for the next step. Every step allocates and frees
/// the same large activation buffers; glibc's default returns the top of the heap to the
/// kernel as soon as 128 KiB are free there and maps anything over its (adaptive) threshold
/// afresh, so each step paid for page faults and for zeroing pages (a fifth of a distillation
/// step's time under `perf`). Raises the trim threshold to 2 GiB and fixes the
/// mmap threshold at glibc's maximum (32 MiB). Process-wide, once; elsewhere than glibc a no-op.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            unsafe extern "C" {
                fn mallopt(param: i32, value: i32) -> i32;
            }
            const M_TRIM_THRESHOLD: i32 = -1;
            const M_MMAP_THRESHOLD: i32 = -3;
            // SAFETY: mallopt only adjusts glibc's allocator parameters; called once, early.
            unsafe {
                mallopt(M_TRIM_THRESHOLD, i32::MAX);
                mallopt(M_MMAP_THRESHOLD, 32 << 20);
            }
        });
    }
}
