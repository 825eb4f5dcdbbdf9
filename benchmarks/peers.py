"""Our tracker beside what a user would pick instead: same frames, same prompts, same machine, one run.

    scripts/reference-env.sh --peers            # once: the side environment, with Meta's sam2 and matplotlib
    .venv-ref/bin/python benchmarks/peers.py    # the table, the soak and the charts (about 30 min on 2 cores)
    .venv-ref/bin/python benchmarks/peers.py --configs tiny@1024 --dtypes float32 --objects 1 --soak-frames 0

The peers, each as its users run it:
- ours: `tracking.Tracker` on `video.Sam2StreamingModel`, as the node runs them in `MODE=track`;
- transformers: `Sam2VideoModel` / `EdgeTamVideoModel` with `Sam2VideoProcessor`, an inference session
  fed frame by frame (the library's streaming usage), masks brought to the frame by the processor. The
  same weights as ours, so their masks are compared with ours (IoU);
- meta: Meta's `sam2` package, `SAM2VideoPredictor` over a folder of the same frames as JPEG, its own
  config and initialisation (other random weights: cost and memory only). It has no EdgeTAM.

Frames: `../shared/data/cups.mp4` at 640x360 (a moving pattern when the clip is absent); boxes on frame
0, then tracked. Each peer, model and dtype runs in a process of its own, so each one's memory is its
own. Cost per frame is the median over the frames after the memory window has filled. The soak runs
each peer over `--soak-frames` frames with one object and records cost and resident memory per frame.
The same run measures the CPU's matrix-product rate and our encoder's and memory attention's achieved
rate against it.

Writes benchmarks/results/NAME.json and NAME.md, and the charts docs/NAME-cost.png, docs/NAME-stages.png
and, where a soak ran, docs/NAME-soak.png (NAME: `--name`, `peers` by default: the published run).
ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS and ATEN_CPU_CAPABILITY, where set, are recorded and named in
the table: with AVX2 in all three, this machine stands for one without AVX512-BF16.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from run import RESULTS, machine, model_at_size, save  # noqa: E402

CLIP = ROOT.parent / "shared" / "data" / "cups.mp4"
WIDTH, HEIGHT = 640, 360
# Eight boxes on the 640x360 frame: the three cups of the clip first, then a grid over the table.
BOXES = np.array([[285, 145, 370, 270], [415, 145, 500, 272], [180, 210, 220, 252],
                  [40, 40, 160, 160], [480, 30, 600, 130], [40, 220, 160, 340], [500, 250, 620, 350],
                  [230, 20, 330, 120]], np.float32)
PEERS = ("ours", "transformers", "meta")
# Frames before the steady state: the prompted frame, then SAM 2.1's 7-frame memory window filling.
FILLING = 8
STAGES = ("encode", "memory attention + decode", "memory encode", "other")
DOCS = ROOT / "docs"


# ---------------------------------------------------------------------------- the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny@512", "edgetam@512"], metavar="MODEL@SIZE")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--frames", type=int, default=12,
                        help=f"frames per object count; the first {FILLING} fill memory")
    parser.add_argument("--passes", type=int, default=2,
                        help="each peer's run repeated in alternating order; the best pass counts (the machine swings)")
    parser.add_argument("--soak-frames", type=int, default=300)
    parser.add_argument("--soak-config", default="tiny@512")
    parser.add_argument("--soak-dtype", default="bfloat16")
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS)
    parser.add_argument("--threads", type=int, default=0,
                        help="threads every peer computes on (0: torch's default for the others, the cores this "
                             "process may use for ours); 1 gives figures that swing less on a shared machine")
    parser.add_argument("--redraw", action="store_true",
                        help="the table and charts again from benchmarks/results/NAME.json, measuring nothing")
    parser.add_argument("--name", default="peers",
                        help="the results' name: benchmarks/results/NAME.json and NAME.md, and the charts "
                             "docs/NAME-*.png; a run under another name leaves the published ones as they are")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    if args.redraw:
        result = json.loads((RESULTS / f"{args.name}.json").read_text())
        save(args.name, result, markdown(result))
        return draw(result, args.name)

    with tempfile.TemporaryDirectory() as scratch:
        frames = Path(scratch) / "frames"
        write_frames(frames, max(args.frames, args.soak_frames))
        result = {"machine": machine(), "clip": CLIP.name if CLIP.exists() else "synthetic", "passes": args.passes,
                  "threads": args.threads, "caps": isa_caps(),
                  "rates": run_child({"job": "rates", "threads": args.threads, "dtypes": args.dtypes}),
                  "runs": [], "soak": []}
        models = {c: visible_copy(c, Path(scratch)) for c in {*args.configs, args.soak_config}}
        for config in args.configs:
            for dtype in args.dtypes:
                passes = []
                for turn in range(args.passes):
                    for peer in args.peers[:: -1 if turn % 2 else 1]:
                        print(f"{peer} {config} {dtype}, pass {turn + 1} ...", flush=True)
                        passes.append(run_child({
                            "job": "cost", "peer": peer, "config": config, "model": models[config], "dtype": dtype,
                            "objects": args.objects, "frames": args.frames, "frames_dir": str(frames),
                            "threads": args.threads, "masks": f"{scratch}/{peer}-{config}-{dtype}-{turn}"}))
                result["runs"] += [best_pass([r for r in passes if r["peer"] == peer]) for peer in args.peers]
                add_iou(result["runs"], config, dtype)
        if args.soak_frames:
            for peer in args.peers:
                print(f"soak {peer} {args.soak_config} ...", flush=True)
                result["soak"].append(run_child({
                    "job": "soak", "peer": peer, "config": args.soak_config, "model": models[args.soak_config],
                    "dtype": args.soak_dtype, "objects": [1], "frames": args.soak_frames, "frames_dir": str(frames),
                    "threads": args.threads}))
    save(args.name, result, markdown(result))
    draw(result, args.name)


def isa_caps() -> dict:
    """The caps on the instruction sets torch computes with, where set: they let this machine stand for
    one without its newer instructions (AVX512-BF16)."""
    from dora_sam2.devices import ISA_CAPS

    return {name: os.environ[name] for name in ISA_CAPS if os.environ.get(name)}


def best_pass(passes: list[dict]) -> dict:
    """Per object count, the pass with the lowest cost (both passes' costs kept)."""
    good = [p for p in passes if "error" not in p]
    if not good:
        return passes[0]
    best = dict(good[0], per_objects={})
    for n in good[0]["per_objects"]:
        row = min((p["per_objects"][n] | {"masks": p["masks"]} for p in good), key=lambda r: r["ms"])
        best["per_objects"][n] = row | {"passes_ms": [p["per_objects"][n]["ms"] for p in good]}
    return best


def run_child(job: dict) -> dict:
    """One job in a fresh process: its memory is its own. A peer that cannot run says why, in one line."""
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        error = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        print(f"  {job.get('peer', job['job'])}: {error}", flush=True)
        return {**job, "error": error}
    return {**job, **json.loads(lines[-1])}


def write_frames(folder: Path, count: int) -> None:
    """The frames every peer reads, as JPEG (Meta's predictor reads a folder of them; the others decode
    the same files, so every peer sees the same pixels)."""
    import cv2

    folder.mkdir(parents=True)
    capture = cv2.VideoCapture(str(CLIP)) if CLIP.exists() else None
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    for index in range(count):
        ok, bgr = capture.read() if capture is not None else (False, None)
        if not ok:  # no clip, or past its end: a pattern that moves
            bgr = np.stack([(xs + 3 * index) % 256, (ys * 2) % 256, (xs + ys + index) % 256], -1).astype(np.uint8)
        cv2.imwrite(str(folder / f"{index:05d}.jpg"), cv2.resize(bgr, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA))


# Random weights say "object present" at random; this much on the presence head's bias makes every
# object visible, so masks are non-empty and comparable (tests/support/streaming_reference.py pins the same).
VISIBLE_BIAS = 30.0


def visible_copy(config: str, scratch: Path) -> str:
    """The config's random checkpoint with its presence head pinned to "visible", for ours and transformers."""
    from safetensors.torch import load_file, save_file

    source, _ = model_at_size(config)
    target = scratch / f"visible-{Path(source).name}"
    if not target.exists():
        target.mkdir()
        weights = load_file(Path(source) / "model.safetensors")
        weights["mask_decoder.pred_obj_score_head.proj_out.bias"] += VISIBLE_BIAS
        save_file(weights, target / "model.safetensors")
        (target / "config.json").write_text((Path(source) / "config.json").read_text())
    return str(target)


def add_iou(runs: list[dict], config: str, dtype: str) -> None:
    """transformers' masks against ours on the same weights, per object and frame where either is non-empty."""
    ours, theirs = (next((r for r in runs if (r["peer"], r["config"], r["dtype"]) == (peer, config, dtype)), None)
                    for peer in ("ours", "transformers"))
    if not ours or not theirs or "error" in ours or "error" in theirs:
        return
    for n in map(str, ours["objects"]):
        a, b = (np.load(f"{run['per_objects'][n]['masks']}-{n}.npz") for run in (ours, theirs))
        ious = []
        pixels = int(n) * WIDTH * HEIGHT
        for key in a.files:
            x, y = (np.unpackbits(m[key])[:pixels].astype(bool).reshape(int(n), -1) for m in (a, b))
            union = (x | y).sum(1)
            ious += ((x & y).sum(1)[union > 0] / union[union > 0]).tolist()
        theirs["per_objects"][n]["iou_with_ours"] = {"min": min(ious, default=None), "masks_compared": len(ious),
                                                    "mean": float(np.mean(ious)) if ious else None}


# ---------------------------------------------------------------------------- one peer, in its own process


def child(job: dict) -> None:
    import torch

    if job.get("threads"):
        torch.set_num_threads(job["threads"])

    if job["job"] == "rates":
        print(json.dumps(matmul_rates(torch, job.get("dtypes", ("float32", "bfloat16")))))
        return
    frames = sorted(Path(job["frames_dir"]).glob("*.jpg"))[: job["frames"]]
    peer = {"ours": Ours, "transformers": Transformers, "meta": Meta}[job["peer"]](job, frames)
    out = {"per_objects": {}}
    for n in job["objects"]:
        records, masks = peer.run(n)
        steady = records[FILLING:] or records[-1:]
        out["per_objects"][str(n)] = {
            "ms": float(np.median([r["ms"] for r in steady])),
            "stages_ms": {s: float(np.median([r["stages"][s] for r in steady])) for s in STAGES},
            "frames": records if job["job"] == "soak" else None,
            **peer.extra(),
        }
        if job.get("masks"):
            np.savez(f"{job['masks']}-{n}.npz", **{f"f{i}": np.packbits(m) for i, m in enumerate(masks)})
    out["model"] = peer.description
    print(json.dumps(out))


def matmul_rates(torch, dtypes) -> dict:
    """GFLOP/s of one large matrix product in each dtype the run measures, best of 3: what the stages are
    measured against (only those: where bf16 is emulated, its product alone takes many minutes)."""
    rates = {}
    for dtype in (getattr(torch, name) for name in dtypes):
        a, b = torch.randn(4096, 4096, dtype=dtype), torch.randn(4096, 4096, dtype=dtype)
        a @ b
        best = min(_seconds(lambda: a @ b) for _ in range(3))
        rates[str(dtype).removeprefix("torch.")] = 2 * 4096**3 / best / 1e9
    return rates


def _seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Peer:
    """Frames in, per-frame cost, stage split and masks out; a fresh session for each object count."""

    def __init__(self, job: dict, frames: list[Path]):
        import cv2

        self.job, self.frame_paths = job, frames
        self.frames = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in frames]
        self.model_dir, self.size = job["model"], model_at_size(job["config"])[1]
        self.description = job["config"]
        self._stage_seconds: dict[str, float] = {}
        # Kept only to compare with ours: over a soak they would be the benchmark's own memory growth.
        self.keep_masks = bool(job.get("masks"))

    def extra(self) -> dict:
        return {}

    def time_modules(self, modules: dict[str, list]) -> None:
        """Forward hooks that add each module's seconds to its stage (for the peers whose loop is theirs)."""
        for stage, members in modules.items():
            for module in members:
                if module is None:
                    continue
                module.register_forward_pre_hook(lambda *_: setattr(self, "_started", time.perf_counter()))
                module.register_forward_hook(lambda *_, s=stage: self._add(s, time.perf_counter() - self._started))

    def _add(self, stage: str, seconds: float) -> None:
        self._stage_seconds[stage] = self._stage_seconds.get(stage, 0.0) + seconds

    def record(self, seconds: float) -> dict:
        stages = {s: 1e3 * self._stage_seconds.pop(s, 0.0) for s in STAGES[:-1]}
        stages["other"] = max(0.0, 1e3 * seconds - sum(stages.values()))
        self._stage_seconds.clear()
        return {"ms": 1e3 * seconds, "rss_mb": resident_mb(), "stages": stages}


