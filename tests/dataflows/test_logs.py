"""Tests of dataflows.logs: text and JSON formats, fields, redaction, handler replacement."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from dataflows.logs import (
    JsonFormatter,
    TextFormatter,
    configure_logging,
    is_secret_key,
    log_event,
    redact,
)

TS_RE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture(autouse=True)
def restore_root_logger():
    """configure_logging changes process-wide state: put the root logger back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)


def ours(root: logging.Logger) -> list[logging.Handler]:
    return [h for h in root.handlers if getattr(h, "_hedgeflow_handler", False)]


def make_record(msg="hello", fields=None, created=1_795_294_082.123456, level=logging.INFO, exc_info=None):
    record = logging.LogRecord("dataflows.graph", level, __file__, 1, msg, None, exc_info)
    record.created = created
    if fields is not None:
        record.fields = fields
    return record


# ---------------------------------------------------------------------------------- text


def test_text_line_layout_is_exact():
    # 1795294082.123456 s = 2026-11-21T20:48:02.123456Z; milliseconds are truncated, not rounded
    line = TextFormatter().format(make_record("message", {"key2": "x", "attempt": 3, "url": "ws://h:1/ws"}))
    assert line == "2026-11-21T20:48:02.123Z INFO dataflows.graph: message key2=*** attempt=3 url=ws://h:1/ws"


def test_text_format_through_configure_logging():
    stream = io.StringIO()
    configure_logging("text", "INFO", stream=stream)
    log = logging.getLogger("dataflows.graph")
    log.info("connected", extra={"fields": {"url": "ws://127.0.0.1:8765", "attempt": 3}})
    log.debug("not shown at INFO")
    out = stream.getvalue()
    assert re.fullmatch(TS_RE + r" INFO dataflows\.graph: connected url=ws://127\.0\.0\.1:8765 attempt=3\n", out)


def test_text_quotes_values_with_spaces_and_renders_json_scalars():
    line = TextFormatter().format(
        make_record("m", {"reason": "bad price", "empty": "", "ok": True, "none": None, "ratio": 0.5,
                          "ids": [1, 2], "ws": "a=b"})
    )
    assert line.endswith(' m reason="bad price" empty="" ok=true none=null ratio=0.5 ids=[1,2] ws="a=b"')


def test_text_without_fields_has_no_trailing_space():
    assert TextFormatter().format(make_record("plain")).endswith("dataflows.graph: plain")


def test_percent_args_are_interpolated():
    stream = io.StringIO()
    configure_logging(stream=stream)
    logging.getLogger("x").warning("lag %d ms", 12)
    assert "WARNING x: lag 12 ms" in stream.getvalue()


