//! Device tensors (owned, contiguous, row-major) and borrowed views of them.
//!
//! A [`Tensor`] owns one allocation on one [`Device`]. Ops read [`View`]s and write [`ViewMut`]s;
//! both are contiguous ranges of rows of a tensor, so the borrow checker keeps an op's outputs
//! apart from its inputs (what `__restrict__` in the kernels assumes).
use std::marker::PhantomData;

use half::bf16;

use crate::device::Backend;
use crate::error::{Error, Result};
use crate::host_mem::HostMem;
use crate::{DType, Device, cpu, cuda};

/// Max rank of a tensor.
pub const MAX_RANK: usize = 4;

pub(crate) enum Storage {
    Host(HostMem),
    Cuda(cuda::CudaMem),
}

/// A contiguous, row-major tensor that owns its memory on one device.
pub struct Tensor {
    dev: Device,
    storage: Storage,
    dtype: DType,
    dims: Dims,
    packing: Packing,
}

/// How a tensor's elements sit in its memory.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Packing {
    /// Contiguous and row-major: every tensor but packed weights.
    RowMajor,
    /// A Cpu linear weight `[n, k]` regrouped for the Cpu decode GEMV ([`cpu::pack_gemv`], padding
    /// included). Only `ops::linear` reads it; host access, row views and copies in are errors.
    CpuGemv,
    /// A Cpu linear weight `[n, k]` as f32 panels of 16 output columns for the many-row GEMM
    /// ([`cpu::pack_gemm`]; a bf16 weight widened exactly). Only `ops::linear` reads it, as above.
    CpuGemm,
    /// A Cpu bf16 linear weight `[n, k]` as bf16 panels of 16 output columns with the pairs of `k`
    /// interleaved for `vdpbf16ps` and AMX tiles ([`cpu::pack_gemm_bf16`]): the `cpu-bf16` device
    /// where [`cpu::isa::bf16_panels_pay`] (the `amx` path, where also the decode weights take this
    /// form, or `avx512bf16` where `vdpbf16ps` outpaces the f32 FMA). Only `ops::linear` and
    /// `ops::conv1d_packed` read it, as above.
    CpuGemmBf16,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({}{:?} on {})", self.dtype, self.dims.as_slice(), self.dev.kind())
    }
}

/// A shape of rank 1 to [`MAX_RANK`], stored inline so that views are `Copy`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dims {
    rank: u8,
    d: [usize; MAX_RANK],
}

impl Dims {
    pub(crate) fn new(op: &'static str, shape: &[usize]) -> Result<Dims> {
        if shape.is_empty() || shape.len() > MAX_RANK {
            return Err(Error::shape(op, format!("rank {} is not in 1..={MAX_RANK}", shape.len())));
        }
        let mut d = [1usize; MAX_RANK];
        d[..shape.len()].copy_from_slice(shape);
        let dims = Dims { rank: shape.len() as u8, d };
        dims.checked_len().ok_or_else(|| Error::shape(op, format!("{shape:?} overflows")))?;
        Ok(dims)
    }
    pub(crate) fn as_slice(&self) -> &[usize] {
        &self.d[..self.rank as usize]
    }
    fn checked_len(&self) -> Option<usize> {
        self.as_slice().iter().try_fold(1usize, |a, &b| a.checked_mul(b))
    }
    pub(crate) fn len(&self) -> usize {
        self.as_slice().iter().product()
    }
    fn with_rows(mut self, rows: usize) -> Dims {
        self.d[0] = rows;
        self
    }
}

impl Tensor {
    fn alloc(dev: &Device, dtype: DType, shape: &[usize], init: Init) -> Result<Tensor> {
        dev.forbid_while_capturing("allocating a tensor")?;
        let dims = Dims::new("alloc", shape)?;
        let bytes = dims
            .len()
            .checked_mul(dtype.size())
            .ok_or_else(|| Error::shape("alloc", format!("{shape:?} of {dtype} overflows")))?;
        let storage = match &*dev.inner {
            Backend::Cpu => Storage::Host(HostMem::cpu(bytes, init == Init::Zero)?),
            Backend::Cuda(c) => Storage::Cuda(c.alloc(bytes, init == Init::Zero)?),
            #[cfg(feature = "emu")]
            Backend::Emu(e) => Storage::Host(e.alloc(bytes, init == Init::Zero)?),
        };
        dev.note_allocation(bytes);
        Ok(Tensor { dev: dev.clone(), storage, dtype, dims, packing: Packing::RowMajor })
    }

