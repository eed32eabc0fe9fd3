"""The market model against its closed forms.

Tolerances are in standard errors of the estimator (5 SE): with fixed seeds the tests are
deterministic, and 5 SE leaves room for a different numpy bit-stream without hiding a wrong formula
(a missing compensator or a missing -sigma^2/2 is tens of SE off at these sample sizes).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.market_sim import (
    SECONDS_PER_YEAR,
    GbmJumpParams,
    GbmJumpPath,
    bid_ask,
    log_increments,
    simulate_path,
    simulate_paths,
)

DAY_S = 24 * 3600.0
N_PATHS = 20_000


def test_diffusion_log_returns_match_closed_form():
    params = GbmJumpParams(spot_usd=97_000.0, vol_annual=0.55, drift_annual=0.10,
                           jump_intensity_per_year=0.0)
    n_steps = 50
    paths = simulate_paths(params, DAY_S, n_steps, N_PATHS, np.random.default_rng(1))
    assert paths.shape == (N_PATHS, n_steps)
    t = n_steps * DAY_S / SECONDS_PER_YEAR
    log_ret = np.log(paths[:, -1] / params.spot_usd)

    mean_expected = (params.drift_annual - 0.5 * params.vol_annual**2) * t
    var_expected = params.vol_annual**2 * t
    se_mean = math.sqrt(var_expected / N_PATHS)
    se_var = var_expected * math.sqrt(2.0 / (N_PATHS - 1))
    assert abs(log_ret.mean() - mean_expected) < 5 * se_mean
    assert abs(log_ret.var(ddof=1) - var_expected) < 5 * se_var


def test_jumps_keep_expected_price_on_drift():
    # Large, mostly negative jumps: without the compensator E[S_T] would be ~20 % low.
    params = GbmJumpParams(spot_usd=3_100.0, vol_annual=0.70, drift_annual=0.05,
                           jump_intensity_per_year=40.0, jump_mean=-0.05, jump_std=0.05)
    n_steps = 90
    t = n_steps * DAY_S / SECONDS_PER_YEAR
    s_t = simulate_paths(params, DAY_S, n_steps, N_PATHS, np.random.default_rng(2))[:, -1]
    ratio = s_t / params.spot_usd
    expected = math.exp(params.drift_annual * t)
    se = ratio.std(ddof=1) / math.sqrt(N_PATHS)
    assert abs(ratio.mean() - expected) < 5 * se
    # The uncompensated model would be far outside the tolerance.
    assert abs(expected * math.exp(-params.jump_intensity_per_year * params.jump_compensator * t)
               - expected) > 20 * se


def test_jump_log_return_moments_match_closed_form():
    params = GbmJumpParams(spot_usd=100.0, vol_annual=0.3, drift_annual=0.0,
                           jump_intensity_per_year=50.0, jump_mean=-0.02, jump_std=0.04)
    dt_s = 7 * DAY_S
    x = log_increments(params, dt_s, 200_000, np.random.default_rng(3))
    dt = dt_s / SECONDS_PER_YEAR
    lam_dt = params.jump_intensity_per_year * dt
    mean_expected = ((params.drift_annual - 0.5 * params.vol_annual**2
                      - params.jump_intensity_per_year * params.jump_compensator) * dt
                     + lam_dt * params.jump_mean)
    var_expected = params.vol_annual**2 * dt + lam_dt * (params.jump_mean**2 + params.jump_std**2)
    se_mean = math.sqrt(var_expected / x.size)
    assert abs(x.mean() - mean_expected) < 5 * se_mean
    # Jumps make the increments fat-tailed; allow a generous relative tolerance on the variance.
    assert x.var() == pytest.approx(var_expected, rel=0.03)


def test_same_seed_same_path_and_different_seed_differs():
    params = GbmJumpParams(spot_usd=97_000.0, vol_annual=0.55)
    a = simulate_path(params, 0.05, 1_000, np.random.default_rng(42))
    b = simulate_path(params, 0.05, 1_000, np.random.default_rng(42))
    c = simulate_path(params, 0.05, 1_000, np.random.default_rng(43))
    assert a.dtype == np.float64 and a.shape == (1_000,)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)

    p1 = GbmJumpPath(params, np.random.default_rng(42))
    p2 = GbmJumpPath(params, np.random.default_rng(42))
    assert [p1.step(0.05) for _ in range(100)] == [p2.step(0.05) for _ in range(100)]


def test_stepper_has_the_same_distribution():
    # One long streamed path of hourly steps: its increments have the closed-form moments.
    params = GbmJumpParams(spot_usd=97_000.0, vol_annual=0.55, drift_annual=0.2,
                           jump_intensity_per_year=0.0)
    path = GbmJumpPath(params, np.random.default_rng(5))
    assert path.price == pytest.approx(params.spot_usd)
    n, dt_s = 20_000, 3600.0
    prices = np.array([params.spot_usd] + [path.step(dt_s) for _ in range(n)])
    assert path.price == prices[-1]
    x = np.diff(np.log(prices))
    dt = dt_s / SECONDS_PER_YEAR
    var_expected = params.vol_annual**2 * dt
    mean_expected = (params.drift_annual - 0.5 * params.vol_annual**2) * dt
    assert abs(x.mean() - mean_expected) < 5 * math.sqrt(var_expected / n)
    assert abs(x.var(ddof=1) - var_expected) < 5 * var_expected * math.sqrt(2.0 / (n - 1))


def test_zero_vol_no_jumps_is_deterministic_growth():
    params = GbmJumpParams(spot_usd=50.0, vol_annual=0.0, drift_annual=0.1,
                           jump_intensity_per_year=0.0)
    path = simulate_path(params, SECONDS_PER_YEAR / 10, 10, np.random.default_rng(0))
    np.testing.assert_allclose(path, 50.0 * np.exp(0.1 * np.arange(1, 11) / 10), rtol=1e-12)


def test_bid_ask_and_validation():
    bid, ask = bid_ask(10_000.0, 1.0)
    assert bid == pytest.approx(9_999.0) and ask == pytest.approx(10_001.0)
    with pytest.raises(ValueError):
        GbmJumpParams(spot_usd=0.0, vol_annual=0.5)
    with pytest.raises(ValueError):
        GbmJumpParams(spot_usd=1.0, vol_annual=-0.1)
    with pytest.raises(ValueError):
        GbmJumpParams(spot_usd=1.0, vol_annual=0.1, jump_intensity_per_year=float("nan"))
    with pytest.raises(ValueError):
        simulate_path(GbmJumpParams(spot_usd=1.0, vol_annual=0.1), -1.0, 3,
                      np.random.default_rng(0))


@settings(max_examples=60, deadline=None)
@given(
    spot=st.floats(1e-4, 1e7),
    vol=st.floats(0.0, 3.0),
    drift=st.floats(-1.0, 1.0),
    intensity=st.floats(0.0, 2_000.0),
    jump_mean=st.floats(-0.5, 0.5),
    jump_std=st.floats(0.0, 0.5),
    dt_s=st.floats(0.0, DAY_S),
    n_steps=st.integers(0, 300),
    seed=st.integers(0, 2**32 - 1),
)
def test_prices_always_positive_and_finite(spot, vol, drift, intensity, jump_mean, jump_std,
                                           dt_s, n_steps, seed):
    params = GbmJumpParams(spot_usd=spot, vol_annual=vol, drift_annual=drift,
                           jump_intensity_per_year=intensity, jump_mean=jump_mean,
                           jump_std=jump_std)
    path = simulate_path(params, dt_s, n_steps, np.random.default_rng(seed))
    assert path.shape == (n_steps,)
    assert np.all(np.isfinite(path)) and np.all(path > 0.0)
    stepper = GbmJumpPath(params, np.random.default_rng(seed))
    for _ in range(min(n_steps, 20)):
        price = stepper.step(dt_s)
        assert math.isfinite(price) and price > 0.0
