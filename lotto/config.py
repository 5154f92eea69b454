"""Configuration: load YAML/JSON, fill schema defaults, validate with errors that name the key.

No torch here: the Snakefile validates the config with this module at parse time (``validate_workflow``),
so every mistake that is knowable from the config alone is refused before any job runs: wrong types and
unknown keys (the JSON schema), NaN/infinity, rewind points past the end of the schedule, milestones past
``training.epochs``, schedules of 0 steps, train/test/batch sizes larger than the data set (from the
catalog ``lotto.datasets``), a model the images are too small for or whose input channels they lack (from the
catalog ``lotto.architectures``), a local ``data.path`` that does not exist, duplicate keys in a config file.
The schema's lists of data sets, models, pruning methods and handlings are filled from their catalogs.
"""

from __future__ import annotations

import copy
import importlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from lotto.datasets import CATALOG, validation_count

SCHEMA_PATH = Path(__file__).with_name("schemas") / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


def _registry_names(ref: str) -> list[str]:
    """The names in the catalog ``ref``, ``"module:attribute"``: a mapping of name -> entry in a lotto module
    (``lotto.datasets:CATALOG``, ``lotto.pruning:METHODS``, ...). Every catalog imports without torch: the
    Snakefile validates its config with them at parse time."""
    module, _, attribute = str(ref).partition(":")
    if module.split(".")[0] != "lotto" or not attribute:
        raise KeyError(f"the schema names {ref!r} as a registry; expected 'lotto.<module>:<attribute>'")
    return list(getattr(importlib.import_module(module), attribute))


def _registry_properties(name: str) -> dict:
    """The properties of an object the code's registries define (``x-registry-properties: R``)."""
    if name == "claim_margins":
        return {c.id: {"type": "number", "minimum": 0, "default": c.margin,
                       "description": f"{c.kind}; {c.effect}. Why {c.margin:g}: {c.margin_why}"}
                for c in all_claims() if c.margin is not None}
    raise KeyError(f"the schema names an unknown registry {name!r}")


def all_claims() -> list:
    """Every claim of every registered family (their claims modules are import-light)."""
    from lotto.families import FAMILIES

    out = []
    for family in FAMILIES.values():
        out += list(importlib.import_module(family.claims).CLAIMS)
    return out


#: keys of the claims section before verdicts had intervals (a fixed tolerance on point estimates), and what
#: replaced them: refused with that hint, so an old config fails with a sentence rather than a key list
RETIRED_CLAIMS_KEYS = {
    "accuracy_tolerance": "claims.margins.<claim id>, one margin per claim in its effect's units",
    "overlap_tolerance": "claims.margins.<claim id> of the overlap claims",
    "jaccard_tolerance": "claims.margins.<claim id> of the mask-similarity claims",
    "barrier_tolerance": "nothing: a claim whose threshold comes from the data (an epsilon over replicates) needs none",
    "min_agreement": "nothing: an iff claim judges every cell with intervals",
}


def _resolve_registries(node) -> None:
    """Fill ``x-registry: R`` (-> enum, after the values an ``enum`` beside it lists, e.g. null),
    ``x-default-registry: R`` (-> default: every name) and ``x-registry-properties: R`` (-> properties, with their
    defaults) from the code's catalogs, so that adding e.g. a model, a pruning method or a claim needs no schema
    edit."""
    if isinstance(node, dict):
        if "x-registry-properties" in node:
            node["properties"] = _registry_properties(node.pop("x-registry-properties"))
            node["additionalProperties"] = False
        if "x-registry" in node:
            node["enum"] = list(node.get("enum", [])) + _registry_names(node.pop("x-registry"))
        if "x-default-registry" in node:
            node["default"] = _registry_names(node.pop("x-default-registry"))
        for value in node.values():
            _resolve_registries(value)
    elif isinstance(node, list):
        for value in node:
            _resolve_registries(value)


