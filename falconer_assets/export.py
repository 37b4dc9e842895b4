"""A task's mined rows as a file to take away (``falconer export``): Parquet, CSV or JSON Lines.

Each row of the warehouse table ``mined`` (task, file, doc_id, field, value, start, end, score, executor;
``start``/``end`` are character offsets into the document text) gets the exact ``snippet``
``text[start:end]`` from its corpus file as it is now, and, on request, ``context_before`` /
``context_after``: up to N characters either side. The rows are read by
:func:`~falconer_assets.warehouse.store.read_mined_frame` (the SQL stays in ``warehouse/``); the file is
written by polars to a temporary file beside the target and renamed into place. No Dagster here.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from falconer_assets.inputs.corpus import corpus_file_paths, read_corpus, valid_corpus_name
from falconer_assets.inputs.tasks import TASK_NAME_RE
from falconer_assets.warehouse.store import mined_tasks, read_mined_frame

EXPORT_FORMATS: dict[str, str] = {"parquet": "parquet", "csv": "csv", "jsonl": "jsonl"}
"""``{format: file extension}`` of the formats :func:`export_mined` writes."""


class ExportError(ValueError):
    """Nothing to export: an unknown task, or a task with no mined row (the message says which and what to do)."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_mined` wrote.

    Attributes:
        path: the file written.
        rows: rows in it (one per mined row).
        docs: distinct (file, document) pairs among them.
        missing_text: rows whose document is no longer in its corpus file (``snippet`` null).
        changed_text: span rows whose ``snippet`` differs from the mined ``value`` (the corpus file was edited
            since it was mined: re-mine it, ``falconer run``).
    """

    path: Path
    rows: int
    docs: int
    missing_text: int
    changed_text: int


def _check_name(task: str) -> None:
    if not isinstance(task, str) or not TASK_NAME_RE.fullmatch(task):
        raise ExportError(f"{task!r} is not a task name (it must match {TASK_NAME_RE.pattern})")


def default_export_path(data_dir: str | Path, task: str, fmt: str) -> Path:
    """``<data_dir>/exports/<task>.<ext>`` for format ``fmt`` (a key of :data:`EXPORT_FORMATS`).

    Raises:
        ExportError: ``task`` is not a task name (so the path stays in ``exports/``).
        KeyError: an unknown ``fmt``.
    """
    _check_name(task)
    return Path(data_dir) / "exports" / f"{task}.{EXPORT_FORMATS[fmt]}"


def _file_texts(corpora_dir: Path, file: str | None) -> dict[str, str] | None:
    """``{doc_id: text}`` of the corpus file of a ``mined`` row's ``file`` key (``<corpus>/<name>.jsonl``),
    or ``None`` when the key is malformed or names no file that is there now."""
    corpus, _, name = (file or "").partition("/")
    if not valid_corpus_name(corpus) or not name:
        return None
    paths = [p for p in corpus_file_paths(corpora_dir, corpus) if p.name == name]
    if not paths:
        return None
    docs, _ = read_corpus(paths[0])
    return {d.id: d.text for d in docs}


def with_snippets(rows: pl.DataFrame, corpora_dir: str | Path, context_chars: int = 0) -> pl.DataFrame:
    """``rows`` (:func:`~falconer_assets.warehouse.store.read_mined_frame`'s columns) plus ``snippet`` =
    ``text[start:end]`` of each row's document (null for boolean fields or a document that is gone) and, when
    ``context_chars`` > 0, ``context_before`` = ``text[max(0, start - context_chars):start]`` and
    ``context_after`` = ``text[end:end + context_chars]`` (offsets in characters, Python string indexing).

    Raises:
        ValueError: ``context_chars`` < 0.
    """
    if context_chars < 0:
        raise ValueError(f"context_chars must be >= 0, got {context_chars}")
    texts: dict[str | None, dict[str, str] | None] = {}
    snippet, before, after = [], [], []
    for file, doc_id, start, end in zip(rows["file"], rows["doc_id"], rows["start"], rows["end"]):
        if file not in texts:
            texts[file] = _file_texts(Path(corpora_dir), file)
        text = (texts[file] or {}).get(doc_id)
        if text is None or start is None or end is None:
            snippet.append(None)
            before.append(None)
            after.append(None)
            continue
        snippet.append(text[start:end])
        before.append(text[max(0, start - context_chars):start])
        after.append(text[end:end + context_chars])
    out = rows.with_columns(pl.Series("snippet", snippet, dtype=pl.Utf8))
    if context_chars > 0:
        out = out.with_columns(pl.Series("context_before", before, dtype=pl.Utf8),
                               pl.Series("context_after", after, dtype=pl.Utf8))
    return out


def _write(frame: pl.DataFrame, fmt: str, path: Path) -> None:
    """Write ``frame`` as ``fmt`` to ``path`` via a temporary file in the same folder, renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if fmt == "parquet":
            frame.write_parquet(tmp)
        elif fmt == "csv":
            frame.write_csv(tmp)
        else:
            frame.write_ndjson(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_mined(conn: duckdb.DuckDBPyConnection, corpora_dir: str | Path, task: str, fmt: str, path: str | Path,
                 *, known_tasks: list[str] | None = None, context_chars: int = 0) -> ExportResult:
    """Write ``task``'s mined rows with their snippets (:func:`with_snippets`) to ``path`` as ``fmt``.

    Args:
        conn: a warehouse connection (read-only is enough).
        corpora_dir: ``<data_dir>/corpora``, where the documents' text is read.
        task: the task name.
        fmt: ``"parquet"``, ``"csv"`` or ``"jsonl"`` (:data:`EXPORT_FORMATS`).
        path: the file to write (its folder is created; an existing file is replaced).
        known_tasks: the task names with a task file, for the error messages (``None``: not checked).
        context_chars: characters of context either side of each span (0: no context columns).

    Returns:
        An :class:`ExportResult`. Columns: task, file, doc_id, field, value, start, end, score, executor, snippet
        (and context_before, context_after). Rows are ordered by file, document, offset, field.

    Raises:
        ValueError: an unknown ``fmt`` or a negative ``context_chars``.
        ExportError: ``task`` is not a task name, the task has no task file and no mined row (the message lists
            the tasks), or nothing is mined for it.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(EXPORT_FORMATS)}")
    _check_name(task)
    rows = read_mined_frame(conn, task)
    if rows.is_empty():
        with_rows = mined_tasks(conn)
        if known_tasks is not None and task not in known_tasks and task not in with_rows:
            raise ExportError(f"unknown task {task!r} (tasks: {', '.join(sorted(set(known_tasks) | set(with_rows))) or 'none'})")
        raise ExportError(f"task {task!r} has nothing mined yet: run `falconer run` first "
                          f"(tasks with mined rows: {', '.join(with_rows) or 'none'})")
    frame = with_snippets(rows, corpora_dir, context_chars)
    _write(frame, fmt, Path(path))
    spans = frame.filter(pl.col("start").is_not_null())
    return ExportResult(
        path=Path(path), rows=frame.height, docs=frame.select("file", "doc_id").unique().height,
        missing_text=spans.filter(pl.col("snippet").is_null()).height,
        changed_text=spans.filter(pl.col("snippet").is_not_null() & (pl.col("snippet") != pl.col("value"))).height)
