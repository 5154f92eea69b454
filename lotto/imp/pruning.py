"""Iterative magnitude pruning (IMP) with weight rewinding: the pruning step and the adaptive ratio.

Level L of IMP trains the network masked by m_L from the rewind point to the end (w_L), then prunes a
fraction of the weights m_L still keeps, by global magnitude of w_L, giving m_{L+1}. Level 0 is dense.
Everything here is a pure function of tensors and masks; training and evaluation live elsewhere. The pruning
step takes numpy arrays or torch tensors and imports no torch (``lotto imp-prune`` is a light job).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lotto.masks import Mask
from lotto.pruning import prune_count

if TYPE_CHECKING:
    import numpy as np
    import torch


def prune_remaining(weights: dict[str, torch.Tensor | np.ndarray], fraction: float,
                    current: Mask | None = None) -> Mask:
    """Prune ``fraction`` of the weights ``current`` keeps (all weights when None), smallest |w| first, globally.

    Exactly round(fraction * kept) more weights are removed; those ``current`` prunes stay pruned.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"pruning fraction must be in (0, 1), got {fraction}")
    d = sum(math.prod(w.shape) for w in weights.values())
    kept = current.kept() if current is not None else d
    n_prune = (d - kept) + int(round(fraction * kept))
    mask = prune_count(weights, n_prune, current=current)
    return mask.with_meta(method="imp", fraction=fraction)


def project(state: dict[str, torch.Tensor], mask: Mask) -> dict[str, torch.Tensor]:
    """m * w: the state dict with the weights ``mask`` prunes set to zero (everything else shared)."""
    out = dict(state)
    for name, keep in mask.to_torch().items():
        out[name] = state[name] * keep.to(state[name].device, state[name].dtype)
    return out


@dataclass(frozen=True)
class AdaptiveChoice:
    """The adaptive heuristic's decision at one level."""

    best_ratio: float  # largest swept ratio whose path stays under the threshold (0.0 if none)
    pruned_fraction: float  # max(best_ratio, min_fraction): what is actually pruned
    threshold: float  # dense training loss + eps


def adaptive_threshold(dense_loss: float, eps: float) -> float:
    """Training-loss ceiling of the heuristic: the dense network's training loss plus eps (sd across batches)."""
    if not (dense_loss == dense_loss and eps == eps):  # NaN: a one-batch last epoch has no sd
        raise ValueError(f"dense loss {dense_loss} and eps {eps} must be numbers (is the last epoch one batch?)")
    return dense_loss + eps


def choose_ratio(path_max_loss: dict[float, float], threshold: float, min_fraction: float) -> AdaptiveChoice:
    """The largest ratio p whose path keeps the training loss strictly below ``threshold``; prune max(p, floor).

    ``path_max_loss``: swept ratio -> the highest training loss on the linear path from w_L to its
    projection pruned by that ratio. Every swept ratio is considered (not only up to the first failure),
    so the answer is the largest passing one even when the losses are not monotone in p.
    """
    passing = [p for p, loss in path_max_loss.items() if loss < threshold]
    best = max(passing, default=0.0)
    return AdaptiveChoice(best_ratio=best, pruned_fraction=max(best, min_fraction), threshold=threshold)
