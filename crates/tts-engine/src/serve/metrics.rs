//! The server's counters, rendered in Prometheus' text format (`GET /metrics`).
//!
//! Plain atomics and one small map (responses by status code): no metrics crate. Every series is
//! prefixed `tts_`; times are in seconds, audio in seconds of 24 kHz output.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::ErrorKind;

/// Upper bounds of the batch-size histogram's buckets (requests per `Engine::synthesize` call).
pub const BATCH_BUCKETS: [u64; 7] = [1, 2, 4, 8, 16, 32, 64];

/// A sum and a count of durations (microseconds, so that atomics hold them).
/// Upper bounds (seconds) of the latency and TTFA histograms' buckets.
pub const SECONDS_BUCKETS: [f64; 12] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// A histogram of durations (Prometheus' cumulative buckets are made when rendering).
#[derive(Default)]
struct Timing {
    sum_us: AtomicU64,
    count: AtomicU64,
    buckets: [AtomicU64; SECONDS_BUCKETS.len()],
}

impl Timing {
    fn observe(&self, d: Duration) {
        self.sum_us.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = SECONDS_BUCKETS.iter().position(|&b| d.as_secs_f64() <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn render(&self, s: &mut String, name: &str, help: &str) {
        let r = Ordering::Relaxed;
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, n) in SECONDS_BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(r);
            let _ = writeln!(s, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(r);
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(s, "{name}_sum {}", self.sum_us.load(r) as f64 / 1e6);
        let _ = writeln!(s, "{name}_count {count}");
    }
}

#[derive(Default)]
pub struct Metrics {
    /// Jobs accepted and not yet started by the worker.
    queue_depth: AtomicU64,
    /// The model is loaded.
    ready: AtomicBool,
    /// Responses by HTTP status code.
    responses: Mutex<BTreeMap<u16, u64>>,
    /// Failed requests by the engine's error kind (and the server's own: `timeout`, `queue_full`).
    errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Batch sizes: a count per bucket of [`BATCH_BUCKETS`] (not cumulative here), the sum, the count.
    batch_buckets: [AtomicU64; BATCH_BUCKETS.len()],
    batch_over: AtomicU64,
    batch_sum: AtomicU64,
    batch_count: AtomicU64,
    /// The largest batch run so far.
    batch_max: AtomicU64,
    /// Jobs the worker dropped unrun: past their deadline, or their client gone.
    skipped: AtomicU64,
    /// Streams the worker stopped because the client went away (or stalled past the deadline).
    streams_abandoned: AtomicU64,
    /// Audio produced, in microseconds of 24 kHz output.
    audio_us: AtomicU64,
    /// T3 slots decoding now, and the running generator's slots.
    active_slots: AtomicU64,
    slots: AtomicU64,
    /// Speech tokens T3 generated, and its decode steps.
    speech_tokens: AtomicU64,
    t3_steps: AtomicU64,
    /// The engine thread's working time, in microseconds.
    busy_us: AtomicU64,
    /// Requests dropped while being spoken.
    cancelled: AtomicU64,
    /// Whole (non-streamed) requests: from arrival to the audio ready.
    latency: Timing,
    /// Streamed requests: from arrival to the first chunk sent.
    ttfa: Timing,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn queued(&self) {
        self.queue_depth.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dequeued(&self) {
        // saturating: a job never leaves the queue twice, but a gauge must not wrap
        let _ = self.queue_depth.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(1)));
    }

    pub fn queue_depth(&self) -> u64 {
        self.queue_depth.load(Ordering::Relaxed)
    }

    pub fn response(&self, status: u16) {
        *self.responses.lock().unwrap_or_else(|e| e.into_inner()).entry(status).or_default() += 1;
    }

    /// Responses with `status` so far.
    pub fn responses(&self, status: u16) -> u64 {
        self.responses.lock().unwrap_or_else(|e| e.into_inner()).get(&status).copied().unwrap_or(0)
    }

    /// One failed request, by the label of its kind ([`kind_label`], `timeout`, `queue_full`, ...).
    pub fn error(&self, label: &'static str) {
        *self.errors.lock().unwrap_or_else(|e| e.into_inner()).entry(label).or_default() += 1;
    }

    pub fn batch(&self, size: usize) {
        let size = size as u64;
        match BATCH_BUCKETS.iter().position(|&b| size <= b) {
            Some(i) => self.batch_buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.batch_over.fetch_add(1, Ordering::Relaxed),
        };
        self.batch_sum.fetch_add(size, Ordering::Relaxed);
        self.batch_count.fetch_add(1, Ordering::Relaxed);
        self.batch_max.fetch_max(size, Ordering::Relaxed);
    }

    /// The largest batch run so far.
    pub fn batch_max(&self) -> u64 {
        self.batch_max.load(Ordering::Relaxed)
    }

    pub fn skipped(&self) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stream_abandoned(&self) {
        self.streams_abandoned.fetch_add(1, Ordering::Relaxed);
    }

    pub fn audio(&self, samples: usize, sample_rate: u32) {
        let us = samples as u64 * 1_000_000 / sample_rate.max(1) as u64;
        self.audio_us.fetch_add(us, Ordering::Relaxed);
    }

    /// T3 slots decoding now, and slots of the running generator (0 when none runs).
    pub fn slots(&self, active: usize, capacity: usize) {
        self.active_slots.store(active as u64, Ordering::Relaxed);
        self.slots.store(capacity as u64, Ordering::Relaxed);
    }

    /// A scheduler round: T3 decode steps run, speech tokens of the rows T3 finished, and the
    /// engine's busy time.
    pub fn round(&self, t3_steps: usize, speech_tokens: usize, busy: Duration) {
        self.t3_steps.fetch_add(t3_steps as u64, Ordering::Relaxed);
        self.speech_tokens.fetch_add(speech_tokens as u64, Ordering::Relaxed);
        self.busy_us.fetch_add(busy.as_micros() as u64, Ordering::Relaxed);
    }

    /// A request dropped while it was being spoken (its client gone or its deadline passed).
    pub fn cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    pub fn cancelled_count(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }

    pub fn latency(&self, d: Duration) {
        self.latency.observe(d);
    }

    pub fn ttfa(&self, d: Duration) {
        self.ttfa.observe(d);
    }

    /// The Prometheus text exposition (format 0.0.4) of every series.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let r = Ordering::Relaxed;
        let secs = |us: u64| us as f64 / 1e6;
        let gauge = |s: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(&mut s, "tts_queue_depth", "Requests accepted and not yet started.", self.queue_depth() as f64);
        gauge(&mut s, "tts_ready", "1 once the model is loaded.", if self.is_ready() { 1.0 } else { 0.0 });
        let (active, slots) = (self.active_slots.load(r), self.slots.load(r));
        gauge(&mut s, "tts_active_slots", "T3 slots decoding now (continuous batching).", active as f64);
        gauge(&mut s, "tts_slots", "T3 slots of the running generator (0 when none runs).", slots as f64);
        gauge(
            &mut s,
            "tts_batch_occupancy",
            "Active T3 slots over the generator's slots (0 when none runs).",
            if slots == 0 { 0.0 } else { active as f64 / slots as f64 },
        );

        let _ = writeln!(s, "# HELP tts_http_responses_total Responses by HTTP status code.");
        let _ = writeln!(s, "# TYPE tts_http_responses_total counter");
        for (code, n) in self.responses.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(s, "tts_http_responses_total{{code=\"{code}\"}} {n}");
        }
        let _ = writeln!(s, "# HELP tts_errors_total Failed speech requests by kind.");
        let _ = writeln!(s, "# TYPE tts_errors_total counter");
        for (kind, n) in self.errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(s, "tts_errors_total{{kind=\"{kind}\"}} {n}");
        }

        let _ = writeln!(s, "# HELP tts_batch_size T3 slots decoding per scheduler round (non-streamed requests).");
        let _ = writeln!(s, "# TYPE tts_batch_size histogram");
        let mut cumulative = 0;
        for (b, n) in BATCH_BUCKETS.iter().zip(&self.batch_buckets) {
            cumulative += n.load(r);
            let _ = writeln!(s, "tts_batch_size_bucket{{le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.batch_over.load(r);
        let _ = writeln!(s, "tts_batch_size_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(s, "tts_batch_size_sum {}", self.batch_sum.load(r));
        let _ = writeln!(s, "tts_batch_size_count {}", self.batch_count.load(r));
        gauge(&mut s, "tts_batch_size_max", "The largest batch run so far.", self.batch_max() as f64);

        let counter = |s: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            &mut s,
            "tts_jobs_skipped_total",
            "Jobs dropped unrun: past their deadline or their client gone.",
            self.skipped.load(r) as f64,
        );
        counter(
            &mut s,
            "tts_streams_abandoned_total",
            "Streams stopped because the client went away or stalled.",
            self.streams_abandoned.load(r) as f64,
        );
        counter(&mut s, "tts_audio_seconds_total", "Seconds of audio produced.", secs(self.audio_us.load(r)));
        counter(
            &mut s,
            "tts_engine_busy_seconds_total",
            "Seconds the engine thread spent working (real-time factor: its rate over tts_audio_seconds_total's).",
            secs(self.busy_us.load(r)),
        );
        counter(
            &mut s,
            "tts_speech_tokens_total",
            "Speech tokens T3 generated (tokens/s: its rate).",
            self.speech_tokens.load(r) as f64,
        );
        counter(&mut s, "tts_t3_steps_total", "T3 decode steps run.", self.t3_steps.load(r) as f64);
        counter(
            &mut s,
            "tts_requests_cancelled_total",
            "Requests dropped while being spoken: the client gone or the deadline passed.",
            self.cancelled.load(r) as f64,
        );

        self.latency.render(&mut s, "tts_request_duration_seconds", "Non-streamed requests: arrival to audio ready.");
        self.ttfa.render(&mut s, "tts_ttfa_seconds", "Streamed requests: arrival to the first audio chunk.");
        s
    }
}

