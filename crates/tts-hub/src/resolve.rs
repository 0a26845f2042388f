//! A [`ModelRef`] to a directory holding the model's files: the directory itself, or the snapshot of
//! a Hub repository in the cache, completed from the Hub when it lacks files.
use crate::cache::RepoCache;
use crate::error::{Error, Result};
use crate::model_ref::ModelRef;
use crate::names::{file_name_problem, is_commit_id, repo_id_problem, revision_problem};
use crate::options::HubOptions;
use crate::progress::DownloadProgress;
use crate::remote::{DownloadFailure, Hub, ListingFailure};
use std::path::{Path, PathBuf};

/// Where a model's files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The directory holding them: the model directory, or the snapshot `snapshots/{commit}` in the
    /// cache (its entries are symlinks to the blobs).
    pub dir: PathBuf,
    /// The repository (`owner/name`); `None` for a directory.
    pub repo: Option<String>,
    /// The revision asked for; `None` for a directory.
    pub revision: Option<String>,
    /// The commit the revision resolved to; `None` for a directory.
    pub commit: Option<String>,
    /// Each required file, then each optional file that exists, in the order asked: name and path.
    pub files: Vec<(String, PathBuf)>,
    /// The files this call downloaded (empty when everything came from the cache or a directory).
    pub downloaded: Vec<String>,
}

impl Resolved {
    /// The path of file `name`, `None` when it is an optional file the model does not have.
    pub fn path(&self, name: &str) -> Option<&Path> {
        self.files.iter().find(|(n, _)| n == name).map(|(_, p)| p.as_path())
    }
}

/// Finds the `required` and `optional` files of `model` (names of files in the repository, such as
/// `t3_cfg.safetensors`).
///
/// - A directory: its files; a missing required file is an [`Error::DirMissingFiles`].
/// - A Hub repository: the snapshot in the cache that `refs/{revision}` (or the commit id itself)
///   points to, with no request at all when it holds every required file (optional files it lacks
///   are taken as absent). Otherwise, unless `opts.offline`, the Hub's listing of the revision fixes
///   the commit, each file the snapshot lacks is linked to a blob already in the cache or downloaded
///   (with `progress`), checked against the listing's size and SHA-256, and `refs/{revision}` is
///   updated. An optional file the repository does not have is absent (recorded in `.no_exist`).
///   Offline, or with the Hub unreachable, a snapshot without every required file is one
///   [`Error::Offline`] listing the missing files.
pub fn resolve(
    model: &ModelRef,
    required: &[&str],
    optional: &[&str],
    opts: &HubOptions,
    progress: &mut dyn DownloadProgress,
) -> Result<Resolved> {
    for &name in required.iter().chain(optional) {
        if let Some(detail) = file_name_problem(name) {
            return Err(Error::BadFileName { name: name.to_string(), detail });
        }
    }
    match model {
        ModelRef::Dir(dir) => resolve_dir(dir, required, optional),
        ModelRef::Hub { repo, revision } => resolve_hub(repo, revision, required, optional, opts, progress),
    }
}

fn resolve_dir(dir: &Path, required: &[&str], optional: &[&str]) -> Result<Resolved> {
    if !dir.is_dir() {
        return Err(Error::DirNotFound { path: dir.to_path_buf() });
    }
    let missing: Vec<String> = required.iter().filter(|f| !dir.join(f).is_file()).map(|f| f.to_string()).collect();
    if !missing.is_empty() {
        return Err(Error::DirMissingFiles { dir: dir.to_path_buf(), missing });
    }
    let files =
        required.iter().chain(optional.iter().filter(|f| dir.join(f).is_file())).map(|f| (f.to_string(), dir.join(f))).collect();
    Ok(Resolved { dir: dir.to_path_buf(), repo: None, revision: None, commit: None, files, downloaded: Vec::new() })
}

