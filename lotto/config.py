"""Configuration: load YAML/JSON, fill schema defaults, validate with errors that name the key.

No torch here: the Snakefile validates the config with this module at parse time.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).with_name("schemas") / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


def _registry_names(name: str) -> list[str]:
    """Names in one of lotto's registries (each importable without torch)."""
    if name == "pruning_methods":
        from lotto.pruning import method_names

        return method_names()
    raise KeyError(f"the schema names an unknown registry {name!r}")


def _resolve_registries(node) -> None:
    """Fill ``x-registry: R`` (-> enum) and ``x-default-registry: R`` (-> default: every name) from the code's
    registries, so that adding e.g. a pruning method needs no schema edit."""
    if isinstance(node, dict):
        if "x-registry" in node:
            node["enum"] = _registry_names(node.pop("x-registry"))
        if "x-default-registry" in node:
            node["default"] = _registry_names(node.pop("x-default-registry"))
        for value in node.values():
            _resolve_registries(value)
    elif isinstance(node, list):
        for value in node:
            _resolve_registries(value)


def load_schema() -> dict:
    with open(SCHEMA_PATH) as fh:
        schema = yaml.safe_load(fh)
    _resolve_registries(schema)
    return schema


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _fill_defaults(instance: Any, schema: dict) -> None:
    if not isinstance(instance, dict) or schema.get("type") != "object":
        return
    for name, sub in schema.get("properties", {}).items():
        if name not in instance and "default" in sub:
            instance[name] = copy.deepcopy(sub["default"])
        if name in instance:
            _fill_defaults(instance[name], sub)


def _describe(error) -> str:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        where = _key(path)
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        keys = ", ".join(f"'{_key(path + [e])}'" for e in extra)
        return f"unknown config key {keys} (allowed in {where}: {allowed})"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"missing config key '{_key(path + [missing])}'"
    if error.validator == "enum":
        choices = ", ".join(repr(c) for c in error.validator_value)
        return f"config key '{_key(path)}': {error.instance!r} is not one of {choices}"
    return f"config key '{_key(path)}': {error.message}"


def validate(config: dict, partial: bool = False) -> dict:
    """Return a validated copy of ``config`` with defaults filled; raise ConfigError naming each bad key.

    ``partial``: the top-level sections may be missing (rules hand each CLI call only the sections it
    uses, so that editing an unrelated key does not rerun it).
    """
    import jsonschema

    if not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping of keys to values, got {type(config).__name__}")
    cfg = copy.deepcopy(config)
    schema = load_schema()
    if partial:
        schema["required"] = []
    _fill_defaults(cfg, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_describe(e) for e in errors))
    _check_semantics(cfg, partial)
    return cfg


def families(schema: dict | None = None) -> list[str]:
    """The experiment-family sections the schema knows (every top-level section marked `x-family`)."""
    schema = schema or load_schema()
    return [k for k, v in schema["properties"].items() if isinstance(v, dict) and v.get("x-family")]


