"""Reports: the registry of parameterized notebooks, parameter parsing and injection, execution
in a real kernel, HTML export (and PDF through Chromium when it is installed), and the CLI's
errors."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from dataflows.cli import main
from dataflows.reports import (
    CHROMIUM,
    REPORTS,
    ReportError,
    execute_notebook,
    export_html,
    inject_parameters,
    list_reports,
    notebook_parameters,
    parse_params,
    read_notebook,
    run_report,
)

HAVE_CHROMIUM = Path(CHROMIUM).is_file()


def test_every_report_has_its_notebook_with_a_first_cell_of_parameters():
    listed = list_reports()
    assert [r.name for r, _ in listed] == list(REPORTS)
    assert {r.notebook for r, _ in listed} == {
        "oracle_study.ipynb", "volatility_surface.ipynb", "premium_backtest.ipynb",
        "hedge_backtest.ipynb", "data_quality.ipynb"}
    for report, defaults in listed:
        nb = read_notebook(report)
        first_code = next(c for c in nb.cells if c.cell_type == "code")
        assert "parameters" in first_code.metadata.get("tags", []), report.name
        assert defaults, report.name
        assert report.description and "\n" not in report.description


def test_parameters_are_the_literal_assignments_of_the_parameters_cell():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# t"),
                nbformat.v4.new_code_cell("A = 1\nB = 'x'  # a comment\nC = A + 1\nD = [1.0, 2.0]\n",
                                          metadata={"tags": ["parameters"]})]
    assert notebook_parameters(nb) == {"A": 1, "B": "x", "D": [1.0, 2.0]}
    nb.cells[1].metadata["tags"] = []
    with pytest.raises(ReportError, match="no code cell tagged 'parameters'"):
        notebook_parameters(nb)


def test_params_take_the_type_of_their_default():
    defaults = {"N": 3, "X": 1.5, "FLAG": True, "NAME": "BTC", "DAYS": [1.0, 3.0]}
    got = parse_params(["N=7", "X=2", "FLAG=no", "NAME=ETH", "DAYS=[2.0, 5.0]", "NAME=a=b"], defaults)
    assert got == {"N": 7, "X": 2.0, "FLAG": False, "NAME": "a=b", "DAYS": [2.0, 5.0]}
    assert type(got["X"]) is float
    for bad, message in [
        (["N=seven"], "parameter N takes an integer, got 'seven'"),
        (["X=abc"], "parameter X takes a number"),
        (["FLAG=maybe"], "parameter FLAG takes true or false"),
        (["DAYS=3"], "parameter DAYS takes a list literal"),
        (["SPEED=1"], "unknown parameter 'SPEED'; this report's parameters are: N, X, FLAG, NAME, DAYS"),
        (["N"], "--param takes key=value, got 'N'"),
        (["=1"], "--param takes key=value"),
    ]:
        with pytest.raises(ReportError, match=message.replace("[", r"\[").replace("(", r"\(")):
            parse_params(bad, defaults)


def test_injected_parameters_follow_the_parameters_cell_and_leave_the_original_alone():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# t"),
                nbformat.v4.new_code_cell("A = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print(A)")]
    out = inject_parameters(nb, {"A": 5, "S": "it's"})
    assert len(nb.cells) == 3 and len(out.cells) == 4
    injected = out.cells[2]
    assert injected.metadata["tags"] == ["injected-parameters"]
    namespace: dict = {}
    exec(injected.source, namespace)  # the values round-trip through repr
    assert (namespace["A"], namespace["S"]) == (5, "it's")
    assert inject_parameters(nb, {}).cells == nb.cells


def test_html_export_escapes_text_outputs_and_renders_markdown_tables():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("## Title\n\n| a | b |\n|---|---|\n| 1 | 2 |"),
        nbformat.v4.new_code_cell("print('<script>')", outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="<script>alert(1)</script>\n")]),
        nbformat.v4.new_code_cell("X = 2", metadata={"tags": ["injected-parameters"]}),
    ]
    page = export_html(nb, "demo")
    assert "<h2>Title</h2>" in page and "<td>1</td>" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert "Parameters set for this report" in page


def test_a_failing_cell_stops_the_run_with_its_number_and_error(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os\nprint(os.getcwd())"),
                nbformat.v4.new_code_cell("raise ValueError('bad input here')"),
                nbformat.v4.new_code_cell("print('never')")]
    seen = []
    with pytest.raises(ReportError, match=r"cell 2 of 3 failed: ValueError: bad input here"):
        execute_notebook(nb, tmp_path, progress=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 3)]
    assert nb.cells[0].outputs[0].text.strip() == str(tmp_path)  # the kernel ran in cwd
    assert nb.cells[2].outputs == []


@pytest.fixture(scope="module")
def oracle_report(tmp_path_factory):
    """The oracle study, run for real once with a shorter attack (and printed to PDF when
    Chromium is installed)."""
    out = tmp_path_factory.mktemp("report") / "oracle.html"
    progress = []
    done = run_report("oracle-study", out, ["EVENT_S=20", "PUMP_PCT=30"], pdf=HAVE_CHROMIUM,
                      progress=lambda i, n: progress.append((i, n)))
    return done, progress


def test_a_report_runs_its_notebook_with_the_parameters_and_writes_html(oracle_report):
    done, progress = oracle_report
    assert done.params == {"EVENT_S": 20, "PUMP_PCT": 30.0}
    assert progress[-1] == (done.n_cells, done.n_cells) and len(progress) == done.n_cells
    page = done.html_path.read_text(encoding="utf-8")
    text = re.sub(r"<[^>]+>", "", page)  # highlighted code is split into spans
    assert "Oracle study: aggregation under manipulation" in text
    assert "EVENT_S = 20" in text and "PUMP_PCT = 30.0" in text
    # the notebook computed with the injected values: 60 s warm-up, 20 s attack, 30 s tail
    assert "110 s of market" in page and "checks passed" in page
    assert "Bokeh" in page  # the plots' scripts are inline: the file stands alone


@pytest.mark.skipif(not HAVE_CHROMIUM, reason=f"no Chromium at {CHROMIUM}")
def test_a_report_prints_to_pdf_with_chromium(oracle_report):
    done, _ = oracle_report
    assert done.pdf_path == done.html_path.with_suffix(".pdf")
    data = done.pdf_path.read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 20_000


def test_report_list_names_each_report_with_its_parameters(capsys):
    assert main(["report", "--list"]) == 0
    out = capsys.readouterr().out
    for name in REPORTS:
        assert name in out
    assert "--param PUMP_PCT=20.0" in out and "--param START_UTC=2022-01-15" in out


@pytest.mark.parametrize("argv, message", [
    (["report", "no-such-report", "--out", "{tmp}/r.html"], "unknown report 'no-such-report'"),
    (["report", "oracle-study", "--out", "{tmp}/r.html", "--param", "SPEED=3"],
     "unknown parameter 'SPEED'"),
    (["report", "oracle-study", "--out", "{tmp}/r.html", "--param", "SEED=abc"],
     "parameter SEED takes an integer"),
    (["report", "oracle-study", "--out", "{tmp}/missing/r.html"], "the folder"),
    (["report", "oracle-study", "--out", "{tmp}/r.txt"], "give a file name ending .html"),
    (["report", "oracle-study", "--out", "{tmp}"], "give a file name ending .html"),
    (["report", "oracle-study"], "give a report and an output file"),
])
def test_report_mistakes_are_clear_errors_without_a_traceback(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("hedgeflow: error: ") and message in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written
