//! Evaluation: Fréchet distance, KID and precision/recall in the feature network's space, class
//! agreement, FLOPs (`flops.rs`), and wall-clock time per image.

use std::time::Instant;

use burn::tensor::{Device, Tensor};
use nalgebra::{DMatrix, DVector, SymmetricEigen};
use serde::{Deserialize, Serialize};

use crate::diffusion::ddim::DdimOptions;
use crate::diffusion::sampling::{SampleRequest, sample};
use crate::distill::trajectories::trajectory_noise;
use crate::error::Result;
use crate::eval::feature_net::{FeatureNet, accuracy, features_and_logits};
use crate::eval::flops::{ddim_flops, student_flops};
use crate::io::host::HostTensor;
use crate::model::loaded::{LoadedModel, Model};

/// Mean and covariance (unbiased) of the rows of `[N, D]` features.
pub fn moments(f: &HostTensor) -> (DVector<f64>, DMatrix<f64>) {
    let (n, d) = (f.shape[0], f.shape[1]);
    let x = DMatrix::from_row_iterator(n, d, f.data.iter().map(|&v| v as f64));
    let mean = x.row_mean().transpose();
    let centred = DMatrix::from_fn(n, d, |i, j| x[(i, j)] - mean[j]);
    let cov = centred.transpose() * &centred / (n as f64 - 1.0).max(1.0);
    (mean, cov)
}

fn sqrt_psd(m: &DMatrix<f64>) -> DMatrix<f64> {
    let e = SymmetricEigen::new(m.clone());
    let s = e.eigenvalues.map(|v| v.max(0.0).sqrt());
    &e.eigenvectors * DMatrix::from_diagonal(&s) * e.eigenvectors.transpose()
}

/// ‖μ₁−μ₂‖² + tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½), with tr((Σ₁Σ₂)^½) = tr((Σ₁^½ Σ₂ Σ₁^½)^½).
pub fn frechet_distance(a: &HostTensor, b: &HostTensor) -> f64 {
    let (m1, s1) = moments(a);
    let (m2, s2) = moments(b);
    let r1 = sqrt_psd(&s1);
    let inner = &r1 * &s2 * &r1;
    let inner = (&inner + inner.transpose()) * 0.5;
    let tr_sqrt: f64 = SymmetricEigen::new(inner)
        .eigenvalues
        .iter()
        .map(|v| v.max(0.0).sqrt())
        .sum();
    (m1 - m2).norm_squared() + s1.trace() + s2.trace() - 2.0 * tr_sqrt
}

/// Kernel Inception Distance: unbiased MMD² with the kernel (x·y/d + 1)³, averaged over
/// `subsets` random subsets of `size` rows (deterministic order: strided subsets).
pub fn kernel_distance(a: &HostTensor, b: &HostTensor, subsets: usize, size: usize) -> f64 {
    let d = a.shape[1];
    let rows = |t: &HostTensor, s: usize, m: usize| -> DMatrix<f64> {
        let n = t.shape[0];
        DMatrix::from_fn(m, d, |i, j| {
            // m distinct rows, spread over the set, shifted per subset.
            let r = (s * 7919 + i * (n / m).max(1)) % n;
            t.data[r * d + j] as f64
        })
    };
    let m = size.min(a.shape[0]).min(b.shape[0]);
    let mut total = 0.0;
    for s in 0..subsets {
        let (x, y) = (rows(a, s, m), rows(b, s + 1, m));
        let k = |p: &DMatrix<f64>, q: &DMatrix<f64>| {
            (p * q.transpose()).map(|v| (v / d as f64 + 1.0).powi(3))
        };
        let (kxx, kyy, kxy) = (k(&x, &x), k(&y, &y), k(&x, &y));
        let off = |kk: &DMatrix<f64>| (kk.sum() - kk.trace()) / (m * (m - 1)) as f64;
        total += off(&kxx) + off(&kyy) - 2.0 * kxy.mean();
    }
    total / subsets as f64
}

