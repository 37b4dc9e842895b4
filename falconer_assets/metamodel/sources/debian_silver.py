"""spaCy silver entities over Debian package descriptions -> span questions (:data:`SILVER_QUESTIONS`).

spaCy ``en_core_web_sm`` entities (silver, not gold) over the pre-train split of the Debian
records (:mod:`falconer_assets.metamodel.sources.debian_sections`), read from the committed
``data/bench/debian_spacy_silver.jsonl`` (built by ``scripts/build_spacy_silver.py``; listed
in the shared MODELS.md, section "Labeled data"). The texts come from the Debian labels file,
joined on ``id``.

Split: no rule of its own; each silver record takes the split of the Debian record with the
same id (``debian`` and ``debian_silver`` share ids on purpose), so a test Debian record is
never pre-trained on through its silver twin. The committed file holds only pre-train ids.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from falconer_assets.metamodel.sources.common import (
    DEBIAN_LABELS_PATH,
    DEBIAN_SILVER_PATH,
    LabeledText,
    _read_jsonl,
)
from falconer_assets.metamodel.sources.debian_sections import DEBIAN_TEST_FRACTION, load_debian_labels
from falconer_assets.spans import Span

__all__ = ["SILVER_QUESTIONS", "load_debian_silver"]

#: spaCy OntoNotes entity label -> span question (numeric/temporal types are left out).
SILVER_QUESTIONS: Mapping[str, str] = MappingProxyType(
    {
        "ORG": "What are the organizations mentioned?",
        "PERSON": "What are the person names mentioned?",
        "GPE": "What are the countries, cities or states mentioned?",
        "PRODUCT": "What are the products mentioned?",
        "LANGUAGE": "What are the languages mentioned?",
        "NORP": "What are the nationalities, religious or political groups mentioned?",
        "LOC": "What are the non-political locations mentioned?",
        "WORK_OF_ART": "What are the titles of works mentioned?",
        "EVENT": "What are the events mentioned?",
        "FAC": "What are the buildings or facilities mentioned?",
    }
)


def load_debian_silver(
    path: str | Path = DEBIAN_SILVER_PATH,
    debian_path: str | Path = DEBIAN_LABELS_PATH,
    test_fraction: float = DEBIAN_TEST_FRACTION,
) -> list[LabeledText]:
    """spaCy ``en_core_web_sm`` silver entities over Debian descriptions, as span records.

    Args:
        path: JSON Lines from ``scripts/build_spacy_silver.py``, one line per record
            ``{"id": ..., "spans": [{"label", "start", "end", "text"}, ...]}`` (char offsets);
            default the committed ``data/bench/debian_spacy_silver.jsonl``, which covers only
            the pre-train split of the Debian labels file.
        debian_path: the Debian labels JSONL the texts come from (joined on ``id``).
        test_fraction: passed to :func:`load_debian_labels`; each silver record takes the split
            of the Debian record with the same id, so a test Debian record is never pre-trained
            on through its silver twin (the committed silver file holds only pre-train ids).

    Returns:
        One record per silver line, in file order: ``source`` ``"debian_silver"``, the Debian
        record's ``id`` and ``text``, ``spans`` with every :data:`SILVER_QUESTIONS` key (empty
        tuple when the text has no entity of that label), ``labels`` ``{}``.

    Raises:
        FileNotFoundError: if either file is missing.
        ValueError: on a malformed line, an id missing from the Debian file, a duplicate id,
            a label not in :data:`SILVER_QUESTIONS`, or a span that does not match the text.
    """
    path = Path(path)
    debian = {r.id: r for r in load_debian_labels(debian_path, test_fraction)}
    texts = {rid: r.text for rid, r in debian.items()}
    records: list[LabeledText] = []
    seen: set[str] = set()
    for line_no, obj in _read_jsonl(path, "Debian silver"):
        rid, raw_spans = obj.get("id"), obj.get("spans")
        if not isinstance(rid, str) or rid not in texts:
            raise ValueError(f"{path}:{line_no}: id {rid!r} is not in {debian_path}")
        if rid in seen:
            raise ValueError(f"{path}:{line_no}: duplicate id {rid!r}")
        seen.add(rid)
        if not isinstance(raw_spans, list):
            raise ValueError(f"{path}:{line_no}: 'spans' must be a list")
        text = texts[rid]
        spans: dict[str, list[Span]] = {k: [] for k in SILVER_QUESTIONS}
        for d in raw_spans:
            try:
                label, start, end, stext = d["label"], int(d["start"]), int(d["end"]), str(d["text"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{path}:{line_no}: bad span {d!r}") from None
            if label not in SILVER_QUESTIONS:
                raise ValueError(f"{path}:{line_no}: label {label!r} is not in SILVER_QUESTIONS")
            if not (0 <= start < end <= len(text)) or text[start:end] != stext:
                raise ValueError(f"{path}:{line_no}: span {d!r} does not match the text of {rid}")
            spans[label].append(Span(start, end, stext))
        records.append(
            LabeledText(
                id=rid,
                source="debian_silver",
                text=text,
                split=debian[rid].split,
                spans={k: tuple(v) for k, v in spans.items()},
            )
        )
    return records
