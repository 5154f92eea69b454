"""The on-device batch server: ``DeviceData`` keeps a whole staged data set (``lotto.staging``) on the training
device as uint8 and serves normalised batches whose content is a pure function of ``(step, batch_size,
data_seed, aug_seed)``: resuming from a checkpoint at step s replays exactly the batches an uninterrupted run
would have seen. The data order of an epoch is a seeded permutation, the augmentation (random crop with zero
padding and horizontal flip, :func:`random_crop_flip`) batched tensor ops on the device.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from lotto.seeds import derive_seed
from lotto.staging import read_staged

PAD = 4  # random-crop zero padding (pixels per side)


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = PAD) -> torch.Tensor:
    """Per-image random crop (zero padding ``padding``) + horizontal flip (p=0.5) of a uint8 NCHW batch.

    Same distribution as torchvision's ``RandomCrop(size, padding)`` followed by ``RandomHorizontalFlip()``:
    top offset dy and left offset dx uniform in [0, 2*padding], flip with probability 1/2, all independent.
    Draw order from ``generator``: dy (B values), dx (B values), flip (B values). One gather, no Python loop.
    """
    b, c, h, w = x.shape
    dev = x.device
    span = 2 * padding + 1
    dy = torch.randint(0, span, (b,), generator=generator, device=dev)
    dx = torch.randint(0, span, (b,), generator=generator, device=dev)
    flip = torch.randint(0, 2, (b,), generator=generator, device=dev).bool()
    xp = F.pad(x, (padding, padding, padding, padding))  # zeros in uint8 pixel space
    wp = w + 2 * padding
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = dy[:, None] + ar_h  # (B, H) rows of the padded image
    cols = dx[:, None] + torch.where(flip[:, None], (w - 1) - ar_w, ar_w)  # (B, W), flip after crop
    flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    return torch.gather(xp.reshape(b, c, -1), 2, flat).reshape(b, c, h, w)


@contextlib.contextmanager
def _serial(device: torch.device):
    """On CPU, run the (small, memory-bound) batch ops on one thread and restore the thread count after.

    A 128-image batch is only ~0.4 M elements per op; splitting that across OpenMP threads buys nothing, and on a
    busy machine each parallel region waits for a descheduled thread (measured 3-6x slower on 2 loaded cores).
    Never spans a ``yield``: the model's own ops keep all threads.
    """
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class DeviceData:
    """A staged dataset held on one device as uint8 NCHW tensors, serving normalised float32 NCHW batches.

    Attributes: ``num_train``, ``num_test``, ``num_classes``, ``in_channels``, ``image_size`` (int, square
    images), ``mean``/``std`` (float32 (C,) tensors on the device), ``meta`` (dict), ``augment``, ``device``,
    ``path``; ``x_train``/``x_test`` (uint8 NCHW) and ``y_train``/``y_test`` (int64) on the device.
    """

    def __init__(self, x_train, y_train, x_test, y_test, mean, std, meta: dict, device="cpu",
                 augment: bool = True, path=None):
        self.device = torch.device(device)
        self.augment = bool(augment)
        self.path = path
        self.meta = meta

        def to_dev(a: np.ndarray, nchw: bool) -> torch.Tensor:
            t = torch.from_numpy(np.ascontiguousarray(a))
            if nchw:
                t = t.permute(0, 3, 1, 2).contiguous()
            return t.to(self.device)

        self.x_train = to_dev(x_train, True)
        self.y_train = to_dev(y_train, False)
        self.x_test = to_dev(x_test, True)
        self.y_test = to_dev(y_test, False)
        mean64 = np.asarray(mean, dtype=np.float32).astype(np.float64)
        std64 = np.asarray(std, dtype=np.float32).astype(np.float64)
        self.mean = torch.from_numpy(mean64.astype(np.float32)).to(self.device)
        self.std = torch.from_numpy(std64.astype(np.float32)).to(self.device)
        # fused normalisation: (u/255 - mean)/std = u * scale + shift (constants computed in float64 on the host)
        self._scale = torch.from_numpy((1.0 / (255.0 * std64)).astype(np.float32)).view(1, -1, 1, 1).to(self.device)
        self._shift = torch.from_numpy((-mean64 / std64).astype(np.float32)).view(1, -1, 1, 1).to(self.device)
        self.num_train = int(self.x_train.shape[0])
        self.num_test = int(self.x_test.shape[0])
        self.in_channels = int(self.x_train.shape[1])
        self.image_size = int(self.x_train.shape[2])
        self.num_classes = int(meta.get("num_classes", int(max(y_train.max(), y_test.max())) + 1))
        self._perm_key = None
        self._perm = None
        self._test_ids: dict[int, str] = {}

    # -- loading ---------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path, device="cpu", augment: bool = True) -> "DeviceData":
        """The staged file ``path`` (``lotto.staging``), checked, on ``device``."""
        a, meta = read_staged(path)
        return cls(a["x_train"], a["y_train"], a["x_test"], a["y_test"], a["mean"], a["std"], meta,
                   device=device, augment=augment, path=str(path))

    def test_set_id(self, first: int | None = None) -> str:
        """The identity of the (first ``first``) test examples, as per-example evidence records it
        (:func:`lotto.evidence.test_set_id`: data set, count and a digest of the images and labels)."""
        from lotto.evidence import test_set_id

        n = self.num_test if first is None else min(int(first), self.num_test)
        if n not in self._test_ids:
            x = self.x_test[:n].permute(0, 2, 3, 1).cpu().numpy()  # back to the stored NHWC bytes
            self._test_ids[n] = test_set_id(x, self.y_test[:n].cpu().numpy(), str(self.meta.get("dataset", "")))
        return self._test_ids[n]

    def __repr__(self) -> str:
        return (f"DeviceData({self.meta.get('dataset')!r}, train={self.num_train}, test={self.num_test}, "
                f"{self.in_channels}x{self.image_size}x{self.image_size}, classes={self.num_classes}, "
                f"device={self.device}, augment={self.augment})")

    # -- batches ---------------------------------------------------------------------------------------------

    def steps_per_epoch(self, batch_size: int) -> int:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return -(-self.num_train // batch_size)

    def epoch_permutation(self, data_seed: int, epoch: int) -> torch.Tensor:
        """randperm(num_train) from a CPU generator seeded derive_seed(data_seed, epoch), on the device (cached)."""
        key = (int(data_seed), int(epoch))
        if self._perm_key != key:
            g = torch.Generator(device="cpu")
            g.manual_seed(derive_seed(data_seed, epoch))
            self._perm = torch.randperm(self.num_train, generator=g).to(self.device)
            self._perm_key = key
        return self._perm

    def normalize(self, x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """uint8 NCHW -> float32 NCHW, (x/255 - mean)/std."""
        out = x.to(torch.float32).mul_(self._scale).add_(self._shift)
        # (normalising first is 3x faster than broadcasting the per-channel affine over a channels_last tensor)
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out

    def train_batch(self, step: int, batch_size: int, data_seed: int, aug_seed: int,
                    channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The training batch of ``step``: a pure function of (step, batch_size, data_seed, aug_seed)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, i = divmod(int(step), self.steps_per_epoch(batch_size))
        with _serial(self.device):
            idx = self.epoch_permutation(data_seed, epoch)[i * batch_size:(i + 1) * batch_size]
            x = self.x_train.index_select(0, idx)
            y = self.y_train.index_select(0, idx)
            if self.augment:
                g = torch.Generator(device=self.device)
                g.manual_seed(derive_seed(aug_seed, step))
                x = random_crop_flip(x, g)
            return self.normalize(x, channels_last), y

    def test_batches(self, batch_size: int, channels_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The evaluation set in stored order, normalised, never augmented."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for s in range(0, self.num_test, batch_size):
            with _serial(self.device):
                x = self.normalize(self.x_test[s:s + batch_size], channels_last)
            yield x, self.y_test[s:s + batch_size]

    def train_eval_batches(self, batch_size: int, limit: int | None = None,
                           channels_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Un-augmented normalised training batches in stored order.

        ``limit`` (images, optional): use only ``limit`` images, evenly spaced through the stored order
        (indices floor(j * N / limit)), so a class-sorted file still gives a class-balanced sample.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = self.num_train
        if limit is None or limit >= n:
            for s in range(0, n, batch_size):
                with _serial(self.device):
                    x = self.normalize(self.x_train[s:s + batch_size], channels_last)
                yield x, self.y_train[s:s + batch_size]
            return
        if limit < 1:
            return
        idx = (torch.arange(limit, dtype=torch.int64) * n // limit).to(self.device)
        for s in range(0, limit, batch_size):
            part = idx[s:s + batch_size]
            with _serial(self.device):
                x = self.normalize(self.x_train.index_select(0, part), channels_last)
            yield x, self.y_train.index_select(0, part)


def __getattr__(name: str):
    # Staging moved to lotto.staging; tests/slurm/test_slurm_workflow.py, which another branch is changing, still
    # calls lotto.data.stage. Remove this once that line reads lotto.staging.stage.
    if name == "stage":
        from lotto.staging import stage

        return stage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
