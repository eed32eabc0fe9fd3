"""SQL of the chain terminal: submissions, contract events read back, the event-sync cursor.

Tables (created by :func:`create_chain_schema`, idempotent; ``storage.schema.create_schema`` calls it):

``chain_submissions``
    One row per transaction the terminal prepares: an oracle price (``kind = 'submit'``) or an
    administrative call (``'pause'``, ``'unpause'``). The row is inserted *before* anything is
    sent (``queued`` at the decision, then ``pending`` with its nonce, hash and signed bytes once
    signed, still before the send) and updated after, so a restart finds every transaction that
    may be on the wire. A replacement (same nonce, higher fees) is a new row whose ``replaces``
    names the row it replaces. ``status``:

    - ``queued``: decided, not signed yet;
    - ``pending``: signed (``tx_hash``, ``nonce``, ``raw_tx``), sent or about to be; followed;
    - ``confirmed``: mined with status 1 and the price stored (``PriceUpdated``);
    - ``tripped``: mined with status 1 but the Oracle's deviation breaker refused the price
      (``BreakerTripped``; ``reason`` gives the deviation);
    - ``reverted``: mined with status 0, or refused by the node as reverting; ``reason`` is the
      revert reason (``oracle: out of bounds``); never retried;
    - ``replaced``: another transaction with the same nonce was mined (a replacement, or the
      original after a replacement was sent);
    - ``superseded``: a newer price of the same asset took its place before it was signed;
    - ``cancelled``: dropped unsent by an emergency pause;
    - ``failed``: given up unsent (no funds, retries exhausted, chain gone); ``reason`` says why.

    ``raw_tx`` is the signed transaction (public once broadcast), kept so a restart can
    re-broadcast exactly the same transaction (same nonce and hash: at most once). The signing
    key is never stored. Times are UTC; ``ts`` is the observation time sent on chain.

``chain_events``
    Contract events read back from the chain (state synchronisation): one row per log, unique on
    (chain_id, contract, tx_hash, log_index), with ``args`` as JSON text (bytes as 0x-hex,
    ``asset`` decoded to its symbol).

``chain_sync``
    The last block whose events were read, per (chain_id, contract).

Every statement here uses bound parameters; column names in updates come from a fixed set.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

CHAIN_TABLES: dict[str, str] = {
    "chain_submissions": """
        CREATE TABLE IF NOT EXISTS chain_submissions (
            id               VARCHAR PRIMARY KEY,
            kind             VARCHAR NOT NULL,        -- submit | pause | unpause
            chain_id         BIGINT NOT NULL,
            contract         VARCHAR NOT NULL,        -- the Oracle's address
            sender           VARCHAR NOT NULL,
            asset            VARCHAR,                 -- 'BTC' (NULL for admin calls)
            price_micro      BIGINT,                  -- USD x 10**6
            confidence_micro BIGINT,                  -- confidence score x 10**6
            n_sources        INTEGER,
            ts               TIMESTAMPTZ,             -- observation time sent on chain (UTC)
            tx_hash          VARCHAR,
            nonce            BIGINT,
            max_fee_per_gas  BIGINT,
            priority_fee_per_gas BIGINT,
            gas_limit        BIGINT,
            raw_tx           BLOB,                    -- signed transaction (public data)
            replaces         VARCHAR,                 -- id of the row this one replaces
            status           VARCHAR NOT NULL,
            reason           VARCHAR NOT NULL DEFAULT '',
            attempts         INTEGER NOT NULL DEFAULT 0,
            block_number     BIGINT,
            gas_used         BIGINT,
            created_at       TIMESTAMPTZ NOT NULL,
            sent_at          TIMESTAMPTZ,
            updated_at       TIMESTAMPTZ NOT NULL
        )""",
    "chain_events": """
        CREATE TABLE IF NOT EXISTS chain_events (
            chain_id     BIGINT NOT NULL,
            contract     VARCHAR NOT NULL,
            block_number BIGINT NOT NULL,
            block_ts     TIMESTAMPTZ,
            tx_hash      VARCHAR NOT NULL,
            log_index    INTEGER NOT NULL,
            event        VARCHAR NOT NULL,
            asset        VARCHAR,
            args         VARCHAR NOT NULL,            -- JSON object of the event's arguments
            synced_at    TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (chain_id, contract, tx_hash, log_index)
        )""",
    "chain_sync": """
        CREATE TABLE IF NOT EXISTS chain_sync (
            chain_id     BIGINT NOT NULL,
            contract     VARCHAR NOT NULL,
            last_block   BIGINT NOT NULL,
            updated_at   TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (chain_id, contract)
        )""",
}

SUBMISSION_COLUMNS = (
    "id", "kind", "chain_id", "contract", "sender", "asset", "price_micro", "confidence_micro",
    "n_sources", "ts", "tx_hash", "nonce", "max_fee_per_gas", "priority_fee_per_gas", "gas_limit",
    "raw_tx", "replaces", "status", "reason", "attempts", "block_number", "gas_used", "created_at",
    "sent_at", "updated_at",
)
_UPDATABLE = frozenset(SUBMISSION_COLUMNS) - {"id", "created_at"}
_TIME_COLUMNS = frozenset({"ts", "created_at", "sent_at", "updated_at"})

OPEN_STATUSES = ("queued", "pending")
FINAL_STATUSES = ("confirmed", "tripped", "reverted", "replaced", "superseded", "cancelled", "failed")

_EVENT_SCHEMA = pa.schema([
    ("chain_id", pa.int64()), ("contract", pa.string()), ("block_number", pa.int64()),
    ("block_ts", pa.timestamp("us", tz="UTC")), ("tx_hash", pa.string()), ("log_index", pa.int32()),
    ("event", pa.string()), ("asset", pa.string()), ("args", pa.string()),
    ("synced_at", pa.timestamp("us", tz="UTC")),
])


def create_chain_schema(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in CHAIN_TABLES.values():
        con.execute(ddl).fetchall()


def utc(epoch_s: float | None) -> datetime | None:
    """Epoch seconds -> aware UTC datetime (what the TIMESTAMPTZ parameters are bound as)."""
    return None if epoch_s is None else datetime.fromtimestamp(float(epoch_s), tz=UTC)


def _param(column: str, value: Any) -> Any:
    if column in _TIME_COLUMNS and isinstance(value, (int, float)):
        return utc(value)
    if column == "raw_tx" and isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return value


class ChainStore:
    """The chain terminal's rows in DuckDB, over one connection (or cursor) of its own.

    Pass ``writer.con.cursor()`` to share the graph's database file: a cursor is a separate
    connection, so these single-row autocommitted statements never join the writer's
    transactions. Close this store before the writer closes its connection.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self._exec("SET TimeZone = 'UTC'")
        create_chain_schema(self.con)

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one statement to completion (DuckDB keeps an unfinished result otherwise)."""
        return self.con.execute(sql, list(params)).fetchall()

    # ------------------------------------------------------------------ submissions
    def insert_submission(self, row: Mapping[str, Any]) -> None:
        unknown = set(row) - set(SUBMISSION_COLUMNS)
        if unknown:
            raise ValueError(f"unknown chain_submissions columns: {sorted(unknown)}")
        cols = [c for c in SUBMISSION_COLUMNS if c in row]
        placeholders = ", ".join("?" for _ in cols)
        self._exec(
            f"INSERT INTO chain_submissions ({', '.join(cols)}) VALUES ({placeholders})",
            [_param(c, row[c]) for c in cols],
        )

    def update_submission(self, submission_id: str, /, **fields: Any) -> None:
        if not fields:
            return
        bad = set(fields) - _UPDATABLE
        if bad:
            raise ValueError(f"cannot update chain_submissions columns: {sorted(bad)}")
        cols = sorted(fields)
        sets = ", ".join(f"{c} = ?" for c in cols)
        self._exec(
            f"UPDATE chain_submissions SET {sets} WHERE id = ?",
            [*(_param(c, fields[c]) for c in cols), submission_id],
        )

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.con.execute(sql, list(params))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def submission(self, id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM chain_submissions WHERE id = ?", [id])
        return rows[0] if rows else None

    def submissions(self, *, chain_id: int | None = None, contract: str | None = None,
                    status: str | Iterable[str] | None = None, kind: str | None = None,
                    ) -> list[dict[str, Any]]:
        """Rows in creation order, optionally filtered."""
        where, params = [], []
        if chain_id is not None:
            where.append("chain_id = ?")
            params.append(chain_id)
        if contract is not None:
            where.append("contract = ?")
            params.append(contract)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            where.append("list_contains(?, status)")
            params.append(statuses)
        sql = "SELECT * FROM chain_submissions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self._rows(sql + " ORDER BY created_at, nonce NULLS LAST, id", params)

    def open_submissions(self, chain_id: int, contract: str) -> list[dict[str, Any]]:
        """Queued and pending rows of this chain and contract, pending first in nonce order."""
        return self._rows(
            """SELECT * FROM chain_submissions
               WHERE chain_id = ? AND contract = ? AND list_contains(?, status)
               ORDER BY status = 'queued', nonce NULLS LAST, created_at, id""",
            [chain_id, contract, list(OPEN_STATUSES)],
        )

    def abandon_other_chains(self, chain_id: int, contract: str, now: float, reason: str) -> int:
        """Fail the open rows of any other chain or contract (e.g. a previous process's embedded
        chain, which no longer exists); returns how many."""
        n = self._exec(
            """SELECT count(*) FROM chain_submissions
               WHERE list_contains(?, status) AND NOT (chain_id = ? AND contract = ?)""",
            [list(OPEN_STATUSES), chain_id, contract],
        )[0][0]
        if n:
            self._exec(
                """UPDATE chain_submissions SET status = 'failed', reason = ?, updated_at = ?
                   WHERE list_contains(?, status) AND NOT (chain_id = ? AND contract = ?)""",
                [reason, utc(now), list(OPEN_STATUSES), chain_id, contract],
            )
        return int(n)

    def status_counts(self, chain_id: int | None = None, contract: str | None = None) -> dict[str, int]:
        sql = "SELECT status, count(*) FROM chain_submissions"
        params: list[Any] = []
        if chain_id is not None and contract is not None:
            sql += " WHERE chain_id = ? AND contract = ?"
            params = [chain_id, contract]
        return {s: int(n) for s, n in self.con.execute(sql + " GROUP BY status", params).fetchall()}

    # ------------------------------------------------------------------ events
    def insert_events(self, rows: Sequence[Mapping[str, Any]], now: float) -> int:
        """Store decoded events (keys of ``chain_events``; ``args`` a dict); repeats are ignored.
        Returns the number of new rows."""
        if not rows:
            return 0
        synced = utc(now)
        table = pa.Table.from_pylist(
            [{
                "chain_id": int(r["chain_id"]), "contract": r["contract"],
                "block_number": int(r["block_number"]), "block_ts": utc(r.get("block_ts")),
                "tx_hash": r["tx_hash"], "log_index": int(r["log_index"]), "event": r["event"],
                "asset": r.get("asset"), "args": json.dumps(r["args"], sort_keys=True, default=str),
                "synced_at": synced,
            } for r in rows],
            schema=_EVENT_SCHEMA,
        )
        self.con.register("_hedgeflow_chain_events", table)
        try:
            inserted = self._exec(
                "INSERT OR IGNORE INTO chain_events BY NAME SELECT * FROM _hedgeflow_chain_events"
            )[0][0]
        finally:
            self.con.unregister("_hedgeflow_chain_events")
        return int(inserted)

    def events(self, chain_id: int | None = None, contract: str | None = None,
               event: str | None = None) -> list[dict[str, Any]]:
        where, params = [], []
        for col, val in (("chain_id", chain_id), ("contract", contract), ("event", event)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        sql = "SELECT * FROM chain_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._rows(sql + " ORDER BY block_number, log_index", params)
        for r in rows:
            r["args"] = json.loads(r["args"])
        return rows

    def sync_cursor(self, chain_id: int, contract: str) -> int | None:
        rows = self._exec(
            "SELECT last_block FROM chain_sync WHERE chain_id = ? AND contract = ?",
            [chain_id, contract],
        )
        return int(rows[0][0]) if rows else None

    def set_sync_cursor(self, chain_id: int, contract: str, last_block: int, now: float) -> None:
        self._exec(
            """INSERT INTO chain_sync VALUES (?, ?, ?, ?)
               ON CONFLICT (chain_id, contract) DO UPDATE SET
                   last_block = excluded.last_block, updated_at = excluded.updated_at""",
            [chain_id, contract, int(last_block), utc(now)],
        )

    def close(self) -> None:
        self.con.close()


def latest_chain_prices(con: duckdb.DuckDBPyConnection, chain_id: int | None = None,
                        contract: str | None = None) -> list[dict[str, Any]]:
    """The last price each asset has on chain, from the events read back (for views): asset,
    price_micro, ts (observation, epoch s), round_id, block_number."""
    where, params = ["event = 'PriceUpdated'"], []
    if chain_id is not None:
        where.append("chain_id = ?")
        params.append(chain_id)
    if contract is not None:
        where.append("contract = ?")
        params.append(contract)
    cur = con.execute(
        f"""SELECT asset,
                   CAST(json_extract_string(args, '$.price') AS HUGEINT) AS price_micro,
                   CAST(json_extract_string(args, '$.ts') AS BIGINT) AS ts,
                   CAST(json_extract_string(args, '$.round_id') AS BIGINT) AS round_id,
                   block_number
            FROM chain_events WHERE {' AND '.join(where)}
            QUALIFY row_number() OVER (PARTITION BY chain_id, contract, asset
                                       ORDER BY block_number DESC, log_index DESC) = 1
            ORDER BY asset""",
        params,
    )
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]
