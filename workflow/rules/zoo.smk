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
# (rep<r>/pre<t>/rewind.safetensors) come from core.smk. Its figure, training-curve and claims rules:
# outputs.smk, from register_outputs below.

from lotto.config import load_schema as _zoo_schema
from lotto.zoo import FAMILY as ZOO_FAMILY

ZOO = config.get("zoo")
ZOO_FIGURES = ZOO_FAMILY.figure_names()

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
            task = ticket[len("bespoke_"):]
            return f"{zoo_dir(rep, task, ZOO_TM, ZOO_TH, ZOO_N)}/mask.mask"
        return f"{ROOT}/rep{rep}/zoo_transfer/{ticket}/mask.mask"

    def zoo_transfer_metrics(rep, ticket, target):
        # a bespoke ticket retrained on its own task from the init is the last round of its own run
        if ticket == f"bespoke_{target}" and ZOO_TH == "rewind_init":
            return f"{zoo_dir(rep, target, ZOO_TM, ZOO_TH, ZOO_N)}/metrics.json"
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
            out["previous"] = f"{zoo_dense(w.rep, w.ztask)}/trained.safetensors"
        else:
            prev = zoo_dir(w.rep, w.ztask, w.zmethod, w.zhandling, n - 1)
            out["previous"] = f"{prev}/trained.safetensors"
            out["previous_mask"] = f"{prev}/mask.mask"
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
                            out.append(f"{zoo_dir(r, task, m, h, n)}/mask.mask")
        return out

    def zoo_all_round_metrics():
        out = [f"{zoo_dense(r, t)}/metrics.json" for r in ZOO_REPS for t in ZOO_TASKS]
        for r in ZOO_REPS:
            for task in ZOO_TASKS:
                for m, h in zoo_runs(task):
                    out += [f"{zoo_dir(r, task, m, h, n)}/metrics.json" for n in range(1, ZOO_N + 1)]
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
            return [f"{zoo_dir(r, ZOO_MAIN, m, ZOO_EH, ZOO_N)}/trained.safetensors" for r in ZOO_REPS
                    for m in ZOO["methods"]]
        if name == "zoo_training_curves":
            return curve_files(zoo_curve_groups())
        raise ValueError(name)

    def zoo_claim_inputs():
        """What the zoo claims read (lotto/zoo/claims.py): the main task's last-round masks and metrics of every
        method x handling, every task's bespoke ticket mask, and every ticket retrained on every task."""
        masks = zoo_masks([ZOO_MAIN], iterations=[ZOO_N])
        masks += [zoo_ticket_mask(r, f"bespoke_{t}") for r in ZOO_REPS for t in ZOO_TASKS]
        rounds = [f"{zoo_dir(r, ZOO_MAIN, m, h, ZOO_N)}/metrics.json" for r in ZOO_REPS for m, h in zoo_runs(ZOO_MAIN)]
        # every round of each task's bespoke run: the consensus is compared with the run at its own sparsity
        rounds += [f"{zoo_dir(r, t, ZOO_TM, ZOO_TH, n)}/metrics.json" for r in ZOO_REPS for t in ZOO_TASKS
                   for n in range(1, ZOO_N + 1)]
        transfer = [zoo_transfer_metrics(r, k, t) for r in ZOO_REPS for k in ZOO_TICKETS for t in ZOO_TASKS]
        return list(dict.fromkeys(masks + rounds + transfer))

    def zoo_curve_groups():
        groups = []
        if ZOO_USES_T:
            groups.append(("pretraining (0 to t)", [curve_of(zoo_rewind(r, t)) for r in ZOO_REPS for t in ZOO_TASKS]))
        groups.append(("dense", [curve_of(f"{zoo_dense(r, t)}/trained.safetensors") for r in ZOO_REPS
                                 for t in ZOO_TASKS]))
        # by handling, not method: the handling sets where a round starts (step and weights), the method only
        # which weights it keeps
        for h in dict.fromkeys(ZOO["handlings"] + [ZOO_TH]):
            groups.append((f"pruning rounds, {h}", [
                curve_of(f"{zoo_dir(r, task, m, hh, n)}/trained.safetensors") for r in ZOO_REPS for task in ZOO_TASKS
                for m, hh in zoo_runs(task) if hh == h for n in range(1, ZOO_N + 1)
            ]))
        transfer = [zoo_transfer_metrics(r, k, t) for r in ZOO_REPS for k in ZOO_TICKETS for t in ZOO_TASKS]
        groups.append(("tickets retrained on every task", [  # a bespoke ticket on its own task is a round above
            curve_of(p.replace("metrics.json", "trained.safetensors")) for p in transfer if "/zoo_transfer/" in p
        ]))
        return groups

    def zoo_artifacts():
        out = [zoo_data(t) for t in ZOO_TASKS]
        for r in ZOO_REPS:
            out.append(zoo_init(r))
            for task in ZOO_TASKS:
                out.append(f"{zoo_dense(r, task)}/trained.safetensors")
                if ZOO_USES_T:
                    out.append(zoo_rewind(r, task))
                for m, h in zoo_runs(task):
                    for n in range(1, ZOO_N + 1):
                        d = zoo_dir(r, task, m, h, n)
                        out += [f"{d}/mask.mask", f"{d}/start.safetensors", f"{d}/trained.safetensors"]
            out += [zoo_ticket_mask(r, k) for k in ("consensus", "random")]
            for k in ZOO_TICKETS:
                for t in ZOO_TASKS:
                    p = zoo_transfer_metrics(r, k, t)
                    out.append(p.replace("metrics.json", "trained.safetensors"))
        return out

    # the consensus and the random ticket of one replicate: one cluster job (common.smk: light_group)
    ZOO_MASKS_GROUP = light_group("zoo_masks_rep{rep}", 2)


    # --- rules -----------------------------------------------------------------------------------------
    # (trainings: `group: training_group(...)` bundles them N to a GPU, resources.trainings_per_gpu; common.smk)
    rule zoo_stage_data:
        output:
            f"{ROOT}/data/zoo-{{ztask}}.npz",
        log:
            f"{ROOT}/logs/zoo_stage_data-{{ztask}}.log",
        params:
            cfg=lambda w: shlex.quote(json.dumps(zoo_task_data_cfg(w.ztask), sort_keys=True)),
        localrule: True
        conda:
            LOTTO_ENV
        shell:
            "lotto stage-data --config {params.cfg} --out {output} > {log} 2>&1"

    rule zoo_pretrain:
        input:
            data=lambda w: zoo_data(w.ztask),
            init=f"{ROOT}/rep{{rep}}/init.safetensors",
        output:
            ckpt=f"{ROOT}/rep{{rep}}/zoo/{{ztask}}/pre{{pre}}/rewind.safetensors",
            curve=f"{ROOT}/rep{{rep}}/zoo/{{ztask}}/pre{{pre}}/rewind.curve.csv",
        log:
            f"{ROOT}/rep{{rep}}/zoo/{{ztask}}/pre{{pre}}/pretrain.log",
        params:
            cfg=cfg_arg("model", "training"),
        group:
            training_group("zoo_pretrain_rep{rep}")
        threads: RES["train_threads"]
        resources:
            **train_resources(),
        conda:
            LOTTO_ENV
        shell:
            train_shell("{input.init}", "custom:zoo-{wildcards.ztask}", kind="rewind", end="{wildcards.pre}",
                        metrics=False)

    rule zoo_dense:
        input:
            data=lambda w: zoo_data(w.ztask),
            start=lambda w: zoo_rewind(w.rep, w.ztask) if ZOO_USES_T else zoo_init(w.rep),
        output:
            ckpt=f"{ROOT}/rep{{rep}}/zoo/{{ztask}}/dense/trained.safetensors",
            curve=f"{ROOT}/rep{{rep}}/zoo/{{ztask}}/dense/trained.curve.csv",
            metrics=f"{ROOT}/rep{{rep}}/zoo/{{ztask}}/dense/metrics.json",
        log:
            f"{ROOT}/rep{{rep}}/zoo/{{ztask}}/dense/train.log",
        params:
            cfg=cfg_arg("model", "training"),
            labels=lambda w: labels_arg(task=w.ztask, method="dense", handling="dense", iteration=0,
                                        replicate=int(w.rep)),
        group:
            training_group("zoo_dense_rep{rep}")
        threads: RES["train_threads"]
        resources:
            **train_resources(),
        conda:
            LOTTO_ENV
        shell:
            train_shell("{input.start}", "custom:zoo-{wildcards.ztask}")

    rule zoo_round:
        input:
            unpack(zoo_round_inputs),
        output:
            mask=f"{ROOT}/rep{{rep}}/zoo/{{ztask}}/{{zmethod}}/{{zhandling}}/iter{{zn}}/mask.mask",
            start=f"{ROOT}/rep{{rep}}/zoo/{{ztask}}/{{zmethod}}/{{zhandling}}/iter{{zn}}/start.safetensors",
            ckpt=f"{ROOT}/rep{{rep}}/zoo/{{ztask}}/{{zmethod}}/{{zhandling}}/iter{{zn}}/trained.safetensors",
            curve=f"{ROOT}/rep{{rep}}/zoo/{{ztask}}/{{zmethod}}/{{zhandling}}/iter{{zn}}/trained.curve.csv",
            metrics=f"{ROOT}/rep{{rep}}/zoo/{{ztask}}/{{zmethod}}/{{zhandling}}/iter{{zn}}/metrics.json",
        log:
            f"{ROOT}/rep{{rep}}/zoo/{{ztask}}/{{zmethod}}/{{zhandling}}/iter{{zn}}/round.log",
        params:
            cfg=cfg_arg("model", "training"),
            flags=zoo_round_flags,
            rate=ZOO["rate"],
            dim=ZOO["structured_dim"],
            finetune_start=ZOO["finetune_start"],
            resume=lambda w, output: f"{RESUME}/{output.ckpt}.pt",
        group:
            training_group("zoo_round_rep{rep}_iter{zn}")
        threads: RES["train_threads"]
        resources:
            **train_resources(),
        conda:
            LOTTO_ENV
        shell:
            "lotto zoo-iterate --config {params.cfg} --threads {threads} --data {input.data} --init {input.init} "
            "--previous {input.previous}{params.flags} --task {wildcards.ztask} --method {wildcards.zmethod} "
            "--handling {wildcards.zhandling} --iteration {wildcards.zn} --replicate {wildcards.rep} "
            "--rate {params.rate} --dim {params.dim} --finetune-start {params.finetune_start} "
            "--resume-state {params.resume} --out-mask {output.mask} --out-start {output.start} "
            "--out {output.ckpt} --curve {output.curve} --metrics {output.metrics} > {log} 2>&1"

    # the two transfer tickets of a replicate: one job group, bundled into one submission on a cluster (the
    # Slurm profile's group-components; they are not connected in the DAG)
    rule zoo_consensus:
        input:
            lambda w: [zoo_ticket_mask(w.rep, f"bespoke_{t}") for t in ZOO_TASKS],
        output:
            f"{ROOT}/rep{{rep}}/zoo_transfer/consensus/mask.mask",
        log:
            f"{ROOT}/rep{{rep}}/zoo_transfer/consensus/consensus.log",
        params:
            m=ZOO["transfer"]["consensus_min"] or len(ZOO_TASKS),
            labels=lambda w: labels_arg(ticket="consensus", replicate=int(w.rep)),
        group:
            ZOO_MASKS_GROUP
        resources:
            **light_resources(),
        conda:
            LOTTO_ENV
        shell:
            "lotto zoo-consensus --min {params.m} --labels {params.labels} --out {output} {input} > {log} 2>&1"

    rule zoo_random_ticket:
        input:
            lambda w: zoo_ticket_mask(w.rep, f"bespoke_{ZOO_MAIN}"),
        output:
            f"{ROOT}/rep{{rep}}/zoo_transfer/random/mask.mask",
        log:
            f"{ROOT}/rep{{rep}}/zoo_transfer/random/random_ticket.log",
        group:
            ZOO_MASKS_GROUP
        resources:
            **light_resources(),
        conda:
            LOTTO_ENV
        shell:
            "lotto random-ticket --mask {input} --replicate {wildcards.rep} --seed-parts zoo transfer "
            "--out {output} > {log} 2>&1"

    rule zoo_retrain:
        input:
            data=lambda w: zoo_data(w.ztarget),
            init=f"{ROOT}/rep{{rep}}/init.safetensors",
            mask=lambda w: zoo_ticket_mask(w.rep, w.zticket),
        output:
            ckpt=f"{ROOT}/rep{{rep}}/zoo_transfer/{{zticket}}/on_{{ztarget}}/trained.safetensors",
            curve=f"{ROOT}/rep{{rep}}/zoo_transfer/{{zticket}}/on_{{ztarget}}/trained.curve.csv",
            metrics=f"{ROOT}/rep{{rep}}/zoo_transfer/{{zticket}}/on_{{ztarget}}/metrics.json",
        log:
            f"{ROOT}/rep{{rep}}/zoo_transfer/{{zticket}}/on_{{ztarget}}/train.log",
        params:
            cfg=cfg_arg("model", "training"),
            labels=lambda w: labels_arg(ticket=w.zticket, target=w.ztarget, replicate=int(w.rep)),
        group:
            training_group("zoo_retrain_rep{rep}")
        threads: RES["train_threads"]
        resources:
            **train_resources(),
        conda:
            LOTTO_ENV
        shell:
            train_shell("{input.init}", "custom:zoo-{wildcards.ztarget}", kind="retrained", mask="--mask {input.mask}")

    rule zoo_ensemble:
        input:
            data=DATA,
            ckpts=zoo_figure_inputs("zoo_ensemble"),
        output:
            report_figure("zoo", "zoo_ensemble", figure_files("zoo_ensemble")),
        log:
            f"{ROOT}/logs/zoo_ensemble.log",
        params:
            cfg=cfg_arg("model", "training"),
            prefix=lambda w, output: output[0][: -len(".png")],
            context=FIG_CONTEXT,
        localrule: True
        conda:
            LOTTO_ENV
        shell:
            "lotto zoo-ensemble --config {params.cfg} --threads 1 --data {input.data} --out-prefix {params.prefix} "
            "--context {params.context} {input.ckpts} > {log} 2>&1"

    TARGETS += [f for name in ZOO_FIGURES for f in figure_files(name)] + zoo_artifacts()

    register_outputs(
        "zoo",
        figures=ZOO_FIGURES,
        figure_inputs=zoo_figure_inputs,
        figure_command=lambda name: f"zoo-figure {name}",
        curves=("zoo_training_curves", "Training curves of the pruning-method zoo", zoo_curve_groups),
        claim_inputs=zoo_claim_inputs,
        own_rules=["zoo_ensemble"],
    )
