# Pruning-method zoo (Paganini & Forde 2020): iterative pruning with every method x handling, mask
# similarity, effective sparsity, ensembles, and pret-a-porter tickets moved between tasks.
#
# results/<exp>/rep<r>/zoo/<task>/dense/                                 the dense network (round 0)
# results/<exp>/rep<r>/zoo/<task>/<method>/<handling>/iter<n>/          mask.mask, start.safetensors,
#                                                                        trained.safetensors, metrics.json
# results/<exp>/rep<r>/zoo_transfer/<ticket>/[mask.mask, on_<task>/]    tickets retrained on every task
# results/<exp>/figures/zoo_*.{png,pdf,csv}
# Paths sit under rep<r>/zoo/ and rep<r>/zoo_transfer/, which the composability patterns (rep<r>/pre<t>/...)
# cannot match. The shared init (rep<r>/init.safetensors) and, on the main task, the rewind point
# (rep<r>/pre<t>/rewind.safetensors) come from train.smk.
from lotto.config import load_schema as _zoo_schema

ZOO = config.get("zoo")
ZOO_FIGURES = [
    "zoo_jaccard_methods", "zoo_jaccard_layers", "zoo_jaccard_handlings", "zoo_jaccard_tasks",
    "zoo_effective", "zoo_accuracy", "zoo_stability", "zoo_transfer", "zoo_ensemble",
]

