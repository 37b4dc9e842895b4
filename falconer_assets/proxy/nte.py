"""Next-tokens-extraction (NTE) codec: prompts, B/I/O tag encoding and decoding.

This module turns Falconer's two primitives into one token-classification problem,
following the Cuckoo "next tokens extraction" formulation (Falconer paper, section 3.3
and Appendix A; reference code: github.com/KomeijiForce/Cuckoo, ``run_ner.py`` for
training, ``case_next_tokens_extraction.py`` for prompts and decoding):

* ``get_span`` -> the text is wrapped in a ``User: ... Question: ... Assistant:`` prompt
  (optionally followed by an answer prefix such as ``Answer: The person is``) and every
  WORD of the text is tagged O/B/I; a B opens a span and following I's extend it.
* ``get_label`` -> the prompt additionally lists ``Choices: Yes / No``; the model tags the
  chosen choice word with B, and ``P(B at Yes)`` against ``P(B at No)`` gives the score.

Words are the fast tokenizer's pre-tokenizer words (``BatchEncoding.word_ids()``). As in
Cuckoo's ``run_ner.py`` with ``label_all_tokens=False`` (and the Hugging Face
token-classification example's label alignment), only the FIRST sub-token of a word
carries its tag; the other sub-tokens are ignored by the loss (-100) and decoding reads the
first sub-token only, so a span always covers whole words. Tokens are mapped to characters
with ``return_offsets_mapping``, so every span offset is into the ORIGINAL text, whatever
the tokenizer does to case or accents. Pure logic: no torch
import is needed here (``probs`` may be a numpy array, a CPU tensor or nested lists).

Documents of any length: :func:`encode_span` / :func:`encode_label` encode ONE window (a text
too long for ``max_length`` is truncated). :func:`encode_span_windows` /
:func:`encode_label_windows` split a longer text into overlapping windows cut at word
boundaries (:func:`window_ranges`, the Hugging Face ``stride`` scheme), each with the full
prompt; :func:`decode_window_spans` maps spans back to document offsets and merges the overlap
(:func:`merge_window_spans`), :func:`window_label_score` takes the max ``P(yes)`` over windows.
A text that fits is one window with exactly the single-window encoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from falconer_assets.spans import Span

TAGS = ("O", "B", "I")
"""Tag names by id: O=0 (outside), B=1 (begins a span / chosen choice), I=2 (inside)."""

O_ID, B_ID, I_ID = 0, 1, 2
IGNORE_ID = -100
"""Label id ignored by the loss (PyTorch ``CrossEntropyLoss(ignore_index=-100)`` default)."""

_SPAN_HEAD = "User:\n\n"
_SPAN_TAIL = "\n\nQuestion: {instruction}\n\nAssistant:"
_LABEL_HEAD = "User:\n\nChoices:\nYes\nNo\n\n"
_LABEL_TAIL = (
    "\n\nQuestion: Based on the above text, is the following true? {instruction}"
    "\n\nAssistant:\n\nAnswer:"
)


def _check_inputs(text: Any, instruction: Any) -> None:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not isinstance(instruction, str):
        raise TypeError(f"instruction must be a str, got {type(instruction).__name__}")
    if not instruction.strip():
        raise ValueError("instruction is empty: get_span/get_label need a non-blank instruction")


def span_prompt(text: str, instruction: str, answer_prefix: str | None = None) -> tuple[str, int]:
    """Build the span sub-task prompt (Cuckoo NTE format, Falconer 3.3).

    Format: ``"User:\\n\\n{text}\\n\\nQuestion: {instruction}\\n\\nAssistant:"``, plus
    ``"\\n\\n{answer_prefix}"`` when an answer prefix is given (Cuckoo's README style, e.g.
    ``"Answer: The person is"``, which steers the tagger to the answer type). The
    instruction and prefix are stripped of surrounding whitespace, the text is inserted
    verbatim.

    Returns:
        ``(prompt, text_start)`` where ``prompt[text_start:text_start + len(text)] == text``
        (``text_start`` is a character offset into ``prompt``).

    Raises:
        TypeError: if ``text`` or ``instruction`` is not a ``str``.
        ValueError: if ``instruction`` is empty or blank.
    """
    _check_inputs(text, instruction)
    prompt = _SPAN_HEAD + text + _SPAN_TAIL.format(instruction=instruction.strip())
    if answer_prefix is not None and answer_prefix.strip():
        prompt += "\n\n" + answer_prefix.strip()
    return prompt, len(_SPAN_HEAD)


def label_prompt(text: str, instruction: str) -> tuple[str, int, int, int]:
    """Build the label sub-task prompt: a Yes/No choice (Falconer 3.3 / Appendix A).

    Format::

        User:\\n\\nChoices:\\nYes\\nNo\\n\\n{text}\\n\\nQuestion: Based on the above text,
        is the following true? {instruction}\\n\\nAssistant:\\n\\nAnswer:

    The instruction may be a statement or a yes/no question ("Is this package a game?").

    Returns:
        ``(prompt, text_start, yes_start, no_start)``: character offsets into ``prompt`` of
        the text and of the ``Yes`` / ``No`` choice words.

    Raises:
        TypeError: if ``text`` or ``instruction`` is not a ``str``.
        ValueError: if ``instruction`` is empty or blank.
    """
    _check_inputs(text, instruction)
    prompt = _LABEL_HEAD + text + _LABEL_TAIL.format(instruction=instruction.strip())
    yes_start = _LABEL_HEAD.index("\nYes\n") + 1
    no_start = _LABEL_HEAD.index("\nNo\n") + 1
    return prompt, len(_LABEL_HEAD), yes_start, no_start


@dataclass
class Encoded:
    """One tokenized NTE example (unpadded; padding is the collator's job).

    Attributes:
        input_ids: token ids of the whole prompt including special tokens, length ``n``
            with ``n <= max_length``.
        attention_mask: ``n`` ones.
        labels: ``n`` tag ids (``O=0, B=1, I=2``) or ``-100`` where the loss ignores the
            token (everything but the first sub-token of each text word, or of the chosen
            choice words for a label prompt). All ``-100`` at inference.
        offsets: ``n`` pairs ``(start, end)``: character offsets into the ORIGINAL text for
            context (text) tokens, ``(-1, -1)`` for every other token.
        words: the text's words in order, one ``(first_token, last_token, start, end)``
            tuple each: token indices (inclusive) and character offsets into the original
            text (end exclusive). Only words inside the kept (untruncated) text.
        text_len_used: number of leading characters of the text kept after truncation
            (``len(text)`` when nothing was cut).
        yes_index: token index of the ``Yes`` choice word (label prompts), else ``None``.
        no_index: token index of the ``No`` choice word (label prompts), else ``None``.
        truncated_spans: number of gold spans not fully inside the kept text (0 at
            inference); their kept words, if any, are labelled -100. For a window of a long
            document (:func:`encode_span_windows`), the gold spans cut by the window's edges.
    """

    input_ids: list[int]
    attention_mask: list[int]
    labels: list[int]
    offsets: list[tuple[int, int]]
    words: list[tuple[int, int, int, int]]
    text_len_used: int
    yes_index: int | None = None
    no_index: int | None = None
    truncated_spans: int = field(default=0)

    def __len__(self) -> int:
        return len(self.input_ids)

    def features(self, with_labels: bool = True) -> dict[str, list[int]]:
        """The dict a ``DataCollatorForTokenClassification`` pads (``labels`` optional)."""
        d = {"input_ids": list(self.input_ids), "attention_mask": list(self.attention_mask)}
        if with_labels:
            d["labels"] = list(self.labels)
        return d


def _tokenize(tokenizer, prompt: str) -> tuple[list[int], list[tuple[int, int]], list[int | None]]:
    """``(input_ids, prompt offsets, word_ids)`` of one prompt, special tokens included."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "a fast (Rust) tokenizer is required for return_offsets_mapping; "
            f"got {type(tokenizer).__name__}"
        )
    enc = tokenizer(
        prompt,
        add_special_tokens=True,
        truncation=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,  # we truncate ourselves; silence the "longer than max" warning
    )
    return (
        list(enc["input_ids"]),
        [tuple(map(int, o)) for o in enc["offset_mapping"]],
        list(enc.word_ids()),
    )


