"""Iterative pruning (Paganini & Forde 2020): what the surviving weights start from after each pruning round,
and per-layer statistics of tickets. Pure functions of state dicts and masks.

Handlings (``HANDLINGS``) of the weights that survive a round:

* ``rewind_init``: back to their values at initialisation, training restarts at step 0;
* ``rewind_t``: back to their values after ``t`` steps of training (the rewind point), restarting at step t;
* ``finetune``: they keep their trained values and training continues (from step ``finetune_start`` of the
  schedule, so the learning rate follows the schedule from there);
* ``reinit_sign``: ``sigma_layer * sign(w_init)``, sigma_layer = standard deviation of the layer's weights at
  initialisation (all of them), training restarts at step 0.

Everything that is not a prunable weight (biases, BatchNorm) starts where the same handling puts it: the
initial values for ``rewind_init``/``reinit_sign``, the rewind point's for ``rewind_t``, the trained ones for
``finetune``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lotto.masks import Mask

# torch is imported inside the functions that need it: the registry below is the catalog the config schema's
# handling lists are filled from (lotto.config, at the Snakefile's parse time, which must not import torch).


@dataclass(frozen=True)
class Handling:
    name: str
    rule: Callable  # (prunable, init, rewind, previous, finetune_start) -> (state, step); each input (state, step)
    description: str


#: name -> Handling, in registration order (the config schema's zoo.handlings, zoo.transfer.handling and
#: zoo.ensemble_handling)
HANDLINGS: dict[str, Handling] = {}


def register_handling(name: str):
    """Decorator: add a way of handling the surviving weights to :data:`HANDLINGS` (its docstring is its
    description); the config accepts the name at once."""

    def deco(fn):
        if name in HANDLINGS:
            raise ValueError(f"handling {name!r} is registered twice")
        HANDLINGS[name] = Handling(name, fn, " ".join((fn.__doc__ or "").split()))
        return fn

    return deco


def sign_reinit(init_state: dict, prunable: list[str]) -> dict:
    import torch

    out = dict(init_state)
    for name in prunable:
        w = init_state[name]
        sigma = w.detach().double().std(unbiased=False).to(w.dtype)
        out[name] = torch.sign(w) * sigma
    return out


@register_handling("rewind_init")
def _rewind_init(prunable, init, rewind, previous, finetune_start):
    """back to their values at initialisation; training restarts at step 0."""
    return dict(init[0]), 0


@register_handling("rewind_t")
def _rewind_t(prunable, init, rewind, previous, finetune_start):
    """back to their values at the rewind point t; training restarts at step t."""
    if rewind is None:
        raise ValueError("handling 'rewind_t' needs the rewind point's checkpoint")
    return dict(rewind[0]), int(rewind[1])


@register_handling("finetune")
def _finetune(prunable, init, rewind, previous, finetune_start):
    """they keep their trained values; training continues from step zoo.finetune_start of the schedule."""
    if previous is None:
        raise ValueError("handling 'finetune' needs the previous round's trained checkpoint")
    return dict(previous[0]), int(finetune_start)


@register_handling("reinit_sign")
def _reinit_sign(prunable, init, rewind, previous, finetune_start):
    """sigma_layer * sign(w_init): the initial signs at the layer's initial standard deviation; step 0."""
    return sign_reinit(init[0], prunable), 0


def start_point(handling: str, prunable: list[str], init: tuple[dict, int], rewind: tuple[dict, int] | None,
                previous: tuple[dict, int] | None, finetune_start: int = 0) -> tuple[dict, int]:
    """(state dict, schedule step) a pruning round's training starts from. Each argument is (state, step)."""
    if handling not in HANDLINGS:
        raise ValueError(f"unknown handling {handling!r}; known: {', '.join(HANDLINGS)}")
    return HANDLINGS[handling].rule(prunable, init, rewind, previous, finetune_start)


def layer_stats(init_state: dict, trained_state: dict, mask: Mask) -> list[dict]:
    """Per layer: std of all initial weights vs of the kept ones (ticket weights), and the kept weights'
    mean |w| at initialisation and after training."""
    rows = []
    for name, keep in mask.to_torch().items():
        w0 = init_state[name].detach().double()
        w1 = trained_state[name].detach().double()
        k = keep.bool()
        n = int(k.sum())
        rows.append({
            "layer": name,
            "kept": n,
            "total": int(k.numel()),
            "init_std_layer": float(w0.std(unbiased=False)),
            "init_std_kept": float(w0[k].std(unbiased=False)) if n else float("nan"),
            "init_absmean_kept": float(w0[k].abs().mean()) if n else float("nan"),
            "trained_absmean_kept": float(w1[k].abs().mean()) if n else float("nan"),
            "trained_std_kept": float(w1[k].std(unbiased=False)) if n else float("nan"),
        })
    return rows
