"""SIGKILL during heavy writes and scheduled exports, several times on one database file: the file
opens every time, every row a commit reported as stored is there, and no partial Parquet file is
ever visible in the archive."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

TABLES = ("trades", "quotes", "option_tickers", "book_updates", "funding", "index_prices")


def _env(archive: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEDGEFLOW_")}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        HEDGEFLOW_SIMULATOR__PORT="0",
        HEDGEFLOW_SIMULATOR__QUOTE_RATE_HZ="200",
        HEDGEFLOW_SIMULATOR__TRADE_RATE_HZ="50",
        HEDGEFLOW_SIMULATOR__OPTION_RATE_HZ="1000",
        HEDGEFLOW_STORAGE__FLUSH_INTERVAL_S="0.2",
        # The scheduled export runs twice a second, so kills land in the middle of exports too.
        HEDGEFLOW_STORAGE__ARCHIVE_DIR=str(archive),
        HEDGEFLOW_STORAGE__EXPORT_INTERVAL_S="0.5",
    )
    return env


def _committed(line: str) -> dict[str, int] | None:
    if '"msg": "committed"' not in line:
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None  # the line the kill cut short
    return {t: record[t] for t in TABLES}


def _run_and_kill(db: Path, run_s: float) -> dict[str, int]:
    """Start ``hedgeflow run``, let it write for ``run_s`` seconds after its first commit, SIGKILL
    it, and return the last totals it logged as committed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataflows.cli", "run", "--no-dashboard", "--db", str(db),
         "--log-format", "json", "--log-level", "DEBUG"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(db.parent / "archive"),
        cwd=db.parent,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        started = None
        while time.monotonic() < deadline:
            if started is None and any(_committed(line) for line in list(lines)):
                started = time.monotonic()
            if started is not None and time.monotonic() - started >= run_s:
                break
            if proc.poll() is not None:
                raise AssertionError("hedgeflow run exited early: " + "".join(lines[-20:]))
            time.sleep(0.05)
        assert started is not None, "no commit was logged"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        reader.join(timeout=10)
    reported = [c for c in map(_committed, lines) if c]
    return reported[-1]


def test_sigkill_during_heavy_writes_loses_no_committed_row(tmp_path):
    db = tmp_path / "kill.duckdb"
    stored_before = dict.fromkeys(TABLES, 0)
    for attempt in range(3):
        committed = _run_and_kill(db, run_s=2.5)
        assert committed["book_updates"] > 0
        con = duckdb.connect(str(db))  # opens (and replays its WAL) after every kill
        try:
            stored = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
            duplicates = con.execute(
                "SELECT count(*) - count(DISTINCT (exchange, instrument, trade_id)) FROM trades"
            ).fetchone()[0]
        finally:
            con.close()
        for table in TABLES:
            # This run's reported rows are all there, on top of the earlier runs'.
            assert stored[table] >= stored_before[table] + committed[table], (attempt, table)
        assert duplicates == 0
        stored_before = stored
        # Every Parquet file a reader can see is whole: partial writes live under hidden names.
        visible = [p for p in (tmp_path / "archive").rglob("*.parquet")
                   if not any(part.startswith(".") for part in p.parts)]
        assert visible, "the scheduled export never ran"
        for path in visible:
            pq.read_table(path)
