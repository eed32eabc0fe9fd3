"""SQL of the audit table: every operator action of the admin page and every refused attempt.

One row per attempt: when (``ts``, UTC), who (``user``, "" when nobody was logged in), what
(``action``, ``target``), the particulars (``detail``) and how it ended (``outcome``). Rows are
only ever inserted, one autocommitted statement each, so an action is on disk before the page
says it happened. Pass ``writer.con.cursor()`` (a separate connection to the graph's file) so the
insert never joins the writer's batch transactions. Passwords never reach this table.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

import duckdb

__all__ = ["AuditRow", "insert_audit", "recent_audit"]


class AuditRow(NamedTuple):
    """One audit record; ``ts_s`` in epoch seconds (UTC)."""

    ts_s: float
    user: str
    action: str
    target: str
    detail: str
    outcome: str


def insert_audit(con: duckdb.DuckDBPyConnection, row: AuditRow) -> None:
    """Insert ``row`` (autocommitted when ``con`` is not inside a transaction)."""
    con.execute(
        'INSERT INTO audit (ts, "user", action, target, detail, outcome) VALUES (?, ?, ?, ?, ?, ?)',
        [datetime.fromtimestamp(row.ts_s, tz=UTC), row.user, row.action, row.target, row.detail,
         row.outcome],
    ).fetchall()


def recent_audit(con: duckdb.DuckDBPyConnection, limit: int = 50, *,
                 action: str | None = None) -> list[AuditRow]:
    """The newest ``limit`` rows (of ``action`` when given), newest first (rows of the same
    instant in the reverse of their insertion order)."""
    rows = con.execute(
        'SELECT epoch_us(ts) / 1e6, "user", action, target, detail, outcome FROM audit '
        "WHERE CAST(? AS VARCHAR) IS NULL OR action = CAST(? AS VARCHAR) "
        "ORDER BY ts DESC, rowid DESC LIMIT ?",  # rowid: the insertion order of ties
        [action, action, max(0, int(limit))],
    ).fetchall()
    return [AuditRow(float(r[0]), *r[1:]) for r in rows]
