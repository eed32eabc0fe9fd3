"""Safety terminals: the rules every proposed order passes and the gate that applies them (issue 7;
plan 001 Phase 3 "Safety & Failsafe Systems", plan 004's pre-trade risk checks, plan 000's circuit
breaker BI-301 and emergency pause BI-302).

The gate FAILS CLOSED: an order is approved only when every rule that guards it could be evaluated
on fresh inputs and passed. A missing (NaN), stale or inconsistent input is a ``Rejection`` that
names the rule that needed it, never a guess.

Risk-increasing and reducing orders. Positions are signed coins per ``(asset, kind)`` (net, as an
exchange's reduce-only flag sees them; a position not listed is flat). An order is REDUCING when it
is flagged ``reduce_only`` AND it shrinks its own position without crossing zero (``quantity <=
|position|``, opposite side). Every other order is treated as risk-increasing, including a shrinking
order that is not flagged (flag it: the flag is also what tells the exchange never to flip the
position). A ``reduce_only`` order that would not shrink its position is refused (rule
``reduce_only``). Reducing orders pass every breaker and every limit that guards risk (they need no
market data: a flatten must work during the feed stall that fired the dead man's switch); they
still pass the order/clock sanity checks, a manual pause that does not allow flattening, and the
order rate limit (an exchange constraint that binds every order).

Rules (each rejection's ``rule``; thresholds in ``SafetyConfig``; a limit set to ``inf`` disables
its rule, and a disabled rule needs no inputs):

- ``invalid_order`` (``models.orders.order_problems``), ``invalid_context`` (non-finite ``ts_s``),
  ``clock`` (the context's time is earlier than one the gate already saw), ``stale_order``
  (``|order.ts_s - context.ts_s| > max_order_age_s``), ``position_unknown`` (NaN position).
- ``manual_pause``: the operator paused trading (who/when/why are kept). A pause with
  ``allow_flatten=True`` (the default) still lets reducing orders through, so the operator, the
  panic close and the dead man's switch can flatten; ``allow_flatten=False`` is a hard freeze:
  nothing passes, not even a flatten.
- ``dead_mans_switch``: no heartbeat within ``heartbeat_timeout_s`` (1 h, plan 001 Sprint 3.2). The
  switch arms at the first heartbeat; before that, risk-increasing orders are refused but nothing
  fires. On expiry (``tick``): pause trading (as ``who="dead_mans_switch"``, flattening allowed),
  cancel open orders, flatten: one ``SafetyDecision`` the caller executes. Trading stays paused
  after heartbeats return until an operator resumes. ``seconds_left(ts_s)`` is the countdown.
- Breakers (``CircuitBreaker``: CLOSED → OPEN → HALF_OPEN after the cooldown → CLOSED after a
  probation with the condition clear; or ``reset_breaker`` by hand). An OPEN breaker, ANY of
  them, refuses every risk-increasing order; its rejection's rule is the breaker's rule:

  * ``daily_loss_limit``: loss of the UTC day, ``(start-of-day equity - equity) / start-of-day
    equity`` (equity is net: realized and unrealized), ``>= max_daily_loss_fraction``; open until
    the next UTC midnight.
  * ``oracle_breaker:<asset>`` (plan 000 BI-301): the asset's market state is missing, stale (older
    than ``max_market_age_s``), its oracle is not ok or its spot price is unknown, or
    ``oracle_anomaly_count`` anomaly alerts (``record_anomaly`` / ``record_alert``) arrived within
    ``oracle_anomaly_window_s``.
  * ``funding_breaker:<asset>``: the held perpetual position pays funding at an APR above
    ``max_funding_apr_paid`` (APR = rate_per_interval * 365*24 / interval_h; a long pays a positive
    rate).
  * ``panic_close:<asset>``: tripped with the panic close (below).

- ``stale_market``: no usable market state for the order's asset (backstop of the oracle breaker).
- ``liquidation_distance``: the asset holds a perp/quarterly position and the distance to
  liquidation ``|mark - liquidation| / mark`` (perp mark price) is unknown or ``<
  min_liquidation_distance``. Panic close (plan 001 Sprint 3.1): distance ``< 0.05`` AND net equity
  drop from the peak ``(peak - equity) / peak > 0.10`` (both strictly, both needed) → ``tick``
  returns a decision to cancel open orders and flatten the asset's ``flatten_kinds`` positions,
  trips ``panic_close:<asset>``, and re-issues the decision every ``panic_retry_s`` while the
  conditions hold. With a leveraged position, unknown panic inputs refuse risk-increasing orders
  (rule ``panic_close``).
- ``funding_cost``: a position-increasing perp order whose direction would pay funding at an APR
  above ``max_funding_apr_paid`` (unknown funding rate: refused). Quarterlies pay no funding and
  are not affected (migrating to them is the remedy).
- ``max_position``: ``|position after|`` above the asset's coin cap (``max_position_coin``; an
  asset without a cap is refused) or its notional at the oracle spot above
  ``max_position_notional_usd``, per ``(asset, kind)``.
- ``volatility_cap``: the same caps times ``volatility_position_scale(vol_24h_annual)``: 1 at or
  below ``vol_cap_reference_annual`` (2 % daily = 0.382 annual, plan 001's first band), then
  ``reference / vol`` (constant USD volatility), floored at ``vol_cap_min_fraction``.
- ``daily_volume`` (004): today's traded notional plus this order's above ``max_daily_volume_usd``.
- ``open_orders`` (004): one more open order would exceed ``max_open_orders`` (10).
- ``slippage`` (004, 5 %): a spot or perp limit order's adverse distance from the reference (spot,
  perp mark) and/or the caller's ``expected_slippage_fraction`` (from the book: ``slippage_bps *
  1e-4`` of ``models.execution.walk_book``) above ``max_slippage_fraction``. A market order, a
  quarterly or a put needs the caller's estimate: without it the order is refused.
- ``venue_concentration`` (004, 70 %): the venue's share of gross exposure after the order above
  ``max_venue_concentration``, checked once the total exceeds ``concentration_min_exposure_usd``. An
  order without a venue (``""``, the router chooses) is checked against the most exposed venue
  (worst case): route first for a precise check. A single-venue book must set the limit to 1.
- ``rate_limit``: a sliding window per ``(count, window_s)`` of ``rate_limits``: an order at ``t``
  is refused when ``count`` approved orders lie in ``(t - window_s, t]``. Only approvals count.

Notionals are ``quantity_coin * spot_usd`` (the underlying's notional for futures and puts).

The context is the state BEFORE the order. ``check_all(orders, context)`` checks a batch in order
and applies each approval to the context the next order sees (position, open orders, volume,
exposure), so a batch cannot approve in pieces what it would refuse whole.

Alerts (``models.records.Alert``) mark every transition: breaker opened / half-open / closed /
reset (``safety_breaker_*``), the dead man's switch firing, a panic close, pause / resume /
flatten, a liquidation warning (distance below ``liquidation_alert_distance``). ``take_alerts()``
(or ``tick``) hands each alert out exactly once.

Pure: the caller passes the time; nothing here reads a clock or does I/O. Stateful pieces (breakers,
the switch, the rate limiter, the pause) live in ``SafetyGate``; each is a small class of its own.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from models.orders import KINDS, SIDES, Order, Rejection, order_problems, side_sign
from models.records import Alert

if TYPE_CHECKING:  # models.hedge defines MarketState; the gate reads its fields only
    from models.hedge import MarketState

__all__ = [
    "SECONDS_PER_DAY", "HOURS_PER_YEAR", "LEVERAGED_KINDS", "RULES",
    "utc_day_start_s", "funding_apr", "funding_apr_paid", "liquidation_distance",
    "net_equity_drop", "daily_loss_fraction", "panic_close_due", "volatility_position_scale",
    "position_after", "reduces_position", "flatten_orders",
    "BreakerState", "BreakerConfig", "BreakerStatus", "CircuitBreaker", "DeadMansSwitch",
    "SlidingWindowRateLimiter", "PauseState", "SafetyConfig", "SafetyContext", "SafetyDecision",
    "SafetyTick", "SafetyStatus", "SafetyGate",
]

SECONDS_PER_DAY = 86_400.0
HOURS_PER_YEAR = 365.0 * 24.0
LEVERAGED_KINDS = ("perp", "quarterly")  # the kinds that can be liquidated

RULES = (
    "invalid_order", "invalid_context", "clock", "stale_order", "position_unknown", "reduce_only",
    "manual_pause", "dead_mans_switch", "daily_loss_limit", "oracle_breaker", "funding_breaker",
    "panic_close", "stale_market", "liquidation_distance", "funding_cost", "max_position",
    "volatility_cap", "daily_volume", "open_orders", "slippage", "venue_concentration",
    "rate_limit",
)

# a quantity within this fraction of the position still counts as "not more than the position"
# (a flatten computed from the same float must never be refused for a rounding residue)
_REL_EPS = 1e-12


# --------------------------------------------------------------------------- pure formulas


def _scalar(x):
    """A 0-d array as a Python float; arrays unchanged."""
    return float(x) if np.ndim(x) == 0 else x


_NUMBERS = (int, float)


def _num(*xs) -> bool:
    """All plain Python numbers (the scalar fast path: numpy costs microseconds per call). The
    hot callers test ``type(x) is float`` first, which is the common case and cheaper still."""
    for x in xs:
        if not isinstance(x, _NUMBERS):
            return False
    return True


def utc_day_start_s(ts_s):
    """Start of the UTC day holding ``ts_s`` (epoch s; NaN for a non-finite time). Vectorized."""
    if type(ts_s) is float or _num(ts_s):
        return math.floor(ts_s / SECONDS_PER_DAY) * SECONDS_PER_DAY if math.isfinite(ts_s) \
            else math.nan
    ts = np.asarray(ts_s, dtype=float)
    return _scalar(np.where(np.isfinite(ts), np.floor(ts / SECONDS_PER_DAY) * SECONDS_PER_DAY,
                            np.nan))


def funding_apr(rate_per_interval, interval_h=8.0):
    """Annualized funding rate: ``rate_per_interval * 365*24 / interval_h`` (0.0001 per 8 h is
    0.1095). NaN where the rate is not finite or the interval not a positive number."""
    if (type(rate_per_interval) is float and type(interval_h) is float) \
            or _num(rate_per_interval, interval_h):
        ok = math.isfinite(interval_h) and interval_h > 0
        return rate_per_interval * HOURS_PER_YEAR / interval_h if ok else math.nan
    rate = np.asarray(rate_per_interval, dtype=float)
    hours = np.asarray(interval_h, dtype=float)
    ok = np.isfinite(hours) & (hours > 0)
    return _scalar(np.where(ok, rate * HOURS_PER_YEAR / np.where(ok, hours, 1.0), np.nan))


def funding_apr_paid(direction, rate_per_interval, interval_h=8.0):
    """APR that a position of sign ``direction`` (+ long, - short, 0 flat) PAYS (negative:
    receives). Longs pay a positive rate, shorts a negative one."""
    if (type(direction) is float and type(rate_per_interval) is float
            and type(interval_h) is float) or _num(direction, rate_per_interval, interval_h):
        sign = (direction > 0) - (direction < 0) if not math.isnan(direction) else math.nan
        return sign * funding_apr(rate_per_interval, interval_h)
    return _scalar(np.sign(np.asarray(direction, dtype=float))
                   * np.asarray(funding_apr(rate_per_interval, interval_h)))


def liquidation_distance(mark_usd, liquidation_price_usd):
    """Distance to liquidation as a fraction of the mark: ``|mark - liquidation| / mark``. NaN
    where the mark is not a finite positive price or the liquidation price is not finite and >= 0
    (0 is a long that cannot be liquidated before the price reaches zero: distance 1)."""
    if (type(mark_usd) is float and type(liquidation_price_usd) is float) \
            or _num(mark_usd, liquidation_price_usd):
        ok = (math.isfinite(mark_usd) and mark_usd > 0 and math.isfinite(liquidation_price_usd)
              and liquidation_price_usd >= 0)
        return abs(mark_usd - liquidation_price_usd) / mark_usd if ok else math.nan
    mark = np.asarray(mark_usd, dtype=float)
    liq = np.asarray(liquidation_price_usd, dtype=float)
    ok = np.isfinite(mark) & (mark > 0) & np.isfinite(liq) & (liq >= 0)
    return _scalar(np.where(ok, np.abs(mark - liq) / np.where(ok, mark, 1.0), np.nan))


def net_equity_drop(equity_usd, peak_equity_usd):
    """Drop of net equity from its peak as a fraction of the peak, ``(peak - equity) / peak``
    (negative when equity is above the peak given). NaN unless the peak is finite and > 0 and the
    equity finite."""
    if (type(equity_usd) is float and type(peak_equity_usd) is float) \
            or _num(equity_usd, peak_equity_usd):
        ok = math.isfinite(equity_usd) and math.isfinite(peak_equity_usd) and peak_equity_usd > 0
        return (peak_equity_usd - equity_usd) / peak_equity_usd if ok else math.nan
    eq = np.asarray(equity_usd, dtype=float)
    peak = np.asarray(peak_equity_usd, dtype=float)
    ok = np.isfinite(eq) & np.isfinite(peak) & (peak > 0)
    return _scalar(np.where(ok, (peak - eq) / np.where(ok, peak, 1.0), np.nan))


def daily_loss_fraction(equity_usd, day_start_equity_usd):
    """Loss of the day as a fraction of start-of-day equity, ``(start - equity) / start``
    (negative: a gain). Equity is net (realized and unrealized). NaN unless the start is finite
    and > 0 and the equity finite."""
    return net_equity_drop(equity_usd, day_start_equity_usd)


def panic_close_due(distance, equity_drop, max_distance=0.05, min_drop=0.10):
    """Plan 001's panic condition: ``distance < max_distance AND equity_drop > min_drop`` (both
    strict, both needed). False where either input is NaN (the gate treats NaN as unknown and
    refuses risk instead). Vectorized."""
    if (type(distance) is float and type(equity_drop) is float) or _num(distance, equity_drop):
        return distance < max_distance and equity_drop > min_drop
    d = np.asarray(distance, dtype=float)
    e = np.asarray(equity_drop, dtype=float)
    out = (d < max_distance) & (e > min_drop)
    return bool(out) if out.ndim == 0 else out


def volatility_position_scale(vol_24h_annual, reference_annual=0.02 * math.sqrt(365.0),
                              min_fraction=0.25):
    """Fraction of the position caps allowed at 24 h realized volatility ``vol_24h_annual``
    (annualized over 365 days): 1 at or below ``reference_annual``, ``reference / vol`` above it
    (a cap in constant USD volatility), never below ``min_fraction``. NaN for a NaN or negative
    volatility. A reference of ``inf`` disables the scaling (always 1)."""
    if _num(vol_24h_annual):
        if not (math.isfinite(vol_24h_annual) and vol_24h_annual >= 0):
            return math.nan
        if math.isinf(reference_annual) or vol_24h_annual <= reference_annual:
            return 1.0
        return max(min_fraction, reference_annual / vol_24h_annual)
    vol = np.asarray(vol_24h_annual, dtype=float)
    ok = np.isfinite(vol) & (vol >= 0)
    if math.isinf(reference_annual):
        return _scalar(np.where(ok, 1.0, np.nan))
    safe = np.where(ok & (vol > 0), vol, 1.0)
    scale = np.where(vol <= reference_annual, 1.0,
                     np.maximum(min_fraction, reference_annual / safe))
    return _scalar(np.where(ok, scale, np.nan))


def position_after(position_coin, side: str, quantity_coin):
    """Signed position after an order of ``quantity_coin`` on ``side`` ("buy" adds)."""
    if _num(position_coin, quantity_coin):
        return position_coin + side_sign(side) * quantity_coin
    return _scalar(np.asarray(position_coin, dtype=float)
                   + side_sign(side) * np.asarray(quantity_coin, dtype=float))


def reduces_position(position_coin: float, side: str, quantity_coin: float) -> bool:
    """True when the order only shrinks the position toward zero: opposite side, not more than the
    position (a flatten of exactly the position counts)."""
    if side not in SIDES or not (math.isfinite(position_coin) and math.isfinite(quantity_coin)):
        return False
    if position_coin == 0 or quantity_coin <= 0:
        return False
    if side_sign(side) == (1 if position_coin > 0 else -1):
        return False
    return quantity_coin <= abs(position_coin) * (1.0 + _REL_EPS)


def flatten_orders(ts_s: float, positions_coin: Mapping[tuple[str, str], float], *,
                   kinds: Sequence[str] = LEVERAGED_KINDS, assets: Iterable[str] | None = None,
                   reason: str = "flatten", first_index: int = 0) -> tuple[Order, ...]:
    """Reduce-only market orders that close every non-zero, finite position of ``kinds`` (and of
    ``assets`` when given), in sorted key order, ids ``f"{reason}-{n}"`` from ``first_index``."""
    wanted = None if assets is None else set(assets)
    orders = []
    n = first_index
    for (asset, kind), pos in sorted(positions_coin.items()):
        if kind not in kinds or (wanted is not None and asset not in wanted):
            continue
        if not math.isfinite(pos) or pos == 0:
            continue
        orders.append(Order(ts_s=ts_s, asset=asset, kind=kind, side="sell" if pos > 0 else "buy",
                            quantity_coin=abs(pos), reason=reason, reduce_only=True,
                            order_id=f"{reason}-{n}"))
        n += 1
    return tuple(orders)


# --------------------------------------------------------------------------- breakers


class BreakerState(str, Enum):
    """CLOSED allows, OPEN refuses risk-increasing orders, HALF_OPEN is the probation after the
    cooldown: it allows while the condition stays clear and re-opens at its first recurrence."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def _finite(name: str, value, *, positive=False, non_negative=False, allow_inf=False) -> None:
    ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok_type or math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be a {'' if allow_inf else 'finite '}number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if non_negative and not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """``cooldown_s`` an OPEN breaker waits before its probation; ``probation_s`` how long the
    condition must stay clear in HALF_OPEN before the breaker closes (0: at the first clear
    evaluation)."""

    cooldown_s: float = 300.0
    probation_s: float = 60.0

    def __post_init__(self) -> None:
        _finite("cooldown_s", self.cooldown_s, positive=True)
        _finite("probation_s", self.probation_s, non_negative=True)


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    """A breaker for dashboards: its ``state`` ("closed" / "open" / "half_open") since
    ``since_s`` (NaN: never left CLOSED), the ``reason`` of the last transition, when an OPEN
    breaker may start its probation (``reopen_at_s``) and how many times it tripped."""

    name: str
    state: str
    since_s: float
    reason: str
    reopen_at_s: float
    trips: int


