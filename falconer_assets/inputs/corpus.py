"""Reading a JSON Lines corpus strictly: every line becomes a document or a reject, never more or less.

Each line must be a JSON object with a non-empty string ``id`` (unique in the file) and a
non-empty string ``text``; other keys are kept as metadata. The reader is strict and bounded:

* bytes are decoded as UTF-8 line by line, without replacement (a BOM at the start of the file is
  dropped, as ``utf-8-sig`` does); a line that is not valid UTF-8 is a reject, the other lines stay;
* a line longer than ``max_line_bytes`` is rejected while it is read: at most ``max_line_bytes + 1``
  bytes of it are held, the rest is skipped in :data:`SKIP_CHUNK_BYTES` chunks up to the next newline;
* duplicate keys (at any depth), ``NaN``/``Infinity`` and unpaired UTF-16 surrogate escapes are
  rejected, and any exception the JSON parser raises on a line (``RecursionError`` on deep nesting,
  ``ValueError`` on a 5,000-digit number, ...) is a reject for that line naming the file and line.

Nothing is silently dropped: ``read_corpus`` returns the documents and a reject per bad line.
Lines are separated by ``\\n`` only (a trailing ``\\r`` is JSON whitespace).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from io import BufferedReader
from pathlib import Path
from typing import Iterator

MAX_TEXT_CHARS = 20_000
MAX_LINE_BYTES = 1 << 20
"""Default longest corpus line, in bytes without its newline (1 MiB); longer lines are rejects."""
SKIP_CHUNK_BYTES = 1 << 20
"""How much of an over-long line is read at a time while skipping to its end (bytes)."""
CORPUS_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""A corpus name (one folder under ``corpora/``), matched with ``fullmatch``; ``..`` is refused too."""
_RAW_CHARS = 500
_BUFFER_BYTES = 1 << 16
_BOM = b"\xef\xbb\xbf"


