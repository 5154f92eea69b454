# The figure, training-curve and claims rules of every family, made once here from what each family's rule file
# registered (register_outputs, common.smk) and its spec (lotto/<family>/__init__.py: FAMILY). Each figure is a
# target by its name (`snakemake fig1a`) and by its files; the CSV beside it is what it plots. They run on the
# submitting host: light, and the only steps that import seaborn. Every title names the model and data set
# (FIG_CONTEXT).
#
# (A shell: string is evaluated again when the job runs, with loop variables at their last values: so the shell
# strings below hold no loop variable; what differs per family or figure travels in params.)

for _family, _outputs in FAMILY_OUTPUTS.items():
    _curves = _outputs["curves"]
    _drawn = [f for f in _outputs["figures"] if f not in _outputs["own_rules"] and (not _curves or f != _curves[0])]

    for _fig in _drawn:

        rule:
            name:
                _fig
            input:
                _outputs["figure_inputs"](_fig),
            output:
                report_figure(_family, _fig, figure_files(_fig)),
            log:
                f"{ROOT}/logs/{_fig}.log",
            params:
                prefix=lambda w, output: output[0][: -len(".png")],
                context=FIG_CONTEXT,
                command=_outputs["figure_command"](_fig),
            localrule: True
            conda:
                LOTTO_ENV
            shell:
                "lotto {params.command} --context {params.context} --out-prefix {params.prefix} {input} > {log} 2>&1"

    if _curves and _curves[0] in _outputs["figures"]:

        rule:
            name:
                _curves[0]
            input:
                curve_files(_curves[2]()),
            output:
                report_figure(_family, _curves[0], figure_files(_curves[0])),
            log:
                f"{ROOT}/logs/{_curves[0]}.log",
            params:
                prefix=lambda w, output: output[0][: -len(".png")],
                context=FIG_CONTEXT,
                **curves_params(_curves[1], _curves[2]()),
            localrule: True
            conda:
                LOTTO_ENV
            shell:
                TRAINING_CURVES_SHELL

    # every figure of the family (and its tables, where its aggregate builds them): `snakemake <figures_target>`
    rule:
        name:
            FAMILIES[_family].figures_target
        input:
            [f for name in _outputs["figures"] for f in figure_files(name)] + _outputs["extra_targets"],

    # the family's papers' claims on its own records (lotto/<family>/claims.py), merged by `claims` (report.smk)
    rule:
        name:
            f"claims_{_family}"
        input:
            _outputs["claim_inputs"](),
        output:
            claims_part(_family),
        log:
            f"{ROOT}/logs/claims-{_family}.log",
        params:
            family=_family,
            cfg=cfg_arg("claims", _family),
        localrule: True
        conda:
            LOTTO_ENV
        shell:
            "lotto claims --family {params.family} --config {params.cfg} --out {output} {input} > {log} 2>&1"
