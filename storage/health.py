"""Reads for the archive health page and the metrics: database size, gaps, the archive folder.

Row counts per table (``storage.queries.table_counts``), quarantine by reason
(``storage.queries.quarantine_by_reason``) and completeness and compression
(``storage.quality.quality_report``) already exist and are reused; this module adds what they do
not give. Every value reaches SQL as a bound parameter. The functions take any connection to the
hot database: the archive page calls them on a cursor of the writer's connection, off the loop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import duckdb
import pandas as pd


@dataclass(frozen=True)
class DatabaseSize:
    """The hot database's size. ``file_bytes``/``wal_bytes``: the files on disk (0 when missing;
    an in-memory database has neither); ``used_bytes``: blocks in use × block size, what the data
    occupies inside the file (the rest of the file is free blocks kept for reuse)."""

    path: str
    file_bytes: int
    wal_bytes: int
    block_bytes: int
    total_blocks: int
    used_blocks: int

    @property
    def used_bytes(self) -> int:
        return self.used_blocks * self.block_bytes


def database_size(con: duckdb.DuckDBPyConnection) -> DatabaseSize:
    """The size of ``con``'s current database (its file, its write-ahead log, its blocks)."""
    name, path = con.execute(
        "SELECT database_name, coalesce(path, '') FROM duckdb_databases() "
        "WHERE database_name = current_database()"
    ).fetchone()
    row = con.execute(
        "SELECT block_size, total_blocks, used_blocks FROM pragma_database_size() "
        "WHERE database_name = ?",
        [name],
    ).fetchone()
    block_bytes, total_blocks, used_blocks = (int(v or 0) for v in row) if row else (0, 0, 0)
    return DatabaseSize(
        path=path, file_bytes=_file_bytes(path),
        wal_bytes=_file_bytes(f"{path}.wal" if path else ""),
        block_bytes=block_bytes, total_blocks=total_blocks, used_blocks=used_blocks,
    )


def _file_bytes(path: str) -> int:
    try:
        return os.path.getsize(path) if path else 0
    except OSError:  # not written yet (no WAL between checkpoints), or removed meanwhile
        return 0


def gaps_summary(con: duckdb.DuckDBPyConnection, since_s: float | None = None) -> pd.DataFrame:
    """Gaps per exchange and kind, started at or after ``since_s`` (epoch s; None: all):
    ``gaps`` (rows), ``open_gaps`` (no end yet), ``gap_seconds`` (total length of the closed
    ones), ``missing`` (sequence numbers skipped, where known) and ``last_start_s`` (epoch s)."""
    return con.execute(
        """
        SELECT exchange, kind, count(*)::BIGINT AS gaps,
               count(*) FILTER (WHERE end_ts IS NULL)::BIGINT AS open_gaps,
               coalesce(sum(epoch(end_ts) - epoch(start_ts)), 0)::DOUBLE AS gap_seconds,
               coalesce(sum(missing) FILTER (WHERE missing > 0), 0)::BIGINT AS missing,
               max(epoch(start_ts))::DOUBLE AS last_start_s
        FROM gaps
        WHERE CAST(? AS DOUBLE) IS NULL OR start_ts >= to_timestamp(CAST(? AS DOUBLE))
        GROUP BY ALL ORDER BY exchange, kind
        """,
        [since_s, since_s],
    ).df()


def recent_gaps(con: duckdb.DuckDBPyConnection, limit: int = 10) -> pd.DataFrame:
    """The ``limit`` newest gaps (by start), newest first; times as epoch seconds (``end_s`` NaN
    while open, ``missing`` -1 when unknown)."""
    if limit < 0:
        raise ValueError(f"limit must be 0 or more, got {limit!r}")
    return con.execute(
        """
        SELECT exchange, instrument, kind, epoch(start_ts)::DOUBLE AS start_s,
               epoch(end_ts)::DOUBLE AS end_s, missing, detail
        FROM gaps ORDER BY start_ts DESC, exchange, instrument LIMIT ?
        """,
        [int(limit)],
    ).df()


@dataclass(frozen=True)
class ArchiveSize:
    """The Parquet archive folder: its data files and their bytes (``manifest.json`` and hidden
    staging files are not counted)."""

    url: str
    files: int
    bytes: int


def archive_size(url: str) -> ArchiveSize:
    """Files and bytes of the Parquet archive at ``url`` (a path or an fsspec URL); zero when the
    folder does not exist yet (no export has run)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    if not fs.exists(root):
        return ArchiveSize(url, 0, 0)
    sizes = [
        int(info.get("size") or 0)
        for path, info in fs.find(root, detail=True).items()
        if path.endswith(".parquet") and not os.path.basename(path).startswith(".")
    ]
    return ArchiveSize(url, len(sizes), sum(sizes))
