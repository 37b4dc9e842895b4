"""A task's cascade bands: calibrated on its held-out annotations, cached beside its proxy checkpoint.

``mined`` (every file partition) and ``eval`` need the same bands for a task. Calibrating them is
cheap (the proxy scores the held-out documents once per sub-task) and deterministic, and the
result is cached in ``<checkpoint>/cascade-<key>.json``, where the key covers the checkpoint
version, the quality target and the held-out annotations: a retrained proxy, an edited target or
new annotations give a new file. No Dagster.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from falconer_assets.cascade.calibrate import Band, as_target, calibrate, cross_fitted
from falconer_assets.cascade.confidence import span_confidence
from falconer_assets.versions import digest
from falconer_assets.warehouse.rows import AnnotationRow

SubTask = tuple[str, str]


def scores_and_oracle(proxy, sub_task: SubTask, texts: Sequence[str], answers: Sequence) -> tuple[list[float], list[bool]]:
    """The proxy's scores on ``texts`` and the oracle booleans calibration needs, for one sub-task.

    ``answers`` are the annotator's (or LLM's) answers per text: a bool for a label sub-task, a
    span list for a span sub-task. Labels: ``P(yes)`` and the answer. Spans: the document confidence
    (:func:`span_confidence`) and whether the proxy's spans equal the answer's (offsets).
    """
    kind, q = sub_task
    if not texts:
        return [], []
    if kind == "label":
        return proxy.get_label_scores(list(texts), q), [bool(a) for a in answers]
    spans, conf = span_confidence(proxy, list(texts), q)
    agree = [{(s.start, s.end) for s in p} == {(s.start, s.end) for s in a} for p, a in zip(spans, answers)]
    return conf, agree


def heldout_scores(proxy, rows: Sequence[AnnotationRow], docs: Mapping, sub_task: SubTask) -> tuple[list[float], list[bool]]:
    """:func:`scores_and_oracle` on one sub-task's random held-out annotations. Rows of other sub-tasks,
    the train split, unusable replies, documents missing from ``docs`` and the extra held-out docs of the
    high-score stratum (origin ``heldout_stratum``: not a uniform draw, so an unweighted calibration on
    them would overstate the proxy) are skipped."""
    items = [r for r in rows if r.split == "heldout" and (r.kind, r.instruction) == sub_task and r.usable
             and r.doc_id in docs and r.origin != "heldout_stratum"]
    return scores_and_oracle(proxy, sub_task, [docs[r.doc_id].text for r in items],
                             [bool(r.label) if sub_task[0] == "label" else r.spans for r in items])


def task_bands(proxy, rows: Sequence[AnnotationRow], docs: Mapping, sub_tasks: Sequence[SubTask], target,
               cache_dir: str | Path | None = None, checkpoint_version: str | None = None) -> dict[SubTask, Band]:
    """One calibrated :class:`Band` per sub-task that has held-out annotations.

    Args:
        proxy: the task's :class:`~falconer_assets.proxy.model.NTEProxy`.
        rows: the task's annotation rows (the held-out split is used).
        docs: the corpus documents by id.
        sub_tasks: the plan's ``(kind, instruction)`` calls (duplicates ignored).
        target: the task's ``quality:`` block (:class:`~falconer_assets.inputs.tasks.QualityTarget` or dict).
        cache_dir: the checkpoint folder; with ``checkpoint_version`` the bands are read from / written
            to ``cascade-<key>.json`` there.

    Returns:
        ``{(kind, instruction): Band}``; a sub-task without held-out annotations gets no band (the proxy
        answers it alone).
    """
    target = as_target(target)
    unique = list(dict.fromkeys(sub_tasks))
    key = digest("cascade", checkpoint_version, target.model_dump(), unique,
                 sorted((r.kind, r.instruction, r.doc_id, r.label, str(r.spans)) for r in rows if r.split == "heldout"))
    path = Path(cache_dir) / f"cascade-{key[:16]}.json" if cache_dir and checkpoint_version else None
    if path is not None and path.is_file():
        return {(b["kind"], b["instruction"]): Band.from_dict(b) for b in json.loads(path.read_text())}
    bands = {}
    for st in unique:
        scores, oracle = heldout_scores(proxy, rows, docs, st)
        if scores:
            bands[st] = calibrate(st[0], st[1], scores, oracle, target)
    if path is not None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([b.to_dict() for b in bands.values()], indent=1))
        tmp.replace(path)
    return bands


def heldout_quality(proxy, rows: Sequence[AnnotationRow], docs: Mapping, sub_tasks: Sequence[SubTask], target) -> list[dict]:
    """Per sub-task, the cascade's achieved quality on held-out data, cross-fitted (2 folds: calibrate on one
    half, measure on the other; :func:`~falconer_assets.cascade.calibrate.cross_fitted`), with ``kind``,
    ``instruction`` and ``n``. What ``eval`` reports next to the target."""
    target = as_target(target)
    out = []
    for st in dict.fromkeys(sub_tasks):
        scores, oracle = heldout_scores(proxy, rows, docs, st)
        if len(scores) >= 4:
            out.append({"kind": st[0], "instruction": st[1], **cross_fitted(st[0], st[1], scores, oracle, target)})
    return out
