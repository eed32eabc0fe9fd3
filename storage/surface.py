"""One query surface over hot (DuckDB) and cold (Parquet archive) data.

``open_surface(db_path, archive)`` returns an in-memory DuckDB connection (session time zone UTC)
with

- the hot database ATTACHed ``READ_ONLY`` as ``hot`` (``hot.trades`` is the hot table itself);
- for every hedgeflow table (``storage.schema.TABLES``, plus any other table of the hot database
  or of the archive, such as ``ingest_stats``) a VIEW of the same name in the default catalog:
  the hot table ``UNION ALL`` the archive's Parquet rows of the partitions the hot table does not
  hold. Either part may be missing: without an archive the views are the hot tables; without a hot
  database they are the archive alone; a table in neither is an empty view with the schema's
  columns, so every query of a hedgeflow table binds;
- ``hedgeflow.archive_files``: one row per archive file (table_name, day, partition_key,
  partition_value, path, rows, bytes, in_surface), so which days come from the archive is itself
  queryable.

The archive layout (``storage.archive``) is Hive-partitioned Parquet::

    ARCHIVE/table=<table>/date=<YYYY-MM-DD>/exchange=<exchange>/part-0.parquet

(``asset=<asset>`` instead of ``exchange=`` for ``oracle_prices``; any file name ending
``.parquet``, hidden names skipped, so an export's staged ``.part-0.parquet.<token>.tmp`` files
never show). A ``.parquet`` file under ``table=<t>/`` without a ``date=`` level is an error, never
skipped silently. ``manifest.json`` is not needed: rows and bytes come from the Parquet footers.

**Present (no row counted twice).** An archive partition (table, date, key) is read only if the hot
table has *no* row with that key (exchange; asset for oracle prices) on that UTC day, by the
table's day column — the archive's own (``DAY_COLUMNS``, from ``storage.archive.ARCHIVE_TABLES``:
``event_ts`` for ticks, ``receive_ts`` for quarantine, ``start_ts`` for gaps, ``ts`` for oracle
prices), so hot rows and files are matched exactly as the export cut them. A day both exported
and still hot is read from the hot table alone (the hot copy is the newer and at least as
complete: the export never shrinks a partition, retention deletes only verified ones), and a day
pruned from the hot database is read from the archive. Presence is per (table, day, key), the
archive's partition grain, so an exchange whose day was pruned is read from the archive even while
another exchange's same day is still hot. A file with no key level is matched on (table, day)
alone. The check is made once, when the surface opens: the hot database is attached read-only
and cannot change under the connection.

**Columns.** The views have exactly the hot table's columns (or the schema's, when there is no hot
table), in its order and types. The Hive keys ``table`` and ``date`` never appear; ``exchange``
(``asset``) comes from the partition path, where it equals the table's own column (the archive's
files hold it too; files written by ``COPY ... PARTITION_BY``, which drop it, work as well). A
column missing from old archive files (``out_of_order``, say) reads as NULL; archive columns the
table does not have are dropped.

**Where the archive can live.** A local directory (or ``file://`` URL) always works. Other URLs are
read through fsspec (registered with ``con.register_filesystem``) when fsspec has an
implementation for the protocol installed (``memory://`` always; ``s3://`` needs ``s3fs``, ...),
otherwise DuckDB tries its own ``httpfs`` extension, which these machines cannot download: then
``open_surface`` raises ``HedgeflowError`` saying so. A remote archive is read remotely by every
query; mirror it to a local directory for heavy use.

``run_query(con, sql)`` runs one read-only statement (SELECT, and the forms that are SELECTs:
FROM-first, SHOW, DESCRIBE, SUMMARIZE; EXPLAIN of those) and returns a DataFrame; anything else (INSERT, COPY,
CREATE, ATTACH, SET, several statements) is refused, and DuckDB's errors become ``HedgeflowError``
with DuckDB's message and a hint. ``format_result`` renders a result as a text table, CSV or JSON.

The views cannot take bound parameters (DuckDB has none in DDL): the few literals they hold (file
paths) are quoted with ``_sql_string`` and identifiers with ``_ident``; no user SQL is ever
spliced into them.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from models.errors import HedgeflowError
from storage.archive import ARCHIVE_TABLES
from storage.schema import TABLES, create_schema

#: The catalog name of the attached hot database.
HOT = "hot"
#: The schema (in the surface's in-memory catalog) holding the surface's own metadata.
META_SCHEMA = "hedgeflow"

#: Per table, the column whose UTC date is a row's archive day, and the column of the archive's
#: second partition level: the archive's own (``storage.archive.ARCHIVE_TABLES``), so hot rows and
#: archive partitions are matched exactly as the export cut them. (The quality report counts rows
#: under the day they were received instead: ``storage.quality.REPORT_DAY_COLUMNS``.)
DAY_COLUMNS: dict[str, str] = {t.name: t.time_column for t in ARCHIVE_TABLES.values()}
KEY_COLUMNS: dict[str, str] = {t.name: t.key_column for t in ARCHIVE_TABLES.values()}

#: Hive keys of the archive layout that are not columns of the tables.
_HIVE_ONLY_KEYS = ("table", "date")

#: What the hint of every query error says.
QUERY_HINT = (
    'hedgeflow query "SELECT table_name FROM information_schema.tables" lists the tables; '
    'hedgeflow query "DESCRIBE trades" shows the columns of one'
)

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


# ---------------------------------------------------------------------------------- helpers


def _ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _sql_string(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _sql_list(items: Iterable[str]) -> str:
    return "[" + ", ".join(_sql_string(i) for i in items) + "]"


def day_sql(column: str, data_type: str) -> str:
    """SQL for the UTC date of ``column`` (of DuckDB type ``data_type``), whatever the session's
    time zone."""
    t = data_type.upper()
    if t == "DATE":
        return _ident(column)
    if t in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
        return f"CAST(timezone('UTC', {_ident(column)}) AS DATE)"
    if t.startswith("TIMESTAMP"):
        return f"CAST({_ident(column)} AS DATE)"
    return f"TRY_CAST({_ident(column)} AS DATE)"


def day_column(table: str, columns: list[tuple[str, str]]) -> tuple[str, str] | None:
    """The (name, type) of ``table``'s day column: ``DAY_COLUMNS`` for hedgeflow tables; for
    others a ``day``/``date`` column, else the first of receive_ts/ts/event_ts/start_ts, else the first
    TIMESTAMPTZ column; None when there is none."""
    types = dict(columns)
    for name in (DAY_COLUMNS.get(table), "day", "date", "receive_ts", "ts", "event_ts", "start_ts"):
        if name and name in types:
            return name, types[name]
    for name, t in columns:
        if t.upper() in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
            return name, t
    return None


@functools.lru_cache(maxsize=1)
def schema_columns() -> dict[str, tuple[tuple[str, str], ...]]:
    """Each schema table's (column, DuckDB type) in order, read from ``storage.schema`` itself."""
    con = duckdb.connect()
    try:
        create_schema(con)
        rows = con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
        ).fetchall()
    finally:
        con.close()
    out: dict[str, list[tuple[str, str]]] = {}
    for table, col, t in rows:
        out.setdefault(table, []).append((col, t))
    return {t: tuple(cols) for t, cols in out.items()}


