//! librosa's default resampler, `soxr_hq`, through libsoxr loaded at run time.
//!
//! `librosa.resample(y, orig_sr=from, target_sr=to)` (librosa 0.11) calls python-soxr 1.1.0's
//! `soxr.resample(y, from, to, quality="soxr_hq")` and then `librosa.util.fix_length` to
//! `ceil(len · to / from)` samples. python-soxr's `csoxr_split_ch<float>` (src/soxr_ext.cpp) creates a
//! libsoxr resampler with `soxr_io_spec(SOXR_FLOAT32_S, SOXR_FLOAT32_S)` and
//! `soxr_quality_spec(SOXR_HQ, 0)`, feeds the input in blocks of `max(1000, 48000·from/to)` samples
//! into an output buffer of `len·to/from + 1` samples, and flushes. [`librosa_resample`] makes the
//! same calls, in the same order, on the same C library.
//!
//! libsoxr is LGPL-2.1, so it is never linked or vendored: it is opened with `dlopen` the first time
//! it is needed. Search order (the first that exists wins; a set `TTS_SOXR_LIB` is the only one tried):
//! 1. `$TTS_SOXR_LIB`: a path to `libsoxr.so.0` (or any libsoxr 0.1.x shared object);
//! 2. `libsoxr.so.0` through the dynamic loader (`LD_LIBRARY_PATH`, the ld.so cache: Debian/Ubuntu
//!    `libsoxr0`, Fedora `soxr`);
//! 3. the copy `scripts/soxr.sh` installs into this checkout's `.cache/soxr/` (Debian 12's
//!    libsoxr0 0.1.3-4, pinned by its SHA-256).
//!
//! Not found is an [`Error::Soxr`] that says how to install it; there is no silent switch to
//! another resampler. python-soxr bundles libsoxr 0.1.3 (its fork at 0.1.3-14-ga66f3ee); Debian's
//! 0.1.3 gives the same samples to ~1e-7 relative (the parity case `cond_mel_a` measures it).
use std::ffi::{CStr, c_char, c_double, c_uint, c_ulong, c_void};
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::{Error, Result};

/// `soxr_datatype_t`: SOXR_FLOAT32_S (split channels, float32).
const SOXR_FLOAT32_S: c_uint = 4;
/// `SOXR_HQ` = `SOXR_20_BITQ`, python-soxr's "HQ" and librosa's "soxr_hq".
const SOXR_HQ: c_ulong = 4;

/// `soxr_io_spec_t` (soxr.h 0.1.x).
#[repr(C)]
#[derive(Clone, Copy)]
struct IoSpec {
    itype: c_uint,
    otype: c_uint,
    scale: c_double,
    e: *mut c_void,
    flags: c_ulong,
}

/// `soxr_quality_spec_t` (soxr.h 0.1.x).
#[repr(C)]
#[derive(Clone, Copy)]
struct QualitySpec {
    precision: c_double,
    phase_response: c_double,
    passband_end: c_double,
    stopband_begin: c_double,
    e: *mut c_void,
    flags: c_ulong,
}

type SoxrT = *mut c_void;
type SoxrError = *const c_char;
type CreateFn =
    unsafe extern "C" fn(c_double, c_double, c_uint, *mut SoxrError, *const IoSpec, *const QualitySpec, *const c_void) -> SoxrT;
type ProcessFn = unsafe extern "C" fn(SoxrT, *const c_void, usize, *mut usize, *mut c_void, usize, *mut usize) -> SoxrError;
type DeleteFn = unsafe extern "C" fn(SoxrT);
type IoSpecFn = unsafe extern "C" fn(c_uint, c_uint) -> IoSpec;
type QualitySpecFn = unsafe extern "C" fn(c_ulong, c_ulong) -> QualitySpec;
type VersionFn = unsafe extern "C" fn() -> *const c_char;

/// The loaded library and its entry points.
struct Soxr {
    _lib: libloading::Library,
    path: String,
    version: String,
    create: CreateFn,
    process: ProcessFn,
    delete: DeleteFn,
    io_spec: IoSpecFn,
    quality_spec: QualitySpecFn,
}

/// The `.cache` copy `scripts/soxr.sh` installs, relative to this checkout.
fn cached_copy() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/soxr/usr/lib/x86_64-linux-gnu/libsoxr.so.0"))
}

const HOW_TO_INSTALL: &str = "install it (Debian/Ubuntu: `apt-get install libsoxr0`; Fedora: `dnf install soxr`; macOS: \
     `brew install libsoxr`) or run `bash scripts/soxr.sh` in the chatterbox-rs checkout and set TTS_SOXR_LIB to the \
     path it prints";

fn open(path: &str) -> Result<Soxr, String> {
    // SAFETY: loading libsoxr runs only its ELF initialisers (none with side effects beyond libgomp's).
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())?;
    // SAFETY: the symbols are libsoxr 0.1.x's public C API; the types above are soxr.h's prototypes.
    unsafe {
        let create = *lib.get::<CreateFn>(b"soxr_create\0").map_err(|e| e.to_string())?;
        let process = *lib.get::<ProcessFn>(b"soxr_process\0").map_err(|e| e.to_string())?;
        let delete = *lib.get::<DeleteFn>(b"soxr_delete\0").map_err(|e| e.to_string())?;
        let io_spec = *lib.get::<IoSpecFn>(b"soxr_io_spec\0").map_err(|e| e.to_string())?;
        let quality_spec = *lib.get::<QualitySpecFn>(b"soxr_quality_spec\0").map_err(|e| e.to_string())?;
        let version_fn = *lib.get::<VersionFn>(b"soxr_version\0").map_err(|e| e.to_string())?;
        let v = version_fn();
        let version = if v.is_null() { "unknown".into() } else { CStr::from_ptr(v).to_string_lossy().into_owned() };
        Ok(Soxr { _lib: lib, path: path.to_string(), version, create, process, delete, io_spec, quality_spec })
    }
}

