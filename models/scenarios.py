"""Monte Carlo price scenarios, stress tests, VaR/ES and the protection outcome simulator.

Plans: 000 PF-203/204/205 (simulation engine, scenario generation, outcome calculator), PF-301
(edge scenarios), PF-302 (market risk scenarios), PF-306 (chart data); 002 (VaR, stress tests,
Monte Carlo).

Everything here is pure. Randomness comes only from the ``rng`` argument: a
``numpy.random.Generator`` or an integer seed (never numpy's global state, never OS entropy).

Conventions:

- prices in USD (any one quote currency works), volatility an annualized fraction (0.55), times
  in years (``seconds / (365 * 86400)``), rates continuously compounded annual fractions;
- a path array has shape ``(n_paths, n_steps + 1)``: column 0 is the starting spot, column ``k``
  the price ``k * horizon_years / n_steps`` years later;
- P&L is positive for a gain. VaR and ES are reported as LOSSES: positive numbers mean money
  lost (a VaR of 1,000 USD at 99 % means the P&L falls below -1,000 USD with probability 1 %).

Sections: path generators (GBM, Merton, bootstrap, the ``simulate_paths`` dispatcher, Monte Carlo
European price); books and full revaluation; stress scenarios; VaR and ES; the put-policy
outcome simulator and chart data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy.special import ndtri, pdtr

from models.jumps import MertonJumps
from models.pricing import bs_price, norm_pdf

__all__ = [
    "SECONDS_PER_YEAR", "GbmModel", "MertonModel", "BootstrapModel", "McPrice",
    "as_generator", "log_returns", "gbm_paths", "merton_paths", "bootstrap_paths",
    "simulate_paths", "iter_path_chunks", "shock_paths", "terminal_prices", "mc_european_price",
    "merton_terminal_moments",
    "OptionLeg", "Book", "book_value_usd",
    "StressScenario", "StressResult", "STANDARD_SCENARIOS", "stress_test",
    "RiskEstimate", "historical_var_es", "normal_var_es", "cornish_fisher_var_es",
    "var_es", "monte_carlo_var_es",
    "PutPolicy", "PolicyOutcome", "policy_premium_usd", "simulate_policy_outcome",
    "percentile_fan", "histogram_data", "outcome_chart_data",
]

SECONDS_PER_YEAR = 365.0 * 86400.0

# Temporaries of the path generators hold at most this many float64 per chunk (~32 MB each),
# so a million 365-step paths never allocate a second copy of the (2.9 GB) result.
_CHUNK_ELEMENTS = 4_000_000


# =========================================================================== path generators


def as_generator(rng: np.random.Generator | int) -> np.random.Generator:
    """``rng`` itself if it is a Generator, ``numpy.random.default_rng(rng)`` for an int seed.

    ``None`` is refused on purpose: a path set must be reproducible from its arguments.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"a seed must be >= 0, got {rng}")
        return np.random.default_rng(int(rng))
    raise ValueError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def _children(rng: np.random.Generator, n: int) -> list[np.random.Generator]:
    """``n`` independent generators seeded from ``rng``: one per random stream, so a stream is
    consumed in path order whatever the chunking (the paths do not depend on ``chunk_paths``)."""
    seeds = rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)
    return [np.random.default_rng(int(s)) for s in seeds]


def log_returns(close_usd: np.ndarray) -> np.ndarray:
    """``log(close[i] / close[i-1])`` for a 1-d price series of positive numbers."""
    close = np.asarray(close_usd, dtype=np.float64)
    if close.ndim != 1 or close.size < 2:
        raise ValueError("close_usd must be a 1-d array of at least 2 prices")
    if not np.all(np.isfinite(close) & (close > 0.0)):
        raise ValueError("close_usd must hold finite prices > 0")
    return np.diff(np.log(close))


def _check_grid(spot_usd: float, horizon_years: float, n_steps: int, n_paths: int) -> None:
    if not (math.isfinite(spot_usd) and spot_usd > 0.0):
        raise ValueError(f"spot_usd must be a finite price > 0, got {spot_usd!r}")
    if not (math.isfinite(horizon_years) and horizon_years >= 0.0):
        raise ValueError(f"horizon_years must be finite and >= 0, got {horizon_years!r}")
    if int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
    if int(n_paths) != n_paths or n_paths < 1:
        raise ValueError(f"n_paths must be an integer >= 1, got {n_paths!r}")


def _check_vol_drift(vol_annual: float, drift_annual: float) -> None:
    if not (math.isfinite(vol_annual) and vol_annual >= 0.0):
        raise ValueError(f"vol_annual must be finite and >= 0 (0.55, not 55), got {vol_annual!r}")
    if not math.isfinite(drift_annual):
        raise ValueError(f"drift_annual must be finite, got {drift_annual!r}")


