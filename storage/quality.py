"""The data quality report of plan 003 (AC-001..AC-004): per UTC day, exchange and instrument.

``quality_report(con, day=None)`` reads the hedgeflow tables of ``con`` — a surface from
``storage.surface.open_surface`` (hot + archive) or a plain connection to the hot database — and
returns a ``QualityReport`` of DataFrames; ``format_quality`` renders it as plain text for
``hedgeflow quality [--day DATE]``. Every value a caller gives reaches SQL as a bound parameter;
table and column names come from this module's fixed sets.

What is counted. A row's day is the UTC date it was *received* (``REPORT_DAY_COLUMNS``:
``receive_ts`` for ticks, index prices and quarantine; ``start_ts`` for gaps): the report is about
what the collector got each day. (The archive partitions ticks by event time instead; event days
scatter, e.g. Kraken book snapshot levels carry the time each level last changed, years back.)

- **ticks**: rows of trades, quotes, book_updates, option_tickers and funding, per instrument.
- **out_of_order**: ticks whose event time is earlier than the previous tick's of the same
  (exchange, instrument) and table, in receive order, within the day (a window ``lag`` over each
  table). Rows received at the same instant (one message) are ordered by event time, so only
  disorder between receives counts (AC-004, "timestamps monotonically increasing").
  ``flagged_out_of_order`` counts the rows stored with ``out_of_order = true`` (the writer's own
  flag, where the table has that column); the window count sees every stored row whatever the
  flag.
- **gaps**: gap rows by the day they started; ``gaps`` counts all of them, ``gap_seconds`` is the
  total length of the closed ones (end − start), ``open_gaps`` counts those still open (no end, so
  no length), ``gap_missing`` sums the sequence numbers skipped, where known (-1 = unknown is
  left out). A gap is listed under the instrument its row names ("" for a connection).
- **quarantine** by (day, exchange, reason): messages and their raw bytes; ``duplicates_refused``
  counts quarantined messages whose reason contains "duplicate trade" (one row per refused message,
  AC-004 "no duplicate trade_ids").
- **completeness** where the venue numbers trades consecutively per instrument — Binance aggTrade
  and Coinbase trade ids (``ID_SEQUENCE_EXCHANGES``): expected = max(id) − min(id) + 1 over the
  day's numeric ids, completeness = rows / expected. Trades missing at the very start or end of a
  day cannot be seen this way. Deribit's ``trade_seq`` is not stored: no completeness there.
  It assumes one trade channel per instrument (hedgeflow subscribes ``aggTrade`` only; Binance's
  ``trade`` ids are another sequence).
- **bytes per tick**: each row is charged the bytes per row of the partition holding it: for
  archive partitions the surface reads (``hedgeflow.archive_files``), the Parquet file's bytes over
  its rows, exactly; for hot rows an estimate from DuckDB's storage layout
  (``pragma_storage_info``): each column segment spans from its offset to the next segment's in
  its block (the last one of a block is capped at 8 bytes a value), summed per table and divided
  by the table's rows. Constant segments cost nothing; file headers and free blocks are left out.
  ``bytes_source`` says which (``parquet``, ``duckdb``, ``mixed``). An in-memory database has no
  file size: NaN.
- **compression** against the raw messages: ``raw_bytes`` per (exchange, day) from the caller's
  mapping or, when the connection has a table ``ingest_stats(exchange, day, messages, raw_bytes)``,
  from it (the mapping wins). ``compression_ratio`` = raw bytes / stored bytes (all of the
  exchange's rows that day: ticks, index prices, quarantine, gaps); ``size_reduction`` =
  1 − stored / raw (plan 003's "compression ratio ≥ 50%").
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass

import duckdb
import pandas as pd

from storage.surface import DAY_COLUMNS, HOT, META_SCHEMA, day_sql, format_result

TICK_TABLES = ("trades", "quotes", "book_updates", "option_tickers", "funding")
#: The column whose UTC date is a row's day in the report (other tables: their ``day`` column).
REPORT_DAY_COLUMNS: dict[str, str] = {
    **{t: "receive_ts" for t in (*TICK_TABLES, "index_prices", "quarantine")},
    "gaps": "start_ts",
}
#: Venues whose trade ids are consecutive per instrument.
ID_SEQUENCE_EXCHANGES = ("binance", "coinbase")
DUPLICATE_REASON = "duplicate trade"
#: Tables whose rows (besides ticks) count as an exchange's stored bytes.
_OTHER_EXCHANGE_TABLES = ("index_prices", "quarantine", "gaps")

_COUNT_COLUMNS = (
    "ticks", *TICK_TABLES, "out_of_order", "flagged_out_of_order", "gaps", "open_gaps",
    "gap_missing", "id_trades", "expected_trades",
)


@dataclass
class QualityReport:
    """The report; every frame has a ``day`` column of ``datetime.date`` (UTC)."""

    day: dt.date | None
    #: day, exchange, instrument, ticks, one column per tick table, out_of_order,
    #: flagged_out_of_order, gaps, gap_seconds, open_gaps, gap_missing, id_trades,
    #: expected_trades, completeness
    per_instrument: pd.DataFrame
    #: day, exchange, reason, messages, raw_bytes
    quarantine_by_reason: pd.DataFrame
    #: day, exchange: instruments, ticks, per-table rows, out_of_order, flagged_out_of_order,
    #: gaps, gap_seconds, open_gaps, gap_missing, quarantined, duplicates_refused,
    #: quarantine_raw_bytes, id_trades, expected_trades, completeness, tick_bytes, bytes_per_tick,
    #: stored_bytes, bytes_source, messages, raw_bytes, compression_ratio, size_reduction
    summary: pd.DataFrame
    #: source (parquet | duckdb), table: rows, bytes, bytes_per_row
    storage: pd.DataFrame


# ---------------------------------------------------------------------------------- catalog


def _columns(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
    """Tables and views of the connection's default catalog: name -> column -> type."""
    out: dict[str, dict[str, str]] = {}
    for table, col, t in con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_schema = 'main' "
        "ORDER BY table_name, ordinal_position"
    ).fetchall():
        out.setdefault(table, {})[col] = t
    return out


