"""hedgeflow configuration: a TOML file, environment-variable overrides, validated on load.

Sources, lowest to highest precedence::

    defaults  <  TOML file  <  environment (HEDGEFLOW_<SECTION>__<KEY>)  <  overrides (CLI)

The file has one table per section::

    [storage]
    db_path = "data/hedgeflow.duckdb"

    [dashboard]
    port = 5007

An environment variable names a section and a key in upper case, separated by a double
underscore: ``HEDGEFLOW_STORAGE__DB_PATH=x.duckdb``, ``HEDGEFLOW_DASHBOARD__PORT=5007``. Its text
is parsed to the field's type: booleans accept true/false/1/0/yes/no (any case), lists accept a
comma-separated string. Any other ``HEDGEFLOW_*`` variable is an error (a misspelt override that
silently does nothing is worse than a refusal to start), except ``HEDGEFLOW_DB`` and
``HEDGEFLOW_CONFIG``, which the command line reads itself.

Overrides are dotted keys, ``{"storage.db_path": "x.duckdb"}``; a string value for a non-string
field is parsed like an environment variable, so the CLI can pass its arguments through as text.

Every section is a frozen dataclass that validates itself in ``__post_init__``, so a config
derived with ``dataclasses.replace(cfg.storage, flush_rows=0)`` is checked exactly like a loaded
one. Every error is a :class:`ConfigError` naming the key (``storage.db_pth``), what was expected
and what was got, and where the value came from (``in hedgeflow.toml``, ``from environment
variable HEDGEFLOW_X``).

Units follow the field names: ``_s`` seconds, ``_ms`` milliseconds, ``_hz`` events per second.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import tomllib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from models.errors import HedgeflowError

__all__ = [
    "AdminConfig",
    "AnalyticsConfig",
    "ApiConfig",
    "ChainConfig",
    "HedgeSectionConfig",
    "Config",
    "ConfigError",
    "DashboardConfig",
    "FeedsConfig",
    "HedgeflowError",
    "LoggingConfig",
    "OracleConfig",
    "SimulatorConfig",
    "StorageConfig",
    "ENV_PREFIX",
    "load_config",
]

#: Prefix of every environment variable hedgeflow reads.
ENV_PREFIX = "HEDGEFLOW_"

# Read by the command line directly (database path, config file path), not settings of a section.
_ENV_IGNORED = frozenset(
    {"HEDGEFLOW_DB", "HEDGEFLOW_CONFIG", "HEDGEFLOW_CHAIN_KEY", "HEDGEFLOW_CHAIN_KEY_PASSWORD",
     "HEDGEFLOW_API__TOKEN"}  # a secret: read by dataflows.api, never part of the printed config
)

_TRUE_WORDS = frozenset({"true", "1", "yes"})
_FALSE_WORDS = frozenset({"false", "0", "no"})

LOG_FORMATS = ("text", "json")

#: The exchanges hedgeflow has adapters for, in the order feeds are started.
KNOWN_EXCHANGES = ("binance", "coinbase", "kraken", "deribit", "bybit")


class ConfigError(HedgeflowError, ValueError):
    """The configuration is invalid. The message names the key and says how to fix it.

    ``keys`` holds the dotted keys (``"storage.db_path"``) the error is about, when known; the
    loader uses it to add where each value came from.
    """

    def __init__(self, message: str, *, keys: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.keys: tuple[str, ...] = tuple(keys)


# --------------------------------------------------------------------------------------------
# Field types: checking typed values and parsing text
# --------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is list:
        return "a list of numbers" if typing.get_args(tp) == (float,) else "a list of strings"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}[tp]


def _got(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """Check a typed value (from TOML, an override or ``replace``) against a field type.

    Returns the value to store: ints become floats for float fields, list-likes become a fresh
    list (so a caller mutating its own list cannot change a frozen config).
    """
    expected = _type_name(tp)
    bad = ConfigError(f"invalid {key}: expected {expected}, got {_got(value)}", keys=(key,))
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        # bool is a subclass of int, but `port = true` is a mistake, not port 1.
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"invalid {key}: expected a finite number, got {value!r}", keys=(key,))
        return value
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if typing.get_origin(tp) is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise bad
        if item_type is float:
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                raise bad
            return [float(v) for v in value]
        if not all(isinstance(v, str) for v in value):
            raise bad
        return list(value)
    raise TypeError(f"unsupported config field type {tp!r} for {key}")  # a bug in this module


def _parse_text(key: str, tp: Any, text: str) -> Any:
    """Parse the text of an environment variable (or a string override) to a field type."""
    stripped = text.strip()
    if tp is bool:
        word = stripped.lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise ConfigError(
            f"invalid {key}: expected a boolean (true/false, 1/0, yes/no), got {text!r}", keys=(key,)
        )
    if tp is int:
        try:
            return int(stripped)
        except ValueError:
            raise ConfigError(f"invalid {key}: expected an integer, got {text!r}", keys=(key,)) from None
    if tp is float:
        try:
            return float(stripped)
        except ValueError:
            raise ConfigError(f"invalid {key}: expected a number, got {text!r}", keys=(key,)) from None
    if tp is str:
        return text  # verbatim: leading spaces could be meaningful in a path
    if typing.get_origin(tp) is list:
        # "BTCUSDT, ETHUSDT," -> ["BTCUSDT", "ETHUSDT"]: spaces and empty items are typos.
        items = [item.strip() for item in text.split(",") if item.strip()]
        if typing.get_args(tp) == (float,):
            try:
                return [float(item) for item in items]
            except ValueError:
                raise ConfigError(f"invalid {key}: expected comma-separated numbers, got {text!r}",
                                  keys=(key,)) from None
        return items
    raise TypeError(f"unsupported config field type {tp!r} for {key}")


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


class _Section:
    """Mixin for section dataclasses: type checks every field, then runs ``_validate``."""

    #: The TOML table / environment-variable segment of this section.
    SECTION: ClassVar[str]

    def __post_init__(self) -> None:
        for name, tp in _field_types(type(self)).items():
            key = f"{self.SECTION}.{name}"
            # Frozen dataclass: normalising a value (int -> float) needs object.__setattr__.
            object.__setattr__(self, name, _coerce(key, tp, getattr(self, name)))
        self._validate()

    def _validate(self) -> None:
        """Range checks; raise ConfigError through the ``_require_*`` helpers."""

    # Helpers used by _validate. `name` is the field name; messages use the dotted key.

    def _fail(self, name: str, problem: str, *others: str) -> typing.NoReturn:
        key = f"{self.SECTION}.{name}"
        raise ConfigError(
            f"invalid {key}: {problem}",
            keys=(key, *(f"{self.SECTION}.{o}" for o in others)),
        )

    def _require_positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not value > 0:
                self._fail(name, f"must be > 0, got {value!r}")

    def _require_non_negative(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not value >= 0:
                self._fail(name, f"must be >= 0, got {value!r}")

    def _require_port(self, name: str) -> None:
        value = getattr(self, name)
        if not 0 <= value <= 65535:
            self._fail(name, f"must be a TCP port between 0 and 65535 (0 = pick a free port), got {value!r}")

    def _require_non_empty(self, name: str) -> None:
        if not getattr(self, name).strip():
            self._fail(name, "must not be empty")


_FIELD_TYPES: dict[type, dict[str, Any]] = {}


def _field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved type (annotations are strings under ``from __future__``)."""
    types = _FIELD_TYPES.get(cls)
    if types is None:
        hints = typing.get_type_hints(cls)
        types = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
        _FIELD_TYPES[cls] = types
    return types


