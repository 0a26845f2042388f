//! Replayable graphs of launches: a CUDA graph on Cuda, a recorded launch list on Emu.
//!
//! [`Device::capture`] runs a closure that issues ops against preallocated tensors. Nothing runs
//! during the capture (as with CUDA stream capture); [`Graph::replay`] then runs the recorded work
//! again, with the same buffers, so per-step values must live in device tensors. While capturing,
//! allocations and host copies on that device are errors (they could not be replayed).
use crate::Device;
use crate::device::Backend;
#[cfg(feature = "emu")]
use crate::emu::Recorded;
use crate::error::{Error, Result};

enum GraphKind {
    Cuda(cudarc::driver::CudaGraph),
    #[cfg(feature = "emu")]
    Emu(Vec<Recorded>),
}

/// A captured sequence of launches that can be replayed.
pub struct Graph {
    dev: Device,
    kind: GraphKind,
    names: Vec<&'static str>,
}

impl Graph {
    /// Runs the captured work again (asynchronously on Cuda; synchronously on Emu).
    pub fn replay(&self) -> Result<()> {
        match (&self.kind, &*self.dev.inner) {
            (GraphKind::Cuda(g), _) => {
                g.launch().map_err(|e| Error::Driver { during: "graph launch".into(), detail: format!("{e:?}") })
            }
            #[cfg(feature = "emu")]
            (GraphKind::Emu(list), Backend::Emu(e)) => e.replay(list),
            #[cfg(feature = "emu")]
            _ => Err(Error::invalid("graph", "graph and device disagree")),
        }
    }

    /// Launches per replay (kernels and GEMMs).
    pub fn launch_count(&self) -> usize {
        self.names.len()
    }

    /// The launched kernels in order ("gemm" for GEMMs).
    pub fn kernel_names(&self) -> &[&'static str] {
        &self.names
    }

    pub fn device(&self) -> &Device {
        &self.dev
    }
}

impl Device {
    /// Captures the work `f` issues on this device into a replayable [`Graph`]. Nothing runs during
    /// the capture. The Cpu backend runs ops eagerly and has no graphs.
    /// `f` may use its own error type, as long as tts-kernels errors convert into it.
    pub fn capture<E: From<Error>>(&self, f: impl FnOnce() -> std::result::Result<(), E>) -> std::result::Result<Graph, E> {
        match &*self.inner {
            Backend::Cpu => Err(Error::invalid("capture", "the Cpu backend runs ops eagerly and has no graphs").into()),
            Backend::Cuda(c) => {
                let (graph, names) = c.capture(f)?;
                Ok(Graph { dev: self.clone(), kind: GraphKind::Cuda(graph), names })
            }
            #[cfg(feature = "emu")]
            Backend::Emu(e) => {
                let log = e.capture(f)?;
                Ok(Graph { dev: self.clone(), kind: GraphKind::Emu(log.recorded), names: log.names })
            }
        }
    }

    /// Whether [`Device::capture`] records graphs on this device (Cuda and Emu). Where it does not
    /// (Cpu: ops run eagerly), callers run their step directly instead of capturing it.
    pub fn captures_graphs(&self) -> bool {
        !matches!(&*self.inner, Backend::Cpu)
    }

    /// Whether a capture is in progress on this device.
    pub fn is_capturing(&self) -> bool {
        match &*self.inner {
            Backend::Cpu => false,
            Backend::Cuda(c) => c.is_capturing(),
            #[cfg(feature = "emu")]
            Backend::Emu(e) => e.is_capturing(),
        }
    }

    /// An error when capturing: `what` cannot be part of a graph.
    pub(crate) fn forbid_while_capturing(&self, what: &str) -> Result<()> {
        if self.is_capturing() {
            return Err(Error::invalid("capture", format!("{what} is not allowed while capturing a graph")));
        }
        Ok(())
    }
}
