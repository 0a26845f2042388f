//! Voices: the [`Conditionals`] T3 and S3Gen speak with, from the built-in `conds.pt` (read here, in
//! pure Rust), a saved voice ([`saved`]: `voice.safetensors`) or a reference recording (computed by
//! the tts-voice crate).
//!
//! ## `conds.pt`
//!
//! `Conditionals.save` writes `torch.save(dict(t3=t3_cond.__dict__, gen=gen_dict), path)`, i.e. torch's
//! zip format: a zip archive (entries normally stored, deflated ones are read too) holding
//! `<archive>/data.pkl` (a protocol-2 pickle of the dict), `<archive>/data/<key>` (one raw
//! little-endian storage per tensor), `<archive>/byteorder`, `<archive>/version` and
//! `<archive>/.data/serialization_id`. The pickle is run by the small VM of [`pickle`], which only
//! knows the opcodes and globals such a file uses; tensors are then read from their storages,
//! honouring offset, size and stride (non-contiguous views are materialised).
//!
//! Layout of the dict, with the shapes of the real built-in voice:
//! `{"t3": {speaker_emb (1,256) f32, clap_emb None, cond_prompt_speech_tokens (1,150) int64,
//! cond_prompt_speech_emb None, emotion_adv (1,1,1) f32}, "gen": {prompt_token (1,157) int64,
//! prompt_token_len (1,) int64, prompt_feat (1,314,80) f32, prompt_feat_len None, embedding (1,192) f32}}`.
pub mod cache;
pub mod pickle;
pub mod saved;

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;

use pickle::{Pickle, TensorRef, Value};

use crate::{Error, Result};

/// The largest `data.pkl` accepted (the real one has 748 bytes). The pickle's objects take up to
/// about 200 bytes of memory per byte of pickle (a tuple per opcode byte).
const MAX_PICKLE_BYTES: u64 = 1 << 16;

/// The most elements a storage or a tensor may have (the real `prompt_feat` has 25,120; ten
/// seconds of reference audio give 40,000). A storage's size comes from the pickle and a deflated
/// entry can declare any size in a small file: without this cap, a few kilobytes could ask for
/// gigabytes. A view may not have more elements than its storage either (`Conditionals.save` writes
/// no broadcast views), so that what is read stays in proportion to the file.
const MAX_ELEMENTS: usize = 1 << 22;

/// Mel bins of `prompt_feat` (S3Gen's 80-bin log-mel).
pub const MEL_BINS: usize = 80;

/// The T3 half of the conditionals (`T3Cond`).
#[derive(Clone, Debug, PartialEq)]
pub struct T3Conds {
    /// Speaker embedding, `[speaker_embed_size]` (256 for the real model; stored as `(1, 256)`).
    pub speaker_emb: Vec<f32>,
    /// Speech-token prompt, `[P]` (150 for the built-in voice; stored as `(1, P)` int64). Empty if the
    /// file holds `None`.
    pub cond_prompt_speech_tokens: Vec<u32>,
    /// Emotion exaggeration (stored as a `(1, 1, 1)` tensor; 0.5 by default).
    pub emotion_adv: f32,
}

/// The S3Gen half of the conditionals (the `ref_dict` of `S3Gen.embed_ref`).
#[derive(Clone, Debug, PartialEq)]
pub struct S3GenConds {
    /// Prompt speech tokens, `[Tp]` (157 for the built-in voice; stored as `(1, Tp)` int64).
    pub prompt_token: Vec<u32>,
    /// `prompt_token_len[0]`: the valid prefix of `prompt_token` (`<= Tp`; equal to `Tp` in practice).
    pub prompt_token_len: usize,
    /// Prompt mel features, `[prompt_feat_frames, MEL_BINS]` row-major (stored as `(1, frames, 80)`;
    /// the reference expects `frames == 2 * Tp`, 314 for the built-in voice, but does not enforce it).
    pub prompt_feat: Vec<f32>,
    /// Frames of `prompt_feat`.
    pub prompt_feat_frames: usize,
    /// CAMPPlus x-vector, `[spk_embed_dim]` (192 for the real model; stored as `(1, 192)`).
    pub embedding: Vec<f32>,
}

