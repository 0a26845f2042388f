"""T3 cases: t3_cond_enc, t3_prefill, t3_decode_teacher_forced, t3_sampler.

Models are built from the package's own classes (T3, T3Config, LlamaModel via LLAMA_CONFIGS, Perceiver);
only the dimensions change."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from chatterbox.tts import Conditionals
from chatterbox.models.t3 import t3 as t3_mod
from chatterbox.models.t3.t3 import T3
from chatterbox.models.t3.llama_configs import LLAMA_CONFIGS, LLAMA_520M_CONFIG_DICT
from chatterbox.models.t3.modules.t3_config import T3Config
from chatterbox.models.t3.modules.cond_enc import T3Cond
from chatterbox.models.t3.modules.perceiver import Perceiver
from chatterbox.models.t3.inference.t3_hf_backend import T3HuggingfaceBackend
from transformers.generation.logits_process import (
    LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
    TopPLogitsWarper, MinPLogitsWarper,
)

from .common import Case, save_state_dict, perturb_norms, RngRecorder

LLAMA_KEYS = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "max_position_embeddings"]
T3CFG_KEYS = ["text_tokens_dict_size", "speech_tokens_dict_size", "start_text_token", "stop_text_token",
              "start_speech_token", "stop_speech_token", "max_text_tokens", "max_speech_tokens",
              "speech_cond_prompt_len", "speaker_embed_size"]
PERCEIVER_DEFAULTS = {"perceiver_query_tokens": 32, "perceiver_num_heads": 4}


def t3_defaults():
    d = {k: LLAMA_520M_CONFIG_DICT[k] for k in LLAMA_KEYS}
    hp = T3Config.english_only()
    d.update({k: getattr(hp, k) for k in T3CFG_KEYS})
    d.update(PERCEIVER_DEFAULTS)
    return d


def build_t3(dims: dict, init: bool = True):
    """Build a T3 with the given (non-default) dims. Returns (t3, full_dims, config_json)."""
    defaults = t3_defaults()
    unknown = set(dims) - set(defaults)
    if unknown:
        raise SystemExit(f"unknown T3 dims: {sorted(unknown)}")
    full = {**defaults, **dims}
    if "num_key_value_heads" not in dims and "num_attention_heads" in dims:
        full["num_key_value_heads"] = full["num_attention_heads"]
    config_json = {k: v for k, v in full.items() if v != defaults[k]}

    llama_cfg = dict(LLAMA_520M_CONFIG_DICT)
    for k in LLAMA_KEYS:
        llama_cfg[k] = full[k]
    name = "Llama_520M"
    if llama_cfg != LLAMA_520M_CONFIG_DICT:
        name = "Llama_reference_" + "_".join(f"{k}{full[k]}" for k in LLAMA_KEYS)
        LLAMA_CONFIGS[name] = llama_cfg  # the package's own registry, read by T3 and T3Config.n_channels
    hp = T3Config(text_tokens_dict_size=full["text_tokens_dict_size"])
    for k in T3CFG_KEYS:
        setattr(hp, k, full[k])
    hp.llama_config_name = name
    t3 = T3(hp)
    if (full["perceiver_query_tokens"], full["perceiver_num_heads"], full["hidden_size"]) != (32, 4, 1024):
        # Perceiver() hard-codes the real dims inside T3CondEnc: rebuild it from the same class.
        t3.cond_enc.perceiver = Perceiver(
            pre_attention_query_token=full["perceiver_query_tokens"],
            pre_attention_query_size=full["hidden_size"],
            embedding_dim=full["hidden_size"],
            num_attn_heads=full["perceiver_num_heads"],
        )
    elif full["perceiver_num_heads"] != 4:
        t3.cond_enc.perceiver = Perceiver(num_attn_heads=full["perceiver_num_heads"])
    if init:
        init_t3(t3, full)
    t3.eval()
    return t3, full, config_json


def init_t3(t3: T3, full: dict):
    """Re-initialise with scales that give non-degenerate activations at tiny sizes:
    Llama linears ~N(0, 1/in) (attention scores of O(1), neither uniform nor saturated), token embeddings
    N(0,1) (nn.Embedding default), learned position embeddings N(0, 0.3^2) so that positions matter,
    speech_head N(0, (2/sqrt(D))^2) so logits have std ~2 (min_p actually filters), and every norm weight
    perturbed around 1 so an engine that ignores a norm weight fails."""
    D = full["hidden_size"]
    with torch.no_grad():
        for name, m in t3.tfmr.named_modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.normal_(0.0, m.in_features ** -0.5)
        t3.text_pos_emb.emb.weight.normal_(0.0, 0.3)
        t3.speech_pos_emb.emb.weight.normal_(0.0, 0.3)
        t3.speech_head.weight.normal_(0.0, 2.0 / D ** 0.5)
        t3.text_head.weight.normal_(0.0, 2.0 / D ** 0.5)
    perturb_norms(t3, std=0.1)


def random_t3_cond(full, gen, prompt_len=None, exaggeration=0.5):
    P = full["speech_cond_prompt_len"] if prompt_len is None else prompt_len
    spk = torch.randn(1, full["speaker_embed_size"], generator=gen).abs()
    spk = spk / spk.norm(dim=1, keepdim=True)  # VoiceEncoder output: ReLU'd then L2-normalised
    toks = torch.randint(0, full["start_speech_token"], (1, P), generator=gen, dtype=torch.long)
    return T3Cond(speaker_emb=spk, cond_prompt_speech_tokens=toks,
                  emotion_adv=exaggeration * torch.ones(1, 1, 1))


def random_gen_dict(gen, n_prompt_tokens=8, vocab=6561, spk_dim=192):
    """A plausible S3Gen ref dict (the `gen` half of conds.pt)."""
    return dict(
        prompt_token=torch.randint(0, vocab, (1, n_prompt_tokens), generator=gen, dtype=torch.long),
        prompt_token_len=torch.tensor([n_prompt_tokens], dtype=torch.long),
        prompt_feat=(torch.randn(1, 2 * n_prompt_tokens, 80, generator=gen) * 1.5 - 5.0),
        prompt_feat_len=None,
        embedding=torch.randn(1, spk_dim, generator=gen),
    )


def random_text_tokens(full, gen, n):
    V = full["text_tokens_dict_size"]
    ids = torch.randint(3, V, (n,), generator=gen, dtype=torch.long)
    ids[ids == full["start_text_token"]] = 3
    return ids


def write_t3_model(case: Case, t3: T3, cond: T3Cond, gen_dict: dict):
    save_state_dict(t3, case.file("t3_cfg.safetensors"))
    # conds.pt through the package's own Conditionals.save (before any forward caches the prompt embedding)
    assert cond.cond_prompt_speech_emb is None
    Conditionals(cond, gen_dict).save(case.file("conds.pt"))


def cond_inputs(case: Case, cond: T3Cond):
    case.input("speaker_emb", cond.speaker_emb)
    case.input("cond_prompt_speech_tokens", cond.cond_prompt_speech_tokens)
    case.input("emotion_adv", cond.emotion_adv)


def clone_cond(c: T3Cond) -> T3Cond:
    return T3Cond(speaker_emb=c.speaker_emb.clone(), cond_prompt_speech_tokens=c.cond_prompt_speech_tokens.clone(),
                  emotion_adv=c.emotion_adv.clone())


# ---------------------------------------------------------------- t3_cond_enc
def case_t3_cond_enc(case: Case, dims: dict, params: dict, seed: int):
    gen = torch.Generator().manual_seed(seed + 1)
    t3, full, cfg = build_t3(dims)
    case.config = cfg
    cond = random_t3_cond(full, gen, params.get("prompt_len"), params.get("exaggeration", 0.5))
    write_t3_model(case, t3, cond, random_gen_dict(gen))
    cond_inputs(case, cond)
    c = clone_cond(cond)
    perc_out = {}
    h = t3.cond_enc.perceiver.register_forward_hook(lambda m, i, o: perc_out.setdefault("o", o.detach().clone()))
    with torch.inference_mode():
        cond_emb = t3.prepare_conditioning(c)  # t3.py:92-100 -> cond_enc.py:64-97
    h.remove()
    Q = full["perceiver_query_tokens"]
    case.expect("cond_prompt_speech_emb", c.cond_prompt_speech_emb,
                note="speech_emb(prompt) + speech_pos_emb(0..P-1), the perceiver input (t3.py:96-99)")
    case.expect("perceiver_out", perc_out["o"], note=f"Perceiver output (1,{Q},D)")
    case.expect("cond_emb", cond_emb, note=f"[spkr(1) | perceiver({Q}) | emotion(1)] = (1,{Q + 2},D)")
    case.params.update({"prompt_len": int(cond.cond_prompt_speech_tokens.shape[1]),
                        "exaggeration": float(cond.emotion_adv.flatten()[0]), "len_cond": int(cond_emb.shape[1])})


# ---------------------------------------------------------------- inference capture
class Capture:
    """Observe T3.inference without changing it: backend forward calls, the conditioning output,
    and torch.multinomial (recorded, not replaced)."""

    def __init__(self, t3):
        self.t3 = t3
        self.fwd = []
        self.cond_emb = None

    def __enter__(self):
        orig_fwd = T3HuggingfaceBackend.forward
        self._orig_fwd = orig_fwd
        cap = self

        def fwd(self_, inputs_embeds, past_key_values=None, use_cache=True, output_attentions=False,
                output_hidden_states=True, return_dict=True):
            out = orig_fwd(self_, inputs_embeds=inputs_embeds, past_key_values=past_key_values, use_cache=use_cache,
                           output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                           return_dict=return_dict)
            cap.fwd.append((inputs_embeds.detach().clone(), out.logits.detach().clone()))
            return out
        T3HuggingfaceBackend.forward = fwd
        orig_pc = self.t3.prepare_conditioning

        def pc(t3_cond):
            out = orig_pc(t3_cond)
            cap.cond_emb = out.detach().clone()
            return out
        self.t3.prepare_conditioning = pc
        self.rng = RngRecorder().__enter__()
        return self

    def __exit__(self, *exc):
        self.rng.__exit__(*exc)
        T3HuggingfaceBackend.forward = self._orig_fwd
        del self.t3.prepare_conditioning
        return False


SAMPLER_DEFAULTS = dict(temperature=0.8, cfg_weight=0.5, repetition_penalty=1.2, min_p=0.05, top_p=1.0)


def run_inference(t3, cond, text_ids, full, max_new_tokens, sampler):
    sot, eot = full["start_text_token"], full["stop_text_token"]
    text_tokens = text_ids.view(1, -1).to(torch.int32)  # EnTokenizer.text_to_tokens gives an IntTensor
    text_tokens = torch.cat([text_tokens, text_tokens], dim=0)  # tts.py:237-238 (cfg_weight > 0)
    text_tokens = F.pad(text_tokens, (1, 0), value=sot)
    text_tokens = F.pad(text_tokens, (0, 1), value=eot)
    with Capture(t3) as cap, torch.inference_mode():
        predicted = t3.inference(t3_cond=cond, text_tokens=text_tokens, max_new_tokens=max_new_tokens, **sampler)
    return text_tokens.long(), predicted, cap


def english_sampler(cond, uncond, generated_ids, cfg_weight, repetition_penalty, temperature, min_p, top_p):
    """The per-step processing of T3.inference (t3.py, 0.1.7: 'CFG combine' .. torch.softmax), with the same
    HF processor classes, in the same order. Checked bit-exact against the probabilities that the real loop
    hands to torch.multinomial (see case_t3_decode)."""
    st = {}
    cfg = torch.as_tensor(cfg_weight, device=cond.device, dtype=cond.dtype)
    logits = cond + cfg * (cond - uncond)
    st["logits_cfg"] = logits
    ids = generated_ids[:1, ...]
    logits = RepetitionPenaltyLogitsProcessor(penalty=float(repetition_penalty))(ids, logits)
    st["logits_rep"] = logits
    if temperature != 1.0:
        logits = logits / temperature
    st["logits_temp"] = logits
    logits = MinPLogitsWarper(min_p=min_p)(ids, logits)
    st["logits_min_p"] = logits
    logits = TopPLogitsWarper(top_p=top_p)(ids, logits)
    st["logits_processed"] = logits
    st["probs"] = torch.softmax(logits, dim=-1)
    return st


def turbo_sampler(logits, input_ids, temperature, top_k, top_p, repetition_penalty):
    """T3.inference_turbo's LogitsProcessorList (t3.py, 0.1.7): Temperature -> TopK -> TopP -> RepetitionPenalty."""
    procs = LogitsProcessorList()
    if temperature > 0 and temperature != 1.0:
        procs.append(TemperatureLogitsWarper(temperature))
    if top_k > 0:
        procs.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        procs.append(TopPLogitsWarper(top_p))
    if repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    st = {"logits_cfg": logits}
    out = procs(input_ids, logits)
    st["logits_processed"] = out
    st["probs"] = F.softmax(out, dim=-1)
    return st


