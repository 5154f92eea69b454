"""Damaged artifacts and failing jobs through the real command line (issue 11, items 5-8).

Every case runs ``lotto`` (``lotto.cli.main`` in this process, or the installed ``lotto`` as a subprocess where
that costs no torch import) and asserts what a user sees: a non-zero exit, exactly one ``lotto: error:`` line
naming the file, no traceback, and no output left behind that a rerun would take as complete.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lotto import cli, io
from lotto.staging import stage
from lotto.masks import MAGIC, Mask

LOTTO = str(Path(sys.executable).parent / "lotto")
TRAINING = {"lr": 0.05, "batch_size": 64, "epochs": 1, "milestones": [], "augment": False, "eval_batch_size": 256,
            "log_every": 1, "checkpoint_every": 1}


def _config(**training) -> str:
    return json.dumps({"model": {"name": "lenet"}, "training": {**TRAINING, **training}})


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A staged data set, an initial LeNet checkpoint and its 50% mask, all made by lotto itself."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("artifacts")
    stage({"dataset": "mnist_embedded", "source": "embedded", "train_size": 256, "test_size": 64}, d / "data.npz")
    for argv in (
        ["init", "--config", _config(), "--threads", "1", "--data", d / "data.npz", "--replicate", 0,
         "--out", d / "init.safetensors"],
        ["prune", "--checkpoint", d / "init.safetensors", "--sparsity", 0.5, "--out", d / "good.mask"],
    ):
        assert cli.main([str(a) for a in argv]) == 0
    return d


@pytest.fixture
def run(capsys, monkeypatch):
    """lotto.cli.main in this process: (exit code, stderr)."""
    monkeypatch.delenv("LOTTO_DEBUG", raising=False)

    def call(*argv) -> tuple[int, str]:
        capsys.readouterr()
        code = cli.main([str(a) for a in argv])
        return code, capsys.readouterr().err

    return call


def assert_refused(code: int, err: str, out: Path, *names: str) -> str:
    """Non-zero exit, one 'lotto: error:' line naming ``names``, no traceback, nothing under ``out``."""
    assert code != 0, err
    lines = [ln for ln in err.splitlines() if ln.startswith("lotto: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for name in names:
        assert name in lines[0], (name, lines[0])
    out = Path(out)
    assert not out.exists(), f"{out} was left behind: a rerun would take it as complete"
    assert not list(out.parent.glob(f".{out.name}.*")), "a temporary file was left behind"
    return lines[0]


def train_argv(d: Path, source, out, *extra, config=None) -> list:
    return ["train", "--config", config or _config(), "--threads", "1", "--data", d / "data.npz", "--from", source,
            "--end", 2, "--replicate", 0, "--noise", "pretrain", "--out", out, *extra]


# --------------------------------------------------------------------------- damaged files
def _state_and_meta(path: Path) -> tuple[dict, str]:
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()["lotto"]


def truncated_checkpoint(d: Path) -> tuple[Path, str]:
    raw = (d / "init.safetensors").read_bytes()
    path = d / "truncated.safetensors"
    path.write_bytes(raw[: len(raw) * 2 // 3])
    return path, "truncated"


def wrong_shape_checkpoint(d: Path) -> tuple[Path, str]:
    state, meta = _state_and_meta(d / "init.safetensors")
    state["fc1.weight"] = torch.zeros(120, 399)  # the right name, one input too few
    path = d / "wrong_shape.safetensors"
    save_file(state, str(path), metadata={"lotto": meta})
    return path, "'fc1.weight'"


def foreign_checkpoint(d: Path) -> tuple[Path, str]:
    state, _ = _state_and_meta(d / "init.safetensors")
    path = d / "foreign.safetensors"
    save_file(state, str(path))  # a valid safetensors file, but not lotto's: no metadata
    return path, "not a lotto checkpoint"


def nan_checkpoint(d: Path) -> tuple[Path, str]:
    state, meta = _state_and_meta(d / "init.safetensors")
    state["conv2.weight"][0, 0, 0, 0] = float("nan")
    path = d / "nan.safetensors"
    save_file(state, str(path), metadata={"lotto": meta})
    return path, "'conv2.weight'"


def _first_float_at(path: Path, name: str) -> int:
    """Where the bytes of tensor ``name``'s first value lie in a safetensors file (8-byte header length, JSON
    header with each tensor's data offsets, then the data)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return 8 + n + json.loads(raw[8:8 + n])[name]["data_offsets"][0]


