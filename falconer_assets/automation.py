"""Declarative automation: what makes a Falconer asset partition stale.

Dagster's ``AutomationCondition.eager()`` re-runs an asset whenever a parent is *materialized*.
Falconer's conditions react to a parent's *data version* instead (every asset reports a content
hash, see :mod:`falconer_assets.versions`), so a re-materialization that produced the same
content stops the chain: a comment-only plan edit re-runs ``plan`` and nothing else; an
instruction edit whose new plan asks the same sub-tasks re-mines but does not retrain.

Dagster docs: "Declarative Automation", "Customizing automation conditions".
"""

import dagster as dg

AC = dg.AutomationCondition


def deps_data_changed() -> dg.AutomationCondition:
    """True for a partition when a parent partition's data version changed since the last tick.

    A parent materialized in the same run as this asset does not count (like
    ``any_deps_updated``): that run already used the new data.
    """
    return AC.any_deps_match(
        (AC.data_version_changed() & ~AC.executed_with_root_target()).with_label("data_version_changed")
    ).with_label("any_deps_data_version_changed")


def _guarded(trigger: dg.AutomationCondition, label: str) -> dg.AutomationCondition:
    """``trigger`` (remembered until handled), but not while a parent is missing, in progress, or
    about to re-run (requested on this tick, or one of its own parents just changed): after an
    instruction edit ``eval`` and ``mined`` wait for the new proxy instead of running once with
    the old one and again with the new one. (``will_be_requested`` alone does not see a parent
    with another partitions definition, e.g. ``annotations`` seen from ``mined``.)"""
    return (
        trigger.since_last_handled()
        & ~AC.any_deps_missing()
        & ~AC.any_deps_in_progress()
        & ~AC.any_deps_match(AC.will_be_requested() | deps_data_changed()).with_label("any_deps_about_to_rerun")
        & ~AC.in_progress()
    ).with_label(label)


def missing_not_failed() -> dg.AutomationCondition:
    """True for a partition that was never materialized and whose last run did not fail.

    Unlike ``newly_missing`` (eager), partitions that were already missing when automation
    started are included, so a fresh ``dagster dev`` or ``falconer run`` builds everything; a
    failed run is not retried every tick (materialize it by hand after fixing the cause).
    """
    return (AC.missing() & ~AC.execution_failed()).with_label("missing_not_failed")


def on_missing() -> dg.AutomationCondition:
    """For assets with no instruction dependency (``corpus_sample``): run only when missing."""
    return _guarded(missing_not_failed(), "falconer_on_missing")


def on_change() -> dg.AutomationCondition:
    """For task-partitioned assets: run a partition when it is missing (a new task), when a parent's
    data version changes, or when this asset's ``code_version`` changes; wait while a parent is
    missing or in progress.
    """
    return _guarded(missing_not_failed() | deps_data_changed() | AC.code_version_changed(), "falconer_on_change")


def on_model_change(ignore: dg.AssetSelection) -> dg.AutomationCondition:
    """For ``mined``: re-mine a (task, file) partition when the task's plan or proxy changes.

    Parents in ``ignore`` (the ``corpus_files`` source, ``annotations``) do not trigger it, and missing
    partitions (a new file) are not requested here: the corpus sensor and the re-mine
    schedule request those, so a new file makes exactly one run request per task.
    """
    return _guarded((deps_data_changed().ignore(ignore) | AC.code_version_changed()), "falconer_on_model_change")
