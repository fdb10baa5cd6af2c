"""A corpus in S3 read, verified and measured through the real bundled server (SeaweedFS's weed,
one per session: tests/conftest.py s3_server): the S3 readers bit-exact against the local ones with
the requests expected, `loaders verify s3://...`, and `bench run --corpus s3://...` warm and cold
end to end (every index once, the payload's bytes, the store's request counts per epoch, the
server's files evicted and checked), and each refusal in one line."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import S3_BUCKET

ROOT = Path(__file__).resolve().parent.parent
LAYOUTS = ("files", "tar", "npy")


@pytest.fixture(scope="module")
def s3corpus(s3_server, corpus):
    """(local corpus dir, its s3:// URL, the server's env): the gray8 corpus uploaded once."""
    from generator.objectstore.store import S3Config, Store
    from generator.objectstore.transfer import upload

    local = corpus("gray8")
    url = f"s3://{S3_BUCKET}/gray8"
    upload(local, url, quiet=True, store=Store(url, S3Config.from_env(s3_server.env())))
    return local, url, s3_server.env()


@pytest.fixture
def s3env(s3corpus, monkeypatch):
    for k in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(k)
    for k, v in s3corpus[2].items():
        monkeypatch.setenv(k, v)
    return s3corpus


def _run(args, env, timeout=240):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    clean.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=clean, capture_output=True, text=True,
                          timeout=timeout)


def _one_line(p, *says):
    assert p.returncode != 0, p.stdout
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    for s in says:
        assert s in lines[0], p.stderr


@pytest.mark.parametrize("layout", LAYOUTS)
def test_s3_readers_are_bit_exact_with_the_requests_expected(s3env, layout):
    from loaders import open_corpus

    local, url, _ = s3env
    remote, near = open_corpus(url, layout), open_corpus(local, layout)
    try:
        idx = np.random.default_rng(3).permutation(len(near))
        before = remote.store.stats()
        got = remote.read_many(idx)
        used = remote.store.stats() - before
        assert [bytes(p) for p in got] == [bytes(p) for p in near.read_many(idx)]
        # one read_many of every sample: the samples that lie back to back in an object come in one
        # GET (npy: data.bin; tar: each shard), loose objects one each; plus the indexes and spec.json
        expected = {"files": 37, "tar": 2 * remote.nshards if layout == "tar" else 0, "npy": 1 + 2}[layout]
        assert used.gets == expected and used.retries == 0
        a, _ = remote.read_batch(idx[:10])
        b, _ = near.read_batch(idx[:10])
        assert np.array_equal(a, b)
        assert np.array_equal(remote.stored_labels(), near.stored_labels())
    finally:
        remote.close()
        near.close()


def test_verify_checks_a_corpus_in_s3_and_names_a_damaged_object(s3env, tmp_path):
    local, url, env = s3env
    p = _run(["-m", "loaders", "verify", url, "--quiet"], env)
    assert p.returncode == 0, p.stdout + p.stderr
    for layout in LAYOUTS:
        assert f"{layout}: all 37 samples match" in p.stdout
    assert "the zarr layout is not read over S3 yet" in p.stderr  # the other layouts: left out, said
    # a damaged copy: one loose object's bytes changed
    from generator.objectstore.store import Store
    from generator.objectstore.transfer import upload
    from loaders import open_corpus

    bad = f"s3://{S3_BUCKET}/gray8-damaged"
    upload(local, bad, quiet=True)
    name = open_corpus(bad, "files").name(5)
    data = bytearray(Store(bad).get(name))
    data[-1] ^= 0xFF
    Store(bad).put(name, bytes(data))
    p = _run(["-m", "loaders", "verify", bad, "--layouts", "files", "--quiet"], env)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"MISMATCH files sample 5 at {bad}/{name}" in p.stdout and "1 of 37 samples do not match" in p.stdout


def test_verify_refuses_a_layout_not_read_over_s3_in_one_line(s3env):
    _, url, env = s3env
    p = _run(["-m", "loaders", "verify", url, "--layouts", "zarr"], env)
    _one_line(p, url, "zarr layout is not read over S3 yet", "files, tar, npy")


