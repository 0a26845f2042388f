//! Download progress, reported file by file to whatever shows it (the CLI's progress bars).

/// Receives the progress of the downloads of one [`crate::resolve()`] call, one file at a time:
/// `start`, any number of `advance`, then `finish` (the file is complete and verified) or `abandon`
/// (the download failed). Files found in the cache report nothing.
pub trait DownloadProgress {
    /// A download of `file` (its name in the repository) begins; it has `total_bytes`.
    fn start(&mut self, file: &str, total_bytes: u64);
    /// `bytes` more bytes of the current file arrived (a resumed download first reports the part
    /// it already had).
    fn advance(&mut self, bytes: u64);
    /// `file` is complete, verified and in the cache.
    fn finish(&mut self, file: &str);
    /// The download of `file` failed; the error follows from [`crate::resolve()`].
    fn abandon(&mut self, file: &str) {
        let _ = file;
    }
}

/// Reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl DownloadProgress for NoProgress {
    fn start(&mut self, _file: &str, _total_bytes: u64) {}
    fn advance(&mut self, _bytes: u64) {}
    fn finish(&mut self, _file: &str) {}
}

/// hf-hub's progress calls turned into [`DownloadProgress`] calls for one file.
///
/// hf-hub calls `init(size)` before the download and again before each (re)try, and the first
/// `update` after an `init` gives the offset the (re)try starts from, not an increment: the bytes a
/// resumed download already had. This adapter starts once and turns that first `update` into the
/// increment past what it reported already.
pub(crate) struct HfProgress<'a> {
    inner: &'a mut dyn DownloadProgress,
    file: &'a str,
    started: bool,
    reported: u64,
    next_is_offset: bool,
}

impl<'a> HfProgress<'a> {
    pub(crate) fn new(inner: &'a mut dyn DownloadProgress, file: &'a str) -> HfProgress<'a> {
        HfProgress { inner, file, started: false, reported: 0, next_is_offset: false }
    }

    /// Whether `start` was reported (so that `finish` or `abandon` must follow).
    pub(crate) fn started(&self) -> bool {
        self.started
    }
}

impl hf_hub::api::Progress for HfProgress<'_> {
    fn init(&mut self, size: usize, _filename: &str) {
        if !self.started {
            self.inner.start(self.file, size as u64);
            self.started = true;
        }
        self.next_is_offset = true;
    }

    fn update(&mut self, size: usize) {
        let size = size as u64;
        if std::mem::take(&mut self.next_is_offset) {
            if size > self.reported {
                self.inner.advance(size - self.reported);
                self.reported = size;
            }
        } else if size > 0 {
            self.inner.advance(size);
            self.reported += size;
        }
    }

    fn finish(&mut self) {}
}

/// hf-hub takes its progress by value; this lends the adapter (to ask it [`HfProgress::started`]
/// afterwards).
impl hf_hub::api::Progress for &mut HfProgress<'_> {
    fn init(&mut self, size: usize, filename: &str) {
        (**self).init(size, filename)
    }
    fn update(&mut self, size: usize) {
        (**self).update(size)
    }
    fn finish(&mut self) {
        (**self).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hf_hub::api::Progress;

    #[derive(Default)]
    struct Log(Vec<String>, u64);
    impl DownloadProgress for Log {
        fn start(&mut self, file: &str, total: u64) {
            self.0.push(format!("start {file} {total}"));
        }
        fn advance(&mut self, bytes: u64) {
            self.1 += bytes;
        }
        fn finish(&mut self, file: &str) {
            self.0.push(format!("finish {file}"));
        }
    }

    /// hf-hub's sequence for a download that breaks after 300 of 1000 bytes and resumes.
    #[test]
    fn resumed_download_counts_each_byte_once() {
        let mut log = Log::default();
        let mut p = HfProgress::new(&mut log, "f");
        p.init(1000, "f"); // download_tempfile
        p.init(1000, "f"); // download_from
        p.update(0); // offset 0
        p.update(200);
        p.update(100);
        p.init(1000, "f"); // retry
        p.update(300); // offset 300: nothing new
        p.update(700);
        p.update(0);
        assert!(p.started());
        assert_eq!(log.0, ["start f 1000"]);
        assert_eq!(log.1, 1000);
    }

    /// A download resumed from a part file of an earlier call reports that part at once.
    #[test]
    fn part_file_from_an_earlier_call_is_reported_first() {
        let mut log = Log::default();
        let mut p = HfProgress::new(&mut log, "f");
        p.init(50, "f");
        p.init(50, "f");
        p.update(20);
        p.update(30);
        assert_eq!(log.1, 50);
    }
}