def _context_offsets(
    offsets: list[tuple[int, int]], text_start: int, text_len: int
) -> list[tuple[int, int]]:
    """Map prompt offsets to text offsets: tokens overlapping the text, clipped to it."""
    text_end = text_start + text_len
    out: list[tuple[int, int]] = []
    for s, e in offsets:
        if e > s and s < text_end and e > text_start:
            out.append((max(s, text_start) - text_start, min(e, text_end) - text_start))
        else:
            out.append((-1, -1))
    return out


def _group_words(
    offsets: list[tuple[int, int]], word_ids: list[int | None]
) -> list[tuple[int, int, int, int]]:
    """Group context tokens into words: ``[(first_token, last_token, start, end), ...]``.

    Consecutive context tokens with the same ``word_id`` form one word; a token without a
    word id (some tokenizers give none for odd characters) is a word of its own.
    """
    words: list[tuple[int, int, int, int]] = []
    prev_wid: int | None = None
    for i, (s, e) in enumerate(offsets):
        if s < 0:
            prev_wid = None
            continue
        wid = word_ids[i]
        if words and wid is not None and wid == prev_wid and words[-1][1] == i - 1:
            first, _, ws, _ = words[-1]
            words[-1] = (first, i, ws, e)
        else:
            words.append((i, i, s, e))
        prev_wid = wid
    return words