def bit_flipped_checkpoint(d: Path) -> tuple[Path, str]:
    """One bit of one weight, in place: the value stays finite and close (the file is well-formed and the right
    size), so only the digest recorded at writing tells it apart."""
    raw = bytearray((d / "init.safetensors").read_bytes())
    at = _first_float_at(d / "init.safetensors", "fc2.weight")
    before = struct.unpack("<f", raw[at:at + 4])[0]
    raw[at + 1] ^= 0x04  # a low mantissa bit
    after = struct.unpack("<f", raw[at:at + 4])[0]
    assert np.isfinite(after) and 0 < abs(after - before) < 1e-3 * abs(before)
    path = d / "flipped.safetensors"
    path.write_bytes(bytes(raw))
    return path, "'fc2.weight' does not match the sha256 recorded when it was written"


def absurd_checkpoint(d: Path) -> tuple[Path, str]:
    """One weight set to 1e30, in place (finite in float32)."""
    raw = bytearray((d / "init.safetensors").read_bytes())
    at = _first_float_at(d / "init.safetensors", "conv1.weight")
    raw[at:at + 4] = struct.pack("<f", 1e30)
    path = d / "absurd.safetensors"
    path.write_bytes(bytes(raw))
    return path, "'conv1.weight' holds 1e+30, beyond the bound"


DAMAGED_CHECKPOINTS = [truncated_checkpoint, wrong_shape_checkpoint, foreign_checkpoint, nan_checkpoint,
                       bit_flipped_checkpoint, absurd_checkpoint]


def truncated_mask(d: Path) -> tuple[Path, str]:
    raw = (d / "good.mask").read_bytes()
    path = d / "truncated.mask"
    path.write_bytes(raw[:-100])
    return path, "truncated"


def bit_flipped_mask(d: Path) -> tuple[Path, str]:
    raw = bytearray((d / "good.mask").read_bytes())
    raw[-500] ^= 0x10  # one weight flips; the file keeps its size
    path = d / "flipped.mask"
    path.write_bytes(bytes(raw))
    return path, "checksum"


DAMAGED_MASKS = [truncated_mask, bit_flipped_mask]


@pytest.mark.parametrize("command", ["prune", "train", "compose"])
@pytest.mark.parametrize("make", DAMAGED_CHECKPOINTS, ids=lambda f: f.__name__)
def test_a_damaged_checkpoint_is_refused(good, run, make, command):
    """prune and train read checkpoints with torch; compose's mean_magnitude reads them as numpy arrays."""
    bad, why = make(good)
    if command == "prune":
        out = good / f"pruned-{bad.stem}.mask"
        argv = ["prune", "--checkpoint", bad, "--sparsity", 0.5, "--out", out]
    elif command == "compose":
        out = good / f"mean-{bad.stem}.mask"
        argv = ["compose", "--op", "mean_magnitude", "--sparsity", 0.5, "--out", out, "--checkpoints",
                good / "init.safetensors", bad, "--", good / "good.mask", good / "good.mask"]
    else:
        out = good / f"trained-{bad.stem}.safetensors"
        argv = train_argv(good, bad, out)
    line = assert_refused(*run(*argv), out, str(bad))
    assert why in line


@pytest.mark.parametrize("make", DAMAGED_MASKS, ids=lambda f: f.__name__)
def test_mask_commands_refuse_a_damaged_mask(good, run, make):
    bad, why = make(good)
    out = good / f"ticket-{bad.stem}.mask"
    line = assert_refused(*run("random-ticket", "--mask", bad, "--replicate", 0, "--out", out), out, str(bad))
    assert why in line
    out = good / f"union-{bad.stem}.mask"
    assert_refused(*run("compose", "--op", "union", "--sparsity", 0.5, "--out", out, good / "good.mask", bad),
                   out, str(bad), why)
    out = good / f"trained-{bad.stem}.safetensors"
    assert_refused(*run(*train_argv(good, good / "init.safetensors", out, "--mask", bad)), out, str(bad), why)


def test_the_bit_flipped_mask_would_have_loaded_silently_without_its_checksum(good):
    """The flipped file is a well-formed mask of the right size: only the checksum tells it apart."""
    bad, _ = bit_flipped_mask(good)
    raw = bad.read_bytes()
    (hlen,) = struct.unpack("<I", raw[len(MAGIC):len(MAGIC) + 4])
    header = json.loads(raw[len(MAGIC) + 4:len(MAGIC) + 4 + hlen])
    assert header["version"] == 2 and header["kept"] == Mask.load(good / "good.mask").kept()
    bits = np.frombuffer(raw, np.uint8, offset=len(MAGIC) + 4 + hlen)
    silent = Mask(tuple((n, tuple(s)) for n, s in header["layout"]), bits)
    assert silent.kept() != header["kept"]


