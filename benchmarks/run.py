"""dora-sam2 benchmark: camera-to-mask latency, throughput and per-stage cost, in real dataflows.

    .venv/bin/python benchmarks/run.py                 # random-weight hiera-tiny, the full table
    .venv/bin/python benchmarks/run.py --model DIR     # any SAM2 checkpoint directory
    .venv/bin/python benchmarks/run.py --quick         # fewer configurations, shorter runs
    .venv-ref/bin/python benchmarks/run.py --configs tiny@1024 tiny@512 edgetam@1024 edgetam@512
                                                       # 3 boxes per model and input size, one table

In one run it measures the model's own cost alone (encode + one batched decode, fp32 and bf16),
then runs dataflows (synthetic camera at --fps, a dora-yolo-format detector with N boxes, the node,
a latency probe) for each box count and dtype, and a naive baseline node (re-encode per prompt,
fp32, FIFO). Everything is reported as figures and as ratios to the model's cost measured in the
same run. Writes benchmarks/results/latest.json and latest.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the dataflows the tests run, written once (tests/support)
from support.dataflows import BIN, camera, detector, flow, node, path_env, sam2  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WIDTH, HEIGHT = 640, 480


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="SAM2 checkpoint directory (default: a random-weight hiera-tiny)")
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--seconds", type=float, default=25.0, help="length of each dataflow run")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image-size", type=int, default=0, help="IMAGE_SIZE (0: the checkpoint's own)")
    parser.add_argument("--sizes", type=int, nargs="+",
                        help="only the model's own cost, at each of these input sizes, in one run")
    parser.add_argument("--configs", nargs="+", metavar="MODEL@SIZE",
                        help="segment mode with 3 boxes for each (tiny, edgetam: random weights; or a "
                             "directory), the model alone and in a dataflow, in one run and one table")
    args = parser.parse_args()
    if args.sizes:
        return save("sizes", *sizes_table(args.model or str(random_tiny()), args.sizes, args.device))
    if args.configs:
        return save("configs", *configs_table(args.configs, args))

    model_dir = args.model or str(random_tiny())
    box_counts = [3] if args.quick else [1, 3, 4, 16]
    dtypes = ["bfloat16"] if args.quick else ["float32", "bfloat16"]
    seconds = 12.0 if args.quick else args.seconds

    results = {"machine": machine(), "model": model_dir, "fps": args.fps, "frame": f"{WIDTH}x{HEIGHT}",
               "device": args.device}
    print(f"model alone ({model_dir}) ...", flush=True)
    results["model_alone"] = {dtype: model_cost(model_dir, dtype, args.device) for dtype in ("float32", "bfloat16")}
    results["dataflows"] = []
    for dtype in dtypes:
        for boxes in box_counts:
            print(f"dataflow: {boxes} boxes, {dtype} ...", flush=True)
            results["dataflows"].append(dataflow(model_dir, "dora-sam2", boxes, dtype, args, seconds))
    print("dataflow: naive baseline, 3 boxes, float32 ...", flush=True)
    results["baseline"] = dataflow(model_dir, "naive", 3, "float32", args, seconds)
    results["targets"] = targets(results)

    save("latest", results, markdown(results))


def save(name: str, result: dict, table: str) -> None:
    """benchmarks/results/NAME.json (every figure) and NAME.md (the table), and the table on stdout."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"{name}.md").write_text(table)
    print(table)


# ---------------------------------------------------------------------------- the model alone


def model_cost(model_dir: str, dtype: str, device: str, repeats: int = 3, image_size: int = 0) -> dict:
    """Best-of-N seconds for each step on one 640x480 frame, in this process, nothing else running."""
    import torch

    from dora_sam2.domain import Frame, Prompt
    from dora_sam2.model import Sam2Backend

    model = Sam2Backend.load(model_dir, dtype=dtype, device=device, image_size=image_size)
    rng = np.random.default_rng(0)
    frame = Frame("image", rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8), None, "rgb8")
    model.warmup(WIDTH, HEIGHT)

    def best(fn):
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            result = fn()
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        return min(times), result

    out = {"preprocess_ms": 1e3 * best(lambda: model.preprocess(frame.rgb))[0]}
    encode_s, embedding = best(lambda: model.encode(frame))
    out["encode_ms"] = 1e3 * encode_s
    out["decode_ms"] = {}
    for n in (1, 3, 4, 16, 18):
        xy = rng.uniform(0, 400, (n, 2))
        prompt = Prompt.from_boxes("bbox", np.concatenate([xy, xy + rng.uniform(20, 200, (n, 2))], axis=1))
        out["decode_ms"][n] = 1e3 * best(lambda: model.predict(embedding, prompt))[0]
    out["cost_ms"] = {n: out["encode_ms"] + d for n, d in out["decode_ms"].items()}
    return out


