"""Step-based training: every schedule position is an iteration count.

A run trains from step ``start`` to step ``end`` of one schedule (learning-rate milestones are steps), so
pretraining to t and then training siblings from t to the end reproduce one uninterrupted schedule.
The data a step sees is a pure function of (step, data seed, augmentation seed) (see ``lotto.data``),
which makes a run resumable from any saved step with bit-identical results.

Pruned weights are held at exactly zero: their gradients are masked before every optimizer step (so
momentum and weight decay never move them) and the weights are masked again after it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from lotto.io import atomic_write


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


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when present (``auto``); honours CUDA_VISIBLE_DEVICES as set by Slurm or by ``lotto.devices``."""
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if requested == "cuda":
        raise RuntimeError("training.device is 'cuda' but no CUDA device is available")
    return torch.device("cpu")


def _mask_tensors(mask, device) -> dict[str, torch.Tensor]:
    return {} if mask is None else {n: t.to(device) for n, t in mask.to_torch(device).items()}


@torch.no_grad()
def apply_mask(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, m in masks.items():
        params[name].mul_(m.to(params[name].dtype))


@torch.no_grad()
def evaluate(model, batches, device) -> dict:
    """Mean loss and accuracy over (x, y) batches, in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    with torch.inference_mode():
        for x, y in batches:
            out = model(x)
            loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            n += y.numel()
    model.train(was_training)
    return {"loss": loss_sum / max(n, 1), "accuracy": correct / max(n, 1), "examples": n}


def fingerprint(**parts) -> str:
    """Identifies a training run, so a resumable state is only picked up by the same run."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save_resume(path: Path, model, optimizer, step: int, fp: str, stats: dict) -> None:
    state = {
        "fingerprint": fp,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "cpu_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "stats": json.dumps(stats),
    }
    with atomic_write(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def _load_resume(path: Path, fp: str, log) -> dict | None:
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
    return state


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
) -> dict:
    """Train ``model`` in place from step ``start`` to ``end``; return statistics of the run."""
    device = torch.device(device)
    if not 0 <= start <= end <= schedule.total_steps:
        raise ValueError(
            f"steps must satisfy 0 <= start ({start}) <= end ({end}) <= schedule length ({schedule.total_steps})"
        )
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    masks = _mask_tensors(mask, device)
    apply_mask(model, masks)
    params = dict(model.named_parameters())
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=schedule.lr_at(start),
        momentum=schedule.momentum,
        weight_decay=schedule.weight_decay,
        nesterov=schedule.nesterov,
    )
    # dropout (torchvision's AlexNet/VGG) draws from the global generator: seed it per run
    torch.manual_seed(aug_seed ^ 0x5EED)
    step = start
    spe = schedule.steps_per_epoch
    last_epoch_start = max(start, end - spe)
    stats = {"last_epoch_losses": []}
    resume_path = Path(resume_path) if resume_path else None
    if resume_path is not None and end > start:
        state = _load_resume(resume_path, run_fingerprint, log)
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["cpu_rng"])
            if state["cuda_rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            stats = json.loads(state["stats"])
            step = int(state["step"])
            log(f"resumed from step {step} ({resume_path})")
    model.train()
    t0 = time.perf_counter()
    window_loss, window_correct, window_n, window_t = 0.0, 0, 0, time.perf_counter()
    images = 0
    while step < end:
        for g in optimizer.param_groups:
            g["lr"] = schedule.lr_at(step)
        x, y = data.train_batch(step, schedule.batch_size, data_seed, aug_seed, channels_last=channels_last)
        out = model(x)
        loss = F.cross_entropy(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if masks:
            with torch.no_grad():
                for name, m in masks.items():
                    g = params[name].grad
                    if g is not None:
                        g.mul_(m)
        optimizer.step()
        if masks:
            apply_mask(model, masks)
        step += 1
        lval = float(loss.detach())
        if not math.isfinite(lval):
            raise FloatingPointError(f"training loss became {lval} at step {step}: lower training.lr?")
        if step > last_epoch_start:
            stats["last_epoch_losses"].append(lval)
        window_loss += lval * y.numel()
        window_correct += int((out.detach().argmax(1) == y).sum())
        window_n += y.numel()
        images += y.numel()
        if step % log_every == 0 or step == end:
            now = time.perf_counter()
            log(
                f"step {step}/{end} epoch {step / spe:.2f} lr {schedule.lr_at(step - 1):.4g} "
                f"loss {window_loss / window_n:.4f} acc {window_correct / window_n:.4f} "
                f"images/s {window_n / max(now - window_t, 1e-9):.1f}"
            )
            window_loss, window_correct, window_n, window_t = 0.0, 0, 0, now
        if resume_path is not None and step % checkpoint_every == 0 and step < end:
            _save_resume(resume_path, model, optimizer, step, run_fingerprint, stats)
    elapsed = time.perf_counter() - t0
    losses = stats["last_epoch_losses"]
    mean = sum(losses) / len(losses) if losses else float("nan")
    std = math.sqrt(sum((v - mean) ** 2 for v in losses) / (len(losses) - 1)) if len(losses) > 1 else float("nan")
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    return {
        "steps_trained": end - start,
        "elapsed_s": elapsed,
        "images_per_s": images / elapsed if elapsed > 0 else float("nan"),
        "last_epoch_train_loss_mean": mean,
        "last_epoch_train_loss_std": std,
    }


def clear_resume(resume_path: str | Path | None) -> None:
    if resume_path and os.path.exists(resume_path):
        os.unlink(resume_path)
