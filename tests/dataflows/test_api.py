"""dataflows.api: a real tornado server on 127.0.0.1 (a free port) over a pipeline whose graph
streams are plain streamz Streams feeding the real views, emitted into as the graph would; one
test runs the whole live Pipeline."""

from __future__ import annotations

import asyncio
import json
import math
import socket
from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import urlencode

import numpy as np
import pytest
import websockets
from streamz import Stream
from tornado.httpclient import AsyncHTTPClient

from dataflows.analytics import FitOutcome, expiry_at
from dataflows.api import (
    CLOSE_UNAUTHORIZED,
    TOKEN_ENV,
    ApiServer,
    load_token,
    token_matches,
)
from dataflows.clock import SimulatedClock
from dataflows.config import load_config
from dataflows.hedging import HedgeNode
from dataflows.ledger import Ledger
from dataflows.views import VIEWS
from models.desk import DeskConfig, HedgeDesk
from models.errors import HedgeflowError
from models.option_book import SECONDS_PER_YEAR
from models.oracle import MedianOracle
from models.premium import FlatSurface, quote_from_surface
from models.records import Alert, OraclePrice, PremiumQuoteRecord, VolatilityEstimate

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
SPOT = 100_000.0
TOKEN = "test-token-5f2a"


@dataclass(frozen=True)
class FlatFit(FlatSurface):
    """A flat surface with a forward, as models.surface's fit has: what the quote reads."""

    spot_usd: float = SPOT
    carry_annual: float = 0.05

    def forward(self, T):
        return self.spot_usd * np.exp(self.carry_annual * np.asarray(T, dtype=float))


def price(asset: str = "BTC", ts: float = T0, usd: float = SPOT, status: str = "ok",
          sources: tuple[str, ...] = ("binance:BTCUSDT", "coinbase:BTC-USD", "kraken:BTC/USD")
          ) -> OraclePrice:
    return OraclePrice(asset=asset, ts=ts, price_usd=usd, confidence_usd=5.0,
                       n_sources=len(sources), status=status, sources=sources)


def fake_pipeline(**api_overrides) -> SimpleNamespace:
    """What ApiServer and the views read of a Pipeline: its config, clock, graph streams, ledger,
    writer, the hedge node and its steps, and the views."""
    overrides = {"api.port": 0, **{f"api.{k}": v for k, v in api_overrides.items()}}
    config = load_config(env={}, overrides=overrides)
    graph = SimpleNamespace(
        raw=Stream(), health=Stream(), oracle_prices=Stream(), alerts=Stream(),
        volatility=Stream(), surfaces=Stream(), premium_quotes=Stream(), policy_risk=Stream(),
        analytics=True, ledger=Ledger(), writer=SimpleNamespace(buffered_rows=7), publisher=None,
        oracle=MedianOracle())
    node = HedgeNode(HedgeDesk(DeskConfig(), T0))
    pipeline = SimpleNamespace(config=config, clock=SimulatedClock(T0 + 1.0), graph=graph,
                               hedge=node, desk_steps=Stream())
    # The views the API reads, attached as attach_views does (not every view: others read streams
    # this stand-in graph does not have).
    pipeline.views = {name: VIEWS[name](pipeline)
                      for name in ("oracle", "connections", "alerts", "analytics", "hedge")}
    return pipeline


def release(pipeline) -> None:
    """streamz keeps sinks in a global set: destroy the ones on this pipeline's streams."""
    g = pipeline.graph
    for stream in (g.raw, g.health, g.oracle_prices, g.alerts, g.volatility, g.surfaces,
                   g.premium_quotes, g.policy_risk, pipeline.desk_steps):
        for node in list(stream.downstreams):
            node.destroy()


def with_server(body, token: str | None = TOKEN, **api_overrides):
    """Run ``await body(server, pipeline, http)`` against a started server, then stop it."""
    async def main():
        pipeline = fake_pipeline(**api_overrides)
        server = ApiServer(pipeline, token=token, env={})
        await server.start()
        http = AsyncHTTPClient(force_instance=True)
        try:
            return await body(server, pipeline, http)
        finally:
            http.close()
            await server.stop()
            release(pipeline)

    return asyncio.run(main())


