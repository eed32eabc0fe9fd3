"""Income strategies on one coin, priced off a volatility surface and compared (plan 000 PF-303
yield optimization, PF-305 comparative strategy assessment).

The strategies, per ``amount_coin`` coins, all European and expiring together:

- covered call: hold the coins, sell calls at ``K_c``;
- cash-secured put: hold cash worth ``K_p`` per coin at expiry, sell puts at ``K_p``;
- collar: hold the coins, buy puts at ``K_p``, sell calls at ``K_c >= K_p``;
- protective put (the baseline, it pays premium instead of earning it): hold the coins, buy puts.

Each is a static position: a ``models.scenarios.Book`` (coins and option legs, each leg marked at
the surface's vol at its strike) plus cash ``cash_at_expiry_usd`` held as a zero-coupon bill.

Conventions:

- ``spot_usd`` the coin's spot, ``expiry_years`` the tenor (``seconds / (365 * 86400)``),
  ``rate_annual`` continuously compounded; the forward is ``F = S e^{rT}``;
- the surface is any object with ``implied_vol(k, T)`` and ``atm_vol(T)``, ``k = ln(K / F)``,
  vols annualized fractions (0.55, not 55);
- ``outlay_usd`` is what the position costs now (coins + options bought - options sold + the
  bill); ``capital_usd`` what it ties up (the coins and the bill, not the options);
- P&L is at expiry, in expiry dollars, against investing the outlay at the rate:
  ``pnl(S_T) = value(S_T) - outlay e^{rT}``. This is what keeps put-call parity exact (a covered
  call and a cash-secured put at the same strike are the same position); at ``r = 0`` it is the
  familiar ``value - cost``. Premiums received count as earning the rate until expiry.
- yields: ``premium_yield = premium_income / capital`` over the tenor, ``annualized_yield`` that
  divided by ``expiry_years`` (simple, not compounded);
- losses (``max_loss_usd``, ``var_usd``, ``es_usd``) are positive numbers of dollars lost.

Outcome distributions come either from a ``LognormalOutlook`` (closed forms: partial moments of
the lognormal on each linear piece of the payoff) or from simulated terminal prices (e.g.
``models.scenarios.simulate_paths(...)[:, -1]``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
from scipy.optimize import brentq, minimize_scalar
from scipy.special import ndtr, ndtri

from models.pricing import bs_greeks, bs_price
from models.scenarios import (
    Book, OptionLeg, RiskEstimate, book_value_usd, historical_var_es, terminal_prices,
)

__all__ = [
    "VolSurface", "Market", "StrikeChoice", "LognormalOutlook", "IncomeStrategy",
    "StrategyAssessment", "StrikeOptimum", "STRATEGY_KINDS", "RANKING_KEYS", "OBJECTIVES",
    "surface_vol", "option_premium_usd", "strike_from_moneyness", "strike_from_delta",
    "resolve_strike", "risk_neutral_outlook",
    "covered_call", "cash_secured_put", "collar", "protective_put", "build_strategy",
    "terminal_value_usd", "pnl_at_expiry_usd", "breakevens_usd", "max_gain_usd", "max_loss_usd",
    "payoff_grid", "assess_lognormal", "assess_monte_carlo", "assess", "compare_strategies",
    "optimize_strike", "zero_cost_collar_call_strike",
]

STRATEGY_KINDS = ("covered_call", "cash_secured_put", "collar", "protective_put")


class VolSurface(Protocol):
    """What the strategies need of a surface: implied vol at log-moneyness ``k = ln(K/F)`` and
    maturity ``T`` (years), and the at-the-money vol at ``T``."""

    def implied_vol(self, k, T): ...

    def atm_vol(self, T): ...


def _finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")


@dataclass(frozen=True, eq=False)
class Market:
    """The inputs every strategy is priced from: spot (USD), tenor (years), the vol surface, the
    rate (continuously compounded annual fraction)."""

    spot_usd: float
    expiry_years: float
    surface: VolSurface
    rate_annual: float = 0.0

    def __post_init__(self) -> None:
        _positive("spot_usd", self.spot_usd)
        _positive("expiry_years", self.expiry_years)
        _finite("rate_annual", self.rate_annual)
        if not (callable(getattr(self.surface, "implied_vol", None))
                and callable(getattr(self.surface, "atm_vol", None))):
            raise ValueError("surface needs implied_vol(k, T) and atm_vol(T)")

    @property
    def forward_usd(self) -> float:
        return self.spot_usd * math.exp(self.rate_annual * self.expiry_years)


def surface_vol(market: Market, strike_usd) -> np.ndarray | float:
    """The surface's implied vol at ``strike_usd`` (scalar or array) for the market's tenor."""
    k = np.log(np.asarray(strike_usd, dtype=np.float64) / market.forward_usd)
    vol = np.asarray(market.surface.implied_vol(k, market.expiry_years), dtype=np.float64)
    if not np.all(np.isfinite(vol) & (vol >= 0.0)):
        raise ValueError(f"the surface gave an invalid vol at strike {strike_usd!r}: {vol!r}")
    return float(vol) if vol.ndim == 0 else vol


def option_premium_usd(market: Market, strike_usd, call: bool):
    """Black-Scholes price of one option on one coin at the surface's vol for its strike."""
    return bs_price(market.spot_usd, strike_usd, market.expiry_years, market.rate_annual,
                    surface_vol(market, strike_usd), call)


