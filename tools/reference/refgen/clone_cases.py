"""End-to-end voice cloning case: prepare_conditionals.

A reference recording is synthesised here (speech-like tones, per channel), written as an audio file
(`ref.<ext>`, soundfile: any rate, channel count and subtype), and the real
`ChatterboxTTS.prepare_conditionals` (tts.py:182-206) runs on that file, unmodified, with tiny random
VoiceEncoder, S3Tokenizer and CAMPPlus models. Its `self` is a namespace holding exactly what the method
reads (s3gen, ve, t3.hp.speech_cond_prompt_len, device and the two length constants), so no T3 is built."""
from __future__ import annotations

import types

import librosa
import numpy as np
import soundfile as sf
import torch

from chatterbox.tts import ChatterboxTTS
from chatterbox.models.s3gen.s3gen import get_resampler

from .common import Case, save_state_dict, synth_wave
from .cond_cases import build_ve
from .s3gen_cases import build_s3gen, write_s3gen


def _reference_audio(seconds, rate, channels, seed):
    """(N, channels) float64 in [-1, 1): the speech-like test signal, a different seed and gain per channel."""
    cols = [synth_wave(seconds, rate, seed + 17 * c).double().numpy() * (1.0 - 0.3 * c) for c in range(channels)]
    return np.stack(cols, axis=1)


def case_prepare_conditionals(case: Case, dims, params, seed):
    ve_dims = {k: v for k, v in dims.items() if k.startswith("ve_") or k == "speaker_embed_size"}
    s3_dims = {k: v for k, v in dims.items() if k not in ve_dims}
    ve, ve_cfg = build_ve(ve_dims)
    s3, full, s3_cfg = build_s3gen(s3_dims)
    with torch.no_grad():
        # as in the s3_tokenizer case: spread project_down so FSQ does not round nearly everything to 0
        pd = s3.tokenizer.quantizer._codebook.project_down
        pd.weight.normal_(0.0, 2.0 / pd.in_features ** 0.5)
    s3.eval()
    case.config = {**ve_cfg, **s3_cfg}
    save_state_dict(ve, case.file("ve.safetensors"))
    write_s3gen(case, s3, ("tokenizer", "speaker_encoder"))

    secs = float(params.get("seconds", 3.0))
    rate = int(params.get("rate", 16000))
    channels = int(params.get("channels", 1))
    subtype = str(params.get("subtype", "PCM_16"))
    ext = str(params.get("format", "wav"))
    plen = int(params.get("speech_cond_prompt_len", 150))
    exaggeration = float(params.get("exaggeration", 0.5))
    audio = _reference_audio(secs, rate, channels, seed)
    path = case.file(f"ref.{ext}")
    sf.write(str(path), audio if channels > 1 else audio[:, 0], rate, subtype=subtype)

    tts = types.SimpleNamespace(
        s3gen=s3, ve=ve, device="cpu",
        t3=types.SimpleNamespace(hp=types.SimpleNamespace(speech_cond_prompt_len=plen)),
        DEC_COND_LEN=ChatterboxTTS.DEC_COND_LEN, ENC_COND_LEN=ChatterboxTTS.ENC_COND_LEN)
    with torch.inference_mode():
        ChatterboxTTS.prepare_conditionals(tts, str(path), exaggeration=exaggeration)
    conds = tts.conds

    # the intermediate signals, recomputed the same way (tts.py:184-188, s3gen.py:149), for diagnosis
    wav24, _ = librosa.load(str(path), sr=24000)
    wav16 = librosa.resample(wav24, orig_sr=24000, target_sr=16000)
    ref24 = wav24[:ChatterboxTTS.DEC_COND_LEN]
    ref16 = get_resampler(24000, 16000, "cpu")(torch.from_numpy(ref24).view(1, -1))
    case.expect("wav_24k", torch.from_numpy(wav24).view(1, -1), compare="rel_l2",
                note="librosa.load(path, sr=24000): soundfile decode, mean over channels, soxr_hq")
    case.expect("wav_16k", torch.from_numpy(wav16).view(1, -1), compare="rel_l2",
                note="librosa.resample(wav_24k, 24000, 16000) (soxr_hq): the VoiceEncoder's and T3 prompt's input")
    case.expect("ref_16k", ref16, compare="rel_l2",
                note="torchaudio Resample(24000, 16000) of wav_24k[:10 s]: CAMPPlus's and the S3Gen prompt tokens' input")
    t3c, gen = conds.t3, conds.gen
    case.expect("speaker_emb", t3c.speaker_emb.float(), note="(1, E) VoiceEncoder embedding (T3Cond.speaker_emb)")
    case.expect("cond_prompt_speech_tokens", t3c.cond_prompt_speech_tokens.long(),
                note="(1, P) S3 tokens of wav_16k[:6 s], max_len=speech_cond_prompt_len", compare="exact")
    case.expect("emotion_adv", t3c.emotion_adv.float(), note="(1, 1, 1) exaggeration")
    case.expect("prompt_token", gen["prompt_token"].long(), note="(1, Tp) S3 tokens of ref_16k", compare="exact")
    case.expect("prompt_token_len", gen["prompt_token_len"].long(), note="(1,)", compare="exact")
    case.expect("prompt_feat", gen["prompt_feat"].float(), note="(1, 2Tp, 80) S3Gen log-mel of wav_24k[:10 s]")
    case.expect("embedding", gen["embedding"].float(), note="(1, spk_embed_dim) CAMPPlus x-vector of ref_16k")
    case.params.update({"seconds": secs, "rate": rate, "channels": channels, "subtype": subtype, "format": ext,
                        "file": path.name, "speech_cond_prompt_len": plen, "exaggeration": exaggeration,
                        "s3gen_parts": ["speaker_encoder", "tokenizer"]})
