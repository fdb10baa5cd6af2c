"""An S3 prefix as a store of named objects: list, get, get_range, put, head, every request counted.

    store = Store("s3://bucket/corpora/mnist")          # endpoint and credentials as boto3 finds them
    store.get("manifest.json"); store.get_range("tar/shard-00000.tar", 512, 1024)
    for chunk in store.get_stream("tar/shard-00000.tar"): ...   # one GET, bytes as they arrive
    store.stats()                                        # RequestStats: GETs, bytes, TTFB, retries

The client is obstore (Rust's object_store): 3-4x boto3's GETs per second against the local weed
server, for 1 KB and 150 KB objects, 1 and 8 threads ([docs/lab/2026-12-07-s3-client.md]).

Configuration follows boto3's conventions (`S3Config.from_env`): the endpoint from
AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else the profile's endpoint_url (none: AWS itself);
the keys from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN), else the profile
(AWS_PROFILE, else `default`) in AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials) or
AWS_CONFIG_FILE (~/.aws/config); the region from AWS_REGION, else AWS_DEFAULT_REGION, else the
profile's, else us-east-1.

Requests: obstore's own retries are off; ours retry 503 (SlowDown), 500/502/504, 429 and dropped
or timed-out connections with exponential backoff and jitter, and count every retry. A refused
connection, a 403 and a 404 are answered at once. Connect and read timeouts bound every request:
nothing waits forever. Every failure is one line (StoreError, ObjectMissing) naming the s3:// URL
of the object and the endpoint.
"""

from __future__ import annotations

import configparser
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from ..errors import LayoutbenchError, UsageError
from ..libraries import missing

CONNECT_TIMEOUT = 5.0  # seconds to open a connection
READ_TIMEOUT = 30.0  # seconds without a byte from an open request
MAX_RETRIES = 5
BACKOFF = 0.1  # the first retry's mean wait, doubled each retry, at most MAX_BACKOFF
MAX_BACKOFF = 5.0
RETRY_STATUS = {429, 500, 502, 503, 504}
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


class StoreError(LayoutbenchError):
    """A request that failed: one line naming the s3:// URL, the endpoint and what to do."""


class ObjectMissing(StoreError):
    """The object (or the bucket it would be in) does not exist."""


class BucketMissing(ObjectMissing):
    """The bucket does not exist."""


@dataclass(frozen=True)
class S3Url:
    bucket: str
    prefix: str  # no leading or trailing slash; "" for the bucket's root

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def of(self, name: str) -> str:
        """The s3:// URL of object `name` under this prefix."""
        return f"s3://{self.bucket}/{self.key(name)}"


def is_s3_url(text) -> bool:
    return isinstance(text, str) and text.lower().startswith("s3:")


def refuse_remote_out(out, command: str = "python -m generator") -> None:
    """A UsageError when a corpus directory option names an S3 URL: the generator writes local files
    (a folder named `s3:` otherwise); generate locally, then upload."""
    if is_s3_url(out):
        raise UsageError(f"--out {out}: {command} writes a local directory, not an S3 prefix: generate into a "
                         f"local --out DIR, then copy it with `python -m generator.objectstore upload DIR {out}`")


def parse_url(url: str) -> S3Url:
    """s3://bucket[/prefix] -> S3Url; anything else is one line saying what an S3 URL looks like."""
    m = re.match(r"^s3://([^/]+)/*(.*?)/*$", url or "")
    if not m:
        raise UsageError(f"{url!r} is not an S3 URL: write s3://BUCKET/PREFIX")
    bucket, prefix = m.groups()
    if not _BUCKET.match(bucket):
        raise UsageError(f"{url}: {bucket!r} is not a valid bucket name (3-63 characters: lower-case letters, "
                         f"digits, dots and hyphens)")
    if "//" in prefix or any(part in (".", "..") for part in prefix.split("/")):
        raise UsageError(f"{url}: the prefix has an empty, '.' or '..' part")
    return S3Url(bucket, prefix)


