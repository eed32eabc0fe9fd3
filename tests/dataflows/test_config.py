"""Tests of dataflows.config: defaults, TOML, environment, overrides, precedence, validation."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataflows.config import (
    Config,
    ConfigError,
    FeedsConfig,
    HedgeflowError,
    StorageConfig,
    load_config,
)


def write_toml(tmp_path: Path, text: str, name: str = "hedgeflow.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------- defaults


def test_defaults_without_file_or_environment():
    cfg = load_config(env={})
    assert cfg == Config()
    assert cfg.storage.db_path == "data/hedgeflow.duckdb"
    assert cfg.storage.flush_interval_s == 1.0
    assert cfg.storage.flush_rows == 10_000
    assert cfg.simulator.enabled is True
    assert (cfg.simulator.host, cfg.simulator.port, cfg.simulator.seed) == ("127.0.0.1", 8765, 7)
    assert cfg.simulator.symbols == ["BTCUSDT", "ETHUSDT"]
    assert (cfg.simulator.quote_rate_hz, cfg.simulator.trade_rate_hz) == (20.0, 5.0)
    assert cfg.simulator.malformed_rate == 0.0
    assert cfg.feeds.binance_url == ""
    assert (cfg.feeds.reconnect_initial_s, cfg.feeds.reconnect_max_s) == (0.5, 30.0)
    assert cfg.feeds.silence_timeout_s == 15.0
    assert (cfg.feeds.batch_max_messages, cfg.feeds.batch_max_latency_s) == (1000, 0.05)
    assert (cfg.oracle.min_sources, cfg.oracle.stale_after_s, cfg.oracle.interval_s) == (3, 10.0, 1.0)
    assert (cfg.dashboard.enabled, cfg.dashboard.host, cfg.dashboard.port) == (True, "127.0.0.1", 5006)
    assert cfg.dashboard.refresh_ms == 500
    assert (cfg.logging.format, cfg.logging.level) == ("text", "INFO")


def test_config_is_frozen_and_replace_friendly():
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.storage.db_path = "x"  # type: ignore[misc]
    changed = dataclasses.replace(cfg, storage=dataclasses.replace(cfg.storage, db_path="x.duckdb"))
    assert changed.storage.db_path == "x.duckdb"
    assert cfg.storage.db_path == "data/hedgeflow.duckdb"
    # replace re-validates, so a derived config cannot be invalid either
    with pytest.raises(ConfigError, match="storage.flush_rows"):
        dataclasses.replace(cfg.storage, flush_rows=0)


def test_default_symbol_lists_are_not_shared():
    a, b = Config(), Config()
    assert a.simulator.symbols is not b.simulator.symbols


def test_to_dict_is_plain_nested_mapping():
    cfg = load_config(env={})
    d = cfg.to_dict()
    assert list(d) == ["storage", "simulator", "feeds", "oracle", "dashboard", "logging", "chain", "analytics",
                       "hedge", "api", "admin"]
    assert d["storage"] == {
        "db_path": "data/hedgeflow.duckdb", "flush_interval_s": 1.0, "flush_rows": 10_000,
        "out_of_order": "flag", "archive_dir": "", "export_interval_s": 86_400.0, "hot_days": 7,
    }
    assert d["simulator"]["symbols"] == ["BTCUSDT", "ETHUSDT"]
    d["simulator"]["symbols"].append("XRPUSDT")  # a copy: the config is unchanged
    assert cfg.simulator.symbols == ["BTCUSDT", "ETHUSDT"]


def test_error_hierarchy():
    assert issubclass(ConfigError, HedgeflowError)
    assert issubclass(ConfigError, ValueError)


# ---------------------------------------------------------------------------------- TOML file


def test_toml_file_overrides_defaults(tmp_path):
    path = write_toml(
        tmp_path,
        """
        [storage]
        db_path = "other.duckdb"
        flush_interval_s = 2      # an int is fine for a float field
        [simulator]
        enabled = false
        symbols = ["BTCUSDT"]
        malformed_rate = 0.25
        [feeds]
        binance_url = "ws://127.0.0.1:9000/ws"
        [logging]
        format = "JSON"
        level = "debug"
        """,
    )
    cfg = load_config(path, env={})
    assert cfg.storage.db_path == "other.duckdb"
    assert cfg.storage.flush_interval_s == 2.0 and isinstance(cfg.storage.flush_interval_s, float)
    assert cfg.storage.flush_rows == 10_000  # untouched keys keep their defaults
    assert cfg.simulator.enabled is False
    assert cfg.simulator.symbols == ["BTCUSDT"]
    assert cfg.simulator.malformed_rate == 0.25
    assert cfg.feeds.binance_url == "ws://127.0.0.1:9000/ws"
    assert (cfg.logging.format, cfg.logging.level) == ("json", "DEBUG")  # normalised


def test_path_may_be_a_string(tmp_path):
    path = write_toml(tmp_path, "[dashboard]\nport = 5010\n")
    assert load_config(str(path), env={}).dashboard.port == 5010


def test_missing_file_is_an_error(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="nope.toml.*not found"):
        load_config(missing, env={})


def test_invalid_toml_is_an_error(tmp_path):
    path = write_toml(tmp_path, "[storage\ndb_path = 1\n")
    with pytest.raises(ConfigError, match="cannot parse config file .*hedgeflow.toml"):
        load_config(path, env={})


def test_unknown_toml_key_names_key_and_lists_valid_ones(tmp_path):
    path = write_toml(tmp_path, '[storage]\ndb_pth = "x.duckdb"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    msg = str(info.value)
    assert "storage.db_pth" in msg
    assert "hedgeflow.toml" in msg
    assert "db_path, flush_interval_s, flush_rows" in msg
    assert "did you mean storage.db_path" in msg


def test_unknown_toml_section(tmp_path):
    path = write_toml(tmp_path, "[storag]\ndb_path = 'x'\n")
    with pytest.raises(ConfigError, match=r"unknown section \[storag\].*did you mean \[storage\]"):
        load_config(path, env={})


def test_top_level_value_instead_of_table(tmp_path):
    path = write_toml(tmp_path, 'storage = "x"\n')
    with pytest.raises(ConfigError, match=r"invalid storage .*expected a \[storage\] table"):
        load_config(path, env={})


@pytest.mark.parametrize(
    ("toml", "key", "expected", "got"),
    [
        ('[storage]\nflush_rows = "many"', "storage.flush_rows", "an integer", "'many'"),
        ("[storage]\nflush_rows = 1.5", "storage.flush_rows", "an integer", "1.5"),
        ("[dashboard]\nport = true", "dashboard.port", "an integer", "True"),  # bool is not an int
        ("[simulator]\nenabled = 1", "simulator.enabled", "a boolean", "1"),
        ("[oracle]\ninterval_s = '1'", "oracle.interval_s", "a number", "'1'"),
        ("[oracle]\ninterval_s = false", "oracle.interval_s", "a number", "False"),
        ("[storage]\ndb_path = 3", "storage.db_path", "a string", "3"),
        ("[simulator]\nsymbols = 'BTCUSDT'", "simulator.symbols", "a list of strings", "'BTCUSDT'"),
        ("[simulator]\nsymbols = [1, 2]", "simulator.symbols", "a list of strings", "[1, 2]"),
    ],
)
def test_wrong_type_names_key_expected_type_and_value(tmp_path, toml, key, expected, got):
    path = write_toml(tmp_path, toml + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    msg = str(info.value)
    assert key in msg
    assert f"expected {expected}" in msg
    assert f"got {got}" in msg
    assert "hedgeflow.toml" in msg
    assert info.value.keys == (key,)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[simulator]\nport = 65536", "simulator.port"),
        ("[simulator]\nport = -1", "simulator.port"),
        ("[dashboard]\nport = 70000", "dashboard.port"),
        ("[simulator]\nquote_rate_hz = -1.0", "simulator.quote_rate_hz"),
        ("[simulator]\ntrade_rate_hz = -0.1", "simulator.trade_rate_hz"),
        ("[simulator]\nmalformed_rate = 1.5", "simulator.malformed_rate"),
        ("[simulator]\nmalformed_rate = -0.1", "simulator.malformed_rate"),
        ("[simulator]\nsymbols = []", "simulator.symbols"),
        ("[storage]\nflush_interval_s = 0", "storage.flush_interval_s"),
        ("[storage]\nflush_rows = 0", "storage.flush_rows"),
        ("[storage]\ndb_path = ''", "storage.db_path"),
        ("[feeds]\nbatch_max_messages = 0", "feeds.batch_max_messages"),
        ("[feeds]\nbatch_max_latency_s = 0.0", "feeds.batch_max_latency_s"),
        ("[feeds]\nsilence_timeout_s = -5", "feeds.silence_timeout_s"),
        ("[feeds]\nreconnect_initial_s = 0", "feeds.reconnect_initial_s"),
        ("[feeds]\nreconnect_max_s = 0.1", "feeds.reconnect_max_s"),  # below reconnect_initial_s
        ("[feeds]\nbinance_url = 'http://example.com'", "feeds.binance_url"),
        ("[oracle]\nmin_sources = 0", "oracle.min_sources"),
        ("[oracle]\nstale_after_s = 0", "oracle.stale_after_s"),
        ("[oracle]\ninterval_s = nan", "oracle.interval_s"),
        ("[dashboard]\nrefresh_ms = 0", "dashboard.refresh_ms"),
        ("[logging]\nformat = 'xml'", "logging.format"),
        ("[logging]\nlevel = 'LOUD'", "logging.level"),
    ],
)
def test_out_of_range_values_name_the_key_and_source(tmp_path, toml, key):
    path = write_toml(tmp_path, toml + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    msg = str(info.value)
    assert f"invalid {key}" in msg
    assert "hedgeflow.toml" in msg


def test_range_edges_are_accepted(tmp_path):
    path = write_toml(
        tmp_path,
        """
        [simulator]
        port = 0
        quote_rate_hz = 0
        malformed_rate = 1.0
        [dashboard]
        port = 65535
        [feeds]
        reconnect_initial_s = 2
        reconnect_max_s = 2
        batch_max_messages = 1
        """,
    )
    cfg = load_config(path, env={})
    assert cfg.simulator.port == 0 and cfg.dashboard.port == 65535
    assert cfg.feeds.reconnect_max_s == cfg.feeds.reconnect_initial_s == 2.0


def test_cross_field_error_names_both_sources(tmp_path):
    path = write_toml(tmp_path, "[feeds]\nreconnect_max_s = 1.0\n")
    env = {"HEDGEFLOW_FEEDS__RECONNECT_INITIAL_S": "5"}
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env)
    msg = str(info.value)
    assert "feeds.reconnect_max_s" in msg and "feeds.reconnect_initial_s" in msg
    assert "hedgeflow.toml" in msg and "HEDGEFLOW_FEEDS__RECONNECT_INITIAL_S" in msg


# ---------------------------------------------------------------------------------- environment


def test_env_overrides_each_type():
    env = {
        "HEDGEFLOW_STORAGE__DB_PATH": "env.duckdb",  # str
        "HEDGEFLOW_DASHBOARD__PORT": "5007",  # int
        "HEDGEFLOW_ORACLE__STALE_AFTER_S": " 2.5 ",  # float, surrounding spaces tolerated
        "HEDGEFLOW_FEEDS__RECONNECT_MAX_S": "60",  # float written as an int
        "HEDGEFLOW_SIMULATOR__ENABLED": "No",  # bool
        "HEDGEFLOW_DASHBOARD__ENABLED": "YES",
        "HEDGEFLOW_SIMULATOR__SYMBOLS": "BTCUSDT, SOLUSDT,",  # list[str]
    }
    cfg = load_config(env=env)
    assert cfg.storage.db_path == "env.duckdb"
    assert cfg.dashboard.port == 5007
    assert cfg.oracle.stale_after_s == 2.5
    assert cfg.feeds.reconnect_max_s == 60.0 and isinstance(cfg.feeds.reconnect_max_s, float)
    assert cfg.simulator.enabled is False
    assert cfg.dashboard.enabled is True
    assert cfg.simulator.symbols == ["BTCUSDT", "SOLUSDT"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("Yes", True),
     ("false", False), ("False", False), ("0", False), ("no", False), ("NO", False)],
)
def test_env_bool_words(text, expected):
    assert load_config(env={"HEDGEFLOW_SIMULATOR__ENABLED": text}).simulator.enabled is expected


@pytest.mark.parametrize(
    ("var", "text", "key", "expected"),
    [
        ("HEDGEFLOW_DASHBOARD__PORT", "http", "dashboard.port", "an integer"),
        ("HEDGEFLOW_DASHBOARD__PORT", "5006.0", "dashboard.port", "an integer"),
        ("HEDGEFLOW_ORACLE__INTERVAL_S", "fast", "oracle.interval_s", "a number"),
        ("HEDGEFLOW_SIMULATOR__ENABLED", "maybe", "simulator.enabled", "a boolean"),
    ],
)
def test_env_parse_error_names_key_variable_and_value(var, text, key, expected):
    with pytest.raises(ConfigError) as info:
        load_config(env={var: text})
    msg = str(info.value)
    assert key in msg and var in msg and repr(text) in msg and f"expected {expected}" in msg


def test_env_range_error_names_variable():
    with pytest.raises(ConfigError) as info:
        load_config(env={"HEDGEFLOW_SIMULATOR__MALFORMED_RATE": "2"})
    msg = str(info.value)
    assert "simulator.malformed_rate" in msg
    assert "from environment variable HEDGEFLOW_SIMULATOR__MALFORMED_RATE" in msg


@pytest.mark.parametrize(
    ("var", "named"),
    [
        ("HEDGEFLOW_STORAGE__DB_PTH", "storage.db_pth"),
        ("HEDGEFLOW_STORGE__DB_PATH", "[storge]"),
        ("HEDGEFLOW_DASHBOARD_PORT", "HEDGEFLOW_DASHBOARD_PORT"),  # single underscore
        ("HEDGEFLOW_VERBOSE", "HEDGEFLOW_VERBOSE"),
    ],
)
def test_unknown_env_var_is_an_error_naming_it(var, named):
    with pytest.raises(ConfigError) as info:
        load_config(env={var: "1"})
    msg = str(info.value)
    assert var in msg
    assert named in msg


def test_env_ignores_cli_variables_and_other_prefixes():
    env = {
        "HEDGEFLOW_DB": "elsewhere.duckdb",
        "HEDGEFLOW_CONFIG": "elsewhere.toml",
        "PATH": "/usr/bin",
        "hedgeflow_storage__db_path": "lowercase-is-not-ours",
    }
    assert load_config(env=env) == Config()


def test_env_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("HEDGEFLOW_DASHBOARD__REFRESH_MS", "250")
    assert load_config().dashboard.refresh_ms == 250


@given(port=st.integers(min_value=0, max_value=65535))
def test_any_valid_port_round_trips_through_env(port):
    cfg = load_config(env={"HEDGEFLOW_DASHBOARD__PORT": str(port), "HEDGEFLOW_SIMULATOR__PORT": str(port)})
    assert cfg.dashboard.port == port
    assert cfg.simulator.port == port


@given(port=st.one_of(st.integers(max_value=-1), st.integers(min_value=65536)))
def test_any_invalid_port_is_rejected_through_env(port):
    with pytest.raises(ConfigError, match="dashboard.port"):
        load_config(env={"HEDGEFLOW_DASHBOARD__PORT": str(port)})


# ---------------------------------------------------------------------------------- overrides


def test_overrides_parse_text_and_accept_typed_values():
    cfg = load_config(
        env={},
        overrides={"storage.db_path": "x.duckdb", "dashboard.port": "5008", "oracle.min_sources": 2,
                   "simulator.symbols": "ETHUSDT", "simulator.enabled": False},
    )
    assert cfg.storage.db_path == "x.duckdb"
    assert cfg.dashboard.port == 5008
    assert cfg.oracle.min_sources == 2
    assert cfg.simulator.symbols == ["ETHUSDT"]
    assert cfg.simulator.enabled is False


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"storage.db_pth": "x"}, "storage.db_pth"),
        ({"storage": "x"}, "'storage'"),
        ({"nope.db_path": "x"}, "[nope]"),
        ({"dashboard.port": "abc"}, "dashboard.port"),
        ({"dashboard.port": True}, "dashboard.port"),
        ({"dashboard.port": 99999}, "dashboard.port"),
    ],
)
def test_override_errors_name_the_key(overrides, named):
    with pytest.raises(ConfigError) as info:
        load_config(env={}, overrides=overrides)
    assert named in str(info.value)


def test_override_error_says_it_came_from_an_override():
    with pytest.raises(ConfigError, match=r"invalid dashboard.port.*\(set from override dashboard.port\)"):
        load_config(env={}, overrides={"dashboard.port": 99999})


# ---------------------------------------------------------------------------------- precedence


def test_precedence_defaults_file_env_overrides(tmp_path):
    path = write_toml(
        tmp_path,
        """
        [storage]
        db_path = "file.duckdb"
        flush_rows = 500
        flush_interval_s = 3.0
        [dashboard]
        port = 6000
        """,
    )
    env = {"HEDGEFLOW_STORAGE__DB_PATH": "env.duckdb", "HEDGEFLOW_STORAGE__FLUSH_ROWS": "600"}
    cfg = load_config(path, env=env, overrides={"storage.db_path": "cli.duckdb"})
    assert cfg.storage.db_path == "cli.duckdb"  # override beats env and file
    assert cfg.storage.flush_rows == 600  # env beats file
    assert cfg.storage.flush_interval_s == 3.0  # file beats default
    assert cfg.dashboard.port == 6000
    assert cfg.dashboard.refresh_ms == 500  # default


def test_env_can_fix_an_invalid_file_value(tmp_path):
    # Validation runs on the merged result, so a later source may correct an earlier one.
    path = write_toml(tmp_path, "[dashboard]\nport = 70000\n")
    assert load_config(path, env={"HEDGEFLOW_DASHBOARD__PORT": "5009"}).dashboard.port == 5009


def test_sections_validate_when_constructed_directly():
    with pytest.raises(ConfigError, match="feeds.reconnect_max_s"):
        FeedsConfig(reconnect_initial_s=10.0, reconnect_max_s=1.0)
    assert StorageConfig(flush_interval_s=2).flush_interval_s == 2.0


def test_analytics_lists_of_numbers_parse_and_refuse_text():
    cfg = load_config(env={"HEDGEFLOW_ANALYTICS__PREMIUM_EXPIRY_DAYS": "1, 7,30"})
    assert cfg.analytics.premium_expiry_days == [1.0, 7.0, 30.0]
    with pytest.raises(ConfigError, match="expected comma-separated numbers"):
        load_config(env={"HEDGEFLOW_ANALYTICS__PREMIUM_EXPIRY_DAYS": "1,week"})
    with pytest.raises(ConfigError, match="premium_expiry_days: must be positive days"):
        load_config(overrides={"analytics.premium_expiry_days": [7, -1]})


def test_analytics_dask_worker_needs_an_address():
    with pytest.raises(ConfigError, match="dask_address: must be a scheduler address"):
        load_config(env={"HEDGEFLOW_ANALYTICS__WORKER": "dask"})
    cfg = load_config(env={"HEDGEFLOW_ANALYTICS__WORKER": "dask",
                           "HEDGEFLOW_ANALYTICS__DASK_ADDRESS": "tcp://127.0.0.1:8786"})
    assert cfg.analytics.worker == "dask"


def test_analytics_premium_settings_make_the_premium_config_and_are_checked():
    cfg = load_config(env={"HEDGEFLOW_ANALYTICS__PREMIUM_JUMP_INTENSITY_PER_YEAR": "2.5",
                           "HEDGEFLOW_ANALYTICS__PREMIUM_JUMP_MEAN_LOG": "-0.12"})
    premium = cfg.analytics.premium_config()
    assert premium.jumps.intensity_per_year == 2.5 and premium.jumps.mean_log_jump == -0.12
    assert premium.vol_of_vol_annual == cfg.analytics.premium_vol_of_vol_annual
    with pytest.raises(ConfigError, match="analytics.premium_jump_intensity_per_year"):
        load_config(env={"HEDGEFLOW_ANALYTICS__PREMIUM_JUMP_VOL_LOG": "-1"})


def test_analytics_volatility_settings_follow_the_models_rules():
    with pytest.raises(ConfigError, match="whole number of bars"):
        load_config(env={"HEDGEFLOW_ANALYTICS__VOLATILITY_BAR_S": "7"})
    with pytest.raises(ConfigError, match="min_coverage_s must be in"):
        load_config(env={"HEDGEFLOW_ANALYTICS__VOLATILITY_MIN_COVERAGE_S": "100000"})


def test_hedge_routing_venues_name_paper_futures_venues():
    cfg = load_config(env={"HEDGEFLOW_HEDGE__ROUTING_VENUES": "bybit,deribit"})
    assert [v.name for v in cfg.hedge.desk_config().routing_venues] == ["bybit", "deribit"]
    assert load_config(env={}).hedge.desk_config().routing_venues == ()
    for bad in ("ftx", "bybit,bybit", "binance_usdm"):
        with pytest.raises(ConfigError, match="routing_venues"):
            load_config(env={"HEDGEFLOW_HEDGE__ROUTING_VENUES": bad})
