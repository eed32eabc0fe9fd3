"""Volatility page: the implied-volatility surface, its smiles against the live option book, the
ATM term structure, realized against implied volatility, and the HAR filter's forecast with its
anomalies, per asset.

Served by ``hedgeflow run`` at http://127.0.0.1:5006/volatility, or on its own with
``panel serve dashboards/volatility.py``. The page only reads: each session polls the pipeline's
views (``analytics``: volatility estimates and surface fits; ``options``: the live option book;
``oracle``: prices for the HAR filter; ``alerts``) every ``refresh_ms`` from its own callback and
redraws a chart only when what it shows has changed.

Conventions: volatilities are annualized fractions (0.55 is 55 %); log-moneyness is
``k = ln(K / F)`` on each expiry's forward; time to expiry is in years of 365 days. The 3D surface
is an ECharts-GL surface (Panel bundles echarts-gl: Bokeh has no 3D); the other charts are
HoloViews on Bokeh.
"""

from __future__ import annotations

import html
import math
from collections import deque
from datetime import datetime, timezone

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn

from dashboards.session import session_callback
from dataflows.hedging import THIRTY_DAYS_YEARS  # the implied vol the hedge desk reads
from models.option_book import SECONDS_PER_YEAR
from models.volatility import bars_per_year, fit_har, har_forecast, har_scores, realized_variance

hv.extension("bokeh", logo=False)

HAR_LAGS = (1, 5, 22)  # Corsi's daily / weekly / monthly, here in periods of the volatility bar
HAR_MIN_PERIODS = HAR_LAGS[-1] + len(HAR_LAGS) + 3  # what fit_har needs for a one-step model
SURFACE_K_POINTS = 41
SURFACE_T_POINTS = 30
SURFACE_MAX_SD = 4.0  # the surface is drawn within this many ATM standard deviations per expiry
_ALERT_WORDS = ("volatility", "anomaly")
_EMPTY_TIME = np.array([], dtype="datetime64[ms]")


# --------------------------------------------------------------------------- the numbers shown


def atm_vol_at(record, years: float) -> float:
    """ATM implied vol (annualized) ``years`` ahead of a fit, from its ``SurfaceRecord``: total
    variance ``vol^2 T`` linear in ``T`` between the fitted expiries (how the fitted surfaces
    interpolate at ``k = 0``), the first expiry's vol before it and the last's after it (their
    extrapolation keeps the ATM vol flat). NaN when the record has no usable expiry."""
    T = np.asarray(record.expiry_years, dtype=np.float64)
    vol = np.asarray(record.atm_vol_annual, dtype=np.float64)
    ok = np.isfinite(T) & np.isfinite(vol) & (T > 0.0)
    T, vol = T[ok], vol[ok]
    if not T.size:
        return math.nan
    if years <= T[0]:
        return float(vol[0])
    if years >= T[-1]:
        return float(vol[-1])
    return math.sqrt(float(np.interp(years, T, vol * vol * T)) / years)


def surface_grid(fit, atm_ref_years: float = THIRTY_DAYS_YEARS):
    """The fitted surface on a grid: ``(k, T, iv)`` with ``k`` log-moneyness, ``T`` years (the
    fitted expiries and an even grid between the first and last) and ``iv[i, j]`` the implied vol
    at ``(k[j], T[i])``, NaN beyond ``SURFACE_MAX_SD`` ATM standard deviations of expiry ``T[i]``
    (a one-day option's wings reach vols that would flatten the rest of the picture). The ``k``
    range spans that many standard deviations at ``atm_ref_years`` (within [0.1, 1.5])."""
    years = np.asarray(fit.expiry_years, dtype=np.float64)
    T = np.unique(np.concatenate([years, np.linspace(years[0], years[-1], SURFACE_T_POINTS)]))
    ref = float(np.clip(atm_ref_years, years[0], years[-1]))
    k_max = float(np.clip(SURFACE_MAX_SD * float(fit.atm_vol(ref)) * math.sqrt(ref), 0.1, 1.5))
    k = np.linspace(-k_max, k_max, SURFACE_K_POINTS)
    iv = np.asarray(fit.implied_vol(k[None, :], T[:, None]), dtype=np.float64)
    sd = np.asarray(fit.atm_vol(T), dtype=np.float64) * np.sqrt(T)
    iv = np.where(np.abs(k[None, :]) <= SURFACE_MAX_SD * sd[:, None], iv, np.nan)
    return k, T, iv


