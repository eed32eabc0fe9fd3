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
    FUNDING_INTERVAL_S,
    SECONDS_PER_YEAR,
    GbmJumpParams,
    GbmJumpPath,
    OUParams,
    OUProcess,
    PerpetualModel,
    PerpParams,
    bid_ask,
    log_increments,
    next_funding_ts,
    ou_step,
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


# ---------------------------------------------------------------------------- mean reversion


def test_ou_step_matches_its_closed_form_moments():
    mean, half_life, stdev, x0 = 1e-4, 3600.0, 1.5e-4, 8e-4
    dt = 1800.0
    z = np.random.default_rng(3).standard_normal(N_PATHS)
    x = ou_step(x0, mean, half_life, stdev, dt, z)
    a = 2.0 ** (-dt / half_life)
    expected_mean = mean + (x0 - mean) * a
    expected_sd = stdev * math.sqrt(1 - a * a)
    assert abs(x.mean() - expected_mean) < 5 * expected_sd / math.sqrt(N_PATHS)
    assert x.std(ddof=1) == pytest.approx(expected_sd, rel=5 * math.sqrt(2.0 / N_PATHS))
    # Half-life: the expected distance to the mean halves.
    assert ou_step(x0, mean, half_life, stdev, half_life, 0.0) == pytest.approx(
        mean + 0.5 * (x0 - mean))
    with pytest.raises(ValueError):
        ou_step(x0, mean, 0.0, stdev, dt, 0.0)


def test_ou_process_is_stationary_and_reproducible():
    params = OUParams(mean=0.0, stdev=2e-4, half_life_s=30.0)
    a = OUProcess(params, np.random.default_rng(5))
    b = OUProcess(params, np.random.default_rng(5))
    xs = np.array([a.step(1.0) for _ in range(20_000)])
    assert xs.tolist()[:50] == [b.step(1.0) for _ in range(50)]
    # ~20000 / 43 (decorrelation steps) effective samples: loose bounds.
    assert abs(xs.mean()) < 0.3 * params.stdev
    assert xs.std() == pytest.approx(params.stdev, rel=0.15)
    with pytest.raises(ValueError):
        OUParams(mean=0.0, stdev=-1.0, half_life_s=1.0)


def test_funding_rate_mean_reverts_around_one_bp_and_can_go_negative():
    model = PerpetualModel(PerpParams(), np.random.default_rng(11))
    rates, premiums = [], []
    for _ in range(20_000):
        model.step(600.0)  # ten minutes
        rates.append(model.funding_rate)
        premiums.append(model.premium)
    rates = np.array(rates)
    assert 0.3e-4 < rates.mean() < 1.7e-4
    assert (rates < 0).mean() > 0.1 and (rates > 0).mean() > 0.5
    assert rates.std() == pytest.approx(1.5e-4, rel=0.25)
    assert np.abs(rates).max() < 1e-3
    index = 97_000.0
    mark = model.mark(index)
    assert mark == pytest.approx(index * (1 + model.premium))
    assert abs(mark / index - 1) < 2e-3  # a mark near spot


def test_next_funding_time_is_the_next_eight_hour_boundary():
    t = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    nxt = next_funding_ts(t)
    assert nxt == 1_700_006_400.0  # 2023-11-15 00:00 UTC
    assert nxt % FUNDING_INTERVAL_S == 0 and 0 < nxt - t <= FUNDING_INTERVAL_S
    assert next_funding_ts(nxt) == nxt + FUNDING_INTERVAL_S
