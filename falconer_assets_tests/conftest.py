"""Shared fixtures: a small real Debian corpus with bad lines, and a scripted LLM resource.

The scripted LLM stands in for the LLM in the fast asset tests only (the DEVELOPERS guide
allows it); it answers the real annotation prompts from gold derived from Debian metadata
(Section ``games`` -> "Is this package a game?"; the first genre word found in the text ->
"What is the genre of the game?"), so the proxy has a real, learnable signal.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from falconer_assets.llm.prompts import label_messages, span_messages  # noqa: E402
from falconer_assets.llm.client import ChatResult  # noqa: E402
from falconer_assets.resources.llm import LLMResource  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "data" / "corpora" / "debian_packages" / "debian_packages.jsonl"
GENRES = ("puzzle", "strategy", "arcade", "racing", "shooter", "platform", "adventure", "simulation", "roguelike")
GAME_Q = "Is this package a game?"
GENRE_Q = "What is the genre of the game?"

GAME_PLAN = f'''def plan(texts):
    is_game = get_label(texts, "{GAME_Q}")
    games = [i for i, ok in enumerate(is_game) if ok]
    genres = get_span([texts[i] for i in games], "{GENRE_Q}")
    results = [None] * len(texts)
    for i, spans in zip(games, genres):
        results[i] = {{"genre": spans}}
    return results
'''

# Debian bookworm, package 0ad (Description-en body, lines joined).
ZERO_AD = (
    '0 A.D. (pronounced "zero ey-dee") is a free, open-source, cross-platform real-time '
    "strategy (RTS) game of ancient warfare. In short, it is a historically-based war/economy "
    "game that allows players to relive or rewrite the history of Western civilizations, "
    "focusing on the years between 500 B.C. and 500 A.D. The project is highly ambitious, "
    "involving state-of-the-art 3D graphics, detailed artwork, sound, and a flexible and "
    "powerful custom-built game engine."
)

BAD_LINES = [
    '{"id": "broken:json", "text": "unterminated',
    '{"id": "empty:text", "text": "   "}',
]


def debian_records(n_games: int, n_other: int, seed: int = 0) -> list[dict]:
    """Real records from the bundled corpus: ``n_games`` games that name a genre, ``n_other`` non-games."""
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    games = [r for r in rows if r["section"] == "games" and genre_of(r["text"])]
    other = [r for r in rows if r["section"] != "games" and len(r["text"]) < 600]
    rng = random.Random(seed)
    return rng.sample(games, n_games) + rng.sample(other, n_other)


def genre_of(text: str) -> str | None:
    """The first genre word (from :data:`GENRES`) in ``text``, as written there, else ``None``."""
    low = text.lower()
    hits = [(low.find(g), g) for g in GENRES if g in low]
    if not hits:
        return None
    pos, g = min(hits)
    return text[pos : pos + len(g)]


@pytest.fixture
def small_data_dir(tmp_path: Path) -> Path:
    """A data dir with one task (game genres), 40 real Debian records + 2 bad lines + 1 duplicate."""
    return make_small_data_dir(tmp_path)


def make_small_data_dir(tmp_path: Path) -> Path:
    """Write the :func:`small_data_dir` layout under ``tmp_path`` and return it."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "corpora" / "debian_packages").mkdir(parents=True)
    shutil.copy(REPO / "data" / "tasks" / "debian_game_genres.yaml", tmp_path / "tasks")
    recs = debian_records(20, 20)
    lines = [json.dumps(r) for r in recs] + BAD_LINES + [json.dumps(recs[0])]  # last: duplicate id
    (tmp_path / "corpora" / "debian_packages" / "debian_packages.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


class ScriptedLLM(LLMResource):
    """An LLM resource that answers from a fixed script instead of a model (fast tests only).

    Planner prompts get :data:`GAME_PLAN`; label/span prompts built by
    :mod:`falconer_assets.llm.prompts` for a corpus text get the gold answer; anything else
    raises, so a test notices a prompt it did not expect. ``plan_source`` overrides the plan.
    """

    corpus_path: str
    plan_source: str = GAME_PLAN

    def _answer(self, messages: list[dict]) -> str:
        key = json.dumps(messages, sort_keys=True)
        for line in Path(self.corpus_path).read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            text = rec.get("text", "")
            if key == json.dumps(label_messages(text, GAME_Q), sort_keys=True):
                return "Yes" if rec.get("section") == "games" else "No"
            if key == json.dumps(span_messages(text, GENRE_Q), sort_keys=True):
                return genre_of(text) or "NONE"
        if "get_label" in json.dumps(messages):
            return f"```python\n{self.plan_source}```"
        raise AssertionError(f"unexpected prompt: {messages[-1]['content'][:200]!r}")

    def chat(self, messages: list[dict], **params) -> ChatResult:
        text = self._answer(messages)
        return ChatResult(text=text, prompt_tokens=len(json.dumps(messages)) // 4,
                          completion_tokens=len(text) // 4, latency_s=0.5, cached=False)

    def chat_many(self, batch: list[list[dict]], **params) -> list[ChatResult]:
        return [self.chat(m, **params) for m in batch]


def register_partitions(instance, data_dir: Path) -> None:
    """Register the ``tasks`` and ``corpus_files`` partitions of ``data_dir`` in ``instance`` (what the
    sensors do), so partitioned assets can be materialized with ``dg.materialize(partition_key=...)``."""
    from falconer_assets import sync

    sync.apply(instance, sync.sync_tasks(data_dir, instance))
    sync.apply(instance, sync.new_file_changes(data_dir, instance))


def check_evaluations(instance, run_ids) -> dict[tuple[str, str], bool]:
    """``{(asset key, check name): passed}`` of every asset check evaluated in the runs ``run_ids``."""
    import dagster as dg

    out = {}
    for run_id in run_ids:
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
            e = record.dagster_event.event_specific_data
            out[(e.asset_key.to_user_string(), e.check_name)] = e.passed
    return out


def latest_metadata(instance, key, partition) -> dict:
    """Metadata of the latest materialization of asset ``key`` (a string or AssetKey) for ``partition``."""
    import dagster as dg

    key = key if isinstance(key, dg.AssetKey) else dg.AssetKey(key)
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[str(partition)]), limit=1).records
    assert records, f"{key.to_user_string()}[{partition}] was never materialized"
    return records[0].asset_materialization.metadata


