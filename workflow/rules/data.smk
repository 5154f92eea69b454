# Data staging: the only step that may touch the network; it runs on the submitting host.


localrules:
    stage_data,


rule stage_data:
    output:
        DATA,
    log:
        f"{ROOT}/logs/stage_data.log",
    params:
        cfg=cfg_arg("data"),
    conda:
        LOTTO_ENV
    shell:
        "lotto stage-data --config {params.cfg} --out {output} > {log} 2>&1"
