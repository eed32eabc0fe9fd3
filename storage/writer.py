"""Batched DuckDB writer: columnar batches in, one transaction per flush.

Rows are buffered as Arrow tables per table and written with ``INSERT ... BY NAME SELECT`` from a
registered Arrow view: DuckDB ingests Arrow at millions of rows a second, where row-wise inserts
manage thousands. A flush happens when the buffer reaches 80% of ``capacity_rows`` (plan 003) or
when ``maybe_flush(now)`` finds the oldest buffered row older than ``flush_interval_s``; the
graph's clock drives the latter, so replay flushes on capture time, not wall time.

The buffer is bounded: an append that fills it flushes before returning, so a fast feed is
slowed to the database's pace (backpressure) instead of growing memory. Rows count as stored only
once their transaction commits: every flush returns a ``Commit`` naming the rows per table and
exchange, and the graph's ledger counts those, not the rows it handed over.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from models.records import DATA_BATCHES, Gap, OraclePrice, QuarantineRecord, QuoteBatch, TradeBatch
from storage.schema import create_schema

_TS = pa.timestamp("us", tz="UTC")


# TIMESTAMPTZ holds microseconds in int64; refuse what would overflow rather than store another
# instant (validation rejects implausible times first; this is the last line of defence).
_MAX_ABS_TS_S = 9.2e12


def _ts_array(seconds) -> pa.Array:
    """Epoch seconds → TIMESTAMPTZ (UTC, µs); NaN → NULL (a time the venue did not give)."""
    s = np.asarray(seconds, dtype=np.float64)
    missing = np.isnan(s)
    if s.size and not (np.abs(s[~missing]) < _MAX_ABS_TS_S).all():
        bad = s[~missing][~(np.abs(s[~missing]) < _MAX_ABS_TS_S)]
        raise ValueError(f"timestamp out of range (epoch seconds): {bad[:3]}")
    us = np.round(np.where(missing, 0.0, s) * 1e6).astype(np.int64)
    # Built as timestamps directly: an int64 array cast to a zoned timestamp costs 5x more.
    return pa.array(us, type=_TS, mask=missing if missing.any() else None)


class _RefusedRows(Exception):
    """The database refused rows already stored: redo the flush, counting whose they were."""


# Tables whose rows are unique on a key, and the key (the table's primary key).
_UNIQUE_KEYS = {"trades": ("exchange", "instrument", "trade_id")}

# Tables of analytics records (models.records), written by append_records.
_RECORD_TABLES = frozenset({"volatility", "surface_fits", "premium_quotes", "policy_risk",
                            "position_states", "hedge_decisions", "order_decisions",
                            "backtest_trades", "loan_updates", "backtest_equity",
                            "desk_trades", "desk_equity"})

# Columns of the data batches that hold times (epoch seconds in memory, TIMESTAMPTZ on disk).
TIME_COLUMNS = frozenset({"event_ts", "receive_ts", "expiry_utc", "next_funding_ts"})


def batch_table(batch) -> pa.Table:
    """Any data batch (``models.records.DATA_BATCHES``) as an Arrow table ready for DuckDB.

    A NaN number is a value the venue did not give (no bid on an option, no size on an old
    Coinbase ticker) and is stored as NULL.
    """
    return pa.table({name: _column(name, values) for name, values in batch.column_dict().items()})


def _column(name: str, values: np.ndarray) -> pa.Array:
    if name in TIME_COLUMNS:
        return _ts_array(values)
    if values.dtype == object:
        # Exchange, instrument, asset and side repeat across a batch: dictionary-encoded strings
        # convert and insert faster than plain ones, and DuckDB stores them as VARCHAR all the same.
        return pa.array(values, type=pa.string()).dictionary_encode()
    return pa.array(values, from_pandas=values.dtype.kind == "f")


def quotes_table(batch: QuoteBatch) -> pa.Table:
    return batch_table(batch)


def trades_table(batch: TradeBatch) -> pa.Table:
    return batch_table(batch)


def gaps_table(gaps: list[Gap]) -> pa.Table:
    return pa.table(
        {
            "exchange": pa.array([g.exchange for g in gaps], pa.string()),
            "instrument": pa.array([g.instrument for g in gaps], pa.string()),
            "kind": pa.array([g.kind for g in gaps], pa.string()),
            "start_ts": _ts_array([g.start_ts for g in gaps]),
            "end_ts": _ts_array([g.end_ts for g in gaps]),
            "missing": pa.array([g.missing for g in gaps], pa.int64()),
            "detail": pa.array([g.detail for g in gaps], pa.string()),
        }
    )


def quarantine_table(records: list[QuarantineRecord]) -> pa.Table:
    return pa.table(
        {
            "exchange": pa.array([r.exchange for r in records], pa.string()),
            "receive_ts": _ts_array([r.receive_ts for r in records]),
            "reason": pa.array([r.reason for r in records], pa.string()),
            "raw": pa.array([r.raw for r in records], pa.string()),
        }
    )


def oracle_table(prices: list[OraclePrice]) -> pa.Table:
    return pa.table(
        {
            "asset": pa.array([p.asset for p in prices], pa.string()),
            "ts": _ts_array([p.ts for p in prices]),
            # NaN (no fresh source) is stored as NULL: "no price", not a number.
            "price": pa.array([p.price_usd for p in prices], pa.float64(), from_pandas=True),
            "confidence": pa.array(
                [p.confidence_usd for p in prices], pa.float64(), from_pandas=True
            ),
            "n_sources": pa.array([p.n_sources for p in prices], pa.int32()),
            "status": pa.array([p.status for p in prices], pa.string()),
            "reason": pa.array([p.reason for p in prices], pa.string()),
            "sources": pa.array([list(p.sources) for p in prices], pa.list_(pa.string())),
            "rejected": pa.array([list(p.rejected) for p in prices], pa.list_(pa.string())),
        }
    )


def alerts_table(alerts) -> pa.Table:
    return pa.table(
        {
            "ts": _ts_array([a.ts for a in alerts]),
            "kind": pa.array([a.kind for a in alerts], pa.string()),
            "severity": pa.array([a.severity for a in alerts], pa.string()),
            "message": pa.array([a.message for a in alerts], pa.string()),
            "subject": pa.array([a.subject for a in alerts], pa.string()),
        }
    )


def records_table(records, time_fields=frozenset({"ts", "expiry_utc"})) -> pa.Table:
    """Frozen records of one dataclass type (models.records analytics) as an Arrow table: one
    column per field, epoch-second fields in ``time_fields`` as TIMESTAMPTZ, tuples as lists,
    NaN as NULL."""
    names = [f.name for f in dataclasses.fields(records[0])]
    columns = {}
    for name in names:
        values = [getattr(r, name) for r in records]
        if name in time_fields:
            columns[name] = _ts_array(values)
        elif isinstance(values[0], tuple):
            columns[name] = pa.array([list(v) for v in values], pa.list_(pa.float64()))
        elif isinstance(values[0], float):
            columns[name] = pa.array(values, pa.float64(), from_pandas=True)
        else:
            columns[name] = pa.array(values)
    return pa.table(columns)


@dataclass(frozen=True)
class Commit:
    """Rows made durable by one transaction: table -> exchange -> rows (oracle rows under "").
    ``refused``: rows the database would not take because they were already stored (a trade
    repeated after a restart, older than the graph's memory of recent trades)."""

    rows: dict[str, Counter] = field(default_factory=dict)
    refused: dict[str, Counter] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.rows.values())


