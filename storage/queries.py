"""Read queries the CLI, notebooks and dashboards use. Parameters are bound, never formatted in."""

from __future__ import annotations

import os

import duckdb
import numpy as np
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


def option_assets(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The assets that have option tickers, sorted."""
    return [r[0] for r in con.execute("SELECT DISTINCT asset FROM option_tickers ORDER BY 1").fetchall()]


def latest_option_tickers(con: duckdb.DuckDBPyConnection, asset: str,
                          as_of_s: float | None = None) -> dict[str, np.ndarray]:
    """The newest ticker of each of ``asset``'s options at or before ``as_of_s`` (epoch s; None:
    the newest of all), as numpy columns named like ``models.records.OptionTickerBatch`` (times as
    epoch seconds), ready for ``models.option_book.OptionBook.update``. Empty columns when the
    asset has no options then."""
    rows = con.execute(
        """
        SELECT instrument, asset, epoch_us(event_ts) / 1e6 AS event_ts,
               epoch_us(expiry_utc) / 1e6 AS expiry_utc, strike_usd, is_call,
               bid_coin, ask_coin, mark_coin, underlying_usd, index_usd, open_interest
        FROM option_tickers
        WHERE asset = ? AND (CAST(? AS DOUBLE) IS NULL OR epoch_us(event_ts) <= CAST(? AS DOUBLE) * 1e6)
        QUALIFY row_number() OVER (PARTITION BY instrument ORDER BY event_ts DESC) = 1
        ORDER BY instrument
        """,
        [asset, as_of_s, as_of_s],
    ).fetchnumpy()
    columns = {}
    for name, values in rows.items():
        # Masked (NULL) numbers become NaN: "the venue gave no value", as in the batches.
        if isinstance(values, np.ma.MaskedArray):
            values = values.filled(np.nan) if values.dtype.kind == "f" else values.filled()
        columns[name] = np.asarray(values)
    return columns


def latest_volatility(con: duckdb.DuckDBPyConnection, asset: str,
                      as_of_s: float | None = None) -> float | None:
    """``asset``'s newest ready, positive 24 h realized volatility (annualized fraction) at or before
    ``as_of_s`` (epoch s; None: the newest), or None (also for a database from before the
    analytics tables)."""
    if not _has_table(con, "volatility"):
        return None
    row = con.execute(
        "SELECT vol_annual FROM volatility WHERE asset = ? AND ready AND vol_annual > 0 "
        "AND (CAST(? AS DOUBLE) IS NULL OR epoch_us(ts) <= CAST(? AS DOUBLE) * 1e6) "
        "ORDER BY ts DESC LIMIT 1",
        [asset, as_of_s, as_of_s],
    ).fetchone()
    return None if row is None else float(row[0])


def latest_oracle_price(con: duckdb.DuckDBPyConnection, asset: str,
                        as_of_s: float | None = None) -> tuple[float, float] | None:
    """``asset``'s newest "ok" oracle price at or before ``as_of_s`` (epoch s; None: the newest) as
    (epoch seconds, price USD), or None."""
    row = con.execute(
        "SELECT epoch_us(ts) / 1e6, price FROM oracle_prices "
        "WHERE asset = ? AND status = 'ok' AND price IS NOT NULL "
        "AND (CAST(? AS DOUBLE) IS NULL OR epoch_us(ts) <= CAST(? AS DOUBLE) * 1e6) "
        "ORDER BY ts DESC LIMIT 1",
        [asset, as_of_s, as_of_s],
    ).fetchone()
    return None if row is None else (float(row[0]), float(row[1]))


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                       [name]).fetchone()[0] > 0
