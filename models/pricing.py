"""European option prices, greeks and implied volatility: Black-Scholes on spot and Black-76 on
the forward.

Pure and vectorized: every function takes numpy arrays or scalars (broadcast against each other,
``call`` included) and returns float64 arrays of the broadcast shape, or numpy scalars when every
input is a scalar. Prices and greeks are computed in one compiled pass over the options (numba;
see "Speed" below) with its own exp (within 1 ulp), log (2 ulps) and normal CDF (W. J. Cody's
rational approximations; within ``x^2/2 + 8`` ulps, the loss in ``exp(-x^2/2)`` that scipy's
``ndtr`` has too): they agree with the same formulas in plain numpy to ~1e-14 of the size of
their terms (tests/models/test_pricing.py).

Conventions (DESIGN.md principle 6):

- ``S`` spot and ``F`` forward in USD (or any one currency), ``K`` strike in the same unit;
- ``T`` time to expiry in years (``seconds / (365 * 86400)`` elsewhere in hedgeflow);
- ``r`` the continuously compounded risk-free rate, annual fraction (0.05 = 5 %);
- ``sigma`` the annualized volatility as a fraction (0.55, not 55);
- ``call`` a boolean (True: call, False: put).

Greeks, for both models (``bs_greeks`` / ``black76_greeks``, or with the price in one pass:
``bs_price_greeks`` / ``black76_price_greeks``):

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

Implied volatility (``implied_vol(price, S, K, T, r, call)`` on spot, ``black76_implied_vol(price,
F, K, T, r, call)`` on the forward; DESIGN.md "Interfaces") inverts the prices above with Peter
Jäckel's "Let's Be Rational" (Wilmott, January 2015; his 2013-2014 reference code): the price is
normalised to ``beta = undiscounted / sqrt(F K)`` at log-moneyness ``x = ln(F/K)``, a rational
initial guess is taken in one of four branches of the normalised Black function, and two
Householder(3) iterations on a branch-specific objective bring it to machine precision.

- In-the-money options are inverted through put-call parity: their time value (price minus
  intrinsic on the forward) is the price of the out-of-the-money option at the same strike, which
  is what is inverted. Deep in the money the time value is a difference of nearly equal numbers,
  so its relative precision, and that of the volatility, is lower.
- Accuracy (tests/models/test_pricing.py, against mpmath at 40 digits): at most 1e-10 absolute
  error in volatility on out-of-the-money options with ``T`` from 1 hour to 2 years, volatility
  5 % to 500 % and strikes up to 12 standard deviations ``|ln(K/F)| <= 12 sigma sqrt(T)`` away.
- NaN (never an exception) where no volatility reproduces the price: a price below intrinsic
  value, at or above the upper bound (the discounted forward for calls, the discounted strike for
  puts), ``T <= 0``, non-positive ``S``/``F``/``K``, a negative or NaN price, a non-finite rate.
  A price at intrinsic value gives 0.0 (the zero volatility reproduces it; "at" is to within 4
  ulps of ``max(F, K)``, the rounding of the forward ``S exp(rT)`` and of discounting), as does a
  time value below the smallest normal double relative to ``sqrt(F K)``.

Speed: both the price/greeks loop and Let's Be Rational are compiled with numba (cached on disk
next to this module, so only the first run on a machine pays the compile, a few seconds each) and
release the GIL; batches of 200k options or more are split over the cores in threads (fork- and
thread-safe, unlike numba's parallel backends). The price/greeks loop is vectorized (AVX-512 on
the 2-core development machine: ~12 ns per option on one core, 1M options in ~0.011-0.016 s
against ~0.05 s for plain numpy; a scalar call ~12 us); implied volatility takes ~0.3 us per
option on one core, 1M options in ~0.2-0.35 s (benchmarks/bench_pricing.py).
"""

from __future__ import annotations

import math
import os
import threading
from typing import NamedTuple

import numpy as np
from numba import njit

__all__ = [
    "Greeks", "bs_price", "bs_greeks", "bs_price_greeks", "black76_price", "black76_greeks",
    "black76_price_greeks", "implied_vol", "black76_implied_vol", "norm_pdf",
]

_INV_SQRT_2PI = 0.3989422804014327

# cache: compiled once per machine (on disk beside this module), not per process. nogil: the
# kernels run in threads (_in_threads). error_model "numpy": a division by zero gives inf/NaN like
# numpy, never a ZeroDivisionError. contract: fused multiply-adds, which are at least as accurate
# and ~10 % faster in Let's Be Rational.
_jit = njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})


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
    """float64 arrays (the last, ``call``, bool) of one broadcast shape. Converted before they
    are broadcast, so that a scalar stays a zero-stride view rather than a full-size copy."""
    *numbers, call = values
    arrays = [np.asarray(v, dtype=np.float64) for v in numbers] + [np.asarray(call, dtype=bool)]
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    return [a if a.shape == shape else np.broadcast_to(a, shape) for a in arrays]


def _columns(*arrays: np.ndarray) -> list[np.ndarray]:
    """Each array as one contiguous, writeable 1-D column (a view when it already is one): the
    kernels' inputs. Writeable because numba compiles read-only arrays separately."""
    return [(a if a.flags.c_contiguous and a.flags.writeable else np.array(a, order="C"))
            .reshape(-1) for a in arrays]


# Options per thread below which a batch is not split: ~1 ms of price + greeks, ~30 ms of Let's Be
# Rational, either far above a thread's start-up cost.
_OPTIONS_PER_THREAD = 100_000


