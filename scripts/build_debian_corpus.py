#!/usr/bin/env python3
"""Build a corpus of Debian package long descriptions as JSON Lines.

Source
------
Two pieces of Debian archive metadata, read from the local apt lists (no
network access beyond what ``apt-get update`` already fetched):

* ``Translation-en`` (``/var/lib/apt/lists/*main_i18n_Translation-en*``):
  one stanza per package with ``Package:``, ``Description-md5:`` and
  ``Description-en:`` (first line = short description, then indented body
  lines; a line consisting of `` .`` is a paragraph break).  The files are
  usually lz4-compressed and are read with
  ``/usr/lib/apt/apt-helper cat-file``.
* ``Packages`` as printed by ``apt-cache dumpavail``: ``Package:``,
  ``Section:``, ``Description-md5:`` (the join key to Translation-en) and,
  where present, ``Tag:`` (debtags).  A package listed several times (several
  architectures / versions) is kept once, first occurrence wins.

Each output record has the fields ``id`` (``debian:<package>``), ``package``,
``section`` (``contrib/`` / ``non-free/`` prefixes stripped), ``text``
(short description + ". " + long description; paragraphs separated by a
newline, whitespace inside a paragraph collapsed) and ``tags`` (debtags list,
possibly empty).  Records with text under 40 characters and transitional /
dummy packages are skipped.

``--exclude other.jsonl`` (repeatable) leaves out every package already in
another corpus file (matched on its ``package`` field, or on ``id`` minus the
``debian:`` prefix) *before* sampling, so the output is disjoint from it; this
is how ``data/bench/debian_labels.jsonl`` is kept disjoint from the bundled
corpus.  ``--max-chars N`` cuts texts longer than N characters at the last
whitespace before N (a hard cut if there is none); off by default.

By default a seeded, stratified sample is written: fixed quotas for games,
net and security-tagged (debtag ``security::*``) packages, floors for a few
other interesting sections, and the rest spread proportionally over all other
sections.  Output is sorted by id and is deterministic for a given set of apt
lists and seed.

``--shards N`` writes the WHOLE archive (no sampling; ``--full`` implied) as a
corpus folder of ``N`` JSON Lines files, ``<out>/<name>_00.jsonl`` ...
(``<name>`` = the folder's name; default folder ``data/corpora/debian_full``,
kept out of git).  The records are the same as in the single-file output; they
are shuffled with ``--seed`` and cut into ``N`` contiguous shards of near-equal
size (the first ``len % N`` shards hold one record more), and the shuffled
order is kept inside each shard, so the first ``k`` records of the folder
(shards in name order) are a uniform random sample of the archive at every
``k``: ``python -m falconer_assets.bench mining`` mines such prefixes.  Shard
files of an earlier run with another ``N`` (same ``<name>_<digits>.jsonl``
pattern) are removed, so the folder never holds a package twice.  On Debian
bookworm (main, updates, security) this is about 63,000 records, 26 MB, in
about 6 s; 3 texts are longer than 20,000 characters, which the corpus reader
rejects (``falconer_assets.inputs.corpus.MAX_TEXT_CHARS``) unless
``--max-chars`` cuts them.

Requirements
------------
The apt lists exist on Debian and Debian-based machines only, and only with
the English translations fetched: ``Translation-en`` is missing when apt is
configured with ``Acquire::Languages "none"`` (Debian's docker images do this,
in ``/etc/apt/apt.conf.d/docker-no-languages``), and a plain ``apt-get
update`` on such a machine deletes it again.  Fetch it with the command below
(about 6 MB); elsewhere, pass saved plain-text files with ``--translations`` /
``--packages``.

Usage
-----
::

    apt-get update -o Acquire::Languages=en
    python scripts/build_debian_corpus.py                 # 2000-record sample
    python scripts/build_debian_corpus.py --n 500 --seed 1 --out /tmp/x.jsonl
    python scripts/build_debian_corpus.py --full --out /tmp/all.jsonl
    # the whole archive as a corpus folder of 16 shards (not committed):
    python scripts/build_debian_corpus.py --shards 16 --out data/corpora/debian_full
    # a benchmark set disjoint from the bundled corpus, texts cut at 4000 chars:
    python scripts/build_debian_corpus.py --n 4000 --seed 29 --max-chars 4000 \
        --exclude data/corpora/debian_packages/debian_packages.jsonl --out data/bench/debian_labels.jsonl
    # offline / from saved files (plain text, not compressed):
    python scripts/build_debian_corpus.py --translations tr.txt --packages pk.txt
"""
from __future__ import annotations

