"""Backtest of the premium model against realized payoffs, and the premium's history (plan 000:
PF-304 premium trending and historical analysis, PF-309 backtesting of premium models).

Pure: a price series comes in as arrays (``ts_s`` epoch seconds, strictly increasing;
``close_usd`` the price at each), loading it is the caller's job.

The experiment. Every ``sell_every_hours`` (the first sale at ``first_sale_hour_utc`` once
``vol_window_hours`` of history exist) the desk sells, for each tenor in ``tenors_days`` and each
tier of the premium config, a put on ``amount_coin`` at the tier's strike (``strike_fraction`` of
the spot at sale), priced by ``models.premium.quote_from_vols`` off a FLAT surface at the trailing
realized volatility: strike vol = ATM vol = reference vol = ``vol_multiplier`` x the realized vol
of the last ``vol_window_hours``. So the volatility and skew factors are zero, and the only shape
the model adds to the lognormal is its Merton jump adjustment (the config's jumps, variance-matched
by default), plus its margins. At expiry the put pays ``amount * max(K - S_expiry, 0)``.

Prices are read without look-ahead: the price "at" a time is the last close at or before it, and
it must be at most ``max_price_age_s`` old (a policy whose sale or settlement price is older, in a
gap of the data, is skipped and counted). Realized vol is the zero-mean estimator
``sqrt(mean(r^2) * bars_per_year)`` of the log returns between prices sampled every
``vol_bar_minutes`` over the window (the standard high-frequency estimator: the mean return over a
few days is noise, not information).

Statistics. ``loss_ratio`` is payoff / premium; ``calibration_usd`` the mean of premium - payoff
per policy (the seller's mean P&L: positive by the margins when the model is right) and
``fair_calibration_usd`` the mean of fair value - payoff (zero when the model's fair value is
right). The same means in percent of each policy's notional (``*_pct_of_notional``) are the ones
to judge calibration by: in USD a policy's error scales with the price level, so over a history in
which the price doubles or halves a few high-price weeks dominate the mean and its t-statistic is
skewed (on simulated paths of the model's own law: mean t about -0.4, sd 0.8 in USD; mean 0, sd 1
per notional). All standard errors treat the policies sold at one time as one cluster (tiers and tenors
sold together move together) and inflate the variance by the overlap
``m = longest tenor / sale interval`` (policies alive at the same time share price moves; ``m`` is
the variance factor of overlapping sums of independent returns). They are sample estimates: where
few policies paid (a far out-of-the-money tier, a short history) they understate the uncertainty,
down to zero when none paid; read them beside ``hit_rate``. With one month of data the errors are
wide in any case: a month is one draw of the market, not a sample of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from models.premium import PremiumConfig, quote_from_vols
from models.scenarios import SECONDS_PER_YEAR

__all__ = ["BacktestConfig", "BacktestSummary", "PremiumTrend", "BacktestPolicies",
           "PremiumBacktest", "price_at", "trailing_realized_vol", "sale_times",
           "summarize_policies", "backtest_premiums"]

_DAY_S = 86_400.0


@dataclass(frozen=True)
class BacktestConfig:
    """What the backtest sells and how it measures the vol (module docstring). Times in hours,
    minutes and days as named; ``first_sale_hour_utc`` None starts right after the warm-up."""

    tenors_days: tuple[float, ...] = (1.0, 3.0, 7.0)
    sell_every_hours: float = 24.0
    first_sale_hour_utc: float | None = 8.0
    vol_window_hours: float = 72.0
    vol_bar_minutes: float = 60.0
    vol_multiplier: float = 1.0
    amount_coin: float = 1.0
    max_price_age_s: float = 300.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "tenors_days", tuple(float(d) for d in self.tenors_days))
        if not self.tenors_days or not all(math.isfinite(d) and d > 0.0 for d in self.tenors_days):
            raise ValueError(f"tenors_days must be positive days, got {self.tenors_days!r}")
        if len(set(self.tenors_days)) != len(self.tenors_days):
            raise ValueError(f"tenors_days must be distinct, got {self.tenors_days!r}")
        for name in ("sell_every_hours", "vol_window_hours", "vol_bar_minutes", "vol_multiplier",
                     "amount_coin", "max_price_age_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.vol_bar_minutes * 60.0 * 2 > self.vol_window_hours * 3600.0:
            raise ValueError("the vol window must hold at least two bars: vol_window_hours="
                             f"{self.vol_window_hours!r}, vol_bar_minutes={self.vol_bar_minutes!r}")
        hour = self.first_sale_hour_utc
        if hour is not None and not (isinstance(hour, (int, float)) and 0.0 <= hour < 24.0):
            raise ValueError(f"first_sale_hour_utc must be in [0, 24) or None, got {hour!r}")


@dataclass(frozen=True)
class BacktestSummary:
    """The figures of a set of policies (USD for all their coins; NaN where undefined, e.g. a
    ratio over no premium). ``hit_rate`` is the share of policies that paid anything;
    ``expected_loss_ratio`` is fair value / premium, the loss ratio if payoffs met the model's
    expectation; ``loss_ratio_stderr`` the standard error of ``loss_ratio`` around it (from the USD
    errors, so approximate); ``*_pct_of_notional`` the calibration means in percent of notional
    (``amount * spot at sale``) and ``*_pct_stderr`` their standard errors, in percent too."""

    n_policies: int
    n_sales: int
    total_premium_usd: float
    total_payoff_usd: float
    total_fair_value_usd: float
    premium_pnl_usd: float
    loss_ratio: float
    expected_loss_ratio: float
    loss_ratio_stderr: float
    hit_rate: float
    mean_premium_usd: float
    mean_payoff_usd: float
    calibration_usd: float
    calibration_stderr_usd: float
    fair_calibration_usd: float
    fair_calibration_stderr_usd: float
    calibration_pct_of_notional: float
    calibration_pct_stderr: float
    fair_calibration_pct_of_notional: float
    fair_calibration_pct_stderr: float
    overlap: float


@dataclass(frozen=True, eq=False)
class PremiumTrend:
    """One (tier, tenor)'s premium through time (PF-304), by sale time: spot and vol at sale, the
    premium and the payoff in percent of the notional ``amount * spot``, and the seller's
    cumulative P&L (premium - payoff) in USD."""

    sale_ts_s: np.ndarray
    spot_usd: np.ndarray
    vol_annual: np.ndarray
    premium_pct_of_notional: np.ndarray
    payoff_pct_of_notional: np.ndarray
    cumulative_pnl_usd: np.ndarray


@dataclass(frozen=True, eq=False)
class BacktestPolicies:
    """Every policy sold, as parallel arrays ordered by sale time, tenor, tier."""

    sale_ts_s: np.ndarray
    expiry_ts_s: np.ndarray
    tenor_days: np.ndarray
    tier: np.ndarray  # tier names (str)
    spot_usd: np.ndarray
    strike_usd: np.ndarray
    settle_usd: np.ndarray
    vol_annual: np.ndarray
    amount_coin: float
    premium_usd: np.ndarray
    fair_value_usd: np.ndarray
    payoff_usd: np.ndarray

    def __len__(self) -> int:
        return int(self.premium_usd.size)


@dataclass(frozen=True, eq=False)
class PremiumBacktest:
    """The backtest's result: the policies, the overall summary, one summary and one trend per
    (tier name, tenor days), and the sale x tenor slots skipped for stale or missing prices."""

    config: BacktestConfig
    premium_config: PremiumConfig
    policies: BacktestPolicies
    summary: BacktestSummary
    by_group: dict[tuple[str, float], BacktestSummary] = field(default_factory=dict)
    trend: dict[tuple[str, float], PremiumTrend] = field(default_factory=dict)
    n_skipped: int = 0


# --------------------------------------------------------------------------- prices and vol


def _series(ts_s, close_usd) -> tuple[np.ndarray, np.ndarray]:
    ts = np.asarray(ts_s, dtype=np.float64)
    close = np.asarray(close_usd, dtype=np.float64)
    if ts.ndim != 1 or close.shape != ts.shape or ts.size < 2:
        raise ValueError(f"ts_s and close_usd must be 1-d arrays of one length >= 2, got shapes "
                         f"{ts.shape} and {close.shape}")
    if not np.all(np.isfinite(ts)) or np.any(np.diff(ts) <= 0.0):
        raise ValueError("ts_s must be finite and strictly increasing (epoch seconds)")
    if not np.all(np.isfinite(close) & (close > 0.0)):
        raise ValueError("close_usd must hold finite prices > 0")
    return ts, close


def price_at(ts_s: np.ndarray, close_usd: np.ndarray, at_s, max_age_s: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """The last price at or before each time of ``at_s`` and whether it is usable (exists and is
    at most ``max_age_s`` old); unusable prices are NaN."""
    at = np.asarray(at_s, dtype=np.float64)
    index = np.searchsorted(ts_s, at, side="right") - 1
    safe = np.clip(index, 0, ts_s.size - 1)
    ok = (index >= 0) & (at - ts_s[safe] <= max_age_s)
    return np.where(ok, close_usd[safe], np.nan), ok


def trailing_realized_vol(ts_s, close_usd, at_s, *, window_s: float, bar_s: float,
                          max_price_age_s: float) -> np.ndarray:
    """Annualized realized vol over ``[at - window_s, at]`` for each time of ``at_s``: prices
    sampled every ``bar_s`` back from ``at`` (``price_at``), zero-mean estimator
    ``sqrt(mean(r^2) * SECONDS_PER_YEAR / bar_s)``. NaN where any sampled price is unusable."""
    ts, close = _series(ts_s, close_usd)
    n_bars = int(math.floor(window_s / bar_s + 1e-9))
    if n_bars < 2:
        raise ValueError(f"the window must hold at least two bars, got window_s={window_s!r}, "
                         f"bar_s={bar_s!r}")
    at = np.atleast_1d(np.asarray(at_s, dtype=np.float64))
    grid = at[:, None] - bar_s * np.arange(n_bars, -1, -1, dtype=np.float64)
    prices, ok = price_at(ts, close, grid, max_price_age_s)
    with np.errstate(invalid="ignore"):
        returns = np.diff(np.log(prices), axis=1)
    vol = np.sqrt(np.mean(np.square(returns), axis=1) * SECONDS_PER_YEAR / bar_s)
    return np.where(ok.all(axis=1), vol, np.nan)


def sale_times(first_ts_s: float, last_ts_s: float, config: BacktestConfig) -> np.ndarray:
    """Sale times (epoch s): from the end of the vol warm-up (moved to the next
    ``first_sale_hour_utc`` if set) every ``sell_every_hours``, up to ``last_ts_s``."""
    start = first_ts_s + config.vol_window_hours * 3600.0
    if config.first_sale_hour_utc is not None:
        day = math.floor(start / _DAY_S) * _DAY_S
        aligned = day + config.first_sale_hour_utc * 3600.0
        start = aligned if aligned >= start else aligned + _DAY_S
    step = config.sell_every_hours * 3600.0
    if start > last_ts_s:
        return np.empty(0)
    return start + step * np.arange(int(math.floor((last_ts_s - start) / step)) + 1)


# --------------------------------------------------------------------------- statistics


def summarize_policies(premium_usd, payoff_usd, fair_value_usd, notional_usd, sale_ts_s, *,
                       overlap: float = 1.0) -> BacktestSummary:
    """The summary of a set of policies (module docstring: clustered by sale time, variance
    inflated by ``overlap``); ``notional_usd`` is each policy's ``amount * spot at sale``."""
    premium = np.asarray(premium_usd, dtype=np.float64)
    payoff = np.asarray(payoff_usd, dtype=np.float64)
    fair = np.asarray(fair_value_usd, dtype=np.float64)
    notional = np.asarray(notional_usd, dtype=np.float64)
    sale = np.asarray(sale_ts_s, dtype=np.float64)
    n = int(premium.size)
    if not (premium.shape == payoff.shape == fair.shape == notional.shape == sale.shape
            and premium.ndim == 1):
        raise ValueError("premium, payoff, fair value, notional and sale times must be 1-d and of "
                         "one length")
    if not np.all(notional > 0.0):
        raise ValueError("notional_usd must be > 0")
    if not (math.isfinite(overlap) and overlap >= 1.0):
        raise ValueError(f"overlap must be >= 1, got {overlap!r}")
    nan = math.nan
    total_premium, total_payoff, total_fair = (float(x.sum()) for x in (premium, payoff, fair))
    sales, cluster = np.unique(sale, return_inverse=True)

    def mean_and_se(diff: np.ndarray) -> tuple[float, float]:
        if n == 0:
            return nan, nan
        sums = np.bincount(cluster, weights=diff, minlength=sales.size)
        if sales.size < 2:
            return float(diff.mean()), nan
        return float(diff.mean()), math.sqrt(sales.size * float(np.var(sums, ddof=1)) * overlap) / n

    calibration, calibration_se = mean_and_se(premium - payoff)
    fair_calibration, fair_se = mean_and_se(fair - payoff)
    calibration_pct, calibration_pct_se = mean_and_se(100.0 * (premium - payoff) / notional)
    fair_pct, fair_pct_se = mean_and_se(100.0 * (fair - payoff) / notional)
    mean_premium = total_premium / n if n else nan
    return BacktestSummary(
        n_policies=n, n_sales=int(sales.size), total_premium_usd=total_premium,
        total_payoff_usd=total_payoff, total_fair_value_usd=total_fair,
        premium_pnl_usd=total_premium - total_payoff,
        loss_ratio=total_payoff / total_premium if total_premium > 0.0 else nan,
        expected_loss_ratio=total_fair / total_premium if total_premium > 0.0 else nan,
        loss_ratio_stderr=fair_se / mean_premium if n and mean_premium > 0.0 else nan,
        hit_rate=float(np.mean(payoff > 0.0)) if n else nan,
        mean_premium_usd=mean_premium, mean_payoff_usd=total_payoff / n if n else nan,
        calibration_usd=calibration, calibration_stderr_usd=calibration_se,
        fair_calibration_usd=fair_calibration, fair_calibration_stderr_usd=fair_se,
        calibration_pct_of_notional=calibration_pct, calibration_pct_stderr=calibration_pct_se,
        fair_calibration_pct_of_notional=fair_pct, fair_calibration_pct_stderr=fair_pct_se,
        overlap=float(overlap),
    )


