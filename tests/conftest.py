"""Shared fixtures: a random-weight SAM2 made by the suite, and a runner for real `dora run` dataflows."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from dora_sam2.random_model import make_random_model

collect_ignore = ["nodes"]  # dora node scripts, run by dataflows: importing one would start a node

ROOT = Path(__file__).resolve().parents[1]
NODES = ROOT / "tests" / "nodes"
EXAMPLES = ROOT / "examples" / "nodes"
SHARED_DATA = ROOT.parent / "shared" / "data"
BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


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
def model(model_dir):
    from dora_sam2.model import Sam2Backend
    from dora_sam2.settings import Settings

    return Sam2Backend.load(Settings(model=str(model_dir), dtype="float32"))


def lossless(source: str) -> str:
    """A YAML input that gets every message: dora's direct node-to-node path drops messages when a receiver
    falls behind (dora-rs/dora#3397), `backpressure` routes the output through the daemon and makes the
    sender wait instead. For tests that count every message."""
    return f"{{source: {source}, queue_size: 100, queue_policy: backpressure}}"


@dataclass
class DataflowRun:
    returncode: int
    log: str
    out: Path

    def events(self, name: str = "out") -> list[dict]:
        path = self.out / name / "events.jsonl"
        if not path.exists():
            return []
        events = [json.loads(line) for line in path.read_text().splitlines()]
        for event in events:
            event["value"] = np.load(self.out / name / f"{event['index']:04d}.npy", allow_pickle=True)  # structs
        return events

    def sam2_stats(self) -> dict:
        """What the node says it did (answers, skipped), when its STATS_FILE is $OUT/stats.json."""
        return json.loads((self.out / "stats.json").read_text())

    def node_log(self, node_id: str) -> list[str]:
        """The lines a node wrote, as `dora run` relays them (`... stdout <node>: <line>`)."""
        return [line.split(f" {node_id}: ", 1)[1] for line in self.log.splitlines()
                if f" {node_id}: " in line and (" stdout " in line or " stderr " in line)]


def run_dataflow(tmp_path: Path, yaml_text: str, timeout: float = 900, stop_after: str | None = None,
                 env: dict | None = None, cwd: Path | None = None) -> DataflowRun:
    """Run a dataflow with `dora run` (from tmp_path unless cwd is given); its YAML is written to tmp_path.

    `$NODES`, `$EXAMPLES`, `$OUT` and `$ROOT` in the YAML are filled in."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    text = textwrap.dedent(yaml_text)
    for key, value in {"$NODES": str(NODES), "$EXAMPLES": str(EXAMPLES), "$OUT": str(out), "$ROOT": str(ROOT)}.items():
        text = text.replace(key, value)
    dataflow = tmp_path / "dataflow.yml"
    dataflow.write_text(text)
    command = [str(BIN / "dora"), "run", str(dataflow)]
    if stop_after:
        command += ["--stop-after", stop_after]
    full_env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1",
                    HF_HUB_OFFLINE="1", STATS_EVERY="0", WARMUP="0", **(env or {}))
    result = subprocess.run(command, cwd=cwd or tmp_path, env=full_env, capture_output=True, text=True, timeout=timeout)
    log = result.stdout + result.stderr
    (tmp_path / "dora.log").write_text(log)
    return DataflowRun(result.returncode, log, out)