/// The conditionals of `conds.pt`: the voice Chatterbox speaks with when no reference audio is given.
#[derive(Clone, Debug, PartialEq)]
pub struct Conditionals {
    /// The `"t3"` half.
    pub t3: T3Conds,
    /// The `"gen"` half (`gen` is a reserved word in Rust 2024).
    pub s3gen: S3GenConds,
}

impl Conditionals {
    /// Checks the voice is usable whatever the model: non-empty, finite embeddings and prompt mel,
    /// `prompt_feat` of `prompt_feat_frames × 80`, `prompt_token_len` within `prompt_token`, a finite
    /// `emotion_adv`. (Its sizes against a model are [`crate::speak::Engine::check_request`]'s.)
    pub fn validate(&self) -> Result<(), String> {
        let finite = |what: &str, v: &[f32]| match v.iter().position(|x| !x.is_finite()) {
            Some(i) => Err(format!("{what}: value {} at index {i} is not finite", v[i])),
            None if v.is_empty() => Err(format!("{what}: empty")),
            None => Ok(()),
        };
        finite("t3.speaker_emb", &self.t3.speaker_emb)?;
        finite("t3.emotion_adv", &[self.t3.emotion_adv])?;
        finite("gen.embedding", &self.s3gen.embedding)?;
        let g = &self.s3gen;
        if g.prompt_feat.len() != g.prompt_feat_frames * MEL_BINS {
            return Err(format!(
                "gen.prompt_feat: {} values for {} frames of {MEL_BINS} bins",
                g.prompt_feat.len(),
                g.prompt_feat_frames
            ));
        }
        if g.prompt_feat_frames > 0 {
            finite("gen.prompt_feat", &g.prompt_feat)?;
        }
        if g.prompt_token_len > g.prompt_token.len() {
            return Err(format!(
                "gen.prompt_token_len: {} is more than the {} tokens of gen.prompt_token",
                g.prompt_token_len,
                g.prompt_token.len()
            ));
        }
        Ok(())
    }

    /// Reads a `conds.pt` written by `Conditionals.save` (`torch.save` zip format).
    ///
    /// Every problem (missing file, not a zip, no `data.pkl`, unsupported pickle opcode or global,
    /// missing key, wrong dtype or shape, storage of the wrong size or failing its CRC, token out of
    /// range) is an [`Error::Voice`] naming the file and the problem.
    pub fn load(path: &Path) -> Result<Conditionals> {
        let err = |msg: String| Error::Voice { path: path.to_path_buf(), msg };
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
        Self::parse(bytes).map_err(err)
    }

