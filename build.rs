//! Records build facts that `vlmrun doctor` reports: git revision, and for CUDA builds the toolkit
//! version and the GPU architecture the kernels were compiled for.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=CUDA_PATH");
    // Rebuild when HEAD moves: HEAD itself, the branch ref it points at, and the index (also in worktrees,
    // where .git is a file and the real paths come from `git rev-parse --git-path`).
    let mut watched = vec!["HEAD".to_string(), "index".to_string()];
    if let Some(branch) = run("git", &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = run("git", &["rev-parse", "--git-path", &name]) {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    let git_rev =
        run("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"])
        .map(|status| !status.is_empty())
        .unwrap_or(false);
    let git_rev = if dirty {
        format!("{git_rev}-dirty")
    } else {
        git_rev
    };
    println!("cargo:rustc-env=VLMRUN_GIT_REV={git_rev}");

    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        let nvcc = std::env::var("CUDA_PATH")
            .map(|root| format!("{root}/bin/nvcc"))
            .unwrap_or_else(|_| "nvcc".into());
        let version = run(&nvcc, &["--version"])
            .and_then(|text| {
                text.split("release ")
                    .nth(1)
                    .and_then(|rest| rest.split(',').next())
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        println!("cargo:rustc-env=VLMRUN_CUDA_VERSION={version}");
        // candle-kernels compiles for CUDA_COMPUTE_CAP when set, else for the GPU nvidia-smi reports.
        let cap = std::env::var("CUDA_COMPUTE_CAP").ok().or_else(|| {
            run(
                "nvidia-smi",
                &["--query-gpu=compute_cap", "--format=csv,noheader"],
            )
            .and_then(|text| text.lines().next().map(|l| l.trim().replace('.', "")))
        });
        println!(
            "cargo:rustc-env=VLMRUN_CUDA_COMPUTE_CAP={}",
            cap.unwrap_or_else(|| "unknown".into())
        );
    }
}

fn run(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}
