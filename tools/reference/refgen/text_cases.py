"""Text case: punc_norm + EnTokenizer over tricky strings, through a structurally-equivalent tokenizer.json.

The real Chatterbox tokenizer.json (HF hub) cannot be downloaded here, so `build_tokenizer_json` builds one
with the same structure (BPE, unk [UNK], no continuing-subword prefix, no byte fallback, Whitespace
pre-tokenizer, null normalizer, 704 entries, [STOP]=0 [UNK]=1 [SPACE]=2 [START]=255 and the other special
and event tokens as added tokens) and a vocabulary / merge list learned deterministically from a built-in
English text. Ids differ from the real file; the algorithm and the file structure do not."""
from __future__ import annotations

import json
from collections import Counter

import torch

from chatterbox.tts import punc_norm
from chatterbox.models.tokenizers import EnTokenizer

from .common import Case

SPECIALS = {"[STOP]": 0, "[UNK]": 1, "[SPACE]": 2, "[PAD]": 3, "[SEP]": 4, "[CLS]": 5, "[MASK]": 6,
            "[START]": 255}
EVENT_TAGS = ["[laughter]", "[giggle]", "[sigh]", "[cough]", "[breath]", "[gasp]", "[clear_throat]",
              "[sniff]", "[groan]", "[whisper]"]
VOCAB_SIZE = 704

CORPUS = """
The quick brown fox jumps over the lazy dog. Speech synthesis turns written text into natural sounding audio,
and a good voice should read numbers like 1, 2, 3, 42 and 2025 without trouble. She said that the weather was
lovely today, although there might be some rain later in the evening. When the music started everyone began
to dance, laughing and singing along with the band. Please remember to bring your passport, your ticket and
a warm jacket for the journey. The committee will meet again on Thursday to discuss the proposal in detail.
I can't believe it's already been three years since we moved into this house! Would you like a cup of tea or
coffee? Scientists have discovered a new species of frog in the rainforest, which is about the size of a
thumbnail. Reading aloud helps children learn new words and improves their pronunciation. Hello world, this
is a test of the emergency broadcast system. Thank you very much for listening, and have a wonderful day.
Innovation distinguishes between a leader and a follower. Generation, station, nation, information,
communication, conversation, education, imagination. Running, jumping, swimming, thinking, talking, walking.
Mr. Smith and Dr. Jones were there; they weren't happy about it. What's the time? It's half past seven.
about above across after again against almost alone along already always among another answer anything
around asked away back because become before began behind being believe below best better between beyond
black blue body book both bring brother build business called came cannot carry cause certain change child
children city close cold color common company complete could country course cover cross current dark daughter
death decide deep different direction doctor does door down draw dream drive during early earth easy eight
either energy enough evening every example experience explain family father feel field figure final find
fire first five floor follow food force form forward four free friend from front full game garden general
given glass good government great green ground group grow half hand happen hard have head health hear heart
heavy help here high history hold home hope horse hour house human hundred idea important inside island just
keep kind king know land language large last late learn leave letter life light like line listen little live
long look love machine made make many market matter maybe mean measure memory middle might million mind minute
money month more morning mother mountain move much music must name near need never next night nothing notice
number object ocean office often open order other outside over page paper part party people perhaps person
picture piece place plan plant play point power present problem produce product public question quick quite
rather reach ready real reason record remember report rest result return right river road rock room round
school science second seem sentence serve several shape short should show side simple since single sister
small social something sound south space special stand start state still stone story strong student study
summer system table take teacher tell than their them there these thing third those thought thousand three
through together toward travel tree true turn under understand until usual very voice watch water while white
whole why wind window winter without woman wonder word work world write wrong year young yourself
"""


def _learn_merges(words: Counter, n_merges: int):
    """Plain BPE: repeatedly merge the most frequent adjacent pair; ties -> lexicographically smallest pair."""
    seqs = {w: list(w) for w in words}
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for w, c in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        for w in seqs:
            s = seqs[w]
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return merges


