"""The README's first picture: frames of the offline demo (`./demo.sh --world`) side by side, at half size.

    ./demo.sh --world && .venv/bin/python scripts/demo_picture.py            # writes docs/world-demo.png
    .venv/bin/python scripts/demo_picture.py --frames 20 70 120 --out pic.png

The frames are the demo's own drawings (out/demo/frame_NNNN.png: the masks, ids and labels the node sent),
so the picture shows what a newcomer's run shows, not a redrawing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=Path("out/demo"), help="the demo's output folder")
    parser.add_argument("--frames", type=int, nargs="+", default=[30, 75, 120], help="frame numbers to show")
    parser.add_argument("--out", type=Path, default=Path("docs/world-demo.png"))
    args = parser.parse_args(argv)
    tiles = []
    for number in args.frames:
        path = args.demo / f"frame_{number:04d}.png"
        image = cv2.imread(str(path))
        if image is None:
            print(f"demo_picture: {path} cannot be read: run ./demo.sh --world first", file=sys.stderr)
            return 1
        tiles.append(cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(args.out), np.hstack(tiles))
    print(f"demo_picture: frames {args.frames} of {args.demo} written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
