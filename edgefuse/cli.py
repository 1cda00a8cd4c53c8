"""The ``edgefuse`` command line: each stage (train, eval, export, calibrate, build, run) runs alone from its files."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edgefuse.errors import EdgefuseError
from edgefuse.kernel_options import kernels_arguments


def _cmd_fusions(args: argparse.Namespace) -> int:
    from edgefuse.fusion import FAMILIES

    for name, family in FAMILIES.items():
        print(f"{name:<16}{family}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from edgefuse.data import load_dataset
    from edgefuse.train import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(args.data, seed=args.seed, train_size=args.train_size, val_size=args.val_size)
    cfg = TrainConfig(
        fusion=args.fusion,
        epochs=args.epochs,
        min_steps=args.min_steps,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        dim=args.dim,
        modality_dropout=args.modality_dropout,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        amp=args.amp,
    )
    options = {"train_size": args.train_size, "val_size": args.val_size}
    result = train(data, cfg, out=args.out, source=args.data, data_options=options)
    full = "+".join(data.modality_names)
    p = result.plan
    how = "stopped early" if p["stopped_early"] else "full budget"
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 reports
        print(
            f"trained {args.fusion} in {result.seconds:.1f} s ({p['stopped_at']} of {p['steps']} steps, {how}; kept "
            f"step {result.best_step}); val accuracy all sensors {result.val_subsets[full]:.4f}; checkpoint {args.out}"
        )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from edgefuse._fs import write_json
    from edgefuse.checkpoint import load_checkpoint, load_training_data
    from edgefuse.evaluate import evaluate, format_report, plot_report

    model, doc = load_checkpoint(args.checkpoint)
    data = load_training_data(args.checkpoint, doc, source=args.data, seed=args.seed)
    if data.modality_names != model.names:
        raise EdgefuseError(f"data has modalities {data.modality_names}, the model expects {model.names}")
    report = evaluate(model, data, split=args.split, with_robustness=not args.no_robustness)
    report["checkpoint"] = str(args.checkpoint)
    print(format_report(report))
    if args.baselines:
        from edgefuse.baselines import baselines, format_baselines

        base = baselines(data, split=args.split, seed=int(doc["info"].get("train_config", {}).get("seed", 0)))
        report["baselines"] = base
        print(f"\nbaselines on the same training split ({len(data['train'])} samples), {args.split} accuracy:")
        print(format_baselines(report["subsets"], base, model.fusion_name))
    if args.json:
        write_json(report, args.json)
        print(f"\nwrote {args.json}")
    if args.plot:
        plot_report(report, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _subsets(arg: str | None) -> list[list[str]] | None:
    """'camera,camera+lidar' -> [['camera'], ['camera', 'lidar']]; None -> None (the default set)."""
    return [s.split("+") for s in arg.split(",")] if arg else None


def _cmd_export(args: argparse.Namespace) -> int:
    from edgefuse.checkpoint import data_source, load_checkpoint
    from edgefuse.export import export_model

    model, doc = load_checkpoint(args.checkpoint)
    source, seed = data_source(doc)
    rec = export_model(
        model,
        args.out,
        subsets=_subsets(args.subsets),
        split=args.split,
        source={"checkpoint": str(args.checkpoint), "data": source, "seed": seed},
    )
    for name, g in rec["graphs"].items():
        print(f"{name:<28}{g['file']:<40}max |onnx - torch| {g['max_abs_diff']:.2e}")
    print(f"wrote {len(rec['graphs'])} graphs (opset {rec['opset']}) to {args.out}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from edgefuse.calibration import calibrate_export
    from edgefuse.data import load_dataset
    from edgefuse.export import read_export

    exp = read_export(args.export_dir)
    source = args.data or exp["source"].get("data")
    if not source:
        raise EdgefuseError(f"{args.export_dir}: no data source recorded; pass --data")
    data = load_dataset(source, seed=exp["source"].get("seed", 0))
    rec = calibrate_export(args.export_dir, data, args.out, method=args.method, size=args.size, max_drop=args.max_drop)
    print(f"{'subset':<28}{'fp32':>8}{'int8':>8}{'agree':>8}")
    for k, v in rec["subsets"].items():
        a = v["accuracy"]
        print(f"{k:<28}{a['fp32']:8.4f}{a['int8']:8.4f}{a['agreement']:8.3f}")
    print(
        f"calibrated {len(rec['subsets'])} graphs ({rec['method']}, {rec['size']} samples) in {rec['seconds']:.1f} s "
        f"-> {args.out}"
    )
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from edgefuse.build import build_bundle

    bundle = build_bundle(
        args.checkpoint,
        args.out,
        backend=args.backend,
        precision=args.precision,
        calib_method=args.calib_method,
        calib_size=args.calib_size,
        max_drop=args.max_drop,
        subsets=_subsets(args.subsets),
        trt_max_batch=args.max_batch,
        trt_version=args.trt_version,
        gate_fail=args.gate_fallback or "error",
        split=args.split,
        strict=args.strict,
        latency_profile=args.latency_profile,
        int8_min_weights=args.int8_min_weights,
    )
    m = bundle.manifest
    if bundle.kind == "split":
        return _print_split_build(bundle, args)
    low = m["precision"] if m["precision"] in ("int8", "fp16") else "int8"  # the column of the gated precision
    timed = "latency" in m
    print(f"{'subset':<28}{'engine':<44}{'fp32':>8}{low:>8}" + (f"{'fp32 us':>9}{low + ' us':>9}" if timed else ""))
    for k, v in bundle.subsets.items():
        a = v["accuracy"]
        acc = f"{a[low]:8.4f}" if low in a else f"{'-':>8}"
        why = "".join(
            f"  ({p.upper()} rejected: -{v[p + '_rejected']['drop_points']:.2f} points)"
            for p in ("int8", "fp16")
            if p + "_rejected" in v
        )
        us = ""
        if "latency" in v:
            c = v["latency"]["candidates"]
            us = "".join(f"{c[p]['batch1']['p50_us']:9.0f}" if "batch1" in c[p] else f"{'-':>9}" for p in ("fp32", low))
            if v["latency"]["chosen"] == "fp32" and low + "_rejected" not in v:
                why += f"  ({low.upper()} not faster: kept FP32)"
        print(f"{k:<28}{v['engine']:<44}{a['fp32']:8.4f}{acc}{us}{why}")
    n = len(bundle.subsets)
    kept = sum(1 for v in bundle.subsets.values() if v["precision"] == m["precision"])
    rejected = len(m.get(f"{low}_gate", {}).get("rejected", []))
    if kept == n:
        what = f"{n} {m['backend']} {m['precision']} engines"
    else:
        parts = [f"{kept} {low}"]
        if rejected:
            parts.append(f"{rejected} fp32 after failing the {low.upper()} gate of --max-drop {args.max_drop}")
        if n - kept - rejected:
            parts.append(f"{n - kept - rejected} fp32 where {low.upper()} was not faster")
        what = f"{n} {m['backend']} engines ({', '.join(parts)})"
    if timed:
        what += f"; timed on {m['latency']['source']}"
    print(f"built {what} in {m['build_seconds']:.1f} s -> {args.out}")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from edgefuse._fs import write_json
    from edgefuse.latency import profile

    batches = [int(b) for b in args.batches.split(",")]
    print(f"timing every candidate of {args.folder} on this machine ({args.threads} thread(s), batches {batches}):")
    doc = profile(args.folder, batches=batches, iters=args.iters, threads=args.threads)
    write_json(doc, args.out)
    print(f"wrote {args.out}: pass it to edgefuse build --latency-profile on the host")
    return 0


def _split_engines(m: dict) -> list[tuple[str, dict]]:
    return [(f"encoder {n}", e) for n, e in m["encoders"].items()] + [("head", m["head"])]


def _print_split_build(bundle, args: argparse.Namespace) -> int:
    m = bundle.manifest
    print(f"{'engine':<20}{'file':<44}precision")
    for what, e in _split_engines(m):
        note = "  (INT8 rejected by the gate)" if e.get("int8_rejected") else ""
        print(f"{what:<20}{e['engine']:<44}{e['precision']}{note}")
    print(f"\n{'subset (encoders + head)':<28}{'fp32':>8}{'built':>8}")
    for k, v in bundle.subsets.items():
        a = v["accuracy"]
        print(f"{k:<28}{a['fp32']:8.4f}{a.get(v['precision'], a['fp32']):8.4f}")
    print(
        f"built a split {m['backend']} bundle ({len(m['encoders'])} encoders + a head, serving {len(bundle.subsets)} "
        f"subsets) in {m['build_seconds']:.1f} s -> {args.out}"
    )
    return 0


def _load_run_data(args: argparse.Namespace, bundle):
    """The dataset ``edgefuse run`` / ``record-bag`` replays: --data, else the bundle's recorded one."""
    from edgefuse.data import load_dataset

    recorded = bundle.manifest.get("source", {}) if bundle is not None else {}
    source = args.data or recorded.get("dataset")
    if not source:
        raise EdgefuseError(
            f"{args.bundle}: the bundle does not record its dataset; pass --data sensorscenes or --data FILE.npz"
        )
    seed = args.seed if args.seed is not None else int(recorded.get("seed", 0))
    data = load_dataset(source, seed=seed)
    if bundle is not None and [s.to_dict() for s in data.specs] != [s.to_dict() for s in bundle.specs]:
        raise EdgefuseError(
            f"data {source!r} has sensors {[(s.name, list(s.shape)) for s in data.specs]}, the bundle "
            f"{[(s.name, list(s.shape)) for s in bundle.specs]}"
        )
    return data, {"source": source, "seed": seed, "split": args.split}


