"""``midtrain demo``: the controlled thinking mid-training experiment on a CPU, with nothing downloaded.

It runs the experiment of ``configs/demo.yaml`` (:mod:`midtrain.experiment.experiment`) from the shipped tiny base checkpoint
(``src/midtrain/assets/demo-base``; ``--from-scratch`` first rebuilds it with ``configs/demo-base.yaml``) for one or
more seeds (the experiment file's three by default), then checks the papers' claims on what it measured
(DESIGN §1.1-1.3; docs/claims.md).

Every claim compares edge-range (ops 6-8) process-verified accuracy per seed, with a standard error that adds the
seed-to-seed variation and the binomial error of the problem sample (:mod:`midtrain.experiment.claims`):

1. **(d) ≥ 2 × (a)**, by ≥ 3 s.e.: base → SFT(think) → RL mid-training → RL versus RL on the base (the paper: 3.2x).
2. **(c) > (b)** by ≥ 3 s.e.: thoughts in the mid-training documents beat the same documents without them.
3. **RL adds over SFT(think)** (Interplay C6, Thinking mid-training step 4): (c) − SFT(think) ≥ 0.05 and ≥ 3 s.e.,
   greedy and sampled at T = 1.
4. **Process rewards curb hacking** (Interplay C9): RL with the outcome reward (arm o) ends with more right answers
   on wrong traces and lower verified accuracy than RL with the process reward (arm c), sampled at T = 1.
5. **RL keeps the representation geometry** (PRISM): mean linear CKA over layers of (SFT, SFT+RL) > (base, SFT).

PRISM's dense-vs-sparse weight claim is reported (``analysis``) but is not a claim here: at 0.8M parameters the
learning rate RL needs moves nearly every weight past bf16 resolution; it is checked on SmolLM2-135M instead
(docs/claims.md, docs/real-llm.md).

Every checkpoint is also diagnosed (``midtrain synth diagnose``): per-skill teacher-forced accuracy, verified
accuracy with a trace and answer accuracy without one, per op range. A claim that does not hold is reported as
such with its measured values; evaluation is never tuned to make it pass.

Output (``--out DIR``): ``summary.json`` (per arm and range: verified accuracy per seed and mean ± std, compute,
claims with measured values, diagnostics per checkpoint), ``report.md`` + ``plots/`` and ``report.html`` (plots
embedded), and the stage run directories under ``DIR/runs``. Killing the demo and re-running it resumes.
``--quick`` shrinks every budget (seconds, for CI): its numbers mean nothing, so it says so everywhere a result
would show: ``"quick": true`` and ``"banner"`` in ``summary.json``, the banner atop (and at the foot of) both
reports and on every screen and printed page of the HTML, "not judged (quick run)" instead of yes/NO in the claims
tables, and the banner in the printed summary.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, pstdev, stdev
from typing import Any

from midtrain.config import MAX_SEED, Config, param, read_yaml
from midtrain.console import fmt_num, log, print_table
from midtrain.errors import ConfigError
from midtrain.experiment.claim_plots import plot_claim
from midtrain.experiment.claims import QUICK_BANNER, better_claim, eval_ranges, hacking_claim, ratio_claim, rl_adds_claim, verdict
from midtrain.experiment.document import Figure, Section, Table
from midtrain.experiment.experiment import arm_table, run_dirs
from midtrain.experiment.experiment import run as run_experiment
from midtrain.experiment.graph import ExperimentConfig
from midtrain.experiment.report import build
from midtrain.fileio import atomic_write_json, atomic_write_text, read_json
from midtrain.locks import PathLock
from midtrain.plots import RANGE_COLORS, pyplot, save_png

REPO = Path(__file__).resolve().parents[3]
BASE_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo-base"  # the shipped base checkpoint
QUICK_VARS = {
    "edge_docs": 400,
    "sft_tokens": 20000,
    "rl_steps": 3,
    "rl_batch": 16,
    "eval_total": 50,
    "t1_samples": 2,
    "diag_n": 4,
    "base_tokens": 40000,
}
CHECKPOINTS = {
    "base": "diag_base",
    "SFT(raw)": "diag_sft_raw",
    "SFT(think)": "diag_sft_think",
    "SFT(think) → RLMT": "diag_rlmt",
    "(a)": "diag_a",
    "(b)": "diag_b",
    "(c)": "diag_c",
    "(d)": "diag_d",
}
RANGES = ("id", "edge", "hard")


@dataclass
class DemoConfig(Config):
    """The demo experiment; every budget lives in the experiment file (configs/demo.yaml)."""

    quick: bool = param(False, "Tiny budgets (seconds): checks the machinery, not the science (used in CI).")
    full: bool = param(
        False,
        "All three seeds of the experiment file, where every claim is decided (≤ 45 min on 2 CPU cores); the default "
        "runs seed 0 (≤ 10 min), and a claim one seed cannot settle reads 'needs --full'.",
    )
    seed: int | None = param(None, "Run one seed of the per-seed stages (SFT, RL, evaluation sampling).", ge=0, le=MAX_SEED)
    seeds: list[int] = param(
        [], "Seeds (overrides --seed and --full); default: 0, or the experiment file's (0 1 2) with --full.", ge=0, le=MAX_SEED
    )
    out: str = param("runs/demo", "Output directory: report.md, report.html, summary.json, runs/.")
    from_scratch: bool = param(False, "Pretrain the base again with configs/demo-base.yaml instead of the shipped one.")
    jobs: int = param(2, "Stages run in parallel, one CPU thread each (the demo's models are too small for 2 threads).", ge=1)
    experiment: str = param("", "Experiment file (default: configs/demo.yaml of this checkout).", path="file")
    base_experiment: str = param("", "Experiment that builds the base for --from-scratch (default: configs/demo-base.yaml).", path="file")

    def config_file(self, given: str, name: str) -> Path:
        p = Path(given) if given else REPO / "configs" / name
        if not p.is_file():
            raise ConfigError(f"experiment file not found: {p} (the demo runs from a clone: pip install -e .)")
        return p


def demo_seeds(cfg: DemoConfig, exp_file: Path) -> list[int]:
    """--seeds, else --seed, else the experiment file's seeds with --full (not with --quick), else seed 0."""
    if cfg.seeds:
        return list(cfg.seeds)
    if cfg.seed is not None:
        return [cfg.seed]
    return list(read_yaml(exp_file).get("seeds", [0])) if cfg.full and not cfg.quick else [0]


