"""The PyTorch path: loaders.torch (datasets, samplers, the DataLoader as a pipeline, the device
stage on the CPU) and `bench run --loader both` / `--device`; skipped without torch (make
install-torch). tests/test_torch_absent.py covers what must hold without it."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest
from conformance import reference

from bench.run.config import BenchConfig
from bench.results.result import Results, RunConfig
from bench.run.runner import run_bench
from generator.errors import LayoutbenchError, UsageError
from loaders import open_corpus
from loaders import sampler as S
from loaders.files import FilesReader


torch = pytest.importorskip("torch")
lt = pytest.importorskip("loaders.torch")


@pytest.fixture(autouse=True)
def reap_dataloader_workers():
    """DataLoader workers that have exited keep two pipe descriptors until multiprocessing reaps
    them (at the next process start, anywhere): reap them here, so a later test counting open
    descriptors does not see ours close."""
    yield
    multiprocessing.active_children()


@pytest.fixture(scope="module")
def ref(corpus):
    return {kind: reference(corpus(kind)) for kind in ("gray8", "rgb16", "big")}


@pytest.mark.parametrize("kind, layout", [("gray8", "files"), ("rgb16", "hdf5"), ("rgb16", "lmdb")])
def test_the_sample_dataset_is_bit_exact_in_every_output(corpus, ref, kind, layout):
    pixels, labels, _ = ref[kind]
    reader = open_corpus(corpus(kind), layout)
    stored = lt.TorchDataset(reader)
    assert isinstance(stored, torch.utils.data.Dataset) and len(stored) == 37
    image, target = stored[5]
    want_dtype = torch.uint8 if pixels[5].dtype.itemsize == 1 else torch.int32  # never torch.uint16
    assert image.dtype == want_dtype and image.shape == pixels[5].shape and target == labels[5]
    assert np.array_equal(image.numpy(), pixels[5])
    chw = lt.TorchDataset(reader, channels_first=True)[5][0]
    assert chw.shape == (pixels[5].shape[2], *pixels[5].shape[:2]) and np.array_equal(chw.permute(1, 2, 0).numpy(), pixels[5])
    top = np.iinfo(pixels[5].dtype).max
    f = lt.TorchDataset(reader, output="float", channels_first=True)[5][0]
    assert f.dtype == torch.float32 and 0.0 <= float(f.min()) and float(f.max()) <= 1.0
    assert np.array_equal(f.permute(1, 2, 0).numpy(), (pixels[5] / np.float32(top)).astype(np.float32))
    assert float(lt.to_tensor(np.array([[[0, top]]], pixels[5].dtype), "float").max()) == 1.0
    assert stored.targets == list(labels) and stored.classes[:2] == ["0", "1"]
    assert stored.class_to_idx == {name: c for c, name in enumerate(stored.classes)}
    tr = lt.TorchDataset(reader, transform=lambda x: x.sum(), target_transform=lambda t: -t - 1)[5]
    assert int(tr[0]) == int(pixels[5].astype(np.int64).sum()) and tr[1] == -labels[5] - 1
    with pytest.raises(IndexError):
        stored[37]
    with pytest.raises(UsageError, match="output must be one of"):
        lt.TorchDataset(reader, output="uint16")


def test_class_names_are_imagefolders_for_1000_classes(corpus):
    reader = open_corpus(corpus("gray8"), "hdf5")
    reader.spec = type(reader.spec)(**{**reader.spec.to_dict(), "num_classes": 1000})
    ds = lt.TorchDataset(reader)
    assert ds.classes[7] == "007" and ds.class_to_idx["999"] == 999 and sorted(ds.classes) == ds.classes


def test_samplers_give_every_index_once_across_ranks_without_padding():
    n, world = 37, 3
    shares = [lt.EpochSampler(n, seed=2, rank=r, world=world) for r in range(world)]
    for epoch in (0, 1):
        for s in shares:
            s.set_epoch(epoch)
        got = [list(s) for s in shares]
        assert [len(g) for g in got] == [len(s) for s in shares] == [12, 12, 13]
        assert sorted(sum(got, [])) == list(range(n))
        assert sum(got, []) == S.epoch_order(n, 2, epoch, "shuffle").tolist()
    shares[0].set_epoch(0)
    first = list(shares[0])
    shares[0].set_epoch(1)
    assert list(shares[0]) != first
    b = lt.EpochBatchSampler(n, 8, shuffle="block", block_size=4, seed=1, rank=1, world=2)
    b.set_epoch(3)
    assert [len(x) for x in b] == [8, 8, 3] and len(b) == 3
    assert sum(list(b), []) == S.shard(S.epoch_order(n, 1, 3, "block", block_size=4), 1, 2).tolist()
    assert len(lt.EpochBatchSampler(n, 8, drop_last=True)) == 4
    for bad in (dict(rank=2, world=2), dict(shuffle="nope")):
        with pytest.raises(UsageError):
            lt.EpochSampler(n, **bad)
    with pytest.raises(UsageError):
        lt.EpochBatchSampler(n, 0)


class CountingReader(FilesReader):
    calls = 0

    def read_batch(self, indices, out=None):
        type(self).calls += 1
        images, nbytes = super().read_batch(indices, out)
        type(self).last = images
        return images, nbytes


@pytest.mark.parametrize("workers", [0, 2])
def test_the_batch_loader_reads_each_batch_once_and_never_restacks(corpus, ref, workers):
    pixels, labels, payloads = ref["rgb16"]
    root = corpus("rgb16")
    reader = open_corpus(root, "files")
    reader.__class__ = CountingReader
    CountingReader.calls = 0
    dl = lt.batch_loader(reader, 8, seed=5, num_workers=workers, with_index=True,
                         **(dict(persistent_workers=True, prefetch_factor=2) if workers else {}))
    assert dl.batch_size is None and dl.collate_fn is lt._keep
    for epoch in (0, 1):
        dl.sampler.set_epoch(epoch)
        order = list(dl.sampler)
        got = list(dl)
        assert [b[2].tolist() for b in got] == order  # in the sampler's order, every index once
        for images, targets, index, nbytes in got:
            assert images.dtype == torch.int32 and torch.is_tensor(targets) and torch.is_tensor(index)
            assert np.array_equal(images.numpy(), np.stack([pixels[i] for i in index.tolist()]))
            assert targets.tolist() == [labels[i] for i in index.tolist()]
            assert nbytes == sum(len(payloads[i]) for i in index.tolist())
    if not workers:
        assert CountingReader.calls == 2 * 5  # one read_batch per batch, nothing else
        small = open_corpus(corpus("gray8"), "files")
        small.__class__ = CountingReader
        images, _ = lt.BatchDataset(small)[[3, 4]]
        assert images.data_ptr() == CountingReader.last.ctypes.data  # the read_batch array itself: no copy made


@pytest.mark.parametrize("kind", ["gray8", "big"])
def test_small_batches_travel_as_numpy_and_large_ones_in_shared_memory(corpus, ref, kind):
    """Both reach the main process as tensors, bit-exact; gray8 batches are below SHM_MIN, big's above."""
    pixels = ref[kind][0]
    reader = open_corpus(corpus(kind), "hdf5")
    batch = 16 if kind == "big" else 8
    assert (batch * reader.spec.pixel_bytes >= lt.SHM_MIN) == (kind == "big")
    ds = lt.BatchDataset(reader, with_index=True)
    dl = lt.BatchLoader(ds, sampler=lt.EpochBatchSampler(len(reader), batch), num_workers=2)
    seen = []
    for images, targets, index, _ in dl:
        assert torch.is_tensor(images) and images.dtype == torch.uint8 and torch.is_tensor(targets)
        assert np.array_equal(images.numpy(), np.stack([pixels[i] for i in index.tolist()]))
        seen += index.tolist()
    assert sorted(seen) == list(range(len(reader)))
    with pytest.raises(UsageError, match="takes no batch_size"):
        lt.BatchLoader(ds, batch_size=4)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_iterable_dataset_reads_in_epoch_order_split_by_worker_and_rank(corpus, ref, workers):
    pixels = ref["rgb16"][0]
    reader = open_corpus(corpus("rgb16"), "lmdb")
    per_rank = []
    for rank in (0, 1):
        ds = lt.IterableEpochDataset(reader, 4, seed=9, rank=rank, world=2, with_index=True)
        dl = lt.BatchLoader(ds, num_workers=workers, **(dict(persistent_workers=True) if workers else {}))
        epochs = []
        for epoch in (0, 1):
            ds.set_epoch(epoch)  # reaches the persistent workers through shared memory
            got = list(dl)
            for images, _, index, _ in got:
                assert np.array_equal(images.numpy(), np.stack([pixels[i] for i in index.tolist()]))
            want = S.shard(S.epoch_order(37, 9, epoch, "shuffle"), rank, 2).tolist()
            assert sum((b[2].tolist() for b in got), []) == want  # in order, though dealt to two workers
            epochs.append(want)
        assert epochs[0] != epochs[1] and len(dl) == len(ds)
        per_rank.append(epochs)
    for epoch in (0, 1):
        assert sorted(per_rank[0][epoch] + per_rank[1][epoch]) == list(range(37))
    assert [len(b) for b in ds.batches(1, 2)] == [4, 4]  # worker 1 of 2: batches 1, 3 of this rank's 5


