"""models.surface: SVI / SSVI / eSSVI fits, free of static arbitrage, on the simulator's chain and
on real recorded Deribit options."""

from __future__ import annotations

import json
import math
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq

from models.deribit import parse_option_name, years_to_expiry
from models.option_book import OptionBook
from models.option_chain import (BTC_SURFACE, atm_vol, build_chain, implied_vol_surface,
                                 quote_chain, svi_params)
from models.pricing import black76_greeks, black76_price
from models.records import OptionTickerBatch
from models.surface import (METHODS, SurfaceFitConfig, check_arbitrage, durrleman_g,
                            essvi_calendar_p, essvi_psi_max, fit_surface, power_law_phi,
                            ssvi_eta_max, ssvi_total_variance, svi_g, svi_total_variance)

NOW = 1_795_000_000.0
SPOT = 95_000.0
K_CHECK = np.linspace(-3.0, 3.0, 601)
RECORDING = Path(__file__).resolve().parents[3] / "shared" / "data" / "recorded" / "DERIBIT.ws.1.0"


# --------------------------------------------------------------------------- chains


@lru_cache(maxsize=None)
def simulator_snapshot():
    """The simulator's BTC chain (SSVI ``BTC_SURFACE``) quoted at Deribit's ticks, through the
    option book: hedgeflow's own implied vols of the mid, bid and ask premiums, OTM side."""
    spec = build_chain("BTC", SPOT, NOW, BTC_SURFACE)
    q = quote_chain(spec, SPOT, NOW, BTC_SURFACE)
    n = len(spec)
    nan = np.full(n, np.nan)
    batch = OptionTickerBatch.from_columns(
        exchange=["deribit"] * n, instrument=list(spec.names), asset=["BTC"] * n,
        event_ts=np.full(n, NOW), receive_ts=np.full(n, NOW), expiry_utc=spec.expiry_ts,
        strike_usd=spec.strike, is_call=spec.is_call,
        bid_coin=np.where(q.bid_coin > 0, q.bid_coin, np.nan), bid_size=nan, ask_coin=q.ask_coin,
        ask_size=nan, mark_coin=q.mark_coin, mark_iv=q.mark_iv, bid_iv=q.bid_iv, ask_iv=q.ask_iv,
        underlying_usd=q.forward, index_usd=np.full(n, SPOT), open_interest=nan, delta=q.delta,
        gamma=q.gamma, vega=q.vega, theta=q.theta, rho=q.rho, raw=[""] * n,
    )
    book = OptionBook()
    book.update(batch)
    return book.snapshot("BTC", NOW)


def chain_columns(snap=None):
    snap = snap or simulator_snapshot()
    return (snap.strike_usd, snap.expiry_years, snap.forward_usd, snap.mid_vol.copy(),
            snap.bid_vol, snap.ask_vol)


def arbitrageable_columns():
    """The simulator chain with arbitrage put in: one expiry's vols x1.6 (its total variance
    then exceeds the next expiry's: calendar), a 25-vol-point spike at the money of another
    (butterfly) and a doubled put wing on a third (a wing steeper than Lee's bound allows)."""
    strike, years, forward, mid, bid, ask = chain_columns()
    k = np.log(strike / forward)
    expiries = np.unique(years)
    mid[years == expiries[3]] *= 1.6
    mid[(years == expiries[6]) & (np.abs(k) < 0.05)] += 0.25
    mid[(years == expiries[8]) & (k < -0.3)] *= 2.0
    return strike, years, forward, mid, bid, ask


@lru_cache(maxsize=None)
def fitted(method: str, arbitrageable: bool = False):
    columns = arbitrageable_columns() if arbitrageable else chain_columns()
    return fit_surface(*columns, config=SurfaceFitConfig(method=method))


