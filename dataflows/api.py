"""hedgeflow's API: HTTP JSON endpoints, a WebSocket stream by topic, and Prometheus metrics.

One tornado server on the pipeline's asyncio loop (``[api]``: 127.0.0.1:5007 by default), started
by ``Pipeline.start`` after the views and stopped before the graph closes. docs/api.md is the
user's reference; in short:

```
GET  /api/oracle            latest oracle price of every asset        (views["oracle"])
GET  /api/oracle/<ASSET>    latest oracle price of one asset
GET  /api/premium?...       a protection quote (plan 000 PF-108); POST takes the same as JSON
GET  /api/alerts?...        recent alerts                               (views["alerts"])
GET  /api/hedge             the hedge desk's latest step and its gate   (views["hedge"])
GET  /metrics               Prometheus text format 0.0.4                (dataflows.metrics)
WS   /ws                    {"op": "subscribe", "topics": [...]}: oracle, premiums, hedge, alerts
```

A bad request gets 400 and ``{"error": "<what was wrong and what to send>"}``; a request the
pipeline cannot answer yet (no price, no surface) 503 with the reason.

**Authentication (the choice).** The WebSocket needs the token, from HEDGEFLOW_API__TOKEN or the
file ``[api].token_file`` (never the config file, never logged), sent as ``Authorization: Bearer
<token>`` on the handshake or as the first message ``{"op": "auth", "token": "..."}`` (browsers
cannot set headers); it is compared with ``hmac.compare_digest``. With no token configured, every
WebSocket client is refused with a message saying how to configure one. The HTTP GET endpoints
are read-only views of what the dashboards already show and stay open while the server listens on
a loopback address; bound to any other address they require the same bearer token.

**Backpressure.** The graph's sinks never wait on a client: each message is serialized once and
``put_nowait`` into every subscriber's bounded queue (``[api].client_queue_size``); a task per
client writes its queue to the socket. A client whose queue is full is disconnected (close code
4008, reason "slow consumer ..."), and the graph goes on at its own pace.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import ipaddress
import logging
import math
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import orjson
import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket
from tornado.iostream import StreamClosedError

from dataflows.analytics import expiry_at, surface_pricing_inputs
from dataflows.clock import iso_utc
from dataflows.logs import log_event
from dataflows.metrics import CONTENT_TYPE, LastMessage, render_metrics
from models.errors import HedgeflowError
from models.option_book import SECONDS_PER_YEAR
from models.premium import PremiumCache, quote_to_dict

log = logging.getLogger(__name__)

TOKEN_ENV = "HEDGEFLOW_API__TOKEN"
TOPICS = ("oracle", "premiums", "hedge", "alerts")
AUTH_TIMEOUT_S = 10.0  # a client that neither sent the header nor authenticates is closed
MAX_REQUEST_BYTES = 65_536  # a client's request is a line of JSON; anything larger is refused

# Close codes (4000-4999 are the application's): the reason text says what to do.
CLOSE_UNAUTHORIZED = 4001
CLOSE_SLOW = 4008
CLOSE_GOING_AWAY = 1001

NO_TOKEN_MESSAGE = (
    "the WebSocket API has no token configured, so it refuses every client: set "
    f"{TOKEN_ENV}=<secret> in the environment of hedgeflow run, or [api].token_file = "
    '"<path of a file holding it>", then connect with the header "Authorization: Bearer '
    '<secret>" or send {"op": "auth", "token": "<secret>"} first'
)


def dumps(value) -> str:
    """JSON text (NaN and infinities become null: JSON has no spelling for them)."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


# ------------------------------------------------------------------------------ token


