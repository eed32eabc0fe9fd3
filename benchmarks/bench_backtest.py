"""The hedge graph in backtest mode: bars per second through the whole graph (oracle prices ->
volatility -> hedge desk: engine, safety gate, paper venue, treasury -> DuckDB), against a bare
streamz map chain carrying the same bars in the same run.

    .venv/bin/python benchmarks/bench_backtest.py [DAYS]

DAYS (default 30) of one-minute GBM bars; the figure is extrapolated to a year of one-minute bars
(issue 7's target: under 10 s).
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamz import Stream  # noqa: E402

from dataflows.backtest import run_backtest  # noqa: E402
from dataflows.config import load_config  # noqa: E402

MINUTES_PER_YEAR = 365 * 1_440


def bars(days: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    n = days * 1_440
    rng = np.random.default_rng(seed)
    sd = 0.6 * math.sqrt(60.0 / (365 * 86_400))
    return 1_767_225_600.0 + 60.0 * np.arange(n), 90_000.0 * np.exp(np.cumsum(sd * rng.standard_normal(n)))


def bare_chain(ts: np.ndarray, close: np.ndarray) -> float:
    source = Stream()
    out = source.map(lambda x: x).filter(lambda x: x[1] > 0).sink_to_list()
    start = time.perf_counter()
    for item in zip(ts.tolist(), close.tolist()):
        source.emit(item)
    elapsed = time.perf_counter() - start
    assert len(out) == len(ts)
    return elapsed


def main() -> None:
    days = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    ts, close = bars(days)
    bare_s = bare_chain(ts, close)
    with tempfile.TemporaryDirectory() as tmp:
        # A short run first: numba's compilation and the first imports are a fixed cost, not a
        # per-bar one, and a year-long run pays them once.
        run_backtest(ts[:3_000], close[:3_000], Path(tmp) / "warm.duckdb", config=load_config(env={}))
        start = time.perf_counter()
        result = run_backtest(ts, close, Path(tmp) / "bench.duckdb", config=load_config(env={}))
        graph_s = time.perf_counter() - start
    n = len(ts)
    print(f"{n:,} one-minute bars ({days} days), {result['fills']} fills, "
          f"{result['orders_rejected']} rejections")
    print(f"hedge graph, backtest mode: {graph_s:.2f} s = {n / graph_s:,.0f} bars/s "
          f"({1e6 * graph_s / n:.0f} us/bar)")
    print(f"bare streamz map->filter->sink: {bare_s:.3f} s = {n / bare_s:,.0f} bars/s "
          f"(ratio graph/bare {graph_s / bare_s:.0f})")
    print(f"a year of one-minute bars at this rate: {graph_s * MINUTES_PER_YEAR / n:.0f} s (target < 10 s)")


if __name__ == "__main__":
    main()
