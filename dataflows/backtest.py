"""Backtests: the same graph on history, with the data's time as the clock.

Each bar's close enters the graph as an "ok" oracle price at the bar's time; the graph's own
volatility node turns those into the 24 h volatility the hedge engine reads, and the hedge desk
(``dataflows.hedging``) steps on every price, with the funding history's settled rate. Everything
lands in the DuckDB file like a live run's rows, under the run's ``run_id``: ``backtest_equity``,
``backtest_trades``, ``position_states``, ``hedge_decisions``, ``order_decisions``,
``loan_updates`` (and the oracle prices and volatility). The same inputs give the same output.
A parameter sweep (``run_sweep``) runs each backtest in a worker process, or on a dask cluster,
and gathers every run's tables into one file.

The 24 h volatility needs bars finer than a day: for coarser data (the funding file's 8-hourly
marks) the volatility bar is the data's own interval and the window widens to ten bars, and the
dead man's switch (a heartbeat on every price) waits for three missing bars when that is longer
than its timeout.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
from pathlib import Path

import numpy as np

from dataflows.analytics import build_analytics
from dataflows.clock import SimulatedClock
from dataflows.graph import build_graph
from dataflows.hedging import HedgeNode
from dataflows.workers import Worker
from models.desk import DeskConfig, HedgeDesk
from models.kpis import compute_kpis
from models.oracle import MedianOracle, MedianOracleConfig
from models.records import OraclePrice
from storage.writer import DuckDBWriter

__all__ = ["run_backtest", "run_backtest_in_worker", "run_sweep", "volatility_settings"]

BARS_PER_EMIT = 1_000
BACKTEST_FLUSH_ROWS = 200_000


def volatility_settings(ts_s: np.ndarray) -> tuple[float, float, float]:
    """``(bar_s, window_s, min_coverage_s)`` of the 24 h volatility for data spaced like ``ts_s``:
    one-minute bars for data at a minute or finer, else the data's median spacing (rounded to a
    whole minute) with a window of at least a day and ten bars."""
    spacing = float(np.median(np.diff(ts_s))) if ts_s.size > 1 else 60.0
    bar_s = max(60.0, 60.0 * round(spacing / 60.0))
    bars = max(math.ceil(86_400.0 / bar_s), 10)
    window_s = bars * bar_s
    return bar_s, window_s, min(3_600.0 * 6, window_s / 2) if bar_s > 60.0 else 3_600.0


def run_backtest(ts_s: np.ndarray, close_usd: np.ndarray, db_path: str | Path, *, config,
                 desk_config: DeskConfig = DeskConfig(), funding=None, run_id: str = "backtest",
                 asset: str = "BTC", progress=None) -> dict:
    """Run the graph with the hedge desk over one price series; returns the run's KPIs and
    counts (``hedgeflow backtest`` prints them). ``config`` is the whole configuration (its
    ``[analytics]`` and ``[storage]`` sections are used); ``funding`` a ``FundingSeries`` of
    the venue whose settled rates the perpetual pays; ``progress(bars_done, bars)`` is called
    after every chunk of bars."""
    ts = np.asarray(ts_s, dtype=np.float64)
    close = np.asarray(close_usd, dtype=np.float64)
    bar_s, window_s, coverage_s = volatility_settings(ts)
    analytics = dataclasses.replace(
        config.analytics, worker="inline", surface_enabled=False, risk_enabled=False,
        volatility_bar_s=bar_s, volatility_window_s=window_s, volatility_min_coverage_s=coverage_s)
    clock = SimulatedClock(float(ts[0]))
    graph = build_graph(
        clock=clock,
        # No one reads a backtest's file while it runs: fewer, larger transactions (each commit
        # costs milliseconds, whatever its size).
        writer=DuckDBWriter(db_path, capacity_rows=max(config.storage.flush_rows, BACKTEST_FLUSH_ROWS),
                            flush_interval_s=config.storage.flush_interval_s),
        oracle=MedianOracle(MedianOracleConfig()),
        analytics=build_analytics(analytics, Worker("inline")),
    )
    funding_history = None if funding is None else (funding.ts_s, funding.rate_per_interval)
    spacing_s = float(np.median(np.diff(ts))) if ts.size > 1 else 60.0
    if desk_config.safety.heartbeat_timeout_s < 3.0 * spacing_s:
        # Coarse data: the dead man's switch waits for three missing bars, not for one.
        desk_config = dataclasses.replace(desk_config, safety=dataclasses.replace(
            desk_config.safety, heartbeat_timeout_s=3.0 * spacing_s))
    # No operator watches a backtest: after a stall fires the dead man's switch (and flattens),
    # trading resumes once the data flows again.
    desk_config = dataclasses.replace(desk_config, resume_after_stall=True)
    desk = HedgeDesk(desk_config, float(ts[0]))
    node = HedgeNode(desk, run_id=run_id, backtest=True, funding_history=funding_history)
    if funding is None:
        node.funding_rate = 0.0  # no funding history given: the perpetual costs nothing to hold
    steps = graph.attach_desk(node)
    n = ts.size
    equity = np.empty(n)
    ltv = np.empty(n)
    seen = 0
    counts = {"orders_approved": 0, "orders_rejected": 0, "fills": 0}
    rejected_by: dict[str, int] = {}

    def collect(batch) -> None:
        nonlocal seen
        for st in batch:
            equity[seen], ltv[seen] = st.equity_usd, st.ltv
            seen += 1
            counts["orders_approved"] += len(st.approved)
            counts["orders_rejected"] += len(st.rejections)
            counts["fills"] += len(st.fills)
            for r in st.rejections:
                rejected_by[r.rule] = rejected_by.get(r.rule, 0) + 1

    sink = steps.sink(collect)
    # The graph and the desk are built: what remains allocated is short-lived per bar, and full
    # collections of the long-lived objects cost about a fifth of the run.
    gc.freeze()
    try:
        # Bars enter in chunks (one Arrow batch per table per chunk, not one per bar); every
        # node steps through a chunk price by price, in time order, seeing nothing later.
        times, prices = ts.tolist(), close.tolist()
        for start in range(0, n, BARS_PER_EMIT):
            chunk = range(start, min(start + BARS_PER_EMIT, n))
            clock.advance_to(times[chunk[-1]])
            graph.oracle_prices.emit([OraclePrice(asset=asset, ts=times[i], price_usd=prices[i],
                                                  confidence_usd=0.0, n_sources=1, status="ok")
                                      for i in chunk])
            if progress is not None:
                progress(chunk[-1] + 1, n)
    finally:
        graph.close()
        sink.destroy()  # streamz keeps sinks in a global set
        gc.unfreeze()
    loan = desk_config.treasury.loan.principal_usd
    kpis = compute_kpis(
        ts[:seen], equity[:seen], ltv[:seen], repayments_usd=[desk.repaid_from_profits_usd],
        initial_loan_usd=loan, funding_paid_usd=desk.funding_usd,
        gross_profit_usd=desk.gross_profit_usd,
    )
    treasury = desk.treasury
    return {
        "run_id": run_id, "asset": asset, "bars": int(n), "steps": int(seen),
        **kpis.as_dict(),
        "equity_start_usd": float(equity[0]) if seen else math.nan,
        "equity_end_usd": float(equity[seen - 1]) if seen else math.nan,
        "loan_outstanding_usd": treasury.loan.outstanding_usd,
        "repaid_from_profits_usd": desk.repaid_from_profits_usd,
        "repaid_from_reserve_usd": treasury.repaid_from_reserve_usd,
        "reserve_usd": treasury.reserve.balance_usd,
        "fees_usd": desk.fees_usd, "funding_paid_usd": desk.funding_usd,
        "gross_profit_usd": desk.gross_profit_usd,
        **counts, "rejected_by_rule": dict(sorted(rejected_by.items())),
        "volatility_bar_s": bar_s, "volatility_window_s": window_s,
    }


def run_backtest_in_worker(ts_s, close_usd, *, config, desk_config: DeskConfig, funding,
                           run_id: str):
    """One run of a sweep, where it runs (a pool process or a dask worker): the backtest against a
    file of its own, returned as (result, run tables as Arrow) for the sweep's database."""
    import tempfile

    from storage.runs import read_run_tables

    with tempfile.TemporaryDirectory(prefix="hedgeflow-run-") as tmp:
        db = Path(tmp) / "run.duckdb"
        result = run_backtest(ts_s, close_usd, db, config=config, desk_config=desk_config,
                              funding=funding, run_id=run_id)
        return result, read_run_tables(db)


