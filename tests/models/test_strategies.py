"""Income strategies (models/strategies.py): payoff identities, put-call parity (a covered call is
a short put plus a bill), collar bounds, the lognormal closed forms against quadrature and Monte
Carlo paths from models.scenarios, delta strikes against the flat-vol closed form, and the strike
optimizer against the strikes it must find in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from models.option_chain import BTC_SURFACE, atm_vol, implied_vol_surface
from models.pricing import bs_greeks, bs_price
from models.scenarios import gbm_paths, historical_var_es
from models.strategies import (
    OBJECTIVES, STRATEGY_KINDS, IncomeStrategy, LognormalOutlook, Market, StrategyAssessment,
    StrikeChoice, assess, assess_lognormal, assess_monte_carlo, breakevens_usd, build_strategy,
    cash_secured_put, collar, compare_strategies, covered_call, max_gain_usd, max_loss_usd,
    optimize_strike, option_premium_usd, payoff_grid, pnl_at_expiry_usd, protective_put,
    resolve_strike, risk_neutral_outlook, strike_from_delta, strike_from_moneyness, surface_vol,
    terminal_value_usd, zero_cost_collar_call_strike,
)

SPOT, T, RATE = 100_000.0, 30 / 365, 0.03


class SsviSurface:
    """models.option_chain's SSVI surface behind the two methods the strategies use."""

    def __init__(self, params=BTC_SURFACE):
        self.params = params

    def implied_vol(self, k, T):
        return implied_vol_surface(k, T, self.params)

    def atm_vol(self, T):
        return atm_vol(T, self.params)


class FlatSurface:
    def __init__(self, vol: float):
        self.vol = vol

    def implied_vol(self, k, T):
        return np.full(np.shape(k), self.vol)

    def atm_vol(self, T):
        return self.vol


MARKET = Market(SPOT, T, SsviSurface(), RATE)


def _four(market: Market = MARKET, amount: float = 1.0) -> list[IncomeStrategy]:
    return [covered_call(market, 110_000.0, amount), cash_secured_put(market, 92_000.0, amount),
            collar(market, 90_000.0, 112_000.0, amount), protective_put(market, 90_000.0, amount)]


# --------------------------------------------------------------------------- pricing, strikes


def test_legs_are_priced_at_the_surface_vol_for_their_strike():
    strike = 85_000.0
    k = math.log(strike / (SPOT * math.exp(RATE * T)))
    vol = float(implied_vol_surface(k, T, BTC_SURFACE))
    assert surface_vol(MARKET, strike) == pytest.approx(vol, rel=1e-14)
    assert float(option_premium_usd(MARKET, strike, False)) == pytest.approx(
        float(bs_price(SPOT, strike, T, RATE, vol, False)), rel=1e-14)
    strategy = protective_put(MARKET, strike)
    assert strategy.book.legs[0].vol_annual == pytest.approx(vol, rel=1e-14)
    assert strategy.premium_income_usd == pytest.approx(-float(bs_price(SPOT, strike, T, RATE,
                                                                         vol, False)))


def test_strike_choices():
    assert strike_from_moneyness(MARKET, 1.1) == pytest.approx(110_000.0)
    assert resolve_strike(MARKET, 95_000, True) == 95_000.0
    assert resolve_strike(MARKET, StrikeChoice(strike_usd=95_000.0), True) == 95_000.0
    assert resolve_strike(MARKET, StrikeChoice(moneyness=0.9), False) == pytest.approx(90_000.0)
    for target, call in ((0.25, True), (0.5, True), (0.10, True), (-0.25, False), (-0.05, False)):
        strike = resolve_strike(MARKET, StrikeChoice(delta=target), call)
        delta = float(bs_greeks(SPOT, strike, T, RATE, surface_vol(MARKET, strike), call).delta)
        assert delta == pytest.approx(target, abs=1e-10)
    for bad in (dict(), dict(strike_usd=1.0, delta=0.2)):
        with pytest.raises(ValueError):
            StrikeChoice(**bad)
    for delta, call in ((0.0, True), (1.2, True), (0.25, False), (-1.0, False)):
        with pytest.raises(ValueError):
            strike_from_delta(MARKET, delta, call)
    with pytest.raises(ValueError):
        Market(SPOT, T, object())