# ---------------------------------------------------------------------------------- the archive


@dataclass(frozen=True)
class ArchiveFile:
    """One Parquet file of the archive: its partition (table, day, key=value), rows and bytes."""

    table: str
    day: dt.date
    key: str | None  # the second partition level's column ("exchange", "asset"); None if absent
    value: str | None
    path: str
    rows: int = 0
    bytes: int = 0


def _archive_root(con: duckdb.DuckDBPyConnection, archive: str | os.PathLike) -> str:
    """The archive's root as DuckDB should read it; registers an fsspec filesystem for URLs."""
    text = os.fspath(archive)
    m = _URL_RE.match(text)
    if m is None or m.group(1).lower() == "file":
        local = Path(text[len("file://"):] if m else text)
        if not local.is_dir():
            raise HedgeflowError(
                f"archive not found: {text} is not a directory. Give --archive the directory "
                "holding table=<table>/date=<YYYY-MM-DD>/exchange=<exchange>/*.parquet "
                "(written by the archive export)"
            )
        return local.resolve().as_posix()
    protocol = m.group(1).lower()
    try:
        import fsspec

        fs = fsspec.filesystem(protocol)
    except Exception:  # no fsspec implementation installed: DuckDB's httpfs may still read it
        fs = None
    if fs is not None:
        con.register_filesystem(fs)
    return text.rstrip("/")


def _partition_keys(path: str) -> list[tuple[str, str]]:
    """The ``key=value`` directory levels of ``path`` from its ``table=`` level on, decoded."""
    segments = path.replace("\\", "/").split("/")[:-1]
    starts = [i for i, seg in enumerate(segments) if seg.startswith("table=")]
    keys = []
    for segment in segments[starts[-1]:] if starts else []:
        if "=" in segment:
            k, v = segment.split("=", 1)
            keys.append((k, unquote(v)))
    return keys


