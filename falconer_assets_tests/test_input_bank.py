"""The bad-input bank (issue 12, items 3 and 5): hostile corpus lines and task files, each with its exact outcome.

Every corpus case puts its bad line between two valid records (or says which records it keeps), and
asserts the documents read, the rejected lines with their exact reasons, and that the counts add up
(``documents + rejects == non-blank lines``, what the ``mined`` asset check relies on). Every task case
asserts the exact :class:`TaskError` message (or the task loaded). Each case runs under a SIGALRM limit
and the whole bank under :data:`BANK_SECONDS`, so a case that hangs fails instead of hanging the suite.
Over-long lines are cheap stand-ins for a 10 GB line: a 64 MiB line (a sparse file, or a pipe fed by a
thread) against a 4 KiB limit, with the reader's peak memory measured.

With ``INPUT_BANK_TABLE=<path>`` set, the per-case table is written there as markdown (for
``docs/security.md``), headed by the summary line.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import dagster as dg
import pytest

from falconer_assets.inputs.corpus import (
    MAX_LINE_BYTES,
    MAX_TEXT_CHARS,
    Reject,
    read_corpus,
    read_corpus_files,
    read_corpus_folder,
)
from falconer_assets.inputs.tasks import MAX_TASK_BYTES, TaskError, load_task
from falconer_assets.resources.workspace import Workspace
from falconer_assets.sync import load_valid_tasks

BANK_SECONDS = 20.0
CASE_SECONDS = 10
BIG = 64 << 20  # the stand-in for a 10 GB line: 64 MiB against a 4 KiB limit
SMALL_LIMIT = 4096
PEAK = 8 << 20  # the reader's peak traced memory on a 64 MiB line stays below this (1/8 of the line)

GOOD_A = b'{"id": "a", "text": "Frozen Bubble is a puzzle game."}'
GOOD_B = b'{"id": "b", "text": "Wesnoth is a strategy game.", "section": "games"}'


def sandwich(bad: bytes) -> bytes:
    """A valid record, ``bad`` on line 2, a valid record."""
    return GOOD_A + b"\n" + bad + b"\n" + GOOD_B + b"\n"


@dataclass
class CorpusCase:
    """A corpus file: ``data`` written as ``<name>.jsonl`` (or ``make(path)`` writes it and returns a cleanup),
    read with ``max_line_bytes``; ``docs`` the ids kept in order, ``rejects`` ``{line_no: reason}`` with
    ``{f}`` standing for the file name."""

    name: str
    what: str
    data: bytes = b""
    docs: tuple[str, ...] = ("a", "b")
    rejects: dict[int, str] = field(default_factory=dict)
    max_line_bytes: int = MAX_LINE_BYTES
    make: Callable[[Path], Callable[[], None] | None] | None = None
    peak_bytes: int | None = None  # when set: the reader's peak traced memory must stay below it


BIG_INT_ERROR = ("ValueError: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits; "
                 "use sys.set_int_max_str_digits() to increase the limit")


def _json_reason(detail: str, line: int = 2) -> str:
    return f"invalid JSON: {detail} ({{f}}, line {line})"


def _sparse_line(path: Path) -> None:
    """Line 1 valid, line 2 a 64 MiB hole of NUL bytes (no disk blocks), then a newline and line 3 valid."""
    with path.open("wb") as fh:
        fh.write(GOOD_A + b"\n")
        fh.truncate(len(GOOD_A) + 1 + BIG)
    with path.open("ab") as fh:
        fh.write(b"\n" + GOOD_B + b"\n")


def _sparse_last_line(path: Path) -> None:
    """Line 1 valid, line 2 valid, line 3 a 64 MiB hole with no newline up to the end of the file."""
    with path.open("wb") as fh:
        fh.write(GOOD_A + b"\n" + GOOD_B + b"\n")
        fh.truncate(fh.tell() + BIG)


def _pipe(path: Path) -> Callable[[], None]:
    """A FIFO fed by a thread: line 1 valid, line 2 64 MiB of ``x`` in 1 MiB writes, then line 3 valid."""
    os.mkfifo(path)

    def feed() -> None:
        with path.open("wb") as fh:
            fh.write(GOOD_A + b"\n")
            chunk = b"x" * (1 << 20)
            for _ in range(BIG // len(chunk)):
                fh.write(chunk)
            fh.write(b"\n" + GOOD_B + b"\n")

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return lambda: thread.join(timeout=5)


CORPUS_CASES = [
    CorpusCase("bom_at_start", "UTF-8 BOM before the first record: dropped (utf-8-sig), the record kept",
               b"\xef\xbb\xbf" + GOOD_A + b"\n" + GOOD_B + b"\n"),
    CorpusCase("bom_mid_file", "a BOM at the start of line 2 (a concatenated file)",
               sandwich(b'\xef\xbb\xbf{"id": "c", "text": "x"}'),
               rejects={2: _json_reason("Unexpected UTF-8 BOM (decode using utf-8-sig) at column 1")}),
    CorpusCase("invalid_utf8_byte", "a 0xff byte inside the text: a reject, never replaced by U+FFFD",
               sandwich(b'{"id": "c", "text": "caf\xff"}'),
               rejects={2: _json_reason("not UTF-8 (byte 0xff at offset 24)")}),
    CorpusCase("latin1_line", "one line written in Latin-1 ('é' as 0xe9)",
               sandwich(b'{"id": "c", "text": "Z\xfcrich caf\xe9"}'),
               rejects={2: _json_reason("not UTF-8 (byte 0xfc at offset 22)")}),
    CorpusCase("utf8_surrogate_bytes", "a UTF-16 surrogate encoded as UTF-8 bytes (CESU-8)",
               sandwich(b'{"id": "c", "text": "\xed\xa0\xbd\xed\xb8\x80"}'),
               rejects={2: _json_reason("not UTF-8 (byte 0xed at offset 21)")}),
    CorpusCase("overlong_utf8", "an overlong UTF-8 encoding of '/' (0xc0 0xaf)",
               sandwich(b'{"id": "c", "text": "..\xc0\xafetc"}'),
               rejects={2: _json_reason("not UTF-8 (byte 0xc0 at offset 23)")}),
    CorpusCase("truncated_multibyte_eof", "the file ends inside a multi-byte character, without a newline",
               GOOD_A + b"\n" + GOOD_B + b'\n{"id": "c", "text": "caf\xc3', docs=("a", "b"),
               rejects={3: _json_reason("not UTF-8 (byte 0xc3 at offset 24)", 3)}),
    CorpusCase("binary_garbage", "a line of binary bytes",
               sandwich(bytes(range(1, 10)) + b"\x80\xfe\x00\x01"),
               rejects={2: _json_reason("not UTF-8 (byte 0x80 at offset 9)")}),
    CorpusCase("deep_array", "100,000 nested '[': RecursionError in the JSON parser",
               sandwich(b"[" * 100_000 + b"]" * 100_000),
               rejects={2: _json_reason("nested too deeply (RecursionError)")}),
    CorpusCase("deep_object", "50,000 nested objects in the metadata",
               sandwich(b'{"id": "c", "text": "x", "m": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001),
               rejects={2: _json_reason("nested too deeply (RecursionError)")}),
    CorpusCase("huge_int_meta", "a 5,000-digit number in the metadata: ValueError in int()",
               sandwich(b'{"id": "c", "text": "x", "n": ' + b"9" * 5000 + b"}"),
               rejects={2: _json_reason(BIG_INT_ERROR)}),
    CorpusCase("huge_int_id", "a 5,000-digit number as the id",
               sandwich(b'{"id": ' + b"1" * 5000 + b', "text": "x"}'),
               rejects={2: _json_reason(BIG_INT_ERROR)}),
    CorpusCase("duplicate_id_key", "the key 'id' twice in one object (the second would win silently)",
               sandwich(b'{"id": "c", "text": "x", "id": "a"}'),
               rejects={2: _json_reason("duplicate key 'id'")}),
    CorpusCase("duplicate_text_key", "the key 'text' twice",
               sandwich(b'{"id": "c", "text": "harmless", "text": "other"}'),
               rejects={2: _json_reason("duplicate key 'text'")}),
    CorpusCase("duplicate_nested_key", "a duplicate key inside the metadata",
               sandwich(b'{"id": "c", "text": "x", "m": {"k": 1, "k": 2}}'),
               rejects={2: _json_reason("duplicate key 'k'")}),
    CorpusCase("nan_constant", "NaN in the metadata (not JSON)",
               sandwich(b'{"id": "c", "text": "x", "score": NaN}'),
               rejects={2: _json_reason("non-standard constant NaN")}),
    CorpusCase("infinity_constant", "-Infinity in the metadata (not JSON)",
               sandwich(b'{"id": "c", "text": "x", "score": -Infinity}'),
               rejects={2: _json_reason("non-standard constant -Infinity")}),
    CorpusCase("lone_surrogate_text", "an unpaired \\ud800 escape in the text (cannot be written as UTF-8 later)",
               sandwich(b'{"id": "c", "text": "bad \\ud800 here"}'),
               rejects={2: _json_reason("unpaired surrogate \\ud800 in a string")}),
    CorpusCase("lone_surrogate_key", "an unpaired \\udfff escape in a metadata key",
               sandwich(b'{"id": "c", "text": "x", "\\udfff": 1}'),
               rejects={2: _json_reason("unpaired surrogate \\udfff in a string")}),
    CorpusCase("paired_surrogates", "a valid escaped surrogate pair (an emoji) and a raw U+2028: kept, line not split",
               GOOD_A + b'\n{"id": "c", "text": "game \\ud83d\\ude00 \xe2\x80\xa8 end"}\n' + GOOD_B + b"\n",
               docs=("a", "c", "b")),
    CorpusCase("raw_nul_in_string", "a raw NUL byte inside the text",
               sandwich(b'{"id": "c", "text": "x\x00y"}'),
               rejects={2: _json_reason("Invalid control character at column 23")}),
    CorpusCase("unterminated", "an unterminated string",
               sandwich(b'{"id": "c", "text": "unterminated'),
               rejects={2: _json_reason("Unterminated string starting at column 21")}),
    CorpusCase("two_objects_one_line", "two objects on one line",
               sandwich(b'{"id": "c", "text": "x"}{"id": "d", "text": "y"}'),
               rejects={2: _json_reason("Extra data at column 25")}),
    CorpusCase("not_an_object", "a JSON array and a JSON string as lines",
               GOOD_A + b'\n["id", "text"]\n"just a string"\n' + GOOD_B + b"\n",
               rejects={2: "expected a JSON object, got list", 3: "expected a JSON object, got str"}),
    CorpusCase("bad_id_and_text", "a numeric id, a blank id, a missing text, a whitespace-only text",
               GOOD_A + b'\n{"id": 7, "text": "x"}\n{"id": " ", "text": "x"}\n{"id": "c"}\n'
               b'{"id": "d", "text": " \\n\\t "}\n' + GOOD_B + b"\n",
               rejects={2: "missing or non-string 'id'", 3: "missing or non-string 'id'",
                        4: "missing or non-string 'text'", 5: "empty text"}),
    CorpusCase("duplicate_id", "the id of line 1 again on line 2",
               sandwich(b'{"id": "a", "text": "impostor"}'), rejects={2: "duplicate id"}),
    CorpusCase("text_too_long", f"a text of {MAX_TEXT_CHARS + 1} characters (rejected, not truncated)",
               sandwich(b'{"id": "c", "text": "' + b"x" * (MAX_TEXT_CHARS + 1) + b'"}'),
               rejects={2: f"text has {MAX_TEXT_CHARS + 1} characters, over the {MAX_TEXT_CHARS} limit"}),
    CorpusCase("blank_and_crlf", "CRLF line ends, blank and whitespace-only lines (skipped, not counted)",
               GOOD_A + b"\r\n\r\n   \t\r\n" + GOOD_B + b"\r\n\n"),
    CorpusCase("line_at_limit", "a line of exactly max_line_bytes bytes: kept; one byte more: rejected",
               b'{"id": "a", "text": "' + b"x" * (100 - 23) + b'"}\n'
               + b'{"id": "c", "text": "' + b"x" * (101 - 23) + b'"}\n' + GOOD_B + b"\n", max_line_bytes=100,
               rejects={2: "line longer than the 100-byte limit ({f}, line 2)"}),
    CorpusCase("long_blank_line", "5,000 spaces before a record on one line, against a 4 KiB limit: rejected, not "
               "skipped as blank", sandwich(b" " * 5000 + b'{"id": "c", "text": "x"}'), max_line_bytes=SMALL_LIMIT,
               rejects={2: f"line longer than the {SMALL_LIMIT}-byte limit ({{f}}, line 2)"}),
    CorpusCase("long_line_sparse", "a 64 MiB line (sparse file) against a 4 KiB limit: skipped in bounded chunks",
               make=_sparse_line, max_line_bytes=SMALL_LIMIT, peak_bytes=PEAK,
               rejects={2: f"line longer than the {SMALL_LIMIT}-byte limit ({{f}}, line 2)"}),
    CorpusCase("long_last_line_no_newline", "a 64 MiB last line without a newline (sparse) against a 4 KiB limit",
               make=_sparse_last_line, max_line_bytes=SMALL_LIMIT, peak_bytes=PEAK,
               rejects={3: f"line longer than the {SMALL_LIMIT}-byte limit ({{f}}, line 3)"}),
    CorpusCase("long_line_pipe", "a 64 MiB line from a pipe (not seekable) against a 4 KiB limit",
               make=_pipe, max_line_bytes=SMALL_LIMIT, peak_bytes=PEAK,
               rejects={2: f"line longer than the {SMALL_LIMIT}-byte limit ({{f}}, line 2)"}),
]


@dataclass
class TaskCase:
    """A task file ``tasks/<stem>.yaml`` under a data folder holding corpus ``c`` (``data`` with ``{big}`` ...),
    loaded with ``load_task(path, data_dir)``; ``error`` the exact message (``{p}``: the path as given, ``{d}``:
    the data folder), or ``None`` when it must load. ``path``: a different path to load, relative to the data folder."""

    name: str
    what: str
    data: bytes
    error: str | None
    stem: str = "t"
    path: str | None = None
    make: Callable[[Path], None] | None = None


def task_yaml(**over: str) -> bytes:
    """A valid task file for stem ``t`` with some lines replaced (``key='raw yaml value'``; ``''`` drops the key)."""
    keys = {"name": "t", "kind": "basic", "instruction": "Extract the genre.", "corpus": "c",
            "fields": "\n  - name: genre\n    description: the genre"}
    keys.update(over)
    return "".join(f"{k}: {v}\n" for k, v in keys.items() if v != "").encode()


BILLION_LAUGHS = b"""name: t
kind: basic
corpus: c
fields: [genre]
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
instruction: *h
"""


def _sparse_task(path: Path) -> None:
    with path.open("wb") as fh:
        fh.write(task_yaml())
        fh.truncate(1 << 30)  # 1 GiB, no disk blocks: only MAX_TASK_BYTES + 1 are read


PATTERN = "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
TASK_CASES = [
    TaskCase("valid_with_bom", "a valid task behind a UTF-8 BOM, quality numbers in YAML quirks ('1e-1')",
             b"\xef\xbb\xbf" + task_yaml(quality="{target: recall, value: 0.9, delta: 1e-1}"), None),
    TaskCase("corpus_yes", "`corpus: yes` (a YAML bool, was read as 'True')", task_yaml(corpus="yes"),
             "{p}: 'corpus' must be a string, got bool True (quote it)"),
    TaskCase("corpus_traversal", "`corpus: ../../outside`", task_yaml(corpus="../../outside"),
             f"{{p}}: corpus '../../outside' must be a folder name under corpora/ matching {PATTERN} without '..'"),
    TaskCase("corpus_absolute", "`corpus: /etc`", task_yaml(corpus="/etc"),
             f"{{p}}: corpus '/etc' must be a folder name under corpora/ matching {PATTERN} without '..'"),
    TaskCase("corpus_dotdot_name", "`corpus: c..d` (a '..' inside a name)", task_yaml(corpus="c..d"),
             f"{{p}}: corpus 'c..d' must be a folder name under corpora/ matching {PATTERN} without '..'"),
    TaskCase("corpus_unknown", "a corpus with no folder (was: no documents and no error)",
             task_yaml(corpus="debian_pakages"),
             "{p}: unknown corpus 'debian_pakages': no {d}/corpora/debian_pakages/*.jsonl (known: c)"),
    TaskCase("billion_laughs", "an alias bomb (9^8 'lol's)", BILLION_LAUGHS,
             "{p}: line 5, column 4: anchors and aliases (& and *) are not allowed"),
    TaskCase("single_alias", "one anchor and alias (refused too: no aliases at all)",
             task_yaml(instruction="&i Extract the genre.", fields="[*i]"),
             "{p}: line 3, column 14: anchors and aliases (& and *) are not allowed"),
    TaskCase("duplicate_key", "`corpus` twice (the second silently won)",
             task_yaml() + b"corpus: other\n", "{p}: line 8, column 1: duplicate key 'corpus'"),
    TaskCase("duplicate_field_key", "a field mapping with `name` twice",
             task_yaml(fields="\n  - name: genre\n    name: title"), "{p}: line 7, column 5: duplicate key 'name'"),
    TaskCase("field_name_newline", 'field name "genre\\n" (passed `$`)', task_yaml(fields='["genre\\n"]'),
             "{p}: field #0 'name' 'genre\\n' must match [a-z][a-z0-9_]{0,63}"),
    TaskCase("field_name_sql", "field name 'x; DROP TABLE mined'", task_yaml(fields='["x; DROP TABLE mined"]'),
             "{p}: field #0 'name' 'x; DROP TABLE mined' must match [a-z][a-z0-9_]{0,63}"),
    TaskCase("field_name_empty", "field name ''", task_yaml(fields='[""]'), "{p}: field #0 'name' is empty"),
    TaskCase("field_description_int", "a field description that is a number", task_yaml(
        fields="\n  - name: genre\n    description: 42"), "{p}: field #0 'description' must be a string, got int 42 "
                                                           "(quote it)"),
    TaskCase("name_int", "`name: 123` with file 123.yaml", task_yaml(name="123"),
             "{p}: 'name' must be a string, got int 123 (quote it)", stem="123"),
    TaskCase("name_newline", 'name "t\\n" (a trailing newline)', task_yaml(name='"t\\n"'),
             "{p}: name 't\\n' must match [a-z][a-z0-9_]{0,62}"),
    TaskCase("kind_bool", "`kind: true`", task_yaml(kind="true"),
             "{p}: 'kind' must be a string, got bool True (quote it)"),
    TaskCase("instruction_null", "`instruction:` left empty", task_yaml(instruction=""),
             "{p}: missing or empty key 'instruction'"),
    TaskCase("instruction_date", "`instruction: 2024-13-45` (a bad YAML date)", task_yaml(instruction="2024-13-45"),
             "{p}: cannot parse task YAML: ValueError: month must be in 1..12"),
    TaskCase("unknown_key", "a misspelt `qualty:` block (was ignored: no cascade guarantee)",
             task_yaml(qualty="{target: recall, value: 0.9}"),
             "{p}: unknown key 'qualty' (known: name, kind, instruction, corpus, fields, quality)"),
    TaskCase("quality_bool", "`quality: {target: recall, value: yes}`",
             task_yaml(quality="{target: recall, value: yes}"),
             "{p}: bad 'quality' block: 'value' must be a number or a name, got bool True"),
    TaskCase("huge_int", "a 5,000-digit number", task_yaml(quality="{target: recall, value: " + "9" * 5000 + "}"),
             "{p}: cannot parse task YAML: " + BIG_INT_ERROR),
    TaskCase("deep_nesting", "5,000 nested '[' (RecursionError in the composer)",
             task_yaml(fields="[" * 5000 + "]" * 5000), "{p}: line 5, column 24: nested deeper than 16 levels"),
    TaskCase("python_tag", "a !!python/object/apply tag",
             task_yaml(instruction='!!python/object/apply:os.system ["id"]'),
             "{p}: line 3, column 14: could not determine a constructor for the tag "
             "'tag:yaml.org,2002:python/object/apply:os.system'"),
    TaskCase("unhashable_key", "a sequence as a mapping key", task_yaml() + b"? [a, b]\n: 1\n",
             "{p}: line 8, column 3: unhashable key ['a', 'b']"),
    TaskCase("nul_char", "a NUL character", task_yaml(instruction="Extract\x00 the genre."),
             "{p}: line 3: character #x0000 is not allowed in YAML"),
    TaskCase("not_utf8", "a Latin-1 byte", task_yaml(instruction="caf\xe9").replace(b"caf\xc3\xa9", b"caf\xe9"),
             "{p}: not UTF-8 (byte 0xe9 at offset 36)"),
    TaskCase("top_level_list", "a YAML list at top level", b"- name: t\n",
             "{p}: expected a mapping at top level, got list"),
    TaskCase("oversized", f"a file of {MAX_TASK_BYTES + 1} bytes", task_yaml() + b"#" * (MAX_TASK_BYTES + 1),
             f"{{p}}: task file is larger than the {MAX_TASK_BYTES}-byte limit"),
    TaskCase("sparse_1gib", "a 1 GiB (sparse) task file: refused after reading 64 KiB", b"",
             f"{{p}}: task file is larger than the {MAX_TASK_BYTES}-byte limit", make=_sparse_task),
    TaskCase("path_traversal", "the task path tasks/../../x.yaml (a file outside data/)", task_yaml(name="x"),
             "{p}: a task path must not contain '..'", stem="x", path="tasks/../../x.yaml"),
    TaskCase("path_outside_tasks", "a task file in data/ itself, not data/tasks/", task_yaml(),
             "{p}: a task file must lie in {d}/tasks", path="t.yaml"),
]


def _limit(seconds: int):
    """Raise ``TimeoutError`` in the main thread after ``seconds`` (SIGALRM), so a hanging case fails."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"case ran past {seconds} s")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    return lambda: (signal.alarm(0), signal.signal(signal.SIGALRM, previous))


