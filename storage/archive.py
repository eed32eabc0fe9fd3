"""Tick archive: the DuckDB hot tables as Hive-partitioned, zstd-compressed Parquet.

Layout, under a local path or any fsspec URL (``memory://...``, ``file://...``, ...)::

    <out>/manifest.json
    <out>/table=<table>/date=<YYYY-MM-DD>/<key>=<value>/part-0.parquet

``date`` is the UTC date of the table's time column (``ARCHIVE_TABLES``); ``<key>`` is
``exchange`` for every table that has one, and ``asset`` for ``oracle_prices`` and the analytics
tables (``volatility``, ``surface_fits``, ``premium_quotes``, ``policy_risk``) (they have no
exchange: their rows are per asset, so the asset is the natural second level, and every level
names a real column -- no placeholder value that a Hive reader would turn into a fake column).
Values are percent-encoded (``urllib.parse.quote``) when they hold anything but letters, digits
and ``-_.~``. Each file holds every column of its table, the partition columns included, so a
file is complete on its own; the directory names are for pruning. Times stay ``TIMESTAMPTZ`` in
UTC (Arrow ``timestamp[us, tz=UTC]``) whatever the connection's session time zone. Only the
tables of ``ARCHIVE_TABLES`` are archived (not counters such as ``ingest_stats``).

Decisions (see also each function's docstring):

- **Deterministic bytes.** Rows are sorted by the time column, then by every column in table
  order (NULLs last); row groups hold a fixed number of rows, the Parquet writer options are
  pinned. The same rows give byte-identical files with the same pyarrow version (after upgrading
  pyarrow a re-export may rewrite partitions whose rows did not change; that is harmless).
- **Idempotent.** A partition whose new bytes equal the existing file's (size, then sha256 of the
  file itself) is not rewritten: ``ExportResult.unchanged``. Export only adds or replaces
  partitions, never deletes one: days removed from DuckDB by retention stay in the archive.
- **Never shrinks.** A partition for which the archive holds more rows than the database (rows
  already moved out by retention, say) is not overwritten: it is listed in
  ``ExportResult.refused``. Restore the archive first (restore merges), then export again.
- **Atomic.** An export first stages every changed partition and the new manifest under hidden
  temporary names (``.part-0.parquet.<token>.tmp``) in their final directories, then renames
  them into place, the manifest last (``os.replace`` on local paths, fsspec ``mv`` elsewhere).
  Any failure while staging (``ENOSPC``, permissions, a database error) removes the temporary
  files and the directories the export created: files and manifest are as they were. Hive and
  glob readers skip the hidden names. One export at a time per archive.
- **The manifest** (``manifest.json``, written atomically) records per partition its table, date,
  key, row count, byte size, sha256, and the time its file was written; and the time of the last
  export. Times come from the caller (``exported_at``); nothing here reads a clock.
- **Verify before load.** ``restore_archive`` checks every selected partition (presence, size,
  sha256, Parquet row count, the manifest's row count) before it loads anything, and refuses
  with ``ArchiveError`` naming each bad partition. It then loads everything in one transaction,
  re-hashing the very bytes it loads.
- **Restore merges without duplicates.** Into a database that already has rows of a partition,
  restore inserts only the archived rows the database lacks (a multiset difference, ``EXCEPT
  ALL``): a row the database holds k times and the archive n times ends up max(k, n) times.
  Restoring twice changes nothing; rows that arrived after the export are kept.
- **Retention deletes only what is verified, per partition.** A partition (table, day, key)
  older than ``today - hot_days`` is deleted from DuckDB only if the manifest lists it with the
  database's row count, its file passes the checksum and row-count checks, and the database's
  rows equal the file's rows (``EXCEPT ALL``). Verification and deletion run in one
  transaction.

Every SQL statement binds its values as parameters; table and column names come from the fixed
``ARCHIVE_TABLES`` set and the database's own catalog.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from urllib.parse import quote

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from models.errors import HedgeflowError
from storage.schema import create_schema

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "hedgeflow-archive"
MANIFEST_VERSION = 1
PART_NAME = "part-0.parquet"

# Pinned so the same rows always give the same bytes.
ROW_GROUP_ROWS = 131_072
ARROW_BATCH_ROWS = 65_536  # rows per batch read from DuckDB (any size gives the same file)
ZSTD_LEVEL = 3
_PARQUET_OPTIONS = dict(
    compression="zstd",
    compression_level=ZSTD_LEVEL,
    version="2.6",
    data_page_version="1.0",
    use_dictionary=True,
    write_statistics=True,
    store_schema=True,
    write_page_index=False,
)
# A partition's Parquet bytes are kept in memory up to this size (so an unchanged partition costs
# no write); a bigger one streams into its temporary file.
SPOOL_BYTES = 64 * 1024 * 1024
_READ_CHUNK = 1024 * 1024
_VIEW = "_hedgeflow_archive_part"


class ArchiveError(HedgeflowError):
    """The archive cannot be written, read or trusted. The message says what and how to fix it."""


@dataclass(frozen=True)
class ArchiveTable:
    """One archived table: the time column that dates its rows, and the partition key column."""

    name: str
    time_column: str
    key_column: str  # "exchange"; "asset" for the analytics tables, which have no exchange column

    @property
    def has_exchange(self) -> bool:
        return self.key_column == "exchange"


ARCHIVE_TABLES: dict[str, ArchiveTable] = {
    t.name: t
    for t in (
        ArchiveTable("trades", "event_ts", "exchange"),
        ArchiveTable("quotes", "event_ts", "exchange"),
        ArchiveTable("option_tickers", "event_ts", "exchange"),
        ArchiveTable("book_updates", "event_ts", "exchange"),
        ArchiveTable("funding", "event_ts", "exchange"),
        ArchiveTable("index_prices", "event_ts", "exchange"),
        ArchiveTable("oracle_prices", "ts", "asset"),
        ArchiveTable("volatility", "ts", "asset"),
        ArchiveTable("surface_fits", "ts", "asset"),
        ArchiveTable("premium_quotes", "ts", "asset"),
        ArchiveTable("policy_risk", "ts", "asset"),
        ArchiveTable("quarantine", "receive_ts", "exchange"),
        ArchiveTable("gaps", "start_ts", "exchange"),
    )
}


@dataclass(frozen=True, order=True)
class Partition:
    """One archive file: the rows of ``table`` whose UTC date is ``day`` and key is ``value``."""

    table: str
    day: date
    value: str

    @property
    def spec(self) -> ArchiveTable:
        return ARCHIVE_TABLES[self.table]

    @property
    def path(self) -> str:
        """The file's path relative to the archive root."""
        value = quote(self.value, safe="")
        key = self.spec.key_column
        return f"table={self.table}/date={self.day.isoformat()}/{key}={value}/{PART_NAME}"

    def bounds(self) -> tuple[datetime, datetime]:
        """[start, end) of the day as UTC instants (bound as TIMESTAMPTZ)."""
        start = datetime(self.day.year, self.day.month, self.day.day, tzinfo=timezone.utc)
        return start, start + timedelta(days=1)


