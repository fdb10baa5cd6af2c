"""The generator's contract: exact sizes, pure samples, identical payloads in every layout, the manifest.

Tiny corpora only (tens of samples); each test runs in well under a second.
"""

from __future__ import annotations

import io
import json
import zlib
from pathlib import Path

import h5py
import lmdb
import numpy as np
import pytest
import tifffile
from PIL import Image

from generator.build import IN_PROGRESS, generate
from generator.codec import Codec
from generator.errors import CorpusError, UsageError
from generator.layouts import disk_usage, get_layout, layout_ids
from generator.layouts.files import TMP_MARK, sample_relpath
from generator.layouts.lmdb import key_of
from generator.manifest import MANIFEST, VERSION, Manifest, read_manifest
from generator.spec import MAX_SAMPLE_BYTES, PRESETS, Spec, parse_shape, preset_spec
from generator.synth import make_sample
from loaders import open_corpus

README = Path(__file__).resolve().parents[1] / "README.md"


def gen(root, spec, layouts=layout_ids(available=True), workers=1, **kw):
    return generate(root, spec, layouts, workers, progress=False, **kw)


# --- stored bytes, read back with each layout's own library (not with loaders/) ----------------

def files_payloads(root: Path, spec: Spec, labels) -> list[bytes]:
    return [(root / sample_relpath(spec, i, labels[i])).read_bytes() for i in range(spec.count)]


def hdf5_payloads(root: Path, spec: Spec) -> tuple[list[bytes], np.ndarray]:
    with h5py.File(root / "corpus.h5", "r") as f:
        labels = f["labels"][:]
        if spec.payload == "raw":
            images = f["images"]
            assert images.shape == (spec.count, *spec.shape) and images.chunks == (1, *spec.shape)
            return [images[i].tobytes() for i in range(spec.count)], labels
        payload, offsets = f["payload"][:], f["offsets"][:]
        assert offsets.dtype == np.uint64 and len(offsets) == spec.count + 1 and offsets[-1] == len(payload)
        return [payload[offsets[i]:offsets[i + 1]].tobytes() for i in range(spec.count)], labels


def lmdb_payloads(root: Path, spec: Spec) -> tuple[list[bytes], np.ndarray, dict]:
    env = lmdb.open(str(root / "lmdb"), readonly=True, lock=False, max_dbs=2, subdir=True)
    try:
        db, meta = env.open_db(b"payload", create=False), env.open_db(b"meta", create=False)
        with env.begin() as txn:
            keys = [k for k, _ in txn.cursor(db)]
            assert keys == [key_of(i) for i in range(spec.count)]  # exactly these keys, in order
            payloads = [bytes(txn.get(key_of(i), db=db)) for i in range(spec.count)]
            labels = np.frombuffer(txn.get(b"labels", db=meta), "<u2")
            stored_spec = json.loads(txn.get(b"spec", db=meta))
    finally:
        env.close()
    return payloads, labels, stored_spec


def layout_payloads(root: Path, spec: Spec, layout: str, labels) -> list[bytes]:
    if layout == "files":
        return files_payloads(root, spec, labels)
    if layout == "hdf5":
        return hdf5_payloads(root, spec)[0]
    if layout == "lmdb":
        return lmdb_payloads(root, spec)[0]
    # Other layouts through their readers (their own test modules read the files with their own tools).
    reader = open_corpus(root, layout)
    try:
        return [bytes(p) for p in reader.read_many(range(spec.count))]
    finally:
        reader.close()


