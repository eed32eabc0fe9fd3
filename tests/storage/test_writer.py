"""Tests of storage.writer.DuckDBWriter and storage.schema against a real DuckDB file."""

from __future__ import annotations

from collections import Counter

import duckdb
import pyarrow as pa
import pytest

from models.records import (
    DATA_BATCHES,
    BookUpdateBatch,
    FundingBatch,
    Gap,
    IndexPriceBatch,
    OptionTickerBatch,
    OraclePrice,
    QuarantineRecord,
)
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
    assert writer.append_gaps([], 0.0) is None
    for table, cls in DATA_BATCHES.items():
        assert writer.append(table, cls.empty(), 0.0) is None
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


# ----------------------------------------------------------------- the new tables, generic append

NAN = float("nan")


def _batch(cls, defaults: dict, *rows: dict):
    full = [{**defaults, **r} for r in rows]
    for i, r in enumerate(full):
        r.setdefault("raw", f"row {i}")
    return cls.from_columns(
        **{c: [r[c] for r in full] for c in cls.COLUMNS if c not in ("msg_index", "out_of_order")}
    )


OPTION = dict(
    exchange="deribit", instrument="BTC-27DEC24-50000-C", asset="BTC", event_ts=T1, receive_ts=T1 + 0.01,
    expiry_utc=1735286400.0, strike_usd=50000.0, is_call=True, bid_coin=0.0105, bid_size=12.5,
    ask_coin=0.0115, ask_size=3.0, mark_coin=0.011, mark_iv=0.552, bid_iv=0.54, ask_iv=0.56,
    underlying_usd=30123.5, index_usd=30100.25, open_interest=1234.0, delta=0.12, gamma=1e-5,
    vega=25.5, theta=-12.25, rho=3.5,
)
BOOK = dict(exchange="binance", instrument="NKNUSDT", asset="NKN", event_ts=T2, receive_ts=T2 + 0.004,
            side="bid", price=0.3513, size_coin=6195.0, is_snapshot=False, sequence=499869752)
FUNDING = dict(exchange="binance", instrument="BTCUSDT", asset="BTC", event_ts=1562305380.0,
               receive_ts=1562305380.25, mark_usd=11794.15, index_usd=11784.62659091,
               funding_rate=0.00038167, next_funding_ts=1562306400.0)
INDEX = dict(exchange="deribit", index_name="btc_usd", asset="BTC", event_ts=T1, receive_ts=T1 + 0.002,
             price_usd=30100.25)


def test_append_refuses_a_table_that_is_not_a_data_table(writer):
    for table in ("quarantine", "gaps", "oracle_prices", "nope"):
        with pytest.raises(ValueError, match="not a data table"):
            writer.append(table, make_quotes({}), 0.0)
    assert writer.buffered_rows == 0


def test_new_tables_exist_with_nullable_optional_columns(writer):
    nullable = {
        (r[0], r[1]): r[2] for r in rows(writer.con, """
            SELECT table_name, column_name, is_nullable FROM information_schema.columns
            WHERE table_name IN ('quotes', 'option_tickers', 'book_updates', 'funding', 'index_prices', 'gaps')""")
    }
    assert {t for t, _ in nullable} == {"quotes", "option_tickers", "book_updates", "funding", "index_prices", "gaps"}
    assert nullable[("quotes", "bid_size_coin")] == nullable[("quotes", "ask_size_coin")] == "YES"
    assert nullable[("quotes", "bid")] == nullable[("quotes", "ask")] == "NO"
    for col in ("bid_coin", "bid_size", "ask_coin", "ask_size", "mark_iv", "bid_iv", "ask_iv",
                "index_usd", "open_interest", "delta", "gamma", "vega", "theta", "rho"):
        assert nullable[("option_tickers", col)] == "YES", col
    for col in ("strike_usd", "expiry_utc", "mark_coin", "underlying_usd", "is_call"):
        assert nullable[("option_tickers", col)] == "NO", col
    assert nullable[("funding", "next_funding_ts")] == nullable[("funding", "index_usd")] == "YES"
    assert nullable[("gaps", "end_ts")] == "YES" and nullable[("gaps", "start_ts")] == "NO"
    # bookkeeping columns are not stored
    assert not [k for k in nullable if k[1] in ("raw", "msg_index")]


def test_quotes_without_sizes_store_null_sizes(writer):
    writer.append("quotes", make_quotes({"bid_size_coin": NAN, "ask_size_coin": NAN}, {"bid_size_coin": 3.0}), 0.0)
    writer.flush()
    assert rows(writer.con, "SELECT bid_size_coin, ask_size_coin FROM quotes ORDER BY bid_size_coin NULLS FIRST") == [
        (None, None), (3.0, 2.0)]
    assert rows(writer.con, "SELECT count(*) FROM quotes WHERE isnan(bid_size_coin) OR isnan(ask_size_coin)") == [(0,)]