def _in_threads(kernel, args: list) -> None:
    """``kernel(*args)``, over the cores: the 1-D array arguments (inputs and outputs, one entry
    per option) are cut into contiguous chunks, one per thread, of at least _OPTIONS_PER_THREAD
    options each; other arguments are passed whole. Each option is independent of the others,
    and the kernels release the GIL."""
    n = max(a.size for a in args if isinstance(a, np.ndarray))
    # (os.cpu_count() reads the system, ~5 us: only asked when there is something to split.)
    n_threads = 1 if n < 2 * _OPTIONS_PER_THREAD else min(os.cpu_count() or 1,
                                                           n // _OPTIONS_PER_THREAD)
    if n_threads <= 1:
        kernel(*args)
        return
    bounds = np.linspace(0, n, n_threads + 1).astype(np.int64)
    chunks = [[a[lo:hi] if isinstance(a, np.ndarray) else a for a in args]
              for lo, hi in zip(bounds[:-1], bounds[1:])]
    threads = [threading.Thread(target=kernel, args=chunk) for chunk in chunks[1:]]
    for thread in threads:
        thread.start()
    kernel(*chunks[0])
    for thread in threads:
        thread.join()


def _price_and_greeks(x, K, T, r, sigma, call, on_spot: bool, greeks: bool):
    """The compiled kernel over broadcast inputs: ``price`` alone, or ``(price, Greeks)``."""
    x, K, T, r, sigma, call = _inputs(x, K, T, r, sigma, call)
    n_outputs = 6 if greeks else 1
    outputs = [np.empty(x.shape, dtype=np.float64) for _ in range(n_outputs)]
    flat = [o.reshape(-1) for o in outputs]
    kernel = _price_greeks_kernel if greeks else _price_kernel
    _in_threads(kernel, [*_columns(x, K, T, r, sigma, call), on_spot, *flat])
    if not greeks:
        return _out(outputs[0])
    price, *sensitivities = (_out(o) for o in outputs)
    return price, Greeks(*sensitivities)


def black76_price(F, K, T, r, sigma, call):
    """Black-76: ``exp(-rT) [F N(d1) - K N(d2)]`` for calls, ``exp(-rT) [K N(-d2) - F N(-d1)]``
    for puts, ``d1 = (ln(F/K) + sigma^2 T / 2) / (sigma sqrt T)``, ``d2 = d1 - sigma sqrt T``."""
    return _price_and_greeks(F, K, T, r, sigma, call, on_spot=False, greeks=False)


def black76_price_greeks(F, K, T, r, sigma, call) -> tuple[np.ndarray, Greeks]:
    """``(black76_price(...), black76_greeks(...))`` computed in one pass over the inputs."""
    return _price_and_greeks(F, K, T, r, sigma, call, on_spot=False, greeks=True)


def black76_greeks(F, K, T, r, sigma, call) -> Greeks:
    """Black-76 greeks with respect to the forward (delta, gamma), sigma (vega, per 1.0), calendar
    time (theta, per year) and the discount rate at a fixed forward (rho = -T * price)."""
    return black76_price_greeks(F, K, T, r, sigma, call)[1]


def bs_price(S, K, T, r, sigma, call):
    """Black-Scholes (no dividends): Black-76 on the forward ``S exp(rT)``, discounted."""
    return _price_and_greeks(S, K, T, r, sigma, call, on_spot=True, greeks=False)


def bs_price_greeks(S, K, T, r, sigma, call) -> tuple[np.ndarray, Greeks]:
    """``(bs_price(...), bs_greeks(...))`` computed in one pass over the inputs."""
    return _price_and_greeks(S, K, T, r, sigma, call, on_spot=True, greeks=True)


def bs_greeks(S, K, T, r, sigma, call) -> Greeks:
    """Black-Scholes greeks with respect to spot (delta, gamma), sigma (vega, per 1.0), calendar
    time (theta, per year) and the rate (rho, per 1.0):

    - delta = N(d1) (call), N(d1) - 1 (put); gamma = n(d1) / (S sigma sqrt T);
    - vega = S n(d1) sqrt T;
    - theta = -S n(d1) sigma / (2 sqrt T) - r K e^{-rT} N(d2) (call), ``+ r K e^{-rT} N(-d2)``
      (put);
    - rho = K T e^{-rT} N(d2) (call), ``-K T e^{-rT} N(-d2)`` (put).
    """
    return bs_price_greeks(S, K, T, r, sigma, call)[1]


# --------------------------------------------------------------------------- compiled price, greeks
# The loop over options is written so that LLVM vectorizes it (8 options per AVX-512 instruction,
# ~10x faster than a loop calling libm; benchmarks/bench_pricing.py): the scalar helpers below are
# inlined at numba's level (a call left in the loop body stops the vectorizer), and nothing in
# them branches: exp, log and the normal CDF are polynomials and rationals, every value is
# computed for every option and the right one selected.

_inline = njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"},
               inline="always")

_LOG2_E = 1.4426950408889634
# ln 2 = _LN2_HI + _LN2_LO, the head with trailing zero bits so that k * _LN2_HI is exact.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_ROUNDING = 6755399441055744.0  # 1.5 * 2^52: x + _ROUNDING rounds x to an integer in its bits
_ROUNDING_BITS = int(np.float64(_ROUNDING).view(np.int64))
_EXPONENT_ONE = 0x3FF0000000000000  # the bits of 1.0
_MANTISSA = 0xFFFFFFFFFFFFF
_SMALLEST_NORMAL = 2.2250738585072014e-308


@_inline
def _exp(x: float) -> float:
    """e^x to 1 ulp: x = k ln 2 + f, |f| <= ln(2)/2, e^f by its degree-13 Taylor polynomial
    (remainder < 5e-18), times 2^k built in the exponent bits (in two halves, so that overflow
    to inf and gradual underflow to 0 come out right)."""
    clamped = min(max(x, -746.0), 710.0)
    shifted = clamped * _LOG2_E + _ROUNDING
    k_float = shifted - _ROUNDING
    k = np.float64(shifted).view(np.int64) - _ROUNDING_BITS
    f = (clamped - k_float * _LN2_HI) - k_float * _LN2_LO
    p = 1.6059043836821613e-10  # 1/13!
    p = p * f + 2.08767569878681e-09
    p = p * f + 2.505210838544172e-08
    p = p * f + 2.755731922398589e-07
    p = p * f + 2.7557319223985893e-06
    p = p * f + 2.48015873015873e-05
    p = p * f + 0.0001984126984126984
    p = p * f + 0.001388888888888889
    p = p * f + 0.008333333333333333
    p = p * f + 0.041666666666666664
    p = p * f + 0.16666666666666666
    p = p * f + 0.5
    p = p * f + 1.0
    p = p * f + 1.0
    half = k >> 1
    scale_1 = np.int64(((half + 1023) << 52)).view(np.float64)
    scale_2 = np.int64(((k - half + 1023) << 52)).view(np.float64)
    y = p * scale_1 * scale_2
    return x if x != x else y