/// KID in a feature space of any scale: both sets are divided by the real set's root-mean-square
/// entry before [`kernel_distance`], so the cubic kernel's `x·y/d` is O(1) as it is for Inception
/// features. Unscaled, our feature network's larger activations made the kernel's large values
/// swamp the differences and every model scored about the same.
pub fn kid(feats: &HostTensor, real: &HostTensor) -> f64 {
    let mean_sq =
        real.data.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / real.data.len() as f64;
    let rms = mean_sq.sqrt().max(1e-12);
    let scaled = |t: &HostTensor| HostTensor {
        shape: t.shape.clone(),
        data: t.data.iter().map(|&v| (v as f64 / rms) as f32).collect(),
    };
    kernel_distance(&scaled(feats), &scaled(real), 10, 1000)
}

/// Squared distances between rows of `a` `[N, D]` and `b` `[M, D]`, on `device`, in chunks.
fn pairwise_sq(a: &HostTensor, b: &HostTensor, device: &Device) -> Result<Vec<Vec<f32>>> {
    let bt: Tensor<2> = b.to_device(device)?;
    let b2 = bt.clone().square().sum_dim(1).reshape([1, b.shape[0]]);
    let mut out = Vec::with_capacity(a.shape[0]);
    for start in (0..a.shape[0]).step_by(1000) {
        let idx: Vec<usize> = (start..(start + 1000).min(a.shape[0])).collect();
        let at: Tensor<2> = a.rows(&idx).to_device(device)?;
        let a2 = at.clone().square().sum_dim(1);
        let d = (a2 + b2.clone() - at.matmul(bt.clone().transpose()) * 2.0).clamp_min(0.0);
        let h = HostTensor::from_tensor(d);
        out.extend(h.data.chunks(b.shape[0]).map(<[f32]>::to_vec));
    }
    Ok(out)
}

/// Distance of each row to its k-th nearest other row.
fn knn_radii(d: &[Vec<f32>], k: usize) -> Vec<f32> {
    d.iter()
        .map(|row| {
            let mut r = row.clone();
            r.sort_by(f32::total_cmp);
            r[k.min(r.len() - 1)] // r[0] is the row itself
        })
        .collect()
}

/// Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls, k = 3.
pub fn precision_recall(
    real: &HostTensor,
    fake: &HostTensor,
    device: &Device,
) -> Result<(f64, f64)> {
    let k = 3;
    let real_r = knn_radii(&pairwise_sq(real, real, device)?, k);
    let fake_r = knn_radii(&pairwise_sq(fake, fake, device)?, k);
    let fr = pairwise_sq(fake, real, device)?;
    let precision = fr
        .iter()
        .filter(|row| row.iter().zip(&real_r).any(|(d, r)| d <= r))
        .count() as f64
        / fr.len() as f64;
    let recall = (0..real.shape[0])
        .filter(|&j| fr.iter().zip(&fake_r).any(|(row, r)| row[j] <= *r))
        .count() as f64
        / real.shape[0] as f64;
    Ok((precision, recall))
}

/// One row of the results table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalRow {
    pub model: String,
    pub fid: f64,
    /// FID minus the teacher's FID.
    pub fid_degradation: f64,
    /// Fréchet distance to the teacher's own samples from the same noises (none for the
    /// teacher's row): how far the distribution moved from the one it was distilled from,
    /// whichever way, where `fid_degradation` only compares each one's distance to the data.
    #[serde(default)]
    pub fid_to_teacher: Option<f64>,
    pub class_agreement: f64,
    pub gflops: f64,
    pub ms_per_image: f64,
    pub kid: f64,
    pub precision: f64,
    pub recall: f64,
    pub samples: usize,
    /// FID of the first and of the second half of the samples (each class-balanced, as sample
    /// `i` has class `i mod classes`): how far FID moves with the noises at half the sample
    /// count, an upper bound on its spread at the full count.
    #[serde(default)]
    pub fid_halves: Option<[f64; 2]>,
    /// The student's N (none for the teacher's rows).
    #[serde(default)]
    pub history_layers: Option<usize>,
    /// A student fine-tuned by the adversarial stage.
    #[serde(default)]
    pub adversarial: bool,
}

