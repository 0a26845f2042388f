//! resolve() against a fake Hub on loopback (tests/common): downloads into the standard cache, the
//! cache without requests, offline mode, dropped connections, corrupted bytes, 404s, 401/403 and
//! tokens, revisions. Every test has its own server, cache directory and fresh random files.
mod common;

use common::{FakeFile, FakeHub, FakeRepo, OPTIONAL, REQUIRED, TempDir, random_commit, random_model, tree};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tts_hub::{DownloadProgress, Error, HubOptions, ModelRef, NoProgress, Resolved, resolve};

const REPO: &str = "ResembleAI/chatterbox";

fn options(hub: &FakeHub, cache: &TempDir) -> HubOptions {
    HubOptions { endpoint: hub.endpoint(), retries: 0, ..HubOptions::new(cache.path()) }
}

fn at(repo: &str, revision: &str) -> ModelRef {
    ModelRef::Hub { repo: repo.to_string(), revision: revision.to_string() }
}

fn repo_dir(cache: &TempDir, repo: &str) -> PathBuf {
    cache.path().join(format!("models--{}", repo.replace('/', "--")))
}

fn fetch(model: &ModelRef, opts: &HubOptions) -> tts_hub::Result<Resolved> {
    resolve(model, &REQUIRED, &OPTIONAL, opts, &mut NoProgress)
}

/// Each of `names` is in `resolved`, byte for byte the fake repository's file at `commit`.
fn assert_same_bytes(resolved: &Resolved, repo: &FakeRepo, commit: &str, names: &[&str]) {
    for name in names {
        let path = resolved.path(name).unwrap_or_else(|| panic!("{name} not resolved"));
        let got = std::fs::read(path).unwrap();
        assert!(got == repo.file(commit, name).bytes, "{name}: {} bytes differ from the Hub's", got.len());
    }
}

/// Records the progress calls.
#[derive(Default)]
struct Recorder {
    started: Vec<(String, u64)>,
    finished: Vec<String>,
    abandoned: Vec<String>,
    bytes: HashMap<String, u64>,
    current: Option<String>,
}

impl DownloadProgress for Recorder {
    fn start(&mut self, file: &str, total: u64) {
        assert!(self.current.is_none(), "start {file} while {:?} runs", self.current);
        self.started.push((file.to_string(), total));
        self.current = Some(file.to_string());
    }
    fn advance(&mut self, bytes: u64) {
        *self.bytes.entry(self.current.clone().expect("advance outside a download")).or_default() += bytes;
    }
    fn finish(&mut self, file: &str) {
        assert_eq!(self.current.take().as_deref(), Some(file));
        self.finished.push(file.to_string());
    }
    fn abandon(&mut self, file: &str) {
        assert_eq!(self.current.take().as_deref(), Some(file));
        self.abandoned.push(file.to_string());
    }
}

