"""python -m generator ingest and python -m loaders verify --source: a small ImageFolder tree made
here (JPEG, PNG, a 16-bit TIFF, WebP, a PNG named .jpeg, a corrupt JPEG), every layout written with
each file's bytes unchanged, checked against the source; bad input refused by name."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from generator.codecs import encode_png
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
    assert [name for name in ["source", *m.layouts] if f"{name}: all 6 samples match" not in v.stdout] == []
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


def test_an_inside_symlink_is_followed_and_a_loop_refused_by_name(tmp_path):
    src = make_tree(tmp_path / "src", corrupt=False)
    os.symlink(src / "cat" / "a.jpg", src / "dog" / "link.jpg")
    assert [e.rel for e in scan(src)] == GOOD[:3] + ["dog/e.png", "dog/f.jpeg", "dog/link.jpg", "dog/sub/d.webp"]
    os.symlink(src / "dog", src / "dog" / "sub" / "loop")  # dog/sub/loop -> dog: a cycle ImageFolder walks ~40 times
    with pytest.raises(UsageError, match=f"{src}/dog/sub/loop is {src}/dog again, reached through a symbolic link "
                                         f"inside it \\(a loop\\): torchvision's ImageFolder walks it again"):
        scan(src)
    os.remove(src / "dog" / "sub" / "loop")
    os.symlink("../..", src / "dog" / "sub" / "up")  # dog/sub/up -> SRC: dog/sub/up/dog is dog again
    with pytest.raises(UsageError, match=f"{src}/dog/sub/up/dog is {src}/dog again, .*a loop"):
        scan(src)


# -- ImageFolder's membership, order and labels, exactly (torchvision 0.29, datasets/folder.py) ----------

def png(path, value: int = 0) -> None:
    Image.fromarray(np.full((3, 4), value, np.uint8)).save(path, format="PNG")  # PNG whatever the name says


def make_tricky(root, empty: bool = True):
    """Every way a folder's reading could part from ImageFolder's: a hidden class, hidden files and
    directories, names with no, odd or upper-case extensions, nested and sort-sensitive directory
    names, a directory linked twice into a class, a linked class, a FIFO, what lies directly in
    SRC, and (`empty`) a class with no image file."""
    (root / ".ipynb_checkpoints").mkdir(parents=True)
    png(root / ".ipynb_checkpoints" / "h-checkpoint.png", 1)
    (root / "B").mkdir()
    png(root / "B" / "x.png", 2)
    a = root / "a"
    for d in ("sub", "sub-x", "sub.y", ".hid", "sub/deeper"):
        (a / d).mkdir(parents=True)
    png(a / "img001", 3)  # an image without an image name: ignored
    png(a / "x.jpeg.bak", 4)  # ignored
    (a / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # ignored
    png(a / "._y.png", 5)  # hidden, named as an image: taken
    png(a / "Z.PNG", 6)
    png(a / "m.Tif", 7)
    png(a / "sub" / "s.png", 8)
    png(a / "sub" / "n.webp", 9)
    png(a / "sub-x" / "o.jpg", 10)
    png(a / "sub.y" / "p.png", 11)
    png(a / "sub" / "deeper" / "r.jpeg", 12)
    png(a / ".hid" / "q.png", 13)
    os.mkfifo(a / "pipe")  # no image name: ignored, never opened
    os.symlink("../B", a / "linkdir")  # B's file, twice more, as class a
    os.symlink("../B", a / "linkdir2")
    os.symlink("B", root / "c")  # a linked class
    png(root / "top.png")  # directly in SRC: ignored
    os.symlink("/nonexistent", root / "broken")  # not a directory: ignored
    os.mkfifo(root / "fifo")  # ignored
    if empty:
        (root / "empty").mkdir()
        (root / "empty" / "notes.txt").write_text("no image here")
    return root


TRICKY_CLASSES = [".ipynb_checkpoints", "B", "a", "c", "empty"]  # string order: '.' < 'B' < 'a'
TRICKY = [(".ipynb_checkpoints/h-checkpoint.png", 0), ("B/x.png", 1),
          ("a/._y.png", 2), ("a/Z.PNG", 2), ("a/m.Tif", 2),  # a's own files, sorted ('.' < 'Z' < 'm')
          ("a/.hid/q.png", 2), ("a/linkdir/x.png", 2), ("a/linkdir2/x.png", 2),
          ("a/sub/n.webp", 2), ("a/sub/s.png", 2),
          ("a/sub-x/o.jpg", 2), ("a/sub.y/p.png", 2), ("a/sub/deeper/r.jpeg", 2),  # by path: '-' < '.' < '/'
          ("c/x.png", 3)]


def test_imagefolder_membership_order_and_labels_written_out(tmp_path):
    """What torchvision's ImageFolder(SRC, allow_empty=True).samples is for the tricky tree, by
    hand (the test below checks it against torchvision itself where it is installed)."""
    src = make_tricky(tmp_path / "src")
    entries = scan(src, allow_empty=True)
    assert [(e.rel, e.label) for e in entries] == TRICKY
    assert entries.info["classes"] == TRICKY_CLASSES and entries.empty == ["empty"] and not entries.info["skipped"]
    assert entries.ignored == {"not a class directory, directly in SRC": [3, "broken"],
                               "without an image extension": [5, "a/.DS_Store"]}
    with pytest.raises(UsageError, match=r"1 class folder\(s\) of .* hold no file named as an image "
                                         r"\(\.jpg .*\.webp\): "
                                         r"empty \(class 4\); torchvision's ImageFolder refuses .*--allow-empty"):
        scan(src, allow_empty=False)  # ImageFolder(SRC): FileNotFoundError
    os.remove(src / "empty" / "notes.txt")
    os.rmdir(src / "empty")
    assert [(e.rel, e.label) for e in scan(src, allow_empty=False)] == TRICKY


def test_imagefolder_empty_classes_and_what_is_ignored_on_the_command_line(tmp_path):
    src, out = make_tricky(tmp_path / "src"), tmp_path / "out"
    refused = run("-m", "generator", "ingest", str(src), "--out", str(out), "--layouts", "files", "--quiet")
    assert refused.returncode == 2 and "empty (class 4)" in refused.stderr and not (out / MANIFEST).exists()
    ok = run("-m", "generator", "ingest", str(src), "--out", str(out), "--layouts", "files", "--quiet", "--allow-empty")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == [
        "ignored, as torchvision's ImageFolder ignores them: 3 entries not a class directory, directly in SRC "
        "(e.g. broken); 5 entries without an image extension (e.g. a/.DS_Store)",
        "1 class folder(s) with no image file kept in the numbering (--allow-empty, as ImageFolder(SRC, "
        "allow_empty=True)): empty (class 4)"]
    m = read_manifest(out)
    assert list(zip(m.sources, m.labels)) == TRICKY and m.spec.num_classes == 5
    assert m.source_info["classes"] == TRICKY_CLASSES
    assert verify(out, progress=False, source=src)[1] == []  # the rescan keeps the empty class numbered


def make_unheld(root):
    """Files ImageFolder takes by name that layoutbench cannot hold: BMP, PPM, PGM, and a macOS
    AppleDouble `._a.jpg` (not an image at all), beside one good PNG."""
    (root / "k").mkdir(parents=True)
    img = Image.fromarray(np.full((3, 4), 9, np.uint8))
    img.save(root / "k" / "b.bmp")
    img.convert("RGB").save(root / "k" / "c.ppm")
    img.save(root / "k" / "d.PGM", format="PPM")  # PIL writes P5 (a PGM) for mode L
    (root / "k" / "._a.jpg").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    png(root / "k" / "e.png")
    return root


def test_files_imagefolder_takes_but_layoutbench_cannot_hold_are_named(tmp_path):
    src = make_unheld(tmp_path / "src")
    with pytest.raises(UsageError, match=r"4 source image\(s\) of .* cannot be ingested .*e\.g\. k/\._a\.jpg: not a "
                                         r"TIFF, PNG, JPEG or WebP image .*--skip-bad"):
        scan(src)
    entries = scan(src, skip_bad=True)
    assert [(e.rel, e.label) for e in entries] == [("k/e.png", 0)]
    skipped = dict(entries.info["skipped"])
    assert sorted(skipped) == ["k/._a.jpg", "k/b.bmp", "k/c.ppm", "k/d.PGM"]
    assert skipped["k/b.bmp"] == ("a BMP file (.bmp): torchvision's ImageFolder takes .ppm, .bmp and .pgm files, but "
                                  "layoutbench holds TIFF, PNG, JPEG and WebP only; convert it (to PNG: lossless)")
    assert skipped["k/d.PGM"].startswith("a PGM file (.pgm)") and skipped["k/c.ppm"].startswith("a PPM file (.ppm)")
    assert skipped["k/._a.jpg"].startswith("not a TIFF, PNG, JPEG or WebP image")


def test_an_unlistable_directory_is_refused_by_name(tmp_path, monkeypatch):
    """ImageFolder (os.walk without onerror) leaves out an unreadable directory's files silently."""
    src = make_tree(tmp_path / "src", corrupt=False)
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith(os.sep + "sub"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)  # as chmod 000 does (the tests may run as root)
    with pytest.raises(UsageError, match=f"{src}/dog/sub cannot be listed \\(Permission denied\\): torchvision's "
                                         f"ImageFolder would leave out its files without a word"):
        scan(src)


