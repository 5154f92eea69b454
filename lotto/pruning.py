"""Scoring and selection: which weights to prune. Pure functions of weight tensors and masks."""

from __future__ import annotations

import torch

from lotto.masks import Mask


def _select_smallest(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Boolean vector marking exactly ``n`` entries of ``scores`` with the smallest values.

    Ties at the threshold are broken by position (earlier first), so the result is deterministic.
    """
    total = scores.numel()
    chosen = torch.zeros(total, dtype=torch.bool, device=scores.device)
    if n <= 0:
        return chosen
    if n >= total:
        chosen[:] = True
        return chosen
    threshold = torch.kthvalue(scores, n).values
    below = scores < threshold
    need = n - int(below.sum())
    chosen |= below
    if need > 0:
        ties = torch.nonzero(scores == threshold, as_tuple=False).flatten()[:need]
        chosen[ties] = True
    return chosen


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
    flat = torch.cat([weights[n].detach().reshape(-1).float().abs() for n in names])
    d = flat.numel()
    n_prune = int(round(sparsity * d))
    if current is not None:
        if current.names != names:
            raise ValueError("current mask does not match the weights' layers")
        kept = torch.from_numpy(current.flat_bools()).to(flat.device)
        already = d - int(kept.sum())
        if n_prune < already:
            raise ValueError(f"target sparsity {sparsity} is below the current mask's {already / d:.4f}")
        scores = torch.where(kept, flat, torch.full_like(flat, -1.0))  # pruned ones go first
        prune = _select_smallest(scores, n_prune)
    else:
        prune = _select_smallest(flat, n_prune)
    keep = ~prune
    out, offset = [], 0
    for n in names:
        size = weights[n].numel()
        out.append((n, keep[offset : offset + size].reshape(weights[n].shape).cpu()))
        offset += size
    return Mask.from_bools(out, meta={"method": "global_magnitude", "sparsity": sparsity})


def prunable_weights(model_or_state, names: list[str]) -> dict[str, torch.Tensor]:
    state = model_or_state.state_dict() if hasattr(model_or_state, "state_dict") else model_or_state
    missing = [n for n in names if n not in state]
    if missing:
        raise KeyError(f"prunable weights missing from the checkpoint: {missing}")
    return {n: state[n] for n in names}