class Ours(Peer):
    def __init__(self, job, frames):
        super().__init__(job, frames)
        from dora_sam2.model import Sam2Backend
        from dora_sam2.video import Sam2StreamingModel

        self.streaming = Sam2StreamingModel(Sam2Backend.load(self.model_dir, video=True, device="cpu",
                                                             dtype=job["dtype"], image_size=self.size,
                                                             threads=job.get("threads", 0)))
        # As the node starts in track mode on a CPU: the memory encoder's batch measured here. The memory
        # attention path stays the default (blocks of 256), which the node's measuring keeps on this
        # machine at 512 or ties with (blocks of 128, within 2%).
        self.streaming.choose_memory_group_by_measuring()
        self._flops: dict[int, dict] = {}  # per object count: the counted FLOPs and their stages' times
        self._last = 0

    def run(self, objects: int):
        from dora_sam2.domain import Frame, Prompt
        from dora_sam2.tracking import LostAfter, Tracker, TrackPolicy

        never_lost = TrackPolicy(objects, LostAfter(10**9, frames=True), detector_misses=0, revive_seconds=0)
        tracker = Tracker(self.streaming, never_lost)
        records, masks = [], []
        for index, rgb in enumerate(self.frames):
            before = dict(tracker.stages.seconds)
            prompt = Prompt.from_boxes("bbox", BOXES[:objects]) if index == 0 else None
            started = time.perf_counter()
            answer = tracker.step(Frame("image", rgb, None, "rgb8"), prompt)
            seconds = time.perf_counter() - started
            spent = {k: v - before.get(k, 0.0) for k, v in tracker.stages.seconds.items()}
            self._stage_seconds = {
                "encode": spent.get("encode", 0.0),
                "memory attention + decode": spent.get("memory", 0.0) + spent.get("prompt_decode", 0.0),
                "memory encode": spent.get("remember", 0.0)}
            records.append(self.record(seconds))
            masks.append(answer.masks if self.keep_masks else None)
        self._count_flops(tracker, objects, records)
        return records, masks

    def _count_flops(self, tracker, objects: int, records: list[dict]) -> None:
        """FLOPs of one more frame's encode and memory attention (counted, not timed), for the achieved rate."""
        from torch.utils.flop_counter import FlopCounterMode

        from dora_sam2.domain import Frame

        counted = {}
        for name in ("encode", "track"):
            method = getattr(self.streaming, name)

            def counting(*a, _method=method, _name=name, **k):
                with FlopCounterMode(display=False) as counter:
                    out = _method(*a, **k)
                counted[_name] = counter.get_total_flops()
                return out
            setattr(self.streaming, name, counting)
        try:
            tracker.step(Frame("image", self.frames[-1], None, "rgb8"))
        finally:
            del self.streaming.encode, self.streaming.track
        steady = records[FILLING:] or records[-1:]
        self._flops[objects] = {
            "encode_gflop": counted["encode"] / 1e9,
            "memory_gflop": counted.get("track", 0) / 1e9,
            "encode_ms": float(np.median([r["stages"]["encode"] for r in steady])),
            "memory_ms": float(np.median([r["stages"]["memory attention + decode"] for r in steady])),
        }
        self._last = objects

    def extra(self) -> dict:
        return {"flops": self._flops.get(self._last)}


