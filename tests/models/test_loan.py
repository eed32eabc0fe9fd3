"""models.loan: interest against hand computations and QuantLib, the repayment priority, the LTV
bands at their exact boundaries, plan 001's reserve formula at and between its breakpoints (against
the seed's own code), the reserve state machine, the profit queue, and the treasury."""

from __future__ import annotations

import dataclasses
import math
from datetime import date

import numpy as np
import pytest
import QuantLib as ql
from hypothesis import given, settings
from hypothesis import strategies as st

from models.loan import (
    BAND_NAMES,
    LTV_BANDS,
    DistributionConfig,
    LoanConfig,
    LtvBandConfig,
    ReserveConfig,
    TreasuryConfig,
    accrue,
    accrued_interest_usd,
    collateral_value_usd,
    deploy_reserve,
    distribute_profit,
    loan_to_value,
    ltv_action,
    ltv_band,
    ltv_band_index,
    mark_treasury,
    open_loan,
    open_reserve,
    open_treasury,
    refill_reserve,
    repay,
    reserve_deployment_target_usd,
    trading_state,
    treasury_profit,
)

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
DAY = 86_400.0
LOAN = LoanConfig()
RESERVE = ReserveConfig()


def seed_reserve_deployment(ltv: float) -> float:
    """Plan 001, Sprint 2.2, verbatim: the reference the vectorized formula must reproduce."""
    if ltv < 0.65:
        return 0
    elif ltv < 0.75:
        return 3000 * (ltv - 0.65) / 0.10
    elif ltv < 0.85:
        return 3000 + 5000 * (ltv - 0.75) / 0.10
    else:
        return 10000  # Deploy all


def below(x: float) -> float:
    """The largest float below ``x``."""
    return float(np.nextafter(x, -np.inf))


# --------------------------------------------------------------------------- interest


def test_thirty_days_of_interest_on_the_default_loan_by_hand():
    # 16,200 * 6 % = 972 USD a year; 30/365 of it = 29,160 / 365 = 79.890410958904...
    loan = accrue(open_loan(LOAN, T0), T0 + 30 * DAY)
    assert loan.accrued_interest_usd == pytest.approx(79.89041095890411, rel=1e-13)
    assert loan.outstanding_usd == pytest.approx(16_200 + 79.89041095890411, rel=1e-13)
    assert loan.principal_outstanding_usd == 16_200.0
    assert loan.last_accrual_ts_s == T0 + 30 * DAY


def test_a_year_of_interest_is_the_apr_and_act_360_counts_a_shorter_year():
    year = accrue(open_loan(LOAN, T0), T0 + 365 * DAY)
    assert year.accrued_interest_usd == pytest.approx(972.0, rel=1e-13)
    act360 = accrue(open_loan(LoanConfig(day_count=360), T0), T0 + 30 * DAY)
    assert act360.accrued_interest_usd == pytest.approx(81.0, rel=1e-13)  # 972 * 30 / 360


def test_interest_is_simple_on_principal_only_and_follows_a_principal_repayment():
    loan = accrue(open_loan(LOAN, T0), T0 + 30 * DAY)
    interest_30d = 16_200 * 0.06 * 30 / 365
    loan, paid = repay(loan, interest_30d + 1_000.0, T0 + 30 * DAY)
    assert paid.interest_usd == pytest.approx(interest_30d, rel=1e-13)
    assert paid.principal_usd == pytest.approx(1_000.0, rel=1e-12)
    assert loan.principal_outstanding_usd == pytest.approx(15_200.0, rel=1e-13)
    loan = accrue(loan, T0 + 60 * DAY)
    # 15,200 * 0.06 * 30 / 365 = 74.958904...; no interest on the interest that was paid
    assert loan.accrued_interest_usd == pytest.approx(74.95890410958904, rel=1e-12)
    # Left unpaid, interest does not compound either: 60 days on 16,200 is twice 30 days.
    unpaid = accrue(open_loan(LOAN, T0), T0 + 60 * DAY)
    assert unpaid.accrued_interest_usd == pytest.approx(2 * interest_30d, rel=1e-13)


