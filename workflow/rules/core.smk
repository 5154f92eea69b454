# The trunk every family shares: theta_0 of a replicate, and shared pretraining from it to a rewind point t
# (results/<experiment>/rep<r>/init.safetensors, rep<r>/pre<t>/rewind.safetensors). Data staging: data.smk.
# Resumable state lives under RESUME, outside the declared outputs (which Snakemake deletes before a job).
# A training's `group: training_group(...)` bundles its jobs N to a GPU on a cluster when
# resources.trainings_per_gpu = N > 1 (common.smk); with N = 1 a training is a Slurm job of its own.

# theta_0 of a replicate: seconds of CPU, on the submitting host (like stage_data), so that on a cluster the
# first trainings wait for no queue behind it and a replicate costs no submission of its own
rule init:
    input:
        data=DATA,
    output:
        f"{ROOT}/rep{{rep}}/init.safetensors",
    log:
        f"{ROOT}/rep{{rep}}/init.log",
    params:
        cfg=cfg_arg("model"),
    localrule: True
    conda:
        LOTTO_ENV
    shell:
        "lotto init --config {params.cfg} --data {input.data} --replicate {wildcards.rep} --out {output} > {log} 2>&1"


rule pretrain:
    input:
        data=DATA,
        init=f"{ROOT}/rep{{rep}}/init.safetensors",
    output:
        ckpt=f"{PRE_DIR}/rewind.safetensors",
        curve=f"{PRE_DIR}/rewind.curve.csv",
    log:
        f"{PRE_DIR}/pretrain.log",
    params:
        cfg=cfg_arg("model", "training"),
    group:
        training_group("pretrain_rep{rep}")
    threads: RES["train_threads"]
    resources:
        **train_resources(),
    conda:
        LOTTO_ENV
    shell:
        train_shell("{input.init}", "pretrain", kind="rewind", end="{wildcards.pre}", metrics=False)
