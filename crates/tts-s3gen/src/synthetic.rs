//! A synthetic S3Gen: deterministic random weights at the dimensions of an [`S3GenConfig`] (the
//! real model by default), built in memory from a seed and loaded through the same code as
//! `s3gen.safetensors` ([`S3Gen::from_checkpoint`]): the same tensor names, shapes, weight-norm
//! folding and packing. It exists to run and time the model where the real weights are not
//! available; what it synthesises is noise, not speech.
//!
//! Scales by role keep activations in a realistic range (checked by `tests/synthetic.rs`): norm
//! gains around 1, small biases, projections and convolutions with standard deviation
//! gain/√fan_in; weight-norm pairs as a unit-scale direction `v` and a magnitude `g` (the row norm
//! of such a projection); HiFT's residual branches damped (as HiFi-GAN's small initialisation
//! does), Snake alphas around 1.15, an F0 head biased to ~150 Hz (voiced), and the flow's output
//! and `mu` biased to a log-mel level (~−5) so that the vocoder sees mel-like input; the
//! vocoder's log-magnitudes sit around −2 so the waveform stays mostly below its ±0.99 clamp.
use tts_kernels::Device;
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::checkpoint::synthetic::{Init, SynthTensor};
use tts_kernels::ops::HIFT_HARMONICS;

use crate::config::S3GenConfig;
use crate::estimator::{ESTIMATOR_IN, TIME_SINUSOID};
use crate::hift::{RESBLOCK_KERNELS, SOURCE_DOWNS, SOURCE_RESBLOCK_KERNELS, STFT_BINS, UPSAMPLE_KERNELS, UPSAMPLE_RATES};
use crate::{MEL_BINS, Result, S3Gen};

/// Norm gains.
const GAIN: Init = Init::around(1.0, 0.1);
/// Norm, projection and convolution biases.
const BIAS: Init = Init::spread(0.02);
/// The mean log-mel level of the flow's output and of `mu` (natural log of power, clamped at
/// ln 1e-5 ≈ −11.5 in the real front-end).
const MEL_LEVEL: f32 = -5.0;

/// Collects a manifest, with one helper per layer kind of the loaders in this crate.
struct Manifest(Vec<SynthTensor>);

impl Manifest {
    fn t(&mut self, name: impl Into<String>, shape: &[usize], init: Init) {
        self.0.push(SynthTensor::new(name, shape, init));
    }

    /// `layers::Linear::load`: `{p}.weight` `[n, k]` (std gain/√k), and `{p}.bias` with `bias`.
    fn linear(&mut self, p: &str, n: usize, k: usize, gain: f32, bias: Option<Init>) {
        self.t(format!("{p}.weight"), &[n, k], Init::fan_in(k, gain));
        if let Some(b) = bias {
            self.t(format!("{p}.bias"), &[n], b);
        }
    }

    /// `layers::LayerNorm::load`.
    fn layer_norm(&mut self, p: &str, dim: usize) {
        self.t(format!("{p}.weight"), &[dim], GAIN);
        self.t(format!("{p}.bias"), &[dim], BIAS);
    }

    /// A plain `Conv1d` `(c_out, c_in, k)` with a bias.
    fn conv(&mut self, p: &str, [c_out, c_in, k]: [usize; 3], gain: f32, bias: Init) {
        self.t(format!("{p}.weight"), &[c_out, c_in, k], Init::fan_in(c_in * k, gain));
        self.t(format!("{p}.bias"), &[c_out], bias);
    }

    /// A weight-normed convolution: `original1` (the direction `v`, any scale) and `original0` (the
    /// norm `g` of each dim-0 slice) around `g`, and a bias.
    fn conv_weight_norm(&mut self, p: &str, shape: [usize; 3], g: f32, bias_shape: usize, bias: Init) {
        self.t(format!("{p}.parametrizations.weight.original0"), &[shape[0], 1, 1], Init::around(g, 0.1 * g));
        self.t(format!("{p}.parametrizations.weight.original1"), &shape, Init::spread(1.0));
        self.t(format!("{p}.bias"), &[bias_shape], bias);
    }

    /// `encoder::ConformerLayer::load`.
    fn conformer(&mut self, p: &str, cfg: &S3GenConfig) {
        let (d, h, ff) = (cfg.encoder_output_size, cfg.encoder_attention_heads, cfg.encoder_linear_units);
        let a = format!("{p}.self_attn");
        self.layer_norm(&format!("{p}.norm_mha"), d);
        for n in ["linear_q", "linear_k", "linear_v", "linear_out"] {
            self.linear(&format!("{a}.{n}"), d, d, 1.0, Some(BIAS));
        }
        self.linear(&format!("{a}.linear_pos"), d, d, 1.0, None);
        self.t(format!("{a}.pos_bias_u"), &[h, d / h], Init::spread(0.1));
        self.t(format!("{a}.pos_bias_v"), &[h, d / h], Init::spread(0.1));
        self.layer_norm(&format!("{p}.norm_ff"), d);
        self.linear(&format!("{p}.feed_forward.w_1"), ff, d, 1.0, Some(BIAS));
        self.linear(&format!("{p}.feed_forward.w_2"), d, ff, 1.0, Some(BIAS));
    }

