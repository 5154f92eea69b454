"""End-to-end tests of the figure layer: JSON records -> tidy tables -> PNG/PDF/CSV."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from lotto.composability import analysis, plots

REPLICATES = (0, 1)
PRETRAIN = (0, 20)
KS = (2, 3)
SPARSITIES = (0.2, 0.5, 0.8, 0.9)
SIBLINGS = 3  # max k: dense siblings 1..3 per (replicate, t)
DENSE_ACC = 0.92


def _overlap(t: int, k: int, s: float, r: int) -> float:
    """Above chance s**(k-1); more pretraining -> more consistent masks."""
    chance = s ** (k - 1)
    stability = 0.35 + 0.4 * (t > 0) + 0.02 * r
    return chance + (1.0 - chance) * stability * (1.0 - 0.3 * s)


def _composed_sparsity(op: str, k: int, s: float, overlap: float) -> float:
    if op == "union":  # pruned only where all k prune
        return s * overlap
    if op == "mean_magnitude":  # pruned at the target
        return s
    if op.startswith("vote"):  # between the union and the intersection
        return (_composed_sparsity("union", k, s, overlap) + _composed_sparsity("intersection", k, s, overlap)) / 2
    return min(s * (1.0 + (k - 1) * (1.0 - overlap)), 0.99)  # pruned where any prunes


def _acc(sparsity: float, t: int, r: int, penalty: float) -> float:
    return DENSE_ACC - penalty * sparsity ** 3 + 0.01 * (t > 0) - 0.003 * r


def _write(path: Path, obj: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def make_records(root: Path, ops=("union", "intersection"), sparsities=SPARSITIES) -> dict[str, list[Path]]:
    """Write a realistic tree of records, with the compositions ``ops`` at every k; return the files by kind."""
    files: dict[str, list[Path]] = {"compose": [], "composed": [], "baseline": [], "dense": []}
    for r in REPLICATES:
        for t in PRETRAIN:
            base = root / f"r{r}" / f"t{t}"
            for i in range(1, SIBLINGS + 1):
                files["dense"].append(_write(base / f"dense{i}" / "metrics.json", {
                    "replicate": r, "pretrain_steps": t, "ticket": "dense", "sibling": i, "k": None,
                    "target_sparsity": 0.0, "sparsity": 0.0, "test_accuracy": DENSE_ACC + 0.002 * i - 0.003 * r,
                    "test_loss": 0.25, "train_accuracy": 0.99, "steps": 1000}))
            for s in sparsities:
                tag = f"{s:.4f}"
                for ticket, penalty in (("oneshot", 0.08), ("random", 0.45)):
                    files["baseline"].append(_write(base / ticket / tag / "metrics.json", {
                        "replicate": r, "pretrain_steps": t, "ticket": ticket, "k": None, "target_sparsity": s,
                        "sparsity": s, "test_accuracy": _acc(s, t, r, penalty), "test_loss": 0.3,
                        "config": {"nested": [1, 2]}}))
                for k in KS:
                    ov = _overlap(t, k, s, r)
                    for op in ops:
                        sp = _composed_sparsity(op, k, s, ov)
                        d = base / f"k{k}" / op / tag
                        files["compose"].append(_write(d / "compose.json", {
                            "replicate": r, "pretrain_steps": t, "k": k, "ticket": op, "target_sparsity": s,
                            "sparsity": sp, "kept": int(round((1 - sp) * 10000)), "total": 10000,
                            "overlap": ov, "chance": s ** (k - 1), "mask": str(d / "mask.mask")}))
                        files["composed"].append(_write(d / "metrics.json", {
                            "replicate": r, "pretrain_steps": t, "ticket": op, "k": k, "target_sparsity": s,
                            "sparsity": sp, "test_accuracy": _acc(sp, t, r, 0.1 if op == "union" else 0.2),
                            "test_loss": 0.3, "train_loss": 0.01}))
    return files


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    files = make_records(root)
    every = [p for group in files.values() for p in group]
    return files, analysis.load_records(every)


N_REP, N_T, N_K, N_S = len(REPLICATES), len(PRETRAIN), len(KS), len(SPARSITIES)
EXPECTED_ROWS = {
    "fig1a": N_REP * N_T * N_S,  # k=2 only, union/intersection deduplicated
    "fig1b": N_REP * N_K * N_S,  # largest t only
    # composed (k=2, every t) + oneshot + random (every t) + dense (one row per replicate and t)
    "fig2a": N_REP * N_T * N_S * 3 + N_REP * N_T,
    "fig2b": N_REP * N_T * N_S * 3 + N_REP * N_T,
    # composed (every k, largest t) + oneshot + random (largest t) + dense
    "fig2c": N_REP * N_K * N_S + 2 * N_REP * N_S + N_REP,
    "fig2d": N_REP * N_K * N_S + 2 * N_REP * N_S + N_REP,
    # both compositions (k=2, largest t) + oneshot + random (largest t) + dense
    "fig2e": N_REP * 2 * N_S + 2 * N_REP * N_S + N_REP,
}


# --------------------------------------------------------------------------- loading
def test_load_records_shape(records):
    files, df = records
    n = sum(len(v) for v in files.values())
    assert len(df) == n
    assert list(df.columns) == analysis.RECORD_COLUMNS
    assert set(df["record"]) == {"compose", "metrics"}
    assert (df[df["record"] == "compose"]["ticket"].isin(["union", "intersection"])).all()
    assert df["source"].str.endswith(".json").all()
    assert df.loc[df["ticket"].isin(["oneshot", "random", "dense"]), "k"].isna().all()
    assert "config" not in df.columns and "train_accuracy" not in df.columns  # unknown keys ignored


def test_load_records_empty():
    df = analysis.load_records([])
    assert df.empty and list(df.columns) == analysis.RECORD_COLUMNS


@pytest.mark.parametrize(
    "kind,drop",
    [("compose", "overlap"), ("compose", "target_sparsity"), ("composed", "test_accuracy"),
     ("composed", "k"), ("baseline", "sparsity"), ("dense", "test_accuracy"), ("dense", "pretrain_steps")],
)
def test_missing_key_names_file_and_key(records, tmp_path, kind, drop):
    files, _ = records
    rec = json.loads(files[kind][0].read_text())
    del rec[drop]
    bad = _write(tmp_path / "bad" / files[kind][0].name, rec)
    with pytest.raises(ValueError) as exc:
        analysis.load_records(files["baseline"][:2] + [bad])
    assert str(bad) in str(exc.value)
    assert repr(drop) in str(exc.value)


def test_bad_values_raise(tmp_path):
    bad = _write(tmp_path / "metrics.json", {"replicate": 0, "pretrain_steps": 0, "ticket": "nonsense", "k": None,
                                             "target_sparsity": 0.5, "sparsity": 0.5, "test_accuracy": 0.9})
    with pytest.raises(ValueError, match="ticket"):
        analysis.load_records([bad])
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        analysis.load_records([bad])
    with pytest.raises(ValueError, match="not found"):
        analysis.load_records([tmp_path / "absent.json"])


# --------------------------------------------------------------------------- tables
@pytest.mark.parametrize("name", list(analysis.FIGURES))
def test_figure_table_rows(records, name):
    _, df = records
    table = analysis.figure_table(name, df)
    expected_cols = analysis.OVERLAP_COLUMNS if name.startswith("fig1") else analysis.ACCURACY_COLUMNS
    assert list(table.columns) == expected_cols
    assert len(table) == EXPECTED_ROWS[name]


def test_fig1_tables(records):
    _, df = records
    a = analysis.figure_table("fig1a", df)
    assert set(a["k"]) == {2}
    assert set(a["pretrain_steps"]) == set(PRETRAIN)
    assert not a.duplicated(["replicate", "pretrain_steps", "target_sparsity"]).any()
    assert (a["overlap"] > a["chance"]).all()
    np.testing.assert_allclose(a["chance"], a["target_sparsity"] ** (a["k"] - 1))
    b = analysis.figure_table("fig1b", df)
    assert set(b["pretrain_steps"]) == {max(PRETRAIN)}
    assert set(b["k"]) == set(KS)
    np.testing.assert_allclose(b["chance"], b["target_sparsity"] ** (b["k"] - 1))


def test_fig2_tables(records):
    _, df = records
    a = analysis.figure_table("fig2a", df)
    assert set(a["ticket"]) == {"union", "oneshot", "random", "dense"}
    assert set(a.loc[a["ticket"] == "union", "k"]) == {2}
    assert set(a["pretrain_steps"]) == set(PRETRAIN)
    dense = a[a["ticket"] == "dense"]
    assert len(dense) == N_REP * N_T and (dense["sparsity"] == 0).all() and dense["k"].isna().all()
    # the dense row of a replicate is the mean of its siblings
    r0 = dense[(dense["replicate"] == 0) & (dense["pretrain_steps"] == 0)]["test_accuracy"].item()
    assert r0 == pytest.approx(np.mean([DENSE_ACC + 0.002 * i for i in range(1, SIBLINGS + 1)]))
    # union sits left of its target sparsity, intersection right of it
    u = a[a["ticket"] == "union"]
    assert (u["sparsity"] < u["target_sparsity"]).all()
    b = analysis.figure_table("fig2b", df)
    i = b[b["ticket"] == "intersection"]
    assert (i["sparsity"] > i["target_sparsity"]).all()
    c = analysis.figure_table("fig2c", df)
    assert set(c["pretrain_steps"]) == {max(PRETRAIN)}
    assert set(c.loc[c["ticket"] == "union", "k"]) == set(KS)
    d = analysis.figure_table("fig2d", df)
    assert set(d["ticket"]) == {"intersection", "oneshot", "random", "dense"}


def test_tables_from_subsets(records):
    """The Snakemake rule hands each figure only its files; the table must not depend on the extras."""
    files, df = records
    sub = analysis.load_records([p for p in files["compose"] if "/k2/union/" in str(p)])
    pd.testing.assert_frame_equal(analysis.figure_table("fig1a", sub), analysis.figure_table("fig1a", df))
    sub = analysis.load_records(files["composed"] + files["baseline"] + files["dense"])
    for name in ("fig2a", "fig2b", "fig2c", "fig2d"):
        pd.testing.assert_frame_equal(analysis.figure_table(name, sub), analysis.figure_table(name, df))


def test_figure_table_errors(records):
    files, df = records
    with pytest.raises(ValueError, match="unknown figure"):
        analysis.figure_table("fig9", df)
    only_metrics = analysis.load_records(files["baseline"])
    with pytest.raises(ValueError, match="fig1a"):
        analysis.figure_table("fig1a", only_metrics)
    with pytest.raises(ValueError, match="fig2a"):
        analysis.figure_table("fig2a", only_metrics)
    dup = analysis.load_records(files["composed"][:1] * 2 + files["baseline"])
    with pytest.raises(ValueError, match="duplicate"):
        analysis.figure_table("fig2a" if "union" in str(files["composed"][0]) else "fig2b", dup)


def test_overlap_disagreement_raises(records, tmp_path):
    files, _ = records
    u = next(p for p in files["compose"] if "/k2/union/" in str(p))
    rec = json.loads(Path(str(u).replace("/union/", "/intersection/")).read_text())
    rec["overlap"] += 0.1
    bad = _write(tmp_path / "compose.json", rec)
    with pytest.raises(ValueError, match="disagree"):
        analysis.figure_table("fig1a", analysis.load_records([u, bad]))


def test_summary_tables(records):
    _, df = records
    out = analysis.summary_tables(df)
    ov, acc = out["overlap"], out["accuracy"]
    assert len(ov) == N_T * N_K * N_S
    assert (ov["n"] == N_REP).all()
    assert {"overlap_mean", "overlap_std", "chance", "union_sparsity_mean", "intersection_sparsity_mean"} <= set(ov)
    assert (ov["union_sparsity_mean"] < ov["target_sparsity"]).all()
    # composed: t x k x op x s; baselines: t x 2 x s; dense: t
    assert len(acc) == N_T * N_K * 2 * N_S + N_T * 2 * N_S + N_T
    assert (acc["n"] == N_REP).all()
    assert {"test_accuracy_mean", "test_accuracy_std", "sparsity_mean"} <= set(acc)
    assert acc["test_accuracy_std"].notna().all()


# --------------------------------------------------------------------------- drawing
@pytest.fixture(scope="module")
def drawn(records, tmp_path_factory):
    _, df = records
    out = tmp_path_factory.mktemp("figures")
    result = {}
    for name in analysis.FIGURES:
        table = analysis.figure_table(name, df)
        result[name] = (table, plots.draw(name, table, out / name))
    return out, result


@pytest.mark.parametrize("name", list(analysis.FIGURES))
def test_draw_writes_files(drawn, name):
    out, result = drawn
    table, paths = result[name]
    assert set(paths) == {"png", "pdf", "csv"}
    for ext, path in paths.items():
        assert path == out / f"{name}.{ext}"
        assert path.is_file() and path.stat().st_size > 0
    assert paths["pdf"].read_bytes().startswith(b"%PDF")
    img = matplotlib.image.imread(paths["png"])
    h, w = img.shape[:2]
    assert 400 <= h <= 2000 and 600 <= w <= 3000
    assert img.std() > 0.01  # not blank
    back = pd.read_csv(paths["csv"])
    assert list(back.columns) == list(table.columns)
    assert len(back) == len(table) == EXPECTED_ROWS[name]
    pd.testing.assert_frame_equal(back, table, check_dtype=False)


def test_no_temp_files_left(drawn):
    out, _ = drawn
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{n}.{e}" for n in analysis.FIGURES for e in ("png", "pdf", "csv"))


def test_draw_from_csv_and_single_replicate(records, tmp_path):
    """A table read back from its CSV draws again; one replicate draws without error bars."""
    _, df = records
    for name in ("fig1b", "fig2a"):
        table = analysis.figure_table(name, df)
        plots.draw(name, table, tmp_path / "a" / name)
        again = pd.read_csv(tmp_path / "a" / f"{name}.csv")
        paths = plots.draw(name, again, tmp_path / "b" / name)
        assert paths["png"].stat().st_size > 0
        one = table[table["replicate"] == 0]
        paths = plots.draw(name, one, tmp_path / "c" / name)
        assert matplotlib.image.imread(paths["png"]).std() > 0.01


def test_draw_high_sparsity_logit_axis(tmp_path):
    rows = [{"replicate": r, "pretrain_steps": t, "k": 2, "target_sparsity": s, "overlap": s + (1 - s) * 0.5,
             "chance": s} for r in (0, 1) for t in (0, 100) for s in (0.5, 0.8, 0.9, 0.95, 0.98, 0.99)]
    table = pd.DataFrame(rows)
    fig = plots.render("fig1a", table)
    assert fig.axes[0].get_xscale() == "logit"
    fig = plots.render("fig1a", table, xscale="linear")
    assert fig.axes[0].get_xscale() == "linear"
    assert plots.draw("fig1a", table, tmp_path / "fig1a")["png"].stat().st_size > 0


def test_draw_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown figure"):
        plots.draw("nope", pd.DataFrame(), tmp_path / "x")
    with pytest.raises(ValueError, match="lacks columns"):
        plots.draw("fig1a", pd.DataFrame({"replicate": [0]}), tmp_path / "x")
    with pytest.raises(ValueError, match="empty"):
        plots.draw("fig2a", pd.DataFrame(columns=analysis.ACCURACY_COLUMNS), tmp_path / "x")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_draw_leaves_global_matplotlib_state_alone(records, tmp_path):
    import matplotlib

    before = dict(matplotlib.rcParams)
    _, df = records
    plots.draw("fig1a", analysis.figure_table("fig1a", df), tmp_path / "fig1a")
    after = dict(matplotlib.rcParams)
    assert {k for k in before if before[k] != after[k]} <= {"backend"}


def test_figure_modules_do_not_import_torch():
    code = ("import sys, matplotlib, lotto.composability.analysis, lotto.composability.plots, lotto.zoo.analysis, "
            "lotto.zoo.plots, lotto.imp.analysis, lotto.imp.plots; "
            "assert 'torch' not in sys.modules; "
            "assert matplotlib.get_backend().lower() == 'agg', matplotlib.get_backend()")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# --------------------------------------------------------------------------- what a reader sees at a glance
CONTEXT = {"model": "resnet20", "dataset": "cifar10", "experiment": "cpu"}


def test_xscale_comes_from_the_sparsity_grid():
    from lotto.composability import xscale_for

    assert xscale_for([0.2, 0.5, 0.9]) == "linear"
    assert xscale_for([0.5, 0.9, 0.99]) == "logit"
    assert xscale_for([0.95]) == "linear"


def test_one_x_scale_for_every_sparsity_figure_of_a_run(records, tmp_path):
    _, df = records
    # the intersections of this run reach past 0.95 while its grid stops at 0.9: a scale chosen from each
    # figure's own points made fig2b logit beside a linear fig2a
    assert analysis.figure_table("fig2b", df)["sparsity"].max() > 0.95
    scales = {n: plots.render(n, analysis.figure_table(n, df)).axes[0].get_xscale() for n in analysis.FIGURES}
    assert set(scales.values()) == {"linear"}, scales

    high_files = make_records(tmp_path, sparsities=(0.5, 0.9, 0.99))
    high = analysis.load_records([p for g in high_files.values() for p in g])
    for name in analysis.FIGURES:
        ax = plots.render(name, analysis.figure_table(name, high)).axes[0]
        assert ax.get_xscale() == "logit", name
        assert ax.get_xlabel().endswith("logit scale"), name  # a logit axis says so
    fig = plots.render("fig2a", analysis.figure_table("fig2a", high), xscale="linear")
    assert fig.axes[0].get_xscale() == "linear" and "logit" not in fig.axes[0].get_xlabel()


def test_lotto_figure_passes_scale_and_context(records, tmp_path):
    from lotto import cli

    files, _ = records
    every = [str(p) for g in files.values() for p in g]
    for name in ("fig2a", "fig2b"):
        assert cli.main(["figure", name, "--xscale", "logit", "--context", json.dumps(CONTEXT), "--out-prefix",
                         str(tmp_path / name), *every]) == 0
        assert matplotlib.image.imread(tmp_path / f"{name}.png").std() > 0.01
    assert cli.main(["figure", "fig2a", "--context", "not json", "--out-prefix", str(tmp_path / "x"), *every]) == 1


def _title(fig) -> str:
    return fig.get_suptitle().replace("\n", " ")


@pytest.mark.parametrize("name", list(analysis.FIGURES))
def test_titles_name_model_and_dataset_readably(records, name):
    _, df = records
    title = _title(plots.render(name, analysis.figure_table(name, df), context=CONTEXT))
    assert "ResNet-20 on CIFAR-10" in title and "mean ± sd over 2 replicates" in title, title
    assert "resnet20" not in title and "cifar10" not in title  # ids are for paths, not for readers


def _legend(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_dense_line_is_named_with_its_mean_and_sd(records):
    _, df = records
    table = analysis.figure_table("fig2a", df)
    dense = table[table["ticket"] == "dense"]
    fig = plots.render("fig2a", table)
    titles = [ax.get_title() for ax in fig.axes]
    for t in PRETRAIN:  # one panel per t, its dense value in its title
        acc = dense[dense["pretrain_steps"] == t]["test_accuracy"]
        assert f"t = {t} · dense {acc.mean():.3f} ± {acc.std():.3f} (n=2)" in titles, titles
    one = analysis.figure_table("fig2c", df)
    one = one[one["replicate"] == 0]
    acc = one.loc[one["ticket"] == "dense", "test_accuracy"].item()
    assert f"dense, t = {max(PRETRAIN)}: {acc:.3f}" in _legend(plots.render("fig2c", one))


def test_zoo_and_imp_titles_name_the_run_and_their_dense_references(tmp_path):
    from lotto.imp import plots as imp_plots
    from lotto.zoo import plots as zoo_plots

    rounds = pd.DataFrame([
        {"task": "mnist", "method": m, "handling": "rewind_init", "iteration": i, "replicate": r,
         "test_accuracy": (0.95 + 0.01 * r) if i == 0 else 0.9 - 0.05 * i}
        for m in ("global_l1", "random") for r in (0, 1) for i in range(3)])
    fig = zoo_plots.render("zoo_accuracy", rounds, context=CONTEXT)
    assert _title(fig) == ("Test accuracy of iteratively pruned networks (MNIST · rewind to init) "
                           "ResNet-20 on CIFAR-10 · mean ± sd over 2 replicates")
    assert fig.axes[0].get_title() == "dense: 0.955 ± 0.007 (n=2)"
    assert {"global L1", "random"} <= set(_legend(fig))  # readable method names
    adaptive = pd.DataFrame([
        {"chain": c, "replicate": 0, "pretrain_steps": 8, "level": L, "sparsity": 1 - 0.8 ** L,
         "test_accuracy": 0.95 - 0.01 * L, "test_error": 0.05 + 0.01 * L, "matching_threshold": 0.06}
        for c in ("fixed", "adaptive") for L in range(3)])
    fig = imp_plots.render("imp_adaptive", adaptive, context=CONTEXT)
    assert "matching at $\\tau$ = 8: dense accuracy − 1 sd = 0.940" in _legend(fig)
    assert _title(fig) == "Adaptive vs fixed pruning ratio ResNet-20 on CIFAR-10 · 1 replicate"
    for draw, name, table in ((zoo_plots.draw, "zoo_accuracy", rounds), (imp_plots.draw, "imp_adaptive", adaptive)):
        assert draw(name, table, tmp_path / name, context=CONTEXT)["png"].stat().st_size > 0


def test_layout_check_finds_what_a_reader_would_stumble_over():
    """lotto.figures.layout_problems, which every figure of the tiny runs passes, does see each kind of fault."""
    from lotto import figures as F

    with F.style():
        fig, (ax,) = F.panels(None, 1)
        ax.plot([0, 1], [0, 1], label="data")
        F.title(fig, "A title")
        assert F.layout_problems(fig) == []
        ax.legend(loc="center")  # over the data
        ax.set_xlabel("tiny", fontsize=5)
        fig.text(0.99, 0.5, "cut off at the right edge")
        problems = F.layout_problems(fig)
    assert any("legend 0 lies over the panel" in p for p in problems), problems
    assert any("'tiny' is 5.0 pt" in p for p in problems), problems
    assert any("cut off at the figure's edge" in p for p in problems), problems
    with F.style():
        fig, axes = F.panels(None, 2)
        for ax in axes:
            ax.set_title("a long panel title that runs into the title of the panel beside it, far too long")
        assert any("overlaps the title" in p for p in F.layout_problems(fig))