def list_archive(con: duckdb.DuckDBPyConnection, archive: str | os.PathLike) -> list[ArchiveFile]:
    """Every Parquet file of the archive with its partition, rows and bytes (from the footers)."""
    root = _archive_root(con, archive)
    pattern = root + "/table=*/**/*.parquet"
    try:
        listed = con.execute("SELECT file FROM glob(?) ORDER BY file", [pattern]).fetchall()
        paths = [r[0] for r in listed]
    except duckdb.Error as e:
        raise HedgeflowError(
            f"cannot list the archive {archive}: {e}. DuckDB reads local paths; other URLs need an "
            "fsspec implementation for the protocol (e.g. s3fs) or DuckDB's httpfs extension, "
            "which cannot be downloaded here: copy the archive to a local directory and give that"
        ) from e
    files: list[ArchiveFile] = []
    for path in paths:
        if path.replace("\\", "/").rsplit("/", 1)[-1].startswith("."):
            continue  # a hidden (staged) file
        keys = _partition_keys(path)
        named = dict(keys)
        table = named.get("table", "")
        try:
            day = dt.date.fromisoformat(named["date"])
        except (KeyError, ValueError):
            day = None
        if day is None or not _IDENT_RE.match(table):
            raise HedgeflowError(
                f"archive file outside the layout: {path}. Expected "
                "table=<table>/date=<YYYY-MM-DD>/exchange=<exchange>/<name>.parquet under "
                f"{root}; move or remove the file"
            )
        rest = [(k, v) for k, v in keys if k not in _HIVE_ONLY_KEYS]
        key, value = rest[0] if rest else (None, None)
        files.append(ArchiveFile(table, day, key, value, path))
    if not files:
        return files
    try:
        meta = {
            name: (int(n), int(size))
            for name, n, size in con.execute(
                "SELECT file_name, num_rows, file_size_bytes FROM parquet_file_metadata(?)",
                [[f.path for f in files]],
            ).fetchall()
        }
    except duckdb.Error as e:
        raise HedgeflowError(f"cannot read the archive's Parquet footers: {e}") from e
    return [
        ArchiveFile(f.table, f.day, f.key, f.value, f.path, *meta.get(f.path, (0, 0)))
        for f in files
    ]


def _read_parquet_sql(paths: list[str]) -> str:
    return (
        f"read_parquet({_sql_list(paths)}, hive_partitioning = true, union_by_name = true, "
        "hive_types_autocast = false)"
    )


# ---------------------------------------------------------------------------------- opening


def _attach_hot(con: duckdb.DuckDBPyConnection, db_path: str | os.PathLike) -> None:
    path = Path(db_path)
    if not path.is_file():
        raise HedgeflowError(
            f"database not found: {db_path}. Give --db the DuckDB file hedgeflow run or "
            "hedgeflow replay wrote (data/hedgeflow.duckdb by default)"
        )
    try:
        con.execute(f"ATTACH {_sql_string(str(path))} AS {HOT} (READ_ONLY)")
    except duckdb.Error as e:
        raise HedgeflowError(
            f"cannot open {db_path} read-only: {e}. A running hedgeflow run holds the file: "
            "query it once the run has stopped (or query a copy of it)"
        ) from e


def _hot_columns(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[str, str]]]:
    rows = con.execute(
        """
        SELECT c.table_name, c.column_name, c.data_type
        FROM information_schema.columns c
        JOIN information_schema.tables t
          ON t.table_catalog = c.table_catalog AND t.table_schema = c.table_schema
         AND t.table_name = c.table_name
        WHERE c.table_catalog = ? AND c.table_schema = 'main' AND t.table_type = 'BASE TABLE'
        ORDER BY c.table_name, c.ordinal_position
        """,
        [HOT],
    ).fetchall()
    out: dict[str, list[tuple[str, str]]] = {}
    for table, col, t in rows:
        out.setdefault(table, []).append((col, t))
    return out


def key_column(table: str, columns: list[tuple[str, str]]) -> str | None:
    """The column of the archive's second partition level for ``table`` (exchange, asset)."""
    names = dict(columns)
    for name in (KEY_COLUMNS.get(table), "exchange"):
        if name and name in names:
            return name
    return None


