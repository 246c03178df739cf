//! Peak memory of this process during a run: GPU memory from NVML (sampled every 20 ms on a background
//! thread, this process's own usage; the first sample is taken before `start` returns, so that a
//! caller can tell what it added to the memory the process already held) and host peak RSS from
//! /proc/self/status (VmHWM).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

/// Samples this process's GPU memory until stopped.
pub struct GpuMemoryMonitor {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    /// This process's GPU memory when sampling started (CUDA context, libraries, whatever an
    /// earlier phase still holds).
    start_bytes: Option<u64>,
    handle: Option<JoinHandle<()>>,
}

impl GpuMemoryMonitor {
    /// Starts sampling GPU `index`; without NVML it records nothing (peak stays `None`). Returns
    /// after the first sample (or after a second at most, when NVML is slow to answer).
    pub fn start(index: usize) -> GpuMemoryMonitor {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (stop_flag, peak_value) = (stop.clone(), peak.clone());
        let (first_tx, first_rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("gpu-memory".into())
            .spawn(move || sample(index, &stop_flag, &peak_value, first_tx))
            .ok();
        let start_bytes = match handle {
            Some(_) => first_rx.recv_timeout(Duration::from_secs(1)).ok().flatten(),
            None => None,
        };
        GpuMemoryMonitor {
            stop,
            peak,
            start_bytes,
            handle,
        }
    }

    /// This process's GPU memory when sampling started, if NVML answered.
    pub fn start_bytes(&self) -> Option<u64> {
        self.start_bytes
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

/// Samples until `stop`; the first reading (or `None` when NVML cannot answer) goes to `first`.
fn sample(index: usize, stop: &AtomicBool, peak: &AtomicU64, first: mpsc::Sender<Option<u64>>) {
    let Ok(nvml) = nvml_wrapper::Nvml::init() else {
        let _ = first.send(None);
        return;
    };
    let Ok(device) = nvml.device_by_index(index as u32) else {
        let _ = first.send(None);
        return;
    };
    let pid = std::process::id();
    let mut first = Some(first);
    while !stop.load(Ordering::Relaxed) {
        let mut reading = None;
        if let Ok(processes) = device.running_compute_processes() {
            // Listed processes only: one without a CUDA context yet holds nothing.
            reading = Some(0);
            for process in processes.iter().filter(|p| p.pid == pid) {
                if let nvml_wrapper::enums::device::UsedGpuMemory::Used(bytes) =
                    process.used_gpu_memory
                {
                    peak.fetch_max(bytes, Ordering::Relaxed);
                    reading = reading.map(|r: u64| r.max(bytes));
                }
            }
        }
        if let Some(sender) = first.take() {
            let _ = sender.send(reading);
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
