"""S3Gen cases: s3gen_encoder, s3gen_estimator, s3gen_cfm, hift, s3gen_wav.

S3Gen() hard-codes the real dimensions, so tiny models are assembled exactly like S3Token2Wav.__init__
(s3gen.py:53-106, 241-259) from the same classes, with the tiny dims passed to their constructors; the
parts whose sizes are hard-coded inside UpsampleConformerEncoder (pre_lookahead_layer and up_layer with 512
channels, 4 up_encoders; upsample_encoder.py:196-232) are rebuilt from the same classes."""
from __future__ import annotations

import math

import torch

from chatterbox.tts import Conditionals
from chatterbox.models.s3gen import S3Gen
from chatterbox.models.s3gen.s3gen import S3Token2Wav
from chatterbox.models.s3gen.const import S3GEN_SR
from chatterbox.models.s3gen.flow import CausalMaskedDiffWithXvec
from chatterbox.models.s3gen.xvector import CAMPPlus
from chatterbox.models.s3gen.utils.mel import mel_spectrogram
from chatterbox.models.s3gen.f0_predictor import ConvRNNF0Predictor
from chatterbox.models.s3gen.hifigan import HiFTGenerator
from chatterbox.models.s3gen.transformer.upsample_encoder import (
    UpsampleConformerEncoder, PreLookaheadLayer, Upsample1D)
from chatterbox.models.s3gen.flow_matching import CausalConditionalCFM
from chatterbox.models.s3gen.decoder import ConditionalDecoder
from chatterbox.models.s3gen.configs import CFM_PARAMS
from chatterbox.models.s3tokenizer import S3Tokenizer
from chatterbox.models.t3.modules.cond_enc import T3Cond
from s3tokenizer.model_v2 import AudioEncoderV2, FSQVectorQuantization

from .common import Case, save_state_dict, perturb_norms, randomize_batchnorm, RngRecorder

S3GEN_DEFAULTS = {
    # flow (CausalMaskedDiffWithXvec)
    "flow_vocab_size": 6561, "spk_embed_dim": 192,
    # UpsampleConformerEncoder
    "encoder_output_size": 512, "encoder_attention_heads": 8, "encoder_linear_units": 2048,
    "encoder_num_blocks": 6, "encoder_num_up_blocks": 4,
    # ConditionalDecoder (CFM estimator)
    "decoder_channels": 256, "decoder_attention_head_dim": 64, "decoder_num_heads": 8, "decoder_n_blocks": 4,
    "decoder_num_mid_blocks": 12,
    # HiFTGenerator + ConvRNNF0Predictor
    "hift_base_channels": 512, "f0_cond_channels": 512,
    # S3TokenizerV2 (inside s3gen.safetensors as tokenizer.*)
    "tokenizer_n_state": 1280, "tokenizer_n_head": 20, "tokenizer_n_layer": 6,
    # CAMPPlus (speaker_encoder.*)
    "campplus_growth_rate": 32, "campplus_bn_size": 4, "campplus_init_channels": 128,
}
# buffers that S3Token2Wav declares missing-ok (s3gen.py:239); recomputed from librosa at construction
S3GEN_DROP_KEYS = ("tokenizer._mel_filters", "tokenizer.window")


def full_dims(dims):
    unknown = set(dims) - set(S3GEN_DEFAULTS)
    if unknown:
        raise SystemExit(f"unknown S3Gen dims: {sorted(unknown)}")
    full = {**S3GEN_DEFAULTS, **dims}
    cfg = {k: v for k, v in full.items() if v != S3GEN_DEFAULTS[k]}
    return full, cfg


