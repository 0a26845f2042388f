//! `tts serve`: an OpenAI-compatible HTTP server over the engine API (docs/serving.md).
//!
//! - `POST /v1/audio/speech`: OpenAI's request shape plus Chatterbox's settings → WAV or raw PCM
//!   (s16 little-endian, 24 kHz mono), whole or streamed as it is produced (`stream_format:
//!   "audio"`: chunked transfer; a streamed WAV's header has unknown sizes, 0xFFFFFFFF; `"sse"`:
//!   OpenAI's server-sent events, `speech.audio.delta` with base64 audio, then `speech.audio.done`);
//! - `GET /health` (200 while the process serves), `GET /ready` (200 once the model is loaded,
//!   503 before), `GET /metrics` (Prometheus text, [`metrics`]);
//! - errors in OpenAI's shape `{"error": {"message", "type", "param", "code"}}`, the status mapped
//!   from the engine's [`ErrorKind`] ([`error_status`]);
//! - an optional bearer API key, compared in constant time (`/v1/*` only);
//! - the engine runs on one worker thread behind a bounded queue ([`scheduler`]).
pub mod flac;
pub mod metrics;
pub mod request;
pub mod scheduler;
pub mod voices;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body::Frame;
use tokio::sync::{mpsc, oneshot};

use crate::output::{AudioFormat, Container, SampleFormat, encode, encode_samples, wav_header};
use crate::stream::AudioChunk;
use crate::{Error, ErrorKind};
use metrics::{Metrics, kind_label};
use request::{ApiError, SpeechRequest, StreamFormat};
use scheduler::{Job, Reply, STREAM_BUFFER_CHUNKS, Scheduler};
use voices::{BUILTIN_VOICE_ID, VoiceInfo, VoiceStore};

/// The server's limits and its key.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The longest `input`, in characters (longer: 413).
    pub max_input_chars: usize,
    /// The largest request body, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// How long a request may wait for its audio (whole) or its first chunk (streamed): in the
    /// queue and in the engine (longer: 504). A streaming client that takes no chunk for this long
    /// is dropped.
    pub request_timeout: Duration,
    /// The bearer token `/v1/*` requires (`None`: open).
    pub api_key: Option<String>,
    /// Where uploaded voices are kept (`None`: `/v1/voices` takes no uploads; the built-in voice
    /// is still listed).
    pub voices_dir: Option<std::path::PathBuf>,
    /// The largest recording `POST /v1/voices` takes, in bytes (larger: 413).
    pub max_voice_bytes: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_input_chars: 4096,
            max_body_bytes: 1 << 20,
            request_timeout: Duration::from_secs(300),
            api_key: None,
            voices_dir: None,
            max_voice_bytes: 32 << 20,
        }
    }
}

/// What every handler shares.
pub struct AppState {
    pub scheduler: Arc<Scheduler>,
    pub metrics: Arc<Metrics>,
    pub options: ServeOptions,
    pub voices: Option<Arc<VoiceStore>>,
}

impl AppState {
    /// The state over a started scheduler; opens (creates) `options.voices_dir` and checks it can
    /// be written.
    pub fn new(scheduler: Arc<Scheduler>, metrics: Arc<Metrics>, options: ServeOptions) -> crate::Result<AppState> {
        let voices = options.voices_dir.as_deref().map(VoiceStore::open).transpose()?.map(Arc::new);
        Ok(AppState { scheduler, metrics, options, voices })
    }
}

/// The routes over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/audio/speech", post(speech))
        .route("/v1/voices", post(create_voice).get(list_voices))
        .route("/v1/voices/{id}", get(get_voice).delete(delete_voice))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `shutdown` resolves, then stops accepting, lets the
/// requests in flight finish, and waits for the scheduler's worker to finish its jobs.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let scheduler = state.scheduler.clone();
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await?;
    // blocking join of the worker, off the runtime's async threads
    let _ = tokio::task::spawn_blocking(move || scheduler.shutdown()).await;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// The HTTP status of an engine error: bad input 400; too long 413; a full queue 429; other