_OPEN_SEVERITY = {"daily_loss_limit": "critical", "oracle_breaker": "critical",
                  "funding_breaker": "warning", "panic_close": "critical"}


class CircuitBreaker:
    """One breaker (see ``BreakerState``). ``name`` is ``"<rule>"`` or ``"<rule>:<asset>"``;
    ``rule`` is what a rejection names.

    ``update(ts_s, bad, reason)`` feeds one evaluation of the guarded condition: ``True`` (bad),
    ``False`` (clear) or ``None`` (unknown: no evidence either way; it does not trip, and it
    restarts a probation). An OPEN breaker whose cooldown ends while the condition is still bad
    stays OPEN for another cooldown without a new alert. Transitions return their alerts.
    """

    def __init__(self, name: str, config: BreakerConfig = BreakerConfig()) -> None:
        self.name = name
        self.config = config
        self.state = BreakerState.CLOSED
        self.since_s = math.nan
        self.reason = ""
        self.reopen_at_s = math.nan
        self.trips = 0
        self._clear_since_s = math.nan

    @property
    def rule(self) -> str:
        return self.name.split(":", 1)[0]

    @property
    def is_open(self) -> bool:
        return self.state is BreakerState.OPEN

    def _alert(self, ts_s: float, kind: str, severity: str, text: str) -> Alert:
        return Alert(ts_s, f"safety_breaker_{kind}", severity, f"{self.name} {text}", self.name)

    def _open(self, ts_s: float, reason: str, reopen_at_s: float | None) -> list[Alert]:
        was = self.state
        self.state = BreakerState.OPEN
        self.since_s = ts_s
        self.reason = reason
        self.reopen_at_s = ts_s + self.config.cooldown_s if reopen_at_s is None else reopen_at_s
        self._clear_since_s = math.nan
        self.trips += 1
        verb = "re-opened" if was is BreakerState.HALF_OPEN else "opened"
        return [self._alert(ts_s, "open", _OPEN_SEVERITY.get(self.rule, "critical"),
                            f"{verb}: {reason}")]

    def update(self, ts_s: float, bad: bool | None, reason: str = "", *,
               reopen_at_s: float | None = None) -> list[Alert]:
        """One evaluation at ``ts_s``; ``reopen_at_s`` overrides the end of a new cooldown."""
        alerts: list[Alert] = []
        if self.state is BreakerState.OPEN and ts_s >= self.reopen_at_s:
            if bad is True:
                self.reopen_at_s = ts_s + self.config.cooldown_s if reopen_at_s is None else reopen_at_s
                self.reason = reason
                return alerts
            self.state = BreakerState.HALF_OPEN
            self.since_s = ts_s
            self._clear_since_s = math.nan
            alerts.append(self._alert(ts_s, "half_open", "info",
                                      f"half-open after its cooldown (tripped for: {self.reason})"))
        if bad is True:
            if self.state is not BreakerState.OPEN:
                alerts += self._open(ts_s, reason, reopen_at_s)
        elif self.state is BreakerState.HALF_OPEN:
            if bad is None:
                self._clear_since_s = math.nan
            else:
                if math.isnan(self._clear_since_s):
                    self._clear_since_s = ts_s
                if ts_s - self._clear_since_s >= self.config.probation_s:
                    self.state = BreakerState.CLOSED
                    self.since_s = ts_s
                    self.reason = "condition clear through the probation"
                    self.reopen_at_s = math.nan
                    alerts.append(self._alert(ts_s, "closed", "info", "closed: condition clear"))
        return alerts

    def trip(self, ts_s: float, reason: str, reopen_at_s: float | None = None) -> list[Alert]:
        """Open now (a manual trip, or a trip decided elsewhere); an OPEN breaker keeps the later
        of its two reopen times and raises no new alert."""
        if self.state is BreakerState.OPEN:
            new = ts_s + self.config.cooldown_s if reopen_at_s is None else reopen_at_s
            self.reopen_at_s = max(self.reopen_at_s, new)
            return []
        return self._open(ts_s, reason, reopen_at_s)

    def reset(self, ts_s: float, who: str, why: str) -> list[Alert]:
        """Manual reset to CLOSED (the next evaluation re-trips it if the condition is still bad)."""
        was = self.state
        self.state = BreakerState.CLOSED
        self.since_s = ts_s
        self.reason = f"reset by {who}: {why}"
        self.reopen_at_s = math.nan
        self._clear_since_s = math.nan
        return [self._alert(ts_s, "reset", "warning", f"reset from {was.value} by {who}: {why}")]

    def status(self) -> BreakerStatus:
        return BreakerStatus(self.name, self.state.value, self.since_s, self.reason,
                             self.reopen_at_s, self.trips)