    /// [`Conditionals::load`] on the bytes of a file (its error without the file's name). Public
    /// only for the fuzz targets (`fuzz/`); not part of the API.
    #[doc(hidden)]
    pub fn parse(bytes: Vec<u8>) -> Result<Conditionals, String> {
        let mut archive = Archive::open(bytes)?;
        let pkl = pickle::unpickle(&archive.read_entry("data.pkl", MAX_PICKLE_BYTES)?)?;
        let root = Dict::new(&pkl, pkl.root(), "the top level")?;
        let t3 = Dict::new(&pkl, root.get("t3")?, "t3")?;
        let generator = Dict::new(&pkl, root.get("gen")?, "gen")?;

        let speaker_emb = archive.f32_tensor(&pkl, t3.get("speaker_emb")?, "t3.speaker_emb")?;
        let speaker_emb = speaker_emb.with_rank_batch1(2, "t3.speaker_emb")?.data;
        expect_none(&t3, "clap_emb", "clap embeddings are not supported by Chatterbox")?;
        expect_none(
            &t3,
            "cond_prompt_speech_emb",
            "a precomputed prompt embedding is unsupported; it is recomputed from the tokens",
        )?;
        let cond_prompt_speech_tokens = match t3.get("cond_prompt_speech_tokens")? {
            Value::None => Vec::new(),
            v => {
                let what = "t3.cond_prompt_speech_tokens";
                tokens(archive.i64_tensor(&pkl, v, what)?.with_rank_batch1(2, what)?.data, what)?
            }
        };
        let emotion_adv = match t3.get("emotion_adv")? {
            Value::Float(f) => f as f32,
            Value::Int(i) => i as f32,
            v => {
                let t = archive.f32_tensor(&pkl, v, "t3.emotion_adv")?;
                match t.data[..] {
                    [x] => x,
                    _ => {
                        return Err(format!("t3.emotion_adv: expected one element (shape (1, 1, 1)), found shape {:?}", t.shape));
                    }
                }
            }
        };

        let what = "gen.prompt_token";
        let prompt_token =
            tokens(archive.i64_tensor(&pkl, generator.get("prompt_token")?, what)?.with_rank_batch1(2, what)?.data, what)?;
        let what = "gen.prompt_token_len";
        let len = archive.i64_tensor(&pkl, generator.get("prompt_token_len")?, what)?;
        let prompt_token_len = match (&len.shape[..], &len.data[..]) {
            ([1], &[n]) if n >= 0 && n as u64 <= prompt_token.len() as u64 => n as usize,
            ([1], &[n]) => {
                return Err(format!("{what}: {n} is outside 0..={} (the length of gen.prompt_token)", prompt_token.len()));
            }
            (s, _) => return Err(format!("{what}: expected shape (1,), found {s:?}")),
        };
        let what = "gen.prompt_feat";
        let feat = archive.f32_tensor(&pkl, generator.get("prompt_feat")?, what)?.with_rank_batch1(3, what)?;
        if feat.shape[2] != MEL_BINS {
            return Err(format!("{what}: expected shape (1, frames, {MEL_BINS}), found {:?}", feat.shape));
        }
        let prompt_feat_frames = feat.shape[1];
        match generator.get("prompt_feat_len")? {
            Value::None => {}
            v => {
                let what = "gen.prompt_feat_len";
                let t = archive.i64_tensor(&pkl, v, what)?;
                if t.data[..] != [prompt_feat_frames as i64] {
                    return Err(format!(
                        "{what}: expected None or [{prompt_feat_frames}] (the frames of gen.prompt_feat), found {:?}",
                        t.data
                    ));
                }
            }
        }
        let what = "gen.embedding";
        let embedding = archive.f32_tensor(&pkl, generator.get("embedding")?, what)?.with_rank_batch1(2, what)?.data;

        let voice = Conditionals {
            t3: T3Conds { speaker_emb, cond_prompt_speech_tokens, emotion_adv },
            s3gen: S3GenConds { prompt_token, prompt_token_len, prompt_feat: feat.data, prompt_feat_frames, embedding },
        };
        voice.validate()?;
        Ok(voice)
    }
}

/// A string-keyed view of a pickled dict, for lookups with good error messages.
struct Dict<'a> {
    pkl: &'a Pickle,
    dict: Value,
    name: &'static str,
}

impl<'a> Dict<'a> {
    fn new(pkl: &'a Pickle, v: Value, name: &'static str) -> Result<Dict<'a>, String> {
        match v {
            Value::Dict(_) => Ok(Dict { pkl, dict: v, name }),
            other => Err(format!("{name}: expected a dict, found {}", other.kind())),
        }
    }
    fn get(&self, key: &str) -> Result<Value, String> {
        self.pkl.get(self.dict, key).ok_or_else(|| {
            let keys: Vec<String> = (self.pkl.dict(self.dict).unwrap_or_default().iter())
                .map(|&(k, _)| self.pkl.str(k).map_or_else(|| k.kind().to_string(), |s| format!("'{s}'")))
                .collect();
            format!("missing key '{key}' in {} (keys: {})", self.name, keys.join(", "))
        })
    }
}

