"""The synthetic memory task: facts in a long history, a question about one of them, a one-word answer.

    make_synthetic(n, difficulty="easy", seed=0, split="train")   # data.source: synthetic

Levels (data.synthetic.difficulty) are in `DIFFICULTIES`; `make_synthetic` documents each.
"""

from __future__ import annotations

import random

from ocrmem.data.sources import SPLITS, Example

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

KEYS_ZH = (
    "苹果", "香蕉", "月亮", "星星", "河流", "高山", "森林", "大海",
    "春天", "秋天", "火车", "飞机", "书本", "钢笔", "桌子", "窗户",
)  # fmt: skip
VOCAB_ZH = (
    "红", "蓝", "绿", "黑", "白", "金", "银", "紫",
    "猫", "狗", "马", "牛", "羊", "鸡", "鱼", "鸟",
)  # fmt: skip

DIFFICULTIES = {
    # rows, vocabulary, blank line between rows, which rows are asked about
    "easy": (8, VOCAB_16, True, "first"),
    "medium": (8, VOCAB_16, True, "any"),
    "hard": (16, VOCAB_32, False, "any"),
    "prose": (8, VOCAB_32, None, "any"),
    "lookup": (8, VOCAB_16, None, "any"),
    "lookup_zh": (8, VOCAB_ZH, None, "any"),
}
HELD_OUT = 4  # lookup levels: 1 in HELD_OUT (key, value) pairs is only ever asked in the eval split


def held_out_pair(key: str, value: str) -> bool:
    """The lookup levels' split of (key, value) pairs: eval asks only these, train never shows them."""
    keys, vocab = (KEYS_ZH, VOCAB_ZH) if key in KEYS_ZH else (KEYS, VOCAB_16)
    return (keys.index(key) + vocab.index(value)) % HELD_OUT == 0


def _lookup_sheet(rng: random.Random, split: str, zh: bool) -> tuple[str, str, str, str]:
    """(history, prompt, target, key) of one dense sheet: 8 of 16 keys in random order, written as
    one flowing line of "key: value;" pairs, so neither the row nor the place of the asked pair is fixed."""
    keys, vocab = (KEYS_ZH, VOCAB_ZH) if zh else (KEYS, VOCAB_16)
    chosen = rng.sample(keys, 8)
    q = rng.randrange(8)
    values = []
    for j, k in enumerate(chosen):
        allowed = [v for v in vocab if held_out_pair(k, v) == (split == "eval" and j == q)]
        values.append(rng.choice(allowed))
    if zh:
        history = "；".join(f"{k}：{v}" for k, v in zip(chosen, values)) + "。"
        prompt = f"{chosen[q]}的值是什么？只回答一个词。"
    else:
        history = "; ".join(f"{k}: {v}" for k, v in zip(chosen, values)) + "."
        prompt = f"What is the value of {chosen[q]}? Answer with one word."
    return history, prompt, values[q], chosen[q]


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
    lookup: the default. 8 of 16 keys in random order on flowing lines ("kilo: owl; alpha: red;
            ..."), any key asked: the memory must be read, not a fixed place on the page. The
            (key, value) pair asked in eval never appears in any training sheet (`held_out_pair`),
            so a projector cannot memorise answers.
    lookup_zh: the same in Chinese (16 two-character keys, 16 one-character values).
    Chance without memory: 1/16 (easy, medium), 1/32 (hard, prose). train and eval use disjoint
    seeded streams (seed*2 and seed*2+1); the same arguments always give the same examples.
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"data.synthetic.difficulty = {difficulty!r}: use one of {', '.join(DIFFICULTIES)}")
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: use one of {', '.join(SPLITS)}")
    rng = random.Random(seed * 2 + SPLITS.index(split))
    make = _lookup_example if difficulty.startswith("lookup") else _sheet_example
    return [make(rng, difficulty, split, i) for i in range(n)]


def _lookup_example(rng: random.Random, difficulty: str, split: str, i: int) -> Example:
    history, prompt, target, key = _lookup_sheet(rng, split, difficulty == "lookup_zh")
    return Example(id=f"syn-{difficulty}-{split}-{i:06d}", history=history, prompt=prompt, target=target,
                   meta={"key": key, "difficulty": difficulty, "vocab_size": len(DIFFICULTIES[difficulty][1])})


def _sheet_example(rng: random.Random, difficulty: str, split: str, i: int) -> Example:
    """easy, medium, hard (a key-value sheet, one row per line) and prose (facts inside filler prose)."""
    n_rows, vocab, spaced, asked = DIFFICULTIES[difficulty]
    keys = KEYS[:n_rows]
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
    else:
        history = ("\n\n" if spaced else "\n").join(f"{k}: {v}" for k, v in zip(keys, values))
        prompt = f"What is the value of {keys[q]}? Answer with one word."
    # continuation None: the sheet is complete, nothing follows it
    return Example(id=f"syn-{difficulty}-{split}-{i:06d}", history=history, prompt=prompt, target=values[q],
                   continuation=None, meta={"key": keys[q], "difficulty": difficulty, "row": q,
                                            "vocab_size": len(vocab)})