@dataclass(frozen=True)
class StorageConfig(_Section):
    """``[storage]``: the DuckDB file and how often the batched writer flushes.

    The writer flushes when ``flush_interval_s`` seconds have passed or ``flush_rows`` rows are
    buffered, whichever comes first. A tick older than its instrument's previous one is stored
    with its ``out_of_order`` flag (``out_of_order = "flag"``) or quarantined (``"quarantine"``).
    With ``archive_dir`` set (a path or fsspec URL), the running graph exports to Parquet every
    ``export_interval_s`` seconds (daily by default) and then keeps ``hot_days`` days in DuckDB,
    deleting older days only once their export is verified.
    """

    SECTION: ClassVar[str] = "storage"

    db_path: str = "data/hedgeflow.duckdb"
    flush_interval_s: float = 1.0
    flush_rows: int = 10_000
    out_of_order: str = "flag"
    archive_dir: str = ""
    export_interval_s: float = 86_400.0
    hot_days: int = 7

    def _validate(self) -> None:
        self._require_non_empty("db_path")
        self._require_positive("flush_interval_s", "flush_rows", "export_interval_s")
        if self.hot_days < 0:
            self._fail("hot_days", f"must be 0 or more days, got {self.hot_days!r}")
        if self.out_of_order not in ("flag", "quarantine"):
            self._fail("out_of_order", f'must be "flag" or "quarantine", got {self.out_of_order!r}')