# ---------------------------------------------------------------- t3_prefill
def case_t3_prefill(case: Case, dims: dict, params: dict, seed: int):
    gen = torch.Generator().manual_seed(seed + 1)
    t3, full, cfg = build_t3(dims)
    case.config = cfg
    cond = random_t3_cond(full, gen, params.get("prompt_len"), params.get("exaggeration", 0.5))
    write_t3_model(case, t3, cond, random_gen_dict(gen))
    text_ids = random_text_tokens(full, gen, int(params.get("n_text", 12)))
    torch.manual_seed(seed)
    text_tokens, predicted, cap = run_inference(t3, clone_cond(cond), text_ids, full, 1, SAMPLER_DEFAULTS)
    cond_inputs(case, cond)
    case.input("text_tokens", text_tokens)
    emb, logits = cap.fwd[0]
    L0 = emb.shape[1]
    case.expect("cond_emb", cap.cond_emb, note="T3CondEnc output (1, len_cond, D)")
    case.expect("inputs_embeds", emb, note="prefill input (2, L0, D): [cond | text+pos (uncond row: pos only) | BOS | BOS]")
    case.expect("prefill_logits", logits, note="speech_head(final norm(h)) for every prefill position, (2, L0, V)")
    case.expect("logits_cond", logits[0, -1:], note="row 0 (conditional), last position, (1, V)")
    case.expect("logits_uncond", logits[1, -1:], note="row 1 (unconditional: text token embeddings zeroed), (1, V)")
    case.params.update({"prompt_len": int(cond.cond_prompt_speech_tokens.shape[1]),
                        "exaggeration": float(cond.emotion_adv.flatten()[0]), "cfg_weight": 0.5,
                        "len_cond": int(cap.cond_emb.shape[1]), "prefill_len": int(L0),
                        "text_len_with_sot_eot": int(text_tokens.shape[1])})


