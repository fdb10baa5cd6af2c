"""Synthetic samples: make_sample(spec, index) is a pure function of (spec, index).

Content generation must run at GB/s, so each spec gets one random *base block* (made once per
process and cached) and every sample is a cheap, index-dependent transform of it: a rotation of
the flattened block by a hashed offset, a hashed additive shift, and the index stamped into the
first 8 bytes. The stamp makes every sample distinct and tells a reader which sample it holds.
"""

from __future__ import annotations

import functools
import operator
import threading

import numpy as np

from .spec import Spec

_MASK64 = (1 << 64) - 1


def mix64(x: int) -> int:
    """splitmix64's finaliser: a cheap, well-spread hash of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def label_of(spec: Spec, index: int) -> int:
    return mix64(mix64(spec.seed) ^ (2 * index + 1)) % spec.num_classes


_block_lock = threading.Lock()


def base_block(height: int, width: int, channels: int, dtype: str, seed: int, content: str) -> np.ndarray:
    """The per-spec random block every sample is derived from (flat, read-only; made once)."""
    with _block_lock:  # producer threads would otherwise each make the same block at once
        return _base_block(height, width, channels, dtype, seed, content)


@functools.lru_cache(maxsize=4)
def _base_block(height: int, width: int, channels: int, dtype: str, seed: int, content: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype).newbyteorder("<")
    n = height * width * channels
    if content == "noise":
        block = np.frombuffer(rng.bytes(n * dt.itemsize), dtype=dt)  # read-only, as it should be
    else:
        # Smooth, image-like: a coarse random grid blown up by nearest-neighbour repetition,
        # plus a gentle gradient, so it compresses like a photo rather than like noise.
        # Every row of a cell band is the same, so the float work is done on one row per band
        # and the bands are repeated as integers (8x less float work; the same bytes as
        # repeating first: 0.58 s -> 0.06 s for a 4K block).
        cell = 8
        gh, gw = -(-height // cell), -(-width // cell)
        top = float(np.iinfo(dt).max)
        grid = rng.random((gh, gw, channels), dtype=np.float32) * (top * 0.75)
        ramp = np.linspace(0.0, top * 0.25, width, dtype=np.float32)[None, :, None]
        bands = (np.repeat(grid, cell, axis=1)[:, :width] + ramp).astype(dt)
        block = np.repeat(bands, cell, axis=0)[:height].reshape(-1)
    if block.flags.writeable:
        block.setflags(write=False)
    return block


def warm(spec: Spec) -> None:
    """Make the spec's base block now, e.g. once in a parent before forking workers."""
    base_block(spec.height, spec.width, spec.channels, spec.dtype, spec.seed, spec.content)


def make_sample(spec: Spec, index: int, out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Pixels (H, W, C little-endian array of spec.dtype) and class label of sample `index`.

    With `out` (a C-contiguous (H, W, C) array of spec.dtype, e.g. a view into a payload
    buffer) the pixels are written there instead of a new array: no copy for large samples.
    """
    index = operator.index(index)  # numpy integers too; they would overflow in mix64
    if not 0 <= index < spec.count:
        raise IndexError(f"sample index {index} out of range for a corpus of {spec.count}")
    base = base_block(spec.height, spec.width, spec.channels, spec.dtype, spec.seed, spec.content)
    n = base.size
    h = mix64(mix64(spec.seed ^ 0x5EED) ^ index)
    shift = h % n
    if out is None:
        out = np.empty(spec.shape, base.dtype)
    elif out.shape != spec.shape or out.dtype != base.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {spec.shape} {base.dtype} array, "
                         f"got {out.shape} {out.dtype}")
    flat = out.reshape(-1)  # a view: out is contiguous
    flat[: n - shift] = base[shift:]
    flat[n - shift:] = base[:shift]
    flat += flat.dtype.type((h >> 32) & (0xFF if flat.dtype.itemsize == 1 else 0xFFFF))
    stamp = flat.view(np.uint8)
    k = min(8, stamp.size)
    stamp[:k] = np.frombuffer(index.to_bytes(8, "little"), np.uint8)[:k]
    return out, label_of(spec, index)
