"""``midtrain report RUN_DIR... --out DIR``: one Markdown and one self-contained HTML report with tables and plots.

Each RUN_DIR argument is a run directory or a folder of them (searched ``max_depth`` levels down). What a
directory holds decides what the report shows, read defensively (missing keys become blanks, never errors):

- ``summary.json`` of ``midtrain eval`` → a table of mean@k per benchmark with the plain and domain-weighted
  macro averages across runs, a detail table per run (n, k, accuracy, mean@k, pass@k, maj@k, no-answer,
  response/thinking tokens) and pass@k curves; a synthetic summary → a table per op range (verified pass@1 and
  pass@k, ProcessAcc, outcome accuracy, hacking rate), **accuracy vs op** with the ID / edge / hard ranges
  shaded, and pass@k curves per range;
- ``log.jsonl`` of a training run → loss, RL reward (mean ± std, zero-variance share) and completion / thinking
  length curves, and a table of first/last values;
- ``weights.json`` / ``cka.json`` of ``midtrain analyze`` → fraction changed (overall and per module type) and
  per-layer CKA tables, and their ``weights_heatmap.png`` / ``cka_per_layer.png`` embedded.

Numbers in tables are the summaries' values rounded to 4 decimals. Output: ``report.md`` (PNG files under
``plots/``) and ``report.html`` (the same content, PNGs base64-embedded: one file to send around). Plots are drawn
through :mod:`midtrain.plots` (Agg backend, one DPI, atomic writes); the CKA plot is
:func:`midtrain.analysis.plots.plot_cka`, the one ``midtrain analyze cka`` draws. The output directory is a run
directory; a previous report there is replaced.

    midtrain report runs/eval-base runs/eval-sft runs/rl runs/analysis --out runs/report
"""

from __future__ import annotations

import base64
import html
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midtrain.analysis.plots import plot_cka, plot_weight_heatmap
from midtrain.config import Config, param
from midtrain.console import fmt_num, log
from midtrain.data.jsonl import iter_jsonl_tolerant
from midtrain.errors import ConfigError, DataError
from midtrain.fileio import atomic_write_text
from midtrain.plots import as_number, plot_acc_vs_op, plot_pass_at_k, plot_training
from midtrain.runs import META, open_run

ARTIFACTS = ("summary.json", "log.jsonl", "weights.json", "cka.json")
PNG_EMBEDS = ("weights_heatmap.png", "weights_timeline.png", "cka_per_layer.png")


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


# -- formatting -------------------------------------------------------------------------------------------------


def cell(v: Any) -> str:
    """A table cell: a value by :func:`midtrain.console.fmt_num` (floats to 4 decimals, ints as is); no value (None,
    NaN, ±inf: a metric a run did not produce) is an empty cell, so tables of several runs line up."""
    return fmt_num(None if isinstance(v, float) and not math.isfinite(v) else v, missing="")


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[Any]]

    def markdown(self) -> str:
        esc = lambda s: cell(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        lines = [f"**{self.title}**", "", "| " + " | ".join(map(esc, self.header)) + " |", "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(cell(h))}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(c))}</td>" for c in row) + "</tr>" for row in self.rows)
        return f"<p><b>{html.escape(self.title)}</b></p><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass
class Section:
    title: str
    blocks: list[Any] = field(default_factory=list)  # Table | ("img", path, caption) | ("text", str)


