"""Moving one run's rows between DuckDB files: a parameter sweep runs each backtest in a worker
(a process, or a dask worker on another machine) against a file of its own, and the rows come back
as Arrow tables to be appended to the sweep's database.

Only the run-scoped tables travel (each row carries its ``run_id``): ``RUN_TABLES``.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from storage.schema import create_schema

__all__ = ["RUN_TABLES", "read_run_tables", "append_run_tables"]

RUN_TABLES = ("backtest_equity", "backtest_trades", "position_states", "hedge_decisions",
              "order_decisions", "loan_updates")


def read_run_tables(db_path: str | Path) -> dict[str, pa.Table]:
    """Every run-scoped table of the file ``db_path`` as Arrow (empty tables included)."""
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        # The names come from RUN_TABLES, never from a caller: safe to put in the statement.
        return {name: con.sql(f"SELECT * FROM {name}").to_arrow_table() for name in RUN_TABLES}
    finally:
        con.close()


def append_run_tables(db_path: str | Path, tables: dict[str, pa.Table]) -> dict[str, int]:
    """Append run-scoped tables (from ``read_run_tables``) to ``db_path`` in one transaction;
    returns the rows added per table. Unknown table names are refused."""
    unknown = set(tables) - set(RUN_TABLES)
    if unknown:
        raise ValueError(f"not run tables: {sorted(unknown)}")
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(db_path))
    try:
        create_schema(con)
        added = {}
        con.execute("BEGIN")
        for name, table in tables.items():
            con.register("incoming", table)
            con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM incoming")
            con.unregister("incoming")
            added[name] = table.num_rows
        con.execute("COMMIT")
        return added
    finally:
        con.close()