# --------------------------------------------------------------------------- strike choice


def strike_from_moneyness(market: Market, moneyness: float) -> float:
    """``K = moneyness * spot`` (1.10: 10 % above spot)."""
    _positive("moneyness", moneyness)
    return moneyness * market.spot_usd


def strike_from_delta(market: Market, delta: float, call: bool) -> float:
    """The strike whose Black-Scholes spot delta, at the surface's vol for that strike, is
    ``delta``: in (0, 1) for a call (0.25 = a "25-delta call"), in (-1, 0) for a put.

    Solved in log-moneyness with Brent's method; the smile makes it a fixed point (the vol depends
    on the strike), which is what a quoted "25-delta" strike means on a desk.
    """
    if call and not 0.0 < delta < 1.0:
        raise ValueError(f"a call delta is in (0, 1), got {delta!r}")
    if not call and not -1.0 < delta < 0.0:
        raise ValueError(f"a put delta is in (-1, 0), got {delta!r}")
    F, T = market.forward_usd, market.expiry_years
    width = 12.0 * float(market.surface.atm_vol(T)) * math.sqrt(T) + 1e-3

    def gap(k: float) -> float:
        strike = F * math.exp(k)
        return float(bs_greeks(market.spot_usd, strike, T, market.rate_annual,
                               surface_vol(market, strike), call).delta) - delta

    lo, hi = -width, width
    if gap(lo) * gap(hi) > 0.0:
        raise ValueError(f"no strike within {width:.3g} of the forward in log-moneyness has "
                         f"delta {delta!r}")
    return F * math.exp(brentq(gap, lo, hi, xtol=1e-12, rtol=1e-12))


@dataclass(frozen=True)
class StrikeChoice:
    """How a strike is chosen: exactly one of ``strike_usd`` (as is), ``moneyness`` (``K / spot``)
    or ``delta`` (Black-Scholes spot delta at the surface vol; sign per the option type)."""

    strike_usd: float | None = None
    moneyness: float | None = None
    delta: float | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.strike_usd, self.moneyness, self.delta) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of strike_usd, moneyness, delta")


def resolve_strike(market: Market, choice: StrikeChoice | float, call: bool) -> float:
    """The strike in USD for ``choice`` (a plain number is a strike in USD)."""
    if not isinstance(choice, StrikeChoice):
        strike = float(choice)
        _positive("strike_usd", strike)
        return strike
    if choice.strike_usd is not None:
        _positive("strike_usd", choice.strike_usd)
        return float(choice.strike_usd)
    if choice.moneyness is not None:
        return strike_from_moneyness(market, choice.moneyness)
    return strike_from_delta(market, choice.delta, call)


# --------------------------------------------------------------------------- strategies


