//! CAMPPlus's FCM head (`xvector.py:FCM`): the fbank seen as a one-channel image (mel bands × time),
//! `Conv2d(1→32, 3×3) + BN + ReLU`, two layers of two `BasicResBlock`s (the first of each halves the
//! bands: stride (2, 1)), `Conv2d(32→32, 3×3, stride (2, 1)) + BN + ReLU`; 80 bands → 10, flattened
//! to `32·10 = 320` channels per frame (channel-major: index `c·10 + band`).
use tts_kernels::checkpoint::Checkpoint;

use super::ops::{BatchNorm, Conv2d};
use crate::Result;

/// FCM's channels (`m_channels`, fixed in the reference).
pub const CHANNELS: usize = 32;
/// Mel bands in (`feat_dim`).
pub const BANDS_IN: usize = 80;
/// Bands out: 80 halved three times.
pub const BANDS_OUT: usize = BANDS_IN / 8;
/// Channels per frame out of the head: `32 · 10`.
pub const OUT_CHANNELS: usize = CHANNELS * BANDS_OUT;

/// `BasicResBlock`: `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, the shortcut a strided
/// `1×1 conv + BN` when the block halves the bands, else the identity.
struct ResBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    shortcut: Option<(Conv2d, BatchNorm)>,
}

impl ResBlock {
    fn load(ck: &Checkpoint, p: &str, stride: usize) -> Result<ResBlock> {
        let c = CHANNELS;
        Ok(ResBlock {
            conv1: Conv2d::load(ck, &format!("{p}.conv1.weight"), c, c, 3, stride)?,
            bn1: BatchNorm::load(ck, &format!("{p}.bn1"), c, true)?,
            conv2: Conv2d::load(ck, &format!("{p}.conv2.weight"), c, c, 3, 1)?,
            bn2: BatchNorm::load(ck, &format!("{p}.bn2"), c, true)?,
            shortcut: if stride != 1 {
                Some((
                    Conv2d::load(ck, &format!("{p}.shortcut.0.weight"), c, c, 1, stride)?,
                    BatchNorm::load(ck, &format!("{p}.shortcut.1"), c, true)?,
                ))
            } else {
                None
            },
        })
    }

    /// `x` `[h][t][32]` → `[h'][t][32]` (h' = h/2 for a striding block), and h'.
    fn forward(&self, x: Vec<f32>, h: usize, t: usize) -> (Vec<f32>, usize) {
        let mut y = self.conv1.forward(&x, h, t);
        self.bn1.apply(&mut y, true);
        let ho = self.conv1.out_h(h);
        let mut y = self.conv2.forward(&y, ho, t);
        self.bn2.apply(&mut y, false);
        let short = match &self.shortcut {
            Some((conv, bn)) => {
                let mut s = conv.forward(&x, h, t);
                bn.apply(&mut s, false);
                s
            }
            None => x,
        };
        y.iter_mut().zip(&short).for_each(|(v, &s)| *v = (*v + s).max(0.0));
        (y, ho)
    }
}

/// The FCM head.
pub struct Head {
    conv1: Conv2d,
    bn1: BatchNorm,
    blocks: Vec<ResBlock>,
    conv2: Conv2d,
    bn2: BatchNorm,
}

impl Head {
    /// `prefix` = `speaker_encoder.head`.
    pub fn load(ck: &Checkpoint, prefix: &str) -> Result<Head> {
        let mut blocks = Vec::with_capacity(4);
        for layer in 1..=2 {
            for (i, stride) in [2, 1].into_iter().enumerate() {
                blocks.push(ResBlock::load(ck, &format!("{prefix}.layer{layer}.{i}"), stride)?);
            }
        }
        Ok(Head {
            conv1: Conv2d::load(ck, &format!("{prefix}.conv1.weight"), 1, CHANNELS, 3, 1)?,
            bn1: BatchNorm::load(ck, &format!("{prefix}.bn1"), CHANNELS, true)?,
            blocks,
            conv2: Conv2d::load(ck, &format!("{prefix}.conv2.weight"), CHANNELS, CHANNELS, 3, 2)?,
            bn2: BatchNorm::load(ck, &format!("{prefix}.bn2"), CHANNELS, true)?,
        })
    }

    /// `feats` `[t][80]` (fbank, time-major) → `[t][320]` (channel `c·10 + band`).
    pub fn forward(&self, feats: &[f32], t: usize) -> Vec<f32> {
        // [80][t][1]: the fbank transposed, bands as the image's height
        let mut x = vec![0f32; BANDS_IN * t];
        for (f, row) in feats.chunks(BANDS_IN).enumerate() {
            for (b, &v) in row.iter().enumerate() {
                x[b * t + f] = v;
            }
        }
        let mut y = self.conv1.forward(&x, BANDS_IN, t);
        self.bn1.apply(&mut y, true);
        let mut h = BANDS_IN;
        for block in &self.blocks {
            (y, h) = block.forward(y, h, t);
        }
        let mut y2 = self.conv2.forward(&y, h, t);
        self.bn2.apply(&mut y2, true);
        let h = self.conv2.out_h(h);
        debug_assert_eq!(h, BANDS_OUT);
        // [10][t][32] → [t][32·10]
        let mut out = vec![0f32; t * OUT_CHANNELS];
        for b in 0..h {
            for f in 0..t {
                for c in 0..CHANNELS {
                    out[f * OUT_CHANNELS + c * BANDS_OUT + b] = y2[(b * t + f) * CHANNELS + c];
                }
            }
        }
        out
    }
}
