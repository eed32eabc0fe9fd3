"""models.volatility: realized estimators against their formulas, pandas and simulated truth; EWMA
against pandas; GARCH(1,1)-t against the ``arch`` package; HAR-RV against least squares and
simulated HAR data; the streaming estimator against its vectorized twin; the anomaly detector on
jumps, regimes and silences; and all of it on a month of real BTC perpetual 1-minute bars."""

from __future__ import annotations

import math
import statistics
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from arch import arch_model
from hypothesis import given, settings
from hypothesis import strategies as st

from models.volatility import (
    AnomalyConfig,
    AnomalyDetector,
    RollingVolatility,
    RollingVolConfig,
    VolBar,
    bars_per_year,
    close_to_close_vol,
    ewma_forecast_variance,
    ewma_variance,
    fit_garch_t,
    fit_har,
    garch_forecast_variance,
    garch_variance,
    garman_klass_vol,
    har_design,
    har_forecast,
    har_scores,
    ohlc_bars,
    parkinson_vol,
    realized_variance,
    return_zscores,
    rogers_satchell_vol,
    rolling_volatility,
    yang_zhang_vol,
)

MARKET_CSV = (Path(__file__).resolve().parents[2].parent / "shared" / "data" / "market"
              / "btc_perp_1m_2021-12-31_2022-02-01.csv")
DAILY_BARS = 365.0  # bars per year of daily bars
T0 = 1_700_000_040.0  # a minute boundary (epoch s)


# --------------------------------------------------------------------------- helpers


def simulate_ohlc(n_bars: int, steps: int, vol_per_bar: float, rng, *, drift_per_bar: float = 0.0,
                  gap_sd: float = 0.0, start_usd: float = 40_000.0):
    """Bars of a GBM sampled ``steps`` times per bar; each bar opens ``gap_sd`` (log stdev) away
    from the previous close (an overnight jump)."""
    inc = rng.normal(drift_per_bar / steps, vol_per_bar / math.sqrt(steps), (n_bars, steps))
    gaps = rng.normal(0.0, gap_sd, n_bars) if gap_sd else np.zeros(n_bars)
    log_open = np.empty(n_bars)
    paths = np.empty((n_bars, steps))
    level = math.log(start_usd)
    for i in range(n_bars):
        log_open[i] = level + gaps[i]
        paths[i] = log_open[i] + np.cumsum(inc[i])
        level = paths[i, -1]
    o = np.exp(log_open)
    h = np.maximum(o, np.exp(paths.max(axis=1)))
    lo = np.minimum(o, np.exp(paths.min(axis=1)))
    return o, h, lo, np.exp(paths[:, -1])


def simulate_garch_t(n: int, omega: float, alpha: float, beta: float, nu: float, rng) -> np.ndarray:
    z = rng.standard_t(nu, n) * math.sqrt((nu - 2.0) / nu)
    e = np.empty(n)
    s2 = omega / (1.0 - alpha - beta)
    for t in range(n):
        e[t] = math.sqrt(s2) * z[t]
        s2 = omega + alpha * e[t] ** 2 + beta * s2
    return e


def arch_fit(y, mean: str):
    model = arch_model(y, mean="Zero" if mean == "zero" else "Constant", vol="GARCH", p=1, q=1,
                       dist="t", rescale=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(disp="off")


def ohlc_strategy(max_bars: int = 40):
    """Valid OHLC bars: random log moves; the high above and the low below open and close."""
    def build(draw_values):
        moves, ups, downs, gaps = draw_values
        n = len(moves)
        o = np.empty(n)
        c = np.empty(n)
        level = 100.0
        for i in range(n):
            o[i] = level * math.exp(gaps[i])
            c[i] = o[i] * math.exp(moves[i])
            level = c[i]
        h = np.maximum(o, c) * np.exp(np.abs(ups))
        lo = np.minimum(o, c) * np.exp(-np.abs(downs))
        return o, h, lo, c

    def lists(n):
        small = st.floats(-0.05, 0.05, allow_nan=False)
        return st.tuples(*(st.lists(small, min_size=n, max_size=n) for _ in range(4)))

    return st.integers(8, max_bars).flatmap(lists).map(build)


# --------------------------------------------------------------------------- realized estimators


def test_close_to_close_matches_statistics_and_pandas_rolling():
    rng = np.random.default_rng(11)
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0.001, 0.02, 300)))
    r = np.diff(np.log(close))
    assert close_to_close_vol(close, DAILY_BARS) == pytest.approx(statistics.stdev(r) * math.sqrt(365), rel=1e-12)
    assert close_to_close_vol(close, DAILY_BARS, demean=False) == pytest.approx(
        math.sqrt(statistics.fmean(r * r) * 365), rel=1e-12)
    rolling = close_to_close_vol(close, DAILY_BARS, window=30)
    expected = pd.Series(np.log(close)).diff().rolling(30).std().to_numpy() * math.sqrt(365)
    np.testing.assert_allclose(rolling, expected, rtol=1e-9, equal_nan=True)
    assert np.isnan(rolling[:30]).all() and np.isfinite(rolling[30:]).all()
    rms = close_to_close_vol(close, DAILY_BARS, window=30, demean=False)
    expected = np.sqrt((pd.Series(np.log(close)).diff() ** 2).rolling(30).mean().to_numpy() * 365)
    np.testing.assert_allclose(rms, expected, rtol=1e-9, equal_nan=True)


