#!/usr/bin/env bash
# Sets up dora-sam2 in .venv and runs the demo: a clip (or a synthetic scene) -> boxes -> SAM2 ->
# annotated frames and overlay.mp4 in out/demo/.
#   ./demo.sh                   real weights (MODEL, default facebook/sam2.1-hiera-tiny; fetched once)
#   ./demo.sh --world           offline: the model scripts/make-fixture.sh trains (models/world-sam2) tracks a
#                               synthetic world clip where objects cross and hide (what ./demo.sh runs when the
#                               hub cannot be reached and that model is there)
#   ./demo.sh --random-weights  no download: a random-weight model checks the plumbing (masks are noise)
#   FIXTURE=dir ./demo.sh --world   the same with another model trained by dora-sam2-train
#   VIDEO=clip.mp4 BOXES='[[x1, y1, x2, y2, "label"], ...]' ./demo.sh   your own clip and boxes (640x360)
set -euo pipefail
cd "$(dirname "$0")"
root=$PWD

scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate

export OUT_DIR="$root/out/demo"
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"  # dora's own stack traces bury the failing node's message

world_demo() {
  # seed 2005's first clip: twins cross, one hides behind a pillar for 0.7 s, another leaves and comes back
  local world="$root/.cache/demo-world" clip=random-2005-0000
  [ -f "$world/annotations.json" ] ||
    dora-sam2-world "$world" --seed 2005 --clips 1 --frames 150 --size 640x480 > /dev/null
  export VIDEO="$world/videos/$clip.mp4" TRUTH="$world/annotations.json" CLIP="$clip"
  export MODEL="${FIXTURE:-$root/models/world-sam2}"
  if [ ! -f "$MODEL/config.json" ]; then
    echo "demo: no trained model in $MODEL: scripts/make-fixture.sh trains one on the synthetic world" \
      "(about 2 hours on one CPU core), or ./demo.sh --random-weights checks the plumbing" >&2
    exit 1
  fi
  rm -rf "$OUT_DIR" && mkdir -p "$OUT_DIR"
  echo "demo: a synthetic world clip -> its true boxes every 10th frame -> SAM2 tracking ($MODEL) -> $OUT_DIR"
  python scripts/demo_run.py examples/world.yml "$OUT_DIR/dora.log" || exit 1
  echo "demo: done, see $OUT_DIR/overlay.mp4 (a model trained here on the synthetic world: it knows nothing else)"
}

if [ "${1:-}" = "--world" ]; then
  world_demo
  exit 0
fi

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
rm -rf "$OUT_DIR" && mkdir -p "$OUT_DIR"
echo "demo: ${VIDEO:-synthetic scene} -> SAM2 (${MODEL:-facebook/sam2.1-hiera-tiny}) -> $OUT_DIR"

# The nodes' lines as they come, dora's own in $OUT_DIR/dora.log. A failed run ends with the failed node's
# sentence, once, and the next step that fits its cause (scripts/demo_run.py).
weights=""
if [ "${1:-}" = "--random-weights" ]; then weights="--random-weights"; fi
status=0
python scripts/demo_run.py examples/demo.yml "$OUT_DIR/dora.log" ${weights:+"$weights"} || status=$?
if [ "$status" = 3 ] && [ -z "${MODEL:-}" ] && [ -f "$root/models/world-sam2/config.json" ]; then
  # no weights and no network (demo_run.py's OFFLINE), and a model trained here
  echo "demo: running the offline demo instead (./demo.sh --world)"
  unset VIDEO BOXES
  world_demo
  exit 0
fi
[ "$status" = 0 ] || exit 1
ls "$OUT_DIR" | grep -q overlay.mp4 && echo "demo: done, see $OUT_DIR/overlay.mp4 and $OUT_DIR/frame_*.png"
