"""The files layout is ImageFolder-exact (corpus format version 2): torchvision's ImageFolder, which
numbers the class directories it finds in string-sort order, gives every file its manifest label
for any class count; and version-1 corpora (bare labels, directories only for classes that occur)
are still read, but not extended."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from conformance import reference

from generator.build import generate
from generator.errors import UsageError
from generator.ingest import folder_files
from generator.layouts.files import class_dir
from generator.manifest import MANIFEST, VERSION, read_manifest
from generator.spec import Spec
from loaders import open_corpus
from loaders.verify import verify

CLASS_COUNTS = (10, 50, 1000)


def spec_for(classes: int, count: int = 30) -> Spec:
    return Spec(height=4, width=5, channels=1, count=count, seed=3, num_classes=classes)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    made = {}

    def get(classes: int):
        if classes not in made:
            root = tmp_path_factory.mktemp(f"if-{classes}")
            generate(root, spec_for(classes), ["files"], workers=1, progress=False)
            made[classes] = root
        return made[classes]

    return get


IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision 0.29's


def imagefolder_numbering(top) -> list[tuple[str, int]]:
    """(path, target) as torchvision.datasets.ImageFolder makes them (torchvision 0.29,
    datasets/folder.py; find_classes: the entries that are directories, hidden ones too, sorted as
    strings, numbered in that order; make_dataset: each class's sorted os.walk, each directory's
    files sorted, those whose path ends with an image extension), written out here so that the
    check runs where torchvision is not installed; and what `generator ingest` takes of it."""
    classes = sorted(e.name for e in os.scandir(top) if e.is_dir())
    out = []
    for target, name in enumerate(classes):
        for root, _, files in sorted(os.walk(os.path.join(top, name), followlinks=True)):
            out += [(os.path.join(root, f), target) for f in sorted(files)
                    if os.path.join(root, f).lower().endswith(IMG_EXTENSIONS)]
    assert out == [(path, label) for path, _, label in folder_files(str(top))[0]]  # ingest takes the same
    return out


def index_of(path: str) -> int:
    return int(os.path.basename(path).split(".")[0])


def check_targets(samples, manifest) -> None:
    assert len(samples) == manifest.spec.count
    assert sorted(index_of(p) for p, _ in samples) == list(range(manifest.spec.count))
    wrong = [(index_of(p), t, manifest.labels[index_of(p)]) for p, t in samples if t != manifest.labels[index_of(p)]]
    assert not wrong, f"{len(wrong)} of {len(samples)} targets differ from the manifest (index, target, label): {wrong[:5]}"


@pytest.mark.parametrize("classes", CLASS_COUNTS)
def test_every_class_has_a_padded_directory_and_imagefolder_numbering_gives_the_labels(corpora, classes):
    root = corpora(classes)
    manifest = read_manifest(root)
    names = sorted(os.listdir(root / "files"))
    width = len(str(classes - 1))
    assert names == [f"{c:0{width}d}" for c in range(classes)] == [class_dir(manifest.spec, c) for c in range(classes)]
    assert len(set(manifest.labels)) < classes or classes == 10  # empty classes exist: they still have directories
    check_targets(imagefolder_numbering(root / "files"), manifest)


def test_the_version_1_naming_would_misnumber_50_classes(corpora):
    """The check above can fail: the old tree (bare labels, occurring classes only) gets most
    targets wrong with 50 classes."""
    root = corpora(50)
    manifest = read_manifest(root)
    old = [(f"files/{manifest.labels[i]}/{i}.tif", i) for i in range(manifest.spec.count)]
    classes = sorted({p.split("/")[1] for p, _ in old})
    wrong = sum(classes.index(p.split("/")[1]) != manifest.labels[i] for p, i in old)
    assert wrong > manifest.spec.count // 2


def torchvision_or_skip():
    try:
        import torchvision.datasets  # noqa: F401
    except Exception as exc:  # ImportError, or a torchvision built for another torch (RuntimeError, OSError)
        pytest.skip(f"torchvision is not usable here ({type(exc).__name__}: {str(exc)[:120]}); "
                    f"pip install torch==2.14.1 torchvision==0.29.1 runs this test")
    return torchvision


@pytest.mark.parametrize("classes", CLASS_COUNTS)
def test_torchvision_imagefolder_targets_are_the_manifest_labels(corpora, classes):
    tv = torchvision_or_skip()
    root = corpora(classes)
    manifest = read_manifest(root)
    ds = tv.datasets.ImageFolder(str(root / "files"), allow_empty=True, loader=lambda p: p)
    assert ds.classes == [class_dir(manifest.spec, c) for c in range(classes)] == folder_files(str(root / "files"))[1]
    assert ds.samples == imagefolder_numbering(root / "files")
    check_targets(ds.samples, manifest)
    path, target = ds[5]
    assert target == manifest.labels[index_of(path)]


def make_version_1(root) -> None:
    """Turn a corpus into what format version 1 wrote: bare-label directories for the classes
    that occur, and version 1 in the manifest."""
    top = root / "files"
    data = json.loads((root / MANIFEST).read_text())
    for name in os.listdir(top):
        if os.listdir(top / name):
            os.rename(top / name, top / f"old-{int(name)}")
        else:
            os.rmdir(top / name)
    for name in os.listdir(top):
        os.rename(top / name, top / name.removeprefix("old-"))
    data["version"] = 1
    (root / MANIFEST).write_text(json.dumps(data))


def test_a_version_1_corpus_is_read_bit_exact_but_not_extended(corpora, tmp_path):
    root = tmp_path / "v1"
    shutil.copytree(corpora(50), root)
    make_version_1(root)
    assert any(len(name) == 1 for name in os.listdir(root / "files"))  # labels 0..9 unpadded
    manifest = read_manifest(root)
    assert manifest.version == 1
    pixels, labels, payloads = reference(root)
    r = open_corpus(root, "files", verify=True)
    images, _ = r.read_batch(range(len(r)))
    assert np.array_equal(images, np.stack(pixels)) and r.path(3).split("/")[-2] == str(labels[3])
    assert verify(root, progress=False)[1] == []
    with pytest.raises(UsageError, match=r"format version 1 .* to add hdf5 regenerate it: rerun the command with --force"):
        generate(root, spec_for(50), ["files", "hdf5"], workers=1, progress=False)
    generate(root, spec_for(50), ["files"], workers=1, progress=False)  # nothing to add: kept as it is
    assert read_manifest(root).version == 1
    generate(root, spec_for(50), ["files", "hdf5"], workers=1, progress=False, force=True)
    assert read_manifest(root).version == VERSION and sorted(os.listdir(root / "files"))[:2] == ["00", "01"]
    check_targets(imagefolder_numbering(root / "files"), read_manifest(root))


@pytest.mark.parametrize("channels, dtype", [(1, "uint16"), (3, "uint16"), (4, "uint16"), (4, "uint8")])
def test_what_imagefolders_default_pil_loader_does_to_16_bit_and_rgba(tmp_path, channels, dtype):
    """What the README says: torchvision's default loader (PIL, .convert("RGB")) clamps 16-bit grey
    to 255, keeps only the high byte of 16-bit RGB(A), and drops alpha; loaders.torch.tiff_loader
    (and our datasets) keep every bit."""
    from PIL import Image

    spec = Spec(height=6, width=7, channels=channels, dtype=dtype, count=3, seed=2, num_classes=2, content="noise")
    generate(tmp_path, spec, ["files"], workers=1, progress=False)
    r = open_corpus(tmp_path, "files")
    px = r.read_batch([1])[0][0].astype(np.int64)
    with Image.open(r.path(1)) as im:
        pil = np.asarray(im.convert("RGB")).astype(np.int64)  # what torchvision.datasets.folder.pil_loader returns
    rgb = np.repeat(px, 3, axis=2) if channels == 1 else px[:, :, :3]
    if dtype == "uint8":
        assert np.array_equal(pil, rgb)  # alpha dropped, the rest kept
    elif channels == 1:
        assert np.array_equal(pil, np.minimum(rgb, 255)) and px.max() > 255  # clamped
    else:
        assert np.array_equal(pil, rgb >> 8)  # the high byte only
    try:
        from loaders.torch import tiff_loader
    except ImportError:
        return
    t = tiff_loader(r.path(1))
    assert np.array_equal(t.numpy(), px) and str(t.dtype) == ("torch.int32" if dtype == "uint16" else "torch.uint8")