def _has_meta(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() "
        "AND table_schema = ? AND table_name = 'archive_files'",
        [META_SCHEMA],
    ).fetchone()[0])


def _day(table: str, cols: dict[str, str]) -> str:
    name = REPORT_DAY_COLUMNS.get(table, "day")
    return day_sql(name, cols[name])


def _where(table: str, cols: dict[str, str], day: dt.date | None) -> str:
    """A WHERE clause restricting ``table`` to ``day`` with the parameters $start/$end or $day."""
    if day is None:
        return ""
    name = REPORT_DAY_COLUMNS.get(table, "day")
    if cols[name].upper() == "DATE":
        return f' WHERE "{name}" = $day'
    return f' WHERE "{name}" >= $start AND "{name}" < $end'


def _params(sql: str, values: dict) -> dict:
    """The subset of ``values`` the statement uses (DuckDB refuses unused named parameters)."""
    return {k: v for k, v in values.items() if f"${k}" in sql}


def _as_date(value) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, pd.Timestamp):
        return value.date()
    return dt.date.fromisoformat(str(value)[:10])


def _empty(*columns: str) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})


def _dates(df: pd.DataFrame) -> pd.DataFrame:
    if "day" in df.columns:
        df["day"] = pd.Series([_as_date(v) for v in df["day"]], index=df.index, dtype=object)
    return df


# ---------------------------------------------------------------------------------- parts


