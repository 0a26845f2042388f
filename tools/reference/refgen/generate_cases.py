"""End-to-end case: tts_generate, text -> the waveform `ChatterboxTTS.generate` returns.

A tiny random T3 and S3Gen (the builders of t3_cases / s3gen_cases), a `tokenizer.json` built as in the
`text` kind, and a voice are put into a real `ChatterboxTTS`, and `generate(text, ...)` itself runs
(tts.py:208-272): punc_norm, EnTokenizer, the CFG text rows with SOT/EOT, `T3.inference` with its own
sampler (torch.multinomial under the seed), `drop_invalid_tokens`, the `tokens < 6561` filter,
`S3Gen.inference` (flow, HiFT, trim_fade). Nothing on that path is re-implemented; it is observed:

- the T3 backend's forward calls (per-step logits of both CFG rows) and torch.multinomial's draws
  (`t3_cases.Capture`), the flow's noise z and HiFT's SineGen draws (`s3gen_cases.FlowCapture`,
  `HiftCapture`), the arguments T3 and S3Gen are called with;
- the waveform handed to the watermarker (tts.py:271): `perth.PerthImplicitWatermarker` is replaced,
  while the `ChatterboxTTS` is constructed, by a tap that records the waveform and returns it unchanged.
  Perth does no work; the recorded `wav` is the PRE-watermark waveform (spec section 7).

Three things are adapted to the tiny models, each only as far as it must be:

1. `max_new_tokens`: generate hard-codes 1000 (tts.py:249); the call to `T3.inference` is intercepted and
   given `params.max_new_tokens` instead, so that a random T3 that never samples its stop token ends
   within the size of a fixture (and within `speech_pos_emb`).
2. `drop_invalid_tokens` (s3tokenizer/__init__.py:16-30) compares with the module constants SOS/EOS =
   6561/6562; they are set to the tiny T3's start/stop speech tokens while generate runs (the function
   reads them from its module's globals at call time).
3. The literal `speech_tokens < 6561` (tts.py:262) cannot follow a tiny vocabulary. The tiny models keep
   the real relations instead: `start_speech_token == flow_vocab_size` (6561 in the real model) and
   `stop_speech_token == start + 1`, and `speech_tokens_dict_size == stop + 1`, so the T3 can sample
   nothing above its stop token (the real head is 8194 wide; the ids 6563.. it could sample are what
   that literal drops). The filter then keeps every token in both implementations.

The voice is either `builtin` (random conditionals saved as `conds.pt`, as the t3/s3gen kinds make them)
or `clone`: generate's own `audio_prompt_path` branch runs `prepare_conditionals` (tts.py:182-206) on a
synthesised recording with a tiny VoiceEncoder, S3 tokenizer and CAMPPlus that stay in memory (only the
resulting conditionals are stored, as `conds.pt`). The tokenizer's FSQ is restricted to its first
`log3(flow_vocab_size)` digits (the others pinned to 0 by project_down's bias) so its codes fit the
tiny vocabularies."""
from __future__ import annotations

import contextlib
import json
import math
import tempfile
from pathlib import Path

import soundfile as sf
import torch

import chatterbox.tts as tts_mod
import chatterbox.models.s3tokenizer as s3tok_mod
from chatterbox.tts import ChatterboxTTS, Conditionals, punc_norm
from chatterbox.models.tokenizers import EnTokenizer
from chatterbox.models.t3.modules.cond_enc import T3Cond

from .common import Case, save_state_dict, synth_wave
from .cond_cases import build_ve
from .s3gen_cases import (S3GEN_DEFAULTS, FlowCapture, HiftCapture, build_s3gen, hift_expect, random_ref_dict,
                          write_s3gen)
from .t3_cases import SAMPLER_DEFAULTS, Capture, build_t3, english_sampler, random_t3_cond, t3_defaults
from .text_cases import build_tokenizer_json

# what generate passes to T3.inference (tts.py:249)
REFERENCE_MAX_NEW_TOKENS = 1000


class WatermarkTap:
    """Stands in for `perth.PerthImplicitWatermarker()` (tts.py:126): `apply_watermark` records the
    waveform generate hands it (tts.py:271) and returns it unchanged."""

    def __init__(self):
        self.calls = []

    def apply_watermark(self, wav, sample_rate):
        self.calls.append((wav.copy(), sample_rate))
        return wav


@contextlib.contextmanager
def tiny_speech_ids(start, stop):
    """drop_invalid_tokens' SOS/EOS set to the tiny T3's speech BOS/EOS while generate runs."""
    assert tts_mod.drop_invalid_tokens.__globals__ is vars(s3tok_mod)
    old = s3tok_mod.SOS, s3tok_mod.EOS
    s3tok_mod.SOS, s3tok_mod.EOS = start, stop
    try:
        yield
    finally:
        s3tok_mod.SOS, s3tok_mod.EOS = old


