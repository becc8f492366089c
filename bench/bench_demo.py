"""Wall time and peak memory of `midtrain demo` from a fresh clone, measured with /usr/bin/time -v.

    .venv/bin/python bench/bench_demo.py                 # clone HEAD, set up, run the demo (budget: 10 min)
    .venv/bin/python bench/bench_demo.py --no-setup      # reuse this checkout's .venv inside the clone
    .venv/bin/python bench/bench_demo.py --quick         # the CI variant
    .venv/bin/python bench/bench_demo.py --no-setup --jobs 1   # stages one at a time (2 threads each)

Steps: `git clone` of this repository's HEAD into a temporary directory (with ../shared beside it, as in CI),
the README's set-up command (`bash setup.sh`) unless --no-setup, then `midtrain demo` under `/usr/bin/time -v`.
Prints the wall time, the ratio to the 10-minute budget, peak RSS, and the slowest stages from the demo's
experiment.json (seconds per stage), so a regression can be traced to the stage that caused it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 600.0


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int, str]:
    """(wall seconds, peak RSS KiB, stderr) of cmd under /usr/bin/time -v."""
    t0 = time.time()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return wall, int(rss.group(1)) if rss else 0, proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Run `midtrain demo --quick`.")
    ap.add_argument("--no-setup", action="store_true", help="Link this checkout's .venv instead of running setup.sh.")
    ap.add_argument("--keep", action="store_true", help="Keep the temporary clone.")
    ap.add_argument("--jobs", type=int, default=0, help="Pass --jobs N to the demo (default: the demo's own).")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_demo_"))
    clone = tmp / "midtrain"
    env = {**os.environ, "MIDTRAIN_QUIET": "1"}
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        shared = ROOT.parent / "shared"
        if shared.is_dir():
            (tmp / "shared").symlink_to(shared)
        setup_s = 0.0
        if args.no_setup:
            (clone / ".venv").symlink_to((ROOT / ".venv").resolve())
        else:
            setup_s, _, _ = timed(["bash", "setup.sh"], clone, env)
        cmd = (
            [str(clone / ".venv" / "bin" / "midtrain"), "demo", "--out", str(tmp / "demo")]
            + (["--quick"] if args.quick else [])
            + (["--jobs", str(args.jobs)] if args.jobs else [])
        )
        wall, rss, _ = timed(cmd, clone, env)
        exp = json.loads((tmp / "demo" / "runs" / "experiment.json").read_text())
        stages = sorted(((rec.get("seconds", 0.0), f"{name}") for name, rec in exp["stages"][str(exp["seeds"][0])].items()), reverse=True)
        print(
            f"commit {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=clone, capture_output=True, text=True).stdout.strip()}"
            f"  cores {os.cpu_count()}  quick {args.quick}  jobs {args.jobs or 'default'}"
        )
        if not args.no_setup:
            print(f"setup.sh: {setup_s:.0f} s")
        print(
            f"midtrain demo: {wall:.0f} s wall = {wall / BUDGET_S:.2f} x the {BUDGET_S / 60:.0f}-minute budget; "
            f"peak RSS {rss / 1024:.0f} MiB"
        )
        print("slowest stages (s): " + ", ".join(f"{n} {s:.0f}" for s, n in stages[:8]))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")


if __name__ == "__main__":
    main()
