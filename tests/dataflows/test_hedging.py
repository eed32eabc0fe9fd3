"""dataflows.hedging, the streamz way: build the node, sink_to_list(), emit, assert."""

from __future__ import annotations

import math

import numpy as np
from streamz import Stream

from dataflows import cli
from dataflows.hedging import HedgeNode, desk_records
from models.desk import DeskConfig, HedgeDesk
from models.records import FundingBatch, OraclePrice, VolatilityEstimate

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
SPOT = 100_000.0


def price(ts: float, usd: float = SPOT, status: str = "ok") -> OraclePrice:
    return OraclePrice(asset="BTC", ts=ts, price_usd=usd, confidence_usd=1.0, n_sources=3, status=status)


def ready_vol(ts: float, vol: float = 0.6) -> VolatilityEstimate:
    return VolatilityEstimate("BTC", ts, 86_400.0, 1_440, vol, vol, True)


def node(**kw) -> HedgeNode:
    n = HedgeNode(HedgeDesk(DeskConfig(), T0), **kw)
    n.funding_rate = 0.0001  # as if the perpetual's funding had been read (the gate needs it)
    return n


def test_the_node_steps_the_desk_on_every_ok_price_and_hedges_once_volatility_is_ready():
    n = node()
    source = Stream()
    steps = source.map(n.on_prices).filter(len).sink_to_list()
    source.emit([price(T0 + 60.0)])
    (first,) = steps[0]
    assert first.approved == () and {r.rule for r in first.rejections} == {"volatility_cap"}
    n.on_volatility([ready_vol(T0 + 60.0)])
    for minute in range(2, 20):  # after a refusal the engine waits out its rebalance cooldown
        source.emit([price(T0 + 60.0 * minute)])
    fills = [f for batch in steps for st in batch for f in st.fills]
    assert fills and {f.kind for f in fills} == {"perp"} and fills[0].side == "sell"
    assert n.desk.state.short_perp_coin > 0.0


def test_a_price_that_is_not_ok_is_an_unknown_price_and_trades_nothing():
    n = node()
    n.on_volatility([ready_vol(T0)])
    n.on_prices([price(T0 + 30.0)])
    (st,) = n.on_prices([price(T0 + 60.0, status="degraded")])
    assert st.fills == () and math.isnan(st.spot_usd)


def test_the_desk_starts_at_the_first_ok_price_and_no_breaker_trips_before_it():
    # At a run's start the oracle publishes "degraded" until it has heard enough sources: that is
    # no market yet, not an oracle anomaly.
    n = node()
    n.on_volatility([ready_vol(T0)])
    assert n.on_prices([price(T0 + 1.0, math.nan, status="degraded")]) == []
    assert not n.started
    (st,) = n.on_prices([price(T0 + 2.0)])
    assert n.started and st.spot_usd == SPOT and st.alerts == ()
    assert all(b.state == "closed" for b in n.desk.gate.breaker_states().values())


def test_volatility_from_a_later_bar_is_not_seen_by_an_earlier_price():
    n = node()
    n.on_volatility([ready_vol(T0 + 120.0, 0.9)])  # published with a later bar's close
    n.on_prices([price(T0 + 60.0)])
    assert math.isnan(n.vol_24h_annual)
    n.on_prices([price(T0 + 120.0)])
    assert n.vol_24h_annual == 0.9


def test_a_backtest_price_carries_the_funding_rate_settled_last_at_or_before_it():
    times = np.array([T0 + 3_600.0, T0 + 7_200.0, T0 + 36_000.0])
    rates = np.array([0.0001, -0.0002, 0.0003])
    at = [T0 + 60.0, T0 + 3_600.0, T0 + 3_601.0, T0 + 7_199.5, T0 + 7_200.0, T0 + 40_000.0]
    # searchsorted is the reference; an unsorted history (nonsense, but possible) must be
    # looked up exactly as before
    for history in ((times, rates), (times[::-1].copy(), rates)):
        n = HedgeNode(HedgeDesk(DeskConfig(), T0), backtest=True, funding_history=history)
        seen = []
        step = n.desk.step
        n.desk.step = lambda m, step=step: seen.append(m.funding_rate_per_interval) or step(m)
        n.on_prices([price(t) for t in at])
        index = np.searchsorted(history[0], at, side="right") - 1
        expected = [float(history[1][i]) if i >= 0 else math.nan for i in index]
        assert np.array_equal(seen, expected, equal_nan=True)


