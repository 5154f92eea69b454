"""Atomic writes and self-describing artifacts (safetensors checkpoints, JSON)."""

from __future__ import annotations

import contextlib
import json
import os
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
    finally:
        if tmp.exists():
            tmp.unlink()


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


def save_checkpoint(path: str | Path, state_dict: dict, meta: dict) -> None:
    """Save a model state dict as safetensors with ``meta`` (step, seeds, config...) in its header."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_write(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"lotto": json.dumps(meta, sort_keys=True)})


def load_checkpoint(path: str | Path, device: str = "cpu", framework: str = "pt") -> tuple[dict, dict]:
    """Load (state_dict, meta) without executing any pickled code.

    ``framework="numpy"`` gives numpy arrays (on the CPU) and never imports torch: the light jobs that only
    rank weights (``lotto prune``, ``lotto imp-prune``) start in a fraction of a second that way.
    """
    from safetensors import SafetensorError, safe_open

    if framework not in ("pt", "numpy"):
        raise ValueError(f"framework must be 'pt' or 'numpy', got {framework!r}")
    if framework == "numpy" and str(device) != "cpu":
        raise ValueError(f"numpy arrays live on the CPU, not on {device!r}")
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework=framework, device=str(device)) as fh:
            meta = json.loads((fh.metadata() or {}).get("lotto", "{}"))
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not a readable lotto checkpoint ({exc})") from None
    return state, meta