def _data_dir(root: Path) -> Path:
    data = root / "data"
    (data / "tasks").mkdir(parents=True)
    (data / "corpora" / "c").mkdir(parents=True)
    (data / "corpora" / "c" / "part.jsonl").write_bytes(GOOD_A + b"\n")
    return data


def run_corpus_case(case: CorpusCase, folder: Path) -> tuple[str, list[str]]:
    """Read the case's file; returns ``(outcome for the table, failed expectations)``."""
    path = folder / f"{case.name}.jsonl"
    cleanup = None
    if case.make:
        cleanup = case.make(path)
    else:
        path.write_bytes(case.data)
    if case.peak_bytes:
        tracemalloc.start()
    try:
        docs, rejects = read_corpus(path, max_line_bytes=case.max_line_bytes)
        peak = tracemalloc.get_traced_memory()[1] if case.peak_bytes else None
    finally:
        if case.peak_bytes:
            tracemalloc.stop()
        if cleanup:
            cleanup()
    got = {r.line_no: r.reason for r in rejects}
    want = {n: reason.replace("{f}", path.name) for n, reason in case.rejects.items()}
    problems = []
    if tuple(d.id for d in docs) != case.docs:
        problems.append(f"documents {[d.id for d in docs]} != {list(case.docs)}")
    if got != want:
        problems.append(f"rejects {got} != {want}")
    if any(r.source != path.name or len(r.raw) > 500 for r in rejects):
        problems.append("a reject names the wrong file or holds more than 500 characters of its line")
    if peak is not None and peak >= case.peak_bytes:
        problems.append(f"peak memory {peak} >= {case.peak_bytes} bytes")
    kept = ", ".join(d.id for d in docs)
    outcome = f"kept {kept}; " + "; ".join(f"line {n}: {r}" for n, r in sorted(got.items())) if got else f"kept {kept}"
    if peak is not None:
        outcome += f" (peak {peak / 2**20:.1f} MiB)"
    lost = len(set(case.docs) - {d.id for d in docs})
    return outcome.replace(path.name, "<file>"), problems, {"kept": len(docs), "rejected": len(rejects), "lost": lost}


