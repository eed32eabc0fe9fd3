"""Plan 001's hedge engine (HedgeLock, Sprints 1.1-1.3 and 4.2): the position, its hedge ratio,
profit target and trailing stop, the trading state machine and the funding-aware choices.

The book of one asset: ``Q_B`` coins held spot (the loan's collateral, never traded here), a
perpetual held as a long leg ``Q_L`` and a short leg ``Q_S``, a dated (quarterly) future
``quarterly_coin`` (signed, negative = short) and protective puts ``put_coin``. The futures and
puts are the hedge; the engine proposes ``Order``s (``models.orders``) that the safety gate
approves or refuses, and learns what happened from ``on_fill`` / ``on_rejection`` /
``on_order_closed``. It never reads a clock: time is ``MarketState.ts_s`` (epoch seconds).

Conventions and rules (every threshold is a ``HedgeConfig`` field):

- Delta (Sprint 1.1): ``delta_coin = Q_B + Q_L - Q_S + quarterly_coin`` (the plan's
  ``Q_B + Q_L - Q_S``, where a short quarterly counts in ``Q_S``), plus ``put_coin * put_delta``
  when puts are held, the put's Black-Scholes delta at the ATM implied vol (skew ignored).
- Hedge ratio (Sprint 1.2) from the 24 h realized vol, read as a DAILY fraction
  ``vol_daily = vol_24h_annual / sqrt(365)``: 0.20 below 2 %, 0.40 from 2 % to below 4 %, 0.60 at
  4 % and above (``hedge_ratio_for_daily_vol``). Recomputed at most every
  ``recompute_interval_s`` (hourly; at the first step with a known vol once due), with
  hysteresis (``hedge_ratio_with_hysteresis``): the ratio
  moves up a step only once vol reaches ``threshold + hysteresis_daily`` and down only once vol
  falls below ``threshold - hysteresis_daily``, so a vol hovering around 2 % does not flap. A
  ratio that is not one of the ladder's (e.g. the plan's start value 1.0) is replaced by the
  plain ladder at the first reading.
- Target (Sprint 1.1): the hedge is short. The effective ratio is
  ``h_eff = clip(h * funding_multiplier, 0, 1)`` and the net futures short aimed at is
  ``N* = max(h_eff * Q_B + put_coin * put_delta, 0)``: the hedge ratio applies to the whole
  book's delta, so puts (negative delta) replace part of the short, and the futures never go net
  long. The target delta is ``Q_B + put_coin * put_delta - N*`` (``= (1 - h_eff) Q_B`` without
  puts). Rebalancing orders trade the hedge instrument toward ``N*`` (and close the other
  instrument after a migration) once the book is at least ``min_order_coin`` away from it,
  rounded to ``lot_size_coin`` (``lot_size_coin <= min_order_coin``): after the fills
  ``|delta - target| <= min_order_coin``. Batches of rebalancing, migration and options orders
  are at least ``rebalance_cooldown_s`` apart. ``leverage`` only sets the margin reported.
- Profit target (Sprint 1.3): ``PT_usd = k * vol_daily * hedge_notional_usd`` with ``k = 1.5``
  and ``hedge_notional_usd = sum |futures leg| * its mark`` (perp legs at the perp mark, the
  quarterly at its mark): the P&L a k-sigma daily move makes on the hedge. It is compared with
  the CYCLE P&L: the futures' unrealized P&L against their average entries, plus everything the
  futures realized (trades, fees, funding passed to ``on_funding``) since the cycle began. Puts
  are insurance with their own life (bought, held to expiry) and are not part of it.
- Trailing stop (Sprint 1.3): arms once the cycle P&L reaches
  ``trailing_activation_fraction * PT`` (0.5 PT); armed, it fires when the P&L falls to
  ``(1 - trailing_giveback_fraction) * peak`` (gives back 30 % of the peak P&L, keeps 70 %).
  There is no stop LOSS on the hedge: it loses only when the collateral gains.
- Auto-close and distribution: a target or stop closes every futures leg (reduce-only market
  orders, any size); when the futures are flat the cycle's realized P&L is final and
  ``HedgeStep.distributable_profit_usd = max(cycle realized, 0)`` is reported once (the loan
  module takes it), then the hedge is reopened at the target.
- Funding (Sprint 1.1 "funding multiplier", 4.2): APR = rate_per_interval * 365 * 24 /
  interval_h. A position of sign ``s`` pays ``s * rate * |q| * mark`` per interval (longs pay
  when the rate is positive), so ``funding_usd_per_interval`` is positive when the book PAYS.
  The carry cost of the short hedge, as an APR, is ``-funding_apr`` on the perp and
  ``-quarterly_basis_apr`` on the quarterly (a short quarterly earns the basis as it converges).
  ``funding_multiplier = clip(1 - carry_cost_apr / funding_apr_scale, 0.5, 1.5)`` in steps of
  0.1: shorts paying 25 % APR hold half the ratio's short, shorts earning 25 % APR hold 1.5 times
  (bounded so that ``h_eff <= 0.9``). Recomputed with the ratio; an unknown rate keeps it.
- Migration (Sprint 4.2): "migrate to quarterly when perp funding APR exceeds the quarterly
  basis APR" is applied to the costs to the position held: the hedge moves to the quarterly when
  the perp's carry cost exceeds the quarterly's by more than ``migration_band_apr`` (for the
  short: ``basis_apr - funding_apr > band``) and back when the quarterly's exceeds the perp's by
  more than the band; in between it stays (hysteresis). For a long hedge this is the plan's
  literal rule. The quarterly is marked at ``F = S (1 + basis_apr * T)``, ``basis_apr`` the
  simple annualized basis to the front quarterly (last Friday of Mar/Jun/Sep/Dec, 08:00 UTC) and
  ``T`` the years to it (``quarterly_price_usd``); rolling it before expiry is not modelled here.
- Options hedge (Sprint 4.2): when no put is held and the ATM implied vol is strictly below
  ``put_iv_threshold_annual`` (45 %), buy ``put_coverage_fraction * Q_B`` puts struck at
  ``put_moneyness`` of spot (rounded down to a listed-looking strike) on the first Friday expiry
  at least ``put_tenor_days`` away, as a limit order at the Black-Scholes premium times
  ``1 + put_limit_markup``. ``Order`` has no strike or expiry field: the contract is in
  ``HedgeStep.put_contract`` and the engine remembers it by order id. Held to expiry, where it
  settles at intrinsic value against the spot.
- Fail closed: when ``oracle_ok`` is false, spot or perp mark is NaN or not positive, the
  quarterly is held or holds the hedge and cannot be marked (NaN basis), or a held put cannot be
  valued (no implied vol seen yet), the step proposes no orders, leaves the book, ratio, modes
  and cycle as they are and reports ``"stale_prices"``. Orders are also
  held back while earlier ones are outstanding (until filled, refused, closed or
  ``order_timeout_s`` old) and for ``order_timeout_s`` after a refusal.

The state machine (``HedgeStep.mode``)::

    NEUTRAL --(delta - target >= min_order)--> LONG_BIASED  --(back within min_order)--> NEUTRAL
    NEUTRAL --(target - delta >= min_order)--> SHORT_BIASED --(back within min_order)--> NEUTRAL
    NEUTRAL / LONG_BIASED / SHORT_BIASED --(PT reached or trailing stop)--> TAKE_PROFIT
    TAKE_PROFIT --(futures flat: cycle closed, profit reported)--> REBALANCE
    REBALANCE --(delta within min_order of target, old instrument closed)--> NEUTRAL
    LONG_BIASED <--(the target crosses the book while orders are outstanding)--> SHORT_BIASED

REBALANCE lasts at least one step (the one after the close fills). "Biased" is the book's
delta away from its target by at least one tradeable order (the hedge ratio moved, the funding
multiplier moved, the puts' delta drifted, a partial fill): a long bias means under-hedged, so
the rebalance sells futures. The plan draws TAKE_PROFIT from the biased
states; here it can fire from NEUTRAL as well, since a hedged book's P&L moves with the price
whether or not it sits at its target. TAKE_PROFIT and REBALANCE orders do not wait for the
cooldown (a take-profit is one cycle action, the reopen restores the protection).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

from models.option_chain import deribit_expiries, nice_step
from models.orders import Fill, Order, Rejection
from models.pricing import bs_price_greeks

__all__ = [
    "MarketState", "PositionState", "HedgeConfig", "HedgeStep", "HedgeEngine", "PutContract",
    "PositionRisk", "BookRisk", "MODES", "NEUTRAL", "LONG_BIASED", "SHORT_BIASED", "TAKE_PROFIT",
    "REBALANCE", "HEDGE_KINDS", "SECONDS_PER_YEAR",
    "daily_vol_fraction", "funding_apr", "carry_cost_apr", "hedge_ratio_for_daily_vol",
    "hedge_ratio_with_hysteresis", "funding_multiplier", "hedge_on_quarterly",
    "profit_target_usd", "profit_exit", "front_quarterly_expiry_ts", "quarterly_price_usd",
    "protective_put_contract", "book_risk",
]

SECONDS_PER_YEAR = 365.0 * 86400.0
NEUTRAL, LONG_BIASED, SHORT_BIASED = "NEUTRAL", "LONG_BIASED", "SHORT_BIASED"
TAKE_PROFIT, REBALANCE = "TAKE_PROFIT", "REBALANCE"
MODES = (NEUTRAL, LONG_BIASED, SHORT_BIASED, TAKE_PROFIT, REBALANCE)
HEDGE_KINDS = ("perp", "quarterly")
_DUST_COIN = 1e-9  # below this a leg is flat (float residue of fills that close it)
_HEDGE_SIGN = -1.0  # the hedge is a net short by construction (N* >= 0)


def _finite_positive(x: float) -> bool:
    return math.isfinite(x) and x > 0.0


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


# --------------------------------------------------------------------------- shared market input


@dataclass(frozen=True, slots=True)
class MarketState:
    """What the hedge engine (and the loan, safety and execution models) see at ``ts_s``.

    Prices in USD, NaN when unknown (stale). ``funding_rate_per_interval`` as the exchanges
    publish it (0.0001 = 0.01 % per ``funding_interval_h`` hours, positive: longs pay shorts).
    ``quarterly_basis_apr``: the simple annualized basis of the front quarterly future,
    ``(F / S - 1) / T_years``. Vols are annualized fractions; ``vol_24h_annual`` is
    models.volatility's 24 h realized vol (NaN until ready). ``oracle_ok``: the oracle's status is
    ok and fresh.
    """

    ts_s: float
    asset: str
    spot_usd: float
    perp_mark_usd: float
    funding_rate_per_interval: float = math.nan
    funding_interval_h: float = 8.0
    quarterly_basis_apr: float = math.nan
    vol_24h_annual: float = math.nan
    implied_vol_annual: float = math.nan
    oracle_ok: bool = True


# --------------------------------------------------------------------------- the position


@dataclass(frozen=True, slots=True)
class PositionState:
    """A snapshot of one asset's book (plan 001 ``PositionState``).

    Quantities in coins: ``spot_coin`` Q_B, ``long_perp_coin`` Q_L and ``short_perp_coin`` Q_S
    (both >= 0), ``quarterly_coin`` signed (negative = short), ``put_coin`` >= 0 protective puts
    of strike ``put_strike_usd`` expiring at ``put_expiry_ts_s``. Entry prices are volume-weighted
    averages in USD (the put's is its premium per coin); NaN for a flat leg, or for a leg given
    without one (the engine marks it at the first prices it sees). ``leverage`` sets the futures'
    margin (``notional / leverage``); ``hedge_ratio`` is h(t) (the plan's start value 1.0: fully
    hedged until the first 24 h volatility reading).
    """

    spot_coin: float = 0.27
    long_perp_coin: float = 0.0
    short_perp_coin: float = 0.0
    quarterly_coin: float = 0.0
    put_coin: float = 0.0
    leverage: float = 25.0
    hedge_ratio: float = 1.0
    long_perp_entry_usd: float = math.nan
    short_perp_entry_usd: float = math.nan
    quarterly_entry_usd: float = math.nan
    put_entry_usd: float = math.nan
    put_strike_usd: float = math.nan
    put_expiry_ts_s: float = math.nan

    def __post_init__(self) -> None:
        for name in ("spot_coin", "long_perp_coin", "short_perp_coin", "put_coin"):
            value = getattr(self, name)
            _require(math.isfinite(value) and value >= 0.0, f"{name} must be finite and >= 0, got {value!r}")
        _require(math.isfinite(self.quarterly_coin),
                 f"quarterly_coin must be finite, got {self.quarterly_coin!r}")
        _require(_finite_positive(self.leverage), f"leverage must be finite and > 0, got {self.leverage!r}")
        _require(math.isfinite(self.hedge_ratio) and 0.0 <= self.hedge_ratio <= 1.0,
                 f"hedge_ratio must be in [0, 1], got {self.hedge_ratio!r}")
        for name in ("long_perp_entry_usd", "short_perp_entry_usd", "quarterly_entry_usd"):
            value = getattr(self, name)
            _require(math.isnan(value) or _finite_positive(value),
                     f"{name} must be NaN or > 0, got {value!r}")
        entry = self.put_entry_usd
        _require(math.isnan(entry) or (math.isfinite(entry) and entry >= 0),
                 f"put_entry_usd must be NaN or >= 0, got {entry!r}")
        if self.put_coin > 0.0:
            _require(_finite_positive(self.put_strike_usd) and math.isfinite(self.put_expiry_ts_s),
                     "a held put needs a finite put_strike_usd > 0 and put_expiry_ts_s")

    @property
    def perp_net_coin(self) -> float:
        """``Q_L - Q_S``."""
        return self.long_perp_coin - self.short_perp_coin

    @property
    def futures_net_coin(self) -> float:
        """Every future, signed: ``Q_L - Q_S + quarterly_coin``."""
        return self.long_perp_coin - self.short_perp_coin + self.quarterly_coin

    @property
    def delta_coin(self) -> float:
        """The linear delta ``Q_B + Q_L - Q_S + quarterly_coin`` (coins), puts excluded."""
        return self.spot_coin + self.futures_net_coin

    def delta_with_options_coin(self, put_delta: float) -> float:
        """``delta_coin + put_coin * put_delta`` (``put_delta`` per put, e.g. -0.2)."""
        return self.delta_coin + (self.put_coin * put_delta if self.put_coin > 0.0 else 0.0)

    def futures_flat(self) -> bool:
        return (self.long_perp_coin <= _DUST_COIN and self.short_perp_coin <= _DUST_COIN
                and abs(self.quarterly_coin) <= _DUST_COIN)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class HedgeConfig:
    """Every threshold of the engine (see the module docstring for the rules).

    Vol thresholds and the hysteresis band are DAILY fractions (0.02 = 2 % a day); APRs are
    annual fractions; ``*_s`` seconds; ``*_coin`` coins of the asset.
    """

    profit_target_k: float = 1.5
    vol_thresholds_daily: tuple[float, ...] = (0.02, 0.04)
    hedge_ratios: tuple[float, ...] = (0.20, 0.40, 0.60)
    hysteresis_daily: float = 0.0025
    recompute_interval_s: float = 3600.0
    min_order_coin: float = 0.001
    lot_size_coin: float = 0.001
    rebalance_cooldown_s: float = 900.0
    order_timeout_s: float = 60.0
    trailing_activation_fraction: float = 0.5
    trailing_giveback_fraction: float = 0.30
    funding_multiplier_min: float = 0.5
    funding_multiplier_max: float = 1.5
    funding_apr_scale: float = 0.5
    funding_multiplier_step: float = 0.1
    migration_band_apr: float = 0.02
    put_iv_threshold_annual: float = 0.45
    put_moneyness: float = 0.90
    put_tenor_days: float = 30.0
    put_coverage_fraction: float = 0.5
    put_limit_markup: float = 0.10
    rate_annual: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "vol_thresholds_daily", tuple(float(x) for x in self.vol_thresholds_daily))
        object.__setattr__(self, "hedge_ratios", tuple(float(x) for x in self.hedge_ratios))
        for name in ("profit_target_k", "hysteresis_daily", "recompute_interval_s", "min_order_coin",
                     "lot_size_coin", "rebalance_cooldown_s", "order_timeout_s",
                     "trailing_activation_fraction", "trailing_giveback_fraction",
                     "funding_multiplier_min", "funding_multiplier_max", "funding_apr_scale",
                     "funding_multiplier_step", "migration_band_apr", "put_iv_threshold_annual",
                     "put_moneyness", "put_tenor_days", "put_coverage_fraction", "put_limit_markup",
                     "rate_annual"):
            value = getattr(self, name)
            _require(isinstance(value, (int, float)) and math.isfinite(value),
                     f"{name} must be a finite number, got {value!r}")
        t, r = self.vol_thresholds_daily, self.hedge_ratios
        _require(len(t) >= 1 and len(r) == len(t) + 1,
                 "hedge_ratios must have one more entry than vol_thresholds_daily")
        _require(all(x > 0 and math.isfinite(x) for x in t) and all(a < b for a, b in zip(t, t[1:])),
                 f"vol_thresholds_daily must be positive and increasing, got {t}")
        _require(all(0.0 <= x <= 1.0 for x in r) and all(a < b for a, b in zip(r, r[1:])),
                 f"hedge_ratios must be increasing in [0, 1], got {r}")
        gaps = [t[0]] + [b - a for a, b in zip(t, t[1:])]
        _require(0.0 <= self.hysteresis_daily and 2.0 * self.hysteresis_daily < min(gaps),
                 "hysteresis_daily must be >= 0 and less than half the gap between thresholds")
        _require(self.profit_target_k > 0, "profit_target_k must be > 0")
        _require(self.recompute_interval_s > 0, "recompute_interval_s must be > 0")
        _require(self.min_order_coin > 0 and 0 < self.lot_size_coin <= self.min_order_coin,
                 "min_order_coin must be > 0 and lot_size_coin in (0, min_order_coin]")
        _require(self.rebalance_cooldown_s >= 0 and self.order_timeout_s > 0,
                 "rebalance_cooldown_s must be >= 0 and order_timeout_s > 0")
        _require(0 < self.trailing_activation_fraction <= 1, "trailing_activation_fraction must be in (0, 1]")
        _require(0 < self.trailing_giveback_fraction < 1, "trailing_giveback_fraction must be in (0, 1)")
        _require(0 <= self.funding_multiplier_min <= 1 <= self.funding_multiplier_max,
                 "funding multiplier bounds must satisfy 0 <= min <= 1 <= max")
        _require(self.funding_apr_scale > 0 and self.funding_multiplier_step >= 0,
                 "funding_apr_scale must be > 0 and funding_multiplier_step >= 0")
        _require(self.migration_band_apr >= 0, "migration_band_apr must be >= 0")
        _require(self.put_iv_threshold_annual >= 0, "put_iv_threshold_annual must be >= 0")
        _require(0 < self.put_moneyness <= 1.5 and self.put_tenor_days > 0,
                 "put_moneyness must be in (0, 1.5] and put_tenor_days > 0")
        _require(self.put_coverage_fraction >= 0 and self.put_limit_markup >= 0,
                 "put_coverage_fraction and put_limit_markup must be >= 0")


# --------------------------------------------------------------------------- pure rules


def daily_vol_fraction(vol_annual: float) -> float:
    """An annualized vol (365-day year) as a daily fraction: ``vol_annual / sqrt(365)``."""
    return vol_annual / math.sqrt(365.0)


def funding_apr(rate_per_interval: float, interval_h: float = 8.0) -> float:
    """A funding rate per interval as an APR: ``rate * 365 * 24 / interval_h`` (no compounding)."""
    return rate_per_interval * (365.0 * 24.0 / interval_h)


def carry_cost_apr(position_sign: float, apr: float) -> float:
    """What a position of sign ``position_sign`` (+1 long, -1 short) pays per year per unit of
    notional when its instrument's carry is ``apr`` (funding APR, or the quarterly's basis APR):
    ``position_sign * apr``; negative means it earns."""
    return position_sign * apr


def hedge_ratio_for_daily_vol(vol_daily: float, thresholds: Sequence[float] = (0.02, 0.04),
                              ratios: Sequence[float] = (0.20, 0.40, 0.60)) -> float:
    """Plan 001, Sprint 1.2: ``ratios[i]`` where ``i`` counts the thresholds at or below
    ``vol_daily`` (0.20 below 2 %, 0.40 below 4 %, 0.60 above; a vol exactly at a threshold takes
    the higher ratio). NaN for a NaN vol."""
    if math.isnan(vol_daily):
        return math.nan
    return ratios[bisect_right(thresholds, vol_daily)]


def hedge_ratio_with_hysteresis(vol_daily: float, current_ratio: float, band_daily: float,
                                thresholds: Sequence[float] = (0.02, 0.04),
                                ratios: Sequence[float] = (0.20, 0.40, 0.60)) -> float:
    """The ladder with a Schmitt trigger around each threshold ``t``: from the current step the
    ratio moves up past ``t`` once ``vol_daily >= t + band_daily`` and down past it once
    ``vol_daily < t - band_daily``; in between it stays. ``band_daily = 0`` is the plain ladder;
    a ``current_ratio`` that is not on the ladder gets the plain ladder. NaN vol keeps the ratio."""
    if math.isnan(vol_daily):
        return current_ratio
    step = next((i for i, r in enumerate(ratios) if r == current_ratio), None)
    if step is None:
        return hedge_ratio_for_daily_vol(vol_daily, thresholds, ratios)
    new = step
    while new < len(thresholds) and vol_daily >= thresholds[new] + band_daily:
        new += 1
    if new == step:
        while new > 0 and vol_daily < thresholds[new - 1] - band_daily:
            new -= 1
    return ratios[new]


def funding_multiplier(carry_cost_apr_: float, *, scale_apr: float = 0.5, lowest: float = 0.5,
                       highest: float = 1.5, step: float = 0.1) -> float:
    """Sizing multiplier of the hedge from its carry cost (APR; negative = the hedge earns):
    ``clip(1 - cost / scale_apr, lowest, highest)``, rounded to ``step`` (0: not rounded) so that
    small funding moves do not resize the hedge every hour. NaN cost gives NaN."""
    if math.isnan(carry_cost_apr_):
        return math.nan
    m = 1.0 - carry_cost_apr_ / scale_apr
    if step > 0:
        m = math.floor(m / step + 0.5) * step
    return min(max(m, lowest), highest)


def hedge_on_quarterly(perp_cost_apr: float, quarterly_cost_apr: float, on_quarterly: bool,
                       band_apr: float) -> bool:
    """Where the hedge should be (plan 001 Sprint 4.2 with hysteresis), from the carry costs to
    the position held: move to the quarterly when ``perp_cost - quarterly_cost > band_apr``, back
    to the perp when ``quarterly_cost - perp_cost > band_apr``, else stay. An unknown cost stays."""
    if not (math.isfinite(perp_cost_apr) and math.isfinite(quarterly_cost_apr)):
        return on_quarterly
    if not on_quarterly and perp_cost_apr - quarterly_cost_apr > band_apr:
        return True
    if on_quarterly and quarterly_cost_apr - perp_cost_apr > band_apr:
        return False
    return on_quarterly


def profit_target_usd(vol_daily: float, hedge_notional_usd: float, k: float = 1.5) -> float:
    """``PT = k * sigma_24h`` on the hedge: ``k * vol_daily * hedge_notional_usd`` (USD)."""
    return k * vol_daily * hedge_notional_usd


def profit_exit(pnl_usd: float, peak_usd: float, armed: bool, target_usd: float,
                activation_fraction: float = 0.5, giveback_fraction: float = 0.30) -> tuple[str, float, bool]:
    """One step of the profit target and trailing stop. Returns ``(signal, peak, armed)``:
    ``signal`` is ``"take_profit"`` when ``pnl >= target``, ``"trailing_stop"`` when the stop is
    armed (the P&L once reached ``activation_fraction * target``) and ``pnl <= (1 -
    giveback_fraction) * peak``, else ``""``. A NaN P&L changes nothing; a NaN target neither
    takes profit nor arms the stop (an armed stop still fires)."""
    if math.isnan(pnl_usd):
        return "", peak_usd, armed
    peak_usd = max(peak_usd, pnl_usd)
    has_target = math.isfinite(target_usd) and target_usd > 0.0
    if has_target and pnl_usd >= target_usd:
        return "take_profit", peak_usd, armed
    if not armed and has_target and pnl_usd >= activation_fraction * target_usd:
        armed = True
    if armed and pnl_usd <= (1.0 - giveback_fraction) * peak_usd:
        return "trailing_stop", peak_usd, armed
    return "", peak_usd, armed


def front_quarterly_expiry_ts(ts_s: float) -> float:
    """The front quarterly's expiry (epoch s): the next last Friday of March, June, September or
    December at 08:00 UTC at least 10 minutes after ``ts_s``."""
    return deribit_expiries(ts_s, n_daily=0, n_weekly=0, n_monthly=0, n_quarterly=1)[0].ts


def quarterly_price_usd(spot_usd: float, basis_apr: float, ts_s: float,
                        expiry_ts_s: float | None = None) -> float:
    """The quarterly future's price from its simple annualized basis:
    ``spot * (1 + basis_apr * T)``, ``T`` the years from ``ts_s`` to ``expiry_ts_s`` (the front
    quarterly by default)."""
    expiry = front_quarterly_expiry_ts(ts_s) if expiry_ts_s is None else expiry_ts_s
    return spot_usd * (1.0 + basis_apr * (expiry - ts_s) / SECONDS_PER_YEAR)


@dataclass(frozen=True, slots=True)
class PutContract:
    """A European put: strike (USD) and expiry (epoch s, 08:00 UTC)."""

    strike_usd: float
    expiry_ts_s: float


def protective_put_contract(spot_usd: float, ts_s: float, moneyness: float = 0.90,
                            tenor_days: float = 30.0) -> PutContract:
    """The put the options hedge buys: strike ``moneyness * spot`` rounded down to a strike step
    (``nice_step(spot / 100)``: 1,000 at 100k, 25 at 2.5k), expiry the first Deribit weekly,
    monthly or quarterly at least ``tenor_days`` away (the last listed one if none is)."""
    step = nice_step(spot_usd / 100.0)
    strike = max(math.floor(spot_usd * moneyness / step) * step, step)
    expiries = deribit_expiries(ts_s, n_daily=0, n_weekly=math.ceil(tenor_days / 7.0) + 2,
                                n_monthly=3, n_quarterly=4)
    wanted = ts_s + tenor_days * 86400.0
    expiry = next((e.ts for e in expiries if e.ts >= wanted), expiries[-1].ts)
    return PutContract(strike_usd=float(strike), expiry_ts_s=float(expiry))


# --------------------------------------------------------------------------- risk by position


@dataclass(frozen=True, slots=True)
class PositionRisk:
    """One position's marks and sensitivities. ``quantity_coin`` signed (short < 0); prices USD
    (a put's per coin); ``value_usd`` what it is worth (spot and puts: ``q * mark``; futures: 0,
    their value is the unrealized P&L); ``delta_coin`` coins, ``gamma_coin_per_usd`` d delta /
    d spot, ``vega_usd`` per 1.0 of vol, ``theta_usd_per_year`` per year of calendar time;
    ``margin_usd`` the futures' initial margin ``|q| * mark / leverage``;
    ``funding_usd_per_interval`` what the position pays at the next funding (perp only; negative:
    it receives). The spot's unrealized P&L is NaN: it is collateral, carried without an entry."""

    kind: str
    quantity_coin: float
    entry_price_usd: float
    mark_usd: float
    value_usd: float
    unrealized_pnl_usd: float
    delta_coin: float
    gamma_coin_per_usd: float
    vega_usd: float
    theta_usd_per_year: float
    margin_usd: float
    funding_usd_per_interval: float


