"""The pruning-method zoo family (Paganini & Forde 2020): effective sparsity, handlings, similarity, config
checks, and the whole DAG of workflow/configs/zoo-tiny.yaml run for real on Fashion-MNIST and MNIST."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from lotto import config as C
from lotto import masks as M, pruning as methods
from lotto.zoo import iterative, similarity
from lotto.zoo.effective import effective_mask
from lotto.masks import Mask
from lotto.models import build_model, prunable_names
from workflow_helpers import ROOT, figure_layout_problems, job_counts, make_workdir, snakemake

FASHION = Path("/usr/share/datasets/fashion-mnist")
CONFIG = "workflow/configs/zoo-tiny.yaml"
EXP = "results/zoo-tiny"


def full_mask(model):
    state = model.state_dict()
    return Mask.from_bools([(n, np.ones(tuple(state[n].shape), bool)) for n in prunable_names(model)])


def with_layers(mask, **edits):
    layers = mask.layers()
    for name, fn in edits.items():
        arr = layers[name.replace("__", ".")].copy()
        fn(arr)
        layers[name.replace("__", ".")] = arr
    return Mask.from_bools(list(layers.items()))


# --- effective sparsity --------------------------------------------------------------------------------
def test_effective_lenet_dead_channels_and_features():
    model = build_model({"name": "lenet"}, 1, 10, 28, init_seed=1)
    dense = full_mask(model)
    assert effective_mask(model, dense, 1, 28).equal(dense)

    def kill_conv2_out3(a):
        a[3] = False  # conv2 output channel 3 receives nothing

    def kill_conv1_out0_uses(a):
        a[:, 0] = False  # nothing reads conv1 channel 0

    mask = with_layers(dense, conv2__weight=lambda a: (kill_conv2_out3(a), kill_conv1_out0_uses(a)))
    eff = effective_mask(model, mask, 1, 28).layers()
    # conv1 channel 0 leads nowhere: its 9 weights are ineffective
    assert not eff["conv1.weight"][0].any() and eff["conv1.weight"][1:].all()
    # fc1 reads channel 3 of conv2 at 25 positions (16 x 5 x 5 flattened): those columns are ineffective
    cols = np.zeros(400, bool)
    cols[3 * 25 : 4 * 25] = True
    assert not eff["fc1.weight"][:, cols].any() and eff["fc1.weight"][:, ~cols].all()
    expected = mask.kept() - 9 - 120 * 25
    assert sum(v.sum() for v in eff.values()) == expected

    # a dead fc2 output unit makes its fc3 column and its own row ineffective
    mask2 = with_layers(dense, fc3__weight=lambda a: a.__setitem__((slice(None), 5), False))
    eff2 = effective_mask(model, mask2, 1, 28).layers()
    assert not eff2["fc2.weight"][5].any() and eff2["fc2.weight"][:5].all()
    assert mask2.kept() - sum(v.sum() for v in eff2.values()) == 120


def test_effective_resnet20_residual_paths_survive():
    model = build_model({"name": "resnet20"}, 3, 10, 32, init_seed=2)
    dense = full_mask(model)
    assert effective_mask(model, dense, 3, 32).equal(dense)
    # prune the first block's first convolution away: its second convolution gets no input, but the identity
    # shortcut keeps every later layer (and the stem) on an input-output path
    mask = with_layers(dense, blocks__0__conv1__weight=lambda a: a.fill(False))
    eff = effective_mask(model, mask, 3, 32).layers()
    assert not eff["blocks.0.conv2.weight"].any()
    for name, arr in eff.items():
        if name not in ("blocks.0.conv1.weight", "blocks.0.conv2.weight"):
            assert arr.all(), name
    # without a shortcut (a plain chain) the same cut would disconnect everything: here nothing else is lost
    assert mask.kept() - sum(v.sum() for v in eff.values()) == eff["blocks.0.conv2.weight"].size


def test_effective_torchvision_resnet18():
    name, conv, nxt = "resnet18", "layer1.0.conv1.weight", "layer1.0.conv2.weight"
    model = build_model({"name": name}, 1, 10, 64, init_seed=6)
    dense = full_mask(model)
    # every weight of an unpruned network is on a path (its max-pooling module must not hide any)
    assert effective_mask(model, dense, 1, 64).equal(dense)
    # at 32 pixels layer4 works on 1x1 maps: the 3x3 taps off the centre only ever see zero padding
    small = build_model({"name": name}, 1, 10, 32, init_seed=6)
    eff32 = effective_mask(small, full_mask(small), 1, 32).layers()
    tap = eff32["layer4.1.conv2.weight"]
    assert tap[:, :, 1, 1].all() and not tap[:, :, 0].any()
    size = 64
    mask = with_layers(dense, **{conv.replace(".", "__"): lambda a: a.__setitem__(2, False)})
    eff = effective_mask(model, mask, 1, size).layers()
    # nothing enters channel 2 any more: whatever reads it does nothing
    assert not eff[nxt][:, 2].any() and eff[nxt][:, 3:].all()
    assert mask.kept() - sum(v.sum() for v in eff.values()) == eff[nxt][:, 2].size


# --- handlings -----------------------------------------------------------------------------------------
def test_start_points_of_every_handling():
    init = build_model({"name": "lenet"}, 1, 10, 28, init_seed=3).state_dict()
    other = build_model({"name": "lenet"}, 1, 10, 28, init_seed=4).state_dict()
    names = [n for n in init if n.endswith("weight")]
    state, step = iterative.start_point("rewind_init", names, (init, 0), None, (other, 32))
    assert step == 0 and all(torch.equal(state[k], init[k]) for k in init)
    state, step = iterative.start_point("rewind_t", names, (init, 0), (other, 7), (init, 32))
    assert step == 7 and torch.equal(state["fc1.weight"], other["fc1.weight"])
    state, step = iterative.start_point("finetune", names, (init, 0), None, (other, 32), finetune_start=5)
    assert step == 5 and torch.equal(state["conv1.bias"], other["conv1.bias"])
    state, step = iterative.start_point("reinit_sign", names, (init, 0), None, (other, 32))
    assert step == 0
    for n in names:
        sigma = float(init[n].double().std(unbiased=False))
        assert torch.equal(torch.sign(state[n]), torch.sign(init[n]))
        np.testing.assert_allclose(state[n].abs().unique().double().numpy(), [sigma], rtol=1e-6)
    assert torch.equal(state["fc1.bias"], init["fc1.bias"])
    with pytest.raises(ValueError, match="rewind point"):
        iterative.start_point("rewind_t", names, (init, 0), None, (other, 32))
    with pytest.raises(ValueError, match="unknown handling"):
        iterative.start_point("rewind", names, (init, 0), None, (other, 32))


# --- similarity ----------------------------------------------------------------------------------------
def test_consensus_and_layer_jaccard():
    model = build_model({"name": "lenet"}, 1, 10, 28, init_seed=5)
    w = {n: model.state_dict()[n] for n in prunable_names(model)}
    a = methods.prune("l1_unstructured", w, 0.5)
    b = methods.prune("random_unstructured", w, 0.5, seed=1)
    c = methods.prune("global_l1", w, 0.5)
    assert similarity.consensus([a, b, c], 3).equal(M.intersection([a, b, c]))
    assert similarity.consensus([a, b, c], 1).equal(M.union([a, b, c]))
    two = similarity.consensus([a, b, c], 2).flat_bools()
    votes = a.flat_bools().astype(int) + b.flat_bools() + c.flat_bools()
    assert np.array_equal(two, votes >= 2)
    with pytest.raises(ValueError, match="consensus threshold"):
        similarity.consensus([a, b], 3)
    d = similarity.layer_jaccard(a, b)
    assert d["network"] == pytest.approx(M.jaccard_distance(a, b))
    la, lb = a.layers()["fc1.weight"], b.layers()["fc1.weight"]
    assert d["fc1.weight"] == pytest.approx(1 - (la & lb).sum() / (la | lb).sum())
    # random vs magnitude at 50%: near the chance distance 1 - 1/3; magnitude vs magnitude much closer
    assert 0.55 < d["network"] < 0.75
    assert similarity.layer_jaccard(a, c)["network"] < 0.4
    assert all(v == 0.0 for v in similarity.layer_jaccard(a, a).values())
    rows = similarity.pairwise_rows(
        [({"method": "x", "h": 1}, a), ({"method": "y", "h": 1}, b), ({"method": "x", "h": 2}, c)],
        by="method", group=["h"])
    assert {(r["a"], r["b"], r["h"]) for r in rows} == {("x", "y", 1)}
    assert len(rows) == len(a.names) + 1


# --- config checks -------------------------------------------------------------------------------------
def zoo_cfg():
    return yaml.safe_load((ROOT / CONFIG).read_text())


@pytest.mark.parametrize("edit, expected", [
    (lambda z: z["tasks"].append({"name": "fashion", "dataset": "mnist_embedded", "source": "embedded"}),
     "zoo.tasks[1].name"),
    (lambda z: z["tasks"].append({"name": "c100", "dataset": "cifar100"}), "zoo.tasks[1].dataset"),
    (lambda z: z["tasks"].append({"name": "k", "dataset": "kmnist", "source": "local"}), "zoo.tasks[1].path"),
    (lambda z: z.update(handlings=["rewind_t"]), "zoo.rewind_step"),
    (lambda z: z["transfer"].update(consensus_min=3), "zoo.transfer.consensus_min"),
    (lambda z: z.update(ensemble_handling="reinit_sign"), "zoo.ensemble_handling"),
    (lambda z: z.update(methods=["magnitude"]), "zoo.methods[0]"),
    (lambda z: z.update(rate=1.0), "zoo.rate"),
    (lambda z: z.update(bogus=1), "zoo.bogus"),
])
def test_bad_zoo_keys_are_named(edit, expected):
    cfg = zoo_cfg()
    edit(cfg["zoo"])
    with pytest.raises(C.ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        C.validate(cfg)


def test_zoo_and_composability_share_one_dag(tmp_path):
    """Both families in one config: the zoo reuses init and the main task's rewind point, and no output
    pattern of one family can be claimed by the other's rules."""
    work = make_workdir(tmp_path)
    cfg = yaml.safe_load((work / "workflow/configs/tiny.yaml").read_text())
    zoo = zoo_cfg()["zoo"]
    zoo.update(tasks=[], main_task=None, handlings=["rewind_t", "finetune"], rewind_step=4)
    cfg["zoo"] = zoo
    cfg["experiment"] = "both"
    (work / "both.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(["-n", "--configfile", "both.yaml"], cwd=work).stdout
    counts = job_counts(out)
    assert counts["init"] == 1 and counts["pretrain"] == 2  # t = 0, 4: shared, not duplicated by the zoo
    # 3 methods x 2 handlings x 2 rounds, plus the transfer run (global_l1 under rewind_init)
    assert counts["zoo_round"] == 3 * 2 * 2 + 2 and "zoo_pretrain" not in counts
    # one task: its bespoke ticket on itself is its own last round; consensus and random are retrained
    assert counts["retrain"] > 0 and counts["zoo_retrain"] == 2
    assert "zoo_jaccard_tasks" not in counts and counts["zoo_jaccard_handlings"] == 1
    assert "results/both/rep0/pre4/rewind.safetensors" in out


# --- the whole DAG --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory):
    if not (FASHION / "train-images-idx3-ubyte.gz").is_file() and not (FASHION / "train-images-idx3-ubyte").is_file():
        pytest.skip(f"Fashion-MNIST is not installed at {FASHION} (apt-get install dataset-fashion-mnist)")
    work = make_workdir(tmp_path_factory.mktemp("zoo"))
    snakemake(["--cores", "2", "--configfile", CONFIG], cwd=work, timeout=1200)
    return work


FIGS = ["zoo_jaccard_methods", "zoo_jaccard_layers", "zoo_jaccard_handlings", "zoo_jaccard_tasks",
        "zoo_effective", "zoo_accuracy", "zoo_stability", "zoo_transfer", "zoo_ensemble", "zoo_training_curves"]


@pytest.mark.slow
def test_zoo_figures_and_csvs(zoo_run):
    figs = zoo_run / EXP / "figures"
    for name in FIGS:
        for ext in ("png", "pdf", "csv"):
            f = figs / f"{name}.{ext}"
            assert f.is_file() and f.stat().st_size > 0, f
    jm = pd.read_csv(figs / "zoo_jaccard_methods.csv")
    net = jm[jm["layer"] == "network"]
    assert set(net["handling"]) == {"rewind_init", "finetune"} and set(net["iteration"]) == {2}
    assert net["distance"].between(0, 1).all() and len(net) == 3 * 2
    pair = net.set_index(["handling", "a", "b"])["distance"]
    # global and layerwise magnitude agree far more than either agrees with channel pruning
    for h in ("rewind_init", "finetune"):
        assert pair[(h, "global_l1", "l1_unstructured")] < pair[(h, "global_l1", "l1_structured")]
    layers = pd.read_csv(figs / "zoo_jaccard_layers.csv")
    assert {"conv1.weight", "fc3.weight", "network"} <= set(layers["layer"])
    jh = pd.read_csv(figs / "zoo_jaccard_handlings.csv")
    assert set(jh["iteration"]) == {1, 2}
    # round 1 prunes the same dense network whatever the handling: identical masks
    assert (jh.loc[jh["iteration"] == 1, "distance"] == 0).all()
    assert (jh.loc[(jh["iteration"] == 2) & (jh["layer"] == "network"), "distance"] > 0).all()
    jt = pd.read_csv(figs / "zoo_jaccard_tasks.csv")
    assert set(zip(jt["a"], jt["b"])) == {("fashion", "mnist")}
    assert (jt.loc[jt["layer"] == "network", "distance"] > 0).all()

    eff = pd.read_csv(figs / "zoo_effective.csv")
    assert (eff["effective_kept"] <= eff["kept"]).all()
    r2 = eff[eff["iteration"] == 2].set_index(["task", "method", "handling"])
    d = r2.loc[("fashion", "global_l1", "rewind_init"), "total"]
    assert r2.loc[("fashion", "global_l1", "rewind_init"), "kept"] == d - round(0.4 * d) - round(0.4 * (d - round(0.4 * d)))
    # pruning whole input features along dim 1 strands the units that fed them: effective < explicit
    assert (r2.loc[("fashion", "l1_structured"), "effective_kept"] < r2.loc[("fashion", "l1_structured"), "kept"]).all()
    assert set(eff["iteration"]) == {0, 1, 2}

    acc = pd.read_csv(figs / "zoo_accuracy.csv")
    assert (acc["test_accuracy"] > 0.3).all()  # 10 classes: far above chance after 32 steps
    stab = pd.read_csv(figs / "zoo_stability.csv")
    assert {"init_std_ratio", "trained_absmean_kept", "layer"} <= set(stab.columns)
    # magnitude tickets keep weights that were large at init: their std exceeds the layer's
    mag = stab[(stab["method"] == "l1_unstructured") & (stab["handling"] == "rewind_init")]
    assert (mag["init_std_ratio"] > 1).all()

    tr = pd.read_csv(figs / "zoo_transfer.csv")
    tickets = {"bespoke_fashion", "bespoke_mnist", "consensus", "random"}
    assert set(tr["ticket"]) == tickets and set(tr["target"]) == {"fashion", "mnist"} and len(tr) == 8
    assert (tr["test_accuracy"] > 0.3).all()
    sp = tr.groupby("ticket")["sparsity"].first()
    assert sp["consensus"] > sp["bespoke_fashion"]  # the intersection keeps less
    assert sp["random"] == pytest.approx(sp["bespoke_fashion"])

    ens = pd.read_csv(figs / "zoo_ensemble.csv")
    whole = ens[ens["a"] == "all"]
    assert len(whole) == 1 and 0.3 < whole["accuracy"].iloc[0] <= 1
    pairs = ens[ens["a"] != "all"]
    assert (pairs.loc[pairs["a"] == pairs["b"], "agreement"] == 1).all()
    assert pairs["agreement"].between(0, 1).all()


@pytest.mark.slow
def test_every_round_is_a_file_target(zoo_run):
    root = zoo_run / EXP / "rep0"
    for method in ("global_l1", "l1_unstructured", "l1_structured"):
        for handling in ("rewind_init", "finetune"):
            for n in (1, 2):
                d = root / "zoo" / "fashion" / method / handling / f"iter{n}"
                for f in ("mask.mask", "start.safetensors", "trained.safetensors", "metrics.json"):
                    assert (d / f).is_file(), d / f
    m1 = Mask.load(root / "zoo/fashion/global_l1/finetune/iter1/mask.mask")
    m2 = Mask.load(root / "zoo/fashion/global_l1/finetune/iter2/mask.mask")
    assert m1.meta["method"] == "global_l1" and m2.meta["iteration"] == 2
    # iterative: round 2 only removes weights round 1 kept
    assert not (m2.flat_bools() & ~m1.flat_bools()).any()
    assert (root / "zoo_transfer/consensus/mask.mask").is_file()
    assert (root / "zoo_transfer/random/on_mnist/trained.safetensors").is_file()
    # deleting one round's mask reruns that round, the next one and what reads them, nothing else
    (root / "zoo/fashion/l1_unstructured/finetune/iter1/mask.mask").unlink()
    counts = job_counts(snakemake(["-n", "--configfile", CONFIG], cwd=zoo_run).stdout)
    assert counts["zoo_round"] == 2
    assert "zoo_retrain" not in counts and "zoo_dense" not in counts and "zoo_transfer" not in counts


# --- one round by hand, for the handlings the tiny DAG does not run ---------------------------------------
def test_zoo_iterate_by_hand_rewind_t_and_reinit_sign(tmp_path):
    import json

    from lotto import cli, io

    def lotto(*argv):
        assert cli.main([str(a) for a in argv]) == 0

    cfg = json.dumps({"data": {"dataset": "mnist_embedded", "source": "embedded", "train_size": 256,
                               "test_size": 128},
                      "model": {"name": "lenet"},
                      "training": {"lr": 0.05, "batch_size": 64, "epochs": 2, "milestones": [], "augment": False,
                                   "log_every": 4}})
    data, init = tmp_path / "d.npz", tmp_path / "init.safetensors"
    lotto("stage-data", "--config", cfg, "--out", data)
    lotto("init", "--config", cfg, "--data", data, "--replicate", 0, "--out", init)
    lotto("train", "--config", cfg, "--data", data, "--from", init, "--end", 3, "--replicate", 0,
          "--noise", "custom:zoo-m", "--kind", "rewind", "--out", tmp_path / "rewind.safetensors")
    lotto("train", "--config", cfg, "--data", data, "--from", tmp_path / "rewind.safetensors", "--end", "end",
          "--replicate", 0, "--noise", "custom:zoo-m", "--out", tmp_path / "dense.safetensors")
    init_state, meta = io.load_checkpoint(init)
    for handling, extra, step in [("rewind_t", ["--rewind", tmp_path / "rewind.safetensors"], 3),
                                  ("reinit_sign", [], 0)]:
        out = tmp_path / handling
        lotto("zoo-iterate", "--config", cfg, "--threads", 1, "--data", data, "--init", init,
              "--previous", tmp_path / "dense.safetensors", *extra, "--task", "m", "--method", "hybrid",
              "--handling", handling, "--iteration", 1, "--replicate", 0, "--rate", 0.5, "--dim", 0,
              "--out-mask", out / "mask.mask", "--out-start", out / "start.safetensors",
              "--out", out / "trained.safetensors", "--metrics", out / "metrics.json")
        start, smeta = io.load_checkpoint(out / "start.safetensors")
        assert smeta["step"] == step and smeta["kind"] == "start"
        mask = Mask.load(out / "mask.mask")
        trained, tmeta = io.load_checkpoint(out / "trained.safetensors")
        for name, keep in mask.to_torch().items():
            assert (trained[name][~keep] == 0).all(), name  # pruned weights stay at zero
        if handling == "reinit_sign":
            w0 = init_state["conv1.weight"]
            assert torch.equal(torch.sign(start["conv1.weight"]), torch.sign(w0))
            assert start["conv1.weight"].abs().unique().numel() == 1
        record = json.loads((out / "metrics.json").read_text())
        assert record["handling"] == handling and record["start_step"] == step
        assert record["effective_kept"] <= record["kept"] and len(record["layers"]) == 5
        # hybrid: conv output channels go whole, linear layers weight by weight
        conv = mask.layers()["conv2.weight"]
        assert set(np.unique(conv.reshape(conv.shape[0], -1).mean(1))) <= {0.0, 1.0}
        assert record["test_examples"] == 128 and record["steps_trained"] == 8 - step


@pytest.mark.slow
def test_every_figure_is_legible_at_paper_size(zoo_run):
    """Each figure of the run at its page size (a column, or the text width): no text under 7 pt or cut off, no
    legend over data, a title or another legend, no title over another text (rendered bounding boxes)."""
    problems = figure_layout_problems(zoo_run, "zoo-tiny")
    assert sorted(problems) == sorted(FIGS)
    assert {name: p for name, p in problems.items() if p} == {}
