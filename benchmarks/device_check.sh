#!/usr/bin/env bash
# The GPU check on a lent machine with no network (one NVIDIA GPU, python3 holding a CUDA torch and
# torchvision, but an older transformers and no dora): one command, every step under `timeout` within one
# budget, results flat in $OUT.
#
#   benchmarks/device_check.sh --wheels    # here, once: the wheels it installs there, into .whl/ (git-ignored)
#   bash benchmarks/device_check.sh        # there, with .whl carried: install, then the checks
#
# There, in order of value: the wheels into a venv over the image's own packages (torch stays the image's),
# our package editable so `dora-sam2` and friends are commands; a preflight (versions, the GPU, the commands
# dora will start); benchmarks/gpu_check.py without SAM 3 (real dataflows in segment and track mode, the
# model alone, tracking 1/4/8 objects); benchmarks/processor_parity.py on the GPU (our pre/post-processing
# against transformers' Sam2Processor, mask IoU >= 0.999); then SAM 3's cost as gpu_check.py measures it
# (benchmarks/sam3.py, saved after each input size). SAM 3 runs last and apart: it is the longest step and
# the one most likely to run out of time, and the figures before it must survive it.
#
# Settings (environment): BUDGET (seconds for everything, default 450), DEVICE (cuda), PYTHON (the
# interpreter that holds torch, python3), STEPS (default "gpu_check parity sam3"; empty: set-up and
# preflight only, e.g. `DEVICE=cpu PYTHON=.venv/bin/python STEPS= bash benchmarks/device_check.sh` here),
# OUT (where results go; the device tool sets it, else benchmarks/results/device).
# $OUT gets at most 8 files: device_check.log, gpu_check.log/.json/.md, parity.log, sam3.log/.json/.md.
set -u
cd "$(dirname "$0")/.."

WHEELS=(transformers==5.24.0 dora-rs==1.1.0 dora-rs-cli==1.1.0 setuptools==84.2.1)

fetch_wheels() {
  # For cp312 on manylinux x86-64, no dependencies: the image has the rest (huggingface-hub 1.33, tokenizers
  # 0.23.2, safetensors 0.8.0, regex, pyarrow ... all within these wheels' Requires-Dist; dora-rs-cli's `uv`
  # is only for `dora run --uv`). The two dora wheels are recompressed with LZMA, the same files and RECORD,
  # so that everything that travels stays under the tool's 64 MiB.
  set -e
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  rm -rf .whl && mkdir -p .whl
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${WHEELS[@]}"
  .venv/bin/python - <<'EOF'
import glob, os, zipfile
for path in glob.glob(".whl/dora_rs*.whl"):
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_LZMA) as zout:
        for info in zin.infolist():
            member = zipfile.ZipInfo(info.filename, info.date_time)
            member.external_attr, member.compress_type = info.external_attr, zipfile.ZIP_LZMA
            zout.writestr(member, zin.read(info))
    os.replace(path + ".tmp", path)
EOF
  # processor_parity.py's frame: the real clip where this checkout has it (it reads ../shared/data)
  if [ -f ../shared/data/cups.mp4 ]; then cp ../shared/data/cups.mp4 .whl/; fi
  ls -l .whl && du -ch .whl | tail -1
}

if [ "${1:-}" = "--wheels" ]; then fetch_wheels; exit; fi

BUDGET=${BUDGET:-450}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
STEPS=${STEPS-gpu_check parity sam3}
OUT=${OUT:-benchmarks/results/device}
RESERVE=10  # seconds kept back at the end for copying and the summary
VENV=/tmp/dora-sam2-venv
CHOSEN=/tmp/dora-sam2-python  # install writes the interpreter it set up here
LOGS=/tmp/dora-sam2-logs  # each step's whole output; the checks' go to $OUT too (at most 8 files come back)
mkdir -p "$OUT" "$LOGS"
exec > >(tee "$OUT/device_check.log") 2>&1
TEE=$!
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RUST_BACKTRACE=0
export BUDGET DEVICE PYTHON VENV CHOSEN
SUMMARY=()
FAILED=0

say() { printf '[%4ds] %s\n' "$SECONDS" "$*"; }