def test_checkpoints_carry_a_digest_of_every_tensor_read_back_by_torch_and_numpy(tmp_path):
    """ResNet-20 (BatchNorm: 0-d int64 counters beside float32 tensors), written and read by both readers."""
    from lotto import models

    model = models.build_model({"name": "resnet20"}, 3, 10, 32, 0)
    meta = {"kind": "init", "step": 0, "prunable": models.prunable_names(model),
            "model": {"name": "resnet20", "in_channels": 3, "num_classes": 10, "image_size": 32}}
    path = tmp_path / "r20.safetensors"
    io.save_checkpoint(path, model.state_dict(), meta)
    with safe_open(str(path), framework="np") as fh:
        digests = json.loads(fh.metadata()[io.DIGESTS_KEY])
        assert set(digests) == set(fh.keys()) == set(model.state_dict())
        counter = fh.get_tensor("bn.num_batches_tracked")
    assert counter.shape == () and digests["bn.num_batches_tracked"] == io.tensor_digest(counter)
    assert digests["conv.weight"] == {"dtype": "float32", "shape": [16, 3, 3, 3],
                                      "sha256": io.tensor_digest(model.state_dict()["conv.weight"])["sha256"]}
    state, read_meta = io.load_checkpoint(path)
    arrays, _ = io.load_arrays(path)
    assert io.DIGESTS_KEY not in read_meta and "lotto_digests" not in json.dumps(read_meta)
    assert all(torch.equal(state[k], v) and (arrays[k] == v.numpy()).all() for k, v in model.state_dict().items())


def test_one_checkpoint_written_by_several_processes_is_the_same_bytes(tmp_path):
    """safetensors keeps a file's metadata in a hash map whose order is random per process; a rerun (or the
    Slurm run beside a local one) must still write the same bytes, which is how a user checks a reproduction."""
    script = (
        "import sys, torch; from lotto import io; torch.manual_seed(0); "
        "io.save_checkpoint(sys.argv[1], {'w': torch.randn(3, 4), 'b': torch.zeros(3)}, "
        "{'kind': 'init', 'step': 0, 'prunable': ['w']})"
    )
    paths = [tmp_path / f"c{i}.safetensors" for i in range(6)]
    for p in paths:
        subprocess.run([sys.executable, "-c", script, str(p)], check=True)
    blobs = {p.read_bytes() for p in paths}
    assert len(blobs) == 1, "the same checkpoint in different bytes"
    state, meta = io.load_checkpoint(paths[0])  # the rewritten header reads back, digests checked
    assert meta["kind"] == "init" and torch.equal(state["b"], torch.zeros(3))


def test_a_checkpoint_without_digests_is_read_with_one_warning_line(good, run):
    """Written before lotto recorded digests (re-saved here without them): still read, with one warning line per
    file however often it is read, and still checked for values."""
    state, meta = _state_and_meta(good / "init.safetensors")
    old = good / "undigested.safetensors"
    save_file(state, str(old), metadata={"lotto": meta})
    io.UNDIGESTED.discard(str(old))
    out = good / "undigested.mask"
    code, err = run("prune", "--checkpoint", old, "--sparsity", 0.5, "--out", out)
    assert code == 0, err
    assert Mask.load(out).equal(Mask.load(good / "good.mask"))
    warnings = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and warnings[0].startswith(f"lotto: warning: {old}: written before lotto recorded "
                                                         "tensor digests"), err
    code, err = run("prune", "--checkpoint", old, "--sparsity", 0.8, "--out", good / "undigested-0.8.mask")
    assert code == 0 and "warning" not in err, err  # the same process (a fork server child would be a new one)


def test_masks_of_different_layouts_are_refused_naming_both_files(good, run):
    other = good / "other-network.mask"
    Mask.from_bools({"fc.weight": np.ones((10, 784), bool)}).save(other)
    out = good / "union-mixed.mask"
    line = assert_refused(*run("compose", "--op", "union", "--sparsity", 0.5, "--out", out, good / "good.mask", other),
                          out, str(other), str(good / "good.mask"))
    assert "different layouts" in line
    out = good / "trained-other-mask.safetensors"
    assert_refused(*run(*train_argv(good, good / "init.safetensors", out, "--mask", other)), out, str(other),
                   str(good / "init.safetensors"))


