"""Multi-asset correlation (models/correlation.py): estimators against numpy/pandas references and
simulated data, the nearest correlation matrix against Higham's published example and a direct
numerical minimization, correlated GBM against its moments, and portfolio VaR against
``sqrt(w' Sigma w) z`` and the lognormal closed form."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

import models.correlation as correlation_module
from models.correlation import (
    RISKMETRICS_DECAY, component_var_usd, correlated_gbm_paths, correlation_factor,
    correlation_to_covariance, covariance_to_correlation, eigenvalue_clip, ewma_correlation,
    ewma_covariance, is_correlation_matrix, log_return_matrix, monte_carlo_portfolio_var_es,
    nearest_correlation, parametric_portfolio_var_es, pearson_correlation,
)
from models.pricing import bs_price
from models.scenarios import Book, OptionLeg, historical_var_es

CORR = np.array([[1.0, 0.8, 0.3],
                 [0.8, 1.0, 0.5],
                 [0.3, 0.5, 1.0]])
VOLS = np.array([0.6, 0.75, 1.1])
SPOTS = np.array([100_000.0, 3_500.0, 150.0])


def _broken(n: int, seed: int) -> np.ndarray:
    """A symmetric unit-diagonal matrix with entries in [-1, 1] that, for n >= 3, is not positive
    semidefinite: assets 0 and 1 both move with asset 2 (0.9) but against each other (-0.9)."""
    rng = np.random.default_rng(seed)
    m = rng.uniform(-1.0, 1.0, (n, n))
    m = 0.5 * (m + m.T)
    np.fill_diagonal(m, 1.0)
    if n >= 3:
        m[0, 1] = m[1, 0] = -0.9
        m[0, 2] = m[2, 0] = m[1, 2] = m[2, 1] = 0.9
    return m


# --------------------------------------------------------------------------- estimation


def test_log_returns_and_pearson_match_numpy():
    prices = np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.02, (500, 3)), axis=0)) * SPOTS
    r = log_return_matrix(prices)
    np.testing.assert_allclose(r, np.log(prices[1:] / prices[:-1]), rtol=0, atol=1e-14)
    np.testing.assert_allclose(pearson_correlation(r), np.corrcoef(r, rowvar=False), atol=1e-12)
    with pytest.raises(ValueError):
        log_return_matrix(np.array([[1.0, -2.0], [1.0, 2.0]]))
    constant = np.column_stack([r[:, 0], np.zeros(len(r))])
    corr = pearson_correlation(constant)
    assert corr[0, 0] == corr[1, 1] == 1.0 and np.isnan(corr[0, 1])


def test_simulated_correlated_returns_recover_the_correlation():
    n = 20_000
    paths = correlated_gbm_paths(SPOTS, VOLS, CORR, n / 365, n, 1, 3)
    r = log_return_matrix(paths[0])
    estimate = pearson_correlation(r)
    # Standard error of a sample correlation: (1 - rho^2) / sqrt(n).
    se = (1.0 - CORR**2) / math.sqrt(n) + np.eye(3)
    assert np.all(np.abs(estimate - CORR) < 4.0 * se)
    # Per-step vols are the inputs scaled by sqrt(dt).
    np.testing.assert_allclose(r.std(axis=0, ddof=1), VOLS * math.sqrt(1 / 365),
                               rtol=4.0 * math.sqrt(0.5 / n))


def test_ewma_matches_pandas_and_the_riskmetrics_recursion():
    r = np.random.default_rng(2).multivariate_normal([0.001, -0.002, 0.0],
                                                     correlation_to_covariance(CORR, VOLS / 19),
                                                     300)
    frame = pd.DataFrame(r)
    alpha = 1.0 - RISKMETRICS_DECAY
    pandas_cov = frame.ewm(alpha=alpha, adjust=True).cov(bias=True).loc[len(r) - 1].to_numpy()
    np.testing.assert_allclose(ewma_covariance(r, demean=True), pandas_cov, rtol=1e-10)
    pandas_corr = frame.ewm(alpha=alpha, adjust=True).corr().loc[len(r) - 1].to_numpy()
    np.testing.assert_allclose(ewma_correlation(r, demean=True), pandas_corr, rtol=1e-9)
    # Zero-mean RiskMetrics: the recursion S_t = l S_{t-1} + (1 - l) r_t r_t', started with the
    # first outer product, is the normalized weights up to the weight of that start.
    lam = RISKMETRICS_DECAY
    state = np.outer(r[0], r[0])
    for row in r[1:]:
        state = lam * state + (1 - lam) * np.outer(row, row)
    weights = lam ** np.arange(len(r) - 1, -1, -1)
    explicit = sum(w * np.outer(row, row) for w, row in zip(weights / weights.sum(), r))
    np.testing.assert_allclose(ewma_covariance(r), explicit, rtol=1e-12)
    # The two differ only in how the oldest observations are weighted: lam^300 is negligible.
    np.testing.assert_allclose(ewma_covariance(r), state, rtol=1e-6)
    for decay in (0.0, 1.0):
        with pytest.raises(ValueError):
            ewma_covariance(r, decay)


def test_ewma_follows_a_change_of_regime_that_pearson_averages_away():
    rng = np.random.default_rng(4)
    calm = rng.multivariate_normal([0, 0], [[1, 0], [0, 1]], 1_000)
    stressed = rng.multivariate_normal([0, 0], [[1, 0.9], [0.9, 1]], 250)
    r = np.vstack([calm, stressed]) * 0.03
    assert ewma_correlation(r)[0, 1] > 0.75
    assert pearson_correlation(r)[0, 1] < 0.4


def test_covariance_correlation_round_trip():
    cov = correlation_to_covariance(CORR, VOLS)
    corr, sd = covariance_to_correlation(cov)
    np.testing.assert_allclose(corr, CORR, atol=1e-15)
    np.testing.assert_allclose(sd, VOLS, rtol=1e-15)
    with pytest.raises(ValueError):
        correlation_to_covariance(CORR, VOLS[:2])


# --------------------------------------------------------------------------- repair


def test_nearest_correlation_reproduces_highams_example():
    # Higham (2002), section 4: the nearest correlation matrix to [[1 1 0] [1 1 1] [0 1 1]].
    a = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    expected = np.array([[1.0, 0.7607, 0.1573], [0.7607, 1.0, 0.7607], [0.1573, 0.7607, 1.0]])
    np.testing.assert_allclose(nearest_correlation(a), expected, atol=1e-4)


def _nearest_by_direct_minimization(a: np.ndarray) -> np.ndarray:
    """Minimize ||A - X||_F over X = V V' with unit-norm rows of V (every correlation matrix has
    that form), from several starts: an independent route to the nearest correlation matrix."""
    n = a.shape[0]

    def build(flat):
        v = flat.reshape(n, n)
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        return v @ v.T

    best = None
    rng = np.random.default_rng(0)
    starts = [np.linalg.cholesky(eigenvalue_clip(a, 1e-3)).ravel()]
    starts += [rng.normal(size=n * n) for _ in range(4)]
    for start in starts:
        found = optimize.minimize(lambda f: np.sum((a - build(f)) ** 2), start, method="BFGS",
                                  options={"gtol": 1e-12, "maxiter": 20_000})
        if best is None or found.fun < best.fun:
            best = found
    return build(best.x)


@pytest.mark.parametrize("n, seed", [(4, 1), (5, 2), (6, 3)])
def test_nearest_correlation_is_the_nearest(n, seed):
    a = _broken(n, seed)
    assert np.linalg.eigvalsh(a).min() < -0.05
    higham = nearest_correlation(a)
    reference = _nearest_by_direct_minimization(a)
    assert np.linalg.norm(a - higham) == pytest.approx(np.linalg.norm(a - reference), rel=1e-6)
    np.testing.assert_allclose(higham, reference, atol=2e-4)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 12), st.integers(0, 10_000), st.sampled_from([0.0, 1e-8, 1e-4]))
def test_repairs_give_valid_correlation_matrices(n, seed, floor):
    a = _broken(n, seed)
    for repaired in (nearest_correlation(a, min_eigenvalue=floor), eigenvalue_clip(a, floor)):
        np.testing.assert_array_equal(repaired, repaired.T)
        np.testing.assert_allclose(np.diag(repaired), 1.0, atol=1e-14)
        assert np.linalg.eigvalsh(repaired).min() >= floor - 1e-13
        assert is_correlation_matrix(repaired)
        if floor > 0:
            np.linalg.cholesky(repaired)  # positive definite: the factorization exists
    # The Higham projection is at least as near as the clipped spectrum.
    assert (np.linalg.norm(a - nearest_correlation(a))
            <= np.linalg.norm(a - eigenvalue_clip(a, 0.0)) + 1e-9)


def test_a_valid_matrix_is_left_alone():
    np.testing.assert_allclose(nearest_correlation(CORR), CORR, atol=1e-12)
    np.testing.assert_allclose(eigenvalue_clip(CORR, 0.0), CORR, atol=1e-12)
    assert is_correlation_matrix(CORR)
    assert not is_correlation_matrix(_broken(6, 1))
    assert not is_correlation_matrix(CORR * 1.1)
    with pytest.raises(ValueError):
        nearest_correlation(np.array([[1.0, 0.2], [0.3, 1.0]]))


def test_correlation_factor_including_the_singular_case():
    factor = correlation_factor(CORR)
    np.testing.assert_allclose(factor @ factor.T, CORR, atol=1e-14)
    assert np.allclose(factor, np.tril(factor))
    perfect = np.ones((3, 3))  # three perfectly correlated assets: PSD, singular
    factor = correlation_factor(perfect)
    np.testing.assert_allclose(factor @ factor.T, perfect, atol=1e-12)
    assert np.allclose(factor, np.tril(factor), atol=1e-12)
    with pytest.raises(ValueError):
        correlation_factor(_broken(6, 1))


# --------------------------------------------------------------------------- simulation


def test_correlated_paths_shapes_moments_and_determinism():
    drifts = np.array([0.1, 0.0, -0.2])
    horizon = 0.5
    paths = correlated_gbm_paths(SPOTS, VOLS, CORR, horizon, 6, 100_000, 9, drifts_annual=drifts)
    assert paths.shape == (100_000, 7, 3)
    np.testing.assert_array_equal(paths[:, 0, :], np.broadcast_to(SPOTS, (100_000, 3)))
    terminal = paths[:, -1, :]
    expected = SPOTS * np.exp(drifts * horizon)
    se = terminal.std(axis=0, ddof=1) / math.sqrt(len(terminal))
    assert np.all(np.abs(terminal.mean(axis=0) - expected) < 3.0 * se)
    log_terminal = np.log(terminal / SPOTS)
    np.testing.assert_allclose(np.corrcoef(log_terminal, rowvar=False), CORR, atol=0.01)
    np.testing.assert_allclose(log_terminal.std(axis=0), VOLS * math.sqrt(horizon), rtol=0.01)
    np.testing.assert_array_equal(
        paths, correlated_gbm_paths(SPOTS, VOLS, CORR, horizon, 6, 100_000, 9,
                                    drifts_annual=drifts))
    single = correlated_gbm_paths(100.0, 0.5, [[1.0]], 1.0, 3, 10, 1)
    assert single.shape == (10, 4, 1)


def test_correlated_paths_do_not_depend_on_the_block_size(monkeypatch):
    whole = correlated_gbm_paths(SPOTS, VOLS, CORR, 1.0, 12, 500, 5)
    monkeypatch.setattr(correlation_module, "_CHUNK_ELEMENTS", 12 * 3 * 7)  # blocks of 7 paths
    np.testing.assert_array_equal(whole, correlated_gbm_paths(SPOTS, VOLS, CORR, 1.0, 12, 500, 5))


def test_correlated_paths_validation():
    single = correlated_gbm_paths(100.0, 0.5, [[1.0]], 1.0, 3, 10, 1)
    assert single.shape == (10, 4, 1)
    for bad in (dict(correlation=_broken(3, 5) * 3), dict(spots_usd=[1.0, 2.0]),
                dict(vols_annual=-VOLS)):
        kwargs = dict(spots_usd=SPOTS, vols_annual=VOLS, correlation=CORR) | bad
        with pytest.raises(ValueError):
            correlated_gbm_paths(horizon_years=1.0, n_steps=2, n_paths=2, rng=1, **kwargs)


# --------------------------------------------------------------------------- portfolio risk


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=3, max_size=3), st.floats(1 / 365, 1.0),
       st.sampled_from([0.9, 0.95, 0.99]))
def test_parametric_var_is_sqrt_w_sigma_w_times_z(exposures, horizon, confidence):
    w = np.array(exposures)
    cov = np.diag(VOLS) @ CORR @ np.diag(VOLS) * horizon
    sigma_p = math.sqrt(w @ cov @ w)
    z = stats.norm.ppf(confidence)
    got = parametric_portfolio_var_es(w, VOLS, CORR, horizon, confidence)
    assert got.method == "parametric"
    assert got.var == pytest.approx(sigma_p * z, rel=1e-12, abs=1e-9)
    assert got.es == pytest.approx(sigma_p * stats.norm.pdf(z) / (1 - confidence), rel=1e-12,
                                   abs=1e-9)
    parts = component_var_usd(w, VOLS, CORR, horizon, confidence)
    assert parts.sum() == pytest.approx(got.var, rel=1e-10, abs=1e-9)


def test_diversification_and_drift():
    w = np.array([1e6, 1e6, 1e6])
    together = parametric_portfolio_var_es(w, VOLS, CORR, 10 / 365, 0.99).var
    alone = sum(parametric_portfolio_var_es(w * np.eye(3)[i], VOLS, CORR, 10 / 365, 0.99).var
                for i in range(3))
    assert together < alone
    perfect = parametric_portfolio_var_es(w, VOLS, np.ones((3, 3)), 10 / 365, 0.99).var
    assert perfect == pytest.approx(alone, rel=1e-12)
    drifted = parametric_portfolio_var_es(w, VOLS, CORR, 10 / 365, 0.99,
                                          drifts_annual=[0.5, 0.0, 0.0])
    assert drifted.var == pytest.approx(together - 1e6 * 0.5 * 10 / 365, rel=1e-12)
    # A hedge has a negative contribution.
    hedged = component_var_usd([1e6, -0.5e6, 0.0], VOLS, CORR, 10 / 365, 0.99)
    assert hedged[1] < 0.0 < hedged[0] and hedged[2] == 0.0
    with pytest.raises(ValueError):
        parametric_portfolio_var_es(w, VOLS, _broken(3, 7) * 2, 1.0, 0.99)


def test_monte_carlo_var_of_a_single_coin_is_the_lognormal_quantile():
    spot, vol, horizon, coins, c, n = 100_000.0, 0.6, 10 / 365, 3.0, 0.99, 400_000
    got = monte_carlo_portfolio_var_es([Book(spot_coin=coins)], [spot], [vol], [[1.0]], horizon,
                                       c, n, 12)
    assert got.method == "monte_carlo"
    m, s = -0.5 * vol**2 * horizon, vol * math.sqrt(horizon)
    z = stats.norm.ppf(1 - c)
    exact = coins * spot * (1 - math.exp(m + s * z))
    se = coins * spot * math.exp(m + s * z) * s * math.sqrt(c * (1 - c) / n) / stats.norm.pdf(z)
    assert abs(got.var - exact) < 4.0 * se


def test_monte_carlo_portfolio_var_is_full_revaluation_of_the_simulated_prices():
    horizon, n, c, rate = 2 / 365, 50_000, 0.99, 0.02
    books = [Book(legs=(OptionLeg(-2.0, 95_000.0, 7 / 365, False, 0.55),), spot_coin=1.0),
             Book(spot_coin=-20.0),
             Book(legs=(OptionLeg(100.0, 160.0, 30 / 365, True, 1.0),))]
    got = monte_carlo_portfolio_var_es(books, SPOTS, VOLS, CORR, horizon, c, n, 21,
                                       rate_annual=rate)
    terminal = correlated_gbm_paths(SPOTS, VOLS, CORR, horizon, 1, n, 21)[:, -1, :]
    pnl = np.zeros(n)
    for i, book in enumerate(books):
        for t_spot, sign, elapsed in ((terminal[:, i], 1.0, horizon), (SPOTS[i], -1.0, 0.0)):
            value = book.spot_coin * t_spot
            for leg in book.legs:
                value = value + leg.quantity_coin * bs_price(
                    t_spot, leg.strike_usd, leg.expiry_years - elapsed, rate, leg.vol_annual,
                    leg.call)
            pnl = pnl + sign * value
    ref = historical_var_es(pnl, c)
    assert (got.var, got.es) == pytest.approx((ref.var, ref.es), rel=1e-10)
    # Linear books over a short horizon: close to the delta-normal figure.
    linear = [Book(spot_coin=q) for q in (2.0, -20.0, 300.0)]
    mc = monte_carlo_portfolio_var_es(linear, SPOTS, VOLS, CORR, horizon, c, n, 22)
    normal = parametric_portfolio_var_es(SPOTS * [2.0, -20.0, 300.0], VOLS, CORR, horizon, c)
    assert mc.var == pytest.approx(normal.var, rel=0.05)
    with pytest.raises(ValueError):
        monte_carlo_portfolio_var_es(linear[:2], SPOTS, VOLS, CORR, horizon, c, n, 22)
