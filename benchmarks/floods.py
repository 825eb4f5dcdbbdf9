"""What floods of hostile input cost: memory (RSS) and time, each flood in a fresh process.

    .venv/bin/python benchmarks/floods.py                 # random hiera-tiny (the real layout), 640x480
    .venv/bin/python benchmarks/floods.py --fuzz 5000     # and the fuzz tests at 5000 examples per decoder

The floods of issue 20, through the same code the nodes run: a message of N boxes in segment mode
(MAX_BOXES, the decoder 16 objects at a time), compressed images that declare huge sizes (MAX_PIXELS),
answers naming 10,000 made-up cameras (the rerun viewer: MAX_WAITING), and the click server under 300
refused requests on 300 paths and 150 idle connections (MAX_CONNECTIONS, READ_TIMEOUT). Issue 34's for the
track node: 4 million made-up ids in one `remove` to a node following 16 objects, without a bound and at
MAX_REMOVE (`--only remove` runs just these); and for the rerun viewer: one answer past rerun's 65,535
class ids, track ids past them, and messages stamped past its timeline (`--only rerun`). Peak RSS growth
is read from the kernel's high-water mark, in a process of its own, so one flood does not hide another.

Prints and writes benchmarks/results/floods.json and floods.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from run import machine, random_tiny, save  # noqa: E402

WIDTH, HEIGHT = 640, 480
MB = 1024  # ru_maxrss is in kB


def in_child(function, *args) -> dict:
    """function(*args) in a fresh process: its result, with the peak RSS growth it caused."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measured, (function, *args))


def _measured(function, *args) -> dict:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result = function(*args)
    result.update(seconds=time.perf_counter() - started,
                  peak_mb=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / MB)
    return result


# ---------------------------------------------------------------------------- the floods


