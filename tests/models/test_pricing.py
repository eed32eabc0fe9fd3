"""Black-Scholes and Black-76 prices, greeks and implied volatility: closed forms, QuantLib,
vollib, mpmath at 40 digits, parity, finite differences, broadcasting and the degenerate limits."""

from __future__ import annotations

import math
import warnings

import mpmath as mp
import numpy as np
import pytest
import QuantLib as ql
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtr
from vollib.black_scholes import black_scholes as vollib_price
from vollib.black_scholes.implied_volatility import implied_volatility as vollib_implied_vol

from models.pricing import (
    _OPTIONS_PER_THREAD,
    _SMALL_T,
    Greeks,
    _exp,
    _log,
    _norm_cdf_given_density,
    _normalised_black_vega,
    black76_greeks,
    black76_implied_vol,
    black76_price,
    black76_price_greeks,
    bs_greeks,
    bs_price,
    bs_price_greeks,
    implied_vol,
)

HOUR = 1.0 / (365.0 * 24.0)
EPS = np.finfo(np.float64).eps


def _norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _bs_reference(S, K, T, r, sigma, call):
    """Textbook Black-Scholes with math.erfc (an independent implementation)."""
    d1 = (math.log(S / K) + (r + 0.5 * sigma**2) * T) / (sigma * math.sqrt(T))
    d2 = d1 - sigma * math.sqrt(T)
    if call:
        return S * _norm_cdf(d1) - K * math.exp(-r * T) * _norm_cdf(d2)
    return K * math.exp(-r * T) * _norm_cdf(-d2) - S * _norm_cdf(-d1)


def test_textbook_values():
    # Hull's classic example: S=K=100, T=1, r=5 %, sigma=20 %: call 10.4506, put 5.5735.
    call, put = 10.450583572185565, 5.573526022256971
    assert bs_price(100.0, 100.0, 1.0, 0.05, 0.2, True) == pytest.approx(call, abs=1e-10)
    assert bs_price(100.0, 100.0, 1.0, 0.05, 0.2, False) == pytest.approx(put, abs=1e-10)
    # Black-76 on the forward F = S e^{rT} is the same option.
    F = 100.0 * math.exp(0.05)
    assert black76_price(F, 100.0, 1.0, 0.05, 0.2, True) == pytest.approx(call, abs=1e-10)


def test_against_an_independent_implementation():
    rng = np.random.default_rng(1)
    for _ in range(200):
        S, K = rng.uniform(50, 150), rng.uniform(50, 150)
        T, r, sigma = rng.uniform(0.01, 3), rng.uniform(-0.02, 0.1), rng.uniform(0.05, 1.5)
        call = bool(rng.random() < 0.5)
        assert bs_price(S, K, T, r, sigma, call) == pytest.approx(
            _bs_reference(S, K, T, r, sigma, call), rel=1e-10, abs=1e-10)


def test_put_call_parity_vectorized():
    rng = np.random.default_rng(2)
    n = 10_000
    S, K = rng.uniform(10, 200, n), rng.uniform(10, 200, n)
    T, r, sigma = rng.uniform(0.001, 5, n), rng.uniform(-0.05, 0.15, n), rng.uniform(0.01, 2.0, n)
    c, p = bs_price(S, K, T, r, sigma, True), bs_price(S, K, T, r, sigma, False)
    np.testing.assert_allclose(c - p, S - K * np.exp(-r * T), atol=1e-9 * S.max())
    F = S * np.exp(r * T)
    c76, p76 = black76_price(F, K, T, r, sigma, True), black76_price(F, K, T, r, sigma, False)
    np.testing.assert_allclose(c76 - p76, np.exp(-r * T) * (F - K), atol=1e-9 * F.max())
    np.testing.assert_allclose(c76, c, rtol=1e-10, atol=1e-10)


def test_broadcasting_and_scalars():
    K = np.array([80.0, 100.0, 120.0])[:, None]
    T = np.array([0.1, 0.5, 1.0, 2.0])
    prices = bs_price(100.0, K, T, 0.01, 0.3, np.array([True, False, True, False]))
    assert prices.shape == (3, 4)
    g = bs_greeks(100.0, K, T, 0.01, 0.3, True)
    assert isinstance(g, Greeks) and all(v.shape == (3, 4) for v in g)
    scalar = bs_price(100.0, 100.0, 1.0, 0.0, 0.2, True)
    assert np.ndim(scalar) == 0 and isinstance(float(scalar), float)
    assert np.ndim(black76_greeks(100.0, 90.0, 0.5, 0.0, 0.4, False).delta) == 0


@pytest.mark.parametrize("call", [True, False])
def test_bs_greeks_match_finite_differences(call):
    S, K, T, r, sigma = 97.0, 100.0, 0.75, 0.03, 0.45
    g = bs_greeks(S, K, T, r, sigma, call)

    def price(S=S, T=T, r=r, sigma=sigma):
        return float(bs_price(S, K, T, r, sigma, call))

    h = 1e-3
    assert g.delta == pytest.approx((price(S=S + h) - price(S=S - h)) / (2 * h), rel=1e-6)
    assert g.gamma == pytest.approx(
        (price(S=S + h) - 2 * price() + price(S=S - h)) / h**2, rel=1e-4)
    assert g.vega == pytest.approx((price(sigma=sigma + 1e-5) - price(sigma=sigma - 1e-5)) / 2e-5,
                                   rel=1e-6)
    # theta per year = -dV/dT
    assert g.theta == pytest.approx(-(price(T=T + 1e-5) - price(T=T - 1e-5)) / 2e-5, rel=1e-5)
    assert g.rho == pytest.approx((price(r=r + 1e-6) - price(r=r - 1e-6)) / 2e-6, rel=1e-5)
    # closed forms
    d1 = (math.log(S / K) + (r + 0.5 * sigma**2) * T) / (sigma * math.sqrt(T))
    pdf = math.exp(-0.5 * d1 * d1) / math.sqrt(2 * math.pi)
    assert g.delta == pytest.approx(_norm_cdf(d1) - (0.0 if call else 1.0), rel=1e-12)
    assert g.gamma == pytest.approx(pdf / (S * sigma * math.sqrt(T)), rel=1e-12)
    assert g.vega == pytest.approx(S * pdf * math.sqrt(T), rel=1e-12)


