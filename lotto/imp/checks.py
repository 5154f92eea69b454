"""The imp section's checks beyond its schema (lotto/imp/schema.yaml), each problem naming its config key.
Import-light: the config check runs at the Snakefile's parse time."""

from __future__ import annotations


def problems(cfg: dict) -> list[str]:
    imp = cfg["imp"]
    problems = []
    betas = imp["beta_grid"]
    if betas != sorted(betas) or betas[0] != 0 or betas[-1] != 1:
        problems.append("config key 'imp.beta_grid': must be increasing, from 0 to 1 (both endpoints included)")
    pres = set(imp["pretrain_steps"])
    subsets = [("imp.pairwise_pretrain_steps", imp["pairwise_pretrain_steps"]),
               ("imp.slice.pretrain_steps", imp["slice"]["pretrain_steps"]),
               ("imp.adaptive.pretrain_steps", imp["adaptive"]["pretrain_steps"])]
    for key, value in subsets:
        extra = sorted(set(value or []) - pres)
        if extra:
            problems.append(f"config key '{key}': {extra} not in imp.pretrain_steps {sorted(pres)}")
    for i, level in enumerate(imp["slice"]["levels"]):
        if level + 1 >= imp["levels"]:
            problems.append(
                f"config key 'imp.slice.levels[{i}]': level {level} needs level {level + 1}, "
                f"but imp.levels = {imp['levels']} trains levels 0..{imp['levels'] - 1}"
            )
    return problems


def schedule_problems(cfg: dict, schedules) -> None:
    """Every rewind point inside the training schedule of the main task."""
    schedules.rewind_points(cfg, "imp")
