"""The task report page (issue 14, item 3): highlighting, the eval table, escaping, in Chromium.

The page of a real materialized task is checked in test_assets.py (``report`` of the whole graph);
here the renderer runs on hand-made rows, including a hostile document text.
"""

from __future__ import annotations

import pytest

from falconer_assets.report.highlight import Mark, segments
from falconer_assets.report.html import DocumentView, ReportData, eval_table, render_report
from falconer_assets.warehouse.rows import MetricRow, MinedRow
from falconer_assets_tests.conftest import open_in_chromium, require_browser

TEXT = "Tux Racer is a 3D racing game; a racing arcade classic."


def test_segments_cover_the_text_and_split_overlaps():
    racing = TEXT.index("racing")
    marks = [Mark(racing, racing + len("racing game"), "genre", 0.9), Mark(racing, racing + 6, "kind", 0.4)]
    segs = segments(TEXT, marks)
    assert "".join(s.text for s in segs) == TEXT
    assert [(s.text, [m.field for m in s.marks]) for s in segs if s.marks] == [
        ("racing", ["genre", "kind"]), (" game", ["genre"])]
    assert segments(TEXT, []) == [segments(TEXT, [])[0]] and segments("", []) == []


@pytest.mark.parametrize("start,end", [(-1, 3), (5, 5), (50, len(TEXT) + 1)])
def test_segments_reject_offsets_of_another_text(start, end):
    with pytest.raises(ValueError, match="does not fit a text of"):
        segments(TEXT, [Mark(start, end, "genre", 0.5)])


def test_eval_table_pairs_each_f1_with_its_interval():
    rows = [MetricRow("label", "Is this a game?", 55, m, v) for m, v in
            (("label_f1", 0.88), ("label_f1_low", 0.63), ("label_f1_high", 1.0), ("gold_positive", 32.0))]
    rows += [MetricRow("span", "What genre?", 55, "span_f1", 0.14)]
    table = eval_table(rows)
    assert [(r["kind"], r["n"], r["f1"], r["low"], r["high"], r["gold"]) for r in table] == [
        ("label", 55, 0.88, 0.63, 1.0, 32.0), ("span", 55, 0.14, None, None, None)]


def _data(text: str, rows: tuple[MinedRow, ...]) -> ReportData:
    return ReportData(
        task="games", instruction="Retrieve games <b>and</b> their genre", corpus="debian", plan_source="def plan(texts): ...",
        totals={"rows": len(rows), "docs": 1, "files": 1, "rejects": 2},
        metrics=[MetricRow("span", "What genre?", 12, "span_f1", 0.5), MetricRow("span", "What genre?", 12, "span_f1_low", 0.2),
                 MetricRow("span", "What genre?", 12, "span_f1_high", 0.8)],
        value_counts={"genre": [("racing", 2), ("arcade", 1)]},
        documents=[DocumentView("debian:tux", text, rows)],
        curve=[{"epoch": 0, "loss": None, "dev_score": 0.3}, {"epoch": 1, "loss": 0.9, "dev_score": 0.6}],
    )


def test_render_rejects_offsets_that_do_not_fit_the_document():
    with pytest.raises(ValueError, match="does not fit"):
        render_report(_data("short", (MinedRow("debian:tux", "genre", "racing", 20, 26, 0.9),)))


@pytest.mark.ui
def test_page_in_chromium_highlights_in_place_and_never_runs_document_text(tmp_path):
    require_browser()
    hostile = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> ' + TEXT
    r1 = hostile.index("racing")
    r2 = hostile.index("racing", r1 + 1)
    rows = (MinedRow("debian:tux", "is_game", "true", None, None, 0.97),
            MinedRow("debian:tux", "genre", "racing", r1, r1 + 6, 0.91),
            MinedRow("debian:tux", "genre", "racing", r2, r2 + 6, 0.55))
    page = tmp_path / "report.html"
    page.write_text(render_report(_data(hostile, rows)), encoding="utf-8")
    shown = open_in_chromium(page.as_uri(), screenshot=tmp_path / "report.png")
    assert shown["pwned"] is None  # the document's markup is shown as text, never run
    assert "<script>window.pwned = 1</script>" in shown["text"]
    assert [m[:2] for m in shown["marks"]] == [["racing", "genre"], ["racing", "genre"]]
    assert "genre · score 0.91" in shown["marks"][0][2] and "score 0.55" in shown["marks"][1][2]
    assert "is_game: true" in shown["text"] and "0.50 [0.20, 0.80]" in shown["text"]
    assert "Retrieve games <b>and</b> their genre" in shown["text"]  # the instruction is escaped too
    assert [alt for alt, width in shown["images"] if width > 0] == ["training curve per epoch"]
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curve_without_a_dev_split_still_plots_the_loss():
    from falconer_assets.report.html import curve_png

    assert curve_png([]) is None
    assert curve_png([{"epoch": 1, "loss": 0.9, "dev_score": None}, {"epoch": 2, "loss": 0.5, "dev_score": None}])
