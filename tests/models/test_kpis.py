"""models.kpis: plan 001's KPIs against hand-computed series and independent references (pandas
for running peaks and as-of resampling, the statistics module for the moments, a per-second
brute force for the time-weighted LTV)."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.kpis import (
    Kpis,
    compute_kpis,
    coverage_ratio,
    daily_returns,
    drawdown,
    funding_efficiency,
    ltv_stability,
    max_drawdown,
    net_apr,
    sample_every,
    sharpe_ratio,
)

T0 = 1_700_006_400.0  # 2023-11-15 00:00 UTC
DAY = 86_400.0


# --------------------------------------------------------------------------- coverage, net APR


def test_coverage_ratio_sums_the_repayments_over_the_initial_loan():
    assert coverage_ratio([100.0, 200.0, 510.0], 16_200.0) == pytest.approx(810.0 / 16_200.0)
    assert coverage_ratio(8_100.0, 16_200.0) == 0.5
    assert coverage_ratio([], 16_200.0) == 0.0
    with pytest.raises(ValueError):
        coverage_ratio([1.0], 0.0)
    with pytest.raises(ValueError):
        coverage_ratio([np.nan], 16_200.0)


def test_net_apr_by_hand():
    # +500 on 10,000 over 73 days (a fifth of a year): 5 % / 0.2 = 25 % a year, simple.
    ts = np.array([T0, T0 + 10 * DAY, T0 + 73 * DAY])
    equity = np.array([10_000.0, 9_000.0, 10_500.0])
    assert net_apr(ts, equity) == pytest.approx(0.25, rel=1e-13)
    assert net_apr(ts, equity, capital_at_risk_usd=20_000.0) == pytest.approx(0.125, rel=1e-13)
    assert net_apr(ts, equity[::-1] * 1.0, capital_at_risk_usd=20_000.0) == pytest.approx(-0.125)


def test_net_apr_is_nan_when_undefined():
    assert math.isnan(net_apr([T0], [1.0]))
    assert math.isnan(net_apr([T0, T0], [1.0, 2.0]))
    assert math.isnan(net_apr([T0, T0 + DAY], [-5.0, 2.0]))  # no capital at risk by default
    assert math.isnan(net_apr([T0, T0 + DAY], [5.0, 6.0], capital_at_risk_usd=0.0))


# --------------------------------------------------------------------------- drawdown


def test_max_drawdown_of_a_known_curve():
    # Peaks 100 120 120 120 120 130 130 -> falls 0 0 .25 1/12 .5 0 .1: the worst is 60 from 120.
    equity = [100.0, 120.0, 90.0, 110.0, 60.0, 130.0, 117.0]
    np.testing.assert_allclose(drawdown(equity), [0, 0, 0.25, 1 / 12, 0.5, 0, 0.1], atol=1e-15)
    assert max_drawdown(equity) == pytest.approx(0.5)


def test_max_drawdown_edges():
    assert max_drawdown([1.0, 2.0, 3.0]) == 0.0
    assert max_drawdown([100.0, -50.0]) == pytest.approx(1.5)  # more than everything lost
    assert math.isnan(max_drawdown([]))
    assert math.isnan(max_drawdown([-3.0, -1.0, -2.0]))  # no positive peak
    assert max_drawdown([-3.0, 10.0, 5.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        max_drawdown([1.0, np.nan])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(1.0, 1e6), min_size=1, max_size=60))
def test_max_drawdown_against_pandas_running_peak(values):
    s = pd.Series(values)
    expected = float(((s.cummax() - s) / s.cummax()).max())
    assert max_drawdown(values) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert 0.0 <= max_drawdown(values) < 1.0


# --------------------------------------------------------------------------- Sharpe


def test_sharpe_of_a_hand_made_daily_series():
    # Returns +10 %, -10 %, +10 %, +5 %.
    equity = [100.0, 110.0, 99.0, 108.9, 114.345]
    ts = T0 + DAY * np.arange(5)
    returns = [0.10, -0.10, 0.10, 0.05]
    np.testing.assert_allclose(daily_returns(ts, equity), returns, rtol=1e-12)
    expected = statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(365)
    assert sharpe_ratio(ts, equity) == pytest.approx(expected, rel=1e-10)


def test_sharpe_resamples_intraday_bars_to_days():
    rng = np.random.default_rng(3)
    daily = 1_000.0 * np.cumprod(np.r_[1.0, 1.0 + rng.normal(0.001, 0.02, 30)])
    hourly_ts = T0 + 3_600.0 * np.arange(30 * 24 + 1)
    # Hourly bars that wander inside each day but close each day on the daily curve.
    hourly = np.interp(hourly_ts, T0 + DAY * np.arange(31), daily)
    hourly *= np.where((hourly_ts - T0) % DAY == 0.0, 1.0, 1.0 + rng.normal(0.0, 0.05, hourly.size))
    on_days = sharpe_ratio(T0 + DAY * np.arange(31), daily)
    assert sharpe_ratio(hourly_ts, hourly) == pytest.approx(on_days, rel=1e-12)
    returns = np.diff(daily) / daily[:-1]
    assert on_days == pytest.approx(returns.mean() / returns.std(ddof=1) * math.sqrt(365),
                                    rel=1e-10)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(1.0, 20_000.0), st.floats(100.0, 200.0)),
                min_size=2, max_size=80))
def test_sampling_on_irregular_stamps_matches_pandas_asof(steps):
    ts = T0 + np.cumsum([gap for gap, _ in steps])
    values = np.array([v for _, v in steps])
    grid, sampled = sample_every(ts, values, period_s=6 * 3_600.0)
    series = pd.Series(values, index=ts)
    np.testing.assert_array_equal(sampled, series.asof(grid).to_numpy())
    assert grid[0] == ts[0] and grid[-1] <= ts[-1] < grid[-1] + 6 * 3_600.0


def test_sharpe_of_constant_returns_is_infinite_and_of_a_flat_curve_nan():
    ts = T0 + DAY * np.arange(20)
    assert sharpe_ratio(ts, 1_000.0 * 1.001 ** np.arange(20)) == math.inf
    assert sharpe_ratio(ts, 1_000.0 * 0.999 ** np.arange(20)) == -math.inf
    assert math.isnan(sharpe_ratio(ts, np.full(20, 1_000.0)))


def test_sharpe_needs_two_daily_returns_and_positive_equity():
    assert math.isnan(sharpe_ratio([T0, T0 + DAY], [1.0, 2.0]))  # one return
    assert math.isnan(sharpe_ratio(T0 + 3_600.0 * np.arange(40), np.linspace(1, 2, 40)))  # < 2 days
    assert math.isnan(sharpe_ratio(T0 + DAY * np.arange(4), [1.0, -1.0, 2.0, 3.0]))


# --------------------------------------------------------------------------- funding efficiency


def test_funding_efficiency_signs_and_undefined_cases():
    assert funding_efficiency([30.0, 20.0], [150.0, 50.0]) == pytest.approx(0.25)
    assert funding_efficiency(-40.0, 200.0) == pytest.approx(-0.2)  # funding received
    assert math.isnan(funding_efficiency(10.0, 0.0))
    assert math.isnan(funding_efficiency(10.0, [50.0, -80.0]))  # a net trading loss


# --------------------------------------------------------------------------- LTV stability


def test_ltv_stability_is_time_weighted_on_irregular_stamps():
    # Below 0.65 on [0, 10) and [40, 100): 70 of 100 seconds; the last value holds no time.
    ts = T0 + np.array([0.0, 10.0, 40.0, 100.0])
    assert ltv_stability(ts, [0.5, 0.7, 0.6, 0.9]) == pytest.approx(0.7)
    assert ltv_stability(ts, [0.5, 0.7, 0.6, 0.1]) == pytest.approx(0.7)
    # Exactly 0.65 is not below; NaN (unknown) is not below either.
    assert ltv_stability(ts, [0.65, 0.5, np.nan, 0.5]) == pytest.approx(0.3)
    assert ltv_stability(ts, [0.5, 0.5, 0.5, 0.5], threshold=0.4) == 0.0
    assert math.isnan(ltv_stability([T0], [0.5]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.floats(0.3, 1.0)), min_size=2, max_size=30))
def test_ltv_stability_against_a_per_second_brute_force(steps):
    gaps = [gap for gap, _ in steps]
    ts = np.cumsum(gaps).astype(float) - gaps[0]
    ltv = np.array([x for _, x in steps])
    if ts[-1] == 0.0:
        assert math.isnan(ltv_stability(ts, ltv))
        return
    seconds = np.arange(int(ts[-1]))
    # The LTV in force during each second [s, s + 1): the last stamp at or before s.
    in_force = ltv[np.searchsorted(ts, seconds, side="right") - 1]
    assert ltv_stability(ts, ltv) == pytest.approx(np.mean(in_force < 0.65), abs=1e-12)


# --------------------------------------------------------------------------- all together


def test_compute_kpis_gathers_the_six_and_is_deterministic():
    rng = np.random.default_rng(11)
    ts = np.sort(T0 + rng.uniform(0.0, 60 * DAY, 2_000))
    equity = 20_000.0 * np.exp(np.cumsum(rng.normal(0.0002, 0.003, ts.size)))
    ltv = np.clip(0.55 + np.cumsum(rng.normal(0.0, 0.004, ts.size)), 0.0, None)
    kwargs = dict(repayments_usd=rng.uniform(0.0, 50.0, 40), initial_loan_usd=16_200.0,
                  funding_paid_usd=rng.normal(2.0, 1.0, 180), gross_profit_usd=1_500.0)
    kpis = compute_kpis(ts, equity, ltv, **kwargs)
    assert kpis == compute_kpis(ts, equity, ltv, **kwargs)
    assert kpis == Kpis(coverage_ratio(kwargs["repayments_usd"], 16_200.0), net_apr(ts, equity),
                        max_drawdown(equity), sharpe_ratio(ts, equity),
                        funding_efficiency(kwargs["funding_paid_usd"], 1_500.0),
                        ltv_stability(ts, ltv))
    assert list(kpis.as_dict()) == ["coverage_ratio", "net_apr", "max_drawdown", "sharpe_ratio",
                                    "funding_efficiency", "ltv_stability"]
    assert 0.0 <= kpis.ltv_stability <= 1.0 and 0.0 <= kpis.max_drawdown < 1.0


def test_malformed_series_are_refused():
    with pytest.raises(ValueError, match="non-decreasing"):
        net_apr([T0 + 1, T0], [1.0, 2.0])
    with pytest.raises(ValueError, match="same length"):
        ltv_stability([T0, T0 + 1], [0.5])
    with pytest.raises(ValueError):
        sharpe_ratio([T0, T0 + DAY, T0 + 2 * DAY], [1.0, np.nan, 2.0])
    with pytest.raises(ValueError):
        sample_every([T0, T0 + 1], [1.0, 2.0], period_s=0.0)
    with pytest.raises(ValueError):
        compute_kpis([T0, T0 + 1], [1.0, 2.0], [0.5], repayments_usd=0.0, initial_loan_usd=1.0,
                     funding_paid_usd=0.0, gross_profit_usd=1.0)