def _not_in_hot(
    con: duckdb.DuckDBPyConnection, table: str, columns: list[tuple[str, str]],
    files: list[ArchiveFile],
) -> list[ArchiveFile]:
    """The archive files of ``table`` whose partition the hot table holds no row of."""
    src = f"{HOT}.main.{_ident(table)}"
    day = day_column(table, columns)
    if day is None:  # no way to date the rows: any hot row makes the whole table hot
        has_rows = con.execute(f"SELECT count(*) > 0 FROM {src}").fetchone()[0]
        return [] if has_rows else files
    key = key_column(table, columns)
    key_sql = f"CAST({_ident(key)} AS VARCHAR)" if key else "NULL::VARCHAR"
    pairs = {
        (d, v)
        for d, v in con.execute(f"SELECT DISTINCT {day_sql(*day)}, {key_sql} FROM {src}").fetchall()
    }
    days = {d for d, _ in pairs}
    return [
        f for f in files
        if ((f.day, f.value) not in pairs if key and f.key == key else f.day not in days)
    ]


def _archive_select(
    con: duckdb.DuckDBPyConnection, paths: list[str], columns: list[tuple[str, str]] | None
) -> tuple[str, list[tuple[str, str]]]:
    """SELECT of the archive files cast to ``columns`` (None: the files' own columns)."""
    src = _read_parquet_sql(paths)
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()
    except duckdb.Error as e:
        raise HedgeflowError(f"cannot read the archive's Parquet files: {e}") from e
    have = {r[0]: r[1] for r in described}
    if columns is None:
        columns = [(c, t) for c, t in have.items() if c not in _HIVE_ONLY_KEYS]
    parts = [
        f"CAST({_ident(c) if c in have else 'NULL'} AS {t}) AS {_ident(c)}" for c, t in columns
    ]
    return f"SELECT {', '.join(parts)} FROM {src}", columns


def _create_meta(con: duckdb.DuckDBPyConnection, files: list[ArchiveFile], used: set[str]) -> None:
    con.execute(f"CREATE SCHEMA {META_SCHEMA}")
    con.execute(
        f"CREATE TABLE {META_SCHEMA}.archive_files (table_name VARCHAR, day DATE, "
        "partition_key VARCHAR, partition_value VARCHAR, path VARCHAR, rows BIGINT, bytes BIGINT, "
        "in_surface BOOLEAN)"
    )
    if not files:
        return
    data = pa.table({
        "table_name": pa.array([f.table for f in files], pa.string()),
        "day": pa.array([f.day for f in files], pa.date32()),
        "partition_key": pa.array([f.key for f in files], pa.string()),
        "partition_value": pa.array([f.value for f in files], pa.string()),
        "path": pa.array([f.path for f in files], pa.string()),
        "rows": pa.array([f.rows for f in files], pa.int64()),
        "bytes": pa.array([f.bytes for f in files], pa.int64()),
        "in_surface": pa.array([f.path in used for f in files], pa.bool_()),
    })
    con.register("_hedgeflow_archive_files", data)
    try:
        con.execute(
            f"INSERT INTO {META_SCHEMA}.archive_files SELECT * FROM _hedgeflow_archive_files"
        )
    finally:
        con.unregister("_hedgeflow_archive_files")