    /// A zero-filled tensor.
    pub fn zeros(dev: &Device, dtype: DType, shape: &[usize]) -> Result<Tensor> {
        Tensor::alloc(dev, dtype, shape, Init::Zero)
    }

    /// A tensor whose contents are unspecified until written (poisoned with NaN / -1 on Emu, so that
    /// an element a kernel forgets to write shows up in tests).
    pub fn uninit(dev: &Device, dtype: DType, shape: &[usize]) -> Result<Tensor> {
        Tensor::alloc(dev, dtype, shape, Init::Unspecified)
    }

    /// A float tensor from host f32 values, converted to `dtype` (F32 or BF16, rounded to nearest even).
    pub fn from_f32(dev: &Device, dtype: DType, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        let mut t = Tensor::uninit(dev, dtype, shape)?;
        t.copy_from_f32(data)?;
        Ok(t)
    }

    /// An i32 tensor from host values.
    pub fn from_i32(dev: &Device, shape: &[usize], data: &[i32]) -> Result<Tensor> {
        let mut t = Tensor::uninit(dev, DType::I32, shape)?;
        t.copy_from_i32(data)?;
        Ok(t)
    }

    /// This `[n, k]` f32 or bf16 Cpu tensor regrouped for the Cpu decode GEMV (see
    /// `ops::pack_linear_weight`); a bf16 one on the `amx` path as bf16 panels for the AMX GEMM.
    pub(crate) fn packed_for_cpu_gemv(&self) -> Result<Tensor> {
        const OP: &str = "pack_linear_weight";
        let (n, k) = self.packable_dims(OP)?;
        if self.dtype == DType::BF16 && cpu::isa::active() == cpu::Isa::Amx {
            return self.packed_for_cpu_gemm();
        }
        let src = self.view();
        let storage = match self.dtype {
            DType::F32 => {
                let mem = HostMem::new(cpu::packed_gemv_len::<f32>(n, k) * 4, 0, 0)?;
                // SAFETY: the fresh allocation holds packed_gemv_len f32s, aligned.
                let out =
                    unsafe { std::slice::from_raw_parts_mut(mem.data_ptr() as *mut f32, cpu::packed_gemv_len::<f32>(n, k)) };
                cpu::pack_gemv(src.host_f32()?, n, k, out);
                mem
            }
            DType::BF16 => {
                let mem = HostMem::new(cpu::packed_gemv_len::<bf16>(n, k) * 2, 0, 0)?;
                // SAFETY: as above, for bf16.
                let out =
                    unsafe { std::slice::from_raw_parts_mut(mem.data_ptr() as *mut bf16, cpu::packed_gemv_len::<bf16>(n, k)) };
                cpu::pack_gemv(src.host_bf16()?, n, k, out);
                mem
            }
            d => return Err(Error::DType { op: OP, what: "weight", got: d, expected: "f32 or bf16".into() }),
        };
        Ok(self.with_packed_storage(storage, Packing::CpuGemv))
    }

