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


def case_voice_conversion(case: Case, dims, params, seed):
    """ChatterboxVC.generate(source, target_voice_path) (vc.py:79-107): the source speech is tokenised at 16 kHz
    and spoken again by S3Gen in the target's voice (set_target_voice: embed_ref of the target's first 10 s).
    The real method runs unmodified except for the watermarker, replaced by the identity (the engine does not
    watermark); the flow noise and SineGen draws are recorded as in s3gen_wav."""
    from chatterbox.vc import ChatterboxVC
    from .s3gen_cases import FlowCapture, HiftCapture, hift_expect

    s3, full, s3_cfg = build_s3gen(dims)
    with torch.no_grad():
        pd = s3.tokenizer.quantizer._codebook.project_down
        pd.weight.normal_(0.0, 2.0 / pd.in_features ** 0.5)
    s3.eval()
    case.config = s3_cfg
    write_s3gen(case, s3, ("flow", "mel2wav", "tokenizer", "speaker_encoder"))

    files = {}
    for role, off in (("source", 0), ("target", 1)):
        secs = float(params.get(f"{role}_seconds", 2.0))
        rate = int(params.get(f"{role}_rate", 16000))
        channels = int(params.get(f"{role}_channels", 1))
        subtype = str(params.get(f"{role}_subtype", "PCM_16"))
        audio = _reference_audio(secs, rate, channels, seed + 1000 * off)
        path = case.file(f"{role}.wav")
        sf.write(str(path), audio if channels > 1 else audio[:, 0], rate, subtype=subtype)
        files[role] = path
        case.params.update({f"{role}_seconds": secs, f"{role}_rate": rate, f"{role}_channels": channels,
                            f"{role}_subtype": subtype, f"{role}_file": path.name})

    vc = ChatterboxVC.__new__(ChatterboxVC)
    vc.sr, vc.s3gen, vc.device, vc.ref_dict = 24000, s3, "cpu", None
    vc.watermarker = types.SimpleNamespace(apply_watermark=lambda wav, sample_rate: wav)
    tok_calls = []  # set_target_voice tokenises the target first, then generate the source
    h = s3.tokenizer.register_forward_hook(lambda m, i, o: tok_calls.append(o[0].detach().clone()) and None)
    torch.manual_seed(seed)
    with FlowCapture(s3) as fc:
        with HiftCapture(s3) as hc:
            wav = vc.generate(str(files["source"]), target_voice_path=str(files["target"]))
    h.remove()
    ref = vc.ref_dict
    src16, _ = librosa.load(str(files["source"]), sr=16000)
    case.input("z", fc.d["z"])
    case.expect("source_16k", torch.from_numpy(src16).view(1, -1), compare="rel_l2",
                note="librosa.load(source, sr=16000): the tokenizer's input")
    assert len(tok_calls) == 2, len(tok_calls)
    case.expect("speech_tokens", tok_calls[1].long(), compare="exact", note="(1, T) S3 tokens of source_16k")
    case.expect("prompt_token", ref["prompt_token"].long(), compare="exact", note="target: (1, Tp) S3 tokens")
    case.expect("prompt_feat", ref["prompt_feat"].float(), note="target: (1, 2Tp, 80) S3Gen log-mel")
    case.expect("embedding", ref["embedding"].float(), note="target: (1, spk_embed_dim) CAMPPlus x-vector")
    case.expect("mel", hc.d["mel"], note="flow output fed to HiFT, (1, 80, 2T)")
    hift_expect(case, hc)
    case.expect("wav", wav.float().view(1, -1), compare="rel_l2",
                note="ChatterboxVC.generate output without the watermark (S3Gen.inference: HiFT wav with trim/fade)")
    case.params.update({"n_timesteps": 10, "s3gen_parts": ["flow", "mel2wav", "speaker_encoder", "tokenizer"]})
