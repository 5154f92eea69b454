# Training: theta_0, shared pretraining to the rewind point, siblings, retraining of every ticket.
# Resumable state lives under RESUME, outside the declared outputs (which Snakemake deletes before a job).


rule init:
    input:
        data=DATA,
    output:
        ROOT + "/rep{rep}/init.safetensors",
    log:
        ROOT + "/rep{rep}/init.log",
    params:
        cfg=cfg_arg("model"),
    resources:
        **light_resources(),
    shell:
        "lotto init --config {params.cfg} --data {input.data} --replicate {wildcards.rep} --out {output} > {log} 2>&1"


rule pretrain:
    input:
        data=DATA,
        init=ROOT + "/rep{rep}/init.safetensors",
    output:
        PRE_DIR + "/rewind.safetensors",
    log:
        PRE_DIR + "/pretrain.log",
    params:
        cfg=cfg_arg("model", "training"),
        resume=lambda w, output: f"{RESUME}/{output[0]}.pt",
    threads: RES["train_threads"]
    resources:
        **train_resources(),
    shell:
        "lotto train --config {params.cfg} --threads {threads} --data {input.data} --from {input.init} "
        "--end {wildcards.pre} --replicate {wildcards.rep} --noise pretrain --kind rewind "
        "--resume-state {params.resume} --out {output} > {log} 2>&1"


rule sibling:
    input:
        data=DATA,
        rewind=PRE_DIR + "/rewind.safetensors",
    output:
        ckpt=PRE_DIR + "/sibling{sib}/trained.safetensors",
        metrics=PRE_DIR + "/sibling{sib}/metrics.json",
    log:
        PRE_DIR + "/sibling{sib}/train.log",
    params:
        cfg=cfg_arg("model", "training"),
        labels=lambda w: labels_arg(
            replicate=int(w.rep), pretrain_steps=int(w.pre), ticket="dense", sibling=int(w.sib), k=None,
            target_sparsity=0.0,
        ),
        resume=lambda w, output: f"{RESUME}/{output.ckpt}.pt",
    threads: RES["train_threads"]
    resources:
        **train_resources(),
    shell:
        "lotto train --config {params.cfg} --threads {threads} --data {input.data} --from {input.rewind} "
        "--end end --replicate {wildcards.rep} --noise sibling:{wildcards.sib} --kind trained "
        "--metrics {output.metrics} --labels {params.labels} --resume-state {params.resume} "
        "--out {output.ckpt} > {log} 2>&1"


def ticket_mask(w):
    if w.ticket == "oneshot":
        return sibling_mask(w.rep, w.pre, BASELINE_SIBLING, w.s)
    return f"{ROOT}/rep{w.rep}/pre{w.pre}/{w.ticket}/s{w.s}/mask.mask"


def ticket_labels(w):
    k, ticket = parse_ticket(w.ticket)
    return labels_arg(
        replicate=int(w.rep), pretrain_steps=int(w.pre), ticket=ticket, k=k, target_sparsity=float(w.s)
    )


rule retrain:
    input:
        data=DATA,
        rewind=PRE_DIR + "/rewind.safetensors",
        mask=ticket_mask,
    output:
        ckpt=PRE_DIR + "/{ticket}/s{s}/retrained.safetensors",
        metrics=PRE_DIR + "/{ticket}/s{s}/metrics.json",
    log:
        PRE_DIR + "/{ticket}/s{s}/retrain.log",
    params:
        cfg=cfg_arg("model", "training"),
        labels=ticket_labels,
        resume=lambda w, output: f"{RESUME}/{output.ckpt}.pt",
    threads: RES["train_threads"]
    resources:
        **train_resources(),
    shell:
        "lotto train --config {params.cfg} --threads {threads} --data {input.data} --from {input.rewind} "
        "--end end --replicate {wildcards.rep} --noise retrain --mask {input.mask} --kind retrained "
        "--metrics {output.metrics} --labels {params.labels} --resume-state {params.resume} "
        "--out {output.ckpt} > {log} 2>&1"
