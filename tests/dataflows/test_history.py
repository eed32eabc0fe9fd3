"""dataflows.history: OHLCV files as the backtests read them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dataflows.history import load_ohlcv
from models.errors import HedgeflowError
from tests.conftest import REPO_ROOT

MARKET_FILE = REPO_ROOT.parent / "shared" / "data" / "market" / "btc_perp_1m_2021-12-31_2022-02-01.csv"


def test_the_recorded_one_minute_file_loads_in_time_order():
    series = load_ohlcv(MARKET_FILE)
    assert len(series) == 45_031
    assert series.ts_s[0] == pd.Timestamp("2021-12-31 23:01", tz="UTC").timestamp()
    assert series.close_usd[0] == 46_377.0 and series.high_usd[0] == 46_385.0
    assert np.all(np.diff(series.ts_s) > 0)


@pytest.mark.parametrize("unit, scale", [("s", 1), ("ms", 1_000), ("us", 1_000_000),
                                         ("ns", 1_000_000_000)])
def test_shuffled_parquet_with_epoch_numbers_comes_back_sorted(tmp_path, unit, scale):
    ts = 1_700_000_000 + 60 * np.arange(5)
    frame = pd.DataFrame({"timestamp": ts * scale, "open": 1.0, "high": 2.0, "low": 0.5,
                          "close": [10.0, 11.0, 12.0, 13.0, 14.0], "volume": 3.0})
    path = tmp_path / f"bars_{unit}.parquet"
    frame.sample(frac=1.0, random_state=1).to_parquet(path)
    series = load_ohlcv(path)
    np.testing.assert_allclose(series.ts_s, ts)
    np.testing.assert_array_equal(series.close_usd, [10.0, 11.0, 12.0, 13.0, 14.0])


def test_a_close_only_csv_is_bars_of_their_close(tmp_path):
    path = tmp_path / "close.csv"
    path.write_text("Timestamp,Close\n2022-01-01 00:01:00,101\n2022-01-01 00:00:00,100\n")
    series = load_ohlcv(path)
    np.testing.assert_array_equal(series.close_usd, [100.0, 101.0])
    np.testing.assert_array_equal(series.high_usd, series.close_usd)
    assert np.isnan(series.volume).all()


@pytest.mark.parametrize(
    "text, message",
    [
        ("time,close\n1,2\n", "no column timestamp"),
        ("timestamp,close\n", "holds no rows"),
        ("timestamp,close\n2022-01-01,1\n2022-01-01,2\n", "appears more than once"),
        ("timestamp,close\n2022-01-01,1\n2022-01-02,-3\n", "1 rows have no positive close"),
        ("timestamp,close\nyesterday,1\n", "cannot read column timestamp"),
        ("timestamp,close\n2022-01-01,1\n,2\n", "1 rows have no timestamp"),
    ],
)
def test_mistakes_in_the_file_are_named(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(HedgeflowError, match=message):
        load_ohlcv(path)


def test_a_missing_file_says_what_to_give(tmp_path):
    with pytest.raises(HedgeflowError, match="price history not found"):
        load_ohlcv(tmp_path / "none.csv")


FUNDING_FILE = REPO_ROOT.parent / "shared" / "data" / "market" / "btcusdt_perp_funding_binance_bybit_2025-08_2026-08.csv"


def test_the_recorded_funding_file_loads_per_venue():
    from dataflows.history import load_funding

    funding = load_funding(FUNDING_FILE)
    assert len(funding) == 2_190 and set(funding.venue.tolist()) == {"binance", "bybit"}
    assert np.all(np.diff(funding.ts_s) >= 0)
    binance = funding.only("binance")
    assert np.isfinite(binance.mark_usd).all() and np.all(binance.interval_h == 8.0)
    # The file's own APR column is the rate per interval times the intervals in a year.
    frame = pd.read_csv(FUNDING_FILE)
    np.testing.assert_allclose(np.sort(frame["rate_raw"] * 365 * 24 / frame["interval_hours"]),
                               np.sort(frame["rate_apr"]), rtol=1e-6)
    with pytest.raises(HedgeflowError, match="no funding for venue 'okx'"):
        funding.only("okx")


def test_funding_mistakes_are_named(tmp_path):
    from dataflows.history import load_funding

    path = tmp_path / "f.csv"
    path.write_text("venue,settlement_ts,rate\nbinance,2025-01-01,0.0001\n")
    with pytest.raises(HedgeflowError, match="no column rate_raw, interval_hours"):
        load_funding(path)
    path.write_text("venue,settlement_ts,rate_raw,interval_hours\nbinance,2025-01-01,x,8\n")
    with pytest.raises(HedgeflowError, match="1 rows lack a time, rate or interval"):
        load_funding(path)