step() {
  # step NAME CAP COMMAND...: COMMAND under `timeout`, at most CAP seconds and never past the budget; its
  # output in $LOGS/NAME.log, the end of it here.
  local name=$1 cap=$2
  shift 2
  local left=$((BUDGET - SECONDS - RESERVE))
  if ((left < 20)); then
    say "$name: skipped, ${left}s of the ${BUDGET}s budget left"
    SUMMARY+=("$name: skipped (budget)")
    FAILED=1
    return 1
  fi
  local limit=$((cap < left ? cap : left)) started=$SECONDS rc
  say "$name: start, limit ${limit}s: $*"
  if declare -F "$1" >/dev/null; then set -- bash -c '"$@"' step "$@"; fi  # `timeout` runs programs only
  # In a session of its own, so that what it leaves behind can be ended: on a timeout `dora run` stops
  # its dataflow gracefully and outlives the benchmark that started it, its nodes still at work.
  setsid -w bash -c 'echo $$ >"$0"; exec timeout -k 10 "$@"' "$LOGS/$name.sid" "$limit" "$@" \
    >"$LOGS/$name.log" 2>&1 </dev/null
  rc=$?
  end_session "$(cat "$LOGS/$name.sid")"
  tail -n 40 "$LOGS/$name.log" | sed "s/^/  $name| /"
  local verdict=ok
  if ((rc == 124 || rc == 137)); then verdict="TIMED OUT after ${limit}s"; elif ((rc != 0)); then verdict="FAILED, rc $rc"; fi
  say "$name: $verdict in $((SECONDS - started))s"
  SUMMARY+=("$name: $verdict ($((SECONDS - started))s)")
  ((rc == 0)) || FAILED=1
  return $rc
}

