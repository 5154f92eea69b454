"""Provenance records: what they hold, that recording them never imports torch nor fails a job, that checkpoints,
masks and training metrics carry them, and that masks stay byte-identical across runs."""

import csv
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest

import lotto
from lotto import provenance as P, provenance_table as T
from lotto.masks import Mask

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")


def _git(repo, *args):
    return subprocess.run([GIT, "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A real git repository with one commit, a tracked file and an ignored folder."""
    r = tmp_path / "repo"
    r.mkdir()
    _git(r, "init", "-q")
    _git(r, "config", "user.email", "t@example.org")
    _git(r, "config", "user.name", "t")
    (r / ".gitignore").write_text("results/\n")
    (r / "a.py").write_text("x = 1\n")
    _git(r, "add", ".")
    _git(r, "commit", "-q", "-m", "one")
    return r


def test_record_holds_versions_from_package_metadata():
    rec = P.provenance()
    assert list(rec) == list(P.FIELDS)
    assert rec["lotto"] == lotto.__version__
    assert rec["python"] == platform.python_version()
    assert rec["snakemake"] == importlib.metadata.version("snakemake")
    assert rec["torch"] == importlib.metadata.version("torch")
    assert rec["torchvision"] == importlib.metadata.version("torchvision")
    assert json.loads(json.dumps(rec)) == rec  # goes into JSON headers as is


@needs_git
def test_record_names_this_checkouts_commit():
    if not (P.CHECKOUT / ".git").exists():
        pytest.skip("lotto is not running from a git checkout")
    rec = P.provenance()
    assert rec["git_commit"] == _git(P.CHECKOUT, "rev-parse", "HEAD")
    assert rec["git_dirty"] == bool(_git(P.CHECKOUT, "status", "--porcelain"))


def test_recording_provenance_and_reading_it_back_never_import_torch(tmp_path):
    from safetensors.numpy import save_file

    ckpt = tmp_path / "c.safetensors"
    meta = {"step": 0, "prunable": ["w"], "provenance": {"x": 1}}
    save_file({"w": np.zeros(3, np.float32)}, str(ckpt), metadata={"lotto": json.dumps(meta)})
    code = (
        "import sys\n"
        "from lotto.provenance import provenance\n"
        "from lotto.provenance_table import read_record\n"
        "from lotto.masks import Mask\n"
        "import numpy as np\n"
        "provenance()\n"
        f"Mask.from_bools({{'w': np.ones(4, bool)}}).save({str(tmp_path / 'm.mask')!r})\n"
        f"assert read_record({str(tmp_path / 'm.mask')!r}) == provenance()\n"
        f"assert read_record({str(ckpt)!r}) == {{'x': 1}}\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@needs_git
def test_git_state_of_a_checkout_clean_dirty_and_ignored(repo):
    head = _git(repo, "rev-parse", "HEAD")
    assert P.git_state(repo) == {"commit": head, "dirty": False}
    (repo / "results").mkdir()
    (repo / "results" / "big.npz").write_text("ignored output")
    assert P.git_state(repo) == {"commit": head, "dirty": False}  # ignored files are not code
    (repo / "new.py").write_text("y = 2\n")
    assert P.git_state(repo) == {"commit": head, "dirty": True}  # an untracked module changes what runs
    (repo / "new.py").unlink()
    (repo / "a.py").write_text("x = 2\n")
    assert P.git_state(repo) == {"commit": head, "dirty": True}


@needs_git
def test_git_state_is_none_outside_a_checkout_or_without_git(repo, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    assert P.git_state(plain) is None
    sub = repo / "pkg"
    sub.mkdir()
    assert P.git_state(sub) is None  # a copy installed inside someone else's repository: not our commit
    assert P.git_state(repo, git=str(tmp_path / "no-such-git")) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    _git(empty, "init", "-q")
    assert P.git_state(empty) is None  # no commit yet


def test_provenance_is_stamped_once_per_process():
    """git and the versions are read once, at the stamp: a later record is the stamp, even once git is gone."""
    code = (
        "import os\n"
        "from lotto import provenance as P\n"
        "first = P.stamp()\n"
        "os.environ['PATH'] = ''  # no git from here on\n"
        "assert P.git_state() is None\n"
        "assert P.provenance() == first, (P.provenance(), first)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_lotto_module_changed_after_the_stamp_is_refused_at_its_import(tmp_path):
    """An edit (or commit, checkout) during a run: a module imported after it would run under a record that names
    other code, so its import fails naming the file; modules already loaded, and files merely touched, are fine."""
    shutil.copytree(P.PACKAGE, tmp_path / "lotto", ignore=shutil.ignore_patterns("__pycache__"))
    code = (
        "import os, sys\n"
        "from lotto import provenance as P\n"
        "first = P.stamp()\n"
        "root = P.PACKAGE\n"
        "assert str(root).startswith(sys.argv[1]), root\n"
        "(root / 'datasets.py').write_text((root / 'datasets.py').read_text() + '\\nEDITED = True\\n')\n"
        "os.utime(root / 'seeds.py', ns=(1, 1))  # touched, same bytes\n"
        "assert P.changed_files() == ['datasets.py'], P.changed_files()\n"
        "import lotto.seeds\n"
        "try:\n"
        "    import lotto.datasets\n"
        "except P.SourceChanged as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    sys.exit('a changed module was imported')\n"
        "assert P.provenance() == first\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "lotto/datasets.py changed after this process stamped its provenance" in proc.stdout
    assert "rerun it" in proc.stdout


def test_masks_of_one_run_are_byte_identical_and_carry_provenance(tmp_path):
    rng = np.random.default_rng(0)
    layers = {"a": rng.random((16, 9)) > 0.4, "b": rng.random(50) > 0.7}
    Mask.from_bools(layers, meta={"sparsity": 0.5}).save(tmp_path / "1.mask")
    Mask.from_bools(layers, meta={"sparsity": 0.5}).save(tmp_path / "2.mask")
    assert (tmp_path / "1.mask").read_bytes() == (tmp_path / "2.mask").read_bytes()
    assert Mask.load(tmp_path / "1.mask").meta["provenance"] == P.provenance()
    # a mask saved again records who saved it, not who saved its parent
    old = Mask.from_bools(layers, meta={"provenance": {"lotto": "0.0.1"}})
    old.save(tmp_path / "3.mask")
    assert T.read_record(tmp_path / "3.mask") == P.provenance()


def test_training_writes_provenance_into_checkpoint_and_metrics(tmp_path):
    from lotto import config, io, runner
    from lotto.staging import stage

    cfg = config.validate({"model": {"name": "lenet"}, "training": {"batch_size": 32, "epochs": 1, "augment": False,
                                                                    "log_every": 100}}, partial=True)
    data = tmp_path / "d.npz"
    stage({"dataset": "mnist_embedded", "source": "embedded", "train_size": 64, "test_size": 32}, data)
    runner.initialise(cfg, data, 0, tmp_path / "init.safetensors", log=lambda m: None)
    record = runner.run_training(cfg, data, tmp_path / "init.safetensors", tmp_path / "t.safetensors", replicate=0,
                                 noise="sibling:1", metrics_path=tmp_path / "m.json", log=lambda m: None)
    assert record["provenance"] == P.provenance()
    assert io.read_json(tmp_path / "m.json")["provenance"] == P.provenance()
    for ckpt in ("init", "t"):
        assert io.load_checkpoint(tmp_path / f"{ckpt}.safetensors")[1]["provenance"] == P.provenance()
        assert T.read_record(tmp_path / f"{ckpt}.safetensors") == P.provenance()


def test_table_has_one_row_per_distinct_record(tmp_path):
    rng = np.random.default_rng(0)
    m = Mask.from_bools({"a": rng.random(20) > 0.5})
    for i in range(3):
        m.save(tmp_path / f"{i}.mask")
    other = {**P.provenance(), "git_commit": "0" * 40, "git_dirty": True}
    (tmp_path / "m.json").write_text(json.dumps({"test_accuracy": 0.5, "provenance": other}))
    (tmp_path / "old.json").write_text(json.dumps({"test_accuracy": 0.5}))
    files = [tmp_path / n for n in ("0.mask", "m.json", "1.mask", "old.json", "2.mask")]
    out = tmp_path / "t" / "provenance.csv"
    T.write_table(T.collect(files), out)
    rows = list(csv.DictReader(out.open()))
    assert [r["files"] for r in rows] == ["3", "1", "1"]
    assert rows[0]["git_commit"] == (P.provenance()["git_commit"] or "") and rows[0]["mask"] == "3"
    assert rows[0]["lotto"] == lotto.__version__ and rows[0]["example"].endswith("0.mask")
    assert {rows[1]["git_commit"], rows[2]["git_commit"]} == {"0" * 40, ""}
    unrecorded = next(r for r in rows if r["lotto"] == "(not recorded)")
    assert unrecorded["metrics"] == "1" and unrecorded["python"] == ""
    with pytest.raises(lotto.io.ArtifactError, match="x.txt"):
        T.read_record(tmp_path / "x.txt")


def test_lotto_provenance_reads_a_results_folder(tmp_path):
    from lotto import cli

    rng = np.random.default_rng(0)
    run = tmp_path / "results" / "exp"
    m = Mask.from_bools({"a": rng.random(20) > 0.5})
    m.save(run / "rep0" / "pre0" / "s1.mask")
    m.save(run / "rep0" / "pre4" / "s1.mask")
    (run / "rep0" / "pre4" / "metrics.json").write_text(json.dumps({"provenance": P.provenance()}))
    (run / "rep0" / "pre4" / ".s2.mask.x.tmp.mask").write_bytes(b"half a mask")  # a write in progress
    (run / "tables").mkdir()
    (run / "tables" / "overlap.csv").write_text("not an artifact\n")
    out = run / "tables" / "provenance.csv"
    assert cli.main(["provenance", "--under", str(run), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and (rows[0]["files"], rows[0]["mask"], rows[0]["metrics"]) == ("3", "2", "1")
    assert rows[0]["example"].endswith("pre0/s1.mask")
    assert cli.main(["provenance", "--under", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
