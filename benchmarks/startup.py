"""How long the node takes from spawn to ready, started as a user starts it (DTYPE=auto, its warm-up on): the
first start on a machine, which times fp32 against bf16 and saves the choice, and the starts after it, which
read the choice (choices.py).

    .venv/bin/python benchmarks/startup.py                     # random hiera-tiny at 1024, 1 and 2 nodes
    .venv/bin/python benchmarks/startup.py --model DIR --nodes 1 --later 3

Each run is a real `dora run` of the node(s) and a camera that sends one frame, the choices file in a cache
directory of the run's own (XDG_CACHE_HOME), empty before the first start. Spawn and ready are dora's own
lines for the node ("spawned node with pid", "node is ready": it registers once loaded and warm), stamped
here as they arrive, as are the node's lines between (loaded, DTYPE=auto, warm-up). With several nodes
side by side all start at once, as in a dataflow with two cameras. Writes benchmarks/results/startup.json
and startup.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from run import machine, model_at_size, save  # noqa: E402
from support.dataflows import BIN, camera, flow, path_env, sam2  # noqa: E402

# What a start's lines say, in the order they come: dora's, then the node's own.
MARKS = {"spawned": "spawner spawned node with pid", "loaded": "dora-sam2: model ",
         "dtype": "dora-sam2: DTYPE=auto:", "warm": "dora-sam2: warm-up:", "ready": "daemon node is ready"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny (random hiera-tiny) or a checkpoint directory")
    parser.add_argument("--image-size", type=int, default=0, help="IMAGE_SIZE (0: the checkpoint's own, 1024)")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2], help="nodes side by side, per run")
    parser.add_argument("--later", type=int, default=2, help="starts after the first, per run")
    args = parser.parse_args()
    model_dir, _ = model_at_size(args.model)
    rows = []
    for nodes in args.nodes:
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "cache"
            for index in range(1 + args.later):
                print(f"{nodes} node(s), start {index + 1} ...", flush=True)
                rows += [{"nodes": nodes, "start": index + 1, **node}
                         for node in one_start(Path(tmp) / f"start{index}", model_dir, args.image_size, nodes, cache)]
    result = {"machine": machine(), "model": model_dir, "image_size": args.image_size or "the checkpoint's",
              "rows": rows}
    save("startup", result, markdown(result))


def one_start(directory: Path, model_dir: str, image_size: int, nodes: int, cache: Path) -> list[dict]:
    """One `dora run`: each node's lines stamped as they arrive, and the phases between them."""
    directory.mkdir(parents=True)
    env = {"WARMUP": "1", "DTYPE": "auto", "DEVICE": "cpu", "XDG_CACHE_HOME": str(cache), "STATS_EVERY": "0",
           **({"IMAGE_SIZE": str(image_size)} if image_size else {})}
    ids = [f"sam2_{i}" for i in range(nodes)]
    dataflow = directory / "dataflow.yml"
    dataflow.write_text(flow(camera(1), *(sam2(model_dir, {"image": "camera/image"}, env=env, stats=None,
                                               node_id=node_id) for node_id in ids)))
    stamps = {node_id: {} for node_id in ids}
    lines = {node_id: [] for node_id in ids}
    with subprocess.Popen([str(BIN / "dora"), "run", str(dataflow)], cwd=directory, env=path_env(HF_HUB_OFFLINE="1"),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as dora:
        for line in dora.stdout:
            now = time.monotonic()
            for node_id in ids:
                if f" {node_id}: " in line:
                    lines[node_id].append(line.rstrip())
                    for mark, text in MARKS.items():
                        if text in line:
                            stamps[node_id].setdefault(mark, now)
    if dora.returncode != 0:
        sys.exit(f"dora run failed ({dora.returncode}): see {directory}")
    return [phases(stamps[node_id], lines[node_id]) for node_id in ids]


def phases(stamp: dict, lines: list[str]) -> dict:
    """Seconds from spawn to ready, and between: imports and load, choosing the dtype, warm-up, joining."""
    def between(first: str, last: str) -> float | None:
        return stamp[last] - stamp[first] if first in stamp and last in stamp else None

    dtype_line = next((line.split("DTYPE=auto: ", 1)[1] for line in lines if MARKS["dtype"] in line), "")
    return {"spawn_to_ready_s": between("spawned", "ready"), "load_s": between("spawned", "loaded"),
            "dtype_s": between("loaded", "dtype"), "warmup_s": between("dtype" if "dtype" in stamp else "loaded",
                                                                        "warm"),
            "join_s": between("warm", "ready"), "dtype": "measured" if "measured now" in dtype_line else "read",
            "dtype_line": dtype_line}


def markdown(result: dict) -> str:
    def seconds(value) -> str:
        return "-" if value is None else f"{value:.1f} s"

    lines = [f"Machine: {result['machine']}; model {result['model']} at {result['image_size']}.", "",
             "| nodes side by side | start | DTYPE=auto | spawn to ready | imports + load | choosing the dtype "
             "| warm-up | joining |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['nodes']} | {r['start']} | {r['dtype']} | {seconds(r['spawn_to_ready_s'])} | "
                     f"{seconds(r['load_s'])} | {seconds(r['dtype_s'])} | {seconds(r['warmup_s'])} | "
                     f"{seconds(r['join_s'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
