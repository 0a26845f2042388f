#!/usr/bin/env bash
# The list of committed fixture cases: one `gen <kind> <case-name> <args...>` line per case.
# Used once to create the cases; afterwards every case.json records its own exact command and
# regenerate_all.sh / check_reproducible.py read it from there.
#   bash tools/reference/cases.sh            # (re)create every committed case under tests/fixtures/
#   bash tools/reference/cases.sh t3_prefill_a hift_a   # only these
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY=tools/reference/.venv/bin/python
ONLY=("$@")
gen() {
  local kind=$1 name=$2; shift 2
  if [ ${#ONLY[@]} -gt 0 ] && [[ ! " ${ONLY[*]} " =~ " $name " ]]; then return; fi
  echo "== $name ($kind)"
  "$PY" tools/reference/generate.py "$kind" --out "tests/fixtures/$name" "$@" 2> >(grep -v -e '^Sampling' -e 'it/s' >&2)
}
d() { for kv in "$@"; do printf -- '--dim %s ' "$kv"; done; }

# ---- T3 (head_dim 64 everywhere; heads 1/2/3, layers 1..3, widths vary)
T3A=$(d hidden_size=128 num_attention_heads=2 intermediate_size=192 speech_tokens_dict_size=400 \
        start_speech_token=300 stop_speech_token=301 text_tokens_dict_size=260 max_text_tokens=62 max_speech_tokens=156)
gen t3_cond_enc t3_cond_enc_a --seed 101 $T3A $(d num_hidden_layers=1 perceiver_num_heads=2)
gen t3_cond_enc t3_cond_enc_b --seed 102 $(d hidden_size=64 num_attention_heads=1 num_hidden_layers=1 intermediate_size=128 \
    speech_tokens_dict_size=400 start_speech_token=300 stop_speech_token=301 text_tokens_dict_size=260 \
    max_text_tokens=62 max_speech_tokens=60 perceiver_query_tokens=8 speech_cond_prompt_len=20) \
    --param prompt_len=20 --param exaggeration=0.7
gen t3_prefill t3_prefill_a --seed 103 $T3A $(d num_hidden_layers=2) --param n_text=12
gen t3_prefill t3_prefill_b --seed 104 $(d hidden_size=192 num_attention_heads=3 num_hidden_layers=1 intermediate_size=256 \
    speech_tokens_dict_size=400 start_speech_token=300 stop_speech_token=301 text_tokens_dict_size=260 \
    max_text_tokens=62 max_speech_tokens=156 perceiver_num_heads=3) --param n_text=20 --param exaggeration=0.9
gen t3_decode_teacher_forced t3_decode_teacher_forced_a --seed 105 $T3A $(d num_hidden_layers=2) --param n_steps=10
gen t3_decode_teacher_forced t3_decode_teacher_forced_b --seed 106 $(d hidden_size=64 num_attention_heads=1 num_hidden_layers=3 \
    intermediate_size=128 speech_tokens_dict_size=400 start_speech_token=300 stop_speech_token=301 text_tokens_dict_size=260 \
    max_text_tokens=62 max_speech_tokens=156 perceiver_num_heads=1) --param n_steps=12 --param temperature=1.0 \
    --param repetition_penalty=1.5 --param min_p=0.1 --param top_p=0.9 --param cfg_weight=0.3 --param exaggeration=0.3

# ---- T3 sampler (real vocab 8194, synthetic logits)
gen t3_sampler t3_sampler_default --seed 201
gen t3_sampler t3_sampler_cool --seed 202 --param temperature=0.5 --param repetition_penalty=1.5 --param min_p=0.02 \
    --param top_p=0.95 --param cfg_weight=0.3
gen t3_sampler t3_sampler_hot --seed 203 --param temperature=1.3 --param repetition_penalty=2.0 --param min_p=0.1 \
    --param top_p=0.8 --param cfg_weight=1.0
gen t3_sampler t3_sampler_neutral --seed 204 --param temperature=1.0 --param repetition_penalty=1.0 --param min_p=0.0 \
    --param top_p=1.0 --param cfg_weight=0.5
gen t3_sampler t3_sampler_turbo_topk --seed 205 --param pipeline=turbo --param temperature=0.8 --param top_k=50 \
    --param top_p=0.95 --param repetition_penalty=1.2

# ---- S3Gen (encoder heads 1/2, decoder heads 1/2, widths vary; attention head dim 64)
S3A="flow_vocab_size=300 spk_embed_dim=64 encoder_output_size=64 encoder_attention_heads=1 encoder_linear_units=128
     encoder_num_blocks=1 encoder_num_up_blocks=1 decoder_channels=32 decoder_num_heads=1 decoder_n_blocks=1
     decoder_num_mid_blocks=1 hift_base_channels=32 f0_cond_channels=32 tokenizer_n_state=64 tokenizer_n_head=1
     tokenizer_n_layer=1 campplus_growth_rate=4 campplus_bn_size=2 campplus_init_channels=16"
s3() { local extra="$*"; local out=""; declare -A kv; for p in $S3A $extra; do kv[${p%%=*}]=${p#*=}; done
       for k in $(printf '%s\n' "${!kv[@]}" | sort); do out+="--dim $k=${kv[$k]} "; done; echo "$out"; }
gen s3gen_encoder s3gen_encoder_a --seed 301 $(s3 encoder_output_size=128 encoder_attention_heads=2 encoder_linear_units=192 \
    encoder_num_blocks=1 encoder_num_up_blocks=2) --param n_prompt_tokens=6 --param n_tokens=10
gen s3gen_estimator s3gen_estimator_a --seed 302 $(s3 decoder_channels=48 decoder_num_heads=2 decoder_n_blocks=1 \
    decoder_num_mid_blocks=1) --param n_prompt_tokens=5 --param n_tokens=8 --param step=3
gen s3gen_cfm s3gen_cfm_a --seed 303 $(s3) --param n_prompt_tokens=6 --param n_tokens=10 --param n_timesteps=10
gen hift hift_a --seed 304 $(s3 hift_base_channels=48 f0_cond_channels=48) --param n_mel_frames=24
gen s3gen_wav s3gen_wav_a --seed 305 $(s3 decoder_num_heads=2 decoder_num_mid_blocks=2) --param n_prompt_tokens=4 --param n_tokens=12

# ---- conditioning from audio
gen cond_mel cond_mel_a --seed 401 --param seconds=1.0
gen voice_encoder voice_encoder_a --seed 402 --dim ve_hidden_size=64 --param seconds=2.0
gen s3_tokenizer s3_tokenizer_a --seed 403 $(s3 tokenizer_n_state=128 tokenizer_n_head=2 tokenizer_n_layer=2) --param seconds=1.6 --param max_len=10
gen campplus campplus_a --seed 404 $(s3 campplus_growth_rate=8 campplus_init_channels=32 spk_embed_dim=192) --param seconds=1.5

# ---- voice cloning end to end (ChatterboxTTS.prepare_conditionals on an audio file)
CLONE="$(s3) --dim ve_hidden_size=64"
gen prepare_conditionals prepare_conditionals_8k_mono_pcm16_14s --seed 501 $CLONE --param rate=8000 --param channels=1 \
    --param subtype='"PCM_16"' --param seconds=14.0
gen prepare_conditionals prepare_conditionals_44k_stereo_float_3s --seed 502 $CLONE --param rate=44100 --param channels=2 \
    --param subtype='"FLOAT"' --param seconds=3.0
gen prepare_conditionals prepare_conditionals_24k_mono_pcm24_5s --seed 503 $CLONE --param rate=24000 --param channels=1 \
    --param subtype='"PCM_24"' --param seconds=5.0 --param exaggeration=0.7
gen voice_conversion voice_conversion_a --seed 504 $(s3 flow_vocab_size=6561) \
    --param source_rate=22050 --param source_seconds=2.0 --param target_rate=48000 --param target_channels=1 \
    --param target_subtype='"PCM_24"' --param target_seconds=2.0

# ---- text
gen text text_a --seed 0

# ---- text -> waveform end to end: ChatterboxTTS.generate itself. The T3's speech BOS/EOS sit where the real
# ones do relative to the flow's vocabulary (BOS = flow_vocab_size, EOS = BOS + 1, nothing above EOS); the stop
# token's head row is scaled so that a random T3 stops within a few steps.
GEN="$(d hidden_size=64 num_attention_heads=1 num_hidden_layers=1 intermediate_size=32 text_tokens_dict_size=256 \
        speech_tokens_dict_size=83 start_speech_token=81 stop_speech_token=82 max_text_tokens=30 max_speech_tokens=30 \
        perceiver_num_heads=1 perceiver_query_tokens=8 speech_cond_prompt_len=24 speaker_embed_size=64) \
     $(s3 flow_vocab_size=81 encoder_linear_units=16 decoder_channels=8 hift_base_channels=16 f0_cond_channels=16) \
     --param tokenizer_vocab_size=256 --param stop_logit_gain=2.0"
# built-in-like voice, generate's default sampler, exaggeration 0.7 (!= the voice's 0.5); the T3 samples its BOS
# mid-way and then its stop token: drop_invalid_tokens keeps the 4 tokens between them
gen tts_generate tts_generate_a --seed 749 $GEN --param text='"hello world... it’s — a test"' --param exaggeration=0.7 \
    --param max_new_tokens=12 --param require='"stop"' --param require_bos=true
# cloned voice (generate's audio_prompt_path: prepare_conditionals on 0.6 s of audio), other sampler settings; runs
# to max_new_tokens without a stop token
gen tts_generate tts_generate_b --seed 900 $GEN --param text='"Quiet;  “please”   –  now: ok…"' --param voice='"clone"' \
    --param ref_seconds=0.6 --param max_new_tokens=4 --param exaggeration=0.35 --param cfg_weight=0.3 \
    --param temperature=1.1 --param repetition_penalty=1.5 --param min_p=0.1 --param top_p=0.9 --param require='"cap"'
