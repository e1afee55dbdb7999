"""GPU-only checks (skipped without CUDA): bf16 on the device keeps the invariants of the CPU tests."""

import pytest
import torch
from torch.utils.data import DataLoader

from ocrmem.data.dataset import MemoryCollator, build_datasets
from ocrmem.memory import OcrMemModel
from ocrmem.training.gradcheck import check_gradient_flow

pytestmark = pytest.mark.gpu


def test_bf16_gradient_flow_and_cache_on_gpu(pipeline):
    s = pipeline(model={"dtype": "bfloat16"})
    model = OcrMemModel.build(s).cuda()
    train_ds, _, key = build_datasets(s, model)
    pix_ds, _, _ = build_datasets(s, model, cached=False)
    collate = MemoryCollator(model.tokenizer.pad_token_id, key)
    batch = {k: v.cuda() for k, v in next(iter(DataLoader(train_ds, batch_size=4, collate_fn=collate))).items()}
    report = check_gradient_flow(model, batch)
    assert report.ok, report.diagnosis
    # features encoded on the GPU now equal the cached ones (the cache was written on the CPU: pixels is exact)
    pix = MemoryCollator(model.tokenizer.pad_token_id, "pixel_values")([pix_ds[i] for i in range(4)])
    live = model.encode_pages(pix["pixel_values"].cuda()).cpu()
    assert torch.equal(live, batch["features"].cpu().to(live.dtype))


def test_train_steps_on_gpu(pipeline, tmp_path):
    from ocrmem.training.trainer import train

    s = pipeline(train={"max_steps": 3, "bf16": True}, model={"dtype": "bfloat16"})
    model = OcrMemModel.build(s)
    frozen = {n: p.detach().clone() for n, p in model.llm.named_parameters()}
    m = train(s, model=model, metrics_path=tmp_path / "train.json")
    assert m["steps"] == 3
    assert all(torch.equal(frozen[n], p.cpu()) for n, p in model.llm.named_parameters())