@pytest.mark.parametrize("call", [True, False])
def test_black76_greeks_match_finite_differences(call):
    F, K, T, r, sigma = 98_000.0, 90_000.0, 0.2, 0.04, 0.6
    g = black76_greeks(F, K, T, r, sigma, call)

    def price(F=F, T=T, r=r, sigma=sigma):
        return float(black76_price(F, K, T, r, sigma, call))

    h = 1.0
    assert g.delta == pytest.approx((price(F=F + h) - price(F=F - h)) / (2 * h), rel=1e-6)
    assert g.gamma == pytest.approx((price(F=F + 10) - 2 * price() + price(F=F - 10)) / 100,
                                    rel=1e-4)
    assert g.vega == pytest.approx((price(sigma=sigma + 1e-6) - price(sigma=sigma - 1e-6)) / 2e-6,
                                   rel=1e-6)
    assert g.theta == pytest.approx(-(price(T=T + 1e-6) - price(T=T - 1e-6)) / 2e-6, rel=1e-5)
    assert g.rho == pytest.approx((price(r=r + 1e-6) - price(r=r - 1e-6)) / 2e-6, rel=1e-5)
    assert g.rho == pytest.approx(-T * price(), rel=1e-12)


def test_degenerate_limits_and_invalid_inputs():
    # At expiry: intrinsic value, step delta, no gamma or vega.
    assert bs_price(110.0, 100.0, 0.0, 0.05, 0.3, True) == pytest.approx(10.0)
    assert bs_price(90.0, 100.0, 0.0, 0.05, 0.3, False) == pytest.approx(10.0)
    assert bs_price(90.0, 100.0, 0.0, 0.05, 0.3, True) == 0.0
    g = bs_greeks(110.0, 100.0, 0.0, 0.05, 0.3, True)
    assert (g.delta, g.gamma, g.vega) == (1.0, 0.0, 0.0)
    assert bs_greeks(100.0, 100.0, 0.0, 0.0, 0.3, True).delta == 0.5
    # Zero vol: discounted intrinsic on the forward.
    assert bs_price(100.0, 100.0, 1.0, 0.05, 0.0, True) == pytest.approx(
        100 - 100 * math.exp(-0.05))
    g0 = bs_greeks(100.0, 100.0, 1.0, 0.05, 0.0, True)
    assert g0.theta == pytest.approx(-0.05 * 100 * math.exp(-0.05))
    assert g0.rho == pytest.approx(100 * math.exp(-0.05))
    # Outside the model: NaN, never an exception.
    out = bs_price(np.array([-1.0, 100.0, 100.0]), 100.0, np.array([1.0, -1.0, 1.0]), 0.0,
                   np.array([0.2, 0.2, np.nan]), True)
    assert np.isnan(out).all()
    assert np.isnan(black76_greeks(100.0, -5.0, 1.0, 0.0, 0.2, True).delta)


@settings(max_examples=200, deadline=None)
@given(S=st.floats(1.0, 1e6), k=st.floats(0.2, 5.0), T=st.floats(1e-4, 10.0),
       r=st.floats(-0.05, 0.2), sigma=st.floats(1e-3, 3.0), call=st.booleans())
def test_no_arbitrage_bounds(S, k, T, r, sigma, call):
    K = S * k
    price = float(bs_price(S, K, T, r, sigma, call))
    df = math.exp(-r * T)
    tol = 1e-9 * max(S, K)
    if call:
        assert max(S - K * df, 0.0) - tol <= price <= S + tol
    else:
        assert max(K * df - S, 0.0) - tol <= price <= K * df + tol
    g = bs_greeks(S, K, T, r, sigma, call)
    assert g.gamma >= 0.0 and g.vega >= 0.0
    assert (0.0 <= g.delta <= 1.0) if call else (-1.0 <= g.delta <= 0.0)


# --------------------------------------------------------------------------- price and greeks


def _random_options(rng, n):
    S = rng.uniform(10.0, 200.0, n)
    K = S * np.exp(rng.uniform(-0.6, 0.6, n))
    T = rng.uniform(0.01, 3.0, n)
    r = rng.uniform(-0.02, 0.1, n)
    sigma = rng.uniform(0.05, 1.5, n)
    call = rng.random(n) < 0.5
    return S, K, T, r, sigma, call