@_inline
def _log(x: float) -> float:
    """ln x to 2 ulps (NaN below 0, -inf at 0, inf at inf): x = m 2^e with m in [sqrt(1/2),
    sqrt(2)), ln m = 2 atanh(s) = 2 (s + s^3/3 + ... + s^23/23), s = (m-1)/(m+1), |s| < 0.172."""
    subnormal = x < _SMALLEST_NORMAL
    normal = x * 18014398509481984.0 if subnormal else x  # 2^54
    bits = np.float64(normal).view(np.int64)
    e = (bits >> 52) - (1023 + 54 if subnormal else 1023)
    m = np.int64((bits & _MANTISSA) | _EXPONENT_ONE).view(np.float64)
    high = m > 1.4142135623730951
    m = 0.5 * m if high else m
    e = e + 1 if high else e
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    p = 1.0 / 23.0
    p = p * z + 1.0 / 21.0
    p = p * z + 1.0 / 19.0
    p = p * z + 1.0 / 17.0
    p = p * z + 1.0 / 15.0
    p = p * z + 1.0 / 13.0
    p = p * z + 1.0 / 11.0
    p = p * z + 1.0 / 9.0
    p = p * z + 1.0 / 7.0
    p = p * z + 1.0 / 5.0
    p = p * z + 1.0 / 3.0
    e_float = np.float64(e)
    y = e_float * _LN2_HI + (2.0 * s + (2.0 * s * z * p + e_float * _LN2_LO))
    y = y if x < math.inf else x  # inf and NaN as they are
    y = -math.inf if x == 0.0 else y
    return math.nan if x < 0.0 else y


# W. J. Cody's rational Chebyshev approximations of erf and erfc (Math. Comp. 1969), in the three
# ranges of |x| they split at; used by the normal CDF here and by _erfcx (Let's Be Rational).


@_inline
def _erf_near(x: float) -> float:
    """erf(x) for |x| <= 0.46875."""
    ysq = x * x if abs(x) > 1.11e-16 else 0.0
    num = 0.185777706184603153 * ysq
    den = ysq
    num = (num + 3.1611237438705656) * ysq
    den = (den + 23.6012909523441209) * ysq
    num = (num + 113.864154151050156) * ysq
    den = (den + 244.024637934444173) * ysq
    num = (num + 377.485237685302021) * ysq
    den = (den + 1282.61652607737228) * ysq
    return x * (num + 3209.37758913846947) / (den + 2844.23683343917062)


@_inline
def _erfcx_mid(y: float) -> float:
    """exp(y^2) erfc(y) for 0.46875 < y <= 4."""
    num = 2.15311535474403846e-8 * y
    den = y
    num = (num + 0.564188496988670089) * y
    den = (den + 15.7449261107098347) * y
    num = (num + 8.88314979438837594) * y
    den = (den + 117.693950891312499) * y
    num = (num + 66.1191906371416295) * y
    den = (den + 537.181101862009858) * y
    num = (num + 298.635138197400131) * y
    den = (den + 1621.38957456669019) * y
    num = (num + 881.95222124176909) * y
    den = (den + 3290.79923573345963) * y
    num = (num + 1712.04761263407058) * y
    den = (den + 4362.61909014324716) * y
    num = (num + 2051.07837782607147) * y
    den = (den + 3439.36767414372164) * y
    return (num + 1230.33935479799725) / (den + 1230.33935480374942)


@_inline
def _erfcx_far(y: float) -> float:
    """exp(y^2) erfc(y) for y > 4 (0 at y = inf)."""
    ysq = 1.0 / (y * y)
    num = 0.0163153871373020978 * ysq
    den = ysq
    num = (num + 0.305326634961232344) * ysq
    den = (den + 2.56852019228982242) * ysq
    num = (num + 0.360344899949804439) * ysq
    den = (den + 1.87295284992346047) * ysq
    num = (num + 0.125781726111229246) * ysq
    den = (den + 0.527905102951428412) * ysq
    num = (num + 0.0160837851487422766) * ysq
    den = (den + 0.0605183413124413191) * ysq
    result = ysq * (num + 6.58749161529837803e-4) / (den + 0.00233520497626869185)
    return (0.56418958354775628695 - result) / y


@_inline
def _norm_cdf_given_density(x: float, gauss: float) -> float:
    """N(x), given ``gauss = exp(-x^2 / 2)`` (shared with the density): near 0 from erf, else
    the tail ``erfc(|x| / sqrt 2) / 2`` as that exponential times exp(y^2) erfc(y)."""
    u = x * _ONE_OVER_SQRT_TWO
    y = abs(u)
    near = 0.5 + 0.5 * _erf_near(u)
    tail = 0.5 * gauss * (_erfcx_mid(y) if y <= 4.0 else _erfcx_far(y))
    return near if y <= 0.46875 else (1.0 - tail if x > 0.0 else tail)


@_inline
def _maximum(a: float, b: float) -> float:
    """``np.maximum``: NaN if either is NaN."""
    return a if (a >= b or a != a) else b


