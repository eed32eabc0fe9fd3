"""Read queries the CLI, notebooks and dashboards use. Parameters are bound, never formatted in."""

from __future__ import annotations

import os

import duckdb
import pandas as pd

from storage.schema import TABLES


def connect_readonly(db_path: str | os.PathLike) -> duckdb.DuckDBPyConnection:
    """A read-only connection whose session shows times in UTC, whatever the host's zone."""
    con = duckdb.connect(str(db_path), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    return con


def table_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Row count of every hedgeflow table (names from the schema's fixed set)."""
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def oracle_history(con: duckdb.DuckDBPyConnection, asset: str | None = None) -> pd.DataFrame:
    """Oracle prices in time order, optionally for one asset."""
    sql = "SELECT asset, ts, price, confidence, n_sources, status, reason FROM oracle_prices"
    params: list = []
    if asset is not None:
        sql += " WHERE asset = ?"
        params.append(asset)
    return con.execute(sql + " ORDER BY asset, ts", params).df()


def counts_by_exchange(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Stored trades, quotes and quarantined messages per exchange."""
    return con.execute(
        """
        WITH t AS (SELECT exchange, count(*) AS trades FROM trades GROUP BY exchange),
             q AS (SELECT exchange, count(*) AS quotes FROM quotes GROUP BY exchange),
             z AS (SELECT exchange, count(*) AS quarantined FROM quarantine GROUP BY exchange)
        SELECT exchange,
               coalesce(trades, 0) AS trades,
               coalesce(quotes, 0) AS quotes,
               coalesce(quarantined, 0) AS quarantined
        FROM t FULL JOIN q USING (exchange) FULL JOIN z USING (exchange)
        ORDER BY exchange
        """
    ).df()


def quarantine_by_reason(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.execute(
        "SELECT exchange, reason, count(*) AS n FROM quarantine GROUP BY ALL ORDER BY n DESC"
    ).df()
