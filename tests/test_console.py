"""What a user sees on the console: a closed pipe ends quietly, mistaken targets and arguments are answered."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from workflow_helpers import ROOT, env, make_workdir, snakemake

LOTTO = str(Path(sys.executable).parent / "lotto")


# argparse's --help swallows write errors itself (exit 0); every command's own output ends with SIGPIPE's status
@pytest.mark.parametrize("args,status", [(["validate", "workflow/configs/tiny.yaml", "--show"], 141), (["--help"], 0)])
def test_a_closed_pipe_ends_quietly_like_cat(args, status):
    """`lotto ... | head`: the reader is gone before lotto writes; no 'Broken pipe' error on the console."""
    proc = subprocess.Popen([LOTTO, *args], cwd=ROOT, env={**env(), "LOTTO_FORKSERVER": "off"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head` having read its lines and left
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == status and err == "", err
    # and with the reader there, the same command prints and succeeds
    out = subprocess.run([LOTTO, *args], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return make_workdir(tmp_path_factory.mktemp("console"))


def test_an_unknown_target_lists_the_targets_and_the_closest(work):
    out = snakemake(["fig1x", "--cores", "2", "--configfile", "workflow/configs/tiny.yaml"], cwd=work, check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 1
    assert re.search(r"unknown target 'fig1x': did you mean [^?]*\bfig1a\b", text), text
    assert "the targets of this config: all, claims," in text and "training_curves" in text
    assert "SNAKEMAKE" not in text and "No rule to produce" not in text  # answered before Snakemake's banner
    # real targets, by rule name or by file, pass (a dry run)
    for target in ("fig1a", "results/tiny/figures/fig1a.png"):
        assert snakemake(["-n", target, "--configfile", "workflow/configs/tiny.yaml"], cwd=work).returncode == 0


def test_a_target_after_configfile_is_explained(work):
    out = snakemake(["--cores", "2", "--configfile", "workflow/configs/tiny.yaml", "fig1a"], cwd=work, check=False)
    assert out.returncode == 1
    assert "'fig1a' looks like a target: targets go before --configfile" in out.stdout + out.stderr