@dataclass(frozen=True, slots=True)
class BookRisk:
    """The book's positions and their totals (the hedge's unrealized P&L: futures and puts)."""

    positions: tuple[PositionRisk, ...]
    delta_coin: float
    gamma_coin_per_usd: float
    vega_usd: float
    theta_usd_per_year: float
    unrealized_pnl_usd: float
    funding_usd_per_interval: float


def _linear(kind: str, q: float, entry: float, mark: float, leverage: float,
            funding_rate: float) -> PositionRisk:
    funding = funding_rate * q * mark if kind == "perp" else 0.0
    return PositionRisk(kind, q, entry, mark, 0.0, q * (mark - entry), q, 0.0, 0.0, 0.0,
                        abs(q) * mark / leverage, funding)


def _put_risk(state: PositionState, spot_usd: float, ts_s: float, vol_annual: float,
              rate_annual: float) -> PositionRisk:
    q = state.put_coin
    expiry_years = max(state.put_expiry_ts_s - ts_s, 0.0) / SECONDS_PER_YEAR
    if _finite_positive(vol_annual):
        price, g = bs_price_greeks(spot_usd, state.put_strike_usd, expiry_years, rate_annual,
                                   vol_annual, False)
        price, delta, gamma, vega, theta = (float(price), float(g.delta), float(g.gamma), float(g.vega),
                                            float(g.theta))
    else:
        price = delta = gamma = vega = theta = math.nan
    return PositionRisk("put", q, state.put_entry_usd, price, q * price, q * (price - state.put_entry_usd),
                        q * delta, q * gamma, q * vega, q * theta, 0.0, 0.0)


