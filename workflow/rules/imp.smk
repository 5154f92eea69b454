# IMP with weight rewinding, linear mode connectivity between its levels, 2-D slices and the adaptive
# pruning ratio (Paul, Chen, Larsen, Frankle, Ganguli & Dziugaite 2022).
#
# Reuses `init` and `pretrain`: the rewind point tau of replicate r is rep<r>/pre<tau>/rewind.safetensors.
# Under rep<r>/pre<tau>/imp/:
#   fixed/level<L>/{mask.mask, trained.safetensors, metrics.json, train.log}   (level 0: dense, no mask)
#   adaptive/level<L>/{mask.mask, prune.json, trained.safetensors, ...}       (L >= 1; level 0 is fixed/level0)
#   fixed/paths/level<a>-level<b>.json      error/loss along (1-beta) w_a + beta w_b
#   fixed/slices/level<L>.json              error over the plane through w_L, m_{L+1} w_L, w_{L+1}
# Every level depends only on the levels below it, and each rule's params hold only the keys it uses,
# so raising imp.levels (or imp.adaptive.levels) adds jobs without rerunning existing ones.

if IMP:

    # --- rules ------------------------------------------------------------------------------------
    # On a cluster, each pruning step of the fixed chain runs in the job that trains the level under the
    # new mask (a job group of the two): the chain alternates training and pruning, so its light steps cannot
    # be bundled with each other, and this way they cost no submission and no queue wait of their own. The
    # mask goes first, not after the level it prunes: Snakemake deletes the outputs of every job of a failed
    # group, and redoing a mask costs seconds, where a finished training would have to start over (a stopped
    # one resumes from its state).
    # With resources.trainings_per_gpu = N > 1 both rules' groups are bundles instead (training_group in
    # common.smk): the level-L trainings of one chain over every (replicate, rewind point), N to a GPU,
    # each (fixed chain) with its pruning step before it.
    rule imp_train:
        input:
            data=DATA,
            rewind=f"{PRE_DIR}/rewind.safetensors",
            mask=lambda w: imp_mask(w.rep, w.pre, w.chain, w.level),
        output:
            ckpt=f"{IMP_DIR}/{{chain}}/level{{level}}/trained.safetensors",
            curve=f"{IMP_DIR}/{{chain}}/level{{level}}/trained.curve.csv",
            metrics=f"{IMP_DIR}/{{chain}}/level{{level}}/metrics.json",
        log:
            f"{IMP_DIR}/{{chain}}/level{{level}}/train.log",
        wildcard_constraints:
            chain="fixed|adaptive",
            level=r"\d+",
        group:
            training_group("imp_train", alone=lambda w: f"imp_rep{w.rep}_pre{w.pre}_level{w.level}"
                           if w.chain == "fixed" and int(w.level) else None)
        params:
            cfg=cfg_arg("model", "training"),
            mask=lambda w: imp_mask_opt(w.rep, w.pre, w.chain, w.level),
            noise=lambda w: imp_noise(w.level),
            labels=lambda w: labels_arg(
                family="imp", replicate=int(w.rep), pretrain_steps=int(w.pre), chain=w.chain, level=int(w.level)
            ),
        threads: RES["train_threads"]
        resources:
            **train_resources(),
        conda:
            LOTTO_ENV
        shell:
            train_shell("{input.rewind}", "{params.noise}", mask="{params.mask}")

    rule imp_prune:
        input:
            ckpt=lambda w: imp_ckpt(w.rep, w.pre, "fixed", int(w.level) - 1),
            mask=lambda w: imp_mask(w.rep, w.pre, "fixed", int(w.level) - 1),
        output:
            f"{IMP_DIR}/fixed/level{{level}}/mask.mask",
        log:
            f"{IMP_DIR}/fixed/level{{level}}/prune.log",
        wildcard_constraints:
            level=r"[1-9]\d*",
        group:
            training_group("imp_prune", alone="imp_rep{rep}_pre{pre}_level{level}")
        params:
            mask=lambda w: imp_mask_opt(w.rep, w.pre, "fixed", int(w.level) - 1),
            fraction=IMP["prune_fraction"],
            labels=lambda w: labels_arg(replicate=int(w.rep), pretrain_steps=int(w.pre), chain="fixed",
                                        level=int(w.level)),
        resources:
            **light_resources(),
        conda:
            LOTTO_ENV
        shell:
            "lotto imp-prune --threads 1 --checkpoint {input.ckpt} {params.mask} --fraction {params.fraction} "
            "--labels {params.labels} --out {output} > {log} 2>&1"

    rule imp_adaptive_prune:
        input:
            data=DATA,
            ckpt=lambda w: imp_ckpt(w.rep, w.pre, "adaptive", int(w.level) - 1),
            mask=lambda w: imp_mask(w.rep, w.pre, "adaptive", int(w.level) - 1),
            dense=lambda w: imp_ckpt(w.rep, w.pre, "fixed", 0),
            dense_metrics=lambda w: imp_metrics(w.rep, w.pre, "fixed", 0),
        output:
            mask=f"{IMP_DIR}/adaptive/level{{level}}/mask.mask",
            record=f"{IMP_DIR}/adaptive/level{{level}}/prune.json",
        log:
            f"{IMP_DIR}/adaptive/level{{level}}/prune.log",
        wildcard_constraints:
            level=r"[1-9]\d*",
        params:
            cfg=cfg_arg("model", "training"),
            mask=lambda w: imp_mask_opt(w.rep, w.pre, "adaptive", int(w.level) - 1),
            ratios=",".join(repr(float(r)) for r in IMP_AD["ratios"]),
            size="" if IMP_AD["train_eval_size"] is None else f"--train-eval-size {IMP_AD['train_eval_size']}",
            opts=f"--min-fraction {IMP_AD['min_fraction']} --dense-loss {IMP_AD['dense_loss']} {IMP_EVAL}",
            labels=lambda w: labels_arg(replicate=int(w.rep), pretrain_steps=int(w.pre), chain="adaptive",
                                        level=int(w.level)),
        threads: RES["train_threads"]
        resources:
            **train_resources(bundled=False),  # evaluations: a GPU each, never bundled
        conda:
            LOTTO_ENV
        shell:
            "lotto imp-adaptive-prune --config {params.cfg} --threads {threads} --data {input.data} "
            "--checkpoint {input.ckpt} {params.mask} --dense-checkpoint {input.dense} "
            "--dense-metrics {input.dense_metrics} --ratios {params.ratios} {params.size} {params.opts} "
            "--labels {params.labels} --record {output.record} --out {output.mask} > {log} 2>&1"

    rule imp_path:
        input:
            data=DATA,
            a=lambda w: imp_ckpt(w.rep, w.pre, "fixed", w.a),
            b=lambda w: imp_ckpt(w.rep, w.pre, "fixed", w.b),
        output:
            f"{IMP_DIR}/fixed/paths/level{{a}}-level{{b}}.json",
        log:
            f"{IMP_DIR}/fixed/paths/level{{a}}-level{{b}}.log",
        wildcard_constraints:
            a=r"\d+",
            b=r"\d+",
        params:
            cfg=cfg_arg("model", "training"),
            opts=IMP_EVAL,
            labels=lambda w: labels_arg(replicate=int(w.rep), pretrain_steps=int(w.pre), chain="fixed",
                                        level_a=int(w.a), level_b=int(w.b)),
        threads: RES["train_threads"]
        resources:
            **train_resources(bundled=False),  # evaluations: a GPU each, never bundled
        conda:
            LOTTO_ENV
        shell:
            "lotto imp-path --config {params.cfg} --threads {threads} --data {input.data} --a {input.a} "
            "--b {input.b} {params.opts} --labels {params.labels} --out {output} > {log} 2>&1"

    rule imp_slice:
        input:
            data=DATA,
            level=lambda w: imp_ckpt(w.rep, w.pre, "fixed", w.level),
            nxt=lambda w: imp_ckpt(w.rep, w.pre, "fixed", int(w.level) + 1),
            mask=lambda w: imp_mask(w.rep, w.pre, "fixed", int(w.level) + 1),
        output:
            f"{IMP_DIR}/fixed/slices/level{{level}}.json",
        log:
            f"{IMP_DIR}/fixed/slices/level{{level}}.log",
        wildcard_constraints:
            level=r"\d+",
        params:
            cfg=cfg_arg("model", "training"),
            opts=(f"--grid {IMP_SLICE['grid']} --margin {IMP_SLICE['margin']} --bn-stats {IMP['bn_stats']} "
                  f"--bn-images {IMP['bn_images']}"
                  + ("" if IMP_SLICE["test_size"] is None else f" --test-size {IMP_SLICE['test_size']}")),
            labels=lambda w: labels_arg(replicate=int(w.rep), pretrain_steps=int(w.pre), chain="fixed",
                                        level=int(w.level)),
        threads: RES["train_threads"]
        resources:
            **train_resources(bundled=False),  # evaluations: a GPU each, never bundled
        conda:
            LOTTO_ENV
        shell:
            "lotto imp-slice --config {params.cfg} --threads {threads} --data {input.data} "
            "--level-checkpoint {input.level} --next-checkpoint {input.nxt} --next-mask {input.mask} "
            "{params.opts} --labels {params.labels} --out {output} > {log} 2>&1"

    # --- figures: each a target by rule name (`snakemake imp_paths`) and by file -------------------
    # (a shell: expression is evaluated again when the job runs, with the loop variable at its last value: the
    # training curves, whose command differs, are a rule of their own)
    for _fig, _inputs in IMP_FIGURES.items():
        if _fig == "imp_training_curves":
            continue

        rule:
            name:
                _fig
            input:
                _inputs,
            output:
                report_figure("imp", _fig, [f"{ROOT}/figures/{_fig}{ext}" for ext in (".png", ".pdf", ".csv")]),
            log:
                f"{ROOT}/logs/{_fig}.log",
            params:
                prefix=lambda w, output: output[0][: -len(".png")],
                context=FIG_CONTEXT,
                **imp_figure_params(_fig),
            localrule: True
            conda:
                LOTTO_ENV
            shell:
                "lotto imp-figure {params.name} --context {params.context} --out-prefix {params.prefix} "
                "{input} > {log} 2>&1"

    rule imp_training_curves:
        input:
            IMP_FIGURES["imp_training_curves"],
        output:
            report_figure("imp", "imp_training_curves",
                          [f"{ROOT}/figures/imp_training_curves{ext}" for ext in (".png", ".pdf", ".csv")]),
        log:
            f"{ROOT}/logs/imp_training_curves.log",
        params:
            prefix=lambda w, output: output[0][: -len(".png")],
            context=FIG_CONTEXT,
            **imp_figure_params("imp_training_curves"),
        localrule: True
        conda:
            LOTTO_ENV
        shell:
            TRAINING_CURVES_SHELL

    if IMP_AD_PRES:

        rule imp_table:
            input:
                IMP_FIGURES["imp_adaptive"],
            output:
                report_tables("imp", [IMP_TABLE]),
            log:
                f"{ROOT}/logs/imp_table.log",
            params:
                target=IMP_AD["target_sparsity"],
            localrule: True
            conda:
                LOTTO_ENV
            shell:
                "lotto imp-table --target-sparsity {params.target} --out {output} {input} > {log} 2>&1"

    rule imp_figures:
        input:
            imp_figure_files() + ([IMP_TABLE] if IMP_AD_PRES else []),

    TARGETS += imp_figure_files() + ([IMP_TABLE] if IMP_AD_PRES else []) + imp_artifacts()

    rule claims_imp:
        input:
            imp_claim_inputs(),
        output:
            claims_part("imp"),
        log:
            f"{ROOT}/logs/claims-imp.log",
        params:
            cfg=cfg_arg("claims", "imp"),
        localrule: True
        conda:
            LOTTO_ENV
        shell:
            "lotto claims --family imp --config {params.cfg} --out {output} {input} > {log} 2>&1"
