"""Subcommands of the pruning-method zoo family (Paganini & Forde 2020), registered into ``lotto``'s parser.

``zoo-iterate`` is one round of iterative pruning: prune the previous round's trained network with a method,
write the mask, the start checkpoint its handling gives and then train it with ``lotto train`` (run in this
process through the same parser, so it is the very same code path), and add effective sparsity and per-layer
weight statistics to the metrics. ``zoo-consensus`` builds the pret-a-porter consensus ticket,
``zoo-ensemble`` evaluates networks together, ``zoo-figure`` draws the family's figures from records/masks.
"""

from __future__ import annotations

from lotto import config as configmod
from lotto.runner import log as _log, parse_labels as _labels, setup_torch as _setup_torch
from lotto.seeds import derive_seed
from lotto.zoo import RECORD_FIGURES


def _zoo_noise(task: str) -> str:
    # one SGD-noise stream per task, shared by every method, handling and round: paired comparisons
    return f"custom:zoo-{task}"


def cmd_zoo_iterate(args) -> None:
    _setup_torch(args.threads)
    from lotto import io, pruning, runner
    from lotto.data import DeviceData
    from lotto.zoo import effective, iterative
    from lotto.masks import Mask, check_fits

    cfg = configmod.load(args.config, partial=True)
    init_state, init_meta = io.load_checkpoint(args.init)
    prev_state, prev_meta = io.load_checkpoint(args.previous)
    prunable = init_meta["prunable"]
    m = init_meta["model"]
    data = DeviceData.load(args.data, device="cpu", augment=False)
    shape = (data.in_channels, data.image_size, data.num_classes)
    if shape != (m["in_channels"], m["image_size"], m["num_classes"]):
        raise ValueError(
            f"task {args.task!r} ({args.data}) has {shape[0]}x{shape[1]}x{shape[1]} images and {shape[2]} "
            f"classes, but the shared initialisation {args.init} was built for {m['in_channels']}x"
            f"{m['image_size']}x{m['image_size']} and {m['num_classes']} classes: zoo tasks are converted like "
            "the main task, so set data.image_size and data.channels to give every task one shape"
        )
    current = Mask.load(args.previous_mask) if args.previous_mask else None
    seed = derive_seed(args.replicate, "zoo-random", args.task, args.method, args.iteration)
    weights = {n: prev_state[n] for n in prunable}
    if current is not None:
        check_fits(current, weights, f"checkpoint {args.previous}")
    labels = {"task": args.task, "method": args.method, "handling": args.handling, "iteration": args.iteration,
              "replicate": args.replicate}
    mask = pruning.prune(args.method, weights, args.rate, current, dim=args.dim, seed=seed).with_meta(
        **labels, previous=str(args.previous), previous_mask=args.previous_mask,
    )
    rewind = None
    if args.rewind:
        r_state, r_meta = io.load_checkpoint(args.rewind)
        rewind = (r_state, int(r_meta["step"]))
    start_state, start = iterative.start_point(
        args.handling, prunable, (init_state, 0), rewind, (prev_state, int(prev_meta["step"])), args.finetune_start
    )
    from lotto.train import Schedule

    total = Schedule.from_config(cfg["training"], data.num_train).total_steps
    if start >= total:
        raise ValueError(f"round {args.iteration} ({args.handling}) would start at step {start}, but the "
                         f"schedule ends at step {total}: lower zoo.finetune_start / zoo.rewind_step")
    model = runner.model_from_checkpoint(init_state, init_meta, cfg["model"], args.init)
    eff = effective.effective_mask(model, mask, m["in_channels"], m["image_size"])
    mask.save(args.out_mask)
    io.save_checkpoint(args.out_start, start_state, {
        **{k: init_meta[k] for k in ("prunable", "model", "seeds") if k in init_meta},
        "kind": "start", "step": start, "handling": args.handling, "labels": labels,
        "config": {"model": cfg["model"]},
    })
    _log(f"{args.method} round {args.iteration} ({args.handling}): kept {mask.kept()} of {mask.total} "
         f"(effective {eff.kept()}), training from step {start}")

    runner.run_training(
        cfg, args.data, args.out_start, args.out, replicate=args.replicate, noise=_zoo_noise(args.task),
        mask_path=args.out_mask, kind="trained", metrics_path=args.metrics, labels=labels,
        resume_state=args.resume_state, curve_path=args.curve,
    )

    trained, _ = io.load_checkpoint(args.out)
    record = io.read_json(args.metrics)
    eff_counts = eff.per_layer_counts()
    layers = iterative.layer_stats(init_state, trained, mask)
    for row in layers:
        row["effective_kept"] = eff_counts[row["layer"]][0]
    record.update({
        "start_step": start,
        "remaining": mask.kept() / mask.total,
        "effective_kept": eff.kept(),
        "effective_remaining": eff.kept() / eff.total,
        "effective_sparsity": eff.sparsity(),
        "mask": str(args.out_mask),
        "layers": layers,
    })
    io.write_json(args.metrics, record)