def book_risk(state: PositionState, spot_usd: float, perp_mark_usd: float, ts_s: float, *,
              quarterly_mark_usd: float = math.nan, vol_annual: float = math.nan,
              rate_annual: float = 0.0, funding_rate_per_interval: float = math.nan) -> BookRisk:
    """Greeks and P&L by position (plan 002's portfolio view): the spot, each perp leg, the
    quarterly and the put (Black-Scholes on spot at ``vol_annual``, ``models.pricing``); flat
    legs are left out, the spot is always there. Totals: sums of delta, gamma, vega, theta, of the
    unrealized P&L of the futures and puts, and of the perp's funding (NaN rate: NaN when a perp
    is held)."""
    rows = [PositionRisk("spot", state.spot_coin, math.nan, spot_usd, state.spot_coin * spot_usd,
                         math.nan, state.spot_coin, 0.0, 0.0, 0.0, 0.0, 0.0)]
    if state.long_perp_coin > 0.0:
        rows.append(_linear("perp", state.long_perp_coin, state.long_perp_entry_usd, perp_mark_usd,
                            state.leverage, funding_rate_per_interval))
    if state.short_perp_coin > 0.0:
        rows.append(_linear("perp", -state.short_perp_coin, state.short_perp_entry_usd, perp_mark_usd,
                            state.leverage, funding_rate_per_interval))
    if state.quarterly_coin != 0.0:
        rows.append(_linear("quarterly", state.quarterly_coin, state.quarterly_entry_usd,
                            quarterly_mark_usd, state.leverage, 0.0))
    if state.put_coin > 0.0:
        rows.append(_put_risk(state, spot_usd, ts_s, vol_annual, rate_annual))
    hedge = rows[1:]
    return BookRisk(
        positions=tuple(rows),
        delta_coin=sum(r.delta_coin for r in rows),
        gamma_coin_per_usd=sum(r.gamma_coin_per_usd for r in rows),
        vega_usd=sum(r.vega_usd for r in rows),
        theta_usd_per_year=sum(r.theta_usd_per_year for r in rows),
        unrealized_pnl_usd=sum(r.unrealized_pnl_usd for r in hedge),
        funding_usd_per_interval=sum(r.funding_usd_per_interval for r in rows),
    )


