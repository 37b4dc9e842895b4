"""What every offline pre-training/benchmark source shares: the record type and the split.

:class:`LabeledText` is the one record type all five sources load into (see the package
docstring for the sources). Every record carries a ``split``, ``"pretrain"`` or ``"test"``,
decided by :func:`split_of` from a SHA-1 of the record id, so it is the same on every machine and
Python run; near-duplicate texts within a source are kept on one side by :func:`grouped_splits`
(each source module says which texts count as near-duplicates, via its :func:`dup_key` key).
Test records must never be used for pre-training; the benchmark measures on them.

Also here: the committed data files under ``data/bench/`` (:data:`DEBIAN_LABELS_PATH`,
:data:`DEBIAN_SILVER_PATH`) and the JSON Lines reader the Debian sources use.

Pure Python (standard library + :mod:`falconer_assets.spans`): no Dagster, no torch.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Mapping

from falconer_assets.spans import Span

__all__ = [
    "DEBIAN_LABELS_PATH",
    "DEBIAN_SILVER_PATH",
    "DUP_KEY_CHARS",
    "LabeledText",
    "PRETRAIN",
    "REPO_ROOT",
    "SOURCES",
    "SPLITS",
    "TEST",
    "dup_key",
    "grouped_splits",
    "split_of",
]

REPO_ROOT = Path(__file__).resolve().parents[3]
DEBIAN_LABELS_PATH = REPO_ROOT / "data" / "bench" / "debian_labels.jsonl"
DEBIAN_SILVER_PATH = REPO_ROOT / "data" / "bench" / "debian_spacy_silver.jsonl"

_WS = re.compile(r"\s+")

PRETRAIN = "pretrain"
TEST = "test"
SPLITS = (PRETRAIN, TEST)
SOURCES = ("wnut16", "debian", "spam", "debian_silver", "conll2003")


# --------------------------------------------------------------------------------------------
# The record type and the split
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabeledText:
    """One labelled text from an offline source.

    Attributes:
        id: stable id, unique within its source: ``"wnut16:<index>"`` (0-based tweet index in
            the file), ``"debian:<package>"`` (``debian`` and ``debian_silver`` share the id of the
            same package on purpose, so both land in the same split), ``"spam:<class>/<file stem>"``,
            ``"conll2003:<part>/<article>/<sentence>"``.
            ``(source, id)`` is unique across sources.
        source: one of :data:`SOURCES`.
        text: the document text (Python ``str``; offsets are code points).
        split: ``"pretrain"`` or ``"test"``: :func:`split_of` of the smallest id among the
            record's near-duplicates in its source (:func:`grouped_splits`; the record's own id
            when it has none); test records must never be used for pre-training.
        spans: span sources: question key -> gold spans, a tuple of :class:`Span` sorted by
            offsets, char offsets into ``text``; every key of the source's question table is
            present (an empty tuple is an explicit "none here"). ``{}`` for label sources.
        labels: label sources: question key -> gold ``bool`` for every key of the source's
            question table. ``{}`` for span sources.

    ``spans`` and ``labels`` are stored as read-only :class:`types.MappingProxyType` views of
    private dicts (lists are turned into tuples), so a record cannot be changed after it is
    built. Records are hashable: the hash covers ``id``, ``source``, ``text`` and ``split`` only
    (the mappings are left out of the hash but not of ``==``), so equal records hash equal.

    Raises:
        ValueError: on an unknown ``source`` or ``split``, a span whose ``text`` is not
            ``text[start:end]`` or whose end is past the text, a non-``Span`` span, a
            non-``bool`` label, or a record with both spans and labels.
    """

    id: str
    source: str
    text: str
    split: str
    spans: Mapping[str, tuple[Span, ...]] = field(default_factory=dict, hash=False)
    labels: Mapping[str, bool] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"{self.id}: unknown source {self.source!r}; expected one of {SOURCES}")
        if self.split not in SPLITS:
            raise ValueError(f"{self.id}: split must be one of {SPLITS}, got {self.split!r}")
        if not isinstance(self.text, str):
            raise ValueError(f"{self.id}: text must be a str")
        if self.spans and self.labels:
            raise ValueError(f"{self.id}: a record has spans or labels, not both")
        spans: dict[str, tuple[Span, ...]] = {}
        for key, value in dict(self.spans).items():
            items = tuple(sorted(value))
            for s in items:
                if not isinstance(s, Span):
                    raise ValueError(f"{self.id}: spans[{key!r}] holds {type(s).__name__}, not Span")
                if s.end > len(self.text) or self.text[s.start : s.end] != s.text:
                    raise ValueError(
                        f"{self.id}: span [{s.start}, {s.end}) {s.text!r} does not match the text"
                    )
            spans[str(key)] = items
        labels: dict[str, bool] = {}
        for key, value in dict(self.labels).items():
            if not isinstance(value, bool):
                raise ValueError(f"{self.id}: labels[{key!r}] must be a bool, got {value!r}")
            labels[str(key)] = value
        object.__setattr__(self, "spans", MappingProxyType(spans))
        object.__setattr__(self, "labels", MappingProxyType(labels))


def split_of(id: str, test_fraction: float) -> str:
    """``"test"`` for about ``test_fraction`` of ids, ``"pretrain"`` for the rest, by id alone.

    The first 8 bytes of SHA-1(``id`` as UTF-8), read as a big-endian integer and divided by
    2**64, give a number in [0, 1); the id is ``"test"`` when that number is below
    ``test_fraction``. Deterministic across machines and runs (unlike ``hash()``), and
    monotone: an id that is ``"test"`` at a fraction stays ``"test"`` at any larger one.

    Raises:
        ValueError: if ``test_fraction`` is not in [0, 1].
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    digest = hashlib.sha1(id.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return TEST if u < test_fraction else PRETRAIN


DUP_KEY_CHARS = 200


def dup_key(text: str, chars: int | None = None) -> str:
    """Near-duplicate key of a text: lower-cased, whitespace runs collapsed to one space,
    stripped, then cut to ``chars`` characters (``None`` = whole text)."""
    key = _WS.sub(" ", text).strip().lower()
    return key if chars is None else key[:chars]


def grouped_splits(ids_and_keys: Iterable[tuple[str, str]], test_fraction: float) -> dict[str, str]:
    """The split of every id, with (near-)duplicates kept on the same side.

    Ids that share a key (e.g. a :func:`dup_key` of their text) form a group; every id of a
    group gets ``split_of(min(group ids), test_fraction)``, so an id alone in its group gets
    ``split_of(id, test_fraction)``. Deterministic: depends only on the ids, keys and fraction.
    Without this, retweets, Debian package families with one shared description (``libfoo1``
    / ``libfoo-dev``) and re-sent spam would put near-copies of test texts into pre-training.

    Returns:
        ``{id: "pretrain" | "test"}`` for every id given.

    Raises:
        ValueError: on a duplicate id or a ``test_fraction`` outside [0, 1].
    """
    rep: dict[str, str] = {}  # key -> smallest id
    key_of: dict[str, str] = {}
    for rid, key in ids_and_keys:
        if rid in key_of:
            raise ValueError(f"duplicate id {rid!r}")
        key_of[rid] = key
        if key not in rep or rid < rep[key]:
            rep[key] = rid
    return {rid: split_of(rep[key], test_fraction) for rid, key in key_of.items()}


def _with_splits(records: list[LabeledText], keys: list[str], test_fraction: float) -> list[LabeledText]:
    splits = grouped_splits(zip((r.id for r in records), keys), test_fraction)
    return [r if r.split == splits[r.id] else replace(r, split=splits[r.id]) for r in records]


def _read_jsonl(path: Path, what: str) -> Iterable[tuple[int, dict]]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: invalid JSON: {exc.msg}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object")
            yield line_no, obj
