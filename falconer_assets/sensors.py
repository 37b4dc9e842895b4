"""Sensors and the schedule that keep the graph in step with ``data/`` (all on by default).

* ``falconer_task_files`` (every 15 s): adds/deletes ``tasks`` partitions for task files and
  reports a ``task_spec`` materialization when a task file is new or edited (a ``task_labels`` one
  when its ``<task>.labels.jsonl`` is); the automation conditions then re-run that task's stale chain only.
* ``falconer_corpus_files`` (every 30 s): registers new corpus files as ``corpus_files``
  partitions and requests mining of only those files (one run per task over that corpus that
  has a proxy).
* ``falconer_remine_changed_files`` (hourly): re-mines files that changed in place since they
  were mined (SHA-256 of the bytes vs the hash recorded on the ``mined`` partition).
* ``falconer_automation``: Dagster's automation-condition sensor over every asset.

``FALCONER_AUTOMATION=off`` in the environment of the code location starts everything but the
task-file sensor stopped (runs then happen only when launched by hand, e.g. in the UI); they can
still be turned on in the UI.

Dagster docs: "Sensors" (dynamic partitions requests, asset events), "Schedules",
"Declarative Automation".
"""

import os
from pathlib import Path

import dagster as dg

from falconer_assets import sync

MINE_JOB = "falconer_mine_files"


def build_sensors(data_dir: Path, mine_job) -> tuple[list[dg.SensorDefinition], list[dg.ScheduleDefinition]]:
    """The sensors and schedule for the data folder ``data_dir``; ``mine_job`` targets ``mined``."""
    data_dir = Path(data_dir)
    on = os.environ.get("FALCONER_AUTOMATION", "on").strip().lower() != "off"
    sensor_status = dg.DefaultSensorStatus.RUNNING if on else dg.DefaultSensorStatus.STOPPED

    @dg.sensor(name="falconer_task_files", minimum_interval_seconds=15,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="data/tasks/*.yaml -> tasks partitions, task_spec and task_labels versions")
    def task_files_sensor(context: dg.SensorEvaluationContext):
        changes = sync.sync_tasks(data_dir, context.instance)
        for path, error in changes.errors.items():
            context.log.error(f"task file {path} left out: {error}")
        return dg.SensorResult(dynamic_partitions_requests=changes.partition_requests(), asset_events=changes.events,
                               skip_reason=None if changes.events or changes.partition_requests()
                               else dg.SkipReason(changes.summary()))

    @dg.sensor(name="falconer_corpus_files", minimum_interval_seconds=30, job=mine_job,
               default_status=sensor_status,
               description="new data/corpora/<corpus>/*.jsonl -> corpus_files partitions; mine only the new files")
    def corpus_files_sensor(context: dg.SensorEvaluationContext):
        changes = sync.new_file_changes(data_dir, context.instance)
        if changes.run_requests:
            context.log.info(f"new corpus files: {changes.summary()}")
        return dg.SensorResult(run_requests=changes.run_requests, dynamic_partitions_requests=changes.partition_requests(),
                               asset_events=changes.events,
                               skip_reason=None if changes.events or changes.partition_requests()
                               else dg.SkipReason(changes.summary()))

    @dg.schedule(name="falconer_remine_changed_files", cron_schedule="0 * * * *", job=mine_job,
                 default_status=dg.DefaultScheduleStatus.RUNNING if on else dg.DefaultScheduleStatus.STOPPED,
                 description="hourly: re-mine corpus files whose content hash changed since they were mined")
    def remine_schedule(context: dg.ScheduleEvaluationContext):
        changes = sync.changed_file_changes(data_dir, context.instance)
        for event in changes.events:  # the new content hashes, for lineage
            context.instance.report_runless_asset_event(event)
        return changes.run_requests or dg.SkipReason("no corpus file changed since it was mined")

    automation = dg.AutomationConditionSensorDefinition(
        "falconer_automation", target=dg.AssetSelection.all(), default_status=sensor_status,
        minimum_interval_seconds=15,
        description="re-materializes stale partitions (see falconer_assets.automation)")
    return [task_files_sensor, corpus_files_sensor, automation], [remine_schedule]