def run_task_case(case: TaskCase, root: Path) -> tuple[str, list[str]]:
    """Load the case's task file; returns ``(outcome for the table, failed expectations)``."""
    data = _data_dir(root)
    file = data / "tasks" / f"{case.stem}.yaml"
    target = data / case.path if case.path else file
    if case.path == "tasks/../../x.yaml":
        file = root / "x.yaml"  # where tasks/../../x.yaml really points
    elif case.path:
        file = target
    if case.make:
        case.make(file)
    else:
        file.write_bytes(case.data)
    try:
        task = load_task(target, data)
        got, outcome = None, f"loaded: corpus {task.corpus!r}, fields {[f.name for f in task.fields]}"
    except TaskError as exc:
        got = str(exc)
        outcome = "TaskError: " + got.replace(str(target), "<path>").replace(str(data), "<data>")
    want = case.error.replace("{p}", str(target)).replace("{d}", str(data)) if case.error is not None else None
    return outcome, [] if got == want else [f"error {got!r} != {want!r}"], {"refused": got is not None,
                                                                             "loaded": got is None}


def summary(results: list[dict]) -> str:
    """The bank's one-line summary, counted from the results (``kind``, ``problems``, ``seconds``, ``outcome``
    and the runner's counts per case)."""
    corpus = [r for r in results if r["kind"] == "corpus"]
    tasks = [r for r in results if r["kind"] == "task"]
    total = lambda rows, key: sum(r.get(key, 0) for r in rows)  # noqa: E731
    return (f"{len(results)} cases: {len(corpus)} corpus files ({total(corpus, 'kept')} valid records kept, "
            f"{total(corpus, 'rejected')} bad lines rejected with a reason), {len(tasks)} task files "
            f"({total(tasks, 'refused')} refused with a named error, {total(tasks, 'loaded')} loaded), "
            f"{sum(bool(r['problems']) for r in results)} with another outcome than expected, "
            f"{total(corpus, 'lost')} valid records lost, {sum(r['hung'] for r in results)} hung "
            f"(slowest case {max(r['seconds'] for r in results):.1f} s)")


