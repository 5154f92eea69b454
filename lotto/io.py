"""Atomic writes and self-describing artifacts (safetensors checkpoints, JSON)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator


class ArtifactError(ValueError):
    """An artifact file is missing, unreadable or not what it should be; the message names the file."""


def current_umask() -> int:
    """The process's umask, read without changing it (Linux: /proc/self/status).

    Elsewhere it falls back to setting and restoring it, which is not atomic: another thread creating a
    file in between would get the temporary mask 0o022.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mkstemp(path: Path, suffix: str) -> str:
    # A concurrent job's clean-up (lotto.train.clear_resume) may remove the empty parent folder between
    # our mkdir and mkstemp: create it again rather than fail the job.
    tries = 5
    while True:
        tries -= 1
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
        except FileNotFoundError:
            if not tries:
                raise
            continue
        os.close(fd)
        return tmp


@contextlib.contextmanager
def atomic_write(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only if the block succeeds.

    A killed or failing job never leaves a half-written artifact under the final name. The file gets the
    mode an ordinary ``open(path, "w")`` would give it (0o666 minus the umask: 0644 under umask 022),
    not mkstemp's private 0600, so lab-mates on a shared file system can read the results.
    """
    path = Path(path)
    tmp = Path(_mkstemp(path, suffix))
    try:
        yield tmp
        # after the block: a writer may have replaced the temporary file rather than written into it
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except Exception as exc:
        if _disk_full(exc, path.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


# Below this many free bytes a failed write is taken for a full disk: a write that failed for lack of space leaves
# less than one write buffer free, while the temporary file is still there (this is checked before it is removed).
_FULL_BELOW = 1 << 20
_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _disk_full(exc: BaseException, directory: Path) -> bool:
    """Did ``exc`` (raised while writing into ``directory``) happen because the file system is full?

    Writers report it differently: Python's own writes raise OSError(ENOSPC); safetensors raises a
    SafetensorError whose text carries "os error 28"; torch's zip writer (torch.save) only says
    "unexpected pos N vs M". So: the errno or the text anywhere in the exception chain, else (for the
    I/O-ish errors) the free space left in the directory.
    """
    seen, depth = exc, 0
    while seen is not None and depth < 8:
        if getattr(seen, "errno", None) in _FULL_ERRNOS:
            return True
        text = str(seen)
        if "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text:
            return True
        seen, depth = seen.__cause__ or seen.__context__, depth + 1
    if not isinstance(exc, (OSError, RuntimeError)):
        return False
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_blocks > 0 and st.f_bavail * st.f_frsize < _FULL_BELOW


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None


#: safetensors metadata key, beside "lotto", of the per-tensor digests: {name: {"dtype", "shape", "sha256"}}.
#  Kept out of the "lotto" metadata so that the meta a reader gets (and may copy) is unchanged.
DIGESTS_KEY = "lotto_digests"

#: The largest magnitude a checkpoint's floating-point value (weight, bias, BatchNorm statistic) may have.
#  Measured over the checkpoints of real runs of every model of the catalog (docs/ARCHITECTURE.md, "Checkpoints":
#  the demo, the tiny configs, ResNet-20 on CIFAR-10, resnet18/vgg11/alexnet): the largest |value| was 356 (a
#  BatchNorm running variance), weights stayed below 2. The bound is training's own divergence alarm
#  (lotto.train.WEIGHT_WARN): a single weight of 1e6 saturates the softmax, so a working training stays far below
#  it, while a flipped high exponent bit (x 2^64, x 2^128) or a planted 1e30 lies far beyond it.
VALUE_BOUND = 1e6


def save_checkpoint(path: str | Path, state_dict: dict, meta: dict) -> None:
    """Save a model state dict as safetensors with ``meta`` (step, seeds, config...) and the writer's
    ``provenance`` (lotto.provenance) in its header, and the digest of every tensor (:func:`tensor_digest`)
    under :data:`DIGESTS_KEY`, which every read checks.

    Refuses non-finite tensors and values beyond :data:`VALUE_BOUND` (FloatingPointError naming the tensor):
    a diverged network is never an artifact, and no lotto job writes what its readers would refuse.
    """
    from safetensors.torch import save

    from lotto.provenance import provenance

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    # the shape of every tensor, so that readers without torch (the light mask jobs) can check a checkpoint
    meta = {**meta, "provenance": provenance(), "shapes": {k: list(v.shape) for k, v in tensors.items()}}
    bad = first_non_finite(tensors)
    if bad:
        name, count = bad
        raise FloatingPointError(
            f"refusing to write {path}: tensor '{name}' holds {count} non-finite values (NaN or inf), the "
            "training diverged; lower training.lr and rerun"
        )
    beyond = first_beyond_bound(tensors)
    if beyond:
        name, value = beyond
        raise FloatingPointError(
            f"refusing to write {path}: tensor '{name}' holds {value:.6g}, beyond the bound {VALUE_BOUND:.0e} that "
            "no trained network of lotto's catalog reaches, the training diverged; lower training.lr and rerun"
        )
    digests = {k: tensor_digest(v) for k, v in tensors.items()}
    blob = save(tensors, metadata={"lotto": json.dumps(meta, sort_keys=True),
                                   DIGESTS_KEY: json.dumps(digests, sort_keys=True)})
    with atomic_write(path, suffix=".safetensors") as tmp:
        tmp.write_bytes(canonical_safetensors(blob))


def canonical_safetensors(blob: bytes) -> bytes:
    """``blob`` (a serialised safetensors file) with its header's metadata in sorted key order.

    safetensors keeps the metadata in a Rust HashMap, whose order is random per process: with two or more keys,
    two runs of one job wrote the same tensors and metadata in different bytes (the Slurm test caught it), and a
    checkpoint's sha256 is how a user (and lotto's tests) check that a rerun reproduced a file. The header is JSON
    padded with spaces to 8 bytes (the format's alignment); the tensors' offsets are relative to the data after
    it, so a rewritten header leaves them valid.
    """
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + n:]


def tensor_digest(t) -> dict:
    """{"dtype", "shape", "sha256"} of a tensor (torch or numpy): the sha256 of its bytes as safetensors stores
    them (C order, the machine's little-endian layout), without copying a contiguous CPU tensor. Cheap per tensor
    (no torch op beyond ``numpy()``): a ResNet-20 has 128 of them."""
    import numpy as np

    if hasattr(t, "detach"):  # torch, through its methods: io itself never imports torch
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        dtype, shape = str(t.dtype).removeprefix("torch."), list(t.shape)
        try:
            a = t.numpy()
        except TypeError:  # bfloat16 and other dtypes numpy lacks: their bytes
            import torch  # already imported: t is a torch tensor

            a = t.contiguous().reshape(-1).view(torch.uint8).numpy()
    else:
        a = np.asarray(t)
        dtype, shape = a.dtype.name, list(a.shape)
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    return {"dtype": dtype, "shape": shape, "sha256": hashlib.sha256(a.data).hexdigest()}


def first_non_finite(state: dict) -> tuple[str, int] | None:
    """(name, count) of the first floating-point tensor (torch or numpy) holding NaN or inf values; None when
    all are finite."""
    import numpy as np

    for name, t in state.items():
        if hasattr(t, "is_floating_point"):  # torch, through its methods: io itself never imports torch
            if t.is_floating_point():
                bad = int((~t.isfinite()).sum())
                if bad:
                    return name, bad
        elif np.issubdtype(np.asarray(t).dtype, np.floating):
            bad = int((~np.isfinite(t)).sum())
            if bad:
                return name, bad
    return None


def first_beyond_bound(state: dict, bound: float | None = None) -> tuple[str, float] | None:
    """(name, value) of the first floating-point tensor (torch or numpy) holding a value of magnitude above
    ``bound`` (default :data:`VALUE_BOUND`), with its largest such value; None when all are within. Non-finite
    values are :func:`first_non_finite`'s to report."""
    import numpy as np

    bound = VALUE_BOUND if bound is None else bound
    for name, t in state.items():
        if hasattr(t, "is_floating_point"):
            if not t.is_floating_point() or not t.numel():
                continue
            lo, hi = (float(v) for v in t.aminmax())
        else:
            a = np.asarray(t)
            if not np.issubdtype(a.dtype, np.floating) or not a.size:
                continue
            lo, hi = float(a.min()), float(a.max())
        value = hi if abs(hi) >= abs(lo) else lo
        if abs(value) > bound:  # False for NaN: reported as non-finite
            return name, value
    return None


_REDO = "delete it and rerun the job that wrote it"


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[dict, dict]:
    """Load (state_dict, meta) without executing any pickled code, and check it is what lotto wrote.

    Refused (ArtifactError naming the file and the first offending tensor): unreadable or truncated files,
    safetensors files without lotto's metadata, tensors whose names or shapes are not those of the network the
    metadata describes, and non-finite weights.
    """
    state, meta = _read_safetensors(path, "pt", device=str(device))
    m = meta.get("model")
    if m is not None:  # every checkpoint lotto writes says which network it holds; hand-made test files may not
        network = (f"a {m['name']} for {m['in_channels']}x{m['image_size']}x{m['image_size']} inputs and "
                   f"{m['num_classes']} classes")
        _check_state(path, state, _expected_shapes(path, meta), network)
    return state, meta


def load_arrays(path: str | Path, names: list[str] | None = None) -> tuple[dict, dict]:
    """(numpy arrays by name, meta) of a checkpoint, without torch: light jobs (masks from weights) stay light.

    ``names``: the tensors to read (default: all), in that order; a missing one is an error naming the file.
    Checked like :func:`load_checkpoint`: shapes against the manifest the writer stored (``meta["shapes"]``),
    or, for checkpoints written before lotto stored one, against the network the metadata describes (that
    imports torch).
    """
    state, meta = _read_safetensors(path, "np", names=names)
    shapes = meta.get("shapes")
    if isinstance(shapes, dict):
        what = f"the {meta.get('model', {}).get('name', 'network')} this checkpoint was written for"
        _check_state(path, state, {n: tuple(shapes[n]) for n in state if n in shapes}, what)
        unknown = [n for n in state if n not in shapes]
        if unknown:
            raise ArtifactError(f"{path}: tensor '{unknown[0]}' is not part of {what}; {_REDO}")
    elif meta.get("model") is not None and names is None:
        m = meta["model"]
        network = (f"a {m['name']} for {m['in_channels']}x{m['image_size']}x{m['image_size']} inputs and "
                   f"{m['num_classes']} classes")
        _check_state(path, state, _expected_shapes(path, meta), network)
    return state, meta


def _read_safetensors(path, framework: str, names=None, **open_kw) -> tuple[dict, dict]:
    """Read the tensors ``names`` (default: all) and the lotto metadata, and check them: non-finite values,
    values beyond :data:`VALUE_BOUND`, then every tensor read against the digest the writer recorded (bytes,
    dtype, shape). A checkpoint without digests (written before lotto recorded them) is read with one
    warning line per file and process."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: checkpoint not found; check the path, or run the job that makes it")
    try:
        with safe_open(str(path), framework=framework, **open_kw) as fh:
            header = fh.metadata() or {}
            present = list(fh.keys())
            wanted = present if names is None else list(names)
            missing = [n for n in wanted if n not in present]
            if missing:
                raise ArtifactError(f"{path}: tensor '{missing[0]}' is missing from the checkpoint; {_REDO}")
            state = {k: fh.get_tensor(k) for k in wanted}
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{path}: not a readable checkpoint, truncated or damaged ({exc}); {_REDO}") from None
    meta = _lotto_meta(path, header)
    absent = [n for n in meta["prunable"] if n not in present]
    if absent:
        raise ArtifactError(f"{path}: its metadata lists prunable weight '{absent[0]}', which it does not hold; "
                            f"{_REDO}")
    bad = first_non_finite(state)
    if bad:
        raise ArtifactError(
            f"{path}: tensor '{bad[0]}' holds {bad[1]} non-finite values (NaN or inf), a diverged or damaged "
            f"network; {_REDO} (with a lower training.lr if it diverged)"
        )
    beyond = first_beyond_bound(state)
    if beyond:
        raise ArtifactError(
            f"{path}: tensor '{beyond[0]}' holds {beyond[1]:.6g}, beyond the bound {VALUE_BOUND:.0e} that no "
            f"trained network of lotto's catalog reaches: damaged, or written by a diverged training; {_REDO}"
        )
    # after the values, whose messages say more (which value) about the damage that a digest also shows
    _check_digests(path, header, present, state)
    return state, meta


#: the checkpoints this process read that carry no digests (each warned about once)
UNDIGESTED: set[str] = set()


def _check_digests(path: Path, header: dict, present: list[str], state: dict) -> None:
    """Check the tensors read (``state``) against the digests in the header; every tensor the file holds must
    have one, and every digest a tensor."""
    if DIGESTS_KEY not in header:
        if state and str(path) not in UNDIGESTED:  # a header-only read (provenance) checks no bytes
            UNDIGESTED.add(str(path))
            print(f"lotto: warning: {path}: written before lotto recorded tensor digests in checkpoints, so its "
                  "bytes cannot be verified (values and shapes still are); rerun the job that wrote it to add them",
                  file=sys.stderr, flush=True)
        return
    try:
        digests = json.loads(header[DIGESTS_KEY])
        if not isinstance(digests, dict) or not all(isinstance(d, dict) for d in digests.values()):
            raise ValueError("not a JSON object of objects")
    except ValueError as exc:
        raise ArtifactError(f"{path}: damaged tensor digests in its header ({exc}); {_REDO}") from None
    unlisted = [n for n in present if n not in digests]
    if unlisted:
        raise ArtifactError(f"{path}: tensor '{unlisted[0]}' has no digest in the checkpoint's header (added after "
                            f"it was written?); {_REDO}")
    gone = [n for n in digests if n not in present]
    if gone:
        raise ArtifactError(f"{path}: tensor '{gone[0]}', recorded when the checkpoint was written, is missing; "
                            f"{_REDO}")
    for name, t in state.items():
        want, got = digests[name], tensor_digest(t)
        for key in ("dtype", "shape"):
            if got[key] != want.get(key):
                raise ArtifactError(f"{path}: tensor '{name}' has {key} {got[key]}, written as {want.get(key)}; "
                                    f"{_REDO}")
        if got["sha256"] != want.get("sha256"):
            raise ArtifactError(f"{path}: tensor '{name}' does not match the sha256 recorded when it was written "
                                f"(its bytes changed on disk or in a copy); {_REDO}")


def _lotto_meta(path: Path, header: dict) -> dict:
    """The lotto metadata of a safetensors header, checked for the keys every lotto checkpoint carries."""
    foreign = (f"{path}: not a lotto checkpoint (a safetensors file without lotto's metadata{{}}); lotto reads "
               "only checkpoints written by lotto init / lotto train")
    if "lotto" not in header:
        raise ArtifactError(foreign.format(""))
    try:
        meta = json.loads(header["lotto"])
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: damaged lotto metadata ({exc}); {_REDO}") from None
    model = meta.get("model") if isinstance(meta, dict) else None
    for key, ok in (
        ("step", isinstance(meta, dict) and isinstance(meta.get("step"), int)),
        ("prunable", isinstance(meta, dict) and isinstance(meta.get("prunable"), list)),
        ("model", model is None or isinstance(model, dict)
         and {"name", "in_channels", "num_classes", "image_size"} <= set(model)),
    ):
        if not ok:
            raise ArtifactError(foreign.format(f": key '{key}' missing or malformed"))
    return meta


def _expected_shapes(path: Path, meta: dict) -> dict[str, tuple[int, ...]]:
    from lotto import models

    m = meta["model"]
    try:
        return models.state_shapes(m["name"], m["in_channels"], m["num_classes"], m["image_size"])
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"{path}: its metadata describes no network lotto can build ({exc}); {_REDO}") from None


def _check_state(path: str | Path, state: dict, expected: dict[str, tuple[int, ...]], what: str) -> None:
    """Raise ArtifactError naming ``path`` and the first tensor whose name or shape differs from ``expected``
    (name -> shape of the network ``what``, e.g. "a lenet")."""
    for name, shape in expected.items():
        if name not in state:
            raise ArtifactError(f"{path}: tensor '{name}' of {what} is missing; {_REDO}")
        got = tuple(state[name].shape)
        if got != tuple(shape):
            raise ArtifactError(
                f"{path}: tensor '{name}' has shape {list(got)}, {what} needs {list(shape)}; it is damaged or "
                f"was made for another network: {_REDO}"
            )
    extra = [n for n in state if n not in expected]
    if extra:
        raise ArtifactError(f"{path}: tensor '{extra[0]}' is not part of {what}; {_REDO}")