def test_a_degenerate_option_in_a_batch_changes_nothing_for_the_others():
    """The same options alone and beside one degenerate option (expired, or zero vol) price
    alike: each option is computed on its own, whatever shares its batch. Prices (price-only and
    one-pass) and greeks agree."""
    S, K, T, r, sigma, call = _random_options(np.random.default_rng(10), 5_000)
    fast_price, fast = bs_price_greeks(S, K, T, r, sigma, call)
    with_expired = [np.r_[a, b] for a, b in zip((S, K, T, r, sigma, call),
                                                (100.0, 90.0, 0.0, 0.01, 0.3, True))]
    masked_price, masked = bs_price_greeks(*with_expired)
    np.testing.assert_array_equal(masked_price[:-1], fast_price)
    np.testing.assert_array_equal(bs_price(*with_expired)[:-1], fast_price)
    assert masked_price[-1] == pytest.approx(10.0)
    for name, a, b in zip(Greeks._fields, masked, fast):
        np.testing.assert_allclose(a[:-1], b, rtol=1e-15, atol=1e-300, err_msg=name)
    F = S * np.exp(r * T)
    fast_price, fast = black76_price_greeks(F, K, T, r, sigma, call)
    with_zero_vol = [np.r_[a, b] for a, b in zip((F, K, T, r, sigma, call),
                                                 (100.0, 90.0, 1.0, 0.0, 0.0, False))]
    masked_price, masked = black76_price_greeks(*with_zero_vol)
    np.testing.assert_array_equal(masked_price[:-1], fast_price)
    np.testing.assert_array_equal(black76_price(*with_zero_vol)[:-1], fast_price)
    for name, a, b in zip(Greeks._fields, masked, fast):
        np.testing.assert_allclose(a[:-1], b, rtol=1e-15, atol=1e-300, err_msg=name)


def test_against_quantlib_black_calculator():
    rng = np.random.default_rng(11)
    S, K, T, r, sigma, call = _random_options(rng, 200)
    for i in range(len(S)):
        F = S[i] * math.exp(r[i] * T[i])
        df = math.exp(-r[i] * T[i])
        kind = ql.Option.Call if call[i] else ql.Option.Put
        stdev = sigma[i] * math.sqrt(T[i])
        bc = ql.BlackCalculator(ql.PlainVanillaPayoff(kind, K[i]), F, stdev, df)
        price, g = bs_price_greeks(S[i], K[i], T[i], r[i], sigma[i], call[i])
        scale = S[i] + K[i]
        assert price == pytest.approx(bc.value(), rel=1e-12, abs=1e-13 * scale)
        assert g.delta == pytest.approx(bc.delta(S[i]), rel=1e-11, abs=1e-14)
        assert g.gamma == pytest.approx(bc.gamma(S[i]), rel=1e-11, abs=1e-16)
        assert g.vega == pytest.approx(bc.vega(T[i]), rel=1e-11, abs=1e-13 * scale)
        assert g.theta == pytest.approx(bc.theta(S[i], T[i]), rel=1e-9, abs=1e-12 * scale)
        assert g.rho == pytest.approx(bc.rho(T[i]), rel=1e-11, abs=1e-13 * scale)
        price, g = black76_price_greeks(F, K[i], T[i], r[i], sigma[i], call[i])
        assert price == pytest.approx(bc.value(), rel=1e-12, abs=1e-13 * scale)
        assert g.delta == pytest.approx(bc.deltaForward(), rel=1e-11, abs=1e-14)
        assert g.gamma == pytest.approx(bc.gammaForward(), rel=1e-11, abs=1e-16)
        assert g.vega == pytest.approx(bc.vega(T[i]), rel=1e-11, abs=1e-13 * scale)


@pytest.mark.parametrize("model", ["bs", "black76"])
def test_every_one_pass_greek_matches_finite_differences(model):
    rng = np.random.default_rng(12 if model == "bs" else 13)
    price_of = bs_price if model == "bs" else black76_price
    one_pass = bs_price_greeks if model == "bs" else black76_price_greeks
    for S, K, T, r, sigma, call in zip(*_random_options(rng, 20)):
        price, g = one_pass(S, K, T, r, sigma, call)

        def p(S=S, T=T, r=r, sigma=sigma):
            return float(price_of(S, K, T, r, sigma, call))

        hs, hv, ht, hr = 1e-4 * S, 1e-6, 1e-6, 1e-6
        assert price == p()
        assert g.delta == pytest.approx((p(S=S + hs) - p(S=S - hs)) / (2 * hs), rel=1e-6, abs=1e-9)
        fd_gamma = (p(S=S + 10 * hs) - 2 * p() + p(S=S - 10 * hs)) / (10 * hs) ** 2
        assert g.gamma == pytest.approx(fd_gamma, rel=1e-4, abs=1e-7 / S)
        assert g.vega == pytest.approx((p(sigma=sigma + hv) - p(sigma=sigma - hv)) / (2 * hv),
                                       rel=1e-6, abs=1e-7 * S)
        assert g.theta == pytest.approx(-(p(T=T + ht) - p(T=T - ht)) / (2 * ht), rel=1e-5,
                                        abs=1e-6 * S)
        assert g.rho == pytest.approx((p(r=r + hr) - p(r=r - hr)) / (2 * hr), rel=1e-6,
                                      abs=1e-7 * S)


@settings(max_examples=100, deadline=None)
@given(S=st.floats(1.0, 1e5), k=st.floats(-1.0, 1.0), T=st.floats(1e-3, 5.0),
       r=st.floats(-0.05, 0.2), sigma=st.floats(0.01, 3.0))
