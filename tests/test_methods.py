"""Every pruning method's mask against torch.nn.utils.prune's on the same weights (one-shot and iterative)."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

from lotto import pruning as methods
from lotto.masks import Mask
from lotto.models import build_model, prunable_names


@pytest.fixture(scope="module")
def net():
    # real LeNet initialisation: continuous values, so no ties at any threshold
    return build_model({"name": "lenet"}, 1, 10, 28, init_seed=7)


def modules_of(model):
    return {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def weights_of(model):
    state = model.state_dict()
    return {n: state[n].clone() for n in prunable_names(model)}


def torch_masks(model):
    return {n: m.weight_mask.detach().bool().numpy() for n, m in modules_of(model).items()}


def assert_same(ours: Mask, theirs: dict):
    layers = ours.layers()
    assert list(layers) == list(theirs)
    for name in layers:
        assert layers[name].shape == theirs[name].shape, name
        np.testing.assert_array_equal(layers[name], theirs[name], err_msg=name)


def test_global_l1_matches_global_unstructured_one_shot_and_iterative(net):
    ref = copy.deepcopy(net)
    params = [(m, "weight") for m in modules_of(ref).values()]
    w = weights_of(net)
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=0.3)
    ours = methods.prune("global_l1", w, 0.3)
    assert_same(ours, torch_masks(ref))
    # a second round removes 20% of what is left, globally
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=0.2)
    ours2 = methods.prune("global_l1", w, 0.2, current=ours)
    assert_same(ours2, torch_masks(ref))
    d = ours.total
    assert ours2.pruned() == round(0.3 * d) + round(0.2 * (d - round(0.3 * d)))
    # global: layers end up with different sparsities
    fractions = {n: k / t for n, (k, t) in ours2.per_layer_counts().items()}
    assert max(fractions.values()) - min(fractions.values()) > 0.05


def test_layerwise_l1_matches_l1_unstructured_one_shot_and_iterative(net):
    ref = copy.deepcopy(net)
    w = weights_of(net)
    current = None
    for amount in (0.2, 0.2, 0.5):
        for m in modules_of(ref).values():
            tprune.l1_unstructured(m, "weight", amount=amount)
        current = methods.prune("l1_unstructured", w, amount, current=current)
        assert_same(current, torch_masks(ref))


@pytest.mark.parametrize("n", [1, 2, math.inf])
@pytest.mark.parametrize("dim", [0, 1])
def test_ln_structured_matches_torch(net, n, dim):
    method = {1: "l1_structured", 2: "l2_structured", math.inf: "linf_structured"}[n]
    ref = copy.deepcopy(net)
    w = weights_of(net)
    current = None
    for amount in (0.3, 0.2):
        for m in modules_of(ref).values():
            tprune.ln_structured(m, "weight", amount=amount, n=n, dim=dim)
        current = methods.prune(method, w, amount, current=current, dim=dim)
        assert_same(current, torch_masks(ref))
    # whole slices: along `dim` every slice is either all kept or all pruned
    for name, arr in current.layers().items():
        other = tuple(d for d in range(arr.ndim) if d != dim)
        per_slice = arr.mean(axis=other)
        assert set(np.unique(per_slice)) <= {0.0, 1.0}, name


def test_random_unstructured_counts_match_torch(net):
    ref = copy.deepcopy(net)
    w = weights_of(net)
    current = None
    for amount in (0.3, 0.2):
        for m in modules_of(ref).values():
            tprune.random_unstructured(m, "weight", amount=amount)
        current = methods.prune("random_unstructured", w, amount, current=current, seed=11)
        theirs = torch_masks(ref)
        for name, (kept, total) in current.per_layer_counts().items():
            assert kept == int(theirs[name].sum()), name
    # seeded: same seed same mask, another seed another mask; and not the magnitude mask
    again = methods.prune("random_unstructured", w, 0.3, seed=11)
    other = methods.prune("random_unstructured", w, 0.3, seed=12)
    assert again.equal(methods.prune("random_unstructured", w, 0.3, seed=11))
    assert not again.equal(other)
    assert not again.equal(methods.prune("l1_unstructured", w, 0.3))


@pytest.mark.parametrize("dim", [0, 1])
def test_random_structured_counts_match_torch(net, dim):
    ref = copy.deepcopy(net)
    w = weights_of(net)
    current = None
    for amount in (0.3, 0.25):
        for m in modules_of(ref).values():
            tprune.random_structured(m, "weight", amount=amount, dim=dim)
        current = methods.prune("random_structured", w, amount, current=current, dim=dim, seed=3)
        theirs = torch_masks(ref)
        for name, arr in current.layers().items():
            other = tuple(d for d in range(arr.ndim) if d != dim)
            ours_alive = int(arr.any(axis=other).sum())
            theirs_alive = int(theirs[name].any(axis=other).sum())
            assert ours_alive == theirs_alive, name
            assert arr.sum() == theirs[name].sum(), name


def test_hybrid_and_fc_only(net):
    ref_s, ref_u = copy.deepcopy(net), copy.deepcopy(net)
    w = weights_of(net)
    for m in modules_of(ref_s).values():
        tprune.ln_structured(m, "weight", amount=0.4, n=1, dim=1)
    for m in modules_of(ref_u).values():
        tprune.l1_unstructured(m, "weight", amount=0.4)
    structured, unstructured = torch_masks(ref_s), torch_masks(ref_u)
    hybrid = methods.prune("hybrid", w, 0.4, dim=1).layers()
    fc = methods.prune("fc_only", w, 0.4).layers()
    for name, arr in hybrid.items():
        if w[name].ndim == 4:
            np.testing.assert_array_equal(arr, structured[name])
            assert fc[name].all(), f"fc_only pruned the convolution {name}"
        else:
            np.testing.assert_array_equal(arr, unstructured[name])
            np.testing.assert_array_equal(fc[name], unstructured[name])


def test_bad_inputs_are_named():
    w = {"a.weight": torch.randn(4, 3)}
    with pytest.raises(ValueError, match="unknown pruning method"):
        methods.prune("magic", w, 0.2)
    with pytest.raises(ValueError, match="needs a seed"):
        methods.prune("random_unstructured", w, 0.2)
    with pytest.raises(ValueError, match="does not fit"):
        methods.prune("l1_unstructured", w, 0.2, current=Mask.from_bools({"b.weight": np.ones((4, 3), bool)}))
    with pytest.raises(ValueError, match="dim 2"):
        methods.prune("l1_structured", w, 0.2, dim=2)
