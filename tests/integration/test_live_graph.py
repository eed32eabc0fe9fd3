"""The whole live pipeline over loopback: simulator → websocket source → graph → DuckDB.

Reconciles what the simulator sent with what the graph stored, quarantined or counted, message
for message, and checks the oracle priced both assets from those quotes.
"""

from __future__ import annotations

import asyncio

import duckdb
import pytest

from dataflows.config import load_config
from dataflows.runtime import Pipeline

pytestmark = pytest.mark.integration

RUN_S = 4.0


async def _run_pipeline(cfg) -> tuple[Pipeline, dict, dict]:
    pipeline = Pipeline(cfg)
    await pipeline.start()
    source = pipeline.sources[0]
    await asyncio.wait_for(source.connected.wait(), 10)
    await asyncio.sleep(RUN_S)
    # Stop the exchange first: it closes each connection after the data already queued, so the
    # source reads every message the simulator counted as sent before the pipeline stops.
    await pipeline.simulator.stop()
    sent = pipeline.simulator.sent_counts()
    for _ in range(200):
        if source.received >= sent["total"]:
            break
        await asyncio.sleep(0.02)
    counts = await pipeline.stop()
    return pipeline, sent, counts


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    db = tmp_path_factory.mktemp("live") / "live.duckdb"
    cfg = load_config(
        env={},
        overrides={
            "storage.db_path": str(db),
            "storage.flush_interval_s": 0.5,
            "simulator.port": 0,
            "simulator.seed": 11,
            "simulator.quote_rate_hz": 50.0,
            "simulator.trade_rate_hz": 20.0,
            "simulator.malformed_rate": 0.05,
            "dashboard.enabled": False,
        },
    )
    pipeline, sent, counts = asyncio.run(_run_pipeline(cfg))
    return pipeline, sent, counts, db


def test_every_message_sent_is_accounted_for(live_run):
    _, sent, counts, _ = live_run
    binance = counts["exchanges"]["binance"]
    assert sent["total"] > 300
    assert binance["messages"] == sent["total"]
    assert binance["quotes"] == sent["bookTicker"]
    assert binance["trades"] == sent["aggTrade"]
    assert binance["quarantined"] == sent["malformed"] > 0
    assert binance["control"] == sent["control"]
    assert binance["pending"] == 0


def test_database_rows_match_the_ledger(live_run):
    _, sent, counts, db = live_run
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM quotes").fetchone()[0] == sent["bookTicker"]
        assert con.execute("SELECT count(*) FROM trades").fetchone()[0] == sent["aggTrade"]
        reasons = con.execute("SELECT reason FROM quarantine").fetchall()
        assert len(reasons) == sent["malformed"]
        assert all(r[0].startswith(("binance ", "invalid: ")) for r in reasons)
        # Every kind of malformed message the simulator sends is caught by a different rule.
        assert len({r[0].split(":")[0] for r in reasons}) >= 2
        dup = con.execute(
            "SELECT count(*) - count(DISTINCT (instrument, trade_id)) FROM trades"
        ).fetchone()[0]
        assert dup == 0
    finally:
        con.close()


def test_oracle_priced_both_assets_from_the_quotes(live_run):
    _, _, _, db = live_run
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            """
            SELECT o.asset, count(*), min(o.price), max(o.price), bool_and(o.status = 'ok'),
                   (SELECT min(bid) FROM quotes q WHERE q.asset = o.asset),
                   (SELECT max(ask) FROM quotes q WHERE q.asset = o.asset)
            FROM oracle_prices o GROUP BY o.asset ORDER BY o.asset
            """
        ).fetchall()
    finally:
        con.close()
    assert [r[0] for r in rows] == ["BTC", "ETH"]
    for asset, n, lo, hi, all_ok, min_bid, max_ask in rows:
        assert n >= RUN_S - 1  # one price per interval_s (1 s) per asset
        assert all_ok
        # The median of one source's mid lies inside that source's quoted range.
        assert min_bid <= lo <= hi <= max_ask