# ---------------------------------------------------------------- t3_decode_teacher_forced
def case_t3_decode(case: Case, dims: dict, params: dict, seed: int):
    gen = torch.Generator().manual_seed(seed + 1)
    t3, full, cfg = build_t3(dims)
    case.config = cfg
    cond = random_t3_cond(full, gen, params.get("prompt_len"), params.get("exaggeration", 0.5))
    write_t3_model(case, t3, cond, random_gen_dict(gen))
    text_ids = random_text_tokens(full, gen, int(params.get("n_text", 10)))
    n_steps = int(params.get("n_steps", 10))
    sampler = {k: params.get(k, v) for k, v in SAMPLER_DEFAULTS.items()}
    torch.manual_seed(seed)
    text_tokens, predicted, cap = run_inference(t3, clone_cond(cond), text_ids, full, n_steps, sampler)
    tokens = predicted[0]
    if tokens.numel() < n_steps:
        raise SystemExit(f"EOS sampled after {tokens.numel()} steps; pick another --seed")
    multinom = cap.rng.of("multinomial")
    assert len(multinom) == n_steps
    # per step: the logits of both rows at the last position, CFG + processors (mirrored and checked)
    step_logits = torch.stack([lg[:, -1, :] for _, lg in cap.fwd])  # (n_steps+1, 2, V)
    stages = {k: [] for k in ["logits_cfg", "logits_processed", "probs"]}
    bos = full["start_speech_token"]
    for i in range(n_steps):
        hist = torch.cat([torch.tensor([[bos]]), tokens[:i].view(1, -1)], dim=1)
        st = english_sampler(step_logits[i, 0:1], step_logits[i, 1:2], hist, **sampler)
        # the real loop's probabilities are the first argument it passed to torch.multinomial
        real_probs = multinom[i][2][0]
        assert torch.equal(st["probs"], real_probs), f"sampler mirror differs from T3.inference at step {i}"
        for k in stages:
            stages[k].append(st[k][0])
    cond_inputs(case, cond)
    case.input("text_tokens", text_tokens)
    case.input("speech_tokens", tokens.view(1, -1))
    decode_embeds = torch.stack([e for e, _ in cap.fwd[1:]])  # (n_steps, 2, 1, D)
    case.expect("cond_emb", cap.cond_emb)
    case.expect("inputs_embeds", cap.fwd[0][0], note="prefill input (2, L0, D)")
    case.expect("logits_cond", step_logits[0, 0:1], note="prefill, row 0, last position")
    case.expect("logits_uncond", step_logits[0, 1:2], note="prefill, row 1, last position")
    case.expect("decode_inputs_embeds", decode_embeds[:, :, 0, :],
                note="(n_steps, 2, D): speech_emb[tok_i] + speech_pos_emb[i+1], same for both rows")
    case.expect("step_logits", step_logits,
                note="(n_steps+1, 2, V): [0] = prefill last position; [k] = after feeding speech_tokens[k-1] "
                     "(RoPE position L0+k-1); the last one is the unused extra forward of the loop")
    case.expect("logits_cfg", torch.stack(stages["logits_cfg"]), note="(n_steps, V) c + w(c-u)")
    case.expect("logits_processed", torch.stack(stages["logits_processed"]),
                note="(n_steps, V) after rep. penalty (history = BOS + tokens so far), /temperature, min_p, top_p; "
                     "-inf where filtered: compare -inf positions exactly")
    case.expect("probs", torch.stack(stages["probs"]),
                note="(n_steps, V) softmax(logits_processed): exactly what the loop passed to torch.multinomial",
                abs_f32=1e-6)
    case.params.update({"n_steps": n_steps, **sampler, "prompt_len": int(cond.cond_prompt_speech_tokens.shape[1]),
                        "exaggeration": float(cond.emotion_adv.flatten()[0]), "prefill_len": int(cap.fwd[0][0].shape[1]),
                        "len_cond": int(cap.cond_emb.shape[1]),
                        "teacher_forced_tokens": "speech_tokens: the tokens the reference itself sampled "
                                                 "(torch.multinomial, seeded); replay them instead of sampling"})