fn resolve_hub(
    repo: &str,
    revision: &str,
    required: &[&str],
    optional: &[&str],
    opts: &HubOptions,
    progress: &mut dyn DownloadProgress,
) -> Result<Resolved> {
    // A ModelRef can be built without parse: check again what becomes part of paths and URLs.
    if let Some(detail) = repo_id_problem(repo) {
        return Err(Error::BadModelRef { what: "model", input: repo.to_string(), detail });
    }
    if let Some(detail) = revision_problem(revision) {
        return Err(Error::BadModelRef { what: "revision", input: revision.to_string(), detail });
    }
    let cache = RepoCache::new(&opts.cache_dir, repo);
    let resolved = |commit: &str, files: Vec<(String, PathBuf)>, downloaded: Vec<String>| Resolved {
        dir: cache.snapshot_dir(commit),
        repo: Some(repo.to_string()),
        revision: Some(revision.to_string()),
        commit: Some(commit.to_string()),
        files,
        downloaded,
    };

    // 1. The cache: no request when the snapshot is complete.
    let mut missing: Vec<String> = required.iter().map(|f| f.to_string()).collect();
    if let Some(commit) = cache.cached_commit(revision) {
        let lookup = cache.lookup(&commit, required, optional);
        if lookup.missing_required.is_empty() {
            return Ok(resolved(&commit, lookup.present, Vec::new()));
        }
        missing = lookup.missing_required;
    }
    let offline = |unreachable: Option<String>| Error::Offline {
        repo: repo.to_string(),
        revision: revision.to_string(),
        cache_dir: opts.cache_dir.clone(),
        missing: missing.clone(),
        unreachable,
    };
    if opts.offline {
        return Err(offline(None));
    }

    // 2. The Hub: the listing fixes the commit, so that every file comes from the same one.
    let hub = Hub::new(opts, repo)?;
    let listing = match hub.listing(revision) {
        Ok(listing) => listing,
        Err(ListingFailure::Unreachable(cause)) => return Err(offline(Some(cause))),
        Err(ListingFailure::Answered(e)) => return Err(e),
    };
    let commit = listing.commit.as_str();
    let not_listed: Vec<String> = required.iter().filter(|f| !listing.files.contains_key(**f)).map(|f| f.to_string()).collect();
    let files_not_found = |files: Vec<String>| Error::FilesNotFound {
        repo: repo.to_string(),
        revision: revision.to_string(),
        commit: Some(commit.to_string()),
        files,
    };
    if !not_listed.is_empty() {
        return Err(files_not_found(not_listed));
    }
    if revision != commit {
        cache.write_ref(revision, commit)?;
    }
    // hf-hub also records each download under refs/{commit}, which huggingface_hub never writes.
    let _stray_ref = StrayRef::new(&cache, commit);

    let mut files = Vec::new();
    let mut downloaded = Vec::new();
    for (&name, is_required) in required.iter().map(|f| (f, true)).chain(optional.iter().map(|f| (f, false))) {
        let Some(remote) = listing.files.get(name) else {
            cache.mark_absent(commit, name)?;
            continue;
        };
        if let Some(path) = cache.snapshot_file(commit, name) {
            files.push((name.to_string(), path));
            continue;
        }
        // The same content in another snapshot (another revision, an earlier commit): link it.
        if let (Some(id), Some(size)) = (remote.cache_id(), remote.size)
            && std::fs::metadata(cache.blob_path(id)).is_ok_and(|m| m.is_file() && m.len() == size)
        {
            files.push((name.to_string(), cache.link_blob(commit, name, id)?));
            continue;
        }
        match hub.download(&cache, commit, name, remote, progress) {
            Ok(path) => {
                files.push((name.to_string(), path));
                downloaded.push(name.to_string());
            }
            Err(DownloadFailure::NotFound) if !is_required => cache.mark_absent(commit, name)?,
            Err(DownloadFailure::NotFound) => return Err(files_not_found(vec![name.to_string()])),
            Err(DownloadFailure::Failed(e)) => return Err(e),
        }
    }
    Ok(resolved(commit, files, downloaded))
}

/// Removes `refs/{commit}` when it goes out of scope, unless it was there before (and `refs/` with
/// it when that leaves it empty).
struct StrayRef {
    path: Option<PathBuf>,
}

impl StrayRef {
    fn new(cache: &RepoCache, commit: &str) -> StrayRef {
        let path = cache.ref_path(commit);
        StrayRef { path: (is_commit_id(commit) && !path.exists()).then_some(path) }
    }
}

impl Drop for StrayRef {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
            if let Some(refs) = path.parent() {
                let _ = std::fs::remove_dir(refs);
            }
        }
    }
}
