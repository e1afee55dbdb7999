"""ocrmem.evaluation.evaluate and ocrmem.serving.memory_llm on a tiny pipeline: tiny random Llama, raw-pixel encoder, 128px pages."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from ocrmem.data.manifest import read_manifest, render_dataset
from ocrmem.data.sources import Example
from ocrmem.evaluation import conditions, runner
from ocrmem.evaluation import evaluate as E
from ocrmem.evaluation import scoring as S
from ocrmem.settings import CONDITIONS, Settings
from ocrmem.tasks.lookup import make_synthetic

LONG = " ".join(f"Fact {i}: the code word for item {i} is word{i}." for i in range(60))  # ~3000 chars: cut


def _settings(root: Path, llm: Path, **eval_kw) -> Settings:
    return Settings.model_validate({
        "model": {"base_llm_model_name": str(llm), "encoder": "pixels", "pixel_patch_size": 16, "token_pool": 1},
        "render": {"page_size": 128, "margin": 4, "font_size": 10, "max_pages": 2, "workers": 1},
        "data": {"out_dir": str(root / "data"), "max_target_tokens": 16},
        "eval": {"batch_size": 2, "max_new_tokens": 3, "full_text_max_tokens": 400, **eval_kw},
        "train": {"output_dir": str(root / "checkpoints")},
        "tracking": {"wandb_mode": "disabled"},
    })


@pytest.fixture(scope="module")
def eval_pipeline(tmp_path_factory, tiny_models):
    """(settings, model, rows): 5 eval examples rendered; one long history cut to the 2-page budget,
    one shorter than the budget."""
    from ocrmem.memory.model import OcrMemModel

    root = tmp_path_factory.mktemp("evalpipe")
    s = _settings(root, tiny_models["llm"])
    exs = make_synthetic(3, "easy", seed=0, split="eval")
    exs.append(Example("long-1", LONG, "What is the code word for item 59?", "word59"))
    exs.append(Example("short-1", "k: v", "What is k? Answer with one word.", "v"))
    model = OcrMemModel.build(s)
    render_dataset(s, tokenizer=model.tokenizer, tokens_per_page=model.memory_tokens_per_page, progress=False,
                   examples={"eval": exs, "train": make_synthetic(2, "easy", seed=0, split="train")})
    return s, model, read_manifest(s, "eval")


def _contains(seq: list[int], sub: list[int]) -> bool:
    return any(seq[i:i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def test_condition_inputs_are_built_as_specified(eval_pipeline):
    s, model, rows = eval_pipeline
    tok, mtpp = model.tokenizer, model.memory_tokens_per_page
    assert mtpp == (s.render.page_size // s.model.pixel_patch_size) ** 2 // getattr(s.model, "pixel_downsample", 1) ** 2
    long_row = next(r for r in rows if r["id"] == "long-1")
    assert long_row["cut_chars"] > 0 and len(long_row["pages"]) == 2
    for row in rows:
        hist = conditions.history_ids(tok, row["history"])
        budget = len(row["pages"]) * mtpp
        ins = {c: conditions.build_condition_input(c, row, tok, mtpp, full_text_max_tokens=400) for c in CONDITIONS}
        # no_memory: no pages, no memory tokens, no history in the text
        nm = ins["no_memory"]
        assert nm.n_pages == 0 and nm.memory_tokens == 0 and nm.text_memory_ids == []
        # ocr_memory: the pages and exactly pages x tokens-per-page memory tokens, inserted in the same
        # "Memory:" slot that holds the text memory of truncated_text / full_text
        om = ins["ocr_memory"]
        assert om.n_pages == len(row["pages"]) and om.memory_tokens == budget
        assert om.target_ids == nm.target_ids and om.memory_pos > 0
        # truncated_text: the most recent `budget` history tokens, spliced verbatim into the prompt
        tt = ins["truncated_text"]
        assert tt.n_pages == 0 and tt.memory_tokens == 0
        assert tt.text_memory_ids == hist[-budget:]
        assert len(tt.text_memory_ids) == min(budget, len(hist))
        if len(hist) >= budget:
            assert len(tt.text_memory_ids) == budget  # EXACTLY the OCR memory's token budget
        assert _contains(tt.prompt_ids, tt.text_memory_ids)
        k = om.memory_pos
        assert tt.prompt_ids[:k] + tt.prompt_ids[k + len(tt.text_memory_ids):] == om.prompt_ids
        assert tt.prompt_ids[k:k + len(tt.text_memory_ids)] == tt.text_memory_ids
        # the prompt around the memory is the same for truncated_text and full_text
        ft = ins["full_text"]
        if len(hist) > 400:
            assert ft.skipped
            continue
        assert not ft.skipped and ft.text_memory_ids == hist and _contains(ft.prompt_ids, hist)
        assert row["history"] in tok.decode(ft.prompt_ids)
        assert len(ft.prompt_ids) - len(hist) == len(tt.prompt_ids) - len(tt.text_memory_ids)


def test_truncated_text_reads_a_history_shorter_than_its_budget_whole(eval_pipeline):
    """A budget between the history's length and twice it: a negative slice start would keep only the excess."""
    from ocrmem.training.baselines import text_memory_ids

    _, model, rows = eval_pipeline
    tok = model.tokenizer
    row = next(r for r in rows if r["id"] == "long-1")
    hist = conditions.history_ids(tok, row["history"])
    for budget in (len(hist) + 1, 2 * len(hist) - 1, len(hist) - 1):
        r = {**row, "memory_tokens": budget}
        want = hist[-min(budget, len(hist)):]
        assert conditions.build_condition_input("truncated_text", r, tok, 1).text_memory_ids == want, budget
        assert text_memory_ids(tok, r, "truncated_text_trained") == want, budget


