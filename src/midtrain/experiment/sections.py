"""The report's sections, one builder per kind of run artifact, each returning :class:`Section` s of figures and tables.

- evaluations on benchmarks (``summary.json`` of ``midtrain eval``): mean@k per benchmark and run, with the plain
  and domain-weighted macro averages; per run the details (n, k, accuracy, pass@k, maj@k, no-answer, lengths) and
  pass@k curves;
- evaluations in the synthetic world: **accuracy vs op** as small multiples, one panel per evaluation (its seeds
  as lines), the op ranges shaded; per run a table per op range (verified pass@1 and pass@k, ProcessAcc, outcome
  accuracy, hacking rate) and, when a run holds several, per context and per mode;
- training logs (``log.jsonl``): the RL runs' curves on shared axes (reward, and where the log holds them the
  probe's verified accuracy and hacking rate per step, zero-variance groups, completion length), the LM runs'
  loss; a table of first and last values;
- checkpoint analysis (``weights.json`` / ``cka.json``): fraction changed and per-layer CKA tables, with their
  PNGs (copied, or drawn by :mod:`midtrain.analysis.plots` when missing).

A run is labelled by its directory name (``parent/name`` when names repeat, e.g. one stage under several seeds):
figures group runs by that name, so a stage's seeds share a panel or a colour. Builders read defensively:
missing keys become blanks, never errors.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from midtrain.analysis.plots import plot_cka, plot_weight_heatmap
from midtrain.console import log
from midtrain.experiment.document import Figure, Section, Table, cell
from midtrain.plots import LM_CURVES, RL_CURVES, as_number, plot_acc_vs_op, plot_curves, plot_pass_at_k

PNG_EMBEDS = ("weights_heatmap.png", "weights_timeline.png", "cka_per_layer.png")
DEFAULT_RANGES = {"id": [2, 10], "edge": [11, 14], "hard": [15, 20]}  # the paper's op ranges


def safe(name: str) -> str:
    """``name`` as a file name: anything but letters, digits and ``-_.`` becomes ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def group_of(label: str) -> tuple[str, str]:
    """(group, member) of a run label: ``seed-0/eval_c`` → (``eval_c``, ``seed-0``); ``eval_c`` → (``eval_c``, ``""``)."""
    parent, _, name = label.rpartition("/")
    return name, parent


def grouped(items: list[tuple[str, Any]]) -> dict[str, dict[str, Any]]:
    """``[(label, x)]`` → ``{group: {member: x}}`` in first-seen order (:func:`group_of`)."""
    out: dict[str, dict[str, Any]] = {}
    for label, x in items:
        group, member = group_of(label)
        out.setdefault(group, {})[member] = x
    return out


# -- evaluations ------------------------------------------------------------------------------------------------
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
        sec.blocks.append(Table("mean@k per benchmark", ["run"] + names + ["macro avg", "domain-weighted avg"], rows, main=True))
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
        header = ["benchmark", "n", "k", "accuracy", "mean@k"] + [f"pass@{k}" for k in ks]
        sec.blocks.append(Table(f"{label}: details", header + ["maj@k", "no answer", "response tokens", "thinking tokens"], rows))
        if any(len(b.get("pass_at_k") or {}) > 1 for b in bench.values()):
            p = plot_pass_at_k({b: g.get("pass_at_k") for b, g in bench.items()}, plots / f"passk_{safe(label)}.png", f"{label}: pass@k")
            if p:
                sec.blocks.append(Figure(p, f"{label}: pass@k per benchmark"))
    return [sec]


def synthetic_sections(synth: list[tuple[str, dict[str, Any]]], plots: Path) -> list[Section]:
    if not synth:
        return []
    sec = Section("Synthetic world")
    ranges: dict[str, list[int]] = {}
    for _, s in synth:
        for name, r in (s.get("ranges") or {}).items():
            ranges.setdefault(name, r)
    ranges = ranges or DEFAULT_RANGES
    p = plot_acc_vs_op(grouped([(label, s.get("by_op") or {}) for label, s in synth]), ranges, plots / "synth_acc_vs_op.png")
    if p:
        shaded = ", ".join(f"{r} {lo}-{hi}" for r, (lo, hi) in ranges.items())
        sec.blocks.append(
            Figure(p, f"verified pass@1 (solid) and outcome accuracy (dashed) per op, one panel per evaluation; shaded: {shaded}")
        )
    for label, s in synth:
        sec.blocks += synthetic_tables(label, s, plots)
    return [sec]


def synthetic_tables(label: str, s: dict[str, Any], plots: Path) -> list[Table | Figure]:
    """One synthetic evaluation's tables (per op range; per context and per mode when it has several) and its
    pass@k curves per range (when it sampled more than once), all for the section's details."""
    by_range = s.get("by_range") or {}
    ks = sorted({int(k) for g in by_range.values() for k in (g.get("verified_pass_at_k") or {}) if str(k).isdigit()})
    kmax = ks[-1] if ks and ks[-1] > 1 else None  # pass@1 has its own column: never the same column twice
    head = (
        ["range", "n", "k", "verified pass@1"] + ([f"verified pass@{kmax}"] if kmax else []) + ["ProcessAcc", "outcome acc", "hacking rate"]
    )
    rows = [
        [name, g.get("n"), g.get("k"), (g.get("verified_pass_at_k") or {}).get("1")]
        + ([(g.get("verified_pass_at_k") or {}).get(str(kmax))] if kmax else [])
        + [g.get("process_acc"), g.get("outcome_acc"), g.get("hacking_rate")]
        for name, g in by_range.items()
    ]
    out: list[Table | Figure] = [Table(f"{label}: per op range", head, rows)]
    for key, title in (("by_context", "context"), ("by_mode", "mode")):
        groups = s.get(key) or {}
        if len(groups) > 1:  # one context or one mode is every problem: the per-range table already says it
            rows = [
                [
                    n,
                    g.get("n"),
                    (g.get("verified_pass_at_k") or {}).get("1"),
                    g.get("process_acc"),
                    g.get("outcome_acc"),
                    g.get("hacking_rate"),
                ]
                for n, g in groups.items()
            ]
            out.append(Table(f"{label}: per {title}", [title, "n", "verified pass@1", "ProcessAcc", "outcome acc", "hacking rate"], rows))
    if len(ks) > 1:
        curves = {n: g.get("verified_pass_at_k") for n, g in by_range.items()}
        p = plot_pass_at_k(curves, plots / f"synth_passk_{safe(label)}.png", f"{label}: verified pass@k per op range")
        if p:
            out.append(Figure(p, f"{label}: verified pass@k per op range", main=False))
    return out


