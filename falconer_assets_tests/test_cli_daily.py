"""The daily loop's commands (issue 14, item 2): ``falconer new``, ``falconer status``, ``falconer export``.

Real files, a real Dagster instance in a temporary ``DAGSTER_HOME`` and a real DuckDB warehouse; cheap on
purpose: the LLM is scripted (conftest), no proxy is trained, and the only asset executed is ``plan`` from
a user plan file.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from pydantic import PrivateAttr
from dagster_shared.serdes import serialize_value

from falconer_assets import cli
from falconer_assets.inputs.tasks import TaskError, load_task
from falconer_assets.plan.planner import INFER_FIELDS_TEXT
from falconer_assets.plan.sandbox import validate_plan
from falconer_assets_tests.conftest import GAME_PLAN, ScriptedLLM, make_small_data_dir, register_partitions

TASK = "debian_game_genres"
FILE = "debian_packages/debian_packages.jsonl"


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    """``falconer <argv>``: (exit code, stdout, stderr)."""
    rc = cli.main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    return make_small_data_dir(tmp_path / "data")


# ---- falconer new ---------------------------------------------------------------------------------

def test_new_with_fields_writes_a_task_the_strict_loader_reads(data_dir, capsys):
    d = str(data_dir)
    path = data_dir / "tasks" / "pkg_license.yaml"
    rc, out, err = _main(capsys, "--data-dir", d, "new", "pkg_license", "--corpus", "debian_packages",
                         "Extract the license of each package.", "--field", "license: the license (e.g. GPL-2)",
                         "--field", "is_free")
    assert rc == 0, err
    task = load_task(path, data_dir)
    assert (task.name, task.kind, task.corpus) == ("pkg_license", "basic", "debian_packages")
    assert task.instruction == "Extract the license of each package."
    assert [(f.name, f.description) for f in task.fields] == [("license", "the license (e.g. GPL-2)"), ("is_free", "")]
    assert not task.plan_override_path.exists()  # fields given: no planner call, no plan file
    assert str(path) in out

    before = path.read_bytes()
    rc, _, err = _main(capsys, "--data-dir", d, "new", "pkg_license", "--corpus", "debian_packages", "Other.",
                       "--field", "x")
    assert rc == 2 and "already exists" in err and "--force" in err
    assert path.read_bytes() == before

    # YAML-looking instructions stay strings; --force replaces; --kind is kept
    rc, _, err = _main(capsys, "--data-dir", d, "new", "pkg_license", "--corpus", "debian_packages", "yes",
                       "--field", "license", "--kind", "multi-entity", "--force")
    assert rc == 0, err
    task = load_task(path, data_dir)
    assert (task.instruction, task.kind) == ("yes", "multi-entity")

    rc, _, err = _main(capsys, "--data-dir", d, "new", "other", "--corpus", "nope", "Extract x.", "--field", "x")
    assert rc == 2 and "unknown corpus 'nope'" in err and "known: debian_packages" in err
    for argv, message in ((("Bad-Name", "--corpus", "debian_packages", "x", "--field", "x"), "task name"),
                          (("other", "--corpus", "debian_packages", "x", "--field", "Bad-Field:x"), "field")):
        rc, _, err = _main(capsys, "--data-dir", d, "new", *argv)
        assert rc == 2 and message in err, err
    assert sorted(p.name for p in (data_dir / "tasks").iterdir()) == ["debian_game_genres.yaml", "pkg_license.yaml"]


class RecordingLLM(ScriptedLLM):
    """The scripted LLM, keeping every conversation it was asked; ``replies`` (if set) answer the planner
    in turn instead of :data:`GAME_PLAN`."""

    replies: list[str] = []
    _seen: list = PrivateAttr(default_factory=list)

    def _answer(self, messages):
        self._seen.append(messages)
        if self.replies:
            return self.replies[min(len(self._seen), len(self.replies)) - 1]
        return super()._answer(messages)


def test_new_without_fields_takes_them_from_the_planners_plan(data_dir):
    llm = RecordingLLM(corpus_path=str(data_dir / "corpora" / "debian_packages" / "debian_packages.jsonl"),
                       cache_path=str(data_dir / "llm_cache.duckdb"))
    out = io.StringIO()
    made = cli.new_task(data_dir, "games", "debian_packages", "Retrieve packages that are games and extract their genre.",
                        llm=llm, out=out)
    task = load_task(data_dir / "tasks" / "games.yaml", data_dir)
    assert [f.name for f in task.fields] == ["genre"]
    assert task.kind == "query-based"  # one get_label call filters, then get_span extracts
    assert made.plan_path == task.plan_override_path
    assert made.plan_path.read_text() == GAME_PLAN  # the plan the planner wrote, for review/edit
    assert validate_plan(made.plan_path.read_text()).field_names == ("genre",)
    assert "Fields named by the LLM planner" in (data_dir / "tasks" / "games.yaml").read_text()
    prompt = llm._seen[0][-1]["content"]
    assert INFER_FIELDS_TEXT in prompt and "Output fields: none" not in prompt
    assert "wrote" in out.getvalue() and 'results[i] = {"genre": spans}' in out.getvalue()

    with pytest.raises(FileExistsError):  # its plan file is protected too
        cli.new_task(data_dir, "games", "debian_packages", "Anything.", llm=llm, out=io.StringIO())


def test_new_refuses_when_the_planner_names_no_field(data_dir):
    unnamed = '```python\ndef plan(texts):\n    flags = get_label(texts, "Is this a game?")\n' \
              '    return [{} if ok else None for ok in flags]\n```'
    llm = RecordingLLM(corpus_path=str(data_dir / "corpora" / "debian_packages" / "debian_packages.jsonl"),
                       cache_path=str(data_dir / "llm_cache.duckdb"), replies=[unnamed])
    with pytest.raises(TaskError, match="--field"):
        cli.new_task(data_dir, "games", "debian_packages", "Find the games.", llm=llm, out=io.StringIO())
    assert len(llm._seen) == 3  # every attempt got the error back
    assert "names no output field" in llm._seen[1][-1]["content"]
    assert not (data_dir / "tasks" / "games.yaml").exists() and not (data_dir / "tasks" / "games.plan.py").exists()


def test_field_names_are_the_string_keys_the_plan_writes():
    plan = validate_plan('''def plan(texts):
    names = get_span(texts, "Who?")
    flags = get_label(texts, "Is it?")
    out = []
    for i, spans in enumerate(names):
        item = dict(speaker=spans)
        item["is_talk"] = flags[i]
        key = "ignored"
        out.append({"speaker": spans, "when": [], key: []})
    return out
''')
    assert plan.field_names == ("speaker", "is_talk", "when")


# ---- falconer status ------------------------------------------------------------------------------

@pytest.fixture
def instance(data_dir, tmp_path, monkeypatch):
    """The persistent instance ``falconer`` opens: ``DAGSTER_HOME`` in a temporary folder."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    inst = cli._instance(data_dir)
    yield inst
    inst.dispose()


