"""Black-Scholes and Black-76 prices and greeks: closed forms, parity, finite differences,
broadcasting and the degenerate limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.pricing import Greeks, black76_greeks, black76_price, bs_greeks, bs_price


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
