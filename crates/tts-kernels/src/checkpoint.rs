//! Checkpoints: memory-mapped safetensors files (the official `*.safetensors` files), or synthetic
//! ones built in memory from a seed ([`synthetic`]), read as f32 and uploaded once in the dtype a
//! backend wants. Both answer the same calls with the same checks: every missing, misshapen or
//! non-float tensor is an error naming the tensor, its expected shape and the checkpoint.
use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::{DType, Device, Tensor};

pub mod config_json;
pub mod synthetic;

use synthetic::SynthTensor;

/// A checkpoint: a memory-mapped safetensors file or a synthetic one.
pub struct Checkpoint {
    /// The file's path, or the synthetic checkpoint's label (in every error message).
    path: String,
    source: Source,
}

enum Source {
    File {
        mmap: memmap2::Mmap,
        /// Each tensor's dtype, shape and byte range in `mmap`, from the header parsed once at open
        /// (parsing it again for every tensor made loading quadratic: ~1.5 CPU-s for S3Gen's).
        index: HashMap<String, Entry>,
    },
    /// Random tensors drawn on demand from (seed, name).
    Synthetic { seed: u64, index: HashMap<String, SynthTensor> },
}

struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: std::ops::Range<usize>,
}

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let p = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| Error::CheckpointIo { path: p.clone(), source: e })?;
        // SAFETY: the file is opened read-only; a concurrent writer would be a user error.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::CheckpointIo { path: p.clone(), source: e })?;
        let st = SafeTensors::deserialize(&mmap).map_err(|e| Error::Checkpoint { path: p.clone(), detail: e.to_string() })?;
        let base = mmap.as_ptr() as usize;
        let index = st
            .tensors()
            .into_iter()
            .map(|(n, v)| {
                let start = v.data().as_ptr() as usize - base;
                (n, Entry { dtype: v.dtype(), shape: v.shape().to_vec(), bytes: start..start + v.data().len() })
            })
            .collect();
        Ok(Checkpoint { path: p, source: Source::File { mmap, index } })
    }

    /// A synthetic checkpoint holding `tensors`, whose values are drawn from (`seed`, name) when read
    /// (see [`synthetic`]). `label` names it in error messages. Two tensors of one name, an empty
    /// shape or a non-finite or negative spread are errors.
    pub fn synthetic(label: &str, seed: u64, tensors: Vec<SynthTensor>) -> Result<Checkpoint> {
        let bad = |detail: String| Error::Checkpoint { path: label.to_string(), detail };
        let mut index = HashMap::with_capacity(tensors.len());
        for t in tensors {
            if t.shape.is_empty() || t.is_empty() {
                return Err(bad(format!("{}: empty shape {:?}", t.name, t.shape)));
            }
            let inits = std::iter::once(&t.init).chain(t.rows.iter().map(|(_, i)| i));
            if let Some(i) = inits.into_iter().find(|i| !(i.mean.is_finite() && i.std.is_finite() && i.std >= 0.0)) {
                return Err(bad(format!("{}: bad init {i:?}", t.name)));
            }
            if let Some((r, _)) = t.rows.iter().find(|(r, _)| *r >= t.shape[0]) {
                return Err(bad(format!("{}: row {r} of a tensor of {} rows", t.name, t.shape[0])));
            }
            if index.insert(t.name.clone(), t.clone()).is_some() {
                return Err(bad(format!("{} listed twice", t.name)));
            }
        }
        Ok(Checkpoint { path: label.to_string(), source: Source::Synthetic { seed, index } })
    }

    /// The file's path, or a synthetic checkpoint's label.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether this checkpoint is synthetic (random weights, not a file).
    pub fn is_synthetic(&self) -> bool {
        matches!(self.source, Source::Synthetic { .. })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.shape(name).is_some()
    }

    /// The names of every tensor, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = match &self.source {
            Source::File { index, .. } => index.keys().map(|k| k.as_str()).collect(),
            Source::Synthetic { index, .. } => index.keys().map(|k| k.as_str()).collect(),
        };
        v.sort_unstable();
        v
    }

    /// The shape of the tensor `name`, if there is one.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        match &self.source {
            Source::File { index, .. } => index.get(name).map(|e| e.shape.as_slice()),
            Source::Synthetic { index, .. } => index.get(name).map(|t| t.shape.as_slice()),
        }
    }

    /// The tensor `name` as f32, checked against `shape`. A missing, misshapen or non-float tensor
    /// is an error naming the tensor, its expected shape and the checkpoint.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let bad =
            |detail: String| Error::Tensor { path: self.path.clone(), name: name.to_string(), expected: shape.to_vec(), detail };
        let found = self.shape(name).ok_or_else(|| bad("missing".into()))?;
        if found != shape {
            return Err(bad(format!("found shape {found:?}")));
        }
        match &self.source {
            Source::File { mmap, index } => {
                let entry = &index[name];
                // (deserialize checked at open that every range lies in the file and fits its shape)
                let raw = &mmap[entry.bytes.clone()];
                Ok(match entry.dtype {
                    Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                    Dtype::BF16 => {
                        raw.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect()
                    }
                    d => return Err(bad(format!("dtype {d:?} (expected f32 or bf16)"))),
                })
            }
            Source::Synthetic { seed, index } => Ok(index[name].values(*seed)),
        }
    }

    /// The tensor uploaded to `dev` in `dtype`.
    pub fn upload(&self, dev: &Device, dtype: DType, name: &str, shape: &[usize]) -> Result<Tensor> {
        let data = self.f32(name, shape)?;
        Tensor::from_f32(dev, dtype, shape, &data)
    }

    /// Several tensors of equal row length stacked along dim 0 and uploaded as one.
    pub fn upload_stacked(&self, dev: &Device, dtype: DType, parts: &[(&str, &[usize])]) -> Result<Tensor> {
        let mut data = Vec::new();
        let mut rows = 0;
        let cols = parts[0].1[1];
        for (name, shape) in parts {
            data.extend(self.f32(name, shape)?);
            rows += shape[0];
        }
        Tensor::from_f32(dev, dtype, &[rows, cols], &data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fresh_seed, random_f32};
    use safetensors::tensor::TensorView;
    use synthetic::Init;

    fn write(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
        let views: Vec<(String, TensorView<'_>)> =
            tensors.iter().map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
        std::fs::write(path, safetensors::serialize(views, &None).unwrap()).unwrap();
    }

    #[test]
    fn every_tensor_reads_back_from_its_own_range() {
        let seed = fresh_seed();
        let dir = std::env::temp_dir().join(format!("tts-checkpoint-{}-{seed}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        // many tensors of odd sizes, f32 and bf16, so that a wrong offset reads a neighbour
        let mut tensors = Vec::new();
        let mut want = Vec::new();
        for i in 0..40usize {
            let shape = vec![1 + i % 3, 1 + (i * 7) % 5];
            let n: usize = shape.iter().product();
            let vals = random_f32(seed.wrapping_add(i as u64), n, 2.0);
            let (dtype, bytes, vals) = if i % 2 == 0 {
                (Dtype::F32, vals.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(), vals)
            } else {
                let b: Vec<half::bf16> = vals.iter().map(|&v| half::bf16::from_f32(v)).collect();
                (Dtype::BF16, b.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect(), b.iter().map(|v| v.to_f32()).collect())
            };
            tensors.push((format!("layer{i}.weight"), dtype, shape.clone(), bytes));
            want.push((format!("layer{i}.weight"), shape, vals));
        }
        tensors.push(("steps".into(), Dtype::I32, vec![2], vec![1, 0, 0, 0, 2, 0, 0, 0]));
        let borrowed: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> =
            tensors.iter().map(|(n, d, s, b)| (n.as_str(), *d, s.clone(), b.clone())).collect();
        write(&path, &borrowed);
        let ck = Checkpoint::open(&path).unwrap();
        for (name, shape, vals) in &want {
            let got = ck.f32(name, shape).unwrap();
            assert!(got.iter().zip(vals).all(|(a, b)| a.to_bits() == b.to_bits()) && got.len() == vals.len(), "{name}");
        }
        let err = |name: &str, shape: &[usize]| ck.f32(name, shape).unwrap_err().to_string();
        let e = err("layer0.weight", &[9, 9]);
        assert!(e.contains("layer0.weight") && e.contains("found shape [1, 1]"), "{e}");
        let e = err("layer99.weight", &[1]);
        assert!(e.contains("layer99.weight") && e.contains("missing"), "{e}");
        let e = err("steps", &[2]);
        assert!(e.contains("steps") && e.contains("I32"), "{e}");
        // a truncated file is refused at open, naming it
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.join("cut.safetensors");
        std::fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
        let e = Checkpoint::open(&cut).err().unwrap().to_string();
        assert!(e.contains("cut.safetensors"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_synthetic_checkpoint_answers_like_a_file() {
        let seed = fresh_seed();
        let ck = Checkpoint::synthetic(
            "synthetic test model",
            seed,
            vec![
                SynthTensor::new("norm.weight", &[5], Init::around(1.0, 0.1)),
                SynthTensor::new("proj.weight", &[3, 7], Init::fan_in(7, 1.0)),
            ],
        )
        .unwrap();
        assert!(ck.is_synthetic() && ck.contains("proj.weight") && !ck.contains("proj.bias"));
        assert_eq!(ck.names(), ["norm.weight", "proj.weight"]);
        assert_eq!(ck.shape("proj.weight"), Some(&[3, 7][..]));
        let w = ck.f32("proj.weight", &[3, 7]).unwrap();
        assert_eq!(w, synthetic::values(seed, "proj.weight", 21, Init::fan_in(7, 1.0)));
        assert_eq!(w, ck.f32("proj.weight", &[3, 7]).unwrap(), "read twice, the same values");
        let err = |name: &str, shape: &[usize]| ck.f32(name, shape).unwrap_err().to_string();
        let e = err("proj.weight", &[7, 3]);
        assert!(e.contains("proj.weight") && e.contains("found shape [3, 7]") && e.contains("synthetic test model"), "{e}");
        let e = err("proj.bias", &[3]);
        assert!(e.contains("proj.bias") && e.contains("missing"), "{e}");
        let t = ck.upload(&Device::cpu(), DType::F32, "norm.weight", &[5]).unwrap();
        assert_eq!(t.to_f32_vec().unwrap(), synthetic::values(seed, "norm.weight", 5, Init::around(1.0, 0.1)));
        // a name listed twice, an empty shape or a bad init is refused
        let dup = vec![SynthTensor::new("a", &[1], Init::spread(1.0)), SynthTensor::new("a", &[2], Init::spread(1.0))];
        assert!(Checkpoint::synthetic("m", 1, dup).err().unwrap().to_string().contains("a listed twice"));
        assert!(Checkpoint::synthetic("m", 1, vec![SynthTensor::new("a", &[0, 3], Init::spread(1.0))]).is_err());
        assert!(Checkpoint::synthetic("m", 1, vec![SynthTensor::new("a", &[3], Init::spread(f32::NAN))]).is_err());
        assert!(Checkpoint::synthetic("m", 1, vec![SynthTensor::new("a", &[3], Init::spread(-1.0))]).is_err());
        let bad_row = SynthTensor::new("a", &[3, 2], Init::spread(1.0)).with_row(3, Init::constant(0.0));
        assert!(Checkpoint::synthetic("m", 1, vec![bad_row]).err().unwrap().to_string().contains("row 3"));
        let bad_row = SynthTensor::new("a", &[3, 2], Init::spread(1.0)).with_row(0, Init::spread(f32::INFINITY));
        assert!(Checkpoint::synthetic("m", 1, vec![bad_row]).is_err());
    }
}
