"""`tfrecord`: TFRecord shards of tf.train.Example, tfrecord/shard-000000.tfrecord, ...

A TFRecord file is records back to back, each:
    u64 length (little endian) | u32 masked crc32c of those 8 bytes | data | u32 masked crc32c of data
with masked(crc) = ((crc >> 15 | crc << 17) + 0xa282ead8) mod 2^32. Each record's data is a
serialized tf.train.Example with three features, as TensorFlow's ImageNet conversion names them:
`image/class/label` (int64), `image/encoded` (bytes: the payload) and `image/index` (int64: the
sample index). One record per sample, in index order. Beside each shard, `shard-000000.tfindex`
is the `tfrecord` package's index (what its tfrecord2idx writes): one text line
"<record offset> <record length>" per record.

The protobuf code here covers exactly this message shape, no more (no protobuf dependency):

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }   // entries: key = 1 (string), value = 2
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }   Int64List { repeated int64 value = 1 [packed]; }

The encoder writes the map entries sorted by key and int64 lists packed (as protobuf's
deterministic serialization does). The decoder accepts any entry order, packed or unpacked int64
lists and unknown fields (skipped by wire type), so records written by TensorFlow read too; it
raises ValueError on anything malformed, never reading outside the buffer. crc32c comes from the
`crc32c` package (hardware CRC instructions where the CPU has them).
"""

from __future__ import annotations

import struct

from .records import ShardedWriter

KEY_LABEL, KEY_ENCODED, KEY_INDEX = b"image/class/label", b"image/encoded", b"image/index"
MASK_DELTA = 0xA282EAD8
HEADER = 12  # u64 length + u32 masked crc of it
FOOTER = 4  # u32 masked crc of the data
MAX_INDEX_LINE = 42  # "<offset> <length>\n": two integers below 2^64, a space and a newline


def crc32c(data, value: int = 0) -> int:
    import crc32c as _crc32c

    return _crc32c.crc32c(data, value)


def masked_crc(data, value: int = 0) -> int:
    return mask(crc32c(data, value))


def unmask(masked: int) -> int:
    rot = (masked - MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, body: bytes) -> bytes:
    return tag + varint(len(body)) + body


def _int64_feature(value: int) -> bytes:
    return _ld(b"\x1a", _ld(b"\x0a", varint(value)))  # int64_list { value: [value] } (packed)


def example_parts(payload_len: int, label: int, index: int) -> tuple[bytes, bytes]:
    """(prefix, suffix) of the serialized Example: prefix + payload + suffix is the record data."""
    def entry(key: bytes, feature: bytes) -> bytes:
        return _ld(b"\x0a", _ld(b"\x0a", key) + _ld(b"\x12", feature))

    label_entry = entry(KEY_LABEL, _int64_feature(label))
    index_entry = entry(KEY_INDEX, _int64_feature(index))
    # image/encoded: Feature { bytes_list (1) { value (1): payload } }, built around the payload
    inner_head = b"\x0a" + varint(payload_len)  # BytesList.value
    bytes_list_len = len(inner_head) + payload_len
    feature_head = b"\x0a" + varint(bytes_list_len) + inner_head  # Feature.bytes_list
    feature_len = bytes_list_len + len(varint(bytes_list_len)) + 1
    key_part = _ld(b"\x0a", KEY_ENCODED)
    entry_body_len = len(key_part) + 1 + len(varint(feature_len)) + feature_len
    encoded_head = b"\x0a" + varint(entry_body_len) + key_part + b"\x12" + varint(feature_len) + feature_head
    features_len = len(label_entry) + len(encoded_head) + payload_len + len(index_entry)
    prefix = b"\x0a" + varint(features_len) + label_entry + encoded_head
    return prefix, index_entry


def encode_example(payload, label: int, index: int) -> bytes:
    prefix, suffix = example_parts(len(payload), label, index)
    return prefix + bytes(payload) + suffix


def record_pieces(payload, label: int, index: int) -> list:
    """The record's bytes as three pieces (the payload itself is not copied)."""
    prefix, suffix = example_parts(len(payload), label, index)
    length = struct.pack("<Q", len(prefix) + len(payload) + len(suffix))
    crc = crc32c(suffix, crc32c(payload, crc32c(prefix)))
    return [length + struct.pack("<I", mask(crc32c(length))) + prefix, payload, suffix + struct.pack("<I", mask(crc))]


def mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


# ---------------------------------------------------------------- decoding

