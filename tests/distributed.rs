//! Data-parallel `vlmrun baseline` end to end on the CPU with the tiny model: two rank processes on one
//! output directory merge to the captions of a single-process run; a killed or missing rank is named by
//! the merge (exit 3) and a rerun of it completes the run; a world-size change is a clear error.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Launcher variables a CI machine might carry; every command here starts without them.
const LAUNCHER_VARS: [&str; 12] = [
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "SLURM_PROCID",
    "SLURM_STEP_NUM_TASKS",
    "SLURM_LOCALID",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
];

fn vlmrun(out: &Path, sets: &[String]) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("vlmrun"));
    cmd.current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args(["--device", "cpu", "--set"])
        .arg(format!("output.dir={}", out.display()));
    for name in LAUNCHER_VARS {
        cmd.env_remove(name);
    }
    for set in sets {
        cmd.args(["--set", set]);
    }
    cmd
}

/// `vlmrun baseline` as rank `rank` of `world` (flags).
fn rank(out: &Path, sets: &[String], rank: usize, world: usize) -> Command {
    let mut cmd = vlmrun(out, sets);
    cmd.arg("baseline").args([
        "--rank",
        &rank.to_string(),
        "--world-size",
        &world.to_string(),
    ]);
    cmd
}

fn merge(out: &Path) -> Output {
    vlmrun(out, &[])
        .args(["merge", "--output"])
        .arg(out)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("whole JSON lines"))
        .collect()
}