@settings(max_examples=30, deadline=None)
@given(st.floats(0.02, 0.98), st.floats(0.2, 1.5), st.floats(0.01, 2.0), st.floats(-0.02, 0.1))
def test_delta_strike_on_a_flat_surface_is_the_closed_form(delta, vol, expiry, rate):
    # N(d1) = delta  =>  K = F exp(-vol sqrt(T) N^-1(delta) + vol^2 T / 2).
    market = Market(SPOT, expiry, FlatSurface(vol), rate)
    forward = SPOT * math.exp(rate * expiry)
    expected = forward * math.exp(-vol * math.sqrt(expiry) * stats.norm.ppf(delta)
                                  + 0.5 * vol * vol * expiry)
    assert strike_from_delta(market, delta, True) == pytest.approx(expected, rel=1e-9)
    # A put's delta is the call's minus one at the same strike.
    assert strike_from_delta(market, delta - 1.0, False) == pytest.approx(expected, rel=1e-9)


# --------------------------------------------------------------------------- payoffs


def test_payoff_identities_at_expiry():
    s_t = np.linspace(0.0, 200_000.0, 4001)
    amount = 2.5
    cc, csp, col, pp = _four(amount=amount)
    np.testing.assert_allclose(terminal_value_usd(cc, s_t), amount * np.minimum(s_t, 110_000.0),
                               rtol=1e-14, atol=1e-9)
    np.testing.assert_allclose(terminal_value_usd(csp, s_t), amount * np.minimum(s_t, 92_000.0),
                               rtol=1e-14, atol=1e-9)
    np.testing.assert_allclose(terminal_value_usd(col, s_t),
                               amount * np.clip(s_t, 90_000.0, 112_000.0), rtol=1e-14, atol=1e-9)
    np.testing.assert_allclose(terminal_value_usd(pp, s_t), amount * np.maximum(s_t, 90_000.0),
                               rtol=1e-14, atol=1e-9)
    growth = math.exp(RATE * T)
    for strategy in (cc, csp, col, pp):
        np.testing.assert_allclose(pnl_at_expiry_usd(strategy, s_t),
                                   terminal_value_usd(strategy, s_t)
                                   - strategy.outlay_usd * growth, rtol=1e-14, atol=1e-9)
    call = float(bs_price(SPOT, 110_000.0, T, RATE, surface_vol(MARKET, 110_000.0), True))
    assert cc.premium_income_usd == pytest.approx(amount * call, rel=1e-14)
    assert cc.outlay_usd == pytest.approx(amount * (SPOT - call), rel=1e-14)
    assert cc.capital_usd == amount * SPOT
    assert csp.capital_usd == pytest.approx(amount * 92_000.0 / growth, rel=1e-14)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.5, 2.0), st.floats(0.01, 1.5), st.floats(-0.02, 0.15), st.floats(0.1, 5.0))
def test_covered_call_is_a_short_put_plus_a_bill_at_the_same_strike(moneyness, expiry, rate,
                                                                     amount):
    market = Market(SPOT, expiry, SsviSurface(), rate)
    strike = moneyness * SPOT
    cc, csp = covered_call(market, strike, amount), cash_secured_put(market, strike, amount)
    # Put-call parity at the same strike (and so the same surface vol): S - C = K e^{-rT} - P.
    assert cc.outlay_usd == pytest.approx(csp.outlay_usd, rel=1e-10, abs=1e-7 * SPOT)
    s_t = np.linspace(0.0, 3.0 * SPOT, 301)
    np.testing.assert_allclose(pnl_at_expiry_usd(cc, s_t), pnl_at_expiry_usd(csp, s_t),
                               rtol=1e-10, atol=1e-7 * SPOT * amount)
    assert breakevens_usd(cc) == pytest.approx(breakevens_usd(csp), rel=1e-10)
    assert max_gain_usd(cc) == pytest.approx(max_gain_usd(csp), rel=1e-9, abs=1e-6 * SPOT)
    assert max_loss_usd(cc) == pytest.approx(max_loss_usd(csp), rel=1e-9, abs=1e-6 * SPOT)
    outlook = LognormalOutlook(0.1, 0.6)
    a, b = assess_lognormal(cc, outlook, 0.95), assess_lognormal(csp, outlook, 0.95)
    assert a.expected_pnl_usd == pytest.approx(b.expected_pnl_usd, rel=1e-8, abs=1e-6 * SPOT)
    assert a.probability_of_profit == pytest.approx(b.probability_of_profit, abs=1e-9)
    assert a.es_usd == pytest.approx(b.es_usd, rel=1e-8, abs=1e-6 * SPOT)
    # A collar with both strikes equal is riskless: it earns exactly the rate.
    riskless = collar(market, strike, strike, amount)
    np.testing.assert_allclose(pnl_at_expiry_usd(riskless, s_t), 0.0, atol=1e-7 * SPOT * amount)


