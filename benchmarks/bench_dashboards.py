"""The dashboards under load: ten browser sessions at 4 Hz on a real ``hedgeflow run``.

Two runs of ``hedgeflow run`` (a subprocess each: simulator at its configured rates, graph,
DuckDB file, Panel server, ``refresh_ms`` = 250 ms, i.e. 4 Hz), one after the other:

- the reference: no browser session;
- the load: SESSIONS headless Chromium sessions (one browser context each) on the oracle page.

In both, a window of SECONDS starts SETTLE_S after the dashboards answer (and, with sessions,
once every session shows both prices). Figures:

- tick-to-screen latency: each page carries a MutationObserver on the oracle cards; every new
  price shown (``data-ts`` of ``.oracle-price``: the oracle price's epoch seconds, stamped by the
  pipeline when it published it) is timed when it reaches the page's DOM, by
  ``performance.now()`` mapped to ``Date.now()``; latency = DOM time - price time (same host, same
  clock). Target: p95 under 500 ms. The reference is the refresh period itself (a price waits up to
  one period for the session's next poll; half a period on average). The oracle publishes about
  one price a second per asset, so a page shows about two new prices a second. The latency is
  split where the page's script first sees the price in a websocket message (a wrapper around
  ``WebSocket``, installed before the page's scripts): before it, the server's session callbacks,
  the socket and the page's main thread; after it, Bokeh updating the DOM.
- throughput: ticks received and committed per second in the window (rows of the tick tables
  whose ``receive_ts`` falls in it, read from the run's DuckDB file after it stopped), against the
  run without sessions. Target: under 10% lower (ratio > 0.90).

    .venv/bin/python benchmarks/bench_dashboards.py [--seconds 30] [--sessions 10]
    .venv/bin/python benchmarks/bench_dashboards.py --soak-minutes 60 [--hold-s 5] [--sample-s 60]

``--soak-minutes M`` instead opens and closes sessions on every page of ``dashboards.app.PAGES``
for M minutes against one run and prints the run's RSS every minute (issue 8: memory stays flat
over an hour with sessions opening and closing). tests/integration/test_dashboard_sessions.py is
the short, object-counting version of it that CI runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataflows.config import Config  # noqa: E402
from dataflows.ledger import ROW_TABLES  # noqa: E402
from storage.queries import connect_readonly  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [  # as tests/browser/conftest.py
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
REFRESH_MS = 250  # 4 Hz
SETTLE_S = 10.0  # after the dashboards answer: feeds connected, option chain planned, fits begun
STARTUP_TIMEOUT_S = 60.0
FIRST_PRICE_TIMEOUT_MS = 60_000
TICK_TABLES = tuple(t for t in ROW_TABLES if t != "gaps")
LATENCY_TARGET_MS = 500.0
THROUGHPUT_TARGET_RATIO = 0.90

# In the page: find the shadow roots holding the oracle cards, observe them, and record every
# (asset, price ts) the first time the DOM shows it, with the time it did. Prices already shown
# when the observers start are marked seen, not timed.
OBSERVE_JS = """() => {
  const roots = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.shadowRoot) {
        if (el.shadowRoot.querySelector('.oracle-price[data-ts]')) roots.push(el.shadowRoot);
        walk(el.shadowRoot);
      }
    }
  };
  walk(document);
  const offsetMs = Date.now() - performance.now();
  const seen = new Set();
  window.__shown = [];
  const scan = (root, record) => {
    const nowMs = offsetMs + performance.now();
    for (const el of root.querySelectorAll('.oracle-price[data-ts]')) {
      const key = el.dataset.asset + '@' + el.dataset.ts;
      if (seen.has(key)) continue;
      seen.add(key);
      if (record) window.__shown.push([el.dataset.asset, parseFloat(el.dataset.ts), nowMs]);
    }
  };
  for (const root of roots) {
    scan(root, false);
    new MutationObserver(() => scan(root, true)).observe(
      root, {childList: true, subtree: true, characterData: true, attributes: true});
  }
  return roots.length;
}"""


# Before the page's own scripts: time every websocket message carrying an oracle card, as the
# page's main thread receives it (before Bokeh handles it), by the ``data-ts`` values in it.
ARRIVALS_JS = """(() => {
  const offsetMs = Date.now() - performance.now();
  const dataTs = /data-ts=(?:\\\\*"|&quot;)([0-9.]+)/g;  // Panel sends the HTML escaped
  window.__arrived = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (event) => {
        if (typeof event.data !== 'string') return;
        const nowMs = offsetMs + performance.now();
        for (const m of event.data.matchAll(dataTs)) {
          window.__arrived.push([parseFloat(m[1]), nowMs]);
        }
      });
    }
  };
})();"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Run:
    """One ``hedgeflow run`` subprocess."""

    proc: subprocess.Popen
    port: int
    db_path: Path
    stdout_path: Path
    stderr_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> dict:
        """SIGINT (a clean shutdown), then the run's final counts."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        status = self.proc.wait(timeout=60)
        lines = self.stdout_path.read_text().strip().splitlines()
        if status != 0 or not lines:
            sys.exit(f"hedgeflow run exited with {status}:\n"
                     + self.stderr_path.read_text(errors="replace")[-4000:])
        return json.loads(lines[-1])


def start_run(tmp: Path, name: str, duration_cap_s: float, rates: dict[str, float]) -> Run:
    port = free_port()
    env = dict(os.environ)
    env.pop("HEDGEFLOW_CONFIG", None)  # the defaults, whatever the caller's shell has set
    env["HEDGEFLOW_SIMULATOR__PORT"] = "0"
    env["HEDGEFLOW_DASHBOARD__REFRESH_MS"] = str(REFRESH_MS)
    if "api" in {f.name for f in dataclasses.fields(Config)}:
        env["HEDGEFLOW_API__PORT"] = "0"  # its fixed default would collide with other runs
    for key, value in rates.items():
        env[f"HEDGEFLOW_SIMULATOR__{key.upper()}"] = str(value)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    db_path = tmp / f"{name}.duckdb"
    stdout_path, stderr_path = tmp / f"{name}.out", tmp / f"{name}.err"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dataflows.cli", "run", "--duration", str(duration_cap_s),
             "--port", str(port), "--db", str(db_path)],
            cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
        )
    run = Run(proc, port, db_path, stdout_path, stderr_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            sys.exit(f"hedgeflow run exited with {proc.returncode} before serving:\n"
                     + stderr_path.read_text(errors="replace")[-4000:])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return run
        except OSError:
            if time.monotonic() > deadline:
                run.stop()
                sys.exit(f"hedgeflow run did not serve port {port} in {STARTUP_TIMEOUT_S:.0f} s")
            time.sleep(0.2)


def ticks_received(db_path: Path, start_s: float, end_s: float) -> int:
    """Rows of the tick tables received in [start_s, end_s) (epoch seconds) and committed."""
    con = connect_readonly(db_path)
    try:
        return sum(
            con.execute(
                f"SELECT count(*) FROM {table} "  # table names: the ledger's fixed set
                "WHERE receive_ts >= to_timestamp(?) AND receive_ts < to_timestamp(?)",
                [start_s, end_s],
            ).fetchone()[0]
            for table in TICK_TABLES
        )
    finally:
        con.close()


def cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def phase(tmp: Path, name: str, seconds: float, n_sessions: int, rates: dict) -> dict:
    """One run: settle, then a window of ``seconds`` with ``n_sessions`` oracle pages open."""
    run = start_run(tmp, name, SETTLE_S + seconds + 120, rates)
    served_at = time.monotonic()
    shown: list[list] = []
    split: list[tuple[float, float]] = []  # per price and page: (ts -> arrival, arrival -> DOM) ms
    pw = browser = None
    try:
        if n_sessions:
            from playwright.sync_api import sync_playwright

            pw = sync_playwright().start()
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=CHROMIUM_ARGS)
            contexts = [browser.new_context(viewport={"width": 1280, "height": 900})
                        for _ in range(n_sessions)]
            for context in contexts:
                context.add_init_script(ARRIVALS_JS)
            pages = [context.new_page() for context in contexts]
            for page in pages:
                page.goto(f"{run.url}/oracle", wait_until="commit", timeout=60_000)
            for page in pages:
                for asset in ("BTC", "ETH"):
                    page.locator(f'.oracle-price[data-asset="{asset}"][data-ts]').wait_for(
                        timeout=FIRST_PRICE_TIMEOUT_MS)
        time.sleep(max(0.0, served_at + SETTLE_S - time.monotonic()))
        if n_sessions:
            observed = [page.evaluate(OBSERVE_JS) for page in pages]
            if min(observed) < 2:
                sys.exit(f"oracle cards not found in every page (roots per page: {observed})")
        cpu0, start_s = cpu_s(run.proc.pid), time.time()
        time.sleep(seconds)
        end_s, cpu1 = time.time(), cpu_s(run.proc.pid)
        if n_sessions:
            for page in pages:
                page_shown = [r for r in page.evaluate("() => window.__shown")
                              if start_s * 1e3 <= r[2] < end_s * 1e3]
                shown += page_shown
                # First arrival of each price's ts in this page, for the shown ones.
                arrived: dict[float, float] = {}
                for ts, at_ms in page.evaluate("() => window.__arrived"):
                    arrived[ts] = min(at_ms, arrived.get(ts, float("inf")))
                first_shown: dict[float, float] = {}
                for _, ts, at_ms in page_shown:
                    first_shown[ts] = min(at_ms, first_shown.get(ts, float("inf")))
                split += [(arrived[ts] - ts * 1e3, at_ms - arrived[ts])
                          for ts, at_ms in first_shown.items() if ts in arrived]
    finally:
        if browser is not None:
            browser.close()
        if pw is not None:
            pw.stop()
        counts = run.stop()
    ticks = ticks_received(run.db_path, start_s, end_s)
    window_s = end_s - start_s
    latency_ms = np.array([r[2] - r[1] * 1e3 for r in shown])
    return {
        "sessions": n_sessions,
        "window_s": window_s,
        "ticks_per_s": ticks / window_s,
        "server_cpu": (cpu1 - cpu0) / window_s,  # seconds of CPU per second (2 cores: up to 2)
        "latency_ms": latency_ms,
        "split_ms": np.array(split).reshape(-1, 2),
        "updates_per_session_s": len(shown) / max(n_sessions, 1) / window_s,
        "pending": counts["total"]["pending"],
        "quarantined": counts["total"]["quarantined"],
    }


def bench(args: argparse.Namespace, rates: dict) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-dashboards-") as tmp:
        reference = phase(Path(tmp), "reference", args.seconds, 0, rates)
        loaded = phase(Path(tmp), "sessions", args.seconds, args.sessions, rates)
    lat = loaded["latency_ms"]
    if lat.size == 0:
        sys.exit("no price reached a page during the window")
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    period = float(REFRESH_MS)
    ratio = loaded["ticks_per_s"] / reference["ticks_per_s"]
    print(f"hedgeflow run, simulator rates {rates or 'as configured'}, refresh {REFRESH_MS} ms, "
          f"{args.seconds:.0f} s windows after {SETTLE_S:.0f} s of settling")
    print(f"tick-to-screen, {args.sessions} sessions: {lat.size} prices shown "
          f"({loaded['updates_per_session_s']:.1f} per session per second)")
    print(f"  p50 {p50:6.0f} ms   (reference: half a refresh period, {period / 2:.0f} ms; "
          f"ratio {p50 / (period / 2):.2f})")
    print(f"  p95 {p95:6.0f} ms   (reference: a refresh period, {period:.0f} ms; "
          f"ratio {p95 / period:.2f}; target < {LATENCY_TARGET_MS:.0f} ms: "
          f"{'met' if p95 < LATENCY_TARGET_MS else 'NOT met'})")
    print(f"  p99 {p99:6.0f} ms   max {lat.max():.0f} ms   min {lat.min():.0f} ms")
    split = loaded["split_ms"]
    if len(split):
        (a50, d50), (a95, d95) = np.percentile(split, [50, 95], axis=0)
        print(f"  of which price -> websocket message in the page: p50 {a50:.0f} ms, p95 {a95:.0f} "
              f"ms; message -> DOM: p50 {d50:.0f} ms, p95 {d95:.0f} ms ({len(split)} prices)")
    print(f"throughput: {loaded['ticks_per_s']:,.0f} ticks/s with {args.sessions} sessions "
          f"against {reference['ticks_per_s']:,.0f} ticks/s without: ratio {ratio:.3f} "
          f"(target > {THROUGHPUT_TARGET_RATIO:.2f}: "
          f"{'met' if ratio > THROUGHPUT_TARGET_RATIO else 'NOT met'})")
    print(f"server CPU: {loaded['server_cpu']:.2f} s/s with sessions, "
          f"{reference['server_cpu']:.2f} s/s without (ratio "
          f"{loaded['server_cpu'] / reference['server_cpu']:.2f})")
    for p in (reference, loaded):
        if p["pending"] or p["quarantined"]:
            print(f"  warning: run with {p['sessions']} sessions ended with "
                  f"{p['pending']} pending, {p['quarantined']} quarantined")


def soak(args: argparse.Namespace, rates: dict) -> None:
    """Open and close a session on every page, again and again; the run's RSS every minute."""
    from playwright.sync_api import sync_playwright

    from dashboards.app import PAGES

    duration_s = args.soak_minutes * 60.0
    with tempfile.TemporaryDirectory(prefix="bench-dashboards-soak-") as tmp:
        run = start_run(Path(tmp), "soak", duration_s + SETTLE_S + 300, rates)
        proc = psutil.Process(run.proc.pid)
        opened = 0
        rows = []
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS)
                time.sleep(SETTLE_S)
                start = time.monotonic()
                next_sample = start
                print(f"soak: {args.soak_minutes:g} min on pages {list(PAGES)}; minute, "
                      "sessions opened, RSS of the run (MiB)", flush=True)
                while True:
                    now = time.monotonic()
                    done = now - start >= duration_s
                    if now >= next_sample or done:
                        rows.append((now - start, opened, proc.memory_info().rss / 2**20))
                        print(f"  {rows[-1][0] / 60:5.1f}  {opened:6d}  {rows[-1][2]:8.1f}",
                              flush=True)
                        next_sample += args.sample_s
                    if done:
                        break
                    context = browser.new_context(viewport={"width": 1280, "height": 900})
                    pages = [context.new_page() for _ in PAGES]
                    for page, path in zip(pages, PAGES):
                        page.goto(f"{run.url}/{path}", wait_until="commit", timeout=60_000)
                    for page in pages:
                        page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0",
                                               polling=200, timeout=60_000)
                    time.sleep(args.hold_s)
                    context.close()
                    opened += len(pages)
                browser.close()
        finally:
            counts = run.stop()
    first, last = rows[0], rows[-1]
    # The first minutes include first-use growth (imports, caches); the slope of the second half
    # is the one that says whether memory keeps growing.
    half = [r for r in rows if r[0] >= rows[-1][0] / 2]
    slope = (np.polyfit([r[1] for r in half], [r[2] for r in half], 1)[0] * 100
             if len(half) >= 3 and half[-1][1] > half[0][1] else float("nan"))
    print(f"soak: {opened} sessions in {last[0] / 60:.1f} min; RSS {first[2]:.0f} -> {last[2]:.0f} "
          f"MiB (max {max(r[2] for r in rows):.0f}); second half: {slope:+.2f} MiB per 100 "
          f"sessions; run ended with {counts['total']['pending']} pending")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="length of each measured window (default 30)")
    parser.add_argument("--sessions", type=int, default=10, help="browser sessions (default 10)")
    parser.add_argument("--quote-rate-hz", type=float,
                        help="simulator quotes per second per symbol and venue (default: config)")
    parser.add_argument("--soak-minutes", type=float,
                        help="instead: open and close sessions for this long, print the RSS")
    parser.add_argument("--hold-s", type=float, default=5.0,
                        help="soak: how long each round of sessions stays open (default 5)")
    parser.add_argument("--sample-s", type=float, default=60.0,
                        help="soak: seconds between RSS samples (default 60)")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is missing: install Debian's chromium (make chromium)")
    rates = {"quote_rate_hz": args.quote_rate_hz} if args.quote_rate_hz else {}
    if args.soak_minutes:
        soak(args, rates)
    else:
        bench(args, rates)


if __name__ == "__main__":
    main()
