# `snakemake verify --configfile X`: check this experiment's results folder (lotto verify: checkpoint digests and
# values, masks, records, the lotto commits that wrote them, leftovers of an interrupted run) and print the summary.
# No inputs: it checks what is there, without building anything first (a tree copied from elsewhere, with new
# modification times, must not look outdated); no output: it runs whenever asked. A damaged tree fails the run.


rule verify:
    log:
        f"{ROOT}/logs/verify.log",
    localrule: True
    params:
        root=ROOT,
        cfg=cfg_arg(*config),
    conda:
        LOTTO_ENV
    shell:
        # the summary on the terminal and in the log; pipefail (Snakemake's shell) keeps lotto verify's exit status
        "lotto verify {params.root} --config {params.cfg} 2>&1 | tee {log}"
