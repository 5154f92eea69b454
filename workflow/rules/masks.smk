# Masks: one-shot global magnitude pruning of each sibling, compositions, random tickets. CPU-only, cheap.


rule mask:
    input:
        PRE_DIR + "/sibling{sib}/trained.safetensors",
    output:
        PRE_DIR + "/sibling{sib}/masks/s{s}.mask",
    log:
        PRE_DIR + "/sibling{sib}/masks/s{s}.log",
    params:
        labels=lambda w: labels_arg(replicate=int(w.rep), pretrain_steps=int(w.pre), sibling=int(w.sib)),
    resources:
        **light_resources(),
    shell:
        "lotto prune --threads 1 --checkpoint {input} --sparsity {wildcards.s} --labels {params.labels} "
        "--out {output} > {log} 2>&1"


rule compose:
    input:
        lambda w: [sibling_mask(w.rep, w.pre, i, w.s) for i in range(1, int(w.k) + 1)],
    output:
        mask=PRE_DIR + "/k{k}/{op}/s{s}/mask.mask",
        record=PRE_DIR + "/k{k}/{op}/s{s}/compose.json",
    log:
        PRE_DIR + "/k{k}/{op}/s{s}/compose.log",
    params:
        labels=lambda w: labels_arg(replicate=int(w.rep), pretrain_steps=int(w.pre)),
    resources:
        **light_resources(),
    shell:
        "lotto compose --op {wildcards.op} --sparsity {wildcards.s} --labels {params.labels} "
        "--sidecar {output.record} --out {output.mask} {input} > {log} 2>&1"


rule random_ticket:
    input:
        lambda w: sibling_mask(w.rep, w.pre, BASELINE_SIBLING, w.s),
    output:
        PRE_DIR + "/random/s{s}/mask.mask",
    log:
        PRE_DIR + "/random/s{s}/random_ticket.log",
    resources:
        **light_resources(),
    shell:
        "lotto random-ticket --mask {input} --replicate {wildcards.rep} "
        "--seed-parts {wildcards.pre} {wildcards.s} --out {output} > {log} 2>&1"
