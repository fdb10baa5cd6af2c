"""A run's identity (RunSpec), the regimes as objects, the Storage seam and the one epoch loop."""

import dataclasses

import pytest

from bench.probe import probes
from bench.results.result import RUN_CACHES, RUN_KINDS, Results, RunConfig
from bench.results.spec import LOADER_KINDS, REGIMES, STORAGES, RunSpec, loaders_for, naive_name
from bench.run import capped, epochs, regime
from bench.run.config import BenchConfig
from bench.run.epochs import epoch_plan
from bench.run.runner import plan_runs, run_bench
from bench.run.storage import LocalStorage
from bench.run.storages import STORAGE_CLASSES, storage_for
from generator.build import generate
from generator.manifest import read_manifest
from generator.spec import Spec
from loaders.registry import readers


def test_names_are_derived_from_the_spec():
    assert RunSpec("lmdb").name == "lmdb"
    assert RunSpec("lmdb", loader="naive").name == naive_name("lmdb") == "naive-lmdb"
    assert RunSpec("tar", loader="torch-batch", workers=2).name == "torch-batch-tar"
    assert RunSpec("tar", loader="torch-batch").torch_dataset == "batch"
    assert RunSpec("tar").torch_dataset is None
    assert {RunSpec("x", loader=k).kind for k in LOADER_KINDS} == set(RUN_KINDS)


@pytest.mark.parametrize("kwargs, message", [
    (dict(loader="dali"), "unknown loader"), (dict(storage="nfs"), "unknown storage"),
    (dict(regime="hot"), "unknown cache regime"), (dict(workers=-1), "workers"),
    (dict(loader="torch-sample", decode=False), "always decodes"), (dict(loader="naive", workers=2), "0 workers"),
])
def test_impossible_runs_cannot_be_made(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RunSpec("files", **kwargs)


def test_every_vocabulary_is_defined_once():
    assert RUN_CACHES == REGIMES
    assert set(STORAGE_CLASSES) == set(STORAGES)
    assert set(regime.REGIME_CLASSES) | {capped.Capped.name} == set(REGIMES)
    assert loaders_for("ours") == ("ours",) and loaders_for("torch") == ("torch-sample", "torch-batch")
    assert loaders_for("both") == ("ours", "torch-sample", "torch-batch")


def test_the_epoch_plan_of_each_kind_of_run():
    rc = RunConfig(epochs=3, sample_latency=True)
    assert epoch_plan(RunSpec("npy"), rc) == [(0, False), (1, False), (2, False), (3, True)]
    assert epoch_plan(RunSpec("npy", loader="naive"), rc) == [(0, False)]
    assert epoch_plan(RunSpec("npy", loader="torch-sample"), rc) == [(0, False), (1, False), (2, False)]
    assert epoch_plan(RunSpec("npy"), dataclasses.replace(rc, sample_latency=False))[-1] == (2, False)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("spec-corpus")
    generate(root, Spec(height=16, width=16, channels=1, count=40, seed=2), ["files", "npy"], workers=1,
             progress=False)
    return root


def test_the_plan_is_a_list_of_specs_and_the_results_give_them_back(small, tmp_path):
    cfg = BenchConfig(corpus=small, output=tmp_path / "r.json", layouts=("files", "npy"), caches=("cold", "warm"),
                      workers=(0, 1), naive=True, run=RunConfig(epochs=1, batch_size=8, sample_latency=False))
    planned = plan_runs(cfg, read_manifest(small))
    naive = [name for name in ("files", "npy") if readers()[name].naive]
    assert len(planned) == len(set(planned)) == 2 * (2 * 2 + len(naive))  # per cache: 2 layouts x 2 workers + naive
    assert [s for s in planned if s.naive] == [RunSpec(n, "naive", regime=c) for c in ("cold", "warm") for n in naive]
    assert planned[:4] == [RunSpec("files", regime="cold"), RunSpec("npy", regime="cold"),
                           RunSpec("files", regime="cold", workers=1), RunSpec("npy", regime="cold", workers=1)]
    res = run_bench(cfg)
    res.save(cfg.output)
    back = Results.load(cfg.output)
    assert [r.spec for r in back.runs] == planned  # identity survives the results file
    assert all(r.layout == r.spec.name and r.reads == r.spec.layout and r.storage == "local" for r in back.runs)


def test_local_storage_makes_and_checks_the_cache_states(small):
    store = storage_for("local", small, "fadvise")
    assert isinstance(store, LocalStorage)
    reader = store.open("npy")
    try:
        files = store.files(reader)
        assert files and all(f.is_file() for f in files)
        assert store.settle("warm", files).ok and store.residency(files) >= 0.99
        state = store.settle("cold", files)
        assert state.ok and state.method == "fadvise" and probes.residency(files).fraction <= 0.01
    finally:
        reader.close()


def test_the_warm_regime_marks_an_epoch_whose_cache_was_dropped_meanwhile(small):
    store = storage_for("local", small, "fadvise")
    warm = regime.regime_for("warm", store)
    reader = store.open("npy")
    try:
        files = store.files(reader)
        state = warm.before(reader, files)
        assert state.ok
        probes.evict(files, "fadvise")  # another user drops the cache during the epoch
        after = warm.after(files, state)
        assert not after.ok and after.after <= 0.01
    finally:
        reader.close()


def test_the_cold_regime_closes_the_readers_handles_before_evicting(small):
    store = storage_for("local", small, "fadvise")
    reader = store.open("npy")
    reader.read(0)  # opens its handles / maps
    state = regime.regime_for("cold", store).before(reader, store.files(reader))
    assert state.ok and state.residency <= 0.01
    reader.close()


def test_every_run_goes_through_the_one_epoch_loop(small, tmp_path, monkeypatch):
    """Every epoch of every kind of run is timed by run_epochs (the capped child's too: see
    test_capped's OOM test, which makes its loader grow through the same function)."""
    seen = []
    real = epochs.time_batches

    def counted(*args, **kw):
        seen.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(epochs, "time_batches", counted)
    cfg = BenchConfig(corpus=small, output=tmp_path / "r.json", layouts=("files",), caches=("cold", "warm"),
                      workers=(0,), naive=True, run=RunConfig(epochs=2, batch_size=8, sample_latency=True))
    res = run_bench(cfg)
    assert sorted((r.layout, r.cache, len(r.epochs)) for r in res.runs) == [
        ("files", "cold", 3), ("files", "warm", 3), ("naive-files", "cold", 1), ("naive-files", "warm", 1)]
    assert len(seen) == sum(len(r.epochs) for r in res.runs)
