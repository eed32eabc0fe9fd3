"""Operator actions of the Safety and admin page: login, the actions, and their audit trail.

Every action needs an ``AdminSession`` that ``login`` issued (user names and PBKDF2 hashes from
``[admin] users_file``, see dataflows.admin_users; with no users configured every action is
refused). Every attempt, done or refused, becomes one row of the ``audit`` table
(storage.audit) before the call returns.

The actions use the channels ``hedgeflow`` itself uses, so the page and the command line never
disagree about who paused what:

- pause / resume trading, flatten: the hedge desk's ``pause_file`` and ``flatten_file`` (what
  ``hedgeflow pause --trading``, ``resume --trading`` and ``flatten`` write); the running desk
  (dataflows.hedging.HedgeNode) reads them at its next clock tick (0.25 s). A pause that no file
  holds (the dead man's switch fired) is lifted on the gate directly.
- pause / resume publishing: the chain publisher's ``pause_file`` (``hedgeflow pause`` /
  ``resume``), read at its next tick; ``on_chain`` also pauses the Oracle contract.
- reset a breaker: ``SafetyGate.reset_breaker`` on the running desk's gate.
- parameter changes: one user proposes (``PARAMETERS`` only), another approves. A setting the
  gate reads at every check is applied to the running desk at approval; any other is recorded
  as approved but applies only at the next start, once it is in the config file.

Everything here runs on the pipeline's loop (the Panel server's loop under ``hedgeflow run``),
the thread the desk steps on, so the gate is never changed under a step. Only the password
check runs off the loop (``login_async``): PBKDF2 takes about half a second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import math
import secrets
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dataflows.admin_users import (
    DEFAULT_ITERATIONS,
    NAME_PATTERN,
    UsersFileError,
    hash_password,
    read_users,
    verify_password,
)
from dataflows import operator_files
from dataflows.config import ConfigError
from dataflows.logs import log_event
from storage.audit import AuditRow, insert_audit, recent_audit

__all__ = ["PARAMETERS", "Parameter", "AdminSession", "ActionResult", "Proposal", "AdminConsole",
           "admin_console", "NO_USERS_MESSAGE"]

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 500  # of a reason: it is stored in the audit table and shown on the page

NO_USERS_MESSAGE = (
    "No admin users are configured, so every action is disabled. Create a users file with "
    "`python -m dataflows.admin_users add NAME --file data/admin_users.json` (it asks for the "
    "password) and give its path as `[admin] users_file` in the config file or as "
    "HEDGEFLOW_ADMIN__USERS_FILE, then restart `hedgeflow run`."
)


@functools.lru_cache(maxsize=4)
def _dummy_hash(iterations: int) -> str:
    """What an unknown name is checked against, so a wrong name costs as long as a wrong
    password (at the iterations of the file's users)."""
    return hash_password(secrets.token_urlsafe(16), iterations=iterations)


@dataclass(frozen=True)
class Parameter:
    """A setting that may be changed through a proposal and an approval. ``section`` is "hedge"
    (the ``[hedge]`` config key ``key``) or "safety" (the desk's ``SafetyConfig`` field, which has
    no config key: it is built in). ``live``: the gate reads it at every check, so an approved
    value is applied to the running desk; otherwise it applies at the next start."""

    section: str
    key: str
    live: bool
    description: str
    max_value: float = math.inf

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"


PARAMETERS: dict[str, Parameter] = {p.name: p for p in (
    Parameter("hedge", "heartbeat_timeout_s", True,
              "dead man's switch timeout (s without an ok oracle price)"),
    Parameter("safety", "max_daily_loss_fraction", True, "daily loss limit (fraction of equity)",
              1.0),
    Parameter("safety", "max_position_notional_usd", True, "position cap per asset and kind (USD)"),
    Parameter("safety", "max_funding_apr_paid", True, "funding breaker (APR paid, fraction)"),
    Parameter("safety", "max_daily_volume_usd", True, "traded notional per UTC day (USD)"),
    Parameter("safety", "max_slippage_fraction", True, "slippage limit (fraction)", 1.0),
    Parameter("hedge", "leverage", False, "futures leverage (x)"),
    Parameter("hedge", "reserve_usd", False, "reserve (USD)"),
)}


@dataclass(frozen=True, eq=False)
class AdminSession:
    """A login: who, since when (epoch s). Only sessions the console issued are accepted."""

    user: str
    since_s: float


@dataclass(frozen=True)
class ActionResult:
    """How an attempt ended: ``outcome`` as recorded (ok, refused, failed, noop, applied,
    deferred) and a sentence for the operator. ``recorded`` is False when the audit row could not
    be written (the message says so too)."""

    ok: bool
    outcome: str
    message: str
    recorded: bool = True


@dataclass(frozen=True)
class Proposal:
    """A proposed parameter change; ``status`` "pending", "applied" or "deferred"."""

    id: str
    ts_s: float
    name: str
    value: float
    reason: str
    proposer: str
    status: str = "pending"
    approver: str = ""


def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS - 1] + "…"


