"""The tar layout: the conformance suite, webdataset and tarfile reading our shards (members named
by their format: webdataset's decode recipe), the writer's bytes (tarfile's headers, webdataset's
TarWriter), corpora of format version 3 (members named .tif), sharding settings, resume, hostile
indexes."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from conformance import ReaderSuite, WriterSuite, reference
from conftest import kind_spec
from helpers import need_layout
from records_helpers import facts, pwrite, shard_of, tree_bytes, write_some_parts

from generator.build import generate
from generator.errors import CorpusError, SampleError
from generator.layouts import get_layout
from generator.layouts.records import samples_per_shard
from generator.layouts.tar import BLOCK, INDEX_HEADER, headers
from generator.manifest import MANIFEST, read_manifest
from generator.pool import codec_for
from generator.spec import Spec, preset_spec
from loaders import open_corpus
from loaders.verify import verify


def _entry(root, index):
    """(shard path, payload offset, payload size, label offset) of sample `index`, from the .idx file."""
    k, j = shard_of(root, "tar", index)
    raw = (root / "tar" / f"shard-{k:06d}.idx").read_bytes()
    a, n, c, _ = np.frombuffer(raw, "<u8", 4, INDEX_HEADER + 32 * j).tolist()
    return root / "tar" / f"shard-{k:06d}.tar", a, n, c


class TestTar(ReaderSuite, WriterSuite):
    layout = "tar"

    def make_missing(self, root, index):
        path, a, _, _ = _entry(root, index)  # the member renamed (header checksum kept valid): not there
        head = bytearray((path.read_bytes())[a - BLOCK:a])
        head[:100] = b"renamed.tif".ljust(100, b"\0")
        head[148:156] = b" " * 8
        head[148:155] = b"%06o\0" % sum(head)
        pwrite(path, a - BLOCK, bytes(head))

    def make_truncated(self, root, index):
        path, a, n, _ = _entry(root, index)
        os.truncate(path, a + n // 2)

    def overwrite(self, root, index, offset, data):
        path, a, _, _ = _entry(root, index)
        pwrite(path, a + offset, data)


# -- what standard tools see ----------------------------------------------------------------------

def _webdataset():
    try:
        import webdataset
    except Exception as exc:  # not installed, or broken by its own dependencies
        pytest.skip(f"webdataset is not importable ({type(exc).__name__}: {exc}): pip install webdataset")
    return webdataset


def test_webdataset_reads_our_shards_bit_exact(corpus):
    wds = _webdataset()

    root = corpus("rgb8")
    _, labels, payloads = reference(root)
    urls = [str(p) for p in sorted((root / "tar").glob("shard-*.tar"))]
    seen = list(wds.WebDataset(urls, shardshuffle=False))
    assert [s["__key__"] for s in seen] == [f"{i:02d}" for i in range(37)]
    assert [bytes(s["tif"]) for s in seen] == payloads
    assert [int(s["cls"]) for s in seen] == labels.tolist()
    decoded = list(wds.WebDataset(urls, shardshuffle=False).decode().to_tuple("cls"))
    assert [c for (c,) in decoded] == labels.tolist()  # webdataset's own .cls decoder


PNG = dict(height=5, width=7, channels=3, count=37, seed=7, num_classes=5, payload="png")


def _shard_urls(root):
    return [str(p) for p in sorted((root / "tar").glob("shard-*.tar"))]


@pytest.mark.parametrize("kind, keys", [("jpeg", "jpg;png"), ("png", "jpg;png"), ("rgb8", "tif")])
def test_webdatasets_decode_recipe_reads_our_corpora(tmp_path, corpus, kind, keys):
    """webdataset's documented recipe, .decode("rgb8").to_tuple("jpg;png", "cls"), finds the image
    of every sample (members are named by their format) and decodes its pixels and label."""
    wds = _webdataset()
    root = tmp_path if kind == "png" else corpus(kind)
    if kind == "png":
        generate(root, Spec(**PNG), ["tar"], workers=1, progress=False)
    pixels, labels, _ = reference(root)
    got = list(wds.WebDataset(_shard_urls(root), shardshuffle=False).decode("rgb8").to_tuple(keys, "cls"))
    assert len(got) == 37 and all(np.array_equal(img, want) for (img, _), want in zip(got, pixels))
    assert [c for _, c in got] == labels.tolist()


def test_members_take_their_formats_extension(corpus):
    root = corpus("jpeg")
    with tarfile.open(root / "tar" / "shard-000000.tar") as tf:
        assert tf.getnames()[:4] == ["00.cls", "00.jpg", "01.cls", "01.jpg"]
    if shutil.which("tar"):
        out = subprocess.run(["tar", "-tf", str(root / "tar" / "shard-000000.tar")], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.split()[:2] == ["00.cls", "00.jpg"]
    _, labels, payloads = reference(root)
    buf = io.BytesIO()  # and the shard is what webdataset's own TarWriter writes for these samples
    wds = _webdataset()
    per = facts(root, "tar")["samples_per_shard"]
    with wds.TarWriter(buf, mtime=0) as w:
        for i in range(per):
            w.write({"__key__": f"{i:02d}", "cls": str(labels[i]).encode(), "jpg": payloads[i]})
    assert (root / "tar" / "shard-000000.tar").read_bytes() == buf.getvalue()


MIXED_SOURCES = ("a/0.jpg", "a/1.png", "b/2.tif", "b/3.jpeg")


def _mixed_source(src):
    """SRC/a, SRC/b: a JPEG, a PNG, a TIFF and a PNG named .jpeg (named by its bytes: .png)."""
    from PIL import Image

    rng = np.random.default_rng(3)
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    images = [rng.integers(0, 255, (6 + k, 5, 3), np.uint8) for k in range(4)]
    for name, fmt, img in zip(MIXED_SOURCES, ("JPEG", "PNG", "TIFF", "PNG"), images):
        Image.fromarray(img).save(src / name, fmt)
    return images


def _member_names(root):
    names = []
    for shard in _shard_urls(root):
        with tarfile.open(shard) as tf:
            names += tf.getnames()
    return names


def test_an_ingested_corpus_of_mixed_formats_names_each_member_by_its_recorded_format(tmp_path):
    from generator.ingest import ingest

    src = tmp_path / "src"
    images = _mixed_source(src)
    ingest(src, tmp_path / "c", ["tar"], workers=1, progress=False)
    root = tmp_path / "c"
    assert read_manifest(root).formats == ["jpeg", "png", "tiff", "png"]  # samples.format: what the scan found
    assert _member_names(root)[1::2] == ["0.jpg", "1.png", "2.tif", "3.png"]
    assert verify(root, ["tar"], progress=False, source=src)[1] == []
    r = open_corpus(root, "tar", verify=True)
    assert [bytes(p) for p in r.read_many(range(4))] == [(src / n).read_bytes() for n in MIXED_SOURCES]
    assert r.where(2).endswith("member 2.tif")  # named before anything is read: the manifest says
    wds = _webdataset()
    got = list(wds.WebDataset(_shard_urls(root), shardshuffle=False).decode("rgb8").to_tuple("jpg;png;tif", "cls"))
    assert [c for _, c in got] == [0, 0, 1, 1]
    assert all(np.array_equal(img, want) for (img, _), want in zip(got[1:], images[1:]))  # lossless ones exactly


def _as_version_3(root) -> None:
    """Make `root`'s tar layout what layoutbench wrote before format version 4, independently of
    our writer: each shard rewritten by tarfile with every payload member named <key>.tif (the
    headers are otherwise the same, so offsets and the index hold), and the manifest's version 3."""
    for shard in sorted((root / "tar").glob("shard-*.tar")):
        buf = io.BytesIO()
        with tarfile.open(shard) as tf, tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as out:
            for m in tf.getmembers():
                data = tf.extractfile(m).read()
                m.name = m.name if m.name.endswith(".cls") else m.name.rsplit(".", 1)[0] + ".tif"
                out.addfile(m, io.BytesIO(data))
        shard.write_bytes(buf.getvalue())
    data = json.loads((root / MANIFEST).read_text())
    data["version"] = 3
    data["samples"].pop("format", None)  # version 3 did not list an ingested sample's format
    (root / MANIFEST).write_text(json.dumps(data))


