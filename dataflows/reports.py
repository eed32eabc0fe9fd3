"""Reports: the parameterized notebooks of ``notebooks/``, executed and exported to HTML (and PDF).

A report is one notebook whose first code cell is tagged ``parameters`` and holds plain
assignments of literal defaults (papermill's convention). ``run_report`` reads the notebook,
checks the given parameters against those defaults (a value takes its default's type), injects
them in a new cell tagged ``injected-parameters`` right after the parameters cell (as papermill
does, so the notebook's defaults stay visible), executes every code cell in a fresh Python kernel
started in the notebook's folder, and writes one self-contained HTML file; with ``pdf=True``
headless Chromium prints that file to PDF.

Execution speaks to the kernel through ``jupyter_client`` (the library nbval uses) and the HTML is
rendered here with ``markdown-it-py`` and Pygments, because nbclient and nbconvert are not
dependencies of hedgeflow. Every mistake a user can make (an unknown report, an unknown
parameter, a value of the wrong type, an output file that cannot be written, a cell that fails)
raises ``ReportError`` saying what was wrong.
"""

from __future__ import annotations

import ast
import html
import os
import queue
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat

from models.errors import HedgeflowError

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
CHROMIUM = "/usr/bin/chromium"
CELL_TIMEOUT_S = 300.0
PDF_TIMEOUT_S = 120.0
# Time Chromium lets the page's scripts (Bokeh's plots) run before it prints.
PDF_SCRIPT_BUDGET_MS = 10_000


class ReportError(HedgeflowError):
    """A report could not be made; the message says why and what to do."""


@dataclass(frozen=True)
class Report:
    """One report: its name on the command line, its notebook file in ``notebooks/`` and what it
    shows, in one line."""

    name: str
    notebook: str
    description: str

    @property
    def path(self) -> Path:
        return NOTEBOOKS_DIR / self.notebook


REPORTS: dict[str, Report] = {r.name: r for r in (
    Report("oracle-study", "oracle_study.ipynb",
           "the robust oracle against the median under manipulation scenarios"),
    Report("volatility-surface", "volatility_surface.ipynb",
           "SSVI/eSSVI surface of the recorded Deribit options: smiles, ATM term structure, arbitrage"),
    Report("premium-backtest", "premium_backtest.ipynb",
           "the premium tiers' puts sold through BTC history and settled: loss ratio, margin"),
    Report("hedge-backtest", "hedge_backtest.ipynb",
           "the hedge desk run through BTC history: equity curve, LTV and the six KPIs"),
    Report("data-quality", "data_quality.ipynb",
           "a recorded capture replayed into DuckDB: completeness, gaps, quarantine by reason"),
)}


# --------------------------------------------------------------------------- parameters


def _parameters_cell_index(nb) -> int:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return i
    raise ReportError("the notebook has no code cell tagged 'parameters'")


def read_notebook(report: Report):
    try:
        return nbformat.read(report.path, as_version=4)
    except FileNotFoundError:
        raise ReportError(f"the notebook of report {report.name!r} is missing: {report.path}") from None