@_inline
def _black_one(x, K, T, r, sigma, is_call, on_spot):
    """Price, delta, gamma, vega, theta, rho of one option: Black-Scholes on spot ``x`` when
    ``on_spot``, else Black-76 on forward ``x`` (module docstring), all NaN outside the models.

    Both are an undiscounted Black price on the forward F and its sensitivities per unit of F,
    sigma and T (``*_f``, ``dprice_dt``), discounted and, on spot, carried over with
    ``dF/dS = exp(rT)``. The smooth formulas are evaluated for degenerate inputs too (giving
    inf or NaN there) and replaced by their limits."""
    valid = x >= 0.0 and K >= 0.0 and T >= 0.0 and sigma >= 0.0 and abs(r) < math.inf
    df = _exp(-r * T)
    growth = _exp(r * T)
    F = x * growth if on_spot else x
    sign = 1.0 if is_call else -1.0
    intrinsic = _maximum(sign * (F - K), 0.0)
    sqrt_t = math.sqrt(T)
    stdev = sigma * sqrt_t
    smooth = stdev > 0.0 and F > 0.0 and K > 0.0
    d1 = _log(F / K) / stdev + 0.5 * stdev
    d2 = d1 - stdev
    gauss_1 = _exp(-0.5 * d1 * d1)
    # N(sign d1), N(sign d2): the probabilities in the price, per call/put.
    n1 = _norm_cdf_given_density(sign * d1, gauss_1)
    n2 = _norm_cdf_given_density(sign * d2, _exp(-0.5 * d2 * d2))
    pdf = _INV_SQRT_2PI * gauss_1
    # The limits: intrinsic value, a step delta (half at the money), no gamma or vega, and for
    # the K-term's probability N(+-d2) a step on the intrinsic side.
    step = 1.0 if F > K else (0.0 if F < K else 0.5)
    undiscounted = _maximum(sign * (F * n1 - K * n2), intrinsic) if smooth else intrinsic
    # N(d1) for calls, N(d1) - 1 = -N(-d1) for puts.
    delta_f = sign * n1 if smooth else (step if is_call else step - 1.0)
    gamma_f = pdf / (F * stdev) if smooth else 0.0
    vega_f = F * pdf * sqrt_t if smooth else 0.0
    # d undiscounted / d T at fixed forward: F pdf sigma / (2 sqrt T).
    dprice_dt = F * pdf * sigma / (2.0 * sqrt_t) if smooth else 0.0
    n2 = n2 if smooth else (1.0 if sign * (F - K) > 0.0 else (0.5 if F == K else 0.0))
    price = df * undiscounted
    if on_spot:
        # d(df undiscounted)/dS = delta_f (e^{rT} and df cancel); d delta_f / dS = gamma_f dF/dS;
        # the K-term of the price, K df N(+-d2), carries theta's and rho's r.
        k_term = sign * K * df * n2
        delta, gamma, vega = delta_f, gamma_f * growth, df * vega_f
        theta, rho = -df * dprice_dt - r * k_term, T * k_term
    else:
        # At a fixed forward only the discount factor moves with r (and, besides, T).
        delta, gamma, vega = df * delta_f, df * gamma_f, df * vega_f
        theta, rho = r * price - df * dprice_dt, -T * price
    if not valid:
        return math.nan, math.nan, math.nan, math.nan, math.nan, math.nan
    return price, delta, gamma, vega, theta, rho


@_jit
def _price_greeks_kernel(x, K, T, r, sigma, is_call, on_spot, price, delta, gamma, vega, theta,
                         rho):
    for i in range(price.size):
        price[i], delta[i], gamma[i], vega[i], theta[i], rho[i] = _black_one(
            x[i], K[i], T[i], r[i], sigma[i], is_call[i], on_spot)


@_jit
def _price_kernel(x, K, T, r, sigma, is_call, on_spot, price):
    for i in range(price.size):
        price[i] = _black_one(x[i], K[i], T[i], r[i], sigma[i], is_call[i], on_spot)[0]


# --------------------------------------------------------------------------- implied volatility


def black76_implied_vol(price, F, K, T, r, call):
    """The ``sigma`` for which ``black76_price(F, K, T, r, sigma, call) == price`` (Let's Be
    Rational; module docstring), NaN where none does. ``price`` is the discounted premium."""
    price, F, K, T, r, call = _inputs(price, F, K, T, r, call)
    with np.errstate(over="ignore", invalid="ignore"):
        growth = np.exp(r * T)
        undiscounted = price * growth
    vol = _lbr_vectorized(undiscounted, F, K, T, call)
    return _out(np.where(np.isfinite(r), vol, np.nan))


def implied_vol(price, S, K, T, r, call):
    """The ``sigma`` for which ``bs_price(S, K, T, r, sigma, call) == price`` (Let's Be Rational
    on the forward ``S exp(rT)``; module docstring), NaN where none does."""
    price, S, K, T, r, call = _inputs(price, S, K, T, r, call)
    with np.errstate(over="ignore", invalid="ignore"):
        growth = np.exp(r * T)
        vol = _lbr_vectorized(price * growth, S * growth, K, T, call)
    return _out(np.where(np.isfinite(r), vol, np.nan))


def _lbr_vectorized(undiscounted, F, K, T, call) -> np.ndarray:
    out = np.empty(undiscounted.shape, dtype=np.float64)
    _in_threads(_implied_vol_kernel, [*_columns(undiscounted, F, K, T, call), out.reshape(-1)])
    return out


# Let's Be Rational, compiled. Scalar functions of the normalised problem: x = ln(F/K) <= 0 (an
# out-of-the-money call; an OTM put is the call at -x by the reciprocal-strike symmetry),
# s = sigma sqrt(T), b(x, s) = undiscounted call / sqrt(F K) in (0, b_max = exp(x/2)).

_DBL_EPSILON = float(np.finfo(np.float64).eps)
_DBL_MIN = float(np.finfo(np.float64).tiny)
_DBL_MAX = float(np.finfo(np.float64).max)
_SQRT_DBL_MAX = math.sqrt(_DBL_MAX)
_ONE_OVER_SQRT_TWO = 0.7071067811865475244008443621048490392848359376887
_ONE_OVER_SQRT_TWO_PI = 0.3989422804014326779399460599343818684758586311649
_SQRT_TWO_PI = 2.506628274631000502415765284811045253006986740610
_TWO_PI = 6.283185307179586476925286766559005768394338798750
_SQRT_PI_OVER_TWO = 1.253314137315500251207882642405522626503493370305
_SQRT_THREE = 1.732050807568877293527446341505872366942805253810
_SQRT_ONE_OVER_THREE = 0.577350269189625764509148780501957455647601751270
_TWO_PI_OVER_SQRT_TWENTY_SEVEN = 1.209199576156145233729385505094770488189377498728
_PI_OVER_SIX = 0.523598775598298873077107230546583814032861566563
# Region boundaries of the normalised Black function: h = x/s below -10 (with t = s/2 small
# enough) takes the asymptotic expansion; t below 2 eps^(1/16) ~ 0.21 the small-t expansion.
_ASYMPTOTIC_H = -10.0
_SMALL_T = 2.0 * _DBL_EPSILON ** (1.0 / 16.0)
_RC_MIN = -(1.0 - math.sqrt(_DBL_EPSILON))
_RC_MAX = 2.0 / (_DBL_EPSILON * _DBL_EPSILON)
_ITERATIONS = 2


