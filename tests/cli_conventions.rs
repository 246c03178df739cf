//! Command-line conventions: `-V` with the git revision and CUDA support, shell completions,
//! `--model`/`--limit` on the commands that run a model, command options listed apart from the
//! global ones, `--set` on both sides of the command, `RUST_LOG`/`VLMRUN_LOG`, a CPU build that
//! says nothing about CUDA unless asked, and progress lines without a terminal (a UTC timestamp, the
//! rate in its unit, the elapsed time; a warning emitted mid-run on a line of its own).

use assert_cmd::Command;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn vlmrun() -> Command {
    let mut cmd = Command::cargo_bin("vlmrun").unwrap();
    cmd.current_dir(ROOT)
        .env(
            "VLMRUN_CUDA_BINARY",
            Path::new(ROOT).join("target/no-such-companion"),
        )
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("VLMRUN_LOG")
        .env_remove("RUST_LOG")
        .env_remove("VLMRUN_CONFIG");
    cmd
}

fn output(cmd: &mut Command) -> (Option<i32>, String, String) {
    let output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        stderr,
    )
}

fn image() -> String {
    Path::new(ROOT)
        .join("tests/fixtures/images/coffee.png")
        .display()
        .to_string()
}

#[test]
fn version_names_the_git_revision_and_cuda_support() {
    let (code, stdout, _) = output(vlmrun().arg("-V"));
    assert_eq!(code, Some(0));
    assert!(
        stdout.starts_with(&format!("vlmrun {} (git ", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    if cfg!(feature = "cuda") {
        assert!(stdout.contains("CUDA compiled in"), "{stdout}");
    } else {
        assert!(stdout.contains("CUDA not compiled in"), "{stdout}");
    }
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(ROOT)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string());
    match head {
        // The binary may be a commit behind a test that runs mid-commit; it is a real revision.
        Some(head) if !head.is_empty() => {
            let rev = stdout
                .split("(git ")
                .nth(1)
                .and_then(|rest| rest.split(';').next())
                .unwrap_or("");
            let hex = rev.trim_end_matches("-dirty");
            assert_eq!(hex.len(), 12, "{stdout}");
            assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{stdout}");
        }
        _ => assert!(stdout.contains("(git unknown"), "{stdout}"),
    }
}

#[test]
fn completions_for_each_shell() {
    for (shell, marker) in [
        ("bash", "_vlmrun()"),
        ("zsh", "#compdef vlmrun"),
        ("fish", "complete -c vlmrun"),
    ] {
        let (code, stdout, stderr) = output(vlmrun().args(["completions", shell]));
        assert_eq!(code, Some(0), "{shell}: {stderr}");
        assert!(stdout.contains(marker), "{shell}: {stdout}");
        assert!(stdout.contains("caption"), "{shell} completes subcommands");
    }
    // No configuration is read: a broken one does not matter.
    let (code, stdout, _) = output(
        vlmrun()
            .env("VLMRUN_CONFIG", "/no/such/config.yaml")
            .args(["completions", "bash"]),
    );
    assert_eq!(code, Some(0));
    assert!(!stdout.is_empty());
    let (code, _, stderr) = output(vlmrun().args(["completions", "tcsh"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("bash"), "lists the shells: {stderr}");
}

#[test]
fn help_lists_command_options_apart_from_global_ones() {
    let (code, stdout, _) = output(vlmrun().args(["caption", "--help"]));
    assert_eq!(code, Some(0));
    let global = stdout
        .find("Global options:")
        .expect("a Global options heading");
    let model = stdout.find("--model").unwrap();
    let set = stdout.find("--set").unwrap();
    assert!(model < global && global < set, "{stdout}");
}

#[test]
fn baseline_takes_model_and_limit() {
    let out = tempfile::tempdir().unwrap();
    let (code, _, stderr) = output(vlmrun().args([
        "--quiet",
        "--device",
        "cpu",
        "--set",
        &format!("output.dir={}", out.path().display()),
        "baseline",
        "--fresh",
        "--model",
        "models/tiny-blip",
        "--limit",
        "2",
    ]));
    assert_eq!(code, Some(0), "{stderr}");
    let predictions = std::fs::read_to_string(out.path().join("predictions.jsonl")).unwrap();
    assert_eq!(predictions.lines().count(), 2, "{predictions}");
    let resolved = std::fs::read_to_string(out.path().join("resolved-config.yaml")).unwrap();
    assert!(resolved.contains("limit: 2  # --limit"), "{resolved}");
    assert!(
        resolved.contains("source: models/tiny-blip  # --model"),
        "{resolved}"
    );

    let (code, _, stderr) = output(vlmrun().args([
        "--device",
        "cpu",
        "--set",
        &format!("output.dir={}", out.path().display()),
        "baseline",
        "--model",
        "./no-such-model",
    ]));
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("./no-such-model"), "{stderr}");
}

#[test]
fn rust_log_and_vlmrun_log_set_the_log_level() {
    let image = image();
    let args = ["--device", "cpu", "caption", image.as_str()];
    let info_line = "device cpu -> cpu";
    let (code, _, quiet) = output(vlmrun().args(args));
    assert_eq!(code, Some(0), "{quiet}");
    assert!(
        !quiet.contains(info_line),
        "default is warnings only: {quiet}"
    );
    let (_, _, verbose) = output(vlmrun().env("RUST_LOG", "vlmrun=info").args(args));
    assert!(verbose.contains(info_line), "RUST_LOG honoured: {verbose}");
    let (_, _, own) = output(
        vlmrun()
            .env("RUST_LOG", "vlmrun=info")
            .env("VLMRUN_LOG", "error")
            .args(args),
    );
    assert!(!own.contains(info_line), "VLMRUN_LOG wins: {own}");
    let (code, _, bad) = output(vlmrun().env("RUST_LOG", "vlmrun=loud").args(args));
    assert_eq!(code, Some(0));
    assert!(
        bad.contains("RUST_LOG=vlmrun=loud is not a log filter"),
        "{bad}"
    );
}

#[test]
fn the_cpu_build_says_nothing_about_cuda_unless_asked() {
    if cfg!(feature = "cuda") {
        return;
    }
    let image = image();
    let (code, stdout, stderr) = output(vlmrun().args(["--device", "auto", "caption", &image]));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.lines().count(), 1);
    assert!(!stderr.contains("CUDA"), "{stderr}");
    // Asked (-v): it says why it runs on the CPU.
    let (_, _, verbose) = output(vlmrun().args(["-v", "--device", "auto", "caption", &image]));
    assert!(verbose.contains("using the CPU because"), "{verbose}");
}

#[test]
fn sets_before_and_after_the_command_all_apply() {
    // clap alone would keep only the ones after `config` (clap-rs/clap#1570).
    let (code, stdout, stderr) = output(vlmrun().args([
        "--set",
        "seed=7",
        "config",
        "--set",
        "generation.num_beams=3",
        "--set=seed=8",
    ]));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("num_beams: 3  # --set"), "{stdout}");
    // Both seeds were applied, in order: the last wins.
    assert!(stdout.contains("seed: 8  # --set seed=8"), "{stdout}");
}

#[test]
fn caption_says_which_model_it_used_and_its_kind() {
    let image = image();
    for (model, kind) in [
        ("models/demo-blip", "kind demo:"),
        ("models/tiny-blip", "kind random:"),
    ] {
        let (code, stdout, stderr) =
            output(vlmrun().args(["--device", "cpu", "caption", "--model", model, &image]));
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        let line = stderr
            .lines()
            .find(|line| line.starts_with("model: "))
            .unwrap_or_else(|| panic!("no model line in {stderr}"));
        assert!(line.starts_with(&format!("model: {model} ")), "{line}");
        assert!(line.contains(kind), "{line}");
    }
    // --quiet: only the caption.
    let (_, _, quiet) = output(vlmrun().args(["--quiet", "--device", "cpu", "caption", &image]));
    assert!(!quiet.contains("model: "), "{quiet}");
}

/// `2026-12-03T13:05:09Z` at the start of `line`: the rest of the line.
fn after_timestamp(line: &str) -> Option<&str> {
    let (stamp, rest) = line.split_once(' ')?;
    let b = stamp.as_bytes();
    let shaped = stamp.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
        && stamp
            .chars()
            .enumerate()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19].contains(&i) || c.is_ascii_digit());
    shaped.then_some(rest)
}