def boxes_flood(model_dir: str, count: int) -> dict:
    """One detection message of `count` boxes on a 640x480 frame, as the node answers it."""
    from datetime import datetime, timezone

    from dora_sam2.domain import Frame, Prompt
    from dora_sam2.engine import Segmenter
    from dora_sam2.model import Sam2Backend
    from dora_sam2.scheduling import DetectionFilter, SegmentScheduler
    from dora_sam2.stats import Stages, Stats

    model = Sam2Backend.load(model_dir, dtype="float32")
    now = datetime.now(timezone.utc)
    rng = np.random.default_rng(0)
    frame = Frame("image", rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8), now, "rgb8")
    corners = rng.uniform(0, 400, (count, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(20, 200, (count, 2)).astype(np.float32)], axis=1)
    prompt = Prompt.from_boxes("bbox", boxes, timestamp=now, confidences=rng.uniform(0, 1, count).astype(np.float32))
    stats = Stats(Stages(), 0)
    segmenter = Segmenter(model)
    segmenter.add_frame(frame)
    segmenter.embedding(frame)  # encoded before: the frame's encoding is not the flood's cost
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    [(_, masks)] = list(SegmentScheduler(segmenter, stats, detections=DetectionFilter()).handle([prompt]))
    return {"answered": len(masks), "filtered": stats.filtered, "decode_s": time.perf_counter() - started,
            "decode_peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / MB}


def image_flood(kind: str) -> dict:
    """A compressed frame that declares 40000x40000 (74 bytes) or 16000x16000 (a real, valid PNG)."""
    import cv2
    import pyarrow as pa

    from dora_sam2 import codecs
    from dora_sam2.domain import InputError

    if kind == "header":
        import struct
        import zlib

        def chunk(tag: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

        data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(b"\x00" * 8)) + chunk(b"IEND", b""))
        data = np.frombuffer(data, np.uint8)
    else:
        data = cv2.imencode(".png", np.zeros((16000, 16000, 3), np.uint8))[1].ravel()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:
        codecs.decode_frame("image", pa.array(data), {"encoding": "png"})
        outcome = "decoded"
    except InputError as error:
        outcome = str(error)
    return {"bytes": int(data.size), "outcome": outcome, "decode_s": time.perf_counter() - started,
            "decode_peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / MB}


def cameras_flood(count: int) -> dict:
    """`count` answers (320x240) naming cameras the rerun viewer never sees."""
    import tempfile
    from datetime import datetime, timedelta, timezone

    import rerun as rr

    from dora_sam2 import codecs
    from dora_sam2.domain import Frame, Masks
    from dora_sam2.rerun_viewer import MaskLogger

    rr.init("floods", spawn=False)
    rr.save(str(Path(tempfile.mkdtemp()) / "floods.rrd"))
    logger = MaskLogger(rr)
    t0 = datetime.now(timezone.utc)
    logger.frame(Frame("image", np.zeros((240, 320, 3), np.uint8), t0, "rgb8"))
    before = _rss_mb()
    for i in range(count):
        value, metadata = codecs.encode_masks(Masks(np.ones((1, 240, 320), bool), np.ones(1, np.float32), ("x",),
                                                    f"camera {i}", t0 + timedelta(seconds=i)))
        logger.answer("masks", {"value": value, "metadata": metadata})
    rr.disconnect()
    return {"waiting": logger._pairs.waiting, "rss_growth_mb": _rss_mb() - before}


def viewer_masks_flood(count: int) -> dict:
    """One answer of `count` masks of a 4x4 frame to the rerun viewer, MAX_MASKS=`count`: past 65,535
    (rerun's class ids) the first 65,535 are drawn."""
    from datetime import datetime, timezone

    from dora_sam2 import codecs
    from dora_sam2.domain import Masks
    from dora_sam2.settings import Limits

    rr, logger, said = _viewer(Limits(max_masks=count))
    t0 = datetime.now(timezone.utc)
    masks = np.zeros((count, 16), bool)
    masks[np.arange(count), np.arange(count) % 16] = True
    value, metadata = codecs.encode_masks(Masks(masks.reshape(count, 4, 4), np.ones(count, np.float32),
                                                ("",) * count, "image", t0))
    logger.on_input(_frame_event(t0, 4, 4))
    before, started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    logger.on_input({"id": "masks", "value": value, "metadata": metadata})
    rr.get_data_recording().flush(timeout_sec=60)
    result = {"masks": count, "drawn_s": time.perf_counter() - started,
              "drawn_peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / MB, "said": said}
    rr.disconnect()
    return result


def viewer_track_ids_flood(count: int, first_id: int) -> dict:
    """`count` answers of the same 16 tracks (64x48 frames) to the rerun viewer, their ids `first_id` on: past
    65,535 they fold into rerun's class ids."""
    from datetime import datetime, timedelta, timezone

    from dora_sam2 import codecs
    from dora_sam2.domain import Masks
    from dora_sam2.settings import Limits

    rr, logger, said = _viewer(Limits())
    t0 = datetime.now(timezone.utc)
    masks = np.zeros((16, 48, 64), bool)
    for i in range(16):
        masks[i, :, 4 * i:4 * i + 4] = True
    before, started = _rss_mb(), time.perf_counter()
    for n in range(count):
        at = t0 + timedelta(seconds=n)
        value, metadata = codecs.encode_masks(Masks(masks, np.ones(16, np.float32), ("",) * 16, "image", at,
                                                    tuple(range(first_id, first_id + 16))))
        logger.on_input(_frame_event(at, 64, 48))
        logger.on_input({"id": "masks", "value": value, "metadata": metadata})
    rr.get_data_recording().flush(timeout_sec=60)
    result = {"answers": count, "first_id": first_id, "per_answer_ms": (time.perf_counter() - started) / count * 1e3,
              "rss_growth_mb": _rss_mb() - before, "said": said}
    rr.disconnect()
    return result


def viewer_times_flood(count: int) -> dict:
    """`count` frames, answers and boxes stamped in the year 9999 to the rerun viewer: its timeline holds
    1677 to 2262."""
    from datetime import datetime, timezone

    import pyarrow as pa

    from dora_sam2 import codecs
    from dora_sam2.domain import Masks
    from dora_sam2.settings import Limits

    rr, logger, said = _viewer(Limits())
    far = datetime(9999, 12, 31, tzinfo=timezone.utc)
    value, metadata = codecs.encode_masks(Masks(np.ones((1, 48, 64), bool), np.ones(1, np.float32), ("",), "image",
                                                far))
    box = {"id": "bbox", "value": pa.array(np.array([1, 1, 9, 9], np.float32)), "metadata": {"timestamp": far}}
    before, started = _rss_mb(), time.perf_counter()
    for _ in range(count):
        logger.on_input(_frame_event(far, 64, 48))
        logger.on_input({"id": "masks", "value": value, "metadata": metadata})
        logger.on_input(box)
    result = {"messages": 3 * count, "seconds": time.perf_counter() - started, "rss_growth_mb": _rss_mb() - before,
              "said": said}
    rr.disconnect()
    return result


def _viewer(limits):
    """The rerun viewer's logger saving to a scratch file, and the lines it says."""
    import logging
    import tempfile

    import rerun as rr

    from dora_sam2.rerun_viewer import MaskLogger

    said = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("dora_sam2.rerun").addHandler(handler)
    logging.getLogger("dora_sam2.rerun").setLevel(logging.INFO)
    rr.init("floods", spawn=False)
    rr.save(str(Path(tempfile.mkdtemp()) / "floods.rrd"))
    return rr, MaskLogger(rr, limits=limits), said


def _frame_event(at, width: int, height: int) -> dict:
    import pyarrow as pa

    return {"id": "image", "value": pa.array(np.zeros(width * height * 3, np.uint8)),
            "metadata": {"encoding": "rgb8", "width": width, "height": height, "timestamp": at}}


def click_flood(paths: int, idle: int) -> dict:
    """`paths` refused POSTs on as many paths, then `idle` connections that send nothing."""
    import http.client
    import logging
    import socket

    from dora_sam2.click import ClickServer, LiveView

    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("dora_sam2.click").addHandler(handler)
    server = ClickServer(LiveView(), "127.0.0.1", 0, "token").start()
    port = server.httpd.server_address[1]
    before = _rss_mb()
    for i in range(paths):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", f"/points/{i}/" + "x" * 1000, b"{}", {"Origin": "http://evil.example"})
        connection.getresponse().read()
        connection.close()
    after_paths = _rss_mb()
    threads = threading.active_count()
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(idle)]
    time.sleep(0.5)
    peak_threads = threading.active_count()
    for sock in sockets:
        sock.close()
    server.stop()
    return {"log_lines": len(lines), "rss_growth_mb": after_paths - before, "threads_before": threads,
            "threads_with_idle": peak_threads}


def remove_flood(model_dir: str, count: int, max_remove: int) -> dict:
    """One `remove` message of `count` made-up track ids to a track-mode node following 16 objects, through
    the adapter and scheduler the node runs; MAX_REMOVE=`max_remove` (at `count` or more: no bound, as
    before it). Peak RSS growth sampled while it is handled: the model's first frame left a higher
    high-water mark than the flood."""
    import logging
    from datetime import datetime, timezone

    import pyarrow as pa

    from dora_sam2.domain import Frame, Prompt
    from dora_sam2.model import Sam2Backend
    from dora_sam2.node import Adapter, scheduler
    from dora_sam2.settings import Limits, Settings
    from dora_sam2.stats import Stages, Stats

    class Sink:  # the dora node: answers go nowhere
        def send_output(self, *args):
            pass

    settings = Settings(mode="track", every_frame=True, max_objects=16, limits=Limits(max_remove=max_remove))
    model = Sam2Backend.load(model_dir, video=True, dtype="float32")
    stats = Stats(Stages(), 0)
    adapter = Adapter(Sink(), scheduler(settings, model, ["image"], stats), stats, ["mask"], limits=settings.limits)
    now = datetime.now(timezone.utc)
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 400, (16, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(40, 200, (16, 2)).astype(np.float32)], axis=1)
    list(adapter.scheduler.handle([Prompt.from_boxes("bbox", boxes, timestamp=now),
                                   Frame("image", rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8), now, "rgb8")]))
    live = stats.tracking["live"]
    event = {"type": "INPUT", "id": "remove", "value": pa.array(np.arange(10**7, 10**7 + count, dtype=np.int64)),
             "metadata": {}}
    said = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("dora_sam2").addHandler(handler)
    before, peak, done = _rss_mb(), [0.0], threading.Event()

    def sample():
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss_mb())

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    adapter.handle([event])
    handled_s = time.perf_counter() - started
    done.set()
    sampler.join()
    return {"ids": count, "max_remove": max_remove, "live_tracks": live, "still_live": stats.tracking["live"],
            "handled_s": handled_s, "peak_growth_mb": max(peak[0], _rss_mb()) - before, "said": said}


