"""IngestView and StorageHealth, the streamz way: a real graph (and DuckDB file), emit, assert."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from streamz import Stream

from dataflows.clock import SimulatedClock
from dataflows.graph import build_graph
from dataflows.views import VIEWS
from dataflows.views.ingest import OTHER_REASON, IngestView, StorageHealth, attach
from dataflows.workers import Worker
from models.oracle import MedianOracle, MedianOracleConfig
from models.records import BookUpdateBatch, QuarantineRecord
from storage.writer import DuckDBWriter
from tests.conftest import make_quotes, make_raw, make_trades

T0 = 1_700_000_000.0


def book(bid: str, ask: str, u: int) -> str:
    return json.dumps({"stream": "btcusdt@bookTicker",
                       "data": {"u": u, "s": "BTCUSDT", "b": bid, "B": "1", "a": ask, "A": "1"}})


def depth(first_id: int, last_id: int, event_s: float) -> str:
    return json.dumps({"stream": "btcusdt@depth@100ms", "data": {
        "e": "depthUpdate", "E": int(event_s * 1000), "s": "BTCUSDT", "U": first_id,
        "u": last_id, "b": [["30000", "1"]], "a": []}})


def quotes_at(receive_s: float, n: int, u0: int = 1) -> list[tuple[float, str]]:
    return [(receive_s, book("30000.0", "30001.0", u0 + i)) for i in range(n)]


def release(*streams) -> None:
    for stream in streams:
        for node in list(stream.downstreams):
            if type(node).__name__ == "sink":
                node.destroy()


@pytest.fixture
def graph(db_path):
    clock = SimulatedClock(T0)
    writer = DuckDBWriter(db_path, capacity_rows=10_000, flush_interval_s=1.0)
    g = build_graph(clock=clock, writer=writer, oracle=MedianOracle(
        MedianOracleConfig(min_sources=1, stale_after_s=10.0, interval_s=1.0)))
    yield g, clock
    release(g.ticks, g.quarantine, g.gaps, *g.data.values())
    try:
        writer.con.close()
    except Exception:
        pass


@pytest.fixture
def wired(graph):
    """An IngestView subscribed to the graph like ``attach`` does, without the database reads."""
    g, clock = graph
    view = IngestView(g.ledger, rate_window_s=5.0, sample_interval_s=1.0)
    g.ticks.sink(view.on_tick)
    for s in g.data.values():
        s.sink(view.on_data)
    g.quarantine.sink(view.on_quarantine)
    g.gaps.sink(view.on_gaps)
    return g, clock, view


def tick(g, clock, at_s: float) -> None:
    clock.advance_to(at_s)
    g.tick()


# ------------------------------------------------------------------------- rates


def test_rates_are_ledger_messages_over_the_trailing_window(wired):
    g, clock, view = wired
    tick(g, clock, T0)
    assert view.rates_per_exchange() == {}  # one sample is no rate

    g.raw.emit(make_raw("binance", quotes_at(T0 + 0.5, 10)))
    tick(g, clock, T0 + 1.0)
    sent = g.ledger.snapshot()["exchanges"]["binance"]["messages"]
    assert sent == 10
    assert view.rates_per_exchange() == {"binance": pytest.approx(10 / 1.0)}

    g.raw.emit(make_raw("binance", quotes_at(T0 + 1.5, 5, u0=11)))
    tick(g, clock, T0 + 2.0)
    assert view.rates_per_exchange()["binance"] == pytest.approx(15 / 2.0)

    # Quiet: once the busy samples leave the 5 s window, the rate falls to zero.
    tick(g, clock, T0 + 8.0)
    assert view.rates_per_exchange()["binance"] == 0.0
    assert view.counts()["binance"]["messages"] == 15


def test_rate_history_one_point_per_interval_and_since(wired):
    g, clock, view = wired
    tick(g, clock, T0)
    for i in range(1, 9):  # ticks every 0.25 s for 2 s
        g.raw.emit(make_raw("binance", quotes_at(T0 + i * 0.25 - 0.1, 2, u0=2 * i)))
        tick(g, clock, T0 + i * 0.25)
    history = view.rate_history()
    # the first point as soon as there is a rate, then at least 1 s apart
    assert [ts for ts, _ in history] == [T0 + 0.25, T0 + 1.25]
    assert history[0][1]["binance"] == pytest.approx(2 / 0.25)
    assert history[-1][1]["binance"] == pytest.approx(10 / 1.25)
    assert view.version == 2
    assert [ts for ts, _ in view.rate_history(since_s=T0 + 0.25)] == [T0 + 1.25]
    assert view.rates_per_exchange()["binance"] == pytest.approx(16 / 2.0)


def test_view_rejects_a_non_positive_window():
    with pytest.raises(ValueError, match="positive"):
        IngestView(None, rate_window_s=0)


# ------------------------------------------------------------------------- lag


def test_lag_per_exchange_from_receive_and_event_times():
    view = IngestView(None, lag_window_s=30.0)
    data = Stream()
    data.sink(view.on_data)
    lags = np.linspace(0.01, 0.20, 20)
    data.emit(make_quotes(*({"event_ts": T0 + i - lag, "receive_ts": T0 + i}
                            for i, lag in enumerate(lags))))
    data.emit(make_trades({"exchange": "kraken", "event_ts": T0 - 1.5, "receive_ts": T0}))

    lag = view.lag_by_exchange()
    assert sorted(lag) == ["binance", "kraken"]
    assert lag["binance"]["median_s"] == pytest.approx(np.median(lags))
    assert lag["binance"]["p95_s"] == pytest.approx(np.percentile(lags, 95))
    assert lag["binance"]["max_s"] == pytest.approx(0.20)
    assert lag["binance"]["rows"] == 20
    assert lag["kraken"] == {"median_s": pytest.approx(1.5), "p95_s": pytest.approx(1.5),
                             "max_s": pytest.approx(1.5), "rows": 1}

    # a batch mixing exchanges is split between them
    data.emit(make_quotes({"exchange": "bybit", "event_ts": T0 - 0.3, "receive_ts": T0},
                          {"exchange": "kraken", "event_ts": T0 - 2.5, "receive_ts": T0}))
    lag = view.lag_by_exchange()
    assert lag["bybit"]["rows"] == 1 and lag["bybit"]["max_s"] == pytest.approx(0.3)
    assert lag["kraken"]["rows"] == 2 and lag["kraken"]["max_s"] == pytest.approx(2.5)


def test_lag_keeps_only_the_window_and_skips_book_snapshots():
    view = IngestView(None, lag_window_s=10.0)
    data = Stream()
    data.sink(view.on_data)
    data.emit(make_quotes({"event_ts": T0 - 5.0, "receive_ts": T0}))
    data.emit(make_quotes({"event_ts": T0 + 19.9, "receive_ts": T0 + 20.0}))
    assert view.lag_by_exchange()["binance"]["rows"] == 1  # T0's row left the window
    assert view.lag_by_exchange()["binance"]["max_s"] == pytest.approx(0.1)

    snapshot = BookUpdateBatch.from_columns(
        exchange=["kraken", "kraken"], instrument=["XBT/USD"] * 2, asset=["BTC"] * 2,
        event_ts=[T0 - 3e7, T0 + 20.0 - 0.05], receive_ts=[T0 + 20.0] * 2, side=["bid", "ask"],
        price=[1.0, 2.0], size_coin=[1.0, 1.0], is_snapshot=[True, False], sequence=[1, 1],
        raw=["", ""])
    data.emit(snapshot)
    # the snapshot level's event time (a year back) is not lag
    assert view.lag_by_exchange()["kraken"] == pytest.approx(
        {"median_s": 0.05, "p95_s": 0.05, "max_s": 0.05, "rows": 1})


def test_lag_memory_is_bounded():
    view = IngestView(None, lag_window_s=1e9, max_lag_samples=100)
    data = Stream()
    data.sink(view.on_data)
    for i in range(50):
        data.emit(make_quotes(*({"event_ts": T0 + i - 0.5, "receive_ts": T0 + i},) * 10))
    assert 100 <= view.lag_by_exchange()["binance"]["rows"] <= 110


# ------------------------------------------------------------------------- quarantine and gaps


def test_quarantine_counts_what_the_graph_quarantined(wired):
    g, clock, view = wired
    quarantined = g.quarantine.sink_to_list()
    g.raw.emit(make_raw("binance", [
        (T0, book("30000.0", "30001.0", 1)),
        (T0 + 0.01, book("30010", "30000", 2)),  # crossed
        (T0 + 0.02, '{"stream": "btcusdt@bookTicker", "data": {"u": '),  # bad JSON
        (T0 + 0.03, '{"stream": "btcusdt@bookTicker", "data": {"u": '),
    ]))
    records = [r for batch in quarantined for r in batch]
    assert len(records) == 3
    expected = Counter(r.reason for r in records)
    assert view.quarantine_by_reason() == dict(expected.most_common())
    assert list(view.quarantine_by_reason().values()) == sorted(expected.values(), reverse=True)
    assert sum(r["messages"] for r in view.quarantine_by_exchange_reason()) == 3
    assert {r["exchange"] for r in view.quarantine_by_exchange_reason()} == {"binance"}
    assert g.ledger.snapshot()["exchanges"]["binance"]["quarantined"] == 3


def test_quarantine_reasons_are_bounded():
    view = IngestView(None, max_reasons=2)
    q = Stream()
    q.sink(view.on_quarantine)
    q.emit([QuarantineRecord("binance", T0, f"unparseable: column {i}", "x") for i in range(5)])
    q.emit([QuarantineRecord("binance", T0, "unparseable: column 0", "x")])
    by_reason = view.quarantine_by_reason()
    assert by_reason == {OTHER_REASON: 3, "unparseable: column 0": 2, "unparseable: column 1": 1}


def test_gaps_are_counted_by_exchange_and_kind(wired):
    g, clock, view = wired
    gaps = g.gaps.sink_to_list()
    g.raw.emit(make_raw("binance", [
        (T0 + 0.1, depth(1, 2, T0)),
        (T0 + 0.2, depth(10, 12, T0 + 0.1)),  # ids 3..9 skipped
    ]))
    seen = [gp for batch in gaps for gp in batch]
    assert seen, "the graph saw no gap"
    expected: dict = {}
    for gp in seen:
        expected.setdefault(gp.exchange, Counter())[gp.kind] += 1
    assert view.gaps_by_exchange() == {e: dict(c) for e, c in expected.items()}
    assert view.recent_gaps(1) == [seen[-1]]
    assert view.recent_gaps(0) == []


# ------------------------------------------------------------------------- storage


def test_storage_reads_on_its_interval_through_a_cursor(graph):
    g, clock = graph
    storage = StorageHealth(g.writer.con, Worker("inline"), interval_s=5.0, quality_interval_s=20.0)
    view = IngestView(g.ledger, storage=storage)
    g.ticks.sink(view.on_tick)
    assert view.storage_snapshot() is None

    g.raw.emit(make_raw("binance", quotes_at(T0, 10)))
    tick(g, clock, T0 + 1.5)  # the writer flushes on this tick (flush_interval_s = 1)
    first = view.storage_snapshot()
    assert first is not None and storage.reads == 1
    rows = g.writer.con.execute("SELECT count(*) FROM quotes").fetchone()[0]
    assert rows == 10
    assert first.table_rows["quotes"] == rows
    assert first.size.path == str(g.writer.db_path)
    assert first.quality is not None and first.quality_taken_s == T0 + 1.5
    summary = first.quality.summary
    assert int(summary.loc[summary["exchange"] == "binance", "quotes"].iloc[0]) == rows
    assert first.archive is None

    tick(g, clock, T0 + 4.0)  # within the interval: no read
    assert storage.reads == 1
    g.raw.emit(make_raw("binance", quotes_at(T0 + 5.0, 4, u0=11)))
    tick(g, clock, T0 + 7.0)
    second = view.storage_snapshot()
    assert storage.reads == 2 and second.taken_s == T0 + 7.0
    assert second.table_rows["quotes"] == 14
    # the quality report is not due yet: the last one is kept
    assert second.quality is first.quality and second.quality_taken_s == T0 + 1.5
    tick(g, clock, T0 + 22.0)
    assert view.storage_snapshot().quality_taken_s == T0 + 22.0

    view.close()
    assert storage.closed
    tick(g, clock, T0 + 40.0)
    assert storage.reads == 3  # closed: no more reads
    g.writer.close()  # the cursor is closed; the connection closes


def test_an_empty_quality_report_is_retried_at_the_next_read(graph):
    g, clock = graph
    storage = StorageHealth(g.writer.con, Worker("inline"), interval_s=5.0, quality_interval_s=60.0)
    g.ticks.sink(storage.on_tick)
    tick(g, clock, T0)  # the run's first tick: nothing stored yet
    assert len(storage.latest.quality.summary) == 0
    g.raw.emit(make_raw("binance", quotes_at(T0 + 1.0, 3)))
    tick(g, clock, T0 + 5.0)
    assert storage.latest.quality_taken_s == T0 + 5.0
    assert len(storage.latest.quality.summary) == 1
    tick(g, clock, T0 + 10.0)  # now it waits its interval
    assert storage.latest.quality_taken_s == T0 + 5.0
    storage.close()


def test_a_slow_quality_report_waits_longer(graph):
    g, clock = graph
    storage = StorageHealth(g.writer.con, Worker("inline"), interval_s=5.0, quality_interval_s=30.0,
                            max_quality_share=0.05)
    g.raw.emit(make_raw("binance", quotes_at(T0, 3)))
    tick(g, clock, T0 + 1.5)  # flushes
    storage.on_tick(T0 + 1.5)
    assert storage.latest.quality_taken_s == T0 + 1.5
    assert storage.quality_wait_s == max(30.0, storage.latest.read_s / 0.05)
    # A report that took 4 s may run at most every 80 s (5 % of a thread).
    storage._keep(dataclasses.replace(storage.latest, read_s=4.0))
    assert storage.quality_wait_s == pytest.approx(80.0)
    storage.on_tick(T0 + 40.0)
    assert storage.latest.quality_taken_s == T0 + 1.5
    storage.on_tick(T0 + 82.0)
    assert storage.latest.quality_taken_s == T0 + 82.0
    with pytest.raises(ValueError, match="max_quality_share"):
        StorageHealth(g.writer.con, Worker("inline"), max_quality_share=0.0)
    storage.close()


def test_a_busy_read_is_skipped_not_queued(graph):
    g, clock = graph

    class Held:  # a worker whose work never finishes until released
        kind = "held"

        def __init__(self):
            self.pending = []

        def submit(self, on_done, fn, *args):
            self.pending.append((on_done, fn, args))

        def close(self):
            pass

    worker = Held()
    storage = StorageHealth(g.writer.con, worker, interval_s=1.0)
    storage.on_tick(T0)
    storage.on_tick(T0 + 2.0)
    storage.on_tick(T0 + 4.0)
    assert len(worker.pending) == 1 and storage.skipped == 2
    on_done, fn, args = worker.pending.pop()
    on_done(fn(*args))
    assert storage.latest is not None and storage.latest.taken_s == T0
    storage.close()


def test_storage_counts_the_archive_folder(graph, tmp_path):
    g, clock = graph
    archive = tmp_path / "archive"
    (archive / "table=quotes" / "date=2023-11-14").mkdir(parents=True)
    (archive / "table=quotes" / "date=2023-11-14" / "part-0.parquet").write_bytes(b"P" * 123)
    storage = StorageHealth(g.writer.con, Worker("inline"), archive_dir=str(archive))
    storage.on_tick(T0)
    assert (storage.latest.archive.files, storage.latest.archive.bytes) == (1, 123)
    storage.close()


def test_attach_wires_the_pipeline_and_reads_off_the_loop(graph):
    g, clock = graph
    pipeline = SimpleNamespace(
        graph=g, config=SimpleNamespace(storage=SimpleNamespace(archive_dir="")))
    assert VIEWS["ingest"] is attach

    async def snapshot_taken_at(view, at_s):
        for _ in range(250):  # the read runs in a thread and comes back on the loop
            snap = view.storage_snapshot()
            if snap is not None and snap.taken_s == at_s:
                return snap
            await asyncio.sleep(0.02)
        raise AssertionError(f"no database read taken at {at_s}")

    async def run():
        view = attach(pipeline)
        tick(g, clock, T0)
        empty = await snapshot_taken_at(view, T0)
        g.raw.emit(make_raw("binance", quotes_at(T0 + 0.5, 8)))
        tick(g, clock, T0 + 1.5)  # flushes
        tick(g, clock, T0 + 6.0)  # the next read is due
        return view, empty, await snapshot_taken_at(view, T0 + 6.0)

    view, empty, later = asyncio.run(run())
    assert empty.table_rows["quotes"] == 0
    assert later.table_rows["quotes"] == 8
    assert view.rates_per_exchange()["binance"] == pytest.approx(8 / 6.0)
    assert view.lag_by_exchange()["binance"]["rows"] == 8
    g.close()  # closes the view's reads first, then the writer: no "connection is busy"
    assert view.storage.closed
    assert math.isfinite(view.storage_snapshot().read_s)