def test_put_call_parity_of_one_pass_prices_and_greeks(S, k, T, r, sigma):
    K = S * math.exp(k)
    c, gc = bs_price_greeks(S, K, T, r, sigma, True)
    p, gp = bs_price_greeks(S, K, T, r, sigma, False)
    df = math.exp(-r * T)
    assert c - p == pytest.approx(S - K * df, abs=1e-9 * (S + K))
    assert gc.delta - gp.delta == pytest.approx(1.0, abs=1e-12)
    assert gc.gamma == pytest.approx(gp.gamma, rel=1e-12, abs=1e-300)
    assert gc.vega == pytest.approx(gp.vega, rel=1e-12, abs=1e-300)
    assert gc.theta - gp.theta == pytest.approx(-r * K * df, rel=1e-8, abs=1e-9 * (S + K))
    assert gc.rho - gp.rho == pytest.approx(K * T * df, rel=1e-8, abs=1e-9 * (S + K))


# --------------------------------------------------------------------------- the compiled kernel


def _numpy_formulas(x, K, T, r, sigma, call, on_spot, forward_ulps=0.0):
    """Price, delta, gamma, vega, theta, rho by the closed forms in plain numpy (scipy's ndtr,
    the limits by np.where; the implementation the compiled kernel replaced), Black-Scholes on
    spot ``x`` or Black-76 on forward ``x``, with the forward ``x e^{rT}`` moved by
    ``forward_ulps``. Also, per output, the size of the terms it is computed from: rounding errors
    are relative to that, not to a result that is small through cancellation."""
    *numbers, call = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (x, K, T, r, sigma)), np.asarray(call, bool))
    x, K, T, r, sigma = numbers
    with np.errstate(all="ignore"):
        df, growth = np.exp(-r * T), np.exp(r * T)
        F = x * growth * (1.0 + forward_ulps * EPS) if on_spot else x
        sign = np.where(call, 1.0, -1.0)
        sqrt_t = np.sqrt(T)
        stdev = sigma * sqrt_t
        smooth = (stdev > 0.0) & (F > 0.0) & (K > 0.0)
        d1 = np.log(F / K) / stdev + 0.5 * stdev
        d2 = d1 - stdev
        n1, n2 = ndtr(sign * d1), ndtr(sign * d2)
        pdf = np.exp(-0.5 * d1 * d1) / math.sqrt(2.0 * math.pi)
        intrinsic = np.maximum(sign * (F - K), 0.0)
        step = np.where(F > K, 1.0, np.where(F < K, 0.0, 0.5))
        undiscounted = np.where(smooth, np.maximum(sign * (F * n1 - K * n2), intrinsic),
                                intrinsic)
        delta_f = np.where(smooth, sign * n1, np.where(call, step, step - 1.0))
        gamma_f = np.where(smooth, pdf / (F * stdev), 0.0)
        vega_f = np.where(smooth, F * pdf * sqrt_t, 0.0)
        dprice_dt = np.where(smooth, F * pdf * sigma / (2.0 * sqrt_t), 0.0)
        n2 = np.where(smooth, n2, np.where(sign * (F - K) > 0.0, 1.0, np.where(F == K, 0.5, 0.0)))
        price = df * undiscounted
        price_terms = np.where(smooth, df * (F * n1 + K * n2), np.abs(price))
        if on_spot:
            k_term = sign * K * df * n2
            values = (price, delta_f, gamma_f * growth, df * vega_f,
                      -df * dprice_dt - r * k_term, T * k_term)
            theta_terms = df * dprice_dt + np.abs(r * k_term)
            scales = (price_terms, *np.abs(values[1:4]), theta_terms, np.abs(values[5]))
        else:
            values = (price, df * delta_f, df * gamma_f, df * vega_f, r * price - df * dprice_dt,
                      -T * price)
            theta_terms = np.abs(r) * price_terms + df * dprice_dt
            scales = (price_terms, *np.abs(values[1:4]), theta_terms, T * price_terms)
        bad = ~((x >= 0.0) & (K >= 0.0) & (T >= 0.0) & (sigma >= 0.0) & np.isfinite(r))
    return [np.where(bad, np.nan, v) for v in values], scales


def _assert_matches_the_numpy_formulas(price, greeks, x, K, T, r, sigma, call, on_spot):
    """Each output within 2e-14 of the size of its terms of the numpy formulas, NaN exactly where
    they are NaN. On spot, also within what 4 ulps of the forward ``x e^{rT}`` move the formulas:
    numpy's exp and the kernel's are each within an ulp, and d1 moves by eps / stdev per ulp."""
    reference, scales = _numpy_formulas(x, K, T, r, sigma, call, on_spot)
    tolerances = [2e-14 * scale for scale in scales]
    if on_spot:
        for ulps in (-4.0, 4.0):
            moved, _ = _numpy_formulas(x, K, T, r, sigma, call, on_spot, ulps)
            tolerances = [t + np.abs(m - ref) for t, m, ref in zip(tolerances, moved, reference)]
    for name, ours, ref, tol in zip(("price", *Greeks._fields), (price, *greeks), reference,
                                    tolerances):
        assert np.shape(ours) == ref.shape, name
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref), err_msg=name)
        finite = ~np.isnan(ref)
        excess = np.abs(ours - ref)[finite] - np.broadcast_to(tol, ref.shape)[finite]
        assert np.all(excess <= 0.0), (name, float(np.max(excess)))