def test_the_reader_names_members_by_the_manifests_formats_not_by_their_bytes(tmp_path):
    """The member a reader looks for is the one the manifest's samples.format names: a manifest
    that says otherwise than the shard is a named error, never a guess from the payload's bytes."""
    from generator.ingest import ingest

    src, root = tmp_path / "src", tmp_path / "c"
    _mixed_source(src)
    ingest(src, root, ["tar"], workers=1, progress=False)
    data = json.loads((root / MANIFEST).read_text())
    data["samples"]["format"][2] = "png"  # sample 2 is a TIFF, its member 2.tif
    (root / MANIFEST).write_text(json.dumps(data))
    r = open_corpus(root, "tar")
    assert r.where(2).endswith("member 2.png")
    with pytest.raises(SampleError, match="missing: no member 2.png at byte .* \\(found '2.tif'\\)"):
        r.read_many([2])
    assert [bytes(p) for p in r.read_many([0, 1, 3])] == [(src / n).read_bytes() for n in ("a/0.jpg", "a/1.png",
                                                                                            "b/3.jpeg")]
    for edit, message in [(lambda d: d["samples"].pop("format"), "samples.format, and it is missing"),
                          (lambda d: d["samples"]["format"].pop(), "one format per sample, 4 in all"),
                          (lambda d: d["samples"]["format"].__setitem__(0, "gif"), "sample 0 has format 'gif'"),
                          (lambda d: d.__setitem__("version", 3), "lists per-sample formats for a corpus")]:
        bad = json.loads(json.dumps(data))
        edit(bad)
        (root / MANIFEST).write_text(json.dumps(bad))
        with pytest.raises(CorpusError, match=message):
            read_manifest(root)


