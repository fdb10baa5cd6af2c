"""MPI: messages between ranks, sharding, rank 0's aggregate, and real `mpirun -n 2` runs."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from generator.layouts import layout_ids

from bench.run.mpi import mpirun_command, pack, unpack
from bench.run.epochs import shard_rank
from generator.errors import UsageError

try:
    MPIRUN = mpirun_command(2)
except UsageError as exc:
    MPIRUN, WHY = None, str(exc)
needs_mpirun = pytest.mark.skipif(MPIRUN is None, reason=f"mpirun is not installed ({MPIRUN is None and WHY}); "
                                                         f"`make install-mpi` installs it")
REPO = Path(__file__).resolve().parents[1]


def mpirun(args, timeout=120):
    """Run under mpirun -n 2 from the repo; a hang fails the test (and ends every rank) instead of
    stalling the suite."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
    proc = subprocess.Popen([*MPIRUN, sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # mpirun and the ranks it started
        out, err = proc.communicate()
        pytest.fail(f"mpirun {' '.join(args)} did not finish in {timeout} s:\n{err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


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
    assert [shard_rank(r, world, epoch=5, shift=0) for r in range(world)] == [0, 1, 2, 3]
    for epoch in range(6):
        shards = [shard_rank(r, world, epoch, shift=1) for r in range(world)]
        assert sorted(shards) == list(range(world)) and shards[0] == epoch % world  # a permutation


def test_single_process_needs_no_mpi():
    code = ("import sys, bench.run.mpi, bench.run.comm; c = bench.run.comm.get_comm('auto'); "
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
        from bench.run.comm import get_comm
        from bench.run.mpi import MPIComm
        comm = get_comm("auto")
        assert isinstance(comm, MPIComm)  # the launcher was detected
        got = comm.gather({"rank": comm.rank, "data": np.full(3 + comm.rank, comm.rank, np.int32)})
        plan = comm.bcast({"order": np.arange(5)[::-1].copy(), "who": "root"} if comm.rank == 0 else None)
        comm.barrier()
        print(json.dumps({"rank": comm.rank, "size": comm.size,
                          "gathered": None if got is None else [[g["rank"], g["data"].tolist()] for g in got],
                          "plan": [plan["who"], plan["order"].tolist()]}))
    """))
    proc = mpirun([str(script)])
    assert proc.returncode == 0, proc.stderr
    lines = sorted((json.loads(line) for line in proc.stdout.splitlines()), key=lambda d: d["rank"])
    assert [d["rank"] for d in lines] == [0, 1] and {d["size"] for d in lines} == {2}
    assert lines[0]["gathered"] == [[0, [0, 0, 0]], [1, [1, 1, 1, 1]]] and lines[1]["gathered"] is None
    assert all(d["plan"] == ["root", [4, 3, 2, 1, 0]] for d in lines)


@needs_mpirun
def test_mpirun_generation_writes_the_same_corpus_as_one_process(tmp_path):
    # 256x256x1 = 64 KiB samples: the files writer's parts for 2 ranks are 8 parts of 38 (the last 34),
    # and rank r writes parts r, r+2, ...: 4 x 38 on rank 0, 3 x 38 + 34 on rank 1.
    common = ["--shape", "256x256x1", "--count", "300", "--quiet", "--workers", "1"]
    proc = mpirun(["-m", "bench.cli.mpi", "generate", *common, "--out", str(tmp_path / "mpi")])
    assert proc.returncode == 0, proc.stderr
    single = subprocess.run([sys.executable, "-m", "generator", *common, "--out", str(tmp_path / "one")],
                            cwd=REPO, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    a, b = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("one", "mpi"))
    assert a["samples"] == b["samples"] and sorted(b["layouts"]) == sorted(layout_ids(available=True))
    assert b["layouts"]["files"]["mpi_ranks"] == 2
    assert b["layouts"]["files"]["samples_per_rank"] == [4 * 38, 3 * 38 + 34]
    one, mpi = sorted((tmp_path / "one/files").rglob("*.tif")), sorted((tmp_path / "mpi/files").rglob("*.tif"))
    assert [p.relative_to(tmp_path / "one") for p in one] == [p.relative_to(tmp_path / "mpi") for p in mpi]
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(one, mpi))
    assert (tmp_path / "one/corpus.h5").read_bytes() == (tmp_path / "mpi/corpus.h5").read_bytes()
    for sharded in ("tar", "tfrecord"):  # parallel writers: shards shared out by rank, the same bytes
        if sharded in b["layouts"]:
            assert b["layouts"][sharded]["mpi_ranks"] == 2
            one, mpi = (sorted((tmp_path / d / sharded).iterdir()) for d in ("one", "mpi"))
            assert [p.name for p in one] == [p.name for p in mpi] and len(one) > 2
            assert all(p.read_bytes() == q.read_bytes() for p, q in zip(one, mpi))


@needs_mpirun
def test_mpirun_generation_error_is_one_line_from_rank_0(tmp_path):
    (tmp_path / "notacorpus.txt").write_text("mine")
    proc = mpirun(["-m", "bench.cli.mpi", "generate", "--preset", "mnist", "--count", "10", "--out", str(tmp_path)])
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "is not empty and holds no layoutbench corpus" in errors[0]


@needs_mpirun
def test_mpirun_bench_run_aggregates_two_ranks(tmp_path):
    made = subprocess.run([sys.executable, "-m", "generator", "--preset", "mnist", "--count", "300", "--quiet",
                           "--workers", "1", "--layouts", "files,hdf5,lmdb", "--out", str(tmp_path / "c")], cwd=REPO,
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    out = tmp_path / "r.json"
    proc = mpirun(["-m", "bench", "run", "--corpus", str(tmp_path / "c"), "--output", str(out), "--cache", "asis",
                   "--epochs", "3", "--shard-shift", "1", "--no-naive", "--quiet"])
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    payload = sum(json.loads((tmp_path / "c/manifest.json").read_text())["samples"]["size"])
    layouts = json.loads((tmp_path / "c/manifest.json").read_text())["layouts"]
    assert res["metadata"]["ranks"] == 2 and [r["layout"] for r in res["runs"]] == list(layouts)
    for run in res["runs"]:
        assert run["ranks"] == 2 and run["nodes"] == 1 and run["indices_ok"]
        counted = [e for e in run["epochs"] if not e["timing"]]
        steady = [e for e in counted if not e["first"]] or counted  # a shard shift restarts the loader
        assert run["rank_mb_per_s"]["n"] == 2 * len(steady)
        for e in run["epochs"]:
            ranks = e["ranks"]
            assert sorted(r["rank"] for r in ranks) == [0, 1] and [r["samples"] for r in ranks] == [150, 150]
            assert e["samples"] == 300 and e["payload_bytes"] == sum(r["payload_bytes"] for r in ranks) == payload
            assert e["wall_s"] == max(r["wall_s"] for r in ranks)  # the slowest rank ends the epoch
            assert len(e["batch_ns"]) == 10  # 5 batches of <= 32 per rank, merged
            if e["timing"]:
                assert len(e["sample_ns"]) == 300  # every rank's raw per-sample latencies, merged
                # and their read/decode split, in the same order, with both ranks' CPU seconds
                split = e["split"]
                assert len(split["read_ns"]) == len(split["decode_ns"]) == 300 and split["read_cpu_s"] > 0
                assert [r + d for r, d in zip(split["read_ns"], split["decode_ns"])] == e["sample_ns"]
