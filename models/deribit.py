"""Deribit's option conventions, as pure functions beside hedgeflow's own (``models.pricing``).

Deribit's BTC and ETH options are *inverse*: European options on the coin's USD price, settled
and quoted in the coin. A ticker (``ticker.<instrument>.100ms``; recorded in
``../shared/data/recorded/DERIBIT.ws.1.0``) carries::

    mark_price        premium in coin (BTC or ETH per option of 1 coin)
    mark_iv           implied volatility in PERCENT (80.02, not 0.8002); bid_iv/ask_iv likewise,
                      0.0 where that side has no quote
    underlying_price  the forward of the option's expiry, USD (the future, or a synthetic
                      forward): the IV is quoted on it, not on the index
    index_price       the spot index (``btc_usd``), USD
    interest_rate     0.0: Black-76 on the forward, with no discounting
    greeks            in USD on the forward (table below)

so ``mark_price = Black76(F=underlying_price, K, T, r=0, sigma=mark_iv/100) / underlying_price``
and the premium's USD value is ``mark_price * index_price`` (Deribit converts coin amounts at the
index). Expiry is 08:00 UTC on the date in the name (``BTC-25DEC26-50000-P``); ``T`` is the
calendar time to it in years of 365 days, from the ticker's ``timestamp``.

Checked on all 89 recorded tickers (10 instruments, tests/models/test_deribit.py): our coin
premium at ``mark_iv`` gives ``mark_price``, our implied vol of ``mark_price`` gives ``mark_iv``
and ``deribit_greeks`` gives the ticker's greeks, to Deribit's rounding (mark_iv to 0.01 %, the
premium to its last printed digit, greeks to 5 decimals) with the forward known to 1.5e-4
relative: the ``underlying_price`` in a message is not exactly the forward the mark was computed
on (the residuals, as a forward shift, reach 1.1e-4 relative, 0.2 USD on ETH near 2,000 USD and
2.4 USD on BTC near 33,000 USD, with both signs). With the index as the forward, or expiry at
00:00 UTC, the same check fails on nearly every ticker.

Greeks, ours (``models.pricing``, Black-Scholes / Black-76) against Deribit's ticker ``greeks``
(``deribit_greeks`` produces Deribit's, with ``bs_price_greeks(F, K, T, 0, sigma, call)`` as the
one-pass core: Black-Scholes with the forward as spot and rate 0):

======  ==================================================  ===================================
greek   hedgeflow                                            Deribit
======  ==================================================  ===================================
delta   d price / d underlying (spot or forward), per 1.0    d USD price / d forward: N(d1) or
                                                             N(d1) - 1 (the USD Black delta, not
                                                             the premium-adjusted coin delta)
gamma   d delta / d underlying, per USD                      same, per USD of forward
vega    d price / d sigma, per 1.0 of volatility             USD per 1 vol point (ours / 100)
theta   d price / d calendar time, per YEAR                  USD per calendar day (ours / 365);
                                                             within a day of expiry, minus the
                                                             time value left
rho     d price / d r per 1.0; Black-76 holds the forward    USD per 1 % of rate with the spot
        fixed (``-T price``), Black-Scholes the spot         fixed and the forward moving:
                                                             ``K T N(d2) / 100`` (call),
                                                             ``-K T N(-d2) / 100`` (put)
======  ==================================================  ===================================

Everything here is vectorized like ``models.pricing`` (numpy arrays or scalars, broadcast; numpy
scalars out for scalars in) except the instrument-name helpers, which take one name or date.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timezone

import numpy as np

from models.pricing import Greeks, black76_implied_vol, black76_price, bs_price_greeks

__all__ = [
    "EXPIRY_HOUR_UTC", "SECONDS_PER_YEAR", "DeribitOption", "expiry_ts", "parse_option_name",
    "years_to_expiry", "vol_from_percent", "percent_from_vol", "coin_premium", "usd_premium",
    "implied_vol_from_coin", "deribit_greeks",
]

EXPIRY_HOUR_UTC = 8
SECONDS_PER_YEAR = 365.0 * 86_400.0
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")

_CODE = re.compile(r"^(\d{1,2})([A-Z]{3})(\d{2})$")
_STRIKE = re.compile(r"^\d+(d\d+)?$")
_CURRENCY = re.compile(r"^[A-Z0-9]+$")


def _out(x):
    x = np.asarray(x)
    return x[()] if x.ndim == 0 else x


# --------------------------------------------------------------------------- names and expiry


@dataclass(frozen=True)
class DeribitOption:
    """What an option's instrument name says. ``asset`` is the coin (``BTC``); ``settlement`` the
    settlement currency (the coin for inverse options, ``USDC`` for linear ones such as
    ``XRP_USDC-30JUN25-0d625-C``); ``expiry_ts`` epoch seconds at 08:00 UTC; ``code`` Deribit's
    date code (``25DEC26``)."""

    name: str
    asset: str
    settlement: str
    code: str
    expiry_ts: float
    strike_usd: float
    is_call: bool

    @property
    def inverse(self) -> bool:
        """True for coin-settled options, the ones whose premiums are in coin (this module)."""
        return self.settlement == self.asset


def expiry_ts(day: date | str) -> float:
    """Epoch seconds of Deribit's expiry on ``day``: a ``datetime.date`` (a ``datetime`` counts by
    its UTC date) or a date code such as ``25DEC26`` or ``5DEC24``, at 08:00 UTC."""
    if isinstance(day, str):
        m = _CODE.match(day)
        if not m or m.group(2) not in MONTHS:
            raise ValueError(f"not a Deribit date code (DMMMYY): {day!r}")
        try:
            day = date(2000 + int(m.group(3)), MONTHS.index(m.group(2)) + 1, int(m.group(1)))
        except ValueError:
            raise ValueError(f"not a date: {day!r}") from None
    elif isinstance(day, datetime):
        day = (day.astimezone(timezone.utc) if day.tzinfo else day).date()
    elif not isinstance(day, date):
        raise TypeError(f"expected a date or a date code, got {type(day).__name__}")
    return datetime(day.year, day.month, day.day, EXPIRY_HOUR_UTC, tzinfo=timezone.utc).timestamp()


def parse_option_name(name: str) -> DeribitOption:
    """``BTC-25DEC26-50000-P`` → asset, expiry (08:00 UTC), strike and call/put. Strikes may have
    ``d`` for a decimal point (``0d625``). ValueError for anything that is not an option name."""
    parts = name.split("-") if isinstance(name, str) else []
    if len(parts) != 4 or parts[3] not in ("C", "P") or not _STRIKE.match(parts[2]):
        raise ValueError(f"not a Deribit option name: {name!r}")
    asset, _, settlement = parts[0].partition("_")
    if not _CURRENCY.match(asset) or (settlement and not _CURRENCY.match(settlement)):
        raise ValueError(f"not a Deribit option name: {name!r}")
    return DeribitOption(name=name, asset=asset, settlement=settlement or asset, code=parts[1],
                         expiry_ts=expiry_ts(parts[1]),
                         strike_usd=float(parts[2].replace("d", ".")), is_call=parts[3] == "C")


def years_to_expiry(expiry_ts_s, now_ts_s):
    """Time to expiry in years of 365 days, ``(expiry - now) / (365 * 86400)``; negative after
    expiry (which the pricing functions treat as outside the model)."""
    return _out((np.asarray(expiry_ts_s, dtype=np.float64) - np.asarray(now_ts_s, dtype=np.float64))
                / SECONDS_PER_YEAR)


# --------------------------------------------------------------------------- volatility units


def vol_from_percent(iv_percent):
    """Deribit's ``mark_iv``/``bid_iv``/``ask_iv`` (percent) as an annualized fraction; 0 or less
    (Deribit's "no IV", sent with an empty side) and NaN give NaN."""
    iv = np.asarray(iv_percent, dtype=np.float64)
    return _out(np.where(iv > 0.0, iv / 100.0, np.nan))


def percent_from_vol(vol_annual):
    """An annualized fraction as Deribit's percent (0.8002 → 80.02)."""
    return _out(np.asarray(vol_annual, dtype=np.float64) * 100.0)


# --------------------------------------------------------------------------- premiums


def coin_premium(forward_usd, strike_usd, expiry_years, vol_annual, call):
    """An inverse option's premium in coin: undiscounted Black-76 on the forward, over the
    forward. NaN outside the model (negative inputs, NaN)."""
    F = np.asarray(forward_usd, dtype=np.float64)
    undiscounted_usd = black76_price(F, strike_usd, expiry_years, 0.0, vol_annual, call)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _out(undiscounted_usd / F)


def usd_premium(price_coin, index_usd):
    """A premium in coin valued in USD at the spot index, as Deribit shows it."""
    return _out(np.asarray(price_coin, dtype=np.float64) * np.asarray(index_usd, dtype=np.float64))


def implied_vol_from_coin(price_coin, forward_usd, strike_usd, expiry_years, call):
    """The volatility (annualized fraction) whose ``coin_premium`` is ``price_coin``: Let's Be
    Rational on the USD premium ``price_coin * forward_usd`` (``models.pricing``). NaN where none
    is: below intrinsic value ``max(±(F - K), 0) / F``, at or above 1 coin (calls) or ``K / F``
    (puts), ``expiry_years <= 0``, missing or non-positive inputs."""
    F = np.asarray(forward_usd, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        price_usd = np.asarray(price_coin, dtype=np.float64) * F
    return black76_implied_vol(price_usd, F, strike_usd, expiry_years, 0.0, call)


# --------------------------------------------------------------------------- greeks


def deribit_greeks(forward_usd, strike_usd, expiry_years, vol_annual, call) -> Greeks:
    """Greeks in Deribit's units (module table): delta per 1 USD of forward, gamma per USD, vega in
    USD per vol point, theta in USD per day, rho in USD per 1 % of rate (spot fixed).

    Theta within a day of expiry is the time value still to be lost, ``-(price - intrinsic)``
    in USD, not the instantaneous rate (which can exceed what is left to lose): that is what the
    recorded tickers show (``ETH-23JUL21-2300-C``, 9 hours out: -0.00146 USD/day against a
    rate of -0.032 and a Black value of 0.00146 USD)."""
    T = np.asarray(expiry_years, dtype=np.float64)
    F = np.asarray(forward_usd, dtype=np.float64)
    K = np.asarray(strike_usd, dtype=np.float64)
    price, g = bs_price_greeks(F, K, T, 0.0, vol_annual, call)
    intrinsic = np.maximum(np.where(call, F - K, K - F), 0.0)
    theta = np.where(T < 1.0 / 365.0, -(price - intrinsic), np.asarray(g.theta) / 365.0)
    return Greeks(delta=g.delta, gamma=g.gamma, vega=_out(np.asarray(g.vega) / 100.0),
                  theta=_out(theta), rho=_out(np.asarray(g.rho) / 100.0))
