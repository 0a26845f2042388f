"""Conditioning-from-audio cases: cond_mel, voice_encoder, s3_tokenizer, campplus.

The input is a short waveform synthesised here (harmonic tones with a gliding pitch, a pause, noise)."""
from __future__ import annotations

import librosa
import numpy as np
import torch

from chatterbox.models.s3gen.s3gen import get_resampler
from chatterbox.models.s3gen.utils.mel import mel_spectrogram
from chatterbox.models.s3gen.xvector import extract_feature
from chatterbox.models.voice_encoder import VoiceEncoder
from chatterbox.models.voice_encoder.config import VoiceEncConfig
from chatterbox.models.voice_encoder.melspec import melspectrogram

from .common import Case, save_state_dict, synth_wave
from .s3gen_cases import _put, build_s3gen, write_s3gen, write_conds, random_ref_dict

VE_DEFAULTS = {"ve_hidden_size": 256, "speaker_embed_size": 256, "num_mels": 40, "ve_partial_frames": 160}


# ---------------------------------------------------------------- cond_mel
def case_cond_mel(case: Case, dims, params, seed):
    secs = float(params.get("seconds", 1.0))
    wav24 = synth_wave(secs, 24000, seed)
    case.input("wav_24k", wav24.view(1, -1))
    # S3Token2Mel.embed_ref: prompt_feat = mel_extractor(ref_wav_24).transpose(1, 2) (s3gen.py:143)
    feat = mel_spectrogram(wav24.view(1, -1)).transpose(1, 2)
    case.expect("prompt_feat", feat, note="(1, floor(L/480), 80) natural-log mel, utils/mel.py")
    # the two resamplers of prepare_conditionals / embed_ref
    w16_ta = get_resampler(24000, 16000, "cpu")(wav24.view(1, -1))
    case.expect("wav_16k_torchaudio", w16_ta, note="torchaudio Resample(24000,16000) as in embed_ref (s3gen.py:149)",
                abs_f32=1e-6)
    w16_lr = librosa.resample(wav24.numpy(), orig_sr=24000, target_sr=16000)
    case.expect("wav_16k_librosa", torch.from_numpy(w16_lr).view(1, -1),
                note="librosa.resample (soxr_hq) as in prepare_conditionals (tts.py:186); soxr, hard to port: "
                     "the engine may take it as given", compare="rel_l2", abs_f32=1e-6)
    case.params.update({"seconds": secs, "sample_rate": 24000, "n_fft": 1920, "hop": 480, "n_mels": 80})


# ---------------------------------------------------------------- voice_encoder
def build_ve(dims):
    unknown = set(dims) - set(VE_DEFAULTS)
    if unknown:
        raise SystemExit(f"unknown VoiceEncoder dims: {sorted(unknown)}")
    hp = VoiceEncConfig()
    full = {**VE_DEFAULTS, **dims}
    for k, v in full.items():
        setattr(hp, k, v)
    ve = VoiceEncoder(hp)
    ve.eval()
    return ve, {k: v for k, v in full.items() if v != VE_DEFAULTS[k]}


def case_voice_encoder(case: Case, dims, params, seed):
    ve, cfg = build_ve(dims)
    case.config = cfg
    save_state_dict(ve, case.file("ve.safetensors"))
    secs = float(params.get("seconds", 2.0))
    wav16 = synth_wave(secs, 16000, seed).numpy()
    case.input("wav_16k", torch.from_numpy(wav16).view(1, -1))
    trimmed = librosa.effects.trim(wav16, top_db=20)[0]
    mel = melspectrogram(trimmed, ve.hp).T  # (T, M), voice_encoder.py:270
    partial_out = []
    h = ve.register_forward_hook(lambda m, i, o: partial_out.append(o.detach().clone()))
    # tts.py:198-199
    emb = torch.from_numpy(ve.embeds_from_wavs([wav16], sample_rate=16000))
    emb = emb.mean(axis=0, keepdim=True)
    h.remove()
    case.expect("trimmed_wav", torch.from_numpy(trimmed).view(1, -1),
                note="librosa.effects.trim(top_db=20) output; its length decides the partials")
    case.expect("mel", torch.from_numpy(np.ascontiguousarray(mel)).unsqueeze(0),
                note="(1, T, 40) linear-amplitude power mel of the trimmed wav (melspec.py)")
    case.expect("partial_embeds", torch.cat(partial_out), note="(n_partials, E) L2-normalised per-partial embeddings")
    case.expect("speaker_emb", emb, note="(1, E) mean of partials, L2-normalised, then mean over utterances")
    case.params.update({"seconds": secs, "rate": 1.3, "min_coverage": 0.8, "trim_top_db": 20,
                        "n_partials": int(torch.cat(partial_out).shape[0]), "trimmed_len": int(len(trimmed))})


