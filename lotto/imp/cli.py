"""``lotto imp-*`` subcommands: IMP pruning steps, linear paths, 2-D slices, their figures (Paul et al. 2022).

Level training itself is ``lotto train --mask``. Heavy imports happen inside the commands.
"""

from __future__ import annotations

from lotto import config as configmod
from lotto.imp import RECORD_FIGURES
from lotto.runner import log as _log, model_from_checkpoint as _model_from_checkpoint
from lotto.runner import parse_labels as _labels, setup_torch as _setup_torch


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"{what} must be numbers separated by commas or spaces, got {text!r}")
    if not values:
        raise ValueError(f"{what} is empty")
    return values


def _betas(text: str) -> list[float]:
    betas = _floats(text, "--beta-grid")
    if betas[0] != 0.0 or betas[-1] != 1.0 or any(b >= c for b, c in zip(betas, betas[1:])):
        raise ValueError(f"--beta-grid must increase from 0 to 1, got {text!r}")
    return betas


def _zero_fraction(state: dict, names: list[str]) -> float:
    """Fraction of prunable weights that are exactly zero: the sparsity of a masked-trained network."""
    zeros = sum(int((state[n] == 0).sum()) for n in names)
    total = sum(state[n].numel() for n in names)
    return zeros / total


class _Setup:
    """Config, device, data and a model skeleton shared by the evaluation commands."""

    def __init__(self, args, checkpoint: str):
        from lotto import io, train
        from lotto.data import DeviceData

        self.cfg = configmod.load(args.config, partial=True)
        self.tcfg = self.cfg["training"]
        self.device = train.pick_device(self.tcfg["device"])
        self.state, self.meta = io.load_checkpoint(checkpoint)
        self.model = _model_from_checkpoint(self.state, self.meta, self.cfg["model"], checkpoint)
        self.data = DeviceData.load(args.data, device=self.device, augment=False)
        self.names = self.meta["prunable"]

    def scorer(self, split: str, limit: int | None, bn_stats: str, bn_images: int):
        from lotto.imp import connectivity as C

        bs = self.tcfg["eval_batch_size"]
        if split == "test":
            batches = C.limit_batches(self.data.test_batches(bs), limit)
        else:
            batches = list(self.data.train_eval_batches(bs, limit))
        needs_bn = bn_stats == "recompute" and bool(C.batchnorms(self.model))
        bn = list(self.data.train_eval_batches(bs, bn_images)) if needs_bn else []
        return C.Scorer(self.model, batches, bn_stats=bn_stats, bn_batches=bn, device=self.device)

    def load(self, path: str) -> dict:
        from lotto import io
        from lotto.imp import connectivity as C

        state, meta = io.load_checkpoint(path)
        if meta.get("prunable") != self.names or set(state) != set(self.state):
            raise ValueError(f"{path} is not the same network as the other checkpoint")
        return C.to_device(state, self.device)


# --- subcommands --------------------------------------------------------------------------------
def cmd_imp_prune(args) -> None:
    from lotto import io, pruning
    from lotto.imp import pruning as imp
    from lotto.masks import Mask, check_fits

    # numpy, not torch: a light job (see lotto prune)
    state, meta = io.load_arrays(args.checkpoint)
    current = Mask.load(args.mask) if args.mask else None
    weights = pruning.prunable_weights(state, meta["prunable"])
    if current is not None:
        check_fits(current, weights, f"checkpoint {args.checkpoint}")
    mask = imp.prune_remaining(weights, args.fraction, current).with_meta(
        checkpoint=str(args.checkpoint), parent=str(args.mask) if args.mask else None, **_labels(args.labels)
    )
    mask.save(args.out)
    before = current.sparsity() if current is not None else 0.0
    _log(f"pruned {args.fraction:.0%} of the remaining weights: sparsity {before:.4f} -> {mask.sparsity():.4f} "
         f"-> {args.out}")