@pytest.mark.parametrize("days", [1, 30, 91, 365])
def test_interest_matches_quantlib_simple_rate(days):
    start = ql.Date(14, 11, 2023)
    end = start + ql.Period(days, ql.Days)
    rate = ql.InterestRate(0.06, ql.Actual365Fixed(), ql.Simple, ql.Annual)
    expected = 16_200.0 * (rate.compoundFactor(start, end) - 1.0)
    span_s = (date(end.year(), end.month(), end.dayOfMonth())
              - date(2023, 11, 14)).total_seconds()
    loan = accrue(open_loan(LOAN, T0), T0 + span_s)
    assert loan.accrued_interest_usd == pytest.approx(expected, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 40 * DAY), min_size=1, max_size=20))
def test_accruing_in_steps_equals_accruing_at_once(steps_s):
    stamps = T0 + np.cumsum(steps_s)
    loan = open_loan(LOAN, T0)
    for ts in stamps:
        loan = accrue(loan, float(ts))
    once = accrue(open_loan(LOAN, T0), float(stamps[-1]))
    assert loan.accrued_interest_usd == pytest.approx(once.accrued_interest_usd, rel=1e-9,
                                                      abs=1e-9)
    assert once.accrued_interest_usd == pytest.approx(
        accrued_interest_usd(16_200.0, 0.06, float(stamps[-1]) - T0), rel=1e-12, abs=1e-12)


def test_accrual_refuses_to_go_back_in_time_and_is_idle_at_the_same_time():
    loan = accrue(open_loan(LOAN, T0), T0 + DAY)
    assert accrue(loan, T0 + DAY) is loan
    with pytest.raises(ValueError, match="before the last accrual"):
        accrue(loan, T0)
    with pytest.raises(ValueError):
        accrue(loan, math.nan)


def test_vectorized_interest_broadcasts():
    got = accrued_interest_usd(np.array([16_200.0, 8_100.0]), 0.06, np.array([[DAY], [365 * DAY]]))
    assert got.shape == (2, 2)
    np.testing.assert_allclose(got, [[972 / 365, 486 / 365], [972.0, 486.0]], rtol=1e-13)
    with pytest.raises(ValueError):
        accrued_interest_usd(16_200.0, 0.06, -1.0)


# --------------------------------------------------------------------------- repayment priority


def test_repayment_pays_interest_before_principal():
    loan = accrue(open_loan(LOAN, T0), T0 + 30 * DAY)
    interest = loan.accrued_interest_usd
    # Less than the interest due: all of it goes to interest, none to principal.
    small, paid = repay(loan, 50.0, T0 + 30 * DAY)
    assert (paid.interest_usd, paid.principal_usd, paid.unused_usd) == (50.0, 0.0, 0.0)
    assert small.accrued_interest_usd == pytest.approx(interest - 50.0)
    assert small.principal_outstanding_usd == 16_200.0
    # More: interest cleared first, the rest to principal.
    big, paid = repay(loan, 1_000.0, T0 + 30 * DAY)
    assert paid.interest_usd == pytest.approx(interest)
    assert paid.principal_usd == pytest.approx(1_000.0 - interest)
    assert big.accrued_interest_usd == 0.0
    assert big.interest_paid_usd == pytest.approx(interest)
    assert big.principal_paid_usd == pytest.approx(1_000.0 - interest)
    assert big.paid_to_date_usd == pytest.approx(1_000.0)


def test_repay_accrues_to_its_own_time_first():
    loan = open_loan(LOAN, T0)
    loan, paid = repay(loan, 100.0, T0 + 30 * DAY)
    assert paid.ts_s == T0 + 30 * DAY
    assert paid.interest_usd == pytest.approx(972.0 * 30 / 365, rel=1e-13)
    assert paid.principal_usd == pytest.approx(100.0 - 972.0 * 30 / 365, rel=1e-12)


def test_paying_off_the_loan_returns_the_rest_unused():
    loan = accrue(open_loan(LOAN, T0), T0 + 10 * DAY)
    owed = loan.outstanding_usd
    loan, paid = repay(loan, 20_000.0, T0 + 10 * DAY)
    assert loan.is_repaid and loan.outstanding_usd == 0.0
    assert paid.total_usd == pytest.approx(owed)
    assert paid.unused_usd == pytest.approx(20_000.0 - owed)
    # A repaid loan accrues nothing more.
    assert accrue(loan, T0 + 400 * DAY).accrued_interest_usd == 0.0