# --------------------------------------------------------------------------- dead man's switch


class DeadMansSwitch:
    """Heartbeat watchdog (plan 001 Sprint 3.2). ``heartbeat(ts_s)`` records a sign of life (older
    or non-finite ones are ignored); the switch is armed from the first one. It is ``expired`` when
    ``ts_s - last_heartbeat_s >= timeout_s``; ``poll(ts_s)`` returns True once per expiry (the
    moment to act); a newer heartbeat re-arms it."""

    def __init__(self, timeout_s: float = 3600.0) -> None:
        _finite("timeout_s", timeout_s, positive=True)
        self.timeout_s = float(timeout_s)
        self.last_heartbeat_s = math.nan
        self.fired = False
        self.fired_at_s = math.nan

    @property
    def armed(self) -> bool:
        return math.isfinite(self.last_heartbeat_s)

    def heartbeat(self, ts_s: float) -> None:
        if not math.isfinite(ts_s):
            return
        if not self.armed or ts_s > self.last_heartbeat_s:
            self.last_heartbeat_s = float(ts_s)
            self.fired = False

    def seconds_left(self, ts_s: float) -> float:
        """Countdown to expiry, in ``[0, timeout_s]``; NaN before the first heartbeat."""
        if not self.armed:
            return math.nan
        return min(self.timeout_s, max(0.0, self.last_heartbeat_s + self.timeout_s - ts_s))

    def expired(self, ts_s: float) -> bool:
        return self.armed and ts_s - self.last_heartbeat_s >= self.timeout_s

    def poll(self, ts_s: float) -> bool:
        if self.expired(ts_s) and not self.fired:
            self.fired = True
            self.fired_at_s = ts_s
            return True
        return False


# --------------------------------------------------------------------------- rate limit


