"""Which weights to prune: pure functions of weight tensors and masks, and the registry of pruning methods.

Two layers:

* the primitive :func:`global_magnitude` (and :func:`prune_count`): one-shot global magnitude pruning that
  removes an exact number of weights, on numpy (no torch needed: mask jobs stay light);
* the method registry :data:`METHODS` (Paganini & Forde 2020's zoo): ``prune(method, weights, amount, ...)``
  removes ``amount`` of what is still alive with ``torch.nn.utils.prune``'s semantics (which tests check mask
  for mask): per layer for local methods, over all layers for the global one, counted in weights for
  unstructured methods and in channels (slices along ``dim``) for structured ones. The number removed is
  ``round(amount * alive)`` (Python's rounding, as torch). Already-pruned weights stay pruned. Ties in the
  scores are broken by position (earlier pruned first).

Adding a method = one function decorated with ``@register_method(name)`` here (the config schema's lists of
methods are filled from the registry, ``x-registry: "lotto.pruning:METHODS"``: this module imports no torch).
It receives the weights and the current per-layer keep arrays (torch tensors) and returns the new keep arrays.

Not built on ``torch.nn.utils.prune`` (that only serves the tests as a reference). torch is imported inside the
methods, never at module level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from lotto.masks import Mask, check_fits
from lotto.seeds import derive_seed


# Below this many scores a plain introselect over everything is as fast as the sampled window.
_SAMPLE_FROM = 1 << 17
_SAMPLE_SIZE = 1 << 16


def _kth_smallest(scores: np.ndarray, k: int) -> float:
    """The k-th smallest value (1-based) of a float32 vector, exactly.

    A sorted strided sample brackets the target rank with a wide (6-sigma) margin; one counting pass and
    one compress pass leave a window of ~1-2% of the values for the introselect. If the bracket misses
    (adversarial layouts can fool a strided sample) it falls back to selecting over everything, so the
    sample only decides speed, never the answer. At ResNet-50 scale (25.5M weights) this is ~5x faster
    than ``torch.kthvalue``.
    """
    d = scores.size
    if d >= _SAMPLE_FROM:
        sample = np.sort(scores[:: d // _SAMPLE_SIZE])
        m = sample.size
        q = k / d
        margin = 6.0 * np.sqrt(max(q * (1.0 - q), 1.0 / m) / m) + 2.0 / m
        lo_i, hi_i = int(np.floor((q - margin) * m)), int(np.ceil((q + margin) * m))
        lo = sample[lo_i] if lo_i >= 0 else -np.inf
        hi = sample[hi_i] if hi_i < m else np.inf
        inside = scores >= lo
        below = d - int(np.count_nonzero(inside))
        if below < k:
            np.logical_and(inside, scores <= hi, out=inside)
            window = scores[inside]
            if below + window.size >= k:
                return float(np.partition(window, k - 1 - below)[k - 1 - below])
    return float(np.partition(scores, k - 1)[k - 1])


def _keep_all_but_smallest(scores: np.ndarray, n: int) -> np.ndarray:
    """Boolean vector keeping every entry except exactly ``n`` with the smallest values.

    Ties at the threshold are broken by position (earlier entries are pruned first), so the result is
    deterministic and the same as a stable sort would give.
    """
    d = scores.size
    if n <= 0:
        return np.ones(d, dtype=bool)
    if n >= d:
        return np.zeros(d, dtype=bool)
    threshold = _kth_smallest(scores, n)
    keep = scores > threshold
    at_or_below = d - int(np.count_nonzero(keep))
    if at_or_below != n:  # more than one score equals the threshold: prune the earliest ties only
        ties = np.flatnonzero(scores == threshold)
        need = n - (at_or_below - ties.size)
        keep[ties[need:]] = True
    return keep


def as_numpy(t) -> np.ndarray:
    """A weight as a float32 numpy array (torch tensors are copied to the CPU; numpy arrays pass through)."""
    if hasattr(t, "detach"):
        import torch

        return t.detach().to("cpu", torch.float32).numpy()
    return np.asarray(t, dtype=np.float32)


def _shape(t) -> tuple[int, ...]:
    return tuple(int(x) for x in t.shape)


def _abs_scores(weights: dict, names: list[str]) -> np.ndarray:
    """|w| of every prunable weight, concatenated in model order, as one float32 vector (one copy)."""
    d = sum(math.prod(_shape(weights[n])) for n in names)
    flat = np.empty(d, dtype=np.float32)
    offset = 0
    for n in names:
        w = as_numpy(weights[n]).reshape(-1)
        np.abs(w, out=flat[offset : offset + w.size])
        offset += w.size
    return flat


def global_magnitude(weights: dict, sparsity: float, current: Mask | None = None) -> Mask:
    """One-shot global magnitude pruning: remove exactly round(s * d) of the d prunable weights.

    ``weights``: prunable tensors (torch or numpy) by name, in model order. With ``current`` (iterative
    pruning), the weights it already prunes stay pruned and count towards the target; the rest are chosen
    among the kept ones by magnitude.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    d = sum(math.prod(_shape(w)) for w in weights.values())
    return prune_count(weights, int(round(sparsity * d)), current).with_meta(sparsity=sparsity)


