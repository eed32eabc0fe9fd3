"""The latest ticker of every listed option, and the chain snapshot a surface is fitted to.

Pure: tickers and the time come in as arguments. ``OptionBook.update`` keeps, per instrument, the
newest ticker by event time (an older one arriving late is ignored); ``OptionBook.snapshot`` gives
one asset's chain at a time ``now_s`` as columns ready for ``models.surface.fit_surface``.

Volatilities in the snapshot are implied by hedgeflow from the quoted prices, not copied from the
venue: ``bid_vol`` / ``ask_vol`` invert the bid and ask premiums, ``mid_vol`` the mid of the two
when both sides are quoted and the venue's mark price otherwise (Deribit conventions: premiums in
coin on the expiry's forward ``underlying_price``, rate 0; ``models.deribit``). A price no
volatility reproduces (a bid below intrinsic value) gives NaN on that side. Only the
out-of-the-money side of each strike is kept (calls at or above the forward, puts below): in-the-
money premiums are mostly intrinsic value and carry little information about volatility.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.deribit import implied_vol_from_coin
from models.records import OptionTickerBatch

SECONDS_PER_YEAR = 365.0 * 86_400.0

# The columns kept per instrument, in this order.
_FIELDS = ("event_ts", "expiry_utc", "strike_usd", "is_call", "bid_coin", "ask_coin",
           "mark_coin", "underlying_usd", "index_usd", "open_interest")


@dataclass(frozen=True)
class ChainSnapshot:
    """One asset's out-of-the-money options at ``ts`` (epoch s), as equal-length columns.

    ``expiry_years`` is the time from ``ts`` to expiry; ``forward_usd`` each option's own expiry
    forward; vols are annualized fractions, NaN where a side is missing or not invertible.
    """

    asset: str
    ts: float
    instrument: np.ndarray
    strike_usd: np.ndarray
    expiry_utc: np.ndarray
    expiry_years: np.ndarray
    forward_usd: np.ndarray
    index_usd: np.ndarray
    is_call: np.ndarray
    mid_vol: np.ndarray
    bid_vol: np.ndarray
    ask_vol: np.ndarray
    index_spot_usd: float = float("nan")

    def __len__(self) -> int:
        return len(self.instrument)

    @property
    def n_expiries(self) -> int:
        return int(np.unique(self.expiry_utc).size)

    @property
    def spot_usd(self) -> float:
        """The index price (Deribit's spot index) on the newest ticker, NaN when empty."""
        return self.index_spot_usd


class OptionBook:
    """The newest ticker per option instrument, for every asset seen."""

    def __init__(self) -> None:
        self._latest: dict[str, tuple] = {}
        self._asset: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._latest)

    @property
    def assets(self) -> list[str]:
        return sorted(set(self._asset.values()))

    def update(self, batch: OptionTickerBatch) -> None:
        columns = [getattr(batch, name).tolist() for name in _FIELDS]
        for i, (instrument, asset) in enumerate(zip(batch.instrument.tolist(), batch.asset.tolist())):
            row = tuple(col[i] for col in columns)
            held = self._latest.get(instrument)
            if held is None or row[0] >= held[0]:
                self._latest[instrument] = row
                self._asset[instrument] = asset

    def evict_expired(self, now_s: float) -> int:
        """Forget the instruments that expired by ``now_s`` (they can never be quoted again);
        returns how many."""
        gone = [name for name, row in self._latest.items() if row[1] <= now_s]
        for name in gone:
            del self._latest[name]
            del self._asset[name]
        return len(gone)

    def snapshot(self, asset: str, now_s: float, *, max_age_s: float = 300.0,
                 min_expiry_s: float = 3_600.0) -> ChainSnapshot:
        """``asset``'s chain at ``now_s``: tickers no older than ``max_age_s``, expiring at least
        ``min_expiry_s`` later (an option about to expire has no volatility left to read)."""
        names = [n for n, a in self._asset.items() if a == asset]
        rows = [self._latest[n] for n in names]
        if rows:
            cols = {f: np.asarray(v) for f, v in zip(_FIELDS, zip(*rows))}
        else:
            cols = {f: np.empty(0) for f in _FIELDS}
        instrument = np.asarray(names, dtype=object)
        event_ts = cols["event_ts"].astype(np.float64)
        expiry_utc = cols["expiry_utc"].astype(np.float64)
        strike = cols["strike_usd"].astype(np.float64)
        forward = cols["underlying_usd"].astype(np.float64)
        is_call = cols["is_call"].astype(bool)
        otm = np.where(is_call, strike >= forward, strike < forward)
        age_s = now_s - event_ts
        keep = (
            (age_s >= 0.0) & (age_s <= max_age_s)  # nothing from after now_s (a quote "as of")
            & (expiry_utc - now_s >= min_expiry_s)
            & (forward > 0.0) & (strike > 0.0) & otm
        )
        order = np.lexsort((strike[keep], expiry_utc[keep]))
        pick = np.flatnonzero(keep)[order]
        strike, forward, is_call = strike[pick], forward[pick], is_call[pick]
        expiry_utc = expiry_utc[pick]
        years = (expiry_utc - now_s) / SECONDS_PER_YEAR
        bid = cols["bid_coin"].astype(np.float64)[pick]
        ask = cols["ask_coin"].astype(np.float64)[pick]
        mark = cols["mark_coin"].astype(np.float64)[pick]
        both = np.isfinite(bid) & np.isfinite(ask) & (bid > 0.0) & (ask >= bid)
        mid_price = np.where(both, 0.5 * (bid + ask), mark)

        # A premium is inverted with the time left when it was quoted, not at ``now_s``.
        quoted_years = (expiry_utc - event_ts[pick]) / SECONDS_PER_YEAR

        def vol_of(price_coin: np.ndarray) -> np.ndarray:
            if price_coin.size == 0:
                return np.empty(0)
            return np.asarray(implied_vol_from_coin(price_coin, forward, strike, quoted_years,
                                                    is_call), dtype=np.float64)

        index_all = cols["index_usd"].astype(np.float64)[pick]
        event_kept = event_ts[pick]
        valid = np.isfinite(index_all)
        spot = float(index_all[valid][np.argmax(event_kept[valid])]) if valid.any() else float("nan")
        return ChainSnapshot(
            asset=asset, ts=float(now_s), instrument=instrument[pick], strike_usd=strike,
            expiry_utc=expiry_utc, expiry_years=years, forward_usd=forward,
            index_usd=index_all, is_call=is_call, index_spot_usd=spot,
            mid_vol=vol_of(mid_price), bid_vol=vol_of(np.where(bid > 0.0, bid, np.nan)),
            ask_vol=vol_of(ask),
        )
