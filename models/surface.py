"""The implied-volatility surface: SVI, SSVI and eSSVI fits of an option chain, free of static
arbitrage by construction, with interpolation in strike and time and the smile's summary numbers.

Conventions. ``k = ln(K / F_T)`` is log-moneyness on each expiry's forward; ``T`` is years to
expiry (seconds / (365 * 86400)); ``w(k, T) = sigma_imp(k, T)^2 T`` is total implied variance;
vols are annualized fractions (0.55, not 55). Options are undiscounted (Black-76 on the forward),
as Deribit quotes them.

Models (every fitted slice is a raw SVI ``w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2))``):

* ``"svi"`` - one raw SVI per expiry, by the quasi-explicit method (Zeliade Systems 2009): with
  ``y = (k - m) / sigma`` the slice is ``a + d y + c sqrt(y^2 + 1)``, linear in ``(a, d, c)``
  (``d = rho b sigma``, ``c = b sigma``), so for fixed ``(m, sigma)`` the best ``(a, d, c)`` is a
  linearly constrained least-squares problem (solved exactly: Lawson & Hanson's LSI -> LDP -> NNLS),
  and only ``(m, sigma)`` are searched (Nelder-Mead). The linear constraints are ``b >= 0``,
  ``|rho| <= 1``, ``a >= 0``, Lee's wing bound ``b (1 + |rho|) < 2`` and - expiries fitted in
  order - the calendar constraint ``w_i(k) >= w_{i-1}(k)`` on a k-grid plus non-decreasing wing
  slopes. Durrleman's ``g(k) >= 0`` (no butterfly) is not linear: it is a penalty in the outer
  search, then a constraint of an SLSQP polish of the 5 parameters when the penalty was not
  enough; a slice still arbitrageable after that is skipped (listed in ``skipped_expiry_years``).
  An expiry needs ``min_strikes_per_expiry`` (default 5) strikes.
* ``"ssvi"`` - Gatheral & Jacquier (2014) ``w = theta/2 (1 + rho phi k + sqrt((phi k + rho)^2 + 1
  - rho^2))`` with one ``theta`` per expiry (non-decreasing), one ``rho`` and the power law
  ``phi(theta) = eta theta^-gamma (1 + theta)^(gamma - 1)``, fitted jointly. ``gamma`` in (0, 1)
  and non-decreasing ``theta`` exclude calendar arbitrage (their Theorem 4.1: ``theta phi`` then
  increases and ``phi`` decreases); ``eta`` is bounded so that the butterfly conditions
  ``theta phi (1 + |rho|) < 4`` and ``theta phi^2 (1 + |rho|) <= 4`` (their Theorem 4.2) hold for
  every ``theta`` the surface uses - the bound is part of the parametrization, so every candidate
  the optimizer tries is arbitrage-free.
* ``"essvi"`` - extended SSVI (Hendriks & Martini 2019; Corbetta, Cohort, Laachir & Martini 2019):
  each expiry has its own ``(theta_i, rho_i, psi_i = theta_i phi_i)``, fitted slice by slice
  from the SSVI fit (its starting point and a weak prior, which keeps expiries with one or two
  strikes well posed). Butterfly: ``psi (1 + |rho|) < 4`` and ``psi^2 (1 + |rho|) <= 4 theta``.
  Calendar between consecutive slices (sufficient): with ``p = max((1 + rho_{i-1}) / (1 + rho_i),
  (1 - rho_{i-1}) / (1 - rho_i))``, ``theta_i >= p theta_{i-1}``, ``psi_i >= p psi_{i-1}`` and
  ``psi_i / theta_i <= psi_{i-1} / theta_{i-1}`` (the last as in Mingone 2022's global eSSVI
  parametrization). As for SSVI, the constraints are the parametrization.

Weights. Residuals are in volatility, divided by each option's bid-ask spread in volatility
(``ask_vol - bid_vol``, floored at ``min_spread_vol``; ``default_spread_vol`` where a side is
missing): an option quoted tightly counts more.

Interpolation and extrapolation in time (each preserves the absence of calendar arbitrage):
between fitted expiries, SSVI interpolates ``theta`` linearly in ``T`` (the slice stays in the
arbitrage-free family); SVI and eSSVI interpolate ``w`` linearly in ``T`` at fixed ``k``. Before
the first expiry the first slice is scaled, ``w(k, T) = T / T_1 w_1(k)`` (scaling by a factor
below 1 keeps ``g >= 0``: ``g`` is concave in the factor). After the last, the ATM implied vol is
held flat, ``theta(T) = theta_N T / T_N``: SSVI and eSSVI keep their slice shape parameters
(``phi(theta)``, resp. ``rho_N, psi_N``; still arbitrage-free), SVI shifts the last slice up by
the ATM variance added.

Summary numbers: ``atm_vol`` at ``k = 0``; the 25-delta strikes solve forward (Black-76,
undiscounted, no premium adjustment) delta ``N(d1) = 0.25`` for the call and ``N(d1) - 1 = -0.25``
for the put on the fitted smile, ``d1 = -k / sqrt(w) + sqrt(w) / 2``; ``RR = vol(25dC) -
vol(25dP)``, ``BF = (vol(25dC) + vol(25dP)) / 2 - vol(ATM)``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares, minimize, nnls

METHODS = ("svi", "ssvi", "essvi")

_RHO_MAX = 0.999
_BUTTERFLY_MARGIN = 1e-6  # strict "< 4" of Gatheral-Jacquier, and a little room for rounding
_CALENDAR_MARGIN = 1e-10  # total variance
_G_MARGIN = 1e-5  # what SVI's polish asks of Durrleman's g on its grid
_D1_25 = 0.6744897501960817  # N^-1(0.75)


# --------------------------------------------------------------------------- slice math


def svi_total_variance(k, a, b, rho, m, sigma):
    """Raw SVI total variance ``a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2))``."""
    x = np.asarray(k, dtype=np.float64) - m
    return a + b * (rho * x + np.sqrt(x * x + sigma * sigma))


def svi_derivatives(k, a, b, rho, m, sigma):
    """``(w, dw/dk, d2w/dk2)`` of a raw SVI slice (closed form)."""
    x = np.asarray(k, dtype=np.float64) - m
    root = np.sqrt(x * x + sigma * sigma)
    w = a + b * (rho * x + root)
    w1 = b * (rho + x / root)
    w2 = b * sigma * sigma / (root * root * root)
    return w, w1, w2


def durrleman_g(k, w, w1, w2):
    """Durrleman's ``g(k) = (1 - k w' / (2 w))^2 - w'^2 / 4 (1 / w + 1 / 4) + w'' / 2`` from the
    total variance and its first two k-derivatives. The slice is free of butterfly arbitrage
    where ``g >= 0`` (the risk-neutral density is ``g / sqrt(2 pi w) exp(-d2^2 / 2)``)."""
    k = np.asarray(k, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (1.0 - k * w1 / (2.0 * w)) ** 2 - 0.25 * w1 * w1 * (1.0 / w + 0.25) + 0.5 * w2


def svi_g(k, a, b, rho, m, sigma):
    """Durrleman's ``g`` of a raw SVI slice, in closed form."""
    return durrleman_g(k, *svi_derivatives(k, a, b, rho, m, sigma))


