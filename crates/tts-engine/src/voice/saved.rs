//! Saved voices: [`Conditionals`] as a safetensors file (`voice.safetensors`, layout in
//! `docs/voices.md`).
//!
//! The tensors carry the names, dtypes and shapes of `conds.pt` (`Conditionals.save` of the
//! reference), so a Python user can rebuild the reference's `Conditionals` from them in three lines:
//!
//! | tensor | dtype | shape |
//! |---|---|---|
//! | `t3.speaker_emb` | F32 | (1, E) |
//! | `t3.cond_prompt_speech_tokens` | I64 | (1, P) |
//! | `t3.emotion_adv` | F32 | (1, 1, 1) |
//! | `gen.prompt_token` | I64 | (1, Tp) |
//! | `gen.prompt_token_len` | I64 | (1,) |
//! | `gen.prompt_feat` | F32 | (1, F, 80) |
//! | `gen.embedding` | F32 | (1, D) |
//!
//! The header's `__metadata__` holds `format` = [`FORMAT`], `version` = [`VERSION`] and free-form
//! provenance (who wrote it, the source audio's SHA-256, the resampler, ...): [`VoiceMeta`].
//!
//! Files are written deterministically (tensors and metadata keys in sorted order, data in the
//! order of the header), through a temporary file renamed into place. A load checks everything: the
//! format and version, exactly these tensors with these dtypes and ranks, finite values, token ids,
//! and that `gen.prompt_token_len` fits; a problem is an [`Error::Voice`] naming the file.
use std::collections::BTreeMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::{Conditionals, MEL_BINS, S3GenConds, T3Conds};
use crate::{Error, Result};

/// `__metadata__["format"]` of a saved voice.
pub const FORMAT: &str = "chatterbox-voice";
/// `__metadata__["version"]` this build writes and reads.
pub const VERSION: &str = "1";
/// The largest saved voice read (a 10 s reference takes about 170 KB).
const MAX_FILE_BYTES: u64 = 64 << 20;

/// Provenance stored with a voice: free-form string pairs (`format` and `version` are reserved and
/// written by [`Conditionals::save`]). Keys used by the engine: `created_by`, `source_sha256`,
/// `source_sample_rate`, `source_channels`, `source_seconds`, `resampler`.
pub type VoiceMeta = BTreeMap<String, String>;

const NAMES: [&str; 7] = [
    "gen.embedding",
    "gen.prompt_feat",
    "gen.prompt_token",
    "gen.prompt_token_len",
    "t3.cond_prompt_speech_tokens",
    "t3.emotion_adv",
    "t3.speaker_emb",
];

enum Data<'a> {
    F32(&'a [f32]),
    I64(Vec<i64>),
}

