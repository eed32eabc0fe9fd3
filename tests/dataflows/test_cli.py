"""The ``hedgeflow`` command: replay and config."""

from __future__ import annotations

import json
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
    assert (b["messages"], b["trades"], b["quotes"], b["ignored"], b["quarantined"], b["pending"]) == (
        265, 2, 84, 179, 0, 0)
    assert counts["db"] == str(db)
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM quotes").fetchone() == (84,)
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
    assert cfg["oracle"]["min_sources"] == 1


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
