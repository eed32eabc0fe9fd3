"""Premium calculator page: a put on an amount of coin, priced live off the newest fitted surface.

Served by ``hedgeflow run`` at http://127.0.0.1:5006/premium, or on its own with
``panel serve dashboards/premium.py``. The user picks an asset, the protection (a tier's strike as a
fraction of spot, a custom percentage of spot, or a strike in USD), the expiry (days ahead, moved
to the next 08:00 UTC as policies expire, or a date, at 08:00 UTC) and the amount in coin. The page
shows the premium (USD and % of notional), its factor breakdown (models.premium: the seven factors
sum to the premium), the payoff at expiry and the Monte Carlo distribution of the policy's outcome
(models.scenarios' outcome simulator, on the graph's own paths).

Pricing is the graph's, on the live inputs: the surface is ``pipeline.views["analytics"]
.latest_fit(asset)``, the pricing time is that fit's time (as ``PremiumNode`` prices each new
surface), the put is priced on the surface's forward for its expiry (the carry of the chain's
index), spot is the newest "ok" oracle price when it is within ``surface_max_age_s`` of the fit,
else the chain's index, and the reference volatility is the newest ready 24 h realized volatility,
else the surface's ATM vol — the rules of ``dataflows.analytics.quote_protection`` (which prices
off a chain it fits from the database), set up by the same ``surface_pricing_inputs``;
tests/dashboards/test_premium.py holds the two together: same chain, same premium and breakdown.
Quotes go through a ``models.premium.PremiumCache``: repeating inputs on one surface is a lookup.
The Monte Carlo likewise repeats ``simulate_policy_risks``'s draw, to keep the whole distribution.

The page only reads: it re-prices when an input changes or a new surface arrives (polled every
``refresh_ms``), never from another thread.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import math
from dataclasses import dataclass

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn

from dashboards.session import session_callback
from dataflows.analytics import (
    MAX_REFERENCE_VOL_ANNUAL,
    expiry_at,
    quote_record,
    simulate_quote_outcome,
    surface_pricing_inputs,
)
from dataflows.clock import iso_utc
from models.deribit import EXPIRY_HOUR_UTC
from models.option_book import SECONDS_PER_YEAR
from models.premium import BREAKDOWN_FIELDS, PremiumCache

hv.extension("bokeh", logo=False)

log = logging.getLogger(__name__)

# The page's Monte Carlo: daily steps to expiry (as the graph's policy risk), this many paths, so
# a year's policy simulates in ~25 ms; the seed is fixed so a repeated request draws the same paths.
OUTCOME_PATHS = 2_000
OUTCOME_CONFIDENCE = 0.99
OUTCOME_SEED = (0,)
# A strike entered in USD or % of spot is priced at most this far (in log-moneyness) from the one
# asked for, and an expiry within this many years: the cache's cells, fine enough that the premium
# is the direct price to a cent or so (the defaults, 1 bp and a minute, suit an API's traffic).
CACHE_MONEYNESS_PRECISION = 1e-8
CACHE_EXPIRY_PRECISION_YEARS = 1.0 / SECONDS_PER_YEAR
CACHE_VOL_PRECISION = 1e-6

CUSTOM_PCT = "custom"  # protection: a custom percentage of spot
STRIKE_USD = "strike"  # protection: a strike in USD
DAYS, DATE = "days", "date"

_FACTOR_LABELS = {
    "intrinsic_usd": "intrinsic", "time_value_usd": "time value", "volatility_usd": "volatility",
    "skew_usd": "skew", "jump_usd": "jump", "margin_usd": "margin", "rounding_usd": "rounding",
}


class PremiumUnavailable(Exception):
    """No premium for these inputs; the message says why and what to do (shown in the page)."""


@dataclass(frozen=True)
class PremiumRequest:
    """The calculator's inputs. ``protection`` is a tier name of the premium config, ``"custom"``
    (``strike_pct`` % of spot) or ``"strike"`` (``strike_usd``); ``expiry_mode`` is ``"days"``
    (``expiry_days`` ahead of the pricing time, moved to the next 08:00 UTC) or ``"date"``
    (``expiry_date`` at 08:00 UTC)."""

    asset: str
    protection: str = "standard"
    strike_pct: float | None = 90.0
    strike_usd: float | None = None
    expiry_mode: str = DAYS
    expiry_days: float | None = 30.0
    expiry_date: dt.date | None = None
    amount_coin: float | None = 1.0


@dataclass(frozen=True)
class LiveQuote:
    """A priced request: the quote (models.premium.PremiumQuote, USD for all ``amount_coin``), its
    record as the graph stores quotes, the config it was priced with, and where its inputs came
    from."""

    request: PremiumRequest
    quote: object  # models.premium.PremiumQuote
    record: object  # models.records.PremiumQuoteRecord
    premium_config: object  # models.premium.PremiumConfig, with the forward's carry
    priced_at_s: float  # the surface's time
    expiry_utc: float
    spot_source: str  # "oracle" or "option index"
    reference_source: str  # "realized 24h" or "surface ATM"
    surface_record: object = None  # models.records.SurfaceRecord of the fit, when it has one


def _positive(value, what: str, fix: str) -> float:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        shown = "nothing" if value is None else f"{value!r}"
        raise PremiumUnavailable(f"{what} must be a positive number, got {shown}: {fix}.")
    return float(value)


def expiry_utc_of(request: PremiumRequest, now_s: float) -> float:
    """The request's expiry (epoch s) priced at ``now_s``; PremiumUnavailable when it is not after
    ``now_s``."""
    if request.expiry_mode == DAYS:
        days = _positive(request.expiry_days, "The expiry in days",
                         "enter how many days ahead the protection should last")
        return expiry_at(now_s, days)
    if request.expiry_mode != DATE:
        raise PremiumUnavailable(f"Unknown expiry mode {request.expiry_mode!r}: choose days or date.")
    if request.expiry_date is None:
        raise PremiumUnavailable("Choose an expiry date.")
    day = request.expiry_date
    expiry = dt.datetime(day.year, day.month, day.day, EXPIRY_HOUR_UTC,
                         tzinfo=dt.timezone.utc).timestamp()
    if not expiry > now_s:
        raise PremiumUnavailable(f"The expiry {iso_utc(expiry)} is in the past (pricing time "
                                 f"{iso_utc(now_s)}): choose a later date.")
    return expiry


def latest_reference_vol(analytics_view, asset: str) -> float | None:
    """``asset``'s newest ready 24 h realized volatility the graph accepts as a reference (as
    ``PremiumNode.on_volatility``), or None."""
    for estimate in reversed(analytics_view.volatility(asset)):
        if estimate.ready and 0.0 < estimate.vol_annual <= MAX_REFERENCE_VOL_ANNUAL:
            return float(estimate.vol_annual)
    return None


def pricing_spot(oracle_view, outcome, max_age_s: float) -> tuple[float, str]:
    """Spot for a quote off ``outcome`` (a FitOutcome), as ``quote_protection`` chooses it: the
    newest "ok" oracle price within ``max_age_s`` of the fit, else the chain's index."""
    price = oracle_view.latest().get(outcome.asset)
    if (price is not None and price.status == "ok" and math.isfinite(price.price_usd)
            and price.price_usd > 0.0 and abs(price.ts - outcome.ts) <= max_age_s):
        return float(price.price_usd), "oracle"
    return float(outcome.spot_usd), "option index"


