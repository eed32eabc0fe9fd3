"""A Deribit-style option chain quoted from an arbitrage-free volatility surface. Pure: the caller
passes every time (``now_ts``) and price in; nothing here reads a clock or does I/O.

Surface. Total implied variance ``w(k, T) = sigma_imp(k, T)^2 T`` in log-moneyness
``k = ln(K / F_T)`` follows SSVI (Gatheral & Jacquier 2014, "Arbitrage-free SVI volatility
surfaces"), an SVI parametrization per expiry tied together across expiries::

    w(k, theta) = theta / 2 * (1 + rho phi k + sqrt((phi k + rho)^2 + 1 - rho^2))
    phi(theta)  = eta / (theta^gamma (1 + theta)^(1 - gamma))                    (power law)
    theta(T)    = sigma_atm(T)^2 T,
    sigma_atm(T) = sigma_long + (sigma_short - sigma_long) exp(-T / tau)

Each expiry's slice is a raw SVI ``a + b (rho (k - m) + sqrt((k - m)^2 + s^2))`` (``svi_params``).
``rho < 0`` gives the negative skew of crypto (puts richer than calls); ``sigma_short <
sigma_long`` an upward term structure. With ``theta`` increasing in ``T`` (it is: both factors
increase), ``gamma`` in (0, 1/2] and ``eta (1 + |rho|) <= 2`` the surface is free of static
arbitrage (their Remark 4.4 / Corollary 4.1): no calendar spread (``w`` increases with ``T`` at
every ``k``) and no butterfly (call prices convex and decreasing in strike). ``SurfaceParams``
checks those conditions.

Prices. Deribit options are inverse: quoted in coin, on the forward (``underlying_price``) of the
expiry. The premium in coin is the undiscounted Black-76 price divided by the forward
(``interest_rate`` 0, as Deribit publishes). Marks come from the surface; bids and asks are the
prices at ``mark_iv -/+`` a half spread in volatility, rounded outwards to Deribit's tick
(0.0001 coin below 0.005, 0.0005 above); ``bid_iv``/``ask_iv`` are the implied vols of the
*rounded* prices, so they are consistent with what is quoted. Greeks are Deribit's units:
delta per 1 of the forward, gamma per USD, vega in USD per vol point (1 %), theta in USD per day,
rho in USD per 1 % of rate (``models.deribit``, which also holds the premium and implied-vol
conventions used here).

Expiries. Deribit lists options expiring at 08:00 UTC: dailies (the next few days), weeklies
(Fridays), monthlies (the last Friday of a month) and quarterlies (the last Friday of March, June,
September, December). ``deribit_expiries`` builds that schedule from ``now_ts``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np

from models.deribit import EXPIRY_HOUR_UTC, MONTHS, coin_premium, deribit_greeks, implied_vol_from_coin

SECONDS_PER_YEAR = 365.0 * 24.0 * 3600.0

# Deribit's option tick: 0.0001 coin below 0.005, 0.0005 from 0.005 up (tick_size_steps).
TICK_SMALL = 0.0001
TICK_LARGE = 0.0005
TICK_STEP_ABOVE = 0.005
MIN_PRICE = 0.0001


# --------------------------------------------------------------------------- surface


@dataclass(frozen=True)
class SurfaceParams:
    """An SSVI surface; see the module docstring. Vols are annualized fractions, ``tau_years``
    the term-structure time scale in years."""

    atm_vol_short: float = 0.45
    atm_vol_long: float = 0.60
    tau_years: float = 0.25
    rho: float = -0.35
    eta: float = 1.0
    gamma: float = 0.45

    def __post_init__(self) -> None:
        if not (0.0 < self.atm_vol_short and 0.0 < self.atm_vol_long and self.tau_years > 0.0):
            raise ValueError(f"vols and tau_years must be positive: {self!r}")
        if not -1.0 < self.rho < 1.0:
            raise ValueError(f"rho must be in (-1, 1), got {self.rho!r}")
        if not 0.0 < self.gamma <= 0.5:
            raise ValueError(f"gamma must be in (0, 1/2] (no static arbitrage), got {self.gamma!r}")
        if not (self.eta > 0.0 and self.eta * (1.0 + abs(self.rho)) <= 2.0):
            raise ValueError("eta must be > 0 with eta (1 + |rho|) <= 2 (no butterfly arbitrage), "
                             f"got eta={self.eta!r}, rho={self.rho!r}")


BTC_SURFACE = SurfaceParams(atm_vol_short=0.45, atm_vol_long=0.60, tau_years=0.25, rho=-0.35)
ETH_SURFACE = SurfaceParams(atm_vol_short=0.58, atm_vol_long=0.75, tau_years=0.25, rho=-0.30)


def atm_vol(T, params: SurfaceParams):
    """ATM implied vol at maturity ``T`` (years): ``atm_vol_short`` rising to ``atm_vol_long``."""
    T = np.asarray(T, dtype=np.float64)
    return params.atm_vol_long + (params.atm_vol_short - params.atm_vol_long) * np.exp(
        -T / params.tau_years)


def atm_total_variance(T, params: SurfaceParams):
    """``theta(T) = atm_vol(T)^2 T``, increasing in ``T`` when ``atm_vol_short <= atm_vol_long``
    (and in any case for the defaults)."""
    T = np.asarray(T, dtype=np.float64)
    return np.square(atm_vol(T, params)) * T


def _phi(theta, params: SurfaceParams):
    theta = np.maximum(theta, 1e-300)
    return params.eta / (theta ** params.gamma * (1.0 + theta) ** (1.0 - params.gamma))


def total_variance(k, T, params: SurfaceParams):
    """SSVI total implied variance at log-moneyness ``k = ln(K/F)`` and maturity ``T`` (years)."""
    k = np.asarray(k, dtype=np.float64)
    theta = atm_total_variance(T, params)
    phi = _phi(theta, params)
    rho = params.rho
    return 0.5 * theta * (1.0 + rho * phi * k + np.sqrt(np.square(phi * k + rho) + 1.0 - rho * rho))


def implied_vol_surface(k, T, params: SurfaceParams):
    """``sqrt(w(k, T) / T)``: the surface's implied vol (annualized fraction); ``T > 0``."""
    T = np.asarray(T, dtype=np.float64)
    return np.sqrt(total_variance(k, T, params) / T)


