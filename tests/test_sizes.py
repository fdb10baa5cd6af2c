"""Size distributions (generator.sizes, --size-dist): parsing and its one-line errors, shapes as a
pure function of (seed, index) inside stated bounds, statistics of the normal and uniform draws,
the manifest's per-sample shapes (version 3; version 2 still read), refusals by name. The
per-layout round trips are in tests/conformance.py (VARIABLE_KINDS)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from generator.build import generate
from generator.errors import CorpusError, UsageError
from generator.layouts import Layout, register, unregister
from generator.layouts.sqlite import SQLiteWriter
from generator.manifest import MANIFEST, VERSION, read_manifest
from generator.sizes import MAX_LIST, NORMAL_SPAN, load, parse_size_dist
from generator.spec import Spec
from loaders import open_corpus
from loaders.verify import verify


def spec_of(dist: str, count: int = 2000, **kw) -> Spec:
    return Spec(height=1, width=1, channels=kw.pop("channels", 3), count=count, seed=kw.pop("seed", 11),
                sizes=parse_size_dist(dist), **kw)


def shapes(spec: Spec) -> np.ndarray:
    return np.array([spec.sample_shape(i)[:2] for i in range(spec.count)])


def test_canonical_forms_and_fixed():
    assert parse_size_dist(None) is None and parse_size_dist("fixed") is None
    assert parse_size_dist("normal:224x224,32") == "normal:224x224,32x32"
    assert parse_size_dist("normal:100X200, 10x2.5") == "normal:100x200,10x2.5"
    assert parse_size_dist("uniform:64x32,128x256") == "uniform:64x32,128x256"
    spec = spec_of("normal:224x224,32")
    assert (spec.height, spec.width) == (224 + 4 * 32, 224 + 4 * 32)  # the bounding shape: MEAN + 4 STD
    assert Spec.from_dict(spec.to_dict()) == spec and spec.to_dict()["sizes"] == "normal:224x224,32x32"
    assert "sizes" not in Spec(height=2, width=2, channels=1).to_dict()  # a fixed spec's JSON is unchanged


@pytest.mark.parametrize("text, message", [
    ("gauss:1x1,2", "expected fixed, normal:MEAN_HxW,STD, uniform:MIN_HxW,MAX_HxW or file:LIST"),
    ("normal:224,32", "MEAN must be HxW"),
    ("normal:224x224", "takes two values"),
    ("normal:224x224,wide", "STD must be a number of pixels or HxW"),
    ("uniform:64x64,32x128", "MIN must not exceed MAX"),
    ("uniform:0x4,8x8", "sides must be in 1..16383"),
])
def test_bad_distributions_are_one_line(text, message):
    with pytest.raises(UsageError, match=message) as e:
        parse_size_dist(text)
    assert "\n" not in str(e.value) and repr(text) in str(e.value)


def test_file_list_is_cycled_and_named_on_errors(tmp_path):
    good = tmp_path / "sizes.txt"
    good.write_text("# shapes\n10x20\n\n30x5  # a comment\n7x7\n")
    spec = spec_of(f"file:{good}", count=7)
    assert spec.sizes == "list:10x20;30x5;7x7" and (spec.height, spec.width) == (30, 20)
    assert [spec.sample_shape(i)[:2] for i in range(7)] == [(10, 20), (30, 5), (7, 7)] * 2 + [(10, 20)]
    bad = tmp_path / "bad.txt"
    bad.write_text("10x20\n10 by 20\n")
    with pytest.raises(UsageError, match=f"file:{bad} line 2: '10 by 20' is not HxW"):
        parse_size_dist(f"file:{bad}")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(UsageError, match="holds no HxW lines"):
        parse_size_dist(f"file:{tmp_path / 'empty.txt'}")
    with pytest.raises(UsageError, match="cannot read it"):
        parse_size_dist(f"file:{tmp_path / 'absent.txt'}")
    (tmp_path / "long.txt").write_text("4x4\n" * (MAX_LIST + 1))
    with pytest.raises(UsageError, match=f"at most {MAX_LIST:,}"):
        parse_size_dist(f"file:{tmp_path / 'long.txt'}")


def test_shapes_are_a_pure_function_of_seed_and_index():
    a, b = spec_of("uniform:5x5,50x60"), spec_of("uniform:5x5,50x60")
    assert np.array_equal(shapes(a), shapes(b))
    assert not np.array_equal(shapes(a), shapes(spec_of("uniform:5x5,50x60", seed=12)))
    assert [a.sample_shape(i) for i in (1999, 3, 0)] == [b.sample_shape(i) for i in (1999, 3, 0)]  # any order


def test_the_draw_is_pinned():
    """The shapes of a seed never change between versions (a corpus's manifest would stop matching
    its regeneration): the first draws of two distributions, pinned."""
    assert [spec_of("normal:224x224,32", count=6).sample_shape(i)[:2] for i in range(6)] == \
        [(218, 223), (238, 249), (228, 162), (232, 205), (255, 213), (210, 225)]
    assert [spec_of("uniform:10x100,20x140", count=6).sample_shape(i)[:2] for i in range(6)] == \
        [(13, 134), (16, 124), (16, 103), (20, 129), (11, 117), (18, 127)]


@pytest.mark.parametrize("content, payload, crcs", [
    ("smooth", "tiff", [0x8fd4e9be, 0x031886ef, 0x1df67674, 0x201bab9f]),
    ("photo", "png", [0x6f4e3d3c, 0x2c055823, 0xcf91d0ae, 0xd2566a0d]),
    ("noise", "raw", [0x0801f82d, 0xd6816ebe, 0x6f1a8200, 0x742d38e3]),
])
def test_the_payloads_of_a_size_distribution_are_pinned(content, payload, crcs):
    """Crops of the bounding block (smooth, noise) or scene (photo) at each sample's own shape, with
    its own TIFF header: the bytes of a seed, pinned as the fixed-shape corpora's are."""
    from generator.pool import produce

    spec = Spec(height=1, width=1, channels=3, count=10, seed=4, content=content, payload=payload,
                sizes="uniform:5x6,20x24")
    assert produce(spec, range(4))[1] == crcs