def _rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / (1 << 20)


def fuzz(examples: int) -> dict:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests/test_fuzz.py")],
                            env={**__import__("os").environ, "FUZZ_EXAMPLES": str(examples)}, capture_output=True, text=True)
    tests = result.stdout.strip().splitlines()[-1]
    decoders = len([line for line in (ROOT / "tests/test_fuzz.py").read_text().splitlines() if line == "@FUZZ"])
    return {"examples_per_decoder": examples, "fuzzed_tests": decoders, "examples": examples * decoders,
            "result": tests, "seconds": time.perf_counter() - started}


# ---------------------------------------------------------------------------- run and report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="SAM2 checkpoint directory (default: a random hiera-tiny)")
    parser.add_argument("--fuzz", type=int, default=0, help="also run the fuzz tests at this many examples each")
    parser.add_argument("--only", choices=["remove", "rerun"], help="only this flood: its rows printed, the results kept")
    args = parser.parse_args()
    if args.only == "rerun":  # no model needed
        print("\n".join(viewer_rows(viewer_floods())))
        return
    model_dir = args.model or str(random_tiny())
    if args.only == "remove":
        print("\n".join(remove_rows(remove_floods(model_dir))))
        return
    result = {"machine": machine(), "boxes": {}, "images": {}}
    for count in (1, 16, 100, 1000):
        result["boxes"][count] = in_child(boxes_flood, model_dir, count)
    for kind in ("header", "real"):
        result["images"][kind] = in_child(image_flood, kind)
    result["cameras"] = in_child(cameras_flood, 10_000)
    result["viewer"] = viewer_floods()
    result["click"] = in_child(click_flood, 300, 150)
    result["remove"] = remove_floods(model_dir)
    if args.fuzz:
        result["fuzz"] = fuzz(args.fuzz)
    save("floods", result, markdown(result))