def test_collate_labels_only_on_target(eval_pipeline):
    s, model, rows = eval_pipeline
    items = [conditions.build_condition_input("ocr_memory", r, model.tokenizer, model.memory_tokens_per_page) for r in rows[:3]]
    b = conditions.collate(items, model.tokenizer.pad_token_id, with_target=True)
    for i, it in enumerate(items):
        lab = b["labels"][i][b["labels"][i] != -100].tolist()
        assert lab == it.target_ids
    assert b["page_counts"].tolist() == [len(r["pages"]) for r in rows[:3]]
    g = conditions.collate(items, model.tokenizer.pad_token_id, with_target=False)
    assert "labels" not in g and g["attention_mask"].sum(1).tolist() == [len(it.prompt_ids) for it in items]


def test_scoring_helpers():
    assert S.exact_match(" Black.", "black") and S.exact_match("black cat", "black")
    assert not S.exact_match("", "black") and not S.exact_match("blue", "black")
    assert S.exact_match("Hello, World!", "hello world") and not S.exact_match("hello", "hello world")
    assert S.contains("The value of delta is black.", "black") and not S.contains("blackish", "black")
    assert not S.contains("anything", "")
    assert S.levenshtein("kitten", "sitting") == 3 and S.levenshtein("", "abc") == 3
    assert S.char_precision("abc", "abc") == 1.0 and S.char_precision("xyzxyzxyz", "abc") == 0.0
    assert [S.bucket_of(x) for x in (1.0, 2.0, 5, 8, 12.5, 40)] == ["<2", "2-4", "4-8", "8-12", "12-16", ">=16"]


