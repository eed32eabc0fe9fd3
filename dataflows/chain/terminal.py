"""The chain terminal: oracle prices leave the graph as locally signed Oracle transactions.

```
oracle_prices ──► ChainPublisher.on_prices ─┐ publishing rule ─► queue (bounded) ─► sign ─► send
clock ticks ────► ChainPublisher.on_tick ───┘ heartbeat, receipts, stuck tx, retries, event sync
                                                   │                                   │
                                chain_submissions (DuckDB) ◄── every step ─────────────┘
                                chain_events      (DuckDB) ◄── Oracle logs read back
```

**Backends.** :class:`ChainBackend` is what the publisher talks to: a ``Web3``, the Oracle
contract, the signing key and a :class:`~dataflows.chain.embedded.LocalSigner` (fees). It is built
the same way for every chain: :meth:`ChainBackend.embedded` starts an in-process EVM
(:class:`~dataflows.chain.embedded.EmbeddedChain`), funds the key and deploys the Oracle with
:func:`deploy_oracle` (bounds for every asset, limits, the key as owner and reporter);
:meth:`ChainBackend.from_url` connects to any JSON-RPC node (``Web3(HTTPProvider(url))``) and uses
the Oracle at ``chain.oracle_address`` (or deploys one with ``chain.deploy_oracle``). Past that
point the code path is identical: only ``send_raw_transaction``, ``get_transaction_receipt``,
``get_transaction``, ``get_transaction_count``, ``get_block``, ``get_logs`` and ``eth_call``
are used.

**Publishing rule.** A price is pushed when its status is ``ok`` and either it moved more than
``deviation_threshold`` (relative) from the last price sent for its asset, or ``heartbeat_s``
passed since that price's observation time (checked on every price and on every clock tick,
with the graph's clock, so replay follows capture time). Also required: an observation time (whole
seconds on chain) newer than the last one sent, the asset configured, no off-chain pause, the
asset's on-chain breaker not tripped, the Oracle not paused, and no revert for that asset within
``revert_backoff_s`` (a persistent revert must not become a stream of paid failures).

**Submission.** Transactions are EIP-1559, signed locally, with an explicit gas limit (``gas_limit``;
estimation is slow on py-evm and would double every send). The nonce is counted locally and re-read
from the chain on a nonce error. Every transaction is a row of ``chain_submissions`` written before
anything is sent (``queued`` at the decision, ``pending`` with its hash, nonce and signed bytes
before ``send_raw_transaction``) and updated after; see ``storage.chain`` for the statuses.

- transient errors (connection, timeout, an unknown node error): the *same signed bytes* are sent
  again after an exponential backoff (``backoff_initial_s`` doubling to ``backoff_max_s``,
  ``max_attempts`` in all), so a send that did reach the node cannot become two transactions;
- a nonce error: if the transaction is in fact known or mined it is followed; otherwise the nonce
  is re-read from the chain and the transaction re-signed;
- fees below the base fee: re-signed with fresh fees; no funds: ``failed``, with the address to fund;
- a revert (eth-tester's ``TransactionFailed`` on the embedded chain, web3's ``ContractLogicError``
  / a reverting ``Web3RPCError`` over HTTP, or a mined status-0 receipt whose reason is replayed
  with ``eth_call``): ``reverted`` with its reason, never retried;
- a receipt is followed until mined (``confirmations`` blocks deep); a transaction with no receipt
  after ``stuck_after_s`` gets a replacement: same nonce, fees raised by ``fee_bump`` (at least the
  current fees), a new row whose ``replaces`` names the old one; whichever is mined wins and the
  others become ``replaced``.

**Restart.** :meth:`ChainPublisher.start` re-checks every open row of this chain and contract: a
pending transaction that was mined is finalised from its receipt (never resent); one the node
still holds is followed; one the node never received is re-broadcast from its stored signed bytes
(same hash: at most once) while its price is still fresh, else ``failed``; ``queued`` rows (never
signed) are ``failed`` (a fresh price follows). Open rows of another chain or contract (a previous
process's embedded chain) are ``failed``. The deviation/heartbeat baseline is read from the
Oracle itself (``latestRoundData``), so a confirmed price is not sent again.

**Events.** Oracle logs are read back into ``chain_events`` (every event of the ABI, decoded) on
start, every ``event_sync_s`` and on close, from a cursor in ``chain_sync`` (state
synchronisation, BI-201/202); ``Paused``/``Unpaused``/``BreakerTripped``/``BreakerReset`` also update
what the publisher believes about the Oracle.

**Pause.** :meth:`ChainPublisher.pause` stops publishing off-chain (queued prices are
``cancelled``; transactions already sent are still followed); :meth:`ChainPublisher.pause_on_chain`
sends ``Oracle.pause()`` (the key must be an owner; the embedded deployment makes it one).
``pause_file``: while that file exists the publisher is paused (and paused on chain too when the
file's first line is ``on-chain``, see dataflows/operator_files.py); deleting it resumes. That is the hook for ``hedgeflow pause`` /
``resume`` from another process.

**Blocking (the choice).** Everything runs synchronously in the caller (the graph's sinks on the
event loop), but nothing waits: no sleeps, no ``wait_for_transaction_receipt``. A call sends at
most ``max_sends_per_call`` transactions (one round trip each) and checks receipts at most every
``receipt_poll_s``; backoff and stuck timeouts are deadlines checked on later ticks. On the
embedded chain a send mines immediately (~10-20 ms); over HTTP it is one round trip per send and
per receipt check. The queue is bounded (``queue_size``) and coalesced: a newer price of an asset
supersedes its unsigned older one, so a stalled node cannot grow memory. Transactions are sent in
order, one head-of-line item at a time (a transaction waiting for its retry holds back the ones
after it, so nonces never have gaps). For a slow remote node, call ``on_prices``/``on_tick`` from
one worker thread (``loop.run_in_executor`` with a single-thread executor): the public methods hold
a lock, and the store uses its own DuckDB cursor.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from web3 import Web3
from web3.exceptions import TransactionNotFound
from web3.logs import DISCARD

from dataflows.logs import log_event
from dataflows.operator_files import pauses_contract
from models.errors import HedgeflowError
from models.records import OraclePrice
from storage.chain import ChainStore

from . import MICRO, asset_id, asset_symbol, to_micro
from .compile import compile_contract
from .embedded import EmbeddedChain, LocalSigner, is_revert, revert_reason
from .keys import SigningKey, resolve_key

log = logging.getLogger(__name__)

BACKENDS = ("embedded", "rpc")


class ChainTerminalError(HedgeflowError):
    """The chain terminal cannot start: the message says what to configure."""


# ============================================================================ settings

@dataclass(frozen=True)
class ChainSettings:
    """The chain terminal's settings (the ``[chain]`` config section has the same field names).

    Units: ``_s`` seconds; ``_usd`` USD (converted to micro-units on chain); ``_bps`` basis points.
    """

    enabled: bool = True
    backend: str = "embedded"            # "embedded" | "rpc"
    rpc_url: str = ""                    # rpc: http(s)://host:port
    oracle_address: str = ""             # rpc: the deployed Oracle
    deploy_oracle: bool = False          # rpc: deploy an Oracle when oracle_address is empty
    keystore_path: str = ""              # else HEDGEFLOW_CHAIN_KEY (hex), else ephemeral (embedded)
    assets: tuple[str, ...] = ("BTC", "ETH")
    deviation_threshold: float = 0.005   # relative move that triggers a push
    heartbeat_s: float = 3600.0          # push at least this often (observation time)
    gas_limit: int = 300_000             # explicit; a first Oracle round uses ~197k
    confirmations: int = 1               # blocks deep before a receipt counts
    stuck_after_s: float = 120.0         # no receipt this long: replace (same nonce, higher fees)
    fee_bump: float = 1.25               # replacement fee factor (nodes need >= 1.1)
    max_attempts: int = 5                # sends per transaction, and replacements per nonce
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    revert_backoff_s: float = 60.0       # after a revert, an asset waits this long
    receipt_poll_s: float = 1.0
    queue_size: int = 64
    max_sends_per_call: int = 4
    event_sync_s: float = 5.0
    event_sync_blocks: int = 2000        # get_logs range per request
    events_from_block: int = 0           # where a new event cursor starts (rpc: the deploy block)
    rpc_timeout_s: float = 10.0
    pause_file: str = ""
    # the Oracle deployed on the embedded chain (or by deploy_oracle)
    min_price_usd: float = 1.0
    max_price_usd: float = 10_000_000.0
    max_age_s: int = 600
    max_future_s: int = 60
    max_deviation_bps: int = 2000
    min_sources: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "assets", tuple(a.strip().upper() for a in self.assets))
        problems = []
        if self.backend not in BACKENDS:
            problems.append(f"chain.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "rpc" and not self.rpc_url.startswith(("http://", "https://")):
            problems.append(f"chain.rpc_url must be an http(s):// URL for backend rpc, got {self.rpc_url!r}")
        if not self.assets:
            problems.append("chain.assets must name at least one asset, e.g. [\"BTC\"]")
        if not self.deviation_threshold > 0:
            problems.append(f"chain.deviation_threshold must be > 0, got {self.deviation_threshold!r}")
        for name in ("heartbeat_s", "stuck_after_s", "backoff_initial_s", "backoff_max_s",
                     "receipt_poll_s", "event_sync_s", "rpc_timeout_s", "min_price_usd"):
            if not getattr(self, name) > 0:
                problems.append(f"chain.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("gas_limit", "confirmations", "max_attempts", "queue_size", "max_sends_per_call",
                     "event_sync_blocks", "max_age_s", "max_deviation_bps"):
            if getattr(self, name) < 1:
                problems.append(f"chain.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.fee_bump < 1.1:
            problems.append(f"chain.fee_bump must be >= 1.1 (nodes refuse smaller bumps), got {self.fee_bump!r}")
        if not self.max_price_usd > self.min_price_usd:
            problems.append("chain.max_price_usd must be > chain.min_price_usd")
        if problems:
            raise ChainTerminalError("; ".join(problems))

    @classmethod
    def from_section(cls, section: Any, **overrides: Any) -> ChainSettings:
        """From any object (a config section) with attributes named like the fields."""
        values = {}
        for f in dataclasses.fields(cls):
            if hasattr(section, f.name):
                v = getattr(section, f.name)
                values[f.name] = tuple(v) if isinstance(v, list) else v
        values.update(overrides)
        return cls(**values)


# ============================================================================ backends

def deploy_oracle(w3: Web3, key: SigningKey, settings: ChainSettings) -> tuple[str, int]:
    """Deploy an Oracle signed by ``key`` (owner), set bounds for every asset and make ``key`` a
    reporter. Returns (address, deploy block)."""
    compiled = compile_contract("Oracle")
    signer = LocalSigner(w3, key.account)
    factory = w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
    receipt = signer.send(factory.constructor(
        settings.max_age_s, settings.max_future_s, settings.max_deviation_bps, settings.min_sources))
    oracle = w3.eth.contract(address=receipt["contractAddress"], abi=compiled.abi)
    lo, hi = to_micro(settings.min_price_usd), to_micro(settings.max_price_usd)
    for asset in settings.assets:
        signer.send(oracle.functions.set_bounds(asset_id(asset), lo, hi), gas=100_000)
    signer.send(oracle.functions.add_reporter(key.address), gas=100_000)
    return oracle.address, int(receipt["blockNumber"])


class ChainBackend:
    """A chain as the publisher sees it: ``w3``, the ``oracle`` contract, the ``key``, a
    ``LocalSigner`` for fees. The same class whatever the chain (``kind`` is for reports)."""

    def __init__(self, w3: Web3, oracle_address: str, key: SigningKey, *, kind: str = "rpc",
                 chain: EmbeddedChain | None = None, deploy_block: int | None = None) -> None:
        self.w3 = w3
        self.kind = kind
        self.key = key
        self.chain = chain
        self.deploy_block = deploy_block
        try:
            address = Web3.to_checksum_address(oracle_address)
        except (ValueError, TypeError):
            raise ChainTerminalError(
                f"chain.oracle_address {oracle_address!r} is not an address (0x + 40 hex digits)"
            ) from None
        if not w3.eth.get_code(address):
            raise ChainTerminalError(
                f"no contract at chain.oracle_address {address} on chain {w3.eth.chain_id}; deploy the "
                "Oracle there (or set chain.deploy_oracle = true) and set its address"
            )
        self.oracle = w3.eth.contract(address=address, abi=compile_contract("Oracle").abi)
        self.chain_id = int(w3.eth.chain_id)
        self.signer = LocalSigner(w3, key.account)

    @property
    def address(self) -> str:
        return self.key.address

    @property
    def contract(self) -> str:
        return self.oracle.address

    @classmethod
    def embedded(cls, settings: ChainSettings | None = None, key: SigningKey | None = None,
                 chain: EmbeddedChain | None = None) -> ChainBackend:
        """An in-process EVM with a freshly deployed Oracle; ``key`` (ephemeral when None) is
        funded and becomes the Oracle's owner and reporter."""
        settings = settings or ChainSettings()
        chain = chain or EmbeddedChain()
        key = key or resolve_key("embedded", "", {})
        chain.fund(key.address)
        address, block = deploy_oracle(chain.w3, key, settings)
        return cls(chain.w3, address, key, kind="embedded", chain=chain, deploy_block=block)

    @classmethod
    def from_url(cls, url: str, oracle_address: str, key: SigningKey, *,
                 settings: ChainSettings | None = None, timeout_s: float = 10.0) -> ChainBackend:
        """A JSON-RPC node by URL; the Oracle at ``oracle_address`` (deployed first when it is
        empty and ``settings.deploy_oracle``)."""
        from web3 import HTTPProvider

        w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": timeout_s}))
        try:
            _ = w3.eth.chain_id  # the first request: is the node there?
        except Exception as exc:  # noqa: BLE001 - any failure to reach the node
            raise ChainTerminalError(
                f"cannot reach the chain node at chain.rpc_url {url}: {type(exc).__name__}; start the "
                "node or fix the URL (or use chain.backend = \"embedded\")"
            ) from None
        block = None
        if not oracle_address:
            if not (settings and settings.deploy_oracle):
                raise ChainTerminalError(
                    "chain.oracle_address is empty for backend rpc; set it to the deployed Oracle, "
                    "or set chain.deploy_oracle = true to deploy one with the configured key"
                )
            oracle_address, block = deploy_oracle(w3, key, settings)
            log_event(log, logging.WARNING, "oracle deployed", address=oracle_address, url=url,
                      hint="set chain.oracle_address to reuse it")
        return cls(w3, oracle_address, key, kind="rpc", deploy_block=block)

    @classmethod
    def from_settings(cls, settings: ChainSettings, env: Mapping[str, str] | None = None) -> ChainBackend:
        key = resolve_key(settings.backend, settings.keystore_path, env)
        if settings.backend == "embedded":
            return cls.embedded(settings, key)
        return cls.from_url(settings.rpc_url, settings.oracle_address, key, settings=settings,
                            timeout_s=settings.rpc_timeout_s)

    def __repr__(self) -> str:
        return (f"ChainBackend(kind={self.kind!r}, chain_id={self.chain_id}, oracle={self.contract}, "
                f"sender={self.address})")


