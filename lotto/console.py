"""lotto's Snakemake console: one short line per finished job and a run-level progress line with the elapsed time
and an ETA, instead of Snakemake's block of ~12 lines per job.

The workflow profile (profiles/default/config.yaml) registers this module as Snakemake's logger plugin ``lotto``
(:func:`register`: Snakemake looks for plugins among installed top-level packages, which an editable install of
lotto does not provide) and turns it on with ``logger: [lotto]``. It
replaces Snakemake's console handler only, never its log file (``.snakemake/log/``, complete as always), and
only for runs that execute jobs: a dry run (``-n``), ``-p`` (shell commands) and ``--verbose`` print exactly what
Snakemake prints, so the full detail stays one flag away. Whatever it does not know (warnings, errors, a failed
job's block and, with ``show-failed-logs``, its log) it prints as Snakemake would.

Import-light (no torch): Snakemake imports it at start-up.

Why not snakemake-logger-plugin-rich: in a non-terminal log (CI, ``> run.log``, a Slurm job's output) it prints
no line per job and no progress at all (measured with its 0.5.1 on the tiny config: the job table, then nothing
until "Workflow Finished"), and it reprints the job table twice.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

from lotto.curves import format_duration

def register() -> bool:
    """Make this module Snakemake's logger plugin ``lotto`` (the profile calls it before Snakemake checks
    ``--logger``, whose choices are the registry's live list). True when it is registered."""
    from snakemake_interface_logger_plugins.registry import LoggerPluginRegistry

    LoggerPluginRegistry().register_plugin("snakemake_logger_plugin_lotto", sys.modules[__name__])
    return "lotto" in LoggerPluginRegistry().plugins


#: Snakemake's messages that say nothing a reader of a local run needs (they stay in the log file)
CHATTER = ("Assuming unrestricted shared filesystem usage.", "Building DAG of jobs...", "Using shell:",
           "Provided cores:", "Provided resources:", "Rules claiming more threads will be scaled down.",
           "Conda environments: ignored", "Singularity containers: ignored", "Select jobs to execute...",
           "Execute ", "host: ", "Complete log(s):", "Elapsed time:", "Finished jobid:", "Job stats:")
#: a run-level progress line at every this fraction of the jobs (and at the end): few lines, since the README
#: promises under 300 for the demo's 257 jobs with the claims table
PROGRESS_EVERY = 0.25
WILDCARDS_WIDTH = 72


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    """No settings: the profile's show-failed-logs, -p, --verbose and --quiet are Snakemake's own."""