class Transformers(Peer):
    def __init__(self, job, frames):
        super().__init__(job, frames)
        import torch
        from transformers import Sam2VideoProcessor
        from transformers.models.sam2.image_processing_sam2 import Sam2ImageProcessor
        from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

        from dora_sam2.loading import load_sam2

        self.torch = torch
        self.model = load_sam2(self.model_dir, video=True, image_size=self.size).eval()
        size = self.model.config.image_size
        square = {"height": size, "width": size}
        self.processor = Sam2VideoProcessor(Sam2ImageProcessor(size=square), Sam2VideoVideoProcessor(size=square))
        self.dtype = getattr(torch, job["dtype"])
        self.description = type(self.model).__name__
        model = self.model
        self.time_modules({"encode": [model.vision_encoder],
                           "memory attention + decode": [model.memory_attention, model.mask_decoder],
                           "memory encode": [model.memory_encoder, getattr(model, "spatial_perceiver", None)]})

    def run(self, objects: int):
        torch = self.torch
        # The session's own dtype is what its users set for bf16 (its buffers and state); the model runs
        # under autocast, as ours does, so both sides compute in the same precision.
        session = self.processor.init_video_session(inference_device="cpu", dtype=self.dtype)
        records, masks = [], []
        autocast = torch.autocast("cpu", torch.bfloat16, enabled=self.dtype == torch.bfloat16)
        with torch.inference_mode(), autocast:
            for index, rgb in enumerate(self.frames):
                started = time.perf_counter()
                inputs = self.processor(images=rgb, device="cpu", return_tensors="pt")
                if index == 0:
                    self.processor.add_inputs_to_inference_session(
                        session, frame_idx=0, obj_ids=list(range(1, objects + 1)),
                        input_boxes=[BOXES[:objects].tolist()], original_size=inputs.original_sizes[0])
                out = self.model(inference_session=session, frame=inputs.pixel_values[0].to(self.dtype))
                logits = self.processor.post_process_masks([out.pred_masks], original_sizes=inputs.original_sizes,
                                                           binarize=False)[0]
                answer = (logits[:, 0] > 0).numpy()
                records.append(self.record(time.perf_counter() - started))
                masks.append(answer if self.keep_masks else None)
        return records, masks


