#!/usr/bin/env bash
# Everything a lent GPU machine should measure, as one script with a time limit per step (a
# machine is lent for minutes, so one stuck step must not eat the rest):
#   1. benchmarks/cuda_check.sh (CUDA encode/append/decode, same-seed training, --exact bytes),
#   2. benchmarks/scaling.py on the GPU (epochs/s of the `gpu` preset, 1 process a GPU),
#   3. bunny, whole clip at 720p, the `gpu` (latent) and `paper` (frame-time) presets side by side
#      at one time budget each (benchmarks/rd.py points; the x264/x265 anchors at 720p need no GPU
#      and are measured apart: `python -m benchmarks.rd CLIP --preset gpu --no-pfnr`).
#
#   benchmarks/gpu_checks.sh [CLIPS_DIR] [OUT_DIR] [MINUTES]
#
# MINUTES (default 1.25) is each 720p point's training budget; CHECK_MINUTES (default 1.0) is
# cuda_check.sh's MINUTES. benchmarks/results/h200/ holds what this wrote on an H200.
# DEVICE (default cuda) lets the script be tried on a CPU with tiny settings (EPOCHS=1, FRAMES=4).
set -uo pipefail
clips="${1:-../shared/data/clips}"
out="${2:-benchmarks/results/tmp/gpu}"
minutes="${3:-1.25}"
device="${DEVICE:-cuda}"
python="${PYTHON:-python3}"
bunny="$clips/bigbuckbunny.mp4"
mkdir -p "$out"
budget=(--minutes "$minutes")
[[ -n "${EPOCHS:-}" ]] && budget+=(--epochs "$EPOCHS")
frames=()
[[ -n "${FRAMES:-}" ]] && frames=(--frames "$FRAMES")

timed() {  # timed SECONDS COMMAND...: run with a hard limit, print its exit code and seconds
  local limit=$1
  shift
  echo "== $*" >&2
  local began=$SECONDS
  timeout -k 10 "$limit" "$@"
  echo "   rc=$? $((SECONDS - began)) s" >&2
}

"$python" - <<'EOF' | tee "$out/machine.txt"
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"{torch.cuda.device_count()} x {p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}")
EOF
if [[ "$device" == cuda* ]]; then
  MINUTES="${CHECK_MINUTES:-1.0}" timed 300 bash benchmarks/cuda_check.sh "$clips" "$out/cuda" 2>&1 | tee "$out/cuda_check.log"
fi
timed 90 "$python" -m benchmarks.scaling "$bunny" --device "$device" --processes 1 --preset gpu \
  --epochs "${EPOCHS:-4}" --frames "${FRAMES:-48}" --out "$out"
for preset in gpu paper; do
  timed 170 "$python" -m benchmarks.rd "$bunny" --preset "$preset" --device "$device" \
    "${budget[@]}" "${frames[@]}" --qualities 4 --anchors --name "rd_${preset}_720p" --out "$out"
done