def torchvision_or_skip():
    try:
        import torchvision.datasets
    except Exception as exc:  # ImportError, or a torchvision built for another torch (RuntimeError, OSError)
        pytest.skip(f"torchvision is not usable here ({type(exc).__name__}: {str(exc)[:120]}); "
                    f"pip install torch==2.14.1 torchvision==0.29.1 runs this test")
    return torchvision.datasets


def samples(src, entries):
    return [(os.path.join(str(src), e.rel), e.label) for e in entries]


def test_torchvision_imagefolder_takes_what_ingest_takes(tmp_path):
    datasets = torchvision_or_skip()
    src = make_tricky(tmp_path / "src")
    ds = datasets.ImageFolder(str(src), allow_empty=True, loader=lambda p: p)
    assert ds.classes == TRICKY_CLASSES
    assert ds.samples == samples(src, scan(src, allow_empty=True))
    assert ds.samples == [(os.path.join(str(src), rel), target) for rel, target in TRICKY]
    with pytest.raises(FileNotFoundError, match="Found no valid file for the classes empty"):
        datasets.ImageFolder(str(src), loader=lambda p: p)
    with pytest.raises(UsageError, match="empty \\(class 4\\)"):
        scan(src, allow_empty=False)
    os.remove(src / "empty" / "notes.txt")
    os.rmdir(src / "empty")
    assert datasets.ImageFolder(str(src), loader=lambda p: p).samples == samples(src, scan(src, allow_empty=False))

    # the files ImageFolder takes and layoutbench cannot hold: named, and left out only with --skip-bad
    unheld = make_unheld(tmp_path / "unheld")
    ds = datasets.ImageFolder(str(unheld), loader=lambda p: p)
    entries = scan(unheld, skip_bad=True)
    skipped = {os.path.join(str(unheld), rel) for rel, _ in entries.info["skipped"]}
    assert [s for s in ds.samples if s[0] not in skipped] == samples(unheld, entries) and len(skipped) == 4
    assert {p for p, _ in ds.samples} >= skipped

    # the ImageFolder tree of make_tree (files directly in SRC, .DS_Store) and, refused, a loop
    tree = make_tree(tmp_path / "tree", corrupt=False)
    assert datasets.ImageFolder(str(tree), loader=lambda p: p).samples == samples(tree, scan(tree))
    os.symlink(tree / "dog", tree / "dog" / "sub" / "loop")
    looped = datasets.ImageFolder(str(tree), loader=lambda p: p).samples
    assert sum(p.endswith("/e.png") for p, _ in looped) > 10  # why ingest refuses a loop
    with pytest.raises(UsageError, match="a loop"):
        scan(tree)


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