def _formula_estimates(o, h, lo, c, per_year):
    """The estimators written out bar by bar from their papers' formulas (no numpy)."""
    ln = math.log
    n = len(o)
    park = sum(ln(h[i] / lo[i]) ** 2 for i in range(n)) / (4 * ln(2) * n)
    gk = sum(0.5 * ln(h[i] / lo[i]) ** 2 - (2 * ln(2) - 1) * ln(c[i] / o[i]) ** 2 for i in range(n)) / n
    rs_terms = [ln(h[i] / c[i]) * ln(h[i] / o[i]) + ln(lo[i] / c[i]) * ln(lo[i] / o[i]) for i in range(n)]
    rs = sum(rs_terms) / n
    m = n - 1
    k = 0.34 / (1.34 + (m + 1) / (m - 1))
    yz = (statistics.variance([ln(o[i] / c[i - 1]) for i in range(1, n)])
          + k * statistics.variance([ln(c[i] / o[i]) for i in range(1, n)])
          + (1 - k) * sum(rs_terms[1:]) / m)
    return tuple(math.sqrt(max(v, 0.0) * per_year) for v in (park, gk, rs, yz))


@given(ohlc_strategy(), st.floats(0.01, 1e4), st.integers(2, 6))
@settings(max_examples=60, deadline=None)
def test_range_estimators_follow_their_formulas_whole_and_rolling(bars, price_scale, window):
    o, h, lo, c = bars
    park, gk, rs, yz = _formula_estimates(o, h, lo, c, DAILY_BARS)
    ours = (parkinson_vol(h, lo, DAILY_BARS), garman_klass_vol(o, h, lo, c, DAILY_BARS),
            rogers_satchell_vol(o, h, lo, c, DAILY_BARS), yang_zhang_vol(o, h, lo, c, DAILY_BARS))
    np.testing.assert_allclose(ours, (park, gk, rs, yz), rtol=1e-9, atol=1e-12)
    # The unit of the prices does not matter.
    scaled = [x * price_scale for x in (o, h, lo, c)]
    np.testing.assert_allclose(
        (parkinson_vol(scaled[1], scaled[2], DAILY_BARS), yang_zhang_vol(*scaled, DAILY_BARS)),
        (park, yz), rtol=1e-9, atol=1e-12)
    # A rolling estimate at bar t is the whole-sample estimate of the bars it covers. Compared as
    # variances: rolling sums are differences of cumulative sums, exact to ~1e-16 of the sums, and
    # a square root would magnify that near zero.
    t, w = len(o) - 1, window

    def var(vol):
        return float(vol) ** 2 / DAILY_BARS

    rolling = (parkinson_vol(h, lo, DAILY_BARS, window=w)[t],
               garman_klass_vol(o, h, lo, c, DAILY_BARS, window=w)[t],
               rogers_satchell_vol(o, h, lo, c, DAILY_BARS, window=w)[t],
               yang_zhang_vol(o, h, lo, c, DAILY_BARS, window=w)[t])
    sl, yz_sl = slice(t - w + 1, None), slice(t - w, None)  # Yang-Zhang needs the close before
    whole = (parkinson_vol(h[sl], lo[sl], DAILY_BARS),
             garman_klass_vol(o[sl], h[sl], lo[sl], c[sl], DAILY_BARS),
             rogers_satchell_vol(o[sl], h[sl], lo[sl], c[sl], DAILY_BARS),
             yang_zhang_vol(o[yz_sl], h[yz_sl], lo[yz_sl], c[yz_sl], DAILY_BARS))
    np.testing.assert_allclose([var(v) for v in rolling], [var(v) for v in whole], rtol=1e-7, atol=1e-13)
    assert np.isnan(yang_zhang_vol(o, h, lo, c, DAILY_BARS, window=w)[:w]).all()


def test_estimators_recover_a_known_volatility():
    rng = np.random.default_rng(7)
    vol_per_bar = 0.03
    o, h, lo, c = simulate_ohlc(3_000, 400, vol_per_bar, rng)
    truth = vol_per_bar * math.sqrt(DAILY_BARS)
    # Range estimators see the high and low of 400 samples, not of a continuous path: a few
    # percent low. 3,000 bars give standard errors of about 1-2 %.
    assert close_to_close_vol(c, DAILY_BARS) == pytest.approx(truth, rel=0.04)
    for estimate in (parkinson_vol(h, lo, DAILY_BARS), garman_klass_vol(o, h, lo, c, DAILY_BARS),
                     rogers_satchell_vol(o, h, lo, c, DAILY_BARS), yang_zhang_vol(o, h, lo, c, DAILY_BARS)):
        assert truth * 0.92 < estimate < truth * 1.02