@dataclass(frozen=True)
class IncomeStrategy:
    """A static position to expiry: ``book`` (coins and option legs, each leg's ``vol_annual`` the
    surface vol it is priced at, all expiring at ``expiry_years``) plus a bill paying
    ``cash_at_expiry_usd`` at expiry. ``kind`` is one of ``STRATEGY_KINDS``."""

    kind: str
    name: str
    book: Book
    cash_at_expiry_usd: float
    spot_usd: float
    expiry_years: float
    rate_annual: float

    @property
    def growth(self) -> float:
        """``e^{rT}``: a dollar now, at expiry."""
        return math.exp(self.rate_annual * self.expiry_years)

    @property
    def leg_premiums_usd(self) -> np.ndarray:
        """Price now of one option of each leg (USD per coin), in ``book.legs`` order."""
        return np.array([float(bs_price(self.spot_usd, leg.strike_usd, self.expiry_years,
                                        self.rate_annual, leg.vol_annual, leg.call))
                         for leg in self.book.legs])

    @property
    def premium_income_usd(self) -> float:
        """Net premium received now (negative when the options cost more than they earn)."""
        quantities = np.array([leg.quantity_coin for leg in self.book.legs])
        return float(-(quantities @ self.leg_premiums_usd)) if self.book.legs else 0.0

    @property
    def capital_usd(self) -> float:
        """What the position ties up now: the coins and the bill (``K e^{-rT}`` per coin for a
        cash-secured put)."""
        return (abs(self.book.spot_coin) * self.spot_usd
                + self.cash_at_expiry_usd / self.growth)

    @property
    def outlay_usd(self) -> float:
        """What the whole position costs now."""
        return (self.book.spot_coin * self.spot_usd + self.cash_at_expiry_usd / self.growth
                - self.premium_income_usd)

    @property
    def short_calls_usd(self) -> tuple[float, ...]:
        return tuple(leg.strike_usd for leg in self.book.legs if leg.call and leg.quantity_coin < 0)

    @property
    def short_puts_usd(self) -> tuple[float, ...]:
        return tuple(leg.strike_usd for leg in self.book.legs
                     if not leg.call and leg.quantity_coin < 0)


def _leg(market: Market, quantity: float, strike: float, call: bool) -> OptionLeg:
    return OptionLeg(quantity, strike, market.expiry_years, call, surface_vol(market, strike))


def _strategy(kind: str, name: str, market: Market, spot_coin: float, legs: tuple,
              cash_at_expiry_usd: float = 0.0) -> IncomeStrategy:
    return IncomeStrategy(kind, name, Book(legs, spot_coin), cash_at_expiry_usd, market.spot_usd,
                          market.expiry_years, market.rate_annual)


def covered_call(market: Market, call_strike: StrikeChoice | float,
                 amount_coin: float = 1.0) -> IncomeStrategy:
    """Hold ``amount_coin`` coins and sell as many calls at the call strike."""
    _positive("amount_coin", amount_coin)
    k_call = resolve_strike(market, call_strike, True)
    return _strategy("covered_call", f"covered call {k_call:,.0f}", market, amount_coin,
                     (_leg(market, -amount_coin, k_call, True),))


def cash_secured_put(market: Market, put_strike: StrikeChoice | float,
                     amount_coin: float = 1.0) -> IncomeStrategy:
    """Sell ``amount_coin`` puts at the put strike, holding the cash to buy the coins at expiry
    (a bill paying ``amount_coin * K`` at expiry)."""
    _positive("amount_coin", amount_coin)
    k_put = resolve_strike(market, put_strike, False)
    return _strategy("cash_secured_put", f"cash-secured put {k_put:,.0f}", market, 0.0,
                     (_leg(market, -amount_coin, k_put, False),), amount_coin * k_put)


def collar(market: Market, put_strike: StrikeChoice | float, call_strike: StrikeChoice | float,
           amount_coin: float = 1.0) -> IncomeStrategy:
    """Hold the coins, buy puts at the put strike and sell calls at the call strike (which must
    not be below the put strike): the value at expiry stays within ``[K_p, K_c]`` per coin."""
    _positive("amount_coin", amount_coin)
    k_put = resolve_strike(market, put_strike, False)
    k_call = resolve_strike(market, call_strike, True)
    if k_call < k_put:
        raise ValueError(f"a collar's call strike ({k_call}) must be >= its put strike ({k_put})")
    return _strategy("collar", f"collar {k_put:,.0f}/{k_call:,.0f}", market, amount_coin,
                     (_leg(market, amount_coin, k_put, False),
                      _leg(market, -amount_coin, k_call, True)))


def protective_put(market: Market, put_strike: StrikeChoice | float,
                   amount_coin: float = 1.0) -> IncomeStrategy:
    """Hold the coins and buy puts at the put strike (the insured baseline)."""
    _positive("amount_coin", amount_coin)
    k_put = resolve_strike(market, put_strike, False)
    return _strategy("protective_put", f"protective put {k_put:,.0f}", market, amount_coin,
                     (_leg(market, amount_coin, k_put, False),))


