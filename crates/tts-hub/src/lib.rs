//! Models by name: `--model X` is a local directory or a Hugging Face Hub repository id
//! (`ResembleAI/chatterbox` by default, at a `--revision`, `main` by default), and [`resolve()`] turns it
//! into a directory holding the model's files.
//!
//! # The cache
//!
//! Hub files live in the standard Hugging Face cache, shared with `huggingface_hub` (Python),
//! `huggingface-cli` and hf-hub (Rust): what one downloaded, the others find.
//!
//! ```text
//! {cache_dir}/models--{owner}--{name}/
//!     blobs/{id}                     file contents, named by LFS SHA-256 or git blob id
//!     blobs/{id}.part                a download in progress (resumed by the next attempt, never read)
//!     refs/{revision}                the commit a branch or tag pointed to when it was resolved
//!     snapshots/{commit}/{file}      a relative symlink to ../../blobs/{id}, made once the blob is complete
//!     .no_exist/{commit}/{file}      an empty marker: the repository has no such file at that commit
//! ```
//!
//! # The rules
//!
//! - The cache comes first: when the snapshot that `refs/{revision}` (or a commit id) points to holds
//!   every required file, no request is made. A branch is therefore not checked for newer commits
//!   once it is in the cache; `huggingface-cli download` (or removing `refs/{revision}`) refreshes it.
//! - Otherwise the Hub lists the revision (`api/models/{repo}/revision/{revision}?blobs=true`): its
//!   commit, and each file's size and SHA-256. Every file then comes from that one commit; a file
//!   whose blob is already cached is linked, others are downloaded by hf-hub into `blobs/{id}.part`,
//!   renamed to `blobs/{id}` when complete, then linked from the snapshot. tts-hub checks each
//!   download against the listing (size, and SHA-256 for LFS files) and removes and fetches again a
//!   file that differs, so a snapshot entry is only ever a complete, checked file (the moment between
//!   hf-hub's rename and that check aside).
//! - A broken transfer is resumed from its part file ([`HubOptions::retries`] times in the same
//!   call, then by the next call).
//! - Optional files (`config.json`) the repository lacks are absent, not an error.
//! - Offline (`HF_HUB_OFFLINE=1`) or with the Hub unreachable, an incomplete snapshot is one
//!   [`Error::Offline`] that lists the missing files and how to get them.
//! - Settings as `huggingface_hub` reads them ([`HubOptions::from_env`]): `HF_HUB_CACHE`, `HF_HOME`,
//!   `HF_ENDPOINT`, `HF_TOKEN` and the token file `$HF_HOME/token`, `HF_HUB_OFFLINE`.
//!
//! Modules: [`model_ref`] (what `--model` names), [`options`] (the settings), [`resolve`](mod@resolve)
//! (the rules above), [`progress`] (download progress for the caller to show), [`error`]; inside,
//! `cache` (the layout), `remote` (the Hub through hf-hub) and `names` (what ids, revisions and file
//! names may be).
mod cache;
pub mod error;
pub mod model_ref;
mod names;
pub mod options;
pub mod progress;
mod remote;
pub mod resolve;

pub use error::{Error, Result};
pub use model_ref::{DEFAULT_REPO, DEFAULT_REVISION, ModelRef};
pub use options::{DEFAULT_ENDPOINT, DEFAULT_RETRIES, HubOptions};
pub use progress::{DownloadProgress, NoProgress};
pub use resolve::{Resolved, resolve};
