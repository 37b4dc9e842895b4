"""Browser test of the web UI: materialize one task's plan from ``dagster dev`` and read it back.

``dagster dev`` runs on 127.0.0.1 over a small temporary data folder (the game-genres task with
a ``debian_game_genres.plan.py`` beside it, so no LLM is called) and a temporary DAGSTER_HOME
holding a copy of ``data/.dagster_home/dagster.yaml`` (no welcome dialog), with
``FALCONER_AUTOMATION=off`` so that only the task-file sensor runs. Debian's Chromium
(``/usr/bin/chromium``), driven by Playwright for Python, opens the asset graph, launches
``plan`` for the ``debian_game_genres`` partition from the asset's Materialize dialog, waits
for the run to succeed and checks that the plan's code is shown in the asset's metadata.

The screenshot of that page goes to the test's temporary folder; set
``FALCONER_UI_SCREENSHOT=docs/img/ui_plan_materialized.png`` to refresh the one in the docs.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``) and ``pip install playwright``
(no ``playwright install``: the system Chromium is used). Without them the test is skipped,
except under CI (``CI`` set), where it fails: ``.ci/run`` installs both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from falconer_assets_tests.conftest import CHROMIUM, CHROMIUM_ARGS, GAME_PLAN, REPO, make_small_data_dir, require_browser

pytestmark = pytest.mark.ui

TASK = "debian_game_genres"
VIEWPORT = {"width": 1400, "height": 900}
MS = 1000  # Playwright timeouts are in milliseconds; the machine is slow and shared, so they are generous

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None


@pytest.fixture(scope="module", autouse=True)
def _browser_available():
    require_browser()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_signals() -> None:
    """In the child before exec: default SIGINT/SIGTERM handling (a shell or CI runner may have left
    them ignored, and then ``dagster dev`` maps SIGTERM to an ignored SIGINT and never stops)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _session_pids(sid: int) -> list[int]:
    """Pids of the processes still in session ``sid`` (``dagster dev`` and everything it started)."""
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True, check=True).stdout
    return [int(p) for p, s in (line.split() for line in out.splitlines() if line.strip()) if int(s) == sid]


