"""The oracle page without a browser: card HTML, and one card per asset once prices arrive.

Outside a Bokeh server ``pn.state.add_periodic_callback`` schedules nothing (no document, no
running loop), so the page's refresh is captured by replacing it with a recorder and called by
hand: that is exactly what the server does every ``refresh_ms``.
"""

from __future__ import annotations

import math
import re

import holoviews as hv
import pandas as pd
import panel as pn
import pytest

from dashboards import oracle as page_mod
from dashboards.oracle import _card_html, oracle_view_page as oracle_page
from dataflows.views import OracleView
from models.records import OraclePrice

PRICE_TEXT = re.compile(r"\$[0-9,]+\.[0-9]{2}")


def _price(asset="BTC", ts=1_700_000_000.0, price=97_012.34, conf=12.5, n=1, status="ok",
           reason="", sources=("binance:BTCUSDT",)) -> OraclePrice:
    return OraclePrice(asset, ts, price, conf, n, status, reason, tuple(sources))


def _price_div(html_text: str) -> str:
    m = re.search(r'<div class="oracle-price"[^>]*>(.*?)</div>', html_text)
    assert m, html_text
    return m.group(1)


# --------------------------------------------------------------------------- _card_html


def test_card_shows_price_confidence_sources_and_time():
    card = _card_html(_price(ts=1_700_000_000.0))
    assert 'class="oracle-card" data-asset="BTC"' in card
    assert 'class="oracle-price" data-asset="BTC"' in card
    assert _price_div(card) == "$97,012.34"
    assert PRICE_TEXT.fullmatch(_price_div(card))
    assert "± 12.50 USD" in card
    assert "1 source(s)" in card
    assert "binance:BTCUSDT" in card
    assert "22:13:20 UTC" in card  # 1_700_000_000 is 2023-11-14 22:13:20 UTC


def test_card_price_carries_its_epoch_seconds_to_the_millisecond():
    # The benchmark's tick-to-screen latency reads this attribute in the browser.
    card = _card_html(_price(ts=1_700_000_000.123456))
    m = re.search(r'<div class="oracle-price" data-asset="BTC" data-ts="([^"]*)"', card)
    assert m, card
    assert m.group(1) == "1700000000.123"


def test_card_escapes_html_in_asset_reason_and_sources():
    card = _card_html(
        _price(
            asset='<img src=x onerror="alert(1)">',
            status="degraded",
            reason="<script>alert('x')</script> & more",
            sources=("<b>evil</b>:X",),
        )
    )
    assert "<script" not in card and "<img" not in card and "<b>" not in card
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in card
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in card
    assert "&lt;b&gt;evil&lt;/b&gt;:X" in card
    # the attribute value cannot be broken out of: quotes inside it are escaped
    assert 'data-asset="&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"' in card


def test_card_shows_a_dash_for_nan_price_and_confidence():
    card = _card_html(_price(price=float("nan"), conf=float("nan"), n=0, status="halted",
                             reason="no fresh source", sources=()))
    assert _price_div(card) == "$—"
    assert "± — USD" in card
    assert "nan" not in card.lower()
    assert "sources: none" in card
    assert " — no fresh source" in card


@pytest.mark.parametrize(
    "status, colour",
    [("ok", "#1b7f3b"), ("degraded", "#b26a00"), ("halted", "#b00020"), ("unknown", "#444")],
)
def test_card_status_colour(status, colour):
    card = _card_html(_price(status=status))
    m = re.search(r'<span class="oracle-status" style="color:([^;]+);[^"]*">([^<]*)</span>', card)
    assert m, card
    assert m.group(1) == colour
    assert m.group(2) == status


def test_no_reason_means_no_separator():
    card = _card_html(_price(reason=""))
    status_span_end = card.index("</span>")
    assert card[status_span_end:].startswith("</span></div>")


# --------------------------------------------------------------------------- oracle_page



def _cards(page) -> dict[str, pn.pane.HTML]:
    panes = [p for p in page.select(pn.pane.HTML) if "oracle-card" in str(p.object)]
    return {re.search(r'data-asset="([^"]*)"', p.object).group(1): p for p in panes}


def _charts(page) -> list[pn.pane.HoloViews]:
    return list(page.select(pn.pane.HoloViews))


def _waiting(page) -> list:
    return [p for p in page.select(pn.pane.Markdown) if "oracle-waiting" in p.css_classes]


def test_page_waits_then_creates_one_card_per_asset_after_the_first_refresh(periodic):
    view = OracleView()
    page = oracle_page(view, refresh_ms=250)

    # Cards at the refresh period, charts at most once a second.
    assert [c["period"] for c in periodic] == [250, 1_000]
    assert all(isinstance(c["period"], int) for c in periodic)
    assert _cards(page) == {} and _charts(page) == []
    assert len(_waiting(page)) == 1

    view.on_prices([
        _price("ETH", 100.0, 3_012.5, 0.75, sources=("binance:ETHUSDT",)),
        _price("BTC", 100.0, 97_000.0, 10.0),
    ])
    refresh = periodic[0]["callback"]
    refresh()

    cards = _cards(page)
    assert sorted(cards) == ["BTC", "ETH"]
    assert _price_div(cards["BTC"].object) == "$97,000.00"
    assert _price_div(cards["ETH"].object) == "$3,012.50"
    assert len(_charts(page)) == 2
    assert _waiting(page) == []

    # Later refreshes update the same cards; they never add duplicates.
    view.on_prices([_price("BTC", 101.0, 97_100.25, 11.0)])
    refresh()
    refresh()
    cards = _cards(page)
    assert sorted(cards) == ["BTC", "ETH"]
    assert _price_div(cards["BTC"].object) == "$97,100.25"
    assert _price_div(cards["ETH"].object) == "$3,012.50"
    assert len(_charts(page)) == 2


