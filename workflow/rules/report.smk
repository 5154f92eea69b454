# The claims table: every family's papers' claims, checked on its own records by claims_<family> (in the
# family's rule file), merged into results/<experiment>/tables/claims.csv and printed on the terminal.


rule claims:
    input:
        claims_parts(),
    output:
        CLAIMS_TABLE,
    log:
        f"{ROOT}/logs/claims.log",
    localrule: True
    conda:
        LOTTO_ENV
    shell:
        # stdout is the table, left on the terminal; the log gets the rest
        "lotto claims-table --out {output} {input} 2> {log}"


TARGETS += [CLAIMS_TABLE]
