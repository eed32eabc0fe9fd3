"""Volatility: realized estimators on OHLC bars, EWMA, GARCH(1,1) with Student-t errors, HAR-RV,
anomaly scores, and the streaming realized volatility the graph publishes (issue 6; plans 001, 002).

Conventions. Returns are log returns (fractions: 0.01 is one percent). A variance or a stdev
"per bar" is in the units of one bar's return; ``*_vol_annual`` is an annualized fraction (0.55,
not 55), ``vol_per_bar * sqrt(bars_per_year)``, with a 365-day year (crypto trades every day).

Contents:

- Realized estimators on OHLC bars, each over the whole sample or over a rolling ``window`` of
  bars: close-to-close, Parkinson (1980), Garman-Klass (1980), Rogers-Satchell (1991),
  Yang-Zhang (2000). ``ohlc_bars`` and ``realized_variance`` aggregate finer bars or ticks.
- ``ewma_variance``: RiskMetrics (lambda = 0.94), bias-corrected (``adjust=True``) or the classic
  recursion seeded with the first squared return (``adjust=False``); ``ewma_forecast_variance``
  is its one-step-ahead forecast.
- ``fit_garch_t``: GARCH(1,1) with standardized Student-t errors by maximum likelihood (SLSQP,
  ``omega > 0``, ``alpha, beta >= 0``, ``alpha + beta < 1``, ``nu > 2``), with the same backcast
  and likelihood as the ``arch`` package so that the two agree; ``garch_forecast_variance``.
- ``fit_har`` / ``har_forecast`` / ``har_scores``: HAR-RV (Corsi 2009), the AR volatility filter of
  plan 002: tomorrow's realized variance regressed on the daily, weekly (5) and monthly (22)
  averages of past realized variance. It is an AR(22) with the lag coefficients tied in three
  blocks, fitted by OLS.
- Anomaly scores: ``return_zscores`` (a return against the forecast stdev made before it) and the
  volatility ratio realized/forecast (``har_scores``).
- Streaming, for the graph (``dataflows.analytics.VolatilityNode``): ``RollingVolatility`` turns
  prices into bars and publishes, at each closed bar, the realized volatility of the trailing
  window (24 h by default) and its EWMA; ``AnomalyDetector`` flags the bars whose return, or whose
  recent volatility, the filter's forecast did not allow. ``rolling_volatility`` computes the same
  numbers vectorized (backtests, and the check of the streaming code).

The 24 h volatility and plan 001's hedge ratio. Plan 001 sets the hedge ratio from the 24 h
volatility as a daily fraction: below 2 % a ratio of 0.20, below 4 % 0.40, else 0.60. The
``vol_annual`` published here is annualized over 365 days, so the daily fraction is
``vol_annual / sqrt(365)``: the 2 % and 4 % thresholds are 0.382 and 0.764 annualized
(``0.02 * sqrt(365)``, ``0.04 * sqrt(365)``). The hedge engine (a later issue) makes that mapping;
it must read only estimates with ``ready`` set.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import NamedTuple

import numpy as np
from scipy import optimize, signal
from scipy.linalg import solve_triangular
from scipy.special import gammaln, ndtr, stdtrit

SECONDS_PER_DAY = 86_400.0
DAYS_PER_YEAR = 365.0
SECONDS_PER_YEAR = DAYS_PER_YEAR * SECONDS_PER_DAY
RISKMETRICS_LAMBDA = 0.94


def bars_per_year(bar_s: float) -> float:
    """How many bars of ``bar_s`` seconds a 365-day year holds (the annualization factor)."""
    if not bar_s > 0.0:
        raise ValueError(f"bar_s must be > 0, got {bar_s!r}")
    return SECONDS_PER_YEAR / bar_s


# --------------------------------------------------------------------------- realized estimators


def _prices(*arrays) -> list[np.ndarray]:
    out = [np.asarray(a, dtype=np.float64) for a in arrays]
    n = out[0].shape
    for a in out:
        if a.ndim != 1 or a.shape != n:
            raise ValueError("price arrays must be one-dimensional and of the same length")
        if not np.all(np.isfinite(a) & (a > 0.0)):
            raise ValueError("prices must be finite and > 0")
    return out


def _window_sum(terms: np.ndarray, window: int) -> np.ndarray:
    """Sum of each trailing ``window`` of ``terms``, aligned with ``terms`` (NaN until full)."""
    out = np.full(terms.shape, np.nan)
    if window <= len(terms):
        c = np.concatenate(([0.0], np.cumsum(terms)))
        out[window - 1:] = c[window:] - c[:-window]
    return out


def _check_window(window: int | None, minimum: int) -> None:
    if window is not None and (int(window) != window or window < minimum):
        raise ValueError(f"window must be an integer >= {minimum}, got {window!r}")


def _mean_terms(terms: np.ndarray, window: int | None, per_year: float):
    """Annualized vol from per-bar variance terms: their mean over the sample (a float) or over
    each trailing window (an array aligned with the terms)."""
    if window is None:
        if len(terms) == 0:
            return math.nan
        return float(math.sqrt(max(float(np.mean(terms)), 0.0) * per_year))
    return np.sqrt(np.maximum(_window_sum(terms, int(window)) / window, 0.0) * per_year)


def _sample_variance(x: np.ndarray, window: int | None):
    """Sample variance (ddof=1) of ``x`` over the sample, or over each trailing window."""
    if window is None:
        return float(np.var(x, ddof=1)) if len(x) > 1 else math.nan
    centred = x - (np.mean(x) if len(x) else 0.0)  # less cancellation in the sums of squares
    s1 = _window_sum(centred, window)
    s2 = _window_sum(centred * centred, window)
    return np.maximum(s2 - s1 * s1 / window, 0.0) / (window - 1)


def _pad_front(values, n: int):
    """Estimates over bars 1..n-1 (they need the previous close), realigned on bars 0..n-1."""
    if np.ndim(values) == 0:
        return values
    return np.concatenate(([np.nan], values))[:n] if n else values


def close_to_close_vol(close_usd, bars_per_year: float, *, window: int | None = None,
                       demean: bool = True):
    """Close-to-close volatility, annualized: the sample stdev (``ddof=1``) of the log returns
    ``ln(C_t / C_{t-1})`` times ``sqrt(bars_per_year)``; with ``demean=False`` the root mean square
    (the realized-volatility convention, zero drift).

    Without ``window``: one float over the whole sample (``n - 1`` returns). With ``window``
    (returns per estimate): an array aligned with ``close_usd``, the value at bar ``t`` from the
    returns of bars ``t - window + 1 .. t``, NaN before.
    """
    (close,) = _prices(close_usd)
    _check_window(window, 2 if demean else 1)
    r = np.diff(np.log(close))
    if demean:
        var = _sample_variance(r, window)
        vol = np.sqrt(np.asarray(var) * bars_per_year)
        return _pad_front(vol, len(close)) if window is not None else float(vol)
    return _pad_front(_mean_terms(r * r, window, bars_per_year), len(close))


def parkinson_vol(high_usd, low_usd, bars_per_year: float, *, window: int | None = None):
    """Parkinson (1980) high-low volatility, annualized: ``sigma^2 = mean(ln(H/L)^2) / (4 ln 2)``
    per bar. Unbiased for a driftless Brownian motion observed continuously; biased low when the
    true high and low fall between observations. ``window`` as in ``close_to_close_vol`` (bars)."""
    high, low = _prices(high_usd, low_usd)
    _check_window(window, 1)
    hl = np.log(high / low)
    return _mean_terms(hl * hl / (4.0 * math.log(2.0)), window, bars_per_year)


def garman_klass_vol(open_usd, high_usd, low_usd, close_usd, bars_per_year: float, *,
                     window: int | None = None):
    """Garman-Klass (1980) volatility, annualized: per bar
    ``0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2``, averaged. Assumes zero drift and no opening jump."""
    o, h, lo, c = _prices(open_usd, high_usd, low_usd, close_usd)
    _check_window(window, 1)
    hl, co = np.log(h / lo), np.log(c / o)
    return _mean_terms(0.5 * hl * hl - (2.0 * math.log(2.0) - 1.0) * co * co, window, bars_per_year)


def _rogers_satchell_terms(o, h, lo, c) -> np.ndarray:
    return np.log(h / c) * np.log(h / o) + np.log(lo / c) * np.log(lo / o)


def rogers_satchell_vol(open_usd, high_usd, low_usd, close_usd, bars_per_year: float, *,
                        window: int | None = None):
    """Rogers-Satchell (1991) volatility, annualized: per bar
    ``ln(H/C) ln(H/O) + ln(L/C) ln(L/O)``, averaged. Unbiased whatever the drift."""
    o, h, lo, c = _prices(open_usd, high_usd, low_usd, close_usd)
    _check_window(window, 1)
    return _mean_terms(_rogers_satchell_terms(o, h, lo, c), window, bars_per_year)


def yang_zhang_vol(open_usd, high_usd, low_usd, close_usd, bars_per_year: float, *,
                   window: int | None = None):
    """Yang-Zhang (2000) volatility, annualized:
    ``sigma^2 = sigma_o^2 + k sigma_c^2 + (1 - k) sigma_rs^2`` with ``sigma_o^2`` the sample
    variance of the opening returns ``ln(O_t / C_{t-1})``, ``sigma_c^2`` that of the open-to-close
    returns ``ln(C_t / O_t)``, ``sigma_rs^2`` the Rogers-Satchell mean and
    ``k = 0.34 / (1.34 + (n + 1) / (n - 1))``, over the ``n`` bars that have a previous close
    (bars 1..N-1). ``window`` (bars per estimate, >= 2) as in ``close_to_close_vol``.

    On a market that never closes (crypto), the opening return of a bar is the gap between the
    previous bar's last trade and this bar's first: small, and ``sigma_o^2`` is nearly zero.
    """
    o, h, lo, c = _prices(open_usd, high_usd, low_usd, close_usd)
    _check_window(window, 2)
    r_open = np.log(o[1:] / c[:-1])
    r_oc = np.log(c[1:] / o[1:])
    rs = _rogers_satchell_terms(o[1:], h[1:], lo[1:], c[1:])
    n = len(r_open) if window is None else int(window)
    if n < 2:
        return math.nan if window is None else np.full(len(o), np.nan)
    k = 0.34 / (1.34 + (n + 1.0) / (n - 1.0))
    rs_mean = np.mean(rs) if window is None else _window_sum(rs, n) / n
    var = _sample_variance(r_open, window) + k * _sample_variance(r_oc, window) + (1.0 - k) * rs_mean
    vol = np.sqrt(np.maximum(var, 0.0) * bars_per_year)
    return float(vol) if window is None else _pad_front(vol, len(o))


class OhlcBars(NamedTuple):
    """Bars on a grid of ``bar_s`` seconds (``bar_start_s`` = a multiple of ``bar_s``, epoch s);
    only bars that saw data are present. ``n`` counts the input rows in each bar."""

    bar_start_s: np.ndarray
    open_usd: np.ndarray
    high_usd: np.ndarray
    low_usd: np.ndarray
    close_usd: np.ndarray
    n: np.ndarray


def ohlc_bars(ts_s, bar_s: float, open_usd, high_usd=None, low_usd=None, close_usd=None) -> OhlcBars:
    """Aggregate rows in time order (ticks: pass the price as ``open_usd`` only; finer bars: all
    four) into bars of ``bar_s`` seconds aligned on the epoch: first open, highest high, lowest
    low, last close. A row at ``ts_s`` belongs to the bar ``floor(ts_s / bar_s)``, so a 1-minute
    bar stamped with its open time lands in the hour it opened in."""
    ts = np.asarray(ts_s, dtype=np.float64)
    o = np.asarray(open_usd, dtype=np.float64)
    h = o if high_usd is None else np.asarray(high_usd, dtype=np.float64)
    lo = o if low_usd is None else np.asarray(low_usd, dtype=np.float64)
    c = o if close_usd is None else np.asarray(close_usd, dtype=np.float64)
    if not (ts.shape == o.shape == h.shape == lo.shape == c.shape) or ts.ndim != 1:
        raise ValueError("ts_s and the prices must be one-dimensional and of the same length")
    if len(ts) and np.any(np.diff(ts) < 0.0):
        raise ValueError("ts_s must be in time order")
    if not bar_s > 0.0:
        raise ValueError(f"bar_s must be > 0, got {bar_s!r}")
    index = np.floor(ts / bar_s)
    if not len(ts):
        empty = np.empty(0)
        return OhlcBars(empty, empty, empty, empty, empty, np.empty(0, dtype=np.int64))
    starts = np.flatnonzero(np.concatenate(([True], index[1:] != index[:-1])))
    ends = np.concatenate((starts[1:], [len(ts)])) - 1
    return OhlcBars(index[starts] * bar_s, o[starts], np.maximum.reduceat(h, starts),
                    np.minimum.reduceat(lo, starts), c[ends], np.diff(np.append(starts, len(ts))))


class RealizedVariance(NamedTuple):
    """Realized variance per period: the sum of the squared log returns whose later price falls in
    the period (``period_start_s``, epoch s, a multiple of ``period_s``), and how many there are."""

    period_start_s: np.ndarray
    variance: np.ndarray
    n_returns: np.ndarray


def realized_variance(ts_s, price_usd, period_s: float) -> RealizedVariance:
    """Realized variance per period of ``period_s`` seconds from prices in time order (e.g. the
    closes of 1-minute bars, ``period_s = 86_400`` for daily RV). Periods with no return are
    absent; the return across a gap counts in the period of its later price."""
    ts = np.asarray(ts_s, dtype=np.float64)
    (price,) = _prices(price_usd)
    if ts.shape != price.shape:
        raise ValueError("ts_s and price_usd must be of the same length")
    if len(ts) < 2:
        empty = np.empty(0)
        return RealizedVariance(empty, empty, np.empty(0, dtype=np.int64))
    r = np.diff(np.log(price))
    bars = ohlc_bars(ts[1:], period_s, r * r)
    sums = np.add.reduceat(r * r, np.concatenate(([0], np.cumsum(bars.n)[:-1])))
    return RealizedVariance(bars.bar_start_s, sums, bars.n)


# --------------------------------------------------------------------------- EWMA


def _returns(returns) -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1 or not np.all(np.isfinite(r)):
        raise ValueError("returns must be a one-dimensional array of finite numbers")
    return r


def _check_lambda(lam: float) -> None:
    if not 0.0 < lam < 1.0:
        raise ValueError(f"the EWMA lambda must be in (0, 1), got {lam!r}")


def ewma_variance(returns, lam: float = RISKMETRICS_LAMBDA, *, adjust: bool = True) -> np.ndarray:
    """EWMA (RiskMetrics) variance of zero-mean ``returns`` after each return, per bar.

    ``adjust=True``: ``sum_i lam^i r_{t-i}^2 / sum_i lam^i`` over the returns seen so far (no seed
    to choose; pandas ``ewm(alpha=1-lam, adjust=True).mean()`` of ``r^2``). ``adjust=False``: the
    recursion ``s_t = lam s_{t-1} + (1 - lam) r_t^2`` with ``s_0 = r_0^2`` (pandas ``adjust=False``).
    The two agree once ``lam^t`` is negligible.
    """
    r = _returns(returns)
    _check_lambda(lam)
    if not len(r):
        return np.empty(0)
    r2 = r * r
    if adjust:
        num = signal.lfilter([1.0], [1.0, -lam], r2)
        den = -np.expm1(np.log(lam) * np.arange(1, len(r) + 1)) / (1.0 - lam)
        return num / den
    return signal.lfilter([1.0 - lam], [1.0, -lam], r2, zi=[lam * r2[0]])[0]


def ewma_forecast_variance(returns, lam: float = RISKMETRICS_LAMBDA, *, adjust: bool = True) -> np.ndarray:
    """One-step-ahead EWMA forecast: element ``t`` is the variance made from returns ``0..t-1``,
    the forecast for return ``t`` (NaN at ``t = 0``)."""
    v = ewma_variance(returns, lam, adjust=adjust)
    return np.concatenate(([np.nan], v[:-1])) if len(v) else v


# --------------------------------------------------------------------------- GARCH(1,1)-t


def garch_backcast(resid) -> float:
    """The variance that starts the GARCH recursion, as ``arch`` computes it: the EWMA (0.94)
    weighted mean of the first (at most 75) squared residuals, heaviest on the first."""
    e = np.asarray(resid, dtype=np.float64)
    tau = min(75, len(e))
    w = RISKMETRICS_LAMBDA ** np.arange(tau)
    return float(np.sum(e[:tau] ** 2 * w) / np.sum(w))


def garch_variance(resid, omega: float, alpha: float, beta: float, backcast: float) -> np.ndarray:
    """GARCH(1,1) conditional variances ``s_t = omega + alpha e_{t-1}^2 + beta s_{t-1}``, with
    ``e_{-1}^2 = s_{-1} = backcast``; element ``t`` is the variance of ``e_t`` given ``e_{<t}``."""
    e = np.asarray(resid, dtype=np.float64)
    if not len(e):
        return np.empty(0)
    drive = np.empty(len(e))
    drive[0] = omega + alpha * backcast
    drive[1:] = omega + alpha * e[:-1] ** 2
    return signal.lfilter([1.0], [1.0, -beta], drive, zi=[beta * backcast])[0]


def student_t_loglik(resid: np.ndarray, variance: np.ndarray, nu: float) -> float:
    """Log-likelihood of ``resid`` under Student-t errors scaled to variance ``variance``
    (standardized t: unit variance for ``nu > 2``)."""
    const = gammaln(0.5 * (nu + 1.0)) - gammaln(0.5 * nu) - 0.5 * math.log(math.pi * (nu - 2.0))
    return float(len(resid) * const - 0.5 * np.sum(np.log(variance))
                 - 0.5 * (nu + 1.0) * np.sum(np.log1p(resid * resid / (variance * (nu - 2.0)))))


@dataclass(frozen=True, eq=False)
class GarchTFit:
    """A GARCH(1,1) with standardized Student-t errors fitted to ``returns`` (``fit_garch_t``).

    ``returns_t = mu + e_t``, ``e_t = sqrt(s_t) z_t``, ``z_t ~ t(nu)`` scaled to unit variance,
    ``s_t = omega + alpha e_{t-1}^2 + beta s_{t-1}``. ``mu`` and ``sqrt(omega)`` are in the units of
    the returns (0 for ``mean="zero"``); ``variance`` holds the conditional variances of the sample
    (per bar), ``resid`` the residuals ``e``; ``loglik`` is the maximized log-likelihood.
    """

    mean: str
    mu: float
    omega: float
    alpha: float
    beta: float
    nu: float
    loglik: float
    n: int
    backcast: float
    converged: bool
    message: str
    variance: np.ndarray = field(repr=False)
    resid: np.ndarray = field(repr=False)

    @property
    def persistence(self) -> float:
        """``alpha + beta``: how slowly a variance shock decays (per bar)."""
        return self.alpha + self.beta

    @property
    def long_run_variance(self) -> float:
        """``omega / (1 - alpha - beta)``, per bar: where forecasts converge."""
        return self.omega / (1.0 - self.persistence)

    @property
    def half_life_bars(self) -> float:
        """Bars for a variance shock to halve: ``ln 0.5 / ln(alpha + beta)``."""
        return math.log(0.5) / math.log(self.persistence) if 0.0 < self.persistence < 1.0 else math.nan


_MEANS = ("zero", "constant")


def _garch_negloglik(theta: np.ndarray, y: np.ndarray, constant: bool, backcast: float) -> float:
    if constant:
        mu, omega, alpha, beta, nu = theta
    else:
        (omega, alpha, beta, nu), mu = theta, 0.0
    e = y - mu
    var = garch_variance(e, omega, alpha, beta, backcast)
    if not np.all(var > 0.0):
        return 1e12
    ll = student_t_loglik(e, var, nu)
    return -ll if math.isfinite(ll) else 1e12


def fit_garch_t(returns, *, mean: str = "zero", max_iter: int = 500) -> GarchTFit:
    """Fit a GARCH(1,1)-t by maximum likelihood, as ``arch.arch_model(returns, mean=..., vol='GARCH',
    p=1, q=1, dist='t')`` does: same backcast (``garch_backcast`` of the starting residuals, kept
    fixed), same likelihood, SLSQP under ``omega > 0``, ``0 <= alpha, beta``, ``alpha + beta < 1``,
    ``2.05 <= nu <= 500``. ``mean`` is ``"zero"`` or ``"constant"`` (``mu`` estimated jointly).

    ``returns`` may be in any unit (fractions or percent): the fit runs on the returns scaled to
    unit variance and maps ``mu``, ``omega`` and the log-likelihood back. Starting values: the best
    of a small grid of persistences, alphas and ``nu``. Raises ``ValueError`` on fewer than 20
    returns or constant returns.
    """
    y = _returns(returns)
    if mean not in _MEANS:
        raise ValueError(f"mean must be one of {_MEANS}, got {mean!r}")
    if len(y) < 20:
        raise ValueError(f"a GARCH fit needs at least 20 returns, got {len(y)}")
    constant = mean == "constant"
    centre = float(np.mean(y)) if constant else 0.0
    scale = float(np.sqrt(np.mean((y - centre) ** 2)))
    if not scale > 0.0:
        raise ValueError("the returns are constant: no variance to model")
    ys = y / scale
    backcast = garch_backcast(ys - centre / scale)

    starts = []
    for persistence in (0.80, 0.95, 0.99):
        for alpha in (0.03, 0.08, 0.15):
            for nu in (5.0, 10.0):
                theta = [1.0 - persistence, alpha, persistence - alpha, nu]
                starts.append(([centre / scale] if constant else []) + theta)
    losses = [_garch_negloglik(np.asarray(s), ys, constant, backcast) for s in starts]
    theta0 = np.asarray(starts[int(np.argmin(losses))])

    bounds = ([(-10.0, 10.0)] if constant else []) + [(1e-10, 10.0), (0.0, 1.0), (0.0, 1.0), (2.05, 500.0)]
    k = 1 if constant else 0
    # alpha + beta <= 1 - 1e-6: strictly stationary, so forecasts have a long-run level.
    stationarity = {"type": "ineq", "fun": lambda t: 1.0 - 1e-6 - t[k + 1] - t[k + 2],
                    "jac": lambda t: np.array([0.0] * (k + 1) + [-1.0, -1.0, 0.0])}
    result = optimize.minimize(_garch_negloglik, theta0, args=(ys, constant, backcast), method="SLSQP",
                               bounds=bounds, constraints=[stationarity],
                               options={"maxiter": max_iter, "ftol": 1e-10})
    theta = np.clip(result.x, [b[0] for b in bounds], [b[1] for b in bounds])
    mu_s, omega_s, alpha, beta, nu = theta if constant else (0.0, *theta)
    resid = y - mu_s * scale
    variance = garch_variance(resid, omega_s * scale**2, alpha, beta, backcast * scale**2)
    loglik = student_t_loglik(resid, variance, nu)
    return GarchTFit(mean=mean, mu=float(mu_s * scale), omega=float(omega_s * scale**2),
                     alpha=float(alpha), beta=float(beta), nu=float(nu), loglik=loglik, n=len(y),
                     backcast=backcast * scale**2, converged=bool(result.success),
                     message=str(result.message), variance=variance, resid=resid)


def garch_forecast_variance(fit: GarchTFit, horizon: int) -> np.ndarray:
    """Conditional variances of the next ``horizon`` returns after the sample (per bar):
    ``s_{T+1} = omega + alpha e_T^2 + beta s_T``, then
    ``s_{T+h} = vbar + (alpha + beta)^(h-1) (s_{T+1} - vbar)`` with ``vbar`` the long-run variance.
    The variance of the sum of the next ``h`` returns is the cumulative sum."""
    if int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    next_var = fit.omega + fit.alpha * fit.resid[-1] ** 2 + fit.beta * fit.variance[-1]
    vbar = fit.long_run_variance
    return vbar + fit.persistence ** np.arange(int(horizon)) * (next_var - vbar)


# --------------------------------------------------------------------------- HAR-RV


_TRANSFORMS = ("variance", "vol", "log")


def _to_model(rv: np.ndarray, transform: str) -> np.ndarray:
    if transform == "variance":
        return rv
    if transform == "vol":
        return np.sqrt(rv)
    return np.log(rv)


def _check_rv(rv, transform: str) -> np.ndarray:
    x = np.asarray(rv, dtype=np.float64)
    if transform not in _TRANSFORMS:
        raise ValueError(f"transform must be one of {_TRANSFORMS}, got {transform!r}")
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise ValueError("realized variances must be a one-dimensional array of finite numbers")
    if np.any(x < 0.0) or (transform == "log" and np.any(x <= 0.0)):
        raise ValueError("realized variances must be >= 0 (> 0 for the log transform)")
    return x


def _check_lags(lags) -> tuple[int, ...]:
    lags = tuple(int(lag) for lag in lags)
    if not lags or lags[0] < 1 or any(b <= a for a, b in zip(lags, lags[1:])):
        raise ValueError(f"lags must be increasing integers >= 1, got {lags!r}")
    return lags


def har_design(x, lags=(1, 5, 22)) -> np.ndarray:
    """HAR regressors at each ``t >= max(lags) - 1``: ``[1, mean(x[t-l+1..t]) for l in lags]``
    (row ``i`` is ``t = max(lags) - 1 + i``)."""
    x = np.asarray(x, dtype=np.float64)
    lags = _check_lags(lags)
    first = lags[-1] - 1
    columns = [np.ones(max(len(x) - first, 0))]
    for lag in lags:
        columns.append((_window_sum(x, lag) / lag)[first:])
    return np.column_stack(columns)


@dataclass(frozen=True)
class HarFit:
    """A HAR model of realized variance: in the ``transform`` space (``x = rv``, ``sqrt(rv)`` or
    ``ln(rv)``), ``mean(x[t+1..t+horizon]) = coef[0] + sum_j coef[j] * mean(x[t-lag_j+1..t]) + u``.
    ``resid_sd`` is the stdev of ``u`` (ddof = number of coefficients), ``r2`` the R squared."""

    coef: tuple[float, ...]
    lags: tuple[int, ...]
    transform: str
    horizon: int
    resid_sd: float
    r2: float
    n_obs: int

    @property
    def persistence(self) -> float:
        """Sum of the slope coefficients: below 1 for a stationary model."""
        return float(sum(self.coef[1:]))


def fit_har(rv, *, lags=(1, 5, 22), transform: str = "variance", horizon: int = 1) -> HarFit:
    """OLS fit of HAR-RV (Corsi 2009) on a series of realized variances ``rv`` (one per period,
    oldest first; ``realized_variance`` makes them). ``lags=(1, 5, 22)`` are the daily, weekly and
    monthly averages on daily RV; ``horizon > 1`` fits the direct regression on the average of the
    next ``horizon`` periods. The regressors are averages of the transformed series, so iterated
    forecasts stay linear in that space. Solved by QR (no normal equations)."""
    lags = _check_lags(lags)
    x = _to_model(_check_rv(rv, transform), transform)
    if int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    X = har_design(x, lags)[: max(len(x) - lags[-1] + 1 - horizon, 0)]
    n, k = X.shape
    if n < k + 2:
        raise ValueError(f"a HAR fit with lags {lags} needs at least {lags[-1] + horizon + k + 1} "
                         f"periods, got {len(x)}")
    future = _window_sum(x, horizon) / horizon
    y = future[lags[-1] - 1 + horizon: lags[-1] - 1 + horizon + n]
    q, r = np.linalg.qr(X)
    coef = solve_triangular(r, q.T @ y)
    resid = y - X @ coef
    tss = float(np.sum((y - y.mean()) ** 2))
    return HarFit(coef=tuple(float(c) for c in coef), lags=lags, transform=transform,
                  horizon=int(horizon), resid_sd=float(np.sqrt(resid @ resid / (n - k))),
                  r2=1.0 - float(resid @ resid) / tss if tss > 0.0 else math.nan, n_obs=n)


def _from_model(x, fit: HarFit):
    if fit.transform == "variance":
        return x
    if fit.transform == "vol":
        return np.square(x) + fit.resid_sd**2  # E[v^2] = E[v]^2 + Var(v)
    return np.exp(x + 0.5 * fit.resid_sd**2)  # lognormal mean


def har_forecast(fit: HarFit, rv_history, steps: int) -> np.ndarray:
    """Forecasts of the realized variance of the next ``steps`` periods after ``rv_history``
    (at least ``max(lags)`` periods), iterating the one-step model in the transform space (each
    forecast becomes history for the next), mapped back to variance: exact for
    ``transform="variance"``; for ``"vol"`` and ``"log"`` the back-transform adds the one-step
    residual variance (a lognormal / second-moment correction that understates it beyond one step).
    For a model fitted with ``horizon > 1`` only ``steps=1`` is meaningful (the average of the next
    ``horizon`` periods) and is returned."""
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    x = list(_to_model(_check_rv(rv_history, fit.transform), fit.transform)[-fit.lags[-1]:])
    if len(x) < fit.lags[-1]:
        raise ValueError(f"the forecast needs {fit.lags[-1]} periods of history, got {len(x)}")
    if fit.horizon > 1 and steps > 1:
        raise ValueError("a model fitted for a multi-period horizon forecasts one step (its horizon)")
    out = []
    for _ in range(int(steps)):
        features = [sum(x[-lag:]) / lag for lag in fit.lags]
        value = fit.coef[0] + sum(c * f for c, f in zip(fit.coef[1:], features))
        out.append(value)
        x.append(value)
    return np.asarray(_from_model(np.asarray(out), fit), dtype=np.float64)


class HarScores(NamedTuple):
    """In-sample one-step forecasts and how each period's realized variance compares with the
    forecast made before it (aligned with ``rv``; NaN where no forecast exists)."""

    forecast_variance: np.ndarray
    vol_ratio: np.ndarray  # sqrt(realized / forecast): realized vol over forecast vol
    z: np.ndarray  # (model(rv) - model forecast) / resid_sd: a surprise in stdevs of the filter


def har_scores(fit: HarFit, rv) -> HarScores:
    """Volatility anomaly scores of a one-step HAR filter over ``rv``: for each period ``t`` with
    ``max(lags)`` periods before it, the forecast made at ``t - 1``, the ratio realized/forecast
    volatility, and the z-score of the surprise in the model's space. A period whose ``z`` exceeds
    a threshold (e.g. 4) had a volatility the filter did not allow."""
    if fit.horizon != 1:
        raise ValueError("anomaly scores need a one-step model (horizon=1)")
    x_rv = _check_rv(rv, fit.transform)
    x = _to_model(x_rv, fit.transform)
    n, first = len(x), fit.lags[-1]
    model_forecast = np.full(n, np.nan)
    if n > first:
        model_forecast[first:] = har_design(x, fit.lags)[:-1] @ np.asarray(fit.coef)
    forecast = np.asarray(_from_model(model_forecast, fit))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.sqrt(x_rv / forecast)
        z = (x - model_forecast) / fit.resid_sd
    return HarScores(forecast, ratio, z)


def return_zscores(returns, forecast_variance) -> np.ndarray:
    """Each return in stdevs of the variance forecast for it (made before it): ``r / sqrt(f)``.
    NaN where the forecast is missing or not positive."""
    r = np.asarray(returns, dtype=np.float64)
    f = np.asarray(forecast_variance, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0.0, r / np.sqrt(np.where(f > 0.0, f, 1.0)), np.nan)


# --------------------------------------------------------------------------- streaming volatility


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class RollingVolConfig:
    """The graph's streaming realized volatility (``RollingVolatility``).

    Prices are sampled into bars of ``bar_s`` seconds aligned on the epoch; at each closed bar the
    realized volatility of the bar returns in the trailing ``window_s`` (24 h: what plan 001's
    hedge ratio reads) is published with their EWMA (``ewma_lambda``, per bar). An estimate is
    ``ready`` once the window holds ``min_coverage_s`` of bar returns. A silence (no price) longer
    than ``max_silence_s`` restarts the estimator: the bars it would fill carry no information,
    and a window of nothing but silence would read as zero volatility.
    """

    bar_s: float = 60.0
    window_s: float = 86_400.0
    min_coverage_s: float = 3_600.0
    ewma_lambda: float = RISKMETRICS_LAMBDA
    max_silence_s: float | None = None  # None: 6 h (two bars if longer), at most the window

    def __post_init__(self) -> None:
        if self.max_silence_s is None:
            # 6 h, or two bars when bars are longer; never more than the window.
            default = max(21_600.0, 2.0 * float(self.bar_s))
            object.__setattr__(self, "max_silence_s", min(default, float(self.window_s)))
        for name in ("bar_s", "window_s", "min_coverage_s", "ewma_lambda", "max_silence_s"):
            value = getattr(self, name)
            _require(isinstance(value, (int, float)) and math.isfinite(value),
                     f"{name} must be a finite number, got {value!r}")
        _require(self.bar_s > 0.0, f"bar_s must be > 0, got {self.bar_s!r}")
        _require(self.window_s >= 2.0 * self.bar_s,
                 f"window_s ({self.window_s}) must hold at least two bars of bar_s ({self.bar_s})")
        _require(abs(self.window_s / self.bar_s - round(self.window_s / self.bar_s)) < 1e-9,
                 f"window_s ({self.window_s}) must be a whole number of bars of bar_s ({self.bar_s})")
        _require(0.0 <= self.min_coverage_s <= self.window_s,
                 f"min_coverage_s must be in [0, window_s], got {self.min_coverage_s!r}")
        _require(0.0 < self.ewma_lambda < 1.0, f"ewma_lambda must be in (0, 1), got {self.ewma_lambda!r}")
        _require(self.bar_s <= self.max_silence_s <= self.window_s,
                 f"max_silence_s must be in [bar_s, window_s], got {self.max_silence_s!r}")

    @property
    def window_bars(self) -> int:
        return int(round(self.window_s / self.bar_s))

    @property
    def bars_per_year(self) -> float:
        return bars_per_year(self.bar_s)


class VolBar(NamedTuple):
    """One closed bar and the estimates after it. ``log_return`` is ``ln(close / previous close)``
    (NaN for the first bar after a start or restart); ``n_prices`` is 0 for an empty bar (a
    silence: it carries the last close). ``n_returns`` counts the bar returns in the trailing
    window, ``vol_annual`` is their root mean square annualized (zero mean; NaN without a return),
    ``ewma_vol_annual`` the bias-corrected EWMA of the squared bar returns since the (re)start,
    annualized; ``ready`` once ``n_returns * bar_s >= min_coverage_s``."""

    bar_start_s: float
    bar_end_s: float
    close_usd: float
    log_return: float
    n_prices: int
    n_returns: int
    vol_annual: float
    ewma_vol_annual: float
    ready: bool


class RollingVolatility:
    """Streaming realized volatility of one asset's prices (see ``RollingVolConfig``).

    ``update(ts_s, price_usd)`` returns the bars that the price closes: a price opens the bar
    ``floor(ts_s / bar_s)``; a bar closes when a price arrives at or after its end. After a
    silence several bars close at once (the empty ones carry the last close), unless the silence
    exceeds ``max_silence_s``: then only the open bar closes and everything restarts with the new
    price. A price older than the previous one, or not finite and > 0, is ignored (``n_ignored``).

    O(1) per update: a deque of the window's squared returns with their running sum, recomputed
    from the deque once per window to bound the drift of adding and subtracting.
    ``rolling_volatility`` computes the same bars vectorized.

    The 24 h vol as a daily fraction, for plan 001's 2 % / 4 % hedge-ratio thresholds, is
    ``vol_annual / sqrt(365)`` (see the module docstring).
    """

    def __init__(self, config: RollingVolConfig = RollingVolConfig()) -> None:
        self.config = config
        self._window = config.window_bars
        self._per_year = config.bars_per_year
        self._min_returns = config.min_coverage_s / config.bar_s
        self.n_ignored = 0
        self._last_ts = -math.inf
        self._restart()

    def _restart(self) -> None:
        self._bar: int | None = None  # the open bar's index (bar_start = index * bar_s)
        self._close = math.nan  # the open bar's last price
        self._n_prices = 0
        self._prev_close = math.nan  # the last closed bar's close
        self._squares: deque[float] = deque()
        self._sum = 0.0
        self._since_recompute = 0
        self._ewma_num = 0.0
        self._ewma_den = 0.0

    def update(self, ts_s: float, price_usd: float) -> list[VolBar]:
        ts_s, price_usd = float(ts_s), float(price_usd)
        if not (math.isfinite(ts_s) and math.isfinite(price_usd) and price_usd > 0.0) or ts_s < self._last_ts:
            self.n_ignored += 1
            return []
        silence = ts_s - self._last_ts
        self._last_ts = ts_s
        index = math.floor(ts_s / self.config.bar_s)
        if self._bar is None:
            self._open(index, price_usd)
            return []
        if index == self._bar:
            self._close = price_usd
            self._n_prices += 1
            return []
        closed = [self._close_bar(self._bar, self._close, self._n_prices)]
        if silence > self.config.max_silence_s:
            self._restart()
        else:
            for empty in range(self._bar + 1, index):
                closed.append(self._close_bar(empty, self._prev_close, 0))
        self._open(index, price_usd)
        return closed

    def _open(self, index: int, price_usd: float) -> None:
        self._bar, self._close, self._n_prices = index, price_usd, 1

    def _close_bar(self, index: int, close: float, n_prices: int) -> VolBar:
        r = math.log(close / self._prev_close) if math.isfinite(self._prev_close) else math.nan
        self._prev_close = close
        if math.isfinite(r):
            r2 = r * r
            if len(self._squares) == self._window:
                self._sum -= self._squares.popleft()
            self._squares.append(r2)
            self._sum += r2
            self._since_recompute += 1
            if self._since_recompute >= self._window:
                self._sum = math.fsum(self._squares)
                self._since_recompute = 0
            lam = self.config.ewma_lambda
            self._ewma_num = lam * self._ewma_num + r2
            self._ewma_den = lam * self._ewma_den + 1.0
        n = len(self._squares)
        vol = math.sqrt(max(self._sum, 0.0) / n * self._per_year) if n else math.nan
        ewma = math.sqrt(self._ewma_num / self._ewma_den * self._per_year) if self._ewma_den else math.nan
        bar_s = self.config.bar_s
        return VolBar(index * bar_s, (index + 1) * bar_s, close, r, n_prices, n, vol, ewma,
                      n >= self._min_returns)


class VolBars(NamedTuple):
    """``rolling_volatility``'s output: the fields of ``VolBar``, one array each, one row per
    closed bar in the order ``RollingVolatility`` would emit them."""

    bar_start_s: np.ndarray
    bar_end_s: np.ndarray
    close_usd: np.ndarray
    log_return: np.ndarray
    n_prices: np.ndarray
    n_returns: np.ndarray
    vol_annual: np.ndarray
    ewma_vol_annual: np.ndarray
    ready: np.ndarray


def rolling_volatility(ts_s, price_usd, config: RollingVolConfig = RollingVolConfig()) -> VolBars:
    """The bars ``RollingVolatility`` emits for these prices (same rules, vectorized): for backtests
    over a year of prices, and as an independent check of the streaming code."""
    ts = np.asarray(ts_s, dtype=np.float64)
    price = np.asarray(price_usd, dtype=np.float64)
    if ts.shape != price.shape or ts.ndim != 1:
        raise ValueError("ts_s and price_usd must be one-dimensional and of the same length")
    finite = np.isfinite(ts) & np.isfinite(price) & (price > 0.0)
    ts, price = ts[finite], price[finite]
    if len(ts):  # drop prices older than one before them (the streaming code ignores them)
        keep = ts >= np.concatenate(([-np.inf], np.maximum.accumulate(ts)[:-1]))
        ts, price = ts[keep], price[keep]
    bar_s = config.bar_s
    index = np.floor(ts / bar_s).astype(np.int64)
    breaks = np.flatnonzero(np.diff(ts) > config.max_silence_s) + 1
    seg_bounds = np.concatenate(([0], breaks, [len(ts)]))
    pieces: list[tuple] = []
    for s, (lo, hi) in enumerate(zip(seg_bounds[:-1], seg_bounds[1:])):
        if hi <= lo:
            continue
        idx = index[lo:hi]
        last_row = np.flatnonzero(np.concatenate((idx[1:] != idx[:-1], [True])))
        seen, counts = idx[last_row], np.diff(np.concatenate(([-1], last_row)))
        if s == len(seg_bounds) - 2:
            # The last bar is still open; every bar before it has closed, empty ones included.
            open_index = seen[-1]
            seen, counts, last_row = seen[:-1], counts[:-1], last_row[:-1]
            if not len(seen):
                continue
            k = np.arange(seen[0], open_index)
        else:  # before a silence the bars close up to the last one seen, no empty ones follow
            k = np.arange(seen[0], seen[-1] + 1)
        slot = np.searchsorted(k, seen)
        filled = np.zeros(len(k), dtype=bool)
        filled[slot] = True
        n_prices = np.zeros(len(k), dtype=np.int64)
        n_prices[slot] = counts
        # Each bar's close: that of the latest bar at or before it that saw a price.
        close = price[lo:hi][last_row][np.cumsum(filled) - 1]
        r = np.concatenate(([np.nan], np.log(close[1:] / close[:-1])))
        r2 = np.nan_to_num(r * r)
        have = np.isfinite(r).astype(np.float64)
        W = config.window_bars
        c2 = np.concatenate(([0.0], np.cumsum(r2)))
        cn = np.concatenate(([0.0], np.cumsum(have)))
        start = np.maximum(np.arange(len(k)) - W + 1, 0)
        end = np.arange(1, len(k) + 1)
        n_ret = np.rint(cn[end] - cn[start]).astype(np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            vol = np.where(n_ret > 0, np.sqrt(np.maximum(c2[end] - c2[start], 0.0) / n_ret
                                              * config.bars_per_year), np.nan)
        ewma = np.full(len(k), np.nan)
        if len(k) > 1:
            ewma[1:] = np.sqrt(ewma_variance(r[1:], config.ewma_lambda) * config.bars_per_year)
        pieces.append((k * bar_s, (k + 1) * bar_s, close, r, n_prices, n_ret, vol, ewma,
                       n_ret >= config.min_coverage_s / bar_s))
    if not pieces:
        empty = np.empty(0)
        return VolBars(empty, empty, empty, empty, np.empty(0, np.int64), np.empty(0, np.int64),
                       empty, empty, np.empty(0, bool))
    return VolBars(*(np.concatenate(column) for column in zip(*pieces)))


# --------------------------------------------------------------------------- streaming anomalies


@dataclass(frozen=True)
class AnomalyConfig:
    """``AnomalyDetector``'s thresholds and filter.

    - ``return_z``: a bar return as unlikely as a ``return_z``-sigma normal move is a
      ``return_anomaly``. The forecast stdev is itself estimated, so ``r / stdev`` is closer to a
      Student t with the filter's effective sample as degrees of freedom; the threshold on it is
      that t's quantile at the same tail probability (4.0 becomes 4.6 at lambda = 0.94).
    - ``vol_ratio_z``: the realized/forecast volatility ratio over the last ``vol_ratio_bars``
      bars, as a z-score of its log (see ``AnomalyDetector``), beyond this is a
      ``volatility_anomaly``; it re-arms once the score falls below half the threshold.
    - ``ewma_lambda``: the variance filter's decay per bar (RiskMetrics 0.94).
    - ``min_returns``: bars the filter learns from before it judges any.
    - ``clip_z``: a return enters the filter clipped to this many forecast stdevs (default: the
      return threshold), so one flagged jump does not blind the detector for the next hour, while a
      lasting rise in volatility still lifts the forecast within a few bars.
    """

    return_z: float = 4.0
    vol_ratio_z: float = 4.0
    ewma_lambda: float = RISKMETRICS_LAMBDA
    min_returns: int = 30
    vol_ratio_bars: int = 30
    clip_z: float | None = None

    def __post_init__(self) -> None:
        _require(self.return_z > 0.0 and math.isfinite(self.return_z),
                 f"return_z must be > 0, got {self.return_z!r}")
        _require(self.vol_ratio_z > 0.0 and math.isfinite(self.vol_ratio_z),
                 f"vol_ratio_z must be > 0, got {self.vol_ratio_z!r}")
        _require(0.0 < self.ewma_lambda < 1.0, f"ewma_lambda must be in (0, 1), got {self.ewma_lambda!r}")
        _require(int(self.min_returns) == self.min_returns and self.min_returns >= 1,
                 f"min_returns must be an integer >= 1, got {self.min_returns!r}")
        _require(int(self.vol_ratio_bars) == self.vol_ratio_bars and self.vol_ratio_bars >= 2,
                 f"vol_ratio_bars must be an integer >= 2, got {self.vol_ratio_bars!r}")
        _require(self.clip_z is None or self.clip_z > 0.0, f"clip_z must be > 0, got {self.clip_z!r}")

    @property
    def effective_returns(self) -> float:
        """The EWMA's effective sample, ``(1 + lambda) / (1 - lambda)``: its variance estimate is
        as uncertain as a sample variance of that many returns."""
        return (1.0 + self.ewma_lambda) / (1.0 - self.ewma_lambda)

    @property
    def return_threshold(self) -> float:
        """The threshold on ``|r / forecast stdev|``: the Student-t (``effective_returns`` degrees of
        freedom) quantile as far in the tail as ``return_z`` is in the normal."""
        return float(-stdtrit(self.effective_returns, ndtr(-self.return_z)))

    @property
    def clip(self) -> float:
        return self.return_threshold if self.clip_z is None else self.clip_z


class Anomaly(NamedTuple):
    """A bar the forecast did not allow. ``kind`` is ``"return_anomaly"`` or
    ``"volatility_anomaly"``; ``z`` the score that crossed the threshold; ``observed`` and
    ``forecast`` the log return and forecast stdev per bar (return anomaly) or the realized and
    forecast volatility, annualized (volatility anomaly); ``detail`` says it in a sentence."""

    ts_s: float
    kind: str
    detail: str
    z: float
    observed: float
    forecast: float


def _utc(ts_s: float) -> str:
    return datetime.fromtimestamp(ts_s, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class AnomalyDetector:
    """Plan 002's volatility filter on one asset's bars (``VolBar`` from ``RollingVolatility``).

    The filter is an EWMA of the squared bar returns (an AR(1) in the variance, the RiskMetrics
    special case of the GARCH/HAR family). Each bar's return is judged against the forecast stdev
    made *before* the bar: ``z = r / sqrt(forecast)``; ``|z|`` beyond
    ``config.return_threshold`` (``return_z`` calibrated for the forecast's estimation error) is
    a return anomaly.
    An empty bar (a silence) is not judged; the next bar's return spans the silence, so its
    forecast variance is scaled by the number of bars it spans.

    Volatility: over the last ``k = vol_ratio_bars`` judged bars, ``ratio^2`` is their realized
    variance (the mean of the clipped squared returns, per bar) over the variance forecast made
    before the first of them: the EWMA forecast is flat, so that is its forecast for all ``k``.
    (Against each bar's own forecast the ratio would fade as the filter adapts to the new level.)
    Under the filter ``ln(ratio^2)`` has a variance of about ``2/k + 2/n_eff`` (``k`` squared
    normals, plus the forecast's own estimation error, ``n_eff = (1 + lambda) / (1 - lambda)``
    the EWMA's effective sample), so ``ln(ratio^2) / sqrt(2/k + 2/n_eff) > vol_ratio_z`` is a
    volatility anomaly: a sustained rise rather than one jump (a jump, clipped, cannot reach it
    alone). Raised once per episode: it re-arms when the score falls below half the threshold.

    Nothing is judged until the filter has learned from ``min_returns`` bars, or while its
    forecast is zero (constant prices: it knows nothing about the scale). A bar without a return
    (a restart of ``RollingVolatility``) restarts the detector.
    """

    def __init__(self, config: AnomalyConfig = AnomalyConfig()) -> None:
        self.config = config
        lam = config.ewma_lambda
        self._log_ratio_sd = math.sqrt(2.0 / config.vol_ratio_bars + 2.0 * (1.0 - lam) / (1.0 + lam))
        self._threshold = config.return_threshold
        self._clip = config.clip
        self._restart()

    def _restart(self) -> None:
        self._num = 0.0
        self._den = 0.0
        self._n = 0
        self._span = 1
        # (forecast variance before the bar, clipped observed variance), per bar, judged bars only
        self._judged: deque[tuple[float, float]] = deque(maxlen=self.config.vol_ratio_bars)
        # the observed variances alone, in the same order (summed on every bar without a generator)
        self._observed: deque[float] = deque(maxlen=self.config.vol_ratio_bars)
        self._vol_alert_active = False

    @property
    def forecast_variance(self) -> float:
        """The filter's variance forecast for the next bar (per bar; NaN before any return)."""
        return self._num / self._den if self._den else math.nan

    def update(self, bar) -> list[Anomaly]:
        r = bar.log_return
        if not math.isfinite(r):
            self._restart()
            return []
        if bar.n_prices == 0:
            self._span += 1
            return []
        span, self._span = self._span, 1
        cfg = self.config
        forecast = self.forecast_variance * span
        anomalies: list[Anomaly] = []
        observed_var = r * r / span
        if self._n >= cfg.min_returns and forecast > 0.0:
            stdev = math.sqrt(forecast)
            z = r / stdev
            if abs(z) > self._threshold:
                anomalies.append(Anomaly(
                    bar.bar_end_s, "return_anomaly",
                    f"return {math.expm1(r):+.2%} over the bar ending {_utc(bar.bar_end_s)} is "
                    f"{z:+.1f} forecast stdevs (beyond {self._threshold:.1f}, as rare as "
                    f"{cfg.return_z:g} sigma); the filter's stdev before the bar was {stdev:.3%}"
                    + (f" over {span} bars" if span > 1 else ""),
                    z, r, stdev))
            zc = max(-self._clip, min(self._clip, z))
            observed_var = zc * zc * forecast / span
            self._judged.append((forecast / span, observed_var))
            self._observed.append(observed_var)
            anomalies.extend(self._volatility(bar))
        lam = cfg.ewma_lambda
        self._num = lam * self._num + observed_var
        self._den = lam * self._den + 1.0
        self._n += 1
        return anomalies

    def _volatility(self, bar) -> list[Anomaly]:
        k = len(self._judged)
        if k < self.config.vol_ratio_bars:
            return []
        forecast_before = self._judged[0][0]
        ratio2 = math.fsum(self._observed) / k / forecast_before
        if ratio2 <= 0.0:
            return []
        score = math.log(ratio2) / self._log_ratio_sd
        if score < 0.5 * self.config.vol_ratio_z:
            self._vol_alert_active = False
        if score <= self.config.vol_ratio_z or self._vol_alert_active:
            return []
        self._vol_alert_active = True
        ratio = math.sqrt(ratio2)
        per_year = SECONDS_PER_YEAR / (bar.bar_end_s - bar.bar_start_s)
        forecast_annual = math.sqrt(forecast_before * per_year)
        return [Anomaly(
            bar.bar_end_s, "volatility_anomaly",
            f"realized volatility over the {k} bars ending {_utc(bar.bar_end_s)} is {ratio:.2f}x "
            f"the filter's forecast made before them (z {score:.1f} > {self.config.vol_ratio_z:g}): "
            f"{ratio * forecast_annual:.0%} annualized against {forecast_annual:.0%}",
            score, ratio * forecast_annual, forecast_annual)]
