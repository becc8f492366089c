"""``midtrain synth generate | verify | stats | diagnose``: the command line of the controlled synthetic world.

- ``generate`` draws ``n`` distinct problems (``world.generate_problems``) and writes them atomically as JSONL::

      midtrain synth generate --ops 2-8 --contexts zoo,teachers,movies --n 300 --seed 1 --out problems.jsonl
      midtrain synth generate --preset tiny-id --render compact --modulus 10 --order dependency --out id.jsonl

- ``verify`` process-verifies completions (``{"id", "completion"}`` lines, several per id allowed) against the
  problems and prints accuracy, ProcessAcc, pass@k and mismatch counts, overall and by op, context and mode
  (``--json``: the ``verify.summarize`` dictionary). Without ``--completions`` it checks the problems' own gold
  completions, which must all verify::

      midtrain synth verify --problems problems.jsonl --completions completions.jsonl --json

- ``stats`` prints op, context and mode histograms and length percentiles of prompt, completion and both, in
  characters or, with ``--tokenizer DIR``, in tokens::

      midtrain synth stats problems.jsonl --tokenizer runs/tok

- ``diagnose`` runs the skill diagnostic of :mod:`midtrain.synth.diagnose` on a checkpoint: for each named op range
  (``--op-scale`` tiny: id 2-5, edge 6-8, hard 9-12; paper: 2-10, 11-14, 15-20; or ``op_ranges``) it takes the
  first ``n_per_range`` compact problems of the files (in file order) and measures teacher-forced next-token
  accuracy per skill (plan, fact, copy, arith, solve, answer, format) and greedy verified accuracy with a trace
  and with a direct answer, overall and per op. Ranges without problems are skipped. It writes ``diagnose.json``
  into the run directory ``out`` (cached: the same model, problems and config do nothing the second time)::

      midtrain synth diagnose runs/sft --problems id.jsonl edge.jsonl --n-per-range 64 --out runs/diagnose-sft
      midtrain synth diagnose runs/rl --problems test.jsonl --op-ranges '{short: [2, 3], long: [7, 8]}' --out runs/diag-rl
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from midtrain import synth_eval
from midtrain.config import Config, param
from midtrain.console import log, torch_threads
from midtrain.data import iter_jsonl, read_all, write_jsonl
from midtrain.errors import ConfigError, DataError
from midtrain.runs import Result, atomic_write_json, open_run
from midtrain.synth.verify import DEFAULT_KS, gold_of, summarize
from midtrain.synth.world import SynthConfig, generate_problems

PROBLEM_FIELDS = ("id", "op", "context", "mode", "render", "answer", "graph", "prompt", "completion")
DIAGNOSE_FIELDS = ("prompt", "completion", "op", "graph", "render", "answer")
DIAGNOSE_JSON = "diagnose.json"


@dataclass
class VerifyConfig(Config):
    problems: str = param("", "Problem JSONL written by 'synth generate'.")
    completions: str | None = param(None, "JSONL of {id, completion} lines (several per id allowed); default: "
                                    "the problems' own gold completions.")
    ks: list[int] = param(list(DEFAULT_KS), "k values of pass@k (values above the samples per problem are skipped).")

    def check(self) -> None:
        if not self.problems:
            raise ConfigError("key 'problems': give the problem JSONL (--problems problems.jsonl)")
        if not self.ks or any(k < 1 for k in self.ks):
            raise ConfigError(f"key 'ks': give positive integers, got {self.ks}")


@dataclass
class StatsConfig(Config):
    file: str = param("", "Problem JSONL to describe.", positional=True)
    tokenizer: str | None = param(None, "Tokenizer directory: lengths in tokens instead of characters.")

    def check(self) -> None:
        if not self.file:
            raise ConfigError("key 'file': give the problem JSONL to describe")


@dataclass
class SynthDiagnoseConfig(Config):
    model: str = param("", "Model checkpoint directory to diagnose.", positional=True)
    problems: list[str] = param([], "Synthetic problem JSONL files rendered compact (midtrain synth generate "
                                "--render compact); records need prompt, completion, op, graph, render, answer.")
    op_scale: Literal["paper", "tiny"] = param("tiny", "Named op ranges: paper (id 2-10, edge 11-14, hard 15-20) or "
                                               "tiny (id 2-5, edge 6-8, hard 9-12).")
    op_ranges: dict[str, list[int]] = param({}, "Custom named op ranges {name: [lo, hi]} (inclusive); replaces "
                                            "op_scale when given.")
    n_per_range: int = param(64, "Diagnose the first N problems of each range, in file order.")
    batch_size: int = param(32, "Sequences per forward pass / generation batch.")
    threads: int = param(0, "torch intra-op threads (0 = torch's default).")
    out: str = param("", "Output run directory (diagnose.json).")
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")

    def check(self) -> None:
        if not self.model:
            raise ConfigError("key 'model': give a model checkpoint directory")
        if not self.out:
            raise ConfigError("key 'out': give an output run directory (--out runs/diagnose)")
        if not self.problems:
            raise ConfigError("key 'problems': give compact synthetic problem JSONL files (--problems id.jsonl)")
        if self.n_per_range < 1:
            raise ConfigError(f"key 'n_per_range': must be at least 1, got {self.n_per_range}")
        if self.batch_size < 1:
            raise ConfigError(f"key 'batch_size': must be at least 1, got {self.batch_size}")
        if self.threads < 0:
            raise ConfigError(f"key 'threads': must be >= 0, got {self.threads}")
        for name, r in self.op_ranges.items():
            if len(r) != 2 or r[0] > r[1]:
                raise ConfigError(f"key 'op_ranges.{name}': expected [lo, hi] with lo <= hi, got {r}")

    def ranges(self) -> dict[str, list[int]]:
        return dict(self.op_ranges) or synth_eval.scale_ranges(self.op_scale)


# -- results ----------------------------------------------------------------------------------------------------
def _hist_line(label: str, hist: dict[str, int]) -> str:
    return f"{label:<8} " + "  ".join(f"{k}: {v}" for k, v in hist.items())


def _hist(values: list[Any]) -> dict[str, int]:
    c = Counter(values)
    keys = sorted(c, key=lambda x: (isinstance(x, str), x))
    return {str(k): c[k] for k in keys}


@dataclass
class GenerateResult:
    out: str
    n: int
    seconds: float
    ops: dict[str, int] = field(default_factory=dict)
    contexts: dict[str, int] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"out": self.out, "n": self.n, "seconds": self.seconds, "ops": self.ops, "contexts": self.contexts,
                "modes": self.modes}

    def summary(self) -> str:
        rate = self.n / self.seconds if self.seconds > 0 else float("inf")
        return "\n".join([f"synth generate: {self.n} problems → {self.out} ({rate:.0f}/s)",
                          _hist_line("op", self.ops), _hist_line("context", self.contexts),
                          _hist_line("mode", self.modes)])


@dataclass
class VerifyResult:
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def summary(self) -> str:
        d = self.data
        lines = [
            f"synth verify: {d['n']} completions of {d['problems']} problems ({d['unanswered']} without completions)",
            f"verified_acc {d['verified_acc']:.4f}  process_acc {d['process_acc']:.4f}  outcome_acc "
            f"{d['outcome_acc']:.4f}  correct answer, wrong trace: {d['correct_answer_wrong_trace']}",
            "reward   " + "  ".join(f"{k} {v:.4f}" for k, v in d["reward"].items()),
            "pass@k   " + ("  ".join(f"@{k} {v:.4f}" for k, v in d["pass_at_k"].items()) or "-"),
            "mismatch " + "  ".join(f"{k} {v}" for k, v in d["mismatches"].items()),
            "reasons  " + "  ".join(f"{k}: {v}" for k, v in d["reasons"].items()),
        ]
        for key in ("by_op", "by_context", "by_mode"):
            label = key[3:]
            lines.append(f"\n{label:<10} {'n':>6} {'verified':>9} {'process':>9} {'outcome':>9}")
            for g, s in d[key].items():
                lines.append(f"{g:<10} {s['n']:>6} {s['verified_acc']:>9.4f} {s['process_acc']:>9.4f} "
                             f"{s['outcome_acc']:>9.4f}")
        return "\n".join(lines)


@dataclass
class StatsResult:
    file: str
    n: int
    unit: str
    ops: dict[str, int]
    contexts: dict[str, int]
    modes: dict[str, int]
    renders: dict[str, int]
    lengths: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        lines = [f"{self.file}: {self.n} records", _hist_line("op", self.ops), _hist_line("context", self.contexts),
                 _hist_line("mode", self.modes), _hist_line("render", self.renders),
                 f"\nlength ({self.unit}) " + "".join(f"{q:>8}" for q in ("mean", "p50", "p90", "p99", "max"))]
        for name, s in self.lengths.items():
            lines.append(f"{name:<16}" + "".join(f"{s[q]:>8.1f}" if q == "mean" else f"{s[q]:>8.0f}"
                                                 for q in ("mean", "p50", "p90", "p99", "max")))
        return "\n".join(lines)


# -- input ------------------------------------------------------------------------------------------------------
def load_problems(path: str) -> list[dict[str, Any]]:
    """Problem records, each checked to be verifiable; errors name file and line."""
    recs = read_all(path, required=PROBLEM_FIELDS)
    seen: dict[str, int] = {}
    for rec in recs:
        line = rec.get("_line", "?")
        if rec["id"] in seen:
            raise DataError(f"{path}:{line}: duplicate id '{rec['id']}' (first on line {seen[rec['id']]})")
        seen[rec["id"]] = line
        try:
            gold_of(rec)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise DataError(f"{path}:{line}: not a synthetic problem record (bad graph: {type(e).__name__} {e})") from None
    return recs


def load_completions(path: str, ids: set[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for rec in iter_jsonl(path):
        line = rec.get("_line", "?")
        for key in ("id", "completion"):
            if key not in rec:
                raise DataError(f"{path}:{line}: record has no '{key}' field")
        if not isinstance(rec["completion"], str):
            raise DataError(f"{path}:{line}: 'completion' must be a string")
        pid = str(rec["id"])
        if pid not in ids:
            raise DataError(f"{path}:{line}: id '{pid}' is not among the problems")
        out.setdefault(pid, []).append(rec["completion"])
    if not out:
        raise DataError(f"empty dataset: {path} has no completions")
    return out


# -- verbs ------------------------------------------------------------------------------------------------------
def generate(cfg: SynthConfig) -> GenerateResult:
    """Generate problems and write them as JSONL (see the module docstring)."""
    if not cfg.out:
        raise ConfigError("key 'out': give the output JSONL file (--out problems.jsonl)")
    t0 = time.perf_counter()
    recs = generate_problems(cfg)
    seconds = time.perf_counter() - t0
    write_jsonl(cfg.out, recs)
    res = GenerateResult(cfg.out, len(recs), round(seconds, 3), _hist([r["op"] for r in recs]),
                         _hist([r["context"] for r in recs]), _hist([r["mode"] for r in recs]))
    log(f"synth generate: {len(recs)} problems → {cfg.out}")
    return res


def verify(cfg: VerifyConfig) -> VerifyResult:
    """Verify completions against problems (see the module docstring)."""
    problems = load_problems(cfg.problems)
    if cfg.completions:
        completions = load_completions(cfg.completions, {p["id"] for p in problems})
    else:
        completions = {p["id"]: [p["completion"]] for p in problems}
    return VerifyResult(summarize(problems, completions, ks=cfg.ks))


def _percentiles(xs: list[int]) -> dict[str, float]:
    s = sorted(xs)

    def q(p: float) -> float:
        return float(s[min(len(s) - 1, max(0, -(-int(p * len(s)) // 100) - 1))]) if s else 0.0

    return {"mean": round(sum(s) / len(s), 2) if s else 0.0, "p50": q(50), "p90": q(90), "p99": q(99),
            "max": float(s[-1]) if s else 0.0}


def stats(cfg: StatsConfig) -> StatsResult:
    """Histograms and length percentiles of a problem file (see the module docstring)."""
    recs = read_all(cfg.file, required=("op", "context", "mode", "prompt", "completion"))
    texts = {"prompt": [r["prompt"] for r in recs], "completion": [r["completion"] for r in recs]}
    texts["prompt+completion"] = [p + c for p, c in zip(texts["prompt"], texts["completion"])]
    if cfg.tokenizer:
        from midtrain.models import load_tokenizer

        tok = load_tokenizer(cfg.tokenizer)
        unit = "tokens"

        def length(xs: list[str]) -> list[int]:
            return [len(ids) for i in range(0, len(xs), 512)
                    for ids in tok(xs[i:i + 512], add_special_tokens=False)["input_ids"]]
    else:
        unit = "chars"

        def length(xs: list[str]) -> list[int]:
            return [len(x) for x in xs]

    return StatsResult(
        cfg.file, len(recs), unit, _hist([r["op"] for r in recs]), _hist([r["context"] for r in recs]),
        _hist([r["mode"] for r in recs]), _hist([r.get("render", "?") for r in recs]),
        {name: _percentiles(length(xs)) for name, xs in texts.items()},
    )



def select_for_diagnosis(cfg: SynthDiagnoseConfig) -> dict[str, list[dict[str, Any]]]:
    """The first ``n_per_range`` problems of each range (files in order), checked; empty ranges are left out.

    Errors (missing file, missing field, non-integer op, a non-compact record among the selected) name file:line.
    """
    recs: list[tuple[str, dict[str, Any]]] = []
    for path in cfg.problems:
        for rec in read_all(path, required=DIAGNOSE_FIELDS):
            if not isinstance(rec["op"], int) or isinstance(rec["op"], bool):
                raise DataError(f"{path}:{rec.get('_line', '?')}: 'op' must be an integer, got {rec['op']!r}")
            recs.append((path, rec))
    selected: dict[str, list[dict[str, Any]]] = {}
    for name, (lo, hi) in cfg.ranges().items():
        chosen = [(path, rec) for path, rec in recs if lo <= rec["op"] <= hi][: cfg.n_per_range]
        if not chosen:
            log(f"synth diagnose: no problems with op in [{lo}, {hi}]: range '{name}' skipped")
            continue
        for path, rec in chosen:
            if rec["render"] != "compact":
                raise DataError(f"{path}:{rec.get('_line', '?')}: render is '{rec['render']}', but skills are only "
                                "defined for compact renderings (midtrain synth generate --render compact)")
        selected[name] = [rec for _, rec in chosen]
    if not selected:
        raise DataError(f"no problems of {', '.join(cfg.problems)} fall in the op ranges "
                        + ", ".join(f"{k} {lo}-{hi}" for k, (lo, hi) in cfg.ranges().items()))
    return selected


def diagnose(cfg: SynthDiagnoseConfig) -> Result:
    """Skill diagnostic of a checkpoint on the synthetic world; writes diagnose.json (see the module docstring)."""
    from midtrain.synth.diagnose import skill_accuracy, trace_and_direct_accuracy

    selected = select_for_diagnosis(cfg)  # before open_run: bad input leaves no output directory behind
    inputs: dict[str, str] = {"model": cfg.model, **{f"problems[{i}]": p for i, p in enumerate(cfg.problems)}}
    with open_run(cfg.out, "synth-diagnose", cfg, inputs, overwrite=cfg.overwrite) as run:
        if run.cached:
            return Result.of(run)
        import torch

        from midtrain.models import load_model, load_tokenizer

        ranges = cfg.ranges()
        report: dict[str, Any] = {"model": cfg.model, "problems": list(cfg.problems), "ranges": {}}
        metrics: dict[str, Any] = {}
        with torch_threads(cfg.threads), torch.inference_mode():
            model, tok = load_model(cfg.model), load_tokenizer(cfg.model)
            model.eval()
            for name, probs in selected.items():
                t0 = time.perf_counter()
                skills = skill_accuracy(model, tok, probs, batch_size=cfg.batch_size)
                acc = trace_and_direct_accuracy(model, tok, probs, batch_size=cfg.batch_size)
                report["ranges"][name] = {"ops": list(ranges[name]), "n": len(probs), "trace_acc": acc["trace_acc"],
                                          "direct_acc": acc["direct_acc"], "skills": skills, "by_op": acc["by_op"]}
                metrics.update({f"{name}/trace_acc": acc["trace_acc"], f"{name}/direct_acc": acc["direct_acc"],
                                f"{name}/n": len(probs)})
                log(f"synth diagnose: {name} ({len(probs)} problems, {time.perf_counter() - t0:.1f}s) trace_acc "
                    f"{acc['trace_acc']:.4f} direct_acc {acc['direct_acc']:.4f} "
                    + " ".join(f"{k} {v:.3f}" for k, v in skills.items()))
        atomic_write_json(run.path / DIAGNOSE_JSON, report)
        run.finish(metrics)
        return Result.of(run)


__all__ = ["VerifyConfig", "StatsConfig", "SynthDiagnoseConfig", "GenerateResult", "VerifyResult", "StatsResult",
           "load_problems", "load_completions", "select_for_diagnosis", "generate", "verify", "stats", "diagnose"]