def read_deribit_btc_tickers(path: Path):
    """The newest ``ticker.BTC-...`` message per instrument of a capture (``<epoch>: <json>``
    lines; others skipped): strike, years to expiry, forward, mark/bid/ask IV as fractions."""
    latest = {}
    for line in path.read_text().splitlines():
        head, _, body = line.partition(": ")
        try:
            float(head)
            message = json.loads(body)
        except ValueError:
            continue
        params = message.get("params") if isinstance(message, dict) else None
        if not params or not str(params.get("channel", "")).startswith("ticker.BTC-"):
            continue
        data = params["data"]
        latest[data["instrument_name"]] = data
    rows = []
    for name, data in sorted(latest.items()):
        option = parse_option_name(name)
        years = float(years_to_expiry(option.expiry_ts, data["timestamp"] / 1e3))

        def iv(key):  # Deribit: percent, 0.0 where that side has no quote
            value = data.get(key) or 0.0
            return value / 100.0 if value > 0.0 else math.nan

        rows.append((option.strike_usd, years, data["underlying_price"], iv("mark_iv"),
                     iv("bid_iv"), iv("ask_iv")))
    return np.array(rows, dtype=np.float64)


# --------------------------------------------------------------------------- recovery


def true_risk_reversal(T: float) -> float:
    """The 25-delta risk reversal of BTC_SURFACE by brentq on the forward delta."""
    def d1(k):
        w = implied_vol_surface(k, T, BTC_SURFACE) ** 2 * T
        return -k / math.sqrt(w) + 0.5 * math.sqrt(w)

    k_call = brentq(lambda k: d1(k) + 0.6744897501960817, -3.0, 3.0)
    k_put = brentq(lambda k: d1(k) - 0.6744897501960817, -3.0, 3.0)
    return float(implied_vol_surface(k_call, T, BTC_SURFACE) - implied_vol_surface(k_put, T, BTC_SURFACE))


@pytest.mark.parametrize("method", METHODS)
def test_recovers_the_simulator_surface(method):
    snap = simulator_snapshot()
    fit = fitted(method)
    assert fit.method == method
    assert fit.n_expiries == snap.n_expiries >= 10 and fit.n_options == len(snap) and fit.n_dropped == 0
    years = fit.expiry_years
    assert np.all(np.diff(years) > 0.0)
    # ATM term structure within 1 vol point of the surface the quotes came from
    np.testing.assert_allclose(fit.atm_vol(years), atm_vol(years, BTC_SURFACE), atol=0.01)
    # rho < 0: puts richer than calls; the 25-delta risk reversal close to the true one
    rr = fit.risk_reversal_25d(years)
    assert np.all(rr < 0.0)
    np.testing.assert_allclose(rr, [true_risk_reversal(T) for T in years], atol=0.01)
    assert np.all(fit.butterfly_25d(years) > 0.0)  # SSVI smiles are convex
    # the fit explains the quotes within their spreads
    spread = snap.ask_vol - snap.bid_vol
    assert fit.rmse_vol < 0.25 * np.nanmedian(spread)
    assert fit.within_spread_fraction > 0.95
    assert check_arbitrage(fit, K_CHECK).ok


def test_ssvi_recovers_the_simulator_parameters():
    fit = fitted("ssvi")
    assert fit.ssvi_rho == pytest.approx(BTC_SURFACE.rho, abs=0.03)
    assert fit.ssvi_gamma == pytest.approx(BTC_SURFACE.gamma, abs=0.05)
    assert fit.ssvi_eta == pytest.approx(BTC_SURFACE.eta, abs=0.1)


def test_svi_slices_match_the_true_smiles_over_the_quoted_strikes():
    fit, snap = fitted("svi"), simulator_snapshot()
    for i, T in enumerate(fit.expiry_years):
        quoted = np.log(snap.strike_usd / snap.forward_usd)[snap.expiry_years == T]
        k = np.linspace(quoted.min(), quoted.max(), 25)
        true = svi_params(float(T), BTC_SURFACE).total_variance(k)
        slice_w = svi_total_variance(k, fit.svi_a[i], fit.svi_b[i], fit.svi_rho[i], fit.svi_m[i],
                                     fit.svi_sigma[i])
        np.testing.assert_allclose(np.sqrt(slice_w / T), np.sqrt(true / T), atol=0.01)


