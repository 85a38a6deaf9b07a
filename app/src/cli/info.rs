//! `ard info`: what a weight file holds.

use std::fmt::Write;
use std::path::Path;

use anyhow::Result;
use ard_engine::ModelMeta;
use ard_engine::conditioning::display_name;
use ard_engine::io::TensorFile;
use ard_engine::model::{LoadOptions, resolve_meta};

use super::ArchArgs;

/// What `ard info` prints about the file at `path`.
pub(super) fn info(path: &Path, arch: &ArchArgs) -> Result<String> {
    let mut out = String::new();
    let mut file = TensorFile::read(path)?;
    if ard_engine::vae::is_vae(&file) {
        vae_info(path, &file, &mut out)?;
        return Ok(out);
    }
    file.strip_prefix_to("x_embedder.proj.weight");
    let stored = ModelMeta::read(&file)?.is_some();
    let heads_known = stored || arch.heads.is_some();
    let history_known = stored || arch.history_layers.is_some();
    // The shapes do not depend on what is not known: read them with placeholders.
    let options = LoadOptions {
        num_heads: arch.heads.or(Some(1)),
        history_layers: arch.history_layers.or(Some(0)),
    };
    let options = if stored { arch.options() } else { options };
    let meta = resolve_meta(&file, &options)?;
    let params: usize = file
        .tensors
        .values()
        .map(|t| t.shape.iter().product::<usize>())
        .sum();
    let d = &meta.dit;
    writeln!(out, "file:        {}", path.display())?;
    writeln!(
        out,
        "format:      {:?}{}",
        file.format,
        if stored {
            " (ARD Studio metadata)"
        } else {
            " (reference names, no metadata)"
        }
    )?;
    writeln!(out, "kind:        {}", meta.kind)?;
    writeln!(
        out,
        "parameters:  {params} ({:.2} M) in {} tensors",
        params as f64 / 1e6,
        file.tensors.len()
    )?;
    writeln!(
        out,
        "input:       {} channels x {}x{}, patch {} ({} tokens per image)",
        d.in_channels,
        d.input_size,
        d.input_size,
        d.patch_size,
        d.num_patches()
    )?;
    writeln!(
        out,
        "transformer: hidden {}, depth {}, heads {}, MLP {}",
        d.hidden_size,
        d.depth,
        if heads_known {
            d.num_heads.to_string()
        } else {
            "not stored (give --heads to load)".into()
        },
        d.mlp_hidden
    )?;
    match &d.text {
        Some(t) => writeln!(
            out,
            "text:        {} token states ({} wide, up to {} tokens); the empty prompt guides",
            t.encoder, t.caption_channels, t.max_tokens
        )?,
        None => writeln!(
            out,
            "classes:     {} (+ null class for guidance)",
            d.num_classes
        )?,
    }
    writeln!(
        out,
        "learn_sigma: {} ({} output channels)",
        d.learn_sigma,
        d.out_channels()
    )?;
    if let Some(s) = &meta.student {
        let n = if history_known {
            s.history_layers.to_string()
        } else {
            "not stored (give --history-layers to load)".into()
        };
        writeln!(
            out,
            "student:     K = {} steps, history layers N = {n}{}",
            s.steps,
            if s.adversarial {
                "; fine-tuned adversarially (stage 2)"
            } else {
                ""
            }
        )?;
        writeln!(out, "markers:     {:?}", s.time_markers)?;
        writeln!(out, "outputs:     {}", s.output_names("infer").join(", "))?;
    }
    if let Some(names) = &meta.class_names {
        let shown: Vec<&str> = names.iter().take(12).map(|n| display_name(n)).collect();
        writeln!(
            out,
            "class names: {}{}",
            shown.join(", "),
            if names.len() > 12 { ", …" } else { "" }
        )?;
    }
    Ok(out)
}

fn vae_info(path: &Path, file: &TensorFile, out: &mut String) -> Result<()> {
    let config = ard_engine::vae::VaeConfig::for_weights(path, file)?;
    let params: usize = file
        .tensors
        .values()
        .map(|t| t.shape.iter().product::<usize>())
        .sum();
    let beside = path.with_file_name("config.json");
    writeln!(out, "file:        {}", path.display())?;
    writeln!(out, "format:      {:?}", file.format)?;
    writeln!(out, "kind:        VAE (AutoencoderKL, diffusers key names)")?;
    writeln!(
        out,
        "parameters:  {params} ({:.2} M) in {} tensors",
        params as f64 / 1e6,
        file.tensors.len()
    )?;
    writeln!(
        out,
        "levels:      {:?} channels, {} ResNet blocks each, {}x down-sampling",
        config.block_out_channels,
        config.layers_per_block,
        config.downsampling()
    )?;
    writeln!(
        out,
        "latent:      {} channels, scaling factor {}",
        config.latent_channels, config.scaling_factor
    )?;
    writeln!(
        out,
        "groups:      {} ({})",
        config.norm_num_groups,
        if beside.is_file() {
            format!("from {}", beside.display())
        } else {
            "SD default: no config.json beside the weights".into()
        }
    )?;
    Ok(())
}
