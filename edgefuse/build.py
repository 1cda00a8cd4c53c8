"""Build: checkpoint -> export -> (calibrate + gate) -> engines -> one verified bundle.

``edgefuse build CHECKPOINT --backend ort|trt|torch --precision fp32|fp16|int8 --out BUNDLE``.
Each stage is the module that also runs alone (``edgefuse.export``, ``edgefuse.calibration``,
``edgefuse.engines``); this one only sequences them and writes the manifest. The bundle is
written atomically: a failed build (a gate, a parser error, Ctrl-C) leaves no bundle.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from edgefuse import __version__
from edgefuse.bundle import Bundle, write_bundle
from edgefuse.errors import EdgefuseError
from edgefuse.manifest import subset_entry

#: ONNX Runtime INT8 quantizes only weights with at least this many values. Measured on an AVX-512
#: VNNI Xeon (ORT 1.32, batch 1, 1 thread; the engines issue's table): the demo model's all-sensor
#: engine ran at 1.15x FP32 with this threshold against 1.52x with every weight quantized, and at
#: 0.70x against 0.79x when trained with --dim 256.
ORT_MIN_WEIGHTS = 8192

#: the TensorRT a bundle is built for unless --trt-version says otherwise: JetPack 6.1/6.2's
TRT_TARGET_VERSION = "10.3.0"
PRECISIONS = {"ort": ("fp32", "int8"), "trt": ("fp32", "fp16", "int8"), "torch": ("fp32", "fp16")}


def build_bundle(
    checkpoint: str | Path,
    out: str | Path,
    backend: str = "ort",
    precision: str = "int8",
    calib_method: str = "minmax",
    calib_size: int = 512,
    max_drop: float = 1.0,
    subsets: Sequence[Sequence[str]] | None = None,
    data=None,
    trt_max_batch: int = 32,
    trt_version: str | None = None,
    progress: bool = True,
    gate_fail: str = "error",
    split: bool = False,
    strict: bool = False,
    latency_profile: str | Path | None = None,
    latency_iters: int = 200,
    int8_min_weights: int | None = None,
) -> Bundle:
    """Build a bundle; see the module docstring. ``data`` defaults to the checkpoint's own source.

    Latency-aware precision (``ort`` INT8 builds): each subset's FP32 and INT8 graphs are timed,
    interleaved, at batch 1 and ``trt_max_batch`` on this machine, or read from
    ``latency_profile`` (``edgefuse profile`` run on the target device), and the subset keeps the
    fastest that passes the accuracy gate (``edgefuse.latency.choose``). Its manifest entry
    records every candidate's timings and accuracy and why the chosen one won. ``strict``: INT8
    wherever it passes the gate, whatever its speed.

    ``int8_min_weights``: which nodes INT8 quantizes. ONNX Runtime (default ``ORT_MIN_WEIGHTS``):
    only the Conv/Gemm/MatMul whose weight has that many values; its INT8 kernels lose to FP32
    on small GEMMs, and every Q/DQ pair is a node of overhead. TensorRT (default 0): every one,
    TensorRT's recommended placement (it fuses the rest around them).

    ``split``: one encoder engine per sensor and one fusion-head engine that takes the embeddings
    and a presence mask (mid-fusion models; backends ort and trt): it serves every subset, and
    its manifest records each subset's accuracy through the composed pipeline
    (``edgefuse.calibration.split``). ``subsets`` does not apply.

    ``gate_fail`` (INT8, and FP16 on the torch backend): what a subset that loses more than
    ``max_drop`` accuracy points in that precision does. ``'error'`` fails the build and writes
    nothing. ``'fp32'`` gives that subset its FP32 engine instead; its manifest entry says
    ``precision: fp32`` and why (``int8_rejected`` / ``fp16_rejected``), and the rest keep the
    reduced precision. The torch backend's FP16 accuracy is measured here, on the CPU with the
    reference ops (a GPU runs the Triton kernels, which also store float16 and accumulate in
    float32).
    """
    from edgefuse.checkpoint import data_source, load_checkpoint, load_training_data
    from edgefuse.gate import accuracy, check_gate_fail

    if backend not in PRECISIONS:
        raise EdgefuseError(f"unknown backend {backend!r}; expected one of {sorted(PRECISIONS)}")
    if precision not in PRECISIONS[backend]:
        raise EdgefuseError(f"backend {backend!r} builds precisions {PRECISIONS[backend]}, got {precision!r}")
    check_gate_fail(gate_fail)  # before minutes of export, not when calibration gets to it
    if (
        precision == "int8"
    ):  # an onnxruntime too old to calibrate (Python 3.10 has no other) fails here, not after export
        from edgefuse.calibration import calibrate_export
    trt_version = trt_version or TRT_TARGET_VERSION  # the device's TensorRT: what the calibration cache is for
    start = time.perf_counter()
    model, doc = load_checkpoint(checkpoint)
    dataset = {}
    if data is None:
        data = load_training_data(checkpoint, doc)
        recorded, seed = data_source(doc)
        dataset = {"dataset": recorded, "seed": seed}  # what `edgefuse run` replays by default
    if data.modality_names != model.names:
        raise EdgefuseError(f"data has modalities {data.modality_names}, the model expects {model.names}")
    test = data["test"]
    if split:
        from edgefuse.fusion import MidFusion

        if not isinstance(model, MidFusion):
            raise EdgefuseError(
                f"a split bundle needs a mid-fusion model (encoders, projection, fusion op, head); got fusion "
                f"{model.fusion_name!r}. Build per-subset engines instead (without --split)."
            )
        if precision == "fp16":
            raise EdgefuseError(
                "split bundles are built in fp32 (any backend) or int8 (ort, trt), got --precision fp16"
            )
    manifest: dict[str, Any] = {
        "edgefuse_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "backend": backend,
        "precision": precision,
        "fusion": model.fusion_name,
        "modalities": [s.to_dict() for s in model.specs],
        "class_names": list(
            doc["info"].get("dataset", {}).get("class_names") or [str(i) for i in range(model.num_classes)]
        ),
        "output": "logits",
        "source": {"checkpoint": str(checkpoint), "data": data.description, **dataset},
        "kind": "split" if split else "subsets",
        "subsets": {},
    }
    # how calibration runs (INT8), for per-subset and split exports alike
    if int8_min_weights is None:
        int8_min_weights = ORT_MIN_WEIGHTS if backend == "ort" else 0
    calib_options = {
        "min_weights": int8_min_weights,
        "method": calib_method,
        "size": calib_size,
        "max_drop": max_drop,
        # TensorRT's calibration cache is read only by implicit-INT8 builds and DLA on TensorRT <= 10
        "trt_version": trt_version if backend == "trt" and trt_cache_readable(trt_version) else None,
        "progress": progress,
        "gate_fail": gate_fail,
    }
    if precision == "int8":
        manifest["int8_quantization"] = {
            "form": "Q/DQ, symmetric INT8, per-channel weights, per-tensor activations",
            "nodes": f"Conv/Gemm/MatMul with >= {int8_min_weights} weights"
            if int8_min_weights
            else "every Conv/Gemm/MatMul",
            "min_weights": int8_min_weights,
            "calibration": {"method": calib_method, "size": calib_size},
        }
    if backend == "trt":
        manifest["trt"] = {
            "max_batch": trt_max_batch,
            "target_version": trt_version,
            "plans": "none: run `edgefuse compile BUNDLE` on the device (plans are tied to its GPU and TensorRT)",
        }
    if split:
        return _build_split(model, data, out, manifest, calib_options, trt_max_batch, start)

    with tempfile.TemporaryDirectory(prefix="edgefuse-build.") as work:
        work = Path(work)
        calib, rejected = None, []  # rejected: the subsets that failed the INT8 / FP16 gate (they get FP32)
        choice: dict[str, Any] = {}  # ort INT8: each subset's timed candidates and the chosen precision
        slower: list[str] = []  # the subsets whose INT8 engine was not faster than FP32 (they get FP32)
        if backend == "torch":
            from edgefuse.inference import subset_accuracy
            from edgefuse.specs import default_subsets, subset_name

            subs = [tuple(s) for s in subsets] if subsets is not None else default_subsets(model.names)
            graphs = {subset_name(s, model.names): {"modalities": list(s)} for s in subs}
            if precision == "fp16":
                gates = _fp16_gate(model, test, subs, max_drop, gate_fail, progress)
                acc = {g.subset: {**g.to_dict(), "device": "cpu"} for g in gates}
                rejected = [g.subset for g in gates if g.fails(max_drop)]
                manifest["fp16_gate"] = {"max_drop_points": max_drop, "on_fail": gate_fail, "rejected": rejected}
            else:
                acc = {k: {"fp32": v} for k, v in subset_accuracy(model, test, subs).items()}
        else:
            from edgefuse.export import export_model

            exp = export_model(
                model, work / "export", subsets=subsets, progress=progress, source={"checkpoint": str(checkpoint)}
            )
            graphs = exp["graphs"]
            if precision == "fp16":  # TensorRT FP16: the FP16 graph itself, through ONNX Runtime here
                gates = _fp16_graph_gate(graphs, work, test, max_drop, gate_fail, progress)
                acc = {g.subset: {**g.to_dict(), "device": "cpu (onnxruntime)"} for g in gates}
                rejected = [g.subset for g in gates if g.fails(max_drop)]
                manifest["fp16_gate"] = {"max_drop_points": max_drop, "on_fail": gate_fail, "rejected": rejected}
            elif precision == "int8":
                calib = calibrate_export(work / "export", data, work / "calib", **calib_options)
                acc = {k: c["accuracy"] for k, c in calib["subsets"].items()}
                rejected = [k for k, c in calib["subsets"].items() if c["int8_rejected"]]
                manifest["int8_gate"] = {"max_drop_points": max_drop, "on_fail": gate_fail, "rejected": rejected}
                if backend == "ort":
                    choice = _choose_precisions(
                        calib, work / "calib", rejected, strict, latency_profile, trt_max_batch, latency_iters, progress
                    )
                    manifest["latency"] = choice.pop("__meta__")
                    slower = [k for k, c in choice.items() if c["chosen"] == "fp32" and k not in rejected]
            else:
                acc = {
                    k: {
                        "fp32": accuracy(
                            work / "export" / g["file"], {m: test.inputs[m] for m in g["inputs"]}, test.labels
                        )
                    }
                    for k, g in graphs.items()
                }

        def fill(tmp: Path) -> None:
            (tmp / "engines").mkdir()
            if backend == "torch":
                shutil.copytree(checkpoint, tmp / "engines" / "torch")
            for key, g in graphs.items():
                members, fallback = g["modalities"], key in rejected or key in slower
                entry = subset_entry(
                    members,
                    model.specs,
                    backend,
                    "fp32" if fallback else precision,
                    model.num_classes,
                    {**acc[key], "split": "test", "n": len(test)},
                    engine="",
                )
                if key in rejected:
                    entry[f"{precision}_rejected"] = {
                        "drop_points": acc[key]["drop_points"],
                        "max_drop_points": max_drop,
                    }
                if key in choice:
                    entry["latency"] = choice[key]
                if backend == "torch":
                    entry["engine"] = "engines/torch"
                elif fallback:
                    entry["engine"] = _engine_file(
                        backend, "fp32", key, work / "export" / g["file"], tmp / "engines", work, trt_max_batch
                    )
                else:
                    src = (
                        work
                        / ("calib" if calib else "export")
                        / (calib["subsets"][key]["int8_file"] if calib else g["file"])
                    )
                    if calib:
                        entry["calibration"] = _place_calibration(calib, calib["subsets"][key], work, tmp)
                    entry["engine"] = _engine_file(backend, precision, key, src, tmp / "engines", work, trt_max_batch)
                manifest["subsets"][key] = entry
            manifest["build_seconds"] = time.perf_counter() - start

        return write_bundle(out, manifest, fill)


def _build_split(model, data, out, manifest: dict, options: dict, trt_max_batch: int, start: float) -> Bundle:
    """The split bundle: export encoders + head, calibrate them (INT8; ``options``: calibrate_split's keywords),
    gate the composed pipeline per subset."""
    from edgefuse.calibration.split import encode, gate_subsets, pipeline_predictions
    from edgefuse.export import export_model
    from edgefuse.specs import subset_name

    names, test, dim = model.names, data["test"], model.dim
    backend, precision, progress = manifest["backend"], manifest["precision"], options["progress"]
    with tempfile.TemporaryDirectory(prefix="edgefuse-build.") as work:
        work = Path(work)
        calib = None
        if backend == "torch":  # the checkpoint itself: each engine runs its part of the model (fp32)
            from edgefuse.inference import subset_accuracy

            engines = {
                k: {"precision": "fp32", "src": None, "calib": None} for k in [*(f"encoder_{n}" for n in names), "head"]
            }
            acc = {k: {"fp32": v} for k, v in subset_accuracy(model, test, gate_subsets(names)).items()}
        else:
            graphs = export_model(model, work / "export", split=True, progress=progress, source=manifest["source"])[
                "graphs"
            ]
            if precision == "int8":
                from edgefuse.calibration.split import calibrate_split

                calib = calibrate_split(work / "export", data, work / "calib", **options)
                engines = {
                    k: {"precision": e["precision"], "src": work / "calib" / e[f"{e['precision']}_file"], "calib": e}
                    for k, e in calib["engines"].items()
                }
                acc = {k: v["accuracy"] for k, v in calib["subsets"].items()}
                manifest["int8_gate"] = {
                    "max_drop_points": options["max_drop"],
                    "on_fail": options["gate_fail"],
                    "rejected": [k for k, e in calib["engines"].items() if e["int8_rejected"]],
                    "fallback_order": calib["fallback_order"],
                }
            else:
                engines = {
                    k: {"precision": "fp32", "src": work / "export" / g["file"], "calib": None}
                    for k, g in graphs.items()
                }
                embs = {n: encode(work / "export" / graphs[f"encoder_{n}"]["file"], n, test.inputs[n]) for n in names}
                preds = pipeline_predictions(names, embs, work / "export" / graphs["head"]["file"], gate_subsets(names))
                acc = {k: {"fp32": float((p == test.labels).mean())} for k, p in preds.items()}

        def fill(tmp: Path) -> None:
            (tmp / "engines").mkdir()

            if backend == "torch":
                shutil.copytree(manifest["source"]["checkpoint"], tmp / "engines" / "torch")

            def place(key: str) -> dict[str, Any]:
                e = engines[key]
                if backend == "torch":
                    part = "head" if key == "head" else f"encoder:{key[len('encoder_') :]}"
                    return {"precision": "fp32", "engine": "engines/torch", "part": part}
                entry: dict[str, Any] = {
                    "precision": e["precision"],
                    "engine": _engine_file(
                        backend, e["precision"], key, e["src"], tmp / "engines", work, trt_max_batch
                    ),
                }
                if e["calib"] is not None:
                    entry["calibration"] = _place_calibration(calib, e["calib"], work, tmp)
                    if e["calib"]["int8_rejected"]:
                        entry["int8_rejected"] = True
                return entry

            manifest["embedding_dim"] = dim
            manifest["encoders"] = {}
            for s in model.specs:
                entry = place(f"encoder_{s.name}")
                entry["inputs"] = [{"name": s.name, "shape": [-1, *s.shape], "dtype": s.dtype}]
                entry["outputs"] = [{"name": "embedding", "shape": [-1, dim], "dtype": "float32"}]
                manifest["encoders"][s.name] = entry
            head = place("head")
            head["inputs"] = [
                {"name": "embeddings", "shape": [-1, len(names), dim], "dtype": "float32"},
                {"name": "present", "shape": [-1, len(names)], "dtype": "bool"},
            ]
            head["outputs"] = [{"name": "logits", "shape": [-1, model.num_classes], "dtype": "float32"}]
            manifest["head"] = head
            for key, a in acc.items():
                members = key.split("+")
                path = [manifest["encoders"][m]["precision"] for m in members] + [head["precision"]]
                manifest["subsets"][subset_name(members, names)] = {
                    "modalities": members,
                    "precision": "int8" if "int8" in path else "fp32",
                    "accuracy": {**a, "split": "test", "n": len(test)},
                }
            manifest["build_seconds"] = time.perf_counter() - start

        return write_bundle(out, manifest, fill)


def _fp16_graph_gate(graphs: dict, work: Path, test, max_drop: float, gate_fail: str, progress: bool) -> list:
    """TensorRT FP16: each subset's FP32 graph against its FP16 graph (``edgefuse.engines.fp16``, the one
    the device compiles) on ``test``, both through ONNX Runtime on this machine; the FP16 graphs are left
    in ``work`` as ``<subset>.fp16.onnx``. Raises AccuracyGateError when ``gate_fail='error'`` and a subset
    drops more than ``max_drop`` points."""
    from tqdm.auto import tqdm

    from edgefuse.engines.fp16 import to_fp16
    from edgefuse.gate import compare, enforce

    gates = []
    for key, g in tqdm(graphs.items(), desc="fp16 gate", unit="subset", disable=not progress):
        fp32 = work / "export" / g["file"]
        half = to_fp16(fp32, work / f"{key}.fp16.onnx")
        r = compare(key, fp32, half, {m: test.inputs[m] for m in g["inputs"]}, test.labels)
        r.precision = "fp16"
        gates.append(r)
    if gate_fail == "error":
        enforce(gates, max_drop)
    return gates


def _fp16_gate(model, test, subsets, max_drop: float, gate_fail: str, progress: bool) -> list:
    """Each subset's FP32 and FP16 accuracy (the model cast with ``.half()``, on the CPU) and
    their top-1 agreement on ``test``; raises AccuracyGateError when ``gate_fail='error'`` and
    a subset drops more than ``max_drop`` points."""
    import copy

    from tqdm import tqdm

    from edgefuse.gate import GateResult, enforce
    from edgefuse.inference import predict
    from edgefuse.specs import subset_name

    half = copy.deepcopy(model).half()
    gates = []
    for sub in tqdm(subsets, desc="fp16 gate", unit="subset", disable=not progress):
        inputs = {k: test.inputs[k] for k in sub}
        a, b = predict(model, inputs).argmax(1), predict(half, inputs).argmax(1)
        gates.append(
            GateResult(
                subset_name(sub, model.names),
                float((a == test.labels).mean()),
                float((b == test.labels).mean()),
                float((a == b).mean()),
                len(test),
                precision="fp16",
            )
        )
    if gate_fail == "error":
        enforce(gates, max_drop)
    return gates


def _place_calibration(calib: dict, graph: dict, work: Path, tmp: Path) -> dict[str, Any]:
    """Copy one graph's range report and TensorRT cache into the bundle; return its manifest entry."""
    (tmp / "calibration").mkdir(exist_ok=True)
    for f in (graph["report"], graph["trt_cache"]):
        if f:
            shutil.copy2(work / "calib" / f, tmp / "calibration" / f)
    entry = {"method": calib["method"], "size": calib["size"], "report": f"calibration/{graph['report']}"}
    if graph["trt_cache"]:  # TensorRT <= 10 (implicit INT8, DLA); a Q/DQ build does not read it
        entry["trt_cache"] = f"calibration/{graph['trt_cache']}"
    return entry


