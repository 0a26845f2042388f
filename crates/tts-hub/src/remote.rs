//! The Hub over HTTP, through hf-hub's blocking API: the repository listing of one revision and the
//! download of one file into the cache, with hf-hub's failures sorted into [`Error`]s.
//!
//! The requests (hf-hub 0.4.3's sync API, on ureq 2):
//! - `GET {endpoint}/api/models/{owner}/{name}/revision/{revision}?blobs=true`: the commit (`sha`)
//!   and each file's name, size, git blob id and, for LFS files, SHA-256;
//! - `GET {endpoint}/{owner}/{name}/resolve/{commit}/{file}` with `Range: bytes=0-0`, redirects not
//!   followed: `x-repo-commit`, `x-linked-etag` (LFS: the SHA-256) or `etag` (the git blob id) and,
//!   on a `302` to a CDN, a second `Range: bytes=0-0` request there for the size in `Content-Range`;
//! - `GET` of the same URL (redirects followed, the token kept on the same host only) with
//!   `Range: bytes={start}-`, appended to `blobs/{id}.part`, renamed to `blobs/{id}` when the body
//!   ended, then the snapshot symlink and `refs/{commit}`.
use crate::cache::RepoCache;
use crate::error::{Error, Result};
use crate::options::HubOptions;
use crate::progress::{DownloadProgress, HfProgress};
use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Repo, RepoType};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// A repository at one commit, as the Hub lists it.
#[derive(Debug)]
pub(crate) struct Listing {
    /// The commit the revision pointed to.
    pub commit: String,
    /// Each file by its path in the repository.
    pub files: HashMap<String, RemoteFile>,
}

/// A file of a [`Listing`]: what the Hub says about it (the fields are absent from listings
/// without `blobs=true`, and then not checked).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RemoteFile {
    /// Its size in bytes.
    pub size: Option<u64>,
    /// The git blob id (the blob's name in the cache for a file not in LFS).
    pub blob_id: Option<String>,
    /// The SHA-256 of an LFS file (its blob's name in the cache).
    pub sha256: Option<String>,
}

impl RemoteFile {
    /// The name of its blob in the cache: the LFS SHA-256, else the git blob id.
    pub fn cache_id(&self) -> Option<&str> {
        self.sha256.as_deref().or(self.blob_id.as_deref())
    }
}

/// Why the listing failed.
pub(crate) enum ListingFailure {
    /// The endpoint could not be reached (no network, DNS, connection refused): the cause.
    Unreachable(String),
    /// The Hub answered with an error.
    Answered(Error),
}

/// Why a download failed.
pub(crate) enum DownloadFailure {
    /// The Hub has no such file at that commit (HTTP 404).
    NotFound,
    /// Anything else.
    Failed(Error),
}

/// One repository on the Hub.
pub(crate) struct Hub<'a> {
    api: Api,
    opts: &'a HubOptions,
    repo: String,
}