    /// This `[n, k]` f32 or bf16 Cpu tensor as f32 panels for the many-row Cpu GEMM (see
    /// `ops::pack_gemm_weight`).
    pub(crate) fn packed_for_cpu_gemm(&self) -> Result<Tensor> {
        const OP: &str = "pack_gemm_weight";
        let (n, k) = self.packable_dims(OP)?;
        let src = self.view();
        if self.dtype == DType::BF16 && cpu::isa::bf16_panels_pay() {
            let len = cpu::packed_gemm_bf16_len(n, k);
            let mem = HostMem::new(len * 2, 0, 0)?;
            // SAFETY: the fresh allocation holds len bf16s, aligned.
            let out = unsafe { std::slice::from_raw_parts_mut(mem.data_ptr() as *mut bf16, len) };
            cpu::pack_gemm_bf16(src.host_bf16()?, n, k, out);
            return Ok(self.with_packed_storage(mem, Packing::CpuGemmBf16));
        }
        let len = cpu::packed_gemm_len(n, k);
        let mem = HostMem::new(len * 4, 0, 0)?;
        // SAFETY: the fresh allocation holds len f32s, aligned.
        let out = unsafe { std::slice::from_raw_parts_mut(mem.data_ptr() as *mut f32, len) };
        match self.dtype {
            DType::F32 => cpu::pack_gemm(src.host_f32()?, n, k, out),
            DType::BF16 => cpu::pack_gemm(src.host_bf16()?, n, k, out),
            d => return Err(Error::DType { op: OP, what: "weight", got: d, expected: "f32 or bf16".into() }),
        }
        Ok(self.with_packed_storage(mem, Packing::CpuGemm))
    }

    /// `(n, k)` of a row-major 2-D tensor that may be packed.
    fn packable_dims(&self, op: &'static str) -> Result<(usize, usize)> {
        if self.packing != Packing::RowMajor || self.dims.rank != 2 {
            return Err(Error::shape(op, format!("a row-major [n, k] weight, not {:?}", self.shape())));
        }
        Ok((self.dims.d[0], self.dims.d[1]))
    }

    fn with_packed_storage(&self, mem: HostMem, packing: Packing) -> Tensor {
        Tensor { dev: self.dev.clone(), storage: Storage::Host(mem), dtype: self.dtype, dims: self.dims, packing }
    }

    pub fn device(&self) -> &Device {
        &self.dev
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn shape(&self) -> &[usize] {
        self.dims.as_slice()
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.dims.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn view(&self) -> View<'_> {
        View { t: self, offset: 0, dims: self.dims }
    }
    pub fn view_mut(&mut self) -> ViewMut<'_> {
        let dims = self.dims;
        ViewMut { t: self, offset: 0, dims, _excl: PhantomData }
    }

    /// Overwrites the whole tensor with host f32 values (converted to the tensor's float dtype).
    pub fn copy_from_f32(&mut self, data: &[f32]) -> Result<()> {
        self.view_mut().copy_from_f32(data)
    }
    /// Overwrites the whole i32 tensor with host values.
    pub fn copy_from_i32(&mut self, data: &[i32]) -> Result<()> {
        self.view_mut().copy_from_i32(data)
    }
    /// The contents as f32 (bf16 widened exactly). Waits for queued GPU work.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        self.view().to_f32_vec()
    }
    /// The contents of an i32 tensor. Waits for queued GPU work.
    pub fn to_i32_vec(&self) -> Result<Vec<i32>> {
        self.view().to_i32_vec()
    }

    /// Device address of element `offset` (host address on Cpu/Emu).
    fn addr(&self, offset: usize) -> u64 {
        let base = match &self.storage {
            Storage::Host(h) => h.data_ptr() as u64,
            Storage::Cuda(c) => c.addr,
        };
        base + (offset * self.dtype.size()) as u64
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
pub(crate) enum Init {
    Zero,
    Unspecified,
}

/// A shared, contiguous view of whole rows (dim 0) of a tensor, possibly reshaped.
#[derive(Clone, Copy)]
pub struct View<'a> {
    t: &'a Tensor,
    offset: usize,
    dims: Dims,
}

/// An exclusive, contiguous view of whole rows (dim 0) of a tensor, possibly reshaped.
pub struct ViewMut<'a> {
    t: &'a Tensor,
    offset: usize,
    dims: Dims,
    _excl: PhantomData<&'a mut Tensor>,
}

