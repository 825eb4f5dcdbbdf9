"""Our pre- and post-processing against transformers' own Sam2Processor, on the same weights.

The processor needs torchvision, which does not import beside the CPU torch of `.venv`; it runs in the
side environment `scripts/reference-env.sh` makes (`.venv-ref`, or DORA_SAM2_REFERENCE_PYTHON). CI
makes it, and there this test must run: it is skipped only outside CI when the environment is absent.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

REFERENCE_PYTHON = Path(os.environ.get("DORA_SAM2_REFERENCE_PYTHON", ROOT / ".venv-ref" / "bin" / "python"))

if not REFERENCE_PYTHON.exists() and not os.environ.get("CI"):
    pytest.skip(f"no reference environment at {REFERENCE_PYTHON} (scripts/reference-env.sh makes it)",
                allow_module_level=True)


def test_masks_match_sam2_processor_for_boxes_and_points():
    result = subprocess.run([str(REFERENCE_PYTHON), str(ROOT / "benchmarks" / "processor_parity.py")],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    report = [line for line in result.stdout.splitlines() if "mask IoU" in line]
    assert {line.split(":")[0] for line in report} == {"3 boxes", "points 1 fg + 1 bg"}, result.stdout + result.stderr
    for line in report:
        ious = [float(v) for v in re.search(r"mask IoU ([\d., ]+)", line).group(1).split(", ")]
        pixels = float(re.search(r"input max \|diff\| ([\d.]+)", line).group(1))
        assert min(ious) >= 0.999 and pixels < 1e-3, line
    assert result.returncode == 0, result.stdout + result.stderr
