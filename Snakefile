# lotto: lottery-ticket pruning experiments as one Snakemake DAG.
#
# Thin on purpose: validate the config, then include one rule file per stage. Every rule calls the
# `lotto` command line, so each step also runs by hand. Nothing here imports torch: every cluster job
# re-parses this file.
import sys

from lotto.config import check_targets, or_exit, read_config_file, validate_workflow


# config.yaml is the default, not a base: a `--configfile` replaces it outright (Snakemake would
# otherwise deep-merge the two, leaking paper-scale keys into a user's config). Unset keys take the
# schema's defaults instead. lotto reads it first: Snakemake's loader names no line on a syntax error.
if not workflow.overwrite_configfiles:
    or_exit(read_config_file, "config.yaml")

    configfile: "config.yaml"


# every config file again with lotto's loader (Snakemake's keeps the last of duplicate keys silently),
# `--config` overrides folded in and validated like any other value
_validated = or_exit(validate_workflow, config, workflow.configfiles, workflow.config_settings.config)
config.clear()
config.update(_validated)


# the report's landing page (`snakemake --report report.html`): claims first, then figures, tables, config
report: "workflow/report/workflow.rst"


# A run killed hard (kill -9, a lost login session) leaves Snakemake's lock behind: lotto removes it when that run's
# process is provably gone, else says in one line how to (lotto/recovery.py). The incomplete jobs it left are
# rerun by the workflow profile (rerun-incomplete). Jobs that Snakemake runs inside cluster jobs lock nothing.
if workflow.is_main_process:
    from lotto.recovery import claim

    claim()


# A local run starts one fork server that imports torch once and forks a process per `lotto` command
# (lotto/forkserver.py): a small config's jobs otherwise spend longer importing torch than training. Each
# job stays its own process and files; LOTTO_FORKSERVER=off turns it off. Not for cluster jobs, dry runs or
# --use-conda/apptainer (the jobs' interpreter is another one).
_forkserver = []


onstart:
    if workflow.local_exec and workflow.is_main_process and not workflow.touch \
            and not workflow.deployment_settings.deployment_method:
        from lotto.forkserver import start

        _handle = start(".snakemake/lotto-forkserver.log")  # None: turned off, or an outer run's server
        if _handle is not None:
            _forkserver.append(_handle)


# The claims table is the last thing a run prints (claims_at_exit, below): after a run that built it, and again
# on a rerun with nothing to do. Snakemake's own closing lines come after onsuccess, so the table is printed when
# the process exits, once these hooks have said how the run went.
_run = {"ended": None}


onsuccess:
    for _handle in _forkserver:
        _handle.stop()
    _run["ended"] = "success"


onerror:
    for _handle in _forkserver:
        _handle.stop()
    _run["ended"] = "error"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/core.smk"


# one rule file per experiment family (lotto.families: the registry), each adding its rules, its TARGETS and what
# outputs.smk makes its figure, training-curve and claims rules from
for _family in FAMILIES:

    include: f"workflow/rules/{_family}.smk"


include: "workflow/rules/outputs.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/verify.smk"


rule all:
    default_target: True
    input:
        TARGETS,


# a target on the command line that names neither a rule nor a file: the targets of this config and the closest
# match, before Snakemake's banner (rules with wildcards are reached through their files, not by name)
or_exit(check_targets, sys.argv, [r.name for r in workflow.rules if not r.has_wildcards()])


if workflow.is_main_process:  # (whether it is a dry run is known only once the run starts: checked at exit)
    import atexit

    from lotto.claims import print_at_exit

    atexit.register(print_at_exit, CLAIMS_TABLE, workflow, _run, {"all", "claims", CLAIMS_TABLE})