@pytest.mark.parametrize("method", METHODS)
def test_25_delta_strikes_have_25_delta(method):
    fit = fitted(method)
    years = fit.expiry_years
    k_call, k_put = fit.delta_25_log_moneyness(years)
    forward = fit.forward(years)
    strike_call, strike_put = forward * np.exp(k_call), forward * np.exp(k_put)
    call = black76_greeks(forward, strike_call, years, 0.0, fit.implied_vol(k_call, years), True)
    put = black76_greeks(forward, strike_put, years, 0.0, fit.implied_vol(k_put, years), False)
    np.testing.assert_allclose(call.delta, 0.25, atol=1e-9)
    np.testing.assert_allclose(put.delta, -0.25, atol=1e-9)
    atm = fit.atm_vol(years)
    np.testing.assert_allclose(fit.risk_reversal_25d(years),
                               fit.implied_vol(k_call, years) - fit.implied_vol(k_put, years))
    np.testing.assert_allclose(
        fit.butterfly_25d(years),
        0.5 * (fit.implied_vol(k_call, years) + fit.implied_vol(k_put, years)) - atm)


# --------------------------------------------------------------------------- no arbitrage


@pytest.mark.parametrize("method", METHODS)
def test_an_arbitrageable_chain_still_gives_an_arbitrage_free_surface(method):
    strike, years, forward, mid, bid, ask = arbitrageable_columns()
    expiries = np.unique(years)
    # the data does hold a calendar arbitrage: ATM total variance falls from expiry 3 to 4
    k = np.log(strike / forward)
    atm_w = [np.interp(0.0, k[years == T], mid[years == T] ** 2 * T) for T in expiries[3:5]]
    assert atm_w[0] > atm_w[1]
    fit = fitted(method, arbitrageable=True)
    report = check_arbitrage(fit, K_CHECK)
    assert report.ok, report
    assert report.min_g >= 0.0 and report.butterfly_violations == report.calendar_violations == 0
    # and between the expiries: w non-decreasing in T at every k
    T = np.sort(np.r_[np.geomspace(1e-3, 2.0, 200), fit.expiry_years])
    w = fit.total_variance(K_CHECK[None, :], T[:, None])
    assert np.all(np.diff(w, axis=0) >= -1e-12)
    assert fit.n_expiries >= 10


def test_check_arbitrage_finds_the_arbitrage_of_a_naive_fit():
    fit = fitted("svi")
    a, b, rho, m, sigma = (p.copy() for p in (fit.svi_a, fit.svi_b, fit.svi_rho, fit.svi_m, fit.svi_sigma))
    # A slice with Lee-violating wings (b (1 + |rho|) > 2) and a later slice pushed below it.
    b[2], rho[2] = 2.5, 0.0
    a[5] = a[4] - 0.01
    broken = _with_slices(fit, a, b, rho, m, sigma)
    report = check_arbitrage(broken, K_CHECK)
    assert not report.ok
    assert report.butterfly_violations > 0 and report.calendar_violations > 0 and report.min_g < 0.0


def _with_slices(fit, a, b, rho, m, sigma):
    import dataclasses

    theta = svi_total_variance(0.0, a, b, rho, m, sigma)
    return dataclasses.replace(fit, svi_a=a, svi_b=b, svi_rho=rho, svi_m=m, svi_sigma=sigma, theta=theta)


@settings(max_examples=60, deadline=None)
@given(a=st.floats(-0.05, 0.3), b=st.floats(0.01, 1.5), rho=st.floats(-0.95, 0.95),
       m=st.floats(-0.5, 0.5), sigma=st.floats(0.01, 1.0), k=st.floats(-2.0, 2.0))
