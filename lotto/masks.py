"""The Mask type and pure operations on masks.

A mask says, for every prunable weight of a network, whether it is kept (True) or pruned (False). It is
stored bit-packed: one flat ``uint8`` array of the concatenated, flattened per-layer masks (numpy's
big-endian bit order, padding bits always 0), plus the layout (layer names and shapes). Set operations
work on the packed bytes, so union / intersection / overlap / Jaccard cost a few byte-wise passes even
for networks with tens of millions of weights.

The same layout is used on disk (``.mask``): ``b"LOTTOMSK"``, a little-endian uint32 header length, a
UTF-8 JSON header ``{"version": 2, "layout": [[name, shape], ...], "kept": K, "sha256": H, "meta": {...}}``,
then the packed bytes: about one bit per prunable weight plus a small header. ``kept`` is the number of kept
weights and ``sha256`` the hex digest of the layout (as the compact JSON ``[[name, [d, ...]], ...]``) followed
by the packed bytes; both are verified on load, so a flipped bit or a damaged layout is refused naming the file.
Version-1 files (written before the checksum existed) are still read: their size and padding are checked,
but a flipped bit inside them cannot be detected.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lotto.io import ArtifactError, atomic_write, canonical_safetensors

MAGIC = b"LOTTOMSK"
VERSION = 2
READABLE_VERSIONS = (1, 2)

Layout = tuple[tuple[str, tuple[int, ...]], ...]


def _words(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The packed bytes as uint64 words (a view, no copy) plus the <8 trailing bytes."""
    n = packed.size // 8 * 8
    return packed[:n].view(np.uint64), packed[n:]


def _popcount(packed: np.ndarray) -> int:
    # popcount over 64-bit words: 8x fewer elements than over bytes, and a uint8 count sum cannot overflow
    words, tail = _words(packed)
    return int(np.bitwise_count(words).sum(dtype=np.int64)) + int(np.bitwise_count(tail).sum(dtype=np.int64))


def _and_count(a: np.ndarray, b: np.ndarray) -> int:
    """popcount(a & b) without materialising more than one word array."""
    wa, ta = _words(a)
    wb, tb = _words(b)
    both = np.bitwise_and(wa, wb)
    return int(np.bitwise_count(both, out=both).sum(dtype=np.int64)) + _popcount(ta & tb)