def test_evaluate_end_to_end(eval_pipeline, tmp_path):
    s, model, rows = eval_pipeline
    calls = []
    forward = model.forward

    def spy(*a, **kw):
        calls.append((kw["page_counts"].tolist(), "pixel_values" in kw or "features" in kw))
        return forward(*a, **kw)

    model.forward = spy
    try:
        m = E.evaluate(s, model=model, out_dir=tmp_path, progress=False)
    finally:
        del model.forward
    n = len(rows)
    # the forward calls: per condition ceil(n / batch) batches (full_text one fewer example: the long one)
    per_cond = [math.ceil(n / 2), math.ceil(n / 2), math.ceil(n / 2), math.ceil((n - 1) / 2)]
    assert len(calls) == sum(per_cond)
    no_mem, trunc, ocr = calls[:3], calls[3:6], calls[6:9]
    assert all(sum(pc) == 0 and not has for pc, has in no_mem + trunc + calls[9:])
    assert [p for pc, _ in ocr for p in pc] == [len(r["pages"]) for r in rows] and all(has for _, has in ocr)

    # metrics: flat, numeric, complete
    on_disk = json.loads((tmp_path / "metrics/eval.json").read_text())
    assert on_disk == m
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in m.values())
    for c in s.eval.conditions:  # every condition evaluated (the *_trained ones need `ocrmem baselines`)
        for k in ("exact_match", "contains", "loss", "perplexity", "n"):
            assert f"{c}.{k}" in m, f"{c}.{k}"
        assert 0 <= m[f"{c}.exact_match"] <= m[f"{c}.contains"] <= 1 and m[f"{c}.loss"] > 0
        assert m[f"{c}.perplexity"] == pytest.approx(math.exp(m[f"{c}.loss"]), rel=1e-3)
    assert m["n_examples"] == n and m["full_text.skipped"] == 1 and m["full_text.n"] == n - 1
    assert m["no_memory.memory_tokens"] == 0 and m["ocr_memory.memory_tokens"] > 0
    assert m["ocr_memory.from_cache"] == 0  # no feature cache was built
    assert m["compression.mean"] > 0 and "seconds.total" in m
    # truncated_text matches the budget on all but the short history
    assert m["truncated_text.budget_matched"] == pytest.approx((n - 1) / n)

    # per example: the same ids under every condition, budgets as built
    ex = [json.loads(line) for line in (tmp_path / "metrics/eval_examples.jsonl").read_text().splitlines()]
    assert [e["id"] for e in ex] == [r["id"] for r in rows]
    for e in ex:
        assert set(e["conditions"]) == set(s.eval.conditions)
        c = e["conditions"]
        assert c["no_memory"]["memory_tokens"] == 0 and c["no_memory"]["text_memory_tokens"] == 0
        assert c["ocr_memory"]["memory_tokens"] == e["memory_tokens"] == e["pages"] * model.memory_tokens_per_page
        assert c["truncated_text"]["text_memory_tokens"] == min(e["memory_tokens"], e["history_tokens"])
        if c["full_text"]["skipped"]:
            assert e["history_tokens"] > 400 and c["full_text"]["prediction"] is None
        else:
            assert c["full_text"]["text_memory_tokens"] == e["history_tokens"]
        for cond in s.eval.conditions:
            if not c[cond]["skipped"]:
                assert isinstance(c[cond]["prediction"], str) and isinstance(c[cond]["correct"], bool)
        assert e["compression"] == pytest.approx(e["kept_text_tokens"] / e["memory_tokens"], rel=1e-3)
    # the questions whose answer the truncated text cut, scored per condition
    cut = [e for e in ex if e["answer_cut"]]
    # the easy sheets ask their first row, which the budget cuts; the long history asks its last sentence
    assert [e["id"] for e in cut] == [r["id"] for r in rows if r["id"].startswith("syn-easy")] and m["answer_cut.n"] == 3
    for cond in s.eval.conditions:
        scored = [e["conditions"][cond]["correct"] for e in cut if not e["conditions"][cond]["skipped"]]
        got = m.get(f"{cond}.exact_match_answer_cut")
        assert got == (pytest.approx(sum(scored) / len(scored), abs=1e-4) if scored else None), cond

    # plots
    with open(tmp_path / "plots/eval_conditions.csv") as f:
        conds = list(csv.DictReader(f))
    assert [r["condition"] for r in conds] == list(s.eval.conditions)
    with open(tmp_path / "plots/accuracy_vs_compression.csv") as f:
        buckets = list(csv.DictReader(f))
    assert buckets and sum(int(b["n"]) for b in buckets) == n
    assert all(b["bucket"] in S.BUCKET_NAMES for b in buckets)
    assert all(f"ocr_memory.bucket.{b['bucket']}.exact_match" in m for b in buckets)


def test_answer_cut_marks_answers_only_the_whole_history_holds(eval_pipeline):
    tok = eval_pipeline[1].tokenizer
    hist = tok("alpha: cow; beta: dog; gamma: owl", add_special_tokens=False).input_ids
    assert runner.answer_cut(tok, hist, 2, "cow") and runner.answer_cut(tok, hist, 2, "dog")
    assert not runner.answer_cut(tok, hist, 2, "owl")  # in the last two tokens
    assert not runner.answer_cut(tok, hist, 2, "zebra")  # nowhere in the history: no memory holds it either
    assert not runner.answer_cut(tok, hist, len(hist), "cow") and not runner.answer_cut(tok, hist, 0, "zebra")


