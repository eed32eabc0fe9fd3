"""Technical indicators of plan 004 (``calculateTechnicalIndicators``: sma, ema, rsi, macd,
bollinger), each as a vectorized function over a price series and as a small streaming updater
(``update(x) -> value``) that gives the same numbers, for the graph.

Conventions (those of pandas, so a notebook can check them in one line):

- ``sma(x, window)``: the mean of the last ``window`` values, NaN until there are ``window``
  (``Series.rolling(window).mean()``).
- ``ema(x, span)``: ``alpha = 2 / (span + 1)``, ``y_0 = x_0``, ``y_t = alpha x_t + (1 - alpha)
  y_{t-1}`` (``Series.ewm(span=span, adjust=False).mean()``): defined from the first value, so the
  first ``~span`` values are a warm-up.
- ``rsi(x, window=14)``: Wilder's RSI. The average gain and loss of the first ``window`` changes
  are their simple means; after that Wilder's smoothing ``avg_t = avg_{t-1} + (g_t - avg_{t-1}) /
  window`` (an EMA with ``alpha = 1 / window``). ``RSI = 100 - 100 / (1 + avg_gain / avg_loss)``:
  100 when there was no loss, 50 when the price did not move at all; NaN for the first ``window``
  values (``window`` changes are needed).
- ``macd(x, 12, 26, 9)``: ``ema(x, 12) - ema(x, 26)``, its signal line ``ema(macd, 9)`` and the
  histogram ``macd - signal``.
- ``bollinger(x, 20, 2.0)``: the SMA and the SMA plus/minus ``k`` population stdevs (``ddof=0``,
  as Bollinger defines them) of the last ``window`` values.

Inputs are prices (any unit, e.g. ``close_usd``); the outputs are in the same unit, except the RSI
(0..100). Non-finite inputs are refused (``ValueError``): an indicator silently carrying a NaN
forward would be wrong for ``window`` values after it.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal


def _series(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or not np.all(np.isfinite(a)):
        raise ValueError("indicators need a one-dimensional array of finite numbers")
    return a


def _window(name: str, value: int) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _finite(x: float) -> float:
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"indicators need finite inputs, got {x!r}")
    return x


# --------------------------------------------------------------------------- vectorized


def sma(x, window: int) -> np.ndarray:
    """Simple moving average of the last ``window`` values (NaN for the first ``window - 1``)."""
    a, w = _series(x), _window("window", window)
    out = np.full(len(a), np.nan)
    if len(a) >= w:
        out[w - 1:] = sliding_window_view(a, w).mean(axis=1)
    return out


def ema_alpha(span: float) -> float:
    """The smoothing factor of an EMA over ``span`` periods: ``2 / (span + 1)``."""
    if not span >= 1.0:
        raise ValueError(f"span must be >= 1, got {span!r}")
    return 2.0 / (span + 1.0)


def _ema_alpha(a: np.ndarray, alpha: float) -> np.ndarray:
    if not len(a):
        return np.empty(0)
    return signal.lfilter([alpha], [1.0, alpha - 1.0], a, zi=[(1.0 - alpha) * a[0]])[0]


def ema(x, span: float) -> np.ndarray:
    """Exponential moving average, ``alpha = 2 / (span + 1)``, seeded with the first value."""
    return _ema_alpha(_series(x), ema_alpha(span))


def _rsi_from(avg_gain, avg_loss):
    with np.errstate(divide="ignore", invalid="ignore"):
        value = 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    value = np.where(avg_loss == 0.0, np.where(avg_gain == 0.0, 50.0, 100.0), value)
    return value


def rsi(x, window: int = 14) -> np.ndarray:
    """Wilder's RSI (0..100), NaN for the first ``window`` values (see the module docstring)."""
    a, w = _series(x), _window("window", window)
    out = np.full(len(a), np.nan)
    if len(a) <= w:
        return out
    d = np.diff(a)
    gain, loss = np.maximum(d, 0.0), np.maximum(-d, 0.0)
    alpha = 1.0 / w

    def wilder(v: np.ndarray) -> np.ndarray:
        seed = np.mean(v[:w])
        rest = signal.lfilter([alpha], [1.0, alpha - 1.0], v[w:], zi=[(1.0 - alpha) * seed])[0]
        return np.concatenate(([seed], rest))

    out[w:] = _rsi_from(wilder(gain), wilder(loss))
    return out


class Macd(NamedTuple):
    """MACD line, signal line and histogram (arrays from ``macd``, floats from ``MacdUpdater``)."""

    macd: np.ndarray | float
    signal: np.ndarray | float
    histogram: np.ndarray | float


def _check_macd(fast: int, slow: int, signal_span: int) -> None:
    for name, value in (("fast", fast), ("slow", slow), ("signal", signal_span)):
        _window(name, value)
    if not fast < slow:
        raise ValueError(f"fast ({fast}) must be shorter than slow ({slow})")


def macd(x, fast: int = 12, slow: int = 26, signal: int = 9) -> Macd:
    """MACD (Appel): ``ema(x, fast) - ema(x, slow)``, the signal ``ema(macd, signal)``, and the
    histogram; all EMAs seeded with their first value (pandas ``adjust=False``)."""
    _check_macd(fast, slow, signal)
    a = _series(x)
    line = ema(a, fast) - ema(a, slow)
    sig = _ema_alpha(line, ema_alpha(signal))
    return Macd(line, sig, line - sig)