@dataclass(frozen=True, eq=False)
class Mask:
    layout: Layout
    bits: np.ndarray  # packed uint8, read-only
    meta: dict = field(default_factory=dict)
    source: str | None = field(default=None, repr=False)  # the file it was loaded from, for error messages

    def __post_init__(self):
        bits = np.ascontiguousarray(self.bits, dtype=np.uint8)
        expected = math.ceil(self.total / 8)
        if bits.ndim != 1 or bits.size != expected:
            raise ValueError(f"packed mask has {bits.size} bytes, layout needs {expected}")
        bits.flags.writeable = False
        object.__setattr__(self, "bits", bits)

    # --- construction -------------------------------------------------------------------------
    @staticmethod
    def from_bools(layers: dict[str, np.ndarray] | Sequence[tuple[str, np.ndarray]], meta: dict | None = None):
        """Build from per-layer boolean arrays (numpy or torch), True = kept, in the given order."""
        items = list(layers.items()) if isinstance(layers, dict) else list(layers)
        layout = tuple((name, tuple(int(d) for d in arr.shape)) for name, arr in items)
        flat = [np.asarray(_to_numpy(arr), dtype=bool).reshape(-1) for _, arr in items]
        bits = np.packbits(np.concatenate(flat) if flat else np.zeros(0, bool))
        return Mask(layout, bits, dict(meta or {}))

    @staticmethod
    def ones(layout: Layout, meta: dict | None = None) -> "Mask":
        total = sum(math.prod(s) for _, s in layout)
        return Mask(tuple(layout), np.packbits(np.ones(total, bool)), dict(meta or {}))

    # --- properties ---------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.layout]

    @property
    def total(self) -> int:
        return sum(math.prod(s) for _, s in self.layout)

    def kept(self) -> int:
        return _popcount(self.bits)

    def pruned(self) -> int:
        return self.total - self.kept()

    def sparsity(self) -> float:
        """Fraction of prunable weights removed."""
        return self.pruned() / self.total if self.total else 0.0

    def flat_bools(self) -> np.ndarray:
        return np.unpackbits(self.bits, count=self.total).astype(bool)

    def layers(self) -> dict[str, np.ndarray]:
        """Per-layer boolean arrays (numpy), True = kept."""
        flat = self.flat_bools()
        out, offset = {}, 0
        for name, shape in self.layout:
            n = math.prod(shape)
            out[name] = flat[offset : offset + n].reshape(shape)
            offset += n
        return out

    def per_layer_counts(self) -> dict[str, tuple[int, int]]:
        """name -> (kept, total)."""
        return {name: (int(arr.sum()), arr.size) for name, arr in self.layers().items()}

    def to_torch(self, device="cpu") -> dict:
        import torch

        return {name: torch.from_numpy(arr.copy()).to(device) for name, arr in self.layers().items()}

    def with_meta(self, **meta) -> "Mask":
        return Mask(self.layout, self.bits, {**self.meta, **meta}, self.source)

    def checksum(self) -> str:
        """sha256 of the layout and the packed bits (stored in the file header, verified on load)."""
        layout = json.dumps([[n, list(s)] for n, s in self.layout], separators=(",", ":")).encode()
        return hashlib.sha256(layout + self.bits.tobytes()).hexdigest()

    def equal(self, other: "Mask") -> bool:
        return self.layout == other.layout and np.array_equal(self.bits, other.bits)

    # --- disk ---------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the mask; its header meta also records the writer's ``provenance`` (lotto.provenance)."""
        from lotto.provenance import provenance

        meta = {**self.meta, "provenance": provenance()}
        header = json.dumps(
            {"version": VERSION, "layout": [[n, list(s)] for n, s in self.layout], "meta": meta,
             "kept": self.kept(), "sha256": self.checksum()},
            sort_keys=True,
        ).encode()
        with atomic_write(path, suffix=".mask") as tmp:
            with open(tmp, "wb") as fh:
                fh.write(MAGIC + struct.pack("<I", len(header)) + header)
                fh.write(self.bits.tobytes())

    @staticmethod
    def load(path: str | Path) -> "Mask":
        """Read a mask file, refusing (ArtifactError naming the file) anything damaged: truncated, bad header,
        kept count or checksum not matching the bits."""
        path = Path(path)
        redo = "delete it and rerun the job that wrote it"
        if not path.is_file():
            raise ArtifactError(f"{path}: mask file not found; check the path, or run the job that makes it")
        raw = path.read_bytes()
        if raw[: len(MAGIC)] != MAGIC or len(raw) < len(MAGIC) + 4:
            raise ArtifactError(f"{path}: not a lotto mask file (bad magic bytes); {redo}")
        (hlen,) = struct.unpack("<I", raw[len(MAGIC) : len(MAGIC) + 4])
        start = len(MAGIC) + 4
        try:
            header = json.loads(raw[start : start + hlen].decode())
            layout = tuple((str(n), tuple(int(d) for d in s)) for n, s in header["layout"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{path}: damaged or truncated mask header ({exc}); {redo}") from None
        version = header.get("version")
        if version not in READABLE_VERSIONS:
            raise ArtifactError(f"{path}: mask format version {version!r} (lotto {VERSION} reads versions "
                                f"{', '.join(map(str, READABLE_VERSIONS))}); {redo}")
        bits = np.frombuffer(raw, dtype=np.uint8, offset=start + hlen)
        try:
            mask = Mask(layout, bits, header.get("meta", {}), str(path))
        except ValueError as exc:
            raise ArtifactError(f"{path}: truncated or damaged mask ({exc}); {redo}") from None
        padding = mask.total % 8
        if padding and bits[-1] & ((1 << (8 - padding)) - 1):
            raise ArtifactError(f"{path}: damaged mask (padding bits after the last weight are set); {redo}")
        if version >= 2:
            if mask.checksum() != header.get("sha256"):
                raise ArtifactError(f"{path}: damaged mask: its layout and bits do not match the stored sha256 "
                                    f"checksum (a flipped bit?); {redo}")
            if mask.kept() != header.get("kept"):
                raise ArtifactError(f"{path}: damaged mask: it keeps {mask.kept()} weights, its header says "
                                    f"{header.get('kept')}; {redo}")
        return mask


def export_safetensors(mask: Mask, path: str | Path) -> None:
    """Write ``mask`` as a safetensors file any PyTorch code can use without lotto: one boolean tensor per
    prunable parameter, keyed by its parameter name (``conv1.weight``), True = weight kept.

    ``safetensors.torch.load_file(path)`` gives {name: torch.bool tensor}; each applies to a model with the same
    parameter names by ``torch.nn.utils.prune.custom_from_mask(model.get_submodule(module), param, mask)``. The
    file's metadata (strings) say what it is: ``format`` "lotto-mask", ``kept``, ``total``, ``sha256`` (lotto's
    checksum of the mask) and ``lotto`` (the mask's own metadata as JSON: how it was made, provenance).
    Written atomically; numpy only (no torch needed to export).
    """
    from safetensors.numpy import save

    tensors = {name: np.ascontiguousarray(arr, dtype=np.bool_) for name, arr in mask.layers().items()}
    metadata = {"format": "lotto-mask", "kept": str(mask.kept()), "total": str(mask.total),
                "sha256": mask.checksum(), "lotto": json.dumps(mask.meta, sort_keys=True, default=str)}
    if mask.source:
        metadata["source"] = str(mask.source)
    with atomic_write(path, suffix=".safetensors") as tmp:
        tmp.write_bytes(canonical_safetensors(save(tensors, metadata=metadata)))  # same mask, same bytes


def _to_numpy(arr):
    if hasattr(arr, "detach"):
        return arr.detach().to("cpu").numpy()
    return arr


def _name(mask: Mask, index: int) -> str:
    return mask.source or mask.meta.get("path") or f"mask #{index + 1}"


def _layout_difference(a: Layout, b: Layout) -> str:
    """Where two layouts first differ, in words ('' when equal)."""
    for i, ((na, sa), (nb, sb)) in enumerate(zip(a, b)):
        if (na, sa) != (nb, sb):
            return f"layer {i} is '{na}' {list(sa)} vs '{nb}' {list(sb)}"
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} layers"
    return ""


def check_same_layout(masks: Sequence[Mask]) -> None:
    """Raise ValueError unless every mask has the first one's layout (the same network), naming both files."""
    if not masks:
        raise ValueError("need at least one mask")
    first = masks[0].layout
    for i, m in enumerate(masks[1:], start=1):
        if m.layout != first:
            raise ValueError(
                f"masks have different layouts (different networks?): {_name(m, i)} differs from "
                f"{_name(masks[0], 0)}: {_layout_difference(m.layout, first)}; use masks of one network"
            )


def check_fits(mask: Mask, weights: Mapping[str, Any], against: str) -> None:
    """Raise ArtifactError unless ``mask`` covers exactly ``weights`` (name -> array), same names, order and
    shapes; ``against`` names where the weights come from (e.g. "checkpoint X")."""
    layout = tuple((n, tuple(int(d) for d in w.shape)) for n, w in weights.items())
    if mask.layout != layout:
        raise ArtifactError(
            f"{mask.source or 'the mask'} does not fit {against} (different networks?): "
            f"{_layout_difference(mask.layout, layout)}; use the mask made for that network"
        )


# --- pure operations ----------------------------------------------------------------------------
def union(masks: Sequence[Mask]) -> Mask:
    """Keep a weight kept by any mask."""
    check_same_layout(masks)
    return Mask(masks[0].layout, np.bitwise_or.reduce([m.bits for m in masks]))


def intersection(masks: Sequence[Mask]) -> Mask:
    """Keep a weight kept by every mask."""
    check_same_layout(masks)
    return Mask(masks[0].layout, np.bitwise_and.reduce([m.bits for m in masks]))


def vote(masks: Sequence[Mask], m: int) -> Mask:
    """Keep a weight kept by at least ``m`` of the masks: m = 1 is their union, m = len(masks) their intersection.

    The one m-of-k operation behind composed sibling masks and the zoo's consensus ticket across tasks.
    """
    check_same_layout(masks)
    if not 1 <= m <= len(masks):
        raise ValueError(f"m-of-k consensus threshold m={m} must be between 1 and the number of masks ({len(masks)})")
    if m == 1:
        return union(masks)
    if m == len(masks):
        return intersection(masks)
    votes = np.zeros(masks[0].total, dtype=np.int32)
    for mk in masks:
        votes += mk.flat_bools()
    return Mask(masks[0].layout, np.packbits(votes >= m))


def vote_threshold(op: str) -> int | None:
    """m of an operation named ``vote<m>`` (m >= 1, no leading zero: it names result folders), else None."""
    if op.startswith("vote") and op[4:].isdigit() and not op[4:].startswith("0"):
        return int(op[4:])
    return None


def compose(masks: Sequence[Mask], op: str) -> Mask:
    """``union``, ``intersection`` or ``vote<m>`` (kept by at least m of the masks) of sibling masks."""
    if op == "union":
        return union(masks)
    if op == "intersection":
        return intersection(masks)
    m = vote_threshold(op)
    if m is not None:
        return vote(masks, m)
    raise ValueError(f"unknown composition {op!r} (expected 'union', 'intersection' or 'vote<m>')")


def pruned_in_all(masks: Sequence[Mask]) -> int:
    """Number of weights pruned by every mask (= not kept by their union)."""
    u = union(masks)
    return u.total - u.kept()


def overlap_ratio(masks: Sequence[Mask], sparsity: float) -> float:
    """|pruned in all k| / (s*d), Movva et al.'s overlap; chance level is s**(k-1)."""
    d = masks[0].total
    return pruned_in_all(masks) / (sparsity * d)


def chance_overlap(sparsity: float, k: int) -> float:
    """s**(k-1): the chance overlap of k masks pruning a fraction s of one pool of weights uniformly."""
    return sparsity ** (k - 1)


def chance_overlap_exact(masks: Sequence[Mask], sparsity: float) -> float:
    """The expected overlap ratio of k random masks with the same per-layer pruned counts as ``masks``.

    Global magnitude pruning prunes each layer to its own sparsity (small first layers little, wide ones a
    lot), and weights of a heavily pruned layer coincide by chance more often than s**(k-1) says: with d_l
    weights in layer l and p_lj of them pruned by mask j, k independent uniformly random masks with those
    counts prune sum_l d_l * prod_j (p_lj / d_l) weights in common on average; divided by s*d, as the overlap
    ratio is. Equal to s**(k-1) when every layer has sparsity s."""
    check_same_layout(masks)
    counts = [m.per_layer_counts() for m in masks]
    d = masks[0].total
    common = 0.0
    for name, shape in masks[0].layout:
        size = math.prod(shape)
        frac = 1.0
        for c in counts:
            frac *= (size - c[name][0]) / size
        common += size * frac
    return common / (sparsity * d)


def jaccard_distance(a: Mask, b: Mask, which: str = "kept") -> float:
    """1 - |A and B| / |A or B| over kept (default) or pruned weights."""
    check_same_layout([a, b])
    return _jaccard_from_counts(a.kept(), b.kept(), _and_count(a.bits, b.bits), a.total, which)


def _jaccard_from_counts(ka: int, kb: int, both: int, total: int, which: str) -> float:
    # |A or B| = |A| + |B| - |A and B|, so one AND + popcount per pair is enough
    if which == "kept":
        inter, uni = both, ka + kb - both
    elif which == "pruned":
        inter, uni = total - (ka + kb - both), total - both
    else:
        raise ValueError("which must be 'kept' or 'pruned'")
    return 0.0 if uni == 0 else 1.0 - inter / uni


def pairwise_jaccard(masks: Sequence[Mask], which: str = "kept") -> np.ndarray:
    """n x n Jaccard distances; each mask is counted once and each pair costs one AND + popcount."""
    check_same_layout(masks)
    n = len(masks)
    kept = [m.kept() for m in masks]
    total = masks[0].total
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            both = _and_count(masks[i].bits, masks[j].bits)
            out[i, j] = out[j, i] = _jaccard_from_counts(kept[i], kept[j], both, total, which)
    return out


def shuffle_within_layers(mask: Mask, seed: int) -> Mask:
    """A random ticket: each layer's mask permuted with a seeded generator (same kept count per layer)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    layers = {name: rng.permutation(arr.reshape(-1)).reshape(arr.shape) for name, arr in mask.layers().items()}
    return Mask.from_bools(layers, meta={"shuffled_from": mask.meta, "seed": seed})