def load_token(token_file: str = "", env: Mapping[str, str] | None = None) -> str | None:
    """The API token: ``HEDGEFLOW_API__TOKEN`` if set, else the text of ``token_file`` (stripped),
    else None (no token: the WebSocket refuses everyone). A token file that cannot be read or is
    empty is an error, not a silent "no token"."""
    env = os.environ if env is None else env
    token = env.get(TOKEN_ENV, "").strip()
    if token:
        return token
    if not token_file:
        return None
    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise HedgeflowError(
            f"cannot read the API token file {token_file} ([api].token_file): "
            f"{exc.strerror or exc}. Fix the path, or set {TOKEN_ENV} instead") from None
    if not token:
        raise HedgeflowError(f"the API token file {token_file} ([api].token_file) is empty: "
                             "write the token in it, or set the key to \"\" to run without one")
    return token


def token_matches(expected: str | None, given: str | None) -> bool:
    if not expected or given is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------------------ JSON shapes


def price_json(p) -> dict:
    """An ``OraclePrice`` as the API shows it (``ts`` epoch s and ``time_utc``)."""
    return {"asset": p.asset, "ts": p.ts, "time_utc": iso_utc(p.ts), "price_usd": p.price_usd,
            "confidence_usd": p.confidence_usd, "n_sources": p.n_sources, "status": p.status,
            "reason": p.reason, "sources": list(p.sources), "rejected": list(p.rejected)}


def alert_json(a) -> dict:
    return {"ts": a.ts, "time_utc": iso_utc(a.ts), "kind": a.kind, "severity": a.severity,
            "message": a.message, "subject": a.subject}


def premium_record_json(q) -> dict:
    """A ``PremiumQuoteRecord`` of the graph's grid (every field, times also as ISO)."""
    out = {name: getattr(q, name) for name in q.__dataclass_fields__}
    out["time_utc"] = iso_utc(q.ts)
    out["expiry_time_utc"] = iso_utc(q.expiry_utc)
    return out


_STEP_FIELDS = ("ts_s", "spot_usd", "mode", "hedge_ratio", "delta_coin", "unrealized_pnl_usd",
                "realized_pnl_usd", "equity_usd", "cash_usd", "position_value_usd", "reserve_usd",
                "loan_usd", "fees_usd", "funding_usd", "ltv", "band", "trading_state",
                "principal_usd", "accrued_interest_usd", "reserve_deployed_usd")
_POSITION_FIELDS = ("spot_coin", "long_perp_coin", "short_perp_coin", "quarterly_coin", "put_coin",
                    "leverage", "put_strike_usd", "put_expiry_ts_s")


def desk_step_json(st) -> dict:
    """A ``models.desk.DeskStep`` summarized: the book's numbers, its position legs, and counts of
    what the step did (orders approved and refused, fills) with its events."""
    out = {name: getattr(st, name) for name in _STEP_FIELDS}
    out["time_utc"] = iso_utc(st.ts_s)
    out["position"] = {name: getattr(st.state, name) for name in _POSITION_FIELDS}
    out["approved_orders"] = len(st.approved)
    out["rejected_orders"] = len(st.rejections)
    out["fills"] = len(st.fills)
    out["events"] = list(st.events)
    return out


def gate_json(gate, now_s: float) -> dict:
    pause = gate.pause_state
    return {
        "trading_paused": pause.paused, "paused_by": pause.who, "pause_reason": pause.why,
        "dead_mans_switch_seconds_left": gate.seconds_left(now_s),
        "breakers": [{"name": b.name, "state": b.state, "since_s": b.since_s, "reason": b.reason,
                      "reopen_at_s": b.reopen_at_s, "trips": b.trips}
                     for b in gate.breaker_states().values()],
    }


# ------------------------------------------------------------------------------ WebSocket hub


