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

if ZOO:

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
            training_group("zoo_pretrain")
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
            training_group("zoo_dense")
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
            training_group("zoo_round")
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
            "zoo_masks_rep{rep}"
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
            "zoo_masks_rep{rep}"
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
            training_group("zoo_retrain")
        threads: RES["train_threads"]
        resources:
            **train_resources(),
        conda:
            LOTTO_ENV
        shell:
            train_shell("{input.init}", "custom:zoo-{wildcards.ztarget}", kind="retrained", mask="--mask {input.mask}")

    # (a shell: expression is evaluated again when the job runs, with the loop variable at its last value: the
    # figures whose command differs are rules of their own)
    for _zfig in [f for f in ZOO_FIGURES if f not in ("zoo_ensemble", "zoo_training_curves")]:

        rule:
            name:
                _zfig
            input:
                zoo_figure_inputs(_zfig),
            output:
                report_figure("zoo", _zfig, zoo_figure_files(_zfig)),
            log:
                f"{ROOT}/logs/{_zfig}.log",
            params:
                prefix=lambda w, output: output[0][: -len(".png")],
                context=FIG_CONTEXT,
                **zoo_figure_params(_zfig),
            localrule: True
            conda:
                LOTTO_ENV
            shell:
                "lotto zoo-figure {params.name} --context {params.context} --out-prefix {params.prefix} "
                "{input} > {log} 2>&1"

    if "zoo_training_curves" in ZOO_FIGURES:

        rule zoo_training_curves:
            input:
                zoo_figure_inputs("zoo_training_curves"),
            output:
                report_figure("zoo", "zoo_training_curves", zoo_figure_files("zoo_training_curves")),
            log:
                f"{ROOT}/logs/zoo_training_curves.log",
            params:
                prefix=lambda w, output: output[0][: -len(".png")],
                context=FIG_CONTEXT,
                **zoo_figure_params("zoo_training_curves"),
            localrule: True
            conda:
                LOTTO_ENV
            shell:
                TRAINING_CURVES_SHELL

    rule zoo_ensemble:
        input:
            data=DATA,
            ckpts=zoo_figure_inputs("zoo_ensemble"),
        output:
            report_figure("zoo", "zoo_ensemble", zoo_figure_files("zoo_ensemble")),
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

    rule zoo_figures:
        input:
            [f for name in ZOO_FIGURES for f in zoo_figure_files(name)],

    TARGETS += [f for name in ZOO_FIGURES for f in zoo_figure_files(name)] + zoo_artifacts()

    rule claims_zoo:
        input:
            zoo_claim_inputs(),
        output:
            claims_part("zoo"),
        log:
            f"{ROOT}/logs/claims-zoo.log",
        params:
            cfg=cfg_arg("claims", "zoo"),
        localrule: True
        conda:
            LOTTO_ENV
        shell:
            "lotto claims --family zoo --config {params.cfg} --out {output} {input} > {log} 2>&1"
