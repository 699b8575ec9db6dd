#!/usr/bin/env bash
# The GPU checks, as one prepared run for a machine with a CUDA GPU and a CUDA build of torch but
# none of moodstream's other packages and no network (how a GPU is lent here: a short lease on an
# offline machine; bench/RESULTS.md, "On a GPU").
#
#   tools/gpu-checks.sh pack DIR       here, set up (make setup): DIR gets the wheels the checks
#                                      need for that machine's Python (PYVER, 3.12), the musicnn
#                                      weights from the model cache and a clip of ../shared's music
#   tools/gpu-checks.sh run DIR OUT    there, in the repository root: installs DIR's wheels into a
#                                      scratch folder, runs every check (a failed one does not stop
#                                      the rest), writes each one's log and figures under OUT
#
# The checks: (1) the machine; (2) `analyze` of the clip on CUDA against the CPU, window by
# window, for the torch and ONNX Runtime backends (nnAudio, the streaming encoder and the heads
# on CUDA; ONNX Runtime's CUDA provider where its build has one); (3) `bench latency --device
# cuda` of every registered model at the quarter-second hop and at 1 s (target: p99 <= 2 ms per
# hop); (4) `bench e2e --compute cuda`: listen on the paced clip, lag at a subscriber.
# PYTHON (python3) runs them; DEVICE=cpu runs the same steps on the CPU, to try the script here.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
# What the checks import beyond what a machine with torch has (numpy, scipy, onnx, onnxruntime,
# matplotlib, safetensors, attrs, typing-extensions): listen's capture and feed, nnAudio.
WHEELS="nnAudio pyzmq soundfile cffi pycparser soxr jsonschema jsonschema-specifications referencing rpds-py"

usage() { sed -n '7,12p' "$0" >&2; exit 2; }

pack() {
  local dir=$1 pyver=${PYVER:-3.12} cache clip
  mkdir -p "$dir/wheels" "$dir/cache" || exit 1
  # shellcheck disable=SC2086  # WHEELS is a list
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version "$pyver" --implementation cp --abi "cp${pyver/./}" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dir/wheels" $WHEELS || { echo "gpu-checks: cannot download the wheels for Python $pyver" >&2; exit 1; }
  cache=$(.venv/bin/python -c "from models.weights import cache_dir; print(cache_dir())") || exit 1
  for variant in msd mtt; do
    [ -f "$cache/musicnn-$variant.safetensors" ] || .venv/bin/python -c "import models; models.build('musicnn-$variant')" || exit 1
    cp "$cache/musicnn-$variant.safetensors" "$dir/cache/" || exit 1
  done
  clip=$(ls ../shared/data/4q/audio/Q1/*.ogg 2>/dev/null | head -n 1)
  [ -n "$clip" ] || { echo "gpu-checks: no 4Q clip under ../shared/data/4q/audio/Q1" >&2; exit 1; }
  cp "$clip" "$dir/clip.ogg" || exit 1
  echo "gpu-checks: packed $(du -sh "$dir" | cut -f1) into $dir (wheels for Python $pyver; $(basename "$clip"))"
}

analyze() {  # analyze OUT.jsonl ARGS...: the clip's mood messages at the quarter hop into OUT.jsonl
  local out=$1; shift
  "$PYTHON" -m realtime.analyze "$dir/clip.ogg" --json --hop 0.25 "$@" >"$out"
}

failed=()
step() {  # step NAME COMMAND...: its output to the terminal and OUT/NAME.log; a failure is noted
  local name=$1; shift
  echo "== $name: $*"
  local started=$SECONDS
  "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - started)) s"
  [ "$rc" -eq 0 ] || failed+=("$name")
}

run() {
  dir=$1 OUT=$2
  mkdir -p "$OUT" || exit 1
  local site=${TMPDIR:-/tmp}/moodstream-gpu-site
  rm -rf "$site"
  "$PYTHON" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --target "$site" \
    "$dir"/wheels/*.whl || { echo "gpu-checks: cannot install the wheels from $dir/wheels" >&2; exit 1; }
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" MOODSTREAM_CACHE="$dir/cache" PYTHONUNBUFFERED=1
  step machine "$PYTHON" -c "
import torch, onnxruntime as ort, nnAudio
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')
print('onnxruntime', ort.__version__, ort.get_available_providers()); print('nnAudio', nnAudio.__version__)"
  local devices=cpu
  [ "$DEVICE" = cpu ] || devices="cpu $DEVICE"
  for backend in torch onnx; do
    for device in $devices; do
      step "analyze-$backend-$device" analyze "$OUT/analyze-$backend-$device.jsonl" --backend "$backend" --compute "$device"
    done
    [ "$DEVICE" = cpu ] || step "same-$backend" "$PYTHON" tools/compare_feeds.py \
      "$OUT/analyze-$backend-cpu.jsonl" "$OUT/analyze-$backend-$DEVICE.jsonl"
  done
  for hop in 0.25 1; do
    step "latency-hop$hop" "$PYTHON" -m bench latency --device "$DEVICE" --models all --backends torch --hop "$hop" \
      --seconds "${SECONDS_PER_MODEL:-15}" --alternatives none --json "$OUT/latency-$DEVICE-hop$hop.json"
  done
  step latency-onnx "$PYTHON" -m bench latency --device "$DEVICE" --models default,musicnn-msd --backends onnx \
    --hop 0.25 --seconds "${SECONDS_PER_MODEL:-15}" --alternatives none --json "$OUT/latency-$DEVICE-onnx.json"
  step e2e "$PYTHON" -m bench e2e --compute "$DEVICE" --sources file --clip "$dir/clip.ogg" --seconds 30 \
    --reaction balanced --json "$OUT/e2e-$DEVICE.json"
  if [ ${#failed[@]} -eq 0 ]; then
    echo "gpu-checks: every check ran; the figures are in $OUT"
  else
    echo "gpu-checks: failed: ${failed[*]} (their logs are in $OUT)"
    exit 1
  fi
}

case "${1:-}" in
  pack) [ $# -eq 2 ] || usage; pack "$2" ;;
  run) [ $# -eq 3 ] || usage; run "$2" "$3" ;;
  *) usage ;;
esac