class Hub:
    """Topic fan-out to WebSocket clients. ``publish`` is what the graph's sinks call: it
    serializes once and offers the text to every subscriber without waiting; a client whose
    bounded queue is full is dropped. A client is any object with ``topics`` (a set),
    ``offer(text) -> bool`` (False when its queue is full), ``depth`` and ``drop(code, reason)``."""

    def __init__(self, queue_size: int) -> None:
        self.queue_size = int(queue_size)
        self.clients: set = set()
        self.published: Counter = Counter()  # messages per topic (once per publish, not per client)
        self.dropped: Counter = Counter()    # clients disconnected by the server, per reason

    def add(self, client) -> None:
        self.clients.add(client)

    def remove(self, client) -> None:
        self.clients.discard(client)

    def wants(self, topic: str) -> bool:
        """Whether any client subscribes to ``topic`` (sinks skip building a message if not)."""
        return any(topic in c.topics for c in self.clients)

    def subscribers(self, topic: str) -> list:
        return [c for c in self.clients if topic in c.topics]

    def queue_depths(self) -> list[int]:
        return [c.depth for c in self.clients]

    def publish(self, topic: str, data) -> int:
        """Offer ``{"type": "data", "topic": topic, "data": data}`` to the topic's subscribers;
        returns how many took it. With no subscriber nothing is serialized."""
        targets = self.subscribers(topic)
        if not targets:
            return 0
        text = dumps({"type": "data", "topic": topic, "data": data})
        self.published[topic] += 1
        taken = 0
        for client in targets:
            if client.offer(text):
                taken += 1
            else:
                self.drop(client, "slow", CLOSE_SLOW,
                          f"slow consumer: more than {self.queue_size} messages queued")
        return taken

    def drop(self, client, why: str, code: int, reason: str) -> None:
        """Disconnect ``client`` (counted under ``why``)."""
        if client in self.clients:
            self.remove(client)
            self.dropped[why] += 1
        client.drop(code, reason)


