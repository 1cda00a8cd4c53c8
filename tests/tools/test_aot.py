"""The kernels compiled for real GPU targets (sm_90: H100/H200, sm_87: Jetson Orin, sm_110:
Jetson Thor) with no GPU. (sm_110 needs Triton >= 3.7, which CI installs; older releases are
tools/triton_targets.sh's, and dispatch's, business.)

The interpreter tests check the arithmetic; this checks what only the GPU compiler sees:
Triton's lowering and ptxas accept every launch the launchers make at the benchmark shapes,
in fp16 and fp32, each fits its target's shared memory without spilling registers, and the
launchers' shared-memory plan (SHARED_BUDGET) holds for the compiler's real allocation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from edgefuse.kernels.triton_projection import _config
from edgefuse.kernels.utils import DOT_MIN, GEMM_ROWS, MAX_STAGES, SHARED_BUDGET, SHARED_OVERHEAD, pipeline
from tools.aot import (
    GEMM_MMA,
    WARP_LOCAL,
    WARP_LOCAL_SINCE,
    Compiled,
    memory_instructions,
    problems,
    tensor_core_instructions,
)

pytestmark = pytest.mark.tools

KERNELS = {
    "_fused_projection_kernel",
    "_l2norm_rows_kernel",
    "_split_k_epilogue",
    "_gated_kernel",
    "_gated_bwd_kernel",
    "_mfb_kernel",
    "_bilinear_kernel",
}
SHARDS = 2  # CI has two cores
ARCHS = (90, 87, 110)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("aot")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "EDGEFUSE_KERNELS")}
    env["TRITON_CACHE_DIR"] = str(tmp / "cache")  # compile for real, not from an earlier run's cache
    env.pop("TRITON_DEFAULT_FP_FUSION", None)  # every launch pins it: Triton 3.9 would warn otherwise
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tools.aot",
                *(a for arch in ARCHS for a in ("--arch", str(arch))),
                "--shard",
                f"{k}/{SHARDS}",
                "--json",
                str(tmp / f"shard{k}.json"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k in range(SHARDS)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    docs = [
        json.loads((tmp / f"shard{k}.json").read_text()) if (tmp / f"shard{k}.json").is_file() else None
        for k in range(SHARDS)
    ]
    return [p.returncode for p in procs], logs, docs


def test_every_launch_compiles_for_h200_orin_and_thor_within_limits(compiled):
    codes, logs, docs = compiled
    for code, log, doc in zip(codes, logs, docs):
        assert doc is not None, log[-3000:]
        assert doc["problems"] == [] and code == 0, log[-3000:]
        assert "TRITON_DEFAULT_FP_FUSION" not in log, log[-3000:]  # Triton 3.9's warning for an unpinned launch
    binaries = [b for doc in docs for b in doc["binaries"]]
    assert {b["kernel"] for b in binaries} == KERNELS
    assert {b["arch"] for b in binaries} == set(ARCHS)
    # each distinct launch compiled once per architecture
    per_arch = {
        a: sorted(json.dumps([b["kernel"], b["constexprs"], b["cases"]]) for b in binaries if b["arch"] == a)
        for a in ARCHS
    }
    assert per_arch[90] == per_arch[87] == per_arch[110]
    assert len(per_arch[90]) >= 30


def test_launchers_shared_memory_plan_holds_for_the_compiler(compiled):
    _, logs, docs = compiled
    for doc in docs:
        for b in doc["binaries"]:
            assert b["shared_bytes"] <= SHARED_BUDGET + SHARED_OVERHEAD, (
                b["kernel"],
                b["arch"],
                b["constexprs"],
                b["shared_bytes"],
            )
            assert b["spill_bytes"] == 0, b


def test_gated_kernels_reduce_over_modalities_inside_each_warp(compiled):
    """Gated fusion is bound by memory bandwidth (issue 3's bar: >= 70 % of copy bandwidth at
    B = 4096). Its reductions over the modalities (softmax max and sum, the weighted sum) must
    stay in registers: a layout that spreads the modalities over warps reduces through shared
    memory with a barrier each time (_blocks' num_warps). Read from the compiled binaries, at
    every benchmark shape, fp16 and fp32, for every target: with this Triton (>= 3.2), no
    shared memory and no barrier at all (aot.WARP_LOCAL). No kernel of edgefuse uses atomics,
    so every result is the same run to run."""
    import triton

    from edgefuse._releases import major_minor

    assert major_minor(triton.__version__) >= WARP_LOCAL_SINCE, (
        "Triton 3.0-3.1 store the row through shared memory (aot.WARP_LOCAL_SINCE)"
    )
    _, _, docs = compiled
    binaries = [b for doc in docs for b in doc["binaries"]]
    gated = [b for b in binaries if b["kernel"] in WARP_LOCAL and WARP_LOCAL[b["kernel"]](b["constexprs"])]
    assert {b["kernel"] for b in gated} == {"_gated_kernel", "_gated_bwd_kernel"} and len(gated) >= 2 * 2 * 3 * 2
    for b in gated:
        m = b["memory"]
        assert m["barriers"] == 0 and m["shared"] == 0, (b["kernel"], b["arch"], b["constexprs"], b["num_warps"], m)
        assert m["global_loads"].get("128"), (
            b["kernel"],
            b["arch"],
            b["constexprs"],
            m,
        )  # the feature rows: 16-byte vectors
    for b in binaries:
        assert b["memory"]["atomics"] == 0, (b["kernel"], b["arch"], b["constexprs"], b["memory"])


def test_gemm_shaped_batches_run_on_the_targets_warpgroup_tensor_cores(compiled):
    """At batches above GEMM_ROWS (training, offline scoring) the projection and MFB are GEMMs
    bound by tensor-core throughput. On Hopper (sm_90) a 64-row tile runs the warpgroup MMA
    (wgmma), on Jetson Thor (sm_110) the tensor-memory MMA (tcgen05); a 16-row tile falls back
    to the warp-level mma.sync. Before _config kept fused-norm tiles GEMM-shaped, the
    projection with L2 norm at B = 4096, D = 1024 took 16-row tiles spanning D and failed
    this. Orin (sm_87) has only mma.sync. fp32 runs FMAs (input_precision="ieee")."""
    _, _, docs = compiled
    binaries = [b for doc in docs for b in doc["binaries"]]
    gemm = [
        b
        for b in binaries
        if b["kernel"] in ("_fused_projection_kernel", "_mfb_kernel")
        and any(" float16 " in c and int(c.split("B=")[1].split()[0]) > GEMM_ROWS for c in b["cases"])
    ]
    assert {(b["kernel"], b["arch"]) for b in gemm} == {
        (k, a) for k in ("_fused_projection_kernel", "_mfb_kernel") for a in ARCHS
    }
    for b in gemm:
        family = GEMM_MMA.get(b["arch"], ("mma",))[0]
        assert b["tensor_cores"] and all(
            k.startswith(family + " ") and k.endswith(" f16") for k in b["tensor_cores"]
        ), (b["arch"], b["kernel"], b["constexprs"], b["cases"], b["tensor_cores"])
    fp32 = [b for b in binaries if b["constexprs"].get("PRECISION") == "ieee"]
    assert fp32 and all(b["tensor_cores"] == {} for b in fp32)


def test_tensor_core_instructions_name_family_shape_and_input_type():
    ptx = """
	wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%f1, %f2}, %rd1, %rd2, p, 1, 1, 0, 1;
	wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%f1, %f2}, %rd3, %rd4, p, 1, 1, 0, 1;
	wgmma.wait_group.sync.aligned 1;
	@%p3 mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 { %f3, %f4 }, { %r1 }, { %r2 }, { %f3, %f4 };
	tcgen05.mma.cta_group::1.kind::f16 [ %r5 + 0 ], %rd5, %rd6, %r6, %p4;
	tcgen05.commit.cta_group::1.mbarrier::arrive::one.shared::cluster.b64 [%r7];
	fma.rn.f32 %f5, %f6, %f7, %f5;