def ssvi_total_variance(k, theta, rho, psi):
    """SSVI slice in ``psi = theta phi`` form: ``(theta + rho psi k + sqrt(psi^2 k^2 + 2 rho psi
    theta k + theta^2)) / 2`` (equal to Gatheral-Jacquier's form, well defined as ``theta -> 0``)."""
    k = np.asarray(k, dtype=np.float64)
    pk = psi * k
    return 0.5 * (theta + rho * pk + np.sqrt(pk * pk + 2.0 * rho * pk * theta + theta * theta))


def ssvi_to_svi(theta, rho, psi):
    """Raw SVI ``(a, b, rho, m, sigma)`` of SSVI slices (Gatheral & Jacquier, Lemma 3.1)."""
    theta, rho, psi = (np.asarray(v, dtype=np.float64) for v in (theta, rho, psi))
    root = np.sqrt(1.0 - rho * rho)
    return (0.5 * theta * (1.0 - rho * rho), 0.5 * psi, rho, -rho * theta / psi,
            theta * root / psi)


def power_law_phi(theta, eta, gamma):
    """``phi(theta) = eta theta^-gamma (1 + theta)^(gamma - 1)`` (Gatheral & Jacquier, 4.5)."""
    theta = np.asarray(theta, dtype=np.float64)
    return eta * theta ** (-gamma) * (1.0 + theta) ** (gamma - 1.0)


def ssvi_eta_max(rho, gamma, theta_min):
    """The largest power-law ``eta`` with ``theta phi (1 + |rho|) < 4`` and ``theta phi^2
    (1 + |rho|) <= 4`` for every ``theta >= theta_min``. ``theta phi = eta (theta / (1 +
    theta))^(1 - gamma)`` rises to ``eta``; ``theta phi^2 / eta^2 = theta^(1 - 2 gamma) (1 +
    theta)^(2 gamma - 2)`` peaks at ``theta = 1 - 2 gamma`` and falls after it."""
    one_rho = 1.0 + abs(rho)
    peak = max(1.0 - 2.0 * gamma, theta_min)
    h = peak ** (1.0 - 2.0 * gamma) * (1.0 + peak) ** (2.0 * gamma - 2.0)
    return (1.0 - _BUTTERFLY_MARGIN) * min(4.0 / one_rho, math.sqrt(4.0 / (one_rho * h)))


def essvi_psi_max(theta, rho):
    """Butterfly bound of an SSVI slice: ``psi (1 + |rho|) < 4`` and ``psi^2 (1 + |rho|) <= 4
    theta``."""
    one_rho = 1.0 + np.abs(rho)
    return (1.0 - _BUTTERFLY_MARGIN) * np.minimum(4.0 / one_rho, np.sqrt(4.0 * theta / one_rho))


def essvi_calendar_p(rho_prev, rho):
    """``p = max((1 + rho_prev) / (1 + rho), (1 - rho_prev) / (1 - rho))``: the factor by which
    ``theta`` and ``psi`` must at least grow from one eSSVI slice to the next."""
    return np.maximum((1.0 + rho_prev) / (1.0 + rho), (1.0 - rho_prev) / (1.0 - rho))


# --------------------------------------------------------------------------- config and result


@dataclass(frozen=True)
class SurfaceFitConfig:
    """How ``fit_surface`` fits. ``method`` is one of ``"svi"``, ``"ssvi"``, ``"essvi"``.

    ``min_strikes_per_expiry``: an expiry with fewer valid options is skipped (None: 5 for SVI,
    whose slice has 5 parameters; 1 for SSVI/eSSVI, which pool the smile's shape across
    expiries). ``min_options``: fewer valid options in all is an error. Spreads (vol fractions):
    ``default_spread_vol`` where bid or ask vol is missing, floored at ``min_spread_vol``.
    ``grid_k_max``/``grid_points``: the k-grid on which SVI's calendar and butterfly constraints
    are imposed (plus points scaled to each slice's width). ``essvi_prior_weight``: the weight,
    in spread units, pulling each eSSVI slice's ``rho`` and ``ln psi`` towards the SSVI fit.
    Options whose ``expiry_years`` differ by less than ``expiry_tolerance_years`` (1 hour) are
    one expiry.
    """

    method: str = "essvi"
    min_strikes_per_expiry: int | None = None
    min_options: int = 5
    default_spread_vol: float = 0.05
    min_spread_vol: float = 0.002
    grid_k_max: float = 3.0
    grid_points: int = 41
    essvi_prior_weight: float = 1.0
    expiry_tolerance_years: float = 3_600.0 / (365.0 * 86_400.0)
    max_nfev: int = 400

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.min_strikes_per_expiry is not None and self.min_strikes_per_expiry < 1:
            raise ValueError(f"min_strikes_per_expiry must be >= 1, got {self.min_strikes_per_expiry!r}")
        if not (self.default_spread_vol > 0.0 and self.min_spread_vol > 0.0):
            raise ValueError("default_spread_vol and min_spread_vol must be positive")
        if not (self.grid_k_max > 0.0 and self.grid_points >= 3):
            raise ValueError("grid_k_max must be positive and grid_points >= 3")

    @property
    def strikes_needed(self) -> int:
        if self.min_strikes_per_expiry is not None:
            return self.min_strikes_per_expiry
        return 5 if self.method == "svi" else 1


@dataclass(frozen=True)
class ArbitrageReport:
    """``check_arbitrage``'s verdict: ``min_g`` is the smallest Durrleman ``g`` over the grid and
    the fitted expiries; violations count (expiry, k) points with ``g < 0`` (butterfly) and with
    ``w`` lower at the next expiry (calendar)."""

    ok: bool
    min_g: float
    butterfly_violations: int
    calendar_violations: int


