#!/usr/bin/env bash
# Sets up dora-sam2 in .venv and runs the demo: a clip (or a synthetic scene) -> boxes -> SAM2 ->
# annotated frames and overlay.mp4 in out/demo/.
#   ./demo.sh                   real weights (MODEL, default facebook/sam2.1-hiera-tiny; fetched once)
#   ./demo.sh --random-weights  no download: a random-weight model checks the plumbing (masks are noise)
#   VIDEO=clip.mp4 BOXES='[[x1, y1, x2, y2, "label"], ...]' ./demo.sh   your own clip and boxes (640x360)
set -euo pipefail
cd "$(dirname "$0")"
root=$PWD

scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate

if [ "${1:-}" = "--random-weights" ]; then
  [ -f .cache/sam2-random-tiny/config.json ] || dora-sam2-random-model .cache/sam2-random-tiny --size tiny
  export MODEL="$root/.cache/sam2-random-tiny"
fi

clip="${VIDEO:-$root/../shared/data/cups.mp4}"
if [ -f "$clip" ]; then
  export VIDEO="$clip"
  # the cups and the ball in the first frame of cups.mp4, at 640x360
  export BOXES="${BOXES:-[[285, 145, 370, 270, \"cup\"], [415, 145, 500, 272, \"cup\"], [180, 210, 220, 252, \"ball\"]]}"
else
  unset VIDEO
  export BOXES="${BOXES:-[[20, 90, 160, 180, \"block\"], [430, 190, 530, 290, \"disc\"]]}"
fi
export OUT_DIR="$root/out/demo"
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"  # dora's own stack traces bury the failing node's message
rm -rf "$OUT_DIR" && mkdir -p "$OUT_DIR"
echo "demo: ${VIDEO:-synthetic scene} -> SAM2 (${MODEL:-facebook/sam2.1-hiera-tiny}) -> $OUT_DIR"

# The nodes' lines as they come, dora's own in $OUT_DIR/dora.log. A failed run ends with the failed node's
# sentence, once, and the next step that fits its cause (scripts/demo_run.py).
weights=""
if [ "${1:-}" = "--random-weights" ]; then weights="--random-weights"; fi
python scripts/demo_run.py examples/demo.yml "$OUT_DIR/dora.log" ${weights:+"$weights"} || exit 1
ls "$OUT_DIR" | grep -q overlay.mp4 && echo "demo: done, see $OUT_DIR/overlay.mp4 and $OUT_DIR/frame_*.png"
