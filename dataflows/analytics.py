"""The graph's analytics nodes: volatility from oracle prices, the surface refit from option
tickers, and premium quotes from each new surface.

```
oracle prices ─► VolatilityNode ─► volatility estimates (24 h realized, EWMA) ─► alerts on anomalies
option tickers ─► OptionBook ─(clock ticks, every surface_interval_s)─► Refitter ─► worker ─► surfaces
surfaces + latest volatility ─► PremiumNode ─► premium quotes (every tier × expiry of the grid)
premium quotes ─(every risk_interval_s)─► PolicyRiskNode ─► worker ─► policy risk (Monte Carlo)
```

The surface fit runs in a ``dataflows.workers.Worker`` (thread, process or dask), so a fit of a
1,500-option chain never holds up ticks; its result re-enters the graph on the event loop. At most
one refit is in flight: a tick that finds one still running skips (and counts the skip), rather than
queueing fits of a chain that will be stale when they run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import zlib
from dataclasses import dataclass

import numpy as np

from dataflows.clock import iso_utc
from dataflows.logs import log_event
from models.errors import HedgeflowError
from dataflows.workers import WorkFailed, Worker
from models.deribit import EXPIRY_HOUR_UTC  # policies expire when Deribit's options do
from models.option_book import SECONDS_PER_YEAR, ChainSnapshot, OptionBook
from models.records import (
    Alert,
    PolicyRiskRecord,
    PremiumQuoteRecord,
    SurfaceRecord,
    VolatilityEstimate,
)

log = logging.getLogger(__name__)



# --------------------------------------------------------------------------- surface fits


@dataclass(frozen=True)
class FitOutcome:
    """One asset's refit: the fitted surface (or the reason there is none) and its record."""

    asset: str
    ts: float
    spot_usd: float
    fit: object | None  # models.surface.SurfaceFit
    record: SurfaceRecord | None
    error: str = ""


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return repr(value)


def fit_chain(snapshot: ChainSnapshot, method: str, min_options: int) -> FitOutcome:
    """Fit one chain snapshot (runs in a worker: top-level and picklable)."""
    from models.surface import SurfaceFitConfig, check_arbitrage, fit_surface

    asset, ts = snapshot.asset, snapshot.ts
    if len(snapshot) < min_options:
        return FitOutcome(asset, ts, snapshot.spot_usd, None, None,
                          f"{len(snapshot)} usable options, fewer than {min_options}")
    config = SurfaceFitConfig(method=method) if method else SurfaceFitConfig()
    started = time.perf_counter()
    try:
        fit = fit_surface(snapshot.strike_usd, snapshot.expiry_years, snapshot.forward_usd,
                          snapshot.mid_vol, snapshot.bid_vol, snapshot.ask_vol, config=config)
    except ValueError as exc:
        return FitOutcome(asset, ts, snapshot.spot_usd, None, None, str(exc))
    fit_ms = 1e3 * (time.perf_counter() - started)
    report = check_arbitrage(fit, np.linspace(-1.5, 1.5, 121))
    years = np.asarray(fit.expiry_years, dtype=np.float64)
    record = SurfaceRecord(
        asset=asset, ts=ts, method=str(fit.method), n_options=int(fit.n_options),
        n_expiries=int(fit.n_expiries), n_dropped=int(fit.n_dropped), rmse_vol=float(fit.rmse_vol),
        within_spread_fraction=float(fit.within_spread_fraction), arbitrage_ok=bool(report.ok),
        min_g=float(report.min_g), fit_ms=fit_ms, spot_usd=snapshot.spot_usd,
        expiry_years=tuple(years.tolist()),
        atm_vol_annual=tuple(np.asarray(fit.atm_vol(years), dtype=float).tolist()),
        rr25_vol_annual=tuple(np.asarray(fit.risk_reversal_25d(years), dtype=float).tolist()),
        bf25_vol_annual=tuple(np.asarray(fit.butterfly_25d(years), dtype=float).tolist()),
        params_json=json.dumps(fit.params_dict(), default=_json_default),
    )
    return FitOutcome(asset, ts, snapshot.spot_usd, fit, record)


def fit_chains(snapshots: list[ChainSnapshot], method: str, min_options: int) -> list[FitOutcome]:
    """Every asset's refit in one task (a batch: one dask task per refit, not per asset)."""
    return [fit_chain(s, method, min_options) for s in snapshots]