def test_yang_zhang_sees_opening_jumps_that_range_estimators_miss():
    rng = np.random.default_rng(8)
    intraday, gap = 0.02, 0.02
    o, h, lo, c = simulate_ohlc(3_000, 200, intraday, rng, gap_sd=gap)
    total = math.sqrt(intraday**2 + gap**2) * math.sqrt(DAILY_BARS)
    assert close_to_close_vol(c, DAILY_BARS) == pytest.approx(total, rel=0.05)
    assert yang_zhang_vol(o, h, lo, c, DAILY_BARS) == pytest.approx(total, rel=0.05)
    # The intraday estimators only see the bar's own path.
    assert rogers_satchell_vol(o, h, lo, c, DAILY_BARS) == pytest.approx(intraday * math.sqrt(365), rel=0.08)
    assert parkinson_vol(h, lo, DAILY_BARS) < 0.8 * total


def test_rogers_satchell_is_drift_independent_and_parkinson_is_not():
    rng = np.random.default_rng(9)
    vol_per_bar = 0.01
    # A drift of two stdevs per bar; 1,000 samples per bar keep the discrete-sampling bias small.
    o, h, lo, c = simulate_ohlc(2_000, 1_000, vol_per_bar, rng, drift_per_bar=0.02)
    truth = vol_per_bar * math.sqrt(DAILY_BARS)
    assert truth * 0.92 < rogers_satchell_vol(o, h, lo, c, DAILY_BARS) < truth * 1.02
    assert parkinson_vol(h, lo, DAILY_BARS) > 1.4 * truth  # the drift widens every range
    assert garman_klass_vol(o, h, lo, c, DAILY_BARS) > 1.1 * truth


def test_estimators_refuse_bad_prices_and_windows():
    good = np.array([1.0, 1.1, 1.2])
    with pytest.raises(ValueError, match="finite and > 0"):
        parkinson_vol(good, np.array([1.0, 0.0, 1.0]), DAILY_BARS)
    with pytest.raises(ValueError, match="same length"):
        garman_klass_vol(good, good, good, good[:2], DAILY_BARS)
    with pytest.raises(ValueError, match="window"):
        close_to_close_vol(good, DAILY_BARS, window=1)
    with pytest.raises(ValueError, match="bar_s"):
        bars_per_year(0.0)
    assert bars_per_year(60.0) == 525_600.0


def test_ohlc_bars_and_realized_variance_match_pandas():
    rng = np.random.default_rng(4)
    ts = T0 + np.cumsum(rng.integers(1, 200, 2_000)).astype(float)
    price = 40_000.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, len(ts))))
    bars = ohlc_bars(ts, 3_600.0, price)
    frame = pd.DataFrame({"p": price}, index=pd.to_datetime(ts, unit="s", utc=True))
    expected = frame.p.resample("3600s").ohlc().dropna()
    np.testing.assert_allclose(bars.bar_start_s, expected.index.as_unit("s").asi8.astype(float))
    for ours, col in zip(bars[1:5], ("open", "high", "low", "close")):
        np.testing.assert_array_equal(ours, expected[col].to_numpy())
    assert bars.n.sum() == len(ts)
    rv = realized_variance(ts, price, 3_600.0)
    r2 = pd.Series(np.diff(np.log(price)) ** 2, index=frame.index[1:])
    grouped = r2.resample("3600s").agg(["sum", "count"])
    grouped = grouped[grouped["count"] > 0]
    np.testing.assert_allclose(rv.variance, grouped["sum"].to_numpy(), rtol=1e-12)
    np.testing.assert_array_equal(rv.n_returns, grouped["count"].to_numpy())


# --------------------------------------------------------------------------- EWMA


@pytest.mark.parametrize("adjust", [True, False])
def test_ewma_variance_matches_pandas_ewm(adjust):
    rng = np.random.default_rng(12)
    r = rng.standard_t(4, 500) * 0.01
    ours = ewma_variance(r, 0.94, adjust=adjust)
    expected = pd.Series(r * r).ewm(alpha=0.06, adjust=adjust).mean().to_numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-10)
    forecast = ewma_forecast_variance(r, 0.94, adjust=adjust)
    assert np.isnan(forecast[0])
    np.testing.assert_allclose(forecast[1:], ours[:-1])
    with pytest.raises(ValueError, match="lambda"):
        ewma_variance(r, 1.0)


# --------------------------------------------------------------------------- GARCH(1,1)-t


