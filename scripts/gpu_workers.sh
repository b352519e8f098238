#!/usr/bin/env bash
# One Celery worker process per visible NVIDIA GPU, each pinned to its device (CUDA_VISIBLE_DEVICES=<id>) and named
# gpu<id>@<host>. The GPUs are those CUDA_VISIBLE_DEVICES lists when it is set, else every GPU `nvidia-smi` sees.
#
#   scripts/gpu_workers.sh [celery worker options ...]   start them; Ctrl-C or SIGTERM stops them all
#   scripts/gpu_workers.sh --dry-run                     print the commands instead
#   scripts/gpu_workers.sh --nodes                       print the Celery node names (for a health check)
#
# If one worker exits, the others are stopped (their running segments are handed back) and the script exits with
# its status, so that whatever supervises it (Docker's restart policy, systemd) restarts the set. NUM_THREADS, unset,
# becomes the machine's cores divided among the workers. Every other setting comes from the environment as usual
# (REDIS_URL, DATABASE_URL, XTTS_MODEL, ...).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=run
case "${1:-}" in
  --dry-run) mode=dry; shift ;;
  --nodes) mode=nodes; shift ;;
esac

if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
  IFS=',' read -r -a devices <<<"$CUDA_VISIBLE_DEVICES"
elif command -v nvidia-smi >/dev/null; then
  mapfile -t devices < <(nvidia-smi --query-gpu=index --format=csv,noheader | tr -d ' ')
else
  devices=()
fi
gpus=()
for device in "${devices[@]}"; do
  [ -n "$device" ] && [ "$device" != "-1" ] && gpus+=("$device")
done
if [ ${#gpus[@]} -eq 0 ]; then
  echo "no GPU is visible (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}, nvidia-smi $(command -v nvidia-smi >/dev/null && echo 'lists none' || echo 'not found'));" \
    "for a CPU worker run: celery -A workers.celery_app worker" >&2
  exit 1
fi

host="${HOSTNAME:-$(hostname)}"
name_of() {  # gpu<index>, or gpu<position> for a device given by UUID
  if [[ "$1" =~ ^[0-9]+$ ]]; then echo "gpu$1"; else echo "gpu$2"; fi
}
if [ "$mode" = nodes ]; then
  for i in "${!gpus[@]}"; do echo "$(name_of "${gpus[$i]}" "$i")@$host"; done
  exit 0
fi

celery=.venv/bin/celery
[ -x "$celery" ] || celery=celery  # the Docker image installs into the system Python
cores=$(nproc)
threads="${NUM_THREADS:-$(( cores / ${#gpus[@]} > 0 ? cores / ${#gpus[@]} : 1 ))}"

pids=()
stop_all() { [ ${#pids[@]} -eq 0 ] || kill -TERM "${pids[@]}" 2>/dev/null || true; }
trap 'stop_all; wait; exit 143' TERM INT
for i in "${!gpus[@]}"; do
  name=$(name_of "${gpus[$i]}" "$i")
  command=("$celery" -A workers.celery_app worker -n "$name@%h" -l INFO "$@")
  if [ "$mode" = dry ]; then
    echo "CUDA_VISIBLE_DEVICES=${gpus[$i]} NUM_THREADS=$threads ${command[*]}"
  else
    CUDA_VISIBLE_DEVICES="${gpus[$i]}" NUM_THREADS="$threads" "${command[@]}" &
    pids+=($!)
  fi
done
[ "$mode" = dry ] && exit 0

echo "started ${#pids[@]} workers on GPUs ${gpus[*]} (node names gpu<id>@$host)"
status=0
wait -n || status=$?
echo "a worker exited (status $status): stopping the others" >&2
stop_all
wait || true
exit "$status"
