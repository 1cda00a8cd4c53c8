"""Engine selection: which engine (or late-fused set of single-sensor engines) answers for a live sensor set.

The exact live set's engine when the bundle has one. Otherwise, by the policy's fallback:
``best``, the engine of a subset of the live sensors with the best manifest accuracy (ties
go to the larger subset); ``late``, the live sensors' single-sensor engines combined by one
of the fusion library's late combiners, re-implemented here in numpy (the runtime never
imports torch). A live set no engine can serve has no plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from edgefuse.errors import EdgefuseError
from edgefuse.runtime.policy import COMBINERS, Policy
from edgefuse.specs import SUBSET_SEP


@dataclass(frozen=True)
class Plan:
    """What runs for one live set.

    Attributes:
        name: the engine's subset name (``camera+lidar``), or ``late:<combiner>(<subsets>)``.
        members: the sensors whose frames it reads, in spec order.
        steps: ``(engine name, engine, feeds)`` per engine run; ``feeds`` holds the runtime's
            preallocated ``[1, *shape]`` input buffers, filled before each run.
        combiner: the late-fusion combiner, or None for one engine.
        weights: late fusion's per-engine weights (``weighted`` only).
        accuracy: the manifest accuracy of the engine (None for late fusion).
        exact: whether every live sensor is used.
        present: split bundles: the head's ``[1, N]`` presence mask for this live set (else None).
        rows: split bundles: ``[N, 1]`` row weights, 1 for the used sensors' embeddings, 0 elsewhere.
    """

    name: str
    members: tuple[str, ...]
    steps: tuple[tuple[str, Any, dict[str, np.ndarray]], ...]
    combiner: str | None
    weights: np.ndarray | None
    accuracy: float | None
    exact: bool
    present: np.ndarray | None = None
    rows: np.ndarray | None = None


def make_plan(
    live: Sequence[str],
    engines: Mapping[str, Any],
    accuracy: Mapping[str, float | None],
    policy: Policy,
    buffers: Mapping[str, np.ndarray],
) -> Plan | None:
    """The plan for the live sensors ``live`` (in spec order), or None when nothing can serve them."""
    live = tuple(live)
    if not live:
        return None
    key = SUBSET_SEP.join(live)
    if key in engines:
        return _single(key, engines, accuracy, buffers, exact=True)
    if policy.fallback == "late":
        singles = [m for m in live if m in engines]
        if len(singles) >= 2:
            if policy.combiner == "weighted":
                ws = [float((policy.weights or {}).get(m, accuracy.get(m) or 1.0)) for m in singles]
                weights = np.asarray(ws, dtype=np.float64)
            else:
                weights = None
            steps = tuple((m, engines[m], {m: buffers[m]}) for m in singles)
            return Plan(
                f"late:{policy.combiner}({','.join(singles)})",
                tuple(singles),
                steps,
                policy.combiner,
                weights,
                None,
                len(singles) == len(live),
            )
    members = set(live)
    candidates = [k for k in engines if set(k.split(SUBSET_SEP)) <= members]
    if not candidates:
        return None
    best = max(
        candidates, key=lambda k: (accuracy.get(k) if accuracy.get(k) is not None else -1.0, k.count(SUBSET_SEP))
    )
    return _single(best, engines, accuracy, buffers, exact=False)


def _single(
    key: str,
    engines: Mapping[str, Any],
    accuracy: Mapping[str, float | None],
    buffers: Mapping[str, np.ndarray],
    exact: bool,
) -> Plan:
    members = tuple(key.split(SUBSET_SEP))
    return Plan(
        key, members, ((key, engines[key], {m: buffers[m] for m in members}),), None, None, accuracy.get(key), exact
    )


def log_softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in a new array (float32 logits give float32 probabilities)."""
    z = x - x.max(-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(-1, keepdims=True)
    return z


def combine(logits: np.ndarray, combiner: str, weights: np.ndarray | None = None) -> np.ndarray:
    """Late fusion of ``N`` engines' logits ``[N, B, C]`` -> class probabilities ``[B, C]``.

    The same combiners as ``edgefuse.fusion.LateFusion`` (mean; weighted mean; poe, the
    product of experts in log space, renormalised; max, renormalised; vote, the majority
    with ties broken by the highest confidence among the tied classes' voters), over
    engines that are all present.
    """
    if combiner not in COMBINERS:
        raise EdgefuseError(f"late-fusion combiner must be one of {COMBINERS}, got {combiner!r}")
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 3 or logits.shape[0] < 1:
        raise EdgefuseError(f"expected logits [N >= 1, B, C], got shape {list(logits.shape)}")
    logp = log_softmax(logits)
    if combiner == "poe":
        return softmax(logp.sum(0))
    probs = np.exp(logp)
    if combiner == "max":
        mx = probs.max(0)
        return mx / mx.sum(-1, keepdims=True)
    if combiner == "vote":
        n, b, c = probs.shape
        conf, choice = probs.max(-1), probs.argmax(-1)  # [N, B]
        onehot = np.zeros((n, b, c))
        np.put_along_axis(onehot, choice[..., None], 1.0, axis=-1)
        score = onehot.sum(0) + 0.5 * (onehot * conf[..., None]).max(0)  # a confidence < 1 never outweighs a vote
        return score / score.sum(-1, keepdims=True)
    if combiner == "weighted":
        if weights is None or len(weights) != logits.shape[0]:
            raise EdgefuseError(f"the weighted combiner needs one weight per engine ({logits.shape[0]}), got {weights}")
        w = np.asarray(weights, dtype=np.float64)
        total = w.sum()
        w = w / total if total > 0 else np.full_like(w, 1.0 / len(w))
    else:
        w = np.full(logits.shape[0], 1.0 / logits.shape[0])
    return np.tensordot(w, probs, axes=1)
