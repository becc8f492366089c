"""The report's document (``midtrain.experiment.document``): tables without uninformative columns, a section's
order (main tables, figures, the rest under <details>), figures shown at their size in inches, the banner."""

from __future__ import annotations

import re
from pathlib import Path

from midtrain.experiment.document import Figure, Section, Table, render, render_section
from midtrain.plots import DPI, pyplot, save_png


def test_pruned_drops_empty_columns_and_names_constant_labels_in_the_title():
    t = Table(
        "eval: per op range",
        ["range", "n", "k", "context", "verified pass@1", "hacking rate", "never logged"],
        [["id", 100, 1, "zoo", 0.97, 0.0, None], ["edge", 300, 1, "zoo", 0.18, 0.0, float("nan")]],
    )
    p = t.pruned()
    assert p.title == "eval: per op range (k: 1, context: zoo)"  # counts and names that never change
    assert p.header == ["range", "n", "verified pass@1", "hacking rate"]  # an equal measurement is a finding: kept
    assert p.rows == [["id", 100, 0.97, 0.0], ["edge", 300, 0.18, 0.0]]
    one = Table("one run", ["run", "k", "x"], [["a", 1, None]]).pruned()
    assert one.header == ["run", "k"] and one.title == "one run"  # one row: nothing is constant across rows
    assert t.header[0] == "range" and len(t.rows[0]) == 7  # the original is left alone


def _png(path: Path, inches: float) -> Path:
    fig, ax = pyplot().subplots(figsize=(inches, 1))
    ax.plot([0, 1])
    return save_png(fig, path)


def test_a_section_shows_main_tables_then_figures_then_details(tmp_path):
    main = Table("claims", ["claim", "holds"], [["x", "needs --full"]], main=True)
    detail = Table("per run", ["run", "k", "acc"], [["a", 4, 0.5], ["b", 4, 0.25]])
    fig = Figure(_png(tmp_path / "plots" / "f.png", 5), "a figure")
    extra = Figure(_png(tmp_path / "plots" / "g.png", 3), "a secondary figure", main=False)
    md, ht = render_section(Section("claims", [detail, fig, main, extra]), tmp_path)
    html = "\n".join(ht)
    order = [html.index(s) for s in ("<b>claims</b>", "class='figs'", "<details>", "<b>per run (k: 4)</b>", "a secondary figure")]
    assert order == sorted(order)
    assert "<summary>details: 1 table, 1 figure</summary>" in html and html.count("<img") == 2
    assert "<td class='s'>needs --full</td>" in html and "<td class='n s'>0.5000</td>" in html
    text = "\n".join(md)
    assert "**per run (k: 4)**" in text and "![a figure](plots/f.png)" in text


def test_figures_are_shown_at_their_size_in_inches(tmp_path):
    png = _png(tmp_path / "plots" / "f.png", 5)
    pixels = int.from_bytes(png.read_bytes()[16:20], "big")
    _, ht = render_section(Section("s", [Figure(png, "f")]), tmp_path)
    assert re.search(r"<img alt='f' width='(\d+)'", ht[1]).group(1) == str(pixels * 96 // DPI)


def test_the_banner_heads_and_ends_both_documents(tmp_path):
    md, html = render("t", [Section("s", [Table("x", ["a"], [[1]], main=True)])], tmp_path, banner="QUICK RUN")
    assert md.startswith("# t\n\n> **QUICK RUN**") and md.rstrip().endswith("> **QUICK RUN**")
    assert html.count("<div class='banner'>QUICK RUN</div>") == 2 and "<title>QUICK RUN · t</title>" in html
    plain_md, plain_html = render("t", [], tmp_path)
    assert "QUICK" not in plain_md + plain_html and "class='banner'" not in plain_html