# --------------------------------------------------------------------------- the engine


class HedgeStep(NamedTuple):
    """What ``HedgeEngine.step`` decided at ``ts_s`` (a named tuple: one is made on every bar,
    and a tuple is built at once where a frozen dataclass sets its fields one by one).

    ``orders``: proposed, not yet approved. ``mode``: the state machine's state after the step.
    ``delta_coin``: the book's delta now (puts included); ``target_delta_coin``: the delta the
    orders aim at (NaN when stale). ``unrealized_pnl_usd``: futures and puts against their
    entries; ``realized_pnl_usd``: realized since the previous step (fills, fees, funding, put
    expiry). ``cycle_pnl_usd``, ``peak_pnl_usd``, ``profit_target_usd`` and
    ``trailing_stop_usd`` (the stop level, NaN until armed) describe the take-profit cycle;
    ``distributable_profit_usd`` the profit of a cycle that closed in this step (0 otherwise),
    for the loan module. ``funding_cost_usd_per_interval``: what the perp pays at the next
    funding (negative: receives; NaN when the rate is unknown and a perp is held).
    ``put_contract``: the contract of a put order in ``orders``.
    ``events``: short strings ("hedge_ratio 0.2->0.4", "take_profit", "mode NEUTRAL->...").
    """

    ts_s: float
    orders: list[Order]
    mode: str
    hedge_ratio: float
    delta_coin: float
    target_delta_coin: float
    unrealized_pnl_usd: float
    realized_pnl_usd: float
    events: list[str]
    funding_multiplier: float
    hedge_kind: str
    cycle_pnl_usd: float
    peak_pnl_usd: float
    profit_target_usd: float
    trailing_stop_usd: float
    distributable_profit_usd: float
    funding_cost_usd_per_interval: float
    put_contract: PutContract | None
    state: PositionState


