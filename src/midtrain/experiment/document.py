"""The report's document: tables, figures and sections, rendered as Markdown and as one self-contained HTML page.

A :class:`Section` holds tables and figures. It renders in the order a reader needs them: its main tables (the
claims, the arms), then its figures side by side, then everything else collapsed under ``<details>`` (the
numbers behind the figures, per-run tables). A table carries no column without information (:meth:`Table.pruned`:
a column with no value in any row is dropped; a column of counts or names with one value in every row of a
several-row table, such as a single context, moves into the title as ``header: value``; a measurement that
happens to be equal everywhere stays, being a finding); main tables are shown as given.

HTML: PNGs are base64-embedded (one file to send around) and shown at their size in inches (96 CSS px per inch,
at most the page's width), figures wrap side by side, and tables wider than the page scroll inside their own
box, so the page never scrolls sideways at a laptop's 1280 px. A ``banner``
(a quick run's warning) heads both documents, is repeated at their end, prefixes the HTML title and stays in
view on every screen and printed page.
"""

from __future__ import annotations

import base64
import html
import math
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from midtrain.console import fmt_num
from midtrain.plots import DPI

SHORT_CELL = 16  # characters
NUMBER = re.compile(r"[-+]?(\d[\d,]*)?(\.\d+)?(e[-+]?\d+)?%?")
SCREEN_DPI = 96  # CSS pixels per inch: a figure is shown at its size in inches, as matplotlib drew it


