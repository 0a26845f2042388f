"""Reference values for tts-voice's audio and resampler tests (not a parity case: small files the crate's
own tests read). Writes into crates/tts-voice/tests/data/:

- resample_ref.safetensors: for each rate pair, a synthesised input `in_<from>` and the outputs of
  `librosa.resample(x, orig_sr=from, target_sr=to)` (soxr_hq, `soxr_<from>_<to>`) and of
  torchaudio's `Resample(from, to)` as chatterbox's s3gen.get_resampler builds it (`ta_<from>_<to>`);
- short audio files written by soundfile (libsndfile) in formats the Rust test cannot write itself
  (FLAC 16/24-bit, MP3 at 8, 16, 22.05, 44.1 and 48 kHz, a 3-channel 24-bit WAV), and
  `librosa.load(path, sr=None)` of each
  (`load_<file stem>`), the mono float32 the engine must read from them.

Usage: tools/reference/.venv/bin/python tools/reference/audio_ref.py
"""
from __future__ import annotations

import pathlib
import sys

import librosa
import numpy as np
import soundfile as sf
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from refgen.common import synth_wave  # noqa: E402
from chatterbox.models.s3gen.s3gen import get_resampler  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[2] / "crates" / "tts-voice" / "tests" / "data"
PAIRS = [(44100, 16000), (44100, 24000), (48000, 16000), (16000, 24000), (22050, 16000), (8000, 16000),
         (24000, 16000), (32000, 24000)]
SECONDS = 0.12


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    t = {}
    for i, (a, b) in enumerate(PAIRS):
        x = synth_wave(SECONDS, a, 700 + i)
        if f"in_{a}" not in t:
            t[f"in_{a}"] = x
        x = t[f"in_{a}"]
        t[f"soxr_{a}_{b}"] = torch.from_numpy(librosa.resample(x.numpy(), orig_sr=a, target_sr=b))
        t[f"ta_{a}_{b}"] = get_resampler(a, b, "cpu")(x.view(1, -1)).view(-1).contiguous()
    # files soundfile writes: stereo (left = tone, right = scaled copy), 0.2 s
    sr = 22050
    left = synth_wave(0.2, sr, 900).numpy()
    stereo = np.stack([left, -0.5 * left], axis=1)
    three = np.stack([left, 0.25 * left, -left], axis=1)
    files = {
        "flac16_stereo.flac": (stereo, "FLAC", "PCM_16"),
        "flac24_stereo.flac": (stereo, "FLAC", "PCM_24"),
        "mp3_stereo.mp3": (stereo, "MP3", "MPEG_LAYER_III"),
        "wav24_3ch.wav": (three, "WAV", "PCM_24"),
    }
    files = {k: (d, f, st, sr) for k, (d, f, st) in files.items()}
    # more MP3s: MPEG-1 at 44.1 and 48 kHz, MPEG-2 at 16 kHz, MPEG-2.5 at 8 kHz, mono and stereo
    for name, rate, secs, channels in [("mp3_mono_44k.mp3", 44100, 0.15, 1), ("mp3_stereo_48k.mp3", 48000, 0.15, 2),
                                       ("mp3_mono_16k.mp3", 16000, 0.3, 1), ("mp3_mono_8k.mp3", 8000, 0.3, 1)]:
        x = synth_wave(secs, rate, 950 + rate // 1000).numpy()
        data = x if channels == 1 else np.stack([x, 0.7 * x[::-1]], axis=1)
        files[name] = (data, "MP3", "MPEG_LAYER_III", rate)
    for name, (data, fmt, subtype, rate) in files.items():
        path = OUT / name
        sf.write(str(path), data, rate, format=fmt, subtype=subtype)
        y, got_sr = librosa.load(str(path), sr=None)
        assert got_sr == rate, (name, got_sr)
        t[f"load_{path.stem}"] = torch.from_numpy(np.ascontiguousarray(y))
    save_file({k: v.float().contiguous() for k, v in t.items()}, str(OUT / "resample_ref.safetensors"),
              metadata={"librosa": librosa.__version__, "soundfile": sf.__version__,
                        "libsndfile": sf.__libsndfile_version__, "torch": torch.__version__})
    for k, v in sorted(t.items()):
        print(k, tuple(v.shape))


if __name__ == "__main__":
    main()