def load_schema() -> dict:
    """lotto's config schema: the core sections of schemas/config.schema.yaml, with every registered family's own
    section (``lotto/<family>/schema.yaml``) after ``training``, marked ``x-family``."""
    from lotto.families import FAMILIES

    with open(SCHEMA_PATH) as fh:
        schema = yaml.safe_load(fh)
    families = {}
    for name, family in FAMILIES.items():
        with open(family.schema_path) as fh:
            families[name] = {"x-family": True, **yaml.safe_load(fh)}
    core = schema["properties"]
    at = list(core).index("training") + 1
    schema["properties"] = {**dict(list(core.items())[:at]), **families, **dict(list(core.items())[at:])}
    _resolve_registries(schema)
    return schema


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


# ------------------------------------------------------------------------------------------------------------
# reading config files
# ------------------------------------------------------------------------------------------------------------

# YAML 1.2 number forms that YAML 1.1 (PyYAML, Snakemake) reads as strings: an exponent without a dot or
# without a sign (1e-3, 5E4, 1.0e5). Researchers write learning rates this way all the time.
_YAML12_EXP_FLOAT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2 exponent floats. Otherwise YAML 1.1 on purpose, like Snakemake's
    loader, so that a file means the same to ``lotto validate`` and to the Snakefile."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_EXP_FLOAT, list("-+0123456789."))


def _display(path) -> str:
    """``path`` relative to the working directory when it lies below it (Snakemake hands absolute paths)."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve())) if p.is_absolute() else str(p)
    except ValueError:
        return str(p)


def _check_duplicate_keys(node, where: str, path=(), seen_nodes=None) -> None:
    """Refuse a mapping that repeats a key: YAML loaders keep the last one silently (a second ``training:``
    block would replace the first, and the run would take defaults the user never asked for)."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:  # an alias of a node already checked (also guards recursive anchors)
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.start_mark)
            line = key_node.start_mark.line + 1
            if name in first:
                dotted = _key([*path, name])
                raise ConfigError(
                    f"config file {where}, line {line}: duplicate key '{dotted}' (first given at line {first[name]}); "
                    "a YAML/JSON loader silently keeps only the last one: merge the two or delete one"
                )
            first[name] = line
            _check_duplicate_keys(value_node, where, (*path, name), seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, where, (*path, i), seen_nodes)


def _yaml_error(where: str, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = f", line {mark.line + 1}" if mark is not None else ""
    what = " ".join(str(x) for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x) or str(exc)
    ctx = getattr(exc, "context_mark", None)
    if ctx is not None and mark is not None and ctx.line != mark.line:
        what += f" (the construct began at line {ctx.line + 1})"
    return ConfigError(f"config file {where}{line}: not valid YAML: {what}; check the indentation (spaces, "
                       "no tabs), brackets and quotes there")


def _no_duplicate_pairs(where: str):
    def hook(pairs):
        out = {}
        for k, v in pairs:
            if k in out:
                raise ConfigError(f"{where}: duplicate key '{k}': a JSON loader silently keeps only the last one: "
                                  "merge the two or delete one")
            out[k] = v
        return out
    return hook


def read_config_file(path) -> dict:
    """The mapping in the YAML/JSON file ``path``; refuses syntax errors, empty files and duplicate keys,
    naming the file and the line."""
    where = _display(path)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {where}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {where}: cannot be read ({exc})") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_duplicate_keys(node, where)
            data = loader.construct_document(node)
        else:
            data = None
    except yaml.YAMLError as exc:
        # JSON that PyYAML cannot read (tabs as indentation, say) is still a config: Snakemake reads JSON first
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicate_pairs(f"config file {where}"))
        except json.JSONDecodeError:
            raise _yaml_error(where, exc) from None
    finally:
        loader.dispose()
    if data is None:
        raise ConfigError(f"config file {where}, line 1: the file is empty (or holds only comments); "
                          "a config is a mapping of keys to values, starting with e.g. `experiment: my-run`")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {where}, line 1: the top level must be a mapping of keys to values "
                          f"(experiment:, data:, model:, ...), not a {type(data).__name__}")
    return data