fn expect_none(d: &Dict, key: &str, why: &str) -> Result<(), String> {
    match d.get(key)? {
        Value::None => Ok(()),
        v => Err(format!("{}.{key}: expected None, found {} ({why})", d.name, v.kind())),
    }
}

fn tokens(v: Vec<i64>, what: &str) -> Result<Vec<u32>, String> {
    v.into_iter()
        .enumerate()
        .map(|(i, t)| u32::try_from(t).map_err(|_| format!("{what}: token {t} at index {i} is not a valid token id")))
        .collect()
}

/// A materialised (contiguous, row-major) tensor.
#[derive(Debug)]
struct Tensor<T> {
    shape: Vec<usize>,
    data: Vec<T>,
}

impl<T> Tensor<T> {
    /// Checks the shape is `(1, ...)` of `rank` dimensions.
    fn with_rank_batch1(self, rank: usize, what: &str) -> Result<Self, String> {
        if self.shape.len() != rank || self.shape[0] != 1 {
            let want = (1..rank).fold("(1".to_string(), |s, i| s + &format!(", d{i}")) + ")";
            return Err(format!("{what}: expected shape {want}, found {:?}", self.shape));
        }
        Ok(self)
    }
}

/// Element types a storage can be read as.
trait Element: Copy {
    const SIZE: usize;
    /// The storage class holding this type.
    const CLASS: &'static str;
    const NAME: &'static str;
    fn from_le(b: &[u8]) -> Self;
}

impl Element for f32 {
    const SIZE: usize = 4;
    const CLASS: &'static str = "FloatStorage";
    const NAME: &'static str = "float32";
    fn from_le(b: &[u8]) -> Self {
        f32::from_le_bytes(b.try_into().unwrap())
    }
}

impl Element for i64 {
    const SIZE: usize = 8;
    const CLASS: &'static str = "LongStorage";
    const NAME: &'static str = "int64";
    fn from_le(b: &[u8]) -> Self {
        i64::from_le_bytes(b.try_into().unwrap())
    }
}

/// The dtype a torch storage class stands for, for error messages.
fn storage_dtype(class: &str) -> &'static str {
    match class {
        "FloatStorage" => "float32",
        "LongStorage" => "int64",
        "DoubleStorage" => "float64",
        "HalfStorage" => "float16",
        "BFloat16Storage" => "bfloat16",
        "IntStorage" => "int32",
        "ShortStorage" => "int16",
        "CharStorage" => "int8",
        "ByteStorage" => "uint8",
        "BoolStorage" => "bool",
        _ => "an unknown dtype",
    }
}

/// Gathers the view `offset`/`shape`/`stride` of `storage` into a row-major vector. The caller has
/// checked that every index lies inside `storage`.
fn gather<T: Copy>(storage: &[T], offset: usize, shape: &[usize], stride: &[usize]) -> Vec<T> {
    let numel: usize = shape.iter().product();
    if numel == 0 {
        return Vec::new();
    }
    // Contiguous (dims of size 1 have any stride): one slice.
    let mut expect = 1;
    let contiguous = shape.iter().zip(stride).rev().all(|(&n, &s)| {
        let ok = n == 1 || s == expect;
        expect *= n;
        ok
    });
    if contiguous {
        return storage[offset..offset + numel].to_vec();
    }
    let mut out = Vec::with_capacity(numel);
    let mut idx = vec![0usize; shape.len()];
    let mut pos = offset;
    for _ in 0..numel {
        out.push(storage[pos]);
        // Odometer increment, last dimension fastest.
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            // Wrapping: an intermediate position may pass the end (a huge stride of a size-1 dim)
            // before it is wound back; every position read is in range.
            pos = pos.wrapping_add(stride[d]);
            if idx[d] < shape[d] {
                break;
            }
            pos = pos.wrapping_sub(stride[d].wrapping_mul(shape[d]));
            idx[d] = 0;
        }
    }
    out
}