def _defs(data_dir: Path) -> dg.Definitions:
    from falconer_assets.definitions import build_definitions

    llm = ScriptedLLM(corpus_path=str(data_dir / "corpora" / "debian_packages" / "debian_packages.jsonl"),
                      cache_path=str(data_dir / "llm_cache.duckdb"))
    return build_definitions(data_dir, llm=llm)


def _tick(defs, instance, cursor_path: Path) -> None:
    """One automation evaluation with its cursor saved, as ``falconer run`` does (nothing executed)."""
    from falconer_assets.orchestrate import load_cursor
    from falconer_assets.status import partitions_read_once

    with partitions_read_once(instance):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=load_cursor(cursor_path))
    cursor_path.write_text(serialize_value(result.cursor))


def _line(text: str, label: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(label + " "))


def test_status_shows_fresh_stale_and_missing_without_running_or_saving(data_dir, instance, capsys, tmp_path):
    from falconer_assets.assets.keys import PLAN
    from falconer_assets.orchestrate import execute
    from falconer_assets.partitions import CORPUS_FILES

    (data_dir / "tasks" / f"{TASK}.plan.py").write_text(GAME_PLAN)  # plan without an LLM
    defs = _defs(data_dir)
    register_partitions(instance, data_dir)
    cursor_path = tmp_path / "home" / "falconer_automation_cursor"
    _tick(defs, instance, cursor_path)  # falconer run's first tick records state
    assert execute(defs, instance, [PLAN], TASK, "test").success
    _tick(defs, instance, cursor_path)
    saved = cursor_path.read_bytes()
    runs = len(instance.get_runs())

    rc, out, err = _main(capsys, "--data-dir", str(data_dir), "status")
    assert rc == 0, err
    record = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=PLAN, asset_partitions=[TASK]), limit=1).records[0]
    when = datetime.fromtimestamp(record.timestamp, tz=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert _line(out, "plan").split()[1:4] == ["fresh", *when.split()]
    for stage in ("annotations", "proxy_checkpoint", "eval", "mined debian_packages.jsonl", "report"):
        assert _line(out, stage).split()[len(stage.split())] == "missing", (stage, out)
    assert _line(out, "annotations").split()[2] == "-"  # never materialized: no time

    # an instruction edit: the plan is stale (the conditions request it), nothing ran, the cursor is as it was
    spec = data_dir / "tasks" / f"{TASK}.yaml"
    spec.write_text(spec.read_text().replace("extract their genre", "extract their main genre"))
    for _ in range(2):  # twice: the change is still a change, since status saved no cursor
        report = cli.status(data_dir, out=io.StringIO())
        plan = report.state(TASK, "plan")
        assert plan.state == "stale" and plan.last_materialized is not None
        assert plan.note == "task file edited since it was planned"
        assert report.state(TASK, "annotations").state == "missing"
        assert report.state(TASK, "mined", FILE).state == "missing"
    assert cursor_path.read_bytes() == saved
    assert len(instance.get_runs()) == runs

    # a new corpus file shows as missing, and is left for `falconer run` to register (and mine)
    (data_dir / "corpora" / "debian_packages" / "more.jsonl").write_text(
        json.dumps({"id": "extra:1", "text": "A puzzle game."}) + "\n")
    report = cli.status(data_dir, out=io.StringIO())
    new = report.state(TASK, "mined", "debian_packages/more.jsonl")
    assert new.state == "missing" and "new corpus file" in new.note
    assert "debian_packages/more.jsonl" not in instance.get_dynamic_partitions(CORPUS_FILES.name)


def test_status_shows_a_failed_run(data_dir, instance, capsys):
    from falconer_assets.assets.keys import PLAN
    from falconer_assets.orchestrate import execute

    spec = (data_dir / "tasks" / f"{TASK}.yaml").read_text()
    (data_dir / "tasks" / "broken.yaml").write_text(spec.replace(f"name: {TASK}", "name: broken"))
    (data_dir / "tasks" / "broken.plan.py").write_text("def plan(texts):\n    import os\n    return []\n")
    defs = _defs(data_dir)
    register_partitions(instance, data_dir)
    assert not execute(defs, instance, [PLAN], "broken", "test").success  # the plan file does not validate

    rc, out, err = _main(capsys, "--data-dir", str(data_dir), "status")
    assert rc == 0, err
    broken = out[out.index("broken  (corpus"):out.index(f"{TASK}  (corpus")]
    assert _line(broken, "plan").split()[1] == "failed" and "falconer run --force broken" in broken
    genres = out[out.index(f"{TASK}  (corpus"):]
    assert _line(genres, "plan").split()[1] == "missing" and "`falconer run` builds it" in _line(genres, "plan")
    assert "no saved automation cursor" in out  # falconer run never ran on this instance


# ---- falconer export ------------------------------------------------------------------------------

TEXTS = {"d1": "Café Noir — a ★ puzzle game by Zoë, and a strategy one.", "d2": "über racing, für alle"}


def _warehouse_with_rows(data_dir: Path) -> list:
    """Write the corpus ``c/f.jsonl`` (non-ASCII texts) and task ``t``'s mined rows of it through the
    store's real writer; returns the rows."""
    from falconer_assets.warehouse.connect import connect
    from falconer_assets.warehouse.rows import MinedRow, Throughput
    from falconer_assets.warehouse.store import write_mining_partition

    (data_dir / "corpora" / "c").mkdir(parents=True)
    (data_dir / "corpora" / "c" / "f.jsonl").write_text(
        "".join(json.dumps({"id": k, "text": v}, ensure_ascii=False) + "\n" for k, v in TEXTS.items()), encoding="utf-8")
    for name in ("t", "idle"):
        (data_dir / "tasks" / f"{name}.yaml").write_text(
            f"name: {name}\ninstruction: Extract genres.\ncorpus: c\nfields:\n  - name: genre\n")

    def span(doc, word, score):
        start = TEXTS[doc].index(word)
        return MinedRow(doc, "genre", word, start, start + len(word), score)

    rows = [span("d1", "puzzle", 0.9), span("d1", "strategy", 0.6), MinedRow("d1", "is_game", "true", None, None, 1.0),
            span("d2", "racing", 0.8), MinedRow("gone", "genre", "arcade", 0, 6, 0.5)]
    con = connect(data_dir / "falconer.duckdb")
    try:
        write_mining_partition(con, "t", "c/f.jsonl", rows, [], Throughput("proxy (c/f.jsonl)", 3, 0.1))
    finally:
        con.close()
    return rows


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_export_round_trips_rows_and_exact_snippets(data_dir, capsys, fmt):
    rows = _warehouse_with_rows(data_dir)
    rc, out, err = _main(capsys, "--data-dir", str(data_dir), "export", "t", "--format", fmt, "--context", "6")
    assert rc == 0, err
    path = data_dir / "exports" / f"t.{fmt}"
    assert str(path) in out and "1 span row(s) have no snippet" in out
    read = {"parquet": pl.read_parquet, "csv": pl.read_csv, "jsonl": pl.read_ndjson}[fmt]
    frame = read(path)
    assert frame.columns == ["task", "file", "doc_id", "field", "value", "start", "end", "score", "executor",
                             "snippet", "context_before", "context_after"]
    assert frame.height == len(rows)
    got = {(r["doc_id"], r["field"], str(r["value"])): r for r in frame.iter_rows(named=True)}
    for row in rows:
        r = got[(row.doc_id, row.field, row.value)]
        assert (r["task"], r["file"], r["start"], r["end"], r["executor"]) == ("t", "c/f.jsonl", row.start, row.end, "proxy")
        assert r["score"] == pytest.approx(row.score)
        text = TEXTS.get(row.doc_id)
        if row.start is None or text is None:  # a boolean field, or a document no longer in its file
            assert r["snippet"] is None
            continue
        assert r["snippet"] == text[row.start:row.end] == row.value
        assert (r["context_before"] or "") == text[max(0, row.start - 6):row.start]  # CSV reads "" as null
        assert (r["context_after"] or "") == text[row.end:row.end + 6]


def test_export_errors_and_out_path(data_dir, capsys, tmp_path):
    d = str(data_dir)
    rc, _, err = _main(capsys, "--data-dir", d, "export", "t")
    assert rc == 2 and "falconer.duckdb does not exist" in err
    _warehouse_with_rows(data_dir)
    rc, _, err = _main(capsys, "--data-dir", d, "export", "nope", "--format", "csv")
    assert rc == 2 and "unknown task 'nope'" in err and "idle" in err and "t" in err
    rc, _, err = _main(capsys, "--data-dir", d, "export", "../../t")
    assert rc == 2 and "is not a task name" in err
    rc, _, err = _main(capsys, "--data-dir", d, "export", "idle")
    assert rc == 2 and "task 'idle' has nothing mined yet" in err and "tasks with mined rows: t" in err
    target = tmp_path / "elsewhere" / "rows.jsonl"
    rc, out, err = _main(capsys, "--data-dir", d, "export", "t", "--format", "jsonl", "--out", str(target))
    assert rc == 0, err
    frame = pl.read_ndjson(target)
    assert frame.height == 5 and "context_before" not in frame.columns
    assert not (data_dir / "exports").exists()


def test_plan_writes_the_planners_plan_beside_the_task_and_refuses_to_overwrite(tmp_path):
    """`falconer plan <task>` with a scripted planner: printed, written, then kept unless --force."""
    import io

    import pytest

    from falconer_assets.cli import plan_task
    from falconer_assets.inputs.tasks import TaskError
    from falconer_assets_tests.conftest import GAME_PLAN, make_small_data_dir

    data = make_small_data_dir(tmp_path)

    class Planner:
        base_url, model, calls = "scripted", "scripted", 0

        def chat(self, messages, **params):
            Planner.calls += 1
            return type("R", (), {"text": f"```python\n{GAME_PLAN}```"})()

    out = io.StringIO()
    source = plan_task(data, "debian_game_genres", llm=Planner(), out=out)
    written = data / "tasks" / "debian_game_genres.plan.py"
    assert written.read_text() == source and "get_label(texts" in source and "get_label(texts" in out.getvalue()
    with pytest.raises(FileExistsError, match="exists"):
        plan_task(data, "debian_game_genres", llm=Planner(), out=io.StringIO())
    assert Planner.calls == 1  # refused before any LLM call
    with pytest.raises(TaskError, match="no task file"):
        plan_task(data, "no_such_task", llm=Planner(), out=io.StringIO())
