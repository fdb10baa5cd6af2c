"""`tar`: POSIX (ustar) tar shards as WebDataset writes them, tar/shard-000000.tar, ...

Each sample is two members, in this order (ShardWriter's: extensions sorted): `<key>.cls`, the
label as ASCII decimal, and `<key>.<ext>`, the payload, named by its format as the files layout
names files (jpg, png, webp, tif, raw; in an ingested corpus of mixed formats each payload's own,
as its manifest lists it, samples.format), so that webdataset's
`.decode("rgb8").to_tuple("jpg;png", "cls")` finds it;
key = the sample index zero-padded to the width of the largest one, so members sort in index
order. The headers are exactly what tarfile (and so webdataset's TarWriter with mtime=0)
writes: ustar, mode 0444, uid/gid 0, user and group "bigdata", mtime 0 (fixed: the same command
gives the same bytes); each shard ends with tarfile's two zero blocks, padded to its
10,240-byte record. Any tar tool lists them (`tar -tvf`), and webdataset reads them as they are.

Corpora of format versions 1-3 named every payload `<key>.tif` (`<key>.raw` for raw): the names
are the manifest's version's (member_ext). A tar layout added to a version-2 or -3 corpus is
written with that version's names, the ones its manifest promises readers, so a corpus never
mixes the two; regenerate the corpus for the new names.

Beside each shard, `shard-000000.idx` (ours, binary, little-endian) lets a reader go straight to
a member: magic b"LBTARIX1", u64 first sample index, u64 sample count, then per sample four u64
(payload data offset, payload size, label data offset, label size). `shards.json` is the wids
shard list (`"__kind__": "wids-shard-index-v1"`: url, nsamples and filesize per shard).

Headers are built for a whole shard at once with numpy rather than one TarInfo.tobuf call per
member (bench/speed/tar_write.py measures the writer against tarfile.addfile and webdataset's
ShardWriter; docs/lab/2026-12-01-record-shards.md has the figures); tests check them byte for byte against tarfile's and
webdataset's own output.
"""

from __future__ import annotations

import json
import tarfile

import numpy as np

from ..codecs import codec_id, codec_info
from ..manifest import VERSION, records_formats
from .files import corpus_version, index_width, source_format
from .records import ShardedWriter, shard_name, shard_ranges

BLOCK = 512
RECORD = 20 * BLOCK  # tarfile.RECORDSIZE: an archive's length is a multiple of this
INDEX_MAGIC = b"LBTARIX1"
INDEX_HEADER = 24  # magic, first index, count
INDEX_ENTRY = 32  # four u64 per sample
USER = GROUP = "bigdata"  # webdataset's TarWriter defaults
MODE = 0o444
NAMED_BY_FORMAT = 4  # the corpus format version from which payload members take their format's extension


def member_ext(spec, version: int = VERSION, fmt: str | None = None) -> str:
    """The extension of a payload member in a corpus of format `version`: from version 4 the
    payload format's (CodecInfo.extension); in an ingested corpus of mixed formats that of the
    sample's own format `fmt` (tiff, png, jpeg, webp: Manifest.formats[i], or source_format while
    writing). Versions 1-3: "tif" for every payload, "raw" for raw ones."""
    if version < NAMED_BY_FORMAT:
        return "raw" if spec.payload == "raw" else "tif"
    if records_formats(spec, version):
        if fmt is None:
            raise ValueError("a member of an ingested corpus of mixed formats is named by its format: give fmt")
        return codec_info(fmt).extension
    return codec_info(codec_id(spec.payload, spec.compression)).extension


def key_of(spec, index: int) -> str:
    return f"{index:0{index_width(spec)}d}"