# ------------------------------------------------------------------------------------------------------------
# values: number-like strings, NaN/infinity
# ------------------------------------------------------------------------------------------------------------

_INT = re.compile(r"^[-+]?[0-9]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_NULLS = {"null", "Null", "NULL", "~"}


def _types(schema: dict) -> set[str]:
    if "enum" in schema:
        names = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string"}
        return {names.get(type(v), "other") for v in schema["enum"]}
    t = schema.get("type")
    return set() if t is None else ({t} if isinstance(t, str) else set(t))


def _number(text: str):
    s = text.strip()
    if _INT.match(s):
        return int(s)
    if _FLOAT.match(s):
        return float(s)
    if _INF.match(s):
        return -math.inf if s.startswith("-") else math.inf
    if _NAN.match(s):
        return math.nan
    return None


def _coerce(value: Any, schema: dict) -> Any:
    """``value`` with strings read as the numbers/booleans/nulls they spell where the schema wants one.

    Snakemake reads config files with YAML 1.1 (``1e-3`` is a string there) and ``--config`` values nested in
    a mapping as plain strings; a quoted ``"1e-3"`` means the number too. Integral floats become ints where
    the schema wants an integer (``pretrain_steps: [5.0e2]`` must name ``pre500``, not ``pre500.0``).
    """
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: _coerce(v, props.get(k, {})) for k, v in value.items()}
    if isinstance(value, list):
        items = schema.get("items")
        return [_coerce(v, items) for v in value] if isinstance(items, dict) else value
    types = _types(schema)
    if isinstance(value, str):
        declared = schema.get("type")
        wants_string = declared == "string" or (isinstance(declared, list) and "string" in declared)
        if not types or wants_string or value in schema.get("enum", ()):
            return value
        num = _number(value)
        if num is not None and types & {"number", "integer"}:
            value = num
        elif value in _BOOLS and "boolean" in types:
            return _BOOLS[value]
        elif value.strip() in _NULLS and "null" in types:
            return None
        else:
            return value
    if (isinstance(value, float) and value.is_integer() and "integer" in types and "number" not in types):
        return int(value)
    return value


def _expect(schema: dict) -> str:
    """What the schema accepts, in words (for the 'valid: ...' part of a message)."""
    if "enum" in schema:
        return "one of " + ", ".join(repr(c) for c in schema["enum"])
    parts = []
    for ty in sorted(_types(schema), key=["integer", "number", "string", "boolean", "array", "object", "null"].index):
        if ty in ("integer", "number"):
            bounds = [f"{op} {schema[k]}" for k, op in (("minimum", ">="), ("exclusiveMinimum", ">"),
                                                       ("maximum", "<="), ("exclusiveMaximum", "<")) if k in schema]
            parts.append(("an integer" if ty == "integer" else "a finite number") + (" " + " and ".join(bounds) if bounds else ""))
        else:
            parts.append({"string": "a string", "boolean": "true or false", "array": "a list",
                          "object": "a mapping", "null": "null"}[ty])
    return " or ".join(parts) or "see lotto/schemas/config.schema.yaml"


def _non_finite(value: Any, schema: dict, path=()) -> list[str]:
    """Every NaN/infinity in ``value``: JSON-schema range checks are false for NaN, so they would pass."""
    schema = schema if isinstance(schema, dict) else {}
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return [p for k, v in value.items() for p in _non_finite(v, props.get(k, {}), (*path, k))]
    if isinstance(value, list):
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        return [p for i, v in enumerate(value) for p in _non_finite(v, items, (*path, i))]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"config key '{_key(path)}': {value} is not a finite number (NaN and infinity are never valid); "
                f"valid: {_expect(schema) if _types(schema) else 'a finite number'}"]
    return []