@_jit
def _erfcx(x: float) -> float:
    """``exp(x^2) erfc(x)`` by Cody's approximations: no exponential for ``x > 0.47``, so the
    scaled tail keeps full relative precision."""
    y = abs(x)
    if y <= 0.46875:
        return (1.0 - _erf_near(x)) * math.exp(y * y if y > 1.11e-16 else 0.0)
    if y <= 4.0:
        result = _erfcx_mid(y)
    elif y >= 6.71e7:
        result = 0.56418958354775628695 / y
    else:
        result = _erfcx_far(y)
    if x < 0.0:
        if x < -26.628:
            return math.inf
        # 2 exp(x^2) - erfcx(|x|), with x^2 split so exp sees an exactly representable square.
        head = math.trunc(x * 16.0) / 16.0
        tail = (x - head) * (x + head)
        scaled = math.exp(head * head) * math.exp(tail)
        result = scaled + scaled - result
    return result


@_jit
def _norm_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z * _ONE_OVER_SQRT_TWO)


@_jit
def _inverse_norm_cdf(u: float) -> float:
    """The normal quantile, Wichura's algorithm AS241 (Appl. Statist. 1988), ~1e-16 relative."""
    if u <= 0.0:
        return math.log(u)
    if u >= 1.0:
        return math.log(1.0 - u)
    q = u - 0.5
    if abs(q) <= 0.425:
        r = 0.180625 - q * q
        return q * (((((((2.5090809287301226727e3 * r + 3.3430575583588128105e4) * r
                         + 6.7265770927008700853e4) * r + 4.5921953931549871457e4) * r
                       + 1.3731693765509461125e4) * r + 1.9715909503065514427e3) * r
                     + 1.3314166789178437745e2) * r + 3.3871328727963666080e0) / (
            ((((((5.2264952788528545610e3 * r + 2.8729085735721942674e4) * r
                 + 3.9307895800092710610e4) * r + 2.1213794301586595867e4) * r
               + 5.3941960214247511077e3) * r + 6.8718700749205790830e2) * r
             + 4.2313330701600911252e1) * r + 1.0)
    r = u if q < 0.0 else 1.0 - u
    r = math.sqrt(-math.log(r))
    if r < 5.0:
        r -= 1.6
        value = (((((((7.74545014278341407640e-4 * r + 2.27238449892691845833e-2) * r
                      + 2.41780725177450611770e-1) * r + 1.27045825245236838258e0) * r
                    + 3.64784832476320460504e0) * r + 5.76949722146069140550e0) * r
                  + 4.63033784615654529590e0) * r + 1.42343711074968357734e0) / (
            (((((((1.05075007164441684324e-9 * r + 5.47593808499534494600e-4) * r
                  + 1.51986665636164571966e-2) * r + 1.48103976427480074590e-1) * r
                + 6.89767334985100004550e-1) * r + 1.67638483018380384940e0) * r
              + 2.05319162663775882187e0) * r + 1.0))
    else:
        r -= 5.0
        value = (((((((2.01033439929228813265e-7 * r + 2.71155556874348757815e-5) * r
                      + 1.24266094738807843860e-3) * r + 2.65321895265761230930e-2) * r
                    + 2.96560571828504891230e-1) * r + 1.78482653991729133580e0) * r
                  + 5.46378491116411436990e0) * r + 6.65790464350110377720e0) / (
            (((((((2.04426310338993978564e-15 * r + 1.42151175831644588870e-7) * r
                  + 1.84631831751005468180e-5) * r + 7.86869131145613259100e-4) * r
                + 1.48753612908506148525e-2) * r + 1.36929880922735805310e-1) * r
              + 5.99832206555887937690e-1) * r + 1.0))
    return -value if q < 0.0 else value


@_jit
def _asymptotic_sum(h: float, t: float) -> float:
    """b sqrt(2 pi) exp((h^2+t^2)/2) for h = x/s << 0 (region 1): (t/r) A(h, t), with A the
    17th-order expansion of ``(r/t) [Y(h+t) - Y(h-t)]``, ``Y = Phi/phi`` (Abramowitz & Stegun
    26.2.12), in q = (h/r)^2 with e = (t/h)^2 and r = (h+t)(h-t)."""
    e = (t / h) * (t / h)
    r = (h + t) * (h - t)
    q = (h / r) * (h / r)
    a = ((2.0+q*(-6.0E0-2.0*e+3.0*q*(1.0E1+e*(2.0E1+2.0*e)+5.0*q*(-1.4E1+e*(-7.0E1
         +e*(-4.2E1-2.0*e))+7.0*q*(1.8E1+e*(1.68E2+e*(2.52E2+e*(7.2E1+2.0*e)))+9.0*q*(-2.2E1
         +e*(-3.3E2+e*(-9.24E2+e*(-6.6E2+e*(-1.1E2-2.0*e))))+1.1E1*q*(2.6E1+e*(5.72E2+e*(2.574E3
         +e*(3.432E3+e*(1.43E3+e*(1.56E2+2.0*e)))))+1.3E1*q*(-3.0E1+e*(-9.1E2+e*(-6.006E3
         +e*(-1.287E4+e*(-1.001E4+e*(-2.73E3+e*(-2.1E2-2.0*e))))))+1.5E1*q*(3.4E1+e*(1.36E3
         +e*(1.2376E4+e*(3.8896E4+e*(4.862E4+e*(2.4752E4+e*(4.76E3+e*(2.72E2+2.0*e)))))))
         +1.7E1*q*(-3.8E1+e*(-1.938E3+e*(-2.3256E4+e*(-1.00776E5+e*(-1.84756E5+e*(-1.51164E5
         +e*(-5.4264E4+e*(-7.752E3+e*(-3.42E2-2.0*e))))))))+1.9E1*q*(4.2E1+e*(2.66E3+e*(4.0698E4
         +e*(2.3256E5+e*(5.8786E5+e*(7.05432E5+e*(4.0698E5+e*(1.08528E5+e*(1.197E4+e*(4.2E2
         +2.0*e)))))))))+2.1E1*q*(-4.6E1+e*(-3.542E3+e*(-6.7298E4+e*(-4.90314E5+e*(-1.63438E6
         +e*(-2.704156E6+e*(-2.288132E6+e*(-9.80628E5+e*(-2.01894E5+e*(-1.771E4
         +e*(-5.06E2-2.0*e))))))))))+2.3E1*q*(5.0E1+e*(4.6E3+e*(1.0626E5+e*(9.614E5+e*(4.08595E6
         +e*(8.9148E6+e*(1.04006E7+e*(6.53752E6+e*(2.16315E6+e*(3.542E5+e*(2.53E4+e*(6.0E2
         +2.0*e)))))))))))+2.5E1*q*(-5.4E1+e*(-5.85E3+e*(-1.6146E5+e*(-1.77606E6+e*(-9.37365E6
         +e*(-2.607579E7+e*(-4.01166E7+e*(-3.476772E7+e*(-1.687257E7+e*(-4.44015E6+e*(-5.9202E5
         +e*(-3.51E4+e*(-7.02E2-2.0*e))))))))))))+2.7E1*q*(5.8E1+e*(7.308E3+e*(2.3751E5
         +e*(3.12156E6+e*(2.003001E7+e*(6.919458E7+e*(1.3572783E8+e*(1.5511752E8+e*(1.0379187E8
         +e*(4.006002E7+e*(8.58429E6+e*(9.5004E5+e*(4.7502E4+e*(8.12E2+2.0*e)))))))))))))
         +2.9E1*q*(-6.2E1+e*(-8.99E3+e*(-3.39822E5+e*(-5.25915E6+e*(-4.032015E7+e*(-1.6934463E8
         +e*(-4.1250615E8+e*(-6.0108039E8+e*(-5.3036505E8+e*(-2.8224105E8+e*(-8.870433E7
         +e*(-1.577745E7+e*(-1.472562E6+e*(-6.293E4+e*(-9.3E2-2.0*e))))))))))))))+3.1E1*q*(6.6E1
         +e*(1.0912E4+e*(4.74672E5+e*(8.544096E6+e*(7.71342E7+e*(3.8707344E8+e*(1.14633288E9
         +e*(2.07431664E9+e*(2.33360622E9+e*(1.6376184E9+e*(7.0963464E8+e*(1.8512208E8
         +e*(2.7768312E7+e*(2.215136E6+e*(8.184E4+e*(1.056E3+2.0*e)))))))))))))))+3.3E1*(-7.0E1
         +e*(-1.309E4+e*(-6.49264E5+e*(-1.344904E7+e*(-1.4121492E8+e*(-8.344518E8+e*(-2.9526756E9
         +e*(-6.49588632E9+e*(-9.0751353E9+e*(-8.1198579E9+e*(-4.6399188E9+e*(-1.6689036E9
         +e*(-3.67158792E8+e*(-4.707164E7+e*(-3.24632E6+e*(-1.0472E5
         +e*(-1.19E3-2.0*e)))))))))))))))))*q))))))))))))))))))
    return (t / r) * a


