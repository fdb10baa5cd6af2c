"""Limits of the process: open files (`ulimit -n`) and memory (`ulimit -v`).

Every command raises its soft limit of open files to the hard limit first; readers and writers keep
no more handles than an eighth of it (class directories, shards: least recently used closed first),
so a corpus of any number of classes or shards is generated, read and verified under any limit. A
limit that runs out anyway is one line naming it, never blamed on the corpus. Each case runs in a
child process whose limits are set before it starts (preexec_fn): hard, so nothing can raise them.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import need_layout

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 64  # open files: far fewer than the classes and shards below


def _limited(n: int = LIMIT, soft: int | None = None):
    def set_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft or n, n))

    return set_limit


def _run(args, limit=_limited(), **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
                          preexec_fn=limit, **kw)


def _layouts(*names):
    from generator.layouts import get_layout

    return [n for n in names if get_layout(n).missing() is None]


def test_many_classes_and_shards_generate_and_verify_under_a_low_open_files_limit(tmp_path):
    """300 class directories, 80 tar/tfrecord shards (160 descriptors mapped), under 64 open files."""
    layouts = _layouts("files", "tar", "tfrecord", "zarr")
    out = tmp_path / "c"
    gen = _run(["-m", "generator", "--shape", "2x2x1", "--count", "400", "--classes", "300", "--shard-mb", "0.001",
                "--layouts", ",".join(layouts), "--out", str(out), "--workers", "2"])
    assert gen.returncode == 0, gen.stderr
    assert len(list((out / "files").iterdir())) == 300
    shards = list((out / "tar").glob("*.tar")) if "tar" in layouts else []
    assert "tar" not in layouts or len(shards) > 2 * LIMIT // 2
    ver = _run(["-m", "loaders", "verify", str(out)])
    assert ver.returncode == 0, ver.stdout + ver.stderr
    for name in layouts:
        assert f"{name}: all 400 samples match" in ver.stdout + ver.stderr


def test_readers_keep_their_handles_within_the_limit_threads_included(tmp_path):
    """Random-order batches through the Loader's threads: every shard and class directory in turn,
    never more open than the limit allows, the images those of the corpus."""
    from generator.build import generate
    from generator.spec import Spec

    layouts = _layouts("files", "tar", "tfrecord")
    spec = Spec(height=3, width=2, channels=1, count=300, num_classes=200, seed=3)
    generate(tmp_path, spec, layouts=layouts, workers=1, progress=False, settings={"shard_samples": 3})
    script = f"""
import numpy as np, os, sys
from loaders import Loader, open_corpus
from tests.conformance import reference
pixels = np.stack(reference({str(tmp_path)!r})[0])
for name in {layouts!r}:
    r = open_corpus({str(tmp_path)!r}, name, verify=True)
    loader = Loader(r, batch_size=32, workers=4, worker_kind="thread", shuffle="shuffle", seed=1)
    for epoch in range(2):
        for batch in loader.epoch(epoch):
            images, idx = batch.images, batch.indices
            assert np.array_equal(images, pixels[idx]), name
    perm = np.random.default_rng(0).permutation(300)
    assert np.array_equal(r.read_batch(perm)[0], pixels[perm]), name
    held = len(os.listdir("/proc/self/fd"))
    assert held <= {LIMIT // 2}, (name, held)  # an eighth of the limit cached, and the process's own
    loader.close()
    r.close()
print("ok")
"""
    done = _run(["-c", script])
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


def test_every_command_raises_its_soft_limit_to_the_hard_limit():
    script = ("import resource, sys\nfrom generator.cli import run_main\n"
              "sys.exit(run_main('x', lambda argv: print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])))")
    done = _run(["-c", script], limit=_limited(4096, soft=LIMIT))
    assert done.returncode == 0 and done.stdout.strip() == "4096", done.stderr


@pytest.mark.parametrize("layout", ["files", "tar"])
def test_an_exhausted_limit_is_one_line_naming_ulimit_not_the_corpus(corpus, layout):
    """Descriptors used up by the program itself: verify says `ulimit -n` in one line, exit 1, and
    lists no sample as damaged."""
    need_layout(layout)
    root = corpus("gray8")
    script = f"""
import os, runpy, sys
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
os.close(held.pop())  # one left: the manifest can be read, little more
sys.argv = ["python -m loaders", "verify", {str(root)!r}, "--layouts", {layout!r}]
runpy.run_module("loaders", run_name="__main__")
"""
    done = _run(["-c", script])
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stdout + done.stderr
    assert len(lines) == 1 and "ulimit -n" in lines[0] and "EMFILE" in lines[0], done.stderr
    assert "regenerate" not in done.stderr and "MISMATCH" not in done.stdout


def test_out_of_memory_is_named_not_an_input_output_error():
    from generator.errors import ResourceError, os_reason

    with pytest.raises(ResourceError, match=r"out of memory \(ENOMEM\) at x: .*the corpus is not at fault"):
        os_reason(OSError(12, "Cannot allocate memory", "x"))
    with pytest.raises(ResourceError, match="too many open files .*ulimit -n"):
        os_reason(OSError(24, "Too many open files", "x"))
    assert os_reason(OSError(5, "Input/output error")) == "Input/output error"


def test_the_handle_cache_never_closes_a_handle_in_use():
    from loaders.handles import HandleLRU

    closed = []
    cache = HandleLRU(2, lambda k: f"h{k}", closed.append)
    held = [cache.acquire(k) for k in range(4)]  # all in use: over the limit for now
    assert held == ["h0", "h1", "h2", "h3"] and closed == []
    for k in range(4):
        cache.release(k)
    assert closed == ["h0", "h1"] and len(cache) == 2
    assert cache.acquire(3) == "h3" and closed == ["h0", "h1"]
    cache.release(3)
    cache.acquire(5)
    assert closed == ["h0", "h1", "h2"]
    cache.close()
    assert sorted(closed) == ["h0", "h1", "h2", "h3", "h5"]
