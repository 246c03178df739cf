//! The device policy on synthetic machines: every cause the issue lists gets its own error and remedy,
//! `auto` falls back with a reason, precision resolution follows compute capability.

use candle_core::DType;
use vlmrun::config::{DeviceSpec, PrecisionSpec};
use vlmrun::device::build_info::CudaBuild;
use vlmrun::device::{
    plan, resolve_precision, CudaAvailability, DeviceError, DriverFacts, GpuFacts, SystemFacts,
    Target,
};

fn gpu(index: usize, cc: (u32, u32)) -> GpuFacts {
    GpuFacts {
        index,
        name: format!("Test GPU {index}"),
        compute_capability: cc,
        memory_total_bytes: 80 << 30,
        memory_free_bytes: 79 << 30,
    }
}

fn machine(driver_cuda: (u32, u32), gpus: Vec<GpuFacts>) -> SystemFacts {
    SystemFacts {
        driver: Ok(DriverFacts {
            version: "580.159.04".into(),
            cuda_version: driver_cuda,
        }),
        gpus,
        gpu_errors: vec![],
    }
}

fn cuda_build(cap: &str) -> CudaAvailability {
    CudaAvailability::Compiled(CudaBuild {
        cuda_version: "13.0".into(),
        compute_cap: cap.into(),
    })
}

#[test]
fn h100_with_matching_build_is_planned() {
    let facts = machine((13, 0), vec![gpu(0, (9, 0))]);
    let planned = plan(DeviceSpec::Cuda(0), &facts, &cuda_build("90")).unwrap();
    assert!(matches!(
        planned.target,
        Target::Cuda {
            index: 0,
            gpu: Some(_)
        }
    ));
    let auto = plan(DeviceSpec::Auto, &facts, &cuda_build("90")).unwrap();
    assert!(auto.fallback_reason.is_none());
    let precision = resolve_precision(PrecisionSpec::Auto, &planned.target).unwrap();
    assert_eq!(precision.dtype, DType::BF16);
}

#[test]
fn each_cause_has_its_error() {
    let h100 = || machine((13, 0), vec![gpu(0, (9, 0))]);
    let err = plan(DeviceSpec::Cuda(0), &h100(), &CudaAvailability::NotCompiled).unwrap_err();
    assert!(matches!(err, DeviceError::NotBuiltWithCuda { .. }));

    let unloadable = CudaAvailability::CompanionUnloadable {
        companion: "/opt/vlmrun-cuda".into(),
        loader_error: "libcuda.so.1: cannot open shared object file".into(),
    };
    let err = plan(DeviceSpec::Cuda(0), &h100(), &unloadable).unwrap_err();
    assert!(err.to_string().contains("libcuda.so.1"), "{err}");

    let no_driver =
        SystemFacts::no_driver("no NVIDIA driver: libnvidia-ml.so.1 could not be loaded");
    let err = plan(DeviceSpec::Cuda(0), &no_driver, &cuda_build("90")).unwrap_err();
    assert!(matches!(err, DeviceError::NoDriver { .. }));
    assert!(err.to_string().contains("fix: install the NVIDIA driver"));

    let old_driver = machine((12, 4), vec![gpu(0, (9, 0))]);
    let err = plan(DeviceSpec::Cuda(0), &old_driver, &cuda_build("90")).unwrap_err();
    assert!(matches!(err, DeviceError::DriverTooOld { .. }));
    assert!(
        err.to_string().contains("supports CUDA up to 12.4"),
        "{err}"
    );

    let err = plan(
        DeviceSpec::Cuda(0),
        &machine((13, 0), vec![]),
        &cuda_build("90"),
    )
    .unwrap_err();
    assert!(matches!(err, DeviceError::NoGpu { .. }));

    let err = plan(DeviceSpec::Cuda(2), &h100(), &cuda_build("90")).unwrap_err();
    assert!(matches!(
        err,
        DeviceError::IndexOutOfRange {
            index: 2,
            count: 1,
            ..
        }
    ));

    let ampere = machine((13, 0), vec![gpu(0, (8, 6))]);
    let err = plan(DeviceSpec::Cuda(0), &ampere, &cuda_build("90")).unwrap_err();
    assert!(matches!(err, DeviceError::ArchNotCovered { .. }));
    assert!(err.to_string().contains("CUDA_COMPUTE_CAP=86"), "{err}");

    // A newer GPU runs the PTX through the driver's JIT: allowed.
    let blackwell = machine((13, 0), vec![gpu(0, (10, 0))]);
    assert!(plan(DeviceSpec::Cuda(0), &blackwell, &cuda_build("90")).is_ok());
}

#[test]
fn driver_errors_at_open_are_classified() {
    let err = vlmrun::device::policy::classify_cuda_error(
        "cuda:0",
        "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")",
    );
    assert!(err.to_string().contains("out of memory"), "{err}");
    let err = vlmrun::device::policy::classify_cuda_error(
        "cuda:0",
        "DriverError(CUDA_ERROR_DEVICES_UNAVAILABLE, \"\")",
    );
    assert!(err.to_string().contains("busy"), "{err}");
    let err = vlmrun::device::policy::classify_cuda_error("cuda:0", "something new");
    assert!(err.to_string().contains("vlmrun doctor"), "{err}");
}

#[test]
fn auto_falls_back_with_the_reason() {
    let facts = SystemFacts::no_driver("no NVIDIA driver: libnvidia-ml.so.1 could not be loaded");
    let planned = plan(DeviceSpec::Auto, &facts, &cuda_build("90")).unwrap();
    assert_eq!(planned.target, Target::Cpu);
    let reason = planned.fallback_reason.unwrap();
    assert!(reason.starts_with("no usable NVIDIA driver"), "{reason}");
    assert!(plan(DeviceSpec::Cpu, &facts, &cuda_build("90"))
        .unwrap()
        .fallback_reason
        .is_none());
}

#[test]
fn precision_follows_compute_capability() {
    let turing = Target::Cuda {
        index: 0,
        gpu: Some(gpu(0, (7, 5))),
    };
    assert_eq!(
        resolve_precision(PrecisionSpec::Auto, &turing)
            .unwrap()
            .dtype,
        DType::F16
    );
    let err = resolve_precision(PrecisionSpec::Bf16, &turing).unwrap_err();
    assert!(matches!(err, DeviceError::Bf16Unsupported { .. }));
    assert!(err.to_string().contains("--precision f16"));
    let cpu = resolve_precision(PrecisionSpec::Auto, &Target::Cpu).unwrap();
    assert_eq!(cpu.dtype, DType::F32);
    assert!(cpu.reason.contains("CPU"));
    assert_eq!(
        resolve_precision(PrecisionSpec::Bf16, &Target::Cpu)
            .unwrap()
            .dtype,
        DType::BF16
    );
}