def build_strategy(kind: str, market: Market, *, put_strike: StrikeChoice | float | None = None,
                   call_strike: StrikeChoice | float | None = None,
                   amount_coin: float = 1.0) -> IncomeStrategy:
    """Any of ``STRATEGY_KINDS`` by name, with the strikes it needs."""
    needs = {"covered_call": ("call",), "cash_secured_put": ("put",), "collar": ("put", "call"),
             "protective_put": ("put",)}
    if kind not in needs:
        raise ValueError(f"kind must be one of {STRATEGY_KINDS}, got {kind!r}")
    given = {"put": put_strike, "call": call_strike}
    for side in ("put", "call"):
        if (given[side] is None) == (side in needs[kind]):
            raise ValueError(f"a {kind} needs exactly the strikes {needs[kind]}")
    if kind == "covered_call":
        return covered_call(market, call_strike, amount_coin)
    if kind == "cash_secured_put":
        return cash_secured_put(market, put_strike, amount_coin)
    if kind == "collar":
        return collar(market, put_strike, call_strike, amount_coin)
    return protective_put(market, put_strike, amount_coin)


# --------------------------------------------------------------------------- payoff at expiry


def terminal_value_usd(strategy: IncomeStrategy, terminal_spot_usd) -> np.ndarray:
    """Value of the position at expiry for each terminal spot: coins, option payoffs, the bill."""
    spot = np.asarray(terminal_spot_usd, dtype=np.float64)
    return book_value_usd(strategy.book, spot, elapsed_years=strategy.expiry_years,
                          rate_annual=strategy.rate_annual) + strategy.cash_at_expiry_usd


def pnl_at_expiry_usd(strategy: IncomeStrategy, terminal_spot_usd) -> np.ndarray:
    """``value(S_T) - outlay e^{rT}``, expiry dollars (see the module docstring)."""
    return terminal_value_usd(strategy, terminal_spot_usd) - strategy.outlay_usd * strategy.growth


def _pieces(strategy: IncomeStrategy) -> tuple[np.ndarray, np.ndarray, float]:
    """The P&L is piecewise linear in ``S_T``: its kink points ``[0, strikes...]``, its values
    there, and its slope beyond the last one."""
    nodes = np.unique(np.concatenate([[0.0], [leg.strike_usd for leg in strategy.book.legs]]))
    slope = strategy.book.spot_coin + sum(leg.quantity_coin for leg in strategy.book.legs
                                          if leg.call)
    return nodes, pnl_at_expiry_usd(strategy, nodes), float(slope)


def _segments(strategy: IncomeStrategy, extra_cuts: Sequence[float] = ()):
    """``(lo, hi, a, b)`` arrays with ``pnl = a + b S_T`` on ``(lo, hi]``, covering ``[0, inf)``;
    ``extra_cuts`` are added as boundaries (e.g. breakevens, a quantile)."""
    nodes, values, slope = _pieces(strategy)
    cuts = np.unique(np.concatenate([nodes, [c for c in extra_cuts if 0.0 < c < math.inf]]))
    values = pnl_at_expiry_usd(strategy, cuts)
    lo = cuts
    hi = np.append(cuts[1:], math.inf)
    b = np.append(np.diff(values) / np.diff(cuts), slope)
    a = values - b * lo
    return lo, hi, a, b


def breakevens_usd(strategy: IncomeStrategy) -> tuple[float, ...]:
    """Terminal spots where the P&L at expiry crosses zero, ascending."""
    nodes, values, slope = _pieces(strategy)
    roots: list[float] = [float(x) for x, v in zip(nodes, values) if v == 0.0 and x > 0.0]
    for x0, x1, v0, v1 in zip(nodes[:-1], nodes[1:], values[:-1], values[1:]):
        if v0 * v1 < 0.0:
            roots.append(float(x0 + (x1 - x0) * v0 / (v0 - v1)))
    if values[-1] * slope < 0.0:
        roots.append(float(nodes[-1] - values[-1] / slope))
    return tuple(sorted(roots))


def max_gain_usd(strategy: IncomeStrategy) -> float:
    """The largest P&L at expiry over ``S_T >= 0`` (``inf`` if it grows without bound)."""
    _, values, slope = _pieces(strategy)
    return math.inf if slope > 0.0 else float(values.max())


