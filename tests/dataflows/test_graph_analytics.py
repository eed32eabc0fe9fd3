"""The analytics branch of the graph, end to end: option tickers and oracle prices in; surfaces,
premium quotes, policy risk and volatility out, on the named streams and in DuckDB. Then the same
with the heavy work on a dask LocalCluster, and `hedgeflow quote` off the stored chain."""

from __future__ import annotations

import asyncio
import json
import math

import duckdb
import numpy as np
import pytest

from dataflows import cli
from dataflows.analytics import build_analytics, simulate_policy_risks
from dataflows.clock import SimulatedClock
from dataflows.config import load_config
from dataflows.graph import build_graph
from dataflows.workers import Worker
from models.oracle import MedianOracle, MedianOracleConfig
from models.premium import PremiumConfig
from storage.writer import DuckDBWriter
from tests.dataflows.test_analytics import SPOT, T0, chain_batch, price
from tests.dataflows.test_graph import release


def analytics_config(**overrides):
    return load_config(env={}, overrides={f"analytics.{k}": v for k, v in overrides.items()}).analytics


def make_graph(db_path, worker: Worker, **overrides):
    config = analytics_config(**{"risk_paths": 2_000, **overrides})
    clock = SimulatedClock(T0)
    writer = DuckDBWriter(db_path, capacity_rows=10_000, flush_interval_s=1.0)
    graph = build_graph(
        clock=clock, writer=writer,
        oracle=MedianOracle(MedianOracleConfig(min_sources=1, stale_after_s=10.0, interval_s=1.0)),
        analytics=build_analytics(config, worker),
    )
    return graph, clock


def named_sinks(graph):
    streams = {"surfaces": graph.surfaces, "premium_quotes": graph.premium_quotes,
               "policy_risk": graph.policy_risk, "volatility": graph.volatility}
    return streams, {name: s.sink_to_list() for name, s in streams.items()}


def stored(db_path, table: str) -> int:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


def test_option_tickers_become_surfaces_quotes_and_policy_risk_in_duckdb(db_path):
    graph, clock = make_graph(db_path, Worker("inline"))
    streams, out = named_sinks(graph)
    try:
        graph.data["option_tickers"].emit(chain_batch(T0))
        clock.advance_by(1.0)
        graph.tick()
        (outcomes,) = out["surfaces"]
        assert [o.asset for o in outcomes] == ["BTC"] and outcomes[0].fit is not None
        (quotes,) = out["premium_quotes"]
        n_tiers = len(PremiumConfig().tiers)
        assert len(quotes) == n_tiers * 3  # every tier × the default 7, 30 and 90 days
        (risks,) = out["policy_risk"]
        assert len(risks) == len(quotes)
        for quote, risk in zip(quotes, risks):
            assert (risk.tier, risk.strike_usd, risk.expiry_utc) == (quote.tier, quote.strike_usd, quote.expiry_utc)
            assert risk.premium_usd == quote.premium_usd and risk.n_paths == 2_000
            assert 0.0 <= risk.probability_exercise <= risk.probability_touch <= 1.0
            assert risk.seller_es_usd >= risk.seller_var_usd
        # A second tick within the interval refits nothing.
        clock.advance_by(1.0)
        graph.tick()
        assert len(out["surfaces"]) == 1
    finally:
        graph.close()
        release(*streams.values())
    assert stored(db_path, "surface_fits") == 1
    assert stored(db_path, "premium_quotes") == len(quotes)
    assert stored(db_path, "policy_risk") == len(risks)
    assert stored(db_path, "option_tickers") == len(chain_batch(T0))


def test_oracle_prices_feed_the_volatility_table(db_path):
    graph, clock = make_graph(db_path, Worker("inline"), volatility_bar_s=60.0,
                              volatility_min_coverage_s=600.0, surface_enabled=False)
    streams, out = named_sinks(graph)
    rng = np.random.default_rng(1)
    level = SPOT
    try:
        for minute in range(30):
            level *= math.exp(0.002 * rng.standard_normal())
            graph.oracle_prices.emit([price("BTC", T0 + 60.0 * minute, level)])
    finally:
        graph.close()
        release(*streams.values())
    estimates = [e for batch in out["volatility"] for e in batch]
    assert len(estimates) == 29
    assert stored(db_path, "volatility") == 29
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        ready = con.execute("SELECT count(*) FROM volatility WHERE ready").fetchone()[0]
    finally:
        con.close()
    assert ready == sum(e.ready for e in estimates) > 0


def test_policy_risk_is_reproducible_and_independent_of_batch_order():
    analytics = build_analytics(analytics_config(), Worker("inline"))
    from dataflows.analytics import fit_chain
    from models.option_book import OptionBook

    book = OptionBook()
    book.update(chain_batch())
    outcome = fit_chain(book.snapshot("BTC", T0 + 1.0), "", 20)
    quotes = analytics.premium.on_surfaces([outcome])
    config = PremiumConfig()
    a = simulate_policy_risks(quotes, config, 1_000, 0.99, [0, 1])
    b = simulate_policy_risks(quotes, config, 1_000, 0.99, [0, 1])
    assert a == b
    assert simulate_policy_risks(quotes[::-1], config, 1_000, 0.99, [0, 1])[::-1] == a
    c = simulate_policy_risks(quotes, config, 1_000, 0.99, [0, 2])
    assert a != c
    # The paths price at the quote's vol: the expected payoff is the fair value (the premium less
    # its margins), within the Monte Carlo error.
    big = simulate_policy_risks(quotes, config, 40_000, 0.99, [0, 3])
    for q, r in zip(quotes, big):
        fair = q.premium_usd - q.margin_usd - q.rounding_usd
        assert abs(r.expected_payoff_usd - fair) < 4 * r.expected_payoff_stderr_usd + 0.01 * fair
    analytics.close()