async def get(http, server, path: str, params: dict | None = None, **kw):
    url = server.url + path + ("?" + urlencode(params) if params else "")
    response = await http.fetch(url, raise_error=False, **kw)
    body = response.body.decode()
    if response.headers.get("Content-Type", "").startswith("application/json"):
        return response.code, json.loads(body)
    return response.code, body


def ws_url(server) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


async def next_data(ws, timeout: float = 5.0) -> dict:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if message["type"] == "data":
            return message


def feed_surface(pipeline, *, ts: float = T0, vol: float = 0.6) -> FlatFit:
    fit = FlatFit(vol)
    pipeline.graph.surfaces.emit([FitOutcome("BTC", ts, SPOT, fit, None)])
    return fit


# ------------------------------------------------------------------------------ HTTP


def test_oracle_endpoints_give_the_latest_price_of_every_asset_and_of_one():
    async def body(server, pipeline, http):
        pipeline.graph.oracle_prices.emit([price("BTC", T0 - 1, 99_000.0), price("ETH", T0, 3_000.0)])
        pipeline.graph.oracle_prices.emit([price("BTC", T0, 101_000.0)])
        code, every = await get(http, server, "/api/oracle")
        assert code == 200 and set(every["prices"]) == {"BTC", "ETH"}
        assert every["prices"]["BTC"]["price_usd"] == 101_000.0
        code, one = await get(http, server, "/api/oracle/btc")
        assert code == 200 and one["asset"] == "BTC" and one["status"] == "ok"
        assert one["time_utc"] == "2026-01-01T00:00:00Z" and len(one["sources"]) == 3
        code, missing = await get(http, server, "/api/oracle/DOGE")
        assert code == 404 and "BTC, ETH" in missing["error"]
        code, unknown = await get(http, server, "/api/oracle", {"asset": "BTC"})
        assert code == 400 and "unknown parameter 'asset'" in unknown["error"]
        code, nowhere = await get(http, server, "/api/nothing")
        assert code == 404 and "GET /api" in nowhere["error"]

    with_server(body)


def test_alerts_endpoint_filters_by_severity_and_time_and_refuses_bad_values():
    async def body(server, pipeline, http):
        pipeline.graph.alerts.emit([
            Alert(T0 + i, "oracle_status" if i % 2 else "divergence",
                  "critical" if i == 3 else "warning", f"alert {i}", "BTC") for i in range(5)])
        code, out = await get(http, server, "/api/alerts", {"limit": 2})
        assert code == 200 and [a["message"] for a in out["alerts"]] == ["alert 3", "alert 4"]
        assert out["counts_by_kind"] == {"divergence": 3, "oracle_status": 2}
        code, out = await get(http, server, "/api/alerts", {"severity": "critical"})
        assert [a["message"] for a in out["alerts"]] == ["alert 3"]
        code, out = await get(http, server, "/api/alerts", {"since_ts": T0 + 2.5})
        assert [a["message"] for a in out["alerts"]] == ["alert 3", "alert 4"]
        for params, fragment in [({"limit": 0}, "limit must be >= 1"),
                                 ({"limit": 2.5}, "whole number"),
                                 ({"limit": "many"}, "must be a number"),
                                 ({"severity": "loud"}, "info, warning, critical")]:
            code, out = await get(http, server, "/api/alerts", params)
            assert code == 400 and fragment in out["error"], (params, out)

    with_server(body)


def test_hedge_endpoint_shows_the_desks_latest_step_and_its_gate():
    async def body(server, pipeline, http):
        code, out = await get(http, server, "/api/hedge")
        assert code == 200 and out["latest"] is None and out["asset"] == "BTC"
        steps = pipeline.hedge.on_prices([price(ts=T0 + 60.0)])
        pipeline.desk_steps.emit(steps)
        code, out = await get(http, server, "/api/hedge")
        latest = out["latest"]
        assert latest["spot_usd"] == SPOT and latest["ts_s"] == T0 + 60.0
        assert latest["position"]["spot_coin"] == pytest.approx(0.27)
        assert latest["rejected_orders"] == len(steps[-1].rejections)
        assert out["gate"]["trading_paused"] is False
        names = {b["name"] for b in out["gate"]["breakers"]}
        assert names == set(pipeline.hedge.desk.gate.breaker_states())

    with_server(body)


