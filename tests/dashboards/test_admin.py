"""The Safety and admin page without a browser: its state HTML, and its widgets driving a real
AdminConsole over a real hedge desk (HedgeNode, SafetyGate, pause files) and a DuckDB audit table.

Outside a Bokeh server ``pn.state.add_periodic_callback`` schedules nothing, so the page's refresh
is captured and called by hand, as the server would every ``refresh_ms``; a button click is
``button.clicks += 1`` (what the browser's click does to the model), the login coroutine is run
with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import math
import re

import duckdb
import pytest

from dashboards import admin as page_mod
from dashboards.admin import (
    AdminPage,
    alerts_html,
    audit_html,
    breakers_html,
    dead_mans_html,
    publishing_html,
    trading_html,
)
from dataflows.admin import AdminConsole
from dataflows.admin_users import hash_password, write_users
from dataflows.config import HedgeSectionConfig
from dataflows.hedging import HedgeNode
from dataflows.views import AlertsView
from models.desk import HedgeDesk
from models.records import Alert
from models.safety import SafetyGate
from storage.audit import AuditRow
from storage.schema import create_schema

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t



@pytest.fixture
def db(tmp_path):
    con = duckdb.connect(str(tmp_path / "admin.duckdb"))
    create_schema(con)
    yield con
    con.close()


@pytest.fixture
def node(tmp_path):
    hedge = HedgeSectionConfig(pause_file=str(tmp_path / "trading.pause"),
                               flatten_file=str(tmp_path / "trading.flatten"))
    return HedgeNode(HedgeDesk(hedge.desk_config(), T0), pause_file=hedge.pause_file,
                     flatten_file=hedge.flatten_file)


@pytest.fixture
def console(tmp_path, db, node):
    users = tmp_path / "users.json"
    write_users(users, {n: hash_password(f"{n}-password", iterations=1_000) for n in ("alice", "bob")})
    return AdminConsole(users_file=str(users), db=db, now=Clock(),
                        hedge_section=HedgeSectionConfig(), node=node)


def state_of(html_text: str, cls: str) -> str:
    m = re.search(rf'class="{cls}"[^>]*data-state="([^"]*)"', html_text)
    assert m, html_text
    return m.group(1)


def click(button) -> None:
    button.clicks += 1


def log_in(page: AdminPage, name: str) -> None:
    page.user.value, page.password.value = name, f"{name}-password"
    asyncio.run(page.on_login())


# --------------------------------------------------------------------------- state HTML


def test_trading_shows_the_kill_switch_with_who_and_why_escaped():
    gate = SafetyGate()
    assert state_of(trading_html(gate, False), "admin-trading") == "running"
    assert "kill switch released" in trading_html(gate, False)
    assert "pause file is waiting" in trading_html(gate, True)
    gate.pause(T0, "<b>ops</b>", "<script>x</script>", allow_flatten=False)
    text = trading_html(gate, True)
    assert state_of(text, "admin-trading") == "paused"
    assert "hard freeze: nothing passes" in text and "2026-01-01 00:00:00 UTC" in text
    assert "<script>" not in text and "&lt;script&gt;" in text and "<b>ops" not in text
    assert state_of(trading_html(None, False), "admin-trading") == "off"


def test_dead_mans_switch_counts_down_then_fires():
    gate = SafetyGate()
    assert state_of(dead_mans_html(gate, T0), "admin-dms") == "unarmed"
    gate.dead_mans_switch.heartbeat(T0)
    text = dead_mans_html(gate, T0 + 1.0)
    assert state_of(text, "admin-dms") == "armed"
    assert "59:59 left of 1:00:00" in text and 'data-seconds-left="3599"' in text
    assert "1:00 left" in dead_mans_html(gate, T0 + 3540.0)
    expired = dead_mans_html(gate, T0 + 3600.0)
    assert state_of(expired, "admin-dms") == "fired" and "expired: it fires at the desk" in expired
    gate.dead_mans_switch.poll(T0 + 3600.0)
    assert "FIRED at 2026-01-01 01:00:00 UTC" in dead_mans_html(gate, T0 + 3600.0)
    assert state_of(dead_mans_html(gate, T0 + 3600.0), "admin-dms") == "fired"


def test_breakers_table_has_one_row_per_breaker_with_its_state():
    gate = SafetyGate()
    assert "none evaluated yet" in breakers_html(gate)
    gate.trip_breaker("oracle_breaker:BTC", T0, "test", "stale <feed>")
    text = breakers_html(gate)
    rows = re.findall(r'class="admin-breaker" data-name="([^"]*)" data-state="([^"]*)"', text)
    assert rows == [("oracle_breaker:BTC", "open")]
    assert "stale &lt;feed&gt;" in text


def test_publishing_states():
    class Pub:
        paused, chain_paused = False, False

    pub = Pub()
    assert state_of(publishing_html(pub), "admin-publishing") == "running"
    pub.paused = pub.chain_paused = True
    assert state_of(publishing_html(pub), "admin-publishing") == "paused"
    assert "Oracle contract is paused" in publishing_html(pub)
    assert state_of(publishing_html(None), "admin-publishing") == "off"


def test_alerts_and_audit_are_escaped_newest_first():
    alerts = [Alert(T0, "oracle_jump", "warning", "first", "BTC"),
              Alert(T0 + 1, "safety_pause", "critical", "<img src=x>", "BTC")]
    text = alerts_html(alerts)
    assert text.index("&lt;img src=x&gt;") < text.index("first") and "<img" not in text
    rows = [AuditRow(T0, "", "pause_trading", "hedge desk", "not logged in", "refused")]
    text = audit_html(rows)
    assert 'data-action="pause_trading" data-outcome="refused"' in text and "(nobody)" in text


# --------------------------------------------------------------------------- the page


def test_without_users_the_page_says_how_to_configure_and_disables_actions(periodic, db, node):
    console = AdminConsole(users_file="", db=db, now=Clock(), hedge_section=HedgeSectionConfig(),
                           node=node)
    page = AdminPage(console, AlertsView())
    assert page.notice.visible and "HEDGEFLOW_ADMIN__USERS_FILE" in page.notice.object
    assert page.login_button.disabled and all(b.disabled for b in page.buttons.values())
    assert page.approve_button.disabled and page.propose_button.disabled


def test_refused_without_login_then_pause_and_resume_after_login(periodic, console, db, node):
    page = AdminPage(console, AlertsView(), refresh_ms=250)
    assert len(periodic) == 1 and periodic[0]["period"] == 250
    assert not page.notice.visible and not page.buttons["pause_trading"].disabled

    click(page.buttons["pause_trading"])
    assert 'data-outcome="refused"' in page.result.object
    assert not node.pause_file.exists()
    assert 'data-action="pause_trading" data-outcome="refused"' in page.audit.object

    log_in(page, "alice")
    assert 'data-user="alice"' in page.who.object
    assert page.logout_button.visible and not page.login_button.visible
    assert page.password.value == ""
    page.why.value = "maintenance"
    click(page.buttons["pause_trading"])
    assert 'data-outcome="ok"' in page.result.object and node.pause_file.exists()
    node.on_tick(T0 + 1)  # the desk's next tick
    periodic[0]["callback"]()
    assert state_of(page.state.object, "admin-trading") == "paused"

    click(page.buttons["resume_trading"])
    node.on_tick(T0 + 2)
    periodic[0]["callback"]()
    assert state_of(page.state.object, "admin-trading") == "running"
    actions = re.findall(r'data-action="([^"]*)" data-outcome="([^"]*)"', page.audit.object)
    assert actions == [("resume_trading", "ok"), ("pause_trading", "ok"), ("login", "ok"),
                       ("pause_trading", "refused")]


def test_login_is_per_session(periodic, console, node):
    a, b = AdminPage(console, None), AdminPage(console, None)
    log_in(a, "alice")
    click(b.buttons["pause_trading"])
    assert 'data-outcome="refused"' in b.result.object and not node.pause_file.exists()
    assert 'data-user=""' in b.who.object


def test_wrong_password_is_refused(periodic, console):
    page = AdminPage(console, None)
    page.user.value, page.password.value = "alice", "not-her-password"
    asyncio.run(page.on_login())
    assert page.session is None and 'data-outcome="refused"' in page.result.object


def test_proposal_in_one_session_approved_in_another(periodic, console, node):
    a, b = AdminPage(console, None), AdminPage(console, None)
    log_in(a, "alice")
    log_in(b, "bob")
    a.parameter.value = "safety.max_daily_volume_usd"
    assert "now <b>1e+06</b>" in a.parameter_help.object
    a.value.value, a.why.value = "250000", "smaller book"
    click(a.propose_button)
    b.refresh()
    assert b.proposal.options == ["P1"] and 'data-id="P1"' in b.proposal_list.object
    assert b.proposal.value == "P1"  # the pending proposal is selected
    a.refresh()
    click(a.approve_button)
    assert "cannot approve their own" in a.result.object
    click(b.approve_button)
    assert 'data-outcome="applied"' in b.result.object
    assert node.desk.gate.config.max_daily_volume_usd == 250_000.0
    a.refresh()
    assert a.proposal.options == [] and 'data-status="applied"' in a.proposal_list.object


def test_reset_breaker_from_the_select(periodic, console, node):
    gate = node.desk.gate
    gate.trip_breaker("funding_breaker:BTC", T0, "test", "expensive")
    gate.reset_breaker("funding_breaker:BTC", T0, "test", "fine again")
    gate.trip_breaker("oracle_breaker:BTC", T0, "test", "stale")
    page = AdminPage(console, None)
    assert page.breaker.options == ["funding_breaker:BTC", "oracle_breaker:BTC"]
    assert page.breaker.value == "oracle_breaker:BTC"  # the open one is offered first
    log_in(page, "bob")
    click(page.reset_button)
    assert gate.breaker_states()["oracle_breaker:BTC"].state == "closed"
    assert re.findall(r'data-name="([^"]*)" data-state="([^"]*)"', page.breakers.object) == [
        ("funding_breaker:BTC", "closed"), ("oracle_breaker:BTC", "closed")]


def test_alerts_redraw_only_when_the_view_moved(periodic, console):
    view = AlertsView()
    page = AdminPage(console, view)
    assert "none yet" in page.alert_list.object
    view.on_alerts([Alert(T0, "safety_pause", "warning", "trading paused by ops", "ops")])
    periodic[0]["callback"]()
    assert page.alert_list.object.count('class="admin-alert"') == 1
    page.alert_list.object = "stale"
    periodic[0]["callback"]()
    assert page.alert_list.object == "stale"  # nothing new: not redrawn


def test_duration_format():
    assert page_mod._duration(3599.4) == "59:59"
    assert page_mod._duration(3600) == "1:00:00"
    assert page_mod._duration(-5) == "0:00"
    assert page_mod._utc(math.nan) == "—"
