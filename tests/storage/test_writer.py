"""Tests of storage.writer.DuckDBWriter and storage.schema against a real DuckDB file."""

from __future__ import annotations

from collections import Counter

import duckdb
import pyarrow as pa
import pytest

from models.records import OraclePrice, QuarantineRecord
from storage.schema import TABLES, create_schema
from storage.writer import Commit, DuckDBWriter
from tests.conftest import make_quotes, make_trades

# Event times with sub-millisecond parts, as the exchanges' receive times have.
T1 = 1633998523.957215
T2 = 1633998513.3923042


@pytest.fixture
def writer(db_path):
    w = DuckDBWriter(db_path, capacity_rows=100, flush_interval_s=1.0)
    yield w
    try:
        w.con.close()
    except Exception:  # already closed by the test
        pass


def rows(con, sql, params=()):
    return con.execute(sql, list(params)).fetchall()


def test_schema_tables_exist_and_create_schema_is_idempotent(db_path, writer):
    writer.append_quotes(make_quotes({}), 0.0)
    writer.flush()
    create_schema(writer.con)
    create_schema(writer.con)
    names = {r[0] for r in rows(writer.con, "SELECT table_name FROM information_schema.tables")}
    assert set(TABLES) <= names
    assert rows(writer.con, "SELECT count(*) FROM quotes") == [(1,)]  # data survives


def test_quotes_round_trip(writer):
    b = make_quotes(
        {"event_ts": T1, "receive_ts": T1 + 0.25, "bid": 0.3521, "bid_size_coin": 672.0,
         "ask": 0.3526, "ask_size_coin": 3199.0, "instrument": "NKNUSDT", "asset": "NKN"},
        {"event_ts": T2, "bid": 100.5, "ask": 101.5, "exchange": "kraken", "quote_ccy": "USD"},
    )
    assert writer.append_quotes(b, now=T1) is None  # below capacity: buffered
    assert writer.buffered_rows == 2
    assert rows(writer.con, "SELECT count(*) FROM quotes") == [(0,)]
    c = writer.flush()
    assert writer.buffered_rows == 0
    assert c.rows == {"quotes": Counter({"binance": 1, "kraken": 1})}
    assert c.total == 2
    got = rows(writer.con, """
        SELECT exchange, instrument, asset, quote_ccy, bid, bid_size_coin, ask, ask_size_coin
        FROM quotes ORDER BY exchange""")
    assert got == [
        ("binance", "NKNUSDT", "NKN", "USDT", 0.3521, 672.0, 0.3526, 3199.0),
        ("kraken", "BTCUSDT", "BTC", "USD", 100.5, 1.0, 101.5, 2.0),
    ]


def test_trades_round_trip(writer):
    b = make_trades(
        {"trade_id": "15683430", "price": 0.3528, "size_coin": 58.0, "side": "buy", "event_ts": 1633998523.963},
        {"trade_id": "15683431", "price": 0.3527, "size_coin": 1.5, "side": "sell", "event_ts": 1633998524.001},
    )
    writer.append_trades(b, now=0.0)
    c = writer.flush()
    assert c.rows == {"trades": Counter({"binance": 2})}
    got = rows(writer.con, "SELECT trade_id, price, size_coin, side FROM trades ORDER BY trade_id")
    assert got == [("15683430", 0.3528, 58.0, "buy"), ("15683431", 0.3527, 1.5, "sell")]