def test_the_hedge_endpoint_says_how_to_enable_a_disabled_desk():
    async def body(server, pipeline, http):
        pipeline.views["hedge"].node = None
        code, out = await get(http, server, "/api/hedge")
        assert code == 404 and "[hedge].enabled" in out["error"]

    with_server(body)


def test_premium_quote_prices_the_live_surface_like_the_model_and_caches_it():
    async def body(server, pipeline, http):
        now = pipeline.clock.now()
        pipeline.graph.oracle_prices.emit([price(ts=now)])
        fit = feed_surface(pipeline)
        code, quote = await get(http, server, "/api/premium",
                                {"asset": "btc", "tier": "standard", "expiry_days": 30})
        assert code == 200, quote
        expiry = expiry_at(now, 30)
        years = (expiry - now) / SECONDS_PER_YEAR
        config = server.premium_config.with_forward(SPOT, float(fit.forward(years)), years)
        reference = quote_from_surface(fit, SPOT, 0.9 * SPOT, years, 1.0, 0.6, config=config,
                                       tier="standard")
        assert quote["asset"] == "BTC" and quote["tier"] == "standard"
        assert quote["strike_usd"] == pytest.approx(0.9 * SPOT)
        assert quote["premium_usd"] == pytest.approx(reference.premium_usd, rel=1e-3)
        assert sum(f["usd"] for f in quote["breakdown"]) == pytest.approx(quote["premium_usd"])
        assert quote["vol_reference_source"] == "surface ATM" and quote["cache"]["hit"] is False
        code, again = await get(http, server, "/api/premium",
                                {"asset": "BTC", "tier": "standard", "expiry_days": 30})
        assert again["cache"]["hit"] is True and again["premium_usd"] == quote["premium_usd"]

        # the same strike without the tier's markup (custom: 10 % against standard's 7.5 %)
        code, custom = await get(http, server, "/api/premium",
                                 {"asset": "BTC", "protection_level": 0.9, "expiry_days": 30})
        assert code == 200 and custom["tier"] == "" and custom["premium_usd"] > quote["premium_usd"]
        # a ready 24 h realized volatility becomes the reference, as in the graph
        pipeline.graph.volatility.emit([VolatilityEstimate("BTC", now, 86_400.0, 1_440, 0.4, 0.4, True)])
        code, post = await get(http, server, "/api/premium", method="POST", body=json.dumps(
            {"asset": "BTC", "strike_usd": 80_000, "expiry": "2026-03-27", "amount_coin": 2}))
        assert code == 200 and post["vol_reference_source"] == "realized 24h"
        assert post["vol_reference_annual"] == pytest.approx(0.4, abs=1e-4)
        assert post["expiry_utc"] == "2026-03-27T08:00:00Z" and post["amount_coin"] == 2.0
        assert post["strike_usd"] == pytest.approx(80_000, rel=1e-4)

    with_server(body)


@pytest.mark.parametrize("params, fragment", [
    ({}, "asset is required"),
    ({"asset": "BTC", "expiry_days": 7}, "give strike_usd, protection_level"),
    ({"asset": "BTC", "tier": "standard"}, "expiry (YYYY-MM-DD"),
    ({"asset": "BTC", "strike_usd": -5, "expiry_days": 7}, "strike_usd must be > 0"),
    ({"asset": "BTC", "protection_level": 3, "expiry_days": 7}, "protection_level must be <= 2"),
    ({"asset": "BTC", "strike_usd": 9e4, "protection_level": 0.9, "expiry_days": 7}, "not both"),
    ({"asset": "BTC", "tier": "basic", "expiry": "2025-06-27"}, "is not after now"),
    ({"asset": "BTC", "tier": "basic", "expiry": "next friday"}, "expiry must be a date"),
    ({"asset": "BTC", "tier": "basic", "expiry": "2026-06-26", "expiry_days": 7}, "not both"),
    ({"asset": "BTC", "tier": "gold", "expiry_days": 7}, "the tiers are basic, standard, premium"),
    ({"asset": "BTC", "tier": "basic", "expiry_days": 7, "amount_coin": "nan"}, "finite number"),
    ({"asset": "BTC", "tier": "basic", "expiry_days": 7, "amonut_coin": 1}, "unknown parameter"),
])
def test_bad_premium_requests_get_400_saying_what_was_wrong(params, fragment):
    async def body(server, pipeline, http):
        pipeline.graph.oracle_prices.emit([price(ts=pipeline.clock.now())])
        feed_surface(pipeline)
        code, out = await get(http, server, "/api/premium", params)
        assert code == 400 and fragment in out["error"], out

    with_server(body)


