//! VQAv2's official files: `v2_OpenEnded_mscoco_<split>_questions.json` (`{"data_subtype",
//! "questions": [{"image_id", "question", "question_id"}]}`) and, where there are answers,
//! `v2_mscoco_<split>_annotations.json` (`{"annotations": [{"question_id", "image_id",
//! "answers": [{"answer", ...}], "answer_type", "question_type"}]}`); and the submission format
//! `[{"question_id": int, "answer": str}]`. Images are `COCO_<data_subtype>_<image_id:012>.jpg`
//! under the images folder, as the COCO release names them.
//!
//! LAVIS's VQA files too ([`read_lavis_questions`]): `vqa_val_eval.json` is a JSON list of
//! `{"question_id", "question", "image" (relative to the image folder), "answer"?: [str] | str,
//! "answer_type"?, "question_type"?}`, and `answer_list.json` ([`read_answer_list`]) a JSON list
//! of the answers LAVIS's `rank` mode chooses from. [`read_any_questions`] tells the two question
//! formats apart by their content (an object or a list).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One annotated question (a VQAv2 annotation).
#[derive(Debug, Clone, PartialEq)]
pub struct AnnotatedQuestion {
    pub question_id: u64,
    /// The human answers (10 in VQAv2).
    pub answers: Vec<String>,
    pub answer_type: String,
    pub question_type: String,
}

/// One question to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct VqaQuestion {
    pub question_id: u64,
    pub image_id: u64,
    pub question: String,
    pub image: PathBuf,
}

/// Why the VQA files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum VqaDataError {
    #[error("{path}: cannot read: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a VQAv2 {what} file: {source}\n  fix: pass the official v2_OpenEnded_mscoco_*_questions.json / v2_mscoco_*_annotations.json", path = .path.display())]
    Format {
        path: PathBuf,
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("{count} question(s) have no annotation in {path} (e.g. question_id {example}): the annotation file is of another split\n  fix: pass the annotations of the same split as the questions", path = .path.display())]
    Unannotated {
        path: PathBuf,
        count: usize,
        example: u64,
    },
    #[error("question_id {0} appears twice in the questions file")]
    Duplicate(u64),
    #[error("{path}: entry {index}: {message}\n  fix: a LAVIS VQA file is a JSON list of {{\"question_id\": int, \"question\": str, \"image\": \"dir/x.jpg\", \"answer\"?: [str]}}", path = .path.display())]
    Lavis {
        path: PathBuf,
        index: usize,
        message: String,
    },
    #[error("{path}: {message}\n  fix: vqa.answer_list is LAVIS's answer_list.json, a non-empty JSON list of answer strings", path = .path.display())]
    AnswerList { path: PathBuf, message: String },
}

#[derive(Deserialize)]
struct RawQuestions {
    data_subtype: Option<String>,
    questions: Vec<RawQuestion>,
}

#[derive(Deserialize)]
struct RawQuestion {
    image_id: u64,
    question: String,
    question_id: u64,
}

#[derive(Deserialize)]
struct RawAnnotations {
    annotations: Vec<RawAnnotation>,
}

#[derive(Deserialize)]
struct RawAnnotation {
    question_id: u64,
    answers: Vec<RawAnswer>,
    #[serde(default)]
    answer_type: String,
    #[serde(default)]
    question_type: String,
}

#[derive(Deserialize)]
struct RawAnswer {
    answer: String,
}

/// One line of the submission file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmissionEntry {
    pub question_id: u64,
    pub answer: String,
}