def test_svi_g_closed_form_matches_finite_differences(a, b, rho, m, sigma, k):
    w = svi_total_variance(k, a, b, rho, m, sigma)
    if w <= 1e-3:
        return  # g is not defined where w <= 0; keep away from it
    h = 1e-4
    wp, wm = svi_total_variance(k + h, a, b, rho, m, sigma), svi_total_variance(k - h, a, b, rho, m, sigma)
    w1, w2 = (wp - wm) / (2.0 * h), (wp - 2.0 * w + wm) / (h * h)
    g_fd = durrleman_g(k, w, w1, w2)
    g = svi_g(k, a, b, rho, m, sigma)
    assert g == pytest.approx(g_fd, rel=1e-3, abs=1e-3 * (1.0 + b / sigma))


@pytest.mark.parametrize("slice_params", [
    (0.02, 0.1, -0.4, 0.05, 0.2),      # an arbitrage-free slice (g > 0)
    (0.001, 0.9, -0.2, 0.0, 0.02),     # a sharp one whose density turns negative (g < 0)
])
def test_g_is_the_density_of_black_76_call_prices(slice_params):
    """Gatheral & Jacquier (2.1): the density of ln(S_T / F) at k is
    g(k) / sqrt(2 pi w) exp(-d2^2 / 2); here from finite differences of Black-76 call prices."""
    k = np.linspace(-0.6, 0.6, 25)
    w = svi_total_variance(k, *slice_params)
    d2 = -k / np.sqrt(w) - 0.5 * np.sqrt(w)
    density = svi_g(k, *slice_params) / np.sqrt(2.0 * math.pi * w) * np.exp(-0.5 * d2 * d2)

    def call(strike):
        vol = np.sqrt(svi_total_variance(np.log(strike), *slice_params))
        return black76_price(1.0, strike, 1.0, 0.0, vol, True)

    K, h = np.exp(k), 1e-4
    second = (call(K * (1 + h)) - 2.0 * call(K) + call(K * (1 - h))) / (K * h) ** 2
    np.testing.assert_allclose(density, K * second, rtol=2e-3, atol=2e-5)
    negative = svi_g(np.linspace(-0.6, 0.6, 1201), *slice_params).min() < 0.0
    assert negative == (slice_params[1] == 0.9)


@settings(max_examples=60, deadline=None)
@given(rho=st.floats(-0.99, 0.99), gamma=st.floats(0.01, 0.99),
       theta_min=st.floats(1e-5, 2.0))
def test_ssvi_eta_max_is_the_tight_butterfly_bound(rho, gamma, theta_min):
    # every theta the surface can use: from the first expiry's up (to where theta phi has
    # reached its limit eta), and the peak of theta phi^2 at theta = 1 - 2 gamma
    theta = np.r_[np.geomspace(theta_min, 1e12, 4001), max(1.0 - 2.0 * gamma, theta_min)]

    def worst(eta):
        phi = power_law_phi(theta, eta, gamma)
        return (np.max(theta * phi * (1 + abs(rho))), np.max(theta * phi * phi * (1 + abs(rho))))

    eta = ssvi_eta_max(rho, gamma, theta_min)
    first, second = worst(eta)
    assert first < 4.0 and second <= 4.0
    first, second = worst(1.01 * eta)  # and it is tight: 1 % more breaks a condition
    assert first >= 4.0 or second > 4.0


@settings(max_examples=150, deadline=None)
@given(theta1=st.floats(1e-4, 1.0), rho1=st.floats(-0.95, 0.95), rho2=st.floats(-0.95, 0.95),
       psi_frac=st.floats(0.01, 1.0), grow_theta=st.floats(1.0, 3.0), grow_psi=st.floats(0.0, 1.0))