# -- training ---------------------------------------------------------------------------------------------------
TABLE_KEYS = ("loss", "reward_mean", "reward_std", "zero_var_frac", "probe_verified", "probe_hacking", "completion_len", "think_len")


def first_last(rows: list[dict[str, Any]], key: str) -> tuple[Any, Any]:
    """The first and last numeric value of ``key`` in a log, as logged (ints stay ints); (None, None) if none."""
    vals = [r.get(key) for r in rows if as_number(r.get(key)) is not None]
    return (vals[0], vals[-1]) if vals else (None, None)


def training_sections(logs: list[tuple[str, list[dict[str, Any]]]], plots: Path) -> list[Section]:
    if not logs:
        return []
    sec = Section("Training")
    is_rl = {label: any(as_number(r.get("reward_mean")) is not None for r in rs) for label, rs in logs}
    for rl, curves, name, title, caption in (
        (
            True,
            RL_CURVES,
            "train_rl_curves.png",
            "RL runs",
            "RL runs per step: reward (mean over completions), the probe's verified accuracy and hacking "
            "rate where the log holds them, share of zero-variance groups, completion length",
        ),
        (False, LM_CURVES, "train_loss.png", "pretraining and SFT runs", "pretraining and SFT runs: training loss per logged step"),
    ):
        runs = [(label, rs) for label, rs in logs if is_rl[label] == rl]
        p = plot_curves(grouped(runs), curves, plots / name, title) if runs else None
        if p:
            sec.blocks.append(Figure(p, caption))
    rows = []
    for label, rs in logs:
        row: list[Any] = [label, len(rs), rs[-1]["step"]]
        for k in TABLE_KEYS:
            row += list(first_last(rs, k))
        for k in ("gen_s", "reward_s", "train_s"):
            got = [v for r in rs if (v := as_number(r.get(k))) is not None]
            row.append(sum(got) / len(got) if got else None)
        rows.append(row)
    header = ["run", "logged steps", "last step"] + [f"{k} {w}" for k in TABLE_KEYS for w in ("first", "last")]
    sec.blocks.append(Table("training logs (first and last logged values)", header + ["gen s/step", "reward s/step", "train s/step"], rows))
    return [sec]


# -- analysis ---------------------------------------------------------------------------------------------------
def analysis_sections(
    weights: list[tuple[str, Path, dict[str, Any]]], ckas: list[tuple[str, Path, dict[str, Any]]], plots: Path
) -> list[Section]:
    if not weights and not ckas:
        return []
    sec = Section("Analysis")
    if weights:
        rows = [[label, w.get("fraction_changed"), w.get("rel_frob")] for label, _, w in weights]
        sec.blocks.append(Table("weight change", ["run", "fraction changed", "‖ΔW‖/‖W0‖"], rows, main=True))
    for label, d, w in weights:
        pmt = w.get("per_module_type")
        if isinstance(pmt, dict) and pmt:
            rows = [[k, (v or {}).get("fraction_changed"), (v or {}).get("rel_frob")] for k, v in pmt.items() if isinstance(v, dict)]
            sec.blocks.append(Table(f"{label}: per module type", ["module type", "fraction changed", "‖ΔW‖/‖W0‖"], rows))
        pl = w.get("per_layer")
        if isinstance(pl, dict) and pl:
            rows = [[k, (v or {}).get("fraction_changed") if isinstance(v, dict) else as_number(v)] for k, v in pl.items()]
            sec.blocks.append(Table(f"{label}: per layer", ["layer", "fraction changed"], rows))
        embed(sec, d, label, plots, w, "weights")
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
            title = f"{label}: linear CKA per layer (min {cell(as_number(c.get('min_cka')))})"
            sec.blocks.append(Table(title, ["layer", "CKA (mean over probes)"] + names, rows))
        embed(sec, d, label, plots, c, "cka")
    return [sec]


def embed(sec: Section, run_dir: Path, label: str, plots: Path, data: dict[str, Any] | None = None, kind: str = "") -> None:
    """Copy the analysis PNGs of ``run_dir``; without them, draw them with :mod:`midtrain.analysis.plots` if possible."""
    for name in PNG_EMBEDS:
        src, dst = run_dir / name, plots / f"{safe(label)}_{name}"
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
        sec.blocks.append(Figure(dst, f"{label}: {name[:-4].replace('_', ' ')}"))


__all__ = [
    "DEFAULT_RANGES",
    "PNG_EMBEDS",
    "analysis_sections",
    "benchmark_sections",
    "embed",
    "first_last",
    "group_of",
    "grouped",
    "safe",
    "synthetic_sections",
    "synthetic_tables",
    "training_sections",
]