def _per_instrument(con, cols: dict[str, dict[str, str]], day, values) -> pd.DataFrame:
    ticks = [t for t in TICK_TABLES if t in cols]
    ctes, unions = [], []
    for t in ticks:
        d = _day(t, cols[t])
        flag = "coalesce(out_of_order, false)" if "out_of_order" in cols[t] else "false"
        ctes.append(
            f"""tk_{t} AS (
              SELECT day, exchange, instrument, count(*) AS n,
                     count(*) FILTER (WHERE event_ts < prev_event_ts) AS ooo,
                     count(*) FILTER (WHERE flagged) AS flagged
              FROM (SELECT {d} AS day, exchange, instrument, event_ts, {flag} AS flagged,
                           lag(event_ts) OVER (PARTITION BY exchange, instrument, {d}
                                               ORDER BY receive_ts, event_ts) AS prev_event_ts
                    FROM {t}{_where(t, cols[t], day)})
              GROUP BY ALL)"""
        )
        unions.append(f"SELECT '{t}' AS tbl, * FROM tk_{t}")
    if not unions:
        unions.append(
            "SELECT NULL::VARCHAR AS tbl, NULL::DATE AS day, NULL::VARCHAR AS exchange, "
            "NULL::VARCHAR AS instrument, 0::BIGINT AS n, 0::BIGINT AS ooo, 0::BIGINT AS flagged "
            "WHERE false"
        )
    pivot = ", ".join(
        f"coalesce(sum(n) FILTER (WHERE tbl = '{t}'), 0)::BIGINT AS {t}" for t in TICK_TABLES
    )
    ctes.append(f"ticks_long AS ({' UNION ALL '.join(unions)})")
    ctes.append(
        f"""ticks AS (
          SELECT day, exchange, instrument, sum(n)::BIGINT AS ticks, {pivot},
                 sum(ooo)::BIGINT AS out_of_order, sum(flagged)::BIGINT AS flagged_out_of_order
          FROM ticks_long GROUP BY ALL)"""
    )
    if "gaps" in cols:
        g = cols["gaps"]
        ctes.append(
            f"""gp AS (
              SELECT {_day('gaps', g)} AS day, exchange, instrument, count(*)::BIGINT AS gaps,
                     coalesce(sum(epoch(end_ts) - epoch(start_ts)), 0)::DOUBLE AS gap_seconds,
                     count(*) FILTER (WHERE end_ts IS NULL)::BIGINT AS open_gaps,
                     coalesce(sum(missing) FILTER (WHERE missing > 0), 0)::BIGINT AS gap_missing
              FROM gaps{_where('gaps', g, day)} GROUP BY ALL)"""
        )
    else:
        ctes.append(
            "gp AS (SELECT NULL::DATE AS day, NULL::VARCHAR AS exchange, NULL::VARCHAR AS "
            "instrument, 0::BIGINT AS gaps, 0::DOUBLE AS gap_seconds, 0::BIGINT AS open_gaps, "
            "0::BIGINT AS gap_missing WHERE false)"
        )
    if "trades" in cols:
        t = cols["trades"]
        w = _where("trades", t, day)
        w = (w + " AND" if w else " WHERE") + " list_contains($id_exchanges, exchange)"
        ctes.append(
            f"""ids AS (
              SELECT day, exchange, instrument, count(*)::BIGINT AS id_trades,
                     (max(id) - min(id) + 1)::BIGINT AS expected_trades
              FROM (SELECT {_day('trades', t)} AS day, exchange, instrument,
                           TRY_CAST(trade_id AS BIGINT) AS id
                    FROM trades{w})
              WHERE id IS NOT NULL GROUP BY ALL)"""
        )
    else:
        ctes.append(
            "ids AS (SELECT NULL::DATE AS day, NULL::VARCHAR AS exchange, NULL::VARCHAR AS "
            "instrument, 0::BIGINT AS id_trades, 0::BIGINT AS expected_trades WHERE false)"
        )
    counts = ", ".join(f"coalesce(k.{t}, 0) AS {t}" for t in TICK_TABLES)
    sql = (
        "WITH " + ",\n".join(ctes) + f"""
        SELECT coalesce(k.day, gp.day) AS day, coalesce(k.exchange, gp.exchange) AS exchange,
               coalesce(k.instrument, gp.instrument) AS instrument,
               coalesce(k.ticks, 0) AS ticks, {counts},
               coalesce(k.out_of_order, 0) AS out_of_order,
               coalesce(k.flagged_out_of_order, 0) AS flagged_out_of_order,
               coalesce(gp.gaps, 0) AS gaps, coalesce(gp.gap_seconds, 0) AS gap_seconds,
               coalesce(gp.open_gaps, 0) AS open_gaps, coalesce(gp.gap_missing, 0) AS gap_missing,
               coalesce(ids.id_trades, 0) AS id_trades,
               coalesce(ids.expected_trades, 0) AS expected_trades,
               CASE WHEN ids.expected_trades > 0
                    THEN ids.id_trades / ids.expected_trades END AS completeness
        FROM ticks k
        FULL JOIN gp ON k.day = gp.day AND k.exchange = gp.exchange
                    AND k.instrument = gp.instrument
        LEFT JOIN ids ON ids.day = k.day AND ids.exchange = k.exchange
                     AND ids.instrument = k.instrument
        ORDER BY day, exchange, instrument
        """
    )
    return _dates(con.execute(sql, _params(sql, values)).df())