# ------------------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------------------


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
    if error.validator in ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"config key '{_key(path)}': {error.message}; valid: {_expect(error.schema)}"
    if error.validator == "pattern" and "x-valid" in error.schema:
        return f"config key '{_key(path)}': {error.instance!r} is not valid; valid: {error.schema['x-valid']}"
    if error.validator == "pattern":
        return f"config key '{_key(path)}': {error.instance!r} has characters that are not allowed; valid: " \
               f"a string matching {error.validator_value} (a name used in paths)"
    return f"config key '{_key(path)}': {error.message}"


def validate(config: dict, partial: bool = False, check_paths: bool | None = None) -> dict:
    """Return a validated copy of ``config`` with defaults filled; raise ConfigError naming each bad key.

    ``partial``: the top-level sections may be missing (rules hand each CLI call only the sections it
    uses, so that editing an unrelated key does not rerun it). The checks across sections (sizes against
    the data set, rewind points against the schedule) run only on whole configs, which the Snakefile
    validates before any job.
    ``check_paths``: refuse a local ``data.path`` (or a family's data set's path) that does not exist (relative to
    the working directory); default: on for whole configs.
    """
    import jsonschema

    if not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping of keys to values, got {type(config).__name__}")
    retired = [k for k in (config.get("claims") or {}) if k in RETIRED_CLAIMS_KEYS] \
        if isinstance(config.get("claims"), dict) else []
    if retired:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(
            f"config key 'claims.{k}' is retired: verdicts now come from confidence intervals judged against "
            f"per-claim margins (docs/claims.md); use {RETIRED_CLAIMS_KEYS[k]}" for k in retired))
    schema = load_schema()
    cfg = _coerce(copy.deepcopy(config), schema)
    bad = _non_finite(cfg, schema)
    if bad:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(bad))
    explicit = copy.deepcopy(cfg)  # before defaults: some checks concern only what the user wrote
    if partial:
        schema["required"] = []
    _fill_defaults(cfg, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_describe(e) for e in errors))
    _check_semantics(cfg, partial)
    if not partial:
        problems = _whole_config_problems(cfg, explicit, check_paths=True if check_paths is None else check_paths)
        if problems:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return cfg


def families(schema: dict | None = None) -> list[str]:
    """The experiment-family sections of the schema (the registered families', marked `x-family`)."""
    schema = schema or load_schema()
    return [k for k, v in schema["properties"].items() if isinstance(v, dict) and v.get("x-family")]


def _check_semantics(cfg: dict, partial: bool = False) -> None:
    problems = []
    known = families()
    if not partial and not any(f in cfg for f in known):
        problems.append(
            "the config names no experiment: add at least one of the sections " + ", ".join(f"'{f}'" for f in known)
        )
    claims = cfg.get("claims", {})
    if claims.get("random_ticket_min_sparsity", 0.0) >= claims.get("random_ticket_max_sparsity", 1.0):
        problems.append(
            f"config key 'claims.random_ticket_min_sparsity': {claims['random_ticket_min_sparsity']} must be "
            f"below claims.random_ticket_max_sparsity ({claims['random_ticket_max_sparsity']})"
        )
    from lotto.families import FAMILIES

    for name, family in FAMILIES.items():  # each family checks its own section (lotto/<family>/checks.py)
        if name in cfg:
            problems += family.check(cfg)
    data = cfg.get("data", {"source": "embedded", "dataset": "mnist_embedded", "path": None})
    if data["source"] == "local" and not data.get("path"):
        problems.append("config key 'data.path': required when data.source is 'local'")
    if data["source"] == "embedded" and data["dataset"] != "mnist_embedded":
        problems.append(
            f"config key 'data.source': 'embedded' only serves dataset 'mnist_embedded', not {data['dataset']!r}"
        )
    if data["dataset"] == "mnist_embedded" and data["source"] != "embedded":
        problems.append("config key 'data.source': dataset 'mnist_embedded' needs source 'embedded'")
    res = cfg.get("resources", {})
    if res.get("trainings_per_gpu", 1) > 1 and res.get("train_gpus", 1) != 1:
        problems.append(
            f"config key 'resources.trainings_per_gpu': {res['trainings_per_gpu']} trainings share one GPU, which "
            f"needs resources.train_gpus: 1 (it is {res['train_gpus']}); set trainings_per_gpu: 1 for "
            f"{'CPU-only' if res['train_gpus'] == 0 else 'multi-GPU'} training jobs"
        )
    ms = cfg.get("training", {}).get("milestones", [])
    if ms != sorted(ms):
        problems.append("config key 'training.milestones': must be increasing")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