@dataclass(frozen=True)
class PartitionEntry:
    """A partition as the manifest records it."""

    partition: Partition
    rows: int
    bytes: int
    sha256: str
    exported_at: str

    def to_json(self) -> dict:
        p = self.partition
        return {
            "table": p.table,
            "date": p.day.isoformat(),
            "key": p.spec.key_column,
            "value": p.value,
            "rows": self.rows,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "exported_at": self.exported_at,
        }


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: every partition of the archive, keyed by its relative path."""

    exported_at: str | None = None
    entries: dict[str, PartitionEntry] = field(default_factory=dict)

    def select(
        self, tables: Iterable[str], start: date | None, end: date | None
    ) -> list[PartitionEntry]:
        wanted = set(tables)
        return [
            e
            for _, e in sorted(self.entries.items())
            if e.partition.table in wanted
            and (start is None or e.partition.day >= start)
            and (end is None or e.partition.day <= end)
        ]

    def to_bytes(self) -> bytes:
        doc = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "exported_at": self.exported_at,
            "partitions": {path: e.to_json() for path, e in sorted(self.entries.items())},
        }
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class ArchiveProblem:
    """Something wrong with one partition (or the manifest): ``path`` is relative to the root."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class ExportResult:
    out: str
    exported_at: str
    written: tuple[str, ...]  # partitions written (new or changed), relative paths
    unchanged: tuple[str, ...]  # partitions whose file already held exactly these bytes
    refused: tuple[ArchiveProblem, ...]  # partitions not overwritten: they would have lost rows
    rows: dict[str, int]  # rows per table in the exported partitions (written + unchanged)
    bytes_written: int

    def summary(self) -> dict:
        """JSON-ready counts, for the command line."""
        return {
            "out": self.out,
            "exported_at": self.exported_at,
            "written": len(self.written),
            "unchanged": len(self.unchanged),
            "refused": [str(p) for p in self.refused],
            "rows": dict(self.rows),
            "bytes_written": self.bytes_written,
        }


@dataclass(frozen=True)
class RestoreResult:
    src: str
    partitions: int  # partitions read
    inserted: dict[str, int]  # rows inserted per table
    already_present: int  # archived rows the database already held (not inserted again)

    def summary(self) -> dict:
        return {
            "src": self.src,
            "partitions": self.partitions,
            "inserted": dict(self.inserted),
            "already_present": self.already_present,
        }


@dataclass(frozen=True)
class RetentionResult:
    cutoff: date  # rows of days before this date were candidates
    deleted: dict[str, int]  # rows deleted per table
    deleted_partitions: tuple[str, ...]
    kept: tuple[ArchiveProblem, ...]  # cold partitions not deleted, and why

    def summary(self) -> dict:
        return {
            "cutoff": self.cutoff.isoformat(),
            "deleted": dict(self.deleted),
            "deleted_partitions": len(self.deleted_partitions),
            "kept": [str(p) for p in self.kept],
        }


# ============================================================================ export