def test_the_repayment_order_is_configurable():
    config = LoanConfig(repayment_order=("principal", "interest"))
    loan = accrue(open_loan(config, T0), T0 + 30 * DAY)
    loan, paid = repay(loan, 1_000.0, T0 + 30 * DAY)
    assert (paid.principal_usd, paid.interest_usd) == (1_000.0, 0.0)
    # One bucket only, on request.
    loan2 = accrue(open_loan(LOAN, T0), T0 + 30 * DAY)
    _, only_principal = repay(loan2, 500.0, T0 + 30 * DAY, order=("principal",))
    assert (only_principal.principal_usd, only_principal.interest_usd) == (500.0, 0.0)
    with pytest.raises(ValueError):
        repay(loan2, 1.0, T0 + 30 * DAY, order=("fees",))
    with pytest.raises(ValueError):
        repay(loan2, -1.0, T0 + 30 * DAY)


@settings(max_examples=80, deadline=None)
@given(st.floats(0.0, 400.0), st.floats(0.0, 30_000.0))
def test_a_repayment_conserves_money(days, amount):
    loan = accrue(open_loan(LOAN, T0), T0 + days * DAY)
    new, paid = repay(loan, amount, T0 + days * DAY)
    assert paid.interest_usd + paid.principal_usd + paid.unused_usd == pytest.approx(amount)
    assert new.outstanding_usd == pytest.approx(loan.outstanding_usd - paid.total_usd, abs=1e-9)
    assert min(paid.interest_usd, paid.principal_usd, paid.unused_usd) >= 0.0
    # Principal is touched only once the interest is cleared.
    assert paid.principal_usd == 0.0 or new.accrued_interest_usd == 0.0


def test_loan_config_is_validated():
    for bad in (dict(principal_usd=0.0), dict(apr=-0.01), dict(apr=math.nan), dict(day_count=0),
                dict(repayment_order=("interest",)), dict(repayment_order=("interest", "fees"))):
        with pytest.raises(ValueError):
            LoanConfig(**bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        LOAN.apr = 0.1  # type: ignore[misc]


# --------------------------------------------------------------------------- LTV and bands


def test_ltv_is_loan_with_accrued_interest_over_collateral_value():
    loan = accrue(open_loan(LOAN, T0), T0 + 30 * DAY)
    collateral = collateral_value_usd(0.27, 100_000.0)
    assert collateral == pytest.approx(27_000.0)
    assert loan_to_value(loan.outstanding_usd, collateral) == pytest.approx(
        (16_200 + 972 * 30 / 365) / 27_000.0, rel=1e-13)


def test_ltv_edge_cases_and_vectorization():
    got = loan_to_value(np.array([16_200.0, 0.0, 16_200.0, 0.0, 16_200.0]),
                        np.array([27_000.0, 0.0, 0.0, np.nan, -5.0]))
    np.testing.assert_array_equal(got[1:], [0.0, np.inf, np.nan, np.inf])
    assert got[0] == pytest.approx(0.6)
    assert isinstance(loan_to_value(1.0, 2.0), float)
    with pytest.raises(ValueError):
        loan_to_value(-1.0, 2.0)
    with pytest.raises(ValueError):
        collateral_value_usd(-0.1, 100.0)
    assert math.isnan(collateral_value_usd(0.27, math.nan))


# Each band with its lower bound (inclusive) and the largest float below it (the band before).
BOUNDS = [(0.50, "MONITOR", "SAFE"), (0.65, "WARNING", "MONITOR"), (0.75, "CRITICAL", "WARNING"),
          (0.85, "EMERGENCY", "CRITICAL")]


@pytest.mark.parametrize("bound, band_at, band_below", BOUNDS)
def test_ltv_band_boundaries_are_exact_and_lower_bounds_inclusive(bound, band_at, band_below):
    assert ltv_band(bound) == band_at
    assert ltv_band(below(bound)) == band_below
    assert BAND_NAMES[ltv_band_index(bound)] == band_at
    assert BAND_NAMES[ltv_band_index(below(bound))] == band_below


def test_band_extremes_and_unknown():
    assert ltv_band(0.0) == "SAFE"
    assert ltv_band(1.0) == ltv_band(5.0) == ltv_band(math.inf) == "EMERGENCY"
    assert ltv_band(math.nan) == "UNKNOWN"
    np.testing.assert_array_equal(ltv_band_index(np.array([0.0, 0.3, 0.99, np.inf, np.nan])),
                                  [0, 0, 4, 4, -1])


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 2.0) | st.sampled_from([0.5, 0.65, 0.75, 0.85]))
def test_scalar_and_vectorized_bands_agree_with_the_table(ltv):
    # The seed's table read literally: (lo, hi) with lo inclusive.
    table = [(0.0, 0.5, "SAFE"), (0.5, 0.65, "MONITOR"), (0.65, 0.75, "WARNING"),
             (0.75, 0.85, "CRITICAL"), (0.85, math.inf, "EMERGENCY")]
    expected = next(name for lo, hi, name in table if lo <= ltv < hi)
    assert ltv_band(ltv) == expected
    assert LTV_BANDS[ltv_band_index(ltv)] == expected


