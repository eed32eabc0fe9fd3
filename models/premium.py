"""The protection premium: the price of a put on ``amount_coin`` coins, off a volatility surface,
with a factor breakdown that sums to it (plan 000: PF-101..PF-108, PF-201, PF-206, PF-207,
PF-209, PF-307).

Pure and vectorized. Conventions (DESIGN.md principle 6): prices in USD, ``spot_usd`` the coin's
price, ``strike_usd`` the put's strike, ``expiry_years`` > 0 (``seconds / (365 * 86400)``), vols
annualized fractions (0.55, not 55), ``rate_annual`` continuously compounded. The forward is
``F = spot * exp(rate * T)`` and log-moneyness ``k = ln(K / F)``.

The surface is any object with ``implied_vol(k, T)`` and ``atm_vol(T)`` (``models.surface``'s fit,
``FlatSurface`` below, or a wrapper of ``models.option_chain``'s SSVI surface).

The premium and its factors (PF-207), all for the whole ``amount_coin``; ``BS(v)`` is the
Black-Scholes put at vol ``v``:

- ``intrinsic_usd  = amount * max(K - S, 0)``: the put exercised now (spot, undiscounted);
- ``time_value_usd = amount * BS(vol_reference) - intrinsic``: the optionality the reference
  (realized) volatility gives; negative for a deep in-the-money put when ``r > 0`` (a European put
  is worth less than its intrinsic value there);
- ``volatility_usd = amount * [BS(vol_atm) - BS(vol_reference)]``: the market's ATM implied vol
  against the realized one (the volatility risk premium, either sign);
- ``skew_usd       = amount * [BS(vol_strike) - BS(vol_atm)]``: the smile at the strike (positive
  for out-of-the-money puts on a BTC-like surface, whose ``rho < 0``);
- ``jump_usd       = amount * [Merton(...) - BS(vol_strike)]``: the Bitcoin jump adjustment
  (PF-201), see below;
- ``margin_usd``: vol-of-vol margin + liquidity margin + the tier's markup, see ``PremiumConfig``;
- ``rounding_usd``: the premium rounded UP to ``rounding_tick_usd`` (the seller never quotes under
  its price) less the sum of the factors above; it also absorbs the float residue of that sum
  (~1e-12 relative), so the seven factors add up to ``premium_usd`` to within one ulp.

The first five telescope: their sum is the fair value ``amount * Merton(...)``.

Jumps (``jump_mode``). The fair value is Merton's (1976) jump-diffusion put: the log price diffuses
with ``vol_diffusion`` and jumps ``J ~ N(mean_log_jump, vol_log_jump^2)`` at ``intensity`` per
year (``models.jumps.MertonJumps``), priced by the Poisson series of Black prices (``merton_price``).
The default, ``"matched"``, lowers the diffusion vol so that the TOTAL variance of the log return
equals the surface's vol at the strike: ``vol_diffusion^2 = vol_strike^2 - intensity *
(mean_log_jump^2 + vol_log_jump^2)``. The surface (implied or realized) already measures the total
variance, jumps included (a realized vol is computed from returns that contain the jumps); adding
jump variance on top would count it twice and lift every strike. Matched, the jumps only move
probability from the middle of the distribution into the left tail: ``jump_usd`` is positive for
out-of-the-money puts (the tail a lognormal under-prices, which is what BTC's crashes cost) and
slightly negative near the money. When the jump variance would leave less than
``min_diffusion_fraction`` of the vol to the diffusion (short expiries on a low vol), the
diffusion vol is floored there and the total variance exceeds the surface's (``jump_usd`` then
positive). ``"additive"`` keeps ``vol_diffusion = vol_strike`` and adds the jumps on top: a
conservative loading for surfaces that are known to carry no jump risk.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field, fields, replace
from typing import Protocol

import numpy as np
from scipy.special import gammaln, xlogy

from models.jumps import MertonJumps
from models.pricing import black76_price, bs_greeks, bs_price
from models.scenarios import SECONDS_PER_YEAR

__all__ = [
    "Surface", "FlatSurface", "Tier", "DEFAULT_TIERS", "PremiumConfig", "PremiumQuote",
    "BREAKDOWN_FIELDS", "merton_price", "diffusion_vol_annual", "quote_from_vols",
    "quote_from_surface", "quote_grid", "price_tiers", "quote_to_dict", "PremiumCache",
]

# The factors of PF-207, in the order they are summed: intrinsic + ... + rounding == premium.
BREAKDOWN_FIELDS = ("intrinsic_usd", "time_value_usd", "volatility_usd", "skew_usd", "jump_usd",
                    "margin_usd", "rounding_usd")

_MAX_VOL = 5.0  # 500 % annualized: anything above is almost surely a vol in percent
_MAX_SERIES_TERMS = 5_000  # Merton series terms: ~4,300 expected jumps by expiry

_EXPLANATIONS = {
    "intrinsic_usd": "the put exercised now: amount x max(strike - spot, 0)",
    "time_value_usd": "Black-Scholes value at the reference (realized) volatility, less intrinsic",
    "volatility_usd": "implied ATM volatility against the reference volatility",
    "skew_usd": "the volatility smile at the strike against ATM",
    "jump_usd": "Bitcoin jump risk: Merton jump-diffusion against Black-Scholes at the strike's vol",
    "margin_usd": "vol-of-vol margin + liquidity (hedging) margin + the tier's markup",
    "rounding_usd": "rounded up to the quoting tick",
}


class Surface(Protocol):
    """What the premium needs of a volatility surface (annualized-fraction vols; ``k = ln(K/F)``,
    ``T`` in years)."""

    def implied_vol(self, k, T): ...

    def atm_vol(self, T): ...


@dataclass(frozen=True)
class FlatSurface:
    """The same vol at every strike and expiry (e.g. a trailing realized vol): no skew, no term
    structure. The volatility and skew factors of a quote off it are those of the reference vol."""

    vol_annual: float

    def __post_init__(self) -> None:
        _check_vol("vol_annual", self.vol_annual)

    def implied_vol(self, k, T):
        return np.full(np.broadcast(np.asarray(k), np.asarray(T)).shape, float(self.vol_annual))

    def atm_vol(self, T):
        return np.full(np.shape(T), float(self.vol_annual))


# --------------------------------------------------------------------------- configuration


def _finite(name: str, value: float, *, low: float | None = None, strict: bool = False) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if not ok:
        bound = "" if low is None else f" {'>' if strict else '>='} {low}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")


def _check_vol(name: str, value: float) -> None:
    _finite(name, value, low=0.0, strict=True)
    if value > _MAX_VOL:
        raise ValueError(f"{name} is an annualized fraction (0.55 for 55 %), got {value!r}")


@dataclass(frozen=True)
class Tier:
    """A protection tier (PF-209): the put's strike is ``strike_fraction`` of spot, and
    ``markup_fraction`` is added on top of the technical premium (fair value + vol-of-vol and
    liquidity margins); ``description`` is for people."""

    name: str
    strike_fraction: float
    markup_fraction: float
    description: str = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name.strip()):
            raise ValueError(f"a tier needs a name, got {self.name!r}")
        _finite(f"tier {self.name!r} strike_fraction", self.strike_fraction, low=0.0, strict=True)
        if self.strike_fraction > 2.0:
            raise ValueError(f"tier {self.name!r}: strike_fraction is a fraction of spot (0.9 for "
                             f"90 %), got {self.strike_fraction!r}")
        _finite(f"tier {self.name!r} markup_fraction", self.markup_fraction, low=0.0)


# Deeper protection (a higher strike) costs more in USD; the relative markup falls with it because
# a far out-of-the-money put is where the model's tail (the jump calibration) is least certain
# against its small price, and a policy's fixed costs are a larger share of a small premium.
DEFAULT_TIERS: tuple[Tier, ...] = (
    Tier("basic", 0.80, 0.10, "crash cover: pays below 80 % of today's spot"),
    Tier("standard", 0.90, 0.075, "pays below 90 % of today's spot"),
    Tier("premium", 0.95, 0.05, "near-the-money cover: pays below 95 % of today's spot"),
)


@dataclass(frozen=True)
class PremiumConfig:
    """How a premium is made (PF-105's parameters). Hashable, so it can key a cache.

    - ``tiers``: the tier grid ``price_tiers`` prices (unique names);
    - ``rate_annual``: discount rate and carry of the forward ``S exp(rT)``; the graph sets it per
      expiry to the carry of the surface's forward (``with_forward``); 0 by default;
    - ``jumps``, ``jump_mode`` ("matched" or "additive"), ``min_diffusion_fraction``: the Merton
      jump adjustment (module docstring);
    - vol-of-vol margin ``= vega * vol_strike * vol_of_vol_annual * sqrt(T) * vol_of_vol_sd``: the
      cost of ``vol_of_vol_sd`` standard deviations of the strike's implied vol moving (lognormally,
      ``vol_of_vol_annual`` a year) over the policy's life, which a seller hedging with options pays;
    - liquidity margin ``= vega * (liquidity_half_spread_vol + liquidity_impact_vol_per_sqrt_coin *
      sqrt(amount_coin))``: crossing the option market's half spread (in vol) to hedge, widening
      with the square root of the size;
    - the markup: ``markup_fraction`` of the tier (``custom_markup_fraction`` for a strike no tier
      sets) times the technical premium (fair value + the two margins);
    - ``rounding_tick_usd``: the premium is rounded up to a multiple of it; 0 turns rounding off.

    ``vega`` is the Black-Scholes vega at the strike's vol (USD per 1.0 of vol, per coin), times
    ``amount_coin``.
    """

    tiers: tuple[Tier, ...] = DEFAULT_TIERS
    rate_annual: float = 0.0
    jumps: MertonJumps = field(default_factory=MertonJumps)
    jump_mode: str = "matched"
    min_diffusion_fraction: float = 0.5
    vol_of_vol_annual: float = 0.6
    vol_of_vol_sd: float = 0.2
    liquidity_half_spread_vol: float = 0.005
    liquidity_impact_vol_per_sqrt_coin: float = 0.001
    custom_markup_fraction: float = 0.10
    rounding_tick_usd: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", tuple(self.tiers))
        if not self.tiers or not all(isinstance(t, Tier) for t in self.tiers):
            raise ValueError("tiers must be a non-empty sequence of Tier")
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique, got {names}")
        _finite("rate_annual", self.rate_annual)
        if abs(self.rate_annual) > 1.0:
            raise ValueError(f"rate_annual is a fraction (0.05 for 5 %), got {self.rate_annual!r}")
        if not isinstance(self.jumps, MertonJumps):
            raise ValueError(f"jumps must be a models.jumps.MertonJumps, got {type(self.jumps).__name__}")
        if self.jump_mode not in ("matched", "additive"):
            raise ValueError(f"jump_mode must be 'matched' or 'additive', got {self.jump_mode!r}")
        _finite("min_diffusion_fraction", self.min_diffusion_fraction, low=0.0, strict=True)
        if self.min_diffusion_fraction > 1.0:
            raise ValueError(f"min_diffusion_fraction must be in (0, 1], got {self.min_diffusion_fraction!r}")
        for name in ("vol_of_vol_annual", "vol_of_vol_sd", "liquidity_half_spread_vol",
                     "liquidity_impact_vol_per_sqrt_coin", "custom_markup_fraction",
                     "rounding_tick_usd"):
            _finite(name, getattr(self, name), low=0.0)

    def tier(self, name: str) -> Tier:
        """The tier called ``name``."""
        for t in self.tiers:
            if t.name == name:
                return t
        raise ValueError(f"no tier {name!r}; the tiers are {[t.name for t in self.tiers]}")

    def with_forward(self, spot_usd: float, forward_usd: float, expiry_years: float) -> PremiumConfig:
        """This config with ``rate_annual`` the carry ``ln(F / S) / T`` of a market forward, so
        that ``S e^{rT}`` is that forward and the put is priced as the option market prices it:
        Deribit's USD premium is its coin premium times the index, ``Black-76(F) / F * S =
        e^{-rT} Black-76(F)``, exactly Black-Scholes on spot at this rate. ValueError when the
        forward does not give a usable carry (not positive, or a rate beyond +-100 %)."""
        _finite("spot_usd", spot_usd, low=0.0, strict=True)
        _finite("forward_usd", forward_usd, low=0.0, strict=True)
        _finite("expiry_years", expiry_years, low=0.0, strict=True)
        return replace(self, rate_annual=math.log(forward_usd / spot_usd) / expiry_years)

    def without_margins(self) -> PremiumConfig:
        """This configuration with no vol-of-vol or liquidity margin, no markup and no rounding:
        its premium is the fair value."""
        return replace(self, vol_of_vol_sd=0.0, liquidity_half_spread_vol=0.0,
                       liquidity_impact_vol_per_sqrt_coin=0.0, custom_markup_fraction=0.0,
                       rounding_tick_usd=0.0,
                       tiers=tuple(replace(t, markup_fraction=0.0) for t in self.tiers))


# --------------------------------------------------------------------------- the quote


@dataclass(frozen=True)
class PremiumQuote:
    """A priced put and its breakdown (module docstring). USD amounts are for all ``amount_coin``.

    From ``quote_from_surface`` / ``quote_from_vols`` on scalars and ``price_tiers`` every numeric
    field is a float; from ``quote_grid`` (or ``quote_from_vols`` on arrays) every numeric field is
    an array of the broadcast shape. ``tier`` is the tier's name, "" for a strike no tier set.

    ``fair_value_usd`` is ``amount * Merton`` (the first five factors);
    ``margin_usd = vol_of_vol_margin_usd + liquidity_margin_usd + markup_usd``;
    ``premium_pct_of_notional`` is the premium in percent of ``amount * spot``.
    """

    tier: str
    spot_usd: float
    strike_usd: float
    expiry_years: float
    amount_coin: float
    rate_annual: float
    forward_usd: float
    log_moneyness: float
    vol_strike_annual: float
    vol_atm_annual: float
    vol_reference_annual: float
    vol_diffusion_annual: float
    premium_usd: float
    intrinsic_usd: float
    time_value_usd: float
    volatility_usd: float
    skew_usd: float
    jump_usd: float
    margin_usd: float
    rounding_usd: float
    vol_of_vol_margin_usd: float
    liquidity_margin_usd: float
    markup_usd: float
    fair_value_usd: float
    premium_per_coin_usd: float
    premium_pct_of_notional: float

    def breakdown(self) -> dict[str, float]:
        """The seven factors, in summing order (``BREAKDOWN_FIELDS``)."""
        return {name: getattr(self, name) for name in BREAKDOWN_FIELDS}


def _scalar(x):
    a = np.asarray(x)
    return float(a) if a.ndim == 0 else a


# --------------------------------------------------------------------------- Merton


def merton_price(S, K, T, r, vol_diffusion_annual, jumps: MertonJumps, call=False):
    """Merton (1976) jump-diffusion European price, per coin (vectorized like ``models.pricing``).

    Conditional on ``n`` jumps by expiry the terminal price is lognormal with total variance
    ``v_n = vol_diffusion^2 T + n vol_log_jump^2`` and mean
    ``F_n = S exp((r - intensity * kappa) T + n (mean_log_jump + vol_log_jump^2 / 2))``, so the
    price is ``sum_n Poisson(n; intensity T) * Black76(F_n, K, T, r, sqrt(v_n / T))``. The series
    is cut where the Poisson tail is below ~1e-20 (mean + 10 standard deviations + 12 terms).
    ``intensity == 0`` gives Black-Scholes exactly. ``T`` must be > 0.
    """
    if not isinstance(jumps, MertonJumps):
        raise ValueError(f"jumps must be a MertonJumps, got {type(jumps).__name__}")
    S, K, T, r, vol, call = (np.asarray(a, dtype=np.float64 if i < 5 else bool)
                             for i, a in enumerate((S, K, T, r, vol_diffusion_annual, call)))
    S, K, T, r, vol, call = np.broadcast_arrays(S, K, T, r, vol, call)
    lam = jumps.intensity_per_year
    mean_count = lam * T
    max_mean = float(np.max(mean_count)) if mean_count.size else 0.0
    if not (max_mean > 0.0):
        return _scalar(bs_price(S, K, T, r, vol, call))
    if not math.isfinite(max_mean):
        raise ValueError("merton_price needs finite expiries")
    n_terms = int(math.ceil(max_mean + 10.0 * math.sqrt(max_mean) + 12.0))
    if n_terms > _MAX_SERIES_TERMS:
        raise ValueError(f"intensity_per_year x expiry_years = {max_mean:.4g} expected jumps: too "
                         "many for the Merton series (a jump that frequent is a diffusion)")
    n = np.arange(n_terms, dtype=np.float64)
    T_, mean_ = T[..., None], mean_count[..., None]
    log_w = -mean_ + xlogy(n, mean_) - gammaln(n + 1.0)
    weights = np.exp(log_w)
    forward = (S * np.exp((r - lam * jumps.kappa) * T))[..., None] * np.exp(
        n * (jumps.mean_log_jump + 0.5 * jumps.vol_log_jump**2))
    with np.errstate(divide="ignore", invalid="ignore"):
        vol_n = np.sqrt(np.square(vol)[..., None] + n * jumps.vol_log_jump**2 / T_)
    prices = black76_price(forward, K[..., None], T_, r[..., None], vol_n, call[..., None])
    return _scalar(np.sum(weights * prices, axis=-1))


def diffusion_vol_annual(vol_annual, jumps: MertonJumps, *, mode: str = "matched",
                         min_diffusion_fraction: float = 0.5):
    """The diffusion vol of the Merton model that stands for a quoted ``vol_annual`` (module
    docstring): ``"matched"`` takes the jump variance ``intensity (mean^2 + vol^2)`` out of the
    quoted variance, not below ``min_diffusion_fraction * vol_annual``; ``"additive"`` keeps
    ``vol_annual``. Without jumps it is ``vol_annual`` exactly."""
    vol = np.asarray(vol_annual, dtype=np.float64)
    jump_var = jumps.intensity_per_year * (jumps.mean_log_jump**2 + jumps.vol_log_jump**2)
    if mode == "additive" or jump_var == 0.0:
        return _scalar(vol)
    if mode != "matched":
        raise ValueError(f"mode must be 'matched' or 'additive', got {mode!r}")
    floor = np.square(min_diffusion_fraction * vol)
    return _scalar(np.sqrt(np.maximum(np.square(vol) - jump_var, floor)))


# --------------------------------------------------------------------------- pricing


def _positive_array(name: str, value) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64)
    bad = ~(np.isfinite(a) & (a > 0.0))
    if np.any(bad):
        shown = value if a.ndim == 0 else f"{a[bad].ravel()[0]!r} (one of {int(bad.sum())} of {a.size})"
        raise ValueError(f"{name} must be finite and > 0, got {shown}")
    return a


def _vol_array(name: str, value) -> np.ndarray:
    a = _positive_array(name, value)
    if np.any(a > _MAX_VOL):
        raise ValueError(f"{name} is an annualized fraction (0.55 for 55 %), got "
                         f"{float(a.max())!r} (the largest of {a.size})")
    return a


def quote_from_vols(spot_usd, strike_usd, expiry_years, amount_coin, vol_strike_annual,
                    vol_atm_annual, vol_reference_annual, *, markup_fraction=None,
                    config: PremiumConfig = PremiumConfig(), tier: str = "") -> PremiumQuote:
    """The premium and breakdown from the three vols directly (the core every other entry point
    calls). Every numeric argument may be an array; they broadcast together and the quote's fields
    take the broadcast shape (floats when every input is a scalar). ``markup_fraction`` defaults
    to ``config.custom_markup_fraction``."""
    S = _positive_array("spot_usd", spot_usd)
    K = _positive_array("strike_usd", strike_usd)
    T = _positive_array("expiry_years", expiry_years)
    amount = _positive_array("amount_coin", amount_coin)
    vol_k = _vol_array("vol_strike_annual", vol_strike_annual)
    vol_atm = _vol_array("vol_atm_annual", vol_atm_annual)
    vol_ref = _vol_array("vol_reference_annual", vol_reference_annual)
    markup = np.asarray(config.custom_markup_fraction if markup_fraction is None else markup_fraction,
                        dtype=np.float64)
    if not np.all(np.isfinite(markup) & (markup >= 0.0)):
        raise ValueError(f"markup_fraction must be finite and >= 0, got {markup_fraction!r}")
    S, K, T, amount, vol_k, vol_atm, vol_ref, markup = np.broadcast_arrays(
        S, K, T, amount, vol_k, vol_atm, vol_ref, markup)
    r = config.rate_annual

    # One Black-Scholes call for the three vols of the telescoping breakdown.
    bs_ref, bs_atm, bs_k = bs_price(S, K, T, r, np.stack([vol_ref, vol_atm, vol_k]), False)
    vol_d = np.asarray(diffusion_vol_annual(vol_k, config.jumps, mode=config.jump_mode,
                                            min_diffusion_fraction=config.min_diffusion_fraction))
    fair = np.asarray(merton_price(S, K, T, r, vol_d, config.jumps, False))
    vega = np.asarray(bs_greeks(S, K, T, r, vol_k, False).vega)
    vov = vega * vol_k * config.vol_of_vol_annual * np.sqrt(T) * config.vol_of_vol_sd
    liquidity = vega * (config.liquidity_half_spread_vol
                        + config.liquidity_impact_vol_per_sqrt_coin * np.sqrt(amount))
    markup_pc = markup * (fair + vov + liquidity)

    intrinsic = amount * np.maximum(K - S, 0.0)
    time_value = amount * bs_ref - intrinsic
    volatility = amount * (bs_atm - bs_ref)
    skew = amount * (bs_k - bs_atm)
    jump = amount * (fair - bs_k)
    vov_usd, liquidity_usd, markup_usd = amount * vov, amount * liquidity, amount * markup_pc
    margin = vov_usd + liquidity_usd + markup_usd
    unrounded = amount * (fair + vov + liquidity + markup_pc)
    tick = config.rounding_tick_usd
    # Up to the tick (never under-charge); 1e-9 of a tick keeps an exact multiple where it is.
    premium = np.ceil(unrounded / tick - 1e-9) * tick if tick > 0.0 else unrounded
    rounding = premium - (intrinsic + time_value + volatility + skew + jump + margin)
    F = S * np.exp(r * T)
    values = dict(
        spot_usd=S, strike_usd=K, expiry_years=T, amount_coin=amount,
        rate_annual=np.full(S.shape, float(r)), forward_usd=F, log_moneyness=np.log(K / F),
        vol_strike_annual=vol_k, vol_atm_annual=vol_atm, vol_reference_annual=vol_ref,
        vol_diffusion_annual=np.broadcast_to(vol_d, S.shape), premium_usd=premium,
        intrinsic_usd=intrinsic, time_value_usd=time_value, volatility_usd=volatility,
        skew_usd=skew, jump_usd=jump, margin_usd=margin, rounding_usd=rounding,
        vol_of_vol_margin_usd=vov_usd, liquidity_margin_usd=liquidity_usd, markup_usd=markup_usd,
        fair_value_usd=amount * fair, premium_per_coin_usd=premium / amount,
        premium_pct_of_notional=100.0 * premium / (amount * S),
    )
    return PremiumQuote(tier=tier, **{name: _scalar(v) for name, v in values.items()})


def _surface_vols(surface, spot: np.ndarray, strike: np.ndarray, expiry: np.ndarray,
                  rate: float) -> tuple[np.ndarray, np.ndarray]:
    """The surface's vol at each (strike, expiry) and its ATM vol at each expiry, one surface call
    per distinct expiry (a fitted surface is evaluated slice by slice)."""
    spot, strike, expiry = np.broadcast_arrays(spot, strike, expiry)
    k = np.log(strike / (spot * np.exp(rate * expiry)))
    vol_k = np.empty(k.shape)
    vol_atm = np.empty(k.shape)
    for T in np.unique(expiry):
        at = expiry == T
        vol_k[at] = np.broadcast_to(np.asarray(surface.implied_vol(k[at], float(T)), dtype=np.float64),
                                    (int(at.sum()),))
        vol_atm[at] = float(np.asarray(surface.atm_vol(float(T)), dtype=np.float64))
    for name, v in (("implied_vol", vol_k), ("atm_vol", vol_atm)):
        if not np.all(np.isfinite(v) & (v > 0.0)):
            bad = np.flatnonzero(~(np.isfinite(v) & (v > 0.0)))[0]
            raise ValueError(f"surface.{name} gave {float(v.flat[bad])!r} at k={k.flat[bad]:.4f}, "
                             f"T={expiry.flat[bad]:.6f} y: a premium needs vols > 0")
    return vol_k, vol_atm


def _scalar_vols(surface, k: float, T: float) -> tuple[float, float]:
    """The surface's vol at log-moneyness ``k`` and its ATM vol, at one expiry ``T``."""
    vol_k = float(np.asarray(surface.implied_vol(k, T), dtype=np.float64))
    vol_atm = float(np.asarray(surface.atm_vol(T), dtype=np.float64))
    for name, v in (("implied_vol", vol_k), ("atm_vol", vol_atm)):
        if not (math.isfinite(v) and v > 0.0):
            raise ValueError(f"surface.{name} gave {v!r} at k={k:.4f}, T={T:.6f} y: a premium "
                             "needs vols > 0")
    return vol_k, vol_atm