class PeriodicJob:
    """Heavy work started at most every ``interval_s`` of clock time, at most one piece in flight:
    a start that finds one running is skipped and counted, never queued (its input would be stale
    by the time it ran). The result goes to ``emit`` on the loop, unless the job was closed
    meanwhile (the graph and its database are gone) or the work failed (the worker logs and
    counts that)."""

    def __init__(self, worker: Worker, emit, *, interval_s: float, enabled: bool) -> None:
        self.worker = worker
        self.emit = emit
        self.interval_s = interval_s
        self.enabled = enabled
        self.in_flight = False
        self.skipped = 0
        self.closed = False
        self._last_start: float | None = None

    def _may_start(self, now: float) -> bool:
        if self.closed or not self.enabled:
            return False
        if self._last_start is not None and now - self._last_start < self.interval_s:
            return False
        if self.in_flight:
            self.skipped += 1
            return False
        return True

    def _start(self, now: float, fn, *args) -> None:
        self._last_start = now
        self.in_flight = True
        self.worker.submit(self._done, fn, *args)

    def _done(self, result) -> None:
        self.in_flight = False
        if not (self.closed or isinstance(result, WorkFailed)):
            self._deliver(result)

    def _deliver(self, result) -> None:
        self.emit(result)

    def close(self) -> None:
        self.closed = True


class Refitter(PeriodicJob):
    """Keeps the option book and refits each asset's surface every ``interval_s`` of clock time.

    ``on_tickers(batch)`` updates the book; ``on_tick(now)`` starts a refit when one is due and
    none is running. Results go to ``emit(list[FitOutcome])`` — at once for an inline worker,
    later on the loop otherwise.
    """

    def __init__(self, worker: Worker, emit, *, interval_s: float = 5.0, method: str = "",
                 max_age_s: float = 300.0, min_expiry_s: float = 3_600.0,
                 min_options: int = 20, enabled: bool = True) -> None:
        super().__init__(worker, emit, interval_s=interval_s, enabled=enabled)
        self.book = OptionBook()
        self.method = method
        self.max_age_s = max_age_s
        self.min_expiry_s = min_expiry_s
        self.min_options = min_options

    def on_tickers(self, batch) -> None:
        self.book.update(batch)

    def on_tick(self, now: float) -> None:
        if not len(self.book) or not self._may_start(now):
            return
        self.book.evict_expired(now)  # a long run lists new expiries every day
        snapshots = [self.book.snapshot(asset, now, max_age_s=self.max_age_s,
                                        min_expiry_s=self.min_expiry_s)
                     for asset in self.book.assets]
        # A chain still filling up (the first seconds of a run) is not worth a fit, nor a wait of
        # a whole interval before the next look.
        snapshots = [s for s in snapshots if len(s) >= self.min_options]
        if not snapshots:
            return
        self._start(now, fit_chains, snapshots, self.method, self.min_options)

    def _deliver(self, result) -> None:
        for outcome in result:
            if outcome.error:
                log_event(log, logging.INFO, "surface not fitted", asset=outcome.asset,
                          reason=outcome.error)
        self.emit(result)

    def close(self) -> None:
        super().close()
        self.worker.close()  # the refitter owns the worker the policy risk shares


# --------------------------------------------------------------------------- premium quotes


def expiry_at(now_s: float, days: float) -> float:
    """``days`` after ``now_s``, moved to the next 08:00 UTC (epoch s): how policies expire."""
    target = now_s + days * 86_400.0
    day_start = math.floor(target / 86_400.0) * 86_400.0
    expiry = day_start + EXPIRY_HOUR_UTC * 3_600.0
    return expiry if expiry >= target else expiry + 86_400.0


# A realized volatility above this (500 %) is a broken price in the window, not a market.
MAX_REFERENCE_VOL_ANNUAL = 5.0


