"""Realistic Binance combined-stream messages for the benchmarks, from the simulator's markets."""

from __future__ import annotations

import time

import numpy as np
import orjson

from dataflows.simulator import SymbolMarket
from models.records import RawBatch


def binance_messages(n: int, trade_share: float = 0.2, seed: int = 1) -> list[str]:
    markets = [SymbolMarket("BTCUSDT", seed), SymbolMarket("ETHUSDT", seed)]
    rng = np.random.default_rng(seed)
    out = []
    ms = 1_700_000_000_000
    for i in range(n):
        m = markets[i % 2]
        stream_book, stream_trade = m.stream_names
        if rng.random() < trade_share:
            ms += 1
            out.append(orjson.dumps({"stream": stream_trade, "data": m.next_trade(ms)}).decode())
        else:
            out.append(orjson.dumps({"stream": stream_book, "data": m.next_quote(0.05)}).decode())
    return out


def raw_batches(messages: list[str], size: int) -> list[RawBatch]:
    t0 = 1_700_000_000.0
    return [
        RawBatch("binance", t0 + np.arange(i, min(i + size, len(messages))) * 1e-3,
                 messages[i : i + size])
        for i in range(0, len(messages), size)
    ]


def best_of(fn, repeat: int = 5) -> float:
    """Best wall time of ``repeat`` runs, seconds (the least disturbed by a noisy machine)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def mixed_stream(levels: int = 10, seed: int = 1, now_ms=None):
    """Endless Binance combined-stream messages: 50% bookTicker, 20% aggTrade, 30% depth diffs of
    ``levels`` levels. Ids increase as Binance's do (bookTicker ``u`` and depth ``U``..``u`` share
    the order book's update id space), so nothing is a repeat or a gap. ``now_ms()`` stamps event
    times (default: a fixed start advancing 1 ms per message, for deterministic runs)."""
    import random

    rng = random.Random(seed)
    u, last_depth, agg, mid = 1_000_000, 1_000_000, 5_000_000, 97_000.0
    fixed = [1_700_000_000_000]

    def tick_ms():
        fixed[0] += 1
        return fixed[0]

    clock = now_ms or tick_ms
    while True:
        mid *= 1 + rng.gauss(0, 2e-5)
        ms = clock()
        r = rng.random()
        if r < 0.5:
            u += 1
            yield ('{"stream":"btcusdt@bookTicker","data":{"u":%d,"s":"BTCUSDT","b":"%.2f",'
                   '"B":"1.50000000","a":"%.2f","A":"0.80000000"}}' % (u, mid - 5, mid + 5))
        elif r < 0.7:
            agg += 1
            yield ('{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":%d,"s":"BTCUSDT",'
                   '"a":%d,"p":"%.2f","q":"0.01000000","f":%d,"l":%d,"T":%d,"m":%s,"M":true}}'
                   % (ms, agg, mid, agg, agg, ms, "true" if r < 0.6 else "false"))
        else:
            first = last_depth + 1
            u += levels
            last_depth = u
            bids = ",".join('["%.2f","%.4f"]' % (mid - 5 - i, 0.1 + i) for i in range(levels // 2))
            asks = ",".join('["%.2f","%.4f"]' % (mid + 5 + i, 0.1 + i)
                            for i in range(levels - levels // 2))
            yield ('{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":%d,"s":"BTCUSDT",'
                   '"U":%d,"u":%d,"b":[%s],"a":[%s]}}' % (ms, first, u, bids, asks))
