"""Replay recorded traffic through the graph, with the capture's receive times as the clock.

A capture is a text file with one received message per line as ``<epoch seconds>: <raw message>``
(the format of ../shared/data/recorded, written by cryptofeed). Lines of any other shape are
connection notes (``<url> <-> <epoch>``, sent requests, HTTP bodies) and are skipped, not counted
as messages. The exchange is named by the file name's first dot-separated part
(``BINANCE.ws.1.0`` → ``binance``, ``deribit_ws_ticker_100ms.json`` → ``deribit``) unless given.
A ``.json`` file holding one pretty-printed message (as the single Deribit samples) is one message;
its receive time is the newest ``timestamp`` (ms) inside it, or 0 when it has none, so it sorts
first. A directory stands for the files in it. Files with no message lines (a licence, notes) are
reported as skipped, not counted.

Several captures are merged in timestamp order, so a replay of five exchanges' files sees the
messages interleaved as they were received. Messages are grouped into batches the way the live
websocket source groups them (``batch_max_messages``, ``batch_max_latency_s`` of capture time), and
after each batch the clock is advanced and ticked, so timers fire on capture time.
"""

from __future__ import annotations

import heapq
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from dataflows.analytics import build_analytics
from dataflows.clock import SimulatedClock
from dataflows.config import HedgeflowError
from dataflows.graph import Graph, build_graph
from dataflows.workers import Worker
from models.oracle import MedianOracle, MedianOracleConfig
from models.records import RawBatch
from storage.writer import DuckDBWriter


@dataclass(frozen=True)
class CaptureLine:
    receive_ts: float
    exchange: str
    message: str


def exchange_of(path: str | os.PathLike) -> str:
    return re.split(r"[._]", Path(path).name, maxsplit=1)[0].lower()


def expand_paths(paths: list[str | os.PathLike]) -> list[Path]:
    """Files named, and the files of directories named (sorted); missing paths are an error."""
    out: list[Path] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise HedgeflowError(
                f"capture file not found: {path}. Give the path of a capture such as "
                "../shared/data/recorded/BINANCE.ws.1.0, or a directory of captures"
            )
    return out


def _newest_timestamp_ms(obj) -> float | None:
    found = []

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "timestamp" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    found.append(float(v))
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(obj)
    return max(found) if found else None


def read_capture(path: str | os.PathLike, exchange: str | None = None) -> Iterator[CaptureLine]:
    """The received messages of one capture file, in file order."""
    p = Path(path)
    if not p.is_file():
        raise HedgeflowError(
            f"capture file not found: {path}. Give the path of a capture such as "
            "../shared/data/recorded/BINANCE.ws.1.0"
        )
    name = exchange or exchange_of(p)
    if p.suffix == ".json":
        try:
            message = orjson.loads(p.read_bytes())
        except orjson.JSONDecodeError:
            return  # not a single JSON message: nothing to replay
        ts_ms = _newest_timestamp_ms(message)
        yield CaptureLine(ts_ms / 1e3 if ts_ms is not None else 0.0, name,
                          orjson.dumps(message).decode())
        return
    with p.open("r", encoding="utf-8", errors="replace") as f:
        for line in f:
            head, sep, body = line.rstrip("\r\n").partition(": ")
            if not sep:
                continue
            try:
                ts = float(head)
            except ValueError:
                continue  # a connection note such as "wss://... <- 1633998511.1: {...}"
            yield CaptureLine(ts, name, body)


def merged_captures(paths: list[str | os.PathLike]) -> Iterator[CaptureLine]:
    """All captures' messages merged by receive time (stable for equal times)."""
    return heapq.merge(*(read_capture(p) for p in paths), key=lambda c: c.receive_ts)


def batches(
    lines: Iterator[CaptureLine], max_messages: int = 1000, max_latency_s: float = 0.05
) -> Iterator[RawBatch]:
    """Group consecutive lines of one exchange into RawBatches, like the live source does."""
    exchange, times, messages = None, [], []
    for line in lines:
        if messages and (
            line.exchange != exchange
            or len(messages) >= max_messages
            or line.receive_ts - times[0] > max_latency_s
        ):
            yield RawBatch(exchange, np.asarray(times), messages)
            times, messages = [], []
        exchange = line.exchange
        times.append(line.receive_ts)
        messages.append(line.message)
    if messages:
        yield RawBatch(exchange, np.asarray(times), messages)


def run_replay(
    graph: Graph, clock: SimulatedClock, paths: list[str | os.PathLike],
    max_messages: int = 1000, max_latency_s: float = 0.05,
) -> dict:
    """Feed the captures through ``graph``, close it, and return the ledger's counts."""
    for batch in batches(merged_captures(paths), max_messages, max_latency_s):
        clock.advance_to(float(batch.receive_ts[-1]))
        graph.raw.emit(batch)
        graph.tick()
    graph.close()
    return graph.ledger.snapshot()


def replay_to_db(
    paths: list[str | os.PathLike], db_path: str | os.PathLike,
    oracle_config: MedianOracleConfig = MedianOracleConfig(),
    flush_rows: int = 10_000, flush_interval_s: float = 1.0, out_of_order: str = "flag",
    chain=None, wall_now: float | None = None, analytics_config=None,
) -> dict:
    """Replay captures into the DuckDB file ``db_path``; the counts, as ``hedgeflow replay`` prints.

    With ``chain`` (a ``[chain]`` config section) the oracle prices are also published, as
    ``hedgeflow run`` does, and the submissions' outcome is added to the counts. The contract's
    ``max_age`` is widened to reach back to the capture's first message (``wall_now`` is the
    chain's present): replayed prices are old, not stale.

    With ``analytics_config`` (an ``[analytics]`` section) volatility, surface fits and premium
    quotes are computed too, inline: a replay's results do not depend on how fast it runs.
    """
    files = expand_paths(paths)
    skipped = [str(f) for f in files if next(iter(read_capture(f)), None) is None]
    captures = [f for f in files if str(f) not in skipped]
    clock = SimulatedClock()
    graph = build_graph(
        clock=clock,
        writer=DuckDBWriter(db_path, capacity_rows=flush_rows, flush_interval_s=flush_interval_s),
        oracle=MedianOracle(oracle_config),
        out_of_order=out_of_order,
        analytics=(build_analytics(analytics_config, Worker("inline"))
                   if analytics_config is not None else None),
    )
    publisher = None
    if chain is not None:
        from dataflows.chain.terminal import build_publisher

        first = next(iter(merged_captures(captures)), None)
        reach_s = int((wall_now or 0) - first.receive_ts) + 3600 if first and wall_now else None
        publisher = build_publisher(
            chain, graph.writer.con, **({"max_age_s": reach_s} if reach_s else {})
        )
        graph.attach_chain(publisher)

    counts = run_replay(graph, clock, captures)
    result = {**counts, "db": str(db_path), "captures": [str(p) for p in captures], "skipped": skipped}
    if publisher is not None:
        result["chain"] = dict(publisher.stats.counts)
    return result