def test_surface_fits_and_monte_carlo_run_on_a_dask_local_cluster(db_path):
    distributed = pytest.importorskip("distributed")

    async def main():
        async with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                            asynchronous=True, dashboard_address=None) as cluster:
            async with distributed.Client(cluster, asynchronous=True) as client:
                worker = Worker("dask", client=client)
                graph, clock = make_graph(db_path, worker)
                streams, out = named_sinks(graph)
                try:
                    graph.data["option_tickers"].emit(chain_batch(T0))
                    clock.advance_by(1.0)
                    graph.tick()
                    assert out["surfaces"] == []  # the fit is on the cluster, not in the graph
                    for _ in range(600):
                        if out["policy_risk"]:
                            break
                        await asyncio.sleep(0.1)
                finally:
                    graph.close()
                    release(*streams.values())
                return out, worker

    out, worker = asyncio.run(main())
    assert len(out["surfaces"]) == 1 and out["surfaces"][0][0].fit is not None
    assert len(out["policy_risk"]) == 1 and len(out["premium_quotes"]) == 1
    # One task for the fit of every asset, one for the Monte Carlo of every quote: batches.
    assert worker.submitted == 2 and worker.completed == 2 and worker.failed == 0
    assert stored(db_path, "policy_risk") == len(out["policy_risk"][0])


# --------------------------------------------------------------------------- hedgeflow quote


@pytest.fixture
def chain_db(tmp_path):
    db = tmp_path / "chain.duckdb"
    graph, clock = make_graph(db, Worker("inline"), risk_enabled=False)
    graph.data["option_tickers"].emit(chain_batch(T0))
    clock.advance_by(1.0)
    graph.tick()
    graph.close()
    return db


def test_quote_prints_the_premium_and_a_breakdown_that_sums_to_it(chain_db, capsys):
    code = cli.main(["quote", "--asset", "btc", "--strike", "36000", "--expiry", "2023-12-29",
                     "--amount", "2", "--db", str(chain_db)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["asset"] == "BTC" and result["amount_coin"] == 2.0
    assert result["expiry_utc"] == "2023-12-29T08:00:00Z"
    assert result["spot_source"] == "option index" and result["spot_usd"] == SPOT
    assert result["surface"]["arbitrage_ok"] is True
    parts = ("intrinsic_usd", "time_value_usd", "volatility_usd", "skew_usd", "jump_usd", "margin_usd",
             "rounding_usd")
    assert result["premium_usd"] > 0.0
    assert sum(result[p] for p in parts) == pytest.approx(result["premium_usd"], abs=1e-6)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--asset", "BTC", "--strike", "-5", "--expiry", "2023-12-29"], "expected a positive number"),
        (["--asset", "BTC", "--strike", "36000", "--expiry", "Christmas"], "expected an expiry date"),
        (["--asset", "SOL", "--strike", "100", "--expiry", "2023-12-29"], "no SOL option tickers"),
        (["--asset", "BTC", "--strike", "36000", "--expiry", "2023-11-01"], "is not after the pricing time"),
    ],
)
def test_quote_mistakes_exit_2_with_what_to_do(chain_db, capsys, argv, expected):
    assert exit_code(["quote", *argv, "--db", str(chain_db)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_quote_without_a_database_says_which_file_is_missing(tmp_path, capsys):
    assert exit_code(["quote", "--asset", "BTC", "--strike", "36000", "--expiry", "2023-12-29",
                      "--db", str(tmp_path / "none.duckdb")]) == 2
    assert "database not found" in capsys.readouterr().err


def test_quote_at_a_time_reads_nothing_stored_after_it(tmp_path, capsys):
    db = tmp_path / "two.duckdb"
    graph, clock = make_graph(db, Worker("inline"), risk_enabled=False)
    graph.data["option_tickers"].emit(chain_batch(T0))
    graph.oracle_prices.emit([price("BTC", T0, SPOT)])
    graph.data["option_tickers"].emit(chain_batch(T0 + 7_200.0, spot_usd=30_000.0))
    graph.oracle_prices.emit([price("BTC", T0 + 7_200.0, 30_000.0)])
    graph.close()
    base = ["quote", "--asset", "BTC", "--strike", "30000", "--expiry", "2023-12-29", "--db", str(db)]
    assert cli.main([*base, "--at", str(T0 + 1.0)]) == 0
    then = json.loads(capsys.readouterr().out)
    assert cli.main(base) == 0
    newest = json.loads(capsys.readouterr().out)
    assert then["spot_usd"] == SPOT and then["spot_source"] == "oracle"
    assert newest["spot_usd"] == 30_000.0 and newest["priced_at_utc"] > then["priced_at_utc"]
    assert then["premium_usd"] < newest["premium_usd"]  # a 30k put is far cheaper at 40k spot
    assert exit_code([*base, "--at", str(T0 - 60.0)]) == 2
    assert "or a later --at" in capsys.readouterr().err
    assert exit_code([*base, "--at", "nan"]) == 2
    assert "expected epoch seconds" in capsys.readouterr().err


def exit_code(argv) -> int:
    """``hedgeflow ARGV``'s exit status: argparse exits on a bad flag, a HedgeflowError returns."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code