def cmd_imp_adaptive_prune(args) -> None:
    _setup_torch(args.threads)
    from lotto import io, pruning
    from lotto.imp import connectivity as C, pruning as imp
    from lotto.masks import Mask, check_fits

    ratios = sorted(_floats(args.ratios, "--ratios"))
    if not all(0.0 < r < 1.0 for r in ratios):
        raise ValueError(f"--ratios must lie in (0, 1), got {args.ratios!r}")
    betas = _betas(args.beta_grid)
    dense_rec = io.read_json(args.dense_metrics)
    eps = float(dense_rec["last_epoch_train_loss_std"])
    s = _Setup(args, args.checkpoint)
    current = Mask.load(args.mask) if args.mask else None
    if current is not None:
        check_fits(current, {n: s.state[n] for n in s.names}, f"checkpoint {args.checkpoint}")
    score = s.scorer("train", args.train_eval_size, args.bn_stats, args.bn_images)
    if args.dense_loss == "evaluated":
        dense_loss = score(s.load(args.dense_checkpoint))["loss"]
    else:
        dense_loss = float(dense_rec["last_epoch_train_loss_mean"])
    threshold = imp.adaptive_threshold(dense_loss, eps)
    w = C.to_device(s.state, s.device)
    weights = pruning.prunable_weights(s.state, s.names)
    sweep, max_loss = [], {}
    for p in ratios:
        projected = imp.project(w, imp.prune_remaining(weights, p, current))
        curve = C.path(score, w, projected, betas)
        max_loss[p] = max(c["loss"] for c in curve)
        sweep.append({"ratio": p, "max_train_loss": max_loss[p], "passes": max_loss[p] < threshold,
                      "train_loss": [c["loss"] for c in curve], "train_error": [c["error"] for c in curve]})
        _log(f"ratio {p:.2f}: max training loss on the path {max_loss[p]:.4f} (threshold {threshold:.4f})")
    choice = imp.choose_ratio(max_loss, threshold, args.min_fraction)
    mask = imp.prune_remaining(weights, choice.pruned_fraction, current).with_meta(
        checkpoint=str(args.checkpoint), parent=str(args.mask) if args.mask else None, **_labels(args.labels)
    )
    mask.save(args.out)
    record = {
        **_labels(args.labels),
        "kind": "imp-adaptive-prune",
        "checkpoint": str(args.checkpoint),
        "eps": eps,
        "dense_loss": dense_loss,
        "dense_loss_kind": args.dense_loss,
        "threshold": threshold,
        "best_ratio": choice.best_ratio,
        "pruned_fraction": choice.pruned_fraction,
        "min_fraction": args.min_fraction,
        "sparsity_before": current.sparsity() if current is not None else 0.0,
        "sparsity": mask.sparsity(),
        "beta": betas,
        "bn_stats": args.bn_stats,
        "sweep": sweep,
    }
    io.write_json(args.record, record)
    _log(f"largest passing ratio {choice.best_ratio:.2f}; pruned {choice.pruned_fraction:.2f} of the remaining "
         f"weights: sparsity {record['sparsity_before']:.4f} -> {mask.sparsity():.4f} -> {args.out}")


def cmd_imp_path(args) -> None:
    _setup_torch(args.threads)
    from lotto import evidence, io
    from lotto.imp import connectivity as C

    betas = _betas(args.beta_grid)
    s = _Setup(args, args.a)
    a = C.to_device(s.state, s.device)
    b = s.load(args.b)
    score = s.scorer("test", args.test_size, args.bn_stats, args.bn_images)
    curve = C.path(score, a, b, betas)
    test_id = s.data.test_set_id(sum(len(y) for _, y in score.eval_batches))
    errors = [c["error"] for c in curve]
    record = {
        **_labels(args.labels),
        "kind": "imp-path",
        "a": str(args.a),
        "b": str(args.b),
        "beta": betas,
        "test_error": errors,
        "test_loss": [c["loss"] for c in curve],
        "barrier": C.barrier(betas, errors),
        "max_error": max(errors),
        "error_a": errors[0],
        "error_b": errors[-1],
        "sparsity_a": _zero_fraction(a, s.names),
        "sparsity_b": _zero_fraction(b, s.names),
        "bn_stats": args.bn_stats,
        "test_examples": sum(len(y) for _, y in score.eval_batches),
        # per beta, which test examples the interpolated network got right: the barrier's test-set noise
        # is estimated from them, paired across the path (lotto.evidence)
        "test_correct": [evidence.pack(c["correct"], test_id) for c in curve],
    }
    io.write_json(args.out, record)
    _log(f"path {args.a} -> {args.b}: errors {errors[0]:.4f} .. {errors[-1]:.4f}, max {record['max_error']:.4f}, "
         f"barrier {record['barrier']:.4f} -> {args.out}")