def _wait_gone(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait until no process of ``proc``'s session is left (reaping ``proc`` itself on the way)."""
    deadline = time.monotonic() + timeout
    while True:
        proc.poll()  # reap dagster dev once it exits, so that no zombie stays listed
        if not _session_pids(proc.pid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    """Stop ``dagster dev`` and everything it started, leaving no process of its session behind:
    SIGTERM to ``dagster dev`` (it shuts its webserver, daemon and code servers down), then SIGTERM
    to its whole process group, then SIGKILL to the group."""
    pgid = proc.pid  # start_new_session: pid == process group id == session id
    for send, wait_s in ((lambda: os.kill(proc.pid, signal.SIGTERM), 60),
                         (lambda: os.killpg(pgid, signal.SIGTERM), 15),
                         (lambda: os.killpg(pgid, signal.SIGKILL), 10)):
        try:
            send()
        except ProcessLookupError:
            pass
        if _wait_gone(proc, wait_s):
            break
    left = _session_pids(proc.pid)
    assert not left, f"dagster dev left processes behind: {left}"


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = json.load(resp)
    assert not body.get("errors"), body["errors"]
    return body["data"]


def _server_up(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/server_info", timeout=10) as resp:
        return resp.status == 200


def _log_tail(path: Path, n: int = 60) -> str:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.exists() else []
    return "\n".join(lines[-n:])


def _wait_for(what: str, check, timeout: float, proc: subprocess.Popen, log: Path, every: float = 1.0):
    """Poll ``check()`` until it returns something truthy; fail with the server log on timeout or exit."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"dagster dev exited ({proc.returncode}) while waiting for {what}:\n{_log_tail(log)}")
        try:
            value = check()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n{_log_tail(log)}")
        time.sleep(every)


PARTITIONS_QUERY = """
query { assetNodeOrError(assetKey: {path: ["plan"]}) { ... on AssetNode { partitionKeys } } }
"""

RUNS_QUERY = """
query Runs($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}) { ... on Runs { results { runId status } } }
}
"""


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory):
    """``dagster dev`` over a small data folder with a user plan file: ``(url, process, log path)``."""
    root = tmp_path_factory.mktemp("ui")
    data = root / "data"
    data.mkdir()
    make_small_data_dir(data)
    (data / "tasks" / f"{TASK}.plan.py").write_text(GAME_PLAN, encoding="utf-8")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "data" / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "FALCONER_DATA_DIR": str(data), "FALCONER_AUTOMATION": "off", "DAGSTER_HOME": str(home),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    log = root / "dagster_dev.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, restore_signals=True, preexec_fn=_default_signals,
        )
    try:
        _wait_for("the webserver", lambda: _server_up(url), timeout=240, proc=proc, log=log)
        # the task-file sensor (run by the daemon inside dagster dev) registers the tasks partition
        _wait_for(f"the '{TASK}' tasks partition",
                  lambda: TASK in (_graphql(url, PARTITIONS_QUERY)["assetNodeOrError"].get("partitionKeys") or []),
                  timeout=180, proc=proc, log=log, every=2)
        yield url, proc, log
    finally:
        _stop(proc)
        print(f"\ndagster dev log: {log}")


def _launch_plan_from_ui(page, url: str) -> str:
    """Open the asset graph, then the plan asset; launch its debian_game_genres partition. Returns the
    run id prefix from the "Launched run" toast."""
    page.goto(f"{url}/asset-groups", wait_until="domcontentloaded")
    expect(page.get_by_text("Global asset lineage")).to_be_visible(timeout=120 * MS)
    expect(page.get_by_text("planner", exact=True).first).to_be_visible(timeout=60 * MS)

    page.goto(f"{url}/assets/plan", wait_until="domcontentloaded")
    page.get_by_role("button", name="Materialize…").click(timeout=120 * MS)
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize plan")
    dialog.get_by_text("Select a partition or create one").click(timeout=60 * MS)
    page.get_by_role("menuitem").filter(has_text=TASK).click(timeout=60 * MS)
    dialog.get_by_text("Launch runs to materialize plan").click()  # close the partition picker
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible(timeout=30 * MS)
    dialog.get_by_role("button", name="Launch 1 run").click(timeout=30 * MS)
    toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
    expect(toast).to_be_visible(timeout=60 * MS)
    return re.search(r"Launched run ([0-9a-f]{8})", toast.inner_text()).group(1)


def test_materialize_plan_from_ui(dagster_ui, tmp_path):
    url, proc, log = dagster_ui
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(60 * MS)
            run_prefix = _launch_plan_from_ui(page, url)

            def finished():
                runs = _graphql(url, RUNS_QUERY, {"tags": [{"key": "dagster/partition", "value": TASK}]})
                return [r for r in runs["runsOrError"]["results"] if r["runId"].startswith(run_prefix)
                        and r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
            (run,) = _wait_for(f"run {run_prefix} to finish", finished, timeout=300, proc=proc, log=log, every=2)
            assert run["status"] == "SUCCESS", f"run {run['runId']} {run['status']}:\n{_log_tail(log)}"

            page.goto(f"{url}/runs/{run['runId']}", wait_until="domcontentloaded")
            expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=120 * MS)

            page.goto(f"{url}/assets/plan?partition={TASK}", wait_until="domcontentloaded")
            plan_row = page.get_by_role("row").filter(has=page.get_by_role("cell", name="plan", exact=True))
            expect(plan_row).to_contain_text("is_game = get_label(texts, \"Is this package a game?\")",
                                             timeout=120 * MS)
            expect(plan_row).to_contain_text("get_span([texts[i] for i in games]")
            origin_row = page.get_by_role("row").filter(has=page.get_by_role("cell", name="origin", exact=True))
            expect(origin_row).to_contain_text(f"user file {TASK}.plan.py")

            shot = tmp_path / "ui_plan_materialized.png"
            page.screenshot(path=str(shot))
            if os.environ.get("FALCONER_UI_SCREENSHOT"):
                target = Path(os.environ["FALCONER_UI_SCREENSHOT"])
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, target)
            print(f"\nscreenshot: {shot}", file=sys.stderr)
        finally:
            browser.close()