def max_loss_usd(strategy: IncomeStrategy) -> float:
    """The largest loss at expiry over ``S_T >= 0``, positive (``inf`` if unbounded); negative
    would mean a guaranteed gain."""
    _, values, slope = _pieces(strategy)
    return math.inf if slope < 0.0 else float(-values.min())


def payoff_grid(strategy: IncomeStrategy, terminal_spot_usd: np.ndarray | None = None,
                n_points: int = 201) -> dict:
    """Chart data (PF-306): the value and P&L at expiry on a grid of terminal spots (default:
    ``n_points`` from 0.4x to 1.6x spot and every strike), with the breakevens and strikes."""
    if terminal_spot_usd is None:
        grid = np.linspace(0.4, 1.6, int(n_points)) * strategy.spot_usd
        grid = np.unique(np.concatenate([grid, [leg.strike_usd for leg in strategy.book.legs]]))
    else:
        grid = np.asarray(terminal_spot_usd, dtype=np.float64)
    return {"spot_usd": grid, "value_usd": terminal_value_usd(strategy, grid),
            "pnl_usd": pnl_at_expiry_usd(strategy, grid),
            "breakevens_usd": np.array(breakevens_usd(strategy)),
            "strikes_usd": np.array([leg.strike_usd for leg in strategy.book.legs])}


# --------------------------------------------------------------------------- assessment


@dataclass(frozen=True)
class LognormalOutlook:
    """A view of the coin at expiry: ``ln S_T ~ N(ln S_0 + (drift - vol^2/2) T, vol^2 T)``.
    ``drift_annual`` is the real-world drift (the rate for the pricing measure)."""

    drift_annual: float
    vol_annual: float

    def __post_init__(self) -> None:
        _finite("drift_annual", self.drift_annual)
        _positive("vol_annual", self.vol_annual)


def risk_neutral_outlook(market: Market) -> LognormalOutlook:
    """Drift at the rate, vol at the surface's at-the-money vol for the tenor."""
    return LognormalOutlook(market.rate_annual, float(market.surface.atm_vol(market.expiry_years)))


@dataclass(frozen=True)
class StrategyAssessment:
    """One strategy's income and risk figures (USD unless said; see the module docstring).

    ``probability_of_profit`` is ``P(pnl > 0)``; ``assignment_probability`` that any sold
    option ends in the money; ``var_usd``/``es_usd`` the P&L's VaR and ES at ``confidence``;
    ``expected_return_annual = E[pnl] / capital / T``; ``sharpe_annual = E[pnl] / sd[pnl] /
    sqrt(T)`` (excess over the rate, annualized: the risk-adjusted yield the comparison ranks
    by); ``return_to_es = E[pnl] / ES``. ``expected_pnl_stderr_usd`` is 0 for closed forms.
    """

    kind: str
    name: str
    method: str
    expiry_years: float
    premium_income_usd: float
    capital_usd: float
    premium_yield: float
    annualized_yield: float
    breakevens_usd: tuple[float, ...]
    max_gain_usd: float
    max_loss_usd: float
    probability_of_profit: float
    assignment_probability: float
    expected_pnl_usd: float
    expected_pnl_stderr_usd: float
    stdev_pnl_usd: float
    var_usd: float
    es_usd: float
    confidence: float
    expected_return_annual: float
    sharpe_annual: float
    return_to_es: float


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0.0 else math.nan


def _assessment(strategy: IncomeStrategy, method: str, pop: float, assignment: float,
                mean: float, stderr: float, stdev: float, risk: RiskEstimate) -> StrategyAssessment:
    T, capital, income = strategy.expiry_years, strategy.capital_usd, strategy.premium_income_usd
    return StrategyAssessment(
        kind=strategy.kind, name=strategy.name, method=method, expiry_years=T,
        premium_income_usd=income, capital_usd=capital,
        premium_yield=_ratio(income, capital), annualized_yield=_ratio(income, capital) / T,
        breakevens_usd=breakevens_usd(strategy), max_gain_usd=max_gain_usd(strategy),
        max_loss_usd=max_loss_usd(strategy), probability_of_profit=pop,
        assignment_probability=assignment, expected_pnl_usd=mean,
        expected_pnl_stderr_usd=stderr, stdev_pnl_usd=stdev, var_usd=risk.var, es_usd=risk.es,
        confidence=risk.confidence, expected_return_annual=_ratio(mean, capital) / T,
        sharpe_annual=_ratio(mean, stdev) / math.sqrt(T), return_to_es=_ratio(mean, risk.es))


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.99, got {confidence!r}")


