"""storage.runs: a run's tables out of one file and into another."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from models.records import EquityRecord
from storage.runs import RUN_TABLES, append_run_tables, read_run_tables
from storage.writer import DuckDBWriter


def test_run_tables_round_trip_between_files(tmp_path):
    source = tmp_path / "run.duckdb"
    writer = DuckDBWriter(source, capacity_rows=1_000, flush_interval_s=1.0)
    rows = [EquityRecord("r1", 1_700_000_000.0 + i, 100.0 + i, 50.0, 10.0, 20.0, 140.0 + i, 0.5, -0.1, 0.4)
            for i in range(3)]
    writer.append_records("backtest_equity", rows, 0.0)
    writer.close()
    tables = read_run_tables(source)
    assert set(tables) == set(RUN_TABLES) and tables["backtest_equity"].num_rows == 3
    target = tmp_path / "sweep.duckdb"
    assert append_run_tables(target, tables)["backtest_equity"] == 3
    append_run_tables(target, {"backtest_equity": tables["backtest_equity"]})  # a second run appends
    con = duckdb.connect(str(target), read_only=True)
    try:
        got = con.execute("SELECT count(*), sum(equity_usd), min(epoch(ts)) FROM backtest_equity").fetchone()
    finally:
        con.close()
    assert got == (6, pytest.approx(2 * (140 + 141 + 142)), 1_700_000_000)


def test_only_run_tables_are_appended(tmp_path):
    with pytest.raises(ValueError, match="not run tables"):
        append_run_tables(tmp_path / "x.duckdb", {"trades": pa.table({"a": [1]})})
