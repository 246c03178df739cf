//! CUDA graphs: record the kernels a closure queues on a device's stream once, replay them with one
//! launch. The caller keeps every buffer the recorded kernels read or write alive and at the same
//! address for as long as it replays (fixed input and output tensors); what the closure allocates
//! and frees inside the capture belongs to the graph.
//!
//! On the CPU (or a build without CUDA) [`capture`] always fails, so callers fall back to running
//! the work eagerly.

use candle_core::Device;

/// Why a capture produced no graph. The work queued inside a failed capture did not run: the
/// caller runs it again eagerly.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("CUDA graphs need a CUDA device")]
    NotCuda,
    #[error("the work could not be recorded: {0}")]
    Work(candle_core::Error),
    #[error("the CUDA driver refused the capture: {0}")]
    Driver(String),
}

/// Runs `work` with host-to-device uploads of small constant data (shapes, strides, kernel
/// parameters) served from a per-thread device cache, so that work recorded into a graph does not
/// read host memory. Run the eager pass that precedes a capture and the capture itself inside it.
/// On the CPU it only runs `work`.
pub fn with_upload_cache<T>(device: &Device, work: impl FnOnce() -> T) -> T {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(dev) => {
            let _cache = dev.enable_cuda_graph_htod_cache();
            work()
        }
        _ => work(),
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::sys::{
        CUgraphInstantiate_flags, CUstreamCaptureMode,
    };
    use candle_core::cuda_backend::cudarc::driver::CudaGraph;
    use candle_core::Device;

    use super::CaptureError;

    /// A recorded graph, replayed on the stream it was captured from.
    pub struct Graph(CudaGraph);

    // SAFETY: a CUDA graph may be used from any thread as long as calls on it are serialised;
    // `Graph` is only reached through `&mut` or a lock by its owners (generate's step pools), and
    // the stream it launches on is the device's one stream.
    unsafe impl Send for Graph {}

    impl Graph {
        /// Replays the recorded kernels on the device's stream (asynchronously, like any launch).
        pub fn launch(&self) -> candle_core::Result<()> {
            self.0
                .launch()
                .map_err(|err| candle_core::Error::Msg(format!("CUDA graph launch: {err:?}")))
        }
    }

    pub fn capture<T>(
        device: &Device,
        work: impl FnOnce() -> candle_core::Result<T>,
    ) -> Result<(Graph, T), CaptureError> {
        let Device::Cuda(dev) = device else {
            return Err(CaptureError::NotCuda);
        };
        let stream = dev.cuda_stream();
        stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|err| CaptureError::Driver(format!("begin capture: {err:?}")))?;
        let result = work();
        // End the capture whatever happened, so the stream is usable again.
        let ended = stream.end_capture(CUgraphInstantiate_flags(0));
        let value = result.map_err(CaptureError::Work)?;
        match ended {
            Ok(Some(graph)) => Ok((Graph(graph), value)),
            Ok(None) => Err(CaptureError::Driver("the capture recorded nothing".into())),
            Err(err) => Err(CaptureError::Driver(format!("end capture: {err:?}"))),
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use candle_core::Device;

    use super::CaptureError;

    /// No graphs without CUDA: this type has no values.
    pub enum Graph {}

    impl Graph {
        pub fn launch(&self) -> candle_core::Result<()> {
            match *self {}
        }
    }

    pub fn capture<T>(
        _device: &Device,
        _work: impl FnOnce() -> candle_core::Result<T>,
    ) -> Result<(Graph, T), CaptureError> {
        Err(CaptureError::NotCuda)
    }
}

pub use cuda::{capture, Graph};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_on_the_cpu_is_refused_and_runs_nothing() {
        let mut ran = false;
        let result = capture(&Device::Cpu, || {
            ran = true;
            Ok(())
        });
        assert!(matches!(result, Err(CaptureError::NotCuda)));
        assert!(!ran, "a refused capture must not run the work");
    }
}
