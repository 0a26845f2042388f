//! `CausalMaskedDiffWithXvec.inference` for a batch (spec §4.1, §4.3): speaker projection, the
//! token encoder, the conditioning from the prompt mel, and the conditional flow matching with
//! classifier-free guidance (cosine schedule, Euler steps, both halves in one estimator call).
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::ops;
use tts_kernels::{DType, Device, Tensor};

use crate::config::S3GenConfig;
use crate::encoder::{EncoderOut, FlowEncoder};
use crate::estimator::{ESTIMATOR_IN, Estimator};
use crate::layers::{Lens, Linear};
use crate::{CFM_CFG_RATE, Error, MEL_BINS, MEL_FRAMES_PER_TOKEN, Result, noise};

/// One request of the flow: the voice's prompt (tokens, mel, x-vector) and the speech tokens.
#[derive(Clone, Copy, Debug)]
pub struct FlowRequest<'a> {
    pub prompt_tokens: &'a [u32],
    /// `[frames, 80]` log-mel of the prompt audio (`prompt_feat`).
    pub prompt_feat: &'a [f32],
    /// The x-vector (`embedding`), `spk_embed_dim` values.
    pub embedding: &'a [f32],
    pub tokens: &'a [u32],
    /// The CFM start noise `[80, 2·(Tp + Ts)]` (channel-major, as `torch.randn_like(mu)`); `None`
    /// draws it from `seed`.
    pub noise: Option<&'a [f32]>,
    pub seed: u64,
}

impl FlowRequest<'_> {
    /// Mel frames of the whole sequence (prompt + generated): `2·(Tp + Ts)`.
    pub fn total_frames(&self) -> usize {
        MEL_FRAMES_PER_TOKEN * (self.prompt_tokens.len() + self.tokens.len())
    }

    pub fn prompt_frames(&self) -> usize {
        self.prompt_feat.len() / MEL_BINS
    }
}

/// The cosine time schedule `1 − cos(linspace(0, 1, n + 1)·π/2)` in f32, as flow_matching.py.
pub fn t_span(n: usize) -> Vec<f32> {
    (0..=n)
        .map(|i| {
            let l = linspace_f32(0.0, 1.0, n + 1, i);
            1.0 - (l * 0.5 * std::f32::consts::PI).cos()
        })
        .collect()
}

/// Element `i` of `torch.linspace(start, end, steps)` in f32 (the first half from the start, the
/// second half from the end, as ATen's CPU kernel).
pub fn linspace_f32(start: f32, end: f32, steps: usize, i: usize) -> f32 {
    if steps <= 1 {
        return start;
    }
    let step = (end - start) / (steps - 1) as f32;
    if i < steps / 2 { start + step * i as f32 } else { end - step * (steps - 1 - i) as f32 }
}

/// The host inputs of the Euler steps, on the device (see `Flow::prepare_steps`).
struct Steps {
    lens2: Lens,
    /// The time schedule, `n_steps + 1` values.
    ts: Vec<f32>,
    /// `[n_steps·2B, 320]` time sinusoids (compute dtype); None without steps.
    sinusoids: Option<Tensor>,
}

/// The flow: token encoder + estimator.
pub struct Flow {
    spk_affine: Linear,
    pub encoder: FlowEncoder,
    pub estimator: Estimator,
    spk_dim: usize,
}

/// The flow's intermediate results for a batch (the parity cases compare them).
pub struct FlowOut {
    pub encoder: EncoderOut,
    /// `[B, 80]` f32.
    pub spks: Tensor,
    /// `[B, N, 80]` f32: the prompt mel in the first frames, zeros after.
    pub cond: Tensor,
    /// The ODE solution over all frames, `[B, N, 80]` f32.
    pub x: Tensor,
    /// Per request, the generated mel after the prompt frames, `[frames, 80]` (time-major).
    pub mels: Vec<Vec<f32>>,
}

impl Flow {
    pub fn load(ck: &Checkpoint, dev: &Device, cfg: &S3GenConfig) -> Result<Flow> {
        Ok(Flow {
            spk_affine: Linear::load(ck, dev, "flow.spk_embed_affine_layer", MEL_BINS, cfg.spk_embed_dim, true)?,
            encoder: FlowEncoder::load(ck, dev, cfg)?,
            estimator: Estimator::load(ck, dev, cfg)?,
            spk_dim: cfg.spk_embed_dim,
        })
    }