@pytest.mark.parametrize("dataset", ["sample", "batch"])
def test_the_dataloader_pipeline_gives_every_index_once_bit_exact(corpus, ref, dataset):
    pixels, labels, payloads = ref["gray8"]
    p = lt.DataLoaderPipeline(open_corpus(corpus("gray8"), "files"), dataset, batch_size=5, workers=2, seed=3)
    try:
        for epoch in (0, 1):
            batches = list(p.epoch(epoch))
            assert len(p.worker_pids) == 2
            idx = np.concatenate([b.indices for b in batches])
            assert idx.tolist() == S.epoch_order(37, 3, epoch, "shuffle").tolist()
            for b in batches:
                assert np.array_equal(b.images.numpy(), np.stack([pixels[i] for i in b.indices]))
                assert b.labels.tolist() == [labels[i] for i in b.indices]
                assert b.nbytes == sum(len(payloads[i]) for i in b.indices)
        assert p.settings["persistent_workers"] and p.settings["num_workers"] == 2 and p.settings["dataset"] == dataset
    finally:
        p.close()
    with pytest.raises(UsageError, match="DataLoader workers are processes"):
        lt.DataLoaderPipeline(open_corpus(corpus("gray8"), "files"), dataset, workers=2, worker_kind="thread")


def test_a_damaged_sample_in_a_dataloader_worker_is_one_line_naming_it(corpus_copy):
    root = corpus_copy("gray8")
    reader = open_corpus(root, "files")
    os.remove(reader.path(11))
    p = lt.DataLoaderPipeline(reader, "batch", batch_size=4, workers=2, shuffle="sequential")
    try:
        with pytest.raises(LayoutbenchError) as e:
            list(p.epoch(0))
    finally:
        p.close()
    assert str(e.value).startswith("in a DataLoader worker: files sample 11 at ") and reader.path(11) in str(e.value)
    assert "missing" in str(e.value) and "\n" not in str(e.value)