def prune_count(weights: dict, n_prune: int, current: Mask | None = None) -> Mask:
    """Global magnitude pruning to exactly ``n_prune`` pruned weights in all (those ``current`` prunes first)."""
    names = list(weights)
    scores = _abs_scores(weights, names)
    d = scores.size
    if not 0 <= n_prune <= d:
        raise ValueError(f"cannot prune {n_prune} of {d} weights")
    if current is not None:
        check_fits(current, weights, "the weights being pruned")
        kept = current.flat_bools()
        already = d - int(np.count_nonzero(kept))
        if n_prune < already:
            raise ValueError(f"target sparsity {n_prune / d:.4f} is below the current mask's {already / d:.4f}")
        np.copyto(scores, -1.0, where=~kept)  # pruned ones go first
    keep = _keep_all_but_smallest(scores, n_prune)
    layout = tuple((n, _shape(weights[n])) for n in names)
    return Mask(layout, np.packbits(keep), {"method": "global_magnitude", "sparsity": n_prune / d if d else 0.0})


def kept_at(d: int, sparsity: float) -> int:
    """Weights :func:`global_magnitude` keeps of ``d`` at ``sparsity``: d - round(s * d) (Python's rounding).

    The one definition of "exactly the target sparsity": a matched composed ticket keeps as many weights as the
    one-shot ticket of its sparsity column.
    """
    return d - int(round(sparsity * d))


def _same_layers(weight_sets: Sequence[dict]) -> tuple[list[str], list[tuple[int, ...]]]:
    if not weight_sets:
        raise ValueError("need at least one set of weights")
    names = list(weight_sets[0])
    shapes = [_shape(weight_sets[0][n]) for n in names]
    for i, ws in enumerate(weight_sets[1:], start=1):
        if list(ws) != names or [_shape(ws[n]) for n in names] != shapes:
            raise ValueError(f"weight set #{i} has other layers or shapes than the first (different networks?)")
    return names, shapes


def mean_abs(weight_sets: Sequence[dict]) -> dict[str, np.ndarray]:
    """Per layer, the mean over networks of |w|, as float32.

    Summed in float64, so k identical networks give back exactly their own |w| (a float32 sum could round
    and create ties that reorder the ranking).
    """
    names, _ = _same_layers(weight_sets)
    out = {}
    for n in names:
        total = np.zeros(_shape(weight_sets[0][n]), dtype=np.float64)
        for ws in weight_sets:
            total += np.abs(as_numpy(ws[n]))
        out[n] = (total / len(weight_sets)).astype(np.float32)
    return out


