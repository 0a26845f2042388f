//! The scheduler: one worker thread owns the [`Engine`]; the HTTP handlers hand it jobs through a
//! bounded queue and never block on it.
//!
//! - The queue is a `std::sync::mpsc::sync_channel` of `max_queue` jobs; [`Scheduler::submit`] uses
//!   `try_send`, so a full queue is an immediate [`Error::QueueFull`] (HTTP 429), never a wait.
//! - **Dynamic batching at request granularity**: the worker takes every queued whole (non-streamed)
//!   job, up to `max_batch`, and runs them in ONE [`Engine::synthesize`] call (which itself decodes
//!   their segments with continuous batching over T3 slots). A request arriving while a batch runs
//!   waits for the next batch. Slot-level continuous batching across requests (a request joining
//!   free T3 slots while others decode) is the next step; it needs a long-lived generator API in
//!   the engine.
//! - Streamed jobs run one at a time through [`Engine::synthesize_stream`]; each chunk goes to the
//!   handler over a bounded tokio channel. When the client is gone (the channel is closed) or has
//!   not taken a chunk by the job's deadline, the worker drops the stream at once.
//! - Each job carries its deadline: a job already past it when dequeued, or whose handler has
//!   gone, is skipped unrun.
//! - The engine is loaded on the worker thread itself (the engine is not needed on any other
//!   thread, so it need not be `Send`); until it is, [`Metrics::is_ready`] is false and jobs wait.
//!   If loading fails, every job is answered with that error.
use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::metrics::Metrics;
use crate::speak::Engine;
use crate::stream::{AudioChunk, StreamOptions};
use crate::synthesize::{Audio, Request};
use crate::{Error, Result};

/// Chunks a stream may have sent and its client not yet taken.
pub const STREAM_BUFFER_CHUNKS: usize = 16;

/// How the scheduler queues and batches.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Jobs waiting at most (more: [`Error::QueueFull`]).
    pub max_queue: usize,
    /// Whole requests run in one engine call at most.
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
}

impl Reply {
    /// The handler has gone (its client disconnected or it gave up).
    fn is_closed(&self) -> bool {
        match self {
            Reply::Whole(tx) => tx.is_closed(),
            Reply::Stream(tx) => tx.is_closed(),
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
    let mut pending: VecDeque<Job> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match rx.recv() {
                Ok(job) => pending.push_back(job),
                Err(_) => break, // closed and drained
            }
        }
        while pending.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => pending.push_back(job),
                Err(_) => break,
            }
        }
        // skip what nobody waits for any more
        let now = Instant::now();
        pending.retain(|job| {
            let keep = job.deadline > now && !job.reply.is_closed();
            if !keep {
                metrics.dequeued();
                metrics.skipped();
            }
            keep
        });
        let Some(first) = pending.front() else { continue };
        if matches!(first.reply, Reply::Stream(_)) {
            let job = pending.pop_front().expect("front exists");
            metrics.dequeued();
            run_stream(&engine, job, &metrics);
            continue;
        }
        // every whole job pending (streams keep their place)
        let mut batch = Vec::new();
        let mut rest = VecDeque::new();
        for job in pending.drain(..) {
            if matches!(job.reply, Reply::Whole(_)) && batch.len() < max_batch {
                metrics.dequeued();
                batch.push(job);
            } else {
                rest.push_back(job);
            }
        }
        pending = rest;
        run_batch(&engine, batch, &metrics);
    }
    metrics.set_ready(false);
}

fn run_batch(engine: &Engine, batch: Vec<Job>, metrics: &Metrics) {
    metrics.batch(batch.len());
    let mut requests = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for job in batch {
        requests.push(job.request);
        replies.push((job.reply, job.arrived));
    }
    let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.synthesize(&requests)))
        .unwrap_or_else(|_| (0..requests.len()).map(|_| Err(Error::Internal("the engine panicked".into()))).collect());
    for ((reply, arrived), result) in replies.into_iter().zip(results) {
        if let Ok(audio) = &result {
            metrics.audio(audio.samples.len(), audio.sample_rate);
            metrics.latency(arrived.elapsed());
        }
        if let Reply::Whole(tx) = reply {
            let _ = tx.send(result);
        }
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
