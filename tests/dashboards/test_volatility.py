"""The volatility page without a browser: the numbers it draws, and its panes fed by real views.

The views are the graph's own (AnalyticsView, OptionQuotesView, OracleView, AlertsView), fed the
streamz way; the surface is a real ``SurfaceFit`` (``dataflows.analytics.fit_chain``, as the
graph fits) of a small slice of the simulator's chain. Outside a Bokeh server the page's periodic
refresh is captured and called by hand, as the server would every ``refresh_ms``.
"""

from __future__ import annotations

import dataclasses
import math
import re

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import pytest
from streamz import Stream

from dashboards import volatility as vol_page
from dashboards.volatility import (
    HAR_MIN_PERIODS,
    SURFACE_MAX_SD,
    atm_vol_at,
    har_frame,
    smile_frames,
    surface_grid,
    surface_option,
    volatility_alerts,
    volatility_views_page,
)
from dataflows.analytics import fit_chain
from dataflows.hedging import THIRTY_DAYS_YEARS
from dataflows.views import AlertsView, AnalyticsView, OracleView
from dataflows.views.options import OptionQuotesView
from models.option_book import SECONDS_PER_YEAR
from models.records import Alert, OraclePrice, VolatilityEstimate
from models.volatility import bars_per_year
from tests.dataflows.views.test_options import SPOT, T0, chain_batch

EXPIRY_INDEX = (1, 4, 6, 7, 9)  # 1.4, 9.4, 23.4, 44.4 and 135.4 days after T0


@pytest.fixture(scope="module")
def chain():
    """The live book of a small chain and the surface fitted to it."""
    view = OptionQuotesView()
    view.on_tickers(chain_batch(T0, expiry_index=EXPIRY_INDEX, strikes_per_expiry=12))
    outcome = fit_chain(view.snapshot("BTC"), "", 20)
    assert outcome.fit is not None, outcome.error
    return view, outcome



def _prices(asset: str, start_s: float, n: int, step_s: float, vol_annual, seed: int = 1):
    """``n`` oracle prices ``step_s`` apart, a random walk of ``vol_annual`` (a number, or one per
    step)."""
    rng = np.random.default_rng(seed)
    sd = np.broadcast_to(np.asarray(vol_annual, dtype=float), (n,)) * math.sqrt(step_s / SECONDS_PER_YEAR)
    level = SPOT * np.exp(np.cumsum(sd * rng.standard_normal(n)))
    return [OraclePrice(asset, start_s + i * step_s, float(p), 1.0, 3, "ok") for i, p in enumerate(level)]


# --------------------------------------------------------------------------- the numbers


def test_atm_vol_at_is_the_fitted_surfaces_atm_vol(chain):
    _, outcome = chain
    fit, record = outcome.fit, outcome.record
    years = np.asarray(record.expiry_years)
    inside = np.linspace(years[0], years[-1], 17)
    for T in inside:  # total variance linear in T between expiries, as the fit interpolates
        assert atm_vol_at(record, T) == pytest.approx(float(fit.atm_vol(T)), rel=1e-9)
    # flat ATM vol outside the fitted expiries, as the fit extrapolates
    assert atm_vol_at(record, years[0] / 3) == pytest.approx(float(fit.atm_vol(years[0] / 3)), rel=1e-9)
    assert atm_vol_at(record, 2 * years[-1]) == pytest.approx(float(fit.atm_vol(2 * years[-1])), rel=1e-9)
    empty = dataclasses.replace(record, expiry_years=(), atm_vol_annual=())
    assert math.isnan(atm_vol_at(empty, THIRTY_DAYS_YEARS))


def test_surface_grid_is_the_fit_within_its_standard_deviations(chain):
    _, outcome = chain
    fit = outcome.fit
    k, T, iv = surface_grid(fit)
    assert iv.shape == (T.size, k.size)
    assert set(np.round(fit.expiry_years, 12)) <= set(np.round(T, 12))  # every fitted expiry is a row
    assert T[0] == fit.expiry_years[0] and T[-1] == fit.expiry_years[-1]
    shown = np.isfinite(iv)
    expected = np.asarray(fit.implied_vol(k[None, :], T[:, None]))
    np.testing.assert_allclose(iv[shown], expected[shown], rtol=1e-12)
    sd = np.asarray(fit.atm_vol(T)) * np.sqrt(T)
    assert np.array_equal(shown, np.abs(k[None, :]) <= SURFACE_MAX_SD * sd[:, None])
    assert shown[-1].all() and not shown[0].all()  # the 1.4-day wings are cut, the longest not


