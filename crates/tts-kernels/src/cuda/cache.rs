//! On-disk cache of compiled kernels, keyed by (source hash, NVRTC options, arch, NVRTC version).
//!
//! Location: `$TTS_KERNEL_CACHE` if set (`off` disables the cache), else
//! `$XDG_CACHE_HOME/tts-engine/kernels`, else `~/.cache/tts-engine/kernels`. Entries are written to
//! a temporary file and renamed into place, so a crash never leaves a half-written CUBIN behind.
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub(crate) fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("TTS_KERNEL_CACHE") {
        Some(v) if v == "off" => None,
        Some(v) => Some(PathBuf::from(v)),
        None => {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(base.join("tts-engine").join("kernels"))
        }
    }
}

/// The cache key of one compilation.
pub(crate) fn key(source: &str, options: &[String], arch: &str, nvrtc: (i32, i32)) -> String {
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    for o in options {
        h.update([0u8]);
        h.update(o.as_bytes());
    }
    h.update(format!("\0{arch}\0nvrtc {}.{}", nvrtc.0, nvrtc.1).as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn load(dir: &Path, key: &str) -> Option<Vec<u8>> {
    std::fs::read(dir.join(format!("{key}.cubin"))).ok().filter(|b| !b.is_empty())
}

pub(crate) fn store(dir: &Path, key: &str, cubin: &[u8]) -> Result<()> {
    let err = |source| Error::Cache { path: dir.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, cubin).map_err(err)?;
    std::fs::rename(&tmp, dir.join(format!("{key}.cubin"))).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_changes_with_every_input() {
        let o = vec!["--std=c++17".to_string()];
        let k = key("src", &o, "sm_90", (12, 9));
        assert_ne!(k, key("src2", &o, "sm_90", (12, 9)));
        assert_ne!(k, key("src", &["-O3".to_string()], "sm_90", (12, 9)));
        assert_ne!(k, key("src", &o, "sm_80", (12, 9)));
        assert_ne!(k, key("src", &o, "sm_90", (12, 8)));
        assert_eq!(k, key("src", &o, "sm_90", (12, 9)));
    }

    #[test]
    fn store_then_load_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("tts-kcache-test-{}", std::process::id()));
        store(&dir, "abc", &[1, 2, 3]).unwrap();
        assert_eq!(load(&dir, "abc"), Some(vec![1, 2, 3]));
        assert_eq!(load(&dir, "missing"), None);
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("abc.cubin")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