fn find() -> Result<Soxr, String> {
    if let Some(p) = std::env::var_os("TTS_SOXR_LIB") {
        let p = p.to_string_lossy().into_owned();
        return open(&p).map_err(|e| format!("TTS_SOXR_LIB={p} cannot be loaded ({e}); {HOW_TO_INSTALL}"));
    }
    let mut tried = Vec::new();
    for candidate in ["libsoxr.so.0".to_string(), cached_copy().to_string_lossy().into_owned()] {
        match open(&candidate) {
            Ok(s) => return Ok(s),
            Err(e) => tried.push(format!("{candidate}: {e}")),
        }
    }
    Err(format!("not found (librosa's soxr_hq resampler needs it; tried {}); {HOW_TO_INSTALL}", tried.join("; ")))
}

fn library() -> Result<&'static Soxr> {
    static LIB: OnceLock<Result<Soxr, String>> = OnceLock::new();
    LIB.get_or_init(find).as_ref().map_err(|detail| Error::Soxr { detail: detail.clone() })
}

/// Where libsoxr was loaded from and its version string (`libsoxr-0.1.3`), loading it if needed.
pub fn loaded() -> Result<(String, String)> {
    library().map(|s| (s.path.clone(), s.version.clone()))
}

/// `soxr.resample(x, from, to, quality="HQ")` of python-soxr 1.1.0 for a mono float32 signal: its
/// `csoxr_split_ch<float>` call for call.
pub fn soxr_resample(x: &[f32], from: f64, to: f64) -> Result<Vec<f32>> {
    let s = library()?;
    let ilen = x.len();
    let olen = (ilen as f64 * to / from + 1.0) as usize;
    let div_len = 1000f64.max(48000.0 * from / to) as usize;
    let mut y = vec![0f32; olen];
    let mut err: SoxrError = std::ptr::null();
    // SAFETY: soxr_io_spec / soxr_quality_spec return plain structs; soxr_create gets valid pointers
    // to them (copied by libsoxr) and a null runtime spec (its defaults: one thread).
    let soxr = unsafe {
        let io = (s.io_spec)(SOXR_FLOAT32_S, SOXR_FLOAT32_S);
        let q = (s.quality_spec)(SOXR_HQ, 0);
        (s.create)(from, to, 1, &mut err, &io, &q, std::ptr::null())
    };
    if !err.is_null() || soxr.is_null() {
        return Err(Error::Soxr { detail: format!("soxr_create({from}, {to}): {}", message(err)) });
    }
    let mut out_pos = 0usize;
    let mut odone = 0usize;
    let mut idx = 0usize;
    while idx < ilen && err.is_null() {
        let n = div_len.min(ilen - idx);
        let ibuf = [x[idx..].as_ptr()];
        let obuf = [y[out_pos..].as_mut_ptr()];
        // SAFETY: split-channel I/O takes arrays of one pointer per channel (one here): `n` readable
        // samples at ibuf[0], `olen − out_pos` writable ones at obuf[0]; odone is written before return.
        err = unsafe {
            (s.process)(
                soxr,
                ibuf.as_ptr().cast(),
                n,
                std::ptr::null_mut(),
                obuf.as_ptr() as *mut c_void,
                olen - out_pos,
                &mut odone,
            )
        };
        out_pos += odone;
        idx += div_len;
    }
    if err.is_null() {
        let obuf = [y[out_pos..].as_mut_ptr()];
        // SAFETY: a null input flushes; the output as above.
        err = unsafe {
            (s.process)(soxr, std::ptr::null(), 0, std::ptr::null_mut(), obuf.as_ptr() as *mut c_void, olen - out_pos, &mut odone)
        };
        out_pos += odone;
    }
    // SAFETY: created above, deleted once.
    unsafe { (s.delete)(soxr) };
    if !err.is_null() {
        return Err(Error::Soxr { detail: format!("soxr_process: {}", message(err)) });
    }
    y.truncate(out_pos);
    Ok(y)
}

fn message(err: SoxrError) -> String {
    if err.is_null() {
        "returned no resampler".into()
    } else {
        // SAFETY: libsoxr's errors are static NUL-terminated strings.
        unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned()
    }
}

/// `librosa.resample(x, orig_sr=from, target_sr=to)` (res_type `soxr_hq`, `fix=True`): libsoxr's
/// output, zero-padded or cut to `ceil(len · (to / from))` samples (`librosa.util.fix_length`).
pub fn librosa_resample(x: &[f32], from: u32, to: u32) -> Result<Vec<f32>> {
    let ratio = to as f64 / from as f64;
    let n_samples = (x.len() as f64 * ratio).ceil() as usize;
    let mut y = soxr_resample(x, from as f64, to as f64)?;
    y.resize(n_samples, 0.0);
    Ok(y)
}