def markdown(r: dict) -> str:
    lines = [f"Floods ({r['machine']}; random hiera-tiny, fp32, 640x480)", "",
             "| flood | what the node did | time | peak RSS growth |", "|---|---|---|---|"]
    for count, b in r["boxes"].items():
        lines.append(f"| {count} box{'es' * (count > 1)} in one message | answered {b['answered']}, filtered {b['filtered']} | "
                     f"{b['decode_s'] * 1e3:.0f} ms | +{b['decode_peak_mb']:.0f} MB |")
    for kind, i in r["images"].items():
        what = "74-byte PNG declaring 40000x40000" if kind == "header" else f"valid {i['bytes'] // 1024} kB PNG of 16000x16000"
        outcome = "refused on its header" if "undecoded" in i["outcome"] else i["outcome"][:60]
        lines.append(f"| {what} | {outcome} | {i['decode_s'] * 1e3:.2f} ms | +{i['decode_peak_mb']:.0f} MB |")
    c = r["cameras"]
    lines.append(f"| 10,000 answers naming made-up cameras (rerun viewer) | {c['waiting']} kept waiting | "
                 f"{c['seconds']:.1f} s | RSS +{c['rss_growth_mb']:.0f} MB after |")
    lines += viewer_rows(r["viewer"])
    k = r["click"]
    lines.append(f"| 300 refused POSTs on 300 paths, then 150 idle connections (click server) | {k['log_lines']} log "
                 f"lines (one per kind); threads {k['threads_before']} -> {k['threads_with_idle']} | - | "
                 f"RSS +{k['rss_growth_mb']:.1f} MB after the 300 |")
    lines += remove_rows(r["remove"])
    if "fuzz" in r:
        f = r["fuzz"]
        lines += ["", f"Fuzz: {f['examples']} examples ({f['examples_per_decoder']} for each of {f['fuzzed_tests']} "
                      f"fuzzed readers) in {f['seconds']:.0f} s: {f['result']}"]
    return "\n".join(lines) + "\n"


