"""models.premium_backtest: the accounting on the real January 2022 BTC series (checked against an
independent pandas reading of the file), calibration on simulated paths whose true law the model
knows, and the edges (gaps, warm-up, bad inputs)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.jumps import MertonJumps
from models.premium import PremiumConfig, Tier
from models.premium_backtest import (
    BacktestConfig,
    backtest_premiums,
    price_at,
    sale_times,
    summarize_policies,
    trailing_realized_vol,
)
from models.scenarios import merton_paths
from tests.conftest import REPO_ROOT

MARKET_FILE = REPO_ROOT.parent / "shared" / "data" / "market" / "btc_perp_1m_2021-12-31_2022-02-01.csv"
NO_JUMPS = MertonJumps(intensity_per_year=0.0, mean_log_jump=0.0, vol_log_jump=0.0)
HOUR = 3600.0
# Near-the-money tiers for the calibration tests: a sample standard error needs paying policies,
# and an 80 % put on a one-day tenor pays a few times in a thousand.
NEAR_TIERS = (Tier("a", 0.95, 0.0), Tier("b", 0.98, 0.0), Tier("c", 1.0, 0.0))


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    if not MARKET_FILE.is_file():
        pytest.fail(f"market data not found at {MARKET_FILE}")
    frame = pd.read_csv(MARKET_FILE)
    assert list(frame.columns) == ["timestamp", "open", "high", "low", "close", "volume"]
    stamps = pd.to_datetime(frame["timestamp"], utc=True)
    frame["ts_s"] = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    frame["stamp"] = stamps
    return frame


@pytest.fixture(scope="module")
def january(market):
    return backtest_premiums(market["ts_s"].to_numpy(), market["close"].to_numpy())


# --------------------------------------------------------------------------- the real series


def test_january_2022_policies_are_the_ones_the_calendar_allows(market, january):
    config, tiers = january.config, january.premium_config.tiers
    first, last = market["stamp"].iloc[0], market["stamp"].iloc[-1]
    # The first 08:00 UTC after 72 hours of history, then daily.
    first_sale = (first + pd.Timedelta(hours=72)).ceil("D") + pd.Timedelta(hours=8)
    if first_sale - pd.Timedelta(days=1) >= first + pd.Timedelta(hours=72):
        first_sale -= pd.Timedelta(days=1)
    assert first_sale == pd.Timestamp("2022-01-04 08:00", tz="UTC")
    for tenor in config.tenors_days:
        n_sales = sum(1 for day in range(60)
                      if first_sale + pd.Timedelta(days=day + tenor) <= last)
        for tier in tiers:
            assert january.by_group[(tier.name, tenor)].n_policies == n_sales
    assert len(january.policies) == sum(s.n_policies for s in january.by_group.values())
    assert january.n_skipped == 0  # the file has no gaps


def test_january_2022_premiums_and_payoffs_agree_with_the_file(market, january):
    p = january.policies
    close_at = pd.Series(market["close"].to_numpy(), index=market["ts_s"].to_numpy())
    # Every sale and expiry falls on a whole minute of the file: its close is the price.
    np.testing.assert_array_equal(p.spot_usd, close_at.loc[p.sale_ts_s].to_numpy())
    np.testing.assert_array_equal(p.settle_usd, close_at.loc[p.expiry_ts_s].to_numpy())
    fractions = {t.name: t.strike_fraction for t in january.premium_config.tiers}
    np.testing.assert_allclose(p.strike_usd, p.spot_usd * np.array([fractions[t] for t in p.tier]),
                               rtol=1e-15)
    np.testing.assert_array_equal(p.payoff_usd, np.maximum(p.strike_usd - p.settle_usd, 0.0))
    np.testing.assert_allclose(p.expiry_ts_s - p.sale_ts_s, p.tenor_days * 86_400.0)
    # The realized vol at a sale: 72 hourly returns ending at the sale, computed here with pandas.
    hourly = close_at.copy()
    hourly.index = pd.to_datetime(hourly.index, unit="s", utc=True)
    for sale in np.unique(p.sale_ts_s)[[0, 10, -1]]:
        stamp = pd.Timestamp(sale, unit="s", tz="UTC")
        window = hourly.loc[stamp - pd.Timedelta(hours=72):stamp].iloc[::60]
        returns = np.diff(np.log(window.to_numpy()))
        assert returns.size == 72
        expected = math.sqrt(np.mean(returns**2) * 365 * 24)
        assert p.vol_annual[p.sale_ts_s == sale][0] == pytest.approx(expected, rel=1e-12)
    assert np.all(p.premium_usd > 0.0) and np.all(p.premium_usd >= p.fair_value_usd)


def test_january_2022_summary_is_its_own_accounting(january):
    p, s = january.policies, january.summary
    assert s.n_policies == len(p)
    assert s.total_premium_usd == pytest.approx(p.premium_usd.sum(), rel=1e-14)
    assert s.total_payoff_usd == pytest.approx(p.payoff_usd.sum(), rel=1e-14)
    assert s.premium_pnl_usd == pytest.approx(s.total_premium_usd - s.total_payoff_usd, rel=1e-12)
    assert s.loss_ratio == pytest.approx(s.total_payoff_usd / s.total_premium_usd, rel=1e-14)
    assert s.hit_rate == pytest.approx(np.mean(p.payoff_usd > 0.0))
    assert s.calibration_usd == pytest.approx(np.mean(p.premium_usd - p.payoff_usd), rel=1e-12)
    assert s.calibration_stderr_usd > 0.0 and s.fair_calibration_stderr_usd > 0.0
    groups = list(january.by_group.values())
    assert sum(g.total_premium_usd for g in groups) == pytest.approx(s.total_premium_usd, rel=1e-12)
    assert sum(g.total_payoff_usd for g in groups) == pytest.approx(s.total_payoff_usd, rel=1e-12)
    # January 2022 fell from ~47k to ~33k: the near-the-money puts paid.
    assert s.total_payoff_usd > 0.0 and s.hit_rate > 0.0
    for key, trend in january.trend.items():
        group = january.by_group[key]
        assert trend.sale_ts_s.size == group.n_policies
        assert np.all(np.diff(trend.sale_ts_s) > 0.0)
        if group.n_policies:
            assert trend.cumulative_pnl_usd[-1] == pytest.approx(group.premium_pnl_usd, rel=1e-12, abs=1e-9)


def test_the_backtest_is_deterministic(market, january):
    again = backtest_premiums(market["ts_s"].to_numpy(), market["close"].to_numpy())
    for name in ("premium_usd", "payoff_usd", "fair_value_usd", "vol_annual", "sale_ts_s", "tier"):
        np.testing.assert_array_equal(getattr(again.policies, name), getattr(january.policies, name))
    assert again.summary == january.summary


def test_premium_follows_the_vol_it_was_priced_at(january):
    """PF-304's trend: after the 21-22 January crash the realized vol, and so the premium in
    percent of notional, rose for every tier."""
    for key, trend in january.trend.items():
        ts = trend.sale_ts_s
        before = ts < pd.Timestamp("2022-01-20", tz="UTC").timestamp()
        after = ts >= pd.Timestamp("2022-01-22", tz="UTC").timestamp()
        if before.any() and after.any():
            assert trend.vol_annual[after].mean() > trend.vol_annual[before].mean()
            assert trend.premium_pct_of_notional[after].mean() > trend.premium_pct_of_notional[before].mean()
        # A higher vol never gives a lower premium for one tier and tenor.
        order = np.argsort(trend.vol_annual)
        assert np.all(np.diff(trend.premium_pct_of_notional[order]) >= -1e-2)


# --------------------------------------------------------------------------- calibration


def _series(vol_diffusion: float, jumps: MertonJumps, days: int, seed: int):
    """An hourly path of the model's own law (drift 0 = the pricing measure at rate 0)."""
    steps = days * 24
    path = merton_paths(40_000.0, vol_diffusion, jumps, days / 365.0, steps, 1, rng=seed)[0]
    ts = 1_640_995_200.0 + HOUR * np.arange(steps + 1)  # 2022-01-01 00:00 UTC
    return ts, path


