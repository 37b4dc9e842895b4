"""External inputs of the graph: task files, human labels and corpus files, reported by sensors (not computed).

``task_spec`` and ``task_labels`` (partitioned by task) and ``corpus_files`` (partitioned by file) are external
assets: Dagster does not materialize them, the sensors in :mod:`falconer_assets.sensors`
report a materialization whose data version is the file content hash whenever a file is new
or changed. That is what makes ``plan`` stale after an instruction edit, ``annotations`` (and only it)
stale after a labels edit, and what gives ``mined`` its per-file lineage. Dagster docs: "External assets".
"""

import dagster as dg

from falconer_assets.assets.keys import CORPUS_FILES_KEY, TASK_LABELS, TASK_SPEC
from falconer_assets.partitions import CORPUS_FILES, TASKS

task_spec = dg.AssetSpec(
    TASK_SPEC,
    partitions_def=TASKS,
    group_name="sources",
    kinds={"yaml"},
    description="A task file data/tasks/<task>.yaml (and its optional <task>.plan.py); data version = "
                "content hash, reported by the falconer_task_files sensor",
)

task_labels = dg.AssetSpec(
    TASK_LABELS,
    partitions_def=TASKS,
    group_name="sources",
    kinds={"json"},
    description="A task's human labels data/tasks/<task>.labels.jsonl (optional); data version = content hash "
                "(\"none\" without the file), reported by the falconer_task_files sensor. Upstream of annotations "
                "only: a labels edit re-runs annotations, then what its new data version makes stale",
)

corpus_files = dg.AssetSpec(
    CORPUS_FILES_KEY,
    partitions_def=CORPUS_FILES,
    group_name="sources",
    kinds={"json"},
    description="A corpus file data/corpora/<corpus>/<file>.jsonl; data version = SHA-256 of its bytes, "
                "reported by the falconer_corpus_files sensor and the re-mine schedule",
)