def test_breakevens_and_extremes_in_closed_form():
    cc, csp, col, pp = _four()
    g = math.exp(RATE * T)
    call_c, put_csp = cc.premium_income_usd, csp.premium_income_usd
    assert cc.outlay_usd == pytest.approx(SPOT - call_c, rel=1e-14)
    assert breakevens_usd(cc) == pytest.approx(((SPOT - call_c) * g,))
    assert max_gain_usd(cc) == pytest.approx(110_000.0 - (SPOT - call_c) * g)
    assert max_loss_usd(cc) == pytest.approx(cc.outlay_usd * g)
    assert breakevens_usd(csp) == pytest.approx((92_000.0 - put_csp * g,))
    assert max_gain_usd(csp) == pytest.approx(put_csp * g)
    assert max_loss_usd(csp) == pytest.approx(92_000.0 - put_csp * g)
    # Collar: the value is pinned within [K_p, K_c].
    assert max_gain_usd(col) == pytest.approx(112_000.0 - col.outlay_usd * g)
    assert max_loss_usd(col) == pytest.approx(col.outlay_usd * g - 90_000.0)
    assert breakevens_usd(col) == pytest.approx((col.outlay_usd * g,))
    assert max_gain_usd(pp) == math.inf
    assert max_loss_usd(pp) == pytest.approx(pp.outlay_usd * g - 90_000.0)
    assert breakevens_usd(pp) == pytest.approx((pp.outlay_usd * g,))
    for strategy in (cc, csp, col, pp):
        for b in breakevens_usd(strategy):
            assert float(pnl_at_expiry_usd(strategy, b)) == pytest.approx(0.0, abs=1e-7 * SPOT)
        grid = payoff_grid(strategy)
        finite_gain = max_gain_usd(strategy)
        assert grid["pnl_usd"].max() <= finite_gain + 1e-6
        assert grid["pnl_usd"].min() >= -max_loss_usd(strategy) - 1e-6
        assert grid["spot_usd"].shape == grid["value_usd"].shape == grid["pnl_usd"].shape
        assert np.all(np.diff(grid["spot_usd"]) > 0)
        assert set(grid["strikes_usd"]) <= set(grid["spot_usd"])


def test_collar_validation_and_build_strategy():
    with pytest.raises(ValueError):
        collar(MARKET, 110_000.0, 90_000.0)
    assert build_strategy("collar", MARKET, put_strike=90_000.0, call_strike=110_000.0) == \
        collar(MARKET, 90_000.0, 110_000.0)
    assert build_strategy("covered_call", MARKET, call_strike=StrikeChoice(delta=0.3)) == \
        covered_call(MARKET, strike_from_delta(MARKET, 0.3, True))
    for kind, kwargs in (("covered_call", {"put_strike": 1.0}), ("collar", {"put_strike": 1.0}),
                         ("cash_secured_put", {}), ("straddle", {"put_strike": 1.0})):
        with pytest.raises(ValueError):
            build_strategy(kind, MARKET, **kwargs)


# --------------------------------------------------------------------------- assessments


def _lognormal_density(outlook: LognormalOutlook):
    mu = math.log(SPOT) + (outlook.drift_annual - 0.5 * outlook.vol_annual**2) * T
    return stats.lognorm(s=outlook.vol_annual * math.sqrt(T), scale=math.exp(mu))


def _quad(f, cuts):
    """Integral over [0, inf) split at the kinks."""
    edges = [0.0, *sorted(cuts), math.inf]
    return sum(integrate.quad(f, a, b, limit=200, epsabs=1e-10, epsrel=1e-11)[0]
               for a, b in zip(edges[:-1], edges[1:]))


