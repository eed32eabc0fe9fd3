"""The whole graph, the streamz way: emit raw batches, watch the named streams, read DuckDB."""

from __future__ import annotations

import json
import math

import duckdb
import pytest

from dataflows.clock import SimulatedClock
from dataflows.graph import build_graph
from models.oracle import MedianOracle, MedianOracleConfig
from models.records import DATA_BATCHES, BookUpdateBatch, ConnectionEvent, Gap, QuoteBatch, TradeBatch
from storage.writer import Commit, DuckDBWriter
from tests.conftest import make_raw

T0 = 1_700_000_000.0


def book(bid: str, ask: str, symbol: str = "BTCUSDT", u: int = 1) -> str:
    return json.dumps({"stream": f"{symbol.lower()}@bookTicker",
                       "data": {"u": u, "s": symbol, "b": bid, "B": "1.5", "a": ask, "A": "2.5"}})


AGG = json.dumps({"stream": "btcusdt@aggTrade", "data": {
    "e": "aggTrade", "E": int(T0 * 1000) + 500, "s": "BTCUSDT", "a": 42, "p": "30000.5", "q": "0.25",
    "f": 1, "l": 1, "T": int(T0 * 1000) + 500, "m": True, "M": True}})


def depth(U: int, u: int, E_ms: int = int(T0 * 1000) + 10, bids=(("30000", "1"),)) -> str:
    return json.dumps({"stream": "btcusdt@depth@100ms", "data": {
        "e": "depthUpdate", "E": E_ms, "s": "BTCUSDT", "U": U, "u": u, "b": [list(b) for b in bids], "a": []}})


DEPTH = depth(1, 2)
CROSSED = book("30010", "30000", u=3)
BAD_JSON = '{"stream": "btcusdt@bookTicker", "data": {"u": '


def release(*streams) -> None:
    for stream in streams:
        for node in list(stream.downstreams):
            if type(node).__name__ == "sink":
                node.destroy()


@pytest.fixture
def graph(db_path):
    clock = SimulatedClock(T0)
    writer = DuckDBWriter(db_path, capacity_rows=10_000, flush_interval_s=1.0)
    g = build_graph(clock=clock, writer=writer,
                    oracle=MedianOracle(MedianOracleConfig(min_sources=1, stale_after_s=10.0, interval_s=1.0)))
    streams = {"quotes": g.quotes, "trades": g.trades, "book_updates": g.data["book_updates"],
               "quarantine": g.quarantine, "oracle_prices": g.oracle_prices, "commits": g.commits,
               "gaps": g.gaps}
    sinks = {name: stream.sink_to_list() for name, stream in streams.items()}
    yield g, clock, sinks
    # streamz sinks live in a global set: release them
    release(*streams.values())
    try:
        writer.con.close()
    except Exception:
        pass