def tree_bytes(path: Path) -> dict[str, bytes]:
    """Every regular file under path (or path itself) -> its bytes."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
            and p.name != "lock.mdb"}


LAYOUT_PATH = {name: get_layout(name).writer_class().target for name in layout_ids()}


# --- presets and specs ------------------------------------------------------------------------

EXACT = {  # preset: (height, width, channels, dtype, bytes of pixels), from the issue
    "mnist": (28, 28, 1, "uint8", 784),
    "cifar": (32, 32, 3, "uint8", 3_072),
    "imagenet": (224, 224, 3, "uint8", 150_528),
    "hd": (1080, 1920, 3, "uint8", 6_220_800),
    "4k-square": (4096, 4096, 3, "uint8", 50_331_648),
    "4k-8bit": (2540, 4520, 4, "uint8", 45_923_200),
    "4k-16bit": (2540, 4520, 4, "uint16", 91_846_400),
}


@pytest.mark.parametrize("name", EXACT)
def test_preset_sizes_are_exact(name):
    h, w, c, dtype, nbytes = EXACT[name]
    spec = preset_spec(name, count=3)
    assert (spec.height, spec.width, spec.channels, spec.dtype) == (h, w, c, dtype)
    assert spec.pixel_bytes == nbytes and spec.total_pixel_bytes == 3 * nbytes
    codec = Codec(spec)
    assert codec.fixed_size == nbytes + len(codec.header) and len(codec.header) % 16 == 0
    assert Codec(preset_spec(name, payload="raw")).fixed_size == nbytes


def test_preset_list_matches_the_issue_and_readme():
    assert set(PRESETS) == set(EXACT)
    assert preset_spec("4k-square").height * preset_spec("4k-square").width == 16_777_216
    text = README.read_text()
    for name, (h, w, c, dtype, nbytes) in EXACT.items():  # HxWxC, as --shape takes it
        row = next((line for line in text.splitlines() if line.startswith(f"| {name} | {h}x{w}x{c}")), None)
        assert row is not None and f"| {dtype} | {nbytes:,}" in row, name


@pytest.mark.parametrize("name", ["mnist", "cifar", "imagenet"])
def test_small_presets_make_samples_of_their_size(name):
    spec = preset_spec(name, count=2)
    pixels, label = make_sample(spec, 1)
    assert pixels.shape == spec.shape and pixels.dtype == spec.np_dtype and pixels.nbytes == spec.pixel_bytes
    assert 0 <= label < spec.num_classes


@pytest.mark.parametrize("fields, message", [
    (dict(channels=2), "channels must be 1, 3 or 4"),
    (dict(height=0), "height must be a positive integer"),
    (dict(count=-1), "count must be a positive integer"),
    (dict(dtype="float32"), "dtype must be one of uint8, uint16"),
    (dict(payload="raw", compression="deflate"), "--compression applies to TIFF payloads only"),
    (dict(num_classes=70_000), "num_classes must be at most 65535"),
    (dict(seed=-1), "seed must be an integer"),
    (dict(height=20_000, width=20_000, channels=4), "at most 1,073,741,824 (1 GiB)"),
])
def test_bad_spec_is_refused_with_its_reason(fields, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Spec(**{"height": 4, "width": 4, "channels": 1, **fields})
    assert MAX_SAMPLE_BYTES == 1 << 30


def test_parse_shape():
    assert parse_shape("28x28x1") == (28, 28, 1)
    assert parse_shape(" 1080X1920x3 ") == (1080, 1920, 3)
    assert parse_shape("5x7") == (5, 7, 1)
    for bad in ("28x28x2", "0x5x1", "axb", "", "5x5x5x5"):
        with pytest.raises(UsageError, match="bad --shape"):
            parse_shape(bad)


# --- samples: a pure function of (seed, index) --------------------------------------------------

# crc32 of make_sample's pixels, pinned: the corpus's bytes are a contract that existing corpora
# and any reader's reference checks rely on. Computed with the first version of the generator.
GOLDEN = [
    (dict(name="mnist", count=60_000), 0, 2389360400, 0),
    (dict(name="mnist", count=60_000), 1, 3522766161, 9),
    (dict(name="mnist", count=60_000), 59_999, 418528938, 2),
    (dict(name="imagenet", count=60_000), 5, 2412355968, 9),
    (dict(name="cifar", count=10, seed=3, content="noise"), 2, 3880527389, None),
    (dict(name="4k-16bit", count=60_000), 0, 2983138118, 0),
]


@pytest.mark.parametrize("kw, index, crc, label", GOLDEN)
def test_samples_are_pinned(kw, index, crc, label):
    kw = dict(kw)
    spec = preset_spec(kw.pop("name"), **kw)
    pixels, got_label = make_sample(spec, index)
    assert zlib.crc32(pixels) == crc
    assert label is None or got_label == label


def test_make_sample_is_pure_and_every_sample_distinct():
    spec = Spec(height=9, width=7, channels=3, count=50, seed=11)
    first = [make_sample(spec, i) for i in range(50)]
    again = [make_sample(spec, i) for i in reversed(range(50))][::-1]
    for (a, la), (b, lb) in zip(first, again):
        assert np.array_equal(a, b) and la == lb
    assert len({p.tobytes() for p, _ in first}) == 50
    # The index is stamped in the first 8 bytes, little-endian.
    assert all(int.from_bytes(p.tobytes()[:8], "little") == i for i, (p, _) in enumerate(first))
    assert {label for _, label in first} == set(range(10))


def test_seed_changes_every_sample_and_labels():
    a, b = Spec(height=8, width=8, channels=1, count=40, seed=1), Spec(height=8, width=8, channels=1, count=40, seed=2)
    for i in range(40):
        assert not np.array_equal(make_sample(a, i)[0], make_sample(b, i)[0])
    assert [make_sample(a, i)[1] for i in range(40)] != [make_sample(b, i)[1] for i in range(40)]


def test_make_sample_index_checks_and_numpy_indices():
    spec = Spec(height=4, width=4, channels=1, count=3)
    with pytest.raises(IndexError, match="out of range"):
        make_sample(spec, 3)
    with pytest.raises(IndexError):
        make_sample(spec, -1)
    assert np.array_equal(make_sample(spec, np.int64(2))[0], make_sample(spec, 2)[0])
    with pytest.raises(TypeError):
        make_sample(spec, 1.0)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_make_sample_into_out_is_the_same(dtype):
    spec = Spec(height=30, width=20, channels=4, dtype=dtype, count=5)
    out = np.zeros(spec.shape, spec.np_dtype)
    got, label = make_sample(spec, 4, out=out)
    assert got is out
    assert np.array_equal(out, make_sample(spec, 4)[0]) and label == make_sample(spec, 4)[1]
    with pytest.raises(ValueError, match="C-contiguous"):
        make_sample(spec, 0, out=np.zeros((30, 20, 3), spec.np_dtype))


def test_smooth_content_compresses_and_noise_does_not():
    ratio = {}
    for content in ("smooth", "noise"):
        spec = preset_spec("imagenet", count=2, content=content)
        raw = make_sample(spec, 1)[0].tobytes()
        ratio[content] = len(zlib.compress(raw, 1)) / len(raw)
    assert ratio["smooth"] < 0.5 and ratio["noise"] > 0.99


# --- the codec ------------------------------------------------------------------------------------

CODEC_SPECS = [
    dict(height=28, width=28, channels=1),
    dict(height=5, width=7, channels=3),
    dict(height=6, width=5, channels=4),
    dict(height=4, width=6, channels=1, dtype="uint16"),
    dict(height=4, width=6, channels=3, dtype="uint16"),
    dict(height=9, width=8, channels=3, compression="deflate"),
    dict(height=9, width=8, channels=4, dtype="uint16", compression="deflate"),
    dict(height=160, width=150, channels=3),  # > 64 KiB: the in-place (memoryview) path
    dict(height=5, width=4, channels=4, dtype="uint16", payload="raw"),
]


@pytest.mark.parametrize("fields", CODEC_SPECS, ids=lambda f: "-".join(f"{v}" for v in f.values()))
def test_codec_round_trip_and_standard_readers(fields):
    spec = Spec(count=3, **fields)
    codec = Codec(spec)
    pixels = make_sample(spec, 2)[0]
    payload = codec.encode(pixels)
    assert np.array_equal(codec.decode(payload), pixels)
    assert np.array_equal(codec.decode(bytes(payload)), pixels)
    if codec.fixed_size:
        assert len(payload) == codec.fixed_size
    if spec.payload == "raw":
        assert bytes(payload) == pixels.tobytes()
        return
    assert bytes(payload[:len(codec.header)]) == codec.header
    img = tifffile.imread(io.BytesIO(bytes(payload)))
    assert np.array_equal(img.reshape(spec.shape), pixels)
    with tifffile.TiffFile(io.BytesIO(bytes(payload))) as tif:
        page = tif.pages[0]
        assert page.compression == (8 if spec.compression == "deflate" else 1)
        assert page.is_contiguous or spec.compression == "deflate"
    if spec.dtype == "uint8" or spec.channels == 1:  # Pillow has no 16-bit RGB(A)
        with Image.open(io.BytesIO(bytes(payload))) as im:
            arr = np.asarray(im)
            assert np.array_equal(arr.reshape(spec.shape).astype(spec.np_dtype), pixels)


def test_codec_decode_refuses_wrong_payloads():
    codec = Codec(Spec(height=4, width=4, channels=1, count=1))
    with pytest.raises(ValueError, match="not a TIFF"):
        codec.decode(b"\x00" * 50)
    other = Codec(Spec(height=5, width=4, channels=1, count=1)).encode(np.zeros((5, 4, 1), np.uint8))
    with pytest.raises(ValueError, match="expected"):
        codec.decode(other)
    raw = Codec(Spec(height=4, width=4, channels=1, count=1, payload="raw"))
    with pytest.raises(ValueError, match="raw payload is 3 bytes"):
        raw.decode(b"abc")


# --- corpora: every layout holds the same payloads --------------------------------------------------

CORPUS_SPECS = {
    "mnist-tiff": dict(height=28, width=28, channels=1),
    "rgb8": dict(height=5, width=7, channels=3),
    "rgba8": dict(height=6, width=5, channels=4),
    "gray16": dict(height=4, width=6, channels=1, dtype="uint16"),
    "rgb16": dict(height=4, width=6, channels=3, dtype="uint16"),
    "deflate": dict(height=12, width=8, channels=3, compression="deflate"),
    "deflate-noise16": dict(height=12, width=8, channels=4, dtype="uint16", compression="deflate", content="noise"),
    "raw8": dict(height=5, width=4, channels=3, payload="raw"),
    "raw16": dict(height=5, width=4, channels=4, dtype="uint16", payload="raw"),
    "big": dict(height=160, width=150, channels=3, count=5),  # >= 64 KiB: payloads made in place
    "big-raw16": dict(height=100, width=90, channels=4, dtype="uint16", payload="raw", count=5),
}


@pytest.mark.parametrize("kind", CORPUS_SPECS)
def test_every_layout_holds_the_reference_payloads(tmp_path, kind):
    spec = Spec(**{"count": 23, "seed": 5, "num_classes": 4, **CORPUS_SPECS[kind]})
    manifest, reports = gen(tmp_path, spec)
    codec = Codec(spec)
    reference = [make_sample(spec, i) for i in range(spec.count)]
    expected = [bytes(codec.encode(p)) for p, _ in reference]
    labels = [label for _, label in reference]

    assert read_manifest(tmp_path).to_dict() == manifest.to_dict()
    assert manifest.crc32 == [zlib.crc32(p) for p in expected]
    assert manifest.sizes == [len(p) for p in expected]
    assert manifest.labels == labels
    assert manifest.header_bytes == len(codec.header)
    for layout in layout_ids(available=True):
        assert layout_payloads(tmp_path, spec, layout, labels) == expected, layout

    # Labels, and the spec, as each layout stores them.
    h5_labels = hdf5_payloads(tmp_path, spec)[1]
    _, lmdb_labels, lmdb_spec = lmdb_payloads(tmp_path, spec)
    assert h5_labels.dtype == np.uint16 and h5_labels.tolist() == labels
    assert lmdb_labels.tolist() == labels and Spec.from_dict(lmdb_spec) == spec
    with h5py.File(tmp_path / "corpus.h5", "r") as f:
        assert Spec.from_dict(json.loads(f.attrs["layoutbench_spec"])) == spec
    ext = "tif" if spec.payload == "tiff" else "raw"
    on_disk = sorted(str(p.relative_to(tmp_path / "files")) for p in (tmp_path / "files").rglob(f"*.{ext}"))
    width = 1 if spec.count <= 10 else 2
    cw = len(str(spec.num_classes - 1))
    assert on_disk == sorted(f"{labels[i]:0{cw}d}/{i:0{width}d}.{ext}" for i in range(spec.count))
    # A directory for every class, empty ones too, zero-padded (ImageFolder numbers what it finds;
    # tests/test_torch_imagefolder.py checks its numbering).
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == [f"{c:0{cw}d}" for c in range(spec.num_classes)]

    # The files are images any reader opens.
    if spec.payload == "tiff":
        for i in (0, spec.count - 1):
            path = tmp_path / sample_relpath(spec, i, labels[i])
            assert np.array_equal(tifffile.imread(path).reshape(spec.shape), reference[i][0])
            if spec.dtype == "uint8" or spec.channels == 1:
                with Image.open(path) as im:
                    assert np.array_equal(np.asarray(im).reshape(spec.shape).astype(spec.np_dtype), reference[i][0])

    # The manifest's facts about each layout.
    for r in reports:
        facts = manifest.layouts[r.layout]
        assert facts["path"] == LAYOUT_PATH[r.layout]
        assert (facts["bytes_on_disk"], facts["files"]) == disk_usage(tmp_path / facts["path"])
        assert facts["payload_bytes"] == sum(manifest.sizes) and facts["write_seconds"] > 0
    assert [r.layout for r in reports] == list(layout_ids(available=True)) and reports[0].files == spec.count
    # Nothing temporary is left behind.
    written = [LAYOUT_PATH[name] for name in layout_ids(available=True)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".lock", MANIFEST, *written])
    assert not [p for p in tmp_path.rglob(f"*{TMP_MARK}*")]


def test_same_seed_same_bytes_for_any_worker_count(tmp_path):
    spec = Spec(height=16, width=12, channels=3, count=300, seed=9)
    one, _ = gen(tmp_path / "w1", spec, workers=1)
    two, _ = gen(tmp_path / "w2", spec, workers=2)
    assert one.crc32 == two.crc32 and one.sizes == two.sizes and one.labels == two.labels
    for layout in layout_ids(available=True):
        path = LAYOUT_PATH[layout]
        a, b = tree_bytes(tmp_path / "w1" / path), tree_bytes(tmp_path / "w2" / path)
        assert len(a) >= (spec.count if layout == "files" else 1), layout
        # the writer's snapshot: the files' bytes, or the records where the library names its files at
        # random (lance's transaction and data file names)
        cls = get_layout(layout).writer_class()
        assert cls.snapshot(tmp_path / "w1") == cls.snapshot(tmp_path / "w2"), layout


def test_different_seed_different_corpus(tmp_path):
    a, _ = gen(tmp_path / "a", Spec(height=8, width=8, channels=1, count=40, seed=1), layouts=["hdf5"])
    b, _ = gen(tmp_path / "b", Spec(height=8, width=8, channels=1, count=40, seed=2), layouts=["hdf5"])
    assert all(x != y for x, y in zip(a.crc32, b.crc32))
    assert (tmp_path / "a" / "corpus.h5").read_bytes() != (tmp_path / "b" / "corpus.h5").read_bytes()


def test_rerun_keeps_the_corpus_and_adding_a_layout_extends_it(tmp_path):
    spec = Spec(height=8, width=8, channels=3, count=30)
    first, reports = gen(tmp_path, spec, layouts=["files"])
    assert [r.skipped for r in reports] == [False]
    mtime = (tmp_path / MANIFEST).stat().st_mtime_ns
    again, reports = gen(tmp_path, spec, layouts=["files"])
    assert [r.skipped for r in reports] == [True] and (tmp_path / MANIFEST).stat().st_mtime_ns == mtime
    assert again.to_dict() == first.to_dict()
    extended, reports = gen(tmp_path, spec, layouts=["lmdb", "files"])
    assert [(r.layout, r.skipped) for r in reports] == [("lmdb", False), ("files", True)]
    assert set(extended.layouts) == {"files", "lmdb"} and extended.crc32 == first.crc32
    assert extended.layouts["files"] == first.layouts["files"]


def test_force_replaces_a_corpus_of_another_spec(tmp_path):
    gen(tmp_path, Spec(height=8, width=8, channels=1, count=30))
    smaller = Spec(height=8, width=8, channels=1, count=12, seed=4)
    with pytest.raises(UsageError, match="holds a corpus with a different spec .*count 30, seed 0.*--force"):
        gen(tmp_path, smaller)
    manifest, _ = gen(tmp_path, smaller, layouts=["files", "hdf5"], force=True)
    assert read_manifest(tmp_path).spec == smaller and set(manifest.layouts) == {"files", "hdf5"}
    assert not (tmp_path / "lmdb").exists()  # the old corpus's layouts are gone, not left stale
    assert disk_usage(tmp_path / "files")[1] == 12


def test_same_spec_under_another_preset_name_is_the_same_corpus(tmp_path):
    gen(tmp_path, Spec(height=28, width=28, channels=1, count=5), layouts=["files"])
    manifest, _ = gen(tmp_path, preset_spec("mnist", count=5), layouts=["hdf5"])
    assert set(manifest.layouts) == {"files", "hdf5"}


# --- the manifest ---------------------------------------------------------------------------------

def test_manifest_round_trip(tmp_path):
    spec = preset_spec("mnist", count=7, seed=3)
    manifest, _ = gen(tmp_path, spec, layouts=["hdf5"])
    data = json.loads((tmp_path / MANIFEST).read_text())
    assert data["format"] == "layoutbench-corpus" and data["version"] == VERSION
    assert Manifest.from_dict(data) == manifest == read_manifest(tmp_path)
    assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest
    assert manifest.spec == spec and manifest.spec.preset == "mnist"


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(version=VERSION + 1), f"manifest version {VERSION + 1}, newer than this layoutbench reads "
                                              f"\\(up to {VERSION}\\): upgrade layoutbench"),
    (lambda d: d.update(version=0), "manifest version 0; this layoutbench reads versions"),
    (lambda d: d.update(version="2"), "manifest version .2.; this layoutbench reads versions"),
    (lambda d: d.update(version=None), "manifest version None"),
    (lambda d: d.update(format="something-else"), "is not a layoutbench corpus manifest"),
    (lambda d: d["samples"].pop("crc32"), "is damaged"),
    (lambda d: d["samples"]["crc32"].pop(), "lists 6 checksums, 7 sizes and 7 labels for 7 samples"),
    (lambda d: d["spec"].update(count=0), "is damaged"),
    (lambda d: d["spec"].update(colour="red"), "unknown spec fields: colour"),
    (lambda d: d["layouts"]["hdf5"].update(path="../elsewhere.h5"), "not inside the corpus directory"),
    (lambda d: d["layouts"]["hdf5"].update(path="/etc/passwd"), "not inside the corpus directory"),
    (lambda d: d["layouts"].update(hdf5="corpus.h5"), "layout 'hdf5' has no path"),
])
def test_manifest_refuses_other_versions_and_damage(tmp_path, edit, message):
    gen(tmp_path, preset_spec("mnist", count=7), layouts=["hdf5"])
    data = json.loads((tmp_path / MANIFEST).read_text())
    edit(data)
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    with pytest.raises((CorpusError, UsageError), match=message):
        read_manifest(tmp_path)


def test_read_manifest_names_what_is_missing(tmp_path):
    with pytest.raises(CorpusError, match="no such corpus directory"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(CorpusError, match="manifest.json is missing: the corpus is incomplete"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(CorpusError, match="cannot be read"):
        read_manifest(tmp_path)


def test_a_corpus_from_another_generator_version_is_refused_when_extended(tmp_path):
    """Adding a layout re-derives every sample and checks it against the manifest's checksums."""
    spec = Spec(height=8, width=8, channels=1, count=30)
    gen(tmp_path, spec, layouts=["files"])
    data = json.loads((tmp_path / MANIFEST).read_text())
    data["samples"]["crc32"][17] ^= 1  # as if sample 17 had been made differently
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(CorpusError, match=r"samples 1\d\.\.\d+ differ from the checksums .* another version "
                                          r"of the generator .* --force"):
        gen(tmp_path, spec, layouts=["hdf5"])
    assert list(read_manifest(tmp_path).layouts) == ["files"] and not (tmp_path / "corpus.h5").exists()


