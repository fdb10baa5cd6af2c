"""`litdata`: LitData's optimized chunks, litdata/, written by litdata's own BinaryWriter (what
`litdata.optimize` runs in each of its workers).

Each sample is the pytree `(payload, label)`: a tuple, so BinaryWriter stores it in its classic
item format (data_format ["bytes", "int"], PyTreeLoader; a dict of bytes and int would go into an
Arrow IPC footer instead). On disk:

    litdata/chunk-0-K.bin   u32 item count N, u32 offsets[N+1] (from the file's start), then the items;
                            item = u32 payload size, u32 8 (the label's size), payload, label (i64)
    litdata/index.json      LitData's index: config (data_format, chunk_bytes...) and per chunk its
                            filename, item count and bytes
    litdata/spec.json       the spec as JSON (ours: LitData ignores it)

Chunks of at most CHUNK_BYTES (64 MiB, what LitData's docs pass to optimize as chunk_bytes="64MB";
a sample larger than that gets a chunk of its own), filled in index order by one writer, so chunk
k holds a contiguous run of samples and the same spec gives the same chunks whatever the
generator's workers. The item counts per chunk go into the manifest (facts: chunk_sizes), where
readers take them. index.json carries the time it was written, so `snapshot` compares it without
that field.

Atomic: written under litdata.partial/, every file fsynced, renamed to litdata/. BinaryWriter
keeps chunks in memory until they are full, so a kill restarts this layout from its first sample.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from . import LayoutWriter, payload_estimate
from .arrow import fsync_path

TARGET = "litdata"
CHUNK_BYTES = 64 << 20
ITEM_HEADER = 8  # two u32 sizes: the payload's and the label's
LABEL_BYTES = 8  # LitData's int serializer: little-endian int64
INDEX = "index.json"
SPEC = "spec.json"
STAMP = "updated_at"  # index.json's field that changes with every write


def chunk_name(k: int) -> str:
    """The file name BinaryWriter gives chunk k of a single (rank 0) writer."""
    return f"chunk-0-{k}.bin"


class LitDataWriter(LayoutWriter):
    name = "litdata"
    target = TARGET

    @property
    def partial(self) -> Path:
        return self.root / f"{TARGET}.partial"

    def paths(self):
        return [self.root / self.target, self.partial]

    def begin(self) -> int:
        from litdata.streaming.writer import BinaryWriter

        shutil.rmtree(self.partial, ignore_errors=True)  # what a killed run left: restart from 0
        self.partial.mkdir()
        self.writer = BinaryWriter(os.fsdecode(self.partial), chunk_bytes=CHUNK_BYTES)
        return 0

    def put_many(self, indices, payloads, labels) -> None:
        w = self.writer
        for i, payload, label in zip(indices, payloads, labels):
            w[i] = (bytes(payload), int(label))

    def end(self, labels) -> None:
        self.writer.done()
        self.writer.merge()
        with open(self.partial / INDEX) as f:
            chunks = json.load(f)["chunks"]
        self.chunk_sizes = [int(c["chunk_size"]) for c in chunks]
        (self.partial / SPEC).write_text(json.dumps(self.spec.to_dict()))
        for p in sorted(self.partial.iterdir()):
            fsync_path(p)
        fsync_path(self.partial)
        final = self.root / self.target
        if final.exists():
            shutil.rmtree(final)
        os.replace(self.partial, final)
        fsync_path(self.root)

    def facts(self) -> dict:
        """Manifest facts: how the samples are cut into chunks (readers take chunk_sizes from here)."""
        return {"chunk_bytes": CHUNK_BYTES, "chunk_sizes": list(self.chunk_sizes)}

    @classmethod
    def snapshot(cls, root) -> dict[str, bytes]:
        """Every file's bytes, index.json's without the time it was written."""
        out = super().snapshot(root)
        key = f"{TARGET}/{INDEX}"
        if key in out:
            index = json.loads(out[key])
            index.pop(STAMP, None)
            out[key] = json.dumps(index, sort_keys=True).encode()
        return out

    @classmethod
    def estimate_bytes(cls, spec, codec) -> int:
        per_sample = payload_estimate(spec, codec) + ITEM_HEADER + LABEL_BYTES + 4
        chunks = -(-spec.count * per_sample // CHUNK_BYTES) + 1
        return spec.count * per_sample + chunks * (4096 + 8) + (64 << 10)