def _template() -> np.ndarray:
    info = tarfile.TarInfo("")
    info.mtime, info.mode, info.uname, info.gname = 0, MODE, USER, GROUP
    head = np.frombuffer(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape"), np.uint8).copy()
    head[148:156] = ord(" ")  # the checksum field counts as spaces while the checksum is summed
    return head


_TEMPLATE = _template()
_OCTAL = 3 * np.arange(10, -1, -1, dtype=np.int64)


def headers(names: list[bytes], sizes) -> np.ndarray:
    """ustar headers (n, 512) for regular files `names` (each < 100 bytes) of `sizes` bytes:
    tarfile's TarInfo.tobuf(USTAR_FORMAT) with our template fields, for many at once."""
    n = len(names)
    h = np.tile(_TEMPLATE, (n, 1))
    if not n:
        return h
    width = max(map(len, names))  # the name field is NUL-padded, as the template's empty name is
    h[:, :width] = np.frombuffer(b"".join(name.ljust(width, b"\0") for name in names), np.uint8).reshape(n, width)
    sizes = np.asarray(sizes, np.int64)
    h[:, 124:135] = ((sizes[:, None] >> _OCTAL) & 7) + ord("0")  # 11 octal digits, then NUL
    h[:, 135] = 0
    chk = h.sum(axis=1, dtype=np.int64)
    h[:, 148:154] = ((chk[:, None] >> (3 * np.arange(5, -1, -1))) & 7) + ord("0")  # "%06o\0", then a space
    h[:, 154] = 0
    h[:, 155] = ord(" ")
    return h


def padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


class TarWriter(ShardedWriter):
    name = "tar"
    target = "tar"
    shard_ext = "tar"
    index_ext = "idx"
    version = VERSION  # the corpus's format version, which names the members (begin() reads it)

    def begin(self) -> int:
        self.version = corpus_version(self.root)  # a layout added to a corpus takes its format version
        return super().begin()

    def plan(self) -> dict:
        return {**super().plan(), "version": self.version}  # shards of other member names are not kept

    def encode_shard(self, indices, payloads, labels):
        spec = self.spec
        keys = [key_of(spec, i).encode() for i in indices]
        cls = [str(int(label)).encode() for label in labels]
        sizes = [len(p) for p in payloads]
        cls_heads = headers([k + b".cls" for k in keys], [len(c) for c in cls])
        by_format = records_formats(spec, self.version)  # each its own format's extension, as the manifest lists
        exts = [member_ext(spec, self.version, source_format(spec, i) if by_format else None) for i in indices]
        pay_heads = headers([k + b"." + e.encode() for k, e in zip(keys, exts)], sizes)
        buffers, entries, at = [], np.empty((len(keys), 4), "<u8"), 0
        for j, (c, p, n) in enumerate(zip(cls, payloads, sizes)):
            cls_at = at + BLOCK
            pay_at = cls_at + len(c) + len(padding(len(c))) + BLOCK
            buffers += [cls_heads[j], c, padding(len(c)), pay_heads[j], p, padding(n)]
            entries[j] = (pay_at, n, cls_at, len(c))
            at = pay_at + n + len(padding(n))
        end = at + 2 * BLOCK
        buffers.append(bytes(2 * BLOCK + (-end % RECORD)))
        index = INDEX_MAGIC + np.array([indices.start, len(indices)], "<u8").tobytes() + entries.tobytes()
        return buffers, index

    def finish_files(self, partial) -> None:
        shards = []
        for k, r in enumerate(shard_ranges(self.spec.count, self.per_shard)):
            name = shard_name(k, self.shard_ext)
            shards.append({"url": name, "nsamples": len(r), "filesize": (partial / name).stat().st_size})
        tmp = partial / "shards.json.tmp"
        tmp.write_text(json.dumps({"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": "layoutbench",
                                   "shardlist": shards}, indent=1) + "\n")
        tmp.replace(partial / "shards.json")

    @classmethod
    def estimate_bytes(cls, spec, codec) -> int:
        """Members, padding and index per sample, plus per shard (at the default settings) the
        end blocks, record padding and two files' block slack."""
        from . import payload_estimate
        from .records import samples_per_shard

        per_sample = 4 * BLOCK + payload_estimate(spec, codec) + INDEX_ENTRY
        shards = -(-spec.count // samples_per_shard(spec, codec))
        return spec.count * per_sample + shards * (RECORD + 2 * BLOCK + INDEX_HEADER + 2 * 4096) + 4096