def test_bands_map_to_trading_states_and_actions():
    assert [trading_state(b) for b in BAND_NAMES] == [
        "ACTIVE", "ACTIVE", "REDUCING", "REDUCING", "HALTED", "HALTED"]
    with pytest.raises(ValueError):
        trading_state("PANIC")
    safe, monitor, warning, critical, emergency, unknown = (
        ltv_action(x) for x in (0.3, 0.6, 0.7, 0.8, 0.9, math.nan))
    assert safe.new_positions_allowed and monitor.new_positions_allowed
    assert (safe.position_fraction, monitor.position_fraction) == (1.0, 1.0)
    assert warning.position_fraction == 0.5 and not warning.close_losing_positions
    assert not warning.new_positions_allowed
    assert critical.position_fraction == 0.5 and critical.close_losing_positions
    assert not critical.close_all_positions
    assert emergency.close_all_positions and emergency.position_fraction == 0.0
    assert emergency.trading_state == "HALTED"
    assert unknown.trading_state == "HALTED" and not unknown.new_positions_allowed
    assert not unknown.close_all_positions  # no forced close on missing data


def test_band_config_moves_the_bounds_and_is_validated():
    bands = LtvBandConfig(monitor_ltv=0.4, warning_ltv=0.6, critical_ltv=0.7, emergency_ltv=0.8,
                          reduced_position_fraction=0.25)
    assert ltv_band(0.6, bands) == "WARNING" and ltv_band(below(0.6), bands) == "MONITOR"
    assert ltv_action(0.65, bands).position_fraction == 0.25
    with pytest.raises(ValueError):
        LtvBandConfig(warning_ltv=0.5)  # equal to monitor
    with pytest.raises(ValueError):
        LtvBandConfig(reduced_position_fraction=1.5)


# --------------------------------------------------------------------------- reserve formula


@pytest.mark.parametrize("ltv, expected", [
    (0.0, 0.0), (0.60, 0.0), (0.65, 0.0), (0.70, 1_500.0), (0.72, 2_100.0), (0.75, 3_000.0),
    (0.80, 5_500.0), (0.84, 7_500.0), (0.85, 10_000.0), (0.95, 10_000.0), (3.0, 10_000.0),
])
def test_reserve_formula_at_and_between_breakpoints(ltv, expected):
    assert reserve_deployment_target_usd(ltv) == pytest.approx(expected, abs=1e-9)
    assert reserve_deployment_target_usd(ltv) == pytest.approx(seed_reserve_deployment(ltv),
                                                               abs=1e-9)


def test_reserve_formula_limits_at_the_breakpoints():
    # Continuous at 0.65 and 0.75; plan 001's jump from 8,000 to all 10,000 at 0.85.
    assert reserve_deployment_target_usd(below(0.65)) == 0.0
    assert reserve_deployment_target_usd(below(0.75)) == pytest.approx(3_000.0, abs=1e-8)
    assert reserve_deployment_target_usd(below(0.85)) == pytest.approx(8_000.0, abs=1e-8)
    assert reserve_deployment_target_usd(0.85) == 10_000.0


def test_reserve_formula_is_vectorized_and_nan_stays_nan():
    ltv = np.array([0.5, 0.7, 0.8, 0.9, np.nan])
    got = reserve_deployment_target_usd(ltv)
    np.testing.assert_allclose(got[:4], [seed_reserve_deployment(x) for x in ltv[:4]], atol=1e-9)
    assert np.isnan(got[4])


@settings(max_examples=300, deadline=None)
@given(st.floats(0.0, 1.5))
def test_reserve_formula_agrees_with_the_seed_everywhere(ltv):
    assert reserve_deployment_target_usd(ltv) == pytest.approx(seed_reserve_deployment(ltv),
                                                               abs=1e-8)


