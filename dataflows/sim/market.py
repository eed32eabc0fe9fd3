"""The one seeded market every simulated exchange quotes, and the per-venue quoting machinery.

``SharedMarket`` holds, per asset (BTC, ETH):

- the "true" spot mid: a ``models.market_sim.GbmJumpPath`` (GBM with Merton jumps);
- the index (what Deribit's ``deribit_price_index``, Binance's ``i`` and Bybit's ``indexPrice``
  publish): the true mid;
- a perpetual (``PerpetualModel``): a funding rate per 8 h that mean-reverts around 1e-4 and can
  go negative, and a mark = index * (1 + funding + a small fast premium);
- per venue, a basis: a mean-reverting offset of a few basis points (OU, stdev ``basis_bps``), so
  each venue quotes ``mid * (1 + basis)``, not exactly the same price.

``step(dt_s)`` advances everything; the scheduler calls it on a fixed grid (``market_step_hz``),
so the path depends on the seed and that grid only, never on which venue sends what.

Per venue, a ``Quoter`` turns the venue mid into a quote on the venue's price grid (own spread and
sizes, own generator), trades at the touch, and optionally an L2 ``Ladder`` whose changes feed the
depth/book channels.
"""

from __future__ import annotations

import math
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from models.market_sim import (
    GbmJumpParams,
    GbmJumpPath,
    OUParams,
    OUProcess,
    PerpetualModel,
    PerpParams,
    bid_ask,
)

ASSETS = ("BTC", "ETH")
VENUES = ("binance", "coinbase", "kraken", "bybit", "deribit")

# Quote currencies whose prices the USD table below applies to.
_USD_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD")


@dataclass(frozen=True)
class MarketSpec:
    """Defaults for one simulated base asset.

    Attributes:
        spot_usd: starting mid (USD-like quote currency).
        vol_annual: annualized volatility as a fraction.
        tick_size: price grid (quote currency); bids round down to it, asks up.
        lot_size: quantity grid (coin); every quantity is at least one lot.
        quote_notional_usd: median size shown at the best bid/ask, in USD.
        trade_notional_usd: median aggregate-trade size, in USD.
    """

    spot_usd: float
    vol_annual: float
    tick_size: float = 0.01
    lot_size: float = 0.001
    quote_notional_usd: float = 50_000.0
    trade_notional_usd: float = 2_000.0


DEFAULT_MARKETS: dict[str, MarketSpec] = {
    "BTC": MarketSpec(spot_usd=97_000.0, vol_annual=0.55, tick_size=0.01, lot_size=0.00001),
    "ETH": MarketSpec(spot_usd=3_100.0, vol_annual=0.70, tick_size=0.01, lot_size=0.0001),
}
UNKNOWN_MARKET = MarketSpec(spot_usd=100.0, vol_annual=0.80, tick_size=0.01, lot_size=0.001)


def base_asset(symbol: str) -> str | None:
    """``BTCUSDT`` / ``BTC-USD`` / ``BTC/USD`` / ``XBT/USD`` → ``BTC``; None when the quote is not
    USD-like."""
    s = symbol.upper().replace("-", "").replace("/", "").replace("_", "")
    for quote in _USD_QUOTES:
        if s.endswith(quote) and len(s) > len(quote):
            base = s[: -len(quote)]
            return "BTC" if base == "XBT" else base
    return None


def market_spec_for(symbol: str) -> MarketSpec:
    """The defaults for ``symbol`` (e.g. ``"BTCUSDT"`` → the BTC row); unknown →
    ``UNKNOWN_MARKET``.

    Only USD-like quote currencies use the table (an ``ETHBTC`` is not priced at 3,100).
    """
    base = base_asset(symbol)
    return DEFAULT_MARKETS.get(base, UNKNOWN_MARKET) if base else UNKNOWN_MARKET


def seed_sequence(seed: int, *parts: str) -> np.random.SeedSequence:
    """A seed for ``(seed, *parts)``; crc32, not hash(): str hashes are salted per process."""
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF]
                                  + [zlib.crc32(p.encode()) for p in parts])


def rng_for(seed: int, *parts: str) -> np.random.Generator:
    return np.random.default_rng(seed_sequence(seed, *parts))