"""
    assert tensor_core_instructions(ptx) == {"mma m16n8k8 tf32": 1, "tcgen05 - f16": 1, "wgmma m64n64k16 f16": 2}
    assert tensor_core_instructions("fma.rn.f32 %f5, %f6, %f7, %f5;") == {}


def test_problems_flags_a_gemm_shaped_tile_without_the_targets_tensor_core_family(monkeypatch):
    import triton

    base = dict(
        num_warps=8,
        registers=114,
        spill_bytes=0,
        shared_bytes=73728,
        max_shared_bytes=232448,
        blocks_per_sm_by_regs=2,
        seconds=0.1,
        fp_fusion=True,
    )
    tile = {"PRECISION": "tf32", "BLOCK_M": 64}
    good = Compiled("_mfb_kernel", 90, tile, tensor_cores={"wgmma m64n64k16 f16": 8}, **base)
    fallback = replace(good, tensor_cores={"mma m16n8k16 f16": 64})
    assert problems([good]) == []
    found = problems([fallback])
    assert len(found) == 1 and "GEMM-shaped tile without wgmma" in found[0] and "mma m16n8k16 f16" in found[0]
    assert "without tcgen05" in problems([replace(fallback, arch=110)])[0]
    # before the release that emits it on that target, the fallback is Triton's, not the launch's
    monkeypatch.setattr(triton, "__version__", "3.6.0")
    assert problems([replace(fallback, arch=110)]) == [] and len(problems([fallback])) == 1
    # not GEMM-shaped, not a tensor-core dot, or a target with only mma.sync: nothing to flag
    assert (
        problems(
            [
                replace(fallback, constexprs={**tile, "BLOCK_M": 16}),
                replace(fallback, constexprs={**tile, "PRECISION": "ieee"}, tensor_cores={}),
                replace(fallback, num_warps=2),
                replace(fallback, arch=87),
            ]
        )
        == []
    )


def test_memory_instructions_counts_ptx_by_kind_and_width():
    ptx = """