def surface_pricing_inputs(fit, chain_spot_usd: float, expiry_years: float,
                           realized_vol_annual: float | None, premium_config):
    """How every protection price (the graph's grid, ``hedgeflow quote``, the API, the premium
    page) is set up on a fitted surface at ``expiry_years``: the premium config carrying the
    chain's forward over its own index ``chain_spot_usd`` (``PremiumConfig.with_forward``), and
    the reference volatility: ``realized_vol_annual`` (the asset's ready 24 h realized vol) when
    it is in (0, 500 %], else the surface's ATM vol at the expiry. Returns ``(config,
    reference_vol_annual, reference_source)``, the source "realized 24h" or "surface ATM"."""
    config = premium_config.with_forward(chain_spot_usd, float(fit.forward(expiry_years)),
                                         expiry_years)
    if realized_vol_annual is not None and 0.0 < realized_vol_annual <= MAX_REFERENCE_VOL_ANNUAL:
        return config, float(realized_vol_annual), "realized 24h"
    return config, float(fit.atm_vol(expiry_years)), "surface ATM"


class PremiumNode:
    """Prices the protection grid off each new surface: every tier of ``config`` (models.premium)
    × every expiry in ``expiry_days``, on ``amount_coin``. Each expiry is priced on the surface's
    forward for it (``PremiumConfig.with_forward``: the carry from the chain's index to the
    interpolated forward), as the option market prices the hedge. The reference volatility is the
    asset's latest ready 24 h realized volatility (``on_volatility``), or the surface's ATM vol
    until then. A surface the calculator refuses is logged and skipped: the graph goes on."""

    def __init__(self, config, *, expiry_days, amount_coin: float = 1.0) -> None:
        self.config = config
        self.expiry_days = list(expiry_days)
        self.amount_coin = amount_coin
        self.reference_vol: dict[str, float] = {}
        self.refused = 0

    def on_volatility(self, estimates) -> None:
        for e in estimates:
            if e.ready and 0.0 < e.vol_annual <= MAX_REFERENCE_VOL_ANNUAL:
                self.reference_vol[e.asset] = e.vol_annual

    def on_surfaces(self, outcomes: list[FitOutcome]) -> list[PremiumQuoteRecord]:
        quotes: list[PremiumQuoteRecord] = []
        for outcome in outcomes:
            if outcome.fit is None or not (outcome.spot_usd > 0.0):
                continue
            try:
                quotes.extend(self._price(outcome))
            except ValueError as exc:
                self.refused += 1
                log_event(log, logging.WARNING, "premium not priced", asset=outcome.asset,
                          reason=str(exc))
        return quotes

    def _price(self, outcome: FitOutcome) -> list[PremiumQuoteRecord]:
        from models.premium import price_tiers

        fit, spot = outcome.fit, outcome.spot_usd
        quotes = []
        for days in self.expiry_days:
            expiry_utc = expiry_at(outcome.ts, days)
            years = (expiry_utc - outcome.ts) / SECONDS_PER_YEAR
            config, reference, _ = surface_pricing_inputs(
                fit, spot, years, self.reference_vol.get(outcome.asset), self.config)
            for tier, quote in price_tiers(fit, spot, years, self.amount_coin, reference,
                                           config=config).items():
                quotes.append(quote_record(outcome.asset, outcome.ts, tier, expiry_utc,
                                            self.amount_coin, spot, reference, quote))
        return quotes


def quote_record(asset, ts, tier, expiry_utc, amount_coin, spot, reference, q) -> PremiumQuoteRecord:
    f = lambda x: float(np.asarray(x))  # noqa: E731 - scalars out of 0-d arrays
    return PremiumQuoteRecord(
        asset=asset, ts=ts, tier=tier, strike_usd=f(q.strike_usd), expiry_utc=expiry_utc,
        amount_coin=amount_coin, spot_usd=spot, forward_usd=f(q.forward_usd),
        vol_strike_annual=f(q.vol_strike_annual), vol_atm_annual=f(q.vol_atm_annual),
        vol_reference_annual=reference, premium_usd=f(q.premium_usd),
        intrinsic_usd=f(q.intrinsic_usd), time_value_usd=f(q.time_value_usd),
        volatility_usd=f(q.volatility_usd), skew_usd=f(q.skew_usd), jump_usd=f(q.jump_usd),
        margin_usd=f(q.margin_usd), rounding_usd=f(q.rounding_usd),
    )


# --------------------------------------------------------------------------- policy risk


