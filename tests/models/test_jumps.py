"""models.jumps: the Merton return density against quadrature, a brute-force mpmath sum and the
closed-form moments of merton_terminal_moments; the maximum-likelihood fit on simulated Merton and
jump-free returns (known truth, standard errors against their complete-data values), its
invariances, and on a month of real BTC perpetual bars."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

import models.jumps as jumps_module
from models.jumps import (
    MertonFit,
    MertonFitBounds,
    MertonJumps,
    default_fit_bounds,
    fit_merton_jumps,
    merton_log_density,
)
from models.scenarios import SECONDS_PER_YEAR, log_returns, merton_paths, merton_terminal_moments
from models.volatility import ohlc_bars
from tests.conftest import REPO_ROOT

MARKET_FILE = (REPO_ROOT.parent / "shared" / "data" / "market"
               / "btc_perp_1m_2021-12-31_2022-02-01.csv")
HOUR_YEARS = 3600.0 / SECONDS_PER_YEAR
DAY_YEARS = 1.0 / 365.0


def _simulated_returns(vol_annual: float, jumps: MertonJumps, dt_years: float, n: int, seed: int,
                       drift_annual: float = 0.0) -> np.ndarray:
    path = merton_paths(1.0, vol_annual, jumps, n * dt_years, n, 1, seed,
                        drift_annual=drift_annual)
    return log_returns(path[0])


def _fitted_loglik(fit: MertonFit, r: np.ndarray, **changes) -> float:
    """Log-likelihood of ``r`` at the fit's parameters with some of them changed."""
    params = dict(vol=fit.vol_diffusion_annual, drift=fit.drift_annual,
                  intensity=fit.jumps.intensity_per_year, mu=fit.jumps.mean_log_jump,
                  delta=fit.jumps.vol_log_jump)
    params.update(changes)
    jumps = MertonJumps(params["intensity"], params["mu"], params["delta"])
    return float(np.sum(merton_log_density(r, fit.dt_years, params["vol"], jumps,
                                           drift_annual=params["drift"],
                                           max_jumps_per_step=fit.max_jumps_per_step)))


def _assert_within_bounds(fit: MertonFit) -> None:
    values = (fit.vol_diffusion_annual, fit.mean_log_return_annual, fit.jumps.intensity_per_year,
              fit.jumps.mean_log_jump, fit.jumps.vol_log_jump)
    for value, (lo, hi) in zip(values, fit.bounds.as_pairs()):
        assert math.isfinite(value) and lo <= value <= hi


# --------------------------------------------------------------------------- MertonJumps


def test_merton_jumps_kappa_is_the_mean_relative_jump():
    j = MertonJumps(5.0, -0.1, 0.2)
    def integrand(x: float) -> float:
        density = math.exp(-0.5 * ((x + 0.1) / 0.2) ** 2) / (0.2 * math.sqrt(2.0 * math.pi))
        return math.expm1(x) * density

    expected, _ = integrate.quad(integrand, -3.0, 3.0)
    assert j.kappa == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("kwargs", [dict(intensity_per_year=-1.0),
                                    dict(intensity_per_year=math.inf),
                                    dict(mean_log_jump=math.nan), dict(vol_log_jump=-0.01)])
def test_merton_jumps_rejects_bad_fields(kwargs):
    with pytest.raises(ValueError):
        MertonJumps(**kwargs)


# --------------------------------------------------------------------------- the density


@settings(max_examples=12, deadline=None)
@given(vol=st.floats(0.1, 1.5), intensity=st.floats(0.0, 3000.0), mu=st.floats(-0.2, 0.2),
       delta=st.floats(0.0, 0.15), drift=st.floats(-2.0, 2.0), max_jumps=st.integers(1, 12),
       dt=st.sampled_from([HOUR_YEARS, DAY_YEARS]))
