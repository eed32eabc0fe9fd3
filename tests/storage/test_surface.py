"""Tests of storage.surface: one query surface over the hot DuckDB file and a Parquet archive."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from io import StringIO
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from dataflows.config import HedgeflowError
from storage.schema import TABLES
from storage.surface import format_result, open_surface, run_query, schema_columns
from tests.storage.conftest import make_db

UTC = dt.timezone.utc
D0, D1, D2 = dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)


def at(day: dt.date, seconds: float) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), UTC) + dt.timedelta(seconds=seconds)


def trade(exchange: str, day: dt.date, i: int, instrument: str = "BTCUSDT") -> dict:
    return {
        "exchange": exchange, "instrument": instrument, "asset": "BTC", "quote_ccy": "USDT",
        "event_ts": at(day, 60 * i), "receive_ts": at(day, 60 * i + 0.01),
        "trade_id": str(1000 * day.day + i), "price": 100.0 + i, "size_coin": 0.5, "side": "buy",
    }


def oracle(asset: str, day: dt.date, i: int) -> dict:
    return {
        "asset": asset, "ts": at(day, 60 * i), "price": 100.0 + i, "confidence": 0.1,
        "n_sources": 2, "status": "ok", "reason": "", "sources": ["a", "b"],
    }


def copy_partitioned(src_db: Path, root: Path, table: str, time_column: str, key: str = "exchange") -> None:
    """Write ``table`` of ``src_db`` as table=<t>/date=<d>/<key>=<v>/*.parquet (DuckDB COPY,
    which leaves the partition columns out of the files: the paths carry them)."""
    root.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"ATTACH '{src_db}' AS src (READ_ONLY)")
        con.execute(
            f"COPY (SELECT *, CAST(timezone('UTC', {time_column}) AS DATE) AS date FROM src.{table}) "
            f"TO '{root / f'table={table}'}' "
            f"(FORMAT parquet, PARTITION_BY (date, {key}), COMPRESSION zstd, OVERWRITE_OR_IGNORE)"
        )
    finally:
        con.close()


def count(con, sql: str, params=()) -> int:
    return con.execute(sql, params).fetchone()[0]


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
def split(tmp_path) -> tuple[Path, Path]:
    """A hot database and an archive that overlap.

    Archive: D0 binance (4 trades, archive only), D1 binance (3, also hot), D2 coinbase (1; D2 is
    hot for binance only). Hot: D1 binance (3), D2 binance (2). The surface has 4 + 3 + 2 + 1.
    """
    everything = make_db(tmp_path / "all.duckdb", {"trades": [
        *(trade("binance", D0, i) for i in range(4)),
        *(trade("binance", D1, i) for i in range(3)),
        trade("coinbase", D2, 0, "BTC-USD"),
    ]})
    archive = tmp_path / "archive"
    copy_partitioned(everything, archive, "trades", "event_ts")
    hot = make_db(tmp_path / "hot.duckdb", {"trades": [
        *(trade("binance", D1, i) for i in range(3)),
        *(trade("binance", D2, i) for i in range(2)),
    ]})
    return hot, archive


# ------------------------------------------------------------------------------ views


def test_hot_only_views_equal_the_tables(replayed):
    con = open_surface(replayed, None)
    hot = duckdb.connect(str(replayed), read_only=True)
    try:
        for table in TABLES:
            assert count(con, f"SELECT count(*) FROM {table}") == count(hot, f"SELECT count(*) FROM {table}")
            cols = [(r[0], r[1]) for r in con.execute(f"DESCRIBE {table}").fetchall()]
            assert cols == list(schema_columns()[table])
        assert count(con, "SELECT count(*) FROM trades") > 0
        assert con.execute("SELECT current_setting('TimeZone')").fetchone()[0] == "UTC"
    finally:
        hot.close()
        con.close()


def test_each_row_counted_once_across_hot_and_archive(split):
    hot, archive = split
    con = open_surface(hot, archive)
    try:
        assert count(con, "SELECT count(*) FROM trades") == 4 + 3 + 2 + 1
        per = dict(
            ((d, e), n) for d, e, n in con.execute(
                "SELECT CAST(event_ts AS DATE), exchange, count(*) FROM trades GROUP BY ALL"
            ).fetchall()
        )
        assert per == {(D0, "binance"): 4, (D1, "binance"): 3, (D2, "binance"): 2, (D2, "coinbase"): 1}
        # Same columns and types as the table: no hive "date"/"table" column, exchange from the path.
        assert [(r[0], r[1]) for r in con.execute("DESCRIBE trades").fetchall()] == list(
            schema_columns()["trades"]
        )
        assert count(con, "SELECT count(*) FROM trades WHERE exchange IS NULL") == 0
        # Which partitions the views read is itself queryable.
        files = con.execute(
            "SELECT day, partition_value, rows, in_surface FROM hedgeflow.archive_files ORDER BY ALL"
        ).fetchall()
        assert files == [
            (D0, "binance", 4, True), (D1, "binance", 3, False), (D2, "coinbase", 1, True),
        ]
        # Distinct rows check: the hot copy of D1 is read, the archived one is not.
        assert count(con, "SELECT count(*) FROM (SELECT DISTINCT * FROM trades)") == 10
    finally:
        con.close()


def test_archive_only(split):
    _, archive = split
    con = open_surface(None, archive)
    try:
        assert count(con, "SELECT count(*) FROM trades") == 8
        assert count(con, "SELECT count(*) FROM trades WHERE exchange = 'coinbase'") == 1
        assert con.execute("SELECT typeof(event_ts), typeof(price) FROM trades LIMIT 1").fetchone() == (
            "TIMESTAMP WITH TIME ZONE", "DOUBLE",
        )
        # A table neither side has is an empty view with the schema's columns.
        assert count(con, "SELECT count(*) FROM quotes") == 0
        assert [r[0] for r in con.execute("DESCRIBE quotes").fetchall()] == [
            c for c, _ in schema_columns()["quotes"]
        ]
        assert count(con, "SELECT count(*) FROM duckdb_databases() WHERE database_name = 'hot'") == 0
    finally:
        con.close()


def test_oracle_prices_partitioned_by_asset(tmp_path):
    everything = make_db(tmp_path / "all.duckdb", {"oracle_prices": [
        *(oracle("BTC", D1, i) for i in range(3)), *(oracle("ETH", D1, i) for i in range(2)),
    ]})
    archive = tmp_path / "archive"
    copy_partitioned(everything, archive, "oracle_prices", "ts", key="asset")
    hot = make_db(tmp_path / "hot.duckdb", {"oracle_prices": [oracle("BTC", D1, i) for i in range(3)]})
    con = open_surface(hot, archive)
    try:
        assert con.execute(
            "SELECT asset, count(*) FROM oracle_prices GROUP BY ALL ORDER BY ALL"
        ).fetchall() == [("BTC", 3), ("ETH", 2)]
        assert "exchange" not in [r[0] for r in con.execute("DESCRIBE oracle_prices").fetchall()]
        assert con.execute("SELECT sources FROM oracle_prices WHERE asset = 'ETH' LIMIT 1").fetchone() == (
            ["a", "b"],
        )
    finally:
        con.close()


def test_real_export_then_pruned_hot(replayed, tmp_path):
    """The archive written by storage.archive, with one exchange's days pruned from the hot copy."""
    from storage.archive import ARCHIVE_TABLES, export_archive

    archive = tmp_path / "archive"
    src = duckdb.connect(str(replayed), read_only=True)
    try:
        src.execute("SET TimeZone = 'UTC'")
        export_archive(src, archive, exported_at=0.0)
        expected = {t: count(src, f"SELECT count(*) FROM {t}") for t in ARCHIVE_TABLES}
    finally:
        src.close()
    pruned = tmp_path / "pruned.duckdb"
    shutil.copy(replayed, pruned)
    con = duckdb.connect(str(pruned))
    con.execute("DELETE FROM book_updates WHERE exchange = 'coinbase'")
    con.execute("DELETE FROM trades WHERE exchange = 'kraken'")
    con.execute("DELETE FROM oracle_prices WHERE asset = 'SKL'")
    con.execute("CHECKPOINT")
    con.close()
    for db in (replayed, pruned, None):
        surface = open_surface(db, archive)
        try:
            got = {t: count(surface, f"SELECT count(*) FROM {t}") for t in ARCHIVE_TABLES}
            assert got == expected, db
        finally:
            surface.close()


def test_fsspec_memory_archive(split):
    fsspec = pytest.importorskip("fsspec")
    _, archive = split
    fs = fsspec.filesystem("memory")
    root = "memory://hedgeflow-surface-test"
    try:
        for f in archive.rglob("*.parquet"):
            fs.pipe(f"{root}/{f.relative_to(archive).as_posix()}", f.read_bytes())
        con = open_surface(None, root)
        try:
            assert count(con, "SELECT count(*) FROM trades") == 8
        finally:
            con.close()
    finally:
        fs.rm(root, recursive=True)


# ------------------------------------------------------------------------------ errors


def test_missing_inputs_are_hedgeflow_errors(tmp_path, split):
    with pytest.raises(HedgeflowError, match="database not found"):
        open_surface(tmp_path / "nope.duckdb", None)
    with pytest.raises(HedgeflowError, match="archive not found"):
        open_surface(None, tmp_path / "no-archive")
    _, archive = split
    stray = archive / "table=trades" / "stray.parquet"
    shutil.copy(next(archive.rglob("*.parquet")), stray)
    with pytest.raises(HedgeflowError, match="outside the layout"):
        open_surface(None, archive)


def test_query_errors_and_read_only(split):
    hot, archive = split
    con = open_surface(hot, archive)
    try:
        with pytest.raises(HedgeflowError) as e:
            run_query(con, "SELECT * FROM no_such_table")
        assert "no_such_table" in str(e.value)  # DuckDB's own message
        assert "information_schema.tables" in str(e.value)  # the hint
        with pytest.raises(HedgeflowError, match="Parser Error"):
            run_query(con, "SELEC 1")
        for sql in (
            "INSERT INTO trades SELECT * FROM trades",
            "DELETE FROM hot.trades",
            f"COPY trades TO '{archive}/x.csv'",
            "CREATE TABLE t AS SELECT 1",
            "EXPLAIN ANALYZE INSERT INTO hot.trades SELECT * FROM hot.trades",
            "ATTACH ':memory:' AS other",
        ):
            with pytest.raises(HedgeflowError, match="read-only"):
                run_query(con, sql)
        with pytest.raises(HedgeflowError, match="one statement"):
            run_query(con, "SELECT 1; SELECT 2")
        with pytest.raises(HedgeflowError, match="empty"):
            run_query(con, "  ")
        # Even past run_query, the hot database is attached read-only and views refuse writes.
        with pytest.raises(duckdb.Error):
            con.execute("DELETE FROM hot.trades")
        with pytest.raises(duckdb.Error):
            con.execute("INSERT INTO trades SELECT * FROM trades")
        assert count(con, "SELECT count(*) FROM trades") == 10
        assert not (archive / "x.csv").exists()
        # What works: SELECT, FROM-first, DESCRIBE, SHOW, EXPLAIN, the hinted listing.
        assert run_query(con, "SELECT count(*) AS n FROM trades")["n"].tolist() == [10]
        assert len(run_query(con, "FROM trades LIMIT 2")) == 2
        assert "event_ts" in run_query(con, "DESCRIBE trades")["column_name"].tolist()
        assert len(run_query(con, "EXPLAIN SELECT * FROM trades")) >= 1
        names = run_query(con, "SELECT table_name FROM information_schema.tables")["table_name"].tolist()
        assert set(TABLES) <= set(names)
    finally:
        con.close()


# ------------------------------------------------------------------------------ formats


@pytest.fixture
def result(split) -> pd.DataFrame:
    hot, archive = split
    con = open_surface(hot, archive)
    try:
        return run_query(con, """
            SELECT CAST(event_ts AS DATE) AS day, exchange, trade_id, event_ts, price,
                   CASE WHEN exchange = 'coinbase' THEN NULL ELSE size_coin END AS size_coin
            FROM trades ORDER BY event_ts, exchange
        """)
    finally:
        con.close()


def test_format_table(result):
    text = format_result(result, "table", max_rows=3)
    lines = text.splitlines()
    assert lines[0].split() == ["day", "exchange", "trade_id", "event_ts", "price", "size_coin"]
    assert len(lines) == 2 + 3 + 1
    assert lines[2].startswith("2024-03-01  binance")
    assert "2024-03-01 00:00:00+00:00" in lines[2]
    assert lines[-1] == "(10 rows, first 3 shown; --format csv or json gives them all)"
    full = format_result(result, "table", max_rows=None)
    assert full.splitlines()[-1] == "(10 rows)"
    assert "NULL" in full  # coinbase's size
    empty = format_result(result.head(0), "table")
    assert empty.splitlines()[-1] == "(0 rows)"


def test_format_csv_and_json(result):
    csv = format_result(result, "csv", max_rows=3)  # every row: CSV and JSON are for programs
    back = pd.read_csv(StringIO(csv))
    assert len(back) == 10 and list(back.columns) == list(result.columns)
    assert back["size_coin"].isna().sum() == 1
    assert back["day"].iloc[0] == "2024-03-01"
    rows = json.loads(format_result(result, "json", max_rows=3))
    assert len(rows) == 10
    assert rows[0]["day"] == "2024-03-01"
    assert rows[0]["event_ts"] == "2024-03-01T00:00:00+00:00"
    assert rows[0]["price"] == 100.0
    assert [r["size_coin"] for r in rows].count(None) == 1
    with pytest.raises(HedgeflowError, match="unknown format"):
        format_result(result, "xml")