def _chunk_rows(n_steps: int, chunk_paths: int | None) -> int:
    if chunk_paths is None:
        return max(1, _CHUNK_ELEMENTS // max(n_steps, 1))
    if int(chunk_paths) != chunk_paths or chunk_paths < 1:
        raise ValueError(f"chunk_paths must be an integer >= 1, got {chunk_paths!r}")
    return int(chunk_paths)


def _fill_from_increments(out: np.ndarray, rows: slice, increments: np.ndarray,
                          spot_usd: float) -> None:
    """``out[rows, 0] = spot``; ``out[rows, 1:] = spot * exp(cumsum(increments))`` in place."""
    block = out[rows]
    block[:, 0] = spot_usd
    np.cumsum(increments, axis=1, out=block[:, 1:])
    np.exp(block[:, 1:], out=block[:, 1:])
    block[:, 1:] *= spot_usd


def _increment_blocks(model: GbmModel | MertonModel | BootstrapModel, horizon_years: float,
                      n_steps: int, n_paths: int, gen: np.random.Generator,
                      rows: int) -> Iterator[np.ndarray]:
    """Log-price increments ``(block rows, n_steps)`` for consecutive blocks of at most ``rows``
    paths. Each random stream is consumed in path order, so the concatenated blocks do not depend
    on ``rows`` (chunked generation equals unchunked, and ``iter_path_chunks`` equals
    ``simulate_paths``). Antithetic pairing is left to the caller."""
    if isinstance(model, GbmModel):
        dt = horizon_years / n_steps
        drift_step = (model.drift_annual - 0.5 * model.vol_annual**2) * dt
        vol_step = model.vol_annual * math.sqrt(dt)
        for start in range(0, n_paths, rows):
            increments = gen.standard_normal((min(rows, n_paths - start), n_steps))
            increments *= vol_step
            increments += drift_step
            yield increments
            del increments  # before the next block is drawn: one block alive at a time
    elif isinstance(model, MertonModel):
        jumps = model.jumps
        # Three streams (diffusion, jump counts, jump sizes): drawing them from one generator
        # would interleave them by block and make the paths depend on the block size.
        diffusion_rng, count_rng, size_rng = _children(gen, 3)
        dt = horizon_years / n_steps
        compensator = jumps.intensity_per_year * jumps.kappa if model.compensated else 0.0
        drift_step = (model.drift_annual - 0.5 * model.vol_annual**2 - compensator) * dt
        vol_step = model.vol_annual * math.sqrt(dt)
        jumps_per_step = jumps.intensity_per_year * dt
        if jumps_per_step > 0.0:
            # Jump counts by inverting the Poisson CDF: one uniform per step, and only the rare
            # steps with a jump (u >= P(N = 0)) are looked up in the table. About 7x cheaper than
            # Generator.poisson at a few jumps a year with daily steps. The table stops where the
            # tail is below 1e-20 (the count there is capped, far beyond any sample size).
            k_max = int(math.ceil(jumps_per_step + 12.0 * math.sqrt(jumps_per_step) + 25.0))
            cdf_table = pdtr(np.arange(k_max + 1), jumps_per_step)  # Poisson CDF
            no_jump = float(cdf_table[0])
        for start in range(0, n_paths, rows):
            shape = (min(rows, n_paths - start), n_steps)
            increments = diffusion_rng.standard_normal(shape)
            increments *= vol_step
            increments += drift_step
            if jumps_per_step > 0.0:
                u = count_rng.random(shape).reshape(-1)
                where = np.flatnonzero(u >= no_jump)
                n = np.searchsorted(cdf_table, u[where], side="right").astype(np.float64)
                del u
                # A sum of n normal log-jumps is one normal with n times the mean and variance.
                sizes = jumps.mean_log_jump * n + jumps.vol_log_jump * np.sqrt(n) * \
                    size_rng.standard_normal(where.size)
                flat = increments.reshape(-1)  # a view: increments is C-contiguous
                flat[where] += sizes
                del where, n, sizes, flat
            yield increments
            del increments
    elif isinstance(model, BootstrapModel):
        returns = model.log_returns_per_step
        if model.demean:
            returns = returns - returns.mean()
        n_src, block_length = returns.size, int(model.block_length)
        n_blocks = -(-n_steps // block_length)
        offsets = np.arange(block_length)
        for start in range(0, n_paths, rows):
            count = min(rows, n_paths - start)
            if block_length == 1:
                index = gen.integers(0, n_src, (count, n_steps))
            else:
                starts = gen.integers(0, n_src, (count, n_blocks))
                index = starts[:, :, None] + offsets
                np.remainder(index, n_src, out=index)
                index = index.reshape(count, -1)[:, :n_steps]
            increments = returns[index]
            del index
            yield increments
            del increments
    else:
        raise ValueError(f"unknown model type {type(model).__name__}")


def _paths_from_blocks(blocks: Iterator[np.ndarray], spot_usd: float, n_steps: int,
                       n_paths: int) -> np.ndarray:
    out = np.empty((n_paths, n_steps + 1))
    start = 0
    for increments in blocks:
        stop = start + increments.shape[0]
        _fill_from_increments(out, slice(start, stop), increments, spot_usd)
        start = stop
        del increments  # before the generator draws the next block
    return out


def gbm_paths(spot_usd: float, vol_annual: float, horizon_years: float, n_steps: int,
              n_paths: int, rng: np.random.Generator | int, *, drift_annual: float = 0.0,
              antithetic: bool = False, chunk_paths: int | None = None) -> np.ndarray:
    """Geometric Brownian motion with exact log-normal steps, shape ``(n_paths, n_steps + 1)``.

    ``dS/S = drift_annual dt + vol_annual dW``: each step adds
    ``(drift - vol^2/2) dt + vol sqrt(dt) Z`` to the log price, so ``E[S_T] = S_0 exp(drift T)``
    at any step size. ``drift_annual`` is the real-world drift, or the rate ``r`` for pricing.

    ``antithetic=True`` (``n_paths`` even) pairs row ``i`` with row ``i + n_paths // 2``, which
    uses the negated normals; average the pair before computing a standard error.

    ``chunk_paths`` bounds the temporaries (default: about 4M numbers per chunk). The result does
    not depend on it: the normals are drawn in path order.
    """
    _check_grid(spot_usd, horizon_years, n_steps, n_paths)
    model = GbmModel(vol_annual, drift_annual)
    if antithetic and n_paths % 2:
        raise ValueError(f"antithetic paths come in pairs: n_paths must be even, got {n_paths}")
    gen = as_generator(rng)
    rows = _chunk_rows(n_steps, chunk_paths)
    if not antithetic:
        return _paths_from_blocks(_increment_blocks(model, horizon_years, n_steps, n_paths, gen,
                                                    rows), spot_usd, n_steps, n_paths)
    base = n_paths // 2
    twice_drift_step = 2.0 * (drift_annual - 0.5 * vol_annual**2) * (horizon_years / n_steps)
    out = np.empty((n_paths, n_steps + 1))
    start = 0
    for increments in _increment_blocks(model, horizon_years, n_steps, base, gen, rows):
        stop = start + increments.shape[0]
        _fill_from_increments(out, slice(start, stop), increments, spot_usd)
        # drift - vol sqrt(dt) Z = 2 drift - (drift + vol sqrt(dt) Z): the mirrored step.
        np.subtract(twice_drift_step, increments, out=increments)
        _fill_from_increments(out, slice(base + start, base + stop), increments, spot_usd)
        start = stop
        del increments
    return out


def merton_paths(spot_usd: float, vol_annual: float, jumps: MertonJumps, horizon_years: float,
                 n_steps: int, n_paths: int, rng: np.random.Generator | int, *,
                 drift_annual: float = 0.0, compensated: bool = True,
                 chunk_paths: int | None = None) -> np.ndarray:
    """Merton jump-diffusion paths, shape ``(n_paths, n_steps + 1)``, exact at any step size.

    Each step adds ``(drift - vol^2/2 - c) dt + vol sqrt(dt) Z + mean_log_jump n +
    vol_log_jump sqrt(n) Z'`` to the log price, with ``n ~ Poisson(intensity dt)`` jumps (drawn
    by inverting the Poisson CDF; a sum of ``n`` normal log-jumps is normal).
    ``compensated=True`` sets ``c = intensity * kappa`` so that ``E[S_T] = S_0 exp(drift T)``
    (the pricing measure with ``drift = r``); ``compensated=False`` sets ``c = 0`` and the jumps
    move the mean: ``E[S_T] = S_0 exp((drift + intensity kappa) T)``.

    The three random streams (diffusion, jump counts, jump sizes) come from three generators
    seeded from ``rng``, so the paths do not depend on ``chunk_paths``.
    """
    _check_grid(spot_usd, horizon_years, n_steps, n_paths)
    if not isinstance(jumps, MertonJumps):
        raise ValueError(f"jumps must be a MertonJumps, got {type(jumps).__name__}")
    model = MertonModel(vol_annual, jumps, drift_annual, compensated)
    blocks = _increment_blocks(model, horizon_years, n_steps, n_paths, as_generator(rng),
                               _chunk_rows(n_steps, chunk_paths))
    return _paths_from_blocks(blocks, spot_usd, n_steps, n_paths)


def merton_terminal_moments(spot_usd: float, vol_annual: float, jumps: MertonJumps,
                            horizon_years: float, *, drift_annual: float = 0.0,
                            compensated: bool = True) -> tuple[float, float]:
    """Closed-form mean and variance of ``S_T`` under ``merton_paths`` (GBM when the jump
    intensity is 0): ``E[S_T^k] = S_0^k exp(k a T + k^2 vol^2 T / 2 + intensity T (E[e^{kJ}] - 1))``
    with ``a`` the log drift and ``E[e^{kJ}] = exp(k mean_log_jump + k^2 vol_log_jump^2 / 2)``."""
    lam, mu_j, sd_j = jumps.intensity_per_year, jumps.mean_log_jump, jumps.vol_log_jump
    compensator = lam * jumps.kappa if compensated else 0.0
    a = drift_annual - 0.5 * vol_annual**2 - compensator
    T = horizon_years

    def raw(k: int) -> float:
        return spot_usd**k * math.exp(k * a * T + 0.5 * k * k * vol_annual**2 * T
                                      + lam * T * math.expm1(k * mu_j + 0.5 * k * k * sd_j**2))

    mean = raw(1)
    return mean, raw(2) - mean * mean


def bootstrap_paths(spot_usd: float, log_returns_per_step: np.ndarray, n_steps: int,
                    n_paths: int, rng: np.random.Generator | int, *, block_length: int = 1,
                    demean: bool = False, chunk_paths: int | None = None) -> np.ndarray:
    """Historical bootstrap: paths built from resampled log returns, ``(n_paths, n_steps + 1)``.

    Each step is one return of ``log_returns_per_step`` (so a step lasts as long as one interval of
    the source series). ``block_length == 1`` draws returns i.i.d. with replacement; a longer block
    draws circular blocks of that many consecutive returns (block starts uniform over the series,
    wrapping around its end, so every return is equally likely and short-range dependence such as
    volatility clustering survives inside a block). ``demean=True`` subtracts the sample mean first
    (removes the historical drift).
    """
    _check_grid(spot_usd, 0.0, n_steps, n_paths)
    model = BootstrapModel(log_returns_per_step, block_length, demean)
    blocks = _increment_blocks(model, 0.0, n_steps, n_paths, as_generator(rng),
                               _chunk_rows(n_steps, chunk_paths))
    return _paths_from_blocks(blocks, spot_usd, n_steps, n_paths)


def terminal_prices(values, name: str = "terminal_spot_usd") -> np.ndarray:
    """One price per path as a 1-d float array. A 2-d array is accepted only with one column:
    a whole path set ``(n_paths, n_steps + 1)`` raises instead of being flattened into a sample
    of every step (pass ``paths[:, -1]``)."""
    prices = np.asarray(values, dtype=np.float64)
    if prices.ndim == 2 and prices.shape[1] == 1:
        prices = prices[:, 0]
    if prices.ndim != 1:
        raise ValueError(f"{name} must hold one price per path (e.g. paths[:, -1]), got shape "
                         f"{prices.shape}")
    return prices


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")


@dataclass(frozen=True)
class GbmModel:
    """Geometric Brownian motion: ``vol_annual`` (fraction), ``drift_annual`` (continuously
    compounded; the rate for risk-neutral paths); ``antithetic`` pairs paths (see ``gbm_paths``)."""

    vol_annual: float
    drift_annual: float = 0.0
    antithetic: bool = False

    def __post_init__(self) -> None:
        _check_vol_drift(self.vol_annual, self.drift_annual)


@dataclass(frozen=True)
class MertonModel:
    """Merton jump-diffusion: diffusion ``vol_annual``, ``jumps`` shared with the premium
    calculator, ``drift_annual``; ``compensated`` keeps ``E[S_T] = S_0 exp(drift T)``."""

    vol_annual: float
    jumps: MertonJumps = field(default_factory=MertonJumps)
    drift_annual: float = 0.0
    compensated: bool = True

    def __post_init__(self) -> None:
        _check_vol_drift(self.vol_annual, self.drift_annual)


@dataclass(frozen=True, eq=False)
class BootstrapModel:
    """Historical bootstrap of ``log_returns_per_step`` (kept as a read-only copy);
    ``block_length`` 1 for i.i.d., more for circular blocks; ``demean`` removes the sample drift.
    One step is one interval of the source series: ``simulate_paths`` ignores ``horizon_years``
    for this model (the horizon is ``n_steps`` source intervals)."""

    log_returns_per_step: np.ndarray
    block_length: int = 1
    demean: bool = False

    def __post_init__(self) -> None:
        returns = np.array(self.log_returns_per_step, dtype=np.float64)
        if returns.ndim != 1 or returns.size < 1 or not np.all(np.isfinite(returns)):
            raise ValueError("log_returns_per_step must be a non-empty 1-d array of finite numbers")
        if int(self.block_length) != self.block_length or self.block_length < 1:
            raise ValueError(f"block_length must be an integer >= 1, got {self.block_length!r}")
        returns.setflags(write=False)
        object.__setattr__(self, "log_returns_per_step", returns)


def simulate_paths(model: GbmModel | MertonModel | BootstrapModel, spot_usd: float,
                   horizon_years: float, n_steps: int, n_paths: int,
                   rng: np.random.Generator | int, *, chunk_paths: int | None = None) -> np.ndarray:
    """Scenario generation (PF-204): paths ``(n_paths, n_steps + 1)`` from any of the models."""
    if isinstance(model, GbmModel):
        return gbm_paths(spot_usd, model.vol_annual, horizon_years, n_steps, n_paths, rng,
                         drift_annual=model.drift_annual, antithetic=model.antithetic,
                         chunk_paths=chunk_paths)
    if isinstance(model, MertonModel):
        return merton_paths(spot_usd, model.vol_annual, model.jumps, horizon_years, n_steps,
                            n_paths, rng, drift_annual=model.drift_annual,
                            compensated=model.compensated, chunk_paths=chunk_paths)
    if isinstance(model, BootstrapModel):
        return bootstrap_paths(spot_usd, model.log_returns_per_step, n_steps, n_paths, rng,
                               block_length=model.block_length, demean=model.demean,
                               chunk_paths=chunk_paths)
    raise ValueError(f"unknown model type {type(model).__name__}")


def iter_path_chunks(model: GbmModel | MertonModel | BootstrapModel, spot_usd: float,
                     horizon_years: float, n_steps: int, n_paths: int,
                     rng: np.random.Generator | int, chunk_paths: int) -> Iterator[np.ndarray]:
    """The scenario set of ``simulate_paths(model, ..., n_paths, rng)``, yielded ``chunk_paths``
    paths at a time, for statistics over more paths than fit in memory: the chunks stacked equal
    the one-shot array for the same seed. The exception is an antithetic ``GbmModel``: each chunk
    then holds its own pairs (first half, mirrored second half), so ``chunk_paths`` must be even.

    The arguments are checked when this is called, not at the first ``next()``.
    """
    if int(chunk_paths) != chunk_paths or chunk_paths < 1:
        raise ValueError(f"chunk_paths must be an integer >= 1, got {chunk_paths!r}")
    _check_grid(spot_usd, horizon_years, n_steps, n_paths)
    if not isinstance(model, (GbmModel, MertonModel, BootstrapModel)):
        raise ValueError(f"unknown model type {type(model).__name__}")
    antithetic = isinstance(model, GbmModel) and model.antithetic
    if antithetic and (chunk_paths % 2 or n_paths % 2):
        raise ValueError("an antithetic model needs even n_paths and chunk_paths, got "
                         f"{n_paths} and {chunk_paths}")
    gen = as_generator(rng)
    chunk_paths = int(chunk_paths)
    if antithetic:
        return (gbm_paths(spot_usd, model.vol_annual, horizon_years, n_steps,
                          min(chunk_paths, n_paths - start), gen,
                          drift_annual=model.drift_annual, antithetic=True)
                for start in range(0, n_paths, chunk_paths))
    blocks = _increment_blocks(model, horizon_years, n_steps, n_paths, gen, chunk_paths)
    return (_paths_from_blocks(iter((increments,)), spot_usd, n_steps, increments.shape[0])
            for increments in blocks)


def shock_paths(paths: np.ndarray, at_step: int, spot_shock: float) -> np.ndarray:
    """Edge scenario (PF-301): a copy of ``paths`` where every price from column ``at_step`` on
    is multiplied by ``1 + spot_shock`` (-0.3 = a 30 % crash at that step, kept afterwards)."""
    out = np.array(paths, dtype=np.float64)
    if out.ndim != 2:
        raise ValueError(f"paths must be 2-d (n_paths, n_steps + 1), got shape {out.shape}")
    if int(at_step) != at_step or not 0 <= at_step < out.shape[1]:
        raise ValueError(f"at_step must be a column index in [0, {out.shape[1]}), got {at_step!r}")
    if not (math.isfinite(spot_shock) and spot_shock > -1.0):
        raise ValueError(f"spot_shock must be > -1 (a relative move), got {spot_shock!r}")
    out[:, int(at_step):] *= 1.0 + spot_shock
    return out


class McPrice(NamedTuple):
    """A Monte Carlo price and its standard error (same unit), over ``n_samples`` independent
    samples (pairs, for antithetic paths)."""

    price: float
    stderr: float
    n_samples: int


def mc_european_price(terminal_spot_usd: np.ndarray, strike_usd: float, expiry_years: float,
                      rate_annual: float, call: bool, *, antithetic: bool = False) -> McPrice:
    """Discounted mean payoff of a European option over risk-neutral terminal prices.

    ``terminal_spot_usd`` must come from paths with ``drift_annual = rate_annual``. With
    ``antithetic=True`` the first and second halves are pairs (as ``gbm_paths`` lays them out) and
    the standard error is that of the pair means.
    """
    spots = terminal_prices(terminal_spot_usd)
    if spots.size < 2:
        raise ValueError("need at least 2 terminal prices")
    _positive("strike_usd", strike_usd)
    if not (math.isfinite(expiry_years) and expiry_years >= 0.0):
        raise ValueError(f"expiry_years must be finite and >= 0, got {expiry_years!r}")
    if not math.isfinite(rate_annual):
        raise ValueError(f"rate_annual must be finite, got {rate_annual!r}")
    payoff = np.maximum(spots - strike_usd, 0.0) if call else np.maximum(strike_usd - spots, 0.0)
    if antithetic:
        if spots.size % 2:
            raise ValueError("antithetic samples come in pairs: need an even count")
        half = spots.size // 2
        payoff = 0.5 * (payoff[:half] + payoff[half:])
    discount = math.exp(-rate_annual * expiry_years)
    return McPrice(discount * float(payoff.mean()),
                   discount * float(payoff.std(ddof=1)) / math.sqrt(payoff.size), payoff.size)


# =========================================================================== books


@dataclass(frozen=True)
class OptionLeg:
    """One European option position: ``quantity_coin`` signed (negative = sold), on one coin
    each; ``expiry_years`` from now; ``vol_annual`` the implied volatility it is marked at."""

    quantity_coin: float
    strike_usd: float
    expiry_years: float
    call: bool
    vol_annual: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.quantity_coin):
            raise ValueError(f"quantity_coin must be finite, got {self.quantity_coin!r}")
        _positive("strike_usd", self.strike_usd)
        if not (math.isfinite(self.expiry_years) and self.expiry_years >= 0.0):
            raise ValueError(f"expiry_years must be finite and >= 0, got {self.expiry_years!r}")
        _check_vol_drift(self.vol_annual, 0.0)


@dataclass(frozen=True)
class Book:
    """A book of option legs on one underlying plus ``spot_coin`` coins held (negative = short)."""

    legs: tuple[OptionLeg, ...] = ()
    spot_coin: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "legs", tuple(self.legs))
        if not all(isinstance(leg, OptionLeg) for leg in self.legs):
            raise ValueError("legs must be OptionLeg instances")
        if not math.isfinite(self.spot_coin):
            raise ValueError(f"spot_coin must be finite, got {self.spot_coin!r}")