# --- checks across sections: data set sizes, the schedule, paths ---------------------------------------------


def schedule_steps(num_train: int, batch_size: int, epochs: float) -> tuple[int, int]:
    """(steps per epoch, total steps) exactly as ``lotto.train.Schedule.from_config`` computes them."""
    spe = math.ceil(num_train / batch_size)
    return spe, int(round(epochs * spe))


class _Task:
    """One data set a schedule runs on: the main task (``data``) or a family's own data set, with what is known of its size."""

    def __init__(self, label: str, key: str, spec: dict, vfrac: float, check_paths: bool):
        self.label, self.key = label, key  # e.g. "the main task", "data"
        self.problems: list[str] = []
        dataset, source, path = spec["dataset"], spec.get("source") or "torchvision", spec.get("path")
        info = CATALOG[dataset]
        exists = bool(path) and Path(path).exists()
        if source == "local" and path and check_paths and not exists:
            self.problems.append(
                f"config key '{key}.path': {str(path)!r} does not exist (a relative path is read from the working "
                f"directory, {os.getcwd()}); valid: an .npz file with x_train/y_train/x_test/y_test, or a "
                "directory in torchvision's layout, with train.npz/test.npz, or with MNIST-style idx files"
            )
        # The full split's size: the catalog's, except for a local .npz (or train.npz/test.npz directory),
        # which may hold any number of images: unknown before staging, so nothing is said about it.
        arbitrary = source == "local" and (not exists or Path(path).is_file() or (Path(path) / "train.npz").exists())
        # what its images are like before conversion: the catalog's, except for such a file (any shape)
        self.dataset, self.native = dataset, None if arbitrary else (info.image_size, info.channels)
        full_train = None if arbitrary else info.train
        full_test = None if arbitrary else info.test
        n_val = validation_count(full_train, vfrac) if full_train is not None else 0
        avail_train = None if full_train is None else full_train - n_val
        avail_test = None if full_test is None else (n_val if vfrac > 0 else full_test)
        origin = f"{dataset} has {info.train:,} training and {info.test:,} test images"
        carve = (f"; data.validation_fraction = {vfrac:g} carves {n_val:,} of the training images off as the "
                 "evaluation set") if vfrac > 0 else ""
        self.num_train = spec.get("train_size")
        if self.num_train is None:
            self.num_train = avail_train
            self.size_note = f"all {avail_train:,} training images of {dataset}" if avail_train is not None else ""
        else:
            self.size_note = f"{key}.train_size = {self.num_train:,}"
            if avail_train is not None and self.num_train > avail_train:
                self.problems.append(
                    f"config key '{key}.train_size': {self.num_train:,} is larger than the training set "
                    f"({origin}{carve}, leaving {avail_train:,}); valid: 1..{avail_train} or null (all)")
                self.num_train = None  # staging would fail; no schedule to check against
        test_size = spec.get("test_size")
        if test_size is not None and avail_test is not None and test_size > avail_test:
            what = "validation split" if vfrac > 0 else "test set"
            self.problems.append(
                f"config key '{key}.test_size': {test_size:,} is larger than the {what} ({origin}{carve}); "
                f"valid: 1..{avail_test} or null (all)")


