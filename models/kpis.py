"""The KPIs of plan 001 (HedgeLock, "Success Metrics") over an equity curve and event series, for
the backtests of issue 7.

Pure and vectorized: series come in as numpy arrays, ``ts_s`` epoch seconds, non-decreasing (the
observations of an irregular series; equal stamps are allowed and the last one wins where a value
"at" a time is read). Amounts in USD. Every KPI is a fraction (not percent) and NaN where it is
undefined; none of them raises on a degenerate series (too short, flat), they raise only on
malformed input (mismatched lengths, unsorted or non-finite stamps, non-finite equity).

- ``coverage_ratio = sum(repayments_usd) / initial_loan_usd``: everything paid to the lender
  (interest and principal, from any source: pass only the profit-funded repayments to measure what
  trading covered) over the principal drawn.
- ``net_apr = (equity_end - equity_start) / capital_at_risk_usd * YEAR / (ts_end - ts_start)``:
  simple (not compounded) annualization over a 365-day year. ``capital_at_risk_usd`` defaults to
  ``equity_start``. The equity of issue 7's backtest is cash + positions + reserve - loan
  (principal and accrued interest), so its change is already after the loan's interest.
- ``max_drawdown = max_t (peak_t - equity_t) / peak_t``, ``peak_t`` the running maximum up to t:
  the worst fall from a previous high, as a fraction of that high (0 for a curve that never falls;
  above 1 when equity goes below zero). Points whose running peak is <= 0 have no drawdown
  fraction and are skipped (NaN when no point has one).
- ``sharpe_ratio = mean(r) / std(r) * sqrt(365)``, ``r`` the DAILY simple returns of the equity
  curve, whatever its bar size: the equity is sampled every 24 h from the first stamp (the last
  observation at or before ``ts_start + k * 86400``; a trailing partial day is dropped) and ``std``
  is the sample standard deviation (ddof = 1). At least two daily returns are needed (NaN
  otherwise). When the returns are constant (std no more than ``1e-9 * |mean|``, rounding of a
  geometric curve) the ratio is ``+inf`` / ``-inf`` by the sign of the mean, NaN when the mean is 0
  too (a flat curve). Equity <= 0 at a sampled day gives NaN (returns are not defined).
- ``funding_efficiency = sum(funding_paid_usd) / sum(gross_profit_usd)``. Signs: funding PAID is
  positive (a cost), funding received negative; gross profit is the trading P&L before funding and
  fees, positive for a profit. Lower is better; below 0 means funding was a net income. NaN when
  the gross profit is <= 0 (the share of a non-profit is not defined).
- ``ltv_stability = time with LTV < 0.65 / total time``, time-weighted on irregular stamps: each
  LTV holds from its stamp to the next one (a step function; the last value holds for no time),
  total time ``ts_end - ts_start``. A NaN LTV (unknown) counts as not below the threshold. NaN
  when the total time is 0.

``compute_kpis`` returns all six as a ``Kpis`` (``as_dict`` for the backtest's JSON).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["SECONDS_PER_DAY", "SECONDS_PER_YEAR", "SHARPE_FLAT_TOLERANCE", "Kpis",
           "coverage_ratio", "net_apr", "drawdown", "max_drawdown", "sample_every",
           "daily_returns", "sharpe_ratio", "funding_efficiency", "ltv_stability",
           "compute_kpis"]

SECONDS_PER_DAY = 86_400.0
SECONDS_PER_YEAR = 365.0 * SECONDS_PER_DAY
# Returns whose spread is this small against their mean are constant up to rounding.
SHARPE_FLAT_TOLERANCE = 1e-9


def _values(name: str, values) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64)
    if out.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {out.shape}")
    return out


def _series(ts_s, values, name: str, *, finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
    ts = _values("ts_s", ts_s)
    x = _values(name, values)
    if finite and not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite")
    if ts.shape != x.shape:
        raise ValueError(f"ts_s and {name} must have the same length, got {ts.size} and {x.size}")
    if not np.all(np.isfinite(ts)):
        raise ValueError("ts_s must be finite")
    if ts.size > 1 and np.any(np.diff(ts) < 0.0):
        raise ValueError("ts_s must be non-decreasing")
    return ts, x


def _total(name: str, amounts) -> float:
    x = np.asarray(amounts, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite")
    return float(np.sum(x))


def coverage_ratio(repayments_usd, initial_loan_usd: float) -> float:
    """Cumulative repayment / initial loan: the sum of the repayment amounts ``repayments_usd``
    (each a payment, not a running total; a scalar total works too) over ``initial_loan_usd``."""
    initial = float(initial_loan_usd)
    if not (math.isfinite(initial) and initial > 0.0):
        raise ValueError(f"initial_loan_usd must be finite and > 0, got {initial_loan_usd!r}")
    return _total("repayments_usd", repayments_usd) / initial


def net_apr(ts_s, equity_usd, capital_at_risk_usd: float | None = None) -> float:
    """(equity_end - equity_start) / capital at risk, annualized simply over a 365-day year by the
    span ``ts_end - ts_start`` (module docstring). ``capital_at_risk_usd`` None uses
    ``equity_start``; NaN when the span is 0 or the capital at risk is not > 0."""
    ts, equity = _series(ts_s, equity_usd, "equity_usd")
    if ts.size < 2 or not ts[-1] > ts[0]:
        return math.nan
    capital = equity[0] if capital_at_risk_usd is None else float(capital_at_risk_usd)
    if not (math.isfinite(capital) and capital > 0.0):
        return math.nan
    return float((equity[-1] - equity[0]) / capital * SECONDS_PER_YEAR / (ts[-1] - ts[0]))


def drawdown(equity_usd) -> np.ndarray:
    """The drawdown at each point, ``(running peak - equity) / running peak``; NaN where the
    running peak is <= 0. The equity must be finite."""
    equity = _values("equity_usd", equity_usd)
    if not np.all(np.isfinite(equity)):
        raise ValueError("equity_usd must be finite")
    if equity.size == 0:
        return equity.copy()
    peak = np.maximum.accumulate(equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak > 0.0, (peak - equity) / np.where(peak > 0.0, peak, 1.0), np.nan)


def max_drawdown(equity_usd) -> float:
    """The largest drawdown of the curve as a fraction (module docstring); NaN when none is
    defined (empty curve, or no positive peak)."""
    dd = drawdown(equity_usd)
    if dd.size == 0 or np.all(np.isnan(dd)):
        return math.nan
    return float(np.nanmax(dd))


def sample_every(ts_s, values, period_s: float = SECONDS_PER_DAY) -> tuple[np.ndarray, np.ndarray]:
    """The series sampled on the grid ``ts_start + k * period_s`` up to ``ts_end``: at each grid
    time the last observation at or before it. Returns ``(grid_ts_s, values_on_grid)``."""
    ts, x = _series(ts_s, values, "values")
    if not (math.isfinite(period_s) and period_s > 0.0):
        raise ValueError(f"period_s must be finite and > 0, got {period_s!r}")
    if ts.size == 0:
        return ts.copy(), x.copy()
    n_periods = int(np.floor((ts[-1] - ts[0]) / period_s))
    grid = ts[0] + period_s * np.arange(n_periods + 1, dtype=np.float64)
    at = np.searchsorted(ts, grid, side="right") - 1
    return grid, x[at]


def daily_returns(ts_s, equity_usd, period_s: float = SECONDS_PER_DAY) -> np.ndarray:
    """Simple returns of the equity sampled every ``period_s`` (one day) from the first stamp
    (``sample_every``); NaN where the earlier sample is <= 0."""
    _, sampled = sample_every(ts_s, equity_usd, period_s)
    before, after = sampled[:-1], sampled[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(before > 0.0, after / np.where(before > 0.0, before, 1.0) - 1.0, np.nan)


def sharpe_ratio(ts_s, equity_usd, period_s: float = SECONDS_PER_DAY) -> float:
    """``mean(r) / std(r, ddof=1) * sqrt(YEAR / period_s)`` of the per-period returns
    (``daily_returns``; sqrt(365) for days), with the inf/NaN conventions of the module
    docstring."""
    returns = daily_returns(ts_s, equity_usd, period_s)
    if returns.size < 2 or np.any(np.isnan(returns)):
        return math.nan
    mean = float(np.mean(returns))
    std = float(np.std(returns, ddof=1))
    if std <= SHARPE_FLAT_TOLERANCE * abs(mean):
        return math.nan if mean == 0.0 else math.copysign(math.inf, mean)
    return mean / std * math.sqrt(SECONDS_PER_YEAR / period_s)


def funding_efficiency(funding_paid_usd, gross_profit_usd) -> float:
    """Funding paid / gross profit, each summed over its events (scalars work too); signs and
    the NaN for a gross profit <= 0 as in the module docstring."""
    funding = _total("funding_paid_usd", funding_paid_usd)
    gross = _total("gross_profit_usd", gross_profit_usd)
    return funding / gross if gross > 0.0 else math.nan


def ltv_stability(ts_s, ltv, threshold: float = 0.65) -> float:
    """The share of time with LTV below ``threshold``, each LTV holding until the next stamp
    (module docstring); NaN when the series spans no time."""
    ts, x = _series(ts_s, ltv, "ltv", finite=False)
    if ts.size < 2 or not ts[-1] > ts[0]:
        return math.nan
    held_s = np.diff(ts)
    below = x[:-1] < threshold  # NaN compares False: unknown is not below
    return float(np.sum(held_s[below]) / (ts[-1] - ts[0]))


@dataclass(frozen=True, slots=True)
class Kpis:
    """Plan 001's six KPIs (module docstring), fractions, NaN where undefined."""

    coverage_ratio: float
    net_apr: float
    max_drawdown: float
    sharpe_ratio: float
    funding_efficiency: float
    ltv_stability: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def compute_kpis(ts_s, equity_usd, ltv, *, repayments_usd, initial_loan_usd: float,
                 funding_paid_usd, gross_profit_usd, capital_at_risk_usd: float | None = None,
                 ltv_threshold: float = 0.65) -> Kpis:
    """All six KPIs of a backtest: the equity curve and the LTV on the same stamps ``ts_s``,
    and the event series (or totals) of repayments, funding paid and gross profit."""
    ts, equity = _series(ts_s, equity_usd, "equity_usd")
    _series(ts, ltv, "ltv", finite=False)
    return Kpis(coverage_ratio=coverage_ratio(repayments_usd, initial_loan_usd),
                net_apr=net_apr(ts, equity, capital_at_risk_usd),
                max_drawdown=max_drawdown(equity),
                sharpe_ratio=sharpe_ratio(ts, equity),
                funding_efficiency=funding_efficiency(funding_paid_usd, gross_profit_usd),
                ltv_stability=ltv_stability(ts, ltv, ltv_threshold))