class SlidingWindowRateLimiter:
    """At most ``count`` orders in any ``window_s`` for each ``(count, window_s)`` of ``limits``:
    an order at ``t`` is allowed when fewer than ``count`` recorded orders lie in ``(t - window_s,
    t]``. Exact (a sliding log of the recorded times, not a bucket approximation)."""

    def __init__(self, limits: Sequence[tuple[int, float]]) -> None:
        self.limits = tuple((int(n), float(w)) for n, w in limits)
        for n, w in self.limits:
            if n < 1 or not (math.isfinite(w) and w > 0):
                raise ValueError(f"rate limit ({n}, {w}) needs a count >= 1 and a window > 0")
        self._max_window_s = max((w for _, w in self.limits), default=0.0)
        self._times: deque[float] = deque()

    def count(self, ts_s: float, window_s: float) -> int:
        """Recorded orders in ``(ts_s - window_s, ts_s]``."""
        lo = ts_s - window_s
        return sum(1 for t in self._times if lo < t <= ts_s)

    def refusal(self, ts_s: float) -> str:
        """Why an order at ``ts_s`` would be refused ("" when it is allowed)."""
        for n, w in self.limits:
            used = self.count(ts_s, w)
            if used >= n:
                return f"{used} orders in the last {w:g} s (limit {n})"
        return ""

    def record(self, ts_s: float) -> None:
        self._times.append(float(ts_s))
        while self._times and self._times[0] <= ts_s - self._max_window_s:
            self._times.popleft()


# --------------------------------------------------------------------------- config


def _pairs(value, cast) -> tuple:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple((str(k), cast(v)) for k, v in items)


@dataclass(frozen=True, slots=True)
class SafetyConfig:
    """Every threshold of the gate (the module docstring says how each is used). Fractions are
    plain fractions (0.05 = 5 %), volatilities annualized, APRs annual fractions, times seconds.
    ``inf`` disables a limit (and its rule then needs no inputs).

    From the plans: heartbeat 3600 s, panic at distance < 0.05 and equity drop > 0.10 (001);
    max open orders 10, max slippage 0.05, max venue concentration 0.70 (004); the volatility
    reference 2 % daily (001's first hedge-ratio band). Chosen here (the plans give no figure):
    the daily loss limit 5 %, the position caps (1 BTC / 30 ETH / 100k USD per asset and kind, a
    margin over 001's 0.27 BTC book), the funding breaker at 50 % APR paid (0.0457 % per 8 h,
    over four times the 0.01 % baseline), 1M USD daily volume, 5 orders/s and 60/min, the breaker
    cooldowns.

    ``max_position_coin`` per asset, as pairs or a mapping; the key ``"*"`` is the cap of any
    asset not listed (without it, orders in unlisted assets are refused).
    """

    max_order_age_s: float = 60.0
    max_market_age_s: float = 60.0
    heartbeat_timeout_s: float = 3600.0
    panic_liquidation_distance: float = 0.05
    panic_equity_drop: float = 0.10
    panic_retry_s: float = 60.0
    min_liquidation_distance: float = 0.05
    liquidation_alert_distance: float = 0.10
    flatten_kinds: tuple[str, ...] = LEVERAGED_KINDS
    max_daily_loss_fraction: float = 0.05
    max_position_coin: tuple[tuple[str, float], ...] = (("BTC", 1.0), ("ETH", 30.0))
    max_position_notional_usd: float = 100_000.0
    vol_cap_reference_annual: float = 0.02 * math.sqrt(365.0)
    vol_cap_min_fraction: float = 0.25
    max_funding_apr_paid: float = 0.50
    max_daily_volume_usd: float = 1_000_000.0
    max_open_orders: int = 10
    max_slippage_fraction: float = 0.05
    max_venue_concentration: float = 0.70
    concentration_min_exposure_usd: float = 10_000.0
    rate_limits: tuple[tuple[int, float], ...] = ((5, 1.0), (60, 60.0))
    oracle_anomaly_count: int = 3
    oracle_anomaly_window_s: float = 300.0
    anomaly_kinds: tuple[str, ...] = ("oracle_decimal", "oracle_jump", "oracle_volatility_jump",
                                      "oracle_divergence", "return_anomaly")
    oracle_breaker: BreakerConfig = BreakerConfig(cooldown_s=300.0, probation_s=60.0)
    funding_breaker: BreakerConfig = BreakerConfig(cooldown_s=900.0, probation_s=0.0)
    panic_breaker: BreakerConfig = BreakerConfig(cooldown_s=3600.0, probation_s=300.0)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "max_position_coin", _pairs(self.max_position_coin, float))
        set_(self, "rate_limits", tuple((int(n), float(w)) for n, w in self.rate_limits))
        set_(self, "flatten_kinds", tuple(str(k) for k in self.flatten_kinds))
        set_(self, "anomaly_kinds", tuple(str(k) for k in self.anomaly_kinds))
        for name in ("oracle_breaker", "funding_breaker", "panic_breaker"):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                set_(self, name, BreakerConfig(**value))
            elif not isinstance(value, BreakerConfig):
                raise ValueError(f"{name} must be a BreakerConfig, got {value!r}")
        for name in ("max_order_age_s", "max_market_age_s", "heartbeat_timeout_s", "panic_retry_s",
                     "oracle_anomaly_window_s"):
            _finite(name, getattr(self, name), positive=True)
        for name in ("panic_liquidation_distance", "min_liquidation_distance",
                     "liquidation_alert_distance", "concentration_min_exposure_usd"):
            _finite(name, getattr(self, name), non_negative=True)
        for name in ("panic_equity_drop", "max_daily_loss_fraction", "max_position_notional_usd",
                     "vol_cap_reference_annual", "max_funding_apr_paid", "max_daily_volume_usd",
                     "max_slippage_fraction", "max_venue_concentration"):
            _finite(name, getattr(self, name), positive=True, allow_inf=True)
        _finite("vol_cap_min_fraction", self.vol_cap_min_fraction, positive=True)
        if self.vol_cap_min_fraction > 1:
            raise ValueError(f"vol_cap_min_fraction must be in (0, 1], got {self.vol_cap_min_fraction!r}")
        if isinstance(self.max_open_orders, bool) or not isinstance(self.max_open_orders, int) \
                or self.max_open_orders < 1:
            raise ValueError(f"max_open_orders must be an int >= 1, got {self.max_open_orders!r}")
        if isinstance(self.oracle_anomaly_count, bool) or not isinstance(self.oracle_anomaly_count, int) \
                or self.oracle_anomaly_count < 1:
            raise ValueError(f"oracle_anomaly_count must be an int >= 1, got {self.oracle_anomaly_count!r}")
        for asset, cap in self.max_position_coin:
            _finite(f"max_position_coin[{asset}]", cap, positive=True, allow_inf=True)
        SlidingWindowRateLimiter(self.rate_limits)  # validates the limits
        unknown = set(self.flatten_kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"flatten_kinds {sorted(unknown)} are not instrument kinds {KINDS}")

    @classmethod
    def from_mapping(cls, values) -> SafetyConfig:
        """The config from a mapping (a parsed ``[safety]`` section): keys that are fields are
        used, others ignored; lists become tuples, tables become pairs or ``BreakerConfig``."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(values).items() if k in names})

    def position_cap_coin(self, asset: str) -> float:
        """The asset's coin cap (NaN: no cap configured, orders are refused)."""
        caps = dict(self.max_position_coin)
        return caps.get(asset, caps.get("*", math.nan))

    def breaker_config(self, rule: str) -> BreakerConfig:
        return {"oracle_breaker": self.oracle_breaker, "funding_breaker": self.funding_breaker,
                "panic_close": self.panic_breaker}.get(rule, BreakerConfig(SECONDS_PER_DAY, 0.0))


# --------------------------------------------------------------------------- context and results


# Read-only copies of a mapping (or of (key, value) pairs) with float values, keyed by str or by
# ``_position_key``. Keys and values already of those types are taken as they are, without a
# call each: a context is built on every bar, and almost all of them are.


def _frozen_floats_by_str(value) -> MappingProxyType:
    items = value.items() if type(value) is dict or isinstance(value, Mapping) else value
    return MappingProxyType({(k if type(k) is str else str(k)):
                             (v if type(v) is float else float(v)) for k, v in items})


def _frozen_positions(value) -> MappingProxyType:
    items = value.items() if type(value) is dict or isinstance(value, Mapping) else value
    return MappingProxyType({
        (k if type(k) is tuple and len(k) == 2 and type(k[0]) is str and type(k[1]) is str
         else _position_key(k)): (v if type(v) is float else float(v))
        for k, v in items})