if ZOO:
    _zs = _zoo_schema()["properties"]["zoo"]["properties"]
    ZOO_ALL_METHODS = _zs["methods"]["items"]["enum"]
    ZOO_ALL_HANDLINGS = _zs["handlings"]["items"]["enum"]
    ZOO_MAIN = ZOO["main_task"] or config["data"]["dataset"]
    ZOO_EXTRA = {t["name"]: t for t in ZOO["tasks"]}
    ZOO_TASKS = [ZOO_MAIN] + list(ZOO_EXTRA)
    ZOO_REPS = ZOO["replicates"]
    ZOO_N = ZOO["iterations"]
    ZOO_TM, ZOO_TH = ZOO["transfer"]["method"], ZOO["transfer"]["handling"]
    ZOO_EH = ZOO["ensemble_handling"] or ZOO["handlings"][0]
    ZOO_USES_T = "rewind_t" in ZOO["handlings"] or ZOO_TH == "rewind_t"
    ZOO_T = ZOO["rewind_step"]
    ZOO_TICKETS = [f"bespoke_{t}" for t in ZOO_TASKS] + ["consensus", "random"]
    # a comparison needs two of what it compares
    _zoo_skip = set()
    if len(ZOO["methods"]) < 2:
        _zoo_skip |= {"zoo_jaccard_methods", "zoo_jaccard_layers"}
    if len(ZOO["handlings"]) < 2:
        _zoo_skip.add("zoo_jaccard_handlings")
    if len(ZOO_TASKS) < 2:
        _zoo_skip.add("zoo_jaccard_tasks")
    ZOO_FIGURES = [f for f in ZOO_FIGURES if f not in _zoo_skip]

    wildcard_constraints:
        ztask="|".join(ZOO_TASKS),
        zmethod="|".join(ZOO_ALL_METHODS),
        zhandling="|".join(ZOO_ALL_HANDLINGS),
        zn=r"[1-9]\d*",
        zticket="|".join(ZOO_TICKETS),
        ztarget="|".join(ZOO_TASKS),

    def zoo_runs(task):
        """(method, handling) pairs run on a task: the whole grid on grid tasks, else the transfer run only."""
        grid = task == ZOO_MAIN or ZOO["grid"] == "all"
        runs = [(m, h) for m in ZOO["methods"] for h in ZOO["handlings"]] if grid else []
        return runs + ([] if (ZOO_TM, ZOO_TH) in runs else [(ZOO_TM, ZOO_TH)])

    def zoo_data(task):
        return DATA if task == ZOO_MAIN else f"{ROOT}/data/zoo-{task}.npz"

    def zoo_rewind(rep, task):
        if task == ZOO_MAIN:
            return rewind_path(rep, ZOO_T)
        return f"{ROOT}/rep{rep}/zoo/{task}/pre{ZOO_T}/rewind.safetensors"

    def zoo_init(rep):
        return f"{ROOT}/rep{rep}/init.safetensors"

    def zoo_dense(rep, task):
        return f"{ROOT}/rep{rep}/zoo/{task}/dense"

    def zoo_dir(rep, task, method, handling, n):
        return f"{ROOT}/rep{rep}/zoo/{task}/{method}/{handling}/iter{n}"

    def zoo_ticket_mask(rep, ticket):
        if ticket.startswith("bespoke_"):
            return zoo_dir(rep, ticket[len("bespoke_"):], ZOO_TM, ZOO_TH, ZOO_N) + "/mask.mask"
        return f"{ROOT}/rep{rep}/zoo_transfer/{ticket}/mask.mask"

    def zoo_transfer_metrics(rep, ticket, target):
        # a bespoke ticket retrained on its own task from the init is the last round of its own run
        if ticket == f"bespoke_{target}" and ZOO_TH == "rewind_init":
            return zoo_dir(rep, target, ZOO_TM, ZOO_TH, ZOO_N) + "/metrics.json"
        return f"{ROOT}/rep{rep}/zoo_transfer/{ticket}/on_{target}/metrics.json"

    def zoo_task_data_cfg(task):
        spec = {"source": "torchvision", "path": None, "download_root": "data/torchvision", "train_size": None,
                "test_size": None, "subset_seed": 0, **ZOO_EXTRA[task]}
        spec.pop("name")
        # every task is converted like the main one, so one architecture and one init serve all of them
        for key in ("image_size", "channels", "validation_fraction"):
            spec[key] = config["data"][key]
        return {"data": spec}

    def zoo_round_inputs(w):
        n = int(w.zn)
        out = dict(data=zoo_data(w.ztask), init=zoo_init(w.rep))
        if n == 1:
            out["previous"] = zoo_dense(w.rep, w.ztask) + "/trained.safetensors"
        else:
            prev = zoo_dir(w.rep, w.ztask, w.zmethod, w.zhandling, n - 1)
            out["previous"] = prev + "/trained.safetensors"
            out["previous_mask"] = prev + "/mask.mask"
        if w.zhandling == "rewind_t":
            out["rewind"] = zoo_rewind(w.rep, w.ztask)
        return out

    def zoo_round_flags(w, input):
        flags = ""
        if "previous_mask" in input.keys():
            flags += f" --previous-mask {input.previous_mask}"
        if "rewind" in input.keys():
            flags += f" --rewind {input.rewind}"
        return flags

    # --- what each figure reads --------------------------------------------------------------------
    def zoo_masks(tasks, handlings=None, iterations=None, runs_filter=None):
        out = []
        for r in ZOO_REPS:
            for task in tasks:
                for m, h in zoo_runs(task):
                    if (handlings is None or h in handlings) and (runs_filter is None or runs_filter(m, h)):
                        for n in iterations or range(1, ZOO_N + 1):
                            out.append(zoo_dir(r, task, m, h, n) + "/mask.mask")
        return out

    def zoo_all_round_metrics():
        out = [zoo_dense(r, t) + "/metrics.json" for r in ZOO_REPS for t in ZOO_TASKS]
        for r in ZOO_REPS:
            for task in ZOO_TASKS:
                for m, h in zoo_runs(task):
                    out += [zoo_dir(r, task, m, h, n) + "/metrics.json" for n in range(1, ZOO_N + 1)]
        return out

    def zoo_figure_inputs(name):
        main = [ZOO_MAIN]
        if name in ("zoo_jaccard_methods", "zoo_jaccard_layers"):
            return zoo_masks(main, iterations=[ZOO_N], runs_filter=lambda m, h: m in ZOO["methods"])
        if name == "zoo_jaccard_handlings":
            return zoo_masks(main, runs_filter=lambda m, h: h in ZOO["handlings"] and m in ZOO["methods"])
        if name == "zoo_jaccard_tasks":
            return zoo_masks(ZOO_TASKS, runs_filter=lambda m, h: (m, h) == (ZOO_TM, ZOO_TH))
        if name in ("zoo_effective", "zoo_accuracy", "zoo_stability"):
            return zoo_all_round_metrics()
        if name == "zoo_transfer":
            return [zoo_transfer_metrics(r, k, t) for r in ZOO_REPS for k in ZOO_TICKETS for t in ZOO_TASKS]
        if name == "zoo_ensemble":
            return [zoo_dir(r, ZOO_MAIN, m, ZOO_EH, ZOO_N) + "/trained.safetensors" for r in ZOO_REPS
                    for m in ZOO["methods"]]
        raise ValueError(name)

    def zoo_figure_files(name):
        return [f"{ROOT}/figures/{name}{ext}" for ext in (".png", ".pdf", ".csv")]

    # --- rules -----------------------------------------------------------------------------------------
    rule zoo_stage_data:
        output:
            ROOT + "/data/zoo-{ztask}.npz",
        log:
            ROOT + "/logs/zoo_stage_data-{ztask}.log",
        params:
            cfg=lambda w: shlex.quote(json.dumps(zoo_task_data_cfg(w.ztask), sort_keys=True)),
        localrule: True
        shell:
            "lotto stage-data --config {params.cfg} --out {output} > {log} 2>&1"

    rule zoo_pretrain:
        input:
            data=lambda w: zoo_data(w.ztask),
            init=ROOT + "/rep{rep}/init.safetensors",
        output:
            ROOT + "/rep{rep}/zoo/{ztask}/pre{pre}/rewind.safetensors",
        log:
            ROOT + "/rep{rep}/zoo/{ztask}/pre{pre}/pretrain.log",
        params:
            cfg=cfg_arg("model", "training"),
            resume=lambda w, output: f"{RESUME}/{output[0]}.pt",
        threads: RES["train_threads"]
        resources:
            **train_resources(),
        shell:
            "lotto train --config {params.cfg} --threads {threads} --data {input.data} --from {input.init} "
            "--end {wildcards.pre} --replicate {wildcards.rep} --noise custom:zoo-{wildcards.ztask} --kind rewind "
            "--resume-state {params.resume} --out {output} > {log} 2>&1"

    rule zoo_dense:
        input:
            data=lambda w: zoo_data(w.ztask),
            start=lambda w: zoo_rewind(w.rep, w.ztask) if ZOO_USES_T else zoo_init(w.rep),
        output:
            ckpt=ROOT + "/rep{rep}/zoo/{ztask}/dense/trained.safetensors",
            metrics=ROOT + "/rep{rep}/zoo/{ztask}/dense/metrics.json",
        log:
            ROOT + "/rep{rep}/zoo/{ztask}/dense/train.log",
        params:
            cfg=cfg_arg("model", "training"),
            labels=lambda w: labels_arg(task=w.ztask, method="dense", handling="dense", iteration=0,
                                        replicate=int(w.rep)),
            resume=lambda w, output: f"{RESUME}/{output.ckpt}.pt",
        threads: RES["train_threads"]
        resources:
            **train_resources(),
        shell:
            "lotto train --config {params.cfg} --threads {threads} --data {input.data} --from {input.start} "
            "--end end --replicate {wildcards.rep} --noise custom:zoo-{wildcards.ztask} --kind trained "
            "--metrics {output.metrics} --labels {params.labels} --resume-state {params.resume} "
            "--out {output.ckpt} > {log} 2>&1"

    rule zoo_round:
        input:
            unpack(zoo_round_inputs),
        output:
            mask=ROOT + "/rep{rep}/zoo/{ztask}/{zmethod}/{zhandling}/iter{zn}/mask.mask",
            start=ROOT + "/rep{rep}/zoo/{ztask}/{zmethod}/{zhandling}/iter{zn}/start.safetensors",
            ckpt=ROOT + "/rep{rep}/zoo/{ztask}/{zmethod}/{zhandling}/iter{zn}/trained.safetensors",
            metrics=ROOT + "/rep{rep}/zoo/{ztask}/{zmethod}/{zhandling}/iter{zn}/metrics.json",
        log:
            ROOT + "/rep{rep}/zoo/{ztask}/{zmethod}/{zhandling}/iter{zn}/round.log",
        params:
            cfg=cfg_arg("model", "training"),
            flags=zoo_round_flags,
            rate=ZOO["rate"],
            dim=ZOO["structured_dim"],
            finetune_start=ZOO["finetune_start"],
            resume=lambda w, output: f"{RESUME}/{output.ckpt}.pt",
        threads: RES["train_threads"]
        resources:
            **train_resources(),
        shell:
            "lotto zoo-iterate --config {params.cfg} --threads {threads} --data {input.data} --init {input.init} "
            "--previous {input.previous}{params.flags} --task {wildcards.ztask} --method {wildcards.zmethod} "
            "--handling {wildcards.zhandling} --iteration {wildcards.zn} --replicate {wildcards.rep} "
            "--rate {params.rate} --dim {params.dim} --finetune-start {params.finetune_start} "
            "--resume-state {params.resume} --out-mask {output.mask} --out-start {output.start} "
            "--out {output.ckpt} --metrics {output.metrics} > {log} 2>&1"

    rule zoo_consensus:
        input:
            lambda w: [zoo_ticket_mask(w.rep, f"bespoke_{t}") for t in ZOO_TASKS],
        output:
            ROOT + "/rep{rep}/zoo_transfer/consensus/mask.mask",
        log:
            ROOT + "/rep{rep}/zoo_transfer/consensus/consensus.log",
        params:
            m=ZOO["transfer"]["consensus_min"] or len(ZOO_TASKS),
            labels=lambda w: labels_arg(ticket="consensus", replicate=int(w.rep)),
        resources:
            **light_resources(),
        shell:
            "lotto zoo-consensus --min {params.m} --labels {params.labels} --out {output} {input} > {log} 2>&1"

    rule zoo_random_ticket:
        input:
            lambda w: zoo_ticket_mask(w.rep, f"bespoke_{ZOO_MAIN}"),
        output:
            ROOT + "/rep{rep}/zoo_transfer/random/mask.mask",
        log:
            ROOT + "/rep{rep}/zoo_transfer/random/random_ticket.log",
        resources:
            **light_resources(),
        shell:
            "lotto random-ticket --mask {input} --replicate {wildcards.rep} --seed-parts zoo transfer "
            "--out {output} > {log} 2>&1"

    rule zoo_retrain:
        input:
            data=lambda w: zoo_data(w.ztarget),
            init=ROOT + "/rep{rep}/init.safetensors",
            mask=lambda w: zoo_ticket_mask(w.rep, w.zticket),
        output:
            ckpt=ROOT + "/rep{rep}/zoo_transfer/{zticket}/on_{ztarget}/trained.safetensors",
            metrics=ROOT + "/rep{rep}/zoo_transfer/{zticket}/on_{ztarget}/metrics.json",
        log:
            ROOT + "/rep{rep}/zoo_transfer/{zticket}/on_{ztarget}/train.log",
        params:
            cfg=cfg_arg("model", "training"),
            labels=lambda w: labels_arg(ticket=w.zticket, target=w.ztarget, replicate=int(w.rep)),
            resume=lambda w, output: f"{RESUME}/{output.ckpt}.pt",
        threads: RES["train_threads"]
        resources:
            **train_resources(),
        shell:
            "lotto train --config {params.cfg} --threads {threads} --data {input.data} --from {input.init} "
            "--end end --replicate {wildcards.rep} --noise custom:zoo-{wildcards.ztarget} --mask {input.mask} "
            "--kind retrained --metrics {output.metrics} --labels {params.labels} "
            "--resume-state {params.resume} --out {output.ckpt} > {log} 2>&1"

    for _zfig in [f for f in ZOO_FIGURES if f != "zoo_ensemble"]:

        rule:
            name:
                _zfig
            input:
                zoo_figure_inputs(_zfig),
            output:
                zoo_figure_files(_zfig),
            log:
                f"{ROOT}/logs/{_zfig}.log",
            params:
                name=_zfig,
                prefix=f"{ROOT}/figures/{_zfig}",
            localrule: True
            shell:
                "lotto zoo-figure {params.name} --out-prefix {params.prefix} {input} > {log} 2>&1"

    rule zoo_ensemble:
        input:
            data=DATA,
            ckpts=zoo_figure_inputs("zoo_ensemble"),
        output:
            zoo_figure_files("zoo_ensemble"),
        log:
            f"{ROOT}/logs/zoo_ensemble.log",
        params:
            cfg=cfg_arg("model", "training"),
            prefix=f"{ROOT}/figures/zoo_ensemble",
        localrule: True
        shell:
            "lotto zoo-ensemble --config {params.cfg} --threads 1 --data {input.data} --out-prefix {params.prefix} "
            "{input.ckpts} > {log} 2>&1"

    rule zoo_figures:
        input:
            [f for name in ZOO_FIGURES for f in zoo_figure_files(name)],

    def zoo_artifacts():
        out = [zoo_data(t) for t in ZOO_TASKS]
        for r in ZOO_REPS:
            out.append(zoo_init(r))
            for task in ZOO_TASKS:
                out.append(zoo_dense(r, task) + "/trained.safetensors")
                if ZOO_USES_T:
                    out.append(zoo_rewind(r, task))
                for m, h in zoo_runs(task):
                    for n in range(1, ZOO_N + 1):
                        d = zoo_dir(r, task, m, h, n)
                        out += [d + "/mask.mask", d + "/start.safetensors", d + "/trained.safetensors"]
            out += [zoo_ticket_mask(r, k) for k in ("consensus", "random")]
            for k in ZOO_TICKETS:
                for t in ZOO_TASKS:
                    p = zoo_transfer_metrics(r, k, t)
                    out.append(p.replace("metrics.json", "trained.safetensors"))
        return out

    TARGETS += [f for name in ZOO_FIGURES for f in zoo_figure_files(name)] + zoo_artifacts()
