#!/usr/bin/env bash
# Creates .venv-ref: a side environment where transformers' reference SAM2 processor (torchvision) and
# EdgeTAM's backbone (timm) import. torchvision has no build that imports beside the CPU torch of .venv,
# so this one takes the registry's own torch 2.14.1 (a CUDA build; it runs without a GPU) with
# torchvision 0.29.1. A few GB, all from the package registry. .venv stays on the CPU torch.
# Used by CI for the processor parity check and EdgeTAM's tests (tests/test_reference.py runs
# tests/test_edgetam.py here); run it once by hand to do the same.
#
#   scripts/reference-env.sh           # what CI needs
#   scripts/reference-env.sh --peers   # and what benchmarks/peers.py compares with: Meta's sam2, matplotlib
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-ref/bin/python ]; then python3 -m venv .venv-ref; fi
.venv-ref/bin/python -m pip install -q --upgrade pip
.venv-ref/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" "timm>=1.0" pytest dora-rs-cli
# Our package without its torch pin: the torch above stays.
.venv-ref/bin/python -m pip install -q -e .
.venv-ref/bin/python -c "import torchvision, timm; from transformers import Sam2Processor" 
if [ "${1:-}" = "--peers" ]; then
  # Meta's sam2 builds a CUDA extension by default and imports torch in its setup.py: without the
  # extension (it only fills small holes in masks) and against the torch above, not a fresh download.
  .venv-ref/bin/python -m pip install -q -e ".[bench]" setuptools hydra-core iopath
  SAM2_BUILD_CUDA=0 .venv-ref/bin/python -m pip install -q --no-build-isolation "sam2==1.1.0"
  .venv-ref/bin/python -c "import matplotlib, sam2.build_sam"
fi