def open_surface(
    db_path: str | os.PathLike | None = None, archive: str | os.PathLike | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory connection whose views join the hot database and the archive (module doc).

    Raises ``HedgeflowError`` when the database or the archive cannot be found or read.
    """
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        hot: dict[str, list[tuple[str, str]]] = {}
        if db_path is not None:
            _attach_hot(con, db_path)
            hot = _hot_columns(con)
        files = list_archive(con, archive) if archive is not None else []
        by_table: dict[str, list[ArchiveFile]] = {}
        for f in files:
            by_table.setdefault(f.table, []).append(f)
        schema = schema_columns()
        names = list(TABLES) + sorted((set(hot) | set(by_table)) - set(TABLES))
        used: set[str] = set()
        views: list[tuple[str, str]] = []
        for table in names:
            columns = hot.get(table) or (list(schema[table]) if table in schema else None)
            selects: list[str] = []
            if table in hot:
                selects.append(
                    f"SELECT {', '.join(_ident(c) for c, _ in columns)} "
                    f"FROM {HOT}.main.{_ident(table)}"
                )
            candidates = by_table.get(table, [])
            if candidates and table in hot:
                candidates = _not_in_hot(con, table, columns, candidates)
            if candidates:
                paths = [f.path for f in candidates]
                sql, columns = _archive_select(con, paths, columns)
                selects.append(sql)
                used.update(paths)
            if not selects:
                selects.append(
                    "SELECT "
                    + ", ".join(f"CAST(NULL AS {t}) AS {_ident(c)}" for c, t in columns)
                    + " WHERE false"
                )
            views.append((table, "\nUNION ALL\n".join(selects)))
        for table, sql in views:
            con.execute(f"CREATE VIEW {_ident(table)} AS {sql}")
        _create_meta(con, files, used)
    except BaseException:
        con.close()
        raise
    return con


# ---------------------------------------------------------------------------------- queries

_READ_ONLY_TYPES = ("SELECT",)


def _statement_kind(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    statements = con.extract_statements(sql)
    if len(statements) != 1:
        raise HedgeflowError(
            f"hedgeflow query runs one statement, got {len(statements)}. Give a single SELECT; "
            + QUERY_HINT
        )
    return statements[0].type.name


def run_query(con: duckdb.DuckDBPyConnection, sql: str) -> pd.DataFrame:
    """The result of the user's own read-only SQL; any error is a ``HedgeflowError``."""
    if not sql or not sql.strip():
        raise HedgeflowError(
            'the query is empty. Give SQL such as "SELECT count(*) FROM trades"; ' + QUERY_HINT
        )
    try:
        kind = _statement_kind(con, sql)
        if kind == "EXPLAIN":
            # EXPLAIN ANALYZE runs its statement: judge the statement being explained.
            inner = re.sub(r"^\s*explain\s+(analy[sz]e\s+)?", "", sql, flags=re.IGNORECASE)
            kind = _statement_kind(con, inner)
        if kind not in _READ_ONLY_TYPES:
            raise HedgeflowError(
                f"hedgeflow query is read-only: {kind} statements are refused. Give a SELECT "
                "(or SHOW, DESCRIBE, SUMMARIZE, EXPLAIN); " + QUERY_HINT
            )
        con.execute(sql)
        dates = [i for i, d in enumerate(con.description or []) if str(d[1]) == "DATE"]
        df = con.df()
    except duckdb.Error as e:
        raise HedgeflowError(f"query failed: {e}\nhint: {QUERY_HINT}") from e
    for i in dates:  # DATE arrives as midnight timestamps: give dates back
        df.isetitem(i, pd.Series(
            [None if pd.isna(v) else v.date() for v in df.iloc[:, i]], index=df.index, dtype=object
        ))
    return df


# ---------------------------------------------------------------------------------- formatting

FORMATS = ("table", "csv", "json")


def _plain(value, sep: str = "T"):
    """A cell as a JSON-friendly Python value (None for NULL/NaN, ISO 8601 text for times)."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, np.ndarray):
        return [_plain(v, sep) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v, sep) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, sep) for k, v in value.items()}
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else (value if math.isfinite(value) else str(value))
    if isinstance(value, dt.datetime):  # pd.Timestamp included
        return value.isoformat(sep=sep)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (pd.Timedelta, dt.timedelta)):
        return pd.Timedelta(value).total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (bool, int, str)):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _cell_text(value) -> str:
    v = _plain(value, sep=" ")
    if v is None:
        return "NULL"
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def format_result(df: pd.DataFrame, fmt: str = "table", max_rows: int | None = 50) -> str:
    """``df`` as text for the terminal.

    ``table``: aligned columns, NULL shown as ``NULL``, at most ``max_rows`` rows (None: all) with a
    footer saying how many there are. ``csv`` and ``json`` are for other programs and hold every
    row: CSV with a header (NULL as an empty field), JSON as an array of objects (NULL as null,
    times as ISO 8601 text with their offset).
    """
    if fmt == "csv":
        cells = df.map(_csv_cell) if len(df) else df
        return cells.to_csv(index=False)
    if fmt == "json":
        records = [
            {str(k): _plain(v) for k, v in zip(df.columns, row)}
            for row in df.itertuples(index=False, name=None)
        ]
        return json.dumps(records, ensure_ascii=False)
    if fmt != "table":
        raise HedgeflowError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    n = len(df)
    shown = df if max_rows is None or n <= max_rows else df.head(max_rows)
    header = [str(c) for c in df.columns]
    rows = [[_cell_text(v) for v in row] for row in shown.itertuples(index=False, name=None)]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
               for c in df.columns]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)
        ).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)] if header else []
    out += [line(r) for r in rows]
    if len(shown) < n:
        out.append(f"({n} rows, first {len(shown)} shown; --format csv or json gives them all)")
    else:
        out.append(f"({n} row{'s' if n != 1 else ''})")
    return "\n".join(out) + "\n"


def _csv_cell(value):
    v = _plain(value)
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False)
    return v
