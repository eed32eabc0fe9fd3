"""Monte Carlo paths, stress tests, VaR/ES and the policy outcome simulator (models/scenarios.py)
against closed forms and independent references: lognormal and Merton moments, Black-Scholes and
the Merton series price, the normal and Cornish-Fisher tail integrals done by quadrature, an exact
rational-arithmetic empirical VaR/ES, and scipy's sample moments."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import integrate, stats

from models.jumps import MertonJumps
from models.pricing import bs_price
from models.scenarios import (
    STANDARD_SCENARIOS, Book, BootstrapModel, GbmModel, McPrice, MertonModel, OptionLeg,
    PolicyOutcome, PutPolicy, RiskEstimate, StressResult, StressScenario, as_generator,
    bootstrap_paths, book_value_usd, cornish_fisher_var_es, gbm_paths, histogram_data,
    historical_var_es, iter_path_chunks, log_returns, mc_european_price, merton_paths,
    merton_terminal_moments, monte_carlo_var_es, normal_var_es, outcome_chart_data,
    percentile_fan, policy_premium_usd, shock_paths, simulate_paths, simulate_policy_outcome,
    stress_test, terminal_prices, var_es,
)

JUMPS = MertonJumps(intensity_per_year=12.0, mean_log_jump=-0.10, vol_log_jump=0.10)


# --------------------------------------------------------------------------- references


def _lognormal_raw_moment(spot: float, log_drift_total: float, log_var_total: float, k: int):
    return spot**k * math.exp(k * log_drift_total + 0.5 * k * k * log_var_total)


def _merton_series_price(S, K, T, r, sigma, jumps: MertonJumps, call: bool, n_terms: int = 80):
    """Merton (1976): a Poisson mixture of Black-Scholes prices, conditioned on n jumps:
    ``sum_n e^{-l' T} (l' T)^n / n! BS(S, K, T, r_n, sigma_n)`` with ``l' = l (1 + kappa)``,
    ``sigma_n^2 = sigma^2 + n delta^2 / T``, ``r_n = r - l kappa + n ln(1 + kappa) / T``."""
    lam, kappa = jumps.intensity_per_year, jumps.kappa
    lam_prime = lam * (1.0 + kappa)
    total = 0.0
    for n in range(n_terms):
        weight = stats.poisson.pmf(n, lam_prime * T)
        sigma_n = math.sqrt(sigma**2 + n * jumps.vol_log_jump**2 / T)
        r_n = r - lam * kappa + n * math.log1p(kappa) / T
        total += weight * float(bs_price(S, K, T, r_n, sigma_n, call))
    return total


def _merton_terminal_variance_by_poisson_sum(spot, sigma, jumps, T, drift, compensated):
    """E[S_T^2] conditioned on the jump count, summed over the Poisson weights."""
    lam = jumps.intensity_per_year
    c = lam * jumps.kappa if compensated else 0.0
    a = drift - 0.5 * sigma**2 - c
    second = 0.0
    for n in range(200):
        weight = stats.poisson.pmf(n, lam * T)
        log_mean = 2.0 * (a * T + n * jumps.mean_log_jump)
        log_var = 4.0 * (sigma**2 * T + n * jumps.vol_log_jump**2)
        second += weight * spot**2 * math.exp(log_mean + 0.5 * log_var)
    mean = spot * math.exp((drift - c + lam * jumps.kappa) * T)
    return mean, second - mean * mean


def _sample_mean_var_with_stderr(x: np.ndarray):
    n = x.size
    mean, var = x.mean(), x.var(ddof=1)
    fourth = np.mean((x - mean) ** 4)
    return mean, var, math.sqrt(var / n), math.sqrt((fourth - var**2) / n)


def _exact_historical(pnl: np.ndarray, confidence: str):
    """Empirical VaR/ES in exact arithmetic: ``k = ceil(n c)``, VaR the k-th smallest loss, ES
    ``(1/(1-c)) int_c^1 q(u) du`` of the empirical quantile function."""
    c = Fraction(confidence)
    losses = sorted(-float(v) for v in pnl)
    n = len(losses)
    k = math.ceil(n * c)
    var = losses[k - 1]
    tail = sum(Fraction(v) for v in losses[k:]) / n + (Fraction(k, n) - c) * Fraction(var)
    return var, float(tail / (1 - c))


def _book() -> Book:
    return Book(legs=(OptionLeg(2.0, 90_000.0, 30 / 365, False, 0.55),
                      OptionLeg(-1.0, 110_000.0, 60 / 365, True, 0.50),
                      OptionLeg(0.5, 100_000.0, 3 / 365, True, 0.60)), spot_coin=1.0)


def _book_by_hand(book: Book, spot, elapsed=0.0, mult=1.0, shift=0.0, rate=0.0):
    value = book.spot_coin * np.asarray(spot, dtype=float)
    for leg in book.legs:
        value = value + leg.quantity_coin * bs_price(
            spot, leg.strike_usd, max(leg.expiry_years - elapsed, 0.0), rate,
            max(leg.vol_annual * mult + shift, 0.0), leg.call)
    return value


# --------------------------------------------------------------------------- generators, inputs


def test_as_generator_accepts_seeds_and_generators_only():
    gen = np.random.default_rng(3)
    assert as_generator(gen) is gen
    assert as_generator(5).random() == np.random.default_rng(5).random()
    assert as_generator(np.int64(5)).random() == np.random.default_rng(5).random()
    for bad in (None, -1, 1.5, True, "7"):
        with pytest.raises(ValueError):
            as_generator(bad)


def test_log_returns_and_validation():
    close = np.array([100.0, 110.0, 99.0, 99.0])
    np.testing.assert_allclose(log_returns(close), [math.log(1.1), math.log(0.9), 0.0],
                               rtol=0, atol=1e-15)
    for bad in ([100.0], [[1.0, 2.0]], [100.0, 0.0], [100.0, np.nan]):
        with pytest.raises(ValueError):
            log_returns(np.array(bad))


@pytest.mark.parametrize("call", [
    lambda: gbm_paths(0.0, 0.5, 1.0, 10, 10, 1),
    lambda: gbm_paths(100.0, 55.0 * -1, 1.0, 10, 10, 1),
    lambda: gbm_paths(100.0, 0.5, 1.0, 0, 10, 1),
    lambda: gbm_paths(100.0, 0.5, 1.0, 10, 11, 1, antithetic=True),
    lambda: gbm_paths(100.0, 0.5, 1.0, 10, 10, 1, chunk_paths=0),
    lambda: merton_paths(100.0, 0.5, "jumps", 1.0, 10, 10, 1),
    lambda: bootstrap_paths(100.0, np.array([0.01, np.inf]), 10, 10, 1),
    lambda: bootstrap_paths(100.0, np.array([0.01]), 10, 10, 1, block_length=0),
    lambda: simulate_paths("gbm", 100.0, 1.0, 10, 10, 1),
    lambda: iter_path_chunks(GbmModel(0.5), 100.0, 1.0, 10, 10, 1, 0),
    lambda: iter_path_chunks(GbmModel(0.5, antithetic=True), 100.0, 1.0, 10, 10, 1, 3),
])
def test_generators_refuse_bad_arguments_when_called(call):
    with pytest.raises(ValueError):
        call()


# --------------------------------------------------------------------------- GBM


def test_gbm_terminal_moments_are_lognormal():
    spot, vol, drift, T = 100.0, 0.8, 0.1, 0.5
    paths = gbm_paths(spot, vol, T, 4, 200_000, 11, drift_annual=drift)
    assert paths.shape == (200_000, 5)
    assert np.all(paths[:, 0] == spot)
    a, v = (drift - 0.5 * vol**2) * T, vol**2 * T
    m1, m2 = _lognormal_raw_moment(spot, a, v, 1), _lognormal_raw_moment(spot, a, v, 2)
    mean, var, se_mean, se_var = _sample_mean_var_with_stderr(paths[:, -1])
    assert m1 == pytest.approx(spot * math.exp(drift * T), rel=1e-12)
    assert abs(mean - m1) < 3.0 * se_mean
    assert abs(var - (m2 - m1 * m1)) < 3.0 * se_var


def test_gbm_log_increments_are_normal_with_the_step_moments():
    vol, drift, T, n_steps = 0.6, -0.2, 0.25, 50
    paths = gbm_paths(1.0, vol, T, n_steps, 4_000, 2, drift_annual=drift)
    increments = np.diff(np.log(paths), axis=1).ravel()
    dt = T / n_steps
    n = increments.size
    assert abs(increments.mean() - (drift - 0.5 * vol**2) * dt) < 3.0 * vol * math.sqrt(dt / n)
    assert increments.var() == pytest.approx(vol**2 * dt, rel=4.0 * math.sqrt(2.0 / n))
    assert stats.kstest((increments - (drift - 0.5 * vol**2) * dt) / (vol * math.sqrt(dt)),
                        "norm").pvalue > 1e-3


def test_gbm_antithetic_pairs_mirror_the_normals():
    vol, drift, T, n_steps, n = 0.5, 0.05, 1.0, 12, 1_000
    paths = gbm_paths(100.0, vol, T, n_steps, n, 4, drift_annual=drift, antithetic=True)
    inc = np.diff(np.log(paths), axis=1)
    np.testing.assert_allclose(inc[: n // 2] + inc[n // 2:],
                               2.0 * (drift - 0.5 * vol**2) * T / n_steps, atol=1e-12)


def test_mc_european_price_of_gbm_matches_black_scholes():
    spot, vol, r, T = 100.0, 0.7, 0.04, 0.5
    terminal = gbm_paths(spot, vol, T, 1, 200_000, 21, drift_annual=r)[:, -1]
    anti = gbm_paths(spot, vol, T, 1, 200_000, 22, drift_annual=r, antithetic=True)[:, -1]
    for strike in (70.0, 100.0, 140.0):
        for call in (True, False):
            exact = float(bs_price(spot, strike, T, r, vol, call))
            plain = mc_european_price(terminal, strike, T, r, call)
            assert isinstance(plain, McPrice) and plain.n_samples == 200_000
            assert abs(plain.price - exact) < 3.0 * plain.stderr
            paired = mc_european_price(anti, strike, T, r, call, antithetic=True)
            assert paired.n_samples == 100_000
            assert abs(paired.price - exact) < 3.0 * paired.stderr
    # Antithetic pairs cut the error of a mostly monotone payoff (a deep in-the-money call) for
    # the same number of payoffs; without the pairing the two errors would be about equal.
    assert (mc_european_price(anti, 50.0, T, r, True, antithetic=True).stderr
            < 0.7 * mc_european_price(terminal, 50.0, T, r, True).stderr)
    with pytest.raises(ValueError):
        mc_european_price(anti[:-1], 100.0, T, r, True, antithetic=True)


def test_a_whole_path_set_is_refused_where_terminal_prices_are_expected():
    paths = gbm_paths(100.0, 0.5, 1.0, 4, 10, 1)
    np.testing.assert_array_equal(terminal_prices(paths[:, -1:]), paths[:, -1])
    for call in (lambda: terminal_prices(paths), lambda: mc_european_price(paths, 100, 1, 0, True),
                 lambda: monte_carlo_var_es(Book(spot_coin=1.0), 100.0, paths, 1.0, 0.99)):
        with pytest.raises(ValueError, match=r"paths\[:, -1\]"):
            call()
    assert mc_european_price(paths[:, -1:], 100, 1, 0, True) == mc_european_price(
        paths[:, -1], 100, 1, 0, True)


# --------------------------------------------------------------------------- Merton


def test_merton_terminal_moments_closed_form_against_a_poisson_sum():
    for compensated in (True, False):
        mean, var = merton_terminal_moments(100.0, 0.5, JUMPS, 0.7, drift_annual=0.03,
                                            compensated=compensated)
        ref_mean, ref_var = _merton_terminal_variance_by_poisson_sum(100.0, 0.5, JUMPS, 0.7,
                                                                     0.03, compensated)
        assert mean == pytest.approx(ref_mean, rel=1e-12)
        assert var == pytest.approx(ref_var, rel=1e-10)
    # No jumps: the lognormal moments.
    mean, var = merton_terminal_moments(100.0, 0.5, MertonJumps(intensity_per_year=0.0), 0.7,
                                        drift_annual=0.03)
    m1 = _lognormal_raw_moment(100.0, (0.03 - 0.125) * 0.7, 0.25 * 0.7, 1)
    m2 = _lognormal_raw_moment(100.0, (0.03 - 0.125) * 0.7, 0.25 * 0.7, 2)
    assert (mean, var) == pytest.approx((m1, m2 - m1 * m1), rel=1e-12)


@pytest.mark.parametrize("compensated", [True, False])
def test_merton_paths_terminal_moments(compensated):
    spot, vol, T, drift = 100.0, 0.5, 0.5, 0.02
    paths = merton_paths(spot, vol, JUMPS, T, 8, 200_000, 5, drift_annual=drift,
                         compensated=compensated)
    mean, var, se_mean, se_var = _sample_mean_var_with_stderr(paths[:, -1])
    ref_mean, ref_var = merton_terminal_moments(spot, vol, JUMPS, T, drift_annual=drift,
                                                compensated=compensated)
    assert abs(mean - ref_mean) < 3.0 * se_mean
    assert abs(var - ref_var) < 3.0 * se_var


def test_merton_jump_counts_are_poisson():
    # No diffusion and fixed-size jumps: every log increment is drift + (-0.1) * count exactly.
    jumps = MertonJumps(intensity_per_year=20.0, mean_log_jump=-0.1, vol_log_jump=0.0)
    T, n_steps, n = 0.5, 10, 20_000
    paths = merton_paths(1.0, 0.0, jumps, T, n_steps, n, 9, compensated=False)
    counts = np.rint(np.diff(np.log(paths), axis=1) / -0.1)
    np.testing.assert_allclose(np.diff(np.log(paths), axis=1), -0.1 * counts, atol=1e-12)
    # Per step: Poisson(intensity dt) = Poisson(1), so multi-jump steps are common.
    lam_dt = jumps.intensity_per_year * T / n_steps
    per_step = np.bincount(counts.ravel().astype(int), minlength=9)[:9]
    expected_step = stats.poisson.pmf(np.arange(9), lam_dt) * counts.size
    assert stats.chisquare(per_step[:7], expected_step[:7] * per_step[:7].sum()
                           / expected_step[:7].sum()).pvalue > 1e-3
    per_path = counts.sum(axis=1)
    lam_t = jumps.intensity_per_year * T
    assert per_path.mean() == pytest.approx(lam_t, abs=4.0 * math.sqrt(lam_t / n))
    observed = np.bincount(per_path.astype(int), minlength=25)[:25]
    expected = stats.poisson.pmf(np.arange(25), lam_t) * n
    keep = expected > 20
    assert stats.chisquare(observed[keep], expected[keep] * observed[keep].sum()
                           / expected[keep].sum()).pvalue > 1e-3


def test_merton_monte_carlo_price_matches_the_merton_series():
    spot, vol, r, T = 100.0, 0.4, 0.03, 0.25
    terminal = merton_paths(spot, vol, JUMPS, T, 1, 300_000, 13, drift_annual=r)[:, -1]
    for strike, call in ((80.0, False), (100.0, False), (100.0, True), (120.0, True)):
        series = _merton_series_price(spot, strike, T, r, vol, JUMPS, call)
        mc = mc_european_price(terminal, strike, T, r, call)
        # Four comparisons on one path set: 3.5 standard errors keeps the family-wise false
        # alarm rate near 0.2 % (Bonferroni), as 3 would for a single comparison.
        assert abs(mc.price - series) < 3.5 * mc.stderr
        # The jumps matter: the series is far from Black-Scholes at the diffusion vol.
        assert abs(series - float(bs_price(spot, strike, T, r, vol, call))) > 10.0 * mc.stderr
    no_jumps = MertonJumps(intensity_per_year=0.0)
    assert _merton_series_price(spot, 90.0, T, r, vol, no_jumps, False) == pytest.approx(
        float(bs_price(spot, 90.0, T, r, vol, False)), rel=1e-12)


# --------------------------------------------------------------------------- bootstrap


def _distinct_returns(n: int, seed: int) -> np.ndarray:
    # Returns on a 1e-4 grid, all distinct: an increment identifies the return it came from.
    rng = np.random.default_rng(seed)
    return (rng.permutation(np.arange(-n // 2, n - n // 2)) * 1e-4 + 0.0003).astype(float)


def _source_index(paths: np.ndarray, returns: np.ndarray) -> np.ndarray:
    increments = np.diff(np.log(paths), axis=1)
    order = np.argsort(returns)
    pos = np.clip(np.searchsorted(returns[order], increments), 1, returns.size - 1)
    left, right = order[pos - 1], order[pos]
    index = np.where(np.abs(returns[left] - increments) < np.abs(returns[right] - increments),
                     left, right)
    np.testing.assert_allclose(returns[index], increments, rtol=0, atol=1e-12)
    return index


def test_bootstrap_only_uses_the_given_returns_uniformly():
    returns = _distinct_returns(10, 1)
    paths = bootstrap_paths(50.0, returns, 40, 2_500, 3)
    assert paths.shape == (2_500, 41) and np.all(paths[:, 0] == 50.0)
    index = _source_index(paths, returns)
    counts = np.bincount(index.ravel(), minlength=10)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_block_bootstrap_keeps_consecutive_returns_inside_a_block():
    returns = _distinct_returns(30, 2)
    block = 5
    paths = bootstrap_paths(1.0, returns, 23, 400, 4, block_length=block)
    index = _source_index(paths, returns)
    for start in range(0, 23, block):
        within = index[:, start:start + block]
        np.testing.assert_array_equal(np.diff(within, axis=1) % 30, 1)
    counts = np.bincount(index[:, ::block].ravel(), minlength=30)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_bootstrap_demean_removes_the_sample_drift():
    returns = _distinct_returns(12, 3) + 0.01
    paths = bootstrap_paths(1.0, returns, 10, 200, 5, demean=True)
    _source_index(paths, returns - returns.mean())


# --------------------------------------------------------------------------- determinism


MODELS = [GbmModel(0.6, 0.05), MertonModel(0.5, JUMPS, 0.01),
          BootstrapModel(np.random.default_rng(0).normal(0.0, 0.03, 300), block_length=7,
                         demean=True)]


@pytest.mark.parametrize("model", MODELS, ids=["gbm", "merton", "bootstrap"])
def test_same_seed_same_paths_and_chunking_does_not_matter(model):
    one_shot = simulate_paths(model, 100.0, 0.5, 30, 1_001, 42)
    np.testing.assert_array_equal(one_shot, simulate_paths(model, 100.0, 0.5, 30, 1_001, 42))
    np.testing.assert_array_equal(
        one_shot, simulate_paths(model, 100.0, 0.5, 30, 1_001, 42, chunk_paths=97))
    np.testing.assert_array_equal(
        one_shot, np.vstack(list(iter_path_chunks(model, 100.0, 0.5, 30, 1_001, 42, 250))))
    assert not np.array_equal(one_shot, simulate_paths(model, 100.0, 0.5, 30, 1_001, 43))
    gen = np.random.default_rng(42)
    first, second = (simulate_paths(model, 100.0, 0.5, 30, 10, gen) for _ in range(2))
    assert not np.array_equal(first, second)  # a Generator argument advances


def test_simulate_paths_dispatches_to_the_generators():
    np.testing.assert_array_equal(simulate_paths(GbmModel(0.5, 0.1, antithetic=True), 10.0, 1.0,
                                                 5, 20, 1),
                                  gbm_paths(10.0, 0.5, 1.0, 5, 20, 1, drift_annual=0.1,
                                            antithetic=True))
    np.testing.assert_array_equal(simulate_paths(MertonModel(0.5, JUMPS, 0.1, False), 10.0, 1.0,
                                                 5, 20, 1),
                                  merton_paths(10.0, 0.5, JUMPS, 1.0, 5, 20, 1,
                                               drift_annual=0.1, compensated=False))
    returns = np.array([0.01, -0.02, 0.005])
    np.testing.assert_array_equal(simulate_paths(BootstrapModel(returns, 2), 10.0, 99.0, 5, 20, 1),
                                  bootstrap_paths(10.0, returns, 5, 20, 1, block_length=2))


def test_antithetic_chunks_hold_their_own_pairs():
    chunks = list(iter_path_chunks(GbmModel(0.5, antithetic=True), 100.0, 1.0, 6, 10, 7, 4))
    assert [c.shape[0] for c in chunks] == [4, 4, 2]
    for chunk in chunks:
        inc = np.diff(np.log(chunk), axis=1)
        half = chunk.shape[0] // 2
        np.testing.assert_allclose(inc[:half] + inc[half:], 2 * (-0.125) / 6, atol=1e-12)


def test_bootstrap_model_is_a_read_only_copy():
    source = np.array([0.01, 0.02])
    model = BootstrapModel(source)
    source[0] = 5.0
    assert model.log_returns_per_step[0] == 0.01
    with pytest.raises(ValueError):
        model.log_returns_per_step[0] = 1.0


# --------------------------------------------------------------------------- edge scenarios


def test_shock_paths_scales_from_the_step_on_and_copies():
    paths = gbm_paths(100.0, 0.5, 1.0, 10, 50, 1)
    shocked = shock_paths(paths, 4, -0.3)
    np.testing.assert_array_equal(shocked[:, :4], paths[:, :4])
    np.testing.assert_allclose(shocked[:, 4:], 0.7 * paths[:, 4:], rtol=1e-15)
    assert not np.shares_memory(shocked, paths)
    for bad in ((11, -0.1), (-1, -0.1), (3, -1.0), (3, np.nan)):
        with pytest.raises(ValueError):
            shock_paths(paths, *bad)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10), st.integers(0, 10), st.floats(-0.9, 2.0), st.floats(-0.9, 2.0))
def test_shocks_compose(step_a, step_b, shock_a, shock_b):
    paths = np.exp(np.linspace(0.0, 1.0, 11))[None, :].repeat(2, axis=0)
    both = shock_paths(shock_paths(paths, step_a, shock_a), step_b, shock_b)
    factor = np.ones(11)
    factor[step_a:] *= 1 + shock_a
    factor[step_b:] *= 1 + shock_b
    np.testing.assert_allclose(both, paths * factor, rtol=1e-13)


# --------------------------------------------------------------------------- books, stress


def test_book_value_is_bs_price_leg_by_leg():
    book = _book()
    spots = np.array([[60_000.0, 95_000.0], [100_000.0, 150_000.0]])
    for kwargs in ({}, {"elapsed_years": 5 / 365, "vol_multiplier": 1.7, "vol_shift": 0.05,
                        "rate_annual": 0.04}, {"elapsed_years": 1.0, "vol_shift": -2.0}):
        value = book_value_usd(book, spots, **kwargs)
        assert value.shape == spots.shape
        by_hand = _book_by_hand(book, spots, kwargs.get("elapsed_years", 0.0),
                                kwargs.get("vol_multiplier", 1.0), kwargs.get("vol_shift", 0.0),
                                kwargs.get("rate_annual", 0.0))
        np.testing.assert_allclose(value, by_hand, rtol=1e-14)
    # Aged past every expiry: coins plus intrinsic values.
    expired = book_value_usd(book, spots, elapsed_years=1.0)
    np.testing.assert_allclose(
        expired, spots + 2 * np.maximum(90_000 - spots, 0) - np.maximum(spots - 110_000, 0)
        + 0.5 * np.maximum(spots - 100_000, 0), rtol=1e-14)
    assert float(book_value_usd(Book(spot_coin=-2.0), 10.0)) == -20.0


@settings(max_examples=40, deadline=None)
@given(st.floats(1e3, 3e5), st.floats(1e3, 3e5), st.floats(0.01, 2.0), st.floats(0.05, 2.0),
       st.floats(-0.05, 0.1))
def test_book_of_long_call_short_put_is_a_forward(spot, strike, expiry, vol, rate):
    book = Book(legs=(OptionLeg(1.0, strike, expiry, True, vol),
                      OptionLeg(-1.0, strike, expiry, False, vol)))
    value = float(book_value_usd(book, spot, rate_annual=rate))
    assert value == pytest.approx(spot - strike * math.exp(-rate * expiry), abs=1e-9 * spot)


def test_stress_scenarios_revalue_exactly_as_bs_price_at_the_shocked_inputs():
    book, spot, rate = _book(), 100_000.0, 0.03
    base = float(_book_by_hand(book, spot, rate=rate))
    results = stress_test(book, spot, rate_annual=rate)
    assert [r.name for r in results] == [s.name for s in STANDARD_SCENARIOS]
    for scenario, result in zip(STANDARD_SCENARIOS, results):
        assert isinstance(result, StressResult)
        pnls = [float(_book_by_hand(book, spot * (1 + shock), h, m, s, rate)) - base
                for shock, m, h, s in zip(scenario.spot_shocks, scenario.vol_multipliers,
                                          scenario.horizons_years, scenario.vol_shifts)]
        assert result.pnl_usd == pytest.approx(pnls[-1], rel=1e-12, abs=1e-6)
        assert result.worst_pnl_usd == pytest.approx(min(pnls), rel=1e-12, abs=1e-6)
        assert result.spot_end_usd == pytest.approx(spot * (1 + scenario.spot_shocks[-1]))
    crash = next(s for s in STANDARD_SCENARIOS if s.name == "btc_-30pct_1d")
    assert crash.spot_shocks == (-0.30,) and crash.horizons_years == (1 / 365,)
    # A crash day on one coin alone loses exactly 30 % of its value.
    only_coin = stress_test(Book(spot_coin=1.0), spot, (crash,))[0]
    assert only_coin.pnl_usd == pytest.approx(-0.30 * spot, rel=1e-12)


def test_stress_scenario_validation_and_single():
    assert StressScenario.single("x", -0.2, 1.5, 0.01, 0.1) == StressScenario(
        "x", (-0.2,), (1.5,), (0.01,), (0.1,))
    assert StressScenario("y", (-0.1, 0.0), (1.0, 1.0), (0.0, 0.1)).vol_shifts == (0.0, 0.0)
    for bad in (dict(spot_shocks=(), vol_multipliers=(), horizons_years=()),
                dict(spot_shocks=(-0.1,), vol_multipliers=(1.0, 1.0), horizons_years=(0.0,)),
                dict(spot_shocks=(-1.0,), vol_multipliers=(1.0,), horizons_years=(0.0,)),
                dict(spot_shocks=(-0.1,), vol_multipliers=(-1.0,), horizons_years=(0.0,)),
                dict(spot_shocks=(-0.1, 0.0), vol_multipliers=(1.0, 1.0),
                     horizons_years=(0.2, 0.1))):
        with pytest.raises(ValueError):
            StressScenario("bad", **bad)


# --------------------------------------------------------------------------- VaR and ES


def test_historical_matches_the_normal_closed_form_on_a_large_normal_sample():
    mean, sd, n = 50.0, 1_000.0, 400_000
    pnl = np.random.default_rng(8).normal(mean, sd, n)
    for confidence in (0.95, 0.99):
        hist = historical_var_es(pnl, confidence)
        exact = normal_var_es(mean, sd, confidence)
        # Quantile standard error sqrt(p (1-p) / n) / density, in P&L units.
        z = stats.norm.ppf(confidence)
        se = sd * math.sqrt(confidence * (1 - confidence) / n) / stats.norm.pdf(z)
        assert abs(hist.var - exact.var) < 4.0 * se
        assert abs(hist.es - exact.es) < 6.0 * se
        assert hist.method == "historical" and hist.confidence == confidence


@settings(max_examples=150, deadline=None)
@given(arrays(np.float64, st.integers(2, 300), elements=st.floats(-1e6, 1e6)),
       st.sampled_from(["0.5", "0.8", "0.9", "0.95", "0.975", "0.99", "0.999"]))
def test_historical_equals_an_exact_rational_reference(pnl, confidence):
    var, es = _exact_historical(pnl, confidence)
    got = historical_var_es(pnl, float(confidence))
    assert got.var == var
    assert got.es == pytest.approx(es, rel=1e-9, abs=1e-6)


def test_historical_textbook_example():
    pnl = -np.arange(1.0, 101.0)  # losses 1..100
    got = historical_var_es(pnl, 0.95)
    assert got.var == 95.0  # the sixth-largest loss
    assert got.es == pytest.approx(np.mean([96, 97, 98, 99, 100]), rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(2, 200), elements=st.floats(-1e6, 1e6)),
       st.floats(0.5, 0.999), st.floats(0.5, 0.999), st.floats(-1e5, 1e5), st.floats(0.01, 100))
def test_var_and_es_are_monotone_translation_and_scale_equivariant(pnl, c1, c2, shift, scale):
    lo, hi = sorted((c1, c2))
    a, b = historical_var_es(pnl, lo), historical_var_es(pnl, hi)
    tol = 1e-9 * (1.0 + np.abs(pnl).max())
    assert a.var <= b.var + tol and a.es <= b.es + tol
    assert a.es >= a.var - tol and b.es >= b.var - tol
    moved = historical_var_es(pnl + shift, lo)
    assert moved.var == pytest.approx(a.var - shift, abs=1e-6 * (1 + abs(shift)) + tol)
    scaled = historical_var_es(pnl * scale, lo)
    assert scaled.var == pytest.approx(a.var * scale, rel=1e-12, abs=tol * scale)
    for estimate in (normal_var_es(0.0, 1.0, lo), normal_var_es(0.0, 1.0, hi)):
        assert estimate.es >= estimate.var
    assert normal_var_es(0.0, 1.0, lo).var <= normal_var_es(0.0, 1.0, hi).var


def test_normal_var_es_against_scipy_and_quadrature():
    for mean, sd, c in ((0.0, 1.0, 0.99), (120.0, 3_000.0, 0.95), (-5.0, 0.5, 0.975)):
        got = normal_var_es(mean, sd, c)
        assert got.var == pytest.approx(-mean + sd * stats.norm.ppf(c), rel=1e-12)
        tail, _ = integrate.quad(lambda x: x * stats.norm.pdf(x), stats.norm.ppf(c), np.inf)
        assert got.es == pytest.approx(-mean + sd * tail / (1 - c), rel=1e-9)
        assert got.method == "normal"
    with pytest.raises(ValueError):
        normal_var_es(0.0, -1.0, 0.99)
    with pytest.raises(ValueError):
        normal_var_es(0.0, 1.0, 1.0)


def _cf_quantile(x, s, k):
    return x + (x * x - 1) * s / 6 + (x**3 - 3 * x) * k / 24 - (2 * x**3 - 5 * x) * s * s / 36


def test_cornish_fisher_reduces_to_normal_and_its_es_is_the_tail_integral():
    for c in (0.9, 0.95, 0.99):
        cf, normal = cornish_fisher_var_es(10.0, 200.0, 0.0, 0.0, c), normal_var_es(10.0, 200.0, c)
        assert (cf.var, cf.es) == pytest.approx((normal.var, normal.es), rel=1e-14)
        assert cf.method == "cornish_fisher"
    for skew_pnl, kurt, c in ((-0.5, 1.0, 0.99), (0.3, 2.5, 0.95), (-0.8, 4.0, 0.975)):
        got = cornish_fisher_var_es(-3.0, 50.0, skew_pnl, kurt, c)
        s, z = -skew_pnl, stats.norm.ppf(c)
        assert got.var == pytest.approx(3.0 + 50.0 * _cf_quantile(z, s, kurt), rel=1e-12)
        integral, _ = integrate.quad(lambda x: _cf_quantile(x, s, kurt) * stats.norm.pdf(x), z,
                                     np.inf)
        assert got.es == pytest.approx(3.0 + 50.0 * integral / (1 - c), rel=1e-8)
    # A fatter left tail of the P&L (negative skew) raises the 99 % VaR.
    assert (cornish_fisher_var_es(0, 1, -0.5, 0, 0.99).var
            > normal_var_es(0, 1, 0.99).var > cornish_fisher_var_es(0, 1, 0.5, 0, 0.99).var)


def test_var_es_dispatch_uses_the_sample_moments():
    pnl = np.random.default_rng(4).standard_t(5, 5_000) * 100 + 3
    assert var_es(pnl, 0.99) == historical_var_es(pnl, 0.99)
    normal = var_es(pnl, 0.99, "normal")
    assert normal == normal_var_es(pnl.mean(), pnl.std(ddof=1), 0.99)
    cf = var_es(pnl, 0.99, "cornish_fisher")
    ref = cornish_fisher_var_es(pnl.mean(), pnl.std(ddof=1), stats.skew(pnl),
                                stats.kurtosis(pnl), 0.99)
    assert (cf.var, cf.es) == pytest.approx((ref.var, ref.es), rel=1e-10)
    flat = var_es(np.full(10, 7.0), 0.95, "cornish_fisher")
    assert (flat.var, flat.es) == pytest.approx((-7.0, -7.0))
    with pytest.raises(ValueError):
        var_es(pnl, 0.99, "garch")
    with pytest.raises(ValueError):
        var_es([1.0], 0.99)


def test_monte_carlo_var_of_a_coin_position_matches_the_lognormal_quantile():
    spot, vol, drift, horizon, coins, c = 100_000.0, 0.6, 0.05, 10 / 365, 2.0, 0.99
    n = 400_000
    terminal = gbm_paths(spot, vol, horizon, 1, n, 17, drift_annual=drift)[:, -1]
    got = monte_carlo_var_es(Book(spot_coin=coins), spot, terminal, horizon, c)
    assert got.method == "monte_carlo" and isinstance(got, RiskEstimate)
    assert got[:2] == historical_var_es(coins * (terminal - spot), c)[:2]
    m, s = (drift - 0.5 * vol**2) * horizon, vol * math.sqrt(horizon)
    z = stats.norm.ppf(1 - c)
    exact_var = coins * spot * (1 - math.exp(m + s * z))
    # Quantile standard error in z units, mapped through the lognormal density.
    se = coins * spot * math.exp(m + s * z) * s * math.sqrt(c * (1 - c) / n) / stats.norm.pdf(z)
    assert abs(got.var - exact_var) < 4.0 * se
    # ES of the lognormal: E[loss | S_T below its quantile], closed form.
    tail_mean_spot = spot * math.exp(drift * horizon) * stats.norm.cdf(z - s) / (1 - c)
    assert got.es == pytest.approx(coins * (spot - tail_mean_spot), rel=0.01)


def test_monte_carlo_var_of_an_option_book_is_full_revaluation():
    book, spot, horizon = _book(), 100_000.0, 2 / 365
    terminal = gbm_paths(spot, 0.5, horizon, 1, 20_000, 18)[:, -1]
    got = monte_carlo_var_es(book, spot, terminal, horizon, 0.975, rate_annual=0.02,
                             vol_multiplier=1.2)
    pnl = (_book_by_hand(book, terminal, horizon, 1.2, 0.0, 0.02)
           - float(_book_by_hand(book, spot, rate=0.02)))
    ref = historical_var_es(pnl, 0.975)
    assert (got.var, got.es) == pytest.approx((ref.var, ref.es), rel=1e-12)


# --------------------------------------------------------------------------- policy outcomes


def test_policy_outcome_accounting_identities_and_fair_premium():
    spot, vol, T, strike, amount = 100_000.0, 0.6, 30 / 365, 90_000.0, 2.5
    premium = policy_premium_usd(amount, spot, strike, T, vol)
    assert premium == pytest.approx(amount * float(bs_price(spot, strike, T, 0.0, vol, False)))
    policy = PutPolicy(amount, strike, T, premium)
    paths = gbm_paths(spot, vol, T, 30, 100_000, 23)
    out = simulate_policy_outcome(policy, paths, confidence=0.99)
    assert isinstance(out, PolicyOutcome)
    terminal = paths[:, -1]
    np.testing.assert_allclose(out.payoff_usd, amount * np.maximum(strike - terminal, 0), rtol=0)
    np.testing.assert_allclose(out.buyer_pnl_usd, out.payoff_usd - premium, rtol=1e-15)
    np.testing.assert_array_equal(out.seller_pnl_usd, -out.buyer_pnl_usd)
    np.testing.assert_allclose(out.unprotected_value_usd, amount * terminal, rtol=1e-15)
    np.testing.assert_allclose(out.protected_value_usd,
                               amount * np.maximum(terminal, strike) - premium, rtol=1e-12)
    assert np.all(out.protected_value_usd >= amount * strike - premium - 1e-6)
    assert out.probability_exercise == np.mean(terminal < strike)
    assert out.probability_touch == np.mean(paths.min(axis=1) <= strike)
    assert out.probability_touch >= out.probability_exercise
    # Risk-neutral paths at r = 0: the fair premium is the expected payoff.
    assert abs(out.expected_payoff_usd - premium) < 3.0 * out.expected_payoff_stderr_usd
    assert out.expected_payoff_stderr_usd == pytest.approx(
        out.payoff_usd.std(ddof=1) / math.sqrt(100_000))
    np.testing.assert_allclose(out.seller_pnl_percentiles_usd,
                               np.percentile(premium - out.payoff_usd, out.percentiles))
    np.testing.assert_allclose(out.buyer_pnl_percentiles_usd,
                               np.percentile(out.buyer_pnl_usd, out.percentiles))
    np.testing.assert_allclose(out.payoff_percentiles_usd,
                               np.percentile(out.payoff_usd, out.percentiles))
    assert out.seller_risk == historical_var_es(out.seller_pnl_usd, 0.99)
    assert out.seller_risk.var <= out.seller_risk.es


def test_policy_validation():
    for bad in ((0.0, 1.0, 1.0, 1.0), (1.0, -1.0, 1.0, 1.0), (1.0, 1.0, 0.0, 1.0),
                (1.0, 1.0, 1.0, -1.0)):
        with pytest.raises(ValueError):
            PutPolicy(*bad)
    policy = PutPolicy(1.0, 100.0, 0.1, 2.0)
    with pytest.raises(ValueError):
        simulate_policy_outcome(policy, np.ones((1, 5)))
    with pytest.raises(ValueError):
        simulate_policy_outcome(policy, -np.ones((3, 5)))
    with pytest.raises(ValueError):
        simulate_policy_outcome(policy, np.ones((3, 5)), percentiles=(101.0,))


# --------------------------------------------------------------------------- chart data


def test_chart_data_shapes_and_contents():
    spot, T, n_steps, n = 100.0, 0.25, 20, 5_000
    paths = gbm_paths(spot, 0.7, T, n_steps, n, 31)
    fan = percentile_fan(paths, T)
    assert fan["time_years"].shape == (n_steps + 1,)
    assert fan["time_years"][0] == 0.0 and fan["time_years"][-1] == pytest.approx(T)
    assert fan["price_usd"].shape == (5, n_steps + 1)
    np.testing.assert_array_equal(fan["price_usd"][:, 0], spot)
    assert np.all(np.diff(fan["price_usd"], axis=0) >= 0.0)
    np.testing.assert_allclose(fan["price_usd"][2], np.median(paths, axis=0))

    hist = histogram_data(paths[:, -1], bins=40)
    assert hist["edges"].shape == (41,) and hist["counts"].shape == (40,)
    assert hist["counts"].sum() == n and hist["share"].sum() == pytest.approx(1.0)
    clipped = histogram_data(paths[:, -1], bins=10, value_range=(90.0, 110.0))
    assert clipped["counts"].sum() == np.sum((paths[:, -1] >= 90) & (paths[:, -1] <= 110))

    policy = PutPolicy(1.0, 95.0, T, policy_premium_usd(1.0, spot, 95.0, T, 0.7))
    outcome = simulate_policy_outcome(policy, paths)
    chart = outcome_chart_data(outcome, paths, T, bins=30)
    assert set(chart) == {"fan", "buyer_pnl_histogram", "seller_pnl_histogram",
                          "payoff_histogram", "summary"}
    for key in ("buyer_pnl_histogram", "seller_pnl_histogram", "payoff_histogram"):
        assert chart[key]["counts"].shape == (30,) and chart[key]["counts"].sum() == n
    summary = chart["summary"]
    assert summary["seller_var_usd"] == outcome.seller_risk.var
    assert summary["percentiles"].shape == outcome.buyer_pnl_percentiles_usd.shape == (9,)
    for bad in (lambda: percentile_fan(paths[0], T), lambda: percentile_fan(paths, T, (120.0,)),
                lambda: histogram_data([], 5), lambda: histogram_data([1.0], 0)):
        with pytest.raises(ValueError):
            bad()