/// id -> (caption, token ids).
fn captions(path: &Path) -> BTreeMap<String, (String, Value)> {
    lines(path)
        .into_iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                (
                    p["caption"].as_str().unwrap().to_string(),
                    p["token_ids"].clone(),
                ),
            )
        })
        .collect()
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A manifest of `count` items cycling through the sample images.
fn manifest(dir: &Path, count: usize) -> PathBuf {
    let mut images: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("tests/fixtures/images"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    images.sort();
    let text: String = (0..count)
        .map(|i| {
            format!(
                "{{\"id\": \"img{i}\", \"image\": \"{}\", \"references\": [\"a picture\"]}}\n",
                images[i % images.len()]
            )
        })
        .collect();
    let path = dir.join("data.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn two_ranks_merge_to_the_captions_of_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("single");
    let output = vlmrun(&single, &[]).arg("baseline").output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    // Rank 0 from flags, rank 1 from torchrun-style variables, started together.
    let out = dir.path().join("two");
    let rank0 = rank(&out, &[], 0, 2)
        .args(["--wait-timeout", "120"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rank1 = vlmrun(&out, &[])
        .arg("baseline")
        .env("RANK", "1")
        .env("WORLD_SIZE", "2")
        .output()
        .unwrap();
    assert_eq!(rank1.status.code(), Some(0), "{}", stderr(&rank1));
    let rank0 = rank0.wait_with_output().unwrap();
    assert_eq!(rank0.status.code(), Some(0), "{}", stderr(&rank0));

    // Each rank wrote its own round-robin shard; the merge equals the single-process run.
    let shard1: Vec<String> = lines(&out.join("predictions.rank-1.jsonl"))
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(shard1.len(), 6);
    let expected = captions(&single.join("predictions.jsonl"));
    assert_eq!(expected.len(), 12);
    assert_eq!(captions(&out.join("predictions.jsonl")), expected);
    let order: Vec<Value> = lines(&out.join("predictions.jsonl"))
        .iter()
        .map(|p| p["id"].clone())
        .collect();
    let single_order: Vec<Value> = lines(&single.join("predictions.jsonl"))
        .iter()
        .map(|p| p["id"].clone())
        .collect();
    assert_eq!(order, single_order, "dataset order");

    let report = json(&out.join("report.json"));
    assert_eq!(report["status"], "complete");
    assert_eq!(report["counts"]["done"], 12);
    assert_eq!(report["metrics"]["n_images"], 12);
    assert_eq!(
        report["metrics"]["cider"],
        json(&single.join("report.json"))["metrics"]["cider"]
    );
    let ranks = report["distributed"]["ranks"].as_array().unwrap();
    assert_eq!(ranks.len(), 2);
    for (k, entry) in ranks.iter().enumerate() {
        assert_eq!(entry["rank"], k);
        assert_eq!(entry["status"], "complete");
        assert_eq!(entry["counts"]["done"], 6);
        assert!(entry["timings"]["images_per_s"].as_f64().unwrap() > 0.0);
        assert!(!entry["host"].as_str().unwrap().is_empty());
        let done = json(&out.join(format!("rank-{k}.done.json")));
        assert_eq!(done["device"], "cpu");
        assert_eq!(done["world_size"], 2);
    }
    assert!(
        report["distributed"]["aggregate_images_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(json(&out.join("world.json"))["world_size"], 2);
    assert_eq!(json(&out.join("rank-1.done.json"))["launcher"], "torchrun");

    // A later `merge` of the same directory gives the same predictions.
    let again = merge(&out);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(captions(&out.join("predictions.jsonl")), expected);
}

#[test]
fn a_killed_rank_is_named_and_its_rerun_completes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = manifest(dir.path(), 200);
    let sets = [
        format!("data.path={}", data.display()),
        "generation.batch_size=1".to_string(),
    ];
    let out = dir.path().join("out");

    // Rank 1 dies (SIGKILL) partway through its shard; rank 0 has not run at all.
    let mut child = rank(&out, &sets, 1, 2)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let shard_file = out.join("predictions.rank-1.jsonl");
    let deadline = Instant::now() + Duration::from_secs(120);
    while lines(&shard_file).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = lines(&shard_file).len();
    assert!(
        (2..100).contains(&before),
        "killed mid-shard with {before} done"
    );
    assert!(!out.join("rank-1.done.json").exists());

    let output = merge(&out);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{message}");
    assert!(message.contains("2 of 2 shards incomplete"), "{message}");
    assert!(
        message.contains("rank 0: 100 of 100 items missing"),
        "{message}"
    );
    assert!(
        message.contains(&format!("rank 1: {} of 100 items missing", 100 - before)),
        "{message}"
    );
    assert!(message.contains("--rank 1 --world-size 2"), "{message}");
    assert!(!message.contains("--fresh"), "a rerun resumes: {message}");
    assert!(!out.join("predictions.jsonl").exists());
    assert_eq!(json(&out.join("report.json"))["status"], "incomplete");

    // The rerun of rank 1 resumes its shard; rank 0 then finds it done and merges.
    let output = rank(&out, &sets, 1, 2).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let done = json(&out.join("rank-1.done.json"));
    assert_eq!(done["status"], "complete");
    assert_eq!(done["counts"]["skipped"], before as u64);
    let output = rank(&out, &sets, 0, 2)
        .args(["--wait-timeout", "60"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let merged = lines(&out.join("predictions.jsonl"));
    let ids: Vec<String> = merged
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..200).map(|i| format!("img{i}")).collect();
    assert_eq!(ids, expected, "every item once, in dataset order");
    assert_eq!(json(&out.join("report.json"))["status"], "complete");
}

#[test]
fn rank_0_alone_times_out_naming_the_missing_rank() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let output = rank(&out, &[], 0, 2)
        .args(["--wait-timeout", "0"])
        .output()
        .unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{message}");
    assert!(
        message.contains("rank 1: 6 of 6 items missing (no rank-1.done.json"),
        "{message}"
    );
    assert!(message.contains("vlmrun merge --output"), "{message}");

    // Same directory, another world size: refused before anything is touched.
    let done_before = std::fs::read(out.join("rank-0.done.json")).unwrap();
    for world in [3, 1] {
        let mut cmd = if world == 1 {
            let mut cmd = vlmrun(&out, &[]);
            cmd.arg("baseline");
            cmd
        } else {
            rank(&out, &[], 0, world)
        };
        let output = cmd.output().unwrap();
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{message}");
        assert!(
            message.contains("world size 2") && message.contains(&format!("world size {world}")),
            "{message}"
        );
        assert!(message.contains("--fresh"), "{message}");
        assert!(!message.contains("panicked"), "{message}");
    }
    assert_eq!(
        std::fs::read(out.join("rank-0.done.json")).unwrap(),
        done_before
    );

    // --fresh with the new world size starts over.
    let output = rank(&out, &[], 0, 1).arg("--fresh").output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!out.join("world.json").exists());
    assert!(!out.join("rank-0.done.json").exists());
    assert_eq!(lines(&out.join("predictions.jsonl")).len(), 12);
}

#[test]
fn bad_launcher_variables_are_usage_errors_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for (vars, needle) in [
        (vec![("RANK", "x"), ("WORLD_SIZE", "2")], "RANK=\"x\""),
        (
            vec![("RANK", "2"), ("WORLD_SIZE", "2")],
            "RANK=2 but WORLD_SIZE=2",
        ),
        (vec![("WORLD_SIZE", "2")], "RANK is not set"),
    ] {
        let mut cmd = vlmrun(&out, &[]);
        cmd.arg("baseline");
        for (name, value) in vars {
            cmd.env(name, value);
        }
        let output = cmd.output().unwrap();
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{message}");
        assert!(message.contains(needle), "{needle:?} in {message}");
    }
    assert!(!out.exists(), "nothing written");
    let output = merge(&out);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert!(stderr(&output).contains("world.json"));
}

#[test]
fn a_rank_that_fails_after_joining_stops_rank_0_waiting_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Rank 1 asks for a GPU this (CPU) build cannot use: it fails after joining the run, and says so in
    // its done file (the device is not part of the run's identity, so the record counts).
    let output = rank(&out, &[], 1, 2)
        .args(["--device", "cuda"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let done = json(&out.join("rank-1.done.json"));
    assert_eq!(done["status"], "failed");
    assert_eq!(done["device"], "cuda:1", "cuda means the rank's GPU");
    assert!(done["error"].as_str().unwrap().contains("device cuda:1: "));

    // Rank 0 would wait 10 minutes for a silent rank; this one has reported, so it merges right away.
    let output = rank(&out, &[], 0, 2)
        .args(["--wait-timeout", "600"])
        .output()
        .unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{message}");
    assert!(
        message.contains("rank 1: 6 of 6 items missing (failed: "),
        "{message}"
    );
    let report = json(&out.join("report.json"));
    assert_eq!(report["distributed"]["ranks"][1]["status"], "failed");
}