@dataclass(frozen=True)
class SviSlice:
    """Raw SVI ``w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2))`` of one expiry."""

    a: float
    b: float
    rho: float
    m: float
    sigma: float

    def total_variance(self, k):
        k = np.asarray(k, dtype=np.float64)
        return self.a + self.b * (self.rho * (k - self.m) + np.sqrt(np.square(k - self.m)
                                                                     + self.sigma ** 2))


def svi_params(T: float, params: SurfaceParams) -> SviSlice:
    """The raw SVI parameters of the SSVI slice at ``T`` (Gatheral & Jacquier, Lemma 3.1)."""
    theta = float(atm_total_variance(T, params))
    phi = float(_phi(theta, params))
    rho = params.rho
    return SviSlice(a=0.5 * theta * (1.0 - rho * rho), b=0.5 * theta * phi, rho=rho,
                    m=-rho / phi, sigma=math.sqrt(1.0 - rho * rho) / phi)


# --------------------------------------------------------------------------- expiries


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def _at_expiry_hour(day: datetime) -> datetime:
    return day.replace(hour=EXPIRY_HOUR_UTC, minute=0, second=0, microsecond=0)


def _last_friday(year: int, month: int) -> datetime:
    nxt = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=timezone.utc)
    last = nxt - timedelta(days=1)
    return _at_expiry_hour(last - timedelta(days=(last.weekday() - 4) % 7))


@dataclass(frozen=True)
class Expiry:
    """One expiry: epoch seconds (08:00 UTC), its Deribit code (``27DEC24``) and settlement period
    ("day", "week" or "month"; quarterlies are monthlies that happen to be in a quarter month)."""

    ts: float
    code: str
    period: str
    quarterly: bool = False


def expiry_code(ts: float) -> str:
    """Deribit's date code: day without leading zero, month, two-digit year (``5DEC24``)."""
    d = _utc(ts)
    return f"{d.day}{MONTHS[d.month - 1]}{d.year % 100:02d}"