end_session() {  # end_session SID: every process still in that session, by its pid
  local stat line fields left=()
  for stat in /proc/[0-9]*/stat; do
    read -r line <"$stat" 2>/dev/null || continue
    read -ra fields <<<"${line##*) }"  # state, ppid, pgrp, session, ...
    [ "${fields[3]}" = "$1" ] && left+=("${line%% *}")
  done
  if ((${#left[@]})); then
    say "ending what the step left running: pids ${left[*]}"
    kill -9 "${left[@]}" 2>/dev/null
  fi
  return 0
}

keep() {  # keep FILE...: the results that exist, into $OUT
  for file in "$@"; do [ -f "$file" ] && cp "$file" "$OUT/" && say "kept $file"; done
  return 0
}

install_venv() {
  # A venv of our own over the image's site-packages (added after ours, .pth files and all): the wheels
  # shadow the image's older transformers, and its bin holds python3, dora and dora-sam2 side by side,
  # which the benchmarks need (they start `dora` from next to sys.executable, and dora starts .py nodes
  # with the python3 on PATH). The image's pip does the installing.
  local sites purelib
  sites=$("$PYTHON" -c 'import os, site, torch
print(list(dict.fromkeys(site.getsitepackages() + [os.path.dirname(os.path.dirname(torch.__file__))])))') || return 1
  rm -rf "$VENV" && "$PYTHON" -m venv --without-pip "$VENV" || return 1
  purelib=$("$VENV/bin/python3" -c 'import sysconfig; print(sysconfig.get_path("purelib"))') || return 1
  echo "import site; list(map(site.addsitedir, $sites))" >"$purelib/zz_image_site_packages.pth"
  "$VENV/bin/python3" -c 'import torch, numpy, cv2, scipy, pyarrow, yaml, pip' || return 1
  "$VENV/bin/python3" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --force-reinstall \
    .whl/*.whl || return 1
  "$VENV/bin/python3" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir -e . || return 1
  echo "$VENV/bin/python3" >"$CHOSEN"
}

install_into_image() {
  # The fallback: the image's own environment, replaced in place (a lent machine starts bare every time);
  # never an environment of this checkout's (.venv, .venv-ref), which others use.
  if "$PYTHON" -c 'import sys, os; sys.exit(not sys.prefix.startswith(os.getcwd()))'; then
    echo "$PYTHON is this checkout's own environment: not installing into it"
    return 1
  fi
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --force-reinstall .whl/*.whl || return 1
  "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir -e . || return 1
  "$PYTHON" -c 'import sys; print(sys.executable)' >"$CHOSEN"
}

install() {
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "no wheels in .whl/: run 'benchmarks/device_check.sh --wheels' here and name .whl in the run's carry"
    return 1
  fi
  ls -l .whl
  install_venv || { echo "the venv did not work (above); installing into the image's environment instead"; install_into_image; }
}

preflight() {
  # Every import the checks make, the versions they run on, the GPU, and the commands dora will start.
  "$PY" - "$DEVICE" <<'EOF' || return 1
import sys, torch, transformers, dora, dora_sam2, cv2, pyarrow, scipy, huggingface_hub, tokenizers
print(f"python {sys.version.split()[0]} at {sys.executable}")
for module in (torch, transformers, dora, dora_sam2, cv2, pyarrow, scipy, huggingface_hub, tokenizers):
    print(f"{module.__name__} {getattr(module, '__version__', '?')} from {module.__file__}")
try:
    import torchvision
    print(f"torchvision {torchvision.__version__}")
except Exception as error:  # the parity step needs it; the rest does not
    print(f"torchvision does not import ({type(error).__name__}: {error}): the parity step will fail")
if not transformers.__version__.startswith("5.24."):
    raise SystemExit(f"transformers {transformers.__version__} imported, not the carried 5.24")
from transformers import Sam2Processor, Sam3Model  # noqa: F401  the parity check and SAM 3 need them
print(f"cuda available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"gpu: {torch.cuda.get_device_name()}, capability {torch.cuda.get_device_capability()}, "
          f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
if sys.argv[1].startswith("cuda") and not torch.cuda.is_available():
    raise SystemExit("DEVICE is cuda but this torch sees no GPU")
EOF
  local command
  for command in python3 dora dora-sam2; do
    echo "$command: $(command -v "$command")"
    [ "$(dirname "$(command -v "$command")")" = "$(dirname "$PY")" ] || { echo "$command is not beside $PY"; return 1; }
  done
  dora --version
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
  fi
}

parity_frame() {
  # processor_parity.py reads the real clip from ../shared/data beside the checkout; bring the carried one
  if [ -f .whl/cups.mp4 ] && [ ! -f ../shared/data/cups.mp4 ]; then
    mkdir -p ../shared/data 2>/dev/null && cp .whl/cups.mp4 ../shared/data/ 2>/dev/null
  fi
  if [ -f ../shared/data/cups.mp4 ]; then say "parity frame: cups.mp4"; else say "parity frame: synthetic"; fi
}

say "device check: budget ${BUDGET}s, DEVICE=$DEVICE, steps: ${STEPS:-none}; $(uname -n), $(nproc) cores"
export -f install install_venv install_into_image preflight
rm -f "$CHOSEN"
if ! step install 150 install; then
  say "install failed: nothing else can run"
elif ! PY=$(cat "$CHOSEN") || ! export PY PATH="$(dirname "$PY"):$PATH" || ! step preflight 90 preflight; then
  say "preflight failed: nothing else can run"
else
  for name in $STEPS; do
    case $name in
      gpu_check)
        rm -f benchmarks/results/gpu_check.json benchmarks/results/gpu_check.md
        step gpu_check 270 "$PY" benchmarks/gpu_check.py --device "$DEVICE" --no-sam3
        keep "$LOGS/gpu_check.log" benchmarks/results/gpu_check.json benchmarks/results/gpu_check.md ;;
      parity)
        parity_frame
        step parity 120 "$PY" benchmarks/processor_parity.py --device "$DEVICE"
        keep "$LOGS/parity.log" ;;
      sam3)
        # what gpu_check.py measures for SAM 3 (finder with 1 and 3 phrases, tracking 1 and 4 objects,
        # best of 5, at 1008 and 504), saved after each size
        rm -f benchmarks/results/sam3.json benchmarks/results/sam3.md
        step sam3 300 "$PY" benchmarks/sam3.py --device "$DEVICE" --sizes 1008 504 --objects 1 4 --repeats 5
        keep "$LOGS/sam3.log" benchmarks/results/sam3.json benchmarks/results/sam3.md ;;
      *) say "unknown step '$name' (gpu_check, parity, sam3)"; FAILED=1 ;;
    esac
  done
fi

say "summary:"
printf '  %s\n' "${SUMMARY[@]}"
say "results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exec >&- 2>&-
wait "$TEE"  # the log complete before the tool collects $OUT
exit $FAILED
