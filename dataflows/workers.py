"""Where heavy model work runs so the graph never waits for it: a thread or process pool, a dask
cluster, or inline.

A ``Worker`` takes a picklable function and its arguments and calls ``on_done(result_or_error)``
when the work is finished. Pools and dask call back from another thread; ``Worker`` moves the
callback onto the event loop that submitted the work (or the ``loop`` it was given;
``loop.call_soon_threadsafe``), because streamz nodes
and Bokeh models must only be touched from that loop. ``inline`` calls the function at once, in
the caller: replay and backtests use it so that their results do not depend on timing.

Dask: per-item scatter/gather tops out near 150–200 items/s on these machines (DESIGN.md), so
callers send batches (one task per refit of every asset, one task per Monte Carlo run), never one
task per option.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any

from dataflows.logs import log_event

log = logging.getLogger(__name__)


class WorkFailed:
    """What ``on_done`` receives when the work raised: the error, kept for the log and the caller."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"WorkFailed({self.error!r})"


class Worker:
    """Runs ``fn(*args)`` away from the graph and hands the result back on the loop.

    ``kind``: "thread" | "process" | "dask" | "inline". For "dask", ``dask_address`` is the
    scheduler's address, or pass a ``distributed.Client`` as ``client`` (a LocalCluster in tests).
    """

    def __init__(self, kind: str = "thread", *, dask_address: str = "", client=None,
                 loop: asyncio.AbstractEventLoop | None = None, max_workers: int = 1) -> None:
        self.kind = kind
        self._loop = loop
        self._client = None
        self._own_client = False
        self._pool: concurrent.futures.Executor | None = None
        self.submitted = 0
        self.completed = 0
        self.failed = 0
        if kind == "thread":
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="hedgeflow-model")
        elif kind == "process":
            import multiprocessing

            # spawn, not fork: forking a process that runs an event loop and DuckDB is unsafe.
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers, mp_context=multiprocessing.get_context("spawn"))
        elif kind == "dask":
            if client is None:
                from distributed import Client

                client = Client(dask_address, timeout="10s")
                self._own_client = True
            self._client = client
        elif kind != "inline":
            raise ValueError(f"worker kind must be thread, process, dask or inline, got {kind!r}")

    def _deliver(self, on_done: Callable[[Any], None], result: Any) -> None:
        if isinstance(result, WorkFailed):
            self.failed += 1
            log_event(log, logging.ERROR, "model work failed", kind=self.kind, error=repr(result.error))
        else:
            self.completed += 1
        on_done(result)

    def submit(self, on_done: Callable[[Any], None], fn: Callable, *args) -> None:
        """Run ``fn(*args)``; ``on_done`` gets its result or a ``WorkFailed``, exactly once, on the
        loop (at once for "inline", and when the work cannot even be submitted: a broken process
        pool, a closed dask client). Work cancelled by ``close`` calls nothing back."""
        self.submitted += 1
        if self.kind == "inline":
            try:
                result = fn(*args)
            except Exception as exc:  # the graph goes on; the failure is counted and logged
                result = WorkFailed(exc)
            self._deliver(on_done, result)
            return
        loop = self._loop or asyncio.get_running_loop()
        try:
            future = (self._client.submit(fn, *args, pure=False) if self._client
                      else self._pool.submit(fn, *args))
        except Exception as exc:  # e.g. BrokenProcessPool after a worker process died
            self._deliver(on_done, WorkFailed(exc))
            return

        def done(f) -> None:
            if f.cancelled():
                return  # cancelled at close: nobody is waiting for it, and it did not fail
            try:
                result = f.result()
            except BaseException as exc:
                result = WorkFailed(exc)
            try:
                loop.call_soon_threadsafe(self._deliver, on_done, result)
            except RuntimeError:
                pass  # the loop closed meanwhile: the graph that asked is gone

        future.add_done_callback(done)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._client is not None and self._own_client:
            self._client.close()
