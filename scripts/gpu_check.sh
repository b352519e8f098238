#!/usr/bin/env bash
# The whole GPU run in one command, at most 8 minutes (each step has a time limit; a failing step is reported and
# the next one runs):
#
#   scripts/gpu_check.sh [--rehearse] [RESULTS_DIR]
#
#   1 install  the wheels of gpu-wheels/ (`make gpu-wheels`) this Python lacks, with no index (scripts/gpu_install.py)
#   2 device   the card and driver: nvidia-smi, and what torch sees (device.json)
#   3 smoke    the dev model in float32 and float16: one segment, 40 segments at a batch of 32 on the scheduler's own
#              thread, batched versus alone, chunks finite and on the CPU, peak memory (benchmarks/gpu_smoke.py)
#   4 tests    the tests marked `cuda` (tests.xml)
#   5 bench    the benchmark's `gpu` section: the full-size checkpoint, 1/8/16/32/64 streams, float32 and float16
#              (bench/latest.json, bench/latest.md)
#
# Everything goes into $OUT when it is set, else RESULTS_DIR, else gpu-results/: a log per step and summary.json.
# --rehearse runs the same steps on the CPU with tiny sizes (install only says what it would do), writing the same
# files: `make test` runs it (tests/test_gpu_check.py), so the GPU minutes are not spent on this script's own bugs.
# The exit status is 1 when any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."

rehearse=0
if [ "${1:-}" = --rehearse ]; then
  rehearse=1
  shift
fi
results="${OUT:-${1:-gpu-results}}"
mkdir -p "$results"
results="$(cd "$results" && pwd)"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
# Seconds per step on a GPU (together 8 minutes); a CPU rehearsal of tiny sizes on a shared machine gets 3 times more.
scale=$((rehearse ? 3 : 1))
export GPU_BENCH_REHEARSE=$rehearse PYTHONUNBUFFERED=1
# Where scripts/gpu_install.py unpacks the wheels when the GPU machine's Python has no pip.
export PYTHONPATH="$PWD/.gpu-site${PYTHONPATH:+:$PYTHONPATH}"

steps_file="$results/steps.tsv"
: >"$steps_file"
run_step() {  # name, time limit in seconds, command...
  local name=$1 limit=$(($2 * scale))
  shift 2
  local started=$SECONDS
  echo "== $name (limit ${limit} s): $*"
  timeout --kill-after=10 "$limit" "$@" >"$results/$name.log" 2>&1
  local status=$?
  local seconds=$((SECONDS - started))
  [ $status -eq 124 ] && echo "TIMED OUT after $limit s" >>"$results/$name.log"
  printf '%s\t%s\t%s\n' "$name" "$status" "$seconds" >>"$steps_file"
  tail -n 12 "$results/$name.log"
  echo "== $name: status $status in $seconds s (log: $results/$name.log)"
}

device_info() {
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi || true
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv || true
  else
    echo "nvidia-smi: not found"
  fi
  "$python" - "$results/device.json" <<'PY'
import json, platform, sys

import torch

info = {
    "python": platform.python_version(),
    "torch": torch.__version__,
    "torch_cuda": torch.version.cuda,
    "cuda_available": torch.cuda.is_available(),
    "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
    "devices": [
        {"name": torch.cuda.get_device_name(i), "memory_mib": torch.cuda.get_device_properties(i).total_memory >> 20,
         "capability": ".".join(map(str, torch.cuda.get_device_capability(i)))}
        for i in range(torch.cuda.device_count())
    ],
}
for package in ("transformers", "tokenizers", "coqui-tts", "torchaudio", "torchcodec"):
    try:
        from importlib.metadata import version
        info[package] = version(package)
    except Exception:
        info[package] = None
print(json.dumps(info, indent=2))
open(sys.argv[1], "w").write(json.dumps(info, indent=2))
PY
}

install_args=(scripts/gpu_install.py gpu-wheels)
[ $rehearse -eq 1 ] && install_args+=(--dry-run)
smoke_args=(-m benchmarks.gpu_smoke --out "$results")
[ $rehearse -eq 1 ] && smoke_args+=(--rehearse)
# The cuda-marked tests live in these files (pytest -m cuda); other test files import packages a GPU machine lacks.
cuda_tests=(tests/test_gpu_readiness.py tests/test_batched_gpt.py tests/test_stream_decoder.py)

run_step install 60 "$python" "${install_args[@]}"
export -f device_info
export python results
run_step device 30 bash -c device_info
run_step smoke 100 "$python" "${smoke_args[@]}"
run_step tests 70 "$python" -m pytest -m cuda -q -p no:randomly --junitxml "$results/tests.xml" "${cuda_tests[@]}"
run_step bench 220 "$python" -m benchmarks.run --only gpu --out "$results/bench"

failed=0
{
  printf '{\n  "rehearsal": %s,\n  "results": "%s",\n  "steps": [\n' "$([ $rehearse -eq 1 ] && echo true || echo false)" "$results"
  first=1
  while IFS=$'\t' read -r name status seconds; do
    [ "$status" = 0 ] || failed=1
    [ $first -eq 1 ] || printf ',\n'
    first=0
    printf '    {"name": "%s", "status": %s, "seconds": %s, "log": "%s.log"}' "$name" "$status" "$seconds" "$name"
  done <"$steps_file"
  printf '\n  ],\n  "ok": %s\n}\n' "$([ $failed -eq 0 ] && echo true || echo false)"
} >"$results/summary.json"
rm -f "$steps_file"
echo "results in $results (summary.json); $([ $failed -eq 0 ] && echo 'every step passed' || echo 'SOME STEPS FAILED')"
exit $failed