@settings(max_examples=300, deadline=None)
@given(st.floats(0.0, 1.5), st.floats(0.0, 1.5))
def test_reserve_formula_is_monotone_non_decreasing(a, b):
    lo, hi = min(a, b), max(a, b)
    assert reserve_deployment_target_usd(lo) <= reserve_deployment_target_usd(hi)


@settings(max_examples=300, deadline=None)
@given(st.floats(0.65, below(0.85)), st.floats(0.65, below(0.85)))
def test_reserve_formula_is_continuous_on_its_ramp(a, b):
    # Lipschitz with the steeper slope, 5,000 USD per 0.10 of LTV: no jump inside [0.65, 0.85).
    gap = abs(reserve_deployment_target_usd(a) - reserve_deployment_target_usd(b))
    assert gap <= 50_000.0 * abs(a - b) + 1e-7


@settings(max_examples=300, deadline=None)
@given(st.floats(-10.0, 10.0) | st.sampled_from([0.65, 0.75, 0.85, math.nan, math.inf, -math.inf]),
       st.sampled_from([RESERVE, ReserveConfig(capacity_usd=1_000.0, start_ltv=0.5, middle_ltv=0.6,
                                               full_ltv=0.9, first_tranche_usd=100.0,
                                               second_tranche_usd=700.0, refill_below_ltv=0.5)]))
def test_one_ltv_gets_exactly_what_the_vectorized_formula_gives_it(ltv, config):
    one = reserve_deployment_target_usd(ltv, config)
    array = reserve_deployment_target_usd(np.array([ltv, 0.7]), config)[0]
    assert type(one) is float
    assert one == array or (math.isnan(one) and math.isnan(array))


def test_reserve_config_is_validated():
    for bad in (dict(start_ltv=0.8), dict(first_tranche_usd=6_000.0, second_tranche_usd=5_000.0),
                dict(refill_below_ltv=0.7), dict(capacity_usd=-1.0), dict(middle_ltv=0.9)):
        with pytest.raises(ValueError):
            ReserveConfig(**bad)


# --------------------------------------------------------------------------- reserve state machine


def test_deployment_is_the_difference_between_target_and_already_deployed():
    reserve = open_reserve(RESERVE)
    reserve, first = deploy_reserve(reserve, 0.70, T0)
    assert first.amount_usd == pytest.approx(1_500.0)
    assert (first.ltv, first.ts_s) == (0.70, T0)
    assert "0.7000" in first.reason and not first.capped
    assert reserve.balance_usd == pytest.approx(8_500.0)
    # The same LTV again, or a lower one: already deployed, nothing more.
    assert deploy_reserve(reserve, 0.70, T0 + 60)[1] is None
    assert deploy_reserve(reserve, 0.66, T0 + 60)[1] is None
    reserve, second = deploy_reserve(reserve, 0.80, T0 + 120)
    assert second.amount_usd == pytest.approx(5_500.0 - 1_500.0)
    assert second.deployed_after_usd == pytest.approx(5_500.0)
    reserve, third = deploy_reserve(reserve, 0.90, T0 + 180)
    assert third.amount_usd == pytest.approx(4_500.0)
    assert reserve.balance_usd == pytest.approx(0.0, abs=1e-9)
    assert deploy_reserve(reserve, 2.0, T0 + 240)[1] is None


def test_deployment_below_the_start_or_on_nan_does_nothing():
    reserve = open_reserve(RESERVE)
    assert deploy_reserve(reserve, below(0.65), T0) == (reserve, None)
    assert deploy_reserve(reserve, 0.65, T0) == (reserve, None)  # target 0 at the start
    assert deploy_reserve(reserve, math.nan, T0) == (reserve, None)
    with pytest.raises(ValueError):
        deploy_reserve(reserve, -0.1, T0)


def test_deployment_is_capped_by_the_balance_and_the_limit():
    short = open_reserve(RESERVE, balance_usd=2_000.0)
    short, deployment = deploy_reserve(short, 0.80, T0)
    assert deployment.amount_usd == 2_000.0 and deployment.capped
    assert "capped" in deployment.reason and short.balance_usd == 0.0
    limited, deployment = deploy_reserve(open_reserve(RESERVE), 0.9, T0, limit_usd=700.0)
    assert deployment.amount_usd == 700.0 and deployment.capped
    assert limited.balance_usd == 9_300.0


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 1.2) | st.just(math.nan), st.floats(0.0, 4_000.0)),
                min_size=1, max_size=40),
       st.floats(0.0, 10_000.0))