.visible .entry k(
	.param .u64 .ptr .global .align 1 k_param_0
)
{
	.reg .b32 	%r<4>;
	ld.param.b64 	%rd1, [k_param_0];
	// begin inline asm
	@%p1 ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];
	// end inline asm
	@!%p2 ld.global.L1::evict_last.b8 { %rs1 }, [ %rd2 + 0 ];
	ld.global.b32 { %r5 }, [ %rd3 + 0 ];
	cp.async.cg.shared.global [ %r77 + 0 ], [ %rd16 + 0 ], 0x10, %r22;
	cp.async.ca.shared.global [ %r78 + 0 ], [ %rd17 + 0 ], 8;
	cp.async.commit_group;
	st.shared.v4.b32 	[%r6], {%r1, %r2, %r3, %r4};
	bar.sync 	0;
	ldmatrix.sync.aligned.m8n8.x4.shared.b16 { %r7, %r8, %r9, %r10 }, [ %r11 + 0 ];
$L__BB0_2:
	st.global.v2.b32 [ %rd4 + 0 ], { %r1, %r2 };
	red.global.gpu.add.f32 [ %rd5 ], %f1;
	ret;
}
"""
    assert memory_instructions(ptx) == {
        "global_loads": {"128": 2, "64": 1, "32": 1, "8": 1},
        "global_stores": {"64": 1},
        "shared": 2,
        "barriers": 1,
        "atomics": 1,
    }
    with pytest.raises(ValueError, match="no PTX instructions"):
        memory_instructions("// nothing here\n.version 8.4\n")


def test_pipeline_plan_fits_the_budget_and_keeps_tl_dot_sizes():
    for b in (1, 8, 32, 256, 4096):
        for d in (16, 256, 1024, 4096):
            bm, bn, bk, _, _ = _config(b, d, True, 3)
            for itemsize in (2, 4):
                k, stages = pipeline(bm, bn, bk, itemsize)
                assert k >= DOT_MIN and 1 <= stages <= MAX_STAGES
                assert stages * (bm * k + k * bn) * itemsize <= SHARED_BUDGET or k == DOT_MIN, (b, d, itemsize)


def test_binaries_are_read_with_the_cuobjdump_triton_cuobjdump_path_names(monkeypatch, tmp_path):
    """CUDA 13's cuobjdump (Triton 3.8's and 3.9's) cannot read what CUDA 12.2's ptxas builds for
    sm_90a, so tools/triton_ptxas.sh names a CUDA 12 one with Triton's own variable; the
    resource count reads what that tool prints."""
    from tools.aot import resource_usage

    tool = tmp_path / "cuobjdump"
    tool.write_text(
        "#!/bin/sh\necho ' Function k:'\necho '  REG:40 STACK:0 SHARED:1024 LOCAL:0 CONSTANT[0]:400 TEXTURE:0'\n"
    )
    tool.chmod(0o755)
    monkeypatch.setenv("TRITON_CUOBJDUMP_PATH", str(tool))
    assert resource_usage(b"not read") == {"REG": 40, "STACK": 0, "SHARED": 1024, "LOCAL": 0}


def test_problems_flags_shared_overflow_and_spills():
    ok = Compiled("k", 87, {}, 4, 64, 0, 1000, 166912, 8, 0.1, fp_fusion=True)
    over = Compiled("k", 87, {"BLOCK_K": 64}, 8, 255, 0, 266240, 166912, 1, 0.1, fp_fusion=True)
    spill = Compiled("k", 90, {}, 8, 255, 96, 1000, 232448, 1, 0.1, fp_fusion=False)
    unpinned = Compiled("k", 90, {}, 4, 64, 0, 1000, 232448, 8, 0.1)
    assert problems([ok]) == []
    found = problems([ok, over, spill, unpinned])
    assert len(found) == 3 and "266240 B shared > the 166912 B limit" in found[0] and "spills 96 B" in found[1]
    assert "without enable_fp_fusion" in found[2]


def test_problems_flags_a_warp_local_kernel_through_shared_memory_and_sass_that_contradicts_the_ptx(monkeypatch):
    import triton

    quiet = {"global_loads": {"128": 8, "8": 3}, "global_stores": {"128": 1}, "shared": 0, "barriers": 0, "atomics": 0}
    crossing = {**quiet, "shared": 26, "barriers": 25}
    tiny_relayout = {**quiet, "shared": 2, "barriers": 1}  # Triton 3.2-3.4, D = 16 over one warp: the store's layout
    store_relayout = {
        **quiet,
        "shared": 8,
        "barriers": 7,
    }  # Triton 3.0-3.1 at D = 1100: the output row through shared memory
    base = dict(
        arch=90,
        num_warps=4,
        registers=64,
        spill_bytes=0,
        shared_bytes=0,
        max_shared_bytes=232448,
        blocks_per_sm_by_regs=8,
        seconds=0.1,
        fp_fusion=True,
    )
    fwd = Compiled("_gated_kernel", constexprs={"PER_FEATURE": True, "BLOCK_N": 4}, memory=quiet, **base)
    assert problems([fwd, replace(fwd, memory=tiny_relayout)]) == []
    # the per-modality backward sums over D across warps; eight modalities may be spread over warps
    found = problems(
        [
            replace(fwd, memory=crossing),
            Compiled("_gated_bwd_kernel", constexprs={"PER_FEATURE": False, "BLOCK_N": 4}, memory=crossing, **base),
            replace(fwd, constexprs={"PER_FEATURE": True, "BLOCK_N": 8}, memory=crossing),
        ]
    )
    assert len(found) == 1 and "_gated_kernel" in found[0] and "26 shared-memory accesses, 25 barriers" in found[0]
    # Triton 3.0 and 3.1 store the row through shared memory whatever the warps: not checked there
    monkeypatch.setattr(triton, "__version__", "3.1.0")
    assert problems([replace(fwd, memory=store_relayout), replace(fwd, memory=crossing)]) == []
    monkeypatch.setattr(triton, "__version__", "3.2.0")
    assert len(problems([replace(fwd, memory=store_relayout)])) == 1
    # ptxas may merge, unroll and drop barriers; widths, zero barriers and atomics must hold
    assert problems([replace(fwd, memory_sass={**quiet, "global_loads": {"128": 32, "8": 3}})]) == []
    found = problems(
        [replace(fwd, memory_sass={**quiet, "global_loads": {"64": 8, "8": 3}, "barriers": 2, "atomics": 1})]
    )
    assert len(found) == 3 and "widths ['128', '8'] in the PTX, ['64', '8'] in the binary" in found[0]
    assert "no barriers in the PTX, 2 in the binary" in found[1] and "0 atomics in the PTX, 1" in found[2]


PRESENCE_SCRIPT = """
import itertools, json, torch
from tools.aot import jit_binaries
from edgefuse.kernels.triton_bilinear import mfb_triton
from edgefuse.kernels.triton_gated import gated_fusion_triton
from edgefuse.kernels.triton_projection import fused_projection_triton

