"""Linear mode connectivity: networks on lines and planes through trained solutions, and their errors.

Points are affine combinations of state dicts, w = base + sum_i c_i (other_i - base), applied to every
floating-point tensor of the state dict (weights, biases, BatchNorm affine parameters and running
statistics alike); integer buffers (BatchNorm's batch counter) are the base's. A weight that is zero in
every endpoint (pruned by all of them) is therefore exactly zero at every point.

BatchNorm statistics of such a point (``bn_stats``) are either
* ``interpolate``: the endpoints' running statistics combined like the weights (running variances are
  clamped at 0 where a plane extrapolates them below it), or
* ``recompute``: reset and re-estimated with a cumulative average over un-augmented training batches, at
  every point, endpoints included (so each endpoint is scored with statistics of the same estimator).

Error barrier (Paul et al. 2022, after Frankle et al. 2020): the smallest eps >= 0 such that the error
along the path stays at or below the linear interpolation of the endpoints' errors plus eps, i.e.
max(0, max_beta [err(beta) - ((1 - beta) err(0) + beta err(1))]).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from lotto.train import evaluate

BN_MODES = ("recompute", "interpolate")

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]


# --------------------------------------------------------------------------- points
def combine(base: dict, terms: Iterable[tuple[float, dict]], clamp_var: bool = True) -> dict:
    """base + sum c * (other - base) over floating tensors; non-floating tensors are the base's."""
    terms = list(terms)
    out = {}
    for name, t in base.items():
        if not torch.is_floating_point(t):
            out[name] = t
            continue
        v = t.clone()
        for c, other in terms:
            if c:
                v.add_(other[name] - t, alpha=float(c))
        if clamp_var and name.endswith("running_var"):
            v.clamp_(min=0.0)
        out[name] = v
    return out


def interpolate(a: dict, b: dict, beta: float) -> dict:
    """(1 - beta) a + beta b (exactly a at beta = 0 and exactly b at beta = 1)."""
    if beta == 0:
        return dict(a)
    if beta == 1:
        return dict(b)
    return combine(a, [(beta, b)])


