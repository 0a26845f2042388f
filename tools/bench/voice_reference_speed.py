"""Times the reference's voice cloning (chatterbox-tts 0.1.7, PyTorch, CPU): the real
`ChatterboxTTS.prepare_conditionals` on an audio file, with the full-size VoiceEncoder and S3Gen
(its S3Tokenizer and CAMPPlus) at random weights; T3 takes no part in it (only its prompt length, 150).

usage: voice_reference_speed.py WAV RUNS [THREADS]
Prints one JSON line: runs, the seconds of each (after one warm-up), min and median.
"""
import json
import statistics
import sys
import time
import types
import warnings

import torch

warnings.filterwarnings("ignore")


def main():
    wav, runs = sys.argv[1], int(sys.argv[2])
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from chatterbox.tts import ChatterboxTTS
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.voice_encoder import VoiceEncoder

    s3gen, ve = S3Gen().eval(), VoiceEncoder().eval()
    tts = types.SimpleNamespace(
        s3gen=s3gen, ve=ve, device="cpu",
        t3=types.SimpleNamespace(hp=types.SimpleNamespace(speech_cond_prompt_len=150)),
        DEC_COND_LEN=ChatterboxTTS.DEC_COND_LEN, ENC_COND_LEN=ChatterboxTTS.ENC_COND_LEN)
    times = []
    with torch.inference_mode():
        for i in range(runs + 1):
            start = time.perf_counter()
            ChatterboxTTS.prepare_conditionals(tts, wav)
            if i > 0:  # the first run warms up
                times.append(time.perf_counter() - start)
    print(json.dumps({"engine": "reference", "threads": threads, "runs": times,
                      "min_s": min(times), "median_s": statistics.median(times)}))


if __name__ == "__main__":
    main()
