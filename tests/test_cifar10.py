"""ResNet-20 on the real CIFAR-10 through the DAG (optional: needs $LOTTO_CIFAR10 or shared/data/cifar10 beside the checkout; never committed)."""

import pandas as pd
import pytest
import yaml

from workflow_helpers import cifar10_dir, make_workdir, snakemake

CIFAR = cifar10_dir()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CIFAR / "train.npz").is_file(), reason=f"real CIFAR-10 not found at {CIFAR}"),
]


def test_resnet20_cifar10_siblings_overlap_beyond_chance(tmp_path):
    work = make_workdir(tmp_path)
    cfg = yaml.safe_load((work / "workflow/configs/cifar10-resnet20-cpu.yaml").read_text())
    cfg["experiment"] = "cifar-check"
    cfg["data"].update(path=str(CIFAR), train_size=512, test_size=200)
    cfg["training"].update(epochs=1, milestones=[], log_every=4, checkpoint_every=4, batch_size=64)
    cfg["composability"].update(pretrain_steps=[2], ks=[2], sparsities=[0.5, 0.8])
    (work / "cifar.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(["fig1a", "--cores", "2", "--configfile", "cifar.yaml"], cwd=work, timeout=900)
    exp = work / "results" / "cifar-check"
    fig = pd.read_csv(exp / "figures" / "fig1a.csv")
    assert len(fig) == 2 and (fig["overlap"] > fig["chance"]).all()
    log = (exp / "rep0/pre2/sibling1/train.log").read_text()
    assert "resnet20" in log and "step 8/8" in log
    staged = exp / "data" / "cifar10.npz"
    import numpy as np

    with np.load(staged, allow_pickle=False) as z:
        assert z["x_train"].shape == (512, 32, 32, 3) and z["x_test"].shape == (200, 32, 32, 3)