@_jit
def _small_t_sum(h: float, t: float) -> float:
    """b sqrt(2 pi) exp((h^2+t^2)/2) for t = s/2 < 0.21 (region 2): a 12th-order expansion of
    Y(h+t) - Y(h-t) in t, with
    a = 1 + h Y(h) = 1 + h sqrt(pi/2) erfcx(-h/sqrt 2)."""
    a = 1.0 + h * (0.5 * _SQRT_TWO_PI) * _erfcx(-_ONE_OVER_SQRT_TWO * h)
    w = t * t
    h2 = h * h
    expansion = (2*t*(a+w*((-1+3*a+a*h2)/6+w*((-7+15*a+h2*(-1+10*a+a*h2))/120+w*((-57+105*a+h2*(-18
                 +105*a+h2*(-1+21*a+a*h2)))/5040+w*((-561+945*a+h2*(-285+1260*a+h2*(-33+378*a
                 +h2*(-1+36*a+a*h2))))/362880+w*((-6555+10395*a+h2*(-4680+17325*a+h2*(-840+6930*a
                 +h2*(-52+990*a+h2*(-1+55*a+a*h2)))))/39916800+((-89055+135135*a+h2*(-82845
                 +270270*a+h2*(-20370+135135*a+h2*(-1926+25740*a+h2*(-75+2145*a+h2*(-1+78*a
                 +a*h2))))))*w)/6227020800.0)))))))
    return expansion


@_jit
def _normalised_black_vega(x: float, s: float):
    """b(x, s) = Phi(x/s + s/2) exp(x/2) - Phi(x/s - s/2) exp(-x/2) for x <= 0, and its vega
    db/ds = exp(-(h^2 + t^2)/2) / sqrt(2 pi) (h = x/s, t = s/2), sharing that exponential. b by
    region: the form chosen keeps full relative precision where the two terms nearly cancel."""
    if s <= 0.0:
        return 0.0, (_ONE_OVER_SQRT_TWO_PI if x == 0.0 else 0.0)
    h = x / s
    t = 0.5 * s
    damping = math.exp(-0.5 * (h * h + t * t))
    vega = _ONE_OVER_SQRT_TWO_PI * damping
    if x < s * _ASYMPTOTIC_H and 0.5 * s * s + x < s * (_SMALL_T + _ASYMPTOTIC_H):
        b = _ONE_OVER_SQRT_TWO_PI * damping * _asymptotic_sum(h, t)
    elif t < _SMALL_T:
        b = _ONE_OVER_SQRT_TWO_PI * damping * _small_t_sum(h, t)
    elif x + 0.5 * s * s > s * 0.85:
        # b close to b_max: the first term dominates; the plain form loses nothing.
        b_max = math.exp(0.5 * x)
        b = _norm_cdf(h + t) * b_max - _norm_cdf(h - t) / b_max
    else:
        # One exponential and a difference of two scaled complementary error functions.
        b = 0.5 * damping * (_erfcx(-_ONE_OVER_SQRT_TWO * (h + t))
                             - _erfcx(-_ONE_OVER_SQRT_TWO * (h - t)))
    return abs(max(b, 0.0)), vega


# Rational cubic interpolation (Delbourgo & Gregory 1985), shape-preserving: the initial guesses
# interpolate s(beta), or a transformed f(beta), between branch points with known slopes.