/// resource limits (out of memory) and model faults 503; internal faults 500.
pub fn error_status(e: &Error) -> StatusCode {
    match (e, e.kind()) {
        (Error::QueueFull { .. }, _) => StatusCode::TOO_MANY_REQUESTS,
        (Error::TooLong { .. }, _) => StatusCode::PAYLOAD_TOO_LARGE,
        (_, ErrorKind::BadInput) => StatusCode::BAD_REQUEST,
        (_, ErrorKind::ResourceLimit) | (_, ErrorKind::BadModel) => StatusCode::SERVICE_UNAVAILABLE,
        (_, ErrorKind::Internal) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Seconds a client is told to wait after a 429 or 503.
pub const RETRY_AFTER_S: u32 = 1;

impl ApiError {
    /// An engine error as an API error (its field as `param` where it names one).
    pub fn from_engine(e: &Error) -> ApiError {
        let status = error_status(e);
        let param = match e {
            Error::Setting { field, .. } => Some(field.to_string()),
            Error::Text { .. } | Error::TooLong { .. } => Some("input".into()),
            Error::Voice { .. } | Error::VoiceMismatch { .. } | Error::NoVoice => Some("voice".into()),
            _ => None,
        };
        let code = match e {
            Error::QueueFull { .. } => "queue_full",
            _ => kind_label(e.kind()),
        };
        ApiError { status, message: e.to_string(), param, code: code.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status.as_u16() {
            401 => "authentication_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        let body = serde_json::json!({
            "error": { "message": self.message, "type": kind, "param": self.param, "code": self.code }
        });
        let mut r = (self.status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
        if matches!(self.status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
        }
        r
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.response(200);
    (StatusCode::OK, "ok\n").into_response()
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.metrics.is_ready() {
        state.metrics.response(200);
        (StatusCode::OK, "ready\n").into_response()
    } else {
        state.metrics.response(503);
        (StatusCode::SERVICE_UNAVAILABLE, "loading the model\n").into_response()
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.response(200);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

async fn not_found(State(state): State<Arc<AppState>>, req: HttpRequest) -> Response {
    state.metrics.response(404);
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("no route {} {}", req.method(), req.uri().path()),
        param: None,
        code: "not_found".into(),
    }
    .into_response()
}

async fn method_not_allowed(State(state): State<Arc<AppState>>, req: HttpRequest) -> Response {
    state.metrics.response(405);
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("{} does not take {}", req.uri().path(), req.method()),
        param: None,
        code: "method_not_allowed".into(),
    }
    .into_response()
}

/// Constant-time comparison of two byte strings (the time depends on their lengths only).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = 0u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0 && a.len() == b.len()
}

fn check_key(headers: &HeaderMap, key: &str) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), key.as_bytes()) {
        return Ok(());
    }
    Err(ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: "a valid API key is required (Authorization: Bearer KEY)".into(),
        param: None,
        code: "invalid_api_key".into(),
    })
}

async fn speech(State(state): State<Arc<AppState>>, req: HttpRequest) -> Response {
    let arrived = Instant::now();
    let response = match speech_inner(&state, req, arrived).await {
        Ok(r) => r,
        Err(e) => {
            let label = match e.status.as_u16() {
                429 => "queue_full",
                504 => "timeout",
                401 => "unauthorized",
                _ => "",
            };
            if !label.is_empty() {
                state.metrics.error(label);
            }
            e.into_response()
        }
    };
    state.metrics.response(response.status().as_u16());
    response
}

/// Counts an engine error under its kind and turns it into an API error.
fn engine_error(state: &AppState, e: &Error) -> ApiError {
    if !matches!(e, Error::QueueFull { .. }) {
        state.metrics.error(kind_label(e.kind()));
    }
    ApiError::from_engine(e)
}

fn timeout_error(timeout: Duration) -> ApiError {
    ApiError {
        status: StatusCode::GATEWAY_TIMEOUT,
        message: format!("no audio within the request timeout ({} s)", timeout.as_secs_f64()),
        param: None,
        code: "timeout".into(),
    }
}