def export_archive(
    con: duckdb.DuckDBPyConnection,
    out: str | os.PathLike,
    start: date | None = None,
    end: date | None = None,
    tables: Iterable[str] | None = None,
    *,
    exported_at: datetime | float,
    progress=None,
) -> ExportResult:
    """Export the rows of UTC days ``start``..``end`` (inclusive; None: unbounded) to ``out``;
    ``progress(tables_done, tables)`` is called as each table is done.

    ``exported_at`` (an aware datetime or epoch seconds) is recorded in the manifest. Partitions
    outside the range, or no longer in the database, stay in the archive untouched. Raises
    ``ArchiveError`` when the archive cannot be written (no space, no permission, a damaged
    manifest); the archive is then as it was.
    """
    names = _check_tables(tables)
    _check_range(start, end)
    stamp = _stamp(exported_at)
    out = os.fspath(out)
    fs, root = _filesystem(out)
    try:
        manifest = _read_manifest(fs, root, out, missing_ok=True)
    except OSError as e:
        raise _io_error(e, out, "reading the manifest", writing=False) from e
    token = uuid.uuid4().hex[:12]
    stage = _Stage(fs)
    written: list[str] = []
    unchanged: list[str] = []
    refused: list[ArchiveProblem] = []
    rows: Counter = Counter()
    entries = dict(manifest.entries)
    bytes_written = 0
    try:
        for done, name in enumerate(names):
            if progress is not None and done:
                progress(done, len(names))
            spec = ARCHIVE_TABLES[name]
            columns = _table_columns(con, name)
            if not columns:
                continue  # table absent from this database: nothing to export
            for part, n_db in _db_partitions(con, spec, start, end):
                old = manifest.entries.get(part.path)
                if old is not None and n_db < old.rows:
                    refused.append(_shrink_problem(part, old.rows, n_db))
                    continue
                final = f"{root}/{part.path}"
                tmp = f"{root}/{_hidden_tmp(part.path, token)}"
                n, size, sha, staged = _encode_partition(
                    con, spec, columns, part, fs, final, tmp, stage
                )
                if old is not None and n < old.rows:  # rows vanished since the listing
                    stage.discard(tmp)
                    refused.append(_shrink_problem(part, old.rows, n))
                    continue
                rows[name] += n
                if staged:
                    written.append(part.path)
                    bytes_written += size
                    entries[part.path] = PartitionEntry(part, n, size, sha, stamp)
                else:
                    unchanged.append(part.path)
                    keep_stamp = old.exported_at if old is not None and old.sha256 == sha else stamp
                    entries[part.path] = PartitionEntry(part, n, size, sha, keep_stamp)
        if progress is not None:
            progress(len(names), len(names))
        new_manifest = Manifest(exported_at=stamp, entries=entries)
        manifest_tmp = f"{root}/.{MANIFEST_NAME}.{token}.tmp"
        stage.write_bytes(manifest_tmp, new_manifest.to_bytes())
    except OSError as e:
        stage.rollback()
        raise _io_error(e, out, "staging the new files", writing=True) from e
    except BaseException:
        stage.rollback()
        raise
    # Everything is written; only renames remain. The manifest goes last.
    _commit(fs, root, out, stage, manifest, entries, manifest_tmp)
    return ExportResult(
        out=out,
        exported_at=stamp,
        written=tuple(written),
        unchanged=tuple(unchanged),
        refused=tuple(refused),
        rows=dict(rows),
        bytes_written=bytes_written,
    )


def _shrink_problem(part: Partition, archived: int, in_db: int) -> ArchiveProblem:
    return ArchiveProblem(
        part.path,
        f"the archive holds {archived} rows, the database only {in_db}; overwriting would lose "
        "rows, so the archived file was kept. Restore the archive into the database first "
        "(restore merges without duplicates), then export again.",
    )


def _hidden_tmp(rel_path: str, token: str) -> str:
    head, _, name = rel_path.rpartition("/")
    return f"{head}/.{name}.{token}.tmp" if head else f".{name}.{token}.tmp"


class _Stage:
    """Temporary files and directories an export created, to rename or to remove."""

    def __init__(self, fs) -> None:
        self.fs = fs
        self.files: list[tuple[str, str]] = []  # (tmp, final) staged for renaming
        self._tmps: list[str] = []  # every temporary file opened, staged or not
        self._dirs: list[str] = []  # directories created, parents first

    def ensure_dir(self, path: str) -> None:
        missing = []
        d = path
        while d and d not in ("/", ".") and not self.fs.exists(d):
            missing.append(d)
            parent = self.fs._parent(d)
            if parent == d:
                break
            d = parent
        for d in reversed(missing):
            self.fs.makedirs(d, exist_ok=True)
            self._dirs.append(d)

    def open_tmp(self, tmp: str):
        self.ensure_dir(self.fs._parent(tmp))
        self._tmps.append(tmp)
        return self.fs.open(tmp, "wb")

    def write_bytes(self, tmp: str, data: bytes) -> None:
        with self.open_tmp(tmp) as f:
            f.write(data)

    def discard(self, tmp: str) -> None:
        self.files = [(t, f) for t, f in self.files if t != tmp]
        _remove_quietly(self.fs, tmp)

    def rollback(self) -> None:
        for tmp in self._tmps:
            _remove_quietly(self.fs, tmp)
        for d in reversed(self._dirs):
            try:
                if not self.fs.ls(d, detail=False):
                    self.fs.rmdir(d)
            except OSError:
                pass