def test_text_includes_traceback():
    stream = io.StringIO()
    configure_logging("text", stream=stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("x").exception("failed", extra={"fields": {"n": 1}})
    first, *rest = stream.getvalue().splitlines()
    assert first.endswith("ERROR x: failed n=1")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "RuntimeError: boom"


# ---------------------------------------------------------------------------------- JSON


def test_json_one_object_per_line_with_fields():
    stream = io.StringIO()
    configure_logging("json", "DEBUG", stream=stream)
    log = logging.getLogger("dataflows.feeds")
    log.debug("first", extra={"fields": {"url": "ws://x", "attempt": 3, "lag_s": 0.25}})
    log.info("second\nline")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # a newline in the message stays inside the JSON string
    a, b = (json.loads(line) for line in lines)
    assert re.fullmatch(TS_RE, a["ts"])
    assert a == {"ts": a["ts"], "level": "DEBUG", "logger": "dataflows.feeds", "msg": "first",
                 "url": "ws://x", "attempt": 3, "lag_s": 0.25}
    assert b["msg"] == "second\nline" and b["level"] == "INFO"
    assert "exc" not in a


def test_json_ts_matches_text_ts():
    record = make_record()
    assert json.loads(JsonFormatter().format(record))["ts"] == "2026-11-21T20:48:02.123Z"


def test_json_exc_info():
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    try:
        1 / 0
    except ZeroDivisionError:
        log_event(logging.getLogger("x"), "error", "division failed", exc_info=True, numerator=1)
    obj = json.loads(stream.getvalue())
    assert obj["msg"] == "division failed"
    assert obj["numerator"] == 1
    assert obj["exc"].startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError: division by zero" in obj["exc"]


def test_json_non_serialisable_and_colliding_fields():
    obj = json.loads(JsonFormatter().format(make_record(
        "m", {"msg": "mine", "level": 2, "nan": float("nan"), "obj": object, "nested": {"a": (1, 2)}})))
    assert obj["msg"] == "m" and obj["field_msg"] == "mine"
    assert obj["level"] == "INFO" and obj["field_level"] == 2
    assert obj["nan"] == "nan"
    assert obj["obj"] == str(object)
    assert obj["nested"] == {"a": [1, 2]}


def test_json_numpy_scalars_are_numbers():
    np = pytest.importorskip("numpy")
    obj = json.loads(JsonFormatter().format(make_record("m", {"price": np.float64(1.5), "n": np.int64(3)})))
    assert obj["price"] == 1.5 and obj["n"] == 3


# ---------------------------------------------------------------------------------- redaction


@pytest.mark.parametrize("name", ["api_key", "API_KEY", "apiKey", "secret", "client_secret", "Password",
                                  "auth_token", "private_key", "PRIVATE", "keystore"])
def test_secret_names(name):
    assert is_secret_key(name)


@pytest.mark.parametrize("name", ["url", "attempt", "symbol", "price", "host"])
def test_non_secret_names(name):
    assert not is_secret_key(name)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_never_reach_the_output(fmt):
    stream = io.StringIO()
    configure_logging(fmt, stream=stream)
    log_event(logging.getLogger("x"), "info", "auth", api_key="AKIA-123", Password="hunter2",
              auth={"session_token": "tok-456", "user": "alice"}, private_key=None, url="wss://x")
    out = stream.getvalue()
    for secret in ("AKIA-123", "hunter2", "tok-456"):
        assert secret not in out
    assert "alice" in out and "wss://x" in out
    if fmt == "json":
        obj = json.loads(out)
        assert obj["api_key"] == obj["Password"] == obj["private_key"] == "***"
        assert obj["auth"] == {"session_token": "***", "user": "alice"}
    else:
        assert "api_key=*** Password=***" in out


def test_redact_does_not_modify_its_input():
    fields = {"token": "t", "inner": {"secret": "s"}}
    assert redact(fields) == {"token": "***", "inner": {"secret": "***"}}
    assert fields == {"token": "t", "inner": {"secret": "s"}}


# ---------------------------------------------------------------------------------- configuration


def test_repeated_calls_do_not_duplicate_handlers():
    root = logging.getLogger()
    first, second = io.StringIO(), io.StringIO()
    configure_logging("text", stream=first)
    configure_logging("json", stream=second)
    assert len(ours(root)) == 1
    logging.getLogger("x").warning("once")
    assert first.getvalue() == ""
    assert len(second.getvalue().splitlines()) == 1
    assert json.loads(second.getvalue())["msg"] == "once"


def test_other_handlers_are_left_alone():
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    configure_logging(stream=io.StringIO())
    configure_logging(stream=io.StringIO())
    assert foreign in root.handlers


def test_level_is_applied_and_case_insensitive():
    stream = io.StringIO()
    configure_logging("text", "warning", stream=stream)
    assert logging.getLogger().level == logging.WARNING
    logging.getLogger("x").info("hidden")
    logging.getLogger("x").error("shown")
    assert "hidden" not in stream.getvalue() and "shown" in stream.getvalue()


def test_defaults_write_text_to_stderr(capsys):
    configure_logging()  # picks up sys.stderr at call time (pytest's capture here)
    logging.getLogger("x").info("to stderr")
    assert re.search(TS_RE + " INFO x: to stderr", capsys.readouterr().err)


@pytest.mark.parametrize(("kwargs", "match"), [({"format": "xml"}, "log format"), ({"level": "LOUD"}, "log level")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        configure_logging(stream=io.StringIO(), **kwargs)


def test_log_event_levels_and_caller_location():
    stream = io.StringIO()
    configure_logging("json", "DEBUG", stream=stream)
    seen = []

    class Grab(logging.Handler):
        def emit(self, record):
            seen.append(record)

    log = logging.getLogger("dataflows.test_logs")
    grab = Grab()
    log.addHandler(grab)
    try:
        log_event(log, "debug", "a", n=1)
        log_event(log, logging.WARNING, "b", msg="field named msg", level="field named level")
    finally:
        log.removeHandler(grab)
    objs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [o["level"] for o in objs] == ["DEBUG", "WARNING"]
    assert objs[0]["n"] == 1
    assert objs[1]["field_msg"] == "field named msg" and objs[1]["field_level"] == "field named level"
    assert all(r.filename.endswith("test_logs.py") for r in seen)  # stacklevel points at the caller
