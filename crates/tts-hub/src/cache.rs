//! One repository's folder in the standard Hugging Face cache (the layout `huggingface_hub`, hf-hub
//! and `huggingface-cli` share):
//!
//! ```text
//! {cache_dir}/models--{owner}--{name}/
//!     blobs/{id}                     file contents, named by LFS SHA-256 or git blob id
//!     blobs/{id}.part                a download in progress (hf-hub's; resumed, never read)
//!     refs/{revision}                the commit a branch or tag pointed to when it was resolved
//!     snapshots/{commit}/{file}      a relative symlink to ../../blobs/{id}, made once the blob is complete
//!     .no_exist/{commit}/{file}      an empty marker: the repository has no such file at that commit
//! ```
use crate::error::{Error, Result};
use crate::names::is_commit_id;
use std::path::{Path, PathBuf};

/// The cache folder of one model repository.
#[derive(Clone, Debug)]
pub(crate) struct RepoCache {
    dir: PathBuf,
}

/// What the cache holds of a list of files at one commit.
#[derive(Debug, Default)]
pub(crate) struct Lookup {
    /// Files present, in the order asked: their name and their path in the snapshot.
    pub present: Vec<(String, PathBuf)>,
    /// Required files that are not there.
    pub missing_required: Vec<String>,
}

impl RepoCache {
    /// The folder of model repository `repo` (`owner/name`) in `cache_dir`, named as hf-hub names it.
    pub fn new(cache_dir: &Path, repo: &str) -> RepoCache {
        let folder = hf_hub::Repo::model(repo.to_string()).folder_name();
        RepoCache { dir: cache_dir.join(folder) }
    }

    pub fn ref_path(&self, revision: &str) -> PathBuf {
        self.dir.join("refs").join(revision)
    }

    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    pub fn blob_path(&self, id: &str) -> PathBuf {
        self.dir.join("blobs").join(id)
    }

    /// Where hf-hub keeps a download of blob `id` in progress (`Path::set_extension("part")`).
    pub fn part_path(&self, id: &str) -> PathBuf {
        let mut path = self.blob_path(id);
        path.set_extension("part");
        path
    }

    fn no_exist_path(&self, commit: &str, file: &str) -> PathBuf {
        self.dir.join(".no_exist").join(commit).join(file)
    }

    /// The commit `revision` resolves to in the cache: the revision itself when it is a commit id with
    /// a snapshot folder, else the content of `refs/{revision}` when that is a commit id.
    pub fn cached_commit(&self, revision: &str) -> Option<String> {
        if is_commit_id(revision) && self.snapshot_dir(revision).is_dir() {
            return Some(revision.to_string());
        }
        let text = std::fs::read_to_string(self.ref_path(revision)).ok()?;
        let commit = text.trim();
        is_commit_id(commit).then(|| commit.to_string())
    }

    /// The snapshot path of `file` at `commit` when it is there (a complete file: snapshot entries are
    /// made only after their blob is complete; a link whose blob is gone does not count).
    pub fn snapshot_file(&self, commit: &str, file: &str) -> Option<PathBuf> {
        let path = self.snapshot_dir(commit).join(file);
        path.is_file().then_some(path)
    }

    /// What the snapshot of `commit` holds of `required` and `optional` files (an optional file that is
    /// not there is absent, whether or not a `.no_exist` marker says so).
    pub fn lookup(&self, commit: &str, required: &[&str], optional: &[&str]) -> Lookup {
        let mut lookup = Lookup::default();
        for &file in required {
            match self.snapshot_file(commit, file) {
                Some(path) => lookup.present.push((file.to_string(), path)),
                None => lookup.missing_required.push(file.to_string()),
            }
        }
        for &file in optional {
            if let Some(path) = self.snapshot_file(commit, file) {
                lookup.present.push((file.to_string(), path));
            }
        }
        lookup
    }

    /// Points `refs/{revision}` at `commit`, atomically (a temporary file renamed over it).
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        let path = self.ref_path(revision);
        create_parent(&path)?;
        let tmp = sibling_tmp(&path);
        std::fs::write(&tmp, commit).map_err(|e| Error::cache("write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::cache("rename into place", &path, e)
        })
    }

    /// Records that the repository has no `file` at `commit` (`.no_exist/{commit}/{file}`).
    pub fn mark_absent(&self, commit: &str, file: &str) -> Result<()> {
        let path = self.no_exist_path(commit, file);
        create_parent(&path)?;
        std::fs::File::create(&path).map(drop).map_err(|e| Error::cache("create", &path, e))
    }

    /// Makes `snapshots/{commit}/{file}` point at the complete blob `id` (a relative symlink; a copy
    /// where the system has no symlinks) and returns its path.
    pub fn link_blob(&self, commit: &str, file: &str, id: &str) -> Result<PathBuf> {
        let link = self.snapshot_dir(commit).join(file);
        create_parent(&link)?;
        let blob = self.blob_path(id);
        let _ = std::fs::remove_file(&link);
        #[cfg(unix)]
        {
            // From snapshots/{commit}/{file}: one `..` per folder of `file`, then two.
            let mut target = PathBuf::new();
            for _ in 0..file.split('/').count() + 1 {
                target.push("..");
            }
            target.push("blobs");
            target.push(id);
            std::os::unix::fs::symlink(&target, &link).map_err(|e| Error::cache("create the symlink", &link, e))?;
        }
        #[cfg(not(unix))]
        {
            let tmp = sibling_tmp(&link);
            std::fs::copy(&blob, &tmp).map_err(|e| Error::cache("copy a blob to", &tmp, e))?;
            std::fs::rename(&tmp, &link).map_err(|e| Error::cache("rename into place", &link, e))?;
        }
        debug_assert!(blob.is_file());
        Ok(link)
    }

    /// Removes a snapshot entry and the blob it points to, and the blob's part file (a download that
    /// failed its check). Missing files are fine.
    pub fn remove_entry(&self, snapshot_file: &Path, blob: Option<&Path>, id: Option<&str>) -> Result<()> {
        for path in [Some(snapshot_file.to_path_buf()), blob.map(Path::to_path_buf), id.map(|id| self.part_path(id))]
            .into_iter()
            .flatten()
        {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::cache("remove", path, e)),
            }
        }
        Ok(())
    }

    /// Removes `path` when it exists (a part file that cannot be resumed, a stray ref).
    pub fn remove_if_present(&self, path: &Path) -> Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::cache("remove", path, e)),
            _ => Ok(()),
        }
    }
}

fn create_parent(path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::cache("create the directory", parent, e))
}

/// A temporary name next to `path`, unique to this process and moment.
fn sibling_tmp(path: &Path) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}-{nanos}.tmp", std::process::id()));
    path.with_file_name(name)
}