# ---- headless Chromium (Debian's /usr/bin/chromium driven by Playwright; tests marked `ui`) ------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--disable-sync",
    "--metrics-recording-only",
    "--no-first-run",
]


def require_browser() -> None:
    """Skip the calling test when Playwright or Chromium is missing; fail instead under CI (``CI`` set),
    where ``.ci/run`` installs both."""
    try:
        import playwright.sync_api  # noqa: F401
        reason = None if os.access(CHROMIUM, os.X_OK) else f"{CHROMIUM} is missing (apt-get install chromium)"
    except ImportError:
        reason = "Python package 'playwright' is not installed (pip install playwright)"
    if reason and os.environ.get("CI"):
        pytest.fail(f"browser test cannot run under CI: {reason}")
    if reason:
        pytest.skip(reason)


def open_in_chromium(url: str, screenshot: Path | None = None, viewport: dict | None = None):
    """Load ``url`` in headless Chromium and return what the page shows, for assertions.

    Returns ``{"marks": [[text, field, title], ...], "text": body text, "images": [[alt, naturalWidth]],
    "pwned": window.pwned}``; with ``screenshot``, a full-page PNG is written there.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=viewport or {"width": 1300, "height": 900})
            page.goto(url)
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
            return {
                "marks": page.eval_on_selector_all(
                    "mark", "ms => ms.map(m => [m.textContent, m.dataset.field, m.title, "
                            "m.closest('.doc').dataset.docId])"),
                "text": page.inner_text("body"),
                "images": page.eval_on_selector_all("img", "is => is.map(i => [i.alt, i.naturalWidth])"),
                "pwned": page.evaluate("window.pwned === undefined ? null : window.pwned"),
            }
        finally:
            browser.close()

