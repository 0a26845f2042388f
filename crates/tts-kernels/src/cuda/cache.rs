//! On-disk cache of compiled kernels, keyed by (source hash, NVRTC options, arch, NVRTC version).
//!
//! Location: `$TTS_KERNEL_CACHE` if set (`off` disables the cache), else
//! `$XDG_CACHE_HOME/tts-engine/kernels`, else `~/.cache/tts-engine/kernels`.
//!
//! An entry is `MAGIC`, the SHA-256 of the CUBIN, then the CUBIN. It is written to a temporary file
//! whose name is unique per process, thread and call, then renamed into place, so neither a crash nor
//! two processes (or threads) compiling the same key at once leave a half-written entry. An entry
//! that does not check out (truncated, overwritten, another format) is reported, removed and
//! recompiled, never an error.
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

/// The first bytes of every cache entry (format version 1).
const MAGIC: &[u8; 8] = b"TTSCUBN1";

/// What the cache holds for a key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    Hit(Vec<u8>),
    Miss,
    /// An entry was there but did not check out (why); it has been removed.
    Corrupt(String),
}

fn entry_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.cubin"))
}

pub(crate) fn load(dir: &Path, key: &str) -> Lookup {
    let path = entry_path(dir, key);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
        Err(e) => return Lookup::Corrupt(format!("{}: {e}", path.display())),
    };
    let why = if bytes.len() <= MAGIC.len() + 32 {
        Some(format!("{} bytes, too short", bytes.len()))
    } else if &bytes[..MAGIC.len()] != MAGIC {
        Some("not a cache entry of this format".to_string())
    } else if Sha256::digest(&bytes[MAGIC.len() + 32..]).as_slice() != &bytes[MAGIC.len()..MAGIC.len() + 32] {
        Some("checksum mismatch".to_string())
    } else {
        None
    };
    match why {
        None => Lookup::Hit(bytes[MAGIC.len() + 32..].to_vec()),
        Some(w) => {
            let _ = std::fs::remove_file(&path);
            Lookup::Corrupt(format!("{}: {w}", path.display()))
        }
    }
}

/// Removes the entry of `key` (a CUBIN the driver refused to load).
pub(crate) fn remove(dir: &Path, key: &str) {
    let _ = std::fs::remove_file(entry_path(dir, key));
}

pub(crate) fn store(dir: &Path, key: &str, cubin: &[u8]) -> Result<()> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let err = |source| Error::Cache { path: dir.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(err)?;
    let unique = format!(
        "{}-{:?}-{}-{}",
        std::process::id(),
        std::thread::current().id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    )
    .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "");
    let tmp = dir.join(format!(".{key}.{unique}.tmp"));
    let mut data = Vec::with_capacity(MAGIC.len() + 32 + cubin.len());
    data.extend_from_slice(MAGIC);
    data.extend_from_slice(&Sha256::digest(cubin));
    data.extend_from_slice(cubin);
    let written = std::fs::write(&tmp, &data).and_then(|()| std::fs::rename(&tmp, entry_path(dir, key)));
    written.map_err(|e| {
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

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tts-kcache-{tag}-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn store_then_load_leaves_no_temporary_file() {
        let dir = temp_dir("roundtrip");
        store(&dir, "abc", &[1, 2, 3]).unwrap();
        assert_eq!(load(&dir, "abc"), Lookup::Hit(vec![1, 2, 3]));
        assert_eq!(load(&dir, "missing"), Lookup::Miss);
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("abc.cubin")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_entry_is_reported_removed_and_then_a_miss() {
        let dir = temp_dir("corrupt");
        let cubin: Vec<u8> = (0..4000u32).map(|i| (i * 7 + 3) as u8).collect();
        let path = dir.join("k.cubin");
        // every kind of damage: a flipped byte in the body, in the checksum, in the magic; truncation;
        // an empty file; a raw CUBIN of the old format
        type Damage = Box<dyn Fn(&mut Vec<u8>)>;
        let damages: Vec<(&str, Damage)> = vec![
            ("body byte", Box::new(|b: &mut Vec<u8>| b[100] ^= 1)),
            ("checksum byte", Box::new(|b: &mut Vec<u8>| b[MAGIC.len() + 5] ^= 0x80)),
            ("magic", Box::new(|b: &mut Vec<u8>| b[0] = b'X')),
            ("truncated", Box::new(|b: &mut Vec<u8>| b.truncate(b.len() / 2))),
            ("empty", Box::new(|b: &mut Vec<u8>| b.clear())),
            ("old format", Box::new(|b: &mut Vec<u8>| *b = b[MAGIC.len() + 32..].to_vec())),
        ];
        for (what, damage) in damages {
            store(&dir, "k", &cubin).unwrap();
            let mut bytes = std::fs::read(&path).unwrap();
            damage(&mut bytes);
            std::fs::write(&path, &bytes).unwrap();
            match load(&dir, "k") {
                Lookup::Corrupt(why) => assert!(why.contains("k.cubin"), "{what}: {why}"),
                other => panic!("{what}: {other:?}"),
            }
            assert!(!path.exists(), "{what}: the damaged entry must be removed");
            assert_eq!(load(&dir, "k"), Lookup::Miss, "{what}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_writers_of_one_key_never_expose_a_partial_entry() {
        let dir = temp_dir("race");
        let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i ^ (i >> 8)) as u8).collect();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10 {
                        store(&dir, "same", &big).unwrap();
                        match load(&dir, "same") {
                            Lookup::Hit(b) => assert!(b == big, "a reader saw a different CUBIN"),
                            other => panic!("{other:?}"),
                        }
                    }
                });
            }
        });
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("same.cubin")], "no temporary file is left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
