//! The server's voice directory (`--voices-dir`): voices uploaded through `POST /v1/voices`, one
//! saved voice per file (`<id>.safetensors`, the layout of docs/voices.md), so they survive a
//! restart and can be shared by replicas on one volume.
//!
//! - An id is `voice_` and the first 24 hex digits of the SHA-256 of the uploaded recording: the same
//!   recording uploaded twice is the same voice (the second upload renames it, nothing else).
//! - The file's metadata holds the voice's `voice_id`, `voice_name` and `created_at` (Unix seconds)
//!   beside the provenance every saved voice carries (the recording's SHA-256, rate, length, the
//!   resampler).
//! - Files are written to `<id>.safetensors.partial` and renamed, so a listing never sees half a
//!   voice; a deleted voice's file is removed.
//! - The built-in voice is always there, as `default`; it is not a file and cannot be deleted.
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::voice::Conditionals;
use crate::voice::saved::VoiceMeta;
use crate::{Error, Result};

/// The id of the model's built-in voice.
pub const BUILTIN_VOICE_ID: &str = "default";
/// The longest voice name.
pub const MAX_VOICE_NAME_CHARS: usize = 64;
const ID_PREFIX: &str = "voice_";
const ID_HEX_DIGITS: usize = 24;

/// What `GET /v1/voices` says of a voice.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VoiceInfo {
    pub id: String,
    pub object: &'static str,
    pub name: String,
    /// Unix seconds (0 for the built-in voice).
    pub created_at: u64,
    /// The built-in voice of the model.
    pub builtin: bool,
}

impl VoiceInfo {
    pub fn builtin() -> VoiceInfo {
        VoiceInfo {
            id: BUILTIN_VOICE_ID.into(),
            object: "voice",
            name: "the model's built-in voice".into(),
            created_at: 0,
            builtin: true,
        }
    }
}

/// A directory of uploaded voices.
pub struct VoiceStore {
    dir: PathBuf,
}

/// Whether `id` has the shape of an uploaded voice's id (so it can name a file safely).
pub fn is_voice_id(id: &str) -> bool {
    id.strip_prefix(ID_PREFIX)
        .is_some_and(|h| h.len() == ID_HEX_DIGITS && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// A voice name as given (trimmed): 1 to [`MAX_VOICE_NAME_CHARS`] characters, no control characters.
pub fn check_voice_name(name: &str) -> Result<String> {
    let name = name.trim();
    let bad = |expected: &str| Error::Setting { field: "name", value: format!("{name:?}"), expected: expected.into() };
    if name.is_empty() {
        return Err(bad("a name of at least one character"));
    }
    if name.chars().count() > MAX_VOICE_NAME_CHARS {
        return Err(bad(&format!("at most {MAX_VOICE_NAME_CHARS} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("no control characters"));
    }
    Ok(name.to_string())
}

impl VoiceStore {
    /// Opens (and creates) the directory, checking that files can be written in it.
    pub fn open(dir: &Path) -> Result<VoiceStore> {
        let err = |e: std::io::Error| Error::Output { path: dir.to_path_buf(), detail: format!("voice directory: {e}") };
        std::fs::create_dir_all(dir).map_err(err)?;
        let probe = dir.join(format!(".probe-{}", std::process::id()));
        std::fs::write(&probe, b"").map_err(err)?;
        let _ = std::fs::remove_file(&probe);
        Ok(VoiceStore { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.safetensors"))
    }

    /// The file of voice `id`, if it exists (`None` for ids of the wrong shape too).
    pub fn file_of(&self, id: &str) -> Option<PathBuf> {
        let p = self.path(id);
        (is_voice_id(id) && p.is_file()).then_some(p)
    }

    /// Saves `voice`, computed from a recording whose SHA-256 is `meta["source_sha256"]`, under the
    /// name `name` (default: its id). Returns its description and whether it is new.
    pub fn save(&self, voice: &Conditionals, meta: &VoiceMeta, name: Option<&str>) -> Result<(VoiceInfo, bool)> {
        let sha = meta
            .get("source_sha256")
            .filter(|s| s.len() >= ID_HEX_DIGITS)
            .ok_or_else(|| Error::Internal("a computed voice without its source's SHA-256".into()))?;
        let id = format!("{ID_PREFIX}{}", &sha[..ID_HEX_DIGITS]);
        let path = self.path(&id);
        let existing = self.read(&id).ok();
        let created_at = existing.as_ref().map_or_else(now, |v| v.created_at);
        let name = match name {
            Some(n) => check_voice_name(n)?,
            None => existing.as_ref().map_or_else(|| id.clone(), |v| v.name.clone()),
        };
        let mut meta = meta.clone();
        meta.insert("voice_id".into(), id.clone());
        meta.insert("voice_name".into(), name.clone());
        meta.insert("created_at".into(), created_at.to_string());
        voice.save(&path, &meta)?;
        Ok((VoiceInfo { id, object: "voice", name, created_at, builtin: false }, existing.is_none()))
    }

    /// The description of voice `id` from its file.
    pub fn read(&self, id: &str) -> Result<VoiceInfo> {
        let path = self.file_of(id).ok_or_else(|| Error::Voice { path: id.into(), msg: "no such voice".into() })?;
        let bytes = std::fs::read(&path).map_err(|e| Error::Voice { path: path.clone(), msg: format!("cannot read: {e}") })?;
        let (_, meta) = Conditionals::from_safetensors(&bytes).map_err(|msg| Error::Voice { path: path.clone(), msg })?;
        Ok(VoiceInfo {
            id: id.to_string(),
            object: "voice",
            name: meta.get("voice_name").cloned().unwrap_or_else(|| id.to_string()),
            created_at: meta.get("created_at").and_then(|s| s.parse().ok()).unwrap_or(0),
            builtin: false,
        })
    }

    /// Every voice in the directory, oldest first (then by id); files that are not readable voices
    /// are left out.
    pub fn list(&self) -> Result<Vec<VoiceInfo>> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::Output { path: self.dir.clone(), detail: format!("voice directory: {e}") })?;
        let mut out: Vec<VoiceInfo> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".safetensors").map(str::to_string))
            .filter(|id| is_voice_id(id))
            .filter_map(|id| self.read(&id).ok())
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// Deletes voice `id`; false when there is no such voice.
    pub fn delete(&self, id: &str) -> Result<bool> {
        let Some(path) = self.file_of(id) else { return Ok(false) };
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::Output { path, detail: e.to_string() }),
        }
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_before_they_name_a_file() {
        assert!(is_voice_id("voice_0123456789abcdef01234567"));
        for bad in [
            "voice_0123456789ABCDEF01234567",
            "voice_../../etc/passwd00000000",
            "voice_123",
            "default",
            "",
            "voice_0123456789abcdef012345678",
        ] {
            assert!(!is_voice_id(bad), "{bad}");
        }
        assert_eq!(check_voice_name("  Alice ").unwrap(), "Alice");
        for bad in ["", "   ", "a\nb", &"x".repeat(65)] {
            assert!(matches!(check_voice_name(bad), Err(Error::Setting { field: "name", .. })), "{bad:?}");
        }
    }
}
