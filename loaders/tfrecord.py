"""`tfrecord` reader: TFRecord shards of tf.train.Example through their .tfindex (see
generator.layouts.tfrecord for the format and the protobuf subset).

On a sample's first read in a process its record is checked: inside the shard, the length field
agrees with the index, and the Example's bytes before the payload are exactly what our writer
puts there for this label and payload size (a comparison with a cached prefix; anything else,
say records written by TensorFlow, is parsed in full, and then image/index must be the sample's
index); the payload's position is then remembered and later reads are a slice of the map.
`verify=True` parses every record in full and checks both crc32c's of the record on every read
(and `python -m loaders verify` checks them for every record). A record cut short, the last one
included, is an error naming the shard, the record and the sample: never skipped.
"""

from __future__ import annotations

import struct

import numpy as np

from generator.layouts.tfrecord import FOOTER, HEADER, MAX_INDEX_LINE, example_parts, mask, sample_fields

from .records import Shard, ShardedReader


def library_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {"crc32c": version("crc32c")}


class TFRecordReader(ShardedReader):
    layout = "tfrecord"
    shard_ext = "tfrecord"
    index_ext = "tfindex"
    max_index_bytes = MAX_INDEX_LINE
    _prefixes: dict  # (label, size, varint length of the index) -> (our Example's prefix, record length)

    def _init_process_state(self) -> None:
        super()._init_process_state()
        self._prefixes = {}

    def where(self, index: int) -> str:
        k = index // self.per_shard
        return f"{self.shard_path(k)} record {index - k * self.per_shard}"

    def _parse_index(self, raw, first, count, size, ipath, i):
        def bad(problem):
            self.fail_at(i, f"damaged index: {problem}", str(ipath))

        tokens = raw.split()
        if len(tokens) != 2 * count:
            bad(f"{len(tokens) // 2} records listed where the shard holds {count}")
        try:
            values = [int(t) for t in tokens]
        except ValueError:
            bad("not lines of two integers (offset, length)")
        entries = list(zip(values[0::2], values[1::2]))
        at = 0
        for j, (o, n) in enumerate(entries):  # back to back, from byte 0
            if o != at or n < HEADER + FOOTER:
                bad(f"record {j} at {o} of {n} bytes, where the records before it end at {at}")
            at = o + n
        return entries

    def _record(self, shard: Shard, j: int, i: int):
        """((payload start, stop), label, index) of record j, after its structural checks."""
        o, n = shard.extra[j]
        if o + n > shard.size:
            self.fail_at(i, f"truncated: the shard ends at byte {shard.size:,}, before the record's end at {o + n:,}")
        view = shard.view
        (length,) = struct.unpack_from("<Q", view, o)
        if length != n - HEADER - FOOTER:
            self.fail_at(i, f"damaged: the record's length field says {length:,} bytes, the index "
                            f"{n - HEADER - FOOTER:,}")
        try:
            return sample_fields(view, o + HEADER, o + n - FOOTER)
        except LookupError as exc:
            self.fail_at(i, f"missing: {exc}")
        except ValueError as exc:
            self.fail_at(i, f"damaged record: {exc}")

    def _locate(self, shard: Shard, j: int, i: int) -> int:
        if not self.verify:
            o, n = shard.extra[j]
            prefix, total = self._prefix(i)
            if n == total and o + n <= shard.size:
                head = self._head(shard, o, HEADER + len(prefix))
                if head[HEADER:] == prefix and struct.unpack_from("<Q", head, 0)[0] == n - HEADER - FOOTER:
                    return o + HEADER + len(prefix)
        (a, b), label, index = self._record(shard, j, i)
        if index != i:
            self.fail_at(i, f"damaged: the record holds image/index {index}")
        if label != self._label_arr[i]:
            self.fail_at(i, f"damaged: the record's label is {label}, the manifest's {self._label_arr[i]}")
        if b - a != self._sizes[i]:
            self.fail_size(i, b - a)
        return a

    def _indexed(self, shard: Shard, j: int, i: int) -> int | None:
        """The payload's offset in a record our writer made: the record's offset from the index,
        the record header, then the Example's bytes before the payload (generator.layouts.tfrecord
        example_parts, fixed by label, size and index) when the index's record length is that
        Example's; else None (a foreign record: it is parsed)."""
        o, n = shard.extra[j]
        prefix, total = self._prefix(i)
        return o + HEADER + len(prefix) if n == total and o + n <= shard.size else None

    def _prefix(self, i: int) -> tuple[bytes, int]:
        """(our Example's bytes before sample i's payload, its whole record's length)."""
        size, label = self._sizes[i], int(self._label_arr[i])
        key = (label, size, (i.bit_length() + 6) // 7 or 1)  # the prefix depends on index's varint length
        known = self._prefixes.get(key)
        if known is None:
            prefix, suffix = example_parts(size, label, i)
            known = self._prefixes[key] = (prefix, len(prefix) + size + len(suffix) + HEADER + FOOTER)
        return known

    def _verify_container(self, shard: Shard, j: int, i: int) -> None:
        from generator.layouts.tfrecord import crc32c

        o, n = shard.extra[j]
        if o + n > shard.size:
            self._record(shard, j, i)  # names the truncation
        view = shard.view
        length_crc, = struct.unpack_from("<I", view, o + 8)
        data_crc, = struct.unpack_from("<I", view, o + n - FOOTER)
        got = mask(crc32c(view[o:o + 8]))
        if got != length_crc:
            self.fail_at(i, f"corrupt: the length's crc32c is {got:08x} (masked), the record says {length_crc:08x}")
        got = mask(crc32c(view[o + HEADER:o + n - FOOTER]))
        if got != data_crc:
            self.fail_at(i, f"corrupt: the record's crc32c is {got:08x} (masked), the record says {data_crc:08x}")

    def stored_labels(self) -> np.ndarray:
        self._ensure_open(0)
        out = np.empty(self.spec.count, np.int64)
        for k in range(self.nshards):
            with self._held():
                first = k * self.per_shard
                shard = self._shard(k, first)
                for j in range(len(shard.extra)):
                    out[first + j] = self._record(shard, j, first + j)[1]
        return out
