//! `tts-suite`: the workspace-level test and benchmark package (tests/, benches/).
//!
//! Holds what the workspace tests share; the engine itself lives in `crates/`.
pub mod parity;

pub use tts_engine;
pub use tts_kernels;