class Meta(Peer):
    CONFIGS = {"tiny": "configs/sam2.1/sam2.1_hiera_t.yaml"}

    def __init__(self, job, frames):
        super().__init__(job, frames)
        import torch
        from sam2.build_sam import build_sam2_video_predictor

        name, _, size = job["config"].partition("@")
        if name not in self.CONFIGS:
            raise SystemExit(f"Meta's sam2 package has no {name} (EdgeTAM is a separate repository, not on PyPI)")
        overrides = [f"++model.image_size={size}"] if size else []
        self.torch = torch
        self.predictor = build_sam2_video_predictor(self.CONFIGS[name], ckpt_path=None, device="cpu",
                                                    hydra_overrides_extra=overrides)
        with torch.no_grad():  # every object visible, as the other peers' weights say
            self.predictor.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += VISIBLE_BIAS
        self.description = f"SAM2VideoPredictor ({self.CONFIGS[name]})"
        p = self.predictor
        self.time_modules({"encode": [p.image_encoder],
                           "memory attention + decode": [p.memory_attention, p.sam_mask_decoder],
                           "memory encode": [p.memory_encoder]})

    def run(self, objects: int):
        torch = self.torch
        folder = tempfile.mkdtemp()
        for path in self.frame_paths:
            os.symlink(path, Path(folder) / path.name)
        state = self.predictor.init_state(folder, offload_video_to_cpu=True, offload_state_to_cpu=True)
        autocast = torch.autocast("cpu", torch.bfloat16, enabled=self.job["dtype"] == "bfloat16")
        records, masks = [], []
        with torch.inference_mode(), autocast:
            started = time.perf_counter()
            for obj, box in enumerate(BOXES[:objects]):
                self.predictor.add_new_points_or_box(state, frame_idx=0, obj_id=obj + 1, box=box)
            for _, _, logits in self.predictor.propagate_in_video(state):
                answer = (logits[:, 0] > 0).numpy()
                records.append(self.record(time.perf_counter() - started))
                masks.append(answer if self.keep_masks else None)
                started = time.perf_counter()
        return records, masks


