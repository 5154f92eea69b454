"""Network architectures and their (deterministic) initialisation.

Public API
----------
``build_model(model_cfg, in_channels, num_classes, image_size, init_seed) -> nn.Module``
    Build a freshly initialised model on the CPU, in training mode.  The
    initialisation is a pure function of ``(model_cfg, in_channels,
    num_classes, image_size, init_seed)``; the global torch RNG state is
    saved and restored around the call (``torch.random.fork_rng``), so
    building a model never perturbs other random streams.
``prunable_names(model) -> list[str]``
    State-dict names of every conv and linear *weight*, in model order.
    Biases and BatchNorm parameters/buffers are never prunable.
The catalog of architectures (names, smallest inputs, builders) is the torch-free
``lotto.architectures.CATALOG``: the config schema and its checks read it without
importing this module; the builders below are its entries' (``build_<name>``).

Initialisation (as OpenLTH): every ``nn.Conv2d``/``nn.Linear`` weight is drawn
with ``nn.init.kaiming_normal_`` (default arguments: fan_in, gain sqrt(2)),
biases keep PyTorch's default initialisation (``reset_parameters``: uniform in
+-1/sqrt(fan_in)), BatchNorm beta = 0 and gamma = 1 (``bn_init: default``) or
gamma ~ U[0, 1) (``bn_init: uniform``, OpenLTH's choice).  This replaces
torchvision's own initialisation schemes for ``alexnet``/``vgg11``/``resnet18``
so that every model in the zoo follows the same rule.

Architectures
-------------
``resnet20``  CIFAR ResNet-20 exactly as OpenLTH's ``cifar_resnet_20``.  Module
              names follow OpenLTH: ``conv``, ``bn``, ``blocks.{0..8}.{conv1,bn1,
              conv2,bn2}``, ``blocks.{3,6}.shortcut.{0 (conv), 1 (bn)}``, ``fc``.
``lenet``     conv3x3(6)-ReLU-maxpool2 -> conv3x3(16)-ReLU-maxpool2 -> fc 120 ->
              fc 84 -> fc classes (names ``conv1, conv2, fc1, fc2, fc3``).  The
              flatten size depends on ``image_size`` (400 for 28x28), so the
              built model only accepts that input size.
``alexnet``, ``vgg11``, ``resnet18``
              torchvision's architectures (``weights=None``) with the first conv
              replaced when ``in_channels != 3`` (same kernel/stride/padding).
              ``vgg11`` on inputs smaller than 32 (e.g. 28x28) would pool down to
              zero pixels; there its max-pools use ``ceil_mode=True`` (no
              parameter changes).  ``alexnet`` needs ``image_size >= 63``.
"""

from __future__ import annotations

import functools
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from lotto.architectures import CATALOG, model_names

__all__ = [
    "build_model",
    "prunable_names",
    "state_shapes",
]

BN_INITS = ("default", "uniform")


# --------------------------------------------------------------------------- resnet20
class _Block(nn.Module):
    """OpenLTH's CIFAR BasicBlock: conv3x3-BN-ReLU-conv3x3-BN (+ shortcut), ReLU."""

    def __init__(self, f_in: int, f_out: int, downsample: bool):
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        if downsample or f_in != f_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(f_in, f_out, 1, stride=stride, bias=False),
                nn.BatchNorm2d(f_out),
            )
        else:
            self.shortcut = nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    """CIFAR ResNet (He et al. 2016, sec. 4.2) in OpenLTH's layout; depth = 6n + 2."""

    def __init__(self, in_channels: int, num_classes: int, depth: int = 20, width: int = 16):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        n = (depth - 2) // 6
        plan = [(width, n), (2 * width, n), (4 * width, n)]

        self.conv = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)

        blocks = []
        current = width
        for stage, (filters, num_blocks) in enumerate(plan):
            for b in range(num_blocks):
                downsample = stage > 0 and b == 0
                blocks.append(_Block(current, filters, downsample))
                current = filters
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(current, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.conv(x)))
        out = self.blocks(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def build_resnet20(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return CifarResNet(in_channels, num_classes, depth=20, width=16)


# --------------------------------------------------------------------------- lenet
class LeNet(nn.Module):
    """Small LeNet-style convnet: two unpadded 3x3 convs (6, 16) with 2x2 max-pools,
    then fully connected flat -> 120 -> 84 -> classes (flat = 16*5*5 = 400 at 28x28)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int):
        super().__init__()
        side = _lenet_side(image_size)
        if side < 1:
            raise ValueError(
                f"lenet needs image_size >= {CATALOG['lenet'].min_image_size}, got {image_size}"
            )
        self.conv1 = nn.Conv2d(in_channels, 6, 3)
        self.conv2 = nn.Conv2d(6, 16, 3)
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def _lenet_side(image_size: int) -> int:
    side = (image_size - 2) // 2  # conv3x3 (no pad) + maxpool 2
    side = (side - 2) // 2
    return side


def build_lenet(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return LeNet(in_channels, num_classes, image_size)


# --------------------------------------------------------------------------- torchvision
def _replace_conv_in(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    if conv.in_channels == in_channels:
        return conv
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
    )


def build_alexnet(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    from torchvision.models import alexnet

    model = alexnet(weights=None, num_classes=num_classes)
    model.features[0] = _replace_conv_in(model.features[0], in_channels)
    return model


def build_vgg11(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    from torchvision.models import vgg11

    model = vgg11(weights=None, num_classes=num_classes)
    model.features[0] = _replace_conv_in(model.features[0], in_channels)
    if image_size < 32:
        # Five floor-mode 2x2 pools take 28 -> 14 -> 7 -> 3 -> 1 -> 0.  Ceil mode keeps
        # at least one pixel (28 -> 14 -> 7 -> 4 -> 2 -> 1); parameters are unchanged.
        for m in model.features:
            if isinstance(m, nn.MaxPool2d):
                m.ceil_mode = True
    return model


def build_resnet18(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = _replace_conv_in(model.conv1, in_channels)
    return model


# --------------------------------------------------------------------------- build
def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def _check_shape_args(name, in_channels, num_classes, image_size) -> None:
    if name not in CATALOG:
        raise ValueError(
            f"model.name: unknown model {name!r}; valid names: {', '.join(model_names())}"
        )
    _positive_int(in_channels, "in_channels")
    _positive_int(num_classes, "num_classes")
    _positive_int(image_size, "image_size")
    problem = CATALOG[name].input_problem(image_size, in_channels)
    if problem:
        raise ValueError(f"model {name!r}: {problem}, got {in_channels}x{image_size}x{image_size}")


def _check_forward(model: nn.Module, name: str, in_channels: int, image_size: int) -> None:
    """Shape-check one forward pass of a single image (the meta device would pull in torch._dynamo: seconds)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, image_size, image_size))
    except RuntimeError as exc:
        raise ValueError(
            f"model {name!r} cannot process {in_channels}x{image_size}x{image_size} inputs: {exc}"
        ) from exc
    finally:
        model.train(was_training)