impl Conditionals {
    /// The voice as the bytes of a safetensors file (see the module docs), with `meta`.
    pub fn to_safetensors(&self, meta: &VoiceMeta) -> Result<Vec<u8>> {
        self.validate().map_err(|msg| Error::Voice { path: "(voice to save)".into(), msg })?;
        let (t3, g) = (&self.t3, &self.s3gen);
        let ids = |v: &[u32]| v.iter().map(|&t| t as i64).collect::<Vec<i64>>();
        let emotion = [t3.emotion_adv];
        let tensors: BTreeMap<&str, (Vec<usize>, Data<'_>)> = BTreeMap::from([
            ("gen.embedding", (vec![1, g.embedding.len()], Data::F32(&g.embedding))),
            ("gen.prompt_feat", (vec![1, g.prompt_feat_frames, MEL_BINS], Data::F32(&g.prompt_feat))),
            ("gen.prompt_token", (vec![1, g.prompt_token.len()], Data::I64(ids(&g.prompt_token)))),
            ("gen.prompt_token_len", (vec![1], Data::I64(vec![g.prompt_token_len as i64]))),
            (
                "t3.cond_prompt_speech_tokens",
                (vec![1, t3.cond_prompt_speech_tokens.len()], Data::I64(ids(&t3.cond_prompt_speech_tokens))),
            ),
            ("t3.emotion_adv", (vec![1, 1, 1], Data::F32(&emotion))),
            ("t3.speaker_emb", (vec![1, t3.speaker_emb.len()], Data::F32(&t3.speaker_emb))),
        ]);
        let mut header = serde_json::Map::new();
        let mut metadata: BTreeMap<String, String> = meta.clone();
        metadata.insert("format".into(), FORMAT.into());
        metadata.insert("version".into(), VERSION.into());
        header.insert("__metadata__".into(), serde_json::to_value(&metadata).expect("strings serialise"));
        let mut data = Vec::new();
        for (name, (shape, d)) in &tensors {
            let start = data.len();
            let dtype = match d {
                Data::F32(v) => {
                    v.iter().for_each(|x| data.extend_from_slice(&x.to_le_bytes()));
                    "F32"
                }
                Data::I64(v) => {
                    v.iter().for_each(|x| data.extend_from_slice(&x.to_le_bytes()));
                    "I64"
                }
            };
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
            );
        }
        // serde_json's map is sorted (no preserve_order feature): a deterministic header
        let mut json = serde_json::to_vec(&serde_json::Value::Object(header)).expect("a JSON object serialises");
        while !json.len().is_multiple_of(8) {
            json.push(b' '); // the format pads the header with spaces to an 8-byte boundary
        }
        let mut out = Vec::with_capacity(8 + json.len() + data.len());
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// Writes the voice to `path` as a safetensors file (see the module docs), through a temporary
    /// file renamed into place: a failure leaves nothing half-written.
    pub fn save(&self, path: &Path, meta: &VoiceMeta) -> Result<()> {
        let bytes = self.to_safetensors(meta)?;
        let err = |e: std::io::Error| Error::Output { path: path.to_path_buf(), detail: e.to_string() };
        let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        tmp_name.push(".partial");
        let tmp = path.with_file_name(tmp_name);
        std::fs::write(&tmp, &bytes).and_then(|_| std::fs::rename(&tmp, path)).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(e)
        })
    }

    /// Reads a voice saved by [`Conditionals::save`], with its metadata.
    pub fn load_saved(path: &Path) -> Result<(Conditionals, VoiceMeta)> {
        let err = |msg: String| Error::Voice { path: path.to_path_buf(), msg };
        let len = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?.len();
        if len > MAX_FILE_BYTES {
            return Err(err(format!("{len} bytes: larger than any saved voice ({MAX_FILE_BYTES} bytes at most)")));
        }
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
        Self::from_safetensors(&bytes).map_err(err)
    }

    /// [`Conditionals::load_saved`] on the bytes of a file (its error without the file's name).
    pub fn from_safetensors(bytes: &[u8]) -> Result<(Conditionals, VoiceMeta), String> {
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| format!("not a safetensors file, or a truncated one: {e}"))?;
        let meta: VoiceMeta = header.metadata().clone().unwrap_or_default().into_iter().collect();
        match (meta.get("format").map(String::as_str), meta.get("version").map(String::as_str)) {
            (Some(FORMAT), Some(VERSION)) => {}
            (Some(FORMAT), v) => {
                let v = v.map_or("(none)".to_string(), |v| format!("{v:?}"));
                return Err(format!("saved voice version {v}; this build reads version {VERSION}"));
            }
            _ => {
                return Err(format!(
                    "a safetensors file, but not a saved voice (its metadata has no format \"{FORMAT}\"; \
                     model checkpoints are not voices)"
                ));
            }
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| format!("corrupt safetensors file: {e}"))?;
        let mut names: Vec<String> = st.names().into_iter().cloned().collect();
        names.sort();
        if names != NAMES {
            let missing: Vec<&str> = NAMES.iter().copied().filter(|n| !names.iter().any(|m| m == n)).collect();
            let extra: Vec<&String> = names.iter().filter(|m| !NAMES.contains(&m.as_str())).collect();
            return Err(format!("expected exactly the tensors {NAMES:?}; missing {missing:?}, unexpected {extra:?}"));
        }
        let get = |name: &str, dtype: Dtype, rank: usize| -> Result<(Vec<usize>, &[u8]), String> {
            let t = st.tensor(name).map_err(|e| format!("{name}: {e}"))?;
            if t.dtype() != dtype {
                return Err(format!("{name}: dtype {:?}, expected {dtype:?}", t.dtype()));
            }
            let shape = t.shape().to_vec();
            if shape.len() != rank || shape[0] != 1 {
                return Err(format!("{name}: shape {shape:?}, expected rank {rank} with a leading 1"));
            }
            Ok((shape, t.data()))
        };
        let f32s = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<f32>>();
        let ids = |name: &str, b: &[u8]| -> Result<Vec<u32>, String> {
            b.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .enumerate()
                .map(|(i, t)| u32::try_from(t).map_err(|_| format!("{name}: token {t} at index {i} is not a valid token id")))
                .collect()
        };
        let (_, b) = get("t3.speaker_emb", Dtype::F32, 2)?;
        let speaker_emb = f32s(b);
        let (_, b) = get("t3.cond_prompt_speech_tokens", Dtype::I64, 2)?;
        let cond_prompt_speech_tokens = ids("t3.cond_prompt_speech_tokens", b)?;
        let (shape, b) = get("t3.emotion_adv", Dtype::F32, 3)?;
        if shape != [1, 1, 1] {
            return Err(format!("t3.emotion_adv: shape {shape:?}, expected [1, 1, 1]"));
        }
        let emotion_adv = f32s(b)[0];
        let (_, b) = get("gen.prompt_token", Dtype::I64, 2)?;
        let prompt_token = ids("gen.prompt_token", b)?;
        let (_, b) = get("gen.prompt_token_len", Dtype::I64, 1)?;
        let n = i64::from_le_bytes(b.try_into().map_err(|_| "gen.prompt_token_len: expected one element".to_string())?);
        let prompt_token_len = usize::try_from(n).map_err(|_| format!("gen.prompt_token_len: {n} is negative"))?;
        let (shape, b) = get("gen.prompt_feat", Dtype::F32, 3)?;
        if shape[2] != MEL_BINS {
            return Err(format!("gen.prompt_feat: shape {shape:?}, expected (1, frames, {MEL_BINS})"));
        }
        let prompt_feat = f32s(b);
        let (_, b) = get("gen.embedding", Dtype::F32, 2)?;
        let embedding = f32s(b);
        let voice = Conditionals {
            t3: T3Conds { speaker_emb, cond_prompt_speech_tokens, emotion_adv },
            s3gen: S3GenConds { prompt_token, prompt_token_len, prompt_feat, prompt_feat_frames: shape[1], embedding },
        };
        voice.validate()?;
        Ok((voice, meta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voice(seed: u64) -> Conditionals {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut f = |n: usize| (0..n).map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5).collect::<Vec<f32>>();
        let frames = 6 + (seed as usize % 5);
        let (speaker_emb, prompt_feat, embedding) = (f(7), f(frames * MEL_BINS), f(5));
        Conditionals {
            t3: T3Conds {
                speaker_emb,
                cond_prompt_speech_tokens: (0..9).map(|i| (i * 701 + seed as u32) % 6561).collect(),
                emotion_adv: 0.7,
            },
            s3gen: S3GenConds {
                prompt_token: (0..frames as u32 / 2).map(|i| i * 3 + 1).collect(),
                prompt_token_len: frames / 2,
                prompt_feat,
                prompt_feat_frames: frames,
                embedding,
            },
        }
    }

    #[test]
    fn a_voice_round_trips_bit_for_bit_and_writes_the_same_bytes() {
        let seed = tts_kernels::testing::fresh_seed();
        let v = voice(seed);
        let meta = VoiceMeta::from([("source_sha256".to_string(), "ab".repeat(32)), ("created_by".into(), "test".into())]);
        let a = v.to_safetensors(&meta).unwrap();
        let b = v.to_safetensors(&meta).unwrap();
        assert_eq!(a, b, "seed {seed}: the bytes differ between two saves");
        let (back, m) = Conditionals::from_safetensors(&a).unwrap();
        assert_eq!(back, v, "seed {seed}");
        let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
        assert_eq!(bits(&back.s3gen.prompt_feat), bits(&v.s3gen.prompt_feat));
        assert_eq!(m["format"], FORMAT);
        assert_eq!(m["source_sha256"], "ab".repeat(32));
        // the real safetensors reader agrees on the layout
        let st = SafeTensors::deserialize(&a).unwrap();
        assert_eq!(st.tensor("gen.prompt_feat").unwrap().shape(), [1, v.s3gen.prompt_feat_frames, MEL_BINS]);
    }

    #[test]
    fn damaged_or_foreign_files_are_refused_with_the_reason() {
        let v = voice(3);
        let good = v.to_safetensors(&VoiceMeta::new()).unwrap();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "not a safetensors"),
            ("text", b"hello, this is not a voice".to_vec(), "not a safetensors"),
            ("truncated", good[..good.len() - 5].to_vec(), "truncated"),
            ("header only", good[..40].to_vec(), "not a safetensors"),
        ];
        for (what, bytes, want) in cases {
            let e = Conditionals::from_safetensors(&bytes).unwrap_err();
            assert!(e.contains(want), "{what}: {e}");
        }
        // a checkpoint (no voice metadata) is not a voice
        let mut ck = Vec::new();
        let header = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        ck.extend_from_slice(&(header.len() as u64).to_le_bytes());
        ck.extend_from_slice(header);
        ck.extend_from_slice(&1f32.to_le_bytes());
        assert!(Conditionals::from_safetensors(&ck).unwrap_err().contains("not a saved voice"));
        // a NaN, a bad token length, a wrong version
        let mut bad = v.clone();
        bad.t3.speaker_emb[2] = f32::NAN;
        assert!(bad.to_safetensors(&VoiceMeta::new()).is_err());
        let mut bad = v.clone();
        bad.s3gen.prompt_token_len = bad.s3gen.prompt_token.len() + 1;
        assert!(bad.to_safetensors(&VoiceMeta::new()).is_err());
        let mut other = good.clone();
        let at = other.windows(13).position(|w| w == b"\"version\":\"1\"").expect("the version is in the header");
        other[at + 11] = b'9';
        assert!(Conditionals::from_safetensors(&other).unwrap_err().contains("version \"9\""));
    }
}