# ---------------------------------------------------------------------------- the report


def markdown(result: dict) -> str:
    runs = [r for r in result["runs"] if "error" not in r]
    lines = [f"Tracking, steady state (median of the frames after the memory window filled, the better of "
             f"{result['passes']} passes), {WIDTH}x{HEIGHT} frames of {result['clip']}; {result['machine']}"
             f"{_threads(result)}{_caps(result)}.", "",
             "| model @ input | dtype | objects | ours | transformers | meta sam2 | transformers / ours | meta / ours "
             "| IoU with ours (min) |", "|---|---|---|---|---|---|---|---|---|"]
    for config, dtype in dict.fromkeys((r["config"], r["dtype"]) for r in result["runs"]):
        by_peer = {r["peer"]: r for r in result["runs"] if r["config"] == config and r["dtype"] == dtype}
        ours = by_peer.get("ours", {}).get("per_objects", {})
        for n in map(str, next((r["objects"] for r in by_peer.values()), [])):
            cells = [_ms(by_peer.get(p), n) for p in PEERS]
            ratios = [_ratio(by_peer.get(p), ours.get(n), n) for p in ("transformers", "meta")]
            iou = by_peer.get("transformers", {}).get("per_objects", {}).get(n, {}).get("iou_with_ours") or {}
            iou_cell = f"{iou['min']:.4f} ({iou['masks_compared']} masks)" if iou.get("min") is not None else "-"
            lines.append(f"| {config} | {dtype} | {n} | " + " | ".join(cells + ratios) + f" | {iou_cell} |")
    failed = [r for r in result["runs"] + result["soak"] if "error" in r]
    lines += [""] + [f"- {r['peer']} {r['config']} {r['dtype']}: could not run: {r['error']}" for r in failed]
    lines += ["", *_headroom(result, runs), "", *_soak(result)]
    return "\n".join(lines) + "\n"