@dataclass(frozen=True)
class SimulatorConfig(_Section):
    """``[simulator]``: the embedded exchange simulator (speaks the exchanges' wire formats).

    It serves every exchange of ``feeds.exchanges`` whose URL is empty, on consecutive ports from
    ``port`` (binance, coinbase, kraken, bybit, deribit); ``port`` 0 picks free ports.
    ``quote_rate_hz`` is top-of-book updates per second per symbol and venue, ``trade_rate_hz``
    trades per second per symbol and venue, ``option_rate_hz`` Deribit option tickers per second in
    total; ``malformed_rate`` is the fraction of messages deliberately malformed (for tests of the
    quarantine path), in [0, 1]; ``faults`` a fault plan such as
    ``"drop=binance@5s,stall=kraken@3s:2s,deviate=kraken:5%"`` (``hedgeflow simulate --help``).
    """

    SECTION: ClassVar[str] = "simulator"

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8765
    seed: int = 7
    symbols: list[str] = field(default_factory=lambda: ["BTCUSDT", "ETHUSDT"])
    quote_rate_hz: float = 20.0
    trade_rate_hz: float = 5.0
    option_rate_hz: float = 100.0
    malformed_rate: float = 0.0
    faults: str = ""

    def _validate(self) -> None:
        self._require_non_empty("host")
        if self.faults:
            from dataflows.sim.faults import FaultPlan, FaultSpecError

            try:
                FaultPlan.parse(self.faults)
            except FaultSpecError as exc:
                self._fail("faults", str(exc))
        self._require_port("port")
        if not self.symbols:
            self._fail("symbols", "must name at least one symbol, e.g. [\"BTCUSDT\"]")
        if any(not s.strip() for s in self.symbols):
            self._fail("symbols", f"must not contain empty symbols, got {self.symbols!r}")
        self._require_non_negative("quote_rate_hz", "trade_rate_hz", "option_rate_hz")
        if not 0.0 <= self.malformed_rate <= 1.0:
            self._fail("malformed_rate", f"must be a fraction between 0 and 1, got {self.malformed_rate!r}")


@dataclass(frozen=True)
class FeedsConfig(_Section):
    """``[feeds]``: the exchange websocket clients.

    ``exchanges`` names the feeds to run. ``<exchange>_url`` is the exchange's websocket base URL
    (e.g. ``wss://stream.binance.com:9443``); empty means the embedded simulator's. Deribit options
    are discovered for ``deribit_currencies`` and spread over connections of at most
    ``deribit_max_channels`` channels (plan 003). A BTC or ETH instrument quiet for
    ``silence_gap_s`` seconds gets a row in ``gaps``. With ``record_dir`` set, every message is
    also written there as received, in the capture format ``hedgeflow replay`` reads. Reconnects
    back off exponentially
    from ``reconnect_initial_s`` to ``reconnect_max_s``; a connection silent for
    ``silence_timeout_s`` is dropped and recorded as a gap. Raw messages are handed to the graph
    in batches of at most ``batch_max_messages``, held at most ``batch_max_latency_s``.
    """

    SECTION: ClassVar[str] = "feeds"

    exchanges: list[str] = field(
        default_factory=lambda: ["binance", "coinbase", "kraken", "deribit", "bybit"]
    )
    binance_url: str = ""
    coinbase_url: str = ""
    kraken_url: str = ""
    deribit_url: str = ""
    bybit_url: str = ""
    deribit_currencies: list[str] = field(default_factory=lambda: ["BTC", "ETH"])
    deribit_max_channels: int = 500
    silence_gap_s: float = 10.0
    record_dir: str = ""
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    silence_timeout_s: float = 15.0
    batch_max_messages: int = 1000
    batch_max_latency_s: float = 0.05

    def _validate(self) -> None:
        unknown = [e for e in self.exchanges if e not in KNOWN_EXCHANGES]
        if unknown or not self.exchanges:
            self._fail(
                "exchanges",
                f"must name one or more of {', '.join(KNOWN_EXCHANGES)}, got {self.exchanges!r}",
            )
        for exchange in KNOWN_EXCHANGES:
            url = getattr(self, f"{exchange}_url")
            if url and not url.startswith(("ws://", "wss://")):
                self._fail(
                    f"{exchange}_url",
                    f"must be a ws:// or wss:// URL (or empty for the embedded simulator), got {url!r}",
                )
        if not 1 <= self.deribit_max_channels <= 500:
            self._fail("deribit_max_channels", f"must be between 1 and 500, got {self.deribit_max_channels!r}")
        self._require_positive(
            "reconnect_initial_s", "reconnect_max_s", "silence_timeout_s", "batch_max_latency_s",
            "silence_gap_s",
        )
        if self.batch_max_messages < 1:
            self._fail("batch_max_messages", f"must be >= 1, got {self.batch_max_messages!r}")
        if self.reconnect_max_s < self.reconnect_initial_s:
            self._fail(
                "reconnect_max_s",
                f"must be >= feeds.reconnect_initial_s ({self.reconnect_initial_s!r}), "
                f"got {self.reconnect_max_s!r}",
                "reconnect_initial_s",
            )


