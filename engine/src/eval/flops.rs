//! FLOPs per image counted from the architecture: the teacher's DDIM (with and without
//! guidance) and the ARD student's K autoregressive steps, whose lower N blocks attend to the
//! cached keys of the earlier steps (Kim et al., CVPR 2025, report about 1.1% over the
//! step-distillation baseline for DiT-XL/2 with N = 6).

use crate::model::config::{DitConfig, StudentConfig};

/// How many rows a pass runs the adaLN projections on: one per step (ours: the conditioning is
/// the same for every token of a step) or one per token (the authors' code repeats it).
#[derive(Clone, Copy)]
enum AdaRows {
    PerStep,
    PerToken,
}

impl AdaRows {
    fn of(self, t: usize) -> f64 {
        match self {
            Self::PerStep => 1.0,
            Self::PerToken => t as f64,
        }
    }
}

/// Multiply-adds × 2 of the transformer part of one DiT pass over `t` query tokens that attend to
/// `keys` tokens each (per image, one step).
fn blocks_flops(cfg: &DitConfig, t: usize, keys: usize, ada: AdaRows) -> f64 {
    let (h, m) = (cfg.hidden_size as f64, cfg.mlp_hidden as f64);
    let per_token = 2.0 * (3.0 * h * h + h * h + 2.0 * h * m) + 4.0 * keys as f64 * h;
    t as f64 * per_token + ada.of(t) * 2.0 * 6.0 * h * h
}

/// FLOPs of the embeddings and one head for one step of `t` tokens.
fn io_flops(cfg: &DitConfig, t: usize, ada: AdaRows) -> f64 {
    let (h, f) = (cfg.hidden_size as f64, cfg.frequency_embedding_size as f64);
    let p2 = (cfg.patch_size * cfg.patch_size) as f64;
    let embed = 2.0 * t as f64 * cfg.in_channels as f64 * p2 * h;
    let time = 2.0 * (f * h + h * h);
    let head = 2.0 * t as f64 * h * p2 * cfg.out_channels() as f64 + ada.of(t) * 2.0 * 2.0 * h * h;
    embed + time + head
}

/// FLOPs per image of one teacher forward.
pub fn teacher_forward_flops(cfg: &DitConfig) -> f64 {
    let t = cfg.num_patches();
    cfg.depth as f64 * blocks_flops(cfg, t, t, AdaRows::PerStep)
        + io_flops(cfg, t, AdaRows::PerStep)
}

/// FLOPs per image of DDIM with `steps` steps (two forwards per step with guidance).
pub fn ddim_flops(cfg: &DitConfig, steps: usize, guided: bool) -> f64 {
    steps as f64 * if guided { 2.0 } else { 1.0 } * teacher_forward_flops(cfg)
}

/// FLOPs per image of the student's K autoregressive steps (history attention in N blocks).
/// Its teacher-forced training pass computes the same: masked keys are never scored.
pub fn student_flops(cfg: &DitConfig, s: &StudentConfig) -> f64 {
    cached_steps_flops(cfg, s, AdaRows::PerStep)
}

/// FLOPs per image of the authors' `infer` (`models_ARD.DiT.infer`): the same K steps with the
/// key/value cache, but the conditioning repeated per token before the adaLN projections.
pub fn reference_student_flops(cfg: &DitConfig, s: &StudentConfig) -> f64 {
    cached_steps_flops(cfg, s, AdaRows::PerToken)
}

fn cached_steps_flops(cfg: &DitConfig, s: &StudentConfig, ada: AdaRows) -> f64 {
    let t = cfg.num_patches();
    let n = s.history_layers.min(cfg.depth);
    (0..s.steps)
        .map(|k| {
            n as f64 * blocks_flops(cfg, t, (k + 1) * t, ada)
                + (cfg.depth - n) as f64 * blocks_flops(cfg, t, t, ada)
                + io_flops(cfg, t, ada)
        })
        .sum()
}

/// FLOPs per image of the authors' teacher-forced forward (`models_ARD.DiT.forward`): all K·t
/// tokens in one pass whose every block scores all K·t keys (the block-causal and
/// block-diagonal masks are added to full score matrices), with the conditioning per token.
pub fn reference_teacher_forced_flops(cfg: &DitConfig, s: &StudentConfig) -> f64 {
    let t = cfg.num_patches();
    let all = s.steps * t;
    cfg.depth as f64 * blocks_flops(cfg, all, all, AdaRows::PerToken)
        + s.steps as f64 * io_flops(cfg, t, AdaRows::PerToken)
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

    /// The authors' code does more work for the same function: the adaLN projections per token
    /// (inference and training), and full masked score matrices (training).
    #[test]
    fn the_reference_code_counts_more_for_the_same_function() {
        let cfg = DitConfig::dit_s_2();
        let s = StudentConfig::new(4, 3);
        let (t, h) = (cfg.num_patches() as f64, cfg.hidden_size as f64);
        let extra = 4.0 * (t - 1.0) * (cfg.depth as f64 * 12.0 * h * h + 4.0 * h * h);
        let got = reference_student_flops(&cfg, &s) - student_flops(&cfg, &s);
        assert!((got - extra).abs() < 1e-6 * extra, "{got} vs {extra}");
        // Training: every block scores all 16 t² query-key pairs, where ours scores the visible
        // ones (1 + 2 + 3 + 4 = 10 t² in the N = 3 history blocks, 4 t² in the others).
        let (n, depth) = (3.0, cfg.depth as f64);
        let pairs_gap = (n * (16.0 - 10.0) + (depth - n) * (16.0 - 4.0)) * t * t;
        let want = 4.0 * h * pairs_gap + extra;
        let got = reference_teacher_forced_flops(&cfg, &s) - student_flops(&cfg, &s);
        assert!((got - want).abs() < 1e-6 * want, "{got} vs {want}");
    }
}