#[test]
fn fresh_download_fills_the_standard_cache_and_then_needs_no_network() {
    let repo = FakeRepo::new(REPO, random_model());
    let commit = repo.main_commit();
    let mut hub = FakeHub::start(vec![repo.clone()]);
    let cache = TempDir::new("fresh");
    let opts = options(&hub, &cache);
    let mut progress = Recorder::default();

    let resolved = resolve(&ModelRef::default_hub(), &REQUIRED, &OPTIONAL, &opts, &mut progress).unwrap();
    let all: Vec<&str> = REQUIRED.iter().chain(&OPTIONAL).copied().collect();
    assert_same_bytes(&resolved, &repo, &commit, &all);
    let dir = repo_dir(&cache, REPO);
    assert_eq!(resolved.dir, dir.join("snapshots").join(&commit));
    assert_eq!(resolved.commit.as_deref(), Some(commit.as_str()));
    assert_eq!((resolved.repo.as_deref(), resolved.revision.as_deref()), (Some(REPO), Some("main")));
    assert_eq!(resolved.downloaded, all);
    assert_eq!(resolved.files.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), all);

    // The layout: refs/main, blobs named by SHA-256 (LFS) or blob id, relative snapshot symlinks;
    // no part file and no refs/{commit} left behind.
    assert_eq!(std::fs::read_to_string(dir.join("refs/main")).unwrap(), commit);
    for name in &all {
        let f = repo.file(&commit, name);
        let link = dir.join("snapshots").join(&commit).join(name);
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("../../blobs").join(f.cache_id()), "{name}");
        assert_eq!(std::fs::read(dir.join("blobs").join(f.cache_id())).unwrap(), f.bytes);
    }
    let files = tree(&dir);
    assert!(!files.iter().any(|f| f.ends_with(".part") || f.starts_with(&format!("refs/{commit}"))), "{files:?}");

    // Progress: each file started with its size, every byte counted once, finished.
    let sizes: Vec<(String, u64)> = all.iter().map(|n| (n.to_string(), repo.file(&commit, n).bytes.len() as u64)).collect();
    assert_eq!(progress.started, sizes);
    assert_eq!(progress.finished, all);
    assert!(progress.abandoned.is_empty());
    for (name, size) in &sizes {
        assert_eq!(progress.bytes[name], *size, "{name}");
    }

    // hf-hub's own cache lookup finds the files where it expects them.
    let hf_cache = hf_hub::Cache::new(cache.path().to_path_buf()).model(REPO.to_string());
    assert_eq!(hf_cache.get("t3_cfg.safetensors"), Some(link_of(&resolved, "t3_cfg.safetensors")));

    // Again: the same answer without a single request, then with the server gone.
    let served = hub.requests().len();
    let again = fetch(&ModelRef::default_hub(), &opts).unwrap();
    assert_eq!(again, Resolved { downloaded: Vec::new(), ..resolved.clone() });
    assert_eq!(hub.requests().len(), served, "the second resolve made requests");
    hub.shutdown();
    let third = fetch(&ModelRef::default_hub(), &opts).unwrap();
    assert_eq!(third, again);
}

fn link_of(resolved: &Resolved, name: &str) -> PathBuf {
    resolved.path(name).unwrap().to_path_buf()
}

#[test]
fn offline_with_the_files_cached_makes_no_request() {
    let repo = FakeRepo::new(REPO, random_model());
    let hub = FakeHub::start(vec![repo.clone()]);
    let cache = TempDir::new("offline-cached");
    let online = fetch(&ModelRef::default_hub(), &options(&hub, &cache)).unwrap();
    let served = hub.requests().len();

    let offline = HubOptions { offline: true, ..options(&hub, &cache) };
    let resolved = fetch(&ModelRef::default_hub(), &offline).unwrap();
    assert_eq!(resolved, Resolved { downloaded: Vec::new(), ..online });
    assert_same_bytes(&resolved, &repo, &repo.main_commit(), &REQUIRED);
    assert_eq!(hub.requests().len(), served);
}

#[test]
fn offline_without_the_files_lists_them_and_how_to_get_them() {
    let repo = FakeRepo::new(REPO, random_model());
    let hub = FakeHub::start(vec![repo.clone()]);
    let cache = TempDir::new("offline-empty");
    let offline = HubOptions { offline: true, ..options(&hub, &cache) };

    let err = fetch(&ModelRef::default_hub(), &offline).unwrap_err();
    let Error::Offline { missing, unreachable: None, .. } = &err else { panic!("{err:?}") };
    assert_eq!(missing, &REQUIRED.map(String::from));
    let message = err.to_string();
    for part in
        REQUIRED.iter().copied().chain(["HF_HUB_OFFLINE", "huggingface-cli download ResembleAI/chatterbox", "--model DIR"])
    {
        assert!(message.contains(part), "{part:?} not in: {message}");
    }
    assert!(hub.requests().is_empty());

    // With part of the snapshot in the cache, only what it lacks.
    fetch(&ModelRef::default_hub(), &options(&hub, &cache)).unwrap();
    let lost = ["conds.pt", "ve.safetensors"];
    for name in lost {
        std::fs::remove_file(repo_dir(&cache, REPO).join("snapshots").join(repo.main_commit()).join(name)).unwrap();
    }
    let served = hub.requests().len();
    let err = fetch(&ModelRef::default_hub(), &offline).unwrap_err();
    let Error::Offline { missing, .. } = &err else { panic!("{err:?}") };
    assert_eq!(missing, &lost.map(String::from));
    assert_eq!(hub.requests().len(), served);

    // Online again, the two come back (linked to the blobs still in the cache, no download).
    let resolved = fetch(&ModelRef::default_hub(), &options(&hub, &cache)).unwrap();
    assert!(resolved.downloaded.is_empty(), "{:?}", resolved.downloaded);
    assert_same_bytes(&resolved, &repo, &repo.main_commit(), &REQUIRED);
}

