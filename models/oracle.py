"""Robust price oracle per asset (plan 000: OF-106, OF-201..OF-210, OF-301..OF-307; plan 004's
cross-venue comparison).

Each source (one exchange's spot instrument, ``"binance:BTCUSDT"``; see ``models.oracle_sources``
for which quotes are sources) contributes its latest mid and its half-spread as its uncertainty.
At each evaluation (``price(asset, now)``; ``publish(now)`` evaluates the assets that are due):

1. **Freshness.** A source whose latest quote is older than ``stale_after_s`` (event time against
   the ``now`` passed in) is left out ("stale").
2. **Robust filter** (needs at least 3 fresh sources, so that "the others" exist). The reference is
   the median of the fresh log mids; a source is rejected when

   - its ratio to the reference is near a power of ten, ``10^k`` with ``k != 0`` (a decimal bug:
     ``|log10(ratio) - k| <= decimal_tolerance``), kind ``decimal``;
   - it is a robust outlier: ``|log(mid / median)| > mad_k * max(1.4826 * MAD, mad_floor_bps)``
     (MAD is the median absolute deviation of the log mids; the floor keeps identical quotes from
     making every small difference an outlier). The median and the MAD are computed *with* the
     outlier and are not moved by it while the honest sources are the majority;
   - it diverges from the median by more than ``divergence_bps``;
   - it was used at the previous evaluation and has since moved, alone, by more than
     ``max(jump_z * sigma * sqrt(dt), jump_floor_bps)`` relative to the consensus move, with
     ``sigma`` the asset's EWMA volatility of consensus log returns (a jump out of proportion to
     current volatility).

   A rejected source is labelled by what happened: ``decimal``; ``jump`` (it moved by itself, the
   others did not, and it is now beyond ``divergence_bps``); ``volatility_jump`` (it moved by
   itself, out of proportion to volatility, but less than ``divergence_bps``); ``divergence``
   (beyond ``divergence_bps`` without having just moved, e.g. a stuck or lagging venue);
   ``outlier`` (a smaller robust outlier). Rejections must leave a strict majority of the sources
   that are not decimal errors: when they would not, nobody can tell which side is wrong, and the status is "degraded" with the median
   of all fresh sources as the price. With 1 or 2 fresh sources only the decimal check runs,
   against the last "ok" price (the anchor, if younger than ``anchor_max_age_s``).
3. **Aggregation.** The survivors' reliability-weighted mean, weight
   ``reliability / (half_spread_bps + spread_floor_bps)``; when the confidence half-width of that
   price exceeds ``fallback_confidence_bps`` the survivors' median is used instead (plan 000
   section 6: the median is the fallback when confidence is low). The result is clipped to
   ``[x(f+1), x(n-f)]``, the order statistics of all ``n`` fresh mids with ``f = (n-1) // 3``: up
   to ``f`` arbitrary sources cannot move the price outside the range of the honest ones, whatever
   the filter decided.
4. **Confidence** (Pyth-style half-width, USD): every survivor votes ``mid - half``, ``mid``,
   ``mid + half`` with its weight; the confidence is the larger distance from the price to the
   weighted 25th and 75th percentiles of the votes. It grows with the spread of the surviving
   quotes and with their own uncertainty; one source gives its half-spread.
5. **Status.** "ok" only when fit to publish: at least ``min_sources`` sources used and a
   confidence within ``max_confidence_bps``. Otherwise "degraded" (too few sources used, no
   majority, confidence too wide) or "halted" (no fresh source, or all rejected), with the reason.
   A shared move (every venue −8 %) is followed: the median moves with it and nobody is an
   outlier; it raises an informational ``oracle_consensus_jump`` alert.

State kept between evaluations (per asset): each source's ``SourceStats`` (reliability, for the
weights and for dashboards: ``reliability()``), the EWMA volatility, the last consensus, the
cross-venue comparison (``cross_venue(asset)``) and the open arbitrage opportunities. Alerts
(``models.records.Alert``) are raised on *transitions* (a source rejected, readmitted, gone stale,
recovered; an asset's status changing; a new arbitrage opportunity), so a venue diverging for an
hour raises one alert, not one per second; ``take_alerts()`` drains them. Evaluating an asset again
at the same ``now`` recomputes from the state before that time, so it is idempotent.

Cross-venue comparison (plan 004): each source's bid, ask, own spread and deviation from the
consensus in bps; an arbitrage opportunity when one source's bid exceeds another's ask by more than
both venues' taker fees (``fee_bps`` each side, ``venue_fees_bps`` per exchange) plus
``arbitrage_threshold_bps``. Only sources within ``divergence_bps`` of the median are compared
(used sources and small outliers; a decimal error or an unshared jump is no opportunity).

Pure: the caller passes the time; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from models.oracle_sources import (
    DEFAULT_EXCLUDE,
    LatestQuotes,
    SourceFilter,
    SourceStats,
)
from models.records import USD_LIKE, Alert, OraclePrice, QuoteBatch

__all__ = [
    "DEFAULT_EXCLUDE",
    "Aggregate",
    "Arbitrage",
    "MedianOracle",
    "MedianOracleConfig",
    "RobustOracle",
    "RobustOracleConfig",
    "VenueComparison",
    "aggregate",
    "arbitrage_edges_bps",
    "median_aggregate",
    "pyth_confidence",
    "weighted_quantile",
]

MAD_TO_SIGMA = 1.4826
SECONDS_PER_YEAR = 365.0 * 24.0 * 3600.0
_LN10 = math.log(10.0)
_LN2 = math.log(2.0)

REJECTION_SEVERITY = {
    "decimal": "critical",
    "jump": "warning",
    "volatility_jump": "warning",
    "divergence": "warning",
    "outlier": "info",
}
STATUS_SEVERITY = {"ok": "info", "degraded": "warning", "halted": "critical"}


# ------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class RobustOracleConfig:
    """The oracle's knobs (see the module docstring for how each is used).

    Sources and freshness: ``min_sources`` used sources needed for status "ok" (3);
    ``stale_after_s`` (10 s of event time); ``interval_s`` at most one published price per asset
    per interval; ``usd_quotes`` quote currencies that count as USD; ``include``/``exclude`` glob
    patterns on ``"exchange:instrument"`` (``models.oracle_sources``).

    Filter: ``mad_k`` (5) robust deviations, ``mad_floor_bps`` (5 bps) floor of the robust scale
    (so the smallest outlier rejected is 25 bps away); ``divergence_bps`` (200) single-venue
    divergence; ``decimal_tolerance`` (0.05 in log10, about ±12 % around a power of ten);
    ``jump_z`` (8) and ``jump_floor_bps`` (50) the unshared-jump limit
    ``max(jump_z sigma sqrt(dt), floor)``; ``vol_initial_annual`` (0.8) and ``vol_halflife_s``
    (600) the EWMA volatility of consensus returns; ``anchor_max_age_s`` (600) how long the last
    "ok" price serves as the reference for decimal checks with fewer than 3 sources.

    Weights: ``reliability_halflife_s`` (300) of the reliability EWMAs, ``deviation_scale_bps``
    (25) a source deviating by this much on average has its reliability halved,
    ``min_reliability`` (0.05) floor, ``spread_floor_bps`` (1) added to each half-spread in the
    weight.

    Confidence: ``fallback_confidence_bps`` (50) above which the median replaces the weighted mean;
    ``max_confidence_bps`` (200) above which the status is "degraded".

    Cross-venue: ``fee_bps`` (10) taker fee per side, ``venue_fees_bps`` per-exchange overrides as
    ``(("binance", 7.5), ...)``, ``arbitrage_threshold_bps`` (10) edge required after fees.
    """

    min_sources: int = 3
    stale_after_s: float = 10.0
    interval_s: float = 1.0
    usd_quotes: tuple[str, ...] = tuple(sorted(USD_LIKE))
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    mad_k: float = 5.0
    mad_floor_bps: float = 5.0
    divergence_bps: float = 200.0
    decimal_tolerance: float = 0.05
    jump_z: float = 8.0
    jump_floor_bps: float = 50.0
    vol_initial_annual: float = 0.8
    vol_halflife_s: float = 600.0
    anchor_max_age_s: float = 600.0
    reliability_halflife_s: float = 300.0
    deviation_scale_bps: float = 25.0
    min_reliability: float = 0.05
    spread_floor_bps: float = 1.0
    fallback_confidence_bps: float = 50.0
    max_confidence_bps: float = 200.0
    fee_bps: float = 10.0
    venue_fees_bps: tuple[tuple[str, float], ...] = ()
    arbitrage_threshold_bps: float = 10.0

    def __post_init__(self) -> None:
        for name in ("usd_quotes", "include", "exclude"):
            object.__setattr__(self, name, tuple(str(v) for v in getattr(self, name)))
        fees = self.venue_fees_bps
        pairs = fees.items() if isinstance(fees, dict) else fees
        object.__setattr__(self, "venue_fees_bps", tuple((str(k), float(v)) for k, v in pairs))
        if self.min_sources < 1:
            raise ValueError("min_sources must be at least 1")
        if not self.usd_quotes:
            raise ValueError("usd_quotes must name at least one currency")
        positive = (
            "stale_after_s", "interval_s", "mad_k", "divergence_bps", "jump_z", "vol_halflife_s",
            "anchor_max_age_s", "reliability_halflife_s", "deviation_scale_bps",
            "spread_floor_bps", "fallback_confidence_bps", "max_confidence_bps",
        )
        for name in positive:
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be positive, got {v!r}")
        non_negative = (
            "mad_floor_bps", "jump_floor_bps", "vol_initial_annual", "fee_bps",
            "arbitrage_threshold_bps",
        )
        for name in non_negative:
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be >= 0, got {v!r}")
        if not 0 < self.decimal_tolerance < 0.5:
            raise ValueError("decimal_tolerance must be in (0, 0.5)")
        if not 0 < self.min_reliability <= 1:
            raise ValueError("min_reliability must be in (0, 1]")
        if any(not (math.isfinite(v) and v >= 0) for _, v in self.venue_fees_bps):
            raise ValueError("venue_fees_bps must be >= 0")

    @classmethod
    def from_mapping(cls, values) -> RobustOracleConfig:
        """The config from a mapping (a parsed ``[oracle]`` section, ``dataclasses.asdict`` of
        one): keys that are fields are used, others ignored; lists become tuples and a
        ``venue_fees_bps`` table becomes pairs."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in dict(values).items() if k in names})

    @property
    def source_filter(self) -> SourceFilter:
        return SourceFilter(self.include, self.exclude)

    @property
    def initial_var_rate(self) -> float:
        """Variance of log returns per second implied by ``vol_initial_annual``."""
        return self.vol_initial_annual**2 / SECONDS_PER_YEAR

    def fee_for(self, exchange: str) -> float:
        return dict(self.venue_fees_bps).get(exchange, self.fee_bps)


