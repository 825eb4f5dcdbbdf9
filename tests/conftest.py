"""The suite's fixtures: a random-weight SAM2 made by the suite, and a runner for real `dora run` dataflows.
What tests share besides fixtures lives in `support/`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from dora_sam2.random_model import make_random_model

from support.dataflows import DataflowRun, run_dataflow

collect_ignore = ["nodes"]  # dora node scripts, run by dataflows: importing one would start a node


@pytest.fixture(autouse=True)
def subnormals_as_a_fresh_process_has_them():
    """A model loaded in the suite's process takes subnormal floats as zero on this thread from then on
    (devices.prepare_cpu), as a node does; each test starts as a fresh process would. hypothesis refuses
    to draw floats where subnormals are zero."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_flush_denormal(False)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A small random-weight SAM2 (the real architecture, shrunk): fast, and meaningless masks.

    DORA_SAM2_TEST_MODEL=DIR runs the suite on another checkpoint (real weights, or hiera-tiny's size
    to time the end-to-end tests as a user would see them)."""
    if os.environ.get("DORA_SAM2_TEST_MODEL"):
        return Path(os.environ["DORA_SAM2_TEST_MODEL"])
    return make_random_model(tmp_path_factory.mktemp("model") / "sam2-test", size="test", seed=0)


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory) -> Path:
    """The same small model at a 256-pixel input (every feature map and memory 4x smaller): for runs of
    hundreds of tracked frames."""
    return make_random_model(tmp_path_factory.mktemp("micro") / "sam2-micro", size="micro", seed=0)


@pytest.fixture(scope="session")
def sam3_dir(tmp_path_factory) -> Path:
    """A small random-weight SAM 3 in facebook/sam3's layout (detector, tracker, one ViT), with tokenizer
    files made here."""
    return make_random_model(tmp_path_factory.mktemp("sam3") / "sam3-test", size="sam3-test", seed=0)


@pytest.fixture(scope="session")
def model(model_dir):
    from dora_sam2.model import Sam2Backend

    return Sam2Backend.load(str(model_dir), dtype="float32")


@pytest.fixture
def dataflow(tmp_path):
    """`dataflow(yaml)` runs it to its end in this test's directory: a `DataflowRun`."""
    def _run(yaml_text: str, **kwargs) -> DataflowRun:
        return run_dataflow(tmp_path, yaml_text, **kwargs)
    return _run