#[test]
fn an_unreachable_hub_without_the_files_is_the_offline_error() {
    let mut hub = FakeHub::start(vec![]);
    let opts = options(&hub, &TempDir::new("unreachable"));
    hub.shutdown();
    let err = fetch(&ModelRef::default_hub(), &opts).unwrap_err();
    let Error::Offline { missing, unreachable: Some(cause), .. } = &err else { panic!("{err:?}") };
    assert_eq!(missing.len(), REQUIRED.len());
    assert!(cause.contains("127.0.0.1"), "{cause}");
    assert!(err.to_string().contains("cannot be reached"), "{err}");
}

/// The bytes received before a connection drops stay in `blobs/{sha}.part` (not visible as a blob
/// or snapshot file); the next call resumes from there.
#[test]
fn a_dropped_connection_leaves_nothing_visible_and_the_retry_resumes() {
    let repo = FakeRepo::new(REPO, random_model());
    let commit = repo.main_commit();
    let hub = FakeHub::start(vec![repo.clone()]);
    let cache = TempDir::new("dropped");
    let opts = options(&hub, &cache);
    let victim = repo.file(&commit, "s3gen.safetensors").clone();
    let cut = victim.bytes.len() / 3;
    hub.faults(|f| {
        f.drop_after.insert(victim.name.clone(), cut);
    });
    let mut progress = Recorder::default();

    let err = resolve(&ModelRef::default_hub(), &REQUIRED, &OPTIONAL, &opts, &mut progress).unwrap_err();
    let Error::Network { url, .. } = &err else { panic!("{err:?}") };
    assert!(url.ends_with(&format!("/resolve/{commit}/s3gen.safetensors")), "{url}");
    assert_eq!(progress.abandoned, ["s3gen.safetensors"]);
    let dir = repo_dir(&cache, REPO);
    assert!(!dir.join("snapshots").join(&commit).join("s3gen.safetensors").exists());
    assert!(!dir.join("blobs").join(victim.sha256()).exists());
    let part = dir.join("blobs").join(format!("{}.part", victim.sha256()));
    assert_eq!(std::fs::metadata(&part).unwrap().len(), cut as u64);
    // Files before it are complete; the ones after were not started.
    assert!(dir.join("snapshots").join(&commit).join("t3_cfg.safetensors").is_file());
    assert!(!dir.join("snapshots").join(&commit).join("ve.safetensors").exists());

    let resolved = fetch(&ModelRef::default_hub(), &opts).unwrap();
    assert_same_bytes(&resolved, &repo, &commit, &REQUIRED);
    assert!(!part.exists());
    let resumed = format!("bytes={cut}-");
    assert!(
        hub.requests().iter().any(|r| r.path.ends_with(&victim.sha256()) && r.range.as_deref() == Some(&resumed)),
        "no request resumed at {cut}"
    );
    assert_eq!(resolved.downloaded, ["s3gen.safetensors", "tokenizer.json", "conds.pt", "ve.safetensors", "config.json"]);
}

#[test]
fn a_dropped_connection_is_resumed_within_the_call_when_retries_allow() {
    let repo = FakeRepo::new(REPO, random_model());
    let commit = repo.main_commit();
    let hub = FakeHub::start(vec![repo.clone()]);
    let cache = TempDir::new("resumed");
    let opts = HubOptions { retries: 2, ..options(&hub, &cache) };
    let victim = repo.file(&commit, "ve.safetensors").clone();
    let cut = victim.bytes.len() / 2 + 7;
    hub.faults(|f| {
        f.drop_after.insert(victim.name.clone(), cut);
    });
    let mut progress = Recorder::default();
    let resolved = resolve(&ModelRef::default_hub(), &REQUIRED, &OPTIONAL, &opts, &mut progress).unwrap();
    assert_same_bytes(&resolved, &repo, &commit, &REQUIRED);
    let resumed = format!("bytes={cut}-");
    assert!(hub.requests().iter().any(|r| r.range.as_deref() == Some(&resumed)));
    assert_eq!(progress.bytes["ve.safetensors"], victim.bytes.len() as u64, "bytes counted twice or lost");
    assert!(progress.abandoned.is_empty());
}

