//! The command-line tool's shared pieces: where the model comes from, messages, argument checks,
//! progress bars; one module per larger command.
pub mod info;
pub mod progress;
#[cfg(feature = "serve")]
pub mod serve;
pub mod speak;

use std::path::Path;

use tts_engine::bench::ModelSource;
use tts_engine::{Error, Result};

use progress::Bars;

/// Where the model comes from: a directory or a Hugging Face repo id (resolved through the HF
/// cache, downloaded when missing), or `--synthetic`.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// A model directory with the official Chatterbox files, or a Hugging Face repo id whose files
    /// are read from the Hugging Face cache (HF_HOME, HF_HUB_CACHE) or downloaded into it
    /// (HF_ENDPOINT, HF_TOKEN; HF_HUB_OFFLINE=1 never downloads) [default: ResembleAI/chatterbox].
    #[arg(long, visible_alias = "model-dir", conflicts_with = "synthetic")]
    pub model: Option<String>,
    /// The revision of a Hugging Face repo: a branch, tag or commit [default: main].
    #[arg(long, conflicts_with = "synthetic")]
    pub revision: Option<String>,
    /// Random weights at the real dimensions, built in memory from a seed (no files), with a
    /// synthetic voice and a character tokenizer: for speed measurements; THE OUTPUT IS NOISE.
    #[arg(long)]
    pub synthetic: bool,
    /// Seed of the synthetic weights and voice [default: 1].
    #[arg(long)]
    pub synthetic_seed: Option<u64>,
}

impl ModelArgs {
    /// The model's files on this machine (downloaded with a progress bar when needed), or the
    /// synthetic model.
    pub fn resolve(&self, bars: &Bars) -> Result<ModelSource> {
        Ok(self.resolve_full(bars)?.0)
    }

    /// [`ModelArgs::resolve`], with where a Hub model came from.
    pub fn resolve_full(&self, bars: &Bars) -> Result<(ModelSource, Option<tts_engine::hub::Resolved>)> {
        if self.synthetic_seed.is_some() && !self.synthetic {
            return Err(Error::Usage("--synthetic-seed needs --synthetic"));
        }
        if self.synthetic {
            let seed = self.synthetic_seed.unwrap_or(tts_engine::synthetic::DEFAULT_SEED);
            return Ok((ModelSource::Synthetic { seed }, None));
        }
        let resolved = tts_engine::hub::resolve(self.model.as_deref(), self.revision.as_deref(), &mut bars.downloads())?;
        Ok((ModelSource::Dir(resolved.dir.clone()), Some(resolved)))
    }
}

/// Messages for the user: to stdout, or to stderr when stdout carries the audio; none when quiet.
#[derive(Clone, Copy)]
pub struct Say {
    pub quiet: bool,
    pub to_stderr: bool,
}

impl Say {
    pub fn line(&self, msg: std::fmt::Arguments<'_>) {
        if self.quiet {
            return;
        }
        if self.to_stderr {
            eprintln!("{msg}");
        } else {
            println!("{msg}");
        }
    }
}

/// An input file that must exist (checked before any model is loaded).
pub fn check_input_file(flag: &'static str, path: &Path) -> Result<()> {
    if path.is_file() {
        return Ok(());
    }
    Err(Error::Setting { field: flag, value: path.display().to_string(), expected: "an existing file".into() })
}

/// An output file whose folder must exist (checked before any work).
pub fn check_output_folder(flag: &'static str, out: &Path) -> Result<()> {
    let bad = |expected: String| Error::Setting { field: flag, value: out.display().to_string(), expected };
    if out.as_os_str().is_empty() {
        return Err(bad("a file name".into()));
    }
    let folder = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !folder.is_dir() {
        return Err(bad(format!("a file in an existing folder (there is no folder {})", folder.display())));
    }
    if out.is_dir() {
        return Err(bad("a file, not a folder".into()));
    }
    Ok(())
}

/// [`check_output_folder`], and the file can be created there: a probe file (`NAME.partial`, the
/// name the output is written under before its rename) is created and removed.
pub fn check_output_file(flag: &'static str, out: &Path) -> Result<()> {
    check_output_folder(flag, out)?;
    let mut probe = out.as_os_str().to_owned();
    probe.push(".partial");
    let probe = std::path::PathBuf::from(probe);
    let existed = probe.exists();
    match std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(&probe) {
        Ok(_) => {
            if !existed {
                let _ = std::fs::remove_file(&probe);
            }
            Ok(())
        }
        Err(e) => Err(Error::Output { path: out.to_path_buf(), detail: format!("cannot be written: {e}") }),
    }
}

/// Opens the device named by `backend` and says which ([`announce_device`]).
pub fn open_device(backend: &str, source: &ModelSource, say: &Say) -> Result<tts_engine::Device> {
    let (dev, note) = tts_engine::select_device(backend)?;
    announce_device(&dev, note, source, say);
    Ok(dev)
}

/// Says which device runs (and why not Cuda, if not), and, for the synthetic model, that the
/// output is noise: always on stderr, and as a `#` line where the messages go.
pub fn announce_device(dev: &tts_engine::Device, note: Option<String>, source: &ModelSource, say: &Say) {
    if let Some(seed) = source.synthetic_seed() {
        let w = tts_engine::synthetic::warning(seed);
        eprintln!("WARNING: {w}");
        if !say.to_stderr {
            say.line(format_args!("# {w}"));
        }
    }
    say.line(format_args!("backend: {}", dev.describe()));
    if let Some(n) = note {
        say.line(format_args!("note: {n}"));
    }
}

pub fn synthetic_flag(source: &ModelSource) -> String {
    if source.synthetic_seed().is_some() { "1" } else { "0" }.into()
}