@dataclass(frozen=True)
class OracleConfig(_Section):
    """``[oracle]``: price aggregation (models/oracle.py has every knob and its meaning).

    A price is published every ``interval_s`` seconds from at least ``min_sources`` fresh sources
    (quoted within ``stale_after_s``); with fewer the status is "degraded" (fail closed). Sources
    are ``exchange:instrument`` quotes in ``usd_quotes`` currencies, minus the ``exclude`` glob
    patterns (perpetuals and futures by default: their price carries a basis). A source further
    than ``divergence_bps`` from the others is kept out and raises an alert; an arbitrage alert
    fires when one venue's bid beats another's ask by more than ``fee_bps`` a side plus
    ``arbitrage_threshold_bps``.
    """

    SECTION: ClassVar[str] = "oracle"

    min_sources: int = 3
    stale_after_s: float = 10.0
    interval_s: float = 1.0
    usd_quotes: list[str] = field(default_factory=lambda: ["USD", "USDT", "USDC"])
    exclude: list[str] = field(
        default_factory=lambda: ["deribit:*-PERPETUAL", "deribit:*-*[0-9][A-Z][A-Z][A-Z][0-9][0-9]", "bybit:*"]
    )
    divergence_bps: float = 200.0
    fee_bps: float = 10.0
    arbitrage_threshold_bps: float = 10.0

    def _validate(self) -> None:
        if self.min_sources < 1:
            self._fail("min_sources", f"must be >= 1, got {self.min_sources!r}")
        if not self.usd_quotes:
            self._fail("usd_quotes", 'must name at least one currency, e.g. ["USD"]')
        self._require_positive("stale_after_s", "interval_s", "divergence_bps")
        self._require_non_negative("fee_bps", "arbitrage_threshold_bps")

    def model_config(self):
        """The oracle model's own config (models.oracle.RobustOracleConfig) from this section."""
        from models.oracle import RobustOracleConfig

        return RobustOracleConfig.from_mapping(dataclasses.asdict(self))


@dataclass(frozen=True)
class DashboardConfig(_Section):
    """``[dashboard]``: the Panel server. ``refresh_ms`` is the browser refresh period (ms)."""

    SECTION: ClassVar[str] = "dashboard"

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 5006
    refresh_ms: int = 500

    def _validate(self) -> None:
        self._require_non_empty("host")
        self._require_port("port")
        self._require_positive("refresh_ms")


@dataclass(frozen=True)
class LoggingConfig(_Section):
    """``[logging]``: ``format`` is "text" (human-readable) or "json" (one object per line);
    ``level`` a stdlib level name. Both are normalised (format lower case, level upper case)."""

    SECTION: ClassVar[str] = "logging"

    format: str = "text"
    level: str = "INFO"

    def _validate(self) -> None:
        fmt = self.format.strip().lower()
        if fmt not in LOG_FORMATS:
            self._fail("format", f"must be one of {', '.join(LOG_FORMATS)}, got {self.format!r}")
        level = self.level.strip().upper()
        names = logging.getLevelNamesMapping()
        if level not in names:
            self._fail("level", f"must be a level name ({', '.join(sorted(names))}), got {self.level!r}")
        object.__setattr__(self, "format", fmt)
        object.__setattr__(self, "level", level)


