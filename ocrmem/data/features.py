"""Feature cache: the frozen encoder runs once over the rendered pages; training reads the result.

    ocrmem encode [--params params.yaml]     # encode(settings) -> data/features/{index.json, shard-*.safetensors}

Pages are keyed by the sha256 of their PNG, so a page shared by splits is encoded once. The index
records the encoder fingerprint and the render settings; a cache made by another encoder or other
render settings is refused, never used silently. Shards are written atomically and the index after
each shard, so a killed run resumes where it stopped; `complete` marks a finished cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ocrmem.common.errors import UserError, UserFileNotFoundError
from ocrmem.common.faults import fault_point
from ocrmem.common.io import atomic_path, write_json
from ocrmem.data.manifest import read_manifest
from ocrmem.data.sources import SPLITS
from ocrmem.memory.encoder import DTYPES, FrozenEncoder, build_encoder
from ocrmem.memory.render import load_png
from ocrmem.settings import Settings

INDEX = "index.json"


class CacheMismatchError(UserError):
    pass


def cache_fingerprint(encoder: FrozenEncoder, settings: Settings) -> dict:
    return {"encoder": encoder.fingerprint(), "render": settings.render.model_dump(exclude={"workers"}),  # workers: same pages
            "store_dtype": settings.features.store_dtype}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def encode(settings: Settings, encoder: FrozenEncoder | None = None, progress: bool = True) -> dict:
    """The encode stage: fill the feature cache when training reads one; returns the cache's figures.

    An unfrozen encoder, or train.use_feature_cache false, means training runs the encoder each step:
    then there is nothing to cache and only the (empty) output directory is made.
    """
    if not (settings.model.encoder_frozen and settings.train.use_feature_cache):
        print("feature cache disabled (encoder unfrozen or train.use_feature_cache false): nothing to encode")
        settings.features_dir.mkdir(parents=True, exist_ok=True)
        return {"cached": False}
    index = build_cache(settings, encoder, progress)
    return {"cached": True, "pages": len(index["pages"]), "shards": len(index["shards"]),
            "tokens": index.get("tokens"), "dim": index.get("dim")}


def build_cache(settings: Settings, encoder: FrozenEncoder | None = None, progress: bool = True) -> dict:
    """Encode every page of every rendered split not yet in the cache; return the cache's index."""
    if not settings.model.encoder_frozen:
        raise UserError("model.encoder_frozen is false: an unfrozen encoder changes every step, so there is no "
                         "feature cache; set train.use_feature_cache: false (encode is skipped)")
    encoder = encoder or build_encoder(settings.model, settings.render)
    out = settings.features_dir
    index = _open_index(out, cache_fingerprint(encoder, settings))
    todo = _pages_to_encode(settings, index)
    if not todo and index["complete"]:
        print(f"feature cache {out} is up to date ({len(index['pages'])} pages): nothing to encode")
        return index
    device = _device(settings.features.device)
    encoder.to(device)
    bar = tqdm(total=len(todo), desc="encode", unit="page", disable=not progress)
    per_shard, sample = settings.features.shard_pages, None
    for s0 in range(0, len(todo), per_shard):
        tensors = _features_of(encoder, todo[s0:s0 + per_shard], settings, device, bar)
        _write_shard(out, index, tensors)
        sample = next(iter(tensors.values()))
    bar.close()
    index["complete"] = True
    if sample is not None:
        index["tokens"], index["dim"] = list(sample.shape)
    write_json(out / INDEX, index, sort_keys=True)
    print(f"feature cache {out}: {len(index['pages'])} pages ({len(todo)} encoded now) on {device}")
    return index


def _open_index(out: Path, fp: dict) -> dict:
    """The cache's index; a cache of another encoder/render is emptied rather than mixed with this one."""
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / INDEX
    index = json.loads(index_path.read_text()) if index_path.is_file() else None
    if index is not None and index.get("fingerprint") != fp:
        for f in out.glob("shard-*.safetensors"):
            f.unlink()
        index = None
    return index or {"fingerprint": fp, "pages": {}, "shards": [], "complete": False}


def _pages_to_encode(settings: Settings, index: dict) -> list[tuple[str, Path]]:
    """(sha256, path) of every rendered page not in the cache, sorted; a page shared by splits once."""
    todo: dict[str, Path] = {}
    for split in SPLITS:
        for row in read_manifest(settings, split):
            for rel, sha in zip(row["pages"], row["sha256"]):
                if sha not in index["pages"]:
                    todo[sha] = settings.rendered_dir / rel
    return sorted(todo.items())


def _features_of(encoder: FrozenEncoder, items: list[tuple[str, Path]], settings: Settings, device, bar) -> dict:
    store, bs = DTYPES[settings.features.store_dtype], settings.features.batch_size
    tensors = {}
    for b0 in range(0, len(items), bs):
        batch = items[b0:b0 + bs]
        images = [load_png(path, sha) for sha, path in batch]  # a page changed since render is refused
        feats = encoder(encoder.preprocess(images).to(device)).to("cpu", store)
        for (sha, _), f in zip(batch, feats):
            tensors[sha] = f.contiguous()
        bar.update(len(batch))
    return tensors


def _write_shard(out: Path, index: dict, tensors: dict) -> None:
    """Shard first, then the index naming it: a killed run resumes after its last whole shard."""
    name = f"shard-{len(index['shards']):05d}.safetensors"
    with atomic_path(out / name) as tmp:
        save_file(tensors, str(tmp))
    fault_point("encode", len(index["shards"]) + 1)  # tests only: the shard is written, the index not yet
    index["shards"].append(name)
    index["pages"].update({sha: name for sha in tensors})
    write_json(out / INDEX, index, sort_keys=True)


class FeatureCache:
    """Read-only view of a finished cache; refuses one made by another encoder or render."""

    def __init__(self, cache_dir: str | Path, expected_fingerprint: dict | None = None):
        self.dir = Path(cache_dir)
        index_path = self.dir / INDEX
        if not index_path.is_file():
            raise UserFileNotFoundError(f"no feature cache at {self.dir}: run `ocrmem encode` first")
        self.index = json.loads(index_path.read_text())
        if not self.index.get("complete"):
            raise CacheMismatchError(f"feature cache {self.dir} is incomplete (an encode was interrupted): "
                                     "rerun `ocrmem encode` to finish it")
        if expected_fingerprint is not None and self.index["fingerprint"] != expected_fingerprint:
            have, want = self.index["fingerprint"], expected_fingerprint
            diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            raise CacheMismatchError(
                f"feature cache {self.dir} was made with other {', '.join(diff)} than this config "
                f"(cache: {[have.get(k) for k in diff]}, config: {[want.get(k) for k in diff]}): rerun `ocrmem encode`"
            )
        self._handles: dict[str, object] = {}

    def _open(self, shard: str):
        if shard not in self._handles:  # opened lazily, per process (DataLoader workers get their own)
            self._handles[shard] = safe_open(str(self.dir / shard), framework="pt")
        return self._handles[shard]

    def __getstate__(self):
        return {**self.__dict__, "_handles": {}}

    def get(self, shas: list[str]) -> torch.Tensor:
        missing = [s for s in shas if s not in self.index["pages"]]
        if missing:
            raise KeyError(f"pages {missing[:3]} are not in the feature cache {self.dir}: rerun `ocrmem encode`")
        return torch.stack([self._open(self.index["pages"][s]).get_tensor(s) for s in shas])