def test_density_integrates_to_one(vol, intensity, mu, delta, drift, max_jumps, dt):
    jumps = MertonJumps(intensity, mu, delta)

    def density(x: float) -> float:
        return float(np.exp(merton_log_density(np.array([x]), dt, vol, jumps, drift_annual=drift,
                                               max_jumps_per_step=max_jumps))[0])

    # The components' centres and widths, so that quad sees every peak of the mixture.
    ell = intensity * dt
    mean_step = (drift - 0.5 * vol**2 - intensity * jumps.kappa) * dt + ell * mu
    centres = sorted({mean_step + (n - ell) * mu for n in range(max_jumps + 1)})
    width = math.sqrt(vol**2 * dt + max_jumps * delta**2)
    lo, hi = centres[0] - 40.0 * width, centres[-1] + 40.0 * width
    # The narrowest component (no jump) is only vol sqrt(dt) wide: break points around every
    # centre at multiples of that width, or quad can step over a peak (seen with no jumps at all).
    narrow = vol * math.sqrt(dt)
    points = sorted({min(max(c + k * narrow, lo), hi) for c in centres
                     for k in (-30, -10, -3, -1, 0, 1, 3, 10, 30)})
    total, _ = integrate.quad(density, lo, hi, points=points, limit=1_000, epsabs=1e-12)
    assert total == pytest.approx(1.0, abs=1e-7)


@pytest.mark.parametrize("vol, jumps, drift, dt", [
    (0.6, MertonJumps(12.0, -0.10, 0.10), 0.05, DAY_YEARS),
    (0.5, MertonJumps(800.0, 0.01, 0.02), -0.3, HOUR_YEARS),
    (0.8, MertonJumps(0.0, -0.10, 0.10), 0.2, DAY_YEARS),
])
def test_density_moments_match_merton_paths_closed_form(vol, jumps, drift, dt):
    """E[exp(r)] and Var[exp(r)] under the density equal merton_terminal_moments over one
    interval: the density's drift is the one merton_paths simulates."""
    def density(x: float) -> float:
        return float(np.exp(merton_log_density(np.array([x]), dt, vol, jumps, drift_annual=drift,
                                               max_jumps_per_step=30))[0])

    sd = math.sqrt(vol**2 * dt + jumps.intensity_per_year * dt * 30.0
                   * (jumps.mean_log_jump**2 + jumps.vol_log_jump**2))
    centre = (drift - 0.5 * vol**2) * dt
    span = (centre - 30.0 * sd, centre + 30.0 * sd)
    m1, _ = integrate.quad(lambda x: math.exp(x) * density(x), *span, limit=400, epsabs=1e-14,
                           epsrel=1e-12)
    m2, _ = integrate.quad(lambda x: math.exp(2.0 * x) * density(x), *span, limit=400,
                           epsabs=1e-14, epsrel=1e-12)
    mean, var = merton_terminal_moments(1.0, vol, jumps, dt, drift_annual=drift)
    assert m1 == pytest.approx(mean, rel=1e-9)
    assert m2 - m1 * m1 == pytest.approx(var, rel=1e-6)


def _brute_force_loglik(r, dt, vol, jumps, drift, max_jumps, renormalize=True) -> float:
    """The Poisson mixture of normals summed term by term in 40-digit arithmetic."""
    mpmath.mp.dps = 40
    lam_dt = mpmath.mpf(jumps.intensity_per_year) * mpmath.mpf(dt)
    mu, delta = mpmath.mpf(jumps.mean_log_jump), mpmath.mpf(jumps.vol_log_jump)
    kappa = mpmath.exp(mu + delta**2 / 2) - 1
    log_drift = (mpmath.mpf(drift) - mpmath.mpf(vol) ** 2 / 2
                 - mpmath.mpf(jumps.intensity_per_year) * kappa) * mpmath.mpf(dt)
    weights = [mpmath.exp(-lam_dt) * lam_dt**n / mpmath.factorial(n) for n in range(max_jumps + 1)]
    if renormalize:
        total = mpmath.fsum(weights)
        weights = [w / total for w in weights]
    loglik = mpmath.mpf(0)
    for x in r:
        f = mpmath.mpf(0)
        for n, w in enumerate(weights):
            var = mpmath.mpf(vol) ** 2 * mpmath.mpf(dt) + n * delta**2
            f += w * mpmath.npdf(mpmath.mpf(float(x)), log_drift + n * mu, mpmath.sqrt(var))
        loglik += mpmath.log(f)
    return float(loglik)


