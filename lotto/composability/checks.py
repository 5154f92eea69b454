"""The composability section's checks beyond its schema (lotto/composability/schema.yaml): what the schema cannot
say, each problem naming its config key. Import-light: the config check runs at the Snakefile's parse time."""

from __future__ import annotations


def problems(cfg: dict) -> list[str]:
    problems: list[str] = []
    comp = {"sparsities": [], "ks": [2], "baseline_sibling": 1, **cfg["composability"]}  # (a partial config)
    for i, s in enumerate(comp["sparsities"]):
        if round(s, 4) != s:
            problems.append(
                f"config key 'composability.sparsities[{i}]': {s} has more than 4 decimals "
                "(sparsities name result paths with 4 decimals)"
            )
    if "ks" in comp and 2 not in comp["ks"]:
        problems.append("config key 'composability.ks': must include 2 (figures 1a and 2a/2b compare pairs)")
    siblings = comp.get("siblings") or max(comp["ks"])
    if siblings < max(comp["ks"]):
        problems.append(
            f"config key 'composability.siblings': {siblings} siblings cannot make compositions of "
            f"max(composability.ks) = {max(comp['ks'])}; use at least {max(comp['ks'])} (or null)"
        )
    if comp["baseline_sibling"] > siblings:
        problems.append(
            f"config key 'composability.baseline_sibling': {comp['baseline_sibling']} exceeds the number "
            f"of siblings trained ({siblings}: composability.siblings, or max of composability.ks)"
        )
    for i, op in enumerate(comp.get("ops", [])):
        m = int(op[4:]) if op.startswith("vote") else None  # the schema's pattern admits vote<m>, m >= 1
        if m is not None and m > max(comp["ks"]):
            problems.append(
                f"config key 'composability.ops[{i}]': {op} keeps what at least {m} sibling masks keep, but at "
                f"most max(composability.ks) = {max(comp['ks'])} are composed; valid: vote1..vote{max(comp['ks'])}"
            )
    return problems


def schedule_problems(cfg: dict, schedules) -> None:
    """Every rewind point inside the training schedule of the main task."""
    schedules.rewind_points(cfg, "composability")
