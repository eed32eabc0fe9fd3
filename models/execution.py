"""Paper execution (issue 7; plan 004's ExecutionOptimizer and CrossChainBalance): venues that fill
orders against book depth with fees and latency, funding settlement, balances per venue and
combined, and routing across venues by all-in cost.

Conventions: ``ts_s`` epoch seconds (UTC), passed in; prices in USD per coin; sizes in coins;
fees in basis points of the fill's notional (1 bp = 1e-4; negative maker fee = rebate). Funding
``rate_per_interval`` as Binance/Bybit publish it (0.0001 = 0.01 % per 8 h). Slippage is in bps
of the mid, positive when it costs: ``(vwap - mid) / mid`` for a buy, ``(mid - vwap) / mid`` for a
sell.

Books. ``Book`` holds both sides as arrays of levels (bids descending, asks ascending). When only a
mid price is known, the venue's ``DepthModel`` builds a synthetic book around it: evenly spaced
levels, each ``level_notional_usd`` deep. A buy walks the asks, a sell the bids; the fill price is
the volume-weighted average of the levels taken; when the depth (within the limit price) runs out
the order is partially filled.

Paper fills (``PaperVenue``): ``submit(order)`` accepts an order (or returns a ``Rejection``); it
reaches the matching engine at ``order.ts_s + latency_s``. ``on_market(ts_s, asset, kind, book)``
is called with each new market state and matches every order that has arrived by ``ts_s``
against THAT book: a fill happens at the first market at or after the arrival, at its prices.
Orders matched against the same book share its depth (the second eats what the first left);
the next book comes from the market and does not remember our earlier consumption (right for
orders small against the book's refresh; say so when they are not). ``execute(order, book, ts_s)``
is the latency-free shortcut: the caller already holds the book the order meets.

What is left of an order after its first match: time in force ``"IOC"`` cancels it (the default
for market orders, as on the exchanges), ``"GTC"`` keeps it open (the default for limit orders).
A resting limit order fills later as MAKER, at its limit price, when a later book trades through
it (best ask <= limit for a buy, best bid >= limit for a sell), for at most the depth on the far
side at or through the limit. That is the simple, conservative model: no queue position, no fills
from prints that only touch the price. A resting market order (GTC) walks each later book as taker.

Funding (perpetuals): at the venue's funding times (``funding_offset_h + k * funding_interval_h``
since the epoch: 00:00, 08:00, 16:00 UTC for 8 h) a position of ``q`` coins pays
``q * mark * rate``: ``payment_usd = -q * mark * rate`` is what the account receives, so a long pays
when the rate is positive and a short receives. The notional is the mark price's, not the entry's.
Deribit accrues funding continuously; modelled here on the 8 h schedule like the others.

Accounts (``VenueAccount``): USD-margined. Perpetuals and quarterlies are linear futures: a fill
moves no notional, changes the position and its average entry, realizes PnL when it reduces, and
pays its fee; the initial margin ``|q| * mark / leverage`` is locked. Spot and puts exchange the
notional on the fill (cash for coins / premium). Open orders lock what they may need (see
``PaperVenue.submit``). Puts are modelled long-only, one line per asset (the orders carry no
strike or expiry); selling closes. ``total_usd = available_usd + locked_usd`` always holds;
``total_usd`` is the wallet cash plus the futures' unrealized PnL (the exchanges' margin balance),
spot coins are separate coin balances, and ``equity_usd`` adds the spot coins and puts at mark.

Real order placement stays behind the ``Venue`` protocol and is OFF: there is no live
implementation in this module, and none may be added without keys configured explicitly by the
operator; ``PaperVenue`` is the only implementation.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from models.orders import KINDS, Fill, Order, Rejection, order_problems, side_sign

__all__ = [
    "BPS", "FUTURES_KINDS", "CASH_KINDS", "TIME_IN_FORCE",
    "Book", "DepthModel", "VenueConfig", "BINANCE_USDM", "BYBIT", "DERIBIT", "SPOT_VENUE",
    "DEFAULT_VENUES", "fill_curve", "walk_book", "slippage_bps", "fee_per_coin_usd", "fee_usd",
    "funding_times", "is_funding_time", "funding_payment_usd", "FundingSettlement", "settle_funding",
    "CoinBalance", "VenueBalance", "CombinedBalance", "VenueAccount", "OrderReport", "Venue",
    "PaperVenue", "CrossVenueBalance", "ExecutionOption", "Allocation", "ExecutionPlan",
    "ExecutionOptimizer",
]

BPS = 1e-4
SECONDS_PER_HOUR = 3600.0
FUTURES_KINDS = ("perp", "quarterly")  # linear, USD-margined: no notional changes hands
CASH_KINDS = ("spot", "put")           # the notional (coins or premium) is paid on the fill
TIME_IN_FORCE = ("GTC", "IOC")
_REL_EPS = 1e-12  # a quantity this small relative to the order is nothing left (float residue)


# --------------------------------------------------------------------------- books

def _levels(values, name: str) -> np.ndarray:
    arr = np.array(values, dtype=float).ravel()
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"Book.{name} must be finite")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Book:
    """An order book: bids (prices strictly descending), asks (prices strictly ascending), sizes in
    coins (>= 0; empty levels are allowed). ``index_usd`` the underlying's index, needed only for
    option fees (NaN when unknown). A crossed book (best bid >= best ask) is refused."""

    bid_prices_usd: np.ndarray
    bid_sizes_coin: np.ndarray
    ask_prices_usd: np.ndarray
    ask_sizes_coin: np.ndarray
    index_usd: float = math.nan

    def __post_init__(self) -> None:
        for name in ("bid_prices_usd", "bid_sizes_coin", "ask_prices_usd", "ask_sizes_coin"):
            object.__setattr__(self, name, _levels(getattr(self, name), name))
        for side in ("bid", "ask"):
            prices, sizes = getattr(self, f"{side}_prices_usd"), getattr(self, f"{side}_sizes_coin")
            if prices.shape != sizes.shape:
                raise ValueError(f"Book: {side} prices and sizes differ in length")
            if np.any(prices <= 0) or np.any(sizes < 0):
                raise ValueError(f"Book: {side} prices must be > 0 and sizes >= 0")
        if np.any(np.diff(self.bid_prices_usd) >= 0):
            raise ValueError("Book: bid prices must be strictly descending")
        if np.any(np.diff(self.ask_prices_usd) <= 0):
            raise ValueError("Book: ask prices must be strictly ascending")
        if len(self.bid_prices_usd) and len(self.ask_prices_usd) and \
                self.bid_prices_usd[0] >= self.ask_prices_usd[0]:
            raise ValueError(f"Book: crossed (best bid {self.bid_prices_usd[0]} >= best ask "
                             f"{self.ask_prices_usd[0]})")

    @classmethod
    def from_levels(cls, bids: Sequence[tuple[float, float]], asks: Sequence[tuple[float, float]],
                    index_usd: float = math.nan) -> Book:
        """From ``[(price_usd, size_coin), ...]`` per side, in any order (sorted here)."""
        bids = sorted(bids, key=lambda level: -level[0])
        asks = sorted(asks, key=lambda level: level[0])
        return cls(np.array([b[0] for b in bids], float), np.array([b[1] for b in bids], float),
                   np.array([a[0] for a in asks], float), np.array([a[1] for a in asks], float),
                   index_usd)

    @property
    def best_bid_usd(self) -> float:
        return float(self.bid_prices_usd[0]) if len(self.bid_prices_usd) else math.nan

    @property
    def best_ask_usd(self) -> float:
        return float(self.ask_prices_usd[0]) if len(self.ask_prices_usd) else math.nan

    @property
    def mid_usd(self) -> float:
        """Mid of the best bid and ask; NaN when either side is empty."""
        return 0.5 * (self.best_bid_usd + self.best_ask_usd)

    def side_for(self, order_side: str) -> tuple[np.ndarray, np.ndarray]:
        """The levels an order of ``order_side`` takes: the asks for a buy, the bids for a sell."""
        if side_sign(order_side) > 0:
            return self.ask_prices_usd, self.ask_sizes_coin
        return self.bid_prices_usd, self.bid_sizes_coin


@dataclass(frozen=True, slots=True)
class DepthModel:
    """A synthetic book around a mid when no book is known: ``n_levels`` levels per side at
    ``mid * (1 -/+ (half_spread_bps + i * level_spacing_bps) * 1e-4)``, ``i = 0..n_levels-1``,
    each ``level_notional_usd / price`` coins deep. Depth is in USD so one model serves every
    asset. The defaults are illustrative of a liquid BTC perpetual (about 10 M USD within 5 bps
    of the mid), not measured."""

    half_spread_bps: float = 0.1
    level_spacing_bps: float = 0.5
    level_notional_usd: float = 1_000_000.0
    n_levels: int = 40

    def __post_init__(self) -> None:
        if not (math.isfinite(self.half_spread_bps) and self.half_spread_bps > 0):
            raise ValueError("DepthModel.half_spread_bps must be > 0")
        if not (math.isfinite(self.level_spacing_bps) and self.level_spacing_bps > 0):
            raise ValueError("DepthModel.level_spacing_bps must be > 0")
        if not (math.isfinite(self.level_notional_usd) and self.level_notional_usd > 0):
            raise ValueError("DepthModel.level_notional_usd must be > 0")
        if self.n_levels < 1:
            raise ValueError("DepthModel.n_levels must be >= 1")
        if (self.half_spread_bps + (self.n_levels - 1) * self.level_spacing_bps) * BPS >= 1.0:
            raise ValueError("DepthModel: the deepest bid would be at or below zero")

    def book(self, mid_usd: float, index_usd: float = math.nan) -> Book:
        if not (math.isfinite(mid_usd) and mid_usd > 0):
            raise ValueError(f"DepthModel.book: mid_usd must be finite and > 0, got {mid_usd!r}")
        offsets = (self.half_spread_bps + np.arange(self.n_levels) * self.level_spacing_bps) * BPS
        bids = mid_usd * (1.0 - offsets)
        asks = mid_usd * (1.0 + offsets)
        return Book(bids, self.level_notional_usd / bids, asks, self.level_notional_usd / asks,
                    index_usd)


def _as_book(book_or_mid: Book | float, depth: DepthModel) -> Book:
    if isinstance(book_or_mid, Book):
        return book_or_mid
    return depth.book(float(book_or_mid))


# --------------------------------------------------------------------------- walking the book

def _eligible_levels(prices_usd: np.ndarray, worst_price_usd: float, side: str) -> int:
    """How many leading levels are at or better than ``worst_price_usd`` (all when NaN)."""
    if math.isnan(worst_price_usd):
        return len(prices_usd)
    if side_sign(side) > 0:  # asks ascending: prices <= worst
        return int(np.searchsorted(prices_usd, worst_price_usd, side="right"))
    return int(np.searchsorted(-prices_usd, -worst_price_usd, side="right"))  # bids descending


def fill_curve(prices_usd, sizes_coin, quantities_coin, side: str,
               worst_price_usd: float = math.nan) -> tuple[np.ndarray, np.ndarray]:
    """Walk one side of a book for each of ``quantities_coin`` (vectorized): ``(filled_coin,
    notional_usd)``. ``prices_usd`` are the levels in the order they are taken (asks ascending
    for a buy, bids descending for a sell); only levels at or better than ``worst_price_usd``
    (a limit; NaN = none) are taken. ``filled = min(quantity, eligible depth)`` and the notional
    is the sum over the levels taken of ``size * price`` with the last level taken in part.
    The VWAP is ``notional / filled``."""
    prices = np.asarray(prices_usd, dtype=float)
    sizes = np.asarray(sizes_coin, dtype=float)
    quantities = np.asarray(quantities_coin, dtype=float)
    k = _eligible_levels(prices, worst_price_usd, side)
    if k == 0:
        zeros = np.zeros_like(quantities)
        return zeros, zeros.copy()
    p, s = prices[:k], sizes[:k]
    cum_size = np.concatenate(([0.0], np.cumsum(s)))
    cum_notional = np.concatenate(([0.0], np.cumsum(s * p)))
    filled = np.minimum(quantities, cum_size[-1])
    # the level the last coin comes from: cum_size[i] < filled <= cum_size[i + 1]
    i = np.clip(np.searchsorted(cum_size, filled, side="left") - 1, 0, k - 1)
    notional = cum_notional[i] + (filled - cum_size[i]) * p[i]
    return filled, notional


def walk_book(prices_usd, sizes_coin, quantity_coin: float, side: str,
              worst_price_usd: float = math.nan) -> tuple[float, float]:
    """``(filled_coin, vwap_usd)`` of one quantity (``vwap`` NaN when nothing fills)."""
    filled, notional = fill_curve(prices_usd, sizes_coin, quantity_coin, side, worst_price_usd)
    filled, notional = float(filled), float(notional)
    return filled, (notional / filled if filled > 0 else math.nan)


def _consume(sizes_coin: np.ndarray, filled_coin: float) -> np.ndarray:
    """The sizes left after ``filled_coin`` was taken from the front of the levels."""
    left = np.maximum(np.cumsum(sizes_coin) - filled_coin, 0.0)
    return np.diff(left, prepend=0.0)


def slippage_bps(side: str, price_usd, mid_usd):
    """Cost of ``price_usd`` against ``mid_usd`` in bps, positive when it costs (paid above the
    mid on a buy, received below it on a sell)."""
    return side_sign(side) * (np.asarray(price_usd, float) - mid_usd) / mid_usd / BPS


# --------------------------------------------------------------------------- venues and fees

@dataclass(frozen=True, slots=True)
class VenueConfig:
    """A venue. Fees in bps of the notional (``maker_fee_bps`` may be negative: a rebate);
    ``latency_s`` from submission to the matching engine; funding every ``funding_interval_h``
    hours from ``funding_offset_h`` past midnight UTC; ``kinds`` the instrument kinds it trades;
    ``leverage`` the initial margin ``1 / leverage`` locked for futures positions and orders;
    ``depth`` the synthetic book when only a mid is known. Options (``"put"``) pay Deribit's fee:
    ``option_fee_fraction_of_index`` of the underlying's index per coin, capped at
    ``option_fee_cap_fraction_of_premium`` of the premium (the cap alone when no index is known)."""

    name: str
    maker_fee_bps: float
    taker_fee_bps: float
    latency_s: float
    funding_interval_h: float = 8.0
    funding_offset_h: float = 0.0
    kinds: tuple[str, ...] = ("perp",)
    leverage: float = 10.0
    depth: DepthModel = DepthModel()
    option_fee_fraction_of_index: float = 0.0003
    option_fee_cap_fraction_of_premium: float = 0.125

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("VenueConfig.name must not be empty")
        if not (math.isfinite(self.taker_fee_bps) and 0 <= self.taker_fee_bps < 1e4):
            raise ValueError(f"VenueConfig.taker_fee_bps must be in [0, 1e4), got {self.taker_fee_bps}")
        if not (math.isfinite(self.maker_fee_bps) and -self.taker_fee_bps <= self.maker_fee_bps < 1e4):
            raise ValueError("VenueConfig.maker_fee_bps must be finite, >= -taker_fee_bps (a rebate "
                             f"larger than the taker fee would pay to trade with oneself), got "
                             f"{self.maker_fee_bps}")
        if not (math.isfinite(self.latency_s) and self.latency_s >= 0):
            raise ValueError(f"VenueConfig.latency_s must be finite and >= 0, got {self.latency_s}")
        if not (math.isfinite(self.funding_interval_h) and self.funding_interval_h > 0):
            raise ValueError("VenueConfig.funding_interval_h must be > 0")
        if not (0 <= self.funding_offset_h < self.funding_interval_h):
            raise ValueError("VenueConfig.funding_offset_h must be in [0, funding_interval_h)")
        if not self.kinds or any(k not in KINDS for k in self.kinds):
            raise ValueError(f"VenueConfig.kinds must be a non-empty subset of {KINDS}")
        if not (math.isfinite(self.leverage) and self.leverage >= 1):
            raise ValueError(f"VenueConfig.leverage must be >= 1, got {self.leverage}")
        if not (0 <= self.option_fee_fraction_of_index < 1 and
                0 <= self.option_fee_cap_fraction_of_premium <= 1):
            raise ValueError("VenueConfig: option fee fractions out of range")


# VIP-0 fee schedules as published (approximate; check the venue before relying on them); the
# latencies are illustrative round trips from a well-placed client, the depth models rough.
BINANCE_USDM = VenueConfig("binance_usdm", maker_fee_bps=2.0, taker_fee_bps=5.0, latency_s=0.05,
                           kinds=("perp", "quarterly"))
BYBIT = VenueConfig("bybit", maker_fee_bps=2.0, taker_fee_bps=5.5, latency_s=0.06,
                    kinds=("perp", "quarterly"),
                    depth=DepthModel(half_spread_bps=0.1, level_spacing_bps=0.5,
                                     level_notional_usd=600_000.0))
DERIBIT = VenueConfig("deribit", maker_fee_bps=0.0, taker_fee_bps=5.0, latency_s=0.08,
                      kinds=("perp", "quarterly", "put"),
                      depth=DepthModel(half_spread_bps=0.25, level_spacing_bps=1.0,
                                       level_notional_usd=300_000.0))
SPOT_VENUE = VenueConfig("spot", maker_fee_bps=10.0, taker_fee_bps=10.0, latency_s=0.05,
                         kinds=("spot",), leverage=1.0,
                         depth=DepthModel(half_spread_bps=0.2, level_spacing_bps=1.0,
                                          level_notional_usd=300_000.0))
DEFAULT_VENUES = (BINANCE_USDM, BYBIT, DERIBIT, SPOT_VENUE)


def fee_per_coin_usd(config: VenueConfig, kind: str, price_usd, liquidity: str,
                     index_usd: float = math.nan):
    """The fee per coin traded at ``price_usd`` (vectorized over prices). Options: the index
    fraction capped at the premium fraction; everything else: the maker or taker bps of the
    price."""
    price = np.asarray(price_usd, dtype=float)
    if kind == "put":
        cap = config.option_fee_cap_fraction_of_premium * price
        if math.isnan(index_usd):
            return cap
        return np.minimum(config.option_fee_fraction_of_index * index_usd, cap)
    if liquidity == "taker":
        bps = config.taker_fee_bps
    elif liquidity == "maker":
        bps = config.maker_fee_bps
    else:
        raise ValueError(f"liquidity must be 'maker' or 'taker', got {liquidity!r}")
    return price * bps * BPS


def fee_usd(config: VenueConfig, kind: str, quantity_coin: float, price_usd: float, liquidity: str,
            index_usd: float = math.nan) -> float:
    """The fee of one fill: ``quantity * fee_per_coin``."""
    return float(quantity_coin * fee_per_coin_usd(config, kind, price_usd, liquidity, index_usd))


# --------------------------------------------------------------------------- funding

def funding_times(start_ts_s: float, end_ts_s: float, interval_h: float = 8.0,
                  offset_h: float = 0.0) -> np.ndarray:
    """The funding instants ``t`` with ``start < t <= end`` (epoch s), ``t = offset + k * interval``
    since the epoch: 00:00, 08:00, 16:00 UTC for the usual 8 h."""
    interval_s = interval_h * SECONDS_PER_HOUR
    offset_s = offset_h * SECONDS_PER_HOUR
    k0 = math.floor((start_ts_s - offset_s) / interval_s) + 1
    k1 = math.floor((end_ts_s - offset_s) / interval_s)
    return offset_s + np.arange(k0, max(k1, k0 - 1) + 1, dtype=float) * interval_s


def is_funding_time(ts_s: float, interval_h: float = 8.0, offset_h: float = 0.0,
                    tolerance_s: float = 1e-3) -> bool:
    """True when ``ts_s`` is on the funding schedule (within ``tolerance_s``)."""
    interval_s = interval_h * SECONDS_PER_HOUR
    phase = (ts_s - offset_h * SECONDS_PER_HOUR) % interval_s
    return min(phase, interval_s - phase) <= tolerance_s


def funding_payment_usd(position_coin, mark_price_usd, rate_per_interval):
    """What a position RECEIVES at one funding time: ``-position * mark * rate`` (vectorized).
    A long (position > 0) pays when the rate is positive; a short receives."""
    return -np.asarray(position_coin, float) * mark_price_usd * rate_per_interval


@dataclass(frozen=True, slots=True)
class FundingSettlement:
    """One funding payment: ``payment_usd`` received by the account (negative: paid)."""

    ts_s: float
    venue: str
    asset: str
    position_coin: float
    mark_price_usd: float
    rate_per_interval: float
    payment_usd: float


def settle_funding(position_coin: float, mark_price_usd: float, rate_per_interval: float,
                   ts_s: float, interval_h: float = 8.0, offset_h: float = 0.0, venue: str = "",
                   asset: str = "") -> FundingSettlement:
    """The funding settled at ``ts_s``, which must be one of the schedule's funding times
    (ValueError otherwise: settling off schedule is a caller's bug). Mark and rate must be
    finite: a funding settled on an unknown mark would be a guess."""
    if not is_funding_time(ts_s, interval_h, offset_h):
        raise ValueError(f"settle_funding: {ts_s} is not a funding time of the {interval_h} h "
                         f"schedule (offset {offset_h} h)")
    if not (math.isfinite(mark_price_usd) and mark_price_usd > 0 and math.isfinite(rate_per_interval)
            and math.isfinite(position_coin)):
        raise ValueError("settle_funding: position, mark and rate must be finite (mark > 0)")
    payment = float(funding_payment_usd(position_coin, mark_price_usd, rate_per_interval))
    return FundingSettlement(ts_s, venue, asset, float(position_coin), float(mark_price_usd),
                             float(rate_per_interval), payment)


# --------------------------------------------------------------------------- balances

@dataclass(frozen=True, slots=True)
class CoinBalance:
    """Spot coins of one asset: ``total = available + locked`` (locked by open sell orders)."""

    asset: str
    available_coin: float
    locked_coin: float
    total_coin: float


@dataclass(frozen=True, slots=True)
class VenueBalance:
    """A venue's balances at one moment (plan 004's per-venue available / locked / total).

    ``total_usd = wallet_usd + unrealized_pnl_usd`` (the margin balance), ``locked_usd`` the
    futures' initial margin plus what open orders lock, ``available_usd = total - locked`` (may be
    negative: under-margined). ``equity_usd`` adds the spot coins and puts at mark."""

    venue: str
    available_usd: float
    locked_usd: float
    total_usd: float
    wallet_usd: float
    unrealized_pnl_usd: float
    equity_usd: float
    coins: tuple[CoinBalance, ...] = ()

    def coin(self, asset: str) -> CoinBalance:
        for c in self.coins:
            if c.asset == asset:
                return c
        return CoinBalance(asset, 0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class CombinedBalance:
    """The sum over venues (plan 004's ``combined``), with the per-venue rows it sums."""

    available_usd: float
    locked_usd: float
    total_usd: float
    equity_usd: float
    coins: tuple[CoinBalance, ...]
    by_venue: tuple[VenueBalance, ...]

    def coin(self, asset: str) -> CoinBalance:
        for c in self.coins:
            if c.asset == asset:
                return c
        return CoinBalance(asset, 0.0, 0.0, 0.0)


def _combine(balances: Sequence[VenueBalance]) -> CombinedBalance:
    assets = sorted({c.asset for b in balances for c in b.coins})
    coins = tuple(CoinBalance(a, *(math.fsum(getattr(b.coin(a), f) for b in balances)
                                   for f in ("available_coin", "locked_coin", "total_coin")))
                  for a in assets)
    return CombinedBalance(math.fsum(b.available_usd for b in balances),
                           math.fsum(b.locked_usd for b in balances),
                           math.fsum(b.total_usd for b in balances),
                           math.fsum(b.equity_usd for b in balances), coins, tuple(balances))


@dataclass
class _Holding:
    quantity_coin: float = 0.0
    entry_price_usd: float = math.nan
    mark_usd: float = math.nan


class VenueAccount:
    """One venue's cash, positions and locks (a small state machine; the venue drives it).

    Counters kept so the cash reconciles (``cash_identity_error_usd``):
    ``wallet = deposits + transfers + realized_pnl - fees + funding - cash_notional_paid``.
    """

    def __init__(self, venue: str, leverage: float, wallet_usd: float = 0.0) -> None:
        if not (math.isfinite(wallet_usd) and wallet_usd >= 0):
            raise ValueError("VenueAccount: wallet_usd must be finite and >= 0")
        self.venue = venue
        self.leverage = leverage
        self.wallet_usd = float(wallet_usd)
        self.net_deposits_usd = float(wallet_usd)
        self.net_transfers_usd = 0.0
        self.realized_pnl_usd = 0.0
        self.fees_paid_usd = 0.0
        self.funding_received_usd = 0.0
        self.cash_notional_paid_usd = 0.0
        self._holdings: dict[tuple[str, str], _Holding] = {}
        self._locks_usd: dict[str, float] = {}
        self._locks_coin: dict[str, tuple[str, float]] = {}

    # ---- cash movements
    def deposit(self, amount_usd: float) -> None:
        if not (math.isfinite(amount_usd) and amount_usd > 0):
            raise ValueError("deposit: amount_usd must be finite and > 0")
        self.wallet_usd += amount_usd
        self.net_deposits_usd += amount_usd

    def withdraw(self, amount_usd: float) -> None:
        """Refused (ValueError) above the available balance."""
        if not (math.isfinite(amount_usd) and amount_usd > 0):
            raise ValueError("withdraw: amount_usd must be finite and > 0")
        if amount_usd > self.available_usd() + 1e-9:
            raise ValueError(f"withdraw: {amount_usd} above available {self.available_usd()}")
        self.wallet_usd -= amount_usd
        self.net_deposits_usd -= amount_usd

    def deposit_coin(self, asset: str, quantity_coin: float, mark_usd: float = math.nan) -> None:
        """Credit spot coins (no cash moves), e.g. plan 001's starting Q_B; ``mark_usd`` prices
        them until a market does (and is their entry for reporting)."""
        if not (math.isfinite(quantity_coin) and quantity_coin > 0):
            raise ValueError("deposit_coin: quantity_coin must be finite and > 0")
        h = self._holding(asset, "spot")
        if math.isfinite(mark_usd) and mark_usd > 0:
            e = h.entry_price_usd if h.quantity_coin > 0 else 0.0
            h.entry_price_usd = (h.quantity_coin * e + quantity_coin * mark_usd) / \
                (h.quantity_coin + quantity_coin)
            h.mark_usd = mark_usd
        h.quantity_coin += quantity_coin

    def _transfer(self, amount_usd: float) -> None:
        self.wallet_usd += amount_usd
        self.net_transfers_usd += amount_usd

    # ---- positions
    def _holding(self, asset: str, kind: str) -> _Holding:
        return self._holdings.setdefault((asset, kind), _Holding())

    def position_coin(self, asset: str, kind: str) -> float:
        h = self._holdings.get((asset, kind))
        return h.quantity_coin if h else 0.0

    def entry_price_usd(self, asset: str, kind: str) -> float:
        h = self._holdings.get((asset, kind))
        return h.entry_price_usd if h else math.nan

    def positions(self) -> dict[tuple[str, str], float]:
        """Non-zero positions, ``{(asset, kind): signed coins}``."""
        return {key: h.quantity_coin for key, h in self._holdings.items() if h.quantity_coin != 0}

    def set_mark(self, asset: str, kind: str, mark_usd: float) -> None:
        if math.isfinite(mark_usd) and mark_usd > 0:
            self._holding(asset, kind).mark_usd = float(mark_usd)

    def apply_fill(self, fill: Fill) -> None:
        """Move the position, entry, cash and fee counters by ``fill``."""
        h = self._holding(fill.asset, fill.kind)
        d, p = fill.signed_quantity_coin, fill.price_usd
        q, e = h.quantity_coin, h.entry_price_usd
        new_q = q + d
        if abs(new_q) <= _REL_EPS * max(abs(q), abs(d)):
            new_q = 0.0
        if q == 0 or (q > 0) == (d > 0):
            new_e = (abs(q) * (0.0 if q == 0 else e) + abs(d) * p) / abs(new_q)
            realized = 0.0
        else:
            closed = min(abs(d), abs(q))
            realized = closed * (p - e) * (1.0 if q > 0 else -1.0)
            new_e = math.nan if new_q == 0 else (p if abs(d) > abs(q) else e)
        if fill.kind in FUTURES_KINDS:
            self.wallet_usd += realized
            self.realized_pnl_usd += realized
        else:  # the notional changes hands
            self.wallet_usd -= d * p
            self.cash_notional_paid_usd += d * p
        self.wallet_usd -= fill.fee_usd
        self.fees_paid_usd += fill.fee_usd
        h.quantity_coin, h.entry_price_usd = new_q, new_e
        if math.isnan(h.mark_usd):
            h.mark_usd = p

    def apply_funding(self, settlement: FundingSettlement) -> None:
        self.wallet_usd += settlement.payment_usd
        self.funding_received_usd += settlement.payment_usd
        self.set_mark(settlement.asset, "perp", settlement.mark_price_usd)

    # ---- locks
    def lock(self, order_id: str, usd: float = 0.0, asset: str = "", coin: float = 0.0) -> None:
        """Set (overwrite) what ``order_id`` locks: ``usd`` of cash, ``coin`` coins of ``asset``."""
        self._locks_usd[order_id] = max(float(usd), 0.0)
        if coin > 0:
            self._locks_coin[order_id] = (asset, float(coin))
        else:
            self._locks_coin.pop(order_id, None)

    def release(self, order_id: str) -> None:
        self._locks_usd.pop(order_id, None)
        self._locks_coin.pop(order_id, None)

    # ---- balances
    def _mark_of(self, h: _Holding) -> float:
        return h.mark_usd if math.isfinite(h.mark_usd) else h.entry_price_usd

    def unrealized_pnl_usd(self) -> float:
        return math.fsum(h.quantity_coin * (self._mark_of(h) - h.entry_price_usd)
                         for (_, kind), h in self._holdings.items()
                         if kind in FUTURES_KINDS and h.quantity_coin != 0)

    def margin_usd(self) -> float:
        """Initial margin of the futures positions at mark: ``sum |q| * mark / leverage``."""
        return math.fsum(abs(h.quantity_coin) * self._mark_of(h) / self.leverage
                         for (_, kind), h in self._holdings.items()
                         if kind in FUTURES_KINDS and h.quantity_coin != 0)

    def total_usd(self) -> float:
        return self.wallet_usd + self.unrealized_pnl_usd()

    def locked_usd(self) -> float:
        return self.margin_usd() + math.fsum(self._locks_usd.values())

    def available_usd(self) -> float:
        return self.total_usd() - self.locked_usd()

    def coin_balance(self, asset: str) -> CoinBalance:
        total = self.position_coin(asset, "spot")
        locked = math.fsum(c for a, c in self._locks_coin.values() if a == asset)
        return CoinBalance(asset, total - locked, locked, total)

    def equity_usd(self) -> float:
        cash_held = math.fsum(h.quantity_coin * self._mark_of(h)
                              for (_, kind), h in self._holdings.items()
                              if kind in CASH_KINDS and h.quantity_coin != 0)
        return self.total_usd() + cash_held

    def cash_identity_error_usd(self) -> float:
        """``wallet - (deposits + transfers + realized - fees + funding - cash notional)``: zero up
        to float error unless something moved cash outside the counted paths."""
        return self.wallet_usd - (self.net_deposits_usd + self.net_transfers_usd
                                  + self.realized_pnl_usd - self.fees_paid_usd
                                  + self.funding_received_usd - self.cash_notional_paid_usd)

    def snapshot(self) -> VenueBalance:
        assets = sorted({a for (a, kind) in self._holdings if kind == "spot"}
                        | {a for a, _ in self._locks_coin.values()})
        total, locked = self.total_usd(), self.locked_usd()
        return VenueBalance(self.venue, total - locked, locked, total, self.wallet_usd,
                            self.unrealized_pnl_usd(), self.equity_usd(),
                            tuple(self.coin_balance(a) for a in assets))


# --------------------------------------------------------------------------- venues

@dataclass(frozen=True, slots=True)
class OrderReport:
    """What became of an order: ``status`` ``"open"``, ``"filled"``, ``"cancelled"`` (with
    whatever part filled before), ``avg_price_usd`` the VWAP of its fills (NaN if none),
    ``slippage_bps`` against the mid of the book it first met (NaN if none), ``mid_usd`` that
    mid."""

    order: Order
    status: str
    filled_coin: float
    avg_price_usd: float
    fees_usd: float
    mid_usd: float
    slippage_bps: float
    arrival_ts_s: float


@dataclass
class _OpenOrder:
    order: Order
    arrival_ts_s: float
    time_in_force: str
    seq: int
    remaining_coin: float
    lock_usd: float = 0.0
    lock_coin: float = 0.0
    filled_coin: float = 0.0
    notional_usd: float = 0.0
    fees_usd: float = 0.0
    mid_usd: float = math.nan
    matched_once: bool = False

    def report(self, status: str) -> OrderReport:
        avg = self.notional_usd / self.filled_coin if self.filled_coin > 0 else math.nan
        slip = float(slippage_bps(self.order.side, avg, self.mid_usd)) if self.filled_coin > 0 \
            and math.isfinite(self.mid_usd) else math.nan
        return OrderReport(self.order, status, self.filled_coin, avg, self.fees_usd, self.mid_usd,
                           slip, self.arrival_ts_s)


@runtime_checkable
class Venue(Protocol):
    """What the engine needs of a venue. ``PaperVenue`` implements it; a live venue (real order
    placement) would implement the same methods and stays OFF unless configured with keys. There
    is no live implementation in this code base."""

    config: VenueConfig

    def submit(self, order: Order, time_in_force: str | None = None) -> Order | Rejection: ...

    def cancel(self, order_id: str) -> bool: ...

    def on_market(self, ts_s: float, asset: str, kind: str, book_or_mid: Book | float) -> list[Fill]: ...

    def settle_funding(self, asset: str, mark_price_usd: float, rate_per_interval: float,
                       ts_s: float) -> FundingSettlement: ...

    def balance(self) -> VenueBalance: ...


class PaperVenue:
    """A simulated venue (see the module docstring for the fill model).

    ``enforce_balance`` (off by default, so a bare venue fills whatever it is given) refuses at
    submission orders whose lock exceeds the available balance, and orders it cannot price.
    Locks: a futures order locks the initial margin of the part that would open or extend the
    position (``qty * price / leverage``) plus the taker fee; a part that reduces the current
    position, or a reduce-only order, locks only the fee. A spot or put buy locks its notional
    plus the fee; a spot sell locks the coins; a put sell (closing) the fee. The price is the
    limit, else the instrument's last known mid (a market order sent before any market of its
    instrument locks nothing; ``enforce_balance`` refuses it); the lock shrinks as the order fills
    and is released when it ends.
    Rejections (rule names start with ``venue_``) are kept in ``rejections``; the reports of the
    newest ``max_reports`` finished orders in ``report(order_id)``.
    """

    def __init__(self, config: VenueConfig, wallet_usd: float = 0.0,
                 enforce_balance: bool = False, max_reports: int = 100_000) -> None:
        if max_reports < 1:
            raise ValueError("PaperVenue.max_reports must be >= 1")
        self.config = config
        self.max_reports = max_reports
        self.account = VenueAccount(config.name, config.leverage, wallet_usd)
        self.enforce_balance = enforce_balance
        self.rejections: list[Rejection] = []
        self._open: dict[str, _OpenOrder] = {}
        self._reports: dict[str, OrderReport] = {}
        self._last_mid: dict[tuple[str, str], float] = {}
        self._last_funding_ts: dict[str, float] = {}
        self._seq = itertools.count()

    # ---- orders
    def _reject(self, order: Order, rule: str, detail: str) -> Rejection:
        rejection = Rejection(order.ts_s, order, rule, detail)
        self.rejections.append(rejection)
        return rejection

    def _refused(self, order: Order, rule: str, detail: str) -> list[Fill]:
        self._reject(order, rule, detail)
        return []

    def _lock_for(self, order: Order, price_usd: float) -> tuple[float, float]:
        """(usd, coin) to lock for ``order`` at ``price_usd``."""
        q = order.quantity_coin
        fee = fee_usd(self.config, order.kind, q, price_usd, "taker")
        if order.kind in FUTURES_KINDS:
            opening = 0.0 if order.reduce_only else max(q - self._reducible(order), 0.0)
            return opening * price_usd / self.config.leverage + fee, 0.0
        if order.side == "buy":
            return q * price_usd + fee, 0.0
        if order.kind == "spot":
            return 0.0, q
        return fee, 0.0

    def submit(self, order: Order, time_in_force: str | None = None,
               arrival_ts_s: float | None = None) -> Order | Rejection:
        """Accept ``order`` for matching at ``arrival_ts_s`` (default ``order.ts_s + latency_s``)
        and return it (with ``venue`` set and an ``order_id`` assigned when it had none), or a
        ``Rejection``. ``time_in_force`` ``"IOC"`` / ``"GTC"``; None: IOC for market orders,
        GTC for limit orders."""
        if order.order_id == "":
            order = replace(order, order_id=f"{self.config.name}-{next(self._seq)}")
        if order.venue == "":
            order = replace(order, venue=self.config.name)
        problems = order_problems(order)
        if problems:
            return self._reject(order, "venue_invalid_order", "; ".join(problems))
        if order.venue != self.config.name:
            return self._reject(order, "venue_mismatch",
                                f"order for {order.venue!r} sent to {self.config.name!r}")
        if order.kind not in self.config.kinds:
            return self._reject(order, "venue_unsupported_kind",
                                f"{self.config.name} trades {self.config.kinds}, not {order.kind!r}")
        if order.order_id in self._open or order.order_id in self._reports:
            return self._reject(order, "venue_duplicate_order_id", order.order_id)
        tif = time_in_force or ("IOC" if order.is_market else "GTC")
        if tif not in TIME_IN_FORCE:
            return self._reject(order, "venue_invalid_order", f"time in force {tif!r}")
        price = order.limit_price_usd if not order.is_market else \
            self._last_mid.get((order.asset, order.kind), math.nan)
        lock_usd, lock_coin = (0.0, 0.0) if math.isnan(price) else self._lock_for(order, price)
        if self.enforce_balance:
            if math.isnan(price):
                return self._reject(order, "venue_no_price",
                                    f"no price known for {order.asset} {order.kind} to margin it")
            if lock_usd > self.account.available_usd() + 1e-9:
                return self._reject(order, "venue_insufficient_balance",
                                    f"needs {lock_usd:.2f} USD, {self.account.available_usd():.2f} "
                                    "available")
            if lock_coin > self.account.coin_balance(order.asset).available_coin + 1e-12:
                return self._reject(order, "venue_insufficient_balance",
                                    f"needs {lock_coin} {order.asset}, "
                                    f"{self.account.coin_balance(order.asset).available_coin} available")
        arrival = order.ts_s + self.config.latency_s if arrival_ts_s is None else arrival_ts_s
        self.account.lock(order.order_id, lock_usd, order.asset, lock_coin)
        self._open[order.order_id] = _OpenOrder(order, arrival, tif, next(self._seq),
                                                order.quantity_coin, lock_usd, lock_coin)
        return order

    def cancel(self, order_id: str) -> bool:
        """Cancel an open order (its lock is released); False when it is not open."""
        state = self._open.pop(order_id, None)
        if state is None:
            return False
        self._finish(state, "cancelled")
        return True

    def cancel_all(self) -> int:
        """Cancel every open order; returns how many."""
        ids = list(self._open)
        for order_id in ids:
            self.cancel(order_id)
        return len(ids)

    def _finish(self, state: _OpenOrder, status: str) -> None:
        self._open.pop(state.order.order_id, None)
        self.account.release(state.order.order_id)
        self._reports[state.order.order_id] = state.report(status)
        if len(self._reports) > self.max_reports:  # a long backtest: keep the newest only
            del self._reports[next(iter(self._reports))]

    @property
    def open_orders(self) -> tuple[Order, ...]:
        return tuple(s.order for s in sorted(self._open.values(), key=lambda s: s.seq))

    def report(self, order_id: str) -> OrderReport | None:
        """The state of an order, open or done (None if unknown)."""
        if order_id in self._open:
            return self._open[order_id].report("open")
        return self._reports.get(order_id)

    # ---- matching
    def _match(self, state: _OpenOrder, ts_s: float, book: Book,
               work: dict[str, tuple[np.ndarray, np.ndarray]]) -> Fill | None:
        order = state.order
        prices, sizes = work[order.side]
        quantity = state.remaining_coin
        if order.reduce_only:
            quantity = min(quantity, self._reducible(order))
        if not state.matched_once:
            state.mid_usd = book.mid_usd
        maker = state.matched_once and not order.is_market
        state.matched_once = True
        if quantity <= _REL_EPS * order.quantity_coin:
            return None
        if maker:  # a resting limit order: fills at its price for the depth through it
            filled, _ = fill_curve(prices, sizes, quantity, order.side, order.limit_price_usd)
            filled = float(filled)
            price = order.limit_price_usd
        else:
            filled, price = walk_book(prices, sizes, quantity, order.side, order.limit_price_usd)
        if filled <= 0:
            return None
        work[order.side] = (prices, _consume(sizes, filled))
        liquidity = "maker" if maker else "taker"
        fee = fee_usd(self.config, order.kind, filled, price, liquidity, book.index_usd)
        fill = Fill(ts_s, order.order_id, order.asset, order.kind, order.side, self.config.name,
                    filled, price, fee, liquidity)
        state.filled_coin += filled
        state.notional_usd += filled * price
        state.fees_usd += fee
        state.remaining_coin = max(order.quantity_coin - state.filled_coin, 0.0)
        self.account.apply_fill(fill)
        left = state.remaining_coin / order.quantity_coin
        self.account.lock(order.order_id, state.lock_usd * left, order.asset, state.lock_coin * left)
        return fill

    def _after_match(self, state: _OpenOrder) -> None:
        if state.remaining_coin <= _REL_EPS * state.order.quantity_coin:
            self._finish(state, "filled")
        elif state.time_in_force == "IOC" or (state.order.reduce_only
                                               and self._reducible(state.order) <= 0):
            self._finish(state, "cancelled")

    def _reducible(self, order: Order) -> float:
        """How much of the current position ``order`` would reduce (0 if it extends it)."""
        position = self.account.position_coin(order.asset, order.kind)
        return abs(position) if position * side_sign(order.side) < 0 else 0.0

    def _observe(self, ts_s: float, asset: str, kind: str, book: Book) -> None:
        mid = book.mid_usd
        if math.isfinite(mid):
            self._last_mid[(asset, kind)] = mid
            self.account.set_mark(asset, kind, mid)

    def on_market(self, ts_s: float, asset: str, kind: str, book_or_mid: Book | float) -> list[Fill]:
        """The market of ``asset``/``kind`` at ``ts_s``: match every open order on it that has
        arrived by ``ts_s`` (in arrival order, sharing this book's depth) and return the fills,
        stamped ``ts_s``. The mid also becomes the instrument's mark. A NaN mid matches nothing."""
        if not isinstance(book_or_mid, Book) and not math.isfinite(book_or_mid):
            return []  # an unknown price fills nothing: the orders wait for a real market
        due = sorted((s for s in self._open.values()
                      if s.order.asset == asset and s.order.kind == kind and s.arrival_ts_s <= ts_s),
                     key=lambda s: (s.arrival_ts_s, s.seq))
        if not due and not isinstance(book_or_mid, Book):
            # the hot path of a bar-by-bar backtest: only the mark moves, no book is needed
            mid = float(book_or_mid)
            if mid > 0:
                self._last_mid[(asset, kind)] = mid
                self.account.set_mark(asset, kind, mid)
            return []
        book = _as_book(book_or_mid, self.config.depth)
        self._observe(ts_s, asset, kind, book)
        work = {"buy": book.side_for("buy"), "sell": book.side_for("sell")}
        fills = []
        for state in due:
            fill = self._match(state, ts_s, book, work)
            if fill is not None:
                fills.append(fill)
            self._after_match(state)
        return fills

    def execute(self, order: Order, book_or_mid: Book | float, ts_s: float,
                time_in_force: str | None = None) -> list[Fill]:
        """Submit ``order`` and match it at once against ``book_or_mid``, the market at ``ts_s``
        (no latency added: the caller passes the book the order meets). Returns its fills (empty
        when refused, e.g. on a NaN mid: see ``rejections``). Other open orders are not matched
        here."""
        if not isinstance(book_or_mid, Book) and not math.isfinite(book_or_mid):
            return self._refused(order, "venue_no_price", "the market price is unknown (NaN)")
        book = _as_book(book_or_mid, self.config.depth)
        self._observe(ts_s, order.asset, order.kind, book)
        accepted = self.submit(order, time_in_force, arrival_ts_s=ts_s)
        if isinstance(accepted, Rejection):
            return []
        state = self._open[accepted.order_id]
        work = {"buy": book.side_for("buy"), "sell": book.side_for("sell")}
        fill = self._match(state, ts_s, book, work)
        self._after_match(state)
        return [] if fill is None else [fill]

    # ---- funding and balances
    def funding_times(self, start_ts_s: float, end_ts_s: float) -> np.ndarray:
        """This venue's funding instants in ``(start, end]``."""
        return funding_times(start_ts_s, end_ts_s, self.config.funding_interval_h,
                             self.config.funding_offset_h)

    def settle_funding(self, asset: str, mark_price_usd: float, rate_per_interval: float,
                       ts_s: float) -> FundingSettlement:
        """Settle the perpetual funding of ``asset`` at ``ts_s`` (a funding time of this venue,
        later than the last one settled for ``asset``; ValueError otherwise) on the current perp
        position at ``mark_price_usd``, and apply it to the account."""
        last = self._last_funding_ts.get(asset, -math.inf)
        if ts_s <= last:
            raise ValueError(f"settle_funding: {asset} already settled at {last}, not again at {ts_s}")
        settlement = settle_funding(self.account.position_coin(asset, "perp"), mark_price_usd,
                                    rate_per_interval, ts_s, self.config.funding_interval_h,
                                    self.config.funding_offset_h, self.config.name, asset)
        self._last_funding_ts[asset] = ts_s
        self.account.apply_funding(settlement)
        return settlement

    def settle_funding_between(self, asset: str, mark_price_usd: float, rate_per_interval: float,
                               start_ts_s: float, end_ts_s: float) -> list[FundingSettlement]:
        """Settle every funding time in ``(start, end]`` at one mark and rate (a bar's values)."""
        return [self.settle_funding(asset, mark_price_usd, rate_per_interval, float(t))
                for t in self.funding_times(start_ts_s, end_ts_s)]

    def balance(self) -> VenueBalance:
        return self.account.snapshot()


class CrossVenueBalance:
    """Balances across venues (plan 004's CrossChainBalance): per venue, combined, transfers
    between venues, what must move to fund an order, and a consistency check."""

    def __init__(self, venues: Sequence[PaperVenue]) -> None:
        names = [v.config.name for v in venues]
        if len(set(names)) != len(names):
            raise ValueError(f"CrossVenueBalance: duplicate venue names {names}")
        self.venues = {v.config.name: v for v in venues}

    def by_venue(self) -> dict[str, VenueBalance]:
        return {name: v.balance() for name, v in self.venues.items()}

    def combined(self) -> CombinedBalance:
        return _combine(list(self.by_venue().values()))

    def transfer_usd(self, from_venue: str, to_venue: str, amount_usd: float) -> None:
        """Move ``amount_usd`` of available cash; ValueError above what ``from_venue`` has
        available (nothing moves then)."""
        if from_venue == to_venue:
            raise ValueError("transfer_usd: same venue")
        source, target = self.venues[from_venue].account, self.venues[to_venue].account
        if not (math.isfinite(amount_usd) and amount_usd > 0):
            raise ValueError("transfer_usd: amount_usd must be finite and > 0")
        if amount_usd > source.available_usd() + 1e-9:
            raise ValueError(f"transfer_usd: {amount_usd} above {from_venue}'s available "
                             f"{source.available_usd()}")
        source._transfer(-amount_usd)
        target._transfer(amount_usd)

    def transfer_needed_usd(self, venue: str, required_usd: float) -> float:
        """How much must move to ``venue`` for it to have ``required_usd`` available (0 when it
        has), plan 004's ``requiredBalance.transferNeeded``."""
        return max(required_usd - self.venues[venue].account.available_usd(), 0.0)

    def inconsistencies(self, tolerance_usd: float = 1e-6) -> list[str]:
        """What does not reconcile: a venue's cash identity, ``total = available + locked``, the
        combined row against the sum of the venues, negative available balances."""
        problems = []
        for name, venue in self.venues.items():
            err = venue.account.cash_identity_error_usd()
            if abs(err) > tolerance_usd:
                problems.append(f"{name}: cash off its counters by {err:.6f} USD")
            b = venue.balance()
            if abs(b.total_usd - (b.available_usd + b.locked_usd)) > tolerance_usd:
                problems.append(f"{name}: total != available + locked")
            if b.available_usd < -tolerance_usd:
                problems.append(f"{name}: available {b.available_usd:.2f} USD < 0 (under-margined)")
            for c in b.coins:
                if c.available_coin < -1e-12:
                    problems.append(f"{name}: {c.asset} available {c.available_coin} < 0")
        transfers = math.fsum(v.account.net_transfers_usd for v in self.venues.values())
        if abs(transfers) > tolerance_usd:
            problems.append(f"transfers between venues do not net to zero ({transfers:.6f})")
        return problems


# --------------------------------------------------------------------------- routing

@dataclass(frozen=True, slots=True)
class ExecutionOption:
    """One venue's quote for the WHOLE order on its own (plan 004's ExecutionOption):
    ``fillable_coin`` within the limits, its VWAP, taker fee, slippage against the venue's own
    mid, ``all_in_price_usd`` per coin (VWAP plus fee per coin for a buy, minus for a sell;
    NaN when nothing fills), ``latency_s``, and ``depth_coin`` the depth within the limits."""

    venue: str
    fillable_coin: float
    vwap_usd: float
    fee_usd: float
    slippage_bps: float
    all_in_price_usd: float
    latency_s: float
    depth_coin: float


@dataclass(frozen=True, slots=True)
class Allocation:
    """The part of the order routed to one venue, with its expected VWAP and taker fee."""

    venue: str
    quantity_coin: float
    expected_price_usd: float
    expected_fee_usd: float


@dataclass(frozen=True, slots=True)
class ExecutionPlan:
    """The router's answer: the child orders (one per venue used), the allocations behind them,
    the per-venue options compared, the expected VWAP and fees of the whole plan, the part no
    venue can fill within the limits, and the reasoning in words."""

    order: Order
    children: tuple[Order, ...]
    allocations: tuple[Allocation, ...]
    options: tuple[ExecutionOption, ...]
    expected_price_usd: float
    expected_fee_usd: float
    unfilled_coin: float
    reasoning: tuple[str, ...]


class ExecutionOptimizer:
    """Route an order across venues by all-in cost (plan 004's ExecutionOptimizer).

    Every level of every eligible venue is priced all-in (price plus the taker fee per coin for a
    buy, minus for a sell); the cheapest levels are taken across venues until the quantity is
    filled. With costs linear within a level and rising level by level, that greedy merge is the
    cost-optimal split. Levels beyond the order's limit, or beyond ``max_slippage_bps`` from the
    reference mid (the median of the venues' mids), are not used: what they leave is
    ``unfilled_coin``. A venue whose part would be under ``min_child_coin`` is dropped and the
    split recomputed, unless that would fill less. ``split=False`` picks one venue: the cheapest
    all-in among those that can fill the whole order, else the one that fills most.
    An order that names its venue is passed through to it (when configured and it trades the
    kind). Venues without a book in ``books`` are skipped; a mid alone uses the venue's
    ``DepthModel``.
    """

    def __init__(self, venues: Sequence[VenueConfig], max_slippage_bps: float = math.inf,
                 min_child_coin: float = 0.0) -> None:
        names = [v.name for v in venues]
        if not venues or len(set(names)) != len(names):
            raise ValueError(f"ExecutionOptimizer: venues must be non-empty and distinct, got {names}")
        if not (max_slippage_bps > 0):
            raise ValueError("ExecutionOptimizer.max_slippage_bps must be > 0")
        if not (min_child_coin >= 0):
            raise ValueError("ExecutionOptimizer.min_child_coin must be >= 0")
        self.venues = {v.name: v for v in venues}
        self.max_slippage_bps = max_slippage_bps
        self.min_child_coin = min_child_coin

    def _worst_price(self, order: Order, reference_mid_usd: float) -> float:
        worst = order.limit_price_usd
        if math.isfinite(self.max_slippage_bps) and math.isfinite(reference_mid_usd):
            cap = reference_mid_usd * (1.0 + side_sign(order.side) * self.max_slippage_bps * BPS)
            worst = cap if math.isnan(worst) else (min(worst, cap) if order.side == "buy"
                                                   else max(worst, cap))
        return worst

    def _option(self, config: VenueConfig, order: Order, book: Book, worst: float) -> ExecutionOption:
        prices, sizes = book.side_for(order.side)
        depth = float(np.sum(sizes[:_eligible_levels(prices, worst, order.side)]))
        filled, vwap = walk_book(prices, sizes, order.quantity_coin, order.side, worst)
        fee = fee_usd(config, order.kind, filled, vwap, "taker", book.index_usd) if filled > 0 else 0.0
        all_in = vwap + side_sign(order.side) * fee / filled if filled > 0 else math.nan
        slip = float(slippage_bps(order.side, vwap, book.mid_usd)) if filled > 0 else math.nan
        return ExecutionOption(config.name, filled, vwap, fee, slip, all_in, config.latency_s, depth)

    def plan(self, order: Order, books: Mapping[str, Book | float], split: bool = True) -> ExecutionPlan:
        """The routing of ``order`` given each venue's market (``{venue name: book or mid}``)."""
        problems = order_problems(order)
        if problems:
            return self._empty(order, (), ("order refused: " + "; ".join(problems),))
        candidates = {name: _as_book(books[name], cfg.depth) for name, cfg in self.venues.items()
                      if name in books and order.kind in cfg.kinds}
        if order.venue:
            if order.venue not in candidates:
                return self._empty(order, (), (f"venue {order.venue!r} is fixed by the order but is "
                                               "not configured, has no market, or does not trade "
                                               f"{order.kind!r}",))
            candidates = {order.venue: candidates[order.venue]}
        if not candidates:
            return self._empty(order, (), (f"no venue with a market trades {order.kind!r}",))
        mids = [b.mid_usd for b in candidates.values() if math.isfinite(b.mid_usd)]
        reference = float(np.median(mids)) if mids else math.nan
        worst = self._worst_price(order, reference)
        options = tuple(self._option(self.venues[n], order, b, worst) for n, b in candidates.items())
        reasoning = [f"reference mid {reference:.6g} USD (median of {len(mids)} venue mids); worst "
                     f"acceptable price {worst:.6g}" if math.isfinite(worst) else
                     f"reference mid {reference:.6g} USD; no price limit"]
        for o in options:
            reasoning.append(f"{o.venue}: alone fills {o.fillable_coin:.6g} of "
                             f"{order.quantity_coin:.6g} at all-in {o.all_in_price_usd:.6g} USD/coin"
                             f" (slippage {o.slippage_bps:.3g} bps, fee {o.fee_usd:.4g} USD)")
        if order.venue:
            reasoning.append(f"venue fixed by the order: {order.venue}")
            names = [order.venue]
        elif split:
            names = list(candidates)
        else:
            names = [self._best_single(options, order)]
            reasoning.append(f"single venue chosen: {names[0]}")
        allocation = self._greedy(order, {n: candidates[n] for n in names}, worst)
        while split and not order.venue and self.min_child_coin > 0:
            small = [n for n, (q, _, _) in allocation.items() if 0 < q < self.min_child_coin]
            if not small:
                break
            drop = min(small, key=lambda n: allocation[n][0])
            rest = [n for n in names if n != drop]
            trial = self._greedy(order, {n: candidates[n] for n in rest}, worst) if rest else {}
            if sum(q for q, _, _ in trial.values()) + _REL_EPS * order.quantity_coin < \
                    sum(q for q, _, _ in allocation.values()):
                break
            reasoning.append(f"{drop} dropped: its part {allocation[drop][0]:.6g} is under the "
                             f"minimum child size {self.min_child_coin}")
            names, allocation = rest, trial
        return self._build(order, allocation, options, reasoning)

    @staticmethod
    def _best_single(options: Sequence[ExecutionOption], order: Order) -> str:
        sign = side_sign(order.side)
        full = [o for o in options if o.fillable_coin >= order.quantity_coin * (1 - _REL_EPS)]
        if full:
            return min(full, key=lambda o: sign * o.all_in_price_usd).venue
        most = max(o.fillable_coin for o in options)
        return min((o for o in options if o.fillable_coin == most),
                   key=lambda o: sign * np.nan_to_num(o.all_in_price_usd)).venue

    def _greedy(self, order: Order, books: Mapping[str, Book], worst: float
                ) -> dict[str, tuple[float, float, float]]:
        """``{venue: (quantity, notional, fee)}`` of the cost-optimal split over ``books``."""
        sign = side_sign(order.side)
        venue_idx, prices, sizes, fees = [], [], [], []
        names = list(books)
        for i, name in enumerate(names):
            book = books[name]
            p, s = book.side_for(order.side)
            k = _eligible_levels(p, worst, order.side)
            venue_idx.append(np.full(k, i))
            prices.append(p[:k])
            sizes.append(s[:k])
            fees.append(fee_per_coin_usd(self.venues[name], order.kind, p[:k], "taker", book.index_usd))
        if not names:
            return {}
        venue_idx, prices, sizes, fees = (np.concatenate(x) for x in (venue_idx, prices, sizes, fees))
        all_in = prices + sign * fees
        order_of = np.argsort(sign * all_in, kind="stable")
        cum = np.cumsum(sizes[order_of])
        taken = np.clip(order.quantity_coin - (cum - sizes[order_of]), 0.0, sizes[order_of])
        out = {}
        for i, name in enumerate(names):
            mask = venue_idx[order_of] == i
            q = float(np.sum(taken[mask]))
            if q > 0:
                out[name] = (q, float(np.sum(taken[mask] * prices[order_of][mask])),
                             float(np.sum(taken[mask] * fees[order_of][mask])))
        return out

    def _build(self, order: Order, allocation: Mapping[str, tuple[float, float, float]],
               options: tuple[ExecutionOption, ...], reasoning: list[str]) -> ExecutionPlan:
        allocs = tuple(Allocation(n, q, notional / q, fee)
                       for n, (q, notional, fee) in sorted(allocation.items(), key=lambda kv: -kv[1][0]))
        base_id = order.order_id or order.reason
        children = tuple(replace(order, venue=a.venue, quantity_coin=a.quantity_coin,
                                 order_id=f"{base_id}@{a.venue}" if len(allocs) > 1 or not order.order_id
                                 else order.order_id)
                         for a in allocs)
        filled = math.fsum(a.quantity_coin for a in allocs)
        notional = math.fsum(a.quantity_coin * a.expected_price_usd for a in allocs)
        fees = math.fsum(a.expected_fee_usd for a in allocs)
        unfilled = max(order.quantity_coin - filled, 0.0)
        if unfilled <= _REL_EPS * order.quantity_coin:
            unfilled = 0.0
        reasoning = list(reasoning)
        reasoning.append("routed: " + (", ".join(f"{a.quantity_coin:.6g} to {a.venue} at "
                                                  f"{a.expected_price_usd:.6g}" for a in allocs)
                                       or "nothing"))
        if unfilled > 0:
            reasoning.append(f"{unfilled:.6g} coin cannot be filled within the limits")
        return ExecutionPlan(order, children, allocs, options,
                             notional / filled if filled > 0 else math.nan, fees, unfilled,
                             tuple(reasoning))

    @staticmethod
    def _empty(order: Order, options, reasoning) -> ExecutionPlan:
        return ExecutionPlan(order, (), (), tuple(options), math.nan, 0.0, order.quantity_coin,
                             tuple(reasoning))