def mean_magnitude(weight_sets: Sequence[dict], sparsity: float) -> Mask:
    """Prune the mean of k networks' |w| at ``sparsity`` by global magnitude: a consensus by score, against
    which consensus by vote (:func:`lotto.masks.vote`) is compared."""
    mask = global_magnitude(mean_abs(weight_sets), sparsity)
    return mask.with_meta(method="mean_magnitude", networks=len(weight_sets))


def match_kept(mask: Mask, scores: dict, n_keep: int) -> Mask:
    """``mask`` changed to keep exactly ``n_keep`` weights, chosen by ``scores`` (by name, in the mask's layout).

    Too many kept (a union): its lowest-scoring kept weights are pruned. Too few (an intersection, a vote): its
    highest-scoring pruned weights grow back. What the mask keeps is otherwise untouched: the result keeps the
    ``n_keep`` weights that are largest by (kept in ``mask``, score), ties broken by position as in
    :func:`global_magnitude` (earlier pruned first).
    """
    names = mask.names
    if list(scores) != names or [_shape(scores[n]) for n in names] != [tuple(s) for _, s in mask.layout]:
        raise ValueError("the scores do not match the mask's layers (different networks?)")
    d = mask.total
    if not 0 <= n_keep <= d:
        raise ValueError(f"cannot keep {n_keep} of {d} weights")
    kept = mask.flat_bools()
    have = int(np.count_nonzero(kept))
    if have == n_keep:
        return Mask(mask.layout, mask.bits, dict(mask.meta))
    flat = np.concatenate([as_numpy(scores[n]).reshape(-1) for n in names])
    if not np.isfinite(flat).all():
        raise ValueError("scores must be finite")
    # the weights on the far side of the mask's line go all first (pruned) or all last (kept)
    np.copyto(flat, -np.inf if have > n_keep else np.inf, where=~kept if have > n_keep else kept)
    return Mask(mask.layout, np.packbits(_keep_all_but_smallest(flat, d - n_keep)), dict(mask.meta))


def prunable_weights(model_or_state, names: list[str]) -> dict:
    state = model_or_state.state_dict() if hasattr(model_or_state, "state_dict") else model_or_state
    missing = [n for n in names if n not in state]
    if missing:
        raise KeyError(f"prunable weights missing from the checkpoint: {missing}")
    return {n: state[n] for n in names}


# --------------------------------------------------------------------------- the method registry
@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable  # (weights, kept, amount, dim, seed) -> new kept, each a dict name -> torch tensor
    random: bool  # needs a seed
    description: str


#: name -> Method, in registration order (the config schema's list of zoo.methods)
METHODS: dict[str, Method] = {}


def register_method(name: str, *, random: bool = False):
    """Decorator: add a pruning method to :data:`METHODS` under ``name`` (its docstring is its description)."""

    def deco(fn):
        if name in METHODS:
            raise ValueError(f"pruning method {name!r} is registered twice")
        METHODS[name] = Method(name, fn, random, " ".join((fn.__doc__ or "").split()))
        return fn

    return deco


def _drop_smallest(scores, alive, amount: float):
    """``alive`` (flat bool tensor) with round(amount * alive) more entries, those of smallest score, set False.

    A stable sort breaks ties by position."""
    import torch

    idx = torch.nonzero(alive, as_tuple=False).flatten()
    n = round(amount * idx.numel())
    out = alive.clone()
    if n > 0:
        out[idx[torch.argsort(scores[idx], stable=True)[:n]]] = False
    return out


def _generator(seed: int, name: str):
    import torch

    return torch.Generator().manual_seed(derive_seed(seed, name))


def _unstructured(w, kept, amount: float, scores):
    return _drop_smallest(scores.reshape(-1), kept.reshape(-1), amount).reshape(w.shape)


def _structured(w, kept, amount: float, dim: int, scores_fn):
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
        import torch

        return torch.linalg.vector_norm(w.float(), ord=p, dim=other)

    return scores