class BollingerBands(NamedTuple):
    """Bollinger bands: the SMA and the SMA plus/minus ``k`` population stdevs."""

    middle: np.ndarray | float
    upper: np.ndarray | float
    lower: np.ndarray | float


def _check_k(k: float) -> float:
    if not (k >= 0.0 and math.isfinite(k)):
        raise ValueError(f"k must be a finite number >= 0, got {k!r}")
    return float(k)


def bollinger(x, window: int = 20, k: float = 2.0) -> BollingerBands:
    """Bollinger bands over the last ``window`` values (NaN for the first ``window - 1``)."""
    a, w, k = _series(x), _window("window", window), _check_k(k)
    middle = np.full(len(a), np.nan)
    sd = np.full(len(a), np.nan)
    if len(a) >= w:
        view = sliding_window_view(a, w)
        middle[w - 1:] = view.mean(axis=1)
        sd[w - 1:] = view.std(axis=1)
    return BollingerBands(middle, middle + k * sd, middle - k * sd)


# --------------------------------------------------------------------------- streaming


class SmaUpdater:
    """Streaming ``sma``: O(1) per value (a running sum, recomputed exactly once per window so
    that adding and subtracting cannot drift)."""

    def __init__(self, window: int) -> None:
        self.window = _window("window", window)
        self._values: deque[float] = deque()
        self._sum = 0.0
        self._since_recompute = 0

    def update(self, x: float) -> float:
        x = _finite(x)
        if len(self._values) == self.window:
            self._sum -= self._values.popleft()
        self._values.append(x)
        self._sum += x
        self._since_recompute += 1
        if self._since_recompute >= self.window:
            self._sum = math.fsum(self._values)
            self._since_recompute = 0
        return self._sum / self.window if len(self._values) == self.window else math.nan


class EmaUpdater:
    """Streaming ``ema`` (``alpha = 2 / (span + 1)``, seeded with the first value); pass
    ``alpha`` instead of ``span`` for another smoothing."""

    def __init__(self, span: float | None = None, *, alpha: float | None = None) -> None:
        if (span is None) == (alpha is None):
            raise ValueError("give exactly one of span and alpha")
        self.alpha = ema_alpha(span) if alpha is None else float(alpha)
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        self.value = math.nan

    def update(self, x: float) -> float:
        x = _finite(x)
        self.value = x if math.isnan(self.value) else self.alpha * x + (1.0 - self.alpha) * self.value
        return self.value


class RsiUpdater:
    """Streaming Wilder ``rsi``: NaN until ``window`` changes have been seen."""

    def __init__(self, window: int = 14) -> None:
        self.window = _window("window", window)
        self._prev = math.nan
        self._n = 0  # changes seen
        self._gain = 0.0  # the sums of the first ``window`` changes, then Wilder's averages
        self._loss = 0.0

    def update(self, x: float) -> float:
        x = _finite(x)
        prev, self._prev = self._prev, x
        if math.isnan(prev):
            return math.nan
        d = x - prev
        gain, loss = max(d, 0.0), max(-d, 0.0)
        self._n += 1
        w = self.window
        if self._n < w:
            self._gain += gain
            self._loss += loss
            return math.nan
        if self._n == w:
            self._gain = (self._gain + gain) / w
            self._loss = (self._loss + loss) / w
        else:
            alpha = 1.0 / w
            self._gain = alpha * gain + (1.0 - alpha) * self._gain
            self._loss = alpha * loss + (1.0 - alpha) * self._loss
        if self._loss == 0.0:
            return 50.0 if self._gain == 0.0 else 100.0
        return 100.0 - 100.0 / (1.0 + self._gain / self._loss)


class MacdUpdater:
    """Streaming ``macd``: ``update(x)`` returns a ``Macd`` of floats."""

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        _check_macd(fast, slow, signal)
        self._fast, self._slow, self._signal = EmaUpdater(fast), EmaUpdater(slow), EmaUpdater(signal)

    def update(self, x: float) -> Macd:
        line = self._fast.update(x) - self._slow.update(x)
        sig = self._signal.update(line)
        return Macd(line, sig, line - sig)


class BollingerUpdater:
    """Streaming ``bollinger``: ``update(x)`` returns ``BollingerBands`` of floats (NaN until
    ``window`` values). O(window) per value, computed two-pass from the window itself, so a long
    stream of prices near 100,000 keeps a small stdev exact (running sums of squares would not)."""

    def __init__(self, window: int = 20, k: float = 2.0) -> None:
        self.window = _window("window", window)
        self.k = _check_k(k)
        self._values: deque[float] = deque(maxlen=self.window)

    def update(self, x: float) -> BollingerBands:
        self._values.append(_finite(x))
        if len(self._values) < self.window:
            return BollingerBands(math.nan, math.nan, math.nan)
        middle = math.fsum(self._values) / self.window
        sd = math.sqrt(math.fsum((v - middle) ** 2 for v in self._values) / self.window)
        return BollingerBands(middle, middle + self.k * sd, middle - self.k * sd)