def _markup_for(config: PremiumConfig, tier: str | None) -> tuple[float, str]:
    if tier is None:
        return config.custom_markup_fraction, ""
    return config.tier(tier).markup_fraction, tier


def quote_from_surface(surface: Surface, spot_usd: float, strike_usd: float, expiry_years: float,
                       amount_coin: float, reference_vol_annual: float, *,
                       config: PremiumConfig = PremiumConfig(), tier: str | None = None) -> PremiumQuote:
    """A put at ``strike_usd`` expiring in ``expiry_years`` on ``amount_coin`` coins, priced off
    ``surface`` against ``reference_vol_annual`` (e.g. the 24 h realized vol). The markup is the
    named ``tier``'s, else ``config.custom_markup_fraction``."""
    for name, v in (("spot_usd", spot_usd), ("strike_usd", strike_usd),
                    ("expiry_years", expiry_years), ("amount_coin", amount_coin)):
        _finite(name, v, low=0.0, strict=True)
    _check_vol("reference_vol_annual", reference_vol_annual)
    markup, name = _markup_for(config, tier)
    k = math.log(strike_usd / spot_usd) - config.rate_annual * expiry_years
    vol_k, vol_atm = _scalar_vols(surface, k, float(expiry_years))
    return quote_from_vols(spot_usd, strike_usd, expiry_years, amount_coin, vol_k, vol_atm,
                           reference_vol_annual, markup_fraction=markup, config=config, tier=name)


