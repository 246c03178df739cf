//! `vlmrun baseline` with `task: vqa` and `task: retrieval` on the tiny random models:
//! - vqa, LAVIS rank mode over a LAVIS VQA JSON: every answer is the one of the LAVIS-formula
//!   reference (tests/fixtures/vqa/expected.json `rank_cases`), the submission and the accuracy
//!   (hand-computed from the constructed human answers) in report.json; resume skips the answered
//!   questions and redoes a torn last line, other settings are refused naming the key;
//! - vqa, generate mode over a VQAv2 questions + annotations pair: transformers' greedy answers;
//!   with `vqa.question_first_token: enc` over a LAVIS file without answers: transformers' greedy
//!   ids with `[ENC]` first (tests/fixtures/make_vqa_enc_fixtures.py), no accuracy;
//! - retrieval over tests/fixtures/retrieval/test.json: report.json's recall equals the reference;
//! - bad input: an unknown task, rank mode without an answer list, a missing answer list file,
//!   annotations of another split, a missing image and a too-long question among good questions,
//!   a retrieval image missing, retrieval.max_text_tokens past the model's positions.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::{json, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const STEMS: [&str; 4] = ["astronaut", "chelsea", "coffee", "rocket"];

fn baseline(sets: &[String], extra: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::cargo_bin("vlmrun").unwrap();
    cmd.current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args(["--device", "cpu", "--precision", "f32"]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    let output = cmd.arg("baseline").args(extra).output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

fn expected_vqa() -> Value {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("tests/fixtures/vqa/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn images_dir() -> String {
    Path::new(ROOT)
        .join("tests/fixtures/images")
        .display()
        .to_string()
}

/// How many of the 10 human answers of question `n` are the reference answer.
fn matches_of(n: usize) -> usize {
    n % 5
}

/// The official accuracy of one question with `m` of 10 answers equal to the prediction.
fn accuracy_of(m: usize) -> f64 {
    let with = |k: usize| (k as f64 / 3.0).min(1.0);
    ((10 - m) as f64 * with(m) + m as f64 * with(m.saturating_sub(1))) / 10.0
}

/// A LAVIS VQA file of the 12 (image, question) pairs of the VQA fixture, question ids
/// 100 * image + question, with 10 human answers of which `matches_of(n)` are the rank-mode
/// reference answer; and the answer list.
fn lavis_files(dir: &Path, expected: &Value) -> (PathBuf, PathBuf, Vec<(u64, String)>) {
    let mut entries = Vec::new();
    let mut want = Vec::new();
    for (n, case) in expected["rank_cases"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let stem = case["image"].as_str().unwrap();
        let qi = case["question"].as_u64().unwrap() as usize;
        let s = STEMS.iter().position(|x| *x == stem).unwrap();
        let id = (100 * s + qi) as u64;
        let answer = case["answer"].as_str().unwrap().to_string();
        let mut answers = vec![answer.clone(); matches_of(n)];
        answers.resize(10, "nothing like it".to_string());
        entries.push(json!({
            "question_id": id,
            "question": expected["questions"][qi],
            "image": format!("{stem}.png"),
            "answer": answers,
        }));
        want.push((id, answer));
    }
    let questions = dir.join("vqa_val_eval.json");
    std::fs::write(&questions, serde_json::to_string(&entries).unwrap()).unwrap();
    let list = dir.join("answer_list.json");
    std::fs::write(&list, expected["answer_list"].to_string()).unwrap();
    (questions, list, want)
}

fn rank_sets(questions: &Path, list: &Path, out: &Path) -> Vec<String> {
    vec![
        "task=vqa".into(),
        "model.source=models/tiny-blip-vqa".into(),
        format!("data.path={}", questions.display()),
        format!("data.image_root={}", images_dir()),
        "vqa.inference=rank".into(),
        format!("vqa.answer_list={}", list.display()),
        "vqa.num_ans_candidates=5".into(),
        "generation.batch_size=4".into(),
        format!("output.dir={}", out.display()),
    ]
}

#[test]
fn vqa_rank_mode_answers_scores_and_resumes() {
    let expected = expected_vqa();
    let dir = tempfile::tempdir().unwrap();
    let (questions, list, want) = lavis_files(dir.path(), &expected);
    let out = dir.path().join("run");
    let mut sets = rank_sets(&questions, &list, &out);

    // First the first 5 questions, then all 12: the rerun answers only the 7 others.
    sets.push("data.limit=5".into());
    let (code, stderr) = baseline(&sets, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    sets.pop();
    let (code, stderr) = baseline(&sets, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("resuming: 5 of 12"), "{stderr}");

    let submission = read_json(&out.join("submission.json"));
    let got: Vec<(u64, String)> = submission
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["question_id"].as_u64().unwrap(),
                e["answer"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, want);
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["schema"], "vlmrun.vqa/1");
    assert_eq!(report["status"], "complete");
    assert_eq!(report["counts"]["skipped"], 5);
    assert_eq!(report["counts"]["done"], 7);
    let accuracy = report["metrics"]["vqa_accuracy"]["overall"]
        .as_f64()
        .unwrap();
    let hand: f64 = (0..12).map(|n| accuracy_of(matches_of(n))).sum::<f64>() / 12.0 * 100.0;
    assert!((accuracy - hand).abs() < 1e-9, "{accuracy} vs {hand}");
    let lines = std::fs::read_to_string(out.join("answers.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 12);

    // report.html: every question once (earlier runs' included), worst first, each with its
    // official accuracy and its answer.
    let html =
        scraper::Html::parse_document(&std::fs::read_to_string(out.join("report.html")).unwrap());
    let row = scraper::Selector::parse("table.questions tbody tr.question").unwrap();
    let answer = scraper::Selector::parse("td.answer").unwrap();
    let rows: Vec<(u64, f64, String)> = html
        .select(&row)
        .map(|tr| {
            (
                tr.value().attr("data-id").unwrap().parse().unwrap(),
                tr.value().attr("data-accuracy").unwrap().parse().unwrap(),
                tr.select(&answer).next().unwrap().text().collect(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 12);
    assert!(rows.windows(2).all(|w| w[0].1 <= w[1].1), "{rows:?}");
    for (n, (id, answer)) in want.iter().enumerate() {
        let (_, got, shown) = rows.iter().find(|r| r.0 == *id).unwrap();
        assert!(
            (got - 100.0 * accuracy_of(matches_of(n))).abs() < 1e-9,
            "{id}: {got}"
        );
        assert_eq!(shown, answer);
    }

    // A crash mid-line: the torn last line is dropped and that question answered again.
    let torn = &lines[..lines.len() - 20];
    std::fs::write(out.join("answers.jsonl"), torn).unwrap();
    let (code, stderr) = baseline(&sets, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("resuming: 11 of 12"), "{stderr}");
    let again = std::fs::read_to_string(out.join("answers.jsonl")).unwrap();
    assert_eq!(again.lines().count(), 12);
    assert_eq!(read_json(&out.join("submission.json")), submission);
    let lines = again;

    // Other settings: refused, naming the key, nothing changed.
    let mut other = sets.clone();
    other.push("vqa.num_ans_candidates=4".into());
    let (code, stderr) = baseline(&other, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("vqa.num_ans_candidates"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(out.join("answers.jsonl")).unwrap(),
        lines
    );
}

#[test]
fn vqa_generate_mode_over_vqav2_files_matches_transformers_greedy() {
    let expected = expected_vqa();
    let dir = tempfile::tempdir().unwrap();
    // VQAv2 names images COCO_<subtype>_<id:012>.jpg: copies of the fixture PNGs (decoded by content).
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let mut questions = Vec::new();
    let mut annotations = Vec::new();
    let mut want = Vec::new();
    for (s, stem) in STEMS.iter().enumerate() {
        std::fs::copy(
            Path::new(ROOT).join(format!("tests/fixtures/images/{stem}.png")),
            images.join(format!("COCO_val2014_{:012}.jpg", s + 1)),
        )
        .unwrap();
        let question = expected["questions"][0].as_str().unwrap();
        let case = expected["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["image"] == *stem
                    && c["question"] == question
                    && c["setting"] == "greedy"
                    && c["batched"] == false
            })
            .unwrap();
        let answer = case["answer"].as_str().unwrap();
        questions.push(json!({"image_id": s + 1, "question": question, "question_id": s + 1}));
        annotations.push(
            json!({"question_id": s + 1, "image_id": s + 1, "answer_type": "other",
            "question_type": "what is",
            "answers": (0..10).map(|_| json!({"answer": answer})).collect::<Vec<_>>()}),
        );
        want.push(answer.to_string());
    }
    let qfile = dir.path().join("q.json");
    std::fs::write(
        &qfile,
        json!({"data_subtype": "val2014", "questions": questions}).to_string(),
    )
    .unwrap();
    let afile = dir.path().join("a.json");
    std::fs::write(&afile, json!({ "annotations": annotations }).to_string()).unwrap();
    let out = dir.path().join("run");
    let sets = vec![
        "task=vqa".to_string(),
        "model.source=models/tiny-blip-vqa".into(),
        format!("data.path={}", qfile.display()),
        format!("data.image_root={}", images.display()),
        format!("vqa.annotations={}", afile.display()),
        "generation.batch_size=1".into(),
        format!("output.dir={}", out.display()),
    ];
    let (code, stderr) = baseline(&sets, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let submission = read_json(&out.join("submission.json"));
    let got: Vec<&str> = submission
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["answer"].as_str().unwrap())
        .collect();
    assert_eq!(got, want);
    let report = read_json(&out.join("report.json"));
    let acc = &report["metrics"]["vqa_accuracy"];
    // The annotators all gave the model's raw answer; the official evaluation normalises the
    // prediction (punctuation, articles...) but not ten identical human answers, so the random
    // model's answers with punctuation miss: the report is the official accuracy of the
    // submission against these annotations.
    let parsed = vlmrun::data::vqa::read_questions(&qfile, &images).unwrap();
    let annotated = vlmrun::data::vqa::read_annotations(&afile, &parsed).unwrap();
    let predictions = parsed
        .iter()
        .zip(&want)
        .map(|(q, a)| (q.question_id, a.clone()))
        .collect();
    let official = vlmrun::metrics::vqa::vqa_accuracy(
        &predictions,
        &annotated,
        vlmrun::metrics::vqa::GroundTruth::Official,
    )
    .unwrap();
    assert_eq!(acc["overall"].as_f64().unwrap(), official.overall, "{acc}");
    assert!(official.overall > 0.0 && official.overall < 100.0);
    assert_eq!(
        acc["per_answer_type"]["other"].as_f64().unwrap(),
        official.per_answer_type["other"]
    );
}

#[test]
fn retrieval_report_matches_the_lavis_reference() {
    let reference = read_json(&Path::new(ROOT).join("tests/fixtures/retrieval/expected.json"));
    let dir = tempfile::tempdir().unwrap();
    for run in reference["runs"].as_array().unwrap() {
        let k = run["k_test"].as_u64().unwrap();
        let out = dir.path().join(format!("k{k}"));
        let sets = vec![
            "task=retrieval".to_string(),
            "model.source=models/tiny-blip-itm".into(),
            "data.source=lavis".into(),
            "data.path=tests/fixtures/retrieval/test.json".into(),
            format!("data.image_root={}", images_dir()),
            format!("retrieval.k_test={k}"),
            "retrieval.max_text_tokens=12".into(),
            "generation.batch_size=3".into(),
            format!("output.dir={}", out.display()),
        ];
        let (code, stderr) = baseline(&sets, &[]);
        assert_eq!(code, Some(0), "{stderr}");
        let report = read_json(&out.join("report.json"));
        assert_eq!(report["schema"], "vlmrun.retrieval/1");
        assert_eq!(report["status"], "complete");
        for (key, want) in run["metrics"].as_object().unwrap() {
            let got = report["metrics"][key].as_f64().unwrap();
            assert!(
                (got - want.as_f64().unwrap()).abs() < 1e-9,
                "k {k} {key}: {got} vs {want}"
            );
        }
        assert_eq!(report["counts"]["texts"], 9);
        let ranks = read_json(&out.join("retrieval_ranks.json"));
        assert_eq!(ranks["images"].as_array().unwrap().len(), 4);
        assert_eq!(ranks["texts"].as_array().unwrap().len(), 9);
    }
}

#[test]
fn an_unknown_task_is_refused_naming_the_key_and_values() {
    let (code, stderr) = baseline(&["task=captioning".to_string()], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("`task`"), "{stderr}");
    assert!(stderr.contains("caption, vqa, retrieval"), "{stderr}");
}

#[test]
fn rank_mode_needs_an_answer_list_that_exists() {
    let expected = expected_vqa();
    let dir = tempfile::tempdir().unwrap();
    let (questions, list, _) = lavis_files(dir.path(), &expected);
    let out = dir.path().join("run");
    let sets: Vec<String> = rank_sets(&questions, &list, &out)
        .into_iter()
        .filter(|s| !s.starts_with("vqa.answer_list"))
        .collect();
    let (code, stderr) = baseline(&sets, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("vqa.answer_list"), "{stderr}");
    assert!(!out.exists(), "nothing may be written");

    let mut missing = sets.clone();
    missing.push(format!(
        "vqa.answer_list={}",
        dir.path().join("nope.json").display()
    ));
    let (code, stderr) = baseline(&missing, &[]);
    assert_eq!(code, Some(5), "{stderr}");
    assert!(stderr.contains("nope.json"), "{stderr}");
    assert!(!out.exists(), "nothing may be written");
}

#[test]
fn annotations_of_another_split_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let qfile = dir.path().join("q.json");
    std::fs::write(
        &qfile,
        r#"{"questions": [{"image_id": 1, "question": "what?", "question_id": 7}]}"#,
    )
    .unwrap();
    let afile = dir.path().join("a.json");
    std::fs::write(
        &afile,
        r#"{"annotations": [{"question_id": 8, "answers": [{"answer": "x"}]}]}"#,
    )
    .unwrap();
    let out = dir.path().join("run");
    let sets = vec![
        "task=vqa".to_string(),
        "model.source=models/tiny-blip-vqa".into(),
        format!("data.path={}", qfile.display()),
        format!("vqa.annotations={}", afile.display()),
        format!("output.dir={}", out.display()),
    ];
    let (code, stderr) = baseline(&sets, &[]);
    assert_eq!(code, Some(5), "{stderr}");
    assert!(stderr.contains("question_id 7"), "{stderr}");
    assert!(!out.exists(), "nothing may be written");
}

#[test]
fn a_missing_image_and_a_too_long_question_fail_alone() {
    let expected = expected_vqa();
    let dir = tempfile::tempdir().unwrap();
    let (questions, list, want) = lavis_files(dir.path(), &expected);
    let mut entries = read_json(&questions);
    let list_of = entries.as_array_mut().unwrap();
    list_of[1]["image"] = json!("no-such-image.png");
    list_of[4]["question"] = json!("is the man there? ".repeat(30));
    std::fs::write(&questions, entries.to_string()).unwrap();
    let out = dir.path().join("run");
    let (code, stderr) = baseline(&rank_sets(&questions, &list, &out), &[]);
    assert_eq!(code, Some(3), "{stderr}");
    let errors = std::fs::read_to_string(out.join("errors.jsonl")).unwrap();
    let errors: Vec<Value> = errors
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0]["question_id"], want[1].0);
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("no-such-image.png"),
        "{errors:?}"
    );
    assert_eq!(errors[1]["question_id"], want[4].0);
    assert!(
        errors[1]["error"]
            .as_str()
            .unwrap()
            .contains("max_position_embeddings"),
        "{errors:?}"
    );
    let submission = read_json(&out.join("submission.json"));
    assert_eq!(submission.as_array().unwrap().len(), 10);
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["status"], "complete_with_failures");
    assert_eq!(report["counts"]["failed"], 2);
}

#[test]
fn retrieval_refuses_a_missing_image_and_too_many_text_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let mut annotation = read_json(&Path::new(ROOT).join("tests/fixtures/retrieval/test.json"));
    annotation[2]["image"] = json!("gone.png");
    let file = dir.path().join("test.json");
    std::fs::write(&file, annotation.to_string()).unwrap();
    let out = dir.path().join("run");
    let sets = |path: &Path, extra: &str| {
        vec![
            "task=retrieval".to_string(),
            "model.source=models/tiny-blip-itm".into(),
            "data.source=lavis".into(),
            format!("data.path={}", path.display()),
            format!("data.image_root={}", images_dir()),
            extra.to_string(),
            format!("output.dir={}", out.display()),
        ]
    };
    let (code, stderr) = baseline(&sets(&file, "retrieval.k_test=3"), &[]);
    assert_eq!(code, Some(5), "{stderr}");
    assert!(stderr.contains("gone.png"), "{stderr}");
    assert!(!out.exists(), "nothing may be written");

    // The tiny model has 64 positions.
    let good = Path::new(ROOT).join("tests/fixtures/retrieval/test.json");
    let (code, stderr) = baseline(&sets(&good, "retrieval.max_text_tokens=65"), &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("retrieval.max_text_tokens"), "{stderr}");
    assert!(!out.join("report.json").exists());
}

#[test]
fn vqa_question_first_token_enc_matches_transformers_with_enc_first() {
    let reference = read_json(&Path::new(ROOT).join("tests/fixtures/vqa/enc_first.json"));
    let dir = tempfile::tempdir().unwrap();
    let cases = reference["cases"].as_array().unwrap();
    let entries: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(n, c)| {
            json!({
                "question_id": n,
                "question": c["question"],
                "image": format!("{}.png", c["image"].as_str().unwrap()),
            })
        })
        .collect();
    let questions = dir.path().join("q.json");
    std::fs::write(&questions, Value::Array(entries).to_string()).unwrap();
    let out = dir.path().join("run");
    let sets = vec![
        "task=vqa".to_string(),
        "model.source=models/tiny-blip-vqa".into(),
        format!("data.path={}", questions.display()),
        format!("data.image_root={}", images_dir()),
        "vqa.question_first_token=enc".into(),
        "generation.batch_size=1".into(),
        format!("output.dir={}", out.display()),
    ];
    let (code, stderr) = baseline(&sets, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let lines = std::fs::read_to_string(out.join("answers.jsonl")).unwrap();
    let records: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), cases.len());
    for (record, case) in records.iter().zip(cases) {
        assert_eq!(record["token_ids"], case["token_ids"], "{case}");
        assert_eq!(record["answer"], case["answer"], "{case}");
    }
    // A LAVIS file without answers (a test split): answered, no accuracy.
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["metrics"], Value::Null);
    assert_eq!(report["counts"]["answered"], 12);
}

