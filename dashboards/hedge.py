"""Hedge book page: the live hedge desk of plan 001 (models.desk) as it steps.

Served by ``hedgeflow run`` at http://127.0.0.1:5006/hedge, or on its own with
``panel serve dashboards/hedge.py``. It shows the positions per instrument and the book's net
delta, the hedge ratio, the state machine's mode, P&L, equity over time, the loan, the LTV gauge
with its bands, the reserve, funding and fees, the trading state, recent fills and decisions, and
plan 001's six KPIs. The page only reads: it polls the pipeline's ``HedgeView`` every
``refresh_ms`` from its own session callback and redraws only when the view has moved.

Values a browser test reads carry stable CSS classes: ``hedge-equity``, ``hedge-ltv``,
``hedge-band``, ``hedge-mode``, ``hedge-trading-state``, ``hedge-hedge-ratio``, ``hedge-delta``,
``hedge-position[data-instrument=...]``, ``hedge-kpi[data-kpi=...]``.
"""

from __future__ import annotations

import html
import math
from datetime import datetime, timezone

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn

from dashboards.session import session_callback
from dataflows.views import HedgeView
from models.kpis import Kpis
from models.loan import LTV_BANDS, LtvBandConfig

hv.extension("bokeh", logo=False)

BAND_COLOURS = {"SAFE": "#1b7f3b", "MONITOR": "#7a9a01", "WARNING": "#d08c00",
                "CRITICAL": "#d4440f", "EMERGENCY": "#b00020", "UNKNOWN": "#777777"}
TRADING_STATE_COLOURS = {"ACTIVE": "#1b7f3b", "REDUCING": "#d08c00", "HALTED": "#b00020"}
# The KPIs of plan 001, in its order, with how each reads (all are fractions).
KPI_LABELS = (
    ("coverage_ratio", "Coverage ratio", "repaid from profits / initial loan"),
    ("net_apr", "Net APR", "equity change / starting equity, annualized (needs 1 day)"),
    ("max_drawdown", "Max drawdown", "worst fall from a high"),
    ("sharpe_ratio", "Sharpe ratio", "daily returns, annualized (needs 2 days)"),
    ("funding_efficiency", "Funding efficiency", "funding paid / gross profit (lower is better)"),
    ("ltv_stability", "LTV stability", "share of time with LTV < 65 %"),
)
RECENT_FILLS = 15
RECENT_EVENTS = 30
NOT_ENOUGH_DATA = "not enough data"
MIN_APR_SPAN_S = 86_400.0  # the net APR is shown once the KPI series spans a day
_TABLE = 'style="border-collapse:collapse;width:100%;font-size:0.92em"'
_CELL = 'style="padding:2px 8px;border-bottom:1px solid #eee;text-align:right"'
_LEFT = 'style="padding:2px 8px;border-bottom:1px solid #eee;text-align:left"'


# --------------------------------------------------------------------------- formatting


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def fmt_usd(x: float) -> str:
    """``$1,234.56`` (``-$12.00`` when negative); an em dash when unknown."""
    if not _finite(x):
        return "—"
    return f"-${-x:,.2f}" if x < 0 else f"${x:,.2f}"


def fmt_coin(x: float) -> str:
    return f"{x:,.4f}" if _finite(x) else "—"


def fmt_pct(x: float, digits: int = 2) -> str:
    """A fraction as a percentage: 0.6187 -> ``61.87 %``."""
    return f"{x * 100:.{digits}f} %" if _finite(x) else "—"


def _utc(ts_s: float) -> str:
    if not _finite(ts_s):
        return "—"
    return datetime.fromtimestamp(ts_s, tz=timezone.utc).strftime("%H:%M:%S UTC")


