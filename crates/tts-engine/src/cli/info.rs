//! `tts info`: the backend, the CPU, the model (id, revision, commit, dimensions, files) and the
//! kernel cache, without loading any weights.
use std::path::Path;

use tts_engine::Result;
use tts_engine::bench::ModelSource;
use tts_s3gen::S3GenConfig;
use tts_t3::T3Config;

use super::ModelArgs;
use super::progress::Bars;

pub fn run(model: &ModelArgs, backend: &str) -> Result<bool> {
    let (dev, note) = tts_engine::select_device(backend)?;
    println!("backend: {}", dev.describe());
    if let Some(n) = note {
        println!("note: {n}");
    }
    for l in tts_engine::cuda_library_report() {
        println!("CUDA library: {l}");
    }
    println!("cpu: {} ({} threads)", tts_engine::bench::cpu_features(), rayon::current_num_threads());
    let bars = Bars::new(false);
    let (t3, s3) = match model.resolve_full(&bars)? {
        (ModelSource::Synthetic { seed }, _) => {
            println!("model: synthetic (random weights at the real dimensions, seed {seed}): noise, not speech");
            (T3Config::default(), S3GenConfig::default())
        }
        (ModelSource::Dir(dir), resolved) => {
            match resolved.as_ref().and_then(|r| r.repo.as_ref().map(|repo| (repo, r))) {
                Some((repo, r)) => {
                    println!("model: {repo}");
                    println!(
                        "revision: {} (commit {})",
                        r.revision.as_deref().unwrap_or("?"),
                        r.commit.as_deref().unwrap_or("?")
                    );
                }
                None => println!("model: {}", dir.display()),
            }
            println!("directory: {}", dir.display());
            print_files(&dir);
            (T3Config::from_model_dir(&dir)?, S3GenConfig::from_model_dir(&dir)?)
        }
    };
    println!(
        "T3: {} layers, hidden {}, {} heads of {}, MLP {}; text vocabulary {} (at most {} tokens), speech vocabulary {} (at most {} tokens)",
        t3.num_hidden_layers,
        t3.hidden_size,
        t3.num_attention_heads,
        t3.head_dim,
        t3.intermediate_size,
        t3.text_tokens_dict_size,
        t3.max_text_tokens,
        t3.speech_tokens_dict_size,
        t3.max_speech_tokens
    );
    println!(
        "S3Gen: flow vocabulary {}, encoder {}×{} blocks (width {}, {} heads), decoder {} channels ({} blocks, {} mid), HiFT {} channels, x-vector {}",
        s3.flow_vocab_size,
        s3.encoder_num_blocks,
        s3.encoder_num_up_blocks,
        s3.encoder_output_size,
        s3.encoder_attention_heads,
        s3.decoder_channels,
        s3.decoder_n_blocks,
        s3.decoder_num_mid_blocks,
        s3.hift_base_channels,
        s3.spk_embed_dim
    );
    match tts_kernels::kernel_cache_dir() {
        None => println!("kernel cache: off"),
        Some(d) => {
            let (n, bytes) = dir_usage(&d);
            println!("kernel cache: {} ({n} compiled kernels, {:.1} MB)", d.display(), bytes as f64 / 1e6);
        }
    }
    Ok(true)
}

/// The files of a model directory, with their sizes (following the HF cache's symlinks).
fn print_files(dir: &Path) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).into_iter().flatten().flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let size = std::fs::metadata(e.path()).map(|m| m.len()).unwrap_or(0);
        println!("  {:<24} {:>12} bytes", e.file_name().to_string_lossy(), size);
    }
}

/// Files and bytes under a directory (0, 0 when it does not exist).
fn dir_usage(d: &Path) -> (usize, u64) {
    std::fs::read_dir(d)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok().filter(|m| m.is_file()))
        .fold((0, 0), |(n, b), m| (n + 1, b + m.len()))
}
