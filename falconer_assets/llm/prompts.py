"""Prompts and answer parsing for the two primitive sub-tasks an LLM annotates (pure, no I/O).

* **label**: a yes/no question about a text -> ``bool`` (:func:`label_messages`, :func:`parse_label`).
* **span**: extract the exact substrings of a text that answer a question -> ``list[Span]``
  (:func:`span_messages`, :func:`parse_span_answers`, :func:`align_answers`).

The same prompts serve the LLM annotator (labelling a corpus sample for the proxy models) and
the LLM executing a plan directly. They are tuned for the small local Qwen2.5-Coder models
(see ``/work/shared/MODELS.md``): the wording "Copy the exact words from the text. Output only
the extracted words" is what makes a 1.5B model answer with substrings instead of offsets or
paraphrases. Messages are in the OpenAI chat format ``[{"role": ..., "content": ...}]``.

The model's answers are strings; :func:`align_answers` maps them back to character offsets
(exact, then case-insensitive, then whitespace-normalised match) and reports the ones it
could not find, so callers can count hallucinated/paraphrased answers.
"""

from __future__ import annotations

import re

from falconer_assets.spans import Span

#: Texts longer than this many characters are cut (with a marker) before prompting, so that
#: prompt + answer fit a 4096-token context (~4 characters per token for English).
MAX_TEXT_CHARS = 8000

SPAN_SYSTEM = (
    "You extract information from a text. Copy the exact words from the text. "
    "Output only the extracted words, each answer on its own line, with no explanations. "
    "If the text contains no answer, output NONE."
)

LABEL_SYSTEM = (
    "You answer a yes/no question about a text. Answer Yes only if the text supports it, "
    "otherwise No. Reply with exactly one word: Yes or No."
)

#: Few-shot turns (user, assistant) shown before the real question. They come from a domain
#: far from the corpora, so an answer copied from them will not align with a real text and is
#: dropped rather than silently accepted. Being a fixed prefix, llama.cpp's prompt cache
#: reuses their processing across calls.
SPAN_EXAMPLES: tuple[tuple[str, str, str], ...] = (
    (
        "Mix the flour with two eggs and a cup of milk, then bake for 20 minutes.",
        "Which ingredients are used?",
        "flour\ntwo eggs\na cup of milk",
    ),
    (
        "The ferry leaves the harbour at noon and returns in the evening.",
        "Which ingredients are used?",
        "NONE",
    ),
)

LABEL_EXAMPLES: tuple[tuple[str, str, str], ...] = (
    ("The ferry leaves the harbour at noon and returns in the evening.", "Is this text about a boat?", "Yes"),
    ("Mix the flour with two eggs and a cup of milk, then bake for 20 minutes.", "Is this text about a boat?", "No"),
)

NONE_ANSWERS = frozenset(
    {"none", "n/a", "na", "null", "nil", "nothing", "no answer", "not found", "not mentioned", "-", "--", "—"}
)


def _clip(text: str, max_chars: int | None) -> str:
    if max_chars is not None and len(text) > max_chars:
        return text[:max_chars] + "\n[...]"
    return text


def _user_turn(text: str, instruction: str, tail: str, max_chars: int | None) -> str:
    return f"Text:\n\"\"\"\n{_clip(text, max_chars)}\n\"\"\"\n\nQuestion: {instruction.strip()}\n\n{tail}"


_SPAN_TAIL = (
    "Copy the exact words from the text that answer the question. "
    "Output only the extracted words, one answer per line. "
    "If nothing in the text answers it, output NONE."
)
_LABEL_TAIL = "Answer strictly Yes or No."


def _few_shot(system: str, examples, tail: str, text: str, instruction: str, max_chars: int | None) -> list[dict]:
    msgs = [{"role": "system", "content": system}]
    for ex_text, ex_q, ex_a in examples:
        msgs.append({"role": "user", "content": _user_turn(ex_text, ex_q, tail, None)})
        msgs.append({"role": "assistant", "content": ex_a})
    msgs.append({"role": "user", "content": _user_turn(text, instruction, tail, max_chars)})
    return msgs


def span_messages(text: str, instruction: str, max_chars: int | None = MAX_TEXT_CHARS) -> list[dict]:
    """Chat messages asking for the exact substrings of ``text`` that answer ``instruction``.

    Shape: ``[system, (user, assistant) x len(SPAN_EXAMPLES), user]`` in the OpenAI chat
    format. The model is asked for one verbatim answer per line, or ``NONE``; parse the reply
    with :func:`parse_span_answers` and locate it with :func:`align_answers`. ``text`` is cut
    to ``max_chars`` characters (None = never).
    """
    return _few_shot(SPAN_SYSTEM, SPAN_EXAMPLES, _SPAN_TAIL, text, instruction, max_chars)


def label_messages(text: str, instruction: str, max_chars: int | None = MAX_TEXT_CHARS) -> list[dict]:
    """Chat messages asking the yes/no ``instruction`` about ``text``.

    Shape: ``[system, (user, assistant) x len(LABEL_EXAMPLES), user]``; the reply should be
    ``Yes`` or ``No`` (parse it with :func:`parse_label`). ``text`` is cut to ``max_chars``.
    """
    return _few_shot(LABEL_SYSTEM, LABEL_EXAMPLES, _LABEL_TAIL, text, instruction, max_chars)


_YES = {"yes", "y", "true", "correct", "positive"}
_NO = {"no", "n", "false", "incorrect", "negative"}
_PREFIX = re.compile(r"^\s*(?:final\s+)?(?:answer|label|response|output)\s*[:=\-]\s*", re.IGNORECASE)
_MARKUP = re.compile(r"[*_`#>\"'“”‘’\[\]()]")