def _is_conv(w) -> bool:
    return w.ndim > 2


def _per_layer(fn):
    """A local method from a per-layer rule ``fn(name, w, kept, amount, dim, seed) -> kept``."""

    def method(weights, kept, amount, dim, seed):
        return {n: fn(n, weights[n], kept[n], amount, dim, seed) for n in weights}

    method.__doc__ = fn.__doc__
    return method


@register_method("global_l1")
def _global_l1(weights, kept, amount, dim, seed):
    """global unstructured magnitude pruning over all layers together (the one global-magnitude primitive)."""
    import torch

    names = list(weights)
    d = sum(w.numel() for w in weights.values())
    current = Mask.from_bools([(n, kept[n]) for n in names])
    alive = current.kept()
    new = prune_count({n: weights[n] for n in names}, (d - alive) + round(amount * alive), current)
    return {n: torch.from_numpy(a.copy()) for n, a in new.layers().items()}


@register_method("l1_unstructured")
@_per_layer
def _l1_unstructured(n, w, k, amount, dim, seed):
    """unstructured magnitude pruning, per layer."""
    return _unstructured(w, k, amount, w.float().abs())


@register_method("random_unstructured", random=True)
@_per_layer
def _random_unstructured(n, w, k, amount, dim, seed):
    """per layer, uniformly at random (seeded)."""
    import torch

    return _unstructured(w, k, amount, torch.rand(w.shape, generator=_generator(seed, n)))


def _structured_method(name: str, p: float):
    @_per_layer
    def rule(n, w, k, amount, dim, seed):
        return _structured(w, k, amount, dim, _norm_scores(p))

    rule.__doc__ = f"whole slices along dim with the smallest L-{p} norm, per layer."
    register_method(name)(rule)


_structured_method("l1_structured", 1)
_structured_method("l2_structured", 2)
_structured_method("linf_structured", math.inf)


@register_method("random_structured", random=True)
@_per_layer
def _random_structured(n, w, k, amount, dim, seed):
    """whole slices per layer, at random (seeded)."""
    import torch

    gen = _generator(seed, n)
    return _structured(w, k, amount, dim, lambda w_, d_, o_: torch.rand(w_.shape[d_], generator=gen))


@register_method("hybrid")
@_per_layer
def _hybrid(n, w, k, amount, dim, seed):
    """L1-structured on convolutions, L1-unstructured on fully connected layers."""
    if _is_conv(w):
        return _structured(w, k, amount, dim, _norm_scores(1))
    return _unstructured(w, k, amount, w.float().abs())


@register_method("fc_only")
@_per_layer
def _fc_only(n, w, k, amount, dim, seed):
    """L1-unstructured on fully connected layers; convolutions are left as they are."""
    return k if _is_conv(w) else _unstructured(w, k, amount, w.float().abs())


def prune(method: str, weights: dict, amount: float, current: Mask | None = None, dim: int = 0,
          seed: int | None = None) -> Mask:
    """One pruning step of ``method``: remove ``amount`` of what ``current`` (default: nothing) keeps."""
    import torch

    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; known: {', '.join(METHODS)}")
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"amount must be in [0, 1], got {amount}")
    spec = METHODS[method]
    if spec.random and seed is None:
        raise ValueError(f"method {method!r} needs a seed")
    names = list(weights)
    w = {n: (weights[n].detach().to("cpu") if hasattr(weights[n], "detach") else torch.from_numpy(np.asarray(weights[n])))
         for n in names}
    if current is None:
        kept = {n: torch.ones(w[n].shape, dtype=torch.bool) for n in names}
    else:
        check_fits(current, w, "the weights being pruned")
        kept = current.to_torch()
    out = spec.fn(w, kept, amount, dim, seed)
    meta = {"method": method, "amount": amount, "dim": dim}
    if seed is not None and spec.random:
        meta["seed"] = seed
    return Mask.from_bools([(n, out[n]) for n in names], meta=meta)