def assess_lognormal(strategy: IncomeStrategy, outlook: LognormalOutlook,
                     confidence: float = 0.99) -> StrategyAssessment:
    """Closed-form assessment under a lognormal terminal price.

    On each piece ``(lo, hi]`` where ``pnl = a + b S_T``, the partial moments
    ``E[S_T^n 1{lo < S_T <= hi}] = S_0^n e^{n mu + n^2 v / 2} [Phi(d_n(hi)) - Phi(d_n(lo))]``,
    ``d_n(x) = (ln(x/S_0) - mu - n v) / sqrt(v)``, ``mu = (drift - vol^2/2) T``, ``v = vol^2 T``,
    give ``E[pnl]``, ``E[pnl^2]`` and ``P(pnl > 0)`` exactly. VaR and ES need the P&L to be
    non-decreasing in ``S_T`` (true of every kind here): then the worst outcomes are the lowest
    prices, ``VaR = -pnl(q)`` at the ``1 - confidence`` quantile ``q`` of ``S_T`` and
    ``ES = -E[pnl 1{S_T <= q}] / (1 - confidence)``.
    """
    _check_confidence(confidence)
    S0, T = strategy.spot_usd, strategy.expiry_years
    mu = (outlook.drift_annual - 0.5 * outlook.vol_annual**2) * T
    sd = outlook.vol_annual * math.sqrt(T)
    q = S0 * math.exp(mu + sd * float(ndtri(1.0 - confidence)))
    breakevens = breakevens_usd(strategy)
    lo, hi, a, b = _segments(strategy, (*breakevens, q))
    if np.any(b < -1e-12 * max(1.0, abs(strategy.book.spot_coin))):
        raise ValueError("the closed-form VaR/ES needs a P&L non-decreasing in the terminal "
                         "price; assess this strategy with Monte Carlo prices instead")

    def cdf_n(x: np.ndarray, n: int) -> np.ndarray:
        with np.errstate(divide="ignore"):
            d = (np.log(x / S0) - mu - n * sd * sd) / sd
        return ndtr(d)

    def partial(n: int) -> np.ndarray:
        scale = S0**n * math.exp(n * mu + 0.5 * n * n * sd * sd)
        return scale * (cdf_n(hi, n) - cdf_n(lo, n))

    p0, p1, p2 = partial(0), partial(1), partial(2)
    mean = float(np.sum(a * p0 + b * p1))
    second = float(np.sum(a * a * p0 + 2.0 * a * b * p1 + b * b * p2))
    stdev = math.sqrt(max(second - mean * mean, 0.0))
    mid = np.where(np.isfinite(hi), 0.5 * (lo + hi), lo + 1.0)
    pop = float(np.sum(p0[a + b * mid > 0.0]))
    in_tail = hi <= q * (1.0 + 1e-12)
    var = -float(pnl_at_expiry_usd(strategy, q))
    es = -float(np.sum((a * p0 + b * p1)[in_tail])) / (1.0 - confidence)
    assignment = 0.0
    short_calls, short_puts = strategy.short_calls_usd, strategy.short_puts_usd
    below = float(cdf_n(np.array(max(short_puts)), 0)) if short_puts else 0.0
    above = 1.0 - float(cdf_n(np.array(min(short_calls)), 0)) if short_calls else 0.0
    if short_puts and short_calls and max(short_puts) >= min(short_calls):
        assignment = 1.0
    else:
        assignment = below + above
    return _assessment(strategy, "lognormal", pop, assignment, mean, 0.0, stdev,
                       RiskEstimate(var, max(es, var), confidence, "lognormal"))