class DuckDBWriter:
    """Owns the DuckDB connection the graph writes through."""

    def __init__(
        self,
        db_path: str | os.PathLike,
        capacity_rows: int = 10_000,
        flush_interval_s: float = 1.0,
    ) -> None:
        path = Path(db_path)
        if str(db_path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        self.db_path = str(db_path)
        self.con = duckdb.connect(self.db_path)
        self.con.execute("SET TimeZone = 'UTC'")
        create_schema(self.con)
        self.capacity_rows = capacity_rows
        self.flush_interval_s = flush_interval_s
        self._buffers: dict[str, list[pa.Table]] = {}
        self._pending: dict[str, Counter] = {}
        self._buffered_rows = 0
        self._oldest_ts: float | None = None
        self._ingest: Counter = Counter()  # (exchange, day, "messages"|"raw_bytes") -> amount

    # ------------------------------------------------------------------ appends
    def add_ingest(self, exchange: str, day: str, messages: int, raw_bytes: int) -> None:
        """Count messages and their raw size received from ``exchange`` on UTC ``day``
        (YYYY-MM-DD); written with the next flush, for compression and completeness reports."""
        self._ingest[(exchange, day, "messages")] += messages
        self._ingest[(exchange, day, "raw_bytes")] += raw_bytes

    def _append(self, table: str, data: pa.Table, exchanges, now: float) -> Commit | None:
        if data.num_rows == 0:
            return None
        self._buffers.setdefault(table, []).append(data)
        self._pending.setdefault(table, Counter()).update(exchanges)
        self._buffered_rows += data.num_rows
        if self._oldest_ts is None:
            self._oldest_ts = now
        if self._buffered_rows >= 0.8 * self.capacity_rows:
            return self.flush()
        return None

    def append(self, table: str, batch, now: float) -> Commit | None:
        """Buffer a data batch for ``table`` (a key of ``models.records.DATA_BATCHES``)."""
        if table not in DATA_BATCHES:
            raise ValueError(f"not a data table: {table!r}")
        if not isinstance(batch, DATA_BATCHES[table]):
            raise TypeError(f"{table} takes {DATA_BATCHES[table].__name__}, not {type(batch).__name__}")
        return self._append(table, batch_table(batch), batch.exchange.tolist(), now)

    def append_quotes(self, batch: QuoteBatch, now: float) -> Commit | None:
        return self.append("quotes", batch, now)

    def append_trades(self, batch: TradeBatch, now: float) -> Commit | None:
        return self.append("trades", batch, now)

    def append_gaps(self, gaps, now: float) -> Commit | None:
        gaps = list(gaps)
        return self._append("gaps", gaps_table(gaps), [g.exchange for g in gaps], now)

    def append_quarantine(self, records, now: float) -> Commit | None:
        records = list(records)
        return self._append(
            "quarantine", quarantine_table(records), [r.exchange for r in records], now
        )

    def append_alerts(self, alerts, now: float) -> Commit | None:
        alerts = list(alerts)
        return self._append("alerts", alerts_table(alerts), [""] * len(alerts), now)

    def append_oracle_prices(self, prices, now: float) -> Commit | None:
        prices = list(prices)
        return self._append("oracle_prices", oracle_table(prices), [""] * len(prices), now)

    def append_records(self, table: str, records, now: float) -> Commit | None:
        """Buffer records of models.records (analytics: ``volatility``, ``surface_fits``,
        ``premium_quotes``, ``policy_risk``; hedging: ``position_states``, ``hedge_decisions``,
        ``order_decisions``, ``loan_updates``, ``backtest_trades``/``desk_trades``,
        ``backtest_equity``/``desk_equity``)."""
        if table not in _RECORD_TABLES:
            raise ValueError(f"not an analytics table: {table!r}")
        records = list(records)
        if not records:
            return None
        return self._append(table, records_table(records), [""] * len(records), now)

    # ------------------------------------------------------------------ flushing
    @property
    def buffered_rows(self) -> int:
        return self._buffered_rows

    def maybe_flush(self, now: float) -> Commit | None:
        """Flush if the oldest buffered row has waited ``flush_interval_s`` or more."""
        if self._oldest_ts is not None and now - self._oldest_ts >= self.flush_interval_s:
            return self.flush()
        return None

    def flush(self, precheck: bool = False) -> Commit | None:
        """Write every buffered row in one transaction; return what it committed."""
        if not self._buffered_rows:
            if self._ingest:
                self._write_ingest()
                self._ingest.clear()
            return None
        self.con.execute("BEGIN TRANSACTION")
        refused: dict[str, Counter] = {}
        try:
            for table, parts in self._buffers.items():
                self.con.register("_hedgeflow_buffer", pa.concat_tables(parts))
                if table in _UNIQUE_KEYS:
                    refused[table] = self._insert_unique(table, precheck)
                else:
                    # Table names come from this module's fixed set, never from user text.
                    self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _hedgeflow_buffer")
                self.con.unregister("_hedgeflow_buffer")
            self._write_ingest()
            self.con.execute("COMMIT")
        except _RefusedRows:
            self.con.execute("ROLLBACK")
            self.con.unregister("_hedgeflow_buffer")
            return self.flush(precheck=True)
        except Exception:
            # Roll back first: in an aborted transaction even unregister fails and would hide the
            # real error. The rows stay buffered; the error is the caller's to see.
            self.con.execute("ROLLBACK")
            self.con.unregister("_hedgeflow_buffer")
            raise
        rows = {}
        for table, counts in self._pending.items():
            stored = counts - refused.get(table, Counter())
            if stored:
                rows[table] = stored
        commit = Commit(rows=rows, refused={t: c for t, c in refused.items() if c})
        self._buffers.clear()
        self._pending.clear()
        self._ingest.clear()
        self._buffered_rows = 0
        self._oldest_ts = None
        return commit

    def _write_ingest(self) -> None:
        days = sorted({(e, d) for e, d, _ in self._ingest})
        if not days:
            return
        self.con.executemany(
            """
            INSERT INTO ingest_stats VALUES (?, ?, ?, ?)
            ON CONFLICT (exchange, day) DO UPDATE SET
                messages = messages + excluded.messages, raw_bytes = raw_bytes + excluded.raw_bytes
            """,
            [(e, d, self._ingest[(e, d, "messages")], self._ingest[(e, d, "raw_bytes")])
             for e, d in days],
        )

    def _insert_unique(self, table: str, precheck: bool) -> Counter:
        """Insert the buffer into a table with a primary key; return the rows refused as already
        stored (or repeated within the buffer), per exchange.

        The usual case is one INSERT OR IGNORE that takes every row. When the database refuses
        some, the transaction is redone with ``precheck``: the buffer is first compared with the
        table (a join over the whole key, too costly to pay on every flush) to say whose rows were
        refused.
        """
        refused: Counter = Counter()
        keys = _UNIQUE_KEYS[table]
        if precheck:
            on = " AND ".join(f"t.{k} = b.{k}" for k in keys)
            partition = ", ".join(keys)
            rows = self.con.execute(
                f"""
                WITH b AS (
                    SELECT *, row_number() OVER (PARTITION BY {partition}) AS copy
                    FROM _hedgeflow_buffer
                )
                SELECT b.exchange, count(*) FROM b
                WHERE b.copy > 1 OR EXISTS (SELECT 1 FROM {table} t WHERE {on})
                GROUP BY b.exchange
                """
            ).fetchall()
            refused.update({exchange: int(n) for exchange, n in rows})
        n = self.con.execute("SELECT count(*) FROM _hedgeflow_buffer").fetchone()[0]
        inserted = self.con.execute(
            f"INSERT OR IGNORE INTO {table} BY NAME SELECT * FROM _hedgeflow_buffer"
        ).fetchone()[0]
        if n - inserted != sum(refused.values()):
            if precheck:
                raise RuntimeError(f"{table}: {n - inserted} rows refused, {sum(refused.values())} expected")
            raise _RefusedRows
        return refused

    def close(self) -> Commit | None:
        """Flush what is left, checkpoint, and close the file."""
        commit = self.flush()
        self.con.execute("CHECKPOINT")
        self.con.close()
        return commit