@pytest.mark.parametrize("mean", ["zero", "constant"])
def test_garch_t_matches_arch(mean):
    rng = np.random.default_rng(21)
    y = simulate_garch_t(2_500, 0.05, 0.08, 0.90, 6.0, rng) + (0.05 if mean == "constant" else 0.0)
    ours = fit_garch_t(y, mean=mean)
    res = arch_fit(y, mean)
    p = res.params
    assert ours.converged
    assert ours.loglik == pytest.approx(res.loglikelihood, abs=1e-3)
    assert ours.omega == pytest.approx(p["omega"], rel=2e-3)
    assert ours.alpha == pytest.approx(p["alpha[1]"], abs=1e-3)
    assert ours.beta == pytest.approx(p["beta[1]"], abs=1e-3)
    assert ours.nu == pytest.approx(p["nu"], rel=2e-3)
    if mean == "constant":
        assert ours.mu == pytest.approx(p["mu"], abs=2e-4)
    np.testing.assert_allclose(ours.variance, res.conditional_volatility**2, rtol=5e-3)
    arch_forecast = res.forecast(horizon=10, reindex=False).variance.to_numpy()[0]
    np.testing.assert_allclose(garch_forecast_variance(ours, 10), arch_forecast, rtol=5e-3)


def test_garch_t_recovers_simulated_parameters_and_is_scale_equivariant():
    rng = np.random.default_rng(22)
    y = simulate_garch_t(5_000, 2e-6, 0.10, 0.85, 5.0, rng)  # fractional returns, ~1% per bar
    fit = fit_garch_t(y)
    assert fit.alpha == pytest.approx(0.10, abs=0.03)
    assert fit.beta == pytest.approx(0.85, abs=0.04)
    assert fit.nu == pytest.approx(5.0, abs=1.5)
    assert fit.long_run_variance == pytest.approx(2e-6 / 0.05, rel=0.25)
    percent = fit_garch_t(100.0 * y)
    assert (percent.alpha, percent.beta, percent.nu) == pytest.approx((fit.alpha, fit.beta, fit.nu), rel=1e-4)
    assert percent.omega == pytest.approx(1e4 * fit.omega, rel=1e-3)
    assert percent.loglik == pytest.approx(fit.loglik - len(y) * math.log(100.0), abs=1e-4)
    # The stored variances are the recursion's.
    np.testing.assert_allclose(fit.variance, garch_variance(fit.resid, fit.omega, fit.alpha, fit.beta,
                                                            fit.backcast))


def test_garch_forecast_decays_to_the_long_run_variance_within_the_constraints():
    rng = np.random.default_rng(23)
    y = rng.standard_t(5, 1_500) * 0.01  # no clustering at all: the fit must still be admissible
    fit = fit_garch_t(y, mean="constant")
    assert fit.omega > 0.0 and fit.alpha >= 0.0 and fit.beta >= 0.0 and fit.persistence < 1.0
    assert fit.nu > 2.0
    forecast = garch_forecast_variance(fit, 2_000)
    assert np.all(forecast > 0.0)
    gaps = np.abs(forecast - fit.long_run_variance)
    assert np.all(np.diff(gaps) <= 1e-18)
    assert forecast[-1] == pytest.approx(fit.long_run_variance, rel=1e-3)
    with pytest.raises(ValueError, match="at least 20"):
        fit_garch_t(y[:10])
    with pytest.raises(ValueError, match="mean"):
        fit_garch_t(y, mean="ar")
    with pytest.raises(ValueError, match="horizon"):
        garch_forecast_variance(fit, 0)


# --------------------------------------------------------------------------- HAR-RV


def simulate_log_har(n: int, coef, noise_sd: float, rng) -> np.ndarray:
    """log RV following the HAR recursion on averages of log RV (lags 1, 5, 22)."""
    c, bd, bw, bm = coef
    mean = c / (1.0 - bd - bw - bm)
    x = np.full(n + 200, mean)
    for t in range(22, n + 199):
        x[t + 1] = (c + bd * x[t] + bw * x[t - 4:t + 1].mean() + bm * x[t - 21:t + 1].mean()
                    + noise_sd * rng.standard_normal())
    return np.exp(x[200:])


def test_har_design_is_the_daily_weekly_monthly_averages():
    rng = np.random.default_rng(31)
    rv = rng.gamma(2.0, 1e-4, 100)
    X = har_design(rv)
    s = pd.Series(rv)
    expected = np.column_stack([np.ones(100), rv, s.rolling(5).mean(), s.rolling(22).mean()])[21:]
    np.testing.assert_allclose(X, expected, rtol=1e-12)


