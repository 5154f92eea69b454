"""What an experiment family is, as one object: :class:`Family`, which each ``lotto/<family>/__init__.py`` exports as
``FAMILY``. The core (config checks, the report, the Slurm bundles, the CLI, the claims table) reads families only
through these objects, found in the registry :data:`lotto.families.FAMILIES`; it names no family.

Import-light (stdlib only): the Snakefile reads it at parse time, on every cluster job.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping


@dataclass(frozen=True)
class Figure:
    """A figure of a family: its target name, what it shows, the report subcategory it goes under (numbered, as the
    report sorts them alphabetically) and the paper figure it mirrors. Its caption is
    ``workflow/report/<name>.rst``."""

    name: str
    shows: str
    section: str
    mirrors: str


@dataclass(frozen=True)
class Paper:
    """A paper a family reproduces: how it is cited, and where to read it."""

    citation: str
    url: str


@dataclass(frozen=True)
class Family:
    """An experiment family: a package ``lotto/<name>/`` exporting this object, a rule file
    ``workflow/rules/<name>.smk`` and one line in :data:`lotto.families.PACKAGES`.

    ``name``: its config section (validated by the JSON schema ``<package>/schema.yaml``), rule file and report
    section; ``title`` and ``paper``: the report section's heading (no colons or quotes: they become report link
    names); ``papers``: what it reproduces, cited with links on the report's landing page; ``figures`` and
    ``tables`` ((table stem, caption stem) of ``results/<experiment>/tables/``): its report entries;
    ``figures_target``: the rule that builds all its figures; ``display``: its name in running text;
    ``names``: readable names of its own ids, by kind (lotto.names.FAMILY_KINDS: its tickets, weight handlings,
    chains); ``context``: "module:function" adding what its figures need to a run's figure context
    (``fn(cfg) -> dict``); ``problems``: "module:function" checking its
    section beyond the schema (``problems(cfg) -> [message, ...]``, each naming its config key);
    ``schedule_problems``: "module:function" checking, on a whole config, the steps it trains to against the
    schedule of the data it trains on (``fn(cfg, schedules)``, :class:`lotto.config.Schedules`); ``cli`` and
    ``claims``: its subcommand and claims modules (``register(add, common)``; ``CLAIMS``, ``evaluate``).
    """

    name: str
    package: str
    title: str
    paper: str
    papers: tuple[Paper, ...]
    figures: tuple[Figure, ...]
    figures_target: str
    tables: tuple[tuple[str, str], ...] = ()
    display: str = ""
    names: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    context: str = ""
    problems: str = ""
    schedule_problems: str = ""
    cli_module: str = ""
    claims_module: str = ""

    @property
    def cli(self) -> str:
        return self.cli_module or f"{self.package}.cli"

    @property
    def claims(self) -> str:
        return self.claims_module or f"{self.package}.claims"

    @property
    def schema_path(self) -> Path:
        """The JSON schema (YAML) of the family's config section, beside its package."""
        return Path(importlib.import_module(self.package).__file__).parent / "schema.yaml"

    def figure_names(self) -> list[str]:
        return [f.name for f in self.figures]

    def figure(self, name: str) -> Figure:
        for f in self.figures:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no figure {name!r}; it has {', '.join(self.figure_names())}")

    def figure_context(self, cfg: dict) -> dict:
        return dict(_resolve(self.context)(cfg)) if self.context else {}

    def check(self, cfg: dict) -> list[str]:
        """The family's own problems with a validated config (empty when its section is fine)."""
        return list(_resolve(self.problems)(cfg)) if self.problems else []

    def check_schedules(self, cfg: dict, schedules) -> None:
        """Add the family's problems with the schedule of a whole config to ``schedules.problems``."""
        if self.schedule_problems:
            _resolve(self.schedule_problems)(cfg, schedules)


def _resolve(target: str) -> Callable:
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)
