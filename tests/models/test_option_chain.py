"""The simulated Deribit option chain: listing schedule, scale, and no static arbitrage."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from models.deribit import coin_premium, implied_vol_from_coin
from models.option_chain import (
    BTC_SURFACE,
    ETH_SURFACE,
    SECONDS_PER_YEAR,
    SurfaceParams,
    atm_vol,
    build_chain,
    deribit_expiries,
    expiry_code,
    implied_vol_surface,
    option_name,
    quote_chain,
    svi_params,
    tick_for,
    total_variance,
)

NOW = datetime(2024, 11, 19, 7, 6, 40, tzinfo=timezone.utc).timestamp()
SPOTS = {"BTC": (97_000.0, BTC_SURFACE), "ETH": (3_100.0, ETH_SURFACE)}


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


@pytest.fixture(scope="module")
def chains():
    out = {}
    for asset, (spot, surface) in SPOTS.items():
        spec = build_chain(asset, spot, NOW, surface, carry_annual=0.05)
        out[asset] = (spec, quote_chain(spec, spot, NOW, surface, carry_annual=0.05), surface)
    return out


@pytest.mark.parametrize("now", [NOW, NOW + 86_400 * 40, NOW + 86_400 * 133.3, 1_767_225_600.0])
def test_expiry_schedule(now):
    expiries = deribit_expiries(now)
    ts = [e.ts for e in expiries]
    assert len(expiries) >= 10 and ts == sorted(set(ts)) and ts[0] > now
    for e in expiries:
        d = _utc(e.ts)
        assert (d.hour, d.minute, d.second) == (8, 0, 0)
        assert e.code == expiry_code(e.ts) == f"{d.day}{d.strftime('%b').upper()}{d.year % 100:02d}"
        if e.period in ("week", "month"):
            assert d.weekday() == 4  # Fridays
        if e.period == "month":
            assert (d + timedelta(days=7)).month != d.month  # the last Friday of its month
        if e.quarterly:
            assert e.period == "month" and d.month in (3, 6, 9, 12)
    periods = [e.period for e in expiries]
    assert periods.count("day") >= 3 and periods.count("week") >= 2
    assert periods.count("month") >= 3 and sum(e.quarterly for e in expiries) >= 2
    # The next four 08:00 UTCs are all listed (a Friday's as a weekly or monthly).
    first = ts[0]
    assert first - now <= 86_400 + 600
    assert {first + i * 86_400 for i in range(4)} <= set(ts)


def test_chain_scale_and_names(chains):
    total = sum(len(spec) for spec, _, _ in chains.values())
    assert total >= 800
    for asset, (spec, _, _) in chains.items():
        assert len(spec.expiries) >= 10
        assert len(set(spec.names)) == len(spec)
        for j, exp in enumerate(spec.expiries):
            sel = spec.expiry_index == j
            strikes = spec.strike[sel]
            assert sel.sum() >= 20 and (spec.is_call[sel].sum() == (~spec.is_call[sel]).sum())
            assert strikes.min() < SPOTS[asset][0] < strikes.max()
        assert spec.names[0] == option_name(asset, spec.expiries[0].code, spec.strike[0], True)
        assert spec.names[0].startswith(f"{asset}-{spec.expiries[0].code}-")
        assert spec.names[0].endswith("-C") and spec.names[1].endswith("-P")


def test_surface_is_svi_with_negative_skew_and_upward_term_structure():
    p = BTC_SURFACE
    T = np.array([1 / 365, 7 / 365, 30 / 365, 90 / 365, 0.5, 1.0])
    assert np.all(np.diff(atm_vol(T, p)) > 0)  # upward term structure
    for t in T:
        iv_down, iv_up = implied_vol_surface(np.array([-0.1, 0.1]), t, p)
        assert iv_down > iv_up  # negative skew: puts richer
        k = np.linspace(-1.0, 1.0, 41)
        sl = svi_params(t, p)
        np.testing.assert_allclose(sl.total_variance(k), total_variance(k, t, p), rtol=1e-12)
    assert implied_vol_surface(0.0, 0.25, p) == pytest.approx(atm_vol(0.25, p))


def test_no_calendar_arbitrage_total_variance_increases_with_maturity():
    k = np.linspace(-2.0, 2.0, 401)
    T = np.linspace(1 / 365 / 24, 2.0, 300)
    for p in (BTC_SURFACE, ETH_SURFACE):
        w = np.array([total_variance(k, t, p) for t in T])
        assert np.all(np.diff(w, axis=0) > 0)


def test_marks_free_of_static_arbitrage(chains):
    for asset, (spec, q, _) in chains.items():
        for j in range(len(spec.expiries)):
            calls = (spec.expiry_index == j) & spec.is_call
            puts = (spec.expiry_index == j) & ~spec.is_call
            order = np.argsort(spec.strike[calls])
            K = spec.strike[calls][order]
            F = q.forward[calls][order]
            c_usd = (q.mark_coin[calls] * q.forward[calls])[order]
            p_usd = (q.mark_coin[puts] * q.forward[puts])[np.argsort(spec.strike[puts])]
            assert np.all(np.diff(c_usd) < 0), (asset, j)  # decreasing in strike
            assert np.all(np.diff(p_usd) > 0), (asset, j)
            # Convex: slopes increase (a butterfly never has negative cost).
            slope = np.diff(c_usd) / np.diff(K)
            assert np.all(np.diff(slope) > -1e-12 * F[0]), (asset, j)
            assert np.all(slope > -1.0) and np.all(slope < 0.0)
            # Put-call parity in coin: C - P = (F - K) / F (undiscounted, Deribit's interest 0).
            np.testing.assert_allclose(c_usd - p_usd, F - K, atol=1e-6 * F[0])


def test_calendar_arbitrage_on_the_quoted_chain(chains):
    """At the same log-moneyness, the quoted marks' total variance rises with expiry."""
    for asset, (spec, q, surface) in chains.items():
        k_grid = np.linspace(-0.05, 0.05, 11)
        previous = None
        for j, exp in enumerate(spec.expiries):
            sel = (spec.expiry_index == j) & spec.is_call
            k = np.log(spec.strike[sel] / q.forward[sel])
            order = np.argsort(k)
            w = np.square(q.mark_iv[sel][order]) * q.T[sel][order]
            w_at = np.interp(k_grid, k[order], w)
            if previous is not None:
                assert np.all(w_at > previous), (asset, exp.code)
            previous = w_at


