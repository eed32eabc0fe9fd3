"""Fixtures shared by the storage tests."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest

from dataflows.replay import replay_to_db
from storage.schema import create_schema
from tests.conftest import RECORDED_DIR


def make_db(path: Path, rows: dict[str, list[dict]], ingest: list[tuple] = ()) -> Path:
    """A hedgeflow DuckDB file holding ``rows`` (table -> list of row dicts) and ``ingest``
    rows of ``ingest_stats`` as (exchange, day, messages, raw_bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        con.execute("SET TimeZone = 'UTC'")
        create_schema(con)
        for table, items in rows.items():
            df = pd.DataFrame(items)  # noqa: F841 - read by DuckDB's replacement scan
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM df")
        for item in ingest:
            con.execute("INSERT INTO ingest_stats VALUES (?, ?, ?, ?)", list(item))
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return path


@pytest.fixture(scope="session")
def replayed(tmp_path_factory) -> Path:
    """The recorded traffic replayed into a DuckDB file, once for every storage test (read-only
    for them: a test that changes data works on a copy)."""
    if not RECORDED_DIR.is_dir():
        pytest.fail(f"recorded traffic not found at {RECORDED_DIR}")
    path = tmp_path_factory.mktemp("replayed") / "hedgeflow.duckdb"
    replay_to_db([RECORDED_DIR], path)
    return path