def build_tokenizer(full):
    tok = S3Tokenizer("speech_tokenizer_v2_25hz")
    if (full["tokenizer_n_state"], full["tokenizer_n_head"], full["tokenizer_n_layer"]) != (1280, 20, 6):
        # S3Tokenizer ignores its config argument (s3tokenizer.py:33); rebuild the encoder / quantizer from
        # the s3tokenizer package's own classes, as S3TokenizerV2.__init__ does (model_v2.py)
        tok.encoder = AudioEncoderV2(tok.config.n_mels, full["tokenizer_n_state"], full["tokenizer_n_head"],
                                     full["tokenizer_n_layer"], 2, tok.config.use_sdpa)
        tok.quantizer = FSQVectorQuantization(full["tokenizer_n_state"], 3 ** 8)
    return tok


def build_campplus(full):
    return CAMPPlus(embedding_size=full["spk_embed_dim"], growth_rate=full["campplus_growth_rate"],
                    bn_size=full["campplus_bn_size"], init_channels=full["campplus_init_channels"],
                    memory_efficient=False)


def build_s3gen(dims: dict, init=True):
    full, cfg = full_dims(dims)
    if not cfg:
        s3 = S3Gen()
    else:
        s3 = S3Token2Wav.__new__(S3Token2Wav)
        torch.nn.Module.__init__(s3)
        s3.tokenizer = build_tokenizer(full)
        s3.mel_extractor = mel_spectrogram
        s3.speaker_encoder = build_campplus(full)
        s3.meanflow = False
        D = full["encoder_output_size"]
        encoder = UpsampleConformerEncoder(
            output_size=D, attention_heads=full["encoder_attention_heads"],
            linear_units=full["encoder_linear_units"], num_blocks=full["encoder_num_blocks"],
            dropout_rate=0.1, positional_dropout_rate=0.1, attention_dropout_rate=0.1, normalize_before=True,
            input_layer='linear', pos_enc_layer_type='rel_pos_espnet', selfattention_layer_type='rel_selfattn',
            input_size=D, use_cnn_module=False, macaron_style=False)
        encoder.pre_lookahead_layer = PreLookaheadLayer(channels=D, pre_lookahead_len=3)
        encoder.up_layer = Upsample1D(channels=D, out_channels=D, stride=2)
        nu = full["encoder_num_up_blocks"]
        assert 1 <= nu <= 4
        encoder.up_encoders = encoder.up_encoders[:nu]
        estimator = ConditionalDecoder(
            in_channels=320, out_channels=80, causal=True, channels=[full["decoder_channels"]], dropout=0.0,
            attention_head_dim=full["decoder_attention_head_dim"], n_blocks=full["decoder_n_blocks"],
            num_mid_blocks=full["decoder_num_mid_blocks"], num_heads=full["decoder_num_heads"], act_fn='gelu',
            meanflow=False)
        decoder = CausalConditionalCFM(spk_emb_dim=80, cfm_params=CFM_PARAMS, estimator=estimator)
        s3.flow = CausalMaskedDiffWithXvec(input_size=D, spk_embed_dim=full["spk_embed_dim"],
                                           vocab_size=full["flow_vocab_size"], encoder=encoder, decoder=decoder)
        s3.resamplers = {}
        f0_predictor = ConvRNNF0Predictor(cond_channels=full["f0_cond_channels"])
        s3.mel2wav = HiFTGenerator(
            base_channels=full["hift_base_channels"], sampling_rate=S3GEN_SR, upsample_rates=[8, 5, 3],
            upsample_kernel_sizes=[16, 11, 7], source_resblock_kernel_sizes=[7, 7, 11],
            source_resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], f0_predictor=f0_predictor)
        n_trim = S3GEN_SR // 50
        trim_fade = torch.zeros(2 * n_trim)
        trim_fade[n_trim:] = (torch.cos(torch.linspace(torch.pi, 0, n_trim)) + 1) / 2
        s3.register_buffer("trim_fade", trim_fade, persistent=False)
        s3.estimator_dtype = "fp32"
    if init:
        init_s3gen(s3)
    s3.eval()
    return s3, full, cfg


