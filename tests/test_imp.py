"""IMP with rewinding, linear mode connectivity and the adaptive ratio (Paul et al. 2022), on real MNIST digits.

Unit tests run the library on real trained networks; the end-to-end test runs the whole IMP DAG of
workflow/configs/imp-tiny.yaml with Snakemake and checks every figure, CSV and artifact.
"""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from lotto import config as configmod
from lotto.imp import connectivity as C
from lotto import io, models, pruning, train
from lotto.imp import analysis as imp_plots, pruning as imp
from lotto.data import DeviceData
from lotto.staging import stage
from lotto.masks import Mask
from workflow_helpers import ROOT, figure_layout_problems, job_counts, make_workdir, snakemake

TRAIN_CFG = dict(lr=0.02, momentum=0.9, weight_decay=1e-4, nesterov=False, batch_size=64, epochs=2.0,
                 milestones=[1.5], gamma=0.1, warmup_steps=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("imp-data") / "mnist.npz"
    stage({"dataset": "mnist_embedded", "source": "embedded", "train_size": 512, "test_size": 256}, path)
    return DeviceData.load(path, "cpu", augment=False)


def lenet(data, seed=3):
    return models.build_model({"name": "lenet"}, data.in_channels, data.num_classes, data.image_size, seed)


def trained(data, mask=None, seed=3, start_state=None, noise=(1, 2)):
    model = lenet(data, seed)
    if start_state is not None:
        model.load_state_dict(start_state)
    sched = train.Schedule.from_config(TRAIN_CFG, data.num_train)
    stats = train.train(model, data, sched, 0, sched.total_steps, *noise, mask=mask, log=lambda m: None)
    return model, stats


def state_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def imp_levels(data):
    """w_0 (dense), m_1 (20% pruned), w_1 trained under m_1 from the same init: one real IMP step."""
    init = state_of(lenet(data))
    m0, stats0 = trained(data, start_state=init)
    w0 = state_of(m0)
    names = models.prunable_names(m0)
    m1 = imp.prune_remaining(pruning.prunable_weights(w0, names), 0.2)
    net1, _ = trained(data, mask=m1, start_state=imp.project(init, m1), noise=(5, 6))
    return {"w0": w0, "w1": state_of(net1), "m1": m1, "names": names, "stats0": stats0}


def test_prune_remaining_removes_a_fraction_of_what_is_left(imp_levels):
    w1, m1, names = imp_levels["w1"], imp_levels["m1"], imp_levels["names"]
    d = m1.total
    assert m1.pruned() == round(0.2 * d)
    m2 = imp.prune_remaining(pruning.prunable_weights(w1, names), 0.2, current=m1)
    assert m2.pruned() == m1.pruned() + round(0.2 * m1.kept())
    # what level 1 pruned stays pruned; the new cuts are the smallest surviving magnitudes
    old, new = m1.flat_bools(), m2.flat_bools()
    assert not np.any(new & ~old)
    flat = torch.cat([w1[n].reshape(-1).abs() for n in names]).numpy()
    cut = old & ~new
    assert flat[cut].max() <= flat[new].min()


def test_barrier_between_identical_networks_is_zero(data, imp_levels):
    score = C.Scorer(lenet(data), list(data.test_batches(256)))
    betas = [0.0, 0.25, 0.5, 0.75, 1.0]
    curve = C.path(score, imp_levels["w0"], imp_levels["w0"], betas)
    errors = [c["error"] for c in curve]
    assert len(set(errors)) == 1 and 0.0 < errors[0] < 0.9  # a trained, imperfect network
    assert C.barrier(betas, errors) == 0.0


def test_barrier_is_the_largest_excess_over_the_linear_interpolation():
    assert C.barrier([0, 0.5, 1], [0.1, 0.5, 0.3]) == pytest.approx(0.5 - 0.2)
    assert C.barrier([0, 0.5, 1], [0.1, 0.1, 0.3]) == 0.0  # below the chord: no barrier
    with pytest.raises(ValueError):
        C.barrier([0.1, 1], [0.2, 0.2])


def test_interpolation_endpoints_reproduce_the_endpoint_errors(data, imp_levels):
    score = C.Scorer(lenet(data), list(data.test_batches(256)))
    a, b = imp_levels["w0"], imp_levels["w1"]
    curve = C.path(score, a, b, [0.0, 0.5, 1.0])
    assert curve[0]["error"] == score(a)["error"] and curve[0]["loss"] == score(a)["loss"]
    assert curve[-1]["error"] == score(b)["error"] and curve[-1]["loss"] == score(b)["loss"]
    assert score(a)["error"] != score(b)["error"] or score(a)["loss"] != score(b)["loss"]


def test_batchnorm_statistics_interpolated_or_recomputed(data):
    """ResNet-20 (BatchNorm): interpolate mode reproduces the endpoints exactly; recompute re-estimates."""
    small = list(data.train_eval_batches(64, 128))
    net = models.build_model({"name": "resnet20"}, data.in_channels, data.num_classes, data.image_size, 1)
    sched = train.Schedule.from_config({**TRAIN_CFG, "epochs": 0.25}, data.num_train)
    train.train(net, data, sched, 0, 2, 1, 2, log=lambda m: None)
    a = state_of(net)
    train.train(net, data, sched, 2, sched.total_steps, 1, 2, log=lambda m: None)
    b = state_of(net)
    test = C.limit_batches(data.test_batches(128), 128)
    interp = C.Scorer(net, test, bn_stats="interpolate")
    assert C.path(interp, a, b, [0.0, 1.0])[0]["loss"] == interp(a)["loss"]
    mid = C.interpolate(a, b, 0.5)
    key = "bn.running_mean"
    assert torch.allclose(mid[key], 0.5 * (a[key] + b[key]))
    recompute = C.Scorer(net, test, bn_stats="recompute", bn_batches=small)
    recompute(mid)
    # the recomputed statistics are the cumulative average over the given batches, not the interpolated ones
    assert not torch.allclose(net.state_dict()[key], mid[key])
    assert int(net.state_dict()["bn.num_batches_tracked"]) == len(small)


def test_pruned_weights_stay_zero_along_paths_and_planes(data, imp_levels):
    w1, m1, names = imp_levels["w1"], imp_levels["m1"], imp_levels["names"]
    m2 = imp.prune_remaining(pruning.prunable_weights(w1, names), 0.2, current=m1)
    pruned1 = {n: ~torch.from_numpy(v) for n, v in m1.layers().items()}
    pruned2 = {n: ~torch.from_numpy(v) for n, v in m2.layers().items()}
    # level 1 was trained under its mask: exactly zero there
    assert C.max_pruned_magnitude(w1, pruned1) == 0.0
    projected = imp.project(w1, m2)
    assert C.max_pruned_magnitude(projected, pruned2) == 0.0
    for beta in (0.1, 0.37, 0.5, 0.9):
        assert C.max_pruned_magnitude(C.interpolate(w1, projected, beta), pruned1) == 0.0
    # a third point pruned by m1 as well (w1 trained further under m2)
    net2, _ = trained(data, mask=m2, start_state=w1, noise=(7, 8))
    w2 = state_of(net2)
    plane = C.Plane(w1, projected, w2, [n for n, _ in lenet(data).named_parameters()])
    xs, ys = plane.grid(5, 0.3)
    for x in xs:
        for y in ys:
            assert C.max_pruned_magnitude(plane.state(float(x), float(y)), pruned1) == 0.0
    # the plane's coordinates of its three points give back those networks
    (xp, yp), (xq, yq) = plane.coords()["p"], plane.coords()["q"]
    for name in projected:
        assert torch.allclose(plane.state(xp, yp)[name], projected[name], atol=1e-5)
        assert torch.allclose(plane.state(xq, yq)[name], w2[name], atol=1e-5)


def test_heuristic_takes_the_largest_ratio_under_the_threshold():
    eps, dense = 0.05, 1.0
    threshold = imp.adaptive_threshold(dense, eps)
    assert threshold == pytest.approx(1.05)
    # not monotone: 0.4 passes although 0.3 does not; 0.5 equals the threshold (not below it)
    losses = {0.1: 0.9, 0.2: 1.0, 0.3: 1.06, 0.4: 1.04, 0.5: threshold, 0.6: 2.0}
    choice = imp.choose_ratio(losses, threshold, 0.2)
    assert choice.best_ratio == 0.4 and choice.pruned_fraction == 0.4
    # only a ratio below the floor passes, or none does: prune the floor
    assert imp.choose_ratio({0.1: 0.9, 0.2: 1.2}, threshold, 0.2).pruned_fraction == 0.2
    none = imp.choose_ratio({0.1: 3.0, 0.2: 4.0}, threshold, 0.2)
    assert none.best_ratio == 0.0 and none.pruned_fraction == 0.2
    with pytest.raises(ValueError):
        imp.adaptive_threshold(1.0, float("nan"))


def test_heuristic_on_real_networks_picks_the_largest_passing_ratio(data, imp_levels):
    """The sweep as the CLI runs it: real losses along real paths; the choice is the largest passing ratio."""
    w0, names, stats = imp_levels["w0"], imp_levels["names"], imp_levels["stats0"]
    score = C.Scorer(lenet(data), list(data.train_eval_batches(256, 512)))
    eps = stats["last_epoch_train_loss_std"]
    threshold = imp.adaptive_threshold(score(w0)["loss"], eps)
    weights = pruning.prunable_weights(w0, names)
    max_loss = {}
    for p in (0.1, 0.3, 0.5, 0.7, 0.9, 0.99):
        proj = imp.project(w0, imp.prune_remaining(weights, p))
        max_loss[p] = max(c["loss"] for c in C.path(score, w0, proj, [0.0, 0.5, 1.0]))
    choice = imp.choose_ratio(max_loss, threshold, 0.2)
    passing = [p for p, v in max_loss.items() if v < threshold]
    assert passing and choice.best_ratio == max(passing)
    assert max_loss[0.99] > threshold  # pruning 99% of a trained net breaks it: the sweep does discriminate


def test_matching_threshold_is_dense_mean_plus_one_sd():
    recs = {"metrics": [{"chain": "fixed", "replicate": r, "pretrain_steps": 8, "level": 0, "sparsity": 0.0,
                         "test_accuracy": acc} for r, acc in ((0, 0.90), (1, 0.80), (2, 0.85))],
            "path": [], "slice": [], "prune": []}
    errors = np.array([0.10, 0.20, 0.15])
    assert imp_plots.matching_thresholds(recs)[8] == pytest.approx(errors.mean() + errors.std(ddof=1))
    assert imp_plots.rounds_to_reach([0.0, 0.2, 0.36, 0.49, 0.59], 0.5) == 4
    assert imp_plots.rounds_to_reach([0.0, 0.5], 0.8) is None


def test_config_errors_name_the_imp_key():
    cfg = yaml.safe_load((ROOT / "workflow/configs/imp-tiny.yaml").read_text())
    bad = json.loads(json.dumps(cfg))
    bad["imp"]["beta_grid"] = [0.0, 0.5]
    with pytest.raises(configmod.ConfigError, match=r"imp\.beta_grid"):
        configmod.validate(bad)
    bad = json.loads(json.dumps(cfg))
    bad["imp"]["slice"]["levels"] = [2]
    with pytest.raises(configmod.ConfigError, match=r"imp\.slice\.levels\[0\]"):
        configmod.validate(bad)
    bad = json.loads(json.dumps(cfg))
    bad["imp"]["adaptive"]["pretrain_steps"] = [5]
    with pytest.raises(configmod.ConfigError, match=r"imp\.adaptive\.pretrain_steps"):
        configmod.validate(bad)
    full = configmod.validate(cfg)
    assert full["imp"]["adaptive"]["min_fraction"] == 0.2 and full["imp"]["bn_stats"] == "recompute"


def test_paper_config_dry_run(tmp_path):
    work = make_workdir(tmp_path)
    out = snakemake(["-n", "--configfile", "workflow/configs/imp-paper.yaml"], cwd=work).stdout
    counts = job_counts(out)
    # 3 replicates x 3 rewind points x 21 levels, plus 11 adaptive levels at tau = 2000
    assert counts["imp_train"] == 3 * 3 * 21 + 3 * 11
    assert counts["imp_slice"] == 4 and counts["pretrain"] == 9
    assert counts["imp_path"] == 3 * 3 * 20 + 3 * (21 * 20 // 2 - 20)


# --------------------------------------------------------------------------- the whole DAG
CONFIG = "workflow/configs/imp-tiny.yaml"
EXP = "results/imp-tiny"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    work = make_workdir(tmp_path_factory.mktemp("imp-tiny"))
    snakemake(["--cores", "2", "--configfile", CONFIG], cwd=work, timeout=1200)
    return work


@pytest.mark.slow
def test_every_figure_and_csv(finished_run):
    figs = finished_run / EXP / "figures"
    for name in ("imp_paths", "imp_heatmap", "imp_slices", "imp_adaptive", "imp_training_curves"):
        for ext in ("png", "pdf", "csv"):
            f = figs / f"{name}.{ext}"
            assert f.is_file() and f.stat().st_size > 0, f
    paths = pd.read_csv(figs / "imp_paths.csv")
    assert set(paths["pretrain_steps"]) == {0, 8}
    assert set(zip(paths["level_a"], paths["level_b"])) == {(0, 1), (1, 2)}
    assert sorted(set(paths["beta"])) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert paths["test_error"].between(0, 1).all() and (paths["barrier"] >= 0).all()
    heat = pd.read_csv(figs / "imp_heatmap.csv")
    assert set(heat["pretrain_steps"]) == {8}
    assert {(0, 2), (0, 0), (1, 2)} <= set(zip(heat["level_a"], heat["level_b"]))
    # the max error on a path is at least each endpoint's own error (the diagonal)
    own = heat[heat["level_a"] == heat["level_b"]].set_index("level_a")["max_error"]
    for _, r in heat[heat["level_a"] != heat["level_b"]].iterrows():
        assert r["max_error"] >= max(own[r["level_a"]], own[r["level_b"]]) - 1e-12
    slices = pd.read_csv(figs / "imp_slices.csv", keep_default_na=False)
    grid = slices[slices["point"] == ""]
    assert len(grid) == 7 * 7 and set(slices["point"]) - {""} == {"w_L", "m_next*w_L", "w_next"}
    assert grid["test_error"].astype(float).between(0, 1).all()
    adaptive = pd.read_csv(figs / "imp_adaptive.csv")
    assert set(adaptive["chain"]) == {"fixed", "adaptive"}
    fixed = adaptive[adaptive["chain"] == "fixed"].sort_values("level")
    assert np.allclose(fixed["sparsity"], [0.0, 0.2, 0.36], atol=1e-3)
    table = pd.read_csv(finished_run / EXP / "tables" / "imp_adaptive.csv")
    assert set(table["chain"]) == {"fixed", "adaptive"} and (table["target_sparsity"] == 0.5).all()


@pytest.mark.slow
def test_adaptive_records_follow_the_heuristic(finished_run):
    for level in (1, 2):
        rec = json.loads((finished_run / EXP / f"rep0/pre8/imp/adaptive/level{level}/prune.json").read_text())
        passing = [s["ratio"] for s in rec["sweep"] if s["max_train_loss"] < rec["threshold"]]
        assert rec["best_ratio"] == max(passing, default=0.0)
        assert rec["pruned_fraction"] == max(rec["best_ratio"], 0.2)
        dense = json.loads((finished_run / EXP / "rep0/pre8/imp/fixed/level0/metrics.json").read_text())
        assert rec["eps"] == dense["last_epoch_train_loss_std"] > 0
        assert rec["threshold"] == pytest.approx(rec["dense_loss"] + rec["eps"])
        kept_before = 1.0 - rec["sparsity_before"]
        assert rec["sparsity"] == pytest.approx(rec["sparsity_before"] + rec["pruned_fraction"] * kept_before,
                                                abs=1e-4)
        mask = Mask.load(finished_run / EXP / f"rep0/pre8/imp/adaptive/level{level}/mask.mask")
        assert mask.sparsity() == pytest.approx(rec["sparsity"])


@pytest.mark.slow
def test_levels_are_masked_and_paths_start_at_their_levels(finished_run):
    base = finished_run / EXP / "rep0/pre8/imp"
    for chain, level in (("fixed", 1), ("fixed", 2), ("adaptive", 2)):
        state, meta = io.load_checkpoint(base / f"{chain}/level{level}/trained.safetensors")
        mask = Mask.load(base / f"{chain}/level{level}/mask.mask")
        for name, keep in mask.layers().items():
            assert (state[name][torch.from_numpy(~keep)] == 0).all(), (chain, level, name)
        assert meta["mask"].endswith(f"{chain}/level{level}/mask.mask") and meta["step"] == 32
    # LeNet has no BatchNorm, so a path's endpoints are the levels themselves: same test error
    for a, b in ((0, 1), (1, 2), (0, 2)):
        rec = json.loads((base / f"fixed/paths/level{a}-level{b}.json").read_text())
        for lvl, err in ((a, rec["error_a"]), (b, rec["error_b"])):
            metrics = json.loads((base / f"fixed/level{lvl}/metrics.json").read_text())
            assert err == pytest.approx(1.0 - metrics["test_accuracy"], abs=1e-12)
        assert rec["barrier"] == pytest.approx(C.barrier(rec["beta"], rec["test_error"]))
    # no resumable state is left behind
    resume = finished_run / "results" / ".resume"
    assert not resume.exists() or not [p for p in resume.rglob("*") if p.is_file()]


def _with(work, name, **changes):
    cfg = yaml.safe_load((work / CONFIG).read_text())
    for key, value in changes.items():
        section, _, sub = key.partition(".")
        if sub:
            cfg["imp"][section][sub] = value
        else:
            cfg["imp"][section] = value
    path = work / "workflow/configs" / name
    path.write_text(yaml.safe_dump(cfg))
    return f"workflow/configs/{name}"


@pytest.mark.slow
def test_adding_a_level_reuses_the_earlier_ones(finished_run):
    work = finished_run
    assert job_counts(snakemake(["-n", "--configfile", CONFIG], cwd=work).stdout) == {}
    more = _with(work, "imp-tiny-4.yaml", levels=4)
    counts = job_counts(snakemake(["-n", "--configfile", more], cwd=work).stdout)
    # one new level per rewind point; paths 2-3 at both taus, plus 0-3 and 1-3 for the heatmap (tau 8)
    assert counts.pop("imp_train") == 2 and counts.pop("imp_prune") == 2 and counts.pop("imp_path") == 4
    # (the report's provenance table reads every artifact; its config copy holds imp.levels; the new level's
    # training curve joins imp_training_curves)
    assert set(counts) <= {"imp_paths", "imp_heatmap", "imp_adaptive", "imp_table", "claims_imp", "claims",
                           "provenance", "report_config", "imp_training_curves", "all"}
    more = _with(work, "imp-tiny-ad4.yaml", **{"adaptive.levels": 4})
    counts = job_counts(snakemake(["-n", "--configfile", more], cwd=work).stdout)
    assert counts.pop("imp_train") == 1 and counts.pop("imp_adaptive_prune") == 1
    assert set(counts) <= {"imp_adaptive", "imp_table", "claims_imp", "claims", "provenance", "report_config",
                           "imp_training_curves", "all"}


@pytest.mark.slow
def test_every_figure_is_legible_at_paper_size(finished_run):
    """Each figure of the run at its page size (a column, or the text width): no text under 7 pt or cut off, no
    legend over data, a title or another legend, no title over another text (rendered bounding boxes)."""
    problems = figure_layout_problems(finished_run, "imp-tiny")
    assert sorted(problems) == sorted(["imp_paths", "imp_heatmap", "imp_slices", "imp_adaptive", "imp_training_curves"])
    assert {name: p for name, p in problems.items() if p} == {}
