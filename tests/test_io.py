"""What lands on disk: artifacts take their mode from the umask (lab-mates on a shared file system can read
them), and a finished training leaves no folders behind under results/.resume/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

LOTTO = str(Path(sys.executable).parent / "lotto")

# One child process writes every kind of artifact through atomic_write under each umask in turn: the
# umask belongs to the whole process, so the test process's own stays untouched.
WRITER = textwrap.dedent(
    r"""
    import json, os, sys
    from pathlib import Path

    import matplotlib
    matplotlib.use("Agg")
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure

    from lotto import io
    from lotto.masks import Mask

    out = Path(sys.argv[1])
    modes = {}
    for umask in sys.argv[2:]:
        os.umask(int(umask, 8))
        d = out / umask / "sub"  # a folder atomic_write has to create
        with io.atomic_write(d / "raw.bin") as tmp:
            tmp.write_bytes(b"x")
        io.write_json(d / "record.json", {"a": 1})
        Mask.from_bools({"w": np.ones((3, 3), bool)}).save(d / "m.mask")
        fig = Figure()
        fig.add_subplot().plot([0, 1])
        for ext in ("png", "pdf"):  # savefig writes into the temporary file itself
            with io.atomic_write(d / f"fig.{ext}", suffix=f".{ext}") as tmp:
                fig.savefig(tmp, format=ext)
        with io.atomic_write(d / "table.csv", suffix=".csv") as tmp:
            pd.DataFrame({"a": [1]}).to_csv(tmp, index=False)
        modes[umask] = {p.name: oct(p.stat().st_mode & 0o777) for p in [d, *sorted(d.iterdir())]}
    print(json.dumps(modes))
    """
)


def test_artifacts_honour_the_umask(tmp_path):
    before = os.umask(0o022)
    os.umask(before)
    res = subprocess.run([sys.executable, "-c", WRITER, str(tmp_path), "022", "077"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    modes = json.loads(res.stdout)
    names = ["sub", "fig.pdf", "fig.png", "m.mask", "raw.bin", "record.json", "table.csv"]
    assert modes["022"] == {"sub": "0o755", **{n: "0o644" for n in names[1:]}}
    assert modes["077"] == {"sub": "0o700", **{n: "0o600" for n in names[1:]}}
    # no temporary file is left beside the artifacts
    assert sorted(p.name for p in (tmp_path / "022" / "sub").iterdir()) == names[1:]
    current = os.umask(before)
    os.umask(current)
    assert current == before


def test_current_umask_reads_without_changing_it():
    from lotto.io import current_umask

    old = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        assert current_umask() == 0o027
    finally:
        os.umask(old)


# --------------------------------------------------------------------------- a real `lotto train`
CONFIG = {
    "experiment": "io",
    "data": {"dataset": "mnist_embedded", "source": "embedded", "train_size": 256, "test_size": 128},
    "model": {"name": "lenet"},
    "training": {"lr": 0.05, "batch_size": 64, "epochs": 6, "milestones": [3], "augment": False,
                 "eval_batch_size": 128, "log_every": 4, "checkpoint_every": 4},
}
# the layout the rules use: <results>/.resume/<output path>.pt
OUT = "results/io/rep0/pre0/sibling1/trained.safetensors"


def _umask_027():
    os.umask(0o027)


@pytest.mark.slow
def test_finished_training_leaves_no_resume_folders_and_honours_the_umask(tmp_path):
    """`lotto train` (24 steps, a resume state every 4) under umask 027, beside another job's state."""
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(CONFIG))
    run = dict(cwd=tmp_path, capture_output=True, text=True, timeout=300, preexec_fn=_umask_027)
    for cmd in (
        [LOTTO, "stage-data", "--config", str(cfg), "--out", "data.npz"],
        [LOTTO, "init", "--config", str(cfg), "--threads", "1", "--data", "data.npz", "--replicate", "0",
         "--out", "init.safetensors"],
    ):
        res = subprocess.run(cmd, **run)
        assert res.returncode == 0, res.stderr[-3000:]
    resume_root = tmp_path / "results" / ".resume"
    # a concurrent job's state, in a folder beside this job's: it must survive this job's clean-up
    other = resume_root / "results/io/rep0/pre0/sibling2/trained.safetensors.pt"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"another job's state")
    # and an empty folder of a job that is just starting (it may be about to write its state)
    (resume_root / "results/io/rep0/pre0/sibling3").mkdir()

    res = subprocess.run(
        [LOTTO, "train", "--config", str(cfg), "--threads", "1", "--data", "data.npz", "--from",
         "init.safetensors", "--end", "end", "--replicate", "0", "--noise", "sibling:1", "--metrics",
         "metrics.json", "--resume-state", f"results/.resume/{OUT}.pt", "--out", OUT],
        **run,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resume state at step 20 -> results/.resume/{OUT}.pt" in res.stderr  # it did write states

    left = sorted(str(p.relative_to(resume_root)) for p in resume_root.rglob("*"))
    prefix = "results/io/rep0/pre0"
    assert left == ["results", "results/io", "results/io/rep0", prefix, f"{prefix}/sibling2",
                    f"{prefix}/sibling2/trained.safetensors.pt", f"{prefix}/sibling3"]

    # the other job finishes too (same code path, in-process): nothing but the root stays
    from lotto.train import clear_resume

    clear_resume(other)
    left = sorted(str(p.relative_to(resume_root)) for p in resume_root.rglob("*"))
    assert left == ["results", "results/io", "results/io/rep0", prefix, f"{prefix}/sibling3"]
    # the starting job ends without having saved a state: its folder and the now-empty ones above go
    clear_resume(resume_root / f"{prefix}/sibling3/trained.safetensors.pt")
    assert resume_root.is_dir() and not list(resume_root.iterdir())
    clear_resume(resume_root / f"{prefix}/sibling3/trained.safetensors.pt")  # all gone: nothing to do
    assert resume_root.is_dir()

    # every artifact and folder the run made is readable by the group (umask 027), none by others
    for p in (tmp_path / OUT, tmp_path / "metrics.json", tmp_path / "data.npz", tmp_path / "init.safetensors"):
        assert p.stat().st_mode & 0o777 == 0o640, p
    assert (tmp_path / OUT).parent.stat().st_mode & 0o777 == 0o750


def test_clear_resume_outside_a_resume_folder_removes_only_the_file(tmp_path):
    from lotto.train import clear_resume

    state = tmp_path / "a" / "b" / "state.pt"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"x")
    clear_resume(state)
    assert not state.exists() and state.parent.is_dir()
    clear_resume(state)  # already gone: nothing to do
    clear_resume(None)