@pytest.mark.parametrize("jumps", [NO_JUMPS, MertonJumps(8.0, -0.06, 0.05)])
def test_a_model_that_knows_the_true_law_is_calibrated(jumps):
    true_vol = math.sqrt(0.7**2 + jumps.intensity_per_year * (jumps.mean_log_jump**2 + jumps.vol_log_jump**2))
    ts, close = _series(0.7, jumps, days=1_500, seed=11)
    premium_config = PremiumConfig(jumps=jumps, tiers=NEAR_TIERS).without_margins()
    config = BacktestConfig(tenors_days=(1.0, 3.0))
    result = backtest_premiums(ts, close, config=config, premium_config=premium_config,
                               vol_annual=true_vol)
    p = result.policies
    for tier in NEAR_TIERS:
        assert np.sum((p.tier == tier.name) & (p.payoff_usd > 0.0)) >= 100
    # No margins, no rounding: premium is the fair value (the matched diffusion vol is 0.7).
    np.testing.assert_array_equal(result.policies.premium_usd, result.policies.fair_value_usd)
    for key, s in result.by_group.items():
        assert s.n_policies > 1_000
        assert s.expected_loss_ratio == 1.0
        assert abs(s.fair_calibration_pct_of_notional) < 3.0 * s.fair_calibration_pct_stderr, (key, s)
    s = result.summary
    assert abs(s.fair_calibration_pct_of_notional) < 3.0 * s.fair_calibration_pct_stderr
    assert abs(s.loss_ratio - 1.0) < 3.0 * s.loss_ratio_stderr


