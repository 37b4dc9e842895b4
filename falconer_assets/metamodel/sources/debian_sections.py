"""Debian package descriptions with gold labels from the archive Section and debtags.

Read from the committed ``data/bench/debian_labels.jsonl`` (built by
``scripts/build_debian_corpus.py``, disjoint from the bundled corpus; listed in the shared
MODELS.md, section "Labeled data") -> yes/no label questions (:data:`DEBIAN_QUESTIONS`), with
gold answers from :func:`debian_labels`.

Split: :func:`~falconer_assets.metamodel.sources.common.split_of` with
:data:`DEBIAN_TEST_FRACTION` (0.2); packages whose long description (the text after the first
``". "``) starts with the same 200 characters (a package family such as ``libfoo1`` /
``libfoo-dev``) share a split. The ``debian_silver`` source reuses these splits.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Mapping

from falconer_assets.metamodel.sources.common import (
    DEBIAN_LABELS_PATH,
    DUP_KEY_CHARS,
    PRETRAIN,
    LabeledText,
    _read_jsonl,
    _with_splits,
    dup_key,
)

__all__ = [
    "DEBIAN_LIBRARY_SECTIONS",
    "DEBIAN_QUESTIONS",
    "DEBIAN_TEST_FRACTION",
    "debian_labels",
    "load_debian_labels",
]

DEBIAN_TEST_FRACTION = 0.2

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
