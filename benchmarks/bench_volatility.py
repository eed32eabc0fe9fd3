"""Volatility: the graph's streaming estimator over a year of minutes, and GARCH fits against arch.

1. ``RollingVolatility.update`` over one year of 1-minute prices (525,600 updates, 24 h window)
   against ``rolling_volatility`` (numpy) computing the same bars from the same prices, same run;
   the two must agree (bar for bar, every field). Also the streaming estimator with the
   ``AnomalyDetector`` behind it, as ``dataflows.analytics.VolatilityNode`` runs them.
2. ``fit_garch_t`` against ``arch.arch_model(..., vol='GARCH', p=1, q=1, dist='t')`` on the same
   returns: simulated GARCH-t (percent) and the real BTC perpetual hourly returns (percent, from
   ../shared/data/market); fit time (median of repeats) and the differences in parameters and
   log-likelihood.

    .venv/bin/python benchmarks/bench_volatility.py [N_UPDATES]
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.volatility import (  # noqa: E402
    AnomalyDetector,
    RollingVolatility,
    RollingVolConfig,
    fit_garch_t,
    ohlc_bars,
    rolling_volatility,
)

T0 = 1_700_000_040.0  # a minute boundary
MARKET_CSV = ROOT.parent / "shared" / "data" / "market" / "btc_perp_1m_2021-12-31_2022-02-01.csv"


def streaming_vs_vectorized(n: int) -> None:
    rng = np.random.default_rng(1)
    ts = T0 + 60.0 * np.arange(n) + rng.uniform(0.0, 1.0, n)  # one price a minute, jittered
    step_sd = 0.6 / math.sqrt(525_600)
    price = 40_000.0 * np.exp(np.cumsum(rng.normal(0.0, step_sd, n)))
    config = RollingVolConfig()
    ts_list, price_list = ts.tolist(), price.tolist()

    est = RollingVolatility(config)
    started = time.perf_counter()
    bars = [b for t, p in zip(ts_list, price_list) for b in est.update(t, p)]
    stream_s = time.perf_counter() - started

    est, detector = RollingVolatility(config), AnomalyDetector()
    started = time.perf_counter()
    anomalies = 0
    for t, p in zip(ts_list, price_list):
        for b in est.update(t, p):
            anomalies += len(detector.update(b))
    with_detector_s = time.perf_counter() - started

    started = time.perf_counter()
    vec = rolling_volatility(ts, price, config)
    vec_s = time.perf_counter() - started

    assert len(bars) == len(vec.bar_end_s), (len(bars), len(vec.bar_end_s))
    worst = 0.0  # relative, over the floating-point fields
    for i, name in enumerate(("bar_start_s", "bar_end_s", "close_usd", "log_return", "n_prices",
                              "n_returns", "vol_annual", "ewma_vol_annual", "ready")):
        ours = np.array([b[i] for b in bars], dtype=float)
        theirs = np.asarray(getattr(vec, name), dtype=float)
        both = np.isfinite(ours) & np.isfinite(theirs)
        assert np.array_equal(np.isnan(ours), np.isnan(theirs)), name
        if name in ("log_return", "vol_annual", "ewma_vol_annual"):  # math.log vs np.log: ulps
            worst = max(worst, float(np.max(np.abs(ours[both] - theirs[both]) / np.abs(theirs[both]).clip(1e-300))))
        else:
            np.testing.assert_array_equal(ours[both], theirs[both], err_msg=name)
    assert worst < 1e-9, worst
    print(f"streaming RollingVolatility, {n:,} one-minute prices ({len(bars):,} bars, 24 h window): "
          f"{stream_s:.2f} s = {stream_s / n * 1e6:.2f} µs/update; vectorized rolling_volatility "
          f"{vec_s:.3f} s (ratio streaming/vectorized {stream_s / vec_s:.0f}); same bars, largest "
          f"relative difference (returns, vols) {worst:.1e}")
    print(f"  with AnomalyDetector behind it: {with_detector_s:.2f} s = {with_detector_s / n * 1e6:.2f} "
          f"µs/update (ratio to the estimator alone {with_detector_s / stream_s:.2f}); {anomalies} "
          f"anomalies on a constant-volatility GBM; final 24 h vol {bars[-1].vol_annual:.3f} (true 0.600)")


def _simulate_garch_t(n: int, omega: float, alpha: float, beta: float, nu: float, rng) -> np.ndarray:
    z = rng.standard_t(nu, n) * math.sqrt((nu - 2.0) / nu)
    e = np.empty(n)
    s2 = omega / (1.0 - alpha - beta)
    for t in range(n):
        e[t] = math.sqrt(s2) * z[t]
        s2 = omega + alpha * e[t] ** 2 + beta * s2
    return e


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times)), result


def garch_vs_arch(repeats: int = 7) -> None:
    from arch import arch_model

    datasets = [("simulated GARCH-t, 2,500 returns (%)",
                 _simulate_garch_t(2_500, 0.05, 0.08, 0.90, 6.0, np.random.default_rng(2)))]
    if MARKET_CSV.is_file():
        import pandas as pd

        frame = pd.read_csv(MARKET_CSV)
        ts = ((pd.to_datetime(frame["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC"))
              / pd.Timedelta(seconds=1)).to_numpy()
        hourly = ohlc_bars(ts, 3_600.0, frame["close"].to_numpy(dtype=float))
        r = 100.0 * np.diff(np.log(hourly.close_usd))
        datasets.append((f"BTC perp hourly, {len(r)} returns (%)", r))
    else:
        print(f"(no {MARKET_CSV}: the real-data comparison is skipped)")
    for label, y in datasets:
        for mean in ("zero", "constant"):
            ours_s, ours = _median_time(lambda y=y, mean=mean: fit_garch_t(y, mean=mean), repeats)
            model = arch_model(y, mean="Zero" if mean == "zero" else "Constant", vol="GARCH", p=1, q=1,
                               dist="t", rescale=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                arch_s, res = _median_time(lambda model=model: model.fit(disp="off"), repeats)
            p = res.params
            d_params = max(abs(ours.alpha - p["alpha[1]"]), abs(ours.beta - p["beta[1]"]))
            print(f"GARCH(1,1)-t, {label}, mean={mean}: fit_garch_t {ours_s * 1e3:.1f} ms, arch "
                  f"{arch_s * 1e3:.1f} ms (ratio ours/arch {ours_s / arch_s:.2f}); |d alpha|,|d beta| "
                  f"<= {d_params:.1e}, d nu {ours.nu - p['nu']:+.1e}, d loglik "
                  f"{ours.loglik - res.loglikelihood:+.1e}")


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 525_600
    streaming_vs_vectorized(n)
    garch_vs_arch()