class PremiumQuoter:
    """Prices requests off the live views with a ``PremiumCache``. The cache is replaced when the
    asset's surface is: a cached quote never outlives its surface anyway (its vols key it), and a
    fresh cache per surface keeps the memory of a long session flat (the cache keeps one entry per
    distinct config, and every surface brings new forwards)."""

    def __init__(self, analytics_view, oracle_view, analytics_config) -> None:
        self.analytics_view = analytics_view
        self.oracle_view = oracle_view
        self.config = analytics_config
        self.base_premium_config = analytics_config.premium_config()
        self._surface_key: tuple | None = None
        self.cache = self._new_cache()

    @staticmethod
    def _new_cache() -> PremiumCache:
        return PremiumCache(256, moneyness_precision=CACHE_MONEYNESS_PRECISION,
                            expiry_precision_years=CACHE_EXPIRY_PRECISION_YEARS,
                            vol_precision=CACHE_VOL_PRECISION)

    def surface_ts(self, asset: str) -> float | None:
        outcome = self.analytics_view.latest_fit(asset)
        return None if outcome is None else outcome.ts

    def price(self, request: PremiumRequest) -> LiveQuote:
        """The request priced off ``asset``'s newest surface; PremiumUnavailable (with what to do)
        when there is no surface yet or an input is wrong."""
        outcome = self.analytics_view.latest_fit(request.asset)
        if outcome is None or outcome.fit is None:
            raise PremiumUnavailable(
                f"No {request.asset} volatility surface yet: the first one is fitted once enough "
                f"{request.asset} option tickers have arrived (a refit every "
                f"{self.config.surface_interval_s:g} s). The premium appears here by itself.")
        amount = _positive(request.amount_coin, "The amount", "enter the coins to protect, e.g. 1")
        now = float(outcome.ts)
        expiry_utc = expiry_utc_of(request, now)
        spot, spot_source = pricing_spot(self.oracle_view, outcome, self.config.surface_max_age_s)
        tier = None
        if request.protection == STRIKE_USD:
            strike = _positive(request.strike_usd, "The strike", "enter a strike in USD")
        elif request.protection == CUSTOM_PCT:
            pct = _positive(request.strike_pct, "The protection level",
                            "enter a percentage of spot, e.g. 85")
            if pct > 200.0:
                raise PremiumUnavailable(f"The protection level is a percentage of spot (85 for "
                                         f"85 %), got {pct:g}: enter at most 200.")
            strike = spot * pct / 100.0
        else:
            try:
                fraction = self.base_premium_config.tier(request.protection).strike_fraction
            except (KeyError, ValueError):
                raise PremiumUnavailable(f"Unknown protection {request.protection!r}.") from None
            strike, tier = spot * fraction, request.protection

        key = (request.asset, now)
        if key != self._surface_key:
            self._surface_key, self.cache = key, self._new_cache()
        years = (expiry_utc - now) / SECONDS_PER_YEAR
        try:
            premium_config, reference, reference_source = surface_pricing_inputs(
                outcome.fit, outcome.spot_usd, years,
                latest_reference_vol(self.analytics_view, request.asset),
                self.base_premium_config)
            quote = self.cache.get_or_compute(outcome.fit, spot, strike, years, amount, reference,
                                              config=premium_config, tier=tier)
        except ValueError as exc:
            raise PremiumUnavailable(f"Cannot price this put: {exc}.") from None
        record = quote_record(request.asset, now, quote.tier, expiry_utc, amount, spot,
                               reference, quote)
        return LiveQuote(request, quote, record, premium_config, now, expiry_utc, spot_source,
                         reference_source, outcome.record)