def test_timestamps_are_utc_timestamptz_equal_to_the_float_seconds(writer):
    times = [T1, T2, 1633998523.963, 0.000001, 1700000000.0]
    writer.append_trades(make_trades(*({"event_ts": t, "receive_ts": t + 1e-6} for t in times)), 0.0)
    writer.append_quarantine([QuarantineRecord("binance", T1, "r", "x")], 0.0)
    writer.flush()
    types = rows(writer.con, "SELECT DISTINCT typeof(event_ts), typeof(receive_ts) FROM trades")
    assert types == [("TIMESTAMP WITH TIME ZONE", "TIMESTAMP WITH TIME ZONE")]
    cols = {r[0]: r[1] for r in rows(writer.con, """
        SELECT column_name, data_type FROM information_schema.columns
        WHERE table_name IN ('trades', 'quotes', 'quarantine', 'oracle_prices')
          AND column_name IN ('event_ts', 'receive_ts', 'ts')""")}
    assert set(cols.values()) == {"TIMESTAMP WITH TIME ZONE"}
    got = rows(writer.con, "SELECT epoch_us(event_ts), epoch_us(receive_ts) FROM trades ORDER BY trade_id")
    assert got == [(round(t * 1e6), round((t + 1e-6) * 1e6)) for t in times]
    # read back as seconds, equal to the microsecond
    for (s,), t in zip(rows(writer.con, "SELECT epoch(event_ts) FROM trades ORDER BY trade_id"), times):
        assert abs(s - t) <= 0.5e-6
    # the instant is the UTC one whatever the session's time zone
    writer.con.execute("SET TimeZone = 'America/New_York'")
    assert rows(writer.con, "SELECT strftime(event_ts AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S.%f') FROM trades WHERE trade_id = '5'") == [
        ("2023-11-14 22:13:20.000000",)
    ]
    assert rows(writer.con, "SELECT epoch_us(receive_ts) FROM quarantine") == [(round(T1 * 1e6),)]


def test_flush_at_80_percent_of_capacity(db_path):
    w = DuckDBWriter(db_path, capacity_rows=10, flush_interval_s=1e9)
    try:
        assert w.append_quotes(make_quotes(*[{}] * 5), 0.0) is None
        assert w.append_trades(make_trades({}, {}), 0.0) is None  # 7 rows < 8
        assert w.buffered_rows == 7
        c = w.append_quotes(make_quotes({}), 0.0)  # 8 rows = 80% of 10
        assert isinstance(c, Commit)
        assert c.rows == {"quotes": Counter({"binance": 6}), "trades": Counter({"binance": 2})}
        assert w.buffered_rows == 0
        assert rows(w.con, "SELECT count(*) FROM quotes") == [(6,)]
        assert rows(w.con, "SELECT count(*) FROM trades") == [(2,)]
        # one append bigger than the whole capacity is written at once
        c = w.append_quotes(make_quotes(*[{}] * 25), 0.0)
        assert c.total == 25 and w.buffered_rows == 0
    finally:
        w.close()


def test_time_based_maybe_flush(db_path):
    w = DuckDBWriter(db_path, capacity_rows=1000, flush_interval_s=2.0)
    try:
        assert w.maybe_flush(100.0) is None  # nothing buffered
        w.append_quotes(make_quotes({}), now=100.0)
        w.append_quotes(make_quotes({}), now=101.5)  # the oldest row decides
        assert w.maybe_flush(101.0) is None
        assert w.maybe_flush(101.999) is None
        c = w.maybe_flush(102.0)
        assert c is not None and c.rows == {"quotes": Counter({"binance": 2})}
        assert w.maybe_flush(200.0) is None  # the buffer is empty again
        w.append_trades(make_trades({}), now=300.0)
        assert w.maybe_flush(301.0) is None  # the clock restarted at the next append
        assert w.maybe_flush(302.5).total == 1
    finally:
        w.close()


def test_commit_rows_per_table_and_exchange(writer):
    writer.append_quotes(make_quotes({"exchange": "binance"}, {"exchange": "kraken"}, {"exchange": "binance"}), 0.0)
    writer.append_trades(make_trades({"exchange": "kraken"}), 0.0)
    writer.append_quarantine(
        (QuarantineRecord("binance", 1.0, "why", "raw1"), QuarantineRecord("coinbase", 2.0, "why", "raw2")), 0.0
    )
    writer.append_oracle_prices([OraclePrice("BTC", 1.0, 100.0, 0.5, 2, "ok", "", ("a", "b"))], 0.0)
    c = writer.flush()
    assert c.rows == {
        "quotes": Counter({"binance": 2, "kraken": 1}),
        "trades": Counter({"kraken": 1}),
        "quarantine": Counter({"binance": 1, "coinbase": 1}),
        "oracle_prices": Counter({"": 1}),
    }
    assert c.total == 7
    assert writer.flush() is None  # nothing left


def test_empty_appends_are_no_ops(writer):
    assert writer.append_quotes(make_quotes(), 0.0) is None
    assert writer.append_quarantine([], 0.0) is None
    assert writer.append_oracle_prices([], 0.0) is None
    assert writer.buffered_rows == 0
    assert writer.flush() is None


