"""The catalog of network architectures lotto builds: facts about each, without torch (like ``lotto.datasets``).

The one place for them: the config schema's ``model.name`` list is filled from :data:`CATALOG`, ``lotto.config``
refuses at parse time a model the configured images are too small for (or whose input channels it does not
take), and ``lotto.models`` builds a network by importing the entry's builder only then.

A builder is named ``"module:function"``: ``function(in_channels, num_classes, image_size) -> nn.Module`` returns
the module's structure (``lotto.models.build_model`` initialises it). Adding a model = a builder anywhere
importable and one :class:`Architecture` here (or :func:`register` from your own code); conv and linear weights
are prunable automatically.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Architecture:
    name: str
    builder: str  # "module:function", imported when a network is built, never at parse time
    min_image_size: int  # the smallest square input it takes, pixels per side
    channels: tuple[int, ...] | None  # the input channels it takes; None: any (its first conv is sized to the data)
    description: str

    def load_builder(self) -> Callable:
        module, _, function = self.builder.partition(":")
        return getattr(importlib.import_module(module), function)

    def input_problem(self, image_size: int, channels: int | None = None) -> str | None:
        """Why this architecture cannot take ``channels`` x ``image_size`` x ``image_size`` inputs; None if it can
        (``channels`` None: not known yet, not checked)."""
        if image_size < self.min_image_size:
            return f"{self.name} needs images of at least {self.min_image_size}x{self.min_image_size} pixels"
        if self.channels is not None and channels is not None and channels not in self.channels:
            return f"{self.name} takes images of {' or '.join(map(str, self.channels))} channels"
        return None


#: name -> Architecture, in the order the schema lists them
CATALOG: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    """Add an architecture to :data:`CATALOG` (the schema's ``model.name`` list accepts it at once)."""
    if arch.name in CATALOG:
        raise ValueError(f"model {arch.name!r} is registered twice")
    CATALOG[arch.name] = arch
    return arch


for _arch in (
    Architecture("resnet20", "lotto.models:build_resnet20", 1, None,
                 "CIFAR ResNet-20 as OpenLTH's cifar_resnet_20 (global average pooling: any input size)"),
    # two (conv3, pool2) stages: (s - 2) // 2 twice must leave a pixel
    Architecture("lenet", "lotto.models:build_lenet", 10, None,
                 "LeNet-style convnet: conv3x3(6), conv3x3(16), each with a 2x2 max-pool, then fc 120, 84"),
    # conv11/4 -> pool3/2 -> conv5 -> pool3/2 -> convs -> pool3/2 leaves a pixel from 63 on
    Architecture("alexnet", "lotto.models:build_alexnet", 63, None, "torchvision's AlexNet"),
    # five 2x2 pools in ceil mode below 32 pixels keep a pixel (lotto.models.build_vgg11)
    Architecture("vgg11", "lotto.models:build_vgg11", 1, None, "torchvision's VGG-11"),
    Architecture("resnet18", "lotto.models:build_resnet18", 1, None, "torchvision's ResNet-18"),
):
    register(_arch)


def model_names() -> list[str]:
    """Valid values of ``model.name``, sorted."""
    return sorted(CATALOG)


def takes(image_size: int, channels: int | None = None) -> list[str]:
    """The models that take ``channels`` x ``image_size`` x ``image_size`` inputs, sorted."""
    return [n for n in model_names() if CATALOG[n].input_problem(image_size, channels) is None]