@pytest.mark.parametrize("vol, jumps, drift, dt, max_jumps", [
    (0.5, MertonJumps(100.0, -0.03, 0.04), 0.1, HOUR_YEARS, 10),
    (0.7, MertonJumps(20.0, -0.08, 0.06), -0.5, DAY_YEARS, 4),
    (0.4, MertonJumps(5000.0, 0.002, 0.01), 0.0, HOUR_YEARS, 3),   # truncation matters here
    (0.6, MertonJumps(0.0, -0.08, 0.06), 0.3, DAY_YEARS, 10),
])
def test_loglik_equals_a_brute_force_mpmath_sum(vol, jumps, drift, dt, max_jumps):
    rng = np.random.default_rng(11)
    r = np.concatenate([rng.normal(0.0, vol * math.sqrt(dt), 40), [-0.15, -0.06, 0.05, 0.12]])
    ours = float(np.sum(merton_log_density(r, dt, vol, jumps, drift_annual=drift,
                                           max_jumps_per_step=max_jumps)))
    assert ours == pytest.approx(_brute_force_loglik(r, dt, vol, jumps, drift, max_jumps),
                                 rel=1e-12, abs=1e-9)


def test_default_truncation_is_negligible_at_the_default_intensity_cap():
    """At one expected jump per interval (the default bound) 10 jumps lose < 1e-8 of the mass."""
    r = np.array([-0.05, -0.01, 0.0, 0.02, 0.08])
    jumps = MertonJumps(1.0 / HOUR_YEARS, -0.01, 0.01)
    truncated = float(np.sum(merton_log_density(r, HOUR_YEARS, 0.5, jumps)))
    full = _brute_force_loglik(r, HOUR_YEARS, 0.5, jumps, 0.0, 40, renormalize=False)
    assert truncated == pytest.approx(full, abs=1e-7)  # 5 returns, < 2e-8 each


def test_gradient_of_the_likelihood_matches_finite_differences():
    rng = np.random.default_rng(3)
    r = rng.normal(0.0, 0.01, 300)
    r[::40] -= 0.05
    for theta in (np.array([0.008, 1e-4, 0.03, -0.04, 0.02]),
                  np.array([0.01, 0.0, 0.0, -0.01, 0.01])):
        value, grad = jumps_module._loglik_and_grad(theta, r, 6)
        assert value == pytest.approx(_brute_force_loglik_theta(r, theta, 6), rel=1e-12)
        step = 1e-7 * np.maximum(np.abs(theta), 1e-3)
        fd = np.empty(5)
        for k in range(5):
            up, down = theta.copy(), theta.copy()
            up[k] += step[k]
            down[k] = max(down[k] - step[k], 0.0) if k == 2 else down[k] - step[k]
            rise = (jumps_module._loglik_and_grad(up, r, 6, want_grad=False)[0]
                    - jumps_module._loglik_and_grad(down, r, 6, want_grad=False)[0])
            fd[k] = rise / (up[k] - down[k])
        # At an intensity of 0 the difference is one-sided: curvature, hence the looser tolerance.
        rel = np.array([1e-5, 1e-5, 1e-3 if theta[2] == 0.0 else 1e-5, 1e-5, 1e-5])
        assert np.all(np.abs(grad - fd) <= rel * np.abs(fd) + 1e-3), (grad, fd)


def _brute_force_loglik_theta(r, theta, max_jumps) -> float:
    """The same per-interval parameterization as the fit's, through the public density."""
    sigma_step, mean_step, ell, mu, delta = theta
    vol = sigma_step / math.sqrt(DAY_YEARS)
    jumps = MertonJumps(ell / DAY_YEARS, mu, delta)
    drift = ((mean_step - ell * mu) / DAY_YEARS + 0.5 * vol**2
             + jumps.intensity_per_year * jumps.kappa)
    return _brute_force_loglik(r, DAY_YEARS, vol, jumps, drift, max_jumps)


# --------------------------------------------------------------------------- the fit


