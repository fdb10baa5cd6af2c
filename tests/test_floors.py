"""The sequential floors: every byte of every file, landing in a batch-sized buffer, by read() or
copied out of a map; both also warm the files."""


import numpy as np
import pytest

from bench.probe import floors, probes
from bench.probe.regimes import set_cache


@pytest.fixture
def files(tmp_path):
    """Three files: one larger than the destinations below, one not page-aligned, one empty."""
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate((9 << 20, (1 << 20) + 123, 0)):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        paths.append(p)
    return paths


@pytest.mark.parametrize("way", [floors.read_sequential, floors.copy_sequential])
@pytest.mark.parametrize("into", [0, 5 << 20, 64 << 20])
def test_every_byte_of_every_file_is_passed_and_warm(files, way, into):
    set_cache("cold", files, "auto")
    nbytes, seconds, n = way(files, into=into)
    assert nbytes == sum(p.stat().st_size for p in files) and n == 3 and seconds > 0
    assert probes.residency(files).fraction >= 0.99


def test_pieces_stay_inside_the_destination_and_wrap():
    dest = floors.destination(5 << 20)
    at = floors._pieces(dest, floors.READ_BLOCK)
    offsets = [next(at) for _ in range(6)]
    assert offsets == [0, 4 << 20, 0, 4 << 20, 0, 4 << 20]
    assert all(a + floors.READ_BLOCK <= len(dest) for a in offsets)
    big = floors.destination(46 << 20)
    at = floors._pieces(big, floors.READ_BLOCK)
    offsets = [next(at) for _ in range(30)]
    assert max(offsets) + floors.READ_BLOCK <= len(big) and offsets.count(0) == 3  # wraps every 12 pieces


def test_a_read_lands_in_the_destination(files, monkeypatch):
    """The bytes really go through the batch-sized buffer (not one reused 4 MiB one)."""
    seen = []
    real = floors.destination

    def spy(nbytes):
        seen.append(real(nbytes))
        return seen[-1]

    monkeypatch.setattr(floors, "destination", spy)
    floors.read_sequential(files[1:2], into=8 << 20)
    dest = np.frombuffer(seen[0], np.uint8)
    assert len(dest) >= 8 << 20
    assert dest[:(1 << 20) + 123].tobytes() == files[1].read_bytes()
