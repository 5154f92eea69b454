"""The whole composability DAG, for real: Snakemake runs every rule of the tiny config on real MNIST."""

import hashlib
import time

import pandas as pd
import pytest

from workflow_helpers import figure_layout_problems, job_counts, make_workdir, snakemake

pytestmark = pytest.mark.slow

CONFIG = "workflow/configs/tiny.yaml"
EXP = "results/tiny"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    work = make_workdir(tmp_path_factory.mktemp("tiny"))
    snakemake(["--cores", "2", "--configfile", CONFIG], cwd=work, timeout=1200)
    return work


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_figure_and_csv(finished_run):
    figs = finished_run / EXP / "figures"
    for name in ["fig1a", "fig1b", "fig2a", "fig2b", "fig2c", "fig2d", "fig2e", "training_curves"]:
        for ext in ("png", "pdf", "csv"):
            f = figs / f"{name}.{ext}"
            assert f.is_file() and f.stat().st_size > 0, f
    fig1a = pd.read_csv(figs / "fig1a.csv")
    assert set(fig1a["k"]) == {2} and set(fig1a["pretrain_steps"]) == {0, 4}
    assert {"overlap", "chance", "target_sparsity"} <= set(fig1a.columns)
    # the exact chance of random masks with the siblings' per-layer pruned counts: at least s (Cauchy-Schwarz;
    # equal when every layer is pruned to s), the figure's reference line s^(k-1) is the paper's
    assert (fig1a["chance"] >= fig1a["target_sparsity"] - 1e-12).all()
    # independently trained siblings agree on what to prune far beyond chance
    assert (fig1a["overlap"] > fig1a["chance"]).all()
    fig1b = pd.read_csv(figs / "fig1b.csv")
    assert set(fig1b["k"]) == {2, 3} and set(fig1b["pretrain_steps"]) == {4}
    fig2a = pd.read_csv(figs / "fig2a.csv")
    assert {"union", "oneshot", "random", "dense"} <= set(fig2a["ticket"])
    union = fig2a[fig2a["ticket"] == "union"]
    # a union keeps at least what each sibling kept: its sparsity is at most the target's
    assert (union["sparsity"] <= union["target_sparsity"] + 1e-9).all()
    fig2b = pd.read_csv(figs / "fig2b.csv")
    inter = fig2b[fig2b["ticket"] == "intersection"]
    assert (inter["sparsity"] >= inter["target_sparsity"] - 1e-9).all()
    assert fig2a["test_accuracy"].between(0, 1).all()
    fig2d = pd.read_csv(figs / "fig2d.csv")
    assert set(fig2d.loc[fig2d["ticket"] == "intersection", "k"]) == {2, 3}
    for table in ("overlap", "accuracy"):
        assert (finished_run / EXP / "tables" / f"{table}.csv").is_file()


def test_artifacts_are_file_targets_with_readable_paths(finished_run):
    root = finished_run / EXP / "rep0"
    expected = [
        "init.safetensors",
        "pre0/rewind.safetensors",
        "pre4/rewind.safetensors",
        "pre4/sibling1/trained.safetensors",
        "pre4/sibling3/trained.safetensors",
        "pre4/sibling2/masks/s0.8000.mask",
        "pre4/k2/union/s0.5000/mask.mask",
        "pre4/k3/intersection/s0.8000/retrained.safetensors",
        "pre4/k3/intersection/s0.8000/metrics.json",
        "pre0/oneshot/s0.5000/retrained.safetensors",
        "pre0/random/s0.8000/mask.mask",
        "pre0/random/s0.8000/retrained.safetensors",
    ]
    for rel in expected:
        assert (root / rel).is_file(), rel
    log = (root / "pre4/sibling1/train.log").read_text()
    assert "images/s" in log and "loss" in log and "step 16/16" in log
    # no resumable state is left once a run finished
    resume = finished_run / "results" / ".resume"
    assert not resume.exists() or not [p for p in resume.rglob("*") if p.is_file()]


def test_nothing_to_do_after_a_run_and_one_mask_deleted_reruns_only_dependents(finished_run):
    dry = snakemake(["-n", "--cores", "2", "--configfile", CONFIG], cwd=finished_run)
    assert "Nothing to be done" in dry.stdout + dry.stderr

    root = finished_run / EXP / "rep0" / "pre4"
    victim = root / "sibling2" / "masks" / "s0.5000.mask"
    before = digest(victim)
    untouched = [
        root / "sibling1" / "masks" / "s0.5000.mask",
        root / "oneshot" / "s0.5000" / "retrained.safetensors",
        root / "k2" / "union" / "s0.8000" / "retrained.safetensors",
        root / "sibling2" / "trained.safetensors",
    ]
    mtimes = {p: p.stat().st_mtime_ns for p in untouched}
    victim.unlink()
    dry = snakemake(["-n", "--cores", "2", "--configfile", CONFIG], cwd=finished_run)
    counts = job_counts(dry.stdout + dry.stderr)
    assert counts.get("mask") == 1, counts
    assert counts.get("compose") == 4, counts  # k2 and k3, union and intersection, at s=0.5
    assert counts.get("retrain") == 4, counts
    for rule in ("sibling", "pretrain", "init", "stage_data", "random_ticket"):
        assert rule not in counts, counts

    time.sleep(0.01)
    snakemake(["--cores", "2", "--configfile", CONFIG], cwd=finished_run)
    assert digest(victim) == before  # same inputs, same machine -> the identical mask
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items())


def test_invalid_config_rejected_before_any_job(tmp_path):
    work = make_workdir(tmp_path)
    bad = work / "bad.yaml"
    bad.write_text((work / CONFIG).read_text().replace("ks: [2, 3]", "ks: [1, 2]"))
    proc = snakemake(["--cores", "1", "--configfile", "bad.yaml"], cwd=work, check=False)
    assert proc.returncode != 0
    assert "composability.ks[0]" in proc.stderr + proc.stdout
    assert not (work / "results").exists()


@pytest.mark.slow
def test_every_figure_is_legible_at_paper_size(finished_run):
    """Each figure of the run at its page size (a column, or the text width): no text under 7 pt or cut off, no
    legend over data, a title or another legend, no title over another text (rendered bounding boxes)."""
    problems = figure_layout_problems(finished_run, "tiny")
    assert sorted(problems) == sorted(["fig1a", "fig1b", "fig2a", "fig2b", "fig2c", "fig2d", "fig2e", "training_curves"])
    assert {name: p for name, p in problems.items() if p} == {}


@pytest.mark.slow
def test_export_masks_target_writes_every_mask_as_safetensors(finished_run):
    """`snakemake export_masks`: one safetensors file per mask of the run, the same bits as the .mask."""
    from safetensors.numpy import load_file

    from lotto.masks import Mask

    snakemake(["export_masks", "--cores", "2", "--configfile", CONFIG], cwd=finished_run, timeout=600)
    exp = finished_run / EXP
    masks = sorted(p.relative_to(exp) for p in exp.rglob("*.mask") if "export" not in p.parts)
    exported = sorted(p.relative_to(exp / "export") for p in (exp / "export").rglob("*.safetensors"))
    assert exported == [m.with_suffix(".safetensors") for m in masks] and len(masks) > 20
    sample = masks[len(masks) // 2]
    mask, arrays = Mask.load(exp / sample), load_file(exp / "export" / sample.with_suffix(".safetensors"))
    assert {n: a.tolist() for n, a in arrays.items()} == {n: a.tolist() for n, a in mask.layers().items()}
