"""Cold is cold on a loop-mounted image (the image file's pages serve its reads), and a cold epoch
whose device read far less than its payload is marked not cold."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.probe import probes
from bench.probe.regimes import COLD_MAX, cold_advice, set_cache
from bench.results.result import EpochRecord, RankRecord, RunConfig
from bench.run.config import BenchConfig
from bench.run.regime import Cold, not_read_from_the_device
from bench.run.runner import run_bench
from generator.build import generate
from generator.spec import Spec


def record(payload: int, sectors, hosts=("a",)) -> EpochRecord:
    ranks = tuple(RankRecord(i, h, 1.0, 1, payload // len(hosts)) for i, h in enumerate(hosts)) if len(hosts) > 1 else ()
    return EpochRecord(repeat=0, epoch=0, first=True, timing=False, samples=10, payload_bytes=payload, wall_s=1.0,
                       ttfb_s=0.1, batch_ns=(1,), sample_ns=(), cpu_s=0.1, rchar=payload, read_bytes=payload, syscr=10,
                       device_sectors_read=sectors, residency_before=0.0, residency_after=None, cache_ok=True,
                       indices_ok=True, ranks=ranks)


def test_a_cold_epoch_the_device_did_not_read_is_not_cold():
    cold = Cold(storage=None)
    payload = 8 << 20
    assert cold.finish(record(payload, payload // 512)).cache_ok  # the device read the payload
    assert not cold.finish(record(payload, payload // 512 // 10)).cache_ok  # a tenth of it: served from a cache
    assert cold.finish(record(payload, None)).cache_ok  # no device count (tmpfs, overlay): not checked
    assert cold.finish(record(1000, 0)).cache_ok  # too small to tell from metadata and readahead
    assert not not_read_from_the_device(record(payload, 0, hosts=("a", "b")), 0.5, 1)  # one host's device only


@pytest.fixture
def loop_mount(tmp_path):
    """An ext2 image mounted with -o loop (root, mkfs.ext2 and loop devices needed)."""
    if os.geteuid() != 0 or not shutil.which("mkfs.ext2") or not Path("/dev/loop-control").exists():
        pytest.skip("mounting a loop image needs root, mkfs.ext2 and /dev/loop-control")
    image, mnt = tmp_path / "img.ext2", tmp_path / "mnt"
    with open(image, "wb") as f:
        f.truncate(96 << 20)
    mnt.mkdir()
    subprocess.run(["mkfs.ext2", "-q", "-F", str(image)], check=True)
    if subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True).returncode:
        pytest.skip("mount -o loop is not allowed here")
    try:
        yield image, mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_on_a_loop_image_cold_evicts_the_image_too(loop_mount):
    image, mnt = loop_mount
    generate(mnt / "c", Spec(height=64, width=64, channels=3, count=64, seed=1), ["files"], workers=1,
             progress=False)
    assert probes.loop_backing(mnt / "c") == image and probes.loop_backing(image.parent) is None
    files = probes.expand([mnt / "c" / "files"])
    probes.warm([image])  # the image's pages cached: the loop device's reads would come from them
    assert probes.residency([image]).fraction > 0.9
    state = set_cache("cold", files, "fadvise")
    assert state.ok and probes.residency([image]).fraction <= COLD_MAX  # evicted with the corpus's files
    assert "loop-mounted image" in cold_advice(mnt / "c") and cold_advice(image.parent) is None


def test_an_image_that_cannot_be_evicted_makes_cold_runs_not_ok_and_says_why(loop_mount, tmp_path, monkeypatch):
    """As a user who cannot open the image file (here: the loop device named as backed by a file
    that is gone), cold cannot be made: every cold epoch is marked, and a note says what to do."""
    image, mnt = loop_mount
    generate(mnt / "c", Spec(height=64, width=64, channels=3, count=64, seed=1), ["files"], workers=1,
             progress=False)
    gone = tmp_path / "no-such-image.ext2"
    monkeypatch.setattr(probes, "loop_backing", lambda path: gone)
    cfg = BenchConfig(corpus=mnt / "c", output=tmp_path / "r.json", layouts=("files",), caches=("cold",), naive=False,
                      evict="fadvise", run=RunConfig(epochs=1, batch_size=16, sample_latency=False))
    res = run_bench(cfg)
    assert all(not e.cache_ok for r in res.runs for e in r.epochs)
    assert any("loop-mounted image" in n and str(gone) in n and "--evict drop_caches" in n for n in res.notes)