class HedgeEngine:
    """Plan 001's position manager for one asset (see the module docstring for every rule).

    ``step(market)`` once per market update; ``on_fill(fill)`` for every fill of this asset
    (whoever's order it was: a safety flatten moves the book too), ``on_rejection(rejection)``
    and ``on_order_closed(order_id)`` for the engine's orders that will not fill,
    ``on_funding(amount_usd)`` for funding settled on the perp (positive: received).
    """

    def __init__(self, config: HedgeConfig = HedgeConfig(), initial_state: PositionState = PositionState(),
                 asset: str = "BTC") -> None:
        _require(isinstance(config, HedgeConfig), "config must be a HedgeConfig")
        _require(isinstance(initial_state, PositionState), "initial_state must be a PositionState")
        _require(bool(asset), "asset must not be empty")
        self.config = config
        self.asset = asset
        self._state = initial_state
        self._mode = NEUTRAL
        on_quarterly = (abs(initial_state.quarterly_coin) > _DUST_COIN
                        and abs(initial_state.perp_net_coin) <= _DUST_COIN)
        self._hedge_kind = "quarterly" if on_quarterly else "perp"
        self._multiplier = 1.0
        self._next_ratio_ts = -math.inf
        self._next_carry_ts = -math.inf
        self._last_batch_ts = -math.inf
        self._retry_ts = -math.inf
        self._pending: dict[str, list[float]] = {}  # order id -> [remaining coin, proposed ts]
        self._put_specs: dict[str, PutContract] = {}
        self._n_orders = 0
        self._realized_since_step = 0.0
        self._cycle_realized = 0.0
        self._peak = 0.0
        self._armed = False
        self._exit_reason = "take_profit"
        self._last_iv = math.nan
        self._quarterly_expiry = -math.inf
        self._notes: list[str] = []

    # ------------------------------------------------------------------ read-only views

    @property
    def state(self) -> PositionState:
        return self._state

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def hedge_kind(self) -> str:
        """The instrument that holds the hedge: ``"perp"`` or ``"quarterly"``."""
        return self._hedge_kind

    @property
    def funding_multiplier(self) -> float:
        return self._multiplier

    @property
    def pending_order_ids(self) -> tuple[str, ...]:
        return tuple(self._pending)

    def put_contract(self, order_id: str) -> PutContract | None:
        """The contract of one of the engine's put orders (None for another order)."""
        return self._put_specs.get(order_id)

    def risk(self, market: MarketState) -> BookRisk:
        """Greeks and P&L by position at ``market`` (puts at its implied vol, or the last seen)."""
        iv = market.implied_vol_annual if _finite_positive(market.implied_vol_annual) else self._last_iv
        return book_risk(self._state, market.spot_usd, market.perp_mark_usd, market.ts_s,
                         quarterly_mark_usd=self._quarterly_mark(market), vol_annual=iv,
                         rate_annual=self.config.rate_annual,
                         funding_rate_per_interval=market.funding_rate_per_interval)

    # ------------------------------------------------------------------ feedback

    def on_fill(self, fill: Fill) -> None:
        """Apply a fill: positions net one-way (a buy closes a short before opening a long, a
        sell the reverse), closed quantity realizes P&L against the average entry, opened
        quantity moves the average entry, the fee is realized as a cost. A put fill takes its
        contract from the engine's order, or is the held contract."""
        _require(fill.asset == self.asset, f"fill for {fill.asset!r} given to the {self.asset!r} engine")
        signed = fill.signed_quantity_coin
        s = self._state
        realized = -fill.fee_usd
        if fill.kind == "perp":
            s, closed = _apply_perp(s, signed, fill.price_usd)
            realized += closed
            self._cycle_realized += closed - fill.fee_usd
        elif fill.kind == "quarterly":
            q, entry, closed = _apply_signed(s.quarterly_coin, s.quarterly_entry_usd, signed, fill.price_usd)
            s = replace(s, quarterly_coin=q, quarterly_entry_usd=entry)
            realized += closed
            self._cycle_realized += closed - fill.fee_usd
        elif fill.kind == "put":
            s, closed = self._apply_put(s, fill, signed)
            realized += closed
        elif fill.kind == "spot":
            spot = s.spot_coin + signed
            s = replace(s, spot_coin=0.0 if -_DUST_COIN < spot < 0.0 else spot)  # more sold: ValueError
        else:
            raise ValueError(f"fill kind {fill.kind!r} is not one of spot, perp, quarterly, put")
        self._state = s
        self._realized_since_step += realized
        pending = self._pending.get(fill.order_id)
        if pending is not None:
            pending[0] -= fill.quantity_coin
            if pending[0] <= _DUST_COIN:
                del self._pending[fill.order_id]

    def on_rejection(self, rejection: Rejection) -> None:
        """The safety gate refused one of the engine's orders: forget it, and propose nothing
        for ``order_timeout_s`` (a refused order is not retried at every tick)."""
        if self._pending.pop(rejection.order.order_id, None) is not None:
            self._retry_ts = max(self._retry_ts, rejection.ts_s + self.config.order_timeout_s)
            self._notes.append(f"rejected {rejection.order.reason} by {rejection.rule}")

    def on_order_closed(self, order_id: str) -> None:
        """An order of the engine was cancelled or expired with its remainder unfilled."""
        self._pending.pop(order_id, None)

    def on_funding(self, amount_usd: float) -> None:
        """Funding settled on the perp hedge (positive: received). Part of the cycle P&L."""
        _require(math.isfinite(amount_usd), f"amount_usd must be finite, got {amount_usd!r}")
        self._realized_since_step += amount_usd
        self._cycle_realized += amount_usd

    def _apply_put(self, s: PositionState, fill: Fill, signed: float) -> tuple[PositionState, float]:
        spec = self._put_specs.get(fill.order_id)
        held = s.put_coin > _DUST_COIN
        if held:
            spec_held = PutContract(s.put_strike_usd, s.put_expiry_ts_s)
            _require(spec is None or spec == spec_held,
                     "a put fill for another contract than the one held (one put line at a time)")
            spec = spec_held
        _require(spec is not None, f"put fill {fill.order_id!r}: unknown contract and no put held")
        q, entry, closed = _apply_signed(s.put_coin, s.put_entry_usd, signed, fill.price_usd)
        _require(q >= 0.0, "a put fill would leave the book short puts")
        if q <= _DUST_COIN:
            return replace(s, put_coin=0.0, put_entry_usd=math.nan, put_strike_usd=math.nan,
                           put_expiry_ts_s=math.nan), closed
        return replace(s, put_coin=q, put_entry_usd=entry, put_strike_usd=spec.strike_usd,
                       put_expiry_ts_s=spec.expiry_ts_s), closed

    # ------------------------------------------------------------------ the step

    def step(self, market: MarketState) -> HedgeStep:
        """Decide at ``market.ts_s``: hedge ratio and funding (when due), profit target and
        trailing stop, the mode, and the orders (see the module docstring)."""
        if market.asset != self.asset:  # (the message is not formatted on every step)
            raise ValueError(f"market for {market.asset!r} given to the {self.asset!r} engine")
        cfg, ts = self.config, market.ts_s
        events, self._notes = self._notes, []
        if self._pending:
            timeout = cfg.order_timeout_s
            timed_out = [oid for oid, (_, t) in self._pending.items() if ts - t >= timeout]
            for oid in timed_out:
                del self._pending[oid]
                events.append(f"order_timeout {oid}")
        if _finite_positive(market.implied_vol_annual):
            self._last_iv = market.implied_vol_annual
        spot, perp = market.spot_usd, market.perp_mark_usd
        qmark = self._quarterly_mark(market)
        s = self._state
        stale = (not market.oracle_ok or not _finite_positive(spot) or not _finite_positive(perp)
                 or ((s.quarterly_coin != 0.0 or self._hedge_kind == "quarterly")
                     and not _finite_positive(qmark))
                 or (s.put_coin > 0.0 and not _finite_positive(self._last_iv)
                     and ts < s.put_expiry_ts_s))
        if stale:
            events.append("stale_prices")
            return self._stale_step(market, events)

        self._mark_missing_entries(perp, qmark, events)
        self._expire_put(spot, ts, events)
        vol_daily = (daily_vol_fraction(market.vol_24h_annual)
                     if math.isfinite(market.vol_24h_annual) and market.vol_24h_annual >= 0 else math.nan)
        self._recompute_sizing(market, vol_daily, events)

        s = self._state
        put = _put_risk(s, spot, ts, self._last_iv, cfg.rate_annual) if s.put_coin > 0.0 else None
        put_delta = put.delta_coin if put is not None else 0.0
        delta = s.delta_coin + put_delta
        futures_pnl, notional = _futures_pnl_notional(s, perp, qmark)
        cycle_pnl = self._cycle_realized + futures_pnl
        target_usd = (profit_target_usd(vol_daily, notional, cfg.profit_target_k)
                      if notional > 0.0 and math.isfinite(vol_daily) else math.nan)
        distributable = 0.0
        orders: list[Order] = []
        put_contract = None
        can_trade = not self._pending and ts >= self._retry_ts
        old_mode = self._mode

        if self._mode in (NEUTRAL, LONG_BIASED, SHORT_BIASED) and notional > 0.0:
            was_armed = self._armed
            signal, self._peak, self._armed = profit_exit(
                cycle_pnl, self._peak, self._armed, target_usd, cfg.trailing_activation_fraction,
                cfg.trailing_giveback_fraction)
            if self._armed and not was_armed:
                events.append("trailing_stop_armed")
            if signal:
                events.append(signal)
                self._exit_reason = signal
                self._mode = TAKE_PROFIT

        if self._mode == TAKE_PROFIT:
            if s.futures_flat():
                distributable = max(self._cycle_realized, 0.0)
                events.append(f"cycle_closed {self._cycle_realized:.2f}")
                self._start_cycle()
                self._mode = REBALANCE
            else:
                target_delta = s.spot_coin + put_delta
                if can_trade:
                    orders = [self._order(ts, kind, q, self._exit_reason, True)
                              for kind, q in _closing_trades(s)]

        if self._mode != TAKE_PROFIT:
            net_short = self._net_short_target(s, put_delta)
            target_delta = s.spot_coin + put_delta - net_short
            deviation = delta - target_delta
            if self._mode == REBALANCE:
                # not in the step that closed the cycle: REBALANCE is always a step of its own
                if (old_mode == REBALANCE and abs(deviation) < cfg.min_order_coin
                        and self._other_kind_flat(s)):
                    self._mode = NEUTRAL
            else:
                self._mode = (LONG_BIASED if deviation >= cfg.min_order_coin
                              else SHORT_BIASED if deviation <= -cfg.min_order_coin else NEUTRAL)
            cooled = self._mode == REBALANCE or ts >= self._last_batch_ts + cfg.rebalance_cooldown_s
            if can_trade and cooled:
                orders, put_contract, target_delta = self._sizing_orders(market, s, put_delta)
                if orders:
                    self._last_batch_ts = ts
        if self._mode != old_mode:
            events.append(f"mode {old_mode}->{self._mode}")

        unrealized = futures_pnl + (put.unrealized_pnl_usd if put is not None else 0.0)
        realized, self._realized_since_step = self._realized_since_step, 0.0
        return HedgeStep(
            ts_s=ts, orders=orders, mode=self._mode, hedge_ratio=s.hedge_ratio, delta_coin=delta,
            target_delta_coin=target_delta, unrealized_pnl_usd=unrealized, realized_pnl_usd=realized,
            events=events, funding_multiplier=self._multiplier, hedge_kind=self._hedge_kind,
            cycle_pnl_usd=cycle_pnl, peak_pnl_usd=self._peak, profit_target_usd=target_usd,
            trailing_stop_usd=self._stop_level(), distributable_profit_usd=distributable,
            funding_cost_usd_per_interval=_perp_funding(s, market), put_contract=put_contract, state=s)

    # ------------------------------------------------------------------ step helpers

    def _stale_step(self, market: MarketState, events: list[str]) -> HedgeStep:
        s = self._state
        realized, self._realized_since_step = self._realized_since_step, 0.0
        return HedgeStep(
            ts_s=market.ts_s, orders=[], mode=self._mode, hedge_ratio=s.hedge_ratio,
            delta_coin=s.delta_coin if s.put_coin == 0.0 else math.nan, target_delta_coin=math.nan,
            unrealized_pnl_usd=math.nan, realized_pnl_usd=realized, events=events,
            funding_multiplier=self._multiplier, hedge_kind=self._hedge_kind, cycle_pnl_usd=math.nan,
            peak_pnl_usd=self._peak, profit_target_usd=math.nan,
            trailing_stop_usd=self._stop_level(),
            distributable_profit_usd=0.0, funding_cost_usd_per_interval=math.nan, put_contract=None,
            state=s)

    def _quarterly_mark(self, market: MarketState) -> float:
        if not (_finite_positive(market.spot_usd) and math.isfinite(market.quarterly_basis_apr)):
            return math.nan
        if market.ts_s + 600.0 >= self._quarterly_expiry:  # the cached front quarterly has rolled
            self._quarterly_expiry = front_quarterly_expiry_ts(market.ts_s)
        return quarterly_price_usd(market.spot_usd, market.quarterly_basis_apr, market.ts_s,
                                   self._quarterly_expiry)

    def _mark_missing_entries(self, perp: float, qmark: float, events: list[str]) -> None:
        s = self._state
        changes = {}
        if s.long_perp_coin > 0 and math.isnan(s.long_perp_entry_usd):
            changes["long_perp_entry_usd"] = perp
        if s.short_perp_coin > 0 and math.isnan(s.short_perp_entry_usd):
            changes["short_perp_entry_usd"] = perp
        if s.quarterly_coin != 0 and math.isnan(s.quarterly_entry_usd):
            changes["quarterly_entry_usd"] = qmark
        if changes:
            self._state = replace(s, **changes)
            events.append("entries_marked")

    def _expire_put(self, spot: float, ts: float, events: list[str]) -> None:
        s = self._state
        if s.put_coin > 0.0 and ts >= s.put_expiry_ts_s:
            payoff = max(s.put_strike_usd - spot, 0.0)
            entry = s.put_entry_usd if math.isfinite(s.put_entry_usd) else 0.0
            self._realized_since_step += s.put_coin * (payoff - entry)
            self._state = replace(s, put_coin=0.0, put_entry_usd=math.nan, put_strike_usd=math.nan,
                                  put_expiry_ts_s=math.nan)
            events.append(f"put_expired payoff {payoff:.2f}")

    def _recompute_sizing(self, market: MarketState, vol_daily: float, events: list[str]) -> None:
        cfg, ts = self.config, market.ts_s
        s = self._state
        if ts >= self._next_ratio_ts and math.isfinite(vol_daily):
            h = hedge_ratio_with_hysteresis(vol_daily, s.hedge_ratio, cfg.hysteresis_daily,
                                            cfg.vol_thresholds_daily, cfg.hedge_ratios)
            if h != s.hedge_ratio:
                events.append(f"hedge_ratio {s.hedge_ratio:g}->{h:g}")
                self._state = replace(s, hedge_ratio=h)
            self._next_ratio_ts = ts + cfg.recompute_interval_s
        if ts < self._next_carry_ts:
            return
        f_apr = (funding_apr(market.funding_rate_per_interval, market.funding_interval_h)
                 if _finite_positive(market.funding_interval_h) else math.nan)
        b_apr = market.quarterly_basis_apr
        if math.isfinite(f_apr) or math.isfinite(b_apr):
            perp_cost, quarterly_cost = carry_cost_apr(_HEDGE_SIGN, f_apr), carry_cost_apr(_HEDGE_SIGN, b_apr)
            on_q = hedge_on_quarterly(perp_cost, quarterly_cost, self._hedge_kind == "quarterly",
                                      cfg.migration_band_apr)
            kind = "quarterly" if on_q else "perp"
            if kind != self._hedge_kind:
                events.append(f"migrate_to_{kind}")
                self._hedge_kind = kind
            m = funding_multiplier(perp_cost if kind == "perp" else quarterly_cost,
                                   scale_apr=cfg.funding_apr_scale, lowest=cfg.funding_multiplier_min,
                                   highest=cfg.funding_multiplier_max, step=cfg.funding_multiplier_step)
            if math.isfinite(m) and m != self._multiplier:
                events.append(f"funding_multiplier {self._multiplier:.2f}->{m:.2f}")
                self._multiplier = m
            self._next_carry_ts = ts + cfg.recompute_interval_s

    def _net_short_target(self, s: PositionState, put_delta_coin: float) -> float:
        h_eff = min(max(s.hedge_ratio * self._multiplier, 0.0), 1.0)
        return max(h_eff * s.spot_coin + put_delta_coin, 0.0)

    def _other_kind_flat(self, s: PositionState) -> bool:
        """No leg of the instrument that does not hold the hedge is left to close."""
        other = "quarterly" if self._hedge_kind == "perp" else "perp"
        return all(abs(q) < self.config.min_order_coin for _, q in _legs(s, other))

    def _stop_level(self) -> float:
        """The armed trailing stop's P&L level (USD), NaN while it is not armed."""
        return (1.0 - self.config.trailing_giveback_fraction) * self._peak if self._armed else math.nan

    def _start_cycle(self) -> None:
        self._cycle_realized = 0.0
        self._peak = 0.0
        self._armed = False

    def _sizing_orders(self, market: MarketState, s: PositionState,
                       put_delta: float) -> tuple[list[Order], PutContract | None, float]:
        """Orders toward the target (with a new put when the options hedge triggers), the put's
        contract, and the target delta they aim at."""
        cfg, ts, spot = self.config, market.ts_s, market.spot_usd
        orders: list[Order] = []
        contract = None
        iv = market.implied_vol_annual
        if (s.put_coin <= 0.0 and cfg.put_coverage_fraction > 0.0 and _finite_positive(iv)
                and iv < cfg.put_iv_threshold_annual and self._mode != REBALANCE):
            put_q = _round_lot(cfg.put_coverage_fraction * s.spot_coin, cfg.lot_size_coin)
            if put_q >= cfg.min_order_coin:
                contract = protective_put_contract(spot, ts, cfg.put_moneyness, cfg.put_tenor_days)
                expiry_years = (contract.expiry_ts_s - ts) / SECONDS_PER_YEAR
                premium, g = bs_price_greeks(spot, contract.strike_usd, expiry_years, cfg.rate_annual,
                                             iv, False)
                order = self._order(ts, "put", put_q, "options_hedge", False,
                                    limit=float(premium) * (1.0 + cfg.put_limit_markup))
                self._put_specs[order.order_id] = contract
                orders.append(order)
                put_delta += put_q * float(g.delta)
        net_short = self._net_short_target(s, put_delta)
        hedge, other = self._hedge_kind, ("quarterly" if self._hedge_kind == "perp" else "perp")
        reason = "rebalance"
        residual = 0.0  # legs of the other instrument too small to close: the hedge absorbs them
        for kind, q in _legs(s, other):
            if abs(q) >= cfg.min_order_coin:
                reason = f"migrate_to_{hedge}"
                orders.append(self._order(ts, kind, -q, reason, True))
            else:
                residual += q
        held = s.perp_net_coin if hedge == "perp" else s.quarterly_coin
        trade = -net_short - held - residual
        if abs(trade) >= cfg.min_order_coin:
            trade = _round_to_order(trade, cfg.min_order_coin, cfg.lot_size_coin)
            reduce_only = (trade > 0 and trade <= _short_of(s, hedge) + _DUST_COIN) or \
                          (trade < 0 and -trade <= _long_of(s, hedge) + _DUST_COIN)
            orders.append(self._order(ts, hedge, trade, reason, reduce_only))
        return orders, contract, s.spot_coin + put_delta - net_short

    def _order(self, ts: float, kind: str, signed_qty: float, reason: str, reduce_only: bool,
               limit: float = math.nan) -> Order:
        self._n_orders += 1
        oid = f"hedge-{self.asset}-{reason}-{self._n_orders}"
        qty = abs(signed_qty)
        self._pending[oid] = [qty, ts]
        return Order(ts_s=ts, asset=self.asset, kind=kind, side="buy" if signed_qty > 0 else "sell",
                     quantity_coin=qty, reason=reason, limit_price_usd=limit, reduce_only=reduce_only,
                     order_id=oid)