@pytest.mark.parametrize("index", range(4), ids=STRATEGY_KINDS)
def test_lognormal_closed_forms_against_quadrature(index):
    strategy = _four()[index]
    outlook, c = LognormalOutlook(0.15, 0.55), 0.99
    dist = _lognormal_density(outlook)
    got = assess_lognormal(strategy, outlook, c)
    cuts = [leg.strike_usd for leg in strategy.book.legs]

    def pnl(s):
        return float(pnl_at_expiry_usd(strategy, s))

    mean = _quad(lambda s: pnl(s) * dist.pdf(s), cuts)
    second = _quad(lambda s: pnl(s) ** 2 * dist.pdf(s), cuts)
    assert got.expected_pnl_usd == pytest.approx(mean, rel=1e-7, abs=1e-6)
    assert got.stdev_pnl_usd == pytest.approx(math.sqrt(second - mean**2), rel=1e-6)
    # Every kind's P&L rises through one breakeven: profit is the price ending above it.
    (breakeven,) = got.breakevens_usd
    assert got.probability_of_profit == pytest.approx(dist.sf(breakeven), abs=1e-12)
    q = dist.ppf(1 - c)
    assert got.var_usd == pytest.approx(-pnl(q), rel=1e-9)
    tail = _quad(lambda s: pnl(s) * dist.pdf(s) * (s <= q), [*cuts, q])
    assert got.es_usd == pytest.approx(-tail / (1 - c), rel=1e-6)
    assert got.es_usd >= got.var_usd
    short_calls, short_puts = strategy.short_calls_usd, strategy.short_puts_usd
    expected_assignment = ((dist.sf(min(short_calls)) if short_calls else 0.0)
                           + (dist.cdf(max(short_puts)) if short_puts else 0.0))
    assert got.assignment_probability == pytest.approx(expected_assignment, abs=1e-12)
    assert got.annualized_yield == pytest.approx(
        strategy.premium_income_usd / strategy.capital_usd / T, rel=1e-14)
    assert got.sharpe_annual == pytest.approx(mean / got.stdev_pnl_usd / math.sqrt(T), rel=1e-6)


def test_risk_neutral_flat_vol_strategies_earn_the_rate_in_expectation():
    # Priced and assessed at one vol with the drift at the rate: E[pnl] = 0 for every position.
    market = Market(SPOT, 0.25, FlatSurface(0.7), 0.05)
    outlook = risk_neutral_outlook(market)
    assert outlook == LognormalOutlook(0.05, 0.7)
    for strategy in _four(market):
        got = assess_lognormal(strategy, outlook)
        assert got.expected_pnl_usd == pytest.approx(0.0, abs=1e-8 * SPOT)


def test_monte_carlo_assessment_agrees_with_the_closed_form():
    outlook, n = LognormalOutlook(0.1, 0.6), 200_000
    terminal = gbm_paths(SPOT, outlook.vol_annual, T, 1, n, 5, drift_annual=0.1)[:, -1]
    for strategy in _four():
        mc = assess_monte_carlo(strategy, terminal, 0.99)
        exact = assess(strategy, outlook, 0.99)
        assert mc.method == "monte_carlo" and exact.method == "lognormal"
        assert abs(mc.expected_pnl_usd - exact.expected_pnl_usd) < 3.0 * mc.expected_pnl_stderr_usd
        p = exact.probability_of_profit
        assert abs(mc.probability_of_profit - p) < 3.0 * math.sqrt(p * (1 - p) / n)
        p = exact.assignment_probability
        assert abs(mc.assignment_probability - p) < 3.0 * math.sqrt(p * (1 - p) / n) + 1e-12
        assert mc.stdev_pnl_usd == pytest.approx(exact.stdev_pnl_usd, rel=0.02)
        assert mc.es_usd == pytest.approx(exact.es_usd, rel=0.02)
        pnl = pnl_at_expiry_usd(strategy, terminal)
        ref = historical_var_es(pnl, 0.99)
        assert (mc.var_usd, mc.es_usd) == (ref.var, ref.es)
        assert mc.breakevens_usd == exact.breakevens_usd
    with pytest.raises(ValueError):
        assess_monte_carlo(_four()[0], np.array([1.0]))
    with pytest.raises(ValueError):  # whole paths, not terminal prices
        assess_monte_carlo(_four()[0], gbm_paths(SPOT, 0.5, T, 3, 10, 1))


def test_comparison_table_ranks_by_risk_adjusted_yield():
    outlook = LognormalOutlook(0.2, 0.5)
    assessments = [assess(s, outlook) for s in _four()]
    table = compare_strategies(assessments)
    assert list(table["rank"]) == [1, 2, 3, 4]
    assert list(table["sharpe_annual"]) == sorted((a.sharpe_annual for a in assessments),
                                                  reverse=True)
    assert set(table["kind"]) == set(STRATEGY_KINDS)
    by_yield = compare_strategies(assessments, rank_by="annualized_yield")
    assert by_yield["annualized_yield"].is_monotonic_decreasing
    assert by_yield.iloc[-1]["kind"] == "protective_put"  # the baseline pays premium
    # A degenerate sample (no spread) has no Sharpe ratio and goes last.
    flat = assess_monte_carlo(_four()[0], np.full(10, SPOT))
    assert math.isnan(flat.sharpe_annual)
    assert compare_strategies([flat, *assessments]).iloc[-1]["name"] == flat.name
    with pytest.raises(ValueError):
        compare_strategies(assessments, rank_by="vibes")
    with pytest.raises(ValueError):
        compare_strategies([])