@contextlib.contextmanager
def observed(obj, name, before=None, after=None):
    """Wraps the bound method `obj.name` (an instance attribute shadows it): `before(kwargs)` may
    adjust the keyword arguments, `after(kwargs, result)` observes the result."""
    orig = getattr(obj, name)

    def wrapped(*args, **kwargs):
        assert not args, f"{name}: positional arguments are not expected"
        if before is not None:
            before(kwargs)
        out = orig(**kwargs)
        if after is not None:
            after(kwargs, out)
        return out
    setattr(obj, name, wrapped)
    try:
        yield
    finally:
        delattr(obj, name)


def make_tts(t3, s3, ve, tokenizer, conds):
    """A real ChatterboxTTS whose watermarker is the tap."""
    tap = WatermarkTap()
    orig = tts_mod.perth.PerthImplicitWatermarker
    tts_mod.perth.PerthImplicitWatermarker = lambda: tap
    try:
        tts = ChatterboxTTS(t3, s3, ve, tokenizer, "cpu", conds=conds)
    finally:
        tts_mod.perth.PerthImplicitWatermarker = orig
    assert tts.watermarker is tap
    return tts, tap


def split_dims(dims):
    t3_keys, s3_keys = set(t3_defaults()), set(S3GEN_DEFAULTS)
    unknown = set(dims) - t3_keys - s3_keys
    if unknown:
        raise SystemExit(f"unknown dims: {sorted(unknown)}")
    return {k: v for k, v in dims.items() if k in t3_keys}, {k: v for k, v in dims.items() if k in s3_keys}


def check_vocabularies(t3f, s3f, n_text):
    start, stop, V = t3f["start_speech_token"], t3f["stop_speech_token"], t3f["speech_tokens_dict_size"]
    if not (start == s3f["flow_vocab_size"] and stop == start + 1 and V == stop + 1):
        raise SystemExit("tts_generate needs start_speech_token == flow_vocab_size, stop_speech_token == start + 1 and "
                         f"speech_tokens_dict_size == stop + 1 (got {start}, {stop}, {V}, flow vocab "
                         f"{s3f['flow_vocab_size']}): see the module docstring")
    if t3f["text_tokens_dict_size"] < n_text:
        raise SystemExit(f"text_tokens_dict_size {t3f['text_tokens_dict_size']} < tokenizer vocabulary {n_text}")


def restrict_fsq(s3, n_codes):
    """Spread project_down as the s3_tokenizer kind does, then pin the FSQ digits k.. to 0 (weights 0,
    bias -5: round(0.999·tanh(-5)) + 1 = 0) so that codes are < 3^k <= n_codes."""
    k = int(math.floor(math.log(n_codes, 3) + 1e-9))
    pd = s3.tokenizer.quantizer._codebook.project_down
    with torch.no_grad():
        pd.weight.normal_(0.0, 2.0 / pd.in_features ** 0.5)
        pd.weight[k:] = 0.0
        pd.bias[k:] = -5.0
    return 3 ** k