def _model_input_problems(cfg: dict, tasks: list[_Task]) -> list[str]:
    """The configured model against the images of every task, as staged (data.image_size and data.channels
    convert every task alike): refused here rather than in the first job that builds the network. A local file
    of unknown image shape is checked once staged (``lotto init`` builds the network on its images)."""
    from lotto.architectures import CATALOG as MODELS, takes

    name, data = cfg["model"]["name"], cfg["data"]
    arch = MODELS[name]
    size, channels = data.get("image_size"), data.get("channels")
    problems = []
    for task in tasks:
        if task.native is None and size is None:
            continue
        s = size or task.native[0]
        c = channels or (task.native[1] if task.native else None)  # None: a local file's, unknown until staged
        problem = arch.input_problem(s, c)
        if problem is None:
            continue
        own = f"{task.dataset}'s own"
        if s < arch.min_image_size:
            key = "data.image_size" if size else "model.name"
            given = f"are {s}x{s} pixels ({'data.image_size' if size else own + ' size; data.image_size is not set'})"
            fix = f"data.image_size >= {arch.min_image_size} (images are resized when staged)"
        else:
            key = "data.channels" if channels else "model.name"
            given = f"have {c} channel(s) ({'data.channels' if channels else own + '; data.channels is not set'})"
            fix = f"data.channels: {' or '.join(map(str, arch.channels))} (images are converted when staged)"
        others = [n for n in takes(s, c) if n != name]
        line = (f"config key '{key}': {problem}, but the images of {task.label} {given}; valid: {fix}"
                + (f", or a model that takes them: {', '.join(others)}" if others else ""))
        if line not in problems:
            problems.append(line)
    return problems


class Schedules:
    """The training schedule on each data set a whole config trains on, for checks that a step (a rewind point,
    a finetuning start) lies inside it. The main task (``data``) is there from the start; a family that trains
    on more data sets adds them (:meth:`add_task`) before asking (:meth:`beyond`).
    ``problems`` collects what is wrong, each naming its config key."""

    def __init__(self, cfg: dict, check_paths: bool):
        tr = cfg["training"]
        self.epochs, self.batch_size = tr["epochs"], tr["batch_size"]
        self.vfrac = float(cfg["data"].get("validation_fraction") or 0.0)
        self.check_paths = check_paths
        self.problems: list[str] = []
        self.all: list[_Task] = []  # every data set, in the order added
        self.tasks: dict[str, tuple[_Task, int, int] | None] = {}  # key -> (task, steps per epoch, total) or None
        self.add_task("the main task", "data", cfg["data"])

    def add_task(self, label: str, key: str, spec: dict) -> None:
        """A data set trained with the config's schedule: its sizes are checked, its schedule computed."""
        task = _Task(label, key, spec, self.vfrac, self.check_paths)
        self.all.append(task)
        self.problems += task.problems
        self.tasks[key] = None
        bs, epochs = self.batch_size, self.epochs
        if task.num_train is None:
            return
        if bs > task.num_train:
            self.problems.append(
                f"config key 'training.batch_size': {bs} is larger than the training set of {task.label} "
                f"({task.size_note}); valid: 1..{task.num_train}")
        spe, total = schedule_steps(task.num_train, bs, epochs)
        if total == 0:
            self.problems.append(
                f"config key 'training.epochs': {epochs:g} epochs of {spe} steps ({task.size_note}, batch_size {bs}) "
                f"round to a schedule of 0 steps on {task.label}; valid: at least {1 / spe:.4g} (one step)")
            return
        self.tasks[key] = (task, spe, total)

    def rewind_points(self, cfg: dict, section: str) -> None:
        """Every rewind point of a family that pretrains to ``<section>.pretrain_steps`` (core.smk's pretrain)
        inside the schedule of the main task."""
        for i, t in enumerate(cfg[section]["pretrain_steps"]):
            self.beyond(f"{section}.pretrain_steps[{i}]", t, "rewind point")

    def beyond(self, key: str, step: int, what: str, task_keys: Iterable[str] = ("data",)) -> None:
        """A problem when ``step`` (config key ``key``, a ``what``) is at or past the end of the schedule on any
        of the data sets ``task_keys``."""
        for tk in task_keys:
            entry = self.tasks.get(tk)
            if entry is None:
                continue
            task, spe, total = entry
            if step >= total:
                self.problems.append(
                    f"config key '{key}': {what} {step} is at or beyond the end of the schedule on {task.label}: "
                    f"{self.epochs:g} epochs x {spe} steps ({task.size_note}, batch_size {self.batch_size}) = "
                    f"{total} steps; valid: 0..{total - 1}")
                return


