"""`dora-sam2-world OUT_DIR`: clips of a synthetic world with exact ground truth, as a COCO dataset.

    dora-sam2-world out/world --clips 10 --seed 0 --frames 150 --size 640x480
    dora-sam2-world out/held-out --seed 1 --scenario occlusion --clips 20

Clip i of seed S is drawn from the seed (S, i) alone: the same command writes the same clips, and
another --seed writes clips never seen before (held out). Backgrounds and some textures are cut from
real footage (--footage, by default ../shared/data/cups.mp4 when it is there; procedural otherwise).
What is written is in writer.py's docstring and the README ("A synthetic world with ground truth").
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from pathlib import Path

from ..settings import Limits
from .render import Footage, FootageError
from .scenarios import SCENARIOS
from .scene import Format, Scene
from .writer import IMAGE_FORMATS, WorldWriter

log = logging.getLogger("dora_sam2.world")

MAX_CLIPS = 10_000
MAX_FRAMES = 18_000  # a clip's frames: 10 minutes at 30 fps
MAX_FPS = 240.0
MIN_SIDE = 16  # pixels: a frame's width and height
DEFAULT_FOOTAGE = Path("../shared/data/cups.mp4")  # beside the checkout, as the tests and benchmarks find it


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s dora-sam2-world: %(message)s", stream=sys.stderr)
    parser = _parser()
    args = parser.parse_args(argv)
    fmt = Format(*_size(parser, args.size), fps=args.fps, frames=args.frames)
    _check(parser, args, fmt)
    try:
        import pycocotools.mask  # noqa: F401 - said at start, not after the first frame
    except ImportError:
        log.error("dora-sam2-world needs pycocotools: pip install 'dora-sam2[dataset]'.")
        sys.exit(1)
    try:
        footage = _footage(args.footage)
        sys.exit(_write(args, fmt, footage))
    except (FootageError, ValueError) as error:
        log.error("%s", error)
        sys.exit(1)
    except OSError as error:
        log.error("could not write the world to %s (%s)", args.out_dir, error)
        sys.exit(1)


def _write(args, fmt: Format, footage: Footage | None) -> int:
    started, build = time.perf_counter(), SCENARIOS[args.scenario]

    def scene(index: int) -> Scene:
        return build((args.seed, index), fmt, name=f"{args.scenario}-{args.seed}-{index:04d}")

    first = scene(0)  # a format the scenario cannot fit is said before anything is written
    writer = WorldWriter(Path(args.out_dir), args.image_format, video=not args.no_video)
    for index in range(args.clips):
        clip = first if index == 0 else scene(index)
        totals = writer.add(clip, footage)
        log.info("%s: %d frames, %d objects, %s; %d object-frames hidden, %d out of the frame (%.1f s)",
                 totals.name, totals.frames, totals.objects, _events(clip), totals.hidden, totals.outside,
                 totals.seconds)
    command = (f"dora-sam2-world OUT_DIR --scenario {args.scenario} --seed {args.seed} --clips {args.clips} "
               f"--frames {fmt.frames} --size {fmt.width}x{fmt.height} --fps {fmt.fps:g}")
    path = writer.finish(f"dora-sam2 synthetic world: {command}; footage: {footage.path if footage else 'none'}")
    log.info("%d clip%s, %d frames written to %s (%.1f s)", args.clips, "s" * (args.clips != 1),
             args.clips * fmt.frames, path, time.perf_counter() - started)
    return 0


def _events(scene: Scene) -> str:
    kinds = Counter(event.kind for event in scene.events)
    return "events: " + (", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "none")


def _footage(given: str | None) -> Footage | None:
    if given is None:
        if DEFAULT_FOOTAGE.is_file():
            return Footage(DEFAULT_FOOTAGE)
        log.info("no footage at %s: backgrounds and textures are procedural only (--footage FILE to cut them "
                 "from a video)", DEFAULT_FOOTAGE)
        return None
    return None if given.lower() == "none" else Footage(given)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dora-sam2-world", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", metavar="OUT_DIR")
    parser.add_argument("--clips", type=int, default=10, help=f"clips to write (1 to {MAX_CLIPS}; default 10)")
    parser.add_argument("--seed", type=int, default=0, help="the world's seed (default 0)")
    parser.add_argument("--frames", type=int, default=150, help=f"frames a clip (1 to {MAX_FRAMES}; default 150)")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the frames (default 640x480)")
    parser.add_argument("--fps", type=float, default=30.0, help="frames a second (default 30)")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="random",
                        help="what every clip is built around (default random)")
    parser.add_argument("--footage", help=f"a video to cut backgrounds and textures from, or none "
                                          f"(default {DEFAULT_FOOTAGE} when it is there)")
    parser.add_argument("--image-format", choices=IMAGE_FORMATS, default="png",
                        help="png (lossless, the default) or jpg (quality 95, as dora-sam2-dataset writes)")
    parser.add_argument("--no-video", action="store_true", help="no mp4 per clip")
    return parser


def _size(parser: argparse.ArgumentParser, text: str) -> tuple[int, int]:
    try:
        width, height = (int(side) for side in text.lower().split("x"))
    except ValueError:
        parser.error(f"--size {text!r}: give WIDTHxHEIGHT, e.g. 640x480")
    return width, height


def _check(parser: argparse.ArgumentParser, args, fmt: Format) -> None:
    pixels = Limits().max_pixels  # the default, not the env: clips any node reads with its settings unset
    if not 1 <= args.clips <= MAX_CLIPS:
        parser.error(f"--clips {args.clips}: give 1 to {MAX_CLIPS}")
    if not 1 <= fmt.frames <= MAX_FRAMES:
        parser.error(f"--frames {fmt.frames}: give 1 to {MAX_FRAMES}")
    if min(fmt.width, fmt.height) < MIN_SIDE or fmt.width * fmt.height > pixels:
        parser.error(f"--size {args.size}: give sides of at least {MIN_SIDE} pixels and at most {pixels} pixels "
                     f"in all (the default MAX_PIXELS, which the setting does not change here)")
    if not 0 < fmt.fps <= MAX_FPS:
        parser.error(f"--fps {args.fps:g}: give more than 0 and at most {MAX_FPS:g}")


if __name__ == "__main__":
    main()
