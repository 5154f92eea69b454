"""Step-based training: every schedule position is an iteration count.

A run trains from step ``start`` to step ``end`` of one schedule (learning-rate milestones are steps), so
pretraining to t and then training siblings from t to the end reproduce one uninterrupted schedule.
The data a step sees is a pure function of (step, data seed, augmentation seed) (see ``lotto.data``),
which makes a run resumable from any saved step with bit-identical results.

:func:`train` is the loop over steps; the rest are small parts it calls, each tested on its own:

* :class:`Stepper`: one optimisation step (forward, loss, backward, SGD update) with the model set up for it.
  Pruned weights are held at exactly zero: their gradients are masked before every optimizer step (so
  momentum and weight decay never move them) and the weights are masked again after it;
* :class:`Progress`: the log lines, the training curve and the run's statistics;
* :class:`Resume`: the resumable state, restored at the start, saved periodically and on SIGTERM
  (:class:`SigtermFlag`, :class:`Interrupted`);
* :class:`Divergence`: a non-finite loss stops the run, exploding weights are logged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lotto.curves import format_duration
from lotto.io import VALUE_BOUND, atomic_write


@dataclass(frozen=True)
class Schedule:
    lr: float
    momentum: float
    weight_decay: float
    nesterov: bool
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    milestones: tuple[int, ...]
    gamma: float
    warmup_steps: int

    @staticmethod
    def from_config(train_cfg: dict, num_train: int) -> "Schedule":
        spe = math.ceil(num_train / train_cfg["batch_size"])
        return Schedule(
            lr=train_cfg["lr"],
            momentum=train_cfg["momentum"],
            weight_decay=train_cfg["weight_decay"],
            nesterov=train_cfg["nesterov"],
            batch_size=train_cfg["batch_size"],
            steps_per_epoch=spe,
            total_steps=int(round(train_cfg["epochs"] * spe)),
            milestones=tuple(int(round(m * spe)) for m in train_cfg["milestones"]),
            gamma=train_cfg["gamma"],
            warmup_steps=train_cfg["warmup_steps"],
        )

    def lr_at(self, step: int) -> float:
        lr = self.lr * self.gamma ** sum(step >= m for m in self.milestones)
        if self.warmup_steps and step < self.warmup_steps:
            lr *= (step + 1) / self.warmup_steps
        return lr


def pick_device(requested: str = "auto", exclusive: bool = False, log: Callable[[str], None] | None = None
                ) -> torch.device:
    """CUDA when present (``auto``), else the CPU; ``cuda`` without a CUDA device is a config error, raised
    before anything is loaded.

    ``exclusive`` (training jobs): claim a device slot for the life of the process (``lotto.devices``): one of
    ``resources.trainings_per_gpu`` slots on one of the GPUs, so that the concurrent jobs of
    ``snakemake --resources gpu=G`` spread over the GPUs and no more than that many share one. With
    CUDA_VISIBLE_DEVICES set (Slurm sets it for the job's allocation) the slots are those of the listed
    devices; the claim is made (and logged) even when torch cannot use them, e.g. the fake GPUs of the test
    cluster, where the training then runs on the CPU.
    """
    if requested == "cpu":
        return torch.device("cpu")
    cuda = torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        from lotto.config import ConfigError

        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        seen = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise ConfigError(
            f"config key 'training.device': 'cuda', but torch {torch.__version__} ({build}) finds no CUDA device "
            f"on {platform.node() or 'this machine'}"
            + (f" (CUDA_VISIBLE_DEVICES={seen!r})" if seen is not None else "")
            + "; use 'auto' (CUDA where present, else the CPU) or 'cpu', or run on a machine with a GPU"
        )
    if exclusive:
        from lotto import devices

        held = devices.claim_for_process(torch.cuda.device_count() if cuda else None, log=log)
        if held is not None and cuda:
            torch.cuda.set_device(held.index)
            return torch.device("cuda", held.index)
        if held is not None and log is not None:
            log(f"warning: GPU {held.name} was allotted (CUDA_VISIBLE_DEVICES), but torch {torch.__version__} "
                "finds no CUDA device: training on the CPU")
    return torch.device("cuda") if cuda else torch.device("cpu")


def _mask_tensors(mask, device) -> dict[str, torch.Tensor]:
    return {} if mask is None else {n: t.to(device) for n, t in mask.to_torch(device).items()}


@torch.no_grad()
def apply_mask(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, m in masks.items():
        params[name].mul_(m.to(params[name].dtype))


# training.precision -> autocast dtype (None = plain fp32). fp32 is the default: mixed precision changes the
# arithmetic, so results are only equal within run-to-run noise (tests/test_speed.py).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``training.precision`` on ``device``; a clear error where it cannot run.

    fp16 needs loss scaling and is only supported on CUDA. bf16 also runs on the CPU (torch's CPU autocast):
    it is faster only on CPUs with AVX512-BF16/AMX instructions and slower elsewhere.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"training.precision: unknown value {precision!r} (expected one of {', '.join(PRECISIONS)})")
    if precision == "fp16" and torch.device(device).type != "cuda":
        raise ValueError(
            f"training.precision: 'fp16' needs a CUDA device, but training runs on {torch.device(device)}; "
            "use 'fp32' (default) or 'bf16' on the CPU"
        )
    return PRECISIONS[precision]


# A weight magnitude that means divergence while the loss may still be finite. Kaiming/Glorot initialisations
# give |w| of order 1/sqrt(fan_in), and trained networks (weight decay, BatchNorm) stay within ~1-10; a single
# weight of 1e6 already drives logits to ~1e6 on unit inputs (softmax saturated, gradients exploding), yet it is
# 32 orders of magnitude below float32 overflow, so the warning comes long before the loss turns NaN. It is
# the bound lotto.io refuses to save or read beyond: the warning says early what will stop the run at saving.
WEIGHT_WARN = VALUE_BOUND


@torch.no_grad()
def max_abs_weight(model: torch.nn.Module) -> float:
    """The largest |w| over all parameters (one device sync); NaN if any is NaN."""
    peaks = [p.detach().abs().amax().float() for p in model.parameters() if p.numel()]
    return float(torch.stack(peaks).max()) if peaks else 0.0


class SGD:
    """``torch.optim.SGD`` (dampening 0, no maximize) as a thin loop around its own functional update,
    ``torch.optim.sgd.sgd``: the same arithmetic on every device (foreach kernels where torch would pick them),
    so the weights are bit-identical to the optimizer's.

    Why not the optimizer itself: its ``step()`` and ``zero_grad()`` import ``torch._dynamo`` on first use,
    ~2 s of CPU in every training process (as much as importing torch; more than a short retraining on a
    GPU), although nothing here is compiled. ``state_dict()`` has ``torch.optim.SGD``'s layout, so resume
    states written by either load into the other. ``torch.amp.GradScaler.step`` accepts it (it needs
    ``param_groups`` and ``step``).
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False):
        params = list(params)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum requires a momentum > 0")
        self.param_groups = [{
            "params": params, "lr": lr, "momentum": momentum, "dampening": 0, "weight_decay": weight_decay,
            "nesterov": nesterov, "maximize": False, "foreach": None, "differentiable": False, "fused": None,
        }]
        self._momentum: list[torch.Tensor | None] = [None] * len(params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not set_to_none:
            raise ValueError("only zero_grad(set_to_none=True) is supported")
        for p in self.param_groups[0]["params"]:
            p.grad = None

    def step(self) -> None:
        from torch.optim.sgd import sgd

        group = self.param_groups[0]
        live = [i for i, p in enumerate(group["params"]) if p.grad is not None]
        params = [group["params"][i] for i in live]
        buffers = [self._momentum[i] for i in live]
        with torch.no_grad():
            sgd(params, [p.grad for p in params], buffers, has_sparse_grad=False, foreach=None, fused=None,
                weight_decay=group["weight_decay"], momentum=group["momentum"], lr=group["lr"],
                dampening=group["dampening"], nesterov=group["nesterov"], maximize=False)
        if group["momentum"] != 0:
            for i, buf in zip(live, buffers):  # sgd() fills in the buffers of a first step
                self._momentum[i] = buf

    def state_dict(self) -> dict:
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        group["params"] = list(range(len(self._momentum)))
        state = {i: {"momentum_buffer": b} for i, b in enumerate(self._momentum) if b is not None}
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict) -> None:
        params = self.param_groups[0]["params"]
        groups = state_dict["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(params):
            raise ValueError(f"optimizer state for {[len(g['params']) for g in groups]} parameters, "
                             f"this model has {len(params)}")
        for key in ("lr", "momentum", "dampening", "weight_decay", "nesterov"):
            self.param_groups[0][key] = groups[0][key]
        self._momentum = [None] * len(params)
        for index, entry in state_dict["state"].items():
            i = groups[0]["params"].index(index)
            buf = entry.get("momentum_buffer")
            if buf is not None:
                # a copy, as torch.optim's: the buffers are updated in place
                self._momentum[i] = buf.detach().to(device=params[i].device, dtype=params[i].dtype, copy=True)


@torch.no_grad()
def evaluate(model, batches, device) -> dict:
    """Mean loss and accuracy over (x, y) batches, in eval mode; ``correct``: which examples (in batch order)
    were classified correctly, a numpy bool vector (the per-example evidence the claims pair models on)."""
    was_training = model.training
    model.eval()
    loss_sum, hits = 0.0, []
    with torch.inference_mode():
        for x, y in batches:
            out = model(x)
            loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
            hits.append((out.argmax(1) == y).cpu())
    model.train(was_training)
    correct = torch.cat(hits).numpy() if hits else np.zeros(0, dtype=bool)
    n = int(correct.size)
    return {"loss": loss_sum / max(n, 1), "accuracy": int(correct.sum()) / max(n, 1), "examples": n,
            "correct": correct}


def fingerprint(**parts) -> str:
    """Identifies a training run, so a resumable state is only picked up by the same run."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (about 1 GB/s: a fraction of a second for a staged CIFAR-10)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _rng_state(device: torch.device) -> dict:
    """Every stateful generator a training step may draw from.

    The data order and augmentation of a step are pure functions of (step, seeds) (``lotto.data``), so
    they need no state; dropout draws from torch's global CPU generator, or the CUDA generator of the
    training device. Python's and NumPy's global generators are not used by training; they are saved
    too, so a model or augmentation that starts using them stays resumable bit for bit.
    """
    import random

    import numpy as np

    np_state = np.random.get_state()
    return {
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype("int64")), *np_state[2:]],
    }


def _set_rng_state(state: dict, device: torch.device) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch_cpu"])
    if device.type == "cuda" and state["torch_cuda"] is not None:
        torch.cuda.set_rng_state(state["torch_cuda"], device)
    random.setstate(state["python"])
    name, key, *rest = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), *rest))


def _stale_temps(path: Path) -> list[Path]:
    """Temporary files of saves that were killed before their rename (atomic_write's naming)."""
    return list(path.parent.glob(f".{path.name}.*.tmp.pt")) if path.parent.is_dir() else []


def _save_resume(path: Path, fp: str, step: int, parts: dict, stats: dict, device: torch.device) -> None:
    """``parts``: the model, optimizer and scaler states (:meth:`Stepper.state`)."""
    state = {
        "fingerprint": fp,
        "step": step,
        "model": parts["model"],
        "optimizer": parts["optimizer"],
        "rng": _rng_state(device),
        "stats": json.dumps(stats),
        # fp16's loss scale evolves with the run: a fresh scaler would skip or scale steps differently
        "scaler": parts["scaler"],
    }
    with atomic_write(path, suffix=".pt") as tmp:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            # the rename must not reach the disk before the data: a node crash would leave an empty state
            os.fsync(fh.fileno())


def _load_resume(path: Path, fp: str, start: int, end: int, log) -> dict | None:
    for tmp in _stale_temps(path):
        tmp.unlink(missing_ok=True)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt state is not fatal: start over
        log(f"ignoring unreadable resume state {path}: {exc}")
        return None
    if state.get("fingerprint") != fp:
        log(f"ignoring resume state {path}: it belongs to a different run (config or inputs changed)")
        return None
    if not start < int(state.get("step", -1)) < end or "rng" not in state:
        log(f"ignoring resume state {path}: step {state.get('step')} is not inside this run ({start}, {end})")
        return None
    return state


class Interrupted(Exception):
    """Training stopped on SIGTERM after saving its resumable state (a Slurm time limit or preemption)."""

    def __init__(self, step: int, resume_path: Path):
        super().__init__(f"stopped by SIGTERM at step {step}; its state is in {resume_path}: rerun to resume")
        self.step = step


class SigtermFlag:
    """Record SIGTERM instead of dying, for the duration of a run that can save its state.

    Slurm sends SIGTERM at a time limit or preemption and SIGKILL only KillWait seconds (30 by default)
    later: enough to finish the current step and save, so nothing since the last periodic save is lost.
    Handlers can only be installed from the main thread; elsewhere the default behaviour stays.
    """

    def __init__(self, active: bool):
        self.active = active and threading.current_thread() is threading.main_thread()
        self.received = False
        self._previous = None

    def __enter__(self):
        if self.active:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = True

    def __exit__(self, *exc):
        if self.active:
            signal.signal(signal.SIGTERM, self._previous)
        return False


# --- the parts of a run: train() is the loop over steps that calls them --------------------------------------


class Stepper:
    """One optimisation step, and what it needs: the model on the device (in its memory format), the forward
    (compiled or not), the optimizer, fp16's loss scaler and the mask's tensors. Pruned weights are held at
    exactly zero: their gradients are masked before the update (momentum and weight decay never move them) and
    the weights masked again after it."""

    def __init__(self, model: torch.nn.Module, schedule: Schedule, start: int, mask=None,
                 device: torch.device | str = "cpu", channels_last: bool = False, compile: bool = False,
                 precision: str = "fp32"):
        self.device = torch.device(device)
        self.amp_dtype = autocast_dtype(precision, self.device)
        self.model, self.channels_last = model, channels_last
        model.to(self.device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        # the compiled module shares ``model``'s parameters and buffers: optimizer, masks, resume and the
        # returned model all see the same tensors; only the forward/backward kernels are generated
        self.forward = torch.compile(model, dynamic=False) if compile else model
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype is torch.float16 else None
        self.masks = _mask_tensors(mask, self.device)
        apply_mask(model, self.masks)
        self._params = dict(model.named_parameters())
        self.optimizer = SGD(model.parameters(), lr=schedule.lr_at(start), momentum=schedule.momentum,
                             weight_decay=schedule.weight_decay, nesterov=schedule.nesterov)

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Train on the batch (x, y) at learning rate ``lr``; (the loss, the logits) of the forward pass."""
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            out = self.forward(x)
            loss = F.cross_entropy(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        if self.masks:
            with torch.no_grad():
                for name, m in self.masks.items():
                    g = self._params[name].grad
                    if g is not None:
                        g.mul_(m)
        if self.scaler is None:
            self.optimizer.step()
        else:  # skips the step when the scaled gradients overflowed (masked gradients stay zero either way)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        if self.masks:
            apply_mask(self.model, self.masks)
        return loss, out

    def state(self) -> dict:
        """What a resumable state holds of the step: model, optimizer and loss-scaler states."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def finish(self) -> None:
        """The model back in the default memory format, as it is saved."""
        if self.channels_last:
            self.model.to(memory_format=torch.contiguous_format)


class Progress:
    """The run's log lines, its training curve (a row per ``log_every`` steps and one for the last step) and its
    statistics (the last epoch's batch losses, images per second).

    The rows, the partly filled logging interval ("window": loss sum, correct and examples, so that an interval
    cut by a resume averages the same batches as uninterrupted) and the training time of earlier attempts travel
    in the resumable state (:meth:`state`), so a resumed run returns the rows of an uninterrupted one, timing
    columns apart.
    """

    def __init__(self, schedule: Schedule, start: int, end: int, log: Callable[[str], None], log_every: int):
        self.schedule, self.end, self.log, self.every = schedule, end, log, log_every
        self.last_epoch_start = max(start, end - schedule.steps_per_epoch)
        self.losses: list[float] = []  # the batch losses of the last epoch
        self.curve: list[dict] = []
        self.window = [0.0, 0, 0]
        self.earlier_s = 0.0  # training time of earlier attempts
        self.begin(start)

    def state(self) -> dict:
        return {"last_epoch_losses": self.losses, "curve": self.curve, "window": list(self.window),
                "elapsed_s": self.earlier_s + time.perf_counter() - self.t0}

    def load_state(self, stats: dict) -> None:
        self.losses = stats.get("last_epoch_losses", [])
        self.curve = stats.get("curve", [])
        self.window = list(stats.get("window", [0.0, 0, 0]))
        self.earlier_s = float(stats.get("elapsed_s", 0.0))

    def begin(self, step: int) -> None:
        """Training (re)starts at ``step`` now: the clock of this attempt."""
        self.t0 = self.window_t = time.perf_counter()
        self.first_step, self.window_timed, self.images = step, 0, 0  # images/s counts only this attempt's

    def add(self, step: int, loss: float, out: torch.Tensor, y: torch.Tensor) -> dict | None:
        """Account for the step just trained (``step`` is its number, counting from 1); the curve row when one
        is due (it is logged), else None."""
        if step > self.last_epoch_start:
            self.losses.append(loss)
        n = y.numel()
        self.window[0] += loss * n
        self.window[1] += int((out.detach().argmax(1) == y).sum())
        self.window[2] += n
        self.window_timed += n
        self.images += n
        if step % self.every and step != self.end:
            return None
        now = time.perf_counter()
        loss_sum, correct, seen = self.window
        row = {
            "step": step, "epoch": step / self.schedule.steps_per_epoch, "lr": self.schedule.lr_at(step - 1),
            "loss": loss_sum / seen, "accuracy": correct / seen,
            "images_per_s": self.window_timed / max(now - self.window_t, 1e-9),
            "elapsed_s": self.earlier_s + now - self.t0,
        }
        self.curve.append(row)
        eta = (now - self.t0) / (step - self.first_step) * (self.end - step)
        self.log(f"step {step}/{self.end} epoch {row['epoch']:.2f} lr {row['lr']:.4g} loss {row['loss']:.4f} "
                 f"acc {row['accuracy']:.4f} images/s {row['images_per_s']:.1f} "
                 f"elapsed {format_duration(row['elapsed_s'])} eta {format_duration(eta)}")
        self.window, self.window_t, self.window_timed = [0.0, 0, 0], now, 0
        return row

    def summary(self) -> dict:
        """This attempt's time and speed, the last epoch's mean and sd batch loss, and the curve."""
        elapsed = time.perf_counter() - self.t0
        losses = self.losses
        mean = sum(losses) / len(losses) if losses else float("nan")
        std = math.sqrt(sum((v - mean) ** 2 for v in losses) / (len(losses) - 1)) if len(losses) > 1 else float("nan")
        return {
            "elapsed_s": elapsed,
            "images_per_s": self.images / elapsed if elapsed > 0 else float("nan"),
            "last_epoch_train_loss_mean": mean,
            "last_epoch_train_loss_std": std,
            "curve": self.curve,
        }


class Divergence:
    """A run going wrong: a loss that is no longer finite stops it (FloatingPointError naming the step), and
    weights beyond :data:`WEIGHT_WARN` while the loss is still finite are logged, once per run."""

    def __init__(self, log: Callable[[str], None]):
        self.log, self.warned = log, False

    def check_loss(self, loss: float, step: int) -> float:
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss} at step {step}: lower training.lr?")
        return loss

    def check_weights(self, model: torch.nn.Module, step: int, loss: float) -> None:
        if self.warned:
            return
        peak = max_abs_weight(model)
        if not peak <= WEIGHT_WARN:  # NaN too
            self.warned = True
            self.log(f"warning: the largest weight magnitude is {peak:.3g} at step {step} (over {WEIGHT_WARN:.0e}) "
                     f"while the loss is still finite ({loss:.4g}): the training is probably diverging; lower "
                     "training.lr")


class Resume:
    """The run's resumable state: picked up at its start when it is this run's (``fingerprint``) and inside it,
    saved every ``every`` steps, and at the step a SIGTERM arrived, after which :class:`Interrupted` is raised.
    A run without a ``path`` saves nothing and leaves SIGTERM alone."""

    def __init__(self, path: str | Path | None, every: int, fingerprint: str, log: Callable[[str], None]):
        self.path = Path(path) if path else None
        self.every, self.fingerprint, self.log = every, fingerprint, log

    @property
    def active(self) -> bool:
        return self.path is not None

    def restore(self, stepper: Stepper, progress: Progress, start: int, end: int) -> int:
        """The step the run goes on from: a saved state's (model, optimizer, generators, progress restored), or
        ``start``."""
        if self.path is None or end <= start:
            return start
        state = _load_resume(self.path, self.fingerprint, start, end, self.log)
        if state is None:
            return start
        stepper.load_state(state)
        _set_rng_state(state["rng"], stepper.device)
        progress.load_state(json.loads(state["stats"]))
        step = int(state["step"])
        self.log(f"resumed from step {step} ({self.path})")
        return step

    def save(self, step: int, stepper: Stepper, progress: Progress) -> None:
        _save_resume(self.path, self.fingerprint, step, stepper.state(), progress.state(), stepper.device)
        self.log(f"resume state at step {step} -> {self.path}")

    def after_step(self, step: int, end: int, sigterm: bool, stepper: Stepper, progress: Progress) -> None:
        """The periodic save, and on SIGTERM the save of this step (unless just written) and Interrupted."""
        if self.path is not None and step % self.every == 0 and step < end:
            self.save(step, stepper, progress)
        if sigterm and step < end:
            if step % self.every:
                self.save(step, stepper, progress)
            raise Interrupted(step, self.path)


def train(
    model: torch.nn.Module,
    data,
    schedule: Schedule,
    start: int,
    end: int,
    data_seed: int,
    aug_seed: int,
    mask=None,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = print,
    log_every: int = 100,
    resume_path: str | Path | None = None,
    checkpoint_every: int = 500,
    run_fingerprint: str = "",
    channels_last: bool = False,
    compile: bool = False,
    precision: str = "fp32",
) -> dict:
    """Train ``model`` in place from step ``start`` to ``end``; return statistics of the run.

    The statistics hold ``curve``: one row (``lotto.curves.COLUMNS``) per ``log_every`` steps and one for the
    last step (:class:`Progress`). With ``resume_path`` the run picks up and saves its state (:class:`Resume`).
    """
    if not 0 <= start <= end <= schedule.total_steps:
        raise ValueError(
            f"steps must satisfy 0 <= start ({start}) <= end ({end}) <= schedule length ({schedule.total_steps})"
        )
    stepper = Stepper(model, schedule, start, mask, device, channels_last, compile, precision)
    # dropout (torchvision's AlexNet/VGG) draws from the global generator: seed it per run (a resumed run then
    # restores the generator's state at its step)
    torch.manual_seed(aug_seed ^ 0x5EED)
    progress = Progress(schedule, start, end, log, log_every)
    resume = Resume(resume_path, checkpoint_every, run_fingerprint, log)
    step = resume.restore(stepper, progress, start, end)
    model.train()
    progress.begin(step)
    divergence = Divergence(log)
    with SigtermFlag(resume.active) as sigterm:
        while step < end:
            x, y = data.train_batch(step, schedule.batch_size, data_seed, aug_seed, channels_last=channels_last)
            loss, out = stepper.step(x, y, schedule.lr_at(step))
            step += 1
            value = divergence.check_loss(float(loss.detach()), step)
            if progress.add(step, value, out, y) is not None:
                divergence.check_weights(model, step, value)
            resume.after_step(step, end, sigterm.received, stepper, progress)
    stepper.finish()
    return {"max_abs_weight": max_abs_weight(model),  # of the network as saved
            "steps_trained": end - start, **progress.summary()}


RESUME_DIR = ".resume"


def clear_resume(resume_path: str | Path | None) -> None:
    """Remove a finished run's resumable state (and temporaries of saves that were killed mid-write).

    The rules keep the state at ``<results>/.resume/<output path>.pt``: the folders between the ``.resume``
    folder and the state, now empty, are removed too, so a finished workflow leaves an empty ``.resume``.
    The nearest ``.resume`` above the state is the root (never removed; nothing above it is touched); a
    state outside any ``.resume`` folder (a hand-given ``--resume-state``) only loses its file.
    """
    if not resume_path:
        return
    path = Path(resume_path)
    for p in [path, *_stale_temps(path)]:
        p.unlink(missing_ok=True)
    root = next((parent for parent in path.parents if parent.name == RESUME_DIR), None)
    if root is None:
        return
    for folder in path.parents:
        if folder == root:
            break
        # Concurrent jobs create and fill sibling folders: rmdir only removes a folder that is empty now
        # (never rmtree); one that is not empty (another job's state is below it) ends the walk.
        try:
            folder.rmdir()
        except FileNotFoundError:  # another finishing job removed it: its parents may still be empty
            continue
        except OSError:
            break
