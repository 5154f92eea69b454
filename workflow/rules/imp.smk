# IMP with weight rewinding, linear mode connectivity between its levels, 2-D slices and the adaptive
# pruning ratio (Paul, Chen, Larsen, Frankle, Ganguli & Dziugaite 2022).
#
# Reuses `init` and `pretrain` (core.smk): the rewind point tau of replicate r is rep<r>/pre<tau>/rewind.safetensors.
# Its figure, training-curve and claims rules: outputs.smk, from register_outputs below.
# Under rep<r>/pre<tau>/imp/:
#   fixed/level<L>/{mask.mask, trained.safetensors, metrics.json, train.log}   (level 0: dense, no mask)
#   adaptive/level<L>/{mask.mask, prune.json, trained.safetensors, ...}       (L >= 1; level 0 is fixed/level0)
#   fixed/paths/level<a>-level<b>.json      error/loss along (1-beta) w_a + beta w_b
#   fixed/slices/level<L>.json              error over the plane through w_L, m_{L+1} w_L, w_{L+1}
# Every level depends only on the levels below it, and each rule's params hold only the keys it uses,
# so raising imp.levels (or imp.adaptive.levels) adds jobs without rerunning existing ones.

IMP = config.get("imp")

if IMP:
    IMP_REPS = IMP["replicates"]
    IMP_PRES = IMP["pretrain_steps"]
    IMP_LEVELS = IMP["levels"]
    _imp_top = [max(IMP_PRES)]
    IMP_PAIR_PRES = _imp_top if IMP["pairwise_pretrain_steps"] is None else IMP["pairwise_pretrain_steps"]
    IMP_SLICE = IMP["slice"]
    IMP_SLICE_PRES = _imp_top if IMP_SLICE["pretrain_steps"] is None else IMP_SLICE["pretrain_steps"]
    IMP_SLICE_REP = IMP_REPS[0]
    IMP_AD = IMP["adaptive"]
    IMP_AD_PRES = (_imp_top if IMP_AD["pretrain_steps"] is None else IMP_AD["pretrain_steps"]) if IMP_AD["enabled"] else []
    IMP_DIR = f"{PRE_DIR}/imp"
    IMP_BETAS = ",".join(repr(float(b)) for b in IMP["beta_grid"])
    IMP_EVAL = f"--beta-grid {IMP_BETAS} --bn-stats {IMP['bn_stats']} --bn-images {IMP['bn_images']}"

    def imp_level(rep, pre, chain, level):
        """Folder of a level; the adaptive chain starts from the fixed chain's dense level 0."""
        chain = "fixed" if int(level) == 0 else chain
        return f"{ROOT}/rep{rep}/pre{pre}/imp/{chain}/level{level}"

    def imp_ckpt(rep, pre, chain, level):
        return f"{imp_level(rep, pre, chain, level)}/trained.safetensors"

    def imp_metrics(rep, pre, chain, level):
        return f"{imp_level(rep, pre, chain, level)}/metrics.json"

    def imp_mask(rep, pre, chain, level):
        return [] if int(level) == 0 else [f"{imp_level(rep, pre, chain, level)}/mask.mask"]

    def imp_mask_opt(rep, pre, chain, level):
        m = imp_mask(rep, pre, chain, level)
        return f"--mask {m[0]}" if m else ""

    def imp_path_record(rep, pre, a, b):
        return f"{ROOT}/rep{rep}/pre{pre}/imp/fixed/paths/level{a}-level{b}.json"

    def imp_slice_record(rep, pre, level):
        return f"{ROOT}/rep{rep}/pre{pre}/imp/fixed/slices/level{level}.json"

    def imp_noise(level):
        return f"custom:imp-L{level}" if IMP["noise"] == "per_level" else "custom:imp"

    def imp_chain_levels(chain):
        return range(IMP_LEVELS) if chain == "fixed" else range(1, IMP_AD["levels"])

    # --- what each figure reads -------------------------------------------------------------------
    def imp_all_metrics(chain, pres):
        return [imp_metrics(r, p, chain, L) for r in IMP_REPS for p in pres for L in imp_chain_levels(chain)]

    def imp_dense_metrics():
        return [imp_metrics(r, p, "fixed", 0) for r in IMP_REPS for p in IMP_PRES]

    def imp_successive_paths():
        return [imp_path_record(r, p, L, L + 1) for r in IMP_REPS for p in IMP_PRES for L in range(IMP_LEVELS - 1)]

    def imp_pairwise_paths():
        return [imp_path_record(r, p, a, b) for r in IMP_REPS for p in IMP_PAIR_PRES
                for a in range(IMP_LEVELS) for b in range(a + 1, IMP_LEVELS)]

    def imp_slices():
        return [imp_slice_record(IMP_SLICE_REP, p, L) for p in IMP_SLICE_PRES for L in IMP_SLICE["levels"]]

    def imp_adaptive_records():
        return [f"{imp_level(r, p, 'adaptive', L)}/prune.json" for r in IMP_REPS for p in IMP_AD_PRES
                for L in imp_chain_levels("adaptive")]

    def imp_curve_groups():
        return [
            ("pretraining (0 to τ)", [curve_of(rewind_path(r, p)) for r in IMP_REPS for p in IMP_PRES]),
            ("level 0 (dense)", [curve_of(imp_ckpt(r, p, "fixed", 0)) for r in IMP_REPS for p in IMP_PRES]),
            ("fixed-ratio levels", [curve_of(imp_ckpt(r, p, "fixed", L)) for r in IMP_REPS for p in IMP_PRES
                                    for L in range(1, IMP_LEVELS)]),
            ("adaptive-ratio levels", [curve_of(imp_ckpt(r, p, "adaptive", L)) for r in IMP_REPS for p in IMP_AD_PRES
                                       for L in imp_chain_levels("adaptive")]),
        ]

    IMP_FIGURES = {
        "imp_paths": imp_successive_paths() + imp_dense_metrics(),
        "imp_heatmap": imp_pairwise_paths() + imp_all_metrics("fixed", IMP_PAIR_PRES) + imp_dense_metrics(),
        "imp_slices": imp_slices() + imp_dense_metrics(),
        "imp_adaptive": imp_all_metrics("fixed", IMP_AD_PRES) + imp_all_metrics("adaptive", IMP_AD_PRES)
        + imp_adaptive_records() + imp_dense_metrics(),
        "imp_training_curves": curve_files(imp_curve_groups()),
    }
    IMP_FIGURES = {name: list(dict.fromkeys(files)) for name, files in IMP_FIGURES.items()}  # each file once
    if not IMP_PAIR_PRES:
        del IMP_FIGURES["imp_heatmap"]
    if not imp_slices():
        del IMP_FIGURES["imp_slices"]
    if not IMP_AD_PRES:
        del IMP_FIGURES["imp_adaptive"]
    IMP_TABLE = f"{ROOT}/tables/imp_adaptive.csv"

    def imp_claim_inputs():
        """What the IMP claims read (lotto/imp/claims.py): the paths between successive levels and the fixed
        chain's level metrics at every rewind point, and the adaptive chain's where it runs."""
        recs = imp_successive_paths() + imp_all_metrics("fixed", IMP_PRES)
        return list(dict.fromkeys(recs + imp_all_metrics("adaptive", IMP_AD_PRES)))

    def imp_figure_files():
        return [f"{ROOT}/figures/{n}{ext}" for n in IMP_FIGURES for ext in (".png", ".pdf", ".csv")]

    def imp_artifacts():
        out = []
        for r in IMP_REPS:
            for p in IMP_PRES:
                out.append(rewind_path(r, p))
                for L in range(IMP_LEVELS):
                    out.append(imp_ckpt(r, p, "fixed", L))
                    out += imp_mask(r, p, "fixed", L)
            for p in IMP_AD_PRES:
                for L in imp_chain_levels("adaptive"):
                    out.append(imp_ckpt(r, p, "adaptive", L))
                    out += imp_mask(r, p, "adaptive", L)
        return out


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
            training_group("imp_{chain}_level{level}", alone=lambda w: f"imp_rep{w.rep}_pre{w.pre}_level{w.level}"
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
            training_group("imp_fixed_level{level}", alone="imp_rep{rep}_pre{pre}_level{level}")
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

    TARGETS += imp_figure_files() + ([IMP_TABLE] if IMP_AD_PRES else []) + imp_artifacts()

    register_outputs(
        "imp",
        figures=list(IMP_FIGURES),
        figure_inputs=lambda name: IMP_FIGURES[name],
        figure_command=lambda name: f"imp-figure {name}",
        curves=("imp_training_curves", "Training curves of the IMP runs (levels: retraining from τ)",
                imp_curve_groups),
        claim_inputs=imp_claim_inputs,
        extra_targets=[IMP_TABLE] if IMP_AD_PRES else [],
    )
