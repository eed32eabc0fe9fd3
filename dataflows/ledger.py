"""Message accounting: every message read has one verdict, and every row made is committed.

Per exchange:

- ``messages``: messages read; each has exactly one verdict: ``data`` (it produced records),
  ``control`` (acks, heartbeats, status), ``ignored`` (channels hedgeflow does not use) or
  ``quarantined`` (refused with a reason, kept raw in the ``quarantine`` table). Verdicts are final
  once a batch is validated, so ``messages == data + control + ignored + quarantined`` always.
- ``trades``, ``quotes``, ``option_tickers``, ``book_updates``, ``funding``, ``index_prices``,
  ``gaps``: rows committed to those tables. One message may make many rows (a Coinbase snapshot,
  a Deribit trades list), so these count records, not messages. They grow only when the writer's
  transaction commits.
- ``out_of_order``: ticks stored with their ``out_of_order`` flag set (event time earlier than
  their instrument's previous tick).
- ``duplicates``: trades the database refused because they were already stored (a trade
  repeated after a restart, beyond the validator's memory of recent trades).
- ``pending``: rows made (including quarantine and gap rows) but neither committed nor refused.
  After the final flush it is zero, and ``reconciles()`` checks both conditions.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from models.records import DATA_BATCHES, NormalizedBatch
from storage.writer import Commit

VERDICTS = ("data", "control", "ignored", "quarantined")
ROW_TABLES = (*DATA_BATCHES, "gaps")
FIELDS = ("messages", *VERDICTS, *ROW_TABLES, "duplicates", "out_of_order")
# Tables whose committed rows the ledger counts, and the field each counts under.
_COMMITTED = {**{t: t for t in ROW_TABLES}, "quarantine": "quarantined_rows"}


class Ledger:
    def __init__(self) -> None:
        self._counts: dict[str, Counter] = defaultdict(Counter)
        self._made: dict[str, Counter] = defaultdict(Counter)
        self._committed: dict[str, Counter] = defaultdict(Counter)
        self._refused: dict[str, Counter] = defaultdict(Counter)

    def on_validated(self, batch: NormalizedBatch) -> None:
        """Count the verdicts of a validated batch and the rows it hands to the writer."""
        c = self._counts[batch.exchange]
        quarantined = len(batch.quarantine)
        c["messages"] += batch.n_messages
        c["control"] += batch.n_control
        c["ignored"] += batch.n_ignored
        c["quarantined"] += quarantined
        c["data"] += batch.n_messages - batch.n_control - batch.n_ignored - quarantined
        made = self._made[batch.exchange]
        for table, rows in batch.data().items():
            made[table] += len(rows)
            c["out_of_order"] += int(rows.out_of_order.sum())
        made["quarantined_rows"] += quarantined

    def on_gaps(self, gaps) -> None:
        for g in gaps:
            self._made[g.exchange]["gaps"] += 1

    def on_commit(self, commit: Commit) -> None:
        for table, per_exchange in commit.refused.items():
            for exchange, rows in per_exchange.items():
                self._refused[exchange][table] += rows
        for table, per_exchange in commit.rows.items():
            key = _COMMITTED.get(table)
            if key is None:
                continue  # oracle prices: not an exchange's rows
            for exchange, rows in per_exchange.items():
                self._committed[exchange][key] += rows

    def pending(self, exchange: str) -> int:
        made = self._made.get(exchange, Counter())
        done = self._committed.get(exchange, Counter())
        refused = self._refused.get(exchange, Counter())
        return sum(made[k] - done[k] - refused[k] for k in made)

    def reconciles(self) -> bool:
        for exchange, c in self._counts.items():
            if c["messages"] != sum(c[v] for v in VERDICTS) or self.pending(exchange):
                return False
        return all(self.pending(e) == 0 for e in self._made)

    def snapshot(self) -> dict:
        """``{"exchanges": {name: counts}, "total": counts}``; counts have every field of
        ``FIELDS`` plus ``pending``."""
        exchanges = {}
        for e in sorted(set(self._counts) | set(self._made)):
            c = self._counts[e]
            row = {k: c[k] for k in ("messages", *VERDICTS, "out_of_order")}
            row.update({t: self._committed[e][t] for t in ROW_TABLES})
            row["duplicates"] = self._refused[e]["trades"]
            row["pending"] = self.pending(e)
            exchanges[e] = row
        keys = (*FIELDS, "pending")
        total = {k: sum(r[k] for r in exchanges.values()) for k in keys}
        return {"exchanges": exchanges, "total": total}
