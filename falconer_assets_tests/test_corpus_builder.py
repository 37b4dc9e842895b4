"""Tests for scripts/build_debian_corpus.py and the committed Debian corpus."""
from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "build_debian_corpus.py"
CORPUS = ROOT / "data" / "corpora" / "debian_packages" / "debian_packages.jsonl"


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_debian_corpus", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


builder = _load_builder()

TRANSLATIONS = """\
Package: alpha-game
Description-md5: 11111111111111111111111111111111
Description-en: puzzle game with falling blocks
 Alpha is a  puzzle game where blocks
 fall from the sky.
 .
 It supports network play.

Package: beta-tool
Description-md5: 22222222222222222222222222222222
Description-en: network scanner
 Beta scans networks for open ports and
 reports the results as XML.

Package: gamma-old
Description-md5: 33333333333333333333333333333333
Description-en: old name of delta (transitional package)
 This is a transitional package. It can safely be removed.

Package: tiny
Description-md5: 44444444444444444444444444444444
Description-en: tiny
 x
"""

PACKAGES = """\
Package: alpha-game
Architecture: amd64
Description: puzzle game with falling blocks
Description-md5: 11111111111111111111111111111111
Tag: game::puzzle, interface::x11,
 use::gameplaying
Section: games

Package: alpha-game
Architecture: i386
Description: puzzle game with falling blocks
Description-md5: 11111111111111111111111111111111
Section: games

Package: beta-tool
Architecture: amd64
Description: network scanner
Description-md5: 22222222222222222222222222222222
Tag: security::ids
Section: contrib/net

Package: gamma-old
Architecture: all
Description: old name of delta (transitional package)
Description-md5: 33333333333333333333333333333333
Section: oldlibs

Package: tiny
Architecture: all
Description: tiny
Description-md5: 44444444444444444444444444444444
Section: misc

Package: no-translation
Architecture: all
Description: has no Translation-en record
Description-md5: 55555555555555555555555555555555
Section: utils
"""


def test_parse_and_join(tmp_path: Path) -> None:
    tr_file = tmp_path / "Translation-en"
    pk_file = tmp_path / "Packages"
    tr_file.write_text(TRANSLATIONS, encoding="utf-8")
    pk_file.write_text(PACKAGES, encoding="utf-8")

    translations = builder.parse_translations(tr_file.read_text(encoding="utf-8"))
    packages = builder.parse_packages(pk_file.read_text(encoding="utf-8"))
    assert len(translations) == 4
    assert set(packages) == {"alpha-game", "beta-tool", "gamma-old", "tiny", "no-translation"}

    records = builder.build_records(packages, translations)
    assert [r["id"] for r in records] == ["debian:alpha-game", "debian:beta-tool"]

    alpha, beta = records
    assert alpha["package"] == "alpha-game"
    assert alpha["section"] == "games"
    assert alpha["text"] == (
        "puzzle game with falling blocks. Alpha is a puzzle game where blocks "
        "fall from the sky.\nIt supports network play."
    )
    assert alpha["tags"] == ["game::puzzle", "interface::x11", "use::gameplaying"]

    assert beta["section"] == "net"  # contrib/ prefix stripped
    assert beta["text"] == (
        "network scanner. Beta scans networks for open ports and reports the "
        "results as XML."
    )
    assert beta["tags"] == ["security::ids"]


def test_main_writes_jsonl(tmp_path: Path) -> None:
    tr_file = tmp_path / "Translation-en"
    pk_file = tmp_path / "Packages"
    out = tmp_path / "out.jsonl"
    tr_file.write_text(TRANSLATIONS, encoding="utf-8")
    pk_file.write_text(PACKAGES, encoding="utf-8")
    rc = builder.main(
        ["--translations", str(tr_file), "--packages", str(pk_file), "--out", str(out)]
    )
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["debian:alpha-game", "debian:beta-tool"]
    assert set(rows[0]) == {"id", "package", "section", "text", "tags"}


def test_sampling_is_seeded_and_stratified() -> None:
    records = []
    for sec, k in [("games", 400), ("net", 400), ("libs", 2000), ("utils", 300)]:
        for i in range(k):
            records.append(
                {"id": f"debian:{sec}-{i:04d}", "package": f"{sec}-{i:04d}",
                 "section": sec, "text": "x" * 50, "tags": []}
            )
    for i in range(200):
        records.append(
            {"id": f"debian:sec-{i:04d}", "package": f"sec-{i:04d}", "section": "admin",
             "text": "x" * 50, "tags": ["security::firewall"]}
        )
    a = builder.sample_records(records, 1000, seed=13)
    b = builder.sample_records(records, 1000, seed=13)
    c = builder.sample_records(records, 1000, seed=14)
    assert a == b and a != c
    assert len(a) == 1000 and len({r["id"] for r in a}) == 1000
    assert [r["id"] for r in a] == sorted(r["id"] for r in a)
    counts = Counter(r["section"] for r in a)
    assert counts["games"] == 150 and counts["net"] == 150  # quotas scaled to n=1000
    assert counts["admin"] == 75  # security stratum


@pytest.mark.skipif(not CORPUS.exists(), reason="committed corpus missing")
def test_committed_corpus() -> None:
    rows = [
        json.loads(line)
        for line in CORPUS.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    assert len(rows) >= 1500
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    for r in rows:
        assert r["id"] == f"debian:{r['package']}"
        assert isinstance(r["text"], str) and r["text"].strip()
        assert len(r["text"]) >= 40
        assert isinstance(r["tags"], list)
        assert not r["section"].startswith(("contrib/", "non-free/"))
    sections = Counter(r["section"] for r in rows)
    assert sections["games"] >= 100
    assert sections["net"] >= 100
    assert CORPUS.stat().st_size < 5_000_000
