//! Errors of tts-hub: one variant per kind of failure a caller maps to an exit code or an HTTP status
//! (bad input, a model that does not exist, offline without the files, a network failure, no access,
//! the cache on disk). Each message names what failed (the input, the repository and revision, the
//! files, the URL or the path) and, where there is one, how to fix it.
use std::path::PathBuf;

/// Errors of tts-hub.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model reference (`what` = "model") or a revision (`what` = "revision") that names neither an
    /// existing directory nor a Hub repository, or a revision given with a directory.
    #[error("{what} {input:?}: {detail}")]
    BadModelRef { what: &'static str, input: String, detail: String },
    /// A file name the caller asked for that cannot name a file of a repository (empty, absolute,
    /// `..`, a backslash or a control character).
    #[error("file name {name:?}: {detail}")]
    BadFileName { name: String, detail: String },
    /// An environment setting (`HF_HUB_OFFLINE`, `HF_ENDPOINT`, ...) whose value is not understood, or
    /// no place for the cache (no `HF_HUB_CACHE`, `HF_HOME` nor home directory).
    #[error("{var}={value:?}: {detail}")]
    BadSetting { var: &'static str, value: String, detail: String },
    /// A model reference that can only be a path (see [`crate::ModelRef::parse`]), or a
    /// [`crate::ModelRef::Dir`], naming no directory.
    #[error("model directory {}: no such directory", path.display())]
    DirNotFound { path: PathBuf },
    /// A local model directory without some of the required files.
    #[error("model directory {}: missing {}", dir.display(), list(missing))]
    DirMissingFiles { dir: PathBuf, missing: Vec<String> },
    /// The Hub answered that the repository does not exist (or is private and the token, if any, does
    /// not give access to it: the Hub does not tell the two apart).
    #[error("repository {repo:?} not found at {endpoint}{}", token_hint(*token_sent, "if it is private or gated, "))]
    RepoNotFound { repo: String, endpoint: String, token_sent: bool },
    /// The repository exists but has no such branch, tag or commit.
    #[error("repository {repo:?} has no revision {revision:?} (a branch, tag or commit)")]
    RevisionNotFound { repo: String, revision: String },
    /// Required files that the repository does not hold at that revision.
    #[error("repository {repo:?} at revision {revision:?}{}: no file {}", commit_note(commit), list(files))]
    FilesNotFound { repo: String, revision: String, commit: Option<String>, files: Vec<String> },
    /// The files are not all in the cache and the Hub cannot be asked: `HF_HUB_OFFLINE` is set, or the
    /// endpoint cannot be reached (`unreachable` says why). `missing` lists the required files that
    /// the cache lacks.
    #[error(
        "{repo}@{revision}: {} not in the Hugging Face cache {} and {}; get {} by running once with network access{}, \
         with `huggingface-cli download {repo}{}` (the same cache), or give a local model directory (--model DIR)",
        list(missing),
        cache_dir.display(),
        match unreachable { Some(cause) => format!("the Hub cannot be reached ({cause})"), None => "HF_HUB_OFFLINE is set".to_string() },
        if missing.len() == 1 { "it" } else { "them" },
        if unreachable.is_none() { " (HF_HUB_OFFLINE unset)" } else { "" },
        if revision == "main" { String::new() } else { format!(" --revision {revision}") },
    )]
    Offline { repo: String, revision: String, cache_dir: PathBuf, missing: Vec<String>, unreachable: Option<String> },
    /// The Hub refused access (HTTP 401 or 403): a private or gated repository, or a wrong token.
    #[error(
        "{url}: access refused (HTTP {status}{}){}",
        message.as_ref().map(|m| format!(": {m}")).unwrap_or_default(),
        token_hint(*token_sent, "")
    )]
    Unauthorized { repo: String, url: String, status: u16, token_sent: bool, message: Option<String> },
    /// A request or a download failed: no connection, a dropped connection, an HTTP error status, or
    /// an answer without the headers the Hub sends. The cache then holds no incomplete file: what was
    /// received is kept aside (`blobs/<id>.part`) and resumed by the next attempt.
    #[error("{url}: {detail} (nothing incomplete was put in the cache; a partial download is kept aside and resumed next time)")]
    Network { url: String, detail: String },
    /// A downloaded file whose size or SHA-256 differs from what the Hub lists for it, twice in a row
    /// (the file was removed each time).
    #[error("{file} from {url}: {detail} (the file was removed from the cache)")]
    Integrity { file: String, url: String, detail: String },
    /// The cache directory could not be read or written: `action` is what was attempted on `path`.
    #[error("Hugging Face cache: cannot {action} {}: {source}", path.display())]
    Cache {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Cache`] for `action` on `path`.
    pub fn cache(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Cache { action, path: path.into(), source }
    }
}

/// `a, b and c` (names quoted as they are).
fn list(names: &[String]) -> String {
    match names {
        [] => "nothing".to_string(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn commit_note(commit: &Option<String>) -> String {
    commit.as_ref().map(|c| format!(" (commit {c})")).unwrap_or_default()
}

/// The hint about HF_TOKEN that ends the access errors.
fn token_hint(token_sent: bool, prefix: &str) -> String {
    if token_sent {
        format!("; {prefix}check that the token in HF_TOKEN (or the token file $HF_HOME/token) is valid and has access to it")
    } else {
        format!(
            "; {prefix}set HF_TOKEN to a token with access to it (or log in with `huggingface-cli login`), and accept its terms on the Hub if it is gated"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_as_prose() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(list(&names(&[])), "nothing");
        assert_eq!(list(&names(&["a"])), "a");
        assert_eq!(list(&names(&["a", "b"])), "a and b");
        assert_eq!(list(&names(&["a", "b", "c"])), "a, b and c");
    }

    #[test]
    fn offline_message_names_files_and_remedies() {
        let e = Error::Offline {
            repo: "o/n".into(),
            revision: "v2".into(),
            cache_dir: "/c".into(),
            missing: vec!["x.safetensors".into(), "y.json".into()],
            unreachable: None,
        };
        let m = e.to_string();
        for part in
            ["x.safetensors and y.json", "/c", "HF_HUB_OFFLINE", "huggingface-cli download o/n --revision v2", "--model DIR"]
        {
            assert!(m.contains(part), "{part:?} not in {m}");
        }
    }
}