def test_option_tickers_round_trip_with_nulls(writer):
    b = _batch(OptionTickerBatch, OPTION, {}, {
        "instrument": "BTC-27DEC24-40000-P", "strike_usd": 40000.0, "is_call": False,
        "bid_coin": NAN, "bid_size": NAN, "bid_iv": NAN, "open_interest": NAN, "gamma": NAN,
    })
    c = writer.append("option_tickers", b, T1)
    assert c is None and writer.buffered_rows == 2
    c = writer.flush()
    assert c.rows == {"option_tickers": Counter({"deribit": 2})}
    got = rows(writer.con, """
        SELECT instrument, asset, epoch_us(event_ts), epoch_us(receive_ts), epoch(expiry_utc), strike_usd,
               is_call, bid_coin, bid_size, ask_coin, ask_size, mark_coin, mark_iv, bid_iv, ask_iv,
               underlying_usd, index_usd, open_interest, delta, gamma, vega, theta, rho
        FROM option_tickers ORDER BY strike_usd DESC""")
    o = OPTION
    assert got == [
        (o["instrument"], "BTC", round(T1 * 1e6), round((T1 + 0.01) * 1e6), 1735286400.0, 50000.0,
         True, 0.0105, 12.5, 0.0115, 3.0, 0.011, 0.552, 0.54, 0.56, 30123.5, 30100.25, 1234.0,
         0.12, 1e-5, 25.5, -12.25, 3.5),
        ("BTC-27DEC24-40000-P", "BTC", round(T1 * 1e6), round((T1 + 0.01) * 1e6), 1735286400.0, 40000.0,
         False, None, None, 0.0115, 3.0, 0.011, 0.552, None, 0.56, 30123.5, 30100.25, None,
         0.12, None, 25.5, -12.25, 3.5),
    ]
    assert rows(writer.con, "SELECT typeof(expiry_utc) FROM option_tickers LIMIT 1") == [("TIMESTAMP WITH TIME ZONE",)]


def test_book_updates_round_trip(writer):
    b = _batch(BookUpdateBatch, BOOK, {}, {"side": "ask", "price": 0.3526, "size_coin": 0.0},
               {"is_snapshot": True, "sequence": 2**62, "exchange": "kraken"})
    writer.append("book_updates", b, 0.0)
    c = writer.flush()
    assert c.rows == {"book_updates": Counter({"binance": 2, "kraken": 1})}
    got = rows(writer.con, """
        SELECT exchange, instrument, asset, epoch_us(event_ts), epoch_us(receive_ts), side, price, size_coin,
               is_snapshot, sequence
        FROM book_updates ORDER BY rowid""")
    assert got == [
        ("binance", "NKNUSDT", "NKN", round(T2 * 1e6), round((T2 + 0.004) * 1e6), "bid", 0.3513, 6195.0, False, 499869752),
        ("binance", "NKNUSDT", "NKN", round(T2 * 1e6), round((T2 + 0.004) * 1e6), "ask", 0.3526, 0.0, False, 499869752),
        ("kraken", "NKNUSDT", "NKN", round(T2 * 1e6), round((T2 + 0.004) * 1e6), "bid", 0.3513, 6195.0, True, 2**62),
    ]


def test_funding_round_trip_with_null_next_funding_and_index(writer):
    b = _batch(FundingBatch, FUNDING, {}, {"exchange": "deribit", "instrument": "BTC-PERPETUAL",
                                           "next_funding_ts": NAN, "index_usd": NAN, "funding_rate": -0.0002})
    writer.append("funding", b, 0.0)
    assert writer.flush().rows == {"funding": Counter({"binance": 1, "deribit": 1})}
    got = rows(writer.con, """
        SELECT exchange, instrument, epoch(event_ts), epoch(receive_ts), mark_usd, index_usd, funding_rate,
               epoch(next_funding_ts), next_funding_ts IS NULL
        FROM funding ORDER BY exchange""")
    assert got == [
        ("binance", "BTCUSDT", 1562305380.0, 1562305380.25, 11794.15, 11784.62659091, 0.00038167, 1562306400.0, False),
        ("deribit", "BTC-PERPETUAL", 1562305380.0, 1562305380.25, 11794.15, None, -0.0002, None, True),
    ]


