//! `ard-studio`: the desktop app. Starts on the default models in `assets/`.
//!
//! ```text
//! ard-studio [--device auto|cpu|wgpu] [--attention burn|wgsl|wgsl-f16] [WEIGHTS...]
//! ```

use std::sync::Arc;

use ard_app::cli::AttentionChoice;
use ard_app::gui::{AppOptions, StudioApp, default_models};
use ard_engine::Device;
use clap::Parser;
use eframe::{egui, egui_wgpu, wgpu};

#[derive(Parser)]
#[command(
    name = "ard-studio",
    version,
    about = "ARD Studio: 4-step image generation, step by step"
)]
struct Args {
    /// Where the models compute: `auto` shares the window's GPU when it is a real one and
    /// falls back to the CPU otherwise.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Attention on a wgpu device: burn's kernels, ours (`shaders/attention.wgsl`), or ours on
    /// f16 buffers. Default: burn, or what ARD_WGSL says (1 / f16).
    #[arg(long, value_enum, ignore_case = true)]
    attention: Option<AttentionChoice>,
    /// Weight files to load instead of the defaults (a teacher, then a student).
    weights: Vec<std::path::PathBuf>,
    /// Folder for training runs.
    #[arg(long, default_value = "runs")]
    runs: std::path::PathBuf,
}

/// The engine's device: the window's own wgpu device when asked (or when `auto` finds a real
/// GPU), else burn's CPU backend.
fn engine_device(choice: &str, cc: &eframe::CreationContext) -> (Device, String) {
    let cpu = |why: &str| (Device::flex(), format!("CPU (burn flex) — {why}"));
    let Some(rs) = cc.wgpu_render_state.as_ref() else {
        return cpu("no GPU renderer");
    };
    let info = rs.adapter.get_info();
    let software = info.device_type == wgpu::DeviceType::Cpu;
    match choice {
        "cpu" => return cpu("as asked"),
        "auto" if software => {
            return cpu(&format!("{} is a software renderer", info.name));
        }
        "auto" | "wgpu" | "gpu" => {}
        other => return cpu(&format!("unknown device `{other}`")),
    }
    let setup = ard_engine::burn::tensor::wgpu::WgpuSetup {
        instance: rs.instance.clone(),
        adapter: rs.adapter.clone(),
        device: rs.device.clone(),
        queue: rs.queue.clone(),
        backend: info.backend,
    };
    match Device::wgpu_options().setup(setup).init() {
        Ok(device) => (
            device,
            format!(
                "GPU: {} ({:?}), shared with the window",
                info.name, info.backend
            ),
        ),
        Err(e) => cpu(&format!("wgpu setup failed: {e}")),
    }
}

fn main() -> eframe::Result {
    let args = Args::parse();
    if let Some(attention) = args.attention {
        // Takes effect where the engine runs on wgpu; the CPU always uses burn's attention.
        ard_engine::dispatch::set_fused_attention(attention.mode());
    }
    let mut wgpu_options = egui_wgpu::WgpuConfiguration::default();
    if let egui_wgpu::WgpuSetup::CreateNew(create) = &mut wgpu_options.wgpu_setup {
        // burn's kernels want the adapter's full limits, not egui's conservative defaults.
        create.device_descriptor = Arc::new(|adapter| wgpu::DeviceDescriptor {
            label: Some("ARD Studio device"),
            required_features: adapter.features(),
            required_limits: adapter.limits(),
            ..Default::default()
        });
    }
    let options = eframe::NativeOptions {
        renderer: eframe::Renderer::Wgpu,
        wgpu_options,
        viewport: egui::ViewportBuilder::default()
            .with_title("ARD Studio")
            .with_inner_size([1280.0, 800.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    let models = if args.weights.is_empty() {
        default_models()
    } else {
        args.weights.clone()
    };
    eframe::run_native(
        "ARD Studio",
        options,
        Box::new(move |cc| {
            let (device, mut device_label) = engine_device(&args.device, cc);
            if let Some(attention) = args.attention {
                let on_cpu = !ard_engine::device::on_wgpu(&device);
                device_label += &match attention {
                    AttentionChoice::Burn => String::new(),
                    _ if on_cpu => format!(
                        " · --attention {} ignored: our WGSL kernel needs a wgpu device",
                        attention.name()
                    ),
                    _ => format!(" · attention: ours ({})", attention.name()),
                };
            }
            Ok(Box::new(StudioApp::with_context(
                AppOptions {
                    device,
                    device_label,
                    models,
                    runs_dir: args.runs.clone(),
                },
                &cc.egui_ctx,
            )))
        }),
    )
}
