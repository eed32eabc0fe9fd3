"""Tests of storage.quality: the data quality report of plan 003 on known data and on replays."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from storage.quality import QualityReport, format_quality, quality_report
from storage.queries import connect_readonly
from storage.surface import open_surface
from tests.storage.conftest import make_db

UTC = dt.timezone.utc
D, D2 = dt.date(2024, 3, 1), dt.date(2024, 3, 2)


def at(day: dt.date, seconds: float) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), UTC) + dt.timedelta(seconds=seconds)


def trade(exchange, instrument, trade_id, receive_s, event_s, day=D) -> dict:
    return {
        "exchange": exchange, "instrument": instrument, "asset": "BTC", "quote_ccy": "USD",
        "event_ts": at(day, event_s), "receive_ts": at(day, receive_s), "trade_id": trade_id,
        "price": 100.0, "size_coin": 1.0, "side": "buy",
    }


def quote(receive_s, event_s) -> dict:
    return {
        "exchange": "binance", "instrument": "BTCUSDT", "asset": "BTC", "quote_ccy": "USDT",
        "event_ts": at(D, event_s), "receive_ts": at(D, receive_s), "bid": 99.0,
        "bid_size_coin": 1.0, "ask": 101.0, "ask_size_coin": 1.0,
    }


def gap(exchange, instrument, kind, start_s, end_s, missing) -> dict:
    return {
        "exchange": exchange, "instrument": instrument, "kind": kind, "start_ts": at(D, start_s),
        "end_ts": None if end_s is None else at(D, end_s), "missing": missing, "detail": kind,
    }


def quarantined(exchange, reason, raw, day=D) -> dict:
    return {"exchange": exchange, "receive_ts": at(day, 500), "reason": reason, "raw": raw}


DUP = "duplicate trade: already received"
CROSSED = "invalid: crossed or locked book: bid >= ask"

TINY = {
    "trades": [
        # binance: ids 100, 101, 103 -> 102 missing: 3 of 4 expected
        trade("binance", "BTCUSDT", "100", 10, 9),
        trade("binance", "BTCUSDT", "101", 20, 19),
        trade("binance", "BTCUSDT", "103", 30, 29),
        trade("binance", "BTCUSDT", "200", 10, 9, day=D2),
        # coinbase: complete ids, the third received after one with a later event time
        trade("coinbase", "BTC-USD", "7", 10, 10),
        trade("coinbase", "BTC-USD", "8", 20, 25),
        trade("coinbase", "BTC-USD", "9", 30, 15),
        # kraken: no numeric trade ids, no completeness
        trade("kraken", "XBT/USD", "1709251210.1-100-1", 10, 10),
        trade("kraken", "XBT/USD", "1709251220.1-100-1", 20, 20),
    ],
    "quotes": [
        # one message (same receive time) with falling event times: not out of order...
        quote(40, 39), quote(40, 38), quote(40, 37),
        # ...a later receive with an earlier event time than the previous tick: out of order
        quote(50, 36),
    ],
    "book_updates": [
        {"exchange": "coinbase", "instrument": "BTC-USD", "asset": "BTC", "event_ts": at(D, 60),
         "receive_ts": at(D, 60), "side": s, "price": 100.0, "size_coin": 1.0,
         "is_snapshot": False, "sequence": n}
        for n, s in ((1, "bid"), (2, "ask"))
    ],
    "option_tickers": [{
        "exchange": "deribit", "instrument": "ETH-29MAR24-4000-C", "asset": "ETH",
        "event_ts": at(D, 70), "receive_ts": at(D, 70), "expiry_utc": at(dt.date(2024, 3, 29), 8 * 3600),
        "strike_usd": 4000.0, "is_call": True, "mark_coin": 0.01, "underlying_usd": 3400.0,
    }],
    "funding": [{
        "exchange": "deribit", "instrument": "ETH-PERPETUAL", "asset": "ETH",
        "event_ts": at(D, 80), "receive_ts": at(D, 80), "mark_usd": 3400.0, "funding_rate": 1e-5,
    }],
    "gaps": [
        gap("binance", "BTCUSDT", "silence", 100, 110, -1),
        gap("binance", "BTCUSDT", "disconnect", 200, 205.5, -1),
        gap("binance", "", "disconnect", 300, None, -1),
        gap("coinbase", "BTC-USD", "sequence", 400, 400, 3),
    ],
    "quarantine": [
        quarantined("binance", DUP, '{"a":1}'),
        quarantined("binance", DUP, '{"a":2}'),
        quarantined("binance", CROSSED, "xyz"),
        quarantined("coinbase", DUP, '{"b":1}', day=D2),
    ],
}


def row(df: pd.DataFrame, **keys) -> dict:
    hit = df
    for k, v in keys.items():
        hit = hit[hit[k] == v]
    assert len(hit) == 1, (keys, hit)
    return hit.iloc[0].to_dict()


@pytest.fixture
def tiny(tmp_path) -> Path:
    return make_db(tmp_path / "tiny.duckdb", TINY, ingest=[("binance", D, 10, 1_000_000)])


@pytest.fixture
def report(tiny) -> QualityReport:
    con = open_surface(tiny, None)
    try:
        return quality_report(con)
    finally:
        con.close()


# ------------------------------------------------------------------------------ known values


def test_per_instrument_known_values(report):
    pi = report.per_instrument
    b = row(pi, day=D, exchange="binance", instrument="BTCUSDT")
    assert (b["trades"], b["quotes"], b["ticks"], b["out_of_order"]) == (3, 4, 7, 1)
    assert (b["gaps"], b["gap_seconds"], b["open_gaps"], b["gap_missing"]) == (2, 15.5, 0, 0)
    assert (b["id_trades"], b["expected_trades"], b["completeness"]) == (3, 4, 0.75)
    conn = row(pi, day=D, exchange="binance", instrument="")  # a connection-level gap
    assert (conn["ticks"], conn["gaps"], conn["open_gaps"], conn["gap_seconds"]) == (0, 1, 1, 0.0)
    c = row(pi, day=D, exchange="coinbase", instrument="BTC-USD")
    assert (c["trades"], c["book_updates"], c["ticks"], c["out_of_order"]) == (3, 2, 5, 1)
    assert (c["gaps"], c["gap_missing"], c["completeness"]) == (1, 3, 1.0)
    k = row(pi, day=D, exchange="kraken", instrument="XBT/USD")
    assert k["expected_trades"] == 0 and math.isnan(k["completeness"])
    assert row(pi, day=D, exchange="deribit", instrument="ETH-PERPETUAL")["funding"] == 1
    assert row(pi, day=D, exchange="deribit", instrument="ETH-29MAR24-4000-C")["option_tickers"] == 1
    assert row(pi, day=D2, exchange="binance", instrument="BTCUSDT")["completeness"] == 1.0
    assert isinstance(pi["day"].iloc[0], dt.date)


def test_quarantine_and_summary_known_values(report):
    qr = report.quarantine_by_reason
    assert [tuple(r) for r in qr[["day", "exchange", "reason", "messages", "raw_bytes"]].itertuples(index=False)] == [
        (D, "binance", DUP, 2, 14), (D, "binance", CROSSED, 1, 3), (D2, "coinbase", DUP, 1, 7),
    ]
    s = report.summary
    assert list(zip(s["day"], s["exchange"])) == [
        (D, "binance"), (D, "coinbase"), (D, "deribit"), (D, "kraken"), (D2, "binance"), (D2, "coinbase"),
    ]
    b = row(s, day=D, exchange="binance")
    assert (b["instruments"], b["ticks"], b["out_of_order"]) == (1, 7, 1)
    assert (b["gaps"], b["gap_seconds"], b["open_gaps"]) == (3, 15.5, 1)
    assert (b["quarantined"], b["duplicates_refused"], b["quarantine_raw_bytes"]) == (3, 2, 17)
    assert b["completeness"] == 0.75
    # ingest_stats supplies the raw bytes; stored bytes are the DuckDB estimate of the day's rows
    assert (b["messages"], b["raw_bytes"]) == (10, 1_000_000)
    assert b["bytes_source"] == "duckdb" and b["tick_bytes"] > 0
    assert b["stored_bytes"] >= b["tick_bytes"]
    assert b["bytes_per_tick"] == pytest.approx(b["tick_bytes"] / 7)
    assert b["compression_ratio"] == pytest.approx(1_000_000 / b["stored_bytes"])
    assert b["size_reduction"] == pytest.approx(1 - b["stored_bytes"] / 1_000_000)
    cb2 = row(s, day=D2, exchange="coinbase")
    assert (cb2["ticks"], cb2["quarantined"], cb2["duplicates_refused"]) == (0, 1, 1)
    assert math.isnan(cb2["bytes_per_tick"])
    k = row(s, day=D, exchange="kraken")
    assert pd.isna(k["raw_bytes"]) and math.isnan(k["compression_ratio"])
    assert set(report.storage["source"]) == {"duckdb"}
    assert (report.storage["bytes_per_row"] > 0).all()


def test_day_filter_and_raw_bytes_mapping(tiny):
    con = connect_readonly(tiny)  # a plain connection to the hot file works as well as a surface
    try:
        r = quality_report(con, D2)
        assert r.day == D2
        assert set(r.per_instrument["day"]) == {D2}
        assert list(zip(r.summary["exchange"], r.summary["ticks"], r.summary["duplicates_refused"])) == [
            ("binance", 1, 0), ("coinbase", 0, 1),
        ]
        r = quality_report(con, "2024-03-01", raw_bytes={("binance", "2024-03-01"): 2_000_000})
        b = row(r.summary, exchange="binance")
        assert (b["messages"], b["raw_bytes"]) == (10, 2_000_000)  # the mapping wins
        assert set(r.summary["day"]) == {D}
    finally:
        con.close()


def test_bytes_per_tick_from_the_archive(tmp_path):
    src = make_db(tmp_path / "src.duckdb", {"trades": TINY["trades"][:4]})  # binance: 3 on D, 1 on D2
    archive = tmp_path / "archive"
    archive.mkdir()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"ATTACH '{src}' AS src (READ_ONLY)")
    con.execute(
        "COPY (SELECT *, CAST(timezone('UTC', event_ts) AS DATE) AS date FROM src.trades) "
        f"TO '{archive / 'table=trades'}' (FORMAT parquet, PARTITION_BY (date, exchange), COMPRESSION zstd)"
    )
    con.close()
    day_file = next((archive / "table=trades" / f"date={D}").rglob("*.parquet"))
    hot = make_db(tmp_path / "hot.duckdb", {"trades": [TINY["trades"][3]]})  # D2 still hot
    surface = open_surface(hot, archive)
    try:
        r = quality_report(surface)
    finally:
        surface.close()
    b = row(r.summary, day=D, exchange="binance")
    assert b["bytes_source"] == "parquet"
    assert b["tick_bytes"] == pytest.approx(day_file.stat().st_size)
    assert b["bytes_per_tick"] == pytest.approx(day_file.stat().st_size / 3)
    assert row(r.summary, day=D2, exchange="binance")["bytes_source"] == "duckdb"
    assert set(r.storage["source"]) == {"parquet", "duckdb"}


# ------------------------------------------------------------------------------ replayed recordings


def test_report_on_replayed_recordings(replayed):
    con = open_surface(replayed, None)
    try:
        r = quality_report(con)
        totals = {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("trades", "quotes", "book_updates", "option_tickers", "funding")
        }
        exchanges = {e for (e,) in con.execute("SELECT DISTINCT exchange FROM trades").fetchall()}
        ingest_messages = con.execute("SELECT sum(messages) FROM ingest_stats").fetchone()[0]
    finally:
        con.close()
    assert set(r.summary["exchange"]) == exchanges == {"binance", "coinbase", "deribit", "kraken"}
    assert int(r.per_instrument["ticks"].sum()) == sum(totals.values())
    for t, n in totals.items():
        assert int(r.summary[t].sum()) == n
    coinbase = r.summary[r.summary["exchange"] == "coinbase"]
    assert (coinbase["completeness"] > 0.9).all()
    with_ticks = r.summary[r.summary["ticks"] > 0]
    assert (with_ticks["bytes_per_tick"] > 0).all()
    # The replay records the raw bytes it read (ingest_stats): every day with ticks has a ratio.
    assert (with_ticks["raw_bytes"] > 0).all() and (with_ticks["compression_ratio"] > 0).all()
    assert int(r.summary["messages"].sum()) == ingest_messages
    text = format_quality(r, max_instruments=10)
    for needle in ("Per day and exchange", "Quarantined messages by reason", "Storage",
                   "Per instrument (10 of", "binance", "coinbase", "deribit", "kraken"):
        assert needle in text


def test_format_quality_on_known_values(report):
    text = format_quality(report)
    assert text.startswith("hedgeflow data quality, every day (UTC days)")
    assert DUP in text and "75.00%" in text and "15.5" in text
    lines = text.splitlines()
    header = next(l for l in lines if l.startswith("day") and "completeness" in l and "instruments" in l)
    assert "duplicates" in header and "bytes/tick" in header
