//! `ARD_CPU_KERNELS=burn` runs the model on burn's own CPU ops instead of ours, with the same
//! results: the reference student through both, against the reference vectors. One test in its
//! own process, because the choice is the process's.

use ard_engine::Device;
use ard_engine::diffusion::sample;
use ard_engine::dispatch::{KernelSet, attention_calls, set_cpu_kernels};
use ard_studio::{PARITY, assert_close, load_reference, reference_file, reference_student_request};

#[test]
fn burns_cpu_ops_and_ours_both_match_the_reference() {
    // Read on first use, so set before anything computes.
    unsafe { std::env::set_var("ARD_CPU_KERNELS", "burn") };
    let device = Device::flex();
    let student = load_reference("ard_student.safetensors", &device);
    let io = reference_file("ard_io.safetensors");
    let run = |label: &str| {
        let before = attention_calls();
        let out = sample(&student, &reference_student_request(), &device, |_| {}).unwrap();
        for (name, t) in &out.tensors {
            let err = assert_close(name, t, &io.f32(name).unwrap(), PARITY);
            eprintln!("{label}, {name}: {err:.2e}");
        }
        let after = attention_calls();
        [0, 1, 2].map(|i| after[i] - before[i])
    };
    let burn = run("ARD_CPU_KERNELS=burn");
    assert!(burn[KernelSet::Burn as usize] > 0, "{burn:?}");
    assert_eq!(
        burn[KernelSet::Cpu as usize],
        0,
        "our CPU kernel ran: {burn:?}"
    );
    set_cpu_kernels(true);
    let ours = run("our CPU kernels");
    assert!(ours[KernelSet::Cpu as usize] > 0, "{ours:?}");
    assert_eq!(
        ours[KernelSet::Burn as usize],
        0,
        "burn's attention ran: {ours:?}"
    );
}
