"""Node functions the graph builder wires: thin adapters from batches to the pure models."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from models.dedup import RecentKeys
from models.records import NormalizedBatch, QuarantineRecord
from models.validation import plausible_time, rejections


class Validator:
    """Apply the tick validation rules and refuse repeated trades, message by message.

    A message is one verdict: if any row it produced breaks a rule, the whole message moves to
    ``quarantine`` with the first reason (its raw text is kept there, so nothing is lost and no
    message is half-stored). A trade already received (same exchange, instrument and trade id) is
    refused the same way, with the reason "duplicate trade".
    """

    def __init__(self, dedup_capacity: int = 1_000_000) -> None:
        self.recent_trades = RecentKeys(dedup_capacity)

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

        if not bad:
            return batch
        refused = np.fromiter(bad, dtype=np.int64)
        changes = {
            name: b.take(~np.isin(b.msg_index, refused)) for name, b in data.items()
        }
        quarantine = tuple(
            QuarantineRecord(batch.exchange, ts, reason, raw)
            for ts, reason, raw in (bad[m] for m in sorted(bad))
        )
        return replace(batch, quarantine=batch.quarantine + quarantine, **changes)


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


