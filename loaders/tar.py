"""`tar` reader: WebDataset tar shards through their offset index (see generator.layouts.tar).

On a sample's first read in a process its member header is checked (name `<key>.<ext>`, the
extension the manifest's format version gives it, in an ingested corpus of mixed formats the
sample's own format's, from the manifest's samples.format: generator.layouts.tar.member_ext; the size
field, the ustar magic; with verify=True also the header checksum and the `.cls` member,
on every read); then the payload is a slice of the shard's map. Labels are the
manifest's; stored_labels() reads the `.cls` members. Standard library only.
"""

from __future__ import annotations

import numpy as np

from generator.layouts.tar import BLOCK, INDEX_ENTRY, INDEX_HEADER, INDEX_MAGIC, key_of, member_ext

from .records import Shard, ShardedReader


def _octal(field: bytes) -> int | None:
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else None
    except ValueError:
        return None


def header_checksum_ok(head: bytes) -> bool:
    stored = _octal(head[148:156])
    return stored is not None and stored == sum(head[:148]) + 256 + sum(head[156:])



def parse_index(raw: bytes, first: int, count: int) -> list | str:
    """The entries (payload offset, size, .cls offset, size) of a shard's index file listing
    samples first.. (count), or what is wrong with it (the local and the S3 reader both read it)."""
    if len(raw) != INDEX_HEADER + count * INDEX_ENTRY or raw[:8] != INDEX_MAGIC:
        return (f"{len(raw)} bytes where {count} entries take {INDEX_HEADER + count * INDEX_ENTRY}"
                if raw[:8] == INDEX_MAGIC else "not a layoutbench tar index (bad magic)")
    got_first, got_count = np.frombuffer(raw, "<u8", 2, 8).tolist()
    if (got_first, got_count) != (first, count):
        return f"it lists samples {got_first}.. ({got_count}) where the shard holds {first}.. ({count})"
    entries = np.frombuffer(raw, "<u8", count * 4, INDEX_HEADER).reshape(count, 4).astype(np.int64)
    if (entries < 0).any():  # a u64 above 2^63
        return "an offset or size beyond 2^63"
    return entries.tolist()


def member_problem(head, member: str, at: int, size: int, verify: bool) -> str | None:
    """What is wrong with the 512-byte tar header `head` found at byte `at` for the member named
    `member` of `size` payload bytes (None: nothing): its name, ustar magic, size and (`verify`)
    checksum."""
    name = f"{member}\0".encode()
    if head[:len(name)] != name:
        got = bytes(head[:100]).split(b"\0", 1)[0]
        return (f"missing: no member {member} at byte {at:,} of the shard "
                f"(found {got[:40].decode(errors='replace')!r})")
    if head[257:263] != b"ustar\0":
        return "damaged: the member's header is not a ustar header"
    got_size = _octal(bytes(head[124:136]))
    if got_size is None or (verify and not header_checksum_ok(bytes(head))):
        return "damaged: the member's tar header fails its checksum"
    if got_size != size:
        return f"damaged: the tar header says {got_size} bytes, the index {size}"
    return None

class TarReader(ShardedReader):
    layout = "tar"
    shard_ext = "tar"
    index_ext = "idx"
    max_index_bytes = INDEX_ENTRY

    def expected_names(self) -> set[str]:
        return super().expected_names() | {"shards.json"}

    def __init__(self, root, manifest, *, verify: bool = False):
        super().__init__(root, manifest, verify=verify)
        # one extension for every member, or (an ingested corpus of mixed formats, version 4 on) each
        # sample's own format's, as the manifest lists it
        self._ext = None if manifest.formats is not None else member_ext(self.spec, manifest.version)

    def member(self, index: int) -> str:
        """Sample `index`'s payload member name."""
        ext = self._ext or member_ext(self.spec, self.manifest.version, self.manifest.formats[index])
        return f"{key_of(self.spec, index)}.{ext}"

    def where(self, index: int) -> str:
        return f"{self.shard_path(index // self.per_shard)} member {self.member(index)}"

    def _parse_index(self, raw, first, count, size, ipath, i):
        entries = parse_index(raw, first, count)
        if isinstance(entries, str):
            self.fail_at(i, f"damaged index: {entries}", str(ipath))
        return entries

    def _locate(self, shard: Shard, j: int, i: int) -> int:
        a, n, _, _ = shard.extra[j]
        if a < BLOCK or a % BLOCK:
            self.fail_at(i, f"damaged index: payload offset {a} is not just after a tar header")
        if a > shard.size:
            self.fail_at(i, f"truncated: the shard ends at byte {shard.size:,}, before the member at {a:,}")
        problem = member_problem(self._head(shard, a - BLOCK, BLOCK), self.member(i), a - BLOCK, n, self.verify)
        if problem is not None:
            self.fail_at(i, problem)
        if n != self._sizes[i]:
            self.fail_size(i, n)
        if a + n > shard.size:
            self.fail_at(i, f"truncated: the shard ends at byte {shard.size:,}, before the member's end at {a + n:,}")
        return a

    def _indexed(self, shard: Shard, j: int, i: int) -> int | None:
        """The index's payload offset, when it is one a member's data can have (just after a
        header block, inside the shard, of the manifest's size)."""
        a, n, _, _ = shard.extra[j]
        ok = a >= BLOCK and not a % BLOCK and a + n <= shard.size and n == self._sizes[i]
        return a if ok else None

    def _verify_container(self, shard: Shard, j: int, i: int) -> None:
        self._locate(shard, j, i)  # the header's checksum is checked there, every time when verifying
        _, _, c, m = shard.extra[j]
        if not (0 < m <= 6 and c + m <= shard.size):
            self.fail_at(i, f"damaged index: label member of {m} bytes at {c}")
        if bytes(shard.view[c:c + m]) != str(self.label(i)).encode():
            self.fail_at(i, f"damaged: the .cls member holds {bytes(shard.view[c:c + m])[:8]!r}, the manifest's label "
                            f"is {self.label(i)}")

    def stored_labels(self) -> np.ndarray:
        self._ensure_open(0)
        out = np.empty(self.spec.count, np.int64)
        for k in range(self.nshards):
            with self._held():
                first = k * self.per_shard
                shard = self._shard(k, first)
                for j, (_, _, c, m) in enumerate(shard.extra):
                    raw = bytes(shard.view[c:c + m]) if 0 < m <= 6 and c + m <= shard.size else b""
                    if not raw.isdigit():
                        self.fail_at(first + j, f"damaged: the .cls member holds {raw[:8]!r}, not a decimal label")
                    out[first + j] = int(raw)
        return out