def test_a_checkpoint_of_another_model_than_the_config_is_refused(good, run):
    out = good / "trained-as-resnet.safetensors"
    config = json.dumps({"model": {"name": "resnet20"}, "training": TRAINING})
    line = assert_refused(*run(*train_argv(good, good / "init.safetensors", out, config=config)), out,
                          str(good / "init.safetensors"))
    assert "resnet20" in line and "lenet" in line


# --------------------------------------------------------------------------- training that diverges
@pytest.fixture(scope="module")
def hot(good) -> Path:
    """A LeNet whose fc2 weights are 1e4 times too large (finite): with lr 1e36 its first loss is finite, and
    the first update makes fc3's weights infinite (gradient ~1e4 x lr 1e36 > float32's 3.4e38)."""
    state, meta = _state_and_meta(good / "init.safetensors")
    state["fc2.weight"] *= 1e4
    path = good / "hot.safetensors"
    save_file(state, str(path), metadata={"lotto": meta})
    return path


def test_training_refuses_to_save_non_finite_weights(good, hot, run):
    """One step: its loss is finite (computed before the update), the update makes weights infinite, and the
    run ends before a second loss could turn NaN: only the check before saving stops it."""
    out, metrics = good / "diverged.safetensors", good / "diverged.json"
    code, err = run(*train_argv(good, hot, out, "--end", 1, "--metrics", metrics, config=_config(lr=1e36)))
    line = assert_refused(code, err, out, str(out))
    assert "non-finite" in line and "training.lr" in line
    assert not metrics.exists()
    assert "warning: the largest weight magnitude is inf" in err


def test_training_whose_loss_turns_nan_is_one_line(good, hot, run):
    out = good / "nan-loss.safetensors"
    line = assert_refused(*run(*train_argv(good, hot, out, "--end", 3, config=_config(lr=1e36))), out, str(out))
    assert "loss became nan" in line and str(hot) in line


def test_an_unexpected_error_is_one_line_with_the_way_to_the_traceback(good, run):
    """lr 1e300 passes the config (a finite number) but overflows torch's float32 step size: not one of lotto's
    own messages, so the line carries the exception type and points to --debug."""
    out = good / "overflow.safetensors"
    line = assert_refused(*run(*train_argv(good, good / "init.safetensors", out, config=_config(lr=1e300))), out,
                          str(out))
    assert "RuntimeError" in line and "--debug" in line


def test_exploding_weights_with_a_finite_loss_are_a_warning_then_refused_at_saving(good, run):
    """Weights beyond io.VALUE_BOUND (finite, the loss too) are a warning while training and are not saved: every
    reader would refuse them (issue 21), so the training that made them fails, naming the tensor and the value."""
    out, metrics = good / "exploding.safetensors", good / "exploding.json"
    code, err = run(*train_argv(good, good / "init.safetensors", out, "--end", 1, "--metrics", metrics,
                                config=_config(lr=1e9)))
    assert "warning: the largest weight magnitude" in err
    line = assert_refused(code, err, out, str(out))
    assert "beyond the bound 1e+06" in line and "training.lr" in line
    value = float(line.split(" holds ")[1].split(",")[0])
    assert 1e6 < abs(value) < float("inf")
    assert not metrics.exists()

    out, metrics = good / "healthy.safetensors", good / "healthy.json"
    code, err = run(*train_argv(good, good / "init.safetensors", out, "--metrics", metrics))
    assert code == 0, err
    assert "warning" not in err
    assert 0 < json.loads(metrics.read_text())["max_abs_weight"] < 10


# --------------------------------------------------------------------------- disk full
@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs (root only; skipped elsewhere)."""
    if shutil.which("mount") is None:
        pytest.skip("no mount command to make a tiny file system to fill")
    where = tmp_path / "tiny"
    where.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True,
                           text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tiny tmpfs to fill (needs root): {mount.stderr.strip()}")
    yield where
    subprocess.run(["umount", str(where)], check=True)


def _assert_disk_full(code: int, err: str, written: Path, out: Path) -> None:
    line = assert_refused(code, err, out, "No space left on device", str(written))
    assert "unexpected pos" not in line
    assert not [p for p in written.parent.iterdir() if p.name.startswith(f".{written.name}.")]


def test_disk_full_writing_a_checkpoint(good, run, full_disk):
    out = full_disk / "init.safetensors"  # ~240 KB of LeNet (safetensors' writer)
    code, err = run("init", "--config", _config(), "--threads", 1, "--data", good / "data.npz", "--replicate", 0,
                    "--out", out)
    _assert_disk_full(code, err, out, out)


def test_disk_full_writing_a_mask(good, run, full_disk):
    (full_disk / "filler").write_bytes(b"\0" * (60 << 10))  # leaves 4 KiB: less than the 7.5 KB mask
    out = full_disk / "pruned.mask"  # Python's own writes
    code, err = run("prune", "--checkpoint", good / "init.safetensors", "--sparsity", 0.5, "--out", out)
    _assert_disk_full(code, err, out, out)


def test_disk_full_saving_the_resume_state(good, run, full_disk):
    """torch.save's zip writer only says 'unexpected pos N vs M' when the disk is full."""
    state, out = full_disk / "state.pt", good / "not-written.safetensors"
    code, err = run(*train_argv(good, good / "init.safetensors", out, "--resume-state", state))
    _assert_disk_full(code, err, state, out)