def _remove_quietly(fs, path: str) -> None:
    try:
        if fs.exists(path):
            fs.rm_file(path)
    except OSError:
        pass


def _replace(fs, src: str, dst: str) -> None:
    if isinstance(fs, LocalFileSystem):
        os.replace(src, dst)
    else:
        fs.mv(src, dst)


def _commit(fs, root, out, stage: _Stage, old: Manifest, entries, manifest_tmp: str) -> None:
    done: set[str] = set()
    try:
        for tmp, final in stage.files:
            _replace(fs, tmp, final)
            done.add(final)
        _replace(fs, manifest_tmp, f"{root}/{MANIFEST_NAME}")
    except OSError as e:
        # Some partitions may hold their new bytes already: record exactly those, so that the
        # manifest describes the files as they are, and remove the rest.
        stage.rollback()
        actual = dict(old.entries)
        for path, entry in entries.items():
            if f"{root}/{path}" in done:
                actual[path] = entry
        try:
            data = Manifest(old.exported_at, actual).to_bytes()
            _write_atomic(fs, f"{root}/{MANIFEST_NAME}", data)
        except OSError:
            pass
        raise ArchiveError(
            f"export to {out} failed while renaming files into place: {_describe(e)}. "
            f"{len(done)} partitions were replaced before the failure. Check the archive with "
            "verify_archive and run the export again."
        ) from e


def _write_atomic(fs, path: str, data: bytes) -> None:
    tmp = f"{fs._parent(path)}/.{path.rpartition('/')[2]}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with fs.open(tmp, "wb") as f:
            f.write(data)
        _replace(fs, tmp, path)
    except BaseException:
        _remove_quietly(fs, tmp)
        raise


class _Sink:
    """Where pyarrow writes one partition: hashed as it goes, in memory up to ``SPOOL_BYTES``,
    then streamed into the temporary file."""

    def __init__(self, stage: _Stage, tmp: str) -> None:
        self._stage = stage
        self._tmp = tmp
        self._buf = io.BytesIO()
        self._file = None
        self._closed = False
        self._aborted = False
        self.sha = hashlib.sha256()
        self.size = 0

    # The file-object surface pyarrow uses.
    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if self._aborted:
            return len(view)
        self.sha.update(view)
        self.size += len(view)
        if self._file is None:
            self._buf.write(view)
            if self._buf.tell() > SPOOL_BYTES:
                self._file = self._stage.open_tmp(self._tmp)
                self._file.write(self._buf.getvalue())
                self._buf = io.BytesIO()
        else:
            self._file.write(view)
        return len(view)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    # Ours.
    @property
    def spilled(self) -> bool:
        return self._file is not None

    def finish_file(self) -> None:
        if self._file is not None:
            self._file.close()

    def abort(self) -> None:
        self._aborted = True

    def getvalue(self) -> bytes:
        return self._buf.getvalue()


def _encode_partition(con, spec, columns, part, fs, final, tmp, stage: _Stage):
    """Write ``part`` as Parquet; stage it under ``tmp`` unless ``final`` already holds the same
    bytes. Returns (rows, bytes, sha256, staged)."""
    lo, hi = part.bounds()
    order = ", ".join(f"{_q(c)} ASC NULLS LAST" for c in [spec.time_column, *columns])
    sql = (
        f"SELECT {', '.join(_q(c) for c in columns)} FROM {_q(spec.name)} "
        f"WHERE {_q(spec.time_column)} >= $1 AND {_q(spec.time_column)} < $2 "
        f"AND {_q(spec.key_column)} = $3 ORDER BY {order}"
    )
    reader = con.sql(sql, params=[lo, hi, part.value]).to_arrow_reader(ARROW_BATCH_ROWS)
    sink = _Sink(stage, tmp)
    n = 0
    try:
        schema = _utc_schema(reader.schema)
        writer = pq.ParquetWriter(sink, schema, **_PARQUET_OPTIONS)
        # Row groups of exactly ROW_GROUP_ROWS rows, whatever batches the database hands over.
        pending: list[pa.Table] = []
        n_pending = 0
        for batch in reader:
            if batch.num_rows == 0:
                continue
            pending.append(pa.Table.from_batches([batch]).cast(schema))
            n_pending += batch.num_rows
            while n_pending >= ROW_GROUP_ROWS:
                table = pa.concat_tables(pending).combine_chunks()
                writer.write_table(table.slice(0, ROW_GROUP_ROWS), row_group_size=ROW_GROUP_ROWS)
                n += ROW_GROUP_ROWS
                rest = table.slice(ROW_GROUP_ROWS)
                pending, n_pending = ([rest] if rest.num_rows else []), rest.num_rows
        if n_pending or n == 0:
            table = pa.concat_tables(pending).combine_chunks() if pending else schema.empty_table()
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            n += n_pending
        writer.close()
    except BaseException:
        sink.abort()  # a writer left unclosed must not write its footer anywhere
        raise
    finally:
        # An unfinished result would block every later statement on the caller's connection.
        reader.close()
        sink.finish_file()
    sha = sink.sha.hexdigest()
    if _same_file(fs, final, sink.size, sha):
        if sink.spilled:
            stage.discard(tmp)
        return n, sink.size, sha, False
    if not sink.spilled:
        stage.write_bytes(tmp, sink.getvalue())
    stage.files.append((tmp, final))
    return n, sink.size, sha, True


