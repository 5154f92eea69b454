"""Compositions beyond union and intersection (issue 13): m-of-k votes, the mask of the siblings' mean |w|, and
compositions brought to exactly the target sparsity."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from lotto import config as C, masks as M, pruning as P
from lotto.cli import main as lotto_main
from lotto.composability import analysis, plots
from lotto.io import save_checkpoint
from test_plots import KS, N_REP, N_S, N_T, make_records
from workflow_helpers import make_workdir, snakemake

SHAPES = {"conv": (4, 3, 3, 3), "fc": (10, 17)}  # d = 108 + 170 = 278
D = 278


def siblings(k, seed=0, shapes=SHAPES):
    """k correlated weight sets, as siblings trained from one rewind point are: a shared part plus their own."""
    rng = np.random.default_rng(seed)
    shared = {n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}
    return [{n: (w + 0.7 * rng.normal(size=w.shape)).astype(np.float32) for n, w in shared.items()} for _ in range(k)]


def random_masks(k, d=1003, seed=0):
    rng = np.random.default_rng(seed)
    return [M.Mask.from_bools({"w": rng.random(d) < rng.uniform(0.2, 0.8)}) for _ in range(k)]


# --------------------------------------------------------------------------- votes
@pytest.mark.parametrize("k", [2, 3, 5])
def test_vote_ends_are_union_and_intersection_bit_for_bit(k):
    ms = random_masks(k, seed=k)
    counts = sum(m.flat_bools().astype(int) for m in ms)
    assert np.array_equal(M.vote(ms, 1).bits, M.union(ms).bits)
    assert np.array_equal(M.vote(ms, k).bits, M.intersection(ms).bits)
    assert M.compose(ms, "vote1").equal(M.compose(ms, "union"))
    assert M.compose(ms, f"vote{k}").equal(M.compose(ms, "intersection"))
    # and every threshold, the two ends included, is the count of masks keeping a weight
    for m in range(1, k + 1):
        assert np.array_equal(M.vote(ms, m).bits, np.packbits(counts >= m))


def test_votes_nest():
    ms = random_masks(5, seed=1)
    votes = [M.vote(ms, m) for m in range(1, 6)]
    for looser, stricter in zip(votes, votes[1:]):
        assert not (stricter.flat_bools() & ~looser.flat_bools()).any()  # vote<m+1> keeps a subset of vote<m>
        assert stricter.kept() <= looser.kept()
    assert votes[0].kept() > votes[-1].kept()


def test_vote_names():
    assert [M.vote_threshold(op) for op in ("vote1", "vote12", "vote0", "vote02", "vote", "union")] == \
        [1, 12, None, None, None, None]
    ms = random_masks(3)
    with pytest.raises(ValueError, match="between 1 and the number of masks"):
        M.compose(ms, "vote4")
    with pytest.raises(ValueError, match="unknown composition"):
        M.compose(ms, "vote0")


# --------------------------------------------------------------------------- mean magnitude
@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("s", [0.2, 0.5, 0.8])
def test_mean_magnitude_of_identical_siblings_is_one_shot_pruning(k, s):
    w = siblings(1, seed=k)[0]
    w["fc"][0, :6] = w["fc"][1, :6] = 0.125  # exact ties: broken by position in both
    mask = P.mean_magnitude([w] * k, s)
    assert mask.equal(P.global_magnitude(w, s))
    assert mask.equal(P.global_magnitude({n: torch.from_numpy(a) for n, a in w.items()}, s))


def test_mean_magnitude_ranks_the_mean_of_the_magnitudes():
    a, b = siblings(2)
    mask = P.mean_magnitude([a, b], 0.6)
    assert mask.kept() == P.kept_at(D, 0.6)
    mean = np.concatenate([(np.abs(a[n]) + np.abs(b[n])).reshape(-1) / 2 for n in SHAPES])
    keep = mask.flat_bools()
    assert mean[keep].min() >= mean[~keep].max()
    with pytest.raises(ValueError, match="other layers or shapes"):
        P.mean_magnitude([a, {"conv": a["conv"]}], 0.5)


# --------------------------------------------------------------------------- matched sparsity
def _composed(k, s, op, seed=0):
    ws = siblings(k, seed=seed)
    sibs = [P.global_magnitude(w, s) for w in ws]
    return ws, sibs, M.compose(sibs, op)


@pytest.mark.parametrize("s", [0.5, 0.8])
@pytest.mark.parametrize("op,k", [("union", 2), ("union", 3), ("intersection", 2), ("intersection", 3), ("vote2", 3)])
def test_matched_sparsity_is_exact(op, k, s):
    ws, sibs, raw = _composed(k, s, op)
    score = P.mean_abs(ws)
    target = P.kept_at(D, s)
    matched = P.match_kept(raw, score, target)
    # exactly the one-shot ticket's count, which for this d is also round((1 - s) d)
    assert matched.kept() == target == sibs[0].kept() == round((1 - s) * D)
    flat = np.concatenate([score[n].reshape(-1) for n in SHAPES])
    r, f = raw.flat_bools(), matched.flat_bools()
    if op == "union":
        assert raw.kept() > target
        assert not (f & ~r).any()  # only pruned further
        dropped = r & ~f
        assert flat[f].min() >= flat[dropped].max()  # the lowest mean |w| among the union's kept weights
    else:
        assert raw.kept() < target
        assert not (r & ~f).any()  # only grown back
        grown, still = f & ~r, ~f
        assert flat[grown].min() >= flat[still].max()  # the highest mean |w| among its pruned weights


def test_match_kept_counts_as_global_magnitude_does():
    """At a tie (d odd, s = 0.5) round((1-s) d) and d - round(s d) differ; the matched count is the latter, the
    one-shot ticket's own, so every ticket of a sparsity column keeps the same number of weights."""
    for d in (7, 9, 101):
        w = {"w": np.random.default_rng(d).normal(size=d).astype(np.float32)}
        assert P.kept_at(d, 0.5) == P.global_magnitude(w, 0.5).kept() == d - round(0.5 * d)
        raw = M.Mask.from_bools({"w": np.ones(d, bool)})
        assert P.match_kept(raw, w, P.kept_at(d, 0.5)).kept() == P.kept_at(d, 0.5)