def build_tokenizer_json(vocab_size: int = VOCAB_SIZE) -> dict:
    """The tokenizer.json, `vocab_size` entries (704 as the real file; a smaller one learns fewer merges)."""
    import re
    chars = [chr(c) for c in range(33, 127)] + list("éèàçüöäñß’“”—–…")
    words = Counter(re.findall(r"\w+|[^\w\s]+", CORPUS))
    added = dict(SPECIALS)
    for i, t in enumerate(EVENT_TAGS):
        added[t] = 7 + i
    vocab_tokens = []
    for ch in chars:
        if ch not in vocab_tokens:
            vocab_tokens.append(ch)
    n_free = vocab_size - len(added) - len(vocab_tokens)
    merges = _learn_merges(words, n_free)
    for a, b in merges:
        vocab_tokens.append(a + b)
    # assign ids: the fixed added-token ids first, then everything else in order, skipping taken ids
    vocab = dict(added)
    taken = set(added.values())
    nxt = 0
    for t in vocab_tokens:
        if t in vocab:
            continue
        while nxt in taken:
            nxt += 1
        vocab[t] = nxt
        taken.add(nxt)
    assert len(vocab) <= vocab_size, len(vocab)
    added_tokens = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                     "normalized": False, "special": True} for t, i in sorted(added.items(), key=lambda kv: kv[1])]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added_tokens,
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": "[UNK]", "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": dict(sorted(vocab.items(), key=lambda kv: kv[1])),
            "merges": [f"{a} {b}" for a, b in merges],
        },
    }


TEXTS = [
    "",
    "   ",
    "hello world",
    "Hello   world\tand\nnew lines",
    "Wait... what?",
    "Unicode… ellipsis…",
    "Colon: semicolon; dash - here",
    "em—dash and en–dash",
    "“Smart quotes” and ‘single’ ones",
    "It’s done",
    "ß is sharp",
    "ﬁne ligature first",
    "ǆ digraph",
    "élan vital",
    "123 numbers 4.56 and 7,890 then 1st 2nd",
    "MiXeD CaSe TeXt",
    "no ending punctuation",
    "Ends with a comma,",
    "Question?",
    "Exclamation!",
    "trailing spaces   ",
    "  leading spaces",
    "[laughter] that was funny [sigh]",
    "emoji 😀 and 中文 unknown chars",
    "a",
    " , spaced comma , here",
    "tabs\tbetween\twords - and dashes",
    "Mr. Smith's e-mail: test@example.com; ok",
    ("This is a very long sentence that keeps going, with many clauses and words, to check that nothing is "
     "truncated anywhere in the pipeline; it mentions numbers like 12345 and 678.9, quotes “like this”, "
     "ellipses... and more… and it ends without any punctuation at all ") * 4,
]


def case_text(case: Case, dims, params, seed):
    tj = build_tokenizer_json()
    path = case.file("tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False, indent=1)
        f.write("\n")
    tok = EnTokenizer(str(path))
    items = []
    for i, text in enumerate(TEXTS):
        norm = punc_norm(text)
        ids = tok.text_to_tokens(norm)[0].long()
        case.input(f"text_{i:02d}", torch.tensor([ord(c) for c in text], dtype=torch.long))
        case.expect(f"normalized_{i:02d}", torch.tensor([ord(c) for c in norm], dtype=torch.long),
                    note="punc_norm(text) as unicode code points", compare="exact")
        case.expect(f"token_ids_{i:02d}", ids, note="EnTokenizer.text_to_tokens(punc_norm(text)), no SOT/EOT",
                    compare="exact")
        items.append({"index": i, "text": text, "normalized": norm, "token_ids": ids.tolist()})
    case.params.update({
        "tokenizer_note": "structurally-equivalent tokenizer.json built by tools/reference/refgen/text_cases.py "
                          "(the real Chatterbox vocabulary was not available); same BPE/Whitespace/added-token "
                          "structure, 704 entries, [START]=255 [STOP]=0 [UNK]=1 [SPACE]=2",
        "vocab_size": len(tj["model"]["vocab"]),
        "cases": items,
    })