#[test]
fn corrupted_bytes_are_removed_and_fetched_again_then_refused() {
    let repo = FakeRepo::new(REPO, random_model());
    let commit = repo.main_commit();
    let hub = FakeHub::start(vec![repo.clone()]);
    let cache = TempDir::new("corrupt");
    let opts = options(&hub, &cache);
    let victim = repo.file(&commit, "conds.pt").clone();

    // Once: the check catches it, the second download is right.
    hub.faults(|f| {
        f.corrupt.insert(victim.name.clone(), 1);
    });
    let resolved = fetch(&ModelRef::default_hub(), &opts).unwrap();
    assert_same_bytes(&resolved, &repo, &commit, &REQUIRED);
    let transfers = |hub: &FakeHub| {
        hub.requests().iter().filter(|r| r.path.ends_with(&victim.sha256()) && r.range.as_deref() == Some("bytes=0-")).count()
    };
    assert_eq!(transfers(&hub), 2);

    // Every time: an Integrity error, and nothing of it in the cache.
    let cache = TempDir::new("corrupt-always");
    let opts = options(&hub, &cache);
    hub.faults(|f| {
        f.corrupt.insert(victim.name.clone(), usize::MAX);
    });
    let err = fetch(&ModelRef::default_hub(), &opts).unwrap_err();
    let Error::Integrity { file, detail, .. } = &err else { panic!("{err:?}") };
    assert_eq!(file, "conds.pt");
    assert!(detail.contains(&victim.sha256()), "{detail}");
    let dir = repo_dir(&cache, REPO);
    let left: Vec<String> = tree(&dir).into_iter().filter(|f| f.contains(&victim.sha256()) || f.ends_with("conds.pt")).collect();
    assert!(left.iter().all(|f| f.ends_with(".lock")), "{left:?}");
}

#[test]
fn a_required_file_the_repository_lacks_is_named() {
    for (unlisted, not_served) in [(true, true), (false, true)] {
        let repo = FakeRepo::new(REPO, random_model());
        let hub = FakeHub::start(vec![repo.clone()]);
        let cache = TempDir::new("required-404");
        hub.faults(|f| {
            if unlisted {
                f.unlisted.insert("tokenizer.json".into());
            }
            if not_served {
                f.resolve_404.insert("tokenizer.json".into());
            }
        });
        let err = fetch(&ModelRef::default_hub(), &options(&hub, &cache)).unwrap_err();
        let Error::FilesNotFound { files, commit, .. } = &err else { panic!("{err:?}") };
        assert_eq!(files, &["tokenizer.json"]);
        assert_eq!(commit.as_deref(), Some(repo.main_commit().as_str()));
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
    }
}

#[test]
fn an_optional_file_the_repository_lacks_is_absent() {
    for unlisted in [true, false] {
        let mut files = random_model();
        let config = files.pop().unwrap();
        if !unlisted {
            files.push(config); // listed, but answered 404
        }
        let repo = FakeRepo::new(REPO, files);
        let commit = repo.main_commit();
        let hub = FakeHub::start(vec![repo.clone()]);
        let cache = TempDir::new("optional-404");
        hub.faults(|f| {
            f.resolve_404.insert("config.json".into());
        });
        let opts = options(&hub, &cache);
        let resolved = fetch(&ModelRef::default_hub(), &opts).unwrap();
        assert_eq!(resolved.path("config.json"), None);
        assert_eq!(resolved.files.len(), REQUIRED.len());
        assert_same_bytes(&resolved, &repo, &commit, &REQUIRED);
        assert!(repo_dir(&cache, REPO).join(".no_exist").join(&commit).join("config.json").is_file());
        // Known absent: the next call asks nothing.
        let served = hub.requests().len();
        assert_eq!(fetch(&ModelRef::default_hub(), &opts).unwrap().files, resolved.files);
        assert_eq!(hub.requests().len(), served);
    }
}