import argparse
import glob
import json
import random
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Iterator

APT_LISTS = "/var/lib/apt/lists"
TRANSLATION_GLOB = "*main_i18n_Translation-en*"
APT_HELPER = "/usr/lib/apt/apt-helper"

MIN_TEXT_CHARS = 40
SKIP_PHRASES = (
    "transitional package",
    "dummy package",
    "transitional dummy",
    "transitional metapackage",
    "transitional placeholder",
    "transitional empty package",
    "empty transitional",
)
SECTION_PREFIXES = ("contrib/", "non-free-firmware/", "non-free/")

SECURITY = "security"  # pseudo-stratum: any package with a security::* debtag

# Fixed stratum sizes for the default n=2000; scaled linearly for other --n.
FIXED_QUOTAS = {"games": 300, "net": 300, SECURITY: 150}
# Minimum sizes for some sections that would otherwise get only a few records.
FLOORS = {
    "admin": 60,
    "utils": 60,
    "devel": 60,
    "science": 50,
    "web": 40,
    "sound": 40,
    "graphics": 40,
}
REFERENCE_N = 2000

_WS = re.compile(r"\s+")


# --------------------------------------------------------------------------
# deb822 parsing
# --------------------------------------------------------------------------
def iter_stanzas(text: str) -> Iterator[dict[str, str]]:
    """Yield deb822 stanzas as ``{field: value}``.

    Continuation lines (starting with space or tab) are appended to the
    previous field's value with a newline, keeping their leading whitespace.
    """
    fields: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, last = {}, None
            continue
        if line[0] in " \t":
            if last is not None:
                fields[last] += "\n" + line
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        last = key.strip()
        fields[last] = value.strip()
    if fields:
        yield fields


def parse_translations(text: str) -> dict[str, dict[str, str]]:
    """Parse Translation-en text into ``{description_md5: {...}}``.

    Each value has ``package``, ``short`` (first line of Description-en) and
    ``long`` (the raw indented body lines, newline-joined).  The md5 is the
    join key used by the Packages index; first occurrence wins.
    """
    out: dict[str, dict[str, str]] = {}
    for st in iter_stanzas(text):
        md5 = st.get("Description-md5", "").strip()
        desc = st.get("Description-en")
        if not md5 or desc is None:
            continue
        short, _, long = desc.partition("\n")
        out.setdefault(
            md5, {"package": st.get("Package", "").strip(), "short": short.strip(), "long": long}
        )
    return out


def normalise_section(section: str | None) -> str:
    s = (section or "").strip()
    for p in SECTION_PREFIXES:
        if s.startswith(p):
            s = s[len(p):]
    return s or "unknown"


def parse_tags(value: str | None) -> list[str]:
    if not value:
        return []
    return [t for t in (x.strip() for x in value.replace("\n", " ").split(",")) if t]


def parse_packages(text: str) -> dict[str, dict]:
    """Parse a Packages index (e.g. ``apt-cache dumpavail``) into
    ``{package: {"package", "section", "md5", "tags", "short"}}``.

    Packages listed more than once (architectures, versions) are deduplicated
    by name; the first stanza wins.
    """
    out: dict[str, dict] = {}
    for st in iter_stanzas(text):
        name = st.get("Package", "").strip()
        if not name or name in out:
            continue
        desc = st.get("Description", "")
        out[name] = {
            "package": name,
            "section": normalise_section(st.get("Section")),
            "md5": st.get("Description-md5", "").strip(),
            "tags": parse_tags(st.get("Tag")),
            "short": desc.partition("\n")[0].strip(),
        }
    return out


