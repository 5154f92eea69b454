import numpy as np
import pytest
import torch

from lotto import masks as M
from lotto.io import ArtifactError
from lotto.masks import Mask
from lotto.provenance import provenance
from lotto.pruning import global_magnitude


def mk(a, b):
    return Mask.from_bools({"a": np.array(a, bool), "b": np.array(b, bool).reshape(2, 2)})


def test_union_intersection_hand_computed():
    m1 = mk([1, 0, 1], [1, 1, 0, 0])
    m2 = mk([0, 0, 1], [1, 0, 1, 0])
    u, i = M.union([m1, m2]), M.intersection([m1, m2])
    assert u.flat_bools().tolist() == [1, 0, 1, 1, 1, 1, 0]
    assert i.flat_bools().tolist() == [0, 0, 1, 1, 0, 0, 0]
    assert u.kept() == 5 and u.pruned() == 2 and u.total == 7
    assert i.sparsity() == pytest.approx(5 / 7)
    assert M.compose([m1, m2], "union").equal(u)
    with pytest.raises(ValueError, match="unknown composition"):
        M.compose([m1, m2], "xor")


def test_overlap_and_chance():
    # d=7, s=3/7: each prunes 3 weights; both prune positions 1 and 6 -> overlap 2/3
    m1 = mk([1, 0, 1], [1, 0, 1, 0])
    m2 = mk([1, 0, 0], [1, 1, 1, 0])
    assert M.pruned_in_all([m1, m2]) == 2
    assert M.overlap_ratio([m1, m2], 3 / 7) == pytest.approx(2 / 3)
    assert M.chance_overlap(0.5, 2) == 0.5
    assert M.chance_overlap(0.5, 4) == 0.125


def test_overlap_of_independent_random_masks_is_chance():
    rng = np.random.default_rng(0)
    d, s, k = 200_000, 0.6, 3
    ms = []
    for _ in range(k):
        keep = np.ones(d, bool)
        keep[rng.choice(d, int(s * d), replace=False)] = False
        ms.append(Mask.from_bools({"w": keep}))
    assert M.overlap_ratio(ms, s) == pytest.approx(M.chance_overlap(s, k), abs=0.01)


def test_jaccard():
    m1 = mk([1, 1, 0], [0, 0, 0, 0])
    m2 = mk([0, 1, 1], [0, 0, 0, 0])
    assert M.jaccard_distance(m1, m2) == pytest.approx(1 - 1 / 3)
    assert M.jaccard_distance(m1, m1) == 0.0
    assert M.jaccard_distance(m1, m2, which="pruned") == pytest.approx(1 - 4 / 6)
    mat = M.pairwise_jaccard([m1, m2, m1])
    assert mat.shape == (3, 3) and mat[0, 2] == 0 and mat[0, 1] == mat[1, 0]


def test_random_ticket_keeps_per_layer_counts_and_is_seeded():
    w = {"conv": torch.randn(8, 3, 3, 3), "fc": torch.randn(10, 64)}
    mask = global_magnitude(w, 0.7)
    r1 = M.shuffle_within_layers(mask, 1)
    r2 = M.shuffle_within_layers(mask, 1)
    r3 = M.shuffle_within_layers(mask, 2)
    assert r1.per_layer_counts() == mask.per_layer_counts()
    assert r1.equal(r2) and not r1.equal(r3) and not r1.equal(mask)


def test_save_load_roundtrip_and_size(tmp_path):
    rng = np.random.default_rng(1)
    layers = {"x": rng.random((64, 16, 3, 3)) > 0.5, "y": rng.random((10, 640)) > 0.2}
    m = Mask.from_bools(layers, meta={"sparsity": 0.3})
    path = tmp_path / "m.mask"
    m.save(path)
    back = Mask.load(path)
    assert back.equal(m) and back.meta == {"sparsity": 0.3, "provenance": provenance()}
    for name, arr in back.layers().items():
        assert np.array_equal(arr, layers[name])
    # one bit per weight plus a header (layout, meta with provenance, checksum) of under 1 KiB
    assert path.stat().st_size <= -(-m.total // 8) + 1024
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left nothing behind


def test_corrupt_mask_files_are_named(tmp_path):
    bad = tmp_path / "bad.mask"
    bad.write_bytes(b"not a mask")
    with pytest.raises(ArtifactError, match="bad.mask"):
        Mask.load(bad)
    m = mk([1, 0, 1], [1, 1, 0, 0])
    good = tmp_path / "good.mask"
    m.save(good)
    good.write_bytes(good.read_bytes()[:-1])
    with pytest.raises(ArtifactError, match="truncated"):
        Mask.load(good)
    with pytest.raises(ArtifactError, match="not found"):
        Mask.load(tmp_path / "missing.mask")


def test_layout_mismatch_refused():
    a = Mask.from_bools({"a": np.ones(3, bool)})
    b = Mask.from_bools({"b": np.ones(3, bool)})
    with pytest.raises(ValueError, match="different layouts"):
        M.union([a, b])
