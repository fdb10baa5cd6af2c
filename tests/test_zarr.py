"""The zarr layout: the conformance suite, zarr-python reading it on its own, shards and their damage."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import signal

import numpy as np
import pytest
from conformance import DAMAGE_KINDS, ReaderSuite, WriterSuite, reference

zarr = pytest.importorskip("zarr", reason="the zarr layout needs zarr: pip install -e '.[zarr]' (make install-extras)")
google_crc32c = pytest.importorskip("google_crc32c")

import generator.layouts.zarr as fmt  # noqa: E402
from generator.build import generate  # noqa: E402
from generator.codec import Codec  # noqa: E402
from generator.errors import CorpusError, SampleError  # noqa: E402
from generator.pool import produce  # noqa: E402
from generator.spec import Spec  # noqa: E402
from loaders import open_corpus  # noqa: E402


def _spec_codec(root):
    spec = Spec.from_dict(json.loads((root / "manifest.json").read_text())["spec"])
    return spec, Codec(spec)


def _per_shard(root, spec, codec):
    meta = json.loads((root / fmt.DIRNAME / fmt.array_name(codec) / "zarr.json").read_text())
    return meta["chunk_grid"]["configuration"]["chunk_shape"][0]


def edit_index(root, index, fn):
    """Rewrite sample `index`'s entry in its shard's index with fn((offset, nbytes)), crc32c renewed."""
    spec, codec = _spec_codec(root)
    s = _per_shard(root, spec, codec)
    path = root / fmt.DIRNAME / fmt.shard_key(spec, codec, index // s)
    raw = bytearray(path.read_bytes())
    n = fmt.index_bytes(s)
    table = np.frombuffer(raw[-n:-fmt.CRC], "<u8").reshape(s, 2).copy()
    table[index % s] = fn(tuple(int(v) for v in table[index % s]))
    body = table.astype("<u8").tobytes()
    raw[-n:] = body + google_crc32c.value(body).to_bytes(4, "little")
    path.write_bytes(bytes(raw))


def chunk_at(root, index):
    """(shard path, offset of the inner chunk, bytes of payload stored before the chunk's data)."""
    spec, codec = _spec_codec(root)
    s = _per_shard(root, spec, codec)
    path = root / fmt.DIRNAME / fmt.shard_key(spec, codec, index // s)
    raw = path.read_bytes()
    n = fmt.index_bytes(s)
    offset = int(np.frombuffer(raw[-n:-fmt.CRC], "<u8").reshape(s, 2)[index % s, 0])
    # fixed: the chunk is the pixels, the payload's header is not stored; variable: 8 bytes of vlen header
    return path, offset, (len(codec.header) if codec.fixed_size else -fmt.VLEN_HEADER)


class TestZarr(ReaderSuite):
    layout = "zarr"

    def make_missing(self, root, index):
        edit_index(root, index, lambda e: (fmt.EMPTY, fmt.EMPTY))

    def make_truncated(self, root, index):
        edit_index(root, index, lambda e: (e[0], e[1] - 10))

    def overwrite(self, root, index, offset, data):
        path, at, before = chunk_at(root, index)
        if offset < before:
            raise ValueError("the TIFF header of a fixed-size payload is not stored (it is put back on read)")
        with open(path, "r+b") as f:
            f.seek(at + offset - before)
            f.write(data)

    @pytest.mark.parametrize("kind", DAMAGE_KINDS)
    def test_corrupt_header_raises_named_error(self, corpus_copy, kind):
        """Replaces the suite's test: fixed-size payloads keep no header to corrupt (each read puts
        the corpus's own back, bit-exact), so the damage here is to what is stored in its place:
        the metadata saying what the chunks are, and (compressed corpora) the stored TIFF itself."""
        root = corpus_copy(kind)
        meta = root / fmt.DIRNAME / "images" / "zarr.json"
        doc = json.loads(meta.read_text())
        doc["data_type"] = "uint16"
        meta.write_text(json.dumps(doc))
        with pytest.raises(CorpusError, match="does not describe this corpus's array"):
            self.open(root).read_batch([0, 5])

    def test_a_stored_tiff_header_scribbled_is_undecodable(self, corpus_copy):
        root = corpus_copy("deflate")
        self.overwrite(root, 5, 0, b"JUNKJUNKJUNK")
        r = self.open(root)
        with pytest.raises(SampleError) as e:
            r.read_batch([0, 5])
        self.assert_named(e, 5, "undecodable")


class TestZarrWriter(WriterSuite):
    layout = "zarr"


# --- zarr-python reads it, and the format is what the docstring says ----------------------------

@pytest.mark.parametrize("kind", ["rgb16", "deflate"])
def test_zarr_python_opens_it_on_its_own(corpus, kind):
    root = corpus(kind)
    pixels, labels, payloads = reference(root)
    spec, codec = _spec_codec(root)
    with fmt.quiet():
        group = zarr.open(root / fmt.DIRNAME, mode="r")
        assert Spec.from_dict(group.attrs["layoutbench"]["spec"]) == spec
        assert group["labels"][:].tolist() == labels.tolist() and group["labels"].dtype == np.uint16
        if kind == "rgb16":
            images = group["images"]
            assert images.shape == (37, *spec.shape) and images.dtype == np.uint16
            assert images.chunks == (1, *spec.shape) and images.shards == (37, *spec.shape)
            assert images.compressors == ()
            assert np.array_equal(images[:], np.stack(pixels)) and np.array_equal(images[9], pixels[9])
        else:
            stored = group["payload"]
            assert stored.shape == (37,) and stored.chunks == (1,)
            assert [bytes(p) for p in stored[:]] == payloads


def test_an_inner_chunk_is_the_pixels_and_the_header_is_the_corpus_one(corpus):
    root = corpus("big")
    _, _, payloads = reference(root)
    _, codec = _spec_codec(root)
    path, at, h = chunk_at(root, 4)
    with open(path, "rb") as f:
        f.seek(at)
        assert f.read(len(payloads[4]) - h) == payloads[4][h:]
    assert payloads[4][:h] == codec.header


@pytest.mark.parametrize("kind", ["gray8", "big", "raw16", "deflate"])
def test_the_naive_zarr_path_gives_the_same_images(corpus, kind):
    root = corpus(kind)
    pixels, _, payloads = reference(root)
    r = open_corpus(root, "zarr")
    batch = np.random.default_rng(2).permutation(len(r))[:5]
    images, order, nbytes = r.naive_batch(batch)
    assert order.tolist() == sorted(batch.tolist()) and nbytes == sum(len(payloads[i]) for i in order)
    assert np.array_equal(images, np.stack([pixels[i] for i in order]))
    r.close_naive()


# --- several shards ---------------------------------------------------------------------------

SHARDED = Spec(height=8, width=6, channels=3, count=37, seed=5, num_classes=3)


@pytest.fixture
def sharded(tmp_path, monkeypatch):
    """A corpus of 37 images in shards of 8 (the last one holds 5)."""
    monkeypatch.setattr(fmt, "MAX_SHARD", 8)
    generate(tmp_path, SHARDED, layouts=["zarr"], workers=1, progress=False)
    return tmp_path


def test_shards_of_several_images(sharded):
    pixels, _, payloads = reference(sharded)
    r = open_corpus(sharded, "zarr", verify=True)
    order = np.random.default_rng(4).permutation(37)
    assert np.array_equal(r.read_batch(order)[0], np.stack([pixels[i] for i in order]))
    assert [bytes(p) for p in r.read_many(order)] == [payloads[i] for i in order]
    assert [p.name for p in r.paths()] == ["0"] * 5 and all(p.exists() for p in r.paths())
    assert "images/c/2/0/0/0 (inner chunk 3)" in r.where(19)
    assert pickle.loads(pickle.dumps(r))._tables is None  # per-process state never travels


def test_a_missing_shard_names_its_samples_and_spares_the_others(sharded):
    (sharded / fmt.DIRNAME / "images/c/2/0/0/0").unlink()
    r = open_corpus(sharded, "zarr")
    with pytest.raises(SampleError, match="shard file does not exist") as e:
        r.read_batch([0, 17])
    assert e.value.index == 17
    assert len(r.read_many([0, 15, 24, 36])) == 4


@pytest.mark.parametrize("damage, problem", [("cut", "truncated"), ("index byte", "crc32c"), ("link", "symbolic link")])
def test_a_damaged_shard_is_named(sharded, damage, problem):
    path = sharded / fmt.DIRNAME / "images/c/1/0/0/0"
    if damage == "cut":
        os.truncate(path, path.stat().st_size - 3)
    elif damage == "index byte":
        with open(path, "r+b") as f:
            f.seek(-10, os.SEEK_END)
            b = f.read(1)
            f.seek(-10, os.SEEK_END)
            f.write(bytes([b[0] ^ 1]))
    else:
        os.rename(path, sharded / "elsewhere")
        path.symlink_to(sharded / "elsewhere")
    r = open_corpus(sharded, "zarr")
    for call in (lambda: r.read(9), lambda: r.read_many([1, 9]), lambda: r.read_batch([9])):
        with pytest.raises(SampleError) as e:
            call()
        assert e.value.index == 9 and problem in e.value.problem and "images/c/1/0/0/0" in e.value.where


@pytest.mark.parametrize("entry", [(0, 2**60), (2**62, 10), (2**63 + 5, 144)])
def test_a_hostile_index_entry_is_an_error_not_an_allocation(sharded, entry):
    edit_index(sharded, 3, lambda e: entry)
    with pytest.raises(SampleError) as e:
        open_corpus(sharded, "zarr").read(3)
    assert e.value.index == 3 and ("past the shard's data" in e.value.problem or "too long" in e.value.problem)


@pytest.mark.parametrize("edit", ["huge shape", "huge shards", "compressed", "too big", "not json", "pickled spec",
                                  "other seed"])
def test_hostile_or_foreign_metadata_is_refused(sharded, edit):
    images, group = sharded / fmt.DIRNAME / "images/zarr.json", sharded / fmt.DIRNAME / "zarr.json"
    meta, attrs = json.loads(images.read_text()), json.loads(group.read_text())
    if edit == "huge shape":
        meta["shape"][0] = 10**15
    elif edit == "huge shards":
        meta["chunk_grid"]["configuration"]["chunk_shape"][0] = 2**40
    elif edit == "compressed":
        meta["codecs"][0]["configuration"]["codecs"].append({"name": "zstd", "configuration": {"level": 1}})
    elif edit == "other seed":
        attrs["attributes"]["layoutbench"]["spec"]["seed"] = 99
    elif edit == "pickled spec":
        attrs["attributes"]["layoutbench"]["spec"] = pickle.dumps(SHARDED).hex()
    images.write_text(json.dumps(meta))
    group.write_text(json.dumps(attrs))
    if edit == "too big":
        images.write_text(json.dumps(meta) + " " * (2 << 20))
    elif edit == "not json":
        group.write_bytes(pickle.dumps(attrs))
    with pytest.raises(CorpusError):
        open_corpus(sharded, "zarr").read(0)


# --- writing: resumable by whole shards -----------------------------------------------------------

def _killed_writer(root):
    """In a forked child: two whole shards of 8 and 4 samples more, then SIGKILL."""
    fmt.MAX_SHARD = 8
    w = fmt.ZarrWriter(root, SHARDED, Codec(SHARDED))
    w.begin()
    payloads, _, _, labels = produce(SHARDED, range(20))
    w.put_many(range(20), payloads, labels)
    os.kill(os.getpid(), signal.SIGKILL)


def _finish(root, start):
    w = fmt.ZarrWriter(root, SHARDED, Codec(SHARDED))
    assert w.begin() == start
    payloads, _, _, labels = produce(SHARDED, range(start, SHARDED.count))
    w.put_many(range(start, SHARDED.count), payloads, labels)
    w.end(np.array(produce(SHARDED, range(SHARDED.count))[3], np.uint16))


def _assert_whole(root, ref):
    with fmt.quiet():
        got, want = zarr.open(root / fmt.DIRNAME, mode="r"), zarr.open(ref / fmt.DIRNAME, mode="r")
        assert np.array_equal(got["images"][:], want["images"][:])
        assert np.array_equal(got["labels"][:], want["labels"][:])
    assert not list((root / fmt.DIRNAME).rglob("*.partial")) and not (root / fmt.PARTIAL).exists()


@pytest.mark.parametrize("damage", [None, "second shard cut", "temporary left"])
def test_a_killed_write_resumes_at_its_first_incomplete_shard(tmp_path, sharded, monkeypatch, damage):
    out = tmp_path / "out"
    out.mkdir()
    p = multiprocessing.get_context("fork").Process(target=_killed_writer, args=(out,))
    p.start()
    p.join(60)
    assert p.exitcode == -signal.SIGKILL
    shards = out / fmt.PARTIAL / "images" / "c"
    assert sorted(d.name for d in shards.iterdir()) == ["0", "1"]
    start = 16
    if damage == "second shard cut":
        os.truncate(shards / "1/0/0/0", 100)
        start = 8
    elif damage == "temporary left":
        (shards / "1/0/0/0.deadbeef.partial").write_bytes(b"half a shard")
    _finish(out, start)
    _assert_whole(out, sharded)


def test_a_partial_group_of_another_spec_is_started_over(tmp_path, sharded, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    other = Spec(height=8, width=6, channels=3, count=37, seed=6, num_classes=3)
    w = fmt.ZarrWriter(out, other, Codec(other))
    w.begin()
    w.put_many(range(16), *produce(other, range(16))[::3])
    _finish(out, 0)
    _assert_whole(out, sharded)


# -- the program's own zarr-python state: its open group, its zarr.config ------------------------------


@pytest.mark.parametrize("setting", [
    {"buffer": "zarr.buffer.gpu.Buffer", "ndbuffer": "zarr.buffer.gpu.NDBuffer"},  # zarr.config.enable_gpu()
    {"codec_pipeline.path": "not.a.Pipeline"},  # a pipeline of the program's own (zarrs, say), here absent
    {"codecs.bytes": "not.a.Codec"},
    {"array.order": "F", "default_zarr_format": 2, "async.concurrency": 1},
])
def test_reads_through_the_programs_zarr_config(corpus, setting):
    """Nothing but the bench's naive baseline goes through zarr-python: a program's zarr.config
    changes no read, verify's labels included."""
    from loaders.verify import verify

    root = corpus("gray8")
    pixels, labels, _ = reference(root)
    with zarr.config.set(setting):
        r = open_corpus(root, "zarr")
        images, _ = r.read_batch(list(range(len(r))))
        assert all(np.array_equal(images[i], pixels[i]) for i in range(len(r)))
        assert r.stored_labels().tolist() == labels.tolist()
        assert verify(root, ["zarr"], progress=False) == (["zarr"], [])


@pytest.mark.parametrize("mode", ["r", "r+", "a"])
def test_reads_beside_the_programs_open_group(corpus_copy, mode):
    root = corpus_copy("gray8")
    pixels, labels, _ = reference(root)
    with fmt.quiet():
        g = zarr.open_group(str(root / fmt.DIRNAME), mode=mode)
        held = g["labels"]
    r = open_corpus(root, "zarr")
    images, _ = r.read_batch(list(range(len(r))))
    assert all(np.array_equal(images[i], pixels[i]) for i in range(len(r)))
    assert r.stored_labels().tolist() == labels.tolist() == held[:].tolist()


def test_labels_chunk_damage_is_named(corpus_copy):
    root = corpus_copy("gray8")
    chunk = root / fmt.DIRNAME / "labels" / "c" / "0"
    os.truncate(chunk, 10)
    with pytest.raises(SampleError, match="labels/c/0 has 10 bytes, not the 74") as e:
        open_corpus(root, "zarr").stored_labels()
    assert e.value.index == -1
    chunk.unlink()
    with pytest.raises(SampleError, match="missing"):
        open_corpus(root, "zarr").stored_labels()


# --- fill-value chunks: zarr stores none for an all-zero image, and reads it as zeros --------------

def _zero_some(monkeypatch, zeros):
    """Make the generator's images of `zeros` all zero (the manifest's crc32 then says so), and the
    references verify and these tests recompute alike."""
    import conformance

    import generator.pool as pool
    import loaders.verify

    real = pool.make_sample

    def make(spec, index, out=None):
        pixels, label = real(spec, index, out)
        if index in zeros:
            pixels[...] = 0
        return pixels, label

    for module in (pool, loaders.verify, conformance):
        monkeypatch.setattr(module, "make_sample", make)


def test_an_all_zero_image_is_read_as_zarr_reads_it_not_as_truncated(tmp_path):
    """The issue's case: a 2x2x1 photo corpus holds an all-zero image, whose inner chunk zarr does not
    store; every read path, verify and zarr-python give the same images."""
    from loaders.verify import verify

    spec = Spec(height=2, width=2, channels=1, count=300, seed=0, content="photo")
    generate(tmp_path, spec, layouts=["zarr"], workers=1, progress=False)
    pixels, _, payloads = reference(tmp_path)
    zero = [i for i, p in enumerate(pixels) if not p.any()]
    assert zero, "this spec's corpus no longer holds an all-zero image: pick another"
    s = _per_shard(tmp_path, *_spec_codec(tmp_path))
    raw = (tmp_path / fmt.DIRNAME / "images/c/0/0/0/0").read_bytes()
    table = np.frombuffer(raw[-fmt.index_bytes(s):-fmt.CRC], "<u8").reshape(s, 2)
    assert (table[zero[0]] == fmt.EMPTY).all(), "zarr stored the zero chunk: this test no longer builds the state"
    assert verify(tmp_path, progress=False)[1] == []
    r = open_corpus(tmp_path, "zarr", verify=True)
    idx = [zero[0], zero[0] + 1]
    assert np.array_equal(r.read_batch(idx)[0], np.stack([pixels[i] for i in idx]))
    assert [bytes(p) for p in r.read_many(idx)] == [payloads[i] for i in idx]
    assert r.extents([zero[0]]) == [[]]
    with fmt.quiet():
        assert np.array_equal(zarr.open_group(tmp_path / fmt.DIRNAME, mode="r")["images"][:], np.stack(pixels))


def test_a_shard_zarr_did_not_write_because_all_its_images_are_zero_is_read_as_zeros(tmp_path, monkeypatch):
    from loaders.verify import verify

    monkeypatch.setattr(fmt, "MAX_SHARD", 8)
    _zero_some(monkeypatch, set(range(8, 16)) | {20})
    generate(tmp_path, SHARDED, layouts=["zarr"], workers=1, progress=False)
    assert not (tmp_path / fmt.DIRNAME / "images/c/1/0/0/0").exists(), "zarr wrote the all-zero shard"
    pixels, _, _ = reference(tmp_path)
    r = open_corpus(tmp_path, "zarr", verify=True)
    order = np.random.default_rng(1).permutation(37)
    assert np.array_equal(r.read_batch(order)[0], np.stack([pixels[i] for i in order]))
    assert not r.read_batch([9, 20])[0].any()
    assert verify(tmp_path, progress=False)[1] == []


def test_a_missing_chunk_of_an_image_that_is_not_zero_stays_missing(tmp_path, monkeypatch):
    """The manifest tells the legitimate state from damage: an emptied entry, or a deleted shard,
    of images that are not all zeros is named, not read as zeros."""
    monkeypatch.setattr(fmt, "MAX_SHARD", 8)
    _zero_some(monkeypatch, set(range(8, 15)))  # shard 1 all zero but sample 15
    generate(tmp_path, SHARDED, layouts=["zarr"], workers=1, progress=False)
    edit_index(tmp_path, 3, lambda e: (fmt.EMPTY, fmt.EMPTY))
    r = open_corpus(tmp_path, "zarr")
    with pytest.raises(SampleError, match="not all zeros") as e:
        r.read(3)
    assert e.value.index == 3
    (tmp_path / fmt.DIRNAME / "images/c/1/0/0/0").unlink()
    with pytest.raises(SampleError, match="shard file does not exist") as e:
        r.read_batch([9])
    assert e.value.index == 9


def test_a_resumed_zarr_build_keeps_a_whole_shard_holding_a_zero_image(tmp_path, monkeypatch):
    monkeypatch.setattr(fmt, "MAX_SHARD", 8)
    _zero_some(monkeypatch, {2})
    generate(tmp_path, SHARDED, layouts=["zarr"], workers=1, progress=False)
    os.rename(tmp_path / fmt.DIRNAME, tmp_path / fmt.PARTIAL)
    w = fmt.ZarrWriter(tmp_path, SHARDED, Codec(SHARDED))
    assert w.begin() == 37  # every shard whole, the one with an empty entry too


def test_shards_beyond_the_open_files_share_are_opened_per_read(sharded, monkeypatch):
    """Under a low `ulimit -n` (keep_open: an eighth of it) only that many shard files stay open; the
    rest are opened for the read and closed, the images the same."""
    import loaders.zarr

    monkeypatch.setattr(loaders.zarr, "keep_open", lambda per_handle=1: 1)
    pixels, _, _ = reference(sharded)
    r = open_corpus(sharded, "zarr", verify=True)
    order = np.random.default_rng(5).permutation(37)
    assert np.array_equal(r.read_batch(order)[0], np.stack([pixels[i] for i in order]))
    assert len(r._fds) == 1 and len(r._tables) == 5