class StreamSocket(tornado.websocket.WebSocketHandler):
    """One WebSocket client: its topics, its bounded queue, the task that writes it out."""

    def initialize(self, server: ApiServer) -> None:
        self.server = server
        self.hub = server.hub
        self.topics: set[str] = set()
        self.authenticated = False
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=server.hub.queue_size)
        self._pump: asyncio.Task | None = None
        self._writing = False
        self._auth_timer = None
        self._dropped = False

    def check_origin(self, origin: str) -> bool:
        return True  # the token, not the page's origin, is what admits a client

    # ---------------------------------------------------------------- the hub's side
    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def offer(self, text: str) -> bool:
        if self._dropped:
            return True  # already leaving: nothing to queue, nothing to drop again
        try:
            self._queue.put_nowait(text)
            return True
        except asyncio.QueueFull:
            return False

    def drop(self, code: int, reason: str) -> None:
        if self._dropped:
            return
        self._dropped = True
        self.topics = set()
        self._stop_pump()
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        log_event(log, logging.INFO, "api client dropped", reason=reason)
        self.close(code, reason[:120])  # a close reason is at most 123 bytes

    # ---------------------------------------------------------------- tornado's side
    async def open(self) -> None:
        if not self.server.token:
            self._dropped = True
            self.hub.dropped["no_token"] += 1
            try:  # the whole explanation first, then the close with its short reason
                await self.write_message(dumps({"type": "error", "error": NO_TOKEN_MESSAGE}))
            except tornado.websocket.WebSocketClosedError:
                return
            self.close(CLOSE_UNAUTHORIZED, f"no API token configured: set {TOKEN_ENV} or "
                                           "[api].token_file")
            return
        self.hub.add(self)
        self._pump = asyncio.get_running_loop().create_task(self._write_out())
        if token_matches(self.server.token, _bearer(self.request.headers.get("Authorization"))):
            self.authenticated = True
            self._reply({"type": "auth", "ok": True})
        else:
            self._auth_timer = asyncio.get_running_loop().call_later(
                AUTH_TIMEOUT_S, self.hub.drop, self, "auth", CLOSE_UNAUTHORIZED,
                f"no token within {AUTH_TIMEOUT_S:g} s: send {{\"op\": \"auth\", \"token\": ...}}")

    def on_message(self, message) -> None:
        if self._dropped:
            return
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            return self._error(f"not JSON: {str(message)[:80]!r}; send e.g. "
                               '{"op": "subscribe", "topics": ["oracle"]}')
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return self._error('a request is a JSON object with "op": "auth", "subscribe", '
                               '"unsubscribe" or "ping"')
        op = request["op"]
        if op == "auth":
            if token_matches(self.server.token, request.get("token") if isinstance(
                    request.get("token"), str) else None):
                self.authenticated = True
                if self._auth_timer is not None:
                    self._auth_timer.cancel()
                return self._reply({"type": "auth", "ok": True})
            return self.hub.drop(self, "auth", CLOSE_UNAUTHORIZED, "invalid token")
        if not self.authenticated:
            return self.hub.drop(self, "auth", CLOSE_UNAUTHORIZED,
                                 'authenticate first: {"op": "auth", "token": ...}')
        if op in ("subscribe", "unsubscribe"):
            topics = request.get("topics")
            if (not isinstance(topics, list) or not topics
                    or not all(isinstance(t, str) for t in topics)):
                return self._error(f'"{op}" needs "topics": a non-empty list of {list(TOPICS)}')
            unknown = [t for t in topics if t not in TOPICS]
            if unknown:
                return self._error(f"unknown topics {unknown}; the topics are {list(TOPICS)}")
            if op == "subscribe":
                self.topics |= set(topics)
            else:
                self.topics -= set(topics)
            return self._reply({"type": "subscribed", "topics": sorted(self.topics)})
        if op == "ping":
            return self._reply({"type": "pong", "ts": self.server.now()})
        return self._error(f"unknown op {op!r}; the ops are auth, subscribe, unsubscribe, ping")

    def on_close(self) -> None:
        self._dropped = True
        self.hub.remove(self)
        self._stop_pump()
        if self._auth_timer is not None:
            self._auth_timer.cancel()

    # ---------------------------------------------------------------- helpers
    def _reply(self, message: dict) -> None:
        if not self.offer(dumps(message)):
            self.hub.drop(self, "slow", CLOSE_SLOW,
                          f"slow consumer: more than {self.hub.queue_size} messages queued")

    def _error(self, text: str) -> None:
        self._reply({"type": "error", "error": text})

    async def _write_out(self) -> None:
        try:
            while not self._dropped:
                text = await self._queue.get()
                self._writing = True
                try:
                    await self.write_message(text)
                finally:
                    self._writing = False
        except (tornado.websocket.WebSocketClosedError, StreamClosedError):
            self.hub.remove(self)
        except asyncio.CancelledError:
            pass

    def _stop_pump(self) -> None:
        # Waiting for its queue, the pump is cancelled; waiting for a write, it is left to see
        # the connection close (cancelling tornado's write would log a spurious error).
        if self._pump is not None and not self._writing:
            self._pump.cancel()


# ------------------------------------------------------------------------------ HTTP