def test_match_kept_edges():
    ws, _, raw = _composed(2, 0.5, "union")
    score = P.mean_abs(ws)
    assert P.match_kept(raw, score, raw.kept()).equal(raw)
    assert P.match_kept(raw, score, 0).kept() == 0 and P.match_kept(raw, score, D).kept() == D
    with pytest.raises(ValueError, match="cannot keep"):
        P.match_kept(raw, score, D + 1)
    with pytest.raises(ValueError, match="do not match the mask"):
        P.match_kept(raw, {"fc": score["fc"], "conv": score["conv"]}, 10)
    with pytest.raises(ValueError, match="finite"):
        P.match_kept(raw, {**score, "fc": np.full((10, 17), np.nan, np.float32)}, 10)


# --------------------------------------------------------------------------- lotto compose
@pytest.fixture()
def sibling_files(tmp_path):
    """Three sibling checkpoints (written like training writes them) and their one-shot masks at s = 0.5."""
    ckpts, masks = [], []
    for i, w in enumerate(siblings(3), start=1):
        c = tmp_path / f"sibling{i}.safetensors"
        state = {n: torch.from_numpy(a) for n, a in w.items()} | {"fc.bias": torch.zeros(10)}
        save_checkpoint(c, state, {"prunable": list(SHAPES), "step": 16})
        m = tmp_path / f"sibling{i}.mask"
        assert lotto_main(["prune", "--checkpoint", str(c), "--sparsity", "0.5", "--out", str(m)]) == 0
        ckpts.append(str(c))
        masks.append(str(m))
    return tmp_path, ckpts, masks


def _compose(where, op, masks, *extra):
    rec, out = where / f"{op}.json", where / f"{op}.mask"
    code = lotto_main(["compose", "--op", op, "--sparsity", "0.5000", "--labels", '{"replicate": 0}',
                       "--sidecar", str(rec), "--out", str(out), *masks, *extra])
    return code, (json.loads(rec.read_text()) if rec.exists() else None), (M.Mask.load(out) if out.exists() else None)


