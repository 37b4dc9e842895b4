"""Partitions: tasks and corpus files are dynamic partitions kept in sync with ``data/`` by sensors.

* ``tasks``: one key per ``data/tasks/<name>.yaml`` (the key is ``<name>``).
* ``corpus_files``: one key per ``data/corpora/<corpus>/<file>.jsonl`` (the key is
  ``<corpus>/<file>.jsonl``).
* ``mined`` is partitioned by both (:data:`TASK_FILE_PARTITIONS`), so mining is idempotent per
  (task, file) and a new file is mined on its own.

Dagster docs: "Partitioning assets" (dynamic partitions, multi-dimensional partitions).
"""

import dagster as dg

TASKS = dg.DynamicPartitionsDefinition(name="tasks")
CORPUS_FILES = dg.DynamicPartitionsDefinition(name="corpus_files")
TASK_FILE_PARTITIONS = dg.MultiPartitionsDefinition({"task": TASKS, "file": CORPUS_FILES})


def file_key(corpus: str, file_name: str) -> str:
    """The ``corpus_files`` partition key of ``data/corpora/<corpus>/<file_name>``."""
    return f"{corpus}/{file_name}"


def split_file_key(key: str) -> tuple[str, str]:
    """``"<corpus>/<file>"`` -> ``(corpus, file)``; raises ``ValueError`` for a malformed key."""
    corpus, sep, name = key.partition("/")
    if not sep or not corpus or not name or "/" in name:
        raise ValueError(f"corpus file partition key {key!r} is not '<corpus>/<file>.jsonl'")
    return corpus, name


def task_file_key(task: str, file: str) -> dg.MultiPartitionKey:
    """The ``mined`` partition key of (task, corpus file key)."""
    return dg.MultiPartitionKey({"task": task, "file": file})
