//! The device of a rank. With world size > 1:
//! - `cpu`: every rank on the CPU (tests, CPU-only clusters).
//! - `cuda` / `cuda:0` / `auto` (when CUDA is usable): `cuda:LOCAL_RANK`, so the ranks on one machine
//!   take one GPU each. Exception: when `CUDA_VISIBLE_DEVICES` lists exactly one GPU, the launcher has
//!   bound one GPU to this rank (Slurm `--gpus-per-task=1`, a per-rank export) and it is `cuda:0`.
//! - `cuda:N` with N > 0: refused, since it would put every rank on one GPU (`cuda` and `cuda:0` cannot be
//!   told apart once parsed, so both mean "the rank's GPU").
//!
//! `auto` without usable CUDA stays `auto`, so the device policy falls back to the CPU with its warning.

use crate::config::DeviceSpec;

use super::{DistributedError, RankInfo};

/// The device spec rank `info` uses for the configured `spec`.
pub fn for_rank(
    spec: DeviceSpec,
    info: &RankInfo,
    visible_devices: Option<&str>,
    cuda_usable: bool,
) -> Result<DeviceSpec, DistributedError> {
    if info.world_size <= 1 {
        return Ok(spec);
    }
    match spec {
        DeviceSpec::Cpu => Ok(DeviceSpec::Cpu),
        DeviceSpec::Auto if !cuda_usable => Ok(DeviceSpec::Auto),
        DeviceSpec::Auto | DeviceSpec::Cuda(0) => {
            gpu_index(info, visible_devices).map(DeviceSpec::Cuda)
        }
        DeviceSpec::Cuda(index) => Err(DistributedError::Inconsistent {
            message: format!(
                "device cuda:{index} with world size {}: every rank would use GPU {index}",
                info.world_size
            ),
            fix: "set device: cuda (each rank takes GPU LOCAL_RANK), or give each rank its GPU with CUDA_VISIBLE_DEVICES and device: cuda".to_string(),
        }),
    }
}

fn gpu_index(info: &RankInfo, visible_devices: Option<&str>) -> Result<usize, DistributedError> {
    let visible = visible_devices.map(|list| {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .count()
    });
    match visible {
        Some(1) => Ok(0),
        Some(count) if count > 1 && info.local_rank >= count => {
            Err(DistributedError::Inconsistent {
                message: format!(
                    "local rank {} needs GPU {}, but CUDA_VISIBLE_DEVICES={:?} shows {count} GPUs",
                    info.local_rank,
                    info.local_rank,
                    visible_devices.unwrap_or_default()
                ),
                fix: "start at most as many ranks per machine as it has visible GPUs, or give each rank one GPU in CUDA_VISIBLE_DEVICES".to_string(),
            })
        }
        _ => Ok(info.local_rank),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank(local_rank: usize, world_size: usize) -> RankInfo {
        RankInfo {
            rank: local_rank,
            world_size,
            local_rank,
            ..RankInfo::single()
        }
    }

    #[test]
    fn each_local_rank_takes_its_gpu() {
        let info = rank(3, 4);
        for spec in [DeviceSpec::Cuda(0), DeviceSpec::Auto] {
            assert_eq!(
                for_rank(spec, &info, None, true).unwrap(),
                DeviceSpec::Cuda(3)
            );
        }
        assert_eq!(
            for_rank(DeviceSpec::Cuda(0), &info, Some("0,1,2,3"), true).unwrap(),
            DeviceSpec::Cuda(3)
        );
    }

    #[test]
    fn one_visible_gpu_is_cuda_0() {
        let info = rank(3, 4);
        assert_eq!(
            for_rank(DeviceSpec::Cuda(0), &info, Some("GPU-1234"), true).unwrap(),
            DeviceSpec::Cuda(0)
        );
    }

    #[test]
    fn cpu_and_auto_without_cuda_stay() {
        let info = rank(1, 2);
        assert_eq!(
            for_rank(DeviceSpec::Cpu, &info, None, true).unwrap(),
            DeviceSpec::Cpu
        );
        assert_eq!(
            for_rank(DeviceSpec::Auto, &info, None, false).unwrap(),
            DeviceSpec::Auto
        );
    }

    #[test]
    fn single_process_keeps_the_configured_device() {
        assert_eq!(
            for_rank(DeviceSpec::Cuda(5), &RankInfo::single(), None, true).unwrap(),
            DeviceSpec::Cuda(5)
        );
    }

    #[test]
    fn pinned_gpu_and_too_few_visible_gpus_are_refused() {
        let message = for_rank(DeviceSpec::Cuda(1), &rank(0, 2), None, true)
            .unwrap_err()
            .to_string();
        assert!(message.contains("cuda:1 with world size 2"), "{message}");
        let message = for_rank(DeviceSpec::Cuda(0), &rank(2, 4), Some("0,1"), true)
            .unwrap_err()
            .to_string();
        assert!(message.contains("CUDA_VISIBLE_DEVICES"), "{message}");
    }
}