def _fit(tokenizer, build, text: str, max_length: int):
    """Tokenize ``build(text_prefix)`` with the longest token-aligned text prefix that fits.

    ``build(t)`` returns ``(prompt, text_start, *extra)``. Returns ``(ids, offsets, words,
    kept_len, built, raw)``: ``offsets`` mapped to text coordinates, ``words`` as in
    :attr:`Encoded.words`, ``raw`` the prompt offsets. Raises ValueError when even an empty
    text does not fit.
    """
    kept = len(text)
    for _ in range(64):  # converges in 1-3 rounds; the bound only guards pathological tokenizers
        built = build(text[:kept])
        ids, raw, word_ids = _tokenize(tokenizer, built[0])
        offs = _context_offsets(raw, built[1], kept)
        if len(ids) <= max_length:
            return ids, offs, _group_words(offs, word_ids), kept, built, raw
        if kept == 0:
            raise ValueError(
                f"the prompt without any text is {len(ids)} tokens, more than "
                f"max_length={max_length}: shorten the instruction or raise max_length"
            )
        ctx = [o for o in offs if o[0] >= 0]
        keep_tokens = len(ctx) - (len(ids) - max_length)
        new_kept = ctx[keep_tokens - 1][1] if keep_tokens > 0 else 0
        kept = min(new_kept, kept - 1)  # always make progress
    raise ValueError("could not truncate the text to fit max_length")  # pragma: no cover


def _check_max_length(max_length: int) -> None:
    if not isinstance(max_length, int) or max_length < 8:
        raise ValueError(f"max_length must be an int >= 8, got {max_length!r}")


def encode_span(
    tokenizer,
    text: str,
    instruction: str,
    spans: Sequence[Span] | None,
    max_length: int = 256,
    answer_prefix: str | None = None,
) -> Encoded:
    """Encode a span sub-task example (Cuckoo NTE tagging, word-level BIO labels).

    Only text words are labelled, on their first sub-token (``label_all_tokens=False`` in
    Cuckoo's ``run_ner.py``): the first word overlapping a gold span gets B, later words
    overlapping the same span get I, other words get O; later sub-tokens, the prompt
    scaffolding, the question and special tokens get -100. A word overlapping two spans
    belongs to the first. A gold span edge inside a word widens the span to the whole word
    (decoding returns whole words). When the prompt exceeds ``max_length`` tokens the TEXT
    is cut at a token boundary (question kept intact); spans not fully inside the kept
    text are counted in ``truncated_spans`` and their kept words get -100.

    Args:
        tokenizer: a Hugging Face *fast* tokenizer.
        text: the document text; spans index into it.
        instruction: the extraction question, e.g. "What is the game genre?".
        spans: gold spans (character offsets into ``text``), ``[]`` for "no span", or
            ``None`` at inference (all labels -100).
        max_length: maximum number of tokens including special tokens.
        answer_prefix: optional text after ``Assistant:`` (see :func:`span_prompt`).

    Returns:
        An :class:`Encoded` with ``yes_index = no_index = None``.

    Raises:
        TypeError: non-str text/instruction.
        ValueError: blank instruction; a span outside ``text`` or whose ``span.text`` differs
            from ``text[start:end]``; a non-fast tokenizer; an instruction too long to fit.
    """
    _check_inputs(text, instruction)
    _check_max_length(max_length)
    if spans is not None:
        for sp in spans:
            if sp.end > len(text) or text[sp.start : sp.end] != sp.text:
                raise ValueError(
                    f"span {sp.start}-{sp.end} {sp.text!r} does not match the text "
                    f"(text[{sp.start}:{sp.end}] = {text[sp.start:sp.end]!r})"
                )
    ranges = None if spans is None else [(sp.start, sp.end) for sp in spans]
    return _span_encoding(tokenizer, text, instruction, ranges, max_length, answer_prefix)


