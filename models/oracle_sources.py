"""The oracle's sources: which quotes count, the latest quote of each, and how reliable each is.

A *source* is one exchange's instrument, named ``"exchange:instrument"`` (``"binance:BTCUSDT"``,
``"coinbase:BTC-USD"``, ``"kraken:BTC/USD"``).

Which quotes are sources (``SourceFilter``)
    Only spot pairs quoted in a USD-like currency price an asset in USD. Perpetuals and dated
    futures are left out by default: their price carries a basis (funding, carry), so a perp
    quoting 0.3 % above spot is not an error and must not pull the spot price. ``exclude`` holds
    glob patterns (``fnmatch``, case-sensitive) on the source name; ``include``, when not empty,
    keeps only matching sources. The defaults (``DEFAULT_EXCLUDE``):

    - ``deribit:*-PERPETUAL``: Deribit perpetuals (``BTC-PERPETUAL``, ``ETH_USDC-PERPETUAL``);
    - ``deribit:*-*[0-9][A-Z][A-Z][A-Z][0-9][0-9]``: Deribit dated futures (``BTC-27DEC24``,
      ``BTC-7MAR25``, ``BTC_USDC-27DEC24``); options never reach the quotes stream;
    - ``bybit:*``: the Bybit adapter reads the v5 *linear* stream only (USDT/USDC perpetuals), so
      every Bybit quote today is a perp. Bybit spot and linear symbols share names (``BTCUSDT``),
      so if the adapter ever emits spot quotes, this pattern has to become something the names can
      tell apart (for example an instrument prefix the adapter adds).

The latest quote (``LatestQuotes``)
    Per asset and source, the quote with the latest event time (a late, older quote never replaces
    a newer one; at equal times the later row wins). ``update`` is vectorized: one pass of numpy
    over the batch picks each source's last row, then a loop over the *sources* (a handful), not
    the rows.

Reliability (``SourceStats``)
    Per source, updated at each evaluation of its asset: exponentially weighted (by time,
    half-life ``halflife_s``) uptime (1 when its quote is fresh, 0 when stale), deviation from the
    consensus in bps (capped at 1000 bps so one absurd quote does not poison it for ever) and
    rejection rate, plus counts. ``reliability()`` turns them into a weight factor in
    ``[floor, 1]``::

        uptime * (1 - reject_rate) / (1 + deviation_bps / deviation_scale_bps)

    A source that recovers regains its weight over a few half-lives: failover and recovery are
    automatic and gradual.

Pure: no I/O, no clock; times are event times the caller passes in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase

import numpy as np

from models.records import QuoteBatch

DEFAULT_EXCLUDE: tuple[str, ...] = (
    "deribit:*-PERPETUAL",
    "deribit:*-*[0-9][A-Z][A-Z][A-Z][0-9][0-9]",
    "bybit:*",
)

DEVIATION_CAP_BPS = 1000.0


@dataclass(frozen=True)
class SourceFilter:
    """Glob patterns on ``"exchange:instrument"``: a source counts when it matches ``include``
    (or ``include`` is empty) and matches no ``exclude`` pattern."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE

    def accepts(self, source: str) -> bool:
        if self.include and not any(fnmatchcase(source, p) for p in self.include):
            return False
        return not any(fnmatchcase(source, p) for p in self.exclude)