/// The accessors of [`View`] and [`ViewMut`]. `$s` names the lifetime of `&self` in the host-slice
/// accessors and `$ret` the lifetime of the slices they return: a `View` (a shared borrow of the
/// tensor) may hand out slices for its whole lifetime `'a`, a `ViewMut` only for the borrow of
/// itself, so a shared slice can never outlive into a later `host_*_mut` of the same elements.
macro_rules! view_common {
    ($ty:ident, $s:lifetime, $ret:lifetime) => {
        impl<'a> $ty<'a> {
            pub fn device(&self) -> &'a Device {
                &self.t.dev
            }
            pub fn dtype(&self) -> DType {
                self.t.dtype
            }
            pub fn shape(&self) -> &[usize] {
                self.dims.as_slice()
            }
            /// Number of elements.
            pub fn len(&self) -> usize {
                self.dims.len()
            }
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }
            /// Size of dim 0.
            pub fn rows(&self) -> usize {
                self.dims.d[0]
            }
            /// Elements per row (product of the dims after the first).
            pub fn row_len(&self) -> usize {
                self.dims.as_slice()[1..].iter().product()
            }
            /// Device address of the first element (a host address on Cpu and Emu).
            pub(crate) fn addr(&self) -> u64 {
                self.t.addr(self.offset)
            }
            pub(crate) fn storage(&self) -> &'a Storage {
                &self.t.storage
            }
            /// Rows `start..start + len` of this view.
            pub fn narrow_rows(self, start: usize, len: usize) -> Result<$ty<'a>> {
                self.expect_row_major("narrow_rows")?;
                let rows = self.rows();
                if start.checked_add(len).is_none_or(|end| end > rows) {
                    return Err(Error::shape("narrow_rows", format!("rows {start}..{} of {rows}", start.saturating_add(len))));
                }
                let offset = self.offset + start * self.row_len();
                let dims = self.dims.with_rows(len);
                Ok($ty { offset, dims, ..self })
            }
            /// The same elements with another shape of equal length.
            pub fn reshape(self, shape: &[usize]) -> Result<$ty<'a>> {
                self.expect_row_major("reshape")?;
                let dims = Dims::new("reshape", shape)?;
                if dims.len() != self.len() {
                    return Err(Error::shape("reshape", format!("{:?} to {shape:?}", self.shape())));
                }
                Ok($ty { dims, ..self })
            }
            /// The contents as f32 (bf16 widened exactly). Waits for queued GPU work.
            pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
                self.device().forbid_while_capturing("a device-to-host copy")?;
                self.device().note_download();
                if self.t.packing != Packing::RowMajor {
                    return self.unpacked_f32();
                }
                match self.dtype() {
                    DType::F32 => {
                        let mut v = vec![0f32; self.len()];
                        read_bytes(self.storage(), self.addr(), bytemuck::cast_slice_mut(&mut v))?;
                        Ok(v)
                    }
                    DType::BF16 => {
                        let mut v = vec![bf16::ZERO; self.len()];
                        read_bytes(self.storage(), self.addr(), bytemuck::cast_slice_mut(&mut v))?;
                        Ok(v.into_iter().map(f32::from).collect())
                    }
                    d => Err(Error::DType { op: "to_f32_vec", what: "tensor", got: d, expected: "f32 or bf16".into() }),
                }
            }
            /// The contents of an i32 view. Waits for queued GPU work.
            pub fn to_i32_vec(&self) -> Result<Vec<i32>> {
                self.device().forbid_while_capturing("a device-to-host copy")?;
                self.expect_dtype("to_i32_vec", "tensor", DType::I32)?;
                self.device().note_download();
                let mut v = vec![0i32; self.len()];
                read_bytes(self.storage(), self.addr(), bytemuck::cast_slice_mut(&mut v))?;
                Ok(v)
            }
            /// The elements as a host f32 slice (Cpu and Emu tensors of dtype f32 only).
            pub fn host_f32<$s>(&$s self) -> Result<&$ret [f32]> {
                self.expect_dtype("host_f32", "tensor", DType::F32)?;
                self.host_slice::<f32>()
            }
            /// The elements as a host i32 slice (Cpu and Emu tensors only).
            pub fn host_i32<$s>(&$s self) -> Result<&$ret [i32]> {
                self.expect_dtype("host_i32", "tensor", DType::I32)?;
                self.host_slice::<i32>()
            }
            /// The elements as a host bf16 slice (Cpu and Emu tensors only).
            pub fn host_bf16<$s>(&$s self) -> Result<&$ret [bf16]> {
                self.expect_dtype("host_bf16", "tensor", DType::BF16)?;
                self.host_slice::<bf16>()
            }
            fn host_slice<$s, T: bytemuck::Pod>(&$s self) -> Result<&$ret [T]> {
                self.expect_row_major("host access")?;
                match self.storage() {
                    // SAFETY: in bounds (views never exceed their tensor) and aligned (host_mem::ALIGN). No
                    // exclusive access to these elements can exist while the slice lives: a View
                    // holds a shared borrow of the tensor for `'a`; a ViewMut hands the slice out only
                    // for a shared borrow of itself, which excludes its `host_*_mut` (and any reborrow)
                    // until the slice is gone.
                    Storage::Host(_) => Ok(unsafe { std::slice::from_raw_parts(self.addr() as *const T, self.len()) }),
                    Storage::Cuda(_) => Err(Error::invalid("host access", "the tensor lives on a GPU")),
                }
            }
            /// All elements of a packed weight's storage (padding included), for `ops::linear`.
            pub(crate) fn packed_host_slice<T: bytemuck::Pod>(&self) -> Result<&'a [T]> {
                let (n, k) = (self.rows(), self.row_len());
                let len = match self.dtype() {
                    DType::F32 => cpu::packed_gemv_len::<f32>(n, k),
                    _ => cpu::packed_gemv_len::<bf16>(n, k),
                };
                match (self.t.packing, self.storage()) {
                    // SAFETY: a packed tensor's allocation holds exactly its packed length, aligned;
                    // packed views always cover the whole tensor (no narrowing).
                    (Packing::CpuGemv, Storage::Host(_)) if std::mem::size_of::<T>() == self.dtype().size() => {
                        Ok(unsafe { std::slice::from_raw_parts(self.addr() as *const T, len) })
                    }
                    _ => Err(Error::invalid("packed weight access", "not a packed Cpu weight of that element size")),
                }
            }
            /// The f32 panels of a weight packed for the many-row Cpu GEMM, for `ops::linear`.
            pub(crate) fn gemm_panels(&self) -> Result<&'a [f32]> {
                match (self.t.packing, self.storage()) {
                    // SAFETY: such a tensor's allocation holds exactly its packed length of f32s,
                    // aligned; packed views always cover the whole tensor (no narrowing).
                    (Packing::CpuGemm, Storage::Host(_)) => Ok(unsafe {
                        std::slice::from_raw_parts(self.addr() as *const f32, cpu::packed_gemm_len(self.rows(), self.row_len()))
                    }),
                    _ => Err(Error::invalid("packed weight access", "not a weight packed for the Cpu GEMM")),
                }
            }
            /// The bf16 pair panels of a weight packed for the `cpu-bf16` GEMM on AVX-512 BF16, for
            /// `ops::linear` and `ops::conv1d_packed`.
            pub(crate) fn gemm_bf16_panels(&self) -> Result<&'a [bf16]> {
                match (self.t.packing, self.storage()) {
                    // SAFETY: such a tensor's allocation holds exactly its packed length of bf16s,
                    // aligned; packed views always cover the whole tensor (no narrowing).
                    (Packing::CpuGemmBf16, Storage::Host(_)) => Ok(unsafe {
                        std::slice::from_raw_parts(
                            self.addr() as *const bf16,
                            cpu::packed_gemm_bf16_len(self.rows(), self.row_len()),
                        )
                    }),
                    _ => Err(Error::invalid("packed weight access", "not a weight packed for the Cpu bf16 GEMM")),
                }
            }
            fn unpacked_f32(&self) -> Result<Vec<f32>> {
                let (n, k) = (self.rows(), self.row_len());
                if self.t.packing == Packing::CpuGemmBf16 {
                    return Ok(cpu::unpack_gemm_bf16(self.gemm_bf16_panels()?, n, k));
                }
                if self.t.packing == Packing::CpuGemm {
                    return Ok(cpu::unpack_gemm(self.gemm_panels()?, n, k));
                }
                Ok(match self.dtype() {
                    DType::F32 => cpu::unpack_gemv(self.packed_host_slice::<f32>()?, n, k),
                    _ => cpu::unpack_gemv(self.packed_host_slice::<bf16>()?, n, k).into_iter().map(f32::from).collect(),
                })
            }
            fn expect_row_major(&self, op: &'static str) -> Result<()> {
                if self.t.packing != Packing::RowMajor {
                    return Err(Error::invalid(
                        op,
                        "the tensor is a linear weight packed for a Cpu GEMV or GEMM: only linear reads it",
                    ));
                }
                Ok(())
            }
            pub(crate) fn expect_dtype(&self, op: &'static str, what: &'static str, want: DType) -> Result<()> {
                if self.dtype() != want {
                    return Err(Error::DType { op, what, got: self.dtype(), expected: want.to_string() });
                }
                Ok(())
            }
        }
    };
}
view_common!(View, 's, 'a);
view_common!(ViewMut, 's, 's);