def _bench(url, env, tmp_path, *extra):
    out = tmp_path / "results.json"
    p = _run(["-m", "bench", "run", "--corpus", url, "--output", str(out), "--layouts", ",".join(LAYOUTS),
              "--epochs", "2", "--repeats", "1", "--batch-size", "8", "--workers", "0,2", "--quiet", *extra], env)
    assert p.returncode == 0, p.stdout + p.stderr
    from bench.results.result import Results

    return Results.load(out), p


@pytest.mark.parametrize("cache", ["warm", "cold"])
def test_bench_run_of_a_corpus_in_s3_end_to_end(s3env, tmp_path, cache):
    local, url, env = s3env
    from generator.manifest import read_manifest

    manifest = read_manifest(local)
    payload = sum(manifest.sizes)
    res, p = _bench(url, env, tmp_path, "--cache", cache)
    assert res.corpus["path"] == url and res.metadata["filesystem"]["storage"] == "s3"
    assert {(r.layout, r.config.workers) for r in res.runs} == {(lay, w) for lay in LAYOUTS for w in (0, 2)}
    shards = manifest.layouts["tar"]["shards"]
    for run in res.runs:
        assert run.storage == "s3" and run.cache == cache
        for e in run.epochs:
            assert e.indices_ok and e.samples == 37 and e.payload_bytes == payload, (run.layout, e)
            assert e.cache_ok, (run.layout, cache, e.residency_before)
            if cache == "cold":
                assert e.residency_before <= 0.01  # the server's files evicted, and checked
            else:
                assert e.residency_before >= 0.99 and e.residency_after >= 0.99
            s3 = e.s3
            assert s3 is not None and s3.retries == 0 and s3.ttfb_p50_s is not None
            if run.layout == "files":  # one GET per sample, nothing else
                assert s3.gets == 37 and s3.get_bytes == payload
            elif run.layout == "tar":  # a ranged GET per sample (header + payload), neighbours in a batch
                # merged (tests/test_s3_layouts.py counts them exactly); the indexes when opened again
                assert 37 // 8 <= s3.gets <= 37 + shards and s3.get_bytes >= payload + 512 * 37
            else:  # npy: a ranged GET per sample of data.bin (neighbours merged); spec.json and offsets.npy
                assert 37 // 8 <= s3.gets <= 37 + 2
    floors = [f for f in res.floors.at if f.way == "s3-get"]
    assert {(f.layout, f.cache) for f in floors} == {(lay, cache) for lay in LAYOUTS}
    for f in floors:  # the GETs the readers make: one per loose file, a batch's neighbours merged in shards
        assert (f.reads == 37 and f.bytes == payload) if f.layout == "files" else (37 // 8 <= f.reads <= 37
                                                                                   and f.bytes >= payload), f
    assert "results:" in p.stdout


def test_bench_run_refuses_a_layout_not_read_over_s3_in_one_line(s3env, tmp_path):
    _, url, env = s3env
    p = _run(["-m", "bench", "run", "--corpus", url, "--output", str(tmp_path / "r.json"), "--layouts", "zarr"], env)
    _one_line(p, url, "zarr layout is not read over S3 yet", "files, tar, npy")


def test_a_dead_endpoint_is_one_line(s3env, tmp_path):
    _, url, env = s3env
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    p = _run(["-m", "bench", "run", "--corpus", url, "--output", str(tmp_path / "r.json"), "--cache", "warm"], dead)
    _one_line(p, f"{url}/manifest.json", f"cannot connect to the S3 endpoint http://127.0.0.1:{port}")
    p = _run(["-m", "loaders", "verify", url], dead)
    _one_line(p, f"{url}/manifest.json", "cannot connect")


