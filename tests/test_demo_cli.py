"""`edgefuse demo` (what `make demo` runs): every stage into one folder, every listed file there, the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

PNG = b"\x89PNG\r\n\x1a\n"


def _png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 1000


@pytest.mark.slow
def test_demo_lists_only_files_that_exist_and_ends_with_the_summary(demo_checkpoint, tmp_path, capsys):
    from edgefuse.demo import format_summary, run_demo

    s = run_demo(tmp_path / "demo", progress=False, fast=True, checkpoint=demo_checkpoint)
    listed = [p.split(" (", 1)[0] for p in s["artefacts"]]  # a file, or a folder summarised on one line
    assert listed and all(Path(p).is_file() or (p.endswith("/") and Path(p).is_dir()) for p in listed)
    names = {p.split("/demo/", 1)[1] for p in listed}
    for f in (
        "eval.json",
        "eval.png",
        "bundle/manifest.json",
        "bundle-int8/manifest.json",
        "timeline.json",
        "timeline.png",
        "bench/bench.json",
        "bench/bench.md",
        "bench/peers.png",
        "summary.md",
        "bundle/engines/",
    ):
        assert f in names, f
    assert len(s["subsets"]) == 4 and all(r["fp32"] is not None and r["int8"] is not None for r in s["subsets"])
    phases = s["timeline"]
    assert [p["phase"] for p in phases] == ["nominal", "camera off", "nominal"]
    assert phases[1]["swaps"] >= 1 and "lidar+radar" in phases[1]["engines"]
    assert s["runtime"]["overhead_p50_us"] is not None and s["runtime"]["swap_p99_us"] > 0
    text = format_summary(s)
    assert "| camera+lidar+radar |" in text and "swap on a sensor loss" in text and "artefacts:" in text
    assert _png(tmp_path / "demo" / "timeline.png")
