"""models.premium: the breakdown's identity, the Black-Scholes and Merton references (closed form,
QuantLib, Monte Carlo), the SSVI smile's skew, tiers, monotonicity, the cache, bad inputs.

The surface is the simulator's SSVI surface (models.option_chain), a real surface with a known
truth, wrapped in the two methods the premium calculator asks of any surface.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.jumps import MertonJumps
from models.option_chain import BTC_SURFACE, SurfaceParams, atm_vol, implied_vol_surface
from models.premium import (
    BREAKDOWN_FIELDS,
    DEFAULT_TIERS,
    FlatSurface,
    PremiumCache,
    PremiumConfig,
    PremiumQuote,
    Tier,
    diffusion_vol_annual,
    merton_price,
    price_tiers,
    quote_from_surface,
    quote_from_vols,
    quote_grid,
    quote_to_dict,
)
from models.pricing import bs_greeks, bs_price
from models.scenarios import mc_european_price, merton_paths

SPOT = 40_000.0
DAY = 1.0 / 365.0
NO_JUMPS = MertonJumps(intensity_per_year=0.0, mean_log_jump=0.0, vol_log_jump=0.0)


class SsviSurface:
    """models.option_chain's SSVI surface behind the premium calculator's surface interface."""

    def __init__(self, params: SurfaceParams = BTC_SURFACE) -> None:
        self.params = params

    def implied_vol(self, k, T):
        return implied_vol_surface(k, T, self.params)

    def atm_vol(self, T):
        return atm_vol(T, self.params)


SURFACE = SsviSurface()


def breakdown_sum(q: PremiumQuote) -> float:
    total = 0.0
    for name in BREAKDOWN_FIELDS:
        total += getattr(q, name)
    return total


# --------------------------------------------------------------------------- the breakdown


@settings(max_examples=150, deadline=None)
@given(
    spot=st.floats(100.0, 200_000.0),
    moneyness=st.floats(0.3, 2.0),
    days=st.floats(0.01, 730.0),
    amount=st.floats(1e-3, 1_000.0),
    vols=st.tuples(st.floats(0.05, 2.5), st.floats(0.05, 2.5), st.floats(0.05, 2.5)),
    rate=st.floats(-0.05, 0.15),
    intensity=st.floats(0.0, 30.0),
    mean_jump=st.floats(-0.3, 0.1),
    jump_vol=st.floats(0.0, 0.2),
    mode=st.sampled_from(["matched", "additive"]),
    tick=st.sampled_from([0.0, 0.01, 1.0]),
)
def test_the_breakdown_sums_to_the_premium(spot, moneyness, days, amount, vols, rate, intensity,
                                           mean_jump, jump_vol, mode, tick):
    config = PremiumConfig(rate_annual=rate, jump_mode=mode, rounding_tick_usd=tick,
                           jumps=MertonJumps(intensity, mean_jump, jump_vol))
    q = quote_from_vols(spot, spot * moneyness, days * DAY, amount, *vols, config=config)
    assert abs(breakdown_sum(q) - q.premium_usd) <= 1e-9 + 1e-15 * q.premium_usd
    # The five model factors telescope to the fair value; the margin is its three parts.
    model = q.intrinsic_usd + q.time_value_usd + q.volatility_usd + q.skew_usd + q.jump_usd
    assert model == pytest.approx(q.fair_value_usd, rel=1e-9, abs=1e-9 * spot * amount)
    assert q.margin_usd == pytest.approx(
        q.vol_of_vol_margin_usd + q.liquidity_margin_usd + q.markup_usd, rel=1e-12, abs=1e-12)
    assert q.intrinsic_usd == amount * max(spot * moneyness - spot, 0.0)
    assert q.margin_usd >= 0.0 and q.fair_value_usd >= 0.0
    # Rounded up to the tick, never by a whole tick.
    unrounded = q.fair_value_usd + q.margin_usd
    if tick:
        assert -1e-9 * tick - 1e-9 <= q.premium_usd - unrounded < tick
        assert q.premium_usd / tick == pytest.approx(round(q.premium_usd / tick), rel=1e-14, abs=1e-6)
    else:
        # No tick: only the float residue of the sum, an ulp or so of the largest factor (factors
        # of millions can cancel to a premium of a hundred: a 0.25 strike vol against 2.0 realized).
        largest = max(abs(getattr(q, name)) for name in BREAKDOWN_FIELDS[:-1])
        assert q.rounding_usd == pytest.approx(0.0, abs=1e-9 + 1e-14 * largest)
    assert q.premium_per_coin_usd == pytest.approx(q.premium_usd / amount, rel=1e-12)
    assert q.premium_pct_of_notional == pytest.approx(100 * q.premium_usd / (amount * spot), rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(moneyness=st.floats(0.5, 1.5), days=st.floats(0.5, 400.0), reference=st.floats(0.1, 1.5))
def test_the_breakdown_sums_off_the_ssvi_surface(moneyness, days, reference):
    q = quote_from_surface(SURFACE, SPOT, SPOT * moneyness, days * DAY, 2.0, reference)
    assert abs(breakdown_sum(q) - q.premium_usd) <= 1e-9 + 1e-15 * q.premium_usd
    assert q.vol_atm_annual == pytest.approx(float(atm_vol(days * DAY, BTC_SURFACE)), rel=1e-14)
    k = math.log(SPOT * moneyness / SPOT)
    assert q.vol_strike_annual == pytest.approx(float(implied_vol_surface(k, days * DAY, BTC_SURFACE)),
                                                rel=1e-14)


def test_each_factor_is_the_difference_of_black_scholes_prices_it_names():
    config = PremiumConfig(rate_annual=0.04)
    S, K, T, amount, vk, va, vr = SPOT, 36_000.0, 30 * DAY, 3.0, 0.62, 0.55, 0.41
    q = quote_from_vols(S, K, T, amount, vk, va, vr, config=config)
    bs = lambda v: float(bs_price(S, K, T, 0.04, v, False))  # noqa: E731
    assert q.intrinsic_usd == 0.0
    assert q.time_value_usd == pytest.approx(amount * bs(vr), rel=1e-13)
    assert q.volatility_usd == pytest.approx(amount * (bs(va) - bs(vr)), rel=1e-12)
    assert q.skew_usd == pytest.approx(amount * (bs(vk) - bs(va)), rel=1e-12)
    vol_d = diffusion_vol_annual(vk, config.jumps)
    assert q.vol_diffusion_annual == vol_d
    assert q.jump_usd == pytest.approx(
        amount * (merton_price(S, K, T, 0.04, vol_d, config.jumps) - bs(vk)), rel=1e-12)
    # Margins: the formulas of PremiumConfig's docstring with the Black-Scholes vega at the strike.
    vega = float(bs_greeks(S, K, T, 0.04, vk, False).vega)
    vov = amount * vega * vk * config.vol_of_vol_annual * math.sqrt(T) * config.vol_of_vol_sd
    liquidity = amount * vega * (config.liquidity_half_spread_vol
                                 + config.liquidity_impact_vol_per_sqrt_coin * math.sqrt(amount))
    assert q.vol_of_vol_margin_usd == pytest.approx(vov, rel=1e-12)
    assert q.liquidity_margin_usd == pytest.approx(liquidity, rel=1e-12)
    assert q.markup_usd == pytest.approx(
        config.custom_markup_fraction * (q.fair_value_usd + vov + liquidity), rel=1e-12)
    # Higher implied ATM than realized: a positive volatility factor.
    assert q.volatility_usd > 0.0 and q.skew_usd > 0.0


def test_a_deep_in_the_money_put_with_a_positive_rate_has_negative_time_value():
    q = quote_from_vols(SPOT, 60_000.0, 1.0, 1.0, 0.3, 0.3, 0.3,
                        config=PremiumConfig(rate_annual=0.08, jumps=NO_JUMPS))
    assert q.intrinsic_usd == 20_000.0
    assert q.time_value_usd < 0.0
    assert q.time_value_usd == pytest.approx(float(bs_price(SPOT, 60_000.0, 1.0, 0.08, 0.3, False))
                                             - 20_000.0, rel=1e-12)


# --------------------------------------------------------------------------- Black-Scholes limits


@pytest.mark.parametrize("moneyness, days, rate, amount", [
    (0.8, 7.0, 0.0, 1.0), (0.95, 30.0, 0.03, 2.5), (1.0, 1.0, 0.0, 0.1), (1.3, 90.0, 0.05, 7.0),
])
def test_zero_jumps_margins_and_a_flat_surface_give_the_black_scholes_put_exactly(
        moneyness, days, rate, amount):
    config = PremiumConfig(rate_annual=rate, jumps=NO_JUMPS).without_margins()
    flat = FlatSurface(0.6)
    K, T = SPOT * moneyness, days * DAY
    q = quote_from_surface(flat, SPOT, K, T, amount, 0.6, config=config)
    assert q.premium_usd == amount * bs_price(SPOT, K, T, rate, 0.6, False)
    assert q.volatility_usd == 0.0 and q.skew_usd == 0.0 and q.jump_usd == 0.0
    assert q.margin_usd == 0.0
    # Put-call parity holds for the model's calls too, jumps or not.
    for jumps in (NO_JUMPS, MertonJumps()):
        put = merton_price(SPOT, K, T, rate, 0.5, jumps, False)
        call = merton_price(SPOT, K, T, rate, 0.5, jumps, True)
        assert call - put == pytest.approx(SPOT - K * math.exp(-rate * T), abs=1e-8 * SPOT)


def test_zero_intensity_merton_is_black_scholes_exactly():
    S = np.array([30_000.0, 40_000.0, 50_000.0])
    for jumps in (NO_JUMPS, MertonJumps(0.0, -0.2, 0.1)):
        got = merton_price(S[:, None], np.array([35_000.0, 40_000.0]), 0.1, 0.02, 0.7, jumps, False)
        np.testing.assert_array_equal(got, bs_price(S[:, None], np.array([35_000.0, 40_000.0]), 0.1,
                                                    0.02, 0.7, False))
    assert diffusion_vol_annual(0.55, NO_JUMPS) == 0.55


# --------------------------------------------------------------------------- Merton references


def _quantlib_merton_put(S: float, K: float, days: int, r: float, vol_d: float, jumps: MertonJumps) -> float:
    """Bates (Heston + Merton jumps) with a flat variance and a negligible vol of variance: the
    Merton model priced by QuantLib's characteristic-function engine."""
    ql = pytest.importorskip("QuantLib")
    today = ql.Date(1, 1, 2024)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    rates = ql.YieldTermStructureHandle(ql.FlatForward(today, r, dc))
    dividends = ql.YieldTermStructureHandle(ql.FlatForward(today, 0.0, dc))
    v = vol_d**2
    process = ql.BatesProcess(rates, dividends, ql.QuoteHandle(ql.SimpleQuote(S)), v, 1.0, v, 1e-4,
                              0.0, jumps.intensity_per_year, jumps.mean_log_jump, jumps.vol_log_jump)
    option = ql.EuropeanOption(ql.PlainVanillaPayoff(ql.Option.Put, K), ql.EuropeanExercise(today + days))
    option.setPricingEngine(ql.BatesEngine(ql.BatesModel(process)))
    return option.NPV()