def remove_floods(model_dir: str) -> dict:
    """4 million made-up ids in one `remove`: without a bound (as before MAX_REMOVE), and with the default."""
    from dora_sam2.settings import Limits

    count = 4_000_000
    return {"unbounded": in_child(remove_flood, model_dir, count, count),
            "bounded": in_child(remove_flood, model_dir, count, Limits().max_remove)}


def remove_rows(floods: dict) -> list[str]:
    rows = []
    for name, f in floods.items():
        bound = f"MAX_REMOVE={f['max_remove']}" + (" (no bound, as before it)" if name == "unbounded" else "")
        outcome = "refused, one line" if any("over MAX_REMOVE" in line for line in f["said"]) else \
            f"read, one line ({f['said'][0][-40:]})" if f["said"] else "read"
        rows.append(f"| {f['ids']:,} made-up ids in one `remove` to a track-mode node following "
                    f"{f['live_tracks']} objects, {bound} | {outcome}; {f['still_live']} tracks live after | "
                    f"{f['handled_s'] * 1e3:.{0 if f['handled_s'] > 0.01 else 2}f} ms | +{f['peak_growth_mb']:.0f} MB |")
    return rows


def viewer_floods() -> dict:
    """What rerun cannot hold, sent to the rerun viewer: class ids past uint16, times past its int64 timeline."""
    return {"masks": [in_child(viewer_masks_flood, count) for count in (1000, 65_535, 70_000)],
            "track_ids": [in_child(viewer_track_ids_flood, 10_000, first) for first in (1, 70_000)],
            "times": in_child(viewer_times_flood, 10_000)}


def viewer_rows(floods: dict) -> list[str]:
    rows = []
    for f in floods["masks"]:
        outcome = f"the first 65,535 drawn, {len(f['said'])} line" if f["said"] else f"{f['masks']:,} drawn"
        rows.append(f"| one answer of {f['masks']:,} masks (4x4), MAX_MASKS={f['masks']} (rerun viewer) | {outcome} | "
                    f"{f['drawn_s'] * 1e3:.0f} ms | +{f['drawn_peak_mb']:.0f} MB |")
    for f in floods["track_ids"]:
        ids = f"{f['first_id']:,} to {f['first_id'] + 15:,}" + (", folded" if f["first_id"] > 65_535 else "")
        rows.append(f"| {f['answers']:,} answers of 16 tracks (64x48), track ids {ids} (rerun viewer) | all drawn, "
                    f"{len(f['said'])} line{'s' * (len(f['said']) != 1)} | {f['per_answer_ms']:.1f} ms an answer | "
                    f"RSS +{f['rss_growth_mb']:.0f} MB after |")
    t = floods["times"]
    rows.append(f"| {t['messages']:,} frames, answers and boxes stamped in the year 9999 (rerun viewer) | none drawn, "
                f"{len(t['said'])} lines | {t['seconds']:.1f} s | RSS +{t['rss_growth_mb']:.0f} MB after |")
    return rows


if __name__ == "__main__":
    main()