def assess_monte_carlo(strategy: IncomeStrategy, terminal_spot_usd: np.ndarray,
                       confidence: float = 0.99) -> StrategyAssessment:
    """Assessment over simulated terminal prices (one per path, e.g. the last column of
    ``models.scenarios.simulate_paths``): sample means, the empirical VaR/ES of
    ``models.scenarios.historical_var_es``, and the standard error of the mean P&L."""
    _check_confidence(confidence)
    spots = terminal_prices(terminal_spot_usd)
    if spots.size < 2 or not np.all(np.isfinite(spots) & (spots >= 0.0)):
        raise ValueError("need at least 2 finite terminal prices >= 0")
    pnl = pnl_at_expiry_usd(strategy, spots)
    assigned = np.zeros(spots.size, dtype=bool)
    for strike in strategy.short_calls_usd:
        assigned |= spots > strike
    for strike in strategy.short_puts_usd:
        assigned |= spots < strike
    stdev = float(pnl.std(ddof=1))
    return _assessment(strategy, "monte_carlo", float(np.mean(pnl > 0.0)),
                       float(np.mean(assigned)), float(pnl.mean()),
                       stdev / math.sqrt(spots.size), stdev,
                       historical_var_es(pnl, confidence))


def assess(strategy: IncomeStrategy, outlook: LognormalOutlook | np.ndarray,
           confidence: float = 0.99) -> StrategyAssessment:
    """``assess_lognormal`` for a ``LognormalOutlook``, ``assess_monte_carlo`` for prices."""
    if isinstance(outlook, LognormalOutlook):
        return assess_lognormal(strategy, outlook, confidence)
    return assess_monte_carlo(strategy, outlook, confidence)


RANKING_KEYS = ("sharpe_annual", "return_to_es", "expected_return_annual", "annualized_yield",
                "probability_of_profit")


def compare_strategies(assessments: Sequence[StrategyAssessment],
                       rank_by: str = "sharpe_annual") -> pd.DataFrame:
    """The comparison table (PF-305): one row per strategy, best first by ``rank_by`` (higher is
    better; NaN last), with a 1-based ``rank`` column."""
    if rank_by not in RANKING_KEYS:
        raise ValueError(f"rank_by must be one of {RANKING_KEYS}, got {rank_by!r}")
    if not assessments:
        raise ValueError("nothing to compare")
    columns = ["name", "kind", "method", "premium_income_usd", "capital_usd", "annualized_yield",
               "probability_of_profit", "assignment_probability", "expected_pnl_usd",
               "stdev_pnl_usd", "var_usd", "es_usd", "max_gain_usd", "max_loss_usd",
               "expected_return_annual", "sharpe_annual", "return_to_es"]
    table = pd.DataFrame([{c: getattr(a, c) for c in columns} for a in assessments])
    table["breakevens_usd"] = [a.breakevens_usd for a in assessments]
    table = table.sort_values(rank_by, ascending=False, na_position="last", kind="stable")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.reset_index(drop=True)


# --------------------------------------------------------------------------- yield optimization


OBJECTIVES = ("annualized_yield", "expected_pnl_usd", "sharpe_annual", "return_to_es")


@dataclass(frozen=True)
class StrikeOptimum:
    """The best strike found and the evidence: the assessment there, and the grid searched
    (``grid_feasible`` False where the assignment constraint failed)."""

    strike_usd: float
    objective: str
    objective_value: float
    strategy: IncomeStrategy
    assessment: StrategyAssessment
    grid_strikes_usd: np.ndarray
    grid_objective: np.ndarray
    grid_feasible: np.ndarray