    /// `encoder::Embed::load`.
    fn embed(&mut self, p: &str, d: usize) {
        self.linear(&format!("{p}.out.0"), d, d, 1.0, Some(BIAS));
        self.layer_norm(&format!("{p}.out.1"), d);
    }

    /// `estimator::Block1D::load`.
    fn block1d(&mut self, p: &str, c_in: usize, c_out: usize) {
        self.conv(&format!("{p}.block.0"), [c_out, c_in, 3], 1.0, BIAS);
        self.layer_norm(&format!("{p}.block.2"), c_out);
    }

    /// `estimator::Stage::load`: a ResNet block and its transformer blocks.
    fn stage(&mut self, p: &str, c_in: usize, cfg: &S3GenConfig) {
        let c = cfg.decoder_channels;
        let inner = cfg.decoder_num_heads * cfg.decoder_attention_head_dim;
        let r = format!("{p}.0");
        self.block1d(&format!("{r}.block1"), c_in, c);
        self.block1d(&format!("{r}.block2"), c, c);
        self.linear(&format!("{r}.mlp.1"), c, 4 * c, 1.0, Some(BIAS));
        self.conv(&format!("{r}.res_conv"), [c, c_in, 1], 1.0, BIAS);
        for j in 0..cfg.decoder_n_blocks {
            let b = format!("{p}.1.{j}");
            self.layer_norm(&format!("{b}.norm1"), c);
            for n in ["to_q", "to_k", "to_v"] {
                self.linear(&format!("{b}.attn1.{n}"), inner, c, 1.0, None);
            }
            self.linear(&format!("{b}.attn1.to_out.0"), c, inner, 1.0, Some(BIAS));
            self.layer_norm(&format!("{b}.norm3"), c);
            self.linear(&format!("{b}.ff.net.0.proj"), 4 * c, c, 1.0, Some(BIAS));
            self.linear(&format!("{b}.ff.net.2"), c, 4 * c, 1.0, Some(BIAS));
        }
    }

    /// `hift::ResBlock::load`: damped residual branches (each conv at gain 0.5), Snake alphas.
    fn resblock(&mut self, p: &str, c: usize, k: usize) {
        for i in 0..3 {
            self.conv_weight_norm(&format!("{p}.convs1.{i}"), [c, c, k], 0.5, c, BIAS);
            self.conv_weight_norm(&format!("{p}.convs2.{i}"), [c, c, k], 0.5, c, BIAS);
            for a in ["activations1", "activations2"] {
                self.t(format!("{p}.{a}.{i}.alpha"), &[c], Init::around(1.15, 0.09));
            }
        }
    }
}

/// Channels of HiFT's source STFT and of its `conv_post` output (real and imaginary parts, or
/// log-magnitudes and phases).
const STFT_CHANNELS: usize = 2 * STFT_BINS;

