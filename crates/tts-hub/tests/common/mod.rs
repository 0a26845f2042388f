//! A fake Hugging Face Hub on loopback (std::net + threads, HTTP/1.1, one request per connection)
//! serving tiny random models in the Hub's URL layout, with the headers hf-hub reads, and faults on
//! demand (a connection dropped mid-file, corrupted bytes, 404s, a redirect without a location).
//!
//! Routes, as huggingface.co answers them:
//! - `GET /api/models/{owner}/{name}/revision/{rev}`: `{"sha", "siblings": [{"rfilename", "size",
//!   "blobId", "lfs": {"sha256", "size"}}]}`;
//! - `GET /{owner}/{name}/resolve/{rev}/{file}`: a `302` to `/cdn/{sha256}` with `X-Repo-Commit`,
//!   `X-Linked-Etag`, `X-Linked-Size` for LFS files; the bytes (`ETag` = blob id, `Range` honoured)
//!   for the others;
//! - `GET /cdn/{sha256}`: the bytes of an LFS file, `Range` honoured (`206`, `Content-Range`).
//!
//! Errors carry `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`, `GatedRepo`)
//! and `X-Error-Message` like the Hub's.
#![allow(dead_code)]

use rand::Rng;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The five official files of ResembleAI/chatterbox.
pub const REQUIRED: [&str; 5] = ["t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json", "conds.pt", "ve.safetensors"];
/// The optional file the engine reads when present.
pub const OPTIONAL: [&str; 1] = ["config.json"];

/// A file of a fake repository.
#[derive(Clone, Debug)]
pub struct FakeFile {
    pub name: String,
    pub bytes: Vec<u8>,
    /// Stored in LFS (the weights) or in git (small text files).
    pub lfs: bool,
}

impl FakeFile {
    /// `name` with `len` fresh random bytes (LFS unless it ends in `.json`).
    pub fn random(name: &str, len: usize) -> FakeFile {
        let mut bytes = vec![0u8; len];
        rand::rng().fill(&mut bytes[..]);
        FakeFile { name: name.to_string(), bytes, lfs: !name.ends_with(".json") }
    }

    pub fn sha256(&self) -> String {
        hex(&Sha256::digest(&self.bytes))
    }

    /// The git blob id stand-in (40 hex digits; the Hub's is the git SHA-1, which nothing here checks).
    pub fn blob_id(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!("blob {}\0", self.bytes.len()));
        h.update(&self.bytes);
        hex(&h.finalize())[..40].to_string()
    }

    /// The name of its blob in the cache.
    pub fn cache_id(&self) -> String {
        if self.lfs { self.sha256() } else { self.blob_id() }
    }
}

/// A fresh random fake model: the five required files (LFS weights of 40 to 300 kB, a small
/// tokenizer.json) and config.json.
pub fn random_model() -> Vec<FakeFile> {
    let mut rng = rand::rng();
    let mut files: Vec<FakeFile> = REQUIRED
        .iter()
        .map(|&name| {
            FakeFile::random(
                name,
                if name.ends_with(".json") { rng.random_range(500..5000) } else { rng.random_range(40_000..300_000) },
            )
        })
        .collect();
    files.push(FakeFile::random("config.json", rng.random_range(50..500)));
    files
}

pub fn random_commit() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill(&mut bytes);
    hex(&bytes)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fake repository: revisions (branch or tag → commit) and each commit's files.
#[derive(Clone, Debug, Default)]
pub struct FakeRepo {
    pub id: String,
    pub revisions: HashMap<String, String>,
    pub commits: HashMap<String, Vec<FakeFile>>,
    /// Private: requests need `Authorization: Bearer {token}`.
    pub token: Option<String>,
    /// Gated: listed to anyone, files refused with 403.
    pub gated: bool,
}

impl FakeRepo {
    /// `id` with `main` at a fresh commit holding `files`.
    pub fn new(id: &str, files: Vec<FakeFile>) -> FakeRepo {
        let commit = random_commit();
        FakeRepo {
            id: id.to_string(),
            revisions: HashMap::from([("main".to_string(), commit.clone())]),
            commits: HashMap::from([(commit, files)]),
            ..FakeRepo::default()
        }
    }

    pub fn main_commit(&self) -> String {
        self.revisions["main"].clone()
    }

    pub fn file(&self, commit: &str, name: &str) -> &FakeFile {
        self.commits[commit].iter().find(|f| f.name == name).unwrap()
    }
}

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

