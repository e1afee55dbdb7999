"""Benchmark tasks: facts hidden at a chosen depth of a long history of real prose, seeded and offline.

    make_needle_examples(kind, lang, n_chars, depth, n=1, seed=0)   # -> [sources.Example]

Kinds (`KINDS`), after RULER (Hsieh et al. 2024, Apache-2.0; its templates, regenerated here):
* `niah_single`      one needle "One of the special magic numbers for <key> is: <value>.", asked;
* `niah_multikey`    the asked needle plus 3 needles of other keys (distractors at random depths);
* `niah_multivalue`  4 needles of one key with different values; the answer is all 4, in text order;
* `niah_multiquery`  4 needles of 4 keys; two are asked, the answer is both values in asked order;
* `vt`               variable tracking: "VAR QXKZB = 43817." then "VAR MHTRD = VAR QXKZB." ... a
                     chain of 4 names; asked which variables hold the value (all 4, in chain order);
* `conversation`     a multi-session chat: the user states facts about themself (and, at random,
                     corrects one later); after many more turns the question asks the latest value.
The asked fact (the first needle, the chain's head, or the latest statement of the asked fact)
starts at `depth` of the history (0 = start, 1 = end) to within one sentence (one turn in chats).
Haystack: English from the King James Bible (Ruth, Esther, Jonah, Genesis 37-50), Chinese from
Three Hundred Tang Poems (ocrmem/tasks/corpora/README.md: sources and licences). The same arguments always
give the same examples (a string-seeded `random.Random` per example).
"""

from __future__ import annotations

import random

from ocrmem.data.sources import Example
from ocrmem.tasks.haystack import LANGS, haystack, insert_at, join

KINDS = ("niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery", "vt", "conversation")
_KEY_WORDS = (
    "amber", "brisk", "calm", "dusty", "eager", "fancy", "gentle", "hollow", "icy", "jolly", "keen", "lucky",
    "misty", "noble", "olive", "proud", "quick", "rusty", "silent", "tidy", "vivid", "witty", "young", "zesty",
)  # fmt: skip
_KEY_NOUNS = (
    "anchor", "barrel", "candle", "dragon", "engine", "falcon", "garden", "harbor", "island", "jacket", "kettle",
    "ladder", "mirror", "needle", "orchard", "pencil", "quartz", "rocket", "saddle", "tunnel", "violin", "wagon",
)  # fmt: skip
_KEY_ZH = ("红木", "青松", "白云", "金桥", "银河", "古井", "铁塔", "石门", "竹林", "玉兰", "雪山", "海港",
           "钟楼", "灯塔", "花园", "木船", "纸鸢", "铜镜", "琴台", "画廊")  # fmt: skip
TEMPLATES = {
    "en": {"needle": "One of the special magic numbers for {key} is: {value}.",
           "ask_one": "What is the special magic number for {key} mentioned in the provided text? Answer with "
                      "the number only.",
           "ask_all": "What are all the special magic numbers for {key} mentioned in the provided text? Answer "
                      "with the numbers only, in the order they appear.",
           "ask_two": "What are the special magic numbers for {key} and {key2} mentioned in the provided text? "
                      "Answer with the two numbers only.",
           "var": "VAR {name} = {value}.", "var_ref": "VAR {name} = VAR {ref}.",
           "ask_vt": "Find all variables that are assigned the value {value} in the text above. Answer with the "
                     "variable names only, in order."},
    "zh": {"needle": "{key}的一个特殊魔法数字是：{value}。",
           "ask_one": "文中提到的{key}的特殊魔法数字是什么？只回答数字。",
           "ask_all": "文中提到的{key}的所有特殊魔法数字是什么？按出现顺序只回答数字。",
           "ask_two": "文中提到的{key}和{key2}的特殊魔法数字是什么？只回答这两个数字。",
           "var": "变量 {name} = {value}。", "var_ref": "变量 {name} = 变量 {ref}。",
           "ask_vt": "找出文中所有被赋值为 {value} 的变量。按顺序只回答变量名。"},
}  # fmt: skip


def magic_number(rng: random.Random, taken: set[str]) -> str:
    while True:
        v = str(rng.randrange(1_000_000, 10_000_000))
        if v not in taken:
            taken.add(v)
            return v


def needle_keys(rng: random.Random, lang: str, k: int) -> list[str]:
    if lang == "zh":
        return rng.sample(_KEY_ZH, k)
    pairs = set()
    while len(pairs) < k:
        pairs.add(f"{rng.choice(_KEY_WORDS)}-{rng.choice(_KEY_NOUNS)}")
    return rng.sample(sorted(pairs), k)


