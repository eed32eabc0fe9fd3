"""The whole graph, the streamz way: emit raw batches, watch the named streams, read DuckDB."""

from __future__ import annotations

import json
import math

import duckdb
import pytest

from dataflows.clock import SimulatedClock
from dataflows.graph import build_graph
from models.oracle import MedianOracle, MedianOracleConfig
from models.records import QuoteBatch, TradeBatch
from storage.writer import Commit, DuckDBWriter
from tests.conftest import make_raw

T0 = 1_700_000_000.0


def book(bid: str, ask: str, symbol: str = "BTCUSDT", u: int = 1) -> str:
    return json.dumps({"stream": f"{symbol.lower()}@bookTicker",
                       "data": {"u": u, "s": symbol, "b": bid, "B": "1.5", "a": ask, "A": "2.5"}})


AGG = json.dumps({"stream": "btcusdt@aggTrade", "data": {
    "e": "aggTrade", "E": int(T0 * 1000) + 500, "s": "BTCUSDT", "a": 42, "p": "30000.5", "q": "0.25",
    "f": 1, "l": 1, "T": int(T0 * 1000) + 500, "m": True, "M": True}})
DEPTH = json.dumps({"stream": "btcusdt@depth@100ms", "data": {
    "e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 1, "u": 2, "b": [["30000", "1"]], "a": []}})
CROSSED = book("30010", "30000", u=3)
BAD_JSON = '{"stream": "btcusdt@bookTicker", "data": {"u": '


@pytest.fixture
def graph(db_path):
    clock = SimulatedClock(T0)
    writer = DuckDBWriter(db_path, capacity_rows=10_000, flush_interval_s=1.0)
    g = build_graph(clock=clock, writer=writer,
                    oracle=MedianOracle(MedianOracleConfig(min_sources=1, stale_after_s=10.0, interval_s=1.0)))
    sinks = {name: getattr(g, name).sink_to_list()
             for name in ("quotes", "trades", "quarantine", "oracle_prices", "commits")}
    yield g, clock, sinks
    # streamz sinks live in a global set: release them
    for name in sinks:
        for node in list(getattr(g, name).downstreams):
            node.destroy()
    try:
        writer.con.close()
    except Exception:
        pass


def test_graph_end_to_end(graph, db_path):
    g, clock, out = graph

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
    assert g.ledger.pending("binance") == 5 - 1  # the depth message is ignored, the rest pending

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
    assert g.ledger.reconciles()

    # a tick 20 s later with no quotes: the oracle turns halted
    clock.advance_to(T0 + 22.0)
    g.tick()
    halted = out["oracle_prices"][-1][0]
    assert halted.status == "halted" and math.isnan(halted.price_usd)

    g.close()
    assert g.ledger.reconciles()
    snap = g.ledger.snapshot()["exchanges"]["binance"]
    assert {k: snap[k] for k in ("messages", "quotes", "trades", "quarantined", "ignored", "control", "pending")} == {
        "messages": 6, "quotes": 2, "trades": 1, "quarantined": 2, "ignored": 1, "control": 0, "pending": 0,
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
    finally:
        con.close()


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
        for node in list(g.commits.downstreams):
            node.destroy()