def test_evaluate_subset_cache_and_probe(eval_pipeline, tmp_path):
    """Conditions subset, max_examples, the feature cache (same losses as pixels) and the reconstruction probe."""
    from ocrmem.data.features import encode

    s, model, rows = eval_pipeline
    s2 = s.model_copy(update={"eval": s.eval.model_copy(update={
        "conditions": ["ocr_memory", "no_memory"], "max_examples": 3, "reconstruction_probe": True})})
    pix = E.evaluate(s2, model=model, out_dir=tmp_path / "pix", progress=False)
    assert pix["n_examples"] == 3 and "full_text.loss" not in pix and "truncated_text.loss" not in pix
    assert 0 <= pix["reconstruction.precision"] <= 1 and 0 <= pix["reconstruction.sheets.precision"] <= 1
    assert any(k.startswith("reconstruction.bucket.") for k in pix)
    ex = [json.loads(x) for x in (tmp_path / "pix/metrics/eval_examples.jsonl").read_text().splitlines()]
    assert all(isinstance(e["reconstruction"]["prediction"], str) for e in ex)

    encode(s2, model.encoder, progress=False)
    cached = E.evaluate(s2, model=model, out_dir=tmp_path / "cache", progress=False)
    assert cached["ocr_memory.from_cache"] == 1 and pix["ocr_memory.from_cache"] == 0
    assert cached["ocr_memory.loss"] == pytest.approx(pix["ocr_memory.loss"], abs=1e-4)
    assert cached["no_memory.loss"] == pix["no_memory.loss"]


def test_memory_llm_answers_a_long_history(eval_pipeline, tmp_path):
    from ocrmem.serving.memory_llm import MemoryLLM

    s, model, rows = eval_pipeline
    adapter = model.save_adapter(tmp_path / "adapter")
    llm = MemoryLLM.from_pretrained(adapter)
    # the trained tensors came back
    for (n, p), (_, q) in zip(model.trainable_parameters(), llm.model.trainable_parameters()):
        assert torch.equal(p, q), n
    a = llm.answer(LONG, "What is the code word for item 59?", max_new_tokens=4)
    assert isinstance(a.text, str)
    assert a.cut_chars > 0 and len(a.pages) == s.render.max_pages
    assert a.memory_tokens == len(a.pages) * llm.model.memory_tokens_per_page > 0
    # the pages hold the most recent text: same pages as the render stage drew for the same history
    rendered = llm.render(LONG)
    assert rendered.cut_chars == a.cut_chars and LONG[a.cut_chars:].endswith("word59.")

    turns = [{"role": "user", "content": "remember k: v"}, {"role": "assistant", "content": "ok"}]
    b = llm.answer(turns, "What is k?", max_new_tokens=4)
    c = llm.answer("user: remember k: v\n\nassistant: ok", "What is k?", max_new_tokens=4)
    assert b.text == c.text and b.cut_chars == 0 and len(b.pages) == 1

    many = llm.answer_batch([LONG, "k: v", turns], ["q1?", "q2?", "q3?"], max_new_tokens=3, batch_size=2)
    assert [len(x.pages) for x in many] == [2, 1, 1] and many[0].cut_chars > 0 and many[1].cut_chars == 0
    with pytest.raises(ValueError):
        llm.answer_batch(["a"], ["q1", "q2"])


def test_sign_test_matches_the_binomial_tails():
    from ocrmem.evaluation.scoring import sign_test

    assert sign_test(10, 0) == sign_test(0, 10) == 2 / 1024
    assert sign_test(8, 2) == 2 * (1 + 10 + 45) / 1024
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0


def test_ocr_memory_is_paired_with_trained_truncated_text_on_the_cut_questions_only():
    def ex(cut, ocr, trunc, skipped=False):
        return {"answer_cut": cut, "conditions": {"ocr_memory": {"correct": ocr, "skipped": skipped},
                                                  "truncated_text_trained": {"correct": trunc, "skipped": False}}}

    examples = [ex(True, True, False)] * 9 + [ex(True, False, True), ex(True, True, True), ex(True, True, False, True),
                                             ex(False, False, True), ex(False, False, True)]
    got = E._paired_on_cut(examples, "ocr_memory", "truncated_text_trained")
    key = "ocr_memory.vs_truncated_text_trained.answer_cut"
    assert (got[f"{key}.wins"], got[f"{key}.losses"]) == (9, 1)
    assert got[f"{key}.sign_test_p"] == round(2 * 11 / 1024, 6)
    assert E._paired_on_cut([ex(False, True, False)], "ocr_memory", "truncated_text_trained") == {}
