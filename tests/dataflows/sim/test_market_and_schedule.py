"""The shared market, the per-venue books, the scheduler (driven without sockets), and Deribit's
heartbeat protocol."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import numpy as np
import pytest

from dataflows.clock import SimulatedClock
from dataflows.sim import MultiExchangeSimulator, SimConfig
from dataflows.sim.market import BookView, Ladder, Quoter, SharedMarket, rng_for
from tests.dataflows.sim._client import Client, run


def test_shared_market_is_seeded_and_venues_quote_within_a_few_bps():
    a, b, c = SharedMarket(7), SharedMarket(7), SharedMarket(8)
    basis = []
    for _ in range(3000):
        for m in (a, b, c):
            m.step(0.05)
        basis.append([a.venue_mid(v, "BTC") / a.mid("BTC") - 1
                      for v in ("binance", "coinbase", "kraken", "bybit", "deribit")])
    assert a.mid("BTC") == b.mid("BTC") != c.mid("BTC")
    assert a.funding_rate("ETH") == b.funding_rate("ETH")
    basis = np.array(basis)
    assert np.abs(basis).max() < 15e-4 and basis.std() > 0.5e-4  # a few bps, not zero
    assert abs(a.perp_mark("BTC") / a.index("BTC") - 1) < 3e-3
    assert a.index("ETH") == a.mid("ETH")


def test_ladder_changes_rebuild_the_book():
    ladder = Ladder(10, 5, rng_for(1, "test"), 0.01, 1e-5, 20_000.0)
    book = {"bid": {}, "ask": {}}
    rng = np.random.default_rng(2)
    mid = 97_000.0
    for _ in range(300):
        mid *= np.exp(rng.normal(0, 2e-5))
        bid, ask = int(mid * 99.99), int(mid * 100.01) + 1
        for side, k, size in ladder.update(bid, 0.5, ask, 0.7):
            if size == 0:
                book[side].pop(k)
            else:
                book[side][k] = size
        assert book["bid"] == ladder.bids and book["ask"] == ladder.asks
        assert len(ladder.bids) == len(ladder.asks) == 10
        assert max(ladder.bids) == bid < ask == min(ladder.asks)
    view = BookView(3)
    view.update(ladder)
    bids, asks = view.snapshot()
    assert [k for k, _ in bids] == sorted(ladder.bids, reverse=True)[:3]
    assert [k for k, _ in asks] == sorted(ladder.asks)[:3]


def test_quoter_never_crosses_and_trades_at_the_touch():
    q = Quoter("BTC-PERPETUAL", "BTC", 0.5, 1e-8, 0.3, rng_for(3, "q"), size_in_usd=10.0,
               ladder_depth=5)
    for mid in np.linspace(96_000, 98_000, 200):
        q.requote(float(mid))
        assert q.bid < q.ask and q.bid % 0.5 == 0 and q.bid_size % 10 == 0
        price, size, side = q.trade()
        assert price == (q.ask if side == "buy" else q.bid) and size % 10 == 0


def _driven(seed: int, until_s: float):
    """A simulator whose schedule is run to ``until_s`` without sockets or sleeping."""
    config = SimConfig(option_rate_hz=20.0)
    sim = MultiExchangeSimulator(seed=seed, config=config, clock=SimulatedClock(1_732_000_000.0),
                                 faults="malformed=0.1,skip_seq=0.1")
    sim.drive(until_s)
    return sim


def test_the_schedule_alone_determines_the_market_and_every_venue_state():
    a, b, c = _driven(4, 8.0), _driven(4, 8.0), _driven(5, 8.0)
    state = [lambda s: s.market.mid("BTC"), lambda s: s.market.funding_rate("ETH"),
             lambda s: s.venues["binance"].markets["BTCUSDT"].depth_id,
             lambda s: s.venues["coinbase"].products["ETH-USD"].sequence,
             lambda s: s.venues["kraken"].pairs["BTC/USD"].trade_id,
             lambda s: s.venues["bybit"].symbols["BTCUSDT"].u[50],
             lambda s: s.venues["deribit"].perps["BTC"].book.change_id,
             lambda s: float(s.venues["deribit"].chains["BTC"].quotes.mark_coin.sum())]
    for f in state:
        assert f(a) == f(b)
    assert a.market.mid("BTC") != c.market.mid("BTC")
    assert a.ctx.now_ts == pytest.approx(1_732_000_008.0)


def test_the_option_chain_is_relisted_when_an_expiry_passes():
    start = datetime(2024, 11, 19, 7, 45, tzinfo=timezone.utc).timestamp()
    config = SimConfig(exchanges=("deribit",), market_step_hz=1.0, perp_rate_hz=0.1,
                       trade_rate_hz=0.1, index_rate_hz=0.1, option_rate_hz=0.0,
                       option_trade_rate_hz=0.0, chain_refresh_s=30.0)
    sim = MultiExchangeSimulator(seed=1, config=config, clock=SimulatedClock(start))
    sim.drive(0.0)
    chain = sim.venues["deribit"].chains["BTC"]
    assert chain.spec.expiries[0].code == "19NOV24"
    sim.drive(20 * 60.0)  # past 08:00 UTC
    relisted = sim.venues["deribit"].chains["BTC"]
    assert relisted.spec.expiries[0].code == "20NOV24"
    assert len(relisted.spec.expiries) >= 10
    kept = set(chain.ids) & set(relisted.ids)
    assert kept and all(chain.ids[n] == relisted.ids[n] for n in kept)  # ids are stable


def test_deribit_heartbeats_are_sent_and_enforced():
    async def scenario():
        config = SimConfig(exchanges=("deribit",), deribit_min_heartbeat_s=0.3)
        async with MultiExchangeSimulator(seed=3, config=config) as sim:
            url = sim.urls["deribit"]

            class Answering:  # replies to test_request like DeribitProtocol does
                def on_open(self):
                    return [json.dumps({"jsonrpc": "2.0", "id": 1, "method": "public/set_heartbeat",
                                        "params": {"interval": 0.3}})]

                def on_message(self, raw):
                    if "test_request" in raw:
                        return [json.dumps({"jsonrpc": "2.0", "id": 9, "method": "public/test"})]
                    return []

                def outgoing(self):
                    return []

            silent_req = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "public/set_heartbeat",
                                     "params": {"interval": 0.3}})
            too_fast = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "public/set_heartbeat",
                                   "params": {"interval": 0.1}})
            async with Client(url, protocol=Answering()) as good, \
                    Client(url, [silent_req, too_fast]) as silent:
                await asyncio.sleep(1.6)
                silent_closed = silent.closed
                good_closed = good.closed
            return good, silent, silent_closed, good_closed, sim.sent_counts("deribit")

    good, silent, silent_closed, good_closed, counts = run(scenario())
    requests = [m for m in good.texts if "test_request" in m]
    assert len(requests) >= 3 and good_closed is None
    assert silent_closed is not None and silent_closed.rcvd.code == 1000
    assert "not answered" in silent_closed.rcvd.reason
    answers = {m["id"]: m for m in silent.parsed() if "id" in m}
    assert answers[1]["result"] == "ok" and answers[2]["error"]["code"] == -32602
    assert counts["heartbeat"] == len(requests) + sum("test_request" in m for m in silent.texts)