# ============================================================================ errors

def classify_send_error(exc: BaseException) -> str:
    """What a failed ``send_raw_transaction`` means: ``revert``, ``known`` (the node has it),
    ``nonce``, ``fees`` (below base fee / replacement underpriced), ``funds``, ``gas``
    (limit refused: configuration) or ``transient`` (retry the same bytes later)."""
    if is_revert(exc):
        return "revert"
    text = f"{type(exc).__name__} {exc}".lower()
    if "already known" in text or "known transaction" in text or "alreadyknown" in text:
        return "known"
    if "nonce" in text:
        return "nonce"
    if "underpriced" in text or "base fee" in text or "fee cap" in text or "max fee per gas" in text \
            or "maxfeepergas" in text or "gas price below" in text:
        return "fees"
    if "insufficient funds" in text:
        return "funds"
    if "intrinsic gas" in text or "exceeds block gas limit" in text or "gas limit" in text:
        return "gas"
    return "transient"


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def confidence_score_micro(price_usd: float, confidence_usd: float) -> int:
    """The Oracle's confidence (a score, 10**6 = 1.0) from the price's USD half-width:
    ``1 - confidence_usd / price_usd`` clamped to [0, 1] (NaN: 0)."""
    if not (math.isfinite(price_usd) and price_usd > 0 and math.isfinite(confidence_usd)):
        return 0
    return to_micro(min(1.0, max(0.0, 1.0 - abs(confidence_usd) / price_usd)))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


