"""Fast tests of the annotation prompts and parsers (falconer_assets.llm.prompts); no LLM."""

from __future__ import annotations

import pytest

from falconer_assets.llm.prompts import (
    align_answers,
    label_messages,
    parse_label,
    parse_span_answers,
    span_messages,
)
from falconer_assets.llm.client import ChatResult
from falconer_assets.llm.executor import LLMPrimitives
from falconer_assets.spans import Span
from falconer_assets_tests.conftest import ZERO_AD

# Debian bookworm, package wesnoth-1.16-core, Description-en body as shipped (line breaks and
# double spaces kept).
WESNOTH = (
    "This package contains the main program for wesnoth. It can be used to play\n"
    "multiplayer games.  If you want to play campaigns you will have to install\n"
    "them individually, but if you prefer to have all the official campaigns\n"
    "installed please be advised to install the wesnoth-1.16 package which depends\n"
    "on all of them.\n"
    "\n"
    "Battle for control of villages, using variety of units which have advantages\n"
    "and disadvantages in different types of terrains and against different types\n"
    "of attacks.  Units gain experience and advance levels, and are carried over\n"
    "from one scenario to the next in a campaign."
)



# -- prompts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [span_messages, label_messages])
def test_messages_shape(make):
    msgs = make(ZERO_AD, "Is this package a game?")
    assert msgs[0]["role"] == "system"
    assert msgs[-1]["role"] == "user"
    assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in msgs)
    # few-shot turns alternate user/assistant between system and the real question
    assert [m["role"] for m in msgs[1:-1]] == ["user", "assistant"] * ((len(msgs) - 2) // 2)
    assert ZERO_AD in msgs[-1]["content"] and "Is this package a game?" in msgs[-1]["content"]
    # the text is not in the fixed prefix (keeps llama.cpp's prompt cache reusable)
    assert all(ZERO_AD not in m["content"] for m in msgs[:-1])


def test_span_prompt_wording():
    content = " ".join(m["content"] for m in span_messages("x", "Which formats?"))
    assert "Copy the exact words from the text" in content
    assert "NONE" in content


def test_long_text_is_clipped():
    msgs = label_messages("word " * 5000, "q?", max_chars=100)
    assert len(msgs[-1]["content"]) < 400
    assert "word " * 5000 in label_messages("word " * 5000, "q?", max_chars=None)[-1]["content"]


# -- parse_label ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply,expected",
    [
        ("Yes", True),
        ("Yes.", True),
        ("yes", True),
        ("**Yes**", True),
        ("Answer: yes", True),
        ("YES, it is a game.", True),
        ("True", True),
        ("No", False),
        ("No.", False),
        ("**No**", False),
        ("Answer: No", False),
        ("no, it is a web server", False),
        ("The answer is no.", False),
        ("`No`", False),
        ("", None),
        ("Maybe", None),
        ("I cannot tell: yes or no depends on the version.", None),
        ("...", None),
    ],
)
def test_parse_label(reply, expected):
    assert parse_label(reply) is expected


# -- parse_span_answers -----------------------------------------------------------------------


def test_parse_span_answers_plain_lines():
    assert parse_span_answers("JPEG\nPhotoshop (.psd)\nPaint Shop Pro (.psp)\n") == [
        "JPEG",
        "Photoshop (.psd)",
        "Paint Shop Pro (.psp)",
    ]


def test_parse_span_answers_strips_bullets_numbers_quotes():
    reply = '- "villages"\n* units\n1. terrains\n2) attacks\n(3) campaign\n• levels\n**scenario**\n`wesnoth`'
    assert parse_span_answers(reply) == [
        "villages", "units", "terrains", "attacks", "campaign", "levels", "scenario", "wesnoth",
    ]  # fmt: skip


def test_parse_span_answers_keeps_leading_numbers_that_are_content():
    assert parse_span_answers("500 B.C.\n3.5 GHz\n-5 dB") == ["500 B.C.", "3.5 GHz", "-5 dB"]


def test_parse_span_answers_drops_none_and_dedupes():
    assert parse_span_answers("NONE") == []
    assert parse_span_answers("None.\nN/A\n\n   \n") == []
    assert parse_span_answers("units\nUnits\nunits\nNONE\nvillages") == ["units", "Units", "villages"]
    assert parse_span_answers("```\nunits\n```") == ["units"]
    assert parse_span_answers("Answer: Igor Sysoev") == ["Igor Sysoev"]


# -- align_answers ----------------------------------------------------------------------------