def _cmd_run(args: argparse.Namespace) -> int:
    from edgefuse._fs import write_json
    from edgefuse.bundle import load_bundle
    from edgefuse.runtime import Policy, Runtime
    from edgefuse.runtime.scenario import ReplayClock, Scenario, check_timeline, format_timeline, replay

    bundle = load_bundle(args.bundle)  # verified here so that a bad bundle fails before the data is made
    if args.bag and args.scenario:
        raise EdgefuseError("--bag replays a recording and --scenario a dataset: give one of them")
    if args.topic and not args.bag:
        raise EdgefuseError("--topic maps a sensor to a topic of --bag; give --bag too")
    scenario, data, source = None, None, None
    if args.bag:
        from edgefuse.ros.bag import parse_topics

        topics = parse_topics(args.topic) if args.topic else None
        policy = Policy.from_toml(args.policy) if args.policy else None
    else:
        if args.scenario:
            scenario = Scenario.from_toml(args.scenario, bundle.specs)
        else:
            scenario = Scenario(name="nominal", duration_s=args.duration, description="every sensor healthy throughout")
        policy = Policy.from_toml(args.policy) if args.policy else scenario.policy
        data, source = _load_run_data(args, bundle)
    import logging

    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    # the timeline reports every health change and swap; -v also logs them as they happen
    logging.getLogger("edgefuse.runtime").setLevel(logging.INFO if args.verbose else logging.ERROR)
    clock = ReplayClock(realtime=args.realtime)
    with Runtime.from_bundle(args.bundle, policy=policy, clock=clock, threads=args.threads) as rt:
        view = None
        if args.foxglove is not None:
            from edgefuse.live import FoxgloveView

            view = FoxgloveView(rt, port=args.foxglove)
            print(f"Foxglove: connect to ws://localhost:{view.port} (topics /edgefuse/result, /health, /events)")
        if args.realtime:
            what = f"bag {args.bag}" if args.bag else f"{scenario.name!r} ({scenario.duration_s:g} s)"
            print(f"replaying {what} in real time; a line per phase as it ends")

            def on_phase(p):
                acc = "-" if p["accuracy"] is None else f"{p['accuracy']:.3f}"
                print(
                    f"  {p['start_s']:g}-{p['end_s']:g} s  {p['name']}: engines {p['engines']}, accuracy {acc}",
                    flush=True,
                )
        else:
            on_phase = None
        on_infer = view.on_result if view is not None else None
        try:
            if args.bag:
                from edgefuse.ros.bag import replay_bag

                timeline = replay_bag(
                    rt,
                    args.bag,
                    clock,
                    topics=topics,
                    stamp=args.stamp,
                    labels=args.labels,
                    infer_rate_hz=args.infer_rate,
                    phase_s=args.phase_s,
                    on_phase=on_phase,
                    on_infer=on_infer,
                )
            else:
                split = data[args.split]
                timeline = replay(rt, scenario, split.inputs, split.labels, clock, on_phase=on_phase, on_infer=on_infer)
                timeline["data"] = source
        finally:
            if view is not None:
                view.close()
    print(format_timeline(timeline))
    bad = check_timeline(timeline, args.max_drop) if args.max_drop is not None else []
    if args.json:
        write_json(timeline, args.json)
        print(f"\nwrote {args.json}")
    for line in bad:
        print(f"edgefuse run: {line}", file=sys.stderr)
    return 1 if bad else 0