# --------------------------------------------------------------------------- BatchNorm
def batchnorms(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute_bn(model: torch.nn.Module, batches: Batches) -> None:
    """Replace every BatchNorm's running statistics by their cumulative average over ``batches``."""
    bns = batchnorms(model)
    if not bns:
        return
    if not batches:
        raise ValueError("recomputing BatchNorm statistics needs at least one training batch")
    saved = [(m, m.momentum) for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    try:
        for x, _ in batches:
            model(x)
    finally:
        for m, mom in saved:
            m.momentum = mom
        model.train(was_training)


class Scorer:
    """Loads a state into one model and scores it on fixed batches, with the configured BatchNorm handling."""

    def __init__(self, model: torch.nn.Module, eval_batches: Batches, bn_stats: str = "recompute",
                 bn_batches: Batches = (), device: torch.device | str = "cpu"):
        if bn_stats not in BN_MODES:
            raise ValueError(f"bn_stats must be one of {BN_MODES}, got {bn_stats!r}")
        self.model = model.to(device)
        self.device = torch.device(device)
        self.eval_batches = list(eval_batches)
        self.bn_stats = bn_stats
        self.bn_batches = list(bn_batches)
        self.has_bn = bool(batchnorms(model))
        if self.has_bn and bn_stats == "recompute" and not self.bn_batches:
            raise ValueError("bn_stats 'recompute' needs training batches (bn_batches)")

    def __call__(self, state: dict) -> dict:
        self.model.load_state_dict(state)
        if self.has_bn and self.bn_stats == "recompute":
            recompute_bn(self.model, self.bn_batches)
        r = evaluate(self.model, self.eval_batches, self.device)
        return {"loss": r["loss"], "accuracy": r["accuracy"], "error": 1.0 - r["accuracy"], "correct": r["correct"]}


def to_device(state: dict, device) -> dict:
    return {k: v.to(device) for k, v in state.items()}


def limit_batches(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], limit: int | None) -> list:
    """The first ``limit`` examples of a batch stream (all when None), as a list of batches."""
    out, n = [], 0
    for x, y in batches:
        if limit is not None and n + len(y) > limit:
            x, y = x[: limit - n], y[: limit - n]
        if len(y):
            out.append((x, y))
        n += len(y)
        if limit is not None and n >= limit:
            break
    return out


# --------------------------------------------------------------------------- paths
def path(score: Callable[[dict], dict], a: dict, b: dict, betas: Sequence[float]) -> list[dict]:
    """Score (1 - beta) a + beta b at every beta: [{beta, loss, accuracy, error, correct}, ...]."""
    return [{"beta": float(beta), **score(interpolate(a, b, float(beta)))} for beta in betas]


def barrier(betas: Sequence[float], errors: Sequence[float]) -> float:
    """Smallest eps >= 0 with err(beta) <= (1 - beta) err(0) + beta err(1) + eps along the whole grid."""
    betas = np.asarray(betas, dtype=float)
    errors = np.asarray(errors, dtype=float)
    if betas.size < 2 or betas[0] != 0.0 or betas[-1] != 1.0 or np.any(np.diff(betas) <= 0):
        raise ValueError("the beta grid must increase from 0 to 1 (both endpoints included)")
    linear = (1.0 - betas) * errors[0] + betas * errors[-1]
    return float(max(0.0, np.max(errors - linear)))


def max_pruned_magnitude(state: dict, pruned: dict[str, torch.Tensor]) -> float:
    """Largest |w| among the weights a mask prunes (``pruned``: name -> bool tensor, True = pruned)."""
    m = 0.0
    for name, p in pruned.items():
        if p.any():
            m = max(m, float(state[name][p.to(state[name].device)].abs().max()))
    return m


# --------------------------------------------------------------------------- planes
def _flat(state: dict, names: Sequence[str]) -> torch.Tensor:
    return torch.cat([state[n].reshape(-1).double() for n in names])


class Plane:
    """The plane through three networks o, p, q, with orthonormal coordinates (Gram-Schmidt on p-o, q-o).

    Coordinates (x, y) of the point o + x e1 + y e2 are in units of the parameter-space (L2) distance over
    the trainable parameters; a point's state dict is the affine combination o + ca (p - o) + cb (q - o)
    with the same coefficients applied to every floating tensor (BatchNorm buffers included).
    """

    def __init__(self, o: dict, p: dict, q: dict, names: Sequence[str]):
        self.o, self.p, self.q = o, p, q
        u = _flat(p, names) - _flat(o, names)
        v = _flat(q, names) - _flat(o, names)
        nu = float(u.norm())
        if nu == 0.0:
            raise ValueError("the plane's first two points coincide (nothing was pruned?)")
        e1 = u / nu
        self.v_along = float(v @ e1)
        v_perp = v - self.v_along * e1
        self.v_across = float(v_perp.norm())
        if self.v_across <= 1e-12 * max(nu, float(v.norm())):
            raise ValueError("the three networks are collinear: they span no plane")
        self.u_norm = nu

    def coords(self) -> dict[str, tuple[float, float]]:
        """(x, y) of the three defining points: o at the origin, p on the x axis."""
        return {"o": (0.0, 0.0), "p": (self.u_norm, 0.0), "q": (self.v_along, self.v_across)}

    def coefficients(self, x: float, y: float) -> tuple[float, float]:
        cb = y / self.v_across
        ca = (x - cb * self.v_along) / self.u_norm
        return ca, cb

    def state(self, x: float, y: float) -> dict:
        ca, cb = self.coefficients(x, y)
        return combine(self.o, [(ca, self.p), (cb, self.q)])

    def grid(self, n: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
        """n x-values and n y-values spanning the three points plus ``margin`` of their extent on each side."""
        pts = np.array(list(self.coords().values()))
        lo, hi = pts.min(0), pts.max(0)
        span = np.maximum(hi - lo, 1e-12)
        lo, hi = lo - margin * span, hi + margin * span
        return np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n)


def slice_errors(score: Callable[[dict], dict], plane: Plane, xs: np.ndarray, ys: np.ndarray,
                 log: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """Error and loss at every grid point: arrays of shape (len(ys), len(xs)) (row = y)."""
    err = np.full((len(ys), len(xs)), math.nan)
    loss = np.full_like(err, math.nan)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            r = score(plane.state(float(x), float(y)))
            err[i, j], loss[i, j] = r["error"], r["loss"]
        if log:
            log(f"slice row {i + 1}/{len(ys)} done")
    return {"error": err, "loss": loss}
