"""Fault injection on Falconer's files (issue 12, item 4): real processes killed with SIGKILL, real files.

* A process killed while it writes a mining partition's Parquet parts: the warehouse keeps exactly one
  copy of every partition's rows, ``mined`` and ``mining_rejects`` of a partition always come from the same
  write (their counts add up), the dead writer's temporary files are cleaned, and a re-run replaces them.
* A truncated or half-written proxy checkpoint folder: detected against its manifest, never reused or
  loaded, and a dead save's temporary folder is removed.
* A second process holding the DuckDB warehouse (``dagster dev`` and ``falconer run`` at once): a bounded
  wait, then an error that names the file and the process, never a raw traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from falconer_assets.warehouse.rows import MinedRow, RejectRow, Throughput
from falconer_assets.warehouse.store import write_mining_partition

REPO = Path(__file__).resolve().parents[1]
TASK, FILE, OTHER = "t", "c/part-1.jsonl", "c/part-2.jsonl"
LINES = 30


def _partition(version: int, n_mined: int) -> tuple[list[MinedRow], list[RejectRow]]:
    """One write of a 30-line file: ``n_mined`` docs with one row each, the other lines rejected."""
    rows = [MinedRow(doc_id=f"d{i}", field="genre", value=f"v{version}", start=0, end=2, score=0.5)
            for i in range(n_mined)]
    rejects = [RejectRow(f"d{i}", i + 1, f"bad line (v{version})") for i in range(n_mined, LINES)]
    return rows, rejects


def _write(db: Path, file: str, version: int, n_mined: int) -> None:
    rows, rejects = _partition(version, n_mined)
    with duckdb.connect(str(db)) as con:
        write_mining_partition(con, TASK, file, rows, rejects, Throughput(f"proxy ({file})", LINES, 1.0))


# A writer that is killed inside the part-writing code: it blocks (after touching a marker file) at the
# chosen step of `replace_slices` until the test kills it with SIGKILL.
KILLED_WRITER = r"""
import os, sys, time
from pathlib import Path
import duckdb
from falconer_assets.warehouse import tables
from falconer_assets.warehouse.rows import MinedRow, RejectRow, Throughput
from falconer_assets.warehouse.store import write_mining_partition

db, file, step, marker = sys.argv[1:]

def block():
    Path(marker).touch()
    time.sleep(120)

if step == "copied":  # the temporary parts are written, nothing committed: block when flushing the first one
    real_fsync = tables.fsync_path
    def fsync(path, directory=False):
        if str(path).endswith(".tmp"):
            block()
        real_fsync(path, directory)
    tables.fsync_path = fsync
else:  # "renaming": committed and journalled; block before the second part's rename (mined is renamed)
    real_replace, seen = os.replace, []
    def replace(src, dst):
        if str(dst).endswith(".parquet") and not Path(dst).name.startswith("_"):
            seen.append(dst)
            if len(seen) == 2:
                block()
        real_replace(src, dst)
    os.replace = replace

rows = [MinedRow(doc_id=f"d{i}", field="genre", value="v2", start=0, end=2, score=0.5) for i in range(20)]
rejects = [RejectRow(f"d{i}", i + 1, "bad line (v2)") for i in range(20, 30)]
with duckdb.connect(db) as con:
    write_mining_partition(con, "t", file, rows, rejects, Throughput(f"proxy ({file})", 30, 1.0))
