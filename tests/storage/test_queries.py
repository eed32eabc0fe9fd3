"""Tests of storage.queries on a DuckDB file written by the writer."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from models.records import OraclePrice, QuarantineRecord
from storage.queries import (
    connect_readonly,
    counts_by_exchange,
    oracle_history,
    quarantine_by_reason,
    table_counts,
)
from storage.writer import DuckDBWriter
from tests.conftest import make_quotes, make_trades


@pytest.fixture
def con(db_path):
    w = DuckDBWriter(db_path)
    w.append_quotes(make_quotes({"exchange": "binance"}, {"exchange": "binance"}, {"exchange": "kraken"}), 0.0)
    w.append_trades(make_trades({"exchange": "coinbase"}), 0.0)
    w.append_quarantine([
        QuarantineRecord("binance", 1.0, "binance invalid JSON: x", "{"),
        QuarantineRecord("binance", 2.0, "binance invalid JSON: x", "{{"),
        QuarantineRecord("binance", 3.0, "invalid: crossed or locked book: bid >= ask", "c"),
        QuarantineRecord("deribit", 4.0, "no adapter for exchange 'deribit' (known: binance)", "d"),
    ], 0.0)
    w.append_oracle_prices([
        OraclePrice("BTC", 20.0, 101.0, 1.0, 2, "ok", "", ("a", "b")),
        OraclePrice("ETH", 10.0, 11.0, 0.1, 1, "ok", "", ("a",)),
        OraclePrice("BTC", 10.0, 100.0, 1.0, 1, "degraded", "1 of 2 required sources", ("a",)),
        OraclePrice("BTC", 30.0, float("nan"), float("nan"), 0, "halted", "no fresh sources", ()),
    ], 0.0)
    w.close()
    c = connect_readonly(db_path)
    yield c
    c.close()


def test_table_counts(con):
    assert table_counts(con) == {
        "trades": 1, "quotes": 3, "option_tickers": 0, "book_updates": 0, "funding": 0,
        "index_prices": 0, "quarantine": 4, "oracle_prices": 4, "alerts": 0, "ingest_stats": 0,
        "gaps": 0, "volatility": 0, "surface_fits": 0, "premium_quotes": 0, "policy_risk": 0,
        "position_states": 0, "hedge_decisions": 0, "order_decisions": 0, "loan_updates": 0,
        "backtest_trades": 0, "desk_trades": 0, "backtest_equity": 0, "desk_equity": 0,
        "audit": 0,
    }


def test_oracle_history_all_assets_in_order(con):
    df = oracle_history(con)
    assert list(df.columns) == ["asset", "ts", "price", "confidence", "n_sources", "status", "reason"]
    assert df["asset"].tolist() == ["BTC", "BTC", "BTC", "ETH"]
    assert df["status"].tolist() == ["degraded", "ok", "halted", "ok"]
    assert df["ts"].dt.tz is not None
    assert df["ts"].iloc[0] == pd.Timestamp(10.0, unit="s", tz="UTC")  # the same instant
    assert pd.isna(df["price"].iloc[2])


@pytest.fixture
def host_in_new_york(monkeypatch):
    """The process's local time zone is America/New_York (as on an operator's laptop)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_oracle_history_times_are_utc_whatever_the_host_time_zone(tmp_path, monkeypatch):
    path = tmp_path / "tz.duckdb"
    w = DuckDBWriter(path)
    w.append_oracle_prices([OraclePrice("ETH", 10.0, 11.0, 0.1, 1, "ok", "", ("a",))], 0.0)
    w.close()
    # the process's local time zone is New York, as on an operator's laptop
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        c = connect_readonly(path)
        try:
            df = oracle_history(c, "ETH")
        finally:
            c.close()
    finally:
        monkeypatch.undo()
        time.tzset()
    ts = df["ts"].iloc[0]
    assert ts == pd.Timestamp(10.0, unit="s", tz="UTC")  # the instant is right either way
    assert str(df["ts"].dt.tz) in ("UTC", "Etc/UTC"), (
        f"times must be presented in UTC (DESIGN principle 6), got {df['ts'].dt.tz}"
    )
    assert (ts.year, ts.month, ts.day, ts.hour) == (1970, 1, 1, 0)


def test_oracle_history_asset_filter(con):
    eth = oracle_history(con, "ETH")
    assert eth["asset"].tolist() == ["ETH"] and eth["price"].tolist() == [11.0]
    assert oracle_history(con, "BTC")["price"].tolist()[:2] == [100.0, 101.0]
    assert oracle_history(con, "DOGE").empty


def test_oracle_history_asset_is_a_bound_parameter_not_sql(con):
    # an injection attempt is a value that matches nothing, not SQL that matches everything
    assert oracle_history(con, "x' OR '1'='1").empty
    assert oracle_history(con, "BTC' --").empty
    assert table_counts(con)["oracle_prices"] == 4


def test_counts_by_exchange_full_join(con):
    df = counts_by_exchange(con)
    assert list(df.columns) == ["exchange", "trades", "quotes", "quarantined"]
    got = {r.exchange: (r.trades, r.quotes, r.quarantined) for r in df.itertuples()}
    assert got == {
        "binance": (0, 2, 3),
        "coinbase": (1, 0, 0),
        "deribit": (0, 0, 1),
        "kraken": (0, 1, 0),
    }
    assert df["exchange"].tolist() == ["binance", "coinbase", "deribit", "kraken"]


def test_quarantine_by_reason(con):
    df = quarantine_by_reason(con)
    assert list(df.columns) == ["exchange", "reason", "n"]
    assert df.iloc[0].tolist() == ["binance", "binance invalid JSON: x", 2]
    rest = {(r.exchange, r.reason, r.n) for r in df.iloc[1:].itertuples()}
    assert rest == {
        ("binance", "invalid: crossed or locked book: bid >= ask", 1),
        ("deribit", "no adapter for exchange 'deribit' (known: binance)", 1),
    }


def test_queries_on_an_empty_database(db_path):
    DuckDBWriter(db_path).close()
    c = connect_readonly(db_path)
    try:
        assert set(table_counts(c).values()) == {0}
        assert counts_by_exchange(c).empty
        assert quarantine_by_reason(c).empty
        assert oracle_history(c).empty
    finally:
        c.close()