def test_the_device_stage_on_the_cpu_stages_copies_and_counts(ref):
    pixels = np.stack(ref["rgb16"][0])
    stage = lt.DeviceStage("cpu")
    out = [stage(torch.from_numpy(pixels[k:k + 8]).to(torch.int32)) for k in range(0, 32, 8)]
    assert all(np.array_equal(o.numpy(), pixels[k * 8:k * 8 + 8]) for k, o in enumerate(out))
    assert len(stage.staging) == 1 and stage.transfers == 4 and stage.bytes == 32 * pixels[0].size * 4
    first = stage.staging[next(iter(stage.staging))]
    assert out[0].data_ptr() != first.data_ptr() != out[1].data_ptr()  # the staging buffer is not handed out
    stage(pixels[:3])  # numpy in; a new shape gets its own staging buffer
    assert len(stage.staging) == 2 and stage.stage_s > 0 and stage.copy_s > 0
    chw = torch.from_numpy(pixels[:8]).permute(0, 3, 1, 2)  # a non-contiguous view is staged contiguous
    assert np.array_equal(stage(chw).numpy(), pixels[:8].transpose(0, 3, 1, 2))
    n, seconds = stage.floor(1 << 20, repeats=2)
    assert n == 1 << 20 and seconds > 0
    # batch 1 against 32: the same bytes in 32x the transfers
    ones, big = lt.DeviceStage("cpu"), lt.DeviceStage("cpu")
    for k in range(32):
        ones(pixels[k:k + 1])
    big(pixels[:32])
    assert ones.bytes == big.bytes and (ones.transfers, big.transfers) == (32, 1)
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            lt.DeviceStage("cuda")


