"""The overlay in the real dora-rerun. dora-rerun 0.5.0 (its newest release) speaks only the dora 0.5
daemon protocol, so this runs the 0.5 runtime: dora-rs-cli, dora-rs and dora-rerun 0.5.0 in a venv of
their own, our node on dora-rs 0.5.0's Python API (examples/rerun.yml documents the pairing)."""

from __future__ import annotations

import os
import subprocess
import venv

import pytest

from conftest import BIN, EXAMPLES

pytestmark = pytest.mark.dataflow
DORA_05 = ["dora-rs-cli==0.5.0", "dora-rs==0.5.0", "dora-rerun==0.5.0", "pyyaml"]


@pytest.fixture(scope="module")
def dora05(tmp_path_factory):
    root = tmp_path_factory.mktemp("dora05")
    venv.create(root, with_pip=True)
    pip = subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", *DORA_05],
                         capture_output=True, text=True, timeout=600)
    if pip.returncode != 0:
        pytest.skip(f"could not install the dora 0.5 runtime from the package registry: {pip.stderr[-300:]}")
    site = subprocess.run([str(root / "bin" / "python"), "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    return root / "bin", site


def test_dora_rerun_records_the_overlay(dora05, tmp_path, model_dir):
    bin05, site05 = dora05
    # Our nodes run on this project's Python, with dora-rs 0.5.0 put first on their path.
    env = f'PYTHONPATH: "{site05}"'
    (tmp_path / "rerun.yml").write_text(f"""
nodes:
  - id: camera
    path: {EXAMPLES}/camera.py
    outputs: [image]
    env: {{FRAMES: "4", FPS: "2", {env}}}
  - id: yolo
    path: {EXAMPLES}/fixed_detector.py
    inputs: {{image: camera/image}}
    outputs: [bbox]
    env: {{{env}}}
  - id: sam2
    path: {BIN}/dora-sam2
    inputs: {{image: camera/image, bbox: yolo/bbox}}
    outputs: [mask, overlay]
    env: {{MODEL: "{model_dir}", WARMUP: "0", {env}}}
  - id: rerun
    path: dora-rerun
    inputs: {{overlay: sam2/overlay}}
    env: {{OPERATING_MODE: SAVE}}
""")
    run_env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{bin05}{os.pathsep}{os.environ.get('PATH', '')}",
                   RUST_BACKTRACE="0", HF_HUB_OFFLINE="1")
    result = subprocess.run([str(bin05 / "dora"), "run", str(tmp_path / "rerun.yml")], cwd=tmp_path, env=run_env,
                            capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "sam2 finished successfully" in log and "Traceback" not in log
    archives = list((tmp_path / "out").glob("*/archive-*.rerun"))
    assert len(archives) == 1, log[-3000:]
    recording = archives[0].read_bytes()
    assert b"/overlay" in recording and len(recording) > 50_000  # four 640x480 overlay images, compressed