# --------------------------------------------------------------------------- the backtest


def backtest_premiums(ts_s, close_usd, *, config: BacktestConfig = BacktestConfig(),
                      premium_config: PremiumConfig = PremiumConfig(),
                      vol_annual: float | None = None) -> PremiumBacktest:
    """Sell the tiers' puts through the series and settle them (module docstring).

    ``vol_annual`` replaces the trailing realized vol by a constant (e.g. the true vol of a
    simulated series); ``config.vol_multiplier`` applies to either. Deterministic: the same
    arrays give the same result.
    """
    ts, close = _series(ts_s, close_usd)
    if vol_annual is not None and not (math.isfinite(vol_annual) and vol_annual > 0.0):
        raise ValueError(f"vol_annual must be a finite annualized fraction > 0, got {vol_annual!r}")
    sales = sale_times(float(ts[0]), float(ts[-1]), config)
    tenors = np.asarray(config.tenors_days)
    tiers = premium_config.tiers
    expiry = sales[:, None] + tenors[None, :] * _DAY_S
    alive = expiry <= ts[-1]  # expired within the data: the rest are not settled yet, not skipped

    spot, spot_ok = price_at(ts, close, sales, config.max_price_age_s)
    if vol_annual is None:
        vol = trailing_realized_vol(ts, close, sales, window_s=config.vol_window_hours * 3600.0,
                                    bar_s=config.vol_bar_minutes * 60.0,
                                    max_price_age_s=config.max_price_age_s)
    else:
        vol = np.full(sales.shape, float(vol_annual))
    vol = vol * config.vol_multiplier
    settle, settle_ok = price_at(ts, close, expiry, config.max_price_age_s)
    priced = spot_ok & np.isfinite(vol) & (vol > 0.0)
    usable = priced[:, None] & settle_ok & alive
    n_skipped = int(np.sum(alive & ~usable))

    fractions = np.array([t.strike_fraction for t in tiers])
    markups = np.array([t.markup_fraction for t in tiers])
    amount = config.amount_coin
    shape = (int(priced.sum()), tenors.size, len(tiers))
    if shape[0]:
        s = spot[priced][:, None, None]
        v = vol[priced][:, None, None]
        # One vectorized call for every sale x tenor x tier.
        quote = quote_from_vols(s, s * fractions, (tenors * _DAY_S / SECONDS_PER_YEAR)[None, :, None],
                                amount, v, v, v, markup_fraction=markups, config=premium_config)
        premium = np.broadcast_to(quote.premium_usd, shape)
        fair = np.broadcast_to(quote.fair_value_usd, shape)
        strike = np.broadcast_to(quote.strike_usd, shape)
    else:
        premium = fair = strike = np.empty(shape)

    keep = usable[priced][:, :, None] & np.ones(shape, dtype=bool)
    grid = lambda a: np.broadcast_to(a, shape)[keep]  # noqa: E731 - flatten in policy order
    settle_k = grid(settle[priced][:, :, None])
    strike_k = grid(strike)
    payoff = amount * np.maximum(strike_k - settle_k, 0.0)
    policies = BacktestPolicies(
        sale_ts_s=grid(sales[priced][:, None, None]), expiry_ts_s=grid(expiry[priced][:, :, None]),
        tenor_days=grid(tenors[None, :, None]), tier=grid(np.array([t.name for t in tiers])[None, None, :]),
        spot_usd=grid(spot[priced][:, None, None]), strike_usd=strike_k, settle_usd=settle_k,
        vol_annual=grid(vol[priced][:, None, None]), amount_coin=float(amount),
        premium_usd=grid(premium), fair_value_usd=grid(fair), payoff_usd=payoff,
    )
    interval_days = config.sell_every_hours / 24.0

    def overlap_of(tenor_days: float) -> float:
        return max(1.0, tenor_days / interval_days)

    notional = amount * policies.spot_usd
    summary = summarize_policies(policies.premium_usd, payoff, policies.fair_value_usd, notional,
                                 policies.sale_ts_s, overlap=overlap_of(float(tenors.max())))
    by_group: dict[tuple[str, float], BacktestSummary] = {}
    trend: dict[tuple[str, float], PremiumTrend] = {}
    for tier in tiers:
        for tenor in config.tenors_days:
            at = (policies.tier == tier.name) & (policies.tenor_days == tenor)
            by_group[(tier.name, tenor)] = summarize_policies(
                policies.premium_usd[at], payoff[at], policies.fair_value_usd[at], notional[at],
                policies.sale_ts_s[at], overlap=overlap_of(tenor))
            trend[(tier.name, tenor)] = PremiumTrend(
                sale_ts_s=policies.sale_ts_s[at], spot_usd=policies.spot_usd[at],
                vol_annual=policies.vol_annual[at],
                premium_pct_of_notional=100.0 * policies.premium_usd[at] / notional[at],
                payoff_pct_of_notional=100.0 * payoff[at] / notional[at],
                cumulative_pnl_usd=np.cumsum(policies.premium_usd[at] - payoff[at]),
            )
    return PremiumBacktest(config=config, premium_config=premium_config, policies=policies,
                           summary=summary, by_group=by_group, trend=trend, n_skipped=n_skipped)
