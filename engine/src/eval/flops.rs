//! FLOPs per image counted from the architecture: the teacher's DDIM (with and without
//! guidance) and the ARD student's K autoregressive steps, whose lower N blocks attend to the
//! cached keys of the earlier steps (Kim et al., CVPR 2025, report about 1.1% over the
//! step-distillation baseline for DiT-XL/2 with N = 6).

use crate::model::config::{DitConfig, StudentConfig};

/// Multiply-adds × 2 of the transformer part of one DiT pass over `t` query tokens that attend to
/// `keys` tokens each (per image, one step).
fn blocks_flops(cfg: &DitConfig, t: usize, keys: usize) -> f64 {
    let (h, m) = (cfg.hidden_size as f64, cfg.mlp_hidden as f64);
    let per_token = 2.0 * (3.0 * h * h + h * h + 2.0 * h * m) + 4.0 * keys as f64 * h;
    let ada = 2.0 * 6.0 * h * h; // once per step: the conditioning is per step
    t as f64 * per_token + ada
}

/// FLOPs of the embeddings and one head for one step of `t` tokens.
fn io_flops(cfg: &DitConfig, t: usize) -> f64 {
    let (h, f) = (cfg.hidden_size as f64, cfg.frequency_embedding_size as f64);
    let p2 = (cfg.patch_size * cfg.patch_size) as f64;
    let embed = 2.0 * t as f64 * cfg.in_channels as f64 * p2 * h;
    let time = 2.0 * (f * h + h * h);
    let head = 2.0 * t as f64 * h * p2 * cfg.out_channels() as f64 + 2.0 * 2.0 * h * h;
    embed + time + head
}

/// FLOPs per image of one teacher forward.
pub fn teacher_forward_flops(cfg: &DitConfig) -> f64 {
    let t = cfg.num_patches();
    cfg.depth as f64 * blocks_flops(cfg, t, t) + io_flops(cfg, t)
}

/// FLOPs per image of DDIM with `steps` steps (two forwards per step with guidance).
pub fn ddim_flops(cfg: &DitConfig, steps: usize, guided: bool) -> f64 {
    steps as f64 * if guided { 2.0 } else { 1.0 } * teacher_forward_flops(cfg)
}

/// FLOPs per image of the student's K autoregressive steps (history attention in N blocks).
pub fn student_flops(cfg: &DitConfig, s: &StudentConfig) -> f64 {
    let t = cfg.num_patches();
    (0..s.steps)
        .map(|k| {
            let n = s.history_layers.min(cfg.depth);
            n as f64 * blocks_flops(cfg, t, (k + 1) * t)
                + (cfg.depth - n) as f64 * blocks_flops(cfg, t, t)
                + io_flops(cfg, t)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ard_history_costs_little() {
        let cfg = DitConfig::dit_xl_2();
        let ard = student_flops(&cfg, &StudentConfig::new(4, 6));
        let base = student_flops(&cfg, &StudentConfig::new(4, 0));
        let overhead = ard / base - 1.0;
        // The paper: about 1.1% more FLOPs for XL/2 with N = 6.
        assert!((0.005..0.02).contains(&overhead), "{overhead}");
        assert!(ddim_flops(&cfg, 25, true) / base > 10.0);
    }
}