#[test]
fn progress_lines_without_a_terminal_carry_time_rate_and_elapsed_and_warnings_stand_alone() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    for stem in ["astronaut", "coffee", "rocket"] {
        std::fs::copy(
            Path::new(ROOT).join(format!("tests/fixtures/images/{stem}.png")),
            images.join(format!("{stem}.png")),
        )
        .unwrap();
    }
    // Sorted between the good ones: its warning comes while the run is under way.
    std::fs::write(images.join("broken.png"), b"not a png").unwrap();
    let (code, _, stderr) = output(vlmrun().args([
        "--device",
        "cpu",
        "--set",
        "data.source=folder",
        "--set",
        &format!("data.path={}", images.display()),
        "--set",
        &format!("output.dir={}", dir.path().join("out").display()),
        "--set",
        "generation.batch_size=1",
        "baseline",
    ]));
    assert_eq!(code, Some(3), "completed with one failure: {stderr}");
    let progress: Vec<&str> = stderr.lines().filter(|l| l.contains("progress:")).collect();
    assert!(progress.len() >= 2, "the first and the last: {stderr}");
    for line in &progress {
        let rest = after_timestamp(line).unwrap_or_else(|| panic!("no timestamp: {line}"));
        assert!(rest.starts_with("progress: "), "{line}");
        assert!(rest.contains(" images, "), "{line}");
        let rate = rest.split(", ").nth(1).unwrap();
        let (number, unit) = rate.split_once(' ').unwrap();
        assert!(number.parse::<f64>().unwrap() > 0.0, "{line}");
        assert_eq!(unit, "images/s", "{line}");
        assert!(rest.contains(", elapsed "), "{line}");
        assert!(rest.contains(", ETA "), "{line}");
    }
    assert!(
        progress.last().unwrap().contains("progress: 4/4 images"),
        "{stderr}"
    );
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("broken.png"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    let warning = after_timestamp(warnings[0]).unwrap_or_else(|| panic!("{stderr}"));
    assert!(warning.trim_start().starts_with("WARN "), "{warning}");
    assert!(!warning.contains("progress:"), "{warning}");
}
