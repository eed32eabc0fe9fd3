"""The whole live pipeline over loopback: five simulated exchanges → websocket sources → graph →
DuckDB, reconciled message for message; then the same under 20 forced disconnects."""

from __future__ import annotations

import asyncio

import duckdb
import pytest

from dataflows.config import load_config
from dataflows.runtime import Pipeline
from storage.queries import table_counts

pytestmark = pytest.mark.integration

EXCHANGES = ("binance", "coinbase", "kraken", "deribit", "bybit")
DATA_TABLES = ("trades", "quotes", "option_tickers", "book_updates", "funding", "index_prices")


def _config(db, **overrides):
    return load_config(
        env={},
        overrides={
            "storage.db_path": str(db),
            "storage.flush_interval_s": 0.5,
            "simulator.port": 0,
            "simulator.seed": 11,
            "simulator.option_rate_hz": 200.0,
            "feeds.reconnect_initial_s": 0.05,
            "feeds.reconnect_max_s": 0.2,
            "dashboard.enabled": False,
            **overrides,
        },
    )


async def _wait_for(predicate, timeout_s: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def _received(pipeline: Pipeline) -> dict[str, int]:
    out = dict.fromkeys(EXCHANGES, 0)
    for s in pipeline.sources:
        out[s.exchange] += s.received
    return out


def _db_counts(db) -> tuple[dict, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        counts = table_counts(con)
        duplicates = con.execute(
            "SELECT count(*) - count(DISTINCT (exchange, instrument, trade_id)) FROM trades"
        ).fetchone()[0]
        counts["disconnect_gaps"] = con.execute(
            "SELECT count(*) FROM gaps WHERE kind = 'disconnect'"
        ).fetchone()[0]
        counts["quarantine_by_exchange"] = dict(
            con.execute("SELECT exchange, count(*) FROM quarantine GROUP BY exchange").fetchall()
        )
        counts["oracle_assets"] = sorted(
            r[0] for r in con.execute("SELECT DISTINCT asset FROM oracle_prices").fetchall()
        )
    finally:
        con.close()
    return counts, duplicates


# ------------------------------------------------------------------------ a clean run, reconciled


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    db = tmp_path_factory.mktemp("live") / "live.duckdb"
    cfg = _config(db, **{"simulator.malformed_rate": 0.02})

    async def scenario():
        pipeline = Pipeline(cfg)
        await pipeline.start()
        await _wait_for(lambda: all(s.connected.is_set() for s in pipeline.sources))
        await asyncio.sleep(4.0)
        # Stop the exchanges first: each closes its connections after the data already queued,
        # so every message the simulator counts as sent is read before the pipeline stops.
        await pipeline.simulator.stop()
        sent = {e: pipeline.simulator.sent_counts(e) for e in EXCHANGES}
        await _wait_for(lambda: all(_received(pipeline)[e] >= sent[e]["total"] for e in EXCHANGES))
        counts = await pipeline.stop()
        return pipeline, sent, counts

    pipeline, sent, counts = asyncio.run(scenario())
    return pipeline, sent, counts, db


def test_every_message_sent_is_read_once_and_has_one_verdict(clean_run):
    pipeline, sent, counts, _ = clean_run
    assert len(pipeline.sources) >= 6  # four exchanges + Deribit's option chain over 2+ connections
    for exchange in EXCHANGES:
        c, s = counts["exchanges"][exchange], sent[exchange]
        assert c["messages"] == s["total"] > 0, exchange
        assert c["messages"] == c["data"] + c["control"] + c["ignored"] + c["quarantined"]
        assert c["quarantined"] == s["malformed"], exchange
        assert c["pending"] == 0
    assert counts["total"]["option_tickers"] > 0
    assert counts["total"]["funding"] > 0
    assert counts["total"]["index_prices"] > 0


def test_database_rows_equal_the_ledger(clean_run):
    _, _, counts, db = clean_run
    stored, duplicates = _db_counts(db)
    for table in DATA_TABLES:
        assert stored[table] == counts["total"][table], table
    assert stored["quarantine"] == counts["total"]["quarantined"]
    assert stored["quarantine_by_exchange"] == {
        e: c["quarantined"] for e, c in counts["exchanges"].items() if c["quarantined"]
    }
    assert duplicates == 0
    assert stored["oracle_assets"] == ["BTC", "ETH"]


def test_deribit_chain_is_spread_over_connections_of_at_most_500_channels(clean_run):
    pipeline, _, _, _ = clean_run
    assert pipeline.deribit is not None
    channels = [len(p.channels) for p in pipeline.deribit.protocols]
    assert len(channels) >= 2 and max(channels) <= 500
    assert sum(channels) > 800  # an option chain at the scale of plan 003, ticker + book each


def test_the_live_option_chain_is_fitted_and_priced_without_arbitrage(clean_run):
    pipeline, _, _, db = clean_run
    con = duckdb.connect(str(db), read_only=True)
    try:
        fits = con.execute(
            "SELECT asset, n_options, n_expiries, arbitrage_ok, rmse_vol, within_spread_fraction "
            "FROM surface_fits ORDER BY ts").fetchall()
        quotes = con.execute(
            "SELECT count(*), min(premium_usd), max(abs(premium_usd - (intrinsic_usd + time_value_usd"
            " + volatility_usd + skew_usd + jump_usd + margin_usd + rounding_usd))) FROM premium_quotes"
        ).fetchone()
    finally:
        con.close()
    # The fits ran in the worker thread while ticks kept flowing; none was skipped for a crash.
    assert pipeline.graph.analytics.refitter.worker.failed == 0
    assert fits, "no surface was fitted during the run"
    assert {f[0] for f in fits} <= {"BTC", "ETH"}
    assert all(f[3] for f in fits)  # arbitrage-free, every one
    assert quotes[0] > 0 and quotes[1] > 0.0 and quotes[2] < 1e-6


def test_the_live_hedge_desk_steps_on_the_oracle_and_its_accounts_add_up(clean_run):
    pipeline, _, _, db = clean_run
    con = duckdb.connect(str(db), read_only=True)
    try:
        positions = con.execute(
            "SELECT count(*), count(DISTINCT run_id), min(spot_coin) FROM position_states").fetchone()
        equity = con.execute(
            "SELECT count(*), max(abs(equity_usd - (cash_usd + position_value_usd + reserve_usd - loan_usd))) "
            "FROM desk_equity WHERE equity_usd IS NOT NULL").fetchone()
        # The desk starts at the first "ok" price (before it the oracle has not heard enough sources).
        oracle_btc = con.execute(
            "SELECT count(*) FROM oracle_prices WHERE asset = 'BTC' AND ts >= "
            "(SELECT min(ts) FROM oracle_prices WHERE asset = 'BTC' AND status = 'ok')").fetchone()[0]
    finally:
        con.close()
    assert pipeline.hedge is not None and pipeline.hedge.run_id == "live"
    # One desk step per BTC oracle price from then on (the desk trades BTC), every one recorded.
    assert positions[0] == oracle_btc > 0 and positions[1] == 1 and positions[2] == 0.27
    assert equity[0] > 0 and equity[1] < 1e-6


def test_the_views_saw_what_the_database_stored(clean_run):
    """The read-only views the dashboards and the API poll hold the run's latest values."""
    pipeline, _, _, db = clean_run
    views = pipeline.views
    con = duckdb.connect(str(db), read_only=True)
    try:
        last_btc = con.execute("SELECT epoch(max(ts)) FROM oracle_prices WHERE asset = 'BTC'").fetchone()[0]
        n_alerts = con.execute("SELECT count(*) FROM alerts").fetchone()[0]
        n_vol = con.execute("SELECT count(*) FROM volatility WHERE asset = 'BTC'").fetchone()[0]
    finally:
        con.close()
    assert abs(views["oracle"].latest()["BTC"].ts - last_btc) < 1e-3
    assert len(views["alerts"].recent(limit=10_000)) == min(n_alerts, 1000)
    assert len(views["analytics"].volatility("BTC")) == min(n_vol, 1440)
    assert views["analytics"].latest_fit("BTC") is not None
    hedge = views["hedge"]
    assert hedge.latest is not None and hedge.latest.ts_s == hedge.history[-1][0]
    assert {row["exchange"] for row in views["connections"].rows()} >= set(EXCHANGES)


# ------------------------------------------------------------------ twenty forced disconnects


def test_twenty_disconnects_reconnect_leave_gaps_and_store_no_trade_twice(tmp_path):
    db = tmp_path / "drops.duckdb"
    cfg = _config(db, **{"simulator.faults": "repeat_trades=0.05", "simulator.seed": 5})

    async def scenario():
        pipeline = Pipeline(cfg)
        await pipeline.start()
        await _wait_for(lambda: all(s.connected.is_set() for s in pipeline.sources))
        sim = pipeline.simulator
        cut = 0
        drops = 0
        while drops < 20:
            exchange = EXCHANGES[drops % len(EXCHANGES)]
            mode = "abort" if drops % 2 else "close"
            cut += sim.drop(exchange, mode)
            drops += 1
            await asyncio.sleep(0.15)
            await _wait_for(lambda: all(s.connected.is_set() for s in pipeline.sources))
        await asyncio.sleep(0.5)
        connects = {s.label: s.connects for s in pipeline.sources}
        disconnects = {s.label: s.disconnects for s in pipeline.sources}
        counts = await pipeline.stop()
        return drops, cut, connects, disconnects, counts

    drops, cut, connects, disconnects, counts = asyncio.run(scenario())
    assert drops == 20
    assert sum(disconnects.values()) == cut >= 20
    for name in connects:  # every connection came back after every drop
        assert connects[name] == disconnects[name] + 1, name
    stored, duplicates = _db_counts(db)
    assert stored["disconnect_gaps"] == cut  # one gap row per outage, with start and end
    assert duplicates == 0
    total = counts["total"]
    assert total["pending"] == 0
    assert total["messages"] == total["data"] + total["control"] + total["ignored"] + total["quarantined"]
    for table in DATA_TABLES:
        assert stored[table] == total[table], table
    assert stored["quarantine"] == total["quarantined"] > 0  # the repeated trades, refused