def test_input_bank(tmp_path):
    assert len(CORPUS_CASES) + len(TASK_CASES) >= 30
    start = time.monotonic()
    results = []
    for kind, cases, runner in (("corpus", CORPUS_CASES, run_corpus_case), ("task", TASK_CASES, run_task_case)):
        for case in cases:
            folder = tmp_path / kind / case.name
            folder.mkdir(parents=True)
            t0 = time.monotonic()
            stop = _limit(CASE_SECONDS)
            counts, hung = {}, False
            try:
                outcome, problems, counts = runner(case, folder)
            except Exception as exc:  # noqa: BLE001 - an uncaught exception is a failed case, reported below
                hung = isinstance(exc, TimeoutError)
                outcome, problems = f"raised {type(exc).__name__}: {exc}"[:300], ["raised instead of its outcome"]
            finally:
                stop()
            results.append({"kind": kind, "name": case.name, "what": case.what, "problems": problems, "hung": hung,
                            "seconds": time.monotonic() - t0, "outcome": outcome, **counts})
    elapsed = time.monotonic() - start
    line = summary(results)
    print(line)
    table = [line, "", "| # | input | case | what | outcome | s |", "|---|---|---|---|---|---|"]
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731
    table += [f"| {i} | {r['kind']} | `{r['name']}` | {cell(r['what'])} | {cell(r['outcome'])} | {r['seconds']:.2f} |"
              for i, r in enumerate(results, 1)]
    if os.environ.get("INPUT_BANK_TABLE"):
        Path(os.environ["INPUT_BANK_TABLE"]).write_text("\n".join(table) + "\n", encoding="utf-8")
    failures = [f"{r['kind']} {r['name']}: {'; '.join(r['problems'])} (outcome: {r['outcome']})"
                for r in results if r["problems"]]
    assert not failures, "\n".join(failures)
    assert elapsed < BANK_SECONDS, f"the bank took {elapsed:.1f} s"