/// The zip container of `torch.save`.
struct Archive {
    zip: zip::ZipArchive<Cursor<Vec<u8>>>,
    /// The archive name every entry starts with (`conds/` for `conds.pt`), `/` included.
    prefix: String,
    /// Raw bytes of the storages read so far, by key.
    storages: HashMap<String, Vec<u8>>,
}

impl Archive {
    fn open(bytes: Vec<u8>) -> Result<Archive, String> {
        let zip = zip::ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| format!("not a torch.save zip archive (the zip container could not be read: {e})"))?;
        let names: Vec<String> = zip.file_names().filter_map(|n| n.ok().map(|n| n.into_owned())).collect();
        let mut pkl = names.iter().filter(|n| {
            n.strip_suffix("data.pkl").is_some_and(|p| p.is_empty() || p.matches('/').count() == 1 && p.ends_with('/'))
        });
        let prefix = match (pkl.next(), pkl.next()) {
            (Some(n), None) => n.strip_suffix("data.pkl").unwrap().to_string(),
            (None, _) => {
                let shown: Vec<&str> = names.iter().take(8).map(String::as_str).collect();
                return Err(format!("no <archive>/data.pkl entry in the zip archive (entries: {})", shown.join(", ")));
            }
            (Some(a), Some(b)) => return Err(format!("several pickles in the zip archive ({a}, {b}, ...)")),
        };
        let mut archive = Archive { zip, prefix, storages: HashMap::new() };
        let byteorder = format!("{}byteorder", archive.prefix);
        if archive.zip.index_for_name(&byteorder).is_some() {
            let order = archive.read_entry("byteorder", 16)?;
            if order != b"little" {
                return Err(format!(
                    "{byteorder} is {:?}; only little-endian archives are supported",
                    String::from_utf8_lossy(&order)
                ));
            }
        }
        Ok(archive)
    }

    /// Reads the whole entry `<prefix><name>` (so that the zip crate checks its CRC), refusing entries
    /// that declare more than `max` bytes.
    fn read_entry(&mut self, name: &str, max: u64) -> Result<Vec<u8>, String> {
        let full = format!("{}{name}", self.prefix);
        let mut f = self.zip.by_name(&full).map_err(|e| format!("zip entry {full}: {e}"))?;
        let size = f.size();
        if size > max {
            return Err(format!("zip entry {full}: {size} bytes, more than the {max} expected"));
        }
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).map_err(|e| format!("zip entry {full}: {e}"))?;
        if buf.len() as u64 != size {
            return Err(format!("zip entry {full}: truncated ({} of {size} bytes)", buf.len()));
        }
        Ok(buf)
    }

    fn f32_tensor(&mut self, pkl: &Pickle, v: Value, what: &str) -> Result<Tensor<f32>, String> {
        self.tensor::<f32>(pkl, v, what)
    }

    fn i64_tensor(&mut self, pkl: &Pickle, v: Value, what: &str) -> Result<Tensor<i64>, String> {
        self.tensor::<i64>(pkl, v, what)
    }

    fn tensor<T: Element>(&mut self, pkl: &Pickle, v: Value, what: &str) -> Result<Tensor<T>, String> {
        let Some(TensorRef { storage, offset, shape, stride }) = pkl.tensor(v) else {
            return Err(format!("{what}: expected a {} tensor, found {}", T::NAME, v.kind()));
        };
        let storage = pkl.storage(*storage).ok_or_else(|| format!("{what}: the tensor's storage is a {}", storage.kind()))?;
        if storage.class != T::CLASS {
            return Err(format!(
                "{what}: expected a {} tensor (torch.{}), found torch.{} ({})",
                T::NAME,
                T::CLASS,
                storage.class,
                storage_dtype(&storage.class)
            ));
        }
        // Every element of the view must lie inside the storage's `numel` elements.
        let overflow = || format!("{what}: size {shape:?} / stride {stride:?} overflow");
        let mut numel = 1usize;
        let mut last = *offset;
        for (&n, &s) in shape.iter().zip(stride) {
            numel = numel.checked_mul(n).ok_or_else(overflow)?;
            if n > 0 {
                last = (n - 1).checked_mul(s).and_then(|x| x.checked_add(last)).ok_or_else(overflow)?;
            }
        }
        if numel > MAX_ELEMENTS {
            return Err(format!("{what}: size {shape:?} has {numel} elements, more than the {MAX_ELEMENTS} accepted"));
        }
        if storage.numel > MAX_ELEMENTS {
            return Err(format!(
                "{what}: storage data/{} has {} elements, more than the {MAX_ELEMENTS} accepted",
                storage.key, storage.numel
            ));
        }
        if numel > 0 && last >= storage.numel {
            return Err(format!(
                "{what}: view (offset {offset}, size {shape:?}, stride {stride:?}) reaches element {last} of a storage of {} elements",
                storage.numel
            ));
        }
        if numel > storage.numel {
            return Err(format!(
                "{what}: a view of {numel} elements (size {shape:?}, stride {stride:?}) of a storage of {} elements: broadcast views \
                 are not supported",
                storage.numel
            ));
        }
        let nbytes = storage.numel.checked_mul(T::SIZE).ok_or_else(overflow)?;
        if !self.storages.contains_key(&storage.key) {
            let entry = format!("data/{}", storage.key);
            let full = format!("{}{entry}", self.prefix);
            let size = self.zip.by_name(&full).map_err(|e| format!("{what}: storage entry {full}: {e}"))?.size();
            // torch writes exactly `numel` elements (the whole storage, whatever part a view uses).
            if size != nbytes as u64 {
                let problem = if size < nbytes as u64 { "is truncated" } else { "is too long" };
                return Err(format!(
                    "{what}: storage {full} {problem}: {size} bytes, but {} {} elements need {nbytes}",
                    storage.numel,
                    T::NAME
                ));
            }
            let bytes = self.read_entry(&entry, nbytes as u64).map_err(|e| format!("{what}: {e}"))?;
            self.storages.insert(storage.key.clone(), bytes);
        }
        let bytes = &self.storages[&storage.key];
        if bytes.len() != nbytes {
            // The same key read earlier as another dtype.
            return Err(format!("{what}: storage data/{} holds {} bytes, {nbytes} expected", storage.key, bytes.len()));
        }
        let elems: Vec<T> = bytes[..nbytes].chunks_exact(T::SIZE).map(T::from_le).collect();
        Ok(Tensor { shape: shape.clone(), data: gather(&elems, *offset, shape, stride) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_views() {
        let s: Vec<i32> = (0..12).collect();
        // Contiguous with an offset.
        assert_eq!(gather(&s, 2, &[2, 3], &[3, 1]), vec![2, 3, 4, 5, 6, 7]);
        // Transposed (3, 4) -> (4, 3).
        assert_eq!(gather(&s, 0, &[4, 3], &[1, 4]), vec![0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
        // Broadcast (stride 0) and size-1 dims with odd strides.
        assert_eq!(gather(&s, 5, &[1, 3, 2], &[99, 0, 1]), vec![5, 6, 5, 6, 5, 6]);
        assert_eq!(gather(&s, 1, &[1, 1, 2], &[7, 9, 1]), vec![1, 2]);
        assert_eq!(gather(&s, 0, &[2, 0], &[1, 1]), Vec::<i32>::new());
        assert_eq!(gather(&s, 3, &[], &[]), vec![3]);
        // A size-1 dim with a huge stride in a non-contiguous view.
        assert_eq!(gather(&s, 0, &[1, 2], &[usize::MAX, 2]), vec![0, 2]);
    }
}
