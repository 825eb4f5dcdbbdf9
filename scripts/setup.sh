#!/usr/bin/env bash
# Creates .venv with dora-sam2 (editable), its test tools and the dora CLI. Used by demo.sh and CI.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
# CPU torch first: an unpinned torch would pull several GB of CUDA packages. A torch already there stays.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
