//! The device policy: turns `device: cuda|cuda:N|cpu|auto` and `precision: ...` into a concrete device and
//! dtype, or an error that says what is wrong and how to fix it. `plan` is pure (it decides from probed
//! facts, so every branch is testable without a GPU); `open` creates the candle device.

use std::path::PathBuf;

use candle_core::{DType, Device};
use serde::Serialize;

use super::build_info::{parse_compute_cap, parse_version, CudaBuild};
use super::probe::{GpuFacts, SystemFacts};
use crate::config::{DeviceSpec, PrecisionSpec};

/// What this process can do with CUDA.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CudaAvailability {
    /// This binary was compiled with CUDA kernels.
    Compiled(CudaBuild),
    /// This is the CPU build; a CUDA companion binary exists but cannot start here.
    CompanionUnloadable {
        companion: PathBuf,
        loader_error: String,
    },
    /// This is the CPU build and no CUDA companion was found.
    NotCompiled,
}

/// Where work will run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    Cpu,
    Cuda { index: usize, gpu: Option<GpuFacts> },
}

/// The decision for a run: the target, and why `auto` fell back to the CPU when it did.
#[derive(Debug, Clone, Serialize)]
pub struct DevicePlan {
    pub requested: String,
    pub target: Target,
    pub fallback_reason: Option<String>,
}

/// The precision a run uses and why.
#[derive(Debug, Clone, Serialize)]
pub struct PrecisionChoice {
    #[serde(serialize_with = "serialize_dtype")]
    pub dtype: DType,
    pub reason: String,
}

fn serialize_dtype<S: serde::Serializer>(dtype: &DType, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(dtype.as_str())
}

/// Why the requested device cannot be used. Each message names the cause and the remedy.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeviceError {
    #[error("device {requested}: this vlmrun binary was built without CUDA\n  fix: build with `cargo build --release --features cuda` (README, section CUDA) or install the vlmrun-cuda companion next to this binary; or use --device cpu / auto")]
    NotBuiltWithCuda { requested: String },

    #[error("device {requested}: the CUDA build {} cannot start on this machine: {loader_error}\n  fix: install the NVIDIA driver (it provides libcuda.so.1) and put the CUDA 13 runtime libraries on LD_LIBRARY_PATH (README, section CUDA); or use --device cpu / auto", companion.display())]
    CompanionUnloadable {
        requested: String,
        companion: PathBuf,
        loader_error: String,
    },

    #[error("device {requested}: no usable NVIDIA driver ({reason})\n  fix: install the NVIDIA driver (R580 or newer for CUDA 13.0) and check that `nvidia-smi` works; or use --device cpu / auto")]
    NoDriver { requested: String, reason: String },

    #[error("device {requested}: the NVIDIA driver {driver_version} supports CUDA up to {}.{}, but this binary was built with CUDA {built_cuda}\n  fix: upgrade the driver to one that supports CUDA {built_cuda} (R580+ for 13.0), or rebuild vlmrun with a toolkit no newer than {}.{}", driver_cuda.0, driver_cuda.1, driver_cuda.0, driver_cuda.1)]
    DriverTooOld {
        requested: String,
        driver_version: String,
        driver_cuda: (u32, u32),
        built_cuda: String,
    },

    #[error("device {requested}: the driver reports no GPU\n  fix: check `nvidia-smi` and CUDA_VISIBLE_DEVICES; or use --device cpu / auto")]
    NoGpu { requested: String },

    #[error("device {requested}: GPU index {index} is out of range, this machine has {count} GPU(s) (valid: cuda:0..cuda:{})\n  fix: pick an index from `vlmrun doctor`, and check CUDA_VISIBLE_DEVICES", count.saturating_sub(1))]
    IndexOutOfRange {
        requested: String,
        index: usize,
        count: usize,
    },

    #[error("device {requested}: {gpu} has compute capability {}.{}, but this binary's kernels were compiled for {}.{}\n  fix: rebuild with CUDA_COMPUTE_CAP={}{} (README, section CUDA)", gpu_cc.0, gpu_cc.1, built_cc.0, built_cc.1, gpu_cc.0, gpu_cc.1)]
    ArchNotCovered {
        requested: String,
        gpu: String,
        gpu_cc: (u32, u32),
        built_cc: (u32, u32),
    },

    #[error("device {requested}: the GPU could not be opened: {cause}\n  fix: {fix}")]
    OpenFailed {
        requested: String,
        cause: String,
        fix: String,
    },

    #[error("precision bf16: {gpu} (compute capability {}.{}) has no bf16 support, which needs compute capability 8.0 or newer\n  fix: use --precision f16, f32 or auto", cc.0, cc.1)]
    Bf16Unsupported { gpu: String, cc: (u32, u32) },

    #[error("device {requested}: the {dtype} smoke test computes wrong results: {failure}\n  fix: check the driver/toolkit match and the GPU's health (`nvidia-smi -q`); `vlmrun doctor` shows every check")]
    SmokeFailed {
        requested: String,
        dtype: String,
        failure: String,
    },
}

