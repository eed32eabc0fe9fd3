"""The premium calculator without a browser: the page over a real AnalyticsView and OracleView fed
with a surface fitted (models.surface, through ``fit_chain``) on the simulator's chain, driven by
setting its widgets in Python.

The premium it shows must be the graph's: ``quote_protection`` (which fits the same chain stored
in DuckDB) for a strike, ``PremiumNode`` for a tier, and its Monte Carlo the graph's policy risk.
Outside a Bokeh server the page's periodic poll is captured (as in test_oracle.py) and called by
hand, as the server would every ``refresh_ms``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import math
import re
from functools import lru_cache

import holoviews as hv
import numpy as np
import panel as pn
import pytest

from dashboards.premium import (
    PremiumQuoter,
    PremiumRequest,
    breakdown_frame,
    payoff_frame,
    premium_view_page,
    simulate_outcome,
)
from dataflows.analytics import (
    PremiumNode,
    expiry_at,
    fit_chain,
    quote_protection,
    simulate_policy_risks,
)
from dataflows.config import load_config
from dataflows.views import AnalyticsView, OracleView
from models.option_book import SECONDS_PER_YEAR, OptionBook
from models.premium import BREAKDOWN_FIELDS
from models.pricing import bs_greeks
from models.records import VolatilityEstimate
from storage.writer import DuckDBWriter
from tests.dataflows.test_analytics import SPOT, T0, chain_batch, price

CONFIG = load_config(env={}).analytics
ORACLE_SPOT = 40_250.0  # the oracle a little off the chain's index (40,000)


@lru_cache(maxsize=None)
def surface_outcome():
    """The graph's fit of the simulator's BTC chain quoted at T0 (a FitOutcome, ts T0)."""
    book = OptionBook()
    book.update(chain_batch(T0))
    snapshot = book.snapshot("BTC", T0, max_age_s=CONFIG.surface_max_age_s,
                             min_expiry_s=CONFIG.surface_min_expiry_s)
    outcome = fit_chain(snapshot, CONFIG.surface_method, CONFIG.surface_min_options)
    assert outcome.fit is not None, outcome.error
    return outcome


@pytest.fixture(scope="module")
def chain_con():
    """The same chain stored as the graph stores it, for ``quote_protection``."""
    writer = DuckDBWriter(":memory:")
    writer.append("option_tickers", chain_batch(T0), T0)
    writer.flush()
    yield writer.con
    writer.con.close()



def live_views(oracle_spot: float | None = ORACLE_SPOT, oracle_ts: float = T0 + 2.0):
    analytics, oracle = AnalyticsView(), OracleView()
    analytics.on_surfaces([surface_outcome()])
    if oracle_spot is not None:
        oracle.on_prices([price("BTC", oracle_ts, oracle_spot)])
    return analytics, oracle


def widget(page, name: str):
    (found,) = [w for w in page.select(pn.widgets.Widget) if f"premium-{name}" in w.css_classes]
    return found


def message(page) -> str | None:
    """The message the page shows (its text, unescaped), or None when it shows none."""
    (found,) = [p for p in page.select(pn.pane.HTML) if "premium-message" in p.css_classes]
    if not found.object:
        return None
    text = re.fullmatch(r'<div class="premium-message-text"[^>]*>(.*)</div>', found.object, re.S)
    assert text, found.object
    return html.unescape(text.group(1))


def card(page) -> str | None:
    """The premium card the page shows, or None when it shows none."""
    (found,) = [p for p in page.select(pn.pane.HTML) if "premium-output" in p.css_classes]
    return found.object or None


def chart_data(page) -> list:
    """What the three charts draw now: the waterfall, the payoff overlay, the histogram."""
    dmaps = [p.object for p in page.select(pn.pane.HoloViews)]
    assert len(dmaps) == 3 and all(isinstance(d, hv.DynamicMap) for d in dmaps)
    return [d[()] for d in dmaps]


def shown_premium(page) -> float | None:
    """The premium the page shows (its exact value, from the card), or None when it shows none;
    the page shows either a premium or a message."""
    if card(page) is None:
        assert message(page)
        return None
    assert message(page) is None
    m = re.search(r'data-premium-usd="([^"]+)"', card(page))
    assert m, card(page)
    text = re.search(r'<div class="premium-usd"[^>]*>\$([0-9,]+\.[0-9]{2})</div>', card(page))
    assert text and float(text.group(1).replace(",", "")) == pytest.approx(float(m.group(1)), abs=0.005)
    return float(m.group(1))


def shown_factors(page) -> dict[str, float]:
    (table,) = [p.object for p in page.select(pn.pane.HTML) if "premium-breakdown" in str(p.object)]
    return {f: float(u) for f, u in re.findall(r'data-factor="([^"]+)" data-usd="([^"]+)"', table)}


def cache_bound_usd(amount_coin: float, spot_usd: float, strike_usd: float, years: float) -> float:
    """How far a quote through the page's PremiumCache may be from the direct price
    (models.premium.PremiumCache's bound at the page's precisions) plus one quoting tick: delta x
    strike x half a moneyness cell, vega x half a vol cell for each of the three vols, theta x
    half an expiry cell. |delta| <= 1 and vega <= S sqrt(T) / sqrt(2 pi)."""
    from dashboards import premium as page_mod

    theta = bs_greeks(spot_usd, strike_usd, years, 0.0, 1.5, False).theta  # vols stay under 150 %
    vega_max = spot_usd * math.sqrt(years) / math.sqrt(2.0 * math.pi)
    return amount_coin * (
        strike_usd * page_mod.CACHE_MONEYNESS_PRECISION / 2.0
        + 3.0 * vega_max * page_mod.CACHE_VOL_PRECISION / 2.0
        + abs(float(theta)) * page_mod.CACHE_EXPIRY_PRECISION_YEARS / 2.0
    ) + CONFIG.premium_config().rounding_tick_usd


# --------------------------------------------------------------------------- no surface yet


def test_before_the_first_surface_the_page_says_so_then_prices_when_one_arrives(periodic):
    analytics, oracle = AnalyticsView(), OracleView()
    page = premium_view_page(analytics, oracle, CONFIG, refresh_ms=250)

    assert len(periodic) == 1 and periodic[0]["period"] == 250
    assert "No BTC volatility surface yet" in message(page)
    assert shown_premium(page) is None
    # Bad inputs before any surface: still the surface's message, never an exception.
    widget(page, "amount").value = -3.0
    assert "No BTC volatility surface yet" in message(page)

    widget(page, "amount").value = 1.0
    analytics.on_surfaces([surface_outcome()])
    oracle.on_prices([price("BTC", T0 + 2.0, ORACLE_SPOT)])
    periodic[0]["callback"]()
    premium = shown_premium(page)
    assert premium is not None and premium > 0.0
    assert 'data-asset="BTC"' in card(page) and "spot $40,250.00 (oracle)" in card(page)


# --------------------------------------------------------------------------- the graph's premium


@pytest.mark.parametrize(
    "settings, strike_usd, amount_coin",
    [
        ({"protection": "strike", "strike-usd": 36_000.0, "expiry-days": 30.0}, 36_000.0, 2.0),
        ({"protection": "strike", "strike-usd": 33_500.0, "expiry-days": 7.0}, 33_500.0, 0.25),
        ({"protection": "custom", "strike-pct": 85.0, "expiry-days": 90.0}, 0.85 * ORACLE_SPOT, 3.0),
        ({"protection": "strike", "strike-usd": 38_000.0, "expiry-mode": "date",
          "expiry-date": dt.date(2023, 12, 29)}, 38_000.0, 1.5),
    ],
)
def test_the_premium_shown_is_quote_protections_and_its_breakdown_sums_to_it(
        periodic, chain_con, settings, strike_usd, amount_coin):
    page = premium_view_page(*live_views(), CONFIG)
    widget(page, "amount").value = amount_coin
    for name, value in settings.items():
        widget(page, name).value = value

    if settings.get("expiry-mode") == "date":
        expiry_utc = dt.datetime(2023, 12, 29, 8, tzinfo=dt.timezone.utc).timestamp()
    else:
        expiry_utc = expiry_at(T0, settings["expiry-days"])
    expected = quote_protection(chain_con, asset="BTC", strike_usd=strike_usd,
                                expiry_utc=expiry_utc, amount_coin=amount_coin, config=CONFIG,
                                spot_usd=ORACLE_SPOT)
    assert expected["priced_at_utc"] == "2023-11-14T22:13:20Z"  # the fit's time, T0

    premium = shown_premium(page)
    years = (expiry_utc - T0) / SECONDS_PER_YEAR
    bound = cache_bound_usd(amount_coin, ORACLE_SPOT, strike_usd, years)
    assert bound < 0.01 * expected["premium_usd"]  # the comparison below means something
    assert premium == pytest.approx(expected["premium_usd"], abs=bound)
    assert f"expiry {expected['expiry_utc']}" in card(page)
    assert "reference" in card(page) and "(surface ATM)" in card(page)
    assert expected["vol_reference_source"] == "surface ATM"

    factors = shown_factors(page)
    assert list(factors) == ["intrinsic", "time value", "volatility", "skew", "jump", "margin",
                             "rounding"]
    assert math.fsum(factors.values()) == pytest.approx(premium, rel=1e-12, abs=1e-9)
    # Factor by factor, the same as the direct price (the cache's cells aside).
    for name, label in zip(BREAKDOWN_FIELDS, factors):
        assert factors[label] == pytest.approx(expected[name],
                                               abs=bound + 1e-6 * expected["premium_usd"])
    pct = float(re.search(r'class="premium-pct">([0-9.]+) %', card(page)).group(1))
    assert pct == pytest.approx(100.0 * premium / (amount_coin * ORACLE_SPOT), abs=0.0005)


@pytest.mark.parametrize("tier, days", [("basic", 7.0), ("standard", 30.0), ("premium", 90.0)])
def test_a_tier_is_priced_as_the_graphs_premium_node_prices_it(periodic, tier, days):
    # The graph prices tiers at the chain's index: give the oracle that spot.
    page = premium_view_page(*live_views(oracle_spot=SPOT), CONFIG)
    widget(page, "protection").value = tier
    widget(page, "expiry-days").value = days

    node = PremiumNode(CONFIG.premium_config(), expiry_days=[days], amount_coin=1.0)
    (graph_quote,) = [q for q in node.on_surfaces([surface_outcome()]) if q.tier == tier]
    years = (graph_quote.expiry_utc - T0) / SECONDS_PER_YEAR
    premium = shown_premium(page)
    assert premium == pytest.approx(graph_quote.premium_usd,
                                    abs=cache_bound_usd(1.0, SPOT, graph_quote.strike_usd, years))
    assert f"tier {tier}" in card(page)
    assert f"strike ${graph_quote.strike_usd:,.2f}" in card(page)


def test_the_reference_volatility_is_the_newest_ready_realized_one_the_graph_accepts():
    analytics, oracle = live_views()
    quoter = PremiumQuoter(analytics, oracle, CONFIG)
    request = PremiumRequest(asset="BTC", protection="standard", expiry_days=30.0, amount_coin=1.0)
    atm = quoter.price(request)
    assert atm.reference_source == "surface ATM"

    def estimate(ts, vol, ready=True):
        return VolatilityEstimate(asset="BTC", ts=ts, window_s=86_400.0, n_returns=1_000,
                                  vol_annual=vol, ewma_vol_annual=vol, ready=ready)

    analytics.on_volatility([estimate(T0 - 120.0, 0.62), estimate(T0 - 60.0, 6.0),
                             estimate(T0 - 30.0, 0.70, ready=False)])
    realized = quoter.price(request)
    assert realized.reference_source == "realized 24h"
    assert realized.record.vol_reference_annual == 0.62  # not the broken 600 %, not the unready
    # A higher reference vol moves value from the volatility factor to time value; the total,
    # which telescopes to the fair value at the strike's vol, does not move.
    assert realized.quote.time_value_usd > atm.quote.time_value_usd
    assert realized.quote.volatility_usd < atm.quote.volatility_usd
    assert realized.quote.premium_usd == pytest.approx(atm.quote.premium_usd, abs=0.011)


def test_a_stale_or_halted_oracle_gives_way_to_the_chains_index():
    for oracle_price in (price("BTC", T0 - CONFIG.surface_max_age_s - 1.0, ORACLE_SPOT),
                         price("BTC", T0, ORACLE_SPOT, status="halted")):
        analytics, oracle = live_views(oracle_spot=None)
        oracle.on_prices([oracle_price])
        live = PremiumQuoter(analytics, oracle, CONFIG).price(
            PremiumRequest(asset="BTC", protection="basic", expiry_days=7.0, amount_coin=1.0))
        assert live.spot_source == "option index" and live.record.spot_usd == SPOT
        assert live.record.strike_usd == pytest.approx(0.8 * SPOT)


def test_repeated_inputs_come_from_the_cache_and_a_new_surface_starts_a_new_one():
    analytics, oracle = live_views()
    quoter = PremiumQuoter(analytics, oracle, CONFIG)
    request = PremiumRequest(asset="BTC", protection="strike", strike_usd=35_000.0,
                             expiry_mode="date", expiry_date=dt.date(2023, 12, 15), amount_coin=2.0)
    first = quoter.price(request)
    again = quoter.price(request)
    assert (quoter.cache.misses, quoter.cache.hits) == (1, 1)
    assert again.quote == first.quote
    old_cache = quoter.cache

    refit = surface_outcome()
    a_day_later = T0 + 86_400.0
    oracle.on_prices([price("BTC", a_day_later, ORACLE_SPOT)])
    analytics.on_surfaces([dataclasses.replace(refit, ts=a_day_later)])
    later = quoter.price(request)
    assert quoter.cache is not old_cache and (quoter.cache.misses, quoter.cache.hits) == (1, 0)
    assert later.priced_at_s == a_day_later and later.expiry_utc == first.expiry_utc
    assert later.quote.premium_usd < first.quote.premium_usd  # a day less to expiry


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"amount": -1.0}, "The amount must be a positive number, got -1.0"),
        ({"amount": None}, "The amount must be a positive number, got nothing"),
        ({"amount": float("nan")}, "The amount must be a positive number"),
        ({"expiry-days": 0.0}, "The expiry in days must be a positive number"),
        ({"expiry-days": -5.0}, "The expiry in days must be a positive number"),
        ({"expiry-mode": "date", "expiry-date": dt.date(2023, 11, 1)},
         "The expiry 2023-11-01T08:00:00Z is in the past"),
        ({"protection": "strike", "strike-usd": -36_000.0}, "The strike must be a positive number"),
        ({"protection": "custom", "strike-pct": 250.0}, "enter at most 200"),
        ({"protection": "custom", "strike-pct": 0.0}, "The protection level must be a positive"),
    ],
)
def test_bad_inputs_show_a_clear_message_and_no_premium(periodic, settings, expected):
    page = premium_view_page(*live_views(), CONFIG)
    good = shown_premium(page)
    assert good is not None
    for name, value in settings.items():
        widget(page, name).value = value
    assert expected in message(page) and "Traceback" not in message(page)
    assert shown_premium(page) is None
    waterfall, _, histogram = chart_data(page)  # the charts are emptied, not left stale
    assert len(waterfall) == 0 and histogram.dimension_values("share").sum() == 0.0
    periodic[0]["callback"]()  # a poll with the bad input still up changes nothing
    assert expected in message(page)


def test_a_fixed_input_brings_the_premium_back(periodic):
    page = premium_view_page(*live_views(), CONFIG)
    before = shown_premium(page)
    widget(page, "amount").value = -2.0
    assert shown_premium(page) is None
    widget(page, "amount").value = 1.0
    assert shown_premium(page) == before


# --------------------------------------------------------------------------- charts


def test_switching_to_a_usd_strike_starts_at_the_current_strike_and_prices_it(periodic):
    page = premium_view_page(*live_views(), CONFIG)
    assert not widget(page, "strike-usd").visible
    widget(page, "protection").value = "strike"
    assert widget(page, "strike-usd").visible
    assert widget(page, "strike-usd").value == round(0.9 * ORACLE_SPOT, -2)
    assert shown_premium(page) is not None and "custom strike" in card(page)
    widget(page, "expiry-mode").value = "date"
    assert widget(page, "expiry-date").visible and not widget(page, "expiry-days").visible
    assert widget(page, "expiry-date").value == dt.date(2023, 12, 15)  # 30 days on, 08:00 UTC


def test_the_charts_show_the_breakdown_the_payoff_and_the_outcomes(periodic):
    page = premium_view_page(*live_views(), CONFIG)
    waterfall, payoff, outcomes = chart_data(page)
    assert isinstance(waterfall, hv.Rectangles)
    premium = shown_premium(page)
    # The waterfall's last factor ends at the premium, and the premium bar is that tall.
    tops = waterfall.dimension_values("y1")
    assert tops[-2] == pytest.approx(premium, abs=1e-9) and tops[-1] == premium
    assert isinstance(outcomes, hv.Histogram)
    assert outcomes.dimension_values("share").sum() == pytest.approx(1.0)
    assert isinstance(payoff, hv.Overlay)

    # A new quote goes to the same charts, with its own data.
    dmaps_before = [p.object for p in page.select(pn.pane.HoloViews)]
    widget(page, "amount").value = 3.0
    assert [p.object for p in page.select(pn.pane.HoloViews)] == dmaps_before
    waterfall, payoff, outcomes = chart_data(page)
    assert waterfall.dimension_values("y1")[-1] == shown_premium(page) > 2.9 * premium


def test_payoff_is_protection_less_premium():
    analytics, oracle = live_views()
    record = PremiumQuoter(analytics, oracle, CONFIG).price(
        PremiumRequest(asset="BTC", protection="strike", strike_usd=36_000.0, amount_coin=2.0)).record
    frame = payoff_frame(record)
    above = frame["spot_at_expiry_usd"] >= record.strike_usd
    assert above.any() and (~above).any()
    assert np.all(frame.loc[above, "net_usd"] == -record.premium_usd)
    below = frame.loc[~above]
    np.testing.assert_allclose(
        below["net_usd"], 2.0 * (record.strike_usd - below["spot_at_expiry_usd"]) - record.premium_usd)
    # The priced strike is the one asked for, to the cache's cell (a millionth of the strike).
    assert record.strike_usd == pytest.approx(36_000.0, rel=1e-6)
    waterfall = breakdown_frame(record)
    assert waterfall["after"].iloc[-1] == pytest.approx(record.premium_usd, abs=1e-9)


def test_the_monte_carlo_is_the_graphs_policy_risk_for_this_quote():
    analytics, oracle = live_views()
    live = PremiumQuoter(analytics, oracle, CONFIG).price(
        PremiumRequest(asset="BTC", protection="strike", strike_usd=37_000.0, expiry_days=30.0,
                       amount_coin=2.0))
    outcome = simulate_outcome(live.record, live.premium_config, n_paths=800, seed=(3, 4))
    (graph,) = simulate_policy_risks([live.record], live.premium_config, 800, 0.99, [3, 4])
    assert outcome.payoff_usd.shape == (800,)
    assert outcome.expected_payoff_usd == graph.expected_payoff_usd
    assert outcome.probability_exercise == graph.probability_exercise
    assert outcome.probability_touch == graph.probability_touch
    assert float(outcome.seller_risk.var) == graph.seller_var_usd
    # The seller's margin: the premium exceeds the expected payoff, by about the margin.
    assert 0.0 < live.record.premium_usd - outcome.expected_payoff_usd < 3.0 * live.record.margin_usd


def test_each_session_has_its_own_widgets(periodic):
    analytics, oracle = live_views()
    a = premium_view_page(analytics, oracle, CONFIG)
    b = premium_view_page(analytics, oracle, CONFIG)
    widget(a, "amount").value = 4.0
    assert widget(b, "amount").value == 1.0
    assert shown_premium(a) == pytest.approx(4.0 * shown_premium(b), rel=0.01)
    assert len(periodic) == 2


def test_the_page_is_registered_and_reads_the_pipelines_views_and_config(periodic):
    from types import SimpleNamespace

    from dashboards.app import PAGES
    from dashboards.premium import premium_page

    assert PAGES["premium"].build is premium_page
    assert PAGES["premium"].title == "Premium calculator"
    analytics, oracle = live_views()
    config = load_config(env={}, overrides={"dashboard.refresh_ms": 300})
    pipeline = SimpleNamespace(views={"analytics": analytics, "oracle": oracle}, config=config)
    page = premium_page(pipeline)
    assert periodic[-1]["period"] == 300
    assert shown_premium(page) > 0.0


def test_an_unexpected_error_is_shown_and_logged_not_swallowed(periodic, monkeypatch, caplog):
    from dashboards import premium as page_mod

    page = premium_view_page(*live_views(), CONFIG)
    assert shown_premium(page) is not None

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(page_mod, "simulate_outcome", broken)
    with caplog.at_level("ERROR", logger="dashboards.premium"):
        widget(page, "amount").value = 2.0
    assert "Could not price this request (ZeroDivisionError: a bug)" in message(page)
    assert any(r.exc_info and "pricing" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    widget(page, "amount").value = 3.0  # the next input prices again
    assert shown_premium(page) is not None
