//! `ard eval`'s table end to end on tiny models: every model sampled from the same noises, the
//! teacher's row first, each other row's FID degradation against it and its Fréchet distance to
//! the teacher's own samples, under every feature network.

use ard_engine::diffusion::DdimOptions;
use ard_engine::eval::{
    FeatureNet, FeatureNetConfig, degradation_ratio, evaluate, teacher_distance_ratio,
};
use ard_engine::model::student_from_teacher;
use ard_engine::{Device, StudentConfig};
use ard_studio::{tiny_teacher_model, toy_data};

fn feature_net(seed_layers: Vec<(usize, usize)>, device: &Device) -> FeatureNet {
    FeatureNet::new(
        FeatureNetConfig {
            in_channels: 1,
            num_classes: 2,
            class_names: vec!["left".into(), "top".into()],
            layers: seed_layers,
            dense: None,
            test_accuracy: None,
        },
        device,
    )
}

#[test]
fn every_row_is_measured_against_the_data_and_against_the_teacher() {
    let device = Device::flex();
    let teacher = tiny_teacher_model(2, None, 7);
    // The same weights again: its samples are the teacher's, noise for noise.
    let copy = tiny_teacher_model(2, None, 7);
    let student =
        |n| student_from_teacher(tiny_teacher_model(2, None, 7), StudentConfig::new(4, n));
    let models = [teacher, copy, student(1).unwrap(), student(0).unwrap()];
    let nets = [
        feature_net(vec![(8, 1), (16, 2)], &device),
        feature_net(vec![(12, 2)], &device),
    ];
    let real = toy_data(48).images;
    let ddim = DdimOptions {
        steps: 6,
        ..Default::default()
    };
    let floor = DdimOptions {
        steps: 2,
        ..ddim.clone()
    };
    let mut seen = Vec::new();
    let report = evaluate(
        &models,
        &real,
        &nets,
        24,
        &ddim,
        Some(&floor),
        &device,
        |row| seen.push(row.model.clone()),
    )
    .unwrap();
    assert_eq!(seen.len(), 5, "{seen:?}");
    for rows in std::iter::once(&report.rows).chain(report.other_nets.iter().map(|o| &o.rows)) {
        assert_eq!(rows.len(), 5);
        let (teacher, copy) = (&rows[0], &rows[1]);
        assert!(teacher.fid.is_finite() && teacher.fid > 0.0, "{teacher:?}");
        assert_eq!(teacher.fid_degradation, 0.0);
        assert_eq!(teacher.fid_to_teacher, None);
        let scale = teacher.fid.max(1.0);
        let to_teacher = copy.fid_to_teacher.unwrap();
        assert!(to_teacher.abs() < 1e-6 * scale, "{to_teacher}");
        assert!(copy.fid_degradation.abs() < 1e-6 * scale, "{copy:?}");
        // The students and the 4-step floor moved away from the teacher's samples.
        for r in &rows[2..] {
            let d = r.fid_to_teacher.unwrap();
            assert!(d.is_finite() && d > 1e-3 * scale, "{r:?}");
            assert!((r.fid_degradation - (r.fid - teacher.fid)).abs() < 1e-9);
        }
        assert_eq!(rows[2].history_layers, Some(1));
        assert_eq!(rows[3].history_layers, Some(0));
        let want = rows[3].fid_to_teacher.unwrap() / rows[2].fid_to_teacher.unwrap();
        assert_eq!(teacher_distance_ratio(rows), Some(want));
        assert!(degradation_ratio(rows).is_some());
    }
    let md = report.markdown();
    assert!(md.contains("| FID to the teacher |"), "{md}");
    assert_eq!(
        md.matches("of their FIDs to the teacher: ").count(),
        2,
        "{md}"
    );
}