def test_the_reserve_never_deploys_more_than_it_holds(steps, start_balance):
    reserve = open_reserve(RESERVE, balance_usd=start_balance)
    for i, (ltv, profit) in enumerate(steps):
        before = reserve
        reserve, deployment = deploy_reserve(reserve, ltv, T0 + i)
        if deployment is not None:
            assert 0.0 < deployment.amount_usd <= before.balance_usd + 1e-9
            assert deployment.deployed_after_usd <= deployment.target_usd + 1e-9
        reserve, _ = refill_reserve(reserve, profit, ltv, T0 + i)
        assert -1e-9 <= reserve.balance_usd <= RESERVE.capacity_usd + 1e-9
        assert reserve.deployed_usd >= 0.0
        assert reserve.balance_usd == pytest.approx(
            start_balance - reserve.total_deployed_usd + reserve.total_refilled_usd, abs=1e-6)


def test_refill_only_below_the_threshold_and_up_to_capacity():
    reserve, _ = deploy_reserve(open_reserve(RESERVE), 0.80, T0)  # 5,500 out
    assert refill_reserve(reserve, 1_000.0, 0.65, T0 + 1) == (reserve, None)
    assert refill_reserve(reserve, 1_000.0, 0.70, T0 + 1) == (reserve, None)
    assert refill_reserve(reserve, 1_000.0, math.nan, T0 + 1) == (reserve, None)
    reserve, refill = refill_reserve(reserve, 1_000.0, below(0.65), T0 + 1)
    assert refill.amount_usd == 1_000.0 and reserve.balance_usd == pytest.approx(5_500.0)
    assert reserve.deployed_usd == pytest.approx(4_500.0)
    reserve, refill = refill_reserve(reserve, 9_000.0, 0.5, T0 + 2)
    assert refill.amount_usd == pytest.approx(4_500.0) and refill.offered_usd == 9_000.0
    assert reserve.balance_usd == pytest.approx(10_000.0) and reserve.deployed_usd == 0.0
    assert refill_reserve(reserve, 100.0, 0.5, T0 + 3) == (reserve, None)  # full


def test_a_refilled_reserve_answers_the_next_episode_in_full():
    reserve, _ = deploy_reserve(open_reserve(RESERVE), 0.75, T0)
    reserve, _ = refill_reserve(reserve, 3_000.0, 0.5, T0 + DAY)
    reserve, again = deploy_reserve(reserve, 0.75, T0 + 2 * DAY)
    assert again.amount_usd == pytest.approx(3_000.0)
    assert reserve.total_deployed_usd == pytest.approx(6_000.0)
    assert reserve.total_refilled_usd == pytest.approx(3_000.0)


# --------------------------------------------------------------------------- profit distribution


def _loan_after(days: float):
    return accrue(open_loan(LOAN, T0), T0 + days * DAY)


def test_profit_pays_interest_then_refills_the_reserve_then_principal():
    loan = _loan_after(30)
    interest = loan.accrued_interest_usd
    reserve, _ = deploy_reserve(open_reserve(RESERVE), 0.70, T0)  # 1,500 short
    loan, reserve, dist = distribute_profit(loan, reserve, 2_000.0, 0.6, T0 + 30 * DAY)
    assert dist.interest_usd == pytest.approx(interest)
    assert dist.reserve_refill_usd == pytest.approx(1_500.0)
    assert dist.principal_usd == pytest.approx(2_000.0 - interest - 1_500.0)
    assert dist.retained_usd == pytest.approx(0.0, abs=1e-9)
    assert reserve.balance_usd == pytest.approx(10_000.0)
    assert loan.accrued_interest_usd == 0.0
    assert dist.repaid_usd == pytest.approx(dist.interest_usd + dist.principal_usd)


def test_a_small_profit_stops_at_interest():
    loan = _loan_after(30)
    reserve, _ = deploy_reserve(open_reserve(RESERVE), 0.70, T0)
    _, after, dist = distribute_profit(loan, reserve, 40.0, 0.6, T0 + 30 * DAY)
    assert (dist.interest_usd, dist.reserve_refill_usd, dist.principal_usd) == (40.0, 0.0, 0.0)
    assert after == reserve