def simulate_quote_outcome(quote: PremiumQuoteRecord, premium_config, n_paths: int,
                           confidence: float, seed):
    """The seller's Monte Carlo view of one quote (``models.scenarios.PolicyOutcome``, the whole
    distribution), or None for a quote with nothing to simulate (expired, no vol, negative
    premium). Risk-neutral Merton paths from spot to the quote's forward (drift = its carry) with
    the premium calculator's jumps and, as it prices, the diffusion vol that leaves the total
    variance at the quote's strike vol (``models.premium.diffusion_vol_annual``): the expected
    payoff at expiry is then the fair value grown at the carry, and premium minus the fair value
    the margin the seller keeps on average. Daily steps to expiry, so "touch" is daily
    monitoring. The paths draw from a seed made of ``seed`` (a list of non-negative ints) and the
    quote's asset, tier, expiry and strike: a quote gets the same paths wherever it is simulated."""
    from models.premium import diffusion_vol_annual
    from models.scenarios import MertonModel, PutPolicy, simulate_paths, simulate_policy_outcome

    years = (quote.expiry_utc - quote.ts) / SECONDS_PER_YEAR
    if not (years > 0.0 and quote.vol_strike_annual > 0.0 and quote.premium_usd >= 0.0):
        return None
    jumps = premium_config.jumps
    child = np.random.SeedSequence([*seed, zlib.crc32(f"{quote.asset}/{quote.tier}".encode()),
                                    int(quote.expiry_utc), int(round(quote.strike_usd * 100))])
    n_steps = max(1, math.ceil(years * 365.0))
    vol = float(diffusion_vol_annual(quote.vol_strike_annual, jumps, mode=premium_config.jump_mode,
                                     min_diffusion_fraction=premium_config.min_diffusion_fraction))
    carry = math.log(quote.forward_usd / quote.spot_usd) / years
    model = MertonModel(vol_annual=vol, jumps=jumps, drift_annual=carry)
    paths = simulate_paths(model, quote.spot_usd, years, n_steps, n_paths, np.random.default_rng(child))
    policy = PutPolicy(amount_coin=quote.amount_coin, strike_usd=quote.strike_usd,
                       expiry_years=years, premium_usd=quote.premium_usd)
    return simulate_policy_outcome(policy, paths, confidence=confidence)


def simulate_policy_risks(quotes: list[PremiumQuoteRecord], premium_config, n_paths: int,
                          confidence: float, seed) -> list[PolicyRiskRecord]:
    """``simulate_quote_outcome``'s summary of each quote, as the ``policy_risk`` rows (runs in a
    worker: top-level and picklable; one task for a whole batch of quotes, as dask wants; the
    result does not depend on the batch's order)."""
    records = []
    for quote in quotes:
        outcome = simulate_quote_outcome(quote, premium_config, n_paths, confidence, seed)
        if outcome is None:
            continue
        records.append(PolicyRiskRecord(
            asset=quote.asset, ts=quote.ts, tier=quote.tier, strike_usd=quote.strike_usd,
            expiry_utc=quote.expiry_utc, amount_coin=quote.amount_coin, spot_usd=quote.spot_usd,
            premium_usd=quote.premium_usd, model="merton", n_paths=n_paths,
            expected_payoff_usd=outcome.expected_payoff_usd,
            expected_payoff_stderr_usd=outcome.expected_payoff_stderr_usd,
            probability_exercise=outcome.probability_exercise,
            probability_touch=outcome.probability_touch,
            seller_var_usd=float(outcome.seller_risk.var), seller_es_usd=float(outcome.seller_risk.es),
            confidence=confidence,
        ))
    return records


class PolicyRiskNode(PeriodicJob):
    """Simulates the newest premium quotes at most every ``interval_s`` of clock time, in the
    worker (a dask cluster when configured): one task per batch of quotes, at most one in flight.
    Results go to ``emit(list[PolicyRiskRecord])``."""

    def __init__(self, worker: Worker, emit, *, premium_config, interval_s: float = 60.0,
                 n_paths: int = 10_000, confidence: float = 0.99, seed: int = 0,
                 enabled: bool = True) -> None:
        super().__init__(worker, emit, interval_s=interval_s, enabled=enabled)
        self.premium_config = premium_config
        self.n_paths = n_paths
        self.confidence = confidence
        self.seed = seed

    def on_quotes(self, quotes: list[PremiumQuoteRecord]) -> None:
        if not quotes:
            return
        now = max(q.ts for q in quotes)
        if not self._may_start(now):
            return
        # The seed follows the quotes' time: a replay draws the same paths as the run it replays.
        seed = [self.seed, int(now * 1_000)]
        self._start(now, simulate_policy_risks, list(quotes), self.premium_config, self.n_paths,
                    self.confidence, seed)

    def _deliver(self, result) -> None:
        if result:
            self.emit(result)


