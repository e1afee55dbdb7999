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

from ocrmem.io import write_json
from ocrmem.model.encoder import DTYPES, FrozenEncoder, build_encoder
from ocrmem.model.hub import hub_kwargs, load_tokenizer
from ocrmem.model.projector import Projector, build_projector
from ocrmem.settings import ModelSettings, Settings

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter.safetensors"


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


def _cache_of(out):
    return getattr(out, "cache", None) or out.past_key_values


class OcrMemModel(nn.Module):
    def __init__(self, encoder: FrozenEncoder, projector: Projector, llm: nn.Module, settings: Settings, tokenizer=None):
        super().__init__()
        self.encoder, self.projector, self.llm = encoder, projector, llm
        self.tokenizer = tokenizer
        self.settings = settings
        params = inspect.signature(llm.forward).parameters
        self._keeps_logits = "logits_to_keep" in params
        self._cache_kw = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.x
        self.config = llm.config  # the Trainer and DeepSpeed's "auto" read hidden_size etc. from here

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def build(cls, settings: Settings, llm=None, tokenizer=None) -> "OcrMemModel":
        """Load the frozen parts named by `settings.model` and a fresh projector (seeded by train.seed)."""
        if llm is None:
            llm, tokenizer = load_llm(settings.model)
        encoder = build_encoder(settings.model, settings.render)
        emb = llm.get_input_embeddings().weight
        torch.manual_seed(settings.train.seed)
        projector = build_projector(
            settings.model.projector, encoder.out_dim, emb.shape[1], settings.model.token_pool,
            out_scale=float(emb.float().std()),
        )
        return cls(encoder, projector, llm, settings, tokenizer)

    @classmethod
    def from_pretrained(cls, adapter_dir: str | Path, **model_overrides) -> "OcrMemModel":
        """Restore a trained adapter: rebuild the frozen parts it names, load the projector tensors."""
        adapter_dir = Path(adapter_dir)
        cfg_file = adapter_dir / ADAPTER_CONFIG
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{cfg_file} not found: is {adapter_dir} an adapter written by `ocrmem train`?")
        cfg = json.loads(cfg_file.read_text())
        settings = Settings.model_validate({"model": {**cfg["model"], **model_overrides}, "render": cfg["render"]})
        model = cls.build(settings)
        model.load_trained_state(load_file(str(adapter_dir / ADAPTER_WEIGHTS)))
        return model

    def adapter_config(self) -> dict:
        return {
            "format": "ocrmem-adapter/1",
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
        save_file(tensors, str(out_dir / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        write_json(out_dir / ADAPTER_CONFIG, self.adapter_config())
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
        k = self.projector.pool.k
        return self.encoder.tokens_per_page // (k * k)

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

    def build_inputs(self, input_ids, attention_mask, labels=None, page_counts=None, memory=None, memory_pos=None):
        """Insert each sample's memory into its text at memory_pos (default: in front), left-pad the
        batch; labels are -100 on memory and padding."""
        embed = self.llm.get_input_embeddings()
        text = embed(input_ids)
        bsz = input_ids.shape[0]
        if page_counts is None or memory is None:
            page_counts = torch.zeros(bsz, dtype=torch.long)
        counts = [int(c) for c in page_counts]
        mem_tok = memory.shape[1] if memory is not None else 0
        mem = memory.reshape(-1, memory.shape[-1]) if memory is not None else None
        lengths = attention_mask.sum(1).tolist()
        where = [0] * bsz if memory_pos is None else [int(p) for p in memory_pos]
        total = [counts[i] * mem_tok + lengths[i] for i in range(bsz)]
        seq, hid = max(total), text.shape[-1]
        embeds, mask, lab = [], torch.zeros(bsz, seq, dtype=torch.long, device=text.device), None
        if labels is not None:
            lab = torch.full((bsz, seq), -100, dtype=torch.long, device=text.device)
        start = 0
        for i in range(bsz):
            n_mem, k, pad = counts[i] * mem_tok, where[i], seq - total[i]
            m = mem[start:start + n_mem].to(text.dtype) if n_mem else text.new_zeros(0, hid)
            start += n_mem
            t = text[i, : lengths[i]]
            embeds.append(torch.cat([text.new_zeros(pad, hid), t[:k], m, t[k:]]))
            mask[i, pad:] = 1
            if labels is not None:
                lab[i, pad:pad + k] = labels[i, :k]
                lab[i, pad + k + n_mem:] = labels[i, k:lengths[i]]
        inputs_embeds = torch.stack(embeds)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        mem_counts = torch.tensor([c * mem_tok for c in counts], device=text.device)
        return inputs_embeds, mask, position_ids, lab, mem_counts

    def forward(self, input_ids, attention_mask, labels=None, page_counts=None, pixel_values=None, features=None,
                memory_pos=None, num_items_in_batch=None, **_ignored) -> OcrMemOutput:
        memory = None
        if page_counts is not None and int(page_counts.sum()) > 0:
            memory = self.embed_memory(pixel_values=pixel_values, features=features)
        embeds, mask, pos, lab, mem_counts = self.build_inputs(input_ids, attention_mask, labels, page_counts, memory,
                                                               memory_pos)
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
                 memory_pos=None, max_new_tokens: int = 16, eos_token_id: int | list[int] | None = None,
                 memory=None, **_ignored) -> torch.Tensor:
        """Greedy decoding with a KV cache; returns the new token ids [B, <=max_new_tokens].
        `memory`: memory embeddings already computed (embed_memory), instead of pages or features."""
        if memory is None and page_counts is not None and int(page_counts.sum()) > 0:
            memory = self.embed_memory(pixel_values=pixel_values, features=features)
        embeds, mask, pos, _, _ = self.build_inputs(input_ids, attention_mask, None, page_counts, memory, memory_pos)
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