@pytest.fixture(scope="module")
def simulated():
    """Two years of hourly Merton returns: ~200 jumps of -3 % +- 4 % on a 50 % diffusion."""
    truth = dict(vol=0.5, drift=0.1, jumps=MertonJumps(100.0, -0.03, 0.04))
    n = 2 * 8760
    r = _simulated_returns(truth["vol"], truth["jumps"], HOUR_YEARS, n, seed=20240601,
                           drift_annual=truth["drift"])
    return truth, r, fit_merton_jumps(r, HOUR_YEARS)


def test_fit_recovers_simulated_parameters_within_their_standard_errors(simulated):
    truth, r, fit = simulated
    years = r.size * HOUR_YEARS
    j, true_j = fit.jumps, truth["jumps"]
    assert fit.converged and fit.n_returns == r.size
    total_vol = math.sqrt(truth["vol"] ** 2 + true_j.intensity_per_year
                          * (true_j.mean_log_jump**2 + true_j.vol_log_jump**2))
    n_jumps = true_j.intensity_per_year * years
    # (estimate, truth, standard error, its complete-data value: as if every jump were seen)
    checks = [
        (fit.vol_diffusion_annual, truth["vol"], fit.stderr_vol_diffusion_annual,
         truth["vol"] / math.sqrt(2.0 * r.size)),
        (fit.drift_annual, truth["drift"], fit.stderr_drift_annual, total_vol / math.sqrt(years)),
        (j.intensity_per_year, true_j.intensity_per_year, fit.stderr_intensity_per_year,
         math.sqrt(true_j.intensity_per_year / years)),
        (j.mean_log_jump, true_j.mean_log_jump, fit.stderr_mean_log_jump,
         true_j.vol_log_jump / math.sqrt(n_jumps)),
        (j.vol_log_jump, true_j.vol_log_jump, fit.stderr_vol_log_jump,
         true_j.vol_log_jump / math.sqrt(2.0 * n_jumps)),
    ]
    for estimate, true, stderr, complete_data in checks:
        assert 0.7 * complete_data < stderr < 2.0 * complete_data
        assert abs(estimate - true) < 4.0 * stderr
    assert fit.likelihood_ratio > 1000.0  # ~200 jumps of 6 diffusion sd are unmistakable
    _assert_within_bounds(fit)


def test_fit_is_a_maximum_of_the_public_likelihood(simulated):
    _, r, fit = simulated
    at_fit = _fitted_loglik(fit, r)
    assert at_fit == pytest.approx(fit.loglik, rel=1e-12)
    for name, value in (("vol", fit.vol_diffusion_annual), ("drift", fit.drift_annual),
                        ("intensity", fit.jumps.intensity_per_year),
                        ("mu", fit.jumps.mean_log_jump), ("delta", fit.jumps.vol_log_jump)):
        step = 1e-3 * max(abs(value), 1e-2)
        for moved in (value - step, value + step):
            assert _fitted_loglik(fit, r, **{name: moved}) < at_fit


def test_fit_on_jump_free_returns_finds_no_evidence_of_jumps():
    r = _simulated_returns(0.6, MertonJumps(0.0, 0.0, 0.0), HOUR_YEARS, 4000, seed=77)
    fit = fit_merton_jumps(r, HOUR_YEARS)
    assert fit.converged
    assert -1e-6 < fit.likelihood_ratio < 10.0
    assert fit.total_vol_annual == pytest.approx(fit.vol_normal_annual, rel=0.02)
    _assert_within_bounds(fit)


def test_fit_with_intensity_fixed_at_zero_is_the_normal_maximum_likelihood():
    r = _simulated_returns(0.6, MertonJumps(50.0, -0.05, 0.05), HOUR_YEARS, 2000, seed=5)
    defaults = default_fit_bounds(r, HOUR_YEARS)
    bounds = MertonFitBounds(defaults.vol_diffusion_annual, defaults.mean_log_return_annual,
                             (0.0, 0.0), defaults.mean_log_jump, defaults.vol_log_jump)
    fit = fit_merton_jumps(r, HOUR_YEARS, bounds=bounds)
    assert fit.jumps.intensity_per_year == 0.0
    assert fit.loglik == pytest.approx(fit.loglik_normal, rel=1e-10)
    assert fit.vol_diffusion_annual == pytest.approx(np.std(r) / math.sqrt(HOUR_YEARS), rel=1e-5)
    assert fit.mean_log_return_annual == pytest.approx(np.mean(r) / HOUR_YEARS, rel=1e-4)
    # On a bound the information matrix is singular: no standard errors are claimed.
    assert math.isnan(fit.stderr_intensity_per_year)


