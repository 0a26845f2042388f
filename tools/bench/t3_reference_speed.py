"""Times the reference T3 (chatterbox-tts 0.1.7, PyTorch, CPU) generating speech tokens with CFG.

usage: t3_reference_speed.py MODEL_DIR TOKENS [THREADS]
MODEL_DIR holds t3_cfg.safetensors (real dimensions) and inputs.safetensors (speaker_emb,
cond_prompt_speech_tokens, text_tokens), as tools/reference/generate.py --full-size writes them.
Prints one JSON line: tokens generated, seconds (prefill included), tokens per second.
"""
import json
import sys
import time

import torch
from safetensors.torch import load_file

from chatterbox.models.t3 import T3
from chatterbox.models.t3.modules.cond_enc import T3Cond


def main():
    model_dir, tokens = sys.argv[1], int(sys.argv[2])
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    torch.set_num_threads(threads)
    t3 = T3()
    t3.load_state_dict(load_file(f"{model_dir}/t3_cfg.safetensors"))
    t3.eval()
    inputs = load_file(f"{model_dir}/inputs.safetensors")
    cond = T3Cond(
        speaker_emb=inputs["speaker_emb"],
        cond_prompt_speech_tokens=inputs["cond_prompt_speech_tokens"],
        emotion_adv=0.5 * torch.ones(1, 1, 1),
    )
    text = inputs["text_tokens"]
    torch.manual_seed(1)
    with torch.inference_mode():
        start = time.perf_counter()
        out = t3.inference(
            t3_cond=cond,
            text_tokens=text,
            max_new_tokens=tokens,
            temperature=0.8,
            cfg_weight=0.5,
            repetition_penalty=1.2,
            min_p=0.05,
            top_p=1.0,
        )
        seconds = time.perf_counter() - start
    n = int(out.shape[-1])
    print(json.dumps({"tokens": n, "seconds": seconds, "tokens_per_second": n / seconds, "threads": threads}))


if __name__ == "__main__":
    main()