@pytest.mark.parametrize("transform", ["variance", "vol", "log"])
def test_har_ols_matches_lstsq(transform):
    rng = np.random.default_rng(32)
    rv = rng.gamma(2.0, 1e-4, 400)
    fit = fit_har(rv, transform=transform)
    x = {"variance": rv, "vol": np.sqrt(rv), "log": np.log(rv)}[transform]
    s = pd.Series(x)
    X = np.column_stack([np.ones(len(x)), x, s.rolling(5).mean(), s.rolling(22).mean()])[21:-1]
    y = x[22:]
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    np.testing.assert_allclose(fit.coef, coef, rtol=1e-8, atol=1e-14)
    resid = y - X @ coef
    assert fit.n_obs == len(y)
    assert fit.resid_sd == pytest.approx(math.sqrt(resid @ resid / (len(y) - 4)), rel=1e-9)
    assert fit.r2 == pytest.approx(1.0 - resid @ resid / np.sum((y - y.mean()) ** 2), rel=1e-9)


def test_har_direct_multi_period_target_is_the_average_of_the_next_periods():
    rng = np.random.default_rng(33)
    rv = rng.gamma(2.0, 1e-4, 300)
    fit = fit_har(rv, horizon=5)
    X = har_design(rv)
    y = pd.Series(rv).rolling(5).mean().shift(-5).to_numpy()[21:]
    keep = np.isfinite(y)
    coef, *_ = np.linalg.lstsq(X[keep], y[keep], rcond=None)
    np.testing.assert_allclose(fit.coef, coef, rtol=1e-8, atol=1e-14)
    assert har_forecast(fit, rv, 1)[0] == pytest.approx(X[-1] @ coef, rel=1e-12)
    with pytest.raises(ValueError, match="one step"):
        har_forecast(fit, rv, 2)


def test_har_recovers_the_coefficients_of_simulated_har_data():
    rng = np.random.default_rng(34)
    truth = (-0.9, 0.40, 0.30, 0.20)  # log RV around -9 (a daily vol near 1 %)
    rv = simulate_log_har(6_000, truth, 0.4, rng)
    fit = fit_har(rv, transform="log")
    np.testing.assert_allclose(fit.coef[1:], truth[1:], atol=0.05)
    assert fit.persistence == pytest.approx(0.9, abs=0.04)
    assert fit.resid_sd == pytest.approx(0.4, rel=0.03)
    # Forecasts revert to the model's long-run level, exp(c / (1 - sum b) + s^2 / 2).
    far = har_forecast(fit, rv, 400)[-1]
    level = fit.coef[0] / (1.0 - fit.persistence)
    assert far == pytest.approx(math.exp(level + 0.5 * fit.resid_sd**2), rel=1e-6)


def test_har_forecast_iterates_the_fitted_recursion():
    rng = np.random.default_rng(35)
    rv = rng.gamma(2.0, 1e-4, 200)
    fit = fit_har(rv)
    c, bd, bw, bm = fit.coef
    history = list(rv)
    expected = []
    for _ in range(30):
        value = c + bd * history[-1] + bw * np.mean(history[-5:]) + bm * np.mean(history[-22:])
        expected.append(value)
        history.append(value)
    np.testing.assert_allclose(har_forecast(fit, rv, 30), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="history"):
        har_forecast(fit, rv[:10], 1)
    with pytest.raises(ValueError, match="needs at least"):
        fit_har(rv[:25])


def test_har_scores_flag_the_period_whose_volatility_the_filter_did_not_allow():
    rng = np.random.default_rng(36)
    rv = simulate_log_har(1_500, (-0.9, 0.40, 0.30, 0.20), 0.3, rng)
    spiked = rv.copy()
    spiked[1_000] *= math.exp(3.0)  # a 3-nat jump in log variance: 10 stdevs of the filter's noise
    fit = fit_har(rv, transform="log")
    scores = har_scores(fit, spiked)
    assert np.isnan(scores.z[:22]).all() and np.isfinite(scores.z[22:]).all()
    clean = np.delete(scores.z[22:], 1_000 - 22)
    assert abs(np.mean(clean)) < 0.1 and np.std(clean) == pytest.approx(1.0, abs=0.1)
    assert scores.z[1_000] > 8.0
    assert np.flatnonzero(scores.z > 4.5).tolist() == [1_000]
    assert scores.vol_ratio[1_000] > 3.0
    np.testing.assert_allclose(scores.vol_ratio[22:] ** 2 * scores.forecast_variance[22:], spiked[22:])


def test_return_zscores_divide_by_the_forecast_stdev():
    z = return_zscores([0.02, -0.03, 0.01, 0.01], [1e-4, 1e-4, np.nan, 0.0])
    np.testing.assert_allclose(z[:2], [2.0, -3.0])
    assert np.isnan(z[2:]).all()


# --------------------------------------------------------------------------- streaming volatility