def test_every_bank_line_is_a_document_or_a_reject(tmp_path):
    """Across all the bank's corpus files read as one corpus: nothing lost, ids unique, counts add up."""
    paths = []
    for case in CORPUS_CASES:
        if case.make or case.max_line_bytes != MAX_LINE_BYTES:
            continue
        path = tmp_path / f"{case.name}.jsonl"
        path.write_bytes(case.data)
        paths.append(path)
    docs, rejects = read_corpus_files(paths)
    lines = sum(1 for p in paths for line in p.read_bytes().split(b"\n") if line.strip())
    assert len(docs) + len(rejects) == lines
    assert [d.id for d in docs] == ["a", "b", "c"]  # every later a/b is a cross-file duplicate
    assert all(isinstance(r, Reject) and r.reason for r in rejects)


def test_a_bad_task_file_never_hides_the_good_ones(tmp_path):
    """``load_valid_tasks`` (the sensors' and ``falconer run``'s reader) over the whole task bank at once."""
    data = _data_dir(tmp_path)
    (data / "tasks" / "good.yaml").write_bytes(task_yaml(name="good"))
    expected = {}
    for i, case in enumerate(c for c in TASK_CASES if c.error and not c.path and c.stem == "t"):
        stem = f"bad_{i}"
        body = case.data.replace(b"name: t\n", f"name: {stem}\n".encode(), 1)
        if case.make:
            case.make(data / "tasks" / f"{stem}.yaml")
        else:
            (data / "tasks" / f"{stem}.yaml").write_bytes(body)
        expected[str(data / "tasks" / f"{stem}.yaml")] = case.name
    folder = load_valid_tasks(data)
    assert list(folder.tasks) == ["good"] and folder.tasks["good"].corpus == "c"
    assert sorted(folder.errors) == sorted(expected)
    assert all(path in message for path, message in folder.errors.items())


