"""The prompt layout that training, evaluation and serving share: the chat-templated user turn with the
memory slot inside it, the clipped prompt, the scored target, and right-padding of a text batch.

One module so that a trained memory is read in serving exactly as it was trained (LLaVA keeps its
conversation template in one module for the same reason).
"""

from __future__ import annotations

import torch

PROMPTS = {"reconstruct": "Repeat the text of the memory pages exactly.", "continue": "Continue the text."}


def templated(tokenizer, content: str) -> str:
    """One user turn through the chat template, ready for the answer, under an empty system turn: a
    template's default system prompt (SmolLM2's is 17 tokens naming the model) is paid on every
    example of every condition and says nothing about the memory. A template with no system role
    (it raises on one) gets the user turn alone."""
    from jinja2.exceptions import TemplateError

    user = [{"role": "user", "content": content}]
    try:
        return tokenizer.apply_chat_template([{"role": "system", "content": ""}] + user, add_generation_prompt=True,
                                             tokenize=False)
    except TemplateError:
        return tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)


def chat_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids of a user turn ready for the answer (chat template where the tokenizer has one)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer(templated(tokenizer, prompt), add_special_tokens=False).input_ids
    return tokenizer(prompt + "\n").input_ids


MEMORY_PREFIX, MEMORY_SUFFIX = "Memory:\n", "\n\n"
MEMORY_SLOT = "\u2063OCRMEM_MEMORY\u2063"  # split point of the templated prompt


def memory_prompt(tokenizer, prompt: str, memory_ids: list[int] | None = None) -> tuple[list[int], int]:
    """The user turn "Memory:\\n<memory>\\n\\n<prompt>" through the chat template: (ids, memory_pos).

    Memory sits inside the user's message, where a chat LLM looks for content (as image tokens do in
    LLaVA), not before the system prompt. `memory_ids` (text memory) are spliced in verbatim at
    `memory_pos`; without them the slot is empty and OcrMemModel inserts the page embeddings there.
    Text memory and OCR memory thus get exactly the same surroundings.
    """
    content = f"{MEMORY_PREFIX}{MEMORY_SLOT}{MEMORY_SUFFIX}{prompt}"
    if getattr(tokenizer, "chat_template", None):
        head, tail = templated(tokenizer, content).split(MEMORY_SLOT)
        head_ids = tokenizer(head, add_special_tokens=False).input_ids
        tail_ids = tokenizer(tail, add_special_tokens=False).input_ids
    else:
        head, tail = content.split(MEMORY_SLOT)
        head_ids = tokenizer(head).input_ids
        tail_ids = tokenizer(tail + "\n", add_special_tokens=False).input_ids
    return head_ids + list(memory_ids or []) + tail_ids, len(head_ids)


def clip_prompt(tokenizer, prompt: str, max_tokens: int) -> str:
    """The most recent `max_tokens` tokens of a prompt (the question is at its end)."""
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    return prompt if len(ids) <= max_tokens else tokenizer.decode(ids[-max_tokens:])


def target_ids(tokenizer, target: str, max_target_tokens: int) -> list[int]:
    """Target tokens as training and evaluation score them: the first max_target_tokens, then EOS."""
    t = tokenizer(target, add_special_tokens=False).input_ids[:max_target_tokens]
    return t + [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else t


def pad_right(seqs: list[list[int]], value: int) -> torch.Tensor:
    """[len(seqs), longest] long tensor, each sequence from the left, `value` after it."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def pad_text(ids: list[list[int]], pad_id: int, labels: list[list[int]] | None = None) -> dict:
    """The right-padded text batch training, evaluation and inference share: input_ids and
    attention_mask (+ labels, -100 on padding, when given)."""
    batch = {"input_ids": pad_right(ids, pad_id), "attention_mask": pad_right([[1] * len(x) for x in ids], 0)}
    if labels is not None:
        batch["labels"] = pad_right(labels, -100)
    return batch