def _quarantine(con, cols, day, values) -> tuple[pd.DataFrame, pd.DataFrame]:
    empty_reasons = _empty("day", "exchange", "reason", "messages", "raw_bytes")
    empty_totals = _empty(
        "day", "exchange", "quarantined", "duplicates_refused", "quarantine_raw_bytes"
    )
    if "quarantine" not in cols:
        return empty_reasons, empty_totals
    q = cols["quarantine"]
    d, w = _day("quarantine", q), _where("quarantine", q, day)
    by_reason = (
        f"SELECT {d} AS day, exchange, reason, count(*)::BIGINT AS messages, "
        f"coalesce(sum(strlen(raw)), 0)::BIGINT AS raw_bytes FROM quarantine{w} "
        "GROUP BY ALL ORDER BY day, exchange, messages DESC, reason"
    )
    totals = (
        f"SELECT {d} AS day, exchange, count(*)::BIGINT AS quarantined, "
        "count(*) FILTER (WHERE reason ILIKE $duplicate)::BIGINT AS duplicates_refused, "
        f"coalesce(sum(strlen(raw)), 0)::BIGINT AS quarantine_raw_bytes FROM quarantine{w} "
        "GROUP BY ALL"
    )
    return (
        _dates(con.execute(by_reason, _params(by_reason, values)).df()),
        _dates(con.execute(totals, _params(totals, values)).df()),
    )


def _row_counts(con, cols, day, values) -> pd.DataFrame:
    """Rows per (table, report day, exchange, archive day) of every exchange table: the archive day
    (``storage.surface.DAY_COLUMNS``) names the partition holding the rows, hence their bytes."""
    frames = []
    for t in (*TICK_TABLES, *_OTHER_EXCHANGE_TABLES):
        if t not in cols or "exchange" not in cols[t]:
            continue
        part = DAY_COLUMNS.get(t, REPORT_DAY_COLUMNS[t])
        sql = (
            f"SELECT '{t}' AS \"table\", {_day(t, cols[t])} AS day, exchange, "
            f"{day_sql(part, cols[t][part])} AS part_day, count(*)::BIGINT AS rows "
            f"FROM {t}{_where(t, cols[t], day)} GROUP BY ALL"
        )
        frames.append(con.execute(sql, _params(sql, values)).df())
    columns = ["table", "day", "exchange", "part_day", "rows"]
    frames = [f for f in frames if len(f)]
    if not frames:
        return _empty(*columns)
    out = pd.concat(frames, ignore_index=True)[columns]
    out["day"] = [_as_date(v) for v in out["day"]]
    out["part_day"] = [_as_date(v) for v in out["part_day"]]
    return out