def test_no_refill_while_the_ltv_is_high_the_profit_goes_to_principal():
    loan = _loan_after(30)
    reserve, _ = deploy_reserve(open_reserve(RESERVE), 0.70, T0)
    _, after, dist = distribute_profit(loan, reserve, 2_000.0, 0.70, T0 + 30 * DAY)
    assert dist.reserve_refill_usd == 0.0 and after == reserve
    assert dist.principal_usd == pytest.approx(2_000.0 - dist.interest_usd)


def test_shares_cap_each_bucket_and_the_rest_is_retained():
    config = DistributionConfig(principal_share=0.25)
    loan = _loan_after(30)
    interest = loan.accrued_interest_usd
    _, _, dist = distribute_profit(loan, open_reserve(RESERVE), 1_000.0, 0.5, T0 + 30 * DAY,
                                   config)
    assert dist.interest_usd == pytest.approx(interest)
    assert dist.reserve_refill_usd == 0.0  # the reserve is full
    assert dist.principal_usd == pytest.approx(250.0)
    assert dist.retained_usd == pytest.approx(1_000.0 - interest - 250.0)


def test_the_priority_order_is_configurable():
    config = DistributionConfig(priority=("principal", "interest"))
    loan = _loan_after(30)
    _, _, dist = distribute_profit(loan, open_reserve(RESERVE), 500.0, 0.5, T0 + 30 * DAY, config)
    assert (dist.principal_usd, dist.interest_usd) == (500.0, 0.0)
    with pytest.raises(ValueError):
        DistributionConfig(priority=("interest", "interest"))
    with pytest.raises(ValueError):
        DistributionConfig(interest_share=1.5)


def test_a_loss_pays_nothing():
    loan = _loan_after(30)
    reserve = open_reserve(RESERVE, balance_usd=5_000.0)
    new_loan, new_reserve, dist = distribute_profit(loan, reserve, -300.0, 0.5, T0 + 30 * DAY)
    assert (dist.interest_usd, dist.reserve_refill_usd, dist.principal_usd) == (0.0, 0.0, 0.0)
    assert dist.retained_usd == -300.0
    assert new_loan == loan and new_reserve == reserve


@settings(max_examples=80, deadline=None)
@given(st.floats(-1_000.0, 40_000.0), st.floats(0.0, 1.0), st.floats(0.0, 10_000.0),
       st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.0, 400.0))
def test_a_distribution_accounts_for_every_dollar(profit, ltv, balance, s_int, s_ref, s_pri, days):
    config = DistributionConfig(interest_share=s_int, reserve_refill_share=s_ref,
                                principal_share=s_pri)
    loan = _loan_after(days)
    reserve = open_reserve(RESERVE, balance_usd=balance)
    new_loan, new_reserve, d = distribute_profit(loan, reserve, profit, ltv, T0 + days * DAY,
                                                 config)
    assert d.interest_usd + d.reserve_refill_usd + d.principal_usd + d.retained_usd == \
        pytest.approx(profit, abs=1e-6)
    positive = max(profit, 0.0)
    assert d.interest_usd <= s_int * positive + 1e-9
    assert d.reserve_refill_usd <= s_ref * positive + 1e-9
    assert d.principal_usd <= s_pri * positive + 1e-9
    assert new_loan.outstanding_usd == pytest.approx(loan.outstanding_usd - d.repaid_usd, abs=1e-6)
    assert new_reserve.balance_usd == pytest.approx(balance + d.reserve_refill_usd, abs=1e-6)
    if ltv >= RESERVE.refill_below_ltv:
        assert d.reserve_refill_usd == 0.0


# --------------------------------------------------------------------------- the treasury


def test_a_mark_in_the_warning_band_deploys_the_reserve_onto_the_loan():
    state = open_treasury(T0)
    collateral = 16_200.0 / 0.70  # LTV 0.70 at the open
    state, mark = mark_treasury(state, collateral, T0)
    assert mark.ltv_before == pytest.approx(0.70)
    assert mark.deployment.amount_usd == pytest.approx(1_500.0)
    assert mark.repayment.principal_usd == pytest.approx(1_500.0)  # nothing accrued yet
    assert mark.ltv == pytest.approx((16_200.0 - 1_500.0) / collateral)
    assert mark.action.band == "MONITOR" and mark.action.trading_state == "ACTIVE"
    assert state.loan.principal_outstanding_usd == pytest.approx(14_700.0)
    assert state.reserve.balance_usd == pytest.approx(8_500.0)
    assert state.repaid_from_reserve_usd == pytest.approx(1_500.0)
    assert state.repaid_from_profits_usd == 0.0


