#!/usr/bin/env bash
# `make gpu-wheels`: download into gpu-wheels/ (ignored by git) the cp312 manylinux x86-64 wheels that a bare GPU
# machine lacks to run scripts/gpu_check.sh (the list and why: scripts/gpu_wheels.txt). No dependencies are
# resolved (--no-deps): the list is complete by itself. Says which wheel could not be obtained, and fails then;
# fails too when the folder is over the 64 MiB a GPU machine can be sent at once.
set -uo pipefail
cd "$(dirname "$0")/.."
out=gpu-wheels
limit_mib=64
pip=(.venv/bin/python -m pip)
[ -x .venv/bin/python ] || pip=(python3 -m pip)

# Every manylinux tag a glibc 2.28 machine takes (torch 2.11's own wheels need glibc 2.28): pip does not widen one.
platforms=()
for minor in $(seq 28 -1 5); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 --platform any)

mkdir -p "$out"
missing=()
while read -r requirement; do
  requirement="${requirement%%#*}"
  requirement="${requirement// /}"
  [ -n "$requirement" ] || continue
  if ! "${pip[@]}" download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      "${platforms[@]}" --dest "$out" "$requirement" 2>"$out/.last-error"; then
    missing+=("$requirement")
    echo "cannot obtain a cp312 manylinux x86-64 wheel of $requirement here: $(grep -m1 ERROR "$out/.last-error")" >&2
  fi
done <scripts/gpu_wheels.txt
rm -f "$out/.last-error"
cp scripts/gpu_wheels.txt "$out/requirements.txt"

size_kib=$(du -sk "$out" | cut -f1)
echo "gpu-wheels/: $(ls "$out"/*.whl 2>/dev/null | wc -l) wheels, $((size_kib / 1024)) MiB (limit $limit_mib MiB)"
if [ ${#missing[@]} -gt 0 ]; then
  echo "MISSING ${#missing[@]} wheels: ${missing[*]}; the GPU machine must have these installed already" >&2
  exit 1
fi
if [ "$size_kib" -gt $((limit_mib * 1024)) ]; then
  echo "gpu-wheels/ is over $limit_mib MiB: it cannot be sent to a GPU machine in one piece" >&2
  exit 1
fi