def init_s3gen(s3):
    """Module default inits (ConditionalDecoder: kaiming) plus: perturbed norms, BatchNorm running stats,
    Snake alphas around 1, and an F0 predictor head biased to a voice-like range (~80-250 Hz) so the
    voiced NSF branch (threshold 10 Hz) is exercised."""
    perturb_norms(s3, std=0.1)
    randomize_batchnorm(s3)
    with torch.no_grad():
        for n, p in s3.mel2wav.named_parameters():
            if n.endswith(".alpha"):
                p.copy_(1.0 + 0.3 * torch.rand(p.shape))
        cls = s3.mel2wav.f0_predictor.classifier
        cls.weight.normal_(0.0, 1000.0 / cls.in_features ** 0.5)
        cls.bias.fill_(150.0)
        for blk in s3.flow.encoder.encoders + s3.flow.encoder.up_encoders:
            blk.self_attn.pos_bias_u.normal_(0.0, 0.1)
            blk.self_attn.pos_bias_v.normal_(0.0, 0.1)


def write_s3gen(case: Case, s3, parts=("flow", "mel2wav")):
    """s3gen.safetensors with the official key names. To keep the committed fixtures small, a tiny case ships
    only the sub-modules it exercises (`parts`, recorded in case.json params.s3gen_parts): flow.* for the
    encoder/estimator/cfm kinds, mel2wav.* for hift, both for s3gen_wav, tokenizer.* for s3_tokenizer,
    speaker_encoder.* for campplus. The reference loads this file
    with strict=False (tts.py:151-154). --full-size cases ship everything."""
    sd = {k: v for k, v in s3.state_dict().items()
          if k not in S3GEN_DROP_KEYS and (parts is None or k.split(".")[0] in parts)}
    case.params["s3gen_parts"] = sorted({k.split(".")[0] for k in sd})
    return save_state_dict(sd, case.file("s3gen.safetensors"))


def random_ref_dict(full, gen, n_prompt_tokens):
    return dict(
        prompt_token=torch.randint(0, full["flow_vocab_size"], (1, n_prompt_tokens), generator=gen, dtype=torch.long),
        prompt_token_len=torch.tensor([n_prompt_tokens], dtype=torch.long),
        prompt_feat=random_mel(gen, 2 * n_prompt_tokens).transpose(1, 2).contiguous(),  # (1, 2Tp, 80)
        prompt_feat_len=None,
        embedding=torch.randn(1, full["spk_embed_dim"], generator=gen),
    )


def random_mel(gen, n_frames):
    """Log-mel-like (1, 80, N): smooth in time and frequency, values about -11..0 like S3Gen mels."""
    base = torch.randn(1, 80, n_frames, generator=gen)
    k = torch.ones(1, 1, 5) / 5
    sm = torch.nn.functional.conv1d(base.view(80, 1, -1), k, padding=2).view(1, 80, -1)
    tilt = torch.linspace(-3.0, -8.0, 80).view(1, 80, 1)
    return (tilt + 1.5 * sm).float()


def write_conds(case, full, gen, ref):
    spk = torch.randn(1, 256, generator=gen).abs()
    t3c = T3Cond(speaker_emb=spk / spk.norm(), cond_prompt_speech_tokens=torch.randint(0, 6561, (1, 150), generator=gen),
                 emotion_adv=0.5 * torch.ones(1, 1, 1))
    Conditionals(t3c, {k: (v.clone() if torch.is_tensor(v) else v) for k, v in ref.items()}).save(case.file("conds.pt"))


def ref_inputs(case, ref):
    case.input("prompt_token", ref["prompt_token"])
    case.input("prompt_token_len", ref["prompt_token_len"])
    case.input("prompt_feat", ref["prompt_feat"])
    case.input("embedding", ref["embedding"])


def setup(case, dims, params, seed, parts=("flow",)):
    gen = torch.Generator().manual_seed(seed + 1)
    s3, full, cfg = build_s3gen(dims)
    case.config = cfg
    write_s3gen(case, s3, None if not cfg else parts)
    n_prompt = int(params.get("n_prompt_tokens", 6))
    n_tok = int(params.get("n_tokens", 10))
    ref = random_ref_dict(full, gen, n_prompt)
    write_conds(case, full, gen, ref)
    tokens = torch.randint(0, full["flow_vocab_size"], (1, n_tok), generator=gen, dtype=torch.long)
    return s3, full, gen, ref, tokens