impl EvalRow {
    /// The larger distance from the FID of either half to their mean.
    pub fn fid_spread(&self) -> Option<f64> {
        self.fid_halves.map(|[a, b]| (a - b).abs() / 2.0)
    }
}

/// The same samples judged by another feature network.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OtherNetReport {
    pub feature_net_test_accuracy: f64,
    pub rows: Vec<EvalRow>,
}

/// The whole evaluation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub rows: Vec<EvalRow>,
    pub feature_net_test_accuracy: f64,
    pub reference_images: usize,
    pub device: String,
    /// The table again under each further feature network (`ard eval --feature-net A,B`).
    #[serde(default)]
    pub other_nets: Vec<OtherNetReport>,
}

/// The sentence after a table: the students' ratios, where it has both kinds.
fn ratios_markdown(rows: &[EvalRow]) -> String {
    let cell = |r: Option<f64>| r.map_or("–".into(), |r| format!("{r:.2}"));
    format!(
        "The ratio of the students' FID degradations: {}; of their FIDs to the teacher: {}.",
        cell(degradation_ratio(rows)),
        cell(teacher_distance_ratio(rows))
    )
}

/// The Markdown table of `rows`.
fn rows_markdown(rows: &[EvalRow]) -> String {
    let mut s = String::from(
        "| model | FID | FID degradation | FID spread (halves) | FID to the teacher | class agreement | KID ×10³ | precision | recall | GFLOPs / image | ms / image |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s += &format!(
            "| {} | {:.2} | {:+.2} | {} | {} | {:.1}% | {:.2} | {:.3} | {:.3} | {:.3} | {:.2} |\n",
            r.model,
            r.fid,
            r.fid_degradation,
            r.fid_spread().map_or("–".into(), |v| format!("±{v:.2}")),
            r.fid_to_teacher.map_or("–".into(), |v| format!("{v:.2}")),
            100.0 * r.class_agreement,
            1e3 * r.kid,
            r.precision,
            r.recall,
            r.gflops,
            r.ms_per_image
        );
    }
    s
}

impl EvalReport {
    pub fn markdown(&self) -> String {
        let mut s = rows_markdown(&self.rows);
        s += &format!(
            "\nFeature network accuracy on the {} test images: {:.1}%. {} samples per model, {}. {}\n",
            self.reference_images,
            100.0 * self.feature_net_test_accuracy,
            self.rows.first().map_or(0, |r| r.samples),
            self.device,
            ratios_markdown(&self.rows)
        );
        for other in &self.other_nets {
            s += &format!(
                "\nThe same samples under a second feature network ({:.1}% test accuracy):\n\n",
                100.0 * other.feature_net_test_accuracy
            );
            s += &rows_markdown(&other.rows);
            s += &format!("\n{}\n", ratios_markdown(&other.rows));
        }
        s
    }
}

/// The step-distillation baseline's `value` over the (first) ARD student's, when the table has
/// both (students of the adversarial stage stay out).
fn student_ratio(rows: &[EvalRow], value: impl Fn(&EvalRow) -> Option<f64>) -> Option<f64> {
    let ard = rows
        .iter()
        .find(|r| !r.adversarial && r.history_layers.is_some_and(|n| n > 0))?;
    let base = rows
        .iter()
        .find(|r| !r.adversarial && r.history_layers == Some(0))?;
    Some(value(base)? / value(ard)?)
}

/// The baseline's FID degradation over the ARD student's: the paper's headline ratio
/// (7.36 / 1.43 ≈ 5 on ImageNet).
pub fn degradation_ratio(rows: &[EvalRow]) -> Option<f64> {
    student_ratio(rows, |r| Some(r.fid_degradation))
}

/// The baseline's FID to the teacher's samples over the ARD student's.
pub fn teacher_distance_ratio(rows: &[EvalRow]) -> Option<f64> {
    student_ratio(rows, |r| r.fid_to_teacher)
}

