"""Where one tracked frame's time goes, ours beside Meta's sam2: stages, then the profiler's top operators.

    flock /tmp/cpu.lock .venv-ref/bin/python benchmarks/frame_profile.py --peer ours --objects 4 8
    flock /tmp/cpu.lock .venv-ref/bin/python benchmarks/frame_profile.py --peer meta --objects 4 8

Same frames, boxes and models as benchmarks/peers.py (its peers run as they run there), on `--threads`
threads (1 by default: a figure that does not swing with what else the machine runs). The stages are
finer than peers.py's: memory attention, mask decoder, memory encoder, encoder, and the rest. The
profiler records the frames after the memory window filled (`peers.FILLING`); each stage's time is the
median over those frames, in ms. One more frame is counted (FLOPs, not timed), so each stage's achieved rate
is put against the CPU's fp32 (or bf16) matrix-product rate on the same threads.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402

STAGES = ("encode", "memory attention", "mask decoder", "memory encode")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", choices=("ours", "meta", "transformers"), default="ours")
    parser.add_argument("--config", default="tiny@512")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--objects", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--steady", type=int, default=3, help="frames profiled after the memory window filled")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=15, help="operators listed per run")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    rate_dtype = "float32" if args.dtype == "float32" else "bfloat16"
    rate = peers.matmul_rates(torch, (rate_dtype,))[rate_dtype]
    with tempfile.TemporaryDirectory() as scratch:
        frames_dir = Path(scratch) / "frames"
        peers.write_frames(frames_dir, peers.FILLING + args.steady + 1)
        frames = sorted(frames_dir.glob("*.jpg"))
        model = peers.visible_copy(args.config, Path(scratch)) if args.peer != "meta" else ""
        job = {"peer": args.peer, "config": args.config, "model": model, "dtype": args.dtype, "threads": args.threads}
        peer = {"ours": peers.Ours, "transformers": peers.Transformers, "meta": peers.Meta}[args.peer](job, frames)
        timer = StageTimer(peer)
        for n in args.objects:
            report(args, n, *timer.run(n, args.steady), rate=rate)


class StageTimer:
    """Wraps the peer's modules (Meta, transformers) or our functions with timers, and its per-frame
    `record` with a profiler that starts once the memory window is full."""

    def __init__(self, peer):
        self.peer = peer
        self.seconds: dict[str, float] = {}
        self.flops: dict[str, int] = {}
        self.counting = False
        if isinstance(peer, peers.Ours):
            self._wrap_ours()
        else:
            model = getattr(peer, "predictor", None) or peer.model
            names = {"encode": ("image_encoder", "vision_encoder"), "memory attention": ("memory_attention",),
                     "mask decoder": ("sam_mask_decoder", "mask_decoder"),
                     "memory encode": ("memory_encoder", "spatial_perceiver")}
            for stage, attributes in names.items():
                for module in filter(None, (getattr(model, a, None) for a in attributes)):
                    module.forward = self._timed(stage, module.forward)

    def _wrap_ours(self):
        from dora_sam2 import video

        video.attend_memory = self._timed("memory attention", video.attend_memory)
        video.run_decoder = self._timed("mask decoder", video.run_decoder)
        streaming = self.peer.streaming
        streaming.encode = self._timed("encode", streaming.encode)
        streaming.remember = self._timed("memory encode", streaming.remember)
        self.peer._count_flops = lambda *_: None  # peers.py's extra counted frame: not one of ours to profile

    def _timed(self, stage, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if self.counting:
                from torch.utils.flop_counter import FlopCounterMode

                with FlopCounterMode(display=False) as counter:
                    out = fn(*args, **kwargs)
                self.flops[stage] = self.flops.get(stage, 0) + counter.get_total_flops()
                return out
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started
        return timed

    def run(self, objects: int, steady: int):
        """The steady frames' stage times, the profiler over them, and the GFLOP of each stage of one
        more frame (counted, not timed)."""
        import torch

        frames, record = [], self.peer.record
        profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])

        def recording(seconds):
            stages = {s: 1e3 * self.seconds.pop(s, 0.0) for s in STAGES}
            stages["other"] = 1e3 * seconds - sum(stages.values())
            frames.append({"ms": 1e3 * seconds, **stages})
            if len(frames) == peers.FILLING:
                profiler.__enter__()
            if len(frames) == peers.FILLING + steady:
                profiler.__exit__(None, None, None)
                self.counting = True
            return record(seconds)

        self.peer.record = recording
        self.seconds.clear()
        self.flops, self.counting = {}, False
        try:
            self.peer.run(objects)
        finally:
            self.peer.record, self.counting = record, False
        return frames[peers.FILLING : peers.FILLING + steady], profiler, {s: f / 1e9 for s, f in self.flops.items()}


def report(args, objects: int, steady: list[dict], profiler, gflop: dict, rate: float) -> None:
    """One JSON line (stage ms, GFLOP, the share of the CPU's matrix-product rate each stage reaches),
    then the profiler's table."""
    median = {k: float(np.median([f[k] for f in steady])) for k in steady[0]}
    share = {s: gflop[s] / (median[s] / 1e3) / rate for s in gflop if median.get(s)}
    print(json.dumps({"peer": args.peer, "config": args.config, "dtype": args.dtype, "objects": objects,
                      "threads": args.threads, "frames": len(steady), "median_ms": median, "gflop": gflop,
                      "matmul_gflops": rate, "share_of_matmul_rate": share}))
    table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top,
                                          max_name_column_width=48)
    print(f"-- {args.peer} x{objects}: top operators over {len(steady)} frames, self time\n{table}", flush=True)


if __name__ == "__main__":
    main()