def _put(d, k, v):
    """store the first value seen (hooks must return None, or they would replace the output)"""
    if k not in d:
        d[k] = v
    return None


class FlowCapture:
    """Record (not alter) the flow internals during S3Gen inference: encoder output, mu, the decoder inputs."""

    def __init__(self, s3):
        self.s3 = s3
        self.d = {}

    def __enter__(self):
        flow = self.s3.flow
        self.hs = [
            flow.encoder.register_forward_hook(lambda m, i, o: _put(self.d, "encoder_out", o[0].detach().clone())),
            flow.encoder_proj.register_forward_hook(lambda m, i, o: _put(self.d, "encoder_proj", o.detach().clone())),
            flow.spk_embed_affine_layer.register_forward_hook(lambda m, i, o: _put(self.d, "spks", o.detach().clone())),
        ]
        dec = flow.decoder
        orig = dec.solve_euler
        self._orig = orig
        cap = self

        def solve(x, t_span, mu, mask, spks, cond, meanflow=False):
            cap.d.update(z=x.detach().clone(), t_span=t_span.detach().clone(), mu=mu.detach().clone(),
                         mask=mask.detach().clone(), cond=cond.detach().clone())
            return orig(x, t_span=t_span, mu=mu, mask=mask, spks=spks, cond=cond, meanflow=meanflow)
        dec.solve_euler = solve
        est = dec.estimator
        self.steps = []
        orig_f = est.forward  # solve_euler calls estimator.forward directly (no hooks fire)

        def fwd(**k):
            out = orig_f(**k)
            cap.steps.append({kk: vv.detach().clone() for kk, vv in k.items() if torch.is_tensor(vv)}
                             | {"out": out.detach().clone()})
            return out
        est.forward = fwd
        self.rng = RngRecorder().__enter__()
        return self

    def __exit__(self, *exc):
        self.rng.__exit__(*exc)
        for h in self.hs:
            h.remove()
        del self.s3.flow.decoder.solve_euler
        del self.s3.flow.decoder.estimator.forward
        return False


def flow_params(case, full, ref, tokens):
    case.params.update({"n_prompt_tokens": int(ref["prompt_token"].shape[1]), "n_tokens": int(tokens.shape[1]),
                        "token_mel_ratio": 2, "finalize": True})


# ---------------------------------------------------------------- s3gen_encoder
def case_s3gen_encoder(case: Case, dims, params, seed):
    s3, full, gen, ref, tokens = setup(case, dims, params, seed)
    ref_inputs(case, ref)
    case.input("speech_tokens", tokens)
    torch.manual_seed(seed)
    with FlowCapture(s3) as cap:
        s3.flow_inference(tokens, ref_dict={k: (v.clone() if torch.is_tensor(v) else v) for k, v in ref.items()},
                          n_cfm_timesteps=1, finalize=True)
    d = cap.d
    case.expect("encoder_out", d["encoder_out"], note="UpsampleConformerEncoder output after after_norm, (1, 2(Tp+Ts), D)")
    case.expect("mu", d["mu"], note="encoder_proj(h)^T, (1, 80, 2(Tp+Ts)) (flow.py:175,188)")
    case.expect("spks", d["spks"], note="spk_embed_affine_layer(F.normalize(embedding)), (1, 80)")
    case.expect("cond", d["cond"], note="(1, 80, 2(Tp+Ts)): prompt_feat^T in the first mel_len1 frames, 0 after")
    flow_params(case, full, ref, tokens)
    case.params["note"] = "prompt tokens are prepended to speech_tokens before embedding (flow.py:161)"


