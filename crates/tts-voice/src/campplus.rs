//! CAMPPlus, S3Gen's speaker encoder (spec §5.5; `chatterbox/models/s3gen/xvector.py`): 16 kHz audio →
//! Kaldi fbank minus its time mean ([`fbank()`]) → the FCM head ([`head`]) → the x-vector trunk
//! ([`xvector`]) → a `[spk_embed_dim]` (192) embedding, not normalised (S3Gen's flow normalises it).
//! This is `CAMPPlus.inference` on one waveform, as `S3Token2Mel.embed_ref` calls it.
//!
//! Weights: `s3gen.safetensors`, prefix `speaker_encoder.`; BatchNorm in eval mode from the running
//! statistics. Host code, f32 with f64 sums where cheap; the convolutions are im2col + GEMM on
//! rayon's pool ([`ops`]). On Cuda/Emu the head and trunk run through tts-kernels' ops instead
//! ([`device`], [`CampPlus::load_on`]).
pub mod device;
pub mod fbank;
pub mod head;
pub mod ops;
pub mod synthetic;
#[cfg(test)]
mod test_rng;
pub mod xvector;

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::{BackendKind, Device};

pub use fbank::fbank;

use crate::{Result, config};

/// The prefix of CAMPPlus's own `config.json` keys.
pub const KEY_PREFIX: &str = "campplus_";
/// S3Gen's key for the embedding size, read (not claimed: S3Gen checks it) by [`CampPlusConfig::from_json`].
pub const EMBED_KEY: &str = "spk_embed_dim";
/// The prefix of CAMPPlus's tensors in `s3gen.safetensors`.
pub const WEIGHT_PREFIX: &str = "speaker_encoder";
/// The largest size a config may set (the real ones are ≤ 192).
pub const MAX_DIMENSION: usize = 1 << 14;

/// CAMPPlus's sizes: `config.json`'s `campplus_*` keys (a key left out keeps its [`Default`], the
/// real value), and S3Gen's `spk_embed_dim`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CampPlusConfig {
    /// Channels each CAM-dense layer adds (`growth_rate`).
    pub campplus_growth_rate: usize,
    /// Bottleneck width of a CAM-dense layer, in multiples of the growth rate (`bn_size`).
    pub campplus_bn_size: usize,
    /// Channels out of the TDNN layer (`init_channels`).
    pub campplus_init_channels: usize,
    /// Embedding size: S3Gen's `spk_embed_dim` (S3Gen's key, read here without being claimed).
    #[serde(rename = "spk_embed_dim")]
    pub embedding_size: usize,
}

impl Default for CampPlusConfig {
    fn default() -> Self {
        CampPlusConfig { campplus_growth_rate: 32, campplus_bn_size: 4, campplus_init_channels: 128, embedding_size: 192 }
    }
}

impl CampPlusConfig {
    /// The defaults overridden by the `campplus_*` keys of `v` (a `config.json` object; `file` names
    /// it in errors) and by its `spk_embed_dim`. An unknown `campplus_` key, a wrong type or a value
    /// out of range is an [`crate::Error::Config`] naming the key.
    pub fn from_json(file: &Path, v: &Value) -> Result<CampPlusConfig> {
        config::from_json(file, v)
    }

    /// Checks the sizes (as [`Self::from_json`] does), for a config built in memory.
    pub fn validate(&self) -> Result<()> {
        config::validate(self)
    }

    /// The trunk's sizes.
    pub fn sizes(&self) -> xvector::Sizes {
        xvector::Sizes {
            growth: self.campplus_growth_rate,
            bn_size: self.campplus_bn_size,
            init_channels: self.campplus_init_channels,
            embedding: self.embedding_size,
        }
    }
}

impl config::Section for CampPlusConfig {
    fn owns(key: &str) -> bool {
        key.starts_with(KEY_PREFIX) || key == EMBED_KEY
    }

    fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        for (key, v) in [
            ("campplus_growth_rate", self.campplus_growth_rate),
            ("campplus_bn_size", self.campplus_bn_size),
            ("campplus_init_channels", self.campplus_init_channels),
            (EMBED_KEY, self.embedding_size),
        ] {
            if v == 0 || v > MAX_DIMENSION {
                return Err((key, format!("{v} is out of range (1..={MAX_DIMENSION})")));
            }
        }
        if self.campplus_bn_size * self.campplus_growth_rate < 2 {
            return Err(("campplus_bn_size", "bn_size · growth_rate must be at least 2 (the CAM layer halves it)".into()));
        }
        Ok(())
    }
}

/// The fewest 16 kHz samples [`CampPlus::embed`] takes: three fbank frames (`400 + 2·160`), which
/// the strided TDNN layer turns into two, the fewest an unbiased standard deviation is defined for.
pub const MIN_SAMPLES: usize = fbank::FRAME_LEN + 2 * fbank::FRAME_SHIFT;

/// The loaded speaker encoder.
pub struct CampPlus {
    net: Net,
    embedding_size: usize,
}

/// Where the network (head and trunk) runs: on the host in f32, or on a kernel backend
/// ([`device::DeviceCampPlus`]).
enum Net {
    Host(Box<(head::Head, xvector::XVector)>),
    Device(Box<device::DeviceCampPlus>),
}

impl CampPlus {
    /// Reads `speaker_encoder.*` from `ckpt` (`s3gen.safetensors`), every tensor's shape checked
    /// against `config`.
    pub fn load(ckpt: &Checkpoint, config: &CampPlusConfig) -> Result<CampPlus> {
        CampPlus::load_on(ckpt, config, &Device::cpu())
    }

    /// [`Self::load`] with the network on `dev`: on the Cpu backend the host network (the parity
    /// path), on Cuda or Emu the [`device`] one; both in f32 (the device's embedding is the host's
    /// within f32 rounding). The fbank stays on the host.
    pub fn load_on(ckpt: &Checkpoint, config: &CampPlusConfig, dev: &Device) -> Result<CampPlus> {
        config.validate()?;
        let net = match dev.kind() {
            BackendKind::Cpu => Net::Host(Box::new((
                head::Head::load(ckpt, &format!("{WEIGHT_PREFIX}.head"))?,
                xvector::XVector::load(ckpt, &format!("{WEIGHT_PREFIX}.xvector"), config.sizes())?,
            ))),
            BackendKind::Cuda | BackendKind::Emu => {
                Net::Device(Box::new(device::DeviceCampPlus::load(ckpt, WEIGHT_PREFIX, config.sizes(), dev)?))
            }
        };
        Ok(CampPlus { net, embedding_size: config.embedding_size })
    }

    /// The kind of backend the network runs on.
    pub fn backend(&self) -> BackendKind {
        match &self.net {
            Net::Host(_) => BackendKind::Cpu,
            Net::Device(d) => d.device().kind(),
        }
    }

    /// The embedding size (`spk_embed_dim`).
    pub fn embedding_size(&self) -> usize {
        self.embedding_size
    }

