"""Message accounting: every message read is stored, quarantined, control or ignored.

Counts per exchange. ``messages``, ``control`` and ``ignored`` are known when a batch is
normalized; ``trades``, ``quotes`` and ``quarantined`` only when the writer's transaction commits,
so until a flush some messages are ``pending``. After the final flush ``pending`` is zero and

    messages == trades + quotes + option_tickers + book_updates + control + ignored + quarantined

which ``reconciles()`` checks and the tests assert.
"""

from __future__ import annotations

from collections import defaultdict

from models.records import NormalizedBatch
from storage.writer import Commit

FIELDS = (
    "messages", "trades", "quotes", "option_tickers", "book_updates",
    "control", "ignored", "quarantined", "gaps",
)
_STORED_TABLES = {"trades": "trades", "quotes": "quotes", "quarantine": "quarantined"}


class Ledger:
    def __init__(self) -> None:
        self._counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(FIELDS, 0))

    def on_normalized(self, batch: NormalizedBatch) -> None:
        c = self._counts[batch.exchange]
        c["messages"] += batch.n_messages
        c["control"] += batch.n_control
        c["ignored"] += batch.n_ignored

    def on_commit(self, commit: Commit) -> None:
        for table, per_exchange in commit.rows.items():
            key = _STORED_TABLES.get(table)
            if key is None:
                continue
            for exchange, rows in per_exchange.items():
                self._counts[exchange][key] += rows

    def pending(self, exchange: str) -> int:
        c = self._counts[exchange]
        return c["messages"] - sum(c[k] for k in FIELDS if k not in ("messages", "gaps"))

    def reconciles(self) -> bool:
        return all(self.pending(e) == 0 for e in self._counts)

    def snapshot(self) -> dict:
        """``{"exchanges": {name: counts}, "total": counts}`` with ``pending`` per exchange."""
        exchanges = {
            e: {**c, "pending": self.pending(e)} for e, c in sorted(self._counts.items())
        }
        total = {k: sum(c[k] for c in exchanges.values()) for k in (*FIELDS, "pending")}
        return {"exchanges": exchanges, "total": total}
