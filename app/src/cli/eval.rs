//! `ard eval`: a teacher and its students compared in the feature network's space.

use std::path::PathBuf;

use anyhow::Result;
use ard_engine::data::{DEFAULT_DATASET, Split, load as load_dataset};
use ard_engine::eval::{EVAL_SAMPLES, FeatureNet, evaluate};
use ard_engine::io::write_atomically;
use ard_engine::model::{LoadOptions, LoadedModel};
use clap::Args;

use super::{DdimArgs, DeviceArgs, positive};

#[derive(Args)]
pub(super) struct EvalArgs {
    /// The teacher (first row, the FID reference for the degradation column).
    #[arg(long)]
    teacher: PathBuf,
    /// Students to compare, comma-separated.
    #[arg(long, value_delimiter = ',')]
    students: Vec<PathBuf>,
    /// Feature networks, comma-separated: the first makes the main table, each further one
    /// judges the same samples again (a second opinion on the ranking).
    #[arg(long = "feature-net", value_delimiter = ',', required = true)]
    feature_net: Vec<PathBuf>,
    /// Real images: `fashion-mnist` (test split), IDX folder or ImageFolder tree.
    #[arg(long, default_value = DEFAULT_DATASET)]
    data: String,
    /// Samples per model.
    #[arg(long, default_value_t = EVAL_SAMPLES,
          value_parser = positive)]
    samples: usize,
    #[command(flatten)]
    ddim: DdimArgs,
    /// Also sample the teacher with this many DDIM steps (same guidance), in a row after the
    /// students: the floor a K-step student must beat.
    #[arg(long = "floor-steps")]
    floor_steps: Option<usize>,
    /// Write the results as JSON here (and as Markdown beside it, `.md`).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

pub(super) fn eval_cmd(args: EvalArgs) -> Result<()> {
    let (choice, device) = args.device.choose()?;
    let nets: Vec<FeatureNet> = args
        .feature_net
        .iter()
        .map(|p| FeatureNet::load(p, &device))
        .collect::<Result<_, _>>()?;
    let mut models = vec![LoadedModel::load(
        &args.teacher,
        &LoadOptions::default(),
        &device,
    )?];
    for s in &args.students {
        models.push(LoadedModel::load(s, &LoadOptions::default(), &device)?);
    }
    let size = models[0].meta.dit.input_size;
    let channels = models[0].meta.dit.in_channels;
    let real = load_dataset(&args.data, size, channels, Split::Test)?;
    let ddim = args.ddim.options(false);
    let floor = args
        .floor_steps
        .map(|steps| ard_engine::diffusion::DdimOptions {
            steps,
            ..ddim.clone()
        });
    let mut report = evaluate(
        &models,
        &real.images,
        &nets,
        args.samples,
        &ddim,
        floor.as_ref(),
        &device,
        |row| {
            eprintln!(
                "{}: FID {:.2}, class agreement {:.1}%, {:.2} ms/image",
                row.model,
                row.fid,
                100.0 * row.class_agreement,
                row.ms_per_image
            );
        },
    )?;
    report.device = choice.describe();
    let md = report.markdown();
    println!("{md}");
    if let Some(out) = &args.out {
        write_atomically(out, serde_json::to_string_pretty(&report)?.as_bytes())?;
        write_atomically(&out.with_extension("md"), md.as_bytes())?;
        eprintln!(
            "wrote {} and {}",
            out.display(),
            out.with_extension("md").display()
        );
    }
    Ok(())
}
