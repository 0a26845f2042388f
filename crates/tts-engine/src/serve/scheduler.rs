//! The scheduler: one worker thread owns the [`Engine`]; the HTTP handlers hand it jobs through a
//! bounded queue and never block on it.
//!
//! - The queue is a `std::sync::mpsc::sync_channel` of `max_queue` jobs; [`Scheduler::submit`] uses
//!   `try_send`, so a full queue is an immediate [`Error::QueueFull`] (HTTP 429), never a wait.
//! - **Slot-level continuous batching** ([`Continuous`]): the worker takes whole (non-streamed)
//!   jobs from the queue while fewer than `max_batch` requests are in its session, and between
//!   rounds of `poll_every` T3 decode steps their segments join the running generator's free slots;
//!   S3Gen runs batched over the segments T3 has finished, whichever requests they belong to. A
//!   request whose client has gone (its handler dropped) or whose deadline has passed is cancelled
//!   at the next round: its slots are free within `poll_every` decode steps.
//! - Streamed jobs run one at a time through [`Engine::synthesize_stream`], each whole, between two
//!   rounds of the session (the session's requests keep their slots meanwhile); each chunk goes to
//!   the handler over a bounded tokio channel. When the client is gone (the channel is closed) or has
//!   not taken a chunk by the job's deadline, the worker drops the stream at once.
//! - Each job carries its deadline: a job already past it when dequeued, or whose handler has
//!   gone, is skipped unrun.
//! - The engine is loaded on the worker thread itself (the engine is not needed on any other
//!   thread, so it need not be `Send`); until it is, [`Metrics::is_ready`] is false and jobs wait.
//!   If loading fails, every job is answered with that error.
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::metrics::Metrics;
use crate::continuous::{Continuous, Ticket};
use crate::speak::Engine;
use crate::stream::{AudioChunk, StreamOptions};
use crate::synthesize::{Audio, Request, Voice};
use crate::voice::Conditionals;
use crate::voice::saved::VoiceMeta;
use crate::{Error, Result};

/// Chunks a stream may have sent and its client not yet taken.
pub const STREAM_BUFFER_CHUNKS: usize = 16;

/// How the scheduler queues and batches.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Jobs waiting at most (more: [`Error::QueueFull`]).
    pub max_queue: usize,
    /// Requests in the continuous-batching session at most (more wait in the queue); the T3
    /// generator gets this many slots (clamped to the engine's `max_batch`).
    pub max_batch: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions { max_queue: 64, max_batch: 16 }
    }
}

/// Where a job's result goes.
pub enum Reply {
    /// The whole audio, once.
    Whole(oneshot::Sender<Result<Audio>>),
    /// The chunks as they are produced; an error ends the stream.
    Stream(mpsc::Sender<Result<AudioChunk>>),
    /// The voice of the request's [`Voice::Bytes`] (an upload), computed once, with its metadata;
    /// the request's text is not spoken.
    Voice(oneshot::Sender<Result<VoiceWithMeta>>),
}

/// A voice computed from an upload, with the metadata a saved voice of it carries.
pub type VoiceWithMeta = (Arc<Conditionals>, Arc<VoiceMeta>);

impl Reply {
    /// The handler has gone (its client disconnected or it gave up).
    fn is_closed(&self) -> bool {
        match self {
            Reply::Whole(tx) => tx.is_closed(),
            Reply::Stream(tx) => tx.is_closed(),
            Reply::Voice(tx) => tx.is_closed(),
        }
    }

    fn fail(self, e: Error) {
        match self {
            Reply::Whole(tx) => {
                let _ = tx.send(Err(e));
            }
            Reply::Stream(tx) => {
                let _ = tx.try_send(Err(e));
            }
            Reply::Voice(tx) => {
                let _ = tx.send(Err(e));
            }
        }
    }
}

/// One request for the worker.
pub struct Job {
    pub request: Request,
    /// When the request arrived (latency and TTFA are measured from it).
    pub arrived: Instant,
    /// Past it, the job is skipped if not started, and a stream whose client takes no chunk is
    /// dropped.
    pub deadline: Instant,
    pub reply: Reply,
}

/// The handle the HTTP side holds: submits jobs, closes the queue on shutdown.
pub struct Scheduler {
    tx: Mutex<Option<SyncSender<Job>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
    capacity: usize,
}