# The foundation's name for the config; the same class.
MedianOracleConfig = RobustOracleConfig


# --------------------------------------------------------------------------- pure statistics


def median_aggregate(mid_usd: np.ndarray, half_spread_usd: np.ndarray) -> tuple[float, float]:
    """(price, confidence half-width), both USD, from sources' mids and half-spreads: the plain
    median (the foundation's aggregation, kept as a reference and a building block).

    The confidence is the larger of the sources' typical disagreement (median absolute deviation
    from the median, scaled by 1.4826 to estimate a standard deviation) and their typical
    half-spread. NaN for no sources.
    """
    mid = np.asarray(mid_usd, dtype=np.float64)
    half = np.asarray(half_spread_usd, dtype=np.float64)
    if mid.size == 0:
        return float("nan"), float("nan")
    price = float(np.median(mid))
    mad = MAD_TO_SIGMA * float(np.median(np.abs(mid - price)))
    return price, max(mad, float(np.median(half)))


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q) -> np.ndarray:
    """The smallest value whose cumulative normalized weight reaches ``q`` (no interpolation:
    the result is always one of the values). ``q`` scalar or array in [0, 1]."""
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    cw = np.cumsum(w[order])
    cw /= cw[-1]
    idx = np.searchsorted(cw, np.asarray(q, dtype=np.float64) - 1e-12, side="left")
    return v[order][np.minimum(idx, v.size - 1)]