def test_premium_refuses_bad_bodies_and_a_pipeline_without_a_fit_price_or_surface():
    async def body(server, pipeline, http):
        request = {"asset": "BTC", "tier": "basic", "expiry_days": 7}
        code, out = await get(http, server, "/api/premium", method="POST", body="{not json")
        assert code == 400 and "JSON object" in out["error"]
        code, out = await get(http, server, "/api/premium", method="POST", body="[1, 2]")
        assert code == 400 and "JSON object" in out["error"]
        code, out = await get(http, server, "/api/premium", request)
        assert code == 404 and "no oracle price for BTC" in out["error"]
        pipeline.graph.oracle_prices.emit([price(ts=pipeline.clock.now(), status="degraded")])
        code, out = await get(http, server, "/api/premium", request)
        assert code == 503 and "status degraded" in out["error"]
        pipeline.graph.oracle_prices.emit([price(ts=pipeline.clock.now())])
        code, out = await get(http, server, "/api/premium", request)
        assert code == 503 and "no live BTC volatility surface" in out["error"]
        feed_surface(pipeline, ts=pipeline.clock.now() - 3_600.0)
        code, out = await get(http, server, "/api/premium", request)
        assert code == 503 and "surface_max_age_s" in out["error"]

    with_server(body)


def test_http_needs_the_token_when_not_on_loopback():
    async def body(server, pipeline, http):
        server.http_open = False  # as if [api].host were a public address
        code, out = await get(http, server, "/api/oracle")
        assert code == 401 and "Authorization: Bearer" in out["error"]
        code, out = await get(http, server, "/api/oracle",
                              headers={"Authorization": f"Bearer {TOKEN}"})
        assert code == 200

    with_server(body)


def test_metrics_endpoint_serves_the_text_format_with_the_api_queues():
    async def body(server, pipeline, http):
        response = await http.fetch(server.url + "/metrics")
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.body.decode()
        assert "hedgeflow_writer_buffered_rows 7\n" in text
        assert "hedgeflow_api_clients 0\n" in text

    with_server(body)


def test_a_port_in_use_is_a_clear_error():
    async def main():
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            pipeline = fake_pipeline(port=busy.getsockname()[1])
            try:
                with pytest.raises(HedgeflowError, match="HEDGEFLOW_API__PORT") as exc:
                    await ApiServer(pipeline, token=TOKEN).start()
                assert "cannot serve the API on 127.0.0.1" in str(exc.value)
            finally:
                release(pipeline)

    asyncio.run(main())


# ------------------------------------------------------------------------------ token


def test_the_token_comes_from_the_environment_before_the_file(tmp_path):
    path = tmp_path / "token"
    path.write_text("from-file\n")
    assert load_token(str(path), env={TOKEN_ENV: "from-env"}) == "from-env"
    assert load_token(str(path), env={}) == "from-file"
    assert load_token("", env={}) is None
    with pytest.raises(HedgeflowError, match="cannot read the API token file"):
        load_token(str(tmp_path / "missing"), env={})
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(HedgeflowError, match="is empty"):
        load_token(str(tmp_path / "empty"), env={})
    assert token_matches("abc", "abc") and not token_matches("abc", "abd")
    assert not token_matches(None, "") and not token_matches("abc", None)


# ------------------------------------------------------------------------------ WebSocket