# ============================================================================ publisher

@dataclass
class _Tx:
    id: str
    kind: str                      # submit | pause | unpause
    asset: str | None = None
    price_usd: float | None = None
    price_micro: int | None = None
    confidence_micro: int | None = None
    n_sources: int | None = None
    ts: int | None = None
    nonce: int | None = None
    tx_hash: str | None = None
    raw: bytes | None = None
    max_fee: int | None = None
    tip: int | None = None
    attempts: int = 0
    sent_at: float | None = None   # timer
    not_before: float = 0.0        # timer
    mined_block: int | None = None
    warned: bool = False
    note: str = ""                 # kept as the reason of a confirmed row (e.g. re-broadcast)
    replaces: str | None = None    # id of the row this transaction replaces
    replace_tries: int = 0         # replacements attempted for this nonce (on the group's first)
    persisted: bool = False        # its row exists
    deferred: dict[str, Any] = field(default_factory=dict)  # column updates for the next write


@dataclass
class _Baseline:
    price_usd: float
    ts: int


@dataclass
class PublisherStats:
    counts: Counter = field(default_factory=Counter)

    def __getitem__(self, key: str) -> int:
        return self.counts[key]


class ChainPublisher:
    """Publishes oracle prices to the Oracle contract of ``backend``; see the module docstring.

    ``timer`` (monotonic seconds) drives stuck timeouts, backoff, cooldowns and polling; ``wall``
    (epoch seconds) stamps the rows. Both are injectable for tests.
    """

    def __init__(self, backend: ChainBackend, store: ChainStore, settings: ChainSettings | None = None,
                 *, timer: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.store = store
        self.settings = settings or ChainSettings()
        self.timer = timer
        self.wall = wall
        self.w3 = backend.w3
        self.oracle = backend.oracle
        self.address = backend.address
        self.chain_id = backend.chain_id
        self.contract = backend.contract
        self.assets = frozenset(self.settings.assets)
        self.paused = False
        self.chain_paused = False
        self.tripped: set[str] = set()
        self.stats = PublisherStats()
        self._lock = threading.RLock()
        self._queue: deque[_Tx] = deque()
        self._inflight: dict[int, list[_Tx]] = {}
        self._nonce = 0
        self._latest: dict[str, OraclePrice] = {}
        self._sent: dict[str, _Baseline] = {}
        self._confirmed: dict[str, _Baseline] = {}
        self._sent_ts: dict[str, int] = {}
        self._cooldown_until: dict[str, float] = {}
        self._last_poll = -math.inf
        self._last_sync = -math.inf
        self._file_paused = False
        self._file_paused_chain = False
        self._state_block = -1  # events up to this block are already in the state read at start
        self._event_topics = self._topic_map()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> dict[str, int]:
        """Reconcile the rows a previous run left open, read the Oracle's state, sync events.
        Returns what the reconciliation did (counts)."""
        with self._lock:
            done = Counter()
            done["abandoned"] = self.store.abandon_other_chains(
                self.chain_id, self.contract, self.wall(),
                f"abandoned: chain {self.chain_id} / Oracle {self.contract} is the one in use now "
                "(an embedded chain does not outlive its process)")
            if not self.oracle.functions.is_reporter(self.address).call():
                raise ChainTerminalError(
                    f"the signing key's address {self.address} is not a reporter of the Oracle at "
                    f"{self.contract}; an owner must call add_reporter({self.address})")
            self._reconcile(done)
            self._resync_nonce()
            self._read_oracle_state()
            self.sync_events()
            if any(done.values()):
                log_event(log, logging.INFO, "chain submissions reconciled", **done)
            log_event(log, logging.INFO, "chain publisher started", backend=self.backend.kind,
                      chain_id=self.chain_id, oracle=self.contract, reporter=self.address,
                      nonce=self._nonce)
            return dict(done)

    def close(self, close_store: bool = False) -> None:
        """A last receipt check and event sync; open rows stay open for the next start."""
        with self._lock:
            try:
                self._follow(force=True)
                self.sync_events()
            except Exception as exc:  # noqa: BLE001 - closing must not raise over a node hiccup
                log_event(log, logging.WARNING, "chain publisher close incomplete", error=_short(exc))
            for tx in list(self._queue):
                if tx.raw is None:
                    self._set(tx, status="cancelled", reason="publisher closed before it was signed")
            self._queue.clear()
            if close_store:
                self.store.close()

    # ------------------------------------------------------------------ graph inputs
    def on_prices(self, prices: Iterable[OraclePrice]) -> None:
        """Sink of the graph's ``oracle_prices`` stream (a list of prices per emit).

        Never raises into the graph: an unexpected error is logged and counted (``errors``), and
        nothing is sent that was not recorded first."""
        with self._lock:
            try:
                for p in prices:
                    if p.asset not in self.assets:
                        self.stats.counts["skipped_asset"] += 1
                        continue
                    self._latest[p.asset] = p
                    if self._should_publish(p, None):
                        self._enqueue_price(p)
                self._drain()
            except Exception as exc:  # noqa: BLE001 - the graph must keep running
                self._error("on_prices", exc)

    def on_tick(self, now: float) -> None:
        """Sink of the clock ticks: pause file, heartbeat, receipts, stuck txs, retries, events.
        Never raises into the graph (see :meth:`on_prices`)."""
        with self._lock:
            try:
                self._watch_pause_file()
                limit = self.settings.max_age_s / 2
                for p in list(self._latest.values()):
                    if now - p.ts <= limit and self._should_publish(p, now):
                        self._enqueue_price(p)
                self._follow()
                self._drain()
            except Exception as exc:  # noqa: BLE001 - the graph must keep running
                self._error("on_tick", exc)
            if self.timer() - self._last_sync >= self.settings.event_sync_s:
                try:
                    self.sync_events()
                except Exception as exc:  # noqa: BLE001 - the node may be briefly away
                    log_event(log, logging.WARNING, "chain event sync failed", error=_short(exc))

    def _error(self, where: str, exc: BaseException) -> None:
        self.stats.counts["errors"] += 1
        log_event(log, logging.ERROR, "chain publisher error", where=where, error=_short(exc))

    def confirmed_prices(self) -> dict[str, tuple[float, float]]:
        """The last price of each asset confirmed on chain: ``(price_usd, ts)`` (ts epoch s)."""
        with self._lock:
            return {a: (b.price_usd, float(b.ts)) for a, b in self._confirmed.items()}

    # ------------------------------------------------------------------ pause
    def pause(self, reason: str = "operator") -> None:
        """Emergency stop, off-chain: no new submissions; queued ones are cancelled."""
        with self._lock:
            if not self.paused:
                self.paused = True
                log_event(log, logging.WARNING, "chain publishing paused", reason=reason)
            self._cancel_queued(f"publisher paused ({reason})")

    def resume(self) -> None:
        with self._lock:
            if self.paused:
                self.paused = False
                log_event(log, logging.WARNING, "chain publishing resumed")

    def pause_on_chain(self) -> str:
        """Send ``Oracle.pause()`` now (ahead of anything queued); returns the row id."""
        return self._admin("pause")

    def resume_on_chain(self) -> str:
        """Send ``Oracle.unpause()`` now; returns the row id."""
        return self._admin("unpause")

    def _admin(self, kind: str) -> str:
        with self._lock:
            tx = _Tx(id=uuid.uuid4().hex, kind=kind)
            self._queue.appendleft(tx)
            self._drain()
            return tx.id

    def _watch_pause_file(self) -> None:
        path = self.settings.pause_file
        if not path:
            return
        exists = os.path.exists(path)
        if exists and not self._file_paused:
            self._file_paused = True
            self.pause(f"pause file {path}")
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    on_chain = pauses_contract(fh.readline(4096))
            except OSError:
                on_chain = False
            if on_chain and not self.chain_paused:
                self._file_paused_chain = True
                self.pause_on_chain()
        elif not exists and self._file_paused:
            self._file_paused = False
            self.resume()
            if self._file_paused_chain and self.chain_paused:
                self.resume_on_chain()
            self._file_paused_chain = False

    # ------------------------------------------------------------------ the rule
    def _should_publish(self, p: OraclePrice, now: float | None) -> bool:
        c = self.stats.counts
        if p.status != "ok":
            c["skipped_status"] += 1
            return False
        if not (math.isfinite(p.price_usd) and p.price_usd > 0 and math.isfinite(p.ts)):
            c["skipped_invalid"] += 1
            return False
        if self.paused:
            c["skipped_paused"] += 1
            return False
        ts = int(p.ts)
        if ts <= self._sent_ts.get(p.asset, -1):
            return False  # not newer than what was sent (on-chain times are whole seconds)
        if self.chain_paused or p.asset in self.tripped:
            c["skipped_chain_state"] += 1
            return False
        if self.timer() < self._cooldown_until.get(p.asset, -math.inf):
            c["skipped_cooldown"] += 1
            return False
        base = self._sent.get(p.asset)
        if base is None:
            return True
        if abs(p.price_usd - base.price_usd) > self.settings.deviation_threshold * base.price_usd:
            c["trigger_deviation"] += 1
            return True
        if (p.ts if now is None else now) - base.ts >= self.settings.heartbeat_s:
            c["trigger_heartbeat"] += 1
            return True
        return False

    def _enqueue_price(self, p: OraclePrice) -> None:
        ts = int(p.ts)
        for old in [t for t in self._queue if t.kind == "submit" and t.asset == p.asset and t.raw is None]:
            self._queue.remove(old)
            self._set(old, status="superseded", reason=f"a newer {p.asset} price (ts {ts}) replaced it unsigned")
        while len(self._queue) >= self.settings.queue_size:
            victim = next((t for t in self._queue if t.raw is None and t.kind == "submit"), None)
            if victim is None:
                break
            self._queue.remove(victim)
            self.stats.counts["dropped_queue_full"] += 1
            self._set(victim, status="cancelled", reason="queue full")
        tx = _Tx(id=uuid.uuid4().hex, kind="submit", asset=p.asset, price_usd=float(p.price_usd),
                 price_micro=to_micro(p.price_usd), confidence_micro=confidence_score_micro(
                     p.price_usd, p.confidence_usd), n_sources=int(p.n_sources), ts=ts)
        self._queue.append(tx)  # its row is written before it is sent, or at the end of the call
        self._sent[p.asset] = _Baseline(tx.price_usd, ts)
        self._sent_ts[p.asset] = ts
        self.stats.counts["decided"] += 1

    def _restore_baseline(self, asset: str) -> None:
        """After a price did not make it on chain: compare with the newest one still under way,
        else with the one on chain."""
        open_txs = [t for t in self._queue if t.asset == asset] + [
            t for group in self._inflight.values() for t in group if t.asset == asset]
        if open_txs:
            newest = max(open_txs, key=lambda t: t.ts or 0)
            self._sent[asset] = _Baseline(newest.price_usd, newest.ts)
        elif asset in self._confirmed:
            self._sent[asset] = self._confirmed[asset]
        else:
            self._sent.pop(asset, None)

    def _cancel_queued(self, reason: str) -> None:
        for tx in [t for t in self._queue if t.kind == "submit" and t.raw is None]:
            self._queue.remove(tx)
            self._set(tx, status="cancelled", reason=reason)
            self._restore_baseline(tx.asset)

    # ------------------------------------------------------------------ rows
    def _row(self, tx: _Tx) -> dict[str, Any]:
        return {
            "asset": tx.asset, "price_micro": tx.price_micro, "confidence_micro": tx.confidence_micro,
            "n_sources": tx.n_sources, "ts": tx.ts, "tx_hash": tx.tx_hash, "nonce": tx.nonce,
            "max_fee_per_gas": tx.max_fee, "priority_fee_per_gas": tx.tip, "raw_tx": tx.raw,
            "attempts": tx.attempts,
        }

    # A row is written when it must be: a decision sent at once is inserted as ``pending`` (signed,
    # before the send) and updated once when its receipt is read (2 statements, each a DuckDB
    # commit of ~2 ms on a file); a decision left in the queue at the end of a call is inserted as
    # ``queued``; minor columns (sent_at, attempts) ride along with the next write.

    def _insert(self, tx: _Tx, status: str, reason: str = "", **extra: Any) -> None:
        now = self.wall()
        fields = {**self._row(tx), **tx.deferred, **extra}
        tx.deferred = {}
        self.store.insert_submission({
            "id": tx.id, "kind": tx.kind, "chain_id": self.chain_id, "contract": self.contract,
            "sender": self.address, "gas_limit": self.settings.gas_limit, "replaces": tx.replaces,
            "reason": reason, "created_at": now, "updated_at": now, **fields, "status": status,
        })
        tx.persisted = True

    def _set(self, tx: _Tx, **fields: Any) -> None:
        if not tx.persisted:
            status = fields.pop("status", "queued")
            self._insert(tx, status, **fields)
            return
        fields = {**tx.deferred, **fields}
        tx.deferred = {}
        self.store.update_submission(tx.id, updated_at=self.wall(), **fields)

    def _defer(self, tx: _Tx, **fields: Any) -> None:
        tx.deferred.update(fields)

    def _flush_rows(self) -> None:
        """Write what is still only in memory: queued decisions, deferred columns."""
        for tx in self._queue:
            if not tx.persisted or tx.deferred:
                self._set(tx)
        for group in self._inflight.values():
            for tx in group:
                if tx.deferred:
                    self._set(tx)

    # ------------------------------------------------------------------ signing and sending
    def _call(self, tx: _Tx) -> Any:
        f = self.oracle.functions
        if tx.kind == "submit":
            return f.submit(asset_id(tx.asset), tx.price_micro, tx.ts, tx.confidence_micro, tx.n_sources)
        if tx.kind == "pause":
            return f.pause()
        if tx.kind == "unpause":
            return f.unpause()
        raise ValueError(f"unknown transaction kind {tx.kind!r}")

    def _sign(self, tx: _Tx, nonce: int, fees: dict[str, int]) -> None:
        built = self._call(tx).build_transaction({
            "from": self.address, "nonce": nonce, "gas": self.settings.gas_limit, "value": 0,
            "chainId": self.chain_id, **fees,
        })
        signed = self.backend.key.sign_transaction(built)
        tx.nonce = nonce
        tx.max_fee = int(fees["maxFeePerGas"])
        tx.tip = int(fees["maxPriorityFeePerGas"])
        tx.raw = bytes(signed.raw_transaction)
        tx.tx_hash = "0x" + bytes(signed.hash).hex()

    def _drain(self) -> None:
        tries = 0  # send attempts this call (a re-signed transaction is tried again at once)
        while self._queue and tries < self.settings.max_sends_per_call:
            tx = self._queue[0]
            if self.paused and tx.kind == "submit" and tx.raw is None:
                self._cancel_queued("publisher paused")
                continue
            if tx.not_before > self.timer():
                break  # head of line waits for its retry: later nonces must not overtake it
            self._queue.popleft()
            tries += 1
            if self._send(tx) == "retry":
                self._queue.appendleft(tx)
        self._flush_rows()

    def _send(self, tx: _Tx) -> str:
        """One attempt; returns "sent", "done" (final without a send) or "retry"."""
        tx.attempts += 1
        if tx.raw is None:
            try:
                self._sign(tx, self._nonce, self.backend.signer.fees())
            except Exception as exc:  # noqa: BLE001 - fees/build failed: the node is unreachable
                self._defer(tx, attempts=tx.attempts)
                return self._retry_or_fail(tx, exc)
            try:
                self._set(tx, status="pending", **self._row(tx))  # persisted before it is sent
            except Exception:
                if tx.asset:  # not recorded, so not sent: as if it had never been decided
                    self._restore_baseline(tx.asset)
                raise
            self._nonce = tx.nonce + 1
        else:
            self._defer(tx, attempts=tx.attempts)
        try:
            self.w3.eth.send_raw_transaction(tx.raw)
        except Exception as exc:  # noqa: BLE001 - classified below
            return self._on_send_error(tx, exc)
        self._sent_ok(tx)
        return "sent"

    def _sent_ok(self, tx: _Tx) -> None:
        tx.sent_at = self.timer()
        self._defer(tx, sent_at=self.wall(), attempts=tx.attempts)
        self._inflight.setdefault(tx.nonce, []).append(tx)
        self.stats.counts["sent"] += 1
        try:
            mined = self._check_nonce(tx.nonce)
        except Exception as exc:  # noqa: BLE001 - sent; its receipt is read on a later tick
            log_event(log, logging.WARNING, "chain receipt check failed", tx=tx.tx_hash,
                      error=_short(exc))
            mined = False
        if not mined and tx.deferred:
            self._set(tx)  # in flight: its row says so now

    def _on_send_error(self, tx: _Tx, exc: BaseException) -> str:
        kind = classify_send_error(exc)
        if kind == "revert":
            reason = revert_reason(exc) or "execution reverted"
            self._resync_nonce()
            self._final_revert(tx, reason)
            return "done"
        if kind in ("known", "nonce"):
            if kind == "known" or self._receipt(tx.tx_hash) is not None or self._known(tx.tx_hash):
                self._sent_ok(tx)  # it reached the node before: follow it
                return "sent"
            self._resync_nonce()
            return self._resign(tx, exc, keep_nonce=False)
        if kind == "fees":
            return self._resign(tx, exc, keep_nonce=True)
        if kind in ("funds", "gas"):
            hint = (f"fund {self.address}" if kind == "funds"
                    else f"check chain.gas_limit ({self.settings.gas_limit})")
            self._final_unsent(tx, f"{_short(exc)}; {hint}")
            return "done"
        return self._retry_or_fail(tx, exc)

    def _resign(self, tx: _Tx, exc: BaseException, *, keep_nonce: bool) -> str:
        if tx.attempts >= self.settings.max_attempts:
            self._final_unsent(tx, f"gave up after {tx.attempts} attempts: {_short(exc)}")
            return "done"
        nonce = tx.nonce if keep_nonce else self._nonce
        try:
            self._sign(tx, nonce, self.backend.signer.fees())
        except Exception as exc2:  # noqa: BLE001
            return self._retry_or_fail(tx, exc2)
        self._nonce = max(self._nonce, tx.nonce + 1)
        self._set(tx, status="pending", reason=f"re-signed after: {_short(exc, 160)}", **self._row(tx))
        tx.not_before = self.timer()
        return "retry"

    def _retry_or_fail(self, tx: _Tx, exc: BaseException) -> str:
        if tx.attempts >= self.settings.max_attempts:
            if tx.tx_hash and (self._receipt(tx.tx_hash) is not None or self._known(tx.tx_hash)):
                self._sent_ok(tx)
                return "sent"
            self._final_unsent(tx, f"gave up after {tx.attempts} attempts: {_short(exc)}")
            return "done"
        delay = min(self.settings.backoff_max_s,
                    self.settings.backoff_initial_s * 2 ** max(tx.attempts - 1, 0))
        tx.not_before = self.timer() + delay
        self.stats.counts["retries"] += 1
        self._set(tx, reason=f"retry in {delay:g}s after: {_short(exc, 200)}")
        log_event(log, logging.WARNING, "chain send failed, will retry", id=tx.id, kind=tx.kind,
                  asset=tx.asset, attempt=tx.attempts, retry_in_s=delay, error=_short(exc, 200))
        return "retry"

    def _final_unsent(self, tx: _Tx, reason: str) -> None:
        self._set(tx, status="failed", reason=reason)
        self.stats.counts["failed"] += 1
        log_event(log, logging.ERROR, "chain submission failed", id=tx.id, kind=tx.kind,
                  asset=tx.asset, reason=reason)
        if tx.nonce is not None:
            self._resync_nonce()
        if tx.asset:
            self._restore_baseline(tx.asset)

    def _final_revert(self, tx: _Tx, reason: str, receipt: Any = None) -> None:
        fields: dict[str, Any] = {"status": "reverted", "reason": reason}
        if receipt is not None:
            fields.update(block_number=int(receipt["blockNumber"]), gas_used=int(receipt["gasUsed"]))
        self._set(tx, **fields)
        self.stats.counts["reverted"] += 1
        log_event(log, logging.WARNING, "chain transaction reverted", id=tx.id, kind=tx.kind,
                  asset=tx.asset, price_micro=tx.price_micro, tx=tx.tx_hash, nonce=tx.nonce,
                  reason=reason)
        self._learn_from_reason(reason)
        if tx.asset:
            self._cooldown_until[tx.asset] = self.timer() + self.settings.revert_backoff_s
            self._restore_baseline(tx.asset)

    def _learn_from_reason(self, reason: str) -> None:
        if reason == "oracle: paused":
            self.chain_paused = True

    # ------------------------------------------------------------------ nonces
    def _resync_nonce(self) -> int:
        chain_next = int(self.w3.eth.get_transaction_count(self.address, "pending"))
        inflight_next = max((n + 1 for n in self._inflight), default=0)
        self._nonce = max(chain_next, inflight_next)
        return self._nonce

    # ------------------------------------------------------------------ receipts
    def _receipt(self, tx_hash: str | None) -> Any:
        if not tx_hash:
            return None
        try:
            return self.w3.eth.get_transaction_receipt(tx_hash)
        except TransactionNotFound:
            return None

    def _known(self, tx_hash: str | None) -> bool:
        if not tx_hash:
            return False
        try:
            self.w3.eth.get_transaction(tx_hash)
            return True
        except TransactionNotFound:
            return False

    def _deep_enough(self, receipt: Any) -> bool:
        if self.settings.confirmations <= 1:
            return True
        depth = int(self.w3.eth.block_number) - int(receipt["blockNumber"]) + 1
        return depth >= self.settings.confirmations

    def _check_nonce(self, nonce: int) -> bool:
        """Finalise the group of transactions sharing ``nonce`` if one of them is mined."""
        group = self._inflight.get(nonce, [])
        for tx in group:
            receipt = self._receipt(tx.tx_hash)
            if receipt is None:
                continue
            if not self._deep_enough(receipt):
                if tx.mined_block is None:
                    tx.mined_block = int(receipt["blockNumber"])
                    self._set(tx, block_number=tx.mined_block)
                return False
            self._inflight.pop(nonce, None)
            for other in group:
                if other is not tx:
                    self._set(other, status="replaced", reason=f"nonce {nonce} mined by {tx.tx_hash}")
                    self.stats.counts["replaced"] += 1
            self._finalize(tx, receipt)
            return True
        return False

    def _finalize(self, tx: _Tx, receipt: Any) -> None:
        block, gas = int(receipt["blockNumber"]), int(receipt["gasUsed"])
        if int(receipt["status"]) != 1:
            self._final_revert(tx, self._replay_reason(tx, receipt) or "execution reverted", receipt)
            return
        status, reason = "confirmed", tx.note
        if tx.kind == "submit":
            updated = self.oracle.events.PriceUpdated().process_receipt(receipt, errors=DISCARD)
            tripped = self.oracle.events.BreakerTripped().process_receipt(receipt, errors=DISCARD)
            if updated:
                self._confirmed[tx.asset] = _Baseline(tx.price_usd, tx.ts)
            elif tripped:
                a = tripped[0]["args"]
                status = "tripped"
                reason = (f"oracle: breaker tripped ({a['deviation_bps']} bps from "
                          f"{a['last_price']} micro-USD); an owner must reset_breaker")
                self.tripped.add(tx.asset)
                self._restore_baseline(tx.asset)
        elif tx.kind == "pause":
            self.chain_paused = True
        elif tx.kind == "unpause":
            self.chain_paused = False
        self._set(tx, status=status, reason=reason, block_number=block, gas_used=gas)
        self.stats.counts[status] += 1
        log_event(log, logging.INFO if status == "confirmed" else logging.WARNING,
                  f"chain transaction {status}", id=tx.id, kind=tx.kind, asset=tx.asset,
                  price_micro=tx.price_micro, ts=tx.ts, tx=tx.tx_hash, nonce=tx.nonce, block=block,
                  **({"reason": reason} if reason else {}))

    def _replay_reason(self, tx: _Tx, receipt: Any) -> str | None:
        """A mined revert's reason: the transaction re-run as a call on its parent block."""
        try:
            sent = self.w3.eth.get_transaction(tx.tx_hash)
            call = {"from": sent["from"], "to": sent["to"], "data": sent["input"],
                    "value": sent["value"], "gas": sent["gas"]}
            self.w3.eth.call(call, max(int(receipt["blockNumber"]) - 1, 0))
        except Exception as exc:  # noqa: BLE001 - we want the revert, whatever its class
            return revert_reason(exc)
        return None

    def _follow(self, force: bool = False) -> None:
        """Receipts of the transactions in flight; replacements for stuck ones (rate limited)."""
        now = self.timer()
        if not force and now - self._last_poll < self.settings.receipt_poll_s:
            return
        self._last_poll = now
        for nonce in sorted(self._inflight):
            try:
                if self._check_nonce(nonce):
                    continue
                group = self._inflight.get(nonce)
                if group and now - group[-1].sent_at >= self.settings.stuck_after_s:
                    self._replace(group)
            except Exception as exc:  # noqa: BLE001 - try again on the next tick
                log_event(log, logging.WARNING, "chain receipt check failed", nonce=nonce,
                          error=_short(exc))

    def _replace(self, group: list[_Tx]) -> None:
        """Send a replacement for the newest transaction of a stuck nonce. ``group`` holds only
        transactions that reached the node; a refused replacement is recorded ``failed`` and the
        stuck period starts again."""
        current, first = group[-1], group[0]
        if first.replace_tries >= self.settings.max_attempts:
            if not current.warned:
                log_event(log, logging.ERROR, "chain transaction stuck, replacements exhausted",
                          tx=current.tx_hash, nonce=current.nonce, replacements=first.replace_tries)
                current.warned = True
            return
        first.replace_tries += 1
        fresh = self.backend.signer.fees()
        bump = self.settings.fee_bump
        tip = max(math.ceil(current.tip * bump), fresh["maxPriorityFeePerGas"])
        max_fee = max(math.ceil(current.max_fee * bump), fresh["maxFeePerGas"], tip)
        new = dataclasses.replace(current, id=uuid.uuid4().hex, tx_hash=None, raw=None,
                                  sent_at=None, not_before=0.0, mined_block=None, note="",
                                  replaces=current.id, persisted=False, deferred={}, warned=False,
                                  replace_tries=0)
        self._sign(new, current.nonce, {"maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip})
        new.attempts = current.attempts + 1
        waited = self.timer() - current.sent_at
        self._insert(new, "pending", reason=f"replaces {current.tx_hash}: no receipt after {waited:.0f}s")
        self._set(current, reason=f"stuck {waited:.0f}s; replacement {new.tx_hash} sent")
        log_event(log, logging.WARNING, "chain transaction stuck, replacing", tx=current.tx_hash,
                  replacement=new.tx_hash, nonce=current.nonce, waited_s=round(waited, 1),
                  max_fee_per_gas=max_fee, priority_fee_per_gas=tip)
        try:
            self.w3.eth.send_raw_transaction(new.raw)
        except Exception as exc:  # noqa: BLE001
            kind = classify_send_error(exc)
            if kind == "known":
                pass
            elif kind == "nonce" and self._check_nonce(current.nonce):
                self._set(new, status="replaced", reason=f"nonce {current.nonce} mined before the replacement")
                return
            else:
                self._set(new, status="failed", reason=f"replacement not accepted: {_short(exc)}")
                current.sent_at = self.timer()  # wait another stuck period before trying again
                return
        new.sent_at = self.timer()
        self._set(new, sent_at=self.wall())
        group.append(new)
        self.stats.counts["replacements"] += 1
        self._check_nonce(current.nonce)

    # ------------------------------------------------------------------ restart
    def _reconcile(self, done: Counter) -> None:
        rows = self.store.open_submissions(self.chain_id, self.contract)
        groups: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            if row["status"] == "queued" or row["raw_tx"] is None:
                self.store.update_submission(
                    row["id"], status="failed", updated_at=self.wall(),
                    reason="never signed before the restart (a fresh price follows)")
                done["queued_failed"] += 1
                continue
            groups.setdefault(int(row["nonce"]), []).append(row)
        mined_next = int(self.w3.eth.get_transaction_count(self.address, "latest"))
        chain_now = int(self.w3.eth.get_block("latest")["timestamp"])
        gap = False
        for nonce in sorted(groups):
            txs = [self._tx_from_row(r) for r in groups[nonce]]
            for tx in txs:
                tx.sent_at = self.timer()  # the stuck clock restarts with the process
            self._inflight[nonce] = txs
            if self._check_nonce(nonce):
                done["mined"] += 1
                continue
            if any(self._known(t.tx_hash) for t in txs):
                done["following"] += 1
                continue
            del self._inflight[nonce]
            if nonce < mined_next:
                for t in txs:
                    self._set(t, status="replaced", reason=f"nonce {nonce} was used by another transaction")
                done["nonce_used"] += 1
                continue
            current = txs[-1]
            fresh = current.kind != "submit" or current.ts + self.settings.max_age_s > chain_now + 5
            if gap or not fresh:
                gap = True
                for t in txs:
                    self._set(t, status="failed",
                              reason="never reached the node before the restart and is now stale"
                              if not fresh else "not broadcast: an earlier nonce was dropped")
                done["dropped"] += 1
                continue
            for t in txs[:-1]:
                self._set(t, status="replaced", reason="superseded by its replacement at restart")
            current.attempts += 1
            current.note = "re-broadcast after restart"
            self._set(current, attempts=current.attempts, reason=current.note)
            try:
                self.w3.eth.send_raw_transaction(current.raw)
            except Exception as exc:  # noqa: BLE001
                if classify_send_error(exc) == "revert":
                    self._final_revert(current, revert_reason(exc) or "execution reverted")
                    done["rebroadcast_reverted"] += 1
                    continue
                if classify_send_error(exc) != "known":
                    log_event(log, logging.WARNING, "re-broadcast failed; following the transaction",
                              tx=current.tx_hash, error=_short(exc))
            self._inflight[nonce] = [current]
            current.sent_at = self.timer()
            done["rebroadcast"] += 1
            self._check_nonce(nonce)

    def _tx_from_row(self, row: Mapping[str, Any]) -> _Tx:
        ts = row["ts"]
        return _Tx(
            id=row["id"], kind=row["kind"], asset=row["asset"],
            price_usd=None if row["price_micro"] is None else row["price_micro"] / MICRO,
            price_micro=row["price_micro"], confidence_micro=row["confidence_micro"],
            n_sources=row["n_sources"], ts=None if ts is None else int(ts.timestamp()),
            nonce=row["nonce"], tx_hash=row["tx_hash"], raw=row["raw_tx"],
            max_fee=row["max_fee_per_gas"], tip=row["priority_fee_per_gas"], attempts=row["attempts"],
            replaces=row["replaces"], persisted=True,
        )

    def _read_oracle_state(self) -> None:
        f = self.oracle.functions
        self._state_block = int(self.w3.eth.block_number)
        self.chain_paused = bool(f.paused().call())
        self.tripped = {a for a in self.assets if f.tripped(asset_id(a)).call()}
        for a in self.assets:
            rid = int(f.latest_round_id(asset_id(a)).call())
            if rid == 0:
                continue
            _, answer, _, observed_at, _ = f.latestRoundData(asset_id(a)).call()
            base = _Baseline(answer / MICRO, int(observed_at))
            self._confirmed[a] = base
            if self._sent_ts.get(a, -1) < base.ts:
                self._sent[a] = base
                self._sent_ts[a] = base.ts

    # ------------------------------------------------------------------ events
    def _topic_map(self) -> dict[bytes, str]:
        from eth_utils import event_abi_to_log_topic

        return {bytes(event_abi_to_log_topic(e)): e["name"] for e in self.oracle.abi
                if e.get("type") == "event"}

    def sync_events(self, max_requests: int = 5) -> int:
        """Read new Oracle logs into ``chain_events``; returns how many rows were added."""
        with self._lock:
            self._last_sync = self.timer()
            cursor = self.store.sync_cursor(self.chain_id, self.contract)
            if cursor is None:
                first = self.backend.deploy_block if self.backend.deploy_block is not None \
                    else self.settings.events_from_block
            else:
                first = cursor + 1
            latest = int(self.w3.eth.block_number)
            added = 0
            block_ts: dict[int, int] = {}
            for _ in range(max_requests):
                if first > latest:
                    break
                last = min(latest, first + self.settings.event_sync_blocks - 1)
                logs = self.w3.eth.get_logs({"address": self.contract, "fromBlock": first, "toBlock": last})
                rows = []
                for lg in logs:
                    row = self._decode_log(lg, block_ts)
                    if row is not None:
                        rows.append(row)
                        self._apply_event(row)
                added += self.store.insert_events(rows, self.wall())
                self.store.set_sync_cursor(self.chain_id, self.contract, last, self.wall())
                first = last + 1
            return added

    def _decode_log(self, lg: Any, block_ts: dict[int, int]) -> dict[str, Any] | None:
        topics = lg.get("topics") or []
        name = self._event_topics.get(bytes(topics[0])) if topics else None
        if name is None:
            return None
        ev = getattr(self.oracle.events, name)().process_log(lg)
        args = {k: _jsonable(v) for k, v in dict(ev["args"]).items()}
        asset = None
        if isinstance(ev["args"].get("asset"), (bytes, bytearray)):
            asset = asset_symbol(ev["args"]["asset"])
            args["asset"] = asset
        block = int(lg["blockNumber"])
        if block not in block_ts:
            block_ts[block] = int(self.w3.eth.get_block(block)["timestamp"])
        return {
            "chain_id": self.chain_id, "contract": self.contract, "block_number": block,
            "block_ts": block_ts[block], "tx_hash": "0x" + bytes(lg["transactionHash"]).hex(),
            "log_index": int(lg["logIndex"]), "event": name, "asset": asset, "args": args,
        }

    def _apply_event(self, row: Mapping[str, Any]) -> None:
        if row["block_number"] <= self._state_block:
            return  # already part of the state read from the contract
        name = row["event"]
        if name == "Paused":
            self.chain_paused = True
        elif name == "Unpaused":
            self.chain_paused = False
        elif name == "BreakerTripped" and row["asset"] in self.assets:
            self.tripped.add(row["asset"])
        elif name == "BreakerReset" and row["asset"] in self.assets:
            self.tripped.discard(row["asset"])

    # ------------------------------------------------------------------ reports
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "backend": self.backend.kind, "chain_id": self.chain_id, "oracle": self.contract,
                "reporter": self.address, "paused": self.paused, "chain_paused": self.chain_paused,
                "tripped": sorted(self.tripped), "queued": len(self._queue),
                "in_flight": sum(len(g) for g in self._inflight.values()), "next_nonce": self._nonce,
                "counts": dict(self.stats.counts),
                "rows": self.store.status_counts(self.chain_id, self.contract),
            }


def build_publisher(section: Any, con: Any, *, env: Mapping[str, str] | None = None,
                    start: bool = True, **settings_overrides: Any) -> ChainPublisher:
    """The terminal from a ``[chain]`` config section and the graph's DuckDB connection (a cursor
    of it is used): backend and key resolved from the settings and the environment, started."""
    settings = ChainSettings.from_section(section, **settings_overrides)
    backend = ChainBackend.from_settings(settings, env)
    store = ChainStore(con.cursor())
    publisher = ChainPublisher(backend, store, settings)
    if start:
        publisher.start()
    return publisher


__all__ = [
    "BACKENDS",
    "ChainBackend",
    "ChainPublisher",
    "ChainSettings",
    "ChainTerminalError",
    "build_publisher",
    "classify_send_error",
    "confidence_score_micro",
    "deploy_oracle",
]