/// A rank of a data-parallel run is refused for both tasks, saying why, before anything is read
/// or written.
#[test]
fn vqa_and_retrieval_refuse_to_run_as_a_rank_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    for (task, why) in [
        ("vqa", "sharding its questions is not built yet"),
        ("retrieval", "ranks every image against every text"),
    ] {
        let out = dir.path().join(task);
        let sets = vec![
            format!("task={task}"),
            format!("data.path={}", dir.path().join("absent.json").display()),
            format!("output.dir={}", out.display()),
        ];
        let (code, stderr) = baseline(&sets, &["--rank", "1", "--world-size", "2"]);
        assert_eq!(code, Some(2), "{task}: {stderr}");
        assert!(
            stderr.contains(&format!("task: {task} runs in one process")),
            "{stderr}"
        );
        assert!(stderr.contains(why), "{task}: {stderr}");
        assert!(!out.exists(), "{task}: nothing written");
    }
}

/// `quantization: q8_0` for VQA goes through the captioner's quantization path at load; on the
/// tiny model rank mode's 12 answers stay the dense model's (tests/blip_vqa_parity.rs measures
/// the agreement model-side), and the setting is part of the run's identity.
#[test]
fn vqa_rank_mode_runs_quantized_to_q8_0() {
    let expected = expected_vqa();
    let dir = tempfile::tempdir().unwrap();
    let (questions, list, want) = lavis_files(dir.path(), &expected);
    let out = dir.path().join("run");
    let mut sets = rank_sets(&questions, &list, &out);
    sets.push("quantization=q8_0".into());
    let (code, stderr) = baseline(&sets, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let submission = read_json(&out.join("submission.json"));
    let got: Vec<(u64, String)> = submission
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["question_id"].as_u64().unwrap(),
                e["answer"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, want);
    // Resuming the same directory dense is refused, naming the key.
    sets.pop();
    let (code, stderr) = baseline(&sets, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("quantization"), "{stderr}");
}