def test_surface_option_lists_every_cell_and_marks_the_cut_ones():
    k, T = np.array([-0.1, 0.0, 0.1]), np.array([0.1, 0.2])
    iv = np.array([[np.nan, 0.5, 0.6], [0.55, 0.52, 0.58]])
    option = surface_option(k, T, iv, "title")
    (series,) = option["series"]
    assert series["type"] == "surface"
    assert series["data"][0] == [-0.1, 0.1, "-"]
    assert series["data"][1] == [0.0, 0.1, 0.5]
    assert series["data"][-1] == [0.1, 0.2, 0.58]
    assert len(series["data"]) == 6
    assert option["visualMap"]["min"] == 0.5 and option["visualMap"]["max"] == 0.6


def test_smile_frames_hold_the_expirys_quotes_and_the_fitted_curve(chain):
    view, outcome = chain
    snap = view.snapshot("BTC")
    expiry_utc = float(np.unique(snap.expiry_utc)[2])  # the 23.4-day expiry
    quotes, curve = smile_frames(outcome.fit, outcome.ts, expiry_utc, snap)
    at = snap.expiry_utc == expiry_utc
    assert len(quotes) == at.sum() > 5
    np.testing.assert_allclose(quotes["k"], np.log(snap.strike_usd[at] / snap.forward_usd[at]))
    np.testing.assert_array_equal(quotes["bid_vol"], snap.bid_vol[at])
    np.testing.assert_array_equal(quotes["ask_vol"], snap.ask_vol[at])
    years = (expiry_utc - outcome.ts) / SECONDS_PER_YEAR
    np.testing.assert_allclose(curve["fit_vol"], outcome.fit.implied_vol(curve["k"].to_numpy(), years))
    assert curve["k"].min() < quotes["k"].min() and curve["k"].max() > quotes["k"].max()
    # the fit goes through the quotes: within their spread, give or take a vol point
    fitted = np.asarray(outcome.fit.implied_vol(quotes["k"].to_numpy(), years))
    quoted = quotes["bid_vol"].notna()
    assert np.all(fitted[quoted] > quotes["bid_vol"][quoted] - 0.01)
    assert np.all(fitted[quoted] < quotes["ask_vol"][quoted] + 0.01)
    # without a live book: the fitted curve alone
    quotes, curve = smile_frames(outcome.fit, outcome.ts, expiry_utc, None)
    assert len(quotes) == 0 and len(curve) > 10


def test_har_frame_waits_for_enough_periods():
    prices = _prices("BTC", T0, 10 * 60, 1.0, 0.5)  # ten minutes of 1 s prices
    frame, next_vol, status = har_frame([p.ts for p in prices], [p.price_usd for p in prices], 60.0, 5.0)
    assert len(frame) == 0 and math.isnan(next_vol)
    assert f"needs {HAR_MIN_PERIODS} periods" in status


def test_har_frame_forecasts_and_flags_a_burst_of_volatility():
    period_s, step_s = 60.0, 5.0
    n = int(60 * period_s / step_s)  # an hour of prices every 5 s
    vol = np.full(n, 0.5)
    burst = slice(int(50 * period_s / step_s), int(51 * period_s / step_s))  # minute 50
    vol[burst] = 8.0
    start = math.floor(T0 / period_s) * period_s  # on a period's start: every period complete
    prices = _prices("BTC", start, n, step_s, vol, seed=7)
    ts = np.array([p.ts for p in prices])
    px = np.array([p.price_usd for p in prices])
    frame, next_vol, status = har_frame(ts, px, period_s, 5.0)
    # 59 complete periods (the last minute is still open), realized vol per period annualized
    assert len(frame) == 59
    r = np.diff(np.log(px))
    minute = np.floor(ts[1:] / period_s)
    first = minute == minute[0]
    assert frame["realized_vol"].iloc[0] == pytest.approx(
        math.sqrt(np.sum(r[first] ** 2) * bars_per_year(period_s)))
    assert frame["forecast_vol"].iloc[:22].isna().all() and frame["forecast_vol"].iloc[22:].notna().all()
    flagged = frame.loc[frame["anomaly"], "time"]
    assert pd.Timestamp(start + 50 * period_s, unit="s") in set(flagged)
    assert frame["anomaly"].sum() <= 3
    assert 0.0 < next_vol < 8.0
    assert "HAR-RV on 59 periods" in status