# -- sections ---------------------------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def benchmark_sections(evals: list[tuple[str, dict[str, Any]]], plots: Path) -> list[Section]:
    if not evals:
        return []
    names: list[str] = []
    for _, s in evals:
        names += [b for b in s.get("benchmarks", {}) if b not in names]
    sec = Section("Benchmarks")
    if names:
        rows = [
            [label] + [(s["benchmarks"].get(b) or {}).get("mean_at_k") for b in names] + [s.get("macro_avg"), s.get("domain_weighted_avg")]
            for label, s in evals
            if s.get("benchmarks")
        ]
        sec.blocks.append(Table("mean@k per benchmark", ["run"] + names + ["macro avg", "domain-weighted avg"], rows))
    for label, s in evals:
        bench = s.get("benchmarks") or {}
        if not bench:
            continue
        ks = sorted({int(k) for b in bench.values() for k in (b.get("pass_at_k") or {}) if str(k).isdigit()})
        rows = [
            [b, g.get("n"), g.get("k"), g.get("accuracy"), g.get("mean_at_k")]
            + [(g.get("pass_at_k") or {}).get(str(k)) for k in ks]
            + [g.get("maj_at_k"), g.get("no_answer"), g.get("response_tokens_mean"), g.get("thinking_tokens_mean")]
            for b, g in bench.items()
        ]
        sec.blocks.append(
            Table(
                f"{label}: details",
                ["benchmark", "n", "k", "accuracy", "mean@k"]
                + [f"pass@{k}" for k in ks]
                + ["maj@k", "no answer", "response tokens", "thinking tokens"],
                rows,
            )
        )
        if any(len(b.get("pass_at_k") or {}) > 1 for b in bench.values()):
            p = plot_pass_at_k({b: g.get("pass_at_k") for b, g in bench.items()}, plots / f"passk_{_safe(label)}.png", f"{label}: pass@k")
            if p:
                sec.blocks.append(("img", p, f"{label}: pass@k per benchmark"))
    return [sec]


def synthetic_sections(synth: list[tuple[str, dict[str, Any]]], plots: Path) -> list[Section]:
    if not synth:
        return []
    sec = Section("Synthetic world")
    ranges: dict[str, list[int]] = {}
    for _, s in synth:
        for name, r in (s.get("ranges") or {}).items():
            ranges.setdefault(name, r)
    ranges = ranges or {"id": [2, 10], "edge": [11, 14], "hard": [15, 20]}
    for label, s in synth:
        by_range = s.get("by_range") or {}
        ks = sorted({int(k) for g in by_range.values() for k in (g.get("verified_pass_at_k") or {}) if str(k).isdigit()})
        kmax = ks[-1] if ks else None
        rows = [
            [
                name,
                g.get("n"),
                g.get("k"),
                (g.get("verified_pass_at_k") or {}).get("1"),
                (g.get("verified_pass_at_k") or {}).get(str(kmax)) if kmax else None,
                g.get("process_acc"),
                g.get("outcome_acc"),
                g.get("hacking_rate"),
            ]
            for name, g in by_range.items()
        ]
        sec.blocks.append(
            Table(
                f"{label}: per op range",
                [
                    "range",
                    "n",
                    "k",
                    "verified pass@1",
                    f"verified pass@{kmax}" if kmax else "verified pass@k",
                    "ProcessAcc",
                    "outcome acc",
                    "hacking rate",
                ],
                rows,
            )
        )
        for key, title in (("by_context", "context"), ("by_mode", "mode")):
            groups = s.get(key) or {}
            if groups:
                sec.blocks.append(
                    Table(
                        f"{label}: per {title}",
                        [title, "n", "verified pass@1", "ProcessAcc", "outcome acc", "hacking rate"],
                        [
                            [
                                n,
                                g.get("n"),
                                (g.get("verified_pass_at_k") or {}).get("1"),
                                g.get("process_acc"),
                                g.get("outcome_acc"),
                                g.get("hacking_rate"),
                            ]
                            for n, g in groups.items()
                        ],
                    )
                )
        if len(ks) > 1:
            p = plot_pass_at_k(
                {n: g.get("verified_pass_at_k") for n, g in by_range.items()},
                plots / f"synth_passk_{_safe(label)}.png",
                f"{label}: verified pass@k per op range",
            )
            if p:
                sec.blocks.append(("img", p, f"{label}: verified pass@k per op range"))
    p = plot_acc_vs_op({label: s.get("by_op") or {} for label, s in synth}, ranges, plots / "synth_acc_vs_op.png")
    if p:
        sec.blocks.insert(0, ("img", p, "accuracy vs op (ID / edge / hard shaded)"))
    return [sec]