def _cmd_record_bag(args: argparse.Namespace) -> int:
    from edgefuse.bundle import load_bundle
    from edgefuse.ros.bag import parse_topics, record_bag
    from edgefuse.runtime.scenario import Scenario

    bundle = load_bundle(args.bundle) if args.bundle else None
    if bundle is None and not args.data:
        raise EdgefuseError("give --data sensorscenes (or FILE.npz), or a bundle whose dataset to record")
    data, _ = _load_run_data(args, bundle)
    scenario = Scenario.from_toml(args.scenario, data.specs)
    split = data[args.split]
    desc = record_bag(
        scenario,
        data.specs,
        split.inputs,
        split.labels,
        args.out,
        topics=parse_topics(args.topic) if args.topic else None,
        image_encoding=args.image_encoding,
    )
    total = sum(desc["messages"].values())
    print(f"recorded {scenario.name!r} ({scenario.duration_s:g} s, {total} messages) -> {args.out}")
    for topic, n in desc["messages"].items():
        print(f"  {topic:<28}{n:>8}")
    return 0


def _cmd_ros2(args: argparse.Namespace) -> int:
    from edgefuse.ros.node import NodeConfig, run_node
    from edgefuse.runtime import Policy

    config = NodeConfig.from_toml(args.config)
    policy = Policy.from_toml(args.policy) if args.policy else None
    return run_node(args.bundle, config, policy, threads=args.threads)