def test_graph_end_to_end(graph, db_path):
    g, clock, out = graph

    assert set(g.data) == set(DATA_BATCHES)
    assert g.quotes is g.data["quotes"] and g.trades is g.data["trades"]

    # batch 1 at T0: a valid quote, a crossed quote, bad JSON, a trade, a depth message
    clock.advance_to(T0 + 0.01)
    g.raw.emit(make_raw("binance", [
        (T0, book("30000.0", "30001.0")),
        (T0 + 0.004, CROSSED),
        (T0 + 0.005, BAD_JSON),
        (T0 + 0.006, AGG),
        (T0 + 0.01, DEPTH),
    ]))
    g.tick()
    assert len(out["quotes"]) == 1 and isinstance(out["quotes"][0], QuoteBatch)
    assert out["quotes"][0].bid.tolist() == [30000.0]
    assert len(out["trades"]) == 1 and isinstance(out["trades"][0], TradeBatch)
    assert out["trades"][0].side.tolist() == ["sell"]
    assert len(out["book_updates"]) == 1 and isinstance(out["book_updates"][0], BookUpdateBatch)
    assert out["book_updates"][0].price.tolist() == [30000.0]
    assert out["book_updates"][0].raw.tolist() == [DEPTH]
    assert len(out["quarantine"]) == 1
    reasons = [r.reason for r in out["quarantine"][0]]
    assert len(reasons) == 2
    assert any(r.startswith("binance invalid JSON") for r in reasons)
    assert "invalid: crossed or locked book: bid >= ask" in reasons
    assert [r.raw for r in out["quarantine"][0] if r.reason.startswith("invalid:")] == [CROSSED]
    # the oracle published once for BTC at the clock's time (the tick was inside the interval)
    assert len(out["oracle_prices"]) == 1
    (p,) = out["oracle_prices"][0]
    assert (p.asset, p.ts, p.price_usd, p.status, p.n_sources) == ("BTC", T0 + 0.01, 30000.5, "ok", 1)
    assert out["commits"] == []  # nothing is durable yet: buffered under the time limit
    assert out["gaps"] == []
    # a quote, a trade, a book level and two quarantine rows wait for the writer
    assert g.ledger.pending("binance") == 5

    # batch 2 at T0 + 2 s: a second valid quote; the tick flushes on time
    clock.advance_to(T0 + 2.0)
    g.raw.emit(make_raw("binance", [(T0 + 2.0, book("30002.0", "30004.0", u=4))]))
    assert len(out["quotes"]) == 2
    assert len(out["oracle_prices"]) == 2
    assert out["oracle_prices"][1][0].price_usd == 30003.0
    assert out["oracle_prices"][1][0].ts == T0 + 2.0
    g.tick()
    assert len(out["commits"]) == 1 and isinstance(out["commits"][0], Commit)
    assert out["commits"][0].rows["quotes"] == {"binance": 2}
    assert out["commits"][0].rows["book_updates"] == {"binance": 1}
    assert out["commits"][0].rows["quarantine"] == {"binance": 2}
    assert g.ledger.reconciles()

    # a tick 20 s later with no quotes: the oracle turns halted, and BTCUSDT is silent
    clock.advance_to(T0 + 22.0)
    g.tick()
    halted = out["oracle_prices"][-1][0]
    assert halted.status == "halted" and math.isnan(halted.price_usd)
    assert g.silence.silent == [("binance", "BTCUSDT")]
    assert out["gaps"] == []  # reported when it ends, or at close

    g.close()
    assert g.ledger.reconciles()
    (silence,) = out["gaps"][-1]
    assert (silence.exchange, silence.instrument, silence.kind, silence.start_ts) == (
        "binance", "BTCUSDT", "silence", T0 + 2.0)
    assert math.isnan(silence.end_ts)
    snap = g.ledger.snapshot()["exchanges"]["binance"]
    assert snap == {
        "messages": 6, "data": 4, "control": 0, "ignored": 0, "quarantined": 2,
        "trades": 1, "quotes": 2, "option_tickers": 0, "book_updates": 1, "funding": 0,
        "index_prices": 0, "gaps": 1, "duplicates": 0, "out_of_order": 0, "pending": 0,
    }
    committed = sum((c.rows.get("oracle_prices", {}).get("", 0) for c in out["commits"]), 0)
    assert committed == 3

    con = duckdb.connect(str(db_path), read_only=True)
    try:
        assert con.execute("SELECT epoch(event_ts), bid, ask FROM quotes ORDER BY event_ts").fetchall() == [
            (T0, 30000.0, 30001.0), (T0 + 2.0, 30002.0, 30004.0)]
        assert con.execute("SELECT trade_id, price, size_coin, side, epoch(event_ts) FROM trades").fetchall() == [
            ("42", 30000.5, 0.25, "sell", T0 + 0.5)]
        q = con.execute("SELECT reason, raw FROM quarantine ORDER BY receive_ts").fetchall()
        assert [r[1] for r in q] == [CROSSED, BAD_JSON]
        assert q[0][0] == "invalid: crossed or locked book: bid >= ask"
        assert con.execute(
            "SELECT asset, epoch(ts), price, status FROM oracle_prices ORDER BY ts").fetchall() == [
            ("BTC", T0 + 0.01, 30000.5, "ok"), ("BTC", T0 + 2.0, 30003.0, "ok"), ("BTC", T0 + 22.0, None, "halted")]
        assert con.execute(
            "SELECT side, price, size_coin, sequence, is_snapshot, epoch(event_ts) FROM book_updates").fetchall() == [
            ("bid", 30000.0, 1.0, 2, False, T0 + 0.01)]
        assert con.execute(
            "SELECT exchange, instrument, kind, epoch(start_ts), end_ts, missing FROM gaps").fetchall() == [
            ("binance", "BTCUSDT", "silence", T0 + 2.0, None, -1)]
    finally:
        con.close()


