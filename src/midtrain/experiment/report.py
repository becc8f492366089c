"""``midtrain report RUN_DIR... --out DIR``: one Markdown and one self-contained HTML report with figures and tables.

Each RUN_DIR argument is a run directory or a folder of them (searched ``max_depth`` levels down). What a
directory holds decides what the report shows (:mod:`midtrain.experiment.sections`), read defensively (missing
keys become blanks, never errors):

- ``summary.json`` of ``midtrain eval`` → benchmarks: mean@k per benchmark with the plain and domain-weighted
  macro averages, per-run details and pass@k curves; the synthetic world: **accuracy vs op**, one panel per
  evaluation with the ID / edge / hard ranges shaded, and per run a table per op range (verified pass@1 and
  pass@k, ProcessAcc, outcome accuracy, hacking rate);
- ``log.jsonl`` of a training run → the RL runs' curves (reward; the probe's verified accuracy and hacking rate
  per step where logged; completion length) and the LM runs' loss, each on shared axes, and first/last values;
- ``weights.json`` / ``cka.json`` of ``midtrain analyze`` → fraction changed (overall and per module type) and
  per-layer CKA tables, and their ``weights_heatmap.png`` / ``cka_per_layer.png`` embedded.

Each section shows its main tables, then its figures, then its other tables collapsed under ``<details>``, without
columns that carry no information (:mod:`midtrain.experiment.document`); the runs' inventory comes last. Numbers
in tables are the summaries' values rounded to 4 decimals. Output: ``report.md`` (PNG files under ``plots/``) and
``report.html`` (the same content, PNGs base64-embedded: one file to send around, laid out for a 1280 px
screen). Plots are drawn through :mod:`midtrain.plots` (Agg backend, one DPI, atomic writes); the CKA plot is
:func:`midtrain.analysis.plots.plot_cka`, the one ``midtrain analyze cka`` draws. The output directory is a run
directory; a previous report there is replaced.

    midtrain report runs/eval-base runs/eval-sft runs/rl runs/analysis --out runs/report
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midtrain.config import Config, param
from midtrain.console import log
from midtrain.data.jsonl import iter_jsonl_tolerant
from midtrain.errors import ConfigError, DataError
from midtrain.experiment.document import Figure, Section, Table, cell, render
from midtrain.experiment.sections import PNG_EMBEDS, analysis_sections, benchmark_sections, synthetic_sections, training_sections
from midtrain.fileio import atomic_write_text
from midtrain.plots import as_number
from midtrain.runs import META, open_run

ARTIFACTS = ("summary.json", "log.jsonl", "weights.json", "cka.json")


@dataclass
class ReportConfig(Config):
    runs: list[str] = param([], "Run directories (or folders of them) to report on.", positional=True)
    out: str = param("report", "Output directory for report.md, report.html and plots/.", path="dir")
    title: str = param("midtrain report", "Report title.")
    max_depth: int = param(3, "How many directory levels below each RUN_DIR to search for runs.", ge=0)
    overwrite: bool = param(False, "Replace a non-report directory at --out (a previous report is always replaced).")

    def check(self) -> None:
        if not self.runs:
            raise ConfigError("key 'runs': give at least one run directory")


@dataclass
class ReportResult:
    out: str
    markdown: str
    html: str
    plots: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "markdown": self.markdown,
            "html": self.html,
            "plots": self.plots,
            "runs": self.runs,
            "cached": self.cached,
        }

    def summary(self) -> str:
        return f"report: {len(self.runs)} runs, {len(self.plots)} plots → {self.markdown} and {self.html}"


# -- discovery --------------------------------------------------------------------------------------------------
def reportable(dirs: Sequence[Path]) -> list[Path]:
    """The directories among ``dirs`` that hold a report artifact (a data or judge stage's run holds none)."""
    return [d for d in dirs if any((d / a).is_file() for a in ARTIFACTS)]


def find_runs(paths: Sequence[str | Path], max_depth: int = 3) -> list[Path]:
    """Directories holding at least one report artifact, in argument order then path order."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise DataError(f"not a directory: {p}")
        stack = [(p, 0)]
        hits = []
        while stack:
            d, depth = stack.pop()
            if any((d / a).is_file() for a in ARTIFACTS):
                hits.append(d)
            if depth < max_depth:
                stack += [(c, depth + 1) for c in sorted(d.iterdir()) if c.is_dir() and not c.name.startswith(".")]
        found += sorted(hits)
    uniq = list(dict.fromkeys(x.resolve() for x in found))
    if not uniq:
        raise DataError(f"no run results ({', '.join(ARTIFACTS)}) found under {', '.join(map(str, paths))}")
    return uniq


def _labels(runs: list[Path]) -> list[str]:
    labels = [r.name for r in runs]
    for i, r in enumerate(runs):
        if labels.count(r.name) > 1:
            labels[i] = f"{r.parent.name}/{r.name}"
    return labels


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        log(f"report: skipping unreadable {path} ({e})")
        return None
    return data if isinstance(data, dict) else None


def read_log(path: Path) -> list[dict[str, Any]]:
    """Training log rows that have a numeric ``step`` (a torn last line is skipped)."""
    try:
        rows = list(iter_jsonl_tolerant(path))
    except DataError as e:
        log(f"report: skipping {path} ({e})")
        return []
    return [r for r in rows if isinstance(r, dict) and as_number(r.get("step")) is not None]


def build(
    runs: list[Path], title: str, out: Path, extra: Callable[[Path], list[Section]] | None = None, *, banner: str = ""
) -> tuple[str, str, list[str]]:
    """Markdown, HTML and plot paths of a report on ``runs``, plots written under ``out/plots``.

    ``extra(plots_dir)`` (Python API: experiments, the demo) returns sections shown first, e.g. a comparison of
    arms; their plots must be written into ``plots_dir``. ``banner`` marks the whole report (:func:`render`), e.g.
    a ``--quick`` demo's "not a result".
    """
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):  # run names and titles are text: '$x$' is not math
        return _build(runs, title, out, extra, banner)


def _build(
    runs: list[Path], title: str, out: Path, extra: Callable[[Path], list[Section]] | None, banner: str
) -> tuple[str, str, list[str]]:
    plots_dir = out / "plots"
    if plots_dir.exists():
        shutil.rmtree(plots_dir)
    plots_dir.mkdir(parents=True)
    evals: list[tuple[str, dict[str, Any]]] = []
    synth: list[tuple[str, dict[str, Any]]] = []
    logs: list[tuple[str, list[dict[str, Any]]]] = []
    weights: list[tuple[str, Path, dict[str, Any]]] = []
    ckas: list[tuple[str, Path, dict[str, Any]]] = []
    metas: list[tuple[str, Path, dict[str, Any]]] = []
    for label, r in zip(_labels(runs), runs):
        meta = (_read_json(r / META) if (r / META).is_file() else None) or {}
        metas.append((label, r, meta))
        s = _read_json(r / "summary.json") if (r / "summary.json").is_file() else None
        if s:
            if s.get("benchmarks"):
                evals.append((label, s))
            elif "mean_at_k" in s and "benchmark" in s:  # an `eval score --out` summary: one benchmark
                evals.append((label, {"benchmarks": {s["benchmark"]: s}, "macro_avg": s["mean_at_k"]}))
            if isinstance(s.get("synthetic"), dict):
                synth.append((label, s["synthetic"]))
            elif "by_op" in s and "by_range" in s:  # an `eval score --synthetic` summary
                synth.append((label, s))
        if (r / "log.jsonl").is_file():
            rows = read_log(r / "log.jsonl")
            if rows:
                logs.append((label, rows))
        for name, bucket in (("weights.json", weights), ("cka.json", ckas)):
            if (r / name).is_file():
                data = _read_json(r / name)
                if data is not None:
                    bucket.append((label, r, data))
    sections = (
        (extra(plots_dir) if extra else [])
        + benchmark_sections(evals, plots_dir)
        + synthetic_sections(synth, plots_dir)
        + training_sections(logs, plots_dir)
        + analysis_sections(weights, ckas, plots_dir)
    )
    inventory = Table("runs", ["run", "stage", "status", "path"], [[lab, m.get("stage"), m.get("status"), str(p)] for lab, p, m in metas])
    md, ht = render(title, [*sections, Section("runs", [inventory])], out, banner)  # the inventory last: results first
    return md, ht, sorted(str(p) for p in plots_dir.glob("*.png"))


def run(cfg: ReportConfig, extra: Callable[[Path], list[Section]] | None = None) -> ReportResult:
    """Build the report (see the module docstring); ``extra`` as in :func:`build`."""
    runs = find_runs(cfg.runs, cfg.max_depth)  # fails before the output directory exists
    out = Path(cfg.out)
    labels = _labels(runs)
    inputs = {f"{l}/{a}": str(r / a) for l, r in zip(labels, runs) for a in ARTIFACTS + PNG_EMBEDS if (r / a).is_file()}
    previous = out / META
    replace = cfg.overwrite or (previous.is_file() and (_read_json(previous) or {}).get("stage") == "report")
    with open_run(out, "report", cfg, inputs, overwrite=replace) as run_:
        md_path, html_path = run_.path / "report.md", run_.path / "report.html"
        if run_.cached:
            plots = sorted(str(p) for p in (run_.path / "plots").glob("*.png"))
            return ReportResult(str(run_.path), str(md_path), str(html_path), plots, [str(r) for r in runs], cached=True)
        md, ht, plots = build(runs, cfg.title, run_.path, extra)
        atomic_write_text(md_path, md)
        atomic_write_text(html_path, ht)
        run_.finish({"runs": len(runs), "plots": len(plots), "sections": [t for t in _titles(md)]})
        log(f"report: {len(runs)} runs, {len(plots)} plots → {md_path}")
        return ReportResult(str(run_.path), str(md_path), str(html_path), plots, [str(r) for r in runs])


def _titles(md: str) -> list[str]:
    return [line[3:] for line in md.splitlines() if line.startswith("## ")]


__all__ = [
    "Figure",
    "ReportConfig",
    "ReportResult",
    "run",
    "build",
    "find_runs",
    "reportable",
    "cell",
    "Table",
    "Section",
    "read_log",
]