def valid_corpus_name(name: object) -> bool:
    """Whether ``name`` is a string matching :data:`CORPUS_NAME_RE` (fullmatch) without ``..``."""
    return isinstance(name, str) and CORPUS_NAME_RE.fullmatch(name) is not None and ".." not in name


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
        line_no: 1-based line number (``0`` for a cross-file duplicate, see :func:`read_corpus_files`).
        record_id: the ``id`` if one could be read, else ``None``.
        reason: what is wrong, e.g. ``"invalid JSON: ... (c.jsonl, line 3)"``, ``"empty text"``,
            ``"duplicate id"``.
        raw: the first 500 characters of the line (undecodable bytes shown as ``\\xNN``).
    """

    source: str
    line_no: int
    record_id: str | None
    reason: str
    raw: str


class _BadLine(ValueError):
    """A line-level problem found while parsing (its message is the reject reason's detail)."""


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _BadLine(f"duplicate key {_short(key)}")
            seen.add(key)
    return obj


def _no_constant(name: str) -> object:
    raise _BadLine(f"non-standard constant {name}")


def _check_surrogates(obj: object) -> None:
    """Raise :class:`_BadLine` if a string (key or value) in ``obj`` holds an unpaired surrogate."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, str):
            try:
                o.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise _BadLine(f"unpaired surrogate \\u{ord(o[exc.start]):04x} in a string") from None
        elif isinstance(o, dict):
            stack += list(o.keys()) + list(o.values())
        elif isinstance(o, list):
            stack += o


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _short(value: object, limit: int = 60) -> str:
    """A bounded ``repr`` (never raises, at most ``limit`` + 3 characters)."""
    try:
        return _clip(repr(value), limit)
    except Exception:  # noqa: BLE001 - e.g. an int over the str-conversion digit limit
        return f"<{type(value).__name__}>"


def _parse(line: bytes) -> object:
    """The JSON value of one line; raises :class:`_BadLine` or whatever the decoder raises."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _BadLine(f"not UTF-8 (byte 0x{line[exc.start]:02x} at offset {exc.start})") from None
    obj = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    if b"\\u" in line:
        _check_surrogates(obj)
    return obj


def parse_json_line(line: bytes) -> object:
    """The JSON value of one line (bytes, without its newline), parsed as strictly as a corpus line.

    Raises:
        ValueError: the line is not UTF-8, not JSON, has a duplicate key (at any depth), a ``NaN`` /
            ``Infinity`` constant or an unpaired surrogate escape, or the parser failed in any other way
            (``RecursionError`` on deep nesting, ...); the message starts with ``"invalid JSON: "`` and
            names the problem (and the column for a syntax error), not the file or line.
    """
    try:
        return _parse(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}") from None
    except _BadLine as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply (RecursionError)") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure is this line's problem
        raise ValueError(f"invalid JSON: {type(exc).__name__}: {_clip(str(exc), 200)}") from None


def _skip_line(fh: BufferedReader) -> None:
    """Move ``fh`` past the next newline (or to the end), holding at most :data:`SKIP_CHUNK_BYTES` at a time."""
    if not fh.seekable():
        while (rest := fh.readline(SKIP_CHUNK_BYTES)) and not rest.endswith(b"\n"):
            pass
        return
    while chunk := fh.read(SKIP_CHUNK_BYTES):
        end = chunk.find(b"\n")
        if end >= 0:
            fh.seek(end + 1 - len(chunk), 1)
            return


def _lines(fh: BufferedReader, max_line_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """``(line_no, line, too_long)`` for every line of ``fh`` (newline stripped); an over-long line
    comes back cut to its first ``max_line_bytes + 1`` bytes with ``too_long`` set, its rest skipped."""
    if fh.peek(len(_BOM))[:len(_BOM)] == _BOM:
        fh.read(len(_BOM))
    line_no = 0
    while True:
        line = fh.readline(max_line_bytes + 1)
        if not line:
            return
        line_no += 1
        if line.endswith(b"\n"):
            yield line_no, line[:-1], False
        elif len(line) > max_line_bytes:  # no newline within the limit: skip to the next one
            _skip_line(fh)
            yield line_no, line, True
        else:  # the last line, without a newline
            yield line_no, line, False


def read_lines(fh: BufferedReader, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes, bool]]:
    """``(line_no, line, too_long)`` for every line of a binary file opened for reading (1-based line
    numbers, newline stripped, a leading UTF-8 BOM dropped); an over-long line comes back cut to its
    first ``max_line_bytes + 1`` bytes with ``too_long`` set, its rest skipped in bounded chunks."""
    return _lines(fh, max_line_bytes)


def read_corpus(path: str | Path, *, max_line_bytes: int = MAX_LINE_BYTES) -> tuple[list[Document], list[Reject]]:
    """Read ``path`` (UTF-8 JSON Lines) into documents and rejects; blank lines are skipped.

    Args:
        path: the ``.jsonl`` file.
        max_line_bytes: the longest accepted line in bytes, without its newline (default
            :data:`MAX_LINE_BYTES`, 1 MiB); a longer line is rejected without being read whole.

    Returns:
        ``(documents, rejects)`` with ``len(documents) + len(rejects)`` equal to the number of
        non-blank lines (a blank line holds only ASCII whitespace). Texts longer than
        :data:`MAX_TEXT_CHARS` characters are rejected, not truncated. No exception raised while
        parsing a line escapes: it becomes that line's reject.

    Raises:
        FileNotFoundError: if ``path`` does not exist (other ``OSError`` exceptions while reading propagate).
        ValueError: ``max_line_bytes`` is below 1.
    """
    if max_line_bytes < 1:
        raise ValueError(f"max_line_bytes must be at least 1, got {max_line_bytes}")
    path = Path(path)
    docs: list[Document] = []
    rejects: list[Reject] = []
    seen: set[str] = set()
    with path.open("rb", buffering=_BUFFER_BYTES) as fh:
        for line_no, line, too_long in _lines(fh, max_line_bytes):
            if not too_long and not line.strip():
                continue

            def reject(reason: str, rid: str | None = None) -> None:
                raw = line[:_RAW_CHARS * 4].decode("utf-8", errors="backslashreplace")[:_RAW_CHARS]
                rejects.append(Reject(path.name, line_no, rid, reason, raw))

            where = f"({path.name}, line {line_no})"
            if too_long:
                reject(f"line longer than the {max_line_bytes}-byte limit {where}")
                continue
            try:
                obj = parse_json_line(line)
            except ValueError as exc:
                reject(f"{exc} {where}")
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
    """The files of ``corpus``: ``<corpora_dir>/<corpus>/*.jsonl`` (regular files), sorted by name (``[]`` if none).

    Raises:
        ValueError: ``corpus`` is not a valid corpus name (:func:`valid_corpus_name`), e.g. ``../x`` or ``/x``.
    """
    if not valid_corpus_name(corpus):
        raise ValueError(f"corpus name {_short(corpus)} must match {CORPUS_NAME_RE.pattern} without '..'")
    folder = Path(corpora_dir) / corpus
    return sorted(p for p in folder.glob("*.jsonl") if p.is_file())


def corpus_names(corpora_dir: str | Path) -> list[str]:
    """Corpora under ``corpora_dir``: every sub-folder with a valid corpus name (:func:`valid_corpus_name`;
    hidden folders are not) holding at least one ``*.jsonl`` file, sorted."""
    root = Path(corpora_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if valid_corpus_name(p.name) and p.is_dir() and any(p.glob("*.jsonl")))


def read_corpus_files(paths: list[Path], *,
                      max_line_bytes: int = MAX_LINE_BYTES) -> tuple[list[Document], list[Reject]]:
    """Read several corpus files as one corpus (in the given order).

    Each file is read with :func:`read_corpus` (``max_line_bytes`` as there); a document whose id
    already came from an earlier file is rejected as ``"duplicate id (first in <file>)"``, so the ids
    of the result are unique and ``len(documents) + len(rejects)`` equals the non-blank lines of all files.

    Raises:
        FileNotFoundError: if a path does not exist.
    """
    docs: list[Document] = []
    rejects: list[Reject] = []
    first_file: dict[str, str] = {}
    for path in paths:
        file_docs, file_rejects = read_corpus(path, max_line_bytes=max_line_bytes)
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


def read_corpus_folder(corpora_dir: str | Path, corpus: str, *, max_line_bytes: int = MAX_LINE_BYTES) -> Corpus:
    """Read every file of ``<corpora_dir>/<corpus>/*.jsonl`` as one :class:`Corpus` (``max_line_bytes``:
    see :func:`read_corpus`).

    Raises:
        FileNotFoundError: the folder has no ``*.jsonl`` file (the message names the folder).
        ValueError: ``corpus`` is not a valid corpus name (:func:`valid_corpus_name`).
    """
    paths = corpus_file_paths(corpora_dir, corpus)
    if not paths:
        raise FileNotFoundError(f"corpus {corpus!r} has no file: expected {Path(corpora_dir) / corpus}/*.jsonl")
    docs, rejects = read_corpus_files(paths, max_line_bytes=max_line_bytes)
    return Corpus(corpus, tuple(docs), tuple(rejects))
