//! Half precision at inference: the reference teacher's guided DDIM and the reference student's
//! four steps, loaded in f16 and in bf16, against the reference vectors (made in f32). The
//! weights are stored in the half type (measured errors: f16 3e-4 for the teacher's 25 steps,
//! 1.3e-3 for the student's; bf16 4e-3 for the teacher's first step, 9.5e-3 for the
//! student's); LayerNorm statistics, the sampler and the outputs stay
//! f32. On the CPU (flex) and, when its adapter computes in the type, on wgpu.

use ard_engine::burn::tensor::DType;
use ard_engine::device::DeviceChoice;
use std::ops::ControlFlow;

use ard_engine::diffusion::{DdimOptions, SampleRequest, sample, sample_until};
use ard_engine::model::{Model, Precision};
use ard_engine::{Device, HostTensor};
use ard_studio::{
    assert_close, reference, reference_file, reference_options, reference_student_request,
};

/// Relative error allowed against the f32 reference (half-precision rounding through the model; the errors are printed).
fn tolerance(p: Precision) -> f64 {
    match p {
        Precision::F16 => 5e-3,
        Precision::BF16 => 3e-2,
        Precision::F32 => 1e-4,
    }
}

fn check(device: &Device, label: &str) {
    for precision in [Precision::F16, Precision::BF16] {
        if precision.check(device).is_err() {
            // CI's CPU computes in both; its lavapipe in f16 but not bf16.
            let ci_has = !(label == "wgpu" && precision == Precision::BF16);
            if ci_has {
                ard_studio::skip(&format!("{precision} on {label}"), "the device lacks it");
            } else {
                eprintln!("SKIPPED {precision} on {label}: the device lacks it (as CI's does)");
            }
            continue;
        }
        let load = |name: &str| {
            ard_engine::model::LoadedModel::load_in(
                reference(name),
                &reference_options(),
                precision,
                device,
            )
            .unwrap()
        };
        let student = load("ard_student.safetensors");
        let Model::Student(s) = &student.model else {
            panic!("a student")
        };
        assert_eq!(s.dit.pos_embed.val().dtype(), precision.dtype());
        let io = reference_file("ard_io.safetensors");
        let out = sample(&student, &reference_student_request(), device, |_| {}).unwrap();
        for (name, t) in &out.tensors {
            let err = assert_close(name, t, &io.f32(name).unwrap(), tolerance(precision));
            eprintln!("{label} {precision} student {name}: {err:.2e}");
        }
        let teacher = load("dit_teacher.safetensors");
        let io = reference_file("ddim_io.safetensors");
        let req = SampleRequest {
            prompts: None,
            noise: io.f32("noise").unwrap(),
            labels: io.labels("y").unwrap(),
            ddim: DdimOptions::default(),
        };
        // The whole 25-step run in f16; bf16 (slow in a debug build's CPU kernels) stops after
        // its first step.
        let whole = precision == Precision::F16;
        let mut first = None;
        let out = sample_until(&teacher, &req, device, |s| {
            first.get_or_insert_with(|| s.image.clone());
            if whole {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        })
        .unwrap();
        let err = assert_close(
            "teacher first x0",
            first.as_ref().unwrap(),
            &io.f32("pred_z0_24").unwrap(),
            tolerance(precision),
        );
        eprintln!("{label} {precision} teacher first step: {err:.2e}");
        if let Some(out) = out {
            let want: HostTensor = io.f32("pred_z0_0").unwrap();
            let err = assert_close("teacher x0", &out.images, &want, tolerance(precision));
            eprintln!("{label} {precision} teacher 25-step DDIM final: {err:.2e}");
        }
    }
}

#[test]
fn half_precision_matches_the_reference_on_cpu() {
    check(&Device::flex(), "cpu");
}

#[test]
fn half_precision_matches_the_reference_on_wgpu() {
    if !ard_studio::wgpu_runs("half precision on wgpu") {
        return;
    }
    check(&DeviceChoice::Wgpu.device().unwrap(), "wgpu");
}

#[test]
fn f32_weights_stay_f32() {
    let m = ard_studio::load_reference("dit_teacher.safetensors", &Device::flex());
    let Model::Teacher(d) = &m.model else {
        panic!()
    };
    assert_eq!(d.pos_embed.val().dtype(), DType::F32);
    assert!("f8".parse::<Precision>().is_err());
    assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::BF16);
}
