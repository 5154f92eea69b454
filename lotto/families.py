"""The one registry of experiment families. No heavy imports: the Snakefile, the config schema check and the
``lotto`` CLI all read it.

A family is a subpackage ``lotto/<name>/`` (its ``__init__`` lists ``FIGURES`` without importing anything
heavy; ``cli.register(add, common)`` adds its subcommands; ``claims.evaluate(paths, cfg)`` checks its papers' claims),
a rule file ``workflow/rules/<name>.smk`` and a
top-level config section ``<name>:`` marked ``x-family: true`` in the schema. Adding a family = those three
plus one line here (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str  # config section, subpackage and rule file name
    paper: str

    @property
    def package(self) -> str:
        return f"lotto.{self.name}"

    @property
    def cli(self) -> str:
        return f"lotto.{self.name}.cli"

    @property
    def claims(self) -> str:
        """Module whose ``evaluate(paths, cfg)`` checks the family's papers' claims (``lotto claims``)."""
        return f"lotto.{self.name}.claims"

    def figures(self) -> dict[str, str]:
        """figure name -> what it shows, from the family's import-light package."""
        return dict(importlib.import_module(self.package).FIGURES)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("composability", "Movva, Frankle & Carbin (2021)"),
        Family("zoo", "Paganini & Forde (2020)"),
        Family("imp", "Paul et al. (2022)"),
    )
}