@contextlib.contextmanager
def dataflow_in_background(dataflow: Path):
    """`dora run` a dataflow that runs until stopped (a live camera, a browser driving it), its output in
    dora.log beside it; stopped with Ctrl-C, as a user stops it, when the block ends."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", RUST_BACKTRACE="0",
               PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", WARMUP="0", STATS_EVERY="0")
    with open(dataflow.parent / "dora.log", "w") as log:
        dora = subprocess.Popen([str(BIN / "dora"), "run", str(dataflow)], cwd=dataflow.parent, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            yield dora
        finally:
            dora.send_signal(signal.SIGINT)
            try:
                dora.wait(timeout=60)
            except subprocess.TimeoutExpired:
                dora.kill()


def assert_no_traceback(run: DataflowRun) -> None:
    assert "Traceback" not in run.log, run.log[-4000:]


@pytest.fixture
def dataflow(tmp_path):
    def _run(yaml_text: str, **kwargs) -> DataflowRun:
        return run_dataflow(tmp_path, yaml_text, **kwargs)
    return _run


def requires_dora():
    return pytest.mark.skipif(shutil.which("dora", path=str(BIN)) is None, reason="dora-rs-cli is not installed")


# ---------------------------------------------------------------------------- waiting without a clock


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, seconds: float = 300, what: str = "the condition") -> None:
    """Polls until `condition()` holds. The limit is a hang guard, not a pace: a slow machine only waits longer."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not come true in {seconds:.0f} s")
        time.sleep(0.2)


def wait_for_port(port: int, seconds: float = 300) -> None:
    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_for(listening, seconds, f"something listening on 127.0.0.1:{port}")


def open_when_served(page, url: str, seconds: float = 300) -> None:
    """A browser page at `url` once the node serving it is up (it may still be loading its model)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            page.goto(url, timeout=5_000)
            return
        except Exception:  # the port is not open yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# ---------------------------------------------------------------------------- dataflows, written once


def sam2_node(model_dir, inputs: dict, outputs=("mask",), env: dict | None = None) -> str:
    """The node under test, wired the way a user writes it: `path: dora-sam2`."""
    env = {"MODEL": str(model_dir), "STATS_FILE": "$OUT/stats.json", **(env or {})}
    return (
        "  - id: sam2\n    path: dora-sam2\n"
        f"    inputs: {json.dumps(inputs)}\n    outputs: {json.dumps(list(outputs))}\n    env: {json.dumps(env)}\n"
    )


T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def frame_message(rgb: np.ndarray, index: int, output: str = "image", encoding: str = "rgb8"):
    """An image message stamped with a known timestamp, so prompts can name the exact frame."""
    h, w = rgb.shape[:2]
    return (0.15, output, pa.array(rgb.ravel()),
            {"encoding": encoding, "width": w, "height": h, "timestamp": T0 + timedelta(seconds=index)})


def after_answers(count: int) -> tuple:
    """A player step: wait until the node has sent `count` answers, so that what follows (a reset, a
    click) reaches it after those frames, however slow the machine. dora keeps no order across inputs."""
    return (0.0, "wait-for-answers", count, {})  # the player's own word for it


def write_script(tmp_path, steps) -> str:
    path = tmp_path / "script.pkl"
    path.write_bytes(pickle.dumps(steps))
    return str(path)


def player_flow(model_dir, script: str, player_outputs, sam2_inputs: dict, sam2_outputs=("mask",),
                collect: dict | None = None, sam2_env: dict | None = None, answers: str | None = None) -> str:
    """player -> sam2 -> collector `out`. `answers` (e.g. "sam2/mask") wires the node's answers back to
    the player, for scripts that wait for them (`after_answers`)."""
    collect = collect or {name: f"sam2/{name}" for name in sam2_outputs}
    player_inputs = f"\n    inputs: {{answers: {lossless(answers)}}}" if answers else ""
    # the collector must see every answer: through dora's daemon path (see conftest.lossless)
    collect = {name: {"source": source, "queue_size": 1000, "queue_policy": "backpressure"} if isinstance(source, str)
               else source for name, source in collect.items()}
    return f"""
nodes:
  - id: player
    path: $NODES/player.py{player_inputs}
    outputs: {json.dumps(list(player_outputs))}
    env: {{SCRIPT: {script}, LINGER: "1"}}
{sam2_node(model_dir, sam2_inputs, sam2_outputs, sam2_env)}
  - id: out
    path: $NODES/collector.py
    inputs: {json.dumps(collect)}
    env: {{OUT_DIR: $OUT/out}}
"""


def scene(width=640, height=480, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
