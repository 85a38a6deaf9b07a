//! `shaders/attention.wgsl` on wgpu (lavapipe in CI) against the float64 definition and burn's
//! own attention: random shapes, head dimensions that are not powers of two, token counts that
//! are not multiples of the tiles, every mask, 1..K cached steps. ARD_SKIP_WGPU=1 skips.

use ard_engine::HostTensor;
use ard_engine::burn::tensor::module::attention;
use ard_engine::burn::tensor::{Bool, Device, Tensor, TensorData};
use ard_engine::ops::{AttentionMask, AttentionShape, attention_reference};
use ard_engine::wgsl::AttentionKernel;
use ard_studio::PARITY;

fn kernel() -> Option<AttentionKernel> {
    if !ard_studio::wgpu_runs("our WGSL kernel") {
        return None;
    }
    Some(AttentionKernel::on_default_adapter().unwrap_or_else(|e| {
        panic!("{e} (install mesa-vulkan-drivers for lavapipe, or set ARD_SKIP_WGPU=1)")
    }))
}

/// Deterministic values in [-2, 2) from a seed (xorshift), different for every call.
fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        })
        .collect()
}

fn rel_error(got: &[f32], want: &[f32]) -> f64 {
    assert!(got.iter().all(|x| x.is_finite()), "non-finite output");
    HostTensor::new(vec![got.len()], got.to_vec())
        .relative_error(&HostTensor::new(vec![want.len()], want.to_vec()))
}

/// The three masks over all steps' queries at once (teacher forcing), steps of `t` tokens.
fn teacher_forced_masks(t: usize) -> [AttentionMask; 3] {
    [
        AttentionMask::None,
        AttentionMask::BlockCausal {
            tokens_per_step: t,
            q_step_offset: 0,
        },
        AttentionMask::BlockDiagonal {
            tokens_per_step: t,
            q_step_offset: 0,
        },
    ]
}

fn check(kernel: &AttentionKernel, shape: AttentionShape, mask: AttentionMask, seed: u64) -> f64 {
    let nq = shape.bh * shape.tq * shape.head_dim;
    let nk = shape.bh * shape.tk * shape.head_dim;
    let (q, k, v) = (random(nq, seed), random(nk, seed + 1), random(nk, seed + 2));
    let got = kernel.run(&q, &k, &v, shape, mask).unwrap();
    let want = attention_reference(&q, &k, &v, shape, mask);
    let err = rel_error(&got, &want);
    assert!(err < PARITY, "{shape:?} {mask:?}: relative error {err:.2e}");
    err
}

#[test]
fn every_mask_matches_the_float64_definition() {
    let Some(kernel) = kernel() else { return };
    let mut worst: f64 = 0.0;
    let mut seed = ard_studio::test_seed("every mask");
    // (head_dim, tokens per step, K): DiT-XL/2's 72, the default model's 16, odd sizes.
    for (head_dim, t, steps) in [(16, 49, 4), (72, 20, 3), (8, 7, 4), (33, 50, 2), (64, 1, 5)] {
        let bh = 3;
        let all = t * steps;
        // Teacher-forced: every step's queries at once.
        for mask in teacher_forced_masks(t) {
            let shape = AttentionShape {
                bh,
                tq: all,
                tk: all,
                head_dim,
            };
            worst = worst.max(check(&kernel, shape, mask, seed));
            seed += 3;
        }
        // Cached inference: step s's queries against the keys of steps 0..=s.
        for s in 0..steps {
            let shape = AttentionShape {
                bh,
                tq: t,
                tk: (s + 1) * t,
                head_dim,
            };
            let mask = AttentionMask::BlockCausal {
                tokens_per_step: t,
                q_step_offset: s,
            };
            worst = worst.max(check(&kernel, shape, mask, seed));
            seed += 3;
        }
    }
    eprintln!("worst relative error vs float64: {worst:.2e}");
}