def book_value_usd(book: Book, spot_usd, *, elapsed_years: float = 0.0,
                   vol_multiplier: float = 1.0, vol_shift: float = 0.0,
                   rate_annual: float = 0.0) -> np.ndarray:
    """Full revaluation of ``book`` at ``spot_usd`` (any shape; the result has that shape).

    ``elapsed_years`` ages every leg (a leg past expiry is worth its intrinsic value, as
    ``bs_price`` gives at ``T = 0``); each leg's vol becomes
    ``max(vol * vol_multiplier + vol_shift, 0)``.
    """
    spot = np.asarray(spot_usd, dtype=np.float64)
    if not np.all(np.isfinite(spot) & (spot >= 0.0)):
        raise ValueError("spot_usd must be finite and >= 0")
    if not (math.isfinite(elapsed_years) and elapsed_years >= 0.0):
        raise ValueError(f"elapsed_years must be finite and >= 0, got {elapsed_years!r}")
    if not (math.isfinite(vol_multiplier) and vol_multiplier >= 0.0):
        raise ValueError(f"vol_multiplier must be finite and >= 0, got {vol_multiplier!r}")
    if not (math.isfinite(vol_shift) and math.isfinite(rate_annual)):
        raise ValueError(f"vol_shift and rate_annual must be finite, got {vol_shift!r}, "
                         f"{rate_annual!r}")
    value = book.spot_coin * spot
    if not book.legs:
        return value
    qty = np.array([leg.quantity_coin for leg in book.legs])
    strike = np.array([leg.strike_usd for leg in book.legs])
    remaining = np.maximum(np.array([leg.expiry_years for leg in book.legs]) - elapsed_years, 0.0)
    vol = np.maximum(np.array([leg.vol_annual for leg in book.legs]) * vol_multiplier + vol_shift,
                     0.0)
    call = np.array([leg.call for leg in book.legs])
    prices = bs_price(spot[..., None], strike, remaining, rate_annual, vol, call)
    return value + prices @ qty


