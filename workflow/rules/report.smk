# The claims table and the report.
#
# claims: every family's papers' claims, checked on its own records by claims_<family> (in the family's rule
# file), merged into results/<experiment>/tables/claims.csv and printed on the terminal.
#
# The report: `snakemake --report report.html --configfile X` after a run (or add `--report report.html
# --report-after-run` to the run). Its landing page (workflow/report/workflow.rst) shows the claims table first,
# then every figure and table marked with report() in the family rule files, then the run's config and provenance
# made here. Layout: lotto/report.py. Included last: provenance_sources() reads the TARGETS every family's rule
# file has added.


rule claims:
    input:
        claims_parts(),
    output:
        csv=CLAIMS_TABLE,
        html=report_run(CLAIMS_HTML, "claims"),
    log:
        f"{ROOT}/logs/claims.log",
    localrule: True
    conda:
        LOTTO_ENV
    shell:
        # printed once, as the run's last output (the Snakefile's exit hook), not here between the jobs
        "lotto claims-table --out {output.csv} --html {output.html} {input} > {log} 2>&1"


rule report_config:
    output:
        config=report_run(RUN_CONFIG, "config"),
        papers=report_run(PAPERS_HTML, "papers"),  # the landing page's list of papers, from the families' specs
    log:
        f"{ROOT}/logs/report_config.log",
    params:
        cfg=cfg_arg(*config),
        sources=" ".join(shlex.quote(f) for f in config_sources()),
    localrule: True
    conda:
        LOTTO_ENV
    shell:
        "lotto report-config --config {params.cfg} --source {params.sources} --out {output.config} "
        "--papers {output.papers} > {log} 2>&1"


# reads the experiment's folder rather than {input}: at paper scale the paths overflow one shell command (128 KiB);
# the inputs make it run after, and again after, every artifact
rule provenance:
    input:
        provenance_sources(),
    output:
        report_run(PROVENANCE_TABLE, "provenance"),
    log:
        f"{ROOT}/logs/provenance.log",
    params:
        root=lambda w, output: os.path.dirname(os.path.dirname(output[0])),  # results/<experiment>
    localrule: True
    conda:
        LOTTO_ENV
    shell:
        "lotto provenance --under {params.root} --out {output} > {log} 2>&1"


TARGETS += [CLAIMS_TABLE, CLAIMS_HTML, RUN_CONFIG, PAPERS_HTML, PROVENANCE_TABLE]


if REPORT_MISSING:
    print(f"lotto: the report shows what this run has built; {len(REPORT_MISSING)} of its files are not built yet "
          f"(e.g. {REPORT_MISSING[0]}). Build them, then the report again: snakemake --cores N "
          f"{' '.join(a for a in sys.argv[1:] if a != '--report' and not a.endswith('.html'))}", file=sys.stderr)
