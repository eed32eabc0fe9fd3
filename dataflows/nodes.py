"""Node functions the graph builder wires: thin adapters from batches to the pure models."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from models.records import NormalizedBatch, QuarantineRecord
from models.validation import quote_rejections, trade_rejections


def _rejected(batch, reasons: np.ndarray, exchange: str) -> list[QuarantineRecord]:
    bad = np.flatnonzero(reasons != "")
    return [
        QuarantineRecord(exchange, float(batch.receive_ts[i]), f"invalid: {reasons[i]}", batch.raw[i])
        for i in bad
    ]


def validate(batch: NormalizedBatch) -> NormalizedBatch:
    """Apply the tick validation rules; rows that fail move to ``quarantine`` with the reason."""
    q_reasons = quote_rejections(batch.quotes)
    t_reasons = trade_rejections(batch.trades)
    if not (q_reasons != "").any() and not (t_reasons != "").any():
        return batch
    rejected = _rejected(batch.quotes, q_reasons, batch.exchange) + _rejected(
        batch.trades, t_reasons, batch.exchange
    )
    return replace(
        batch,
        quotes=batch.quotes.take(q_reasons == ""),
        trades=batch.trades.take(t_reasons == ""),
        quarantine=batch.quarantine + tuple(rejected),
    )
