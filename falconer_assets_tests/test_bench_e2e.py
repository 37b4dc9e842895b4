"""The end-to-end gold benchmark: its scoring on known outputs, and the documented ``--quick`` command.

``test_e2e_quick`` runs ``python -m falconer_assets.bench e2e --quick`` with the real embedded LLM and
the real proxy (plain MiniLM: the metamodel is not built on a fresh CI machine), a few minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from falconer_assets.bench import e2e
from falconer_assets.bench.e2e_gold import (
    GOLD_TASKS,
    GoldDoc,
    corpus_of,
    normalise_value,
    predicted_positive,
    predicted_spans,
    predicted_values,
    result_from_json,
    result_json,
)
from falconer_assets.metrics import span_prf
from falconer_assets.spans import Span

REPO = Path(__file__).resolve().parents[1]


def _span(text: str, word: str, score: float = 1.0) -> Span:
    i = text.index(word)
    return Span(i, i + len(word), word, score)


def test_retrieval_and_value_rules():
    assert not predicted_positive(None)
    assert predicted_positive({"game": True}) and not predicted_positive({"game": False})
    assert predicted_positive({"language": []})  # an extraction result retrieves its document
    text = "A Python 3 binding, also usable from Node.js."
    result = {"language": [_span(text, "Python 3"), _span(text, "Node.js")]}
    assert predicted_values(result) == {"python", "javascript"}
    assert predicted_values({"flag": False, "language": [_span(text, "Python 3")]}) == set()
    assert normalise_value(" Golang ") == "go" and normalise_value("Perl programming language") == "perl"
    assert result_from_json(result_json(result)) == result and result_json(None) is None


def test_doc_counts_match_seqeval_and_label_prf():
    task = GOLD_TASKS["wnut16_people"]
    texts = ["Ann met Bob Smith in Paris", "nobody here", "Carl and Dana"]
    gold = [GoldDoc("a", texts[0], spans=(_span(texts[0], "Ann"), _span(texts[0], "Bob Smith"))),
            GoldDoc("b", texts[1], spans=()),
            GoldDoc("c", texts[2], spans=(_span(texts[2], "Carl"), _span(texts[2], "Dana")))]
    pred = [{"person": [_span(texts[0], "Ann"), _span(texts[0], "Bob")]}, {"person": [_span(texts[1], "nobody")]},
            {"person": [_span(texts[2], "Dana")]}]
    counts = e2e._doc_counts(task, "spans", gold, pred)
    ref = span_prf(texts, [list(g.spans) for g in gold], [predicted_spans(p) for p in pred])
    p, r, f = e2e._prf(counts)
    assert (round(p, 6), round(r, 6), round(f, 6)) == (round(ref["precision"], 6), round(ref["recall"], 6),
                                                       round(ref["f1"], 6))
    m = e2e.f1_with_interval(counts)
    assert m["n"] == 3 and m["gold"] == 4 and m["low"] <= m["f1"] <= m["high"]
    games = GOLD_TASKS["debian_games"]
    docs = [GoldDoc(str(i), f"t{i}", label=i % 2 == 0) for i in range(6)]
    outs = [{"game": True} if i in (0, 1, 2) else None for i in range(6)]
    assert e2e._prf(e2e._doc_counts(games, "retrieval", docs, outs))[:2] == (2 / 3, 2 / 3)


def test_values_skip_documents_without_value_gold():
    task = GOLD_TASKS["debian_library_language"]
    t = "Perl module for parsing"
    docs = [GoldDoc("x", t, label=True, values=frozenset({"perl"})), GoldDoc("y", t, label=True, values=None),
            GoldDoc("z", t, label=False, values=frozenset())]
    out = [{"language": [_span(t, "Perl")]}] * 3
    assert e2e._doc_counts(task, "values", docs, out) == [(1, 1, 1), (0, 0, 0), (0, 1, 0)]


def test_corpus_and_split_are_seeded_and_disjoint():
    task = GOLD_TASKS["debian_games"]
    docs = corpus_of(task, seed=0, max_docs=120)
    assert docs == corpus_of(task, seed=0, max_docs=120) and len(docs) == 120
    assert len({d.text for d in docs}) == len(docs)
    sampled, test, llm = e2e.split_corpus(docs, e2e.QUICK)
    assert not {i for i, _ in sampled} & set(test) and set(llm) <= set(test)
    assert len(test) == e2e.QUICK.test_docs and {s for _, s in sampled} == {"train", "heldout"}


@pytest.mark.slow
def test_e2e_quick(tmp_path):
    """The documented quick command: a whole run vs gold, three systems on the same documents, resumable."""
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = [sys.executable, "-m", "falconer_assets.bench", "e2e", "--quick", "--base-model", "minilm",
           "--out", str(out), "--work", str(work)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((out / "e2e.json").read_text())
    (task,) = result["tasks"]
    assert task["task"] == "debian_games" and task["n_test"] == task["n_llm"] == e2e.QUICK.test_docs
    systems = task["systems"]["retrieval"]
    assert set(systems) == {"llm", "proxy", "cascade"}
    for m in systems.values():
        assert m["n"] == e2e.QUICK.test_docs and 0 <= m["low"] <= m["f1"] <= m["high"] <= 1
    # every system ran the plan on the same documents; the LLM-alone run paid for its calls
    assert task["costs"]["llm_calls"] == e2e.QUICK.test_docs and task["costs"]["llm_seconds_per_doc"] > 0
    assert 0 <= task["cascade_share"] <= 1 and task["bands"]
    assert [c["budget"] for c in task["curve"]] == list(e2e.QUICK.budgets)
    assert task["curve"][-1]["f1"] == pytest.approx(systems["llm"]["f1"])  # all answers from the LLM = LLM alone
    (rep,) = task["repetitions"].values()
    assert rep["of"] == e2e.QUICK.repetitions and 0 <= rep["met"] <= rep["of"]
    assert (out / "e2e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| debian_games | retrieval (primary) |" in (out / "e2e.md").read_text()
    # a re-run reuses the raw outputs: no LLM call, no training, the same scores
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "e2e.json").read_text())["tasks"][0]["systems"] == task["systems"]