def _choose_precisions(
    calib: dict, folder: Path, rejected, strict: bool, profile, max_batch: int, iters: int, progress: bool
) -> dict[str, Any]:
    """Per subset: its FP32 and INT8 candidates' timings (measured here, or from ``profile``) and accuracy,
    the precision chosen (``edgefuse.latency.choose``) and why; ``__meta__``: where the timings come from."""
    from tqdm.auto import tqdm

    from edgefuse import latency

    subsets = calib["subsets"]
    if profile is not None:
        prof = latency.read_profile(profile)
        missing = [k for k in subsets if k not in prof["graphs"]]
        if missing:
            raise EdgefuseError(f"latency profile {profile}: no timings for subsets {missing}; profile the same export")
        timed, meta = (
            {k: prof["graphs"][k] for k in subsets},
            {
                "timed_on": prof["device"],
                "source": f"profile {profile}",
                "threads": prof["threads"],
                "batches": prof["batches"],
            },
        )
    else:
        batches = sorted({1, max_batch})
        timed = {}
        for k, c in tqdm(subsets.items(), desc="time candidates", unit="subset", disable=not progress):
            timed[k] = latency.time_graphs(
                {"fp32": folder / c["fp32_file"], "int8": folder / c["int8_file"]}, batches, iters
            )
        meta = {"timed_on": latency.machine(), "source": "the build machine", "threads": 1, "batches": batches}
    meta["rule"] = f"the fastest at batch 1 that passes the gate; INT8 must beat FP32's p50 by {latency.NOISE:.0%}" + (
        "" if profile is not None else ", on two timings"
    )
    if strict:
        meta["rule"] = "INT8 wherever it passes the gate (--strict)"
    out: dict[str, Any] = {"__meta__": meta}
    for k, c in subsets.items():
        passing = ["fp32"] if k in rejected else ["int8", "fp32"]
        chosen, why = latency.choose(timed[k], passing, strict="int8" if strict else None)
        if chosen != "fp32" and not strict and profile is None:  # a win measured here: confirm it on a second timing
            graphs = {"fp32": folder / c["fp32_file"], "int8": folder / c["int8_file"]}
            again = latency.time_graphs(graphs, [1], iters)
            chosen2, why2 = latency.choose(again, passing)
            if chosen2 == "fp32":
                chosen, why = "fp32", f"INT8 looked faster ({why}) but not on a second timing ({why2})"
            else:
                why += f"; confirmed on a second timing ({why2})"
        if k in rejected:
            why = f"INT8 failed the accuracy gate ({c['accuracy']['drop_points']:.2f} points)"
        out[k] = {
            "candidates": {
                p: {**{f"batch{b}": t for b, t in timed[k].get(p, {}).items()}, "accuracy": c["accuracy"].get(p)}
                for p in ("fp32", "int8")
            },
            "chosen": chosen,
            "why": why,
        }
    return out