def _hot_bytes_per_row(con: duckdb.DuckDBPyConnection) -> dict[str, float]:
    """Estimated stored bytes per row of each hot table (module doc); empty without a file."""
    dbs = {r[0] for r in con.execute("SELECT database_name FROM duckdb_databases()").fetchall()}
    catalog = HOT if HOT in dbs else con.execute("SELECT current_database()").fetchone()[0]
    row = con.execute(
        "SELECT block_size FROM pragma_database_size() WHERE database_name = ?", [catalog]
    ).fetchone()
    block_size = int(row[0]) if row and row[0] else 0
    tables = [r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main'",
        [catalog],
    ).fetchall()]
    if block_size <= 0 or not tables:
        return {}
    # Every persistent segment of every table: (block, offset) -> (table, values, extra blocks).
    segments: dict[tuple[int, int], tuple[str, int, int]] = {}
    rows: dict[str, int] = {}
    for t in tables:
        for block, offset, count, extra in con.execute(
            "SELECT block_id, block_offset, count, len(coalesce(additional_block_ids, [])) "
            "FROM pragma_storage_info(?) WHERE persistent AND block_id >= 0",
            [f"{catalog}.main.{t}"],
        ).fetchall():
            segments[(int(block), int(offset))] = (t, int(count), int(extra))
        rows[t] = con.execute(f'SELECT count(*) FROM "{catalog}"."main"."{t}"').fetchone()[0]
    # A segment runs to the next segment's offset in its block; the last one of a block to the
    # block's end, capped at 8 bytes a value (the block's tail may be free space).
    sizes: dict[str, float] = dict.fromkeys(tables, 0.0)
    keys = sorted(segments)
    for i, (block, offset) in enumerate(keys):
        t, count, extra = segments[(block, offset)]
        if i + 1 < len(keys) and keys[i + 1][0] == block:
            size = keys[i + 1][1] - offset
        else:
            size = min(block_size - offset, 8 * count + 64)
        sizes[t] += size + extra * block_size
    return {t: sizes[t] / rows[t] for t in tables if rows[t]}


def _archive_bytes(con) -> dict[tuple, tuple[int, int]]:
    """(table, day, exchange) -> (rows, bytes) of the archive files the surface reads."""
    if not _has_meta(con):
        return {}
    sql = (
        f"SELECT table_name, day, partition_value, sum(rows)::BIGINT, sum(bytes)::BIGINT "
        f"FROM {META_SCHEMA}.archive_files WHERE in_surface AND partition_key = 'exchange' "
        "GROUP BY ALL"
    )
    return {(t, _as_date(d), e): (int(r), int(b)) for t, d, e, r, b in con.execute(sql).fetchall()}


