//! `vlmrun doctor`: the environment checks the Python guide asked users to do by hand (driver, CUDA
//! version, GPU, arch list, bf16, a real computation on the device, model files), each reported as
//! `ok | warn | fail` with a one-line remedy, as text or as a stable JSON document (docs/doctor.md).
//! A `.gguf` model source is inspected by [`gguf`].

mod cpu;
pub mod gguf;

use std::path::Path;

use candle_core::DType;
use serde::Serialize;

use crate::config::Config;
use crate::device::smoke::{self, half_dtype_to_test};
use crate::device::{
    self, arch_coverage, build_info, ArchCoverage, CudaAvailability, DriverFacts, GpuFacts,
    SystemFacts,
};
use crate::hub;
use crate::models::blip::gguf::is_gguf_path;
use crate::models::blip::BlipWeights;
use crate::models::label::{self, ModelKind};

/// Version of the JSON document's layout; bumped on any incompatible change.
pub const SCHEMA: &str = "vlmrun.doctor/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub message: String,
    /// What to do about a warn or fail (absent when ok).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BinaryInfo {
    pub version: String,
    pub git_rev: String,
    pub cuda: CudaAvailability,
}

#[derive(Debug, Clone, Serialize)]
pub struct GpuEntry {
    #[serde(flatten)]
    pub facts: GpuFacts,
    pub bf16: bool,
    /// `native`, `ptx_jit` or `not_covered`; absent for a CPU build.
    pub arch_coverage: Option<ArchCoverage>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceEntry {
    pub requested: String,
    pub resolved: Option<String>,
    pub fallback_reason: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PrecisionEntry {
    pub requested: String,
    pub resolved: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelEntry {
    pub source: String,
    pub revision: String,
    pub dir: Option<String>,
    pub missing: Vec<String>,
    pub error: Option<String>,
    /// Why loading would refuse the files that are there (truncated weights, a tensor that is not
    /// a float, a NaN or infinite value), naming the file and tensor; null when they pass.
    pub invalid: Option<String>,
    /// What the header of a `.gguf` source says (null for a directory or hub id, and when the
    /// file's metadata could not be read).
    pub gguf: Option<gguf::GgufEntry>,
    /// `random` or `demo` when the directory's `vlmrun-model.json` labels it so (`models::label`);
    /// null for an unlabelled model.
    pub kind: Option<ModelKind>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheEntry {
    pub dir: String,
    pub chosen_by: String,
    pub offline: bool,
}

/// The whole report (`vlmrun doctor --json` prints exactly this).
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    pub schema: String,
    pub vlmrun: BinaryInfo,
    pub driver: Option<DriverFacts>,
    pub driver_error: Option<String>,
    pub gpus: Vec<GpuEntry>,
    pub device: DeviceEntry,
    pub precision: PrecisionEntry,
    pub smoke: Vec<smoke::SmokeResult>,
    pub hf_cache: CacheEntry,
    pub model: ModelEntry,
    pub checks: Vec<Check>,
    /// True when the configured device works; the exit code is 0 exactly then, else 2.
    pub usable: bool,
}

/// Runs every check for `config`.
pub fn run(config: &Config, facts: &SystemFacts, cuda: &CudaAvailability) -> DoctorReport {
    let mut checks = Vec::new();
    let built = match cuda {
        CudaAvailability::Compiled(build) => Some(build.clone()),
        _ => None,
    };
    checks.push(binary_check(cuda));
    checks.push(cpu::cpu_check());
    checks.extend(driver_checks(facts, built.as_ref()));

    let built_cc = built
        .as_ref()
        .and_then(|build| build_info::parse_compute_cap(&build.compute_cap));
    let gpus: Vec<GpuEntry> = facts
        .gpus
        .iter()
        .map(|gpu| GpuEntry {
            facts: gpu.clone(),
            bf16: gpu.compute_capability >= (8, 0),
            arch_coverage: built_cc.map(|cc| arch_coverage(gpu.compute_capability, cc)),
        })
        .collect();
    for gpu in &gpus {
        checks.push(gpu_check(gpu, built_cc));
    }
    for error in &facts.gpu_errors {
        checks.push(Check {
            name: "gpu".into(),
            status: Status::Warn,
            message: error.clone(),
            remedy: Some("check `nvidia-smi`".into()),
        });
    }

    let mut device_entry = DeviceEntry {
        requested: config.device.to_string(),
        resolved: None,
        fallback_reason: None,
        error: None,
    };
    let mut precision_entry = PrecisionEntry {
        requested: config.precision.to_string(),
        resolved: None,
        reason: None,
    };
    let mut smoke_results = Vec::new();
    let mut usable = false;
    match device::activate_quietly(config.device, config.precision, facts, cuda) {
        Ok(active) => {
            device_entry.resolved = Some(device::describe_target(&active.plan.target));
            device_entry.fallback_reason = active.plan.fallback_reason.clone();
            precision_entry.resolved = Some(active.precision.dtype.as_str().to_string());
            precision_entry.reason = Some(active.precision.reason.clone());
            checks.push(Check {
                name: "device".into(),
                status: if active.plan.fallback_reason.is_some() {
                    Status::Warn
                } else {
                    Status::Ok
                },
                message: match &active.plan.fallback_reason {
                    Some(reason) => format!("{} -> cpu, because {reason}", config.device),
                    None => format!(
                        "{} -> {}",
                        config.device,
                        device::describe_target(&active.plan.target)
                    ),
                },
                remedy: active.plan.fallback_reason.as_ref().map(|_| {
                    "set device: cpu to silence this, or fix CUDA (see the failing lines above)"
                        .into()
                }),
            });
            checks.push(Check {
                name: "precision".into(),
                status: Status::Ok,
                message: format!(
                    "{} -> {} ({})",
                    config.precision,
                    active.precision.dtype.as_str(),
                    active.precision.reason
                ),
                remedy: None,
            });
            let half = half_dtype_to_test(active.precision.dtype, &active.plan.target);
            let mut all_passed = true;
            for dtype in [DType::F32, half] {
                let (check, result) = smoke_check(&active.device, dtype);
                all_passed &= check.status == Status::Ok;
                checks.push(check);
                smoke_results.extend(result);
            }
            usable = all_passed;
        }
        Err(err) => {
            let text = err.to_string();
            let (message, remedy) = split_fix(&text);
            device_entry.error = Some(message.clone());
            checks.push(Check {
                name: "device".into(),
                status: Status::Fail,
                message,
                remedy,
            });
        }
    }

    let (cache, chosen_by) = hub::cache_dir();
    let offline = config.model.offline || hub::offline_from_env();
    checks.push(Check {
        name: "hf-cache".into(),
        status: Status::Ok,
        message: format!(
            "{} (from {chosen_by}{})",
            cache.display(),
            if offline { ", offline" } else { "" }
        ),
        remedy: None,
    });
    let model = if is_gguf_path(Path::new(&config.model.source)) {
        let (model, model_checks) = gguf::inspect(config);
        checks.extend(model_checks);
        model
    } else {
        let model = model_entry(config);
        checks.push(model_check(&model));
        model
    };

    DoctorReport {
        schema: SCHEMA.to_string(),
        vlmrun: BinaryInfo {
            version: build_info::VERSION.to_string(),
            git_rev: build_info::GIT_REV.to_string(),
            cuda: cuda.clone(),
        },
        driver: facts.driver.as_ref().ok().cloned(),
        driver_error: facts.driver.as_ref().err().cloned(),
        gpus,
        device: device_entry,
        precision: precision_entry,
        smoke: smoke_results,
        hf_cache: CacheEntry {
            dir: cache.display().to_string(),
            chosen_by: chosen_by.to_string(),
            offline,
        },
        model,
        checks,
        usable,
    }
}

fn binary_check(cuda: &CudaAvailability) -> Check {
    let head = format!("vlmrun {} ({})", build_info::VERSION, build_info::GIT_REV);
    match cuda {
        CudaAvailability::Compiled(build) => Check {
            name: "binary".into(),
            status: Status::Ok,
            message: format!(
                "{head}, CUDA build: CUDA {}, kernels for compute capability {}",
                build.cuda_version, build.compute_cap
            ),
            remedy: None,
        },
        CudaAvailability::CompanionUnloadable {
            companion,
            loader_error,
        } => Check {
            name: "binary".into(),
            status: Status::Warn,
            message: format!(
                "{head}, CPU build; the CUDA build {} cannot start here: {loader_error}",
                companion.display()
            ),
            remedy: Some("install the NVIDIA driver and the CUDA 13 runtime libraries (README, section CUDA)".into()),
        },
        CudaAvailability::NotCompiled => Check {
            name: "binary".into(),
            status: Status::Warn,
            message: format!("{head}, CPU build (no CUDA kernels)"),
            remedy: Some("for GPUs: build with `--features cuda` or install vlmrun-cuda next to this binary (README, section CUDA)".into()),
        },
    }
}

fn driver_checks(facts: &SystemFacts, built: Option<&build_info::CudaBuild>) -> Vec<Check> {
    match &facts.driver {
        Err(reason) => vec![Check {
            name: "driver".into(),
            status: Status::Warn,
            message: reason.clone(),
            remedy: Some(
                "for GPUs: install the NVIDIA driver (R580+ for CUDA 13.0) and check `nvidia-smi`"
                    .into(),
            ),
        }],
        Ok(driver) => {
            let mut checks = vec![Check {
                name: "driver".into(),
                status: Status::Ok,
                message: format!(
                    "NVIDIA driver {}, supports CUDA up to {}.{}; {} GPU(s)",
                    driver.version,
                    driver.cuda_version.0,
                    driver.cuda_version.1,
                    facts.gpus.len()
                ),
                remedy: None,
            }];
            if let Some(build) = built {
                let ok = build_info::parse_version(&build.cuda_version)
                    .map(|needed| driver.cuda_version >= needed)
                    .unwrap_or(true);
                checks.push(Check {
                    name: "cuda-version".into(),
                    status: if ok { Status::Ok } else { Status::Fail },
                    message: format!(
                        "binary built with CUDA {}, driver supports {}.{}",
                        build.cuda_version, driver.cuda_version.0, driver.cuda_version.1
                    ),
                    remedy: (!ok).then(|| {
                        format!(
                            "upgrade the driver to one supporting CUDA {}, or rebuild with an older toolkit",
                            build.cuda_version
                        )
                    }),
                });
            }
            checks
        }
    }
}

fn gpu_check(gpu: &GpuEntry, built_cc: Option<(u32, u32)>) -> Check {
    let facts = &gpu.facts;
    let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
    let (cc_major, cc_minor) = facts.compute_capability;
    let mut message = format!(
        "cuda:{} {}, compute capability {cc_major}.{cc_minor}, memory {:.1} GiB total / {:.1} GiB free, bf16 {}",
        facts.index,
        facts.name,
        gib(facts.memory_total_bytes),
        gib(facts.memory_free_bytes),
        if gpu.bf16 { "yes" } else { "no (needs compute capability 8.0)" }
    );
    let (status, remedy) = match (gpu.arch_coverage, built_cc) {
        (Some(ArchCoverage::Native), _) => {
            message.push_str("; kernels compiled for it");
            (Status::Ok, None)
        }
        (Some(ArchCoverage::PtxJit), Some(cc)) => {
            message.push_str(&format!(
                "; kernels compiled for {}.{}, runs through PTX JIT",
                cc.0, cc.1
            ));
            (
                Status::Warn,
                Some(format!(
                    "rebuild with CUDA_COMPUTE_CAP={cc_major}{cc_minor} for native kernels"
                )),
            )
        }
        (Some(ArchCoverage::NotCovered), Some(cc)) => {
            message.push_str(&format!(
                "; kernels compiled for {}.{} cannot run on it",
                cc.0, cc.1
            ));
            (
                Status::Fail,
                Some(format!(
                    "rebuild with CUDA_COMPUTE_CAP={cc_major}{cc_minor}"
                )),
            )
        }
        _ => (Status::Ok, None),
    };
    Check {
        name: format!("gpu:{}", facts.index),
        status,
        message,
        remedy,
    }
}

fn smoke_check(device: &candle_core::Device, dtype: DType) -> (Check, Option<smoke::SmokeResult>) {
    let name = format!("smoke:{}", dtype.as_str());
    match smoke::run(device, dtype) {
        Ok(result) => {
            let message = format!(
                "matmul {}x{}x{} rel. error {:.2e} (tolerance {:.0e}), softmax max error {:.1e}, synchronised, {:.1} ms",
                96, 160, 128, result.matmul_rel_error, result.tolerance, result.softmax_max_abs_error, result.millis
            );
            let check = Check {
                name,
                status: if result.passed { Status::Ok } else { Status::Fail },
                message,
                remedy: (!result.passed).then(|| {
                    "the device computes wrong results: check the driver/toolkit match and the GPU's health (`nvidia-smi -q`)".to_string()
                }),
            };
            (check, Some(result))
        }
        Err(err) => (
            Check {
                name,
                status: Status::Fail,
                message: format!("the computation failed: {err}"),
                remedy: Some("see the device and gpu lines above; a kernel load error usually means an arch or PTX mismatch".into()),
            },
            None,
        ),
    }
}

fn model_entry(config: &Config) -> ModelEntry {
    let mut entry = ModelEntry {
        source: config.model.source.clone(),
        revision: config.model.revision.clone(),
        dir: None,
        missing: Vec::new(),
        error: None,
        invalid: None,
        gguf: None,
        kind: None,
    };
    match hub::resolve_model_dir(&config.model.source, &config.model.revision) {
        Ok(dir) => {
            entry.missing = hub::missing_files(&dir)
                .into_iter()
                .map(str::to_string)
                .collect();
            entry.dir = Some(dir.display().to_string());
            entry.kind = match label::read(&dir) {
                Ok(found) => found.map(|l| l.kind),
                Err(err) => {
                    tracing::warn!("{err}");
                    None
                }
            };
            if entry.missing.is_empty() {
                // The files as loading checks them: config, complete weights, float dtypes,
                // finite values.
                let checked = BlipWeights::locate(&dir).and_then(|weights| weights.verify());
                if let Err(err) = checked {
                    entry.invalid = Some(err.to_string());
                }
            }
        }
        Err(err) => entry.error = Some(err.to_string()),
    }
    entry
}

fn model_check(model: &ModelEntry) -> Check {
    if let Some(invalid) = &model.invalid {
        let (message, remedy) = split_fix(invalid);
        return Check {
            name: "model".into(),
            status: Status::Fail,
            message: format!("{}: {message}", model.source),
            remedy,
        };
    }
    match (&model.dir, &model.error) {
        (Some(dir), None) if model.missing.is_empty() => Check {
            name: "model".into(),
            status: Status::Ok,
            message: format!(
                "{} -> {dir}: config.json, weights and tokenizer.json present{}",
                model.source,
                match model.kind {
                    Some(ModelKind::Random) => "; random weights (vlmrun-model.json): gibberish captions by design",
                    Some(ModelKind::Demo) => "; the demo model (vlmrun-model.json): it captions only the sample images it memorised",
                    None => "",
                }
            ),
            remedy: None,
        },
        (Some(dir), None) => Check {
            name: "model".into(),
            status: Status::Warn,
            message: format!(
                "{} -> {dir}: missing {}",
                model.source,
                model.missing.join(", ")
            ),
            remedy: Some("see models/README.md for the expected layout".into()),
        },
        (_, error) => {
            let (message, remedy) = split_fix(error.as_deref().unwrap_or("model not found"));
            Check {
                name: "model".into(),
                status: Status::Warn,
                message,
                remedy,
            }
        }
    }
}

/// Splits "message\n  fix: remedy" into its two parts.
fn split_fix(text: &str) -> (String, Option<String>) {
    match text.split_once("\n  fix: ") {
        Some((message, fix)) => (message.to_string(), Some(fix.trim().to_string())),
        None => (text.to_string(), None),
    }
}

impl DoctorReport {
    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let mut out = String::from("vlmrun doctor\n");
        for check in &self.checks {
            let status = match check.status {
                Status::Ok => "ok",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            out.push_str(&format!(
                "  {status:<5} {:<13} {}\n",
                check.name, check.message
            ));
            if let Some(remedy) = &check.remedy {
                out.push_str(&format!("  {:<5} {:<13} fix: {remedy}\n", "", ""));
            }
        }
        out.push_str(&format!(
            "result: device {} is {}\n",
            self.device.requested,
            if self.usable { "usable" } else { "NOT usable" }
        ));
        out
    }
}
