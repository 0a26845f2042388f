"""Checks `tts serve` with the `openai` Python client (pip install openai): a whole WAV, a streamed
PCM response, the same as server-sent events, a refused format, the voice list and, when a key is
given, a wrong key.

    tts serve --model tests/fixtures/tts_generate_a --backend cpu --port 8000 --api-key K &
    python tools/serve/openai_check.py --url http://127.0.0.1:8000/v1 --key K --max-new-tokens 8

Exits non-zero on the first failed check. (--max-new-tokens 8: the tiny fixture's T3 takes 30.)
`bash scripts/openai-check.sh` does all of it (CI runs it).
"""
import argparse
import base64
import io
import json
import wave

import openai

p = argparse.ArgumentParser()
p.add_argument("--url", default="http://127.0.0.1:8000/v1")
p.add_argument("--key", default="none")
p.add_argument("--max-new-tokens", type=int, default=None)
a = p.parse_args()
extra = {} if a.max_new_tokens is None else {"max_new_tokens": a.max_new_tokens}
c = openai.OpenAI(base_url=a.url, api_key=a.key)

r = c.audio.speech.create(model="tts-1", voice="alloy", input="Hello there, how are you?", response_format="wav",
                          extra_body={**extra, "seed": 5})
w = wave.open(io.BytesIO(r.content))
assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (24000, 2, 1), w.getparams()
assert w.getnframes() > 0
print(f"whole wav: {w.getnframes()} samples at 24 kHz")

with c.audio.speech.with_streaming_response.create(model="tts-1", voice="nova", input="Hello there.",
                                                   response_format="pcm",
                                                   extra_body={**extra, "stream_format": "audio"}) as s:
    assert s.headers.get("transfer-encoding") == "chunked", s.headers
    n = sum(len(b) for b in s.iter_bytes())
assert n > 0 and n % 2 == 0, n
print(f"streamed pcm: {n // 2} samples")

# the same request as server-sent events: the deltas' audio is the streamed PCM
with c.audio.speech.with_streaming_response.create(model="tts-1", voice="nova", input="Hello there.",
                                                   response_format="pcm",
                                                   extra_body={**extra, "stream_format": "audio", "seed": 7}) as s:
    pcm = b"".join(s.iter_bytes())
with c.audio.speech.with_streaming_response.create(model="tts-1", voice="nova", input="Hello there.",
                                                   response_format="pcm",
                                                   extra_body={**extra, "stream_format": "sse", "seed": 7}) as s:
    assert s.headers.get("content-type") == "text/event-stream", s.headers
    events = [json.loads(line[len("data: "):]) for line in s.iter_lines() if line.startswith("data: ")]
assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1), events
assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["output_tokens"] > 0, events[-1]
sse_pcm = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
assert sse_pcm == pcm, (len(sse_pcm), len(pcm))
print(f"sse: {len(events) - 1} speech.audio.delta events, the same {len(pcm) // 2} samples as the audio stream")

voices = c.get("/voices", cast_to=object)
assert voices["data"][0]["id"] == "default", voices
print(f"voices: {[v['id'] for v in voices['data']]}")

try:
    c.audio.speech.create(model="tts-1", voice="alloy", input="hi", response_format="mp3")
    raise SystemExit("mp3 was not refused")
except openai.BadRequestError as e:
    assert e.status_code == 400 and e.body["param"] == "response_format", e.body
print("mp3: 400 naming response_format")

if a.key != "none":
    bad = openai.OpenAI(base_url=a.url, api_key=a.key + "x")
    try:
        bad.audio.speech.create(model="tts-1", voice="alloy", input="hi")
        raise SystemExit("a wrong key was accepted")
    except openai.AuthenticationError as e:
        assert e.status_code == 401
    print("wrong key: 401")
print("ok")