def _check(text: str, spans: list[Span]) -> None:
    for s in spans:
        assert s.text == text[s.start : s.end]
    assert spans == sorted(spans)
    for a, b in zip(spans, spans[1:]):
        assert a.end <= b.start, "spans overlap"


def test_align_exact():
    spans, dropped = align_answers(ZERO_AD, ["real-time strategy (RTS) game", "500 B.C."])
    _check(ZERO_AD, spans)
    assert [s.text for s in spans] == ["real-time strategy (RTS) game", "500 B.C."]
    assert dropped == []
    assert spans[0].start == ZERO_AD.index("real-time") and spans[0].score == 1.0


def test_align_case_insensitive_returns_text_casing():
    spans, dropped = align_answers(ZERO_AD, ["Western Civilizations", "ANCIENT WARFARE"])
    _check(ZERO_AD, spans)
    assert [s.text for s in spans] == ["ancient warfare", "Western civilizations"]
    assert dropped == []


def test_align_whitespace_normalised():
    # the text breaks the line and has double spaces; the model answers on one line
    answer = "different types of attacks. Units gain experience"
    spans, dropped = align_answers(WESNOTH, [answer])
    _check(WESNOTH, spans)
    assert dropped == []
    assert spans[0].text == "different types\nof attacks.  Units gain experience"


def test_align_repeated_answers_get_distinct_occurrences():
    spans, dropped = align_answers(ZERO_AD, ["500", "500", "500"])
    _check(ZERO_AD, spans)
    first = ZERO_AD.index("500")
    second = ZERO_AD.index("500", first + 1)
    assert [s.start for s in spans] == [first, second]
    assert dropped == ["500"]  # only two occurrences in the text


def test_align_not_found_answers_are_dropped():
    spans, dropped = align_answers(ZERO_AD, ["C++", "ancient warfare", "medieval warfare", ""])
    _check(ZERO_AD, spans)
    assert [s.text for s in spans] == ["ancient warfare"]
    assert dropped == ["C++", "medieval warfare"]


def test_align_no_overlap_with_earlier_span():
    spans, dropped = align_answers(WESNOTH, ["play campaigns", "campaigns"])
    _check(WESNOTH, spans)
    # "campaigns" inside "play campaigns" is taken, so the next occurrence is used
    assert [s.text for s in spans] == ["play campaigns", "campaigns"]
    assert spans[1].start == WESNOTH.index("official campaigns") + len("official ")
    assert dropped == []


def test_align_prefers_whole_words():
    # 0ad: "game" is a whole word at its first occurrence; wesnoth: it only occurs inside
    # "games", which is used as a fallback rather than dropping the answer
    spans, _ = align_answers(ZERO_AD, ["game"])
    assert spans[0].start == ZERO_AD.index("game ")  # "game of ancient warfare"
    spans, dropped = align_answers(WESNOTH, ["game"])
    assert [s.text for s in spans] == ["game"] and spans[0].start == WESNOTH.index("games")
    assert dropped == []


def test_align_strips_trailing_punctuation_when_needed():
    spans, dropped = align_answers(ZERO_AD, ["custom-built game engine!", "sound,"])
    _check(ZERO_AD, spans)
    assert [s.text for s in spans] == ["sound,", "custom-built game engine"]
    assert dropped == []


def test_parse_then_align_pipeline():
    reply = "1. villages\n2. Units\n3. terrains\n4. dragons\nNONE"
    spans, dropped = align_answers(WESNOTH, parse_span_answers(reply))
    _check(WESNOTH, spans)
    # exact match first: "Units" (capitalised, later in the text) beats the earlier "units"
    assert [s.text for s in spans] == ["villages", "terrains", "Units"]
    assert dropped == ["dragons"]


def test_llm_primitives_annotate_with_a_fake_chat():
    seen = []

    def fake_chat(messages):
        seen.append(messages)
        text = "Yes." if "Answer strictly Yes or No." in messages[-1]["content"] else "ancient warfare\nC++"
        return ChatResult(text=text, prompt_tokens=10, completion_tokens=2, latency_s=0.5, cached=False)

    llm = LLMPrimitives(fake_chat)
    label = llm.annotate("label", ZERO_AD, "Is this package a game?")
    assert label.label is True and label.parse_ok and label.raw == "Yes."
    span = llm.annotate("span", ZERO_AD, "What is the game about?")
    assert [s.text for s in span.spans] == ["ancient warfare"] and span.dropped == ["C++"]
    assert len(seen) == 2
    assert llm.tokens == 24 and llm.llm_seconds == 1.0