def test_essvi_calendar_conditions_keep_slices_apart(theta1, rho1, rho2, psi_frac, grow_theta, grow_psi):
    """The pairwise eSSVI constraints the fit enforces (theta2 >= p theta1, psi2 >= p psi1,
    psi2 / theta2 <= psi1 / theta1) put the later slice above the earlier at every k."""
    psi1 = psi_frac * float(essvi_psi_max(theta1, rho1))
    p = float(essvi_calendar_p(rho1, rho2))
    theta2 = p * theta1 * grow_theta
    psi2 = p * psi1 * (1.0 + grow_psi * (grow_theta - 1.0))  # between p psi1 and psi1 theta2 / theta1
    k = np.r_[np.linspace(-50.0, 50.0, 2001), np.linspace(-1.0, 1.0, 2001)]
    gap = ssvi_total_variance(k, theta2, rho2, psi2) - ssvi_total_variance(k, theta1, rho1, psi1)
    assert gap.min() >= -1e-12 * theta2


def test_fitted_ssvi_and_essvi_parameters_meet_their_conditions():
    for arbitrageable in (False, True):
        fit = fitted("ssvi", arbitrageable)
        theta = fit.theta[0] * np.geomspace(1.0, 1e6, 500)
        phi = power_law_phi(theta, fit.ssvi_eta, fit.ssvi_gamma)
        assert np.all(theta * phi * (1 + abs(fit.ssvi_rho)) < 4.0)
        assert np.all(theta * phi ** 2 * (1 + abs(fit.ssvi_rho)) <= 4.0)
        assert np.all(np.diff(fit.theta) >= 0.0) and 0.0 < fit.ssvi_gamma < 1.0

        fit = fitted("essvi", arbitrageable)
        theta, rho, psi = fit.theta, fit.svi_rho, fit.essvi_psi
        assert np.all(psi <= essvi_psi_max(theta, rho) * (1 + 1e-12))
        p = essvi_calendar_p(rho[:-1], rho[1:])
        assert np.all(theta[1:] >= p * theta[:-1] * (1 - 1e-12))
        assert np.all(psi[1:] >= p * psi[:-1] * (1 - 1e-12))
        assert np.all(psi[1:] / theta[1:] <= psi[:-1] / theta[:-1] * (1 + 1e-12))


# --------------------------------------------------------------------------- interpolation


@settings(max_examples=80, deadline=None)
@given(method=st.sampled_from(METHODS), arbitrageable=st.booleans(),
       t1=st.floats(1e-4, 3.0), dt=st.floats(0.0, 1.0), k=st.floats(-3.0, 3.0))
