"""Pricing hot paths: price + greeks in one pass, and implied volatility (Let's Be Rational).

1. Price + 4 greeks (delta, gamma, vega, theta; rho comes free) of N Black-Scholes options:
   ``models.pricing.bs_price_greeks`` (its compiled, vectorized loop; threads over the cores for
   large batches), the same on one core, and a plain numpy implementation written here (textbook
   formulas with ``scipy.special.ndtr``, no degenerate-input handling), same inputs, same run.
2. Implied volatility of N out-of-the-money options over the accuracy domain (1 hour to 2 years,
   5 % to 500 % vol, strikes up to 12 standard deviations out): ``black76_implied_vol`` on all N
   (threads over the cores for large batches), and the same compiled kernel on one core, against
   vollib's Let's Be Rational (pure Python) and ``scipy.optimize.brentq`` in a Python loop, each
   timed on a subset and scaled per option. Errors are against the input vols the prices were
   made from (so they include the rounding of the generated prices).

Times are the best of several runs after a warm-up (first touches of fresh memory are slow on
these VMs); the median is printed beside it.

    .venv/bin/python benchmarks/bench_pricing.py [N_OPTIONS] [N_LOOP_SUBSET]
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.pricing import (  # noqa: E402
    _OPTIONS_PER_THREAD,
    black76_implied_vol,
    black76_price,
    bs_price_greeks,
)

HOUR = 1.0 / (365.0 * 24.0)


def timed(fn, repeats: int) -> tuple[float, float, object]:
    fn()  # warm-up: compile caches, allocator
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times)), out


def one_core(fn, n: int) -> list:
    """``fn(lo, hi)`` over consecutive slices of ``_OPTIONS_PER_THREAD`` options: batches that
    small are not split over threads, so this is the compiled kernel on one core."""
    step = _OPTIONS_PER_THREAD
    return [fn(lo, min(lo + step, n)) for lo in range(0, n, step)]


def numpy_reference(S, K, T, r, sigma, call):
    """Textbook Black-Scholes price, delta, gamma, vega, theta in numpy."""
    sqrt_t = np.sqrt(T)
    stdev = sigma * sqrt_t
    d1 = (np.log(S / K) + (r + 0.5 * sigma * sigma) * T) / stdev
    d2 = d1 - stdev
    df = np.exp(-r * T)
    nd1, nd2 = ndtr(d1), ndtr(d2)
    pdf = np.exp(-0.5 * d1 * d1) / math.sqrt(2.0 * math.pi)
    call_price = S * nd1 - K * df * nd2
    price = np.where(call, call_price, call_price - S + K * df)
    delta = np.where(call, nd1, nd1 - 1.0)
    gamma = pdf / (S * stdev)
    vega = S * pdf * sqrt_t
    theta = -S * pdf * sigma / (2.0 * sqrt_t) - np.where(call, r * K * df * nd2,
                                                          -r * K * df * (1.0 - nd2))
    return price, delta, gamma, vega, theta


def greeks_bench(n: int, rng) -> list[tuple]:
    S = rng.uniform(50.0, 150.0, n)
    K = S * np.exp(rng.uniform(-0.5, 0.5, n))
    T = rng.uniform(0.01, 2.0, n)
    sigma = rng.uniform(0.1, 1.5, n)
    call = rng.random(n) < 0.5
    r = 0.03
    ours_best, ours_med, (price, g) = timed(lambda: bs_price_greeks(S, K, T, r, sigma, call), 7)
    one_best, one_med, _ = timed(lambda: one_core(
        lambda lo, hi: bs_price_greeks(S[lo:hi], K[lo:hi], T[lo:hi], r, sigma[lo:hi],
                                       call[lo:hi]), n), 7)
    ref_best, ref_med, ref = timed(lambda: numpy_reference(S, K, T, r, sigma, call), 7)
    diff = max(float(np.max(np.abs(a - b) / (1.0 + np.abs(b))))
               for a, b in zip((price, g.delta, g.gamma, g.vega, g.theta), ref))
    return [("price + 4 greeks", "ours, one pass", ours_best, ours_med, n, ours_best, None),
            ("", "ours, one core", one_best, one_med, n, ours_best, None),
            ("", "plain numpy reference", ref_best, ref_med, n, ours_best, diff)]


def black_scalar(F, K, T, sigma, call):
    """Undiscounted Black-76 for one option, with math.erfc (brentq's objective)."""
    stdev = sigma * math.sqrt(T)
    d1 = math.log(F / K) / stdev + 0.5 * stdev
    d2 = d1 - stdev
    if call:
        return F * 0.5 * math.erfc(-d1 / math.sqrt(2.0)) - K * 0.5 * math.erfc(-d2 / math.sqrt(2.0))
    return K * 0.5 * math.erfc(d2 / math.sqrt(2.0)) - F * 0.5 * math.erfc(d1 / math.sqrt(2.0))


def implied_vol_bench(n: int, n_loop: int, rng) -> list[tuple]:
    T = np.exp(rng.uniform(np.log(HOUR), np.log(2.0), n))
    sigma = np.exp(rng.uniform(np.log(0.05), np.log(5.0), n))
    z = rng.uniform(-12.0, 12.0, n)
    F = 100.0
    K = F * np.exp(z * sigma * np.sqrt(T))
    call = K >= F
    prices = black76_price(F, K, T, 0.0, sigma, call)
    best, med, ours = timed(lambda: black76_implied_vol(prices, F, K, T, 0.0, call), 5)
    ours_err = float(np.max(np.abs(ours - sigma)))
    rows = [("implied vol", "ours, Let's Be Rational", best, med, n, best, ours_err)]

    b1, m1, single = timed(lambda: np.concatenate(one_core(
        lambda lo, hi: black76_implied_vol(prices[lo:hi], F, K[lo:hi], T[lo:hi], 0.0,
                                           call[lo:hi]), n)), 3)
    rows.append(("", "ours, one core", b1, m1, n, best, float(np.max(np.abs(single - sigma)))))

    sub = rng.choice(n, n_loop, replace=False)
    rows.append(("", f"ours on the loops' {n_loop:,} only", None, None, n, best,
                 float(np.max(np.abs(ours[sub] - sigma[sub])))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from vollib.black.implied_volatility import implied_volatility as vollib_iv

    def vollib_loop():
        out = np.empty(n_loop)
        for j, i in enumerate(sub):
            try:
                out[j] = vollib_iv(prices[i], F, K[i], 0.0, T[i], "c" if call[i] else "p")
            except Exception:  # vollib raises where it cannot invert
                out[j] = np.nan
        return out

    def brentq_loop():
        out = np.empty(n_loop)
        for j, i in enumerate(sub):
            target, k, t, c = prices[i], K[i], T[i], call[i]
            try:
                out[j] = brentq(lambda v: black_scalar(F, k, t, v, c) - target, 1e-4, 20.0,
                                xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=200)
            except (ValueError, RuntimeError):
                out[j] = np.nan
        return out

    for label, fn in (("vollib loop (LBR, Python)", vollib_loop),
                      ("scipy brentq loop", brentq_loop)):
        b, m, vols = timed(fn, 1)
        err = np.abs(vols - sigma[sub])
        failed = int(np.isnan(vols).sum())
        err_text = float(np.nanmax(err)) if failed < n_loop else float("nan")
        rows.append(("", label + (f", {failed} failed" if failed else ""), b * n / n_loop,
                     m * n / n_loop, n, best, err_text))
    return rows


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    n_loop = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000
    rng = np.random.default_rng(2026)
    rows = greeks_bench(n, rng) + implied_vol_bench(n, n_loop, rng)
    print(f"{n:,} options (loops timed on {n_loop:,} and scaled to {n:,})")
    print(f"{'':18s}{'':30s}{'best':>10s}{'median':>10s}{'per option':>12s}"
          f"{'/ ours':>9s}{'max |err|':>11s}")
    for task, label, best, med, count, ours_best, err in rows:
        err_text = "" if err is None else f"{err:11.1e}"
        if best is None:  # an error figure only
            print(f"{task:18s}{label:30s}{'':50s}{err_text}")
            continue
        print(f"{task:18s}{label:30s}{best:9.3f}s{med:9.3f}s{best / count * 1e9:10.0f}ns"
              f"{best / ours_best:9.2f}{err_text}")
    print("/ ours: time over ours (the first row of each task). max |err|: for the greeks, the "
          "largest relative difference from ours; for implied vol, against the input vols.")


if __name__ == "__main__":
    main()