# --------------------------------------------------------------------------- volatility


class VolatilityNode:
    """Per asset, the streaming realized volatility of its "ok" oracle prices
    (``models.volatility.RollingVolatility``: bars of ``bar_s``, the trailing ``window_s``),
    published at every closed bar, and the anomalies ``models.volatility.AnomalyDetector`` finds
    in those bars, kept as alerts until ``take_alerts``.

    Only "ok" prices count: a degraded or halted oracle price is exactly the kind of number a
    volatility estimate must not learn from.
    """

    def __init__(self, vol_config, anomaly_config) -> None:
        self.vol_config = vol_config
        self.anomaly_config = anomaly_config
        self._estimators: dict[str, object] = {}
        self._detectors: dict[str, object] = {}
        self.alerts: list[Alert] = []

    @classmethod
    def from_config(cls, config) -> "VolatilityNode":
        """From an ``[analytics]`` section (dataflows.config.AnalyticsConfig)."""
        return cls(*config.volatility_model_configs())

    def on_prices(self, prices) -> list[VolatilityEstimate]:
        from models.volatility import AnomalyDetector, RollingVolatility

        estimates: list[VolatilityEstimate] = []
        for price in prices:
            if price.status != "ok" or not math.isfinite(price.price_usd):
                continue
            estimator = self._estimators.get(price.asset)
            if estimator is None:
                estimator = self._estimators[price.asset] = RollingVolatility(self.vol_config)
                self._detectors[price.asset] = AnomalyDetector(self.anomaly_config)
            for bar in estimator.update(price.ts, price.price_usd):
                estimates.append(VolatilityEstimate(
                    asset=price.asset, ts=bar.bar_end_s, window_s=self.vol_config.window_s,
                    n_returns=bar.n_returns, vol_annual=bar.vol_annual,
                    ewma_vol_annual=bar.ewma_vol_annual, ready=bar.ready,
                ))
                for anomaly in self._detectors[price.asset].update(bar):
                    self.alerts.append(Alert(
                        ts=anomaly.ts_s, kind=anomaly.kind, severity="warning", message=anomaly.detail, subject=price.asset,
                    ))
        return estimates

    def take_alerts(self) -> list[Alert]:
        alerts, self.alerts = self.alerts, []
        return alerts


# --------------------------------------------------------------------------- the bundle


@dataclass
class Analytics:
    """The analytics nodes ``build_graph`` wires (see the module docstring)."""

    volatility: VolatilityNode
    refitter: Refitter
    premium: PremiumNode
    risk: PolicyRiskNode

    def close(self) -> None:
        """Stop new work, then the worker (fits and simulations share it); anything still
        running is dropped, never delivered into a closed graph."""
        self.risk.close()
        self.refitter.close()


def build_analytics(config, worker: Worker | None = None) -> Analytics:
    """The analytics nodes from an ``[analytics]`` section (dataflows.config.AnalyticsConfig);
    ``worker`` defaults to the one the section names."""
    if worker is None:
        try:
            worker = Worker(config.worker, dask_address=config.dask_address)
        except (OSError, TimeoutError) as exc:
            raise HedgeflowError(
                f"cannot reach the dask scheduler at {config.dask_address}: {exc}. Start one "
                "(`dask scheduler`, then `dask worker ADDRESS`) or run without --dask"
            ) from None
    refitter = Refitter(
        worker, emit=lambda outcomes: None, interval_s=config.surface_interval_s,
        method=config.surface_method, max_age_s=config.surface_max_age_s,
        min_expiry_s=config.surface_min_expiry_s, min_options=config.surface_min_options,
        enabled=config.surface_enabled,
    )
    premium_config = config.premium_config()
    premium = PremiumNode(premium_config, expiry_days=config.premium_expiry_days,
                          amount_coin=config.premium_amount_coin)
    risk = PolicyRiskNode(
        worker, emit=lambda records: None, premium_config=premium_config,
        interval_s=config.risk_interval_s, n_paths=config.risk_paths,
        confidence=config.risk_confidence, seed=config.risk_seed, enabled=config.risk_enabled,
    )
    return Analytics(volatility=VolatilityNode.from_config(config), refitter=refitter,
                     premium=premium, risk=risk)


