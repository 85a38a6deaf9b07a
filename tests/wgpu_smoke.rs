//! The engine on wgpu (lavapipe in CI): `ard sample --device wgpu` on the reference student and
//! a teacher DDIM run reproduce the reference vectors. Set ARD_SKIP_WGPU=1 to skip on a machine
//! without any Vulkan/Metal/DX12 driver.

use ard_engine::HostTensor;
use ard_engine::device::{DeviceChoice, wgpu_adapter_name};
use ard_engine::diffusion::DdimOptions;
use ard_engine::diffusion::{SampleRequest, sample};
use ard_studio::{PARITY, assert_close, load_reference, reference_file, reference_student_request};

#[test]
fn reference_vectors_on_wgpu() {
    if !ard_studio::wgpu_runs("reference vectors on wgpu") {
        return;
    }
    let adapter = wgpu_adapter_name().expect("checked by wgpu_runs");
    eprintln!("adapter: {adapter}");
    let device = DeviceChoice::Wgpu.device().unwrap();
    let student = load_reference("ard_student.safetensors", &device);
    let io = reference_file("ard_io.safetensors");
    let req = reference_student_request();
    let mut streamed = Vec::new();
    let out = sample(&student, &req, &device, |s| streamed.push(s.name.clone())).unwrap();
    assert_eq!(streamed, ["infer_z15", "infer_z10", "infer_z5", "infer_z0"]);
    for (name, t) in &out.tensors {
        let err = assert_close(name, t, &io.f32(name).unwrap(), PARITY);
        eprintln!("wgpu {name}: {err:.2e}");
    }

    let teacher = load_reference("dit_teacher.safetensors", &device);
    let io = reference_file("ddim_io.safetensors");
    let req = SampleRequest {
        prompts: None,
        noise: io.f32("noise").unwrap(),
        labels: io.labels("y").unwrap(),
        ddim: DdimOptions::default(),
    };
    let mut streamed = 0;
    let out = sample(&teacher, &req, &device, |_| streamed += 1).unwrap();
    assert_eq!((out.tensors.len(), streamed), (50, 25));
    for (name, t) in &out.tensors {
        assert_close(name, t, &io.f32(name).unwrap(), PARITY);
    }
    let final_ref: HostTensor = io.f32("zt_0").unwrap();
    assert_close("final", &out.images, &final_ref, PARITY);
}