# --------------------------------------------------------------------------
# joining / text
# --------------------------------------------------------------------------
def format_text(short: str, long: str) -> str:
    """Short description + ". " + body; `` .`` lines become paragraph breaks
    (a newline), whitespace inside a paragraph is collapsed."""
    paragraphs: list[str] = []
    cur: list[str] = []
    for line in long.splitlines():
        if line.strip() == ".":
            if cur:
                paragraphs.append(" ".join(cur))
            cur = []
            continue
        line = _WS.sub(" ", line).strip()
        if line:
            cur.append(line)
    if cur:
        paragraphs.append(" ".join(cur))
    short = _WS.sub(" ", short).strip().rstrip(".").strip()
    body = "\n".join(paragraphs)
    if not body:
        return short
    if not short:
        return body
    return f"{short}. {body}"


def is_transitional(text: str) -> bool:
    low = _WS.sub(" ", text.lower())
    return any(p in low for p in SKIP_PHRASES)


def build_records(packages: dict[str, dict], translations: dict[str, dict]) -> list[dict]:
    """Join Packages entries with their Translation-en description (by
    Description-md5, falling back to the package name when the md5 is missing
    or unknown, e.g. for locally installed versions), drop short /
    transitional records, sort by id."""
    by_name: dict[str, dict[str, str]] = {}
    for tr in translations.values():
        by_name.setdefault(tr["package"], tr)
    records = []
    for name, pk in packages.items():
        tr = translations.get(pk["md5"]) if pk["md5"] else None
        if tr is None:
            tr = by_name.get(name)
        if tr is None:
            continue  # no long description available
        text = format_text(tr["short"] or pk["short"], tr["long"])
        if len(text) < MIN_TEXT_CHARS or is_transitional(text):
            continue
        records.append(
            {
                "id": f"debian:{name}",
                "package": name,
                "section": pk["section"],
                "text": text,
                "tags": list(pk["tags"]),
            }
        )
    records.sort(key=lambda r: r["id"])
    return records


