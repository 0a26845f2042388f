//! `AudioEncoderV2` (`s3tokenizer/model_v2.py`): two stride-2 convolutions with GELU take the
//! 128-band log-mel at 100 frames/s to `n_state` channels at 25 rows/s, then `n_layer`
//! [`Block`]s. The convolutions run as GEMMs ([`Linear`]) over im2col matrices.
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::cpu::{self, Activation};

use super::block::{Block, Rope, Scratch};
use super::config::TokenizerConfig;
use super::linear::Linear;
use super::mel::{LogMel, N_MELS};
use crate::{Error, Result};

/// Kernel size of both convolutions (padding 1, stride 2).
pub const CONV_KERNEL: usize = 3;

/// Output length of a `Conv1d(k 3, stride 2, padding 1)` over `n` frames: `⌈n / 2⌉`.
pub fn conv_out_len(n: usize) -> usize {
    n.div_ceil(2)
}

/// Encoder rows (= tokens) of `frames` mel frames: `⌈⌈frames / 2⌉ / 2⌉`.
pub fn tokens_for_frames(frames: usize) -> usize {
    conv_out_len(conv_out_len(frames))
}

/// The encoder's weights.
pub struct Encoder {
    d: usize,
    /// `conv1` as a GEMM over `[128·3]` im2col rows (the weight as stored: input channel major,
    /// tap minor).
    conv1: Linear,
    /// `conv2` as a GEMM over `[3·D]` im2col rows, its weight tap-major: row `o` holds
    /// `w[o][·][0]`, then tap 1, then tap 2.
    conv2: Linear,
    blocks: Vec<Block>,
}

impl Encoder {
    /// Reads `{prefix}conv{1,2}.*` and `{prefix}blocks.{i}.*` (prefix `tokenizer.encoder.`).
    pub fn load(ckpt: &Checkpoint, prefix: &str, config: &TokenizerConfig) -> Result<Encoder> {
        let d = config.tokenizer_n_state;
        let t = |name: &str, shape: &[usize]| ckpt.f32(&format!("{prefix}{name}"), shape);
        let conv1_w = t("conv1.weight", &[d, N_MELS, CONV_KERNEL])?;
        let conv1 = Linear::new(&conv1_w, Some(t("conv1.bias", &[d])?), d, N_MELS * CONV_KERNEL);
        let conv2 = t("conv2.weight", &[d, d, CONV_KERNEL])?;
        let mut conv2_w = vec![0f32; d * CONV_KERNEL * d];
        for o in 0..d {
            for c in 0..d {
                for k in 0..CONV_KERNEL {
                    conv2_w[(o * CONV_KERNEL + k) * d + c] = conv2[(o * d + c) * CONV_KERNEL + k];
                }
            }
        }
        let conv2 = Linear::new(&conv2_w, Some(t("conv2.bias", &[d])?), d, CONV_KERNEL * d);
        let blocks = (0..config.tokenizer_n_layer)
            .map(|i| Block::load(ckpt, &format!("{prefix}blocks.{i}."), d, config.tokenizer_n_head))
            .collect::<Result<_>>()?;
        Ok(Encoder { d, conv1, conv2, blocks })
    }

    /// Width of the output rows (`n_state`).
    pub fn width(&self) -> usize {
        self.d
    }

    /// The encoder output of one utterance's mel, `[T_tok, D]` row-major with
    /// `T_tok = ⌈⌈frames/2⌉/2⌉` ([`tokens_for_frames`]). A mel without frames is an error.
    pub fn forward(&self, mel: &LogMel) -> Result<Vec<f32>> {
        let (frames, d) = (mel.frames, self.d);
        if frames == 0 || mel.data.len() != N_MELS * frames {
            return Err(Error::Input {
                field: "mel",
                detail: format!("{} values for {frames} frames of {N_MELS} bands (needs at least one frame)", mel.data.len()),
            });
        }
        // conv1: cols[i][c·3 + k] = mel[c][2i − 1 + k] (zero outside), [T1, 128·3]
        let t1 = conv_out_len(frames);
        let k1 = N_MELS * CONV_KERNEL;
        let mut cols = vec![0f32; t1 * k1];
        for (c, band) in mel.data.chunks_exact(frames).enumerate() {
            for (i, row) in cols.chunks_exact_mut(k1).enumerate() {
                for k in 0..CONV_KERNEL {
                    if let Some(src) = (2 * i + k).checked_sub(1).filter(|&s| s < frames) {
                        row[c * CONV_KERNEL + k] = band[src];
                    }
                }
            }
        }
        let mut h1 = vec![0f32; t1 * d];
        self.conv1.forward(&cols, &mut h1);
        cpu::activation_inplace(&mut h1, d, Activation::Gelu, None, None);
        // conv2: cols[i][k·D + c] = h1[2i − 1 + k][c], [T2, 3·D]
        let t2 = conv_out_len(t1);
        let k2 = CONV_KERNEL * d;
        let mut cols = vec![0f32; t2 * k2];
        for (i, row) in cols.chunks_exact_mut(k2).enumerate() {
            for k in 0..CONV_KERNEL {
                if let Some(src) = (2 * i + k).checked_sub(1).filter(|&s| s < t1) {
                    row[k * d..(k + 1) * d].copy_from_slice(&h1[src * d..(src + 1) * d]);
                }
            }
        }
        let mut x = vec![0f32; t2 * d];
        self.conv2.forward(&cols, &mut x);
        cpu::activation_inplace(&mut x, d, Activation::Gelu, None, None);
        let rope = Rope::new(t2);
        let mut scratch = Scratch::new(t2, d);
        for block in &self.blocks {
            block.forward(&mut x, &rope, &mut scratch)?;
        }
        Ok(x)
    }
}
