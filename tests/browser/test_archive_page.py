"""The archive health page of a real ``hedgeflow run``, in headless Chromium.

The browser must see an ingest rate for every simulated exchange that changes, lags, connected
feeds, the database's size and rows (read every few seconds off the loop), today's completeness,
a chart, and no console errors. A screenshot is left in artifacts/browser/archive.png. The run is
then stopped with SIGINT and must exit 0 with every message accounted for (the page's database
reads must not keep the writer from closing its connection).
"""

from __future__ import annotations

import json
import re
import time

import pytest
from tests.browser.conftest import browser_page


pytestmark = pytest.mark.browser

EXCHANGES = ("binance", "coinbase", "kraken", "deribit", "bybit")
RATE = re.compile(r"^[0-9][0-9,]*\.[0-9]$")
BYTES = re.compile(r"^[0-9.]+ (B|KiB|MiB|GiB)$")
FIRST_VALUE_TIMEOUT_MS = 30_000
CHANGE_TIMEOUT_S = 15.0


def rate(exchange: str) -> str:
    return f'.archive-rate[data-exchange="{exchange}"]'


def test_archive_page_shows_live_ingest_and_storage(chromium, hedgeflow_run):
    from playwright.sync_api import expect

    with browser_page(chromium, "archive", width=1280, height=1400) as (page, errors):
        response = page.goto(f"{hedgeflow_run.url}/archive", wait_until="load", timeout=30_000)
        assert response is not None and response.ok, response and response.status

        for exchange in EXCHANGES:
            expect(page.locator(rate(exchange))).to_have_text(RATE, timeout=FIRST_VALUE_TIMEOUT_MS)
        first = {e: page.locator(rate(e)).inner_text().strip() for e in EXCHANGES}
        assert float(first["binance"].replace(",", "")) > 0, first

        # Rates are recomputed on every clock tick and the page polls every 500 ms.
        deadline = time.monotonic() + CHANGE_TIMEOUT_S
        later = dict(first)
        while later == first and time.monotonic() < deadline:
            time.sleep(0.5)
            later = {e: page.locator(rate(e)).inner_text().strip() for e in EXCHANGES}
        assert later != first, f"no rate changed in {CHANGE_TIMEOUT_S:.0f} s: {first}"
        assert all(RATE.match(v) for v in later.values()), later

        messages = page.locator('.archive-messages[data-exchange="binance"]')
        n_first = int(messages.inner_text().replace(",", ""))
        time.sleep(1.0)
        assert int(messages.inner_text().replace(",", "")) > n_first

        expect(page.locator('.archive-lag[data-exchange="binance"]')).to_have_text(
            re.compile(r"^-?[0-9][0-9,]*\.[0-9]$"), timeout=10_000)
        states = page.locator(".archive-connection-state")
        expect(states.first).to_be_visible(timeout=10_000)
        assert states.count() >= len(EXCHANGES)
        assert "connected" in [s.strip() for s in states.all_inner_texts()]

        # Database figures: the view reads the database every few seconds.
        expect(page.locator(".archive-db-bytes")).to_have_text(BYTES, timeout=20_000)
        quotes = page.locator('.archive-table-rows[data-table="quotes"]')
        expect(quotes).to_have_text(re.compile(r"^[0-9][0-9,]*$"), timeout=20_000)
        expect(page.locator('.archive-ticks[data-exchange="binance"]')).to_have_text(
            re.compile(r"^[1-9][0-9,]*$"), timeout=30_000)
        expect(page.locator('.archive-completeness[data-exchange="binance"]')).to_have_text(
            re.compile(r"^([0-9.]+ %|—)$"), timeout=10_000)
        rows_first = int(quotes.inner_text().replace(",", ""))
        deadline = time.monotonic() + 15.0
        while (int(quotes.inner_text().replace(",", "")) == rows_first
               and time.monotonic() < deadline):
            time.sleep(0.5)
        assert int(quotes.inner_text().replace(",", "")) > rows_first, "quote rows did not grow"

        expect(page.locator(".bk-Canvas").first).to_be_visible(timeout=10_000)
        assert errors == [], errors


def test_run_stops_cleanly_after_the_page_read_the_database(hedgeflow_run):
    status = hedgeflow_run.stop(timeout_s=30)
    assert status == 0, (f"hedgeflow run exited with {status} on SIGINT; stderr:\n"
                         + hedgeflow_run.stderr()[-4000:])
    lines = [line for line in hedgeflow_run.stdout().splitlines() if line.strip()]
    assert lines, f"no output on stdout; stderr:\n{hedgeflow_run.stderr()[-4000:]}"
    total = json.loads(lines[-1])["total"]
    assert total["pending"] == 0, total
    assert "connection is busy" not in hedgeflow_run.stderr()
    assert "model work failed" not in hedgeflow_run.stderr()
