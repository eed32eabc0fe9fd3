"""The loan, its LTV bands, the reserve and the distribution of profits: plan 001 (HedgeLock),
Phase 2 (Sprints 2.1-2.3), for issue 7.

Pure: every function takes a state and the time ``ts_s`` (epoch seconds) and returns a new state
with what happened; nothing reads a clock. Each state carries its frozen config, so the loan's
terms travel with its balance. Amounts are USD; an LTV is a fraction (0.65, not 65).

The loan (``LoanConfig``, ``LoanState``). A USD loan of ``principal_usd`` (16,200) at ``apr``
(6 %). Interest is SIMPLE and accrues CONTINUOUSLY, per second, on the outstanding principal
only (accrued interest does not itself bear interest)::

    interest(t0 -> t1) = principal_outstanding_usd * apr * (t1 - t0) / (day_count * 86_400)

with ``day_count`` days in the year (365 by default: ACT/365; 360 gives ACT/360). The principal
changes only in ``repay``, which accrues to its time first, so the integral over a piecewise-
constant principal is exact whatever the spacing of the calls: accruing in many steps gives the
one-step figure (to rounding). ``repay(state, amount_usd, ts_s)`` pays the buckets in
``LoanConfig.repayment_order``, by default accrued interest first, then principal; what the loan
no longer needs comes back as ``unused_usd``.

LTV (``loan_to_value``). ``LTV = (principal outstanding + accrued interest) / collateral value``,
the collateral value being the pledged coins at the current price
(``collateral_value_usd(collateral_coin, price_usd)``). The reserve does NOT count as collateral:
it is cash set aside, and deploying it pays the loan down (that is how it lowers the LTV). A loan
paid off has LTV 0; a positive balance against no collateral has LTV +inf; an unknown collateral
value (NaN price) gives NaN.

Bands (``LtvBandConfig``, ``ltv_band``, ``ltv_action``): plan 001's table, each band including its
lower bound::

    SAFE       [0.00, 0.50)  -> ACTIVE     trade normally
    MONITOR    [0.50, 0.65)  -> ACTIVE     trade normally, alert
    WARNING    [0.65, 0.75)  -> REDUCING   reduce positions to 50 % (reduce-only orders)
    CRITICAL   [0.75, 0.85)  -> REDUCING   also close the losing positions (reduce-only orders)
    EMERGENCY  [0.85, +inf)  -> HALTED     close all positions, no new ones
    UNKNOWN    (NaN LTV)     -> HALTED     no new positions, but no forced close on missing data

The trading states: ACTIVE allows new positions; REDUCING allows only orders that reduce
exposure; HALTED allows only the closing orders the band's action asks for. An LTV above 1.0
(plan 001's table stops there) is EMERGENCY.

The reserve (``ReserveConfig``, ``ReserveState``). A cash reserve of ``capacity_usd`` (10,000).
The deployment target as a function of the LTV is plan 001's Sprint 2.2 formula
(``reserve_deployment_target_usd``)::

    0                                  ltv < 0.65
    3000 * (ltv - 0.65) / 0.10         0.65 <= ltv < 0.75
    3000 + 5000 * (ltv - 0.75) / 0.10  0.75 <= ltv < 0.85
    10000 (all of it)                  ltv >= 0.85

It is continuous and non-decreasing on [0, 0.85) and jumps from 8,000 to 10,000 at 0.85.
``deploy_reserve`` deploys ``target - deployed_usd`` when positive, never more than the balance
held, where ``deployed_usd`` is what was deployed and not yet refilled: the formula sets how much of
the reserve an episode of high LTV may use in total, not a fresh amount at every reading. Because a
deployment pays the loan down, the LTV falls after it, and the reserve deploys again only when the
LTV climbs past the level it last answered. ``refill_reserve`` puts profit back in, up to the
capacity, and only while the LTV is below ``refill_below_ltv`` (0.65); each refill lowers
``deployed_usd`` by its amount.

Profit distribution (``DistributionConfig``, ``distribute_profit``). A realized profit goes through
a priority queue of buckets, by default: accrued ``interest``, ``reserve_refill`` (only when the
reserve is below capacity and the LTV below 0.65), ``principal``; what is left is retained equity.
Each bucket takes ``min(need, share * profit, what is left)``, ``share`` in [0, 1] per bucket (all
1.0 by default: the whole profit repays until the loan is paid off). A loss (profit <= 0) pays
nothing and is all "retained" (it falls on equity).

The treasury (``TreasuryConfig``, ``TreasuryState``, ``mark_treasury``, ``treasury_profit``) ties
them together for the engine and the backtest: at each mark, accrue, read the LTV, deploy the
reserve toward its target (paying the loan down with it), and report the band and action of the
LTV after the deployment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "SECONDS_PER_DAY", "LTV_BANDS", "UNKNOWN_BAND", "BAND_NAMES", "TRADING_STATES",
    "REPAYMENT_BUCKETS", "DISTRIBUTION_BUCKETS",
    "LoanConfig", "LoanState", "RepaymentBreakdown", "open_loan", "accrue", "repay",
    "accrued_interest_usd",
    "collateral_value_usd", "loan_to_value",
    "LtvBandConfig", "LtvAction", "ltv_band_index", "ltv_band", "trading_state", "ltv_action",
    "ReserveConfig", "ReserveState", "ReserveDeployment", "ReserveRefill", "open_reserve",
    "reserve_deployment_target_usd", "deploy_reserve", "refill_reserve",
    "DistributionConfig", "ProfitDistribution", "distribute_profit",
    "TreasuryConfig", "TreasuryState", "TreasuryMark", "open_treasury", "mark_treasury",
    "treasury_profit",
]

SECONDS_PER_DAY = 86_400.0

LTV_BANDS = ("SAFE", "MONITOR", "WARNING", "CRITICAL", "EMERGENCY")
UNKNOWN_BAND = "UNKNOWN"
# Indexed by ``ltv_band_index``: -1 (NaN LTV) picks the last entry.
BAND_NAMES = LTV_BANDS + (UNKNOWN_BAND,)
TRADING_STATES = ("ACTIVE", "REDUCING", "HALTED")
_BAND_TRADING_STATE = (("SAFE", "ACTIVE"), ("MONITOR", "ACTIVE"), ("WARNING", "REDUCING"),
                       ("CRITICAL", "REDUCING"), ("EMERGENCY", "HALTED"), ("UNKNOWN", "HALTED"))

_TRADING_STATE_OF = dict(_BAND_TRADING_STATE)

REPAYMENT_BUCKETS = ("interest", "principal")
DISTRIBUTION_BUCKETS = ("interest", "reserve_refill", "principal")


def _finite(name: str, value, *, minimum: float | None = None, strict: bool = False) -> float:
    if minimum is None and type(value) is float and math.isfinite(value):
        return value  # the common case (a time), checked in one step: the treasury marks every bar
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value!r}")
    return value


def _scalar_or_array(out: np.ndarray):
    return float(out) if out.ndim == 0 else out


# --------------------------------------------------------------------------- the loan


@dataclass(frozen=True, slots=True)
class LoanConfig:
    """The loan's terms: ``principal_usd`` borrowed, simple ``apr`` (0.06 = 6 % a year) over a
    year of ``day_count`` days, and the order in which ``repay`` pays the buckets (a permutation
    of ``REPAYMENT_BUCKETS``; interest first by default)."""

    principal_usd: float = 16_200.0
    apr: float = 0.06
    day_count: float = 365.0
    repayment_order: tuple[str, ...] = ("interest", "principal")

    def __post_init__(self) -> None:
        _finite("principal_usd", self.principal_usd, minimum=0.0, strict=True)
        _finite("apr", self.apr, minimum=0.0)
        _finite("day_count", self.day_count, minimum=0.0, strict=True)
        order = tuple(self.repayment_order)
        object.__setattr__(self, "repayment_order", order)
        if sorted(order) != sorted(REPAYMENT_BUCKETS):
            raise ValueError(f"repayment_order must order {REPAYMENT_BUCKETS}, got {order!r}")

    @property
    def rate_per_second(self) -> float:
        """Interest per second per USD of principal: ``apr / (day_count * 86400)``."""
        return self.apr / (self.day_count * SECONDS_PER_DAY)


@dataclass(frozen=True, slots=True)
class LoanState:
    """The loan at ``last_accrual_ts_s``: what is owed (``principal_outstanding_usd``,
    ``accrued_interest_usd`` accrued and unpaid) and what has been paid (``interest_paid_usd``,
    ``principal_paid_usd``, cumulative). Built by ``open_loan``; changed only by ``accrue`` and
    ``repay``, which return new states."""

    config: LoanConfig
    principal_outstanding_usd: float
    accrued_interest_usd: float
    interest_paid_usd: float
    principal_paid_usd: float
    last_accrual_ts_s: float

    @property
    def outstanding_usd(self) -> float:
        """What the borrower owes now: principal outstanding + accrued interest (the LTV's
        numerator)."""
        return self.principal_outstanding_usd + self.accrued_interest_usd

    @property
    def paid_to_date_usd(self) -> float:
        """All paid to the lender so far: interest + principal (plan 001's ``paid_to_date``)."""
        return self.interest_paid_usd + self.principal_paid_usd

    @property
    def is_repaid(self) -> bool:
        return self.principal_outstanding_usd <= 0.0 and self.accrued_interest_usd <= 0.0


@dataclass(frozen=True, slots=True)
class RepaymentBreakdown:
    """Where a payment of ``interest_usd + principal_usd + unused_usd`` went at ``ts_s``:
    ``unused_usd`` is what the loan did not need (it was paid off)."""

    ts_s: float
    interest_usd: float
    principal_usd: float
    unused_usd: float

    @property
    def total_usd(self) -> float:
        """What reached the lender: interest + principal."""
        return self.interest_usd + self.principal_usd


def open_loan(config: LoanConfig, ts_s: float) -> LoanState:
    """A loan of ``config.principal_usd`` drawn at ``ts_s``, nothing accrued or paid yet."""
    ts_s = _finite("ts_s", ts_s)
    return LoanState(config, float(config.principal_usd), 0.0, 0.0, 0.0, ts_s)


def accrued_interest_usd(principal_usd, apr, elapsed_s, day_count: float = 365.0):
    """Simple interest on a constant ``principal_usd`` over ``elapsed_s`` seconds at ``apr``
    with a ``day_count``-day year (arrays broadcast): ``principal * apr * elapsed_s /
    (day_count * 86400)``."""
    principal = np.asarray(principal_usd, dtype=np.float64)
    rate = np.asarray(apr, dtype=np.float64)
    elapsed = np.asarray(elapsed_s, dtype=np.float64)
    if np.any(elapsed < 0.0):
        raise ValueError("elapsed_s must be >= 0")
    return _scalar_or_array(principal * rate * elapsed / (float(day_count) * SECONDS_PER_DAY))


def accrue(state: LoanState, ts_s: float) -> LoanState:
    """The loan with interest accrued from ``state.last_accrual_ts_s`` to ``ts_s`` (module
    docstring). ``ts_s`` earlier than the last accrual is a ValueError: time does not go back."""
    ts_s = _finite("ts_s", ts_s)
    elapsed_s = ts_s - state.last_accrual_ts_s
    if elapsed_s < 0.0:
        raise ValueError(f"ts_s {ts_s!r} is before the last accrual at {state.last_accrual_ts_s!r}")
    if elapsed_s == 0.0:
        return state
    interest_usd = state.principal_outstanding_usd * state.config.rate_per_second * elapsed_s
    return LoanState(state.config, state.principal_outstanding_usd,
                     state.accrued_interest_usd + interest_usd, state.interest_paid_usd,
                     state.principal_paid_usd, ts_s)


def repay(state: LoanState, amount_usd: float, ts_s: float,
          order: tuple[str, ...] | None = None) -> tuple[LoanState, RepaymentBreakdown]:
    """Pay ``amount_usd`` (>= 0) at ``ts_s``: accrue to ``ts_s``, then pay the buckets in
    ``order`` (default ``state.config.repayment_order``: accrued interest, then principal), each
    up to what it owes. ``order`` may name a subset of ``REPAYMENT_BUCKETS`` (``("interest",)``
    pays interest only). Returns the new state and the breakdown; the part no bucket needed is
    ``unused_usd``."""
    amount_usd = _finite("amount_usd", amount_usd, minimum=0.0)
    order = state.config.repayment_order if order is None else tuple(order)
    if any(bucket not in REPAYMENT_BUCKETS for bucket in order) or len(set(order)) != len(order):
        raise ValueError(f"order must name distinct buckets of {REPAYMENT_BUCKETS}, got {order!r}")
    state = accrue(state, ts_s)
    left_usd = amount_usd
    interest_usd = principal_usd = 0.0
    for bucket in order:
        if bucket == "interest":
            interest_usd = min(left_usd, state.accrued_interest_usd)
            left_usd -= interest_usd
        else:
            principal_usd = min(left_usd, state.principal_outstanding_usd)
            left_usd -= principal_usd
    new_state = LoanState(state.config, state.principal_outstanding_usd - principal_usd,
                          state.accrued_interest_usd - interest_usd,
                          state.interest_paid_usd + interest_usd,
                          state.principal_paid_usd + principal_usd, state.last_accrual_ts_s)
    return new_state, RepaymentBreakdown(state.last_accrual_ts_s, interest_usd, principal_usd,
                                         left_usd)


# --------------------------------------------------------------------------- LTV and its bands


def collateral_value_usd(collateral_coin, price_usd):
    """The collateral's value: pledged coins x price (arrays broadcast; NaN price -> NaN). The
    reserve is not collateral (module docstring)."""
    coin = np.asarray(collateral_coin, dtype=np.float64)
    if np.any(coin < 0.0):
        raise ValueError("collateral_coin must be >= 0")
    return _scalar_or_array(coin * np.asarray(price_usd, dtype=np.float64))


def loan_to_value(loan_outstanding_usd, collateral_value_usd):
    """LTV = ``loan_outstanding_usd`` (principal + accrued interest) / ``collateral_value_usd``,
    vectorized. No loan -> 0 (even with no collateral); a loan against collateral <= 0 -> +inf;
    NaN collateral (unknown price) -> NaN. A negative loan is a ValueError."""
    loan = np.asarray(loan_outstanding_usd, dtype=np.float64)
    collateral = np.asarray(collateral_value_usd, dtype=np.float64)
    if np.any(loan < 0.0):
        raise ValueError("loan_outstanding_usd must be >= 0")
    with np.errstate(divide="ignore", invalid="ignore"):
        ltv = np.where(collateral > 0.0, loan / np.where(collateral > 0.0, collateral, 1.0),
                       np.inf)
    ltv = np.where(loan == 0.0, 0.0, ltv)
    ltv = np.where(np.isnan(collateral) | np.isnan(loan), np.nan, ltv)
    return _scalar_or_array(ltv)


def _ltv_scalar(loan_outstanding_usd: float, collateral_value_usd: float) -> float:
    # ``loan_to_value`` for one pair without numpy: the treasury marks every bar of a backtest.
    if math.isnan(collateral_value_usd) or math.isnan(loan_outstanding_usd):
        return math.nan
    if loan_outstanding_usd == 0.0:
        return 0.0
    if collateral_value_usd <= 0.0:
        return math.inf
    return loan_outstanding_usd / collateral_value_usd


@dataclass(frozen=True, slots=True)
class LtvBandConfig:
    """The lower bounds (inclusive) of the bands above SAFE, plan 001's table by default, and the
    fraction of the nominal position size WARNING and CRITICAL keep (plan 001: reduce by 50 %)."""

    monitor_ltv: float = 0.50
    warning_ltv: float = 0.65
    critical_ltv: float = 0.75
    emergency_ltv: float = 0.85
    reduced_position_fraction: float = 0.5

    def __post_init__(self) -> None:
        bounds = [_finite(name, getattr(self, name), minimum=0.0, strict=True)
                  for name in ("monitor_ltv", "warning_ltv", "critical_ltv", "emergency_ltv")]
        if not all(a < b for a, b in zip(bounds, bounds[1:])):
            raise ValueError(f"band bounds must increase strictly, got {bounds!r}")
        fraction = _finite("reduced_position_fraction", self.reduced_position_fraction,
                           minimum=0.0)
        if fraction > 1.0:
            raise ValueError(f"reduced_position_fraction must be <= 1, got {fraction!r}")

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (self.monitor_ltv, self.warning_ltv, self.critical_ltv, self.emergency_ltv)


@dataclass(frozen=True, slots=True)
class LtvAction:
    """What an LTV asks of the hedge engine. ``position_fraction`` caps positions at that
    fraction of their nominal size (1.0 = no cap); ``close_losing_positions`` and
    ``close_all_positions`` ask for closes now; ``new_positions_allowed`` is False outside
    ACTIVE."""

    ltv: float
    band: str
    trading_state: str
    position_fraction: float
    close_losing_positions: bool
    close_all_positions: bool
    new_positions_allowed: bool


def ltv_band_index(ltv, bands: LtvBandConfig = LtvBandConfig()):
    """The band of each LTV as an index into ``LTV_BANDS`` (0 SAFE ... 4 EMERGENCY), each band
    including its lower bound; -1 for NaN (``BAND_NAMES[-1]`` is ``"UNKNOWN"``). Vectorized."""
    x = np.asarray(ltv, dtype=np.float64)
    index = np.searchsorted(np.asarray(bands.bounds), x, side="right").astype(np.int64)
    index = np.where(np.isnan(x), -1, index)
    return int(index) if index.ndim == 0 else index


def ltv_band(ltv: float, bands: LtvBandConfig = LtvBandConfig()) -> str:
    """The name of the band of one LTV (``"SAFE"`` ... ``"EMERGENCY"``, ``"UNKNOWN"`` for NaN)."""
    ltv = float(ltv)
    if math.isnan(ltv):
        return UNKNOWN_BAND
    index = 0
    for bound in bands.bounds:
        if ltv >= bound:
            index += 1
    return LTV_BANDS[index]


def trading_state(band: str) -> str:
    """The trading state of a band: SAFE, MONITOR -> ACTIVE; WARNING, CRITICAL -> REDUCING;
    EMERGENCY, UNKNOWN -> HALTED."""
    try:
        return _TRADING_STATE_OF[band]
    except (KeyError, TypeError):
        pass
    raise ValueError(f"unknown band {band!r}; expected one of {BAND_NAMES}")


def ltv_action(ltv: float, bands: LtvBandConfig = LtvBandConfig()) -> LtvAction:
    """The band, trading state and action of one LTV (the table in the module docstring)."""
    band = ltv_band(ltv, bands)
    state = trading_state(band)
    if band in ("WARNING", "CRITICAL"):
        fraction = bands.reduced_position_fraction
    else:
        fraction = 0.0 if band == "EMERGENCY" else 1.0
    return LtvAction(ltv=float(ltv), band=band, trading_state=state, position_fraction=fraction,
                     close_losing_positions=band in ("CRITICAL", "EMERGENCY"),
                     close_all_positions=band == "EMERGENCY",
                     new_positions_allowed=state == "ACTIVE")


# --------------------------------------------------------------------------- the reserve


@dataclass(frozen=True, slots=True)
class ReserveConfig:
    """The reserve: ``capacity_usd`` when full; plan 001's deployment formula (module
    docstring) with its breakpoints ``start_ltv < middle_ltv < full_ltv`` and the tranches
    deployed linearly between them (``first_tranche_usd`` from start to middle,
    ``second_tranche_usd`` more from middle to full; all of ``capacity_usd`` at ``full_ltv``
    and above); refills only while the LTV is below ``refill_below_ltv`` (<= ``start_ltv``)."""

    capacity_usd: float = 10_000.0
    start_ltv: float = 0.65
    middle_ltv: float = 0.75
    full_ltv: float = 0.85
    first_tranche_usd: float = 3_000.0
    second_tranche_usd: float = 5_000.0
    refill_below_ltv: float = 0.65

    def __post_init__(self) -> None:
        capacity = _finite("capacity_usd", self.capacity_usd, minimum=0.0)
        start = _finite("start_ltv", self.start_ltv, minimum=0.0, strict=True)
        middle = _finite("middle_ltv", self.middle_ltv)
        full = _finite("full_ltv", self.full_ltv)
        if not start < middle < full:
            raise ValueError("need start_ltv < middle_ltv < full_ltv, got "
                             f"{start}, {middle}, {full}")
        tranches = (_finite("first_tranche_usd", self.first_tranche_usd, minimum=0.0)
                    + _finite("second_tranche_usd", self.second_tranche_usd, minimum=0.0))
        if tranches > capacity:
            raise ValueError(f"the tranches ({tranches}) exceed the capacity ({capacity})")
        refill = _finite("refill_below_ltv", self.refill_below_ltv, minimum=0.0, strict=True)
        if refill > start:
            raise ValueError(f"refill_below_ltv ({refill}) must be <= start_ltv ({start}): the "
                             "reserve must not refill while it deploys")


@dataclass(frozen=True, slots=True)
class ReserveState:
    """The reserve: ``balance_usd`` held and deployable; ``deployed_usd`` deployed and not yet
    refilled (what the formula's target is compared with); the cumulative totals."""

    config: ReserveConfig
    balance_usd: float
    deployed_usd: float
    total_deployed_usd: float
    total_refilled_usd: float

    @property
    def refill_need_usd(self) -> float:
        """How far the balance is below capacity."""
        return max(0.0, self.config.capacity_usd - self.balance_usd)


@dataclass(frozen=True, slots=True)
class ReserveDeployment:
    """One deployment (plan 001's ``reserve_deployments`` row): ``amount_usd`` at ``ts_s`` for
    ``ltv``, toward ``target_usd``; ``deployed_after_usd`` and ``balance_after_usd`` after it;
    ``capped`` when the balance (or the caller's limit) cut it short; ``reason`` in words."""

    ts_s: float
    amount_usd: float
    ltv: float
    target_usd: float
    deployed_after_usd: float
    balance_after_usd: float
    capped: bool
    reason: str


@dataclass(frozen=True, slots=True)
class ReserveRefill:
    """One refill: ``amount_usd`` taken from ``offered_usd`` at ``ts_s`` and ``ltv``."""

    ts_s: float
    amount_usd: float
    offered_usd: float
    ltv: float
    balance_after_usd: float


def open_reserve(config: ReserveConfig = ReserveConfig(),
                 balance_usd: float | None = None) -> ReserveState:
    """A reserve holding ``balance_usd`` (default: full, ``config.capacity_usd``), nothing
    deployed. A reserve that starts short fills up through ``refill_reserve``."""
    balance = config.capacity_usd if balance_usd is None else _finite("balance_usd", balance_usd,
                                                                        minimum=0.0)
    if balance > config.capacity_usd:
        raise ValueError(f"balance_usd {balance!r} exceeds the capacity {config.capacity_usd!r}")
    return ReserveState(config, float(balance), 0.0, 0.0, 0.0)


def reserve_deployment_target_usd(ltv, config: ReserveConfig = ReserveConfig()):
    """How much of the reserve plan 001's formula deploys at ``ltv`` (vectorized; NaN -> NaN).
    With the defaults: 0 below 0.65, ``3000 (ltv - 0.65) / 0.10`` to 0.75,
    ``3000 + 5000 (ltv - 0.75) / 0.10`` to 0.85, 10,000 from 0.85."""
    c = config
    if type(ltv) is float:  # one LTV: the same arithmetic on a Python float, without arrays
        if math.isnan(ltv):
            return math.nan
        if ltv < c.start_ltv:
            return 0.0
        if ltv < c.middle_ltv:
            return c.first_tranche_usd * (ltv - c.start_ltv) / (c.middle_ltv - c.start_ltv)
        if ltv < c.full_ltv:
            return c.first_tranche_usd + c.second_tranche_usd * (ltv - c.middle_ltv) / (c.full_ltv
                                                                                     - c.middle_ltv)
        return float(c.capacity_usd)
    x = np.asarray(ltv, dtype=np.float64)
    rising = c.first_tranche_usd * (x - c.start_ltv) / (c.middle_ltv - c.start_ltv)
    steep = c.first_tranche_usd + c.second_tranche_usd * (x - c.middle_ltv) / (c.full_ltv
                                                                               - c.middle_ltv)
    target = np.where(x < c.start_ltv, 0.0,
                      np.where(x < c.middle_ltv, rising,
                               np.where(x < c.full_ltv, steep, c.capacity_usd)))
    target = np.where(np.isnan(x), np.nan, target)
    return _scalar_or_array(target)


def deploy_reserve(state: ReserveState, ltv: float, ts_s: float,
                   limit_usd: float = math.inf) -> tuple[ReserveState, ReserveDeployment | None]:
    """Deploy toward the formula's target at ``ltv``: ``target - state.deployed_usd`` when
    positive, capped by the balance and by ``limit_usd`` (e.g. what the loan still owes). None
    (and the state unchanged) when nothing is deployed, or when the LTV is NaN (unknown: the
    reserve does not act on missing data)."""
    ts_s = _finite("ts_s", ts_s)
    ltv = float(ltv)
    if math.isnan(ltv):
        return state, None
    if ltv < 0.0:
        raise ValueError(f"ltv must be >= 0, got {ltv!r}")
    if not limit_usd >= 0.0:
        raise ValueError(f"limit_usd must be >= 0, got {limit_usd!r}")
    c = state.config
    if ltv < c.start_ltv:  # the common case, without the array machinery
        return state, None
    target_usd = float(reserve_deployment_target_usd(ltv, c))
    wanted_usd = target_usd - state.deployed_usd
    amount_usd = min(wanted_usd, state.balance_usd, limit_usd)
    if not amount_usd > 0.0:
        return state, None
    capped = amount_usd < wanted_usd
    new_state = ReserveState(c, state.balance_usd - amount_usd, state.deployed_usd + amount_usd,
                             state.total_deployed_usd + amount_usd, state.total_refilled_usd)
    reason = (f"LTV {ltv:.4f} >= {c.start_ltv:g}: target {target_usd:.2f} USD, "
              f"{state.deployed_usd:.2f} USD already deployed")
    if capped:
        reason += (f"; capped at {amount_usd:.2f} USD (balance {state.balance_usd:.2f} USD, "
                   f"limit {limit_usd:.2f} USD)")
    return new_state, ReserveDeployment(ts_s, amount_usd, ltv, target_usd, new_state.deployed_usd,
                                        new_state.balance_usd, capped, reason)


def refill_reserve(state: ReserveState, amount_usd: float, ltv: float,
                   ts_s: float) -> tuple[ReserveState, ReserveRefill | None]:
    """Put up to ``amount_usd`` (>= 0) back into the reserve, up to its capacity, when ``ltv`` is
    below ``refill_below_ltv``; None (state unchanged) when it takes nothing (LTV too high or NaN,
    reserve full, nothing offered). ``deployed_usd`` falls by what is refilled."""
    ts_s = _finite("ts_s", ts_s)
    amount_usd = _finite("amount_usd", amount_usd, minimum=0.0)
    ltv = float(ltv)
    if not ltv < state.config.refill_below_ltv:
        return state, None
    taken_usd = min(amount_usd, state.refill_need_usd)
    if not taken_usd > 0.0:
        return state, None
    new_state = ReserveState(state.config, state.balance_usd + taken_usd,
                             max(0.0, state.deployed_usd - taken_usd), state.total_deployed_usd,
                             state.total_refilled_usd + taken_usd)
    return new_state, ReserveRefill(ts_s, taken_usd, amount_usd, ltv, new_state.balance_usd)


# --------------------------------------------------------------------------- profit distribution


@dataclass(frozen=True, slots=True)
class DistributionConfig:
    """The priority queue a realized profit goes through: ``priority`` orders distinct buckets of
    ``DISTRIBUTION_BUCKETS`` (a bucket left out gets nothing); each bucket takes at most its
    share (in [0, 1]) of the profit. What is left is retained equity."""

    priority: tuple[str, ...] = ("interest", "reserve_refill", "principal")
    interest_share: float = 1.0
    reserve_refill_share: float = 1.0
    principal_share: float = 1.0

    def __post_init__(self) -> None:
        priority = tuple(self.priority)
        object.__setattr__(self, "priority", priority)
        unknown = [b for b in priority if b not in DISTRIBUTION_BUCKETS]
        if unknown or len(set(priority)) != len(priority):
            raise ValueError(f"priority must name distinct buckets of {DISTRIBUTION_BUCKETS}, "
                             f"got {priority!r}")
        for name in ("interest_share", "reserve_refill_share", "principal_share"):
            share = _finite(name, getattr(self, name), minimum=0.0)
            if share > 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {share!r}")

    def share(self, bucket: str) -> float:
        return getattr(self, f"{bucket}_share")


@dataclass(frozen=True, slots=True)
class ProfitDistribution:
    """Where a realized ``profit_usd`` went at ``ts_s`` (``ltv`` when it arrived):
    ``interest_usd + reserve_refill_usd + principal_usd + retained_usd == profit_usd``."""

    ts_s: float
    profit_usd: float
    ltv: float
    interest_usd: float
    reserve_refill_usd: float
    principal_usd: float
    retained_usd: float

    @property
    def repaid_usd(self) -> float:
        """What went to the lender: interest + principal."""
        return self.interest_usd + self.principal_usd


def distribute_profit(loan: LoanState, reserve: ReserveState, profit_usd: float, ltv: float,
                      ts_s: float, config: DistributionConfig = DistributionConfig()
                      ) -> tuple[LoanState, ReserveState, ProfitDistribution]:
    """Send a realized ``profit_usd`` through the priority queue at ``ts_s`` (module docstring):
    the loan is accrued to ``ts_s`` first; ``reserve_refill`` takes only while ``ltv`` (the LTV
    when the profit arrived) is below the reserve's ``refill_below_ltv``. A profit <= 0 pays
    nothing (``retained_usd == profit_usd``)."""
    profit_usd = _finite("profit_usd", profit_usd)
    loan = accrue(loan, ts_s)
    ts_s = loan.last_accrual_ts_s
    paid = {bucket: 0.0 for bucket in DISTRIBUTION_BUCKETS}
    left_usd = max(profit_usd, 0.0)
    for bucket in config.priority:
        offered_usd = min(left_usd, config.share(bucket) * max(profit_usd, 0.0))
        if not offered_usd > 0.0:
            continue
        if bucket == "reserve_refill":
            reserve, refill = refill_reserve(reserve, offered_usd, ltv, ts_s)
            taken_usd = 0.0 if refill is None else refill.amount_usd
        else:
            loan, breakdown = repay(loan, offered_usd, ts_s, order=(bucket,))
            taken_usd = breakdown.total_usd
        paid[bucket] = taken_usd
        left_usd -= taken_usd
    retained_usd = left_usd if profit_usd > 0.0 else profit_usd
    return loan, reserve, ProfitDistribution(ts_s, profit_usd, float(ltv), paid["interest"],
                                             paid["reserve_refill"], paid["principal"],
                                             retained_usd)


# --------------------------------------------------------------------------- the treasury


@dataclass(frozen=True, slots=True)
class TreasuryConfig:
    """The loan, the reserve, the LTV bands and the profit distribution, together."""

    loan: LoanConfig = field(default_factory=LoanConfig)
    reserve: ReserveConfig = field(default_factory=ReserveConfig)
    bands: LtvBandConfig = field(default_factory=LtvBandConfig)
    distribution: DistributionConfig = field(default_factory=DistributionConfig)

    def __post_init__(self) -> None:
        for name, kind in (("loan", LoanConfig), ("reserve", ReserveConfig),
                           ("bands", LtvBandConfig), ("distribution", DistributionConfig)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}")


@dataclass(frozen=True, slots=True)
class TreasuryState:
    """The loan and the reserve, with the loan repayments split by where the money came from
    (``repaid_from_profits_usd`` through ``treasury_profit``, ``repaid_from_reserve_usd`` by
    reserve deployments)."""

    config: TreasuryConfig
    loan: LoanState
    reserve: ReserveState
    repaid_from_profits_usd: float = 0.0
    repaid_from_reserve_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class TreasuryMark:
    """One mark at ``ts_s``: the LTV before and after the reserve's deployment (if any, with the
    loan repayment it paid for), and the action of the LTV after."""

    ts_s: float
    collateral_value_usd: float
    ltv_before: float
    deployment: ReserveDeployment | None
    repayment: RepaymentBreakdown | None
    ltv: float
    action: LtvAction


def open_treasury(ts_s: float, config: TreasuryConfig = TreasuryConfig(),
                  reserve_balance_usd: float | None = None) -> TreasuryState:
    """The loan drawn at ``ts_s`` and the reserve (full unless ``reserve_balance_usd``)."""
    return TreasuryState(config, open_loan(config.loan, ts_s),
                         open_reserve(config.reserve, reserve_balance_usd))


def mark_treasury(state: TreasuryState, collateral_value_usd: float,
                  ts_s: float) -> tuple[TreasuryState, TreasuryMark]:
    """Mark the loan at ``ts_s`` against ``collateral_value_usd`` (coins x price; NaN when the
    price is unknown): accrue, read the LTV, deploy the reserve toward the target (never more
    than the loan owes) and pay the loan down with it, and give the action of the LTV after."""
    collateral_usd = float(collateral_value_usd)
    loan = accrue(state.loan, ts_s)
    outstanding_usd = loan.outstanding_usd
    ltv_before = _ltv_scalar(outstanding_usd, collateral_usd)
    if 0.0 <= ltv_before < state.reserve.config.start_ltv and outstanding_usd >= 0.0:
        reserve, deployment = state.reserve, None  # what deploy_reserve gives there (most marks)
    else:
        reserve, deployment = deploy_reserve(state.reserve, ltv_before, ts_s,
                                             limit_usd=outstanding_usd)
    repayment = None
    ltv = ltv_before
    repaid_from_reserve_usd = state.repaid_from_reserve_usd
    if deployment is not None:
        loan, repayment = repay(loan, deployment.amount_usd, ts_s)
        repaid_from_reserve_usd += repayment.total_usd
        ltv = _ltv_scalar(loan.outstanding_usd, collateral_usd)
    new_state = TreasuryState(state.config, loan, reserve, state.repaid_from_profits_usd,
                              repaid_from_reserve_usd)
    return new_state, TreasuryMark(loan.last_accrual_ts_s, collateral_usd, ltv_before, deployment,
                                   repayment, ltv, ltv_action(ltv, state.config.bands))


def treasury_profit(state: TreasuryState, profit_usd: float, collateral_value_usd: float,
                    ts_s: float) -> tuple[TreasuryState, ProfitDistribution]:
    """Distribute a realized ``profit_usd`` at ``ts_s`` (``distribute_profit`` with the LTV of
    the loan accrued to ``ts_s`` against ``collateral_value_usd``)."""
    loan = accrue(state.loan, ts_s)
    ltv = _ltv_scalar(loan.outstanding_usd, float(collateral_value_usd))
    loan, reserve, distribution = distribute_profit(loan, state.reserve, profit_usd, ltv, ts_s,
                                                    state.config.distribution)
    new_state = TreasuryState(state.config, loan, reserve,
                              state.repaid_from_profits_usd + distribution.repaid_usd,
                              state.repaid_from_reserve_usd)
    return new_state, distribution