@dataclass(frozen=True)
class ChainConfig(_Section):
    """``[chain]``: the chain terminal. ``backend`` "embedded" (in-process EVM, Oracle deployed at
    start) or "rpc" (``rpc_url``; the Oracle at ``oracle_address``, or deployed if ``deploy_oracle``).
    Key: HEDGEFLOW_CHAIN_KEY (hex) or ``keystore_path`` + HEDGEFLOW_CHAIN_KEY_PASSWORD; the embedded
    chain makes an ephemeral one. Push when moved > ``deviation_threshold`` or ``heartbeat_s``
    passed, status ok only. While ``pause_file`` exists publishing is paused (on chain too if the
    file's first line is "on-chain"): ``hedgeflow pause [--on-chain]`` / ``hedgeflow resume``."""

    SECTION: ClassVar[str] = "chain"

    enabled: bool = True
    backend: str = "embedded"
    rpc_url: str = ""
    oracle_address: str = ""
    deploy_oracle: bool = False
    keystore_path: str = ""
    assets: list[str] = field(default_factory=lambda: ["BTC", "ETH"])
    deviation_threshold: float = 0.005
    heartbeat_s: float = 3600.0
    gas_limit: int = 300_000
    confirmations: int = 1
    stuck_after_s: float = 120.0
    fee_bump: float = 1.25
    max_attempts: int = 5
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    revert_backoff_s: float = 60.0
    receipt_poll_s: float = 1.0
    queue_size: int = 64
    max_sends_per_call: int = 4
    event_sync_s: float = 5.0
    event_sync_blocks: int = 2000
    events_from_block: int = 0
    rpc_timeout_s: float = 10.0
    pause_file: str = "data/chain.pause"
    min_price_usd: float = 1.0
    max_price_usd: float = 10_000_000.0
    max_age_s: int = 600
    max_future_s: int = 60
    max_deviation_bps: int = 2000
    min_sources: int = 1

    def _validate(self) -> None:
        if self.backend not in ("embedded", "rpc"):
            self._fail("backend", f'must be "embedded" or "rpc", got {self.backend!r}')
        if self.backend == "rpc" and not self.rpc_url.startswith(("http://", "https://")):
            self._fail("rpc_url", f"must be an http(s):// URL when chain.backend is rpc, got {self.rpc_url!r}", "backend")
        if not self.assets or any(not a.strip() for a in self.assets):
            self._fail("assets", f'must name assets, e.g. ["BTC"], got {self.assets!r}')
        self._require_positive("deviation_threshold", "heartbeat_s", "stuck_after_s", "backoff_initial_s",
                               "backoff_max_s", "receipt_poll_s", "event_sync_s", "rpc_timeout_s",
                               "min_price_usd", "gas_limit", "confirmations", "max_attempts", "queue_size",
                               "max_sends_per_call", "event_sync_blocks", "max_age_s", "max_deviation_bps")
        self._require_non_negative("revert_backoff_s", "events_from_block", "max_future_s", "min_sources")
        if self.fee_bump < 1.1:
            self._fail("fee_bump", f"must be >= 1.1 (nodes refuse smaller bumps), got {self.fee_bump!r}")
        if self.max_price_usd <= self.min_price_usd:
            self._fail("max_price_usd", "must be > chain.min_price_usd", "min_price_usd")


WORKERS = ("thread", "process", "inline", "dask")