async fn speech_inner(state: &AppState, req: HttpRequest, arrived: Instant) -> Result<Response, ApiError> {
    let opts = &state.options;
    if let Some(key) = &opts.api_key {
        check_key(req.headers(), key)?;
    }
    let body = axum::body::to_bytes(req.into_body(), opts.max_body_bytes)
        .await
        .map_err(|_| ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("the request body is larger than {} bytes (or could not be read)", opts.max_body_bytes),
            param: None,
            code: "body_too_large".into(),
        })
        .inspect_err(|_| state.metrics.error(kind_label(ErrorKind::ResourceLimit)))?;
    let parsed = SpeechRequest::parse(&body, opts.max_input_chars).inspect_err(|e| {
        let kind = if e.status == StatusCode::PAYLOAD_TOO_LARGE { ErrorKind::ResourceLimit } else { ErrorKind::BadInput };
        state.metrics.error(kind_label(kind));
    })?;
    let mut parsed = parsed;
    if let Some(id) = parsed.voice_id.take() {
        let file = state.voices.as_ref().and_then(|v| v.file_of(&id));
        let Some(file) = file else {
            state.metrics.error(kind_label(ErrorKind::BadInput));
            return Err(voice_not_found(&id, "voice"));
        };
        parsed.request.voice = crate::synthesize::Voice::File(file);
    }
    let deadline = arrived + opts.request_timeout;
    let format = AudioFormat { container: parsed.container, sample: SampleFormat::S16 };
    if let Some(stream_format) = parsed.stream {
        let (tx, mut rx) = mpsc::channel(STREAM_BUFFER_CHUNKS);
        let job = Job { request: parsed.request, arrived, deadline, reply: Reply::Stream(tx) };
        state.scheduler.submit(job).map_err(|e| engine_error(state, &e))?;
        // the first chunk (or the error) before the headers: a request the engine refuses gets its
        // status code, not a 200 with a cut body
        let first = match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Err(_) => return Err(timeout_error(opts.request_timeout)),
            Ok(None) => return Err(engine_error(state, &Error::Internal("the stream ended before any audio".into()))),
            Ok(Some(Err(e))) => return Err(engine_error(state, &e)),
            Ok(Some(Ok(chunk))) => chunk,
        };
        let body = ChunkBody {
            first: Some(first),
            rx,
            header: (format.container == Container::Wav).then(|| wav_header(tts_s3gen::SAMPLE_RATE, format.sample, None)),
            done: false,
            sse: stream_format == StreamFormat::Sse,
            speech_tokens: 0,
            samples: 0,
        };
        if stream_format == StreamFormat::Sse {
            let mut r = Response::new(Body::new(body));
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert("x-sample-rate", HeaderValue::from(tts_s3gen::SAMPLE_RATE));
            return Ok(r);
        }
        return Ok(audio_response(format.container, Body::new(body), None));
    }
    let (tx, rx) = oneshot::channel();
    let job = Job { request: parsed.request, arrived, deadline, reply: Reply::Whole(tx) };
    state.scheduler.submit(job).map_err(|e| engine_error(state, &e))?;
    let audio = match tokio::time::timeout_at(deadline.into(), rx).await {
        Err(_) => return Err(timeout_error(opts.request_timeout)),
        Ok(Err(_)) => return Err(engine_error(state, &Error::Internal("the engine thread dropped the request".into()))),
        Ok(Ok(Err(e))) => return Err(engine_error(state, &e)),
        Ok(Ok(Ok(audio))) => audio,
    };
    let samples = if parsed.speed == 1.0 {
        audio.samples
    } else {
        let speed = parsed.speed;
        tokio::task::spawn_blocking(move || crate::stretch::time_stretch(&audio.samples, speed))
            .await
            .map_err(|e| engine_error(state, &Error::Internal(format!("time-stretching: {e}"))))?
            .map_err(|e| engine_error(state, &e))?
    };
    if parsed.flac {
        let bytes = tokio::task::spawn_blocking(move || flac::encode_flac(&samples, tts_s3gen::SAMPLE_RATE))
            .await
            .map_err(|e| engine_error(state, &Error::Internal(format!("FLAC encoding: {e}"))))?
            .map_err(|e| engine_error(state, &e))?;
        let len = bytes.len();
        let mut r = audio_response(format.container, Body::from(bytes), Some(len));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/flac"));
        return Ok(r);
    }
    let bytes = encode(&samples, tts_s3gen::SAMPLE_RATE, format, None).map_err(|e| engine_error(state, &e))?;
    let len = bytes.len();
    Ok(audio_response(format.container, Body::from(bytes), Some(len)))
}

fn audio_response(container: Container, body: Body, len: Option<usize>) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    let ct = match container {
        Container::Wav => "audio/wav",
        Container::Pcm => "audio/pcm",
    };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    h.insert("x-sample-rate", HeaderValue::from(tts_s3gen::SAMPLE_RATE));
    if let Some(n) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    r
}

/// A streamed response: the WAV header (if any), then each chunk's samples as s16 as the worker
/// sends them; or, for `stream_format: "sse"`, the same bytes as OpenAI's server-sent events: one
/// `speech.audio.delta` event per chunk (`audio`: the bytes in base64), then `speech.audio.done`
/// (`usage.output_tokens`: the speech tokens spoken; `audio_seconds`).
///
/// An error after the first chunk aborts an audio response (the client sees the chunked body cut
/// short); an SSE response sends an `error` event in OpenAI's error shape and ends. Dropping the
/// body (the client gone) closes the channel, and the worker stops.
struct ChunkBody {
    first: Option<AudioChunk>,
    rx: mpsc::Receiver<crate::Result<AudioChunk>>,
    header: Option<[u8; 44]>,
    done: bool,
    sse: bool,
    /// Speech tokens and samples sent so far (the SSE `done` event's usage).
    speech_tokens: usize,
    samples: usize,
}

