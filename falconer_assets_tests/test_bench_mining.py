"""The mining throughput benchmark: the FLOPs formula by hand, the sharded corpus, the report, and ``--quick`` for real.

``test_mining_quick`` runs ``python -m falconer_assets.bench mining --quick`` with the real proxy and the
real embedded LLM (marked ``slow``; about 2-3 minutes on 2 cores).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from falconer_assets.bench import mining, mining_report
from falconer_assets.bench.mining_worker import first_documents
from falconer_assets.bench.roofline import EncoderDims, batch_flops, flops_per_token, sequence_flops

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "build_debian_corpus.py"
MINILM = EncoderDims(layers=6, hidden=384, intermediate=1536, num_labels=3)


def _builder():
    spec = importlib.util.spec_from_file_location("build_debian_corpus_for_shards", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def test_flops_per_token_by_hand():
    # MiniLM-L6 (all-MiniLM-L6-v2's config) at L = 256, per layer and token:
    qkvo = 4 * 2 * 384 * 384          # Q, K, V, output projections: 1,179,648
    ffn = 2 * 2 * 384 * 1536          # up and down projections:     2,359,296
    attn = 2 * 2 * 256 * 384          # Q K^T and A V over 256 keys:   393,216
    head = 2 * 384 * 3                # O/B/I classifier, once:          2,304
    assert qkvo + ffn + attn == 3_932_160
    assert flops_per_token(MINILM, 256) == 6 * 3_932_160 + head == 23_595_264
    # a whole sequence: the attention term is quadratic in its length
    assert sequence_flops(MINILM, 100) == 100 * (6 * (qkvo + ffn) + head) + 6 * 4 * 100 * 100 * 384
    assert sequence_flops(MINILM, 0) == 0
    # a padded batch: useful work at each sequence's own length, executed work at the padded length
    useful, executed = batch_flops(MINILM, [100, 256], 256)
    assert useful == sequence_flops(MINILM, 100) + sequence_flops(MINILM, 256)
    assert executed == 2 * sequence_flops(MINILM, 256) > useful
    with pytest.raises(ValueError):
        flops_per_token(MINILM, 0)


def test_encoder_dims_from_the_proxy_config():
    from transformers import AutoConfig

    from falconer_assets.proxy.model import default_base_model

    dims = EncoderDims.from_config(AutoConfig.from_pretrained(default_base_model()))
    assert (dims.layers, dims.hidden, dims.intermediate) == (6, 384, 1536)


def test_batch_sizes_are_the_mined_assets():
    from falconer_assets.assets.mined import MiningConfig
    from falconer_assets.resources.proxy import ProxyResource

    assert mining.MINED_BATCH_SIZE == MiningConfig().batch_size
    assert mining.INFERENCE_BATCH_SIZE == ProxyResource().inference_batch_size


def _stanzas(n: int) -> tuple[str, str]:
    tr, pk = [], []
    for i in range(n):
        md5 = f"{i:032x}"
        tr.append(f"Package: pkg{i:03d}\nDescription-md5: {md5}\nDescription-en: tool number {i}\n"
                  f" Package {i} does one useful thing, described in more than forty characters.\n")
        pk.append(f"Package: pkg{i:03d}\nDescription: tool number {i}\nDescription-md5: {md5}\nSection: utils\n")
    return "\n".join(tr), "\n".join(pk)


def test_shards_hold_the_whole_archive_once(tmp_path):
    builder = _builder()
    tr, pk = _stanzas(23)
    (tmp_path / "tr").write_text(tr)
    (tmp_path / "pk").write_text(pk)
    src = ["--translations", str(tmp_path / "tr"), "--packages", str(tmp_path / "pk")]
    assert builder.main(src + ["--full", "--out", str(tmp_path / "all.jsonl")]) == 0
    everything = (tmp_path / "all.jsonl").read_text().splitlines()
    folder = tmp_path / "debian_full"
    assert builder.main(src + ["--shards", "7", "--out", str(folder)]) == 0
    files = sorted(folder.glob("*.jsonl"))
    assert [f.name for f in files] == [f"debian_full_{i:02d}.jsonl" for i in range(7)]
    parts = [f.read_text().splitlines() for f in files]
    assert sorted(len(p) for p in parts) == [3, 3, 3, 3, 3, 4, 4] and [len(p) for p in parts][:2] == [4, 4]
    lines = [line for p in parts for line in p]
    assert sorted(lines) == sorted(everything)  # same records, same format, each once
    assert lines != sorted(lines)  # shuffled: a prefix is a sample, not the first ids
    # deterministic; a run with fewer shards removes the stale files
    assert builder.main(src + ["--shards", "7", "--out", str(folder)]) == 0
    assert [f.read_text().splitlines() for f in sorted(folder.glob("*.jsonl"))] == parts
    assert builder.main(src + ["--shards", "2", "--out", str(folder)]) == 0
    assert sorted(f.name for f in folder.glob("*.jsonl")) == ["debian_full_00.jsonl", "debian_full_01.jsonl"]
    # the bench reads the first N documents in shard order, then line order
    docs, rejected = first_documents(folder, 15)
    first = [json.loads(line)["id"] for line in (folder / "debian_full_00.jsonl").read_text().splitlines()]
    assert [d.id for d in docs] == (first + [json.loads(line)["id"] for line in
                                             (folder / "debian_full_01.jsonl").read_text().splitlines()])[:15]
    assert rejected == 0
    with pytest.raises(SystemExit):
        builder.main(src + ["--shards", "2", "--n", "5", "--out", str(folder)])


def _point(task: str, docs: int, seconds: float, **extra) -> dict:
    tokens = 120 * docs
    useful = tokens * flops_per_token(MINILM, 120)
    return {"task": task, "size": docs, "docs": docs, "wall_s": seconds, "docs_per_s": docs / seconds,
            "tokens_per_s": tokens / seconds, "real_tokens": tokens, "sequences": docs, "forward_s": 0.9 * seconds,
            "flops_useful": useful, "flops_executed": 1.2 * useful, "gflops": useful / seconds / 1e9,
            "forward_gflops": useful / (0.9 * seconds) / 1e9, "peak_rss_mib": 800 + docs / 100, "rss_before_mib": 400,
            "loadavg_start": 1.0, "loadavg_end": 1.0, "dims": MINILM.as_dict(), "max_length": 256, **extra}


def test_report_from_results(tmp_path):
    results = {"settings": {"sizes": [1000, 4000], "threads": 2, "batch_size": 512, "inference_batch_size": 64,
                            "matmul_seconds": 0.3, "matmul_repeats": 3},
               "machine": {"cpu": "test cpu", "cores": 2, "torch": "x"},
               "corpus": {"path": "c", "lines": 63_000, "note": "`c`: test"},
               "roofline": {"threads": 2, "fp32": [{"shape": "s", "gflops": 100.0}],
                            "int8": [{"shape": "s", "method": "torch._int_mm", "gops": 400.0}],
                            "fp32_peak_gflops": 100.0, "int8_peak_gops": 400.0, "int8_peak_method": "torch._int_mm"},
               "tasks": {"t": {"proxy": "fine-tuned checkpoint x", "llm": {
                   "docs": 50, "calls": 60, "llm_seconds": 200.0, "docs_per_s": 0.25, "prompt_tokens_per_s": 30.0,
                   "cached_calls": 0, "wall_s": 200.0, "model": "m"}}},
               "points": [_point("t", 1000, 50.0), _point("t", 4000, 200.0)]}
    assert mining_report.scaling_exponent(results["points"]) == pytest.approx(1.0)
    s32, s8 = mining_report.shares(results["points"][1], results["roofline"])
    assert s32 == pytest.approx(results["points"][1]["gflops"] / 100.0) and s8 == pytest.approx(s32 / 4)
    mining_report.write(results, tmp_path)
    md = (tmp_path / "mining.md").read_text()
    assert "| t | fine-tuned | 4,000 | 3 min | 20.0 | 2,400 | 90% |" in md
    assert "n * (8*h^2 + 4*h*i + 4*L*h) + 2*h*c" in md and "23.60 MFLOP/token" in md
    assert "80x" in md  # 20 docs/s against the LLM's 0.25
    assert (tmp_path / "mining.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_mining_quick(tmp_path):
    """The documented quick command: real proxy mining in fresh processes, the LLM on 5 docs, the matmul roofline."""
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = [sys.executable, "-m", "falconer_assets.bench", "mining", "--quick", "--out", str(out), "--work", str(work)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Loading weights" not in proc.stdout + proc.stderr  # library noise stays in the worker logs
    result = json.loads((out / "mining.json").read_text())
    points = result["points"]
    assert [(p["task"], p["size"]) for p in points] == [("debian_game_genres", s) for s in mining.QUICK.sizes]
    roof = result["roofline"]
    assert roof["fp32_peak_gflops"] > 0
    for p in points:
        assert p["docs"] == p["size"] and p["docs_per_s"] > 0 and p["tokens_per_s"] > 0 and p["peak_rss_mib"] > 0
        assert p["peak_rss_mib"] >= p["rss_before_mib"] > 0 and p["real_tokens"] <= p["padded_tokens"]
        assert 0 < p["forward_s"] <= p["wall_s"] and p["flops_useful"] <= p["flops_executed"]
        s32, s8 = mining_report.shares(p, roof)
        assert 0 < s32 <= 1 and (s8 is None or 0 < s8 <= 1)
    llm = result["tasks"]["debian_game_genres"]["llm"]
    assert llm["docs"] == mining.QUICK.llm_docs and llm["calls"] >= llm["docs"] and llm["docs_per_s"] > 0
    assert points[-1]["docs_per_s"] > llm["docs_per_s"]
    md = (out / "mining.md").read_text()
    assert "| debian_game_genres |" in md and "share of fp32 peak" in md and "## Reading" in md
    assert (out / "mining.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a re-run measures nothing again
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "kept" in again.stdout and "mining in a fresh process" not in again.stdout
    assert json.loads((out / "mining.json").read_text())["points"] == points