/// Every tensor S3Gen loads from `s3gen.safetensors` (the flow and the HiFT vocoder; not the
/// speech tokenizer or the speaker encoder, which synthesis does not use), with its official name,
/// its shape under `cfg` and the role-chosen spread of its synthetic values.
pub fn manifest(cfg: &S3GenConfig) -> Vec<SynthTensor> {
    let mut m = Manifest(Vec::new());
    let d = cfg.encoder_output_size;
    // flow: speaker affine (input: a unit-norm x-vector), token embedding, encoder, projection
    m.t("flow.spk_embed_affine_layer.weight", &[MEL_BINS, cfg.spk_embed_dim], Init::spread(1.0));
    m.t("flow.spk_embed_affine_layer.bias", &[MEL_BINS], BIAS);
    m.t("flow.input_embedding.weight", &[cfg.flow_vocab_size, d], Init::spread(1.0));
    let e = "flow.encoder";
    m.embed(&format!("{e}.embed"), d);
    m.conv(&format!("{e}.pre_lookahead_layer.conv1"), [d, d, 4], 1.0, BIAS);
    m.conv(&format!("{e}.pre_lookahead_layer.conv2"), [d, d, 3], 1.0, BIAS);
    for i in 0..cfg.encoder_num_blocks {
        m.conformer(&format!("{e}.encoders.{i}"), cfg);
    }
    m.conv(&format!("{e}.up_layer.conv"), [d, d, 5], 1.0, BIAS);
    m.embed(&format!("{e}.up_embed"), d);
    for i in 0..cfg.encoder_num_up_blocks {
        m.conformer(&format!("{e}.up_encoders.{i}"), cfg);
    }
    m.layer_norm(&format!("{e}.after_norm"), d);
    // mu: mel-like (a log-mel level with a spread of ~2)
    m.linear("flow.encoder_proj", MEL_BINS, d, 2.0, Some(Init::around(MEL_LEVEL, 1.0)));

    // the estimator
    let c = cfg.decoder_channels;
    let p = "flow.decoder.estimator";
    m.linear(&format!("{p}.time_mlp.linear_1"), 4 * c, TIME_SINUSOID, 1.0, Some(BIAS));
    m.linear(&format!("{p}.time_mlp.linear_2"), 4 * c, 4 * c, 1.0, Some(BIAS));
    m.stage(&format!("{p}.down_blocks.0"), ESTIMATOR_IN, cfg);
    m.conv(&format!("{p}.down_blocks.0.2"), [c, c, 3], 1.0, BIAS);
    for i in 0..cfg.decoder_num_mid_blocks {
        m.stage(&format!("{p}.mid_blocks.{i}"), c, cfg);
    }
    m.stage(&format!("{p}.up_blocks.0"), 2 * c, cfg);
    m.conv(&format!("{p}.up_blocks.0.2"), [c, c, 3], 1.0, BIAS);
    m.block1d(&format!("{p}.final_block"), c, c);
    // the velocity: x moves from the unit noise to a mel-like level with a spread of ~2
    m.conv(&format!("{p}.final_proj"), [MEL_BINS, c, 1], 2.0, Init::around(MEL_LEVEL, 1.0));

    // HiFT
    let p = "mel2wav";
    let (hc, fc) = (cfg.hift_base_channels, cfg.f0_cond_channels);
    for i in 0..5 {
        let c_in = if i == 0 { MEL_BINS } else { fc };
        // the first conv sees a log-mel (mean ~−5): a small gain keeps its output of order 1
        let g = if i == 0 { 0.3 } else { 1.2 };
        m.conv_weight_norm(&format!("{p}.f0_predictor.condnet.{}", 2 * i), [fc, c_in, 3], g, fc, BIAS);
    }
    // F0 = |150 Hz + a few tens of Hz|: voiced, in a speaking voice's range
    m.linear(&format!("{p}.f0_predictor.classifier"), 1, fc, 25.0, Some(Init::around(150.0, 10.0)));
    m.linear(&format!("{p}.m_source.l_linear"), 1, HIFT_HARMONICS, 1.0, Some(BIAS));
    for i in 0..3 {
        let (c_in, c_out) = (hc >> i, hc >> (i + 1));
        let (u, k) = (UPSAMPLE_RATES[i], UPSAMPLE_KERNELS[i]);
        // a transposed conv's output sums c_in·k/u taps; g is the norm of one input channel's slice
        // (c_out·k values) at std √2/√(c_in·k/u) (√2: after a leaky ReLU)
        let g = (2.0 * (c_out * u) as f32 / c_in as f32).sqrt();
        m.conv_weight_norm(&format!("{p}.ups.{i}"), [c_in, c_out, k], g, c_out, BIAS);
        m.conv(&format!("{p}.source_downs.{i}"), [c_out, STFT_CHANNELS, SOURCE_DOWNS[i].0], 1.0, BIAS);
        m.resblock(&format!("{p}.source_resblocks.{i}"), c_out, SOURCE_RESBLOCK_KERNELS[i]);
        for (j, &rk) in RESBLOCK_KERNELS.iter().enumerate() {
            m.resblock(&format!("{p}.resblocks.{}", 3 * i + j), c_out, rk);
        }
    }
    m.conv_weight_norm(&format!("{p}.conv_pre"), [hc, MEL_BINS, 7], 0.3, hc, BIAS);
    // 9 log-magnitudes and 9 phases: magnitudes around e^−1.6 keep the waveform mostly unclipped
    m.conv_weight_norm(&format!("{p}.conv_post"), [STFT_CHANNELS, hc >> 3, 7], 0.6, STFT_CHANNELS, Init::around(-1.6, 0.3));
    m.0
}

/// The synthetic checkpoint of `cfg` under `seed` (values are drawn when the loader reads them).
pub fn checkpoint(cfg: &S3GenConfig, seed: u64) -> Result<Checkpoint> {
    Ok(Checkpoint::synthetic(&format!("synthetic S3Gen (random weights, seed {seed})"), seed, manifest(cfg))?)
}

impl S3Gen {
    /// An S3Gen of dimensions `cfg` with synthetic random weights (see [`crate::synthetic`]): it
    /// runs exactly as a real one does, and synthesises noise.
    pub fn synthetic(cfg: S3GenConfig, seed: u64, dev: &Device) -> Result<S3Gen> {
        let ck = checkpoint(&cfg, seed)?;
        S3Gen::from_checkpoint(cfg, &ck, dev)
    }
}
