"""The ``hedgeflow`` command.

    hedgeflow run [--duration S] [--db PATH] [--port N]   the main job: simulator, graph, dashboards
    hedgeflow simulate [--port N] [--duration S]           the exchange simulator alone
    hedgeflow replay CAPTURE... --db PATH                  recorded traffic through the graph
    hedgeflow export --db PATH --out DIR [--from D] [--to D]   days to the Parquet archive
    hedgeflow restore --from DIR --db PATH                 tables rebuilt from the archive
    hedgeflow query "SQL" [--db PATH] [--archive DIR]      SQL over hot and archived data
    hedgeflow quality [--day DATE]                         the data quality report
    hedgeflow pause [--on-chain] | resume                  emergency stop of oracle publishing
    hedgeflow pause --trading | resume --trading | flatten  the hedge desk's pause and flatten
    hedgeflow quote --asset BTC --strike K --expiry DATE [--amount N]   protection price, as JSON
    hedgeflow premium-backtest --data FILE                 the premium model against realized payoffs
    hedgeflow calibrate-jumps --data FILE                  Merton jump parameters from a price history
    hedgeflow backtest --data FILE... --db PATH [--funding FILE]   the hedge desk on history, KPIs as JSON
    hedgeflow config                                       the effective configuration
    hedgeflow report --list | NAME --out FILE.html [--param K=V]... [--pdf]   a notebook report

Configuration comes from ``--config FILE`` (or ``$HEDGEFLOW_CONFIG``, or ``./hedgeflow.toml`` when
present), then ``HEDGEFLOW_<SECTION>__<KEY>`` variables, then the flags. A user's mistake (a bad
flag value, a missing file, an invalid key) prints ``error: ...`` with what to do and exits 2,
without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import asyncio
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

from dataflows.clock import iso_utc
from dataflows.config import Config, HedgeflowError, load_config
from dataflows.logs import configure_logging

DEFAULT_CONFIG_FILE = "hedgeflow.toml"

FAULTS_HELP = (
    'comma-separated faults, e.g. "drop=binance@5s,stall=kraken@3s:2s,malformed=0.01,'
    'skip_seq=coinbase@0.001,repeat_trades=0.01,out_of_order=0.01,stale=bybit@10s,'
    'deviate=kraken:5%%"'
)


def _config(args: argparse.Namespace, overrides: dict) -> Config:
    path = args.config or os.environ.get("HEDGEFLOW_CONFIG")
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    if args.log_format:
        overrides["logging.format"] = args.log_format
    if args.log_level:
        overrides["logging.level"] = args.log_level
    cfg = load_config(path, overrides={k: v for k, v in overrides.items() if v is not None})
    configure_logging(cfg.logging.format, cfg.logging.level)
    return cfg


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


# --------------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _config(
        args,
        {
            "storage.db_path": args.db or os.environ.get("HEDGEFLOW_DB"),
            "dashboard.port": args.port,
            "api.port": args.api_port,
            "dashboard.host": args.host,
            "dashboard.enabled": False if args.no_dashboard else None,
            "simulator.faults": args.faults,
            "feeds.record_dir": args.record,
            "analytics.worker": "dask" if args.dask else None,
            "analytics.dask_address": args.dask,
        },
    )
    counts = asyncio.run(_run(cfg, args.duration))
    print(json.dumps(counts, sort_keys=True))
    return 0


async def _run(cfg: Config, duration_s: float | None) -> dict:
    from dataflows.runtime import Pipeline, set_shared_pipeline

    pipeline = Pipeline(cfg)
    set_shared_pipeline(pipeline)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = None
    try:
        try:
            await pipeline.start()
        except OSError as exc:
            raise HedgeflowError(
                f"cannot start the embedded simulator on {cfg.simulator.host}:"
                f"{cfg.simulator.port}: {exc.strerror or exc}. Set another port with "
                "HEDGEFLOW_SIMULATOR__PORT (0 picks a free one)"
            ) from None
        if pipeline.api is not None:
            print(f"hedgeflow: API on {pipeline.api.url}/api, metrics on {pipeline.api.url}/metrics",
                  file=sys.stderr, flush=True)
        if cfg.dashboard.enabled:
            from dashboards.app import serve_dashboards

            try:
                server = serve_dashboards(pipeline, cfg.dashboard.host, cfg.dashboard.port)
            except OSError as exc:
                raise HedgeflowError(
                    f"cannot serve the dashboards on {cfg.dashboard.host}:{cfg.dashboard.port}: "
                    f"{exc.strerror or exc}. Choose another port with --port N"
                ) from None
            print(
                f"hedgeflow: dashboards on http://{cfg.dashboard.host}:{cfg.dashboard.port}/oracle",
                file=sys.stderr, flush=True,
            )
        try:
            await asyncio.wait_for(stop.wait(), duration_s)
        except asyncio.TimeoutError:
            pass
    finally:
        if server is not None:
            server.stop()
        counts = await pipeline.stop()
        set_shared_pipeline(None)
    return {**counts, "db": cfg.storage.db_path}


def cmd_simulate(args: argparse.Namespace) -> int:
    cfg = _config(
        args,
        {
            "simulator.port": args.port,
            "simulator.seed": args.seed,
            "simulator.malformed_rate": args.malformed_rate,
            "simulator.faults": args.faults,
            "feeds.exchanges": args.exchanges,
        },
    )
    from dataflows.sim import MultiExchangeSimulator, SimConfig, run_simulation

    sim_cfg = cfg.simulator
    sim = MultiExchangeSimulator(
        seed=sim_cfg.seed,
        config=SimConfig(
            exchanges=tuple(cfg.feeds.exchanges), quote_rate_hz=sim_cfg.quote_rate_hz,
            trade_rate_hz=sim_cfg.trade_rate_hz, option_rate_hz=sim_cfg.option_rate_hz,
            binance_symbols=tuple(sim_cfg.symbols),
        ),
        faults=sim_cfg.faults or None, host=sim_cfg.host, port=sim_cfg.port,
        malformed_rate=sim_cfg.malformed_rate,
    )

    async def main() -> None:
        task = asyncio.create_task(run_simulation(sim, args.duration))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        started = asyncio.create_task(sim.started.wait())
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            started.cancel()
            await task  # raises what stopped the simulator, e.g. a port being taken
        for exchange, url in sim.urls.items():
            print(f"hedgeflow: {exchange} simulator on {url}", file=sys.stderr, flush=True)
        try:
            await task
        except asyncio.CancelledError:
            pass

    try:
        asyncio.run(main())
    except OSError as exc:
        raise HedgeflowError(
            f"cannot listen on {sim_cfg.host} from port {sim_cfg.port}: {exc.strerror or exc}. "
            "Choose another base port with --port N (five consecutive ports are used; 0 picks "
            "free ones)"
        ) from None
    print(json.dumps(sim.sent_counts(), sort_keys=True))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    cfg = _config(args, {})
    from dataflows.replay import replay_to_db

    counts = replay_to_db(
        args.captures, args.db,
        oracle_config=cfg.oracle.model_config(),
        flush_rows=cfg.storage.flush_rows, flush_interval_s=cfg.storage.flush_interval_s,
        out_of_order=cfg.storage.out_of_order,
        chain=cfg.chain if args.chain else None, wall_now=time.time(),
        analytics_config=cfg.analytics,
    )
    print(json.dumps(counts, sort_keys=True, default=str))
    return 0


def _positive_usd(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _date(text: str):
    import datetime as dt

    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def _connect(db: str, read_only: bool):
    """The DuckDB file ``db``, with the user's mistakes said plainly."""
    import duckdb

    if read_only and not Path(db).is_file():
        raise HedgeflowError(f"database not found: {db}. Give the file `hedgeflow run --db` wrote")
    try:
        con = duckdb.connect(db, read_only=read_only)
    except duckdb.IOException as exc:
        raise HedgeflowError(
            f"cannot open {db}: {exc}. If `hedgeflow run` is writing it, stop the run first "
            "(its scheduled export archives the data while it runs)"
        ) from None
    con.execute("SET TimeZone = 'UTC'")
    return con


