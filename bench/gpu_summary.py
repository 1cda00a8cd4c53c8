"""One page over a GPU check's results: ``summary.md`` beside them, the file to read first.

``bench/gpu_check.sh`` leaves about fourteen files under ``$OUT`` (test logs, JSON, a plot).
This reads them and writes ``$OUT/summary.md``: the machine, the kernel tests compiled on it,
the issue's bar with the number behind each verdict, every op's timings per batch (do_bench,
CUDA graph, per call synchronized), what to retune, the trained model's check and timings,
and the random cases against the references. A step that left no result (skipped, timed out,
failed) is named, with the log that says why. It reads; it runs nothing.

    python bench/gpu_summary.py bench/results/local        # the folder gpu_check.sh wrote
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

#: kernels.json's timing modes, in the order every table gives them: do_bench, CUDA graph, per call synchronized
MODES = ("stream", "graph", "sync")


def _load(path: Path) -> tuple[dict | None, str | None]:
    """(the JSON document, None), or (None, why there is none)."""
    if not path.exists():
        return None, f"no {path.name}"
    try:
        return json.loads(path.read_text()), None
    except (OSError, ValueError) as e:
        return None, f"{path.name} is unreadable ({type(e).__name__}: {e})"


def _not_run(why: str, log: str) -> list[str]:
    return [f"Not run or not finished: {why}; see `{log}`.", ""]


def _us(x) -> str:
    return "–" if x is None else f"{x:.1f}"


def _x(x) -> str:
    return "–" if x is None else f"{x:.2f}×"


def machine(out: Path) -> list[str]:
    env = out / "env.txt"
    if not env.exists():
        return _not_run("no env.txt", "env.txt")
    lines = [line for line in env.read_text().splitlines() if line.strip()]
    return [f"    {line}" for line in lines[:3]] + [""]


def kernel_tests(out: Path) -> list[str]:
    path = out / "kernel_tests.xml"
    if not path.exists():
        return _not_run("no kernel_tests.xml", "kernel_tests.log")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        return _not_run(f"kernel_tests.xml is unreadable ({e})", "kernel_tests.log")
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    count = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    seconds = sum(float(s.get("time", 0)) for s in suites)
    passed = count["tests"] - count["failures"] - count["errors"] - count["skipped"]
    lines = [
        f"{count['tests']} tests in {seconds:.0f} s: {passed} passed, {count['failures']} failed, "
        f"{count['errors']} errors, {count['skipped']} skipped.",
        "",
    ]
    groups: dict[str, list[str]] = {}  # one cause fails many parametrisations: grouped by message
    for s in suites:
        for case in s.iter("testcase"):
            for child in case:
                if child.tag in ("failure", "error"):
                    message = f"{child.tag}: " + " ".join((child.get("message") or "").split())[:300]
                    groups.setdefault(message, []).append(f"{case.get('classname')}::{case.get('name')}")
    ranked = sorted(groups.items(), key=lambda kv: -len(kv[1]))
    for message, tests in ranked[:10]:
        more = f" and {len(tests) - 3} more" if len(tests) > 3 else ""
        lines.append(f"- {len(tests)} × {message}  \n  e.g. " + ", ".join(f"`{t}`" for t in tests[:3]) + more)
    if len(ranked) > 10:
        lines.append(
            f"- and {sum(len(t) for _, t in ranked[10:])} more with {len(ranked) - 10} other messages "
            "(kernel_tests.log)"
        )
    return lines + ([""] if groups else [])


def bar(doc: dict) -> list[str]:
    items = doc.get("bar") or {}
    if not items:
        return ["No bar item was measured (kernels.json has none; see `bench.log`).", ""]
    lines = [
        "| bar item | needs | measured | verdict | with the fastest measured configuration | per call, synchronized |",
        "|---|---|---|---|---|---|",
    ]
    for name, item in items.items():
        need = item.get("need")  # (absent from the files of bench_kernels.py before it wrote one: the name says it)
        if "fraction" in item:  # a share of the copy bandwidth
            need, got, best = (
                "–" if need is None else f"≥ {need:.0%}",
                f"{item['fraction']:.0%}",
                f"{item['fraction_best_config']:.0%}",
            )
            configs, sync = item.get("best_config", "default"), "–"
        else:  # a speedup
            need, got, best = (
                "–" if need is None else f"≥ {need:g}×",
                _x(item["min_speedup_stream"]),
                _x(item["min_speedup_stream_best_config"]),
            )
            configs = ", ".join(f"{k}: {v}" for k, v in item.get("best_configs", {}).items()) or "default"
            sync = _x(item.get("min_speedup_sync_edge_batches"))
        verdict = "pass" if item["pass"] else "**FAIL**"
        best_verdict = "pass" if item["pass_with_best_config"] else "fail"
        lines.append(f"| `{name}` | {need} | {got} | {verdict} | {best} ({best_verdict}; {configs}) | {sync} |")
    lines += ["", "Speedups are the smallest over the item's rows, their verdicts read do_bench.", ""]
    for name, item in items.items():
        if item.get("reading") == "cold":  # a share of the copy bandwidth, read without do_bench's flush
            lines += [
                f"`{name}` reads the cold timing ({item['fraction']:.0%}; `bench_kernels._cold_us`: one CUDA graph "
                "over copies of the inputs 4x the L2, so nothing is reused, and no flush to pay for). do_bench reads "
                f"{item['fraction_stream']:.0%}: its flush leaves the L2 full of dirty lines that an op this size pays "
                "to write back."
                + (
                    f" A plain copy of the same bytes reaches {item['copy_same_bytes_fraction_stream']:.0%} "
                    f"there, and {item['copy_same_bytes_fraction_cold']:.0%} cold."
                    if "copy_same_bytes_fraction_cold" in item
                    else ""
                ),
                "",
            ]
    public = [(name, item) for name, item in items.items() if "public_op_min_speedup_stream" in item]
    if public:  # what a fusion module's call gets: the kernel plus the ops layer's dispatch
        lines += [
            f"Through the public op (`edgefuse.kernels.ops`, what the fusion modules call), `{name}` reads "
            f"{_x(item['public_op_min_speedup_stream'])} do_bench, {_x(item.get('public_op_min_speedup_sync'))} "
            "per call synchronized."
            for name, item in public
        ] + [""]
    return lines


def timings(doc: dict) -> list[str]:
    results = doc.get("results") or []
    if not results:
        return []
    lines = [
        "µs per call, median, as do_bench / CUDA graph / per call synchronized (– not timed). "
        "Speedups are the other's time over Triton's.",
        "",
    ]
    for op in dict.fromkeys(r["op"] for r in results):
        rows = [r for r in results if r["op"] == op]
        variants = [v for v in ("triton", "op", "eager", "compile") if any(v in r["timings"] for r in rows)]
        others = [v for v in ("eager", "compile") if v in variants]
        lines += [
            f"**{op}**",
            "",
            "| B | D | "
            + " | ".join("public op" if v == "op" else v for v in variants)
            + " | "
            + " | ".join(f"vs {v}" for v in others)
            + " |",
            "|---|---|" + "---|" * (len(variants) + len(others)),
        ]
        for r in rows:
            cells = [" / ".join(_us(r["timings"].get(v, {}).get(m, {}).get("us")) for m in MODES) for v in variants]
            cells += [" / ".join(_x(r.get("speedup", {}).get(f"vs_{v}_{m}")) for m in MODES) for v in others]
            lines.append(f"| {r['B']} | {r['D']} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def retune(doc: dict) -> list[str]:
    rows = doc.get("retune") or []
    if not rows:
        return [
            "No alternative launch configuration beat a default by more than 10 % in both do_bench and the CUDA graph.",
            "",
        ]
    return [
        f"- {r['op']} B={r['B']} D={r['D']}: `{r['better']}` {r['config']} instead of {r['default']} "
        f"({_x(r['speedup']['stream'])} do_bench, {_x(r['speedup']['graph'])} CUDA graph)"
        for r in rows
    ] + [""]


def launch_overhead(doc: dict) -> list[str]:
    lines = [
        "| launcher | launches | alone | with edgefuse's launch | through Triton's run | the public op (its dispatch) "
        "|",
        "|---|---|---|---|---|---|",
    ]
    for name, r in doc.get("results", {}).items():
        if r.get("kernel_launches"):
            public = f"{_us(r.get('ops_us'))} ({_us(r.get('dispatch_us'))})" if "ops_us" in r else "–"
            lines.append(
                f"| `{name}` | {r['kernel_launches']} | {_us(r.get('host_us'))} | {_us(r.get('launch_us'))} | "
                f"{_us(r.get('triton_run_us'))} | {public} |"
            )
    return lines + ["", "Host µs per call on this machine's CPU, the CUDA driver's launch call not included.", ""]


def model(doc: dict) -> list[str]:
    lines = []
    check = doc.get("check")
    if check:
        cases = check.get("cases", [])
        bad = [c for c in cases if not c["ok"]]
        ops = ", ".join(f"{k} ×{v}" for k, v in check.get("fused_ops_per_forward", {}).items()) or "none"
        lines += [
            f"Check: {len(cases) - len(bad)} of {len(cases)} sensor-subset cases pass (fused ops per forward: {ops}).",
            "",
        ]
        lines += [
            f"- FAIL `{c['case']}`: {c.get('error') or 'error/tolerance ' + str(c.get('error_over_tolerance'))}"
            for c in bad
        ]
        lines += [""] if bad else []
    rows = doc.get("bench") or []
    if rows:
        lines += [
            "A forward's µs, median, as do_bench / CUDA graph / per call synchronized, with its fused ops on "
            "the kernels and on the reference ops.",
            "",
            "| subset | B | kernels µs | reference ops µs | speedup |",
            "|---|---|---|---|---|",
        ]
        suffixes = ("", "_graph", "_sync")  # edgefuse kernels' keys for do_bench, CUDA graph, per call
        for r in rows:
            tri = " / ".join(_us(r.get(f"triton{k}_us")) for k in suffixes)
            ref = " / ".join(_us(r.get(f"eager{k}_us")) for k in suffixes)
            sp = " / ".join(_x(r.get(key)) for key in ("speedup", "graph_speedup", "sync_speedup"))
            lines.append(f"| {r.get('subset')} | {r['B']} | {tri} | {ref} | {sp} |")
        lines.append("")
    return lines


def fuzz(doc: dict) -> list[str]:
    worst = (
        ", ".join(
            f"{op} {v['worst_error_over_tolerance']:.2f}"
            for op, v in doc.get("by_op", {}).items()
            if v.get("worst_error_over_tolerance") is not None
        )
        or "–"
    )
    lines = [
        f"{doc['cases']} cases in {doc['seconds']} s ({doc['device']}), **{doc['failed']} failed**; "
        f"worst error/tolerance per op: {worst}.",
        "",
    ]
    for f in doc.get("failures", [])[:5]:
        what = {k: v for k, v in f.items() if k not in ("layouts", "error", "ok", "seconds")}
        lines.append(f"- {what}: {f.get('error') or 'error/tolerance ' + str(f.get('error_over_tolerance'))}")
    if doc.get("failed", 0) > 5:
        lines.append(f"- and {doc['failed'] - 5} more")
    if doc.get("failures"):
        device = "cuda" if str(doc.get("device", "")).startswith("cuda") else "cpu"
        lines.append(
            f"- to rerun one: `python tools/fuzz_kernels.py --layer {doc.get('layer')} --seed {doc.get('seed')} "
            f"--device {device} --only INDEX`"
        )
    return lines + ([""] if doc.get("failures") else [])


def summarize(out: Path) -> str:
    """The summary of the GPU check results in ``out``, as Markdown."""
    lines = [
        "# GPU check",
        "",
        "## Machine",
        "",
        *machine(out),
        "## Kernel tests, compiled on the GPU",
        "",
        *kernel_tests(out),
    ]
    kernels, why = _load(out / "kernels.json")
    lines += ["## The issue's bar (`kernels.json`)", ""]
    if kernels is None:
        lines += _not_run(why, "bench.log")
    else:
        if kernels.get("dry_run"):
            lines += ["**A dry run: these numbers measure nothing.**", ""]
        items = (kernels.get("bar") or {}).values()
        if items:
            lines += [
                f"**{sum(i['pass'] for i in items)} of {len(items)} bar items pass** "
                f"({sum(i['pass_with_best_config'] for i in items)} with the fastest measured configurations). "
                f"Plot: `kernels.png`.",
                "",
            ]
        lines += [
            f"{kernels.get('gpu')}, {kernels.get('dtype')}; device copy bandwidth "
            f"{kernels.get('copy_bandwidth_GBps', 0):.0f} GB/s; {kernels.get('seconds', 0):.0f} s.",
            "",
        ]
        lines += bar(kernels)
        for step, error in (kernels.get("errors") or {}).items():
            lines.append(f"- step `{step}` failed: {error}")
        lines += ["## Timings", "", *timings(kernels), "## Retune", "", *retune(kernels)]
    overhead, why = _load(out / "launch_overhead.json")
    lines += ["## Host time of the launchers (`launch_overhead.json`)", ""]
    lines += _not_run(why, "launch_overhead.log") if overhead is None else launch_overhead(overhead)
    for dtype in ("float32", "float16"):
        doc, why = _load(out / f"model_{dtype}.json")
        lines += [f"## A trained model in {dtype} (`model_{dtype}.json`)", ""]
        lines += _not_run(why, "model.log") if doc is None else model(doc)
    for name, log in (("fuzz.json", "fuzz.log"), ("fuzz_ops.json", "fuzz_ops.log")):
        doc, why = _load(out / name)
        lines += [f"## Random cases against the references (`{name}`)", ""]
        lines += _not_run(why, log) if doc is None else fuzz(doc)
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="the folder bench/gpu_check.sh wrote ($OUT)")
    args = p.parse_args(argv)
    if not args.out.is_dir():
        print(
            f"gpu_summary: expected the folder bench/gpu_check.sh wrote, got {str(args.out)!r} (not a folder)",
            file=sys.stderr,
        )
        return 2
    text = summarize(args.out)
    (args.out / "summary.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