def _threads(result: dict) -> str:
    threads = result.get("threads")
    return f"; every peer on {threads} thread{'s' if threads > 1 else ''}" if threads else ""


def _caps(result: dict) -> str:
    caps = result.get("caps")
    return "; capped: " + ", ".join(f"{k}={v}" for k, v in caps.items()) if caps else ""


def _ms(run: dict | None, n: str) -> str:
    if run is None:
        return "not run"
    if "error" in run:
        return "cannot run (below)"
    return f"{run['per_objects'][n]['ms']:.0f} ms"


def _ratio(run: dict | None, ours: dict | None, n: str) -> str:
    """Their cost over ours: above 1, we are faster."""
    if not run or "error" in run or not ours:
        return "-"
    return f"**{run['per_objects'][n]['ms'] / ours['ms']:.2f}x**"


def _headroom(result: dict, runs: list[dict]) -> list[str]:
    rates = result["rates"]
    measured = ", ".join(f"{rates[d]:.0f} GFLOP/s {name}" for d, name in (("float32", "fp32"), ("bfloat16", "bf16"))
                         if d in rates)  # the dtypes this run timed
    lines = [f"Matrix-product rate of this CPU (4096x4096, best of 3): {measured}. Our stages against it:", "",
             "| model @ input | dtype | objects | encoder GFLOP | encoder GFLOP/s | of the rate | memory attention + "
             "decode GFLOP | GFLOP/s | of the rate |", "|---|---|---|---|---|---|---|---|---|"]
    for run in (r for r in runs if r["peer"] == "ours"):
        rate = rates.get(run["dtype"], float("nan"))
        for n, row in run["per_objects"].items():
            f = row.get("flops")
            if not f:
                continue
            encode = f["encode_gflop"] / f["encode_ms"] * 1e3
            memory = f["memory_gflop"] / f["memory_ms"] * 1e3 if f["memory_ms"] else float("nan")
            lines.append(f"| {run['config']} | {run['dtype']} | {n} | {f['encode_gflop']:.1f} | {encode:.0f} | "
                         f"{encode / rate:.0%} | {f['memory_gflop']:.1f} | {memory:.0f} | {memory / rate:.0%} |")
    return lines