impl<'a> Hub<'a> {
    pub fn new(opts: &'a HubOptions, repo: &str) -> Result<Hub<'a>> {
        let api = ApiBuilder::from_cache(hf_hub::Cache::new(opts.cache_dir.clone()))
            .with_endpoint(opts.endpoint.clone())
            .with_token(opts.token.clone())
            .with_progress(false)
            .with_retries(opts.retries)
            .with_user_agent("tts-hub", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| Error::Network { url: opts.endpoint.clone(), detail: format!("cannot set up the HTTP client: {e}") })?;
        Ok(Hub { api, opts, repo: repo.to_string() })
    }

    fn api_repo(&self, revision: &str) -> hf_hub::api::sync::ApiRepo {
        self.api.repo(Repo::with_revision(self.repo.clone(), RepoType::Model, revision.to_string()))
    }

    /// The files of the repository at `revision` and the commit it points to.
    pub fn listing(&self, revision: &str) -> std::result::Result<Listing, ListingFailure> {
        let request = self.api_repo(revision).info_request().query("blobs", "true");
        let url = request.url().to_string();
        let response = match request.call() {
            Ok(response) => response,
            Err(ureq::Error::Transport(t)) => return Err(ListingFailure::Unreachable(t.to_string())),
            Err(ureq::Error::Status(status, response)) => {
                return Err(ListingFailure::Answered(self.status_error(&url, status, &response, Some(revision))));
            }
        };
        let listing: ListingJson = serde_json::from_reader(response.into_reader()).map_err(|e| {
            ListingFailure::Answered(Error::Network { url: url.clone(), detail: format!("not a repository listing: {e}") })
        })?;
        if !crate::names::is_commit_id(&listing.sha) {
            return Err(ListingFailure::Answered(Error::Network {
                url,
                detail: format!("the listing's commit id {:?} is not a commit id", listing.sha),
            }));
        }
        let files = listing
            .siblings
            .into_iter()
            .map(|s| {
                // Both become file names in the cache: hex digits only.
                let sha256 = s.lfs.and_then(|l| l.sha256).filter(|h| h.len() == 64 && is_hex(h));
                let blob_id = s.blob_id.filter(|h| (h.len() == 40 || h.len() == 64) && is_hex(h));
                (s.rfilename, RemoteFile { size: s.size, blob_id, sha256 })
            })
            .collect();
        Ok(Listing { commit: listing.sha, files })
    }

    /// Downloads `file` at `commit` into `cache` (the snapshot path returned), checked against what
    /// the listing says (`expect`): a file of the wrong size or SHA-256 is removed and downloaded
    /// once more from scratch before that is an [`Error::Integrity`].
    pub fn download(
        &self,
        cache: &RepoCache,
        commit: &str,
        file: &str,
        expect: &RemoteFile,
        progress: &mut dyn DownloadProgress,
    ) -> std::result::Result<PathBuf, DownloadFailure> {
        let repo = self.api_repo(commit);
        let url = repo.url(file);
        let mut last_problem = String::new();
        for _attempt in 0..2 {
            // A part file as long as the whole file (or longer) cannot be resumed: hf-hub would ask
            // for the bytes after its end.
            if let (Some(id), Some(size)) = (expect.cache_id(), expect.size) {
                let part = cache.part_path(id);
                if std::fs::metadata(&part).is_ok_and(|m| m.len() >= size) {
                    cache.remove_if_present(&part).map_err(DownloadFailure::Failed)?;
                }
            }
            let mut hf_progress = HfProgress::new(progress, file);
            let outcome = catch_unwind(AssertUnwindSafe(|| repo.download_with_progress(file, &mut hf_progress)));
            let started = hf_progress.started();
            let snapshot_file = match outcome {
                Ok(Ok(path)) => path,
                Ok(Err(ApiError::InvalidResume)) => {
                    // hf-hub found a part file longer than the file: start over.
                    if let Some(id) = expect.cache_id() {
                        cache.remove_if_present(&cache.part_path(id)).map_err(DownloadFailure::Failed)?;
                    }
                    if started {
                        progress.abandon(file);
                    }
                    last_problem = "a partial download longer than the file".into();
                    continue;
                }
                Ok(Err(e)) => {
                    if started {
                        progress.abandon(file);
                    }
                    return Err(self.download_error(cache, &url, expect, e));
                }
                Err(panic) => {
                    if started {
                        progress.abandon(file);
                    }
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    return Err(DownloadFailure::Failed(Error::Network {
                        url,
                        detail: format!("hf-hub failed on the server's answer: {what}"),
                    }));
                }
            };
            match check(&snapshot_file, expect).map_err(DownloadFailure::Failed)? {
                None => {
                    progress.finish(file);
                    return Ok(snapshot_file);
                }
                Some(problem) => {
                    progress.abandon(file);
                    let blob = std::fs::canonicalize(&snapshot_file).ok();
                    cache.remove_entry(&snapshot_file, blob.as_deref(), expect.cache_id()).map_err(DownloadFailure::Failed)?;
                    last_problem = problem;
                }
            }
        }
        Err(DownloadFailure::Failed(Error::Integrity { file: file.to_string(), url, detail: last_problem }))
    }

    /// The error for an HTTP error `status` of `url` (`revision` set for the listing, whose 404 may
    /// name a missing revision).
    fn status_error(&self, url: &str, status: u16, response: &ureq::Response, revision: Option<&str>) -> Error {
        let code = response.header("x-error-code").unwrap_or("");
        let message = response.header("x-error-message").map(str::to_string);
        let token_sent = self.opts.token.is_some();
        match (status, code) {
            (_, "RevisionNotFound") => {
                Error::RevisionNotFound { repo: self.repo.clone(), revision: revision.unwrap_or_default().to_string() }
            }
            (_, "RepoNotFound") | (404, "") => {
                Error::RepoNotFound { repo: self.repo.clone(), endpoint: self.opts.endpoint.clone(), token_sent }
            }
            (401 | 403, _) => Error::Unauthorized { repo: self.repo.clone(), url: url.to_string(), status, token_sent, message },
            _ => Error::Network {
                url: url.to_string(),
                detail: format!("HTTP {status}{}", message.map(|m| format!(": {m}")).unwrap_or_default()),
            },
        }
    }

    fn download_error(&self, cache: &RepoCache, url: &str, expect: &RemoteFile, e: ApiError) -> DownloadFailure {
        let failed = DownloadFailure::Failed;
        match e {
            ApiError::TooManyRetries(inner) => match self.download_error(cache, url, expect, *inner) {
                DownloadFailure::Failed(Error::Network { url, detail }) => {
                    failed(Error::Network { url, detail: format!("{detail}, after {} resumptions", self.opts.retries) })
                }
                other => other,
            },
            ApiError::RequestError(e) => match *e {
                ureq::Error::Status(status, response) => {
                    let code = response.header("x-error-code").unwrap_or("");
                    if status == 404 && (code.is_empty() || code == "EntryNotFound") {
                        DownloadFailure::NotFound
                    } else {
                        failed(self.status_error(url, status, &response, None))
                    }
                }
                ureq::Error::Transport(t) => failed(Error::Network { url: url.to_string(), detail: t.to_string() }),
            },
            ApiError::IoError(io) if is_disk_error(&io) => {
                let path = expect.cache_id().map(|id| cache.part_path(id)).unwrap_or_else(|| cache.blob_path(""));
                failed(Error::cache("write", path, io))
            }
            ApiError::IoError(io) => {
                failed(Error::Network { url: url.to_string(), detail: format!("the transfer broke off: {io}") })
            }
            ApiError::LockAcquisition(path) => failed(Error::cache(
                "lock",
                path,
                std::io::Error::other("another process is downloading this file; try again when it is done"),
            )),
            other => failed(Error::Network {
                url: url.to_string(),
                detail: format!("unexpected answer ({other}); is HF_ENDPOINT a Hugging Face Hub?"),
            }),
        }
    }
}

/// Whether an I/O error from hf-hub's copy loop came from the disk rather than the connection (its
/// `std::io::copy` reports both alike).
fn is_disk_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        StorageFull
            | PermissionDenied
            | ReadOnlyFilesystem
            | QuotaExceeded
            | FileTooLarge
            | NotFound
            | AlreadyExists
            | IsADirectory
            | NotADirectory
            | InvalidFilename
    )
}

/// What differs between the file at `path` and the listing's size and SHA-256, `None` when nothing.
fn check(path: &Path, expect: &RemoteFile) -> Result<Option<String>> {
    let len = std::fs::metadata(path).map_err(|e| Error::cache("read", path, e))?.len();
    if let Some(size) = expect.size
        && len != size
    {
        return Ok(Some(format!("{len} bytes where the Hub lists {size}")));
    }
    if let Some(want) = &expect.sha256 {
        let got = sha256_file(path)?;
        if !got.eq_ignore_ascii_case(want) {
            return Ok(Some(format!("SHA-256 {got} where the Hub lists {want}")));
        }
    }
    Ok(None)
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The SHA-256 of a file, lower-case hex.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::cache("open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::cache("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// `GET /api/models/{repo}/revision/{revision}?blobs=true`, the parts read here.
#[derive(Deserialize)]
struct ListingJson {
    sha: String,
    siblings: Vec<SiblingJson>,
}

#[derive(Deserialize)]
struct SiblingJson {
    rfilename: String,
    size: Option<u64>,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    lfs: Option<LfsJson>,
}

#[derive(Deserialize)]
struct LfsJson {
    sha256: Option<String>,
}
