"""Fault injection for the exchange simulator: what can go wrong, when, and how often.

A ``FaultPlan`` is plain data: built in code (``FaultPlan(timed=..., rates=...)``, the helpers
``FaultPlan.drop(...)`` etc., combined with ``+``) or parsed from the command line's string
(``FaultPlan.parse``). The simulator turns it into scheduled events (timed faults, at simulation
time measured from the simulator's start) and per-message random draws (rate faults, one
generator per venue and kind, seeded from the simulator's seed, so the same seed injects the same
faults into the same messages).

Grammar (clauses separated by commas; times are numbers with an optional unit ``ms``, ``s``,
``m``, ``h``, default seconds; rates are fractions in [0, 1] or percentages ``1%``)::

    drop=VENUE@TIME[:abort|:close]    close every connection of VENUE at TIME: "abort" (default)
                                       cuts the TCP connection without a close frame, "close"
                                       sends a close frame (1011) first
    stall=VENUE@TIME:DURATION         VENUE sends nothing at all for DURATION from TIME, but keeps
                                       its connections open (messages due meanwhile are lost)
    stale=VENUE@TIME[:DURATION]       VENUE stops sending market data (quotes, trades, books,
                                       tickers) from TIME (for DURATION, default: for good) but
                                       keeps sending heartbeats and answering requests
    deviate=VENUE:PCT[@TIME[:DURATION]]  VENUE's prices are off by PCT (5% or 0.05; negative
                                       allowed) from TIME (default 0), for DURATION (default: for
                                       good)
    malformed=[VENUE@]RATE            a fraction of data messages replaced by malformed ones
    skip_seq=[VENUE@]RATE             a fraction of sequence numbers skipped (Coinbase sequence,
                                       Binance depth U/u, Bybit orderbook u, Deribit change_id and
                                       trade_seq, Kraken trade_id)
    repeat_trades=[VENUE@]RATE        a fraction of trade messages sent twice, byte for byte
    out_of_order=[VENUE@]RATE         a fraction of data messages stamped 0.5-2 s before the
                                       previous message of their stream

VENUE is one of binance, coinbase, kraken, bybit, deribit; a rate without a venue (or with
``all``) applies to every venue, and a venue's own rate overrides it. ``VENUE:RATE`` is accepted
for ``VENUE@RATE``. Example: ``"drop=binance@5s,stall=kraken@3s:2s,malformed=0.01,
skip_seq=coinbase@0.001,repeat_trades=0.01,out_of_order=0.01,stale=bybit@10s,deviate=kraken:5%"``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from dataflows.sim.market import VENUES, rng_for

TIMED_KINDS = ("drop", "stall", "stale", "deviate")
RATE_KINDS = ("malformed", "skip_seq", "repeat_trades", "out_of_order")
DROP_MODES = ("abort", "close")

_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-z%]*)\s*$")


class FaultSpecError(ValueError):
    """A fault specification that cannot be understood; the message says what and how to fix."""


@dataclass(frozen=True)
class TimedFault:
    """A fault that starts at ``at_s`` seconds after the simulator starts.

    ``duration_s`` None means until the simulator stops (stale, deviate); a drop is instantaneous.
    ``mode`` is the drop's "abort" or "close"; ``pct`` the deviation as a fraction (0.05 = 5 %).
    """

    kind: str
    venue: str
    at_s: float
    duration_s: float | None = None
    mode: str = "abort"
    pct: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in TIMED_KINDS:
            raise FaultSpecError(
                f"unknown timed fault {self.kind!r} (one of {', '.join(TIMED_KINDS)})")
        _check_venue(self.venue, self.kind)
        if not (math.isfinite(self.at_s) and self.at_s >= 0.0):
            raise FaultSpecError(f"{self.kind}: the start time must be >= 0 s, got {self.at_s!r}")
        duration = self.duration_s
        if duration is not None and not (math.isfinite(duration) and duration > 0):
            raise FaultSpecError(f"{self.kind}: the duration must be > 0 s, got {duration!r}")
        if self.kind == "stall" and self.duration_s is None:
            raise FaultSpecError("stall needs a duration: stall=VENUE@TIME:DURATION, e.g. "
                                 "stall=kraken@3s:2s")
        if self.kind == "drop" and self.mode not in DROP_MODES:
            raise FaultSpecError(
                f"drop mode must be one of {', '.join(DROP_MODES)}, got {self.mode!r}")
        if self.kind == "deviate" and not (math.isfinite(self.pct) and self.pct > -1.0):
            raise FaultSpecError(f"deviate: the percentage must be above -100%, got {self.pct!r}")

    @property
    def end_s(self) -> float | None:
        return None if self.duration_s is None else self.at_s + self.duration_s

    def to_spec(self) -> str:
        at = _fmt_time(self.at_s)
        dur = "" if self.duration_s is None else ":" + _fmt_time(self.duration_s)
        if self.kind == "drop":
            return f"drop={self.venue}@{at}" + ("" if self.mode == "abort" else f":{self.mode}")
        if self.kind == "deviate":
            return f"deviate={self.venue}:{self.pct * 100:g}%@{at}{dur}"
        return f"{self.kind}={self.venue}@{at}{dur}"


@dataclass(frozen=True)
class RateFault:
    """A per-message fault with probability ``rate``; ``venue`` None means every venue."""

    kind: str
    rate: float
    venue: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in RATE_KINDS:
            raise FaultSpecError(
                f"unknown rate fault {self.kind!r} (one of {', '.join(RATE_KINDS)})")
        if self.venue is not None:
            _check_venue(self.venue, self.kind)
        if not (math.isfinite(self.rate) and 0.0 <= self.rate <= 1.0):
            raise FaultSpecError(f"{self.kind}: the rate must be in [0, 1] (or 0%..100%), "
                                 f"got {self.rate!r}")

    def to_spec(self) -> str:
        return f"{self.kind}=" + (f"{self.venue}@" if self.venue else "") + f"{self.rate:g}"


@dataclass(frozen=True)
class FaultPlan:
    """Every fault of one run; see the module docstring. Empty by default (a clean run)."""

    timed: tuple[TimedFault, ...] = ()
    rates: tuple[RateFault, ...] = ()

    def __add__(self, other: FaultPlan) -> FaultPlan:
        return FaultPlan(self.timed + other.timed, self.rates + other.rates)

    def __bool__(self) -> bool:
        return bool(self.timed) or any(r.rate > 0 for r in self.rates)

    # ---------------------------------------------------------------- construction helpers
    @classmethod
    def drop(cls, venue: str, at_s: float, mode: str = "abort") -> FaultPlan:
        return cls(timed=(TimedFault("drop", venue, at_s, mode=mode),))

    @classmethod
    def stall(cls, venue: str, at_s: float, duration_s: float) -> FaultPlan:
        return cls(timed=(TimedFault("stall", venue, at_s, duration_s),))

    @classmethod
    def stale(cls, venue: str, at_s: float, duration_s: float | None = None) -> FaultPlan:
        return cls(timed=(TimedFault("stale", venue, at_s, duration_s),))

    @classmethod
    def deviate(cls, venue: str, pct: float, at_s: float = 0.0,
                duration_s: float | None = None) -> FaultPlan:
        """``pct`` as a fraction: 0.05 = prices 5 % high."""
        return cls(timed=(TimedFault("deviate", venue, at_s, duration_s, pct=pct),))

    @classmethod
    def rate(cls, kind: str, rate: float, venue: str | None = None) -> FaultPlan:
        return cls(rates=(RateFault(kind, rate, venue),))

    # ---------------------------------------------------------------- queries
    def rate_for(self, kind: str, venue: str) -> float:
        """The rate of ``kind`` at ``venue``: its own clause, else the all-venue one, else 0."""
        general = 0.0
        for r in self.rates:
            if r.kind == kind:
                if r.venue == venue:
                    return r.rate
                if r.venue is None:
                    general = r.rate
        return general

    def timed_for(self, venue: str) -> list[TimedFault]:
        return sorted((t for t in self.timed if t.venue == venue), key=lambda t: t.at_s)

    def with_rate(self, kind: str, rate: float, venue: str | None = None) -> FaultPlan:
        rates = tuple(r for r in self.rates if not (r.kind == kind and r.venue == venue))
        return replace(self, rates=rates + (RateFault(kind, rate, venue),))

    def to_spec(self) -> str:
        return ",".join([t.to_spec() for t in self.timed] + [r.to_spec() for r in self.rates])

    # ---------------------------------------------------------------- parsing
    @classmethod
    def parse(cls, spec: str | None) -> FaultPlan:
        """The plan of a spec string (grammar in the module docstring); "" or None: no faults.

        Raises ``FaultSpecError`` naming the clause and what was expected.
        """
        timed: list[TimedFault] = []
        rates: list[RateFault] = []
        for raw in (spec or "").split(","):
            clause = raw.strip()
            if not clause:
                continue
            kind, sep, value = clause.partition("=")
            kind, value = kind.strip().lower(), value.strip()
            if not sep or not value:
                raise FaultSpecError(f"fault clause {clause!r} is not KIND=VALUE "
                                     f"(kinds: {', '.join(TIMED_KINDS + RATE_KINDS)})")
            try:
                if kind in RATE_KINDS:
                    rates.append(_parse_rate(kind, value))
                elif kind in TIMED_KINDS:
                    timed.append(_parse_timed(kind, value))
                else:
                    kinds = ", ".join(TIMED_KINDS + RATE_KINDS)
                    raise FaultSpecError(f"unknown fault kind {kind!r} (one of {kinds})")
            except FaultSpecError as exc:
                raise FaultSpecError(f"in fault clause {clause!r}: {exc}") from None
        return cls(tuple(timed), tuple(rates))


def _check_venue(venue: str, kind: str) -> None:
    if venue not in VENUES:
        raise FaultSpecError(f"{kind}: unknown venue {venue!r} (one of {', '.join(VENUES)})")


def _fmt_time(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if 0 < seconds < 1 else f"{seconds:g}s"


def parse_time(text: str) -> float:
    """``"5s"``, ``"500ms"``, ``"2m"``, ``"1.5"`` → seconds."""
    m = _NUMBER.match(text)
    if not m or m.group(2) not in ("",) + tuple(_UNITS):
        raise FaultSpecError(f"{text!r} is not a time such as 5s, 500ms, 2m or 1.5")
    return float(m.group(1)) * _UNITS.get(m.group(2) or "s", 1.0)


def parse_fraction(text: str) -> float:
    """``"0.01"`` or ``"1%"`` → 0.01."""
    m = _NUMBER.match(text)
    if not m or m.group(2) not in ("", "%"):
        raise FaultSpecError(f"{text!r} is not a fraction such as 0.01 or 1%")
    value = float(m.group(1))
    return value / 100.0 if m.group(2) == "%" else value


def _parse_rate(kind: str, value: str) -> RateFault:
    venue = None
    for sep in ("@", ":"):
        if sep in value:
            venue, _, value = value.partition(sep)
            venue = venue.strip().lower()
            break
    if venue == "all":
        venue = None
    return RateFault(kind, parse_fraction(value), venue)


def _parse_timed(kind: str, value: str) -> TimedFault:
    if kind == "deviate":
        head, _, when = value.partition("@")
        venue, sep, pct = head.partition(":")
        if not sep:
            raise FaultSpecError("deviate needs a percentage: deviate=VENUE:PCT, e.g. "
                                 "deviate=kraken:5%")
        at_s, duration = 0.0, None
        if when:
            start, _, dur = when.partition(":")
            at_s = parse_time(start)
            duration = parse_time(dur) if dur else None
        return TimedFault("deviate", venue.strip().lower(), at_s, duration, pct=parse_fraction(pct))
    venue, sep, when = value.partition("@")
    if not sep:
        raise FaultSpecError(f"{kind} needs a time: {kind}=VENUE@TIME, e.g. {kind}=binance@5s")
    start, _, rest = when.partition(":")
    venue = venue.strip().lower()
    if kind == "drop":
        mode = rest.strip().lower() or "abort"
        return TimedFault("drop", venue, parse_time(start), mode=mode)
    return TimedFault(kind, venue, parse_time(start), parse_time(rest) if rest else None)


@dataclass
class VenueFaults:
    """The live fault state of one venue: rates with their generators, and the switches the timed
    faults flip (``stale``, ``deviation``; a stall is the server's ``stalled``)."""

    venue: str
    seed: int
    plan: FaultPlan = field(default_factory=FaultPlan)
    stale: bool = False
    deviation: float = 0.0  # relative: 0.05 = the venue's prices are 5 % high

    def __post_init__(self) -> None:
        self.rates = {kind: self.plan.rate_for(kind, self.venue) for kind in RATE_KINDS}
        self._rngs = {kind: rng_for(self.seed, "fault", self.venue, kind) for kind in RATE_KINDS}
        self._rngs["detail"] = rng_for(self.seed, "fault", self.venue, "detail")

    def set_rate(self, kind: str, rate: float) -> None:
        RateFault(kind, rate)  # validates
        self.rates[kind] = rate

    def draw(self, kind: str) -> bool:
        """One Bernoulli draw for ``kind`` (no draw at all when its rate is 0, so a clean run's
        messages do not depend on fault generators)."""
        rate = self.rates[kind]
        return rate > 0.0 and bool(self._rngs[kind].random() < rate)

    @property
    def detail_rng(self):
        """The generator for a fault's details (where to truncate, how far back to stamp)."""
        return self._rngs["detail"]