def _utc_day(ts_s: float) -> str:
    if not _finite(ts_s):
        return "—"
    return datetime.fromtimestamp(ts_s, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _utc_ms(epoch_s) -> np.ndarray:
    """Naive UTC datetimes at millisecond precision (Bokeh's resolution)."""
    return np.round(np.asarray(epoch_s, dtype=np.float64) * 1e3).astype("datetime64[ms]")


def _value(label: str, css: str, text: str, colour: str = "") -> str:
    style = f"color:{colour};" if colour else ""
    return (f'<div style="display:inline-block;min-width:9em;margin:0 1.2em 0.6em 0">'
            f'<div style="color:#666;font-size:0.85em">{html.escape(label)}</div>'
            f'<div class="{css}" style="{style}font-size:1.35em;font-weight:600">'
            f"{html.escape(text)}</div></div>")


# --------------------------------------------------------------------------- panes' HTML


def summary_html(step, realized_pnl_usd: float, pause=None) -> str:
    """The book at a glance: equity, mode, trading state, hedge ratio, delta, spot and P&L.
    ``pause``: the safety gate's ``PauseState`` (None when unknown)."""
    state_colour = TRADING_STATE_COLOURS.get(step.trading_state, "#444")
    paused = ""
    if pause is not None and pause.paused:
        paused = (f'<div class="hedge-paused" style="color:#b00020;font-weight:600">trading '
                  f"paused by {html.escape(pause.who)} since {_utc(pause.since_s)}: "
                  f"{html.escape(pause.why)}</div>")
    return (
        '<div class="hedge-summary">'
        + _value("Equity", "hedge-equity", fmt_usd(step.equity_usd))
        + _value("Mode", "hedge-mode", step.mode)
        + _value("Trading state", "hedge-trading-state", step.trading_state, state_colour)
        + _value("Hedge ratio", "hedge-hedge-ratio",
                 f"{step.hedge_ratio:.2f}" if _finite(step.hedge_ratio) else "—")
        + _value("Net delta (coin)", "hedge-delta", fmt_coin(step.delta_coin))
        + _value("Spot", "hedge-spot", fmt_usd(step.spot_usd))
        + _value("Unrealized P&L", "hedge-unrealized", fmt_usd(step.unrealized_pnl_usd))
        + _value("Realized P&L", "hedge-realized", fmt_usd(realized_pnl_usd))
        + paused
        + f'<div style="color:#777;font-size:0.85em">last step {_utc(step.ts_s)}</div>'
        "</div>"
    )


def positions_html(step) -> str:
    """One row per instrument (coins, entry price, USD notional at spot) and the net delta."""
    s, spot = step.state, step.spot_usd
    rows = (
        ("spot", "Spot collateral Q_B", s.spot_coin, math.nan, ""),
        ("long_perp", "Long perpetual Q_L", s.long_perp_coin, s.long_perp_entry_usd, ""),
        ("short_perp", "Short perpetual Q_S", s.short_perp_coin, s.short_perp_entry_usd, ""),
        ("quarterly", "Quarterly future", s.quarterly_coin, s.quarterly_entry_usd,
         "signed: negative is short"),
        ("put", "Protective put", s.put_coin, s.put_entry_usd,
         f"strike {fmt_usd(s.put_strike_usd)}, expiry {_utc_day(s.put_expiry_ts_s)}"
         if s.put_coin > 0.0 else ""),
    )
    body = "".join(
        f'<tr><td {_LEFT}>{label}</td>'
        f'<td class="hedge-position" data-instrument="{key}" {_CELL}>{fmt_coin(coin)}</td>'
        f"<td {_CELL}>{fmt_usd(coin * spot) if _finite(spot) else '—'}</td>"
        f"<td {_CELL}>{fmt_usd(entry)}</td><td {_LEFT}>{html.escape(note)}</td></tr>"
        for key, label, coin, entry, note in rows
    )
    body += (f'<tr style="font-weight:600"><td {_LEFT}>Net delta (puts included)</td>'
             f'<td class="hedge-position" data-instrument="net_delta" {_CELL}>'
             f"{fmt_coin(step.delta_coin)}</td>"
             f"<td {_CELL}>{fmt_usd(step.delta_coin * spot) if _finite(spot) else '—'}</td>"
             f"<td {_CELL}></td><td {_LEFT}>leverage {s.leverage:g}x</td></tr>")
    return (f'<div class="hedge-positions"><h3 style="margin:0.2em 0">Positions</h3>'
            f"<table {_TABLE}><tr><th {_LEFT}>instrument</th><th {_CELL}>coin</th>"
            f"<th {_CELL}>USD at spot</th><th {_CELL}>entry (USD)</th><th {_LEFT}></th></tr>"
            f"{body}</table></div>")


def gauge_end(bands: LtvBandConfig) -> float:
    """Where the LTV gauge's (and chart's) scale ends: 1.0, or 0.15 past EMERGENCY if higher."""
    return max(1.0, bands.emergency_ltv + 0.15)


def ltv_gauge_html(ltv: float, band: str, bands: LtvBandConfig = LtvBandConfig()) -> str:
    """A horizontal gauge: the five bands of ``bands`` as coloured segments from LTV 0 to the
    scale's end (past the EMERGENCY bound), a needle at ``ltv`` (pinned at the end above it;
    none when unknown), and the LTV and its band as text."""
    scale_end = gauge_end(bands)
    edges = (0.0, *bands.bounds, scale_end)
    segments = "".join(
        f'<div class="hedge-ltv-segment" data-band="{name}" '
        f'title="{name}: {fmt_pct(lo, 0)} to {fmt_pct(hi, 0) if i < 4 else "above"}" '
        f'style="width:{(hi - lo) / scale_end * 100:.3f}%;background:{BAND_COLOURS[name]};'
        f'color:white;font-size:0.75em;text-align:center;line-height:22px;overflow:hidden">'
        f"{name}</div>"
        for i, (name, lo, hi) in enumerate(zip(LTV_BANDS, edges, edges[1:]))
    )
    ticks = "".join(
        f'<span style="position:absolute;left:{edge / scale_end * 100:.3f}%;'
        f'transform:translateX(-50%);font-size:0.75em;color:#555">{edge * 100:.0f}%</span>'
        for edge in edges
    )
    needle = ""
    if _finite(ltv):
        at = min(max(ltv, 0.0), scale_end) / scale_end * 100
        needle = (f'<div class="hedge-ltv-needle" data-ltv="{ltv:.6f}" style="position:absolute;'
                  f'left:calc({at:.3f}% - 2px);top:-6px;width:4px;height:34px;'
                  f'background:#111;border-radius:2px"></div>')
    colour = BAND_COLOURS.get(band, "#444")
    return (
        '<div class="hedge-ltv-gauge"><h3 style="margin:0.2em 0">Loan-to-value</h3>'
        f'<div style="margin-bottom:6px"><span class="hedge-ltv" style="font-size:1.6em;'
        f'font-weight:600">{fmt_pct(ltv)}</span> '
        f'<span class="hedge-band" style="color:{colour};font-weight:600;margin-left:0.5em">'
        f"{html.escape(band)}</span></div>"
        f'<div style="position:relative;margin:8px 0 4px 0">'
        f'<div style="display:flex;height:22px;border-radius:4px;overflow:hidden">{segments}</div>'
        f"{needle}</div>"
        f'<div style="position:relative;height:1.2em">{ticks}</div>'
        "</div>"
    )


def treasury_html(step) -> str:
    """The loan (principal, accrued interest, paid), the reserve, funding, fees and cash."""
    rows = (
        ("loan-principal", "Loan principal outstanding", fmt_usd(step.principal_usd)),
        ("loan-accrued", "Accrued interest", fmt_usd(step.accrued_interest_usd)),
        ("loan-outstanding", "Loan outstanding", fmt_usd(step.loan_usd)),
        ("loan-interest-paid", "Interest paid", fmt_usd(step.interest_paid_usd)),
        ("loan-principal-paid", "Principal paid", fmt_usd(step.principal_paid_usd)),
        ("reserve", "Reserve", fmt_usd(step.reserve_usd)),
        ("reserve-deployed", "Reserve deployed (total)", fmt_usd(step.reserve_deployed_usd)),
        ("funding", "Funding paid (negative: received)", fmt_usd(step.funding_usd)),
        ("fees", "Fees paid", fmt_usd(step.fees_usd)),
        ("cash", "Cash", fmt_usd(step.cash_usd)),
        ("position-value", "Collateral and puts at market", fmt_usd(step.position_value_usd)),
    )
    body = "".join(f'<tr><td {_LEFT}>{label}</td><td class="hedge-{key}" {_CELL}>{text}</td></tr>'
                   for key, label, text in rows)
    return (f'<div class="hedge-treasury"><h3 style="margin:0.2em 0">Loan and treasury</h3>'
            f"<table {_TABLE}>{body}</table></div>")


def _kpi_text(name: str, value: float, kpis_known: bool, span_s: float = math.inf) -> str:
    if not kpis_known:
        return NOT_ENOUGH_DATA
    if name == "net_apr" and span_s < MIN_APR_SPAN_S:
        return NOT_ENOUGH_DATA  # a few minutes' change, annualized, is noise
    if math.isinf(value):
        return "+∞ (constant returns)" if value > 0 else "−∞ (constant returns)"
    if math.isnan(value):
        return "n/a (no gross profit)" if name == "funding_efficiency" else NOT_ENOUGH_DATA
    return f"{value:.2f}" if name == "sharpe_ratio" else fmt_pct(value)


def kpis_html(kpis: Kpis | None, n_points: int, span_s: float) -> str:
    """Plan 001's six KPIs over the view's KPI series (``n_points`` over ``span_s``)."""
    values = kpis.as_dict() if kpis is not None else {}
    body = "".join(
        f'<tr><td {_LEFT}>{label}</td><td class="hedge-kpi" data-kpi="{name}" {_CELL}>'
        f"{_kpi_text(name, values.get(name, math.nan), kpis is not None, span_s)}</td>"
        f'<td {_LEFT} ><span style="color:#777">{note}</span></td></tr>'
        for name, label, note in KPI_LABELS
    )
    hours = span_s / 3600.0
    return (f'<div class="hedge-kpis"><h3 style="margin:0.2em 0">KPIs (plan 001)</h3>'
            f"<table {_TABLE}>{body}</table>"
            f'<div style="color:#777;font-size:0.85em">over {n_points} point(s) spanning '
            f"{hours:.2f} h since this run's desk started</div></div>")


def fills_html(fills, limit: int = RECENT_FILLS) -> str:
    """The most recent fills, newest first."""
    recent = list(fills)[-limit:][::-1]
    if not recent:
        return ('<div class="hedge-fills"><h3 style="margin:0.2em 0">Recent fills</h3>'
                '<div style="color:#777">no fills yet</div></div>')
    body = "".join(
        f'<tr class="hedge-fill"><td {_LEFT}>{_utc(f.ts_s)}</td><td {_LEFT}>{html.escape(f.kind)}</td>'
        f"<td {_LEFT}>{html.escape(f.side)}</td><td {_CELL}>{fmt_coin(f.quantity_coin)}</td>"
        f"<td {_CELL}>{fmt_usd(f.price_usd)}</td><td {_CELL}>{fmt_usd(f.fee_usd)}</td>"
        f"<td {_LEFT}>{html.escape(f.venue)}</td><td {_LEFT}>{html.escape(f.order_id)}</td></tr>"
        for f in recent
    )
    return (f'<div class="hedge-fills"><h3 style="margin:0.2em 0">Recent fills</h3>'
            f"<table {_TABLE}><tr><th {_LEFT}>time</th><th {_LEFT}>kind</th><th {_LEFT}>side</th>"
            f"<th {_CELL}>coin</th><th {_CELL}>price</th><th {_CELL}>fee</th><th {_LEFT}>venue</th>"
            f"<th {_LEFT}>order</th></tr>{body}</table></div>")


def events_html(events, limit: int = RECENT_EVENTS) -> str:
    """The desk's most recent decisions (engine, LTV and safety events), newest first."""
    recent = list(events)[-limit:][::-1]
    if not recent:
        return ('<div class="hedge-events"><h3 style="margin:0.2em 0">Recent decisions</h3>'
                '<div style="color:#777">no decisions yet</div></div>')
    body = "".join(f'<tr class="hedge-event"><td {_LEFT}>{_utc(ts)}</td>'
                   f"<td {_LEFT}>{html.escape(text)}</td></tr>" for ts, text in recent)
    return (f'<div class="hedge-events"><h3 style="margin:0.2em 0">Recent decisions</h3>'
            f"<table {_TABLE}>{body}</table></div>")


# --------------------------------------------------------------------------- the page


class _Charts:
    """Equity and LTV over time (with the LTV bands shaded), owned by one session."""

    def __init__(self, bands: LtvBandConfig, length: int) -> None:
        empty = pd.DataFrame({"time": np.array([], dtype="datetime64[ms]"), "equity": [],
                              "ltv": []})
        self.buffer = hv.streams.Buffer(empty, length=length, index=False)
        self.last_ts = float("-inf")
        edges = (0.0, *bands.bounds)
        scale_end = gauge_end(bands)

        def equity_chart(data):
            return hv.Curve(data, "time", "equity").opts(
                color="#4c78a8", line_width=2, height=260, responsive=True, framewise=True,
                xlabel="time (UTC)", ylabel="equity (USD)", title="Desk equity")

        def ltv_chart(data):
            # The axis shows every band (to the gauge's end), and more only when the LTV is there.
            highest = float(np.nanmax(data["ltv"])) if data["ltv"].notna().any() else 0.0
            top = max(scale_end, 1.05 * highest)
            shades = [hv.HSpan(lo, hi).opts(color=BAND_COLOURS[name], alpha=0.15)
                      for name, lo, hi in zip(LTV_BANDS, edges, (*edges[1:], top))]
            curve = hv.Curve(data, "time", "ltv").opts(color="#111", line_width=2)
            return hv.Overlay([*shades, curve]).opts(
                height=260, responsive=True, framewise=True, ylim=(0.0, top),
                xlabel="time (UTC)", ylabel="LTV", title="Loan-to-value and its bands")

        self.equity = pn.pane.HoloViews(hv.DynamicMap(equity_chart, streams=[self.buffer]),
                                        sizing_mode="stretch_width", linked_axes=False)
        self.ltv = pn.pane.HoloViews(hv.DynamicMap(ltv_chart, streams=[self.buffer]),
                                     sizing_mode="stretch_width", linked_axes=False)

    def update(self, view: HedgeView) -> None:
        new = view.since(self.last_ts)
        if not new:
            return
        self.last_ts = new[-1][0]
        ts, equity, ltv = zip(*((row[0], row[1], row[2]) for row in new))
        self.buffer.send(pd.DataFrame({"time": _utc_ms(ts), "equity": np.asarray(equity, float),
                                       "ltv": np.asarray(ltv, float)}))


WAITING_HTML = '<div class="hedge-waiting">Waiting for the hedge desk\'s first step…</div>'


def hedge_view_page(view: HedgeView, refresh_ms: int = 500,
                    bands: LtvBandConfig | None = None) -> pn.viewable.Viewable:
    """A new page (one per browser session) polling ``view``; ``bands`` the treasury's LTV bands
    (by default the desk's, else plan 001's)."""
    if bands is None:
        node = view.node
        bands = node.desk.config.treasury.bands if node is not None else LtvBandConfig()
    # The summary pane is there from the first render and only its text changes: a layout whose
    # children are swapped from a periodic callback was sometimes never redrawn by the browser.
    summary = pn.pane.HTML(WAITING_HTML, sizing_mode="stretch_width")
    gauge = pn.pane.HTML(ltv_gauge_html(math.nan, "UNKNOWN", bands), sizing_mode="stretch_width")
    positions = pn.pane.HTML("", sizing_mode="stretch_width")
    treasury = pn.pane.HTML("", sizing_mode="stretch_width")
    kpis = pn.pane.HTML(kpis_html(None, 0, 0.0), sizing_mode="stretch_width")
    fills = pn.pane.HTML(fills_html(()), sizing_mode="stretch_width")
    events = pn.pane.HTML(events_html(()), sizing_mode="stretch_width")
    charts = _Charts(bands, view.history.maxlen or 3600)
    seen = {"version": -1}

    def refresh() -> None:
        if view.version == seen["version"] or view.latest is None:
            return
        seen["version"] = view.version
        step = view.latest
        pause = view.node.desk.gate.pause_state if view.node is not None else None
        summary.object = summary_html(step, view.realized_pnl_usd, pause)
        gauge.object = ltv_gauge_html(step.ltv, step.band, bands)
        positions.object = positions_html(step)
        treasury.object = treasury_html(step)
        kpis.object = kpis_html(view.kpis(), *view.kpi_span())
        fills.object = fills_html(view.fills)
        events.object = events_html(view.events)
        charts.update(view)

    refresh()
    session_callback(refresh, refresh_ms)
    return pn.Column(
        pn.pane.Markdown("# hedgeflow · hedge book\nPlan 001's hedge desk on paper venues: "
                         "the collateral, its futures and puts, the loan against it, and how "
                         "the desk is doing."),
        summary,
        pn.Row(pn.Column(gauge, treasury, sizing_mode="stretch_width"),
               pn.Column(positions, kpis, sizing_mode="stretch_width"),
               sizing_mode="stretch_width"),
        pn.Row(charts.equity, charts.ltv, sizing_mode="stretch_width"),
        pn.Row(fills, events, sizing_mode="stretch_width"),
        sizing_mode="stretch_width",
    )


def hedge_page(pipeline) -> pn.viewable.Viewable:
    """The hedge book of ``pipeline`` (its ``hedge`` view, at the dashboard's refresh), or a note
    when the hedge desk is disabled."""
    if pipeline.hedge is None:
        return pn.Column(
            pn.pane.Markdown("# hedgeflow · hedge book"),
            pn.pane.Markdown("The hedge desk is disabled in this run: set `[hedge] enabled = "
                             "true` in the configuration (or `HEDGEFLOW_HEDGE__ENABLED=true`) "
                             "to run it.", css_classes=["hedge-disabled"]),
            sizing_mode="stretch_width",
        )
    return hedge_view_page(pipeline.views["hedge"], pipeline.config.dashboard.refresh_ms)


if pn.state.served:
    # `panel serve dashboards/hedge.py`: one pipeline shared by the sessions of this process.
    from dashboards.session import serve_page

    serve_page(hedge_page, "Hedge book")