@pytest.mark.parametrize("model", ["bs", "black76"])
def test_the_kernel_equals_the_numpy_formulas_with_degenerate_and_invalid_inputs(model):
    """Strikes within 4 standard deviations of the forward (further out, N(d) loses ~d^2 ulps in
    any implementation), with the degenerate limits and the invalid inputs mixed in."""
    on_spot = model == "bs"
    one_pass = bs_price_greeks if on_spot else black76_price_greeks
    rng = np.random.default_rng(30 if on_spot else 31)
    n = 20_000
    x = np.exp(rng.uniform(0.0, np.log(1e5), n))
    T = np.exp(rng.uniform(np.log(1e-3), np.log(3.0), n))
    sigma = np.exp(rng.uniform(np.log(0.02), np.log(2.0), n))
    r = rng.uniform(-0.05, 0.2, n)
    forward = x * np.exp(r * T) if on_spot else x
    K = forward * np.exp(rng.uniform(-4.0, 4.0, n) * sigma * np.sqrt(T))
    call = rng.random(n) < 0.5
    T[::13] = 0.0  # at expiry
    sigma[::17] = 0.0  # no volatility
    x[::19] = 0.0
    K[::23] = 0.0
    T[7::29], K[7::29] = 0.0, x[7::29]  # at the money at expiry: delta 1/2
    x[1::31] = -1.0
    K[2::37] = np.nan
    T[3::41] = -0.5
    sigma[4::43] = np.nan
    r[5::47] = np.inf
    r[6::53] = np.nan
    price, greeks = one_pass(x, K, T, r, sigma, call)
    _assert_matches_the_numpy_formulas(price, greeks, x, K, T, r, sigma, call, on_spot)
    assert np.any(greeks.delta == 0.5) or np.any(greeks.delta == -0.5)
    # The price alone is the one-pass price, bit for bit.
    price_only = (bs_price if on_spot else black76_price)(x, K, T, r, sigma, call)
    np.testing.assert_array_equal(price_only, price)


@pytest.mark.parametrize("model", ["bs", "black76"])
def test_the_kernel_broadcasts_like_the_numpy_formulas(model):
    on_spot = model == "bs"
    one_pass = bs_price_greeks if on_spot else black76_price_greeks
    rng = np.random.default_rng(32)
    x = rng.uniform(80.0, 125.0, (5, 1, 1))
    K = rng.uniform(80.0, 125.0, (1, 4, 1))
    T = np.array([0.0, 0.5, 1.0])
    sigma = rng.uniform(0.3, 1.0, (4, 1))
    call = np.array([True, False, True])
    price, greeks = one_pass(x, K, T, 0.02, sigma, call)
    assert price.shape == (5, 4, 3) and all(g.shape == (5, 4, 3) for g in greeks)
    _assert_matches_the_numpy_formulas(price, greeks, x, K, T, 0.02, sigma, call, on_spot)
    # Non-contiguous, read-only, integer inputs.
    strided = np.broadcast_to(x, (5, 4, 3))[:, ::2, ::2]
    price, greeks = one_pass(strided, 100, T[::2], 0, 0.4, [1, 0])
    _assert_matches_the_numpy_formulas(price, greeks, strided, 100, T[::2], 0, 0.4, [1, 0],
                                       on_spot)
    # Scalars in, numpy scalars out.
    price, greeks = one_pass(100.0, 90.0, 0.5, 0.01, 0.3, False)
    assert all(isinstance(v, np.float64) for v in (price, *greeks))
    _assert_matches_the_numpy_formulas(price, greeks, 100.0, 90.0, 0.5, 0.01, 0.3, False,
                                       on_spot)
    assert one_pass(np.empty((0, 2)), 100.0, 1.0, 0.0, 0.3, True)[0].shape == (0, 2)


def test_large_batches_split_over_threads_give_the_same_prices_and_greeks():
    S, K, T, r, sigma, call = _random_options(np.random.default_rng(33),
                                              2 * _OPTIONS_PER_THREAD + 12_345)
    price, greeks = bs_price_greeks(S, K, T, r, sigma, call)
    step = _OPTIONS_PER_THREAD // 3  # below the threading threshold: one thread each
    pieces = [bs_price_greeks(*(a[i:i + step] for a in (S, K, T, r, sigma, call)))
              for i in range(0, len(S), step)]
    np.testing.assert_array_equal(price, np.concatenate([p for p, _ in pieces]))
    for j, name in enumerate(Greeks._fields):
        np.testing.assert_array_equal(greeks[j], np.concatenate([g[j] for _, g in pieces]),
                                      err_msg=name)


def _ulps(ours: np.ndarray, exact: np.ndarray) -> np.ndarray:
    return np.abs(ours - exact) / np.spacing(np.abs(exact))


def test_the_kernels_exp_is_within_an_ulp_and_handles_the_edges():
    rng = np.random.default_rng(34)
    x = np.r_[np.linspace(-708.0, 709.7, 3001), rng.uniform(-5.0, 5.0, 2000), 0.0, 1e-300]
    ours = np.array([_exp(v) for v in x])
    exact = np.array([float(mp.exp(mp.mpf(v))) for v in x])
    assert np.max(_ulps(ours, exact)) <= 1.0
    # Gradual underflow to 0, overflow to inf, NaN kept.
    edges = np.array([-745.0, -740.0, -720.0, -745.2, -746.0, -1e300, -np.inf, 709.78, 709.79,
                      1e300, np.inf])
    with np.errstate(over="ignore", under="ignore"):
        np.testing.assert_allclose([_exp(v) for v in edges], np.exp(edges), rtol=1e-12,
                                   atol=1e-323)
    assert np.isnan(_exp(np.nan))


