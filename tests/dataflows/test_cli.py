"""The ``hedgeflow`` command: replay and config."""

from __future__ import annotations

import json
import re
import logging
import os
import subprocess
import sys

import duckdb
import pytest

from dataflows import cli
from tests.conftest import REPO_ROOT


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No HEDGEFLOW_* variables and no ./hedgeflow.toml from the developer's shell; root logging restored."""
    for name in list(os.environ):
        if name.startswith("HEDGEFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEDGEFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def run_cli(*args: str, cwd, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dataflows.cli", *args],
        cwd=cwd, env=subprocess_env(**env), capture_output=True, text=True, timeout=120,
    )


def test_replay_prints_the_counts_as_json(binance_capture, tmp_path, capsys):
    db = tmp_path / "out" / "replay.duckdb"
    assert cli.main(["replay", str(binance_capture), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    counts = json.loads(out)
    b = counts["exchanges"]["binance"]
    assert {k: b[k] for k in ("messages", "data", "control", "ignored", "quarantined")} == {
        "messages": 265, "data": 263, "control": 0, "ignored": 2, "quarantined": 0}
    assert {k: b[k] for k in ("trades", "quotes", "option_tickers", "book_updates", "funding", "index_prices",
                              "gaps", "pending")} == {
        "trades": 2, "quotes": 84, "option_tickers": 0, "book_updates": 422, "funding": 0, "index_prices": 0,
        "gaps": 0, "pending": 0}
    assert counts["total"]["messages"] == 265 and counts["total"]["pending"] == 0
    assert counts["db"] == str(db)
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM quotes").fetchone() == (84,)
        assert con.execute("SELECT count(*) FROM book_updates").fetchone() == (422,)
        assert con.execute("SELECT count(*) FROM trades").fetchone() == (2,)
    finally:
        con.close()


def test_replay_missing_capture_exits_2_without_traceback(tmp_path):
    r = run_cli("replay", "missing", "--db", "x", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "error:" in r.stderr
    assert "missing" in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""
    assert not (tmp_path / "x").exists()


def test_replay_missing_capture_in_process(tmp_path, capsys):
    assert cli.main(["replay", str(tmp_path / "missing"), "--db", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "capture file not found" in err


def test_config_prints_json(capsys):
    assert cli.main(["config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert {"storage", "oracle", "feeds", "simulator", "dashboard", "logging"} <= set(cfg)
    assert cfg["storage"]["flush_rows"] == 10_000
    assert cfg["oracle"]["min_sources"] == 3


def test_config_reads_environment(monkeypatch, capsys):
    monkeypatch.setenv("HEDGEFLOW_STORAGE__FLUSH_ROWS", "123")
    assert cli.main(["config"]) == 0
    assert json.loads(capsys.readouterr().out)["storage"]["flush_rows"] == 123


def test_invalid_env_var_exits_2_naming_the_key(monkeypatch, capsys):
    monkeypatch.setenv("HEDGEFLOW_STORAGE__FLUSH_ROWS", "abc")
    assert cli.main(["config"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "error:" in captured.err
    assert "storage.flush_rows" in captured.err
    assert "HEDGEFLOW_STORAGE__FLUSH_ROWS" in captured.err


def test_invalid_env_var_in_a_subprocess_has_no_traceback(tmp_path, binance_capture):
    r = run_cli("replay", str(binance_capture), "--db", "x.duckdb", cwd=tmp_path,
                HEDGEFLOW_STORAGE__FLUSH_ROWS="abc")
    assert r.returncode == 2
    assert "storage.flush_rows" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "x.duckdb").exists()


def test_simulate_runs_for_its_duration_and_prints_what_it_sent(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dataflows.cli", "simulate", "--port", "0", "--duration", "1"],
        capture_output=True, text=True, timeout=60, env=subprocess_env(), cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    sent = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "binance" in sent
    for exchange in sent:  # where to connect, per simulated exchange
        assert f"hedgeflow: {exchange} simulator on ws://127.0.0.1:" in proc.stderr
    # Nobody connected: a server with no subscribers writes nothing, and says so.
    for exchange, counts in sent.items():
        assert "total" in counts, exchange
        assert all(isinstance(n, int) for n in counts.values())
        assert {kind: n for kind, n in counts.items() if n} == {}, exchange


def test_run_without_dashboard_stores_and_reconciles(tmp_path):
    db = tmp_path / "run.duckdb"
    proc = subprocess.run(
        [sys.executable, "-m", "dataflows.cli", "run", "--duration", "3", "--db", str(db),
         "--no-dashboard"],
        capture_output=True, text=True, timeout=90,
        env=subprocess_env(HEDGEFLOW_SIMULATOR__PORT="0"), cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts["total"]["pending"] == 0
    con = duckdb.connect(str(db), read_only=True)
    try:
        stored = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("trades", "quotes", "oracle_prices")}
    finally:
        con.close()
    assert stored["quotes"] == counts["total"]["quotes"] > 0
    assert stored["trades"] == counts["total"]["trades"]
    assert stored["oracle_prices"] > 0


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["run", "--duration", "-1"], "positive number of seconds"),
        (["run", "--duration", "soon"], "expected a number of seconds"),
        (["replay"], "the following arguments are required"),
    ],
)
def test_bad_flags_exit_2_with_a_usage_message(argv, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert expected in capsys.readouterr().err


def test_run_with_a_taken_dashboard_port_says_how_to_fix_it(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "dataflows.cli", "run", "--duration", "2", "--port", str(port),
             "--db", str(tmp_path / "x.duckdb")],
            capture_output=True, text=True, timeout=90,
            env=subprocess_env(HEDGEFLOW_SIMULATOR__PORT="0"), cwd=tmp_path,
        )
    assert proc.returncode == 2
    assert "--port" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------- export, restore, query, quality


def test_export_restore_query_and_quality_round_trip(recorded_dir, tmp_path, capsys):
    db, restored, archive = tmp_path / "a.duckdb", tmp_path / "b.duckdb", tmp_path / "archive"
    assert cli.main(["replay", str(recorded_dir), "--db", str(db)]) == 0
    capsys.readouterr()

    assert cli.main(["export", "--db", str(db), "--out", str(archive)]) == 0
    out, err = capsys.readouterr()
    first = json.loads(out)
    assert re.fullmatch(r"hedgeflow: export: (\d+) of \1 tables \(100%\)", err.strip().splitlines()[-1])
    assert first["written"] > 0 and first["refused"] == []
    assert cli.main(["export", "--db", str(db), "--out", str(archive)]) == 0
    second = json.loads(capsys.readouterr().out)
    assert (second["written"], second["unchanged"]) == (0, first["written"])  # a second export changes nothing

    assert cli.main(["restore", "--from", str(archive), "--db", str(restored)]) == 0
    capsys.readouterr()
    con = duckdb.connect(str(restored), read_only=True)
    con.execute(f"ATTACH '{db}' AS original (READ_ONLY)")
    for table in ("trades", "quotes", "option_tickers"):
        for a, b in ((table, f"original.{table}"), (f"original.{table}", table)):
            assert con.execute(f"SELECT count(*) FROM (FROM {a} EXCEPT ALL FROM {b})").fetchone()[0] == 0
    con.close()

    assert cli.main(["query", "SELECT count(*) AS n FROM trades", "--archive", str(archive),
                     "--format", "csv", "--db", str(restored)]) == 0
    assert capsys.readouterr().out.strip().splitlines() == ["n", "60"]
    assert cli.main(["quality", "--db", str(db)]) == 0
    report = capsys.readouterr().out
    assert "hedgeflow data quality" in report and "coinbase" in report


def test_query_mistakes_exit_2_with_what_to_do(tmp_path, capsys):
    assert cli.main(["query", "SELECT 1", "--db", str(tmp_path / "none.duckdb")]) == 2
    assert "database not found" in capsys.readouterr().err
    assert cli.main(["export", "--db", str(tmp_path / "none.duckdb"), "--out", str(tmp_path / "a")]) == 2
    assert "database not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["export", "--db", "x", "--out", "y", "--from", "yesterday"])
    assert "YYYY-MM-DD" in capsys.readouterr().err


def test_pause_and_resume_write_and_remove_the_pause_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HEDGEFLOW_CHAIN__PAUSE_FILE", str(tmp_path / "chain.pause"))
    assert cli.main(["pause", "--on-chain"]) == 0
    assert (tmp_path / "chain.pause").read_text() == "on-chain\n"
    assert "paused off-chain and on-chain" in capsys.readouterr().out
    assert cli.main(["resume"]) == 0
    assert not (tmp_path / "chain.pause").exists()
    assert cli.main(["resume"]) == 0
    assert "was not paused" in capsys.readouterr().out


def test_premium_backtest_on_the_recorded_month_prints_reconciled_totals(capsys):
    market = REPO_ROOT.parent / "shared" / "data" / "market" / "btc_perp_1m_2021-12-31_2022-02-01.csv"
    assert cli.main(["premium-backtest", "--data", str(market), "--tenors", "1,7"]) == 0
    result = json.loads(capsys.readouterr().out)
    summary = result["summary"]
    assert result["bars"] == 45_031 and result["config"]["tenors_days"] == [1.0, 7.0]
    groups = result["by_tier_and_tenor"]
    assert len(groups) == 3 * 2  # every tier × tenor
    assert sum(g["n_policies"] for g in groups.values()) == summary["n_policies"] > 0
    assert sum(g["total_payoff_usd"] for g in groups.values()) == pytest.approx(summary["total_payoff_usd"])
    assert summary["premium_pnl_usd"] == pytest.approx(summary["total_premium_usd"] - summary["total_payoff_usd"])
    # The same file gives the same figures.
    assert cli.main(["premium-backtest", "--data", str(market), "--tenors", "1,7"]) == 0
    assert json.loads(capsys.readouterr().out) == result


def test_premium_backtest_mistakes_exit_2(tmp_path, capsys):
    assert cli.main(["premium-backtest", "--data", str(tmp_path / "none.csv")]) == 2
    assert "price history not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["premium-backtest", "--data", "x.csv", "--tenors", "1,week"])
    assert exc.value.code == 2


def test_calibrate_jumps_prints_the_fit_and_the_settings_to_use(capsys):
    market = REPO_ROOT.parent / "shared" / "data" / "market" / "btc_perp_1m_2021-12-31_2022-02-01.csv"
    assert cli.main(["calibrate-jumps", "--data", str(market), "--max-intensity", "12"]) == 0
    text = capsys.readouterr().out
    assert "NaN" not in text  # strict JSON: a missing standard error is null
    result = json.loads(text)
    assert result["converged"] and result["n_returns"] > 700 and result["likelihood_ratio"] > 10
    settings = result["analytics"]
    assert 0.0 < settings["premium_jump_intensity_per_year"] <= 12.0
    # The printed settings are valid [analytics] values.
    from dataflows.config import load_config

    cfg = load_config(env={}, overrides={f"analytics.{k}": v for k, v in settings.items()})
    assert cfg.analytics.premium_config().jumps.intensity_per_year == settings["premium_jump_intensity_per_year"]


def test_calibrate_jumps_on_too_short_a_history_says_so(tmp_path, capsys):
    path = tmp_path / "short.csv"
    path.write_text("timestamp,close\n" + "".join(f"{1_700_000_000 + 60 * i},{100 + i % 3}\n" for i in range(30)))
    assert cli.main(["calibrate-jumps", "--data", str(path), "--bar-minutes", "1"]) == 2
    assert "too few to fit jumps" in capsys.readouterr().err
