"""Jump-diffusion parameters shared by the premium calculator and the Monte Carlo engine.

Merton (1976): the log price follows a diffusion plus compound-Poisson jumps; each jump multiplies
the price by ``exp(J)`` with ``J ~ Normal(mean_log_jump, vol_log_jump^2)``. Under the pricing
measure the drift is compensated by ``intensity_per_year * kappa`` with
``kappa = E[exp(J)] - 1 = exp(mean_log_jump + vol_log_jump^2 / 2) - 1``, so the forward is
unchanged by the jumps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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