@dataclass(frozen=True)
class AnalyticsConfig(_Section):
    """``[analytics]``: volatility, the implied-volatility surface and premium quotes.

    Volatility: oracle prices are sampled into ``volatility_bar_s`` bars; the realized volatility
    over the trailing ``volatility_window_s`` (24 h, what the hedge engine reads) is published every
    bar and is "ready" once ``volatility_min_coverage_s`` of bars are in the window. A return (or a
    recent realized volatility) more than ``anomaly_z`` forecast standard deviations out raises an
    alert (on the 1-minute BTC bars of January 2022, z = 4 raised about 9 alerts a day, z = 5 about
    4, z = 6 under 2: crypto returns have fat tails, so the default is 5).

    Surface: every ``surface_interval_s`` the option chain of each asset (tickers no older than
    ``surface_max_age_s``, expiring at least ``surface_min_expiry_s`` later) is refitted by
    ``surface_method`` ("" for the model's default) in a ``worker``: "thread" or "process" (a
    pool, so the graph never waits), "inline" (in the graph: what replay and backtests use, so the
    result does not depend on timing), or "dask" (the cluster at ``dask_address``; ``hedgeflow run
    --dask ADDRESS`` sets both).

    Premium: after each fit, puts on ``premium_amount_coin`` of each asset are priced for every
    tier of models.premium and every expiry in ``premium_expiry_days`` (days from now, at 08:00 UTC),
    with Merton jumps of ``premium_jump_intensity_per_year`` a year, each a log return of mean
    ``premium_jump_mean_log`` and stdev ``premium_jump_vol_log`` (``hedgeflow calibrate-jumps``
    estimates them from a price history), and a vol-of-vol margin at ``premium_vol_of_vol_annual``.

    Policy risk: at most every ``risk_interval_s``, the seller's side of the newest premium quotes
    is simulated (``risk_paths`` Merton paths with daily steps to expiry, in the same worker as the
    fits) for the expected payoff and the VaR and expected shortfall at ``risk_confidence``;
    ``risk_seed`` makes the paths reproducible (each run's seed is derived from it and the time).
    """

    SECTION: ClassVar[str] = "analytics"

    volatility_bar_s: float = 60.0
    volatility_window_s: float = 86_400.0
    volatility_min_coverage_s: float = 3_600.0
    anomaly_z: float = 5.0
    surface_enabled: bool = True
    surface_interval_s: float = 5.0
    surface_method: str = ""
    surface_max_age_s: float = 300.0
    surface_min_expiry_s: float = 3_600.0
    surface_min_options: int = 20
    worker: str = "thread"
    dask_address: str = ""
    premium_amount_coin: float = 1.0
    premium_expiry_days: list[float] = field(default_factory=lambda: [7.0, 30.0, 90.0])
    premium_jump_intensity_per_year: float = 6.0
    premium_jump_mean_log: float = -0.08
    premium_jump_vol_log: float = 0.06
    premium_vol_of_vol_annual: float = 0.6
    risk_enabled: bool = True
    risk_interval_s: float = 60.0
    risk_paths: int = 10_000
    risk_confidence: float = 0.99
    risk_seed: int = 0

    def _validate(self) -> None:
        self._require_positive("volatility_bar_s", "volatility_window_s", "anomaly_z",
                               "surface_interval_s", "surface_max_age_s", "premium_amount_coin",
                               "surface_min_options", "risk_interval_s")
        self._require_non_negative("volatility_min_coverage_s", "surface_min_expiry_s", "risk_seed")
        if self.risk_paths < 100:
            self._fail("risk_paths", f"must be at least 100 paths, got {self.risk_paths!r}")
        if not 0.5 <= self.risk_confidence < 1.0:
            self._fail("risk_confidence", f"must be in [0.5, 1), got {self.risk_confidence!r}")
        if self.volatility_window_s < 2 * self.volatility_bar_s:
            self._fail("volatility_window_s", "must hold at least two bars (>= 2 x volatility_bar_s)",
                       "volatility_bar_s")
        try:
            self.premium_config()
        except ValueError as exc:
            self._fail("premium_jump_intensity_per_year", str(exc), "premium_jump_mean_log",
                       "premium_jump_vol_log", "premium_vol_of_vol_annual")
        try:
            self.volatility_model_configs()
        except ValueError as exc:  # the model's own rules (a whole number of bars, ...)
            self._fail("volatility_window_s", str(exc), "volatility_bar_s", "volatility_min_coverage_s")
        if self.worker not in WORKERS:
            self._fail("worker", f"must be one of {', '.join(WORKERS)}, got {self.worker!r}")
        if self.worker == "dask" and not self.dask_address:
            self._fail("dask_address", 'must be a scheduler address (e.g. "tcp://127.0.0.1:8786") '
                       'when analytics.worker is "dask"', "worker")
        if self.surface_method not in ("", "svi", "ssvi", "essvi"):
            self._fail("surface_method", f'must be "", "svi", "ssvi" or "essvi", got {self.surface_method!r}')
        if not self.premium_expiry_days or any(not (d > 0) for d in self.premium_expiry_days):
            self._fail("premium_expiry_days", f"must be positive days, got {self.premium_expiry_days!r}")


    def premium_config(self):
        """The premium calculator's config (models.premium.PremiumConfig) from this section: every
        caller (the graph, ``hedgeflow quote``, ``hedgeflow premium-backtest``) prices alike."""
        from models.jumps import MertonJumps
        from models.premium import PremiumConfig

        return PremiumConfig(
            jumps=MertonJumps(intensity_per_year=self.premium_jump_intensity_per_year,
                              mean_log_jump=self.premium_jump_mean_log,
                              vol_log_jump=self.premium_jump_vol_log),
            vol_of_vol_annual=self.premium_vol_of_vol_annual,
        )

    def volatility_model_configs(self):
        """The streaming volatility's and the anomaly detector's configs (models.volatility)."""
        from models.volatility import AnomalyConfig, RollingVolConfig

        return (
            RollingVolConfig(bar_s=self.volatility_bar_s, window_s=self.volatility_window_s,
                             min_coverage_s=self.volatility_min_coverage_s),
            # One threshold for both: a return, or a recent volatility, this many forecast
            # standard deviations out.
            AnomalyConfig(return_z=self.anomaly_z, vol_ratio_z=self.anomaly_z),
        )


