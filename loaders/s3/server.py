"""Where the bytes behind a GET are when the store is the bundled server on this host (SeaweedFS's
weed, generator.objectstore.server): its data directory's files, found from the endpoint."""

from __future__ import annotations

import os
import re
from pathlib import Path

KEEP_OUT = ("weed.log", "s3-identity.json")  # the server's log and identity: not data


def bundled_data_dir(endpoint: str | None) -> Path | None:
    """The data directory of the bundled server (weed) serving `endpoint` on this host, from the
    process serving its S3 port and confirmed by its server record; None when none does (a
    remote store, or a server this tool did not start)."""
    from generator.objectstore.server import records

    m = re.match(r"^https?://(127\.0\.0\.1|localhost|\[::1\]):(\d+)$", endpoint or "")
    if not m:
        return None
    port = m[2]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or os.path.basename(argv[0]) != b"weed" or f"-s3.port={port}".encode() not in argv:
            continue
        for arg in argv:
            if arg.startswith(b"-dir="):
                d = Path(os.fsdecode(arg[5:]))
                if any(rec.get("endpoint") == f"http://127.0.0.1:{port}" for _, rec in records(d)):
                    return d
    return None


def server_files(data_dir: Path) -> list[Path]:
    """The server's data files (volumes, their indexes, the filer's metadata): what a GET reads."""
    from generator.objectstore.server import RECORD_PREFIX

    out = []
    for root, dirs, names in os.walk(data_dir):
        dirs[:] = sorted(d for d in dirs if d != "tmp" and not d.startswith("."))
        for n in sorted(names):
            p = Path(root) / n
            if n.startswith((".", RECORD_PREFIX)) or n in KEEP_OUT or p.is_symlink() or not p.is_file():
                continue
            out.append(p)
    return out