def _cmd_compare(args: argparse.Namespace) -> int:
    from edgefuse.compare import compare, format_table, write_outputs
    from edgefuse.data import load_dataset

    data = load_dataset(args.data, seed=args.seed)
    options = {k: v for k, v in (("epochs", args.epochs), ("max_steps", args.max_steps), ("dim", args.dim)) if v}
    doc = compare(
        data,
        args.out,
        fusions=args.fusions.split(",") if args.fusions else None,
        seed=args.seed,
        train_options=options,
        calib_size=args.calib_size,
        source=args.data,
    )
    print(format_table(doc))
    for p in write_outputs(doc, args.out):
        print(f"wrote {p}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from edgefuse.demo import format_summary, run_demo

    summary = run_demo(args.out, fast=args.fast)
    print()
    print(format_summary(summary))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from edgefuse.benchmark import bench_bundle, format_markdown, write_outputs

    report = bench_bundle(
        args.bundle,
        batches=[int(b) for b in args.batches.split(",")],
        iters=args.iters,
        warmup=args.warmup,
        duration=args.duration,
        threads=args.threads,
        checkpoint=args.checkpoint,
        eager=not args.no_eager,
        against=args.against,
        swaps=args.swaps,
    )
    print(format_markdown(report))
    if args.out is not None:
        for p in write_outputs(report, args.out):
            print(f"wrote {p}")
    return 0


def _cmd_compile(args: argparse.Namespace) -> int:
    import json

    from edgefuse.engines.trt.compile import PLANS_JSON, compile_bundle

    folder = compile_bundle(
        args.bundle,
        max_batch=args.max_batch,
        workspace_mb=args.workspace_mb,
        tf32=not args.no_tf32,
        hardware_compatible=args.hardware_compatible,
    )
    doc = json.loads((folder / PLANS_JSON).read_text())
    gpu = doc["gpu"]
    print(
        f"{len(doc['plans'])} plans for {gpu['name']} (compute capability {gpu['compute_capability']}), TensorRT "
        f"{doc['tensorrt']}, in {doc['seconds']:.1f} s: {folder}"
    )
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import importlib.util
    import json

    from edgefuse.bundle import load_bundle
    from edgefuse.manifest import engine_accuracy

    bundle = load_bundle(args.bundle)  # verified: schema, checksums, modality names
    m = bundle.manifest
    env = {
        "onnxruntime": None,
        "providers": [],
        **{k: importlib.util.find_spec(k) is not None for k in ("torch", "tensorrt")},
    }
    try:
        import onnxruntime

        env["onnxruntime"], env["providers"] = onnxruntime.__version__, onnxruntime.get_available_providers()
    except ImportError:
        pass
    if args.json:
        print(json.dumps({"bundle": str(bundle.root), "manifest": m, "environment": env}, indent=2))
        return 0
    print(
        f"bundle {bundle.root}: verified ({len(m['files'])} files, sha256), schema {m['schema_version']}, "
        f"built by edgefuse {m.get('edgefuse_version', '?')} on {m.get('created', '?')}"
    )
    print(
        f"  {m.get('fusion', '?')} fusion, backend {m.get('backend')}, precision {m.get('precision')}; "
        f"classes {', '.join(bundle.class_names)}"
    )
    src = m.get("source", {})
    if src:
        print(f"  trained on {src.get('data', '?')}")
    print("sensors:")
    for s in bundle.specs:
        vr = "" if s.value_range is None else f", values in [{s.value_range[0]:g}, {s.value_range[1]:g}]"
        print(f"  {s.name:<12}{s.kind:<8}{str(list(s.shape)):<16}{s.dtype:<9}{s.rate_hz:g} Hz{vr}")
    if bundle.kind == "split":
        print(f"split bundle: {len(m['encoders'])} encoders + a head ({m.get('embedding_dim')}-wide embeddings):")
        for what, e in _split_engines(m):
            print(f"  {what:<20}{e['precision']:<6}{e['engine']}")
        print(f"subsets it serves ({len(bundle.subsets)}; accuracy through encoders + head):")
    else:
        print(f"engines ({len(bundle.subsets)}):")
    for key, e in bundle.subsets.items():
        acc = engine_accuracy(e)
        fp32 = e.get("accuracy", {}).get("fp32")
        note = " (INT8 rejected by the gate)" if "int8_rejected" in e else ""
        file = f"{e['engine']:<46}" if "engine" in e else ""
        print(
            f"  {key:<28}{e['precision']:<6}{file}accuracy {acc if acc is None else f'{acc:.4f}'}"
            f"{'' if fp32 is None else f' (fp32 {fp32:.4f})'}{note}"
        )
    if m.get("backend") == "trt":
        from edgefuse.engines.trt.compile import compiled_targets

        targets = compiled_targets(bundle.root)
        print(
            f"TensorRT plans (built for TensorRT {m.get('trt', {}).get('target_version', '?')}): "
            + (", ".join(targets) if targets else "none yet: run `edgefuse compile BUNDLE` on the device")
        )
    have = ", ".join(k for k in ("torch", "tensorrt") if env[k]) or "neither torch nor tensorrt"
    print(
        f"this machine: onnxruntime {env['onnxruntime'] or 'not installed'} ({', '.join(env['providers']) or '-'}); "
        f"{have}"
    )
    return 0


def _cmd_kernels(args: argparse.Namespace) -> int:
    from edgefuse.kernels.selfcheck import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgefuse", description="Multimodal sensor fusion from PyTorch to edge engines.")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fusions", help="list the fusion strategies")
    f.set_defaults(func=_cmd_fusions)

    t = sub.add_parser("train", help="train a fusion model with modality dropout")
    t.add_argument("--data", default="sensorscenes", help="'sensorscenes' or a .npz file (default: sensorscenes)")
    t.add_argument("--fusion", default="gated", help="fusion strategy (see 'edgefuse fusions'; default: gated)")
    t.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    t.add_argument("--epochs", type=int, default=40, help="passes over the training set (default: 40) ...")
    t.add_argument(
        "--min-steps", type=int, default=1000, help="... but at least this many optimizer steps (default: 1000)"
    )
    t.add_argument("--max-steps", type=int, default=None, help="exactly this many steps (overrides both)")
    t.add_argument("--batch-size", type=int, default=128, help="capped at a quarter of the training set (min 8)")
    t.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (warm-up, then cosine to 0)")
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--dim", type=int, default=64, help="shared embedding width")
    t.add_argument("--modality-dropout", type=float, default=0.5, help="per-modality drop probability while training")
    t.add_argument("--patience", type=int, default=6, help="early stopping: validations without a better loss")
    t.add_argument(
        "--train-size", type=int, default=None, help="keep a stratified sample of this many training samples"
    )
    t.add_argument(
        "--val-size", type=int, default=None, help="keep a stratified sample of this many validation samples"
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    t.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu", help="where to train (default: cpu)")
    t.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="accuracy of every sensor subset and robustness sweeps")
    e.add_argument("checkpoint", type=Path)
    e.add_argument("--data", default=None, help="data source (default: the one the checkpoint was trained on)")
    e.add_argument("--seed", type=int, default=None, help="data seed (default: the training seed)")
    e.add_argument("--split", default="test")
    e.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    e.add_argument("--plot", type=Path, default=None, help="write a PNG of the report (needs matplotlib)")
    e.add_argument("--no-robustness", action="store_true", help="subset accuracies only")
    e.add_argument(
        "--baselines",
        action="store_true",
        help="also train a logistic regression and an MLP per subset on the same split, and compare",
    )
    e.set_defaults(func=_cmd_eval)

    x = sub.add_parser("export", help="one ONNX graph per sensor subset (or --split encoders + fusion head)")
    x.add_argument("checkpoint", type=Path)
    x.add_argument("--out", required=True, type=Path)
    x.add_argument("--split", action="store_true", help="N encoder graphs + 1 fusion-head graph (mid-fusion models)")
    x.add_argument("--subsets", default=None, help="comma-separated subsets, e.g. 'camera,camera+lidar' (default: all)")
    x.set_defaults(func=_cmd_export)

    c = sub.add_parser("calibrate", help="INT8 Q/DQ graphs + TensorRT caches + reports from an export folder")
    c.add_argument("export_dir", type=Path)
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--data", default=None, help="data source (default: the checkpoint's)")
    c.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    c.add_argument("--size", type=int, default=512, help="class-stratified calibration samples")
    c.add_argument("--max-drop", type=float, default=1.0, help="fail if a subset loses more accuracy points")
    c.set_defaults(func=_cmd_calibrate)

    b = sub.add_parser("build", help="export -> calibrate -> engines -> a verified bundle")
    b.add_argument("checkpoint", type=Path)
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--backend", default="ort", choices=["ort", "trt", "torch"])
    b.add_argument("--precision", default="int8", choices=["fp32", "fp16", "int8"])
    b.add_argument("--calib-method", default="minmax", choices=["minmax", "entropy", "percentile"])
    b.add_argument("--calib-size", type=int, default=512)
    b.add_argument(
        "--max-drop",
        type=float,
        default=1.0,
        help="INT8, and FP16 on the torch backend: fail if a subset loses more accuracy points",
    )
    b.add_argument(
        "--gate-fallback",
        "--int8-fallback",
        dest="gate_fallback",
        choices=["fp32"],
        default=None,
        help="INT8 / torch FP16: a subset that fails --max-drop gets an FP32 engine instead of failing the build",
    )
    b.add_argument("--subsets", default=None, help="comma-separated subsets (default: all)")
    b.add_argument(
        "--split",
        action="store_true",
        help="one encoder engine per sensor + one fusion head with a presence mask (mid-fusion models): "
        "serves every subset",
    )
    b.add_argument("--max-batch", type=int, default=32, help="TensorRT: largest batch of the optimisation profile")
    b.add_argument(
        "--trt-version",
        default=None,
        help="TensorRT: the device's version (default 10.3.0, JetPack 6); a calibration cache is written for <= 10",
    )
    b.add_argument(
        "--int8-min-weights",
        type=int,
        default=None,
        help="INT8: quantize only Conv/Gemm/MatMul with this many weights (default: 8192 for ort, 0 (all) for trt)",
    )
    b.add_argument(
        "--strict", action="store_true", help="INT8 wherever it passes the gate, even where FP32 is faster here"
    )
    b.add_argument(
        "--latency-profile",
        type=Path,
        default=None,
        help="timings from the target device (edgefuse profile) instead of timing on this machine",
    )
    b.set_defaults(func=_cmd_build)

    r = sub.add_parser("run", help="replay a dataset as timed sensor streams with scripted faults through the runtime")
    r.add_argument("bundle", type=Path)
    r.add_argument(
        "--scenario",
        type=Path,
        default=None,
        help="fault scenario (TOML; see scenarios/ and docs/runtime.md). Default: every sensor healthy for --duration",
    )
    r.add_argument("--duration", type=float, default=60.0, help="seconds to replay without --scenario (default: 60)")
    r.add_argument("--data", default=None, help="'sensorscenes' or a .npz file (default: the bundle's dataset)")
    r.add_argument("--seed", type=int, default=None, help="data seed (default: the bundle's)")
    r.add_argument("--split", default="test", help="the split to replay (default: test)")
    r.add_argument(
        "--policy",
        type=Path,
        default=None,
        help="runtime policy (TOML; default: the scenario's [policy], else defaults)",
    )
    r.add_argument(
        "--realtime", action="store_true", help="pace the replay on the real clock (default: simulated time, fast)"
    )
    r.add_argument("--threads", type=int, default=1, help="intra-op threads per engine (default: 1)")
    r.add_argument("--json", type=Path, default=None, help="write the timeline as JSON")
    r.add_argument(
        "--max-drop",
        type=float,
        default=None,
        help="exit 1 if a phase's accuracy is below the manifest accuracy of its engines minus this (e.g. 0.03)",
    )
    r.add_argument("-v", "--verbose", action="store_true", help="log each health change and swap as it happens")
    rb = r.add_argument_group("ROS 2 bags (pip install 'edgefuse[ros]'; see docs/ros.md)")
    rb.add_argument("--bag", type=Path, default=None, help="replay a ROS 2 bag (.mcap, .db3, or a bag folder)")
    rb.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="SENSOR=/TOPIC",
        help="the topic feeding a sensor (repeat per sensor; default for bags edgefuse recorded: theirs)",
    )
    rb.add_argument(
        "--stamp",
        choices=("header", "receive"),
        default="header",
        help="frame timestamps from header.stamp (default) or the receive time",
    )
    rb.add_argument(
        "--labels", default=None, help="a std_msgs/Int32 label topic of the bag, or a CSV of stamp_ns,label rows"
    )
    rb.add_argument(
        "--infer-rate", type=float, default=None, help="without labels: infer at this rate (default: slowest sensor's)"
    )
    rb.add_argument("--phase-s", type=float, default=None, help="cut the timeline into windows of this many seconds")
    r.add_argument(
        "--foxglove",
        type=int,
        nargs="?",
        const=8765,
        default=None,
        metavar="PORT",
        help="serve results, health and events to Foxglove over WebSocket (default port 8765; needs edgefuse[live])",
    )
    r.set_defaults(func=_cmd_run)

    rec = sub.add_parser("record-bag", help="write a fault scenario's sensor streams as a ROS 2 bag (MCAP or .db3)")
    rec.add_argument("--scenario", type=Path, required=True, help="fault scenario (TOML)")
    rec.add_argument("--out", type=Path, required=True, help="X.mcap or X.db3 (one file), or a folder (rosbag2)")
    rec.add_argument("--data", default=None, help="'sensorscenes' or a .npz file (default: the bundle's dataset)")
    rec.add_argument("--bundle", type=Path, default=None, help="record the dataset this bundle was built from")
    rec.add_argument("--seed", type=int, default=None, help="data seed (default: the bundle's, else 0)")
    rec.add_argument("--split", default="test", help="the split to record (default: test)")
    rec.add_argument("--topic", action="append", default=[], metavar="SENSOR=/TOPIC", help="a sensor's topic")
    rec.add_argument(
        "--image-encoding",
        choices=("32FC", "8UC"),
        default="32FC",
        help="images as 32-bit floats (exact; default) or 8 bits per channel (rgb8/mono8)",
    )
    rec.set_defaults(func=_cmd_record_bag)

    ros = sub.add_parser("ros2", help="run the runtime as a ROS 2 node (needs rclpy: a sourced ROS 2)")
    ros.add_argument("bundle", type=Path)
    ros.add_argument("--config", type=Path, required=True, help="topics and rates (TOML; see docs/ros.md)")
    ros.add_argument("--policy", type=Path, default=None, help="runtime policy (TOML)")
    ros.add_argument("--threads", type=int, default=1, help="intra-op threads per engine (default: 1)")
    ros.set_defaults(func=_cmd_ros2)

    pr = sub.add_parser(
        "profile", help="time the candidate engines of a calibration/export folder or bundle on this device"
    )
    pr.add_argument("folder", type=Path, help="edgefuse calibrate's output (FP32 and INT8), an export, or a bundle")
    pr.add_argument("--out", type=Path, required=True, help="the profile (JSON) for edgefuse build --latency-profile")
    pr.add_argument("--batches", default="1,32", help="batch sizes to time (default: 1,32; batch 1 decides)")
    pr.add_argument("--iters", type=int, default=300, help="timed runs of each graph per batch (default: 300)")
    pr.add_argument("--threads", type=int, default=1, help="intra-op threads (default: 1)")
    pr.set_defaults(func=_cmd_profile)

    dm = sub.add_parser(
        "demo",
        help="the main job end to end: train, evaluate, build, replay a sensor dropout, benchmark, one summary",
    )
    dm.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder for every artefact (runs/demo)")
    dm.add_argument(
        "--fast",
        action="store_true",
        help="300 training steps, short timings, 4 subsets: checks the pipeline, not the model",
    )
    dm.set_defaults(func=_cmd_demo)

    cm = sub.add_parser(
        "compare",
        help="every fusion strategy on the same data and seed: accuracy, robustness, size, MACs, FP32/INT8 latency",
    )
    cm.add_argument("--data", default="sensorscenes", help="'sensorscenes' or a .npz file (default: sensorscenes)")
    cm.add_argument("--out", type=Path, default=Path("runs/compare"), help="results folder (a rerun resumes there)")
    cm.add_argument("--fusions", default=None, help="comma-separated strategies (default: every one)")
    cm.add_argument("--seed", type=int, default=0)
    cm.add_argument("--epochs", type=int, default=None, help="training epochs (default: edgefuse train's)")
    cm.add_argument("--max-steps", type=int, default=None, help="exactly this many training steps")
    cm.add_argument("--dim", type=int, default=None, help="fusion width (default: edgefuse train's, 64)")
    cm.add_argument("--calib-size", type=int, default=256)
    cm.set_defaults(func=_cmd_compare)

    be = sub.add_parser(
        "bench",
        help="latency of every engine of a bundle beside plain ONNX Runtime and PyTorch eager, cold start, "
        "runtime overhead and swaps (JSON, Markdown, plots)",
    )
    be.add_argument("bundle", type=Path)
    be.add_argument("--out", type=Path, default=None, help="folder for bench.json, bench.md and the plots")
    be.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes (default 1,8,32)")
    be.add_argument("--iters", type=int, default=200, help="interleaved rounds per engine and batch (default 200)")
    be.add_argument("--warmup", type=int, default=20, help="calls per engine before timing (default 20)")
    be.add_argument(
        "--duration",
        type=float,
        default=None,
        help="MLPerf SingleStream style: batch 1, this many seconds and >= 1024 queries per engine; p90 headline",
    )
    be.add_argument("--threads", type=int, default=1, help="intra-op threads of every engine (default 1)")
    be.add_argument("--checkpoint", type=Path, default=None, help="for the PyTorch eager peer (default: the bundle's)")
    be.add_argument("--no-eager", action="store_true", help="leave out the PyTorch eager peer")
    be.add_argument(
        "--against", type=Path, default=None, help="a second bundle of the same model, timed in the same run"
    )
    be.add_argument("--swaps", type=int, default=50, help="swaps per sensor for the swap latency (default 50)")
    be.set_defaults(func=_cmd_bench)

    co = sub.add_parser(
        "compile",
        help="on the device: build a TensorRT bundle's plans for this GPU and TensorRT (needs tensorrt, cuda-python)",
    )
    co.add_argument("bundle", type=Path)
    co.add_argument("--max-batch", type=int, default=None, help="largest batch (default: the bundle's --max-batch)")
    co.add_argument("--workspace-mb", type=int, default=1024)
    co.add_argument(
        "--no-tf32",
        action="store_true",
        help="FP32 layers in full FP32 (TensorRT uses TF32 by default), as ONNX Runtime computes them",
    )
    co.add_argument(
        "--hardware-compatible",
        action="store_true",
        help="plans for any Ampere-or-newer discrete GPU (slower; TensorRT does not offer it on Jetson)",
    )
    co.set_defaults(func=_cmd_compile)

    i = sub.add_parser("info", help="verify a bundle and show its sensors, engines and accuracies")
    i.add_argument("bundle", type=Path)
    i.add_argument("--json", action="store_true", help="print the manifest and this machine's engines as JSON")
    i.set_defaults(func=_cmd_info)

    k = sub.add_parser(
        "kernels", help="can the fused Triton kernels run here, are they right here, how fast (--check, --bench)"
    )
    kernels_arguments(k)
    k.set_defaults(func=_cmd_kernels)
    return p


#: a module a verb needs -> the extra that installs it
EXTRAS = {
    "torch": "build",
    "onnx": "build",
    "onnxscript": "build",
    "tqdm": "build",
    "triton": "gpu",
    "matplotlib": "plot",
    "tensorrt": "trt",
    "cuda": "trt",
    "rosbags": "ros",
    "PIL": "ros",
    "foxglove": "live",
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as e:
        root = (e.name or "").split(".")[0]
        if root not in EXTRAS:
            raise
        print(
            f"edgefuse {args.command}: needs {root}, which this install lacks: pip install 'edgefuse[{EXTRAS[root]}]'",
            file=sys.stderr,
        )
        return 2
    except EdgefuseError as e:
        print(f"edgefuse {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
