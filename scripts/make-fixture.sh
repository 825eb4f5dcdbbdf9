#!/usr/bin/env bash
# Remakes the trained fixture, models/world-sam2: a small SAM 2 trained from random weights on the
# synthetic world (seed 0) in 175 minutes of the issue's 3 hours on 2 CPU cores. First 90 minutes on both
# cores: two processes of one thread each, their gradients averaged every step (threads do not fill a second
# core on a model this small), single frames, then clips too. Then 85 minutes on one core, four steps in five
# on clips followed through memory, which is what lifted its tracking (BENCHMARKS.md, "Training"). Quality is
# measured on other seeds (benchmarks/quality.py). Usage: scripts/make-fixture.sh [OUT]  (default models/world-sam2)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-models/world-sam2}
data=out/fixture-data
bin=.venv/bin
world() {  # name, scenario, clips, frames[, seed]: clips at 320x240, as JPEG (as dora-sam2-dataset writes)
    [ -f "$data/$1/annotations.json" ] || "$bin/dora-sam2-world" "$data/$1" --seed "${5:-0}" --size 320x240 \
        --image-format jpg --no-video --scenario "$2" --clips "$3" --frames "$4"
}
world random random 150 60
world occlusion occlusion 40 90
world crossing crossing 40 60
world exit exit-and-return 30 90
world validation random 8 30 1000  # held out: watched at each checkpoint, never trained on
datasets=(--data "$data/random" --data "$data/occlusion" --data "$data/crossing" --data "$data/exit")
resume() { [ -f "$1/training-state.pt" ] && echo --resume; }  # a stage goes on where it stopped (a done one stops at once)
train=out/fixture-train
"$bin/dora-sam2-train" "$train" --new micro --seed 0 --minutes 90 --learning-rate 3e-4 --video-after 0.5 --checkpoint-minutes 10 \
    --threads 1 --processes 2 --val "$data/validation" "${datasets[@]}" $(resume "$train")
clips=out/fixture-train-clips
"$bin/dora-sam2-train" "$clips" --from "$train" --seed 1 --minutes 85 --video-share 0.8 --checkpoint-minutes 15 \
    --threads 1 --val "$data/validation" "${datasets[@]}" $(resume "$clips")
mkdir -p "$out"
cp "$clips/config.json" "$clips/model.safetensors" "$out/"
echo "fixture written to $out: MODEL=$out"