# --------------------------------------------------------------------------- position arithmetic


def _round_lot(q: float, lot: float) -> float:
    return round(q / lot) * lot


def _round_to_order(q: float, min_order: float, lot: float) -> float:
    """A trade of at least ``min_order`` rounded to the lot, and up to the smallest lot multiple
    that is an order when rounding fell below it: at most one lot from ``q``."""
    size = _round_lot(abs(q), lot)
    if size < min_order:
        size = math.ceil(min_order / lot - 1e-9) * lot
    return math.copysign(size, q)


def _apply_signed(q: float, entry: float, trade: float, price: float) -> tuple[float, float, float]:
    """A signed position ``q`` at average ``entry`` trades ``trade`` at ``price``: the new
    position, its average entry, and the P&L realized by the part that closed."""
    realized = 0.0
    if q != 0.0 and (q > 0) != (trade > 0):
        closed = min(abs(trade), abs(q))
        sign = 1.0 if q > 0 else -1.0
        realized = closed * (price - entry) * sign
        q -= sign * closed
        trade += sign * closed
        if abs(q) <= _DUST_COIN:
            q, entry = 0.0, math.nan
    if abs(trade) > _DUST_COIN:
        total = abs(q) + abs(trade)
        entry = price if q == 0.0 else (abs(q) * entry + abs(trade) * price) / total
        q += trade
    return q, entry, realized