def quote_grid(surface: Surface, spot_usd: float, strike_usd, expiry_years, amount_coin: float,
               reference_vol_annual: float, *, markup_fraction=None,
               config: PremiumConfig = PremiumConfig()) -> PremiumQuote:
    """Many puts in one vectorized call: ``strike_usd``, ``expiry_years`` (and
    ``markup_fraction``, default ``config.custom_markup_fraction``) broadcast together, e.g.
    ``strikes[:, None]`` against ``expiries[None, :]``; the quote's fields are arrays of that
    shape."""
    _finite("spot_usd", spot_usd, low=0.0, strict=True)
    _check_vol("reference_vol_annual", reference_vol_annual)
    K = _positive_array("strike_usd", strike_usd)
    T = _positive_array("expiry_years", expiry_years)
    markup = config.custom_markup_fraction if markup_fraction is None else markup_fraction
    K, T, markup = np.broadcast_arrays(K, T, np.asarray(markup, dtype=np.float64))
    vol_k, vol_atm = _surface_vols(surface, np.asarray(float(spot_usd)), K, T, config.rate_annual)
    return quote_from_vols(spot_usd, K, T, amount_coin, vol_k, vol_atm, reference_vol_annual,
                           markup_fraction=markup, config=config)


def _take(quote: PremiumQuote, index, tier: str) -> PremiumQuote:
    values = {f.name: getattr(quote, f.name) for f in fields(quote) if f.name != "tier"}
    return PremiumQuote(tier=tier, **{k: float(np.asarray(v)[index]) for k, v in values.items()})


