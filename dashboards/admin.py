"""Safety and admin page: the hedge desk's circuit breakers, its pause (the kill switch) and dead
man's switch, the oracle publisher's pause, recent alerts; and, after login, the operator's
actions, each recorded in the ``audit`` table.

Served by ``hedgeflow run`` at http://127.0.0.1:5006/admin, or on its own with
``panel serve dashboards/admin.py``. The state is read every ``refresh_ms`` from the session's own
callback. The actions are dataflows.admin's (``AdminConsole``, one per pipeline, shared by every
session, so a change proposed in one browser can be approved in another); this page only holds
which user is logged in, per browser session. A reload logs out.

Values a browser test reads carry stable CSS classes: ``admin-trading[data-state]``,
``admin-publishing[data-state]``, ``admin-dms``, ``admin-breaker[data-name][data-state]``,
``admin-alert``, ``admin-user``, ``admin-result[data-outcome]``,
``admin-audit-row[data-action][data-outcome]``, ``admin-proposal[data-id]``.
"""

from __future__ import annotations

import html
import math
from datetime import datetime, timezone

import panel as pn

from dashboards.session import session_callback
from dataflows.admin import PARAMETERS, ActionResult, AdminConsole, Proposal, admin_console
from dataflows.views import AlertsView
from storage.audit import AuditRow

RECENT_ALERTS = 15
RECENT_AUDIT = 15
STATE_COLOURS = {"closed": "#1b7f3b", "half_open": "#d08c00", "open": "#b00020",
                 "running": "#1b7f3b", "paused": "#b00020", "off": "#777777"}
SEVERITY_COLOURS = {"info": "#555555", "warning": "#b26a00", "critical": "#b00020"}
OUTCOME_COLOURS = {"ok": "#1b7f3b", "applied": "#1b7f3b", "deferred": "#b26a00",
                   "noop": "#555555", "refused": "#b00020", "failed": "#b00020"}
_TABLE = 'style="border-collapse:collapse;width:100%;font-size:0.92em"'
_CELL = 'style="padding:2px 8px;border-bottom:1px solid #eee;text-align:left"'


def _esc(x) -> str:
    return html.escape(str(x))


def _utc(ts_s: float) -> str:
    if ts_s is None or not math.isfinite(ts_s):
        return "—"
    return datetime.fromtimestamp(ts_s, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour)."""
    s = int(max(0.0, seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _table(head: tuple[str, ...], rows: list[str]) -> str:
    th = "".join(f"<th {_CELL}>{_esc(h)}</th>" for h in head)
    return f"<table {_TABLE}><tr>{th}</tr>{''.join(rows)}</table>"


# --------------------------------------------------------------------------- state, as HTML


def trading_html(gate, pause_file_present: bool) -> str:
    """The kill switch: the desk's trading pause (who, since, why, and whether reducing orders
    still pass)."""
    if gate is None:
        return ('<div class="admin-trading" data-state="off"><b>Trading:</b> '
                '<span style="color:#777">the hedge desk is not running '
                "([hedge] enabled = false)</span></div>")
    p = gate.pause_state
    if not p.paused:
        note = " (a pause file is waiting for the desk's next tick)" if pause_file_present else ""
        return ('<div class="admin-trading" data-state="running"><b>Trading:</b> '
                f'<span style="color:{STATE_COLOURS["running"]};font-weight:600">running</span>'
                f"{_esc(note)} — kill switch released</div>")
    mode = "reducing orders still pass" if p.allow_flatten else "hard freeze: nothing passes"
    return ('<div class="admin-trading" data-state="paused"><b>Trading:</b> '
            f'<span style="color:{STATE_COLOURS["paused"]};font-weight:600">paused</span> — '
            f"kill switch engaged by {_esc(p.who)} since {_utc(p.since_s)} ({_esc(mode)}): "
            f"{_esc(p.why)}</div>")


def publishing_html(publisher) -> str:
    """The oracle publisher: publishing, paused off-chain, or also paused on the contract."""
    if publisher is None:
        return ('<div class="admin-publishing" data-state="off"><b>Oracle publishing:</b> '
                '<span style="color:#777">off ([chain] enabled = false)</span></div>')
    state = "paused" if publisher.paused else "running"
    words = "paused" if publisher.paused else "publishing"
    chain = " · the Oracle contract is paused" if publisher.chain_paused else ""
    return (f'<div class="admin-publishing" data-state="{state}"><b>Oracle publishing:</b> '
            f'<span style="color:{STATE_COLOURS[state]};font-weight:600">{words}</span>'
            f"{chain}</div>")


def dead_mans_html(gate, now_s: float) -> str:
    """The dead man's switch: time left before it fires (pause, cancel, flatten)."""
    if gate is None:
        return '<div class="admin-dms" data-state="off"><b>Dead man\'s switch:</b> —</div>'
    dms = gate.dead_mans_switch
    left = gate.seconds_left(now_s)
    if math.isnan(left):
        text, state = "not armed yet (no ok oracle price so far)", "unarmed"
    elif dms.fired:
        text, state = f"FIRED at {_utc(dms.fired_at_s)}: trading paused until resumed", "fired"
    elif dms.expired(now_s):
        text, state = "expired: it fires at the desk's next step", "fired"
    else:
        text = f"{_duration(left)} left of {_duration(dms.timeout_s)} (fires without an ok price)"
        state = "armed"
    colour = "#b00020" if state == "fired" else ("#d08c00" if left == left and left < 300 else "#333")
    return (f'<div class="admin-dms" data-state="{state}" data-seconds-left="{left:.0f}">'
            f'<b>Dead man\'s switch:</b> <span style="color:{colour}">{_esc(text)}</span></div>')