def _utc_schema(schema: pa.Schema) -> pa.Schema:
    """The query's schema with every zoned timestamp in UTC (the session zone may differ)."""
    fields = []
    for f in schema:
        if pa.types.is_timestamp(f.type) and f.type.tz is not None:
            f = f.with_type(pa.timestamp(f.type.unit, tz="UTC"))
        fields.append(f)
    return pa.schema(fields)


def _same_file(fs, path: str, size: int, sha: str) -> bool:
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return False
    if info.get("type") != "file" or info.get("size") != size:
        return False
    return _hash_file(fs, path) == sha


def _hash_file(fs, path: str) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# ============================================================================ verify / restore


def read_manifest(src: str | os.PathLike) -> Manifest:
    """The archive's manifest; ``ArchiveError`` if it is missing or damaged."""
    src = os.fspath(src)
    fs, root = _filesystem(src)
    try:
        return _read_manifest(fs, root, src, missing_ok=False)
    except OSError as e:
        raise _io_error(e, src, "reading the manifest", writing=False) from e


def verify_archive(
    src: str | os.PathLike,
    *,
    tables: Iterable[str] | None = None,
    start: date | None = None,
    end: date | None = None,
) -> list[ArchiveProblem]:
    """Every problem with the archive's partitions (all, or those selected): a missing file, a
    size, checksum or row count that differs from the manifest, an unreadable file. An empty list
    means the selected partitions are intact. A missing or damaged manifest is one problem."""
    names = _check_tables(tables)
    _check_range(start, end)
    try:
        manifest = read_manifest(src)
    except ArchiveError as e:
        return [ArchiveProblem(MANIFEST_NAME, str(e))]
    fs, root = _filesystem(os.fspath(src))
    problems = []
    for entry in manifest.select(names, start, end):
        message = _check_file(fs, root, entry)
        if message is not None:
            problems.append(ArchiveProblem(entry.partition.path, message))
    return problems


def _check_file(fs, root: str, entry: PartitionEntry, data: bytes | None = None) -> str | None:
    """Why the partition's file does not match its manifest entry, or None."""
    path = f"{root}/{entry.partition.path}"
    try:
        if data is None:
            try:
                info = fs.info(path)
            except FileNotFoundError:
                return "file missing"
            if info.get("size") != entry.bytes:
                return f"size is {info.get('size')} bytes, the manifest says {entry.bytes}"
            sha = _hash_file(fs, path)
        else:
            if len(data) != entry.bytes:
                return f"size is {len(data)} bytes, the manifest says {entry.bytes}"
            sha = hashlib.sha256(data).hexdigest()
        if sha != entry.sha256:
            return f"checksum mismatch: sha256 {sha}, the manifest says {entry.sha256}"
        try:
            if data is None:
                with fs.open(path, "rb") as f:
                    n = pq.ParquetFile(f).metadata.num_rows
            else:
                n = pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows
        except (pa.ArrowException, ValueError) as e:
            return f"not a readable Parquet file ({e})"
        if n != entry.rows:
            return f"row count is {n}, the manifest says {entry.rows}"
    except OSError as e:
        return f"cannot be read: {_describe(e)}"
    return None


def restore_archive(
    src: str | os.PathLike,
    con: duckdb.DuckDBPyConnection,
    *,
    tables: Iterable[str] | None = None,
    start: date | None = None,
    end: date | None = None,
) -> RestoreResult:
    """Load the archive (all, or the selected tables and UTC days) into ``con``.

    Every selected partition is verified first; any problem raises ``ArchiveError`` naming the
    partitions and nothing is loaded. The schema is created if missing. Rows the database
    already holds are not inserted again (multiset merge, see the module docstring). All
    partitions load in one transaction: on any failure the database is as it was.
    """
    names = _check_tables(tables)
    _check_range(start, end)
    src = os.fspath(src)
    manifest = read_manifest(src)
    fs, root = _filesystem(src)
    selected = manifest.select(names, start, end)
    problems = [
        ArchiveProblem(e.partition.path, m)
        for e in selected
        if (m := _check_file(fs, root, e)) is not None
    ]
    if problems:
        raise ArchiveError(_refusal(src, problems))
    create_schema(con)
    inserted: Counter = Counter()
    already = 0
    columns_of = {name: _table_columns(con, name) for name in names}
    con.execute("BEGIN TRANSACTION")
    try:
        # Rows the database holds per partition, read inside the transaction that inserts.
        held = {
            part: n
            for name in names
            for part, n in _db_partitions(con, ARCHIVE_TABLES[name], start, end)
        }
        for entry in selected:
            part = entry.partition
            data, table = _load_verified(fs, root, src, entry)
            columns = _restore_columns(src, part, table, columns_of[part.table])
            con.register(_VIEW, table)
            try:
                _check_rows_belong(con, src, part)
                cols = ", ".join(_q(c) for c in columns)
                if held.get(part, 0) == 0:
                    sql = f"INSERT INTO {_q(part.table)} ({cols}) SELECT {cols} FROM {_VIEW}"
                    params: list = []
                else:
                    where, params = _where(part)
                    sql = (
                        f"INSERT INTO {_q(part.table)} ({cols}) SELECT {cols} FROM {_VIEW} "
                        f"EXCEPT ALL SELECT {cols} FROM {_q(part.table)} WHERE {where}"
                    )
                try:
                    n_in = con.execute(sql, params).fetchall()[0][0]
                except duckdb.ConstraintException as e:
                    raise ArchiveError(
                        f"{src}: {part.path}: its rows conflict with rows already in table "
                        f"{part.table} ({e}); nothing was restored. Delete that day's rows from "
                        "the database (or restore into an empty one) and restore again."
                    ) from e
            finally:
                _unregister(con)
            inserted[part.table] += n_in
            already += entry.rows - n_in
        con.execute("COMMIT")
    except BaseException:
        _rollback(con)
        raise
    return RestoreResult(
        src=src, partitions=len(selected), inserted=dict(inserted), already_present=already
    )


