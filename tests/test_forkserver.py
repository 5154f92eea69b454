"""The fork server of local runs (lotto/forkserver.py): real `lotto` commands run in children of a real server
with the caller's files, directory, environment and umask, exit with the child's status, forward signals, fall
back to running on their own when the server is off or not theirs, and a Snakemake run uses it with the same
masks, byte for byte, as a run without it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lotto import forkserver, io
from workflow_helpers import ROOT, make_workdir, snakemake

LOTTO = str(Path(sys.executable).parent / "lotto")
CONFIG = {
    "experiment": "fs",
    "data": {"dataset": "mnist_embedded", "source": "embedded", "train_size": 256, "test_size": 128},
    "model": {"name": "lenet"},
    "training": {"lr": 0.05, "batch_size": 64, "epochs": 200, "milestones": [100], "augment": False,
                 "eval_batch_size": 128, "log_every": 1, "checkpoint_every": 50},
}
SERVED_RE = re.compile(r"served \d+: pid (\d+): lotto (.*)")


def _wait_ready(handle, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(handle.path):
            return
        assert handle.proc.poll() is None, handle.log.read_text()
        time.sleep(0.05)
    pytest.fail(f"the fork server did not listen within {timeout}s:\n{handle.log.read_text()}")


def _served(log: Path) -> list[tuple[int, str]]:
    return [(int(m.group(1)), m.group(2)) for m in SERVED_RE.finditer(log.read_text())]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("forkserver")
    saved = os.environ.pop(forkserver.ENV, None)
    handle = forkserver.start(d / "server.log")
    try:
        _wait_ready(handle)
        yield handle
    finally:
        handle.stop()
        if saved is not None:
            os.environ[forkserver.ENV] = saved
    assert not os.path.exists(handle.path), "the socket is removed when the server stops"


def _lotto(*args, cwd, env_extra=None, umask=None, timeout=300):
    env = {**os.environ, **(env_extra or {})}
    pre = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([LOTTO, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=pre)


def _stage(cwd: Path, **kw) -> subprocess.CompletedProcess:
    (cwd / "config.json").write_text(json.dumps(CONFIG))
    res = _lotto("stage-data", "--config", "config.json", "--out", "data.npz", cwd=cwd, **kw)
    assert res.returncode == 0, res.stderr
    res = _lotto("init", "--config", "config.json", "--threads", "1", "--data", "data.npz", "--replicate", "0",
                 "--out", "init.safetensors", cwd=cwd, **kw)
    assert res.returncode == 0, res.stderr
    return res


def test_commands_run_in_children_with_the_callers_directory_files_and_umask(server, tmp_path):
    before = len(_served(server.log))
    _stage(tmp_path, umask=0o027)  # relative paths: the child works in the caller's directory
    served = _served(server.log)[before:]
    assert [cmd.split()[0] for _, cmd in served] == ["stage-data", "init"], served
    for name in ("data.npz", "init.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name  # the caller's umask, not the server's
    # the same command without the server: the same weights
    alone = tmp_path / "alone"
    alone.mkdir()
    _stage(alone, env_extra={forkserver.ENV: "off"})
    assert len(_served(server.log)) == before + 2, "LOTTO_FORKSERVER=off: the command ran on its own"
    a, _ = io.load_checkpoint(tmp_path / "init.safetensors")
    b, _ = io.load_checkpoint(alone / "init.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_exit_status_stdout_and_stderr_are_the_childs(server, tmp_path):
    res = _lotto("--version", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.startswith("lotto ")
    (tmp_path / "bad.yaml").write_text("training: {epochs: -1}\n")
    res = _lotto("validate", "bad.yaml", cwd=tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stderr.startswith("lotto: error:") and "training.epochs" in res.stderr, res.stderr
    # and the environment is the caller's: LOTTO_DEBUG adds the traceback
    res = _lotto("validate", "bad.yaml", cwd=tmp_path, env_extra={"LOTTO_DEBUG": "1"})
    assert res.returncode == 2 and "Traceback" in res.stderr
    assert [c for _, c in _served(server.log)][-3:] == ["--version", "validate bad.yaml", "validate bad.yaml"]


def _train(cwd: Path, name: str) -> list[str]:
    return [LOTTO, "train", "--config", "config.json", "--threads", "1", "--data", "data.npz", "--from",
            "init.safetensors", "--end", "end", "--replicate", "0", "--noise", "sibling:1", "--metrics",
            f"{name}.json", "--resume-state", f".resume/{name}.pt", "--out", f"{name}.safetensors"]


def _start_training(cwd: Path, name: str) -> tuple[subprocess.Popen, Path]:
    log = cwd / f"{name}.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(_train(cwd, name), cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not re.search(r"\] step 5/", log.read_text()):
        assert proc.poll() is None, log.read_text()
        time.sleep(0.02)
    return proc, log


def _child_of(server, name: str) -> int:
    pids = [pid for pid, cmd in _served(server.log) if f"--out {name}.safetensors" in cmd]
    assert len(pids) == 1, _served(server.log)
    return pids[0]


def _gone(pid: int, timeout=30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_sigterm_reaches_the_training_which_saves_its_state_and_exits_143(server, tmp_path):
    _stage(tmp_path)
    proc, log = _start_training(tmp_path, "term")
    proc.send_signal(signal.SIGTERM)  # what Snakemake or Slurm sends the job's process
    assert proc.wait(timeout=60) == 143, log.read_text()[-2000:]
    text = log.read_text()
    assert re.search(r"stopped by SIGTERM at step \d+", text), text[-2000:]
    assert (tmp_path / ".resume" / "term.pt").is_file()
    assert _gone(_child_of(server, "term"))


@pytest.mark.slow
def test_a_sigkilled_client_takes_its_child_along(server, tmp_path):
    _stage(tmp_path)
    proc, log = _start_training(tmp_path, "kill")
    child = _child_of(server, "kill")
    proc.kill()
    proc.wait(timeout=30)
    assert _gone(child), "the child of a SIGKILLed job kept running"
    assert not (tmp_path / "kill.safetensors").exists()


@contextlib.contextmanager
def _server_of(checkout: Path, path: str, log: Path, cwd: Path):
    """A fork server (`python -m lotto.forkserver`) of the lotto in ``checkout``, listening on ``path``."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    env.pop(forkserver.ENV, None)
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-P", "-m", "lotto.forkserver", path], env=env, stdout=sink,
                                stderr=subprocess.STDOUT, cwd=cwd)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(path) and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_server_of_another_lotto_is_refused_and_the_command_runs_on_its_own(tmp_path):
    other = tmp_path / "other"
    shutil.copytree(ROOT / "lotto", other / "lotto", ignore=shutil.ignore_patterns("__pycache__"))
    path = str(tmp_path / "s")
    log = tmp_path / "other.log"
    with _server_of(other, path, log, tmp_path):
        res = _lotto("--version", cwd=tmp_path, env_extra={forkserver.ENV: path})
        assert res.returncode == 0 and res.stdout.startswith("lotto "), res.stderr
        assert "refused (different lotto)" in log.read_text() and not _served(log)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_commit_or_edit_during_a_run_never_makes_a_record_name_code_that_did_not_run(tmp_path):
    """A server started on commit A, then lotto's version string edited and committed (B), then edited again
    without a commit: the server refuses both later jobs, which run as plain processes, and every mask's record
    pairs the commit with the code that wrote it (lotto's version is what the code says about itself)."""
    from lotto.masks import Mask

    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "lotto", repo / "lotto", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / ".gitignore").write_text("__pycache__/\n")
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.org")
    _git(repo, "config", "user.name", "t")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "A")
    commit_a = _git(repo, "rev-parse", "HEAD")
    path, log = str(tmp_path / "s"), tmp_path / "server.log"
    Mask.from_bools({"w": np.arange(40) % 3 == 0}).save(tmp_path / "in.mask")
    init = repo / "lotto" / "__init__.py"
    version = re.search(r'__version__ = "(.*)"', init.read_text()).group(1)

    def ticket(name: str) -> dict:
        res = _lotto("random-ticket", "--mask", "in.mask", "--replicate", "0", "--out", f"{name}.mask", cwd=tmp_path,
                     env_extra={"PYTHONPATH": str(repo), forkserver.ENV: path})
        assert res.returncode == 0, res.stderr
        return Mask.load(tmp_path / f"{name}.mask").meta["provenance"]

    with _server_of(repo, path, log, tmp_path):  # the server and the jobs run the repository's lotto
        first = ticket("a")
        assert len(_served(log)) == 1, log.read_text()
        assert (first["lotto"], first["git_commit"], first["git_dirty"]) == (version, commit_a, False)

        init.write_text(init.read_text().replace(f'"{version}"', f'"{version}+b"'))
        _git(repo, "commit", "-q", "-am", "B")
        commit_b = _git(repo, "rev-parse", "HEAD")
        second = ticket("b")
        assert (second["lotto"], second["git_commit"], second["git_dirty"]) == (f"{version}+b", commit_b, False)
        init.write_text(init.read_text().replace(f'"{version}+b"', f'"{version}+c"'))  # not committed
        third = ticket("c")
        assert (third["lotto"], third["git_dirty"]) == (f"{version}+c", True)

        text = log.read_text()
        assert len(_served(log)) == 1 and text.count("refused (source changed since the server started: "
                                                     "__init__.py)") == 2, text