def test_quarantine_round_trip(writer):
    recs = [QuarantineRecord("binance", T1, "binance invalid JSON: x", '{"stream": '),
            QuarantineRecord("binance", T2, "invalid: crossed or locked book: bid >= ask", "ünïcode ✓")]
    writer.append_quarantine(recs, 0.0)
    writer.flush()
    assert rows(writer.con, "SELECT exchange, reason, raw FROM quarantine ORDER BY receive_ts DESC") == [
        (r.exchange, r.reason, r.raw) for r in recs
    ]


def test_oracle_prices_nan_stored_as_null(writer):
    prices = [
        OraclePrice("BTC", 10.0, 101.25, 0.75, 3, "ok", "", ("a:BTCUSD", "b:BTCUSD", "c:BTCUSD")),
        OraclePrice("ETH", 10.0, float("nan"), float("nan"), 0, "halted", "no fresh sources", ()),
    ]
    writer.append_oracle_prices(prices, 10.0)
    writer.flush()
    got = rows(writer.con, """
        SELECT asset, epoch(ts), price, confidence, n_sources, status, reason, sources,
               price IS NULL, confidence IS NULL
        FROM oracle_prices ORDER BY asset""")
    assert got == [
        ("BTC", 10.0, 101.25, 0.75, 3, "ok", "", ["a:BTCUSD", "b:BTCUSD", "c:BTCUSD"], False, False),
        ("ETH", 10.0, None, None, 0, "halted", "no fresh sources", [], True, True),
    ]
    assert rows(writer.con, "SELECT count(*) FROM oracle_prices WHERE isnan(price)") == [(0,)]


def test_close_flushes_and_leaves_a_file_that_reopens_read_only(db_path):
    w = DuckDBWriter(db_path, capacity_rows=1000)
    w.append_quotes(make_quotes({}, {}), 0.0)
    w.append_trades(make_trades({}), 0.0)
    c = w.close()
    assert c is not None and c.total == 3
    assert db_path.is_file()
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        assert rows(con, "SELECT count(*) FROM quotes") == [(2,)]
        assert rows(con, "SELECT count(*) FROM trades") == [(1,)]
        with pytest.raises(duckdb.Error):
            con.execute("INSERT INTO gaps VALUES ('x', 'y', 'z', now(), NULL, 1, '')")
    finally:
        con.close()
    # and a writer can open it again: the schema is created idempotently, data kept
    w2 = DuckDBWriter(db_path)
    try:
        assert rows(w2.con, "SELECT count(*) FROM quotes") == [(2,)]
    finally:
        assert w2.close() is None


def test_close_with_nothing_buffered_returns_none(db_path):
    w = DuckDBWriter(db_path)
    assert w.close() is None
    assert db_path.is_file()


def test_writer_creates_parent_directories(tmp_path):
    path = tmp_path / "a" / "b" / "c.duckdb"
    DuckDBWriter(path).close()
    assert path.is_file()


def test_many_flushes_accumulate(writer):
    for i in range(5):
        writer.append_quotes(make_quotes({"bid": float(i + 1), "ask": float(i + 2)}), float(i))
        writer.flush()
    assert rows(writer.con, "SELECT list(bid ORDER BY bid) FROM quotes") == [([1.0, 2.0, 3.0, 4.0, 5.0],)]


def test_a_time_outside_the_timestamp_range_is_refused_loudly_not_stored_as_another_instant(db_path):
    # 1e15 s is a nanosecond epoch read as milliseconds; microseconds overflow int64. Storing it
    # as some other instant (year 290309 BC) would lose the row silently; refusing is loud.
    w = DuckDBWriter(db_path, capacity_rows=1000)
    try:
        try:
            w.append_trades(make_trades({"event_ts": 1e15, "trade_id": "far"}), 0.0)
            w.flush()
        except (ValueError, OverflowError, pa.ArrowInvalid, duckdb.Error):
            return  # refused loudly
        stored = rows(w.con, "SELECT epoch_us(event_ts) FROM trades WHERE trade_id = 'far'")
        assert stored == [(round(1e15 * 1e6),)], f"stored as a different instant: {stored}"
    finally:
        w.con.close()
