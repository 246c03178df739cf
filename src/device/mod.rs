//! Devices: what the machine has (`probe`), what this binary was built for (`build_info`), the launcher
//! that picks the CUDA or CPU build (`launcher`), and the policy that turns the configured device and
//! precision into a candle device and dtype or a clear error (`policy`), and the smoke test that proves
//! the opened device computes correctly (`smoke`). [`activate`] is how every job makes the configured
//! device usable.

pub mod build_info;
pub mod graph;
pub mod launcher;
pub mod policy;
pub mod probe;
pub mod smoke;

pub use policy::{
    arch_coverage, open, plan, resolve_precision, ArchCoverage, CudaAvailability, DeviceError,
    DevicePlan, PrecisionChoice, Target,
};
pub use probe::{probe_system, DriverFacts, GpuFacts, SystemFacts};

/// The CUDA availability of this process: compiled in, or what the launcher found.
pub fn cuda_availability(launcher_result: Option<CudaAvailability>) -> CudaAvailability {
    match build_info::cuda_build() {
        Some(build) => CudaAvailability::Compiled(build),
        None => launcher_result.unwrap_or(CudaAvailability::NotCompiled),
    }
}

/// A device ready for work: the candle device, the plan that chose it and the precision.
#[derive(Debug, Clone)]
pub struct ActiveDevice {
    pub device: candle_core::Device,
    pub plan: DevicePlan,
    pub precision: PrecisionChoice,
}

/// Plans, opens and picks the precision, then proves the device computes correctly (the smoke test in
/// f32 and half precision); logs the decisions (one warning line for an `auto` fallback).
pub fn activate(
    spec: crate::config::DeviceSpec,
    precision: crate::config::PrecisionSpec,
    facts: &SystemFacts,
    cuda: &CudaAvailability,
) -> Result<ActiveDevice, DeviceError> {
    let active = activate_quietly(spec, precision, facts, cuda)?;
    smoke::verify(
        &active.device,
        active.precision.dtype,
        &active.plan.target,
        &active.plan.requested,
    )?;
    if let Some(reason) = &active.plan.fallback_reason {
        // The CPU build with no CUDA companion never had a GPU to offer: running on the CPU is what
        // it does, not a fallback worth a warning (`-v` or `vlmrun doctor` still say why).
        if matches!(cuda, CudaAvailability::NotCompiled) {
            tracing::info!("device auto: using the CPU because {reason}");
        } else {
            tracing::warn!("device auto: using the CPU because {reason}");
        }
    }
    tracing::info!(
        "device {} -> {}; precision {} ({})",
        active.plan.requested,
        describe_target(&active.plan.target),
        active.precision.dtype.as_str(),
        active.precision.reason
    );
    Ok(active)
}

/// As [`activate`], without the smoke test and without logging (for `doctor`, which runs and reports
/// both itself).
pub fn activate_quietly(
    spec: crate::config::DeviceSpec,
    precision: crate::config::PrecisionSpec,
    facts: &SystemFacts,
    cuda: &CudaAvailability,
) -> Result<ActiveDevice, DeviceError> {
    let mut device_plan = plan(spec, facts, cuda)?;
    let device = open(&mut device_plan)?;
    let precision = resolve_precision(precision, &device_plan.target)?;
    Ok(ActiveDevice {
        device,
        plan: device_plan,
        precision,
    })
}

/// `cpu`, or `cuda:0 (NVIDIA H100 80GB HBM3, compute capability 9.0)`.
pub fn describe_target(target: &Target) -> String {
    match target {
        Target::Cpu => "cpu".to_string(),
        Target::Cuda {
            index,
            gpu: Some(gpu),
        } => format!(
            "cuda:{index} ({}, compute capability {}.{})",
            gpu.name, gpu.compute_capability.0, gpu.compute_capability.1
        ),
        Target::Cuda { index, gpu: None } => format!("cuda:{index}"),
    }
}
