#!/usr/bin/env bash
# The prepared GPU check: one script, offline, ≤ 8 minutes on one H100/H200, one table at the end.
#
#   bash bench/gpu_check.sh [OUT_DIR]
#
# Runs on a machine that has torch with CUDA but reaches no package registry: the project's other dependencies
# come from local wheels in .whl/ when they are not importable already (see bench/RESULTS.md, "GPU check", for the exact `pip download` line), installed
# with --no-index into /tmp/midtrain-site and put on PYTHONPATH with the checkout's src/. What it measures:
#   1. pretrain: `midtrain pretrain` vs a bare PyTorch loop on the interplay-100m preset (101.9M parameters),
#      bf16, seq 1024, batch 16: tok/s, the ratio, and MFU against the chip's dense bf16 peak;
#   2. sft: a short `midtrain sft` run on CUDA (loss must fall);
#   3. rl: `midtrain rl` on the shipped demo base, 8 prompts × 8 completions: s/step and the generation share;
#   4. demo: the wall time of `midtrain demo` (defaults).
# Every part has its own time limit, writes its log under OUT_DIR, and a failed part is reported in the table
# rather than stopping the rest. GPU_CHECK_SMOKE=1 shrinks every part (micro preset, short runs, demo --quick) to
# check the script itself on a CPU in about two minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-runs/gpu_check}}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
if ! "$PY" -c "import trl, datasets, math_verify" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/midtrain-site .whl/*.whl \
    || { echo "gpu_check: installing .whl/ failed" >&2; exit 1; }
  export PYTHONPATH="$PWD/src:/tmp/midtrain-site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
MT=("$PY" -m midtrain)
if [ "${GPU_CHECK_SMOKE:-0}" = 1 ]; then
  PRESET=micro SEQ=256 BATCH=8 STEPS=12 DEVICE=auto SFT_STEPS=6 RL_STEPS=3 DEMO=(--quick)
else
  PRESET=interplay-100m SEQ=1024 BATCH=16 STEPS=60 DEVICE=cuda SFT_STEPS=30 RL_STEPS=10 DEMO=()
fi

"$PY" - <<'EOF' | tee "$OUT/env.txt"
import importlib.metadata as m, torch
print("device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device")
print("torch", torch.__version__, "| cuda", torch.version.cuda)
for p in ("transformers", "trl", "accelerate", "datasets", "tokenizers", "pyarrow", "math-verify"):
    try:
        print(p, m.version(p))
    except m.PackageNotFoundError:
        print(p, "missing")
EOF

part() {  # part NAME SECONDS CMD...: run with a time limit, log to OUT/NAME.log, record status and seconds
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout --signal=TERM --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "{\"part\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0))}" >"$OUT/$name.status.json"
  echo "gpu_check: $name rc=$rc in $((SECONDS - t0)) s (log: $OUT/$name.log)"
}

part pretrain 200 "$PY" bench/bench_train.py --device "$DEVICE" --presets "$PRESET" --precisions bf16 \
  --seq-len "$SEQ" --batch-size "$BATCH" --steps "$STEPS" --json "$OUT/pretrain.json"
part sft 90 bash -c "set -e
  $PY -m midtrain synth generate --preset tiny-id --render compact --modulus 10 --order dependency --n 400 --seed 3 --out $OUT/sft-data.jsonl
  $PY -m midtrain sft --model src/midtrain/assets/demo-base --corpus.files $OUT/sft-data.jsonl --corpus.format prompt_completion \
    --max-steps $SFT_STEPS --batch-size 16 --seq-len 256 --log-every-steps 2 --out $OUT/sft-run --overwrite"
part rl 120 bash -c "set -e
  $PY -m midtrain synth generate --preset tiny-edge --render compact --modulus 10 --order dependency --n 64 --seed 4 --out $OUT/rl-data.jsonl
  $PY -m midtrain rl --model src/midtrain/assets/demo-base --data $OUT/rl-data.jsonl --reward synthetic_process \
    --rollout.num-generations 8 --per-device-batch-size 64 --rollout.max-completion-length 96 --max-steps $RL_STEPS --save-every-steps 0 \
    --optim.lr 1e-4 --out $OUT/rl-run --overwrite"
part demo 240 "${MT[@]}" demo "${DEMO[@]}" --out "$OUT/demo"

"$PY" bench/gpu_table.py "$OUT" | tee "$OUT/table.md"
