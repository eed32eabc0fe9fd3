"""dataflows.workers: work runs off the loop and its result comes back on the loop."""

from __future__ import annotations

import asyncio
import math
import os
import threading

import pytest

from dataflows.workers import WorkFailed, Worker


def square_sum(values):
    return sum(v * v for v in values)


def fail(message):
    raise ValueError(message)


def where(_):
    return threading.current_thread().name, os.getpid()


def test_inline_worker_calls_back_at_once_and_catches_errors():
    worker = Worker("inline")
    got = []
    worker.submit(got.append, square_sum, [1, 2, 3])
    assert got == [14]
    worker.submit(got.append, fail, "bad chain")
    assert isinstance(got[1], WorkFailed) and "bad chain" in str(got[1].error)
    assert (worker.submitted, worker.completed, worker.failed) == (2, 1, 1)


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_pool_worker_delivers_on_the_loop_thread(kind):
    async def main():
        worker = Worker(kind)
        got = []
        done = asyncio.Event()
        loop_thread = threading.current_thread().name

        def on_done(result):
            got.append((result, threading.current_thread().name))
            if len(got) == 2:
                done.set()

        worker.submit(on_done, square_sum, [3, 4])
        worker.submit(on_done, where, None)
        await asyncio.wait_for(done.wait(), 60)
        worker.close()
        return got, loop_thread

    got, loop_thread = asyncio.run(main())
    assert got[0] == (25, loop_thread)
    # The work itself ran elsewhere (a pool thread, or another process), its result came back
    # on the loop's thread.
    (work_thread, work_pid), delivered_on = got[1]
    assert delivered_on == loop_thread
    if kind == "thread":
        assert work_thread.startswith("hedgeflow-model") and work_pid == os.getpid()
    else:
        assert work_pid != os.getpid()


def test_work_that_cannot_be_submitted_fails_at_once_and_cancelled_work_calls_nothing_back():
    async def main():
        worker = Worker("thread")
        got = []
        started, release = threading.Event(), threading.Event()

        def block():
            started.set()
            release.wait(10)
            return "ran"

        worker.submit(got.append, block)
        worker.submit(got.append, square_sum, [1])  # queued behind the blocked one
        started.wait(10)
        closer = threading.Thread(target=worker.close)
        closer.start()  # cancels the queued work, waits for the running one
        await asyncio.sleep(0.05)
        release.set()
        closer.join(10)
        await asyncio.sleep(0.05)  # let the running one's delivery reach the loop
        # A closed pool refuses new work: the caller hears of it at once, as a failure.
        worker.submit(got.append, square_sum, [2])
        return worker, got

    worker, got = asyncio.run(main())
    assert got[0] == "ran"
    assert isinstance(got[1], WorkFailed) and "shutdown" in str(got[1].error)
    assert len(got) == 2  # the cancelled job called nothing back
    assert (worker.submitted, worker.completed, worker.failed) == (3, 1, 1)


def test_dask_worker_runs_on_a_local_cluster():
    distributed = pytest.importorskip("distributed")

    async def main(client):
        worker = Worker("dask", client=client)
        got = []
        done = asyncio.Event()

        def on_done(result):
            got.append(result)
            done.set()

        worker.submit(on_done, math.fsum, [0.1] * 10)
        await asyncio.wait_for(done.wait(), 60)
        worker.close()
        return got

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        got = asyncio.run(main(client))
    assert got == [1.0]


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="thread, process, dask or inline"):
        Worker("gpu")