    /// The x-vector of `wav_16k` (mono, 16 kHz), `[spk_embed_dim]`, not normalised.
    ///
    /// Errors ([`crate::Error::Audio`]): no samples, a non-finite sample, fewer than [`MIN_SAMPLES`].
    pub fn embed(&self, wav_16k: &[f32]) -> Result<Vec<f32>> {
        fbank::check_audio(wav_16k, MIN_SAMPLES, "CAMPPlus (3 fbank frames)")?;
        let (feats, t) = fbank(wav_16k)?;
        match &self.net {
            Net::Host(net) => {
                let (head, xvector) = &**net;
                debug_assert!(xvector.frames(t) >= 2);
                Ok(xvector.forward(&head.forward(&feats, t), t))
            }
            Net::Device(d) => d.forward(&feats, t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use serde_json::json;

    fn fixture_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/campplus_a")
    }

    #[test]
    fn config_reads_its_keys_and_spk_embed_dim_and_names_the_key_at_fault() {
        let f = Path::new("config.json");
        assert_eq!(CampPlusConfig::from_json(f, &json!({})).unwrap(), CampPlusConfig::default());
        let c = CampPlusConfig::from_json(
            f,
            &json!({"campplus_growth_rate": 8, "campplus_bn_size": 2, "spk_embed_dim": 80, "hidden_size": 3, "tokenizer_n_head": 1}),
        )
        .unwrap();
        assert_eq!(
            c,
            CampPlusConfig { campplus_growth_rate: 8, campplus_bn_size: 2, campplus_init_channels: 128, embedding_size: 80 }
        );
        for (v, key) in [
            (json!({"campplus_growth": 8}), "campplus_growth"),
            (json!({"campplus_bn_size": "4"}), "campplus_bn_size"),
            (json!({"campplus_init_channels": 0}), "campplus_init_channels"),
            (json!({"spk_embed_dim": -1}), "spk_embed_dim"),
            (json!({"spk_embed_dim": 0}), "spk_embed_dim"),
            (json!({"campplus_bn_size": 1, "campplus_growth_rate": 1}), "campplus_bn_size"),
        ] {
            match CampPlusConfig::from_json(f, &v) {
                Err(Error::Config { key: Some(k), .. }) => assert_eq!(k, key, "{v}"),
                other => panic!("{v}: {other:?}"),
            }
        }
        assert!(matches!(CampPlusConfig::from_json(f, &json!([1])), Err(Error::Config { key: None, .. })));
    }

    /// The synthetic manifest lists exactly the tensors of a real `speaker_encoder` (the campplus_a
    /// fixture's, written by the reference under the same config), shapes included.
    #[test]
    fn the_synthetic_manifest_is_the_reference_weight_set() {
        let dir = fixture_dir();
        let v: Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        let cfg = CampPlusConfig::from_json(&dir.join("config.json"), &v).unwrap();
        let ck = Checkpoint::open(&dir.join("s3gen.safetensors")).unwrap();
        let mut real: Vec<(String, Vec<usize>)> = ck
            .names()
            .into_iter()
            .filter(|n| n.starts_with("speaker_encoder.") && !n.ends_with("num_batches_tracked"))
            .map(|n| (n.to_string(), ck.shape(n).unwrap().to_vec()))
            .collect();
        let mut synth: Vec<(String, Vec<usize>)> = synthetic::manifest(&cfg).into_iter().map(|t| (t.name, t.shape)).collect();
        real.sort();
        synth.sort();
        assert_eq!(real.len(), synth.len());
        assert_eq!(real, synth);
    }

    #[test]
    fn bad_audio_and_mismatched_weights_are_typed_errors() {
        let cfg = CampPlusConfig { campplus_growth_rate: 4, campplus_bn_size: 2, campplus_init_channels: 8, embedding_size: 5 };
        let seed = tts_kernels::testing::fresh_seed();
        println!("seed {seed}");
        let model = CampPlus::synthetic(&cfg, seed).unwrap();
        let wav = |n: usize| (0..n).map(|i| (i as f32 * 0.05).sin() * 0.3).collect::<Vec<f32>>();
        for n in [0, 1, 399, 400, MIN_SAMPLES - 1] {
            assert!(matches!(model.embed(&wav(n)), Err(Error::Audio { .. })), "{n} samples");
        }
        let e = model.embed(&wav(MIN_SAMPLES)).unwrap();
        assert_eq!(e.len(), 5);
        assert!(e.iter().all(|v| v.is_finite()), "{e:?}");
        let mut w = wav(4000);
        w[1234] = f32::NEG_INFINITY;
        let msg = model.embed(&w).unwrap_err().to_string();
        assert!(msg.contains("sample 1234"), "{msg}");
        // weights of another config: the loader names the tensor whose shape does not fit
        let other = CampPlusConfig { campplus_growth_rate: 6, ..cfg.clone() };
        let msg = CampPlus::load(&synthetic::checkpoint(&cfg, seed).unwrap(), &other).err().unwrap().to_string();
        assert!(msg.contains("speaker_encoder.xvector.block1.tdnnd1"), "{msg}");
        let bad = CampPlusConfig { campplus_growth_rate: 0, ..cfg.clone() };
        assert!(matches!(CampPlus::synthetic(&bad, seed), Err(Error::Config { .. })));
        assert!(matches!(CampPlus::load(&synthetic::checkpoint(&cfg, seed).unwrap(), &bad), Err(Error::Config { .. })));
    }
}