impl View<'_> {
    /// Whether this is a weight packed for the Cpu decode GEMV.
    pub(crate) fn is_cpu_gemv_packed(&self) -> bool {
        self.t.packing == Packing::CpuGemv
    }

    /// Whether this is a weight packed for the many-row Cpu GEMM (f32 panels, or bf16 pair panels
    /// on `cpu-bf16` with AVX-512 BF16: [`View::is_cpu_gemm_bf16_packed`]).
    pub(crate) fn is_cpu_gemm_packed(&self) -> bool {
        matches!(self.t.packing, Packing::CpuGemm | Packing::CpuGemmBf16)
    }

    /// Whether this is a weight packed as bf16 pair panels for the `cpu-bf16` GEMM.
    pub(crate) fn is_cpu_gemm_bf16_packed(&self) -> bool {
        self.t.packing == Packing::CpuGemmBf16
    }
}

impl<'a> ViewMut<'a> {
    /// A shorter-lived exclusive view of the same elements.
    pub fn reborrow(&mut self) -> ViewMut<'_> {
        ViewMut { t: self.t, offset: self.offset, dims: self.dims, _excl: PhantomData }
    }
    /// A shared view of the same elements.
    pub fn as_view(&self) -> View<'_> {
        View { t: self.t, offset: self.offset, dims: self.dims }
    }
    /// Splits into rows `..at` and `at..`.
    pub fn split_rows_at(self, at: usize) -> Result<(ViewMut<'a>, ViewMut<'a>)> {
        self.expect_row_major("split_rows_at")?;
        let rows = self.rows();
        if at > rows {
            return Err(Error::shape("split_rows_at", format!("row {at} of {rows}")));
        }
        let row_len = self.row_len();
        let a = ViewMut { t: self.t, offset: self.offset, dims: self.dims.with_rows(at), _excl: PhantomData };
        let b =
            ViewMut { t: self.t, offset: self.offset + at * row_len, dims: self.dims.with_rows(rows - at), _excl: PhantomData };
        Ok((a, b))
    }
    /// The elements as a mutable host f32 slice (Cpu and Emu tensors of dtype f32 only).
    ///
    /// A shared slice of the same view ([`ViewMut::host_f32`]) cannot be held across this call:
    ///
    /// ```compile_fail
    /// use tts_kernels::{DType, Device, Tensor};
    /// let mut t = Tensor::zeros(&Device::cpu(), DType::F32, &[4]).unwrap();
    /// let mut v = t.view_mut();
    /// let shared = v.host_f32().unwrap();
    /// let exclusive = v.host_f32_mut().unwrap(); // error: `v` is still borrowed by `shared`
    /// exclusive[0] = 42.0;
    /// assert_eq!(shared[0], 42.0);
    /// ```
    ///
    /// One after the other is fine (the same code with the shared slice's last use moved up):
    ///
    /// ```
    /// use tts_kernels::{DType, Device, Tensor};
    /// let mut t = Tensor::zeros(&Device::cpu(), DType::F32, &[4]).unwrap();
    /// let mut v = t.view_mut();
    /// let shared = v.host_f32().unwrap();
    /// assert_eq!(shared[0], 0.0);
    /// let exclusive = v.host_f32_mut().unwrap();
    /// exclusive[0] = 42.0;
    /// assert_eq!(v.host_f32().unwrap()[0], 42.0);
    /// ```
    pub fn host_f32_mut(&mut self) -> Result<&mut [f32]> {
        self.expect_dtype("host_f32_mut", "tensor", DType::F32)?;
        self.host_slice_mut::<f32>()
    }
    /// The elements as a mutable host i32 slice (Cpu and Emu tensors only).
    pub fn host_i32_mut(&mut self) -> Result<&mut [i32]> {
        self.expect_dtype("host_i32_mut", "tensor", DType::I32)?;
        self.host_slice_mut::<i32>()
    }
    /// The elements as a mutable host bf16 slice (Cpu and Emu tensors only).
    pub fn host_bf16_mut(&mut self) -> Result<&mut [bf16]> {
        self.expect_dtype("host_bf16_mut", "tensor", DType::BF16)?;
        self.host_slice_mut::<bf16>()
    }
    fn host_slice_mut<T: bytemuck::Pod>(&mut self) -> Result<&mut [T]> {
        self.expect_row_major("host access")?;
        match self.storage() {
            // SAFETY: in bounds and aligned; this ViewMut is the only access to these elements.
            Storage::Host(_) => Ok(unsafe { std::slice::from_raw_parts_mut(self.addr() as *mut T, self.len()) }),
            Storage::Cuda(_) => Err(Error::invalid("host access", "the tensor lives on a GPU")),
        }
    }
    /// Overwrites the view with host f32 values (converted to its float dtype).
    pub fn copy_from_f32(&mut self, data: &[f32]) -> Result<()> {
        self.device().forbid_while_capturing("a host-to-device copy")?;
        self.expect_row_major("copy_from_f32")?;
        if data.len() != self.len() {
            return Err(Error::shape("copy_from_f32", format!("{} values for {:?}", data.len(), self.shape())));
        }
        self.device().note_upload();
        match self.dtype() {
            DType::F32 => write_bytes(self.storage(), self.addr(), bytemuck::cast_slice(data)),
            DType::BF16 => {
                let v: Vec<bf16> = data.iter().map(|&x| bf16::from_f32(x)).collect();
                write_bytes(self.storage(), self.addr(), bytemuck::cast_slice(&v))
            }
            d => Err(Error::DType { op: "copy_from_f32", what: "tensor", got: d, expected: "f32 or bf16".into() }),
        }
    }
    /// Overwrites the i32 view with host values.
    pub fn copy_from_i32(&mut self, data: &[i32]) -> Result<()> {
        self.device().forbid_while_capturing("a host-to-device copy")?;
        self.expect_dtype("copy_from_i32", "tensor", DType::I32)?;
        self.expect_row_major("copy_from_i32")?;
        if data.len() != self.len() {
            return Err(Error::shape("copy_from_i32", format!("{} values for {:?}", data.len(), self.shape())));
        }
        self.device().note_upload();
        write_bytes(self.storage(), self.addr(), bytemuck::cast_slice(data))
    }
}

fn read_bytes(storage: &Storage, addr: u64, out: &mut [u8]) -> Result<()> {
    match storage {
        // SAFETY: addr..addr+len lies inside the allocation (views are in bounds).
        Storage::Host(_) => {
            unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, out.as_mut_ptr(), out.len()) };
            Ok(())
        }
        Storage::Cuda(c) => c.read(addr, out),
    }
}

fn write_bytes(storage: &Storage, addr: u64, data: &[u8]) -> Result<()> {
    match storage {
        // SAFETY: in bounds; the caller holds the exclusive view.
        Storage::Host(_) => {
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) };
            Ok(())
        }
        Storage::Cuda(c) => c.write(addr, data),
    }
}

/// Checks that all views live on one device and returns it.
pub(crate) fn same_device<'a>(op: &'static str, first: &'a Device, others: &[&Device]) -> Result<&'a Device> {
    if others.iter().all(|d| d.same(first)) { Ok(first) } else { Err(Error::DeviceMismatch { op }) }
}
