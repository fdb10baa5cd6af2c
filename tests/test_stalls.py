"""A worker that makes no progress is a named error after the stated time, not a silent hang."""

import os
import signal
import time

import pytest

from generator.build import generate
from generator.errors import UsageError
from generator.spec import Spec
from loaders import open_corpus
from loaders.pipeline import Loader, WorkerError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("stall")
    generate(root, Spec(height=16, width=16, channels=1, count=64), ["npy"], workers=1, progress=False)
    return root


def test_a_stopped_process_worker_is_named_after_the_stall_limit(corpus):
    loader = Loader(open_corpus(corpus, "npy"), batch_size=4, workers=2, worker_kind="fork", prefetch=1, stall_s=2)
    try:
        batches = loader.epoch(0)
        next(batches)
        pid = loader.worker_pids[1]
        os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(WorkerError) as err:
            for _ in batches:
                pass
        waited = time.monotonic() - t0
        message = str(err.value)
        assert f"pid {pid}" in message and "delivered no batch for" in message and "stall limit is 2 s" in message
        assert "stopped" in message and "kill -CONT" in message and message.count("\n") == 0
        assert 2 <= waited < 15
    finally:
        loader.close()
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):  # no worker left behind, stopped or not
        os.kill(pid, 0)


def test_the_stall_limit_is_checked(corpus):
    for bad in (0, -1, float("inf"), "10"):
        with pytest.raises(UsageError, match="stall_s"):
            Loader(open_corpus(corpus, "npy"), stall_s=bad)