#[test]
fn matches_burns_attention_on_the_cpu() {
    let Some(kernel) = kernel() else { return };
    let device = Device::flex();
    let (b, h, t, steps, d) = (2, 4, 49, 4, 16);
    let n = t * steps;
    let shape = AttentionShape {
        bh: b * h,
        tq: n,
        tk: n,
        head_dim: d,
    };
    let (q, k, v) = (
        random(b * h * n * d, 77),
        random(b * h * n * d, 78),
        random(b * h * n * d, 79),
    );
    let tensor =
        |x: &Vec<f32>| Tensor::<4>::from_data(TensorData::new(x.clone(), [b, h, n, d]), &device);
    // burn's mask: true = masked out; block-causal over steps of t tokens.
    let blocked: Vec<bool> = (0..n * n).map(|e| (e % n) / t > (e / n) / t).collect();
    let mask = Tensor::<4, Bool>::from_data(TensorData::new(blocked, [1, 1, n, n]), &device);
    let burn_out = attention(
        tensor(&q),
        tensor(&k),
        tensor(&v),
        Some(mask),
        None,
        Default::default(),
    );
    let burn_out: Vec<f32> = burn_out.into_data().try_to_vec::<f32>().unwrap();
    let got = kernel
        .run(
            &q,
            &k,
            &v,
            shape,
            AttentionMask::BlockCausal {
                tokens_per_step: t,
                q_step_offset: 0,
            },
        )
        .unwrap();
    let err = rel_error(&got, &burn_out);
    eprintln!("relative error vs burn's attention: {err:.2e}");
    assert!(err < PARITY, "relative error {err:.2e}");
}

#[test]
fn bad_shapes_are_reported() {
    let Some(kernel) = kernel() else { return };
    let shape = AttentionShape {
        bh: 1,
        tq: 4,
        tk: 4,
        head_dim: 8,
    };
    assert!(
        kernel
            .run(
                &[0.0; 31],
                &[0.0; 32],
                &[0.0; 32],
                shape,
                AttentionMask::None
            )
            .is_err()
    );
    let huge = AttentionShape {
        head_dim: 100_000,
        ..shape
    };
    let n = 4 * 100_000;
    let err = kernel
        .run(
            &vec![0.0; n],
            &vec![0.0; n],
            &vec![0.0; n],
            huge,
            AttentionMask::None,
        )
        .unwrap_err();
    assert!(err.to_string().contains("workgroup memory"), "{err}");
}

#[test]
fn runs_on_burns_own_wgpu_device() {
    use ard_engine::device::DeviceChoice;
    use ard_engine::wgsl::{fused_attention, fused_attention_supported};
    if kernel().is_none() {
        return;
    }
    let device = DeviceChoice::Wgpu.device().unwrap();
    assert!(fused_attention_supported(&device, 72));
    assert!(!fused_attention_supported(&device.clone().autodiff(), 72));
    assert!(!fused_attention_supported(&Device::flex(), 72));
    let (b, h, t, steps, d) = (2, 3, 20, 3, 72);
    let n = t * steps;
    let (q, k, v) = (
        random(b * h * n * d, 5),
        random(b * h * n * d, 6),
        random(b * h * n * d, 7),
    );
    let tensor =
        |x: &Vec<f32>| Tensor::<4>::from_data(TensorData::new(x.clone(), [b, h, n, d]), &device);
    let mask = AttentionMask::BlockCausal {
        tokens_per_step: t,
        q_step_offset: 0,
    };
    // Slices of burn tensors (the cached step's queries) are not contiguous views: also covered.
    let got = fused_attention(tensor(&q), tensor(&k), tensor(&v), mask, false);
    let got: Vec<f32> = got.into_data().try_to_vec::<f32>().unwrap();
    let shape = AttentionShape {
        bh: b * h,
        tq: n,
        tk: n,
        head_dim: d,
    };
    let err = rel_error(&got, &attention_reference(&q, &k, &v, shape, mask));
    eprintln!("on burn's wgpu device: {err:.2e}");
    assert!(err < PARITY, "{err:.2e}");
    let last = tensor(&q).narrow(2, (steps - 1) * t, t);
    let cached = fused_attention(last, tensor(&k), tensor(&v), AttentionMask::None, false);
    let cached: Vec<f32> = cached.into_data().try_to_vec::<f32>().unwrap();
    let want: Vec<f32> = (0..b * h)
        .flat_map(|i| {
            let all = attention_reference(&q, &k, &v, shape, mask);
            all[(i * n + (steps - 1) * t) * d..(i * n + n) * d].to_vec()
        })
        .collect();
    let err = rel_error(&cached, &want);
    eprintln!("cached step on burn's wgpu device: {err:.2e}");
    assert!(err < PARITY, "{err:.2e}");
}

