"""The one registry of experiment families: the packages that export a :class:`lotto.family.Family` as ``FAMILY``.

Adding a family = its package ``lotto/<name>/`` (spec, CLI, claims, schema), its rule file
``workflow/rules/<name>.smk`` and one line below (docs/ARCHITECTURE.md). Nothing else in lotto names a family.
No heavy imports: the Snakefile, the config check and the ``lotto`` CLI all read it.
"""

from __future__ import annotations

import importlib

from lotto.family import Family

#: the packages of the experiment families, in the order the report and the claims table list them
PACKAGES = (
    "lotto.composability",
    "lotto.zoo",
    "lotto.imp",
)


def _load(packages) -> dict[str, Family]:
    out: dict[str, Family] = {}
    for package in packages:
        spec = getattr(importlib.import_module(package), "FAMILY", None)
        if not isinstance(spec, Family):
            raise TypeError(f"{package} does not export a lotto.family.Family as FAMILY")
        if spec.name in out:
            raise ValueError(f"two families are named {spec.name!r}: {out[spec.name].package} and {package}")
        out[spec.name] = spec
    return out


FAMILIES: dict[str, Family] = _load(PACKAGES)
