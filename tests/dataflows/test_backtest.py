"""hedgeflow backtest: the graph with the hedge desk over the recorded market history."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest

from dataflows import cli
from dataflows.backtest import run_backtest, volatility_settings
from dataflows.config import load_config
from dataflows.history import load_ohlcv
from tests.conftest import REPO_ROOT

MARKET = REPO_ROOT.parent / "shared" / "data" / "market"
MINUTES = MARKET / "btc_perp_1m_2021-12-31_2022-02-01.csv"
FUNDING = MARKET / "btcusdt_perp_funding_binance_bybit_2025-08_2026-08.csv"
KPIS = ("coverage_ratio", "net_apr", "max_drawdown", "sharpe_ratio", "funding_efficiency", "ltv_stability")


@pytest.fixture(scope="module")
def four_days():
    series = load_ohlcv(MINUTES)
    return series.ts_s[: 4 * 1_440], series.close_usd[: 4 * 1_440]


def test_a_backtest_is_reproducible_and_its_equity_rows_add_up(four_days, tmp_path):
    ts, close = four_days
    cfg = load_config(env={})
    first = run_backtest(ts, close, tmp_path / "a.duckdb", config=cfg)
    again = run_backtest(ts, close, tmp_path / "b.duckdb", config=cfg)
    assert first == again  # the same inputs give the same output
    assert first["steps"] == len(ts) and set(KPIS) <= set(first)
    assert first["fills"] > 0 and first["orders_approved"] == first["fills"]
    con = duckdb.connect(str(tmp_path / "a.duckdb"), read_only=True)
    try:
        n, worst = con.execute(
            "SELECT count(*), max(abs(equity_usd - (cash_usd + position_value_usd + reserve_usd - loan_usd))) "
            "FROM backtest_equity").fetchone()
        trades, fees = con.execute("SELECT count(*), sum(fee_usd) FROM backtest_trades").fetchone()
        end = con.execute("SELECT equity_usd, fees_usd FROM backtest_equity ORDER BY ts DESC LIMIT 1").fetchone()
        tables = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("position_states", "loan_updates", "order_decisions", "volatility")}
    finally:
        con.close()
    assert n == len(ts) and worst < 1e-6
    assert trades == first["fills"] and fees == pytest.approx(first["fees_usd"]) == pytest.approx(end[1])
    assert end[0] == pytest.approx(first["equity_end_usd"])
    assert tables["position_states"] == tables["loan_updates"] == len(ts)
    assert tables["volatility"] > 0  # the graph's own volatility node fed the desk


def test_coarse_data_gets_a_wider_volatility_window():
    minutes = 1_700_000_000.0 + 60.0 * np.arange(100)
    assert volatility_settings(minutes) == (60.0, 86_400.0, 3_600.0)
    eight_hours = 1_700_000_000.0 + 28_800.0 * np.arange(100)
    bar, window, coverage = volatility_settings(eight_hours)
    assert bar == 28_800.0 and window == 10 * bar and coverage <= window


def test_backtest_on_the_funding_files_marks_prints_the_kpis(tmp_path, capsys):
    db = tmp_path / "year.duckdb"
    assert cli.main(["backtest", "--data", str(FUNDING), "--funding", str(FUNDING), "--db", str(db)]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["bars"] == 1_095  # Binance's settlements: three a day for a year
    # Progress on stderr, the last line at the end of the data.
    assert err.strip().splitlines()[-1] == "hedgeflow: backtest: 1,095 of 1,095 bars (100%)"
    assert set(KPIS) <= set(result)
    assert 0.0 <= result["max_drawdown"] <= 1.0 and 0.0 <= result["ltv_stability"] <= 1.0
    assert result["funding_paid_usd"] != 0.0  # the settled rates were paid or received


def test_a_leverage_sweep_runs_each_value_under_its_own_run_id(four_days, tmp_path, capsys):
    ts, close = four_days
    path = tmp_path / "four_days.csv"
    with path.open("w") as f:
        f.write("timestamp,close\n")
        f.writelines(f"{t:.0f},{c}\n" for t, c in zip(ts, close))
    db = tmp_path / "sweep.duckdb"
    assert cli.main(["backtest", "--data", str(path), "--db", str(db), "--leverage", "15,25"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert [r["run_id"] for r in runs] == ["backtest:leverage=15", "backtest:leverage=25"]
    con = duckdb.connect(str(db), read_only=True)
    try:
        ids = [r[0] for r in con.execute("SELECT DISTINCT run_id FROM backtest_equity ORDER BY 1").fetchall()]
    finally:
        con.close()
    assert ids == ["backtest:leverage=15", "backtest:leverage=25"]


def test_backtest_mistakes_exit_2_with_what_to_do(tmp_path, capsys):
    existing = tmp_path / "old.duckdb"
    existing.write_bytes(b"")
    assert cli.main(["backtest", "--data", str(FUNDING), "--db", str(existing)]) == 2
    assert "give a new --db file" in capsys.readouterr().err
    assert cli.main(["backtest", "--data", str(tmp_path / "none.csv"), "--db", str(tmp_path / "x.duckdb")]) == 2
    assert "price history not found" in capsys.readouterr().err
    assert cli.main(["backtest", "--data", str(FUNDING), "--funding", str(FUNDING), "--venue", "okx",
                     "--db", str(tmp_path / "y.duckdb")]) == 2
    assert "no funding for venue 'okx'" in capsys.readouterr().err


def test_a_sweep_on_a_dask_local_cluster_gathers_every_run_as_run_alone_would(four_days, tmp_path):
    distributed = pytest.importorskip("distributed")
    from dataflows.backtest import run_sweep
    from models.desk import DeskConfig, replace_leverage

    ts, close = four_days[0][:1_440], four_days[1][:1_440]
    cfg = load_config(env={})
    runs = [(f"lev{x}", replace_leverage(DeskConfig(), x)) for x in (15.0, 25.0)]
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        results = run_sweep(ts, close, tmp_path / "sweep.duckdb", runs, config=cfg, client=client)
    alone = run_backtest(ts, close, tmp_path / "alone.duckdb", config=cfg, desk_config=runs[1][1],
                         run_id="lev25.0")
    assert [r["run_id"] for r in results] == ["lev15.0", "lev25.0"]
    assert results[1] == alone  # where a run runs does not change it
    con = duckdb.connect(str(tmp_path / "sweep.duckdb"), read_only=True)
    try:
        per_run = dict(con.execute("SELECT run_id, count(*) FROM backtest_equity GROUP BY 1").fetchall())
    finally:
        con.close()
    assert per_run == {"lev15.0": len(ts), "lev25.0": len(ts)}


def test_a_backtest_trades_again_after_a_stall_fires_the_dead_mans_switch(four_days, tmp_path):
    ts, close = four_days
    ts = ts.copy()
    ts[2_000:] += 4 * 3_600.0  # four hours without data in the second day
    result = run_backtest(ts, close, tmp_path / "stall.duckdb", config=load_config(env={}))
    con = duckdb.connect(str(tmp_path / "stall.duckdb"), read_only=True)
    try:
        events = dict(con.execute("SELECT event, count(*) FROM hedge_decisions GROUP BY 1").fetchall())
        after = con.execute("SELECT count(*) FROM backtest_trades WHERE epoch(ts) > ?",
                            [float(ts[2_000])]).fetchone()[0]
    finally:
        con.close()
    assert events.get("safety", 0) >= 2  # the switch fired, and trading resumed
    assert after > 0 and result["rejected_by_rule"].get("dead_mans_switch", 0) < 10
