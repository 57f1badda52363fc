"""scripts/gpu_check.py in its CPU smoke mode: every part runs (or says why it cannot) on a tiny model."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_smoke_mode(tmp_path, shared_data, monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    monkeypatch.setenv("LORAT_SHARED", str(shared_data.parent))
    assert gpu_check.main(["--smoke", "--out", str(tmp_path)]) == 0  # no part failed
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    parts = report["parts"]
    assert {k: v["status"] for k, v in parts.items()} == {
        "memory and speed": "ok", "DeepSpeed": "skipped", "int8 / nf4": "ok", "fp16, compile + resume": "skipped",
        "tracking FPS": "ok", "xformers vs SDPA": "skipped"}
    assert all(parts[k]["reason"] for k in ("DeepSpeed", "fp16, compile + resume", "xformers vs SDPA"))
    memory = parts["memory and speed"]["rows"]
    assert [r["options"] for r in memory] == ["none", "max"]
    assert all(r["estimate GiB"] > 0 and r["pairs/s"] > 0 and r["loss finite"] for r in memory)
    quantized = {r["frozen"]: r for r in parts["int8 / nf4"]["rows"]}
    assert set(quantized) == {"bf16", "int8", "nf4"} and quantized["nf4"]["merge max |diff|"] < 0.1
    assert parts["tracking FPS"]["rows"][0]["end-to-end fps"] > 0
    md = (tmp_path / "gpu_check.md").read_text()
    assert "## DeepSpeed: skipped" in md and "| S-224 | max | 2 |" in md
