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
//! - Streamed jobs run through [`Engine::synthesize_stream`] (each with its own T3 generator):
//!   after every round of the session, each stream whose client has room produces its next chunk,
//!   so streams and whole requests progress together; each chunk goes to the handler over a
//!   bounded tokio channel. When the client is gone (the channel is closed) or has not taken a
//!   chunk by the job's deadline, the worker drops the stream at once. Voice uploads are computed
//!   one at a time between rounds.
//! - Each job carries its deadline: a job already past it when dequeued, or whose handler has
//!   gone, is skipped unrun.
//! - The engine is loaded on the worker thread itself (the engine is not needed on any other
//!   thread, so it need not be `Send`); until it is, [`Metrics::is_ready`] is false and jobs wait.
//!   If loading fails, every job is answered with that error.
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::metrics::Metrics;
use crate::continuous::{Continuous, Ticket};
use crate::speak::Engine;
use crate::stream::{AudioChunk, SpeechStream, StreamOptions};
use crate::synthesize::{Audio, Request, Voice};
use crate::voice::Conditionals;
use crate::voice::saved::VoiceMeta;
use crate::{Error, Result};

/// How long the worker waits for a job when its only work is streams whose clients have not taken
/// their chunks yet.
const STALLED_POLL: Duration = Duration::from_millis(2);

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
    // streams advance a chunk each per round; voice uploads run whole, between rounds
    let mut streams: Vec<Streaming<'_>> = Vec::new();
    let mut uploads: VecDeque<Job> = VecDeque::new();
    let mut next_ticket: Ticket = 0;
    let mut open = true;
    // whether the last round did any work (else the intake waits a little instead of spinning)
    let mut busy = true;
    while open || !waiting.is_empty() || !streams.is_empty() || !uploads.is_empty() {
        // take jobs from the queue while the session has room (the rest stay in the bounded
        // queue, which answers 429 when full); wait for one when there is nothing to do
        let mut idle = waiting.is_empty() && streams.is_empty() && uploads.is_empty();
        while open && waiting.len() + streams.len() + uploads.len() < max_batch {
            // nothing to do: wait for a job; only streams whose clients are behind: wait a little
            let got = if idle {
                rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else if !busy {
                rx.recv_timeout(STALLED_POLL)
            } else {
                rx.try_recv().map_err(|e| match e {
                    TryRecvError::Empty => RecvTimeoutError::Timeout,
                    TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            };
            let job = match got {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            };
            idle = false;
            busy = true;
            metrics.dequeued();
            if job.deadline <= Instant::now() || job.reply.is_closed() {
                metrics.skipped();
                continue;
            }
            match job.reply {
                Reply::Voice(_) => uploads.push_back(job),
                Reply::Stream(tx) => match engine.synthesize_stream(job.request, StreamOptions::default()) {
                    Ok(stream) => streams.push(Streaming {
                        stream,
                        tx,
                        arrived: job.arrived,
                        deadline: job.deadline,
                        sent: 0,
                        timeout: job.deadline.saturating_duration_since(job.arrived),
                    }),
                    Err(e) => {
                        let _ = tx.try_send(Err(e));
                    }
                },
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
        busy = !session.is_idle() || !uploads.is_empty();
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
        // every stream advances by one chunk (its own T3 steps and S3Gen window), so that streams
        // and whole requests progress together
        streams.retain_mut(|st| {
            let (keep, sent) = st.advance(&metrics);
            busy |= sent || !keep;
            keep
        });
        // a voice to compute runs whole between rounds (the others keep their slots meanwhile)
        if let Some(job) = uploads.pop_front() {
            let start = Instant::now();
            if let Reply::Voice(tx) = job.reply {
                let r = match &job.request.voice {
                    Voice::Bytes { bytes, name } => {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.voice_from_bytes(bytes, name)))
                            .unwrap_or_else(|_| Err(Error::Internal("the engine panicked computing a voice".into())))
                    }
                    _ => Err(Error::Internal("a voice job without the upload's bytes".into())),
                };
                let _ = tx.send(r);
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

/// A stream in progress: its chunks go to the handler over a bounded channel.
struct Streaming<'e> {
    stream: SpeechStream<'e>,
    tx: mpsc::Sender<Result<AudioChunk>>,
    arrived: Instant,
    /// The first chunk's deadline; then, a client that takes no chunk for `timeout` is dropped.
    deadline: Instant,
    timeout: Duration,
    /// Chunks sent so far.
    sent: usize,
}

impl Streaming<'_> {
    /// Produces and sends the next chunk when the client has room for it. Returns whether the
    /// stream goes on (false once its last chunk or an error is sent, or its client is gone or
    /// stalled past its deadline: dropping it frees its T3 slots) and whether a chunk was sent.
    fn advance(&mut self, metrics: &Metrics) -> (bool, bool) {
        if self.tx.is_closed() {
            metrics.stream_abandoned();
            return (false, false);
        }
        if self.tx.capacity() == 0 {
            // the client has not taken the chunks already sent: wait, up to the deadline
            if Instant::now() >= self.deadline {
                metrics.stream_abandoned();
                return (false, false);
            }
            return (true, false);
        }
        let start = Instant::now();
        let item = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.stream.next()))
            .unwrap_or_else(|_| Some(Err(Error::Internal("the engine panicked during a stream".into()))));
        metrics.round(0, 0, start.elapsed());
        let Some(item) = item else { return (false, false) };
        let more = matches!(&item, Ok(c) if !c.is_last);
        if let Err(e) = &item
            && self.sent > 0
        {
            // (an error instead of the first chunk is the handler's to count: it answers it)
            metrics.error(super::metrics::kind_label(e.kind()));
        }
        if let Ok(chunk) = &item {
            metrics.audio(chunk.samples.len(), tts_s3gen::SAMPLE_RATE);
            if self.sent == 0 {
                metrics.ttfa(self.arrived.elapsed());
            }
        }
        // room was checked above: only a closed channel refuses it
        if self.tx.try_send(item).is_err() {
            metrics.stream_abandoned();
            return (false, false);
        }
        self.sent += 1;
        self.deadline = Instant::now() + self.timeout;
        (more, true)
    }
}
