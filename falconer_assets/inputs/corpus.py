"""Reading a JSON Lines corpus with validation: every line becomes a document or a reject.

Each line must be a JSON object with a non-empty string ``id`` (unique in the file) and a
non-empty string ``text``; other keys are kept as metadata. Nothing is silently dropped:
``read_corpus`` returns the documents and a reject per bad line, each naming the line and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

MAX_TEXT_CHARS = 20_000


@dataclass(frozen=True)
class Document:
    """One corpus record: ``id``, ``text`` and any other JSON keys in ``meta``."""

    id: str
    text: str
    meta: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Reject:
    """A corpus line that could not become a document.

    Attributes:
        source: file name.
        line_no: 1-based line number.
        record_id: the ``id`` if one could be read, else ``None``.
        reason: what is wrong, e.g. ``"invalid JSON: ..."``, ``"empty text"``, ``"duplicate id"``.
        raw: the first 500 characters of the line.
    """

    source: str
    line_no: int
    record_id: str | None
    reason: str
    raw: str


def read_corpus(path: str | Path) -> tuple[list[Document], list[Reject]]:
    """Read ``path`` (UTF-8 JSON Lines) into documents and rejects; blank lines are skipped.

    Returns:
        ``(documents, rejects)`` with ``len(documents) + len(rejects)`` equal to the number of
        non-blank lines. Texts longer than :data:`MAX_TEXT_CHARS` are rejected, not truncated.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
    """
    path = Path(path)
    docs: list[Document] = []
    rejects: list[Reject] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue

            def reject(reason: str, rid: str | None = None) -> None:
                rejects.append(Reject(path.name, line_no, rid, reason, line[:500]))

            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                reject(f"invalid JSON: {exc.msg} at column {exc.colno}")
                continue
            if not isinstance(obj, dict):
                reject(f"expected a JSON object, got {type(obj).__name__}")
                continue
            rid = obj.get("id")
            if not isinstance(rid, str) or not rid.strip():
                reject("missing or non-string 'id'")
                continue
            text = obj.get("text")
            if not isinstance(text, str):
                reject("missing or non-string 'text'", rid)
                continue
            if not text.strip():
                reject("empty text", rid)
                continue
            if len(text) > MAX_TEXT_CHARS:
                reject(f"text has {len(text)} characters, over the {MAX_TEXT_CHARS} limit", rid)
                continue
            if rid in seen:
                reject("duplicate id", rid)
                continue
            seen.add(rid)
            meta = {k: v for k, v in obj.items() if k not in ("id", "text")}
            docs.append(Document(rid, text, meta))
    return docs, rejects


def corpus_file_paths(corpora_dir: str | Path, corpus: str) -> list[Path]:
    """The files of ``corpus``: ``<corpora_dir>/<corpus>/*.jsonl``, sorted by name (``[]`` if none)."""
    folder = Path(corpora_dir) / corpus
    return sorted(p for p in folder.glob("*.jsonl") if p.is_file())


def corpus_names(corpora_dir: str | Path) -> list[str]:
    """Corpora under ``corpora_dir``: every sub-folder holding at least one ``*.jsonl`` file, sorted."""
    root = Path(corpora_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.jsonl")))


def read_corpus_files(paths: list[Path]) -> tuple[list[Document], list[Reject]]:
    """Read several corpus files as one corpus (in the given order).

    Each file is read with :func:`read_corpus`; a document whose id already came from an
    earlier file is rejected as ``"duplicate id (first in <file>)"``, so the ids of the result
    are unique and ``len(documents) + len(rejects)`` equals the non-blank lines of all files.

    Raises:
        FileNotFoundError: if a path does not exist.
    """
    docs: list[Document] = []
    rejects: list[Reject] = []
    first_file: dict[str, str] = {}
    for path in paths:
        file_docs, file_rejects = read_corpus(path)
        rejects += file_rejects
        for d in file_docs:
            if d.id in first_file:
                rejects.append(Reject(Path(path).name, 0, d.id, f"duplicate id (first in {first_file[d.id]})",
                                      d.text[:500]))
            else:
                first_file[d.id] = Path(path).name
                docs.append(d)
    return docs, rejects


@dataclass(frozen=True)
class Corpus:
    """A corpus folder read whole: its valid documents (ids unique across files) and its rejects.

    Attributes:
        name: the folder name under ``corpora/``.
        docs: documents in file order, then line order.
        rejects: bad lines of every file (see :func:`read_corpus_files`).
    """

    name: str
    docs: tuple[Document, ...]
    rejects: tuple[Reject, ...]

    @cached_property
    def by_id(self) -> dict[str, Document]:
        """``{doc_id: Document}``."""
        return {d.id: d for d in self.docs}


def read_corpus_folder(corpora_dir: str | Path, corpus: str) -> Corpus:
    """Read every file of ``<corpora_dir>/<corpus>/*.jsonl`` as one :class:`Corpus`.

    Raises:
        FileNotFoundError: the folder has no ``*.jsonl`` file (the message names the folder).
    """
    paths = corpus_file_paths(corpora_dir, corpus)
    if not paths:
        raise FileNotFoundError(f"corpus {corpus!r} has no file: expected {Path(corpora_dir) / corpus}/*.jsonl")
    docs, rejects = read_corpus_files(paths)
    return Corpus(corpus, tuple(docs), tuple(rejects))