def _position_key(key) -> tuple[str, str]:
    if not (isinstance(key, tuple) and len(key) == 2):
        raise ValueError(f"position keys are (asset, kind) pairs, got {key!r}")
    return (str(key[0]), str(key[1]))


_CONTEXT_FLOATS = ("ts_s", "equity_usd", "day_start_equity_usd", "peak_equity_usd", "day_start_s",
                   "daily_volume_usd", "heartbeat_ts_s")


@dataclass(frozen=True, slots=True)
class SafetyContext:
    """What the rules need at ``ts_s`` (epoch s), as the caller knows it before the order.

    ``markets``: the assets' ``MarketState`` (one, a sequence, or a mapping by asset; stored as a
    read-only mapping by asset). Equity is net (cash + positions + reserve - loan), USD:
    ``equity_usd`` now, ``day_start_equity_usd`` at the start of the UTC day ``day_start_s``
    (``utc_day_start_s(ts_s)``: the gate refuses figures of another day), ``peak_equity_usd`` the
    high-water mark the panic close measures the drop from. ``daily_volume_usd`` traded notional
    of that day. ``positions_coin``: signed coins by ``(asset, kind)`` (absent: flat).
    ``liquidation_prices_usd`` by asset, for assets with perp/quarterly positions.
    ``open_orders``: how many are open (-1: unknown). ``venue_exposure_usd``: gross notional by
    venue. ``heartbeat_ts_s``: the last sign of life of the engine/feeds (the dead man's switch).
    NaN means unknown everywhere, and the rules that need an unknown input refuse.
    """

    ts_s: float
    markets: Any = ()
    equity_usd: float = math.nan
    day_start_equity_usd: float = math.nan
    peak_equity_usd: float = math.nan
    day_start_s: float = math.nan
    daily_volume_usd: float = math.nan
    positions_coin: Mapping[tuple[str, str], float] = field(default_factory=dict)
    liquidation_prices_usd: Mapping[str, float] = field(default_factory=dict)
    open_orders: int = -1
    venue_exposure_usd: Mapping[str, float] = field(default_factory=dict)
    heartbeat_ts_s: float = math.nan

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        markets = self.markets
        if markets is None:
            markets = ()
        elif hasattr(markets, "asset") and hasattr(markets, "spot_usd"):
            markets = (markets,)
        if type(markets) is not tuple and isinstance(markets, Mapping):
            markets = tuple(markets.values())
        by_asset = {}
        for m in markets:
            if not (hasattr(m, "asset") and hasattr(m, "spot_usd")):
                raise ValueError(f"markets must hold MarketState objects, got {m!r}")
            by_asset[str(m.asset)] = m
        set_(self, "markets", MappingProxyType(by_asset))
        set_(self, "positions_coin", _frozen_positions(self.positions_coin))
        set_(self, "liquidation_prices_usd", _frozen_floats_by_str(self.liquidation_prices_usd))
        set_(self, "venue_exposure_usd", _frozen_floats_by_str(self.venue_exposure_usd))
        for name in _CONTEXT_FLOATS:
            value = getattr(self, name)
            if type(value) is not float:  # (floats, nearly always, stay as they are)
                set_(self, name, float(value))
        open_orders = self.open_orders
        if type(open_orders) is not int:
            if isinstance(open_orders, bool) or not isinstance(open_orders, (int, np.integer)):
                raise ValueError(f"open_orders must be an int (-1: unknown), got {open_orders!r}")
            set_(self, "open_orders", int(open_orders))

    def market(self, asset: str) -> MarketState | None:
        return self.markets.get(asset)

    def position(self, asset: str, kind: str) -> float:
        return self.positions_coin.get((asset, kind), 0.0)

    @property
    def assets(self) -> tuple[str, ...]:
        """Assets with a market state or a non-zero (or unknown) position, sorted."""
        held = {a for (a, _), q in self.positions_coin.items() if q != 0}
        return tuple(sorted(set(self.markets) | held))

    def after(self, order: Order) -> SafetyContext:
        """This context after ``order`` was approved: its position moved, one more open order, its
        notional (at the spot) added to the day's volume and, unless it reduces, to its venue's
        exposure (``""``: to the most exposed venue, as the concentration check assumed)."""
        m = self.market(order.asset)
        spot = float(m.spot_usd) if m is not None else math.nan
        notional = order.quantity_coin * spot
        key = (order.asset, order.kind)
        positions = dict(self.positions_coin)
        before = positions.get(key, 0.0)
        positions[key] = position_after(before, order.side, order.quantity_coin)
        exposure = dict(self.venue_exposure_usd)
        if not (order.reduce_only and reduces_position(before, order.side, order.quantity_coin)):
            venue = _target_venue(exposure, order.venue)
            exposure[venue] = exposure.get(venue, 0.0) + notional
        return SafetyContext(
            ts_s=self.ts_s, markets=self.markets, equity_usd=self.equity_usd,
            day_start_equity_usd=self.day_start_equity_usd, peak_equity_usd=self.peak_equity_usd,
            day_start_s=self.day_start_s, daily_volume_usd=self.daily_volume_usd + notional,
            positions_coin=positions, liquidation_prices_usd=self.liquidation_prices_usd,
            open_orders=self.open_orders + 1 if self.open_orders >= 0 else -1,
            venue_exposure_usd=exposure, heartbeat_ts_s=self.heartbeat_ts_s)


def _target_venue(exposure: Mapping[str, float], venue: str) -> str:
    """The venue an order lands on for the concentration check: its own, or (``""``) the most
    exposed one (worst case; ``""`` itself when no venue is known)."""
    if venue or not exposure:
        return venue
    return max(sorted(exposure), key=lambda v: exposure[v])


@dataclass(frozen=True, slots=True)
class PauseState:
    """Emergency pause / manual override (plan 000 BI-302, plan 001 Sprint 3.2): whether trading
    is paused, by whom, since when, why, and whether reducing orders may still pass."""

    paused: bool = False
    who: str = ""
    since_s: float = math.nan
    why: str = ""
    allow_flatten: bool = True


