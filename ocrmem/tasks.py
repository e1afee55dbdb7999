"""The synthetic memory task: facts in a long history, a question about one of them, a one-word answer.

    make_synthetic(n, difficulty="easy", seed=0, split="train")   # data.source: synthetic

Levels (data.synthetic.difficulty) are in `DIFFICULTIES`; `make_synthetic` documents each.
"""

from __future__ import annotations

import random

from ocrmem.sources import SPLITS, Example

KEYS = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
)  # fmt: skip
VOCAB_16 = (
    "red", "blue", "green", "black", "white", "pink", "gold", "gray",
    "cat", "dog", "fox", "owl", "bee", "cow", "pig", "ant",
)  # fmt: skip
VOCAB_32 = VOCAB_16 + (
    "brown", "silver", "orange", "purple", "yellow", "violet", "tan", "navy",
    "bear", "wolf", "duck", "goat", "frog", "lion", "fish", "horse",
)  # fmt: skip
_FILLER_WORDS = (
    "the", "a", "river", "city", "morning", "quietly", "walked", "across", "old", "bridge", "while",
    "market", "opened", "early", "light", "rain", "fell", "over", "hills", "people", "talked", "about",
    "weather", "train", "arrived", "late", "someone", "carried", "letters", "garden", "window", "evening",
)  # fmt: skip

DIFFICULTIES = {
    # rows, vocabulary, blank line between rows, which rows are asked about
    "easy": (8, VOCAB_16, True, "first"),
    "medium": (8, VOCAB_16, True, "any"),
    "hard": (16, VOCAB_32, False, "any"),
    "prose": (8, VOCAB_32, None, "any"),
}


def _filler_sentence(rng: random.Random) -> str:
    words = [rng.choice(_FILLER_WORDS) for _ in range(rng.randint(6, 12))]
    return " ".join(words).capitalize() + "."


def make_synthetic(n: int, difficulty: str = "easy", seed: int = 0, split: str = "train") -> list[Example]:
    """`n` memory examples: facts in the history, a question about one of them, its one-word answer.

    easy:   a key-value sheet, 8 fixed keys in fixed order, one row per line with a blank line in
            between (row i always lands at the same place on the page), values from 16 words; the
            question is always about the first (oldest) row: recall of a word at a fixed place.
            A frozen SmolLM2 with a linear projector over pixel_lines tokens learns it on the CPU
            in ~75 steps (measured: 100% held-out at step 75, lr 3e-3, batch 8); the truncated-text
            baseline, which keeps the most recent tokens, loses that row.
    medium: the same sheet, the question about any row: the LLM must also route to the right
            memory token (measured: 2 rows ~30% at 125 steps, 8 rows at chance after 150: a GPU
            run, or more steps).
    hard:   16 rows, one per line, 32 words, any row.
    prose:  8 facts ("The code word for bravo is owl.") at random places in random filler prose:
            needs a real OCR encoder (deepseek_ocr2) and 1024px pages.
    Chance without memory: 1/16 (easy, medium), 1/32 (hard, prose). train and eval use disjoint
    seeded streams (seed*2 and seed*2+1); the same arguments always give the same examples.
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"data.synthetic.difficulty = {difficulty!r}: use one of {', '.join(DIFFICULTIES)}")
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: use one of {', '.join(SPLITS)}")
    rng = random.Random(seed * 2 + SPLITS.index(split))
    n_rows, vocab, spaced, asked = DIFFICULTIES[difficulty]
    keys = KEYS[:n_rows]
    out = []
    for i in range(n):
        values = [rng.choice(vocab) for _ in keys]
        q = 0 if asked == "first" else rng.randrange(n_rows)
        if difficulty == "prose":
            facts = [f"The code word for {k} is {v}." for k, v in zip(keys, values)]
            order = list(range(n_rows))
            rng.shuffle(order)
            sentences = [_filler_sentence(rng) for _ in range(2 * n_rows)]
            for j in order:  # each fact at a random place in the prose
                sentences.insert(rng.randrange(len(sentences) + 1), facts[j])
            history = " ".join(sentences)
            prompt = f"What is the code word for {keys[q]}? Answer with one word."
            continuation = None
        else:
            rows = [f"{k}: {v}" for k, v in zip(keys, values)]
            history = ("\n\n" if spaced else "\n").join(rows)
            prompt = f"What is the value of {keys[q]}? Answer with one word."
            continuation = None  # the sheet is complete: nothing follows it
        out.append(
            Example(
                id=f"syn-{difficulty}-{split}-{i:06d}",
                history=history,
                prompt=prompt,
                target=values[q],
                continuation=continuation,
                meta={"key": keys[q], "difficulty": difficulty, "row": q, "vocab_size": len(vocab)},
            )
        )
    return out