/// The label of an error kind in `tts_errors_total`.
pub fn kind_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::BadInput => "bad_input",
        ErrorKind::BadModel => "bad_model",
        ErrorKind::ResourceLimit => "resource_limit",
        ErrorKind::Internal => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_every_batch_counted() {
        let m = Metrics::new();
        let sizes = [1usize, 3, 3, 16, 100];
        for &b in &sizes {
            m.batch(b);
        }
        let text = m.render();
        let line = |prefix: &str| {
            text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in\n{text}")).to_string()
        };
        assert_eq!(line("tts_batch_size_bucket{le=\"1\"}"), "tts_batch_size_bucket{le=\"1\"} 1");
        assert_eq!(line("tts_batch_size_bucket{le=\"4\"}"), "tts_batch_size_bucket{le=\"4\"} 3");
        assert_eq!(line("tts_batch_size_bucket{le=\"64\"}"), "tts_batch_size_bucket{le=\"64\"} 4");
        assert_eq!(line("tts_batch_size_bucket{le=\"+Inf\"}"), format!("tts_batch_size_bucket{{le=\"+Inf\"}} {}", sizes.len()));
        assert_eq!(line("tts_batch_size_sum"), format!("tts_batch_size_sum {}", sizes.iter().sum::<usize>()));
        assert_eq!(m.batch_max(), 100);
    }

    #[test]
    fn latency_histogram_buckets_hold_what_they_bound() {
        let m = Metrics::new();
        let (mut rng, _) = crate::test_rng::Rng::fresh();
        let ds: Vec<f64> = (0..50).map(|_| rng.uniform(0.0, 400.0)).collect();
        for &d in &ds {
            m.latency(Duration::from_secs_f64(d));
        }
        m.slots(3, 4);
        let text = m.render();
        for b in SECONDS_BUCKETS {
            let want = ds.iter().filter(|&&d| Duration::from_secs_f64(d).as_secs_f64() <= b).count();
            let line = format!("tts_request_duration_seconds_bucket{{le=\"{b}\"}} {want}");
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(text.lines().any(|l| l == format!("tts_request_duration_seconds_bucket{{le=\"+Inf\"}} {}", ds.len())));
        assert!(text.lines().any(|l| l == "tts_batch_occupancy 0.75"), "{text}");
    }

    #[test]
    fn queue_depth_never_wraps() {
        let m = Metrics::new();
        m.queued();
        m.dequeued();
        m.dequeued();
        assert_eq!(m.queue_depth(), 0);
    }
}