@dataclass(frozen=True)
class HedgeSectionConfig(_Section):
    """``[hedge]``: the hedge desk of plan 001 in the live graph (models.desk): ``asset``'s
    collateral ``spot_coin`` against a loan of ``loan_principal_usd`` at ``loan_apr``, a reserve of
    ``reserve_usd``, futures at ``leverage`` on paper venues, the perpetual's mark and funding read
    from ``funding_exchange``'s feed. The dead man's switch fires after ``heartbeat_timeout_s``
    without an "ok" oracle price. While ``pause_file`` exists trading is paused (reducing orders
    still pass); creating ``flatten_file`` closes the futures once (``hedgeflow pause --trading``,
    ``resume --trading``, ``flatten``: only someone who may write the data folder can).
    ``routing_venues`` names more paper futures venues (``bybit``, ``deribit``) the desk routes
    each futures order across with the main one, by all-in cost (models.execution)."""

    SECTION: ClassVar[str] = "hedge"

    enabled: bool = True
    asset: str = "BTC"
    spot_coin: float = 0.27
    leverage: float = 25.0
    loan_principal_usd: float = 16_200.0
    loan_apr: float = 0.06
    reserve_usd: float = 10_000.0
    funding_exchange: str = "binance"
    heartbeat_timeout_s: float = 3_600.0
    pause_file: str = "data/trading.pause"
    flatten_file: str = "data/trading.flatten"
    routing_venues: list[str] = field(default_factory=list)

    def _validate(self) -> None:
        self._require_positive("spot_coin", "leverage", "loan_principal_usd", "heartbeat_timeout_s")
        self._require_non_negative("loan_apr", "reserve_usd")
        if not self.asset:
            self._fail("asset", "must name a coin (BTC)")
        from models.execution import DEFAULT_VENUES

        futures = [v.name for v in DEFAULT_VENUES if "perp" in v.kinds and v.name != "binance_usdm"]
        unknown = [v for v in self.routing_venues if v not in futures]
        if unknown or len(set(self.routing_venues)) != len(self.routing_venues):
            self._fail("routing_venues", f"must be distinct names among {futures}, got "
                       f"{self.routing_venues}")
        try:
            self.desk_config()
        except ValueError as exc:
            self._fail("leverage", str(exc), "spot_coin", "loan_principal_usd", "reserve_usd")

    def desk_config(self):
        """The desk's config (models.desk.DeskConfig) from this section."""
        from models.desk import DESK_SAFETY, DeskConfig
        from models.execution import DEFAULT_VENUES
        from models.hedge import PositionState
        from models.loan import LoanConfig, ReserveConfig, TreasuryConfig

        return DeskConfig(
            asset=self.asset,
            initial_state=PositionState(spot_coin=self.spot_coin, leverage=self.leverage),
            treasury=TreasuryConfig(
                loan=LoanConfig(principal_usd=self.loan_principal_usd, apr=self.loan_apr),
                # Plan 001's tranches (3,000 and 5,000 of 10,000), scaled to this reserve.
                reserve=ReserveConfig(capacity_usd=self.reserve_usd,
                                      first_tranche_usd=0.3 * self.reserve_usd,
                                      second_tranche_usd=0.5 * self.reserve_usd)),
            safety=dataclasses.replace(DESK_SAFETY, heartbeat_timeout_s=self.heartbeat_timeout_s),
            routing_venues=tuple(v for v in DEFAULT_VENUES if v.name in self.routing_venues),
        )


@dataclass(frozen=True)
class ApiConfig(_Section):
    """``[api]``: the HTTP JSON endpoints, the WebSocket stream and the Prometheus ``/metrics``
    of ``hedgeflow run`` (dataflows/api.py, docs/api.md), on ``host``:``port`` (0 picks a free
    port). The WebSocket's token comes from HEDGEFLOW_API__TOKEN or the file ``token_file``
    (never from this file); with neither, the WebSocket refuses every client. Each WebSocket
    client has a queue of ``client_queue_size`` messages; a client that lets it fill is dropped."""

    SECTION: ClassVar[str] = "api"

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 5007
    token_file: str = ""
    client_queue_size: int = 256

    def _validate(self) -> None:
        self._require_non_empty("host")
        self._require_port("port")
        if self.client_queue_size < 1:
            self._fail("client_queue_size", f"must be >= 1 message, got {self.client_queue_size!r}")


@dataclass(frozen=True)
class AdminConfig(_Section):
    """``[admin]``: who may act on the Safety and admin page (dashboards/admin.py). ``users_file``
    is a TOML or JSON file of user names and their PBKDF2-SHA256 password hashes, written by
    ``python -m dataflows.admin_users add NAME --file PATH`` (never by hand, never in this file);
    "" means no users: the page shows the state but every action is disabled."""

    SECTION: ClassVar[str] = "admin"

    users_file: str = ""