def notebook_parameters(nb) -> dict[str, object]:
    """The defaults of the ``parameters`` cell: ``NAME = literal`` lines, in order."""
    source = nb.cells[_parameters_cell_index(nb)].source
    defaults: dict[str, object] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            try:
                defaults[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue  # a computed value is not a parameter one can set
    return defaults


def get_report(name: str) -> Report:
    try:
        return REPORTS[name]
    except KeyError:
        raise ReportError(f"unknown report {name!r}; the reports are: {', '.join(REPORTS)} "
                          "(see `hedgeflow report --list`)") from None


def list_reports() -> list[tuple[Report, dict[str, object]]]:
    """Every report with its parameters' defaults, in registry order."""
    return [(r, notebook_parameters(read_notebook(r))) for r in REPORTS.values()]


def _convert(name: str, text: str, default: object) -> object:
    kind = type(default)
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ReportError(f"parameter {name} takes true or false, got {text!r}")
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise ReportError(f"parameter {name} takes {'an integer' if kind is int else 'a number'},"
                              f" got {text!r}") from None
    if kind is str or default is None:
        return text
    try:  # lists, tuples, dicts: a Python literal of the same type
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = None
    if type(value) is not kind:
        raise ReportError(f"parameter {name} takes a {kind.__name__} literal like {default!r}, "
                          f"got {text!r}")
    return value


def parse_params(pairs: Sequence[str], defaults: Mapping[str, object]) -> dict[str, object]:
    """``key=value`` strings to parameter values, each of its default's type."""
    params: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ReportError(f"--param takes key=value, got {pair!r}")
        if key not in defaults:
            known = ", ".join(defaults) or "none"
            raise ReportError(f"unknown parameter {key!r}; this report's parameters are: {known}")
        params[key] = _convert(key, text, defaults[key])
    return params


def inject_parameters(nb, params: Mapping[str, object]):
    """A copy of ``nb`` with a cell tagged ``injected-parameters`` after the parameters cell."""
    nb = nbformat.from_dict(nb)  # a deep copy
    if not params:
        return nb
    lines = ["# Parameters", *(f"{key} = {value!r}" for key, value in params.items())]
    cell = nbformat.v4.new_code_cell("\n".join(lines), metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(_parameters_cell_index(nb) + 1, cell)
    return nb


# --------------------------------------------------------------------------- execution


def _cell_outputs(client, msg_id: str, timeout_s: float, cell_number: int) -> list:
    outputs: list = []
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ReportError(f"cell {cell_number} ran longer than {timeout_s:g} s")
        try:
            msg = client.get_iopub_msg(timeout=remaining)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "status" and content["execution_state"] == "idle":
            return outputs
        if kind == "clear_output":
            outputs.clear()
        elif kind in ("stream", "display_data", "execute_result", "error"):
            outputs.append(nbformat.v4.output_from_msg(msg))


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def execute_notebook(nb, cwd: Path, *, timeout_s: float = CELL_TIMEOUT_S,
                     progress: Callable[[int, int], None] | None = None):
    """Run every code cell of ``nb`` in order in a fresh kernel started in ``cwd``, storing the
    outputs in the cells; ``progress(i, n)`` after each cell. A cell that raises stops the run
    with ``ReportError`` naming the cell and the exception."""
    from jupyter_client.manager import KernelManager

    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    # Unix sockets in a private (0700) folder rather than loopback TCP: no other user of the
    # machine can reach the kernel.
    with tempfile.TemporaryDirectory(prefix="hedgeflow-kernel-") as sockets:
        kernel = KernelManager(kernel_name="python3", transport="ipc",
                               ip=str(Path(sockets) / "kernel"))
        kernel.start_kernel(cwd=str(cwd))
        try:
            client = kernel.client()
            client.start_channels()
            try:
                client.wait_for_ready(timeout=60)
                _run_cells(client, code_cells, timeout_s, progress)
            finally:
                client.stop_channels()
        finally:
            kernel.shutdown_kernel(now=True)
    return nb


def _run_cells(client, code_cells: list, timeout_s: float, progress) -> None:
    for i, cell in enumerate(code_cells, start=1):
        msg_id = client.execute(cell.source, store_history=True, allow_stdin=False)
        cell.outputs = _cell_outputs(client, msg_id, timeout_s, i)
        cell.execution_count = i
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if errors:
            raise ReportError(f"cell {i} of {len(code_cells)} failed: {errors[0].ename}: "
                              f"{_strip_ansi(errors[0].evalue)}")
        if progress is not None:
            progress(i, len(code_cells))


# --------------------------------------------------------------------------- HTML


_PAGE_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1000px;
       margin: 2em auto; padding: 0 1em; color: #1d1d1f; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #d0d0d0; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
pre.output { background: #fff; border-left: 3px solid #4c78a8; }
pre.error { background: #fff0f0; border-left: 3px solid #c0392b; }
details.code { margin: 0.4em 0; }
details.code summary { cursor: pointer; color: #777; font-size: 0.85em; }
div.parameters { background: #eef4fb; padding: 0.5em 1em; border-radius: 4px; }
footer { margin-top: 3em; color: #888; font-size: 0.8em; }
@media print { details.code { display: none; } pre { font-size: 0.62em; overflow: visible; } }
"""


def _markdown(text: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable("table").render(text)


def _output_html(output) -> str:
    kind = output.output_type
    if kind == "stream":
        return f'<pre class="output">{html.escape(output.text)}</pre>'
    if kind == "error":
        trace = _strip_ansi("\n".join(output.traceback))
        return f'<pre class="error">{html.escape(trace)}</pre>'
    data = output.get("data", {})
    if "text/html" in data:
        return data["text/html"]
    if "image/svg+xml" in data:
        return data["image/svg+xml"]
    if "image/png" in data:
        return f'<img src="data:image/png;base64,{data["image/png"]}">'
    if "application/javascript" in data:
        return f"<script>{data['application/javascript']}</script>"
    if "text/markdown" in data:
        return _markdown(data["text/markdown"])
    if "text/plain" in data:
        return f'<pre class="output">{html.escape(data["text/plain"])}</pre>'
    return ""


def export_html(nb, title: str) -> str:
    """One HTML page of an executed notebook: markdown as text, code folded (and left out of
    print), outputs as the kernel made them (Bokeh plots need their extension cell's scripts)."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    formatter = HtmlFormatter(cssclass="highlight")
    parts = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append(_markdown(cell.source))
            continue
        if cell.cell_type != "code":
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:
            parts.append('<div class="parameters"><strong>Parameters set for this report</strong>'
                         f'{highlight(cell.source, PythonLexer(), formatter)}</div>')
        elif cell.source.strip():
            parts.append('<details class="code"><summary>code</summary>'
                         f'{highlight(cell.source, PythonLexer(), formatter)}</details>')
        parts.extend(_output_html(o) for o in cell.get("outputs", []))
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title>"
        f"<style>{_PAGE_CSS}{formatter.get_style_defs('.highlight')}</style></head>\n<body>\n"
        + "\n".join(parts)
        + f"\n<footer>hedgeflow report {html.escape(title)}</footer>\n</body></html>\n"
    )


def print_pdf(html_path: Path, pdf_path: Path, *, chromium: str = CHROMIUM,
              timeout_s: float = PDF_TIMEOUT_S) -> None:
    """Print ``html_path`` to ``pdf_path`` with headless Chromium."""
    if not Path(chromium).is_file():
        raise ReportError(f"--pdf needs Chromium at {chromium}; install Debian's chromium package")
    with tempfile.TemporaryDirectory(prefix="hedgeflow-chromium-") as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
               f"--user-data-dir={profile}", "--no-pdf-header-footer",
               f"--virtual-time-budget={PDF_SCRIPT_BUDGET_MS}",
               f"--print-to-pdf={pdf_path}", Path(html_path).resolve().as_uri()]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ReportError(f"Chromium did not print the PDF within {timeout_s:g} s") from None
    if done.returncode != 0 or not pdf_path.is_file() or pdf_path.stat().st_size == 0:
        tail = (done.stderr or "").strip().splitlines()[-3:]
        raise ReportError(f"Chromium could not print {pdf_path}: exit {done.returncode}; "
                          + " | ".join(tail))


# --------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class ReportRun:
    """What ``run_report`` wrote: the HTML (and PDF) path, the parameters set, cells run, and
    the seconds it took."""

    html_path: Path
    pdf_path: Path | None
    params: dict[str, object]
    n_cells: int
    elapsed_s: float


def _check_writable(path: Path) -> None:
    folder = path.parent
    if not folder.is_dir():
        raise ReportError(f"cannot write {path}: the folder {folder} does not exist")
    if path.is_dir():
        raise ReportError(f"cannot write {path}: it is a folder; give a file name ending .html")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ReportError(f"cannot write {path}: permission denied; choose another --out")


def _stderr_progress(i: int, n: int) -> None:
    # One line rewritten in place on a terminal; a line per cell in a log.
    ending = "\n" if i == n or not sys.stderr.isatty() else ""
    print(f"\rcells executed {i}/{n}", end=ending, file=sys.stderr, flush=True)


def run_report(name: str, out: str | os.PathLike, params: Sequence[str] | Mapping = (), *,
               pdf: bool = False, progress: Callable[[int, int], None] | None = _stderr_progress,
               chromium: str = CHROMIUM) -> ReportRun:
    """Execute report ``name`` with ``params`` (``key=value`` strings, or a mapping of names to
    values checked the same way) and write ``out`` (HTML) and, with ``pdf``, ``out`` with the
    suffix ``.pdf``."""
    started = time.monotonic()
    report = get_report(name)
    html_path = Path(out).expanduser()
    if html_path.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"--out {html_path}: give a file name ending .html")
    html_path = html_path.resolve()
    _check_writable(html_path)
    pdf_path = html_path.with_suffix(".pdf") if pdf else None
    if pdf_path is not None:
        _check_writable(pdf_path)
        if not Path(chromium).is_file():
            raise ReportError(f"--pdf needs Chromium at {chromium}; install Debian's chromium package")
    nb = read_notebook(report)
    defaults = notebook_parameters(nb)
    if isinstance(params, Mapping):
        params = [f"{k}={v}" for k, v in params.items()]
    values = parse_params(params, defaults)
    nb = execute_notebook(inject_parameters(nb, values), report.path.parent, progress=progress)
    page = export_html(nb, report.name)
    try:
        html_path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot write {html_path}: {exc.strerror}") from None
    if pdf_path is not None:
        print_pdf(html_path, pdf_path, chromium=chromium)
    n_cells = sum(1 for c in nb.cells if c.cell_type == "code")
    return ReportRun(html_path, pdf_path, values, n_cells, time.monotonic() - started)


def format_report_list() -> str:
    """``hedgeflow report --list``: each report, what it shows, its parameters and defaults."""
    lines = []
    for report, defaults in list_reports():
        lines.append(f"{report.name:<20} {report.description}")
        for key, value in defaults.items():
            lines.append(f"{'':<22}--param {key}={value}")
    return "\n".join(lines)