/// Decides the target from the request and the probed facts. No device is created here.
pub fn plan(
    spec: DeviceSpec,
    facts: &SystemFacts,
    cuda: &CudaAvailability,
) -> Result<DevicePlan, DeviceError> {
    let requested = spec.to_string();
    match spec {
        DeviceSpec::Cpu => Ok(DevicePlan {
            requested,
            target: Target::Cpu,
            fallback_reason: None,
        }),
        DeviceSpec::Cuda(index) => {
            let gpu = check_cuda(index, &requested, facts, cuda)?;
            Ok(DevicePlan {
                requested,
                target: Target::Cuda { index, gpu },
                fallback_reason: None,
            })
        }
        DeviceSpec::Auto => match check_cuda(0, &requested, facts, cuda) {
            Ok(gpu) => Ok(DevicePlan {
                requested,
                target: Target::Cuda { index: 0, gpu },
                fallback_reason: None,
            }),
            Err(err) => Ok(DevicePlan {
                fallback_reason: Some(reason_only(&err.to_string(), &requested)),
                requested,
                target: Target::Cpu,
            }),
        },
    }
}

/// Every check that can be made before opening the device; returns the GPU's facts when NVML knew it.
fn check_cuda(
    index: usize,
    requested: &str,
    facts: &SystemFacts,
    cuda: &CudaAvailability,
) -> Result<Option<GpuFacts>, DeviceError> {
    let requested = requested.to_string();
    let build = match cuda {
        CudaAvailability::Compiled(build) => build,
        CudaAvailability::CompanionUnloadable {
            companion,
            loader_error,
        } => {
            return Err(DeviceError::CompanionUnloadable {
                requested,
                companion: companion.clone(),
                loader_error: loader_error.clone(),
            })
        }
        CudaAvailability::NotCompiled => return Err(DeviceError::NotBuiltWithCuda { requested }),
    };
    let driver = match &facts.driver {
        Ok(driver) => driver,
        Err(reason) => {
            return Err(DeviceError::NoDriver {
                requested,
                reason: reason.clone(),
            })
        }
    };
    if let Some(built) = parse_version(&build.cuda_version) {
        if driver.cuda_version < built {
            return Err(DeviceError::DriverTooOld {
                requested,
                driver_version: driver.version.clone(),
                driver_cuda: driver.cuda_version,
                built_cuda: build.cuda_version.clone(),
            });
        }
    }
    if facts.gpus.is_empty() && facts.gpu_errors.is_empty() {
        return Err(DeviceError::NoGpu { requested });
    }
    let count = facts.gpus.len() + facts.gpu_errors.len();
    if index >= count {
        return Err(DeviceError::IndexOutOfRange {
            requested,
            index,
            count,
        });
    }
    let gpu = facts.gpus.iter().find(|gpu| gpu.index == index).cloned();
    if let (Some(gpu), Some(built_cc)) = (&gpu, parse_compute_cap(&build.compute_cap)) {
        if arch_coverage(gpu.compute_capability, built_cc) == ArchCoverage::NotCovered {
            return Err(DeviceError::ArchNotCovered {
                requested,
                gpu: gpu.name.clone(),
                gpu_cc: gpu.compute_capability,
                built_cc,
            });
        }
    }
    Ok(gpu)
}

/// Whether kernels compiled for `built` run on a GPU of compute capability `gpu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchCoverage {
    /// Compiled for exactly this architecture.
    Native,
    /// A newer GPU: the driver JIT-compiles the PTX (slower first start; arch-specific kernels such as
    /// sm_90a ones may be missing).
    PtxJit,
    /// An older GPU than the kernels target: they cannot run.
    NotCovered,
}

pub fn arch_coverage(gpu: (u32, u32), built: (u32, u32)) -> ArchCoverage {
    match gpu.cmp(&built) {
        std::cmp::Ordering::Equal => ArchCoverage::Native,
        std::cmp::Ordering::Greater => ArchCoverage::PtxJit,
        std::cmp::Ordering::Less => ArchCoverage::NotCovered,
    }
}

/// Resolves the precision for a target. bf16 needs compute capability >= 8.0 on CUDA.
pub fn resolve_precision(
    spec: PrecisionSpec,
    target: &Target,
) -> Result<PrecisionChoice, DeviceError> {
    let cc = match target {
        Target::Cuda { gpu: Some(gpu), .. } => Some((gpu.name.clone(), gpu.compute_capability)),
        _ => None,
    };
    let choice = |dtype, reason: &str| PrecisionChoice {
        dtype,
        reason: reason.to_string(),
    };
    Ok(match (spec, target) {
        (PrecisionSpec::F32, _) => choice(DType::F32, "requested"),
        (PrecisionSpec::F16, _) => choice(DType::F16, "requested"),
        (PrecisionSpec::Bf16, Target::Cpu) => choice(DType::BF16, "requested (CPU bf16 is emulated and slow)"),
        (PrecisionSpec::Bf16, Target::Cuda { .. }) => match cc {
            Some((gpu, cc)) if cc < (8, 0) => return Err(DeviceError::Bf16Unsupported { gpu, cc }),
            _ => choice(DType::BF16, "requested"),
        },
        (PrecisionSpec::Auto, Target::Cpu) => choice(
            DType::F32,
            "auto on CPU: f32 (CPU f16/bf16 matmuls are slower than f32 and less accurate)",
        ),
        (PrecisionSpec::Auto, Target::Cuda { .. }) => match cc {
            Some((_, cc)) if cc < (8, 0) => choice(
                DType::F16,
                "auto on a GPU below compute capability 8.0: f16 (no bf16 there)",
            ),
            _ => choice(
                DType::BF16,
                "auto on a GPU with compute capability >= 8.0: bf16 (f16's range without overflow risk)",
            ),
        },
    })
}