def test_rolling_volatility_closes_bars_as_prices_cross_their_ends():
    est = RollingVolatility(RollingVolConfig(bar_s=60.0, window_s=180.0, min_coverage_s=120.0,
                                             max_silence_s=180.0))
    assert est.update(T0 + 5, 100.0) == []  # opens [T0, T0+60)
    assert est.update(T0 + 30, 101.0) == []  # same bar
    (b0,) = est.update(T0 + 60, 102.0)  # at the end: closes the first bar
    assert (b0.bar_start_s, b0.bar_end_s, b0.close_usd, b0.n_prices) == (T0, T0 + 60, 101.0, 2)
    assert math.isnan(b0.log_return) and b0.n_returns == 0 and math.isnan(b0.vol_annual)
    assert not b0.ready
    # 150 s of silence: the bar of 102 closes, then one empty bar carrying 102.
    b1, b2 = est.update(T0 + 185, 99.0)
    assert (b1.bar_end_s, b1.close_usd, b1.n_prices) == (T0 + 120, 102.0, 1)
    assert b1.log_return == pytest.approx(math.log(102 / 101))
    assert (b2.bar_end_s, b2.close_usd, b2.n_prices, b2.log_return) == (T0 + 180, 102.0, 0, 0.0)
    assert b2.n_returns == 2 and b2.ready
    per_year = 525_600.0
    assert b2.vol_annual == pytest.approx(math.sqrt(math.log(102 / 101) ** 2 / 2 * per_year))
    # The window holds three bars: the fourth return pushes the first one out.
    (b3,) = est.update(T0 + 240, 99.5)
    (b4,) = est.update(T0 + 300, 98.0)
    returns = [0.0, math.log(99 / 102), math.log(99.5 / 99)]
    assert b4.n_returns == 3 and b3.n_returns == 3
    assert b4.vol_annual == pytest.approx(math.sqrt(sum(r * r for r in returns) / 3 * per_year))
    lam = 0.94
    all_r = [math.log(102 / 101)] + returns
    num = sum(lam ** (len(all_r) - 1 - i) * r * r for i, r in enumerate(all_r))
    den = sum(lam**i for i in range(len(all_r)))
    assert b4.ewma_vol_annual == pytest.approx(math.sqrt(num / den * per_year))


def test_rolling_volatility_restarts_after_a_long_silence_and_ignores_stale_prices():
    est = RollingVolatility(RollingVolConfig(bar_s=60.0, window_s=3_600.0, min_coverage_s=0.0,
                                             max_silence_s=600.0))
    for i in range(10):
        est.update(T0 + 60 * i, 100.0 + i)
    assert est.update(T0 + 60 * 9 - 1, 50.0) == []  # older than the last price
    assert est.update(T0 + 60 * 9 + 1, float("nan")) == []
    assert est.n_ignored == 2
    closed = est.update(T0 + 60 * 9 + 601, 120.0)  # 601 s of silence
    assert len(closed) == 1 and closed[0].close_usd == 109.0  # the open bar only, no empty ones
    (first,) = est.update(T0 + 60 * 9 + 661, 121.0)
    assert first.close_usd == 120.0 and math.isnan(first.log_return) and first.n_returns == 0


@st.composite
def price_streams(draw):
    n = draw(st.integers(1, 150))
    steps = draw(st.lists(st.one_of(st.floats(0.0, 90.0), st.floats(-30.0, 0.0), st.floats(300.0, 900.0)),
                          min_size=n, max_size=n))
    moves = draw(st.lists(st.floats(-0.05, 0.05), min_size=n, max_size=n))
    return T0 + np.cumsum(steps), 100.0 * np.exp(np.cumsum(moves))


@given(price_streams(), st.sampled_from([30.0, 60.0]), st.integers(2, 12))
@settings(max_examples=80, deadline=None)
def test_streaming_bars_equal_the_vectorized_computation(stream, bar_s, window_bars):
    ts, price = stream
    config = RollingVolConfig(bar_s=bar_s, window_s=bar_s * window_bars, min_coverage_s=bar_s,
                              max_silence_s=min(600.0, bar_s * window_bars))
    est = RollingVolatility(config)
    streamed = [bar for t, p in zip(ts, price) for bar in est.update(t, p)]
    vec = rolling_volatility(ts, price, config)
    assert len(streamed) == len(vec.bar_end_s)
    if streamed:
        rows = VolBar(*map(np.array, zip(*streamed)))
        for name in VolBar._fields:
            ours, theirs = getattr(rows, name).astype(float), getattr(vec, name).astype(float)
            if name.endswith("vol_annual"):  # as variances per bar (see the range estimators' test)
                ours, theirs = ours**2 / config.bars_per_year, theirs**2 / config.bars_per_year
            np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-14, equal_nan=True, err_msg=name)


