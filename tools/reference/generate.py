#!/usr/bin/env python3
"""Generate one reference fixture case with chatterbox-tts==0.1.7 (random weights, the package's own classes).

  tools/reference/.venv/bin/python tools/reference/generate.py KIND --seed N --out DIR \
      [--dim key=value ...] [--param key=value ...] [--full-size] [--threads N]

KIND is one of: t3_cond_enc t3_prefill t3_decode_teacher_forced t3_sampler s3gen_encoder s3gen_estimator
s3gen_cfm hift s3gen_wav cond_mel voice_encoder s3_tokenizer campplus prepare_conditionals voice_conversion text
tts_generate.
--dim sets a model dimension (names as in config.json, see README.md); values are parsed as JSON.
--param sets a case parameter (lengths, sampler settings, ...).
--full-size ignores --dim and uses the real Chatterbox dimensions (for smoke runs / benchmarks; not committed).
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

KINDS = ["t3_cond_enc", "t3_prefill", "t3_decode_teacher_forced", "t3_sampler", "s3gen_encoder", "s3gen_estimator",
         "s3gen_cfm", "hift", "s3gen_wav", "cond_mel", "voice_encoder", "s3_tokenizer", "campplus",
         "prepare_conditionals", "voice_conversion", "text", "tts_generate"]


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=KINDS)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dim", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--description", default=None)
    ap.add_argument("--full-size", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    from refgen.common import Case, setup_determinism, parse_kv
    setup_determinism(args.seed, args.threads)
    import logging
    logging.disable(logging.WARNING)
    dims = {} if args.full_size else parse_kv(args.dim)
    params = parse_kv(args.param)
    # the recorded command is the one given, with --out made relative to the repository root when possible
    rec_argv = list(argv)
    case = Case(Path(args.out), args.kind, args.seed, rec_argv, args.description or "")

    if args.kind.startswith("t3_"):
        from refgen import t3_cases as m
        fn = {"t3_cond_enc": m.case_t3_cond_enc, "t3_prefill": m.case_t3_prefill,
              "t3_decode_teacher_forced": m.case_t3_decode, "t3_sampler": m.case_t3_sampler}[args.kind]
    elif args.kind in ("s3gen_encoder", "s3gen_estimator", "s3gen_cfm", "hift", "s3gen_wav"):
        from refgen import s3gen_cases as m
        fn = getattr(m, "case_" + args.kind)
    elif args.kind in ("cond_mel", "voice_encoder", "s3_tokenizer", "campplus"):
        from refgen import cond_cases as m
        fn = getattr(m, "case_" + args.kind)
    elif args.kind in ("prepare_conditionals", "voice_conversion"):
        from refgen import clone_cases as m
        fn = getattr(m, "case_" + args.kind)
    elif args.kind == "tts_generate":
        from refgen import generate_cases as m
        fn = m.case_tts_generate
    else:
        from refgen import text_cases as m
        fn = m.case_text
    if not case.description:
        case.description = default_description(args.kind, args.full_size)
    fn(case, dims, params, args.seed)
    case.write()


def default_description(kind, full):
    d = {
        "t3_cond_enc": "T3 conditioning encoder (speaker proj | perceiver(prompt) | emotion)",
        "t3_prefill": "T3 prefill: conditioning + text (CFG rows) + 2 BOS, logits of both CFG rows",
        "t3_decode_teacher_forced": "T3 decode steps replaying the reference's own sampled tokens; per-step logits, CFG and processed probabilities",
        "t3_sampler": "T3 sampler: CFG combine and logits processors for one setting",
        "s3gen_encoder": "S3Gen flow: token embedding + UpsampleConformerEncoder + encoder_proj (mu)",
        "s3gen_estimator": "S3Gen CFM estimator (ConditionalDecoder) at one (x, t), CFG batch of 2",
        "s3gen_cfm": "S3Gen flow inference: mel from tokens with injected CFM noise z",
        "hift": "HiFT vocoder with injected SineGen phases and noise",
        "s3gen_wav": "S3Gen.inference: tokens -> mel -> HiFT -> trim/fade wav, all RNG injected",
        "cond_mel": "S3Gen 24 kHz log-mel (prompt_feat) and the two resamplers for a synthesised waveform",
        "voice_encoder": "VoiceEncoder speaker embedding from a synthesised 16 kHz waveform",
        "s3_tokenizer": "S3TokenizerV2 log-mel and tokens from a synthesised 16 kHz waveform",
        "campplus": "CAMPPlus fbank and x-vector from a synthesised 16 kHz waveform",
        "prepare_conditionals": "ChatterboxTTS.prepare_conditionals on a reference audio file: the whole voice-cloning path",
        "voice_conversion": "ChatterboxVC.generate: source speech -> S3 tokens -> S3Gen in the target's voice",
        "text": "punc_norm and EnTokenizer ids for tricky strings",
        "tts_generate": "ChatterboxTTS.generate(text) end to end: text front-end, T3 (sampled, logits per step), "
                        "post-processing, S3Gen; the pre-watermark waveform",
    }[kind]
    return ("FULL-SIZE (real dimensions): " if full else "") + d


if __name__ == "__main__":
    main()