def test_an_old_ingested_corpus_of_mixed_formats_reads_its_tif_members(tmp_path):
    """Version 3 named every member of a mixed corpus <key>.tif and listed no formats: still read,
    bit-exact, and verified against its source."""
    from generator.ingest import ingest

    src, root = tmp_path / "src", tmp_path / "c"
    _mixed_source(src)
    ingest(src, root, ["tar"], workers=1, progress=False)
    _as_version_3(root)
    m = read_manifest(root)
    assert m.version == 3 and m.formats is None
    assert _member_names(root)[1::2] == ["0.tif", "1.tif", "2.tif", "3.tif"]
    r = open_corpus(root, "tar", verify=True)
    assert [bytes(p) for p in r.read_many(range(4))] == [(src / n).read_bytes() for n in MIXED_SOURCES]
    assert r.where(0).endswith("member 0.tif")
    assert verify(root, ["tar"], progress=False, source=src)[1] == []


def test_a_version_3_corpus_reads_bit_exact_and_is_extended_in_its_own_names(tmp_path):
    spec = Spec(**PNG)
    old = tmp_path / "old"
    generate(old, spec, ["tar"], workers=1, progress=False)
    _as_version_3(old)
    with tarfile.open(old / "tar" / "shard-000000.tar") as tf:
        assert tf.getnames()[:2] == ["00.cls", "00.tif"]
    pixels, labels, payloads = reference(old)
    r = open_corpus(old, "tar", verify=True)
    assert [bytes(p) for p in r.read_many(range(37))] == payloads
    assert all(np.array_equal(a, b) for a, b in zip(r.read_batch(range(37))[0], pixels))
    assert np.array_equal(r.stored_labels(), labels) and r.where(3).endswith("member 03.tif")
    assert verify(old, progress=False)[1] == []
    # A tar layout added to a version-3 corpus is written with version 3's names: never mixed.
    grown = tmp_path / "grown"
    generate(grown, spec, ["files"], workers=1, progress=False)
    data = json.loads((grown / MANIFEST).read_text())
    data["version"] = 3
    (grown / MANIFEST).write_text(json.dumps(data))
    generate(grown, spec, ["files", "tar"], workers=1, progress=False)
    assert read_manifest(grown).version == 3 and tree_bytes(grown / "tar") == tree_bytes(old / "tar")
    assert verify(grown, progress=False)[1] == []


