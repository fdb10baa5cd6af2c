"""Adding a layout takes no edit outside its own modules: a toy layout defined in this file (every
payload back to back in toy/data.bin, a (start, length) pair per sample in toy/index.bin), registered
at run time, passes the reader and writer suites and is generated, verified, benchmarked and
reported by the real commands. The files it took are counted in the README ("Adding a layout")."""

from __future__ import annotations

import json
import mmap
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conformance import ReaderSuite, WriterSuite
from conftest import readable_kind_spec

from generator.build import generate
from generator.errors import SampleError
from generator.layouts import Layout, LayoutWriter, layout_ids, payload_estimate, register, unregister
from loaders.base import Reader

INDEX = np.dtype("<u8")  # start, length (0: no payload stored for the sample)


class ToyWriter(LayoutWriter):
    name = "toy"
    target = "toy"

    def paths(self):
        return [self.root / "toy", self.root / ".toy.partial"]

    def begin(self) -> int:
        self.partial = self.root / ".toy.partial"
        shutil.rmtree(self.partial, ignore_errors=True)  # a kill restarts the layout
        self.partial.mkdir()
        self.data = open(self.partial / "data.bin", "wb")
        self.index = np.zeros((self.spec.count, 2), INDEX)
        return 0

    def put_many(self, indices, payloads, labels) -> None:
        for i, p in zip(indices, payloads):
            self.index[i] = (self.data.tell(), len(p))
            self.data.write(p)

    def end(self, labels) -> None:
        self.data.close()
        (self.partial / "index.bin").write_bytes(self.index.tobytes())
        for name in ("data.bin", "index.bin"):
            with open(self.partial / name, "rb") as f:
                os.fsync(f.fileno())
        os.replace(self.partial, self.root / "toy")

    def abort(self) -> None:
        self.data.close()

    @classmethod
    def estimate_bytes(cls, spec, codec) -> int:
        return spec.count * (payload_estimate(spec, codec) + 16) + 8192


class ToyReader(Reader):
    layout = "toy"
    handles = ("_map", "_index")
    reads_through_map = True
    no_extents = "the toy is the least a layout needs: it leaves out the page-cache probe's extents, as a layout may"

    def paths(self):
        return [self.target / "data.bin", self.target / "index.bin"]

    def _open(self, index: int) -> None:
        try:
            raw = (self.target / "index.bin").read_bytes()
            with open(self.target / "data.bin", "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(f.fileno()).st_size else b""
        except OSError as exc:
            raise SampleError(self.layout, index, str(self.target), f"missing: {exc.strerror}") from None
        self._index = np.frombuffer(raw, INDEX).reshape(-1, 2).tolist()

    def _close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            self._map.close()

    def _read_one(self, i: int):
        start, length = self._index[i]
        if not length:
            raise SampleError(self.layout, i, self.where(i), "missing: no payload stored")
        return self._map[start:start + length]

    def _read_many(self, idx):
        return [self._read_one(i) for i in idx]


TOY = Layout("toy", "every payload back to back in toy/data.bin, (start, length) pairs in toy/index.bin",
             f"{__name__}:ToyWriter", f"{__name__}:ToyReader")


@pytest.fixture(scope="module", autouse=True)
def toy_registered():
    register(TOY)
    yield
    unregister("toy")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, toy_registered):
    """This module's corpora: the toy layout only (the session's corpora know nothing of it)."""
    made = {}

    def get(kind: str):
        if kind not in made:
            spec = readable_kind_spec(kind)
            made[kind] = tmp_path_factory.mktemp(f"toy-{kind}")
            generate(made[kind], spec, ["toy"], workers=1, progress=False)
        return made[kind]

    return get


def _entry(root, i):
    path = Path(root) / "toy" / "index.bin"
    index = np.frombuffer(path.read_bytes(), INDEX).reshape(-1, 2).copy()
    return path, index, index[i]


class TestToyReader(ReaderSuite):
    layout = "toy"

    def make_missing(self, root, index):
        path, table, _ = _entry(root, index)
        table[index, 1] = 0
        path.write_bytes(table.tobytes())

    def make_truncated(self, root, index):
        path, table, _ = _entry(root, index)
        table[index, 1] -= 10
        path.write_bytes(table.tobytes())

    def overwrite(self, root, index, offset, data):
        _, _, (start, _) = _entry(root, index)
        with open(Path(root) / "toy" / "data.bin", "r+b") as f:
            f.seek(int(start) + offset)
            f.write(data)


class TestToyWriter(WriterSuite):
    layout = "toy"


def test_the_real_commands_generate_verify_benchmark_and_report_it(tmp_path, capsys):
    from bench.__main__ import main as bench
    from generator.__main__ import main as generator
    from loaders.__main__ import main as loaders

    assert generator(["--list-layouts"]) == 0
    assert any(line.split()[0] == "toy" for line in capsys.readouterr().out.splitlines())
    root = tmp_path / "corpus"
    assert generator(["--shape", "16x16x3", "--count", "50", "--out", str(root), "--quiet", "--workers", "1"]) == 0
    manifest = json.loads((root / "manifest.json").read_text())
    assert list(manifest["layouts"]) == list(layout_ids(available=True))  # the toy among them, by default
    assert loaders(["verify", str(root), "--quiet"]) == 0
    assert "toy: all 50 samples match" in capsys.readouterr().out
    out = tmp_path / "results" / "toy.json"
    assert bench(["run", "--corpus", str(root), "--output", str(out), "--layouts", "toy", "--cache", "cold,warm",
                  "--epochs", "2", "--quiet"]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert {(r["layout"], r["cache"]) for r in runs} == {("toy", "cold"), ("toy", "warm")}
    assert all(r["samples"] == 2 * 50 and r["samples_per_s"] > 0 for r in runs)
    assert bench(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| toy | cold |" in report and "| toy | warm |" in report  # a row per run in its tables
