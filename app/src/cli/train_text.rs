//! `ard train-teacher --text`: a text-conditioned teacher on a captioned set, its captions
//! encoded once by the text encoder.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, bail};
use ard_engine::Device;
use ard_engine::data::load_captioned;
use ard_engine::diffusion::PromptRequest;
use ard_engine::jobs::{CaptionBank, train_text_teacher};
use ard_engine::model::{HostPrompts, TextConfig};
use ard_engine::text::TextEncoder;
use ard_engine::train::Phase;

use super::train::TrainTeacherArgs;
use super::{choose_device, run_job};
use crate::assets::text_encoder_dir;

/// Prompts a text teacher's sample grids show: `n` distinct first captions spread over the
/// set (a set drawn in several styles lists each emoji once per style).
fn preview_prompts(bank: &CaptionBank, n: usize) -> PromptRequest {
    let mut distinct: Vec<usize> = Vec::new();
    for forms in &bank.forms {
        if !distinct.contains(&forms[0]) {
            distinct.push(forms[0]);
        }
    }
    let n = n.min(distinct.len());
    let picks: Vec<usize> = (0..n).map(|i| distinct[i * distinct.len() / n]).collect();
    let encoded: Vec<_> = picks.iter().map(|&c| &bank.encoded[c]).collect();
    PromptRequest {
        text: picks.iter().map(|&c| bank.text[c].clone()).collect(),
        encoded: HostPrompts::stack(&encoded),
        null: bank.null.clone(),
    }
}

/// `ard train-teacher --text`: the captions encoded once, then the text teacher's training.
pub(super) fn train_text_teacher_cmd(args: TrainTeacherArgs) -> Result<()> {
    let (_, device) = choose_device(args.train.device.as_deref())?;
    if args.eval.is_set() {
        bail!(
            "--feature-net/--eval-every score a class model's samples; a text model's training \
             reports its loss and sample grids"
        );
    }
    let set = load_captioned(Path::new(&args.data), args.size, args.channels)?;
    let text = TextConfig::minilm();
    let dir = args.text_encoder.clone().unwrap_or_else(text_encoder_dir);
    let encoder = TextEncoder::read_for(&dir, &text, &Device::flex())?;
    eprintln!(
        "data: {} captioned images {}x{}x{} (fingerprint {})",
        set.data.len(),
        set.data.channels(),
        set.data.image_size(),
        set.data.image_size(),
        set.data.fingerprint()
    );
    let start = std::time::Instant::now();
    let bank = CaptionBank::encode(&set, &encoder, |done, total| {
        if done == total || done.is_multiple_of(1000) {
            eprintln!("encoded {done}/{total} captions");
        }
    })?;
    eprintln!("captions encoded in {:.1} s", start.elapsed().as_secs_f64());
    let mut run = args.train.run_dir();
    run.prompts = Some(Arc::new(preview_prompts(&bank, 8)));
    let options = args.options();
    run_job(Phase::Teacher, args.train.log_every, |hooks| {
        train_text_teacher(&set, &bank, &text, &options, &run, &device, hooks)
    })
}