def simulate_outcome(record, premium_config, n_paths: int = OUTCOME_PATHS,
                     confidence: float = OUTCOME_CONFIDENCE, seed=OUTCOME_SEED):
    """The policy's outcome over Monte Carlo paths (models.scenarios.PolicyOutcome), drawn as the
    graph's policy risk draws them for a quote (``dataflows.analytics.simulate_quote_outcome``),
    so its summary is the graph's ``PolicyRiskRecord`` for this quote; here the whole
    distribution."""
    return simulate_quote_outcome(record, premium_config, n_paths, confidence, seed)


# --------------------------------------------------------------------------- rendering


def _usd(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{'-' if x < 0 else ''}${abs(x):,.2f}"


def premium_html(live: LiveQuote) -> str:
    """The premium card: premium (USD, % of notional, per coin) and what it was priced on. The
    premium's exact value, the amount and spot it is for and the surface's time are in the
    ``data-premium-usd``, ``data-amount-coin``, ``data-spot-usd`` and ``data-surface-ts``
    attributes, for scripts and tests."""
    q, r = live.quote, live.record
    tier = f"tier {html.escape(q.tier)}" if q.tier else "custom strike"
    fitted = live.surface_record
    surface = "" if fitted is None else (
        f" ({fitted.n_options} options, {fitted.n_expiries} expiries, fit within "
        f"{100 * fitted.rmse_vol:.2f} vol pts rms)")
    return (
        f'<div class="premium-card" data-asset="{html.escape(r.asset)}">'
        f'<div style="color:#555">{html.escape(r.asset)} put · {r.amount_coin:g} coin · '
        f"strike {_usd(r.strike_usd)} ({100.0 * r.strike_usd / r.spot_usd:.1f} % of spot) · {tier}"
        f"</div>"
        f'<div class="premium-usd" data-premium-usd="{r.premium_usd!r}" '
        f'data-amount-coin="{r.amount_coin!r}" data-spot-usd="{r.spot_usd!r}" '
        f'data-surface-ts="{live.priced_at_s!r}" '
        f'style="font-size:2.2em;font-weight:600">{_usd(r.premium_usd)}</div>'
        f'<div><span class="premium-pct">{q.premium_pct_of_notional:.3f} %</span> of notional '
        f"({_usd(r.amount_coin * r.spot_usd)}) · {_usd(q.premium_per_coin_usd)} per coin</div>"
        f'<div style="color:#777;font-size:0.85em">expiry {iso_utc(live.expiry_utc)} '
        f"({q.expiry_years * 365.0:.2f} days) · spot {_usd(r.spot_usd)} ({live.spot_source}) · "
        f"vol at strike {100 * r.vol_strike_annual:.1f} %, ATM {100 * r.vol_atm_annual:.1f} %, "
        f"reference {100 * r.vol_reference_annual:.1f} % ({live.reference_source}) · "
        f"surface of {iso_utc(live.priced_at_s)}{surface}</div>"
        "</div>"
    )


def breakdown_frame(record) -> pd.DataFrame:
    """The factors in summing order, with the running total before and after each (a waterfall)."""
    usd = np.array([getattr(record, name) for name in BREAKDOWN_FIELDS], dtype=np.float64)
    after = np.cumsum(usd)
    return pd.DataFrame({
        "factor": [_FACTOR_LABELS[name] for name in BREAKDOWN_FIELDS], "usd": usd,
        "before": after - usd, "after": after,
    })


_EMPTY_BARS = pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in (
    ("x0", float), ("y0", float), ("x1", float), ("y1", float), ("factor", object),
    ("usd", float), ("colour", object))})


