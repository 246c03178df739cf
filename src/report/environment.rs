//! The `environment` block every run report carries (baseline report.json, bench documents): where the
//! numbers were taken (device, driver, CUDA, compute capability, precision, build).

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::device::{self, ActiveDevice, CudaAvailability, SystemFacts, Target};

/// Where the numbers were taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// `cpu` or `cuda:0 (NVIDIA H100 80GB HBM3, compute capability 9.0)`.
    pub device: String,
    /// The GPU's name, or the CPU model for CPU runs: `--compare` requires these to be equal.
    pub device_name: String,
    pub driver: Option<String>,
    /// Highest CUDA version the driver supports.
    pub driver_cuda: Option<String>,
    /// CUDA toolkit the binary (or torch) was built with.
    pub cuda_build: Option<String>,
    pub compute_capability: Option<String>,
    /// `f32`, `f16` or `bf16`.
    pub precision: String,
    pub quantization: String,
    pub vlmrun_version: String,
    pub git_rev: String,
    /// Framework versions, e.g. `candle 0.11` or `torch 2.11.0, transformers 5.17.0`.
    pub framework: String,
    pub cpu_threads: usize,
    pub model_dir: Option<String>,
}

/// Describes where this run happens.
pub fn describe(
    active: &ActiveDevice,
    facts: &SystemFacts,
    cuda: &CudaAvailability,
    config: &Config,
    model_dir: Option<String>,
) -> Environment {
    let compute_capability = match &active.plan.target {
        Target::Cuda { gpu: Some(gpu), .. } => Some(format!(
            "{}.{}",
            gpu.compute_capability.0, gpu.compute_capability.1
        )),
        _ => None,
    };
    Environment {
        device: device::describe_target(&active.plan.target),
        device_name: device_name(active),
        driver: facts.driver.as_ref().ok().map(|d| d.version.clone()),
        driver_cuda: facts
            .driver
            .as_ref()
            .ok()
            .map(|d| format!("{}.{}", d.cuda_version.0, d.cuda_version.1)),
        cuda_build: match cuda {
            CudaAvailability::Compiled(build) => Some(build.cuda_version.clone()),
            _ => None,
        },
        compute_capability,
        precision: active.precision.dtype.as_str().to_string(),
        quantization: config.quantization.to_string(),
        vlmrun_version: device::build_info::VERSION.to_string(),
        git_rev: device::build_info::GIT_REV.to_string(),
        framework: "candle".to_string(),
        cpu_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        model_dir,
    }
}

/// The GPU's name, or the CPU's model for CPU runs (what `--compare` requires to be equal).
pub fn device_name(active: &ActiveDevice) -> String {
    match &active.plan.target {
        Target::Cuda { gpu: Some(gpu), .. } => gpu.name.clone(),
        Target::Cuda { index, gpu: None } => format!("cuda:{index}"),
        Target::Cpu => cpu_model(),
    }
}

/// The CPU's model name (`/proc/cpuinfo`), e.g. `CPU AMD EPYC 7B13`; the architecture elsewhere.
pub fn cpu_model() -> String {
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, value)| value.trim().to_string())
        })
        .filter(|name| !name.is_empty());
    match name {
        Some(name) => format!("CPU {name}"),
        None => format!("CPU {}", std::env::consts::ARCH),
    }
}