def test_normal_statistics_and_clamps():
    """normal:224x224,32 over 4,000 draws: mean within 2 px (4 standard errors of 0.5), std within
    5 %, every side in [1, 352]; a wide one is clamped at 1 and at MEAN + 4 STD."""
    s = shapes(spec_of("normal:224x224,32", count=4000)).astype(float)
    assert np.all(np.abs(s.mean(axis=0) - 224) < 2.0), s.mean(axis=0)
    assert np.all(np.abs(s.std(axis=0) / 32 - 1) < 0.05), s.std(axis=0)
    assert s.min() >= 1 and s.max() <= 224 + NORMAL_SPAN * 32
    assert abs(np.corrcoef(s[:, 0], s[:, 1])[0, 1]) < 0.06  # the sides are drawn independently
    wide = shapes(spec_of("normal:4x4,10", count=4000))
    assert wide.min() == 1 and wide.max() <= 44 and (wide == 1).mean() > 0.3  # clamped, not redrawn


def test_uniform_statistics_and_bounds():
    s = shapes(spec_of("uniform:10x100,20x140", count=4000))
    assert s[:, 0].min() == 10 and s[:, 0].max() == 20 and s[:, 1].min() == 100 and s[:, 1].max() == 140
    assert abs(s[:, 0].mean() - 15) < 0.2 and abs(s[:, 1].mean() - 120) < 0.8  # 4 standard errors
    assert len(np.unique(s[:, 0])) == 11


def test_samples_have_their_shapes_and_stay_distinct():
    from generator.synth import make_sample

    for content in ("smooth", "noise", "photo"):
        spec = spec_of("uniform:8x8,24x30", count=40, content=content)
        imgs = [make_sample(spec, i)[0] for i in range(40)]
        assert [im.shape for im in imgs] == [spec.sample_shape(i) for i in range(40)]
        assert len({im.tobytes() for im in imgs}) == 40
        assert np.array_equal(make_sample(spec, 7)[0], imgs[7])