def breakdown_chart(record=None):
    """The waterfall of ``record``'s factors, then the premium; empty for None (no quote)."""
    labels = [_FACTOR_LABELS[name] for name in BREAKDOWN_FIELDS] + ["premium"]
    ticks = list(enumerate(labels))
    if record is None:
        return _waterfall(_EMPTY_BARS, ticks)
    frame = breakdown_frame(record)
    n = len(frame)
    bars = pd.DataFrame({
        "x0": np.arange(n) - 0.4, "y0": frame["before"], "x1": np.arange(n) + 0.4,
        "y1": frame["after"], "factor": frame["factor"], "usd": frame["usd"],
        "colour": np.where(frame["usd"] >= 0.0, "#4c78a8", "#e45756"),
    })
    total = pd.DataFrame({"x0": [n - 0.4], "y0": [0.0], "x1": [n + 0.4],
                          "y1": [record.premium_usd], "factor": ["premium"],
                          "usd": [record.premium_usd], "colour": ["#1b7f3b"]})
    return _waterfall(pd.concat([bars, total], ignore_index=True), ticks)


def _waterfall(data: pd.DataFrame, ticks):
    return hv.Rectangles(data, ["x0", "y0", "x1", "y1"], ["factor", "usd", "colour"]).opts(
        color="colour", line_color=None, tools=["hover"], xticks=ticks, xrotation=45, height=320,
        responsive=True, framewise=True, ylabel="USD", yformatter="%.0f", xlabel="",
        title="Premium breakdown (factors sum to it)",
    )


