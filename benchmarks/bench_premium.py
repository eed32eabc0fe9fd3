"""The premium calculator's throughput: vectorized grids against a per-quote loop, and the cache on a
realistic request stream.

1. Grid: every tier's markup x ``N_STRIKES`` strikes x ``N_EXPIRIES`` expiries off the SSVI surface,
   priced by one ``quote_grid`` call against a Python loop of ``quote_from_surface`` over the same
   cells (same run; the results are checked equal). Then ``price_tiers`` (what the graph's
   PremiumNode calls per surface and expiry) against a loop over the tiers.
2. Cache: an hour of quote requests (Poisson arrivals, tiers, expiries at 08:00 UTC, sizes) while
   spot follows a 60 %-vol random walk and the surface is refitted every minute with a slightly
   different ATM level; each request priced by ``PremiumCache.get_or_compute`` against
   ``quote_from_surface`` directly (same stream, same run): hit rate, speed-up, and what the
   cache's cells cost in price (the one-cent quoting tick alone is 140 bp of a 0.70 USD premium).

    .venv/bin/python benchmarks/bench_premium.py [N_REQUESTS]
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.option_chain import BTC_SURFACE, SurfaceParams, atm_vol, implied_vol_surface  # noqa: E402
from models.premium import (  # noqa: E402
    PremiumCache,
    PremiumConfig,
    price_tiers,
    quote_from_surface,
    quote_grid,
)

SPOT = 40_000.0
YEAR_S = 365.0 * 86_400.0
N_STRIKES, N_EXPIRIES = 25, 10


class SsviSurface:
    """models.option_chain's SSVI surface behind the premium calculator's surface interface."""

    def __init__(self, params: SurfaceParams = BTC_SURFACE) -> None:
        self.params = params

    def implied_vol(self, k, T):
        return implied_vol_surface(k, T, self.params)

    def atm_vol(self, T):
        return atm_vol(T, self.params)


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def grid() -> None:
    config = PremiumConfig()
    surface = SsviSurface()
    markups = np.array([t.markup_fraction for t in config.tiers])
    strikes = SPOT * np.linspace(0.6, 1.1, N_STRIKES)
    expiries = np.array([1, 2, 3, 7, 14, 30, 60, 90, 180, 365]) / 365.0
    n = markups.size * strikes.size * expiries.size

    def vectorized():
        return quote_grid(surface, SPOT, strikes[:, None, None], expiries[None, :, None], 1.0, 0.5,
                          markup_fraction=markups[None, None, :], config=config)

    def loop():
        return [quote_from_surface(surface, SPOT, K, T, 1.0, 0.5, config=config, tier=t.name)
                for K in strikes for T in expiries for t in config.tiers]

    grid_q = vectorized()
    loop_q = loop()
    diff = np.max(np.abs(grid_q.premium_usd.ravel() - np.array([q.premium_usd for q in loop_q])))
    t_vec = best_of(vectorized, 5)
    t_loop = best_of(loop, 2)
    print(f"grid of {n} quotes ({markups.size} tiers x {N_STRIKES} strikes x {N_EXPIRIES} expiries): "
          f"vectorized {n / t_vec:,.0f} quotes/s ({t_vec * 1e3:.1f} ms), per-quote loop "
          f"{n / t_loop:,.0f} quotes/s ({t_loop * 1e3:.0f} ms): speed-up x{t_loop / t_vec:.0f}; "
          f"largest premium difference {diff:.2e} USD")

    def tiers_vectorized():
        for T in expiries[:3]:
            price_tiers(surface, SPOT, T, 1.0, 0.5, config=config)

    def tiers_loop():
        for T in expiries[:3]:
            for t in config.tiers:
                quote_from_surface(surface, SPOT, SPOT * t.strike_fraction, T, 1.0, 0.5,
                                   config=config, tier=t.name)

    t_tiers = best_of(tiers_vectorized, 20) / 3
    t_tiers_loop = best_of(tiers_loop, 20) / 3
    print(f"price_tiers ({markups.size} tiers, one expiry): {t_tiers * 1e6:,.0f} µs; a loop over the "
          f"tiers {t_tiers_loop * 1e6:,.0f} µs (x{t_tiers_loop / t_tiers:.1f})")


def expiry_at(now_s: float, days: float) -> float:
    target = now_s + days * 86_400.0
    expiry = math.floor(target / 86_400.0) * 86_400.0 + 8 * 3_600.0
    return expiry if expiry >= target else expiry + 86_400.0


def request_stream(n: int, rng: np.random.Generator):
    """``n`` requests over an hour: (time, spot, surface, tier, expiry years, amount)."""
    t0 = 1_700_000_000.0
    times = np.sort(rng.uniform(0.0, 3_600.0, n))
    # Spot: a 60 % annual-vol random walk, one step per second.
    steps = rng.standard_normal(3_601) * 0.6 / math.sqrt(YEAR_S)
    spot_path = SPOT * np.exp(np.cumsum(steps))
    # A refit every minute: the short ATM vol wanders by ~0.2 vol points per refit.
    levels = 0.45 + np.cumsum(rng.normal(0.0, 0.002, 61))
    surfaces = [SsviSurface(SurfaceParams(atm_vol_short=float(v), atm_vol_long=0.60, tau_years=0.25,
                                          rho=-0.35)) for v in levels]
    tiers = rng.choice(3, n, p=[0.3, 0.5, 0.2])
    days = rng.choice([1.0, 7.0, 30.0, 90.0], n, p=[0.2, 0.4, 0.3, 0.1])
    amounts = rng.choice([0.1, 0.5, 1.0, 2.0, 5.0], n)
    for t, tier, d, amount in zip(times, tiers, days, amounts):
        now = t0 + t
        yield (float(spot_path[int(t)]), surfaces[int(t // 60)], int(tier),
               (expiry_at(now, d) - now) / YEAR_S, float(amount))


def cache(n: int) -> None:
    config = PremiumConfig()
    requests = list(request_stream(n, np.random.default_rng(5)))
    reference = 0.5
    cached = PremiumCache(maxsize=4096)

    t = time.perf_counter()
    got = []
    for spot, surface, tier, years, amount in requests:
        tier_ = config.tiers[tier]
        got.append(cached.get_or_compute(surface, spot, spot * tier_.strike_fraction, years, amount,
                                         reference, config=config, tier=tier_.name).premium_usd)
    t_cache = time.perf_counter() - t

    t = time.perf_counter()
    exact = []
    for spot, surface, tier, years, amount in requests:
        tier_ = config.tiers[tier]
        exact.append(quote_from_surface(surface, spot, spot * tier_.strike_fraction, years, amount,
                                        reference, config=config, tier=tier_.name).premium_usd)
    t_direct = time.perf_counter() - t

    got, exact = np.array(got), np.array(exact)
    rel = np.abs(got - exact) / exact
    print(f"cache, {n:,} requests over an hour (spot 60 % vol, refit every minute): hit rate "
          f"{cached.hit_rate:.1%} ({cached.misses:,} misses, {len(cached):,} entries); "
          f"{n / t_cache:,.0f} requests/s cached against {n / t_direct:,.0f}/s uncached: "
          f"speed-up x{t_direct / t_cache:.1f}")
    usd = np.abs(got - exact)
    print(f"  cost of the cells (1e-4 vol, 1 minute; tier strikes and spot exact): premium off by "
          f"median {np.median(rel) * 1e4:.1f} bp, p99 {np.percentile(rel, 99) * 1e4:.1f} bp of the exact "
          f"quote (median {np.median(usd):.2f} USD, max {usd.max():.2f} USD on premiums of median "
          f"{np.median(exact):,.0f} USD)")


if __name__ == "__main__":
    n_requests = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    grid()
    cache(n_requests)