/// A model's name in the table.
pub fn model_label(m: &LoadedModel, ddim: &DdimOptions) -> String {
    match &m.meta.student {
        None => format!(
            "teacher ({}-step DDIM, guidance {})",
            ddim.steps, ddim.cfg_scale
        ),
        Some(s) if s.adversarial && s.history_layers == 0 => {
            format!("step distillation + GAN (N=0, {} steps)", s.steps)
        }
        Some(s) if s.adversarial => {
            format!("ARD + GAN (N={}, {} steps)", s.history_layers, s.steps)
        }
        Some(s) if s.history_layers == 0 => format!("step distillation (N=0, {} steps)", s.steps),
        Some(s) => format!("ARD (N={}, {} steps)", s.history_layers, s.steps),
    }
}

/// Generates `n` class-balanced samples (noise seeded per sample), timing the sampling alone.
pub fn generate_samples(
    model: &LoadedModel,
    n: usize,
    batch: usize,
    ddim: &DdimOptions,
    seed: u64,
    device: &Device,
) -> Result<(HostTensor, Vec<i64>, f64)> {
    let d = &model.meta.dit;
    let shape = d.image_shape();
    let mut images = Vec::new();
    let mut labels = Vec::new();
    let mut secs = 0.0;
    for start in (0..n).step_by(batch.max(1)) {
        let ids: Vec<usize> = (start..(start + batch).min(n)).collect();
        let noise: Vec<f32> = ids
            .iter()
            .flat_map(|&g| trajectory_noise(&shape, seed, g).data)
            .collect();
        let y: Vec<i64> = ids.iter().map(|&g| (g % d.num_classes) as i64).collect();
        let req = SampleRequest {
            prompts: None,
            noise: HostTensor::new(d.batch_shape(ids.len()), noise),
            labels: y.clone(),
            ddim: ddim.clone(),
        };
        let t0 = Instant::now();
        let out = sample(model, &req, device, |_| {})?;
        secs += t0.elapsed().as_secs_f64();
        images.extend(out.images.data);
        labels.extend(y);
    }
    Ok((
        HostTensor::new(d.batch_shape(n), images),
        labels,
        secs * 1e3 / n as f64,
    ))
}

/// Samples per model in `ard eval` (as many as the Fashion-MNIST test split has images).
pub const EVAL_SAMPLES: usize = 10_000;

/// The first (`half` 0) or second (1) half of the rows of `t`.
fn half_rows(t: &HostTensor, half: usize) -> HostTensor {
    let n = t.shape[0] / 2;
    let idx: Vec<usize> = (half * n..(half + 1) * n).collect();
    t.rows(&idx)
}

