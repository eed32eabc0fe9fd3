"""Jump-diffusion parameters shared by the premium calculator and the Monte Carlo engine.

Merton (1976): the log price follows a diffusion plus compound-Poisson jumps; each jump multiplies
the price by ``exp(J)`` with ``J ~ Normal(mean_log_jump, vol_log_jump^2)``. Under the pricing
measure the drift is compensated by ``intensity_per_year * kappa`` with
``kappa = E[exp(J)] - 1 = exp(mean_log_jump + vol_log_jump^2 / 2) - 1``, so the forward is
unchanged by the jumps.

Calibration: ``fit_merton_jumps`` estimates the parameters from a series of equally spaced log
returns by maximum likelihood (``merton_log_density``), and says through a likelihood ratio
against the normal model whether the sample warrants jumps at all (``MertonFit``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy.special import gammaln, logsumexp, pdtr, xlogy

__all__ = ["MertonJumps", "MertonFitBounds", "MertonFit", "merton_log_density",
           "default_fit_bounds", "fit_merton_jumps"]


@dataclass(frozen=True)
class MertonJumps:
    """Merton jump parameters: ``intensity_per_year`` jumps per year (Poisson rate), each a log
    return ``J ~ N(mean_log_jump, vol_log_jump^2)``. The defaults are a BTC-like downside jump
    (about one -8% jump every two months, with 6% dispersion); calibrate them for real use."""

    intensity_per_year: float = 6.0
    mean_log_jump: float = -0.08
    vol_log_jump: float = 0.06

    def __post_init__(self) -> None:
        if not (self.intensity_per_year >= 0.0 and math.isfinite(self.intensity_per_year)):
            raise ValueError(f"intensity_per_year must be >= 0, got {self.intensity_per_year!r}")
        if not math.isfinite(self.mean_log_jump):
            raise ValueError(f"mean_log_jump must be finite, got {self.mean_log_jump!r}")
        if not (self.vol_log_jump >= 0.0 and math.isfinite(self.vol_log_jump)):
            raise ValueError(f"vol_log_jump must be >= 0, got {self.vol_log_jump!r}")

    @property
    def kappa(self) -> float:
        """``E[exp(J)] - 1``: the mean relative jump size, used to compensate the drift."""
        return math.expm1(self.mean_log_jump + 0.5 * self.vol_log_jump**2)


# --------------------------------------------------------------------------- calibration
#
# The density of one log return over ``dt`` years (Merton 1976, eq. 19): with ``N ~ Poisson(l)``
# jumps in the interval, ``l = intensity * dt``, the return is normal given ``N = n``:
#
#     f(r) = sum_{n=0..N_max} w_n phi(r; m - l mu_J + n mu_J, sigma^2 dt + n delta^2)
#     w_n  = Poisson(n; l) / P(N <= N_max)
#
# ``m`` is the mean log return of one interval (``m / dt`` is ``mean_log_return_annual``). The sum
# stops at ``N_max = max_jumps_per_step`` and the weights are renormalized over 0..N_max, so the
# truncated density is still a density (it integrates to 1); at the default cap of one expected
# jump per interval the Poisson mass beyond 10 jumps is below 1e-8.
#
# The drift follows ``models.scenarios.merton_paths(compensated=True)``: the log price gains
# ``(drift - sigma^2/2 - intensity * kappa) dt`` per interval besides the diffusion and the jumps,
# so ``E[S_{t+dt} / S_t] = exp(drift dt)`` and ``m = (drift - sigma^2/2 - intensity kappa) dt +
# l mu_J``. Paths simulated with the fitted parameters reproduce the sample's law.

_MIN_RETURNS = 20
_FIT_PARAMETERS = ("vol_diffusion_annual", "mean_log_return_annual", "intensity_per_year",
                   "mean_log_jump", "vol_log_jump")


def _check_bound(name: str, pair, *, lowest: float = -math.inf,
                 strict: bool = False) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair of numbers, got {pair!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"{name} must be finite with low <= high, got {pair!r}")
    if lo < lowest or (strict and lo <= lowest):
        relation = ">" if strict else ">="
        raise ValueError(f"the low end of {name} must be {relation} {lowest}, got {lo!r}")
    return lo, hi


@dataclass(frozen=True)
class MertonFitBounds:
    """Box bounds of ``fit_merton_jumps``, each a ``(low, high)`` pair in the units of the fitted
    parameter: diffusion vol (annual fraction, low > 0: a zero diffusion would let the no-jump
    component collapse on one return and the likelihood grow without bound), mean log return per
    year, jump intensity (per year, low >= 0), mean and stdev of the log jump (fractions, the
    stdev's low >= 0). A pair with ``low == high`` holds that parameter fixed (an intensity of
    ``(0, 0)`` fits the normal model). ``default_fit_bounds`` derives them from the sample."""

    vol_diffusion_annual: tuple[float, float]
    mean_log_return_annual: tuple[float, float]
    intensity_per_year: tuple[float, float]
    mean_log_jump: tuple[float, float]
    vol_log_jump: tuple[float, float]

    def __post_init__(self) -> None:
        for name, lowest, strict in (("vol_diffusion_annual", 0.0, True),
                                     ("mean_log_return_annual", -math.inf, False),
                                     ("intensity_per_year", 0.0, False),
                                     ("mean_log_jump", -math.inf, False),
                                     ("vol_log_jump", 0.0, False)):
            object.__setattr__(self, name, _check_bound(name, getattr(self, name), lowest=lowest,
                                                        strict=strict))

    def as_pairs(self) -> tuple[tuple[float, float], ...]:
        """The five pairs in the order of the field list (the fit's parameter vector)."""
        return tuple(getattr(self, name) for name in _FIT_PARAMETERS)


@dataclass(frozen=True)
class MertonFit:
    """A Merton jump-diffusion fitted to log returns by maximum likelihood (``fit_merton_jumps``).

    - ``jumps``: the fitted intensity (per year) and log-jump law, ready for
      ``PremiumConfig(jumps=...)`` and ``merton_paths``;
    - ``vol_diffusion_annual``: the diffusion's vol (annual fraction), jumps excluded;
    - ``drift_annual``: the price drift in ``merton_paths(compensated=True)``'s convention
      (``E[S_{t+dt}/S_t] = exp(drift dt)``); ``mean_log_return_annual`` is the mean log return per
      year, jumps included. Both rest on one sample's mean: their standard error is about
      ``total_vol_annual / sqrt(sample years)``, large on a month of data;
    - ``loglik``: the maximized log-likelihood (natural log, densities of the log returns);
      ``loglik_normal`` that of the normal model (no jumps) fitted to the same returns, at its
      closed-form maximum (``vol_normal_annual``, the sample mean);
      ``likelihood_ratio = 2 (loglik - loglik_normal)``, >= 0 up to rounding whenever the bounds
      hold the normal model (the default ones do): the fit never reports a point below it.
      Without jumps the jump law is unidentified (the intensity may sit near 0, or at its cap
      with jumps too small to tell from the diffusion), so the statistic is not chi-square(3);
      as a guide, tens and more say the jumps are real, a few units say they are not. Read the
      likelihood ratio, not the intensity, to decide whether there are jumps;
    - ``stderr_*``: asymptotic standard errors from the observed information (a finite-difference
      Hessian of the log-likelihood); NaN when that Hessian is not positive definite (e.g. a
      parameter on its bound, or an intensity of ~0 leaving the jump law unidentified). They
      assume independent returns: volatility clustering makes the real ones wider;
    - ``converged``: the optimizer of the best start reported convergence (or, when the normal
      model beat every start, the likelihood falls as the intensity leaves 0); ``message`` says
      which; ``n_starts``: how many starting points were run, the best kept.
    """

    jumps: MertonJumps
    vol_diffusion_annual: float
    drift_annual: float
    mean_log_return_annual: float
    loglik: float
    loglik_normal: float
    likelihood_ratio: float
    vol_normal_annual: float
    n_returns: int
    dt_years: float
    max_jumps_per_step: int
    bounds: MertonFitBounds
    converged: bool
    message: str
    n_starts: int
    stderr_vol_diffusion_annual: float
    stderr_drift_annual: float
    stderr_intensity_per_year: float
    stderr_mean_log_jump: float
    stderr_vol_log_jump: float

    @property
    def total_vol_annual(self) -> float:
        """``sqrt(vol_diffusion^2 + intensity (mean_log_jump^2 + vol_log_jump^2))``: the vol of
        the log return with the jumps in it, the total the premium's ``jump_mode="matched"``
        keeps equal to the surface's vol."""
        j = self.jumps
        return math.sqrt(self.vol_diffusion_annual**2
                         + j.intensity_per_year * (j.mean_log_jump**2 + j.vol_log_jump**2))

    @property
    def expected_jumps_in_sample(self) -> float:
        """``intensity * n_returns * dt``: how many jumps the fit says the sample holds."""
        return self.jumps.intensity_per_year * self.n_returns * self.dt_years


def _returns_array(log_returns) -> np.ndarray:
    r = np.asarray(log_returns, dtype=np.float64)
    if r.ndim != 1 or not np.all(np.isfinite(r)):
        raise ValueError("log_returns must be a one-dimensional array of finite numbers")
    return r


def _check_dt(dt_years: float) -> float:
    try:
        dt = float(dt_years)
    except (TypeError, ValueError):
        raise ValueError(f"dt_years must be a number of years > 0, got {dt_years!r}") from None
    if not (math.isfinite(dt) and dt > 0.0):
        raise ValueError(f"dt_years must be a finite number of years > 0, got {dt_years!r}")
    return dt


def _check_count(name: str, value) -> int:
    """``value`` as an int if it is an integer >= 1 (not a bool), else ValueError."""
    try:
        whole = not isinstance(value, bool) and int(value) == value
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _mixture_terms(r: np.ndarray, sigma_step: float, mean_step: float, jumps_per_step: float,
                   mu_j: float, delta: float, max_jumps: int):
    """Per return (rows) and jump count ``n = 0..max_jumps`` (columns): ``log w_n + log phi_n(r)``
    and the pieces the gradient reuses. Parameters per interval."""
    n = np.arange(max_jumps + 1, dtype=np.float64)
    # Poisson log weights renormalized over 0..max_jumps; xlogy makes l = 0 a point mass at n = 0.
    log_w = xlogy(n, jumps_per_step) - jumps_per_step - gammaln(n + 1.0)
    log_w -= math.log(pdtr(max_jumps, jumps_per_step))
    var_n = sigma_step * sigma_step + n * (delta * delta)
    inv_var = 1.0 / var_n
    e = r[:, None] - (mean_step + (n - jumps_per_step) * mu_j)
    q = e * inv_var                  # d log phi_n / d mean_n
    e_q = e * q                      # squared standardized residual
    a = (log_w - 0.5 * np.log(2.0 * math.pi * var_n)) - 0.5 * e_q
    return a, log_w, n, inv_var, q, e_q


def _loglik_and_grad(theta: np.ndarray, r: np.ndarray, max_jumps: int, want_grad: bool = True):
    """Total log-likelihood at ``theta = (sigma_step, mean_step, jumps_per_step, mu_J, delta)``
    (per-interval units) and its gradient in those units (None unless ``want_grad``)."""
    sigma_step, mean_step, ell, mu_j, delta = (float(v) for v in theta)
    a, log_w, n, inv_var, q, e_q = _mixture_terms(r, sigma_step, mean_step, ell, mu_j, delta,
                                                  max_jumps)
    a_max = a.max(axis=1)
    ea = np.exp(a - a_max[:, None])
    total_e = ea.sum(axis=1)
    log_f = a_max + np.log(total_e)
    total = float(np.sum(log_f))
    if not want_grad:
        return total, None
    # Responsibilities gamma = P(n jumps | r): each component's score enters with its weight.
    gamma = ea * (1.0 / total_e)[:, None]
    col_gamma = gamma.sum(axis=0)
    col_mean = np.einsum("ij,ij->j", gamma, q)                          # sum of d log f / d mean_n
    col_var = 0.5 * (np.einsum("ij,ij->j", gamma, e_q) - col_gamma) * inv_var  # ... / d var_n
    g_sigma = 2.0 * sigma_step * float(col_var.sum())
    g_mean = float(col_mean.sum())
    g_mu = float(np.dot(col_mean, n - ell))
    g_delta = 2.0 * delta * float(np.dot(col_var, n))
    # d w_n / d l = w_{n-1} - w_n + w_n w_N (w_N from the renormalization), and
    # w_{n-1} phi_n / f = (n / l) gamma_n while l > 0. At l = 0 only n = 0 has weight and the
    # first term is w_0 phi_1 / f = phi_1 / phi_0 (which overflows to inf for a return far out
    # in the diffusion's tail: the slope there is that steep).
    if ell > 0.0:
        shifted = float(np.dot(col_gamma, n)) / ell
    else:
        with np.errstate(over="ignore"):
            log_phi_1 = -0.5 * (math.log(2.0 * math.pi / inv_var[1]) + e_q[:, 1])
            shifted = float(np.exp(log_w[0] + log_phi_1 - log_f).sum())
    g_ell = shifted + r.size * (math.exp(float(log_w[-1])) - 1.0) - mu_j * g_mean
    return total, np.array([g_sigma, g_mean, g_ell, g_mu, g_delta])


def merton_log_density(log_returns, dt_years: float, vol_diffusion_annual: float,
                       jumps: MertonJumps, *, drift_annual: float = 0.0,
                       max_jumps_per_step: int = 10) -> np.ndarray:
    """Log density of each log return over ``dt_years`` under the Merton jump-diffusion
    (diffusion ``vol_diffusion_annual``, ``jumps``, price drift ``drift_annual`` as in
    ``merton_paths(compensated=True)``), the Poisson sum truncated at ``max_jumps_per_step`` jumps
    and renormalized (module notes). Summed, it is the log-likelihood ``fit_merton_jumps``
    maximizes. Returns an array shaped like ``log_returns`` (1-d)."""
    r = _returns_array(log_returns)
    dt = _check_dt(dt_years)
    max_jumps = _check_count("max_jumps_per_step", max_jumps_per_step)
    if not isinstance(jumps, MertonJumps):
        raise ValueError(f"jumps must be a MertonJumps, got {type(jumps).__name__}")
    if not (math.isfinite(vol_diffusion_annual) and vol_diffusion_annual > 0.0):
        raise ValueError(f"vol_diffusion_annual must be finite and > 0 (0.55, not 55), got "
                         f"{vol_diffusion_annual!r}")
    if not math.isfinite(drift_annual):
        raise ValueError(f"drift_annual must be finite, got {drift_annual!r}")
    ell = jumps.intensity_per_year * dt
    mean_step = ((drift_annual - 0.5 * vol_diffusion_annual**2
                  - jumps.intensity_per_year * jumps.kappa) * dt + ell * jumps.mean_log_jump)
    a, *_ = _mixture_terms(r, vol_diffusion_annual * math.sqrt(dt), mean_step, ell,
                           jumps.mean_log_jump, jumps.vol_log_jump, max_jumps)
    return logsumexp(a, axis=1)


def default_fit_bounds(log_returns, dt_years: float) -> MertonFitBounds:
    """The bounds ``fit_merton_jumps`` uses unless given others, from the sample's stdev ``s``
    (per interval), mean, size ``n`` and largest deviation from the mean ``R``:

    - diffusion vol in ``[0.05 s, 2 s] / sqrt(dt)``: the diffusion carries at least 0.25 % of the
      variance (a smaller one is a degenerate fit, not a finding);
    - mean log return within 25 standard errors (``s / sqrt(n)``) of the sample's;
    - intensity in ``[0, 1 / dt]``: at most one expected jump per interval; more frequent "jumps"
      are indistinguishable from the diffusion;
    - mean log jump in ``[-R, R]`` and its stdev in ``[0, R]``: no jump larger than the largest
      move in the sample.
    """
    r = _returns_array(log_returns)
    dt = _check_dt(dt_years)
    if r.size < 2:
        raise ValueError(f"bounds need at least 2 returns, got {r.size}")
    mean, s = float(np.mean(r)), float(np.std(r))
    if not s > 0.0:
        raise ValueError("the log returns are constant: no variance to model")
    largest = float(np.max(np.abs(r - mean)))
    half_width = 25.0 * s / math.sqrt(r.size)
    return MertonFitBounds(
        vol_diffusion_annual=(0.05 * s / math.sqrt(dt), 2.0 * s / math.sqrt(dt)),
        mean_log_return_annual=((mean - half_width) / dt, (mean + half_width) / dt),
        intensity_per_year=(0.0, 1.0 / dt),
        mean_log_jump=(-largest, largest),
        vol_log_jump=(0.0, largest),
    )


def _moment_starts(r: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
    """Starting points (per-interval units): the normal fit (no jumps), then jumps carrying 10 %,
    30 % and 60 % of the variance with the stdev and mean of the jump set so that the model's
    excess kurtosis and skewness match the sample's (mean log jump 0 in the kurtosis)."""
    mean, s = float(np.mean(r)), float(np.std(r))
    z = (r - mean) / s
    skew = float(np.mean(z**3))
    # Below ~0.3 of excess kurtosis the sample shows no tails to match: start as if it had some.
    kurt = max(float(np.mean(z**4)) - 3.0, 0.3)
    starts = [np.array([s, mean, 0.0, 0.0, s])]
    for share in (0.1, 0.3, 0.6):
        ell = 3.0 * share * share / kurt
        delta = s * math.sqrt(share / ell)
        mu_j = skew * s / (3.0 * share)
        starts.append(np.array([s * math.sqrt(1.0 - share), mean, ell, mu_j, delta]))
    # Strictly inside the box (a start on a bound of delta or l has zero slope in delta, mu_J).
    inner_lo, inner_hi = lo + 1e-3 * (hi - lo), hi - 1e-3 * (hi - lo)
    return [np.clip(x, inner_lo, inner_hi) for x in starts]


def _hessian(fun, x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
    """Central-difference Hessian of ``fun``'s gradient at ``x``; None when a step would leave
    the box (the parameter is on or next to a bound, where no Gaussian error is defined)."""
    k = x.size
    h = 1e-4 * np.maximum(np.abs(x), 1e-3)
    if np.any(x - 2.0 * h < lo) or np.any(x + 2.0 * h > hi):
        return None
    out = np.empty((k, k))
    for j in range(k):
        step = np.zeros(k)
        step[j] = h[j]
        out[:, j] = (fun(x + step)[1] - fun(x - step)[1]) / (2.0 * h[j])
    return 0.5 * (out + out.T)


def fit_merton_jumps(log_returns, dt_years: float, *, max_jumps_per_step: int = 10,
                     bounds: MertonFitBounds | None = None, max_iter: int = 1000) -> MertonFit:
    """Fit Merton's (1976) jump-diffusion to i.i.d. log returns, each over ``dt_years`` (an hour
    is ``3600 / (365 * 86400)``), by maximum likelihood of the Poisson mixture of normals
    truncated at ``max_jumps_per_step`` jumps per interval (``merton_log_density``).

    Five parameters: diffusion vol, mean log return, intensity, mean and stdev of the log jump,
    in the box ``bounds`` (``default_fit_bounds`` of the sample unless given). L-BFGS-B with the
    analytic gradient runs from several starting points (next to the normal fit, and three
    jump laws matched to the sample's skewness and kurtosis; ``n_starts``) in coordinates scaled
    by the sample's stdev, and the best is kept (the normal model itself if it beats them all).
    Returns a ``MertonFit``; see it for the likelihood ratio against the normal model and the
    standard errors.

    The returns should be equally spaced (one ``dt``) and free of gaps: a return across a gap is
    longer than ``dt`` and reads as a jump. The model has constant volatility: returns with
    volatility clustering (real crypto returns) show fat tails that the fit attributes to jumps.
    On such data the maximum is often many small "jumps" (hundreds to thousands a year, a mixture
    of calm and busy hours) rather than rare crashes; cap the intensity through ``bounds`` (or fit
    returns scaled by a volatility forecast) to calibrate rare large jumps. Raises ``ValueError``
    on fewer than 20 returns, constant returns, or bad arguments.
    """
    r = _returns_array(log_returns)
    dt = _check_dt(dt_years)
    max_jumps = _check_count("max_jumps_per_step", max_jumps_per_step)
    max_iter = _check_count("max_iter", max_iter)
    if r.size < _MIN_RETURNS:
        raise ValueError(f"a jump fit needs at least {_MIN_RETURNS} returns, got {r.size}")
    if bounds is None:
        bounds = default_fit_bounds(r, dt)
    elif not isinstance(bounds, MertonFitBounds):
        raise ValueError(f"bounds must be a MertonFitBounds, got {type(bounds).__name__}")
    mean, s = float(np.mean(r)), float(np.std(r))
    if not s > 0.0:
        raise ValueError("the log returns are constant: no variance to model")

    # Per-interval parameters theta = (sigma sqrt(dt), m, l, mu_J, delta); the optimizer sees
    # x = (theta - offset) / scale, O(1) for every parameter but l (already a count per
    # interval). Centring m on the sample mean makes the fit of shifted returns the same problem.
    to_step = np.array([math.sqrt(dt), dt, dt, 1.0, 1.0])
    scale = np.array([s, s, 1.0, s, s])
    offset = np.array([0.0, mean, 0.0, 0.0, 0.0])
    pairs = np.array(bounds.as_pairs())
    theta_lo, theta_hi = pairs[:, 0] * to_step, pairs[:, 1] * to_step
    x_lo, x_hi = (theta_lo - offset) / scale, (theta_hi - offset) / scale
    n_obs = r.size

    def objective(x: np.ndarray):
        # Mean negative log-likelihood per return: O(1) values and gradients for the tolerances.
        theta = np.clip(x * scale + offset, theta_lo, theta_hi)
        ll, grad = _loglik_and_grad(theta, r, max_jumps)
        if not math.isfinite(ll):
            return 1e10, np.zeros_like(x)
        # At an intensity of exactly 0 the slope in it can overflow (a return far in the
        # diffusion's tail): a huge finite slope points the same way.
        grad = np.nan_to_num(-grad * scale / n_obs, nan=0.0, posinf=1e12, neginf=-1e12)
        return -ll / n_obs, grad

    starts = _moment_starts(r, theta_lo, theta_hi)
    best = None
    for start in starts:
        result = optimize.minimize(objective, (start - offset) / scale, jac=True, method="L-BFGS-B",
                                   bounds=list(zip(x_lo, x_hi)),
                                   options={"maxiter": int(max_iter), "ftol": 1e-14, "gtol": 1e-9})
        if best is None or result.fun < best.fun:
            best = result
    x_best = np.clip(best.x, x_lo, x_hi)
    theta = np.clip(x_best * scale + offset, theta_lo, theta_hi)
    loglik, _ = _loglik_and_grad(theta, r, max_jumps, want_grad=False)
    converged, message = bool(best.success), str(best.message)

    loglik_normal = -0.5 * n_obs * (math.log(2.0 * math.pi * s * s) + 1.0)
    normal = np.clip(np.array([s, mean, 0.0, 0.0, 0.0]), theta_lo, theta_hi)
    if normal[0] == s and normal[1] == mean and normal[2] == 0.0 and loglik < loglik_normal:
        # Every start ended in a local maximum below the normal model's, which the bounds hold:
        # the normal model (closed form) is the better fit.
        theta, loglik = normal, _loglik_and_grad(normal, r, max_jumps, want_grad=False)[0]
        x_best = (theta - offset) / scale
        # A maximum on the boundary if the likelihood falls as the intensity leaves 0.
        converged = bool(objective(x_best)[1][2] >= 0.0)
        message = "the normal model (no jumps) beat every start"

    sigma_annual, mean_annual, intensity = theta[0] / to_step[0], theta[1] / dt, theta[2] / dt
    mu_j, delta = float(theta[3]), float(theta[4])
    jumps = MertonJumps(intensity_per_year=float(intensity), mean_log_jump=mu_j, vol_log_jump=delta)
    drift = mean_annual - intensity * mu_j + 0.5 * sigma_annual**2 + intensity * jumps.kappa

    # Standard errors: the inverse observed information in the fit's coordinates, mapped to the
    # reported parameters (a diagonal map), and to the drift by the delta method.
    stderr = np.full(5, math.nan)
    stderr_drift = math.nan
    hess = _hessian(objective, x_best, x_lo, x_hi)
    if hess is not None:
        info = hess * n_obs  # of the total log-likelihood
        try:
            np.linalg.cholesky(info)  # positive definite, or no Gaussian errors to speak of
            positive_definite = True
        except np.linalg.LinAlgError:
            positive_definite = False
        if positive_definite:
            cov_x = np.linalg.inv(info)
            to_report = scale / to_step  # x -> reported units
            cov = cov_x * np.outer(to_report, to_report)
            stderr = np.sqrt(np.diag(cov))
            growth = math.exp(mu_j + 0.5 * delta * delta)
            d_drift = np.array([sigma_annual, 1.0, jumps.kappa - mu_j, intensity * (growth - 1.0),
                                intensity * delta * growth])
            stderr_drift = float(math.sqrt(max(float(d_drift @ cov @ d_drift), 0.0)))

    return MertonFit(
        jumps=jumps, vol_diffusion_annual=float(sigma_annual), drift_annual=float(drift),
        mean_log_return_annual=float(mean_annual), loglik=float(loglik),
        loglik_normal=float(loglik_normal), likelihood_ratio=float(2.0 * (loglik - loglik_normal)),
        vol_normal_annual=s / math.sqrt(dt), n_returns=int(n_obs), dt_years=dt,
        max_jumps_per_step=max_jumps, bounds=bounds, converged=converged,
        message=message, n_starts=len(starts),
        stderr_vol_diffusion_annual=float(stderr[0]), stderr_drift_annual=stderr_drift,
        stderr_intensity_per_year=float(stderr[2]), stderr_mean_log_jump=float(stderr[3]),
        stderr_vol_log_jump=float(stderr[4]),
    )