    fn check(&self, reqs: &[FlowRequest<'_>]) -> Result<()> {
        if reqs.is_empty() {
            return Err(Error::Input { request: None, detail: "an empty batch".into() });
        }
        for (i, r) in reqs.iter().enumerate() {
            let bad = |m: String| Err(Error::Input { request: Some(i), detail: m });
            if r.tokens.is_empty() {
                return bad("no speech tokens".into());
            }
            if let Some(t) = r.prompt_tokens.iter().chain(r.tokens).find(|&&t| t as usize >= self.encoder.vocab()) {
                return bad(format!("speech token {t} is outside the flow vocabulary of {}", self.encoder.vocab()));
            }
            if r.embedding.len() != self.spk_dim {
                return bad(format!("x-vector of {} values, expected {}", r.embedding.len(), self.spk_dim));
            }
            if !r.prompt_feat.len().is_multiple_of(MEL_BINS) || r.prompt_frames() > r.total_frames() {
                return bad(format!(
                    "prompt mel of {} values is not [frames ≤ {}, {MEL_BINS}]",
                    r.prompt_feat.len(),
                    r.total_frames()
                ));
            }
            if r.noise.is_some_and(|z| z.len() != MEL_BINS * r.total_frames()) {
                return bad(format!("noise must be [{MEL_BINS}, {}]", r.total_frames()));
            }
            if r.prompt_feat.iter().chain(r.embedding).any(|v| !v.is_finite()) {
                return bad("non-finite prompt mel or x-vector".into());
            }
        }
        Ok(())
    }

    /// Runs the flow for a batch with `n_steps` Euler steps. Every host input (tokens, lengths,
    /// position tables, x-vectors, prompt mels, noise, the time embeddings of every step) goes up
    /// before the first launch; the one read-back is the final mel.
    pub fn inference(&self, dev: &Device, reqs: &[FlowRequest<'_>], n_steps: usize) -> Result<FlowOut> {
        self.check(reqs)?;
        let b = reqs.len();
        // tokens: prompt then speech, padded with −1 (a zero embedding row)
        let tok_lens: Vec<usize> = reqs.iter().map(|r| r.prompt_tokens.len() + r.tokens.len()).collect();
        let t = *tok_lens.iter().max().unwrap_or(&0);
        let mut ids = vec![-1i32; b * t];
        for (i, r) in reqs.iter().enumerate() {
            for (j, &tk) in r.prompt_tokens.iter().chain(r.tokens).enumerate() {
                ids[i * t + j] = tk as i32;
            }
        }
        let n = self.encoder.out_len(t);

        // speaker: F.normalize (then the affine layer)
        let mut e = Vec::with_capacity(b * self.spk_dim);
        for r in reqs {
            let norm = r.embedding.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            e.extend(r.embedding.iter().map(|v| v / norm));
        }
        // cond: the prompt mel in the first frames; the noise, time-major
        let mut cond = vec![0f32; b * n * MEL_BINS];
        let mut z = vec![0f32; b * n * MEL_BINS];
        for (i, r) in reqs.iter().enumerate() {
            cond[i * n * MEL_BINS..][..r.prompt_feat.len()].copy_from_slice(r.prompt_feat);
            let frames = r.total_frames();
            let drawn;
            let noise = match r.noise {
                Some(z) => z,
                None => {
                    drawn = noise::cfm_noise(r.seed, 0..frames);
                    &drawn
                }
            };
            for c in 0..MEL_BINS {
                for f in 0..frames {
                    z[(i * n + f) * MEL_BINS + c] = noise[c * frames + f];
                }
            }
        }
        // uploads
        let enc_in = self.encoder.prepare(&ids, &Lens::new(dev, &tok_lens)?)?;
        let e = Tensor::from_f32(dev, dev.compute_dtype(), &[b, self.spk_dim], &e)?;
        let cond = Tensor::from_f32(dev, DType::F32, &[b, n, MEL_BINS], &cond)?;
        let mut x = Tensor::from_f32(dev, DType::F32, &[b, n, MEL_BINS], &z)?;
        let steps = self.prepare_steps(dev, &enc_in.lens2, b, n_steps)?;

        let encoder = self.encoder.run(enc_in)?;
        if encoder.mu.shape()[1] != n {
            return Err(Error::Misuse(format!("the encoder gave {} frames, expected {n}", encoder.mu.shape()[1])));
        }
        let spks = self.spk_affine.apply(e.view(), DType::F32)?;
        self.solve_prepared(&mut x, &encoder, &spks, &cond, &steps)?;

        let host = x.to_f32_vec()?;
        let mels = reqs
            .iter()
            .enumerate()
            .map(|(i, r)| host[(i * n + r.prompt_frames()) * MEL_BINS..(i * n + r.total_frames()) * MEL_BINS].to_vec())
            .collect();
        Ok(FlowOut { encoder, spks, cond, x, mels })
    }

    /// The estimator input `[2B, N, 320]`: `[x, mu, spks, cond]` for the conditional rows and
    /// `[x, 0, 0, 0]` for the unconditional ones.
    pub fn estimator_input(&self, x: &Tensor, mu: &Tensor, spks: &Tensor, cond: &Tensor) -> Result<Tensor> {
        let (b, n) = (x.shape()[0], x.shape()[1]);
        let dev = x.device();
        let mut inp = Tensor::zeros(dev, DType::F32, &[2 * b, n, ESTIMATOR_IN])?;
        {
            let (mut c, mut u) = inp.view_mut().split_rows_at(b)?;
            ops::write_cols(x.view(), c.reborrow(), 0)?;
            ops::write_cols(x.view(), u.reborrow(), 0)?;
            ops::write_cols(mu.view(), c.reborrow(), MEL_BINS)?;
            ops::write_cols(spks.view().reshape(&[b, 1, MEL_BINS])?, c.reborrow(), 2 * MEL_BINS)?;
            ops::write_cols(cond.view(), c, 3 * MEL_BINS)?;
        }
        Ok(inp)
    }

    /// Euler integration of the CFG-combined velocity from `x` (the noise) in place.
    pub fn solve(&self, x: &mut Tensor, enc: &EncoderOut, spks: &Tensor, cond: &Tensor, n_steps: usize) -> Result<()> {
        let steps = self.prepare_steps(x.device(), &enc.lens, x.shape()[0], n_steps)?;
        self.solve_prepared(x, enc, spks, cond, &steps)
    }

    /// What the Euler steps read from the host, uploaded: the doubled lengths (both CFG halves) of
    /// `lens` and the time embedding of every step.
    fn prepare_steps(&self, dev: &Device, lens: &Lens, b: usize, n_steps: usize) -> Result<Steps> {
        let ts = t_span(n_steps);
        // row k·2B + r: step k's time for each of the 2B rows
        let t_all: Vec<f32> = ts[..n_steps].iter().flat_map(|&t| std::iter::repeat_n(t, 2 * b)).collect();
        let sinusoids = if n_steps > 0 { Some(self.estimator.time_sinusoids(dev, &t_all)?) } else { None };
        Ok(Steps { lens2: lens.doubled()?, ts, sinusoids })
    }

    /// The Euler steps on prepared inputs. Everything they need is set up before the first one: the
    /// estimator input, the time embeddings of every step, the velocity buffer and the estimator's
    /// scratch for this `(2B, N)`; a step then allocates nothing and never waits for the device on
    /// the host: one estimator call and `ops::cfm_euler_cfg`.
    fn solve_prepared(&self, x: &mut Tensor, enc: &EncoderOut, spks: &Tensor, cond: &Tensor, st: &Steps) -> Result<()> {
        let Some(sinusoids) = &st.sinusoids else { return Ok(()) };
        let (b, n) = (x.shape()[0], x.shape()[1]);
        let dev = x.device().clone();
        let mut inp = self.estimator_input(x, &enc.mu, spks, cond)?;
        let t_emb = self.estimator.time_mlp(sinusoids.view())?;
        let mish_t = self.estimator.mish_time(t_emb.view())?;
        let mut sc = self.estimator.scratch(&dev, 2 * b, n)?;
        let mut v = Tensor::uninit(&dev, DType::F32, &[2 * b, n, MEL_BINS])?;
        for k in 0..st.ts.len() - 1 {
            let m = mish_t.view().narrow_rows(k * 2 * b, 2 * b)?;
            self.estimator.forward_into(inp.view(), &st.lens2, m, &mut sc, v.view_mut())?;
            let dt = st.ts[k + 1] - st.ts[k];
            ops::cfm_euler_cfg(x.view_mut(), v.view(), Some(inp.view_mut()), dt, CFM_CFG_RATE)?;
        }
        Ok(())
    }

    /// The estimator on the input rows of one step (`[2B, N, 320]`) at time `t`: the velocity and
    /// the time embedding.
    pub fn velocity(&self, input: &Tensor, lens: &Lens, t: &[f32]) -> Result<(Tensor, Tensor)> {
        let t_emb = self.estimator.time_embedding(input.device(), t)?;
        let v = self.estimator.forward(input.view(), lens, t_emb.view())?;
        Ok((v, t_emb))
    }
}