def test_a_model_with_the_wrong_vol_is_caught():
    ts, close = _series(0.7, NO_JUMPS, days=1_500, seed=12)
    premium_config = PremiumConfig(jumps=NO_JUMPS, tiers=NEAR_TIERS).without_margins()
    config = BacktestConfig(tenors_days=(1.0, 3.0))
    result = backtest_premiums(ts, close, config=config, premium_config=premium_config,
                               vol_annual=1.0)
    for key, s in result.by_group.items():
        assert s.calibration_pct_of_notional > 3.0 * s.calibration_pct_stderr, key
        assert s.calibration_usd > 3.0 * s.calibration_stderr_usd, key
        assert s.loss_ratio < 1.0 - 3.0 * s.loss_ratio_stderr, key


def test_realized_vol_of_a_simulated_series_is_its_vol():
    ts, close = _series(0.7, NO_JUMPS, days=400, seed=13)
    sales = ts[0] + HOUR * 24 * np.arange(30, 400, 10)
    vol = trailing_realized_vol(ts, close, sales, window_s=30 * 24 * HOUR, bar_s=HOUR, max_price_age_s=1.0)
    # 720 hourly returns per estimate: a standard error of about 0.7 / sqrt(1440) ~ 0.018 each.
    assert np.all(np.abs(vol - 0.7) < 5 * 0.7 / math.sqrt(1440))
    assert abs(vol.mean() - 0.7) < 0.02


# --------------------------------------------------------------------------- edges


def test_gaps_skip_the_policies_whose_prices_are_stale():
    ts = 1_640_995_200.0 + 60.0 * np.arange(20 * 24 * 60)  # 20 days of minutes
    close = 40_000.0 * np.exp(0.0005 * np.sin(np.arange(ts.size) / 50.0))
    gap = (ts > ts[0] + 10.4 * 86_400) & (ts < ts[0] + 10.6 * 86_400)  # no data 09:36-14:24 UTC
    ts, close = ts[~gap], close[~gap]
    config = BacktestConfig(tenors_days=(1.0,), first_sale_hour_utc=12.0, vol_window_hours=24.0)
    result = backtest_premiums(ts, close, config=config)
    # 12:00 on day 10 is inside the gap (no sale price), the day-9 sale settles in it and the
    # day-11 sale's 24 h vol window spans it.
    assert result.n_skipped == 3
    skipped = ts[0] + np.array([9.5, 10.5, 11.5]) * 86_400
    assert not np.any(np.isin(result.policies.sale_ts_s, skipped))
    assert np.isin(ts[0] + np.array([8.5, 12.5]) * 86_400, result.policies.sale_ts_s).all()
    price, ok = price_at(ts, close, np.array([ts[0] - 1.0, ts[0] + 10.5 * 86_400, ts[5]]), 300.0)
    assert ok.tolist() == [False, False, True] and math.isnan(price[0]) and price[2] == close[5]


