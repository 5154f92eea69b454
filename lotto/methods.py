"""The pruning-method zoo of Paganini & Forde (2020), one interface: ``prune(method, weights, amount, ...)``.

Every method maps prunable weight tensors (``dict[name, Tensor]`` in model order; only conv and linear
*weights*, never biases or BatchNorm) and, for iterative pruning, the ``current`` mask to a new
:class:`lotto.masks.Mask`. ``amount`` is the fraction of what is still alive that this call removes, with
``torch.nn.utils.prune``'s semantics (which tests check mask for mask): per layer for local methods, over
all layers for the global one, and counted in weights for unstructured methods but in channels (slices along
``dim``) for structured ones. The number removed is ``round(amount * alive)`` (Python's rounding, as torch).
Already-pruned weights stay pruned. Ties in the scores are broken by position (earlier pruned first).

Methods (``METHODS``):

* ``global_l1``: global unstructured magnitude pruning over all layers together.
* ``l1_unstructured``: the same per layer.
* ``random_unstructured``: per layer, uniformly at random (seeded).
* ``l1_structured``, ``l2_structured``, ``linf_structured``: whole slices along ``dim`` (0 = output channels
  / neurons, 1 = input channels / features) with the smallest L1 / L2 / L-infinity norm, per layer.
* ``random_structured``: whole slices per layer, at random (seeded).
* ``hybrid``: L1-structured on convolutions, L1-unstructured on fully connected layers.
* ``fc_only``: L1-unstructured on fully connected layers; convolutions are left as they are.

This module is not built on ``torch.nn.utils.prune`` (that only serves the tests as a reference).
"""

from __future__ import annotations

import math

import torch

from lotto.masks import Mask
from lotto.seeds import derive_seed

STRUCTURED_NORMS = {"l1_structured": 1, "l2_structured": 2, "linf_structured": math.inf}
METHODS = (
    "global_l1",
    "l1_unstructured",
    "random_unstructured",
    "l1_structured",
    "l2_structured",
    "linf_structured",
    "random_structured",
    "hybrid",
    "fc_only",
)
RANDOM_METHODS = ("random_unstructured", "random_structured")


def _n_prune(amount: float, alive: int) -> int:
    return round(amount * alive)


def _select_smallest(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Boolean vector marking the ``n`` smallest scores; a stable sort breaks ties by position."""
    chosen = torch.zeros(scores.numel(), dtype=torch.bool)
    if n > 0:
        chosen[torch.argsort(scores, stable=True)[:n]] = True
    return chosen


def _generator(seed: int, name: str) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, name))


def _drop_smallest(scores: torch.Tensor, alive: torch.Tensor, amount: float) -> torch.Tensor:
    """``alive`` (flat bool) with round(amount * alive) more entries, those of smallest score, set False."""
    idx = torch.nonzero(alive, as_tuple=False).flatten()
    chosen = _select_smallest(scores[idx], _n_prune(amount, idx.numel()))
    out = alive.clone()
    out[idx[chosen]] = False
    return out


def _unstructured(w: torch.Tensor, kept: torch.Tensor, amount: float, scores: torch.Tensor) -> torch.Tensor:
    return _drop_smallest(scores.reshape(-1), kept.reshape(-1), amount).reshape(w.shape)


def _structured(w: torch.Tensor, kept: torch.Tensor, amount: float, dim: int, scores_fn) -> torch.Tensor:
    if not 0 <= dim < w.ndim:
        raise ValueError(f"structured pruning along dim {dim}, but a weight has only {w.ndim} dimensions")
    other = [d for d in range(w.ndim) if d != dim]
    # a slice is alive while any of its weights is kept (torch's PruningContainer rule)
    alive = kept.sum(dim=other) != 0
    chan_keep = _drop_smallest(scores_fn(w, dim, other), alive, amount)
    shape = [1] * w.ndim
    shape[dim] = -1
    return kept & chan_keep.view(shape)


def _norm_scores(p):
    def scores(w, dim, other):
        return torch.linalg.vector_norm(w.float(), ord=p, dim=other)

    return scores


def _random_scores(gen):
    def scores(w, dim, other):
        return torch.rand(w.shape[dim], generator=gen)

    return scores


def _is_conv(w: torch.Tensor) -> bool:
    return w.ndim > 2


def prune(
    method: str,
    weights: dict[str, torch.Tensor],
    amount: float,
    current: Mask | None = None,
    dim: int = 0,
    seed: int | None = None,
) -> Mask:
    """One pruning step of ``method``: remove ``amount`` of what ``current`` (default: nothing) keeps."""
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; known: {', '.join(METHODS)}")
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"amount must be in [0, 1], got {amount}")
    if method in RANDOM_METHODS and seed is None:
        raise ValueError(f"method {method!r} needs a seed")
    names = list(weights)
    w = {n: weights[n].detach().to("cpu") for n in names}
    if current is None:
        kept = {n: torch.ones(w[n].shape, dtype=torch.bool) for n in names}
    else:
        if current.names != names or [tuple(s) for _, s in current.layout] != [tuple(w[n].shape) for n in names]:
            raise ValueError("the current mask does not match the weights' layers (different networks?)")
        kept = current.to_torch()

    out = dict(kept)
    if method == "global_l1":
        flat_w = torch.cat([w[n].reshape(-1).float().abs() for n in names])
        flat_k = torch.cat([kept[n].reshape(-1) for n in names])
        new = _drop_smallest(flat_w, flat_k, amount)
        offset = 0
        for n in names:
            size = w[n].numel()
            out[n] = new[offset : offset + size].reshape(w[n].shape)
            offset += size
    else:
        for n in names:
            t, k = w[n], kept[n]
            if method == "l1_unstructured" or (method in ("hybrid", "fc_only") and not _is_conv(t)):
                out[n] = _unstructured(t, k, amount, t.float().abs())
            elif method == "random_unstructured":
                out[n] = _unstructured(t, k, amount, torch.rand(t.shape, generator=_generator(seed, n)))
            elif method in STRUCTURED_NORMS:
                out[n] = _structured(t, k, amount, dim, _norm_scores(STRUCTURED_NORMS[method]))
            elif method == "random_structured":
                out[n] = _structured(t, k, amount, dim, _random_scores(_generator(seed, n)))
            elif method == "hybrid":  # a convolution
                out[n] = _structured(t, k, amount, dim, _norm_scores(1))
            # fc_only leaves convolutions as they are
    meta = {"method": method, "amount": amount, "dim": dim}
    if seed is not None and method in RANDOM_METHODS:
        meta["seed"] = seed
    return Mask.from_bools([(n, out[n]) for n in names], meta=meta)
