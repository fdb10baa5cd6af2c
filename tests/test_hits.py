"""bench/probe/hits.py's accounting: per sample, its payload weighted by the resident share of its
ranges' pages; a range several samples of one batch share (a Parquet column chunk) missed once."""

import pytest

import bench.probe.hits as hits
from bench.probe.hits import PAGE, HitCounter, ProbedReader


class FakeReader:
    """Three samples of 1,000 bytes: 0 and 1 in one shared chunk of 4 pages, 2 in two ranges."""

    _sizes = [1000, 1000, 1000]

    def __init__(self, path):
        self.path = path

    def extents(self, indices):
        table = {0: [(self.path, 0, 4 * PAGE)], 1: [(self.path, 0, 4 * PAGE)],
                 2: [(self.path, 8 * PAGE, PAGE), (self.path, 10 * PAGE, PAGE)]}
        return [table[i] for i in indices]

    def read_many(self, indices):
        return [b"x" * 1000 for _ in indices]

    def close(self):
        pass


@pytest.fixture
def probed(tmp_path, monkeypatch):
    path = tmp_path / "f"
    path.write_bytes(b"\0" * 12 * PAGE)
    resident = {0: 1, 8 * PAGE: 1, 10 * PAGE: 0}  # resident pages of each range, by its offset

    def fake(fd, off, n):
        return resident[off], -(-n // PAGE)

    monkeypatch.setattr(hits, "cached_pages", fake)
    counter = HitCounter()
    yield ProbedReader(FakeReader(str(path)), counter), counter
    counter.close()


def test_payload_is_weighted_by_the_resident_share_and_a_shared_range_is_missed_once(probed):
    reader, counter = probed
    reader.read_many([0, 1, 2])
    payload, hit, miss, _ = counter.totals()
    assert payload == 3000  # the manifest's sizes, whatever the ranges' lengths
    assert hit == 1000 * 1 // 4 * 2 + 1000 * 1 // 2  # samples 0 and 1: 1 of 4 pages; sample 2: 1 of 2
    assert miss == (3 + 1) * PAGE  # the shared chunk's 3 missing pages once, plus sample 2's missing page
    reader.close()


def test_batches_are_counted_apart(probed):
    reader, counter = probed
    reader.read_many([0])
    reader.read_many([1])  # another batch: its read of the chunk is another read
    assert counter.totals()[2] == 6 * PAGE


def test_the_report_names_layouts_whose_design_reads_more_than_the_payload():
    from bench.report.markdown import read_unit_notes
    from loaders.registry import readers

    lines = read_unit_notes([{"layout": name} for name in readers()])
    named = {line.split(":")[0][2:] for line in lines if line}
    assert named == {name for name, cls in readers().items() if cls.read_unit} >= {"parquet", "sqlite"}
    assert any("column chunk" in line for line in lines if line.startswith("- parquet"))
    assert read_unit_notes([{"layout": "hdf5"}, {"layout": "npy"}]) == []  # their samples' own pages
    assert any("inode and directory blocks" in line for line in read_unit_notes([{"layout": "files"}]))