class Relay:
    """A plain TCP relay to the server: a store at an endpoint this host cannot trace to a weed's files."""

    def __init__(self, target: int):
        self.target = target
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def test_cold_is_refused_where_the_store_cache_cannot_be_evicted_and_warm_runs(s3env, s3_server, tmp_path):
    _, url, env = s3env
    relay = Relay(s3_server.ports["s3.port"])
    try:
        remote = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{relay.port}"}
        p = _run(["-m", "bench", "run", "--corpus", url, "--output", str(tmp_path / "r.json"), "--cache", "cold",
                  "--layouts", "files"], remote)
        _one_line(p, "--cache cold", url, "nothing can be evicted", "--cache warm or asis")
        res, _ = _bench(url, remote, tmp_path, "--cache", "warm")
        for run in res.runs:
            for e in run.epochs:  # warm through a store whose cache cannot be seen: this client's own pass
                assert e.indices_ok and e.cache_ok and e.residency_before == 1.0 and e.s3.gets >= 37 // 8
        assert res.metadata["filesystem"]["server_dir"] is None
    finally:
        relay.sock.close()


def test_results_without_the_s3_part_load_and_with_it_round_trip(s3env, tmp_path):
    import json

    from bench.results.result import Results

    _, url, env = s3env
    res, _ = _bench(url, env, tmp_path, "--cache", "warm", "--layouts", "files", "--workers", "0")
    path = tmp_path / "results.json"
    assert all(e.s3 is not None for r in Results.load(path).runs for e in r.epochs)
    data = json.loads(path.read_text())
    assert data["version"] == 3
    for run in data["runs"]:
        for e in run["epochs"]:
            del e["s3"]  # as a file written before the part existed
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    assert all(e.s3 is None for r in Results.load(old).runs for e in r.epochs)


def test_without_the_s3_extra_an_s3_corpus_is_one_line(tmp_path):
    from conftest import s3_missing

    if s3_missing() is None:
        pytest.skip("the s3 extra is installed here: this checks an install without it")
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    p = _run(["-m", "bench", "run", "--corpus", "s3://lbbench/c", "--output", str(tmp_path / "r.json")], env)
    _one_line(p, "obstore", "s3")
    p = _run(["-m", "loaders", "verify", "s3://lbbench/c"], env)
    _one_line(p, "obstore", "s3")


def test_a_missing_object_mid_run_is_one_line_naming_the_sample(s3env, tmp_path):
    from generator.objectstore.store import Store
    from generator.objectstore.transfer import upload
    from loaders import open_corpus

    local, _, env = s3env
    url = f"s3://{S3_BUCKET}/gray8-missing"
    upload(local, url, quiet=True)
    name = open_corpus(url, "files").name(30)  # past the first batch: read inside an epoch
    Store(url).delete(name)
    p = _run(["-m", "bench", "run", "--corpus", url, "--output", str(tmp_path / "r.json"), "--cache", "warm",
              "--layouts", "files", "--batch-size", "8"], env)
    _one_line(p, f"files sample 30 at {url}/{name}", "missing (no such object")


def test_the_s3_floor_fetches_what_the_reader_fetches(s3env, tmp_path):
    """In the shards order, tar streams whole shards: its floor is one GET a shard. A staged
    layout (lmdb) reads a local copy: no GET floor, so no x floor."""
    from bench.results.result import summarize
    from generator.manifest import read_manifest

    local, url, env = s3env
    manifest = read_manifest(local)
    res, _ = _bench(url, env, tmp_path, "--cache", "warm", "--layouts", "tar", "--shuffle", "shards")
    floors = [f for f in res.floors.at if f.way == "s3-get"]
    assert floors and all(f.layout == "tar" and f.reads == manifest.layouts["tar"]["shards"] for f in floors)
    assert all(r.epochs[-1].s3.gets <= manifest.layouts["tar"]["shards"] * 2 for r in res.runs)
    res, p = _bench(url, env, tmp_path, "--cache", "warm", "--layouts", "lmdb", "--overwrite")
    assert not [f for f in res.floors.at if f.way == "s3-get"]
    assert all(summarize(r, res.floors, res.corpus)["floor_ratio"] is None for r in res.runs)