# --------------------------------------------------------------------------- the one error path itself
def _damaged_mask_subprocess(d: Path, *options: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # random-ticket imports no torch: a real process in a fraction of a second
    bad, _ = bit_flipped_mask(d)
    environ = {k: v for k, v in os.environ.items() if k != "LOTTO_DEBUG"}
    return subprocess.run([LOTTO, *options, "random-ticket", "--mask", str(bad), "--replicate", "0", "--out",
                           str(d / "never.mask")], capture_output=True, text=True, env={**environ, **(env or {})},
                          timeout=120)


def test_a_real_process_prints_exactly_one_line(good):
    proc = _damaged_mask_subprocess(good)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("lotto: error: "), proc.stderr
    assert str(good / "flipped.mask") in proc.stderr


@pytest.mark.parametrize("how", ["LOTTO_DEBUG=1", "--debug"])
def test_debug_shows_the_traceback(good, how):
    if how == "--debug":
        proc = _damaged_mask_subprocess(good, "--debug")
    else:
        proc = _damaged_mask_subprocess(good, env={"LOTTO_DEBUG": "1"})
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and "ArtifactError" in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("lotto: error: ")


def test_config_errors_and_usage_errors_are_one_line_too(good, run, capsys):
    bad = good / "bad.yaml"
    bad.write_text("training:\n  lr: -1\n  epochs: zero\n")
    code, err = run("validate", str(bad))
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("lotto: error: "), err
    assert "training.lr" in err and "training.epochs" in err
    with pytest.raises(SystemExit) as exc:
        cli.main(["prune", "--checkpoint", "x"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("lotto: error: "), err


# --------------------------------------------------------------------------- the mask format
def test_version_1_masks_stay_readable_and_unknown_versions_are_refused(tmp_path):
    mask = Mask.from_bools({"w": np.array([1, 0, 1, 1, 0, 0, 1, 0, 1], bool)})

    def write(version: int) -> Path:
        header = json.dumps({"version": version, "layout": [["w", [9]]], "meta": {}}).encode()
        path = tmp_path / f"v{version}.mask"
        path.write_bytes(MAGIC + struct.pack("<I", len(header)) + header + mask.bits.tobytes())
        return path

    assert Mask.load(write(1)).equal(mask)  # no checksum to verify: size and padding are still checked
    with pytest.raises(io.ArtifactError, match="version 3"):
        Mask.load(write(3))
    padded = write(1)
    raw = bytearray(padded.read_bytes())
    raw[-1] |= 0x01  # a padding bit after the 9th weight
    padded.write_bytes(bytes(raw))
    with pytest.raises(io.ArtifactError, match="padding"):
        Mask.load(padded)


def test_a_stored_kept_count_that_disagrees_is_refused(tmp_path):
    path = tmp_path / "m.mask"
    Mask.from_bools({"w": np.array([1, 0, 1, 1], bool)}).save(path)
    raw = path.read_bytes()
    (hlen,) = struct.unpack("<I", raw[len(MAGIC):len(MAGIC) + 4])
    header = json.loads(raw[len(MAGIC) + 4:len(MAGIC) + 4 + hlen])
    header["kept"] = 2
    new = json.dumps(header).encode()
    path.write_bytes(MAGIC + struct.pack("<I", len(new)) + new + raw[len(MAGIC) + 4 + hlen:])
    with pytest.raises(io.ArtifactError, match="keeps 3 weights, its header says 2"):
        Mask.load(path)


def test_the_mask_remembers_its_file(good, tmp_path):
    copy = tmp_path / "copy.mask"
    shutil.copy(good / "good.mask", copy)
    assert Mask.load(copy).source == str(copy)
