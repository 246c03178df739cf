//! The binary outside the repository: an empty working directory, no config file. The built-in
//! defaults apply, the demo model and sample images are unpacked from the binary into the data
//! directory (VLMRUN_DATA_DIR here, so the test never writes into the real home), and a missing
//! local path is reported as one instead of being looked up on the hub.

use assert_cmd::Command;
use serde_json::Value;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

struct Outside {
    work: tempfile::TempDir,
    data: tempfile::TempDir,
}

impl Outside {
    fn new() -> Outside {
        Outside {
            work: tempfile::tempdir().unwrap(),
            data: tempfile::tempdir().unwrap(),
        }
    }

    fn vlmrun(&self) -> Command {
        let mut cmd = Command::cargo_bin("vlmrun").unwrap();
        cmd.current_dir(self.work.path())
            .env("VLMRUN_DATA_DIR", self.data.path())
            .env("VLMRUN_NO_CUDA_LAUNCH", "1")
            .env("VLMRUN_CUDA_BINARY", self.work.path().join("absent"))
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_HUB_CACHE", self.work.path().join("hf-cache"))
            .env_remove("VLMRUN_CONFIG")
            .env_remove("VLMRUN_LOG");
        cmd
    }

    fn unpacked_model(&self) -> std::path::PathBuf {
        self.data
            .path()
            .join(env!("CARGO_PKG_VERSION"))
            .join("models/demo-blip")
    }
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        stderr,
    )
}

#[test]
fn config_says_built_in_defaults_and_writes_nothing() {
    let outside = Outside::new();
    let (code, stdout, stderr) = run(outside.vlmrun().arg("config"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("config file: none, built-in defaults"),
        "{stdout}"
    );
    let model_line = stdout
        .lines()
        .find(|line| line.trim_start().starts_with("source:"))
        .unwrap();
    assert!(
        model_line.contains(&outside.unpacked_model().display().to_string()),
        "{model_line}"
    );
    assert!(model_line.contains("built into the binary"), "{model_line}");
    assert!(
        std::fs::read_dir(outside.data.path())
            .unwrap()
            .next()
            .is_none(),
        "`vlmrun config` unpacks nothing"
    );
}

#[test]
fn caption_works_from_an_empty_directory() {
    let outside = Outside::new();
    let image = Path::new(ROOT).join("tests/fixtures/images/chelsea.png");
    let (code, stdout, stderr) = run(outside
        .vlmrun()
        .args(["--device", "cpu", "caption"])
        .arg(&image));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    // The demo model was trained on the sample images: it captions this one with one of its
    // references (tests/fixtures/samples.jsonl), where the random tiny model prints gibberish.
    let chelsea = [
        "a tabby cat looking to the side",
        "an orange and brown cat sitting indoors",
        "close up of a striped cat's face",
    ];
    assert!(chelsea.contains(&stdout.trim()), "{stdout}");
    // The unpacked demo model is byte-identical to the repository's.
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vlmrun-model.json",
    ] {
        let unpacked = std::fs::read(outside.unpacked_model().join(file)).unwrap();
        let shipped = std::fs::read(Path::new(ROOT).join("models/demo-blip").join(file)).unwrap();
        assert!(unpacked == shipped, "{file} differs");
    }
    // Same caption as the repository's copy of the model gives.
    let mut inside = Command::cargo_bin("vlmrun").unwrap();
    inside
        .current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args(["--device", "cpu", "caption"])
        .arg(&image);
    let (_, inside_stdout, _) = run(&mut inside);
    assert_eq!(stdout, inside_stdout);
}

#[test]
fn doctor_is_usable_from_an_empty_directory() {
    let outside = Outside::new();
    let (code, stdout, stderr) = run(outside.vlmrun().args(["doctor", "--json"]));
    assert_eq!(code, Some(0), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let model = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["name"] == "model")
        .unwrap();
    assert_eq!(model["status"], "ok", "{model:#}");
    // The unpacked default is labelled as the demo model.
    let message = model["message"].as_str().unwrap();
    assert!(message.contains("the demo model"), "{message}");
    assert_eq!(report["model"]["kind"], "demo", "{:#}", report["model"]);
}

