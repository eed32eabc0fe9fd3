"""The volatility page of a real ``hedgeflow run``, in headless Chromium.

The run's simulator quotes a Deribit option chain; the graph refits each asset's surface every
5 s. The browser must see a fitted surface (the fit's time, the ATM 30-day vol), the 3D surface
(ECharts-GL) and the Bokeh charts with the smile's bid/ask quotes and fitted curve, a fit time
that changes, and no console errors. A screenshot is left in artifacts/browser/volatility.png.
"""

from __future__ import annotations

import re
import time

import pytest
from tests.browser.conftest import browser_page


pytestmark = pytest.mark.browser

FIT_TIME = re.compile(r"^[0-9]{2}:[0-9]{2}:[0-9]{2} UTC$")
PERCENT = re.compile(r"^[0-9]+\.[0-9]{2}%$")
FIRST_FIT_TIMEOUT_MS = 45_000  # the chain fills, then a fit every 5 s on a busy machine
CHANGE_TIMEOUT_S = 30.0

# What the page's Bokeh and ECharts models hold, read in the browser's own document.
_MODELS_JS = """() => {
  const out = {figures: {}, echarts: 0, surface_points: 0};
  for (const doc of window.Bokeh ? Bokeh.documents : []) {
    for (const m of doc.all_models) {
      if (m.type === "ECharts" || (m.constructor && m.constructor.__name__ === "ECharts")) {
        out.echarts += 1;
        const series = (m.data && m.data.series) || [];
        for (const s of series) {
          if (s.type === "surface") {
            out.surface_points = Math.max(out.surface_points,
              (s.data || []).filter(p => p[2] !== "-").length);
          }
        }
      }
      const title = m.title && m.title.text;
      if (typeof title === "string" && m.renderers) {
        // Per column: how many rows, and the smallest and largest finite value.
        const rows = {}, lo = {}, hi = {};
        for (const r of m.renderers) {
          const data = r.data_source && r.data_source.data;
          if (!data) continue;
          const cols = data instanceof Map ? Array.from(data.keys()) : Object.keys(data);
          for (const c of cols) {
            const v = data instanceof Map ? data.get(c) : data[c];
            rows[c] = Math.max(rows[c] || 0, v ? v.length : 0);
            for (const x of (v || [])) {
              if (typeof x === "number" && isFinite(x)) {
                lo[c] = Math.min(lo[c] ?? x, x);
                hi[c] = Math.max(hi[c] ?? x, x);
              }
            }
          }
        }
        rows.lo = lo;
        rows.hi = hi;
        rows.x_range = m.x_range ? [m.x_range.start, m.x_range.end] : null;
        rows.y_range = m.y_range ? [m.y_range.start, m.y_range.end] : null;
        out.figures[title] = rows;
      }
    }
  }
  return out;
}"""


def _figure(models: dict, words: str) -> dict | None:
    for title, rows in models["figures"].items():
        if words in title:
            return rows
    return None


def test_volatility_page_shows_live_surface_and_smiles(chromium, hedgeflow_run):
    from playwright.sync_api import expect

    with browser_page(chromium, "volatility", width=1280, height=1800, settle_s=1.0) as (page, errors):
        response = page.goto(f"{hedgeflow_run.url}/volatility", wait_until="load", timeout=30_000)
        assert response is not None and response.ok, response and response.status

        fit_time = page.locator('.vol-fit-time[data-asset="BTC"]')
        expect(fit_time).to_have_text(FIT_TIME, timeout=FIRST_FIT_TIMEOUT_MS)
        expect(page.locator('.vol-atm30[data-asset="BTC"]')).to_have_text(PERCENT, timeout=5_000)
        first = fit_time.inner_text().strip()

        deadline = time.monotonic() + CHANGE_TIMEOUT_S
        later = first
        while later == first and time.monotonic() < deadline:
            time.sleep(0.5)
            later = fit_time.inner_text().strip()
        assert FIT_TIME.match(later), later
        assert later != first, f"the surface fit time stayed at {first} for {CHANGE_TIMEOUT_S:.0f} s"

        # The charts: Bokeh figures with data, and the ECharts-GL surface with its points.
        expect(page.locator(".bk-Canvas").first).to_be_visible(timeout=10_000)
        deadline = time.monotonic() + 10.0
        while True:
            models = page.evaluate(_MODELS_JS)
            smile = _figure(models, " smile, expiry ")
            ready = (smile and smile.get("bid_vol", 0) > 0 and smile.get("fit_vol", 0) > 0
                     and models["surface_points"] > 0)
            if ready or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert models["echarts"] == 1, models
        assert models["surface_points"] > 100, models  # a 41 x 30 grid, less the far wings
        assert smile is not None, models["figures"].keys()
        assert smile.get("bid_vol", 0) >= 3 and smile.get("ask_vol", 0) >= 3, smile
        assert smile.get("fit_vol", 0) > 10, smile
        # The axes follow the data (framewise): the quotes' log-moneyness and vols are in view.
        (x0, x1), (y0, y1) = smile["x_range"], smile["y_range"]
        assert x0 <= smile["lo"]["k"] and smile["hi"]["k"] <= x1, smile
        assert y0 <= smile["lo"]["bid_vol"] and smile["hi"]["ask_vol"] <= y1, smile
        assert x1 - x0 < 4.0 * (smile["hi"]["k"] - smile["lo"]["k"]) + 0.05, smile
        term = _figure(models, "ATM term structure")
        assert term is not None and term.get("atm_vol", 0) >= 2, models["figures"]
        assert _figure(models, "Realized against implied") is not None, models["figures"]
        assert _figure(models, "HAR filter") is not None, models["figures"]
        # The surface is drawn into a canvas of its own.
        assert page.locator("canvas").count() >= 5

        assert errors == [], errors
