"""A seeded market model: geometric Brownian motion with Merton (log-normal) jumps.

The exchange simulator (``dataflows/simulator.py``) moves its mid prices with this model; research
code can draw whole paths at once. Everything here is pure: randomness comes only from the
``numpy.random.Generator`` the caller passes in, and time only from the ``dt_s`` the caller passes in.

Model, with ``t`` in years (``seconds / SECONDS_PER_YEAR``, a 365-day year)::

    dS/S = (mu - lambda*kappa) dt + sigma dW + (e^Y - 1) dN
    N ~ Poisson(lambda),  Y ~ Normal(jump_mean, jump_std^2),  kappa = E[e^Y - 1]

The ``- lambda*kappa`` compensator makes the jumps a martingale, so ``E[S_t] = S_0 exp(mu t)``
whatever the jump settings. Over a step of length ``dt`` the exact log increment is::

    (mu - sigma^2/2 - lambda*kappa) dt + sigma sqrt(dt) Z + jump_mean*n + jump_std*sqrt(n) Z'

with ``n ~ Poisson(lambda dt)`` and ``Z, Z'`` standard normal (a sum of ``n`` independent normal
log-jumps is itself normal), so there is no discretisation error at any step size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SECONDS_PER_YEAR = 365.0 * 24.0 * 3600.0


@dataclass(frozen=True)
class GbmJumpParams:
    """Parameters of one simulated market.

    Attributes:
        spot_usd: starting mid price (USD or a USD-like quote currency), > 0.
        vol_annual: diffusion volatility, annualized fraction (0.55 = 55 %/sqrt(year)), >= 0.
        drift_annual: expected return mu, annualized and continuously compounded:
            ``E[S_t] = S_0 exp(mu t)``.
        jump_intensity_per_year: Poisson rate lambda of jumps, per year, >= 0.
        jump_mean: mean of the log jump size Y (-0.01 = jumps of about -1 % on average).
        jump_std: standard deviation of the log jump size, >= 0.
        half_spread_bps: half the quoted bid/ask spread in basis points of the mid, >= 0.
    """

    spot_usd: float
    vol_annual: float
    drift_annual: float = 0.0
    jump_intensity_per_year: float = 20.0
    jump_mean: float = -0.01
    jump_std: float = 0.03
    half_spread_bps: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.spot_usd) and self.spot_usd > 0.0):
            raise ValueError(f"spot_usd must be a positive number, got {self.spot_usd!r}")
        for name in ("vol_annual", "jump_intensity_per_year", "jump_std", "half_spread_bps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        for name in ("drift_annual", "jump_mean"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")

    @property
    def jump_compensator(self) -> float:
        """kappa = E[e^Y - 1], the mean relative jump size."""
        return math.expm1(self.jump_mean + 0.5 * self.jump_std**2)


def log_increments(
    params: GbmJumpParams, dt_s: float, shape: int | tuple[int, ...], rng: np.random.Generator
) -> np.ndarray:
    """Independent log-price increments ``log(S_{t+dt} / S_t)`` over steps of ``dt_s`` seconds.

    This is the single place the model's math lives; ``simulate_path``, ``simulate_paths`` and
    ``GbmJumpPath`` all draw through it. Returns float64 of the given ``shape``.
    """
    if not (math.isfinite(dt_s) and dt_s >= 0.0):
        raise ValueError(f"dt_s must be finite and >= 0, got {dt_s!r}")
    dt = dt_s / SECONDS_PER_YEAR
    sigma = params.vol_annual
    lam = params.jump_intensity_per_year
    drift = (params.drift_annual - 0.5 * sigma * sigma - lam * params.jump_compensator) * dt
    z = rng.standard_normal(shape)
    increments = drift + sigma * math.sqrt(dt) * z
    if lam > 0.0:
        # Number of jumps in each step, then their summed log size in closed form.
        n = rng.poisson(lam * dt, shape)
        z_jump = rng.standard_normal(shape)
        increments += params.jump_mean * n + params.jump_std * np.sqrt(n) * z_jump
    return increments


def simulate_paths(
    params: GbmJumpParams, dt_s: float, n_steps: int, n_paths: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_paths`` independent price paths, shape ``(n_paths, n_steps)``, float64.

    Column ``k`` is the price ``(k + 1) * dt_s`` seconds after the start; the starting price
    ``params.spot_usd`` itself is not included.
    """
    if n_steps < 0 or n_paths < 0:
        raise ValueError("n_steps and n_paths must be >= 0")
    steps = log_increments(params, dt_s, (n_paths, n_steps), rng)
    return params.spot_usd * np.exp(np.cumsum(steps, axis=1))


def simulate_path(
    params: GbmJumpParams, dt_s: float, n_steps: int, rng: np.random.Generator
) -> np.ndarray:
    """One price path: ``n_steps`` prices (float64) at ``dt_s``, ``2 dt_s``, ... seconds after
    the start (the starting price ``params.spot_usd`` is not included)."""
    if n_steps < 0:
        raise ValueError("n_steps must be >= 0")
    steps = log_increments(params, dt_s, n_steps, rng)
    return params.spot_usd * np.exp(np.cumsum(steps))


def bid_ask(mid: float | np.ndarray, half_spread_bps: float) -> tuple:
    """Bid and ask around ``mid``: ``mid * (1 -/+ half_spread_bps / 10_000)``."""
    half = half_spread_bps * 1e-4
    return mid * (1.0 - half), mid * (1.0 + half)


