"""Replay of recorded traffic through the graph into DuckDB."""

from __future__ import annotations

import json

import duckdb
import pytest

from dataflows.config import HedgeflowError
from dataflows.replay import batches, exchange_of, merged_captures, read_capture, replay_to_db
from storage.queries import connect_readonly, counts_by_exchange, oracle_history, table_counts
from tests.conftest import BINANCE_CAPTURE


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    db = tmp_path_factory.mktemp("replay") / "binance.duckdb"
    counts = replay_to_db([BINANCE_CAPTURE], db)
    return counts, db


def book(symbol: str, bid: float, ask: float, u: int = 1) -> str:
    return json.dumps({"stream": f"{symbol.lower()}@bookTicker",
                       "data": {"u": u, "s": symbol, "b": str(bid), "B": "1", "a": str(ask), "A": "1"}},
                      separators=(",", ":"))


def write_capture(path, lines: list[tuple[float, str]], notes: bool = True):
    text = []
    if notes:
        text.append(f"wss://stream.binance.com:9443/stream?streams=btcusdt@bookTicker <-> {lines[0][0] - 1}")
    for ts, msg in lines:
        text.append(f"{ts!r}: {msg}")
    if notes:
        text.append("wss://stream.binance.com:9443/stream <- 1633998511.1: {\"method\": \"SUBSCRIBE\"}")
        text.append("")
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------- the recorded capture


def test_replay_of_recorded_binance_counts(replayed):
    counts, db = replayed
    b = counts["exchanges"]["binance"]
    assert list(counts["exchanges"]) == ["binance"]
    assert b == {
        "messages": 265,
        "data": 263,  # 84 bookTicker + 2 aggTrade + 177 depth@100ms messages
        "control": 0,
        "ignored": 2,  # kline_1m
        "quarantined": 0,
        "trades": 2,
        "quotes": 84,
        "option_tickers": 0,
        "book_updates": 422,  # one row per price level of the 177 depth diffs
        "funding": 0,
        "index_prices": 0,
        "gaps": 0,  # the depth update ids follow on; the capture's instruments are not BTC/ETH
        "duplicates": 0, "out_of_order": 0, "pending": 0,
    }
    assert counts["total"] == b
    assert counts["db"] == str(db)
    assert len(counts["captures"]) == 1 and counts["captures"][0].endswith("BINANCE.ws.1.0")
    json.dumps(counts)  # printable as the CLI prints it


def test_replay_database_rows_match_the_counts(replayed):
    counts, db = replayed
    con = connect_readonly(db)
    try:
        tc = table_counts(con)
        b = counts["exchanges"]["binance"]
        for table in ("trades", "quotes", "option_tickers", "book_updates", "funding", "index_prices", "gaps"):
            assert tc[table] == b[table], table
        assert tc["quarantine"] == b["quarantined"]
        assert tc["book_updates"] == 422
        df = counts_by_exchange(con)
        assert df.to_dict("records") == [{"exchange": "binance", "trades": 2, "quotes": 84, "quarantined": 0}]
        # stored times are the capture's, in order
        first, last = con.execute("SELECT min(epoch(receive_ts)), max(epoch(receive_ts)) FROM quotes").fetchone()
        assert first == pytest.approx(1633998513.377805, abs=1e-6)
        assert last <= 1633998542.0778618
        # the first depth diff, as stored: three NKNUSDT bid levels with the message's last update id
        assert con.execute("""
            SELECT instrument, side, price, size_coin, sequence, is_snapshot
            FROM book_updates ORDER BY receive_ts, rowid LIMIT 3""").fetchall() == [
            ("NKNUSDT", "bid", 0.3513, 6195.0, 499869752, False),
            ("NKNUSDT", "bid", 0.3475, 5548.0, 499869752, False),
            ("NKNUSDT", "bid", 0.3464, 6222.0, 499869752, False),
        ]
        assert con.execute(
            "SELECT instrument, count(*) FROM book_updates GROUP BY ALL ORDER BY instrument").fetchall() == [
            ("BLZETH", 12), ("LRCBTC", 27), ("NKNUSDT", 379), ("RUNEEUR", 4)]
    finally:
        con.close()