def uuid_from(rng: np.random.Generator) -> str:
    """A version-4 UUID string drawn from ``rng`` (reproducible, unlike ``uuid.uuid4``)."""
    return str(uuid.UUID(int=int.from_bytes(rng.bytes(16), "big"), version=4))


def iso_ms(ts: float, digits: int = 6) -> str:
    """RFC 3339 UTC with ``digits`` fractional digits and a ``Z``
    (``2024-11-19T07:06:40.123456Z``)."""
    whole = math.floor(ts)
    frac = round((ts - whole) * 10**digits)
    if frac >= 10**digits:
        whole, frac = whole + 1, 0
    base = datetime.fromtimestamp(whole, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:0{digits}d}Z" if digits else f"{base}Z"


def decimals_of(step: float) -> int:
    """Decimals needed to print multiples of ``step`` (0.01 → 2, 0.5 → 1, 10 → 0)."""
    for d in range(0, 12):
        if abs(round(step * 10**d) - step * 10**d) < 1e-9:
            return d
    return 12


# --------------------------------------------------------------------------- the shared market


@dataclass(frozen=True)
class SharedMarketParams:
    """Knobs of ``SharedMarket``. ``basis_bps``: stationary stdev of each venue's basis (bp);
    ``basis_half_life_s``: how fast it reverts; ``jump_intensity_per_year`` etc. as in
    ``GbmJumpParams``."""

    assets: tuple[str, ...] = ASSETS
    venues: tuple[str, ...] = VENUES
    basis_bps: float = 2.0
    basis_half_life_s: float = 30.0
    perp: PerpParams = PerpParams()
    jump_intensity_per_year: float = 20.0
    jump_mean: float = -0.01
    jump_std: float = 0.03


class SharedMarket:
    """The seeded market state (see the module docstring). No I/O, no clock."""

    def __init__(self, seed: int, params: SharedMarketParams = SharedMarketParams()) -> None:
        self.seed = int(seed)
        self.params = params
        self.specs = {a: DEFAULT_MARKETS.get(a, UNKNOWN_MARKET) for a in params.assets}
        self._spot: dict[str, GbmJumpPath] = {}
        self._perp: dict[str, PerpetualModel] = {}
        self._basis: dict[tuple[str, str], OUProcess] = {}
        for asset in params.assets:
            spec = self.specs[asset]
            gbm = GbmJumpParams(spot_usd=spec.spot_usd, vol_annual=spec.vol_annual,
                                jump_intensity_per_year=params.jump_intensity_per_year,
                                jump_mean=params.jump_mean, jump_std=params.jump_std)
            self._spot[asset] = GbmJumpPath(gbm, rng_for(seed, "spot", asset))
            self._perp[asset] = PerpetualModel(params.perp, rng_for(seed, "perp", asset))
            for venue in params.venues:
                self._basis[(venue, asset)] = OUProcess(
                    OUParams(0.0, params.basis_bps * 1e-4, params.basis_half_life_s),
                    rng_for(seed, "basis", venue, asset))
        self.elapsed_s = 0.0

    def step(self, dt_s: float) -> None:
        for asset in self.params.assets:
            self._spot[asset].step(dt_s)
            self._perp[asset].step(dt_s)
        for ou in self._basis.values():
            ou.step(dt_s)
        self.elapsed_s += dt_s

    # ---------------------------------------------------------------- readings
    def mid(self, asset: str) -> float:
        """The true spot mid (USD)."""
        return self._spot[asset].price

    def index(self, asset: str) -> float:
        """The index (USD): the true mid."""
        return self._spot[asset].price

    def basis(self, venue: str, asset: str) -> float:
        return self._basis[(venue, asset)].value if (venue, asset) in self._basis else 0.0

    def venue_mid(self, venue: str, asset: str) -> float:
        """The mid ``venue`` quotes: true mid * (1 + the venue's basis)."""
        return self._spot[asset].price * (1.0 + self.basis(venue, asset))

    def funding_rate(self, asset: str) -> float:
        """Funding rate per 8 h (fraction)."""
        return self._perp[asset].funding_rate

    def perp_mark(self, asset: str, venue: str | None = None) -> float:
        """The perpetual's mark (USD); a venue's mark carries its basis."""
        index = self.venue_mid(venue, asset) if venue else self.index(asset)
        return self._perp[asset].mark(index)


# --------------------------------------------------------------------------- quoting


