"""A `falconer run` killed mid-run (kill -9): its Dagster run must not block its partitions for ever.

A real child process runs an asset through :func:`falconer_assets.orchestrate.execute` on a real
Dagster instance and is killed with SIGKILL inside the asset; the next `falconer run`
(:func:`~falconer_assets.orchestrate.fail_dead_runs`, called first by ``bring_up_to_date``) marks
the run failed, so the automation can request its partitions again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import dagster as dg

from falconer_assets.orchestrate import RUN_PROCESS_TAG, fail_dead_runs, process_tag
from falconer_assets_tests.conftest import REPO

CHILD = """
import sys, time
from pathlib import Path
import dagster as dg
from falconer_assets.orchestrate import execute

@dg.asset
def slow_partition():
    Path(sys.argv[1]).write_text("started")
    time.sleep(300)

defs = dg.Definitions(assets=[slow_partition])
execute(defs, dg.DagsterInstance.get(), [slow_partition.key], None, "test")
"""


def test_run_of_a_killed_process_is_marked_failed_and_a_live_one_is_left_alone(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    started = tmp_path / "started"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(started)], cwd=REPO,
                             env={**os.environ, "DAGSTER_HOME": str(home)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert child.poll() is None and time.monotonic() < deadline, "the child never reached its asset"
            time.sleep(0.2)
        instance = dg.DagsterInstance.from_config(str(home))
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED
        assert run.tags[RUN_PROCESS_TAG] == process_tag(child.pid)
        assert fail_dead_runs(instance, log=lambda m: None) == []  # alive: left alone
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        said = []
        assert fail_dead_runs(instance, log=said.append) == [run.run_id]
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert said and "process that is gone" in said[0]
        assert fail_dead_runs(instance, log=lambda m: None) == []  # once
    finally:
        if child.poll() is None:
            child.kill()