def test_cli_generates_verifies_and_reports(tmp_path):
    out = tmp_path / "c"
    cmd = [sys.executable, "-m", "generator", "--shape", "8x8x3", "--size-dist", "uniform:4x6,12x16", "--count", "25",
           "--layouts", "files,lmdb,npy", "--out", str(out), "--workers", "2"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "25 images of varying size (uniform:4x6,12x16; at most 12x16x3 uint8)" in run.stdout
    data = json.loads((out / MANIFEST).read_text())
    assert data["version"] == VERSION >= 3 and len(data["samples"]["shape"]) == 25
    m = read_manifest(out)
    for name in ("files", "lmdb", "npy"):
        r = open_corpus(out, name)
        images, _ = r.read_batch(range(25))
        assert [im.shape for im in images] == [tuple(s) for s in m.shapes]
    v = subprocess.run([sys.executable, "-m", "loaders", "verify", str(out), "--quiet"], capture_output=True, text=True)
    assert v.returncode == 0 and "lmdb: all 25 samples match" in v.stdout
    raw = subprocess.run(cmd[:-4] + ["--payload", "raw", "--out", str(tmp_path / "raw")], capture_output=True, text=True)
    assert raw.returncode == 2 and raw.stderr.count("\n") == 1
    assert "the npy layout stores raw pixels as one (N, H, W, C) array and cannot hold raw samples of varying " \
           "shape; use an encoded payload" in raw.stderr


def test_bench_run_reads_a_corpus_of_varying_shape(tmp_path):
    """Our loader's runs, without the naive baselines (they stack one shape)."""
    corpus, results = tmp_path / "c", tmp_path / "r.json"
    generate(corpus, spec_of("uniform:4x4,12x12", count=48), ["lmdb"], workers=1, progress=False)
    run = subprocess.run([sys.executable, "-m", "bench", "run", "--corpus", str(corpus), "--cache", "asis", "--quiet",
                          "--output", str(results)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    data = json.loads(results.read_text())
    assert [(r["layout"], r["kind"]) for r in data["runs"]] == [("lmdb", "loader")]  # no naive baseline


def test_manifest_shapes_are_checked(tmp_path):
    spec = spec_of("uniform:4x4,9x9", count=12)
    generate(tmp_path, spec, ["lmdb"], workers=1, progress=False)
    data = json.loads((tmp_path / MANIFEST).read_text())
    edited = json.loads(json.dumps(data))
    a, b = edited["samples"]["shape"][3], edited["samples"]["shape"][4]
    edited["samples"]["shape"][3] = b if a != b else [a[0] % 9 + 1 if a[0] < 9 else 4, a[1], 3]
    (tmp_path / MANIFEST).write_text(json.dumps(edited))
    found = verify(tmp_path, progress=False)[1]
    assert any(m.layout == "manifest" and m.index == 3 and "the size distribution gives" in m.problem for m in found)
    for edit, message in [(lambda s: s.__setitem__(5, [40, 4, 3]), "sample 5 has shape \\[40, 4, 3\\], outside"),
                          (lambda s: s.pop(), "samples.shape must list one"),
                          (lambda s: s.clear() or s.extend([None] * 12), "samples.shape must list one")]:
        again = json.loads(json.dumps(data))
        edit(again["samples"]["shape"])
        (tmp_path / MANIFEST).write_text(json.dumps(again))
        with pytest.raises(CorpusError, match=message):
            read_manifest(tmp_path)
    missing = json.loads(json.dumps(data))
    del missing["samples"]["shape"]
    (tmp_path / MANIFEST).write_text(json.dumps(missing))
    with pytest.raises(CorpusError, match="samples.shape is missing"):
        read_manifest(tmp_path)


def test_a_version_2_manifest_of_one_shape_still_reads_and_extends(tmp_path):
    spec = Spec(height=6, width=5, channels=3, count=9, seed=2)
    generate(tmp_path, spec, ["lmdb"], workers=1, progress=False)
    data = json.loads((tmp_path / MANIFEST).read_text())
    data["version"] = 2
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    assert read_manifest(tmp_path).version == 2 and read_manifest(tmp_path).shapes is None
    generate(tmp_path, spec, ["lmdb", "files"], workers=1, progress=False)  # added without --force
    assert verify(tmp_path, progress=False)[1] == []
    data = json.loads((tmp_path / MANIFEST).read_text())
    data["samples"]["shape"] = [[6, 5, 3]] * 9
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(CorpusError, match="per-sample shapes for a corpus of one shape"):
        read_manifest(tmp_path)


class FixedOnlyWriter(SQLiteWriter):
    """A layout of one shape only (the flag off): refused by name for a size distribution."""

    name = "fixedonly"
    target = "fixedonly.sqlite"
    supports_variable_shapes = False


@pytest.fixture
def fixed_only():
    register(Layout("fixedonly", "test: samples of one shape only", "test_sizes:FixedOnlyWriter",
                    "loaders.sqlite:SQLiteReader"))
    yield
    unregister("fixedonly")


def test_a_layout_without_variable_shapes_is_refused_by_name(tmp_path, fixed_only, capsys):
    spec = spec_of("normal:10x10,3", count=6)
    with pytest.raises(UsageError) as e:
        generate(tmp_path / "a", spec, ["lmdb", "fixedonly"], workers=1, progress=False)
    assert str(e.value).startswith("the fixedonly layout stores samples of one shape and cannot hold samples of "
                                   "varying shape (--size-dist normal); use --size-dist fixed, or one of: files,")
    assert not (tmp_path / "a" / "lmdb").exists()  # refused before anything was written
    from generator.layouts import get_layout

    assert get_layout("fixedonly").capabilities()["supports_variable_shapes"] is False
    assert load(spec.sizes).text == spec.sizes
