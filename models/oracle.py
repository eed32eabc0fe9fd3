"""Median price oracle per asset: the foundation's aggregation.

Each source (one exchange's instrument, ``"binance:BTCUSDT"``) contributes its latest mid price
and half-spread. Sources whose latest quote is older than ``stale_after_s`` (event time) are left
out. The price is the median of the fresh mids: one bad venue cannot move it while most are
honest. Robust outlier filtering and reliability weights come with the oracle issue.

Only quotes in a USD-like currency (``usd_quotes``, by default ``records.USD_LIKE``: USD, USDT,
USDC) are aggregated: the oracle prices in USD.
Pure: the caller passes the time; nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.records import USD_LIKE, OraclePrice, QuoteBatch


@dataclass(frozen=True)
class MedianOracleConfig:
    """``min_sources``: fresh sources needed for status "ok". ``stale_after_s``: a source's quote
    older than this (seconds of event time) is not used. ``interval_s``: at most one published
    price per asset per interval."""

    min_sources: int = 1
    stale_after_s: float = 10.0
    interval_s: float = 1.0
    usd_quotes: tuple[str, ...] = tuple(sorted(USD_LIKE))

    def __post_init__(self) -> None:
        if self.min_sources < 1:
            raise ValueError("min_sources must be at least 1")
        if self.stale_after_s <= 0 or self.interval_s <= 0:
            raise ValueError("stale_after_s and interval_s must be positive")


def median_aggregate(mid_usd: np.ndarray, half_spread_usd: np.ndarray) -> tuple[float, float]:
    """(price, confidence half-width), both USD, from sources' mids and half-spreads.

    The confidence is the larger of the sources' typical disagreement (median absolute deviation
    from the median, scaled by 1.4826 to estimate a standard deviation) and their typical
    half-spread: a price is no more certain than the books it came from. NaN for no sources.
    """
    mid = np.asarray(mid_usd, dtype=np.float64)
    half = np.asarray(half_spread_usd, dtype=np.float64)
    if mid.size == 0:
        return float("nan"), float("nan")
    price = float(np.median(mid))
    mad = 1.4826 * float(np.median(np.abs(mid - price)))
    return price, max(mad, float(np.median(half)))


class MedianOracle:
    """Latest quote per source, and a median price per asset on request.

    ``update`` folds in a batch of quotes; ``publish(now)`` returns one ``OraclePrice`` for each
    asset whose last publication is at least ``interval_s`` old. A source seen once and then gone
    silent ages out of the price through ``stale_after_s``, which turns the status to "degraded"
    (too few sources) or "halted" (none).
    """

    def __init__(self, config: MedianOracleConfig = MedianOracleConfig()) -> None:
        self.config = config
        # asset -> source -> (event_ts, mid, half_spread)
        self._latest: dict[str, dict[str, tuple[float, float, float]]] = {}
        self._last_published: dict[str, float] = {}

    @property
    def assets(self) -> list[str]:
        return sorted(self._latest)

    def update(self, quotes: QuoteBatch) -> None:
        usd = np.isin(quotes.quote_ccy, self.config.usd_quotes)
        if not usd.any():
            return
        q = quotes.take(usd)
        mid = q.mid
        half = 0.5 * (q.ask - q.bid)
        sources = q.exchange + ":" + q.instrument
        for asset, source, ts, m, h in zip(
            q.asset.tolist(), sources.tolist(), q.event_ts.tolist(), mid.tolist(), half.tolist()
        ):
            book = self._latest.setdefault(asset, {})
            previous = book.get(source)
            if previous is None or ts >= previous[0]:
                book[source] = (ts, m, h)

    def price(self, asset: str, now: float) -> OraclePrice:
        book = self._latest.get(asset, {})
        fresh = {
            s: v for s, v in book.items() if now - v[0] <= self.config.stale_after_s
        }
        n = len(fresh)
        names = tuple(sorted(fresh))
        mids = np.array([fresh[s][1] for s in names])
        halves = np.array([fresh[s][2] for s in names])
        price, confidence = median_aggregate(mids, halves)
        if n == 0:
            status, reason = "halted", "no fresh sources"
        elif n < self.config.min_sources:
            status, reason = "degraded", f"{n} of {self.config.min_sources} required sources"
        else:
            status, reason = "ok", ""
        return OraclePrice(asset, now, price, confidence, n, status, reason, names)

    def publish(self, now: float) -> list[OraclePrice]:
        due = [
            a
            for a in self.assets
            if now - self._last_published.get(a, -np.inf) >= self.config.interval_s
        ]
        for a in due:
            self._last_published[a] = now
        return [self.price(a, now) for a in due]
