"""The hedge book page of a real ``hedgeflow run`` (the hedge desk is on by default), in headless
Chromium: the desk's equity and LTV appear and move with the simulator's prices, the mode, band
and trading state are ones the desk knows, the collateral is on the positions table, the KPIs
table is there, and the console stays clean. A screenshot is left in artifacts/browser/hedge.png.
"""

from __future__ import annotations

import re
import time

import pytest


from models.hedge import MODES
from models.loan import LTV_BANDS, TRADING_STATES
from tests.browser.conftest import browser_page

pytestmark = pytest.mark.browser

USD = re.compile(r"^-?\$[0-9,]+\.[0-9]{2}$")
PERCENT = re.compile(r"^[0-9]+\.[0-9]{2} %$")
FIRST_VALUE_TIMEOUT_MS = 30_000
CHANGE_TIMEOUT_S = 30.0
# How many points the equity chart's Bokeh data source holds (the page streams the view's history).
_EQUITY_POINTS_JS = """() => {
  let n = -1;
  for (const doc of window.Bokeh ? Bokeh.documents : []) {
    for (const m of doc.all_models) {
      if (m.data && m.data.equity !== undefined) n = Math.max(n, m.data.equity.length);
    }
  }
  return n;
}"""
KPIS = ("coverage_ratio", "net_apr", "max_drawdown", "sharpe_ratio", "funding_efficiency",
        "ltv_stability")


def test_hedge_page_shows_the_live_desk(chromium, hedgeflow_run):
    from playwright.sync_api import expect

    with browser_page(chromium, "hedge", width=1400, height=1000) as (page, errors):
        response = page.goto(f"{hedgeflow_run.url}/hedge", wait_until="load", timeout=30_000)
        assert response is not None and response.ok, response and response.status

        # Playwright's CSS locators pierce the shadow roots Panel renders into.
        equity, ltv = page.locator(".hedge-equity"), page.locator(".hedge-ltv")
        expect(equity).to_have_text(USD, timeout=FIRST_VALUE_TIMEOUT_MS)
        expect(ltv).to_have_text(PERCENT, timeout=10_000)
        first = (equity.inner_text().strip(), ltv.inner_text().strip())

        # The desk steps on every oracle price (about once a second) and the page polls every
        # 500 ms: the collateral's value, hence equity and LTV, moves with the price.
        deadline = time.monotonic() + CHANGE_TIMEOUT_S
        later = first
        while later == first and time.monotonic() < deadline:
            time.sleep(0.5)
            later = (equity.inner_text().strip(), ltv.inner_text().strip())
        assert later != first, f"equity and LTV stayed at {first} for {CHANGE_TIMEOUT_S:.0f} s"
        assert USD.match(later[0]) and PERCENT.match(later[1]), later

        assert page.locator(".hedge-mode").inner_text().strip() in MODES
        assert page.locator(".hedge-band").inner_text().strip() in LTV_BANDS
        assert page.locator(".hedge-trading-state").inner_text().strip() in TRADING_STATES
        assert page.locator(".hedge-ltv-segment").count() == len(LTV_BANDS)
        expect(page.locator(".hedge-ltv-needle")).to_have_count(1)
        spot = page.locator('.hedge-position[data-instrument="spot"]')
        assert float(spot.inner_text().replace(",", "")) > 0.0  # the pledged collateral
        for kpi in KPIS:
            expect(page.locator(f'.hedge-kpi[data-kpi="{kpi}"]')).to_have_count(1)
        # Equity and LTV charts: Bokeh draws them into canvases, and the equity curve grows.
        expect(page.locator(".bk-Canvas").first).to_be_visible(timeout=10_000)
        assert page.locator(".bk-Canvas").count() >= 2
        points = page.evaluate(_EQUITY_POINTS_JS)
        deadline = time.monotonic() + 10.0
        while page.evaluate(_EQUITY_POINTS_JS) <= points and time.monotonic() < deadline:
            time.sleep(0.5)
        assert page.evaluate(_EQUITY_POINTS_JS) > max(points, 1), "the equity chart did not grow"
        assert errors == [], errors
