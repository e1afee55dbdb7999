"""`ocrmem generate`: one question, or a JSONL file of them with a progress bar; a bad line is named."""

import json

import pytest

from ocrmem.cli import main
from ocrmem.serving.memory_llm import MemoryLLM


@pytest.fixture(scope="module")
def adapter(tiny_adapter):
    return tiny_adapter


HIST = "".join(f"Fact {i}: item {i} is word{i}. " for i in range(30))


def test_generate_answers_a_file_of_questions(adapter, tmp_path, capsys):
    turns = [{"role": "user", "content": "remember k: v"}, {"role": "assistant", "content": "ok"}]
    rows = [{"id": "a", "history": HIST, "prompt": "What is item 3?"},
            {"history": HIST, "prompt": "What is item 29?"},
            {"id": "c", "history": turns, "prompt": "What is k?"}]
    qs = tmp_path / "questions.jsonl"
    qs.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    out = tmp_path / "answers.jsonl"
    assert main(["generate", "--adapter", str(adapter), "--input", str(qs), "--output", str(out),
                 "--max-new-tokens", "3"]) == 0
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert [g["id"] for g in got] == ["a", "line-2", "c"]
    llm = MemoryLLM.from_pretrained(adapter)
    for r, g in zip(rows, got):
        assert g["answer"] == llm.answer(r["history"], r["prompt"], max_new_tokens=3).text
    assert "from the page cache" in capsys.readouterr().out  # the second question reused the first's pages

    hist = tmp_path / "h.txt"
    hist.write_text(HIST)
    assert main(["generate", "--adapter", str(adapter), "--history", str(hist), "--prompt", "What is item 3?",
                 "--max-new-tokens", "3"]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip() == got[0]["answer"]
    paged = llm.render(HIST)  # the memory line: what the pages hold of the history, in characters and pages
    held = len(HIST) - paged.cut_chars
    assert f"(memory: {held:,} of {len(HIST):,} characters of the history on {len(paged.pages)} page" in printed.err


@pytest.mark.parametrize("bad, why", [
    ('{"history": "x", "prompt": "ok"}\n{"history": "x"', "invalid JSON"),
    ('{"history": "x", "prompt": "ok"}\n{"history": "x"}', "'prompt'"),
    ('{"history": "x", "prompt": "ok"}\n{"history": [{"role": "user"}], "prompt": "q"}', "history[0]"),
])
def test_a_bad_line_is_named_with_its_file_and_line(adapter, tmp_path, capsys, bad, why):
    qs = tmp_path / "questions.jsonl"
    qs.write_text(bad)
    out = tmp_path / "answers.jsonl"
    assert main(["generate", "--adapter", str(adapter), "--input", str(qs), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{qs}:2:" in err and why in err and "Traceback" not in err
    assert not out.exists()


def test_generate_needs_one_form(adapter, capsys):
    assert main(["generate", "--adapter", str(adapter), "--prompt", "q"]) == 2
    assert "--input" in capsys.readouterr().err
