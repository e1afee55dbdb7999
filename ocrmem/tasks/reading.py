"""The stage-1 reading corpus: texts the reader learns to read back from pages, with whole documents held out.

    make_reading_examples("train", n=512, n_chars=700, seed=0)   # -> [Example], meta["kind"] per text
    make_reading_examples("eval", n=16, n_chars=700, seed=0, kinds=EVAL_KINDS)

Kinds (`KINDS`): real prose in English and Chinese (the shipped public-domain corpora,
ocrmem/tasks/corpora/README.md: one KJV chapter / one Tang poem is a document, every HELD_OUT-th one is
held out for evaluation and never trained on); the same prose with its words shuffled and random
character strings, so the reader cannot lean on language priors (arXiv 2601.03714); chat-shaped text,
and logs full of numbers and identifiers. Nothing of a held-out document reaches the training split. The target of every example is its own text (the
`reconstruct` objective), so `history` is the text and the prompt and target are filled in by it.
"""

from __future__ import annotations

import random
import re
import string
from functools import lru_cache
from pathlib import Path

from ocrmem.data.sources import SPLITS, Example

KINDS = ("prose_en", "prose_zh", "shuffled_en", "random", "chat", "logs")
EVAL_KINDS = ("prose_en", "prose_zh", "shuffled_en", "random")  # the Fox table's rows
HELD_OUT = 7  # every 7th document of each corpus is held out
_FILES = {"en": "kjv_en.txt", "zh": "tang300_zh.txt"}
_ALPHABET = string.ascii_letters + string.digits + "-_.:/#@%+=,;"
_SENTENCE = re.compile(r"(?<=[.?!;:。！？；])\s*")
_SPEAKERS = {"en": ("User: ", "Assistant: "), "zh": ("用户：", "助手：")}


@lru_cache(maxsize=None)
def documents(lang: str, split: str) -> tuple[str, ...]:
    """The corpus of `lang` (one document a line), the split's share: eval keeps every HELD_OUT-th one."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: use one of {', '.join(SPLITS)}")
    text = (Path(__file__).parent / "corpora" / _FILES[lang]).read_text(encoding="utf-8")
    docs = [d.strip() for d in text.splitlines() if d.strip()]
    return tuple(d for i, d in enumerate(docs) if (i % HELD_OUT == HELD_OUT - 1) == (split == "eval"))


def _prose(rng: random.Random, lang: str, split: str, n_chars: int) -> str:
    """About n_chars of consecutive documents from a random place, in a random place of the first."""
    docs = documents(lang, split)
    i = rng.randrange(len(docs))
    out = docs[i][rng.randrange(max(1, len(docs[i]) - n_chars)):]
    while len(out) < n_chars:
        i = (i + 1) % len(docs)
        out += "\n" + docs[i]
    return out[:n_chars]


def _shuffled(rng: random.Random, split: str, n_chars: int) -> str:
    words = _prose(rng, "en", split, n_chars).split()
    rng.shuffle(words)
    return " ".join(words)[:n_chars]


def _chat(rng: random.Random, split: str, n_chars: int) -> str:
    """The split's prose as turns of a chat: a sentence a turn, speakers alternating."""
    lang = rng.choice(("en", "zh"))
    sents = [s for s in _SENTENCE.split(_prose(rng, lang, split, n_chars)) if s.strip()]
    return "\n".join(_SPEAKERS[lang][i % 2] + s.strip() for i, s in enumerate(sents))[:n_chars]


def _random(rng: random.Random, n_chars: int) -> str:
    words = []
    while sum(len(w) + 1 for w in words) < n_chars:
        words.append("".join(rng.choice(_ALPHABET) for _ in range(rng.randint(2, 12))))
    return " ".join(words)[:n_chars]


def _logs(rng: random.Random, n_chars: int) -> str:
    lines, t = [], rng.randrange(10**9)
    while sum(len(x) + 1 for x in lines) < n_chars:
        t += rng.randrange(1, 5000)
        lines.append(f"2026-{1 + t % 12:02d}-{1 + t % 28:02d} {t % 24:02d}:{t % 60:02d}:{(t // 7) % 60:02d} "
                     f"{rng.choice(['INFO', 'WARN', 'ERROR', 'DEBUG'])} worker-{rng.randrange(64)} "
                     f"req={rng.getrandbits(32):08x} {rng.choice(['GET', 'POST', 'PUT'])} "
                     f"/v{rng.randrange(1, 4)}/{rng.choice(['items', 'users', 'jobs'])}/{rng.randrange(10**6)} "
                     f"{rng.choice([200, 201, 204, 400, 404, 500])} {rng.randrange(1, 3000)}ms")
    return "\n".join(lines)[:n_chars]


def reading_text(kind: str, rng: random.Random, split: str, n_chars: int) -> str:
    if kind in ("prose_en", "prose_zh"):
        return _prose(rng, kind[-2:], split, n_chars)
    if kind == "shuffled_en":
        return _shuffled(rng, split, n_chars)
    if kind == "random":
        return _random(rng, n_chars)
    if kind == "chat":
        return _chat(rng, split, n_chars)
    if kind == "logs":
        return _logs(rng, n_chars)
    raise ValueError(f"reading kind {kind!r}: use one of {', '.join(KINDS)}")


def make_reading_examples(split: str, n: int, n_chars: int, seed: int = 0,
                          kinds: tuple[str, ...] = KINDS) -> list[Example]:
    """`n` texts of about `n_chars` (varied down to a third, so short and multi-line pages both occur),
    the kinds in turn; the same arguments always give the same examples."""
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        rng = random.Random(f"reading:{split}:{seed}:{i}")
        text = reading_text(kind, rng, split, rng.randint(max(1, n_chars // 3), n_chars)).strip() or "."
        out.append(Example(id=f"{kind}-{split}-{i:05d}", history=text, prompt="", target=text,
                           meta={"kind": kind}))
    return out