def test_oracle_prices_for_usd_pairs_only(replayed):
    _, db = replayed
    con = connect_readonly(db)
    try:
        nkn = oracle_history(con, "NKN")
        assert len(nkn) > 0
        # One venue is fewer than the 3 sources a publishable price needs: priced, but degraded.
        assert set(nkn["status"]) == {"degraded"}
        assert set(nkn["reason"]) == {"1 of 3 required sources"}
        assert nkn["price"].between(0.34, 0.36).all()
        assert nkn["ts"].is_monotonic_increasing
        # at most one price per interval (1 s by default)
        gaps = nkn["ts"].diff().dropna().dt.total_seconds()
        assert (gaps >= 1.0).all()
        assert oracle_history(con, "LRC").empty  # LRCBTC is quoted in BTC
        assert oracle_history(con, "RUNE").empty  # EUR
        assert oracle_history(con, "BLZ").empty  # ETH
        assert set(oracle_history(con)["asset"]) == {"NKN"}
    finally:
        con.close()


def test_connection_notes_are_skipped(binance_capture):
    lines = list(read_capture(binance_capture))
    assert len(lines) == 265
    assert all(l.exchange == "binance" for l in lines)
    assert lines[0].receive_ts == 1633998512.0633569
    assert lines[0].message.startswith('{"stream":"nknusdt@depth@100ms"')
    assert not any(l.message.startswith("wss://") for l in lines)
    raw_lines = binance_capture.read_text().splitlines()
    assert raw_lines[0].startswith("wss://")  # the note really is there


def test_notes_in_a_synthetic_capture_are_skipped_and_not_counted(tmp_path):
    cap = write_capture(tmp_path / "BINANCE.notes", [(1700000100.0, book("BTCUSDT", 1, 2)), (1700000100.5, book("BTCUSDT", 1, 3))])
    got = list(read_capture(cap))
    assert [(l.receive_ts, l.exchange) for l in got] == [(1700000100.0, "binance"), (1700000100.5, "binance")]
    counts = replay_to_db([cap], tmp_path / "n.duckdb")
    assert counts["exchanges"]["binance"]["messages"] == 2
    assert counts["exchanges"]["binance"]["quarantined"] == 0


def test_exchange_of_file_names():
    assert exchange_of("/x/BINANCE.ws.1.0") == "binance"
    assert exchange_of("KRAKEN.ws.50.0") == "kraken"
    assert exchange_of("BINANCE.a") == "binance"


# ----------------------------------------------------------------------- merging captures


def test_merging_two_captures_by_time(tmp_path):
    a = write_capture(tmp_path / "BINANCE.a", [
        (1700001000.00, book("BTCUSDT", 100, 101, 1)),
        (1700001000.20, book("BTCUSDT", 102, 103, 2)),
        (1700001001.50, book("BTCUSDT", 104, 105, 3)),
    ])
    b = write_capture(tmp_path / "BINANCE.b", [
        (1700001000.10, book("ETHUSDT", 10, 11, 1)),
        (1700001000.30, "not json"),
        (1700001001.00, book("ETHUSDT", 12, 13, 2)),
        (1700001002.00, '{"result":null,"id":1}'),
    ])
    merged = list(merged_captures([a, b]))
    assert [l.receive_ts for l in merged] == [1700001000.0, 1700001000.1, 1700001000.2, 1700001000.3, 1700001001.0, 1700001001.5, 1700001002.0]
    assert {l.exchange for l in merged} == {"binance"}
    assert [l.message for l in merged][:2] == [book("BTCUSDT", 100, 101, 1), book("ETHUSDT", 10, 11, 1)]

    # grouped like the live source: one exchange, within the latency budget
    groups = list(batches(iter(merged), max_messages=1000, max_latency_s=0.25))
    assert [list(g.receive_ts) for g in groups] == [[1700001000.0, 1700001000.1, 1700001000.2], [1700001000.3], [1700001001.0], [1700001001.5], [1700001002.0]]
    assert [len(g) for g in batches(iter(merged), max_messages=2, max_latency_s=100)] == [2, 2, 2, 1]

    db = tmp_path / "merged.duckdb"
    counts = replay_to_db([a, b], db)
    c = counts["exchanges"]["binance"]
    assert list(counts["exchanges"]) == ["binance"]
    assert (c["messages"], c["data"], c["quotes"], c["quarantined"], c["control"], c["pending"]) == (7, 5, 5, 1, 1, 0)
    con = duckdb.connect(str(db), read_only=True)
    try:
        # stored in merged (receive time) order
        assert con.execute("SELECT instrument, bid FROM quotes ORDER BY rowid").fetchall() == [
            ("BTCUSDT", 100.0), ("ETHUSDT", 10.0), ("BTCUSDT", 102.0), ("ETHUSDT", 12.0), ("BTCUSDT", 104.0)]
        assert con.execute("SELECT raw, epoch(receive_ts) FROM quarantine").fetchall() == [("not json", 1700001000.3)]
        assets = {r[0] for r in con.execute("SELECT DISTINCT asset FROM oracle_prices").fetchall()}
        assert assets == {"BTC", "ETH"}
    finally:
        con.close()