def first_last(rows: list[dict[str, Any]], key: str) -> tuple[Any, Any]:
    """The first and last numeric value of ``key`` in a log, as logged (ints stay ints); (None, None) if none."""
    vals = [r.get(key) for r in rows if as_number(r.get(key)) is not None]
    return (vals[0], vals[-1]) if vals else (None, None)


def training_sections(logs: list[tuple[str, list[dict[str, Any]]]], plots: Path) -> list[Section]:
    if not logs:
        return []
    sec = Section("Training")
    keys = ["loss", "reward_mean", "reward_std", "zero_var_frac", "completion_len", "think_len"]
    rows = []
    for label, rs in logs:
        row: list[Any] = [label, len(rs), rs[-1]["step"]]
        for k in keys:
            row += list(first_last(rs, k))
        timing = [sum(as_number(r.get(k)) or 0.0 for r in rs) / len(rs) for k in ("gen_s", "reward_s", "train_s")]
        rows.append(row + [t if any(r.get(k) is not None for r in rs) else None for t, k in zip(timing, ("gen_s", "reward_s", "train_s"))])
        p = plot_training(rs, plots / f"train_{_safe(label)}.png", label)
        if p:
            sec.blocks.append(("img", p, f"{label}: training curves"))
    header = (
        ["run", "logged steps", "last step"]
        + [f"{k} {w}" for k in keys for w in ("first", "last")]
        + ["gen s/step", "reward s/step", "train s/step"]
    )
    sec.blocks.insert(0, Table("training logs (first and last logged values)", header, rows))
    return [sec]


def analysis_sections(
    weights: list[tuple[str, Path, dict[str, Any]]], ckas: list[tuple[str, Path, dict[str, Any]]], plots: Path
) -> list[Section]:
    if not weights and not ckas:
        return []
    sec = Section("Analysis")
    if weights:
        sec.blocks.append(
            Table(
                "weight change",
                ["run", "fraction changed", "‖ΔW‖/‖W0‖"],
                [[label, w.get("fraction_changed"), w.get("rel_frob")] for label, _, w in weights],
            )
        )
        for label, d, w in weights:
            pmt = w.get("per_module_type")
            if isinstance(pmt, dict) and pmt:
                sec.blocks.append(
                    Table(
                        f"{label}: per module type",
                        ["module type", "fraction changed", "‖ΔW‖/‖W0‖"],
                        [[k, (v or {}).get("fraction_changed"), (v or {}).get("rel_frob")] for k, v in pmt.items() if isinstance(v, dict)],
                    )
                )
            pl = w.get("per_layer")
            if isinstance(pl, dict) and pl:
                sec.blocks.append(
                    Table(
                        f"{label}: per layer",
                        ["layer", "fraction changed"],
                        [[k, (v or {}).get("fraction_changed") if isinstance(v, dict) else as_number(v)] for k, v in pl.items()],
                    )
                )
            _embed(sec, d, label, plots, w, "weights")
    for label, d, c in ckas:
        per_layer = c.get("per_layer")
        if isinstance(per_layer, dict):
            per_layer = list(per_layer.values())
        if isinstance(per_layer, list) and per_layer:
            probes = found if isinstance(found := c.get("probes"), dict) else {}
            names = [n for n, p in probes.items() if isinstance(p, dict) and isinstance(p.get("per_layer"), list)]
            rows = [
                [i, v] + [probes[n]["per_layer"][i] if i < len(probes[n]["per_layer"]) else None for n in names]
                for i, v in enumerate(per_layer)
            ]
            sec.blocks.append(
                Table(
                    f"{label}: linear CKA per layer (min {cell(as_number(c.get('min_cka')))})",
                    ["layer", "CKA (mean over probes)"] + names,
                    rows,
                )
            )
        _embed(sec, d, label, plots, c, "cka")
    return [sec]