# -- a corpus of mixed formats: each file named by its format (ImageFolder takes files by extension) ----

MIXED_FORMATS = ["jpeg", "png", "tiff", "png", "png", "webp"]  # GOOD's, by their bytes (dog/f.jpeg is a PNG)
MIXED_FILES = ["0/0.jpg", "0/1.png", "1/2.tif", "1/3.png", "1/4.png", "1/5.webp"]


def files_under(top):
    return sorted(str(p.relative_to(top)) for p in top.rglob("*") if p.is_file())


def test_a_mixed_corpus_names_each_file_by_its_recorded_format(tmp_path):
    """The manifest lists each sample's format (samples.format, version 4) and the files layout
    names each file by it, so a plain listing and torchvision's ImageFolder(corpus/files), which
    skips `.img`, see every sample, with its label."""
    src, out = make_tree(tmp_path / "src", corrupt=False), tmp_path / "out"
    m, _, _ = ingest(src, out, ["files", "tar"], workers=1, progress=False)
    assert m.spec.payload == "mixed" and m.formats == MIXED_FORMATS
    data = json.loads((out / MANIFEST).read_text())
    assert data["version"] == 4 and data["samples"]["format"] == MIXED_FORMATS
    assert files_under(out / "files") == MIXED_FILES
    assert [(out / "files" / rel).read_bytes() for rel in MIXED_FILES] == [(src / rel).read_bytes() for rel in GOOD]
    r = open_corpus(out, "files", verify=True)
    assert [bytes(p) for p in r.read_many(range(6))] == [(src / rel).read_bytes() for rel in GOOD]
    assert r.where(2).endswith("files/1/2.tif") and r.unexpected_entries() == []
    assert verify(out, progress=False, source=src)[1] == []