print("the writer was not killed", flush=True)
"""


def _kill_mid_write(db: Path, step: str, tmp_path: Path) -> None:
    """Run :data:`KILLED_WRITER` (version 2: 20 mined, 10 rejected) and SIGKILL it at ``step``."""
    marker = tmp_path / f"blocked-{step}"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(db), FILE, step, str(marker)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, f"the writer exited early: {proc.communicate()}"
            assert time.monotonic() < deadline, "the writer never reached the step"
            time.sleep(0.02)
        proc.kill()  # SIGKILL, inside the part-writing code
    finally:
        proc.kill()
        proc.wait()  # reaped: its pid no longer exists
    assert proc.returncode == -9


def _state(db: Path) -> dict:
    """Per file of the task: ``(mined rows, distinct mined docs, rejects, the versions seen)``, read-only."""
    with duckdb.connect(str(db), read_only=True) as con:
        mined = con.execute("SELECT file, count(*), count(DISTINCT doc_id), list(DISTINCT value ORDER BY value) "
                            "FROM mined WHERE task = ? GROUP BY file", [TASK]).fetchall()
        rejects = dict(con.execute("SELECT file, count(*) FROM mining_rejects WHERE task = ? GROUP BY file",
                                   [TASK]).fetchall())
    return {f: (n, docs, rejects.get(f, 0), versions) for f, n, docs, versions in mined}


def _leftovers(db: Path) -> list[str]:
    parts = db.with_name(db.stem + ".parts")
    return sorted(p.name for p in parts.rglob(".*") if p.name.endswith((".tmp", ".json")))


@pytest.mark.parametrize("step", ["copied", "renaming"])
def test_writer_killed_mid_partition_leaves_one_consistent_copy_and_a_rerun_replaces_it(tmp_path, step):
    db = tmp_path / "falconer.duckdb"
    _write(db, FILE, version=1, n_mined=25)
    _write(db, OTHER, version=1, n_mined=28)
    before = _state(db)
    assert before == {FILE: (25, 25, 5, ["v1"]), OTHER: (28, 28, 2, ["v1"])}

    _kill_mid_write(db, step, tmp_path)
    assert _leftovers(db), "the killed writer left no temporary file: it was not killed mid-write"

    # the next write connection (any partition) repairs the folder: a write that died before committing is
    # dropped, one that died between its renames is finished; the dead writer's files are gone
    _write(db, OTHER, version=3, n_mined=27)
    after = _state(db)
    expected = (25, 25, 5, ["v1"]) if step == "copied" else (20, 20, 10, ["v2"])
    assert after[FILE] == expected and after[OTHER] == (27, 27, 3, ["v3"])
    for n_rows, n_docs, n_rejects, versions in after.values():
        assert n_rows == n_docs and n_docs + n_rejects == LINES and len(versions) == 1  # one copy, counts add up
    assert _leftovers(db) == []

    _write(db, FILE, version=4, n_mined=22)  # the re-run
    assert _state(db)[FILE] == (22, 22, 8, ["v4"]) and _leftovers(db) == []
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM throughput WHERE task = ?", [TASK]).fetchone() == (2,)


def test_temporary_parts_of_live_writers_are_kept(tmp_path):
    """Only a dead writer's files are removed: a concurrent writer's temporary part must survive recovery."""
    from falconer_assets.warehouse.tables import _HOST, recover_parts

    db = tmp_path / "falconer.duckdb"
    _write(db, FILE, version=1, n_mined=25)
    folder = tmp_path / "falconer.parts" / "mined"
    live = folder / f".abc.{_HOST}.{os.getppid()}.1.tmp"  # the pytest runner's parent: alive
    dead_proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = folder / f".abc.{_HOST}.{int(dead_proc.stdout)}.1.tmp"
    other_host = folder / f".abc.elsewhere.{int(dead_proc.stdout)}.1.tmp"  # another machine's: kept for a day
    for p in (live, dead, other_host):
        p.write_bytes(b"PAR1 half")
    assert recover_parts(tmp_path / "falconer.parts") == {"rolled_forward": 0, "removed": 1}
    assert live.exists() and other_host.exists() and not dead.exists()
    assert _state(db)[FILE] == (25, 25, 5, ["v1"])  # the views never read temporary files


# ---- checkpoints ----------------------------------------------------------------------------------


def _fake_model(folder: Path) -> None:
    """Stands in for ``NTEProxy.save``: a 256 kB weight file, a config and a tokenizer file."""
    (folder / "model.safetensors").write_bytes(os.urandom(256 * 1024))
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "tokenizer.json").write_text(json.dumps({"vocab": ["[PAD]", "game"]}))


def test_truncated_or_half_written_checkpoint_is_detected_and_never_loaded(tmp_path):
    from falconer_assets.assets import mined as mined_asset
    from falconer_assets.proxy import checkpoint as ck

    folder = tmp_path / "checkpoints" / "t"
    ck.write_checkpoint(folder, _fake_model, "v1", {"annotations": "a1"})
    assert ck.checkpoint_problem(folder) is None and ck.stored_version(folder) == ck.verify_checkpoint(folder) == "v1"
    assert sorted(json.loads((folder / ck.VERSION_FILE).read_text())["files"]) == [
        "config.json", "model.safetensors", "tokenizer.json"]
    (folder / "cascade_bands.json").write_text("{}")  # files written beside it later are not the checkpoint's
    assert ck.stored_version(folder) == "v1"

    # a save that fails half-way (here: an exception; a SIGKILL leaves its temporary sibling, see below) never
    # touches the complete folder
    def half(tmp: Path) -> None:
        (tmp / "model.safetensors").write_bytes(b"\0" * 1000)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        ck.write_checkpoint(folder, half, "v2", {})
    assert ck.stored_version(folder) == "v1" and [p.name for p in folder.parent.iterdir()] == ["t"]

    weights = folder / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(100_000)  # truncated: e.g. a copy or a disk that filled up
    assert ck.checkpoint_problem(folder) == "model.safetensors has 100000 bytes, the manifest says 262144"
    assert ck.stored_version(folder) is None  # proxy_checkpoint retrains instead of reusing it
    with pytest.raises(ck.CheckpointError, match="model.safetensors has 100000 bytes"):
        ck.verify_checkpoint(folder)
    # mined (and eval) refuse it before loading any weight
    with pytest.raises(Exception, match="cannot be used: model.safetensors has 100000 bytes.*Re-materialize t/proxy_"):
        mined_asset._require_complete_checkpoint(folder, "t")

    (folder / ck.VERSION_FILE).unlink()  # and without its manifest it is nothing
    assert "no manifest" in ck.checkpoint_problem(folder) and ck.stored_version(folder) is None

    ck.write_checkpoint(folder, _fake_model, "v3", {})  # retrained; then one flipped byte, same size:
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert ck.checkpoint_problem(folder) == "model.safetensors does not match its SHA-256 in the manifest"

    # a save killed mid-write leaves a temporary sibling under its (now dead) pid: the next save removes it
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = folder.with_name(f".t.{ck._HOST}.{int(dead.stdout)}.tmp")
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 10)
    ck.write_checkpoint(folder, _fake_model, "v4", {})
    assert not stale.exists() and ck.stored_version(folder) == "v4"
    assert [p.name for p in folder.parent.iterdir()] == ["t"]


# ---- a second process holding the warehouse ---------------------------------------------------------

HOLDER = r"""
import sys, duckdb
cons = [duckdb.connect(p) for p in sys.argv[1:]]  # write connections: DuckDB's file lock, held
print("holding", flush=True)
sys.stdin.readline()
for c in cons:
    c.close()