class LogHandler(LogHandlerBase):
    """The console of a run: Snakemake's log records in, short lines out (see the module's docstring)."""

    def __post_init__(self) -> None:
        from snakemake.logging import DefaultFilter, DefaultFormatter

        s = self.common_settings
        self.stream = sys.stdout if getattr(s, "stdout", False) else sys.stderr
        self.snakemake_filter = DefaultFilter(s.quiet, s.debug_dag, s.verbose, s.dryrun, s.printshellcmds)
        self.snakemake_format = DefaultFormatter(s.quiet, s.show_failed_logs)
        # Snakemake's own console where its detail was asked for
        self.passthrough = bool(s.dryrun or s.printshellcmds or s.verbose or s.debug_dag)
        self.jobs: dict[int, tuple[str, str]] = {}  # job id -> (rule, its wildcards in short)
        self.started: dict[int, float] = {}
        self.per_rule: dict[str, int] = {}  # jobs of each rule in the run (Snakemake's job stats)
        self.took: dict[str, list[float]] = {}  # seconds of each finished job, per rule
        self.total = 0
        self.done = 0
        self.failed = False
        self.t0: float | None = None
        self.next_progress = PROGRESS_EVERY

    # the plugin interface
    @property
    def writes_to_stream(self) -> bool:
        return True

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False

    # records
    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._emit(record)
        except Exception:  # a console line must never take a run down
            self.handleError(record)

    def _emit(self, record: logging.LogRecord) -> None:
        from snakemake_interface_logger_plugins.common import LogEvent

        event = getattr(record, "event", None)
        if self.passthrough:
            return self._snakemake(record)
        if event == LogEvent.RUN_INFO:
            self._run_info(getattr(record, "stats", {}) or {})
        elif event == LogEvent.JOB_INFO:
            self._job_info(record)
        elif event == LogEvent.JOB_STARTED:
            now = time.monotonic()
            for jobid in getattr(record, "jobs", []) or []:
                self.started.setdefault(jobid, now)
        elif event == LogEvent.JOB_FINISHED:
            self._job_finished(getattr(record, "job_id", None))
        elif event == LogEvent.PROGRESS:
            self.total = getattr(record, "total", self.total) or self.total
        elif event in (LogEvent.WORKFLOW_STARTED, LogEvent.RESOURCES_INFO):
            pass  # the banner, "Provided cores: 2": in the log file
        elif event in (LogEvent.JOB_ERROR, LogEvent.GROUP_ERROR, LogEvent.ERROR):
            self.failed = True
            self._snakemake(record)
        elif event is None and record.levelno < logging.WARNING and str(record.msg or "").startswith(CHATTER):
            if self.failed and str(record.msg).startswith(("Complete log(s):", "Elapsed time:")):
                self._snakemake(record)  # after a failure: where the whole story is
        else:
            self._snakemake(record)

    def _snakemake(self, record: logging.LogRecord) -> None:
        if self.snakemake_filter.filter(record):
            self._write(self.snakemake_format.format(record))

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def _run_info(self, stats: dict) -> None:
        self.per_rule = {str(k): int(v) for k, v in stats.items() if k != "total"}
        self.total = int(stats.get("total", sum(self.per_rule.values())))
        self.t0 = time.monotonic()
        most = sorted(self.per_rule.items(), key=lambda kv: -kv[1])
        parts = ", ".join(f"{rule} {n}" for rule, n in most[:4]) + (", ..." if len(most) > 4 else "")
        self._write(f"lotto: {self.total} jobs to run ({parts}); a line per finished job (-p or --verbose: "
                    "Snakemake's full output; all of it in .snakemake/log/)")

    def _job_info(self, record: logging.LogRecord) -> None:
        jobid = getattr(record, "jobid", None)
        if jobid is None:
            return
        wildcards = getattr(record, "wildcards", None) or {}
        text = " ".join(f"{k}={v}" for k, v in dict(wildcards).items())
        if len(text) > WILDCARDS_WIDTH:
            text = text[: WILDCARDS_WIDTH - 1] + "…"
        self.jobs[jobid] = (str(getattr(record, "rule_name", "?")), text)
        self.started.setdefault(jobid, time.monotonic())

    def _job_finished(self, jobid) -> None:
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        self.done += 1
        rule, text = self.jobs.pop(jobid, ("?", ""))
        took = now - self.started.pop(jobid, now)
        self.took.setdefault(rule, []).append(took)
        total = max(self.total, self.done)
        width = len(str(total))
        self._write(f"[{self.done:>{width}}/{total}] {rule}{' ' + text if text else ''} ({format_duration(took)})")
        if self.done >= total:
            self._write(f"lotto: all {total} jobs done in {format_duration(now - self.t0)}")
        elif self.done >= self.next_progress * total:
            while self.next_progress * total <= self.done:
                self.next_progress += PROGRESS_EVERY
            self._write(f"lotto: {self.done} of {total} jobs ({100 * self.done // total}%), elapsed "
                        f"{format_duration(now - self.t0)}, ETA ~{format_duration(self.eta(now))}")

    def eta(self, now: float) -> float:
        """Seconds left: each job still to run at the mean duration of the finished jobs of its rule (of all
        finished jobs where its rule has none yet), divided by the parallelism seen so far (the finished jobs'
        seconds per second of the run)."""
        finished = [t for ts in self.took.values() for t in ts]
        if not finished or self.t0 is None:
            return float("nan")
        overall = sum(finished) / len(finished)
        left = 0.0
        for rule, n in self.per_rule.items():
            ts = self.took.get(rule, [])
            left += max(n - len(ts), 0) * (sum(ts) / len(ts) if ts else overall)
        elapsed = max(now - self.t0, 1e-6)
        parallel = max(sum(finished) / elapsed, 1.0)
        return left / parallel
