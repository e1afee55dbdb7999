"""The `conversation` benchmark kind: a multi-session chat in which the user states facts about
themself, sometimes corrects one later, and is asked after many more turns; the answer is the
latest value. Used by ocrmem/tasks/needles.py (`make_needle_examples(kind="conversation", ...)`).

Turns are lines ("User: ...", "Assistant: ..."), a "Session k" line every `TURNS_PER_SESSION` turns;
small talk is drawn from the same public-domain haystack as the other kinds.
"""

from __future__ import annotations

import random

from ocrmem.tasks.haystack import haystack, insert_at

TURNS_PER_SESSION = 10
# slot: (English phrase, Chinese phrase, English values, Chinese values)
SLOTS = {
    "colour": ("my favourite colour", "我最喜欢的颜色",
               ("red", "blue", "green", "yellow", "purple", "orange", "black", "white"),
               ("红色", "蓝色", "绿色", "黄色", "紫色", "橙色", "黑色", "白色")),
    "pet": ("my dog's name", "我的狗的名字",
            ("Biscuit", "Rex", "Luna", "Max", "Pepper", "Rocky", "Daisy", "Milo"),
            ("小白", "阿黄", "豆豆", "旺财", "花花", "球球", "毛毛", "乐乐")),
    "city": ("the city I live in", "我住的城市",
             ("Paris", "Lima", "Oslo", "Cairo", "Dublin", "Quito", "Seoul", "Perth"),
             ("北京", "上海", "广州", "成都", "西安", "杭州", "南京", "武汉")),
    "drink": ("my favourite drink", "我最喜欢的饮料",
              ("tea", "coffee", "milk", "juice", "cocoa", "water", "lemonade", "cider"),
              ("茶", "咖啡", "牛奶", "果汁", "可乐", "豆浆", "酸奶", "汽水")),
}  # fmt: skip
_SAY = {"en": ("User: {Phrase} is {value}.", "User: Actually, {phrase} is now {value}."),
        "zh": ("用户：{Phrase}是{value}。", "用户：更正一下，{phrase}现在是{value}。")}
_ASK = {"en": "What is {phrase} now, according to our conversation? Answer with one word.",
        "zh": "根据我们的对话，{phrase}现在是什么？只回答一个词。"}
_SPEAKERS = {"en": ("User: ", "Assistant: "), "zh": ("用户：", "助手：")}
_SESSION = {"en": "Session {k}", "zh": "第{k}次对话"}


def chat_turns(rng: random.Random, lang: str, n_chars: int) -> list[str]:
    """Small-talk turns (alternating speakers, session headers) adding up to about n_chars."""
    sents = haystack(rng, lang, n_chars)
    turns = []
    for i, s in enumerate(sents):
        if i % TURNS_PER_SESSION == 0:
            turns.append(_SESSION[lang].format(k=i // TURNS_PER_SESSION + 1))
        turns.append(_SPEAKERS[lang][i % 2] + s)
    return turns


def _statements(rng: random.Random, lang: str, slot: str, latest_at: float, may_update: bool):
    """[(depth, turn)] of one fact: its latest statement at `latest_at`; when updated, the first
    statement (another value) at a random place before it. Returns (statements, latest value)."""
    en, zh, vals_en, vals_zh = SLOTS[slot]
    phrase, values = (en, vals_en) if lang == "en" else (zh, vals_zh)
    first, latest = rng.sample(values, 2)
    say, update = _SAY[lang]
    if may_update and latest_at > 0 and rng.random() < 0.5:
        return [(latest_at * rng.random() * 0.9, say.format(phrase=phrase, Phrase=_cap(phrase), value=first)),
                (latest_at, update.format(phrase=phrase, value=latest))], latest
    return [(latest_at, say.format(phrase=phrase, Phrase=_cap(phrase), value=latest))], latest


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def conversation(rng: random.Random, lang: str, n_chars: int, depth: float) -> tuple[str, str, str, dict]:
    """(history, prompt, target, meta) of one chat: 3 facts, the asked one's latest statement at `depth`."""
    slots = rng.sample(sorted(SLOTS), 3)
    asked, latest = _statements(rng, lang, slots[0], depth, may_update=True)
    needles = list(asked)
    for slot in slots[1:]:  # distractor facts, also sometimes corrected
        needles += _statements(rng, lang, slot, rng.random(), may_update=True)[0]
    turns = chat_turns(rng, lang, n_chars - sum(len(t) + 1 for _, t in needles))
    history = "\n".join(insert_at(turns, needles))
    phrase = SLOTS[slots[0]][0 if lang == "en" else 1]
    meta = {"needle": asked[-1][1], "key": slots[0], "n_needles": len(needles), "updated": len(asked) > 1}
    return history, _ASK[lang].format(phrase=phrase), latest, meta