print("released", flush=True)
sys.stdin.readline()
"""


def test_a_second_process_holding_the_warehouse_gives_a_clear_error_or_is_waited_for(tmp_path, capsys):
    import dagster as dg

    from falconer_assets import cli
    from falconer_assets.llm.cache import LLMCache
    from falconer_assets.resources.warehouse import WarehouseResource
    from falconer_assets.warehouse.connect import DatabaseLockedError, connect

    db, cache = tmp_path / "falconer.duckdb", tmp_path / "llm_cache.duckdb"
    _write(db, FILE, version=1, n_mined=25)
    LLMCache(cache)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(cache)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"

        with pytest.raises(DatabaseLockedError) as err:  # the library call: bounded wait, then a clear error
            connect(db, wait_s=0.3)
        assert err.value.pid == holder.pid and err.value.path == db and err.value.waited_s >= 0.3
        message = str(err.value)
        assert str(db) in message and f"process {holder.pid}" in message
        assert "python" in message and "dagster dev" in message  # the holder's command line, and what to do

        with pytest.raises(DatabaseLockedError, match=f"llm_cache.duckdb is locked by process {holder.pid}"):
            LLMCache(cache, lock_timeout_s=0.2)

        # in an asset: a dg.Failure with the same message and the holder in its metadata
        with pytest.raises(dg.Failure) as failure:
            with WarehouseResource(database=str(db), lock_wait_s=0.2).get_connection():
                pass
        assert f"locked by process {holder.pid}" in failure.value.description
        assert failure.value.metadata["holder_pid"].value == holder.pid

        # the CLI, in its own process: a one-line error and exit code 2, no traceback
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        report = subprocess.run([sys.executable, "-m", "falconer_assets.cli", "--data-dir", str(tmp_path),
                                 "--lock-wait", "0.2", "report"], capture_output=True, text=True, env=env, timeout=120)
        assert report.returncode == 2, report
        assert report.stderr.startswith("falconer: error: the DuckDB file") and "Traceback" not in report.stderr
        assert str(db) in report.stderr and f"process {holder.pid}" in report.stderr
        # `falconer run` checks before running anything (in this process: no Dagster run is started)
        assert cli.main(["--data-dir", str(tmp_path), "--lock-wait", "0.2", "run"]) == 2
        assert f"is locked by process {holder.pid}" in capsys.readouterr().err

        # the holder lets go after 0.5 s: a connection that waits gets the file
        threading.Timer(0.5, lambda: (holder.stdin.write("\n"), holder.stdin.flush())).start()
        t0 = time.monotonic()
        with connect(db, read_only=True, wait_s=30) as con:
            assert con.execute("SELECT count(*) FROM mined").fetchone() == (25,)
        assert 0.4 < time.monotonic() - t0 < 30
    finally:
        holder.kill()
        holder.wait()