def test_chart_buffer_receives_priced_points_with_their_band(periodic):
    view = OracleView()
    page = oracle_page(view)
    view.on_prices([_price("BTC", 100.0, 100.0, 1.0), _price("BTC", 101.0, 102.0, 2.0)])
    refresh_cards, refresh_charts = (c["callback"] for c in periodic)
    refresh_cards()
    refresh_charts()
    # A price-less record updates the card but adds nothing to the chart.
    view.on_prices([_price("BTC", 102.0, float("nan"), float("nan"), 0, "halted", "stale")])
    refresh_cards()
    refresh_charts()

    (chart,) = _charts(page)
    dmap = chart.object
    assert isinstance(dmap, hv.DynamicMap)
    (buffer,) = [s for s in dmap.streams if isinstance(s, hv.streams.Buffer)]
    data = buffer.data
    assert list(data["price"]) == [100.0, 102.0]
    assert list(data["lo"]) == [99.0, 100.0]
    assert list(data["hi"]) == [101.0, 104.0]
    # UTC instants (HoloViews may hand Bokeh naive datetimes, which Bokeh reads as UTC)
    times = data["time"] if data["time"].dt.tz else data["time"].dt.tz_localize("UTC")
    assert list(times) == list(pd.to_datetime([100.0, 101.0], unit="s", utc=True))
    assert _price_div(_cards(page)["BTC"].object) == "$—"
    assert "halted" in _cards(page)["BTC"].object


def test_page_built_after_prices_exist_shows_cards_at_once(periodic):
    view = OracleView()
    view.on_prices([_price("ETH", 5.0, 2_000.0, 1.0)])
    page = oracle_page(view)
    assert sorted(_cards(page)) == ["ETH"]
    assert _waiting(page) == []


def test_each_page_has_its_own_widgets(periodic):
    view = OracleView()
    view.on_prices([_price("BTC", 5.0, 1.0, 0.1)])
    a, b = oracle_page(view), oracle_page(view)
    assert _cards(a)["BTC"] is not _cards(b)["BTC"]
    assert len(periodic) == 4  # each page its own two callbacks


def test_oracle_page_outside_a_server_does_not_raise():
    """The real add_periodic_callback, with no document and no running loop, schedules nothing."""
    view = OracleView()
    view.on_prices([_price("BTC", 5.0, 1.0, 0.1)])
    page = oracle_page(view)
    assert sorted(_cards(page)) == ["BTC"]
    assert not page_mod.pn.state.served


def test_fmt_price():
    assert page_mod._fmt_price(1234567.891) == "1,234,567.89"
    assert page_mod._fmt_price(math.nan) == "—"


# --------------------------------------------------------------------------- sources, chain, alerts


def _venue(source, mid, deviation_bps, status="used", reason="", quote_ts=99.0, weight=0.5):
    from models.oracle import VenueComparison

    return VenueComparison("BTC", source, 100.0, quote_ts, mid - 5.0, mid + 5.0, mid,
                           10.0 / mid * 1e4, deviation_bps, status, reason, 0.9, weight)


class _OracleWithSources:
    """The part of models.oracle.RobustOracle the view reads: the last evaluation's sources."""

    def __init__(self, venues):
        self.venues = venues

    def cross_venue(self, asset):
        return list(self.venues) if asset == "BTC" else []


class _Publisher:
    """The part of the chain publisher the view reads."""

    def __init__(self, confirmed):
        self.confirmed = confirmed
        self.stats = type("Stats", (), {"counts": {"confirmed": len(confirmed)}})()

    def confirmed_prices(self):
        return dict(self.confirmed)


def test_sources_table_on_chain_line_and_oracle_alerts(periodic):
    from dataflows.views.alerts import AlertsView
    from models.records import Alert

    venues = [_venue("kraken:BTC/USD", 97_900.0, 92.8, "rejected", "divergence"),
              _venue("binance:BTCUSDT", 97_010.0, -0.2)]
    view = OracleView(oracle=_OracleWithSources(venues), publisher=_Publisher({"BTC": (97_000.0, 90.0)}))
    alerts = AlertsView()
    page = oracle_page(view, refresh_ms=250, alerts=alerts)
    view.on_prices([_price("BTC", 100.0, 97_012.34, 12.5)])
    alerts.on_alerts([Alert(95.0, "oracle_divergence", "warning", "kraken off", "BTC"),
                      Alert(96.0, "volatility_anomaly", "warning", "not the oracle's", "BTC"),
                      Alert(97.0, "oracle_status", "critical", "BTC halted", "BTC")])
    refresh_cards, refresh_slow = (c["callback"] for c in periodic)
    refresh_cards()
    refresh_slow()
    text = "\n".join(str(p.object) for p in page.select(pn.pane.HTML))
    rows = re.findall(r'<tr class="oracle-source" data-source="([^"]+)" data-status="(\w+)">', text)
    assert rows == [("binance:BTCUSDT", "used"), ("kraken:BTC/USD", "rejected")]  # sorted by source
    assert "+92.8" in text and "rejected — divergence" in text
    assert "on chain: $97,000.00, confirmed 10 s ago" in text  # the price's time 100 - 90
    shown = re.findall(r'<li class="oracle-alert" data-severity="(\w+)">[^<]*<b>\w+</b> (\w+):', text)
    assert shown == [("critical", "oracle_status"), ("warning", "oracle_divergence")]  # newest first


def test_nothing_on_chain_yet_is_said():
    from dashboards.oracle import on_chain_html

    assert "nothing confirmed yet" in on_chain_html("ETH", None, 100.0)