def _whole_config_problems(cfg: dict, explicit: dict, check_paths: bool) -> list[str]:
    from lotto.families import FAMILIES

    problems = []
    epochs = cfg["training"]["epochs"]
    ms = (explicit.get("training") or {}).get("milestones")  # the defaults (80, 120) go with the default 160 epochs
    for i, m in enumerate(ms or []):
        if m >= epochs:
            problems.append(
                f"config key 'training.milestones[{i}]': {m:g} is at or beyond the end of training "
                f"(training.epochs = {epochs:g}), so the learning rate would never drop there; "
                f"valid: epochs below {epochs:g}, or [] for a constant learning rate")
    schedules = Schedules(cfg, check_paths)
    for name, family in FAMILIES.items():  # each family checks its steps against the schedule it trains on
        if name in cfg:
            family.check_schedules(cfg, schedules)
    return problems + _model_input_problems(cfg, schedules.all) + schedules.problems


# ------------------------------------------------------------------------------------------------------------
# entry points
# ------------------------------------------------------------------------------------------------------------


def fold_dotted_keys(config: Mapping) -> dict:
    """A copy of ``config`` with top-level keys like ``"training.epochs": 2`` moved into the nested sections
    (``--config`` overrides written with dots, e.g. through the Snakemake API); a dotted key wins over the
    same key in a section, as a command-line override should."""
    out = {k: copy.deepcopy(v) for k, v in config.items() if "." not in str(k)}
    for dotted, value in config.items():
        if "." not in str(dotted):
            continue
        *parents, last = str(dotted).split(".")
        node = out
        for depth, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"config key '{dotted}': '{'.'.join(parents[:depth + 1])}' is "
                                  f"{child!r}, not a section, so it cannot hold '{last}'")
            node = child
        node[last] = copy.deepcopy(value)
    return out


def validate_workflow(config: Mapping, configfiles: Iterable = (), overrides: Mapping | None = None) -> dict:
    """Validate the ``config`` a Snakefile was handed (the Snakefile calls this at parse time, before any job).

    ``configfiles``: the files it was read from (``workflow.configfiles``): Snakemake's loader merges duplicate
    keys silently, so each is re-read here with lotto's, which refuses them naming the file and both lines.
    ``overrides``: the ``--config`` values (``workflow.config_settings.config``), already merged into
    ``config``; named in the error so that the user sees where a bad value came from.
    """
    configfiles = list(configfiles)
    for f in configfiles:
        read_config_file(f)
    try:
        return validate(fold_dotted_keys(config))
    except ConfigError as exc:
        # where the bad value came from: the file(s), and the --config values merged over them
        origin = [f"config file{'s' if len(configfiles) > 1 else ''} {', '.join(_display(f) for f in configfiles)}"] \
            if configfiles else []
        if overrides:
            origin.append("values given with --config: " + ", ".join(f"{k}={v!r}" for k, v in overrides.items()))
        if origin:
            raise ConfigError(f"{exc}\n  ({'; '.join(origin)})") from None
        raise