def cell(v: Any) -> str:
    """A table cell: a value by :func:`midtrain.console.fmt_num` (floats to 4 decimals, ints as is); no value (None,
    NaN, ±inf: a metric a run did not produce) is an empty cell, so tables of several runs line up."""
    return fmt_num(None if isinstance(v, float) and not math.isfinite(v) else v, missing="")


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[Any]]
    main: bool = False  # shown above the section's figures as given; otherwise pruned and collapsed below them

    def pruned(self) -> Table:
        """This table without columns that carry no information (module docstring); the first column (what a row
        is) always stays."""
        keep, constant = [0], []
        for j in range(1, len(self.header)):
            cells = [cell(row[j]) if j < len(row) else "" for row in self.rows]
            if not any(cells):
                continue
            labels = not any(isinstance(row[j], float) for row in self.rows if j < len(row))  # counts and names
            if len(self.rows) > 1 and len(set(cells)) == 1 and labels:
                constant.append(f"{cell(self.header[j])}: {cells[0]}")
            else:
                keep.append(j)
        title = f"{self.title} ({', '.join(constant)})" if constant else self.title
        rows = [[row[j] if j < len(row) else None for j in keep] for row in self.rows]
        return replace(self, title=title, header=[self.header[j] for j in keep], rows=rows)

    def markdown(self) -> str:
        esc = lambda s: cell(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        lines = [f"**{self.title}**", "", "| " + " | ".join(map(esc, self.header)) + " |", "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(cell(h))}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(_td(cell(c)) for c in row) + "</tr>" for row in self.rows)
        return (
            f"<p><b>{html.escape(self.title)}</b></p>"
            f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
        )


def _td(text: str) -> str:
    # numbers align right; a short cell (a number, a verdict like "needs --full") never wraps; long text wraps at
    # word boundaries
    kind = ("n " if NUMBER.fullmatch(text) else "") + ("s" if len(text) <= SHORT_CELL else "")
    return f"<td class='{kind.strip()}'>{html.escape(text)}</td>" if kind else f"<td>{html.escape(text)}</td>"


@dataclass
class Figure:
    path: str | Path  # a PNG under the report's directory
    caption: str
    main: bool = True  # shown with the section's figures; otherwise collapsed with its details


@dataclass
class Section:
    title: str
    blocks: list[Table | Figure] = field(default_factory=list)


CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.3em 0 1.2em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;"
    "text-align:left}th{background:#f3f3f3}td.n{text-align:right}"
    "td{overflow-wrap:break-word}td.s{white-space:nowrap}.wide{max-width:100%;overflow-x:auto}"
    ".figs{display:flex;flex-wrap:wrap;gap:.5em 1.5em;align-items:flex-start}"
    "figure{margin:.5em 0;max-width:100%}img{max-width:100%;height:auto;border:1px solid #eee}"
    "figcaption{font-size:12px;color:#555;max-width:40em}"
    "details{margin:.5em 0 1.5em}summary{cursor:pointer;color:#444}"
    # the banner stays in view while scrolling and repeats on every printed page
    ".banner{position:sticky;top:0;z-index:1;background:#b00020;color:#fff;font-weight:bold;padding:.5em 1em}"
    "@media print{.banner{position:fixed;left:0;right:0}body{padding-top:3em}}"
)


def _img(fig: Figure, out: Path) -> tuple[str, str]:
    rel = Path(fig.path).relative_to(out).as_posix()
    png = Path(fig.path).read_bytes()
    width = int.from_bytes(png[16:20], "big") * SCREEN_DPI // DPI  # IHDR: the PNG's width in pixels
    data = base64.b64encode(png).decode("ascii")
    alt = html.escape(fig.caption)
    img = f"<img alt='{alt}' width='{width}' src='data:image/png;base64,{data}'>"
    return f"![{fig.caption}]({rel})\n", f"<figure>{img}<figcaption>{alt}</figcaption></figure>"


def render_section(sec: Section, out: Path) -> tuple[list[str], list[str]]:
    """Markdown and HTML lines of one section: main tables, figures, then the rest under ``<details>``."""
    tables = [b for b in sec.blocks if isinstance(b, Table)]
    figures = [b for b in sec.blocks if isinstance(b, Figure)]
    main = [t for t in tables if t.main]
    detail: list[Table | Figure] = [t.pruned() for t in tables if not t.main] + [f for f in figures if not f.main]
    md, ht = [f"## {sec.title}", ""], [f"<h2>{html.escape(sec.title)}</h2>"]
    for t in main:
        md.append(t.markdown())
        ht.append(t.html())
    shown = [_img(f, out) for f in figures if f.main]
    md += [m for m, _ in shown]
    if shown:
        ht.append("<div class='figs'>" + "".join(h for _, h in shown) + "</div>")
    if detail:
        counts = ((sum(isinstance(b, Table) for b in detail), "table"), (sum(isinstance(b, Figure) for b in detail), "figure"))
        summary = html.escape("details: " + ", ".join(f"{n} {word}{'s' * (n > 1)}" for n, word in counts if n))
        md += [f"<details><summary>{summary}</summary>", ""]
        ht.append(f"<details><summary>{summary}</summary>")
        for b in detail:
            m, h = (b.markdown(), b.html()) if isinstance(b, Table) else _img(b, out)
            md.append(m)
            ht.append(h)
        md += ["</details>", ""]
        ht.append("</details>")
    return md, ht


def render(title: str, sections: list[Section], out: Path, banner: str = "") -> tuple[str, str]:
    """Markdown and HTML of the report (module docstring); figure paths are relative to ``out`` in the Markdown."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    md_banner = [f"> **{banner}**", ""] if banner else []
    ht_banner = [f"<div class='banner'>{html.escape(banner)}</div>"] if banner else []
    head = html.escape(f"{banner} · {title}" if banner else title)
    md = [f"# {title}", "", *md_banner, f"Generated {stamp}.", ""]
    ht = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        f"<title>{head}</title><style>{CSS}</style></head><body>",
        *ht_banner,
        f"<h1>{html.escape(title)}</h1><p>Generated {stamp}.</p>",
    ]
    for sec in sections:
        m, h = render_section(sec, out)
        md += m
        ht += h
    md += md_banner
    ht += [*ht_banner, "</body></html>"]
    return "\n".join(md) + "\n", "\n".join(ht) + "\n"


__all__ = ["CSS", "Figure", "Section", "Table", "cell", "render", "render_section"]
