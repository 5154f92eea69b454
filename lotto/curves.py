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
TABLE_COLUMNS = ["group", "step", "runs", "lr", "loss_median", "loss_min", "loss_max", "loss_q25", "loss_q75",
                 "accuracy_median", "accuracy_min", "accuracy_max", "accuracy_q25", "accuracy_q75"]
#: a run's last interval of at most this fraction of its logging interval is merged into the one before
SHORT_LAST = 0.5


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


def merge_short_last(run):
    """A run's curve with a short last interval folded into the interval before it.

    A curve has a row every ``log_every`` steps and one at the last step: when the schedule's end is not a
    multiple of ``log_every``, that last row averages a few batches (2 of 25, say), noisier than the rest, and a
    plotted curve hooks at its end. A last interval of at most ``SHORT_LAST`` of the run's logging interval is
    merged into the previous row, weighted by steps: the curve still ends at the last step, its last point the
    mean over a full-length interval. The learning rate is the last step's.
    """
    if len(run) < 3:
        return run
    steps = run["step"].to_numpy()
    gaps = steps[1:] - steps[:-1]
    every, last = int(gaps[:-1].max()), int(gaps[-1])
    if last > SHORT_LAST * every:
        return run
    prev = int(gaps[-2]) if len(gaps) >= 2 else every
    run = run.reset_index(drop=True).copy()
    i = len(run) - 1
    for col in ("loss", "accuracy"):
        run.loc[i - 1, col] = (run.loc[i - 1, col] * prev + run.loc[i, col] * last) / (prev + last)
    for col in ("step", "epoch", "lr"):
        run.loc[i - 1, col] = run.loc[i, col]
    return run.iloc[:i]


def table(groups: Iterable[tuple[str, Sequence[str | Path]]]):
    """Per group and step: the number of runs and the median, quartiles and range of their loss and accuracy.

    ``groups``: (label, curve files) in the order the figure shows them. The median and quartiles (not mean and
    sd) keep a group of hundreds of runs readable whatever its worst run does; the range is kept in the table.
    Each run's short last interval is merged into the one before (:func:`merge_short_last`). Groups whose runs
    have no rows (pretraining to step 0) are left out; a group label given twice is an error.
    """
    import pandas as pd

    frames, seen = [], set()
    for label, paths in groups:
        if label in seen:
            raise ValueError(f"training curves: group {label!r} given twice")
        seen.add(label)
        runs = [merge_short_last(r) for r in (read(p) for p in paths) if len(r)]
        if not runs:
            continue
        rows = pd.concat([r[["step", "lr", "loss", "accuracy"]] for r in runs], ignore_index=True)
        g = rows.groupby("step", sort=True)
        agg = g.agg(
            runs=("loss", "size"), lr=("lr", "median"),
            loss_median=("loss", "median"), loss_min=("loss", "min"), loss_max=("loss", "max"),
            accuracy_median=("accuracy", "median"), accuracy_min=("accuracy", "min"),
            accuracy_max=("accuracy", "max"),
        )
        for col in ("loss", "accuracy"):
            agg[f"{col}_q25"] = g[col].quantile(0.25)
            agg[f"{col}_q75"] = g[col].quantile(0.75)
        agg = agg.reset_index()
        agg.insert(0, "group", label)
        frames.append(agg)
    if not frames:
        raise ValueError("training curves: no run has any logged step (every curve is empty)")
    return pd.concat(frames, ignore_index=True)[TABLE_COLUMNS]


def render(t, title: str, context: dict | None = None):
    """The figure of a :func:`table`: training loss (log scale) and accuracy against the schedule step, one
    colour per group: the median over its runs, and a band over their middle half where it has several."""
    from lotto import figures as F  # selects the Agg backend before seaborn comes in

    from matplotlib.lines import Line2D

    missing = [c for c in TABLE_COLUMNS if c not in t.columns]
    if missing:
        raise ValueError(f"training curves: table lacks columns {missing} (expected {TABLE_COLUMNS})")
    if t.empty:
        raise ValueError("training curves: table is empty, nothing to plot")
    labels = list(dict.fromkeys(t["group"]))
    styles = F.series_styles(labels)
    fig, (ax_loss, ax_acc) = F.panels(context, 2, sharex=True)
    handles = []
    for label in labels:
        g = t[t["group"] == label].sort_values("step")
        n = int(g["runs"].max())
        st = dict(styles[label], marker=styles[label]["marker"] if len(g) <= 30 else None)
        for ax, y in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            ax.plot(g["step"], g[f"{y}_median"], markersize=2.5, linewidth=1.1, **st)
            if n > 1:
                ax.fill_between(g["step"], g[f"{y}_q25"], g[f"{y}_q75"], color=st["color"], alpha=0.15, linewidth=0)
        handles.append(Line2D([], [], markersize=2.5, linewidth=1.1, label=f"{label} ({n} run{'s' if n != 1 else ''})",
                              **st))
    positive = t.loc[t["loss_q25"] > 0, "loss_q25"]
    if len(positive) == len(t) and t["loss_q75"].max() > 10 * positive.min():  # a log scale where it spans a decade
        F.plain_log_scale(ax_loss)
        ax_loss.set_ylabel("training loss (log scale)")
    else:
        ax_loss.set_ylabel("training loss")
    ax_acc.set_ylabel("training accuracy")
    F.fit_ylim(ax_acc, F.data_values(ax_acc), lower=0.0, upper=1.0)
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("training step (of the whole schedule)")
    F.legend_below(fig, handles, title="runs (line: median; band: middle half of the runs)")
    F.title(fig, title, context, "means over each logging interval's training batches")
    return fig


def draw(t, out_prefix: str | Path, title: str, context: dict | None = None) -> dict[str, Path]:
    """Render :func:`table`'s ``t`` and write ``<out_prefix>.png/.pdf/.csv`` atomically."""
    from lotto.figures import save, style

    with style():
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
