"""The oracle's hot path: aggregation latency per update, and tick-to-price latency in the graph.

1. Aggregation: ``RobustOracle.update`` + ``price`` for one asset from 5 venues, per call, against
   ``numpy.median`` of the same mids (the plain median the robust price replaces), same run.
2. Tick to oracle price: simulator-format quotes of three venues go through the whole graph
   (normalize, validate, oracle, writer) on a simulated clock; for each published price, the time
   from the newest quote it used arriving (its receive time) to the price leaving the oracle node,
   in wall time.

    .venv/bin/python benchmarks/bench_oracle.py [N_UPDATES]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataflows.clock import SimulatedClock  # noqa: E402
from dataflows.graph import build_graph  # noqa: E402
from models.oracle import RobustOracle, RobustOracleConfig  # noqa: E402
from models.records import QuoteBatch, RawBatch  # noqa: E402
from storage.writer import DuckDBWriter  # noqa: E402

T0 = 1_700_000_000.0
VENUES = [("binance", "BTCUSDT", "USDT"), ("coinbase", "BTC-USD", "USD"), ("kraken", "BTC/USD", "USD"),
          ("bitstamp", "BTCUSD", "USD"), ("okx", "BTC-USDT", "USDT")]


def quotes_at(t: float, mids: np.ndarray) -> QuoteBatch:
    n = len(VENUES)
    return QuoteBatch.from_columns(
        exchange=[v[0] for v in VENUES], instrument=[v[1] for v in VENUES], asset=["BTC"] * n,
        quote_ccy=[v[2] for v in VENUES], event_ts=[t] * n, receive_ts=[t] * n,
        bid=mids - 5, bid_size_coin=[1.0] * n, ask=mids + 5, ask_size_coin=[1.0] * n, raw=[""] * n,
    )


def aggregation(n: int) -> None:
    rng = np.random.default_rng(1)
    oracle = RobustOracle(RobustOracleConfig(min_sources=3, interval_s=1e-9))
    mids = 97_000 * np.exp(np.cumsum(rng.normal(0, 1e-4, n)))[:, None] + rng.normal(0, 3, (n, len(VENUES)))
    batches = [quotes_at(T0 + i * 0.1, mids[i]) for i in range(n)]
    times = np.empty(n)
    for i, b in enumerate(batches):
        t = time.perf_counter()
        oracle.update(b)
        oracle.price("BTC", T0 + i * 0.1)
        times[i] = time.perf_counter() - t
    t = time.perf_counter()
    for row in mids:
        np.median(row)
    ref = (time.perf_counter() - t) / n
    print(f"aggregation, 5 venues: p50 {np.percentile(times, 50) * 1e6:,.0f} µs, p99 "
          f"{np.percentile(times, 99) * 1e6:,.0f} µs per update; numpy.median of the same mids "
          f"{ref * 1e6:,.1f} µs (ratio {ref / np.percentile(times, 50):.3f})")


def tick_to_price(n: int) -> None:
    clock = SimulatedClock()
    with tempfile.TemporaryDirectory() as tmp:
        graph = build_graph(clock=clock, writer=DuckDBWriter(Path(tmp) / "o.duckdb"),
                            oracle=RobustOracle(RobustOracleConfig(min_sources=3, interval_s=0.1)))
        emitted: list[float] = []
        graph.oracle_prices.sink(lambda prices: emitted.append(time.perf_counter()))
        latencies = []
        rng = np.random.default_rng(2)
        mid = 97_000.0
        for i in range(n):
            mid *= 1 + rng.normal(0, 1e-4)
            ts = T0 + i * 0.05
            clock.advance_to(ts)
            msgs = {
                "binance": '{"stream":"btcusdt@bookTicker","data":{"u":%d,"s":"BTCUSDT","b":"%.2f","B":"1","a":"%.2f","A":"1"}}'
                % (i + 1, mid - 5, mid + 5),
                "coinbase": '{"type":"ticker","sequence":%d,"product_id":"BTC-USD","price":"%.2f","best_bid":"%.2f","best_ask":"%.2f","time":"2023-11-14T22:13:20.000000Z"}'
                % (i + 1, mid, mid - 4, mid + 4),
                "kraken": '{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":%.1f,"bid_qty":1.0,"ask":%.1f,"ask_qty":1.0,"last":%.1f}]}'
                % (mid - 6, mid + 6, mid),
            }
            for exchange, text in msgs.items():
                before = len(emitted)
                received = time.perf_counter()
                graph.raw.emit(RawBatch(exchange, np.array([ts]), [text]))
                if len(emitted) > before:
                    latencies.append(emitted[-1] - received)
        graph.close()
    lat = np.array(latencies)
    print(f"tick → oracle price through the graph: {len(lat):,} prices, p50 "
          f"{np.percentile(lat, 50) * 1e3:.2f} ms, p99 {np.percentile(lat, 99) * 1e3:.2f} ms")


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    aggregation(n)
    tick_to_price(n // 4)