@pytest.mark.parametrize("jumps", [MertonJumps(), MertonJumps(20.0, -0.03, 0.05),
                                   MertonJumps(1.0, 0.05, 0.2)])
def test_merton_matches_quantlib(jumps):
    for K in (28_000.0, 36_000.0, 40_000.0, 46_000.0):
        for days in (3, 30, 365):
            ours = merton_price(SPOT, K, days * DAY, 0.03, 0.45, jumps)
            assert ours == pytest.approx(_quantlib_merton_put(SPOT, K, days, 0.03, 0.45, jumps),
                                         rel=1e-6, abs=1e-4)


def test_merton_matches_monte_carlo_within_three_standard_errors():
    jumps = MertonJumps(12.0, -0.10, 0.08)  # frequent large jumps: far from Black-Scholes
    T, r, vol_d = 30 * DAY, 0.02, 0.4
    paths = merton_paths(SPOT, vol_d, jumps, T, 1, 400_000, rng=7, drift_annual=r)
    terminal = paths[:, -1]
    for K in (30_000.0, 34_000.0, 38_000.0, 40_000.0, 44_000.0):
        mc = mc_european_price(terminal, K, T, r, False)
        ours = merton_price(SPOT, K, T, r, vol_d, jumps)
        assert abs(ours - mc.price) < 3.0 * mc.stderr, (K, ours, mc)
        # ...and the jumps matter at this strike: Black-Scholes at the same total variance is
        # outside the Monte Carlo's error for the far out-of-the-money puts.
        total_vol = math.sqrt(vol_d**2 + jumps.intensity_per_year * (jumps.mean_log_jump**2
                                                                       + jumps.vol_log_jump**2))
        if K <= 34_000.0:
            assert abs(float(bs_price(SPOT, K, T, r, total_vol, False)) - mc.price) > 3.0 * mc.stderr


