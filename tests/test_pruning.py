import numpy as np
import pytest
import torch

from lotto.pruning import global_magnitude


@pytest.mark.parametrize("s", [0.1, 0.2, 0.5, 0.6723, 0.9, 0.99])
def test_exact_sparsity(s):
    g = torch.Generator().manual_seed(0)
    w = {"a": torch.randn(16, 3, 3, 3, generator=g), "b": torch.randn(100, 37, generator=g)}
    d = sum(t.numel() for t in w.values())
    m = global_magnitude(w, s)
    assert m.pruned() == round(s * d)


def test_prunes_smallest_magnitudes_globally():
    w = {"a": torch.tensor([0.1, -5.0, 0.3]), "b": torch.tensor([[-0.2, 4.0], [0.05, 1.0]])}
    m = global_magnitude(w, 3 / 7)
    layers = m.layers()
    assert layers["a"].tolist() == [False, True, True]
    assert layers["b"].tolist() == [[False, True], [False, True]]


def test_ties_still_give_exact_count_deterministically():
    w = {"a": torch.zeros(10), "b": torch.ones(10)}
    m1 = global_magnitude(w, 0.25)
    m2 = global_magnitude(w, 0.25)
    assert m1.pruned() == 5 and m1.equal(m2)
    assert m1.layers()["b"].all()


def test_iterative_keeps_pruned_weights_pruned():
    g = torch.Generator().manual_seed(3)
    w = {"a": torch.randn(1000, generator=g)}
    first = global_magnitude(w, 0.2)
    # perturb weights so that the magnitude order changes; pruned ones must stay pruned
    w2 = {"a": torch.randn(1000, generator=g)}
    second = global_magnitude(w2, 0.36, current=first)
    assert second.pruned() == 360
    f, s = first.flat_bools(), second.flat_bools()
    assert not np.any(s & ~f)
    with pytest.raises(ValueError, match="below the current"):
        global_magnitude(w2, 0.1, current=first)


def test_sparsity_bounds():
    with pytest.raises(ValueError):
        global_magnitude({"a": torch.ones(3)}, 1.0)
