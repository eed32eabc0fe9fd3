"""models.indicators: each indicator against pandas (rolling / ewm with the matching conventions),
Wilder's RSI against the published worked example, and every streaming updater against its
vectorized function (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.indicators import (
    BollingerUpdater,
    EmaUpdater,
    MacdUpdater,
    RsiUpdater,
    SmaUpdater,
    bollinger,
    ema,
    macd,
    rsi,
    sma,
)


def random_walk(n: int, seed: int, start: float = 40_000.0, step: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return start * np.exp(np.cumsum(rng.normal(0.0, step, n)))


def stream(updater, x) -> list:
    return [updater.update(v) for v in x]


prices = st.lists(st.floats(-0.05, 0.05), min_size=1, max_size=120).map(
    lambda moves: 100.0 * np.exp(np.cumsum(moves)))


# --------------------------------------------------------------------------- against pandas


def test_sma_and_bollinger_match_pandas_rolling():
    x = random_walk(500, 1)
    s = pd.Series(x)
    np.testing.assert_allclose(sma(x, 20), s.rolling(20).mean(), rtol=1e-12, equal_nan=True)
    bands = bollinger(x, 20, 2.0)
    sd = s.rolling(20).std(ddof=0)
    np.testing.assert_allclose(bands.middle, s.rolling(20).mean(), rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(bands.upper, s.rolling(20).mean() + 2 * sd, rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(bands.lower, s.rolling(20).mean() - 2 * sd, rtol=1e-10, equal_nan=True)
    assert np.isnan(bands.upper[:19]).all() and np.isfinite(bands.upper[19:]).all()


@pytest.mark.parametrize("span", [1, 9, 12, 26, 200])
def test_ema_matches_pandas_ewm_adjust_false(span):
    x = random_walk(600, 2)
    np.testing.assert_allclose(ema(x, span), pd.Series(x).ewm(span=span, adjust=False).mean(), rtol=1e-12)


def test_macd_matches_pandas():
    x = random_walk(400, 3)
    s = pd.Series(x)
    line = s.ewm(span=12, adjust=False).mean() - s.ewm(span=26, adjust=False).mean()
    signal = line.ewm(span=9, adjust=False).mean()
    ours = macd(x)
    np.testing.assert_allclose(ours.macd, line, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours.signal, signal, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours.histogram, line - signal, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("window", [2, 14, 30])
def test_rsi_matches_wilder_smoothing_written_in_pandas(window):
    x = random_walk(300, 4)
    d = pd.Series(x).diff()

    def wilder(v: pd.Series) -> pd.Series:
        seeded = v.iloc[window:].copy()
        seeded.iloc[0] = v.iloc[1:window + 1].mean()  # the first average is a simple mean
        return seeded.ewm(alpha=1.0 / window, adjust=False).mean()

    gain, loss = wilder(d.clip(lower=0.0)), wilder((-d).clip(lower=0.0))
    expected = 100.0 - 100.0 / (1.0 + gain / loss)
    ours = rsi(x, window)
    assert np.isnan(ours[:window]).all()
    np.testing.assert_allclose(ours[window:], expected, rtol=1e-10)


def test_rsi_reproduces_the_published_worked_example():
    # The 14-period RSI example of StockCharts' ChartSchool (Wilder's method). Their sheet rounds
    # the first averages, so the early values differ by a few hundredths and then converge.
    closes = [44.34, 44.09, 44.15, 43.61, 44.33, 44.83, 45.10, 45.42, 45.84, 46.08, 45.89, 46.03,
              45.61, 46.28, 46.28, 46.00, 46.03, 46.41, 46.22, 45.64, 46.21, 46.25, 45.71, 46.45,
              45.78, 45.35, 44.03, 44.18, 44.22, 44.57, 43.42, 42.66, 43.13]
    published = [70.53, 66.32, 66.55, 69.41, 66.36, 57.97, 62.93, 63.26, 56.06, 62.38, 54.71, 50.42,
                 39.99, 41.46, 41.87, 45.46, 37.30, 33.09, 37.79]
    ours = rsi(closes, 14)[14:]
    np.testing.assert_allclose(ours, published, atol=0.08)
    np.testing.assert_allclose(ours[-3:], published[-3:], atol=0.025)


def test_rsi_edges_no_losses_and_no_moves():
    assert rsi(np.arange(1.0, 30.0), 14)[-1] == 100.0
    assert rsi(np.arange(30.0, 1.0, -1.0), 14)[-1] == 0.0
    assert rsi(np.full(30, 7.0), 14)[-1] == 50.0
    assert np.isnan(rsi([1.0, 2.0, 3.0], 14)).all()


# --------------------------------------------------------------------------- streaming = vectorized


@given(prices, st.integers(1, 30))
@settings(max_examples=60, deadline=None)
def test_streaming_sma_ema_rsi_equal_the_vectorized_functions(x, window):
    np.testing.assert_allclose(stream(SmaUpdater(window), x), sma(x, window), rtol=1e-11, equal_nan=True)
    np.testing.assert_allclose(stream(EmaUpdater(window), x), ema(x, window), rtol=1e-11)
    ours = np.array(stream(RsiUpdater(window), x))
    np.testing.assert_allclose(ours, rsi(x, window), rtol=1e-9, atol=1e-9, equal_nan=True)
    finite = ours[np.isfinite(ours)]
    assert np.all((finite >= 0.0) & (finite <= 100.0))


@given(prices, st.integers(1, 8), st.integers(1, 20), st.integers(1, 10))
@settings(max_examples=60, deadline=None)
def test_streaming_macd_equals_the_vectorized_function(x, fast, extra, signal):
    slow = fast + extra
    streamed = stream(MacdUpdater(fast, slow, signal), x)
    vec = macd(x, fast, slow, signal)
    for i, field in enumerate(("macd", "signal", "histogram")):
        np.testing.assert_allclose([m[i] for m in streamed], getattr(vec, field), rtol=1e-9, atol=1e-10)


@given(prices, st.integers(1, 30), st.floats(0.0, 4.0))
@settings(max_examples=60, deadline=None)
def test_streaming_bollinger_equals_the_vectorized_function_and_orders_its_bands(x, window, k):
    streamed = stream(BollingerUpdater(window, k), x)
    vec = bollinger(x, window, k)
    scale = float(np.max(x))
    for i, field in enumerate(("middle", "upper", "lower")):
        np.testing.assert_allclose([b[i] for b in streamed], getattr(vec, field), rtol=1e-10,
                                   atol=1e-12 * scale, equal_nan=True)
    full = np.isfinite(vec.middle)
    assert np.all(vec.lower[full] <= vec.middle[full] + 1e-12 * scale)
    assert np.all(vec.middle[full] <= vec.upper[full] + 1e-12 * scale)


def test_streaming_sma_does_not_drift_over_a_long_stream():
    x = random_walk(200_000, 5, start=100_000.0, step=0.002)
    updater = SmaUpdater(50)
    last = [updater.update(v) for v in x][-1]
    assert last == pytest.approx(math.fsum(x[-50:]) / 50, rel=1e-14)


# --------------------------------------------------------------------------- refusals


def test_indicators_refuse_bad_inputs():
    with pytest.raises(ValueError, match="finite"):
        sma([1.0, np.nan, 2.0], 2)
    with pytest.raises(ValueError, match="finite"):
        SmaUpdater(3).update(float("inf"))
    with pytest.raises(ValueError, match="window"):
        rsi([1.0, 2.0], 0)
    with pytest.raises(ValueError, match="shorter"):
        macd([1.0, 2.0], 26, 12)
    with pytest.raises(ValueError, match="k must"):
        BollingerUpdater(20, -1.0)
    with pytest.raises(ValueError, match="exactly one"):
        EmaUpdater()
    assert EmaUpdater(alpha=0.5).update(3.0) == 3.0