impl Scheduler {
    /// Starts the worker thread, which loads the engine with `load` and then serves the queue.
    pub fn start<F>(load: F, opts: SchedulerOptions, metrics: Arc<Metrics>) -> Result<Scheduler>
    where
        F: FnOnce() -> Result<Engine> + Send + 'static,
    {
        if opts.max_queue == 0 {
            return Err(Error::Setting { field: "max_queue", value: "0".into(), expected: "at least 1".into() });
        }
        if opts.max_batch == 0 {
            return Err(Error::Setting { field: "max_batch", value: "0".into(), expected: "at least 1".into() });
        }
        let (tx, rx) = sync_channel(opts.max_queue);
        let m = metrics.clone();
        let max_batch = opts.max_batch;
        let worker = std::thread::Builder::new()
            .name("tts-engine".into())
            .spawn(move || run_worker(load, rx, max_batch, m))
            .map_err(|e| Error::Internal(format!("starting the engine thread: {e}")))?;
        Ok(Scheduler { tx: Mutex::new(Some(tx)), worker: Mutex::new(Some(worker)), metrics, capacity: opts.max_queue })
    }

    /// Queues `job`; never blocks. [`Error::QueueFull`] when the queue is full, [`Error::Internal`]
    /// once the scheduler is closed.
    pub fn submit(&self, job: Job) -> Result<()> {
        let guard = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = guard.as_ref() else {
            return Err(Error::Internal("the server is shutting down".into()));
        };
        // counted before the send: the worker may dequeue it at once
        self.metrics.queued();
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.metrics.dequeued();
                Err(Error::QueueFull { capacity: self.capacity })
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.dequeued();
                Err(Error::Internal("the engine thread has stopped".into()))
            }
        }
    }

    /// The queue's capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Closes the queue (later submits fail) and waits for the worker to finish every job it has.
    /// Blocking: call it off the async runtime's threads (or after it).
    pub fn shutdown(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(worker) = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = worker.join();
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A whole request in the session: where its audio goes, and its times.
struct Waiting {
    tx: oneshot::Sender<Result<Audio>>,
    arrived: Instant,
    deadline: Instant,
}

fn run_worker<F>(load: F, rx: Receiver<Job>, max_batch: usize, metrics: Arc<Metrics>)
where
    F: FnOnce() -> Result<Engine>,
{
    let engine = match load() {
        Ok(e) => e,
        Err(e) => {
            // answer every job with the load error (a model fault: 503) until the queue closes
            let detail = format!("the model failed to load: {e}");
            while let Ok(job) = rx.recv() {
                metrics.dequeued();
                job.reply.fail(Error::ModelFile { path: "(model)".into(), detail: detail.clone() });
            }
            return;
        }
    };
    metrics.set_ready(true);
    let mut session = Continuous::new(&engine, max_batch);
    let mut waiting: HashMap<Ticket, Waiting> = HashMap::new();
    // streams and voice uploads: each runs whole, between rounds
    let mut streams: VecDeque<Job> = VecDeque::new();
    let mut next_ticket: Ticket = 0;
    let mut open = true;
    while open || !waiting.is_empty() || !streams.is_empty() {
        // take jobs from the queue while the session has room (the rest stay in the bounded
        // queue, which answers 429 when full); wait for one when there is nothing to do
        let mut idle = waiting.is_empty() && streams.is_empty();
        while open && waiting.len() + streams.len() < max_batch {
            let job = if idle {
                match rx.recv() {
                    Ok(job) => job,
                    Err(_) => {
                        open = false;
                        break;
                    }
                }
            } else {
                match rx.try_recv() {
                    Ok(job) => job,
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            };
            metrics.dequeued();
            idle = false;
            if job.deadline <= Instant::now() || job.reply.is_closed() {
                metrics.skipped();
                continue;
            }
            match job.reply {
                Reply::Stream(_) | Reply::Voice(_) => streams.push_back(job),
                Reply::Whole(tx) => {
                    let ticket = next_ticket;
                    next_ticket += 1;
                    match session.submit(ticket, job.request) {
                        Ok(()) => {
                            waiting.insert(ticket, Waiting { tx, arrived: job.arrived, deadline: job.deadline });
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                }
            }
        }
        // requests nobody waits for any more free their slots
        let now = Instant::now();
        let gone: Vec<Ticket> = waiting.iter().filter(|(_, w)| w.tx.is_closed() || w.deadline <= now).map(|(&t, _)| t).collect();
        for ticket in gone {
            waiting.remove(&ticket);
            metrics.cancelled();
            if let Err(e) = session.cancel(ticket) {
                fail_session(&mut session, &engine, &mut waiting, max_batch, &e.to_string());
            }
        }
        if !session.is_idle() {
            let start = Instant::now();
            let round = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.step()));
            let stats = session.last_round();
            metrics.round(stats.t3_steps, stats.t3_tokens, start.elapsed());
            if stats.t3_steps > 0 {
                metrics.batch(stats.t3_rows);
            }
            let (active, capacity) = session.slots();
            metrics.slots(active, capacity);
            match round {
                Ok(Ok(done)) => {
                    for (ticket, result) in done {
                        let Some(w) = waiting.remove(&ticket) else { continue };
                        if let Ok(audio) = &result {
                            metrics.audio(audio.samples.len(), audio.sample_rate);
                            metrics.latency(w.arrived.elapsed());
                        }
                        let _ = w.tx.send(result);
                    }
                }
                Ok(Err(e)) => fail_session(&mut session, &engine, &mut waiting, max_batch, &e.to_string()),
                Err(_) => fail_session(&mut session, &engine, &mut waiting, max_batch, "the engine panicked"),
            }
        } else {
            metrics.slots(0, 0);
        }
        // a stream, or a voice to compute, runs whole between rounds (whole requests keep their
        // slots meanwhile)
        if let Some(job) = streams.pop_front() {
            let start = Instant::now();
            match job.reply {
                Reply::Voice(tx) => {
                    let r = match &job.request.voice {
                        Voice::Bytes { bytes, name } => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            engine.voice_from_bytes(bytes, name)
                        }))
                        .unwrap_or_else(|_| Err(Error::Internal("the engine panicked computing a voice".into()))),
                        _ => Err(Error::Internal("a voice job without the upload's bytes".into())),
                    };
                    let _ = tx.send(r);
                }
                _ => run_stream(&engine, job, &metrics),
            }
            metrics.round(0, 0, start.elapsed());
        }
    }
    metrics.set_ready(false);
}