def test_a_quiet_mark_only_accrues():
    state = open_treasury(T0)
    state, mark = mark_treasury(state, 27_000.0, T0 + 30 * DAY)
    assert mark.deployment is None and mark.repayment is None
    assert mark.ltv == mark.ltv_before == pytest.approx(
        loan_to_value(16_200 + 972 * 30 / 365, 27_000.0), rel=1e-13)
    assert mark.action.band == "MONITOR"
    assert state.reserve == open_reserve(RESERVE)


def test_the_reserve_never_pays_more_than_the_loan_owes():
    config = TreasuryConfig(loan=LoanConfig(principal_usd=2_000.0))
    state, mark = mark_treasury(open_treasury(T0, config), 0.0, T0)  # no collateral: LTV inf
    assert mark.ltv_before == math.inf
    assert mark.deployment.amount_usd == pytest.approx(2_000.0) and mark.deployment.capped
    assert mark.repayment.unused_usd == 0.0
    assert state.loan.is_repaid and mark.ltv == 0.0 and mark.action.band == "SAFE"
    assert state.reserve.balance_usd == pytest.approx(8_000.0)


def test_an_unknown_price_halts_without_touching_the_reserve():
    state = open_treasury(T0)
    new, mark = mark_treasury(state, math.nan, T0 + 60)
    assert math.isnan(mark.ltv) and mark.deployment is None
    assert mark.action.band == "UNKNOWN" and mark.action.trading_state == "HALTED"
    assert new.reserve == state.reserve


def test_treasury_profit_counts_repayments_from_profits():
    state = open_treasury(T0)
    state, _ = mark_treasury(state, 16_200.0 / 0.8, T0)  # deploys 5,500
    state, dist = treasury_profit(state, 3_000.0, 30_000.0, T0 + 30 * DAY)
    assert dist.ltv < 0.65 and dist.interest_usd > 0.0
    assert dist.reserve_refill_usd == pytest.approx(3_000.0 - dist.interest_usd)
    assert state.repaid_from_profits_usd == pytest.approx(dist.interest_usd)
    assert state.repaid_from_reserve_usd == pytest.approx(5_500.0)
    assert state.loan.paid_to_date_usd == pytest.approx(5_500.0 + dist.interest_usd)


def _run(prices, profits):
    state = open_treasury(T0)
    steps = []
    for i, (price, profit) in enumerate(zip(prices, profits)):
        ts = T0 + 3_600.0 * i
        before = state
        state, mark = mark_treasury(state, collateral_value_usd(0.27, price), ts)
        state, dist = treasury_profit(state, profit, collateral_value_usd(0.27, price), ts)
        steps.append((before, mark, dist))
    return state, steps


def test_the_treasury_is_deterministic_and_its_ltv_matches_the_vectorized_one():
    rng = np.random.default_rng(7)
    prices = 95_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.03, 300)))
    profits = rng.normal(20.0, 80.0, 300)
    first = _run(prices, profits)
    assert first == _run(prices, profits)
    state, steps = first
    ltv_before = np.array([mark.ltv_before for _, mark, _ in steps])
    assert np.any(ltv_before >= 0.65)  # the path visits the reserve's bands
    assert state.reserve.total_deployed_usd > 0.0
    outstanding = [accrue(before.loan, mark.ts_s).outstanding_usd for before, mark, _ in steps]
    collateral = [mark.collateral_value_usd for _, mark, _ in steps]
    np.testing.assert_allclose(ltv_before, loan_to_value(outstanding, collateral), rtol=1e-14)
    # Every deployment answered the formula at the LTV it saw, and no refill ran above 0.65.
    for _, mark, dist in steps:
        if mark.deployment is not None:
            assert mark.deployment.target_usd == pytest.approx(
                seed_reserve_deployment(mark.ltv_before), abs=1e-8)
        if dist.reserve_refill_usd > 0.0:
            assert dist.ltv < 0.65