def _storage(con, counts: pd.DataFrame, day) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bytes per (table, day, exchange) row group of ``counts``, and the storage frame."""
    bpr = _hot_bytes_per_row(con)
    archive = _archive_bytes(con)
    src, size = [], []
    keyed = counts[["table", "exchange", "part_day", "rows"]]
    for t, e, p, n in keyed.itertuples(index=False, name=None):
        a = archive.get((t, p, e))
        if a is not None and a[0] > 0:
            src.append("parquet")
            size.append(n * a[1] / a[0])
        else:
            src.append("duckdb")
            size.append(n * bpr.get(t, math.nan))
    parts = counts.assign(source=src, bytes=size)
    parts = parts.groupby(["table", "day", "exchange", "source"], as_index=False).agg(
        rows=("rows", "sum"), bytes=("bytes", lambda x: x.sum(min_count=1))
    ) if len(parts) else _empty("table", "day", "exchange", "source", "rows", "bytes")
    storage = (
        parts.groupby(["source", "table"], as_index=False).agg(
            rows=("rows", "sum"), bytes=("bytes", lambda x: x.sum(min_count=1)))
        if len(parts) else _empty("source", "table", "rows", "bytes")
    )
    storage["bytes_per_row"] = storage["bytes"] / storage["rows"]
    return parts, storage


def _raw(con, cols, day, values, raw_bytes: Mapping | None) -> pd.DataFrame:
    found: dict[tuple, list] = {}
    if "ingest_stats" in cols and {"exchange", "day", "raw_bytes"} <= set(cols["ingest_stats"]):
        s = cols["ingest_stats"]
        messages = "sum(messages)" if "messages" in s else "NULL"
        where = f" WHERE {day_sql('day', s['day'])} = $day" if day is not None else ""
        sql = (
            f"SELECT {day_sql('day', s['day'])} AS day, exchange, {messages}::BIGINT, "
            f"sum(raw_bytes)::BIGINT FROM ingest_stats{where} GROUP BY ALL"
        )
        for d, e, m, b in con.execute(sql, _params(sql, values)).fetchall():
            found[(_as_date(d), e)] = [m, b]
    for (e, d), b in (raw_bytes or {}).items():
        d = _as_date(d)
        if day is None or d == day:
            found[(d, e)] = [found.get((d, e), [None, None])[0], b]
    if not found:
        return _empty("day", "exchange", "messages", "raw_bytes")
    return pd.DataFrame(
        [{"day": d, "exchange": e, "messages": m, "raw_bytes": b}
         for (d, e), (m, b) in found.items()],
        columns=["day", "exchange", "messages", "raw_bytes"],
    )


# ---------------------------------------------------------------------------------- the report


def quality_report(
    con: duckdb.DuckDBPyConnection,
    day: dt.date | str | None = None,
    raw_bytes: Mapping[tuple[str, dt.date | str], int] | None = None,
) -> QualityReport:
    """The data quality report of ``con``'s tables for one UTC ``day`` (None: every day).

    ``raw_bytes`` maps (exchange, day) to the bytes of the raw messages received (module doc).
    """
    day = _as_date(day) if day is not None else None
    values: dict = {
        "id_exchanges": list(ID_SEQUENCE_EXCHANGES),
        "duplicate": f"%{DUPLICATE_REASON}%",
    }
    if day is not None:
        start = dt.datetime.combine(day, dt.time(), dt.timezone.utc)
        values.update(day=day, start=start, end=start + dt.timedelta(days=1))
    cols = _columns(con)
    per_instrument = _per_instrument(con, cols, day, values)
    by_reason, q_totals = _quarantine(con, cols, day, values)
    parts, storage = _storage(con, _row_counts(con, cols, day, values), day)
    raw = _raw(con, cols, day, values, raw_bytes)
    summary = _summary(per_instrument, q_totals, parts, raw)
    return QualityReport(day, per_instrument, by_reason, summary, storage)


def _summary(per_instrument, q_totals, parts, raw) -> pd.DataFrame:
    keys = ["day", "exchange"]
    pi = per_instrument.assign(active=(per_instrument["ticks"] > 0).astype("int64"))
    agg = {c: "sum" for c in _COUNT_COLUMNS}
    agg["gap_seconds"] = "sum"
    agg["active"] = "sum"
    base = pi.groupby(keys, as_index=False).agg(agg).rename(columns={"active": "instruments"})
    ticks_bytes = parts[parts["table"].isin(TICK_TABLES)]
    tb = ticks_bytes.groupby(keys, as_index=False).agg(
        tick_bytes=("bytes", lambda s: s.sum(min_count=1)),
        bytes_source=("source", lambda s: s.iloc[0] if s.nunique() == 1 else "mixed"),
    )
    sb = parts.groupby(keys, as_index=False).agg(
        stored_bytes=("bytes", lambda s: s.sum(min_count=1))
    )
    out = base
    for other in (q_totals, tb, sb, raw):
        out = out.merge(other, on=keys, how="outer")
    for c in (*_COUNT_COLUMNS, "instruments", "quarantined", "duplicates_refused",
              "quarantine_raw_bytes"):
        out[c] = out[c].fillna(0).astype("int64")
    out["gap_seconds"] = out["gap_seconds"].fillna(0.0).astype(float)
    expected = out["expected_trades"].where(out["expected_trades"] > 0)
    out["completeness"] = out["id_trades"] / expected
    out["bytes_per_tick"] = out["tick_bytes"].astype(float) / out["ticks"].where(out["ticks"] > 0)
    out["messages"] = pd.to_numeric(out["messages"], errors="coerce").astype("Int64")
    out["raw_bytes"] = pd.to_numeric(out["raw_bytes"], errors="coerce").astype("Int64")
    raw_b = out["raw_bytes"].astype(float)
    stored = out["stored_bytes"].astype(float)
    out["compression_ratio"] = raw_b / stored.where(stored > 0)
    out["size_reduction"] = 1.0 - stored / raw_b.where(raw_b > 0)
    order = [
        "day", "exchange", "instruments", "ticks", *TICK_TABLES, "out_of_order",
        "flagged_out_of_order", "gaps",
        "gap_seconds", "open_gaps", "gap_missing", "quarantined", "duplicates_refused",
        "quarantine_raw_bytes", "id_trades", "expected_trades", "completeness", "tick_bytes",
        "bytes_per_tick", "stored_bytes", "bytes_source", "messages", "raw_bytes",
        "compression_ratio", "size_reduction",
    ]
    return out[order].sort_values(keys, kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------- text


def _fmt(value, kind: str) -> str:
    if value is None or pd.isna(value):
        return "-"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "bytes":
        v = float(value)
        for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(v) < 1024 or unit == "TiB":
                return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
            v /= 1024
    if kind == "x":
        return f"{value:.1f}x"
    if kind == "f1":
        return f"{value:.1f}"
    return str(value)


def _display(df: pd.DataFrame, spec: dict[str, tuple[str, str]]) -> pd.DataFrame:
    """The columns of ``spec`` (source -> (title, kind)) as text, titled for the terminal."""
    out = pd.DataFrame(index=df.index)
    for col, (title, kind) in spec.items():
        if kind == "int":
            out[title] = df[col]
        elif kind == "str":
            out[title] = ["-" if v is None or pd.isna(v) else str(v) for v in df[col]]
        else:
            out[title] = [_fmt(v, kind) for v in df[col]]
    return out


def format_quality(report: QualityReport, max_instruments: int = 50) -> str:
    """The report as plain-text tables (``hedgeflow quality``)."""
    when = report.day.isoformat() if report.day else "every day"
    lines = [f"hedgeflow data quality, {when} (UTC days)", ""]
    lines += ["Per day and exchange", ""]
    if len(report.summary):
        lines.append(format_result(_display(report.summary, {
            "day": ("day", "str"), "exchange": ("exchange", "str"),
            "instruments": ("instruments", "int"), "ticks": ("ticks", "int"),
            "out_of_order": ("out of order", "int"), "gaps": ("gaps", "int"),
            "gap_seconds": ("gap s", "f1"), "open_gaps": ("open gaps", "int"),
            "quarantined": ("quarantined", "int"), "duplicates_refused": ("duplicates", "int"),
            "completeness": ("completeness", "pct"), "bytes_per_tick": ("bytes/tick", "f1"),
            "bytes_source": ("bytes from", "str"), "raw_bytes": ("raw", "bytes"),
            "stored_bytes": ("stored", "bytes"), "compression_ratio": ("compression", "x"),
        }), "table", max_rows=None))
    else:
        lines.append("(no data)\n")
    lines += ["Quarantined messages by reason", ""]
    if len(report.quarantine_by_reason):
        qr = report.quarantine_by_reason.copy()
        qr["reason"] = [r if len(r) <= 80 else r[:77] + "..." for r in qr["reason"]]
        lines.append(format_result(_display(qr, {
            "day": ("day", "str"), "exchange": ("exchange", "str"), "reason": ("reason", "str"),
            "messages": ("messages", "int"), "raw_bytes": ("raw", "bytes"),
        }), "table", max_rows=None))
    else:
        lines.append("(none)\n")
    lines += ["Storage", ""]
    if len(report.storage):
        lines.append(format_result(_display(report.storage, {
            "source": ("source", "str"), "table": ("table", "str"), "rows": ("rows", "int"),
            "bytes": ("bytes", "bytes"), "bytes_per_row": ("bytes/row", "f1"),
        }), "table", max_rows=None))
    else:
        lines.append("(no data)\n")
    pi = report.per_instrument
    if len(pi):
        # Instruments with something to look at first: gaps, disorder, missing trades.
        missing = (pi["expected_trades"] - pi["id_trades"]).clip(lower=0)
        ranked = pi.assign(_missing=missing).sort_values(
            ["gaps", "out_of_order", "_missing", "ticks"], ascending=False, kind="stable"
        )
        shown = ranked.head(max_instruments)
        lines += [
            f"Per instrument ({len(shown)} of {len(pi)}; gaps, out-of-order and missing trades "
            "first)",
            "",
        ]
        lines.append(format_result(_display(shown, {
            "day": ("day", "str"), "exchange": ("exchange", "str"),
            "instrument": ("instrument", "str"), "ticks": ("ticks", "int"),
            "trades": ("trades", "int"), "quotes": ("quotes", "int"),
            "book_updates": ("book", "int"), "option_tickers": ("options", "int"),
            "funding": ("funding", "int"), "out_of_order": ("out of order", "int"),
            "gaps": ("gaps", "int"), "gap_seconds": ("gap s", "f1"),
            "open_gaps": ("open", "int"), "completeness": ("completeness", "pct"),
        }), "table", max_rows=None))
    return "\n".join(lines)