def test_a_subscriber_receives_its_topics_and_only_those():
    async def body(server, pipeline, http):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with websockets.connect(ws_url(server), additional_headers=headers) as ws:
            assert json.loads(await ws.recv()) == {"type": "auth", "ok": True}
            await ws.send(json.dumps({"op": "subscribe", "topics": ["oracle", "hedge"]}))
            assert json.loads(await ws.recv()) == {"type": "subscribed", "topics": ["hedge", "oracle"]}
            pipeline.graph.alerts.emit([Alert(T0, "divergence", "warning", "not subscribed")])
            pipeline.graph.premium_quotes.emit([PremiumQuoteRecord(
                "BTC", T0, "basic", 8e4, T0 + 86_400.0, 1.0, SPOT, SPOT, 0.6, 0.6, 0.6, 100.0,
                0.0, 80.0, 0.0, 10.0, 5.0, 5.0, 0.0)])
            pipeline.graph.oracle_prices.emit([price(usd=100_500.0)])
            message = await next_data(ws)
            assert message["topic"] == "oracle" and message["data"][0]["price_usd"] == 100_500.0
            pipeline.desk_steps.emit(pipeline.hedge.on_prices([price(ts=T0 + 60.0)]))
            message = await next_data(ws)
            assert message["topic"] == "hedge" and message["data"]["spot_usd"] == SPOT
            assert message["data"]["steps"] == 1 and "equity_usd" in message["data"]
            await ws.send(json.dumps({"op": "unsubscribe", "topics": ["oracle"]}))
            await ws.send(json.dumps({"op": "subscribe", "topics": ["premiums"]}))
            assert json.loads(await ws.recv())["topics"] == ["hedge"]
            assert json.loads(await ws.recv())["topics"] == ["hedge", "premiums"]
            pipeline.graph.oracle_prices.emit([price(usd=1.0)])
            pipeline.graph.premium_quotes.emit([PremiumQuoteRecord(
                "BTC", T0, "premium", 9.5e4, T0 + 86_400.0, 1.0, SPOT, SPOT, 0.6, 0.6, 0.6, 900.0,
                0.0, 800.0, 0.0, 50.0, 25.0, 25.0, 0.0)])
            message = await next_data(ws)
            assert message["topic"] == "premiums" and message["data"][0]["tier"] == "premium"
            assert message["data"][0]["expiry_time_utc"] == "2026-01-02T00:00:00Z"
        assert server.hub.published["alerts"] == 0  # nobody subscribed: nothing serialized

    with_server(body)


def test_bad_requests_get_an_error_and_the_connection_stays_open():
    async def body(server, pipeline, http):
        async with websockets.connect(ws_url(server)) as ws:
            await ws.send(json.dumps({"op": "auth", "token": TOKEN}))
            assert json.loads(await ws.recv())["ok"] is True
            for request, fragment in [("hello", "not JSON"), ("[1]", '"op"'),
                                      ('{"op": "subscribe", "topics": ["gossip"]}', "unknown topics"),
                                      ('{"op": "subscribe", "topics": "oracle"}', "non-empty list"),
                                      ('{"op": "dance"}', "unknown op")]:
                await ws.send(request)
                reply = json.loads(await ws.recv())
                assert reply["type"] == "error" and fragment in reply["error"], (request, reply)
            await ws.send(json.dumps({"op": "ping"}))
            assert json.loads(await ws.recv()) == {"type": "pong", "ts": T0 + 1.0}

    with_server(body)


@pytest.mark.parametrize("first, reason", [
    ({"op": "auth", "token": "wrong"}, "invalid token"),
    ({"op": "subscribe", "topics": ["oracle"]}, "authenticate first"),
])
def test_a_wrong_or_missing_token_is_refused(first, reason):
    async def body(server, pipeline, http):
        async with websockets.connect(ws_url(server),
                                      additional_headers={"Authorization": "Bearer nope"}) as ws:
            await ws.send(json.dumps(first))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == CLOSE_UNAUTHORIZED and reason in closed.value.rcvd.reason
        assert server.hub.dropped["auth"] == 1 and not server.hub.clients

    with_server(body)


def test_with_no_token_configured_every_client_is_told_how_to_configure_one():
    async def body(server, pipeline, http):
        async with websockets.connect(ws_url(server)) as ws:
            error = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert error["type"] == "error" and TOKEN_ENV in error["error"]
            assert "token_file" in error["error"]
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == CLOSE_UNAUTHORIZED and TOKEN_ENV in closed.value.rcvd.reason
        assert not server.hub.clients and server.hub.dropped["no_token"] == 1

    with_server(body, token=None)