fn read(path: &Path) -> Result<String, VqaDataError> {
    std::fs::read_to_string(path).map_err(|source| VqaDataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The questions of `questions_file`, their images under `images_dir`, in the file's order.
pub fn read_questions(
    questions_file: &Path,
    images_dir: &Path,
) -> Result<Vec<VqaQuestion>, VqaDataError> {
    let raw: RawQuestions =
        serde_json::from_str(&read(questions_file)?).map_err(|source| VqaDataError::Format {
            path: questions_file.to_path_buf(),
            what: "questions",
            source,
        })?;
    let subtype = raw.data_subtype.unwrap_or_else(|| "val2014".to_string());
    let mut seen = std::collections::BTreeSet::new();
    raw.questions
        .into_iter()
        .map(|q| {
            if !seen.insert(q.question_id) {
                return Err(VqaDataError::Duplicate(q.question_id));
            }
            Ok(VqaQuestion {
                question_id: q.question_id,
                image_id: q.image_id,
                image: images_dir.join(format!("COCO_{subtype}_{:012}.jpg", q.image_id)),
                question: q.question,
            })
        })
        .collect()
}

/// The annotations of `annotations_file` for `questions` (each must have one).
pub fn read_annotations(
    annotations_file: &Path,
    questions: &[VqaQuestion],
) -> Result<Vec<AnnotatedQuestion>, VqaDataError> {
    let raw: RawAnnotations =
        serde_json::from_str(&read(annotations_file)?).map_err(|source| VqaDataError::Format {
            path: annotations_file.to_path_buf(),
            what: "annotations",
            source,
        })?;
    let mut by_id: BTreeMap<u64, RawAnnotation> = raw
        .annotations
        .into_iter()
        .map(|a| (a.question_id, a))
        .collect();
    let missing: Vec<u64> = questions
        .iter()
        .map(|q| q.question_id)
        .filter(|id| !by_id.contains_key(id))
        .collect();
    if let Some(&example) = missing.first() {
        return Err(VqaDataError::Unannotated {
            path: annotations_file.to_path_buf(),
            count: missing.len(),
            example,
        });
    }
    Ok(questions
        .iter()
        .filter_map(|q| by_id.remove(&q.question_id))
        .map(|a| AnnotatedQuestion {
            question_id: a.question_id,
            answers: a.answers.into_iter().map(|x| x.answer).collect(),
            answer_type: a.answer_type,
            question_type: a.question_type,
        })
        .collect())
}

#[derive(Deserialize)]
struct RawLavisQuestion {
    question_id: serde_json::Value,
    question: String,
    image: String,
    #[serde(default)]
    answer: Option<serde_json::Value>,
    #[serde(default)]
    answer_type: Option<String>,
    #[serde(default)]
    question_type: Option<String>,
}

/// The questions of a LAVIS VQA file, images under `images_dir`, and the annotations made of its
/// `answer` lists when every entry has one (`None` otherwise: a test split).
pub fn read_lavis_questions(
    path: &Path,
    images_dir: &Path,
) -> Result<(Vec<VqaQuestion>, Option<Vec<AnnotatedQuestion>>), VqaDataError> {
    let raw: Vec<RawLavisQuestion> =
        serde_json::from_str(&read(path)?).map_err(|source| VqaDataError::Format {
            path: path.to_path_buf(),
            what: "LAVIS VQA",
            source,
        })?;
    let entry_error = |index: usize, message: String| VqaDataError::Lavis {
        path: path.to_path_buf(),
        index,
        message,
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut questions = Vec::with_capacity(raw.len());
    let mut annotations = Vec::with_capacity(raw.len());
    for (index, q) in raw.into_iter().enumerate() {
        let question_id = match &q.question_id {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse::<u64>().ok(),
            _ => None,
        }
        .ok_or_else(|| {
            entry_error(
                index,
                format!(
                    "question_id {} is not a non-negative integer",
                    q.question_id
                ),
            )
        })?;
        if !seen.insert(question_id) {
            return Err(VqaDataError::Duplicate(question_id));
        }
        let answers = match q.answer {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(a)) => Some(vec![a]),
            Some(serde_json::Value::Array(list)) => Some(
                list.into_iter()
                    .map(|a| match a {
                        serde_json::Value::String(a) => Ok(a),
                        other => Err(entry_error(
                            index,
                            format!("answer {other} is not a string"),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(other) => {
                return Err(entry_error(
                    index,
                    format!("answer {other} is neither a string nor a list"),
                ))
            }
        };
        if let Some(answers) = answers {
            annotations.push(AnnotatedQuestion {
                question_id,
                answers,
                answer_type: q.answer_type.unwrap_or_default(),
                question_type: q.question_type.unwrap_or_default(),
            });
        }
        questions.push(VqaQuestion {
            question_id,
            image_id: 0,
            image: images_dir.join(&q.image),
            question: q.question,
        });
    }
    let complete = annotations.len() == questions.len();
    Ok((questions, complete.then_some(annotations)))
}

/// The questions of `path` in either format (a VQAv2 questions object, or a LAVIS list), and the
/// LAVIS file's own annotations where it has them.
pub fn read_any_questions(
    path: &Path,
    images_dir: &Path,
) -> Result<(Vec<VqaQuestion>, Option<Vec<AnnotatedQuestion>>), VqaDataError> {
    let text = read(path)?;
    if text.trim_start().starts_with('[') {
        read_lavis_questions(path, images_dir)
    } else {
        Ok((read_questions(path, images_dir)?, None))
    }
}

/// LAVIS's `answer_list.json`: a non-empty JSON list of strings.
pub fn read_answer_list(path: &Path) -> Result<Vec<String>, VqaDataError> {
    let list: Vec<String> =
        serde_json::from_str(&read(path)?).map_err(|e| VqaDataError::AnswerList {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if list.is_empty() {
        return Err(VqaDataError::AnswerList {
            path: path.to_path_buf(),
            message: "the list is empty".to_string(),
        });
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn reads_questions_and_matching_annotations() {
        let dir = tempfile::tempdir().unwrap();
        let q = write(
            dir.path(),
            "q.json",
            r#"{"data_subtype": "val2014", "questions": [
                {"image_id": 42, "question": "What color?", "question_id": 420},
                {"image_id": 7, "question": "How many?", "question_id": 70}]}"#,
        );
        let a = write(
            dir.path(),
            "a.json",
            r#"{"annotations": [
                {"question_id": 70, "image_id": 7, "answer_type": "number", "question_type": "how many",
                 "answers": [{"answer": "2", "answer_id": 1, "answer_confidence": "yes"}]},
                {"question_id": 420, "image_id": 42, "answer_type": "other", "question_type": "what color",
                 "answers": [{"answer": "red", "answer_id": 1, "answer_confidence": "yes"}]}]}"#,
        );
        let questions = read_questions(&q, Path::new("/coco/val2014")).unwrap();
        assert_eq!(questions.len(), 2);
        assert_eq!(
            questions[0].image,
            Path::new("/coco/val2014/COCO_val2014_000000000042.jpg")
        );
        let annotations = read_annotations(&a, &questions).unwrap();
        assert_eq!(annotations[0].question_id, 420);
        assert_eq!(annotations[0].answers, vec!["red".to_string()]);
        assert_eq!(annotations[1].answer_type, "number");
    }

    #[test]
    fn annotations_of_another_split_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let q = write(
            dir.path(),
            "q.json",
            r#"{"questions": [{"image_id": 1, "question": "Why?", "question_id": 10}]}"#,
        );
        let a = write(dir.path(), "a.json", r#"{"annotations": []}"#);
        let questions = read_questions(&q, Path::new("imgs")).unwrap();
        let err = read_annotations(&a, &questions).unwrap_err();
        assert!(err.to_string().contains("question_id 10"), "{err}");
        let bad = write(dir.path(), "bad.json", r#"{"images": []}"#);
        let err = read_questions(&bad, Path::new("imgs")).unwrap_err();
        assert!(matches!(err, VqaDataError::Format { .. }), "{err}");
    }

    #[test]
    fn reads_lavis_questions_with_and_without_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "vqa_val_eval.json",
            r#"[{"question_id": 5, "question": "What?", "image": "val2014/a.jpg", "answer": ["x", "y"]},
                {"question_id": "6", "question": "Who?", "image": "b.jpg", "answer": "z"}]"#,
        );
        let (questions, annotations) = read_any_questions(&path, Path::new("/img")).unwrap();
        assert_eq!(questions[0].image, Path::new("/img/val2014/a.jpg"));
        assert_eq!(questions[1].question_id, 6);
        let annotations = annotations.unwrap();
        assert_eq!(annotations[0].answers, vec!["x", "y"]);
        assert_eq!(annotations[1].answers, vec!["z"]);

        let test = write(
            dir.path(),
            "test.json",
            r#"[{"question_id": 1, "question": "Q?", "image": "c.jpg"}]"#,
        );
        let (questions, annotations) = read_any_questions(&test, Path::new("i")).unwrap();
        assert_eq!(questions.len(), 1);
        assert!(annotations.is_none());

        let bad = write(
            dir.path(),
            "bad.json",
            r#"[{"question_id": -1, "question": "Q?", "image": "c.jpg"}]"#,
        );
        let err = read_any_questions(&bad, Path::new("i")).unwrap_err();
        assert!(err.to_string().contains("entry 0"), "{err}");
    }

    #[test]
    fn answer_list_must_be_a_non_empty_list_of_strings() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(dir.path(), "a.json", r#"["yes", "no"]"#);
        assert_eq!(read_answer_list(&good).unwrap(), vec!["yes", "no"]);
        let empty = write(dir.path(), "e.json", "[]");
        assert!(read_answer_list(&empty)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        let missing = read_answer_list(&dir.path().join("none.json")).unwrap_err();
        assert!(matches!(missing, VqaDataError::Io { .. }), "{missing}");
    }
}
