"""``midtrain experiment run CONFIG``: an experiment is a graph of cached stages; arms are named chains through it.

An experiment config names **stages** — each a CLI verb with its config (``args``), or an existing checkpoint
(``path``) — and **arms**, the comparisons: an arm lists the training stages of its chain (for compute
accounting) and the eval stage of its final checkpoint (for the results table)::

    # midtrain: experiment run
    name: demo
    seeds: [0, 1, 2]
    stages:
      base:      {path: ../src/midtrain/assets/demo-base}            # a shipped checkpoint
      edge:      {verb: synth generate, per_seed: false, args: {preset: tiny-edge, n: 2000, seed: 7}}
      rl_a:      {verb: rl, args: {model: "${base}", data: ["${edge}"], seed: "${seed}"}}
      eval_a:    {verb: eval, args: {model: "${rl_a}", synthetic: "${eval_set}"}}
    arms:
      a: {label: "base → RL", chain: [rl_a], eval: eval_a}

Algorithm:

1. **Resolve** every stage for each seed. ``${name}`` is replaced by stage ``name``'s output path
   (``OUT/seed-S/name``; ``OUT/shared/name`` for ``per_seed: false`` stages; a ``.jsonl`` file for verbs whose
   output is a file), ``${seed}`` by the seed, ``${vars.key}`` by a variable and ``${out}`` by the seed's
   directory; a value that is exactly one reference keeps the referenced type. A stage's dependencies are the
   stages it references; the graph must be acyclic. Each stage's ``args`` are parsed into its verb's typed
   config right away, so a wrong key fails before anything runs, naming ``stages.NAME.args.KEY``.
2. **Run** stages in dependency order, in-process through the same functions as the CLI verbs. A stage shared by
   several arms (same name) runs once per seed, and a ``per_seed: false`` stage once per experiment. Stages
   write run directories, whose content-hash cache makes a finished stage a no-op; a journal
   (``OUT/.journal/<stage key>.json``, written atomically after the stage finished) also skips verbs that write
   plain files. Killing the process (even ``kill -9``) and re-running resumes: finished stages are skipped and an
   interrupted training stage resumes from its last checkpoint. With ``jobs: N`` up to N stages whose inputs are
   ready run at once in worker processes (``threads_per_job`` CPU threads each; workers die with the experiment);
   a stage can also run under a launcher (``launch: [accelerate, launch, ...]``) as a subprocess.
3. **Account** compute per arm from the stages' metrics: training tokens and FLOPs (``6·N·tokens`` for
   pretraining/SFT; generated + trained tokens for RL), split into mid-training (pretrain/SFT/RL mid-training on
   suffix tasks) and RL post-training, with the mid-training fraction β = mid / (mid + RL) of the Interplay
   compute-split study. The shared base is reported once, not charged to the arms.
4. **Summarize**: ``OUT/experiment.json`` (per seed and arm: compute and the eval metrics by op range) and a
   table on the console; then ``midtrain report`` over every run directory into ``OUT/report``.

Modules: this one is the verb (run, summary, arms table); :mod:`midtrain.experiment.graph` holds the experiment
file's config, the reference resolution and the plan (step 1), :mod:`midtrain.experiment.executor` runs the plan
(step 2, with the services of :mod:`midtrain.experiment.service` and the launcher of
:mod:`midtrain.experiment.launch`), :mod:`midtrain.experiment.compute` does step 3.

Safety: stage and arm names name files and directories under ``OUT``, so they must match ``SAFE_NAME`` (letters,
digits, ``_.-``, no ``..``, at most 64 characters); ``path`` stages must exist before anything is created; one
experiment process holds ``OUT`` at a time (a lock, like every stage's run directory), so a second ``experiment
run`` on the same ``out`` fails at once naming the first one's pid. **An experiment file is code, like a
Makefile**: ``launch:`` runs any command it names with your permissions, and ``args`` point stages at any path
you can read or write. Run only experiment files you trust, as you would ``make`` in a checkout you trust.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midtrain.console import log
from midtrain.errors import ConfigError
from midtrain.experiment.compute import arm_results
from midtrain.experiment.executor import execute
from midtrain.experiment.graph import ExperimentConfig, plan
from midtrain.experiment.spec import Step
from midtrain.fileio import atomic_write_json
from midtrain.locks import PathLock


def run(cfg: ExperimentConfig) -> ExperimentResult:
    """Run the experiment (see module docstring)."""
    steps = plan(cfg)
    # before anything is created: a mistyped checkpoint path must not leave an empty OUT behind
    for step in steps:
        if step.config is None and not step.out.exists():
            raise ConfigError(f"key 'stages.{step.name}.path': {step.out} does not exist")
    with PathLock(cfg.out_dir, "experiment directory"):
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cfg.out_dir / "experiment.config.json", cfg.to_dict())
        return _run_locked(cfg, steps)


def _run_locked(cfg: ExperimentConfig, steps: list[Step]) -> ExperimentResult:
    """Run the steps, summarize and report, with the experiment directory locked by :func:`run`."""
    t0 = time.time()
    recs = execute(cfg, steps)
    recs_by_seed: dict[Any, dict[str, dict[str, Any]]] = {s: {} for s in cfg.seeds}
    steps_by_seed: dict[Any, dict[str, Step]] = {s: {} for s in cfg.seeds}
    for step in steps:
        for s in [step.seed] if step.seed is not None else cfg.seeds:
            recs_by_seed[s][step.name] = recs[step.key]
            steps_by_seed[s][step.name] = step
    base_rec = recs_by_seed[cfg.seeds[0]].get(cfg.base, {}) if cfg.base else {}
    summary = {
        "name": cfg.name,
        "description": cfg.description,
        "seeds": list(cfg.seeds),
        "base": {"stage": cfg.base, "metrics": base_rec.get("metrics", {})} if cfg.base else None,
        "arms": arm_results({a: cfg.arms[a] for a in cfg.only or cfg.arms}, recs_by_seed, steps_by_seed),
        "stages": {str(s): recs for s, recs in recs_by_seed.items()},
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write_json(cfg.out_dir / "experiment.json", summary)
    report_dir, note = None, ""
    if cfg.report:
        from midtrain.experiment.report import ReportConfig, Section, Table, reportable
        from midtrain.experiment.report import run as report

        head, rows = arm_table(summary)
        arms = (
            [Section("arms", [Table("final evaluation of each arm (mean ± std over seeds) and training compute", head, rows, main=True)])]
            if rows
            else []
        )
        runs = reportable(run_dirs(cfg))
        if runs:
            report_dir = cfg.out_dir / "report"
            report(ReportConfig(runs=[str(p) for p in runs], out=str(report_dir), title=cfg.name, max_depth=0), extra=lambda plots: arms)
        else:  # only data, judge or augment stages: a finished experiment, not a failed report
            note = "nothing to report (no stage wrote a training log, an evaluation or an analysis)"
            log(f"experiment: {note}")
    print_table(summary)
    return ExperimentResult(out=str(cfg.out_dir), data=summary, report=str(report_dir) if report_dir else None, note=note)


def run_dirs(cfg: ExperimentConfig) -> list[Path]:
    """The stage run directories of an experiment (``out/<seed>/<stage>``, with a midtrain.json), in path order:
    what its report (and the demo's) is built from."""
    seen: list[Path] = []
    for d in sorted(cfg.out_dir.glob("*/*")):
        if d.is_dir() and (d / "midtrain.json").is_file() and d.name != "report" and d not in seen:
            seen.append(d)
    return seen


def arm_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Rows of arm × column (mean ± std over seeds) and compute: synthetic evals give verified pass@1 per op range,
    benchmark evals their mean@k per benchmark (``BENCH.mean_at_k``)."""
    seeds = list(summary["arms"])
    arms = list(summary["arms"][seeds[0]]) if seeds else []
    columns: list[tuple[str, str]] = []  # (header, key into the arm's record)
    for a in arms:
        rec = summary["arms"][seeds[0]][a]
        cols = [(f"{r} verified", f"verified_acc:{r}") for r in rec["verified_acc"]]
        cols += [(f"{k.split('.')[0]} mean@k", f"eval:{k}") for k in rec["eval"] if k.endswith(".mean_at_k")]
        columns += [c for c in cols if c not in columns]
    head = ["arm", *[h for h, _ in columns], "train FLOPs", "β (mid share)"]
    rows = []
    for a in arms:
        cells = [summary["arms"][seeds[0]][a]["label"]]
        for _, key in columns:
            where_, name = key.split(":", 1)
            cells.append(mean_std([summary["arms"][s][a][where_].get(name) for s in seeds]))
        comp = summary["arms"][seeds[0]][a]["compute"]
        cells.append(f"{comp['flops']:.3g}")
        cells.append("–" if comp["beta"] is None else f"{comp['beta']:.2f}")
        rows.append(cells)
    return head, rows


def mean_std(values: list[Any]) -> str:
    """``mean ± std`` of the numbers among ``values`` (one value: itself; none: –)."""
    from statistics import mean, pstdev

    vals = [v for v in values if isinstance(v, (int, float))]
    return f"{mean(vals):.3f} ± {pstdev(vals):.3f}" if len(vals) > 1 else (f"{vals[0]:.3f}" if vals else "–")


def print_table(summary: dict[str, Any]) -> None:
    from midtrain.console import print_table as show

    head, rows = arm_table(summary)
    if rows:
        show(f"{summary['name']}: final evaluation of each arm (mean ± std over {len(summary['arms'])} seed(s))", head, rows)


@dataclass
class ExperimentResult:
    out: str
    data: dict[str, Any]  # experiment.json
    report: str | None = None
    note: str = ""  # why there is no report, when one was asked for

    def to_dict(self) -> dict[str, Any]:
        return {"out": self.out, "report": self.report, "summary": self.data}

    def summary(self) -> str:
        tail = f"\n  report: {self.report}/report.html" if self.report else (f"\n  {self.note}" if self.note else "")
        return f"experiment: {self.out}/experiment.json{tail}"


__all__ = ["ExperimentResult", "arm_table", "mean_std", "print_table", "run", "run_dirs"]
