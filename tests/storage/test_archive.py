"""Tests of storage.archive: Parquet export, verify, restore and retention of the hot tables.

The database is built by replaying the recorded exchange traffic (../shared/data/recorded), plus
a few rows for the tables the recording leaves empty. Failure injection uses a real fsspec
filesystem registered under a test protocol, whose writes fail with ENOSPC after a byte budget
or with EACCES: it works as root, where a read-only directory does not stop writes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFile, MemoryFileSystem

from dataflows.config import HedgeflowError
from dataflows.replay import replay_to_db
from storage import archive
from storage.archive import (
    ARCHIVE_TABLES,
    MANIFEST_NAME,
    ArchiveError,
    apply_retention,
    export_archive,
    read_manifest,
    restore_archive,
    verified_days,
    verify_archive,
)
from storage.schema import TABLES, create_schema
from tests.conftest import RECORDED_DIR

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
T1 = datetime(2026, 1, 3, 3, 4, 5, tzinfo=timezone.utc)
# Every table but book_updates (whose Kraken snapshot levels span ~340 days): quick to export.
SMALL = [t for t in ARCHIVE_TABLES if t != "book_updates"]
PATH_RE = re.compile(
    r"^table=(?P<table>[a-z_]+)/date=(?P<date>\d{4}-\d{2}-\d{2})"
    r"/(?P<key>exchange|asset)=(?P<value>[^/]+)/part-0\.parquet$"
)


# ------------------------------------------------------------------------------ fixtures


def _add_rows(con: duckdb.DuckDBPyConnection) -> None:
    """Rows for tables the recording leaves empty, and on the edges of a UTC day."""
    con.execute(
        "INSERT INTO quarantine (exchange, receive_ts, reason, raw) VALUES "
        "('kraken', TIMESTAMPTZ '2021-04-17 23:59:59.999999+00', 'bid >= ask', '{\"a\":1}'), "
        "('kraken', TIMESTAMPTZ '2021-04-18 00:00:00+00', 'bad json', '{'), "
        "('we/ird=x', TIMESTAMPTZ '2021-04-18 00:00:00.5+00', 'unknown venue', 'x')"
    )
    con.execute(
        "INSERT INTO index_prices (exchange, index_name, asset, event_ts, receive_ts, price_usd) "
        "VALUES ('deribit', 'btc_usd', 'BTC', TIMESTAMPTZ '2025-12-12 08:00:00+00', "
        "TIMESTAMPTZ '2025-12-12 08:00:00.1+00', 90000.5)"
    )
    con.execute(
        "INSERT INTO oracle_prices (asset, ts, price, confidence, n_sources, status, reason, sources) "
        "VALUES ('BTC', TIMESTAMPTZ '2025-12-12 08:00:01+00', NULL, NULL, 0, 'halted', 'no source', [])"
    )


@pytest.fixture(scope="module")
def source_db(tmp_path_factory) -> Path:
    if not RECORDED_DIR.is_dir():
        pytest.fail(f"recorded traffic not found at {RECORDED_DIR}")
    path = tmp_path_factory.mktemp("archive_src") / "replayed.duckdb"
    replay_to_db([RECORDED_DIR], path)
    con = duckdb.connect(str(path))
    _add_rows(con)
    con.execute("CHECKPOINT")
    con.close()
    return path


@pytest.fixture
def con(source_db, tmp_path):
    """A connection to a fresh copy of the replayed database."""
    path = tmp_path / "hot.duckdb"
    shutil.copy(source_db, path)
    c = duckdb.connect(str(path))
    yield c
    c.close()


@pytest.fixture(scope="module")
def full_archive(source_db, tmp_path_factory) -> Path:
    """Every table exported once (read it; copy it to change it)."""
    out = tmp_path_factory.mktemp("archive_full") / "archive"
    c = duckdb.connect(str(source_db), read_only=True)
    export_archive(c, out, exported_at=T0)
    c.close()
    return out


def _empty_db(tmp_path, name="restored.duckdb"):
    c = duckdb.connect(str(tmp_path / name))
    create_schema(c)
    return c


def _count(c, table, where="TRUE"):
    return c.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchall()[0][0]


def _on_day(column: str, day: date) -> str:
    """SQL: ``column`` falls on the UTC ``day`` (test-only literals)."""
    nxt = day + timedelta(days=1)
    return (
        f"{column} >= TIMESTAMPTZ '{day} 00:00:00+00' AND {column} < TIMESTAMPTZ '{nxt} 00:00:00+00'"
    )


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _assert_same_rows(a, b, table, cols=None):
    """Multiset equality of ``table`` between two connections (EXCEPT ALL both ways)."""
    cols = cols or [r[0] for r in a.execute(f"DESCRIBE {table}").fetchall()]
    sel = ", ".join(f'"{c}"' for c in cols)
    rows_a = a.sql(f"SELECT {sel} FROM {table}").to_arrow_table()
    b.register("_other", rows_a)
    try:
        extra = _count(b, f"(SELECT {sel} FROM {table} EXCEPT ALL SELECT {sel} FROM _other)")
        missing = _count(b, f"(SELECT {sel} FROM _other EXCEPT ALL SELECT {sel} FROM {table})")
        n_b = _count(b, table)
    finally:
        b.unregister("_other")
    assert (extra, missing, n_b) == (0, 0, rows_a.num_rows), table


# ------------------------------------------------------------------------------ fault injection


class FaultyMemoryFS(MemoryFileSystem):
    """A memory filesystem whose writes fail like a real disk: ENOSPC once ``budget`` bytes have
    been written (the bytes that fit are kept, as a real partial write), or EACCES on every open
    for writing. Renames (copy within the store) cost no space, as on a real filesystem."""

    protocol = "faultymem"
    store: dict = {}
    pseudo_dirs: list = [""]
    budget: int | None = None
    deny_writes = False
    writes: list = []

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, str):
            path = path.removeprefix("faultymem://")
        return super()._strip_protocol(path)

    def _open(self, path, mode="rb", **kwargs):
        if any(m in mode for m in "wax"):
            path = self._strip_protocol(path)
            if type(self).deny_writes:
                raise PermissionError(errno.EACCES, "Permission denied", path)
            f = _BudgetFile(self, path)
            f.commit()  # visible at once, like a file being written on disk
            return f
        return super()._open(path, mode, **kwargs)

    @classmethod
    def reset(cls):
        cls.store.clear()
        cls.pseudo_dirs[:] = [""]
        cls.budget = None
        cls.deny_writes = False
        cls.writes.clear()

    @classmethod
    def snapshot(cls):
        return {p: f.getvalue() for p, f in cls.store.items()}, sorted(cls.pseudo_dirs)


class _BudgetFile(MemoryFile):
    def write(self, data):
        fs = type(self.fs)
        data = bytes(data)
        if fs.budget is not None and len(data) > fs.budget:
            super().write(data[: fs.budget])
            fs.budget = 0
            raise OSError(errno.ENOSPC, "No space left on device", self.path)
        if fs.budget is not None:
            fs.budget -= len(data)
        fs.writes.append((self.path, len(data)))
        return super().write(data)


@pytest.fixture
def faulty():
    fsspec.register_implementation("faultymem", FaultyMemoryFS, clobber=True)
    FaultyMemoryFS.reset()
    yield FaultyMemoryFS
    FaultyMemoryFS.reset()


# ------------------------------------------------------------------------------ tables


def test_archive_tables_cover_the_schema(con):
    # the hot tick tables (the schema may hold more, e.g. counters, that are not archived)
    assert set(ARCHIVE_TABLES) <= set(TABLES)
    assert set(ARCHIVE_TABLES) == {
        "trades", "quotes", "option_tickers", "book_updates", "funding", "index_prices",
        "oracle_prices", "quarantine", "gaps", "volatility", "surface_fits", "premium_quotes",
        "policy_risk",
    }
    for name, spec in ARCHIVE_TABLES.items():
        cols = {r[0]: r[1] for r in con.execute(f"DESCRIBE {name}").fetchall()}
        assert cols[spec.time_column] == "TIMESTAMP WITH TIME ZONE", name
        assert spec.key_column in cols
        assert spec.has_exchange == ("exchange" in cols), name
    for name in ("oracle_prices", "volatility", "surface_fits", "premium_quotes", "policy_risk"):
        assert ARCHIVE_TABLES[name].key_column == "asset"
    assert ARCHIVE_TABLES["quarantine"].time_column == "receive_ts"
    assert ARCHIVE_TABLES["gaps"].time_column == "start_ts"
    assert issubclass(ArchiveError, HedgeflowError)


# ------------------------------------------------------------------------------ export


def test_export_layout_zstd_and_manifest(source_db, full_archive):
    src = duckdb.connect(str(source_db), read_only=True)
    files = _files(full_archive)
    manifest = json.loads(files.pop(MANIFEST_NAME))
    assert manifest["format"] == "hedgeflow-archive" and manifest["version"] == 1
    assert manifest["exported_at"] == T0.isoformat()
    assert not [p for p in files if ".tmp" in p]
    assert set(files) == set(manifest["partitions"])

    expected = {}
    for name, spec in ARCHIVE_TABLES.items():
        for day, value, n in src.execute(
            f"SELECT CAST(timezone('UTC', {spec.time_column}) AS DATE), {spec.key_column}, count(*) "
            f"FROM {name} GROUP BY ALL"
        ).fetchall():
            expected[(name, day.isoformat(), value)] = n
    assert len(expected) > 300  # several tables, exchanges and days

    seen = {}
    for path, data in files.items():
        m = PATH_RE.match(path)
        assert m, path
        entry = manifest["partitions"][path]
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["exported_at"] == T0.isoformat()
        assert (entry["table"], entry["date"]) == (m["table"], m["date"])
        assert m["key"] == ARCHIVE_TABLES[m["table"]].key_column == entry["key"]
        pf = pq.ParquetFile(pa.BufferReader(data))
        assert pf.metadata.num_rows == entry["rows"]
        codecs = {
            pf.metadata.row_group(i).column(j).compression
            for i in range(pf.metadata.num_row_groups)
            for j in range(pf.metadata.num_columns)
        }
        assert codecs == {"ZSTD"}
        table = pf.read()
        spec = ARCHIVE_TABLES[m["table"]]
        for f in table.schema:
            if pa.types.is_timestamp(f.type):
                assert f.type == pa.timestamp("us", tz="UTC"), (path, f)
        # every row belongs to the partition, sorted by time
        assert set(table[spec.key_column].to_pylist()) == {entry["value"]}
        times = table[spec.time_column].to_pylist()
        assert times == sorted(times)
        assert {t.date().isoformat() for t in times} == {m["date"]}
        seen[(m["table"], m["date"], entry["value"])] = entry["rows"]
    assert seen == expected

    # the day edges and the escaped key value
    assert "table=quarantine/date=2021-04-17/exchange=kraken/part-0.parquet" in files
    assert "table=quarantine/date=2021-04-18/exchange=kraken/part-0.parquet" in files
    assert "table=quarantine/date=2021-04-18/exchange=we%2Fird%3Dx/part-0.parquet" in files
    assert "table=oracle_prices/date=2025-12-12/asset=BTC/part-0.parquet" in files
    # a Hive-aware reader sees the layout
    n = src.execute(
        "SELECT count(*) FROM read_parquet($1, hive_partitioning = false)",
        [str(full_archive / "table=trades" / "*" / "*" / "part-0.parquet")],
    ).fetchall()[0][0]
    assert n == src.execute("SELECT count(*) FROM trades").fetchall()[0][0]
    src.close()


def test_second_export_rewrites_nothing(con, full_archive, tmp_path):
    out = tmp_path / "archive"
    shutil.copytree(full_archive, out)
    before = _files(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    result = export_archive(con, out, exported_at=T1)
    assert result.written == () and result.bytes_written == 0 and result.refused == ()
    assert len(result.unchanged) == len(before) - 1
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == mtimes
    after = _files(out)
    assert {k: v for k, v in after.items() if k != MANIFEST_NAME} == {
        k: v for k, v in before.items() if k != MANIFEST_NAME
    }
    m = read_manifest(out)
    assert m.exported_at == T1.isoformat()
    assert {e.exported_at for e in m.entries.values()} == {T0.isoformat()}  # files not rewritten
    assert result.summary()["written"] == 0 and result.summary()["unchanged"] == len(before) - 1


def test_same_rows_give_identical_bytes_whatever_the_session_zone(con, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    export_archive(con, a, tables=SMALL, exported_at=T0)
    con.execute("SET TimeZone = 'Asia/Tokyo'")  # +09:00: UTC dates must not move
    export_archive(con, b, tables=SMALL, exported_at=T0)
    assert _files(a) == _files(b)
    # streamed through the temporary file instead of memory: the same bytes
    c = tmp_path / "c"
    orig = archive.SPOOL_BYTES
    archive.SPOOL_BYTES = 256
    try:
        export_archive(con, c, tables=SMALL, exported_at=T0)
        again = export_archive(con, c, tables=SMALL, exported_at=T1)
    finally:
        archive.SPOOL_BYTES = orig
    assert again.written == ()
    assert {k: v for k, v in _files(c).items() if k != MANIFEST_NAME} == {
        k: v for k, v in _files(a).items() if k != MANIFEST_NAME
    }
    assert not [p for p in _files(c) if ".tmp" in p]


def test_changed_partition_is_rewritten_alone(con, tmp_path):
    out = tmp_path / "archive"
    first = export_archive(con, out, tables=SMALL, exported_at=T0)
    con.execute(
        "INSERT INTO quarantine (exchange, receive_ts, reason, raw) VALUES "
        "('kraken', TIMESTAMPTZ '2021-04-18 12:00:00+00', 'late', 'y')"
    )
    second = export_archive(con, out, tables=SMALL, exported_at=T1)
    path = "table=quarantine/date=2021-04-18/exchange=kraken/part-0.parquet"
    assert second.written == (path,)
    assert len(second.unchanged) == len(first.written) - 1
    entry = read_manifest(out).entries[path]
    assert (entry.rows, entry.exported_at) == (2, T1.isoformat())
    assert verify_archive(out) == []


def test_date_range_and_table_selection(con, tmp_path):
    out = tmp_path / "archive"
    r = export_archive(con, out, start=date(2021, 4, 17), end=date(2021, 4, 17), exported_at=T0)
    days = {PATH_RE.match(p)["date"] for p in r.written}
    assert days == {"2021-04-17"}
    assert {PATH_RE.match(p)["table"] for p in r.written} == {
        "trades", "quotes", "book_updates", "oracle_prices", "quarantine", "gaps"
    }
    assert r.rows["trades"] == _count(con, "trades", _on_day("event_ts", date(2021, 4, 17)))
    # a later range adds partitions and keeps the earlier ones
    r2 = export_archive(
        con, out, start=date(2021, 4, 18), end=date(2021, 10, 12),
        tables=["quarantine", "trades"], exported_at=T1,
    )
    assert {(PATH_RE.match(p)["table"], PATH_RE.match(p)["date"]) for p in r2.written} == {
        ("quarantine", "2021-04-18"), ("trades", "2021-10-12")
    }
    entries = read_manifest(out).entries
    assert set(r.written) | set(r2.written) == set(entries)
    assert verify_archive(out) == []
    assert verify_archive(out, tables=["trades"], start=date(2021, 10, 12)) == []
    with pytest.raises(ArchiveError, match="start"):
        export_archive(con, out, start=date(2021, 4, 18), end=date(2021, 4, 17), exported_at=T0)
    with pytest.raises(ArchiveError, match="not archived tables"):
        export_archive(con, out, tables=["trades; DROP TABLE trades"], exported_at=T0)
    with pytest.raises(TypeError):
        export_archive(con, out, start=T0, exported_at=T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        export_archive(con, out, exported_at=datetime(2026, 1, 1))


def test_export_never_shrinks_an_archived_partition(con, tmp_path):
    out = tmp_path / "archive"
    export_archive(con, out, tables=["trades"], exported_at=T0)
    path = "table=trades/date=2021-04-17/exchange=coinbase/part-0.parquet"
    before = (out / path).read_bytes()
    n = _count(con, "trades", "exchange = 'coinbase'")
    assert n > 5
    con.execute(
        "DELETE FROM trades WHERE exchange = 'coinbase' AND trade_id IN "
        "(SELECT trade_id FROM trades WHERE exchange = 'coinbase' ORDER BY trade_id LIMIT 5)"
    )
    r = export_archive(con, out, tables=["trades"], exported_at=T1)
    assert [p.path for p in r.refused] == [path]
    assert f"{n} rows" in r.refused[0].message and f"only {n - 5}" in r.refused[0].message
    assert (out / path).read_bytes() == before
    assert read_manifest(out).entries[path].rows == n
    # restore merges the missing rows back; then the export has nothing to refuse
    restore_archive(out, con, tables=["trades"])
    assert export_archive(con, out, tables=["trades"], exported_at=T1).refused == ()


# ------------------------------------------------------------------------------ restore


def test_restore_round_trip_equals_the_original(source_db, full_archive, tmp_path):
    original = duckdb.connect(str(source_db), read_only=True)
    target = duckdb.connect(str(tmp_path / "new.duckdb"))  # no schema: restore creates it
    assert verify_archive(full_archive) == []
    result = restore_archive(full_archive, target)
    assert result.already_present == 0
    for name in ARCHIVE_TABLES:
        _assert_same_rows(original, target, name)
        n = original.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0]
        assert result.inserted.get(name, 0) == n
    # restoring again merges: nothing is duplicated
    again = restore_archive(full_archive, target, tables=SMALL)
    assert sum(again.inserted.values()) == 0 and again.already_present > 0
    for name in SMALL:
        _assert_same_rows(original, target, name)
    original.close()
    target.close()


def test_restore_merges_into_partly_filled_database(con, tmp_path):
    out = tmp_path / "archive"
    export_archive(con, out, tables=SMALL, exported_at=T0)
    target = _empty_db(tmp_path)
    # the target holds part of one partition and a row the archive does not have
    con_rows = con.sql(
        "SELECT * FROM quotes WHERE exchange = 'binance' ORDER BY event_ts LIMIT 30"
    ).to_arrow_table()
    target.register("_part", con_rows)
    target.execute("INSERT INTO quotes BY NAME SELECT * FROM _part")
    target.unregister("_part")
    target.execute(
        "INSERT INTO quotes (exchange, instrument, asset, quote_ccy, event_ts, receive_ts, bid, ask) "
        "VALUES ('binance', 'NEWUSDT', 'NEW', 'USDT', TIMESTAMPTZ '2021-10-12 01:00:00+00', "
        "TIMESTAMPTZ '2021-10-12 01:00:00+00', 1.0, 2.0)"
    )
    r = restore_archive(out, target, tables=["quotes"])
    n = _count(con, "quotes")
    assert r.already_present == 30
    assert r.inserted["quotes"] == n - 30
    assert _count(target, "quotes") == n + 1
    target.execute("DELETE FROM quotes WHERE instrument = 'NEWUSDT'")
    _assert_same_rows(con, target, "quotes")


def test_restore_is_one_transaction(con, tmp_path):
    out = tmp_path / "archive"
    export_archive(con, out, tables=["quotes", "trades"], exported_at=T0)
    target = duckdb.connect(str(tmp_path / "t.duckdb"))
    # a trades table that refuses a second row with the same trade key
    described = con.execute("DESCRIBE trades").fetchall()
    cols = ", ".join(f'"{name}" {kind}' for name, kind, *_ in described)
    target.execute(f"CREATE TABLE trades ({cols}, UNIQUE (exchange, instrument, trade_id))")
    create_schema(target)
    clash = con.sql("SELECT * FROM trades WHERE exchange = 'binance' LIMIT 1").to_arrow_table()
    target.register("_clash", clash)
    target.execute("INSERT INTO trades BY NAME SELECT * REPLACE (price + 1 AS price) FROM _clash")
    target.unregister("_clash")
    with pytest.raises(ArchiveError, match="conflict with rows already in table trades"):
        restore_archive(out, target)
    # quotes (loaded before trades) were rolled back too
    assert _count(target, "quotes") == 0 and _count(target, "trades") == 1
    target.close()


def _tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_restore_refuses_a_tampered_partition(con, tmp_path):
    out = tmp_path / "archive"
    export_archive(con, out, tables=SMALL, exported_at=T0)
    bad = "table=quotes/date=2021-10-12/exchange=binance/part-0.parquet"
    _tamper(out / bad)
    problems = verify_archive(out)
    assert [p.path for p in problems] == [bad]
    assert "checksum mismatch" in problems[0].message
    target = duckdb.connect(str(tmp_path / "t.duckdb"))
    with pytest.raises(ArchiveError) as exc:
        restore_archive(out, target)
    msg = str(exc.value)
    assert bad in msg and "checksum mismatch" in msg and "re-export" in msg
    # nothing was loaded: not even the schema
    assert target.execute("SELECT count(*) FROM information_schema.tables").fetchall()[0][0] == 0
    # other tables can still be restored
    restore_archive(out, target, tables=["trades"])
    _assert_same_rows(con, target, "trades")


def test_restore_refuses_missing_partition_and_bad_row_count(con, tmp_path):
    out = tmp_path / "archive"
    export_archive(con, out, tables=SMALL, exported_at=T0)
    gone = "table=trades/date=2021-10-12/exchange=binance/part-0.parquet"
    (out / gone).unlink()
    target = _empty_db(tmp_path)
    with pytest.raises(ArchiveError, match=re.escape(gone) + ": file missing"):
        restore_archive(out, target)
    assert target.execute("SELECT count(*) FROM trades").fetchall()[0][0] == 0

    export_archive(con, out, tables=SMALL, exported_at=T1)  # puts it back
    assert verify_archive(out) == []
    doc = json.loads((out / MANIFEST_NAME).read_text())
    lied = "table=funding/date=2025-12-12/exchange=deribit/part-0.parquet"
    n = doc["partitions"][lied]["rows"]
    doc["partitions"][lied]["rows"] = n + 1
    (out / MANIFEST_NAME).write_text(json.dumps(doc))
    expected = f"{re.escape(lied)}: row count is {n}, the manifest says {n + 1}"
    with pytest.raises(ArchiveError, match=expected):
        restore_archive(out, target)
    assert target.execute("SELECT count(*) FROM funding").fetchall()[0][0] == 0


def test_damaged_or_missing_manifest(con, tmp_path):
    out = tmp_path / "archive"
    with pytest.raises(ArchiveError, match="no manifest.json"):
        restore_archive(out, _empty_db(tmp_path))
    assert [p.path for p in verify_archive(out)] == [MANIFEST_NAME]
    export_archive(con, out, tables=["funding"], exported_at=T0)
    doc = json.loads((out / MANIFEST_NAME).read_text())
    (path, entry), = doc["partitions"].items()
    doc["partitions"] = {"../../etc/passwd": entry}
    (out / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(ArchiveError, match="damaged"):
        restore_archive(out, _empty_db(tmp_path, "x.duckdb"))
    (out / MANIFEST_NAME).write_text("{not json")
    before = _files(out)
    with pytest.raises(ArchiveError, match="damaged"):  # export does not overwrite it blindly
        export_archive(con, out, tables=["funding"], exported_at=T1)
    assert _files(out) == before


# ------------------------------------------------------------------------------ fsspec


def test_memory_url_round_trip(con, tmp_path):
    url = "memory://hedgeflow-test-archive"
    fs = fsspec.filesystem("memory")
    if fs.exists("/hedgeflow-test-archive"):
        fs.rm("/hedgeflow-test-archive", recursive=True)
    try:
        r = export_archive(con, url, tables=SMALL, exported_at=T0)
        assert r.written and fs.isfile(f"/hedgeflow-test-archive/{MANIFEST_NAME}")
        assert export_archive(con, url, tables=SMALL, exported_at=T1).written == ()
        assert verify_archive(url) == []
        target = _empty_db(tmp_path)
        restore_archive(url, target)
        for name in SMALL:
            _assert_same_rows(con, target, name)
        # the same bytes as on a local path
        local = tmp_path / "local"
        export_archive(con, f"file://{local}", tables=SMALL, exported_at=T0)
        for path, data in _files(local).items():
            assert fs.cat_file(f"/hedgeflow-test-archive/{path}") == data or path == MANIFEST_NAME
    finally:
        if fs.exists("/hedgeflow-test-archive"):
            fs.rm("/hedgeflow-test-archive", recursive=True)


# ------------------------------------------------------------------------------ failures


def test_no_space_mid_export_leaves_the_archive_as_it_was(con, faulty):
    url = "faultymem://arch"
    export_archive(con, url, tables=SMALL, exported_at=T0)
    good = faulty.snapshot()
    # changes: one existing partition grows, one new partition appears
    con.execute(
        "INSERT INTO quarantine (exchange, receive_ts, reason, raw) VALUES "
        "('kraken', TIMESTAMPTZ '2021-04-18 12:00:00+00', 'late', 'y'), "
        "('binance', TIMESTAMPTZ '2021-10-12 12:00:00+00', 'new', 'z')"
    )
    # learn what a successful export writes, then put the store back
    faulty.writes.clear()
    export_archive(con, url, tables=SMALL, exported_at=T1)
    sizes = [n for _, n in faulty.writes]
    assert len(sizes) == 3  # two partitions, then the manifest
    faulty.store.clear()
    faulty.store.update({p: MemoryFile(None, p, d) for p, d in good[0].items()})
    faulty.pseudo_dirs[:] = good[1]
    assert faulty.snapshot() == good

    # fail in the first partition, the second, and the manifest
    for budget in (0, sizes[0] + sizes[1] // 2, sizes[0] + sizes[1] + sizes[2] // 2):
        faulty.budget = budget
        with pytest.raises(ArchiveError) as exc:
            export_archive(con, url, tables=SMALL, exported_at=T1)
        msg = str(exc.value)
        assert "no space left" in msg and "as they were" in msg and "Free some space" in msg
        assert isinstance(exc.value.__cause__, OSError)
        assert faulty.snapshot() == good, budget  # no partial file, no new dir, old manifest
        assert verify_archive(url) == []
    faulty.budget = None
    r = export_archive(con, url, tables=SMALL, exported_at=T1)
    assert len(r.written) == 2 and verify_archive(url) == []


def test_no_space_while_streaming_a_big_partition(con, faulty, monkeypatch):
    monkeypatch.setattr(archive, "SPOOL_BYTES", 128)  # every partition streams to its temp file
    n_trades = _count(con, "trades")
    faulty.budget = 5000
    with pytest.raises(ArchiveError, match="no space left"):
        export_archive(con, "faultymem://arch", tables=SMALL, exported_at=T0)
    assert faulty.snapshot() == ({}, [""])
    # a failure while the database is still handing over rows: the caller's connection (the
    # writer's, in the graph) stays usable
    monkeypatch.setattr(archive, "ROW_GROUP_ROWS", 1000)
    monkeypatch.setattr(archive, "ARROW_BATCH_ROWS", 1000)
    faulty.budget = 20_000
    with pytest.raises(ArchiveError, match="no space left"):
        export_archive(con, "faultymem://arch", start=date(2021, 4, 17), end=date(2021, 4, 17),
                       tables=["book_updates"], exported_at=T0)
    assert faulty.snapshot() == ({}, [""])
    assert _count(con, "trades") == n_trades


def test_row_groups_do_not_depend_on_batches_or_zone(con, tmp_path, monkeypatch):
    monkeypatch.setattr(archive, "ROW_GROUP_ROWS", 3000)
    outs = []
    for batch_rows, zone in ((65_536, "UTC"), (1024, "America/New_York"), (2999, "Asia/Tokyo")):
        monkeypatch.setattr(archive, "ARROW_BATCH_ROWS", batch_rows)
        con.execute(f"SET TimeZone = '{zone}'")
        out = tmp_path / f"a{batch_rows}"
        export_archive(con, out, start=date(2021, 4, 17), end=date(2021, 4, 17),
                       tables=["book_updates"], exported_at=T0)
        outs.append(_files(out))
    assert outs[0] == outs[1] == outs[2]
    data = outs[0]["table=book_updates/date=2021-04-17/exchange=coinbase/part-0.parquet"]
    meta = pq.ParquetFile(pa.BufferReader(data)).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    day = _on_day("event_ts", date(2021, 4, 17))
    n = _count(con, "book_updates", f"exchange = 'coinbase' AND {day}")
    assert n > 9000
    assert sizes == [3000] * (n // 3000) + ([n % 3000] if n % 3000 else [])
    target = _empty_db(tmp_path)
    restore_archive(tmp_path / "a1024", target)
    day = _on_day("event_ts", date(2021, 4, 17))
    assert _count(target, "book_updates") == _count(con, "book_updates", day)


def test_permission_denied_surfaces_as_archive_error(con, faulty):
    url = "faultymem://arch"
    export_archive(con, url, tables=["trades"], exported_at=T0)
    good = faulty.snapshot()
    con.execute(
        "INSERT INTO trades (exchange, instrument, asset, quote_ccy, event_ts, receive_ts, "
        "trade_id, price, size_coin, side) VALUES ('binance', 'NKNUSDT', 'NKN', 'USDT', "
        "TIMESTAMPTZ '2021-10-12 12:00:00+00', TIMESTAMPTZ '2021-10-12 12:00:00+00', 'x1', 1, 1, 'buy')"
    )
    faulty.deny_writes = True
    with pytest.raises(ArchiveError, match="permission denied.*writable"):
        export_archive(con, url, tables=["trades"], exported_at=T1)
    assert faulty.snapshot() == good


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root writes into read-only directories; covered by the EACCES filesystem test",
)
def test_read_only_directory(con, tmp_path):
    out = tmp_path / "archive"
    export_archive(con, out, tables=["trades"], exported_at=T0)
    before = _files(out)
    con.execute(
        "INSERT INTO trades (exchange, instrument, asset, quote_ccy, event_ts, receive_ts, "
        "trade_id, price, size_coin, side) VALUES ('binance', 'NKNUSDT', 'NKN', 'USDT', "
        "TIMESTAMPTZ '2021-10-12 12:00:00+00', TIMESTAMPTZ '2021-10-12 12:00:00+00', 'x1', 1, 1, 'buy')"
    )
    dirs = [out, *[p for p in out.rglob("*") if p.is_dir()]]
    for d in dirs:
        d.chmod(0o555)
    try:
        with pytest.raises(ArchiveError, match="permission denied"):
            export_archive(con, out, tables=["trades"], exported_at=T1)
    finally:
        for d in dirs:
            d.chmod(0o755)
    assert _files(out) == before


# ------------------------------------------------------------------------------ retention




def test_retention_deletes_only_verified_old_days(con, tmp_path):
    out = tmp_path / "archive"
    tables = ["trades", "quotes", "quarantine", "oracle_prices"]
    # archive everything before 2021-10-12 except one table's day, and tamper with one file
    export_archive(con, out, end=date(2021, 10, 11), tables=tables, exported_at=T0)
    (out / "table=quotes/date=2021-04-17/exchange=kraken/part-0.parquet").unlink()
    late_day = f"exchange = 'kraken' AND {_on_day('receive_ts', date(2021, 4, 17))}"
    q_before = _count(con, "quarantine", late_day)
    con.execute(  # arrived after the export: that partition's counts no longer match
        "INSERT INTO quarantine (exchange, receive_ts, reason, raw) VALUES "
        "('kraken', TIMESTAMPTZ '2021-04-17 12:00:00+00', 'late', 'y')"
    )
    before = {t: _count(con, t) for t in tables}
    kraken_quotes = _count(con, "quotes", "exchange = 'kraken'")
    hot_trades = _count(con, "trades", "event_ts >= TIMESTAMPTZ '2021-10-13 00:00:00+00'")
    days = verified_days(con, out, tables=tables, end=date(2021, 10, 12))
    assert days["trades"] == [date(2021, 4, 17)]
    assert days["quotes"] == []  # the kraken file is missing
    assert days["quarantine"] == [date(2021, 4, 18)]  # 04-17 has a late row
    assert date(2021, 10, 12) not in days["oracle_prices"]  # not exported

    r = apply_retention(con, out, hot_days=30, today=date(2021, 11, 12))
    assert r.cutoff == date(2021, 10, 13)
    deleted = set(r.deleted_partitions)
    assert "table=trades/date=2021-04-17/exchange=coinbase/part-0.parquet" in deleted
    assert "table=quotes/date=2021-04-17/exchange=coinbase/part-0.parquet" in deleted
    kept = {p.path: p.message for p in r.kept}
    assert "file missing" in kept["table=quotes/date=2021-04-17/exchange=kraken/part-0.parquet"]
    kraken_late = "table=quarantine/date=2021-04-17/exchange=kraken/part-0.parquet"
    assert "export that day again" in kept[kraken_late]
    for unexported in ("trades", "book_updates"):
        path = f"table={unexported}/date=2021-10-12/exchange=binance/part-0.parquet"
        assert "not in the archive" in kept[path]
    # what is left: the unverified partitions, and the hot days
    assert _count(con, "quotes", "exchange = 'kraken'") == kraken_quotes > 0
    assert _count(con, "quarantine", late_day) == q_before + 1
    assert _count(con, "trades", "event_ts < TIMESTAMPTZ '2021-10-01 00:00:00+00'") == 0
    assert _count(con, "trades", "event_ts >= TIMESTAMPTZ '2021-10-13 00:00:00+00'") == hot_trades > 0
    for t in tables:
        assert before[t] - _count(con, t) == r.deleted.get(t, 0)

    # the deleted rows come back from the archive, equal to what they were
    restore_archive(out, con, tables=["trades"])
    assert _count(con, "trades") == before["trades"]


def test_retention_refuses_tampered_files_and_keeps_today(con, tmp_path):
    out = tmp_path / "archive"
    export_archive(con, out, tables=["trades"], exported_at=T0)
    _tamper(out / "table=trades/date=2021-04-17/exchange=kraken/part-0.parquet")
    n = {x: _count(con, "trades", f"exchange = '{x}'") for x in ("coinbase", "kraken", "binance")}
    n_today = _count(con, "trades", _on_day("event_ts", date(2025, 12, 12)))
    assert n_today > 0 and _count(con, "trades") == sum(n.values()) + n_today
    r = apply_retention(con, out, hot_days=0, today=date(2025, 12, 12), tables=["trades"])
    assert [p.path for p in r.kept] == ["table=trades/date=2021-04-17/exchange=kraken/part-0.parquet"]
    assert "checksum mismatch" in r.kept[0].message
    assert r.deleted == {"trades": n["coinbase"] + n["binance"]}
    assert _count(con, "trades") == n["kraken"] + n_today  # tampered and today's rows stay
    with pytest.raises(ArchiveError, match="hot_days"):
        apply_retention(con, out, hot_days=-1, today=date(2025, 12, 12))
    with pytest.raises(ArchiveError, match="no manifest"):
        apply_retention(con, out / "nowhere", hot_days=1, today=date(2025, 12, 12))