class LatestQuotes:
    """The latest quote (event time, bid, ask) of every accepted source, per asset."""

    def __init__(self, usd_quotes: tuple[str, ...], source_filter: SourceFilter) -> None:
        self._usd = np.asarray(sorted(usd_quotes), dtype=object)
        self._filter = source_filter
        self._verdicts: dict[str, bool] = {}
        # asset -> source -> (event_ts, bid, ask)
        self._books: dict[str, dict[str, tuple[float, float, float]]] = {}
        self.quote_counts: dict[str, int] = {}

    @property
    def assets(self) -> list[str]:
        return sorted(self._books)

    def accepts(self, source: str) -> bool:
        verdict = self._verdicts.get(source)
        if verdict is None:
            verdict = self._verdicts[source] = self._filter.accepts(source)
        return verdict

    def update(self, quotes: QuoteBatch) -> None:
        if not len(quotes):
            return
        usd = np.isin(quotes.quote_ccy, self._usd)
        if not usd.any():
            return
        idx = np.flatnonzero(usd)
        sources = quotes.exchange[idx] + ":" + quotes.instrument[idx]
        names, inverse = np.unique(sources, return_inverse=True)
        accepted = np.fromiter((self.accepts(s) for s in names.tolist()), bool, len(names))
        ts = quotes.event_ts[idx].astype(np.float64)
        bid = quotes.bid[idx].astype(np.float64)
        ask = quotes.ask[idx].astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            mid = 0.5 * (bid + ask)
            ok = accepted[inverse] & np.isfinite(ts) & np.isfinite(mid) & (mid > 0.0) & (bid > 0.0)
        if not ok.any():
            return
        rows = np.flatnonzero(ok)
        counts = np.bincount(inverse[rows], minlength=len(names))
        # each source's last row: sort by (source, event time, row), take the last of each group
        order = rows[np.lexsort((rows, ts[rows], inverse[rows]))]
        group = inverse[order]
        last = order[np.r_[group[1:] != group[:-1], True]]
        assets = quotes.asset[idx]
        for r in last.tolist():
            source = names[inverse[r]]
            book = self._books.setdefault(assets[r], {})
            previous = book.get(source)
            if previous is None or ts[r] >= previous[0]:
                book[source] = (float(ts[r]), float(bid[r]), float(ask[r]))
        for i in np.flatnonzero(counts).tolist():
            self.quote_counts[names[i]] = self.quote_counts.get(names[i], 0) + int(counts[i])

    def arrays(self, asset: str) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """(sources sorted by name, event times, bids, asks) of ``asset``'s latest quotes."""
        book = self._books.get(asset, {})
        names = sorted(book)
        data = np.array([book[s] for s in names], dtype=np.float64).reshape(len(names), 3)
        return names, data[:, 0], data[:, 1], data[:, 2]


@dataclass(frozen=True)
class SourceStats:
    """One source's record as of one evaluation of its asset (immutable; each evaluation makes a
    new one). ``state`` is "used", "rejected" or "stale"; ``kind`` the rejection kind ("decimal",
    "jump", "volatility_jump", "divergence", "outlier") or "stale"; ``mid_usd`` its mid at that
    evaluation (NaN when stale)."""

    first_seen_ts: float
    last_quote_ts: float = math.nan
    state: str = "new"
    kind: str = ""
    reason: str = ""
    mid_usd: float = math.nan
    uptime: float = 1.0
    deviation_bps: float = 0.0
    reject_rate: float = 0.0
    n_evaluations: int = 0
    n_fresh: int = 0
    n_used: int = 0
    n_rejected: int = 0
    n_stale: int = 0  # times the source went stale

    def reliability(self, deviation_scale_bps: float, floor: float) -> float:
        r = self.uptime * (1.0 - self.reject_rate) / (1.0 + self.deviation_bps / deviation_scale_bps)
        return float(min(1.0, max(floor, r)))

    def advanced(
        self, *, alpha: float, quote_ts: float, state: str, kind: str, reason: str,
        mid_usd: float, deviation_bps: float,
    ) -> SourceStats:
        """The record after one more evaluation. ``alpha`` is the EWMA weight of this evaluation
        (``1 - exp(-dt ln2 / half_life)``); the first fresh evaluation seeds the deviation and the
        rejection rate instead of averaging them in."""
        fresh = state != "stale"
        rejected = state == "rejected"
        uptime = (1.0 - alpha) * self.uptime + alpha * float(fresh)
        dev, rate = self.deviation_bps, self.reject_rate
        if fresh:
            d = min(DEVIATION_CAP_BPS, deviation_bps) if math.isfinite(deviation_bps) else dev
            if self.n_fresh == 0:
                dev, rate = d, float(rejected)
            else:
                dev = (1.0 - alpha) * dev + alpha * d
                rate = (1.0 - alpha) * rate + alpha * float(rejected)
        went_stale = state == "stale" and self.state != "stale"
        return replace(
            self, last_quote_ts=quote_ts, state=state, kind=kind, reason=reason,
            mid_usd=mid_usd if fresh else math.nan, uptime=uptime, deviation_bps=dev,
            reject_rate=rate, n_evaluations=self.n_evaluations + 1,
            n_fresh=self.n_fresh + int(fresh), n_used=self.n_used + int(state == "used"),
            n_rejected=self.n_rejected + int(rejected), n_stale=self.n_stale + int(went_stale),
        )
