"""dataflows/admin.py and dataflows/admin_users.py: the login, each action's effect on a real
hedge desk (HedgeNode, SafetyGate, the pause and flatten files), on a real chain publisher (the
embedded EVM), and the audit row every attempt leaves in DuckDB."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat

import duckdb
import pytest

from dataflows import admin_users
from dataflows.admin import PARAMETERS, AdminConsole, AdminSession
from dataflows.admin_users import UsersFileError, hash_password, read_users, verify_password
from dataflows.config import ChainConfig, HedgeSectionConfig
from dataflows.hedging import HedgeNode
from models.desk import HedgeDesk
from storage.audit import recent_audit
from storage.schema import create_schema

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
FAST = 1_000  # PBKDF2 iterations for tests (the default, 600,000, takes half a second)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def users_file(tmp_path):
    path = tmp_path / "admin_users.json"
    admin_users.write_users(path, {"alice": hash_password("alice-password", iterations=FAST),
                                   "bob": hash_password("bob-password", iterations=FAST)})
    return path


@pytest.fixture
def db(tmp_path):
    con = duckdb.connect(str(tmp_path / "admin.duckdb"))
    create_schema(con)
    yield con
    con.close()


@pytest.fixture
def node(tmp_path):
    hedge = HedgeSectionConfig(pause_file=str(tmp_path / "data" / "trading.pause"),
                               flatten_file=str(tmp_path / "data" / "trading.flatten"))
    return HedgeNode(HedgeDesk(hedge.desk_config(), T0), pause_file=hedge.pause_file,
                     flatten_file=hedge.flatten_file)


@pytest.fixture
def console(users_file, db, node):
    return AdminConsole(users_file=str(users_file), db=db, now=Clock(),
                        hedge_section=HedgeSectionConfig(), node=node)


def audit(db):
    return recent_audit(db, 100)[::-1]  # oldest first


def login(console, name="alice") -> AdminSession:
    session, result = console.login(name, f"{name}-password")
    assert session is not None, result
    return session


# --------------------------------------------------------------------------- users file


def test_hash_round_trip_and_salt():
    a, b = hash_password("s3cret-pass", iterations=FAST), hash_password("s3cret-pass", iterations=FAST)
    assert a != b  # a fresh salt each time
    assert a.startswith(f"pbkdf2_sha256${FAST}$")
    assert verify_password("s3cret-pass", a) and verify_password("s3cret-pass", b)
    assert not verify_password("s3cret-pasS", a)
    assert "s3cret" not in a


def test_bad_hash_is_a_clear_error():
    with pytest.raises(UsersFileError, match="not a pbkdf2_sha256 hash"):
        verify_password("x", "plain-text-password")
    with pytest.raises(UsersFileError, match="iterations must be"):
        hash_password("x", iterations=10)


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_users_file_written_private_and_read_back(tmp_path, suffix):
    path = tmp_path / f"users{suffix}"
    users = {"carol": hash_password("carol-password", iterations=FAST)}
    admin_users.write_users(path, users)
    assert read_users(path) == users
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_users_file_problems_name_the_fix(tmp_path):
    with pytest.raises(UsersFileError, match="not found; create it with"):
        read_users(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"users": {"<b>x</b>": hash_password("p", iterations=FAST)}}))
    with pytest.raises(UsersFileError, match="bad user name"):
        read_users(bad)
    bad.write_text(json.dumps({"people": {}}))
    with pytest.raises(UsersFileError, match="no users table"):
        read_users(bad)


def test_admin_users_add_reads_the_password_with_getpass(tmp_path, monkeypatch, capsys):
    path = tmp_path / "users.toml"
    answers = iter(["long-password-1", "long-password-1"])
    monkeypatch.setattr(admin_users.getpass, "getpass", lambda prompt="": next(answers))
    assert admin_users.main(["add", "dave", "--file", str(path)]) == 0
    assert verify_password("long-password-1", read_users(path)["dave"])
    assert "long-password-1" not in path.read_text() + capsys.readouterr().out

    answers = iter(["long-password-2", "different-one"])
    assert admin_users.main(["add", "erin", "--file", str(path)]) == 2
    assert "differ" in capsys.readouterr().err
    assert list(read_users(path)) == ["dave"]


def test_admin_users_without_a_file_says_how_to_configure(monkeypatch, capsys):
    monkeypatch.delenv("HEDGEFLOW_ADMIN__USERS_FILE", raising=False)
    monkeypatch.delenv("HEDGEFLOW_CONFIG", raising=False)
    assert admin_users.main(["list"]) == 2
    assert "HEDGEFLOW_ADMIN__USERS_FILE" in capsys.readouterr().err


# --------------------------------------------------------------------------- login


def test_login_accepts_the_right_password_and_refuses_others(console, db):
    session, result = console.login("alice", "alice-password")
    assert isinstance(session, AdminSession) and session.user == "alice" and result.ok
    for name, password in (("alice", "wrong-password"), ("mallory", "alice-password"),
                           ("<script>", "x")):
        s, r = console.login(name, password)
        assert s is None and r.outcome == "refused"
    rows = audit(db)
    assert [(r.user, r.action, r.target, r.outcome) for r in rows] == [
        ("alice", "login", "alice", "ok"),
        ("", "login", "alice", "refused"),
        ("", "login", "mallory", "refused"),
        ("", "login", "(not a valid name)", "refused"),
    ]
    assert all("password" not in r.detail or "wrong name or password" in r.detail for r in rows)
    assert not any("alice-password" in " ".join(r[1:]) for r in rows)


def test_login_async_gives_the_same_answer(console):
    import asyncio

    session, result = asyncio.run(console.login_async("bob", "bob-password"))
    assert session.user == "bob" and result.outcome == "ok"
    session, result = asyncio.run(console.login_async("bob", "nope-nope"))
    assert session is None and result.outcome == "refused"


def test_no_users_configured_refuses_everything_with_the_fix(db, node):
    console = AdminConsole(users_file="", db=db, now=Clock(), hedge_section=HedgeSectionConfig(),
                           node=node)
    assert "HEDGEFLOW_ADMIN__USERS_FILE" in console.users_problem()
    assert console.login("alice", "alice-password")[0] is None
    assert console.pause_trading(None).outcome == "refused"
    assert not node.pause_file.exists()
    assert [(r.action, r.outcome, r.detail) for r in audit(db)] == [
        ("login", "refused", "no admin users are configured"),
        ("pause_trading", "refused", "no admin users are configured"),
    ]


def test_a_session_the_console_did_not_issue_is_refused(console, db, node):
    forged = AdminSession("alice", T0)
    assert console.pause_trading(forged).outcome == "refused"
    assert not node.pause_file.exists()
    session = login(console)
    console.logout(session)
    assert console.pause_trading(session).outcome == "refused"
    assert [(r.user, r.action, r.outcome) for r in audit(db)] == [
        ("", "pause_trading", "refused"), ("alice", "login", "ok"), ("alice", "logout", "ok"),
        ("", "pause_trading", "refused")]


# --------------------------------------------------------------------------- trading


def test_every_action_refused_without_login_changes_nothing(console, db, node):
    gate = node.desk.gate
    results = [console.pause_trading(None, "x"), console.resume_trading(None),
               console.flatten(None), console.reset_breaker(None, "daily_loss_limit"),
               console.pause_publishing(None), console.resume_publishing(None),
               console.propose(None, "hedge.leverage", "20", "r"), console.approve(None, "P1")]
    assert {r.outcome for r in results} == {"refused"} and not any(r.ok for r in results)
    assert not node.pause_file.exists() and not node.flatten_file.exists()
    assert not gate.pause_state.paused and console.proposals == {}
    rows = audit(db)
    assert [r.action for r in rows] == ["pause_trading", "resume_trading", "flatten",
                                        "reset_breaker", "pause_publishing", "resume_publishing",
                                        "propose", "approve"]
    assert {(r.user, r.outcome, r.detail) for r in rows} == {("", "refused", "not logged in")}


def test_pause_and_resume_trading_through_the_pause_file(console, db, node):
    session = login(console)
    gate = node.desk.gate
    result = console.pause_trading(session, "maintenance")
    assert result.ok and result.outcome == "ok"
    assert node.pause_file.read_text() == "maintenance (by alice)\n"
    node.on_tick(T0 + 1)  # the running desk reads the file at its next tick
    assert gate.pause_state.paused and gate.pause_state.allow_flatten
    assert console.pause_trading(session).outcome == "noop"

    assert console.resume_trading(session, "done").outcome == "ok"
    assert not node.pause_file.exists()
    node.on_tick(T0 + 2)
    assert not gate.pause_state.paused
    assert console.resume_trading(session).outcome == "noop"
    assert [(r.user, r.action, r.outcome) for r in audit(db)][1:] == [
        ("alice", "pause_trading", "ok"), ("alice", "pause_trading", "noop"),
        ("alice", "resume_trading", "ok"), ("alice", "resume_trading", "noop")]


def test_resume_lifts_a_pause_no_file_holds(console, db, node):
    gate = node.desk.gate
    gate.pause(T0, "dead_mans_switch", "no ok price for 3600 s")
    session = login(console)
    result = console.resume_trading(session, "feeds are back")
    assert result.outcome == "ok" and "dead_mans_switch" in result.message
    assert not gate.pause_state.paused
    assert "dead_mans_switch" in audit(db)[-1].detail


def test_flatten_writes_both_files_and_the_desk_flattens(console, node):
    session = login(console)
    assert console.flatten(session, "risk off").outcome == "ok"
    assert node.flatten_file.read_text() == "risk off (by alice)\n"
    assert node.pause_file.exists()
    node.on_tick(T0 + 1)
    assert not node.flatten_file.exists()  # read once and removed by the desk
    assert node.desk._flatten_request == ("operator", "risk off (by alice)")
    assert node.desk.gate.pause_state.paused  # trading stays paused after the flatten


def test_reset_breaker(console, db, node):
    gate = node.desk.gate
    session = login(console)
    assert console.reset_breaker(session, "nope:BTC").outcome == "refused"
    gate.trip_breaker("oracle_breaker:BTC", T0, "test", "stale prices")
    assert gate.breaker_states()["oracle_breaker:BTC"].state == "open"
    result = console.reset_breaker(session, "oracle_breaker:BTC", "checked the feeds")
    assert result.outcome == "ok"
    status = gate.breaker_states()["oracle_breaker:BTC"]
    assert status.state == "closed" and status.reason == "reset by alice: checked the feeds"
    assert console.reset_breaker(session, "oracle_breaker:BTC").outcome == "noop"
    assert [(r.action, r.target, r.outcome) for r in audit(db)][1:] == [
        ("reset_breaker", "nope:BTC", "refused"), ("reset_breaker", "oracle_breaker:BTC", "ok"),
        ("reset_breaker", "oracle_breaker:BTC", "noop")]


def test_no_desk_refuses_trading_actions(users_file, db):
    console = AdminConsole(users_file=str(users_file), db=db, now=Clock(),
                           hedge_section=HedgeSectionConfig())
    session = login(console)
    for result in (console.pause_trading(session), console.flatten(session),
                   console.reset_breaker(session, "daily_loss_limit")):
        assert result.outcome == "refused" and "not running" in result.message


# --------------------------------------------------------------------------- parameters


def test_proposer_cannot_approve_and_another_user_applies_it_live(console, db, node):
    gate = node.desk.gate
    alice, bob = login(console, "alice"), login(console, "bob")
    before = gate.config.max_daily_loss_fraction
    assert console.propose(alice, "safety.max_daily_loss_fraction", "0.03", "calmer").ok
    (proposal,) = console.pending()
    refused = console.approve(alice, proposal.id)
    assert refused.outcome == "refused" and "cannot approve their own" in refused.message
    assert gate.config.max_daily_loss_fraction == before

    result = console.approve(bob, proposal.id)
    assert result.outcome == "applied"
    assert gate.config.max_daily_loss_fraction == 0.03
    assert console.proposals[proposal.id].status == "applied"
    assert console.proposals[proposal.id].approver == "bob"
    assert console.approve(bob, proposal.id).outcome == "refused"  # not pending any more
    rows = [(r.user, r.action, r.outcome) for r in audit(db)]
    assert rows[2:] == [("alice", "propose", "ok"), ("alice", "approve", "refused"),
                        ("bob", "approve", "applied"), ("bob", "approve", "refused")]
    assert "not persisted" in audit(db)[4].detail


def test_heartbeat_timeout_applies_to_the_dead_mans_switch(console, node):
    alice, bob = login(console, "alice"), login(console, "bob")
    console.propose(alice, "hedge.heartbeat_timeout_s", "600", "shorter watch")
    assert console.approve(bob, "P1").outcome == "applied"
    gate = node.desk.gate
    assert gate.config.heartbeat_timeout_s == 600.0
    assert gate.dead_mans_switch.timeout_s == 600.0
    gate.dead_mans_switch.heartbeat(T0)
    assert gate.seconds_left(T0 + 100) == 500.0


def test_a_setting_the_desk_cannot_change_live_is_approved_for_the_next_start(console, db, node):
    alice, bob = login(console, "alice"), login(console, "bob")
    leverage = node.desk.engine.state.leverage
    assert console.propose(bob, "hedge.leverage", "20", "less risk").ok
    result = console.approve(alice, "P1")
    assert result.outcome == "deferred" and result.ok
    assert node.desk.engine.state.leverage == leverage  # the running desk is unchanged
    detail = audit(db)[-1].detail
    assert "approved, applies at next start" in detail and "[hedge] leverage = 20" in detail
    assert console.proposals["P1"].status == "deferred"


@pytest.mark.parametrize("name, value, why", [
    ("safety.max_open_orders", "5", "cannot be changed here"),
    ("hedge.leverage", "lots", "is not a number"),
    ("hedge.leverage", "nan", "finite number"),
    ("safety.max_daily_loss_fraction", "2", "<= 1"),
    ("hedge.leverage", "300", "leverage"),  # leaves no margin above maintenance
])
def test_bad_proposals_are_refused_and_recorded(console, db, name, value, why):
    alice = login(console)
    result = console.propose(alice, name, value, "because")
    assert result.outcome == "refused" and why in result.message
    assert console.proposals == {}
    assert audit(db)[-1][1:4] == ("alice", "propose", name)


def test_a_proposal_needs_a_reason(console):
    assert console.propose(login(console), "hedge.leverage", "20", "  ").outcome == "refused"


def test_parameters_name_real_settings():
    from models.safety import SafetyConfig

    for p in PARAMETERS.values():
        holder = HedgeSectionConfig if p.section == "hedge" else SafetyConfig
        assert p.key in {f.name for f in dataclasses.fields(holder)}, p.name
        if p.live:  # the gate must read it at every check: a SafetyConfig field
            assert p.key in {f.name for f in dataclasses.fields(SafetyConfig)}, p.name


# --------------------------------------------------------------------------- publishing


@pytest.fixture(scope="module")
def publisher(tmp_path_factory):
    from dataflows.chain.terminal import build_publisher

    tmp = tmp_path_factory.mktemp("chain")
    con = duckdb.connect(str(tmp / "chain.duckdb"))
    pub = build_publisher(ChainConfig(pause_file=str(tmp / "chain.pause")), con)
    yield pub
    pub.close(close_store=True)
    con.close()


def test_pause_and_resume_publishing_through_the_pause_file(users_file, db, publisher):
    console = AdminConsole(users_file=str(users_file), db=db, now=Clock(),
                           hedge_section=HedgeSectionConfig(), publisher=publisher)
    flag = publisher.settings.pause_file
    session = login(console)
    assert console.pause_publishing(session, "bad prices").outcome == "ok"
    assert open(flag).read() == "off-chain\n"  # as `hedgeflow pause` writes: not the contract
    publisher.on_tick(T0)
    assert publisher.paused and not publisher.chain_paused
    assert console.pause_publishing(session).outcome == "noop"
    assert console.resume_publishing(session).outcome == "ok"
    assert not os.path.exists(flag)
    publisher.on_tick(T0 + 1)
    assert not publisher.paused
    assert console.resume_publishing(session).outcome == "noop"
    assert [(r.action, r.outcome) for r in audit(db)][1:] == [
        ("pause_publishing", "ok"), ("pause_publishing", "noop"),
        ("resume_publishing", "ok"), ("resume_publishing", "noop")]


def test_audit_write_failure_is_reported_not_hidden(users_file, tmp_path, node):
    con = duckdb.connect(str(tmp_path / "x.duckdb"))
    create_schema(con)
    console = AdminConsole(users_file=str(users_file), db=con, now=Clock(),
                           hedge_section=HedgeSectionConfig(), node=node)
    session = login(console)
    con.close()
    result = console.pause_trading(session)
    assert not result.recorded and "NOT recorded in the audit table" in result.message
    assert not math.isnan(T0)
