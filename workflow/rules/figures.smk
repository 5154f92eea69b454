# Figures: each a target by rule name (`snakemake fig1a`) and by file; the CSV beside it is what it plots.
# They run on the submitting host: light, and the only steps that import seaborn.

for _fig in FIGURES if COMP else []:

    rule:
        name:
            _fig
        input:
            figure_inputs(_fig),
        output:
            figure_files(_fig),
        log:
            f"{ROOT}/logs/{_fig}.log",
        params:
            name=_fig,
            prefix=f"{ROOT}/figures/{_fig}",
        localrule: True
        shell:
            "lotto figure {params.name} --out-prefix {params.prefix} {input} > {log} 2>&1"


if COMP:

    rule figures:
        input:
            all_figure_files(),

    rule tables:
        input:
            all_records(),
        output:
            summary_tables(),
        log:
            f"{ROOT}/logs/tables.log",
        params:
            out_dir=f"{ROOT}/tables",
        localrule: True
        shell:
            "lotto tables --out-dir {params.out_dir} {input} > {log} 2>&1"

    # every checkpoint and mask is a target too, so that deleting any one of them rebuilds it (and,
    # through its newer timestamp, only the steps downstream of it)
    TARGETS += all_figure_files() + summary_tables() + all_artifacts()
