"""Synthetic samples: make_sample(spec, index) is a pure function of (spec, index).

Content generation must run at GB/s, so each spec gets one random *base block* (made once per
process and cached) and every sample is a cheap, index-dependent transform of it: a rotation of
the flattened block by a hashed offset, a hashed additive shift, and the index stamped into the
first 8 bytes. The stamp makes every sample distinct and tells a reader which sample it holds.

`photo` content has natural-image statistics instead (see `photo_scenes`): a few scenes per
spec, each a 1/f-spectrum luminance texture over occluding regions of their own colour (edges)
with correlated colour channels and a little sensor noise; a sample is a crop of one scene at a
hashed offset, maybe mirrored, through a hashed brightness/contrast lookup table: one numpy pass
per sample (np.take), so generation stays at memory speed while JPEG and PNG see realistic
content (docs/lab/2026-12-01-codecs-and-photo-content.md: bits per pixel and MB/s).
"""

from __future__ import annotations

import functools
import operator
import threading

import numpy as np

from .hashing import mix64
from .spec import Spec


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


PHOTO_SCENES = 4  # scenes per spec; samples are crops of them
PHOTO_ALPHA = 0.7  # amplitude spectrum ~ 1/f**alpha (natural images: about 1)
PHOTO_REGIONS = 250  # occluding regions per scene (the edges), sized relative to the scene
PHOTO_SMALLEST = 0.01  # the smallest region's radius, a fraction of the scene's shorter side
PHOTO_SPARSITY = 2.0  # log-std of the regions' texture gains (0: the same texture everywhere)
PHOTO_GAIN_MAX = 3.5  # the busiest region's texture gain (beyond it texture would saturate)
PHOTO_EDGE = 42.0  # std of the brightness step between regions, 8-bit levels
PHOTO_NOISE = 0.0  # sensor noise, std in 8-bit levels
PHOTO_TEXTURE = 40.0  # luminance texture std, 8-bit levels
PHOTO_CUTOFF = 0.22  # optics: the spectrum rolls off as exp(-(f / cutoff)**2), f in cycles per pixel
PHOTO_MARGIN = 1 / 8  # a scene is this much larger than a sample each way: the crop offsets


