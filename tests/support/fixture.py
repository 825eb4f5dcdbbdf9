"""The trained fixture (models/world-sam2) and the held-out world clips it is judged on, for the tests that
need masks that mean something (test_fixture, test_track_quality, test_grow): the benchmark's own clips and
scorer (benchmarks/quality.py), one place that says where they live."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "models" / "world-sam2"
SEED = 2000  # held out: the fixture trains on seed 0 and watches seed 1000
sys.path.insert(0, str(ROOT / "benchmarks"))
import quality  # noqa: E402

needs_fixture = pytest.mark.skipif(not (FIXTURE / "model.safetensors").is_file(),
                                   reason="models/world-sam2 is not in this checkout (scripts/make-fixture.sh makes it)")


def world_clip(scenario: str, frames: int, index: int = 0, **event) -> quality.Clip:
    """One held-out clip of `scenario`, `index` of seed SEED, at the benchmark's size and frame rate."""
    from dora_sam2.world import Footage, Format, SCENARIOS

    fmt = Format(320, 240, fps=30.0, frames=frames)
    footage = Footage(quality.FOOTAGE) if quality.FOOTAGE.is_file() else None
    return quality.clip_of(SCENARIOS[scenario]((SEED, index), fmt, **event), fmt, footage, min_area=16)