def test_sale_times_start_after_the_warm_up_at_the_sale_hour():
    start = pd.Timestamp("2022-01-01 23:01", tz="UTC").timestamp()
    end = pd.Timestamp("2022-01-10 00:00", tz="UTC").timestamp()
    sales = sale_times(start, end, BacktestConfig(vol_window_hours=72.0))
    assert pd.Timestamp(sales[0], unit="s", tz="UTC") == pd.Timestamp("2022-01-05 08:00", tz="UTC")
    assert np.all(np.diff(sales) == 86_400.0) and sales[-1] <= end
    free = sale_times(start, end, BacktestConfig(vol_window_hours=24.0, first_sale_hour_utc=None,
                                                 sell_every_hours=6.0))
    assert free[0] == start + 24 * HOUR and np.all(np.diff(free) == 6 * HOUR)
    assert sale_times(start, start + HOUR, BacktestConfig()).size == 0


def test_summary_by_hand():
    # Two sales of two policies each; premiums 10, payoffs as below.
    premium = np.array([10.0, 10.0, 10.0, 10.0])
    payoff = np.array([0.0, 30.0, 0.0, 0.0])
    fair = np.array([8.0, 8.0, 8.0, 8.0])
    sale = np.array([1.0, 1.0, 2.0, 2.0])
    notional = np.array([100.0, 100.0, 200.0, 200.0])
    s = summarize_policies(premium, payoff, fair, notional, sale, overlap=2.0)
    assert (s.n_policies, s.n_sales) == (4, 2)
    assert s.loss_ratio == 30.0 / 40.0 and s.hit_rate == 0.25
    assert s.expected_loss_ratio == 32.0 / 40.0 and s.calibration_usd == 2.5
    # Cluster sums of premium - payoff: -10 and 20; sample variance 450; SE = sqrt(2*450*2)/4.
    assert s.calibration_stderr_usd == pytest.approx(math.sqrt(2 * 450.0 * 2.0) / 4.0)
    # Per notional (percent): 10 %, -20 %, 5 %, 5 %; cluster sums -10 and 10, variance 200.
    assert s.calibration_pct_of_notional == pytest.approx(0.0, abs=1e-12)
    assert s.calibration_pct_stderr == pytest.approx(math.sqrt(2 * 200.0 * 2.0) / 4.0)
    assert s.fair_calibration_pct_of_notional == pytest.approx((8.0 - 22.0 + 4.0 + 4.0) / 4)
    empty = summarize_policies([], [], [], [], [])
    assert empty.n_policies == 0 and math.isnan(empty.loss_ratio)


@pytest.mark.parametrize("kwargs, message", [
    (dict(tenors_days=()), "tenors_days"),
    (dict(tenors_days=(1.0, 1.0)), "distinct"),
    (dict(sell_every_hours=0.0), "sell_every_hours"),
    (dict(vol_window_hours=1.0, vol_bar_minutes=60.0), "two bars"),
    (dict(first_sale_hour_utc=24.0), "first_sale_hour_utc"),
    (dict(amount_coin=-1.0), "amount_coin"),
])
def test_bad_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BacktestConfig(**kwargs)


def test_bad_series_are_refused():
    ts = np.arange(10.0) * 60.0
    with pytest.raises(ValueError, match="strictly increasing"):
        backtest_premiums(ts[::-1], np.full(10, 1.0))
    with pytest.raises(ValueError, match="prices > 0"):
        backtest_premiums(ts, np.r_[np.full(9, 1.0), -1.0])
    with pytest.raises(ValueError, match="one length"):
        backtest_premiums(ts, np.full(9, 1.0))
    with pytest.raises(ValueError, match="vol_annual"):
        backtest_premiums(ts, np.full(10, 1.0), vol_annual=0.0)
