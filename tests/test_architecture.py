"""The house rules of docs/ARCHITECTURE.md, checked on the code itself: the core imports no family, a family
imports no other family, nobody imports another module's private names, the Snakefile's parse path imports no
torch, and the registries are what the schema and the CLI offer."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lotto import config as configmod
from lotto.families import FAMILIES

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "lotto"


def _imports(path: Path):
    """(module imported, names imported from it) for every import statement of a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative import: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            yield module, [a.name for a in node.names]


def _family_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "lotto" and parts[1] in FAMILIES else None


MODULES = sorted(p for p in PKG.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_layering_and_no_private_imports(path):
    own = _family_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
    for module, names in _imports(path):
        if not module.startswith("lotto"):
            continue
        other = _family_of(module)
        if own is None:
            assert other is None, f"core module {path.name} imports the family module {module}"
        else:
            assert other in (None, own), f"family {own} ({path.name}) imports another family: {module}"
        private = [n for n in names if n.startswith("_") and n != "__version__"]
        assert not private, f"{path.relative_to(ROOT)} imports private names {private} from {module}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """lotto module -> the lotto modules it imports, from the AST of every file of the package. Every import
    statement counts, at module level or inside a function (a function-level import closes a circle at run time
    as surely, only later); ``from lotto.zoo import cli`` is an edge to lotto.zoo.cli, ``from lotto.zoo import
    FIGURES`` one to lotto.zoo."""
    names = {_module_name(p): p for p in MODULES}
    graph = {}
    for name, path in names.items():
        edges = set()
        for module, imported in _imports(path):
            if module.split(".")[0] != "lotto":
                continue
            targets = [f"{module}.{n}" for n in imported if f"{module}.{n}" in names]
            edges.update(targets if targets and len(targets) == len(imported) else [module, *targets])
        graph[name] = {m for m in edges if m in names and m not in (name, "lotto")}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The circles of ``graph``: its strongly connected components of more than one module (Tarjan), each
    given as one closed path through them, e.g. [a, b, a]."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_closed_path(graph, set(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _closed_path(graph, component: set[str]) -> list[str]:
    """A shortest circle through the first module (by name) of a strongly connected component."""
    start = min(component)
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(graph[path[-1]] & component):
            if w == start:
                return path + [start]
            if w not in seen:
                seen.add(w)
                paths.append(path + [w])
    return sorted(component)


def test_the_import_graph_has_no_circles():
    cycles = import_cycles(import_graph())
    assert not cycles, "import circles in lotto/ (function-level imports count):\n  " + "\n  ".join(
        " -> ".join(c) for c in cycles)


def test_the_circle_finder_finds_circles_through_function_level_imports():
    """The finder itself, on the two circles lotto had: a test that cannot fail proves nothing."""
    graph = {"lotto.cli": {"lotto.forkserver"}, "lotto.forkserver": {"lotto.cli"},
             "lotto.io": {"lotto.provenance"}, "lotto.provenance": {"lotto.masks"}, "lotto.masks": {"lotto.io"},
             "lotto.paths": set(), "lotto.seeds": {"lotto.paths"}}
    assert import_cycles(graph) == [["lotto.cli", "lotto.forkserver", "lotto.cli"],
                                    ["lotto.io", "lotto.provenance", "lotto.masks", "lotto.io"]]
    # and the graph of the code counts an import inside a function: commands.run's lazy imports are edges
    graph = import_graph()
    assert "lotto.provenance_table" in graph["lotto.commands"]  # imported inside cmd_provenance only
    assert "lotto.provenance" in graph["lotto.io"]  # imported inside save_checkpoint only


def test_snakefile_parse_imports_no_torch():
    code = (
        "import sys, runpy\n"
        "import lotto.config, lotto.paths, lotto.families, lotto.composability, lotto.zoo, lotto.imp\n"
        "import lotto.datasets, lotto.architectures, lotto.pruning, lotto.zoo.iterative  # the catalogs\n"
        "[f.figure_names() for f in lotto.families.FAMILIES.values()]\n"
        "lotto.config.load_schema()\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_every_family_has_its_parts():
    schema = configmod.load_schema()
    assert set(configmod.families(schema)) == set(FAMILIES)
    for name, family in FAMILIES.items():
        assert (ROOT / "workflow" / "rules" / f"{name}.smk").is_file()
        assert family.figure_names(), f"{name} lists no figures"
    from lotto.commands import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert {"validate", "stage-data", "init", "train", "prune", "random-ticket"} <= commands
    assert {"figure", "zoo-iterate", "imp-path"} <= commands


def test_registries_are_what_the_schema_offers():
    from lotto import architectures, pruning
    from lotto.datasets import CATALOG
    from lotto.zoo import iterative

    props = configmod.load_schema()["properties"]
    assert props["model"]["properties"]["name"]["enum"] == list(architectures.CATALOG)
    assert props["data"]["properties"]["dataset"]["enum"] == list(CATALOG)
    zoo = props["zoo"]["properties"]
    assert zoo["tasks"]["items"]["properties"]["dataset"]["enum"] == list(CATALOG)
    assert zoo["methods"]["items"]["enum"] == list(pruning.METHODS) == zoo["methods"]["default"]
    assert zoo["transfer"]["properties"]["method"]["enum"] == list(pruning.METHODS)
    assert zoo["handlings"]["items"]["enum"] == list(iterative.HANDLINGS)
    assert zoo["transfer"]["properties"]["handling"]["enum"] == list(iterative.HANDLINGS)
    assert zoo["ensemble_handling"]["enum"] == [None, *iterative.HANDLINGS]


def test_no_enum_of_catalog_names_is_typed_into_the_schema():
    """Every list of models, data sets, methods or handlings comes from its catalog (x-registry): a typed copy
    would go stale when an entry is added."""
    from lotto import architectures, datasets, pruning
    from lotto.zoo import iterative

    catalogs = [set(architectures.CATALOG), set(datasets.CATALOG), set(pruning.METHODS), set(iterative.HANDLINGS)]
    raw = yaml.safe_load(configmod.SCHEMA_PATH.read_text())

    def typed_enums(node, path=()):
        if isinstance(node, dict):
            if "enum" in node:
                yield path, set(node["enum"]) - {None}
            for k, v in node.items():
                yield from typed_enums(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from typed_enums(v, (*path, i))

    for path, values in typed_enums(raw):
        assert not any(values & names for names in catalogs), f"{'.'.join(map(str, path))} types catalog names"


def test_every_cli_option_has_help():
    from lotto.commands import build_parser

    parser = build_parser()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help, f"lotto {name}: option {action.option_strings or action.dest} has no help text"


def test_version():
    out = subprocess.run([str(Path(sys.executable).parent / "lotto"), "--version"], capture_output=True, text=True)
    import lotto

    assert out.returncode == 0 and out.stdout.strip() == f"lotto {lotto.__version__}"


def test_a_new_pruning_method_is_one_registration(tmp_path):
    """docs/ARCHITECTURE.md's recipe: one function + @register_method makes a method the config accepts and a
    zoo round runs (through the real CLI, in-process so that the registration is seen)."""
    import json

    from lotto import cli, pruning
    from lotto.masks import Mask

    @pruning.register_method("toy_every_other")
    def _toy(weights, kept, amount, dim, seed):
        """prunes every other weight of each layer (a toy for this test)."""
        out = {}
        for name, k in kept.items():
            flat = k.clone().reshape(-1)
            flat[::2] = False
            out[name] = flat.reshape(k.shape)
        return out

    try:
        cfg = {"experiment": "toy", "data": {"dataset": "mnist_embedded", "source": "embedded", "train_size": 256,
                                             "test_size": 128},
               "model": {"name": "lenet"},
               "training": {"lr": 0.05, "batch_size": 64, "epochs": 1, "milestones": [], "augment": False,
                            "log_every": 4},
               "zoo": {"methods": ["global_l1", "toy_every_other"], "iterations": 1}}
        assert configmod.validate(cfg)["zoo"]["methods"] == ["global_l1", "toy_every_other"]
        text = json.dumps({k: cfg[k] for k in ("data", "model", "training")})

        def lotto(*argv):
            assert cli.main([str(a) for a in argv]) == 0

        data, init = tmp_path / "d.npz", tmp_path / "init.safetensors"
        lotto("stage-data", "--config", text, "--out", data)
        lotto("init", "--config", text, "--data", data, "--replicate", 0, "--out", init)
        out = tmp_path / "round"
        lotto("zoo-iterate", "--config", text, "--threads", 1, "--data", data, "--init", init, "--previous", init,
              "--task", "m", "--method", "toy_every_other", "--handling", "rewind_init", "--iteration", 1,
              "--replicate", 0, "--rate", 0.5, "--out-mask", out / "mask.mask", "--out-start",
              out / "start.safetensors", "--out", out / "trained.safetensors", "--metrics", out / "metrics.json")
        mask = Mask.load(out / "mask.mask")
        assert mask.meta["method"] == "toy_every_other"
        assert all(not layer.reshape(-1)[::2].any() and layer.reshape(-1)[1::2].all()
                   for layer in mask.layers().values())
    finally:
        pruning.METHODS.pop("toy_every_other", None)


LINTED = ["config.yaml", "workflow/configs/tiny.yaml", "workflow/configs/demo.yaml", "workflow/configs/imp-tiny.yaml",
          "workflow/configs/imp-paper.yaml", "workflow/configs/zoo-paper.yaml", "workflow/configs/zoo-tiny.yaml",
          "workflow/configs/zoo-cpu.yaml", "workflow/configs/imp-cpu.yaml"]


@pytest.mark.parametrize("config", LINTED)
def test_snakemake_lint_is_clean(config):
    fashion = "/usr/share/datasets/fashion-mnist"
    if fashion in (ROOT / config).read_text() and not Path(fashion).is_dir():
        pytest.skip(f"{config} reads Debian's dataset-fashion-mnist, not installed here")
    snakemake = Path(sys.executable).parent / "snakemake"
    proc = subprocess.run([str(snakemake), "--lint", "--configfile", config], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode in (0, 1) and "Traceback" not in out and "lotto:" not in out, out[-3000:]
    # One lint is the design's: a family's rule file holds its rules and the functions that wire them (issue 19:
    # a family is a package, a rule file and one line), where Snakemake's style guide would move the functions to
    # a shared common.smk. Only that lint, only in a family's own rule file; any other is a failure.
    blocks = re.split(r"\n(?=Lints for )", out)
    families = {f"workflow/rules/{name}.smk" for name in FAMILIES}
    others = [b for b in blocks if b.startswith("Lints for ") and not (
        any(b.split("\n", 1)[0].rstrip(":").endswith(f) for f in families)
        and set(re.findall(r"\* (.+?):\n", b)) == {"Mixed rules and functions in same snakefile."})]
    assert not others, "\n".join(others)[-3000:]
    assert proc.returncode == 0 or "Lints for" in out, out[-3000:]  # a failure that is not a lint