def load_experiment(
    path: Path, *, out: Path, seeds: list[int], quick: bool, jobs: int = 1, base_path: str | None = None
) -> ExperimentConfig:
    """The experiment file with the demo's output directory, seeds, jobs and (quick) budgets applied."""
    data = read_yaml(path)
    data.update(out=str(out), seeds=seeds, report=False, config_path=str(path), jobs=jobs)
    if quick:
        data["vars"] = {**data.get("vars", {}), **{k: v for k, v in QUICK_VARS.items() if k in data.get("vars", {})}}
    if base_path is not None:
        data["stages"]["base"] = {"path": base_path}
    return ExperimentConfig.from_dict(data, source=str(path))


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "values": values,
        "mean": round(mean(values), 4) if values else None,
        "std": round(pstdev(values), 4) if len(values) > 1 else 0.0,
        "se": round(stdev(values) / math.sqrt(len(values)), 4) if len(values) > 1 else None,  # over seeds
    }


def _read(path: Path, name: str) -> dict[str, Any] | None:
    return read_json(path / name) if (path / name).is_file() else None


def collect(exp: dict[str, Any]) -> dict[str, Any]:
    """Per arm and range the seeds' verified accuracy; per checkpoint the diagnostics; the analysis numbers."""
    seeds = list(exp["arms"])
    arms: dict[str, Any] = {}
    for a in exp["arms"][seeds[0]]:
        arms[a] = {"label": exp["arms"][seeds[0]][a]["label"], "compute": exp["arms"][seeds[0]][a]["compute"]}
        for r in RANGES:
            vals = [exp["arms"][s][a]["verified_acc"].get(r) for s in seeds]
            arms[a][r] = _stats([v for v in vals if v is not None])
    checkpoints: dict[str, Any] = {}
    analysis: dict[str, list[float]] = {"weights_mid": [], "weights_rl": [], "cka_mid": [], "cka_rl": []}
    for s in seeds:
        stages = exp["stages"][s]
        for label, stage in CHECKPOINTS.items():
            d = _read(Path(stages[stage]["out"]), "diagnose.json") if stage in stages else None
            if d:
                checkpoints.setdefault(label, {})[s] = d["ranges"]
        for key in analysis:
            if key not in stages:
                continue
            if key.startswith("weights"):
                w = _read(Path(stages[key]["out"]), "weights.json")
                if w:
                    analysis[key].append(w["fraction_changed"])
            else:
                c = _read(Path(stages[key]["out"]), "cka.json")
                if c:
                    analysis[key].append(mean(c["per_layer"]))
    return {"arms": arms, "checkpoints": checkpoints, "analysis": {k: _stats(v) for k, v in analysis.items()}}


