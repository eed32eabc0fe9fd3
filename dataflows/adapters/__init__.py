"""Exchange adapters: raw wire messages in, normalized columnar batches and a verdict per message out.

``normalize(batch)`` dispatches on ``batch.exchange``. An exchange without an adapter has all its
messages quarantined with that reason, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable

from dataflows.adapters import binance
from models.records import NormalizedBatch, QuarantineRecord, QuoteBatch, RawBatch, TradeBatch

ADAPTERS: dict[str, Callable[[RawBatch], NormalizedBatch]] = {
    binance.EXCHANGE: binance.normalize,
}


def normalize(batch: RawBatch) -> NormalizedBatch:
    adapter = ADAPTERS.get(batch.exchange)
    if adapter is not None:
        return adapter(batch)
    reason = f"no adapter for exchange {batch.exchange!r} (known: {', '.join(sorted(ADAPTERS))})"
    return NormalizedBatch(
        exchange=batch.exchange,
        n_messages=len(batch),
        trades=TradeBatch.empty(),
        quotes=QuoteBatch.empty(),
        quarantine=tuple(
            QuarantineRecord(batch.exchange, float(ts), reason, text)
            for ts, text in zip(batch.receive_ts, batch.messages)
        ),
        n_control=0,
        n_ignored=0,
    )