def test_compose_records_raw_and_final_sparsity(sibling_files):
    where, ckpts, masks = sibling_files
    target = P.kept_at(D, 0.5)
    code, rec, mask = _compose(where, "union", masks)
    assert code == 0 and not rec["match_sparsity"]
    assert rec["raw_kept"] == rec["kept"] == mask.kept() > target and rec["raw_sparsity"] == rec["sparsity"]
    for op, more in (("union", True), ("intersection", False), ("vote2", None)):
        code, rec, mask = _compose(where / "matched", op, masks, "--match-sparsity", "--checkpoints", *ckpts)
        assert code == 0 and rec["match_sparsity"] and rec["ticket"] == op and rec["k"] == 3
        assert rec["kept"] == rec["target_kept"] == mask.kept() == target and rec["total"] == D
        assert rec["sparsity"] == pytest.approx(1 - target / D) == mask.sparsity()
        assert rec["raw_sparsity"] == pytest.approx(1 - rec["raw_kept"] / D)
        if more is not None:
            assert (rec["raw_kept"] > target) == more
        # chance for random masks with the siblings' per-layer pruned counts (global pruning's layers differ from
        # s = 0.5 each, so it sits above s^(k-1) = 0.25)
        from lotto.masks import Mask, chance_overlap_exact

        assert rec["chance_uniform"] == 0.25 and rec["overlap"] > rec["chance"] > 0.25
        assert rec["chance"] == pytest.approx(chance_overlap_exact([Mask.load(m) for m in masks], 0.5))


def test_compose_mean_magnitude_of_one_sibling_thrice_is_its_one_shot_mask(sibling_files):
    where, ckpts, masks = sibling_files
    code, rec, mask = _compose(where, "mean_magnitude", [masks[0]] * 3, "--checkpoints", *[ckpts[0]] * 3)
    assert code == 0 and mask.equal(M.Mask.load(masks[0]))
    assert rec["raw_kept"] == rec["kept"] == P.kept_at(D, 0.5)


def test_compose_refusals(sibling_files, capsys):
    where, ckpts, masks = sibling_files
    assert _compose(where, "mean_magnitude", masks)[0] == 1
    assert "mean_magnitude needs the 3 sibling checkpoints" in capsys.readouterr().err
    assert _compose(where, "union", masks, "--match-sparsity", "--checkpoints", ckpts[0])[0] == 1
    assert "--match-sparsity needs the 3 sibling checkpoints" in capsys.readouterr().err
    assert _compose(where, "vote4", masks)[0] == 1
    assert _compose(where, "xor", masks)[0] == 1
    assert "valid: union, intersection, vote<m>" in capsys.readouterr().err


# --------------------------------------------------------------------------- config
def _tiny(**comp):
    cfg = C.read_config_file(Path(__file__).parents[1] / "workflow" / "configs" / "tiny.yaml")
    cfg["composability"].update(comp)
    return cfg


def test_config_ops_and_match_sparsity():
    comp = C.validate(_tiny())["composability"]
    assert comp["ops"] == ["union", "intersection"] and comp["match_sparsity"] is False
    ops = ["union", "vote2", "vote3", "intersection", "mean_magnitude"]
    assert C.validate(_tiny(ops=ops, match_sparsity=True))["composability"]["ops"] == ops
    with pytest.raises(C.ConfigError, match=r"'composability.ops\[1\]': vote4 .* max\(composability.ks\) = 3"):
        C.validate(_tiny(ops=["union", "vote4"]))
    for bad in ("vote0", "vote02", "xor", "Union"):
        with pytest.raises(C.ConfigError, match=r"'composability.ops\[0\]'.*valid: union, intersection, mean_mag"):
            C.validate(_tiny(ops=[bad]))
    with pytest.raises(C.ConfigError, match="composability.ops"):
        C.validate(_tiny(ops=[]))
    with pytest.raises(C.ConfigError, match="composability.match_sparsity"):
        C.validate(_tiny(match_sparsity="sometimes"))