def price_tiers(surface: Surface, spot_usd: float, expiry_years: float, amount_coin: float,
                reference_vol_annual: float, *,
                config: PremiumConfig = PremiumConfig()) -> dict[str, PremiumQuote]:
    """Every tier of ``config`` (its strike ``strike_fraction * spot`` and its markup) at one
    expiry, priced in one vectorized call: tier name -> quote, in the order of ``config.tiers``."""
    _finite("expiry_years", expiry_years, low=0.0, strict=True)
    _finite("amount_coin", amount_coin, low=0.0, strict=True)
    _finite("spot_usd", spot_usd, low=0.0, strict=True)
    strikes = float(spot_usd) * np.array([t.strike_fraction for t in config.tiers])
    markups = np.array([t.markup_fraction for t in config.tiers])
    grid = quote_grid(surface, spot_usd, strikes, float(expiry_years), amount_coin,
                      reference_vol_annual, markup_fraction=markups, config=config)
    return {t.name: _take(grid, i, t.name) for i, t in enumerate(config.tiers)}


def _json_number(x) -> float:
    return float(np.asarray(x))


def quote_to_dict(quote: PremiumQuote) -> dict:
    """A JSON-ready dict of a (scalar) quote for ``hedgeflow quote``: every field at the top level
    (the seven ``BREAKDOWN_FIELDS`` sum to ``premium_usd``) and ``breakdown``, the same factors in
    summing order, each with its share of the premium and what it means (PF-207)."""
    out: dict = {"tier": quote.tier}
    for f in fields(quote):
        if f.name != "tier":
            out[f.name] = _json_number(getattr(quote, f.name))
    premium = out["premium_usd"]
    out["breakdown"] = [
        {"factor": name, "usd": out[name],
         "share_of_premium": out[name] / premium if premium else None,
         "explanation": _EXPLANATIONS[name]}
        for name in BREAKDOWN_FIELDS
    ]
    return out


