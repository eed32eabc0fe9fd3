"""The volatility-surface fit (models.surface): a full simulator chain, every method.

The chain: the simulator's BTC listing (models.option_chain, SSVI surface ``BTC_SURFACE``) with
``STRIKES_PER_EXPIRY`` strikes per expiry, quoted (Deribit ticks: bids and asks rounded outwards
from the mark +/- a half spread), through ``OptionBook.snapshot`` - so the fitted vols are
hedgeflow's own implied vols of the mid prices, not the surface's exact marks - out-of-the-money
side only, as the graph fits it.

For each method, the median wall time of ``fit_surface`` over REPEATS runs, its RMSE against the
mid vols beside the chain's median bid-ask spread in vol, the fraction of fits inside the
spread, and ``check_arbitrage`` on |k| <= 1.5. References measured in the same run:

* the implied vols of the chain (``models.deribit.implied_vol_from_coin`` of the mid, bid and
  ask premiums: the work the snapshot does before any fit);
* a naive fit: scipy ``least_squares`` of an unconstrained raw SVI per expiry (5 parameters,
  same spread weights, no arbitrage constraints), with its own arbitrage check.

    .venv/bin/python benchmarks/bench_surface.py [STRIKES_PER_EXPIRY] [REPEATS]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scipy.optimize import least_squares  # noqa: E402

from models.deribit import implied_vol_from_coin  # noqa: E402
from models.option_book import OptionBook  # noqa: E402
from models.option_chain import BTC_SURFACE, atm_vol, build_chain, quote_chain  # noqa: E402
from models.records import OptionTickerBatch  # noqa: E402
from models.surface import (  # noqa: E402
    METHODS, SurfaceFitConfig, check_arbitrage, fit_surface, svi_g, svi_total_variance)

NOW = 1_795_000_000.0
SPOT = 95_000.0
K_GRID = np.linspace(-1.5, 1.5, 121)


def snapshot(strikes_per_expiry: int):
    """The chain as ``OptionBook.snapshot`` gives it to the graph's refit."""
    spec = build_chain("BTC", SPOT, NOW, BTC_SURFACE, strikes_per_expiry=strikes_per_expiry)
    q = quote_chain(spec, SPOT, NOW, BTC_SURFACE)
    n = len(spec)
    nan = np.full(n, np.nan)
    batch = OptionTickerBatch.from_columns(
        exchange=["deribit"] * n, instrument=list(spec.names), asset=["BTC"] * n,
        event_ts=np.full(n, NOW), receive_ts=np.full(n, NOW), expiry_utc=spec.expiry_ts,
        strike_usd=spec.strike, is_call=spec.is_call,
        bid_coin=np.where(q.bid_coin > 0, q.bid_coin, np.nan), bid_size=nan, ask_coin=q.ask_coin,
        ask_size=nan, mark_coin=q.mark_coin, mark_iv=q.mark_iv, bid_iv=q.bid_iv, ask_iv=q.ask_iv,
        underlying_usd=q.forward, index_usd=np.full(n, SPOT), open_interest=nan, delta=q.delta,
        gamma=q.gamma, vega=q.vega, theta=q.theta, rho=q.rho, raw=[""] * n,
    )
    book = OptionBook()
    book.update(batch)
    return book.snapshot("BTC", NOW), q, spec


def median_time(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), result


def naive_svi(snap, spread):
    """Unconstrained raw SVI per expiry by scipy least_squares: (time, rmse, min g, calendar
    violations on K_GRID)."""
    k_all = np.log(snap.strike_usd / snap.forward_usd)
    years = np.unique(snap.expiry_years)
    params, errors = [], []
    for T in years:
        sel = snap.expiry_years == T
        k, vol, inv = k_all[sel], snap.mid_vol[sel], 1.0 / spread[sel]
        theta = float(np.interp(0.0, k, vol * vol * T))

        def residuals(p):
            w = svi_total_variance(k, *p)
            return (np.sqrt(np.maximum(w, 1e-12) / T) - vol) * inv

        root = np.sqrt(theta)
        res = least_squares(residuals, [0.5 * theta, 0.5 * root, 0.0, 0.0, root], method="trf",
                            bounds=([-np.inf, 0.0, -0.999, -np.inf, 1e-4],
                                    [np.inf, np.inf, 0.999, np.inf, np.inf]))
        params.append(res.x)
        errors.append(res.fun / inv)
    err = np.concatenate(errors)
    g = np.array([svi_g(K_GRID, *p) for p in params])
    w = np.array([svi_total_variance(K_GRID, *p) for p in params])
    return float(np.sqrt(np.mean(err * err))), float(np.nanmin(g)), int(np.sum(w[:-1] > w[1:]))


def main(strikes_per_expiry: int, repeats: int) -> None:
    snap, _, spec = snapshot(strikes_per_expiry)
    n = len(snap)
    both = np.isfinite(snap.bid_vol) & np.isfinite(snap.ask_vol)
    spread = np.where(both, snap.ask_vol - snap.bid_vol, 0.05)
    median_spread = float(np.median(snap.ask_vol[both] - snap.bid_vol[both]))
    print(f"chain: {len(spec)} listed BTC options, {n} out of the money in {snap.n_expiries} "
          f"expiries; median bid-ask spread {median_spread * 100:.2f} vol points "
          f"({both.sum()} options with both sides)")

    def implied_vols():
        from models.deribit import coin_premium

        for vol in (snap.mid_vol, snap.bid_vol, snap.ask_vol):
            price = coin_premium(snap.forward_usd, snap.strike_usd, snap.expiry_years,
                               np.nan_to_num(vol, nan=0.5), snap.is_call)
            implied_vol_from_coin(price, snap.forward_usd, snap.strike_usd, snap.expiry_years,
                                  snap.is_call)

    t_iv, _ = median_time(implied_vols, repeats)
    t_naive, (rmse_naive, g_naive, cal_naive) = median_time(lambda: naive_svi(snap, spread), repeats)
    print(f"reference: implied vols of the chain (mid, bid, ask) {t_iv * 1e3:.1f} ms; naive "
          f"unconstrained per-expiry SVI (scipy least_squares) {t_naive * 1e3:.1f} ms, RMSE "
          f"{rmse_naive * 100:.3f} vol pts, min g {g_naive:.3f}, calendar violations {cal_naive}")
    print()
    print(f"{'method':<7} {'fit ms':>8} {'x IVs':>7} {'x naive':>8} {'RMSE vp':>8} "
          f"{'in spread':>9} {'ATM err vp':>10} {'arb ok':>6} {'min g':>7}")
    for method in METHODS:
        config = SurfaceFitConfig(method=method)
        t, fit = median_time(lambda: fit_surface(  # noqa: B023 - called at once
            snap.strike_usd, snap.expiry_years, snap.forward_usd, snap.mid_vol, snap.bid_vol,
            snap.ask_vol, config=config), repeats)
        report = check_arbitrage(fit, K_GRID)
        atm_err = np.max(np.abs(fit.atm_vol(fit.expiry_years) - atm_vol(fit.expiry_years, BTC_SURFACE)))
        print(f"{method:<7} {t * 1e3:8.1f} {t / t_iv:7.1f} {t / t_naive:8.2f} "
              f"{fit.rmse_vol * 100:8.3f} {fit.within_spread_fraction:9.3f} {atm_err * 100:10.3f} "
              f"{str(report.ok):>6} {report.min_g:7.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 64, int(sys.argv[2]) if len(sys.argv) > 2 else 5)
