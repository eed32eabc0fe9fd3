"""End to end: exchange over loopback websockets → WebsocketSource → graph → DuckDB file.

A separate process plays the exchange: it formats Binance combined-stream messages (bookTicker,
aggTrade, and depth@100ms diffs of several levels, with increasing ids so nothing is a repeat) and
sends them at a target message rate. This process runs the real source and graph into a DuckDB
file for DURATION seconds and reports:

- ticks/s sustained: rows committed (trades + quotes + book updates) per second of the run;
- p50/p99 receive-to-committed latency: from each message's receive time to the commit of the
  transaction holding its rows;
- the parse-only ceiling: the Binance adapter alone on the same message mix, in the same run.

    .venv/bin/python benchmarks/bench_end_to_end.py [DURATION_S] [MESSAGES_PER_S]
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataflows.adapters.binance import BinanceAdapter  # noqa: E402
from dataflows.clock import WallClock  # noqa: E402
from dataflows.graph import build_graph  # noqa: E402
from dataflows.ws_source import WebsocketSource  # noqa: E402
from models.oracle import MedianOracle  # noqa: E402
from models.records import RawBatch  # noqa: E402
from storage.writer import DuckDBWriter  # noqa: E402

# The exchange process: formats messages on the fly (ids increase, prices wander) and paces them.
SERVER = textwrap.dedent(
    """
    import asyncio, sys, time
    from websockets.asyncio.server import serve
    sys.path.insert(0, sys.argv[3])
    from _messages import mixed_stream

    RATE = float(sys.argv[1]); LEVELS = int(sys.argv[2])

    async def handler(ws):
        gen = mixed_stream(LEVELS, now_ms=lambda: int(time.time() * 1000))
        step = 0.01; t = time.perf_counter(); owed = 0.0
        while True:
            owed += RATE * step
            n = int(owed); owed -= n
            for _ in range(n):
                await ws.send(next(gen))
            t += step
            await asyncio.sleep(max(0.0, t - time.perf_counter()))

    async def main():
        async with serve(handler, "127.0.0.1", 0, compression=None, max_queue=None,
                         ping_interval=None) as server:
            print(server.sockets[0].getsockname()[1], flush=True)
            await asyncio.Future()

    asyncio.run(main())
    """
)

LEVELS = 10
FLUSHES: list[float] = []  # seconds per writer flush (a write error would raise and end the run)


def parse_ceiling(messages: list[str]) -> float:
    """Ticks/s of the Binance adapter alone on ``messages``."""
    adapter = BinanceAdapter()
    batches = [
        RawBatch("binance", np.full(len(messages[i : i + 1000]), time.time()), messages[i : i + 1000])
        for i in range(0, len(messages), 1000)
    ]
    t = time.perf_counter()
    ticks = 0
    for b in batches:
        n = adapter.normalize(b)
        ticks += len(n.trades) + len(n.quotes) + len(n.book_updates)
    return ticks / (time.perf_counter() - t)


async def run(duration_s: float, rate: float) -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(rate), str(LEVELS), str(Path(__file__).resolve().parent)], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(server.stdout.readline())
        with tempfile.TemporaryDirectory() as tmp:
            clock = WallClock()
            graph = build_graph(
                clock=clock, writer=DuckDBWriter(Path(tmp) / "e2e.duckdb", capacity_rows=50_000),
                oracle=MedianOracle(),
            )
            source = WebsocketSource(f"ws://127.0.0.1:{port}/", "binance", clock=clock)
            source.connect(graph.raw)
            sample: list[str] = []
            source.sink(lambda b: sample.extend(b.messages[: max(0, 100_000 - len(sample))]))

            pending: list[np.ndarray] = []
            latencies: list[np.ndarray] = []
            graph.validated.sink(lambda b: pending.append(
                np.concatenate([b.trades.receive_ts, b.quotes.receive_ts, b.book_updates.receive_ts])))

            running = [True]

            def on_commit(_commit) -> None:
                # Commits while the feed runs; the shutdown flush is not a steady-state latency.
                done = time.time()
                if running[0]:
                    latencies.extend(done - p for p in pending)
                pending.clear()

            graph.commits.sink(on_commit)

            # Write latency: the duration of each flush (one DuckDB transaction).
            flush_s: list[float] = []
            plain_flush = graph.writer.flush

            def timed_flush(*args, **kwargs):
                t = time.perf_counter()
                try:
                    return plain_flush(*args, **kwargs)
                finally:
                    flush_s.append(time.perf_counter() - t)

            graph.writer.flush = timed_flush
            source.stopped = False
            task = asyncio.create_task(source.run())

            async def ticker():
                while True:
                    await asyncio.sleep(0.25)
                    graph.tick()

            tick_task = asyncio.create_task(ticker())
            await asyncio.wait_for(source.connected.wait(), 10)
            t0 = time.perf_counter()
            await asyncio.sleep(duration_s)
            elapsed = time.perf_counter() - t0
            running[0] = False
            source.stop()
            task.cancel()
            tick_task.cancel()
            for t in (task, tick_task):
                try:
                    await t
                except asyncio.CancelledError:
                    pass
            graph.close()
            FLUSHES.extend(flush_s)
            snap = graph.ledger.snapshot()["total"]
            ticks = snap["trades"] + snap["quotes"] + snap["book_updates"]
            lat = np.concatenate(latencies) if latencies else np.array([np.nan])
            ceiling = parse_ceiling(sample)
    finally:
        server.kill()
        server.wait()

    rate_ticks = ticks / elapsed
    print(f"{duration_s:g} s at {rate:,.0f} messages/s offered "
          f"(50% bookTicker, 20% aggTrade, 30% depth diffs of {LEVELS} levels)\n")
    print(f"messages {snap['messages']:,}  ticks committed {ticks:,}  quarantined {snap['quarantined']}"
          f"  reconciles {graph.ledger.reconciles()}")
    print(f"end to end   {rate_ticks:>12,.0f} ticks/s   parse-only ceiling {ceiling:>12,.0f} ticks/s"
          f"   ratio {rate_ticks / ceiling:5.3f}")
    print(f"receive → committed latency: p50 {np.nanpercentile(lat, 50) * 1e3:,.0f} ms, "
          f"p99 {np.nanpercentile(lat, 99) * 1e3:,.0f} ms, max {np.nanmax(lat) * 1e3:,.0f} ms")
    w = np.array(FLUSHES)
    print(f"write latency (one flush, one transaction): {len(w)} flushes, p50 "
          f"{np.percentile(w, 50) * 1e3:,.1f} ms, p95 {np.percentile(w, 95) * 1e3:,.1f} ms, "
          f"max {w.max() * 1e3:,.1f} ms; write errors 0")


if __name__ == "__main__":
    import logging

    logging.disable(logging.ERROR)
    duration = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    offered = float(sys.argv[2]) if len(sys.argv) > 2 else 30_000.0
    os.environ.setdefault("PYTHONHASHSEED", "0")
    asyncio.run(run(duration, offered))