/// One server-sent event: `data: JSON` and a blank line.
fn sse_event(json: serde_json::Value) -> Vec<u8> {
    format!("data: {json}\n\n").into_bytes()
}

impl ChunkBody {
    fn frame(&mut self, chunk: &AudioChunk) -> Bytes {
        let mut audio = Vec::with_capacity(44 + chunk.samples.len() * 2);
        if let Some(h) = self.header.take() {
            audio.extend_from_slice(&h);
        }
        encode_samples(&chunk.samples, SampleFormat::S16, &mut audio);
        self.speech_tokens += chunk.tokens.len();
        self.samples += chunk.samples.len();
        if !self.sse {
            return Bytes::from(audio);
        }
        use base64::Engine as _;
        let mut out = sse_event(serde_json::json!({
            "type": "speech.audio.delta",
            "audio": base64::engine::general_purpose::STANDARD.encode(&audio),
        }));
        if chunk.is_last {
            out.extend(sse_event(serde_json::json!({
                "type": "speech.audio.done",
                "usage": { "output_tokens": self.speech_tokens },
                "audio_seconds": self.samples as f64 / f64::from(tts_s3gen::SAMPLE_RATE),
            })));
        }
        Bytes::from(out)
    }

    fn next(&mut self, chunk: crate::Result<AudioChunk>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match chunk {
            Ok(chunk) => {
                self.done = chunk.is_last;
                Poll::Ready(Some(Ok(Frame::data(self.frame(&chunk)))))
            }
            Err(e) => {
                self.done = true;
                if !self.sse {
                    return Poll::Ready(Some(Err(e)));
                }
                let err = ApiError::from_engine(&e);
                let event = sse_event(serde_json::json!({
                    "type": "error",
                    "error": { "message": err.message, "type": "server_error", "param": err.param, "code": err.code },
                }));
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
            }
        }
    }
}

impl HttpBody for ChunkBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(first) = self.first.take() {
            return self.next(Ok(first));
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                // the worker ended the stream without its last chunk (shutting down, or a stalled
                // client dropped): cut the body short rather than pretend it is whole
                self.done = true;
                Poll::Ready(Some(Err(Error::Internal("the stream ended before its last chunk".into()))))
            }
            Poll::Ready(Some(item)) => self.next(item),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

fn voice_not_found(id: &str, param: &str) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!(
            "voice {id:?} not found: use \"{BUILTIN_VOICE_ID}\", an OpenAI voice name (the built-in voice) or an id from GET /v1/voices"
        ),
        param: Some(param.into()),
        code: "voice_not_found".into(),
    }
}

fn no_voice_dir() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "this server keeps no uploaded voices (start it with --voices-dir)".into(),
        param: None,
        code: "no_voice_directory".into(),
    }
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

/// Runs `f` and counts its response.
async fn counted(state: &AppState, f: impl Future<Output = Result<Response, ApiError>>) -> Response {
    let r = f.await.unwrap_or_else(|e| e.into_response());
    state.metrics.response(r.status().as_u16());
    r
}

