# Tickets for PyTorch code without lotto: `snakemake export_masks --configfile X` writes every mask of the
# experiment as a safetensors file of boolean tensors keyed by parameter name (lotto export-mask), at
# results/<experiment>/export/<the mask's path under results/<experiment>/>.safetensors. Not part of `all`
# (a paper-scale run has thousands of masks): ask for it, or for one file by its path.


rule export_mask:
    input:
        f"{ROOT}/{{mpath}}.mask",
    output:
        f"{ROOT}/export/{{mpath}}.safetensors",
    log:
        f"{ROOT}/export/{{mpath}}.log",
    wildcard_constraints:
        mpath=r"rep\d+/.+",
    localrule: True
    conda:
        LOTTO_ENV
    shell:
        "lotto export-mask {input} --out {output} > {log} 2>&1"


# every mask among the run's targets (the family rule files have added theirs to TARGETS by now)
rule export_masks:
    input:
        lambda wildcards: exported_masks(),
