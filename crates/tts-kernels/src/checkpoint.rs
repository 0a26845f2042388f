//! Memory-mapped safetensors checkpoints (the official `*.safetensors` files), read as f32 and
//! uploaded once in the dtype a backend wants. Every missing, misshapen or non-float tensor is an
//! error naming the tensor, its expected shape and the file.
use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::{DType, Device, Tensor};

/// A memory-mapped safetensors checkpoint.
pub struct Checkpoint {
    path: String,
    mmap: memmap2::Mmap,
    index: HashMap<String, (Dtype, Vec<usize>)>,
}

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let p = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| Error::CheckpointIo { path: p.clone(), source: e })?;
        // SAFETY: the file is opened read-only; a concurrent writer would be a user error.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::CheckpointIo { path: p.clone(), source: e })?;
        let st = SafeTensors::deserialize(&mmap).map_err(|e| Error::Checkpoint { path: p.clone(), detail: e.to_string() })?;
        let index = st.tensors().into_iter().map(|(n, v)| (n, (v.dtype(), v.shape().to_vec()))).collect();
        Ok(Checkpoint { path: p, mmap, index })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The tensor `name` as f32, checked against `shape`. A missing, misshapen or non-float tensor
    /// is an error naming the tensor, its expected shape and the file.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let bad =
            |detail: String| Error::Tensor { path: self.path.clone(), name: name.to_string(), expected: shape.to_vec(), detail };
        let (dtype, got) = self.index.get(name).ok_or_else(|| bad("missing".into()))?;
        if got.as_slice() != shape {
            return Err(bad(format!("found shape {got:?}")));
        }
        let st = SafeTensors::deserialize(&self.mmap).map_err(|e| bad(e.to_string()))?;
        let view = st.tensor(name).map_err(|e| bad(e.to_string()))?;
        let raw = view.data();
        Ok(match dtype {
            Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::BF16 => raw.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect(),
            d => return Err(bad(format!("dtype {d:?} (expected f32 or bf16)"))),
        })
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
