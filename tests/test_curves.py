"""Training curves: the CSV `lotto train --curve` writes, the per-family `training_curves` figures drawn from them,
and the workflow that wires every training to its curve."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
import yaml

from lotto import cli, curves
from workflow_helpers import ROOT, make_workdir, snakemake


def _curve(path, steps, loss0, acc0, lr=0.1):
    rows = [{"step": s, "epoch": s / 8, "lr": lr, "loss": loss0 / (1 + s), "accuracy": min(1.0, acc0 + 0.01 * s),
             "images_per_s": 1000.0, "elapsed_s": 0.1 * s} for s in steps]
    curves.write(path, rows)
    return path


# --------------------------------------------------------------------------- the CSV and its table
def test_write_is_atomic_and_reads_back(tmp_path):
    p = _curve(tmp_path / "a" / "trained.curve.csv", [4, 8, 10], 2.0, 0.5)
    assert [f.name for f in p.parent.iterdir()] == ["trained.curve.csv"]  # no temporaries left
    df = curves.read(p)
    assert list(df.columns) == list(curves.COLUMNS) and list(df["step"]) == [4, 8, 10]
    empty = tmp_path / "pre0.curve.csv"
    curves.write(empty, [])  # a run of zero steps (pretraining to t=0): header only
    assert empty.read_text().strip() == ",".join(curves.COLUMNS) and curves.read(empty).empty


def test_table_takes_median_and_range_per_group_and_step(tmp_path):
    a = _curve(tmp_path / "a.csv", [4, 8], 2.0, 0.5)
    b = _curve(tmp_path / "b.csv", [4, 8], 4.0, 0.6)
    c = _curve(tmp_path / "c.csv", [8], 8.0, 0.7)
    empty = tmp_path / "empty.csv"
    curves.write(empty, [])
    t = curves.table([("pre", [empty]), ("siblings", [a, b, c]), ("one", [a])])
    assert list(t.columns) == curves.TABLE_COLUMNS
    assert list(t["group"].unique()) == ["siblings", "one"]  # a group of empty curves is left out
    s8 = t[(t["group"] == "siblings") & (t["step"] == 8)].iloc[0]
    assert s8["runs"] == 3
    assert s8["loss_median"] == pytest.approx(4.0 / 9) and s8["loss_min"] == pytest.approx(2.0 / 9)
    assert s8["loss_max"] == pytest.approx(8.0 / 9)
    assert s8["accuracy_median"] == pytest.approx(0.68) and s8["accuracy_max"] == pytest.approx(0.78)
    s4 = t[(t["group"] == "siblings") & (t["step"] == 4)].iloc[0]
    assert s4["runs"] == 2 and s4["loss_median"] == pytest.approx(3.0 / 5)


def test_a_short_last_interval_is_merged_into_the_one_before(tmp_path):
    """A schedule ending 2 steps after a logged step: that 2-step mean is folded into the 4-step one before it,
    weighted by steps, so the curve ends at the last step without a hook; the band is the runs' middle half."""
    short = _curve(tmp_path / "short.csv", [4, 8, 12, 14], 2.0, 0.5)
    whole = _curve(tmp_path / "whole.csv", [4, 8, 12, 15], 2.0, 0.5)  # 3 of 4 steps: long enough to stand
    t = curves.table([("short", [short]), ("whole", [whole])])
    s = t[t["group"] == "short"]
    assert list(s["step"]) == [4, 8, 14]
    assert s["loss_median"].iloc[-1] == pytest.approx((2.0 / 13 * 4 + 2.0 / 15 * 2) / 6)
    assert s["accuracy_median"].iloc[-1] == pytest.approx(((0.5 + 0.12) * 4 + (0.5 + 0.14) * 2) / 6)
    assert list(t.loc[t["group"] == "whole", "step"]) == [4, 8, 12, 15]
    three = curves.table([("g", [short, whole, _curve(tmp_path / "c.csv", [4], 4.0, 0.1)])])
    s4 = three[three["step"] == 4].iloc[0]
    assert s4["loss_q25"] == pytest.approx(0.4) and s4["loss_q75"] == pytest.approx(0.6)  # 0.4, 0.4, 0.8


def test_table_errors_name_the_file_or_group(tmp_path):
    a = _curve(tmp_path / "a.csv", [4], 2.0, 0.5)
    bad = tmp_path / "bad.csv"
    bad.write_text("step,loss\n4,1.0\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(bad))}: training curve lacks columns \['epoch', 'lr'"):
        curves.table([("g", [a, bad])])
    with pytest.raises(ValueError, match="not found"):
        curves.table([("g", [tmp_path / "absent.csv"])])
    with pytest.raises(ValueError, match="group 'g' given twice"):
        curves.table([("g", [a]), ("g", [a])])
    empty = tmp_path / "e.csv"
    curves.write(empty, [])
    with pytest.raises(ValueError, match="every curve is empty"):
        curves.table([("g", [empty])])


