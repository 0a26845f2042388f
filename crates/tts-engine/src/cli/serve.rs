//! `tts serve`: the OpenAI-compatible HTTP server (docs/serving.md) over one engine.
use std::sync::Arc;
use std::time::Duration;

use tts_engine::bench::ModelSource;
use tts_engine::serve::metrics::Metrics;
use tts_engine::serve::scheduler::{Scheduler, SchedulerOptions};
use tts_engine::serve::{AppState, ServeOptions, serve, shutdown_signal};
use tts_engine::speak::Engine;
use tts_engine::{Error, Result};

use super::ModelArgs;
use super::progress::Bars;

#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// auto (Cuda if usable, else Cpu), cpu, cuda, cuda:N, or emu.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// The address to listen on (loopback by default: give 0.0.0.0 to serve other machines).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// The bearer token `/v1/*` requires (`Authorization: Bearer KEY`) [default: $TTS_API_KEY,
    /// else none].
    #[arg(long)]
    pub api_key: Option<String>,
    /// Requests waiting at most; more are answered 429 with Retry-After.
    #[arg(long, default_value_t = SchedulerOptions::default().max_queue)]
    pub max_queue: usize,
    /// Requests synthesised in one batch at most (and T3 slots).
    #[arg(long, default_value_t = SchedulerOptions::default().max_batch)]
    pub max_batch: usize,
    /// The longest input text, in characters (longer: 413).
    #[arg(long, default_value_t = ServeOptions::default().max_input_chars)]
    pub max_input_chars: usize,
    /// Seconds a request may wait for its audio (streamed: its first chunk), queue included (longer: 504).
    #[arg(long, default_value_t = ServeOptions::default().request_timeout.as_secs_f64())]
    pub request_timeout_s: f64,
    /// Where voices uploaded through POST /v1/voices are kept (created if missing) [default:
    /// $TTS_VOICES_DIR, else $XDG_DATA_HOME/tts/voices, else ~/.local/share/tts/voices].
    #[arg(long)]
    pub voices_dir: Option<std::path::PathBuf>,
}

/// `--voices-dir`'s default: `$TTS_VOICES_DIR`, else `$XDG_DATA_HOME/tts/voices`, else
/// `$HOME/.local/share/tts/voices`, else `./voices`.
fn default_voices_dir() -> std::path::PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    env("TTS_VOICES_DIR")
        .or_else(|| env("XDG_DATA_HOME").map(|d| d.join("tts/voices")))
        .or_else(|| env("HOME").map(|h| h.join(".local/share/tts/voices")))
        .unwrap_or_else(|| "voices".into())
}

pub fn run(args: ServeArgs) -> Result<bool> {
    for (field, v) in
        [("--max-queue", args.max_queue), ("--max-batch", args.max_batch), ("--max-input-chars", args.max_input_chars)]
    {
        if v == 0 {
            return Err(Error::Setting { field, value: "0".into(), expected: "at least 1".into() });
        }
    }
    if !(args.request_timeout_s.is_finite() && args.request_timeout_s > 0.0) {
        return Err(Error::Setting {
            field: "--request-timeout-s",
            value: args.request_timeout_s.to_string(),
            expected: "a positive number of seconds".into(),
        });
    }
    let api_key = args.api_key.clone().or_else(|| std::env::var("TTS_API_KEY").ok().filter(|k| !k.is_empty()));
    if api_key.as_deref() == Some("") {
        return Err(Error::Setting { field: "--api-key", value: String::new(), expected: "a non-empty key".into() });
    }
    // the device is opened here, so that a bad --backend fails before the server starts
    let (dev, note) = tts_engine::select_device(&args.backend)?;
    let bars = Bars::new(false);
    let source = args.model.resolve(&bars)?;
    let say = super::Say { quiet: false, to_stderr: true };
    super::announce_device(&dev, note, &source, &say);
    let sched = SchedulerOptions { max_queue: args.max_queue, max_batch: args.max_batch };
    let options = ServeOptions {
        max_input_chars: args.max_input_chars,
        request_timeout: Duration::from_secs_f64(args.request_timeout_s),
        api_key,
        voices_dir: Some(args.voices_dir.clone().unwrap_or_else(default_voices_dir)),
        ..ServeOptions::default()
    };
    // the voice directory is opened (and checked writable) once, before the model is read
    let voices_dir = options.voices_dir.clone().unwrap_or_default();
    let voices = Arc::new(tts_engine::serve::voices::VoiceStore::open(&voices_dir)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("starting the async runtime: {e}")))?;
    runtime.block_on(async move {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| Error::Setting {
            field: "--host/--port",
            value: addr.clone(),
            expected: format!("an address this machine can listen on ({e})"),
        })?;
        let metrics = Arc::new(Metrics::new());
        let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel::<Result<()>>();
        let max_batch = args.max_batch;
        let describe = source.describe();
        let load = move || -> Result<Engine> {
            let engine = match &source {
                ModelSource::Dir(d) => Engine::load_dir(d, &dev),
                ModelSource::Synthetic { seed } => {
                    Engine::synthetic(tts_t3::T3Config::default(), tts_s3gen::S3GenConfig::default(), *seed, &dev)
                }
            };
            match engine {
                Ok(mut e) => {
                    e.batching.max_batch = max_batch;
                    let _ = loaded_tx.send(Ok(()));
                    Ok(e)
                }
                Err(e) => {
                    let msg = e.to_string();
                    let _ = loaded_tx.send(Err(e));
                    Err(Error::Internal(msg))
                }
            }
        };
        let scheduler = Arc::new(Scheduler::start(load, sched, metrics.clone())?);
        let state = Arc::new(AppState { scheduler, metrics, options, voices: Some(voices) });
        let bound = listener.local_addr().map_or(addr.clone(), |a| a.to_string());
        eprintln!(
            "tts serve: listening on http://{bound} (loading {describe}; /ready answers 200 once loaded; voices in {})",
            voices_dir.display()
        );
        // stop on SIGTERM/SIGINT, or at once if the model fails to load
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let failure = tokio::spawn(async move {
            let load_failed = async {
                match loaded_rx.await {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => {
                        eprintln!("tts serve: model loaded, ready");
                        std::future::pending().await
                    }
                    Err(_) => std::future::pending().await,
                }
            };
            let failed = tokio::select! {
                _ = shutdown_signal() => {
                    eprintln!("tts serve: shutting down (finishing the requests in flight)");
                    None
                }
                e = load_failed => Some(e),
            };
            let _ = stop_tx.send(());
            failed
        });
        serve(listener, state, async move {
            let _ = stop_rx.await;
        })
        .await
        .map_err(|e| Error::Internal(format!("serving: {e}")))?;
        match failure.await {
            Ok(Some(e)) => Err(e),
            _ => {
                eprintln!("tts serve: stopped");
                Ok(true)
            }
        }
    })
}
