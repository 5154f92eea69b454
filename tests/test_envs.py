"""The conda environment the rules run in pins the same versions the package declares."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(requirements):
    out = {}
    for req in requirements:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", req.strip())
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def test_conda_env_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _pins(project["dependencies"])
    assert all("==" in d for d in project["dependencies"]), "every dependency is pinned"
    env = yaml.safe_load((ROOT / "envs" / "lotto.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    in_env = _pins(pip_section)
    assert in_env == declared
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python.split("=")[1] in project["requires-python"] or project["requires-python"] == ">=3.11"


def test_installed_versions_match_pins():
    from importlib.metadata import version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for name, pinned in _pins(project["dependencies"]).items():
        installed = version(name).split("+")[0]
        assert installed == pinned, f"{name}: installed {installed}, pinned {pinned}"
