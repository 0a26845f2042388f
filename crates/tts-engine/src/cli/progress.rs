//! Progress bars (indicatif) on stderr: downloads, loading, T3's tokens and S3Gen's segments.
//! Hidden when stderr is not a terminal or with `--quiet`.
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tts_engine::synthesize::Progress;

/// The bars of one command.
pub struct Bars {
    multi: MultiProgress,
}

impl Bars {
    /// Bars drawn on stderr when it is a terminal and not `quiet`, else never drawn.
    pub fn new(quiet: bool) -> Bars {
        let target =
            if !quiet && std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        Bars { multi: MultiProgress::with_draw_target(target) }
    }

    /// A spinner with a message, until finished.
    pub fn spinner(&self, msg: &str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("a valid template"));
        bar.set_message(msg.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    /// One bar per file downloaded, in bytes.
    pub fn downloads(&self) -> Downloads<'_> {
        Downloads { bars: self, current: None }
    }

    /// The observer of a batch: a bar of T3's decode steps, then one of S3Gen's segments.
    pub fn synthesis(&self) -> impl FnMut(Progress) + '_ {
        let style = ProgressStyle::with_template("{prefix:>6} [{bar:30}] {pos}/{len} {msg} {elapsed}")
            .expect("a valid template")
            .progress_chars("=> ");
        let (mut t3, mut s3): (Option<ProgressBar>, Option<ProgressBar>) = (None, None);
        move |p| match p {
            Progress::T3 { rows, finished, steps, max_steps } => {
                let bar = t3.get_or_insert_with(|| {
                    let b = self.multi.add(ProgressBar::new(max_steps as u64));
                    b.set_style(style.clone());
                    b.set_prefix("T3");
                    b
                });
                bar.set_position((steps as u64).min(max_steps as u64));
                bar.set_message(format!("tokens per segment; {finished}/{rows} segments done"));
                if finished == rows {
                    bar.finish();
                }
            }
            Progress::S3Gen { rows, done } => {
                let bar = s3.get_or_insert_with(|| {
                    let b = self.multi.add(ProgressBar::new(rows as u64));
                    b.set_style(style.clone());
                    b.set_prefix("S3Gen");
                    b.set_message("segments");
                    b
                });
                bar.set_position(done as u64);
                if done == rows {
                    bar.finish();
                }
            }
        }
    }

    /// Removes every bar from the terminal.
    pub fn clear(&self) {
        let _ = self.multi.clear();
    }
}

/// Download bars, one per file.
pub struct Downloads<'b> {
    bars: &'b Bars,
    current: Option<ProgressBar>,
}

impl tts_engine::hub::DownloadProgress for Downloads<'_> {
    fn start(&mut self, file: &str, total_bytes: u64) {
        let bar = self.bars.multi.add(ProgressBar::new(total_bytes));
        bar.set_style(
            ProgressStyle::with_template("{msg:>20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message(file.to_string());
        self.current = Some(bar);
    }

    fn advance(&mut self, bytes: u64) {
        if let Some(b) = &self.current {
            b.inc(bytes);
        }
    }

    fn finish(&mut self, _file: &str) {
        if let Some(b) = self.current.take() {
            b.finish();
        }
    }

    fn abandon(&mut self, _file: &str) {
        if let Some(b) = self.current.take() {
            b.abandon();
        }
    }
}
