"""Node functions the graph builder wires: thin adapters from batches to the pure models."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from models.dedup import RecentKeys
from models.records import NormalizedBatch, QuarantineRecord
from models.validation import plausible_time, rejections

_ORDER_EXEMPT = ("book_updates",)


class Validator:
    """Apply the tick validation rules and refuse repeated trades, message by message.

    A message is one verdict: if any row it produced breaks a rule, the whole message moves to
    ``quarantine`` with the first reason (its raw text is kept there, so nothing is lost and no
    message is half-stored). A trade already received (same exchange, instrument and trade id) is
    refused the same way, with the reason "duplicate trade".

    A tick whose event time is earlier than the newest tick of the same instrument already seen is
    out of order: with ``out_of_order="flag"`` it is kept with its ``out_of_order`` column set, with
    "quarantine" its message is refused. Book updates are exempt (Kraken dates each level of a
    snapshot by its own, older time).
    """

    def __init__(self, dedup_capacity: int = 1_000_000, out_of_order: str = "flag") -> None:
        if out_of_order not in ("flag", "quarantine"):
            raise ValueError("out_of_order must be 'flag' or 'quarantine'")
        self.recent_trades = RecentKeys(dedup_capacity)
        self.out_of_order = out_of_order
        # (table, exchange, instrument) -> newest event time seen
        self._newest: dict[tuple[str, str, str], float] = {}

    def __call__(self, batch: NormalizedBatch) -> NormalizedBatch:
        batch = self._plausible_gaps(batch)
        data = batch.data()
        if not data:
            return batch
        bad: dict[int, tuple[float, str, str]] = {}  # msg_index -> (receive_ts, reason, raw)

        def refuse(b, mask: np.ndarray, reasons) -> None:
            for i in np.flatnonzero(mask):
                m = int(b.msg_index[i])
                if m not in bad:
                    bad[m] = (float(b.receive_ts[i]), str(reasons[i]), b.raw[i])

        for name, b in data.items():
            reasons = rejections(name, b)
            refuse(b, reasons != "", [f"invalid: {r}" for r in reasons])

        trades = data.get("trades")
        if trades is not None:
            keys = list(zip(trades.exchange.tolist(), trades.instrument.tolist(), trades.trade_id.tolist()))
            kept = ~np.isin(trades.msg_index, list(bad)) if bad else np.ones(len(trades), bool)
            duplicate = self.recent_trades.seen(k for k, ok in zip(keys, kept) if ok)
            dup_mask = np.zeros(len(trades), dtype=bool)
            dup_mask[np.flatnonzero(kept)] = duplicate
            refuse(trades, dup_mask, ["duplicate trade: already received"] * len(trades))
            still_kept = ~np.isin(trades.msg_index, list(bad)) if bad else kept
            self.recent_trades.add(k for k, ok in zip(keys, still_kept) if ok)

        changes: dict = {}
        for name, b in data.items():
            if name in _ORDER_EXEMPT:
                continue
            late = self._late(name, b, bad)
            if not late.any():
                continue
            if self.out_of_order == "quarantine":
                refuse(b, late, ["out of order: event time before the instrument's previous tick"] * len(b))
            else:
                changes[name] = replace(b, out_of_order=b.out_of_order | late)

        if not bad:
            return replace(batch, **changes) if changes else batch
        data = {**data, **changes}
        refused = np.fromiter(bad, dtype=np.int64)
        changes = {
            name: b.take(~np.isin(b.msg_index, refused)) for name, b in data.items()
        }
        quarantine = tuple(
            QuarantineRecord(batch.exchange, ts, reason, raw)
            for ts, reason, raw in (bad[m] for m in sorted(bad))
        )
        return replace(batch, quarantine=batch.quarantine + quarantine, **changes)


    def _late(self, table: str, b, bad: dict) -> np.ndarray:
        """Rows (of messages not already refused) older than their instrument's newest tick; the
        newest time per instrument moves on with the rows that are in order."""
        late = np.zeros(len(b), dtype=bool)
        refused = set(bad)
        names = b.index_name if table == "index_prices" else b.instrument
        newest = self._newest
        for i, (exchange, instrument, ts, m) in enumerate(
            zip(b.exchange.tolist(), names.tolist(), b.event_ts.tolist(), b.msg_index.tolist())
        ):
            if m in refused:
                continue
            key = (table, exchange, instrument)
            previous = newest.get(key)
            if previous is not None and ts < previous:
                late[i] = True
            else:
                newest[key] = ts
        return late

    @staticmethod
    def _plausible_gaps(batch: NormalizedBatch) -> NormalizedBatch:
        # A gap is dated by the message that revealed it; a message with an impossible time (and
        # so refused) cannot date a gap, and would fail the gaps table's NOT NULL start.
        if all(plausible_time(g.start_ts) for g in batch.gaps):
            return batch
        return replace(batch, gaps=tuple(g for g in batch.gaps if plausible_time(g.start_ts)))


def validate(batch: NormalizedBatch) -> NormalizedBatch:
    """Validate with a fresh validator (no memory of earlier trades): for tests and one-offs."""
    return Validator()(batch)