def deribit_expiries(now_ts: float, n_daily: int = 4, n_weekly: int = 4, n_monthly: int = 3,
                     n_quarterly: int = 3, min_life_s: float = 600.0) -> list[Expiry]:
    """Listed expiries after ``now_ts`` (each at least ``min_life_s`` away), earliest first.

    Dailies: the next ``n_daily`` 08:00 UTCs; weeklies: the next ``n_weekly`` Fridays; monthlies:
    the last Friday of the next ``n_monthly`` months; quarterlies: the next ``n_quarterly`` last
    Fridays of March, June, September and December. Where schedules coincide the expiry is listed
    once, with the longest period.
    """
    start = now_ts + min_life_s
    now = _utc(start)
    found: dict[float, tuple[str, bool]] = {}
    rank = {"day": 0, "week": 1, "month": 2}

    def add(dt: datetime, period: str, quarterly: bool = False) -> None:
        ts = dt.timestamp()
        if ts <= start:
            return
        old = found.get(ts)
        if old is None or rank[period] > rank[old[0]] or (quarterly and not old[1]):
            found[ts] = (period if old is None or rank[period] >= rank[old[0]] else old[0],
                         quarterly or (old[1] if old else False))

    day = _at_expiry_hour(now)
    if day.timestamp() <= start:
        day += timedelta(days=1)
    for i in range(n_daily):
        add(day + timedelta(days=i), "day")
    friday = day + timedelta(days=(4 - day.weekday()) % 7)
    for i in range(n_weekly):
        add(friday + timedelta(weeks=i), "week")
    year, month, n = now.year, now.month, 0
    while n < n_monthly:
        exp = _last_friday(year, month)
        if exp.timestamp() > start:
            add(exp, "month", quarterly=month % 3 == 0)
            n += 1
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    year, month, n = now.year, now.month, 0
    while n < n_quarterly:
        if month % 3 == 0:
            exp = _last_friday(year, month)
            if exp.timestamp() > start:
                add(exp, "month", quarterly=True)
                n += 1
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return [Expiry(ts, expiry_code(ts), period, quarterly)
            for ts, (period, quarterly) in sorted(found.items())]


# --------------------------------------------------------------------------- strikes and chain


def nice_step(raw: float) -> float:
    """The largest of 1, 2, 2.5, 5 times a power of ten that is <= ``raw`` (> 0)."""
    exponent = math.floor(math.log10(raw))
    for mult in (10.0, 5.0, 2.5, 2.0, 1.0):
        step = mult * 10.0 ** exponent
        if step <= raw * (1 + 1e-12):
            return step
    return 10.0 ** exponent  # pragma: no cover - 1 x covers every raw


def strike_grid(forward: float, T: float, vol: float, n_target: int = 24,
                n_sd_down: float = 2.5, n_sd_up: float = 2.0, min_width: float = 0.04,
                max_down: float = 1.2, max_up: float = 1.0) -> np.ndarray:
    """Strikes around ``forward`` for an expiry ``T`` years away with ATM vol ``vol``: from
    ``forward * exp(-width_down)`` to ``forward * exp(width_up)`` (``n_sd`` standard deviations
    ``vol sqrt T``, at least ``min_width``, at most ``max_down``/``max_up``) on a round step chosen
    so there are at least ``n_target`` strikes (at most about 2.5 times as many)."""
    sd = vol * math.sqrt(T)
    down = min(max(n_sd_down * sd, min_width), max_down)
    up = min(max(n_sd_up * sd, min_width), max_up)
    lo, hi = forward * math.exp(-down), forward * math.exp(up)
    step = nice_step((hi - lo) / max(n_target - 1, 1))
    first, last = math.ceil(lo / step), math.floor(hi / step)
    strikes = np.arange(first, last + 1, dtype=np.float64) * step
    return strikes[strikes > 0.0]


def _strike_text(strike: float) -> str:
    if float(strike).is_integer():
        return str(int(strike))
    return f"{strike:g}".replace(".", "d")


def option_name(asset: str, code: str, strike: float, is_call: bool) -> str:
    """Deribit's instrument name, e.g. ``BTC-27DEC24-100000-C``."""
    return f"{asset}-{code}-{_strike_text(strike)}-{'C' if is_call else 'P'}"


@dataclass(frozen=True)
class ChainSpec:
    """The listed options of one asset: parallel arrays, ordered by expiry, strike, call first."""

    asset: str
    names: tuple[str, ...]
    expiry_ts: np.ndarray
    strike: np.ndarray
    is_call: np.ndarray
    expiries: tuple[Expiry, ...]
    expiry_index: np.ndarray  # index into ``expiries`` per option
    created_ts: float = 0.0

    def __len__(self) -> int:
        return len(self.names)


def build_chain(asset: str, spot: float, now_ts: float, surface: SurfaceParams,
                carry_annual: float = 0.0, strikes_per_expiry: int = 24,
                expiries: list[Expiry] | None = None) -> ChainSpec:
    """The option chain of ``asset`` listed at ``now_ts``: ``deribit_expiries(now_ts)`` (or the
    ``expiries`` given), each with ``strike_grid`` strikes around its forward
    ``spot exp(carry T)``, a call and a put per strike."""
    expiries = deribit_expiries(now_ts) if expiries is None else list(expiries)
    names, exp_ts, strikes, calls, idx = [], [], [], [], []
    for i, exp in enumerate(expiries):
        T = max(exp.ts - now_ts, 1.0) / SECONDS_PER_YEAR
        forward = spot * math.exp(carry_annual * T)
        for strike in strike_grid(forward, T, float(atm_vol(T, surface)), strikes_per_expiry):
            for is_call in (True, False):
                names.append(option_name(asset, exp.code, float(strike), is_call))
                exp_ts.append(exp.ts)
                strikes.append(float(strike))
                calls.append(is_call)
                idx.append(i)
    return ChainSpec(asset=asset, names=tuple(names),
                     expiry_ts=np.asarray(exp_ts, dtype=np.float64),
                     strike=np.asarray(strikes, dtype=np.float64),
                     is_call=np.asarray(calls, dtype=bool), expiries=tuple(expiries),
                     expiry_index=np.asarray(idx, dtype=np.int64), created_ts=float(now_ts))