def _engine_file(backend: str, precision: str, key: str, src: Path, dest: Path, work: Path, max_batch: int) -> str:
    stem = f"{key}.{precision}"
    if backend == "ort":
        from edgefuse.engines.ort import write_optimized_cache

        target = dest / f"{stem}.onnx"
        shutil.copy2(src, target)
        write_optimized_cache(target)  # checksummed with the bundle; read only by the same ORT version
        return f"engines/{target.name}"
    # TensorRT: the graph itself (Q/DQ INT8, FP16 or FP32); the device builds the plan (edgefuse compile)
    target = dest / f"{stem}.onnx"
    if precision == "fp16":
        fp16 = work / f"{key}.fp16.onnx"  # gated by _fp16_graph_gate
        if fp16.is_file():
            shutil.copy2(fp16, target)
        else:
            from edgefuse.engines.fp16 import to_fp16

            to_fp16(src, target)
    else:
        shutil.copy2(src, target)
    return f"engines/{target.name}"


def trt_cache_readable(version: str) -> bool:
    """Whether TensorRT ``version`` reads a calibration cache at all: only its implicit-INT8 builds and DLA
    do, and TensorRT 11 removed them (strongly typed Q/DQ builds, edgefuse's, never read one)."""
    return int(str(version).split(".")[0]) <= 10