/// Evaluates `models` (the teacher first) against the `real` images, under each of `nets`
/// (the first makes the report's main table; every model's samples are drawn once). With
/// `floor`, the teacher is also sampled with those DDIM options (e.g. 4 steps: what a user gets
/// without distillation), in a row after the students.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    models: &[LoadedModel],
    real: &HostTensor,
    nets: &[FeatureNet],
    samples: usize,
    ddim: &DdimOptions,
    floor: Option<&DdimOptions>,
    device: &Device,
    mut on_model: impl FnMut(&EvalRow),
) -> Result<EvalReport> {
    if nets.is_empty() {
        return Err(crate::error::EngineError::InvalidSetting(
            "evaluation needs a feature network".into(),
        ));
    }
    let real_feats: Vec<HostTensor> = nets
        .iter()
        .map(|net| features_and_logits(net, real, device).map(|(f, _)| f))
        .collect::<Result<_>>()?;
    let mut tables: Vec<Vec<EvalRow>> = vec![Vec::new(); nets.len()];
    // Per network, the first model's (the teacher's) features.
    let mut teacher_feats: Vec<Option<HostTensor>> = (0..nets.len()).map(|_| None).collect();
    let runs = models
        .iter()
        .map(|m| (m, ddim))
        .chain(floor.and_then(|f| models.first().map(|t| (t, f))));
    for (m, ddim) in runs {
        let (images, labels, ms) = generate_samples(m, samples, 100, ddim, 2024, device)?;
        let flops = match (&m.model, &m.meta.student) {
            (Model::Student(_), Some(s)) => student_flops(&m.meta.dit, s),
            _ => ddim_flops(&m.meta.dit, ddim.steps, ddim.cfg_scale != 1.0),
        };
        let per_net = nets.iter().zip(&real_feats).zip(&mut tables);
        for (((net, real_feats), rows), teacher) in per_net.zip(&mut teacher_feats) {
            let (feats, logits) = features_and_logits(net, &images, device)?;
            let fid_to_teacher = teacher.as_ref().map(|t| frechet_distance(&feats, t));
            let fid = frechet_distance(&feats, real_feats);
            let (precision, recall) = precision_recall(real_feats, &feats, device)?;
            let fid_halves = (samples >= 4)
                .then(|| [0, 1].map(|h| frechet_distance(&half_rows(&feats, h), real_feats)));
            let row = EvalRow {
                model: model_label(m, ddim),
                fid,
                fid_degradation: fid - rows.first().map_or(fid, |t| t.fid),
                fid_to_teacher,
                class_agreement: accuracy(&logits, &labels),
                gflops: flops / 1e9,
                ms_per_image: ms,
                kid: kid(&feats, real_feats),
                precision,
                recall,
                samples,
                fid_halves,
                history_layers: m.meta.student.as_ref().map(|s| s.history_layers),
                adversarial: m.meta.student.as_ref().is_some_and(|s| s.adversarial),
            };
            rows.push(row);
            teacher.get_or_insert(feats);
        }
        on_model(tables[0].last().expect("a row per model"));
    }
    let mut tables = tables.into_iter();
    let accuracy_of = |net: &FeatureNet| net.config.test_accuracy.unwrap_or(f64::NAN);
    Ok(EvalReport {
        rows: tables.next().expect("one net at least"),
        feature_net_test_accuracy: accuracy_of(&nets[0]),
        reference_images: real.shape[0],
        device: String::new(),
        other_nets: nets[1..]
            .iter()
            .zip(tables)
            .map(|(net, rows)| OtherNetReport {
                feature_net_test_accuracy: accuracy_of(net),
                rows,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(n: usize, d: usize, shift: f32, seed: u64) -> HostTensor {
        let mut t = crate::io::host::seeded_noise(vec![n, d], seed);
        t.data.iter_mut().for_each(|v| *v += shift);
        t
    }

    #[test]
    fn kid_ranks_distributions_at_any_feature_scale() {
        let scaled = |t: &HostTensor, c: f32| HostTensor {
            shape: t.shape.clone(),
            data: t.data.iter().map(|v| v * c).collect(),
        };
        let real = gaussian(3000, 16, 0.0, 11);
        let same = gaussian(3000, 16, 0.0, 12);
        let near = gaussian(3000, 16, 0.3, 13);
        let far = gaussian(3000, 16, 1.0, 14);
        for c in [1.0, 40.0] {
            let (real, same, near, far) = (
                scaled(&real, c),
                scaled(&same, c),
                scaled(&near, c),
                scaled(&far, c),
            );
            let k = [kid(&same, &real), kid(&near, &real), kid(&far, &real)];
            assert!(k.iter().all(|v| v.is_finite()), "{k:?}");
            assert!(
                k[0].abs() < 0.02 && k[0] < k[1] && k[1] < k[2],
                "scale {c}: {k:?}"
            );
        }
        // The normalisation makes the value itself scale-free.
        let (a, b) = (
            kid(&near, &real),
            kid(&scaled(&near, 40.0), &scaled(&real, 40.0)),
        );
        assert!((a - b).abs() < 1e-6 * a.abs().max(1.0), "{a} vs {b}");
    }

    #[test]
    fn the_halves_are_the_first_and_second_half_of_the_samples() {
        // Sample i has class i mod classes, so contiguous halves keep every class.
        let t = HostTensor::new(vec![10, 2], (0..20).map(|v| v as f32).collect());
        assert_eq!(
            half_rows(&t, 0).data,
            (0..10).map(|v| v as f32).collect::<Vec<_>>()
        );
        assert_eq!(
            half_rows(&t, 1).data,
            (10..20).map(|v| v as f32).collect::<Vec<_>>()
        );
        let row = |halves| EvalRow {
            model: String::new(),
            fid: 0.0,
            fid_degradation: 0.0,
            fid_to_teacher: None,
            class_agreement: 0.0,
            gflops: 0.0,
            ms_per_image: 0.0,
            kid: 0.0,
            precision: 0.0,
            recall: 0.0,
            samples: 10,
            fid_halves: halves,
            history_layers: None,
            adversarial: false,
        };
        assert_eq!(row(Some([3.0, 4.0])).fid_spread(), Some(0.5));
        assert_eq!(row(None).fid_spread(), None);
    }

    #[test]
    fn the_gan_tuned_student_has_its_own_row_and_stays_out_of_the_ratio() {
        let row = |n: Option<usize>, adversarial: bool, degradation: f64| EvalRow {
            model: String::new(),
            fid: 0.0,
            fid_degradation: degradation,
            // The teacher's row has none; the adversarial student's must not count.
            fid_to_teacher: if adversarial {
                Some(1.0)
            } else {
                n.map(|n| if n == 0 { 8.0 } else { 2.0 })
            },
            class_agreement: 0.0,
            gflops: 0.0,
            ms_per_image: 0.0,
            kid: 0.0,
            precision: 0.0,
            recall: 0.0,
            samples: 10,
            fid_halves: None,
            history_layers: n,
            adversarial,
        };
        let rows = [
            row(None, false, 0.0),
            row(Some(2), true, 0.5),
            row(Some(2), false, 2.0),
            row(Some(0), false, 6.0),
        ];
        assert_eq!(degradation_ratio(&rows), Some(3.0));
        assert_eq!(teacher_distance_ratio(&rows), Some(4.0));
        assert_eq!(teacher_distance_ratio(&rows[..3]), None);
        let mut s = crate::model::config::StudentConfig::new(4, 2);
        s.adversarial = true;
        let dit = crate::model::config::DitConfig::fashion_mnist();
        let student = crate::model::init::student_from_teacher(
            crate::model::init::init_teacher(
                &dit.with_depth(2),
                None,
                crate::model::params::InitOptions {
                    seed: 0,
                    zero_init: true,
                },
                &Device::flex(),
            )
            .unwrap(),
            s,
        )
        .unwrap();
        assert_eq!(
            model_label(&student, &DdimOptions::default()),
            "ARD + GAN (N=2, 4 steps)"
        );
        let mut baseline = student;
        if let Some(s) = baseline.meta.student.as_mut() {
            s.history_layers = 0;
        }
        assert_eq!(
            model_label(&baseline, &DdimOptions::default()),
            "step distillation + GAN (N=0, 4 steps)"
        );
    }

    #[test]
    fn frechet_distance_of_shifted_gaussians() {
        // Same covariance (identity), means 0 and 1 in every one of 8 dims: FID ≈ 8.
        let (a, b) = (gaussian(20000, 8, 0.0, 1), gaussian(20000, 8, 1.0, 2));
        let fid = frechet_distance(&a, &b);
        assert!((fid - 8.0).abs() < 0.15, "{fid}");
        let same = frechet_distance(&a, &gaussian(20000, 8, 0.0, 3));
        assert!(same.abs() < 0.02, "{same}");
        assert!(
            kernel_distance(&a, &b, 4, 500)
                > 10.0 * kernel_distance(&a, &gaussian(20000, 8, 0.0, 3), 4, 500).abs()
        );
    }

    #[test]
    fn precision_and_recall_see_missing_modes() {
        let device = Device::flex();
        let real = gaussian(600, 4, 0.0, 1);
        let (p, r) = precision_recall(&real, &gaussian(600, 4, 0.0, 2), &device).unwrap();
        assert!(p > 0.8 && r > 0.8, "{p} {r}");
        let (p, _) = precision_recall(&real, &gaussian(600, 4, 8.0, 2), &device).unwrap();
        assert!(p < 0.05, "far samples are not precise: {p}");
    }
}