def _load_verified(fs, root, src, entry: PartitionEntry) -> tuple[bytes, pa.Table]:
    """The partition's bytes, checked again (they are what gets loaded), and its rows."""
    try:
        data = fs.cat_file(f"{root}/{entry.partition.path}")
    except OSError as e:
        problem = ArchiveProblem(entry.partition.path, f"cannot be read: {_describe(e)}")
        raise ArchiveError(_refusal(src, [problem])) from e
    message = _check_file(fs, root, entry, data)
    if message is not None:
        problem = ArchiveProblem(entry.partition.path, message + " (changed during the restore)")
        raise ArchiveError(_refusal(src, [problem]))
    return data, _parquet_table(data)


def _parquet_table(data: bytes) -> pa.Table:
    return pq.ParquetFile(pa.BufferReader(data)).read()


def _restore_columns(src, part: Partition, table: pa.Table, columns: list[str]) -> list[str]:
    """The columns to load, in table order. A file may lack columns added to the schema after it
    was exported (they take their defaults); a column the table lacks would be lost: refused."""
    extra = sorted(set(table.column_names) - set(columns))
    if extra:
        raise ArchiveError(
            f"{src}: {part.path}: table {part.table} has no column(s) {extra}, so their values "
            "would be lost; nothing was restored. Restore with a hedgeflow whose schema has them."
        )
    return [c for c in columns if c in set(table.column_names)]


def _check_rows_belong(con, src, part: Partition) -> None:
    spec = part.spec
    lo, hi = part.bounds()
    bad = con.execute(
        f"SELECT count(*) FROM {_VIEW} WHERE NOT ({_q(spec.time_column)} >= $1 "
        f"AND {_q(spec.time_column)} < $2 AND {_q(spec.key_column)} = $3)",
        [lo, hi, part.value],
    ).fetchall()[0][0]
    if bad:
        raise ArchiveError(
            f"{src}: {part.path}: {bad} rows do not belong to this partition (another date or "
            f"{spec.key_column}); the manifest or the file was altered. Nothing was restored."
        )


def _refusal(src: str, problems: list[ArchiveProblem]) -> str:
    shown = "; ".join(str(p) for p in problems[:10])
    more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
    return (
        f"archive {src} failed verification, nothing was restored: {shown}{more}. "
        "Put back the original files from a copy of the archive, or re-export those days "
        "(start=end=that date) from a database that still holds them, then try again."
    )


# ============================================================================ retention


def verified_days(
    con: duckdb.DuckDBPyConnection,
    src: str | os.PathLike,
    *,
    tables: Iterable[str] | None = None,
    start: date | None = None,
    end: date | None = None,
) -> dict[str, list[date]]:
    """Per table, the UTC days whose every database partition is safely in the archive (see
    ``apply_retention`` for what "verified" checks). Days with no rows in the database are not
    listed."""
    names = _check_tables(tables)
    _check_range(start, end)
    src = os.fspath(src)
    manifest = read_manifest(src)
    fs, root = _filesystem(src)
    days: dict[str, list[date]] = {}
    for name in names:
        spec = ARCHIVE_TABLES[name]
        columns = _table_columns(con, name)
        if not columns:
            continue
        ok: dict[date, bool] = {}
        for part, n_db in _db_partitions(con, spec, start, end):
            good = _verify_db_partition(con, fs, root, manifest, part, n_db, columns) is None
            ok[part.day] = ok.get(part.day, True) and good
        days[name] = sorted(d for d, good in ok.items() if good)
    return days


