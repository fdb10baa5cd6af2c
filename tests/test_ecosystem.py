"""The ecosystem's loaders (loaders/ecosystem, `bench run --loader ecosystem|all`): each layout read
by its own library through torch's DataLoader gives our pixels and labels bit-exact, every index
once per epoch, a new order each epoch; `bench run` records them as ecosystem runs naming the
library; a layout whose library is missing is left out in one line; without torch the option is
one line. Tests that need torch skip in one line where it is missing (the core install)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from generator import libraries
from generator.errors import UsageError
from generator.manifest import read_manifest
from loaders import open_corpus
from loaders.ecosystem import CONTENDERS, open_contender, why_not

from bench.results.result import Results, RunConfig
from bench.run.config import BenchConfig
from bench.run.runner import run_bench

from conformance import reference

ROOT = Path(__file__).resolve().parents[1]
needs_torch = pytest.mark.skipif(libraries.problem("torch") is not None,
                                 reason=f"{libraries.problem('torch')} (make install-torch)")
# library warnings these small corpora provoke (filtered where the contenders run in bench run; pytest resets filters)
pytestmark = [pytest.mark.filterwarnings("ignore:The given NumPy array is not writable"),
              pytest.mark.filterwarnings("ignore:Number of elements in the iterator is less than the queue size")]
KINDS = ["gray8", "raw16", "deflate", "jpeg", "var"]  # TIFF in place, raw pixels, compressed, JPEG, shapes of their own


def _contender_or_skip(root, layout):
    if layout not in read_manifest(root).layouts:
        pytest.skip(f"the {layout} layout does not hold this corpus's samples")
    why = why_not(layout)
    if why is not None:
        pytest.skip(why)
    return open_contender(open_corpus(root, layout), 8, seed=11)


def _epochs(source, workers: int, epochs: int = 2):
    """Every batch of `epochs` epochs of one loader: [(images, labels, indices, nbytes), ...] per epoch."""
    loader = source.loader(workers)
    try:
        return [[(b.images, np.asarray(b.labels), np.asarray(b.indices), b.nbytes) for b in loader.epoch(e)]
                for e in range(epochs)]
    finally:
        loader.close()


def _check(root, got) -> None:
    """Bit-exact pixels and labels, every index exactly once per epoch, true payload bytes, new orders."""
    pixels, labels, payloads = reference(root)
    n = len(labels)
    orders = []
    for batches in got:
        order = np.concatenate([idx for _, _, idx, _ in batches])
        assert np.array_equal(np.sort(order), np.arange(n))  # every index, once
        for images, labs, idx, nbytes in batches:
            assert np.array_equal(labs, labels[idx])
            assert nbytes == sum(len(payloads[i]) for i in idx)
            for k, i in enumerate(idx.tolist()):
                image = np.asarray(images[k])
                want = pixels[i] if pixels[i].dtype.itemsize == 1 else pixels[i].astype(image.dtype)
                assert image.shape == pixels[i].shape and np.array_equal(image, want), (i, image.shape)
        orders.append(order)
    assert not np.array_equal(orders[0], orders[1])  # a new order each epoch


@needs_torch
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", list(CONTENDERS))
def test_a_contender_reads_our_samples_bit_exact_every_index_once_a_new_order_each_epoch(corpus, layout, kind):
    root = corpus(kind)
    source = _contender_or_skip(root, layout)
    _check(root, _epochs(source, workers=0))


@needs_torch
@pytest.mark.parametrize("layout", list(CONTENDERS))
def test_a_contender_with_persistent_process_workers(corpus, layout):
    root = corpus("gray8")
    source = _contender_or_skip(root, layout)
    loader = source.loader(2)
    try:
        got, pids = [], []
        for e in range(2):
            got.append([(b.images, np.asarray(b.labels), np.asarray(b.indices), b.nbytes) for b in loader.epoch(e)])
            pids.append(loader.worker_pids)
        assert len(pids[0]) == 2 and pids[0] == pids[1]  # the same workers both epochs (persistent)
        assert loader.settings["persistent_workers"] is True and loader.settings["num_workers"] == 2
    finally:
        loader.close()
    assert loader.worker_pids == []
    _check(root, got)


@needs_torch
def test_the_same_seed_gives_the_same_orders_for_map_style_contenders(corpus):
    """Map-style contenders read in our orders (loaders.sampler): reproducible, and ours exactly."""
    from loaders.sampler import epoch_order

    root = corpus("gray8")
    for layout in ("hdf5", "lmdb", "npy", "sqlite"):
        source = _contender_or_skip(root, layout)
        order = np.concatenate([idx for _, _, idx, _ in _epochs(source, 0, 1)[0]])
        assert np.array_equal(order, epoch_order(len(order), 11, 0, "shuffle"))


@needs_torch
def test_files_is_read_by_imagefolder_in_our_order(corpus):
    root = corpus("gray8")
    source = _contender_or_skip(root, "files")
    from torchvision.datasets import ImageFolder

    assert isinstance(source.folder, ImageFolder)
    assert source.folder.classes == sorted(p.name for p in (root / "files").iterdir())
    from loaders.sampler import epoch_order

    order = np.concatenate([idx for _, _, idx, _ in _epochs(source, 0, 1)[0]])
    assert np.array_equal(order, epoch_order(len(order), 11, 0, "shuffle"))


@needs_torch
def test_webdataset_runs_its_own_pipeline_and_shuffle(corpus):
    root = corpus("gray8")
    source = _contender_or_skip(root, "tar")
    import webdataset as wds

    ds = source.dataset(0)
    assert isinstance(ds, wds.DataPipeline)
    settings = source.loader(0).settings
    assert settings["library"] == "webdataset" and "shuffle(1000)" in settings["order"]
    assert settings["versions"]["webdataset"] == wds.__version__


def _bench(corpus_root, tmp_path, loader: str, layouts=None, workers=(2,)) -> Results:
    cfg = BenchConfig(corpus=corpus_root, output=tmp_path / "r.json", layouts=layouts, caches=("warm",),
                      workers=workers, loader=loader,
                      run=RunConfig(epochs=2, sample_latency=False, worker_kind="process", batch_size=8), naive=False)
    return run_bench(cfg)


@needs_torch
def test_bench_run_loader_ecosystem_end_to_end(corpus, tmp_path):
    root = corpus("gray8")
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "bench", "run", "--corpus", str(root), "--output", str(out),
                        "--layouts", "hdf5,lmdb,tar", "--cache", "warm", "--workers", "2", "--worker-kind", "process",
                        "--loader", "ecosystem", "--epochs", "2", "--batch-size", "8", "--no-naive",
                        "--no-sample-latency", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = Results.load(out)
    assert {run.layout for run in res.runs} == {"ecosystem-hdf5", "ecosystem-lmdb", "ecosystem-tar"}
    libs = {"ecosystem-hdf5": "h5py", "ecosystem-lmdb": "py-lmdb", "ecosystem-tar": "webdataset"}
    for run in res.runs:
        assert run.kind == "ecosystem" and run.loader == "ecosystem" and run.config.workers == 2
        assert run.dataloader["library"] == libs[run.layout]
        assert "generator.codec" in run.dataloader["decoder"] and "torch" in run.dataloader["versions"]
        assert len(run.epochs) == 2 and all(e.indices_ok and e.samples == 37 for e in run.epochs)
        assert run.spec.loader == "ecosystem" and run.spec.name == run.layout
    assert "ecosystem-hdf5" in r.stdout  # the summary table names the runs


@needs_torch
def test_loader_all_runs_ours_the_dataloader_and_the_ecosystem(corpus, tmp_path):
    res = _bench(corpus("gray8"), tmp_path, "all", layouts=("npy",))
    assert [(run.layout, run.kind) for run in res.runs] == [
        ("npy", "loader"), ("torch-sample-npy", "torch"), ("torch-batch-npy", "torch"), ("ecosystem-npy", "ecosystem")]
    eco = res.runs[-1]
    assert eco.dataloader["library"] == "numpy memmap" and eco.config.sample_latency is False
    assert json.loads(json.dumps(res.to_dict()))  # the settings are JSON


@needs_torch
def test_a_layout_whose_library_is_missing_is_left_out_in_one_line(corpus, tmp_path, monkeypatch, capsys):
    real = libraries.problem
    monkeypatch.setattr(libraries, "problem", lambda m: "webdataset is not installed" if m == "webdataset" else real(m))
    res = _bench(corpus("gray8"), tmp_path, "ecosystem", layouts=("tar", "hdf5"))
    assert [run.layout for run in res.runs] == ["ecosystem-hdf5"]
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "webdataset" in line]
    assert len(lines) == 1 and "the tar ecosystem loader" in lines[0] and "pip install -e '.[records]'" in lines[0]
    # --loader all: ours still reads tar; only its ecosystem run is left out
    res = _bench(corpus("gray8"), tmp_path, "all", layouts=("tar",), workers=(0,))
    assert [run.layout for run in res.runs] == ["tar", "torch-sample-tar", "torch-batch-tar"]
    # asked for nothing else: one line, no run
    with pytest.raises(UsageError, match=r"^the tar ecosystem loader \(webdataset\) needs webdataset"):
        _bench(corpus("gray8"), tmp_path, "ecosystem", layouts=("tar",))


@needs_torch
def test_a_damaged_sample_in_a_worker_is_one_line_naming_it(corpus_copy, tmp_path):
    root = corpus_copy("gray8")
    source = _contender_or_skip(root, "npy")
    data = root / "npy" / "data.bin"
    raw = bytearray(data.read_bytes())
    raw[0:4] = b"XXXX"  # sample 0's TIFF header
    data.write_bytes(bytes(raw))
    from generator.errors import LayoutbenchError

    loader = source.loader(2)
    try:
        with pytest.raises(LayoutbenchError, match=r"npy sample 0 at .*data.bin: undecodable"):
            for _ in loader.epoch(0):
                pass
    finally:
        loader.close()


NO_TORCH = "import sys; sys.modules['torch'] = None\n"


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_without_torch_loader_ecosystem_is_one_line(corpus, tmp_path):
    code = NO_TORCH + ("from bench.__main__ import main, PROG\nfrom generator.cli import run_main\n"
                       "sys.exit(run_main(PROG, main, sys.argv[1:]))")
    for loader in ("ecosystem", "all"):
        r = _python(code, "run", "--corpus", str(corpus("gray8")), "--output", str(tmp_path / "r.json"),
                    "--loader", loader, "--quiet")
        assert r.returncode == 2 and r.stdout == "", r.stdout
        assert r.stderr.count("\n") == 1 and "make install-torch" in r.stderr and f"--loader {loader}" in r.stderr
    assert not (tmp_path / "r.json").exists()
    # the registry names the contenders without importing torch or any of their libraries
    r = _python(NO_TORCH + "import loaders.ecosystem as e, bench.run.ecosystem\n"
                "print(e.why_not('hdf5'))\nprint(sorted(m for m, mod in sys.modules.items() if mod is not None and "
                "m.split('.')[0] in ('torch', 'torchvision', 'webdataset', 'tfrecord')))")
    assert r.returncode == 0, r.stderr
    line, mods = r.stdout.splitlines()
    assert line.startswith("the hdf5 ecosystem loader (h5py) needs torch") and "make install-torch" in line
    assert mods == "[]"


def _mixed_tree(root):
    """An image folder of mixed formats, shapes and dtypes (what `python -m generator ingest` takes)."""
    from PIL import Image
    import tifffile

    rng = np.random.default_rng(5)
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), np.uint8)).save(root / "cat" / "a.jpg", quality=80)
    Image.fromarray(rng.integers(0, 255, (30, 20), np.uint8)).save(root / "cat" / "b.png")
    tifffile.imwrite(root / "dog" / "c.tif", rng.integers(0, 65535, (17, 23), np.uint16))
    Image.fromarray(rng.integers(0, 255, (33, 31, 3), np.uint8)).save(root / "dog" / "e.png")
    return root


@needs_torch
def test_an_ingested_folder_of_mixed_formats_reads_as_our_readers_read_it(tmp_path):
    from generator.ingest import ingest

    out = tmp_path / "out"
    ingest(_mixed_tree(tmp_path / "src"), out, workers=1, progress=False)
    manifest = read_manifest(out)
    for layout in CONTENDERS:
        if layout not in manifest.layouts or why_not(layout) is not None:
            continue
        if layout == "tfrecord":  # 4 samples make shards of one record, which the tfrecord package cannot index
            assert "a shard of one record" in why_not(layout, manifest)
            with pytest.raises(UsageError, match="a shard of one record"):
                open_contender(open_corpus(out, layout))
            continue
        ours = open_corpus(out, layout)
        want = [np.array(ours.decode(ours.read(i), i)) for i in range(len(ours))]
        labels = [ours.label(i) for i in range(len(ours))]
        ours.close()  # py-lmdb opens an environment once per process
        seen = []
        for images, labs, idx, _ in _epochs(open_contender(open_corpus(out, layout), 3, seed=1), 0, 1)[0]:
            for k, i in enumerate(idx.tolist()):
                image = np.asarray(images[k])
                assert image.shape == want[i].shape and np.array_equal(image, want[i].astype(image.dtype)), (layout, i)
                assert labs[k] == labels[i]
            seen += idx.tolist()
        assert sorted(seen) == list(range(len(want))), layout
