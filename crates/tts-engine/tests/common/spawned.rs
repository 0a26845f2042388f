//! `tts serve` as a child process (the real binary) and a minimal HTTP/1.1 client over
//! `std::net::TcpStream` that records when the first body byte came (tests/load.rs,
//! tests/deploy.rs).
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{scratch_dir, tts_command};

/// How long one request may take before the client gives up on it.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

/// `tts serve` as a child process on 127.0.0.1.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    stderr_path: PathBuf,
}

impl ServerProcess {
    /// Spawns `tts serve --backend cpu` over `model` with `args` and waits until `/ready` is 200.
    /// The port is found by binding 127.0.0.1:0 and releasing it; a start that loses the port to
    /// another process is tried again on a fresh one.
    pub fn spawn(model: &Path, args: &[&str], api_key: Option<&str>) -> ServerProcess {
        let dir = scratch_dir("load-serve");
        for attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let stderr_path = dir.join(format!("stderr-{attempt}.txt"));
            let mut cmd = tts_command(&dir);
            cmd.env_remove("TTS_API_KEY");
            cmd.args(["serve", "--backend", "cpu", "--port", &port.to_string(), "--model"]).arg(model).args(args);
            if let Some(k) = api_key {
                cmd.args(["--api-key", k]);
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr_path).unwrap())
                .spawn()
                .unwrap();
            let mut server = ServerProcess { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), stderr_path };
            let t = Instant::now();
            loop {
                if let Some(status) = server.child.try_wait().unwrap() {
                    let err = server.stderr();
                    assert!(err.contains("--host/--port"), "tts serve exited ({status}) before it was ready:\n{err}");
                    break; // the port was taken meanwhile: another one
                }
                if get(server.addr, "/ready").is_ok_and(|r| r.status == 200) {
                    return server;
                }
                assert!(t.elapsed() < Duration::from_secs(120), "tts serve not ready in 120 s:\n{}", server.stderr());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("tts serve could not bind a free port in 5 tries");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGTERM, then the exit code (the server drains first); `None` if it was killed or did
    /// not exit within 120 s.
    pub fn terminate(mut self) -> (Option<i32>, String) {
        let sent = std::process::Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
        assert!(sent.success(), "kill -TERM failed");
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(120) {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        (None, self.stderr())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // a failed assertion must not leave the server running
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // its scratch folder (HF cache and stderr)
        if let Some(dir) = self.stderr_path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// What came back for one request.
#[derive(Debug, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked (what was read of it, for a dropped stream).
    pub body: Vec<u8>,
    pub chunked: bool,
    /// From the request's first byte sent to the first body byte (None: no body byte).
    pub first_byte: Option<Duration>,
    /// From the request's first byte sent to the end of the reply.
    pub total: Duration,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// How a request ended without a whole reply.
#[derive(Debug)]
pub enum ClientError {
    /// The connection failed or closed before a status line arrived.
    NoStatus(String),
    /// A status came, but the body broke off (a cut chunked transfer, a short Content-Length).
    CutBody {
        status: u16,
        /// The body bytes that came (de-chunked).
        received: usize,
        why: String,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NoStatus(why) => write!(f, "no status: {why}"),
            ClientError::CutBody { status, received, why } => {
                write!(f, "status {status}, then the body broke off after {received} bytes: {why}")
            }
        }
    }
}

/// Sends one request (`connection: close`) and reads its reply; with `drop_after` = Some(n), reads
/// the head and at least `n` body bytes, then hangs up (the reply is what was read).
pub fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    drop_after: Option<usize>,
) -> Result<Reply, ClientError> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).map_err(|e| ClientError::NoStatus(format!("connect: {e}")))?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).map_err(|e| ClientError::NoStatus(format!("writing the head: {e}")))?;
    // a server may answer (413) before it reads a large body, and close: the write may then fail,
    // and the answer is still there to read
    let _ = s.write_all(body);

    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut head_end = None;
    let mut first_byte = None;
    let mut read_error = None;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if head_end.is_none() {
                    head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
                }
                if let Some(h) = head_end {
                    if first_byte.is_none() && raw.len() > h {
                        first_byte = Some(t0.elapsed());
                    }
                    if drop_after.is_some_and(|n| raw.len() >= h + n) {
                        break; // hang up: `s` is dropped below
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                read_error = Some(e.to_string());
                break;
            }
        }
    }
    let total = t0.elapsed();
    drop(s);
    let Some(h) = head_end else {
        return Err(ClientError::NoStatus(format!(
            "{} bytes, no head ({})",
            raw.len(),
            read_error.unwrap_or_else(|| "closed".into())
        )));
    };
    let text = std::str::from_utf8(&raw[..h - 4]).map_err(|e| ClientError::NoStatus(format!("head not UTF-8: {e}")))?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| ClientError::NoStatus(format!("bad status line in {text:?}")))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    let mut reply = Reply { status, headers, first_byte, total, ..Reply::default() };
    reply.chunked = reply.header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let rest = &raw[h..];
    if drop_after.is_some() {
        reply.body = if reply.chunked { dechunk(rest).unwrap_or_else(|(partial, _)| partial) } else { rest.to_vec() };
        return Ok(reply);
    }
    if reply.chunked {
        reply.body = dechunk(rest).map_err(|(partial, why)| ClientError::CutBody { status, received: partial.len(), why })?;
    } else {
        reply.body = rest.to_vec();
        if let Some(len) = reply.header("content-length").and_then(|v| v.parse::<usize>().ok())
            && len != reply.body.len()
        {
            let received = reply.body.len();
            return Err(ClientError::CutBody { status, received, why: format!("content-length {len}, {received} bytes came") });
        }
    }
    Ok(reply)
}

/// The body of a chunked transfer, or what was de-chunked and why it is incomplete.
pub fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, (Vec<u8>, String)> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return Err((out, "cut before a chunk size".into()));
        };
        let Some(size) = std::str::from_utf8(&raw[..eol]).ok().and_then(|s| usize::from_str_radix(s.trim(), 16).ok()) else {
            return Err((out, format!("bad chunk size {:?}", String::from_utf8_lossy(&raw[..eol]))));
        };
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size + 2 {
            out.extend_from_slice(&raw[..size.min(raw.len())]);
            return Err((out, "cut inside a chunk".into()));
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

pub fn get(addr: SocketAddr, path: &str) -> Result<Reply, ClientError> {
    exchange(addr, "GET", path, &[], b"", None)
}