def sizes_table(model_dir: str, sizes: list[int], device: str) -> tuple[dict, str]:
    """Segment mode's cost (encode + 3 boxes) per input size, in the node's default dtype, one run."""
    rows = {size: model_cost(model_dir, "auto", device, image_size=size) for size in sizes}
    base = rows[max(sizes)]["cost_ms"][3]
    lines = [f"Segment mode, model alone: {Path(model_dir).name}, default dtype, one 640x480 frame, best of 3; "
             f"{machine()}.", "", "| input size | encode | decode 3 boxes | cost, 3 boxes | x of the largest |",
             "|---|---|---|---|---|"]
    for size, row in rows.items():
        lines.append(f"| {size} | {row['encode_ms']:.0f} ms | {row['decode_ms'][3]:.0f} ms | "
                     f"{row['cost_ms'][3]:.0f} ms | {row['cost_ms'][3] / base:.2f}x |")
    return {"model": model_dir, "sizes": rows}, "\n".join(lines) + "\n"


def configs_table(configs: list[str], args) -> tuple[dict, str]:
    """Per MODEL@SIZE: the model's own cost with 3 boxes (default dtype) and, in a dataflow with a camera
    at --fps and a detector of 3 boxes, camera-to-mask latency and answers a second."""
    rows = {}
    for config in configs:
        model_dir, size = model_at_size(config)
        print(f"{config}: model alone, then a dataflow ...", flush=True)
        alone = model_cost(model_dir, "auto", args.device, image_size=size)
        flow_args = argparse.Namespace(**{**vars(args), "image_size": size})
        rows[config] = {"model": model_dir, "image_size": size, "alone": alone,
                        "dataflow": dataflow(model_dir, "dora-sam2", 3, "auto", flow_args, args.seconds)}
    base = rows[configs[0]]["alone"]["cost_ms"][3]
    lines = [f"Segment mode, 3 boxes, default dtype, 640x480 frames, camera at {args.fps:g} fps; {machine()}. "
             f"`x` is the cost against {configs[0]}.", "",
             "| model @ input | encode | decode 3 boxes | cost | x | latency p50 | latency p99 | answers/s |",
             "|---|---|---|---|---|---|---|---|"]
    for config, row in rows.items():
        alone, flow = row["alone"], row["dataflow"]
        lines.append(f"| {config} | {alone['encode_ms']:.0f} ms | {alone['decode_ms'][3]:.0f} ms | "
                     f"{alone['cost_ms'][3]:.0f} ms | {alone['cost_ms'][3] / base:.2f}x | "
                     f"{flow['latency_p50_ms']:.0f} ms | {flow['latency_p99_ms']:.0f} ms | {flow['answers_per_s']:.2f} |")
    return {"machine": machine(), "fps": args.fps, "configs": rows}, "\n".join(lines) + "\n"


def model_at_size(config: str) -> tuple[str, int]:
    """`tiny@512` -> (random hiera-tiny, 512); `edgetam`, or a checkpoint directory; no @: its own size."""
    name, _, size = config.partition("@")
    model = {"tiny": random_tiny, "edgetam": random_edgetam}.get(name)
    return str(model() if model else name), int(size or 0)


# ---------------------------------------------------------------------------- dataflows


