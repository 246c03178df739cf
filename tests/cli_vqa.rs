//! `vlmrun vqa` end to end (decode, resize, question tokenization, model, generation, decode) on
//! the tiny random VQA model against transformers' ids (tests/fixtures/vqa/expected.json), greedy
//! and beam, several images in one batch; then the bad inputs: a captioning checkpoint (exit 4), a
//! question longer than the positions (exit 2), an unreadable image among good ones (exit 3).

use assert_cmd::Command;
use serde_json::Value;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const MODEL: &str = "models/tiny-blip-vqa";

fn expected() -> Value {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("tests/fixtures/vqa/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn vqa(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args(["--device", "cpu", "--precision", "f32", "vqa"])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

fn image(stem: &str) -> String {
    format!("tests/fixtures/images/{stem}.png")
}

/// The batch-1 transformers case for (stem, question, setting).
fn case<'a>(expected: &'a Value, stem: &str, question: &str, setting: &str) -> &'a Value {
    expected["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["image"] == stem
                && c["question"] == question
                && c["setting"] == setting
                && c["batched"] == false
        })
        .unwrap()
}

#[test]
fn json_lines_match_transformers_greedy_and_beam() {
    let expected = expected();
    let stems = ["astronaut", "chelsea", "coffee", "rocket"];
    let images: Vec<String> = stems.iter().map(|s| image(s)).collect();
    for (setting, flags) in [
        (
            "greedy",
            ["--beams", "1", "--max-length", "20", "--min-length", "0"],
        ),
        (
            "beam3_lavis",
            ["--beams", "3", "--max-length", "10", "--min-length", "1"],
        ),
    ] {
        for question in expected["questions"].as_array().unwrap() {
            let question = question.as_str().unwrap();
            let mut args = vec!["--model", MODEL, "--json", "--question", question];
            args.extend(flags);
            args.extend(images.iter().map(String::as_str));
            let (code, stdout, stderr) = vqa(&args);
            assert_eq!(code, Some(0), "{stderr}");
            let lines: Vec<Value> = stdout
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines.len(), stems.len());
            for (line, (stem, path)) in lines.iter().zip(stems.iter().zip(&images)) {
                let want = case(&expected, stem, question, setting);
                assert_eq!(line["image"], path.as_str());
                assert_eq!(line["question"], question);
                assert_eq!(
                    line["token_ids"], want["token_ids"],
                    "{stem} {question} {setting}"
                );
                assert_eq!(line["answer"], want["answer"]);
            }
        }
    }
}

#[test]
fn text_mode_prints_one_answer_per_image_and_reports_bad_images() {
    let expected = expected();
    let question = expected["questions"][0].as_str().unwrap();
    let bad = "tests/fixtures/does-not-exist.png";
    let good = image("coffee");
    let (code, stdout, stderr) = vqa(&[
        "--model",
        MODEL,
        "--question",
        question,
        "--beams",
        "1",
        "--max-length",
        "20",
        "--min-length",
        "0",
        &good,
        bad,
    ]);
    assert_eq!(code, Some(3), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    let want = case(&expected, "coffee", question, "greedy");
    assert_eq!(lines[0], want["answer"].as_str().unwrap());
    assert!(
        lines[1].starts_with("error: ") && lines[1].contains(bad),
        "{}",
        lines[1]
    );
}

#[test]
fn a_captioning_checkpoint_is_refused_with_exit_4() {
    let (code, stdout, stderr) = vqa(&[
        "--model",
        "models/tiny-blip",
        "--question",
        "what is it?",
        &image("coffee"),
    ]);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("BlipForConditionalGeneration"), "{stderr}");
    assert!(stderr.contains("BlipForQuestionAnswering"), "{stderr}");
}