def _soak(result: dict) -> list[str]:
    soaks = [s for s in result["soak"] if "error" not in s]
    if not soaks:
        return []
    first = soaks[0]
    lines = [f"Soak: {first['config']}, {first['dtype']}, 1 object, {first['frames']} frames.", "",
             "| peer | median ms/frame | resident MB at frame 30 | at the last frame | growth |",
             "|---|---|---|---|---|"]
    for soak in soaks:
        frames = soak["per_objects"]["1"]["frames"]
        at30, last = frames[min(29, len(frames) - 1)]["rss_mb"], frames[-1]["rss_mb"]
        lines.append(f"| {soak['peer']} | {np.median([f['ms'] for f in frames]):.0f} | {at30:.0f} | {last:.0f} | "
                     f"{last - at30:+.0f} MB |")
    return lines


# ---------------------------------------------------------------------------- the charts

COLOURS = {"ours": "#1f77b4", "transformers": "#ff7f0e", "meta": "#2ca02c"}
STAGE_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c7c7c7")


def draw(result: dict, name: str) -> None:
    """The charts docs/NAME-*.png, from this run's figures only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    DOCS.mkdir(exist_ok=True)
    runs = [r for r in result["runs"] if "error" not in r]
    panels = list(dict.fromkeys((r["config"], r["dtype"]) for r in runs))
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), squeeze=False)
        for ax, (config, dtype) in zip(axes[0], panels):
            for run in (r for r in runs if (r["config"], r["dtype"]) == (config, dtype)):
                counts = [int(n) for n in run["per_objects"]]
                ax.plot(counts, [v["ms"] for v in run["per_objects"].values()], "o-", label=run["peer"],
                        color=COLOURS[run["peer"]])
            ax.set(title=f"{config}, {dtype}", xlabel="objects", ylabel="ms per frame", ylim=(0, None))
            ax.grid(alpha=0.3)
        axes[0][0].legend()
        _save(fig, f"{name}-cost.png", result)

        fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
        for ax, (config, dtype) in zip(axes[0], panels):
            bars = [(f"{r['peer']} x{n}", r["per_objects"][n]["stages_ms"]) for n in ("1", "8")
                    for r in runs if (r["config"], r["dtype"]) == (config, dtype) and n in r["per_objects"]]
            left = np.zeros(len(bars))
            for stage, colour in zip(STAGES, STAGE_COLOURS):
                widths = np.array([b[stage] for _, b in bars])
                ax.barh([label for label, _ in bars], widths, left=left, color=colour, label=stage)
                left += widths
            ax.invert_yaxis()
            ax.set(title=f"{config}, {dtype}", xlabel="ms per frame")
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="upper center", ncol=len(STAGES), fontsize=8)
        _save(fig, f"{name}-stages.png", result, top=0.9)

    soaks = [s for s in result["soak"] if "error" not in s]
    if soaks:
        fig, (cost, memory) = plt.subplots(1, 2, figsize=(10, 3.6))
        for soak in soaks:
            frames = soak["per_objects"]["1"]["frames"]
            colour = COLOURS[soak["peer"]]
            cost.plot([f["ms"] for f in frames], color=colour, label=soak["peer"], linewidth=0.8)
            memory.plot([f["rss_mb"] for f in frames], color=colour, label=soak["peer"])
        first = soaks[0]
        cost.set(title=f"cost per frame, {first['config']} {first['dtype']}, 1 object", xlabel="frame", ylabel="ms",
                 ylim=(0, None))
        memory.set(title="resident memory", xlabel="frame", ylabel="MB", ylim=(0, None))
        cost.legend()
        for ax in (cost, memory):
            ax.grid(alpha=0.3)
        _save(fig, f"{name}-soak.png", result)


def _save(fig, name: str, result: dict, top: float = 1.0) -> None:
    caps = ", ".join(f"{k}={v}" for k, v in result.get("caps", {}).items())
    fig.suptitle(result["machine"] + (f"; capped: {caps}" if caps else ""), fontsize=7, y=0.01, va="bottom")
    fig.tight_layout(rect=(0, 0.04, 1, top))
    fig.savefig(DOCS / name, dpi=110)
    print(f"wrote docs/{name}")


if __name__ == "__main__":
    main()