def parse_label(reply: str) -> bool | None:
    """``True`` for a yes, ``False`` for a no, ``None`` if the reply is neither (or both).

    Tolerates case, punctuation and markdown: ``"Yes."``, ``"**No**"``, ``"Answer: yes"``,
    ``"yes, it is"``, ``"True"``. The first word decides; if it is not yes/no, the reply is
    scanned for standalone yes/no words and counts only if exactly one kind occurs.
    """
    if not reply:
        return None
    s = _MARKUP.sub(" ", reply)
    s = _PREFIX.sub("", s.strip())
    words = re.findall(r"[a-z]+", s.lower())
    if not words:
        return None
    if words[0] in _YES:
        return True
    if words[0] in _NO:
        return False
    has_yes = "yes" in words
    has_no = "no" in words
    if has_yes != has_no:
        return has_yes
    return None


_BULLET = re.compile(r"^\s*(?:[-*•·▪‣+]|\d{1,3}[.)]|\(\d{1,3}\))\s+")
_QUOTES = [('"', '"'), ("'", "'"), ("`", "`"), ("“", "”"), ("‘", "’"), ("«", "»")]


def _clean_answer(line: str) -> str:
    s = line.strip()
    s = _BULLET.sub("", s, count=1)
    s = _PREFIX.sub("", s)
    s = s.strip()
    if s.startswith("**") and s.endswith("**") and len(s) > 4:
        s = s[2:-2].strip()
    changed = True
    while changed and len(s) >= 2:
        changed = False
        for a, b in _QUOTES:
            if s.startswith(a) and s.endswith(b) and len(s) > len(a) + len(b) - 1:
                s = s[len(a) : len(s) - len(b)].strip()
                changed = True
    return s


def is_none_answer(answer: str) -> bool:
    """True for empty answers and the model's ways of saying "nothing" (NONE, N/A, null, ...)."""
    return answer.strip().strip(".!").strip().lower() in NONE_ANSWERS or not answer.strip()


def parse_span_answers(reply: str) -> list[str]:
    """Split a span reply into answer strings, one per line.

    Strips bullets (``-``, ``*``, ``•``), numbering (``1.``, ``2)``, ``(3)``), an
    ``Answer:`` prefix, ``**bold**`` and surrounding quotes; drops ``NONE``/``N/A``/empty
    lines and code fences; de-duplicates keeping the first occurrence's order. Does not
    check the answers against the text (that is :func:`align_answers`).
    """
    out: list[str] = []
    seen: set[str] = set()
    for line in (reply or "").splitlines():
        if line.strip().startswith("```"):
            continue
        ans = _clean_answer(line)
        if is_none_answer(ans) or ans in seen:
            continue
        seen.add(ans)
        out.append(ans)
    return out


def _overlaps(start: int, end: int, used: list[tuple[int, int]]) -> bool:
    return any(start < e and s < end for s, e in used)


def _on_word_boundary(text: str, start: int, end: int) -> bool:
    """A match must not cut a word: an alphanumeric edge may not touch another alphanumeric."""
    if start > 0 and text[start].isalnum() and text[start - 1].isalnum():
        return False
    if end < len(text) and text[end - 1].isalnum() and text[end].isalnum():
        return False
    return True


def _patterns(answer: str) -> list[re.Pattern]:
    """Exact, case-insensitive, whitespace-normalised (any run of whitespace), in that order."""
    exact = re.escape(answer)
    ws = r"\s+".join(re.escape(tok) for tok in answer.split())
    return [re.compile(exact), re.compile(exact, re.IGNORECASE), re.compile(ws, re.IGNORECASE)]


def _find(text: str, answer: str, used: list[tuple[int, int]]) -> tuple[int, int] | None:
    pats = _patterns(answer)
    for need_boundary in (True, False):
        for pat in pats:
            for m in pat.finditer(text):
                s, e = m.span()
                if e <= s or _overlaps(s, e, used):
                    continue
                if need_boundary and not _on_word_boundary(text, s, e):
                    continue
                return s, e
    return None


def align_answers(text: str, answers: list[str]) -> tuple[list[Span], list[str]]:
    """Locate each answer string in ``text``; return ``(spans sorted by start, answers not found)``.

    For each answer (in order), the first occurrence not overlapping an already returned span
    is taken, trying an exact match, then a case-insensitive one, then a whitespace-normalised
    one (any whitespace run in the answer matches any whitespace run in the text: the model
    often collapses line breaks and double spaces). Occurrences that cut a word (``"game"``
    inside ``"games"``) are used only when no whole-word occurrence exists. If nothing is
    found, trailing ``.,;:!?`` is stripped and the search repeated. So repeated answers get
    distinct occurrences, and spans never overlap.

    Returns:
        spans: :class:`Span` objects with ``span.text == text[start:end]`` (the text's own
            characters, whatever the answer's case/whitespace), score 1.0.
        dropped: the answers (as given) that could not be located, in input order; empty
            answers are ignored, not dropped.
    """
    used: list[tuple[int, int]] = []
    dropped: list[str] = []
    for ans in answers:
        a = ans.strip()
        if not a:
            continue
        hit = _find(text, a, used)
        if hit is None:
            b = a.rstrip(".,;:!?").strip()
            if b and b != a:
                hit = _find(text, b, used)
        if hit is None:
            dropped.append(ans)
        else:
            used.append(hit)
    spans = [Span.of(text, s, e) for s, e in sorted(used)]
    return spans, dropped
