"""Times the reference S3Gen (chatterbox-tts 0.1.7, PyTorch, CPU): speech tokens -> 24 kHz waveform.

usage: s3gen_reference_speed.py MODEL_DIR TOKENS [THREADS]
MODEL_DIR holds s3gen.safetensors (real dimensions) and inputs.safetensors (prompt_token, prompt_feat,
embedding, speech_tokens), as tools/reference/generate.py s3gen_wav --full-size writes them. The
speech tokens are repeated or cut to TOKENS (25 per second of audio). One warm-up call, then one timed
call of S3Gen.inference (flow with 10 CFM steps + HiFT + trim/fade), as tts.py runs it.
Prints one JSON line: audio seconds, wall seconds, real-time factor (wall / audio).
"""
import json
import sys
import time

import torch
from safetensors.torch import load_file

from chatterbox.models.s3gen import S3Gen


def main():
    model_dir, tokens = sys.argv[1], int(sys.argv[2])
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    torch.set_num_threads(threads)
    s3 = S3Gen()
    s3.load_state_dict(load_file(f"{model_dir}/s3gen.safetensors"), strict=False)
    s3.eval()
    inputs = load_file(f"{model_dir}/inputs.safetensors")
    ref = {
        "prompt_token": inputs["prompt_token"],
        "prompt_token_len": torch.tensor([inputs["prompt_token"].shape[1]]),
        "prompt_feat": inputs["prompt_feat"],
        "prompt_feat_len": None,
        "embedding": inputs["embedding"],
    }
    speech = inputs["speech_tokens"].reshape(-1)
    speech = speech.repeat((tokens + speech.numel() - 1) // speech.numel())[:tokens].unsqueeze(0)
    torch.manual_seed(1)
    with torch.inference_mode():
        s3.inference(speech[:, :25], ref_dict=ref)  # warm-up (allocations, oneDNN primitives)
        start = time.perf_counter()
        wav, _ = s3.inference(speech, ref_dict=ref)
        seconds = time.perf_counter() - start
    audio = wav.shape[-1] / 24000
    print(json.dumps({"audio_seconds": audio, "seconds": seconds, "rtf": seconds / audio, "threads": threads}))


if __name__ == "__main__":
    main()