def test_streaming_volatility_estimates_a_known_volatility_and_becomes_ready():
    rng = np.random.default_rng(41)
    vol_annual = 0.6
    n = 6 * 3_600  # six hours of 1-second prices
    price = 40_000.0 * np.exp(np.cumsum(rng.normal(0.0, vol_annual / math.sqrt(365 * 86_400), n)))
    config = RollingVolConfig(bar_s=60.0, window_s=7_200.0, min_coverage_s=3_600.0)
    est = RollingVolatility(config)
    bars = [b for i in range(n) for b in est.update(T0 + i, price[i])]
    assert len(bars) == n // 60 - 1
    ready_from = next(i for i, b in enumerate(bars) if b.ready)
    assert bars[ready_from].n_returns == 60 and not bars[ready_from - 1].ready
    assert max(b.n_returns for b in bars) == 120  # capped at the window
    # 120 one-minute returns: standard error 60% / sqrt(240), about 4%.
    assert bars[-1].vol_annual == pytest.approx(vol_annual, rel=0.12)
    assert bars[-1].ewma_vol_annual == pytest.approx(vol_annual, rel=0.5)


def test_configs_refuse_nonsense():
    with pytest.raises(ValueError, match="two bars"):
        RollingVolConfig(bar_s=60.0, window_s=60.0)
    with pytest.raises(ValueError, match="whole number"):
        RollingVolConfig(bar_s=60.0, window_s=150.0, min_coverage_s=60.0, max_silence_s=120.0)
    with pytest.raises(ValueError, match="min_coverage_s"):
        RollingVolConfig(min_coverage_s=90_000.0)
    with pytest.raises(ValueError, match="max_silence_s"):
        RollingVolConfig(max_silence_s=30.0)
    with pytest.raises(ValueError, match="finite"):
        RollingVolConfig(bar_s=float("nan"))
    with pytest.raises(ValueError, match="return_z"):
        AnomalyConfig(return_z=0.0)
    with pytest.raises(ValueError, match="vol_ratio_bars"):
        AnomalyConfig(vol_ratio_bars=1)


# --------------------------------------------------------------------------- anomalies


def bars_of(returns, *, start_usd: float = 40_000.0, bar_s: float = 60.0, empty=()) -> list[VolBar]:
    """VolBars carrying ``returns`` (NaN: a restart); indices in ``empty`` are empty bars."""
    bars, close = [], start_usd
    for i, r in enumerate(returns):
        close = close * math.exp(r) if math.isfinite(r) else close
        bars.append(VolBar(T0 + i * bar_s, T0 + (i + 1) * bar_s, close, r, 0 if i in empty else 1,
                           0, math.nan, math.nan, False))
    return bars


def run(detector: AnomalyDetector, bars):
    return [a for bar in bars for a in detector.update(bar)]


def test_a_jump_is_judged_against_the_forecast_made_before_it():
    rng = np.random.default_rng(51)
    r = rng.normal(0.0, 0.001, 200)
    r[150] = math.log(0.9)
    detector = AnomalyDetector(AnomalyConfig(return_z=4.0))
    bars = bars_of(r)
    anomalies = run(detector, bars[:150])
    assert anomalies == []
    before = math.sqrt(detector.forecast_variance)
    assert before == pytest.approx(math.sqrt(ewma_variance(r[:150])[-1]), rel=1e-12)
    (jump,) = detector.update(bars[150])
    assert jump.kind == "return_anomaly" and jump.ts_s == bars[150].bar_end_s
    assert jump.z == pytest.approx(math.log(0.9) / before) and jump.z < -50.0
    assert jump.forecast == pytest.approx(before)
    assert "-10.00%" in jump.detail and f"{jump.z:+.1f}" in jump.detail
    # Clipped into the filter: the next bars are judged against a forecast the jump did not blow
    # up (a 3-sigma move right after is still a normal bar, a 5-sigma one still an anomaly).
    assert math.sqrt(detector.forecast_variance) < 3.0 * before
    assert run(detector, bars[151:]) == []


def test_no_alarm_on_returns_the_filter_allows():
    rng = np.random.default_rng(52)
    r = rng.normal(0.0, 0.001, 3_000)
    assert run(AnomalyDetector(), bars_of(r)) == []


def test_a_volatility_regime_change_is_one_volatility_anomaly_and_a_jump_is_none():
    rng = np.random.default_rng(53)
    calm = rng.normal(0.0, 0.001, 300)
    stormy = rng.normal(0.0, 0.004, 200)
    found = run(AnomalyDetector(), bars_of(np.concatenate([calm, stormy])))
    vol = [a for a in found if a.kind == "volatility_anomaly"]
    assert len(vol) == 1
    assert T0 + 60 * 300 < vol[0].ts_s <= T0 + 60 * 330
    assert vol[0].observed > 2.0 * vol[0].forecast
    assert "annualized" in vol[0].detail
    jumpy = rng.normal(0.0, 0.001, 400)
    jumpy[200] = 0.05
    found = run(AnomalyDetector(), bars_of(jumpy))
    assert [a.kind for a in found] == ["return_anomaly"]


