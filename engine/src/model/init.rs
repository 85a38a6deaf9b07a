//! New models: a teacher with DiT's initialisation (Peebles & Xie 2023; drawn by the same
//! constructors that load weight files, see [`ParamSource::fresh`]), and an ARD student made
//! from its teacher (Kim et al., CVPR 2025: every head a copy of the teacher's final layer).

use burn::tensor::Device;

use crate::error::Result;
use crate::model::config::{DitConfig, ModelKind, ModelMeta, StudentConfig};
use crate::model::dit::Dit;
use crate::model::loaded::{LoadedModel, Model};
use crate::model::params::{InitOptions, ParamSource};
use crate::model::student::ArdStudent;

/// A freshly initialised teacher.
pub fn init_teacher(
    cfg: &DitConfig,
    class_names: Option<Vec<String>>,
    options: InitOptions,
    device: &Device,
) -> Result<LoadedModel> {
    cfg.validate()?;
    let dit = Dit::load(&mut ParamSource::fresh(options, device), cfg)?;
    Ok(LoadedModel {
        model: Model::Teacher(dit),
        meta: ModelMeta {
            kind: ModelKind::Teacher,
            dit: cfg.clone(),
            student: None,
            class_names,
            clip_denoised: false,
        },
    })
}

/// A student built from `teacher` (every head a copy of the teacher's final layer).
pub fn student_from_teacher(teacher: LoadedModel, student: StudentConfig) -> Result<LoadedModel> {
    let Model::Teacher(dit) = teacher.model else {
        return Err(crate::error::EngineError::WrongKind(
            "a student is made from a teacher, and this model is already a student".into(),
        ));
    };
    let s = ArdStudent::from_teacher(dit, student.clone())?;
    Ok(LoadedModel {
        model: Model::Student(s),
        meta: ModelMeta {
            kind: ModelKind::Student,
            student: Some(student),
            ..teacher.meta
        },
    })
}
