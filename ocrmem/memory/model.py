"""OcrMemModel: memory pages -> frozen encoder -> projector -> embeddings before the text of a frozen LLM.

    model = OcrMemModel.build(load_settings("params.yaml"))          # fresh projector
    model = OcrMemModel.from_pretrained("checkpoints/adapter")       # trained adapter
    out = model(input_ids=..., attention_mask=..., labels=..., page_counts=..., features=...)

A batch holds text right-padded (`input_ids`, `attention_mask`, `labels` with -100 on prompt and
pad), the pages of all samples flattened (`pixel_values` [P, ...] or cached `features` [P, n, d])
and `page_counts` [B] saying how many pages each sample owns (0 is allowed). The model lays out
each sample as [memory tokens][text tokens], left-padded so generation continues every row at
the same column, with explicit position ids so padding never shifts positions.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ocrmem.common.errors import UserError, UserFileNotFoundError
from ocrmem.common.io import atomic_path, write_json
from ocrmem.memory import hub
from ocrmem.memory.encoder import DTYPES, FrozenEncoder, build_encoder
from ocrmem.memory.hub import ADAPTER_CONFIG, ADAPTER_WEIGHTS, hub_kwargs, load_tokenizer
from ocrmem.memory.lines import kept_tokens
from ocrmem.memory.projector import Projector, build_projector, pooled_tokens
from ocrmem.settings import ModelSettings, Settings

__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "OcrMemModel", "OcrMemOutput", "SoftPrompt", "load_llm", "read_adapter"]


@dataclass
class OcrMemOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor  # only the positions that predict labels (all positions when labels is None)
    per_example_loss: torch.Tensor | None = None
    memory_tokens: torch.Tensor | None = None  # [B] memory tokens per sample

    def __getitem__(self, i):  # the Trainer indexes outputs like a tuple: outputs[0] is the loss
        return (self.loss, self.logits)[i]

    def keys(self):
        return ["loss", "logits"]


def load_llm(ms: ModelSettings):
    """Frozen causal LM and its tokenizer from a hub id, a local dir or a GGUF file in it."""
    from transformers import AutoModelForCausalLM

    mkw = dict(hub_kwargs(ms, llm=True), dtype=DTYPES[ms.dtype])
    if ms.attn_implementation:
        mkw["attn_implementation"] = ms.attn_implementation
    llm = AutoModelForCausalLM.from_pretrained(ms.base_llm_model_name, **mkw)
    llm.requires_grad_(False)
    llm.eval()
    return llm, load_tokenizer(ms)


def read_adapter(adapter_dir: str | Path, cfg: dict | None = None) -> dict[str, torch.Tensor]:
    """The trained tensors of an adapter (or checkpoint) directory, refused with the path and the reason
    unless the file reads, every tensor is finite, and names and shapes match its adapter_config.json."""
    path = Path(adapter_dir) / ADAPTER_WEIGHTS
    if not path.is_file():
        raise UserFileNotFoundError(f"{path} not found: is {adapter_dir} an adapter written by `ocrmem train`?")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types, none naming the file
        raise UserError(f"{path}: cannot be read ({type(e).__name__}: {e}): the file is truncated or corrupted; "
                        "copy it again or retrain") from None
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise UserError(f"{path}: tensor {name} has non-finite values (NaN or inf): this adapter cannot "
                            "answer; use an earlier checkpoint or retrain")
    if cfg is None and (Path(adapter_dir) / ADAPTER_CONFIG).is_file():
        cfg = json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text())
    want = (cfg or {}).get("shapes") or {n: None for n in (cfg or {}).get("trainable", tensors)}
    have = {n: list(t.shape) for n, t in tensors.items()}
    bad = sorted(n for n in set(want) | set(have) if n not in have or n not in want or want[n] not in (None, have[n]))
    if bad:
        raise UserError(f"{path}: tensors {[(n, have.get(n)) for n in bad[:3]]} do not match {ADAPTER_CONFIG} "
                        f"{[(n, want.get(n)) for n in bad[:3]]}: the files are from different runs; copy both again")
    return tensors


def _cache_of(out):
    return getattr(out, "cache", None) or out.past_key_values


class SoftPrompt(nn.Module):
    """`n` trained vectors the LLM reads right before the memory (OCR or text alike): the small task
    adapter that every trained condition gets, so OCR memory and the trained text baselines differ in
    the memory alone (issue 10). Starts as the embeddings of `n` random vocabulary tokens drawn from its own
    seeded stream: drawn after the projector, they would change with the encoder's feature width."""

    def __init__(self, n: int, embeddings: torch.Tensor, seed: int):
        super().__init__()
        pick = torch.randint(0, embeddings.shape[0], (n,), generator=torch.Generator().manual_seed(seed))
        self.vectors = nn.Parameter(embeddings[pick].detach().clone().float())

    def forward(self) -> torch.Tensor:
        return self.vectors