class AdminConsole:
    """The actions on one pipeline's desk and publisher, and their audit rows (see the module
    docstring). ``db`` is a DuckDB connection holding the ``audit`` table; each write goes
    through a cursor of its own, so it never joins the writer's transactions."""

    def __init__(self, *, users_file: str, db, now: Callable[[], float], hedge_section,
                 node=None, publisher=None) -> None:
        self.users_file = users_file
        self.db = db
        self.now = now
        self.hedge_section = hedge_section
        self.node = node
        self.publisher = publisher
        self.proposals: dict[str, Proposal] = {}
        self.version = 0  # bumped on every audit row; pages compare it to skip re-reading
        self._sessions: weakref.WeakSet[AdminSession] = weakref.WeakSet()
        self._ids = itertools.count(1)

    @classmethod
    def for_pipeline(cls, pipeline) -> AdminConsole:
        cfg = pipeline.config
        return cls(users_file=cfg.admin.users_file, db=pipeline.graph.writer.con,
                   now=pipeline.clock.now, hedge_section=cfg.hedge, node=pipeline.hedge,
                   publisher=pipeline.graph.publisher)

    # ------------------------------------------------------------------ state

    @property
    def gate(self):
        return None if self.node is None else self.node.desk.gate

    def users_problem(self) -> str:
        """"" when users can log in; otherwise why not and how to fix it."""
        if not self.users_file:
            return NO_USERS_MESSAGE
        try:
            users = read_users(self.users_file)
        except UsersFileError as exc:
            return f"Actions are disabled: {exc}."
        return "" if users else f"{NO_USERS_MESSAGE} ({self.users_file} lists no users.)"

    def audit_rows(self, limit: int = 20) -> list[AuditRow]:
        cur = self.db.cursor()
        try:
            return recent_audit(cur, limit)
        finally:
            cur.close()

    def pending(self) -> list[Proposal]:
        return [p for p in self.proposals.values() if p.status == "pending"]

    def current_value(self, name: str) -> float:
        p = PARAMETERS[name]
        if p.live and self.gate is not None:
            return float(getattr(self.gate.config, p.key))
        return float(getattr(self.hedge_section, p.key))

    # ------------------------------------------------------------------ audit

    def _record(self, user: str, action: str, target: str, detail: str, outcome: str,
                message: str, ok: bool) -> ActionResult:
        row = AuditRow(self.now(), user, action, _clip(target), _clip(detail), outcome)
        try:
            cur = self.db.cursor()
            try:
                insert_audit(cur, row)
            finally:
                cur.close()
        except Exception as exc:  # noqa: BLE001 - the operator must hear it, the loop must go on
            log_event(log, logging.ERROR, "audit row not written", action=action, user=user,
                      outcome=outcome, error=str(exc))
            return ActionResult(ok, outcome, f"{message} (NOT recorded in the audit table: {exc})",
                                recorded=False)
        self.version += 1
        log_event(log, logging.WARNING if outcome in ("refused", "failed") else logging.INFO,
                  "admin action", user=user,
                  action=action, target=row.target, outcome=outcome)
        return ActionResult(ok, outcome, message)

    def _refuse(self, user: str, action: str, target: str, why: str) -> ActionResult:
        return self._record(user, action, target, why, "refused", f"Refused: {why}.", False)

    def _user(self, session: AdminSession | None, action: str, target: str) -> str | ActionResult:
        """The session's user, or the recorded refusal."""
        if session is None or session not in self._sessions:
            why = "not logged in" if self.users_file else "no admin users are configured"
            return self._refuse("", action, target, why)
        return session.user

    # ------------------------------------------------------------------ login

    def check_password(self, name: str, password: str) -> tuple[bool, str]:
        """(accepted, why not): CPU-bound (PBKDF2); ``login_async`` runs it off the loop."""
        if not self.users_file:
            return False, "no admin users are configured"
        try:
            users = read_users(self.users_file)
        except UsersFileError as exc:
            return False, str(exc)
        encoded = users.get(name) if NAME_PATTERN.match(name or "") else None
        iterations = int(next(iter(users.values()), f"x${DEFAULT_ITERATIONS}").split("$")[1])
        ok = verify_password(password, encoded or _dummy_hash(iterations))
        if encoded is None or not ok:
            return False, "wrong name or password"
        return True, ""

    def _finish_login(self, name: str, accepted: bool, why: str) -> tuple[AdminSession | None, ActionResult]:
        target = name if NAME_PATTERN.match(name or "") else "(not a valid name)"
        if not accepted:
            return None, self._refuse("", "login", target, why)
        session = AdminSession(name, self.now())
        self._sessions.add(session)
        return session, self._record(name, "login", target, "logged in", "ok",
                                     f"Logged in as {name}.", True)

    def login(self, name: str, password: str) -> tuple[AdminSession | None, ActionResult]:
        return self._finish_login(name, *self.check_password(name, password))

    async def login_async(self, name: str, password: str) -> tuple[AdminSession | None, ActionResult]:
        """``login`` with the password check in a thread (hashlib releases the GIL)."""
        accepted, why = await asyncio.to_thread(self.check_password, name, password)
        return self._finish_login(name, accepted, why)

    def logout(self, session: AdminSession | None) -> ActionResult | None:
        if session is None or session not in self._sessions:
            return None
        self._sessions.discard(session)
        return self._record(session.user, "logout", session.user, "logged out", "ok",
                            "Logged out.", True)

    def forget(self, session: AdminSession | None) -> None:
        """Drop a session whose browser tab closed (no audit row: nothing was done)."""
        if session is not None:
            self._sessions.discard(session)

    # ------------------------------------------------------------------ trading

    def _desk_files(self, user: str, action: str) -> tuple[Path, Path] | ActionResult:
        node = self.node
        if node is None:
            return self._refuse(user, action, "hedge desk",
                                "the hedge desk is not running ([hedge] enabled = false)")
        if node.pause_file is None or node.flatten_file is None:
            return self._refuse(user, action, "hedge desk",
                                "the desk has no pause_file / flatten_file configured")
        return node.pause_file, node.flatten_file

    def pause_trading(self, session: AdminSession | None, why: str = "") -> ActionResult:
        user = self._user(session, "pause_trading", "hedge desk")
        if isinstance(user, ActionResult):
            return user
        files = self._desk_files(user, "pause_trading")
        if isinstance(files, ActionResult):
            return files
        pause, _ = files
        if pause.exists():
            return self._record(user, "pause_trading", str(pause), "already paused: the pause "
                                "file exists", "noop", "Trading was already paused.", True)
        try:
            operator_files.pause_trading(pause, f"{_clip(why) or 'admin page'} (by {user})")
        except OSError as exc:
            return self._record(user, "pause_trading", str(pause), f"cannot write: {exc}",
                                "failed", f"Failed: cannot write {pause}: {exc}", False)
        return self._record(user, "pause_trading", str(pause), _clip(why) or "wrote the pause file",
                            "ok", "Trading pauses at the desk's next tick (reducing orders still "
                            "pass).", True)

    def resume_trading(self, session: AdminSession | None, why: str = "") -> ActionResult:
        user = self._user(session, "resume_trading", "hedge desk")
        if isinstance(user, ActionResult):
            return user
        files = self._desk_files(user, "resume_trading")
        if isinstance(files, ActionResult):
            return files
        pause, _ = files
        try:
            lifted = operator_files.lift(pause)
        except OSError as exc:
            return self._record(user, "resume_trading", str(pause), f"cannot remove: {exc}",
                                "failed", f"Failed: cannot remove {pause}: {exc}", False)
        if lifted:
            return self._record(user, "resume_trading", str(pause),
                                _clip(why) or "removed the pause file", "ok",
                                "Trading resumes at the desk's next tick.", True)
        state = self.gate.pause_state
        if state.paused:
            # No file holds this pause (the dead man's switch fired, or a pause by hand): the gate.
            self.gate.resume(self.now(), user, _clip(why) or "admin page")
            return self._record(user, "resume_trading", "hedge desk",
                                f"lifted the pause by {state.who}: {state.why}", "ok",
                                f"Trading resumed (it was paused by {state.who}).", True)
        return self._record(user, "resume_trading", "hedge desk", "not paused", "noop",
                            "Trading was not paused.", True)

    def flatten(self, session: AdminSession | None, why: str = "") -> ActionResult:
        user = self._user(session, "flatten", "hedge desk")
        if isinstance(user, ActionResult):
            return user
        files = self._desk_files(user, "flatten")
        if isinstance(files, ActionResult):
            return files
        pause, flatten = files
        try:  # the pause too: trading stays paused after it
            operator_files.request_flatten(pause, flatten, f"{_clip(why) or 'admin page'} (by {user})")
        except OSError as exc:
            return self._record(user, "flatten", str(flatten), f"cannot write: {exc}", "failed",
                                f"Failed: {exc}", False)
        return self._record(user, "flatten", str(flatten), _clip(why) or "wrote the flatten file",
                            "ok", "The desk closes its futures at its next step; trading stays "
                            "paused until resumed.", True)

    def reset_breaker(self, session: AdminSession | None, name: str, why: str = "") -> ActionResult:
        user = self._user(session, "reset_breaker", name)
        if isinstance(user, ActionResult):
            return user
        if self.gate is None:
            return self._refuse(user, "reset_breaker", name, "the hedge desk is not running")
        states = self.gate.breaker_states()
        if name not in states:
            return self._refuse(user, "reset_breaker", name, f"there is no breaker {name!r}")
        if states[name].state == "closed":
            return self._record(user, "reset_breaker", name, "already closed", "noop",
                                f"{name} is already closed.", True)
        self.gate.reset_breaker(name, self.now(), user, _clip(why) or "admin page")
        return self._record(user, "reset_breaker", name,
                            f"reset from {states[name].state}: {_clip(why)}", "ok",
                            f"{name} reset to closed (it re-opens if its condition is still bad).",
                            True)

    # ------------------------------------------------------------------ publishing

    def pause_publishing(self, session: AdminSession | None, why: str = "", *,
                         on_chain: bool = False) -> ActionResult:
        target = "oracle publisher"
        user = self._user(session, "pause_publishing", target)
        if isinstance(user, ActionResult):
            return user
        pub = self.publisher
        if pub is None:
            return self._refuse(user, "pause_publishing", target,
                                "chain publishing is off ([chain] enabled = false)")
        where = "off-chain and on the Oracle contract" if on_chain else "off-chain"
        path = pub.settings.pause_file
        if not path:
            if pub.paused and not on_chain:
                return self._record(user, "pause_publishing", target, "already paused", "noop",
                                    "Publishing was already paused.", True)
            pub.pause(f"admin {user}")
            if on_chain:
                pub.pause_on_chain()
            return self._record(user, "pause_publishing", target, f"{where}: {_clip(why)}", "ok",
                                f"Publishing paused {where}.", True)
        path = Path(path)
        if path.exists():
            return self._record(user, "pause_publishing", str(path), "already paused: the pause "
                                "file exists", "noop", "Publishing was already paused.", True)
        try:
            operator_files.pause_publishing(path, on_chain)
        except OSError as exc:
            return self._record(user, "pause_publishing", str(path), f"cannot write: {exc}",
                                "failed", f"Failed: cannot write {path}: {exc}", False)
        return self._record(user, "pause_publishing", str(path), f"{where}: {_clip(why)}", "ok",
                            f"Publishing pauses {where} at the publisher's next tick.", True)

    def resume_publishing(self, session: AdminSession | None, why: str = "") -> ActionResult:
        target = "oracle publisher"
        user = self._user(session, "resume_publishing", target)
        if isinstance(user, ActionResult):
            return user
        pub = self.publisher
        if pub is None:
            return self._refuse(user, "resume_publishing", target,
                                "chain publishing is off ([chain] enabled = false)")
        path = Path(pub.settings.pause_file) if pub.settings.pause_file else None
        try:
            lifted = path is not None and operator_files.lift(path)
        except OSError as exc:
            return self._record(user, "resume_publishing", str(path), f"cannot remove: {exc}",
                                "failed", f"Failed: cannot remove {path}: {exc}", False)
        if lifted:
            return self._record(user, "resume_publishing", str(path),
                                _clip(why) or "removed the pause file", "ok",
                                "Publishing resumes at the publisher's next tick.", True)
        if pub.paused:
            pub.resume()
            return self._record(user, "resume_publishing", target, _clip(why) or "resumed", "ok",
                                "Publishing resumed.", True)
        return self._record(user, "resume_publishing", target, "not paused", "noop",
                            "Publishing was not paused.", True)

    # ------------------------------------------------------------------ parameters

    def _check_value(self, p: Parameter, value: float) -> str:
        """Why ``value`` cannot be ``p`` ("" when it can)."""
        if p.section == "safety" and self.gate is None:
            return "the hedge desk is not running ([hedge] enabled = false)"
        if not (math.isfinite(value) and 0 < value <= p.max_value):
            bound = "" if math.isinf(p.max_value) else f" and <= {p.max_value:g}"
            return f"{p.name} must be a finite number > 0{bound}, got {value!r}"
        try:
            if p.section == "hedge":
                dataclasses.replace(self.hedge_section, **{p.key: value})
            if p.live and self.gate is not None:
                dataclasses.replace(self.gate.config, **{p.key: value})
        except (ConfigError, ValueError) as exc:
            return str(exc)
        return ""

    def propose(self, session: AdminSession | None, name: str, value_text: str,
                reason: str) -> ActionResult:
        user = self._user(session, "propose", name)
        if isinstance(user, ActionResult):
            return user
        p = PARAMETERS.get(name)
        if p is None:
            return self._refuse(user, "propose", name, f"{name!r} cannot be changed here; the "
                                f"parameters are: {', '.join(PARAMETERS)}")
        try:
            value = float(str(value_text).strip())
        except ValueError:
            return self._refuse(user, "propose", name, f"{value_text!r} is not a number")
        problem = self._check_value(p, value)
        if problem:
            return self._refuse(user, "propose", name, problem)
        if not _clip(reason):
            return self._refuse(user, "propose", name, "a proposal needs a reason")
        proposal = Proposal(f"P{next(self._ids)}", self.now(), name, value, _clip(reason), user)
        self.proposals[proposal.id] = proposal
        return self._record(user, "propose", name,
                            f"{proposal.id}: {name} = {value:g} (now {self.current_value(name):g}):"
                            f" {proposal.reason}", "ok",
                            f"Proposed {proposal.id}: {name} = {value:g}; another user must "
                            "approve it.", True)

    def approve(self, session: AdminSession | None, proposal_id: str) -> ActionResult:
        user = self._user(session, "approve", proposal_id)
        if isinstance(user, ActionResult):
            return user
        proposal = self.proposals.get(proposal_id)
        if proposal is None or proposal.status != "pending":
            return self._refuse(user, "approve", proposal_id,
                                f"no pending proposal {proposal_id!r}")
        if proposal.proposer == user:
            return self._refuse(user, "approve", proposal_id,
                                f"{user} proposed {proposal_id}: the proposer cannot approve "
                                "their own change")
        p = PARAMETERS[proposal.name]
        problem = self._check_value(p, proposal.value)  # the desk may have changed since
        if problem:
            return self._refuse(user, "approve", proposal_id, problem)
        was = self.current_value(p.name)
        what = f"{proposal.id} ({p.name} = {proposal.value:g}, proposed by {proposal.proposer})"
        if p.live and self.gate is not None:
            self._apply_live(p, proposal.value)
            keep = (f"to keep it after a restart, set [hedge] {p.key} = {proposal.value:g} in the "
                    "config file" if p.section == "hedge" else
                    f"not persisted: the next start uses the built-in {self.current_default(p):g}")
            self.proposals[proposal.id] = dataclasses.replace(proposal, status="applied",
                                                              approver=user)
            return self._record(user, "approve", proposal.id,
                                f"{what}: applied to the running desk, was {was:g}; {keep}",
                                "applied", f"Approved and applied {what}; {keep}.", True)
        self.proposals[proposal.id] = dataclasses.replace(proposal, status="deferred", approver=user)
        how = (f"set [hedge] {p.key} = {proposal.value:g} in the config file (or "
               f"HEDGEFLOW_HEDGE__{p.key.upper()}={proposal.value:g})")
        return self._record(user, "approve", proposal.id,
                            f"{what}: approved, applies at next start once configured: {how}; the "
                            f"running desk keeps {was:g}", "deferred",
                            f"Approved {what}: it cannot change on a running desk; it applies at "
                            f"the next start once you {how}.", True)

    def current_default(self, p: Parameter) -> float:
        from models.desk import DESK_SAFETY

        return float(getattr(DESK_SAFETY, p.key))

    def _apply_live(self, p: Parameter, value: float) -> None:
        self.gate.update_config(dataclasses.replace(self.gate.config, **{p.key: value}))


_consoles: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def admin_console(pipeline) -> AdminConsole:
    """The one console of a started ``pipeline`` (shared by its sessions: a proposal made in one
    browser is approved from another)."""
    console = _consoles.get(pipeline)
    if console is None:
        console = _consoles[pipeline] = AdminConsole.for_pipeline(pipeline)
    return console
