"""What `falconer run` shows on the terminal: progress bars and a summary; the noise goes to the log.

A real child process (its own file descriptors, a real subprocess inheriting them) prints the kinds
of noise issue 14 found (stdout/stderr prints, a Python warning, a library logger, a child server
writing to stderr) inside :func:`falconer_assets.terminal.quiet_terminal`, and runs a progress block.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from falconer_assets.progress import progress, set_sink
from falconer_assets_tests.conftest import REPO

CHILD = r"""
import logging, subprocess, sys, warnings
from pathlib import Path
from falconer_assets.progress import progress
from falconer_assets.terminal import quiet_terminal

with quiet_terminal(Path(sys.argv[1])) as term:
    print("NOISE-stdout-print")
    print("NOISE-stderr-print", file=sys.stderr)
    warnings.warn("NOISE-python-warning")
    logging.getLogger("transformers").warning("NOISE-LOAD-REPORT")
    subprocess.run(["sh", "-c", "echo NOISE-server-log >&2"], check=True)
    with progress("train proxy demo", 40, "step") as bar:
        for i in range(40):
            bar.update(1, loss="0.123")
    print("SUMMARY-line", file=term)
print("AFTER-on-stdout")
"""

NOISE = ("NOISE-stdout-print", "NOISE-stderr-print", "NOISE-python-warning", "NOISE-LOAD-REPORT", "NOISE-server-log")


def test_noise_goes_to_the_log_and_the_terminal_shows_bars_and_the_summary(tmp_path):
    log = tmp_path / "run.log"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(log)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    terminal = proc.stderr
    assert "train proxy demo" in terminal and "40/40" in terminal and "loss=0.123" in terminal
    assert "SUMMARY-line" in terminal
    assert not [n for n in NOISE if n in terminal + proc.stdout.replace("AFTER-on-stdout", "")]
    logged = log.read_text()
    assert all(n in logged for n in NOISE), logged
    assert proc.stdout.strip() == "AFTER-on-stdout"  # the descriptors are restored after the block


def test_progress_without_a_sink_is_a_counter_and_a_sink_sees_every_update():
    with progress("nobody listens", 3) as bar:
        bar.update(2)
    assert bar.done == 2
    seen = []

    class Sink:
        def open(self, desc, total, unit):
            seen.append(("open", desc, total, unit))
            return len(seen)

        def update(self, handle, n, info):
            seen.append(("update", handle, n, info))

        def close(self, handle):
            seen.append(("close", handle))

    previous = set_sink(Sink())
    try:
        try:
            with progress("train", 5, "step") as bar:
                bar.update(1, loss="0.5")
                raise KeyError("boom")
        except KeyError:
            pass
    finally:
        set_sink(previous)
    assert seen == [("open", "train", 5, "step"), ("update", 1, 1, {"loss": "0.5"}), ("close", 1)]


def test_summary_lines_read_the_warehouse(tmp_path):
    import duckdb

    from falconer_assets.cli import summary_lines
    from falconer_assets.warehouse.rows import MetricRow, MinedRow, Throughput
    from falconer_assets.warehouse.store import write_eval, write_mining_partition
    from falconer_assets.warehouse.tables import ensure_schema

    assert summary_lines(tmp_path) == []
    with duckdb.connect(str(tmp_path / "falconer.duckdb")) as con:
        ensure_schema(con)
        write_mining_partition(con, "games", "c/f.jsonl", [MinedRow("d1", "genre", "arcade", 0, 6, 0.9),
                                                          MinedRow("d2", "genre", "puzzle", 3, 9, 0.8)], [],
                               Throughput("proxy (full corpus)", 2, 0.1))
        write_eval(con, "games", [MetricRow("label", "Is it a game?", 25, m, v) for m, v in
                                  (("label_f1", 0.8), ("label_f1_low", 0.6), ("label_f1_high", 0.95))], [])
    lines = summary_lines(tmp_path)
    row = next(line for line in lines if line.startswith("games"))
    assert row.split()[1:3] == ["2", "2"] and "label 0.80 [0.60, 0.95] n=25" in row