def test_bench_run_loader_both_puts_ours_and_the_dataloader_side_by_side(corpus, tmp_path):
    from bench.report.markdown import summary_table

    cfg = BenchConfig(corpus=corpus("gray8"), output=tmp_path / "r.json", layouts=("files", "hdf5"),
                      caches=("warm",), workers=(0, 2), naive=False, loader="both",
                      run=RunConfig(epochs=2, batch_size=8, worker_kind="process"), device="cuda")
    res = run_bench(cfg)
    res.save(cfg.output)
    names = [(r.layout, r.config.workers) for r in res.runs]
    assert names[:3] == [("files", 0), ("torch-sample-files", 0), ("torch-batch-files", 0)]
    assert len(res.runs) == 12
    for r in res.runs:
        assert all(e.samples == 37 and e.indices_ok for e in r.epochs)
        if r.layout.startswith("torch-"):
            assert r.kind == "torch" and r.loader == "torch" and r.reads in ("files", "hdf5")
            assert r.dataloader["dataset"] == r.layout.split("-")[1] and r.dataloader["num_workers"] == r.config.workers
            assert r.dataloader["persistent_workers"] == bool(r.config.workers) and not any(e.timing for e in r.epochs)
        else:
            assert r.loader == "ours" and r.dataloader is None and any(e.timing for e in r.epochs)
    loaded = Results.load(cfg.output)
    assert [r.loader for r in loaded.runs] == [r.loader for r in res.runs]
    assert "torch-batch-hdf5" in summary_table([loaded])
    if not torch.cuda.is_available():
        assert any("no CUDA device here" in n for n in res.notes) and all(r.device is None for r in res.runs)
    with pytest.raises(UsageError, match="DataLoader workers are processes"):
        run_bench(BenchConfig(corpus=corpus("gray8"), output=tmp_path / "t.json", loader="torch", workers=(2,),
                              run=RunConfig(worker_kind="thread")))


def test_grouped_items_give_the_same_batches_one_by_one(corpus, ref):
    """group=K: K batches per DataLoader item, yielded one by one: the batches, their order, pixels,
    targets, indices and payload bytes those of group=1; len() counts batches either way."""
    pixels, labels, payloads = ref["gray8"]
    root = corpus("gray8")
    for workers in (0, 2):
        kw = dict(persistent_workers=True, prefetch_factor=2) if workers else {}
        one = lt.batch_loader(open_corpus(root, "hdf5"), 4, seed=2, num_workers=workers, with_index=True, group=1, **kw)
        three = lt.batch_loader(open_corpus(root, "hdf5"), 4, seed=2, num_workers=workers, with_index=True, group=3,
                                **kw)
        assert three.sampler.group == 3 and len(three.sampler) == 4 and len(three) == len(one) == 10
        items = list(three.sampler)
        assert all(isinstance(g, lt.BatchGroup) for g in items) and [len(g) for g in items] == [3, 3, 3, 1]
        for epoch in (0, 1):
            one.sampler.set_epoch(epoch)
            three.sampler.set_epoch(epoch)
            a, b = list(one), list(three)
            assert [x[2].tolist() for x in b] == [x[2].tolist() for x in a] == [list(x) for x in one.sampler]
            for images, targets, index, nbytes in b:
                assert images.dtype == torch.uint8 and torch.is_tensor(targets) and targets.dtype == torch.int64
                assert np.array_equal(images.numpy(), np.stack([pixels[i] for i in index.tolist()]))
                assert targets.tolist() == [labels[i] for i in index.tolist()]
                assert nbytes == sum(len(payloads[i]) for i in index.tolist())
        plain = lt.batch_loader(open_corpus(root, "hdf5"), 4, num_workers=workers, group=3, **kw)
        assert [len(x) for x in next(iter(plain))] == [4, 4]  # (images, targets) without with_index
    with pytest.raises(UsageError, match="group > 1"):
        lt.batch_loader(open_corpus(corpus("rgb16"), "hdf5"), 4, num_workers=2, group=3)  # 16-bit: not packable
    with pytest.raises(UsageError, match="group must be an integer >= 1"):
        lt.EpochBatchSampler(37, 4, group=0)


def test_auto_group_packs_small_8bit_batches_only(corpus):
    small = lt.BatchDataset(open_corpus(corpus("gray8"), "hdf5"))
    assert lt.auto_group(small, 32) == 5  # 32 x 784 B = 25 KB: five to an item of about 128 KiB
    assert lt.auto_group(small, 1) == lt.GROUP_MAX
    assert lt.auto_group(lt.BatchDataset(open_corpus(corpus("big"), "hdf5")), 16) == 1  # >= SHM_MIN: shared memory
    assert lt.auto_group(lt.BatchDataset(open_corpus(corpus("rgb16"), "hdf5")), 8) == 1  # 16-bit: numpy transport
    assert lt.auto_group(lt.BatchDataset(small.reader, transform=lambda x: x), 8) == 1
    p = lt.DataLoaderPipeline(open_corpus(corpus("gray8"), "hdf5"), "batch", batch_size=32, workers=2)
    try:
        assert p.settings["batches_per_item"] == 5 and len(p) == 2
    finally:
        p.close()
    assert lt.batch_loader(small.reader, 32).sampler.group == 1  # no workers: nothing to carry