def test_index_prices_round_trip(writer):
    b = _batch(IndexPriceBatch, INDEX, {}, {"index_name": "eth_usd", "asset": "ETH", "price_usd": 1800.5})
    writer.append("index_prices", b, 0.0)
    assert writer.flush().rows == {"index_prices": Counter({"deribit": 2})}
    assert rows(writer.con, """
        SELECT exchange, index_name, asset, epoch_us(event_ts), epoch_us(receive_ts), price_usd
        FROM index_prices ORDER BY index_name""") == [
        ("deribit", "btc_usd", "BTC", round(T1 * 1e6), round((T1 + 0.002) * 1e6), 30100.25),
        ("deribit", "eth_usd", "ETH", round(T1 * 1e6), round((T1 + 0.002) * 1e6), 1800.5),
    ]


def test_gaps_round_trip_with_an_open_end(writer):
    gaps = [
        Gap("binance", "NKNUSDT", "sequence", T2, T2, 3, "depth update ids 11..13 missing"),
        Gap("binance", "*", "disconnect", T1, NAN, -1, "wss://x: closed by peer (still open at 1.000)"),
    ]
    assert writer.append_gaps([], 0.0) is None
    writer.append_gaps(gaps, 0.0)
    assert writer.flush().rows == {"gaps": Counter({"binance": 2})}
    got = rows(writer.con, """
        SELECT exchange, instrument, kind, epoch_us(start_ts), epoch_us(end_ts), end_ts IS NULL, missing, detail
        FROM gaps ORDER BY kind""")
    assert got == [
        ("binance", "*", "disconnect", round(T1 * 1e6), None, True, -1, gaps[1].detail),
        ("binance", "NKNUSDT", "sequence", round(T2 * 1e6), round(T2 * 1e6), False, 3, gaps[0].detail),
    ]


def test_one_flush_commits_every_table_in_one_transaction(writer):
    writer.append("quotes", make_quotes({}), 0.0)
    writer.append("trades", make_trades({}), 0.0)
    writer.append("option_tickers", _batch(OptionTickerBatch, OPTION, {}), 0.0)
    writer.append("book_updates", _batch(BookUpdateBatch, BOOK, {}, {}), 0.0)
    writer.append("funding", _batch(FundingBatch, FUNDING, {}), 0.0)
    writer.append("index_prices", _batch(IndexPriceBatch, INDEX, {}), 0.0)
    writer.append_gaps([Gap("binance", "*", "silence", T1, T1 + 12, -1, "quiet")], 0.0)
    assert writer.buffered_rows == 8
    c = writer.flush()
    assert c.rows == {
        "quotes": Counter({"binance": 1}), "trades": Counter({"binance": 1}),
        "option_tickers": Counter({"deribit": 1}), "book_updates": Counter({"binance": 2}),
        "funding": Counter({"binance": 1}), "index_prices": Counter({"deribit": 1}),
        "gaps": Counter({"binance": 1}),
    }
    assert c.total == 8
    for table, n in (("option_tickers", 1), ("book_updates", 2), ("funding", 1), ("index_prices", 1), ("gaps", 1)):
        assert rows(writer.con, f"SELECT count(*) FROM {table}") == [(n,)]


# ------------------------------------------------------------------ a trade is stored once


def test_the_database_refuses_a_stored_trade_and_says_whose(db_path):
    w = DuckDBWriter(db_path)
    try:
        w.append_trades(make_trades({"trade_id": "1"}, {"trade_id": "2"}), 0.0)
        assert w.flush() == Commit(rows={"trades": Counter({"binance": 2})})
        # A restart's repeat of trade 2, and a Coinbase trade sent twice in one buffer.
        w.append_trades(
            make_trades(
                {"trade_id": "2"},
                {"trade_id": "3", "exchange": "coinbase", "instrument": "BTC-USD"},
                {"trade_id": "3", "exchange": "coinbase", "instrument": "BTC-USD"},
            ),
            0.0,
        )
        commit = w.flush()
        assert commit.rows == {"trades": Counter({"coinbase": 1})}
        assert commit.refused == {"trades": Counter({"binance": 1, "coinbase": 1})}
        assert w.con.execute("SELECT count(*) FROM trades").fetchone()[0] == 3
    finally:
        w.con.close()


def test_storing_a_trade_twice_is_impossible_not_merely_checked(db_path):
    w = DuckDBWriter(db_path)
    try:
        w.append_trades(make_trades({"trade_id": "9"}), 0.0)
        w.flush()
        with pytest.raises(duckdb.ConstraintException):
            w.con.execute(
                "INSERT INTO trades SELECT * FROM trades WHERE trade_id = '9'"
            )
    finally:
        w.con.close()