def test_torchvision_imagefolder_sees_every_file_of_a_mixed_corpus(tmp_path):
    datasets = torchvision_or_skip()
    src, out = make_tree(tmp_path / "src", corrupt=False), tmp_path / "out"
    m, _, _ = ingest(src, out, ["files"], workers=1, progress=False)
    ds = datasets.ImageFolder(str(out / "files"), loader=lambda p: p)
    assert ds.samples == [(str(out / "files" / rel), label) for rel, label in zip(MIXED_FILES, m.labels)]
    ds = datasets.ImageFolder(str(out / "files"))  # its default loader (PIL) opens every one
    assert [ds[i][0].size for i in range(len(ds))] == [(w, h) for h, w, _ in m.shapes]


def as_version_3(out) -> None:
    """`out` as format version 3 wrote an ingested corpus of mixed formats: every file
    `<index>.img`, no samples.format."""
    if (out / "files").exists():
        for p in (out / "files").rglob("*.*"):
            p.rename(p.with_suffix(".img"))
    data = json.loads((out / MANIFEST).read_text())
    data["version"] = 3
    del data["samples"]["format"]
    (out / MANIFEST).write_text(json.dumps(data))


def test_an_old_mixed_corpus_reads_its_img_files_and_grows_in_its_own_names(tmp_path):
    src, out = make_tree(tmp_path / "src", corrupt=False), tmp_path / "out"
    ingest(src, out, ["files"], workers=1, progress=False)
    as_version_3(out)
    assert files_under(out / "files") == [rel.rsplit(".", 1)[0] + ".img" for rel in MIXED_FILES]
    r = open_corpus(out, "files", verify=True)
    assert read_manifest(out).formats is None and r.where(0).endswith("files/0/0.img")
    assert [bytes(p) for p in r.read_many(range(6))] == [(src / rel).read_bytes() for rel in GOOD]
    assert verify(out, progress=False, source=src)[1] == []
    # a files layout added to a version-3 corpus is written in version 3's names: never mixed
    grown = tmp_path / "grown"
    ingest(src, grown, ["lmdb"], workers=1, progress=False)
    as_version_3(grown)
    m, _, _ = ingest(src, grown, ["lmdb", "files"], workers=1, progress=False)
    assert m.version == 3 and read_manifest(grown).version == 3 and read_manifest(grown).formats is None
    assert files_under(grown / "files") == files_under(out / "files")
    assert verify(grown, progress=False, source=src)[1] == []


# -- what this install cannot decode: refused at the scan, by name, with what installs it ------------

def without(monkeypatch, *names):
    """This process as if the libraries `names` were not installed: generator.libraries.problem is
    what every "is X installed?" asks (the registry's missing(), the decoders' choice)."""
    from generator import libraries

    real = libraries.problem
    monkeypatch.setattr(libraries, "problem", lambda name: f"{name} is not installed" if name in names else real(name))


def pillow_tiff(path, compression: str) -> None:
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (16, 16, 3), np.uint8)).save(
        path, "TIFF", compression=compression)


def no_tifffile_decoder(monkeypatch, code: int) -> None:
    """tifffile as it is without imagecodecs: compression `code` not among its decoders."""
    known = tifffile.TIFF.DECOMPRESSORS
    monkeypatch.setattr(tifffile.TIFF, "DECOMPRESSORS", {k: known[k] for k in (1, 8, 32946) if k != code})