@dataclass(frozen=True)
class S3Config:
    endpoint: str | None  # None: AWS S3 itself
    access_key: str | None
    secret_key: str | None
    session_token: str | None
    region: str
    source: str  # where the credentials came from, for messages

    @classmethod
    def from_env(cls, environ=None) -> S3Config:
        env = os.environ if environ is None else environ
        profile_given = env.get("AWS_PROFILE")
        profile = profile_given or "default"
        creds = _ini(env.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"), profile)
        conf = _ini(env.get("AWS_CONFIG_FILE", "~/.aws/config"), profile if profile == "default" else f"profile {profile}")
        if profile_given and creds is None and conf is None:
            raise UsageError(f"AWS_PROFILE={profile_given}: no such profile in "
                             f"{env.get('AWS_SHARED_CREDENTIALS_FILE', '~/.aws/credentials')} or "
                             f"{env.get('AWS_CONFIG_FILE', '~/.aws/config')}")
        creds, conf = creds or {}, conf or {}
        if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
            access, secret, token = env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN")
            source = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        else:
            pick = creds if creds.get("aws_access_key_id") else conf
            access, secret = pick.get("aws_access_key_id"), pick.get("aws_secret_access_key")
            token = pick.get("aws_session_token")
            source = f"profile {profile}" if access else "no credentials (unsigned requests)"
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or conf.get("endpoint_url") or None
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or conf.get("region") or "us-east-1"
        if endpoint and not re.match(r"^https?://[^/\s]+/?$", endpoint):
            raise UsageError(f"the S3 endpoint {endpoint!r} (AWS_ENDPOINT_URL) is not http(s)://HOST[:PORT]")
        return cls(endpoint.rstrip("/") if endpoint else None, access, secret, token, region, source)

    @property
    def where(self) -> str:
        return self.endpoint or f"AWS S3 ({self.region})"


def _ini(path: str, section: str) -> dict | None:
    p = Path(path).expanduser()
    if not p.is_file():
        return None
    parser = configparser.RawConfigParser()
    try:
        parser.read(p)
    except (configparser.Error, OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{p} is not a readable AWS config file: {' '.join(str(exc).split())[:200]}") from None
    return dict(parser[section]) if parser.has_section(section) else None


@dataclass(frozen=True)
class RequestStats:
    """What a store's requests did; an immutable snapshot (Store.stats()), subtractable. `gets` and
    `heads` are HTTP requests, `lists` listing pages; `puts` counts objects put (a file above 5 MiB
    goes up as one multipart upload: several requests, counted once); `retries` every request
    retried, whatever its kind."""

    gets: int = 0
    get_bytes: int = 0
    puts: int = 0
    put_bytes: int = 0
    heads: int = 0
    lists: int = 0
    retries: int = 0
    ttfb: tuple[float, ...] = field(default=(), repr=False)  # each successful GET's seconds to first byte

    def __sub__(self, other: RequestStats) -> RequestStats:
        """What happened between two snapshots of one store (`other` the earlier)."""
        return RequestStats(self.gets - other.gets, self.get_bytes - other.get_bytes, self.puts - other.puts,
                            self.put_bytes - other.put_bytes, self.heads - other.heads, self.lists - other.lists,
                            self.retries - other.retries, self.ttfb[len(other.ttfb):])

    @property
    def requests(self) -> int:
        return self.gets + self.puts + self.heads + self.lists

    def ttfb_quantile(self, q: float) -> float | None:
        if not self.ttfb:
            return None
        s = sorted(self.ttfb)
        return s[min(len(s) - 1, int(q * len(s)))]


class _Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.n = dict(gets=0, get_bytes=0, puts=0, put_bytes=0, heads=0, lists=0, retries=0)
        self.ttfb: list[float] = []

    def add(self, **kw):
        with self.lock:
            for k, v in kw.items():
                self.n[k] += v

    def snapshot(self) -> RequestStats:
        with self.lock:
            return RequestStats(**self.n, ttfb=tuple(self.ttfb))


def _status(exc: Exception) -> tuple[int | None, str | None, str | None]:
    """(HTTP status, S3 error code, HTTP error kind) read from an obstore error's text."""
    text = str(exc)
    status = re.search(r"status code: (\d{3})", text) or re.search(r"status: (\d{3})", text)
    code = re.search(r"<Code>(\w+)</Code>", text)
    kind = re.search(r"kind: (\w+)", text)
    return (int(status[1]) if status else None, code[1] if code else None, kind[1] if kind else None)


class Store:
    """The objects under one s3://bucket/prefix (see the module docstring). Thread-safe."""

    def __init__(self, url, config: S3Config | None = None, connect_timeout: float = CONNECT_TIMEOUT,
                 read_timeout: float = READ_TIMEOUT, max_retries: int = MAX_RETRIES, backoff: float = BACKOFF):
        problem = missing("the S3 store", ["obstore"], extra="s3")
        if problem:
            raise UsageError(problem)
        from obstore.store import S3Store

        self.url = url if isinstance(url, S3Url) else parse_url(url)
        self.config = config or S3Config.from_env()
        self.max_retries, self.backoff = max_retries, backoff
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        cfg = {"region": self.config.region}
        if self.config.endpoint:
            cfg["endpoint"] = self.config.endpoint
        if self.config.access_key:
            cfg.update(access_key_id=self.config.access_key, secret_access_key=self.config.secret_key)
            if self.config.session_token:
                cfg["session_token"] = self.config.session_token
        else:
            cfg["skip_signature"] = True
        options = {"connect_timeout": timedelta(seconds=connect_timeout),
                   "read_timeout": timedelta(seconds=read_timeout), "pool_idle_timeout": timedelta(seconds=20)}
        if self.config.endpoint and self.config.endpoint.startswith("http://"):
            options["allow_http"] = True
        self._store = S3Store(self.url.bucket, config=cfg, client_options=options, retry_config={"max_retries": 0})
        self._n = _Counters()

    def __repr__(self) -> str:
        return f"Store({str(self.url)!r} at {self.config.where})"

    def __reduce__(self):  # a worker process opens its own client
        return (Store, (self.url, self.config, self.connect_timeout, self.read_timeout, self.max_retries, self.backoff))

    def stats(self) -> RequestStats:
        return self._n.snapshot()

    # -- the requests
    def get(self, name: str, expected_size: int | None = None) -> bytes:
        """The whole object `name`; StoreError if it is not `expected_size` bytes (when given)."""
        data, size = self._get(name, None)
        if len(data) != size or (expected_size is not None and size != expected_size):
            want = size if expected_size is None or len(data) != size else expected_size
            raise StoreError(f"{self.url.of(name)}: truncated object: {len(data):,} bytes where "
                             f"{want:,} were expected (at {self.config.where}); upload it again")
        return data

    def get_range(self, name: str, start: int, length: int) -> bytes:
        """`length` bytes of object `name` from byte `start`; StoreError if the object ends before."""
        if start < 0 or length < 1:
            raise ValueError(f"bad range: start {start}, length {length}")
        data, size = self._get(name, (start, start + length))
        if len(data) != length:
            raise StoreError(f"{self.url.of(name)}: truncated object: bytes {start:,}..{start + length:,} asked for, "
                             f"the object has {size if size is not None else 'fewer'} bytes (at {self.config.where})")
        return data

    def get_stream(self, name: str, chunk_bytes: int = 1 << 20):
        """The whole object `name` as an iterator of chunks (bytes-like, about `chunk_bytes` each but
        the last) as they arrive: one GET, counted once with its time to first byte; its bytes are
        counted as they arrive. Failures before the first byte are retried as get()'s are; a
        connection lost after it, or an object that ends before its advertised size, is a
        StoreError naming the object ("truncated object" for the latter)."""
        import obstore

        key = self.url.key(name)

        def start():
            t0 = time.perf_counter()
            result = obstore.get(self._store, key)
            return result, int(result.meta["size"]), time.perf_counter() - t0

        result, size, ttfb = self._call("GET", name, start)
        with self._n.lock:
            self._n.n["gets"] += 1
            self._n.ttfb.append(ttfb)
        got = 0
        try:
            for buf in result.stream(min_chunk_size=chunk_bytes):
                got += len(buf)
                self._n.add(get_bytes=len(buf))
                yield buf
        except (KeyboardInterrupt, GeneratorExit, StoreError):
            raise
        except Exception as exc:
            status, code, kind = _status(exc)
            raise self._error("GET", name, exc, status, code, kind, 0) from None
        if got != size:
            raise StoreError(f"{self.url.of(name)}: truncated object: {got:,} bytes where {size:,} were expected "
                             f"(at {self.config.where}); upload it again")

    def put(self, name: str, data) -> None:
        """Store `data` (bytes, or a Path whose file is uploaded) as object `name`, atomically."""
        import obstore

        n = Path(data).stat().st_size if isinstance(data, Path) else len(data)
        self._call("PUT", name, lambda: obstore.put(self._store, self.url.key(name), data))
        self._n.add(puts=1, put_bytes=n)

    def delete(self, name: str) -> None:
        """Remove object `name` (no error if there is none, as S3's DELETE)."""
        import obstore

        self._call("DELETE", name, lambda: obstore.delete(self._store, self.url.key(name)))

    def head(self, name: str) -> int:
        """The size of object `name` in bytes (ObjectMissing if there is none)."""
        import obstore

        meta = self._call("HEAD", name, lambda: obstore.head(self._store, self.url.key(name)))
        self._n.add(heads=1)
        return int(meta["size"])

    def exists(self, name: str) -> bool:
        try:
            self.head(name)
            return True
        except BucketMissing:
            raise
        except ObjectMissing:
            return False

    def list(self, sub: str = "") -> dict[str, int]:
        """{name: size} of every object under the prefix (or under `sub` inside it), names relative
        to the prefix. An empty dict when there are none; ObjectMissing when the bucket is missing."""
        import obstore

        base = self.url.key(sub.strip("/")) if sub.strip("/") else self.url.prefix
        pre = base + "/" if base else ""
        out: dict[str, int] = {}

        def run():
            for chunk in obstore.list(self._store, pre or None, chunk_size=1000):
                self._n.add(lists=1)
                for meta in chunk:
                    path = meta["path"]
                    rel = path[len(self.url.prefix) + 1:] if self.url.prefix else path
                    out[rel] = int(meta["size"])
            return out

        return self._call("LIST", sub or "", lambda: (out.clear(), run())[1])

    def check_bucket(self) -> None:
        """ObjectMissing (one line) unless the bucket exists and these credentials may list it."""
        import obstore

        def run():
            next(iter(obstore.list(self._store, self.url.prefix or None, chunk_size=1)), None)
        self._call("LIST", "", run)
        self._n.add(lists=1)

    # -- the machinery
    def _get(self, name: str, rng) -> tuple[bytes, int | None]:
        import obstore

        key = self.url.key(name)

        def run():
            t0 = time.perf_counter()
            result = obstore.get(self._store, key, options={"range": rng} if rng else None)
            t1 = time.perf_counter()
            body = bytes(result.bytes())
            return body, int(result.meta["size"]), t1 - t0

        body, size, ttfb = self._call("GET", name, run)
        with self._n.lock:
            self._n.n["gets"] += 1
            self._n.n["get_bytes"] += len(body)
            self._n.ttfb.append(ttfb)
        return body, size

    def _call(self, method: str, name: str, fn):
        """fn() with retries of what a retry can cure; any failure as one line naming the object."""
        tries = 0
        while True:
            try:
                return fn()
            except (KeyboardInterrupt, StoreError):
                raise
            except Exception as exc:
                status, code, kind = _status(exc)
                retryable = (status in RETRY_STATUS or code in ("SlowDown", "RequestTimeout")
                             or (status is None and kind not in (None, "Connect", "Builder")))
                if retryable and tries < self.max_retries:
                    tries += 1
                    self._n.add(retries=1)
                    time.sleep(min(MAX_BACKOFF, self.backoff * 2 ** (tries - 1)) * (0.5 + random.random()))
                    continue
                raise self._error(method, name, exc, status, code, kind, tries) from None

    def _error(self, method, name, exc, status, code, kind, tries) -> StoreError:
        where = self.config.where
        obj = self.url.of(name) if name else str(self.url)
        after = f" after {tries} retr{'y' if tries == 1 else 'ies'}" if tries else ""
        if status is None and kind == "Connect":
            return StoreError(f"{obj}: cannot connect to the S3 endpoint {where} (refused or unreachable): is the "
                              f"server running on that port? (AWS_ENDPOINT_URL; `python -m generator.objectstore "
                              f"serve --dir DIR` starts one)")
        if status is None and kind in ("Timeout",) or "timed out" in str(exc).lower() or "deadline" in str(exc).lower():
            return StoreError(f"{obj}: {method} timed out at {where}{after} (no answer within "
                              f"{self.read_timeout:g} s): the server is overloaded or gone")
        if status in (401, 403) and code in (None, "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                                             "InvalidToken", "ExpiredToken", "AuthorizationHeaderMalformed"):
            what = {"InvalidAccessKeyId": "the access key is unknown", "SignatureDoesNotMatch": "the secret key is wrong",
                    "AccessDenied": "access denied"}.get(code, code or f"HTTP {status}")
            return StoreError(f"{obj}: the S3 endpoint {where} refused the credentials ({what}; {code or status}): "
                              f"check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (used: {self.config.source})")
        if code == "NoSuchBucket":
            return BucketMissing(f"{obj}: no bucket {self.url.bucket} at {where}: create it (for the bundled server: "
                                 f"`serve --bucket {self.url.bucket}`), or check the URL")
        if status == 404 or code == "NoSuchKey":
            if method == "HEAD" and code is None:  # a HEAD's 404 has no body: the object or its bucket?
                try:
                    self.check_bucket()
                except ObjectMissing as missing_bucket:
                    return missing_bucket
            return ObjectMissing(f"{obj}: no such object at {where}")
        if status == 416 or code == "InvalidRange":
            return StoreError(f"{obj}: truncated object: the range asked for starts past its end (at {where})")
        if status in RETRY_STATUS or code == "SlowDown":
            return StoreError(f"{obj}: the S3 endpoint {where} kept answering {status} {code or ''}{after}: it is "
                              f"throttling or failing; retry later or lower the request rate".replace(" :", ":"))
        first = str(exc).split("\n\nDebug source")[0]
        return StoreError(f"{obj}: {method} failed at {where}{after}: {' '.join(first.split())[:300]}")