#[test]
fn a_repository_or_revision_the_hub_does_not_have() {
    let hub = FakeHub::start(vec![FakeRepo::new(REPO, random_model())]);
    let cache = TempDir::new("repo-404");
    let err = fetch(&at("nobody/nothing", "main"), &options(&hub, &cache)).unwrap_err();
    let Error::RepoNotFound { repo, .. } = &err else { panic!("{err:?}") };
    assert_eq!(repo, "nobody/nothing");
    assert!(err.to_string().contains("nobody/nothing") && err.to_string().contains("HF_TOKEN"), "{err}");

    let err = fetch(&at(REPO, "no-such-branch"), &options(&hub, &cache)).unwrap_err();
    let Error::RevisionNotFound { revision, .. } = &err else { panic!("{err:?}") };
    assert_eq!(revision, "no-such-branch");
    assert!(tree(cache.path()).is_empty(), "{:?}", tree(cache.path()));
}

#[test]
fn private_repository_needs_the_token_and_gets_it_as_a_bearer_header() {
    let token = format!("hf_{}", random_commit());
    let repo = FakeRepo { token: Some(token.clone()), ..FakeRepo::new("someone/private-voice", random_model()) };
    let hub = FakeHub::start(vec![repo.clone()]);
    let cache = TempDir::new("token");
    let model = at(&repo.id, "main");

    // No token: the Hub says "not found" (401, RepoNotFound); the message says to set HF_TOKEN.
    let err = fetch(&model, &options(&hub, &cache)).unwrap_err();
    assert!(matches!(&err, Error::RepoNotFound { token_sent: false, .. }), "{err:?}");
    assert!(err.to_string().contains("set HF_TOKEN"), "{err}");

    // A wrong token: 401, and the message says to check it.
    let wrong = HubOptions { token: Some("hf_wrong".into()), ..options(&hub, &cache) };
    let err = fetch(&model, &wrong).unwrap_err();
    let Error::Unauthorized { status: 401, token_sent: true, message: Some(message), .. } = &err else { panic!("{err:?}") };
    assert!(message.contains("Invalid credentials"));
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");

    // The right token, sent on every request (the CDN redirect is on the same host).
    let before = hub.requests().len();
    let right = HubOptions { token: Some(token.clone()), ..options(&hub, &cache) };
    let resolved = fetch(&model, &right).unwrap();
    assert_same_bytes(&resolved, &repo, &repo.main_commit(), &REQUIRED);
    let requests = hub.requests();
    assert!(requests.len() > before);
    let bearer = format!("Bearer {token}");
    assert!(requests[before..].iter().all(|r| r.authorization.as_deref() == Some(bearer.as_str())), "{requests:?}");
}

#[test]
fn a_gated_repository_refuses_the_files_with_a_token_hint() {
    let repo = FakeRepo { gated: true, ..FakeRepo::new("org/gated", random_model()) };
    let hub = FakeHub::start(vec![repo.clone()]);
    let cache = TempDir::new("gated");
    let err = fetch(&at(&repo.id, "main"), &options(&hub, &cache)).unwrap_err();
    let Error::Unauthorized { status: 403, url, .. } = &err else { panic!("{err:?}") };
    assert!(url.contains("/org/gated/resolve/"), "{url}");
    assert!(err.to_string().contains("HF_TOKEN") && err.to_string().contains("restricted"), "{err}");
}