def dataflow(model_dir: str, node: str, boxes: int, dtype: str, args, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stats, probe = tmp / "stats.json", tmp / "latency.json"
        sam2_path = "dora-sam2" if node == "dora-sam2" else str(ROOT / "benchmarks" / "nodes" / "naive_sam2.py")
        yaml = pipeline(model_dir, sam2_path, boxes, frames=int(args.fps * seconds), fps=args.fps, probe=probe,
                        sam2_env={"DTYPE": dtype, "DEVICE": args.device, "STATS_FILE": str(stats), "STATS_EVERY": "0",
                                  "IMAGE_SIZE": str(args.image_size)})
        (tmp / "dataflow.yml").write_text(yaml)
        env = path_env()
        run = subprocess.run([str(BIN / "dora"), "run", str(tmp / "dataflow.yml")], cwd=tmp, env=env,
                             capture_output=True, text=True, timeout=seconds * 20 + 300)
        if run.returncode != 0 or not probe.exists():
            raise SystemExit(f"benchmark dataflow failed:\n{(run.stdout + run.stderr)[-3000:]}")
        measured = json.loads(probe.read_text())
        stage_stats = json.loads(stats.read_text()) if stats.exists() else {}
    latencies = measured["latencies_ms"][1:]  # the first answer includes start-up effects
    arrivals = measured["arrivals"]
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    return {
        "node": node, "boxes": boxes, "dtype": dtype, "answers": len(measured["latencies_ms"]),
        "latency_p50_ms": percentile(latencies, 50), "latency_p99_ms": percentile(latencies, 99),
        "answers_per_s": (len(arrivals) - 1) / span if span == span and span > 0 else float("nan"),
        "skipped": stage_stats.get("skipped"), "stages_ms": stage_stats.get("stages_ms", {}),
    }


def pipeline(model_dir, sam2_path, boxes: int, frames: int, fps: float, probe: Path, sam2_env: dict,
             outputs=("mask",), detector_env: dict | None = None) -> str:
    """camera -> dora-yolo-format detector with `boxes` boxes -> the node -> latency probe."""
    detections = [[40 + 150 * (i % 4), 40 + 100 * (i // 4 % 4), 140 + 150 * (i % 4), 130 + 100 * (i // 4 % 4),
                   f"obj{i}"] for i in range(boxes)]
    return flow(camera(frames, fps=fps, WIDTH=WIDTH, HEIGHT=HEIGHT), detector(detections, **(detector_env or {})),
                sam2(model_dir, outputs=outputs, env=sam2_env, path=sam2_path, stats=None),
                node("probe", ROOT / "benchmarks" / "nodes" / "latency_probe.py", {"mask": "sam2/mask"},
                     env={"OUT": probe}))


def percentile(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


# ---------------------------------------------------------------------------- verdicts and table


def targets(results: dict) -> dict:
    alone = results["model_alone"]
    cost3 = min(alone[d]["cost_ms"][3] for d in alone)  # the model's own cost, best of fp32/bf16
    best_dtype = min(alone, key=lambda d: alone[d]["cost_ms"][3])
    ours = next((r for r in results["dataflows"] if r["boxes"] == 3 and r["dtype"] == best_dtype), None)
    out = {"model_cost_3_boxes_ms": cost3, "best_dtype": best_dtype}
    if ours:
        out["p50_over_cost"] = ours["latency_p50_ms"] / cost3
        out["p99_over_cost"] = ours["latency_p99_ms"] / cost3
        out["answers_per_s_times_cost"] = ours["answers_per_s"] * cost3 / 1e3
        out["baseline_p50_over_ours"] = results["baseline"]["latency_p50_ms"] / ours["latency_p50_ms"]
    out["boxes18_over_boxes1"] = alone[best_dtype]["cost_ms"][18] / alone[best_dtype]["cost_ms"][1]
    return out


def markdown(results: dict) -> str:
    alone, t = results["model_alone"], results["targets"]
    lines = [
        f"Machine: {results['machine']}; model: {Path(results['model']).name}; camera {results['fps']:g} fps "
        f"at {results['frame']}; device {results['device']}.",
        "",
        "**Model alone** (best of 3, one 640x480 frame; cost = encode + one batched decode incl. post-process):",
        "",
        "| dtype | preprocess | encode | decode 1 box | 3 | 4 | 16 | 18 | cost 1 box | cost 18 boxes / 1 box |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dtype, a in alone.items():
        d = a["decode_ms"]
        lines.append(f"| {dtype} | {a['preprocess_ms']:.0f} ms | {a['encode_ms']:.0f} ms | {d[1]:.0f} ms | "
                     f"{d[3]:.0f} | {d[4]:.0f} | {d[16]:.0f} | {d[18]:.0f} | {a['cost_ms'][1]:.0f} ms | "
                     f"{a['cost_ms'][18] / a['cost_ms'][1]:.2f}x |")
    lines += [
        "",
        "**In a dataflow** (camera -> detector stand-in -> node -> latency probe; latency = frame timestamp to "
        "mask arrival; stages are the node's own means per call):",
        "",
        "| node | dtype | boxes | latency p50 | p99 | answers/s | skipped | frame decode | encode | prompt decode "
        "| post-process | send |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in [*results["dataflows"], results["baseline"]]:
        s = r["stages_ms"]
        stage_cells = " | ".join(f"{s[k]:.1f} ms" if k in s else "-" for k in
                                 ("frame_decode", "encode", "prompt_decode", "postprocess", "send"))
        lines.append(f"| {r['node']} | {r['dtype']} | {r['boxes']} | {r['latency_p50_ms']:.0f} ms | "
                     f"{r['latency_p99_ms']:.0f} ms | {r['answers_per_s']:.2f} | {r['skipped'] if r['skipped'] is not None else '-'} | "
                     f"{stage_cells} |")
    lines += ["", f"**Against the targets** (model cost with 3 boxes, best dtype {t['best_dtype']}: "
                  f"{t['model_cost_3_boxes_ms']:.0f} ms):", ""]
    if "p50_over_cost" in t:
        lines += [
            f"- latency p50 = {t['p50_over_cost']:.2f}x the model's cost (target <= 1.5x)",
            f"- latency p99 = {t['p99_over_cost']:.2f}x (target <= 2.0x)",
            f"- answers/s = {t['answers_per_s_times_cost']:.2f} / cost (target >= 0.8 / cost)",
            f"- naive baseline p50 / ours = {t['baseline_p50_over_ours']:.1f}x (target >= 2x)",
        ]
    lines.append(f"- 18 boxes cost {t['boxes18_over_boxes1']:.2f}x of 1 box (target <= 1.4x)")
    return "\n".join(lines) + "\n"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{os.cpu_count()} cores, {cpu}{gpu}; torch {torch.__version__}"


def random_tiny() -> Path:
    return _random("tiny")


def random_edgetam() -> Path:
    """EdgeTAM's layout with random weights; it needs timm (run in .venv-ref)."""
    return _random("edgetam")


def _random(size: str) -> Path:
    path = ROOT / ".cache" / f"sam2-random-{size}"
    if not (path / "config.json").exists():
        from dora_sam2.random_model import make_random_model
        make_random_model(path, size=size)
    return path


if __name__ == "__main__":
    main()