def test_a_rerun_replaces_a_file_of_the_wrong_size_and_keeps_the_others(tmp_path):
    spec = Spec(height=8, width=8, channels=3, count=20)
    manifest, _ = gen(tmp_path, spec, layouts=["files"])
    (tmp_path / MANIFEST).unlink()  # as if killed before the files layout was recorded
    (tmp_path / IN_PROGRESS).write_text(json.dumps({"spec": spec.to_dict(), "layouts": ["files"]}))
    damaged = tmp_path / sample_relpath(spec, 3, manifest.labels[3])
    damaged.write_bytes(b"II*\x00short")
    kept = tmp_path / sample_relpath(spec, 4, manifest.labels[4])
    inode = kept.stat().st_ino
    again, _ = gen(tmp_path, spec, layouts=["files"])
    assert again.crc32 == manifest.crc32
    assert zlib.crc32(damaged.read_bytes()) == manifest.crc32[3]
    assert kept.stat().st_ino == inode  # a complete file is not rewritten


@pytest.mark.parametrize("height, count, per_file", [(600, 2, True), (600, 3, False), (28, 2, False)])
def test_files_durability_fsyncs_a_few_large_files_else_syncs_once(tmp_path, monkeypatch, height, count, per_file):
    import generator.layouts.files as files_layout

    calls = {"fsync": 0, "sync": 0}
    real_fsync = files_layout._fsync

    def fsync(path):
        calls["fsync"] += 1
        real_fsync(path)

    monkeypatch.setattr(files_layout, "_fsync", fsync)
    monkeypatch.setattr(files_layout, "FSYNC_EACH_MAX", 2)  # (256 by default: 2 stands for "few")
    monkeypatch.setattr(files_layout.os, "sync", lambda: calls.__setitem__("sync", calls["sync"] + 1))
    spec = Spec(height=height, width=600, channels=3, count=count, num_classes=2)
    manifest, _ = gen(tmp_path, spec, layouts=["files"])
    if per_file:  # every file, its label directory and files/
        assert calls == {"fsync": count + len(set(manifest.labels)) + 1, "sync": 0}
    else:
        assert calls["sync"] == 1
    assert files_payloads(tmp_path, spec, manifest.labels)[count - 1] == bytes(
        Codec(spec).encode(make_sample(spec, count - 1)[0]))