NOT_HERE = [  # (file name, make it, libraries absent, why: a regular expression)
    ("deep.png", lambda p: p.write_bytes(encode_png(np.full((5, 6, 3), 40000, np.uint16))), ("pyspng", "imagecodecs"),
     "a 16-bit RGB PNG needs pyspng or imagecodecs to decode \\(neither is installed; Pillow cannot\\)"),
    ("deep.png", lambda p: p.write_bytes(encode_png(np.full((5, 6, 4), 40000, np.uint16))), ("pyspng", "imagecodecs"),
     "a 16-bit RGBA PNG needs pyspng or imagecodecs to decode"),
    ("deep.png", lambda p: p.write_bytes(encode_png(np.full((5, 6, 2), 40000, np.uint16))), ("imagecodecs",),
     "a 16-bit gray\\+alpha PNG needs imagecodecs to decode"),  # pyspng (installed or not) does not decode it
    ("lzw.tif", lambda p: pillow_tiff(p, "tiff_lzw"), ("imagecodecs",),
     "a TIFF of lzw compression: the tiff-lzw codec needs imagecodecs, which is not installed"),
    ("jpeg.tif", lambda p: pillow_tiff(p, "jpeg"), ("imagecodecs",),
     "a TIFF of compression JPEG needs imagecodecs to decode \\(tifffile cannot without it"),
]


@pytest.mark.parametrize("name, make, absent, why", NOT_HERE, ids=["png16-rgb", "png16-rgba", "png16-la", "tiff-lzw",
                                                                  "tiff-jpeg"])
def test_an_image_this_install_cannot_decode_is_refused_by_name_before_anything_is_written(
        tmp_path, monkeypatch, name, make, absent, why):
    src, out = tmp_path / "src", tmp_path / "out"
    (src / "k").mkdir(parents=True)
    png(src / "k" / "a.png", 7)
    make(src / "k" / name)
    without(monkeypatch, *absent)
    if name == "jpeg.tif":
        no_tifffile_decoder(monkeypatch, 7)
    with pytest.raises(UsageError) as e:
        ingest(src, out, workers=1, progress=False)
    line = str(e.value)
    assert "\n" not in line and re.search(f"e\\.g\\. k/{re.escape(name)}: {why}", line), line
    assert line.startswith(f"1 source image(s) of {src} cannot be decoded by this install, so a corpus of them could "
                           f"not be read back here: ")
    assert "pip install -e '.[codecs]'" in line and line.endswith("; or rerun with --skip-bad to leave them out")
    assert "cannot be ingested" not in line and "undecodable" not in line  # not called corrupt
    assert not out.exists()  # refused at the scan: nothing written, not even --out
    m, _, entries = ingest(src, out, ["files"], workers=1, progress=False, skip_bad=True)
    assert m.sources == ["k/a.png"] and len(m.source_info["skipped"]) == 1
    rel, reason = m.source_info["skipped"][0]
    assert rel == f"k/{name}" and re.match(why, reason) and "pip install -e '.[codecs]'" in reason


def test_the_command_names_what_this_install_cannot_decode_apart_from_the_corrupt(tmp_path, monkeypatch, capsys):
    from generator.__main__ import dispatch
    from generator.cli import run_main

    src, out = make_tree(tmp_path / "src"), tmp_path / "out"  # with cat/broken.jpg, a corrupt JPEG
    (src / "dog" / "deep.png").write_bytes(encode_png(np.full((5, 6, 3), 40000, np.uint16)))
    without(monkeypatch, "pyspng", "imagecodecs")
    argv = ["ingest", str(src), "--out", str(out), "--workers", "1", "--quiet"]
    assert run_main("python -m generator", dispatch, argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert f"python -m generator ingest: bad source image {src}/cat/broken.jpg: undecodable JPEG" in err[0]
    assert err[1] == (f"python -m generator ingest: source image {src}/dog/deep.png cannot be decoded here: a 16-bit "
                      f"RGB PNG needs pyspng or imagecodecs to decode (neither is installed; Pillow cannot): pip "
                      f"install -e '.[codecs]' (or make install-extras)")
    assert err[-1].startswith(f"python -m generator: error: 1 source image(s) of {src} cannot be decoded by this "
                              f"install, so a corpus of them could not be read back here (and 1 bad one(s), listed "
                              f"above): e.g. dog/deep.png: a 16-bit RGB PNG needs pyspng or imagecodecs")
    assert not out.exists()
    assert run_main("python -m generator", dispatch, argv + ["--skip-bad", "--layouts", "files"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3].startswith("skipped cat/broken.jpg: undecodable JPEG")
    assert lines[-2].startswith("skipped dog/deep.png: a 16-bit RGB PNG needs pyspng or imagecodecs to decode")
    assert lines[-1] == "2 bad source image(s) skipped (--skip-bad)"
