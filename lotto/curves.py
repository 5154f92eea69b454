"""Training curves: the CSV every training writes beside its checkpoint, and the ``training_curves`` figure each
family draws from them.

A curve has one row per ``training.log_every`` steps and one for the last step (not one per step: the training
loop does not synchronise with the device more often than it logs). ``loss`` and ``accuracy`` are the means over
the training batches of that interval, in train mode and with the run's augmentation: training statistics, not a
test evaluation. ``lr`` is the learning rate of the interval's last step. ``images_per_s`` and ``elapsed_s``
(training seconds since the run's first step, summed over resumed attempts) are timing: the only columns a
resumed run may have different from an uninterrupted one.

Import-light on purpose: ``lotto train`` writes curves with the csv module; pandas and matplotlib are imported
only by the functions that read and draw them.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Sequence

from lotto.io import atomic_write

COLUMNS = ("step", "epoch", "lr", "loss", "accuracy", "images_per_s", "elapsed_s")
TIMING_COLUMNS = ("images_per_s", "elapsed_s")
#: columns of the table the figure plots (also its CSV): per group and step, over the group's runs
TABLE_COLUMNS = ["group", "step", "runs", "lr", "loss_median", "loss_min", "loss_max", "accuracy_median",
                 "accuracy_min", "accuracy_max"]


def write(path: str | Path, rows: Sequence[dict]) -> None:
    """Write a run's curve atomically (a header-only file for a run of zero steps, e.g. pretraining to t=0)."""
    with atomic_write(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            out = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="raise")
            out.writeheader()
            out.writerows(rows)


def read(path: str | Path):
    """One run's curve as a DataFrame; the error names the file and what is wrong with it."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: training curve not found")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable training curve ({exc})") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: training curve lacks columns {missing} (expected {list(COLUMNS)})")
    return df


def table(groups: Iterable[tuple[str, Sequence[str | Path]]]):
    """Per group and step: the number of runs and the median and range of their loss and accuracy.

    ``groups``: (label, curve files) in the order the figure shows them. The median and range (not mean and
    sd) keep a group of hundreds of runs readable and show its worst run. Groups whose runs have no rows
    (pretraining to step 0) are left out; a group label given twice is an error.
    """
    import pandas as pd

    frames, seen = [], set()
    for label, paths in groups:
        if label in seen:
            raise ValueError(f"training curves: group {label!r} given twice")
        seen.add(label)
        runs = [r for r in (read(p) for p in paths) if len(r)]
        if not runs:
            continue
        rows = pd.concat([r[["step", "lr", "loss", "accuracy"]] for r in runs], ignore_index=True)
        agg = rows.groupby("step", sort=True).agg(
            runs=("loss", "size"), lr=("lr", "median"),
            loss_median=("loss", "median"), loss_min=("loss", "min"), loss_max=("loss", "max"),
            accuracy_median=("accuracy", "median"), accuracy_min=("accuracy", "min"),
            accuracy_max=("accuracy", "max"),
        ).reset_index()
        agg.insert(0, "group", label)
        frames.append(agg)
    if not frames:
        raise ValueError("training curves: no run has any logged step (every curve is empty)")
    return pd.concat(frames, ignore_index=True)[TABLE_COLUMNS]


def render(t, title: str, context: dict | None = None):
    """The figure of a :func:`table`: training loss (log scale) and accuracy against the schedule step."""
    from lotto.figures import new_figure, subtitle  # selects the Agg backend before seaborn comes in

    import seaborn as sns
    from matplotlib.ticker import FuncFormatter

    missing = [c for c in TABLE_COLUMNS if c not in t.columns]
    if missing:
        raise ValueError(f"training curves: table lacks columns {missing} (expected {TABLE_COLUMNS})")
    if t.empty:
        raise ValueError("training curves: table is empty, nothing to plot")
    labels = list(dict.fromkeys(t["group"]))
    colors = dict(zip(labels, sns.color_palette("colorblind", len(labels))))
    fig = new_figure((10.0, 5.2))
    ax_loss, ax_acc = fig.subplots(1, 2, sharex=True)
    for label in labels:
        g = t[t["group"] == label].sort_values("step")
        n = int(g["runs"].max())
        marker = "o" if len(g) <= 30 else None
        for ax, y in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            ax.plot(g["step"], g[f"{y}_median"], color=colors[label], marker=marker, markersize=3, linewidth=1.4,
                    label=f"{label} ({n} run{'s' if n != 1 else ''})")
            if n > 1:
                ax.fill_between(g["step"], g[f"{y}_min"], g[f"{y}_max"], color=colors[label], alpha=0.18,
                                linewidth=0)
    if (t["loss_min"] > 0).all():
        ax_loss.set_yscale("log")
        ax_loss.set_ylabel("training loss (log scale)")
        # 0.3, not 3×10^-1; of the minor ticks only 2, 3 and 5 (x 10^k), or the labels collide below each 1
        ax_loss.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax_loss.yaxis.set_minor_formatter(FuncFormatter(
            lambda v, _pos: f"{v:g}" if f"{v:.0e}"[0] in "235" else ""))
    else:
        ax_loss.set_ylabel("training loss")
    ax_acc.set_ylabel("training accuracy (fraction correct)")
    ax_acc.set_ylim(-0.02, 1.02)
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("training step (of the whole schedule)")
    handles, names = ax_loss.get_legend_handles_labels()
    fig.legend(handles, names, title="runs (line: median, band: min to max)", loc="outside lower center",
               ncols=min(len(names), 3), frameon=False)
    sub = subtitle(context)
    note = "means over each logging interval's training batches"
    fig.suptitle(f"{title}\n{sub + ' · ' if sub else ''}{note}")
    return fig


def draw(t, out_prefix: str | Path, title: str, context: dict | None = None) -> dict[str, Path]:
    """Render :func:`table`'s ``t`` and write ``<out_prefix>.png/.pdf/.csv`` atomically."""
    from lotto.figures import save, style

    with style(font_scale=0.85):
        return save(render(t, title, context), t, out_prefix)


def format_duration(seconds: float) -> str:
    """'42s', '3m05s', '2h07m': for the training log's elapsed time and ETA."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
