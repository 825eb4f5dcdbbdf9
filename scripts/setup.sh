#!/usr/bin/env bash
# Creates .venv with dora-sam2 (editable), its test tools and the dora CLI. Used by demo.sh and CI.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
# CPU torch first: an unpinned torch would pull several GB of CUDA packages. A torch already there stays.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
# quality: the metrics tests/test_quality.py holds (TrackEval, vos-benchmark) and benchmarks/quality.py's peer
# and chart; about 8 s and 230 MB on top of the rest.
.venv/bin/python -m pip install -q -e ".[test,quality]"