# Eval stages of configs/demo.yaml that the claims compare (greedy unless _t1: T = 1, several samples per problem).
CLAIM_STAGES = {
    "a": "eval_a",
    "b": "eval_b",
    "c": "eval_c",
    "d": "eval_d",
    "sft_think": "eval_sft_think",
    "c_t1": "eval_c_t1",
    "sft_think_t1": "eval_sft_think_t1",
    "outcome_t1": "eval_o_t1",
}


def claims(res: dict[str, Any], stages_by_seed: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The claims with their measured values and standard errors (:mod:`midtrain.experiment.claims`); a claim whose
    stages did not run (another experiment file) is left out."""
    st = CLAIM_STAGES
    got = [
        ratio_claim(stages_by_seed, st["d"], st["a"]),
        better_claim(
            stages_by_seed,
            st["c"],
            st["b"],
            cid="thoughts_vs_raw",
            claim="(c) > (b) on edge verified accuracy, by ≥ 3 s.e.",
            paper="SFT(think) → RL beats SFT(raw) → RL (Thinking mid-training)",
        ),
        rl_adds_claim(stages_by_seed, {"greedy": (st["c"], st["sft_think"]), "T=1": (st["c_t1"], st["sft_think_t1"])}),
        hacking_claim(stages_by_seed, st["outcome_t1"], st["c_t1"], st["sft_think_t1"]),
    ]
    cm, cr = res["analysis"]["cka_mid"]["mean"], res["analysis"]["cka_rl"]["mean"]
    cka = (("base_vs_sft", "cka_mid"), ("sft_vs_rl", "cka_rl"))  # per seed, for the claim's figure and verdict
    if cm is not None and cr is not None:
        got.append(
            {
                "id": "rl_keeps_geometry",
                "claim": "CKA(SFT, SFT+RL) > CKA(base, SFT)",
                "paper": "RL preserves representations (PRISM)",
                "measured": {"base_vs_sft": cm, "sft_vs_rl": cr},
                "values": {k: {**res["analysis"][a], "seeds": len(res["analysis"][a].get("values") or [])} for k, a in cka},
                "holds": cr > cm,
            }
        )
    return [c for c in got if c is not None]


def eval_problems(stages_by_seed: dict[str, dict[str, Any]], stage: str = CLAIM_STAGES["sft_think"]) -> dict[str, int]:
    """Evaluation problems per op range (of the first seed's SFT(think) eval: every eval stage shares the set)."""
    for stages in stages_by_seed.values():
        ranges = eval_ranges(stages[stage]["out"]) if stage in stages else {}
        if ranges:
            return {r: int(g["n"]) for r, g in ranges.items()}
    return {}


def _fmt_measured(m: dict[str, Any]) -> str:
    return ", ".join(f"{k} {fmt_num(v, '.3f')}" for k, v in m.items())


def report_sections(res: dict[str, Any], table: tuple[list[str], list[list[str]]], quick: bool = False) -> Callable[[Path], list[Section]]:
    """The demo's own report sections, shown before the runs' (``extra`` of :func:`midtrain.experiment.report.build`):
    the claims table and one figure per claim, the arms table and figure, the checkpoint diagnostics."""

    def make(plots: Path) -> list[Section]:
        secs = [
            Section(
                "claims",
                [
                    Table(
                        "claims (means over seeds)",
                        ["claim", "paper", "measured", "holds"],
                        [[c["claim"], c["paper"], _fmt_measured(c["measured"]), verdict(c, quick=quick)] for c in res["claims"]],
                        main=True,
                    )
                ],
            ),
            Section("arms", [Table("verified accuracy by op range (mean ± std over seeds)", *table, main=True)]),
        ]
        for c in res["claims"]:  # one figure per claim: the compared arms with their standard errors
            fig = plot_claim(c, plots / f"claim_{c['id']}.png", verdict=f"holds: {verdict(c, quick=quick)}")
            if fig:
                how = "each arm's mean ± 1 s.e.; Δ: the paired difference ± s.e. that the verdict reads"
                secs[0].blocks.append(Figure(fig, f"{c['id']}: {how} (holds: {verdict(c, quick=quick)})"))
        img = plot_arms(res["arms"], plots / "demo_arms.png")
        if img:
            secs[1].blocks.append(Figure(img, "verified accuracy per arm and op range (mean ± std over seeds)"))
        rows = []
        for label, per_seed in res["checkpoints"].items():
            for r in RANGES:
                vals = [d[r] for d in per_seed.values() if r in d]
                if vals:
                    skills = {k: mean(v["skills"].get(k, 0.0) for v in vals) for k in vals[0]["skills"]}
                    rows.append(
                        [
                            label,
                            r,
                            f"{mean(v['trace_acc'] for v in vals):.3f}",
                            f"{mean(v['direct_acc'] for v in vals):.3f}",
                            " ".join(f"{k} {v:.2f}" for k, v in skills.items()),
                        ]
                    )
        if rows:
            secs.append(
                Section(
                    "checkpoint diagnostics",
                    [
                        Table(
                            "greedy accuracy with a trace / direct answer, teacher-forced skill accuracy (mean over seeds)",
                            ["checkpoint", "range", "with trace", "direct", "skills"],
                            rows,
                        )
                    ],
                )
            )
        return secs

    return make


def plot_arms(arms: dict[str, Any], path: Path) -> Path | None:
    """Verified accuracy per arm (groups) and op range (bars, the report's range colours), mean ± std over seeds."""
    if not arms:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(RANGES)
    names = list(arms)
    for j, r in enumerate(RANGES):
        means = [arms[a][r]["mean"] or 0.0 for a in names]
        stds = [arms[a][r]["std"] or 0.0 for a in names]
        ax.bar([i + (j - 1) * width for i in range(len(names))], means, width, yerr=stds, capsize=3, color=RANGE_COLORS.get(r), label=r)
    ax.set_xticks(range(len(names)), [arms[a]["label"].replace(" → ", "→\n") for a in names], fontsize=7)
    ax.set_ylabel("verified accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)  # off the bars
    ax.grid(axis="y", alpha=0.3)
    return save_png(fig, path)


def demo(cfg: DemoConfig) -> DemoResult:
    """Run the demo (see the module docstring); a second demo on the same ``--out`` fails at once."""
    with PathLock(cfg.out, "demo directory"):
        return _demo(cfg)


def _demo(cfg: DemoConfig) -> DemoResult:
    t0 = time.time()
    if cfg.quick:
        print(QUICK_BANNER, flush=True)  # first, before any table a reader could take for a result
    out = Path(cfg.out)
    exp_file = cfg.config_file(cfg.experiment, "demo.yaml")
    seeds = demo_seeds(cfg, exp_file)
    base_path = None
    if cfg.from_scratch:
        base_cfg = load_experiment(
            cfg.config_file(cfg.base_experiment, "demo-base.yaml"),
            out=out / "base-build",
            seeds=read_yaml(cfg.config_file(cfg.base_experiment, "demo-base.yaml"))["seeds"],
            quick=cfg.quick,
            jobs=cfg.jobs,
        )
        log(f"demo: rebuilding the base with {base_cfg.config_path} → {out / 'base-build'}")
        built = run_experiment(base_cfg)
        base_path = str(Path(built.data["stages"][str(base_cfg.seeds[0])][base_cfg.base]["out"]).resolve())
    exp = load_experiment(exp_file, out=out / "runs", seeds=seeds, quick=cfg.quick, jobs=cfg.jobs, base_path=base_path)
    data = run_experiment(exp).data
    res = collect(data)
    res["claims"] = claims(res, data["stages"])
    table = arm_table(data)
    summary = {
        "seeds": seeds,
        "eval_problems": eval_problems(data["stages"]),
        "quick": cfg.quick,
        "banner": QUICK_BANNER if cfg.quick else "",
        "from_scratch": cfg.from_scratch,
        "arms": res["arms"],
        "claims": res["claims"],
        "analysis": res["analysis"],
        "checkpoints": res["checkpoints"],
        "base": data.get("base"),
        "seconds": round(time.time() - t0, 1),
        "experiment": str(exp_file),
    }
    title = "midtrain demo: thinking mid-training in a synthetic world"
    md, ht, plots = build(run_dirs(exp), title, out, extra=report_sections(res, table, cfg.quick), banner=summary["banner"])
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.html", ht)
    atomic_write_json(out / "summary.json", summary)
    if cfg.quick:
        print(QUICK_BANNER)  # above the claims table: its "holds" column is no verdict
    print_table(
        "claims (DESIGN §1.1-1.2)",
        ["claim", "measured", "holds"],
        [[c["claim"], _fmt_measured(c["measured"]), verdict(c, quick=cfg.quick)] for c in res["claims"]],
    )
    return DemoResult(str(out), summary)


@dataclass
class DemoResult:
    out: str
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"out": self.out, "summary": self.data}

    def summary(self) -> str:
        line = f"demo: {self.data['seconds']:.0f} s → {self.out}/report.html, {self.out}/report.md, {self.out}/summary.json"
        return f"{self.data['banner']}\n{line}" if self.data.get("banner") else line


__all__ = [
    "CLAIM_STAGES",
    "DemoConfig",
    "demo",
    "collect",
    "claims",
    "eval_problems",
    "load_experiment",
    "plot_arms",
    "report_sections",
]