def _embed(sec: Section, run_dir: Path, label: str, plots: Path, data: dict[str, Any] | None = None, kind: str = "") -> None:
    """Copy the analysis PNGs of ``run_dir``; without them, draw them with :mod:`midtrain.analysis.plots` if possible."""
    for name in PNG_EMBEDS:
        src, dst = run_dir / name, plots / f"{_safe(label)}_{name}"
        if dst.exists():
            continue
        if src.is_file():
            shutil.copyfile(src, dst)
        elif data is not None and name == {"weights": "weights_heatmap.png", "cka": "cka_per_layer.png"}.get(kind):
            try:
                if kind == "weights":
                    plot_weight_heatmap(data, dst)
                elif plot_cka(data, dst, title=label) is None:
                    continue
            except Exception as e:  # noqa: BLE001 - an older/partial result: the tables still show the numbers
                log(f"report: no {name} for {label} ({type(e).__name__}: {e})")
                continue
        else:
            continue
        sec.blocks.append(("img", dst, f"{label}: {name[:-4].replace('_', ' ')}"))


# -- rendering --------------------------------------------------------------------------------------------------
CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;"
    "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
    "img{max-width:100%;border:1px solid #eee;margin:.5em 0}figcaption{font-size:12px;color:#555}"
    # the banner stays in view while scrolling and repeats on every printed page
    ".banner{position:sticky;top:0;z-index:1;background:#b00020;color:#fff;font-weight:bold;padding:.5em 1em}"
    "@media print{.banner{position:fixed;left:0;right:0}body{padding-top:3em}}"
)


def render(
    title: str, runs: list[tuple[str, Path, dict[str, Any]]], sections: list[Section], out: Path, banner: str = ""
) -> tuple[str, str]:
    """Markdown and HTML of the report; a ``banner`` (a quick run's warning) heads both, is repeated at their end,
    prefixes the HTML title and stays in view on every screen and printed page of the HTML."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    run_table = Table("runs", ["run", "stage", "status", "path"], [[l, m.get("stage"), m.get("status"), str(p)] for l, p, m in runs])
    md_banner = [f"> **{banner}**", ""] if banner else []
    ht_banner = [f"<div class='banner'>{html.escape(banner)}</div>"] if banner else []
    head = html.escape(f"{banner} · {title}" if banner else title)
    md = [f"# {title}", "", *md_banner, f"Generated {stamp}.", ""]
    ht = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{head}</title><style>{CSS}</style></head><body>",
        *ht_banner,
        f"<h1>{html.escape(title)}</h1><p>Generated {stamp}.</p>",
    ]
    sections = [*sections, Section("runs", [run_table])]  # the inventory last: results first
    for sec in sections:
        md += [f"## {sec.title}", ""]
        ht.append(f"<h2>{html.escape(sec.title)}</h2>")
        for b in sec.blocks:
            if isinstance(b, Table):
                md.append(b.markdown())
                ht.append(b.html())
            elif b[0] == "img":
                rel = Path(b[1]).relative_to(out).as_posix()
                md += [f"![{b[2]}]({rel})", ""]
                data = base64.b64encode(Path(b[1]).read_bytes()).decode("ascii")
                ht.append(
                    f"<figure><img alt='{html.escape(b[2])}' src='data:image/png;base64,{data}'><figcaption>{html.escape(b[2])}</figcaption></figure>"
                )
            else:
                md += [b[1], ""]
                ht.append(f"<p>{html.escape(b[1])}</p>")
    md += md_banner
    ht += [*ht_banner, "</body></html>"]
    return "\n".join(md) + "\n", "\n".join(ht) + "\n"


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
    md, ht = render(title, metas, sections, out, banner)
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