def cmd_zoo_consensus(args) -> None:
    from lotto.masks import Mask
    from lotto.zoo import similarity

    loaded = [Mask.load(p) for p in args.masks]
    m = args.min if args.min is not None else len(loaded)
    out = similarity.consensus(loaded, m).with_meta(parents=[str(p) for p in args.masks], **_labels(args.labels))
    out.save(args.out)
    _log(f"consensus (kept in >= {m} of {len(loaded)}): sparsity {out.sparsity():.4f} -> {args.out}")


def cmd_zoo_ensemble(args) -> None:
    torch = _setup_torch(args.threads)
    from lotto import io, runner, train
    from lotto.data import DeviceData
    from lotto.zoo import plots as zoo_plots

    cfg = configmod.load(args.config, partial=True)
    device = train.pick_device(cfg["training"]["device"])
    data = DeviceData.load(args.data, device=device, augment=False)
    members = []
    for path in args.checkpoints:
        state, meta = io.load_checkpoint(path)
        model = runner.model_from_checkpoint(state, meta, cfg["model"], path).to(device).eval()
        probs, ys = [], []
        with torch.inference_mode():
            for x, y in data.test_batches(cfg["training"]["eval_batch_size"]):
                probs.append(torch.softmax(model(x).double(), dim=1).cpu())
                ys.append(y.cpu())
        members.append((meta.get("labels", {}), torch.cat(probs), torch.cat(ys)))
    table = ensemble_table(members)
    zoo_plots.draw("zoo_ensemble", table, args.out_prefix, context=_labels(args.context, "--context"))
    _log(f"zoo_ensemble: {len(table)} rows -> {args.out_prefix}.png/.pdf/.csv")


def ensemble_table(members):
    """Rows per replicate: each pair (a, b) of methods with their prediction agreement and the accuracy of
    their averaged softmax (a == b: the network alone), plus one row a = b = 'all' for the whole ensemble."""
    import torch

    rows = []
    by_rep: dict = {}
    for labels, probs, y in members:
        by_rep.setdefault(labels.get("replicate"), []).append((labels, probs, y))
    for rep, items in by_rep.items():
        y = items[0][2]
        preds = [p.argmax(1) for _, p, _ in items]
        for i, (li, pi, _) in enumerate(items):
            for j, (lj, pj, _) in enumerate(items):
                rows.append({
                    "replicate": rep, "task": li.get("task"), "handling": li.get("handling"),
                    "iteration": li.get("iteration"), "a": li.get("method"), "b": lj.get("method"),
                    "agreement": float((preds[i] == preds[j]).double().mean()),
                    "accuracy": float((((pi + pj) / 2).argmax(1) == y).double().mean()),
                })
        mean = torch.stack([p for _, p, _ in items]).mean(0)
        rows.append({"replicate": rep, "task": items[0][0].get("task"), "handling": items[0][0].get("handling"),
                     "iteration": items[0][0].get("iteration"), "a": "all", "b": "all", "agreement": float("nan"),
                     "accuracy": float((mean.argmax(1) == y).double().mean())})
    return _frame(rows)


def _frame(rows):
    import pandas as pd

    return pd.DataFrame(rows)


def cmd_zoo_figure(args) -> None:
    from lotto.zoo import analysis as zoo_analysis, plots as zoo_plots

    table = zoo_analysis.figure_table(args.name, args.inputs)
    zoo_plots.draw(args.name, table, args.out_prefix, context=_labels(args.context, "--context"))
    _log(f"{args.name}: {len(table)} rows -> {args.out_prefix}.png/.pdf/.csv")


