//! The sample grids a run draws as it trains: one image per class, every step of the model.

use std::path::Path;

use burn::tensor::Device;
use image::RgbImage;

use crate::diffusion::ddim::DdimOptions;
use crate::diffusion::sampling::{PromptRequest, SampleRequest, sample};
use crate::error::{EngineError, Result};
use crate::io::host::seeded_noise;
use crate::io::preview::{save_png, step_strip};
use crate::model::loaded::{LoadedModel, Model};
use crate::vae::AutoencoderKL;

/// Models up to this many parameters draw their sample grids on the CPU (a GPU's kernel
/// compilation would cost more than the sampling); larger ones on the device they train on.
const PREVIEW_ON_CPU_PARAMS: usize = 50_000_000;

/// Where the sample grids of a model with `num_params` parameters, trained on `device`, are
/// drawn (and their VAE must live).
pub fn preview_device(num_params: usize, device: &Device) -> Device {
    if num_params > PREVIEW_ON_CPU_PARAMS {
        device.clone().without_autodiff()
    } else {
        Device::flex()
    }
}

/// One image per class (at most 10) or per prompt of `prompts` (a text model), every step of
/// the model shown left to right, sampled on the CPU for models up to
/// [`PREVIEW_ON_CPU_PARAMS`]; latents are decoded through `decoder` on the decoder's own device
/// when given. Returns the grid it wrote to `path`.
pub fn sample_grid(
    model: &LoadedModel,
    decoder: Option<&AutoencoderKL>,
    prompts: Option<&PromptRequest>,
    path: &Path,
) -> Result<RgbImage> {
    let d = &model.meta.dit;
    let device = preview_device(model.num_params(), &model.device());
    let (labels, prompts) = match (d.is_text(), prompts) {
        (false, _) => ((0..d.num_classes.min(10) as i64).collect(), None),
        (true, Some(p)) => (Vec::new(), Some(p.clone())),
        (true, None) => {
            return Err(EngineError::InvalidSetting(
                "a text model's sample grid needs prompts".into(),
            ));
        }
    };
    let n = prompts.as_ref().map_or(labels.len(), |p| p.encoded.len());
    let req = SampleRequest {
        prompts,
        noise: seeded_noise(d.batch_shape(n), 1234),
        labels,
        ddim: DdimOptions::default(),
    };
    let model = model.copy_to(&device)?;
    let out = sample(&model, &req, &device, |_| {})?;
    let steps: Vec<_> = match model.model {
        Model::Teacher(_) => out
            .steps
            .iter()
            .step_by(4)
            .chain(out.steps.last())
            .cloned()
            .collect(),
        Model::Student(_) => out.steps.clone(),
    };
    let steps = match decoder {
        Some(vae) => {
            vae.check_fits(&model.meta.dit)?;
            steps
                .iter()
                .map(|s| vae.decode_host(s, &vae.device()))
                .collect::<Result<_>>()?
        }
        None => steps,
    };
    let image = step_strip(&steps);
    save_png(&image, path)?;
    Ok(image)
}