def test_training_curves_command_draws_png_pdf_and_the_table(tmp_path):
    a = _curve(tmp_path / "a.csv", range(4, 41, 4), 2.0, 0.3)
    b = _curve(tmp_path / "b.csv", range(4, 41, 4), 3.0, 0.2)
    c = _curve(tmp_path / "c.csv", range(20, 41, 4), 1.0, 0.6)
    prefix = tmp_path / "fig" / "training_curves"
    context = '{"model":"lenet","dataset":"mnist_embedded","experiment":"tiny"}'
    assert cli.main(["training-curves", "--title", "Training curves", "--context", context, "--group", "siblings",
                     str(a), str(b), "--group", "retrained", str(c), "--out-prefix", str(prefix)]) == 0
    for ext in ("png", "pdf", "csv"):
        assert prefix.with_suffix(f".{ext}").stat().st_size > 0
    assert matplotlib.image.imread(prefix.with_suffix(".png")).std() > 0.01
    back = pd.read_csv(prefix.with_suffix(".csv"))
    pd.testing.assert_frame_equal(back, curves.table([("siblings", [a, b]), ("retrained", [c])]), check_dtype=False)
    fig = curves.render(back, "Training curves", {"model": "lenet", "dataset": "mnist_embedded", "experiment": "tiny"})
    assert "LeNet on MNIST (5,000 digits)" in fig.get_suptitle()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["siblings (2 runs)", "retrained (1 run)"]
    assert cli.main(["training-curves", "--context", "[1]", "--group", "g", str(a), "--out-prefix",
                     str(tmp_path / "x")]) == 1  # --context must be a JSON object


# --------------------------------------------------------------------------- the workflow
def _dataset(config: str) -> str:
    return yaml.safe_load((ROOT / config).read_text())["data"]["dataset"]


def _dry_run_commands(config: str) -> list[str]:
    """The shell command of every job of the config's whole DAG."""
    out = snakemake(["all", "-n", "-p", "--configfile", config], cwd=ROOT, timeout=300)
    prefix = "Shell command: "
    return [line.removeprefix(prefix) for line in (out.stdout + out.stderr).splitlines() if line.startswith(prefix)]


def _options(command: str) -> dict[str, str]:
    words = shlex.split(command)
    return {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}


@pytest.mark.parametrize("config,family_curves", [
    ("workflow/configs/tiny.yaml", "training_curves"),
    ("workflow/configs/imp-tiny.yaml", "imp_training_curves"),
    ("workflow/configs/zoo-tiny.yaml", "zoo_training_curves"),
])
def test_every_training_writes_its_curve_and_every_figure_names_the_run(config, family_curves):
    if config.endswith("zoo-tiny.yaml") and not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("zoo-tiny.yaml reads Debian's dataset-fashion-mnist, not installed here")
    commands = _dry_run_commands(config)
    trainings = [c for c in commands if c.startswith(("lotto train ", "lotto zoo-iterate "))]
    assert trainings
    curve_files = set()
    for c in trainings:
        opts = _options(c)
        assert opts["--curve"] == opts["--out"].removesuffix(".safetensors") + ".curve.csv", c
        curve_files.add(opts["--curve"])
    drawing = r"lotto (figure|zoo-figure|imp-figure|zoo-ensemble|training-curves) "
    figures = [c for c in commands if re.match(drawing, c)]
    assert figures
    experiment = Path(config).stem
    for c in figures:
        context = json.loads(_options(c)["--context"])
        assert {k: context[k] for k in ("dataset", "experiment", "model")} == {
            "dataset": _dataset(config), "experiment": experiment, "model": "lenet"}, c
        assert context["figure"] == {"width": 3.4, "wide_width": 7.0}, c  # the schema's default page sizes
    scales = {_options(c)["--xscale"] for c in figures if "lotto figure " in c}
    assert len(scales) <= 1, scales  # one x scale for fig1a-fig2d of a run
    (drawn,) = [c for c in figures if f"figures/{family_curves} " in c + " "]
    assert set(shlex.split(drawn)) >= curve_files  # the family's figure reads every training's curve


@pytest.mark.slow
def test_tiny_training_curves_end_to_end(tmp_path):
    """The one real run: every composability training of the tiny config, then its training_curves figure."""
    work = make_workdir(tmp_path)
    snakemake(["training_curves", "--cores", "2", "--configfile", "workflow/configs/tiny.yaml"], cwd=work,
              timeout=1200)
    exp = work / "results" / "tiny"
    figs = exp / "figures"
    for ext in ("png", "pdf", "csv"):
        assert (figs / f"training_curves.{ext}").stat().st_size > 0
    table = pd.read_csv(figs / "training_curves.csv")
    assert list(table["group"].unique()) == ["pretraining (0 to t)", "dense siblings (t to end)", "one-shot tickets",
                                             "random tickets", "unions of k masks", "intersections of k masks"]
    sib = table[table["group"] == "dense siblings (t to end)"]
    assert list(sib["step"]) == [4, 8, 12, 16] and list(sib["runs"]) == [3, 6, 6, 6]  # t=0: 3 from step 0; t=4 too
    assert table["loss_median"].gt(0).all() and table["accuracy_median"].between(0, 1).all()
    curve = pd.read_csv(exp / "rep0" / "pre4" / "k2" / "union" / "s0.5000" / "retrained.curve.csv")
    assert list(curve.columns) == list(curves.COLUMNS) and list(curve["step"]) == [8, 12, 16]
    # the lr of each interval's last step (steps 8, 11, 15): the milestone at 1.5 epochs is step 12
    assert curve["lr"].tolist() == pytest.approx([0.05, 0.05, 0.005])
    assert pd.read_csv(exp / "rep0" / "pre0" / "rewind.curve.csv").empty  # pretraining to t=0 trains nothing
    log = (exp / "rep0" / "pre4" / "sibling1" / "train.log").read_text()
    assert re.search(r"step 16/16 .* elapsed \d+s eta 0s", log), log[-2000:]