# --------------------------------------------------------------------------- tables and figures
OPS4 = ("union", "vote2", "intersection", "mean_magnitude")


def test_more_ops_leave_fig1_and_fig2a_to_d_alone_and_fill_fig2e(tmp_path):
    two = analysis.load_records([p for g in make_records(tmp_path / "two").values() for p in g])
    four = analysis.load_records([p for g in make_records(tmp_path / "four", ops=OPS4).values() for p in g])
    for name in ("fig1a", "fig1b", "fig2a", "fig2b", "fig2c", "fig2d"):
        pd.testing.assert_frame_equal(analysis.figure_table(name, two), analysis.figure_table(name, four))
    e = analysis.figure_table("fig2e", four)
    composed = e[e["k"].notna()]
    assert list(dict.fromkeys(composed["ticket"])) == list(OPS4)  # in the order of their masks
    assert set(composed["k"]) == {2} and set(e["pretrain_steps"]) == {20}
    assert len(e) == N_REP * len(OPS4) * N_S + 2 * N_REP * N_S + N_REP
    paths = plots.draw("fig2e", e, tmp_path / "fig2e")
    assert paths["png"].stat().st_size > 0 and paths["pdf"].read_bytes().startswith(b"%PDF")
    tables = analysis.summary_tables(four)
    assert {f"{op}_sparsity_mean" for op in OPS4} <= set(tables["overlap"])
    acc = tables["accuracy"]
    assert len(acc[acc["ticket"].isin(OPS4)]) == N_T * len(KS) * len(OPS4) * N_S


def test_fig2e_needs_k2_compositions(tmp_path):
    files = make_records(tmp_path)
    only_base = analysis.load_records(files["baseline"] + files["dense"])
    with pytest.raises(ValueError, match="fig2e.*no retrained compositions with k=2"):
        analysis.figure_table("fig2e", only_base)


# --------------------------------------------------------------------------- the workflow
@pytest.mark.slow
def test_workflow_runs_every_op_at_matched_sparsity(tmp_path):
    work = make_workdir(tmp_path)
    cfg = yaml.safe_load((work / "workflow" / "configs" / "tiny.yaml").read_text())
    # one rewind point keeps the run short; the ops are what is tested here
    cfg["composability"].update(pretrain_steps=[4], ks=[2, 3], ops=list(OPS4), match_sparsity=True)
    (work / "ops.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(["--cores", "2", "--configfile", "ops.yaml"], cwd=work, timeout=1200)
    root = work / "results" / "tiny"
    pre = root / "rep0" / "pre4"
    for k, ops in ((2, ["union", "intersection", "mean_magnitude"]), (3, list(OPS4))):
        for op in ops:
            for s in ("0.5000", "0.8000"):
                d = pre / f"k{k}" / op / f"s{s}"
                for f in ("mask.mask", "compose.json", "retrained.safetensors", "metrics.json"):
                    assert (d / f).is_file(), d / f
                rec = json.loads((d / "compose.json").read_text())
                assert rec["match_sparsity"] and rec["kept"] == rec["target_kept"] == P.kept_at(rec["total"], float(s))
                metrics = json.loads((d / "metrics.json").read_text())
                assert metrics["ticket"] == op and metrics["k"] == k and metrics["kept"] == rec["kept"]
    # vote2 of two masks is their intersection: trained once, under that name
    assert not (pre / "k2" / "vote2").exists()
    fig2e = pd.read_csv(root / "figures" / "fig2e.csv")
    assert set(fig2e["ticket"]) == {"union", "intersection", "mean_magnitude", "oneshot", "random", "dense"}
    assert (root / "figures" / "fig2e.png").stat().st_size > 0
    for name in ("fig1a", "fig1b", "fig2a", "fig2b", "fig2c", "fig2d"):
        assert (root / "figures" / f"{name}.png").is_file()
    acc = pd.read_csv(root / "tables" / "accuracy.csv")
    assert set(OPS4) <= set(acc["ticket"])
    overlap = pd.read_csv(root / "tables" / "overlap.csv")
    assert {"vote2_raw_sparsity_mean", "mean_magnitude_sparsity_mean"} <= set(overlap)
