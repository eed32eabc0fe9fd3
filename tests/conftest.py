"""Shared fixtures: the recorded captures, a temporary DuckDB path, batch builders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from models.records import QuoteBatch, RawBatch, TradeBatch

# Property tests draw the same examples on every run (a failure is reproduced by rerunning, and
# CI does not fail on an example a previous run never drew); HYPOTHESIS_PROFILE=explore draws new
# ones each time, for a developer hunting for counterexamples.
settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


def _repo_root() -> Path:
    """The directory holding pyproject.toml, found by walking up from this file."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    raise RuntimeError(f"no pyproject.toml above {here}")


REPO_ROOT = _repo_root()
RECORDED_DIR = REPO_ROOT.parent / "shared" / "data" / "recorded"
BINANCE_CAPTURE = RECORDED_DIR / "BINANCE.ws.1.0"


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def recorded_dir() -> Path:
    if not RECORDED_DIR.is_dir():
        pytest.fail(f"recorded traffic not found at {RECORDED_DIR}")
    return RECORDED_DIR


@pytest.fixture
def binance_capture(recorded_dir: Path) -> Path:
    path = recorded_dir / "BINANCE.ws.1.0"
    if not path.is_file():
        pytest.fail(f"recorded Binance capture not found at {path}")
    return path


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A DuckDB file path that does not exist yet (in a fresh temporary directory)."""
    return tmp_path / "db" / "hedgeflow.duckdb"


# ------------------------------------------------------------------------------ batch builders

_QUOTE_DEFAULTS = {
    "exchange": "binance",
    "instrument": "BTCUSDT",
    "asset": "BTC",
    "quote_ccy": "USDT",
    "event_ts": 1_700_000_000.0,
    "receive_ts": None,  # defaults to event_ts
    "bid": 100.0,
    "bid_size_coin": 1.0,
    "ask": 101.0,
    "ask_size_coin": 2.0,
    "raw": None,  # defaults to a readable description of the row
}

_TRADE_DEFAULTS = {
    "exchange": "binance",
    "instrument": "BTCUSDT",
    "asset": "BTC",
    "quote_ccy": "USDT",
    "event_ts": 1_700_000_000.0,
    "receive_ts": None,
    "trade_id": None,  # defaults to the row number
    "price": 100.0,
    "size_coin": 0.5,
    "side": "buy",
    "raw": None,
}


def _columns(defaults: dict, rows: list[dict], kind: str) -> dict[str, list]:
    unknown = {k for r in rows for k in r} - set(defaults)
    if unknown:
        raise KeyError(f"unknown {kind} fields {sorted(unknown)}")
    full = []
    for i, row in enumerate(rows):
        r = {**defaults, **row}
        if r["receive_ts"] is None:
            r["receive_ts"] = r["event_ts"]
        if "trade_id" in r and r["trade_id"] is None:
            r["trade_id"] = str(i + 1)
        if r["raw"] is None:
            r["raw"] = f"{kind} row {i}"
        full.append(r)
    return {name: [r[name] for r in full] for name in defaults}


def make_quotes(*rows: dict) -> QuoteBatch:
    """A QuoteBatch from a few rows given as dicts of the fields that differ from the defaults."""
    return QuoteBatch.from_columns(**_columns(_QUOTE_DEFAULTS, list(rows), "quote"))


def make_trades(*rows: dict) -> TradeBatch:
    """A TradeBatch from a few rows given as dicts of the fields that differ from the defaults."""
    return TradeBatch.from_columns(**_columns(_TRADE_DEFAULTS, list(rows), "trade"))


def make_raw(exchange: str, items: list[tuple[float, str]]) -> RawBatch:
    """A RawBatch from (receive_ts, text) pairs."""
    return RawBatch(exchange, np.asarray([t for t, _ in items], dtype=np.float64), [m for _, m in items])


@pytest.fixture
def quote_batch():
    return make_quotes


@pytest.fixture
def trade_batch():
    return make_trades


@pytest.fixture
def raw_batch():
    return make_raw
