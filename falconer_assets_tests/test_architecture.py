"""The layers of docs/architecture.md hold: import-linter's contracts in pyproject.toml, run as
``lint-imports`` would, on this source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package under ``root`` with ``root``'s pyproject.toml (the script installed
    beside this interpreter, so a stale PATH or shim does not matter)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    script = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(script) if script.exists() else "lint-imports", "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def test_import_contracts_are_kept():
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Contracts: 4 kept, 0 broken." in result.stdout


def test_the_contracts_catch_dagster_below_the_line_and_an_upward_import(tmp_path):
    """A copy of the package whose pure ``spans`` module imports Dagster and the asset keys breaks all
    four contracts: the check is not vacuous."""
    shutil.copytree(REPO / "falconer_assets", tmp_path / "falconer_assets", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    spans = tmp_path / "falconer_assets" / "spans.py"
    spans.write_text(spans.read_text() + "\nimport dagster  # noqa: E402\nfrom falconer_assets.assets import keys  # noqa: E402\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    for contract in ("Layers: entry points > Dagster layer > stages > runtimes > data > primitives BROKEN",
                     "No Dagster below the Dagster layer BROKEN",
                     "No import cycle between the modules or packages of any package BROKEN",
                     # the plan package imports spans: Dagster would reach the site-packages-free plan worker
                     "Plans run on the standard library only (the plan worker has no site-packages) BROKEN"):
        assert contract in result.stdout, result.stdout[-3000:]
