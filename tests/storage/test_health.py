"""storage.health on real DuckDB files: database size, gap summaries, the archive folder."""

from __future__ import annotations

import datetime as dt
import math

import duckdb
import pytest

from storage.health import archive_size, database_size, gaps_summary, recent_gaps
from storage.queries import connect_readonly
from tests.storage.conftest import make_db

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 3, 1, tzinfo=UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def gap(exchange, kind, start_s, end_s, missing=-1, instrument="BTCUSDT") -> dict:
    return {"exchange": exchange, "instrument": instrument, "kind": kind, "start_ts": at(start_s),
            "end_ts": None if end_s is None else at(end_s), "missing": missing,
            "detail": f"{kind} at {start_s}"}


GAPS = [
    gap("binance", "sequence", 10, 10.5, missing=7),
    gap("binance", "sequence", 20, 21, missing=3),
    gap("binance", "disconnect", 30, 42, instrument="*"),
    gap("kraken", "silence", 50, None),
    gap("kraken", "silence", 60, 75),
]


@pytest.fixture
def db(tmp_path):
    return make_db(tmp_path / "h.duckdb", {"gaps": GAPS})


def test_gaps_summary_per_exchange_and_kind(db):
    with connect_readonly(db) as con:
        s = gaps_summary(con)
    rows = {(r.exchange, r.kind): r for r in s.itertuples()}
    assert sorted(rows) == [("binance", "disconnect"), ("binance", "sequence"),
                            ("kraken", "silence")]
    seq = rows[("binance", "sequence")]
    assert (seq.gaps, seq.open_gaps, seq.missing) == (2, 0, 10)
    assert seq.gap_seconds == pytest.approx(1.5)
    assert seq.last_start_s == pytest.approx(at(20).timestamp())
    disc = rows[("binance", "disconnect")]
    assert (disc.gaps, disc.missing) == (1, 0)  # -1 (unknown) is not summed as missing
    assert disc.gap_seconds == pytest.approx(12.0)
    silence = rows[("kraken", "silence")]
    # the open one counts, but has no length
    assert (silence.gaps, silence.open_gaps) == (2, 1)
    assert silence.gap_seconds == pytest.approx(15.0)


def test_gaps_summary_since(db):
    with connect_readonly(db) as con:
        s = gaps_summary(con, since_s=at(45).timestamp())
        none = gaps_summary(con, since_s=at(1000).timestamp())
    assert list(s["exchange"]) == ["kraken"] and list(s["gaps"]) == [2]
    assert len(none) == 0


def test_recent_gaps_newest_first_with_epoch_seconds(db):
    with connect_readonly(db) as con:
        r = recent_gaps(con, limit=3)
        empty = recent_gaps(con, limit=0)
    assert list(r["start_s"]) == pytest.approx([at(60).timestamp(), at(50).timestamp(),
                                                at(30).timestamp()])
    assert list(r["kind"]) == ["silence", "silence", "disconnect"]
    assert r["end_s"].iloc[0] == pytest.approx(at(75).timestamp())
    assert math.isnan(r["end_s"].iloc[1])  # still open
    assert len(empty) == 0
    with connect_readonly(db) as con, pytest.raises(ValueError, match="limit"):
        recent_gaps(con, limit=-1)


def test_limit_is_bound_not_formatted(db):
    with connect_readonly(db) as con, pytest.raises((TypeError, ValueError)):
        recent_gaps(con, limit="1; DROP TABLE gaps")


def test_database_size_of_a_file_and_its_blocks(db):
    with connect_readonly(db) as con:
        size = database_size(con)
    assert size.path == str(db)
    assert size.file_bytes == db.stat().st_size > 0
    assert size.block_bytes > 0 and 0 < size.used_blocks <= size.total_blocks
    assert size.used_bytes == size.used_blocks * size.block_bytes
    assert size.used_bytes <= size.file_bytes


def test_database_size_grows_with_data_and_sees_the_wal(tmp_path):
    path = tmp_path / "grow.duckdb"
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE TABLE t AS SELECT range AS i, random() AS x FROM range(200000)")
        con.execute("CHECKPOINT")
        before = database_size(con)
        con.execute("SET wal_autocheckpoint = '1GB'")
        con.execute("INSERT INTO t SELECT range, random() FROM range(1000)")
        after = database_size(con)
        # a cursor (what the archive page uses) reads the same database
        via_cursor = database_size(con.cursor())
    finally:
        con.close()
    assert before.used_bytes > 1_000_000  # 200k rows of two 8-byte columns, compressed a little
    assert before.wal_bytes == 0
    assert after.wal_bytes > 0
    assert via_cursor.path == str(path)


def test_database_size_in_memory_has_no_files():
    con = duckdb.connect(":memory:")
    size = database_size(con)
    assert size.path == "" and size.file_bytes == 0 and size.wal_bytes == 0


def test_archive_size_counts_parquet_files_only(tmp_path):
    root = tmp_path / "archive"
    assert archive_size(str(root)) == archive_size(str(root)).__class__(str(root), 0, 0)
    part = root / "table=trades" / "date=2024-03-01" / "exchange=binance"
    part.mkdir(parents=True)
    con = duckdb.connect()
    con.execute(f"COPY (SELECT range AS i FROM range(1000)) TO '{part / 'part-0.parquet'}' "
                "(FORMAT parquet)")
    (part / ".part-0.parquet.abc.tmp").write_bytes(b"x" * 100)  # staging file: not counted
    (root / "manifest.json").write_text("{}")
    size = archive_size(str(root))
    assert size.files == 1
    assert size.bytes == (part / "part-0.parquet").stat().st_size
    # an fsspec URL works the same
    assert archive_size(f"file://{root}").bytes == size.bytes