def test_matched_diffusion_keeps_the_total_variance_and_is_floored():
    jumps = MertonJumps(6.0, -0.08, 0.06)
    jump_var = 6.0 * (0.08**2 + 0.06**2)
    vol = np.array([0.3, 0.6, 1.2])
    vol_d = diffusion_vol_annual(vol, jumps)
    np.testing.assert_allclose(np.square(vol_d) + jump_var, np.square(vol), rtol=1e-13)
    # 0.2^2 = 0.04 < jump variance 0.06: the diffusion keeps min_diffusion_fraction of the vol.
    assert diffusion_vol_annual(0.2, jumps, min_diffusion_fraction=0.5) == pytest.approx(0.1, rel=1e-14)
    assert diffusion_vol_annual(0.6, jumps, mode="additive") == 0.6


def test_matched_jumps_lift_the_tail_and_lower_the_middle():
    config = PremiumConfig()
    T = 30 * DAY
    q = quote_grid(FlatSurface(0.6), SPOT, SPOT * np.array([0.7, 0.8, 1.0]), T, 1.0, 0.6, config=config)
    tail, mid_tail, atm = q.jump_usd
    assert tail > 0.0 and mid_tail > 0.0 and atm < 0.0
    additive = quote_grid(FlatSurface(0.6), SPOT, SPOT * np.array([0.7, 0.8, 1.0]), T, 1.0, 0.6,
                          config=PremiumConfig(jump_mode="additive"))
    assert np.all(additive.jump_usd > 0.0) and np.all(additive.jump_usd > q.jump_usd)


