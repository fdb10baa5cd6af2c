"""`--content photo`: a pure function of (seed, index) with natural-image statistics, fast, and
compressing as photographs do (JPEG quality 90: 4-7 bits per pixel; PNG: 10-18)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from generator.codec import Codec
from generator.spec import Spec, preset_spec
from generator.synth import make_sample, warm

IMAGENET = dict(height=224, width=224, channels=3, count=100_000, content="photo")
SAMPLES = range(0, 100_000, 5_000)  # 20 samples spread over the corpus


def _bpp(payload: str, **kw) -> np.ndarray:
    spec = Spec(**IMAGENET, payload=payload, **kw)
    codec = Codec(spec)
    return np.array([len(codec.encode(make_sample(spec, i)[0])) * 8 / (224 * 224) for i in SAMPLES])


def test_jpeg_q90_and_png_sizes_are_those_of_photographs():
    jpeg, png = _bpp("jpeg", quality=90), _bpp("png")
    assert 4.0 <= jpeg.mean() <= 7.0, f"JPEG q90: {jpeg.mean():.2f} bits per pixel"
    assert 10.0 <= png.mean() <= 18.0, f"PNG: {png.mean():.2f} bits per pixel"
    assert jpeg.std() > 0.1 and png.std() > 0.1  # sizes vary from image to image, as in a dataset


def test_photo_samples_are_pure_distinct_and_seeded():
    spec = Spec(**IMAGENET)
    a, la = make_sample(spec, 123)
    b, lb = make_sample(spec, 123)
    assert np.array_equal(a, b) and la == lb
    assert not np.array_equal(a, make_sample(spec, 124)[0])
    other = Spec(**{**IMAGENET, "seed": 1})
    assert not np.array_equal(a, make_sample(other, 123)[0])
    assert a.dtype == np.uint8 and a.shape == (224, 224, 3)


def test_photo_statistics_are_natural():
    spec = Spec(**IMAGENET)
    imgs = [make_sample(spec, i)[0].astype(np.float64) for i in range(0, 100_000, 10_000)]
    # a 1/f amplitude spectrum: radially averaged power ~ f**-slope, slope about 2 (1.5..3.5)
    slopes, corr, edges = [], [], []
    for img in imgs:
        lum = img.mean(axis=2)
        power = np.abs(np.fft.fftshift(np.fft.fft2(lum - lum.mean()))) ** 2
        yy, xx = np.indices(power.shape)
        r = np.hypot(yy - 112, xx - 112).astype(int)
        radial = np.bincount(r.ravel(), power.ravel()) / np.bincount(r.ravel())
        f = np.arange(4, 64)
        slopes.append(-np.polyfit(np.log(f), np.log(radial[f]), 1)[0])
        c = np.corrcoef(img.reshape(-1, 3).T)
        corr.append(min(c[0, 1], c[0, 2], c[1, 2]))
        grad = np.abs(np.diff(lum, axis=1))
        edges.append((grad > 30).mean())
    assert 1.5 <= np.median(slopes) <= 3.5, slopes
    assert np.median(corr) > 0.8, corr  # colour channels move together
    assert 0.005 < np.median(edges) < 0.3, edges  # step edges, but not noise


@pytest.mark.parametrize("channels,dtype", [(1, "uint8"), (4, "uint8"), (3, "uint16")])
def test_photo_holds_every_channel_count_and_depth(channels, dtype):
    spec = Spec(height=40, width=50, channels=channels, dtype=dtype, count=10, content="photo")
    img = make_sample(spec, 3)[0]
    assert img.shape == (40, 50, channels) and img.dtype == spec.np_dtype
    assert img.std() > (2 if dtype == "uint8" else 500)


def test_photo_generation_is_fast_enough():
    """>= 200 MB/s of pixels per core at ImageNet size (measured several times that: README)."""
    spec = preset_spec("imagenet", count=100_000, content="photo")
    warm(spec)
    out = np.empty(spec.shape, np.uint8)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(300):
            make_sample(spec, i, out=out)
        best = max(best, 300 * spec.pixel_bytes / (time.perf_counter() - t0) / 1e6)
    assert best >= 200, f"{best:.0f} MB/s"