def breakers_html(gate) -> str:
    if gate is None:
        return ""
    states = gate.breaker_states()
    if not states:
        return "<div><b>Circuit breakers:</b> none evaluated yet</div>"
    rows = []
    for name, b in states.items():
        colour = STATE_COLOURS.get(b.state, "#333")
        reopen = _utc(b.reopen_at_s) if b.state == "open" else ""
        rows.append(
            f'<tr class="admin-breaker" data-name="{_esc(name)}" data-state="{_esc(b.state)}">'
            f"<td {_CELL}>{_esc(name)}</td>"
            f'<td {_CELL}><span style="color:{colour};font-weight:600">{_esc(b.state)}</span></td>'
            f"<td {_CELL}>{_utc(b.since_s)}</td><td {_CELL}>{_esc(b.reason)}</td>"
            f"<td {_CELL}>{reopen}</td><td {_CELL}>{b.trips}</td></tr>")
    return "<b>Circuit breakers</b>" + _table(
        ("breaker", "state", "since", "reason", "probation from", "trips"), rows)


def alerts_html(alerts) -> str:
    if not alerts:
        return "<b>Recent alerts</b><div>none yet</div>"
    rows = [
        f'<tr class="admin-alert"><td {_CELL}>{_utc(a.ts)}</td>'
        f'<td {_CELL}><span style="color:{SEVERITY_COLOURS.get(a.severity, "#333")}">'
        f"{_esc(a.severity)}</span></td><td {_CELL}>{_esc(a.kind)}</td>"
        f"<td {_CELL}>{_esc(a.message)}</td></tr>"
        for a in reversed(alerts)]  # newest first
    return "<b>Recent alerts</b>" + _table(("time", "severity", "kind", "message"), rows)


def audit_html(rows: list[AuditRow]) -> str:
    if not rows:
        return "<b>Audit log</b><div>no action yet</div>"
    body = [
        f'<tr class="admin-audit-row" data-action="{_esc(r.action)}" '
        f'data-outcome="{_esc(r.outcome)}"><td {_CELL}>{_utc(r.ts_s)}</td>'
        f"<td {_CELL}>{_esc(r.user) or '(nobody)'}</td><td {_CELL}>{_esc(r.action)}</td>"
        f"<td {_CELL}>{_esc(r.target)}</td>"
        f'<td {_CELL}><span style="color:{OUTCOME_COLOURS.get(r.outcome, "#333")};'
        f'font-weight:600">{_esc(r.outcome)}</span></td><td {_CELL}>{_esc(r.detail)}</td></tr>'
        for r in rows]
    return "<b>Audit log</b> (newest first)" + _table(
        ("time", "user", "action", "target", "outcome", "detail"), body)


def proposals_html(proposals: list[Proposal]) -> str:
    if not proposals:
        return "<div>No parameter change proposed.</div>"
    rows = [
        f'<tr class="admin-proposal" data-id="{_esc(p.id)}" data-status="{_esc(p.status)}">'
        f"<td {_CELL}>{_esc(p.id)}</td><td {_CELL}>{_esc(p.name)} = {p.value:g}</td>"
        f"<td {_CELL}>{_esc(p.proposer)}</td><td {_CELL}>{_esc(p.reason)}</td>"
        f"<td {_CELL}>{_esc(p.status)}{' by ' + _esc(p.approver) if p.approver else ''}</td></tr>"
        for p in reversed(proposals)]
    return _table(("id", "change", "proposed by", "reason", "status"), rows)


def result_html(result: ActionResult | None) -> str:
    if result is None:
        return '<div class="admin-result" data-outcome=""></div>'
    colour = OUTCOME_COLOURS.get(result.outcome, "#333")
    return (f'<div class="admin-result" data-outcome="{_esc(result.outcome)}" '
            f'style="color:{colour};font-weight:600">{_esc(result.message)}</div>')