def cmd_export(args: argparse.Namespace) -> int:
    from storage.archive import export_archive

    _config(args, {})
    con = _connect(args.db, read_only=True)
    try:
        result = export_archive(con, args.out, args.start, args.end, exported_at=time.time(),
                                progress=_progress_printer("export", "tables"))
    finally:
        con.close()
    print(json.dumps(result.summary(), sort_keys=True))
    return 1 if result.refused else 0


def cmd_restore(args: argparse.Namespace) -> int:
    from storage.archive import restore_archive
    from storage.schema import create_schema

    _config(args, {})
    con = _connect(args.db, read_only=False)
    try:
        create_schema(con)
        result = restore_archive(args.src, con)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    print(json.dumps(result.summary(), sort_keys=True))
    return 0


def _surface(args: argparse.Namespace):
    from storage.surface import open_surface

    db = args.db
    if db is not None and not Path(db).is_file():
        raise HedgeflowError(f"database not found: {db}. Give the file `hedgeflow run --db` wrote")
    if db is None and args.archive is None:
        default = _config(args, {}).storage.db_path
        if not Path(default).is_file():
            raise HedgeflowError(
                f"nothing to query: no --db, no --archive, and no {default}. Run "
                "`hedgeflow run --duration 25` first, or name a database or an archive"
            )
        db = default
    return open_surface(db, args.archive)