# --------------------------------------------------------------------------- the smile and tiers


def test_skew_is_positive_for_out_of_the_money_puts_when_rho_is_negative():
    strikes = SPOT * np.array([0.6, 0.7, 0.8, 0.9, 0.97])
    for days in (1.0, 7.0, 30.0, 180.0):
        q = quote_grid(SURFACE, SPOT, strikes, days * DAY, 1.0, 0.5)
        assert np.all(q.skew_usd > 0.0), days
        assert np.all(q.vol_strike_annual > q.vol_atm_annual)
    # The mirror surface (rho > 0) makes the near puts' skew negative (its far wing rises again:
    # both SVI wings grow linearly in k).
    mirror = SsviSurface(SurfaceParams(atm_vol_short=0.45, atm_vol_long=0.60, tau_years=0.25, rho=0.35))
    q = quote_grid(mirror, SPOT, strikes[2:], 30 * DAY, 1.0, 0.5)
    assert np.all(q.skew_usd < 0.0)


def test_tiers_set_the_strike_and_markup_and_deeper_cover_costs_more():
    config = PremiumConfig()
    for days in (1.0, 7.0, 30.0, 90.0):
        quotes = price_tiers(SURFACE, SPOT, days * DAY, 2.0, 0.45, config=config)
        assert list(quotes) == [t.name for t in config.tiers]
        for tier in config.tiers:
            q = quotes[tier.name]
            assert q.tier == tier.name and isinstance(q.premium_usd, float)
            assert q.strike_usd == SPOT * tier.strike_fraction
            technical = q.fair_value_usd + q.vol_of_vol_margin_usd + q.liquidity_margin_usd
            assert q.markup_usd == pytest.approx(tier.markup_fraction * technical, rel=1e-12)
            # The vectorized tier grid is the scalar quote of that tier.
            single = quote_from_surface(SURFACE, SPOT, q.strike_usd, days * DAY, 2.0, 0.45,
                                        config=config, tier=tier.name)
            for name in BREAKDOWN_FIELDS + ("premium_usd", "vol_strike_annual"):
                assert getattr(q, name) == pytest.approx(getattr(single, name), rel=1e-12, abs=1e-9)
        by_strike = sorted(quotes.values(), key=lambda q: q.strike_usd)
        premiums = [q.premium_usd for q in by_strike]
        assert premiums == sorted(premiums) and len(set(premiums)) == len(premiums)


def test_default_tiers_are_80_90_95_percent():
    assert [(t.name, t.strike_fraction) for t in DEFAULT_TIERS] == [
        ("basic", 0.8), ("standard", 0.9), ("premium", 0.95)]