/// Creates the candle device for a plan. With `auto`, a GPU that fails to open falls back to the CPU and
/// the plan records why.
pub fn open(plan: &mut DevicePlan) -> Result<Device, DeviceError> {
    match plan.target.clone() {
        Target::Cpu => Ok(Device::Cpu),
        Target::Cuda { index, .. } => match open_cuda(index, &plan.requested) {
            Ok(device) => Ok(device),
            Err(err) if plan.requested == "auto" => {
                plan.fallback_reason = Some(reason_only(&err.to_string(), &plan.requested));
                plan.target = Target::Cpu;
                Ok(Device::Cpu)
            }
            Err(err) => Err(err),
        },
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(index: usize, requested: &str) -> Result<Device, DeviceError> {
    let device =
        Device::new_cuda(index).map_err(|err| classify_cuda_error(requested, &err.to_string()))?;
    if let Device::Cuda(cuda) = &device {
        // candle runs everything on one non-default stream, which puts cudarc in its
        // multi-stream mode: it records and waits on an event for every buffer of every launch.
        // vlmrun queues all its work on that one stream, so the events order nothing; without
        // them a launch costs less host time, and a decode step can be recorded as a CUDA graph
        // (events recorded outside a capture cannot be waited on inside it).
        // SAFETY: no tensor of this device is used on another stream (the fused kernels, cuBLAS
        // and the pinned uploads all take `cuda_stream()`), and it is called before any tensor
        // exists.
        unsafe { cuda.disable_event_tracking() };
    }
    Ok(device)
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_index: usize, requested: &str) -> Result<Device, DeviceError> {
    Err(DeviceError::NotBuiltWithCuda {
        requested: requested.to_string(),
    })
}

/// Maps a CUDA driver error text to the cause and remedy a user can act on.
pub fn classify_cuda_error(requested: &str, text: &str) -> DeviceError {
    let known: [(&str, &str, &str); 9] = [
        ("CUDA_ERROR_NO_DEVICE", "no CUDA-capable GPU is visible", "check `nvidia-smi` and CUDA_VISIBLE_DEVICES"),
        ("CUDA_ERROR_INVALID_DEVICE", "the GPU index does not exist", "pick an index listed by `vlmrun doctor`"),
        ("CUDA_ERROR_INSUFFICIENT_DRIVER", "the driver is older than the CUDA version this binary needs", "upgrade the NVIDIA driver (R580+ for CUDA 13.0)"),
        ("CUDA_ERROR_SYSTEM_DRIVER_MISMATCH", "the kernel driver and libcuda.so versions differ", "reboot after a driver upgrade, or reinstall the driver"),
        ("CUDA_ERROR_OUT_OF_MEMORY", "the GPU is out of memory", "free GPU memory (see `nvidia-smi`) or use a smaller batch"),
        ("CUDA_ERROR_DEVICES_UNAVAILABLE", "the GPU is busy or in exclusive-process mode", "wait for the other process or pick another GPU"),
        ("CUDA_ERROR_DEVICE_UNAVAILABLE", "the GPU is busy or unavailable", "wait for the other process or pick another GPU"),
        ("CUDA_ERROR_NO_BINARY_FOR_GPU", "the compiled kernels do not cover this GPU's architecture", "rebuild with CUDA_COMPUTE_CAP set to this GPU's compute capability"),
        ("CUDA_ERROR_UNSUPPORTED_PTX_VERSION", "the kernels were compiled by a newer CUDA than the driver supports", "upgrade the driver or rebuild with the CUDA 13.0 toolchain (scripts/cuda-toolchain.sh)"),
    ];
    for (code, cause, fix) in known {
        if text.contains(code) {
            return DeviceError::OpenFailed {
                requested: requested.to_string(),
                cause: format!("{cause} ({code})"),
                fix: fix.to_string(),
            };
        }
    }
    DeviceError::OpenFailed {
        requested: requested.to_string(),
        cause: first_line(text),
        fix: "run `vlmrun doctor` for the full picture".to_string(),
    }
}

/// The first line of an error without its `device X: ` prefix (for "using the CPU because ...").
fn reason_only(text: &str, requested: &str) -> String {
    let line = first_line(text);
    line.strip_prefix(&format!("device {requested}: "))
        .map(str::to_string)
        .unwrap_or(line)
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).to_string()
}