def surface_option(k, T, iv, title: str) -> dict:
    """The ECharts-GL option of a surface grid (``surface_grid``); NaN cells are left out."""
    finite = iv[np.isfinite(iv)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    data = [[round(float(kj), 5), round(float(ti), 6),
             round(float(v), 5) if math.isfinite(v) else "-"]
            for ti, row in zip(T, iv) for kj, v in zip(k, row)]
    return {
        "title": {"text": title, "left": "center", "textStyle": {"fontSize": 14}},
        "tooltip": {},
        "visualMap": {"show": False, "dimension": 2, "min": lo, "max": max(hi, lo + 1e-6),
                      "inRange": {"color": ["#313695", "#4575b4", "#74add1", "#abd9e9", "#fee090",
                                            "#fdae61", "#f46d43", "#d73027", "#a50026"]}},
        "xAxis3D": {"type": "value", "name": "ln(K/F)"},
        "yAxis3D": {"type": "value", "name": "T (years)"},
        "zAxis3D": {"type": "value", "name": "implied vol"},
        "grid3D": {"viewControl": {"projection": "perspective", "distance": 220}},
        "series": [{"type": "surface", "name": "implied vol", "shading": "color",
                    "wireframe": {"show": True}, "data": data}],
    }


def smile_frames(fit, fit_ts: float, expiry_utc: float, snapshot, n_points: int = 81):
    """One expiry's smile: ``(quotes, curve)``. ``quotes`` has a row per out-of-the-money option
    of the live book at that expiry (``k = ln(K/F)`` on its own forward, ``bid_vol``,
    ``ask_vol``, ``mid_vol``, ``strike_usd``); ``curve`` the fitted vol on a ``k`` grid spanning
    the quotes (or ±3 ATM standard deviations without quotes), at the expiry's time from the fit."""
    years = (expiry_utc - fit_ts) / SECONDS_PER_YEAR
    quotes = pd.DataFrame({"k": [], "bid_vol": [], "ask_vol": [], "mid_vol": [], "strike_usd": []})
    if snapshot is not None and len(snapshot):
        at = np.abs(snapshot.expiry_utc - expiry_utc) < 3_600.0
        quotes = pd.DataFrame({
            "k": np.log(snapshot.strike_usd[at] / snapshot.forward_usd[at]),
            "bid_vol": snapshot.bid_vol[at], "ask_vol": snapshot.ask_vol[at],
            "mid_vol": snapshot.mid_vol[at], "strike_usd": snapshot.strike_usd[at],
        })
    if len(quotes):
        lo, hi = float(quotes["k"].min()), float(quotes["k"].max())
        pad = 0.05 * max(hi - lo, 0.02)
        lo, hi = lo - pad, hi + pad
    else:
        half = 3.0 * float(fit.atm_vol(years)) * math.sqrt(max(years, 1e-6))
        lo, hi = -half, half
    k = np.linspace(lo, hi, n_points)
    curve = pd.DataFrame({"k": k, "fit_vol": np.asarray(fit.implied_vol(k, years), dtype=np.float64)})
    return quotes, curve


def har_frame(ts_s, price_usd, period_s: float, anomaly_z: float):
    """HAR-RV (``models.volatility.fit_har``, lags ``HAR_LAGS`` in periods of ``period_s``) on the
    realized variance of each complete period of these prices (in time order).

    Returns ``(frame, next_vol_annual, status)``: ``frame`` has per period its start (``time``),
    the realized vol, the filter's one-step forecast made before it and the surprise ``z`` (all
    vols annualized; NaN where no forecast exists), ``anomaly`` where ``|z| > anomaly_z``;
    ``next_vol_annual`` is the forecast for the period after the last complete one (NaN when the
    filter cannot be fitted yet, ``status`` then says why)."""
    ts = np.asarray(ts_s, dtype=np.float64)
    price = np.asarray(price_usd, dtype=np.float64)
    ok = np.isfinite(ts) & np.isfinite(price) & (price > 0.0)
    ts, price = ts[ok], price[ok]
    empty = pd.DataFrame({"time": _EMPTY_TIME, "realized_vol": [], "forecast_vol": [], "z": [],
                          "anomaly": np.array([], dtype=bool)})
    rv = realized_variance(ts, price, period_s)
    if len(ts):  # the first and the still open periods are partial: their variance would read low
        complete = (rv.period_start_s >= ts[0]) & (rv.period_start_s + period_s <= ts[-1])
        rv = type(rv)(*(column[complete] for column in rv))
    n = len(rv.variance)
    if n < HAR_MIN_PERIODS:
        return empty, math.nan, (f"the HAR filter needs {HAR_MIN_PERIODS} periods of "
                                 f"{period_s:g} s of oracle prices, has {n}")
    per_year = bars_per_year(period_s)
    try:
        fit = fit_har(rv.variance, lags=HAR_LAGS, transform="vol")
        scores = har_scores(fit, rv.variance)
        next_var = float(har_forecast(fit, rv.variance, 1)[0])
    except ValueError as exc:  # e.g. constant prices: nothing to regress
        return empty, math.nan, f"the HAR filter cannot be fitted: {exc}"
    with np.errstate(invalid="ignore"):
        anomaly = np.abs(scores.z) > anomaly_z
    frame = pd.DataFrame({
        "time": pd.to_datetime(rv.period_start_s, unit="s"),
        "realized_vol": np.sqrt(rv.variance * per_year),
        "forecast_vol": np.sqrt(scores.forecast_variance * per_year),
        "z": scores.z,
        "anomaly": anomaly,
    })
    status = (f"HAR-RV on {n} periods of {period_s:g} s: R² {fit.r2:.2f}, persistence "
              f"{fit.persistence:.2f}, {int(anomaly.sum())} period(s) beyond |z| {anomaly_z:g}")
    return frame, math.sqrt(max(next_var, 0.0) * per_year), status


def volatility_alerts(alerts, asset: str) -> pd.DataFrame:
    """The volatility and anomaly alerts of ``asset`` (newest first) as a table."""
    rows = [a for a in alerts if a.subject == asset
            and any(word in a.kind for word in _ALERT_WORDS)]
    rows.reverse()
    return pd.DataFrame({
        "time (UTC)": [_utc_text(a.ts) for a in rows],
        "kind": [a.kind for a in rows],
        "severity": [a.severity for a in rows],
        "message": [a.message for a in rows],
    })


def _utc_text(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _pct(vol: float | None) -> str:
    return "—" if vol is None or not math.isfinite(vol) else f"{100.0 * vol:.2f}%"


def summary_html(asset: str, outcome, realized, har_next_vol: float) -> str:
    """The page's headline numbers for ``asset``: the latest fit (time, method, options, RMSE,
    ATM 30-day vol), the latest 24 h realized vol and the HAR filter's next-period forecast."""
    a = html.escape(asset)
    cells = []

    def cell(name: str, label: str, value: str) -> None:
        cells.append(
            f'<div style="display:inline-block;margin-right:2em">'
            f'<div style="color:#777;font-size:0.85em">{label}</div>'
            f'<div class="vol-{name}" data-asset="{a}" style="font-size:1.5em;font-weight:600">'
            f"{html.escape(value)}</div></div>")

    record = outcome.record if outcome is not None else None
    atm30 = atm_vol_at(record, THIRTY_DAYS_YEARS) if record is not None else None
    cell("atm30", "ATM implied vol, 30 d", _pct(atm30))
    if realized is not None:
        label = "realized vol, 24 h" + ("" if realized.ready else " (window filling)")
        cell("realized", label, _pct(realized.vol_annual))
    else:
        cell("realized", "realized vol, 24 h", "—")
    cell("har", "HAR forecast, next period", _pct(har_next_vol))
    if record is not None:
        cell("fit-time", "surface fitted at", datetime.fromtimestamp(
            outcome.ts, tz=timezone.utc).strftime("%H:%M:%S UTC"))
        detail = (f"{html.escape(record.method)} · {record.n_options} options over "
                  f"{record.n_expiries} expiries · RMSE {100.0 * record.rmse_vol:.2f} vol pts · "
                  f"{100.0 * record.within_spread_fraction:.0f}% within bid/ask · "
                  f"{'no arbitrage' if record.arbitrage_ok else 'ARBITRAGE in the fit'} · "
                  f"spot {record.spot_usd:,.2f} USD")
    else:
        cell("fit-time", "surface fitted at", "—")
        detail = "waiting for the first surface fit (the option chain is refitted every few seconds)"
    return (f'<div class="vol-summary" data-asset="{a}">{"".join(cells)}'
            f'<div class="vol-fit-detail" style="color:#555">{detail}</div></div>')


# --------------------------------------------------------------------------- charts


# Every element is framewise: its axes follow the data each Pipe sends (an overlay's own option
# does not reach its elements' ranges).
_FRAMEWISE = {"framewise": True}


def _smile_chart(data):
    quotes, curve, title = data["quotes"], data["curve"], data["title"]
    spread = hv.Segments(quotes, ["k", "bid_vol", "k", "ask_vol"], label="bid-ask").opts(
        color="#999999", line_width=2, **_FRAMEWISE)
    bid = hv.Scatter(quotes, "k", "bid_vol", label="bid IV").opts(
        color="#1f77b4", marker="triangle", size=7, **_FRAMEWISE)
    ask = hv.Scatter(quotes, "k", "ask_vol", label="ask IV").opts(
        color="#d62728", marker="inverted_triangle", size=7, **_FRAMEWISE)
    fit = hv.Curve(curve, "k", "fit_vol", label="fit").opts(
        color="black", line_width=2, **_FRAMEWISE)
    return (spread * bid * ask * fit).opts(
        title=title, height=320, responsive=True, xlabel="log-moneyness ln(K/F)",
        ylabel="implied vol (annualized)", legend_position="top_left", **_FRAMEWISE)


def _term_chart(data):
    curve = hv.Curve(data, "expiry_years", "atm_vol").opts(
        color="#4c78a8", line_width=2, **_FRAMEWISE)
    points = hv.Scatter(data, "expiry_years", "atm_vol").opts(color="#4c78a8", size=6, **_FRAMEWISE)
    return (curve * points).opts(
        title="ATM term structure", height=320, responsive=True, xlabel="expiry (years)",
        ylabel="ATM implied vol (annualized)", **_FRAMEWISE)


def _realized_chart(data):
    realized = hv.Curve(data["realized"], "time", "vol_annual", label="realized 24 h").opts(
        color="#e45756", line_width=2, **_FRAMEWISE)
    implied = hv.Curve(data["implied"], "time", "atm30_vol", label="implied ATM 30 d").opts(
        color="#4c78a8", line_width=2, **_FRAMEWISE)
    return (realized * implied).opts(
        title="Realized against implied", height=300, responsive=True, xlabel="time (UTC)",
        ylabel="vol (annualized)", legend_position="top_left", **_FRAMEWISE)


def _har_chart(data):
    frame, next_point = data["frame"], data["next"]
    realized = hv.Curve(frame, "time", "realized_vol", label="realized").opts(
        color="#888888", line_width=1, **_FRAMEWISE)
    forecast = hv.Curve(frame, "time", "forecast_vol", label="HAR forecast").opts(
        color="#f58518", line_width=2, **_FRAMEWISE)
    anomalies = hv.Scatter(frame[frame["anomaly"]], "time", "realized_vol", label="anomaly").opts(
        color="#b00020", size=9, marker="x", line_width=2, **_FRAMEWISE)
    nxt = hv.Scatter(next_point, "time", "forecast_vol", label="next").opts(
        color="#f58518", size=9, marker="diamond", **_FRAMEWISE)
    return (realized * forecast * anomalies * nxt).opts(
        title="HAR filter: realized vol per period and its one-step forecast", height=300,
        responsive=True, xlabel="period start (UTC)", ylabel="vol (annualized)",
        legend_position="top_left", **_FRAMEWISE)


def _empty_smile() -> dict:
    return {"quotes": pd.DataFrame({"k": [], "bid_vol": [], "ask_vol": [], "mid_vol": [],
                                    "strike_usd": []}),
            "curve": pd.DataFrame({"k": [], "fit_vol": []}), "title": "Smile"}


def _empty_realized() -> dict:
    return {"realized": pd.DataFrame({"time": _EMPTY_TIME, "vol_annual": []}),
            "implied": pd.DataFrame({"time": _EMPTY_TIME, "atm30_vol": []})}


def _empty_har() -> dict:
    frame, _, _ = har_frame([], [], 60.0, 5.0)
    return {"frame": frame, "next": pd.DataFrame({"time": _EMPTY_TIME, "forecast_vol": []})}


def _expiry_label(expiry_utc: float, years: float) -> str:
    day = datetime.fromtimestamp(expiry_utc, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"{day} ({365.0 * years:.1f} d)"


# --------------------------------------------------------------------------- the page


class VolatilityPage:
    """One session's page: widgets, panes and what they last showed."""

    def __init__(self, views: dict, *, period_s: float, anomaly_z: float) -> None:
        self.analytics = views["analytics"]
        self.options = views.get("options")
        self.oracle = views.get("oracle")
        self.alerts = views.get("alerts")
        self.period_s = period_s
        self.anomaly_z = anomaly_z

        self.asset = pn.widgets.Select(label="Asset", options=[], width=160)
        self.expiry = pn.widgets.Select(label="Smile expiry", options={}, width=320)
        self.summary = pn.pane.HTML(summary_html("", None, None, math.nan),
                                    sizing_mode="stretch_width")
        self.surface = pn.pane.ECharts(
            surface_option(np.zeros(2), np.zeros(2), np.full((2, 2), np.nan), "Implied-vol surface"),
            height=460, sizing_mode="stretch_width", renderer="canvas", name="surface")
        self.smile_pipe = hv.streams.Pipe(data=_empty_smile())
        self.term_pipe = hv.streams.Pipe(data=pd.DataFrame({"expiry_years": [], "atm_vol": []}))
        self.realized_pipe = hv.streams.Pipe(data=_empty_realized())
        self.har_pipe = hv.streams.Pipe(data=_empty_har())
        self.smile = pn.pane.HoloViews(hv.DynamicMap(_smile_chart, streams=[self.smile_pipe]),
                                       sizing_mode="stretch_width", name="smile", linked_axes=False)
        self.term = pn.pane.HoloViews(hv.DynamicMap(_term_chart, streams=[self.term_pipe]),
                                      sizing_mode="stretch_width", name="term", linked_axes=False)
        self.realized = pn.pane.HoloViews(
            hv.DynamicMap(_realized_chart, streams=[self.realized_pipe]),
            sizing_mode="stretch_width", name="realized", linked_axes=False)
        self.har = pn.pane.HoloViews(hv.DynamicMap(_har_chart, streams=[self.har_pipe]),
                                     sizing_mode="stretch_width", name="har", linked_axes=False)
        self.har_status = pn.pane.Markdown("", css_classes=["vol-har-status"])
        self.alert_table = pn.pane.DataFrame(volatility_alerts([], ""), index=False,
                                             sizing_mode="stretch_width", name="alerts",
                                             max_rows=50)
        self._reset()
        self.asset.param.watch(lambda _event: self._on_asset(), "value")
        self.expiry.param.watch(self._on_expiry, "value")

    def _reset(self) -> None:
        self._fit_ts: float | None = None
        self._vol_ts: float | None = None
        self._har_key: tuple | None = None
        self._alerts_version: int | None = None
        self._har_next = math.nan
        self._implied: deque[tuple[float, float]] = deque()  # (fit ts, ATM 30-day vol)
        self._expiry_chosen = False  # the user picked the smile's expiry: kept while listed
        self._setting_expiry = False

    def _on_asset(self) -> None:
        self._reset()
        self.refresh()

    def _on_expiry(self, _event) -> None:
        if not self._setting_expiry:
            self._expiry_chosen = True
            self._draw_smile()

    # ------------------------------------------------------------------ refresh
    def refresh(self) -> None:
        assets = sorted(set(self.analytics.assets)
                        | set(self.options.assets if self.options is not None else ()))
        if assets != list(self.asset.options):
            self.asset.options = assets
            if self.asset.value not in assets:
                self.asset.value = "BTC" if "BTC" in assets else assets[0]  # its watcher refreshes
                return
        asset = self.asset.value
        if not asset:
            return
        changed = self._refresh_fit(asset)
        changed |= self._refresh_realized(asset, changed)
        changed |= self._refresh_har(asset)
        if changed:
            volatility = self.analytics.volatility(asset)
            self.summary.object = summary_html(asset, self.analytics.latest_fit(asset),
                                               volatility[-1] if volatility else None,
                                               self._har_next)
        self._refresh_alerts(asset)

    def _refresh_fit(self, asset: str) -> bool:
        outcome = self.analytics.latest_fit(asset)
        if outcome is None or outcome.ts == self._fit_ts:
            return False
        self._fit_ts = outcome.ts
        fit = outcome.fit
        k, T, iv = surface_grid(fit)
        self.surface.object = surface_option(
            k, T, iv, f"{asset} implied-vol surface ({fit.method}, "
                      f"{datetime.fromtimestamp(outcome.ts, tz=timezone.utc):%H:%M:%S} UTC)")
        years = np.asarray(fit.expiry_years, dtype=np.float64)
        self.term_pipe.send(pd.DataFrame({"expiry_years": years,
                                          "atm_vol": np.asarray(fit.atm_vol(years), dtype=float)}))
        expiries = {_expiry_label(outcome.ts + t * SECONDS_PER_YEAR, t):
                    round(outcome.ts + t * SECONDS_PER_YEAR) for t in years}
        listed = np.array(list(expiries.values()))
        # The user's pick, while listed (each fit's expiries are rounded anew: within an hour).
        kept = (listed[np.abs(listed - self.expiry.value) < 3_600.0]
                if self._expiry_chosen and self.expiry.value is not None else listed[:0])
        if kept.size:
            shown = int(kept[0])
        else:  # until the user picks one, or when theirs expired: the expiry nearest 30 days
            self._expiry_chosen = False
            shown = int(listed[int(np.argmin(np.abs(years - THIRTY_DAYS_YEARS)))])
        self._setting_expiry = True
        try:
            self.expiry.options = expiries
            self.expiry.value = shown
        finally:
            self._setting_expiry = False
        self._draw_smile()
        return True

    def _draw_smile(self) -> None:
        asset, expiry_utc = self.asset.value, self.expiry.value
        outcome = self.analytics.latest_fit(asset) if asset else None
        if outcome is None or expiry_utc is None:
            return
        snapshot = self.options.snapshot(asset) if self.options is not None else None
        quotes, curve = smile_frames(outcome.fit, outcome.ts, float(expiry_utc), snapshot)
        years = (float(expiry_utc) - outcome.ts) / SECONDS_PER_YEAR
        self.smile_pipe.send({"quotes": quotes, "curve": curve,
                              "title": f"{asset} smile, expiry {_expiry_label(expiry_utc, years)}"})

    def _refresh_realized(self, asset: str, fit_changed: bool) -> bool:
        volatility = self.analytics.volatility(asset)
        last = volatility[-1].ts if volatility else None
        if last == self._vol_ts and not fit_changed:
            return False
        self._vol_ts = last
        # Each fit's 30-day ATM vol is computed once, and forgotten as the view forgets the fit.
        records = self.analytics.fit_records(asset)
        while self._implied and (not records or self._implied[0][0] < records[0].ts):
            self._implied.popleft()
        newest = self._implied[-1][0] if self._implied else float("-inf")
        self._implied.extend((r.ts, atm_vol_at(r, THIRTY_DAYS_YEARS))
                             for r in records if r.ts > newest)
        self.realized_pipe.send({
            "realized": pd.DataFrame({
                "time": pd.to_datetime([e.ts for e in volatility], unit="s"),
                "vol_annual": [e.vol_annual for e in volatility]}),
            "implied": pd.DataFrame({
                "time": pd.to_datetime([ts for ts, _ in self._implied], unit="s"),
                "atm30_vol": [v for _, v in self._implied]}),
        })
        return True

    def _refresh_har(self, asset: str) -> bool:
        if self.oracle is None:
            return False
        prices = [p for p in self.oracle.history(asset) if p.status == "ok"]
        if not prices:
            return False
        # Recomputed when a period completes, not on every price.
        key = math.floor(prices[-1].ts / self.period_s)
        if key == self._har_key:
            return False
        self._har_key = key
        frame, next_vol, status = har_frame([p.ts for p in prices], [p.price_usd for p in prices],
                                            self.period_s, self.anomaly_z)
        self._har_next = next_vol
        if math.isfinite(next_vol):
            next_start = (math.floor(prices[-1].ts / self.period_s)) * self.period_s
            next_point = pd.DataFrame({"time": pd.to_datetime([next_start], unit="s"),
                                       "forecast_vol": [next_vol]})
        else:
            next_point = pd.DataFrame({"time": _EMPTY_TIME, "forecast_vol": []})
        self.har_pipe.send({"frame": frame, "next": next_point})
        self.har_status.object = status
        return True

    def _refresh_alerts(self, asset: str) -> None:
        if self.alerts is None or self.alerts.version == self._alerts_version:
            return
        self._alerts_version = self.alerts.version
        self.alert_table.object = volatility_alerts(self.alerts.recent(1000), asset)

    # ------------------------------------------------------------------ layout
    def layout(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Markdown(
                "# hedgeflow · volatility\nThe implied-volatility surface fitted to the option "
                "chain, its smiles against the live bid/ask, realized against implied volatility, "
                "and the HAR filter. Vols are annualized; log-moneyness is ln(K/F) on each "
                "expiry's forward; expiries in years."),
            pn.Row(self.asset, self.expiry),
            self.summary,
            pn.Row(self.surface, self.term, sizing_mode="stretch_width"),
            self.smile,
            self.realized,
            pn.Column(self.har_status, self.har, sizing_mode="stretch_width"),
            pn.pane.Markdown("### Volatility alerts (the graph's anomaly detector)"),
            self.alert_table,
            sizing_mode="stretch_width",
        )


def volatility_views_page(views: dict, *, refresh_ms: int = 500, period_s: float = 60.0,
                          anomaly_z: float = 5.0) -> pn.viewable.Viewable:
    """A new page (one per browser session) polling ``views`` (by name: ``analytics``, and when
    present ``options``, ``oracle``, ``alerts``). ``period_s`` is the HAR filter's period,
    ``anomaly_z`` the |z| beyond which a period is an anomaly."""
    page = VolatilityPage(views, period_s=period_s, anomaly_z=anomaly_z)
    page.refresh()
    session_callback(page.refresh, refresh_ms)
    return page.layout()


def volatility_page(pipeline) -> pn.viewable.Viewable:
    """The volatility page of ``pipeline`` (its views, at the dashboard's refresh; the HAR filter
    on periods of the volatility bar, anomalies beyond the graph's ``anomaly_z``)."""
    analytics = pipeline.config.analytics
    return volatility_views_page(pipeline.views, refresh_ms=pipeline.config.dashboard.refresh_ms,
                                 period_s=analytics.volatility_bar_s, anomaly_z=analytics.anomaly_z)


if pn.state.served:
    # `panel serve dashboards/volatility.py`: one pipeline shared by the sessions of this process.
    # The ECharts extension is loaded up front: the page may be built after the first render.
    from dashboards.session import serve_page

    pn.extension("echarts")
    serve_page(volatility_page, "Volatility")
