"""The collector's connections: which sources to open for each configured exchange.

Each exchange gets one ``WebsocketSource`` with that exchange's ``FeedProtocol`` (subscriptions,
heartbeats, pings); Deribit gets as many as its option chain needs, at most
``feeds.deribit_max_channels`` channels each (plan 003, Appendix A), from the instruments its
``public/get_instruments`` lists. ``DeribitChain`` keeps that subscription current while the
collector runs: new listings are subscribed, expired options dropped.

Instruments follow ``feeds.assets``-style defaults: BTC and ETH against USD (USDT on Binance and
Bybit). Adapters that re-subscribe after a book gap are attached to their protocols here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from dataflows.adapters import AdapterSet, binance
from dataflows.adapters.base import FeedProtocol
from dataflows.adapters.bybit import BybitProtocol
from dataflows.adapters.coinbase import CoinbaseProtocol
from dataflows.adapters.deribit import (
    DeribitProtocol,
    SubscriptionManager,
    apply_plan,
    fetch_instruments,
)
from dataflows.adapters.kraken import KrakenProtocol
from dataflows.clock import Clock
from dataflows.config import Config
from dataflows.logs import log_event
from dataflows.ws_source import WebsocketSource

log = logging.getLogger(__name__)

ASSETS = ("BTC", "ETH")
DERIBIT_REFRESH_S = 300.0  # how often the option chain is re-listed


def http_base(ws_url: str) -> str:
    """``ws://host:port/ws/api/v2`` → ``http://host:port`` (the same server's REST side)."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def binance_protocol(base_url: str) -> FeedProtocol:
    streams = [
        f"{a.lower()}usdt@{channel}"
        for a in ASSETS
        for channel in ("bookTicker", "aggTrade", "depth@100ms", "markPrice")
    ]
    return FeedProtocol(binance.combined_stream_url(base_url, streams))


def static_protocols(exchange: str, url: str):
    """The protocol of an exchange with a fixed subscription (all but Deribit)."""
    if exchange == "binance":
        return binance_protocol(url)
    if exchange == "coinbase":
        return CoinbaseProtocol(url, product_ids=tuple(f"{a}-USD" for a in ASSETS))
    if exchange == "kraken":
        return KrakenProtocol(url, pairs=tuple(f"{a}/USD" for a in ASSETS), version=2)
    if exchange == "bybit":
        return BybitProtocol(url, symbols=tuple(f"{a}USDT" for a in ASSETS))
    raise ValueError(f"no static protocol for {exchange!r}")


class DeribitChain:
    """Deribit's connections, planned from the instrument list and re-planned as it changes."""

    def __init__(self, ws_url: str, currencies: list[str], max_channels: int,
                 clock: Clock, make_source: Callable[[DeribitProtocol, str], WebsocketSource],
                 adapter) -> None:
        self.ws_url = ws_url
        self.manager = SubscriptionManager(currencies, max_per_connection=max_channels)
        self.clock = clock
        self.make_source = make_source
        self.adapter = adapter
        self.protocols: list[DeribitProtocol] = []
        self.sources: list[WebsocketSource] = []
        self.currencies = list(currencies)

    def _instruments(self) -> list:
        out = []
        for currency in self.currencies:
            out += fetch_instruments(http_base(self.ws_url), currency, "option")
        return out

    async def plan(self) -> list[WebsocketSource]:
        """(Re)list the chain; return the sources of connections that did not exist before."""
        loop = asyncio.get_running_loop()
        instruments = await loop.run_in_executor(None, self._instruments)
        wanted = self.manager.wanted(instruments, self.clock.now())
        current = [p.channels for p in self.protocols]
        plan = self.manager.diff(current, wanted)
        self.protocols = apply_plan(self.protocols, plan, self.ws_url)
        new_sources = []
        for i, protocol in enumerate(self.protocols[len(self.sources):], start=len(self.sources)):
            self.adapter.attach(protocol)
            source = self.make_source(protocol, f"deribit-{i + 1}")
            self.sources.append(source)
            new_sources.append(source)
        log_event(
            log, logging.INFO, "deribit chain planned", channels=len(wanted),
            connections=len(self.protocols), changes=len(plan.changes),
        )
        return new_sources


def build_sources(
    cfg: Config, urls: dict[str, str], adapters: AdapterSet, clock: Clock,
) -> tuple[list[WebsocketSource], DeribitChain | None]:
    """Sources of every configured exchange except Deribit's option chain, which the returned
    ``DeribitChain`` plans (it needs the instrument list, fetched asynchronously)."""
    feeds = cfg.feeds

    def make_source(protocol, name: str) -> WebsocketSource:
        return WebsocketSource(
            protocol, protocol.exchange or name.split("-")[0], clock=clock, label=name,
            batch_max_messages=feeds.batch_max_messages,
            batch_max_latency_s=feeds.batch_max_latency_s,
            reconnect_initial_s=feeds.reconnect_initial_s,
            reconnect_max_s=feeds.reconnect_max_s,
            silence_timeout_s=feeds.silence_timeout_s,
        )

    sources: list[WebsocketSource] = []
    chain = None
    for exchange in feeds.exchanges:
        url = urls[exchange]
        if exchange == "deribit":
            chain = DeribitChain(
                url, list(feeds.deribit_currencies), feeds.deribit_max_channels, clock,
                lambda p, name: make_source(p, name), adapters["deribit"],
            )
            continue
        protocol = static_protocols(exchange, url)
        protocol.exchange = exchange
        if exchange == "bybit":
            adapters["bybit"].attach(protocol)
        sources.append(make_source(protocol, exchange))
    return sources, chain
