"""What needs torchvision, run in the side environment: our pre- and post-processing against
transformers' own Sam2Processor, and EdgeTAM (its encoder comes from timm, which imports torchvision).

torchvision does not import beside the CPU torch of `.venv`; these run in the side environment
`scripts/reference-env.sh` makes (`.venv-ref`, or DORA_SAM2_REFERENCE_PYTHON). CI makes it, and there
these tests must run: they are skipped only outside CI when the environment is absent.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from support.dataflows import ROOT

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
        ious = [float(v) for v in re.search(r"mask IoU ([\d.]+(?:, [\d.]+)*)", line).group(1).split(", ")]
        areas = [float(v) for v in re.search(r"mask areas ([\d.]+(?:, [\d.]+)*)", line).group(1).split(", ")]
        pixels = float(re.search(r"input max \|diff\| ([\d.]+)", line).group(1))
        correlation = float(re.search(r"logits correlation ([\d.]+)", line).group(1))
        assert min(ious) >= 0.999 and pixels < 1e-3 and correlation >= 0.999, line
        assert all(0.001 < area < 0.999 for area in areas), line  # two empty masks would have IoU 1.0
    assert result.returncode == 0, result.stdout + result.stderr


def test_edgetam_tests_pass_in_the_side_environment():
    """tests/test_edgetam.py: parity with EdgeTamModel and EdgeTamVideoModel, and real dataflows in both
    modes."""
    assert_passes_in_the_side_environment("test_edgetam.py")


def test_edgetam_gpu_paths_in_the_side_environment():
    """tests/test_edgetam_cuda.py: EdgeTAM's segment and track paths on fake `cuda` tensors, as test_cuda.py
    checks SAM 2's (timm needs the side environment, whose CUDA-build torch needs no C++ guard)."""
    assert_passes_in_the_side_environment("test_edgetam_cuda.py")


def test_sam3_detector_matches_its_processor_in_the_side_environment():
    """tests/test_sam3_processor.py: SAM 3's finder held to Sam3Model with Sam3Processor (torchvision)."""
    assert_passes_in_the_side_environment("test_sam3_processor.py")


def assert_passes_in_the_side_environment(test_file: str) -> None:
    """Every test of the file must run there and pass: none may skip."""
    result = subprocess.run([str(REFERENCE_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                             str(ROOT / "tests" / test_file)],
                            capture_output=True, text=True, timeout=1200, cwd=ROOT,
                            env=dict(os.environ, PATH=f"{REFERENCE_PYTHON.parent}{os.pathsep}{os.environ['PATH']}"))
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0 and re.match(r"\d+ passed", summary), result.stdout[-4000:] + result.stderr[-2000:]
    assert not re.search(r"skipped|failed|error", summary), result.stdout[-4000:]