# --------------------------------------------------------------------------- the page


class AdminPage:
    """One browser session's page over the shared ``console``: its own widgets and login."""

    def __init__(self, console: AdminConsole, alerts: AlertsView | None, refresh_ms: int = 500) -> None:
        self.console = console
        self.alerts = alerts
        self.session = None  # dataflows.admin.AdminSession while logged in
        self._seen = {"alerts": -1, "audit": -1, "breakers": None, "proposals": None}
        problem = console.users_problem()

        self.state = pn.pane.HTML("", sizing_mode="stretch_width")
        self.breakers = pn.pane.HTML("", sizing_mode="stretch_width")
        self.alert_list = pn.pane.HTML("", sizing_mode="stretch_width")
        self.audit = pn.pane.HTML("", sizing_mode="stretch_width")
        self.proposal_list = pn.pane.HTML("", sizing_mode="stretch_width")
        self.result = pn.pane.HTML(result_html(None), sizing_mode="stretch_width")

        self.user = pn.widgets.TextInput(label="User", placeholder="user name", width=180)
        self.password = pn.widgets.PasswordInput(label="Password", placeholder="password", width=180)
        self.login_button = pn.widgets.Button(label="Log in", color="primary", width=100)
        self.logout_button = pn.widgets.Button(label="Log out", width=100, visible=False)
        self.who = pn.pane.HTML(self._who_html(), sizing_mode="stretch_width")
        self.why = pn.widgets.TextInput(label="Reason (recorded in the audit log)",
                                        placeholder="reason", width=380)
        self.buttons = {
            "pause_trading": pn.widgets.Button(label="Pause trading", color="danger"),
            "resume_trading": pn.widgets.Button(label="Resume trading", color="success"),
            "flatten": pn.widgets.Button(label="Flatten futures", color="danger"),
            "pause_publishing": pn.widgets.Button(label="Pause publishing", color="danger"),
            "resume_publishing": pn.widgets.Button(label="Resume publishing", color="success"),
        }
        self.on_chain = pn.widgets.Checkbox(label="also pause the Oracle contract", value=False)
        self.breaker = pn.widgets.Select(label="Breaker", options=[], width=220)
        self.reset_button = pn.widgets.Button(label="Reset breaker", color="warning")
        self.parameter = pn.widgets.Select(label="Parameter", options=list(PARAMETERS), width=260)
        self.value = pn.widgets.TextInput(label="New value", placeholder="value", width=120)
        self.propose_button = pn.widgets.Button(label="Propose change", color="primary")
        self.proposal = pn.widgets.Select(label="Pending proposal", options=[], width=160)
        self.approve_button = pn.widgets.Button(label="Approve", color="primary")
        self.parameter_help = pn.pane.HTML("", sizing_mode="stretch_width")

        self.login_button.on_click(self.on_login)
        self.logout_button.on_click(self.on_logout)
        actions = {
            "pause_trading": lambda s, why: console.pause_trading(s, why),
            "resume_trading": lambda s, why: console.resume_trading(s, why),
            "flatten": lambda s, why: console.flatten(s, why),
            "pause_publishing": lambda s, why: console.pause_publishing(
                s, why, on_chain=self.on_chain.value),
            "resume_publishing": lambda s, why: console.resume_publishing(s, why),
        }
        for name, button in self.buttons.items():
            button.on_click(lambda _e, act=actions[name]: self._show(act(self.session, self.why.value)))
        self.reset_button.on_click(lambda _e: self._show(
            console.reset_breaker(self.session, self.breaker.value or "", self.why.value)))
        self.propose_button.on_click(lambda _e: self._show(
            console.propose(self.session, self.parameter.value, self.value.value, self.why.value)))
        self.approve_button.on_click(lambda _e: self._show(
            console.approve(self.session, self.proposal.value or "")))
        self.parameter.param.watch(lambda _e: self._parameter_help(), "value")
        self._parameter_help()

        disabled = bool(problem)
        for w in (self.login_button, self.user, self.password, *self.buttons.values(),
                  self.reset_button, self.propose_button, self.approve_button):
            w.disabled = disabled
        self.notice = pn.pane.Alert(problem, alert_type="warning", visible=disabled,
                                    css_classes=["admin-no-users"], sizing_mode="stretch_width")

        self.refresh()
        session_callback(self.refresh, refresh_ms)
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            pn.state.on_session_destroyed(lambda _ctx: console.forget(self.session))

        self.layout = pn.Column(
            pn.pane.Markdown("# hedgeflow · safety and admin\nThe hedge desk's safety gate, the "
                             "oracle publisher, and the operator's actions (after login; every "
                             "attempt is recorded in the audit log)."),
            self.state, self.breakers,
            pn.pane.Markdown("## Actions"), self.notice,
            pn.Row(self.user, self.password, self.login_button, self.logout_button),
            self.who, self.why,
            pn.Row(*self.buttons.values()), self.on_chain,
            pn.Row(self.breaker, self.reset_button),
            pn.pane.Markdown("**Parameter change** (one user proposes, another approves)"),
            pn.Row(self.parameter, self.value, self.propose_button),
            self.parameter_help,
            pn.Row(self.proposal, self.approve_button),
            self.proposal_list, self.result,
            self.audit, self.alert_list,
            sizing_mode="stretch_width",
        )

    # ----------------------------------------------------------------- login

    def _who_html(self) -> str:
        if self.session is None:
            return '<div class="admin-user" data-user="">Not logged in.</div>'
        return (f'<div class="admin-user" data-user="{_esc(self.session.user)}">Logged in as '
                f"<b>{_esc(self.session.user)}</b> since {_utc(self.session.since_s)}.</div>")

    async def on_login(self, _event=None) -> None:
        name, password = self.user.value.strip(), self.password.value
        self.password.value = ""  # never kept in the widget
        session, result = await self.console.login_async(name, password)
        if session is not None:
            self.console.forget(self.session)
            self.session = session
        self._show(result)
        self._login_changed()

    def on_logout(self, _event=None) -> None:
        result = self.console.logout(self.session)
        self.session = None
        if result is not None:
            self._show(result)
        self._login_changed()

    def _login_changed(self) -> None:
        self.who.object = self._who_html()
        self.logout_button.visible = self.session is not None
        self.login_button.visible = self.session is None

    # ----------------------------------------------------------------- refresh

    def _show(self, result: ActionResult) -> None:
        self.result.object = result_html(result)
        self.refresh()

    def _parameter_help(self) -> None:
        p = PARAMETERS.get(self.parameter.value)
        if p is None:
            self.parameter_help.object = ""
            return
        when = "applies to the running desk at approval" if p.live and self.console.gate \
            is not None else "applies at the next start (set it in the config file)"
        self.parameter_help.object = (
            f"<div>{_esc(p.description)}: now <b>{self.console.current_value(p.name):g}</b>; "
            f"{when}.</div>")

    def refresh(self) -> None:
        console = self.console
        gate = console.gate
        now = console.now()
        node = console.node
        pause_file = node is not None and node.pause_file is not None and node.pause_file.exists()
        self.state.object = (trading_html(gate, pause_file) + publishing_html(console.publisher)
                             + dead_mans_html(gate, now))
        if gate is not None:
            names = list(gate.breaker_states())
            if names != self._seen["breakers"]:
                self._seen["breakers"] = names
                self.breaker.options = names
            if self.breaker.value not in names and names:
                # An open breaker first: resetting a closed one does nothing.
                states = gate.breaker_states()
                self.breaker.value = next((n for n in names if states[n].state != "closed"),
                                          names[0])
            self.breakers.object = breakers_html(gate)
        if self.alerts is not None and self.alerts.version != self._seen["alerts"]:
            self._seen["alerts"] = self.alerts.version
            self.alert_list.object = alerts_html(self.alerts.recent(RECENT_ALERTS))
        if console.version != self._seen["audit"]:
            self._seen["audit"] = console.version
            try:
                self.audit.object = audit_html(console.audit_rows(RECENT_AUDIT))
            except Exception as exc:  # noqa: BLE001 - the database closed under a stopping run
                self.audit.object = f"<b>Audit log</b><div>unavailable: {_esc(exc)}</div>"
            proposals = list(console.proposals.values())
            self.proposal_list.object = proposals_html(proposals)
            pending = [p.id for p in console.pending()]
            if pending != self._seen["proposals"]:
                self._seen["proposals"] = pending
                self.proposal.options = pending
                if self.proposal.value not in pending:
                    self.proposal.value = pending[0] if pending else None
            self._parameter_help()


def admin_console_page(console: AdminConsole, alerts: AlertsView | None = None,
                       refresh_ms: int = 500) -> pn.viewable.Viewable:
    """A new page (one per browser session) over ``console``."""
    return AdminPage(console, alerts, refresh_ms).layout


def admin_page(pipeline) -> pn.viewable.Viewable:
    """The Safety and admin page of a started ``pipeline``."""
    return admin_console_page(admin_console(pipeline), pipeline.views.get("alerts"),
                              pipeline.config.dashboard.refresh_ms)


if pn.state.served:
    # `panel serve dashboards/admin.py`: one pipeline shared by the sessions of this process.
    from dashboards.session import serve_page

    serve_page(admin_page, "Safety and admin")
