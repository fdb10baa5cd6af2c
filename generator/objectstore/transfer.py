"""Copy a corpus to an S3 prefix (upload) and back (download): manifest.json last, resumable.

A corpus is a corpus because of its manifest, written last by the generator; here too. `upload`
first takes away a remote manifest.json that differs from the local one (so the prefix is not a
corpus while its files change), puts every other file, then the manifest: an upload interrupted
at any point is never taken for a corpus, and its rerun skips the objects already there with the
same size. `download` stages a remote corpus into a local directory the same way (each file
written under a temporary name and renamed, the manifest last): for the layouts whose libraries
need a local file (LMDB, SQLite).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import UsageError
from ..lifetime import owned_name, pid_alive
from ..manifest import MANIFEST
from .store import Store, StoreError

TMP_PREFIX = ".download-"


def corpus_files(src: Path) -> dict[str, Path]:
    """{relative name: path} of a local corpus's files, manifest.json last; hidden names (the lock,
    partials, temporaries) are left out."""
    if not (src / MANIFEST).is_file():
        raise UsageError(f"{src} is not a corpus (no {MANIFEST}): generate one there first, "
                         f"`python -m generator --out {src} ...`")
    out = {}
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(".partial"))
        for name in sorted(files):
            path = Path(root) / name
            if name.startswith(".") or path.is_symlink() or not path.is_file():
                continue
            rel = path.relative_to(src).as_posix()
            if rel != MANIFEST:
                out[rel] = path
    out[MANIFEST] = src / MANIFEST
    return out


def _bar(total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=quiet, leave=False)


def upload(src, url, workers: int = 8, quiet: bool = False, store: Store | None = None) -> tuple[int, int]:
    """Copy the corpus in `src` to `url`; returns (objects put, objects skipped as already there)."""
    src = Path(src)
    files = corpus_files(src)
    store = store or Store(url)
    store.check_bucket()
    there = store.list()
    manifest = (src / MANIFEST).read_bytes()
    if MANIFEST in there and store.get(MANIFEST) != manifest:
        store.delete(MANIFEST)  # another corpus (or another version of it): not a corpus until we finish
        del there[MANIFEST]
    todo = [(rel, p) for rel, p in files.items()
            if rel != MANIFEST and there.get(rel) != p.stat().st_size]
    skipped = len(files) - 1 - len(todo)
    with _bar(sum(p.stat().st_size for _, p in todo), f"upload {store.url}", quiet) as bar:
        def put(item):
            rel, p = item
            store.put(rel, p)
            bar.update(p.stat().st_size)

        _each(put, todo, workers)
    if there.get(MANIFEST) != len(manifest):
        store.put(MANIFEST, manifest)
        return len(todo) + 1, skipped
    return len(todo), skipped + 1


def download(url, dst, workers: int = 8, quiet: bool = False, store: Store | None = None) -> tuple[int, int]:
    """Copy the corpus at `url` into the directory `dst`; returns (objects fetched, files skipped as
    already there with the same size)."""
    store = store or Store(url)
    dst = Path(dst)
    objects = store.list()
    if not objects:
        store.check_bucket()  # a missing bucket says so; else the prefix is empty
        raise UsageError(f"{store.url}: no objects under this prefix (at {store.config.where}): check the URL, "
                         f"or upload a corpus there (`python -m generator.objectstore upload DIR {store.url}`)")
    if MANIFEST not in objects:
        raise UsageError(f"{store.url} is not a corpus: {len(objects):,} objects but no {MANIFEST} (an upload "
                         f"that did not finish? rerun it)")
    for rel in objects:
        parts = rel.split("/")
        if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"{store.url.of(rel)}: an object name that is not a safe relative path; not downloaded")
    manifest = store.get(MANIFEST, expected_size=objects[MANIFEST])
    if (dst / MANIFEST).is_file() and (dst / MANIFEST).read_bytes() != manifest:
        raise UsageError(f"{dst} holds another corpus (its {MANIFEST} differs from {store.url.of(MANIFEST)}): "
                         f"download into an empty directory")
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot make {dst}: {exc.strerror}") from None
    if (dst / MANIFEST).is_file():
        return 0, len(objects)  # the same manifest: written last, so everything before it is there
    _sweep_temporaries(dst)
    if any(not p.name.startswith(TMP_PREFIX) for p in dst.iterdir()) and not any(
            rel in objects for rel in _local_names(dst)):
        raise UsageError(f"{dst} is not empty and is not an unfinished download of {store.url}: "
                         f"download into an empty directory")
    staging = dst / owned_name(TMP_PREFIX)
    staging.mkdir(exist_ok=True)
    numbers = itertools.count()
    todo = {}
    for rel, size in objects.items():
        local = dst / rel
        if rel != MANIFEST and not (local.is_file() and local.stat().st_size == size):
            todo[rel] = size
    skipped = len(objects) - 1 - len(todo)
    with _bar(sum(todo.values()), f"download {store.url}", quiet) as bar:
        def fetch(rel):
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            data = store.get(rel, expected_size=todo[rel])
            tmp = staging / str(next(numbers))
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
            bar.update(len(data))

        try:
            _each(fetch, todo, workers)
            (staging / MANIFEST).write_bytes(manifest)
            os.replace(staging / MANIFEST, dst / MANIFEST)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return len(todo) + 1, skipped


def _each(fn, items, workers: int) -> None:
    """fn(item) for every item, `workers` at a time; the first error (or Ctrl-C, SIGTERM) cancels
    what has not started and is raised once the running ones end."""
    pool = ThreadPoolExecutor(max(1, workers))
    try:
        for _ in pool.map(fn, items):
            pass
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


def _sweep_temporaries(dst: Path) -> None:
    """Remove the staging folders of dead downloads (named after their owner, host-pid)."""
    pattern = re.compile(re.escape(TMP_PREFIX) + r"(?P<host>.+)-(?P<pid>\d+)$")
    for p in dst.glob(TMP_PREFIX + "*"):
        m = pattern.match(p.name)
        if m and m["host"] == socket.gethostname() and not pid_alive(int(m["pid"])):
            shutil.rmtree(p, ignore_errors=True)


def _local_names(dst: Path):
    for root, _, files in os.walk(dst):
        for name in files:
            rel = (Path(root) / name).relative_to(dst).as_posix()
            if not rel.startswith(TMP_PREFIX):
                yield rel