def _span_encoding(
    tokenizer,
    text: str,
    instruction: str,
    ranges: Sequence[tuple[int, int]] | None,
    max_length: int,
    answer_prefix: str | None,
) -> Encoded:
    """:func:`encode_span` after validation; ``ranges`` are gold ``(start, end)`` in ``text``.

    A range may reach outside ``text`` (``start < 0`` or ``end > len(text)``: a gold span cut
    by a window edge); like a span cut by truncation, it counts in ``truncated_spans`` and the
    words of it that are in ``text`` get -100.
    """
    ids, offs, words, kept, _, _ = _fit(
        tokenizer, lambda t: span_prompt(t, instruction, answer_prefix), text, max_length
    )
    labels = [IGNORE_ID] * len(ids)
    truncated = 0
    if ranges is not None:
        ordered = sorted((r for r in ranges if r[1] > r[0]), key=lambda r: (r[0], r[1]))
        truncated = sum(1 for r in ordered if r[1] > kept or r[0] < 0)
        prev: int | None = None
        for first, _last, ws, we in words:
            owner = next((k for k, sp in enumerate(ordered) if ws < sp[1] and we > sp[0]), None)
            if owner is None:
                labels[first] = O_ID
            elif ordered[owner][1] > kept or ordered[owner][0] < 0:
                labels[first] = IGNORE_ID
            else:
                labels[first] = I_ID if prev == owner else B_ID
            prev = owner
    return Encoded(
        input_ids=ids,
        attention_mask=[1] * len(ids),
        labels=labels,
        offsets=offs,
        words=words,
        text_len_used=kept,
        truncated_spans=truncated,
    )


def _choice_index(raw_offsets: list[tuple[int, int]], char: int) -> int:
    for i, (s, e) in enumerate(raw_offsets):
        if e > s and s <= char < e:
            return i
    raise ValueError(f"no token covers the choice word at prompt offset {char}")  # pragma: no cover


def encode_label(
    tokenizer, text: str, instruction: str, label: bool | None, max_length: int = 256
) -> Encoded:
    """Encode a label sub-task example as a Yes/No choice (Falconer 3.3 / Appendix A).

    Training labels: the first token of the chosen choice word (``Yes`` for True, ``No``
    for False) gets B, the other choice's first token gets O, every other token -100.
    ``label=None`` (inference) leaves all labels -100. The text is truncated exactly as in
    :func:`encode_span`; the choices and question are never cut.

    Returns:
        An :class:`Encoded` with ``yes_index`` / ``no_index`` set.

    Raises:
        TypeError: non-str text/instruction, or a non-bool, non-None label.
        ValueError: blank instruction; a non-fast tokenizer; an instruction too long to fit.
    """
    _check_inputs(text, instruction)
    _check_max_length(max_length)
    if label is not None and not isinstance(label, (bool, np.bool_)):
        raise TypeError(f"label must be a bool or None, got {type(label).__name__}")
    ids, offs, words, kept, built, raw = _fit(
        tokenizer, lambda t: label_prompt(t, instruction), text, max_length
    )
    _, _, yes_start, no_start = built
    yes_index, no_index = _choice_index(raw, yes_start), _choice_index(raw, no_start)
    labels = [IGNORE_ID] * len(ids)
    if label is not None:
        labels[yes_index] = B_ID if label else O_ID
        labels[no_index] = O_ID if label else B_ID
    return Encoded(
        input_ids=ids,
        attention_mask=[1] * len(ids),
        labels=labels,
        offsets=offs,
        words=words,
        text_len_used=kept,
        yes_index=yes_index,
        no_index=no_index,
    )


def _as_probs(enc: Encoded, probs) -> np.ndarray:
    if hasattr(probs, "detach"):  # torch tensor, without importing torch
        probs = probs.detach().float().cpu().numpy()
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != len(TAGS) or arr.shape[0] < len(enc.input_ids):
        raise ValueError(
            f"probs must have shape [>= {len(enc.input_ids)}, {len(TAGS)}], got {arr.shape}"
        )
    return arr[: len(enc.input_ids)]