def _context_option(sp) -> None:
    sp.add_argument("--context", default=None,
                    help='JSON object naming the run for the title: {"model":..,"dataset":..,"experiment":..}')


def register(add, common) -> None:
    sp = add("zoo-iterate", cmd_zoo_iterate,
             "One round of iterative pruning (Paganini & Forde): prune the previous round's trained network "
             "with --method, start the survivors as --handling says, train them (lotto train), and record "
             "test accuracy, effective sparsity and per-layer weight statistics.")
    common(sp)
    sp.add_argument("--data", required=True, help="staged data file of the task")
    sp.add_argument("--init", required=True, help="the shared initialisation (theta_0)")
    sp.add_argument("--previous", required=True, help="previous round's trained checkpoint (round 1: the dense one)")
    sp.add_argument("--previous-mask", default=None, help="previous round's mask (none in round 1)")
    sp.add_argument("--rewind", default=None, help="rewind-point checkpoint (handling rewind_t)")
    sp.add_argument("--task", required=True, help="task name (selects the SGD-noise stream)")
    # the names come from the registries themselves (both torch-free at import), so the help cannot go stale
    from lotto.pruning import METHODS
    from lotto.zoo.iterative import HANDLINGS

    sp.add_argument("--method", required=True,
                    help=f"pruning method: {', '.join(METHODS)} (the registry in lotto/pruning.py)")
    sp.add_argument("--handling", required=True,
                    help=f"what the survivors start from: {', '.join(HANDLINGS)} (lotto/zoo/iterative.py)")
    sp.add_argument("--iteration", type=int, required=True, help="round number n >= 1")
    sp.add_argument("--replicate", type=int, required=True, help="replicate seed")
    sp.add_argument("--rate", type=float, required=True, help="fraction of the remaining weights to prune (zoo.rate)")
    sp.add_argument("--dim", type=int, default=0, help="structured pruning dimension (zoo.structured_dim)")
    sp.add_argument("--finetune-start", type=int, default=0, help="schedule step finetuning restarts from")
    sp.add_argument("--resume-state", default=None, help="file for resumable training state (see lotto train)")
    sp.add_argument("--out-mask", required=True, help="the round's mask to write")
    sp.add_argument("--out-start", required=True, help="checkpoint the round's training starts from")
    sp.add_argument("--out", required=True, help="trained checkpoint")
    sp.add_argument("--curve", default=None, help="the round's training curve (CSV), as `lotto train --curve`")
    sp.add_argument("--metrics", required=True, help="metrics JSON to write (accuracy, effective sparsity, per-layer statistics)")

    sp = add("zoo-consensus", cmd_zoo_consensus,
             "Pret-a-porter consensus ticket: keep the weights kept by at least --min of the masks (default all).")
    sp.add_argument("--min", type=int, default=None, help="keep weights kept by at least this many masks (default: all)")
    sp.add_argument("--labels", default=None, help="JSON object stored in the mask's metadata")
    sp.add_argument("--out", required=True, help="consensus mask to write")
    sp.add_argument("masks", nargs="+", help="the tasks' bespoke ticket masks")

    sp = add("zoo-ensemble", cmd_zoo_ensemble,
             "Test accuracy of averaged predictions and prediction agreement of trained networks "
             "(figure zoo_ensemble: PNG, PDF and CSV).")
    common(sp)
    sp.add_argument("--data", required=True, help="staged data file of the main task")
    sp.add_argument("--out-prefix", required=True, help="writes PREFIX.png, PREFIX.pdf, PREFIX.csv")
    _context_option(sp)
    sp.add_argument("checkpoints", nargs="+", help="trained networks to combine")

    sp = add("zoo-figure", cmd_zoo_figure, "Draw one figure of the zoo family (PNG, PDF and the CSV it plots).")
    sp.add_argument("name", choices=list(RECORD_FIGURES), help="figure name")
    sp.add_argument("--out-prefix", required=True, help="writes PREFIX.png, PREFIX.pdf, PREFIX.csv")
    _context_option(sp)
    sp.add_argument("inputs", nargs="+", help="metrics JSON records or mask files")
