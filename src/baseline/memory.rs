//! Peak memory of this process during a run: GPU memory from NVML (sampled every 20 ms on a background
//! thread, this process's own usage) and host peak RSS from /proc/self/status (VmHWM).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Samples this process's GPU memory until stopped.
pub struct GpuMemoryMonitor {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl GpuMemoryMonitor {
    /// Starts sampling GPU `index`; without NVML it records nothing (peak stays `None`).
    pub fn start(index: usize) -> GpuMemoryMonitor {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (stop_flag, peak_value) = (stop.clone(), peak.clone());
        let handle = std::thread::Builder::new()
            .name("gpu-memory".into())
            .spawn(move || sample(index, &stop_flag, &peak_value))
            .ok();
        GpuMemoryMonitor { stop, peak, handle }
    }

    /// Stops sampling; the peak in bytes, if any sample was taken.
    pub fn finish(mut self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        let peak = self.peak.load(Ordering::Relaxed);
        (peak > 0).then_some(peak)
    }
}

fn sample(index: usize, stop: &AtomicBool, peak: &AtomicU64) {
    let Ok(nvml) = nvml_wrapper::Nvml::init() else {
        return;
    };
    let Ok(device) = nvml.device_by_index(index as u32) else {
        return;
    };
    let pid = std::process::id();
    while !stop.load(Ordering::Relaxed) {
        if let Ok(processes) = device.running_compute_processes() {
            for process in processes.iter().filter(|p| p.pid == pid) {
                if let nvml_wrapper::enums::device::UsedGpuMemory::Used(bytes) =
                    process.used_gpu_memory
                {
                    peak.fetch_max(bytes, Ordering::Relaxed);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Peak resident set size of this process in bytes (Linux), if readable.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
