"""docs/ARCHITECTURE.md's recipes, each done once by a test (the others: a pruning method in
tests/test_architecture.py::test_a_new_pruning_method_is_one_registration, a model in
tests/test_models.py::test_a_new_model_is_one_catalog_entry, a family in tests/test_family_recipe.py)."""

from __future__ import annotations

import numpy as np
import pytest

from lotto import config as configmod
from lotto import names


def _cfg(**extra):
    return {"experiment": "toy", "model": {"name": "lenet"},
            "data": {"dataset": "mnist_embedded", "source": "embedded", "train_size": 256, "test_size": 128},
            "training": {"epochs": 1, "milestones": [], "batch_size": 64}, **extra}


def test_a_new_weight_handling_is_one_registration():
    """@register_handling with a docstring: the config accepts it at once (zoo.handlings, zoo.transfer.handling,
    zoo.ensemble_handling are filled from the registry), a round starts where it says, and it shows by its id
    until lotto.names (or the family's spec) gives it a readable name."""
    from lotto.zoo.iterative import HANDLINGS, register_handling, start_point

    @register_handling("toy_halfway")
    def _toy(prunable, init, rewind, previous, finetune_start):
        """the trained values, training again from half the steps the previous round had."""
        return dict(previous[0]), previous[1] // 2

    try:
        zoo = {"methods": ["global_l1"], "handlings": ["rewind_init", "toy_halfway"], "iterations": 1,
               "transfer": {"handling": "toy_halfway"}, "ensemble_handling": "toy_halfway"}
        assert configmod.validate(_cfg(zoo=zoo))["zoo"]["handlings"] == ["rewind_init", "toy_halfway"]
        state, step = start_point("toy_halfway", ["w"], ({"w": 0}, 0), None, ({"w": 1}, 64))
        assert state == {"w": 1} and step == 32
        assert names.display("handling", "toy_halfway") == "toy_halfway"
        assert HANDLINGS["toy_halfway"].description.startswith("the trained values")
    finally:
        HANDLINGS.pop("toy_halfway")
    with pytest.raises(configmod.ConfigError, match="toy_halfway"):
        configmod.validate(_cfg(zoo={"methods": ["global_l1"], "handlings": ["toy_halfway"], "iterations": 1}))


def test_a_new_data_set_is_one_catalog_entry(tmp_path):
    """One DatasetInfo in lotto/datasets.py CATALOG: the config accepts it (data.dataset and zoo tasks are filled
    from the catalog), checks sizes against it at parse time, and stages it from local files in the standard
    layout (train.npz / test.npz; a torchvision class, where there is one, goes in lotto/staging.py)."""
    from lotto.datasets import CATALOG, NUM_CLASSES, DatasetInfo
    from lotto.staging import read_staged, stage

    CATALOG["toyset"] = DatasetInfo("toyset", 3, 60, 30, 8, 1, "a toy data set of 8x8 grey images")
    NUM_CLASSES["toyset"] = 3
    try:
        rng = np.random.default_rng(0)
        root = tmp_path / "toyset"
        root.mkdir()
        for split, n in (("train", 60), ("test", 30)):
            np.savez(root / f"{split}.npz", x=rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8),
                     y=np.arange(n, dtype=np.uint8) % 3)
        data = {"dataset": "toyset", "source": "local", "path": str(root)}
        cfg = _cfg(data=data, model={"name": "resnet20"}, training={"epochs": 1, "milestones": [], "batch_size": 16},
                   composability={"pretrain_steps": [0], "ks": [2], "sparsities": [0.5]})
        assert configmod.validate(cfg)["data"]["dataset"] == "toyset"
        # its sizes are the catalog's (a local .npz may hold any number: checked once staged)
        with pytest.raises(configmod.ConfigError, match=r"data.train_size.*larger than the training set"):
            configmod.validate({**cfg, "data": {"dataset": "toyset", "source": "torchvision", "train_size": 61}})
        stage(data, tmp_path / "toyset.npz")
        staged, meta = read_staged(tmp_path / "toyset.npz")
        assert staged["x_train"].shape == (60, 8, 8, 1) and int(staged["y_test"].max()) == 2
        assert meta["dataset"] == "toyset" and names.display("dataset", "toyset") == "toyset"  # until named
    finally:
        CATALOG.pop("toyset")
        NUM_CLASSES.pop("toyset")