def test_premium_rises_with_strike_and_with_expiry():
    strikes = SPOT * np.linspace(0.5, 1.5, 41)
    expiries = np.array([1, 2, 7, 14, 30, 60, 90, 180, 365]) * DAY
    q = quote_grid(SURFACE, SPOT, strikes[:, None], expiries[None, :], 1.0, 0.5)
    assert q.premium_usd.shape == (41, 9)
    # Strictly before rounding; the rounded premium may tie at a tick (far out of the money).
    unrounded = q.fair_value_usd + q.margin_usd
    assert np.all(np.diff(unrounded, axis=0) > 0.0) and np.all(np.diff(unrounded, axis=1) > 0.0)
    assert np.all(np.diff(q.premium_usd, axis=0) >= 0.0)
    assert np.all(np.diff(q.premium_usd, axis=1) >= 0.0)
    # The grid is the per-quote computation, cell by cell.
    for i, j in [(0, 0), (20, 4), (40, 8), (13, 2)]:
        single = quote_from_surface(SURFACE, SPOT, strikes[i], expiries[j], 1.0, 0.5)
        assert q.premium_usd[i, j] == pytest.approx(single.premium_usd, rel=1e-12, abs=1e-9)
        assert q.jump_usd[i, j] == pytest.approx(single.jump_usd, rel=1e-12, abs=1e-9)


def test_liquidity_margin_grows_faster_than_the_size():
    small = quote_from_surface(SURFACE, SPOT, 36_000.0, 7 * DAY, 1.0, 0.5)
    large = quote_from_surface(SURFACE, SPOT, 36_000.0, 7 * DAY, 100.0, 0.5)
    assert large.liquidity_margin_usd / 100.0 > small.liquidity_margin_usd
    assert large.fair_value_usd == pytest.approx(100.0 * small.fair_value_usd, rel=1e-12)


def test_quote_to_dict_is_json_with_a_breakdown_that_sums():
    q = quote_from_surface(SURFACE, SPOT, 36_000.0, 30 * DAY, 2.0, 0.4, tier="standard")
    out = json.loads(json.dumps(quote_to_dict(q)))
    assert out["tier"] == "standard" and out["premium_usd"] == q.premium_usd
    assert sum(out[name] for name in BREAKDOWN_FIELDS) == pytest.approx(out["premium_usd"], abs=1e-9)
    assert [row["factor"] for row in out["breakdown"]] == list(BREAKDOWN_FIELDS)
    assert sum(row["share_of_premium"] for row in out["breakdown"]) == pytest.approx(1.0, rel=1e-12)
    assert all(row["explanation"] for row in out["breakdown"])


# --------------------------------------------------------------------------- the cache


