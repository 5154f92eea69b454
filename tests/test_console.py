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


# --------------------------------------------------------------------------- the console of a run
TOY = """
rule all:
    input: expand("out/{i}.txt", i=range(6))

rule make:
    output: "out/{i}.txt"
    log: "logs/{i}.log"
    shell: "echo made {wildcards.i} > {log}; touch {output}"

rule broken:
    output: "broken.txt"
    log: "logs/broken.log"
    shell: "echo 'the reason it failed' > {log}; exit 3"
"""


# the profile's 10 s job-rate span keeps a finished run waiting for its timer: a toy run needs no such span
FAST = ["--max-jobs-per-timespan", "100/1s"]


def _toy(tmp_path):
    """A workflow of its own with lotto's workflow profile: the console without lotto's experiments."""
    import shutil

    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    (tmp_path / "Snakefile").write_text(TOY)
    return tmp_path


def test_a_run_prints_a_line_per_job_and_progress_with_an_eta(tmp_path):
    work = _toy(tmp_path)
    out = snakemake(["--cores", "2", *FAST], cwd=work)
    lines = (out.stdout + out.stderr).splitlines()
    jobs = [ln for ln in lines if ln.startswith("[")]
    assert len(jobs) == 7 and all(re.match(r"\[\d/7\] (make i=\d|all) \(\d+s\)$", ln) for ln in jobs), jobs
    assert any(re.match(r"lotto: \d of 7 jobs \(\d+%\), elapsed \d+s, ETA ~", ln) for ln in lines), lines
    assert lines[-1].startswith("lotto: all 7 jobs done in "), lines  # nothing of the console after it
    assert len(lines) <= 14, lines  # no banner, no rule blocks, no scheduler chatter
    assert not any(s in ln for ln in lines for s in ("rule make:", "SNAKEMAKE", "Select jobs", "Finished jobid"))


def test_p_and_dry_runs_print_snakemake_s_own_output(tmp_path):
    work = _toy(tmp_path)
    dry = snakemake(["-n", "-p"], cwd=work).stdout + snakemake(["-n"], cwd=work).stderr
    assert "Job stats:" in dry and "rule make:" in dry and "touch out/0.txt" in dry
    out = snakemake(["--cores", "1", "-p", "out/1.txt", *FAST], cwd=work)
    assert "touch out/1.txt" in out.stdout + out.stderr  # -p: the shell commands of a real run too


def test_a_failed_job_shows_its_error_and_its_log(tmp_path):
    work = _toy(tmp_path)
    out = snakemake(["--cores", "1", "broken.txt", *FAST], cwd=work, check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 1
    assert "Error in rule broken:" in text and "the reason it failed" in text  # show-failed-logs
    assert "Complete log(s):" in text  # where the whole story is