def tick_for(price):
    """Deribit's option tick for a coin price."""
    return np.where(np.asarray(price) < TICK_STEP_ABOVE, TICK_SMALL, TICK_LARGE)


def round_down_tick(price):
    price = np.asarray(price, dtype=np.float64)
    tick = tick_for(price)
    return np.floor(price / tick + 1e-9) * tick


def round_up_tick(price):
    price = np.asarray(price, dtype=np.float64)
    tick = tick_for(price)
    up = np.ceil(price / tick - 1e-9) * tick
    # Crossing 0.005 from below switches to the coarse tick; re-round on the tick of the result.
    return np.ceil(up / tick_for(up) - 1e-9) * tick_for(up)


@dataclass(frozen=True)
class QuoteParams:
    """How marks become bids and asks: half spread in vol, widening away from the money (in ATM
    standard deviations ``|k| / (atm_vol sqrt T)``), capped."""

    half_spread_vol: float = 0.0075
    half_spread_vol_per_sd: float = 0.004
    max_half_spread_vol: float = 0.03


@dataclass
class ChainQuotes:
    """A quote of every option of a ``ChainSpec`` at one time; arrays parallel to the spec.

    ``*_coin`` prices in coin (0.0 where there is no bid: Deribit's convention), IVs as annualized
    fractions (0.0 where there is no bid/ask IV), greeks in Deribit's units (module docstring).
    """

    ts: float
    spot: float
    T: np.ndarray
    forward: np.ndarray
    mark_iv: np.ndarray
    mark_coin: np.ndarray
    bid_coin: np.ndarray
    ask_coin: np.ndarray
    bid_iv: np.ndarray
    ask_iv: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    theta: np.ndarray
    rho: np.ndarray
    extra: dict = field(default_factory=dict)


def quote_chain(spec: ChainSpec, spot: float, now_ts: float, surface: SurfaceParams,
                carry_annual: float = 0.0, quote: QuoteParams = QuoteParams()) -> ChainQuotes:
    """Mark, bid, ask, IVs and greeks of every option in ``spec`` at ``now_ts`` with ``spot``."""
    T = np.maximum(spec.expiry_ts - now_ts, 1.0) / SECONDS_PER_YEAR
    F = spot * np.exp(carry_annual * T)
    K, call = spec.strike, spec.is_call
    k = np.log(K / F)
    iv = implied_vol_surface(k, T, surface)
    mark = coin_premium(F, K, T, iv, call)

    sd = atm_vol(T, surface) * np.sqrt(T)
    half = np.minimum(quote.half_spread_vol + quote.half_spread_vol_per_sd * np.abs(k) / sd,
                      quote.max_half_spread_vol)
    raw_bid = coin_premium(F, K, T, np.maximum(iv - half, 1e-3), call)
    raw_ask = coin_premium(F, K, T, iv + half, call)
    bid = round_down_tick(raw_bid)
    ask = round_up_tick(raw_ask)
    ask = np.maximum(ask, np.maximum(bid + tick_for(bid), MIN_PRICE))
    has_bid = bid >= MIN_PRICE - 1e-12
    bid = np.where(has_bid, bid, 0.0)
    bid_iv = np.where(has_bid, implied_vol_from_coin(bid, F, K, T, call), np.nan)
    ask_iv = implied_vol_from_coin(ask, F, K, T, call)

    g = deribit_greeks(F, K, T, iv, call)
    return ChainQuotes(
        ts=float(now_ts), spot=float(spot), T=T, forward=F, mark_iv=iv, mark_coin=mark,
        bid_coin=bid, ask_coin=ask, bid_iv=np.nan_to_num(bid_iv, nan=0.0),
        ask_iv=np.nan_to_num(ask_iv, nan=0.0),
        delta=g.delta, gamma=g.gamma, vega=g.vega, theta=g.theta, rho=g.rho,
    )