def test_cache_keys_on_rounded_inputs_and_scales_to_the_spot():
    cache = PremiumCache(moneyness_precision=1e-4)
    config = PremiumConfig()
    T = 7 * DAY
    first = cache.get_or_compute(SURFACE, SPOT, 36_000.0, T, 1.0, 0.5, config=config)
    assert (cache.hits, cache.misses) == (0, 1)
    # The cell's canonical inputs priced exactly, at the request's spot.
    cells, (moneyness, years, amount) = cache.canonical_inputs(SPOT, 36_000.0, T, 1.0)
    assert first.spot_usd == SPOT and abs(moneyness / 0.9 - 1.0) <= 0.5e-4
    assert first.strike_usd == pytest.approx(SPOT * moneyness, rel=1e-15)
    exact = quote_from_vols(SPOT, SPOT * moneyness, years, amount, round(first.vol_strike_annual, 4),
                            round(first.vol_atm_annual, 4), 0.5, config=config)
    for name in ("fair_value_usd", "margin_usd", "jump_usd", "skew_usd"):
        assert getattr(first, name) == pytest.approx(getattr(exact, name), rel=1e-12), name
    assert abs(first.premium_usd - exact.premium_usd) <= config.rounding_tick_usd
    assert abs(breakdown_sum(first) - first.premium_usd) <= 1e-9
    # ...and close to the quote of the request itself: the cells cost at most
    # delta x strike x 0.5e-4 + vega x 0.5e-4 (x 2: the ATM vol too) + theta x 30 s + a tick.
    direct = quote_from_surface(SURFACE, SPOT, 36_000.0, T, 1.0, 0.5, config=config)
    g = bs_greeks(SPOT, 36_000.0, T, 0.0, direct.vol_strike_annual, False)
    bound = 1.2 * (abs(g.delta) * 36_000.0 * 0.5e-4 + 2 * g.vega * 0.5e-4
                   + abs(g.theta) * 30 / (365 * 86_400)) * (1 + config.custom_markup_fraction) + 0.01
    assert abs(first.premium_usd - direct.premium_usd) < bound
    # Spot and strike moved together, 20 seconds later, the same vols: the same cell, scaled.
    again = cache.get_or_compute(SURFACE, SPOT * 1.01, 36_000.0 * 1.01, T + 20 / (365 * 86_400), 1.0,
                                 0.50002, config=config)
    assert (cache.hits, cache.misses) == (1, 1)
    assert again.spot_usd == SPOT * 1.01
    assert again.fair_value_usd == pytest.approx(1.01 * first.fair_value_usd, rel=1e-14)
    assert abs(again.premium_usd - 1.01 * first.premium_usd) <= 0.02
    assert abs(breakdown_sum(again) - again.premium_usd) <= 1e-9
    # Each input beyond its precision is a new key.
    misses = [
        dict(strike_usd=36_000.0 * 1.0002), dict(expiry_years=T + 120 / (365 * 86_400)),
        dict(amount_coin=2.0), dict(reference_vol_annual=0.5003), dict(tier="standard"),
        dict(config=PremiumConfig(rounding_tick_usd=1.0)),
    ]
    base = dict(spot_usd=SPOT, strike_usd=36_000.0, expiry_years=T, amount_coin=1.0,
                reference_vol_annual=0.5, config=config)
    for i, change in enumerate(misses):
        cache.get_or_compute(SURFACE, **{**base, **change})
        assert cache.misses == 2 + i, change
    # A refitted surface whose vol at the strike moved beyond 1e-4 misses by itself.
    moved = SsviSurface(SurfaceParams(atm_vol_short=0.46, atm_vol_long=0.60, tau_years=0.25, rho=-0.35))
    cache.get_or_compute(moved, **base)
    assert cache.misses == 2 + len(misses)
    assert cache.hit_rate == pytest.approx(1 / (cache.hits + cache.misses))


def test_cache_keeps_a_tiers_strike_exact_as_the_spot_moves():
    cache = PremiumCache()
    config = PremiumConfig()
    T = 30 * DAY
    for spot in (SPOT, SPOT * 1.003, SPOT * 0.97, SPOT * 1.2):
        tiers = price_tiers(SURFACE, spot, T, 2.0, 0.45, config=config)
        for tier in config.tiers:
            q = cache.get_or_compute(SURFACE, spot, spot * tier.strike_fraction, T, 2.0, 0.45,
                                     config=config, tier=tier.name)
            assert q.strike_usd == tiers[tier.name].strike_usd and q.tier == tier.name
            # Only the vols' 1e-4 cells separate it from the exact tier quote.
            vega = float(bs_greeks(spot, q.strike_usd, T, 0.0, q.vol_strike_annual, False).vega)
            assert abs(q.premium_usd - tiers[tier.name].premium_usd) <= 2.0 * 2 * vega * 1e-4 * 1.2 + 0.02
    assert (cache.misses, cache.hits) == (3, 9)  # one cell per tier, whatever the spot


def test_cache_evicts_the_least_recently_used():
    cache = PremiumCache(maxsize=2)
    ask = lambda strike: cache.get_or_compute(SURFACE, SPOT, strike, 7 * DAY, 1.0, 0.5)  # noqa: E731
    ask(30_000.0)
    ask(32_000.0)
    ask(30_000.0)  # hit; 32,000 is now the least recently used
    ask(34_000.0)  # evicts 32,000
    assert len(cache) == 2 and (cache.hits, cache.misses) == (1, 3)
    ask(30_000.0)
    assert cache.hits == 2
    ask(32_000.0)
    assert cache.misses == 4
    assert cache.hit_rate == pytest.approx(2 / 6)
    cache.clear()
    assert len(cache) == 0 and math.isnan(cache.hit_rate)