def cmd_query(args: argparse.Namespace) -> int:
    from storage.surface import format_result, run_query

    con = _surface(args)
    try:
        print(format_result(run_query(con, args.sql), args.format, args.max_rows))
    finally:
        con.close()
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    from storage.quality import format_quality, quality_report

    con = _surface(args)
    try:
        print(format_quality(quality_report(con, args.day)))
    finally:
        con.close()
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    """Emergency pause: the running publisher stops at its next tick (and pauses the Oracle
    contract with --on-chain); with --trading the hedge desk stops opening positions instead.
    The pause file is the channel: only someone who may write the data folder can pause or
    resume."""
    from dataflows import operator_files

    cfg = _config(args, {})
    if args.trading:
        path = operator_files.pause_trading(cfg.hedge.pause_file,
                                            args.why or "hedgeflow pause --trading")
        print(f"hedgeflow: trading paused ({path}): reducing orders still pass; "
              "`hedgeflow resume --trading` lifts it")
        return 0
    path = operator_files.pause_publishing(cfg.chain.pause_file, args.on_chain)
    where = "off-chain and on-chain" if args.on_chain else "off-chain"
    print(f"hedgeflow: publishing paused {where} ({path}); `hedgeflow resume` lifts it")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from dataflows.operator_files import lift

    cfg = _config(args, {})
    path, what = (Path(cfg.hedge.pause_file), "trading") if args.trading else \
        (Path(cfg.chain.pause_file), "publishing")
    if not lift(path):
        print(f"hedgeflow: {what} was not paused ({path} does not exist)")
        return 0
    print(f"hedgeflow: {what} resumes ({path} removed)")
    return 0


def cmd_flatten(args: argparse.Namespace) -> int:
    """Close the hedge desk's futures at its next tick and pause trading (the running
    ``hedgeflow run`` reads the flatten file, acts once and removes it)."""
    from dataflows.operator_files import request_flatten

    hedge = _config(args, {}).hedge
    # The pause file too: trading stays paused until `resume --trading` removes it.
    path = request_flatten(hedge.pause_file, hedge.flatten_file, args.why or "hedgeflow flatten")
    print(f"hedgeflow: flatten requested ({path}); trading stays paused until "
          "`hedgeflow resume --trading`")
    return 0