def test_the_kernels_log_is_within_two_ulps_and_handles_the_edges():
    rng = np.random.default_rng(35)
    x = np.r_[np.exp(rng.uniform(-744.0, 709.0, 3000)), 1.0 + EPS * np.arange(-50, 50),
              rng.uniform(0.5, 2.0, 1000), 5e-324, 1e-310, 2.2250738585072014e-308,
              2.225073858507201e-308, np.finfo(float).max]
    ours = np.array([_log(v) for v in x])
    exact = np.array([float(mp.log(mp.mpf(v))) for v in x])
    exact_zero = exact == 0.0
    assert np.all(ours[exact_zero] == 0.0)
    assert np.max(_ulps(ours[~exact_zero], exact[~exact_zero])) <= 2.0
    assert _log(0.0) == -np.inf and _log(np.inf) == np.inf
    assert all(np.isnan(_log(v)) for v in (-1.0, -np.inf, np.nan))


def test_the_kernels_normal_cdf_is_as_accurate_as_its_exponential_allows():
    """N(x) from Cody's rationals and exp(-x^2/2): the exponential of a rounded -x^2/2 loses
    ~x^2/2 ulps, as in scipy's ndtr; within (x^2/2 + 8) ulps of 40 digits, down to N ~ 1e-300."""
    rng = np.random.default_rng(36)
    x = np.r_[np.linspace(-37.0, 8.0, 2001), rng.normal(0.0, 3.0, 1000), 0.0, 0.66291, 5.6569]
    ours = np.array([_norm_cdf_given_density(v, math.exp(-0.5 * v * v)) for v in x])
    exact = np.array([float(mp.ncdf(mp.mpf(v))) for v in x])
    error = np.abs(ours - exact) / exact
    assert np.all(error <= (0.5 * x * x + 8.0) * EPS), float(np.max(error / ((0.5 * x * x + 8.0)
                                                                               * EPS)))
    assert _norm_cdf_given_density(-np.inf, 0.0) == 0.0
    assert _norm_cdf_given_density(np.inf, 0.0) == 1.0


# --------------------------------------------------------------------------- implied volatility

mp.mp.dps = 40


def _mp_black(F, K, stdev, call):
    """Undiscounted Black-76 at 40 digits (F, K floats; stdev = sigma sqrt T as an mpf)."""
    F, K = mp.mpf(F), mp.mpf(K)
    d1 = mp.log(F / K) / stdev + stdev / 2
    d2 = d1 - stdev
    if call:
        return F * mp.ncdf(d1) - K * mp.ncdf(d2)
    return K * mp.ncdf(-d2) - F * mp.ncdf(-d1)


def _domain(rng, n):
    """Out-of-the-money options over the accuracy domain: 1 hour to 2 years, 5 % to 500 % vol,
    strikes up to 12 standard deviations either side of the forward, plus its corners."""
    T = np.exp(rng.uniform(np.log(HOUR), np.log(2.0), n))
    sigma = np.exp(rng.uniform(np.log(0.05), np.log(5.0), n))
    z = rng.uniform(-12.0, 12.0, n)
    corners = [(t, s, zz) for t in (HOUR, 2.0) for s in (0.05, 5.0)
               for zz in (-12.0, -6.0, -1e-3, 0.0, 1e-3, 6.0, 12.0)]
    T = np.r_[T, [c[0] for c in corners]]
    sigma = np.r_[sigma, [c[1] for c in corners]]
    z = np.r_[z, [c[2] for c in corners]]
    F = np.exp(rng.uniform(0.0, np.log(1e5), len(T)))
    K = F * np.exp(z * sigma * np.sqrt(T))
    return F, K, T, sigma, K >= F


def _mp_implied_vol(target, F, K, T, call, discount, guess):
    """The volatility whose 40-digit price is exactly ``target`` (a float), by findroot on the
    log price in a tight bracket around the generating volatility."""
    sqrt_t = mp.sqrt(mp.mpf(T))
    log_target = mp.log(mp.mpf(target))

    def f(vol):
        return mp.log(discount * _mp_black(F, K, vol * sqrt_t, call)) - log_target

    lo, hi = mp.mpf(guess) * (1 - mp.mpf("1e-8")), mp.mpf(guess) * (1 + mp.mpf("1e-8"))
    return float(mp.findroot(f, (lo, hi), solver="anderson"))


def test_normalised_black_keeps_its_precision_in_all_four_regions():
    """b(x, s) = Phi(x/s + s/2) e^{x/2} - Phi(x/s - s/2) e^{-x/2} and its vega, the function LBR
    inverts, against 40 digits: the asymptotic (h = x/s < -10), small-t (s/2 < 0.21), plain and
    erfcx forms each keep ~1e-13 relative precision where the two terms nearly cancel."""
    rng = np.random.default_rng(26)
    worst = {}
    for _ in range(800):
        s = 10 ** rng.uniform(-3.5, 1.2)
        x = -rng.uniform(0.0, 14.0) * s
        b, vega = _normalised_black_vega(x, s)
        X, S = mp.mpf(x), mp.mpf(s)
        exact = mp.ncdf(X / S + S / 2) * mp.exp(X / 2) - mp.ncdf(X / S - S / 2) * mp.exp(-X / 2)
        exact_vega = mp.npdf(X / S + S / 2) * mp.exp(X / 2)
        region = ("asymptotic" if x < -10 * s and 0.5 * s * s + x < s * (_SMALL_T - 10)
                  else "small t" if 0.5 * s < _SMALL_T
                  else "plain" if x + 0.5 * s * s > 0.85 * s else "erfcx")
        error = max(float(abs(b - exact) / exact), float(abs(vega - exact_vega) / exact_vega))
        worst[region] = max(worst.get(region, 0.0), error)
    assert set(worst) == {"asymptotic", "small t", "plain", "erfcx"}
    assert max(worst.values()) < 1e-13, worst


