"""European option prices and greeks: Black-Scholes on spot and Black-76 on the forward.

Pure and vectorized: every function takes numpy arrays or scalars (broadcast against each other,
``call`` included) and returns float64 arrays of the broadcast shape, or numpy scalars when every
input is a scalar. The normal CDF is ``scipy.special.ndtr`` (DESIGN.md, "Facts measured": price and
four greeks for 1M options in ~0.06 s).

Conventions (DESIGN.md principle 6):

- ``S`` spot and ``F`` forward in USD (or any one currency), ``K`` strike in the same unit;
- ``T`` time to expiry in years (``seconds / (365 * 86400)`` elsewhere in hedgeflow);
- ``r`` the continuously compounded risk-free rate, annual fraction (0.05 = 5 %);
- ``sigma`` the annualized volatility as a fraction (0.55, not 55);
- ``call`` a boolean (True: call, False: put).

Greeks, for both models (``bs_greeks`` / ``black76_greeks``):

- ``delta``: d price / d underlying (spot for Black-Scholes, forward for Black-76);
- ``gamma``: d delta / d underlying;
- ``vega``: d price / d sigma, per 1.0 of volatility (divide by 100 for "per vol point");
- ``theta``: d price / d calendar time, per YEAR (``-`` d price / d ``T``; divide by 365 for a
  day), usually negative;
- ``rho``: d price / d ``r``, per 1.0 of rate. For Black-76 the forward is held fixed, so only the
  discount factor moves: ``rho = -T * price``.

Degenerate inputs are handled in the limit rather than returning NaN: at ``T == 0`` or
``sigma == 0`` the price is the discounted intrinsic value on the forward, delta is a step (0.5 at
the money), gamma and vega are 0, and theta and rho are those of the intrinsic value. Negative
``T``, ``sigma``, ``S``, ``F`` or ``K`` are outside the models and give NaN.

Implied volatility (``implied_vol``) is added by a later issue with the signature in DESIGN.md
("Interfaces"): ``implied_vol(price, S, K, T, r, call)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import ndtr

__all__ = ["Greeks", "bs_price", "bs_greeks", "black76_price", "black76_greeks", "norm_pdf"]

_INV_SQRT_2PI = 0.3989422804014327


class Greeks(NamedTuple):
    """First- and second-order sensitivities; see the module docstring for units."""

    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    theta: np.ndarray
    rho: np.ndarray


def norm_pdf(x: np.ndarray) -> np.ndarray:
    """The standard normal density."""
    return _INV_SQRT_2PI * np.exp(-0.5 * np.square(x))


def _out(x: np.ndarray):
    """A 0-d result as a numpy scalar, anything else unchanged."""
    return x[()] if isinstance(x, np.ndarray) and x.ndim == 0 else x


def _inputs(*values) -> list[np.ndarray]:
    arrays = np.broadcast_arrays(*[np.asarray(v) for v in values])
    *numbers, call = arrays
    return [np.asarray(a, dtype=np.float64) for a in numbers] + [np.asarray(call, dtype=bool)]


def _invalid(*values: np.ndarray) -> np.ndarray:
    bad = np.zeros(values[0].shape, dtype=bool)
    for v in values:
        bad |= ~(v >= 0.0)  # negative or NaN
    return bad


class _Black:
    """The shared core: an undiscounted Black price on forward ``F`` and its pieces."""

    def __init__(self, F: np.ndarray, K: np.ndarray, T: np.ndarray, sigma: np.ndarray,
                 call: np.ndarray) -> None:
        self.F, self.K, self.T, self.sigma, self.call = F, K, T, sigma, call
        self.sqrt_t = np.sqrt(np.maximum(T, 0.0))
        stdev = sigma * self.sqrt_t
        self.smooth = (stdev > 0.0) & (F > 0.0) & (K > 0.0)
        safe = np.where(self.smooth, stdev, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_fk = np.log(np.where(self.smooth, F / np.where(K > 0.0, K, 1.0), 1.0))
        self.stdev = stdev
        self.d1 = np.where(self.smooth, log_fk / safe + 0.5 * safe, 0.0)
        self.d2 = self.d1 - np.where(self.smooth, safe, 0.0)
        self.pdf = norm_pdf(self.d1)
        sign = np.where(call, 1.0, -1.0)
        self.sign = sign
        # N(sign d1), N(sign d2): the probabilities in the price, per call/put.
        self.n1 = ndtr(sign * self.d1)
        self.n2 = ndtr(sign * self.d2)
        intrinsic = np.maximum(sign * (F - K), 0.0)
        smooth_price = sign * (F * self.n1 - K * self.n2)
        self.undiscounted = np.where(self.smooth, np.maximum(smooth_price, intrinsic), intrinsic)
        # Delta on the forward, undiscounted: N(d1) for calls, N(d1) - 1 for puts; a step when
        # degenerate (half at the money).
        step = np.where(F > K, 1.0, np.where(F < K, 0.0, 0.5))
        smooth_delta = np.where(call, ndtr(self.d1), ndtr(self.d1) - 1.0)
        self.delta_f = np.where(self.smooth, smooth_delta, np.where(call, step, step - 1.0))
        safe_sqrt_t = np.where(self.sqrt_t > 0.0, self.sqrt_t, 1.0)
        self.gamma_f = np.where(self.smooth, self.pdf / (F * safe), 0.0)
        self.vega_f = np.where(self.smooth, F * self.pdf * self.sqrt_t, 0.0)
        # d undiscounted / d T at fixed forward: F pdf sigma / (2 sqrt T).
        self.dprice_dt = np.where(self.smooth, F * self.pdf * sigma / (2.0 * safe_sqrt_t), 0.0)


def black76_price(F, K, T, r, sigma, call):
    """Black-76: ``exp(-rT) [F N(d1) - K N(d2)]`` for calls, ``exp(-rT) [K N(-d2) - F N(-d1)]``
    for puts, ``d1 = (ln(F/K) + sigma^2 T / 2) / (sigma sqrt T)``, ``d2 = d1 - sigma sqrt T``."""
    F, K, T, r, sigma, call = _inputs(F, K, T, r, sigma, call)
    core = _Black(F, K, T, sigma, call)
    price = np.exp(-r * T) * core.undiscounted
    return _out(np.where(_invalid(F, K, T, sigma) | ~np.isfinite(r), np.nan, price))


def black76_greeks(F, K, T, r, sigma, call) -> Greeks:
    """Black-76 greeks with respect to the forward (delta, gamma), sigma (vega, per 1.0), calendar
    time (theta, per year) and the discount rate at a fixed forward (rho = -T * price)."""
    F, K, T, r, sigma, call = _inputs(F, K, T, r, sigma, call)
    core = _Black(F, K, T, sigma, call)
    df = np.exp(-r * T)
    price = df * core.undiscounted
    bad = _invalid(F, K, T, sigma) | ~np.isfinite(r)
    theta = r * price - df * core.dprice_dt
    values = (df * core.delta_f, df * core.gamma_f, df * core.vega_f, theta, -T * price)
    return Greeks(*(_out(np.where(bad, np.nan, v)) for v in values))


def bs_price(S, K, T, r, sigma, call):
    """Black-Scholes (no dividends): Black-76 on the forward ``S exp(rT)``, discounted."""
    S, K, T, r, sigma, call = _inputs(S, K, T, r, sigma, call)
    F = S * np.exp(r * T)
    core = _Black(F, K, T, sigma, call)
    price = np.exp(-r * T) * core.undiscounted
    return _out(np.where(_invalid(S, K, T, sigma) | ~np.isfinite(r), np.nan, price))


def bs_greeks(S, K, T, r, sigma, call) -> Greeks:
    """Black-Scholes greeks with respect to spot (delta, gamma), sigma (vega, per 1.0), calendar
    time (theta, per year) and the rate (rho, per 1.0):

    - delta = N(d1) (call), N(d1) - 1 (put); gamma = n(d1) / (S sigma sqrt T);
    - vega = S n(d1) sqrt T;
    - theta = -S n(d1) sigma / (2 sqrt T) - r K e^{-rT} N(d2) (call), ``+ r K e^{-rT} N(-d2)``
      (put);
    - rho = K T e^{-rT} N(d2) (call), ``-K T e^{-rT} N(-d2)`` (put).
    """
    S, K, T, r, sigma, call = _inputs(S, K, T, r, sigma, call)
    df = np.exp(-r * T)
    F = S * np.exp(r * T)
    core = _Black(F, K, T, sigma, call)
    bad = _invalid(S, K, T, sigma) | ~np.isfinite(r)
    # With F = S e^{rT}: d(df * undiscounted)/dS = delta_f (the e^{rT} and df cancel).
    delta = core.delta_f
    gamma = core.gamma_f * np.exp(r * T)  # d delta_f / dS = gamma_f * dF/dS
    vega = df * core.vega_f
    # The K-term probability: N(d2) for calls, N(-d2) for puts, or the degenerate step.
    itm_step = np.where(core.sign * (F - K) > 0.0, 1.0, np.where(F == K, 0.5, 0.0))
    n2 = np.where(core.smooth, core.n2, itm_step)
    theta = -df * core.dprice_dt - core.sign * r * K * df * n2
    rho = core.sign * K * T * df * n2
    values = (delta, gamma, vega, theta, rho)
    return Greeks(*(_out(np.where(bad, np.nan, v)) for v in values))