def _size(rng: np.random.Generator, notional_usd: float, price: float, lot: float) -> float:
    """Log-normal around the median notional, on the lot grid, at least one lot."""
    coin = notional_usd * math.exp(rng.normal(0.0, 1.0)) / price
    return max(1, round(coin / lot)) * lot


class Ladder:
    """An L2 book of ``depth`` levels a side around a quote, keyed by integer ticks.

    The best level is the quote itself; deeper levels sit on a coarser grid of ``step_ticks``
    ticks. ``update`` moves the book to a new quote and returns the changed levels
    ``(side, price_ticks, size)`` ("bid"/"ask"; size 0 = removed), sorted so the output is
    deterministic.
    """

    def __init__(self, depth: int, step_ticks: int, rng: np.random.Generator, tick: float,
                 lot: float, level_notional_usd: float,
                 size_fn: Callable[[float], float] | None = None) -> None:
        self.depth = int(depth)
        self.step_ticks = max(1, int(step_ticks))
        self.rng = rng
        self.tick = tick
        self.lot = lot
        self.level_notional_usd = level_notional_usd
        self.size_fn = size_fn  # price → a level's size (default: coin on the lot grid)
        self.bids: dict[int, float] = {}
        self.asks: dict[int, float] = {}

    def _new_size(self, ticks: int) -> float:
        if self.size_fn is not None:
            return self.size_fn(ticks * self.tick)
        return _size(self.rng, self.level_notional_usd, ticks * self.tick, self.lot)

    def _target(self, best: int, best_size: float, side: str,
                old: dict[int, float]) -> dict[int, float]:
        out = {best: best_size}
        step = self.step_ticks
        if side == "bid":
            k = (best // step) * step
            if k >= best:
                k -= step
            while len(out) < self.depth and k > 0:
                out[k] = old.get(k) or self._new_size(k)
                k -= step
        else:
            k = -((-best) // step) * step
            if k <= best:
                k += step
            while len(out) < self.depth:
                out[k] = old.get(k) or self._new_size(k)
                k += step
        return out

    def update(self, bid_ticks: int, bid_size: float, ask_ticks: int, ask_size: float,
               churn: int = 1) -> list[tuple[str, int, float]]:
        """Move to the quote; ``churn`` random deeper levels also change size."""
        changes: list[tuple[str, int, float]] = []
        for side, best, best_size in (("bid", bid_ticks, bid_size), ("ask", ask_ticks, ask_size)):
            old = self.bids if side == "bid" else self.asks
            new = self._target(best, best_size, side, old)
            deeper = sorted(k for k in new if k != best)
            for _ in range(churn if deeper else 0):
                k = deeper[int(self.rng.integers(0, len(deeper)))]
                new[k] = self._new_size(k)
            for k in sorted(set(old) | set(new)):
                if k not in new:
                    changes.append((side, k, 0.0))
                elif old.get(k) != new[k]:
                    changes.append((side, k, new[k]))
            if side == "bid":
                self.bids = new
            else:
                self.asks = new
        return changes

    def snapshot(self) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """(bids best first, asks best first) as (ticks, size)."""
        return (sorted(self.bids.items(), reverse=True), sorted(self.asks.items()))


class Quoter:
    """One instrument on one venue: a quote on the venue's grid around a mid, sizes, trades.

    ``requote(mid)`` returns True when the top of book changed (price or size). ``trade()``
    returns ``(price, size, taker_side)`` at the touch: a taker buy lifts the ask. All randomness
    comes from ``rng`` (the venue's, per instrument).
    """

    def __init__(self, symbol: str, asset: str, tick: float, lot: float, half_spread_bps: float,
                 rng: np.random.Generator, quote_notional_usd: float = 50_000.0,
                 trade_notional_usd: float = 2_000.0, ladder_depth: int = 0,
                 ladder_step_ticks: int = 1, size_in_usd: float | None = None) -> None:
        self.symbol = symbol
        self.asset = asset
        self.tick = tick
        self.lot = lot
        self.half_spread_bps = half_spread_bps
        self.rng = rng
        self.quote_notional_usd = quote_notional_usd
        self.trade_notional_usd = trade_notional_usd
        self.size_in_usd = size_in_usd  # contract size in USD (Deribit inverse perps), else coin
        self.bid_ticks = 0
        self.ask_ticks = 0
        self.bid_size = 0.0
        self.ask_size = 0.0
        self.last_price = math.nan
        self.last_size = 0.0
        self.last_side = "buy"
        self.ladder = (Ladder(ladder_depth, ladder_step_ticks, rng, tick, lot, quote_notional_usd,
                              size_fn=lambda price: self._amount(self.quote_notional_usd, price))
                       if ladder_depth > 0 else None)
        self.book_changes: list[tuple[str, int, float]] = []

    @property
    def bid(self) -> float:
        return self.bid_ticks * self.tick

    @property
    def ask(self) -> float:
        return self.ask_ticks * self.tick

    @property
    def mid(self) -> float:
        return 0.5 * (self.bid + self.ask)

    def _amount(self, notional_usd: float, price: float) -> float:
        if self.size_in_usd:
            usd = notional_usd * math.exp(self.rng.normal(0.0, 1.0))
            units = max(1, round(usd / self.size_in_usd))
            return float(units * self.size_in_usd)
        return _size(self.rng, notional_usd, price, self.lot)

    def requote(self, mid: float) -> bool:
        raw_bid, raw_ask = bid_ask(mid, self.half_spread_bps)
        bid_ticks = max(1, math.floor(raw_bid / self.tick + 1e-9))
        ask_ticks = max(bid_ticks + 1, math.ceil(raw_ask / self.tick - 1e-9))
        bid_size = self._amount(self.quote_notional_usd, bid_ticks * self.tick)
        ask_size = self._amount(self.quote_notional_usd, ask_ticks * self.tick)
        changed = (bid_ticks, ask_ticks, bid_size, ask_size) != (
            self.bid_ticks, self.ask_ticks, self.bid_size, self.ask_size)
        self.bid_ticks, self.ask_ticks = bid_ticks, ask_ticks
        self.bid_size, self.ask_size = bid_size, ask_size
        if self.ladder is not None:
            self.book_changes.extend(self.ladder.update(bid_ticks, bid_size, ask_ticks, ask_size))
        if math.isnan(self.last_price):  # a plausible "last trade" before the first one
            self.last_price = self.mid
            self.last_size = self._amount(self.trade_notional_usd, self.mid)
        return changed

    def trade(self) -> tuple[float, float, str]:
        taker_buys = bool(self.rng.random() < 0.5)
        price = self.ask if taker_buys else self.bid
        size = self._amount(self.trade_notional_usd, price)
        self.last_price, self.last_size = price, size
        self.last_side = "buy" if taker_buys else "sell"
        return price, size, self.last_side

    def take_book_changes(self) -> list[tuple[str, int, float]]:
        """The ladder changes since the last call, merged per level (last size wins)."""
        merged: dict[tuple[str, int], float] = {}
        for side, k, size in self.book_changes:
            merged[(side, k)] = size
        self.book_changes = []
        return [(side, k, size) for (side, k), size in sorted(merged.items())]

    def trade_gap_s(self, rate_hz: float) -> float:
        return float(self.rng.exponential(1.0 / rate_hz))


def ladder_step_ticks(mid: float, tick: float, level_bps: float = 0.5) -> int:
    """A depth-level spacing of about ``level_bps`` of the mid, in whole ticks."""
    return max(1, round(mid * level_bps * 1e-4 / tick))


class BookView:
    """The top ``depth`` levels of a ``Ladder`` as a client of a depth-limited channel sees them;
    ``update`` returns what changed in that view since the last call (size 0 = left the view)."""

    def __init__(self, depth: int) -> None:
        self.depth = int(depth)
        self.bids: dict[int, float] = {}
        self.asks: dict[int, float] = {}

    def update(self, ladder: Ladder) -> list[tuple[str, int, float]]:
        bids = dict(sorted(ladder.bids.items(), reverse=True)[: self.depth])
        asks = dict(sorted(ladder.asks.items())[: self.depth])
        changes: list[tuple[str, int, float]] = []
        for side, old, new in (("bid", self.bids, bids), ("ask", self.asks, asks)):
            for k in sorted(set(old) | set(new)):
                if k not in new:
                    changes.append((side, k, 0.0))
                elif old.get(k) != new[k]:
                    changes.append((side, k, new[k]))
        self.bids, self.asks = bids, asks
        return changes

    def snapshot(self) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        return (sorted(self.bids.items(), reverse=True), sorted(self.asks.items()))