# =========================================================================== stress scenarios


@dataclass(frozen=True)
class StressScenario:
    """A named deterministic shock path (PF-301/302).

    Each point ``i`` says: ``horizons_years[i]`` after now the spot has moved by
    ``spot_shocks[i]`` (relative: -0.3 = down 30 %) and every implied vol is
    ``vol * vol_multipliers[i] + vol_shifts[i]``. A one-point scenario is a plain shock; several
    points describe a path (a crash and its recovery) whose worst point matters as well as its
    end. Horizons must be non-decreasing.
    """

    name: str
    spot_shocks: tuple[float, ...]
    vol_multipliers: tuple[float, ...]
    horizons_years: tuple[float, ...]
    vol_shifts: tuple[float, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        for attr in ("spot_shocks", "vol_multipliers", "horizons_years", "vol_shifts"):
            object.__setattr__(self, attr, tuple(float(v) for v in getattr(self, attr)))
        n = len(self.spot_shocks)
        if not self.vol_shifts:
            object.__setattr__(self, "vol_shifts", (0.0,) * n)
        if n == 0 or not (len(self.vol_multipliers) == len(self.horizons_years)
                          == len(self.vol_shifts) == n):
            raise ValueError(f"scenario {self.name!r}: spot_shocks, vol_multipliers, "
                             "horizons_years (and vol_shifts if given) need one value per point")
        if not all(math.isfinite(s) and s > -1.0 for s in self.spot_shocks):
            raise ValueError(f"scenario {self.name!r}: spot shocks must be > -1")
        if not all(math.isfinite(m) and m >= 0.0 for m in self.vol_multipliers):
            raise ValueError(f"scenario {self.name!r}: vol multipliers must be >= 0")
        if not all(math.isfinite(v) for v in self.vol_shifts):
            raise ValueError(f"scenario {self.name!r}: vol shifts must be finite")
        h = self.horizons_years
        if not all(math.isfinite(x) and x >= 0.0 for x in h) or any(b < a for a, b in zip(h, h[1:])):
            raise ValueError(f"scenario {self.name!r}: horizons must be >= 0 and non-decreasing")

    @classmethod
    def single(cls, name: str, spot_shock: float, vol_multiplier: float = 1.0,
               horizon_years: float = 0.0, vol_shift: float = 0.0,
               description: str = "") -> StressScenario:
        """A one-point scenario."""
        return cls(name, (spot_shock,), (vol_multiplier,), (horizon_years,), (vol_shift,),
                   description)


_DAY = 1.0 / 365.0
_HOUR = _DAY / 24.0

# Historical scenarios are stylized from BTC's daily closes and intraday lows (rounded; the
# implied-vol multipliers are judgement, not measurements: BTC implied vol roughly doubled to
# tripled in both episodes).
STANDARD_SCENARIOS: tuple[StressScenario, ...] = (
    StressScenario.single("btc_-10pct_1d", -0.10, 1.3, _DAY, description="a bad day"),
    StressScenario.single("btc_-30pct_1d", -0.30, 2.0, _DAY, description="a crash day"),
    StressScenario.single("btc_-50pct_1w", -0.50, 2.0, 7 * _DAY,
                          description="-50 % over a week"),
    StressScenario.single("btc_+30pct_1d", 0.30, 1.5, _DAY, description="a squeeze up"),
    StressScenario.single("vol_spike_x2", 0.0, 2.0, 0.0, description="implied vol doubles"),
    StressScenario.single("vol_crush_x0.5", 0.0, 0.5, 0.0, description="implied vol halves"),
    StressScenario("flash_crash_recovery", (-0.25, -0.05), (2.5, 1.3), (_HOUR, _DAY),
                   description="-25 % within an hour, back to -5 % by the end of the day"),
    StressScenario("march_2020", (-0.39, -0.50, -0.30), (2.5, 3.0, 2.0),
                   (_DAY, 2 * _DAY, 7 * _DAY),
                   description="12-13 March 2020: about -39 % on the 12th, an intraday low "
                               "about -50 % from the 11th, partial rebound within the week"),
    StressScenario("may_2021", (-0.30, -0.35, -0.40), (2.0, 2.0, 1.8),
                   (_DAY, 7 * _DAY, 10 * _DAY),
                   description="19 May 2021: about -30 % intraday; about -35 % over the week "
                               "and -40 % from the 12 May level by the 22nd"),
)


class StressResult(NamedTuple):
    """P&L of a book under one scenario, USD (gain positive): at the scenario's end and at its
    worst point; ``spot_end_usd`` the spot at the end."""

    name: str
    pnl_usd: float
    worst_pnl_usd: float
    spot_end_usd: float


def stress_test(book: Book, spot_usd: float, scenarios: Sequence[StressScenario] = STANDARD_SCENARIOS,
                *, rate_annual: float = 0.0) -> list[StressResult]:
    """Full revaluation of ``book`` under each scenario against its value now (PF-302)."""
    _positive("spot_usd", spot_usd)
    base = float(book_value_usd(book, spot_usd, rate_annual=rate_annual))
    results = []
    for scenario in scenarios:
        pnls = [float(book_value_usd(book, spot_usd * (1.0 + shock), elapsed_years=horizon,
                                     vol_multiplier=mult, vol_shift=shift,
                                     rate_annual=rate_annual)) - base
                for shock, mult, horizon, shift in zip(scenario.spot_shocks,
                                                       scenario.vol_multipliers,
                                                       scenario.horizons_years,
                                                       scenario.vol_shifts)]
        results.append(StressResult(scenario.name, pnls[-1], min(pnls),
                                    spot_usd * (1.0 + scenario.spot_shocks[-1])))
    return results


# =========================================================================== VaR and ES


class RiskEstimate(NamedTuple):
    """Value at risk and expected shortfall as LOSSES (positive = money lost), same unit as the
    P&L; ``confidence`` e.g. 0.99; ``method`` how they were computed."""

    var: float
    es: float
    confidence: float
    method: str


def _check_confidence(confidence: float) -> None:
    if not (isinstance(confidence, (int, float, np.floating)) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.99, got {confidence!r}")


def _pnl_sample(pnl) -> np.ndarray:
    values = np.asarray(pnl, dtype=np.float64).ravel()
    if values.size < 2:
        raise ValueError("need at least 2 P&L values")
    if not np.all(np.isfinite(values)):
        raise ValueError("P&L values must be finite")
    return values


def historical_var_es(pnl, confidence: float) -> RiskEstimate:
    """Empirical VaR and ES of a P&L sample (historical or simulated).

    With losses ``L = -pnl`` sorted ascending ``l_1 <= ... <= l_n`` and ``m = n (1 - confidence)``:
    VaR is the empirical ``confidence``-quantile ``l_k``, ``k = ceil(n confidence)`` (the
    inverted CDF); ES is the Acerbi-Tasche tail mean, the average of the worst ``m`` losses with
    the boundary loss counted fractionally: ``(sum of the floor(m) largest + (m - floor m) VaR) / m``.
    E.g. 100 values at 95 %: VaR is the 6th-largest loss, ES the mean of the 5 largest.
    """
    _check_confidence(confidence)
    losses = np.sort(-_pnl_sample(pnl))
    n = losses.size
    tail = n * (1.0 - confidence)
    whole = int(math.floor(tail + 1e-9))  # 1e-9 absorbs n * 0.05 = 4.999999...
    var = float(losses[n - whole - 1]) if whole < n else float(losses[0])
    frac = max(tail - whole, 0.0)
    top = float(losses[n - whole:].sum()) if whole else 0.0
    es = (top + frac * var) / tail if tail > 0.0 else var
    return RiskEstimate(var, float(es), float(confidence), "historical")


def normal_var_es(mean_pnl: float, stdev_pnl: float, confidence: float) -> RiskEstimate:
    """Parametric normal: ``VaR = z stdev - mean``, ``ES = stdev phi(z) / (1 - confidence) - mean``
    with ``z = Phi^-1(confidence)``."""
    _check_confidence(confidence)
    if not (math.isfinite(stdev_pnl) and stdev_pnl >= 0.0 and math.isfinite(mean_pnl)):
        raise ValueError(f"need a finite mean and a stdev >= 0, got {mean_pnl!r}, {stdev_pnl!r}")
    z = float(ndtri(confidence))
    return RiskEstimate(z * stdev_pnl - mean_pnl,
                        stdev_pnl * float(norm_pdf(z)) / (1.0 - confidence) - mean_pnl,
                        float(confidence), "normal")


def cornish_fisher_var_es(mean_pnl: float, stdev_pnl: float, skew_pnl: float,
                          excess_kurtosis: float, confidence: float) -> RiskEstimate:
    """Cornish-Fisher (modified) VaR and its ES, from the P&L's first four moments.

    Work on losses ``L = -pnl`` (skew ``s = -skew_pnl``, same excess kurtosis ``k``). The loss
    quantile is ``mean_L + stdev q(z)``, ``q(z) = z + (z^2 - 1) s/6 + (z^3 - 3z) k/24 -
    (2z^3 - 5z) s^2/36``. ES is the tail mean of that quantile function,
    ``(1/(1-c)) int_c^1 VaR_u du``, which in ``z`` has the closed form
    ``mean_L + stdev phi(z)/(1-c) [1 + s z/6 + k (z^2-1)/24 - s^2 (2z^2-1)/36]``. Both reduce to
    the normal ones at ``s = k = 0``. The expansion is only a distribution while ``q`` is
    increasing (roughly ``|s| < 1``, ``0 <= k < 6``); outside that it is an approximation.
    """
    _check_confidence(confidence)
    for name, v in (("mean_pnl", mean_pnl), ("skew_pnl", skew_pnl),
                    ("excess_kurtosis", excess_kurtosis)):
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v!r}")
    if not (math.isfinite(stdev_pnl) and stdev_pnl >= 0.0):
        raise ValueError(f"stdev_pnl must be finite and >= 0, got {stdev_pnl!r}")
    s, k = -skew_pnl, excess_kurtosis
    z = float(ndtri(confidence))
    q = z + (z * z - 1.0) * s / 6.0 + (z**3 - 3.0 * z) * k / 24.0 - (2.0 * z**3 - 5.0 * z) * s * s / 36.0
    tail = 1.0 + s * z / 6.0 + k * (z * z - 1.0) / 24.0 - s * s * (2.0 * z * z - 1.0) / 36.0
    es = -mean_pnl + stdev_pnl * float(norm_pdf(z)) / (1.0 - confidence) * tail
    return RiskEstimate(-mean_pnl + stdev_pnl * q, es, float(confidence), "cornish_fisher")


def var_es(pnl, confidence: float, method: str = "historical") -> RiskEstimate:
    """VaR and ES of a P&L sample by ``method``: ``"historical"`` (empirical; use it on simulated
    P&L for Monte Carlo VaR), ``"normal"`` (sample mean and stdev, ddof=1) or
    ``"cornish_fisher"`` (plus sample skew and excess kurtosis, moment estimators)."""
    values = _pnl_sample(pnl)
    if method == "historical":
        return historical_var_es(values, confidence)
    mean, stdev = float(values.mean()), float(values.std(ddof=1))
    if method == "normal":
        return normal_var_es(mean, stdev, confidence)
    if method == "cornish_fisher":
        centred = values - mean
        m2 = float(np.mean(centred**2))
        if m2 == 0.0:
            return cornish_fisher_var_es(mean, 0.0, 0.0, 0.0, confidence)
        skew = float(np.mean(centred**3)) / m2**1.5
        kurt = float(np.mean(centred**4)) / m2**2 - 3.0
        return cornish_fisher_var_es(mean, stdev, skew, kurt, confidence)
    raise ValueError(f"method must be 'historical', 'normal' or 'cornish_fisher', got {method!r}")


def monte_carlo_var_es(book: Book, spot_usd: float, horizon_spot_usd: np.ndarray,
                       horizon_years: float, confidence: float, *, rate_annual: float = 0.0,
                       vol_multiplier: float = 1.0) -> RiskEstimate:
    """Monte Carlo VaR and ES of ``book`` over ``horizon_years``: full revaluation at each
    simulated spot (e.g. ``paths[:, -1]`` of paths spanning the horizon), P&L against the value
    now, then the empirical estimator of ``historical_var_es``."""
    _positive("spot_usd", spot_usd)
    base = float(book_value_usd(book, spot_usd, rate_annual=rate_annual))
    values = book_value_usd(book, terminal_prices(horizon_spot_usd, "horizon_spot_usd"),
                            elapsed_years=horizon_years, vol_multiplier=vol_multiplier,
                            rate_annual=rate_annual)
    estimate = historical_var_es(values - base, confidence)
    return estimate._replace(method="monte_carlo")


# =========================================================================== outcome simulator

DEFAULT_PERCENTILES = (1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0)


@dataclass(frozen=True)
class PutPolicy:
    """A protection policy: the buyer may sell ``amount_coin`` coins at ``strike_usd`` at expiry
    (a European put); ``premium_usd`` is the whole premium paid at sale (for all coins)."""

    amount_coin: float
    strike_usd: float
    expiry_years: float
    premium_usd: float

    def __post_init__(self) -> None:
        _positive("amount_coin", self.amount_coin)
        _positive("strike_usd", self.strike_usd)
        _positive("expiry_years", self.expiry_years)
        if not (math.isfinite(self.premium_usd) and self.premium_usd >= 0.0):
            raise ValueError(f"premium_usd must be finite and >= 0, got {self.premium_usd!r}")


def policy_premium_usd(amount_coin: float, spot_usd: float, strike_usd: float,
                       expiry_years: float, vol_annual: float, rate_annual: float = 0.0) -> float:
    """Black-Scholes put premium for ``amount_coin`` coins (no loading), USD."""
    return amount_coin * float(bs_price(spot_usd, strike_usd, expiry_years, rate_annual,
                                        vol_annual, False))


@dataclass(frozen=True)
class PolicyOutcome:
    """Distribution of a put policy's outcome over simulated paths (PF-205); USD unless said.

    ``payoff_usd``, ``buyer_pnl_usd`` (payoff - premium) and ``seller_pnl_usd`` (premium -
    payoff) hold one value per path; the summary numbers are over paths.
    ``protected_value_usd`` is the buyer's coins plus the payoff at expiry, less the premium.
    ``probability_touch`` is the share of paths whose price reached the strike at any step.
    """

    premium_usd: float
    payoff_usd: np.ndarray
    buyer_pnl_usd: np.ndarray
    seller_pnl_usd: np.ndarray
    protected_value_usd: np.ndarray
    unprotected_value_usd: np.ndarray
    probability_exercise: float
    probability_touch: float
    expected_payoff_usd: float
    expected_payoff_stderr_usd: float
    percentiles: tuple[float, ...]
    payoff_percentiles_usd: np.ndarray
    buyer_pnl_percentiles_usd: np.ndarray
    seller_pnl_percentiles_usd: np.ndarray
    seller_risk: RiskEstimate


def simulate_policy_outcome(policy: PutPolicy, paths: np.ndarray, *, confidence: float = 0.99,
                            percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> PolicyOutcome:
    """Outcome of ``policy`` over ``paths`` ``(n_paths, n_steps + 1)`` that end at its expiry
    (column 0 the spot at sale, the last column the settlement price). No discounting: premium and
    payoff are compared as cash amounts (the horizons are days to months)."""
    prices = np.asarray(paths, dtype=np.float64)
    if prices.ndim != 2 or prices.shape[0] < 2 or prices.shape[1] < 2:
        raise ValueError(f"paths must be 2-d with >= 2 paths and >= 2 columns, got {prices.shape}")
    if not np.all(np.isfinite(prices) & (prices >= 0.0)):
        raise ValueError("paths must hold finite prices >= 0")
    pct = tuple(float(p) for p in percentiles)
    if not pct or not all(0.0 <= p <= 100.0 for p in pct):
        raise ValueError(f"percentiles must be in [0, 100], got {percentiles!r}")
    terminal = prices[:, -1]
    payoff = policy.amount_coin * np.maximum(policy.strike_usd - terminal, 0.0)
    buyer = payoff - policy.premium_usd
    seller = -buyer
    unprotected = policy.amount_coin * terminal
    return PolicyOutcome(
        premium_usd=policy.premium_usd,
        payoff_usd=payoff,
        buyer_pnl_usd=buyer,
        seller_pnl_usd=seller,
        protected_value_usd=unprotected + buyer,
        unprotected_value_usd=unprotected,
        probability_exercise=float(np.mean(payoff > 0.0)),
        probability_touch=float(np.mean(prices.min(axis=1) <= policy.strike_usd)),
        expected_payoff_usd=float(payoff.mean()),
        expected_payoff_stderr_usd=float(payoff.std(ddof=1) / math.sqrt(payoff.size)),
        percentiles=pct,
        payoff_percentiles_usd=np.percentile(payoff, pct),
        buyer_pnl_percentiles_usd=np.percentile(buyer, pct),
        seller_pnl_percentiles_usd=np.percentile(seller, pct),
        seller_risk=historical_var_es(seller, confidence),
    )


def percentile_fan(paths: np.ndarray, horizon_years: float,
                   percentiles: Sequence[float] = (5.0, 25.0, 50.0, 75.0, 95.0)) -> dict:
    """Chart data (PF-306): percentiles of the price at every step.

    Returns ``{"time_years": (n_steps + 1,), "percentiles": (p,), "price_usd": (p, n_steps + 1)}``.
    """
    prices = np.asarray(paths, dtype=np.float64)
    if prices.ndim != 2 or prices.shape[1] < 2:
        raise ValueError(f"paths must be 2-d (n_paths, n_steps + 1), got shape {prices.shape}")
    pct = np.asarray(percentiles, dtype=np.float64)
    if pct.ndim != 1 or pct.size == 0 or np.any((pct < 0) | (pct > 100)):
        raise ValueError(f"percentiles must be a 1-d list in [0, 100], got {percentiles!r}")
    return {"time_years": np.linspace(0.0, horizon_years, prices.shape[1]),
            "percentiles": pct, "price_usd": np.percentile(prices, pct, axis=0)}


def histogram_data(values, bins: int = 50, value_range: tuple[float, float] | None = None) -> dict:
    """Chart data (PF-306): ``{"edges": (bins + 1,), "counts": (bins,), "share": (bins,)}``;
    ``share`` is counts / number of values (so it sums to 1 when the range covers them all)."""
    data = np.asarray(values, dtype=np.float64).ravel()
    if data.size == 0 or not np.all(np.isfinite(data)):
        raise ValueError("values must be a non-empty array of finite numbers")
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be an integer >= 1, got {bins!r}")
    counts, edges = np.histogram(data, bins=int(bins), range=value_range)
    return {"edges": edges, "counts": counts, "share": counts / data.size}


def outcome_chart_data(outcome: PolicyOutcome, paths: np.ndarray, horizon_years: float,
                       bins: int = 50) -> dict:
    """Everything a scenario chart needs, as plain arrays and numbers (PF-306): the price fan,
    histograms of the buyer's and seller's P&L and of the payoff, and the summary figures."""
    return {
        "fan": percentile_fan(paths, horizon_years),
        "buyer_pnl_histogram": histogram_data(outcome.buyer_pnl_usd, bins),
        "seller_pnl_histogram": histogram_data(outcome.seller_pnl_usd, bins),
        "payoff_histogram": histogram_data(outcome.payoff_usd, bins),
        "summary": {
            "premium_usd": outcome.premium_usd,
            "probability_exercise": outcome.probability_exercise,
            "probability_touch": outcome.probability_touch,
            "expected_payoff_usd": outcome.expected_payoff_usd,
            "seller_var_usd": outcome.seller_risk.var,
            "seller_es_usd": outcome.seller_risk.es,
            "confidence": outcome.seller_risk.confidence,
            "percentiles": np.asarray(outcome.percentiles),
            "buyer_pnl_percentiles_usd": outcome.buyer_pnl_percentiles_usd,
            "seller_pnl_percentiles_usd": outcome.seller_pnl_percentiles_usd,
        },
    }