def test_workspace_refuses_names_that_leave_data(tmp_path):
    data = _data_dir(tmp_path)
    (tmp_path / "x.yaml").write_bytes(task_yaml(name="x"))
    ws = Workspace(data_dir=str(data))
    with pytest.raises(dg.Failure, match=r"task '\.\./x': not a task name"):
        ws.task("../x")
    with pytest.raises(dg.Failure, match="corpus name '..' must match"):
        ws.corpus("..")
    with pytest.raises(dg.Failure, match="not a corpus name and a file name"):
        ws.corpus_file("c", "../../x.jsonl")
    assert ws.corpus("c").docs[0].id == "a"


def test_corpus_folder_skips_pipes_and_devices(tmp_path):
    """A FIFO (a read would block) and a symlink to /dev/zero (endless) named *.jsonl are not corpus files."""
    folder = tmp_path / "corpora" / "c"
    folder.mkdir(parents=True)
    (folder / "a.jsonl").write_bytes(GOOD_A + b"\n")
    os.mkfifo(folder / "b.jsonl")
    (folder / "z.jsonl").symlink_to("/dev/zero")
    stop = _limit(CASE_SECONDS)
    try:
        corpus = read_corpus_folder(tmp_path / "corpora", "c")
    finally:
        stop()
    assert [d.id for d in corpus.docs] == ["a"] and corpus.rejects == ()
    with pytest.raises(ValueError, match="corpus name '../c' must match"):
        read_corpus_folder(tmp_path / "corpora", "../c")


def test_task_field_names_and_the_plan_workers_runtime_check_agree():
    from falconer_assets.inputs.tasks import FIELD_NAME_RE
    from falconer_assets.plan.limits import FIELD_NAME_PATTERN

    assert FIELD_NAME_RE.pattern == FIELD_NAME_PATTERN