def _niah(rng: random.Random, kind: str, lang: str, n_chars: int, depth: float) -> tuple[str, str, str, dict]:
    t, taken = TEMPLATES[lang], set()
    keys = needle_keys(rng, lang, 1 if kind in ("niah_single", "niah_multivalue") else 4)
    if kind == "niah_multivalue":
        facts = [(keys[0], magic_number(rng, taken)) for _ in range(4)]
    else:
        facts = [(k, magic_number(rng, taken)) for k in keys]
    needles = [t["needle"].format(key=k, value=v) for k, v in facts]
    depths = [depth] + sorted(rng.random() for _ in needles[1:])
    if kind == "niah_multivalue":  # the first of the values at `depth`, the others after it, in order
        depths = [depth] + sorted(depth + (1 - depth) * rng.random() for _ in needles[1:])
    units = haystack(rng, lang, n_chars - sum(map(len, needles)))
    history = join(insert_at(units, list(zip(depths, needles))), lang)
    if kind == "niah_multivalue":
        prompt, target = t["ask_all"].format(key=keys[0]), " ".join(v for _, v in facts)
    elif kind == "niah_multiquery":
        prompt = t["ask_two"].format(key=keys[0], key2=keys[1])
        target = f"{facts[0][1]} {facts[1][1]}"
    else:
        prompt, target = t["ask_one"].format(key=keys[0]), facts[0][1]
    return history, prompt, target, {"needle": needles[0], "key": keys[0], "n_needles": len(needles)}


def _var_name(rng: random.Random, taken: set[str]) -> str:
    while True:
        name = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))
        if name not in taken:
            taken.add(name)
            return name


def _vt(rng: random.Random, lang: str, n_chars: int, depth: float, hops: int = 4) -> tuple[str, str, str, dict]:
    """RULER's variable tracking: one chain of `hops` names, the head (the value) at `depth`."""
    t, names = TEMPLATES[lang], set()
    value = magic_number(rng, set())[:5]
    chain = [_var_name(rng, names) for _ in range(hops)]
    needles = [t["var"].format(name=chain[0], value=value)]
    needles += [t["var_ref"].format(name=b, ref=a) for a, b in zip(chain, chain[1:])]
    depths = [depth] + sorted(depth + (1 - depth) * rng.random() for _ in chain[1:])
    units = haystack(rng, lang, n_chars - sum(map(len, needles)))
    history = join(insert_at(units, list(zip(depths, needles))), lang)
    return history, t["ask_vt"].format(value=value), " ".join(chain), {"needle": needles[0], "key": chain[0],
                                                                        "n_needles": hops}


def make_needle_examples(kind: str, lang: str, n_chars: int, depth: float, n: int = 1, seed: int = 0,
                         id_prefix: str = "bench") -> list[Example]:
    """`n` examples of `kind` in `lang`: a history of about `n_chars` characters with the asked fact
    starting at `depth` (0..1). meta: kind, lang, depth, length_chars (asked), chars (actual),
    depth_actual (the asked fact's start / the room before and after it), needle, key, n_needles."""
    from ocrmem.tasks.conversation import conversation

    if kind not in KINDS:
        raise ValueError(f"benchmark kind {kind!r}: use one of {', '.join(KINDS)}")
    if lang not in LANGS:
        raise ValueError(f"benchmark lang {lang!r}: use one of {', '.join(LANGS)}")
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"benchmark depth {depth}: use a fraction from 0 to 1")
    out = []
    for i in range(n):
        rng = random.Random(f"{seed}/{kind}/{lang}/{n_chars}/{depth}/{i}")
        if kind == "vt":
            history, prompt, target, meta = _vt(rng, lang, n_chars, depth)
        elif kind == "conversation":
            history, prompt, target, meta = conversation(rng, lang, n_chars, depth)
        else:
            history, prompt, target, meta = _niah(rng, kind, lang, n_chars, depth)
        at = history.index(meta["needle"])
        room = max(1, len(history) - len(meta["needle"]))
        meta = {"kind": kind, "lang": lang, "depth": depth, "length_chars": n_chars, "chars": len(history),
                "depth_actual": round(at / room, 4), **meta}
        ex_id = f"{id_prefix}-{kind}-{lang}-{n_chars}-d{round(depth * 100):03d}-{i:03d}"
        out.append(Example(id=ex_id, history=history, prompt=prompt, target=target, meta=meta))
    return out