def apply_retention(
    con: duckdb.DuckDBPyConnection,
    src: str | os.PathLike,
    hot_days: int,
    today: date,
    *,
    tables: Iterable[str] | None = None,
) -> RetentionResult:
    """Delete from DuckDB the archived rows of UTC days before ``today - hot_days``.

    ``hot_days`` full days before ``today`` stay (0 keeps only today). A partition (table, day,
    key) is deleted only if the manifest lists it with the database's row count, its file passes
    the checksum and row-count checks, and its rows equal the database's; any other cold
    partition is kept and listed in ``kept`` with the reason. Verification and deletion run in one
    transaction on ``con``.
    """
    if isinstance(hot_days, bool) or not isinstance(hot_days, int) or hot_days < 0:
        raise ArchiveError(f"hot_days must be a whole number of days >= 0, not {hot_days!r}")
    if isinstance(today, datetime) or not isinstance(today, date):
        raise TypeError(f"today must be a date, not {type(today).__name__}")
    names = _check_tables(tables)
    src = os.fspath(src)
    manifest = read_manifest(src)
    fs, root = _filesystem(src)
    cutoff = today - timedelta(days=hot_days)
    deleted: Counter = Counter()
    deleted_parts: list[str] = []
    kept: list[ArchiveProblem] = []
    con.execute("BEGIN TRANSACTION")
    try:
        for name in names:
            spec = ARCHIVE_TABLES[name]
            columns = _table_columns(con, name)
            if not columns:
                continue
            for part, n_db in _db_partitions(con, spec, None, cutoff - timedelta(days=1)):
                reason = _verify_db_partition(con, fs, root, manifest, part, n_db, columns)
                if reason is not None:
                    kept.append(ArchiveProblem(part.path, reason))
                    continue
                where, params = _where(part)
                n = con.execute(f"DELETE FROM {_q(name)} WHERE {where}", params).fetchall()[0][0]
                if n != n_db:
                    raise ArchiveError(
                        f"retention stopped: deleting {part.path} removed {n} rows where "
                        f"{n_db} were verified; nothing was deleted. Run it again."
                    )
                deleted[name] += n
                deleted_parts.append(part.path)
        con.execute("COMMIT")
    except BaseException:
        _rollback(con)
        raise
    return RetentionResult(
        cutoff=cutoff,
        deleted=dict(deleted),
        deleted_partitions=tuple(deleted_parts),
        kept=tuple(kept),
    )


def _verify_db_partition(con, fs, root, manifest: Manifest, part, n_db, columns) -> str | None:
    """Why the database's rows of ``part`` are not safely archived, or None if they are."""
    entry = manifest.entries.get(part.path)
    if entry is None:
        return "not in the archive; export it first"
    if entry.rows != n_db:
        return (
            f"the archive holds {entry.rows} rows, the database {n_db}; export that day again "
            "(or restore it, if the archive holds more)"
        )
    try:
        data = fs.cat_file(f"{root}/{part.path}")
    except FileNotFoundError:
        return "file missing from the archive; export that day again"
    except OSError as e:
        return f"archive file cannot be read: {_describe(e)}"
    message = _check_file(fs, root, entry, data)
    if message is not None:
        return f"archive file failed verification ({message}); export that day again"
    table = _parquet_table(data)
    if sorted(table.column_names) != sorted(columns):
        return "archive file's columns differ from the table's; export that day again"
    con.register(_VIEW, table)
    try:
        cols = ", ".join(_q(c) for c in columns)
        where, params = _where(part)
        differ = con.execute(
            f"SELECT count(*) FROM (SELECT {cols} FROM {_q(part.table)} WHERE {where} "
            f"EXCEPT ALL SELECT {cols} FROM {_VIEW})",
            params,
        ).fetchall()[0][0]
    finally:
        _unregister(con)
    if differ:
        return f"{differ} database rows are not in the archived file; export that day again"
    return None


# ============================================================================ helpers


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _where(part: Partition) -> tuple[str, list]:
    spec = part.spec
    lo, hi = part.bounds()
    return (
        f"{_q(spec.time_column)} >= $1 AND {_q(spec.time_column)} < $2 "
        f"AND {_q(spec.key_column)} = $3",
        [lo, hi, part.value],
    )


def _rollback(con) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass
    _unregister(con)


def _unregister(con) -> None:
    """Drop the registered partition view. In an aborted transaction this fails (until the
    rollback) and must not hide the error that aborted it."""
    try:
        con.unregister(_VIEW)
    except duckdb.Error:
        pass


def _table_columns(con, table: str) -> list[str]:
    """The table's columns in order; [] if the database has no such table."""
    return [
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = $1 AND table_schema = current_schema() "
            "AND table_catalog = current_database() ORDER BY ordinal_position",
            [table],
        ).fetchall()
    ]


def _db_partitions(con, spec: ArchiveTable, start: date | None, end: date | None):
    """(partition, rows) of the database's rows of ``spec`` in UTC days start..end."""
    tc = _q(spec.time_column)
    where, params = [], []
    if start is not None:
        where.append(f"{tc} >= ${len(params) + 1}")
        params.append(datetime(start.year, start.month, start.day, tzinfo=timezone.utc))
    if end is not None:
        where.append(f"{tc} < ${len(params) + 1}")
        after = end + timedelta(days=1)
        params.append(datetime(after.year, after.month, after.day, tzinfo=timezone.utc))
    sql = (
        f"SELECT CAST(timezone('UTC', {tc}) AS DATE) AS day, {_q(spec.key_column)} AS value, "
        f"count(*) FROM {_q(spec.name)}"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " GROUP BY ALL ORDER BY ALL"
    )
    rows = con.execute(sql, params).fetchall()
    return [(Partition(spec.name, day, value), n) for day, value, n in rows]