def test_a_return_across_a_silence_is_judged_against_the_forecast_for_its_span():
    rng = np.random.default_rng(54)
    r = list(rng.normal(0.0, 0.001, 100)) + [0.0] * 15 + [0.001 * 3.0 * 4.0]  # 3 stdevs of 16 bars
    empty = set(range(100, 115))
    assert run(AnomalyDetector(), bars_of(r, empty=empty)) == []
    r[-1] = 0.001 * 6.0 * 4.0  # 6 stdevs of 16 bars
    (a,) = run(AnomalyDetector(), bars_of(r, empty=empty))
    assert a.kind == "return_anomaly" and a.z == pytest.approx(6.0, rel=0.3) and "over 16 bars" in a.detail


def test_the_detector_learns_before_it_judges_and_restarts_with_the_estimator():
    rng = np.random.default_rng(55)
    r = rng.normal(0.0, 0.001, 60)
    r[20] = 0.05  # inside the warm-up of 30 returns: not judged
    detector = AnomalyDetector(AnomalyConfig(min_returns=30))
    assert run(detector, bars_of(r)) == []
    # A restart (a bar with no return) forgets everything: the next jump is in a new warm-up.
    r2 = np.concatenate([[np.nan], rng.normal(0.0, 0.001, 10), [0.05]])
    assert run(detector, bars_of(r2)) == []
    assert detector.forecast_variance > 1e-5  # it learned from the jump it could not judge


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def btc_minutes():
    if not MARKET_CSV.is_file():
        pytest.fail(f"market data not found at {MARKET_CSV}")
    frame = pd.read_csv(MARKET_CSV)
    ts = ((pd.to_datetime(frame["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC"))
          / pd.Timedelta(seconds=1)).to_numpy()
    return ts, *(frame[c].to_numpy(dtype=float) for c in ("open", "high", "low", "close"))


def test_real_btc_hourly_garch_t_matches_arch_and_is_sane(btc_minutes):
    ts, o, h, lo, c = btc_minutes
    hourly = ohlc_bars(ts, 3_600.0, o, h, lo, c)
    assert len(hourly.close_usd) > 700
    r = np.diff(np.log(hourly.close_usd))
    fit = fit_garch_t(r, mean="constant")
    assert fit.converged and fit.persistence < 1.0 and 2.0 < fit.nu < 30.0
    forecast = garch_forecast_variance(fit, 48)
    assert np.all(forecast > 0.0)
    # Annualized, the next-day forecast is a BTC-like volatility (January 2022: 40-120%).
    assert 0.3 < math.sqrt(forecast[:24].sum() * 365) < 1.5
    res = arch_fit(100.0 * r, "constant")  # arch wants percent returns
    assert fit.loglik - len(r) * math.log(100.0) == pytest.approx(res.loglikelihood, abs=1e-2)
    assert (fit.alpha, fit.beta) == pytest.approx((res.params["alpha[1]"], res.params["beta[1]"]), abs=2e-3)


def test_real_btc_har_and_realized_estimators_are_sane(btc_minutes):
    ts, o, h, lo, c = btc_minutes
    rv = realized_variance(ts, c, 3_600.0)  # hourly RV of 1-minute returns
    fit = fit_har(rv.variance, lags=(1, 24, 168), transform="log")
    assert 0.0 < fit.persistence < 1.0 and fit.r2 > 0.2
    assert fit.coef[1] > 0.0  # the last hour matters
    forecast = har_forecast(fit, rv.variance, 24)
    assert np.all(forecast > 0.0)
    assert 0.3 < math.sqrt(forecast.sum() * 365) < 1.5
    scores = har_scores(fit, rv.variance)
    assert np.nanmean(np.abs(scores.z) > 4.0) < 0.01  # anomalies are rare
    for bar_s in (3_600.0, 86_400.0):
        bars = ohlc_bars(ts, bar_s, o, h, lo, c)
        per_year = bars_per_year(bar_s)
        c2c = close_to_close_vol(bars.close_usd, per_year)
        yz = yang_zhang_vol(*bars[1:5], per_year)
        assert 0.5 * c2c < yz < 2.0 * c2c
        assert 0.5 * c2c < parkinson_vol(bars.high_usd, bars.low_usd, per_year) < 2.0 * c2c


def test_real_btc_streaming_24h_vol_is_the_rms_of_the_last_day_of_minute_returns(btc_minutes):
    ts, _, _, _, c = btc_minutes
    end = 8_000
    est = RollingVolatility()
    detector = AnomalyDetector()
    bars = [b for t, p in zip(ts[:end], c[:end]) for b in est.update(t, p)]
    found = [a for b in bars for a in detector.update(b)]
    last = bars[-1]
    assert last.n_returns == 1_440 and last.ready
    assert last.close_usd == c[end - 2]  # the last price's bar is still open
    expected = close_to_close_vol(c[end - 1_442:end - 1], bars_per_year(60.0), demean=False)
    assert last.vol_annual == pytest.approx(expected, rel=1e-9)
    assert len(found) < 0.02 * len(bars)