/// `POST /v1/voices[?name=NAME]`: the body is a recording (WAV, FLAC or MP3; a saved voice or a
/// `conds.pt` is taken too); the voice is computed on the engine thread, saved in the voice
/// directory, and described (201; 200 when the same recording was uploaded before).
async fn create_voice(State(state): State<Arc<AppState>>, req: HttpRequest) -> Response {
    let s = state.clone();
    counted(&state, async move {
        let opts = &s.options;
        if let Some(key) = &opts.api_key {
            check_key(req.headers(), key)?;
        }
        let store = s.voices.clone().ok_or_else(no_voice_dir)?;
        let name = req
            .uri()
            .query()
            .and_then(|q| {
                q.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == "name").then(|| percent_decode(v))
                })
            })
            .transpose()
            .map_err(|msg| ApiError {
                status: StatusCode::BAD_REQUEST,
                message: msg,
                param: Some("name".into()),
                code: "invalid_value".into(),
            })?;
        if let Some(n) = &name {
            voices::check_voice_name(n).map_err(|e| ApiError::from_engine(&e))?;
        }
        let body = axum::body::to_bytes(req.into_body(), opts.max_voice_bytes).await.map_err(|_| ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("the recording is larger than {} bytes (or could not be read)", opts.max_voice_bytes),
            param: None,
            code: "body_too_large".into(),
        })?;
        if body.is_empty() {
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                message: "the body is empty: send the recording's bytes (WAV, FLAC or MP3)".into(),
                param: Some("file".into()),
                code: "missing_file".into(),
            });
        }
        let arrived = Instant::now();
        let deadline = arrived + opts.request_timeout;
        let (tx, rx) = oneshot::channel();
        let upload = crate::synthesize::Voice::Bytes { bytes: Arc::from(&body[..]), name: "the uploaded recording".into() };
        let job =
            Job { request: crate::synthesize::Request::new("").with_voice(upload), arrived, deadline, reply: Reply::Voice(tx) };
        s.scheduler.submit(job).map_err(|e| engine_error(&s, &e))?;
        let (voice, meta) = match tokio::time::timeout_at(deadline.into(), rx).await {
            Err(_) => return Err(timeout_error(opts.request_timeout)),
            Ok(Err(_)) => return Err(engine_error(&s, &Error::Internal("the engine thread dropped the upload".into()))),
            Ok(Ok(Err(e))) => {
                let mut err = engine_error(&s, &e);
                if err.param.as_deref() == Some("voice") {
                    err.param = Some("file".into());
                }
                return Err(err);
            }
            Ok(Ok(Ok(v))) => v,
        };
        let saved = tokio::task::spawn_blocking(move || store.save(&voice, &meta, name.as_deref()))
            .await
            .map_err(|e| engine_error(&s, &Error::Internal(format!("saving the voice: {e}"))))?;
        let (info, new) = saved.map_err(|e| engine_error(&s, &e))?;
        let status = if new { StatusCode::CREATED } else { StatusCode::OK };
        Ok(json_response(status, serde_json::to_value(&info).unwrap_or_default()))
    })
    .await
}

/// `GET /v1/voices`: the built-in voice, then the uploaded ones, oldest first.
async fn list_voices(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let s = state.clone();
    counted(&state, async move {
        if let Some(key) = &s.options.api_key {
            check_key(&headers, key)?;
        }
        let mut data = vec![VoiceInfo::builtin()];
        if let Some(store) = s.voices.clone() {
            let listed = tokio::task::spawn_blocking(move || store.list())
                .await
                .map_err(|e| engine_error(&s, &Error::Internal(format!("listing voices: {e}"))))?;
            data.extend(listed.map_err(|e| engine_error(&s, &e))?);
        }
        Ok(json_response(StatusCode::OK, serde_json::json!({ "object": "list", "data": data })))
    })
    .await
}

/// `GET /v1/voices/{id}`: one voice's description.
async fn get_voice(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let s = state.clone();
    counted(&state, async move {
        if let Some(key) = &s.options.api_key {
            check_key(&headers, key)?;
        }
        if id == BUILTIN_VOICE_ID {
            return Ok(json_response(StatusCode::OK, serde_json::to_value(VoiceInfo::builtin()).unwrap_or_default()));
        }
        let store = s.voices.clone().ok_or_else(|| voice_not_found(&id, "id"))?;
        let info = store.read(&id).map_err(|_| voice_not_found(&id, "id"))?;
        Ok(json_response(StatusCode::OK, serde_json::to_value(info).unwrap_or_default()))
    })
    .await
}

/// `DELETE /v1/voices/{id}`: removes an uploaded voice (the built-in one cannot be: 400).
async fn delete_voice(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let s = state.clone();
    counted(&state, async move {
        if let Some(key) = &s.options.api_key {
            check_key(&headers, key)?;
        }
        if id == BUILTIN_VOICE_ID {
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                message: "the built-in voice cannot be deleted".into(),
                param: Some("id".into()),
                code: "invalid_value".into(),
            });
        }
        let store = s.voices.clone().ok_or_else(|| voice_not_found(&id, "id"))?;
        let id2 = id.clone();
        let deleted = tokio::task::spawn_blocking(move || store.delete(&id2))
            .await
            .map_err(|e| engine_error(&s, &Error::Internal(format!("deleting a voice: {e}"))))?
            .map_err(|e| engine_error(&s, &e))?;
        if !deleted {
            return Err(voice_not_found(&id, "id"));
        }
        Ok(json_response(StatusCode::OK, serde_json::json!({ "id": id, "object": "voice.deleted", "deleted": true })))
    })
    .await
}

/// `%XX` escapes and `+` (a space) of a query value decoded; invalid escapes or UTF-8 are refused.
fn percent_decode(v: &str) -> Result<String, String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex =
                    b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(hex.ok_or_else(|| format!("name: a bad %-escape at byte {i}"))?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "name: not UTF-8 once decoded".to_string())
}