# --------------------------------------------------------------------------- cache

# The USD fields of a quote: homogeneous of degree one in (spot, strike) at a fixed smile.
_USD_FIELDS = ("intrinsic_usd", "time_value_usd", "volatility_usd", "skew_usd", "jump_usd",
               "margin_usd", "vol_of_vol_margin_usd", "liquidity_margin_usd", "markup_usd",
               "fair_value_usd")


def _scaled(unit: PremiumQuote, spot_usd: float, tick: float) -> PremiumQuote:
    """``unit`` (a quote at spot 1, unrounded) at ``spot_usd``: every USD amount times the spot,
    then rounded up to ``tick`` as ``quote_from_vols`` does."""
    values = {name: getattr(unit, name) * spot_usd for name in _USD_FIELDS}
    unrounded = values["fair_value_usd"] + values["margin_usd"]
    premium = math.ceil(unrounded / tick - 1e-9) * tick if tick > 0.0 else unrounded
    total = 0.0
    for name in BREAKDOWN_FIELDS[:-1]:
        total += values[name]
    amount = unit.amount_coin
    return replace(
        unit, spot_usd=spot_usd, strike_usd=unit.strike_usd * spot_usd,
        forward_usd=unit.forward_usd * spot_usd, premium_usd=premium, rounding_usd=premium - total,
        premium_per_coin_usd=premium / amount,
        premium_pct_of_notional=100.0 * premium / (amount * spot_usd), **values)