@pytest.fixture(scope="module")
def sharded_corpus(tmp_path_factory):
    from generator.build import generate
    from generator.layouts import get_layout
    from generator.spec import Spec

    root = tmp_path_factory.mktemp("torch-shards")
    layouts = [name for name in ("tar", "tfrecord", "hdf5") if get_layout(name).missing() is None]
    generate(root, Spec(height=8, width=8, channels=1, count=60, seed=4), layouts, workers=1, progress=False,
             settings={"shard_samples": 6})
    return root


@pytest.mark.parametrize("layout, dataset", [("tar", "batch"), ("tfrecord", "batch"), ("tar", "sample")])
def test_the_shards_mode_reads_every_index_once_across_2_ranks_and_2_workers(sharded_corpus, layout, dataset):
    """shuffle="shards" through EpochSampler: the reader's own shards (ten of six samples), each
    rank whole shards of them, every index exactly once per epoch over 2 ranks x 2 DataLoader
    workers, in our Loader's order."""
    from generator.layouts import get_layout
    from loaders.stages import epoch_indices

    if (why := get_layout(layout).missing()) is not None:
        pytest.skip(why)
    bounds = open_corpus(sharded_corpus, layout).shards()
    assert bounds.tolist() == list(range(0, 61, 6))
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            p = lt.DataLoaderPipeline(open_corpus(sharded_corpus, layout), dataset, batch_size=4, workers=2,
                                      shuffle="shards", seed=1, rank=rank, world=2, buffer_size=8)
            try:
                mine = [i for b in p.epoch(epoch) for i in b.indices.tolist()]
                assert len(p.worker_pids) == 2
            finally:
                p.close()
            assert mine == epoch_indices(60, 1, epoch, "shards", rank, 2, shards=bounds, buffer_size=8).tolist()
            assert len({i // 6 for i in mine}) == 5 and len(mine) == 30  # five whole shards each
            seen += mine
        assert sorted(seen) == list(range(60))
    with pytest.raises(UsageError, match="the shards order needs a streaming layout"):
        lt.DataLoaderPipeline(open_corpus(sharded_corpus, "hdf5"), dataset, workers=0, shuffle="shards")


def test_loader_torch_without_a_worker_kind_runs_process_workers_and_says_so(corpus, tmp_path):
    """DataLoader workers are processes: `--loader torch|both` with workers and no --worker-kind
    runs every run's workers as processes (ours too, at the same concurrency) and says so."""
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "bench", "run", "--corpus", str(corpus("gray8")), "--output", str(out),
                        "--layouts", "files", "--cache", "asis", "--epochs", "1", "--no-naive", "--no-sample-latency",
                        "--loader", "both", "--workers", "1", "--quiet"], cwd=Path(__file__).resolve().parents[1],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "note: --loader both: DataLoader workers are processes, so every run's workers are process workers" \
        in r.stderr, r.stderr
    res = Results.load(out)
    assert {run.loader for run in res.runs} == {"ours", "torch"}
    assert {run.config.worker_kind for run in res.runs} == {"process"}


def test_device_cuda_without_cuda_is_one_line_and_the_run_goes_on(corpus, tmp_path):
    """With torch but no CUDA, `bench run --device cuda` prints one line saying the GPU copy stage
    is skipped, and measures the rest."""
    import subprocess
    import sys
    from pathlib import Path

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the stage runs instead")
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "bench", "run", "--corpus", str(corpus("gray8")), "--output", str(out),
                        "--layouts", "hdf5", "--cache", "asis", "--epochs", "1", "--no-naive", "--no-sample-latency",
                        "--device", "cuda", "--quiet"], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if "--device" in ln or "CUDA" in ln or "GPU" in ln]
    assert len(lines) == 1, lines
    assert lines[0].startswith("note: --device cuda: no CUDA device here") and "copy stage is skipped" in lines[0]
    res = Results.load(out)
    assert all(run.device is None for run in res.runs) and res.floors.h2d_bytes == 0


def test_the_dataloader_speed_harness_prints_every_row(corpus, capsys):
    from bench.speed import dataloader as dataloader_speed

    assert dataloader_speed.main(["--corpus", str(corpus("gray8")), "--rounds", "2", "--batch-size", "4",
                                  "--group", "auto,2", "--no-tensor-ceilings"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("\nrow "):]
    for row in ("ours", "torch-batch group=1", "torch-batch group=8", "torch-batch group=2", "ceiling packed group=1",
                "ceiling packed group=8", "ceiling packed group=2"):
        assert f"\n{row} " in table, row
    assert out.count("round 1 ") == 7 and "ceiling tensor" not in out
    with pytest.raises(UsageError, match="--group takes"):
        dataloader_speed.main(["--corpus", str(corpus("gray8")), "--group", "0"])