def load(path_or_json: str | Path, partial: bool = False) -> dict:
    """Load a config from a YAML/JSON file, or from an inline JSON object string, and validate it."""
    text = str(path_or_json)
    if text.lstrip().startswith("{"):
        try:
            raw = json.loads(text, object_pairs_hook=_no_duplicate_pairs("inline config"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"inline config is not valid JSON: {exc}") from None
    else:
        raw = read_config_file(text)
    return validate(raw, partial=partial)


def section_json(cfg: dict, *sections: str) -> str:
    """A canonical JSON string of the named sections (used as rule params: a change reruns the rule)."""
    return json.dumps({k: cfg[k] for k in sections}, sort_keys=True, separators=(",", ":"))


def or_exit(check, *args):
    """For the Snakefile: run ``check(*args)``; on a ConfigError print lotto's one-line message (it names the
    file or the key) and exit 1 before any job, without a traceback. Here, not in the Snakefile: `snakemake
    --lint` wants no functions beside rules."""
    import sys

    try:
        return check(*args)
    except ConfigError as exc:
        sys.stderr.write(f"lotto: {exc}\n")
        sys.exit(1)


def check_command_line(argv: list[str]) -> None:
    """For the workflow profile (profiles/default), which Snakemake reads before it loads any config file:
    refuse a `--configfile` that is not valid YAML, is empty or repeats a key, and a dotted `--config` key,
    with lotto's one-line message naming the file and the line, instead of Snakemake's generic error.

    Snakemake parses `--configfile` itself, before the Snakefile runs, and names neither file nor line.
    """
    import sys

    files, overrides, current = [], [], None
    for arg in argv[1:]:
        if arg.startswith("-"):
            name, eq, value = arg.partition("=")
            current = name if name in ("--configfile", "--configfiles", "--config", "-C") else None
            if current and eq:
                (overrides if current in ("--config", "-C") else files).append(value)
            continue
        if current in ("--configfile", "--configfiles"):
            files.append(arg)
        elif current in ("--config", "-C"):
            overrides.append(arg)
    problems = []
    for path in files:
        if not Path(path).exists() and not Path(path).suffix and "/" not in path:
            # `snakemake --configfile X.yaml fig1a`: --configfile takes every word after it
            problems.append(f"--configfile {path}: no such file, and '{path}' looks like a target: targets go "
                            f"before --configfile (snakemake {path} --cores N --configfile FILE)")
            continue
        try:
            read_config_file(path)
        except ConfigError as exc:
            problems.append(str(exc))
    for entry in overrides:
        key = entry.partition("=")[0]
        if "." in key:
            section, _, rest = key.partition(".")
            problems.append(
                f"--config {entry}: Snakemake accepts only top-level keys on its command line; for a nested key "
                f"write --config '{section}={{{rest.replace('.', ': {')}: {entry.partition('=')[2]}{'}' * rest.count('.')}}}'"
            )
    if problems:
        sys.stderr.write("lotto: " + "\nlotto: ".join(problems) + "\n")
        sys.exit(1)


def check_targets(argv: list[str], targets: Iterable[str]) -> None:
    """For the Snakefile, once every rule is defined: refuse a target on the command line that names neither a
    rule nor a file, listing the rule ``targets`` of this config and the closest match, before Snakemake's
    banner and its "No rule to produce". Only for a `snakemake` command line; a word with a '/' or a '.' is a
    file target (Snakemake's to check), as is an existing file."""
    import difflib

    if not argv or os.path.basename(argv[0]) != "snakemake":
        return
    from snakemake.cli import get_argument_parser

    given = get_argument_parser().parse_known_args(argv[1:])[0].targets or []
    targets = sorted(set(targets))
    unknown = [t for t in given if t not in targets and "/" not in t and "." not in t and not os.path.exists(t)]
    if unknown:
        lines = []
        for t in unknown:
            close = difflib.get_close_matches(t, targets, n=3, cutoff=0.5)
            lines.append(f"unknown target '{t}'" + (f": did you mean {', '.join(close)}?" if close else ""))
        raise ConfigError("; ".join(lines) + f"\n  the targets of this config: {', '.join(targets)}"
                          "\n  (any file the workflow writes is a target too, by its path; docs: README, Targets)")