def pyth_confidence(mid: np.ndarray, half: np.ndarray, weight: np.ndarray, price: float) -> float:
    """Pyth-style confidence half-width around ``price``: each source votes ``mid - half``,
    ``mid`` and ``mid + half`` with its weight; the result is the larger distance from ``price``
    to the weighted 25th and 75th percentiles of the votes. NaN with no sources."""
    mid = np.asarray(mid, dtype=np.float64)
    if mid.size == 0 or not math.isfinite(price):
        return math.nan
    half = np.asarray(half, dtype=np.float64)
    votes = np.concatenate([mid - half, mid, mid + half])
    w = np.tile(np.asarray(weight, dtype=np.float64), 3)
    p25, p75 = weighted_quantile(votes, w, [0.25, 0.75])
    return float(max(price - p25, p75 - price, 0.0))


def arbitrage_edges_bps(bid: np.ndarray, ask: np.ndarray, fee_bps: np.ndarray) -> np.ndarray:
    """Net edge in bps of selling at source i's bid and buying at source j's ask, after both
    taker fees: ``edge[i, j] = (bid_i / ask_j - 1) * 1e4 - fee_i - fee_j``; the diagonal is NaN."""
    bid = np.asarray(bid, dtype=np.float64)
    ask = np.asarray(ask, dtype=np.float64)
    fee = np.asarray(fee_bps, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        edge = (bid[:, None] / ask[None, :] - 1.0) * 1e4 - fee[:, None] - fee[None, :]
    np.fill_diagonal(edge, np.nan)
    return edge


@dataclass(frozen=True)
class Aggregate:
    """The outcome of one aggregation over the fresh sources (arrays in the input order).

    ``kinds[i]`` is "" for a source used in the price, else its rejection kind; ``reasons[i]`` the
    human-readable reason. ``consensus_move`` is the log move of the reference since the previous
    evaluation (NaN without one); ``fallback`` whether the median replaced the weighted mean;
    ``reference_usd`` the median of all fresh mids the filter measured deviations from."""

    price_usd: float
    confidence_usd: float
    status: str
    reason: str
    used: np.ndarray
    kinds: tuple[str, ...]
    reasons: tuple[str, ...]
    weights: np.ndarray
    median_usd: float = math.nan
    weighted_usd: float = math.nan
    fallback: bool = False
    consensus_move: float = math.nan
    reference_usd: float = math.nan


def _bps(x: float) -> str:
    return f"{x * 1e4:+.1f} bps"


def aggregate(
    mid_usd, half_spread_usd, reliability=None, *,
    config: RobustOracleConfig = RobustOracleConfig(),
    prev_mid_usd=None, prev_used=None, prev_reference_usd: float = math.nan, dt_s: float = 0.0,
    var_rate: float | None = None, anchor_usd: float = math.nan,
) -> Aggregate:
    """Robust aggregation of fresh sources (steps 2 to 5 of the module docstring); pure.

    ``mid_usd``, ``half_spread_usd`` and ``reliability`` (default 1) are per source. The history
    arguments let it recognise jumps: ``prev_mid_usd`` each source's mid at the previous
    evaluation (NaN: none), ``prev_used`` whether it was used then, ``prev_reference_usd`` the
    reference (median of the fresh mids) then and ``dt_s`` the time since; ``var_rate`` the EWMA
    variance of consensus log returns per second (default: from ``vol_initial_annual``);
    ``anchor_usd`` the last "ok" price, the decimal-check reference with fewer than 3 sources.
    """
    cfg = config
    mid = np.asarray(mid_usd, dtype=np.float64)
    half = np.abs(np.asarray(half_spread_usd, dtype=np.float64))
    n = mid.size
    rel = np.ones(n) if reliability is None else np.asarray(reliability, dtype=np.float64)
    if n == 0:
        empty = np.zeros(0, dtype=bool)
        return Aggregate(math.nan, math.nan, "halted", "no fresh sources", empty, (), (),
                         np.zeros(0))
    lm = np.log(mid)
    kinds = np.full(n, "", dtype=object)
    reasons = np.full(n, "", dtype=object)
    rejected = np.zeros(n, dtype=bool)

    if n >= 3:
        ref = float(np.median(lm))
    elif math.isfinite(anchor_usd) and anchor_usd > 0:
        ref = math.log(anchor_usd)
    else:
        ref = math.nan

    # decimal errors: a ratio to the reference near 10^k, k != 0
    dec = np.zeros(n, dtype=bool)
    if math.isfinite(ref):
        d10 = (lm - ref) / _LN10
        k = np.rint(d10)
        dec = (k != 0) & (np.abs(d10 - k) <= cfg.decimal_tolerance)
        for i in np.flatnonzero(dec).tolist():
            kinds[i] = "decimal"
            reasons[i] = (f"off by a power of ten: ×10^{int(k[i]):+d} the "
                          f"{'median' if n >= 3 else 'last ok price'} ({math.exp(lm[i] - ref):.4g}×)")
        rejected |= dec

    consensus_move = math.nan
    no_majority = ""
    if n >= 3:
        dev = lm - ref
        absdev = np.abs(dev)
        scale = max(MAD_TO_SIGMA * float(np.median(absdev)), cfg.mad_floor_bps * 1e-4)
        z = absdev / scale
        outlier = z > cfg.mad_k
        divergent = absdev > cfg.divergence_bps * 1e-4

        var = cfg.initial_var_rate if var_rate is None else float(var_rate)
        sigma_dt = math.sqrt(max(var, 0.0) * max(dt_s, 1.0))
        jump_limit = max(cfg.jump_z * sigma_dt, cfg.jump_floor_bps * 1e-4)
        moved = np.zeros(n, dtype=bool)
        own = np.full(n, np.nan)
        unshared = np.full(n, np.nan)
        if prev_mid_usd is not None and math.isfinite(prev_reference_usd) and prev_reference_usd > 0:
            consensus_move = ref - math.log(prev_reference_usd)
            pm = np.asarray(prev_mid_usd, dtype=np.float64)
            pu = np.zeros(n, dtype=bool) if prev_used is None else np.asarray(prev_used, bool)
            with np.errstate(invalid="ignore", divide="ignore"):
                own = lm - np.log(pm)
            unshared = own - consensus_move
            with np.errstate(invalid="ignore"):
                moved = (pu & np.isfinite(unshared) & (np.abs(own) >= 0.5 * np.abs(unshared))
                         & (np.sign(own) == np.sign(unshared)))
        with np.errstate(invalid="ignore"):
            vol_jump = moved & (np.abs(unshared) > jump_limit)
        peer_bad = ~rejected & (outlier | divergent | vol_jump)
        for i in np.flatnonzero(peer_bad).tolist():
            sig = abs(unshared[i]) / sigma_dt if sigma_dt > 0 else math.inf
            if moved[i] and divergent[i]:
                kinds[i] = "jump"
                reasons[i] = (f"jump of {math.expm1(own[i]):+.2%} in {dt_s:.1f} s not shared by "
                              f"the other venues (consensus {math.expm1(consensus_move):+.2%}, "
                              f"{sig:.0f} sigma)")
            elif vol_jump[i]:
                kinds[i] = "volatility_jump"
                reasons[i] = (f"unshared move of {math.expm1(unshared[i]):+.2%} in {dt_s:.1f} s, "
                              f"{sig:.0f} sigma of current volatility")
            elif divergent[i]:
                kinds[i] = "divergence"
                reasons[i] = f"{math.expm1(dev[i]):+.2%} from the median of {n} venues"
            else:
                kinds[i] = "outlier"
                reasons[i] = f"{z[i]:.1f} robust deviations ({_bps(dev[i])}) from the median"
        rejected |= peer_bad
        # the survivors must be a strict majority of the sources that are not decimal errors
        # (those are unambiguous): otherwise nobody can tell which side is wrong
        n_plausible = n - int(dec.sum())
        if 2 * int((~rejected).sum()) <= n_plausible:
            no_majority = (f"no majority: {int((~rejected).sum())} of {n} fresh venues agree "
                           f"with the median")

    if no_majority:
        # nobody can tell which side is wrong: every fresh source stays, the price is the median
        used = np.ones(n, dtype=bool)
        kinds[:] = ""
        reasons[:] = ""
    else:
        used = ~rejected
    weights = np.zeros(n)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        half_bps = half / mid * 1e4
        weights[used] = rel[used] / (half_bps[used] + cfg.spread_floor_bps)
    weights[~np.isfinite(weights)] = 0.0
    if used.any() and not weights[used].sum() > 0:  # absurd spreads everywhere: equal weights
        weights[used] = 1.0
    n_used = int(used.sum())
    if n_used == 0:
        return Aggregate(math.nan, math.nan, "halted", f"all {n} fresh sources rejected", used,
                         tuple(kinds.tolist()), tuple(reasons.tolist()), weights,
                         consensus_move=consensus_move, reference_usd=float(np.median(mid)))

    # survivors sorted by value, so that the sums do not depend on the order of the sources
    s = np.flatnonzero(used)
    s = s[np.lexsort((weights[s], half[s], mid[s]))]
    m, h, w = mid[s], half[s], weights[s]
    weighted = float(np.dot(w, m) / w.sum())
    median = float(np.median(m))
    sorted_all = np.sort(mid)
    f = (n - 1) // 3
    lo, hi = float(sorted_all[f]), float(sorted_all[n - 1 - f])
    if no_majority:
        price, fallback = float(np.median(mid)), True
    else:
        conf_w = pyth_confidence(m, h, w, weighted)
        fallback = conf_w > cfg.fallback_confidence_bps * 1e-4 * weighted
        price = median if fallback else weighted
    # a mean lies within its values (clipping also removes rounding), and within [x(f+1), x(n-f)]
    price = float(min(max(price, m[0], lo), m[-1], hi)) if not no_majority else \
        float(min(max(price, lo), hi))
    confidence = pyth_confidence(m, h, w, price)

    if no_majority:
        status, reason = "degraded", no_majority
    elif n_used < cfg.min_sources:
        status, reason = "degraded", f"{n_used} of {cfg.min_sources} required sources"
    elif confidence > cfg.max_confidence_bps * 1e-4 * price:
        status = "degraded"
        reason = (f"confidence ±{confidence / price * 1e4:.0f} bps wider than "
                  f"{cfg.max_confidence_bps:g} bps")
    else:
        status, reason = "ok", ""
    return Aggregate(price, confidence, status, reason, used, tuple(kinds.tolist()),
                     tuple(reasons.tolist()), weights, median, weighted, bool(fallback),
                     consensus_move, float(np.median(mid)))


# ------------------------------------------------------------------------ cross-venue records


@dataclass(frozen=True)
class VenueComparison:
    """One source against the consensus at one evaluation (plan 004's cross-venue comparison).

    ``spread_bps`` is the source's own bid/ask spread over its mid; ``deviation_bps`` its mid
    against the consensus price (NaN when there is no price); ``status`` "used", "rejected" or
    "stale", with ``reason``; ``weight`` its share of the weighted mean (0 when not used)."""

    asset: str
    source: str
    ts: float
    quote_ts: float
    bid_usd: float
    ask_usd: float
    mid_usd: float
    spread_bps: float
    deviation_bps: float
    status: str
    reason: str
    reliability: float
    weight: float


@dataclass(frozen=True)
class Arbitrage:
    """Sell at ``sell_source``'s bid, buy at ``buy_source``'s ask: ``gross_bps`` before and
    ``net_bps`` after both taker fees (``fees_bps``)."""

    asset: str
    ts: float
    buy_source: str
    sell_source: str
    ask_usd: float
    bid_usd: float
    gross_bps: float
    fees_bps: float
    net_bps: float


# ---------------------------------------------------------------------------- the oracle


@dataclass(frozen=True)
class _AssetState:
    """What one evaluation of an asset leaves for the next."""

    ts: float
    price: float
    reference: float
    status: str
    var_rate: float
    anchor: float
    anchor_ts: float
    stats: dict[str, SourceStats]
    venues: tuple[VenueComparison, ...]
    arbitrage: tuple[Arbitrage, ...]
    alert_keys: frozenset = field(default_factory=frozenset)


class RobustOracle:
    """Latest quote per source, and a robust price per asset on request (module docstring).

    ``update(quotes)`` folds in a batch of quotes; ``price(asset, now)`` evaluates one asset;
    ``publish(now)`` returns one ``OraclePrice`` for each asset whose last publication is at
    least ``interval_s`` old. ``take_alerts()`` drains the alerts raised so far;
    ``reliability()`` and ``cross_venue(asset)`` / ``arbitrage(asset)`` are the dashboards' views
    of the last evaluation.
    """

    def __init__(self, config: RobustOracleConfig = RobustOracleConfig()) -> None:
        self.config = config
        self._quotes = LatestQuotes(config.usd_quotes, config.source_filter)
        self._last_published: dict[str, float] = {}
        # asset -> [state before the latest evaluation time, state at the latest evaluation time]
        self._history: dict[str, list[_AssetState | None]] = {}
        self._alerts: list[Alert] = []

    # ------------------------------------------------------------------ inputs and outputs

    @property
    def assets(self) -> list[str]:
        return self._quotes.assets

    def update(self, quotes: QuoteBatch) -> None:
        self._quotes.update(quotes)

    def publish(self, now: float) -> list[OraclePrice]:
        due = [
            a
            for a in self.assets
            if now - self._last_published.get(a, -np.inf) >= self.config.interval_s
        ]
        for a in due:
            self._last_published[a] = now
        return [self.price(a, now) for a in due]

    def take_alerts(self) -> list[Alert]:
        alerts, self._alerts = self._alerts, []
        return alerts

    def reliability(self) -> dict[str, dict]:
        """Per source (all assets): its state at the last evaluation and its reliability record,
        for dashboards and health checks."""
        cfg = self.config
        out: dict[str, dict] = {}
        for asset in self.assets:
            state = self._current(asset)
            names, ts, _, _ = self._quotes.arrays(asset)
            for s, t in zip(names, ts.tolist()):
                st = state.stats.get(s) if state else None
                st = st or SourceStats(first_seen_ts=t, last_quote_ts=t)
                out[s] = {
                    "asset": asset,
                    "state": st.state,
                    "reason": st.reason,
                    "reliability": st.reliability(cfg.deviation_scale_bps, cfg.min_reliability),
                    "uptime": st.uptime,
                    "deviation_bps": st.deviation_bps,
                    "reject_rate": st.reject_rate,
                    "last_quote_ts": t,
                    "n_quotes": self._quotes.quote_counts.get(s, 0),
                    "n_evaluations": st.n_evaluations,
                    "n_used": st.n_used,
                    "n_rejected": st.n_rejected,
                    "n_stale": st.n_stale,
                }
        return out

    def cross_venue(self, asset: str) -> list[VenueComparison]:
        state = self._current(asset)
        return list(state.venues) if state else []

    def arbitrage(self, asset: str) -> list[Arbitrage]:
        state = self._current(asset)
        return list(state.arbitrage) if state else []

    def volatility(self, asset: str) -> float:
        """The asset's EWMA volatility of consensus log returns, annualized fraction."""
        state = self._current(asset)
        var = state.var_rate if state else self.config.initial_var_rate
        return math.sqrt(var * SECONDS_PER_YEAR)

    def _current(self, asset: str) -> _AssetState | None:
        hist = self._history.get(asset)
        return hist[1] if hist else None

    # ------------------------------------------------------------------------ evaluation

    def price(self, asset: str, now: float) -> OraclePrice:
        names, ts, bid, ask = self._quotes.arrays(asset)
        if not names:
            return OraclePrice(asset, now, math.nan, math.nan, 0, "halted", "no fresh sources")
        hist = self._history.setdefault(asset, [None, None])
        previous, current = hist
        if current is None or now > current.ts:
            base, mode = current, "advance"
        elif now == current.ts:
            base, mode = previous, "replace"
        else:  # time went backwards: answer, but leave the state and raise nothing
            base, mode = current, "past"
        state, result, alerts = self._evaluate(asset, now, names, ts, bid, ask, base)
        if mode == "advance":
            hist[0], hist[1] = current, state
            self._alerts.extend(alerts)
        elif mode == "replace":
            seen = current.alert_keys
            self._alerts.extend(a for a in alerts if (a.kind, a.subject) not in seen)
            hist[1] = replace(state, alert_keys=seen | state.alert_keys)
        return result

    def _evaluate(self, asset, now, names, ts, bid, ask, base):
        cfg = self.config
        dt = max(0.0, now - base.ts) if base else 0.0
        base_stats = base.stats if base else {}
        age = now - ts
        fresh = age <= cfg.stale_after_s
        mid = 0.5 * (bid + ask)
        half = 0.5 * np.abs(ask - bid)
        fi = np.flatnonzero(fresh)
        fresh_names = [names[i] for i in fi.tolist()]

        def stats_of(s: str, t: float) -> SourceStats:
            return base_stats.get(s) or SourceStats(first_seen_ts=t)

        rel = np.array([
            stats_of(s, ts[i]).reliability(cfg.deviation_scale_bps, cfg.min_reliability)
            for s, i in zip(fresh_names, fi.tolist())
        ])
        prev_mid = np.array([stats_of(s, 0.0).mid_usd for s in fresh_names])
        prev_used = np.array([stats_of(s, 0.0).state == "used" for s in fresh_names], dtype=bool)
        var_rate = base.var_rate if base else cfg.initial_var_rate
        anchor = math.nan
        if base and math.isfinite(base.anchor) and now - base.anchor_ts <= cfg.anchor_max_age_s:
            anchor = base.anchor
        agg = aggregate(
            mid[fi], half[fi], rel, config=cfg, prev_mid_usd=prev_mid, prev_used=prev_used,
            prev_reference_usd=base.reference if base else math.nan, dt_s=dt, var_rate=var_rate,
            anchor_usd=anchor,
        )
        price = agg.price_usd

        # per-source verdicts, in name order
        verdict: dict[str, tuple[str, str, str]] = {}  # source -> (state, kind, reason)
        for i in np.flatnonzero(~fresh).tolist():
            verdict[names[i]] = ("stale", "stale", f"stale ({age[i]:.1f} s old)")
        for j, s in enumerate(fresh_names):
            if agg.used[j]:
                verdict[s] = ("used", "", "")
            else:
                verdict[s] = ("rejected", agg.kinds[j], agg.reasons[j])
        total_w = float(agg.weights.sum())
        weight_of = {s: (float(agg.weights[j]) / total_w if total_w > 0 else 0.0)
                     for j, s in enumerate(fresh_names)}

        alpha = 1.0 - math.exp(-dt * _LN2 / cfg.reliability_halflife_s) if dt > 0 else 0.0
        stats: dict[str, SourceStats] = {}
        venues: list[VenueComparison] = []
        alerts: list[Alert] = []
        n_used = int(agg.used.sum()) if agg.used.size else 0
        for i, s in enumerate(names):
            state_s, kind, reason = verdict[s]
            old = stats_of(s, ts[i])
            with np.errstate(divide="ignore", invalid="ignore"):
                dev = math.log(mid[i] / price) if math.isfinite(price) else math.nan
            new = old.advanced(alpha=alpha, quote_ts=float(ts[i]), state=state_s, kind=kind,
                               reason=reason, mid_usd=float(mid[i]), deviation_bps=abs(dev) * 1e4)
            stats[s] = new
            venues.append(VenueComparison(
                asset, s, now, float(ts[i]), float(bid[i]), float(ask[i]), float(mid[i]),
                float((ask[i] - bid[i]) / mid[i] * 1e4), dev * 1e4, state_s, reason,
                new.reliability(cfg.deviation_scale_bps, cfg.min_reliability),
                weight_of.get(s, 0.0),
            ))
            alerts.extend(self._source_alerts(asset, s, now, old.state, state_s, kind, reason,
                                              n_used))

        status = agg.status
        prior_status = base.status if base else None
        if status != prior_status and not (prior_status is None and status == "ok"):
            text = f"{asset}: oracle {status}" + (f": {agg.reason}" if agg.reason else "")
            if status == "ok":
                text = f"{asset}: oracle ok again ({n_used} sources)"
            alerts.append(Alert(now, "oracle_status", STATUS_SEVERITY[status], text, asset))

        # volatility of consensus returns, and shared moves out of proportion to it
        var_new = var_rate
        if base and base.status == "ok" and status == "ok" and dt > 0 and math.isfinite(base.price):
            r = math.log(price / base.price)
            sigma_dt = math.sqrt(var_rate * max(dt, 1.0))
            limit = max(cfg.jump_z * sigma_dt, cfg.jump_floor_bps * 1e-4)
            if abs(r) > limit:
                alerts.append(Alert(
                    now, "oracle_consensus_jump", "info",
                    f"{asset}: consensus moved {math.expm1(r):+.2%} in {dt:.1f} s "
                    f"({abs(r) / sigma_dt:.0f} sigma), shared by {n_used} venues: followed",
                    asset,
                ))
            a_vol = 1.0 - math.exp(-dt * _LN2 / cfg.vol_halflife_s)
            var_new = (1.0 - a_vol) * var_rate + a_vol * r * r / dt

        arbs = self._arbitrage(asset, now, fresh_names, agg, bid[fi], ask[fi])
        known = {(a.buy_source, a.sell_source) for a in base.arbitrage} if base else set()
        for a in arbs:
            if (a.buy_source, a.sell_source) not in known:
                alerts.append(Alert(
                    now, "oracle_arbitrage", "info",
                    f"{asset}: buy {a.buy_source} at {a.ask_usd:.8g}, sell {a.sell_source} at "
                    f"{a.bid_usd:.8g}: {a.gross_bps:.1f} bps gross, {a.net_bps:.1f} bps after "
                    f"{a.fees_bps:.1f} bps fees",
                    f"{a.buy_source}>{a.sell_source}",
                ))

        anchor_px, anchor_ts = (price, now) if status == "ok" else (
            (base.anchor, base.anchor_ts) if base else (math.nan, -math.inf))
        state = _AssetState(
            ts=now, price=price, reference=agg.reference_usd, status=status, var_rate=var_new,
            anchor=anchor_px, anchor_ts=anchor_ts, stats=stats, venues=tuple(venues),
            arbitrage=tuple(arbs), alert_keys=frozenset((a.kind, a.subject) for a in alerts),
        )
        used_names = tuple(s for s in names if verdict[s][0] == "used")
        rejected = tuple(f"{s}: {verdict[s][2]}" for s in names if verdict[s][0] != "used")
        result = OraclePrice(asset, now, price, agg.confidence_usd, len(used_names), status,
                             agg.reason, used_names, rejected)
        return state, result, alerts

    def _source_alerts(self, asset, source, now, old, new, kind, reason, n_used) -> list[Alert]:
        alerts = []
        if new == "stale" and old != "stale":
            alerts.append(Alert(
                now, "oracle_source_stale", "warning",
                f"{asset}: {source} dropped, {reason}; {n_used} sources in use", source))
        if old == "stale" and new != "stale":
            alerts.append(Alert(now, "oracle_source_recovered", "info",
                                f"{asset}: {source} quoting again", source))
        if new == "rejected" and old != "rejected":
            alerts.append(Alert(now, f"oracle_{kind}", REJECTION_SEVERITY.get(kind, "warning"),
                                f"{asset}: {source} rejected: {reason}", source))
        if new == "used" and old == "rejected":
            alerts.append(Alert(now, "oracle_source_readmitted", "info",
                                f"{asset}: {source} back in the price", source))
        return alerts

    def _arbitrage(self, asset, now, fresh_names, agg, bid, ask) -> list[Arbitrage]:
        cfg = self.config
        # real prices only: used sources and small outliers (a venue 40 bps rich is both an
        # outlier and an opportunity), not decimal errors, unshared jumps or divergent venues
        comparable = np.array([k in ("", "outlier", "volatility_jump") for k in agg.kinds], bool)
        u = np.flatnonzero(comparable)
        if agg.status == "halted" or u.size < 2:
            return []
        srcs = [fresh_names[j] for j in u.tolist()]
        fee = np.array([cfg.fee_for(s.split(":", 1)[0]) for s in srcs])
        edge = arbitrage_edges_bps(bid[u], ask[u], fee)
        out = []
        with np.errstate(invalid="ignore"):
            hits = np.argwhere(edge > cfg.arbitrage_threshold_bps)
        for i, j in hits.tolist():
            fees = float(fee[i] + fee[j])
            out.append(Arbitrage(
                asset, now, buy_source=srcs[j], sell_source=srcs[i], ask_usd=float(ask[u[j]]),
                bid_usd=float(bid[u[i]]), gross_bps=float(edge[i, j] + fees), fees_bps=fees,
                net_bps=float(edge[i, j]),
            ))
        return out



# The foundation's name: the graph, the runtime and replay build ``MedianOracle``; it is the
# robust oracle (its fallback is the median).
MedianOracle = RobustOracle