#[test]
fn baseline_runs_the_built_in_samples() {
    let outside = Outside::new();
    let (code, _, stderr) = run(outside.vlmrun().args([
        "--quiet",
        "--device",
        "cpu",
        "--set",
        "data.limit=3",
        "--set",
        "output.dir=out",
        "baseline",
    ]));
    assert_eq!(code, Some(0), "{stderr}");
    let predictions =
        std::fs::read_to_string(outside.work.path().join("out/predictions.jsonl")).unwrap();
    assert_eq!(predictions.lines().count(), 3, "{predictions}");
    assert!(predictions.contains("\"astronaut\""), "{predictions}");
    // The report names the demo model and labels it; its captions score above zero.
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(outside.work.path().join("out/report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["model"]["kind"], "demo", "{:#}", report["model"]);
    assert_eq!(
        report["model"]["source"],
        outside.unpacked_model().display().to_string()
    );
    assert!(report["metrics"]["cider"].as_f64().unwrap() > 1.0);
    let html = std::fs::read_to_string(outside.work.path().join("out/report.html")).unwrap();
    assert!(
        html.contains("id=\"model-caveat\""),
        "report.html has no caveat"
    );
}

#[test]
fn config_file_lookup_order() {
    let outside = Outside::new();
    let dir = outside.work.path();
    std::fs::create_dir_all(dir.join("configs")).unwrap();
    std::fs::write(dir.join("configs/config.yaml"), "seed: 1\n").unwrap();
    std::fs::write(dir.join("env.yaml"), "seed: 2\n").unwrap();
    std::fs::write(dir.join("flag.yaml"), "seed: 3\n").unwrap();
    let seed_of = |cmd: &mut Command| {
        let (code, stdout, stderr) = run(cmd);
        assert_eq!(code, Some(0), "{stderr}");
        let seed = stdout
            .lines()
            .find(|line| line.starts_with("seed:"))
            .unwrap()
            .to_string();
        let header = stdout.lines().next().unwrap().to_string();
        (seed, header)
    };
    let (seed, header) = seed_of(outside.vlmrun().arg("config"));
    assert!(seed.starts_with("seed: 1"), "{seed}");
    assert!(
        header.contains("found in the working directory"),
        "{header}"
    );
    let (seed, header) = seed_of(
        outside
            .vlmrun()
            .env("VLMRUN_CONFIG", "env.yaml")
            .arg("config"),
    );
    assert!(seed.starts_with("seed: 2"), "{seed}");
    assert!(header.contains("env.yaml (from VLMRUN_CONFIG)"), "{header}");
    let (seed, header) = seed_of(outside.vlmrun().env("VLMRUN_CONFIG", "env.yaml").args([
        "--config",
        "flag.yaml",
        "config",
    ]));
    assert!(seed.starts_with("seed: 3"), "{seed}");
    assert!(header.contains("flag.yaml (from --config)"), "{header}");
}

#[test]
fn a_missing_local_path_is_not_taken_for_a_hub_id() {
    let outside = Outside::new();
    let image = Path::new(ROOT).join("tests/fixtures/images/chelsea.png");
    for source in ["./my-model", "models/tiny-blip", "../elsewhere/model"] {
        let (code, stdout, stderr) = run(outside
            .vlmrun()
            .args(["--device", "cpu", "caption", "--model", source])
            .arg(&image));
        assert_eq!(code, Some(4), "{source}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(
            stderr.contains(&format!("model directory {source} not found")),
            "{stderr}"
        );
        assert!(stderr.contains("not looked up on the hub"), "{stderr}");
        assert!(!stderr.contains("Hugging Face cache"), "{stderr}");
    }
}