def optimize_strike(kind: str, market: Market, outlook: LognormalOutlook | np.ndarray, *,
                    objective: str = "annualized_yield",
                    max_assignment_probability: float | None = None,
                    put_strike: StrikeChoice | float | None = None,
                    moneyness_range: tuple[float, float] = (0.5, 2.0), n_grid: int = 161,
                    confidence: float = 0.99, amount_coin: float = 1.0) -> StrikeOptimum:
    """The strike maximizing ``objective`` (one of ``OBJECTIVES``, an attribute of
    ``StrategyAssessment``) subject to ``assignment_probability <= max_assignment_probability``
    (PF-303), e.g. the covered call with the highest annualized yield that is called away at most
    20 % of the time.

    The strike searched: the call of a covered call, the put of a cash-secured put or a
    protective put, the call of a collar whose put is fixed at ``put_strike``. Method: the
    objective on ``n_grid`` strikes geometrically spaced over ``moneyness_range`` times spot,
    then, around the best feasible one, Brent's root of the constraint when the optimum sits on
    it, or a bounded scalar maximization in log-strike otherwise.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if kind not in STRATEGY_KINDS:
        raise ValueError(f"kind must be one of {STRATEGY_KINDS}, got {kind!r}")
    if kind == "collar" and put_strike is None:
        raise ValueError("a collar's call strike is optimized for a given put_strike")
    limit = max_assignment_probability
    if limit is not None and not 0.0 <= limit <= 1.0:
        raise ValueError(f"max_assignment_probability must be in [0, 1], got {limit!r}")
    lo_m, hi_m = moneyness_range
    if not 0.0 < lo_m < hi_m or int(n_grid) != n_grid or n_grid < 3:
        raise ValueError("need 0 < moneyness_range[0] < moneyness_range[1] and n_grid >= 3")

    def build(strike: float) -> IncomeStrategy:
        if kind == "covered_call":
            return covered_call(market, strike, amount_coin)
        if kind == "cash_secured_put":
            return cash_secured_put(market, strike, amount_coin)
        if kind == "protective_put":
            return protective_put(market, strike, amount_coin)
        return collar(market, put_strike, strike, amount_coin)

    def evaluate(strike: float) -> tuple[float, bool, StrategyAssessment, IncomeStrategy]:
        strategy = build(strike)
        result = assess(strategy, outlook, confidence)
        value = float(getattr(result, objective))
        feasible = limit is None or result.assignment_probability <= limit
        return (value if math.isfinite(value) else -math.inf), feasible, result, strategy

    strikes = market.spot_usd * np.geomspace(lo_m, hi_m, int(n_grid))
    if kind == "collar":
        floor = resolve_strike(market, put_strike, False)
        strikes = strikes[strikes >= floor]
        if strikes.size < 3:
            raise ValueError("the moneyness range leaves fewer than 3 call strikes above the put")
    evaluated = [evaluate(float(k)) for k in strikes]
    values = np.array([e[0] for e in evaluated])
    feasible = np.array([e[1] for e in evaluated])
    if not feasible.any():
        raise ValueError("no strike in the range meets the assignment constraint")
    best = int(np.flatnonzero(feasible)[np.argmax(values[feasible])])
    candidates = [(values[best], float(strikes[best]), evaluated[best])]

    for other in (best - 1, best + 1):
        if limit is None or not 0 <= other < strikes.size or feasible[other]:
            continue
        # The optimum may press on the constraint: find where the assignment probability
        # crosses the limit between the best feasible strike and an infeasible neighbour.
        a, b = math.log(strikes[best]), math.log(strikes[other])

        def excess(log_k: float) -> float:
            return evaluate(math.exp(log_k))[2].assignment_probability - limit

        if excess(a) <= 0.0 < excess(b):
            root = brentq(excess, a, b, xtol=1e-12, rtol=1e-13)
            # Step back onto the feasible side if the solver landed just outside.
            for step in (0.0, 1e-12, 1e-10, 1e-8):
                k = math.exp(root + (step if a > b else -step))
                result = evaluate(k)
                if result[1]:
                    candidates.append((result[0], k, result))
                    break
    left, right = max(best - 1, 0), min(best + 1, strikes.size - 1)
    found = minimize_scalar(lambda log_k: -evaluate(math.exp(log_k))[0],
                            bounds=(math.log(strikes[left]), math.log(strikes[right])),
                            method="bounded", options={"xatol": 1e-9})
    k = math.exp(found.x)
    result = evaluate(k)
    if result[1]:
        candidates.append((result[0], k, result))
    value, strike, (_, _, result, strategy) = max(candidates, key=lambda c: c[0])
    return StrikeOptimum(strike, objective, value, strategy, result, strikes, values, feasible)


def zero_cost_collar_call_strike(market: Market, put_strike: StrikeChoice | float) -> float:
    """The call strike whose premium pays exactly for the put (a zero-cost collar), at the
    surface vols. The put strike must be below the forward (otherwise even a call struck at the
    put strike is worth less than the put)."""
    k_put = resolve_strike(market, put_strike, False)
    if k_put >= market.forward_usd:
        raise ValueError(f"the put strike {k_put} must be below the forward {market.forward_usd}")
    put = float(option_premium_usd(market, k_put, False))

    def gap(log_k: float) -> float:
        return float(option_premium_usd(market, math.exp(log_k), True)) - put

    T = market.expiry_years
    hi = math.log(market.forward_usd) + 12.0 * float(market.surface.atm_vol(T)) * math.sqrt(T)
    if gap(hi) > 0.0:
        raise ValueError("the put is too cheap: no call strike within 12 sd pays exactly for it")
    return math.exp(brentq(gap, math.log(k_put), hi, xtol=1e-13, rtol=1e-13))

