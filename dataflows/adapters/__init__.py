"""Exchange adapters: raw wire messages in, normalized columnar batches and a verdict per message out.

Adapters keep state (the last sequence number per book), so each graph makes its own set with
``AdapterSet()``. ``AdapterSet.normalize(batch)`` dispatches on ``batch.exchange``; an exchange
without an adapter has all its messages quarantined with that reason, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable

from dataflows.adapters.base import BatchBuilder, Malformed
from dataflows.adapters.binance import BinanceAdapter
from dataflows.adapters.bybit import BybitAdapter
from dataflows.adapters.coinbase import CoinbaseAdapter
from dataflows.adapters.deribit import DeribitAdapter
from dataflows.adapters.kraken import KrakenAdapter
from models.records import NormalizedBatch, RawBatch

ADAPTER_FACTORIES: dict[str, Callable[[], object]] = {
    adapter.exchange: adapter
    for adapter in (BinanceAdapter, CoinbaseAdapter, KrakenAdapter, DeribitAdapter, BybitAdapter)
}


class AdapterSet:
    def __init__(self) -> None:
        self._adapters = {name: factory() for name, factory in ADAPTER_FACTORIES.items()}

    def __getitem__(self, exchange: str):
        return self._adapters[exchange]

    def normalize(self, batch: RawBatch) -> NormalizedBatch:
        adapter = self._adapters.get(batch.exchange)
        if adapter is not None:
            return adapter.normalize(batch)
        b = BatchBuilder(batch.exchange)
        known = ", ".join(sorted(self._adapters))
        for receive_ts, raw in zip(batch.receive_ts.tolist(), batch.messages):
            with b.message(receive_ts, raw):
                raise Malformed(f"no adapter for this exchange (known: {known})")
        return b.build()


def normalize(batch: RawBatch) -> NormalizedBatch:
    """Normalize with a fresh, stateless-at-start set of adapters (tests, one-off use)."""
    return AdapterSet().normalize(batch)
