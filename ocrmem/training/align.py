"""Projector alignment: put each memory token where the LLM's own embeddings of the text it shows lie.

A frozen LLM reads text embeddings, so the cheapest way to make OCR memory readable is to map each
memory token (k consecutive recognizer frames of a line) onto the sum of the LLM input embeddings of
the tokens whose characters those frames show. Which characters they show comes from the image
alone: the recognizer's own CTC head reads the cached neck features (greedy CTC, one frame per
emitted character), and the base LLM's tokenizer splits that reading into tokens. The regression
needs no LLM forward pass, so thousands of steps take seconds on a CPU; the LLM-in-the-loop
objectives (qa, reconstruct) then start from a projector whose output already looks like text.
LLaVA and DeepSeek-OCR align their projectors first for the same reason.

    train.align_steps: 2000     # 0 turns it off; needs encoder ppocr_rec with recognizer_layer neck
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from ocrmem.memory.lines import row_caps

CHUNK = 64  # lines read back by the CTC head at once (~460 MB of logits)


def ctc_frames(best: np.ndarray, alphabet: list[str]) -> tuple[str, list[float]]:
    """Greedy CTC of one line's per-frame argmax: the text read and each character's centre frame."""
    change = np.flatnonzero(np.diff(best)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(best)]]) - 1
    keep = best[starts] != 0
    text = "".join(alphabet[i] for i in best[starts][keep])
    return text, list(((starts + ends) / 2)[keep])


def line_targets(text: str, centres: list[float], tokenizer, embeddings: torch.Tensor, k: int, n_tokens: int):
    """Target [n_tokens, D] of one line: each LLM token of the reading added into the memory token
    (window of k frames) that holds its characters' mean centre; and how many tokens each got."""
    target = torch.zeros(n_tokens, embeddings.shape[1])
    count = torch.zeros(n_tokens)
    if not text:
        return target, count
    enc = tokenizer(" " + text, add_special_tokens=False, return_offsets_mapping=True)  # a line continues a text
    for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]):
        chars = [i - 1 for i in range(max(a, 1), b) if text[i - 1] != " "] or [min(max(a - 1, 0), len(text) - 1)]
        w = min(n_tokens - 1, int(np.mean([centres[i] for i in chars]) // k))
        target[w] += embeddings[tid].float()
        count[w] += 1
    return target, count


def alignment_targets(features: torch.Tensor, page_lines: list[list[int]], encoder, tokenizer,
                      embeddings: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets [P, tokens, D] and LLM-token counts [P, tokens] for cached pages [P, lines x T, C] and the
    caps of each page's lines (`ocrmem.memory.lines`); counts are -1 on the tokens the model drops (blank
    lines, and blank tails past a line's cap)."""
    n_lines, frames = len(encoder.boxes), encoder.frames
    lines = features.reshape(len(features), n_lines, frames, features.shape[-1])
    drawn = [(p, line, cap) for p, caps in enumerate(page_lines) for line, cap in enumerate(caps) if cap]
    # Only drawn lines, CHUNK at a time: the CTC head has 18,710 classes, so the logits of every line
    # at once take 7 MB a line (1,024 sheets of 3 lines: 22 GB, killed by the OOM killer).
    best = [b for i in range(0, len(drawn), CHUNK)
            for b in encoder.ctc_argmax(torch.stack([lines[p, line] for p, line, _ in drawn[i:i + CHUNK]]))]
    per_line = frames // k
    targets = torch.zeros(len(features), n_lines * per_line, embeddings.shape[1])
    counts = torch.full((len(features), n_lines * per_line), -1.0)
    for (p, line, cap), b in zip(drawn, best):
        text, centres = ctc_frames(b, encoder.alphabet)
        t, c = line_targets(text, centres, tokenizer, embeddings, k, per_line)
        n = min(cap, per_line)
        targets[p, line * per_line:line * per_line + n] = t[:n]
        counts[p, line * per_line:line * per_line + n] = c[:n]
    return targets, counts


def align_projector(projector, features: torch.Tensor, targets: torch.Tensor, counts: torch.Tensor, steps: int,
                    lr: float, batch_size: int = 256, seed: int = 0, log=print) -> dict:
    """Regress the projector's memory tokens of drawn lines onto their targets (MSE in units of the
    embedding scale). Tokens are pooled once and sampled flat: blank lines cost no step time."""
    with torch.no_grad():
        used = counts >= 0
        x, y = projector.pool(features.to(projector.norm.weight.dtype))[used], targets[used]
    opt = torch.optim.AdamW([p for p in projector.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    scale = float(projector.out_scale) ** 2
    t0, losses = time.perf_counter(), []
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=gen)
        loss = F.mse_loss(projector.project(x[idx]).float(), y[idx]) / scale
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % max(1, steps // 5) == 0 or step == steps:
            log(f"align step {step}/{steps}: loss {np.mean(losses[-50:]):.4f}")
    return {"align_steps": steps, "align_loss": float(np.mean(losses[-50:])), "align_seconds": time.perf_counter() - t0}


@torch.no_grad()
def token_accuracy(projector, features: torch.Tensor, targets: torch.Tensor, counts: torch.Tensor,
                   embeddings: torch.Tensor) -> float:
    """Of the memory tokens that hold exactly one LLM token, the share whose output's nearest input
    embedding (cosine) is that token: how text-like the aligned memory is."""
    one = counts == 1
    if not one.any():
        return float("nan")
    emb = F.normalize(embeddings.float(), dim=-1)
    out = F.normalize(projector(features).float()[one], dim=-1)
    want = (emb @ F.normalize(targets[one], dim=-1).T).argmax(0)
    return float(((emb @ out.T).argmax(0) == want).float().mean())


def align(settings, model, rows: list[dict], pages) -> dict:
    """The alignment phase of `ocrmem train`: regress the projector on the training pages' readings.

    `pages` maps a manifest row to its cached features (dataset.CachedPages); rows without pages
    are skipped. Returns its figures (steps, loss, seconds, single-token accuracy before/after)."""
    from ocrmem.common.tracking import print0

    enc, k = model.encoder.encoder, model.projector.pool.k
    rows = [r for r in rows if r["pages"]]
    feats = torch.cat([pages(r) for r in rows]).float()
    lines = [m for r in rows for m in row_caps(r)]
    emb = model.llm.get_input_embeddings().weight.detach()
    t0 = time.perf_counter()
    targets, counts = alignment_targets(feats, lines, enc, model.tokenizer, emb, k)
    print0(f"align: {len(feats)} pages read back by the recognizer's CTC head in {time.perf_counter() - t0:.1f}s; "
           f"memory tokens holding 0/1/2+ LLM tokens: {_shares(counts)}")
    before = token_accuracy(model.projector, feats, targets, counts, emb)
    tr = settings.train
    figures = align_projector(model.projector, feats, targets, counts, tr.align_steps, tr.align_learning_rate, seed=tr.seed,
                              log=print0)
    figures.update(align_token_accuracy_before=before,
                   align_token_accuracy=token_accuracy(model.projector, feats, targets, counts, emb))
    print0(f"align: single-token memory tokens nearest to their token {before:.3f} -> "
           f"{figures['align_token_accuracy']:.3f} ({figures['align_seconds']:.1f}s)")
    return figures


def _shares(counts: torch.Tensor) -> str:
    c = counts[counts >= 0]
    return "/".join(f"{float(x):.2f}" for x in ((c == 0).float().mean(), (c == 1).float().mean(),
                                                 (c >= 2).float().mean()))
