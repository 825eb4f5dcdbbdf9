"""Real `dora run` dataflows, written once for the tests and the benchmarks: the nodes they wire, the
scripted player's messages, running a dataflow, and waiting on it without a clock.

A dataflow is `flow(camera(...), detector(...), sam2(...), collector(...))`: each node a mapping in
dora's YAML schema, so a test states only what differs from the seed's wiring.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
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

from dora_sam2.domain import Frame

ROOT = Path(__file__).resolve().parents[2]
NODES = ROOT / "tests" / "nodes"
EXAMPLES = ROOT / "examples" / "nodes"
BIN = Path(sys.executable).parent
SHARED_DATA = ROOT.parent / "shared" / "data"  # real clips, where this checkout has them
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)  # frame `i` of a script is stamped T0 + i seconds


# ---------------------------------------------------------------------------- nodes


def lossless(source: str) -> dict:
    """An input that gets every message: dora's direct node-to-node path drops messages when a receiver
    falls behind (dora-rs/dora#3397), `backpressure` routes the output through the daemon, which keeps
    every message (it does not make the sender wait). For inputs whose every message a test counts."""
    return {"source": source, "queue_size": 100, "queue_policy": "backpressure"}


def flow(*nodes: dict) -> str:
    """The dataflow's YAML (JSON is YAML): one node a line."""
    return "nodes:\n" + "".join(f"  - {json.dumps(node)}\n" for node in nodes)


def node(node_id: str, path, inputs: dict | None = None, outputs=(), env: dict | None = None) -> dict:
    spec = {"id": node_id, "path": str(path)}
    if inputs:
        spec["inputs"] = inputs
    if outputs:
        spec["outputs"] = list(outputs)
    if env:
        spec["env"] = {key: str(value) for key, value in env.items()}
    return spec


def camera(frames: int = 100_000, fps: float | None = None, tick_ms: int | None = None, **env) -> dict:
    """The examples' camera: `frames` frames of a synthetic scene (or VIDEO), at `fps` or one per tick."""
    inputs = {"tick": f"dora/timer/millis/{tick_ms}"} if tick_ms else None
    return node("camera", EXAMPLES / "camera.py", inputs, ["image"],
                {"FRAMES": frames, **({"FPS": fps} if fps else {}), **env})


def detector(boxes=None, image="camera/image", **env) -> dict:
    """A detector in dora-yolo's format that sees `boxes` ([x0, y0, x1, y1, label], ...) on each frame."""
    return node("yolo", EXAMPLES / "fixed_detector.py", {"image": image}, ["bbox"],
                {**({"BOXES": json.dumps(boxes)} if boxes is not None else {}), **env})


def sam2(model_dir=None, inputs: dict | None = None, outputs=("mask",), env: dict | None = None,
         path: str = "dora-sam2", stats: str | None = "$OUT/stats.json", node_id: str = "sam2") -> dict:
    """The node under test, wired as a user writes it (`path: dora-sam2`); by default the seed's inputs.
    Without `model_dir`, MODEL comes from the environment the node starts in."""
    inputs = inputs or {"image": "camera/image", "bbox": "yolo/bbox"}
    settings = {**({"MODEL": model_dir} if model_dir else {}), **({"STATS_FILE": stats} if stats else {})}
    return node(node_id, path, inputs, outputs, {**settings, **(env or {})})


def on(machine: str, spec: dict) -> dict:
    """The node placed on the daemon `machine` (`deploy`, dora 1.x)."""
    return {**spec, "deploy": {"machine": machine}}


def collector(inputs: dict, out="$OUT/out", node_id: str = "out") -> dict:
    """Records every input it gets (tests/nodes/collector.py), read back by `DataflowRun.events`."""
    return node(node_id, NODES / "collector.py", inputs, env={"OUT_DIR": out})


def player(script: str, outputs, answers: str | None = None, node_id: str = "player") -> dict:
    """Plays a script of messages (`write_script`); with `answers`, it can wait for the node's answers."""
    return node(node_id, NODES / "player.py", {"answers": lossless(answers)} if answers else None, outputs,
                {"SCRIPT": script, "LINGER": "1"})


def seed_flow(model_dir, boxes, frames: int, fps: float, outputs=("mask",), env: dict | None = None,
              extra=(), collect: dict | None = None) -> str:
    """The seed's camera -> detector -> SAM 2, and `extra` nodes, every message of it through the daemon
    (`lossless`); the collector `out` gets `collect`, by default each of the node's `outputs`."""
    collect = collect or {name: lossless(f"sam2/{name}") for name in outputs}
    seed_inputs = {"image": lossless("camera/image"), "bbox": lossless("yolo/bbox")}
    return flow(camera(frames, fps=fps), detector(boxes), sam2(model_dir, seed_inputs, outputs, env), *extra,
                collector(collect))


def label_flow(model_dir, video, dataset, boxes, sam2_env: dict | None = None,
               detector_env: dict | None = None) -> str:
    """examples/label.yml as a user runs it (VIDEO, MODEL, BOXES, OUT_DIR filled in), with a collector
    `out` of the node's masks beside it; the fixed detector's other knobs in `detector_env`."""
    return _label_spec(model_dir, video, dataset, {"BOXES": json.dumps(boxes), **(detector_env or {})}, sam2_env)


def world_label_flow(model_dir, world: Path, clip: str, dataset, sam2_env: dict | None = None,
                     frames: int | None = None, camera_env: dict | None = None) -> str:
    """examples/label.yml on a clip of the synthetic world (`dora-sam2-world`, with its video), its first
    `frames` frames (all without): its detector is examples' world_detector.py, the world's true boxes on
    every frame, a detector that is right; the camera's env updated by `camera_env`; the rest as a user
    runs it."""
    truth = {"TRUTH": str(Path(world) / "annotations.json"), "CLIP": clip, "EVERY": "1"}
    camera = {**({"FRAMES": str(frames)} if frames else {}), **(camera_env or {})}
    return _label_spec(model_dir, Path(world) / "videos" / f"{clip}.mp4", dataset, truth, sam2_env,
                       detector="world_detector.py", camera_env=camera)


def _label_spec(model_dir, video, dataset, detector_env: dict, sam2_env: dict | None,
                detector: str | None = None, camera_env: dict | None = None) -> str:
    import yaml

    spec = yaml.safe_load((ROOT / "examples" / "label.yml").read_text())
    nodes = {n["id"]: n for n in spec["nodes"]}
    if detector:
        nodes["detector"]["path"] = f"nodes/{detector}"
    for entry in nodes.values():
        if entry["path"].startswith("nodes/"):
            entry["path"] = str(EXAMPLES / entry["path"].removeprefix("nodes/"))
    nodes["camera"]["env"].update(VIDEO=str(video), **(camera_env or {}))
    nodes["detector"]["env"] = detector_env
    nodes["sam2"]["env"].update(MODEL=str(model_dir), STATS_FILE="$OUT/stats.json", **(sam2_env or {}))
    nodes["dataset"]["env"] = {"OUT_DIR": str(dataset)}
    spec["nodes"].append(collector({"masks": lossless("sam2/masks")}))
    return yaml.safe_dump(spec)


def example_flow(name: str, frames: int, env: dict[str, dict], collect: dict, inputs: dict | None = None) -> str:
    """examples/`name` as a user runs it, on `frames` frames of the synthetic scene: each node's env
    updated by `env` (node id -> settings) and its inputs by `inputs`, overlays saved under $OUT, and a
    collector `out` of `collect`."""
    import yaml

    spec = yaml.safe_load((ROOT / "examples" / name).read_text())
    nodes = {n["id"]: n for n in spec["nodes"]}
    for entry in nodes.values():
        if entry["path"].startswith("nodes/"):
            entry["path"] = str(EXAMPLES / entry["path"].removeprefix("nodes/"))
    nodes["camera"]["env"]["FRAMES"] = str(frames)
    for node_id, settings in env.items():
        nodes[node_id]["env"].update(settings)
    for node_id, wiring in (inputs or {}).items():
        nodes[node_id].setdefault("inputs", {}).update(wiring)
    nodes["save"]["env"] = {"OUT_DIR": "$OUT/frames"}
    spec["nodes"].append(collector(collect))
    return yaml.safe_dump(spec)


def text_pair_flow(sam3_dir, follower_dir, frames: int) -> str:
    """examples/text-cpu.yml with random weights (MIN_CONFIDENCE=0.01 keeps their low-scored instances),
    collecting what the finder found (`boxes`) and every frame the follower answered (`mask`, EVERY_FRAME).
    The camera sends its next frame when the finder has answered the last (its `tick`; after 30 s without
    one, anyway): at 10 fps the follower could answer every frame before the finder's first boxes. The
    follower's inputs are `lossless`, as every test that counts answers wires them: dora's direct path
    can drop a frame (dora-rs/dora#3397), and once in two full suites the follower's answers were not
    the 6 frames' 6."""
    return example_flow("text-cpu.yml", frames, {
        "camera": {"FPS": "0.033"},
        "finder": {"MODEL": str(sam3_dir), "MIN_CONFIDENCE": "0.01"},
        # LOST_FRAMES: random weights' masks are noise, so SAM 2's random losses would end tracks (plumbing)
        "follower": {"MODEL": str(follower_dir), "EVERY_FRAME": "1", "LOST_FRAMES": "1000"}},
        {"mask": lossless("follower/mask"), "boxes": lossless("finder/boxes2d")},
        {"camera": {"tick": "finder/boxes2d"},
         "follower": {"image": lossless("camera/image"), "bbox": lossless("finder/boxes2d")}})


def assert_the_pair_followed(run: DataflowRun, frames: int) -> None:
    """The finder sent phrase-labelled boxes, the follower answered every frame and tracked them from
    frame 2 on (frame 1 is sent on the first boxes' tick, and may reach the follower before them)."""
    assert run.returncode == 0, run.log[-4000:]
    assert_no_traceback(run)
    events = run.events()
    found = [e for e in events if e["id"] == "boxes"]
    followed = [e["metadata"] for e in events if e["id"] == "mask"]
    assert found and all(set(e["value"][0]["labels"]) <= {"block", "disc"} for e in found)
    assert len(followed) == frames
    tracked = [m for m in followed if m["num_masks"]]
    assert len(tracked) >= frames - 2 and all(set(m["labels"]) <= {"block", "disc"} for m in tracked), followed


def player_flow(model_dir, script: str, player_outputs, sam2_inputs: dict, sam2_outputs=("mask",),
                collect: dict | None = None, sam2_env: dict | None = None, answers: str | None = None) -> str:
    """player -> sam2 -> collector `out`. `answers` (e.g. "sam2/mask") wires the node's answers back to
    the player, for scripts that wait for them (`after_answers`)."""
    collect = collect or {name: f"sam2/{name}" for name in sam2_outputs}
    # the collector must see every answer: through dora's daemon path
    collect = {name: {"source": source, "queue_size": 1000, "queue_policy": "backpressure"} if isinstance(source, str)
               else source for name, source in collect.items()}
    return flow(player(script, player_outputs, answers), sam2(model_dir, sam2_inputs, sam2_outputs, sam2_env),
                collector(collect))


# ---------------------------------------------------------------------------- frames, and the player's messages


def scene(width=640, height=480, seed=0) -> np.ndarray:
    """Random pixels, (height, width, 3) uint8: the same seed, the same frame."""
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def random_frame(seed=0, width=640, height=480, timestamp: datetime | None = None, encoding="rgb8") -> Frame:
    """`scene`'s pixels as the camera frame `image` the engine and the models take."""
    return Frame("image", scene(width, height, seed), timestamp, encoding)


def stamp(index: int) -> datetime:
    """The timestamp `frame_message` gives frame `index`, for the prompts that name that frame."""
    return T0 + timedelta(seconds=index)


def write_clip(path, frames: int, width: int, height: int, fps: float = 10) -> int:
    """A short mp4 of a block moving over a gradient; returns the frame count a reader finds in it."""
    import cv2

    video = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for i in range(frames):
        image = np.tile(np.linspace(40, 200, width, dtype=np.uint8)[None, :, None], (height, 1, 3))
        cv2.rectangle(image, (20 + 10 * i % width, height // 6), (width // 3 + 10 * i % width, height // 2),
                      (0, 0, 220), -1)
        video.write(image)
    video.release()
    capture, count = cv2.VideoCapture(str(path)), 0
    while capture.read()[0]:
        count += 1
    return count


def frame_message(rgb: np.ndarray, index: int, output: str = "image", encoding: str = "rgb8"):
    """An image message stamped with a known timestamp, so prompts can name the exact frame."""
    h, w = rgb.shape[:2]
    return (0.15, output, pa.array(rgb.ravel()),
            {"encoding": encoding, "width": w, "height": h, "timestamp": stamp(index)})


def after_answers(count: int) -> tuple:
    """A player step: wait until the node has sent `count` answers, so that what follows (a reset, a
    click) reaches it after those frames, however slow the machine. dora keeps no order across inputs."""
    return (0.0, "wait-for-answers", count, {})  # the player's own word for it


def after_close() -> tuple:
    """A player step: wait until the node wired to the player's `answers` has ended (its output closed),
    however long it takes to get there."""
    return (0.0, "wait-for-close", None, {})


def write_script(tmp_path, steps) -> str:
    path = tmp_path / "script.pkl"
    path.write_bytes(pickle.dumps(steps))
    return str(path)


# ---------------------------------------------------------------------------- running one


def path_env(**extra) -> dict:
    """This environment with this venv's commands first (`dora`, `dora-sam2`): what a benchmark runs in."""
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", RUST_BACKTRACE="0",
                PYTHONUNBUFFERED="1", **extra)


def dora_env(**extra) -> dict:
    """What a test's `dora run` gets: no hub, no start-up work the test does not ask for."""
    return path_env(HF_HUB_OFFLINE="1", STATS_EVERY="0", WARMUP="0", **extra)


@dataclass
class DataflowRun:
    returncode: int
    log: str
    out: Path

    def events(self, name: str = "out") -> list[dict]:
        return read_events(self.out / name, values=True)

    def sam2_stats(self) -> dict:
        """What the node says it did (answers, skipped), when its STATS_FILE is $OUT/stats.json."""
        return json.loads((self.out / "stats.json").read_text())

    def node_log(self, node_id: str) -> list[str]:
        """The lines a node wrote, as `dora run` relays them (`... stdout <node>: <line>`)."""
        return [line.split(f" {node_id}: ", 1)[1] for line in self.log.splitlines()
                if f" {node_id}: " in line and (" stdout " in line or " stderr " in line)]


def read_events(directory: Path, values: bool = False) -> list[dict]:
    """What a collector writing to `directory` has recorded so far; `values`: each message's array too."""
    path = Path(directory) / "events.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    for event in events if values else ():
        event["value"] = np.load(Path(directory) / f"{event['index']:04d}.npy", allow_pickle=True)  # structs
    return events


def event_time(event: dict) -> datetime:
    """The timestamp a collected message carried."""
    return datetime.fromisoformat(event["metadata"]["timestamp"]["datetime"])


def image(event: dict) -> np.ndarray:
    """A collected image message's pixels, (height, width, channels) as its metadata says."""
    return event["value"].reshape(int(event["metadata"]["height"]), int(event["metadata"]["width"]), -1)


def write_dataflow(directory: Path, yaml_text: str, name: str = "dataflow.yml") -> Path:
    """The YAML in `directory`, `$NODES`, `$EXAMPLES`, `$OUT` (directory/out) and `$ROOT` filled in."""
    out = directory / "out"
    out.mkdir(exist_ok=True)
    text = textwrap.dedent(yaml_text)
    for key, value in {"$NODES": str(NODES), "$EXAMPLES": str(EXAMPLES), "$OUT": str(out), "$ROOT": str(ROOT)}.items():
        text = text.replace(key, value)
    path = directory / name
    path.write_text(text)
    return path


def run_dataflow(tmp_path: Path, yaml_text: str, timeout: float = 900, stop_after: str | None = None,
                 env: dict | None = None, cwd: Path | None = None) -> DataflowRun:
    """Run a dataflow to its end with `dora run` (from tmp_path unless cwd is given)."""
    dataflow = write_dataflow(tmp_path, yaml_text)
    command = [str(BIN / "dora"), "run", str(dataflow)]
    if stop_after:
        command += ["--stop-after", stop_after]
    result = subprocess.run(command, cwd=cwd or tmp_path, env=dora_env(**(env or {})), capture_output=True,
                            text=True, timeout=timeout)
    log = result.stdout + result.stderr
    (tmp_path / "dora.log").write_text(log)
    return DataflowRun(result.returncode, log, tmp_path / "out")


@contextlib.contextmanager
def dataflow_in_background(dataflow: Path):
    """`dora run` a dataflow that runs until stopped (a live camera, a browser driving it), its output in
    dora.log beside it; stopped with Ctrl-C, as a user stops it, when the block ends."""
    with open(dataflow.parent / "dora.log", "w") as log:
        dora = subprocess.Popen([str(BIN / "dora"), "run", str(dataflow)], cwd=dataflow.parent, env=dora_env(),
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
