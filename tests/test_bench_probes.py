"""bench.probe.probes and the runner's cache settings: cold is cold, warm is warm, counters are read."""

import mmap
import os

import numpy as np
import pytest

from bench.probe import floors, probes
from bench.probe.measure import NullBatch, check_indices, null_batches, time_batches
from bench.probe.regimes import set_cache
from generator.errors import LayoutbenchError


@pytest.fixture
def files(tmp_path):
    """Three files, 9 MB of random bytes (not all page-aligned)."""
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate((8 << 20, (1 << 20) + 123, 4096 * 7)):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        paths.append(p)
    os.sync()
    return paths


def test_cold_is_cold_after_eviction(files):
    floors.read_sequential(files)
    assert probes.residency(files).fraction > 0.99
    state = set_cache("cold", files, "auto")
    assert state.residency <= 0.01 and state.ok
    assert probes.residency(files).fraction <= 0.01
    assert state.method == ("drop_caches" if os.geteuid() == 0 else "fadvise")


def test_fadvise_eviction_alone_also_gets_cold(files):
    floors.read_sequential(files)
    assert probes.evict(files, "fadvise") == "fadvise"
    assert probes.residency(files).fraction <= 0.01


def test_an_open_map_keeps_its_pages_so_handles_must_be_closed(files):
    """Why the runner closes every reader before evicting: mapped pages stay resident."""
    floors.read_sequential(files[:1])
    with open(files[0], "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        m.madvise(mmap.MADV_WILLNEED)
        _ = sum(m[i] for i in range(0, len(m), 4096))  # touch (map) every page
        probes.evict(files[:1], "fadvise")
        assert probes.residency(files[:1]).fraction > 0.5
    probes.evict(files[:1], "fadvise")
    assert probes.residency(files[:1]).fraction <= 0.01


def test_warm_is_warm(files):
    set_cache("cold", files, "auto")
    state = set_cache("warm", files, "auto")
    assert state.ok and state.residency >= 0.99
    assert probes.residency(files).fraction >= 0.99


def test_residency_counts_bytes_not_pages(files, tmp_path):
    floors.read_sequential(files)
    res = probes.residency(files)
    assert res.total_bytes == sum(p.stat().st_size for p in files) and res.files == 3
    assert res.resident_bytes == res.total_bytes
    empty = tmp_path / "empty"
    empty.touch()
    assert probes.file_residency(empty) == (0, 0)
    assert probes.residency([tmp_path]).files == 4  # directories are walked


def test_process_counters_see_this_process_read(files):
    """Evicted with fadvise, so only these files' pages leave the cache. (A root drop_caches also
    drops inodes, dentries and library pages, which the next read then fetches from the device
    too: those are device bytes of this process as well, but not the files' bytes.)"""
    floors.read_sequential(files)  # run the code once: cold is for the data, not for our code pages
    assert probes.evict(files, "fadvise") == "fadvise"
    assert probes.residency(files).fraction <= 0.01
    before = probes.sample_processes([0])
    nbytes, _, _ = floors.read_sequential(files)
    after = probes.sample_processes([0])
    delta, lost = probes.counters_delta(before, after)
    assert not lost
    assert delta["rchar"] >= nbytes
    assert abs(delta["read_bytes"] - nbytes) <= 0.05 * nbytes  # read from the device, cold
    assert delta["syscr"] >= len(files)


def test_process_counters_after_a_full_drop_count_at_least_the_files(files):
    floors.read_sequential(files)
    set_cache("cold", files, "auto")
    before = probes.sample_processes([0])
    nbytes, _, _ = floors.read_sequential(files)
    delta, _ = probes.counters_delta(before, probes.sample_processes([0]))
    assert delta["read_bytes"] >= 0.99 * nbytes  # every file byte came from the device; metadata may add


def test_counters_delta_new_and_lost_processes():
    a, b = probes.ProcSample(10, 20, 3, 1.0), probes.ProcSample(15, 20, 4, 1.5)
    delta, lost = probes.counters_delta({0: a, 99: a}, {0: b, 7: b})
    assert lost == [99]  # exited before it was read: reported, not hidden
    assert delta["rchar"] == 5 + 15 and delta["syscr"] == 1 + 4 and delta["cpu_s"] == 0.5 + 1.5


def test_block_device_and_filesystem_of_a_path(tmp_path):
    dev = probes.block_device(tmp_path)
    if dev is None:  # tmpfs and overlay have none
        pytest.skip(f"{tmp_path} is on a filesystem without a block device")
    (tmp_path / "f").write_bytes(os.urandom(4 << 20))
    os.sync()
    probes.evict([tmp_path / "f"], "fadvise")
    before = dev.sectors_read()
    with open(tmp_path / "f", "rb") as f:
        assert len(f.read()) == 4 << 20  # from the device: it was just evicted
    assert dev.sectors_read() - before >= (4 << 20) // 512  # at least the file's sectors were counted
    fs = probes.filesystem(tmp_path)
    assert fs["mount_point"] and fs["fstype"]


def test_pread_floor_reads_distinct_slots(files):
    r = floors.pread_random(files[0], 65536, max_reads=20)
    assert r.reads == 20 and len(r.latencies_s) == 20 and r.sample_bytes == 65536
    assert floors.pread_random(files[2], 1 << 30).sample_bytes == files[2].stat().st_size  # capped at the file


def test_time_batches_counts_what_the_batches_carry():
    batches = [NullBatch(4, 100), NullBatch(4, 50)]
    batches[1].indices = np.arange(4, 8)
    m = time_batches(iter(batches))
    assert (m.samples, m.nbytes, m.batch_ns.size) == (8, 150, 2)
    assert list(m.indices) == list(range(8))
    assert 0 <= m.ttfb_s <= m.seconds


def test_null_loader_yields_whole_batches():
    m = time_batches(null_batches(1000, 32))
    assert m.samples == 1000 // 32 * 32 and m.batch_ns.size == 1000 // 32


def test_check_indices_fails_loudly_on_a_wrong_epoch():
    check_indices([np.array([0, 2]), np.array([1, 3])], 4, 0, 0)
    with pytest.raises(LayoutbenchError, match="1 missing"):
        check_indices([np.array([0, 2, 3])], 4, 0, 5)
    with pytest.raises(LayoutbenchError, match="1 more than once"):
        check_indices([np.array([0, 1, 2, 3, 3])], 4, 0, 0)
    check_indices([np.array([0, 1])], 4, 2, 0)  # drop_last may leave a partial batch out...
    with pytest.raises(LayoutbenchError, match="3 missing"):
        check_indices([np.array([0])], 4, 2, 0)  # ...but no more