# ---------------------------------------------------------------- s3_tokenizer
def case_s3_tokenizer(case: Case, dims, params, seed):
    gen = torch.Generator().manual_seed(seed + 1)
    s3, full, cfg = build_s3gen(dims)
    with torch.no_grad():
        # FSQ on random features would round almost everything to 0: scale project_down so tanh spreads
        pd = s3.tokenizer.quantizer._codebook.project_down
        pd.weight.normal_(0.0, 2.0 / pd.in_features ** 0.5)
    case.config = cfg
    write_s3gen(case, s3, None if not cfg else ("tokenizer",))
    write_conds(case, full, gen, random_ref_dict(full, gen, 4))
    secs = float(params.get("seconds", 1.6))
    wav16 = synth_wave(secs, 16000, seed)
    case.input("wav_16k", wav16.view(1, -1))
    tok = s3.tokenizer
    cap = {}
    h1 = tok.encoder.register_forward_hook(lambda m, i, o: _put(cap, "hidden", o[0].detach().clone()))
    pd = tok.quantizer._codebook.project_down
    h2 = pd.register_forward_hook(lambda m, i, o: _put(cap, "proj", o.detach().clone()))
    tokens, lens = tok.forward([wav16])
    h1.remove(); h2.remove()
    max_len = int(params.get("max_len", 10))
    tokens_ml, _ = tok.forward([wav16], max_len=max_len)
    log_mel = tok.log_mel_spectrogram(wav16.view(1, -1))
    case.expect("log_mel", log_mel, note="(1, 128, T_mel) Whisper-style log-mel, last STFT frame dropped")
    case.expect("encoder_out", cap["hidden"], note="(1, T_tok, n_state) AudioEncoderV2 output")
    pre = torch.tanh(cap["proj"].float()) * 0.9990000128746033
    case.expect("fsq_pre_round", pre.view(1, -1, 8),
                note="tanh(project_down(h))*0.999 before round(); a token can legitimately flip where |x| ~ 0.5")
    case.expect("tokens", tokens, note="(1, T_tok) int64 codes in [0, 6560]", compare="exact")
    case.expect("tokens_max_len", tokens_ml, note=f"forward(..., max_len={max_len}): mel cut to 4*max_len frames",
                compare="exact")
    margin = float((pre.abs() - 0.5).abs().min())
    case.params.update({"seconds": secs, "max_len": max_len, "n_tokens": int(tokens.shape[1]),
                        "fsq_min_distance_to_rounding_boundary": margin})


# ---------------------------------------------------------------- campplus
def case_campplus(case: Case, dims, params, seed):
    gen = torch.Generator().manual_seed(seed + 1)
    s3, full, cfg = build_s3gen(dims)
    case.config = cfg
    write_s3gen(case, s3, None if not cfg else ("speaker_encoder",))
    write_conds(case, full, gen, random_ref_dict(full, gen, 4))
    secs = float(params.get("seconds", 1.5))
    wav16 = synth_wave(secs, 16000, seed)
    case.input("wav_16k", wav16.view(1, -1))
    feats, _, _ = extract_feature(wav16.view(1, -1))
    with torch.inference_mode():
        xvec = s3.speaker_encoder.inference(wav16.view(1, -1))  # as embed_ref (s3gen.py:152)
    case.expect("fbank", feats, note="(1, T, 80) kaldi fbank minus its time mean (xvector.py:45-58)")
    case.expect("xvector", xvec, note="(1, spk_embed_dim) CAMPPlus embedding (not normalised)")
    case.params.update({"seconds": secs})
