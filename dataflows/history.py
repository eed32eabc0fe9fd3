"""Historical series from files, as the backtests read them: OHLCV bars as CSV or Parquet
(columns ``timestamp``, ``open``, ``high``, ``low``, ``close``, ``volume``; any row order), and
settled perpetual funding (the CSV of ``../shared/data/market``: ``venue``, ``settlement_ts``,
``rate_raw`` per interval, ``interval_hours``, ``mark_price``).

Timestamps are read as UTC: ISO text (``2021-12-31 23:01:00``, naive means UTC), or epoch numbers
(seconds, milliseconds, microseconds or nanoseconds, told apart by size). Rows come back sorted by time; a
repeated timestamp is an error, not silently averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.errors import HedgeflowError

__all__ = ["FundingSeries", "OhlcvSeries", "load_funding", "load_ohlcv"]

OHLCV_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class OhlcvSeries:
    """Bars in time order: ``ts_s`` epoch seconds (UTC) of each bar, prices in the file's quote
    currency (USD for hedgeflow's markets)."""

    path: str
    ts_s: np.ndarray
    open_usd: np.ndarray
    high_usd: np.ndarray
    low_usd: np.ndarray
    close_usd: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return int(self.ts_s.size)


def _epoch_seconds(column: pd.Series, path: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(column):
        values = column.to_numpy(dtype=np.float64)
        # Epoch seconds of today are ~1.7e9: milliseconds ~1.7e12, micro ~1.7e15, nano ~1.7e18.
        scale = np.select([values > 1e17, values > 1e14, values > 1e11], [1e-9, 1e-6, 1e-3], 1.0)
        return values * scale
    try:
        when = pd.to_datetime(column, utc=True, format="mixed")
    except (ValueError, TypeError) as exc:
        raise HedgeflowError(f"{path}: cannot read column timestamp as times ({exc}). Give ISO "
                             "times (2022-01-01 00:00:00) or epoch seconds/milliseconds") from None
    return (when - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()


def load_ohlcv(path: str | Path) -> OhlcvSeries:
    """Read an OHLCV file (``.csv`` or ``.parquet``); a mistake in it is a HedgeflowError that says
    what is wrong."""
    path = str(path)
    if not Path(path).is_file():
        raise HedgeflowError(f"price history not found: {path}. Give an OHLCV CSV or Parquet file")
    try:
        frame = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise HedgeflowError(f"cannot read {path}: {exc}") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in ("timestamp", "close") if c not in frame.columns]
    if missing:
        raise HedgeflowError(f"{path} has no column {', '.join(missing)} (it has: "
                             f"{', '.join(frame.columns)}). Expected {', '.join(OHLCV_COLUMNS)}")
    if frame.empty:
        raise HedgeflowError(f"{path} holds no rows")
    ts = _epoch_seconds(frame["timestamp"], path)
    missing_ts = ~np.isfinite(ts)
    if missing_ts.any():
        raise HedgeflowError(f"{path}: {int(missing_ts.sum())} rows have no timestamp (the first is "
                             f"data row {int(np.argmax(missing_ts)) + 1}); fill or remove them")
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    repeated = np.flatnonzero(np.diff(ts) == 0.0)
    if repeated.size:
        raise HedgeflowError(f"{path}: timestamp {frame['timestamp'].iloc[order[repeated[0]]]} "
                             "appears more than once; remove the duplicate rows")

    def column(name: str) -> np.ndarray:
        if name not in frame.columns:  # close-only series: the bar is its close
            return np.full(ts.size, np.nan) if name == "volume" else column("close")
        return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)[order]

    close = column("close")
    bad = ~(np.isfinite(close) & (close > 0.0))
    if bad.any():
        raise HedgeflowError(f"{path}: {int(bad.sum())} rows have no positive close price "
                             f"(the first at timestamp {frame['timestamp'].iloc[order[np.argmax(bad)]]})")
    return OhlcvSeries(path=path, ts_s=ts, open_usd=column("open"), high_usd=column("high"),
                       low_usd=column("low"), close_usd=close, volume=column("volume"))


@dataclass(frozen=True)
class FundingSeries:
    """Funding settlements in time order: ``ts_s`` epoch seconds (UTC), ``rate_per_interval`` as the
    venue publishes it (0.0001 = 0.01% per interval; longs pay when positive), ``interval_h`` hours
    between settlements, ``mark_usd`` the mark price at settlement (NaN where the file has none)."""

    path: str
    ts_s: np.ndarray
    venue: np.ndarray
    rate_per_interval: np.ndarray
    interval_h: np.ndarray
    mark_usd: np.ndarray

    def __len__(self) -> int:
        return int(self.ts_s.size)

    def only(self, venue: str) -> "FundingSeries":
        """The settlements of one venue."""
        keep = self.venue == venue
        if not keep.any():
            raise HedgeflowError(f"{self.path} has no funding for venue {venue!r} (it has: "
                                 f"{', '.join(sorted(set(self.venue.tolist())))})")
        return FundingSeries(self.path, self.ts_s[keep], self.venue[keep],
                             self.rate_per_interval[keep], self.interval_h[keep], self.mark_usd[keep])


FUNDING_COLUMNS = ("venue", "settlement_ts", "rate_raw", "interval_hours")


def load_funding(path: str | Path) -> FundingSeries:
    """Read a funding CSV (or Parquet) with columns ``venue``, ``settlement_ts``, ``rate_raw``,
    ``interval_hours`` and optionally ``mark_price``; mistakes are HedgeflowErrors that say what is
    wrong."""
    path = str(path)
    if not Path(path).is_file():
        raise HedgeflowError(f"funding history not found: {path}. Give a CSV with columns "
                             f"{', '.join(FUNDING_COLUMNS)}")
    try:
        frame = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise HedgeflowError(f"cannot read {path}: {exc}") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in FUNDING_COLUMNS if c not in frame.columns]
    if missing or frame.empty:
        raise HedgeflowError(f"{path}: " + (f"no column {', '.join(missing)} (it has: "
                             f"{', '.join(frame.columns)})" if missing else "holds no rows"))
    ts = _epoch_seconds(frame["settlement_ts"], path)
    rate = pd.to_numeric(frame["rate_raw"], errors="coerce").to_numpy(dtype=np.float64)
    interval = pd.to_numeric(frame["interval_hours"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~(np.isfinite(ts) & np.isfinite(rate) & np.isfinite(interval) & (interval > 0))
    if bad.any():
        raise HedgeflowError(f"{path}: {int(bad.sum())} rows lack a time, rate or interval (the "
                             f"first is data row {int(np.argmax(bad)) + 1})")
    mark = (pd.to_numeric(frame["mark_price"], errors="coerce").to_numpy(dtype=np.float64)
            if "mark_price" in frame.columns else np.full(ts.size, np.nan))
    order = np.argsort(ts, kind="stable")
    return FundingSeries(path=path, ts_s=ts[order], venue=frame["venue"].astype(str).to_numpy()[order],
                         rate_per_interval=rate[order], interval_h=interval[order], mark_usd=mark[order])