def run_sweep(ts_s, close_usd, db_path: str | Path, runs: list[tuple[str, DeskConfig]], *,
              config, funding=None, client=None) -> list[dict]:
    """Several backtests of one history (``runs``: run id and desk config each) in parallel: on the
    dask ``client`` when given (one task per run), else a process pool of the machine's cores.
    Each run's tables are appended to ``db_path``; the results come back in ``runs``' order."""
    import concurrent.futures
    import multiprocessing

    from storage.runs import append_run_tables

    args = dict(config=config, funding=funding)
    if client is not None:
        futures = [client.submit(run_backtest_in_worker, ts_s, close_usd, desk_config=desk,
                                 run_id=run_id, pure=False, **args) for run_id, desk in runs]
        outcomes = client.gather(futures)
    else:
        # spawn, not fork: a forked child of a process holding DuckDB and threads is unsafe.
        with concurrent.futures.ProcessPoolExecutor(
                max_workers=min(len(runs), os.cpu_count() or 1),
                mp_context=multiprocessing.get_context("spawn")) as pool:
            outcomes = list(pool.map(_run_one, [(ts_s, close_usd, desk, run_id, args)
                                                for run_id, desk in runs]))
    results = []
    for result, tables in outcomes:
        append_run_tables(db_path, tables)
        results.append(result)
    return results


def _run_one(job):
    ts_s, close_usd, desk, run_id, args = job
    return run_backtest_in_worker(ts_s, close_usd, desk_config=desk, run_id=run_id, **args)