# ---------------------------------------------------------------- t3_sampler
def case_t3_sampler(case: Case, dims: dict, params: dict, seed: int):
    gen = torch.Generator().manual_seed(seed + 1)
    V = int(dims.get("speech_tokens_dict_size", 8194))
    bos = int(dims.get("start_speech_token", 6561))
    if dims:
        case.config = {k: v for k, v in dims.items()}
    pipeline = params.get("pipeline", "english")
    cond = torch.randn(1, V, generator=gen) * 2.5
    peaks = torch.randint(0, V, (12,), generator=gen)
    cond[0, peaks] += torch.linspace(3.0, 8.0, 12)
    uncond = 0.8 * cond + 0.6 * torch.randn(1, V, generator=gen)
    n_hist = int(params.get("history_len", 24))
    # history: some high-logit tokens (positive branch of the penalty), some random ones (mostly negative
    # branch), and repeats (a token counts once)
    hist = torch.cat([peaks[:6], torch.randint(0, bos, (n_hist - 8,), generator=gen), peaks[:2]])
    if pipeline == "english":
        generated_ids = torch.cat([torch.tensor([bos]), hist]).view(1, -1)
        sp = {k: params.get(k, v) for k, v in SAMPLER_DEFAULTS.items()}
        st = english_sampler(cond, uncond, generated_ids, **sp)
        case.params.update({"pipeline": "english", **sp,
                            "order": "cfg -> repetition_penalty(history incl. BOS) -> /temperature (skipped if 1.0) "
                                     "-> MinPLogitsWarper -> TopPLogitsWarper -> softmax (t3.py T3.inference)"})
    elif pipeline == "turbo":
        generated_ids = hist.view(1, -1)
        sp = dict(temperature=params.get("temperature", 0.8), top_k=params.get("top_k", 1000),
                  top_p=params.get("top_p", 0.95), repetition_penalty=params.get("repetition_penalty", 1.2))
        st = turbo_sampler(cond, generated_ids, **sp)
        case.params.update({"pipeline": "turbo", **sp, "cfg_weight": 0.0,
                            "order": "TemperatureLogitsWarper -> TopKLogitsWarper -> TopPLogitsWarper (if <1) -> "
                                     "RepetitionPenaltyLogitsProcessor -> softmax (t3.py T3.inference_turbo); "
                                     "no CFG: logits_uncond is unused"})
    else:
        raise SystemExit(f"unknown pipeline {pipeline}")
    case.input("logits_cond", cond)
    case.input("logits_uncond", uncond)
    case.input("generated_ids", generated_ids)
    notes = {"logits_cfg": "c + w(c-u)", "logits_rep": "after RepetitionPenaltyLogitsProcessor",
             "logits_temp": "after /temperature", "logits_min_p": "after MinPLogitsWarper (-inf = removed)",
             "logits_processed": "final processed logits (-inf = removed; compare -inf positions exactly)",
             "probs": "softmax(logits_processed), what torch.multinomial receives"}
    for k, v in st.items():
        case.expect(k, v, note=notes.get(k, ""), abs_f32=1e-6 if k == "probs" else None)