def cmd_imp_slice(args) -> None:
    _setup_torch(args.threads)
    from lotto import io
    from lotto.imp import connectivity as C, pruning as imp
    from lotto.masks import Mask, check_fits

    s = _Setup(args, args.level_checkpoint)
    w = C.to_device(s.state, s.device)
    nxt = s.load(args.next_checkpoint)
    mask = Mask.load(args.next_mask)
    check_fits(mask, {n: s.state[n] for n in s.names}, f"checkpoint {args.level_checkpoint}")
    projected = imp.project(w, mask)
    params = [n for n, _ in s.model.named_parameters()]
    plane = C.Plane(w, projected, nxt, params)
    xs, ys = plane.grid(args.grid, args.margin)
    score = s.scorer("test", args.test_size, args.bn_stats, args.bn_images)
    _log(f"slice: {args.grid}x{args.grid} grid over {sum(len(y) for _, y in score.eval_batches)} test images")
    out = C.slice_errors(score, plane, xs, ys, log=_log if args.grid >= 11 else None)
    points = {"w_L": plane.coords()["o"], "m_next*w_L": plane.coords()["p"], "w_next": plane.coords()["q"]}
    record = {
        **_labels(args.labels),
        "kind": "imp-slice",
        "level_checkpoint": str(args.level_checkpoint),
        "next_checkpoint": str(args.next_checkpoint),
        "next_mask": str(args.next_mask),
        "x": xs.tolist(),
        "y": ys.tolist(),
        "test_error": out["error"].tolist(),
        "test_loss": out["loss"].tolist(),
        "points": {k: list(v) for k, v in points.items()},
        "point_errors": {k: score(st)["error"] for k, st in (("w_L", w), ("m_next*w_L", projected), ("w_next", nxt))},
        "bn_stats": args.bn_stats,
    }
    io.write_json(args.out, record)
    err = out["error"]
    _log(f"slice error {float(err.min()):.4f} .. {float(err.max()):.4f} -> {args.out}")


def cmd_imp_figure(args) -> None:
    from lotto.imp import analysis, plots

    records = analysis.load(args.inputs)
    table = analysis.table(args.name, records)
    plots.draw(args.name, table, args.out_prefix, context=_labels(args.context, "--context"))
    _log(f"{args.name}: {len(table)} rows -> {args.out_prefix}.png/.pdf/.csv")


def cmd_imp_table(args) -> None:
    from lotto.imp import analysis
    from lotto.io import atomic_write

    table = analysis.rounds_table(analysis.load(args.inputs), args.target_sparsity)
    with atomic_write(args.out, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)
    _log(f"retraining rounds to sparsity {args.target_sparsity}: {len(table)} rows -> {args.out}")


# --- parser -------------------------------------------------------------------------------------
def _eval_options(sp, betas=True):
    if betas:
        sp.add_argument("--beta-grid", default="0,0.25,0.5,0.75,1",
                        help="interpolation coefficients, increasing from 0 to 1 (commas or spaces)")
    sp.add_argument("--bn-stats", choices=["recompute", "interpolate"], default="recompute",
                    help="BatchNorm statistics of interpolated networks: re-estimated on training images, or "
                    "interpolated like the weights")
    sp.add_argument("--bn-images", type=int, default=2048, help="training images for --bn-stats recompute")
    sp.add_argument("--labels", default=None, help="JSON object copied into the record")


