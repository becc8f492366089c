"""The one table of ``bench/gpu_check.sh``: read what each part left in OUT and print Markdown.

    python bench/gpu_table.py runs/gpu_check

Reads ``env.txt``, ``<part>.status.json`` (exit code and seconds of each part), ``pretrain.json`` (written by
``bench/bench_train.py --json``), the ``log.jsonl`` of the sft and rl runs, ``demo/summary.json`` and
``demo-full/summary.json``. A part that failed or timed out shows its exit code instead of numbers; a part left out
(``GPU_CHECK_PARTS``) reads "not run".
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

DEMO_FULL_BUDGET_S = 600  # issue 31: `midtrain demo --full` in ≤ 10 minutes on one GPU (gpu_check.sh's DEMO_FULL_BUDGET)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _log(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def _status(out: Path, part: str) -> str:
    st = _json(out / f"{part}.status.json")
    if st is None:
        return "not run"
    rc = st["rc"]
    return f"ok, {st['seconds']} s" if rc == 0 else ("timed out" if rc in (124, 137) else f"failed (rc {rc})")


def rows(out: Path) -> list[tuple[str, str, str]]:
    table: list[tuple[str, str, str]] = []
    for r in _json(out / "pretrain.json") or []:
        table.append(
            (
                f"pretrain {r['preset']} {r['precision']} seq {r['seq_len']} × batch {r['batch_size']}",
                f"bare {r['bare_tok_s']:,.0f} tok/s ({r['bare_mfu']:.1%} MFU); midtrain {r['midtrain_tok_s']:,.0f} tok/s "
                f"({r['midtrain_mfu']:.1%} MFU); ratio {r['ratio']:.2f}; log MFU max {r.get('log_mfu_max', float('nan')):.1%}",
                _status(out, "pretrain"),
            )
        )
    if not table:
        table.append(("pretrain interplay-100m bf16", "-", _status(out, "pretrain")))
    sft = _log(out / "sft-run" / "log.jsonl")
    table.append(
        (
            "sft (demo base)",
            f"loss {sft[0]['loss']:.3f} → {sft[-1]['loss']:.3f}, {sft[-1]['tok_s']:,.0f} tok/s" if sft else "-",
            _status(out, "sft"),
        )
    )
    rl = _log(out / "rl-run" / "log.jsonl")[1:]  # the first step compiles kernels and warms caches
    if rl:
        step = statistics.median(r["step_s"] for r in rl)
        gen = statistics.median(r["gen_s"] / max(r["step_s"], 1e-9) for r in rl)
        rl_text = f"{step:.2f} s/step, generation {gen:.0%}, reward {rl[-1]['reward_mean']:.3f}"
    else:
        rl_text = "-"
    table.append(("rl (demo base, 8 prompts × 8, 96 tokens)", rl_text, _status(out, "rl")))
    demo = _json(out / "demo" / "summary.json")
    st = _json(out / "demo.status.json")
    table.append(("midtrain demo (defaults)", f"wall {st['seconds']} s" if demo and st else "-", _status(out, "demo")))
    full = _json(out / "demo-full" / "summary.json")
    st = _json(out / "demo-full.status.json")
    full_text = f"wall {st['seconds']} s ({'within' if st['seconds'] <= DEMO_FULL_BUDGET_S else 'OVER'} budget)" if full and st else "-"
    table.append((f"midtrain demo --full (budget {DEMO_FULL_BUDGET_S} s)", full_text, _status(out, "demo-full")))
    return table


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/gpu_check")
    env = (out / "env.txt").read_text(encoding="utf-8").splitlines() if (out / "env.txt").is_file() else []
    print("# GPU check: " + (env[0] if env else "unknown device"))
    print("\n" + "; ".join(env[1:]) + "\n")
    print("| part | result | status |\n|---|---|---|")
    for name, result, status in rows(out):
        print(f"| {name} | {result} | {status} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
