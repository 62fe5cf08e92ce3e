#!/usr/bin/env bash
# Benchmark: ResNet-32 (32×32, batch 128) inference throughput on ONNX Runtime (CPU) and tract, interleaved in
# one run, measured by `rl-rewrite eval` on synthetic data (images/s over the engine calls).
#
#   scripts/bench_engines.sh [--rounds N] [--images N] [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
images=2560
workdir="${TMPDIR:-/tmp}/rl-rewrite-bench-engines"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --images) images="$2"; shift 2 ;;
        -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
        *) workdir="$1"; shift ;;
    esac
done
# The checkout's build folder, as for `cargo run` and scripts/test.sh.
target_dir="${CARGO_TARGET_DIR:-target}"
[[ "$target_dir" == /* ]] || target_dir="$PWD/$target_dir"
cargo build --quiet --bin rl-rewrite
bin="$target_dir/debug/rl-rewrite"
if [[ -z "${ORT_DYLIB_PATH:-}${RL_ORT_DIR:-}" ]] && ! compgen -G ".ort/libonnxruntime.so*" >/dev/null; then
    bash scripts/setup-ort.sh
fi
mkdir -p "$workdir"
"$bin" zoo resnet32 -o "$workdir/resnet32.onnx" >/dev/null
data="synthetic:$images:3x32x32:10"
declare -A rates
for round in $(seq "$rounds"); do
    for engine in ort tract; do
        rate=$("$bin" eval "$workdir/resnet32.onnx" --data "$data" --batch 128 --engine "$engine" --device cpu --json 2>/dev/null |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["images_per_s"])')
        rates[$engine]+="$rate "
        printf 'round %d  %-5s %8.1f images/s\n' "$round" "$engine" "$rate"
    done
done
python3 - "${rates[ort]}" "${rates[tract]}" "$(nproc)" <<'PY'
import statistics, sys
ort = [float(x) for x in sys.argv[1].split()]
tract = [float(x) for x in sys.argv[2].split()]
mo, mt = statistics.median(ort), statistics.median(tract)
print()
print("| engine | median images/s | runs |")
print("|---|---:|---|")
print(f"| ONNX Runtime 1.31.1, CPU | {mo:.1f} | {', '.join(f'{x:.0f}' for x in ort)} |")
print(f"| tract | {mt:.1f} | {', '.join(f'{x:.0f}' for x in tract)} |")
print()
print(f"ORT / tract: {mo / mt:.2f}x  (ResNet-32, batch 128, 32x32, {sys.argv[3]} CPUs)")
PY