@_jit
def _rational_cubic(x, x_l, x_r, y_l, y_r, d_l, d_r, r):
    h = x_r - x_l
    if abs(h) <= 0.0:
        return 0.5 * (y_l + y_r)
    t = (x - x_l) / h
    if not r >= _RC_MAX:
        omt = 1.0 - t
        t2 = t * t
        omt2 = omt * omt
        return (y_r * t2 * t + (r * y_r - h * d_r) * t2 * omt + (r * y_l + h * d_l) * t * omt2
                + y_l * omt2 * omt) / (1.0 + (r - 3.0) * t * omt)
    return y_r * t + y_l * (1.0 - t)


@_jit
def _rc_min_control(d_l, d_r, s, prefer_shape):
    monotonic = d_l * s >= 0.0 and d_r * s >= 0.0
    convex = d_l <= s <= d_r
    concave = d_l >= s >= d_r
    if not monotonic and not convex and not concave:
        return _RC_MIN
    r1 = -_DBL_MAX
    r2 = r1
    if monotonic:
        if abs(s) >= _DBL_MIN:
            r1 = (d_r + d_l) / s
        elif prefer_shape:
            r1 = _RC_MAX
    if convex or concave:
        s_m_d_l = s - d_l
        d_r_m_s = d_r - s
        if abs(s_m_d_l) >= _DBL_MIN and abs(d_r_m_s) >= _DBL_MIN:
            r2 = max(abs((d_r - d_l) / d_r_m_s), abs((d_r - d_l) / s_m_d_l))
        elif prefer_shape:
            r2 = _RC_MAX
    elif monotonic and prefer_shape:
        r2 = _RC_MAX
    return max(_RC_MIN, max(r1, r2))


@_jit
def _rc_control_left(x_l, x_r, y_l, y_r, d_l, d_r, second_l, prefer_shape):
    """The control parameter matching a second derivative at the left end, made convex."""
    h = x_r - x_l
    numerator = 0.5 * h * second_l + (d_r - d_l)
    denominator = (y_r - y_l) / h - d_l
    if abs(numerator) < _DBL_MIN:
        r = 0.0
    elif abs(denominator) < _DBL_MIN:
        r = _RC_MAX if numerator > 0.0 else _RC_MIN
    else:
        r = numerator / denominator
    return max(r, _rc_min_control(d_l, d_r, (y_r - y_l) / h, prefer_shape))


@_jit
def _rc_control_right(x_l, x_r, y_l, y_r, d_l, d_r, second_r, prefer_shape):
    """The control parameter matching a second derivative at the right end, made convex."""
    h = x_r - x_l
    numerator = 0.5 * h * second_r + (d_r - d_l)
    denominator = d_r - (y_r - y_l) / h
    if abs(numerator) < _DBL_MIN:
        r = 0.0
    elif abs(denominator) < _DBL_MIN:
        r = _RC_MAX if numerator > 0.0 else _RC_MIN
    else:
        r = numerator / denominator
    return max(r, _rc_min_control(d_l, d_r, (y_r - y_l) / h, prefer_shape))


@_jit
def _lower_map(x, s):
    """f(beta) = 2pi/sqrt(27) |x| Phi(-|x|/(sqrt(3) s))^3 on the lowest branch, its first and
    second derivatives in beta: f is nearly linear in beta there, so interpolating f is good."""
    ax = abs(x)
    z = _SQRT_ONE_OVER_THREE * ax / s
    y = z * z
    s2 = s * s
    big_phi = _norm_cdf(-z)
    phi = _ONE_OVER_SQRT_TWO_PI * math.exp(-0.5 * z * z)
    fpp = (_PI_OVER_SIX * y / (s2 * s) * big_phi
           * (8.0 * _SQRT_THREE * s * ax + (3.0 * s2 * (s2 - 8.0) - 8.0 * x * x) * big_phi / phi)
           * math.exp(2.0 * y + 0.25 * s2))
    phi2 = big_phi * big_phi
    fp = _TWO_PI * y * phi2 * math.exp(y + 0.125 * s * s)
    f = _TWO_PI_OVER_SQRT_TWENTY_SEVEN * ax * (phi2 * big_phi)
    return f, fp, fpp


@_jit
def _inverse_lower_map(x, f):
    return abs(x / (_SQRT_THREE * _inverse_norm_cdf(
        (f / (_TWO_PI_OVER_SQRT_TWENTY_SEVEN * abs(x))) ** (1.0 / 3.0))))


@_jit
def _upper_map(x, s):
    """f(beta) = Phi(-s/2) on the highest branch, its first and second derivatives in beta."""
    f = _norm_cdf(-0.5 * s)
    w = (x / s) ** 2
    fp = -0.5 * math.exp(0.5 * w)
    fpp = _SQRT_PI_OVER_TWO * math.exp(w + 0.125 * s * s) * w / s
    return f, fp, fpp


@_jit
def _householder_factor(newton, halley, hh3):
    return (1.0 + 0.5 * halley * newton) / (1.0 + newton * (halley + hh3 * newton / 6.0))


_MIDDLE, _LOWEST, _UPPER = 0, 1, 2


@_jit
def _householder(beta, x, s, s_left, s_right, objective, iterations):
    """Householder(3) steps ``s += newton (1 + halley newton / 2) / (1 + newton (halley + hh3
    newton / 6))`` on the branch's objective g(s), with newton = -g/g', halley = g''/g',
    hh3 = g'''/g':

    - middle: g = b(s) - beta;
    - lowest: g = 1/ln(b(s)) - 1/ln(beta) (b is exponentially small there; this g is ~linear);
    - upper:  g = ln(b_max - beta) - ln(b_max - b(s)) (b close to b_max).

    A step leaving the bracket [s_left, s_right], or three reversals, falls back to bisection.
    """
    b_max = math.exp(0.5 * x)
    ds = _DBL_MAX
    ds_previous = 0.0
    reversals = 0
    n = 0
    while n < iterations and abs(ds) > _DBL_EPSILON * s:
        if ds * ds_previous < 0.0:
            reversals += 1
        if n > 0 and (reversals == 3 or not (s_left < s < s_right)):
            s = 0.5 * (s_left + s_right)
            if s_right - s_left <= _DBL_EPSILON * s:
                break
            reversals = 0
            ds = 0.0
        ds_previous = ds
        b, bp = _normalised_black_vega(x, s)
        if b > beta and s < s_right:
            s_right = s
        elif b < beta and s > s_left:
            s_left = s
        b_halley = (x / s) ** 2 / s - 0.25 * s
        b_hh3 = b_halley * b_halley - 3.0 * (x / (s * s)) ** 2 - 0.25
        if objective == _LOWEST:
            if b <= 0.0 or bp <= 0.0:
                ds = 0.5 * (s_left + s_right) - s
            else:
                ln_b = math.log(b)
                ln_beta = math.log(beta)
                bpob = bp / b
                newton = (ln_beta - ln_b) * ln_b / ln_beta / bpob
                halley = b_halley - bpob * (1.0 + 2.0 / ln_b)
                hh3 = (b_hh3 + 2.0 * bpob * bpob * (1.0 + 3.0 / ln_b * (1.0 + 1.0 / ln_b))
                       - 3.0 * b_halley * bpob * (1.0 + 2.0 / ln_b))
                ds = newton * _householder_factor(newton, halley, hh3)
        elif objective == _UPPER:
            if b >= b_max or bp <= _DBL_MIN:
                ds = 0.5 * (s_left + s_right) - s
            else:
                gap = b_max - b
                g = math.log((b_max - beta) / gap)
                gp = bp / gap
                newton = -g / gp
                halley = b_halley + gp
                hh3 = b_hh3 + gp * (2.0 * gp + 3.0 * b_halley)
                ds = newton * _householder_factor(newton, halley, hh3)
        else:
            newton = (beta - b) / bp
            ds = newton * _householder_factor(newton, b_halley, b_hh3)
        ds = max(-0.5 * s, ds)
        s += ds
        n += 1
    return s


