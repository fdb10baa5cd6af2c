"""Synthetic samples: make_sample(spec, index) is a pure function of (spec, index).

Content generation must run at GB/s, so each spec gets one random *base block* (made once per
process and cached) and every sample is a cheap, index-dependent transform of it: a rotation of
the flattened block by a hashed offset, a hashed additive shift, and the index stamped into the
first 8 bytes. The stamp makes every sample distinct and tells a reader which sample it holds.
"""

from __future__ import annotations

import functools

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


@functools.lru_cache(maxsize=4)
def base_block(height: int, width: int, channels: int, dtype: str, seed: int, content: str) -> np.ndarray:
    """The per-spec random block every sample is derived from (flat, read-only)."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype).newbyteorder("<")
    n = height * width * channels
    if content == "noise":
        block = np.frombuffer(rng.bytes(n * dt.itemsize), dtype=dt).copy()
    else:
        # Smooth, image-like: a coarse random grid blown up by nearest-neighbour repetition,
        # plus a gentle gradient, so it compresses like a photo rather than like noise.
        cell = 8
        gh, gw = -(-height // cell), -(-width // cell)
        top = float(np.iinfo(dt).max)
        grid = rng.random((gh, gw, channels), dtype=np.float32) * (top * 0.75)
        img = np.repeat(np.repeat(grid, cell, axis=0), cell, axis=1)[:height, :width]
        ramp = np.linspace(0.0, top * 0.25, width, dtype=np.float32)[None, :, None]
        block = (img + ramp).astype(dt).reshape(-1)
    block.setflags(write=False)
    return block


def make_sample(spec: Spec, index: int) -> tuple[np.ndarray, int]:
    """Pixels (H, W, C little-endian array of spec.dtype) and class label of sample `index`."""
    if not 0 <= index < spec.count:
        raise IndexError(f"sample index {index} out of range for a corpus of {spec.count}")
    base = base_block(spec.height, spec.width, spec.channels, spec.dtype, spec.seed, spec.content)
    n = base.size
    h = mix64(mix64(spec.seed ^ 0x5EED) ^ index)
    shift = h % n
    out = np.empty_like(base)
    out[: n - shift] = base[shift:]
    out[n - shift:] = base[:shift]
    out += out.dtype.type((h >> 32) & (0xFF if out.dtype.itemsize == 1 else 0xFFFF))
    stamp = out.view(np.uint8)
    k = min(8, stamp.size)
    stamp[:k] = np.frombuffer(index.to_bytes(8, "little"), np.uint8)[:k]
    return out.reshape(spec.shape), label_of(spec, index)