def test_cache_hit_rate_on_a_repeated_stream():
    cache = PremiumCache()
    config = PremiumConfig()
    rng = np.random.default_rng(3)
    # 600 requests over ten minutes: 3 tiers x 2 expiries, spot wandering ~0.02 % a minute; the
    # vols depend only on the cell (moneyness and expiry), so there is one miss per cell.
    minutes = np.sort(rng.uniform(0.0, 10.0, 600))
    spot = SPOT * np.exp(0.0002 * np.cumsum(rng.standard_normal(600)) / np.sqrt(60.0))
    expiry_s = np.array([7.0, 30.0]) * 86_400.0
    keys = set()
    for m, s, tier, e in zip(minutes, spot, rng.integers(0, 3, 600), rng.integers(0, 2, 600)):
        t = config.tiers[int(tier)]
        years = (expiry_s[e] - 60.0 * m) / (365 * 86_400)
        cache.get_or_compute(SURFACE, float(s), float(s) * t.strike_fraction, years, 1.0, 0.5,
                             config=config, tier=t.name)
        cells = cache.canonical_inputs(float(s), float(s) * t.strike_fraction, years, 1.0,
                                       strike_fraction=t.strike_fraction)[0]
        keys.add(cells + (t.name,))
    assert cache.hits + cache.misses == 600
    assert cache.misses == len(keys) and len(keys) <= 3 * 2 * 11
    assert cache.hit_rate == pytest.approx(1 - len(keys) / 600)


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("kwargs, message", [
    (dict(spot_usd=0.0), "spot_usd must be"),
    (dict(spot_usd=math.nan), "spot_usd must be"),
    (dict(strike_usd=-1.0), "strike_usd must be"),
    (dict(expiry_years=0.0), "expiry_years must be"),
    (dict(amount_coin=-2.0), "amount_coin must be"),
    (dict(reference_vol_annual=55.0), "annualized fraction"),
    (dict(reference_vol_annual=0.0), "reference_vol_annual must be"),
    (dict(tier="gold"), "no tier 'gold'"),
])
def test_bad_inputs_are_clear_value_errors(kwargs, message):
    args = dict(spot_usd=SPOT, strike_usd=36_000.0, expiry_years=7 * DAY, amount_coin=1.0,
                reference_vol_annual=0.5)
    with pytest.raises(ValueError, match=message):
        quote_from_surface(SURFACE, **{**args, **kwargs})
    with pytest.raises(ValueError, match=message):
        PremiumCache().get_or_compute(SURFACE, **{**args, **kwargs})


@pytest.mark.parametrize("kwargs, message", [
    (dict(tiers=()), "non-empty"),
    (dict(tiers=(Tier("a", 0.9, 0.1), Tier("a", 0.8, 0.1))), "unique"),
    (dict(jump_mode="sideways"), "jump_mode"),
    (dict(rounding_tick_usd=-0.01), "rounding_tick_usd"),
    (dict(rate_annual=5.0), "fraction"),
    (dict(vol_of_vol_annual=math.inf), "vol_of_vol_annual"),
    (dict(min_diffusion_fraction=0.0), "min_diffusion_fraction"),
    (dict(jumps=(6.0, -0.08, 0.06)), "MertonJumps"),
])
def test_bad_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PremiumConfig(**kwargs)


def test_bad_tiers_surfaces_and_caches_are_refused():
    with pytest.raises(ValueError, match="fraction of spot"):
        Tier("basic", 80.0, 0.1)
    with pytest.raises(ValueError, match="markup_fraction"):
        Tier("basic", 0.8, -0.1)
    with pytest.raises(ValueError, match="needs a name"):
        Tier("", 0.8, 0.1)

    class Broken(SsviSurface):
        def implied_vol(self, k, T):
            return np.full(np.shape(k), np.nan)

    with pytest.raises(ValueError, match="surface.implied_vol gave nan"):
        quote_from_surface(Broken(), SPOT, 36_000.0, 7 * DAY, 1.0, 0.5)
    with pytest.raises(ValueError, match="maxsize"):
        PremiumCache(maxsize=0)
    with pytest.raises(ValueError, match="vol_precision"):
        PremiumCache(vol_precision=0.0)
    with pytest.raises(ValueError, match="annualized fraction"):
        FlatSurface(60.0)
    with pytest.raises(ValueError, match="too many for the Merton series"):
        merton_price(SPOT, 36_000.0, 1.0, 0.0, 0.5, MertonJumps(1e5, -0.001, 0.001))