@settings(max_examples=4, deadline=None)
@given(shift=st.floats(-0.01, 0.01), seed=st.integers(0, 1000))
def test_fit_moves_with_a_shift_and_mirrors_with_a_sign_flip(shift, seed):
    r = _simulated_returns(0.6, MertonJumps(300.0, -0.02, 0.02), HOUR_YEARS, 600, seed=seed)
    base = fit_merton_jumps(r, HOUR_YEARS)
    shifted = fit_merton_jumps(r + shift, HOUR_YEARS)
    mirrored = fit_merton_jumps(-r, HOUR_YEARS)
    for other in (shifted, mirrored):
        assert other.loglik == pytest.approx(base.loglik, rel=1e-7)
        assert other.vol_diffusion_annual == pytest.approx(base.vol_diffusion_annual, rel=1e-3)
        assert other.jumps.intensity_per_year == pytest.approx(base.jumps.intensity_per_year,
                                                               rel=1e-2, abs=1e-3)
        assert other.jumps.vol_log_jump == pytest.approx(base.jumps.vol_log_jump, rel=1e-3,
                                                         abs=1e-6)
    assert shifted.jumps.mean_log_jump == pytest.approx(base.jumps.mean_log_jump, rel=1e-3,
                                                        abs=1e-6)
    assert mirrored.jumps.mean_log_jump == pytest.approx(-base.jumps.mean_log_jump, rel=1e-3,
                                                         abs=1e-6)
    assert shifted.mean_log_return_annual == pytest.approx(
        base.mean_log_return_annual + shift / HOUR_YEARS, rel=1e-4)


def test_fit_falls_back_on_the_normal_model_when_no_start_beats_it():
    """Stopped after one iteration, no start on this jump-free sample has climbed above the
    normal model's likelihood: the fit reports the normal model rather than a worse point."""
    r = _simulated_returns(0.6, MertonJumps(0.0, 0.0, 0.0), HOUR_YEARS, 500, seed=1)
    fit = fit_merton_jumps(r, HOUR_YEARS, max_iter=1)
    assert "normal model" in fit.message
    assert fit.jumps.intensity_per_year == 0.0
    assert fit.likelihood_ratio == pytest.approx(0.0, abs=1e-9)
    assert fit.vol_diffusion_annual == pytest.approx(fit.vol_normal_annual, rel=1e-12)
    full = fit_merton_jumps(r, HOUR_YEARS)
    assert full.converged and full.likelihood_ratio >= fit.likelihood_ratio - 1e-9


def test_fit_result_is_frozen_and_feeds_the_premium_calculator(simulated):
    from models.premium import PremiumConfig

    _, _, fit = simulated
    with pytest.raises(AttributeError):
        fit.loglik = 0.0  # type: ignore[misc]
    assert PremiumConfig(jumps=fit.jumps).jumps is fit.jumps


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("returns, dt, kwargs", [
    (np.zeros((30, 2)), HOUR_YEARS, {}),
    (np.r_[np.full(29, 0.01), math.nan], HOUR_YEARS, {}),
    (np.full(19, 0.01) * np.arange(19), HOUR_YEARS, {}),            # too few
    (np.full(50, 0.001), HOUR_YEARS, {}),                           # constant
    (np.linspace(-0.01, 0.01, 50), 0.0, {}),
    (np.linspace(-0.01, 0.01, 50), -HOUR_YEARS, {}),
    (np.linspace(-0.01, 0.01, 50), math.nan, {}),
    (np.linspace(-0.01, 0.01, 50), HOUR_YEARS, dict(max_jumps_per_step=0)),
    (np.linspace(-0.01, 0.01, 50), HOUR_YEARS, dict(max_jumps_per_step=2.5)),
    (np.linspace(-0.01, 0.01, 50), HOUR_YEARS, dict(max_jumps_per_step=True)),
    (np.linspace(-0.01, 0.01, 50), HOUR_YEARS, dict(max_jumps_per_step=None)),
    (np.linspace(-0.01, 0.01, 50), HOUR_YEARS, dict(max_iter=0)),
    (np.linspace(-0.01, 0.01, 50), HOUR_YEARS, dict(bounds=((0.1, 1.0),) * 5)),
])
def test_fit_rejects_bad_input(returns, dt, kwargs):
    with pytest.raises(ValueError):
        fit_merton_jumps(returns, dt, **kwargs)