def register(add, common) -> None:
    sp = add("imp-prune", cmd_imp_prune,
             "IMP pruning step: remove a fraction of the weights a mask still keeps (all weights without "
             "--mask), smallest magnitude of the checkpoint first, globally across layers.")
    sp.add_argument("--threads", type=int, default=None,
                    help="accepted for older command lines and ignored: pruning runs on numpy, one thread")
    sp.add_argument("--checkpoint", required=True, help="the level's trained network w_L")
    sp.add_argument("--mask", default=None, help="the level's mask m_L (omit for the dense level 0)")
    sp.add_argument("--fraction", type=float, required=True, help="fraction of the remaining weights to prune")
    sp.add_argument("--labels", default=None, help="JSON object stored in the mask's metadata")
    sp.add_argument("--out", required=True, help="mask m_{L+1} to write")

    sp = add("imp-adaptive-prune", cmd_imp_adaptive_prune,
             "Adaptive IMP pruning step (Paul et al. 2022): sweep pruning ratios, keep the largest whose "
             "linear path from w_L to its pruned projection keeps the training loss below the dense loss + "
             "eps (eps: sd of the per-batch training loss over the dense network's last epoch), prune "
             "max(that, --min-fraction).")
    common(sp)
    sp.add_argument("--data", required=True, help="staged data file")
    sp.add_argument("--checkpoint", required=True, help="the level's trained network w_L")
    sp.add_argument("--mask", default=None, help="the level's mask m_L (omit for the dense level 0)")
    sp.add_argument("--dense-checkpoint", required=True, help="the dense trained network w_0")
    sp.add_argument("--dense-metrics", required=True, help="w_0's metrics.json (last-epoch loss mean and sd)")
    sp.add_argument("--ratios", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", help="pruning ratios swept (fractions of the remaining weights)")
    sp.add_argument("--min-fraction", type=float, default=0.2, help="floor of the fraction pruned at each level")
    sp.add_argument("--dense-loss", choices=["evaluated", "last_epoch"], default="evaluated", help="the dense training loss of the threshold: evaluated like the path points, or the mean over w_0's last epoch")
    sp.add_argument("--train-eval-size", type=int, default=None, help="training images the losses are measured on")
    _eval_options(sp)
    sp.add_argument("--record", required=True, help="JSON record of the sweep to write")
    sp.add_argument("--out", required=True, help="mask m_{L+1} to write")

    sp = add("imp-path", cmd_imp_path,
             "Test error and loss along the linear path (1-beta) a + beta b between two networks, and its "
             "error barrier.")
    common(sp)
    sp.add_argument("--data", required=True, help="staged data file")
    sp.add_argument("--a", required=True, help="checkpoint at beta = 0")
    sp.add_argument("--b", required=True, help="checkpoint at beta = 1")
    sp.add_argument("--test-size", type=int, default=None, help="first N test images (default all)")
    _eval_options(sp)
    sp.add_argument("--out", required=True, help="JSON record to write")

    sp = add("imp-slice", cmd_imp_slice,
             "Test error on a grid over the plane through w_L, its projection m_{L+1} * w_L and w_{L+1}.")
    common(sp)
    sp.add_argument("--data", required=True, help="staged data file")
    sp.add_argument("--level-checkpoint", required=True, help="w_L")
    sp.add_argument("--next-checkpoint", required=True, help="w_{L+1}")
    sp.add_argument("--next-mask", required=True, help="m_{L+1}")
    sp.add_argument("--grid", type=int, default=51, help="points per axis")
    sp.add_argument("--margin", type=float, default=0.25, help="space around the points (fraction of extent)")
    sp.add_argument("--test-size", type=int, default=None, help="first N test images (default all)")
    _eval_options(sp, betas=False)
    sp.add_argument("--out", required=True, help="JSON record to write")

    sp = add("imp-figure", cmd_imp_figure,
             "Draw one IMP figure (PNG, PDF and the CSV it plots): imp_paths, imp_heatmap, imp_slices or "
             "imp_adaptive.")
    sp.add_argument("name", choices=list(RECORD_FIGURES), help="figure name")
    sp.add_argument("--out-prefix", required=True, help="writes PREFIX.png, PREFIX.pdf, PREFIX.csv")
    sp.add_argument("--context", default=None,
                    help='JSON object naming the run for the title: {"model":..,"dataset":..,"experiment":..}')
    sp.add_argument("inputs", nargs="+", help="path / slice / adaptive-prune records and level metrics")

    sp = add("imp-table", cmd_imp_table,
             "Retraining rounds each chain (fixed vs adaptive ratio) needs to reach a sparsity, and the test "
             "accuracy there.")
    sp.add_argument("--target-sparsity", type=float, required=True, help="the sparsity whose rounds and accuracy are reported")
    sp.add_argument("--out", required=True, help="CSV to write")
    sp.add_argument("inputs", nargs="+", help="level metrics of both chains")