def truncate_text(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` characters at the last whitespace
    before the limit (a hard cut if the first ``max_chars`` have none), trailing
    whitespace dropped; unchanged when short enough or ``max_chars <= 0``."""
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    head = text[: max_chars + 1]  # a space right at the limit is a clean cut
    cut = max(head.rfind(" "), head.rfind("\n"))
    if cut <= 0:
        return text[:max_chars].rstrip()
    return text[:cut].rstrip()


def read_excluded_packages(paths: Iterable[Path]) -> set[str]:
    """Package names listed in JSONL corpus files (``package`` field, else
    ``id`` without its ``debian:`` prefix); blank lines are skipped.

    Raises FileNotFoundError for a missing file and ValueError for a line that
    is not a JSON object naming a package."""
    names: set[str] = set()
    for path in paths:
        with Path(path).open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                obj = json.loads(line)
                name = obj.get("package") if isinstance(obj, dict) else None
                if not name and isinstance(obj, dict) and isinstance(obj.get("id"), str):
                    name = obj["id"].removeprefix("debian:")
                if not isinstance(name, str) or not name:
                    raise ValueError(f"{path}:{line_no}: no 'package' or 'id' field")
                names.add(name)
    return names


# --------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------
def stratum(rec: dict) -> str:
    if any(t.startswith("security::") for t in rec["tags"]):
        return SECURITY
    return rec["section"]


def _largest_remainder(weights: dict[str, int], total: int) -> dict[str, int]:
    wsum = sum(weights.values())
    if wsum <= 0 or total <= 0:
        return {k: 0 for k in weights}
    exact = {k: total * w / wsum for k, w in weights.items()}
    alloc = {k: int(v) for k, v in exact.items()}
    rest = total - sum(alloc.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - alloc[k]), k))[:rest]:
        alloc[k] += 1
    return alloc


def allocate(counts: dict[str, int], n: int) -> dict[str, int]:
    """Per-stratum sample sizes: fixed quotas, then floors, then the remaining
    budget proportional to the remaining records of the other strata."""
    scale = n / REFERENCE_N
    alloc: dict[str, int] = {}
    for k, q in FIXED_QUOTAS.items():
        if k in counts:
            alloc[k] = min(counts[k], round(q * scale))
    others = sorted(k for k in counts if k not in FIXED_QUOTAS)
    for k in others:
        alloc[k] = min(counts[k], round(FLOORS.get(k, 0) * scale))
    budget = n - sum(alloc.values())
    if budget > 0:
        extra = _largest_remainder({k: counts[k] - alloc[k] for k in others}, budget)
        for k in others:
            alloc[k] += extra[k]
    return alloc


def sample_records(records: list[dict], n: int, seed: int) -> list[dict]:
    """Seeded stratified sample of ``n`` records, sorted by id."""
    if n >= len(records):
        return sorted(records, key=lambda r: r["id"])
    rng = random.Random(seed)
    by_stratum: dict[str, list[dict]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r["id"]):
        by_stratum[stratum(r)].append(r)
    alloc = allocate({k: len(v) for k, v in by_stratum.items()}, n)
    chosen: list[dict] = []
    leftovers: list[dict] = []
    for k in sorted(by_stratum):
        pool = by_stratum[k]
        take = min(alloc.get(k, 0), len(pool))
        picked = set(rng.sample(range(len(pool)), take))
        chosen.extend(pool[i] for i in sorted(picked))
        leftovers.extend(pool[i] for i in range(len(pool)) if i not in picked)
    if len(chosen) < n:  # a stratum ran short: top up at random
        chosen.extend(rng.sample(leftovers, min(n - len(chosen), len(leftovers))))
    chosen = chosen[:n]
    chosen.sort(key=lambda r: r["id"])
    return chosen


# --------------------------------------------------------------------------
# I/O
# --------------------------------------------------------------------------
def read_apt_translations() -> str:
    paths = sorted(glob.glob(f"{APT_LISTS}/{TRANSLATION_GLOB}"))
    if not paths:
        sys.exit(
            f"no {TRANSLATION_GLOB} under {APT_LISTS}; "
            "run: apt-get update -o Acquire::Languages=en"
        )
    chunks = []
    for p in paths:
        res = subprocess.run(
            [APT_HELPER, "cat-file", p], check=True, capture_output=True, text=True
        )
        chunks.append(res.stdout)
    return "\n\n".join(chunks)


def read_apt_packages() -> str:
    res = subprocess.run(
        ["apt-cache", "dumpavail"], check=True, capture_output=True, text=True
    )
    return res.stdout


def write_jsonl(records: Iterable[dict], out: Path) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out.open("w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


def shard_records(records: list[dict], shards: int, seed: int) -> list[list[dict]]:
    """``records`` shuffled with ``seed`` and cut into ``shards`` contiguous lists.

    Sizes differ by at most one (the first ``len(records) % shards`` lists hold
    one more); every record is in exactly one list; a prefix of the
    concatenation is a uniform random sample.  Deterministic for the same input
    order and seed.

    Raises ValueError when ``shards < 1``."""
    if shards < 1:
        raise ValueError(f"--shards must be >= 1, got {shards}")
    order = sorted(records, key=lambda r: r["id"])
    random.Random(f"shards/{seed}").shuffle(order)
    base, extra = divmod(len(order), shards)
    out, start = [], 0
    for i in range(shards):
        end = start + base + (1 if i < extra else 0)
        out.append(order[start:end])
        start = end
    return out


def shard_name(folder: Path, index: int, shards: int) -> str:
    """File name of shard ``index`` of ``shards`` in ``folder``: ``<folder name>_<index>.jsonl``,
    the index zero-padded to at least 2 digits (``debian_full_07.jsonl``)."""
    width = max(2, len(str(shards - 1)))
    return f"{folder.name}_{index:0{width}d}.jsonl"


def write_shards(records: list[dict], folder: Path, shards: int, seed: int) -> list[tuple[Path, int]]:
    """Write ``records`` as ``shards`` JSONL files in ``folder`` (see :func:`shard_records`).

    Shard files of an earlier run (``<folder name>_<digits>.jsonl``) that this
    run does not write are deleted first, so the folder holds each record once.

    Returns ``[(path, records written), ...]`` in shard order."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [shard_name(folder, i, shards) for i in range(shards)]
    pattern = re.compile(rf"{re.escape(folder.name)}_\d+\.jsonl")
    for old in sorted(folder.iterdir()):
        if pattern.fullmatch(old.name) and old.name not in names:
            print(f"removing stale shard {old}", file=sys.stderr)
            old.unlink()
    return [(folder / name, write_jsonl(part, folder / name))
            for name, part in zip(names, shard_records(records, shards, seed))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Build a JSONL corpus of Debian package long descriptions."
    )
    ap.add_argument(
        "--out", type=Path, default=None,
        help="output file (default data/corpora/debian_packages/debian_packages.jsonl); "
        "with --shards, the output folder (default data/corpora/debian_full)",
    )
    ap.add_argument("--n", type=int, default=None, help="sample size (default 2000)")
    ap.add_argument("--seed", type=int, default=13, help="sampling / shuffling seed (default 13)")
    ap.add_argument("--full", action="store_true", help="write all records, no sampling")
    ap.add_argument(
        "--shards", type=int, default=0,
        help="write the whole archive as this many JSONL files in the folder --out "
        "(implies --full; shuffled with --seed)",
    )
    ap.add_argument(
        "--translations", type=Path, action="append",
        help="plain-text Translation-en file(s) instead of the apt lists (repeatable)",
    )
    ap.add_argument(
        "--packages", type=Path,
        help="plain-text Packages file instead of `apt-cache dumpavail`",
    )
    ap.add_argument(
        "--exclude", type=Path, action="append", default=[],
        help="JSONL corpus whose packages are left out before sampling (repeatable)",
    )
    ap.add_argument(
        "--max-chars", type=int, default=0,
        help="cut longer texts at the last whitespace before this many characters "
        "(default 0 = no cut)",
    )
    args = ap.parse_args(argv)
    if args.shards < 0:
        ap.error("--shards must be >= 1")
    if args.shards and args.n is not None:
        ap.error("--shards writes the whole archive; --n does not apply")
    if args.out is None:
        args.out = Path(
            "data/corpora/debian_full" if args.shards
            else "data/corpora/debian_packages/debian_packages.jsonl"
        )
    if args.shards and args.out.suffix == ".jsonl":
        ap.error(f"--shards needs a folder for --out, got the file name {args.out}")

    if args.translations:
        tr_text = "\n\n".join(p.read_text(encoding="utf-8") for p in args.translations)
    else:
        tr_text = read_apt_translations()
    pk_text = (
        args.packages.read_text(encoding="utf-8") if args.packages else read_apt_packages()
    )

    translations = parse_translations(tr_text)
    packages = parse_packages(pk_text)
    records = build_records(packages, translations)
    excluded = read_excluded_packages(args.exclude)
    if excluded:
        before = len(records)
        records = [r for r in records if r["package"] not in excluded]
        print(
            f"excluded {before - len(records)} records listed in "
            f"{', '.join(map(str, args.exclude))}",
            file=sys.stderr,
        )
    if not (args.full or args.shards):
        records = sample_records(records, 2000 if args.n is None else args.n, args.seed)
    if args.max_chars > 0:
        records = [{**r, "text": truncate_text(r["text"], args.max_chars)} for r in records]
    if args.shards:
        written = write_shards(records, args.out, args.shards, args.seed)
        n = sum(k for _, k in written)
        print(f"{len(written)} shards of {min(k for _, k in written)}-{max(k for _, k in written)} "
              f"records in {args.out}/", file=sys.stderr)
    else:
        n = write_jsonl(records, args.out)

    counts = Counter(r["section"] for r in records)
    n_sec = sum(1 for r in records if stratum(r) == SECURITY)
    print(
        f"{len(packages)} packages, {len(translations)} descriptions -> "
        f"wrote {n} records to {args.out} (security-tagged: {n_sec})",
        file=sys.stderr,
    )
    for sec, c in counts.most_common():
        print(f"  {sec:16s} {c}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
