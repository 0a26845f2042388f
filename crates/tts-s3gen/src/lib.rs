//! S3Gen: speech tokens to 24 kHz audio (conformer encoder, conditional flow matching with CFG,
//! HiFT vocoder).
//!
//! Status: constants only. The model is the work of issue 5.

/// Output sample rate in Hz.
pub const SAMPLE_RATE: u32 = 24_000;
/// Mel frames per speech token (tokens are 25 Hz, mels 50 Hz).
pub const MEL_FRAMES_PER_TOKEN: usize = 2;
/// Output samples per mel frame (hop 480 at 24 kHz).
pub const SAMPLES_PER_MEL_FRAME: usize = 480;
/// Default number of Euler steps of the flow-matching solver.
pub const DEFAULT_CFM_STEPS: usize = 10;
/// Classifier-free guidance rate of the flow-matching decoder.
pub const CFM_CFG_RATE: f32 = 0.7;

/// Whether the model is implemented. The parity harness reports its fixture cases as pending
/// while this is false, and as failures if it is true but they have no runner.
pub const IMPLEMENTED: bool = false;

#[cfg(test)]
mod tests {
    #[test]
    fn one_token_is_960_samples() {
        assert_eq!(super::MEL_FRAMES_PER_TOKEN * super::SAMPLES_PER_MEL_FRAME, 960);
    }
}