def _expiry(text: str) -> float:
    """YYYY-MM-DD → that day's 08:00 UTC (epoch s), when Deribit options and policies expire; a
    full ISO time (2026-12-25T16:00Z) is taken as given."""
    import datetime as dt

    from models.deribit import expiry_ts

    try:
        if "T" in text or " " in text.strip():
            when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.timezone.utc)
            return when.timestamp()
        return expiry_ts(dt.date.fromisoformat(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an expiry date as YYYY-MM-DD (08:00 UTC) or an ISO time, got {text!r}") from None


def _epoch_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epoch seconds, got {text!r}") from None
    if not 0.0 <= value < 32_503_680_000.0:  # before the year 3000
        raise argparse.ArgumentTypeError(f"expected epoch seconds (e.g. 1767168000), got {text!r}")
    return value


def cmd_quote(args: argparse.Namespace) -> int:
    cfg = _config(args, {"storage.db_path": args.db or os.environ.get("HEDGEFLOW_DB")})
    from dataflows.analytics import quote_protection

    con = _connect(cfg.storage.db_path, read_only=True)
    try:
        result = quote_protection(
            con, asset=args.asset.upper(), strike_usd=args.strike, expiry_utc=args.expiry,
            amount_coin=args.amount, config=cfg.analytics, at_s=args.at, spot_usd=args.spot,
        )
    finally:
        con.close()
    print(json.dumps(result, indent=2))
    return 0


def _positive_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(0.0 < v < float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def _json_ready(value):
    """``value`` with every NaN or infinity as None (null): JSON has no NaN, and a reader should
    not have to guess what a missing figure looks like."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def cmd_premium_backtest(args: argparse.Namespace) -> int:
    from dataflows.history import load_ohlcv
    from models.premium_backtest import BacktestConfig, backtest_premiums

    cfg = _config(args, {})

    series = load_ohlcv(args.data)
    try:
        config = BacktestConfig(tenors_days=args.tenors, sell_every_hours=args.every_hours,
                                vol_window_hours=args.vol_window_hours,
                                vol_multiplier=args.vol_multiplier)
    except ValueError as exc:
        raise HedgeflowError(f"invalid backtest settings: {exc}") from None
    try:
        result = backtest_premiums(series.ts_s, series.close_usd, config=config,
                                   premium_config=cfg.analytics.premium_config())
    except ValueError as exc:
        raise HedgeflowError(f"cannot backtest {args.data}: {exc}") from None
    summary = dataclasses.asdict
    print(json.dumps(_json_ready({
        "data": series.path, "bars": len(series),
        "from_utc": iso_utc(series.ts_s[0]), "to_utc": iso_utc(series.ts_s[-1]),
        "config": dataclasses.asdict(config), "n_skipped": result.n_skipped,
        "summary": summary(result.summary),
        "by_tier_and_tenor": {f"{tier} {tenor:g}d": summary(s)
                              for (tier, tenor), s in result.by_group.items()},
    }), indent=2))
    return 0


def cmd_calibrate_jumps(args: argparse.Namespace) -> int:
    import numpy as np

    from dataflows.history import load_ohlcv
    from models.jumps import MertonFitBounds, default_fit_bounds, fit_merton_jumps
    from models.volatility import SECONDS_PER_YEAR, ohlc_bars

    series = load_ohlcv(args.data)
    bar_s = args.bar_minutes * 60.0
    bars = ohlc_bars(series.ts_s, bar_s, series.open_usd, series.high_usd, series.low_usd,
                     series.close_usd)
    # Returns between consecutive bars only: across a gap in the data a "return" spans hours.
    consecutive = np.diff(bars.bar_start_s) == bar_s
    returns = np.diff(np.log(bars.close_usd))[consecutive]
    if returns.size < 50:
        raise HedgeflowError(f"{args.data} gives only {returns.size} returns of {args.bar_minutes:g} "
                             "minutes: too few to fit jumps; give a longer history or shorter bars")
    dt_years = bar_s / SECONDS_PER_YEAR
    bounds = default_fit_bounds(returns, dt_years)
    if args.max_intensity is not None:
        bounds = MertonFitBounds(bounds.vol_diffusion_annual, bounds.mean_log_return_annual,
                                 (0.0, args.max_intensity), bounds.mean_log_jump, bounds.vol_log_jump)
    try:
        fit = fit_merton_jumps(returns, dt_years, bounds=bounds)
    except ValueError as exc:
        raise HedgeflowError(f"cannot fit jumps to {args.data}: {exc}") from None
    jumps = fit.jumps
    print(json.dumps(_json_ready({
        "data": series.path, "bar_minutes": args.bar_minutes, "n_returns": fit.n_returns,
        "from_utc": iso_utc(series.ts_s[0]), "to_utc": iso_utc(series.ts_s[-1]),
        "converged": fit.converged, "likelihood_ratio": fit.likelihood_ratio,
        "vol_diffusion_annual": fit.vol_diffusion_annual, "total_vol_annual": fit.total_vol_annual,
        "vol_normal_annual": fit.vol_normal_annual, "drift_annual": fit.drift_annual,
        "stderr": {
            "vol_diffusion_annual": fit.stderr_vol_diffusion_annual,
            "intensity_per_year": fit.stderr_intensity_per_year,
            "mean_log_jump": fit.stderr_mean_log_jump, "vol_log_jump": fit.stderr_vol_log_jump,
        },
        "expected_jumps_in_sample": fit.expected_jumps_in_sample,
        # What to put in [analytics] to price with these jumps.
        "analytics": {
            "premium_jump_intensity_per_year": jumps.intensity_per_year,
            "premium_jump_mean_log": jumps.mean_log_jump,
            "premium_jump_vol_log": jumps.vol_log_jump,
        },
    }), indent=2))
    return 0


def _price_history(paths: list[str], venue: str):
    """Bars from OHLCV files (concatenated in time order), or the marks of a funding CSV."""
    import numpy as np

    from dataflows.history import load_funding, load_ohlcv

    times, closes = [], []
    for path in paths:
        header = Path(path).open(encoding="utf-8", errors="replace").readline().lower() \
            if Path(path).is_file() and not path.endswith(".parquet") else ""
        if "settlement_ts" in header and "mark_price" in header:
            marks = load_funding(path).only(venue)
            keep = np.isfinite(marks.mark_usd) & (marks.mark_usd > 0)
            times.append(marks.ts_s[keep])
            closes.append(marks.mark_usd[keep])
        else:
            series = load_ohlcv(path)
            times.append(series.ts_s)
            closes.append(series.close_usd)
    ts, close = np.concatenate(times), np.concatenate(closes)
    order = np.argsort(ts, kind="stable")
    ts, close = ts[order], close[order]
    if np.any(np.diff(ts) == 0):
        raise HedgeflowError("the price files overlap (a time appears twice): give files of "
                             "different periods, or one file")
    if ts.size < 2:
        raise HedgeflowError("the price history holds fewer than two prices")
    return ts, close


def _progress_printer(what: str, unit: str, every_s: float = 1.0):
    """``progress(done, total)`` that tells stderr how far ``what`` has got, at most every
    ``every_s`` seconds and once at the end (stdout stays the command's result)."""
    last = [-math.inf]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s or done >= total:
            last[0] = now
            print(f"hedgeflow: {what}: {done:,} of {total:,} {unit} ({100.0 * done / total:.0f}%)",
                  file=sys.stderr, flush=True)

    return progress


def cmd_backtest(args: argparse.Namespace) -> int:
    from dataflows.backtest import run_backtest, run_sweep
    from dataflows.history import load_funding
    from models.desk import replace_leverage

    cfg = _config(args, {})
    ts, close = _price_history(args.data, args.venue)
    funding = load_funding(args.funding).only(args.venue) if args.funding else None
    if Path(args.db).exists():
        raise HedgeflowError(f"{args.db} exists: give a new --db file for this backtest (its "
                             "tables hold one backtest's rows), or remove the old one")
    base = cfg.hedge.desk_config()
    try:
        if not args.leverage:
            result = run_backtest(ts, close, args.db, config=cfg, desk_config=base,
                                  funding=funding, run_id=args.run_id,
                                  progress=_progress_printer("backtest", "bars"))
            print(json.dumps(_json_ready(result), indent=2))
            return 0
        runs = [(f"{args.run_id}:leverage={x:g}", replace_leverage(base, x)) for x in args.leverage]
        client = None
        if args.dask:
            from distributed import Client

            try:
                client = Client(args.dask, timeout="10s")
            except (OSError, TimeoutError) as exc:
                raise HedgeflowError(f"cannot reach the dask scheduler at {args.dask}: {exc}. "
                                     "Start one, or sweep without --dask") from None
        try:
            results = run_sweep(ts, close, args.db, runs, config=cfg, funding=funding, client=client)
        finally:
            if client is not None:
                client.close()
    except ValueError as exc:
        raise HedgeflowError(f"cannot run the backtest: {exc}") from None
    print(json.dumps(_json_ready({"runs": results}), indent=2))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from dataflows.reports import format_report_list, run_report

    if args.list:
        print(format_report_list())
        return 0
    if not args.name or not args.out:
        raise HedgeflowError("give a report and an output file: hedgeflow report NAME --out "
                             "FILE.html (see `hedgeflow report --list` for the names)")
    done = run_report(args.name, args.out, args.param, pdf=args.pdf)
    print(json.dumps({"report": args.name, "html": str(done.html_path),
                      "pdf": str(done.pdf_path) if done.pdf_path else None,
                      "params": done.params, "cells": done.n_cells,
                      "seconds": round(done.elapsed_s, 1)}, indent=2, default=str))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(_config(args, {}).to_dict(), indent=2, sort_keys=True))
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="TOML configuration file")
    common.add_argument("--log-format", choices=("text", "json"), help="log line format")
    common.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING, ERROR")

    parser = argparse.ArgumentParser(
        prog="hedgeflow", description="Reactive dataflow for crypto-derivatives hedging."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", parents=[common], help="run the main job")
    run.add_argument("--duration", type=_positive, metavar="SECONDS", help="stop after SECONDS")
    run.add_argument("--db", metavar="PATH", help="DuckDB file (default data/hedgeflow.duckdb)")
    run.add_argument("--port", type=int, help="dashboard port (default 5006)")
    run.add_argument("--host", help="dashboard address (default 127.0.0.1)")
    run.add_argument("--no-dashboard", action="store_true", help="run without the Panel server")
    run.add_argument("--api-port", type=int,
                     help="port of the HTTP/WebSocket API and /metrics (default 5007; 0 picks a free one)")
    run.add_argument("--record", metavar="DIR",
                     help="also write every message received to DIR, for hedgeflow replay")
    run.add_argument("--faults", metavar="SPEC", help="faults for the embedded simulator: " + FAULTS_HELP)
    run.add_argument("--dask", metavar="ADDRESS",
                     help="send surface fits to the dask scheduler at ADDRESS (tcp://host:8786)")
    run.set_defaults(func=cmd_run)

    sim = sub.add_parser("simulate", parents=[common], help="run the exchange simulator")
    sim.add_argument("--port", type=int, help="listen port (default 8765; 0 picks a free one)")
    sim.add_argument("--seed", type=int, help="market model seed")
    sim.add_argument("--malformed-rate", type=float, help="fraction of deliberately bad messages")
    sim.add_argument("--duration", type=_positive, metavar="SECONDS", help="stop after SECONDS")
    sim.add_argument("--exchanges", metavar="LIST",
                     help="comma-separated exchanges to serve (default: all five)")
    sim.add_argument("--faults", metavar="SPEC", help=FAULTS_HELP)
    sim.set_defaults(func=cmd_simulate)

    replay = sub.add_parser("replay", parents=[common], help="replay captures through the graph")
    replay.add_argument("captures", nargs="+", metavar="CAPTURE", help="capture files")
    replay.add_argument("--db", required=True, metavar="PATH", help="DuckDB file to write")
    replay.add_argument("--chain", action="store_true",
                        help="also publish the oracle prices to the chain ([chain] settings)")
    replay.set_defaults(func=cmd_replay)

    export = sub.add_parser("export", parents=[common], help="archive days to Parquet")
    export.add_argument("--db", required=True, metavar="PATH", help="DuckDB file to read")
    export.add_argument("--out", required=True, metavar="DIR", help="archive: a path or fsspec URL")
    export.add_argument("--from", dest="start", type=_date, metavar="DATE", help="first UTC day")
    export.add_argument("--to", dest="end", type=_date, metavar="DATE", help="last UTC day")
    export.set_defaults(func=cmd_export)

    restore = sub.add_parser("restore", parents=[common], help="rebuild tables from an archive")
    restore.add_argument("--from", dest="src", required=True, metavar="DIR", help="archive")
    restore.add_argument("--db", required=True, metavar="PATH", help="DuckDB file to write")
    restore.set_defaults(func=cmd_restore)

    query = sub.add_parser("query", parents=[common], help="SQL over hot and archived data")
    query.add_argument("sql", metavar="SQL", help='e.g. "SELECT count(*) FROM trades"')
    query.add_argument("--db", metavar="PATH", help="DuckDB file (default storage.db_path)")
    query.add_argument("--archive", metavar="DIR", help="Parquet archive to include")
    query.add_argument("--format", choices=("table", "csv", "json"), default="table")
    query.add_argument("--max-rows", type=int, default=50, help="rows shown as a table")
    query.set_defaults(func=cmd_query)

    quality = sub.add_parser("quality", parents=[common], help="the data quality report")
    quality.add_argument("--db", metavar="PATH", help="DuckDB file (default storage.db_path)")
    quality.add_argument("--archive", metavar="DIR", help="Parquet archive to include")
    quality.add_argument("--day", type=_date, metavar="DATE", help="one UTC day (YYYY-MM-DD)")
    quality.set_defaults(func=cmd_quality)

    pause = sub.add_parser("pause", parents=[common], help="emergency pause of oracle publishing")
    pause.add_argument("--on-chain", action="store_true", help="also pause the Oracle contract")
    pause.add_argument("--trading", action="store_true",
                       help="pause the hedge desk's trading instead (reducing orders still pass)")
    pause.add_argument("--why", default="", help="the reason, recorded with the pause")
    pause.set_defaults(func=cmd_pause)
    resume = sub.add_parser("resume", parents=[common], help="lift the emergency pause")
    resume.add_argument("--trading", action="store_true", help="resume the hedge desk's trading")
    resume.set_defaults(func=cmd_resume)
    flatten = sub.add_parser("flatten", parents=[common],
                             help="close the hedge desk's futures and pause its trading")
    flatten.add_argument("--why", default="", help="the reason, recorded with the flatten")
    flatten.set_defaults(func=cmd_flatten)

    quote = sub.add_parser("quote", parents=[common],
                           help="price protection (a put) off the stored option chain, as JSON")
    quote.add_argument("--asset", required=True, help="BTC or ETH")
    quote.add_argument("--strike", required=True, type=_positive_usd, metavar="USD", help="strike in USD")
    quote.add_argument("--expiry", required=True, type=_expiry, metavar="DATE",
                       help="expiry date YYYY-MM-DD (08:00 UTC) or an ISO time")
    quote.add_argument("--amount", type=_positive_usd, default=1.0, metavar="COIN",
                       help="coins protected (default 1)")
    quote.add_argument("--db", metavar="PATH", help="DuckDB file (default storage.db_path)")
    quote.add_argument("--at", type=_epoch_seconds, metavar="EPOCH_S",
                       help="price as of this time (default: the newest option ticker's time)")
    quote.add_argument("--spot", type=_positive_usd, metavar="USD",
                       help="spot price (default: the newest ok oracle price, else the chain's index)")
    quote.set_defaults(func=cmd_quote)

    backtest = sub.add_parser(
        "premium-backtest", parents=[common],
        help="sell the premium tiers' puts through a price history and settle them, as JSON")
    backtest.add_argument("--data", required=True, metavar="FILE",
                          help="OHLCV CSV or Parquet (columns timestamp, open, high, low, close, volume)")
    backtest.add_argument("--tenors", type=_positive_list, default=(1.0, 3.0, 7.0), metavar="DAYS",
                          help="policy tenors in days, comma-separated (default 1,3,7)")
    backtest.add_argument("--every-hours", type=_positive_usd, default=24.0, metavar="H",
                          help="hours between sales (default 24, at 08:00 UTC)")
    backtest.add_argument("--vol-window-hours", type=_positive_usd, default=72.0, metavar="H",
                          help="trailing window of the realized vol that prices them (default 72)")
    backtest.add_argument("--vol-multiplier", type=_positive_usd, default=1.0, metavar="X",
                          help="scale the realized vol (default 1)")
    backtest.set_defaults(func=cmd_premium_backtest)

    jumps = sub.add_parser(
        "calibrate-jumps", parents=[common],
        help="fit Merton jump parameters to a price history by maximum likelihood, as JSON")
    jumps.add_argument("--data", required=True, metavar="FILE",
                       help="OHLCV CSV or Parquet (columns timestamp, open, high, low, close, volume)")
    jumps.add_argument("--bar-minutes", type=_positive_usd, default=60.0, metavar="M",
                       help="returns over bars of M minutes (default 60)")
    jumps.add_argument("--max-intensity", type=_positive_usd, metavar="PER_YEAR",
                       help="cap the jumps a year (rare, large jumps rather than volatility "
                            "clustering read as many small ones)")
    jumps.set_defaults(func=cmd_calibrate_jumps)

    backtest = sub.add_parser(
        "backtest", parents=[common],
        help="run the graph with the hedge desk over a price history; the KPIs as JSON")
    backtest.add_argument("--data", required=True, nargs="+", metavar="FILE",
                          help="OHLCV CSV or Parquet files (or a funding CSV: its mark prices)")
    backtest.add_argument("--db", required=True, metavar="PATH", help="a new DuckDB file for the results")
    backtest.add_argument("--funding", metavar="FILE",
                          help="settled funding CSV (venue, settlement_ts, rate_raw, interval_hours)")
    backtest.add_argument("--venue", default="binance",
                          help="the venue whose funding (and marks) to use (default binance)")
    backtest.add_argument("--leverage", type=_positive_list, metavar="X,Y",
                          help="a sweep: one run per leverage (e.g. 15,20,25)")
    backtest.add_argument("--run-id", default="backtest", help="names the run's rows (default backtest)")
    backtest.add_argument("--dask", metavar="ADDRESS",
                          help="run a sweep's backtests on the dask scheduler at ADDRESS "
                               "(default: a process per core)")
    backtest.set_defaults(func=cmd_backtest)

    report = sub.add_parser("report", parents=[common],
                            help="execute a report notebook and export it to HTML (and PDF)")
    report.add_argument("name", nargs="?", metavar="NAME", help="the report (see --list)")
    report.add_argument("--list", action="store_true", help="name the reports and their parameters")
    report.add_argument("--out", metavar="FILE.html", help="the HTML file to write")
    report.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="set a notebook parameter (repeatable)")
    report.add_argument("--pdf", action="store_true", help="also print FILE.pdf with Chromium")
    report.set_defaults(func=cmd_report)

    config = sub.add_parser("config", parents=[common], help="print the effective configuration")
    config.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HedgeflowError as exc:
        print(f"hedgeflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `hedgeflow replay ... | head`: the reader left; not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