# ---------------------------------------------------------------- s3gen_estimator
def case_s3gen_estimator(case: Case, dims, params, seed):
    s3, full, gen, ref, tokens = setup(case, dims, params, seed)
    ref_inputs(case, ref)
    case.input("speech_tokens", tokens)
    step = int(params.get("step", 3))
    torch.manual_seed(seed)
    with FlowCapture(s3) as cap:
        s3.flow_inference(tokens, ref_dict={k: (v.clone() if torch.is_tensor(v) else v) for k, v in ref.items()},
                          n_cfm_timesteps=10, finalize=True)
    call = cap.steps[step]
    # one estimator call exactly as solve_euler made it (B=2: cond row, uncond row with mu/spks/cond zeroed)
    for k in ["x", "mask", "mu", "t", "spks", "cond"]:
        case.input(k, call[k])
    case.expect("dxdt", call["out"], note="ConditionalDecoder.forward(x, mask, mu, t, spks, cond), (2, 80, N)")
    t_emb = {}
    est = s3.flow.decoder.estimator
    with torch.inference_mode():
        t_emb["t"] = est.time_mlp(est.time_embeddings(call["t"]).to(call["t"].dtype))
    case.expect("time_emb", t_emb["t"], note="time_mlp(SinusoidalPosEmb(320)(t)), (2, 4*decoder_channels)")
    flow_params(case, full, ref, tokens)
    case.params.update({"step": step, "t": float(call["t"][0])})


# ---------------------------------------------------------------- s3gen_cfm
def case_s3gen_cfm(case: Case, dims, params, seed):
    s3, full, gen, ref, tokens = setup(case, dims, params, seed)
    n_ts = int(params.get("n_timesteps", 10))
    ref_inputs(case, ref)
    case.input("speech_tokens", tokens)
    torch.manual_seed(seed)
    with FlowCapture(s3) as cap:
        mel = s3.flow_inference(tokens, ref_dict={k: (v.clone() if torch.is_tensor(v) else v) for k, v in ref.items()},
                                n_cfm_timesteps=n_ts, finalize=True)
    d = cap.d
    z_draws = cap.rng.of("randn_like")
    assert len(z_draws) == 1 and torch.equal(z_draws[0][1], d["z"])
    case.input("z", d["z"])
    case.expect("mu", d["mu"])
    case.expect("t_span", d["t_span"], note="cosine schedule 1 - cos(pi/2 * linspace(0,1,n+1))")
    case.expect("dxdt_cfg_step0", (1.7 * cap.steps[0]["out"][:1] - 0.7 * cap.steps[0]["out"][1:]),
                note="first CFG-combined velocity (1+0.7)v_c - 0.7 v_u, computed here from the recorded estimator output")
    case.expect("mel", mel, note="flow output after dropping the prompt frames, (1, 80, 2*Ts)")
    flow_params(case, full, ref, tokens)
    case.params.update({"n_timesteps": n_ts, "cfg_rate": 0.7, "t_scheduler": "cosine",
                        "z": "z covers prompt + generated frames (1, 80, 2(Tp+Ts)), drawn by torch.randn_like(mu) "
                             "(flow_matching.py:216); recorded, not replaced"})
    case.abs_f32 = None


# ---------------------------------------------------------------- hift
class HiftCapture:
    def __init__(self, s3):
        self.s3 = s3
        self.d = {}

    def __enter__(self):
        h = self.s3.mel2wav
        self.hs = [
            h.f0_predictor.register_forward_hook(lambda m, i, o: _put(self.d, "f0", o.detach().clone())),
            h.f0_predictor.register_forward_pre_hook(lambda m, i: _put(self.d, "mel", i[0].detach().clone())),
            h.m_source.register_forward_hook(lambda m, i, o: _put(self.d, "source", o[0].detach().clone())),
            h.m_source.l_sin_gen.register_forward_hook(lambda m, i, o: _put(self.d, "sine_waves", o[0].detach().clone())),
        ]
        orig = h.decode
        self._orig = orig
        cap = self

        def decode(x, s=torch.zeros(1, 1, 0)):
            out = orig(x=x, s=s)
            cap.d["wav_pre_fade"] = out.detach().clone()
            return out
        h.decode = decode
        self.rng = RngRecorder().__enter__()
        return self

    def __exit__(self, *exc):
        self.rng.__exit__(*exc)
        for hh in self.hs:
            hh.remove()
        del self.s3.mel2wav.decode
        return False

    def injected(self):
        """SineGen's draws, in order: rand (Uniform phases, (1,9,1)), randn_like (noise, (1,9,L)),
        then SourceModuleHnNSF's discarded randn_like(uv)."""
        rands = self.rng.of("rand")
        rl = self.rng.of("randn_like")
        assert len(rands) >= 1 and len(rl) >= 2, (len(rands), len(rl))
        u = rands[-1][1]
        low, high = torch.tensor(-math.pi), torch.tensor(math.pi)
        phases = low + u * (high - low)  # torch.distributions.Uniform.rsample
        phases[:, 0, :] = 0  # hifigan.py:214
        return phases, rl[-2][1]


