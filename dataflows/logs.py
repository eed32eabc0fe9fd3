"""Structured logging on the stdlib ``logging`` module: readable text by default, JSON lines on request.

Modules log through ordinary loggers (``logging.getLogger(__name__)``) and attach structured
fields either directly::

    log.info("connected", extra={"fields": {"url": url, "attempt": 3}})

or with the helper::

    log_event(log, "info", "connected", url=url, attempt=3)

``configure_logging`` installs one handler on the root logger that renders them.

Text (the default), one line per record, times in UTC with milliseconds::

    2026-11-21T20:48:02.123Z INFO dataflows.feeds: connected url=ws://127.0.0.1:8765 attempt=3

JSON, one object per line, with ``ts``, ``level``, ``logger``, ``msg``, every field, and ``exc``
(the formatted traceback) when the record carries exception info.

Secrets are never written: a field whose name contains ``key``, ``secret``, ``password``,
``token`` or ``private`` (any case, at any depth of nested mappings) is rendered as ``"***"``.
Only structured fields are redacted, so never interpolate a secret into the message text.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import re
import sys
from collections.abc import Mapping
from typing import IO, Any

__all__ = [
    "JsonFormatter",
    "REDACTED",
    "TextFormatter",
    "configure_logging",
    "format_utc",
    "is_secret_key",
    "log_event",
    "redact",
]

#: What a secret field's value is replaced with.
REDACTED = "***"

_SECRET_WORDS = ("key", "secret", "password", "token", "private")

# JSON keys every record has; a field with one of these names is emitted as "field_<name>"
# rather than overwriting the record's own value.
_RESERVED_JSON_KEYS = frozenset({"ts", "level", "logger", "msg", "exc", "stack"})

# Text values made only of these characters are written bare; anything else is JSON-quoted so
# a line stays splittable on spaces and "=" (logfmt style).
_BARE_VALUE = re.compile(r"[A-Za-z0-9_.:/@+*\-]+")

# Marks the handler configure_logging installed, so a second call replaces it instead of adding
# another (and leaves handlers installed by others, e.g. pytest's caplog, alone).
_HANDLER_MARK = "_hedgeflow_handler"


def is_secret_key(name: object) -> bool:
    """True when a field name looks like it holds a secret (case-insensitive substring match)."""
    lowered = str(name).lower()
    return any(word in lowered for word in _SECRET_WORDS)


def redact(fields: Mapping[Any, Any]) -> dict[Any, Any]:
    """A copy of ``fields`` with secret-named values replaced by ``"***"``, recursing into mappings."""
    out: dict[Any, Any] = {}
    for name, value in fields.items():
        if is_secret_key(name):
            out[name] = REDACTED
        elif isinstance(value, Mapping):
            out[name] = redact(value)
        else:
            out[name] = value
    return out


def _record_fields(record: logging.LogRecord) -> dict[Any, Any]:
    fields = getattr(record, "fields", None)
    if not isinstance(fields, Mapping) or not fields:
        return {}
    return redact(fields)


def format_utc(epoch_s: float) -> str:
    """``2026-11-21T20:48:02.123Z``: UTC, ISO 8601, millisecond precision (truncated)."""
    t = _dt.datetime.fromtimestamp(epoch_s, tz=_dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{t.microsecond // 1000:03d}Z"


def _jsonable(value: Any) -> Any:
    """Convert a field value into something ``json.dumps`` writes as valid JSON."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        # NaN/inf are not JSON; keep them readable as strings rather than failing the record.
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy scalars: write the number, not its repr
    if callable(item):
        try:
            return _jsonable(item())
        except (TypeError, ValueError):
            pass
    return str(value)


def _text_value(value: Any) -> str:
    if isinstance(value, str):
        return value if _BARE_VALUE.fullmatch(value) else json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(_jsonable(value))  # true/false/null, numbers as written
    if isinstance(value, (Mapping, list, tuple, set, frozenset)):
        return json.dumps(_jsonable(value), ensure_ascii=False, separators=(",", ":"))
    return _text_value(str(_jsonable(value)))


class TextFormatter(logging.Formatter):
    """``<UTC time> <LEVEL> <logger>: <message> key=value ...``, then any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [f"{format_utc(record.created)} {record.levelname} {record.name}: {record.getMessage()}"]
        parts.extend(f"{name}={_text_value(value)}" for name, value in _record_fields(record).items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``msg``, fields, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": format_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, value in _record_fields(record).items():
            name = str(name)
            obj[f"field_{name}" if name in _RESERVED_JSON_KEYS else name] = _jsonable(value)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            obj["exc"] = record.exc_text
        if record.stack_info:
            obj["stack"] = self.formatStack(record.stack_info)
        # One line per record whatever the content: json.dumps escapes newlines inside strings.
        return json.dumps(obj, ensure_ascii=False)


_FORMATTERS: dict[str, type[logging.Formatter]] = {"text": TextFormatter, "json": JsonFormatter}


def _level_number(level: str | int) -> int:
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    names = logging.getLevelNamesMapping()
    number = names.get(str(level).strip().upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(sorted(names))}")
    return number


def configure_logging(format: str = "text", level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Install hedgeflow's handler on the root logger, replacing the one a previous call installed.

    ``format``: "text" or "json". ``level``: a stdlib level name (any case), applied to the root
    logger. ``stream``: where lines go, ``sys.stderr`` by default. Handlers installed by anyone
    else are left in place; calling this twice never duplicates output.
    """
    fmt = str(format).strip().lower()
    if fmt not in _FORMATTERS:
        raise ValueError(f"unknown log format {format!r}; use one of {', '.join(_FORMATTERS)}")
    levelno = _level_number(level)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()  # StreamHandler.close does not close the stream itself

    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(_FORMATTERS[fmt]())
    root.addHandler(handler)
    root.setLevel(levelno)


def log_event(
    logger: logging.Logger,
    level: str | int,
    msg: str,
    /,
    *,
    exc_info: Any = None,
    **fields: Any,
) -> None:
    """Log ``msg`` with structured ``fields`` at ``level`` (a name such as "info", or a number).

    ``exc_info`` is passed to the logger as usual (``True`` inside an ``except`` block). The
    record's source location is the caller's, not this helper's.
    """
    logger.log(_level_number(level), msg, exc_info=exc_info, extra={"fields": fields}, stacklevel=2)
