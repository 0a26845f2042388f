//! What `--model X [--revision R]` names: a local model directory or a Hub repository at a revision.
use crate::error::{Error, Result};
use crate::names::{repo_id_problem, revision_problem};
use std::fmt;
use std::path::{Path, PathBuf};

/// The repository the engine loads when none is given.
pub const DEFAULT_REPO: &str = "ResembleAI/chatterbox";
/// The revision of a repository when none is given.
pub const DEFAULT_REVISION: &str = "main";

/// A model: a directory holding its files, or a Hugging Face Hub repository at a revision (a
/// branch, tag or commit id) whose files come from the cache or are downloaded into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelRef {
    /// A local directory (as given, `~` expanded).
    Dir(PathBuf),
    /// A Hub model repository `owner/name` at `revision`.
    Hub { repo: String, revision: String },
}

impl ModelRef {
    /// Reads a `--model` argument and an optional `--revision`.
    ///
    /// - An existing path is a [`ModelRef::Dir`] (an existing file is an error: a model is a
    ///   directory), even when it could also be a repository id.
    /// - Something that looks like a path (starts with `/`, `.` or `~`, has more than one `/`, or a
    ///   backslash) but does not exist is an [`Error::DirNotFound`].
    /// - `owner/name` of Hub characters is a [`ModelRef::Hub`] at `revision`, [`DEFAULT_REVISION`]
    ///   when none is given.
    /// - Anything else, or a revision given with a directory, is an [`Error::BadModelRef`].
    pub fn parse(model: &str, revision: Option<&str>) -> Result<ModelRef> {
        let bad = |detail: String| Error::BadModelRef { what: "model", input: model.to_string(), detail };
        if model.is_empty() {
            return Err(bad("empty: give a model directory or a Hugging Face repository id (owner/name)".into()));
        }
        let path = expand_home(model).map_err(bad)?;
        if path.exists() {
            if !path.is_dir() {
                return Err(bad("is a file; a model is a directory holding the model files".into()));
            }
            return match revision {
                Some(rev) => Err(Error::BadModelRef {
                    what: "revision",
                    input: rev.to_string(),
                    detail: format!("a revision applies to a Hub repository, not to the directory {model}"),
                }),
                None => Ok(ModelRef::Dir(path)),
            };
        }
        if looks_like_path(model) {
            return Err(Error::DirNotFound { path });
        }
        if let Some(problem) = repo_id_problem(model) {
            return Err(bad(format!("neither an existing directory nor a Hugging Face repository id (owner/name): {problem}")));
        }
        let revision = revision.unwrap_or(DEFAULT_REVISION);
        if let Some(problem) = revision_problem(revision) {
            return Err(Error::BadModelRef { what: "revision", input: revision.to_string(), detail: problem });
        }
        Ok(ModelRef::Hub { repo: model.to_string(), revision: revision.to_string() })
    }

    /// The default model: [`DEFAULT_REPO`] at [`DEFAULT_REVISION`].
    pub fn default_hub() -> ModelRef {
        ModelRef::Hub { repo: DEFAULT_REPO.to_string(), revision: DEFAULT_REVISION.to_string() }
    }
}

impl fmt::Display for ModelRef {
    /// A directory as its path, a repository as `owner/name@revision`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::Dir(dir) => write!(f, "{}", dir.display()),
            ModelRef::Hub { repo, revision } => write!(f, "{repo}@{revision}"),
        }
    }
}

/// Whether `s` can only be meant as a path: it starts with `/`, `.` or `~`, has more than one `/`,
/// or holds a backslash.
fn looks_like_path(s: &str) -> bool {
    s.starts_with(['/', '.', '~']) || s.matches('/').count() > 1 || s.contains('\\')
}

/// `~` and `~/...` with the home directory; other strings as they are.
fn expand_home(s: &str) -> std::result::Result<PathBuf, String> {
    let rest = match s.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.trim_start_matches('/'),
        _ => return Ok(PathBuf::from(s)),
    };
    let home = std::env::home_dir().ok_or_else(|| "cannot expand '~': no home directory is known".to_string())?;
    Ok(if rest.is_empty() { home } else { Path::new(&home).join(rest) })
}
