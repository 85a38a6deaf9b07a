//! `ard eval`: a teacher and its students compared in the feature network's space;
//! `ard step-error`: a student's per-step error against the teacher's trajectory, teacher-forced
//! and free-running (exposure bias).

use std::path::PathBuf;

use anyhow::{Result, bail};
use ard_engine::data::{DEFAULT_DATASET, Split, load_dataset};
use ard_engine::distill::TrajectorySet;
use ard_engine::eval::{EVAL_SAMPLES, FeatureNet, evaluate, step_errors};
use ard_engine::io::write_atomically;
use ard_engine::model::{LoadOptions, LoadedModel, Model};
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

#[derive(Args)]
pub(super) struct StepErrorArgs {
    /// Students to measure, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    students: Vec<PathBuf>,
    /// A trajectory set of their teacher (`ard trajectories`); for a fair measure, one made with
    /// another `--seed` than the set the students were distilled on.
    #[arg(long)]
    trajectories: PathBuf,
    /// Trajectories compared (the first ones of the set).
    #[arg(long, default_value_t = 2000, value_parser = positive)]
    count: usize,
    /// Trajectories per forward pass.
    #[arg(long, default_value_t = 64, value_parser = positive)]
    batch: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Step k's name in the tables: its target's respaced DDIM index (x0 for the last).
fn anchor_name(anchor: usize) -> String {
    if anchor == 0 {
        "x0".into()
    } else {
        format!("p{anchor}")
    }
}

pub(super) fn step_error_cmd(args: StepErrorArgs) -> Result<()> {
    let (_, device) = args.device.choose()?;
    let set = TrajectorySet::load(&args.trajectories)?;
    let mut results = Vec::new();
    for path in &args.students {
        let model = LoadedModel::load(path, &LoadOptions::default(), &device)?;
        let Model::Student(student) = &model.model else {
            bail!("{}: a teacher; step errors are a student's", path.display());
        };
        let errors = step_errors(student, &set, args.count, args.batch, &device)?;
        let header: Vec<String> = set
            .manifest
            .anchors
            .iter()
            .map(|&a| anchor_name(a))
            .collect();
        println!(
            "\n{} (N = {}), {} trajectories: MSE to the teacher's anchor per step\n",
            path.display(),
            student.config().history_layers,
            errors.count
        );
        println!("| | {} |", header.join(" | "));
        println!("|---|{}", "---|".repeat(header.len()));
        let row = |name: &str, v: &[f64], digits: usize| {
            let cells: Vec<String> = v.iter().map(|e| format!("{e:.digits$}")).collect();
            println!("| {name} | {} |", cells.join(" | "));
        };
        row("teacher-forced", &errors.teacher_forced, 5);
        row("free-running", &errors.free_running, 5);
        row("free / forced", &errors.exposure_ratio(), 2);
        results.push(serde_json::json!({
            "student": path,
            "history_layers": student.config().history_layers,
            "anchors": set.manifest.anchors,
            "errors": errors,
        }));
    }
    if let Some(out) = &args.out {
        write_atomically(out, serde_json::to_string_pretty(&results)?.as_bytes())?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}