t = lambda *s: torch.randn(*s, dtype=torch.float16)
b, d, ks = 8, 256, (2048, 1024, 128)
ws, bias, xs = [t(d, k) for k in ks], t(3, d), [t(b, k) for k in ks]
subsets = [s for r in (1, 2, 3) for s in itertools.combinations(range(3), r)]
masks = [torch.tensor([[i in s for i in range(3)]] * b) for s in subsets] + [torch.zeros(b, 3, dtype=torch.bool)]
feats, logits = t(b, 3, d), t(b, 3, d)
x, y, u, v, ub, vb = t(b, d), t(b, d), t(4 * d, d), t(4 * d, d), t(4 * d), t(4 * d)
calls = [lambda s=s: fused_projection_triton([xs[i] if i in s else None for i in range(3)], ws, bias, "relu", True)
         for s in subsets]
calls += [lambda m=m: gated_fusion_triton(feats, logits, m) for m in masks]
calls += [lambda m=m: mfb_triton(x, y, u, ub, v, vb, 4, m[:, :2].contiguous()) for m in masks]
print(json.dumps(jit_binaries(calls)))
"""


def test_sensors_dropping_out_and_back_compile_nothing_new():
    """Every subset of present sensors (and every presence mask) runs the binary the first
    call compiled: a sensor failing mid-run must not stall the next frame on a JIT compile.
    Triton's own specialisation decides, on a stand-in sm_90 GPU (tools/aot.py)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "EDGEFUSE_KERNELS")}
    run = subprocess.run([sys.executable, "-c", PRESENCE_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    binaries = json.loads(run.stdout.strip().splitlines()[-1])
    assert binaries == {
        "_fused_projection_kernel": 1,
        "_split_k_epilogue": 1,
        "_gated_kernel": 1,
        "_mfb_kernel": 1,
        "_l2norm_rows_kernel": 1,
    }, binaries


def test_kernel_annotations_are_objects_for_older_tritons():
    """Triton 3.0-3.1's interpreter reads a kernel's ``tl.constexpr`` parameters from their
    annotation objects: under ``from __future__ import annotations`` they are strings, and every
    interpreted kernel fails ("arange's arguments must be of type tl.constexpr")."""
    import inspect

    from tools.aot import our_kernels

    kernels = list(our_kernels().values())
    assert len(kernels) >= 7
    for k in kernels:
        for p in inspect.signature(k.fn).parameters.values():
            assert not isinstance(p.annotation, str), (k.fn.__name__, p.name, p.annotation)
