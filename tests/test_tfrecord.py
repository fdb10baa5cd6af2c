"""The tfrecord layout: the conformance suite, the tfrecord package and protobuf reading our
records, the record framing and masked crc32c, CRC checks, truncation and hostile indexes."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from conformance import ReaderSuite, WriterSuite, reference
from records_helpers import pwrite, shard_of

from generator.layouts import get_layout

if (_why := get_layout("tfrecord").missing()) is not None:
    pytest.skip(_why, allow_module_level=True)

from generator.errors import SampleError  # noqa: E402
from generator.layouts.tfrecord import HEADER, crc32c, decode_example, encode_example, masked_crc, sample_fields  # noqa: E402
from loaders import open_corpus  # noqa: E402
from loaders.__main__ import main as loaders_main  # noqa: E402
from loaders.verify import verify  # noqa: E402


def _record(root, index):
    """(shard path, record offset, record length) of sample `index`, from the .tfindex file."""
    k, j = shard_of(root, "tfrecord", index)
    line = (root / "tfrecord" / f"shard-{k:06d}.tfindex").read_text().splitlines()[j]
    o, n = map(int, line.split())
    return root / "tfrecord" / f"shard-{k:06d}.tfrecord", o, n


def _payload_at(root, index) -> tuple:
    path, o, n = _record(root, index)
    data = path.read_bytes()[o + HEADER:o + n - 4]
    (a, _), _, _ = sample_fields(data)
    return path, o + HEADER + a


class TestTFRecord(ReaderSuite, WriterSuite):
    layout = "tfrecord"

    def make_missing(self, root, index):
        path, o, n = _record(root, index)
        rec = path.read_bytes()[o:o + n]
        at = rec.index(b"image/encoded")
        pwrite(path, o + at, b"image/encodeX")  # the record no longer has the feature

    def make_truncated(self, root, index):
        path, o, n = _record(root, index)
        os.truncate(path, o + n // 2)

    def overwrite(self, root, index, offset, data):
        path, at = _payload_at(root, index)
        pwrite(path, at + offset, data)


def test_the_tfrecord_package_reads_our_records(corpus):
    from tfrecord.reader import tfrecord_loader

    root = corpus("rgb16")
    _, labels, payloads = reference(root)
    description = {"image/encoded": "byte", "image/class/label": "int", "image/index": "int"}
    got = []
    for shard in sorted((root / "tfrecord").glob("*.tfrecord")):
        # (index_path=None: read front to back; with an index and no shard it starts at a random record)
        for g in tfrecord_loader(str(shard), None, description):  # it reuses its buffers: copy now
            got.append((bytes(g["image/encoded"]), int(g["image/class/label"][0]), int(g["image/index"][0])))
    assert got == list(zip(payloads, labels.tolist(), range(37)))
    # its index-driven sharding (what its torch dataset uses) splits our index the same way
    shard, index = root / "tfrecord" / "shard-000001.tfrecord", root / "tfrecord" / "shard-000001.tfindex"
    halves = [[int(g["image/index"][0]) for g in tfrecord_loader(str(shard), str(index), description, shard=(w, 2))]
              for w in range(2)]
    assert sum(halves, []) == list(range(5, 10)) and all(halves)


def test_our_index_is_what_tfrecord2idx_writes(corpus, tmp_path):
    from tfrecord.tools.tfrecord2idx import create_index

    root = corpus("gray8")
    for shard in sorted((root / "tfrecord").glob("*.tfrecord")):
        create_index(str(shard), str(tmp_path / "made.tfindex"))
        assert (tmp_path / "made.tfindex").read_bytes() == shard.with_suffix(".tfindex").read_bytes()


def test_examples_are_protobufs_deterministic_serialization():
    from tfrecord import example_pb2

    for size, label, index in ((0, 0, 0), (976, 9, 36), (200_000, 65_535, 2**40)):
        payload = bytes(np.random.default_rng(size).integers(0, 256, size, np.uint8))
        ex = example_pb2.Example()
        ex.features.feature["image/encoded"].bytes_list.value.append(payload)
        ex.features.feature["image/class/label"].int64_list.value.append(label)
        ex.features.feature["image/index"].int64_list.value.append(index)
        assert encode_example(payload, label, index) == ex.SerializeToString(deterministic=True)
        (a, b), got_label, got_index = sample_fields(ex.SerializeToString())
        assert ex.SerializeToString()[a:b] == payload and (got_label, got_index) == (label, index)


def test_the_decoder_reads_foreign_examples_and_refuses_damage():
    from tfrecord import example_pb2

    ex = example_pb2.Example()  # other features, another order, a negative int64 and a float list
    ex.features.feature["image/index"].int64_list.value.append(-5)
    ex.features.feature["other"].float_list.value.extend([1.5, 2.5])
    ex.features.feature["image/encoded"].bytes_list.value.append(b"abc")
    ex.features.feature["image/class/label"].int64_list.value.append(3)
    data = ex.SerializeToString()
    f = decode_example(data)
    assert f[b"image/index"] == ("int64", [-5]) and f[b"other"][0] == "float"
    (a, b), label, index = sample_fields(data)
    assert (data[a:b], label, index) == (b"abc", 3, -5)
    for cut in range(1, len(data)):  # every truncation is a ValueError/LookupError, never an IndexError
        try:
            sample_fields(data[:cut])
        except (ValueError, LookupError):
            pass
    with pytest.raises(ValueError, match="claims"):
        sample_fields(b"\x0a\xff\xff\xff\x0f" + data)
    with pytest.raises(LookupError, match="image/encoded"):
        sample_fields(encode_example(b"x", 1, 2).replace(b"image/encoded", b"image/encodeX"))


def test_masked_crc32c():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    for data in (b"", b"123456789", bytes(range(256)) * 9):
        c = crc32c(data)
        assert masked_crc(data) == ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) % 2**32


def test_record_framing(corpus):
    root = corpus("gray8")
    path, o, n = _record(root, 12)
    rec = path.read_bytes()[o:o + n]
    (length,) = struct.unpack("<Q", rec[:8])
    assert length == n - 16
    assert struct.unpack("<I", rec[8:12])[0] == masked_crc(rec[:8])
    assert struct.unpack("<I", rec[-4:])[0] == masked_crc(rec[12:-4])


@pytest.mark.parametrize("where", ["length crc", "data crc", "index feature"])
def test_crc_damage_outside_the_payload_is_caught_by_verify_and_checked_readers(corpus_copy, where):
    """Bytes no payload check sees: only the record's crc32c's catch them."""
    root = corpus_copy("gray8")
    path, o, n = _record(root, 9)
    at = {"length crc": o + 8, "data crc": o + n - 2, "index feature": o + n - 5}[where]
    old = path.read_bytes()[at]
    pwrite(path, at, bytes([old ^ 0x01]))
    r = open_corpus(root, "tfrecord")
    if where != "index feature":
        assert bytes(r.read(9)) == reference(root)[2][9]  # the plain path does not check crc32c
    with pytest.raises(SampleError, match="crc32c") as e:
        open_corpus(root, "tfrecord", verify=True).read_batch([8, 9, 10])
    assert e.value.index == 9 and "record 4" in e.value.where
    found = verify(root, ["tfrecord"], progress=False)[1]
    assert [m.index for m in found] == [9] and "crc32c" in found[0].problem
    assert loaders_main(["verify", str(root), "--layouts", "tfrecord", "--quiet"]) == 1


def test_a_truncated_last_record_is_an_error_never_skipped(corpus_copy):
    root = corpus_copy("gray8")
    last = sorted((root / "tfrecord").glob("*.tfrecord"))[-1]
    os.truncate(last, last.stat().st_size - 3)
    r = open_corpus(root, "tfrecord")
    assert bytes(r.read(35)) == reference(root)[2][35]
    for read in (lambda: r.read(36), lambda: r.read_many([35, 36]), lambda: r.stored_labels()):
        with pytest.raises(SampleError, match="truncated") as e:
            read()
        assert e.value.index == 36 and "record 1" in e.value.where and str(last) in e.value.where
    found = verify(root, ["tfrecord"], progress=False)[1]
    assert any(m.index == 36 and "truncated" in m.problem for m in found)


def test_hostile_index_files_are_named_errors_without_huge_allocations(corpus_copy):
    root = corpus_copy("gray8")
    idx = root / "tfrecord" / "shard-000002.tfindex"
    good = idx.read_text()
    lines = good.splitlines()
    cases = {
        "one record too many": good + "5360 1072\n",
        "a gap": good.replace(lines[1], f"1073 {lines[1].split()[1]}"),
        "past the end": "\n".join(lines[:-1] + [f"{lines[-1].split()[0]} 99999999999"]) + "\n",
        "not numbers": good.replace(lines[2], "x y"),
        "too short a record": good.replace(lines[0], "0 3"),
    }
    for what, text in cases.items():
        idx.write_text(text)
        with pytest.raises(SampleError) as e:
            open_corpus(root, "tfrecord").read_many([13, 14])
        assert e.value.index in (13, 14), what
        assert "damaged index" in e.value.problem or "truncated" in e.value.problem, what
    with open(idx, "wb") as f:  # 10 GB (sparse): refused from its size, never read
        f.truncate(10 << 30)
    with pytest.raises(SampleError, match="damaged index: 10,737,418,240 bytes"):
        open_corpus(root, "tfrecord").read(11)


def test_a_record_of_another_sample_is_named(corpus_copy):
    root = corpus_copy("gray8")
    a_path, a_o, a_n = _record(root, 0)
    b_path, b_o, b_n = _record(root, 1)
    assert a_n == b_n
    pwrite(b_path, b_o, a_path.read_bytes()[a_o:a_o + a_n])  # record 1 now holds sample 0
    with pytest.raises(SampleError, match="image/index 0") as e:  # the full parse checks image/index
        open_corpus(root, "tfrecord", verify=True).read(1)
    assert e.value.index == 1
    assert [m.index for m in verify(root, ["tfrecord"], progress=False)[1]] == [1]


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field: its tag, the payload's length (varints), the payload."""
    def varint(v: int) -> bytes:
        out = bytearray()
        while True:
            out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
            v >>= 7
            if not v:
                return bytes(out)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def test_records_written_another_way_are_parsed_in_full(corpus_copy):
    """A valid record whose Example has its features in another order (as TensorFlow may write
    them) misses the cached-prefix path and is parsed: read bit-exact all the same."""
    from tfrecord import example_pb2

    from generator.layouts.tfrecord import mask

    root = corpus_copy("gray8")
    _, labels, payloads = reference(root)
    path, o, n = _record(root, 2)
    index, label, image = example_pb2.Feature(), example_pb2.Feature(), example_pb2.Feature()
    index.int64_list.value.append(2)
    label.int64_list.value.append(int(labels[2]))
    image.bytes_list.value.append(payloads[2])
    # the map's entries in this order, by hand: protobuf's own map serialization order is its
    # own (upb's hash order: sorted in some processes, so the test once passed nothing to check)
    entries = b"".join(_field(1, _field(1, key.encode()) + _field(2, f.SerializeToString()))
                       for key, f in (("image/index", index), ("image/class/label", label), ("image/encoded", image)))
    data = _field(1, entries)  # Example.features
    assert example_pb2.Example.FromString(data).features.feature["image/encoded"].bytes_list.value[0] == payloads[2]
    fields = decode_example(data)
    order = list(fields)
    assert len(data) == n - 16 and order != sorted(order)  # same size, another order
    pwrite(path, o + 12, data)
    pwrite(path, o + n - 4, struct.pack("<I", mask(crc32c(data))))
    for checked in (False, True):
        r = open_corpus(root, "tfrecord", verify=checked)
        assert bytes(r.read(2)) == payloads[2] and [bytes(p) for p in r.read_many([1, 2, 3])] == payloads[1:4]


def test_stored_labels_come_from_the_records(corpus):
    root = corpus("rgba8")
    assert np.array_equal(open_corpus(root, "tfrecord").stored_labels(), reference(root)[1])


class TestTFRecordShardsClosedAfterEachRead(TestTFRecord):
    """The suite again with no shard kept open beyond the read that uses it (what a corpus of more
    shards than an eighth of `ulimit -n` gets: loaders/records.py's bounded shards): every read
    path reopens its shard, and its parsed index is reused."""

    @pytest.fixture(autouse=True)
    def _no_shard_kept(self, monkeypatch):
        import loaders.records

        monkeypatch.setattr(loaders.records, "keep_open", lambda per_handle=1: 0)