def test_bids_asks_and_their_ivs_are_consistent(chains):
    for asset, (spec, q, _) in chains.items():
        has_bid = q.bid_coin > 0
        assert has_bid.mean() > 0.9
        assert np.all(q.bid_coin <= q.mark_coin + 1e-12)
        assert np.all(q.ask_coin >= q.mark_coin - 1e-12)
        for price in (q.bid_coin[has_bid], q.ask_coin):
            ticks = price / tick_for(price)
            np.testing.assert_allclose(ticks, np.round(ticks), atol=1e-6)
        ok = has_bid & (q.bid_iv > 0)
        assert ok.mean() > 0.85
        assert np.all(q.bid_iv[ok] <= q.mark_iv[ok]) and np.all(q.ask_iv > q.mark_iv)
        # The IVs reproduce the rounded prices they describe.
        K, T, call = spec.strike, q.T, spec.is_call
        np.testing.assert_allclose(coin_premium(q.forward[ok], K[ok], T[ok], q.bid_iv[ok], call[ok]),
                                   q.bid_coin[ok], rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(coin_premium(q.forward, K, T, q.ask_iv, call), q.ask_coin,
                                   rtol=1e-7, atol=1e-10)
        otm = np.where(call, K > q.forward, K < q.forward)
        np.testing.assert_allclose(
            implied_vol_from_coin(q.mark_coin[otm], q.forward[otm], K[otm], T[otm], call[otm]),
            q.mark_iv[otm], rtol=1e-6)


def test_greeks_have_deribit_signs_and_units(chains):
    spec, q, _ = chains["BTC"]
    c, p = spec.is_call, ~spec.is_call
    assert np.all((q.delta[c] > 0) & (q.delta[c] < 1))
    assert np.all((q.delta[p] < 0) & (q.delta[p] > -1))
    assert np.all(q.gamma > 0) and np.all(q.vega > 0) and np.all(q.theta < 0)
    # Vega in USD per vol point: an ATM 30-day BTC option is worth roughly F * 0.4 * sqrt(T) / 100.
    j = next(i for i, e in enumerate(spec.expiries) if e.ts - NOW > 20 * 86400)
    sel = np.flatnonzero((spec.expiry_index == j) & c)
    atm = sel[np.argmin(np.abs(spec.strike[sel] - 97_000 * math.exp(0.05 * q.T[sel[0]])))]
    assert q.vega[atm] == pytest.approx(0.4 * q.forward[atm] * math.sqrt(q.T[atm]) / 100, rel=0.1)
    assert q.T[atm] == pytest.approx((spec.expiry_ts[atm] - NOW) / SECONDS_PER_YEAR)


def test_surface_parameters_that_would_allow_arbitrage_are_refused():
    with pytest.raises(ValueError):
        SurfaceParams(eta=1.8, rho=-0.5)  # eta (1 + |rho|) > 2: butterflies
    with pytest.raises(ValueError):
        SurfaceParams(gamma=0.7)
    with pytest.raises(ValueError):
        SurfaceParams(rho=-1.0)
