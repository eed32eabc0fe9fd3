"""Monte Carlo path generation: paths per second for a one-year daily simulation (365 steps).

Figures: ``models.scenarios`` GBM (plain and antithetic), Merton jump-diffusion and the historical
bootstrap (i.i.d. and 10-day blocks), and ``models.correlation.correlated_gbm_paths`` for three
coins; each a full ``(n_paths, 366)`` float64 array.

References measured in the same run:

- numpy's raw normal generation, ``Generator.standard_normal((n_paths, 365))``: the floor for any
  generator that needs one normal per step;
- a naive numpy GBM, ``S0 * cumprod(1 + mu dt + sigma sqrt(dt) Z)`` (Euler steps, no chunking);
- a plain Python loop (``random.gauss`` and ``math.exp`` per step) on fewer paths.

Memory: the peak traced by ``tracemalloc`` (numpy reports its buffers to it) beside the size of
the result; the generators chunk their temporaries (about 4M numbers each), so the peak should stay
near the result's size, where the naive version holds several full-size temporaries.

    .venv/bin/python benchmarks/bench_monte_carlo.py [N_PATHS]
"""

from __future__ import annotations

import math
import random
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.correlation import correlated_gbm_paths  # noqa: E402
from models.jumps import MertonJumps  # noqa: E402
from models.scenarios import bootstrap_paths, gbm_paths, merton_paths  # noqa: E402

SPOT, VOL, DRIFT, YEARS, STEPS = 100_000.0, 0.6, 0.05, 1.0, 365
REPEATS = 3


def best_seconds(run) -> float:
    """The fastest of a few runs (the machine is shared, the minimum is the least disturbed)."""
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
        del result
    return min(times)


def peak_megabytes(run) -> float:
    tracemalloc.start()
    result = run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del result
    return peak / 1e6


def naive_numpy_gbm(n_paths: int, seed: int) -> np.ndarray:
    dt = YEARS / STEPS
    z = np.random.default_rng(seed).standard_normal((n_paths, STEPS))
    growth = 1.0 + DRIFT * dt + VOL * math.sqrt(dt) * z
    return SPOT * np.concatenate([np.ones((n_paths, 1)), np.cumprod(growth, axis=1)], axis=1)


def python_loop_gbm(n_paths: int, seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    dt = YEARS / STEPS
    drift, vol = (DRIFT - 0.5 * VOL * VOL) * dt, VOL * math.sqrt(dt)
    paths = []
    for _ in range(n_paths):
        price, path = SPOT, [SPOT]
        for _ in range(STEPS):
            price *= math.exp(drift + vol * rng.gauss(0.0, 1.0))
            path.append(price)
        paths.append(path)
    return paths


def main(n_paths: int) -> None:
    returns = np.random.default_rng(0).standard_t(4, 2_000) * 0.03 / math.sqrt(2.0)
    corr = np.array([[1.0, 0.8, 0.6], [0.8, 1.0, 0.7], [0.6, 0.7, 1.0]])
    result_mb = n_paths * (STEPS + 1) * 8 / 1e6
    cases = [
        ("GBM", lambda: gbm_paths(SPOT, VOL, YEARS, STEPS, n_paths, 1, drift_annual=DRIFT)),
        ("GBM antithetic", lambda: gbm_paths(SPOT, VOL, YEARS, STEPS, n_paths, 1,
                                             drift_annual=DRIFT, antithetic=True)),
        ("Merton (6 jumps/yr)", lambda: merton_paths(SPOT, VOL, MertonJumps(), YEARS, STEPS,
                                                     n_paths, 1, drift_annual=DRIFT)),
        ("bootstrap i.i.d.", lambda: bootstrap_paths(SPOT, returns, STEPS, n_paths, 1)),
        ("bootstrap 10-day blocks", lambda: bootstrap_paths(SPOT, returns, STEPS, n_paths, 1,
                                                            block_length=10)),
        ("correlated GBM, 3 coins", lambda: correlated_gbm_paths([SPOT, 3_500.0, 150.0],
                                                                  [0.6, 0.75, 1.1], corr, YEARS,
                                                                  STEPS, n_paths // 3, 1)),
    ]
    normals = best_seconds(lambda: np.random.default_rng(1).standard_normal((n_paths, STEPS)))
    naive = best_seconds(lambda: naive_numpy_gbm(n_paths, 1))
    loop_paths = max(50, n_paths // 200)
    loop = best_seconds(lambda: python_loop_gbm(loop_paths, 1)) / loop_paths * n_paths

    print(f"one-year daily paths ({STEPS} steps), {n_paths:,} paths per run, best of {REPEATS}; "
          f"result {result_mb:,.0f} MB")
    naive_peak = peak_megabytes(lambda: naive_numpy_gbm(n_paths, 1))
    print(f"references: numpy standard_normal {n_paths / normals:,.0f} paths/s; naive numpy "
          f"cumprod GBM {n_paths / naive:,.0f} paths/s (peak {naive_peak:,.0f} MB, "
          f"{naive_peak / result_mb:.2f} x result); Python loop {n_paths / loop:,.0f} paths/s "
          f"({loop_paths:,} paths)")
    print(f"{'generator':<26}{'paths/s':>12}{'/ normals':>11}{'/ naive':>9}{'/ loop':>9}"
          f"{'peak MB':>10}{'peak/result':>13}")
    for name, run in cases:
        seconds = best_seconds(run)
        # The correlated case makes n_paths // 3 paths of 3 coins: count coin-paths.
        count = n_paths // 3 * 3 if name.startswith("correlated") else n_paths
        rate = count / seconds
        peak = peak_megabytes(run)
        print(f"{name:<26}{rate:>12,.0f}{rate * normals / n_paths:>11.2f}"
              f"{rate * naive / n_paths:>9.2f}{rate * loop / n_paths:>9.0f}{peak:>10,.0f}"
              f"{peak / result_mb:>13.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