GOOD_PAIRS = dict(vol_diffusion_annual=(0.1, 2.0), mean_log_return_annual=(-5.0, 5.0),
                  intensity_per_year=(0.0, 1000.0), mean_log_jump=(-0.2, 0.2),
                  vol_log_jump=(0.0, 0.2))


@pytest.mark.parametrize("name, pair", [
    ("vol_diffusion_annual", (0.0, 1.0)), ("vol_diffusion_annual", (1.0, 0.5)),
    ("intensity_per_year", (-1.0, 10.0)), ("vol_log_jump", (-0.1, 0.1)),
    ("mean_log_jump", (math.nan, 0.1)), ("mean_log_return_annual", (-math.inf, 1.0)),
    ("mean_log_jump", (0.1,)), ("mean_log_jump", "ab"),
])
def test_bounds_reject_bad_pairs(name, pair):
    with pytest.raises(ValueError):
        MertonFitBounds(**{**GOOD_PAIRS, name: pair})


def test_density_rejects_bad_input():
    r = np.array([0.01, -0.02])
    with pytest.raises(ValueError):
        merton_log_density(r, HOUR_YEARS, 0.0, MertonJumps())
    with pytest.raises(ValueError):
        merton_log_density(r, HOUR_YEARS, 55.0 * math.nan, MertonJumps())
    with pytest.raises(ValueError):
        merton_log_density(r, HOUR_YEARS, 0.5, (6.0, -0.08, 0.06))
    with pytest.raises(ValueError):
        merton_log_density(r, HOUR_YEARS, 0.5, MertonJumps(), drift_annual=math.inf)
    with pytest.raises(ValueError):
        merton_log_density(r, 0.0, 0.5, MertonJumps())
    with pytest.raises(ValueError):
        merton_log_density(r, HOUR_YEARS, 0.5, MertonJumps(), max_jumps_per_step=0)
    with pytest.raises(ValueError):
        merton_log_density(r.reshape(1, 2), HOUR_YEARS, 0.5, MertonJumps())


# --------------------------------------------------------------------------- real BTC returns


def test_fit_on_real_btc_hourly_returns():
    from dataflows.history import load_ohlcv

    if not MARKET_FILE.is_file():
        pytest.fail(f"market data not found at {MARKET_FILE}")
    series = load_ohlcv(MARKET_FILE)
    bars = ohlc_bars(series.ts_s, 3600.0, series.open_usd, series.high_usd, series.low_usd,
                     series.close_usd)
    full = bars.n == 60  # complete hours only: the file starts at 23:01 and stops at 05:31
    r = np.diff(np.log(bars.close_usd[full]))[np.diff(bars.bar_start_s[full]) == 3600.0]
    assert r.size > 700
    fit = fit_merton_jumps(r, HOUR_YEARS)
    assert fit.converged
    assert fit.jumps.intensity_per_year > 0.0
    assert fit.likelihood_ratio > 10.0
    _assert_within_bounds(fit)
    for value in (fit.drift_annual, fit.loglik, fit.loglik_normal, fit.stderr_intensity_per_year,
                  fit.stderr_vol_diffusion_annual, fit.stderr_vol_log_jump):
        assert math.isfinite(value)
    assert fit.loglik >= fit.loglik_normal