#[test]
fn a_question_longer_than_the_positions_is_a_usage_error() {
    // The tiny model has 64 positions.
    let question = "is it red ".repeat(30);
    let (code, stdout, stderr) =
        vqa(&["--model", MODEL, "--question", &question, &image("coffee")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("max_position_embeddings"), "{stderr}");
}

#[test]
fn a_vqa_checkpoint_is_refused_by_caption_with_exit_4() {
    let output = Command::cargo_bin("vlmrun")
        .unwrap()
        .current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args([
            "--device",
            "cpu",
            "caption",
            "--model",
            MODEL,
            &image("coffee"),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("BlipForQuestionAnswering") && stderr.contains("vlmrun vqa"),
        "{stderr}"
    );
}

#[test]
fn a_vqav2_questions_file_gives_the_submission_and_the_official_accuracy() {
    let expected = expected();
    let question = expected["questions"][0].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("val2014");
    std::fs::create_dir(&images).unwrap();
    for (id, stem) in [(1, "astronaut"), (2, "coffee")] {
        // The decoder reads the format from the bytes, so a PNG under COCO's .jpg name is fine.
        std::fs::copy(
            Path::new(ROOT).join(image(stem)),
            images.join(format!("COCO_val2014_{id:012}.jpg")),
        )
        .unwrap();
    }
    let questions = serde_json::json!({"data_subtype": "val2014", "questions": [
        {"image_id": 1, "question": question, "question_id": 10},
        {"image_id": 2, "question": question, "question_id": 20},
        {"image_id": 3, "question": question, "question_id": 30},
    ]});
    let answer = |stem| {
        let text = case(&expected, stem, question, "greedy")["answer"]
            .as_str()
            .unwrap();
        vlmrun::metrics::vqa::normalize_prediction(text)
    };
    // q10: 4 of 10 humans gave the model's answer (accuracy 1); q20: 1 of 10 (accuracy 0.3).
    let humans = |right: String, n: usize| -> Vec<Value> {
        (0..10)
            .map(|i| serde_json::json!({"answer": if i < n { right.clone() } else { "no".to_string() }, "answer_id": i + 1}))
            .collect()
    };
    let annotations = serde_json::json!({"annotations": [
        {"question_id": 10, "image_id": 1, "answer_type": "other", "question_type": "what is", "answers": humans(answer("astronaut"), 4)},
        {"question_id": 20, "image_id": 2, "answer_type": "other", "question_type": "what is", "answers": humans(answer("coffee"), 1)},
        {"question_id": 30, "image_id": 3, "answer_type": "yes/no", "question_type": "is", "answers": humans("yes".into(), 10)},
    ]});
    let qfile = dir.path().join("questions.json");
    let afile = dir.path().join("annotations.json");
    std::fs::write(&qfile, questions.to_string()).unwrap();
    std::fs::write(&afile, annotations.to_string()).unwrap();
    let out = dir.path().join("submission.json");
    let (code, stdout, stderr) = vqa(&[
        "--model",
        MODEL,
        "--beams",
        "1",
        "--max-length",
        "20",
        "--min-length",
        "0",
        "--questions",
        qfile.to_str().unwrap(),
        "--annotations",
        afile.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    // Image 3 does not exist: its question is named and left out, the others are answered.
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("question 30"), "{stderr}");
    let submission: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let rows = submission.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["question_id"], 10);
    assert_eq!(
        rows[1]["answer"],
        case(&expected, "coffee", question, "greedy")["answer"]
    );
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    let overall = summary["accuracy"]["overall"].as_f64().unwrap();
    assert!((overall - 65.0).abs() < 1e-9, "{summary}");
    assert_eq!(summary["answered"], 2);
}

#[test]
fn annotations_of_another_split_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let qfile = dir.path().join("q.json");
    let afile = dir.path().join("a.json");
    std::fs::write(
        &qfile,
        r#"{"questions": [{"image_id": 1, "question": "why?", "question_id": 5}]}"#,
    )
    .unwrap();
    std::fs::write(&afile, r#"{"annotations": []}"#).unwrap();
    let out = dir.path().join("s.json");
    let (code, _, stderr) = vqa(&[
        "--model",
        MODEL,
        "--questions",
        qfile.to_str().unwrap(),
        "--annotations",
        afile.to_str().unwrap(),
        "--images",
        dir.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(5), "{stderr}");
    assert!(stderr.contains("question_id 5"), "{stderr}");
    assert!(!out.exists());
}
