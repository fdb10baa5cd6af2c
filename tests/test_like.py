"""--like SRC: a synthetic corpus with the statistics of an image folder. The sources are made here:
a JPEG ImageFolder tree of photo content (the generator's own files layout, quality 75, normal
sizes) and a PNG one of fixed size; --like must reproduce the codec and quality, channels and
dtype, the shape statistics (the empirical list: the same mean and std), and the mean bytes per
file within 30 %."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from generator.build import generate
from generator.errors import UsageError
from generator.like import fit, jpeg_quality
from generator.manifest import read_manifest
from generator.spec import Spec


@pytest.fixture(scope="module")
def jpeg_source(tmp_path_factory):
    root = tmp_path_factory.mktemp("like-src")
    spec = Spec(height=1, width=1, channels=3, count=200, seed=5, content="photo", payload="jpeg", quality=75,
                num_classes=4, sizes="normal:120x160,24x20")
    generate(root, spec, ["files"], workers=2, progress=False)
    return root


@pytest.mark.parametrize("q", [20, 50, 75, 90, 97])
def test_jpeg_quality_is_read_from_the_quantization_tables(tmp_path, q):
    rng = np.random.default_rng(q)
    Image.fromarray(rng.integers(0, 255, (24, 40, 3), np.uint8)).save(tmp_path / "x.jpg", quality=q)
    assert jpeg_quality((tmp_path / "x.jpg").read_bytes()) == q


def test_like_reproduces_codec_shapes_and_bytes(jpeg_source, tmp_path):
    src = read_manifest(jpeg_source)
    out = tmp_path / "like"
    run = subprocess.run([sys.executable, "-m", "generator", "--like", str(jpeg_source / "files"), "--count", "200",
                          "--out", str(out), "--layouts", "files,lmdb", "--workers", "2", "--seed", "1"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    summary = run.stdout.splitlines()[0]
    assert summary.startswith(f"--like {jpeg_source / 'files'}: fitted from 200 of 200 files (0 bad): jpeg quality "
                              f"75 (from quantization tables), 3 channel(s) uint8, shapes empirical list of")
    assert "4 classes" in summary and "content photo, seed" in summary
    m = read_manifest(out)
    assert (m.spec.payload, m.spec.quality, m.spec.channels, m.spec.dtype, m.spec.content, m.spec.num_classes) == \
        ("jpeg", 75, 3, "uint8", "photo", 4)
    a, b = np.array(src.shapes, float)[:, :2], np.array(m.shapes, float)[:, :2]
    assert np.all(np.abs(a.mean(0) - b.mean(0)) < 0.02 * a.mean(0))  # the same shapes, cycled: equal here
    assert np.all(np.abs(a.std(0) - b.std(0)) < 0.1 * a.std(0))
    got, want = np.mean(m.sizes), np.mean(src.sizes)
    assert abs(got / want - 1) < 0.30, (got, want)  # the stated bound: mean bytes within 30 %
    files = subprocess.run([sys.executable, "-m", "loaders", "verify", str(out), "--quiet"], capture_output=True,
                           text=True)
    assert files.returncode == 0, files.stdout


def test_fixed_png_source_fits_a_fixed_shape(tmp_path):
    src = tmp_path / "src"
    for cls in ("a", "b", "c"):
        (src / cls).mkdir(parents=True)
        for j in range(4):
            img = np.full((20, 30), 10 * j, np.uint16) * 300
            Image.fromarray(img).save(src / cls / f"{j}.png")
    (src / "c" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    f = fit(src, 10, seed=3)
    assert (f.spec.payload, f.spec.sizes, f.spec.shape, f.spec.dtype, f.spec.num_classes) == \
        ("png", None, (20, 30, 1), "uint16", 3)
    assert f.bad == 1 and f.seen == 13 and f.total == 13
    assert "shapes fixed (mean 20x30, std 0x0, at most 20x30)" in f.summary(src)


def test_like_refuses_what_it_fits_and_an_empty_source(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no image files"):
        fit(tmp_path / "empty", 5)
    run = subprocess.run([sys.executable, "-m", "generator", "--like", str(tmp_path / "empty"), "--payload", "png",
                          "--count", "3", "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert run.returncode == 2
    assert "--like fits --payload from its source; drop them (or drop --like)" in run.stderr


def _without(monkeypatch, *names):
    """This process as if the libraries `names` were not installed (generator.libraries.problem is
    what every "is X installed?" asks)."""
    from generator import libraries

    real = libraries.problem
    monkeypatch.setattr(libraries, "problem", lambda name: f"{name} is not installed" if name in names else real(name))


def test_like_refuses_a_fit_this_install_could_not_read_back_before_anything_is_written(tmp_path, monkeypatch, capsys):
    """16-bit RGB PNGs without pyspng or imagecodecs: fitted from their headers (not counted as
    bad), then refused in one line naming the extra, before --out is made."""
    from generator.__main__ import dispatch
    from generator.cli import run_main
    from generator.codecs import encode_png

    src, out = tmp_path / "src", tmp_path / "out"
    (src / "a").mkdir(parents=True)
    for j in range(3):
        (src / "a" / f"{j}.png").write_bytes(encode_png(np.full((6, 8, 3), 1000 * j, np.uint16)))
    from generator.libraries import present

    if present("pyspng") or present("imagecodecs"):  # with a decoder installed here: fitted as it is
        assert fit(src, 4).spec.payload == "png"
    _without(monkeypatch, "pyspng", "imagecodecs")
    with pytest.raises(UsageError, match=f"--like {src}: its files are fitted as 3-channel uint16 png, which this "
                                         f"install could not read back: a 16-bit RGB PNG needs pyspng or imagecodecs "
                                         f"to decode .*pip install -e '.\\[codecs\\]'"):
        fit(src, 4)
    assert run_main("python -m generator", dispatch, ["--like", str(src), "--count", "4", "--out", str(out)]) == 2
    assert "a 16-bit RGB PNG needs pyspng or imagecodecs" in capsys.readouterr().err and not out.exists()


def test_like_fits_an_lzw_tiff_source_as_deflate_without_imagecodecs(tmp_path, monkeypatch):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    rng = np.random.default_rng(2)
    for j in range(3):
        Image.fromarray(rng.integers(0, 255, (6, 8, 3), np.uint8)).save(src / "a" / f"{j}.tif", compression="tiff_lzw")
    _without(monkeypatch, "imagecodecs")
    f = fit(src, 4)
    assert (f.spec.payload, f.spec.compression, f.bad, f.seen) == ("tiff", "deflate", 0, 3)  # none counted bad
    assert "tiff deflate (lzw needs imagecodecs, not installed: deflate instead)" in f.summary(src)