def test_a_slow_client_is_dropped_while_the_others_keep_receiving():
    """The slow client never reads: once the socket buffers are full its queue (4 messages) fills
    and it is dropped; the fast client gets every message, and the emits never wait."""

    async def body(server, pipeline, http):
        big = tuple(f"venue{i:04d}:{'X' * 48}" for i in range(1_000))  # ~60 kB a message
        headers = {"Authorization": f"Bearer {TOKEN}"}
        slow_sock = socket.socket()
        slow_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow_sock.connect(("127.0.0.1", server.port))
        slow_sock.setblocking(False)
        slow = await websockets.connect(ws_url(server), sock=slow_sock, additional_headers=headers,
                                        max_queue=1)
        fast = await websockets.connect(ws_url(server), additional_headers=headers, max_size=None)
        for ws in (slow, fast):
            await ws.recv()  # auth ok
            await ws.send(json.dumps({"op": "subscribe", "topics": ["oracle"]}))
        await slow.recv()
        await fast.recv()
        received = []

        async def read_fast():
            async for text in fast:
                received.append(json.loads(text)["data"][0]["price_usd"])

        reader = asyncio.create_task(read_fast())
        sent = 0
        loop = asyncio.get_running_loop()

        async def emit() -> None:
            nonlocal sent
            started = loop.time()
            pipeline.graph.oracle_prices.emit([price(usd=float(sent), sources=big)])
            assert loop.time() - started < 0.5  # an emit only serializes and queues
            sent += 1
            while len(received) < sent:  # the fast client reads it before the next one
                await asyncio.sleep(0.001)

        while not server.hub.dropped["slow"] and sent < 2_000:
            await emit()
        assert server.hub.dropped["slow"] == 1, f"not dropped after {sent} messages"
        assert len(server.hub.clients) == 1
        for _ in range(10):
            await emit()
        assert received == [float(i) for i in range(sent)]
        code, metrics = await get(http, server, "/metrics")
        assert 'hedgeflow_api_clients_dropped_total{reason="slow"} 1\n' in metrics
        reader.cancel()
        await fast.close()
        slow.transport.abort()

    with_server(body, client_queue_size=4)


# ------------------------------------------------------------------------------ a real pipeline


@pytest.mark.integration
def test_a_live_pipeline_serves_prices_quotes_and_streams(tmp_path, monkeypatch):
    from dataflows.runtime import Pipeline

    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    cfg = load_config(env={}, overrides={
        "storage.db_path": str(tmp_path / "api.duckdb"), "simulator.port": 0, "api.port": 0,
        "chain.enabled": False, "analytics.surface_interval_s": 1.0,
        "analytics.risk_enabled": False})

    async def main():
        pipeline = Pipeline(cfg)
        await pipeline.start()
        http = AsyncHTTPClient(force_instance=True)
        try:
            server = pipeline.api
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with websockets.connect(ws_url(server), additional_headers=headers) as ws:
                await ws.send(json.dumps({"op": "subscribe", "topics": list(("oracle", "hedge",
                                                                              "premiums"))}))
                topics = set()
                while topics != {"oracle", "hedge", "premiums"}:
                    topics.add((await next_data(ws, timeout=30.0))["topic"])
            code, prices = await get(http, server, "/api/oracle")
            assert code == 200 and {"BTC", "ETH"} <= set(prices["prices"])
            code, quote = await get(http, server, "/api/premium",
                                    {"asset": "BTC", "tier": "basic", "expiry_days": 7})
            assert code == 200, quote
            assert quote["surface"]["n_options"] > 0 and quote["premium_usd"] > 0.0
            assert math.isclose(quote["spot_usd"], prices["prices"]["BTC"]["price_usd"], rel_tol=0.01)
            code, hedge = await get(http, server, "/api/hedge")
            assert code == 200 and hedge["latest"] is not None
        finally:
            http.close()
            await pipeline.stop()
        assert pipeline.api is None

    asyncio.run(main())
