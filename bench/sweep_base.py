"""Summarise pretraining runs with skill diagnostics: tokens-to-skill table and curves (docs/demo-recipe.md).

    .venv/bin/python bench/sweep_base.py runs/demo-base-sweep [runs/demo-base ...] --plots docs/img

Each argument is an experiment output directory (or a run directory). For every pretraining run found below it
(a ``diagnostics.jsonl`` beside a ``log.jsonl``) it prints one Markdown row: parameters, tokens until the greedy
verified accuracy with a trace on in-distribution problems first reaches 0.5 and 0.8, the last diagnostic's
accuracy with a trace and with a direct answer, a final ``synth diagnose`` on edge ops when one exists
(``final_<run>``), throughput and wall time. With ``--plots`` it writes ``sweep_trace_acc.png`` (accuracy vs
tokens, one line per run) and ``skills_<run>.png`` (teacher-forced accuracy per skill vs tokens).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def parameters(run: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(run / "model.safetensors"), "pt") as f:
        return sum(_prod(f.get_slice(k).get_shape()) for k in f.keys())


def _prod(shape: list[int]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def first_reaching(rows: list[dict], tokens_per_step: int, level: float) -> str:
    for r in rows:
        if r["trace_acc"] >= level:
            return f"{r['step'] * tokens_per_step / 1e6:.2f}M"
    return "–"


def runs_under(paths: list[str]) -> list[Path]:
    found = []
    for p in map(Path, paths):
        found += sorted(
            d.parent for d in p.rglob("diagnostics.jsonl") if (d.parent / "log.jsonl").is_file() and "checkpoint" not in str(d.parent)
        )
    return found


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--plots", default="", help="Directory for the PNG curves.")
    args = ap.parse_args()
    curves = {}
    print("| run | params | tokens | ID ≥ 0.5 at | ID ≥ 0.8 at | ID with trace | ID direct | edge with trace | tok/s | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in runs_under(args.dirs):
        meta = json.loads((run / "midtrain.json").read_text())
        cfg, m = meta["config"], meta.get("metrics", {})
        tps = cfg["batch_size"] * cfg["seq_len"] * cfg["optim"].get("grad_accum_steps", 1)
        diag = read_jsonl(run / "diagnostics.jsonl")
        logs = read_jsonl(run / "log.jsonl")
        final = run.parent / f"final_{run.name}" / "diagnose.json"
        edge = json.loads(final.read_text())["ranges"].get("edge", {}).get("trace_acc") if final.is_file() else None
        last = diag[-1] if diag else {}
        tok_s = sum(r.get("tok_s", 0) for r in logs) / max(len(logs), 1)
        print(
            f"| {run.name} | {parameters(run):,} | {m.get('tokens', 0) / 1e6:.1f}M | {first_reaching(diag, tps, 0.5)} "
            f"| {first_reaching(diag, tps, 0.8)} | {last.get('trace_acc', '–')} | {last.get('direct_acc', '–')} "
            f"| {'–' if edge is None else edge} | {tok_s:,.0f} | {meta.get('seconds', 0) / 60:.1f} min |"
        )
        curves[run.name] = (tps, diag)
    if args.plots and curves:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = Path(args.plots)
        out.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, (tps, diag) in curves.items():
            ax.plot([r["step"] * tps / 1e6 for r in diag], [r["trace_acc"] for r in diag], marker=".", label=name)
        ax.set_xlabel("pretraining tokens (M)")
        ax.set_ylabel("ID verified accuracy with a trace (greedy)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "sweep_trace_acc.png", dpi=110)
        plt.close(fig)
        for name, (tps, diag) in curves.items():
            fig, ax = plt.subplots(figsize=(6, 3.5))
            skills = sorted({k for r in diag for k in r["skills"]})
            for s in skills:
                ax.plot([r["step"] * tps / 1e6 for r in diag], [r["skills"].get(s) for r in diag], marker=".", label=s)
            ax.plot([r["step"] * tps / 1e6 for r in diag], [r["trace_acc"] for r in diag], "k--", label="verified (trace)")
            ax.set_xlabel("pretraining tokens (M)")
            ax.set_ylabel("teacher-forced accuracy")
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, ncol=2)
            ax.set_title(name, fontsize=9)
            fig.tight_layout()
            fig.savefig(out / f"skills_{name}.png", dpi=110)
            plt.close(fig)


if __name__ == "__main__":
    main()