def decode_spans(text: str, enc: Encoded, probs) -> list[Span]:
    """Decode per-token tag probabilities into spans of ``text`` at WORD level.

    Each text word takes the argmax tag of its first sub-token (the token that was trained;
    the others are ignored, Cuckoo ``run_ner.py`` with ``label_all_tokens=False``). As in
    Cuckoo's ``find_sequences``, a B opens a new span (closing any open one), an I extends
    the open span, an O closes it; an I with no open span is ignored. A span covers
    ``[start of its first word, end of its last word)`` (inner whitespace kept), trimmed of
    surrounding whitespace; its score is the mean probability of its words' argmax tags.
    Cuckoo detokenizes and drops predictions it cannot find in the source text; here
    offsets come from the tokenizer, so every span is a substring of ``text`` by
    construction and only empty (all-whitespace) spans are dropped.

    Args:
        text: the original text given to the encoder.
        enc: the :class:`Encoded` from :func:`encode_span` for ``text``.
        probs: ``[seq_len, 3]`` softmax probabilities (``seq_len >= len(enc.input_ids)``;
            padded rows beyond are ignored); numpy array, torch tensor or nested lists.

    Returns:
        Spans sorted by start, offsets into ``text``.

    Raises:
        ValueError: if ``probs`` has the wrong shape.
    """
    arr = _as_probs(enc, probs)
    tags = arr.argmax(axis=1)
    spans: list[Span] = []
    cur: list[tuple[int, int, int, int]] = []  # words of the open span

    def close() -> None:
        if not cur:
            return
        start, end = cur[0][2], cur[-1][3]
        piece = text[start:end]
        lead = len(piece) - len(piece.lstrip())
        trail = len(piece) - len(piece.rstrip())
        start, end = start + lead, end - trail
        if end > start:
            score = float(np.mean([arr[w[0], tags[w[0]]] for w in cur]))
            spans.append(Span.of(text, start, end, score))
        cur.clear()

    for word in enc.words:
        tag = int(tags[word[0]])
        if tag == B_ID:
            close()
            cur.append(word)
        elif tag == I_ID and cur:
            cur.append(word)
        else:  # O, or an orphan I
            close()
    close()
    return spans


def label_score(enc: Encoded, probs) -> float:
    """``p_yes = P(B at Yes) / (P(B at Yes) + P(B at No))`` in [0, 1] (Falconer 3.3).

    Args:
        enc: an :class:`Encoded` from :func:`encode_label`.
        probs: ``[seq_len, 3]`` softmax probabilities, as for :func:`decode_spans`.

    Returns:
        The probability that the answer is Yes; 0.5 if both B-probabilities are 0.

    Raises:
        ValueError: if ``enc`` has no choice indices (not a label encoding) or ``probs`` has
            the wrong shape.
    """
    if enc.yes_index is None or enc.no_index is None:
        raise ValueError("label_score needs an encoding from encode_label (no Yes/No indices)")
    arr = _as_probs(enc, probs)
    p_yes, p_no = float(arr[enc.yes_index, B_ID]), float(arr[enc.no_index, B_ID])
    total = p_yes + p_no
    return 0.5 if total <= 0.0 else p_yes / total


def word_spans(enc: Encoded) -> list[tuple[int, int]]:
    """Character ranges ``[(start, end), ...]`` of the kept text words of ``enc``, in order.

    Useful to build gold spans that a word-level tagger can represent exactly (round-trip
    tests, silver data).
    """
    return [(ws, we) for _f, _l, ws, we in enc.words]


# ---------------------------------------------------------------- documents longer than the window

OVERLAP_FRACTION = 0.25
"""Default overlap of consecutive windows, as a fraction of a window's text-token budget.

The budget is ``max_length`` minus the tokens of the prompt with an empty text (special tokens,
scaffolding, question). With the default ``max_length=256`` and a short question (~25 prompt
tokens) the overlap is ~57 tokens; with ``max_length=64``, ~10. The Hugging Face
question-answering examples use ``doc_stride=128`` of ``max_seq_length=384`` (a third); answers
here are short spans, so a quarter costs fewer windows for the same guarantee."""


@dataclass
class Window:
    """One window of a document: a slice of its text encoded with the full prompt.

    Attributes:
        start: character offset of the window's first character in the DOCUMENT.
        end: character offset one past its last character (``end - start ==
            enc.text_len_used``), so the window text is ``document[start:end]``.
        enc: the :class:`Encoded` of the window text (its ``offsets``, ``words`` and
            ``text_len_used`` are in WINDOW coordinates: add ``start`` for the document's).
    """

    start: int
    end: int
    enc: Encoded