def test_black76_implied_vol_is_accurate_to_1e_10_against_mpmath():
    F, K, T, sigma, call = _domain(np.random.default_rng(20), 250)
    r = 0.03
    prices, reference = [], []
    for i in range(len(F)):
        discount = mp.exp(-r * mp.mpf(T[i]))
        price = float(discount * _mp_black(F[i], K[i], mp.mpf(sigma[i]) * mp.sqrt(mp.mpf(T[i])),
                                           call[i]))
        prices.append(price)
        reference.append(_mp_implied_vol(price, F[i], K[i], T[i], call[i], discount, sigma[i]))
    ours = black76_implied_vol(np.array(prices), F, K, T, r, call)
    assert np.all(np.isfinite(ours))
    assert np.max(np.abs(ours - np.array(reference))) <= 1e-10


def test_spot_implied_vol_is_accurate_to_1e_10_against_mpmath():
    rng = np.random.default_rng(21)
    F, K, T, sigma, call = _domain(rng, 120)
    r = rng.uniform(-0.05, 0.15, len(F))
    S = F * np.exp(-r * T)
    prices, reference = [], []
    for i in range(len(F)):
        growth = mp.exp(mp.mpf(r[i]) * mp.mpf(T[i]))
        forward = mp.mpf(S[i]) * growth  # the forward of the float spot, exactly
        stdev = mp.mpf(sigma[i]) * mp.sqrt(mp.mpf(T[i]))
        price = float(_mp_black(forward, K[i], stdev, call[i]) / growth)
        prices.append(price)
        reference.append(_mp_implied_vol(price, forward, K[i], T[i], call[i], 1 / growth,
                                         sigma[i]))
    ours = implied_vol(np.array(prices), S, K, T, r, call)
    assert np.max(np.abs(ours - np.array(reference))) <= 1e-10


def test_round_trip_over_the_accuracy_domain():
    F, K, T, sigma, call = _domain(np.random.default_rng(22), 20_000)
    prices = black76_price(F, K, T, 0.0, sigma, call)
    np.testing.assert_allclose(black76_implied_vol(prices, F, K, T, 0.0, call), sigma, rtol=0,
                               atol=1e-10)


def test_against_vollib():
    rng = np.random.default_rng(23)
    n = 400
    S = 100.0
    K = S * np.exp(rng.uniform(-0.7, 0.7, n))
    T = rng.uniform(0.02, 2.0, n)
    r = rng.uniform(0.0, 0.08, n)
    sigma = rng.uniform(0.08, 1.5, n)
    call = rng.random(n) < 0.5
    flags = np.where(call, "c", "p")
    ref_prices = np.array([vollib_price(f, S, k, t, rr, s)
                           for f, k, t, rr, s in zip(flags, K, T, r, sigma)])
    np.testing.assert_allclose(bs_price(S, K, T, r, sigma, call), ref_prices, rtol=1e-12,
                               atol=1e-12)
    ref_vols = np.array([vollib_implied_vol(p, S, k, t, rr, f)
                         for p, k, t, rr, f in zip(ref_prices, K, T, r, flags)])
    ours = implied_vol(ref_prices, S, K, T, r, call)
    vega = bs_greeks(S, K, T, r, ours, call).vega
    # Same algorithm, different arithmetic: agreement to a few ulps of the price in vol.
    np.testing.assert_array_less(np.abs(ours - ref_vols), 1e-12 + 64 * EPS * (S + K) / vega)
    assert np.median(np.abs(ours - ref_vols)) < 1e-14


def test_in_the_money_options_are_inverted_through_parity():
    rng = np.random.default_rng(24)
    n = 5_000
    F = 100.0
    K = F * np.exp(rng.uniform(-1.0, 1.0, n))
    T = rng.uniform(0.01, 2.0, n)
    sigma = rng.uniform(0.1, 2.0, n)
    r = 0.02
    df = np.exp(-r * T)
    otm_call = K >= F
    otm = black76_price(F, K, T, r, sigma, otm_call)
    itm = otm + df * np.where(otm_call, K - F, F - K)  # put-call parity
    v_otm = black76_implied_vol(otm, F, K, T, r, otm_call)
    v_itm = black76_implied_vol(itm, F, K, T, r, ~otm_call)
    # Parity is what the ITM side is inverted through: the same vol, up to the rounding of the
    # ITM price (its time value is a difference of nearly equal numbers).
    # Every ITM vol reproduces its price to rounding ...
    repriced = black76_price(F, K, T, r, v_itm, ~otm_call)
    np.testing.assert_array_less(np.abs(repriced - itm), 8 * EPS * (F + K))
    # ... and where the time value is resolved in the ITM price, it is the OTM vol, up to what
    # the rounding of the ITM price allows.
    resolved = otm > 64 * EPS * itm
    assert resolved.mean() > 0.9
    with np.errstate(divide="ignore"):
        rounding = 4 * EPS * itm / black76_greeks(F, K, T, r, sigma, True).vega
    np.testing.assert_array_less(np.abs(v_itm - v_otm)[resolved], (rounding + 1e-14)[resolved])
    np.testing.assert_array_less(np.abs(v_itm - sigma)[resolved], (rounding + 1e-10)[resolved])
    # Within two standard deviations that leaves the volatility accurate to 1e-11.
    near = np.abs(np.log(K / F)) < 2 * sigma * np.sqrt(T)
    assert np.max(np.abs(v_itm - sigma)[near]) < 1e-11


@settings(max_examples=150, deadline=None)
@given(S=st.floats(1.0, 1e5), k=st.floats(-1.5, 1.5), T=st.floats(1e-3, 3.0),
       r=st.floats(-0.05, 0.2), sigma=st.floats(0.03, 3.0))