@dataclass(frozen=True, slots=True)
class SafetyDecision:
    """An action the caller must execute: ``rule`` "panic_close", "dead_mans_switch" or
    "manual_flatten"; pause trading (already done in the gate's state), cancel every open order,
    submit ``orders`` (reduce-only market orders; they pass the gate's check)."""

    ts_s: float
    rule: str
    pause_trading: bool
    cancel_open_orders: bool
    orders: tuple[Order, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class SafetyTick:
    """What ``tick`` decided and the alerts raised since they were last taken."""

    decisions: tuple[SafetyDecision, ...]
    alerts: tuple[Alert, ...]


@dataclass(frozen=True, slots=True)
class SafetyStatus:
    """The gate for dashboards: the pause, the dead man's switch countdown (NaN before the first
    heartbeat), every breaker."""

    ts_s: float
    pause: PauseState
    dead_mans_seconds_left: float
    breakers: tuple[BreakerStatus, ...]

    @property
    def any_breaker_open(self) -> bool:
        return any(b.state == BreakerState.OPEN.value for b in self.breakers)


# --------------------------------------------------------------------------- the gate


class SafetyGate:
    """Every order passes ``check`` (or ``check_all``); ``tick`` runs the time-driven rules.
    See the module docstring for the rules, their order and what fails closed."""

    def __init__(self, config: SafetyConfig = SafetyConfig()) -> None:
        self.config = config
        self.dead_mans_switch = DeadMansSwitch(config.heartbeat_timeout_s)
        self.rate_limiter = SlidingWindowRateLimiter(config.rate_limits)
        self._breakers: dict[str, CircuitBreaker] = {}
        self._pause = PauseState()
        self._alerts: list[Alert] = []
        self._anomalies: dict[str, deque[float]] = {}
        self._panic_issued_s: dict[str, float] = {}
        self._liquidation_warned: set[str] = set()
        self._last_ts_s = -math.inf
        self._n_orders = 0
        self._panic_now: dict[str, tuple[bool | None, str]] = {}  # of the last evaluation
        # Breakers are never removed: each asset's three, and the assets that have any, are kept
        # at hand for ``_evaluate`` (it runs on every tick and every order).
        self._asset_breakers: dict[str, tuple[CircuitBreaker, ...]] = {}
        self._breaker_assets: set[str] = set()

    def update_config(self, config: SafetyConfig) -> None:
        """Adopt ``config`` while running (an approved parameter change): every rule reads it
        from the next check on; the dead man's switch takes its timeout, each breaker its rule's
        cooldown and probation (a breaker already open keeps the reopen time it has), and the
        rate limiter its limits (its count starts afresh only when they changed)."""
        if config.rate_limits != self.config.rate_limits:
            self.rate_limiter = SlidingWindowRateLimiter(config.rate_limits)
        self.config = config
        self.dead_mans_switch.timeout_s = float(config.heartbeat_timeout_s)
        for breaker in self._breakers.values():
            breaker.config = config.breaker_config(breaker.rule)

    # ----------------------------------------------------------------- state for operators

    @property
    def pause_state(self) -> PauseState:
        return self._pause

    def seconds_left(self, ts_s: float) -> float:
        """The dead man's switch countdown (s; NaN before the first heartbeat)."""
        return self.dead_mans_switch.seconds_left(ts_s)

    def breaker_states(self) -> dict[str, BreakerStatus]:
        return {name: b.status() for name, b in sorted(self._breakers.items())}

    def status(self, ts_s: float) -> SafetyStatus:
        return SafetyStatus(ts_s, self._pause, self.seconds_left(ts_s),
                            tuple(self.breaker_states().values()))

    def take_alerts(self) -> list[Alert]:
        """The alerts raised since the last call (each is handed out once)."""
        alerts, self._alerts = self._alerts, []
        return alerts

    def pause(self, ts_s: float, who: str, why: str, *, allow_flatten: bool = True) -> PauseState:
        """Pause trading (``hedgeflow pause``). Authentication is the caller's job."""
        self._pause = PauseState(True, who, ts_s, why, allow_flatten)
        mode = "reducing orders still allowed" if allow_flatten else "hard freeze: nothing passes"
        self._alerts.append(Alert(ts_s, "safety_pause", "warning",
                                  f"trading paused by {who}: {why} ({mode})", who))
        return self._pause

    def resume(self, ts_s: float, who: str, why: str) -> PauseState:
        """Resume trading (``hedgeflow resume``); an expired dead man's switch or an open breaker
        still refuses risk."""
        was = self._pause
        self._pause = PauseState()
        self._alerts.append(Alert(ts_s, "safety_resume", "info",
                                  f"trading resumed by {who}: {why} (paused by {was.who or 'nobody'}"
                                  f" since {was.since_s}: {was.why})", who))
        return self._pause

    def flatten(self, context: SafetyContext, who: str, why: str) -> SafetyDecision:
        """Pause (flattening allowed), cancel open orders, close ``flatten_kinds`` positions
        (``hedgeflow flatten``)."""
        ts = context.ts_s
        self.pause(ts, who, f"flatten: {why}", allow_flatten=True)
        orders = self._flatten_orders(ts, context.positions_coin, None, "manual_flatten")
        self._alerts.append(Alert(ts, "safety_flatten", "critical",
                                  f"flatten by {who}: {why}; {len(orders)} closing orders", who))
        return SafetyDecision(ts, "manual_flatten", True, True, orders, f"{who}: {why}")

    def trip_breaker(self, name: str, ts_s: float, who: str, why: str) -> list[Alert]:
        """Open breaker ``name`` by hand (``daily_loss_limit``, ``oracle_breaker:BTC``, ...)."""
        alerts = self._breaker(name).trip(ts_s, f"tripped by {who}: {why}")
        self._alerts += alerts
        return alerts

    def reset_breaker(self, name: str, ts_s: float, who: str, why: str) -> list[Alert]:
        """Close breaker ``name`` by hand; KeyError for a breaker that does not exist."""
        alerts = self._breakers[name].reset(ts_s, who, why)
        self._alerts += alerts
        return alerts

    def record_anomaly(self, ts_s: float, asset: str, kind: str = "") -> None:
        """Count one anomaly alert of ``asset`` toward its oracle breaker."""
        if not math.isfinite(ts_s):
            return
        q = self._anomalies.setdefault(asset, deque())
        q.append(float(ts_s))
        while q and q[0] <= max(q) - self.config.oracle_anomaly_window_s:
            q.popleft()

    def record_alert(self, alert: Alert, asset: str) -> bool:
        """Count ``alert`` as an anomaly of ``asset`` when its kind is one of ``anomaly_kinds``
        and it is not merely informational; True when it counted."""
        if alert.kind in self.config.anomaly_kinds and alert.severity != "info":
            self.record_anomaly(alert.ts, asset, alert.kind)
            return True
        return False

    # ----------------------------------------------------------------- checking orders

    def check(self, order: Order, context: SafetyContext, *,
              expected_slippage_fraction: float = math.nan) -> Order | Rejection:
        """``order`` if every rule that guards it passes on ``context``, else a ``Rejection``
        naming the first rule that refused. ``expected_slippage_fraction``: the caller's estimate
        of the order's slippage against the mid (a fraction), needed for market orders."""
        ts = context.ts_s
        problems = order_problems(order)
        if problems:
            return self._reject(order, ts, "invalid_order", "; ".join(problems))
        if not math.isfinite(ts):
            return self._reject(order, order.ts_s, "invalid_context", f"context ts_s is {ts!r}")
        if ts < self._last_ts_s:
            return self._reject(order, ts, "clock",
                                f"context time {ts} is before {self._last_ts_s}, already seen")
        if abs(order.ts_s - ts) > self.config.max_order_age_s:
            return self._reject(order, ts, "stale_order",
                                f"order time {order.ts_s} is {ts - order.ts_s:.6g} s from the "
                                f"context's (limit {self.config.max_order_age_s:g} s)")
        self._last_ts_s = ts
        self._evaluate(context)

        pos = context.position(order.asset, order.kind)
        if not math.isfinite(pos):
            return self._reject(order, ts, "position_unknown",
                                f"position {order.asset} {order.kind} is {pos!r}")
        reducing = order.reduce_only and reduces_position(pos, order.side, order.quantity_coin)
        if order.reduce_only and not reducing:
            return self._reject(order, ts, "reduce_only",
                                f"reduce-only {order.side} {order.quantity_coin:g} would not reduce "
                                f"the {order.asset} {order.kind} position of {pos:g}")
        p = self._pause
        if p.paused and not (reducing and p.allow_flatten):
            rule = "dead_mans_switch" if p.who == "dead_mans_switch" else "manual_pause"
            what = "hard freeze" if not p.allow_flatten else "only reducing orders pass"
            return self._reject(order, ts, rule,
                                f"paused by {p.who} since {p.since_s}: {p.why} ({what})")
        if not reducing:
            refusal = self._risk_refusal(order, context, pos, expected_slippage_fraction)
            if refusal is not None:
                return self._reject(order, ts, *refusal)
        why = self.rate_limiter.refusal(ts)
        if why:
            return self._reject(order, ts, "rate_limit", why)
        self.rate_limiter.record(ts)
        return order

    def check_all(self, orders: Sequence[Order], context: SafetyContext, *,
                  expected_slippage_fraction: Sequence[float] | None = None) -> list[Order | Rejection]:
        """``check`` each order in turn, each against the context after the approvals before it
        (``SafetyContext.after``); ``expected_slippage_fraction`` aligned with ``orders``."""
        if expected_slippage_fraction is not None and len(expected_slippage_fraction) != len(orders):
            raise ValueError("expected_slippage_fraction must have one value per order")
        results: list[Order | Rejection] = []
        for i, order in enumerate(orders):
            est = math.nan if expected_slippage_fraction is None else expected_slippage_fraction[i]
            result = self.check(order, context, expected_slippage_fraction=est)
            results.append(result)
            if isinstance(result, Order):
                context = context.after(result)
        return results

    # ----------------------------------------------------------------- time-driven rules

    def tick(self, context: SafetyContext) -> SafetyTick:
        """Run the time-driven rules at ``context.ts_s``: breaker cooldowns and trips, the dead
        man's switch (fires once per expiry), the panic close (per asset, re-issued every
        ``panic_retry_s`` while due). Returns the decisions and every alert not yet taken."""
        ts = context.ts_s
        if not math.isfinite(ts) or ts < self._last_ts_s:
            self._alerts.append(Alert(ts if math.isfinite(ts) else self._last_ts_s, "safety_clock",
                                      "warning", f"tick at {ts!r} ignored (last time seen "
                                      f"{self._last_ts_s})", "safety_gate"))
            return SafetyTick((), tuple(self.take_alerts()))
        self._last_ts_s = ts
        self._evaluate(context)
        decisions: list[SafetyDecision] = []
        dms = self.dead_mans_switch
        if dms.poll(ts):
            silent = ts - dms.last_heartbeat_s
            why = f"no heartbeat for {silent:.0f} s (timeout {dms.timeout_s:.0f} s)"
            if not self._pause.paused:  # an operator's pause (maybe a hard freeze) stands
                self._pause = PauseState(True, "dead_mans_switch", ts, why, True)
            orders = self._flatten_orders(ts, context.positions_coin, None, "dead_mans_switch")
            self._alerts.append(Alert(ts, "safety_dead_mans_switch", "critical",
                                      f"dead man's switch fired: {why}; trading paused, open orders "
                                      f"cancelled, {len(orders)} closing orders", "dead_mans_switch"))
            decisions.append(SafetyDecision(ts, "dead_mans_switch", True, True, orders, why))
        for asset, (due, detail) in self._panic_now.items():
            if due is not True:
                if due is False:
                    self._panic_issued_s.pop(asset, None)
                continue
            last = self._panic_issued_s.get(asset)
            if last is not None and ts - last < self.config.panic_retry_s:
                continue
            orders = self._flatten_orders(ts, context.positions_coin, (asset,), "panic_close")
            if last is None:
                self._alerts.append(Alert(ts, "safety_panic_close", "critical",
                                          f"{asset}: panic close: {detail}; {len(orders)} closing "
                                          "orders", asset))
            self._panic_issued_s[asset] = ts
            decisions.append(SafetyDecision(ts, "panic_close", False, True, orders,
                                            f"{asset}: {detail}"))
        return SafetyTick(tuple(decisions), tuple(self.take_alerts()))

    # ----------------------------------------------------------------- internals

    def _reject(self, order: Order, ts_s: float, rule: str, detail: str) -> Rejection:
        return Rejection(ts_s, order, rule, detail)

    def _flatten_orders(self, ts_s, positions, assets, reason) -> tuple[Order, ...]:
        orders = flatten_orders(ts_s, positions, kinds=self.config.flatten_kinds, assets=assets,
                                reason=reason, first_index=self._n_orders)
        self._n_orders += len(orders)
        return orders

    def _breaker(self, name: str) -> CircuitBreaker:
        b = self._breakers.get(name)
        if b is None:
            rule = name.split(":", 1)[0]
            if rule not in ("daily_loss_limit", "oracle_breaker", "funding_breaker", "panic_close"):
                raise KeyError(f"no breaker rule {rule!r}")
            b = self._breakers[name] = CircuitBreaker(name, self.config.breaker_config(rule))
            if ":" in name:
                self._breaker_assets.add(name.split(":", 1)[1])
        return b

    def _feed(self, breaker: CircuitBreaker, ts_s: float, bad: bool | None, reason: str) -> None:
        # A CLOSED breaker whose condition is not bad does not change (its update is a no-op):
        # the common case, skipped.
        if bad is True or breaker.state is not BreakerState.CLOSED:
            self._alerts += breaker.update(ts_s, bad, reason)

    def _evaluate(self, ctx: SafetyContext) -> None:
        """Feed the context to the switch and every breaker (trips, cooldowns, probations)."""
        ts = ctx.ts_s
        heartbeat = ctx.heartbeat_ts_s
        if math.isfinite(heartbeat) and heartbeat <= ts:
            self.dead_mans_switch.heartbeat(heartbeat)
        bad, detail = self._daily_loss_status(ctx)
        breaker = self._breaker("daily_loss_limit")
        if bad is True or breaker.state is not BreakerState.CLOSED:  # (as in ``_feed``)
            self._alerts += breaker.update(ts, bad, detail,
                                           reopen_at_s=utc_day_start_s(ts) + SECONDS_PER_DAY)
        # an asset that left the context (no market, nothing held) has nothing left to guard:
        # its breakers see a clear condition and close after their cooldown and probation
        assets = set(ctx.markets)  # ``ctx.assets``, without sorting it twice
        for (asset, _), q in ctx.positions_coin.items():
            if q != 0:
                assets.add(asset)
        panic = self._panic_now = {}
        for asset in sorted(assets | self._breaker_assets):
            breakers = self._asset_breakers.get(asset)
            if breakers is None:
                breakers = self._asset_breakers[asset] = tuple(
                    self._breaker(f"{rule}:{asset}")
                    for rule in ("oracle_breaker", "funding_breaker", "panic_close"))
            oracle, funding, panic_close = breakers
            if asset not in assets:
                for breaker in breakers:
                    self._feed(breaker, ts, False, "")
                continue
            self._feed(oracle, ts, *self._oracle_status(ctx, asset))
            self._feed(funding, ts, *self._funding_status(ctx, asset))
            leverage = self._leverage(ctx, asset)
            panic[asset] = due = self._panic_status(ctx, asset, leverage)
            self._feed(panic_close, ts, *due)
            self._liquidation_warning(ctx, asset, leverage)

    # The statuses: (True, why) bad, (None, why) unknown, (False, "") clear.

    def _daily_loss_status(self, ctx: SafetyContext) -> tuple[bool | None, str]:
        limit = self.config.max_daily_loss_fraction
        if math.isinf(limit):
            return False, ""
        today = utc_day_start_s(ctx.ts_s)
        if ctx.day_start_s != today:
            return None, (f"start-of-day figures are for day {ctx.day_start_s}, not the UTC day "
                          f"{today} of ts {ctx.ts_s}")
        loss = daily_loss_fraction(ctx.equity_usd, ctx.day_start_equity_usd)
        if math.isnan(loss):
            return None, (f"daily loss unknown (equity {ctx.equity_usd!r}, start of day "
                          f"{ctx.day_start_equity_usd!r})")
        if loss >= limit:
            return True, f"daily loss {loss:.4%} >= limit {limit:.4%}"
        return False, ""

    def _market_problem(self, ctx: SafetyContext, asset: str) -> str:
        m = ctx.market(asset)
        if m is None:
            return f"{asset}: no market state"
        age = ctx.ts_s - float(m.ts_s)
        if not abs(age) <= self.config.max_market_age_s:
            return (f"{asset}: market state at {m.ts_s} is {age:.6g} s old "
                    f"(limit {self.config.max_market_age_s:g} s)")
        spot = float(m.spot_usd)
        if not (math.isfinite(spot) and spot > 0):
            return f"{asset}: spot price unknown ({spot!r})"
        return ""

    def _oracle_status(self, ctx: SafetyContext, asset: str) -> tuple[bool, str]:
        problem = self._market_problem(ctx, asset)
        if problem:
            return True, problem
        if not bool(ctx.market(asset).oracle_ok):
            return True, f"{asset}: oracle not ok"
        anomalies = self._anomalies.get(asset)
        if not anomalies:
            return False, ""
        window = self.config.oracle_anomaly_window_s
        n = sum(1 for t in anomalies if ctx.ts_s - window < t <= ctx.ts_s)
        if n >= self.config.oracle_anomaly_count:
            return True, f"{asset}: {n} anomaly alerts in {window:g} s"
        return False, ""

    def _funding_status(self, ctx: SafetyContext, asset: str) -> tuple[bool | None, str]:
        limit = self.config.max_funding_apr_paid
        pos = ctx.position(asset, "perp")
        if math.isinf(limit) or pos == 0:
            return False, ""
        m = ctx.market(asset)
        if m is None or not math.isfinite(pos):
            return None, f"{asset}: perp position or market unknown"
        paid = funding_apr_paid(pos, m.funding_rate_per_interval, m.funding_interval_h)
        if math.isnan(paid):
            return None, f"{asset}: funding rate unknown"
        if paid > limit:
            return True, f"{asset}: perp position of {pos:g} pays funding at {paid:.2%} APR > {limit:.2%}"
        return False, ""

    def _leveraged(self, ctx: SafetyContext, asset: str) -> bool:
        positions = ctx.positions_coin
        for kind in LEVERAGED_KINDS:
            if positions.get((asset, kind), 0.0) != 0:
                return True
        return False

    def _distance(self, ctx: SafetyContext, asset: str) -> float:
        m = ctx.market(asset)
        mark = float(m.perp_mark_usd) if m is not None else math.nan
        return liquidation_distance(mark, ctx.liquidation_prices_usd.get(asset, math.nan))

    def _leverage(self, ctx: SafetyContext, asset: str) -> tuple[bool, float]:
        """Whether the asset holds futures, and their distance to liquidation (NaN when not)."""
        if not self._leveraged(ctx, asset):
            return False, math.nan
        return True, self._distance(ctx, asset)

    def _panic_status(self, ctx: SafetyContext, asset: str,
                      leverage: tuple[bool, float] | None = None) -> tuple[bool | None, str]:
        """``leverage``: ``_leverage(ctx, asset)`` when the caller has it."""
        cfg = self.config
        if math.isinf(cfg.panic_equity_drop) or cfg.panic_liquidation_distance == 0:
            return False, ""
        leveraged, distance = self._leverage(ctx, asset) if leverage is None else leverage
        if not leveraged:
            return False, ""
        drop = net_equity_drop(ctx.equity_usd, ctx.peak_equity_usd)
        if math.isnan(distance) or math.isnan(drop):
            return None, (f"{asset}: panic inputs unknown (distance to liquidation {distance!r}, "
                          f"equity drop {drop!r})")
        if not panic_close_due(distance, drop, cfg.panic_liquidation_distance,
                               cfg.panic_equity_drop):
            return False, ""
        return True, (f"distance to liquidation {distance:.4%} (panic < "
                      f"{cfg.panic_liquidation_distance:.4%}), equity drop {drop:.4%} (panic > "
                      f"{cfg.panic_equity_drop:.4%})")

    def _liquidation_warning(self, ctx: SafetyContext, asset: str,
                             leverage: tuple[bool, float]) -> None:
        leveraged, distance = leverage
        if not leveraged:
            self._liquidation_warned.discard(asset)
            return
        if math.isnan(distance):
            return
        if distance < self.config.liquidation_alert_distance:
            if asset not in self._liquidation_warned:
                self._liquidation_warned.add(asset)
                self._alerts.append(Alert(ctx.ts_s, "safety_liquidation_warning", "warning",
                                          f"{asset}: {distance:.2%} from liquidation", asset))
        else:
            self._liquidation_warned.discard(asset)

    def _risk_refusal(self, order: Order, ctx: SafetyContext, pos: float,
                      slippage_estimate: float) -> tuple[str, str] | None:
        """The first rule that refuses a risk-increasing ``order`` as ``(rule, detail)``."""
        cfg = self.config
        ts = ctx.ts_s
        asset = order.asset
        dms = self.dead_mans_switch
        if not dms.armed:
            return "dead_mans_switch", "no heartbeat seen yet"
        if dms.expired(ts):
            return "dead_mans_switch", (f"no heartbeat for {ts - dms.last_heartbeat_s:.0f} s "
                                        f"(timeout {dms.timeout_s:.0f} s)")
        for name, b in sorted(self._breakers.items()):
            if b.is_open:
                return b.rule, f"{name} open since {b.since_s}: {b.reason}"

        problem = self._market_problem(ctx, asset)
        if problem:
            return "stale_market", problem
        m = ctx.market(asset)
        if not bool(m.oracle_ok):
            return "oracle_breaker", f"{asset}: oracle not ok"
        spot = float(m.spot_usd)

        bad, detail = self._daily_loss_status(ctx)
        if bad is not False:
            return "daily_loss_limit", detail

        if self._leveraged(ctx, asset):
            if cfg.min_liquidation_distance > 0:
                distance = self._distance(ctx, asset)
                if math.isnan(distance):
                    return "liquidation_distance", f"{asset}: distance to liquidation unknown"
                if distance < cfg.min_liquidation_distance:
                    return "liquidation_distance", (f"{asset}: {distance:.4%} from liquidation "
                                                    f"(< {cfg.min_liquidation_distance:.4%})")
            due, detail = self._panic_status(ctx, asset)
            if due is not False:
                return "panic_close", detail

        if order.kind == "perp" and not math.isinf(cfg.max_funding_apr_paid):
            paid = funding_apr_paid(side_sign(order.side), m.funding_rate_per_interval,
                                    m.funding_interval_h)
            if math.isnan(paid):
                return "funding_cost", f"{asset}: funding rate unknown"
            if paid > cfg.max_funding_apr_paid:
                return "funding_cost", (f"{asset}: a {order.side} perp pays funding at {paid:.2%} "
                                        f"APR (> {cfg.max_funding_apr_paid:.2%})")

        after = abs(position_after(pos, order.side, order.quantity_coin))
        cap_coin = cfg.position_cap_coin(asset)
        if math.isnan(cap_coin):
            return "max_position", f"no coin cap configured for {asset}"
        cap_usd = cfg.max_position_notional_usd
        notional_after = after * spot
        if after > cap_coin:
            return "max_position", f"{asset} {order.kind}: {after:g} coin after the order > {cap_coin:g}"
        if notional_after > cap_usd:
            return "max_position", (f"{asset} {order.kind}: {notional_after:.2f} USD after the order "
                                    f"> {cap_usd:.2f}")
        if not math.isinf(cfg.vol_cap_reference_annual):
            scale = volatility_position_scale(m.vol_24h_annual, cfg.vol_cap_reference_annual,
                                              cfg.vol_cap_min_fraction)
            if math.isnan(scale):
                return "volatility_cap", f"{asset}: 24 h volatility unknown ({m.vol_24h_annual!r})"
            if after > cap_coin * scale or notional_after > cap_usd * scale:
                return "volatility_cap", (
                    f"{asset} {order.kind}: {after:g} coin / {notional_after:.2f} USD after the order "
                    f"> caps x {scale:.4g} at 24 h vol {m.vol_24h_annual:.4g} "
                    f"({cap_coin * scale:g} coin, {cap_usd * scale:.2f} USD)")

        notional = order.quantity_coin * spot
        if not math.isinf(cfg.max_daily_volume_usd):
            if ctx.day_start_s != utc_day_start_s(ts):
                return "daily_volume", f"daily volume is for day {ctx.day_start_s}, not today's"
            vol = ctx.daily_volume_usd
            if not (math.isfinite(vol) and vol >= 0):
                return "daily_volume", f"daily volume unknown ({vol!r})"
            if vol + notional > cfg.max_daily_volume_usd:
                return "daily_volume", (f"{vol:.2f} + {notional:.2f} USD > "
                                        f"{cfg.max_daily_volume_usd:.2f} USD today")

        if ctx.open_orders < 0:
            return "open_orders", "open orders count unknown"
        if ctx.open_orders + 1 > cfg.max_open_orders:
            return "open_orders", f"{ctx.open_orders} open, limit {cfg.max_open_orders}"

        if not math.isinf(cfg.max_slippage_fraction):
            refusal = self._slippage_refusal(order, m, slippage_estimate)
            if refusal:
                return "slippage", refusal

        if cfg.max_venue_concentration < 1:
            refusal = self._concentration_refusal(order, ctx, notional)
            if refusal:
                return "venue_concentration", refusal
        return None

    def _slippage_refusal(self, order: Order, m, estimate: float) -> str:
        limit = self.config.max_slippage_fraction
        slips = []
        if not math.isnan(estimate):
            if not (math.isfinite(estimate) and estimate >= 0):
                return f"slippage estimate {estimate!r} is not a fraction >= 0"
            slips.append(("expected", estimate))
        if not order.is_market and order.kind in ("spot", "perp"):
            ref = float(m.spot_usd) if order.kind == "spot" else float(m.perp_mark_usd)
            if not (math.isfinite(ref) and ref > 0):
                return f"{order.kind} reference price unknown for the limit order"
            slips.append(("limit", max(0.0, side_sign(order.side) * (order.limit_price_usd - ref) / ref)))
        if not slips:
            return (f"no slippage estimate for a {'market' if order.is_market else 'limit'} "
                    f"{order.kind} order")
        for what, slip in slips:
            if slip > limit:
                return f"{what} slippage {slip:.4%} > {limit:.4%}"
        return ""

    def _concentration_refusal(self, order: Order, ctx: SafetyContext, notional: float) -> str:
        exposure = ctx.venue_exposure_usd
        bad = {v: x for v, x in exposure.items() if not (math.isfinite(x) and x >= 0)}
        if bad:
            return f"venue exposure unknown: {bad}"
        total = sum(exposure.values()) + notional
        if total <= self.config.concentration_min_exposure_usd:
            return ""
        venue = _target_venue(exposure, order.venue)
        share = (exposure.get(venue, 0.0) + notional) / total
        if share > self.config.max_venue_concentration:
            where = venue or "one venue"
            if not order.venue:
                where = f"{where} (no venue given: the most exposed one assumed)"
            return (f"{where} would hold {share:.2%} of {total:.2f} USD exposure "
                    f"(> {self.config.max_venue_concentration:.2%})")
        return ""
