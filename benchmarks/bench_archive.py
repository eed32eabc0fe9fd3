"""Parquet archive: bytes per tick against the raw JSON of the same ticks, and export speed.

N Binance messages (bookTicker, aggTrade, depth diffs of 10 levels) of one UTC day go through the
graph into DuckDB; the day is exported with ``storage.archive.export_archive``. Figures:

- bytes per tick in Parquet (zstd) against raw JSON bytes per tick (plan 003 asks for 50%
  compression; hedgeflow aims for under 10% of raw);
- export rate (rows/s) against DuckDB's own ``COPY ... TO ... (FORMAT parquet)`` of the same
  tables in the same run.

    .venv/bin/python benchmarks/bench_archive.py [N_MESSAGES]
"""

from __future__ import annotations

import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _messages import mixed_stream  # noqa: E402

from dataflows.clock import SimulatedClock  # noqa: E402
from dataflows.graph import build_graph  # noqa: E402
from models.oracle import MedianOracle  # noqa: E402
from models.records import RawBatch  # noqa: E402
from storage.archive import export_archive  # noqa: E402
from storage.writer import DuckDBWriter  # noqa: E402

TICK_TABLES = ("trades", "quotes", "book_updates")


def main(n: int) -> None:
    messages = list(itertools.islice(mixed_stream(10), n))
    raw_bytes = sum(len(m.encode()) for m in messages)
    t0 = 1_700_000_000.0  # 2023-11-14 22:13 UTC; the messages span n ms, well inside one day
    with tempfile.TemporaryDirectory() as tmp:
        clock = SimulatedClock()
        graph = build_graph(clock=clock, writer=DuckDBWriter(Path(tmp) / "a.duckdb", capacity_rows=100_000),
                            oracle=MedianOracle())
        for i in range(0, n, 1000):
            batch = RawBatch("binance", t0 + np.arange(i, min(i + 1000, n)) * 1e-3, messages[i : i + 1000])
            clock.advance_to(float(batch.receive_ts[-1]))
            graph.raw.emit(batch)
        graph.writer.flush()
        con = graph.writer.con
        ticks = sum(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TICK_TABLES)

        start = time.perf_counter()
        result = export_archive(con, str(Path(tmp) / "archive"), tables=TICK_TABLES, exported_at=t0)
        t_export = time.perf_counter() - start
        parquet_bytes = sum(f.stat().st_size for f in (Path(tmp) / "archive").rglob("*.parquet"))

        start = time.perf_counter()
        for t in TICK_TABLES:
            con.execute(f"COPY {t} TO '{tmp}/copy_{t}.parquet' (FORMAT parquet, COMPRESSION zstd)")
        t_copy = time.perf_counter() - start
        graph.close()

    rows = sum(result.rows.values())
    print(f"{n:,} Binance messages → {ticks:,} ticks in one UTC day\n")
    print(f"raw JSON        {raw_bytes / ticks:8.1f} bytes/tick   ({raw_bytes:,} bytes)")
    print(f"Parquet (zstd)  {parquet_bytes / ticks:8.1f} bytes/tick   ({parquet_bytes:,} bytes), "
          f"{parquet_bytes / raw_bytes:.1%} of raw")
    print(f"export          {rows / t_export:>12,.0f} rows/s   DuckDB COPY TO parquet "
          f"{rows / t_copy:>12,.0f} rows/s   ratio {t_copy / t_export:5.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300_000)
