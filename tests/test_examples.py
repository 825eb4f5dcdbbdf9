"""The shipped examples: they validate, and the demo runs end to end and draws the masks."""

from __future__ import annotations

import subprocess

import pytest

from support.dataflows import BIN, ROOT, run_dataflow

EXAMPLES = sorted((ROOT / "examples").glob("*.yml"))


@pytest.mark.parametrize("dataflow", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_dataflows_validate(dataflow):
    result = subprocess.run([str(BIN / "dora"), "validate", "--offline", str(dataflow)],
                            capture_output=True, text=True, env={"RUST_BACKTRACE": "0", "PATH": str(BIN)})
    assert result.returncode == 0, result.stdout + result.stderr


def test_node_manifest_validates():
    result = subprocess.run([str(BIN / "dora"), "validate", "--node-manifest", str(ROOT / "dora-node.yml")],
                            capture_output=True, text=True, env={"RUST_BACKTRACE": "0", "PATH": str(BIN)})
    assert result.returncode == 0 and "Node manifest OK" in result.stdout, result.stdout + result.stderr


def test_a_broken_dataflow_does_not_validate(tmp_path):
    """The check above can fail: an input wired to an output nobody declares is refused."""
    broken = tmp_path / "broken.yml"
    broken.write_text("nodes:\n  - id: a\n    path: a.py\n    inputs: {image: nowhere/image}\n")
    result = subprocess.run([str(BIN / "dora"), "validate", "--offline", str(broken)],
                            capture_output=True, text=True, env={"RUST_BACKTRACE": "0", "PATH": str(BIN)})
    assert result.returncode != 0


@pytest.mark.dataflow
def test_demo_dataflow_writes_annotated_frames(tmp_path, model_dir):
    """Run from the repository root, as demo.sh does. There dora 1.x's `uv run which` must leave the
    project alone (pyproject's tool.uv managed = false): a uv sync would swap in a CUDA torch."""
    out = tmp_path / "demo"
    run = run_dataflow(tmp_path, (ROOT / "examples" / "demo.yml").read_text().replace(
        "path: nodes/", f"path: {ROOT}/examples/nodes/"), cwd=ROOT, env={
        "MODEL": str(model_dir), "OUT_DIR": str(out), "FRAMES": "6",
        "BOXES": '[[20, 90, 160, 180, "block"], [430, 190, 530, 290, "disc"]]'})
    assert run.returncode == 0, run.log[-4000:]
    assert not (ROOT / "uv.lock").exists()
    frames = sorted(out.glob("frame_*.png"))
    assert len(frames) == 6 and (out / "overlay.mp4").stat().st_size > 0  # every frame answered: a clip
    assert any("block covers" in line for line in run.node_log("report"))