def _apply_perp(s: PositionState, trade: float, price: float) -> tuple[PositionState, float]:
    """One-way netting on the two perp legs: a buy closes the short leg first, then opens long."""
    realized = 0.0
    long_q, long_e = s.long_perp_coin, s.long_perp_entry_usd
    short_q, short_e = s.short_perp_coin, s.short_perp_entry_usd
    if trade > 0:
        closed = min(trade, short_q)
        if closed > 0:
            realized += closed * (short_e - price)
            short_q -= closed
            trade -= closed
        if trade > _DUST_COIN:
            long_q, long_e, _ = _apply_signed(long_q, long_e, trade, price)
    else:
        closed = min(-trade, long_q)
        if closed > 0:
            realized += closed * (price - long_e)
            long_q -= closed
            trade += closed
        if trade < -_DUST_COIN:
            neg, short_e, _ = _apply_signed(-short_q, short_e, trade, price)
            short_q = -neg
    if short_q <= _DUST_COIN:
        short_q, short_e = 0.0, math.nan
    if long_q <= _DUST_COIN:
        long_q, long_e = 0.0, math.nan
    return replace(s, long_perp_coin=long_q, long_perp_entry_usd=long_e, short_perp_coin=short_q,
                   short_perp_entry_usd=short_e), realized