# --------------------------------------------------------------------------- optimization


@pytest.mark.parametrize("kind, limit", [("covered_call", 0.2), ("covered_call", 0.05),
                                         ("cash_secured_put", 0.25)])
def test_max_yield_under_an_assignment_limit_is_the_quantile_strike(kind, limit):
    # Premium per capital rises as the strike nears the money, so the best strike is where the
    # assignment probability reaches the limit: a lognormal quantile.
    outlook = LognormalOutlook(0.05, 0.5)
    best = optimize_strike(kind, MARKET, outlook, max_assignment_probability=limit)
    dist = _lognormal_density(outlook)
    expected = dist.isf(limit) if kind == "covered_call" else dist.ppf(limit)
    assert best.strike_usd == pytest.approx(expected, rel=1e-8)
    assert best.assessment.assignment_probability <= limit + 1e-12
    assert best.objective_value >= best.grid_objective[best.grid_feasible].max()
    assert best.objective_value == best.assessment.annualized_yield
    assert best.strategy.kind == kind


def test_max_expected_pnl_covered_call_on_a_flat_surface():
    # With drift = r, d E[pnl] / dK = P(S_T > K) - Q(S_T > K): zero where the two lognormal
    # survival functions cross, K* = F exp(vol_Q vol_P T / 2).
    vol_q, vol_p = 0.8, 0.45
    market = Market(SPOT, T, FlatSurface(vol_q), RATE)
    best = optimize_strike("covered_call", market, LognormalOutlook(RATE, vol_p),
                           objective="expected_pnl_usd", moneyness_range=(0.7, 1.5))
    forward = SPOT * math.exp(RATE * T)
    assert best.strike_usd == pytest.approx(forward * math.exp(vol_q * vol_p * T / 2), rel=1e-5)
    assert best.objective_value >= best.grid_objective.max()


def test_optimizing_over_simulated_prices_respects_the_constraint():
    terminal = gbm_paths(SPOT, 0.6, T, 1, 20_000, 8, drift_annual=0.05)[:, -1]
    best = optimize_strike("covered_call", MARKET, terminal, max_assignment_probability=0.1)
    assert np.mean(terminal > best.strike_usd) <= 0.1
    # The boundary is the empirical 90 % quantile of the terminal price.
    assert best.strike_usd == pytest.approx(np.quantile(terminal, 0.9), rel=2e-3)


@pytest.mark.parametrize("kind", STRATEGY_KINDS)
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_kind_and_objective_beats_its_grid(kind, objective):
    best = optimize_strike(kind, MARKET, LognormalOutlook(0.1, 0.55), objective=objective,
                           put_strike=85_000.0, n_grid=41,
                           max_assignment_probability=0.4 if kind != "protective_put" else None)
    assert isinstance(best.assessment, StrategyAssessment)
    assert best.objective_value >= np.max(best.grid_objective[best.grid_feasible]) - 1e-12
    assert best.objective_value == getattr(best.assessment, objective)


def test_optimizer_validation():
    outlook = LognormalOutlook(0.0, 0.5)
    for kwargs in (dict(objective="fun"), dict(max_assignment_probability=1.5),
                   dict(moneyness_range=(1.2, 1.1)), dict(max_assignment_probability=0.0,
                                                          moneyness_range=(0.5, 0.9))):
        with pytest.raises(ValueError):
            optimize_strike("covered_call", MARKET, outlook, **kwargs)
    with pytest.raises(ValueError):
        optimize_strike("collar", MARKET, outlook)
    with pytest.raises(ValueError):
        optimize_strike("strangle", MARKET, outlook)


def test_zero_cost_collar():
    for put_strike in (80_000.0, 90_000.0, StrikeChoice(delta=-0.2)):
        call_strike = zero_cost_collar_call_strike(MARKET, put_strike)
        strategy = collar(MARKET, put_strike, call_strike)
        assert strategy.premium_income_usd == pytest.approx(0.0, abs=1e-7)
        assert call_strike > MARKET.forward_usd
    with pytest.raises(ValueError):
        zero_cost_collar_call_strike(MARKET, 1.01 * MARKET.forward_usd)
