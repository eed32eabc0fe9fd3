"""Oracle page: the live oracle price per asset, its confidence band and status; each source's
price against the consensus, its reliability and freshness; the price last confirmed on chain; the
oracle's recent alerts.

Served by ``hedgeflow run`` at http://127.0.0.1:5006/oracle, or on its own with
``panel serve dashboards/oracle.py`` (which then starts the shared pipeline in the Panel process).
The page only reads: it polls an ``OracleView`` every ``refresh_ms`` from its own session callback,
so nothing outside the session touches its Bokeh models.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn

from dashboards.session import session_callback
from dataflows.views import OracleView

hv.extension("bokeh", logo=False)

_STATUS_COLOURS = {"ok": "#1b7f3b", "degraded": "#b26a00", "halted": "#b00020"}


def _utc_ms(epoch_s) -> np.ndarray:
    """Naive UTC datetimes at millisecond precision (Bokeh's resolution; finer is discarded)."""
    return np.round(np.asarray(epoch_s, dtype=np.float64) * 1e3).astype("datetime64[ms]")


def _fmt_price(x: float) -> str:
    return "—" if x != x else f"{x:,.2f}"  # NaN: no price


def _card_html(p) -> str:
    when = datetime.fromtimestamp(p.ts, tz=timezone.utc).strftime("%H:%M:%S UTC")
    colour = _STATUS_COLOURS.get(p.status, "#444")
    reason = f" — {html.escape(p.reason)}" if p.reason else ""
    sources = ", ".join(html.escape(s) for s in p.sources) or "none"
    return (
        f'<div class="oracle-card" data-asset="{html.escape(p.asset)}">'
        f'<div style="font-size:1.1em;color:#555">{html.escape(p.asset)} / USD</div>'
        # data-ts: the price's epoch seconds, for tick-to-screen timing (benchmarks/bench_dashboards.py)
        f'<div class="oracle-price" data-asset="{html.escape(p.asset)}" data-ts="{p.ts:.3f}" '
        f'style="font-size:2.2em;font-weight:600">${_fmt_price(p.price_usd)}</div>'
        f'<div>± {_fmt_price(p.confidence_usd)} USD · {p.n_sources} source(s) · '
        f'<span class="oracle-status" style="color:{colour};font-weight:600">'
        f"{html.escape(p.status)}</span>"
        f"{reason}</div>"
        f'<div style="color:#777;font-size:0.85em">sources: {sources} · {when}</div>'
        "</div>"
    )


def _fmt_bps(x: float) -> str:
    return "—" if x != x else f"{x:+.1f}"


def sources_html(asset: str, sources, now_s: float) -> str:
    """Each source of the asset's latest price (models.oracle.VenueComparison rows): its mid,
    deviation from the consensus and own spread (bps), age of its quote (s), its status (used,
    rejected, stale, with the reason), reliability (0..1) and weight in the price."""
    if not sources:
        return ""
    rows = "".join(
        f'<tr class="oracle-source" data-source="{html.escape(v.source)}" '
        f'data-status="{html.escape(v.status)}">'
        f"<td>{html.escape(v.source)}</td><td>{_fmt_price(v.mid_usd)}</td>"
        f"<td>{_fmt_bps(v.deviation_bps)}</td><td>{_fmt_bps(v.spread_bps)}</td>"
        f"<td>{max(now_s - v.quote_ts, 0.0):.1f}</td>"
        f'<td>{html.escape(v.status)}{" — " + html.escape(v.reason) if v.reason else ""}</td>'
        f"<td>{v.reliability:.2f}</td><td>{100.0 * v.weight:.0f} %</td></tr>"
        for v in sorted(sources, key=lambda v: v.source))
    return (f'<table class="oracle-sources" data-asset="{html.escape(asset)}" '
            'style="font-size:0.85em;border-collapse:collapse;width:100%">'
            "<tr><th>source</th><th>mid (USD)</th><th>vs price (bps)</th><th>spread (bps)</th>"
            "<th>age (s)</th><th>status</th><th>reliability</th><th>weight</th></tr>"
            f"{rows}</table>")


def on_chain_html(asset: str, confirmed, now_s: float) -> str:
    """The price last confirmed on chain for the asset (and its age), or that there is none."""
    if confirmed is None:
        return (f'<div class="oracle-onchain" data-asset="{html.escape(asset)}" '
                'style="color:#777">on chain: nothing confirmed yet</div>')
    price, ts = confirmed
    return (f'<div class="oracle-onchain" data-asset="{html.escape(asset)}">on chain: '
            f"${_fmt_price(price)}, confirmed {max(now_s - ts, 0.0):.0f} s ago</div>")


def alerts_html(alerts) -> str:
    """The oracle's recent alerts, newest first."""
    if not alerts:
        return '<div class="oracle-alerts" style="color:#777">No oracle alerts.</div>'
    rows = "".join(
        f'<li class="oracle-alert" data-severity="{html.escape(a.severity)}">'
        f'{datetime.fromtimestamp(a.ts, tz=timezone.utc).strftime("%H:%M:%S")} '
        f"<b>{html.escape(a.severity)}</b> {html.escape(a.kind)}: {html.escape(a.message)}</li>"
        for a in reversed(alerts))
    return f'<ul class="oracle-alerts" style="font-size:0.85em">{rows}</ul>'


class _AssetPanel:
    """One asset's card, sources table and streaming chart, owned by one session."""

    def __init__(self, asset: str) -> None:
        self.asset = asset
        self.last_ts = float("-inf")  # of the last price charted
        self.card_ts = float("-inf")  # of the price on the card
        empty = pd.DataFrame(
            {"time": np.array([], dtype="datetime64[ms]"), "price": [], "lo": [], "hi": []}
        )
        self.buffer = hv.streams.Buffer(empty, length=3600, index=False)
        self.card = pn.pane.HTML("", sizing_mode="stretch_width")
        self.sources = pn.pane.HTML("", sizing_mode="stretch_width")

        def chart(data):
            band = hv.Area(data, "time", ["lo", "hi"]).opts(alpha=0.25, color="#4c78a8")
            line = hv.Curve(data, "time", "price").opts(color="#4c78a8", line_width=2)
            return (band * line).opts(
                height=260, responsive=True, xlabel="time (UTC)", ylabel=f"{asset} (USD)",
                title=f"{asset} oracle price ± confidence", framewise=True,
            )

        self.chart = pn.pane.HoloViews(
            hv.DynamicMap(chart, streams=[self.buffer]),
            sizing_mode="stretch_width",
            linked_axes=False,  # BTC near 97,000 and ETH near 3,100 each need their own y-axis
        )
        self.layout = pn.Column(self.card, self.chart, self.sources, sizing_mode="stretch_width")

    def update_card(self, view: OracleView) -> None:
        latest = view.latest().get(self.asset)
        if latest is not None and latest.ts > self.card_ts:
            self.card_ts = latest.ts
            self.card.object = _card_html(latest) + on_chain_html(
                self.asset, view.on_chain().get(self.asset), latest.ts)

    def update_sources(self, view: OracleView) -> None:
        self.sources.object = sources_html(self.asset, view.sources(self.asset), self.card_ts)

    def update_chart(self, view: OracleView) -> None:
        new = view.history(self.asset, since_ts=self.last_ts)
        if not new:
            return
        self.last_ts = new[-1].ts
        priced = [p for p in new if p.price_usd == p.price_usd]
        if priced:
            self.buffer.send(
                pd.DataFrame(
                    {
                        "time": _utc_ms([p.ts for p in priced]),
                        "price": [p.price_usd for p in priced],
                        "lo": [p.price_usd - p.confidence_usd for p in priced],
                        "hi": [p.price_usd + p.confidence_usd for p in priced],
                    }
                )
            )


# The charts redraw at most this often: a chart update costs the server milliseconds per session
# (HoloViews re-renders the plot), a card a fraction of one, and the card is what a price's
# tick-to-screen latency is read on.
CHART_REFRESH_MS = 1_000
ORACLE_ALERTS_SHOWN = 10


def oracle_view_page(view: OracleView, refresh_ms: int = 500, alerts=None) -> pn.viewable.Viewable:
    """A new page (one per browser session) polling ``view``: the cards every ``refresh_ms``,
    the charts, source tables and the ``alerts`` view's oracle alerts every
    ``max(refresh_ms, CHART_REFRESH_MS)``."""
    panels: dict[str, _AssetPanel] = {}
    waiting = pn.pane.Markdown("Waiting for the first oracle price…", css_classes=["oracle-waiting"])
    cards = pn.Column(waiting, sizing_mode="stretch_width")

    def refresh() -> None:
        for asset in view.assets:
            if asset not in panels:
                panels[asset] = _AssetPanel(asset)
                if waiting in cards.objects:
                    cards.remove(waiting)
                cards.append(panels[asset].layout)
            panels[asset].update_card(view)

    alert_pane = pn.pane.HTML(alerts_html(()), sizing_mode="stretch_width")

    def refresh_charts() -> None:
        for panel in panels.values():
            panel.update_chart(view)
            panel.update_sources(view)
        if alerts is not None:
            oracle_alerts = [a for a in alerts.recent(limit=200) if a.kind.startswith("oracle")]
            alert_pane.object = alerts_html(oracle_alerts[-ORACLE_ALERTS_SHOWN:])

    refresh()
    refresh_charts()
    session_callback(refresh, refresh_ms)
    session_callback(refresh_charts, max(int(refresh_ms), CHART_REFRESH_MS))
    return pn.Column(
        pn.pane.Markdown("# hedgeflow · oracle\nRobust consensus of every fresh spot source, per asset, with its confidence band."),
        cards,
        pn.pane.Markdown("### Oracle alerts"),
        alert_pane,
        sizing_mode="stretch_width",
    )


def oracle_page(pipeline) -> pn.viewable.Viewable:
    """The oracle page of ``pipeline`` (its ``oracle`` and ``alerts`` views, at the dashboard's
    refresh)."""
    return oracle_view_page(pipeline.views["oracle"], pipeline.config.dashboard.refresh_ms,
                            pipeline.views["alerts"])


if pn.state.served:
    # `panel serve dashboards/oracle.py`: one pipeline shared by the sessions of this process.
    from dashboards.session import serve_page

    serve_page(oracle_page, "Oracle")