# --------------------------------------------------------------------------- one quote, on demand


def quote_protection(con, *, asset: str, strike_usd: float, expiry_utc: float, amount_coin: float,
                     config, at_s: float | None = None, spot_usd: float | None = None) -> dict:
    """Price a put on ``amount_coin`` of ``asset`` off the option chain stored in the database
    ``con`` (``hedgeflow quote``): the chain as of ``at_s`` (default: its newest ticker; nothing
    stored after ``at_s`` is read) is fitted like the graph does, the put is priced on the
    surface's forward for its expiry, and the premium and its breakdown come back as a JSON-ready
    dict.

    Spot is ``spot_usd`` if given, else the newest "ok" oracle price if it is within
    ``config.surface_max_age_s`` of the pricing time, else the venue's index on the newest
    ticker. The reference volatility is the newest ready 24 h realized volatility, else ATM.
    """
    from types import SimpleNamespace

    from models.premium import quote_from_surface, quote_to_dict
    from storage.queries import (
        latest_oracle_price,
        latest_option_tickers,
        latest_volatility,
        option_assets,
    )

    columns = latest_option_tickers(con, asset, at_s)
    if not len(columns["instrument"]):
        when = "" if at_s is None else f" at or before {iso_utc(at_s)}"
        raise HedgeflowError(
            f"no {asset} option tickers{when} in the database (it has options for: "
            f"{', '.join(option_assets(con)) or 'none'}). Collect some first with `hedgeflow run "
            "--duration 60` or `hedgeflow replay` of Deribit captures, or choose another --asset"
            + ("" if at_s is None else " or a later --at"))
    now = float(np.max(columns["event_ts"])) if at_s is None else float(at_s)
    if not expiry_utc > now:
        raise HedgeflowError(f"expiry {iso_utc(expiry_utc)} is not after the pricing time "
                             f"{iso_utc(now)}: give a later --expiry")
    book = OptionBook()
    book.update(SimpleNamespace(**columns))
    snapshot = book.snapshot(asset, now, max_age_s=config.surface_max_age_s,
                             min_expiry_s=config.surface_min_expiry_s)
    outcome = fit_chain(snapshot, config.surface_method, config.surface_min_options)
    if outcome.fit is None:
        raise HedgeflowError(f"cannot fit a {asset} volatility surface at {iso_utc(now)}: "
                             f"{outcome.error}. Collect a fuller chain, or price at another time with --at")
    if spot_usd is not None:
        spot, spot_source = float(spot_usd), "given"
    else:
        oracle = latest_oracle_price(con, asset, now)
        if oracle is not None and now - oracle[0] <= config.surface_max_age_s:
            spot, spot_source = oracle[1], "oracle"
        else:
            spot, spot_source = snapshot.spot_usd, "option index"
    years = (expiry_utc - now) / SECONDS_PER_YEAR
    try:
        # The carry of the chain's forward over its own index, applied to this spot.
        premium_config, reference, reference_source = surface_pricing_inputs(
            outcome.fit, snapshot.spot_usd, years, latest_volatility(con, asset, now),
            config.premium_config())
        quote = quote_from_surface(outcome.fit, spot, strike_usd, years, amount_coin, reference,
                                   config=premium_config)
    except ValueError as exc:
        raise HedgeflowError(f"cannot price this put: {exc}") from None
    record = outcome.record
    return {
        "asset": asset,
        "priced_at_utc": iso_utc(now),
        "expiry_utc": iso_utc(expiry_utc),
        "expiry_years": years,
        "strike_usd": strike_usd,
        "amount_coin": amount_coin,
        "spot_usd": spot,
        "spot_source": spot_source,
        "vol_reference_source": reference_source,
        "surface": {
            "method": record.method, "n_options": record.n_options, "n_expiries": record.n_expiries,
            "rmse_vol": record.rmse_vol, "within_spread_fraction": record.within_spread_fraction,
            "arbitrage_ok": record.arbitrage_ok, "fit_ms": round(record.fit_ms, 1),
        },
        **quote_to_dict(quote),
    }
