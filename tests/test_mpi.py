"""MPI: messages between ranks, sharding, rank 0's aggregate, and real `mpirun -n 2` runs."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bench.mpi import (aggregate_epoch, auto_comm, check_coverage, coverage, mpirun_command, pack,
                       percentiles_ms, shard_index, under_mpirun, unpack)
from generator.errors import LayoutbenchError, UsageError

try:
    MPIRUN = mpirun_command(2)
except UsageError as exc:
    MPIRUN, WHY = None, str(exc)
needs_mpirun = pytest.mark.skipif(MPIRUN is None, reason=f"mpirun is not installed ({MPIRUN is None and WHY}); "
                                                         f"`make install-mpi` installs it")
REPO = Path(__file__).resolve().parents[1]


def mpirun(args, timeout=120):
    """Run under mpirun -n 2 from the repo; a hang fails the test instead of the suite."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
    return subprocess.run([*MPIRUN, sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_pack_round_trips_arrays_and_json_values():
    obj = {"rank": 1, "host": "n1", "seconds": 0.25, "ok": True, "none": None, "scalar": np.float32(1.5),
           "indices": np.arange(10, dtype=np.int64)[::-1], "lat": np.random.default_rng(0).random((3, 4)),
           "nested": [{"u16": np.array([1, 65535], np.uint16)}, "text", np.int64(7)], "empty": np.zeros(0)}
    back = unpack(pack(obj))
    assert back["rank"] == 1 and back["host"] == "n1" and back["ok"] is True and back["none"] is None
    assert back["scalar"] == 1.5 and back["nested"][1:] == ["text", 7]
    for key in ("indices", "lat", "empty"):
        assert back[key].dtype == np.asarray(obj[key]).dtype and np.array_equal(back[key], obj[key])
    assert np.array_equal(back["nested"][0]["u16"], [1, 65535]) and back["nested"][0]["u16"].dtype == np.uint16


@pytest.mark.parametrize("bad", [np.array([object()]), {1: "int key"}, {"x": {1, 2}}, {"__ndarray__": 0}])
def test_pack_refuses_what_json_and_raw_buffers_cannot_carry(bad):
    with pytest.raises(TypeError):
        pack(bad)


def test_shard_shift_rotates_every_rank_through_every_shard():
    world = 4
    assert [shard_index(r, world, epoch=5) for r in range(world)] == [0, 1, 2, 3]  # no shift
    for epoch in range(6):
        shards = [shard_index(r, world, epoch, shift=1) for r in range(world)]
        assert sorted(shards) == list(range(world))  # a permutation: every shard read once
        assert shards[0] == epoch % world
    assert [shard_index(0, world, e, shift=2) for e in range(4)] == [0, 2, 0, 2]


def test_coverage_counts_missing_duplicated_and_out_of_range():
    ok = coverage([np.array([0, 2, 4]), np.array([1, 3])], 5)
    assert ok["exactly_once"] and ok["read"] == 5 and ok["missing"] == 0
    bad = coverage([np.array([0, 1, 1]), np.array([1, 9])], 4)
    assert not bad["exactly_once"]
    assert (bad["missing"], bad["duplicates"], bad["out_of_range"]) == (2, 2, 1)
    assert bad["first_missing"] == [2, 3] and bad["first_duplicated"] == [1]
    with pytest.raises(LayoutbenchError, match=r"hdf5 epoch 3: .*\(2 missing, e.g. \[2, 3\]; 2 read twice"):
        check_coverage(bad, "hdf5", 3)
    check_coverage(ok, "hdf5", 3)


def test_aggregate_is_all_bytes_over_the_slowest_rank():
    rng = np.random.default_rng(1)
    lat0, lat1 = rng.random(60), rng.random(40) * 3
    records = [
        {"rank": 0, "host": "a", "seconds": 1.0, "samples": 60, "bytes": 1_000_000, "indices": np.arange(0, 60),
         "sample_seconds": lat0, "batch_seconds": None},
        {"rank": 1, "host": "b", "seconds": 2.0, "samples": 40, "bytes": 3_000_000, "indices": np.arange(60, 100),
         "sample_seconds": lat1},
    ]
    agg = aggregate_epoch(records, 100)
    assert agg["mb_per_s"] == pytest.approx(2.0)  # 4 MB / 2 s, not the mean of 1 and 1.5 MB/s
    assert agg["samples_per_s"] == pytest.approx(50.0)
    assert agg["rank_mb_per_s"] == {"min": pytest.approx(1.0), "max": pytest.approx(1.5)}
    assert agg["rank_seconds"] == {"min": 1.0, "max": 2.0}
    assert agg["nodes"] == 2 and agg["coverage"]["exactly_once"]
    both = np.concatenate([lat0, lat1])
    assert agg["sample_latency_ms"]["p99"] == pytest.approx(np.percentile(both, 99) * 1e3)
    assert agg["sample_latency_ms"]["max"] == pytest.approx(both.max() * 1e3)
    assert agg["sample_latency_ms"]["count"] == 100 and agg["batch_latency_ms"] == {}
    assert percentiles_ms([0.001, 0.002])["p50"] == pytest.approx(1.5)


def test_launcher_detection_and_single_process_needs_no_mpi():
    assert under_mpirun({"OMPI_COMM_WORLD_SIZE": "2"}) and under_mpirun({"PMI_RANK": "0"})
    assert not under_mpirun({"PATH": "/bin"})
    code = ("import sys, bench.mpi, bench.comm; c = bench.mpi.auto_comm(); "
            "assert (c.rank, c.size) == (0, 1) and 'mpi4py' not in sys.modules, sys.modules.get('mpi4py')")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@needs_mpirun
def test_mpirun_collectives_carry_arrays_between_two_ranks(tmp_path):
    script = tmp_path / "collectives.py"
    script.write_text(textwrap.dedent("""
        import json, sys
        import numpy as np
        from bench.mpi import MPIComm, auto_comm, node_leader, under_mpirun
        comm = auto_comm()
        assert isinstance(comm, MPIComm) and under_mpirun()
        got = comm.gather({"rank": comm.rank, "data": np.full(3 + comm.rank, comm.rank, np.int32)})
        plan = comm.bcast({"order": np.arange(5)[::-1].copy(), "who": "root"} if comm.rank == 0 else None)
        leader = node_leader(comm)
        comm.barrier()
        print(json.dumps({"rank": comm.rank, "size": comm.size, "leader": leader,
                          "gathered": None if got is None else [[g["rank"], g["data"].tolist()] for g in got],
                          "plan": [plan["who"], plan["order"].tolist()]}))
    """))
    proc = mpirun([str(script)])
    assert proc.returncode == 0, proc.stderr
    lines = sorted((json.loads(line) for line in proc.stdout.splitlines()), key=lambda d: d["rank"])
    assert [d["rank"] for d in lines] == [0, 1] and {d["size"] for d in lines} == {2}
    assert lines[0]["gathered"] == [[0, [0, 0, 0]], [1, [1, 1, 1, 1]]] and lines[1]["gathered"] is None
    assert all(d["plan"] == ["root", [4, 3, 2, 1, 0]] for d in lines)
    assert [d["leader"] for d in lines] == [True, False]  # one host: rank 0 leads it


@needs_mpirun
def test_mpirun_generation_writes_the_same_corpus_as_one_process(tmp_path):
    # 256x256x1 = 64 KiB samples: chunks of 128, so 300 samples are 3 chunks over 2 ranks.
    common = ["--shape", "256x256x1", "--count", "300", "--quiet", "--workers", "1"]
    proc = mpirun(["-m", "bench.mpi", "generate", *common, "--out", str(tmp_path / "mpi")])
    assert proc.returncode == 0, proc.stderr
    single = subprocess.run([sys.executable, "-m", "generator", *common, "--out", str(tmp_path / "one")],
                            cwd=REPO, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    a, b = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("one", "mpi"))
    assert a["samples"] == b["samples"] and sorted(b["layouts"]) == ["files", "hdf5", "lmdb"]
    assert b["layouts"]["files"]["mpi_ranks"] == 2
    assert b["layouts"]["files"]["samples_per_rank"] == [128 + 44, 128]  # chunks 0 and 2 on rank 0, chunk 1 on rank 1
    one, mpi = sorted((tmp_path / "one/files").rglob("*.tif")), sorted((tmp_path / "mpi/files").rglob("*.tif"))
    assert [p.relative_to(tmp_path / "one") for p in one] == [p.relative_to(tmp_path / "mpi") for p in mpi]
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(one, mpi))
    assert (tmp_path / "one/corpus.h5").read_bytes() == (tmp_path / "mpi/corpus.h5").read_bytes()


@needs_mpirun
def test_mpirun_generation_error_is_one_line_from_rank_0(tmp_path):
    (tmp_path / "notacorpus.txt").write_text("mine")
    proc = mpirun(["-m", "bench.mpi", "generate", "--preset", "mnist", "--count", "10", "--out", str(tmp_path)])
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "is not empty and holds no layoutbench corpus" in errors[0]
