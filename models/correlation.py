"""Correlation of multi-asset books (plan 000 PF-308): estimation, repair, correlated Monte Carlo
and portfolio VaR/ES.

- Estimation from log returns: Pearson, and RiskMetrics' EWMA (decay 0.94 for daily data).
- Repair: an estimated or hand-edited matrix may not be a correlation matrix (a negative
  eigenvalue, from pairwise estimates over different windows or from stress overrides).
  ``nearest_correlation`` finds the nearest one in the Frobenius norm (Higham 2002, alternating
  projections with Dykstra's correction); ``eigenvalue_clip`` is the cheaper fix (clip the
  spectrum, rescale to a unit diagonal). Both can then shrink toward the identity so the
  smallest eigenvalue reaches a floor and the result is positive definite (Cholesky needs that).
- Correlated geometric Brownian motion for several coins, through the Cholesky factor.
- Portfolio VaR/ES: parametric (normal, ``sqrt(w' Sigma w) z``, with Euler contributions per
  asset) and Monte Carlo (full revaluation of a ``models.scenarios.Book`` per asset at correlated
  simulated prices).

Conventions: arrays of returns or prices are ``(n_observations, n_assets)``; vols annualized
fractions; horizons in years; exposures in USD (a coin position's exposure is coins x spot);
VaR/ES are losses (positive = money lost), as in ``models.scenarios``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import ndtri

from models.scenarios import (
    Book, RiskEstimate, as_generator, book_value_usd, historical_var_es, normal_var_es,
)

# Temporaries of the path generator hold at most about this many float64 per block (~32 MB),
# as in models.scenarios.
_CHUNK_ELEMENTS = 4_000_000

__all__ = [
    "RISKMETRICS_DECAY", "log_return_matrix", "pearson_correlation", "ewma_covariance",
    "ewma_correlation", "covariance_to_correlation", "correlation_to_covariance",
    "is_correlation_matrix", "eigenvalue_clip", "nearest_correlation", "correlation_factor",
    "correlated_gbm_paths", "parametric_portfolio_var_es", "component_var_usd",
    "monte_carlo_portfolio_var_es",
]

RISKMETRICS_DECAY = 0.94  # RiskMetrics (1996) for daily returns


def _matrix(values, name: str) -> np.ndarray:
    m = np.asarray(values, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 1:
        raise ValueError(f"{name} must be a square 2-d array, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name} must be finite")
    return m


def _returns(values) -> np.ndarray:
    r = np.asarray(values, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] < 2 or r.shape[1] < 1:
        raise ValueError(f"returns must be (n_observations >= 2, n_assets), got {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("returns must be finite")
    return r


# --------------------------------------------------------------------------- estimation


def log_return_matrix(prices_usd) -> np.ndarray:
    """``log(p[t] / p[t-1])`` per column of ``(n_observations, n_assets)`` positive prices."""
    prices = np.asarray(prices_usd, dtype=np.float64)
    if prices.ndim != 2 or prices.shape[0] < 2:
        raise ValueError(f"prices must be (n_observations >= 2, n_assets), got {prices.shape}")
    if not np.all(np.isfinite(prices) & (prices > 0.0)):
        raise ValueError("prices must be finite and > 0")
    return np.diff(np.log(prices), axis=0)


def pearson_correlation(returns) -> np.ndarray:
    """Sample (Pearson) correlation of the columns. A constant column has no correlation: its
    row and column are NaN except the 1 on the diagonal."""
    r = _returns(returns)
    centred = r - r.mean(axis=0)
    cov = centred.T @ centred
    sd = np.sqrt(np.diag(cov))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / np.outer(sd, sd)
    corr = np.clip(corr, -1.0, 1.0)
    np.fill_diagonal(corr, 1.0)
    return corr


def _ewma_weights(n: int, decay: float) -> np.ndarray:
    if not 0.0 < decay < 1.0:
        raise ValueError(f"decay must be in (0, 1), e.g. 0.94, got {decay!r}")
    w = decay ** np.arange(n - 1, -1, -1, dtype=np.float64)
    return w / w.sum()


def ewma_covariance(returns, decay: float = RISKMETRICS_DECAY, *,
                    demean: bool = False) -> np.ndarray:
    """Exponentially weighted covariance per period at the last observation: weights
    ``decay^(n-1-t)`` normalized to sum to 1 (the newest observation weighs most).

    ``demean=False`` is RiskMetrics (returns taken as zero-mean: ``sum w_t r_t r_t'``, the
    recursion ``S_t = decay S_{t-1} + (1 - decay) r_t r_t'`` with its start weighted in);
    ``demean=True`` subtracts the weighted mean first (as pandas'
    ``ewm(alpha=1 - decay).cov(bias=True)``).
    """
    r = _returns(returns)
    w = _ewma_weights(r.shape[0], decay)
    if demean:
        r = r - w @ r
    return (r * w[:, None]).T @ r


def ewma_correlation(returns, decay: float = RISKMETRICS_DECAY, *,
                     demean: bool = False) -> np.ndarray:
    """``ewma_covariance`` scaled to a correlation (same NaN rule as ``pearson_correlation``)."""
    corr, _ = covariance_to_correlation(ewma_covariance(returns, decay, demean=demean))
    return corr


def covariance_to_correlation(covariance) -> tuple[np.ndarray, np.ndarray]:
    """``(correlation, stdevs)`` of a covariance matrix."""
    cov = _matrix(covariance, "covariance")
    var = np.diag(cov)
    if np.any(var < 0.0):
        raise ValueError("a covariance has a non-negative diagonal")
    sd = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.clip(cov / np.outer(sd, sd), -1.0, 1.0)
    np.fill_diagonal(corr, 1.0)
    return corr, sd


def correlation_to_covariance(correlation, stdevs) -> np.ndarray:
    """``diag(sd) C diag(sd)``."""
    corr = _matrix(correlation, "correlation")
    sd = np.asarray(stdevs, dtype=np.float64)
    if sd.shape != (corr.shape[0],) or not np.all(np.isfinite(sd) & (sd >= 0.0)):
        raise ValueError(f"stdevs must be {corr.shape[0]} finite values >= 0")
    return corr * np.outer(sd, sd)


# --------------------------------------------------------------------------- repair


def is_correlation_matrix(matrix, tol: float = 1e-10) -> bool:
    """Symmetric, unit diagonal, entries in [-1, 1], eigenvalues >= ``-tol``."""
    m = _matrix(matrix, "matrix")
    return bool(np.allclose(m, m.T, rtol=0.0, atol=tol)
                and np.allclose(np.diag(m), 1.0, rtol=0.0, atol=tol)
                and np.all(np.abs(m) <= 1.0 + tol)
                and np.linalg.eigvalsh(0.5 * (m + m.T)).min() >= -tol)


def _unit_diagonal(m: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.diag(m))
    out = m / np.outer(d, d)
    out = 0.5 * (out + out.T)
    np.fill_diagonal(out, 1.0)
    return out


def _clip_spectrum(m: np.ndarray, floor: float) -> np.ndarray:
    values, vectors = np.linalg.eigh(0.5 * (m + m.T))
    return (vectors * np.maximum(values, floor)) @ vectors.T


def _floor_spectrum(corr: np.ndarray, floor: float) -> np.ndarray:
    """The least shrinkage toward the identity, ``(1 - t) C + t I``, that lifts the smallest
    eigenvalue of the unit-diagonal ``C`` to ``floor`` (the diagonal stays exactly 1)."""
    if floor <= 0.0:
        return corr
    smallest = float(np.linalg.eigvalsh(corr).min())
    if smallest >= floor:
        return corr
    t = (floor - smallest) / (1.0 - smallest)
    out = (1.0 - t) * corr
    np.fill_diagonal(out, 1.0)
    return out


def _check_floor(min_eigenvalue: float) -> None:
    if not (math.isfinite(min_eigenvalue) and 0.0 <= min_eigenvalue < 1.0):
        raise ValueError(f"min_eigenvalue must be in [0, 1), got {min_eigenvalue!r}")


def eigenvalue_clip(matrix, min_eigenvalue: float = 1e-8) -> np.ndarray:
    """Clip the eigenvalues of a symmetric matrix at 0, rescale to a unit diagonal (Rousseeuw &
    Molenberghs 1993), then shrink toward the identity just enough that the smallest eigenvalue
    is ``min_eigenvalue`` (positive definite when it is > 0). Valid, cheap, but not the nearest
    correlation matrix (see ``nearest_correlation``)."""
    m = _matrix(matrix, "matrix")
    _check_floor(min_eigenvalue)
    return _floor_spectrum(_unit_diagonal(_clip_spectrum(m, 0.0)), min_eigenvalue)


def nearest_correlation(matrix, *, min_eigenvalue: float = 0.0, tol: float = 1e-12,
                        max_iterations: int = 10_000) -> np.ndarray:
    """The correlation matrix nearest to ``matrix`` (symmetric) in the Frobenius norm, by
    Higham's (2002) alternating projections with Dykstra's correction: project onto the
    positive semidefinite cone, then onto the unit-diagonal matrices, until the iterates stop
    moving (relative change < ``tol``).

    ``min_eigenvalue > 0`` then shrinks the result toward the identity just enough that its
    smallest eigenvalue is that floor, so it is positive definite; the projection itself is only
    semidefinite, which Cholesky can refuse.
    Raises if it has not converged after ``max_iterations``.
    """
    a = _matrix(matrix, "matrix")
    if not np.allclose(a, a.T, rtol=0.0, atol=1e-12 * max(1.0, np.abs(a).max())):
        raise ValueError("matrix must be symmetric")
    _check_floor(min_eigenvalue)
    y = 0.5 * (a + a.T)
    correction = np.zeros_like(y)
    for _ in range(int(max_iterations)):
        r = y - correction
        x = _clip_spectrum(r, 0.0)
        correction = x - r
        y_next = x.copy()
        np.fill_diagonal(y_next, 1.0)
        change = np.linalg.norm(y_next - y) / max(np.linalg.norm(y_next), 1.0)
        y = y_next
        if change < tol and np.linalg.norm(y - x) / max(np.linalg.norm(y), 1.0) < math.sqrt(tol):
            break
    else:
        raise ValueError(f"nearest_correlation did not converge in {max_iterations} iterations")
    # The last projection was onto the unit diagonal; clip the tiny negative eigenvalues left
    # by stopping at a tolerance, then lift the spectrum to the floor.
    return _floor_spectrum(_unit_diagonal(_clip_spectrum(y, 0.0)), min_eigenvalue)


def correlation_factor(correlation) -> np.ndarray:
    """A lower-triangular ``L`` with ``L L' = correlation``: the Cholesky factor, or, for a
    singular positive semidefinite matrix (perfectly correlated assets), a factor from the
    eigendecomposition. Raises if the matrix is not a correlation matrix (repair it first with
    ``nearest_correlation``)."""
    corr = _matrix(correlation, "correlation")
    if not is_correlation_matrix(corr, tol=1e-9):
        raise ValueError("not a correlation matrix (symmetric, unit diagonal, PSD); repair it "
                         "with nearest_correlation or eigenvalue_clip")
    try:
        return np.linalg.cholesky(corr)
    except np.linalg.LinAlgError:
        # Semidefinite: V sqrt(max(lambda, 0)), made lower-triangular by a QR of its transpose.
        values, vectors = np.linalg.eigh(corr)
        root = vectors * np.sqrt(np.maximum(values, 0.0))
        _, upper = np.linalg.qr(root.T)
        lower = upper.T
        return lower * np.where(np.diag(lower) < 0.0, -1.0, 1.0)


# --------------------------------------------------------------------------- simulation


def _per_asset(values, n: int, name: str) -> np.ndarray:
    v = np.broadcast_to(np.asarray(values, dtype=np.float64), (n,)).copy()
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be finite")
    return v


def correlated_gbm_paths(spots_usd, vols_annual, correlation, horizon_years: float,
                         n_steps: int, n_paths: int, rng: np.random.Generator | int, *,
                         drifts_annual=0.0) -> np.ndarray:
    """Correlated geometric Brownian motions, shape ``(n_paths, n_steps + 1, n_assets)``.

    Each step adds ``(drift_i - vol_i^2/2) dt + vol_i sqrt(dt) (L Z)_i`` to asset ``i``'s log
    price, ``Z`` independent standard normals and ``L`` the factor of ``correlation`` (so the
    log returns have exactly that correlation and ``E[S_i(T)] = S_i(0) e^{drift_i T}``).
    """
    spots = np.atleast_1d(np.asarray(spots_usd, dtype=np.float64))
    n_assets = spots.size
    if spots.ndim != 1 or not np.all(np.isfinite(spots) & (spots > 0.0)):
        raise ValueError("spots_usd must be a 1-d array of finite prices > 0")
    vols = _per_asset(vols_annual, n_assets, "vols_annual")
    if np.any(vols < 0.0):
        raise ValueError("vols_annual must be >= 0 (0.55, not 55)")
    drifts = _per_asset(drifts_annual, n_assets, "drifts_annual")
    factor = correlation_factor(correlation)
    if factor.shape != (n_assets, n_assets):
        raise ValueError(f"correlation must be {n_assets}x{n_assets}, got {factor.shape}")
    if not (math.isfinite(horizon_years) and horizon_years >= 0.0):
        raise ValueError(f"horizon_years must be finite and >= 0, got {horizon_years!r}")
    if int(n_steps) != n_steps or n_steps < 1 or int(n_paths) != n_paths or n_paths < 1:
        raise ValueError("n_steps and n_paths must be integers >= 1")
    gen = as_generator(rng)
    n_paths, n_steps = int(n_paths), int(n_steps)
    dt = horizon_years / n_steps
    scaled_factor_t = factor.T * (vols * math.sqrt(dt))
    drift_step = (drifts - 0.5 * vols**2) * dt
    out = np.empty((n_paths, n_steps + 1, n_assets))
    out[:, 0, :] = spots
    # Blocks of paths bound the temporaries; the normals are drawn in path order, so the result
    # does not depend on the block size.
    rows = max(1, _CHUNK_ELEMENTS // (n_steps * n_assets))
    for start in range(0, n_paths, rows):
        stop = min(start + rows, n_paths)
        increments = gen.standard_normal((stop - start, n_steps, n_assets)) @ scaled_factor_t
        increments += drift_step
        block = out[start:stop, 1:, :]
        np.cumsum(increments, axis=1, out=block)
        del increments
        np.exp(block, out=block)
        block *= spots
    return out


# --------------------------------------------------------------------------- portfolio risk


def _horizon_covariance(vols_annual, correlation, horizon_years: float, n: int) -> np.ndarray:
    corr = _matrix(correlation, "correlation")
    if corr.shape != (n, n):
        raise ValueError(f"correlation must be {n}x{n}, got {corr.shape}")
    if not is_correlation_matrix(corr, tol=1e-9):
        raise ValueError("not a correlation matrix; repair it with nearest_correlation")
    if not (math.isfinite(horizon_years) and horizon_years >= 0.0):
        raise ValueError(f"horizon_years must be finite and >= 0, got {horizon_years!r}")
    vols = _per_asset(vols_annual, n, "vols_annual")
    if np.any(vols < 0.0):
        raise ValueError("vols_annual must be >= 0")
    return correlation_to_covariance(corr, vols) * horizon_years


def parametric_portfolio_var_es(exposures_usd, vols_annual, correlation, horizon_years: float,
                                confidence: float, *, drifts_annual=0.0) -> RiskEstimate:
    """Delta-normal VaR/ES of a portfolio with USD ``exposures_usd`` per asset: P&L over the
    horizon ~ Normal(``sum w_i drift_i h``, ``w' Sigma_h w``), ``Sigma_h = diag(vol) C diag(vol)
    h``; so ``VaR = z sqrt(w' Sigma_h w) - mean``, ``z = Phi^-1(confidence)``."""
    w = np.atleast_1d(np.asarray(exposures_usd, dtype=np.float64))
    if w.ndim != 1 or not np.all(np.isfinite(w)):
        raise ValueError("exposures_usd must be a 1-d array of finite USD amounts")
    cov = _horizon_covariance(vols_annual, correlation, horizon_years, w.size)
    mean = float(w @ _per_asset(drifts_annual, w.size, "drifts_annual")) * horizon_years
    stdev = math.sqrt(max(float(w @ cov @ w), 0.0))
    return normal_var_es(mean, stdev, confidence)._replace(method="parametric")


def component_var_usd(exposures_usd, vols_annual, correlation, horizon_years: float,
                      confidence: float) -> np.ndarray:
    """Euler allocation of the zero-mean parametric VaR to the assets:
    ``w_i (Sigma_h w)_i / sqrt(w' Sigma_h w) z``; they sum to the portfolio VaR, and a negative
    one is a hedge."""
    w = np.atleast_1d(np.asarray(exposures_usd, dtype=np.float64))
    if w.ndim != 1 or not np.all(np.isfinite(w)):
        raise ValueError("exposures_usd must be a 1-d array of finite USD amounts")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    cov = _horizon_covariance(vols_annual, correlation, horizon_years, w.size)
    marginal = cov @ w
    stdev = math.sqrt(max(float(w @ marginal), 0.0))
    if stdev == 0.0:
        return np.zeros_like(w)
    return w * marginal / stdev * float(ndtri(confidence))


def monte_carlo_portfolio_var_es(books: Sequence[Book], spots_usd, vols_annual, correlation,
                                 horizon_years: float, confidence: float, n_paths: int,
                                 rng: np.random.Generator | int, *, drifts_annual=0.0,
                                 rate_annual: float = 0.0) -> RiskEstimate:
    """Monte Carlo VaR/ES of one ``Book`` per asset (coins and options on that asset): correlated
    GBM prices at the horizon (one exact step), every book fully revalued there
    (``models.scenarios.book_value_usd``, legs aged by the horizon, vols unchanged), P&L summed
    across books against their value now, then the empirical estimator."""
    spots = np.atleast_1d(np.asarray(spots_usd, dtype=np.float64))
    if len(books) != spots.size:
        raise ValueError(f"one book per asset: {len(books)} books for {spots.size} spots")
    terminal = correlated_gbm_paths(spots, vols_annual, correlation, horizon_years, 1, n_paths,
                                    rng, drifts_annual=drifts_annual)[:, -1, :]
    pnl = np.zeros(int(n_paths))
    for i, book in enumerate(books):
        now = float(book_value_usd(book, spots[i], rate_annual=rate_annual))
        pnl += book_value_usd(book, terminal[:, i], elapsed_years=horizon_years,
                              rate_annual=rate_annual) - now
    return historical_var_es(pnl, confidence)._replace(method="monte_carlo")