def test_funding_comes_from_the_configured_exchange_only():
    n = node(funding_exchange="binance")
    batch = FundingBatch.from_columns(
        exchange=["bybit", "binance"], instrument=["BTCUSDT", "BTCUSDT"], asset=["BTC", "BTC"],
        event_ts=[T0, T0], receive_ts=[T0, T0], mark_usd=[101.0, 100.5], index_usd=[100.0, 100.0],
        funding_rate=[0.0005, 0.0001], next_funding_ts=[T0 + 3_600, T0 + 3_600], raw=["", ""])
    n.on_funding(batch)
    assert (n.perp_mark_usd, n.funding_rate) == (100.5, 0.0001)


def test_the_operator_files_pause_resume_and_flatten_the_desk(tmp_path, capsys, monkeypatch):
    pause, flat = tmp_path / "trading.pause", tmp_path / "trading.flatten"
    monkeypatch.setenv("HEDGEFLOW_HEDGE__PAUSE_FILE", str(pause))
    monkeypatch.setenv("HEDGEFLOW_HEDGE__FLATTEN_FILE", str(flat))
    n = node(pause_file=str(pause), flatten_file=str(flat))
    n.on_volatility([ready_vol(T0)])
    n.on_prices([price(T0 + 60.0)])
    assert n.desk.state.short_perp_coin > 0.0

    assert cli.main(["pause", "--trading", "--why", "maintenance"]) == 0 and pause.exists()
    n.on_tick(T0 + 240.0)
    assert n.desk.gate.pause_state.paused and n.desk.gate.pause_state.who == "operator"
    assert cli.main(["resume", "--trading"]) == 0 and not pause.exists()
    n.on_tick(T0 + 250.0)
    assert not n.desk.gate.pause_state.paused

    assert cli.main(["flatten", "--why", "drill"]) == 0 and flat.exists()
    n.on_tick(T0 + 260.0)
    assert not flat.exists()  # acted on once
    (st,) = n.on_prices([price(T0 + 300.0)])
    assert any(o.reason == "manual_flatten" for o in st.approved)
    assert n.desk.state.short_perp_coin == 0.0 and n.desk.gate.pause_state.paused
    assert "flatten requested" in capsys.readouterr().out
    # The flatten left the pause file: `resume --trading` lifts the pause it stands for.
    assert pause.exists()
    n.on_tick(T0 + 310.0)
    assert cli.main(["resume", "--trading"]) == 0
    n.on_tick(T0 + 320.0)
    assert not n.desk.gate.pause_state.paused


def test_desk_records_go_to_the_live_or_the_backtest_tables():
    n = node()
    n.on_volatility([ready_vol(T0)])
    steps = [st for m in range(1, 4) for st in n.on_prices([price(T0 + 60.0 * m)])]
    live = desk_records(steps, "live", "BTC")
    test = desk_records(steps, "run-1", "BTC", backtest=True)
    assert "desk_equity" in live and "backtest_equity" not in live
    assert len(test["backtest_equity"]) == len(steps) == len(live["position_states"])
    assert {r.run_id for r in test["backtest_equity"]} == {"run-1"}
    assert np.isclose(sum(r.fee_usd for r in test.get("backtest_trades", [])), steps[-1].fees_usd)


def test_a_perpetual_feed_that_goes_quiet_leaves_its_mark_and_rate_unknown():
    n = node(funding_exchange="binance")
    n.on_volatility([ready_vol(T0)])
    batch = FundingBatch.from_columns(
        exchange=["binance"], instrument=["BTCUSDT"], asset=["BTC"], event_ts=[T0 + 60.0],
        receive_ts=[T0 + 60.0], mark_usd=[SPOT * 1.001], index_usd=[SPOT], funding_rate=[0.0001],
        next_funding_ts=[T0 + 3_600], raw=[""])
    n.on_funding(batch)
    (fresh,) = n.on_prices([price(T0 + 90.0)])
    assert fresh.fills and fresh.fills[0].price_usd < SPOT * 1.001  # sold near the fresh mark
    # Ten minutes later nothing new has come from the perpetual's feed: the desk does not trade
    # on a mark or a rate it no longer knows.
    desk = n.desk
    before = desk.state.short_perp_coin
    (stale,) = n.on_prices([price(T0 + 60.0 + 601.0, SPOT * 0.9)])
    assert stale.fills == () and desk.state.short_perp_coin == before