def _text_tokens(tokenizer, text: str) -> tuple[list[tuple[int, int]], list[int]]:
    """Tokens of ``text`` alone (no special tokens): ``(offsets, cut_levels)``.

    ``offsets``: ``(start, end)`` character offsets of the non-empty tokens. ``cut_levels[k]``
    rates a cut just before token ``k``: 2 = a whitespace-separated word boundary (whitespace
    between token ``k-1`` and token ``k``), 1 = a pre-tokenizer word boundary without whitespace
    (e.g. before the ``-`` of ``libfoo-perl`` for BERT), 0 = inside a word (e.g. before ``##x``).
    """
    enc = tokenizer(
        text,
        add_special_tokens=False,
        truncation=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    offsets: list[tuple[int, int]] = []
    levels: list[int] = []
    prev_end, prev_wid = 0, None
    for (s, e), wid in zip(enc["offset_mapping"], enc.word_ids()):
        s, e = int(s), int(e)
        if e <= s:
            continue
        if not offsets or any(c.isspace() for c in text[prev_end:s]):
            levels.append(2)
        elif wid is None or wid != prev_wid:
            levels.append(1)
        else:
            levels.append(0)
        offsets.append((s, e))
        prev_end, prev_wid = max(prev_end, e), wid
    return offsets, levels


def _best_cut(levels: list[int], lo: int, hi: int) -> int:
    """The largest token index in ``[lo, hi]`` among those with the best cut level."""
    best, best_level = hi, -1
    for k in range(hi, lo - 1, -1):
        if levels[k] > best_level:
            best, best_level = k, levels[k]
            if best_level == 2:
                break
    return best


def window_ranges(
    tokenizer, text: str, build, max_length: int, overlap: int | None = None
) -> list[tuple[int, int]]:
    """Split ``text`` into overlapping ``(start, end)`` character windows that fit ``max_length``.

    The overlapping-window scheme of the Hugging Face token-classification and
    question-answering examples (``return_overflowing_tokens=True`` with ``stride``: ``stride``
    is the number of tokens shared by consecutive windows), done on the TEXT rather than on the
    prompt's tokens so that every window carries the whole prompt (instruction included) and
    windows are cut at word boundaries:

    1. the text is tokenized alone; a window holds at most ``budget = max_length - tokens of
       build("")`` text tokens;
    2. a window ends at the last whitespace word boundary within its budget (else the last
       pre-tokenizer word boundary, else a token boundary), backing off at most half the
       budget; the last window ends at ``len(text)``;
    3. the next window starts at the last such boundary at least ``overlap`` tokens before the
       previous window's end (the first starts at 0).

    Guarantee: an answer of at most ``overlap`` tokens is fully inside at least one window
    (let ``k`` be the last window starting at or before the answer; if the answer ran past
    its end, it would start after window ``k+1``'s start). A window whose prompt is still too
    long (the text tokenizes differently inside the prompt; rare) is shrunk and re-cut.

    Args:
        tokenizer: a Hugging Face fast tokenizer.
        text: the document.
        build: ``build(window_text) -> (prompt, text_start, ...)``, e.g. ``span_prompt``
            with the instruction bound.
        max_length: tokens per window, special tokens included.
        overlap: tokens shared by consecutive windows; ``None`` -> ``int(budget *``
            :data:`OVERLAP_FRACTION` ``)``; capped at ``budget // 2`` so windows advance.

    Returns:
        Windows in order, character offsets into ``text``; consecutive windows overlap, the
        first starts at 0 and the last ends at ``len(text)`` (``[(0, len(text))]`` when the
        text has no token). Inner windows start at a token's first character and end at a
        token's last, so they hold no leading or trailing whitespace.

    Raises:
        ValueError: if the prompt without any text does not fit ``max_length``, or
            ``overlap`` is negative.
    """
    if overlap is not None and (not isinstance(overlap, int) or overlap < 0):
        raise ValueError(f"overlap must be an int >= 0 or None, got {overlap!r}")
    prompt_tokens = len(_tokenize(tokenizer, build("")[0])[0])
    budget = max_length - prompt_tokens
    if budget < 1:
        raise ValueError(
            f"the prompt without any text is {prompt_tokens} tokens, leaving no room for text in "
            f"max_length={max_length}: shorten the instruction or raise max_length"
        )
    ov = int(budget * OVERLAP_FRACTION) if overlap is None else overlap
    ov = min(ov, budget // 2)
    toks, levels = _text_tokens(tokenizer, text)
    n = len(toks)
    if n == 0:
        return [(0, len(text))]
    ranges: list[tuple[int, int]] = []
    i = 0  # first token of the current window
    while True:
        b = budget
        while True:
            j = i + b  # one past the last token that fits
            t = n if j >= n else _best_cut(levels, i + max(1, b // 2), j)
            ws = 0 if i == 0 else toks[i][0]
            we = len(text) if t == n else toks[t - 1][1]
            used = len(_tokenize(tokenizer, build(text[ws:we])[0])[0])
            if used <= max_length or b == 1:
                break
            b = max(1, b - (used - max_length))
        ranges.append((ws, we))
        if t == n:
            return ranges
        i = _best_cut(levels, i + 1, max(i + 1, t - ov))


def encode_span_windows(
    tokenizer,
    text: str,
    instruction: str,
    spans: Sequence[Span] | None,
    max_length: int = 256,
    answer_prefix: str | None = None,
    overlap: int | None = None,
) -> list[Window]:
    """Encode a span example of any length as one or more :class:`Window` s.

    A text whose prompt fits ``max_length`` is ONE window, ``Window(0, len(text),
    encode_span(...))``: the very same encoding as :func:`encode_span`. A longer text is cut by
    :func:`window_ranges` and each window is encoded like :func:`encode_span` with the same
    prompt (the instruction is repeated per window). Training labels per window: the gold spans
    fully inside the window are tagged B/I as usual; the words of a gold span cut by the
    window's edge get -100 (the span is learnt in the window holding it whole, as a span cut by
    truncation is ignored), and ``enc.truncated_spans`` counts such cut spans; a window with no
    gold span inside is a negative window (all its other words O), as a Hugging Face QA window
    without the answer is labelled "no answer". See :func:`spans_outside_windows` for the gold
    spans no window holds whole.

    Args:
        tokenizer, text, instruction, spans, max_length, answer_prefix: as for
            :func:`encode_span` (``spans`` in document offsets; ``None`` at inference).
        overlap: tokens shared by consecutive windows (see :func:`window_ranges`).

    Returns:
        The windows in document order (at least one).

    Raises:
        TypeError, ValueError: as :func:`encode_span`; ValueError for a negative ``overlap``.
    """
    whole = encode_span(tokenizer, text, instruction, spans, max_length, answer_prefix)
    if whole.text_len_used == len(text):
        return [Window(0, len(text), whole)]
    build = lambda t: span_prompt(t, instruction, answer_prefix)  # noqa: E731
    out: list[Window] = []
    for ws, we in window_ranges(tokenizer, text, build, max_length, overlap):
        ranges = None if spans is None else [
            (sp.start - ws, sp.end - ws) for sp in spans if sp.start < we and sp.end > ws
        ]
        enc = _span_encoding(tokenizer, text[ws:we], instruction, ranges, max_length, answer_prefix)
        out.append(Window(ws, ws + enc.text_len_used, enc))
    return out


def encode_label_windows(
    tokenizer,
    text: str,
    instruction: str,
    label: bool | None,
    max_length: int = 256,
    overlap: int | None = None,
) -> list[Window]:
    """Encode a label example of any length as one or more :class:`Window` s.

    A text whose prompt fits is ONE window holding exactly :func:`encode_label`'s encoding.
    A longer text is cut by :func:`window_ranges` (with the label prompt's budget) and each
    window is encoded by :func:`encode_label`. Which windows are returned depends on ``label``,
    because a document's ``P(yes)`` is the MAX over its windows (:func:`window_label_score`):

    * ``None`` (inference): every window.
    * ``False``: every window, each labelled No: a "no" document has no window where the
      answer is yes, and max-aggregation needs every window to say no.
    * ``True``: the FIRST window only, labelled Yes. A label annotation does not say where the
      evidence is, and "yes when any window is" needs only one window to say yes; labelling
      every window yes would teach the model to say yes on windows without evidence, which
      max-aggregation turns into false positives on long "no" documents. The first window is
      what the proxy was trained on before windows existed (the truncated prefix), and where
      descriptions usually state what a document is.

    Raises:
        TypeError, ValueError: as :func:`encode_label`; ValueError for a negative ``overlap``.
    """
    whole = encode_label(tokenizer, text, instruction, label, max_length)
    if whole.text_len_used == len(text):
        return [Window(0, len(text), whole)]
    ranges = window_ranges(tokenizer, text, lambda t: label_prompt(t, instruction), max_length, overlap)
    if label is not None and bool(label):
        ranges = ranges[:1]
    out: list[Window] = []
    for ws, we in ranges:
        enc = encode_label(tokenizer, text[ws:we], instruction, label, max_length)
        out.append(Window(ws, ws + enc.text_len_used, enc))
    return out


def spans_outside_windows(windows: Sequence[Window], spans: Sequence[Span] | None) -> int:
    """Number of non-empty gold ``spans`` that no window holds whole (lost to the windowing).

    With the default overlap only a span longer than the overlap (dozens of tokens) can be
    lost; for a single window covering the whole text it is 0, like ``truncated_spans``.
    """
    return sum(
        1
        for sp in spans or ()
        if sp.end > sp.start and not any(w.start <= sp.start and sp.end <= w.end for w in windows)
    )


def _edge_margin(span: Span, window: Window, text_len: int) -> float:
    """Characters between ``span`` and the nearer CUT edge of ``window`` (document edges: inf)."""
    left = span.start - window.start if window.start > 0 else math.inf
    right = window.end - span.end if window.end < text_len else math.inf
    return min(left, right)


def merge_window_spans(
    text: str, windows: Sequence[Window], window_spans: Sequence[Sequence[Span]]
) -> list[Span]:
    """Merge spans decoded from overlapping windows into one list of document spans.

    Rules, in order:

    1. the same ``(start, end)`` from several windows is kept once, with the highest score;
    2. of spans that overlap without being equal (they come from the overlap region of two
       windows), the one FURTHER FROM A CUT EDGE of its window is kept (``min`` of the
       characters to the window's cut start and cut end; a document edge is not a cut); ties
       go to the higher score, then the earlier ``(start, end)``. This is the "maximum
       context" rule of Google's BERT SQuAD code (``_check_is_max_context``): a word near a cut
       saw only one side of its context, and a span touching the cut may be a truncated answer
       that the other window holds whole.

    Args:
        text: the document.
        windows: the document's windows.
        window_spans: per window, its decoded spans in DOCUMENT offsets (same length as
            ``windows``).

    Returns:
        Non-overlapping spans sorted by ``(start, end)``; ``text[s.start:s.end] == s.text``.

    Raises:
        ValueError: if the two sequences differ in length or a span is outside ``text``.
    """
    if len(windows) != len(window_spans):
        raise ValueError(f"{len(windows)} windows but {len(window_spans)} span lists")
    best: dict[tuple[int, int], tuple[float, float]] = {}  # (start, end) -> (score, margin)
    for window, spans in zip(windows, window_spans):
        for sp in spans:
            margin = _edge_margin(sp, window, len(text))
            key = (sp.start, sp.end)
            if key in best:
                score, m = best[key]
                best[key] = (max(score, sp.score), max(m, margin))
            else:
                best[key] = (sp.score, margin)
    kept: list[tuple[int, int, float]] = []
    for (start, end), (score, _m) in sorted(best.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0])):
        if all(end <= s or start >= e for s, e, _ in kept):
            kept.append((start, end, score))
    return [Span.of(text, s, e, score) for s, e, score in sorted(kept)]


def decode_window_spans(text: str, windows: Sequence[Window], probs: Sequence) -> list[Span]:
    """Decode a document's windows (:func:`encode_span_windows`) into spans of ``text``.

    Each window is decoded by :func:`decode_spans` on its own text, its spans are shifted to
    document offsets and the lists are merged by :func:`merge_window_spans`. A single window
    starting at 0 is exactly :func:`decode_spans` on ``text``.

    Args:
        text: the document.
        windows: its windows.
        probs: one ``[seq_len, 3]`` probability array per window (as for :func:`decode_spans`).

    Returns:
        Spans sorted by start, offsets into ``text``.

    Raises:
        ValueError: if ``probs`` does not have one array per window, or one has a wrong shape.
    """
    if len(probs) != len(windows):
        raise ValueError(f"{len(windows)} windows but {len(probs)} probability arrays")
    if len(windows) == 1 and windows[0].start == 0:
        return decode_spans(text, windows[0].enc, probs[0])
    per_window = []
    for w, p in zip(windows, probs):
        local = decode_spans(text[w.start : w.end], w.enc, p)
        per_window.append([Span.of(text, s.start + w.start, s.end + w.start, s.score) for s in local])
    return merge_window_spans(text, windows, per_window)


def window_label_score(windows: Sequence[Window], probs: Sequence) -> float:
    """A document's ``P(Yes)``: the MAX of :func:`label_score` over its windows.

    "Yes when any window is": the evidence for a yes may be anywhere in the document, a no must
    hold everywhere. A single window gives exactly :func:`label_score`.

    Raises:
        ValueError: no window, ``probs`` not one array per window, or a non-label encoding.
    """
    if not windows or len(probs) != len(windows):
        raise ValueError(f"{len(windows)} windows but {len(probs)} probability arrays")
    return max(label_score(w.enc, p) for w, p in zip(windows, probs))