#[test]
fn the_reference_student_through_our_kernel_matches_the_reference_vectors() {
    use ard_engine::burn::tensor::DType;
    use ard_engine::device::DeviceChoice;
    use ard_engine::diffusion::sample;
    use ard_engine::dispatch::{
        FusedAttention, KernelSet, attention_calls, attention_kernels_for, set_fused_attention,
    };
    use ard_studio::{assert_close, load_reference, reference_file, reference_student_request};
    if kernel().is_none() {
        return;
    }
    set_fused_attention(FusedAttention::F32);
    let device = DeviceChoice::Wgpu.device().unwrap();
    assert_eq!(
        attention_kernels_for(&device, DType::F32, 16),
        KernelSet::Wgsl
    );
    let student = load_reference("ard_student.safetensors", &device);
    let io = reference_file("ard_io.safetensors");
    let before = attention_calls()[KernelSet::Wgsl as usize];
    let out = sample(&student, &reference_student_request(), &device, |_| {}).unwrap();
    assert!(
        attention_calls()[KernelSet::Wgsl as usize] > before,
        "the student's attention did not run on our kernel"
    );
    for (name, t) in &out.tensors {
        let err = assert_close(name, t, &io.f32(name).unwrap(), PARITY);
        eprintln!("through the WGSL kernel, {name}: {err:.2e}");
    }
}

/// f16 storage rounds the inputs and the output; the arithmetic stays f32. So: the float64
/// definition on the rounded inputs, within the output's rounding (2^-11 relative at most).
const F16_PARITY: f64 = 1e-3;

fn round_f16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
}

#[test]
fn f16_buffers_match_the_float64_definition_on_rounded_inputs() {
    use ard_engine::wgsl::Precision;
    let Some(kernel) = kernel() else { return };
    if !kernel.supports_f16() {
        eprintln!("adapter without SHADER_F16: the f16 option is refused");
        let shape = AttentionShape {
            bh: 1,
            tq: 1,
            tk: 1,
            head_dim: 8,
        };
        let x = [0.0; 8];
        let err = kernel.run_with(&x, &x, &x, shape, AttentionMask::None, Precision::F16);
        assert!(err.unwrap_err().to_string().contains("f16"));
        return;
    }
    let mut seed = ard_studio::test_seed("f16 buffers");
    // (bh, head_dim, tokens per step, K); 1 × 7·1 × 33 is an odd count of f16 (padded buffers).
    for (bh, head_dim, t, steps) in [
        (2, 16, 49, 4),
        (2, 72, 20, 3),
        (2, 33, 50, 2),
        (1, 33, 7, 1),
    ] {
        let shape = AttentionShape {
            bh,
            tq: t * steps,
            tk: t * steps,
            head_dim,
        };
        for mask in teacher_forced_masks(t) {
            let nq = shape.bh * shape.tq * head_dim;
            let (q, k, v) = (random(nq, seed), random(nq, seed + 1), random(nq, seed + 2));
            seed += 3;
            let got = kernel
                .run_with(&q, &k, &v, shape, mask, Precision::F16)
                .unwrap();
            let want =
                attention_reference(&round_f16(&q), &round_f16(&k), &round_f16(&v), shape, mask);
            let err = rel_error(&got, &want);
            eprintln!("f16 buffers {shape:?} {mask:?}: {err:.2e}");
            assert!(
                err < F16_PARITY,
                "{shape:?} {mask:?}: relative error {err:.2e}"
            );
            // Not an f32 run by mistake: the output itself is f16-rounded.
            assert_eq!(got, round_f16(&got));
        }
    }
}

