"""The live option book: the newest ticker of every listed option, and each asset's chain with the
bid, ask and mid implied vols hedgeflow reads from it (for the volatility page's smiles)."""

from __future__ import annotations

import numpy as np

from models.option_book import ChainSnapshot, OptionBook


class OptionQuotesView:
    """The newest ticker per option instrument (a ``models.option_book.OptionBook``, fed by the
    ``option_tickers`` stream) and, on demand, an asset's out-of-the-money chain as of its newest
    ticker: ``ChainSnapshot`` columns with ``bid_vol`` / ``ask_vol`` / ``mid_vol`` (annualized
    fractions, NaN where a side is missing or not invertible), each option's ``forward_usd`` and
    ``expiry_utc`` (epoch s). Tickers older than ``max_age_s`` and options expiring within
    ``min_expiry_s`` are left out, as the surface refit leaves them out.

    The snapshot is computed once per asset and book version, whatever the number of sessions
    asking for it."""

    def __init__(self, *, max_age_s: float = 300.0, min_expiry_s: float = 3_600.0) -> None:
        self.max_age_s = max_age_s
        self.min_expiry_s = min_expiry_s
        self._book = OptionBook()
        self._newest_ts: dict[str, float] = {}
        self._snapshots: dict[str, tuple[int, ChainSnapshot]] = {}
        self.version = 0  # bumped on every batch; sessions compare to skip work

    def on_tickers(self, batch) -> None:
        if not len(batch.instrument):
            return
        self._book.update(batch)
        assets = np.asarray(batch.asset, dtype=object)
        event_ts = np.asarray(batch.event_ts, dtype=np.float64)
        for asset in set(assets.tolist()):
            newest = float(np.max(event_ts[assets == asset]))
            if newest > self._newest_ts.get(asset, float("-inf")):
                self._newest_ts[asset] = newest
        self.version += 1

    @property
    def assets(self) -> list[str]:
        return self._book.assets

    def newest_ts(self, asset: str) -> float | None:
        """The event time (epoch s) of ``asset``'s newest ticker, or None before any."""
        return self._newest_ts.get(asset)

    def snapshot(self, asset: str) -> ChainSnapshot | None:
        """``asset``'s chain as of its newest ticker (None before any ticker of it)."""
        now_s = self._newest_ts.get(asset)
        if now_s is None:
            return None
        cached = self._snapshots.get(asset)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        self._book.evict_expired(now_s)
        snapshot = self._book.snapshot(asset, now_s, max_age_s=self.max_age_s,
                                       min_expiry_s=self.min_expiry_s)
        self._snapshots[asset] = (self.version, snapshot)
        return snapshot


def attach(pipeline) -> OptionQuotesView:
    analytics = pipeline.config.analytics
    view = OptionQuotesView(max_age_s=analytics.surface_max_age_s,
                            min_expiry_s=analytics.surface_min_expiry_s)
    pipeline.graph.data["option_tickers"].sink(view.on_tickers)
    return view
