"""Fixtures for the browser suite: a real ``hedgeflow run`` process and Debian's headless Chromium.

``playwright install`` cannot download here (DESIGN, pitfalls): Playwright drives the Debian
``chromium`` package at /usr/bin/chromium. The suite is skipped, with the reason, only when that
binary is missing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "artifacts" / "browser"
RUN_DURATION_S = 60  # the run stops itself by then even if the test never sends SIGINT
STARTUP_TIMEOUT_S = 45.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float, stderr_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"hedgeflow run exited with {proc.returncode} before serving port {port}:\n"
                + stderr_path.read_text(errors="replace")[-4000:]
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(
        f"hedgeflow run did not accept connections on port {port} within {timeout_s:.0f} s:\n"
        + stderr_path.read_text(errors="replace")[-4000:]
    )


@dataclass
class HedgeflowRun:
    proc: subprocess.Popen
    port: int
    db_path: Path
    stdout_path: Path
    stderr_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGINT (as Ctrl-C would), then the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout_s)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@contextlib.contextmanager
def _hedgeflow_run(tmp: Path, extra_env: dict[str, str] | None = None):
    """``hedgeflow run`` in ``tmp`` (its working directory) with ``extra_env`` added, stopped with
    SIGINT on exit."""
    port = free_port()
    env = dict(os.environ)
    env.pop("HEDGEFLOW_CONFIG", None)  # the defaults, whatever the caller's shell has set
    env["HEDGEFLOW_SIMULATOR__PORT"] = "0"
    env["HEDGEFLOW_API__PORT"] = "0"  # the API server picks a free port too
    env.update(extra_env or {})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    stdout_path, stderr_path = tmp / "stdout.txt", tmp / "stderr.txt"
    db_path = tmp / "run.duckdb"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "dataflows.cli", "run",
                "--duration", str(RUN_DURATION_S), "--port", str(port), "--db", str(db_path),
            ],
            cwd=tmp,  # no ./hedgeflow.toml of the checkout is picked up
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    run = HedgeflowRun(proc, port, db_path, stdout_path, stderr_path)
    try:
        wait_for_port(port, proc, STARTUP_TIMEOUT_S, stderr_path)
        yield run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def hedgeflow_run(tmp_path_factory):
    """``hedgeflow run`` with its simulator on a free port and the dashboards on another."""
    with _hedgeflow_run(tmp_path_factory.mktemp("hedgeflow-run")) as run:
        yield run


@pytest.fixture(scope="module")
def hedgeflow_run_factory(tmp_path_factory):
    """``start(extra_env=None, tmp=None) -> HedgeflowRun``: ``hedgeflow run`` with more
    environment (``HEDGEFLOW_ADMIN__USERS_FILE``, ...), in ``tmp`` (a fresh directory by default);
    every run started is stopped at the end of the module."""
    with contextlib.ExitStack() as stack:
        def start(extra_env: dict[str, str] | None = None, tmp: Path | None = None) -> HedgeflowRun:
            tmp = tmp or tmp_path_factory.mktemp("hedgeflow-run")
            return stack.enter_context(_hedgeflow_run(tmp, extra_env))

        yield start


@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (make chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def browser_page(chromium, name: str, *, width: int = 1280, height: int = 900,
                 settle_s: float = 0.5):
    """A new page in its own browser context: yields ``(page, errors)``, ``errors`` the console
    errors and uncaught page errors seen so far (a list that grows). On leaving, whatever
    happened, a screenshot goes to artifacts/browser/<name>.png (after ``settle_s`` for the charts
    to draw; a failing screenshot must not hide the failure before it) and the context closes.
    After a body that passed, no error may have been seen and the screenshot must exist."""
    context = chromium.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(f"console: {msg.text} ({msg.location})")
            if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"page: {exc}"))
    shot = ARTIFACTS / f"{name}.png"
    shot.unlink(missing_ok=True)
    try:
        yield page, errors
    finally:
        with contextlib.suppress(Exception):
            time.sleep(settle_s)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
        context.close()
    assert errors == [], errors
    assert shot.is_file() and shot.stat().st_size > 0, f"no screenshot at {shot}"
