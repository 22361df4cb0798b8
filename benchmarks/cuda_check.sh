#!/usr/bin/env bash
# GPU checks that CI cannot run: encode, append and decode on CUDA, same-seed training reproducible,
# float32 decoding repeatable, --exact bytes equal on the GPU and the CPU, the paper preset, speed.
#
#   benchmarks/cuda_check.sh [CLIPS_DIR] [OUT_DIR]     (needs a CUDA device and pfnr importable)
#
# MINUTES (default 1.5) caps the first session's training, half of it the appended one's.
#
# Prints one line per step with its exit code and seconds; the JSON reports land in OUT_DIR.
set -uo pipefail
clips="${1:-../shared/data/clips}"
out="${2:-benchmarks/results/tmp/cuda}"
bunny="$clips/bigbuckbunny.mp4"
bikes="$clips/bikes.mp4"
python="${PYTHON:-python3}"
minutes="${MINUTES:-1.5}"
half="$("$python" -c "print(float('$minutes') / 2)")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
pfnr() { "$python" -m pfnr_codec "$@"; }
step() {
  echo "== $*" >&2
  local s=$SECONDS
  "$@"
  echo "   rc=$? $((SECONDS - s)) s" >&2
}
same() { cmp -s "$1" "$2" && echo "identical: $3" || echo "DIFFERENT: $3"; }

"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" || exit 1
step pfnr encode "$bunny" -a "$work/a.pfnr" --device cuda --minutes "$minutes" --json >"$out/encode1.json"
step pfnr encode "$bikes" -a "$work/a.pfnr" --device cuda --minutes "$half" --json >"$out/encode2.json"
for i in 1 2; do
  step pfnr decode -s 1 -a "$work/a.pfnr" --device cuda --size working -o "$work/d$i.y4m" --json >"$out/decode_cuda_$i.json"
done
same "$work/d1.y4m" "$work/d2.y4m" "float32 decode on CUDA, twice"
for device in cuda cpu; do
  step pfnr decode -s 1 -a "$work/a.pfnr" --device $device --exact --size working -o "$work/exact_$device.y4m" --json >"$out/decode_exact_$device.json"
done
same "$work/exact_cuda.y4m" "$work/exact_cpu.y4m" "--exact decode, CUDA against CPU"
grep -h '"matches_encode"' "$out"/decode_*.json | sed 's/.*"matches_encode": \([a-z]*\).*/matches_encode \1/'
step pfnr decode -s 2 -a "$work/a.pfnr" --device cuda --reference "$bikes" -o "$work/s2.mkv" --json >"$out/decode2.json"
for i in 1 2; do
  step pfnr encode "$bikes" -a "$work/seed$i.pfnr" --device cuda --frames 0:16 --epochs 8 --json >"$out/seed$i.json"
  step pfnr decode -s 1 -a "$work/seed$i.pfnr" --device cuda --size working -o "$work/seed$i.y4m" --json >/dev/null
done
same "$work/seed1.y4m" "$work/seed2.y4m" "two CUDA trainings with one seed"
step pfnr encode "$bunny" -a "$work/paper.pfnr" --preset paper --device cuda --frames 0:16 --epochs 4 --json >"$out/paper.json"
step "$python" -m benchmarks.speed "$bunny" "$bikes" --quick --device cuda --out "$out"
