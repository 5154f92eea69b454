"""Mask similarity (Paganini & Forde 2020): Jaccard distances per layer and over the whole network, and the
consensus of several masks. numpy only (no torch), pure functions of :class:`lotto.masks.Mask`.

Jaccard distance of two masks = 1 - |kept by both| / |kept by either| (0: identical, 1: disjoint); two masks
that keep nothing are at distance 0.
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import numpy as np

from lotto.masks import Mask, check_same_layout, jaccard_distance, vote

NETWORK = "network"  # the layer label of the whole-network distance


def _jaccard_bools(a: np.ndarray, b: np.ndarray) -> float:
    union = int(np.count_nonzero(a | b))
    return 0.0 if union == 0 else 1.0 - int(np.count_nonzero(a & b)) / union


def layer_jaccard(a: Mask, b: Mask) -> dict[str, float]:
    """Per-layer Jaccard distance, plus the whole network under the key ``"network"``."""
    check_same_layout([a, b])
    la, lb = a.layers(), b.layers()
    out = {name: _jaccard_bools(la[name], lb[name]) for name in la}
    out[NETWORK] = jaccard_distance(a, b)
    return out


def consensus(masks: Sequence[Mask], m: int) -> Mask:
    """Keep a weight kept by at least ``m`` of the masks (m = len(masks): intersection; m = 1: union)."""
    return vote(masks, m).with_meta(consensus_of=len(masks), m=m)


def pairwise_rows(items: Sequence[tuple[dict, Mask]], by: str, group: Sequence[str]) -> list[dict]:
    """Long-format Jaccard distances between every pair of masks that agree on ``group`` labels and differ in
    label ``by``: one row per pair and layer (``layer = "network"`` for the whole network), carrying the group
    labels, ``a``/``b`` (the two values of ``by``, in order of appearance) and ``distance``."""
    groups: dict[tuple, list[tuple[dict, Mask]]] = {}
    for labels, mask in items:
        groups.setdefault(tuple(labels.get(k) for k in group), []).append((labels, mask))
    rows = []
    for key, members in groups.items():
        for (la, ma), (lb, mb) in combinations(members, 2):
            if la.get(by) == lb.get(by):
                continue
            for layer, dist in layer_jaccard(ma, mb).items():
                rows.append({**dict(zip(group, key)), "a": la.get(by), "b": lb.get(by), "layer": layer,
                             "distance": dist})
    return rows