def test_connection_health_becomes_disconnect_gap_rows(graph, db_path):
    g, clock, out = graph
    url = "ws://127.0.0.1:8765/stream"

    def health(kind: str, ts: float, detail: str = "") -> None:
        clock.advance_to(ts)
        g.health.emit(ConnectionEvent("binance", url, kind, ts, detail))

    health("connected", T0, url)
    health("disconnected", T0 + 5.0, "closed by peer")
    health("disconnected", T0 + 6.0, "ConnectionRefusedError: [Errno 111]")  # a failed retry
    assert out["gaps"] == []  # open until the connection is back
    health("connected", T0 + 8.5, url)
    assert out["gaps"] == [[Gap("binance", "*", "disconnect", T0 + 5.0, T0 + 8.5, -1, f"{url}: closed by peer")]]
    # a watchdog silence, then a drop that never recovers before the run ends
    health("silent", T0 + 30.0, "no message for 15 s")
    health("disconnected", T0 + 30.1, "silent")
    clock.advance_to(T0 + 40.0)
    g.close()
    open_gap = out["gaps"][-1][0]
    assert (open_gap.kind, open_gap.start_ts, open_gap.instrument) == ("silence", T0 + 30.0, "*")
    assert math.isnan(open_gap.end_ts)
    assert g.ledger.reconciles()
    snap = g.ledger.snapshot()["exchanges"]["binance"]
    assert (snap["messages"], snap["gaps"], snap["pending"]) == (0, 2, 0)

    con = duckdb.connect(str(db_path), read_only=True)
    try:
        assert con.execute("""
            SELECT exchange, instrument, kind, epoch(start_ts), epoch(end_ts), missing, detail
            FROM gaps ORDER BY start_ts""").fetchall() == [
            ("binance", "*", "disconnect", T0 + 5.0, T0 + 8.5, -1, f"{url}: closed by peer"),
            ("binance", "*", "silence", T0 + 30.0, None, -1, f"{url}: no message for 15 s (still open at {T0 + 40:.3f})"),
        ]
    finally:
        con.close()


def test_sequence_gaps_from_the_adapter_are_stored(graph, db_path):
    g, clock, out = graph
    clock.advance_to(T0 + 0.5)
    g.raw.emit(make_raw("binance", [
        (T0 + 0.1, depth(1, 2)),
        (T0 + 0.2, depth(3, 5)),
        (T0 + 0.3, depth(9, 9, E_ms=int(T0 * 1000) + 300)),  # 6, 7, 8 lost
        (T0 + 0.4, depth(9, 9)),  # stale repeat
    ]))
    assert out["gaps"] == [(Gap("binance", "BTCUSDT", "sequence", T0 + 0.3, T0 + 0.3, 3,
                                "depth update ids 6..8 missing"),)]
    assert [r.reason for r in out["quarantine"][0]] == ["binance depthUpdate: stale update ids 9..9 (expected 10)"]
    # the adapter keeps its state from batch to batch
    g.raw.emit(make_raw("binance", [(T0 + 0.5, depth(12, 12, E_ms=int(T0 * 1000) + 500))]))
    assert [gaps[0].missing for gaps in out["gaps"]] == [3, 2]
    g.close()
    assert g.ledger.reconciles()
    snap = g.ledger.snapshot()["exchanges"]["binance"]
    assert (snap["messages"], snap["data"], snap["quarantined"], snap["book_updates"], snap["gaps"]) == (5, 4, 1, 4, 2)
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        assert con.execute("SELECT kind, missing, detail FROM gaps ORDER BY start_ts").fetchall() == [
            ("sequence", 3, "depth update ids 6..8 missing"), ("sequence", 2, "depth update ids 10..11 missing")]
        assert con.execute("SELECT list(sequence ORDER BY rowid) FROM book_updates").fetchall() == [([2, 5, 9, 12],)]
    finally:
        con.close()


