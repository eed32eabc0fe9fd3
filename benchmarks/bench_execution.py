"""Paper execution's costs, each beside a reference measured in the same run.

1. Book walking: ``fill_curve`` over N order sizes at once (numpy) against a plain Python loop
   that takes level after level (per size).
2. A paper order: ``PaperVenue.execute`` (validation, locks, match, fee, account) per order,
   against a bare ``walk_book`` of the same book, i.e. the state machine's overhead.
3. Routing: ``ExecutionOptimizer.plan`` over 3 venues of 40 levels each, per order, against
   ``walk_book`` on one venue.
4. A year of hourly rebalances with funding on a synthetic book: wall time for 8,760 orders and
   1,095 settlements.

    .venv/bin/python benchmarks/bench_execution.py [N_SIZES]
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.execution import (  # noqa: E402
    BINANCE_USDM,
    BYBIT,
    DERIBIT,
    ExecutionOptimizer,
    PaperVenue,
    fill_curve,
    walk_book,
)
from models.orders import Order  # noqa: E402

T0 = 1_700_006_400.0


def loop_walk(prices, sizes, qty):
    filled = notional = 0.0
    for p, s in zip(prices, sizes):
        take = min(s, qty - filled)
        filled += take
        notional += take * p
        if filled >= qty:
            break
    return filled, notional


def best_of(fn, repeat=5):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(n_sizes: int) -> None:
    book = BINANCE_USDM.depth.book(60_000.0)
    prices, sizes = book.side_for("buy")
    rng = np.random.default_rng(1)
    quantities = rng.uniform(0, sizes.sum() * 1.1, n_sizes)

    t_vec = best_of(lambda: fill_curve(prices, sizes, quantities, "buy"))
    n_loop = min(n_sizes, 20_000)
    t_loop = best_of(lambda: [loop_walk(prices, sizes, q) for q in quantities[:n_loop]], 3)
    per_vec, per_loop = t_vec / n_sizes, t_loop / n_loop
    print(f"1. book walk, {len(prices)} levels: fill_curve {per_vec * 1e9:,.0f} ns/size "
          f"({n_sizes:,} sizes at once); Python loop {per_loop * 1e9:,.0f} ns/size; "
          f"ratio {per_loop / per_vec:,.0f}x")

    n_orders = 5_000
    orders = [Order(T0 + i, "BTC", "perp", "buy" if i % 2 else "sell", float(q), "bench")
              for i, q in enumerate(rng.uniform(0.01, 5.0, n_orders))]
    venue = PaperVenue(BINANCE_USDM, wallet_usd=1e9)
    t = time.perf_counter()
    for o in orders:
        venue.execute(o, book, o.ts_s)
    t_exec = (time.perf_counter() - t) / n_orders
    t_walk = best_of(lambda: [walk_book(prices, sizes, o.quantity_coin, o.side) for o in orders], 3)
    t_walk /= n_orders
    print(f"2. paper order: PaperVenue.execute {t_exec * 1e6:,.1f} µs/order; bare walk_book "
          f"{t_walk * 1e6:,.1f} µs; ratio {t_exec / t_walk:.1f}x")

    router = ExecutionOptimizer([BINANCE_USDM, BYBIT, DERIBIT])
    books = {"binance_usdm": book, "bybit": BYBIT.depth.book(59_995.0),
             "deribit": DERIBIT.depth.book(60_010.0)}
    n_plans = 2_000
    t_plan = best_of(lambda: [router.plan(o, books) for o in orders[:n_plans]], 3) / n_plans
    print(f"3. routing over 3 venues x 40 levels: {t_plan * 1e6:,.1f} µs/plan; walk_book on one "
          f"venue {t_walk * 1e6:,.1f} µs; ratio {t_plan / t_walk:.1f}x")

    hours = 365 * 24
    mids = 60_000.0 * np.exp(np.cumsum(rng.normal(0, 0.006, hours)))
    venue = PaperVenue(BINANCE_USDM, wallet_usd=1e7)
    t = time.perf_counter()
    n_settled = 0
    for h in range(hours):
        ts = T0 + h * 3600.0
        side = "buy" if rng.random() < 0.5 else "sell"
        venue.execute(Order(ts, "BTC", "perp", side, 0.1, "rebalance"), float(mids[h]), ts)
        n_settled += len(venue.settle_funding_between("BTC", float(mids[h]), 1e-4, ts,
                                                      ts + 3600.0))
    t_year = time.perf_counter() - t
    assert math.isclose(venue.account.cash_identity_error_usd(), 0.0, abs_tol=1e-6)
    print(f"4. a year of hourly orders ({hours:,}) and funding ({n_settled:,} settlements) on "
          f"synthetic books: {t_year:.2f} s ({t_year / hours * 1e6:,.0f} µs per hour; "
          f"{t_year / hours / t_exec:.1f}x an execute on a ready book, item 2)")

    minutes = 365 * 24 * 60
    minute_mids = 60_000.0 * np.exp(np.cumsum(rng.normal(0, 0.0008, minutes)))
    venue = PaperVenue(BINANCE_USDM, wallet_usd=1e7)
    venue.execute(Order(T0, "BTC", "perp", "buy", 1.0, "open"), float(minute_mids[0]), T0)
    t = time.perf_counter()
    for m in range(minutes):
        venue.on_market(T0 + 60.0 * m, "BTC", "perp", float(minute_mids[m]))
    t_marks = time.perf_counter() - t
    t = time.perf_counter()
    for m in range(minutes):
        float(minute_mids[m])
    t_bare = time.perf_counter() - t
    print(f"5. a year of 1-minute marks through on_market with nothing open ({minutes:,} calls): "
          f"{t_marks:.2f} s ({t_marks / minutes * 1e6:.2f} µs per bar; the bare loop over the same "
          f"array {t_bare:.2f} s, ratio {t_marks / t_bare:.0f}x)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
