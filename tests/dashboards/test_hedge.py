"""The hedge book page and its HedgeView, without a browser, on a real models.desk.HedgeDesk.

The desk is driven over three days of one-minute prices (a seeded random walk, enough for it to
trade, take profits that repay the loan, and pay funding); its steps reach the view through a
streamz Stream as the graph's ``desk_steps`` would deliver them. Outside a Bokeh server the page's
refresh is captured by replacing ``pn.state.add_periodic_callback`` with a recorder and called by
hand, which is what the server does every ``refresh_ms``.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import replace
from types import SimpleNamespace

import holoviews as hv
import numpy as np
import panel as pn
import pytest
from streamz import Stream

from dashboards import hedge as page_mod
from dashboards.hedge import (
    fmt_coin,
    fmt_pct,
    fmt_usd,
    hedge_page,
    hedge_view_page,
    ltv_gauge_html,
)
from dataflows.hedging import HedgeNode
from dataflows.views import HedgeView
from dataflows.views import hedge as view_mod
from models.desk import DeskConfig, HedgeDesk
from models.hedge import MarketState
from models.kpis import compute_kpis
from models.loan import LTV_BANDS, LtvBandConfig

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
STEP_S = 60.0
N_STEPS = 3 * 1_440  # three days of minutes: the Sharpe ratio needs two daily returns


def _prices(n: int, seed: int = 1, start: float = 100_000.0, vol_annual: float = 0.6):
    rng = np.random.default_rng(seed)
    sd = vol_annual * math.sqrt(STEP_S / (365 * 86_400))
    return start * np.exp(np.cumsum(sd * rng.standard_normal(n)))


def _market(ts: float, price: float) -> MarketState:
    return MarketState(ts, "BTC", price, price, funding_rate_per_interval=0.0001,
                       vol_24h_annual=0.6, implied_vol_annual=0.6)


@pytest.fixture(scope="module")
def desk_run():
    """A desk stepped over N_STEPS minutes: its steps, the desk, and its totals after step one."""
    desk = HedgeDesk(DeskConfig(), T0)
    steps, after_first = [], None
    for i, price in enumerate(_prices(N_STEPS), start=1):
        steps.append(desk.step(_market(T0 + STEP_S * i, float(price))))
        if after_first is None:
            after_first = (desk.gross_profit_usd, desk.repaid_from_profits_usd, desk.funding_usd)
    assert sum(len(s.fills) for s in steps) > 0, "the desk never traded"
    assert desk.repaid_from_profits_usd > 0.0, "no profit repaid the loan"
    return SimpleNamespace(desk=desk, steps=steps, after_first=after_first)


def _fed(steps, chunk: int = 100, **view_args) -> HedgeView:
    """A view fed ``steps`` the streamz way, in batches of ``chunk`` as the graph emits them."""
    view = HedgeView(**view_args)
    source = Stream()
    sink = source.sink(view.on_steps)
    try:
        for start in range(0, len(steps), chunk):
            source.emit(steps[start:start + chunk])
    finally:
        sink.destroy()  # streamz keeps sinks in a global set
    return view


# --------------------------------------------------------------------------- the view


def test_view_fed_through_a_stream_keeps_the_latest_step_history_fills_and_events(desk_run):
    steps = desk_run.steps
    view = _fed(steps, history=500, recent=1_000)
    assert view.latest is steps[-1]
    assert view.version == math.ceil(len(steps) / 100)
    assert list(view.history) == [(s.ts_s, s.equity_usd, s.ltv, s.delta_coin, s.spot_usd,
                                   s.hedge_ratio) for s in steps[-500:]]
    assert list(view.fills) == [f for s in steps for f in s.fills]
    assert list(view.events) == [(s.ts_s, e) for s in steps for e in s.events][-1_000:]
    assert view.realized_pnl_usd == pytest.approx(sum(s.realized_pnl_usd for s in steps))
    assert view.initial_loan_usd == DeskConfig().treasury.loan.principal_usd
    cut = steps[-3].ts_s
    assert view.since(cut) == list(view.history)[-2:]


def test_an_empty_batch_does_not_move_the_view(desk_run):
    view = _fed(desk_run.steps[:10])
    version = view.version
    view.on_steps([])
    assert view.version == version


def test_view_kpis_equal_compute_kpis_on_the_same_history(desk_run):
    """Every step kept: the KPIs over the view's series are compute_kpis over the same equity and
    LTV, with the desk's own totals of funding, gross profit and repayments since the first step
    (the view recovers the gross profit from the cash identity: this checks it too)."""
    steps, desk = desk_run.steps, desk_run.desk
    view = _fed(steps, kpi_period_s=0.0)
    gross_1, repaid_1, funding_1 = desk_run.after_first
    expected = compute_kpis(
        [s.ts_s for s in steps], [s.equity_usd for s in steps], [s.ltv for s in steps],
        repayments_usd=desk.repaid_from_profits_usd - repaid_1,
        initial_loan_usd=DeskConfig().treasury.loan.principal_usd,
        funding_paid_usd=desk.funding_usd - funding_1,
        gross_profit_usd=desk.gross_profit_usd - gross_1,
    )
    got = view.kpis()
    assert got is not None
    for name, value in expected.as_dict().items():
        assert math.isfinite(value), (name, value)  # the run is long enough for all six
        assert getattr(got, name) == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert got.coverage_ratio > 0.0
    assert view.kpi_span() == (len(steps), steps[-1].ts_s - steps[0].ts_s)
    assert view.kpis() is got  # cached until the view moves


def test_kpi_series_samples_every_period_and_ends_at_the_latest_step(desk_run):
    steps = desk_run.steps[:125]  # two hours and five minutes of minutes
    view = _fed(steps, chunk=7, kpi_period_s=600.0)
    series = view.kpi_series()
    assert [p.ts_s for p in series] == [s.ts_s for s in steps[::10]] + [steps[-1].ts_s]
    assert [p.equity_usd for p in series] == [s.equity_usd for s in steps[::10]] + [steps[-1].equity_usd]
    assert series[-1].funding_paid_usd == steps[-1].funding_usd
    assert view.kpi_span() == (len(series), steps[-1].ts_s - steps[0].ts_s)


def test_steps_without_a_finite_equity_stay_out_of_the_kpi_series():
    desk = HedgeDesk(DeskConfig(), T0)
    steps = [desk.step(_market(T0 + 60.0, 100_000.0)),
             desk.step(MarketState(T0 + 120.0, "BTC", math.nan, math.nan)),
             desk.step(_market(T0 + 180.0, 100_100.0))]
    assert not math.isfinite(steps[1].equity_usd)
    view = _fed(steps, kpi_period_s=0.0)
    assert [p.ts_s for p in view.kpi_series()] == [T0 + 60.0, T0 + 180.0]
    assert len(view.history) == 3
    assert view.kpis() is not None


def test_kpis_are_none_until_the_series_spans_time():
    desk = HedgeDesk(DeskConfig(), T0)
    view = HedgeView()
    assert view.kpis() is None and view.kpi_span() == (0, 0.0)
    view.on_steps([desk.step(_market(T0 + 60.0, 100_000.0))])
    assert view.kpis() is None and view.kpi_span() == (1, 0.0)


def test_bad_view_settings_are_refused():
    with pytest.raises(ValueError, match="kpi_period_s"):
        HedgeView(kpi_period_s=-1.0)
    with pytest.raises(ValueError, match="kpi_points"):
        HedgeView(kpi_points=1)


def test_attach_sinks_the_view_on_the_desk_steps(desk_run):
    desk_steps = Stream()
    pipeline = SimpleNamespace(hedge=None, desk_steps=desk_steps)
    view = view_mod.attach(pipeline)
    try:
        desk_steps.emit(desk_run.steps[:3])
        assert view.latest is desk_run.steps[2]
    finally:
        for downstream in list(desk_steps.downstreams):
            downstream.destroy()
    disabled = view_mod.attach(SimpleNamespace(hedge=None, desk_steps=None))
    assert disabled.latest is None


# --------------------------------------------------------------------------- the page



def _html(page) -> str:
    return "\n".join(str(p.object) for p in page.select(pn.pane.HTML))


def _text_of(page, css: str, attrs: str = "") -> str:
    m = re.search(rf'class="{css}"{attrs}[^>]*>([^<]*)<', _html(page))
    assert m, f"no .{css}{attrs} in the page"
    return m.group(1)


def test_page_waits_then_shows_the_desk_numbers(periodic, desk_run):
    steps = desk_run.steps
    view = HedgeView(kpi_period_s=0.0)
    page = hedge_view_page(view, refresh_ms=250)
    assert periodic[0]["period"] == 250 and isinstance(periodic[0]["period"], int)
    assert 'class="hedge-waiting"' in _html(page)
    assert _text_of(page, "hedge-ltv") == "—"
    assert _text_of(page, "hedge-kpi", ' data-kpi="net_apr"') == "not enough data"

    view.on_steps(steps)
    periodic[0]["callback"]()
    last = steps[-1]
    assert 'class="hedge-waiting"' not in _html(page)
    assert _text_of(page, "hedge-equity") == fmt_usd(last.equity_usd)
    assert _text_of(page, "hedge-mode") == last.mode
    assert _text_of(page, "hedge-trading-state") == last.trading_state
    assert _text_of(page, "hedge-hedge-ratio") == f"{last.hedge_ratio:.2f}"
    assert _text_of(page, "hedge-ltv") == fmt_pct(last.ltv)
    assert re.fullmatch(r"\d+\.\d{2} %", _text_of(page, "hedge-ltv"))
    assert _text_of(page, "hedge-band") == last.band
    s = last.state
    for instrument, coin in (("spot", s.spot_coin), ("long_perp", s.long_perp_coin),
                             ("short_perp", s.short_perp_coin), ("quarterly", s.quarterly_coin),
                             ("put", s.put_coin), ("net_delta", last.delta_coin)):
        assert _text_of(page, "hedge-position", f' data-instrument="{instrument}"') == fmt_coin(coin)
    assert s.short_perp_coin > 0.0  # the book is hedged, so the table shows a real position
    assert _text_of(page, "hedge-loan-principal") == fmt_usd(last.principal_usd)
    assert _text_of(page, "hedge-loan-accrued") == fmt_usd(last.accrued_interest_usd)
    assert _text_of(page, "hedge-loan-interest-paid") == fmt_usd(last.interest_paid_usd)
    assert _text_of(page, "hedge-reserve") == fmt_usd(last.reserve_usd)
    assert _text_of(page, "hedge-funding") == fmt_usd(last.funding_usd)
    assert _text_of(page, "hedge-fees") == fmt_usd(last.fees_usd)

    # The KPIs on the page are compute_kpis over the same history.
    gross_1, repaid_1, funding_1 = desk_run.after_first
    desk = desk_run.desk
    expected = compute_kpis(
        [x.ts_s for x in steps], [x.equity_usd for x in steps], [x.ltv for x in steps],
        repayments_usd=desk.repaid_from_profits_usd - repaid_1,
        initial_loan_usd=DeskConfig().treasury.loan.principal_usd,
        funding_paid_usd=desk.funding_usd - funding_1,
        gross_profit_usd=desk.gross_profit_usd - gross_1)
    for name, value in expected.as_dict().items():
        shown = _text_of(page, "hedge-kpi", f' data-kpi="{name}"')
        assert shown == (f"{value:.2f}" if name == "sharpe_ratio" else fmt_pct(value)), name

    fills = [f for x in steps for f in x.fills]
    rows = re.findall(r'<tr class="hedge-fill">', _html(page))
    assert len(rows) == min(len(fills), page_mod.RECENT_FILLS)
    assert fills[-1].order_id in _html(page)
    events = [e for x in steps for e in x.events]
    assert html.escape(events[-1]) in _html(page)


def test_page_updates_when_the_view_moves_and_charts_get_the_history(periodic, desk_run):
    steps = desk_run.steps
    view = HedgeView()
    page = hedge_view_page(view)
    view.on_steps(steps[:50])
    refresh = periodic[0]["callback"]
    refresh()
    first_equity = _text_of(page, "hedge-equity")
    assert first_equity == fmt_usd(steps[49].equity_usd)
    view.on_steps(steps[50:60])
    refresh()
    assert _text_of(page, "hedge-equity") == fmt_usd(steps[59].equity_usd)
    assert _text_of(page, "hedge-ltv") == fmt_pct(steps[59].ltv)

    buffers = {s for p in page.select(pn.pane.HoloViews) for s in p.object.streams
               if isinstance(s, hv.streams.Buffer)}
    (buffer,) = buffers  # one buffer feeds both charts
    assert list(buffer.data["equity"]) == [s.equity_usd for s in steps[:60]]
    assert list(buffer.data["ltv"]) == [s.ltv for s in steps[:60]]
    assert len(page.select(pn.pane.HoloViews)) == 2


def test_page_says_not_enough_data_for_a_short_run(periodic, desk_run):
    view = HedgeView()
    page = hedge_view_page(view)
    view.on_steps(desk_run.steps[:30])  # half an hour: no daily return, no Sharpe ratio
    periodic[0]["callback"]()
    assert _text_of(page, "hedge-kpi", ' data-kpi="sharpe_ratio"') == "not enough data"
    assert math.isfinite(view.kpis().net_apr)  # computed, but half an hour annualized is noise
    assert _text_of(page, "hedge-kpi", ' data-kpi="net_apr"') == "not enough data"
    assert _text_of(page, "hedge-kpi", ' data-kpi="ltv_stability"') == fmt_pct(view.kpis().ltv_stability)


def test_hedge_page_of_a_pipeline_reads_its_view_bands_and_pause(periodic, desk_run):
    bands = LtvBandConfig(monitor_ltv=0.4, warning_ltv=0.6, critical_ltv=0.8, emergency_ltv=0.95)
    config = replace(DeskConfig(), treasury=replace(DeskConfig().treasury, bands=bands))
    desk = HedgeDesk(config, T0)
    node = HedgeNode(desk)
    view = HedgeView(node)
    pipeline = SimpleNamespace(hedge=node, views={"hedge": view},
                               config=SimpleNamespace(dashboard=SimpleNamespace(refresh_ms=300)))
    page = hedge_page(pipeline)
    assert periodic[0]["period"] == 300
    view.on_steps([desk.step(_market(T0 + 60.0, 100_000.0))])
    desk.gate.pause(T0 + 61.0, "operator", "<b>maintenance</b>")
    view.on_steps([desk.step(_market(T0 + 120.0, 100_050.0))])
    periodic[0]["callback"]()
    text = _html(page)
    # The gauge is drawn with the desk's own bands (the scale ends 0.15 past EMERGENCY).
    widths = dict(re.findall(r'data-band="(\w+)"[^>]*style="width:([0-9.]+)%', text))
    assert float(widths["MONITOR"]) == pytest.approx((0.6 - 0.4) / 1.1 * 100, abs=1e-3)
    assert 'class="hedge-paused"' in text
    assert "&lt;b&gt;maintenance&lt;/b&gt;" in text and "<b>maintenance" not in text


def test_hedge_page_says_when_the_hedge_is_disabled(periodic):
    page = hedge_page(SimpleNamespace(hedge=None, views={}))
    assert "hedge-disabled" in [c for p in page.select(pn.pane.Markdown) for c in p.css_classes]
    assert periodic == []


def test_the_app_serves_the_page_at_hedge():
    from dashboards.app import PAGES

    assert PAGES["hedge"].build is hedge_page


# --------------------------------------------------------------------------- the gauge


def test_gauge_segments_follow_the_bands_and_the_needle_the_ltv():
    gauge = ltv_gauge_html(0.7, "WARNING")
    widths = re.findall(r'data-band="(\w+)"[^>]*style="width:([0-9.]+)%;background:([^;]+);',
                        gauge)
    assert [w[0] for w in widths] == list(LTV_BANDS)
    assert [float(w[1]) for w in widths] == pytest.approx([50.0, 15.0, 10.0, 10.0, 15.0])
    assert [w[2] for w in widths] == [page_mod.BAND_COLOURS[b] for b in LTV_BANDS]
    assert re.search(r'class="hedge-ltv-needle" data-ltv="0.700000" style="[^"]*left:calc\(70.000% ',
                     gauge)
    assert re.search(r'class="hedge-ltv"[^>]*>70.00 %<', gauge)
    assert re.search(r'class="hedge-band" style="color:#d08c00;', gauge)


def test_gauge_pins_a_high_ltv_at_the_end_and_has_no_needle_when_unknown():
    assert "left:calc(100.000% " in ltv_gauge_html(3.0, "EMERGENCY")
    unknown = ltv_gauge_html(math.nan, "UNKNOWN")
    assert "hedge-ltv-needle" not in unknown and ">—<" in unknown and "nan" not in unknown


def test_formatting():
    assert fmt_usd(-1234.5) == "-$1,234.50" and fmt_usd(math.nan) == "—"
    assert fmt_pct(0.61871) == "61.87 %" and fmt_coin(0.27) == "0.2700"
    assert page_mod._kpi_text("funding_efficiency", math.nan, True) == "n/a (no gross profit)"
    assert page_mod._kpi_text("sharpe_ratio", math.inf, True).startswith("+∞")