def test_call_and_put_at_one_strike_imply_one_volatility(S, k, T, r, sigma):
    K = S * math.exp(k)
    c = float(bs_price(S, K, T, r, sigma, True))
    p = float(bs_price(S, K, T, r, sigma, False))
    vc, vp = float(implied_vol(c, S, K, T, r, True)), float(implied_vol(p, S, K, T, r, False))
    # Each reproduces its price to rounding (the ITM one through the OTM one: parity) ...
    assert float(bs_price(S, K, T, r, vc, True)) == pytest.approx(c, abs=16 * EPS * (S + K))
    assert float(bs_price(S, K, T, r, vp, False)) == pytest.approx(p, abs=16 * EPS * (S + K))
    # ... and where the time value is resolved in the ITM price, both are sigma.
    otm_price = c if K >= S * math.exp(r * T) else p
    if otm_price > 64 * EPS * (S + K):
        vega = float(bs_greeks(S, K, T, r, sigma, True).vega)
        tol = 1e-10 + 64 * EPS * (S + K) / vega
        assert vc == pytest.approx(vp, abs=tol)
        assert vc == pytest.approx(sigma, abs=tol)


def test_no_volatility_gives_nan_never_an_exception():
    S, K, T, r = 100.0, 110.0, 1.0, 0.05
    df = math.exp(-r * T)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cases = [
            implied_vol(S - 90.0 * df - 1e-6, S, 90.0, T, r, True),  # call below intrinsic
            implied_vol(K * df - S - 1e-6, S, K, T, r, False),  # put below intrinsic
            implied_vol(S, S, K, T, r, True),  # a call worth the spot: infinite vol
            implied_vol(S * 1.5, S, K, T, r, True),  # above the upper bound
            implied_vol(K * df, S, K, T, r, False),  # a put worth the discounted strike
            implied_vol(5.0, S, K, 0.0, r, True),  # expired
            implied_vol(5.0, S, K, -0.5, r, True),
            implied_vol(-1.0, S, K, T, r, True),  # negative price
            implied_vol(5.0, -S, K, T, r, True),  # negative spot
            implied_vol(5.0, S, -K, T, r, True),
            implied_vol(5.0, 0.0, K, T, r, True),
            implied_vol(5.0, S, 0.0, T, r, True),
            implied_vol(np.nan, S, K, T, r, True),
            implied_vol(5.0, np.nan, K, T, r, True),
            implied_vol(5.0, S, K, np.inf, r, True),
            implied_vol(5.0, S, K, T, np.nan, True),
            implied_vol(5.0, S, K, T, np.inf, True),
            black76_implied_vol(-0.1, 100.0, 100.0, 1.0, 0.0, False),
            black76_implied_vol(np.inf, 100.0, 100.0, 1.0, 0.0, True),
        ]
    assert all(np.isnan(c) for c in cases), cases
    # Exactly intrinsic: the zero volatility reproduces it.
    assert implied_vol(S - 90.0 * df, S, 90.0, T, r, True) == pytest.approx(0.0, abs=1e-6)
    assert black76_implied_vol(0.0, 100.0, 120.0, 1.0, 0.0, True) == 0.0
    assert black76_implied_vol(20.0, 120.0, 100.0, 1.0, 0.0, True) == 0.0


def test_implied_vol_broadcasts_and_returns_numpy_scalars():
    K = np.array([80.0, 100.0, 120.0])[:, None]
    T = np.array([0.1, 0.5, 1.0, 2.0])
    call = np.array([True, False, True, False])
    prices = bs_price(100.0, K, T, 0.01, 0.3, call)
    vols = implied_vol(prices, 100.0, K, T, 0.01, call)
    assert vols.shape == (3, 4)
    np.testing.assert_allclose(vols, 0.3, atol=1e-12)
    F = 100.0 * np.exp(0.01 * T)
    np.testing.assert_allclose(black76_implied_vol(prices, F, K, T, 0.01, call), 0.3, atol=1e-12)
    scalar = implied_vol(10.450583572185565, 100.0, 100.0, 1.0, 0.05, True)
    assert isinstance(scalar, np.float64) and np.ndim(scalar) == 0
    assert scalar == pytest.approx(0.2, abs=1e-14)
    assert isinstance(black76_implied_vol(5.0, 100.0, 100.0, 1.0, 0.0, [True])[0], np.float64)
    assert implied_vol(np.empty((0, 3)), 100.0, 100.0, 1.0, 0.0, True).shape == (0, 3)
    # Non-contiguous and read-only inputs are fine.
    grid = np.broadcast_to(prices, (2, 3, 4))[:, ::2, ::3]
    assert implied_vol(grid, 100.0, K[::2], T[::3], 0.01, call[::3]).shape == (2, 2, 2)


def test_large_batches_split_over_threads_give_the_same_vols():
    F, K, T, sigma, call = _domain(np.random.default_rng(25), 250_000)  # > 2 threads' worth
    prices = black76_price(F, K, T, 0.0, sigma, call)
    whole = black76_implied_vol(prices, F, K, T, 0.0, call)
    pieces = np.concatenate([black76_implied_vol(prices[i:i + 50_000], F[i:i + 50_000],
                                                 K[i:i + 50_000], T[i:i + 50_000], 0.0,
                                                 call[i:i + 50_000])
                             for i in range(0, len(F), 50_000)])
    np.testing.assert_array_equal(whole, pieces)
    assert np.max(np.abs(whole - sigma)) <= 1e-10