def breakdown_table_html(record) -> str:
    frame = breakdown_frame(record)
    premium = record.premium_usd
    rows = "".join(
        f'<tr class="premium-factor" data-factor="{html.escape(f)}" data-usd="{u!r}">'
        f'<td>{html.escape(f)}</td><td style="text-align:right">{_usd(u)}</td>'
        f'<td style="text-align:right">{(100.0 * u / premium if premium else 0.0):.1f} %</td></tr>'
        for f, u in zip(frame["factor"], frame["usd"])
    )
    return (f'<table class="premium-breakdown" style="width:100%">{rows}'
            f'<tr style="font-weight:600"><td>premium</td><td style="text-align:right">'
            f"{_usd(record.premium_usd)}</td><td style=\"text-align:right\">100 %</td></tr></table>")


def payoff_frame(record, n_points: int = 201) -> pd.DataFrame:
    """The buyer's net at expiry against spot then (0.4x to 1.6x today's spot and the strike):
    the protection's payoff less the premium paid."""
    hi = 1.6 * max(record.spot_usd, record.strike_usd)
    spot_at_expiry = np.linspace(0.4 * min(record.spot_usd, record.strike_usd), hi, n_points)
    payoff = record.amount_coin * np.maximum(record.strike_usd - spot_at_expiry, 0.0)
    return pd.DataFrame({"spot_at_expiry_usd": spot_at_expiry, "payoff_usd": payoff,
                         "net_usd": payoff - record.premium_usd})


def payoff_chart(record=None):
    """Payoff and net at expiry against spot then; empty for None (no quote)."""
    if record is None:
        frame = pd.DataFrame({"spot_at_expiry_usd": [], "payoff_usd": [], "net_usd": []})
        strike_usd = spot_usd = 0.0
    else:
        frame = payoff_frame(record)
        strike_usd, spot_usd = record.strike_usd, record.spot_usd
    # framewise on every element: a new amount or strike rescales both axes.
    net = hv.Curve(frame, "spot_at_expiry_usd", "net_usd", label="payoff − premium").opts(
        color="#4c78a8", line_width=2, tools=["hover"], framewise=True)
    payoff = hv.Curve(frame, "spot_at_expiry_usd", "payoff_usd", label="payoff").opts(
        color="#999999", line_dash="dashed", framewise=True)
    return (payoff * net * hv.HLine(0.0).opts(color="#444", line_width=1)
            * hv.VLine(strike_usd).opts(color="#e45756", line_dash="dotted")
            * hv.VLine(spot_usd).opts(color="#1b7f3b", line_dash="dotted")).opts(
        height=320, responsive=True, ylabel="USD",
        xlabel="spot at expiry (USD; red: strike, green: spot now)",
        title="Payoff at expiry", legend_position="top_right", xformatter="%.0f",
        yformatter="%.0f",
    )


def outcome_chart(outcome=None):
    """The distribution of the buyer's net at expiry over the paths; empty for None (no quote)."""
    if outcome is None:
        edges, share = np.array([0.0, 1.0]), np.array([0.0])
    else:
        pnl = outcome.buyer_pnl_usd
        counts, edges = np.histogram(pnl, bins=40)
        share = counts / pnl.size
    return hv.Histogram((edges, share), kdims=["net_usd"], vdims=["share"]).opts(
        color="#4c78a8", line_color=None, height=300, responsive=True, tools=["hover"],
        xlabel="buyer's payoff − premium at expiry (USD)", ylabel="share of paths",
        title=f"Monte Carlo outcomes ({OUTCOME_PATHS:,} Merton paths)", framewise=True,
        xformatter="%.0f",
    )


def outcome_summary_html(outcome) -> str:
    risk = outcome.seller_risk
    return (
        '<div class="premium-outcome">'
        f"P(exercise) {100 * outcome.probability_exercise:.1f} % · "
        f"P(touch the strike) {100 * outcome.probability_touch:.1f} % · "
        f"expected payoff {_usd(outcome.expected_payoff_usd)} "
        f"± {_usd(outcome.expected_payoff_stderr_usd)} against a premium of "
        f"{_usd(outcome.premium_usd)} · seller's VaR {100 * risk.confidence:.0f} % "
        f"{_usd(float(risk.var))}, ES {_usd(float(risk.es))}</div>"
    )