class GbmJumpPath:
    """A streaming path: holds the current mid and advances it one step at a time.

    Draws from the same distribution as ``simulate_path`` (both go through ``log_increments``);
    the steps may have different lengths. The generator is owned by the path from then on: share
    it with nothing else if the sequence of prices must be reproducible.
    """

    def __init__(self, params: GbmJumpParams, rng: np.random.Generator) -> None:
        self.params = params
        self._rng = rng
        # Accumulate in log space: repeated multiplication and log-sum agree, but the log form
        # keeps the path exactly the exponential of a sum of increments.
        self._log_price = math.log(params.spot_usd)

    @property
    def price(self) -> float:
        """Current mid price (same unit as ``params.spot_usd``)."""
        return math.exp(self._log_price)

    def step(self, dt_s: float) -> float:
        """Advance the mid by ``dt_s`` seconds and return the new mid."""
        self._log_price += float(log_increments(self.params, dt_s, 1, self._rng)[0])
        return self.price


# --------------------------------------------------------------------------- mean reversion


def ou_step(x: float | np.ndarray, mean: float, half_life_s: float, stdev: float, dt_s: float,
            z: float | np.ndarray) -> float | np.ndarray:
    """One exact step of an Ornstein-Uhlenbeck process over ``dt_s`` seconds.

    ``stdev`` is the *stationary* standard deviation and ``half_life_s`` the time for the expected
    distance to ``mean`` to halve, so ``x_{t+dt} = mean + (x_t - mean) a + stdev sqrt(1 - a^2) z``
    with ``a = 2^(-dt / half_life)`` and ``z`` standard normal: exact at any step size, and
    stationary when started from Normal(mean, stdev^2).
    """
    if not (math.isfinite(dt_s) and dt_s >= 0.0):
        raise ValueError(f"dt_s must be finite and >= 0, got {dt_s!r}")
    if not half_life_s > 0.0:
        raise ValueError(f"half_life_s must be > 0, got {half_life_s!r}")
    a = 2.0 ** (-dt_s / half_life_s)
    return mean + (x - mean) * a + stdev * math.sqrt(max(0.0, 1.0 - a * a)) * z


@dataclass(frozen=True)
class OUParams:
    """A mean-reverting quantity: long-run ``mean``, stationary ``stdev``, ``half_life_s``."""

    mean: float
    stdev: float
    half_life_s: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.stdev) and self.stdev >= 0.0):
            raise ValueError(f"mean must be finite and stdev finite and >= 0, got {self!r}")
        if not (math.isfinite(self.half_life_s) and self.half_life_s > 0.0):
            raise ValueError(f"half_life_s must be finite and > 0, got {self.half_life_s!r}")


class OUProcess:
    """A streaming Ornstein-Uhlenbeck path; starts from a draw of its stationary law (or
    ``start``). Owns its generator, like ``GbmJumpPath``."""

    def __init__(self, params: OUParams, rng: np.random.Generator,
                 start: float | None = None) -> None:
        self.params = params
        self._rng = rng
        self.value = (float(start) if start is not None
                      else params.mean + params.stdev * float(rng.standard_normal()))

    def step(self, dt_s: float) -> float:
        p = self.params
        self.value = float(ou_step(self.value, p.mean, p.half_life_s, p.stdev, dt_s,
                                   float(self._rng.standard_normal())))
        return self.value


# --------------------------------------------------------------------------- perpetuals

FUNDING_INTERVAL_S = 8 * 3600.0


def next_funding_ts(now_ts: float, interval_s: float = FUNDING_INTERVAL_S) -> float:
    """The next funding time strictly after ``now_ts`` (epoch s): 00:00, 08:00, 16:00 UTC for the
    usual 8-hour interval (multiples of ``interval_s`` since the epoch)."""
    return (math.floor(now_ts / interval_s) + 1.0) * interval_s


@dataclass(frozen=True)
class PerpParams:
    """A perpetual swap against its index.

    Attributes:
        funding: the funding rate per ``FUNDING_INTERVAL_S`` (8 h) as a fraction: mean ~1e-4
            (1 bp per 8 h, longs pay), a stationary stdev that lets it go negative, and a slow
            half-life.
        premium: the mark's premium over the index *beyond* the funding rate, as a fraction
            (mark = index * (1 + funding + premium)); fast and small.
    """

    funding: OUParams = OUParams(mean=1e-4, stdev=1.5e-4, half_life_s=2 * 3600.0)
    premium: OUParams = OUParams(mean=0.0, stdev=1e-4, half_life_s=60.0)


class PerpetualModel:
    """Funding rate and mark premium of one perpetual; ``mark(index)`` prices it.

    Pure: the generator is passed in (and owned from then on), time only as ``dt_s``.
    """

    def __init__(self, params: PerpParams, rng: np.random.Generator) -> None:
        self.params = params
        funding_rng, premium_rng = rng.spawn(2)
        self._funding = OUProcess(params.funding, funding_rng)
        self._premium = OUProcess(params.premium, premium_rng)

    @property
    def funding_rate(self) -> float:
        """Current funding rate per 8 h, fraction (can be negative)."""
        return self._funding.value

    @property
    def premium(self) -> float:
        """Mark premium over the index, fraction: funding rate plus a fast noise term."""
        return self._funding.value + self._premium.value

    def mark(self, index: float) -> float:
        return index * (1.0 + self.premium)

    def step(self, dt_s: float) -> None:
        self._funding.step(dt_s)
        self._premium.step(dt_s)