@_jit
def _normalised_implied_vol(beta, x, iterations):
    """s = sigma sqrt(T) with b(x, s) = beta, for x <= 0 and 0 < beta < exp(x/2).

    Four branches split at s_l < s_c = sqrt(2|x|) < s_h (b's inflexion point and the tangents
    through it): below b(s_l) a rational cubic in the lower map f, between the branch points a
    rational cubic in s itself, above b(s_h) one in the upper map f, each then polished by
    ``iterations`` Householder(3) steps (two reach machine precision)."""
    b_max = math.exp(0.5 * x)
    s_c = math.sqrt(abs(2.0 * x))
    b_c, v_c = _normalised_black_vega(x, s_c)
    s_left = _DBL_MIN
    s_right = _DBL_MAX
    objective = _MIDDLE
    if beta < b_c:
        s_l = s_c - b_c / v_c
        b_l, v_l = _normalised_black_vega(x, s_l)
        if beta < b_l:
            f_l, fp_l, fpp_l = _lower_map(x, s_l)
            r = _rc_control_right(0.0, b_l, 0.0, f_l, 1.0, fp_l, fpp_l, True)
            f = _rational_cubic(beta, 0.0, b_l, 0.0, f_l, 1.0, fp_l, r)
            if not f > 0.0:
                # Round-off at extreme |x|: a quadratic through f(0) = 0, f'(0) = 1 and f(b_l).
                t = beta / b_l
                f = (f_l * t + b_l * (1.0 - t)) * t
            s = _inverse_lower_map(x, f)
            s_right = s_l
            objective = _LOWEST
        else:
            r = _rc_control_right(b_l, b_c, s_l, s_c, 1.0 / v_l, 1.0 / v_c, 0.0, False)
            s = _rational_cubic(beta, b_l, b_c, s_l, s_c, 1.0 / v_l, 1.0 / v_c, r)
            s_left = s_l
            s_right = s_c
    else:
        s_h = s_c + (b_max - b_c) / v_c if v_c > _DBL_MIN else s_c
        b_h, v_h = _normalised_black_vega(x, s_h)
        if beta <= b_h:
            r = _rc_control_left(b_c, b_h, s_c, s_h, 1.0 / v_c, 1.0 / v_h, 0.0, False)
            s = _rational_cubic(beta, b_c, b_h, s_c, s_h, 1.0 / v_c, 1.0 / v_h, r)
            s_left = s_c
            s_right = s_h
        else:
            f_h, fp_h, fpp_h = _upper_map(x, s_h)
            f = -1.0
            if -_SQRT_DBL_MAX < fpp_h < _SQRT_DBL_MAX:
                r = _rc_control_left(b_h, b_max, f_h, 0.0, fp_h, -0.5, fpp_h, True)
                f = _rational_cubic(beta, b_h, b_max, f_h, 0.0, fp_h, -0.5, r)
            if f <= 0.0:
                # A quadratic through f(b_h), f(b_max) = 0 and f'(b_max) = -1/2.
                h = b_max - b_h
                t = (beta - b_h) / h
                f = (f_h * (1.0 - t) + 0.5 * h * t) * (1.0 - t)
            s = -2.0 * _inverse_norm_cdf(f)
            s_left = s_h
            if beta > 0.5 * b_max:
                objective = _UPPER
    return _householder(beta, x, s, s_left, s_right, objective, iterations)


@_jit
def _implied_vol_one(price, F, K, T, is_call):
    """sigma from an undiscounted Black-76 price; NaN where no sigma gives it."""
    if not (price >= 0.0 and F > 0.0 and K > 0.0 and T > 0.0):
        return math.nan
    if math.isinf(F) or math.isinf(K) or math.isinf(T):
        return math.nan
    intrinsic = max(F - K, 0.0) if is_call else max(K - F, 0.0)
    upper = F if is_call else K
    # A few ulps below intrinsic is intrinsic: the rounding of a forward S exp(rT) and of
    # undiscounting a price that is all intrinsic value.
    if not (intrinsic - 4.0 * _DBL_EPSILON * max(F, K) <= price < upper):
        return math.nan
    # Put-call parity: the time value is the price of the out-of-the-money option at K, a call
    # when K >= F, a put otherwise; the put at x is the call at -x.
    time_value = max(price - intrinsic, 0.0)
    x = math.log(F / K)
    if K < F:
        x = -x
    beta = time_value / (math.sqrt(F) * math.sqrt(K))
    if beta < _DBL_MIN:
        return 0.0
    if beta >= math.exp(0.5 * x):
        return math.nan
    return _normalised_implied_vol(beta, x, _ITERATIONS) / math.sqrt(T)


@_jit
def _implied_vol_kernel(price, F, K, T, is_call, out):
    for i in range(price.size):
        out[i] = _implied_vol_one(price[i], F[i], K[i], T[i], is_call[i])