def _initialise(model: nn.Module, bn_init: str) -> None:
    for module_name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()  # PyTorch's default bias initialisation
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()  # gamma = 1, beta = 0, running stats reset
            if bn_init == "uniform":
                with torch.no_grad():
                    m.weight.copy_(torch.rand(m.weight.shape))
        elif any(True for _ in m.parameters(recurse=False)) or any(
            True for _ in m.buffers(recurse=False)
        ):
            raise TypeError(
                f"don't know how to initialise {module_name!r} ({type(m).__name__})"
            )


def build_model(
    model_cfg: Mapping,
    in_channels: int,
    num_classes: int,
    image_size: int,
    init_seed: int,
) -> nn.Module:
    """Build an initialised model on the CPU (training mode).

    ``model_cfg``: the ``model`` config section, ``{"name": ..., "bn_init": ...}``
    (``bn_init`` defaults to ``"default"``; other keys are ignored).
    ``init_seed``: non-negative int (< 2**64); same seed -> identical state dict.
    The global torch RNG state is left untouched.
    """
    if not isinstance(model_cfg, Mapping):
        raise ValueError(f"model: expected a mapping, got {type(model_cfg).__name__}")
    name = model_cfg.get("name")
    _check_shape_args(name, in_channels, num_classes, image_size)
    bn_init = model_cfg.get("bn_init", "default")
    if bn_init not in BN_INITS:
        raise ValueError(
            f"model.bn_init: unknown value {bn_init!r}; valid values: {', '.join(BN_INITS)}"
        )
    if isinstance(init_seed, bool) or not isinstance(init_seed, int) or not 0 <= init_seed < 2**64:
        raise ValueError(f"init_seed must be an integer in [0, 2**64), got {init_seed!r}")

    # Build the structure on the meta device (skips the constructors' own, discarded,
    # initialisation), then materialise and initialise on the CPU, then check shapes.
    # Materialised with torch.empty, not Module.to_empty: its empty_like on meta tensors imports
    # sympy (~0.4 s of CPU in every training job, which rebuilds its model from a checkpoint).
    with torch.device("meta"):
        model = CATALOG[name].load_builder()(in_channels, num_classes, image_size)
    model = model._apply(lambda t: torch.empty(t.shape, dtype=t.dtype, device="cpu"))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        _initialise(model, bn_init)
    _check_forward(model, name, in_channels, image_size)
    model.train()
    return model


@functools.lru_cache(maxsize=32)
def _state_shapes(name: str, in_channels: int, num_classes: int, image_size: int) -> tuple:
    with torch.device("meta"):  # the structure only: no memory, no initialisation
        model = CATALOG[name].load_builder()(in_channels, num_classes, image_size)
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def state_shapes(name: str, in_channels: int, num_classes: int, image_size: int) -> dict[str, tuple[int, ...]]:
    """State-dict name -> shape of the model ``name`` for these inputs and classes (what a checkpoint must hold)."""
    _check_shape_args(name, in_channels, num_classes, image_size)
    return dict(_state_shapes(name, in_channels, num_classes, image_size))


# --------------------------------------------------------------------------- prunable
def prunable_names(model: nn.Module) -> list[str]:
    """State-dict names of all conv and linear weights, in model (registration) order.

    A ``torch.compile`` wrapper is looked through, so the names are those of the
    underlying module's ``state_dict()`` (no ``_orig_mod.`` prefix).
    """
    model = getattr(model, "_orig_mod", model)
    names = []
    for module_name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            names.append(f"{module_name}.weight" if module_name else "weight")
    return names