def test_volatility_alerts_keep_the_assets_volatility_alerts_newest_first():
    alerts = [
        Alert(1.0, "return_anomaly", "warning", "jump", "BTC"),
        Alert(2.0, "source_rejected", "warning", "binance off", "BTC"),
        Alert(3.0, "volatility_anomaly", "warning", "vol up", "ETH"),
        Alert(4.0, "volatility_anomaly", "warning", "vol up <b>", "BTC"),
    ]
    table = volatility_alerts(alerts, "BTC")
    assert list(table["kind"]) == ["volatility_anomaly", "return_anomaly"]
    assert list(table["message"]) == ["vol up <b>", "jump"]
    assert list(table["time (UTC)"]) == ["1970-01-01 00:00:04", "1970-01-01 00:00:01"]


# --------------------------------------------------------------------------- the page


def _views(chain):
    options, outcome = chain
    analytics, alerts, oracle = AnalyticsView(), AlertsView(), OracleView()
    surfaces, volatility, alert_stream, prices = Stream(), Stream(), Stream(), Stream()
    surfaces.sink(analytics.on_surfaces)
    volatility.sink(analytics.on_volatility)
    alert_stream.sink(alerts.on_alerts)
    prices.sink(oracle.on_prices)
    views = {"analytics": analytics, "options": options, "oracle": oracle, "alerts": alerts}
    return views, {"surfaces": surfaces, "volatility": volatility, "alerts": alert_stream,
                   "prices": prices}


def _page_parts(page):
    panes = {p.name: p for p in page.select(pn.pane.HoloViews)}
    pipes = {name: next(s for s in pane.object.streams if isinstance(s, hv.streams.Pipe))
             for name, pane in panes.items()}
    (surface,) = page.select(pn.pane.ECharts)
    summary = next(p for p in page.select(pn.pane.HTML) if "vol-summary" in str(p.object))
    (table,) = page.select(pn.pane.DataFrame)
    selects = {w.label: w for w in page.select(pn.widgets.Select)}
    return pipes, surface, summary, table, selects


