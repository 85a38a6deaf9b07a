//! Which keys each query of an attention sees: ARD's block-causal mask over trajectory steps
//! (Kim et al., CVPR 2025, §3.2) and the block-diagonal mask of its upper blocks. A concept of
//! the model; every attention kernel (burn's, `cpu/`, `wgsl/`) reads it.

/// Which keys a query sees. Tokens come in steps of `tokens_per_step`; query i is in step
/// `q_step_offset + i / tokens_per_step` (with a KV cache: the current step's index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionMask {
    None,
    BlockCausal {
        tokens_per_step: usize,
        q_step_offset: usize,
    },
    BlockDiagonal {
        tokens_per_step: usize,
        q_step_offset: usize,
    },
}

impl AttentionMask {
    /// Keys `[lo, hi)` visible to query row `i` of `tk` keys.
    pub fn key_range(&self, i: usize, tk: usize) -> (usize, usize) {
        match *self {
            Self::None => (0, tk),
            Self::BlockCausal {
                tokens_per_step: t,
                q_step_offset,
            } => (0, tk.min((q_step_offset + i / t + 1) * t)),
            Self::BlockDiagonal {
                tokens_per_step: t,
                q_step_offset,
            } => {
                let step = q_step_offset + i / t;
                (tk.min(step * t), tk.min((step + 1) * t))
            }
        }
    }
}