class ApiError(tornado.web.HTTPError):
    """An HTTP error whose message goes to the client as ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status)
        self.message = message


class JsonHandler(tornado.web.RequestHandler):
    def initialize(self, server: ApiServer) -> None:
        self.server = server

    @property
    def pipeline(self):
        return self.server.pipeline

    def prepare(self) -> None:
        if not self.server.http_open and not token_matches(
                self.server.token, _bearer(self.request.headers.get("Authorization"))):
            raise ApiError(401, "this API listens beyond loopback, so every request needs the "
                                "header \"Authorization: Bearer <token>\" (HEDGEFLOW_API__TOKEN)")

    def send(self, value, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(dumps(value))

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            message = exc.message
        elif status_code == 405:
            message = f"{self.request.method} is not allowed here"
        else:
            message = self._reason
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(dumps({"error": message, "status": status_code}))

    def query(self, allowed: tuple[str, ...]) -> dict[str, str]:
        """The query arguments (each at most once; unknown names are an error, not ignored)."""
        args = {}
        for name, values in self.request.query_arguments.items():
            if name not in allowed:
                raise ApiError(400, f"unknown parameter {name!r}; this endpoint takes "
                                    f"{', '.join(allowed) or 'no parameters'}")
            if len(values) != 1:
                raise ApiError(400, f"parameter {name!r} given {len(values)} times; give it once")
            args[name] = values[0].decode("utf-8", "replace").strip()
        return args


class NotFound(JsonHandler):
    def prepare(self) -> None:
        raise ApiError(404, f"no endpoint {self.request.path}; see GET /api for the endpoints")


class IndexHandler(JsonHandler):
    def get(self) -> None:
        self.send({"endpoints": {
            "GET /api/oracle": "latest oracle price of every asset",
            "GET /api/oracle/<ASSET>": "latest oracle price of one asset",
            "GET|POST /api/premium": "a protection quote: asset, strike_usd | protection_level "
                                     "| tier, expiry | expiry_days, amount_coin",
            "GET /api/alerts": "recent alerts: limit, since_ts, severity",
            "GET /api/hedge": "the hedge desk's latest step and its safety gate",
            "GET /metrics": "Prometheus text format 0.0.4",
            "WS /ws": f"streams by topic {list(TOPICS)} (token required)",
        }})


class OracleHandler(JsonHandler):
    def get(self, asset: str | None = None) -> None:
        self.query(())
        latest = self.pipeline.views["oracle"].latest()
        if asset is None:
            self.send({"prices": {a: price_json(p) for a, p in latest.items()}})
            return
        price = latest.get(asset.upper())
        if price is None:
            raise ApiError(404, f"no oracle price for {asset!r} yet; priced assets: "
                                f"{', '.join(latest) or 'none so far (the feeds may be starting)'}")
        self.send(price_json(price))


class AlertsHandler(JsonHandler):
    SEVERITIES = ("info", "warning", "critical")

    def get(self) -> None:
        args = self.query(("limit", "since_ts", "severity"))
        limit = _number(args, "limit", 100, integer=True, low=1, high=1000)
        since = _number(args, "since_ts", -math.inf)
        severity = args.get("severity") or None
        if severity is not None and severity not in self.SEVERITIES:
            raise ApiError(400, f"severity must be one of {', '.join(self.SEVERITIES)}, "
                                f"got {severity!r}")
        view = self.pipeline.views["alerts"]
        alerts = view.recent(int(limit), since_ts=since, severity=severity)
        self.send({"alerts": [alert_json(a) for a in alerts],
                   "counts_by_kind": dict(view.counts_by_kind)})


class HedgeHandler(JsonHandler):
    def get(self) -> None:
        self.query(())
        view = self.pipeline.views.get("hedge")
        if view is None or view.node is None:
            raise ApiError(404, "the hedge desk is not running: set [hedge].enabled = true "
                                "(HEDGEFLOW_HEDGE__ENABLED=true)")
        latest = view.latest
        self.send({
            "asset": view.node.asset,
            "latest": None if latest is None else desk_step_json(latest),
            "gate": gate_json(view.node.desk.gate, self.server.now()),
        })


class MetricsHandler(JsonHandler):
    def get(self) -> None:
        text = render_metrics(self.pipeline, now_s=self.server.now(), api=self.server,
                              last_message=self.server.last_message)
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(text)


# ------------------------------------------------------------------------------ premium (PF-108)

PREMIUM_FIELDS = ("asset", "strike_usd", "protection_level", "tier", "expiry", "expiry_days",
                  "amount_coin")


def _number(args: Mapping, name: str, default=None, *, integer: bool = False,
            low: float | None = None, high: float | None = None, strict_low: bool = False):
    """``args[name]`` as a finite number (text or JSON number), checked against its bounds."""
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool):
        raise ApiError(400, f"{name} must be a number, got {raw!r}")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ApiError(400, f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or (integer and value != int(value)):
        kind = "a whole number" if integer else "a finite number"
        raise ApiError(400, f"{name} must be {kind}, got {raw!r}")
    if low is not None and (value <= low if strict_low else value < low):
        raise ApiError(400, f"{name} must be {'>' if strict_low else '>='} {low:g}, got {raw!r}")
    if high is not None and value > high:
        raise ApiError(400, f"{name} must be <= {high:g}, got {raw!r}")
    return int(value) if integer else value


def parse_expiry(text: str) -> float:
    """``YYYY-MM-DD`` (that day's 08:00 UTC, when policies and Deribit options expire) or an ISO
    time (UTC unless it says otherwise) -> epoch s."""
    from models.deribit import expiry_ts

    text = str(text).strip()
    try:
        if "T" in text or " " in text:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.timezone.utc)
            return when.timestamp()
        return expiry_ts(dt.date.fromisoformat(text))
    except ValueError:
        raise ApiError(400, f"expiry must be a date YYYY-MM-DD (08:00 UTC) or an ISO time "
                            f"(2026-12-25T08:00Z), got {text!r}") from None


def quote_live(server: ApiServer, request: Mapping) -> dict:
    """A protection quote (PF-108) off the live surface: ``views["analytics"].latest_fit(asset)``
    and the latest "ok" oracle price, priced like the graph's premium grid (the surface's forward
    for the expiry as carry, the latest ready 24 h realized volatility as reference, else the
    surface's ATM vol) through ``models.premium.PremiumCache``. Raises ApiError (400 for a bad
    request, 404 for an unknown asset or tier, 503 when the pipeline has no fresh price or
    surface yet)."""
    unknown = sorted(set(request) - set(PREMIUM_FIELDS))
    if unknown:
        raise ApiError(400, f"unknown fields {unknown}; a quote takes {', '.join(PREMIUM_FIELDS)}")
    asset = str(request.get("asset") or "").strip().upper()
    if not asset:
        raise ApiError(400, "asset is required (e.g. asset=BTC)")
    pipeline, cfg = server.pipeline, server.pipeline.config
    premium_config = server.premium_config
    tier = request.get("tier") or None
    if tier is not None:
        try:
            tier_fraction = premium_config.tier(str(tier)).strike_fraction
        except ValueError:
            raise ApiError(400, f"unknown tier {tier!r}; the tiers are "
                                f"{', '.join(t.name for t in premium_config.tiers)}") from None
    strike = _number(request, "strike_usd", low=0.0, strict_low=True)
    level = _number(request, "protection_level", low=0.0, high=2.0, strict_low=True)
    if strike is not None and level is not None:
        raise ApiError(400, "give strike_usd or protection_level (a fraction of spot, 0.9 for "
                            "90 %), not both")
    if strike is None and level is None and tier is None:
        raise ApiError(400, "give strike_usd, protection_level (a fraction of spot, 0.9 for "
                            "90 %) or a tier (its own protection level)")
    amount = _number(request, "amount_coin", cfg.analytics.premium_amount_coin, low=0.0,
                     high=1e6, strict_low=True)
    now = server.now()
    if request.get("expiry") not in (None, "") and request.get("expiry_days") not in (None, ""):
        raise ApiError(400, "give expiry (a date) or expiry_days, not both")
    if request.get("expiry") not in (None, ""):
        expiry = parse_expiry(request["expiry"])
    else:
        days = _number(request, "expiry_days", low=0.0, high=3650.0, strict_low=True)
        if days is None:
            raise ApiError(400, "expiry (YYYY-MM-DD, 08:00 UTC) or expiry_days is required")
        expiry = expiry_at(now, days)
    if not expiry > now:
        raise ApiError(400, f"expiry {iso_utc(expiry)} is not after now ({iso_utc(now)})")

    price = pipeline.views["oracle"].latest().get(asset)
    if price is None:
        raise ApiError(404 if asset not in server.known_assets() else 503,
                       f"no oracle price for {asset} yet; priced assets: "
                       f"{', '.join(pipeline.views['oracle'].assets) or 'none so far'}")
    if price.status != "ok" or now - price.ts > cfg.oracle.stale_after_s:
        raise ApiError(503, f"the {asset} oracle price is not fit to quote on (status "
                            f"{price.status}{': ' + price.reason if price.reason else ''}, "
                            f"{now - price.ts:.0f} s old); a quote needs an ok price")
    analytics = pipeline.views.get("analytics")
    outcome = None if analytics is None else analytics.latest_fit(asset)
    if outcome is None or outcome.fit is None:
        raise ApiError(503, f"no live {asset} volatility surface yet: the option chain is fitted "
                            f"every {cfg.analytics.surface_interval_s:g} s once its tickers arrive")
    if now - outcome.ts > cfg.analytics.surface_max_age_s:
        raise ApiError(503, f"the {asset} surface is {now - outcome.ts:.0f} s old (limit "
                            f"analytics.surface_max_age_s = {cfg.analytics.surface_max_age_s:g})")

    spot = float(price.price_usd)
    if strike is None:
        strike = spot * (level if level is not None else tier_fraction)
    cache = server.premium_cache
    # The expiry on the cache's grid (a minute), so that the carry below, which keys the cache
    # through the config, is the same for every request of that minute on this surface.
    step = cache.expiry_precision_years
    years = max(round((expiry - now) / SECONDS_PER_YEAR / step), 1) * step
    fit = outcome.fit
    hits = cache.hits
    try:
        config, reference, reference_source = surface_pricing_inputs(
            fit, outcome.spot_usd, years, _realized_vol(analytics, asset), premium_config)
        quote = cache.get_or_compute(fit, spot, strike, years, amount, reference, config=config,
                                     tier=None if tier is None else str(tier))
    except ValueError as exc:
        raise ApiError(400, f"cannot price this put: {exc}") from None
    record = outcome.record
    return {
        "asset": asset,
        "priced_at_utc": iso_utc(now),
        "expiry_utc": iso_utc(expiry),
        "spot_source": "oracle",
        "oracle": {"ts": price.ts, "status": price.status, "n_sources": price.n_sources,
                   "confidence_usd": price.confidence_usd},
        "vol_reference_source": reference_source,
        "surface": {
            "fitted_at_utc": iso_utc(outcome.ts), "age_s": now - outcome.ts,
            "method": record.method, "n_options": record.n_options,
            "n_expiries": record.n_expiries, "rmse_vol": record.rmse_vol,
            "within_spread_fraction": record.within_spread_fraction,
            "arbitrage_ok": record.arbitrage_ok,
        } if record is not None else {"fitted_at_utc": iso_utc(outcome.ts)},
        "requested": {"strike_usd": strike, "amount_coin": amount, "tier": tier,
                      "protection_level": strike / spot},
        "cache": {"hit": cache.hits > hits, "hits": cache.hits, "misses": cache.misses},
        **quote_to_dict(quote),
    }


def _realized_vol(analytics, asset: str) -> float | None:
    """The latest ready 24 h realized volatility (surface_pricing_inputs judges it)."""
    for e in reversed(analytics.volatility(asset)):
        if e.ready:
            return e.vol_annual
    return None


class PremiumHandler(JsonHandler):
    def get(self) -> None:
        self.send(quote_live(self.server, self.query(PREMIUM_FIELDS)))

    def post(self) -> None:
        try:
            body = orjson.loads(self.request.body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"the body must be a JSON object: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, f"the body must be a JSON object of {', '.join(PREMIUM_FIELDS)}")
        self.send(quote_live(self.server, body))


# ------------------------------------------------------------------------------ the server


def _access_log(handler: tornado.web.RequestHandler) -> None:
    # The path only: a query string is the client's business, not the log's.
    log_event(log, logging.DEBUG, "api request", method=handler.request.method,
              path=handler.request.path, status=handler.get_status(),
              ms=round(1e3 * handler.request.request_time(), 2))


class ApiServer:
    """The API of one pipeline (module docstring). ``await start()`` listens and subscribes the
    hub to the graph's streams; ``await stop()`` closes every client and the listener and
    unsubscribes. ``port`` is the port listened on (useful with ``[api].port = 0``)."""

    def __init__(self, pipeline, config=None, *, token: str | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.pipeline = pipeline
        self.config = config if config is not None else pipeline.config.api
        self.token = token if token is not None else load_token(self.config.token_file, env)
        self.http_open = is_loopback(self.config.host)
        self.hub = Hub(self.config.client_queue_size)
        self.last_message = LastMessage()
        self.premium_cache = PremiumCache()
        self.premium_config = pipeline.config.analytics.premium_config()
        self.port: int | None = None
        self._http: tornado.httpserver.HTTPServer | None = None
        self._sinks: list = []

    def now(self) -> float:
        return self.pipeline.clock.now()

    def known_assets(self) -> set[str]:
        views = self.pipeline.views
        assets = set(views["oracle"].assets)
        if views.get("analytics") is not None:
            assets |= set(views["analytics"].assets)
        return assets

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def application(self) -> tornado.web.Application:
        kw = {"server": self}
        return tornado.web.Application(
            [
                (r"/api/?", IndexHandler, kw),
                (r"/api/oracle/?", OracleHandler, kw),
                (r"/api/oracle/([A-Za-z0-9_-]+)/?", OracleHandler, kw),
                (r"/api/premium/?", PremiumHandler, kw),
                (r"/api/alerts/?", AlertsHandler, kw),
                (r"/api/hedge/?", HedgeHandler, kw),
                (r"/metrics/?", MetricsHandler, kw),
                (r"/ws/?", StreamSocket, kw),
            ],
            default_handler_class=NotFound, default_handler_args=kw,
            log_function=_access_log, websocket_ping_interval=20.0,
            websocket_max_message_size=MAX_REQUEST_BYTES,
        )

    async def start(self) -> None:
        host, port = self.config.host, self.config.port
        try:
            sockets = tornado.netutil.bind_sockets(port, address=host)
        except OSError as exc:
            raise HedgeflowError(
                f"cannot serve the API on {host}:{port}: {exc.strerror or exc}. Choose another "
                "port with `hedgeflow run --api-port N` or HEDGEFLOW_API__PORT=N ([api].port; 0 "
                "picks a free one), or turn the API off with HEDGEFLOW_API__ENABLED=false") from None
        self._http = tornado.httpserver.HTTPServer(self.application())
        self._http.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        self._subscribe()
        log_event(log, logging.INFO, "api listening", url=self.url,
                  websocket="token set" if self.token else "refusing clients: no token")

    def _subscribe(self) -> None:
        graph, hub = self.pipeline.graph, self.hub
        self._sinks.append(graph.raw.sink(self.last_message.on_raw))
        self._sinks.append(graph.oracle_prices.sink(
            lambda prices: hub.publish("oracle", [price_json(p) for p in prices])
            if hub.wants("oracle") else None))
        self._sinks.append(graph.alerts.sink(
            lambda alerts: hub.publish("alerts", [alert_json(a) for a in alerts])
            if hub.wants("alerts") else None))
        if graph.premium_quotes is not None:
            self._sinks.append(graph.premium_quotes.sink(
                lambda quotes: hub.publish("premiums", [premium_record_json(q) for q in quotes])
                if hub.wants("premiums") else None))
        steps = getattr(self.pipeline, "desk_steps", None)
        if steps is not None:
            # A batch of steps is summarized by its last: the state the desk is in now.
            self._sinks.append(steps.sink(
                lambda batch: hub.publish("hedge", {**desk_step_json(batch[-1]),
                                                    "steps": len(batch)})
                if batch and hub.wants("hedge") else None))

    async def stop(self) -> None:
        for sink in self._sinks:
            sink.destroy()
        self._sinks.clear()
        for client in list(self.hub.clients):
            self.hub.remove(client)
            client.drop(CLOSE_GOING_AWAY, "hedgeflow is shutting down")
        if self._http is not None:
            self._http.stop()
            try:
                await asyncio.wait_for(self._http.close_all_connections(), 5.0)
            except asyncio.TimeoutError:
                log_event(log, logging.WARNING, "api connections still open at shutdown")
            self._http = None