# --------------------------------------------------------------------------- the page


def premium_view_page(analytics_view, oracle_view, analytics_config, refresh_ms: int = 500,
                      assets=("BTC",)) -> pn.viewable.Viewable:
    """A new calculator (one per browser session) over the two views; ``assets`` are offered from
    the start (with any the views know), others as they appear."""
    quoter = PremiumQuoter(analytics_view, oracle_view, analytics_config)
    tiers = quoter.base_premium_config.tiers

    def known_assets() -> list[str]:
        return sorted(set(assets) | set(analytics_view.assets) | set(oracle_view.assets))

    offered = known_assets()
    asset = pn.widgets.Select(label="Asset", options=offered,
                              value="BTC" if "BTC" in offered else offered[0],
                              css_classes=["premium-asset"])
    protection_options = {f"{t.name} · {100 * t.strike_fraction:g} % of spot": t.name for t in tiers}
    protection_options["custom % of spot"] = CUSTOM_PCT
    protection_options["strike in USD"] = STRIKE_USD
    default_tier = "standard" if "standard" in protection_options.values() else tiers[0].name
    protection = pn.widgets.Select(label="Protection", options=protection_options,
                                   value=default_tier, css_classes=["premium-protection"])
    strike_pct = pn.widgets.FloatInput(label="Protection level (% of spot)", value=85.0, step=1.0,
                                       css_classes=["premium-strike-pct"], visible=False)
    strike_usd = pn.widgets.FloatInput(label="Strike (USD)", value=None, step=100.0,
                                       css_classes=["premium-strike-usd"], visible=False)
    expiry_mode = pn.widgets.RadioButtonGroup(
        label="Expiry", options={"in days": DAYS, "on a date": DATE}, value=DAYS,
        css_classes=["premium-expiry-mode"])
    expiry_days = pn.widgets.FloatInput(label="Days to expiry", value=30.0, step=1.0,
                                        css_classes=["premium-expiry-days"])
    expiry_date = pn.widgets.DatePicker(label="Expiry date (08:00 UTC)", visible=False,
                                        css_classes=["premium-expiry-date"])
    amount = pn.widgets.FloatInput(label="Amount (coin)", value=1.0, step=0.1,
                                   css_classes=["premium-amount"])
    inputs = (asset, protection, strike_pct, strike_usd, expiry_mode, expiry_days, expiry_date,
              amount)

    # Every part of the page exists from the start and only its content changes (text, chart
    # data through a pipe): in the browser, a layout built hidden, or children swapped in later
    # from a periodic callback, were at times never drawn.
    message = pn.pane.HTML("", css_classes=["premium-message"], sizing_mode="stretch_width")
    card = pn.pane.HTML("", css_classes=["premium-output"], sizing_mode="stretch_width")
    breakdown_table = pn.pane.HTML("", sizing_mode="stretch_width")
    outcome_summary = pn.pane.HTML("", sizing_mode="stretch_width")
    pipe = hv.streams.Pipe(data=(None, None))  # (PremiumQuoteRecord, PolicyOutcome) or Nones
    breakdown = pn.pane.HoloViews(hv.DynamicMap(lambda data: breakdown_chart(data[0]),
                                                streams=[pipe]),
                                  sizing_mode="stretch_width", linked_axes=False)
    payoff = pn.pane.HoloViews(hv.DynamicMap(lambda data: payoff_chart(data[0]), streams=[pipe]),
                               sizing_mode="stretch_width", linked_axes=False)
    outcomes = pn.pane.HoloViews(hv.DynamicMap(lambda data: outcome_chart(data[1]),
                                               streams=[pipe]),
                                 sizing_mode="stretch_width", linked_axes=False)
    body = pn.Column(
        message, card,
        pn.Row(pn.Column(breakdown, breakdown_table, sizing_mode="stretch_width"),
               payoff, sizing_mode="stretch_width"),
        outcomes, outcome_summary, sizing_mode="stretch_width",
    )
    state: dict = {"key": None, "live": None}

    def request() -> PremiumRequest:
        return PremiumRequest(
            asset=asset.value, protection=protection.value, strike_pct=strike_pct.value,
            strike_usd=strike_usd.value, expiry_mode=expiry_mode.value,
            expiry_days=expiry_days.value, expiry_date=expiry_date.value, amount_coin=amount.value,
        )

    def show_message(text: str) -> None:
        state["live"] = None
        message.object = (f'<div class="premium-message-text" role="alert" style="padding:0.8em;'
                          f'background:#fff3cd;border:1px solid #ffe69c;border-radius:4px">'
                          f"{html.escape(text)}</div>")
        card.object = breakdown_table.object = outcome_summary.object = ""
        if pipe.data[0] is not None:
            pipe.send((None, None))

    def reprice() -> None:
        req = request()
        key = (req, quoter.surface_ts(req.asset))
        if key == state["key"]:
            return
        state["key"] = key
        try:
            live = quoter.price(req)
            try:
                outcome = simulate_outcome(live.record, live.premium_config)
            except ValueError as exc:  # the simulator refusing these inputs
                raise PremiumUnavailable(f"Cannot simulate this policy: {exc}.") from None
            render(live, outcome)
        except PremiumUnavailable as exc:
            show_message(str(exc))
        except Exception as exc:  # a bug must not freeze the page silently: say so, and log it
            log.exception("premium page: pricing %r failed", req)
            show_message(f"Could not price this request ({type(exc).__name__}: {exc}); the "
                         "details are in the server's log.")

    def render(live: LiveQuote, outcome) -> None:
        state["live"] = live
        message.object = ""
        card.object = premium_html(live)
        breakdown_table.object = breakdown_table_html(live.record)
        outcome_summary.object = outcome_summary_html(outcome)
        # The charts follow the pipe: a new quote updates their data in the browser (a few ms)
        # instead of building new Bokeh figures (a few hundred ms) every time.
        pipe.send((live.record, outcome))

    def follow_mode(_event=None) -> None:
        strike_pct.visible = protection.value == CUSTOM_PCT
        strike_usd.visible = protection.value == STRIKE_USD
        expiry_days.visible = expiry_mode.value == DAYS
        expiry_date.visible = expiry_mode.value == DATE
        if strike_usd.visible and strike_usd.value is None and state["live"] is not None:
            # Start a USD strike where the protection was, rounded to a readable figure.
            strike_usd.value = float(round(state["live"].record.strike_usd, -2))
        if expiry_date.visible and expiry_date.value is None and state["live"] is not None:
            expiry_date.value = dt.datetime.fromtimestamp(state["live"].expiry_utc,
                                                          dt.timezone.utc).date()

    def poll() -> None:
        now_known = known_assets()
        if now_known != list(asset.options):  # rare: an asset none of the config names
            asset.options = now_known
        reprice()

    protection.param.watch(follow_mode, "value")
    expiry_mode.param.watch(follow_mode, "value")
    for widget in inputs:
        widget.param.watch(lambda _event: reprice(), "value")

    reprice()
    session_callback(poll, refresh_ms)
    page = pn.Row(
        pn.Column(*inputs, width=300),
        body,
        sizing_mode="stretch_width",
    )
    return pn.Column(
        pn.pane.Markdown(
            "# hedgeflow · premium calculator\nA put on your coins, priced off the newest "
            "volatility surface and oracle spot: the premium, what it is made of, what it pays "
            "at expiry and how the policy may end."),
        page,
        sizing_mode="stretch_width",
    )


def premium_page(pipeline) -> pn.viewable.Viewable:
    """The calculator of ``pipeline`` (its ``analytics`` and ``oracle`` views), offering the
    assets the oracle publishes (``[chain].assets``) from the start."""
    return premium_view_page(pipeline.views["analytics"], pipeline.views["oracle"],
                             pipeline.config.analytics, pipeline.config.dashboard.refresh_ms,
                             assets=tuple(pipeline.config.chain.assets))


if pn.state.served:
    # `panel serve dashboards/premium.py`: one pipeline shared by the sessions of this process.
    from dashboards.session import serve_page

    serve_page(premium_page, "Premium")