def test_merging_captures_of_two_exchanges_keeps_them_apart(tmp_path):
    a = write_capture(tmp_path / "BINANCE.a", [(1700000010.0, book("BTCUSDT", 1, 2)), (1700000010.2, book("BTCUSDT", 1, 2))])
    k = write_capture(tmp_path / "ACME.x", [(1700000010.1, '{"event":"heartbeat"}')])
    merged = list(merged_captures([a, k]))
    assert [l.exchange for l in merged] == ["binance", "acme", "binance"]
    groups = list(batches(iter(merged)))
    assert [g.exchange for g in groups] == ["binance", "acme", "binance"]
    db = tmp_path / "two.duckdb"
    counts = replay_to_db([a, k], db)
    assert counts["exchanges"]["binance"]["quotes"] == 2
    # an exchange without an adapter: quarantined, never lost
    acme = counts["exchanges"]["acme"]
    assert (acme["messages"], acme["quarantined"], acme["data"], acme["pending"]) == (1, 1, 0, 0)
    assert counts["total"]["pending"] == 0
    con = duckdb.connect(str(db), read_only=True)
    try:
        (reason, raw), = con.execute("SELECT reason, raw FROM quarantine WHERE exchange = 'acme'").fetchall()
        assert reason.startswith("acme no adapter for this exchange") and raw == '{"event":"heartbeat"}'
    finally:
        con.close()


def depth(U: int, u: int, E: float) -> str:
    return json.dumps({"stream": "btcusdt@depth@100ms", "data": {
        "e": "depthUpdate", "E": int(E * 1000), "s": "BTCUSDT", "U": U, "u": u,
        "b": [["30000.0", "1.5"]], "a": [["30001.0", "0"]]}}, separators=(",", ":"))


def test_replay_records_sequence_gaps_and_stale_updates(tmp_path):
    t = 1700002000.0
    cap = write_capture(tmp_path / "BINANCE.depth", [
        (t, depth(10, 12, t)),
        (t + 0.1, depth(13, 13, t + 0.1)),
        (t + 0.2, depth(20, 21, t + 0.2)),  # 14..19 lost
        (t + 0.3, depth(18, 21, t + 0.3)),  # nothing new: stale
        (t + 0.4, depth(22, 22, t + 0.4)),
    ])
    db = tmp_path / "depth.duckdb"
    counts = replay_to_db([cap], db)
    c = counts["exchanges"]["binance"]
    assert (c["messages"], c["data"], c["quarantined"], c["book_updates"], c["gaps"], c["pending"]) == (5, 4, 1, 8, 1, 0)
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute(
            "SELECT instrument, kind, epoch(start_ts), epoch(end_ts), missing, detail FROM gaps").fetchall() == [
            ("BTCUSDT", "sequence", t + 0.2, t + 0.2, 6, "depth update ids 14..19 missing")]
        (reason,), = con.execute("SELECT reason FROM quarantine").fetchall()
        assert reason == "binance depthUpdate: stale update ids 18..21 (expected 22)"
    finally:
        con.close()


# ----------------------------------------------------------------------- errors


def test_missing_capture_raises_hedgeflow_error(tmp_path):
    with pytest.raises(HedgeflowError, match="not found"):
        replay_to_db([tmp_path / "NOPE.ws.1.0"], tmp_path / "x.duckdb")
    with pytest.raises(HedgeflowError):
        list(read_capture(tmp_path / "missing"))
    assert not (tmp_path / "x.duckdb").exists()


def test_missing_second_capture_raises_before_writing(tmp_path, binance_capture):
    with pytest.raises(HedgeflowError, match="NOPE"):
        replay_to_db([binance_capture, tmp_path / "NOPE.ws.1.0"], tmp_path / "y.duckdb")
    assert not (tmp_path / "y.duckdb").exists()