def _check_semantics(cfg: dict, partial: bool = False) -> None:
    problems = []
    known = families()
    if not partial and not any(f in cfg for f in known):
        problems.append(
            "the config names no experiment: add at least one of the sections " + ", ".join(f"'{f}'" for f in known)
        )
    comp = cfg.get("composability", {"sparsities": [], "ks": [2], "baseline_sibling": 1})
    for i, s in enumerate(comp["sparsities"]):
        if round(s, 4) != s:
            problems.append(
                f"config key 'composability.sparsities[{i}]': {s} has more than 4 decimals "
                "(sparsities name result paths with 4 decimals)"
            )
    if "ks" in comp and 2 not in comp["ks"]:
        problems.append("config key 'composability.ks': must include 2 (figures 1a and 2a/2b compare pairs)")
    if comp["baseline_sibling"] > max(comp["ks"]):
        problems.append(
            f"config key 'composability.baseline_sibling': {comp['baseline_sibling']} exceeds the number "
            f"of siblings trained (max of composability.ks = {max(comp['ks'])})"
        )
    if "imp" in cfg:
        problems += _imp_problems(cfg["imp"])
    if "zoo" in cfg:
        problems += _zoo_problems(cfg["zoo"], cfg.get("data"))
    data = cfg.get("data", {"source": "embedded", "dataset": "mnist_embedded", "path": None})
    if data["source"] == "local" and not data.get("path"):
        problems.append("config key 'data.path': required when data.source is 'local'")
    if data["source"] == "embedded" and data["dataset"] != "mnist_embedded":
        problems.append(
            f"config key 'data.source': 'embedded' only serves dataset 'mnist_embedded', not {data['dataset']!r}"
        )
    if data["dataset"] == "mnist_embedded" and data["source"] != "embedded":
        problems.append("config key 'data.source': dataset 'mnist_embedded' needs source 'embedded'")
    ms = cfg.get("training", {}).get("milestones", [])
    if ms != sorted(ms):
        problems.append("config key 'training.milestones': must be increasing")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def _imp_problems(imp: dict) -> list[str]:
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


# classes per dataset (lotto.data.NUM_CLASSES imports torch): zoo tasks share one output layer
_ZOO_CLASSES = {"emnist": 47, "cifar100": 100}


def _zoo_problems(zoo: dict, data: dict | None) -> list[str]:
    problems = []
    main = zoo.get("main_task") or (data or {}).get("dataset")
    names = [main] + [t["name"] for t in zoo["tasks"]]
    for i, task in enumerate(zoo["tasks"]):
        key = f"zoo.tasks[{i}]"
        if names.count(task["name"]) > 1:
            problems.append(f"config key '{key}.name': task name {task['name']!r} is used twice "
                            f"(the main task is called {main!r}: see zoo.main_task)")
        source = task.get("source", "torchvision")  # defaults are not filled inside lists
        if source == "local" and not task.get("path"):
            problems.append(f"config key '{key}.path': required when its source is 'local'")
        if (source == "embedded") != (task["dataset"] == "mnist_embedded"):
            problems.append(f"config key '{key}.source': source 'embedded' serves exactly dataset 'mnist_embedded'")
        if data and _ZOO_CLASSES.get(task["dataset"], 10) != _ZOO_CLASSES.get(data["dataset"], 10):
            problems.append(
                f"config key '{key}.dataset': {task['dataset']!r} has {_ZOO_CLASSES.get(task['dataset'], 10)} "
                f"classes but the main task data.dataset {data['dataset']!r} has "
                f"{_ZOO_CLASSES.get(data['dataset'], 10)} (tickets move between tasks with one output layer)"
            )
    transfer = zoo["transfer"]
    uses_rewind_t = "rewind_t" in zoo["handlings"] or transfer["handling"] == "rewind_t"
    if uses_rewind_t and zoo["rewind_step"] == 0:
        problems.append("config key 'zoo.rewind_step': must be > 0 when the handling 'rewind_t' is used "
                        "(rewinding to step 0 is rewind_init)")
    m = transfer["consensus_min"]
    if m is not None and m > len(names):
        problems.append(f"config key 'zoo.transfer.consensus_min': {m} exceeds the number of tasks ({len(names)})")
    eh = zoo["ensemble_handling"]
    if eh is not None and eh not in zoo["handlings"]:
        problems.append(f"config key 'zoo.ensemble_handling': {eh!r} is not one of zoo.handlings")
    return problems


def load(path_or_json: str | Path, partial: bool = False) -> dict:
    """Load a config from a YAML/JSON file, or from an inline JSON object string, and validate it."""
    text = str(path_or_json)
    if text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"inline config is not valid JSON: {exc}") from None
    else:
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    return validate(raw or {}, partial=partial)


def section_json(cfg: dict, *sections: str) -> str:
    """A canonical JSON string of the named sections (used as rule params: a change reruns the rule)."""
    return json.dumps({k: cfg[k] for k in sections}, sort_keys=True, separators=(",", ":"))