def case_tts_generate(case: Case, dims, params, seed):
    gen = torch.Generator().manual_seed(seed + 1)
    t3_dims, s3_dims = split_dims(dims)
    tj = build_tokenizer_json(int(params.get("tokenizer_vocab_size", 704)))
    t3, t3f, t3_cfg = build_t3(t3_dims)
    s3, s3f, s3_cfg = build_s3gen(s3_dims)
    check_vocabularies(t3f, s3f, len(tj["model"]["vocab"]))
    stop_gain = float(params.get("stop_logit_gain", 1.0))
    with torch.no_grad():
        # a random T3 almost never samples its stop token (one id among V); a larger speech_head row makes
        # its logit swing widely, so that some steps make it likely
        t3.speech_head.weight[t3f["stop_speech_token"]] *= stop_gain
    case.config = {**t3_cfg, **s3_cfg}
    save_state_dict(t3, case.file("t3_cfg.safetensors"))
    write_s3gen(case, s3, ("flow", "mel2wav"))
    tok_path = case.file("tokenizer.json")
    with open(tok_path, "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False, indent=1)
        f.write("\n")

    text = str(params["text"])
    voice = str(params.get("voice", "builtin"))
    max_new = int(params.get("max_new_tokens", 16))
    sampler = {k: float(params.get(k, v)) for k, v in SAMPLER_DEFAULTS.items()}
    exaggeration = float(params.get("exaggeration", 0.5))
    require = str(params.get("require", "any"))  # "stop": the stop token must be sampled; "cap": it must not
    start, stop = t3f["start_speech_token"], t3f["stop_speech_token"]

    ve, ref_path, tmp = None, None, None
    if voice == "builtin":
        cond = random_t3_cond(t3f, gen, params.get("prompt_len"), exaggeration=0.5)
        ref = random_ref_dict(s3f, gen, int(params.get("n_prompt_tokens", 8)))
        conds = Conditionals(cond, ref)
        conds.save(case.file("conds.pt"))  # before generate: T3 caches the prompt embedding on the T3Cond
    elif voice == "clone":
        ve, _ = build_ve({"ve_hidden_size": int(params.get("ve_hidden_size", 64)),
                          "speaker_embed_size": t3f["speaker_embed_size"]})
        n_codes = restrict_fsq(s3, min(start, s3f["flow_vocab_size"]))
        s3.eval()
        secs, rate = float(params.get("ref_seconds", 1.0)), int(params.get("ref_rate", 24000))
        tmp = tempfile.TemporaryDirectory()
        ref_path = Path(tmp.name) / "ref.wav"
        sf.write(str(ref_path), synth_wave(secs, rate, seed).double().numpy(), rate, subtype="FLOAT")
        conds = None
        case.params.update({"ref_seconds": secs, "ref_rate": rate, "s3_tokenizer_codes": n_codes})
    else:
        raise SystemExit(f"params.voice {voice!r}: builtin or clone")

    tts, tap = make_tts(t3, s3, ve, EnTokenizer(str(tok_path)), conds)
    rec = {}

    def cap_max_new(kw):
        assert kw["max_new_tokens"] == REFERENCE_MAX_NEW_TOKENS, kw["max_new_tokens"]
        kw["max_new_tokens"] = max_new
        c = kw["t3_cond"]
        rec["t3_in"] = dict(text_tokens=kw["text_tokens"].clone(), speaker_emb=c.speaker_emb.clone(),
                            cond_prompt_speech_tokens=c.cond_prompt_speech_tokens.clone(),
                            emotion_adv=c.emotion_adv.clone())

    def s3gen_args(kw):
        rec["speech_tokens"] = kw["speech_tokens"].clone()
        rec["ref_dict"] = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in kw["ref_dict"].items()}

    torch.manual_seed(seed)
    with contextlib.ExitStack() as st:
        st.enter_context(tiny_speech_ids(start, stop))
        st.enter_context(observed(t3, "inference", before=cap_max_new,
                                  after=lambda kw, out: rec.setdefault("raw", out.clone())))
        st.enter_context(observed(s3, "inference", before=s3gen_args))
        cap = st.enter_context(Capture(t3))
        fc = st.enter_context(FlowCapture(s3))
        hc = st.enter_context(HiftCapture(s3))
        out = tts.generate(text, audio_prompt_path=str(ref_path) if ref_path else None, exaggeration=exaggeration,
                           **sampler)
    if tmp is not None:
        tmp.cleanup()
    assert len(tap.calls) == 1 and tap.calls[0][1] == 24000
    wav = torch.from_numpy(tap.calls[0][0]).view(1, -1)
    assert torch.equal(out, wav), "the tap must return the waveform unchanged"

    # ---- T3: the raw draws, their logits, the sampler mirror checked against the real loop
    raw = rec["raw"][0]
    draws = cap.rng.of("multinomial")
    n = raw.numel()
    assert len(draws) == n and torch.equal(torch.cat([d[1].view(-1) for d in draws]), raw)
    stopped = bool(raw[-1] == stop)
    if require == "stop" and not stopped:
        raise SystemExit(f"the stop token was not sampled within {max_new} steps; pick another --seed")
    if require == "cap" and stopped:
        raise SystemExit(f"the stop token was sampled at step {n}; pick another --seed")
    if "require_bos" in params and bool((raw == start).any()) != bool(params["require_bos"]):
        raise SystemExit(f"BOS {'not ' if params['require_bos'] else ''}sampled; pick another --seed")
    step_logits = torch.stack([lg[:, -1, :] for _, lg in cap.fwd[:n]])  # (n, 2, V)
    for i in range(n):
        hist = torch.cat([torch.tensor([[start]]), raw[:i].view(1, -1)], dim=1)
        mirror = english_sampler(step_logits[i, 0:1], step_logits[i, 1:2], hist, **sampler)
        assert torch.equal(mirror["probs"], draws[i][2][0]), f"sampler mirror differs from T3.inference at step {i}"

    # ---- the voice T3 and S3Gen were given
    t3_in, ref = rec["t3_in"], rec["ref_dict"]
    if voice == "clone":
        # the cloned voice as prepare_conditionals made it. Not tts.conds.gen itself: S3Token2Mel.forward casts
        # every tensor of the ref_dict it is given to float32 in place (s3gen.py:207-212), so after generate the
        # voice's prompt_token / prompt_token_len are float32; `ref` was copied when s3gen.inference was called
        c = tts.conds.t3
        Conditionals(T3Cond(speaker_emb=c.speaker_emb, cond_prompt_speech_tokens=c.cond_prompt_speech_tokens,
                            emotion_adv=c.emotion_adv), ref).save(case.file("conds.pt"))
    assert math.isclose(float(t3_in["emotion_adv"].flatten()[0]), exaggeration, rel_tol=1e-6)
    tokens = rec["speech_tokens"].view(1, -1)
    z_draws = fc.rng.of("randn_like")
    assert torch.equal(z_draws[0][1], fc.d["z"]), "the flow's z is its first randn_like"

    # ---- inputs: the text, the voice, the recorded draws
    case.input("text", torch.tensor([ord(ch) for ch in text], dtype=torch.long))
    case.input("speaker_emb", t3_in["speaker_emb"])
    case.input("cond_prompt_speech_tokens", t3_in["cond_prompt_speech_tokens"])
    case.input("emotion_adv", t3_in["emotion_adv"])
    case.input("prompt_token", ref["prompt_token"])
    case.input("prompt_token_len", ref["prompt_token_len"])
    case.input("prompt_feat", ref["prompt_feat"])
    case.input("embedding", ref["embedding"])
    case.input("speech_tokens_raw", raw.view(1, -1))
    case.input("z", fc.d["z"])

    # ---- expected, stage by stage
    norm = punc_norm(text)
    case.expect("normalized", torch.tensor([ord(ch) for ch in norm], dtype=torch.long), compare="exact",
                note="punc_norm(text) as unicode code points (tts.py:234)")
    case.expect("text_tokens", t3_in["text_tokens"].long(), compare="exact",
                note="(2, T+2) what T3.inference received: [SOT] EnTokenizer ids [EOT], duplicated for CFG (tts.py:235-243)")
    case.expect("cond_emb", cap.cond_emb, note="T3CondEnc output (1, len_cond, D), with emotion_adv = exaggeration")
    case.expect("step_logits", step_logits,
                note="(n, 2, V): the logits of both CFG rows each raw token was sampled from; [0] = the prefill's last "
                     "position, [k] = after feeding speech_tokens_raw[k-1] (the unused forward after the last token "
                     "is not recorded)")
    case.expect("speech_tokens", tokens, compare="exact",
                note="(1, m) drop_invalid_tokens(raw) then < 6561 (tts.py:257-262): what S3Gen received")
    case.expect("mu", fc.d["mu"], note="(1, 80, 2(Tp+m)) encoder_proj output, prompt frames first")
    case.expect("mel", hc.d["mel"], note="(1, 80, 2m) flow output fed to HiFT")
    hift_expect(case, hc)
    case.expect("wav", wav, compare="rel_l2",
                note="(1, 960m) the waveform generate hands to apply_watermark (tts.py:271): S3Gen.inference output "
                     "with wav[:, :960] *= trim_fade; no watermark")

    case.params.update({
        "text": text, "normalized": norm, "voice": voice, "exaggeration": exaggeration, **sampler,
        "max_new_tokens": max_new, "stop_logit_gain": stop_gain, "n_raw": n, "stopped_on_stop_token": stopped, "raw_tokens": raw.tolist(),
        "n_speech_tokens": int(tokens.shape[1]), "start_speech_token": start, "stop_speech_token": stop,
        "prompt_len": int(t3_in["cond_prompt_speech_tokens"].shape[1]),
        "n_prompt_tokens": int(ref["prompt_token"].shape[1]), "n_timesteps": 10,
        "tokenizer_vocab_size": len(tj["model"]["vocab"]),
        "max_new_tokens_note": f"generate passes max_new_tokens={REFERENCE_MAX_NEW_TOKENS} (tts.py:249); this case "
                               "replaced it with max_new_tokens in the call to T3.inference",
        "post_processing_note": "drop_invalid_tokens with SOS/EOS = start/stop_speech_token of this T3 (its module "
                                "constants are 6561/6562), then the literal < 6561 (drops nothing: the vocabulary ends "
                                "at the stop token)",
        "teacher_forced_tokens": "speech_tokens_raw: the tokens the reference sampled (torch.multinomial, seeded); "
                                 "replay them instead of sampling",
    })
