"""Scoring of one answer and the compression buckets of the evaluation table.

exact_match (one-word targets: the first word of the answer; else the whole normalised answer),
the lenient `contains`, character precision of a reconstruction (1 - levenshtein / len), the Fox
table's word precision, and the Fox-table buckets of compression ratios (<2, 2-4, 4-8, 8-12, 12-16, >=16).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter

BUCKETS = ((0, 2), (2, 4), (4, 8), (8, 12), (12, 16), (16, math.inf))

_PUNCT = str.maketrans({c: " " for c in string.punctuation})
_CJK = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"
_WORD = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")  # a Chinese character, or a run of anything else but spaces


def normalize(s: str) -> str:
    """strip, lowercase, punctuation -> space, collapse whitespace."""
    return " ".join(s.strip().lower().translate(_PUNCT).split())


def exact_match(prediction: str, target: str) -> bool:
    """One-word targets: the first word of the prediction; otherwise the whole normalised string."""
    t, p = normalize(target), normalize(prediction)
    if len(t.split()) == 1:
        return (p.split() or [""])[0] == t
    return p == t


def contains(prediction: str, target: str) -> bool:
    """Lenient: the normalised target appears as whole words in the normalised prediction
    ("The value of delta is black." contains "black"). Reported beside exact_match."""
    t, p = normalize(target), normalize(prediction)
    return bool(t) and f" {t} " in f" {p} "


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute: cost 1), O(len(a) * len(b)) time, O(len(b)) memory."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def char_precision(prediction: str, source: str) -> float:
    """1 - levenshtein(prediction, source) / len(source), clamped to [0, 1]."""
    if not source:
        return 1.0 if not prediction else 0.0
    return max(0.0, 1.0 - levenshtein(prediction, source) / len(source))


def words(text: str) -> list[str]:
    """The Fox table's tokens: whitespace-separated words, and each Chinese character alone."""
    return _WORD.findall(text)


def word_precision(prediction: str, source: str) -> float:
    """The Fox table's precision: the share of the prediction's words found in the source, each word
    counted as often as it occurs (so repeating one right word scores no better than saying it once).
    It ignores what the prediction left out: `char_precision` is the score that counts it."""
    pred = Counter(words(prediction))
    return sum((pred & Counter(words(source))).values()) / sum(pred.values()) if pred else 0.0


def _bucket_name(lo: float, hi: float) -> str:
    return f"<{hi:g}" if lo == 0 else (f">={lo:g}" if hi == math.inf else f"{lo:g}-{hi:g}")


BUCKET_NAMES = [_bucket_name(lo, hi) for lo, hi in BUCKETS]


def bucket_of(compression: float) -> str:
    """The Fox-table bucket of a compression ratio: <2, 2-4, 4-8, 8-12, 12-16, >=16."""
    for (lo, hi), name in zip(BUCKETS, BUCKET_NAMES):
        if compression < hi:
            return name
    return BUCKET_NAMES[-1]


def bucket_order(name: str) -> int:
    return BUCKET_NAMES.index(name)


def mean(xs):
    """Mean of the values that are not None; None when there are none."""
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def rounded(x, nd=5):
    return None if x is None else round(float(x), nd)


def answer_loss(losses: list[tuple[float, int]]) -> float | None:
    """The answer loss of a set of examples, from (mean loss over its target tokens, target tokens) per
    example: the mean over all their target tokens (nats/token), so a long answer weighs as its tokens do.
    The one definition: evaluate's table and the benchmark's cells both use it."""
    ntok = sum(n for _, n in losses)
    return sum(x * n for x, n in losses) / ntok if ntok else None


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test of paired outcomes (ties dropped): the chance of a split at least this
    uneven between `wins` and `losses` if either side were equally likely to win each pair."""
    n, k = wins + losses, min(wins, losses)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)