def test_tarfile_and_tar_list_the_members_in_index_order(corpus):
    root = corpus("raw16")
    _, labels, payloads = reference(root)
    names, data = [], []
    for shard in sorted((root / "tar").glob("shard-*.tar")):
        with tarfile.open(shard) as tf:
            for m in tf.getmembers():
                assert m.isfile() and m.mtime == 0 and m.mode == 0o444
                names.append(m.name)
                data.append(tf.extractfile(m).read())
    assert names == [f"{i:02d}.{ext}" for i in range(37) for ext in ("cls", "raw")]
    assert data[1::2] == payloads and data[0::2] == [str(x).encode() for x in labels]
    if shutil.which("tar"):
        out = subprocess.run(["tar", "-tf", str(root / "tar" / "shard-000000.tar")], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.split()[:2] == ["00.cls", "00.raw"]


def test_shards_are_byte_identical_to_webdataset_tarwriter(corpus):
    """Our vectorised headers and layout are what webdataset's own TarWriter writes (mtime fixed)."""
    wds = _webdataset()

    root = corpus("gray8")
    _, labels, payloads = reference(root)
    per = facts(root, "tar")["samples_per_shard"]
    for k in (0, 37 // per):
        buf = io.BytesIO()
        with wds.TarWriter(buf, mtime=0) as w:
            for i in range(k * per, min(37, (k + 1) * per)):
                w.write({"__key__": f"{i:02d}", "cls": str(labels[i]).encode(), "tif": payloads[i]})
        assert (root / "tar" / f"shard-{k:06d}.tar").read_bytes() == buf.getvalue()


def test_headers_match_tarfile():
    names, sizes = [b"00000.cls", b"99999.tif", b"12345.raw", b"00007.webp"], [1, 976, 91_846_400, 5]
    for name, size, head in zip(names, sizes, headers(names, sizes)):
        info = tarfile.TarInfo(name.decode())
        info.size, info.mtime, info.mode, info.uname, info.gname = size, 0, 0o444, "bigdata", "bigdata"
        assert head.tobytes() == info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")


def test_wids_shard_list(corpus):
    import json

    root = corpus("gray8")
    desc = json.loads((root / "tar" / "shards.json").read_text())
    assert desc["__kind__"] == "wids-shard-index-v1" and desc["wids_version"] == 1
    assert sum(s["nsamples"] for s in desc["shardlist"]) == 37
    for s in desc["shardlist"]:
        assert (root / "tar" / s["url"]).stat().st_size == s["filesize"]


# -- sharding ----------------------------------------------------------------------------------

def test_shard_size_settings():
    mnist = preset_spec("mnist", count=60_000)
    assert samples_per_shard(mnist, codec_for(mnist)) == 7_500  # 8 shards: the small-corpus default
    big = preset_spec("mnist", count=1_000_000)
    assert samples_per_shard(big, codec_for(big)) == 10_000
    imagenet = preset_spec("imagenet", count=1_281_167)
    assert samples_per_shard(imagenet, codec_for(imagenet)) == (256 << 20) // codec_for(imagenet).fixed_size
    k4 = preset_spec("4k-8bit", count=8)
    assert samples_per_shard(k4, codec_for(k4)) == 1
    assert samples_per_shard(mnist, codec_for(mnist), shard_samples=20_000) == 20_000  # explicit: honoured
    assert samples_per_shard(mnist, codec_for(mnist), shard_mb=1) == (1 << 20) // 976
    assert samples_per_shard(k4, codec_for(k4), shard_mb=1) == 1  # never zero


def test_settings_reach_the_manifest_and_the_cli(tmp_path):
    spec = Spec(height=4, width=4, channels=1, count=25, seed=2)
    sharded = [name for name in ("tar", "tfrecord") if get_layout(name).missing() is None]  # tfrecord: crc32c
    generate(tmp_path / "a", spec, sharded, workers=1, progress=False, settings={"shard_samples": 10})
    for layout, ext in ((name, name) for name in sharded):
        f = facts(tmp_path / "a", layout)
        assert (f["samples_per_shard"], f["shards"], f["shard_samples"]) == (10, 3, 10)
        assert len(list((tmp_path / "a" / layout).glob(f"*.{ext}"))) == 3
    out = subprocess.run([sys.executable, "-m", "generator", "--shape", "4x4", "--count", "25", "--seed", "2",
                          "--layouts", "tar", "--shard-samples", "10", "--out", str(tmp_path / "b"), "--quiet"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert tree_bytes(tmp_path / "a" / "tar") == tree_bytes(tmp_path / "b" / "tar")
    bad = subprocess.run([sys.executable, "-m", "generator", "--shape", "4x4", "--shard-mb", "-1",
                          "--out", str(tmp_path / "c")], capture_output=True, text=True)
    assert bad.returncode == 2 and "--shard-mb" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("layout", ["tar", "tfrecord"])
def test_same_bytes_whatever_the_worker_count_and_after_an_interrupted_run(tmp_path, layout):
    need_layout(layout)
    spec = kind_spec("rgb8")
    generate(tmp_path / "one", spec, [layout], workers=1, progress=False)
    generate(tmp_path / "three", spec, [layout], workers=3, progress=False)
    want = tree_bytes(tmp_path / "one" / layout)
    assert tree_bytes(tmp_path / "three" / layout) == want
    # killed after 3 of 8 shards, one more half-written under a temporary name: nothing final yet
    root = tmp_path / "cut"
    write_some_parts(root, spec, layout, 3)
    partial = root / f"{layout}.partial"
    (partial / f"shard-000003.{layout}.tmp-999").write_bytes(b"half a shard")
    kept = {p.name: p.stat().st_mtime_ns for p in partial.glob("shard-00000[012].*")}
    assert len(kept) == 6 and not (root / layout).exists()
    with pytest.raises(CorpusError):
        open_corpus(root, layout)
    generate(root, spec, [layout], workers=2, progress=False)
    assert tree_bytes(root / layout) == want
    assert {n: (root / layout / n).stat().st_mtime_ns for n in kept} == kept  # complete shards were kept
    assert not partial.exists()


def test_other_settings_on_resume_start_the_layout_over(tmp_path):
    spec = kind_spec("gray8")
    write_some_parts(tmp_path, spec, "tar", 2, settings={"shard_samples": 4})
    generate(tmp_path, spec, ["tar"], workers=1, progress=False, settings={"shard_samples": 10})
    assert facts(tmp_path, "tar")["samples_per_shard"] == 10
    assert sorted(p.name for p in (tmp_path / "tar").glob("*.tar")) == [f"shard-00000{k}.tar" for k in range(4)]
    assert verify(tmp_path, ["tar"], progress=False)[1] == []


# -- damage beyond the conformance suite ----------------------------------------------------------

def test_hostile_index_files_are_named_errors_without_huge_allocations(corpus_copy):
    root = corpus_copy("gray8")
    idx = root / "tar" / "shard-000001.idx"
    good = idx.read_bytes()
    cases = {
        "huge count": good[:16] + (2**62).to_bytes(8, "little") + good[24:],
        "wrong first": good[:8] + (3).to_bytes(8, "little") + good[16:],
        "offset far out": good[:INDEX_HEADER] + (2**40 * 512).to_bytes(8, "little") + good[INDEX_HEADER + 8:],
        "not ours": b"JUNK" * 10,
    }
    for what, raw in cases.items():
        idx.write_bytes(raw)
        with pytest.raises(SampleError) as e:
            open_corpus(root, "tar").read(5)
        assert e.value.index == 5 and ("damaged index" in e.value.problem or "truncated" in e.value.problem), what
    with open(idx, "wb") as f:  # 10 GB (sparse): refused from its size, never read
        f.truncate(10 << 30)
    with pytest.raises(SampleError, match="damaged index: 10,737,418,240 bytes"):
        open_corpus(root, "tar").read_batch([6])
    idx.unlink()
    with pytest.raises(SampleError, match="index file is missing"):
        open_corpus(root, "tar").read(7)


def test_header_damage_is_caught_by_verify_and_checked_readers(corpus_copy):
    root = corpus_copy("gray8")
    path, a, _, c = _entry(root, 8)
    pwrite(path, a - BLOCK + 140, b"7")  # inside the mtime field: the header checksum no longer holds
    pwrite(path, c, b"9" if reference(root)[1][8] != 9 else b"8")  # and the .cls member of sample 8
    names, found = verify(root, ["tar"], progress=False)
    assert [(m.index, "checksum" in m.problem or "cls" in m.problem) for m in found] == [(8, True)]
    with pytest.raises(SampleError, match="checksum") as e:
        open_corpus(root, "tar", verify=True).read_many([7, 8])
    assert e.value.index == 8


def test_stored_labels_come_from_the_cls_members(corpus):
    root = corpus("rgba8")
    assert np.array_equal(open_corpus(root, "tar").stored_labels(), reference(root)[1])


def test_a_stray_file_in_the_layout_is_listed(corpus_copy):
    root = corpus_copy("gray8")
    (root / "tar" / "shard-000099.tar").write_bytes(b"")
    assert [m.where for m in verify(root, ["tar"], progress=False)[1]] == [str(root / "tar" / "shard-000099.tar")]


def test_hand_edited_shard_facts_are_refused(corpus_copy):
    import json

    root = corpus_copy("gray8")
    m = json.loads((root / "manifest.json").read_text())
    for bad in (0, -3, "5", 10**9, None):
        m["layouts"]["tar"]["samples_per_shard"] = bad
        (root / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(CorpusError, match="samples_per_shard"):
            open_corpus(root, "tar")


class TestTarShardsClosedAfterEachRead(TestTar):
    """The suite again with no shard kept open beyond the read that uses it (what a corpus of more
    shards than an eighth of `ulimit -n` gets: loaders/records.py's bounded shards): every read
    path reopens its shard, and its parsed index is reused."""

    @pytest.fixture(autouse=True)
    def _no_shard_kept(self, monkeypatch):
        import loaders.records

        monkeypatch.setattr(loaders.records, "keep_open", lambda per_handle=1: 0)
