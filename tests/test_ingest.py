"""python -m generator ingest and python -m loaders verify --source: a small ImageFolder tree made
here (JPEG, PNG, a 16-bit TIFF, WebP, a PNG named .jpeg, a corrupt JPEG), every layout written with
each file's bytes unchanged, checked against the source; bad input refused by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from generator.errors import UsageError
from generator.ingest import ingest, scan
from generator.layouts import layout_ids
from generator.manifest import MANIFEST, read_manifest
from loaders import open_corpus
from loaders.verify import verify

PY = sys.executable


def make_tree(root, corrupt: bool = True):
    """SRC/<class>/...: 'cat' and 'dog' (labels 0 and 1 by sorted name), mixed formats and depths."""
    rng = np.random.default_rng(0)
    (root / "dog" / "sub").mkdir(parents=True)
    (root / "cat").mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), np.uint8)).save(root / "cat" / "a.jpg", quality=77)
    Image.fromarray(rng.integers(0, 255, (30, 20), np.uint8)).save(root / "cat" / "b.png")
    tifffile.imwrite(root / "dog" / "c.tif", rng.integers(0, 65535, (17, 23), np.uint16))  # 16-bit gray
    Image.fromarray(rng.integers(0, 255, (12, 14, 4), np.uint8)).save(root / "dog" / "sub" / "d.webp")
    Image.fromarray(rng.integers(0, 255, (33, 31, 3), np.uint8)).save(root / "dog" / "e.png")
    (root / "dog" / "f.jpeg").write_bytes((root / "dog" / "e.png").read_bytes())  # a PNG, whatever its name
    (root / "top-level.jpg").write_bytes(b"ignored, as ImageFolder ignores it")
    (root / "cat" / ".DS_Store").write_bytes(b"hidden: ignored")
    if corrupt:
        (root / "cat" / "broken.jpg").write_bytes((root / "cat" / "a.jpg").read_bytes()[:300])
    return root


GOOD = ["cat/a.jpg", "cat/b.png", "dog/c.tif", "dog/e.png", "dog/f.jpeg", "dog/sub/d.webp"]  # ImageFolder order


def run(*args):
    return subprocess.run([PY, *args], capture_output=True, text=True)


def test_ingest_every_layout_unchanged_and_verify_source(tmp_path):
    src, out = make_tree(tmp_path / "src"), tmp_path / "out"
    bad = run("-m", "generator", "ingest", str(src), "--out", str(out), "--quiet")
    assert bad.returncode == 2 and not (out / MANIFEST).exists()
    assert f"bad source image {src}/cat/broken.jpg: undecodable JPEG" in bad.stderr
    assert bad.stderr.splitlines()[-1].startswith(f"python -m generator: error: 1 source image(s) of {src} cannot "
                                                  f"be ingested (listed above), e.g. cat/broken.jpg")
    assert "--skip-bad" in bad.stderr.splitlines()[-1]
    ok = run("-m", "generator", "ingest", str(src), "--out", str(out), "--skip-bad", "--workers", "2")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-2].startswith("skipped cat/broken.jpg: undecodable JPEG")
    assert ok.stdout.splitlines()[-1] == "1 bad source image(s) skipped (--skip-bad)"
    m = read_manifest(out)
    assert list(m.layouts) == list(layout_ids(available=True))  # the generator's default set
    assert m.sources == GOOD and m.labels == [0, 0, 1, 1, 1, 1]
    assert m.shapes == [[40, 50, 3], [30, 20, 1], [17, 23, 1], [33, 31, 3], [33, 31, 3], [12, 14, 4]]
    assert m.dtypes == ["uint8", "uint8", "uint16", "uint8", "uint8", "uint8"]
    assert m.spec.payload == "mixed" and (m.spec.height, m.spec.width, m.spec.channels, m.spec.dtype) == (40, 50, 4, "uint16")
    assert m.source_info["classes"] == ["cat", "dog"] and m.source_info["skipped"][0][0] == "cat/broken.jpg"
    files = [(src / rel).read_bytes() for rel in GOOD]
    assert m.sizes == [len(b) for b in files] and m.crc32 == [zlib.crc32(b) for b in files]
    for name in m.layouts:
        r = open_corpus(out, name, verify=True)
        assert [bytes(p) for p in r.read_many(range(6))] == files, name  # every file's bytes, unchanged
        images, _ = r.read_batch([2, 0, 5])
        assert [im.shape for im in images] == [(17, 23, 1), (40, 50, 3), (12, 14, 4)]
        assert images[0].dtype == np.uint16 and np.array_equal(images[0][:, :, 0], tifffile.imread(src / "dog" / "c.tif"))
        assert np.array_equal(images[1], np.asarray(Image.open(src / "cat" / "a.jpg")))
    from loaders.pipeline import Loader

    want = open_corpus(out, "lmdb").read_batch(range(6))[0]
    for kw in (dict(workers=2, worker_kind="fork"), dict(workers=1, worker_kind="spawn"), dict(workers=0),
               dict(workers=1, worker_kind="fork", timing=True)):  # mixed dtypes through the shared-memory slots
        seen = []
        with Loader(open_corpus(out, "files"), batch_size=4, seed=1, **kw) as loader:
            for batch in loader.epoch(0):
                for im, i in zip(batch.images, batch.indices):
                    assert im.dtype == want[i].dtype and im.shape == want[i].shape and np.array_equal(im, want[i])
                seen.extend(batch.indices.tolist())
        assert sorted(seen) == list(range(6)), kw
    v = run("-m", "loaders", "verify", str(out), "--source", str(src), "--quiet")
    assert v.returncode == 0, v.stdout + v.stderr
    assert "source: all 6 samples match" in v.stdout and "tfrecord: all 6 samples match" in v.stdout
    nosrc = run("-m", "loaders", "verify", str(out), "--quiet")
    assert nosrc.returncode == 2 and f"was ingested from {src}" in nosrc.stderr and "--source SRC" in nosrc.stderr

    # the source changes: verify names the file that differs and the one that is gone
    Image.fromarray(np.zeros((30, 20), np.uint8)).save(src / "cat" / "b.png")
    (src / "dog" / "e.png").unlink()
    names, found = verify(out, ["lmdb"], progress=False, source=src)
    assert any(f.layout == "source" and f.index == -1 and "differ from those ingested" in f.problem for f in found)
    assert any(f.layout == "source" and f.index == 3 and f.where.endswith("dog/e.png") and "not in the source"
               in f.problem for f in found)
    assert any(f.layout == "lmdb" and f.index == 1 and "payload differs" in f.problem for f in found)
    assert any(f.layout == "manifest" and f.index == 1 and "crc32" in f.problem for f in found)


def test_a_file_list_with_labels(tmp_path):
    src = make_tree(tmp_path / "src", corrupt=False)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# path label\nsrc/dog/c.tif 7\n{src}/cat/a.jpg 2\nsrc/cat/b.png 7\n")
    out = tmp_path / "out"
    m, _, _ = ingest(listing, out, ["files", "sqlite"], workers=1, progress=False)
    assert m.labels == [7, 2, 7] and m.spec.num_classes == 8 and m.spec.payload == "mixed"
    assert verify(out, progress=False, source=listing)[1] == []
    (tmp_path / "bad.txt").write_text("src/cat/a.jpg\n")
    with pytest.raises(UsageError, match="bad.txt line 1: 'src/cat/a.jpg' is not `path label`"):
        scan(tmp_path / "bad.txt")


def test_one_format_keeps_its_extension(tmp_path):
    src = tmp_path / "src"
    for k, cls in enumerate(["b", "a"]):
        (src / cls).mkdir(parents=True)
        for j in range(3):
            Image.fromarray(np.full((8 + j, 9, 3), 40 * k + j, np.uint8)).save(src / cls / f"{j}.jpg", quality=60)
    m, _, _ = ingest(src, tmp_path / "out", ["files"], workers=1, progress=False)
    assert m.spec.payload == "jpeg" and m.labels == [0, 0, 0, 1, 1, 1]  # a/ is class 0: sorted names
    assert sorted(p.suffix for p in (tmp_path / "out" / "files").rglob("*.*")) == [".jpg"] * 6


@pytest.mark.parametrize("make, message", [
    (lambda s: None, "holds no image files"),
    (lambda s: (s / "c").mkdir() or os.symlink("/etc/hostname", s / "c" / "x.jpg"),
     "c/x.jpg is a symbolic link to /etc/hostname, outside the source"),
    (lambda s: os.symlink("/tmp", s / "cls"), "cls is a symbolic link to /tmp, outside the source"),
    (lambda s: (s / "c").mkdir() or os.mkfifo(s / "c" / "p.png"), "c/p.png is a FIFO: an ingest source holds image "
                                                                   "files only"),
    (lambda s: (s / "c").mkdir() or (s / "c" / "x.png").write_bytes(b"not an image at all"),
     "cannot be ingested .* c/x.png: not a TIFF, PNG, JPEG or WebP image"),
    (lambda s: (s / "c").mkdir() or Image.new("P", (4, 4)).save(s / "c" / "p.png"),
     "c/p.png: PNG colour type 3 \\(palette\\)"),
])
def test_bad_sources_are_refused_by_name(tmp_path, make, message):
    src = tmp_path / "src"
    src.mkdir()
    make(src)
    with pytest.raises(UsageError, match=message) as e:
        scan(src)
    assert "\n" not in str(e.value)


def test_an_inside_symlink_is_followed_and_a_loop_taken_once(tmp_path):
    src = make_tree(tmp_path / "src", corrupt=False)
    os.symlink(src / "cat" / "a.jpg", src / "dog" / "link.jpg")
    os.symlink(src / "dog", src / "dog" / "sub" / "loop")  # dog/sub/loop -> dog: a cycle
    entries = scan(src)
    assert [e.rel for e in entries if e.rel.startswith("dog/link")] == ["dog/link.jpg"]
    assert [e.rel for e in entries] == GOOD[:3] + ["dog/e.png", "dog/f.jpeg", "dog/link.jpg", "dog/sub/d.webp"]


def test_ctrl_c_mid_ingest_leaves_no_temporaries_and_a_rerun_finishes(tmp_path, monkeypatch):
    """A KeyboardInterrupt in the middle of a layout (as Ctrl-C or SIGTERM arrive): the driver's own
    cleanup runs, nothing temporary is left behind, and the same command finishes the corpus."""
    import generator.layouts.files as files_layout
    from generator.build import IN_PROGRESS
    from generator.cli import run_main
    from generator.__main__ import dispatch

    src, out = make_tree(tmp_path / "src", corrupt=False), tmp_path / "out"
    cls = files_layout.FilesWriter
    method = "write_part" if cls.supports_parallel_write else "put_many"
    real = getattr(cls, method)
    calls = [0]

    def interrupted(self, *a, **kw):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(cls, method, interrupted)
    argv = ["ingest", str(src), "--out", str(out), "--layouts", "lmdb,files", "--workers", "1", "--quiet"]
    assert run_main("python -m generator", dispatch, argv) == 130
    assert (out / IN_PROGRESS).exists() and "lmdb" in read_manifest(out).layouts
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    monkeypatch.setattr(cls, method, real)
    assert run_main("python -m generator", dispatch, argv) == 0
    assert not (out / IN_PROGRESS).exists() and not [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert verify(out, progress=False, source=src)[1] == []
    assert json.loads((out / MANIFEST).read_text())["samples"]["source"] == GOOD
