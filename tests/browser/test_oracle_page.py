"""The oracle page of a real ``hedgeflow run``, in headless Chromium.

One ``hedgeflow run`` process (simulator, graph, DuckDB file, Panel server) serves the page; the
browser must see a live BTC price that changes, an ETH price, the charts, and no console errors.
Then the run is stopped with SIGINT, as Ctrl-C would, and must exit 0 with every message
accounted for. A screenshot is left in artifacts/browser/oracle.png.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from tests.browser.conftest import browser_page


pytestmark = pytest.mark.browser

PRICE = re.compile(r"^\$[0-9,]+\.[0-9]{2}$")
FIRST_PRICE_TIMEOUT_MS = 30_000
CHANGE_TIMEOUT_S = 10.0
BTC = '.oracle-price[data-asset="BTC"]'
ETH = '.oracle-price[data-asset="ETH"]'


_FIGURE_RANGES_JS = """() => {
  const out = {};
  for (const doc of window.Bokeh ? Bokeh.documents : []) {
    for (const m of doc.all_models) {
      const title = m.title && m.title.text;
      if (m.y_range && typeof title === "string" && title.includes(" oracle price")) {
        out[title.split(" ")[0]] = [m.y_range.start, m.y_range.end];
      }
    }
  }
  return out;
}"""


def _charts_missing_their_price(page) -> dict:
    """Assets whose chart's y range (Bokeh model) does not contain the price on their card."""
    ranges = page.evaluate(_FIGURE_RANGES_JS)
    missing = {}
    for asset in ("BTC", "ETH"):
        text = page.locator(f'.oracle-price[data-asset="{asset}"]').inner_text().strip()
        price = float(text.lstrip("$").replace(",", ""))
        lo, hi = ranges.get(asset, (None, None))
        slack = 0.01 * price
        if lo is None or hi is None or not (lo - slack <= price <= hi + slack):
            missing[asset] = {"price": price, "y_range": [lo, hi]}
    return missing


def test_oracle_page_shows_live_prices(chromium, hedgeflow_run):
    from playwright.sync_api import expect

    with browser_page(chromium, "oracle", width=1280, height=900, settle_s=1.0) as (page, errors):
        response = page.goto(f"{hedgeflow_run.url}/oracle", wait_until="load", timeout=30_000)
        assert response is not None and response.ok, response and response.status

        # Playwright's CSS locators pierce the shadow roots Panel renders into.
        btc = page.locator(BTC)
        expect(btc).to_have_text(PRICE, timeout=FIRST_PRICE_TIMEOUT_MS)
        first = btc.inner_text().strip()

        # The simulator moves the mid on every quote and the page polls every 500 ms.
        time.sleep(2.0)
        deadline = time.monotonic() + CHANGE_TIMEOUT_S
        later = btc.inner_text().strip()
        while later == first and time.monotonic() < deadline:
            time.sleep(0.5)
            later = btc.inner_text().strip()
        assert PRICE.match(later), later
        assert later != first, f"BTC price stayed at {first} for {2 + CHANGE_TIMEOUT_S:.0f} s"

        eth = page.locator(ETH)
        expect(eth).to_have_text(PRICE, timeout=10_000)
        assert page.locator(".oracle-card").count() == 2
        expect(page.locator('.oracle-card[data-asset="BTC"] .oracle-status')).to_have_text(
            "ok", timeout=10_000
        )
        # One chart per asset: Bokeh draws each into canvases in the plot's shadow root.
        expect(page.locator(".bk-Canvas").first).to_be_visible(timeout=10_000)
        # Each BTC source's standing, and the price the embedded chain confirmed.
        expect(page.locator('.oracle-sources[data-asset="BTC"] .oracle-source').first).to_be_visible(
            timeout=10_000)
        assert page.locator('.oracle-sources[data-asset="BTC"] .oracle-source').count() >= 2
        expect(page.locator('.oracle-onchain[data-asset="BTC"]')).to_contain_text(
            "confirmed", timeout=20_000)
        assert page.locator(".bk-Canvas").count() >= 2
        assert errors == [], errors

        # Each chart's price axis must cover its own asset's price (BTC ~97,000 and ETH ~3,100
        # cannot share one axis).
        deadline = time.monotonic() + 5.0
        while True:
            mismatched = _charts_missing_their_price(page)
            if not mismatched or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert not mismatched, f"chart y ranges do not cover the card prices: {mismatched}"


def test_run_stops_on_sigint_with_every_message_accounted_for(hedgeflow_run):
    status = hedgeflow_run.stop(timeout_s=30)
    assert status == 0, (
        f"hedgeflow run exited with {status} on SIGINT (Ctrl-C); stderr:\n"
        + hedgeflow_run.stderr()[-4000:]
    )

    lines = [line for line in hedgeflow_run.stdout().splitlines() if line.strip()]
    assert lines, f"no output on stdout; stderr:\n{hedgeflow_run.stderr()[-4000:]}"
    counts = json.loads(lines[-1])
    total = counts["total"]
    assert total["pending"] == 0, total
    assert total["trades"] > 0 and total["quotes"] > 0, total
    assert total["quarantined"] == 0, total
    assert counts["db"] == str(hedgeflow_run.db_path)
    assert hedgeflow_run.db_path.is_file()