class OcrMemModel(nn.Module):
    def __init__(self, encoder: FrozenEncoder, projector: Projector, llm: nn.Module, settings: Settings, tokenizer=None,
                 soft_prompt: SoftPrompt | None = None):
        super().__init__()
        self.encoder, self.projector, self.llm, self.soft_prompt = encoder, projector, llm, soft_prompt
        self.tokenizer = tokenizer
        self.settings = settings
        params = inspect.signature(llm.forward).parameters
        self._keeps_logits = "logits_to_keep" in params
        self._cache_kw = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.x
        self.config = llm.config  # the Trainer and DeepSpeed's "auto" read hidden_size etc. from here

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def build(cls, settings: Settings, llm=None, tokenizer=None, encoder: FrozenEncoder | None = None) -> "OcrMemModel":
        """Load the frozen parts named by `settings.model` and a fresh projector (seeded by train.seed)."""
        if llm is None:
            llm, tokenizer = load_llm(settings.model)
        encoder = encoder if encoder is not None else build_encoder(settings.model, settings.render)
        emb = llm.get_input_embeddings().weight
        torch.manual_seed(settings.train.seed)
        projector = build_projector(
            settings.model.projector, encoder.out_dim, emb.shape[1], settings.model.token_pool,
            out_scale=float(emb.float().std()), grid=getattr(encoder.encoder, "grid", "square"),
        )
        n_soft = settings.model.soft_prompt_tokens
        soft = SoftPrompt(n_soft, emb, settings.train.seed) if n_soft else None
        return cls(encoder, projector, llm, settings, tokenizer, soft)

    @classmethod
    def from_pretrained(cls, adapter_dir: str | Path, trust_remote_code: bool = False, llm: str | None = None,
                        ocr_model: str | None = None, **model_overrides) -> "OcrMemModel":
        """Restore a trained adapter from any working directory: find the frozen parts it names (or take
        `llm` / `ocr_model`, a path or hub id), check them against its tensors, load them, load its tensors.
        Remote code runs only with trust_remote_code=True: the adapter's own config never enables it."""
        adapter_dir = Path(adapter_dir)
        cfg = hub.read_adapter_config(adapter_dir)  # format first, then the tensors: before anything loads
        tensors = read_adapter(adapter_dir, cfg)
        llm = model_overrides.pop("base_llm_model_name", llm)  # the old spelling of the overrides
        ocr_model = model_overrides.pop("ocr_model_name", ocr_model)
        parts = hub.resolve_adapter_parts(cfg, adapter_dir, llm=llm, ocr_model=ocr_model)
        model_cfg = {**cfg["model"], **model_overrides, **parts, "trust_remote_code": bool(trust_remote_code)}
        try:
            settings = Settings.model_validate({"model": model_cfg, "render": cfg["render"]})
        except ValueError as e:  # pydantic's ValidationError: a field this code does not know, a bad value
            raise UserError(f"{adapter_dir / ADAPTER_CONFIG}: {' '.join(str(e).split())[:300]}") from None
        hub.check_adapter_parts(cfg, adapter_dir, settings.model)
        encoder = build_encoder(settings.model, settings.render)
        hub.check_adapter_encoder(cfg, adapter_dir, encoder.fingerprint(), encoder.out_dim, ocr_model is not None)
        try:
            llm_model, tokenizer = load_llm(settings.model)
        except (OSError, ValueError) as e:  # transformers: a repo it cannot read, remote code not allowed
            fix = "--trust-remote-code after reading its code" if "trust_remote_code" in str(e) else "--llm PATH_OR_ID"
            raise UserError(f"adapter {adapter_dir}: cannot load its LLM {settings.model.base_llm_model_name!r} "
                            f"({(str(e).strip().splitlines() or [''])[0][:200]}): pass {fix}") from None
        hub.check_llm_width(cfg, adapter_dir, settings.model.base_llm_model_name,
                            llm_model.get_input_embeddings().weight.shape[1])
        model = cls.build(settings, llm_model, tokenizer, encoder=encoder)
        model.load_trained_state(tensors)
        return model

    def adapter_config(self) -> dict:
        return {
            "format": f"{hub.FORMAT}/{hub.FORMAT_VERSION}",
            "model": self.settings.model.model_dump(),
            "render": self.settings.render.model_dump(),
            "encoder_fingerprint": self.encoder.fingerprint(),
            "encoder_dim": self.encoder.out_dim,
            "llm_hidden_size": self.projector.out_dim,
            "memory_tokens_per_page": self.memory_tokens_per_page,
            "trainable": sorted(n for n, _ in self.trainable_parameters()),
        }

    def save_adapter(self, out_dir: str | Path, state_dict: dict | None = None) -> Path:
        """Write only the trained tensors (safetensors) and the JSON naming the frozen parts."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        names = {n for n, _ in self.trainable_parameters()}
        src = state_dict if state_dict is not None else dict(self.named_parameters())
        tensors = {n: t.detach().cpu().contiguous() for n, t in src.items() if n in names}
        if set(tensors) != names:
            raise RuntimeError(f"adapter is missing trained tensors {sorted(names - set(tensors))[:5]}")
        (out_dir / ADAPTER_CONFIG).unlink(missing_ok=True)  # written last: a torn save never reads as complete
        with atomic_path(out_dir / ADAPTER_WEIGHTS, needed=sum(t.nbytes for t in tensors.values())) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt"})
        shapes = {n: list(t.shape) for n, t in sorted(tensors.items())}  # as saved (ZeRO-3: gathered)
        write_json(out_dir / ADAPTER_CONFIG, {**self.adapter_config(), "shapes": shapes,
                                             "paths": hub.local_model_paths(self.settings.model, out_dir)})
        return out_dir

    def load_trained_state(self, tensors: dict[str, torch.Tensor]) -> None:
        names = {n for n, _ in self.trainable_parameters()}
        if set(tensors) != names:
            raise ValueError(
                f"adapter tensors {sorted(tensors)[:5]} do not match this model's trainable parameters "
                f"{sorted(names)[:5]}: was it trained with another projector or encoder setting?"
            )
        params = dict(self.named_parameters())
        with torch.no_grad():
            for n, t in tensors.items():
                params[n].copy_(t)

    # -- what trains ------------------------------------------------------------------------
    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The one statement of what trains: the projector, plus the encoder if unfrozen."""
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def parameter_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for _, p in self.trainable_parameters())
        return {"trainable": trainable, "total": total, "frozen": total - trainable}

    def train(self, mode: bool = True) -> "OcrMemModel":
        super().train(mode)
        self.llm.eval()  # frozen: no dropout, deterministic
        if mode and self._llm_checkpointing():
            # HF checkpoints a layer only while that layer is in training mode; flag the layers
            # themselves, not their children, so checkpointing runs and dropout stays off.
            from transformers.modeling_layers import GradientCheckpointingLayer

            for m in self.llm.modules():
                if isinstance(m, GradientCheckpointingLayer):
                    m.training = True
        return self

    def _llm_checkpointing(self) -> bool:
        if hasattr(type(self.llm), "is_activation_checkpointing"):
            return bool(self.llm.is_activation_checkpointing)
        return bool(getattr(self.llm, "is_gradient_checkpointing", False))

    def enable_gradient_checkpointing(self, reentrant: bool = False) -> None:
        """Checkpoint the frozen LLM; non-reentrant so gradients reach the projector whatever the inputs."""
        self.llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": reentrant})
        self.train(self.training)

    @property
    def memory_tokens_per_page(self) -> int:
        return pooled_tokens(self.encoder.tokens_per_page, self.projector.pool.k,
                             getattr(self.encoder.encoder, "grid", "square"))

    @property
    def memory_tokens_per_line(self) -> int | None:
        """Memory tokens of one full text line for line encoders (`ocrmem.memory.lines`), else None."""
        line = getattr(self.encoder.encoder, "grid", "square") == "line"
        return self.memory_tokens_per_page // len(self.encoder.encoder.boxes) if line else None

    def page_memory_tokens(self, page_lines) -> list[int]:
        """Memory tokens each page costs, given its lines: a count (lines drawn) or the caps of its lines
        (`ocrmem.memory.lines`: blank lines and, with ink-width strips, blank tails cost nothing) per page."""
        per_line = self.memory_tokens_per_line
        return [self.memory_tokens_per_page if per_line is None else
                kept_tokens(n, per_line) if isinstance(n, (list, tuple)) else int(n) * per_line for n in page_lines]

    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    # -- forward ----------------------------------------------------------------------------
    def encode_pages(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encoder features of pages [P, n, d] (what the feature cache stores)."""
        return self.encoder(pixel_values.to(self.device))

    def embed_memory(self, pixel_values=None, features=None) -> torch.Tensor:
        """Memory embeddings [P, t, hidden] from pages or from cached features."""
        if features is None:
            if pixel_values is None:
                raise ValueError("memory needs pixel_values or features")
            features = self.encode_pages(pixel_values)
        return self.projector(features.to(self.device))

    def build_inputs(self, input_ids, attention_mask, labels=None, page_counts=None, memory=None, memory_pos=None,
                     page_lines=None):
        """Insert each sample's soft prompt and memory into its text at memory_pos (default: in front;
        -1: the sample has no memory slot, so no soft prompt either), left-pad the batch; labels are
        -100 on them and on padding. `page_lines` (line encoders: [P] counts or [P, L] caps, see
        `_kept_tokens`) keeps only the tokens each page's drawn lines pay for (`ocrmem.memory.lines`)."""
        text = self.llm.get_input_embeddings()(input_ids)
        bsz, hid = input_ids.shape[0], text.shape[-1]
        mems = self._split_memory(memory, page_counts, page_lines, bsz, text)
        soft = self.soft_prompt().to(text.dtype) if self.soft_prompt is not None and memory_pos is not None else None
        lengths = attention_mask.sum(1).tolist()
        where = [0] * bsz if memory_pos is None else [int(p) for p in memory_pos]  # -1: no memory slot
        inserts = [m if soft is None or where[i] < 0 else torch.cat([soft, m]) for i, m in enumerate(mems)]
        where = [max(0, w) for w in where]
        total = [len(inserts[i]) + lengths[i] for i in range(bsz)]
        seq = max(total)
        embeds, mask, lab = [], torch.zeros(bsz, seq, dtype=torch.long, device=text.device), None
        if labels is not None:
            lab = torch.full((bsz, seq), -100, dtype=torch.long, device=text.device)
        for i in range(bsz):
            n_ins, k, pad = len(inserts[i]), where[i], seq - total[i]
            t = text[i, : lengths[i]]
            embeds.append(torch.cat([text.new_zeros(pad, hid), t[:k], inserts[i], t[k:]]))
            mask[i, pad:] = 1
            if labels is not None:
                lab[i, pad:pad + k] = labels[i, :k]
                lab[i, pad + k + n_ins:] = labels[i, k:lengths[i]]
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        mem_counts = torch.tensor([len(m) for m in mems], device=text.device)
        return torch.stack(embeds), mask, position_ids, lab, mem_counts

    def _split_memory(self, memory, page_counts, page_lines, bsz: int, text) -> list[torch.Tensor]:
        """Each sample's memory tokens [n_i, hidden]: its pages' tokens, in order."""
        if memory is None or page_counts is None:
            return [text.new_zeros(0, text.shape[-1])] * bsz
        pages = [m.to(text.dtype) for m in self._kept_tokens(memory, page_lines)]
        out, start = [], 0
        for c in page_counts.tolist():
            out.append(torch.cat(pages[start:start + c]) if c else text.new_zeros(0, text.shape[-1]))
            start += c
        return out

    def _kept_tokens(self, memory: torch.Tensor, page_lines) -> list[torch.Tensor]:
        """Each page's memory tokens [t_p, hidden] its lines pay for ([P] lines drawn, or [P, L] line caps)."""
        per_line = self.memory_tokens_per_line
        if page_lines is None or per_line is None:
            return list(memory)
        if page_lines.dim() == 1:
            return [memory[p, :int(n) * per_line] for p, n in enumerate(page_lines.tolist())]
        lines = memory.reshape(memory.shape[0], -1, per_line, memory.shape[-1])[:, :page_lines.shape[1]]
        keep = torch.arange(per_line, device=lines.device) < page_lines.to(lines.device)[..., None]  # a line's first cap
        return [lines[p][keep[p]] for p in range(memory.shape[0])]

    def forward(self, input_ids, attention_mask, labels=None, page_counts=None, pixel_values=None, features=None,
                memory_pos=None, page_lines=None, num_items_in_batch=None, **_ignored) -> OcrMemOutput:
        memory = None
        if page_counts is not None and int(page_counts.sum()) > 0:
            memory = self.embed_memory(pixel_values=pixel_values, features=features)
        embeds, mask, pos, lab, mem_counts = self.build_inputs(input_ids, attention_mask, labels, page_counts, memory,
                                                               memory_pos, page_lines)
        if lab is None:
            out = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=False)
            return OcrMemOutput(None, out.logits, memory_tokens=mem_counts)
        # Only positions that predict a label need logits: left padding puts every target at the end.
        has = (lab != -100).any(0).nonzero()
        first = int(has[0]) if len(has) else lab.shape[1] - 1
        keep = lab.shape[1] - first + 1
        kw = {"logits_to_keep": keep} if self._keeps_logits else {}
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=False, **kw)
        logits = out.logits[:, -keep:-1] if self._keeps_logits else out.logits[:, first - 1:-1]
        target = lab[:, first:]
        # 2-D cross entropy: the [B, V, T] form runs a strided "spatial" kernel, 3x slower on an H200.
        tok_loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                                   ignore_index=-100, reduction="none").view(target.shape)
        n_tok = (target != -100).sum(1)
        per_example = tok_loss.sum(1) / n_tok.clamp(min=1)
        denom = num_items_in_batch if num_items_in_batch is not None else n_tok.sum().clamp(min=1)
        loss = tok_loss.sum() / denom
        return OcrMemOutput(loss, logits, per_example_loss=per_example.detach(), memory_tokens=mem_counts)

    # -- generation -------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, input_ids, attention_mask, page_counts=None, pixel_values=None, features=None,
                 memory_pos=None, page_lines=None, max_new_tokens: int = 16,
                 eos_token_id: int | list[int] | None = None, memory=None, **_ignored) -> torch.Tensor:
        """Greedy decoding with a KV cache; returns the new token ids [B, <=max_new_tokens].
        `memory`: memory embeddings already computed (embed_memory), instead of pages or features."""
        if memory is None and page_counts is not None and int(page_counts.sum()) > 0:
            memory = self.embed_memory(pixel_values=pixel_values, features=features)
        embeds, mask, pos, _, _ = self.build_inputs(input_ids, attention_mask, None, page_counts, memory, memory_pos,
                                                    page_lines)
        return self.decode(embeds, mask, pos, max_new_tokens, eos_token_id)[0]

    @torch.no_grad()
    def decode(self, embeds, mask, pos, max_new_tokens: int = 16, eos_token_id: int | list[int] | None = None,
               cache=None, cached: int = 0):
        """Greedy decoding from build_inputs' output. `cache` holds the LLM's KV of the first `cached`
        positions (a prefix prefilled before), so only the rest is prefilled. Returns (new ids, KV cache)."""
        if eos_token_id is None and self.tokenizer is not None:
            eos_token_id = self.tokenizer.eos_token_id
        eos = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or []), device=embeds.device)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer is not None else 0
        kw = {self._cache_kw: cache} if cache is not None else {}
        if self._keeps_logits:  # only the last position's logits are read: not [L, vocab] of them
            kw["logits_to_keep"] = 1
        out = self.llm(inputs_embeds=embeds[:, cached:], attention_mask=mask, position_ids=pos[:, cached:],
                       use_cache=True, **kw)
        cache, done, new = _cache_of(out), torch.zeros(len(embeds), dtype=torch.bool, device=embeds.device), []
        next_pos = pos[:, -1:] + 1
        for _ in range(max_new_tokens):
            tok = out.logits[:, -1].argmax(-1)
            tok = torch.where(done, torch.full_like(tok, pad_id), tok)
            new.append(tok)
            done |= torch.isin(tok, eos) if len(eos) else torch.zeros_like(done)
            if bool(done.all()) or len(new) == max_new_tokens:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            out = self.llm(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos,
                           use_cache=True, **{self._cache_kw: cache})
            cache, next_pos = _cache_of(out), next_pos + 1
        return torch.stack(new, 1), cache