/// Faults, changed between calls.
#[derive(Debug, Default)]
pub struct Faults {
    /// File name → after how many body bytes the next transfer of it is cut (once each).
    pub drop_after: HashMap<String, usize>,
    /// File name → how many more transfers of it have their bytes flipped.
    pub corrupt: HashMap<String, usize>,
    /// Files answered 404 by `resolve` (listed or not).
    pub resolve_404: HashSet<String>,
    /// Files left out of the listing.
    pub unlisted: HashSet<String>,
    /// LFS redirects without a `Location` header.
    pub redirect_without_location: bool,
}

struct State {
    repos: Vec<FakeRepo>,
    faults: Faults,
    requests: Vec<Request>,
}

/// The running server; it stops when dropped.
pub struct FakeHub {
    addr: std::net::SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeHub {
    pub fn start(repos: Vec<FakeRepo>) -> FakeHub {
        // ureq 2 (hf-hub's client) sends every request to a proxy named in the environment and has no
        // NO_PROXY: loopback would go there too.
        let proxies = ["ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"];
        if let Some(var) = proxies.iter().find(|v| std::env::var_os(v).is_some()) {
            panic!("{var} is set: unset it for these tests (hf-hub's ureq 2 would send loopback requests to the proxy)");
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State { repos, faults: Faults::default(), requests: Vec::new() }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let state = state.clone();
                    std::thread::spawn(move || handle(stream, addr, &state));
                }
            })
        };
        FakeHub { addr, state, stop, thread: Some(thread) }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.state.lock().unwrap().faults)
    }

    /// Stops accepting: from now on, connections are refused.
    pub fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(self.addr);
            thread.join().unwrap();
        }
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Cut the connection after this many body bytes.
    cut_after: Option<usize>,
}

impl Answer {
    fn error(status: u16, code: &str, message: &str) -> Answer {
        let mut headers = vec![("X-Error-Message".to_string(), message.to_string())];
        if !code.is_empty() {
            headers.push(("X-Error-Code".to_string(), code.to_string()));
        }
        Answer { status, headers, body: message.as_bytes().to_vec(), cut_after: None }
    }
}

fn handle(stream: TcpStream, addr: std::net::SocketAddr, state: &Mutex<State>) {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    let request = Request {
        path: path.clone(),
        range: headers.get("range").cloned(),
        authorization: headers.get("authorization").cloned(),
    };
    let answer = {
        let mut state = state.lock().unwrap();
        state.requests.push(request.clone());
        route(&mut state, &request, &format!("http://{addr}"))
    };
    write_answer(stream, answer);
}

fn write_answer(mut stream: TcpStream, a: Answer) {
    let reason = match a.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Other",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n", a.status, a.body.len());
    for (k, v) in &a.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let body = match a.cut_after {
        Some(n) => &a.body[..n.min(a.body.len())],
        None => &a.body[..],
    };
    let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body)).and_then(|_| stream.flush());
    let _ = stream.shutdown(Shutdown::Both);
}