def test_page_waits_then_draws_the_fit_the_book_and_the_histories(chain, periodic):
    views, streams = _views(chain)
    options, outcome = chain
    page = volatility_views_page(views, refresh_ms=250, period_s=60.0, anomaly_z=5.0)
    assert len(periodic) == 1 and periodic[0]["period"] == 250
    refresh = periodic[0]["callback"]
    pipes, surface, summary, table, selects = _page_parts(page)
    assert set(pipes) == {"smile", "term", "realized", "har"}
    # The live book alone names the asset; nothing is fitted yet.
    assert selects["Asset"].value == "BTC"
    assert "waiting for the first surface fit" in summary.object
    assert len(pipes["term"].data) == 0

    streams["surfaces"].emit([outcome])
    streams["volatility"].emit([VolatilityEstimate("BTC", T0 - 60.0, 86_400.0, 600, 0.41, 0.4, False),
                                VolatilityEstimate("BTC", T0, 86_400.0, 601, 0.42, 0.4, True)])
    streams["alerts"].emit([Alert(T0, "volatility_anomaly", "warning", "vol 3x forecast", "BTC"),
                            Alert(T0, "oracle_divergence", "warning", "kraken off", "BTC")])
    streams["prices"].emit(_prices("BTC", T0 - 3_600.0, 720, 5.0, 0.5))  # an hour every 5 s
    refresh()

    fit, record = outcome.fit, outcome.record
    atm30 = atm_vol_at(record, THIRTY_DAYS_YEARS)
    assert re.search(r'class="vol-atm30" data-asset="BTC"[^>]*>([^<]*)<', summary.object).group(1) \
        == f"{100 * atm30:.2f}%"
    assert ">42.00%<" in summary.object  # the latest 24 h realized vol
    assert "22:13:20 UTC" in summary.object  # T0, the fit's time
    assert f"{record.n_options} options over {record.n_expiries} expiries" in summary.object

    # The surface: the fit on its grid
    k, T, iv = surface_grid(fit)
    data = surface.object["series"][0]["data"]
    assert len(data) == k.size * T.size
    cells = [c for c in data if c[2] != "-"]
    assert len(cells) == np.isfinite(iv).sum()
    probe = cells[len(cells) // 2]
    assert probe[2] == pytest.approx(float(fit.implied_vol(probe[0], probe[1])), abs=1e-4)

    # The term structure: ATM vol at every fitted expiry
    term = pipes["term"].data
    np.testing.assert_allclose(term["expiry_years"], fit.expiry_years)
    np.testing.assert_allclose(term["atm_vol"], fit.atm_vol(fit.expiry_years))

    # The smile: the expiry nearest 30 days (23.4 d), with the live book's bid/ask at it
    expiry = selects["Smile expiry"]
    shown_utc = expiry.value
    assert (shown_utc - T0) / 86_400.0 == pytest.approx(23.4074, abs=1e-3)
    smile = pipes["smile"].data
    quotes, curve = smile_frames(fit, outcome.ts, shown_utc, options.snapshot("BTC"))
    pd.testing.assert_frame_equal(smile["quotes"], quotes)
    pd.testing.assert_frame_equal(smile["curve"], curve)
    assert "BTC smile, expiry 2023-12-08 08:00 UTC" in smile["title"]

    # Realized (24 h) against implied (ATM 30 d)
    realized = pipes["realized"].data
    assert list(realized["realized"]["vol_annual"]) == [0.41, 0.42]
    assert list(realized["implied"]["atm30_vol"]) == [pytest.approx(atm30)]
    assert list(realized["implied"]["time"]) == [pd.Timestamp(T0, unit="s")]

    # HAR on the oracle's hour of prices
    har = pipes["har"].data
    assert len(har["frame"]) >= HAR_MIN_PERIODS and har["frame"]["forecast_vol"].notna().any()
    assert len(har["next"]) == 1 and har["next"]["forecast_vol"].iloc[0] > 0.0
    assert f'{100 * har["next"]["forecast_vol"].iloc[0]:.2f}%' in summary.object

    # Only the volatility alerts
    assert list(table.object["kind"]) == ["volatility_anomaly"]


def test_a_new_fit_redraws_and_a_chosen_expiry_is_kept(chain, periodic):
    views, streams = _views(chain)
    _, outcome = chain
    page = volatility_views_page(views, refresh_ms=500)
    refresh = periodic[0]["callback"]
    pipes, surface, summary, _, selects = _page_parts(page)
    streams["surfaces"].emit([outcome])
    refresh()
    expiry = selects["Smile expiry"]
    longest = max(expiry.options.values())
    expiry.value = longest  # the user picks the 135-day expiry: drawn at once
    assert "135.4 d" in pipes["smile"].data["title"]

    later = dataclasses.replace(outcome, ts=outcome.ts + 5.0,
                                record=dataclasses.replace(outcome.record, ts=outcome.ts + 5.0))
    streams["surfaces"].emit([later])
    refresh()
    assert "22:13:25 UTC" in summary.object
    # (this fit's expiries are 5 s later than the first's: the same listed expiries, rounded anew)
    assert abs(expiry.value - longest) <= 5 and "135.4 d" in pipes["smile"].data["title"]
    assert len(pipes["realized"].data["implied"]) == 2
    before = surface.object
    refresh()  # nothing new: nothing redrawn
    assert surface.object is before


def test_each_page_has_its_own_widgets_and_an_unknown_asset_shows_nothing(chain, periodic):
    views, streams = _views(chain)
    a = volatility_views_page(views)
    b = volatility_views_page(views)
    assert len(periodic) == 2
    assert _page_parts(a)[4]["Asset"] is not _page_parts(b)[4]["Asset"]
    assert vol_page.summary_html("ETH", None, None, math.nan).count("—") == 4


def test_implied_history_follows_the_views_bounded_fit_history(chain, periodic):
    _, outcome = chain
    analytics = AnalyticsView(history=2)
    page = volatility_views_page({"analytics": analytics})
    refresh = periodic[0]["callback"]
    pipes = _page_parts(page)[0]
    for i in range(3):
        ts = outcome.ts + 5.0 * i
        analytics.on_surfaces([dataclasses.replace(
            outcome, ts=ts, record=dataclasses.replace(outcome.record, ts=ts))])
        refresh()
    implied = pipes["realized"].data["implied"]
    assert list(implied["time"]) == list(pd.to_datetime([T0 + 5.0, T0 + 10.0], unit="s"))
    assert implied["atm30_vol"].tolist() == pytest.approx([atm_vol_at(outcome.record, THIRTY_DAYS_YEARS)] * 2)