#[test]
fn f16_tensors_on_burns_own_wgpu_device() {
    use ard_engine::burn::tensor::DType;
    use ard_engine::device::DeviceChoice;
    if kernel().is_none() {
        return;
    }
    let device = DeviceChoice::Wgpu.device().unwrap();
    if !device.supports_dtype(DType::F16) {
        ard_studio::skip("f16 tensors through our kernel", "no f16 on this device");
        return;
    }
    // An odd count of f16 elements too (1 × 1 × 3·5 × 33).
    for (b, h, t, steps, d) in [(2, 2, 16, 3, 16), (1, 1, 5, 3, 33)] {
        f16_tensors_case(&device, b, h, t, steps, d);
    }
}

fn f16_tensors_case(device: &Device, b: usize, h: usize, t: usize, steps: usize, d: usize) {
    use ard_engine::burn::tensor::DType;
    use ard_engine::wgsl::fused_attention;
    let n = t * steps;
    let data: Vec<Vec<f32>> = (0..3)
        .map(|i| round_f16(&random(b * h * n * d, 40 + i)))
        .collect();
    let tensor = |x: &Vec<f32>| {
        Tensor::<4>::from_data(TensorData::new(x.clone(), [b, h, n, d]), device).cast(DType::F16)
    };
    let mask = AttentionMask::BlockCausal {
        tokens_per_step: t,
        q_step_offset: 0,
    };
    let got = fused_attention(
        tensor(&data[0]),
        tensor(&data[1]),
        tensor(&data[2]),
        mask,
        false,
    );
    assert_eq!(got.dtype(), DType::F16);
    let got: Vec<f32> = got
        .cast(DType::F32)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let shape = AttentionShape {
        bh: b * h,
        tq: n,
        tk: n,
        head_dim: d,
    };
    let want = attention_reference(&data[0], &data[1], &data[2], shape, mask);
    let err = rel_error(&got, &want);
    eprintln!("f16 tensors on burn's wgpu device: {err:.2e}");
    assert!(err < F16_PARITY, "{err:.2e}");
}

#[test]
fn tilings_fit_webgpus_default_workgroup_memory() {
    use ard_engine::wgsl::{TileConfig, WORKGROUP_BYTES};
    for d in 1..=300 {
        if let Some(c) = TileConfig::for_head_dim(d) {
            assert!(c.workgroup_bytes() <= WORKGROUP_BYTES, "{c:?}");
            // Every invocation has a whole score block, softmax share and output rows.
            assert_eq!(c.block_rows % c.score_rows, 0, "{c:?}");
            assert_eq!(c.block_keys % c.score_keys, 0, "{c:?}");
            assert!(c.workgroup_size() >= c.block_rows, "{c:?}");
            assert_eq!(c.block_rows % c.out_rows, 0, "{c:?}");
            assert_eq!(
                c.out_per_rows() * c.block_rows,
                c.workgroup_size() * c.out_rows,
                "{c:?}"
            );
            assert!(c.shader_source().contains(&format!("const D: u32 = {d}u;")));
            assert!(
                !c.shader_source().contains("{{"),
                "unsubstituted size for {c:?}"
            );
        } else {
            assert!(d > 128, "head dim {d} must be supported");
        }
    }
    // The largest tiles that fit: the default model's 16, DiT-S/2's 64 and DiT-XL/2's 72.
    for (d, tiles) in [
        (16, (32, 32)),
        (32, (32, 16)),
        (64, (16, 16)),
        (72, (16, 16)),
    ] {
        let c = TileConfig::for_head_dim(d).unwrap();
        assert_eq!((c.block_rows, c.block_keys), tiles, "{c:?}");
    }
    assert!(TileConfig::for_head_dim(0).is_none());
    assert!(TileConfig::for_head_dim(100_000).is_none());
}