def hift_expect(case, cap):
    d = cap.d
    phases, noise = cap.injected()
    case.input("sine_phases", phases)
    case.input("sine_noise", noise)
    case.expect("f0", d["f0"], note="ConvRNNF0Predictor output in Hz, (1, Nm)")
    case.expect("source", d["source"], note="tanh(l_linear(sine_waves)), (1, 480*Nm, 1) (hifigan.py:279)",
                compare="rel_l2")
    case.expect("wav_pre_fade", d["wav_pre_fade"],
                note="HiFT decode output, clamped to +-0.99, before trim/fade (1, 480*Nm). The NSF phase is a "
                     "float32 cumsum over all samples, so use rel_l2", compare="rel_l2")


def case_hift(case: Case, dims, params, seed):
    gen = torch.Generator().manual_seed(seed + 1)
    s3, full, cfg = build_s3gen(dims)
    case.config = cfg
    write_s3gen(case, s3, None if not cfg else ("mel2wav",))
    nm = int(params.get("n_mel_frames", 20))
    mel = random_mel(gen, nm)
    case.input("mel", mel)
    torch.manual_seed(seed)
    with HiftCapture(s3) as cap:
        wav, src = s3.hift_inference(mel, None)
    hift_expect(case, cap)
    case.expect("wav", wav, note="HiFTGenerator.inference output (no trim/fade), (1, 480*Nm)", compare="rel_l2")
    case.params.update({"n_mel_frames": nm, "sine_phases": "SineGen phases U(-pi,pi) (1,9,1) with [0]=0 (hifigan.py:212-214)",
                        "sine_noise": "standard normal (1,9,480*Nm) that SineGen scales by noise_amp (hifigan.py:225-226)",
                        "nb_harmonics": 8, "voiced_threshold_hz": 10})


# ---------------------------------------------------------------- s3gen_wav
def case_s3gen_wav(case: Case, dims, params, seed):
    s3, full, gen, ref, tokens = setup(case, dims, params, seed, parts=("flow", "mel2wav"))
    ref_inputs(case, ref)
    case.input("speech_tokens", tokens)
    torch.manual_seed(seed)
    with FlowCapture(s3) as fc:
        with HiftCapture(s3) as hc:
            wav, _ = s3.inference(speech_tokens=tokens, ref_dict={k: (v.clone() if torch.is_tensor(v) else v)
                                                                 for k, v in ref.items()})
    case.input("z", fc.d["z"])
    case.expect("mu", fc.d["mu"])
    case.expect("mel", hc.d["mel"], note="flow output fed to HiFT, (1, 80, 2*Ts)")
    hift_expect(case, hc)
    case.expect("wav", wav, note="S3Gen.inference output: HiFT wav with wav[:, :960] *= trim_fade (s3gen.py:359-360)",
                compare="rel_l2")
    flow_params(case, full, ref, tokens)
    case.params.update({"n_timesteps": 10, "cfg_rate": 0.7, "trim_fade": "zeros(480) then (cos(linspace(pi,0,480))+1)/2"})
