"""The Safety and admin page of a real ``hedgeflow run``, in headless Chromium.

The run gets its admin users through the environment (HEDGEFLOW_ADMIN__USERS_FILE, a file
written by dataflows.admin_users). In the browser: an action without login is refused and the
audit log says so; the login works; "Pause trading" makes the desk's kill switch show paused
(through the pause file the running desk reads, as ``hedgeflow pause --trading`` does); "Resume
trading" releases it. After SIGINT the database holds the same audit rows. A screenshot is left
in artifacts/browser/admin.png.
"""

from __future__ import annotations


import duckdb
import pytest


from dataflows.admin_users import hash_password, write_users
from tests.browser.conftest import browser_page

pytestmark = pytest.mark.browser

FIRST_STATE_TIMEOUT_MS = 30_000
EFFECT_TIMEOUT_MS = 15_000  # the desk reads the pause file at its next tick (0.25 s), the page
#                             polls every 0.5 s: generous for a loaded machine
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def admin_run(hedgeflow_run_factory, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("admin-run")
    users = tmp / "secrets" / "admin_users.json"
    # Fewer iterations than the default only to keep the test quick; the format is the same.
    write_users(users, {"alice": hash_password(PASSWORD, iterations=50_000)})
    run = hedgeflow_run_factory({"HEDGEFLOW_ADMIN__USERS_FILE": str(users)}, tmp=tmp)
    run.workdir = tmp
    return run


def test_admin_actions_need_a_login_and_take_effect(chromium, admin_run):
    from playwright.sync_api import expect

    pause_file = admin_run.workdir / "data" / "trading.pause"  # [hedge] pause_file, from the run's cwd
    with browser_page(chromium, "admin", width=1280, height=1400) as (page, errors):
        response = page.goto(f"{admin_run.url}/admin", wait_until="load", timeout=30_000)
        assert response is not None and response.ok, response and response.status
        trading = page.locator(".admin-trading")
        expect(trading).to_have_attribute("data-state", "running", timeout=FIRST_STATE_TIMEOUT_MS)
        expect(page.locator(".admin-publishing")).to_have_attribute("data-state", "running")
        expect(page.locator(".admin-dms")).to_be_visible()

        # Without login: refused, nothing paused, and the audit log shows the refusal.
        page.get_by_role("button", name="Pause trading").click()
        expect(page.locator(".admin-result")).to_have_attribute("data-outcome", "refused",
                                                                timeout=EFFECT_TIMEOUT_MS)
        expect(page.locator('.admin-audit-row[data-action="pause_trading"]'
                            '[data-outcome="refused"]')).to_have_count(1, timeout=EFFECT_TIMEOUT_MS)
        assert not pause_file.exists()
        assert trading.get_attribute("data-state") == "running"

        # A wrong password is refused too.
        page.get_by_placeholder("user name").fill("alice")
        page.get_by_placeholder("password").fill("not the password")
        page.get_by_placeholder("password").press("Enter")
        page.get_by_role("button", name="Log in").click()
        expect(page.locator('.admin-audit-row[data-action="login"][data-outcome="refused"]')
               ).to_have_count(1, timeout=EFFECT_TIMEOUT_MS)
        expect(page.locator(".admin-user")).to_have_attribute("data-user", "")

        page.get_by_placeholder("password").fill(PASSWORD)
        page.get_by_placeholder("password").press("Enter")
        page.get_by_role("button", name="Log in").click()
        expect(page.locator(".admin-user")).to_have_attribute("data-user", "alice",
                                                              timeout=EFFECT_TIMEOUT_MS)

        page.get_by_placeholder("reason").fill("browser test")
        page.get_by_placeholder("reason").press("Enter")
        page.get_by_role("button", name="Pause trading").click()
        expect(trading).to_have_attribute("data-state", "paused", timeout=EFFECT_TIMEOUT_MS)
        assert pause_file.is_file()
        expect(trading).to_contain_text("kill switch engaged")

        page.get_by_role("button", name="Resume trading").click()
        expect(trading).to_have_attribute("data-state", "running", timeout=EFFECT_TIMEOUT_MS)
        assert not pause_file.exists()
        expect(page.locator('.admin-audit-row[data-outcome="ok"]')).to_have_count(
            3, timeout=EFFECT_TIMEOUT_MS)  # login, pause, resume
        assert errors == [], errors


def test_the_audit_table_holds_every_attempt_after_the_run(admin_run):
    status = admin_run.stop(timeout_s=30)
    assert status == 0, admin_run.stderr()[-4000:]
    con = duckdb.connect(str(admin_run.db_path), read_only=True)
    try:
        rows = con.execute('SELECT "user", action, outcome FROM audit ORDER BY ts, rowid').fetchall()
        details = " ".join(r[0] for r in con.execute("SELECT detail FROM audit").fetchall())
    finally:
        con.close()
    assert rows == [("", "pause_trading", "refused"), ("", "login", "refused"),
                    ("alice", "login", "ok"), ("alice", "pause_trading", "ok"),
                    ("alice", "resume_trading", "ok")]
    assert PASSWORD not in details and "not the password" not in details