def test_interpolation_keeps_total_variance_increasing_in_time(method, arbitrageable, t1, dt, k):
    fit = fitted(method, arbitrageable)
    w1, w2 = fit.total_variance(k, t1), fit.total_variance(k, t1 + dt)
    assert w2 >= w1 - 1e-12 * max(w1, 1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_interpolation_hits_the_slices_and_extrapolates_as_documented(method):
    fit = fitted(method)
    years = fit.expiry_years
    k = np.linspace(-1.0, 1.0, 21)
    for i, T in enumerate(years):
        slice_w = svi_total_variance(k, fit.svi_a[i], fit.svi_b[i], fit.svi_rho[i], fit.svi_m[i],
                                     fit.svi_sigma[i])
        np.testing.assert_allclose(fit.total_variance(k, T), slice_w, rtol=1e-10)
    # before the first expiry: the first smile, scaled (same implied vols)
    np.testing.assert_allclose(fit.implied_vol(k, years[0] / 3.0), fit.implied_vol(k, years[0]),
                               rtol=1e-10)
    # after the last: flat ATM vol
    np.testing.assert_allclose(fit.atm_vol([years[-1] * 1.5, years[-1] * 3.0]), fit.atm_vol(years[-1]),
                               rtol=1e-10)
    assert np.isnan(fit.implied_vol(0.0, 0.0)) and np.isnan(fit.total_variance(0.0, -1.0))
    # broadcasting
    assert fit.implied_vol(k[:, None], years[None, :]).shape == (21, years.size)
    assert np.shape(fit.atm_vol(0.1)) == () and fit.risk_reversal_25d(np.array([0.1, 0.2])).shape == (2,)


def test_forward_is_log_linear_between_expiries_with_flat_carry_beyond():
    fit = fitted("ssvi")
    years, fwd = fit.expiry_years, fit.forward_usd
    np.testing.assert_allclose(fit.forward(years), fwd, rtol=1e-12)
    mid = 0.5 * (years[3] + years[4])
    assert fit.forward(mid) == pytest.approx(math.sqrt(fwd[3] * fwd[4]), rel=1e-12)
    carry = math.log(fwd[-1] / fwd[-2]) / (years[-1] - years[-2])
    assert fit.forward(years[-1] + 0.5) == pytest.approx(fwd[-1] * math.exp(0.5 * carry), rel=1e-12)
    np.testing.assert_allclose(fwd, SPOT, rtol=1e-9)  # the simulator's carry is 0


def test_options_are_weighted_by_their_bid_ask_spread():
    """Misquote every third option by +4 vol points. With residuals divided by the spread, a
    fit that can absorb a level shift moves by about 4 points x (the misquoted options' share
    of sum(1 / spread^2)): less when they have no bid/ask (the default 5-point spread) than when
    they are quoted like the rest (about 3 points wide here)."""
    strike, years, forward, mid, bid, ask = chain_columns()
    bad = np.arange(strike.size) % 3 == 0
    mid = np.where(bad, mid + 0.04, mid)
    k = np.log(strike / forward)
    truth = implied_vol_surface(k, years, BTC_SURFACE)
    config = SurfaceFitConfig(method="ssvi")
    for bid_used, ask_used in ((bid, ask), (np.where(bad, np.nan, bid), np.where(bad, np.nan, ask))):
        fit = fit_surface(strike, years, forward, mid, bid_used, ask_used, config=config)
        spread = np.where(np.isfinite(bid_used), ask_used - bid_used, config.default_spread_vol)
        weight = 1.0 / spread ** 2
        expected = 0.04 * weight[bad].sum() / weight.sum()
        shift = np.mean(fit.implied_vol(k, years) - truth)
        assert shift == pytest.approx(expected, rel=0.25)
    assert expected < 0.6 * 0.04 / 3.0  # the default spread did down-weight them


# --------------------------------------------------------------------------- API


@pytest.mark.parametrize("method", METHODS)
def test_the_fit_survives_pickling_and_its_params_are_json(method):
    fit = fitted(method)
    copy = pickle.loads(pickle.dumps(fit))
    k, T = np.linspace(-1, 1, 11)[:, None], np.array([0.01, 0.1, 0.5, 2.0])[None, :]
    np.testing.assert_array_equal(copy.implied_vol(k, T), fit.implied_vol(k, T))
    years = fit.expiry_years
    np.testing.assert_array_equal(copy.risk_reversal_25d(years), fit.risk_reversal_25d(years))
    params = json.loads(json.dumps(fit.params_dict()))
    assert params == fit.params_dict()
    assert params["method"] == method and len(params["expiry_years"]) == fit.n_expiries
    assert len(params["svi"]["rho"]) == fit.n_expiries


def test_invalid_rows_are_dropped_counted_and_fitted_vol_stays_row_aligned():
    strike, years, forward, mid, bid, ask = chain_columns()
    n = strike.size
    strike = np.r_[strike, 90_000.0, -1.0, 100_000.0]
    years = np.r_[years, 0.1, 0.1, 0.0]
    forward = np.r_[forward, SPOT, SPOT, SPOT]
    mid = np.r_[mid, np.nan, 0.5, 0.5]
    bid, ask = np.r_[bid, np.nan, np.nan, np.nan], np.r_[ask, np.nan, np.nan, np.nan]
    fit = fit_surface(strike, years, forward, mid, bid, ask, config=SurfaceFitConfig(method="ssvi"))
    assert fit.n_dropped == 3 and fit.n_options == n
    vols = fit.fitted_vol()
    assert vols.shape == (n + 3,)
    assert np.all(np.isnan(vols[n:]))
    np.testing.assert_allclose(vols[:n], fitted("ssvi").fitted_vol(), rtol=1e-6)
    err = vols[:n] - mid[:n]
    assert math.sqrt(np.mean(err * err)) == pytest.approx(fit.rmse_vol, rel=1e-9)


def test_too_few_options_raise_a_clear_value_error():
    strike, years, forward, mid, bid, ask = chain_columns()
    with pytest.raises(ValueError, match="too few options.*4 left"):
        fit_surface(strike[:4], years[:4], forward[:4], mid[:4], bid[:4], ask[:4])
    with pytest.raises(ValueError, match="NaN mid vol"):
        fit_surface(strike, years, forward, np.full(strike.size, np.nan), bid, ask)
    # SVI needs 5 strikes per expiry: 4 per expiry is too few for any
    first4 = np.concatenate([np.flatnonzero(years == T)[:4] for T in np.unique(years)])
    with pytest.raises(ValueError, match="at least 5 strikes"):
        fit_surface(strike[first4], years[first4], forward[first4], mid[first4], bid[first4], ask[first4],
                    config=SurfaceFitConfig(method="svi"))
    with pytest.raises(ValueError, match="equal lengths"):
        fit_surface(strike, years[:-1], forward, mid, bid, ask)
    with pytest.raises(ValueError, match="method must be one of"):
        SurfaceFitConfig(method="sabr")


def test_svi_skips_sparse_expiries_and_counts_their_options():
    strike, years, forward, mid, bid, ask = chain_columns()
    sparse_T = np.unique(years)[2]
    sparse = np.flatnonzero(years == sparse_T)
    drop = sparse[4:]  # leave that expiry 4 strikes
    keep = np.setdiff1d(np.arange(strike.size), drop)
    fit = fit_surface(strike[keep], years[keep], forward[keep], mid[keep], bid[keep], ask[keep],
                      config=SurfaceFitConfig(method="svi"))
    assert fit.n_expiries == np.unique(years).size - 1 and fit.n_dropped == 4
    assert fit.skipped_expiry_years == (pytest.approx(sparse_T),)
    assert "fewer than 5" in fit.skipped_reasons[0]


# --------------------------------------------------------------------------- real data


def test_fit_on_real_recorded_deribit_options():
    """The recorded Deribit capture holds few options: 7 BTC tickers in 5 expiries (30JUL21 to
    24JUN22, 1 or 2 strikes each; 3 ETH tickers are ignored). Deribit's own IVs (mark as mid,
    bid and ask; percent) are fitted, ITM ones included (on the forward, a call's and a put's IV
    at one strike are the same). SSVI/eSSVI pool the smile across expiries and fit them; SVI,
    needing 5 strikes per expiry, cannot."""
    if not RECORDING.exists():
        pytest.skip(f"{RECORDING} not present")
    rows = read_deribit_btc_tickers(RECORDING)
    strike, years, forward, mid, bid, ask = rows.T
    assert rows.shape == (7, 6)
    spread = ask - bid
    for method in ("ssvi", "essvi"):
        fit = fit_surface(strike, years, forward, mid, bid, ask, config=SurfaceFitConfig(method=method))
        assert fit.n_options == 7 and fit.n_expiries == 5  # two tickers of one expiry, 1.3 s apart
        assert check_arbitrage(fit, K_CHECK).ok
        assert fit.rmse_vol < np.nanmin(spread) and fit.within_spread_fraction == 1.0
        assert np.all(np.abs(fit.fitted_vol() - mid) <= 0.5 * spread)
        assert np.all((fit.atm_vol(fit.expiry_years) > 0.5) & (fit.atm_vol(fit.expiry_years) < 1.5))
    with pytest.raises(ValueError, match="at least 5 strikes"):
        fit_surface(strike, years, forward, mid, bid, ask, config=SurfaceFitConfig(method="svi"))