@pytest.mark.slow
def test_a_local_snakemake_run_uses_the_server_and_writes_the_same_masks(tmp_path):
    """One sibling's mask of the tiny config, through the server (the default) and with LOTTO_FORKSERVER=off."""
    target = "results/tiny/rep0/pre0/sibling1/masks/s0.5000.mask"
    masks = {}
    for mode in ("server", "off"):
        work = make_workdir(tmp_path / mode)
        env_before = os.environ.get(forkserver.ENV)
        os.environ.pop(forkserver.ENV, None)  # not the module's server: the run starts its own
        if mode == "off":
            os.environ[forkserver.ENV] = "off"
        try:
            snakemake([target, "--cores", "2", "--configfile", "workflow/configs/tiny.yaml"], cwd=work)
        finally:
            if env_before is None:
                os.environ.pop(forkserver.ENV, None)
            else:
                os.environ[forkserver.ENV] = env_before
        log = work / ".snakemake" / "lotto-forkserver.log"
        if mode == "server":
            commands = [c.split()[0] for _, c in _served(log)]
            # the first jobs may start before the server has imported torch: those run on their own
            assert {"train", "prune"} <= set(commands), commands
            assert "stopped after serving" in log.read_text()
        else:
            assert not log.exists()
        masks[mode] = (work / target).read_bytes()
    assert masks["server"] == masks["off"]
