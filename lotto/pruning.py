"""Scoring and selection: which weights to prune. Pure functions of weight tensors and masks."""

from __future__ import annotations

import numpy as np
import torch

from lotto.masks import Mask


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


def _abs_scores(weights: dict[str, torch.Tensor], names: list[str]) -> np.ndarray:
    """|w| of every prunable weight, concatenated in model order, as one float32 vector (one copy)."""
    d = sum(weights[n].numel() for n in names)
    flat = np.empty(d, dtype=np.float32)
    offset = 0
    for n in names:
        w = weights[n].detach().reshape(-1).to("cpu", torch.float32).numpy()
        np.abs(w, out=flat[offset : offset + w.size])
        offset += w.size
    return flat


def global_magnitude(
    weights: dict[str, torch.Tensor], sparsity: float, current: Mask | None = None
) -> Mask:
    """One-shot global magnitude pruning: remove exactly round(s * d) of the d prunable weights.

    ``weights``: prunable tensors by name, in model order. With ``current`` (iterative pruning), the
    weights it already prunes stay pruned and count towards the target; the rest are chosen among the
    kept ones by magnitude.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    names = list(weights)
    scores = _abs_scores(weights, names)
    d = scores.size
    n_prune = int(round(sparsity * d))
    if current is not None:
        if current.names != names:
            raise ValueError("current mask does not match the weights' layers")
        kept = current.flat_bools()
        already = d - int(np.count_nonzero(kept))
        if n_prune < already:
            raise ValueError(f"target sparsity {sparsity} is below the current mask's {already / d:.4f}")
        np.copyto(scores, -1.0, where=~kept)  # pruned ones go first
    keep = _keep_all_but_smallest(scores, n_prune)
    layout = tuple((n, tuple(int(x) for x in weights[n].shape)) for n in names)
    return Mask(layout, np.packbits(keep), {"method": "global_magnitude", "sparsity": sparsity})


def prunable_weights(model_or_state, names: list[str]) -> dict[str, torch.Tensor]:
    state = model_or_state.state_dict() if hasattr(model_or_state, "state_dict") else model_or_state
    missing = [n for n in names if n not in state]
    if missing:
        raise KeyError(f"prunable weights missing from the checkpoint: {missing}")
    return {n: state[n] for n in names}
