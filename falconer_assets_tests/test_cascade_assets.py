"""The cascade in the asset graph: a task with a ``quality:`` block, on a real Dagster instance and DuckDB file.

The LLM is scripted (conftest's gold answers), the proxy is the real MiniLM fine-tuned for real.
With the small corpus the held-out split is 10 documents, too few to certify a recall of 0.9, so
the calibrated band must send every document the proxy does not confidently call a game to the
LLM: the rows of those documents carry ``executor = 'llm'``.
"""

from __future__ import annotations

import dagster as dg
import duckdb

from falconer_assets.inputs.tasks import load_task
from falconer_assets_tests.conftest import make_small_data_dir
from falconer_assets_tests.test_assets import FILE, MINED_PARTITION, TASK, _defs, _up_to_date, latest_metadata

QUALITY = "quality:\n  target: recall\n  value: 0.9\n  delta: 0.1\n  llm_budget: 0.3\n"


def test_task_with_quality_block_mines_through_the_cascade(tmp_path_factory):
    data_dir = make_small_data_dir(tmp_path_factory.mktemp("cascade"))
    spec = data_dir / "tasks" / f"{TASK}.yaml"
    spec.write_text(spec.read_text() + QUALITY)
    assert load_task(spec).quality.value == 0.9
    defs = _defs(data_dir)
    with dg.instance_for_test() as inst:
        _up_to_date(defs, inst, data_dir, tmp_path_factory.mktemp("cursor"))
        meta = latest_metadata(inst, "mined", MINED_PARTITION)
        routed_docs = meta["cascade_docs_to_llm"].value
        assert routed_docs > 0 and 0 < meta["cascade_llm_share"].value <= 1
        evals = latest_metadata(inst, "eval", TASK)
        assert "cascade" in evals
    con = duckdb.connect(str(data_dir / "falconer.duckdb"), read_only=True)
    rows = con.execute("SELECT doc_id, field, executor FROM mined WHERE task = ? AND file = ?", [TASK, FILE]).fetchall()
    metrics = dict(((k, m), v) for k, m, v in con.execute(
        "SELECT kind, metric, value FROM eval_metrics WHERE task = ? AND metric LIKE 'cascade_%'", [TASK]).fetchall())
    con.close()
    assert {e for _, _, e in rows} <= {"proxy", "llm"} and any(e == "llm" for _, _, e in rows)
    assert metrics[("label", "cascade_target")] == 0.9
    assert 0.0 <= metrics[("label", "cascade_achieved")] <= 1.0 and 0 < metrics[("label", "cascade_llm_share")] <= 1
    # documents with rows marked llm are among the documents the cascade reports it routed
    assert len({d for d, _, e in rows if e == "llm"}) <= routed_docs
    # a checkpoint folder holds the cached bands the mining used
    assert list((data_dir / "checkpoints" / TASK).glob("cascade-*.json"))
