# lotto: lottery-ticket pruning experiments as one Snakemake DAG.
#
# Thin on purpose: validate the config, then include one rule file per stage. Every rule calls the
# `lotto` command line, so each step also runs by hand. Nothing here imports torch: every cluster job
# re-parses this file.
import sys

from lotto.config import ConfigError, validate as _validate_config


# config.yaml is the default, not a base: a `--configfile` replaces it outright (Snakemake would
# otherwise deep-merge the two, leaking paper-scale keys into a user's config). Unset keys take the
# schema's defaults instead.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


try:
    _validated = _validate_config(config)
except ConfigError as _exc:
    sys.stderr.write(f"lotto: {_exc}\n")
    sys.exit(1)
config.clear()
config.update(_validated)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/composability.smk"
include: "workflow/rules/imp.smk"
include: "workflow/rules/zoo.smk"


rule all:
    default_target: True
    input:
        TARGETS,