@dataclass(frozen=True)
class Config:
    """The whole configuration: one frozen section per TOML table.

    Derive variants with ``dataclasses.replace``, e.g.
    ``replace(cfg, storage=replace(cfg.storage, db_path="x.duckdb"))``; sections re-validate.
    """

    storage: StorageConfig = field(default_factory=StorageConfig)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    feeds: FeedsConfig = field(default_factory=FeedsConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    chain: ChainConfig = field(default_factory=ChainConfig)
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    hedge: HedgeSectionConfig = field(default_factory=HedgeSectionConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{section: {key: value}}`` of plain Python values (lists copied), e.g. for printing."""
        return dataclasses.asdict(self)


# Section name -> section class, in the order they appear in Config.
SECTIONS: dict[str, type[_Section]] = {
    f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)
}


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Build and validate the configuration.

    ``path``: a TOML file; ``None`` means no file (defaults only). A path given that does not exist
    is an error. ``env``: the environment to read ``HEDGEFLOW_<SECTION>__<KEY>`` variables from,
    ``os.environ`` by default (pass ``{}`` to ignore the environment). ``overrides``: dotted keys,
    highest precedence. Raises :class:`ConfigError` on any problem.
    """
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    where: dict[str, str] = {}  # dotted key -> where its value came from, for error messages
    if path is not None:
        _merge_toml(path, values, where)
    _merge_env(os.environ if env is None else env, values, where)
    if overrides:
        _merge_overrides(overrides, values, where)

    sections = {}
    for name, cls in SECTIONS.items():
        try:
            sections[name] = cls(**values[name])
        except ConfigError as exc:
            raise _locate(exc, where) from None
    return Config(**sections)


def _locate(exc: ConfigError, where: Mapping[str, str]) -> ConfigError:
    """Append where the offending values came from to an error's message."""
    sources = [(key, where[key]) for key in exc.keys if key in where]
    if not sources:
        return exc
    if len(sources) == 1:
        suffix = f"(set {sources[0][1]})"
    else:
        suffix = "(" + "; ".join(f"{key} set {src}" for key, src in sources) + ")"
    return ConfigError(f"{exc} {suffix}", keys=exc.keys)


def _unknown_key(section: str, key: str, where: str) -> ConfigError:
    valid = list(_field_types(SECTIONS[section]))
    hint = difflib.get_close_matches(key, valid, n=1)
    did_you_mean = f" (did you mean {section}.{hint[0]}?)" if hint else ""
    return ConfigError(
        f"unknown key {section}.{key} {where}{did_you_mean}; valid keys in [{section}] are: "
        f"{', '.join(valid)}",
        keys=(f"{section}.{key}",),
    )


def _unknown_section(section: str, where: str) -> ConfigError:
    hint = difflib.get_close_matches(section, list(SECTIONS), n=1)
    did_you_mean = f" (did you mean [{hint[0]}]?)" if hint else ""
    return ConfigError(
        f"unknown section [{section}] {where}{did_you_mean}; valid sections are: {', '.join(SECTIONS)}"
    )


def _merge_toml(
    path: str | os.PathLike[str], values: dict[str, dict[str, Any]], where: dict[str, str]
) -> None:
    shown = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {shown} not found; check the path, or omit it to use the defaults"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot parse config file {shown}: {exc}; it must be valid TOML") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {shown}: {exc.strerror or exc}") from None

    src = f"in {shown}"
    for section, table in data.items():
        if section not in SECTIONS:
            raise _unknown_section(section, src)
        if not isinstance(table, dict):
            raise ConfigError(
                f"invalid {section} {src}: expected a [{section}] table, got {_got(table)}",
                keys=(section,),
            )
        known = _field_types(SECTIONS[section])
        for key, value in table.items():
            if key not in known:
                raise _unknown_key(section, key, src)
            values[section][key] = value
            where[f"{section}.{key}"] = src


def _merge_env(env: Mapping[str, str], values: dict[str, dict[str, Any]], where: dict[str, str]) -> None:
    for name in sorted(env):  # sorted: the first error reported does not depend on dict order
        if not name.startswith(ENV_PREFIX) or name in _ENV_IGNORED:
            continue
        src = f"from environment variable {name}"
        section, sep, key = name[len(ENV_PREFIX):].lower().partition("__")
        if not sep or not key:
            raise ConfigError(
                f"unknown environment variable {name}: settings are named "
                f"{ENV_PREFIX}<SECTION>__<KEY>, e.g. {ENV_PREFIX}STORAGE__DB_PATH; "
                f"valid sections are: {', '.join(SECTIONS)}. Unset it or fix its name"
            )
        if section not in SECTIONS:
            raise _unknown_section(section, src)
        types = _field_types(SECTIONS[section])
        if key not in types:
            raise _unknown_key(section, key, src)
        dotted = f"{section}.{key}"
        try:
            values[section][key] = _parse_text(dotted, types[key], env[name])
        except ConfigError as exc:
            raise ConfigError(f"{exc} (set {src})", keys=exc.keys) from None
        where[dotted] = src


def _merge_overrides(
    overrides: Mapping[str, object], values: dict[str, dict[str, Any]], where: dict[str, str]
) -> None:
    for dotted, value in overrides.items():
        src = f"from override {dotted}"
        section, sep, key = str(dotted).partition(".")
        if not sep or not key:
            raise ConfigError(
                f"invalid override key {dotted!r}: expected <section>.<key>, e.g. storage.db_path"
            )
        if section not in SECTIONS:
            raise _unknown_section(section, src)
        types = _field_types(SECTIONS[section])
        if key not in types:
            raise _unknown_key(section, key, src)
        tp = types[key]
        if isinstance(value, str) and tp is not str:
            # The CLI passes arguments as text: parse them as the environment would be.
            try:
                value = _parse_text(dotted, tp, value)
            except ConfigError as exc:
                raise ConfigError(f"{exc} (set {src})", keys=exc.keys) from None
        values[section][key] = value
        where[dotted] = src