def test_a_silent_instrument_is_a_gap_when_its_quotes_resume(db_path):
    clock = SimulatedClock(T0)
    writer = DuckDBWriter(db_path, flush_interval_s=1.0)
    g = build_graph(clock=clock, writer=writer, oracle=MedianOracle(), silence_limit_s=5.0)
    gaps = g.gaps.sink_to_list()
    try:
        g.raw.emit(make_raw("binance", [(T0, book("30000", "30001")), (T0, book("0.35", "0.36", symbol="NKNUSDT"))]))
        clock.advance_to(T0 + 4.0)
        g.tick()
        assert g.silence.silent == []
        clock.advance_to(T0 + 6.0)
        g.tick()
        assert g.silence.silent == [("binance", "BTCUSDT")]  # NKN is not watched
        clock.advance_to(T0 + 9.0)
        g.raw.emit(make_raw("binance", [(T0 + 9.0, book("30002", "30003", u=2))]))
        assert gaps == [[Gap("binance", "BTCUSDT", "silence", T0, T0 + 9.0, -1, "no data for more than 5 s")]]
        g.close()
        assert len(gaps) == 1  # nothing open at the end
        assert g.ledger.reconciles()
        assert g.ledger.snapshot()["exchanges"]["binance"]["gaps"] == 1
    finally:
        release(g.gaps)


def test_the_graph_refuses_a_trade_repeated_in_a_later_batch(graph):
    g, clock, out = graph
    g.raw.emit(make_raw("binance", [(T0, AGG)]))
    g.raw.emit(make_raw("binance", [(T0 + 1.0, AGG)]))
    assert len(out["trades"]) == 1
    assert [(r.reason, r.raw) for r in out["quarantine"][0]] == [("duplicate trade: already received", AGG)]
    g.close()
    snap = g.ledger.snapshot()["exchanges"]["binance"]
    assert (snap["messages"], snap["trades"], snap["quarantined"], snap["pending"]) == (2, 1, 1, 0)


def test_capacity_flush_inside_a_batch_is_counted(db_path):
    clock = SimulatedClock(T0)
    writer = DuckDBWriter(db_path, capacity_rows=5, flush_interval_s=1e9)  # flush at 4 rows
    g = build_graph(clock=clock, writer=writer, oracle=MedianOracle())
    commits = g.commits.sink_to_list()
    try:
        msgs = [(T0 + i * 0.001, book(f"{100 + i}", f"{101 + i}", u=i)) for i in range(6)]
        g.raw.emit(make_raw("binance", msgs))
        assert commits, "the append that filled the buffer must flush and commit"
        g.close()
        assert g.ledger.reconciles()
        assert g.ledger.snapshot()["exchanges"]["binance"]["quotes"] == 6
    finally:
        release(g.commits)


@pytest.mark.parametrize("bad_e", ['"nan"', "1e20"])
def test_a_refused_depth_message_with_an_implausible_time_does_not_break_the_graph(db_path, bad_e):
    clock = SimulatedClock(T0)
    g = build_graph(clock=clock, writer=DuckDBWriter(db_path), oracle=MedianOracle())
    bad = depth(5, 6).replace(f'"E": {int(T0 * 1000) + 10}', f'"E": {bad_e}')
    assert bad != depth(5, 6)
    g.raw.emit(make_raw("binance", [(T0, depth(1, 2)), (T0 + 0.1, bad), (T0 + 0.2, book("30000", "30001"))]))
    clock.advance_to(T0 + 1)
    g.close()
    assert g.ledger.reconciles()
    snap = g.ledger.snapshot()["exchanges"]["binance"]
    assert (snap["quotes"], snap["book_updates"], snap["quarantined"]) == (1, 1, 1)


def test_raw_message_sizes_are_counted_per_exchange_and_day(tmp_path):
    import duckdb

    from dataflows.clock import SimulatedClock
    from dataflows.graph import build_graph
    from models.oracle import MedianOracle
    from storage.writer import DuckDBWriter
    from tests.conftest import make_raw

    clock = SimulatedClock()
    graph = build_graph(clock=clock, writer=DuckDBWriter(tmp_path / "i.duckdb"), oracle=MedianOracle())
    day_end = 1_700_006_399.5  # 2023-11-14 23:59:59.5 UTC, and a message half a second later
    graph.raw.emit(make_raw("binance", [(day_end, '{"result":null,"id":1}'), (day_end + 1, "é")]))
    graph.close()
    con = duckdb.connect(str(tmp_path / "i.duckdb"), read_only=True)
    rows = con.execute("SELECT exchange, CAST(day AS VARCHAR), messages, raw_bytes FROM ingest_stats ORDER BY day").fetchall()
    con.close()
    assert rows == [("binance", "2023-11-14", 1, 22), ("binance", "2023-11-15", 1, 2)]
