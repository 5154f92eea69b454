"""Dependencies: ranges in pyproject.toml (lotto installs into an existing environment), the exact versions
the tests ran with in constraints.txt (scripts/setup.sh and CI install from it), and the conda environment
envs/lotto.yaml pinned to those same versions."""

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements(lines) -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r for r in reqs}


def _declared(extras=("test", "slurm")) -> dict[str, Requirement]:
    lines = list(PROJECT["dependencies"])
    for extra in extras:
        lines += PROJECT["optional-dependencies"][extra]
    return _requirements(lines)


def _pins(lines) -> dict[str, str]:
    """name -> version of `name==version` lines (comments and pip options skipped)."""
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert m, f"not an exact pin: {line!r}"
        out[canonicalize_name(m.group(1))] = m.group(2)
    return out


def _lock() -> dict[str, str]:
    return _pins((ROOT / "constraints.txt").read_text().splitlines())


def _conda_pip_section() -> list[str]:
    env = yaml.safe_load((ROOT / "envs" / "lotto.yaml").read_text())
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)


def test_pyproject_declares_ranges_not_pins():
    for name, req in _declared().items():
        assert req.specifier, f"{name}: give a lower bound"
        assert not any(s.operator in ("==", "===") for s in req.specifier), f"{name}: a range, not a pin"
        assert any(s.operator == ">=" for s in req.specifier), f"{name}: give a lower bound"


def test_lock_satisfies_pyproject():
    lock = _lock()
    for name, req in _declared().items():
        assert name in lock, f"{name} is declared in pyproject.toml but not locked in constraints.txt"
        assert req.specifier.contains(Version(lock[name]), prereleases=True), \
            f"constraints.txt locks {name}=={lock[name]}, outside pyproject.toml's {req.specifier}"
    assert "lotto" not in lock, "constraints.txt must not pin lotto itself (pip freeze --exclude-editable)"


def test_conda_env_pins_the_locked_versions():
    lock = _lock()
    section = _conda_pip_section()
    in_env = _pins(section)
    # every runtime dependency of the package, at the locked version (the rules need no test/slurm extras)
    assert set(in_env) == set(_declared(extras=())), "envs/lotto.yaml and pyproject.toml list other packages"
    for name, pinned in in_env.items():
        assert pinned == lock[name], f"envs/lotto.yaml pins {name}=={pinned}, constraints.txt {lock[name]}"
    assert "-e .." in section
    env = yaml.safe_load((ROOT / "envs" / "lotto.yaml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert SpecifierSet(PROJECT["requires-python"]).contains(python.split("=")[1] + ".0"), python


def test_setup_script_installs_from_the_lock():
    """scripts/setup.sh (CI runs it) installs torch first and on its own, then lotto, both from the lock."""
    installs = [line for line in (ROOT / "scripts" / "setup.sh").read_text().splitlines()
                if "pip install" in line and not line.lstrip().startswith("#") and "--upgrade pip" not in line]
    assert len(installs) == 2, installs
    assert all("-c constraints.txt" in line for line in installs), installs
    assert installs[0].split("constraints.txt", 1)[1].split() == ["torch", "torchvision"], installs[0]
    assert '-e ".[test,slurm]"' in installs[1], installs[1]


def test_installed_versions_satisfy_pyproject():
    """Whichever way lotto was installed (the lock, or into an existing environment), pip kept the ranges."""
    for name, req in _declared(extras=()).items():
        installed = Version(version(name))
        assert req.specifier.contains(installed, prereleases=True), f"{name} {installed} is outside {req.specifier}"
    for name, req in _declared(extras=("test", "slurm")).items():
        try:
            installed = Version(version(name))
        except PackageNotFoundError:
            pytest.skip(f"optional {name} is not installed")
        assert req.specifier.contains(installed, prereleases=True), f"{name} {installed} is outside {req.specifier}"