class PremiumCache:
    """A small LRU of quotes keyed on their inputs rounded to set precisions (PF-107/206/307).

    A premium is homogeneous of degree one in spot and strike at a fixed smile (every factor,
    margins included, scales with the spot when the strike moves with it). So the cache stores
    quotes per unit of spot, keyed on moneyness, and scales them to the request's spot: spot needs
    no rounding and is exact. The key is:

    - moneyness ``ln(K / S)`` to ``moneyness_precision`` (1e-4, i.e. 1 bp of strike), or exactly
      the tier's ``strike_fraction`` for a tier request at its own strike (so a tier's quotes keep
      their exact strike however the spot moves);
    - expiry to ``expiry_precision_years`` (a minute), amount to ``amount_precision_coin``;
    - the strike's, ATM and reference vols to ``vol_precision`` (1e-4), the markup and the config.

    The surface enters through its vols, looked up (cheaply) at every request: a refitted surface
    that moved a vol by more than the precision misses by itself, and a cached quote never outlives
    the surface it came from.

    A miss prices the cell's canonical inputs (its grid point), not the request's: every request in
    one cell gets the same quote, scaled to its spot, whatever order requests arrive in, and the
    quote's fields say what was priced (a custom strike comes back within
    ``moneyness_precision / 2`` of the one asked for). The price of the cells is a bounded error
    against ``quote_from_surface``: about vega x ``vol_precision / 2`` + theta x half a minute,
    plus, for a custom strike, delta x strike x ``moneyness_precision / 2``.

    Not thread-safe: one cache per node or per worker.
    """

    def __init__(self, maxsize: int = 4096, *, moneyness_precision: float = 1e-4,
                 expiry_precision_years: float = 60.0 / SECONDS_PER_YEAR,
                 vol_precision: float = 1e-4, amount_precision_coin: float = 1e-8) -> None:
        if int(maxsize) != maxsize or maxsize < 1:
            raise ValueError(f"maxsize must be an integer >= 1, got {maxsize!r}")
        for name, v in (("moneyness_precision", moneyness_precision),
                        ("expiry_precision_years", expiry_precision_years),
                        ("vol_precision", vol_precision),
                        ("amount_precision_coin", amount_precision_coin)):
            _finite(name, v, low=0.0, strict=True)
        self.maxsize = int(maxsize)
        self.moneyness_precision = float(moneyness_precision)
        self.expiry_precision_years = float(expiry_precision_years)
        self.vol_precision = float(vol_precision)
        self.amount_precision_coin = float(amount_precision_coin)
        self._entries: OrderedDict[tuple, PremiumQuote] = OrderedDict()
        self._unrounded: dict[PremiumConfig, PremiumConfig] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def hit_rate(self) -> float:
        """Hits over requests (NaN before the first request)."""
        total = self.hits + self.misses
        return self.hits / total if total else math.nan

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        self._entries.clear()
        self.hits = self.misses = 0

    @staticmethod
    def _cell(value: float, step: float, *, at_least_one: bool = False) -> int:
        index = int(round(value / step))
        return max(index, 1) if at_least_one else index

    def canonical_inputs(self, spot_usd: float, strike_usd: float, expiry_years: float,
                         amount_coin: float, *, strike_fraction: float | None = None
                         ) -> tuple[tuple, tuple[float, float, float]]:
        """The cells of moneyness, expiry and amount, and the grid points they stand for:
        ``(strike / spot, expiry_years, amount_coin)``, each > 0 (a value that rounds to 0 is kept
        at the first cell). With ``strike_fraction`` (a tier's) the moneyness is that, exactly."""
        if strike_fraction is not None:
            moneyness_cell: tuple = ("fraction", float(strike_fraction))
            moneyness = float(strike_fraction)
        else:
            index = self._cell(math.log(strike_usd / spot_usd), self.moneyness_precision)
            moneyness_cell, moneyness = ("log", index), math.exp(index * self.moneyness_precision)
        years_cell = self._cell(expiry_years, self.expiry_precision_years, at_least_one=True)
        amount_cell = self._cell(amount_coin, self.amount_precision_coin, at_least_one=True)
        return ((moneyness_cell, years_cell, amount_cell),
                (moneyness, years_cell * self.expiry_precision_years,
                 amount_cell * self.amount_precision_coin))

    def get_or_compute(self, surface: Surface, spot_usd: float, strike_usd: float,
                       expiry_years: float, amount_coin: float, reference_vol_annual: float, *,
                       config: PremiumConfig = PremiumConfig(), tier: str | None = None) -> PremiumQuote:
        """The quote of ``quote_from_surface`` for the request's cell, scaled to its spot: from
        the cache, or priced at the cell's canonical inputs and stored (evicting the least
        recently used entry)."""
        for name, v in (("spot_usd", spot_usd), ("strike_usd", strike_usd),
                        ("expiry_years", expiry_years), ("amount_coin", amount_coin)):
            _finite(name, v, low=0.0, strict=True)
        _check_vol("reference_vol_annual", reference_vol_annual)
        spot = float(spot_usd)
        markup, name = _markup_for(config, tier)
        fraction = None
        if tier is not None:
            tier_fraction = config.tier(tier).strike_fraction
            if abs(float(strike_usd) / spot - tier_fraction) <= 1e-12 * tier_fraction:
                fraction = tier_fraction
        cells, (moneyness, years, amount) = self.canonical_inputs(
            spot, float(strike_usd), float(expiry_years), float(amount_coin), strike_fraction=fraction)
        vol_k, vol_atm = _scalar_vols(surface, math.log(moneyness) - config.rate_annual * years, years)
        vol_cells = tuple(self._cell(v, self.vol_precision, at_least_one=True)
                          for v in (vol_k, vol_atm, float(reference_vol_annual)))
        key = (*cells, *vol_cells, float(markup), name, config)
        unit = self._entries.get(key)
        if unit is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        else:
            self.misses += 1
            unrounded = self._unrounded.get(config)
            if unrounded is None:
                unrounded = self._unrounded[config] = replace(config, rounding_tick_usd=0.0)
            vols = [c * self.vol_precision for c in vol_cells]
            unit = quote_from_vols(1.0, moneyness, years, amount, *vols, markup_fraction=markup,
                                   config=unrounded, tier=name)
            self._entries[key] = unit
            if len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        return _scaled(unit, spot, config.rounding_tick_usd)
