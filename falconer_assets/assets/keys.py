"""The asset keys of the graph, as constants (imported by the assets, sensors, sync and orchestration)."""

import dagster as dg

TASK_SPEC = dg.AssetKey("task_spec")
TASK_LABELS = dg.AssetKey("task_labels")
CORPUS_FILES_KEY = dg.AssetKey("corpus_files")
PLAN = dg.AssetKey("plan")
ANNOTATIONS = dg.AssetKey("annotations")
PROXY_CHECKPOINT = dg.AssetKey("proxy_checkpoint")
MINED = dg.AssetKey("mined")
EVAL = dg.AssetKey("eval")
REPORT = dg.AssetKey("report")

TASK_CHAIN = (PLAN, ANNOTATIONS, PROXY_CHECKPOINT, EVAL)
"""The task-partitioned assets, in lineage order."""


def corpus_sample_key(corpus: str) -> dg.AssetKey:
    """``<corpus>/corpus_sample``: the sample of one corpus folder."""
    return dg.AssetKey([corpus, "corpus_sample"])
