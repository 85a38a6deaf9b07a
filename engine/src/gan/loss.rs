//! The adversarial stage's objectives: hinge losses (Lim & Ye 2017, as in SAGAN and LADD) over
//! the per-token logits of every head, and the adaptive weight of the generator's adversarial
//! term (Esser et al., "Taming Transformers", CVPR 2021: the ratio of the two losses' gradient
//! norms at the last layer).

use burn::tensor::Tensor;
use burn::tensor::activation::relu;

/// Keeps the adaptive weight finite when the adversarial gradient vanishes (VQGAN's 1e-4).
pub const ADAPTIVE_EPS: f64 = 1e-4;

/// The mean over heads of per-head losses.
fn mean_over_heads(parts: Vec<Tensor<1>>) -> Tensor<1> {
    let n = parts.len().max(1) as f64;
    Tensor::cat(parts, 0).sum() / n
}

/// The discriminator's hinge loss: `mean(relu(1 − D(real))) + mean(relu(1 + D(fake)))`,
/// averaged over the heads. Logits `[B, T]` per head; zero once every real logit is ≥ 1 and
/// every fake one ≤ −1.
pub fn hinge_discriminator(real: &[Tensor<2>], fake: &[Tensor<2>]) -> Tensor<1> {
    let parts = real
        .iter()
        .zip(fake)
        .map(|(r, f)| relu(r.clone().neg() + 1.0).mean() + relu(f.clone() + 1.0).mean())
        .collect();
    mean_over_heads(parts)
}

/// The generator's hinge loss: `−mean(D(fake))`, averaged over the heads.
pub fn hinge_generator(fake: &[Tensor<2>]) -> Tensor<1> {
    mean_over_heads(fake.iter().map(|f| f.clone().mean().neg()).collect())
}

/// The weight of the adversarial term: `clamp(‖∇L_reg‖ / (‖∇L_adv‖ + ε), 0, max) × factor`,
/// both gradients taken at the last layer's weight; 0 while `active` is false (the warm-up).
pub fn adaptive_weight(reg_norm: f64, adv_norm: f64, factor: f64, max: f64, active: bool) -> f64 {
    if !active || !reg_norm.is_finite() || !adv_norm.is_finite() {
        return 0.0;
    }
    (reg_norm / (adv_norm + ADAPTIVE_EPS)).clamp(0.0, max) * factor
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn logits(v: &[f32], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v.to_vec(), [2, v.len() / 2]), device)
    }

    #[test]
    fn the_hinge_losses_have_the_right_signs_and_margins() {
        let d = Device::flex();
        let scalar = |t: Tensor<1>| t.into_scalar::<f32>();
        // A discriminator that is right with margin: no loss.
        let real = [logits(&[1.5, 2.0, 1.0, 3.0], &d)];
        let fake = [logits(&[-1.0, -2.0, -1.5, -4.0], &d)];
        assert_eq!(scalar(hinge_discriminator(&real, &fake)), 0.0);
        // One that is wrong pays for it, real and fake alike: (1+1)/… per logit.
        let wrong_real = [logits(&[-1.0, -1.0, -1.0, -1.0], &d)];
        let wrong_fake = [logits(&[1.0, 1.0, 1.0, 1.0], &d)];
        assert_eq!(scalar(hinge_discriminator(&wrong_real, &fake)), 2.0);
        assert_eq!(scalar(hinge_discriminator(&real, &wrong_fake)), 2.0);
        // At zero logits each side costs 1.
        let zero = [logits(&[0.0; 4], &d)];
        assert_eq!(scalar(hinge_discriminator(&zero, &zero)), 2.0);
        // The generator gains as the discriminator scores its samples as real.
        assert!(scalar(hinge_generator(&real)) < 0.0);
        assert!(scalar(hinge_generator(&fake)) > 0.0);
        assert_eq!(scalar(hinge_generator(&fake)), 2.125);
        // Heads are averaged, not summed.
        let two = [fake[0].clone(), fake[0].clone()];
        assert_eq!(scalar(hinge_generator(&two)), 2.125);
    }

    #[test]
    fn the_discriminator_gradient_pushes_reals_up_and_fakes_down() {
        let d = Device::flex().autodiff();
        let real = logits(&[0.5, -0.5, 0.2, 3.0], &d).require_grad();
        let fake = logits(&[-0.5, 0.5, -2.0, 0.0], &d).require_grad();
        let grads = hinge_discriminator(std::slice::from_ref(&real), std::slice::from_ref(&fake))
            .backward();
        let gr = real
            .grad(&grads)
            .unwrap()
            .to_data()
            .try_to_vec::<f32>()
            .unwrap();
        let gf = fake
            .grad(&grads)
            .unwrap()
            .to_data()
            .try_to_vec::<f32>()
            .unwrap();
        // Descent raises real logits under the margin, leaves those past it.
        assert_eq!(gr, vec![-0.25, -0.25, -0.25, 0.0]);
        // And lowers fake logits above −1.
        assert_eq!(gf, vec![0.25, 0.25, 0.0, 0.25]);
    }

    #[test]
    fn the_adaptive_weight_is_the_clamped_norm_ratio_and_off_in_warm_up() {
        assert!((adaptive_weight(2.0, 1.0, 10.0, 1e4, true) - 10.0 * 2.0 / 1.0001).abs() < 1e-9);
        assert_eq!(adaptive_weight(2.0, 1.0, 10.0, 1e4, false), 0.0);
        assert_eq!(adaptive_weight(1.0, 0.0, 1.0, 1e4, true), 1e4);
        assert_eq!(adaptive_weight(f64::NAN, 1.0, 1.0, 1e4, true), 0.0);
    }
}