@dataclass(frozen=True, eq=False)
class SurfaceFit:
    """A fitted surface; plain arrays and numbers only (picklable: it crosses process pools).

    Per fitted expiry (sorted): ``expiry_years``, ``forward_usd`` (median of the options'
    forwards), ``theta`` (ATM total variance ``w(0, T_i)``) and the raw SVI parameters
    ``svi_a, svi_b, svi_rho, svi_m, svi_sigma`` of the slice. ``ssvi_rho/eta/gamma`` are the
    global SSVI parameters (NaN for other methods); ``essvi_psi`` the eSSVI ``theta phi`` per
    expiry (NaN for SVI). ``input_k``/``input_years`` keep every input row's coordinates (NaN
    where the row was invalid) for ``fitted_vol``.
    """

    method: str
    n_options: int
    n_expiries: int
    n_dropped: int
    rmse_vol: float
    within_spread_fraction: float
    expiry_years: np.ndarray
    forward_usd: np.ndarray
    theta: np.ndarray
    svi_a: np.ndarray
    svi_b: np.ndarray
    svi_rho: np.ndarray
    svi_m: np.ndarray
    svi_sigma: np.ndarray
    essvi_psi: np.ndarray
    ssvi_rho: float = float("nan")
    ssvi_eta: float = float("nan")
    ssvi_gamma: float = float("nan")
    skipped_expiry_years: tuple = ()
    skipped_reasons: tuple = ()
    input_k: np.ndarray = field(default_factory=lambda: np.empty(0))
    input_years: np.ndarray = field(default_factory=lambda: np.empty(0))

    # ------------------------------------------------------------------ evaluation

    def _slice_w(self, k: np.ndarray, i: np.ndarray) -> np.ndarray:
        return svi_total_variance(k, self.svi_a[i], self.svi_b[i], self.svi_rho[i], self.svi_m[i],
                                  self.svi_sigma[i])

    def _family_w(self, k: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """``w`` of the SSVI family at ``theta``: SSVI's ``phi(theta)``; for eSSVI (used past
        the last expiry only) the last slice's ``rho_N, psi_N``."""
        if self.method == "ssvi":
            psi = theta * power_law_phi(theta, self.ssvi_eta, self.ssvi_gamma)
            return ssvi_total_variance(k, theta, self.ssvi_rho, psi)
        return ssvi_total_variance(k, theta, self.svi_rho[-1], self.essvi_psi[-1])

    def total_variance(self, k, T):
        """Total implied variance ``w(k, T)`` (broadcasting numpy; NaN where ``T <= 0``)."""
        k, T = np.broadcast_arrays(np.asarray(k, dtype=np.float64), np.asarray(T, dtype=np.float64))
        shape = k.shape
        k, T = k.ravel(), T.ravel()
        out = np.full(k.shape, np.nan)
        years = self.expiry_years
        n = years.size
        t1, tn = years[0], years[-1]
        early = (T > 0.0) & (T < t1)
        late = T > tn
        mid = (T >= t1) & (T <= tn)
        if early.any():
            first = np.zeros(early.sum(), dtype=np.int64)
            if self.method == "ssvi":
                w1 = self._family_w(k[early], np.full(first.size, self.theta[0]))
            else:
                w1 = self._slice_w(k[early], first)
            out[early] = T[early] / t1 * w1
        if late.any():
            theta_late = self.theta[-1] * T[late] / tn
            if self.method == "svi":
                last = np.full(late.sum(), n - 1)
                out[late] = self._slice_w(k[late], last) + theta_late - self.theta[-1]
            else:
                out[late] = self._family_w(k[late], theta_late)
        if mid.any():
            km, tm = k[mid], T[mid]
            if self.method == "ssvi":
                out[mid] = self._family_w(km, np.interp(tm, years, self.theta))
            else:
                hi = np.clip(np.searchsorted(years, tm, side="left"), 0, n - 1)
                lo = np.maximum(hi - 1, 0)
                span = years[hi] - years[lo]
                alpha = np.where(span > 0.0, (tm - years[lo]) / np.where(span > 0.0, span, 1.0), 1.0)
                out[mid] = (1.0 - alpha) * self._slice_w(km, lo) + alpha * self._slice_w(km, hi)
        return out.reshape(shape)

    def implied_vol(self, k, T):
        """Implied vol ``sqrt(w(k, T) / T)`` (annualized fraction) at log-moneyness ``k =
        ln(K / F_T)`` and ``T`` years; NaN where ``T <= 0``."""
        T = np.asarray(T, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(self.total_variance(k, T) / T)

    def atm_vol(self, T):
        """At-the-forward implied vol at ``T`` years (scalar or array)."""
        return self.implied_vol(0.0, T)

    def delta_25_log_moneyness(self, T):
        """``(k_call, k_put)``: log-moneyness of the 25-delta call and put at ``T`` (forward
        delta on the fitted smile), by bisection; NaN where the smile does not bracket them."""
        T = np.asarray(T, dtype=np.float64)
        shape = T.shape
        flat = T.ravel()
        out = []
        for target in (-_D1_25, _D1_25):  # call: N(d1) = 0.25; put: N(d1) = 0.75
            lo = np.full(flat.shape, -10.0)
            hi = np.full(flat.shape, 10.0)

            def d1(kk):
                w = self.total_variance(kk, flat)
                root = np.sqrt(w)
                return -kk / root + 0.5 * root

            ok = (d1(lo) > target) & (d1(hi) < target)
            for _ in range(64):
                mid = 0.5 * (lo + hi)
                above = d1(mid) > target
                lo = np.where(above, mid, lo)
                hi = np.where(above, hi, mid)
            out.append(np.where(ok, 0.5 * (lo + hi), np.nan).reshape(shape))
        return out[0], out[1]

    def _wing_vols(self, T):
        T = np.asarray(T, dtype=np.float64)
        k_call, k_put = self.delta_25_log_moneyness(T)
        return self.implied_vol(k_call, T), self.implied_vol(k_put, T)

    def risk_reversal_25d(self, T):
        """``vol(25-delta call) - vol(25-delta put)`` at ``T`` (negative: puts richer)."""
        call, put = self._wing_vols(T)
        return call - put

    def butterfly_25d(self, T):
        """``(vol(25-delta call) + vol(25-delta put)) / 2 - vol(ATM)`` at ``T``."""
        call, put = self._wing_vols(T)
        return 0.5 * (call + put) - self.atm_vol(T)

    def forward(self, T):
        """Forward (USD) at ``T`` years: ``ln F`` linear in ``T`` between fitted expiries, the
        nearest segment's carry beyond them (flat forward with a single expiry)."""
        T = np.asarray(T, dtype=np.float64)
        years, log_f = self.expiry_years, np.log(self.forward_usd)
        if years.size == 1:
            return np.full(T.shape, self.forward_usd[0]) if T.shape else float(self.forward_usd[0])
        carry_first = (log_f[1] - log_f[0]) / (years[1] - years[0])
        carry_last = (log_f[-1] - log_f[-2]) / (years[-1] - years[-2])
        inside = np.interp(T, years, log_f)
        log_fwd = np.where(T < years[0], log_f[0] + carry_first * (T - years[0]),
                           np.where(T > years[-1], log_f[-1] + carry_last * (T - years[-1]), inside))
        return np.exp(log_fwd)

    def fitted_vol(self):
        """The fitted vol at every input row of ``fit_surface`` (NaN where the row was invalid)."""
        return self.implied_vol(self.input_k, self.input_years)

    def params_dict(self) -> dict:
        """The fitted parameters as a JSON-able dict (plain floats and lists)."""
        out = {
            "method": self.method,
            "expiry_years": self.expiry_years.tolist(),
            "forward_usd": self.forward_usd.tolist(),
            "theta": self.theta.tolist(),
            "svi": {name: getattr(self, f"svi_{name}").tolist()
                    for name in ("a", "b", "rho", "m", "sigma")},
            "skipped_expiry_years": [float(x) for x in self.skipped_expiry_years],
            "skipped_reasons": list(self.skipped_reasons),
        }
        if self.method == "ssvi":
            out["ssvi"] = {"rho": float(self.ssvi_rho), "eta": float(self.ssvi_eta),
                           "gamma": float(self.ssvi_gamma)}
        if self.method == "essvi":
            out["essvi"] = {"theta": self.theta.tolist(), "rho": self.svi_rho.tolist(),
                            "psi": self.essvi_psi.tolist()}
        return out


def check_arbitrage(fit: SurfaceFit, k_grid, *, tolerance: float = 1e-9) -> ArbitrageReport:
    """Static-arbitrage check of ``fit`` on ``k_grid`` (log-moneyness): Durrleman's ``g`` (closed
    form) at every fitted expiry, and ``w`` non-decreasing from each fitted expiry to the next.
    ``g`` below ``-tolerance``, or ``w`` falling by more than ``tolerance`` (relative to the
    slice's ATM total variance), is a violation."""
    k = np.asarray(k_grid, dtype=np.float64).ravel()
    n = fit.expiry_years.size
    params = [p[:, None] for p in (fit.svi_a, fit.svi_b, fit.svi_rho, fit.svi_m, fit.svi_sigma)]
    w, w1, w2 = svi_derivatives(k[None, :], *params)
    g = durrleman_g(k[None, :], w, w1, w2)
    g = np.where(np.isfinite(g), g, -np.inf)
    butterfly = int(np.count_nonzero(g < -tolerance)) + int(np.count_nonzero(w <= 0.0))
    calendar = 0
    if n > 1:
        drop = w[:-1] - w[1:]
        calendar = int(np.count_nonzero(drop > tolerance * fit.theta[:-1, None]))
    min_g = float(np.min(g)) if g.size else float("nan")
    return ArbitrageReport(ok=butterfly == 0 and calendar == 0, min_g=min_g,
                           butterfly_violations=butterfly, calendar_violations=calendar)


# --------------------------------------------------------------------------- inputs


@dataclass
class _Chain:
    """The valid options, grouped by expiry (sorted), with their weights."""

    k: np.ndarray
    T: np.ndarray
    mid: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    spread: np.ndarray
    expiry: np.ndarray  # index into years, per option
    years: np.ndarray
    forward: np.ndarray  # per expiry


def _prepare(strike_usd, expiry_years, forward_usd, mid_vol, bid_vol, ask_vol,
             config: SurfaceFitConfig):
    arrays = [np.asarray(a, dtype=np.float64).ravel()
              for a in (strike_usd, expiry_years, forward_usd, mid_vol, bid_vol, ask_vol)]
    n = arrays[0].size
    if any(a.size != n for a in arrays):
        raise ValueError("strike_usd, expiry_years, forward_usd, mid_vol, bid_vol and ask_vol "
                         f"must have equal lengths, got {[a.size for a in arrays]}")
    strike, years, forward, mid, bid, ask = arrays
    with np.errstate(invalid="ignore", divide="ignore"):
        valid = (np.isfinite(strike) & np.isfinite(years) & np.isfinite(forward) & np.isfinite(mid)
                 & (strike > 0.0) & (years > 0.0) & (forward > 0.0) & (mid > 0.0))
        k_all = np.where(valid, np.log(np.where(valid, strike / forward, 1.0)), np.nan)
    years_all = np.where(valid, years, np.nan)
    rows = np.flatnonzero(valid)
    # Options whose times to expiry differ by less than ``expiry_tolerance_years`` share an
    # expiry (tickers of one expiry stamped a few seconds apart; listed expiries are >= 1 day).
    order = np.argsort(years[rows], kind="stable")
    sorted_years = years[rows][order]
    starts = np.r_[True, np.diff(sorted_years) > config.expiry_tolerance_years]
    expiry = np.empty(rows.size, dtype=np.int64)
    expiry[order] = np.cumsum(starts) - 1
    counts = np.bincount(expiry) if rows.size else np.zeros(0, dtype=np.int64)
    keep_expiry = counts >= config.strikes_needed
    skipped = [(float(np.median(years[rows][expiry == j])),
                f"{counts[j]} options, fewer than {config.strikes_needed}")
               for j in np.flatnonzero(~keep_expiry)]
    keep = keep_expiry[expiry] if rows.size else np.zeros(0, dtype=bool)
    rows = rows[keep]
    n_valid = int(valid.sum())
    if rows.size < config.min_options or not keep_expiry.any():
        raise ValueError(
            f"too few options to fit a {config.method} surface: {n} given, {n - n_valid} dropped "
            f"(NaN mid vol or non-positive strike/expiry/forward/vol), {rows.size} left in "
            f"{int(keep_expiry.sum())} expiries with at least {config.strikes_needed} strikes; "
            f"need at least {config.min_options} options"
        )
    remap = np.cumsum(keep_expiry) - 1
    expiry = remap[expiry[keep]]
    n_exp = int(keep_expiry.sum())
    T = years[rows]
    exp_years = np.array([np.median(T[expiry == j]) for j in range(n_exp)])
    exp_forward = np.array([np.median(forward[rows][expiry == j]) for j in range(n_exp)])
    b, a = bid[rows], ask[rows]
    has_spread = np.isfinite(b) & np.isfinite(a) & (a > b) & (b > 0.0)
    spread = np.where(has_spread, a - b, config.default_spread_vol)
    spread = np.maximum(spread, config.min_spread_vol)
    chain = _Chain(k=k_all[rows], T=T, mid=mid[rows], bid=b, ask=a, spread=spread, expiry=expiry,
                   years=exp_years, forward=exp_forward)
    return chain, k_all, years_all, n - rows.size, skipped


def _atm_theta_guess(chain: _Chain) -> np.ndarray:
    """Per expiry, ``w(0)`` interpolated from the nearest strikes on each side of the forward
    (the nearest strike's ``w`` when all lie on one side), made increasing."""
    theta = np.empty(chain.years.size)
    for j in range(chain.years.size):
        sel = chain.expiry == j
        k = chain.k[sel]
        w = chain.mid[sel] ** 2 * chain.T[sel]
        below, above = k <= 0.0, k >= 0.0
        if below.any() and above.any():
            i0 = np.flatnonzero(below)[np.argmax(k[below])]
            i1 = np.flatnonzero(above)[np.argmin(k[above])]
            if k[i1] > k[i0]:
                theta[j] = w[i0] + (w[i1] - w[i0]) * (0.0 - k[i0]) / (k[i1] - k[i0])
            else:
                theta[j] = w[i0]
        else:
            theta[j] = w[np.argmin(np.abs(k))]
    return np.maximum.accumulate(np.maximum(theta, 1e-8))


# --------------------------------------------------------------------------- SSVI


def _ssvi_unpack(x: np.ndarray):
    rho, gamma, eta_frac = x[0], x[1], x[2]
    theta = np.cumsum(x[3:])
    eta = eta_frac * ssvi_eta_max(rho, gamma, theta[0])
    return rho, gamma, eta, theta


def _fit_ssvi(chain: _Chain, config: SurfaceFitConfig):
    n_exp = chain.years.size
    theta0 = _atm_theta_guess(chain)
    steps0 = np.maximum(np.diff(theta0, prepend=0.0), 1e-9)
    steps0[0] = max(theta0[0], 1e-8)
    lower = np.r_[-_RHO_MAX, 0.01, 1e-4, 1e-8, np.zeros(n_exp - 1)]
    upper = np.r_[_RHO_MAX, 0.99, 1.0, np.inf, np.full(n_exp - 1, np.inf)]
    inv_spread = 1.0 / chain.spread
    k, T, mid, idx = chain.k, chain.T, chain.mid, chain.expiry
    # theta differences of exactly 0 sit on the bound; start them just inside
    steps0 = np.clip(steps0, lower[3:] + 1e-12, None)

    def residuals(x):
        rho, gamma, eta, theta = _ssvi_unpack(x)
        psi = theta * power_law_phi(theta, eta, gamma)
        w = ssvi_total_variance(k, theta[idx], rho, psi[idx])
        return (np.sqrt(np.maximum(w, 0.0) / T) - mid) * inv_spread

    # The start's skew: the best of a few rho on the chain's own smile (not a prior's sign).
    starts = [np.r_[rho0, 0.4, 0.5, steps0] for rho0 in (-0.6, -0.3, 0.0, 0.3, 0.6)]
    x0 = min(starts, key=lambda x: float(np.sum(residuals(x) ** 2)))
    # tr_solver="lsmr": the dense one's SVD runs multithreaded in OpenBLAS and is many times
    # slower than the whole iteration on a loaded 2-core machine
    best = least_squares(residuals, x0, bounds=(lower, upper), method="trf", tr_solver="lsmr",
                         x_scale="jac", max_nfev=config.max_nfev)
    rho, gamma, eta, theta = _ssvi_unpack(best.x)
    psi = theta * power_law_phi(theta, eta, gamma)
    return {"rho": float(rho), "gamma": float(gamma), "eta": float(eta), "theta": theta,
            "psi": psi}


# --------------------------------------------------------------------------- eSSVI


def _essvi_slice(x, prev, theta_floor=1e-10):
    """``(theta, rho, psi)`` of an eSSVI slice from its search variables ``x = (rho, theta
    excess, psi position in its allowed interval)`` given the previous slice (or None), or None
    when this ``rho`` leaves no allowed ``psi``."""
    rho, excess, c = x
    if prev is None:
        theta = theta_floor + excess
        lo, hi = 0.0, float(essvi_psi_max(theta, rho))
    else:
        theta_p, rho_p, psi_p = prev
        p = float(essvi_calendar_p(rho_p, rho))
        theta = p * theta_p + excess
        lo = p * psi_p
        hi = min(psi_p * theta / theta_p, float(essvi_psi_max(theta, rho)))
    if hi < lo:
        return None
    return theta, rho, lo + c * (hi - lo)


def _fit_essvi(chain: _Chain, config: SurfaceFitConfig, ssvi: dict):
    n_exp = chain.years.size
    thetas, rhos, psis = np.empty(n_exp), np.empty(n_exp), np.empty(n_exp)
    prior_w = config.essvi_prior_weight
    prev = None
    for j in range(n_exp):
        sel = chain.expiry == j
        k, T, mid, inv_spread = chain.k[sel], chain.T[sel], chain.mid[sel], 1.0 / chain.spread[sel]
        prior_rho, prior_psi = ssvi["rho"], ssvi["psi"][j]
        theta_s = ssvi["theta"][j]

        def residuals(x, prev=prev):
            s = _essvi_slice(x, prev)
            if s is None:  # a rho that leaves no allowed psi: far worse than any fit, and
                gap = abs(x[0] - prev[1])  # worse the further from rho_prev (always allowed)
                return np.full(k.size + 2, 1e6 * (1.0 + gap))
            theta, rho, psi = s
            w = ssvi_total_variance(k, theta, rho, psi)
            fit = (np.sqrt(np.maximum(w, 0.0) / T) - mid) * inv_spread
            return np.r_[fit, prior_w * (rho - prior_rho), prior_w * math.log(psi / prior_psi)]

        # Start from the SSVI slice (its theta moved into this slice's allowed range) if its rho
        # is allowed after the previous slice; else from the previous slice's rho (always is).
        starts = []
        for rho0 in ((prior_rho,) if prev is None else (prior_rho, prev[1])):
            if prev is None:
                floor = 1e-10
                excess0 = max(theta_s - floor, 1e-12)
                lo, hi = 0.0, float(essvi_psi_max(floor + excess0, rho0))
            else:
                p = float(essvi_calendar_p(prev[1], rho0))
                excess0 = max(theta_s - p * prev[0], 1e-12)
                th = p * prev[0] + excess0
                lo = p * prev[2]
                hi = min(prev[2] * th / prev[0], float(essvi_psi_max(th, rho0)))
            if hi < lo:
                continue
            c0 = 0.5 if hi <= lo else float(np.clip((prior_psi - lo) / (hi - lo), 0.02, 0.98))
            starts.append(np.array([rho0, excess0, c0]))
            break
        best = None
        for x0 in starts:
            res = least_squares(residuals, x0, bounds=([-_RHO_MAX, 0.0, 1e-6], [_RHO_MAX, np.inf, 1.0]),
                                method="trf", tr_solver="lsmr", x_scale="jac",
                                max_nfev=config.max_nfev)
            if _essvi_slice(res.x, prev) is not None and (best is None or res.cost < best.cost):
                best = res
        s = _essvi_slice(best.x if best is not None else starts[-1], prev)
        thetas[j], rhos[j], psis[j] = s
        prev = s
    return {"theta": thetas, "rho": rhos, "psi": psis}


# --------------------------------------------------------------------------- SVI


def _lsi(A, b, G, h):
    """``argmin ||A x - b||`` subject to ``G x >= h`` (Lawson & Hanson, ch. 23: LSI -> LDP ->
    NNLS), or None if the constraints are incompatible. ``A`` must have full column rank."""
    H = A.T @ A
    f = A.T @ b
    try:
        L = np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        return None
    x_u = np.linalg.solve(H, f)
    slack = G @ x_u - h
    if np.all(slack >= 0.0):
        return x_u
    # x = x_u + L^-T z: minimize ||z|| subject to (G L^-T) z >= -slack
    E = np.linalg.solve(L, G.T).T
    M = np.vstack([E.T, -slack[None, :]])
    e = np.zeros(M.shape[0])
    e[-1] = 1.0
    try:
        u, _ = nnls(M, e, maxiter=50 * M.shape[1])
    except RuntimeError:
        return None
    r = M @ u - e
    if abs(r[-1]) < 1e-12:
        return None
    z = -r[:-1] / r[-1]
    return x_u + np.linalg.solve(L.T, z)


@dataclass
class _SviPrevious:
    """The previous fitted slice, which the next must stay above: its parameters, and its total
    variance on the grid where that is imposed (grown by the points a fit crossed at)."""

    params: tuple
    grid: np.ndarray
    w_grid: np.ndarray
    slope_right: float
    slope_left: float
    margin: float  # total variance the next slice keeps above this one on the grid

    def with_points(self, points: np.ndarray) -> "_SviPrevious":
        grid = np.unique(np.r_[self.grid, points])
        return _SviPrevious(self.params, grid, svi_total_variance(grid, *self.params),
                            self.slope_right, self.slope_left, self.margin)


def _svi_from_adc(adc, m, sigma):
    a, d, c = adc
    b = c / sigma
    rho = d / c if c > 0.0 else 0.0
    return (float(a), float(b), float(np.clip(rho, -1.0, 1.0)), float(m), float(sigma))


def _slice_grid(config: SurfaceFitConfig, theta: float, m: float, sigma: float) -> np.ndarray:
    """Where a slice's constraints are imposed: a fixed grid over ``|k| <= grid_k_max`` plus
    points spread over the slice's own scale (its ATM standard deviation and its ``sigma``)."""
    fixed = np.r_[np.linspace(-config.grid_k_max, config.grid_k_max, config.grid_points),
                  np.linspace(-2.0 * config.grid_k_max, 2.0 * config.grid_k_max, 9)]
    z = np.linspace(-1.0, 1.0, 21)
    local = np.r_[6.0 * math.sqrt(theta) * z, m + 5.0 * sigma * np.sinh(2.5 * z) / math.sinh(2.5)]
    return np.unique(np.r_[fixed, local])


def _fit_svi_slice(k, w_mid, weight, prev: _SviPrevious | None, config: SurfaceFitConfig,
                   theta_guess: float, start: tuple | None):
    """One expiry's SVI slice: ``(params, "")``, or ``(None, reason)`` when no arbitrage-free
    slice was found.

    The calendar constraint holds on a grid; two slices pressed together by the data can still
    cross between its points, so each fit is checked on a dense grid and repeated with the points
    where it crossed added to the grid (cutting planes). A slice whose ``g`` the outer penalty
    left negative is polished by SLSQP with ``g >= 0`` as a constraint."""
    problem = "no feasible slice"
    for _ in range(6):
        params = _fit_svi_quasi_explicit(k, w_mid, weight, prev, config, theta_guess, start)
        if params is None:
            return None, problem
        problem, crossed = _svi_slice_problem(params, prev, config, theta_guess)
        if not problem:
            return params, ""
        if problem != "calendar":
            break
        prev = prev.with_points(crossed)
        start = (params[3], params[4])
    extra = np.zeros(0)
    for _ in range(4):
        params = _svi_polish(params, k, w_mid, weight, prev, config, theta_guess, extra)
        problem, points = _svi_slice_problem(params, prev, config, theta_guess)
        if not problem:
            return params, ""
        if problem == "calendar":
            prev = prev.with_points(points)
        else:
            extra = np.r_[extra, points]
    return None, problem


def _fit_svi_quasi_explicit(k, w_mid, weight, prev: _SviPrevious | None, config: SurfaceFitConfig,
                            theta_guess: float, start: tuple | None):
    """Zeliade's quasi-explicit fit: Nelder-Mead over ``(m, ln sigma)``, the linearly
    constrained least squares in ``(a, d, c)`` inside, Durrleman's ``g < 0`` penalized."""
    k_lo, k_hi = float(k.min()), float(k.max())
    width = max(k_hi - k_lo, 1e-3)
    sqrt_theta = math.sqrt(max(theta_guess, 1e-10))
    bw = weight * w_mid
    a_max = max(float(w_mid.max()), 0.0 if prev is None else float(prev.w_grid.max()))
    g_z = 4.0 * np.linspace(-1.0, 1.0, 31)
    g_fixed = np.concatenate([6.0 * sqrt_theta * np.linspace(-1.0, 1.0, 31),
                              np.linspace(-config.grid_k_max, config.grid_k_max, 25)])
    # Rows of G (a, d, c) >= h: c >= 0, c >= |d| (|rho| <= 1), c + |d| <= 2 sigma (Lee),
    # 0 <= a <= 2 max(w) (Zeliade's box); then w >= w_prev + margin on the grid and wing slopes
    # at least the previous slice's (the sigma-dependent entries are filled per call).
    n_grid = 0 if prev is None else prev.grid.size
    G = np.zeros((7 + n_grid + (2 if prev is not None else 0), 3))
    G[:7] = [[0.0, 0.0, 1.0], [0.0, -1.0, 1.0], [0.0, 1.0, 1.0], [0.0, -1.0, -1.0],
             [0.0, 1.0, -1.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]
    h = np.zeros(G.shape[0])
    h[6] = -2.0 * max(a_max, 1e-12)
    if prev is not None:
        G[7:7 + n_grid, 0] = 1.0
        G[7 + n_grid:] = [[0.0, 1.0, 1.0], [0.0, -1.0, 1.0]]
        h[7:7 + n_grid] = prev.w_grid + prev.margin
    basis = np.empty((k.size, 3))
    basis[:, 0] = 1.0

    def inner(m, sigma):
        lee = 2.0 * sigma * (1.0 - _BUTTERFLY_MARGIN)
        h[3] = h[4] = -lee
        if prev is not None:
            y = (prev.grid - m) / sigma
            G[7:7 + n_grid, 1] = y
            G[7:7 + n_grid, 2] = np.sqrt(y * y + 1.0)
            h[7 + n_grid] = sigma * prev.slope_right
            h[8 + n_grid] = sigma * prev.slope_left
        y = (k - m) / sigma
        basis[:, 1] = y
        basis[:, 2] = np.sqrt(y * y + 1.0)
        A = basis * weight[:, None]
        adc = _lsi(A, bw, G, h)
        if adc is None:
            return None, np.inf
        r = A @ adc - bw
        return adc, float(r @ r)

    def g_penalty(adc, m, sigma):
        a, b, rho, _, _ = _svi_from_adc(adc, m, sigma)
        kk = np.concatenate([m + sigma * g_z, g_fixed])
        g = svi_g(kk, a, b, rho, m, sigma)
        bad = np.minimum(np.where(np.isnan(g), -1.0, g) - 1e-4, 0.0)
        return 1e4 * float(bad @ bad) * max(1.0, k.size)

    def objective(x):
        m, log_sigma = x
        sigma = math.exp(log_sigma)
        if not (k_lo - width - 0.5 <= m <= k_hi + width + 0.5 and 1e-4 <= sigma <= 10.0):
            return 1e30
        adc, sse = inner(m, sigma)
        if adc is None:
            return 1e30
        return sse + g_penalty(adc, m, sigma)

    # Starting points: the best two of a 7 x 7 grid of (m, sigma) scored without constraints
    # (cheap: one batched solve), and the previous slice's (m, sigma).
    M, S = np.meshgrid(np.linspace(k_lo, k_hi, 7),
                       np.geomspace(max(0.02 * width, 1e-3), max(1.5 * width, 0.05), 7), indexing="ij")
    M, S = M.ravel(), S.ravel()
    Y = (k[None, :] - M[:, None]) / S[:, None]
    X = np.stack([np.ones_like(Y), Y, np.sqrt(Y * Y + 1.0)], axis=-1) * weight[None, :, None]
    H = np.einsum("gni,gnj->gij", X, X) + 1e-12 * np.eye(3)
    f = np.einsum("gni,n->gi", X, bw)
    coef = np.linalg.solve(H, f[..., None])[..., 0]
    sse = np.sum((np.einsum("gni,gi->gn", X, coef) - bw[None, :]) ** 2, axis=1)
    candidates = [(M[i], math.log(S[i])) for i in np.argsort(sse)[:2]]
    if start is not None:
        candidates.append((start[0], math.log(start[1])))
    scored = sorted(((objective(np.array(c)), c) for c in candidates), key=lambda t: t[0])
    x0 = np.array(scored[0][1])
    step_m = 0.1 * max(width, sqrt_theta)
    simplex = np.array([x0, x0 + [step_m, 0.0], x0 + [0.0, 0.3]])
    res = minimize(objective, x0, method="Nelder-Mead",
                   options={"xatol": 1e-3, "fatol": 1e-6 * max(scored[0][0], 1e-12),
                            "maxfev": 250, "initial_simplex": simplex})
    x = res.x if res.fun <= scored[0][0] else np.array(scored[0][1])
    m, sigma = float(x[0]), math.exp(float(x[1]))
    adc, _ = inner(m, sigma)
    return None if adc is None else _svi_from_adc(adc, m, sigma)


def _svi_check_grid(params, config: SurfaceFitConfig, theta: float) -> np.ndarray:
    """Where a slice is verified: ``|k| <= 2 grid_k_max``, densely around its vertex ``m`` (on
    the scale of ``sigma``) and around the money (on the scale of ``sqrt(theta)``)."""
    _, _, _, m, sigma = params
    z = np.linspace(-1.0, 1.0, 201)
    return np.r_[np.linspace(-2.0 * config.grid_k_max, 2.0 * config.grid_k_max, 241),
                 m + 8.0 * sigma * np.sinh(3.0 * z) / math.sinh(3.0),
                 8.0 * math.sqrt(max(theta, 1e-12)) * z]


def _local_minima(f, grid: np.ndarray, below: float):
    """``(k, f(k))`` at the local minima of ``f`` (vectorized in k) on ``grid``; those under
    ``below`` refined by golden-section search between their grid neighbours (a check on the
    grid alone misses a dip between two of its points where two slices nearly touch)."""
    grid = np.unique(grid)
    values = f(grid)
    left = np.concatenate([[np.inf], values[:-1]])
    right = np.concatenate([values[1:], [np.inf]])
    at = np.flatnonzero((values <= left) & (values <= right) & (values < below))
    if at.size == 0:
        return grid[:0], values[:0]
    lo = grid[np.maximum(at - 1, 0)]
    hi = grid[np.minimum(at + 1, grid.size - 1)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(30):
        x1 = hi - ratio * (hi - lo)
        x2 = lo + ratio * (hi - lo)
        left_lower = f(x1) <= f(x2)
        hi = np.where(left_lower, x2, hi)
        lo = np.where(left_lower, lo, x1)
    k = np.concatenate([grid[at], 0.5 * (lo + hi)])
    return k, f(k)


def _svi_slice_problem(params, prev: _SviPrevious | None, config, theta):
    """``("", None)`` for a slice free of arbitrage on and between the points of the check grid;
    else ``("butterfly", k)`` or ``("calendar", k)`` with the k where ``g`` (resp. the gap to the
    previous slice) dips below its margin: the points to add to the constraints' grid."""
    a, b, rho, m, sigma = params
    kk = _svi_check_grid(params, config, theta)
    if not b * (1.0 + abs(rho)) < 2.0:
        return "butterfly", None
    with np.errstate(all="ignore"):
        k_min, g = _local_minima(lambda x: np.where(np.isnan(g := svi_g(x, *params)), -np.inf, g),
                                 kk, below=0.05)
        w_min = a + b * sigma * math.sqrt(max(1.0 - rho * rho, 0.0))
    if not ((g.size == 0 or g.min() >= 0.0) and w_min > 0.0):
        return "butterfly", k_min[g < _G_MARGIN]
    if prev is not None:
        if b * (1.0 + rho) < prev.slope_right - 1e-12 or b * (1.0 - rho) < prev.slope_left - 1e-12:
            return "calendar", np.zeros(0)
        k_min, gap = _local_minima(
            lambda x: svi_total_variance(x, *params) - svi_total_variance(x, *prev.params),
            np.concatenate([kk, prev.grid]), below=0.01 * float(svi_total_variance(0.0, *prev.params)))
        if gap.size and gap.min() < 0.0:
            return "calendar", k_min[gap < prev.margin]
    return "", None


def _svi_polish(params, k, w_mid, weight, prev: _SviPrevious | None, config, theta, extra):
    """SLSQP over the 5 raw SVI parameters from ``params``, with ``g >= 0`` on the check grid
    (and at the ``extra`` points), Lee's bound and the calendar constraints as constraints."""
    kk = np.r_[_svi_check_grid(params, config, theta), extra]
    if prev is not None:
        kk = np.unique(np.r_[kk, prev.grid])
        w_prev = svi_total_variance(kk, *prev.params)

    def sse(p):
        return float(np.sum((weight * (svi_total_variance(k, *p) - w_mid)) ** 2))

    scale = max(sse(params), 1e-30)

    def cons(p):
        a, b, rho, m, sigma = p
        out = [svi_g(kk, *p) - _G_MARGIN, [2.0 * (1.0 - _BUTTERFLY_MARGIN) - b * (1.0 + abs(rho)),
                                      a + b * sigma * math.sqrt(max(1.0 - rho * rho, 0.0)) - 1e-10]]
        if prev is not None:
            out.append(svi_total_variance(kk, *p) - w_prev - 2.0 * prev.margin)
            out.append([b * (1.0 + rho) - prev.slope_right, b * (1.0 - rho) - prev.slope_left])
        return np.concatenate([np.nan_to_num(np.asarray(o, dtype=float), nan=-1.0) for o in out])

    bounds = [(None, None), (0.0, 2.0), (-_RHO_MAX, _RHO_MAX), (None, None), (1e-4, 10.0)]
    res = minimize(lambda p: sse(p) / scale, np.array(params), method="SLSQP", bounds=bounds,
                   constraints=[{"type": "ineq", "fun": cons}],
                   options={"maxiter": 200, "ftol": 1e-10})
    return tuple(float(v) for v in res.x)


def _fit_svi(chain: _Chain, config: SurfaceFitConfig):
    theta_guess = _atm_theta_guess(chain)
    slices, kept, skipped = [], [], []
    prev: _SviPrevious | None = None
    start = None
    for j in range(chain.years.size):
        sel = chain.expiry == j
        k, T, mid = chain.k[sel], chain.T[sel], chain.mid[sel]
        w_mid = mid * mid * T
        # vol residual ~ w residual / (2 vol T): weight the linear w-residual to match
        weight = 1.0 / (chain.spread[sel] * 2.0 * mid * T)
        params, problem = _fit_svi_slice(k, w_mid, weight, prev, config, float(theta_guess[j]),
                                         start)
        if params is None:
            skipped.append((float(chain.years[j]), f"no SVI slice free of {problem} arbitrage"))
            continue
        slices.append(params)
        kept.append(j)
        a, b, rho, m, sigma = params
        grid = _slice_grid(config, float(svi_total_variance(0.0, *params)), m, sigma)
        prev = _SviPrevious(params=params, grid=grid, w_grid=svi_total_variance(grid, *params),
                            slope_right=b * (1.0 + rho), slope_left=b * (1.0 - rho),
                            margin=_CALENDAR_MARGIN + 1e-7 * float(svi_total_variance(0.0, *params)))
        start = (m, sigma)
    return slices, kept, skipped


# --------------------------------------------------------------------------- the fit


def fit_surface(strike_usd, expiry_years, forward_usd, mid_vol, bid_vol, ask_vol, *,
                config: SurfaceFitConfig = SurfaceFitConfig()) -> SurfaceFit:
    """Fit an implied-volatility surface to one chain (see the module docstring).

    Inputs are equal-length arrays, one row per option (out-of-the-money side, each with its own
    expiry's forward in USD; ``expiry_years`` > 0; vols annualized fractions, ``bid_vol`` /
    ``ask_vol`` may be NaN). Rows with a NaN mid or a non-positive input are dropped, as are
    expiries with fewer than ``config.strikes_needed`` options and, for SVI, expiries no
    arbitrage-free slice was found for (all counted in ``n_dropped``; skipped expiries listed in
    ``skipped_expiry_years`` with ``skipped_reasons``). Raises ValueError, saying why, when fewer
    than ``config.min_options`` options or no expiry remain.
    """
    chain, k_all, years_all, n_dropped, skipped = _prepare(
        strike_usd, expiry_years, forward_usd, mid_vol, bid_vol, ask_vol, config)
    nan = float("nan")
    ssvi_rho = ssvi_eta = ssvi_gamma = nan
    if config.method == "svi":
        slices, kept, svi_skipped = _fit_svi(chain, config)
        skipped += svi_skipped
        if not kept:
            raise ValueError("no expiry could be fitted with an arbitrage-free SVI slice: "
                             + "; ".join(f"T={t:.4f}y: {r}" for t, r in skipped))
        svi = np.array(slices, dtype=np.float64).T
        psi = np.full(len(kept), nan)
        in_fit = np.isin(chain.expiry, kept)
        n_dropped += int((~in_fit).sum())
        years, forward = chain.years[kept], chain.forward[kept]
    else:
        ssvi = _fit_ssvi(chain, config)
        if config.method == "ssvi":
            theta, rho, psi = ssvi["theta"], np.full(chain.years.size, ssvi["rho"]), ssvi["psi"]
            ssvi_rho, ssvi_eta, ssvi_gamma = ssvi["rho"], ssvi["eta"], ssvi["gamma"]
        else:
            essvi = _fit_essvi(chain, config, ssvi)
            theta, rho, psi = essvi["theta"], essvi["rho"], essvi["psi"]
        svi = np.array(ssvi_to_svi(theta, rho, psi))
        in_fit = np.ones(chain.k.size, dtype=bool)
        years, forward = chain.years, chain.forward
    order = sorted(skipped)
    fit = SurfaceFit(
        method=config.method, n_options=int(in_fit.sum()), n_expiries=int(years.size),
        n_dropped=int(n_dropped), rmse_vol=nan, within_spread_fraction=nan,
        expiry_years=np.asarray(years, dtype=np.float64),
        forward_usd=np.asarray(forward, dtype=np.float64),
        theta=svi_total_variance(0.0, *svi), svi_a=svi[0], svi_b=svi[1], svi_rho=svi[2],
        svi_m=svi[3], svi_sigma=svi[4], essvi_psi=np.asarray(psi, dtype=np.float64),
        ssvi_rho=ssvi_rho, ssvi_eta=ssvi_eta, ssvi_gamma=ssvi_gamma,
        skipped_expiry_years=tuple(t for t, _ in order), skipped_reasons=tuple(r for _, r in order),
        input_k=k_all, input_years=years_all,
    )
    fitted = fit.implied_vol(chain.k[in_fit], chain.T[in_fit])
    err = fitted - chain.mid[in_fit]
    bid, ask = chain.bid[in_fit], chain.ask[in_fit]
    quoted = np.isfinite(bid) & np.isfinite(ask) & (ask >= bid)
    inside = (fitted >= bid) & (fitted <= ask)
    within = float(inside[quoted].mean()) if quoted.any() else nan
    return dataclasses.replace(fit, rmse_vol=float(np.sqrt(np.mean(err * err))),
                               within_spread_fraction=within)