fn route(state: &mut State, req: &Request, base: &str) -> Answer {
    let parts: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "models", owner, name, "revision", rev @ ..] => {
            let (repo, commit) = match find(state, req, &format!("{owner}/{name}"), &rev.join("/").replace("%2F", "/")) {
                Ok(found) => found,
                Err(answer) => return answer,
            };
            let siblings: Vec<serde_json::Value> = repo.commits[&commit]
                .iter()
                .filter(|f| !state.faults.unlisted.contains(&f.name))
                .map(|f| {
                    let mut s = serde_json::json!({"rfilename": f.name, "size": f.bytes.len(), "blobId": f.blob_id()});
                    if f.lfs {
                        s["lfs"] = serde_json::json!({"sha256": f.sha256(), "size": f.bytes.len(), "pointerSize": 134});
                    }
                    s
                })
                .collect();
            let body = serde_json::json!({"id": repo.id, "sha": commit, "siblings": siblings}).to_string();
            Answer {
                status: 200,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: body.into_bytes(),
                cut_after: None,
            }
        }
        [owner, name, "resolve", rev, file @ ..] => {
            let rev = rev.replace("%2F", "/");
            let (repo, commit) = match find(state, req, &format!("{owner}/{name}"), &rev) {
                Ok(found) => found,
                Err(answer) => return answer,
            };
            if repo.gated {
                return Answer::error(403, "GatedRepo", &format!("Access to model {} is restricted.", repo.id));
            }
            let name = file.join("/");
            let entry = repo.commits[&commit].iter().find(|f| f.name == name).cloned();
            let Some(f) = entry.filter(|_| !state.faults.resolve_404.contains(&name)) else {
                let mut a = Answer::error(404, "EntryNotFound", &format!("{name} does not exist on \"{rev}\""));
                a.headers.push(("X-Repo-Commit".into(), commit));
                return a;
            };
            if f.lfs {
                let mut headers = vec![
                    ("X-Repo-Commit".to_string(), commit),
                    ("X-Linked-Etag".to_string(), format!("\"{}\"", f.sha256())),
                    ("X-Linked-Size".to_string(), f.bytes.len().to_string()),
                    ("ETag".to_string(), format!("\"{}\"", f.blob_id())),
                ];
                if !state.faults.redirect_without_location {
                    headers.push(("Location".to_string(), format!("{base}/cdn/{}", f.sha256())));
                }
                Answer { status: 302, headers, body: Vec::new(), cut_after: None }
            } else {
                let mut a = serve_bytes(&mut state.faults, &f, req.range.as_deref());
                a.headers.push(("X-Repo-Commit".into(), commit));
                a.headers.push(("ETag".into(), format!("\"{}\"", f.blob_id())));
                a
            }
        }
        ["cdn", sha] => {
            let f = state.repos.iter().flat_map(|r| r.commits.values().flatten()).find(|f| f.lfs && f.sha256() == *sha).cloned();
            match f {
                Some(f) => serve_bytes(&mut state.faults, &f, req.range.as_deref()),
                None => Answer::error(404, "", "no such object"),
            }
        }
        _ => Answer::error(404, "", "no such route"),
    }
}

/// The repository and commit a request names, or the Hub's error for it.
fn find(state: &State, req: &Request, repo_id: &str, rev: &str) -> Result<(FakeRepo, String), Answer> {
    let Some(repo) = state.repos.iter().find(|r| r.id == repo_id) else {
        return Err(Answer::error(404, "RepoNotFound", "Repository not found"));
    };
    if let Some(token) = &repo.token {
        match &req.authorization {
            None => return Err(Answer::error(401, "RepoNotFound", "Repository not found")),
            Some(auth) if *auth != format!("Bearer {token}") => {
                return Err(Answer::error(401, "", "Invalid credentials in Authorization header"));
            }
            Some(_) => {}
        }
    }
    let commit = if repo.commits.contains_key(rev) { Some(rev.to_string()) } else { repo.revisions.get(rev).cloned() };
    match commit {
        Some(commit) => Ok((repo.clone(), commit)),
        None => Err(Answer::error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"))),
    }
}

/// The bytes of `f` for a `Range` header (`bytes=a-` or `bytes=a-b`), with the faults applied.
fn serve_bytes(faults: &mut Faults, f: &FakeFile, range: Option<&str>) -> Answer {
    let total = f.bytes.len();
    let (start, end) = match range.and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.split_once('-')) {
        Some((a, b)) => {
            let start: usize = a.parse().unwrap_or(0);
            let end = if b.is_empty() { total.saturating_sub(1) } else { b.parse::<usize>().unwrap_or(total - 1).min(total - 1) };
            if start >= total {
                let mut a = Answer::error(416, "", "range not satisfiable");
                a.headers.push(("Content-Range".into(), format!("bytes */{total}")));
                return a;
            }
            (start, end)
        }
        None => (0, total - 1),
    };
    let mut body = f.bytes[start..=end].to_vec();
    let mut cut_after = None;
    // Faults apply to transfers of content, not to hf-hub's one-byte probe.
    if body.len() > 1 {
        cut_after = faults.drop_after.remove(&f.name);
        if let Some(n) = faults.corrupt.get_mut(&f.name).filter(|n| **n > 0) {
            *n -= 1;
            for b in body.iter_mut().step_by(997) {
                *b ^= 0x5a;
            }
        }
    }
    let mut headers = vec![("Accept-Ranges".to_string(), "bytes".to_string())];
    let status = if range.is_some() {
        headers.push(("Content-Range".into(), format!("bytes {start}-{end}/{total}")));
        206
    } else {
        200
    };
    Answer { status, headers, body, cut_after }
}

/// A fresh directory under the system's temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let suffix: u32 = rand::rng().random();
        let dir = std::env::temp_dir().join(format!("tts-hub-{tag}-{}-{n}-{suffix:08x}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every file under `dir`, relative, sorted (symlinks listed, not followed).
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