def _legs(s: PositionState, kind: str) -> list[tuple[str, float]]:
    """The signed legs of one instrument (the perp can hold a long and a short leg)."""
    if kind == "perp":
        return [("perp", q) for q in (s.long_perp_coin, -s.short_perp_coin) if q != 0.0]
    return [("quarterly", s.quarterly_coin)] if s.quarterly_coin != 0.0 else []


def _closing_trades(s: PositionState) -> list[tuple[str, float]]:
    """The trades that flatten every futures leg."""
    return [(kind, -q) for instrument in HEDGE_KINDS for kind, q in _legs(s, instrument)]


def _short_of(s: PositionState, kind: str) -> float:
    return s.short_perp_coin if kind == "perp" else max(-s.quarterly_coin, 0.0)


def _long_of(s: PositionState, kind: str) -> float:
    return s.long_perp_coin if kind == "perp" else max(s.quarterly_coin, 0.0)


def _futures_pnl_notional(s: PositionState, perp: float, qmark: float) -> tuple[float, float]:
    pnl = notional = 0.0
    if s.long_perp_coin > 0.0:
        pnl += s.long_perp_coin * (perp - s.long_perp_entry_usd)
        notional += s.long_perp_coin * perp
    if s.short_perp_coin > 0.0:
        pnl += s.short_perp_coin * (s.short_perp_entry_usd - perp)
        notional += s.short_perp_coin * perp
    if s.quarterly_coin != 0.0:
        pnl += s.quarterly_coin * (qmark - s.quarterly_entry_usd)
        notional += abs(s.quarterly_coin) * qmark
    return pnl, notional


def _perp_funding(s: PositionState, market: MarketState) -> float:
    net = s.perp_net_coin
    if net == 0.0:
        return 0.0
    return market.funding_rate_per_interval * net * market.perp_mark_usd
