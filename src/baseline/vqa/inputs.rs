//! What `task: vqa` reads before the device opens (the questions, their answers, the answer list
//! of rank mode), and the settings that decide an answer (for resume).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use crate::baseline::resume;
use crate::config::{Config, VqaInference};
use crate::data::vqa::{
    read_annotations, read_answer_list, read_any_questions, AnnotatedQuestion, VqaQuestion,
};
use crate::device::ActiveDevice;
use crate::distributed::fingerprint;
use crate::error::Error;

/// The questions, their answers where known, and the answer list of rank mode: everything read
/// before the device opens.
pub struct Inputs {
    pub questions: Vec<VqaQuestion>,
    pub annotations: Option<Vec<AnnotatedQuestion>>,
    pub answer_list: Option<Vec<String>>,
}

pub fn read_inputs(config: &Config) -> Result<Inputs, Error> {
    let input = |e: crate::data::vqa::VqaDataError| Error::input(e);
    let path = &config.data.path;
    let image_root = config
        .data
        .image_root
        .clone()
        .unwrap_or_else(|| path.parent().map(Path::to_path_buf).unwrap_or_default());
    let (mut questions, inline) = read_any_questions(path, &image_root).map_err(input)?;
    questions.drain(..config.data.offset.min(questions.len()));
    if let Some(limit) = config.data.limit {
        questions.truncate(limit);
    }
    if questions.is_empty() {
        return Err(Error::Input(format!(
            "{}: no questions (after data.offset/data.limit)\n  fix: point data.path at a VQAv2 questions file or a LAVIS VQA JSON list",
            path.display()
        )));
    }
    let annotations = match &config.vqa.annotations {
        Some(file) => Some(read_annotations(file, &questions).map_err(input)?),
        None => inline,
    };
    let answer_list = match (config.vqa.inference, &config.vqa.answer_list) {
        (VqaInference::Rank, None) => {
            return Err(Error::Usage(
                "vqa.inference is rank but vqa.answer_list is not set: rank mode chooses each answer from a list\n  fix: --set vqa.answer_list=answer_list.json (LAVIS's), or --set vqa.inference=generate"
                    .to_string(),
            ))
        }
        (VqaInference::Rank, Some(file)) => Some(read_answer_list(file).map_err(input)?),
        (VqaInference::Generate, _) => None,
    };
    Ok(Inputs {
        questions,
        annotations,
        answer_list,
    })
}

/// The settings that decide an answer: the caption baseline's (model files, precision,
/// preprocessing, generation) and the VQA ones.
pub fn settings(
    config: &Config,
    active: &ActiveDevice,
) -> Result<BTreeMap<String, serde_json::Value>, Error> {
    let mut settings = resume::current_settings(config, active)?;
    let vqa = &config.vqa;
    settings.insert("task".to_string(), json!("vqa"));
    settings.insert("vqa.inference".to_string(), json!(vqa.inference));
    settings.insert(
        "vqa.question_first_token".to_string(),
        json!(vqa.question_first_token),
    );
    settings.insert("vqa.image_size".to_string(), json!(vqa.image_size));
    if vqa.inference == VqaInference::Rank {
        settings.insert(
            "vqa.num_ans_candidates".to_string(),
            json!(vqa.num_ans_candidates),
        );
        if let Some(list) = &vqa.answer_list {
            let identity = fingerprint::files_identity(list)
                .map_err(|e| Error::Input(format!("{}: cannot read: {e}", list.display())))?;
            settings.insert("vqa.answer_list".to_string(), json!(identity));
        }
    }
    Ok(settings)
}
