//! What the machine has, read through NVML (libnvidia-ml.so.1, loaded at run time): driver version,
//! the CUDA version the driver supports, and each GPU. Works in CPU builds too, and returns a reason,
//! never a panic, when there is no driver.

use serde::Serialize;

/// The NVIDIA driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriverFacts {
    /// e.g. `580.159.04`.
    pub version: String,
    /// Highest CUDA version the driver supports, e.g. (13, 0).
    pub cuda_version: (u32, u32),
}

/// One GPU as NVML sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuFacts {
    pub index: usize,
    pub name: String,
    /// (major, minor), e.g. (9, 0) for Hopper.
    pub compute_capability: (u32, u32),
    pub memory_total_bytes: u64,
    pub memory_free_bytes: u64,
}

/// Everything the device policy and `doctor` need to know about the machine.
#[derive(Debug, Clone, Serialize)]
pub struct SystemFacts {
    /// The driver, or why it could not be read (no libnvidia-ml.so.1, NVML init failure, ...).
    pub driver: Result<DriverFacts, String>,
    pub gpus: Vec<GpuFacts>,
    /// GPUs NVML listed but could not describe, with the reason.
    pub gpu_errors: Vec<String>,
}

impl SystemFacts {
    /// Facts for a machine with no driver at all (tests, and `device: cpu` runs that skip probing).
    pub fn no_driver(reason: &str) -> SystemFacts {
        SystemFacts {
            driver: Err(reason.to_string()),
            gpus: Vec::new(),
            gpu_errors: Vec::new(),
        }
    }
}

/// Reads the driver and GPU facts through NVML.
pub fn probe_system() -> SystemFacts {
    let nvml = match nvml_wrapper::Nvml::init() {
        Ok(nvml) => nvml,
        Err(err) => return SystemFacts::no_driver(&describe_nvml_init_error(&err)),
    };
    let version = nvml
        .sys_driver_version()
        .unwrap_or_else(|_| "unknown".to_string());
    let driver = match nvml.sys_cuda_driver_version() {
        Ok(encoded) => Ok(DriverFacts {
            version,
            cuda_version: decode_cuda_version(encoded),
        }),
        Err(err) => Err(format!(
            "NVML could not read the driver's CUDA version: {err}"
        )),
    };
    let mut gpus = Vec::new();
    let mut gpu_errors = Vec::new();
    let count = nvml.device_count().unwrap_or(0);
    for index in 0..count {
        match describe_gpu(&nvml, index) {
            Ok(gpu) => gpus.push(gpu),
            Err(err) => gpu_errors.push(format!("GPU {index}: {err}")),
        }
    }
    SystemFacts {
        driver,
        gpus,
        gpu_errors,
    }
}

fn describe_gpu(
    nvml: &nvml_wrapper::Nvml,
    index: u32,
) -> Result<GpuFacts, nvml_wrapper::error::NvmlError> {
    let device = nvml.device_by_index(index)?;
    let capability = device.cuda_compute_capability()?;
    let memory = device.memory_info()?;
    Ok(GpuFacts {
        index: index as usize,
        name: device.name()?,
        compute_capability: (capability.major as u32, capability.minor as u32),
        memory_total_bytes: memory.total,
        memory_free_bytes: memory.free,
    })
}

/// NVML encodes CUDA versions as 1000 * major + 10 * minor.
pub fn decode_cuda_version(encoded: i32) -> (u32, u32) {
    let encoded = encoded.max(0) as u32;
    (encoded / 1000, (encoded % 1000) / 10)
}

fn describe_nvml_init_error(err: &nvml_wrapper::error::NvmlError) -> String {
    use nvml_wrapper::error::NvmlError;
    match err {
        NvmlError::LibloadingError(_) => {
            "no NVIDIA driver: libnvidia-ml.so.1 could not be loaded".to_string()
        }
        NvmlError::DriverNotLoaded => "the NVIDIA kernel driver is not loaded".to_string(),
        NvmlError::NoPermission => "no permission to talk to the NVIDIA driver".to_string(),
        other => format!("NVML could not start: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_nvml_cuda_versions() {
        assert_eq!(decode_cuda_version(13000), (13, 0));
        assert_eq!(decode_cuda_version(12040), (12, 4));
        assert_eq!(decode_cuda_version(-1), (0, 0));
    }
}