#[test]
fn revisions_other_than_main_and_commit_ids() {
    let mut repo = FakeRepo::new(REPO, random_model());
    let main = repo.main_commit();
    // v2: new weights, the same tokenizer.json, no config.json.
    let v2 = random_commit();
    let mut v2_files: Vec<FakeFile> = random_model().into_iter().filter(|f| f.name != "config.json").collect();
    let tokenizer = repo.file(&main, "tokenizer.json").clone();
    v2_files.retain(|f| f.name != "tokenizer.json");
    v2_files.push(tokenizer.clone());
    repo.revisions.insert("v2".into(), v2.clone());
    repo.commits.insert(v2.clone(), v2_files);
    let hub = FakeHub::start(vec![repo.clone()]);
    let cache = TempDir::new("revisions");
    let opts = options(&hub, &cache);
    let dir = repo_dir(&cache, REPO);

    let resolved = fetch(&at(REPO, "v2"), &opts).unwrap();
    assert_eq!(resolved.commit.as_deref(), Some(v2.as_str()));
    assert_eq!(resolved.dir, dir.join("snapshots").join(&v2));
    assert_same_bytes(&resolved, &repo, &v2, &REQUIRED);
    assert_eq!(resolved.path("config.json"), None);
    assert_eq!(std::fs::read_to_string(dir.join("refs/v2")).unwrap(), v2);
    assert!(!dir.join("refs/main").exists());
    assert!(requests_for(&hub, "/revision/v2") == 1);

    // main: its own commit; tokenizer.json's blob is shared, linked without a download.
    let resolved = fetch(&at(REPO, "main"), &opts).unwrap();
    assert_eq!(resolved.commit.as_deref(), Some(main.as_str()));
    assert_same_bytes(&resolved, &repo, &main, &["t3_cfg.safetensors", "tokenizer.json", "config.json"]);
    assert!(!resolved.downloaded.contains(&"tokenizer.json".to_string()));
    assert_eq!(requests_for(&hub, "/tokenizer.json"), 2, "v2's download: a probe and the transfer; none for main");

    // A commit id as the revision: its snapshot, no ref written for it, found offline afterwards.
    let cache2 = TempDir::new("commit-id");
    let opts2 = options(&hub, &cache2);
    let resolved = fetch(&at(REPO, &v2), &opts2).unwrap();
    assert_eq!(resolved.commit.as_deref(), Some(v2.as_str()));
    assert_same_bytes(&resolved, &repo, &v2, &REQUIRED);
    assert!(!repo_dir(&cache2, REPO).join("refs").exists(), "{:?}", tree(&repo_dir(&cache2, REPO)));
    let offline = HubOptions { offline: true, ..opts2 };
    assert_eq!(fetch(&at(REPO, &v2), &offline).unwrap().files, resolved.files);
}

fn requests_for(hub: &FakeHub, suffix: &str) -> usize {
    hub.requests().iter().filter(|r| r.path.ends_with(suffix)).count()
}

#[test]
fn a_broken_redirect_is_an_error_not_a_panic() {
    let repo = FakeRepo::new(REPO, random_model());
    let hub = FakeHub::start(vec![repo]);
    hub.faults(|f| f.redirect_without_location = true);
    let cache = TempDir::new("no-location");
    let err = fetch(&ModelRef::default_hub(), &options(&hub, &cache)).unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err:?}");
}

#[test]
fn bad_file_names_are_refused_before_any_request() {
    let hub = FakeHub::start(vec![]);
    let cache = TempDir::new("bad-names");
    for bad in ["../t3_cfg.safetensors", "/etc/passwd", "", "a\\b"] {
        let err = resolve(&ModelRef::default_hub(), &[bad], &[], &options(&hub, &cache), &mut NoProgress).unwrap_err();
        assert!(matches!(&err, Error::BadFileName { name, .. } if name == bad), "{err:?}");
    }
    assert!(hub.requests().is_empty());
}

#[test]
fn a_model_directory_is_checked_for_the_required_files() {
    let dir = TempDir::new("model-dir");
    let model = ModelRef::Dir(dir.path().to_path_buf());
    let opts = HubOptions::new(dir.path().join("unused-cache"));
    let files = random_model();
    for f in &files[..3] {
        std::fs::write(dir.path().join(&f.name), &f.bytes).unwrap();
    }
    let err = resolve(&model, &REQUIRED, &OPTIONAL, &opts, &mut NoProgress).unwrap_err();
    let Error::DirMissingFiles { missing, .. } = &err else { panic!("{err:?}") };
    assert_eq!(missing, &["conds.pt", "ve.safetensors"]);
    assert!(err.to_string().contains("conds.pt and ve.safetensors"), "{err}");

    for f in &files[3..5] {
        std::fs::write(dir.path().join(&f.name), &f.bytes).unwrap();
    }
    let resolved = resolve(&model, &REQUIRED, &OPTIONAL, &opts, &mut NoProgress).unwrap();
    assert_eq!(resolved.files.len(), 5);
    assert_eq!(resolved.path("config.json"), None);
    assert_eq!((resolved.repo, resolved.commit), (None, None));
    std::fs::write(dir.path().join("config.json"), &files[5].bytes).unwrap();
    let resolved = resolve(&model, &REQUIRED, &OPTIONAL, &opts, &mut NoProgress).unwrap();
    assert_eq!(std::fs::read(resolved.path("config.json").unwrap()).unwrap(), files[5].bytes);
    assert!(!dir.path().join("unused-cache").exists());
}