def _read_varint(buf, at: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= end:
            raise ValueError("a varint runs past the end of its message")
        b = buf[at]
        at += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, at
        shift += 7
        if shift >= 70:
            raise ValueError("a varint longer than 10 bytes")


def _fields(buf, at: int, end: int):
    """(field number, wire type, value or (start, stop) of a length-delimited field) of a message."""
    while at < end:
        key, at = _read_varint(buf, at, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _read_varint(buf, at, end)
            yield number, wire, value
        elif wire == 2:
            n, at = _read_varint(buf, at, end)
            if n > end - at:
                raise ValueError(f"field {number} claims {n} bytes, {end - at} are left")
            yield number, wire, (at, at + n)
            at += n
        elif wire == 1:
            at += 8
        elif wire == 5:
            at += 4
        else:
            raise ValueError(f"unsupported wire type {wire} (field {number})")
        if at > end:
            raise ValueError("a fixed-size field runs past the end of its message")


def _int64s(buf, at: int, end: int) -> list[int]:
    out = []
    for number, wire, value in _fields(buf, at, end):
        if number != 1:
            continue
        if wire == 0:
            out.append(value)
        elif wire == 2:  # packed
            a, b = value
            while a < b:
                v, a = _read_varint(buf, a, b)
                out.append(v)
    return [v - (1 << 64) if v >= 1 << 63 else v for v in out]


def decode_example(buf, at: int = 0, end: int | None = None) -> dict:
    """{key: ("bytes", [(start, stop), ...]) | ("int64", [values]) | ("float", n)} of a serialized
    Example in buf[at:end]; byte values are given as offsets into buf (no copy)."""
    end = len(buf) if end is None else end
    features = {}
    for number, wire, value in _fields(buf, at, end):
        if number != 1 or wire != 2:
            continue
        for n2, w2, entry in _fields(buf, *value):
            if n2 != 1 or w2 != 2:
                continue
            key, feature = None, None
            for n3, w3, v3 in _fields(buf, *entry):
                if w3 == 2 and n3 == 1:
                    key = bytes(buf[v3[0]:v3[1]])
                elif w3 == 2 and n3 == 2:
                    feature = v3
            if key is None:
                raise ValueError("a feature map entry without a key")
            kind, values = "empty", []
            if feature is not None:
                for n4, w4, v4 in _fields(buf, *feature):
                    if w4 != 2:
                        continue
                    if n4 == 1:
                        kind = "bytes"
                        values = [v for n5, w5, v in _fields(buf, *v4) if n5 == 1 and w5 == 2]
                    elif n4 == 3:
                        kind, values = "int64", _int64s(buf, *v4)
                    elif n4 == 2:
                        kind, values = "float", []
            features[key] = (kind, values)  # a later entry for the same key wins, as protobuf's maps do
    return features


def sample_fields(buf, at: int = 0, end: int | None = None) -> tuple[tuple[int, int], int, int]:
    """((payload start, stop), label, index) of one of our Examples; LookupError when a feature is
    missing, ValueError when the bytes are malformed or a feature is of the wrong kind."""
    f = decode_example(buf, at, end)
    out = []
    for key, kind in ((KEY_ENCODED, "bytes"), (KEY_LABEL, "int64"), (KEY_INDEX, "int64")):
        if key not in f:
            raise LookupError(f"the Example has no {key.decode()} feature")
        got_kind, values = f[key]
        if got_kind != kind or len(values) != 1:
            raise ValueError(f"{key.decode()} is {len(values)} {got_kind} value(s), not one {kind}")
        out.append(values[0])
    return out[0], out[1], out[2]


class TFRecordWriter(ShardedWriter):
    name = "tfrecord"
    target = "tfrecord"
    shard_ext = "tfrecord"
    index_ext = "tfindex"

    def encode_shard(self, indices, payloads, labels):
        buffers, lines, at = [], [], 0
        for i, p, label in zip(indices, payloads, labels):
            pieces = record_pieces(p, int(label), i)
            n = sum(map(len, pieces))
            buffers += pieces
            lines.append(f"{at} {n}\n")
            at += n
        return buffers, "".join(lines).encode()

    @classmethod
    def estimate_bytes(cls, spec, codec) -> int:
        from . import payload_estimate
        from .records import samples_per_shard

        per_sample = payload_estimate(spec, codec) + 128 + MAX_INDEX_LINE
        shards = -(-spec.count // samples_per_shard(spec, codec))
        return spec.count * per_sample + shards * 2 * 4096 + 4096
