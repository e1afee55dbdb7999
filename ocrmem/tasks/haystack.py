"""Haystacks of real prose for the long-history tasks: the shipped public-domain corpora, split into
sentences, and the helpers that place facts at a chosen depth of them. English from the King James
Bible, Chinese from Three Hundred Tang Poems (ocrmem/tasks/corpora/README.md: sources and licences).
"""

from __future__ import annotations

import random
import re
from functools import lru_cache
from pathlib import Path

LANGS = ("en", "zh")
CORPORA = {"en": "kjv_en.txt", "zh": "tang300_zh.txt"}
_SENTENCE_END = {"en": re.compile(r"(?<=[.?!;:])\s+"), "zh": re.compile(r"(?<=[。！？；])")}


@lru_cache(maxsize=None)
def corpus_sentences(lang: str) -> tuple[str, ...]:
    """The haystack: the shipped public-domain text of `lang`, split into sentences."""
    if lang not in LANGS:
        raise ValueError(f"lang {lang!r}: use one of {', '.join(LANGS)}")
    text = (Path(__file__).parent / "corpora" / CORPORA[lang]).read_text(encoding="utf-8")
    return tuple(s.strip() for line in text.splitlines() for s in _SENTENCE_END[lang].split(line) if s.strip())


def haystack(rng: random.Random, lang: str, n_chars: int) -> list[str]:
    """Consecutive corpus sentences from a random place (wrapping round) adding up to about n_chars."""
    sents = corpus_sentences(lang)
    i, out, total = rng.randrange(len(sents)), [], 0
    while total < n_chars:
        out.append(sents[i % len(sents)])
        total += len(out[-1]) + (lang == "en")
        i += 1
    return out


def join(units: list[str], lang: str) -> str:
    return (" " if lang == "en" else "").join(units)


def insert_at(units: list[str], needles: list[tuple[float, str]]) -> list[str]:
    """`units` with each (depth, needle) inserted at the unit boundary nearest that fraction of the
    units' characters: depth 0 is the very start, 1 the very end; needles at one depth keep their order."""
    cum = [0]
    for u in units:
        cum.append(cum[-1] + len(u) + 1)
    out = list(units)
    order = sorted(range(len(needles)), key=lambda j: (needles[j][0], j), reverse=True)
    for j in order:  # back to front: the indices still to come stay valid, ties keep their order
        target = needles[j][0] * cum[-1]
        out.insert(min(range(len(cum)), key=lambda k: abs(cum[k] - target)), needles[j][1])
    return out