/// A fault of the backend during a round: every request of the session gets it, and a new session
/// starts (the old one's state is not trusted).
fn fail_session<'e>(
    session: &mut Continuous<'e>,
    engine: &'e Engine,
    waiting: &mut HashMap<Ticket, Waiting>,
    max_batch: usize,
    detail: &str,
) {
    *session = Continuous::new(engine, max_batch);
    for (_, w) in waiting.drain() {
        let _ = w.tx.send(Err(Error::Internal(format!("the engine failed during a batch: {detail}"))));
    }
}

/// Sends `item`, waiting while the client's buffer is full, up to `deadline`; false when the
/// client is gone or stalled past the deadline.
fn send_chunk(tx: &mpsc::Sender<Result<AudioChunk>>, mut item: Result<AudioChunk>, deadline: Instant) -> bool {
    loop {
        match tx.try_send(item) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(back)) => {
                if Instant::now() >= deadline {
                    return false;
                }
                item = back;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// Runs a stream (the engine draws a segment T3 ends before any speech token again, as
/// [`Engine::synthesize`] does); an error ends it (its body is cut).
fn run_stream(engine: &Engine, job: Job, metrics: &Metrics) {
    let Reply::Stream(tx) = job.reply else { return };
    stream_once(engine, job.request, &tx, job.arrived, job.deadline, metrics);
}

fn stream_once(
    engine: &Engine,
    request: Request,
    tx: &mpsc::Sender<Result<AudioChunk>>,
    arrived: Instant,
    deadline: Instant,
    metrics: &Metrics,
) {
    let stream = match engine.synthesize_stream(request, StreamOptions::default()) {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.try_send(Err(e));
            return;
        }
    };
    let mut first = true;
    for item in stream {
        let failed = item.is_err();
        if let Ok(chunk) = &item {
            metrics.audio(chunk.samples.len(), tts_s3gen::SAMPLE_RATE);
        }
        // a stalled client gets the request timeout again for each chunk
        let deadline = if first { deadline } else { Instant::now() + (deadline - arrived) };
        if !send_chunk(tx, item, deadline) {
            metrics.stream_abandoned();
            return; // dropping the stream frees its T3 slots
        }
        if first && !failed {
            metrics.ttfa(arrived.elapsed());
        }
        first = false;
        if failed {
            return;
        }
    }
}
