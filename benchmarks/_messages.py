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