def _check_tables(tables: Iterable[str] | None) -> list[str]:
    if tables is None:
        return list(ARCHIVE_TABLES)
    if isinstance(tables, str):
        tables = [tables]
    names = list(dict.fromkeys(tables))
    unknown = [t for t in names if t not in ARCHIVE_TABLES]
    if unknown:
        raise ArchiveError(f"not archived tables: {unknown}; choose from {sorted(ARCHIVE_TABLES)}")
    return [t for t in ARCHIVE_TABLES if t in names]


def _check_range(start: date | None, end: date | None) -> None:
    for name, d in (("start", start), ("end", end)):
        if d is not None and (isinstance(d, datetime) or not isinstance(d, date)):
            raise TypeError(f"{name} must be a date (a UTC day), not {type(d).__name__}")
    if start is not None and end is not None and start > end:
        raise ArchiveError(
            f"start {start} is after end {end}: the range is inclusive, start <= end"
        )


def _stamp(exported_at: datetime | float) -> str:
    if isinstance(exported_at, datetime):
        if exported_at.tzinfo is None or exported_at.utcoffset() is None:
            raise ValueError("exported_at must be timezone-aware (UTC)")
        return exported_at.astimezone(timezone.utc).isoformat()
    if isinstance(exported_at, (int, float)) and not isinstance(exported_at, bool):
        return datetime.fromtimestamp(float(exported_at), timezone.utc).isoformat()
    raise TypeError(f"exported_at must be an aware datetime or epoch seconds, not {exported_at!r}")


def _filesystem(url: str):
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ValueError, ImportError) as e:
        raise ArchiveError(f"cannot use archive location {url!r}: {e}") from e
    return fs, root.rstrip("/")


_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def _read_manifest(fs, root: str, where: str, *, missing_ok: bool) -> Manifest:
    path = f"{root}/{MANIFEST_NAME}"
    try:
        raw = fs.cat_file(path)
    except FileNotFoundError:
        if missing_ok:
            return Manifest()
        raise ArchiveError(
            f"no {MANIFEST_NAME} at {where}: not a hedgeflow archive, or nothing was exported "
            "there yet. Check the location, or export first."
        ) from None

    def damaged(what: str) -> ArchiveError:
        return ArchiveError(
            f"{where}/{MANIFEST_NAME} is damaged ({what}). Put back a good copy of it, or move "
            "it aside and export again from a database that holds the data."
        )

    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise damaged(f"not JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise damaged(f"format is not {MANIFEST_FORMAT!r}")
    if doc.get("version") != MANIFEST_VERSION:
        raise damaged(f"version {doc.get('version')!r}, this hedgeflow reads {MANIFEST_VERSION}")
    parts = doc.get("partitions")
    if not isinstance(parts, dict):
        raise damaged("no partitions object")
    entries = {}
    for path, e in parts.items():
        try:
            table, value = e["table"], e["value"]
            if table not in ARCHIVE_TABLES or not isinstance(value, str):
                raise ValueError(f"unknown table {table!r}")
            part = Partition(table, date.fromisoformat(e["date"]), value)
            rows, size, sha, stamp = e["rows"], e["bytes"], e["sha256"], e["exported_at"]
            counts = (rows, size)
            if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in counts):
                raise ValueError("rows and bytes must be counts")
            if not isinstance(sha, str) or not _SHA_RE.match(sha) or not isinstance(stamp, str):
                raise ValueError("bad sha256 or exported_at")
            if e.get("key") != part.spec.key_column or part.path != path:
                raise ValueError(f"path does not match its table, date and {part.spec.key_column}")
        except (KeyError, TypeError, ValueError) as err:
            raise damaged(f"entry {path!r}: {err}") from err
        entries[path] = PartitionEntry(part, rows, size, sha, stamp)
    stamp = doc.get("exported_at")
    return Manifest(exported_at=stamp if isinstance(stamp, str) else None, entries=entries)


def _describe(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    if isinstance(e, PermissionError) or e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if e.errno == errno.EROFS:
        return "read-only file system"
    return str(e) or type(e).__name__


def _io_error(e: OSError, where: str, doing: str, *, writing: bool) -> ArchiveError:
    what = _describe(e)
    if not writing:
        return ArchiveError(f"archive {where}: failed {doing}: {what} ({e}).")
    if e.errno == errno.ENOSPC:
        fix = "Free some space there (or export to another location) and run the export again."
    elif isinstance(e, PermissionError) or e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = (
            f"Make {where} writable for this user (or export to another location) and run "
            "the export again."
        )
    else:
        fix = "Fix the cause and run the export again."
    return ArchiveError(
        f"export to {where} failed while {doing}: {what} ({e}). Nothing was changed: the "
        f"archive's files and manifest are as they were. {fix}"
    )