def _pink(rng, h: int, w: int, alpha: float) -> np.ndarray:
    """A (h, w) float32 field with a 1/f**alpha amplitude spectrum, zero mean, unit std."""
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    f[0, 0] = 1.0
    amp = f ** np.float32(-alpha) * np.exp(-(f / np.float32(PHOTO_CUTOFF)) ** 2)
    amp[0, 0] = 0.0
    spec = (rng.standard_normal((h, w // 2 + 1), np.float32) + 1j * rng.standard_normal((h, w // 2 + 1), np.float32))
    field = np.fft.irfft2(spec * amp, s=(h, w)).astype(np.float32)
    return field / max(float(field.std()), 1e-12)


def photo_scene(h: int, w: int, channels: int, dtype: str, rng) -> np.ndarray:
    """One (h, w, channels) scene: occluding regions (discs and boxes of power-law sizes, each a
    colour of its own) under a 1/f luminance texture, correlated chroma, sensor noise."""
    base = rng.uniform(40, 215, 3).astype(np.float32)
    colour = np.empty((h, w, 3), np.float32)
    colour[:] = base
    gain = np.full((h, w), min(PHOTO_GAIN_MAX, rng.lognormal(0, PHOTO_SPARSITY)), np.float32)
    scale = min(h, w)
    for _ in range(PHOTO_REGIONS):  # sizes scale with the scene: a larger image is the same scene, finer  # painted back to front: later regions occlude earlier ones
        r = scale * (PHOTO_SMALLEST + 0.02 * rng.pareto(1.3))
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        aspect = rng.uniform(0.3, 2.0)
        y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 1)
        x0, x1 = max(0, int(cx - r * aspect)), min(w, int(cx + r * aspect) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
        xx = (np.arange(x0, x1, dtype=np.float32)[None, :] - cx) / aspect
        inside = (yy * yy + xx * xx < r * r) if rng.random() < 0.6 else (np.abs(yy) < r) & (np.abs(xx) < r)
        # neighbouring regions differ mostly in brightness, less in hue, as in photographs
        colour[y0:y1, x0:x1][inside] = np.clip(base + rng.normal(0, PHOTO_EDGE) + rng.normal(0, 20, 3), 0, 255)
        # texture is sparse, as in photographs: some regions smooth (sky, blur), some busy (foliage)
        gain[y0:y1, x0:x1][inside] = min(PHOTO_GAIN_MAX, rng.lognormal(0, PHOTO_SPARSITY))
    lum = _pink(rng, h, w, PHOTO_ALPHA) * PHOTO_TEXTURE * gain
    img = colour + lum[:, :, None]
    for c in range(3):  # chroma: smoother fields, weaker than luminance
        img[:, :, c] += _pink(rng, h, w, PHOTO_ALPHA + 0.5) * (PHOTO_TEXTURE * 0.25)
    if PHOTO_NOISE:
        img += rng.standard_normal((h, w, 3), np.float32) * PHOTO_NOISE
    if channels == 1:
        img = img @ np.array([0.299, 0.587, 0.114], np.float32)
        img = img[:, :, None]
    elif channels == 4:  # alpha: opaque, with a soft vignette so it is not constant
        yy, xx = np.ogrid[0:h, 0:w]
        alpha = 255 - 40 * (((yy / h - 0.5) ** 2 + (xx / w - 0.5) ** 2) * 2)
        alpha = np.broadcast_to(alpha, (h, w)).astype(np.float32)
        img = np.concatenate([img, alpha[:, :, None]], axis=2)
    np.clip(img, 0, 255, out=img)
    if np.dtype(dtype).itemsize == 2:  # 16 bit: the 8-bit scene's detail plus sub-level noise
        img = img * 257 + rng.uniform(0, 257, img.shape).astype(np.float32)
        return np.clip(img, 0, 65535).astype(np.dtype(dtype).newbyteorder("<"))
    return np.rint(img).astype(np.uint8)


PHOTO_VARIANT_BYTES = 64 << 20  # at most this much of scene variants per spec (at least one per scene)


def photo_scenes(height: int, width: int, channels: int, dtype: str, seed: int) -> tuple[np.ndarray, ...]:
    """The spec's scene variants (read-only, made once per process): every sample is a crop of one.
    A variant is one of PHOTO_SCENES scenes through one of 8 brightness/contrast curves, mirrored
    or not: made here once, so that a sample costs one copy (np.take through a curve per sample
    ran at 150-330 MB/s; a copy runs at memory speed)."""
    with _block_lock:
        return _photo_scenes(height, width, channels, dtype, seed)


@functools.lru_cache(maxsize=2)
def _photo_scenes(height: int, width: int, channels: int, dtype: str, seed: int) -> tuple[np.ndarray, ...]:
    mh, mw = max(8, int(height * PHOTO_MARGIN)), max(8, int(width * PHOTO_MARGIN))
    scenes = [photo_scene(height + mh, width + mw, channels, dtype, np.random.default_rng([seed, k, 0x9407]))
              for k in range(PHOTO_SCENES)]
    per_scene = max(1, min(16, PHOTO_VARIANT_BYTES // (len(scenes) * scenes[0].nbytes)))
    variants = []
    for k, scene in enumerate(scenes):
        for v in range(per_scene):
            out = scene if v == 0 else np.take(_tone_lut(dtype, mix64(seed ^ (k << 8) ^ v) & 63), scene)
            if v % 2:
                out = np.ascontiguousarray(out[:, ::-1])
            out.setflags(write=False)
            variants.append(out)
    return tuple(variants)


def _tone_lut(dtype: str, key: int) -> np.ndarray:
    """A brightness/contrast curve, one of 64 per dtype (key: 6 bits)."""
    top = np.iinfo(dtype).max
    gain = 0.8 + 0.4 * ((key & 7) / 7)
    offset = (((key >> 3) & 7) / 7 - 0.5) * 0.16 * top
    x = np.arange(top + 1, dtype=np.float64)
    lut = np.clip((x - top / 2) * gain + top / 2 + offset, 0, top)
    return np.rint(lut).astype(np.dtype(dtype).newbyteorder("<"))


def _photo_sample(spec: Spec, h: int, out: np.ndarray) -> None:
    """A crop of one scene variant at a hashed offset, of out's (height, width): with a size
    distribution the scenes have the bounding shape and a smaller sample has more offsets."""
    variants = photo_scenes(spec.height, spec.width, spec.channels, spec.dtype, spec.seed)
    scene = variants[h % len(variants)]
    oh, ow = out.shape[0], out.shape[1]
    sh, sw = scene.shape[0] - oh, scene.shape[1] - ow
    dy, dx = (h >> 16) % (sh + 1), (h >> 32) % (sw + 1)
    np.copyto(out, scene[dy:dy + oh, dx:dx + ow])


def warm(spec: Spec) -> None:
    """Make the spec's base block (or photo scenes) now, e.g. once in a parent before forking workers."""
    if spec.content == "photo":
        photo_scenes(spec.height, spec.width, spec.channels, spec.dtype, spec.seed)
    elif spec.source is None:  # an ingested corpus has nothing to make
        base_block(spec.height, spec.width, spec.channels, spec.dtype, spec.seed, spec.content)


def make_sample(spec: Spec, index: int, out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Pixels (H, W, C little-endian array of spec.dtype) and class label of sample `index`;
    (H, W, C) is spec.sample_shape(index) (spec.shape unless the spec has a size distribution).

    With `out` (a C-contiguous array of the sample's shape of spec.dtype, e.g. a view into a payload
    buffer) the pixels are written there instead of a new array: no copy for large samples.
    """
    index = operator.index(index)  # numpy integers too; they would overflow in mix64
    if spec.source is not None:
        from .errors import UsageError

        raise UsageError("an ingested corpus's samples are its source files, not synthesized: check it with "
                         "python -m loaders verify DIR --source SRC")
    if not 0 <= index < spec.count:
        raise IndexError(f"sample index {index} out of range for a corpus of {spec.count}")
    h = mix64(mix64(spec.seed ^ 0x5EED) ^ index)
    dt = spec.np_dtype
    shape = spec.sample_shape(index)
    if out is None:
        out = np.empty(shape, dt)
    elif out.shape != shape or out.dtype != dt or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {shape} {dt} array, "
                         f"got {out.shape} {out.dtype}")
    flat = out.reshape(-1)  # a view: out is contiguous
    if spec.content == "photo":
        _photo_sample(spec, h, out)
    elif shape != spec.shape:  # a size distribution's sample: a crop of the bounding block at a hashed offset
        base = base_block(spec.height, spec.width, spec.channels, spec.dtype, spec.seed, spec.content)
        block = base.reshape(spec.shape)
        dy, dx = (h >> 8) % (spec.height - shape[0] + 1), (h >> 24) % (spec.width - shape[1] + 1)
        np.copyto(out, block[dy:dy + shape[0], dx:dx + shape[1]])
        flat += flat.dtype.type((h >> 32) & (0xFF if flat.dtype.itemsize == 1 else 0xFFFF))
    else:
        base = base_block(spec.height, spec.width, spec.channels, spec.dtype, spec.seed, spec.content)
        n = base.size
        shift = h % n
        flat[: n - shift] = base[shift:]
        flat[n - shift:] = base[:shift]
        flat += flat.dtype.type((h >> 32) & (0xFF if flat.dtype.itemsize == 1 else 0xFFFF))
    stamp = flat.view(np.uint8)
    k = min(8, stamp.size)
    stamp[:k] = np.frombuffer(index.to_bytes(8, "little"), np.uint8)[:k]
    return out, label_of(spec, index)
