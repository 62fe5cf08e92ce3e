#!/usr/bin/env bash
# Benchmark: training throughput and peak memory, side by side in one run, rounds interleaved:
#   (a) `rl-rewrite train --bp` on ONNX Runtime CPU   vs   PyTorch CPU eager from the same initial weights
#   (b) `rl-rewrite train --every 2` vs `--bp` on ONNX Runtime CPU: images/s and peak RSS
#   (c) `rl-rewrite train --bp` on ONNX Runtime CPU vs on tract (resnet32 only)
# Models (--model):
#   resnet32  zoo resnet32 (CIFAR layout, 3×32×32, 10 classes), batch 128, SGD lr 0.1 momentum 0.9, weight decay
#             5e-4 [default]
#   vit-s     zoo vit-s at 32 px (patch 4, 65 tokens, 10 classes), batch 32, AdamW lr 1e-3 (β 0.9/0.999, ε 1e-8,
#             weight decay 0.01); PyTorch runs torchvision's VisionTransformer
# The tool's figure is images/s over one epoch of training steps on synthetic data (its own data handling
# included, evaluation excluded, first step included); PyTorch's is images/s over the same number of steps
# after one warm-up step, on tensors generated beforehand (scripts/bench_torch_train.py).
#
#   scripts/bench_train.sh [--model resnet32|vit-s] [--rounds N] [--steps N] [--tract-steps N]
#                          [--torch-python PY] [WORKDIR]
#
# --steps defaults to 20 (resnet32) or 10 (vit-s); --tract-steps to 3 (resnet32; 0 skips tract, as for vit-s).
# PyTorch is not a dependency of the project: install it in a virtual environment outside the repository
# (python -m venv ~/venv-torch && ~/venv-torch/bin/pip install torch torchvision onnx) and pass --torch-python,
# or set TORCH_PYTHON. ONNX Runtime comes from scripts/setup-ort.sh. RL_BENCH_BIN runs a given rl-rewrite
# binary instead of building the release one (to compare two builds).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=2
model_name=resnet32
steps=""
tract_steps=""
torch_python="${TORCH_PYTHON:-}"
workdir="${TMPDIR:-/tmp}/rl-rewrite-bench-train"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --model) model_name="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        --tract-steps) tract_steps="$2"; shift 2 ;;
        --torch-python) torch_python="$2"; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) workdir="$1"; shift ;;
    esac
done
case "$model_name" in
    resnet32) batch=128; zoo_args=(); train_args=(--optimizer sgd --lr 0.1); default_steps=20; default_tract=3 ;;
    vit-s) batch=32; zoo_args=(--image-size 32 --classes 10); train_args=(--optimizer adamw --lr 1e-3)
        default_steps=10; default_tract=0 ;;
    *) echo "error: --model must be resnet32 or vit-s, not '$model_name'" >&2; exit 2 ;;
esac
steps="${steps:-$default_steps}"
tract_steps="${tract_steps:-$default_tract}"
if [[ -z "$torch_python" ]] || ! "$torch_python" -c "import torch, torchvision, onnx" 2>/dev/null; then
    echo "error: no Python with torch and onnx (give --torch-python PY or TORCH_PYTHON); see the header of $0" >&2
    exit 2
fi
# The checkout's build folder, as for `cargo run` and scripts/test.sh.
target_dir="${CARGO_TARGET_DIR:-target}"
[[ "$target_dir" == /* ]] || target_dir="$PWD/$target_dir"
if [[ -n "${RL_BENCH_BIN:-}" ]]; then
    bin="$RL_BENCH_BIN"
else
    cargo build --release --quiet --bin rl-rewrite
    bin="$target_dir/release/rl-rewrite"
fi
if [[ -z "${ORT_DYLIB_PATH:-}${RL_ORT_DIR:-}" ]] && ! compgen -G ".ort/libonnxruntime.so*" >/dev/null; then
    bash scripts/setup-ort.sh
fi
mkdir -p "$workdir"
model="$workdir/$model_name.onnx"
"$bin" zoo "$model_name" "${zoo_args[@]}" -o "$model" >/dev/null

# One tool run: prints "images_per_s peak_mib" of its single epoch.
tool() {
    local out="$workdir/run-$1" n="$2"
    shift 2
    rm -rf "$out"
    "$bin" train "$model" --data "synthetic:$((n * batch)):3x32x32:10" --epochs 1 --batch "$batch" \
        "${train_args[@]}" --schedule constant --device cpu --out "$out" "$@" >/dev/null 2>"$out.err" ||
        { cat "$out.err" >&2; exit 1; }
    python3 -c "import json,sys; r=json.load(open(sys.argv[1]))[-1]; print(r['images_per_s'], r['peak_host_mib'])" \
        "$out/metrics.json"
}
torch_run() {
    "$torch_python" scripts/bench_torch_train.py "$model" "$batch" "$steps" 2>/dev/null |
        python3 -c "import json,sys; r=json.load(sys.stdin); print(r['images_per_s'], r['peak_rss_mib'], r['framework'])"
}

declare -A rate mem
for round in $(seq "$rounds"); do
    read -r r m fw < <(torch_run); rate[torch]+=" $r"; mem[torch]+=" $m"
    read -r r m < <(tool bp "$steps" --bp --engine ort); rate[ort_bp]+=" $r"; mem[ort_bp]+=" $m"
    read -r r m < <(tool rl "$steps" --every 2 --engine ort); rate[ort_rl]+=" $r"; mem[ort_rl]+=" $m"
    if [[ "$tract_steps" -gt 0 ]]; then
        read -r r m < <(tool tract "$tract_steps" --bp --engine tract); rate[tract_bp]+=" $r"; mem[tract_bp]+=" $m"
    else
        rate[tract_bp]+=" nan"; mem[tract_bp]+=" nan"
    fi
    echo "round $round: torch ${rate[torch]##* } | ort bp ${rate[ort_bp]##* } | ort every2 ${rate[ort_rl]##* } | tract bp ${rate[tract_bp]##* } images/s" >&2
done

python3 - "$model_name" "$batch" "$fw" "$rounds" "$steps" "$tract_steps" \
    "${rate[torch]}" "${mem[torch]}" "${rate[ort_bp]}" "${mem[ort_bp]}" \
    "${rate[ort_rl]}" "${mem[ort_rl]}" "${rate[tract_bp]}" "${mem[tract_bp]}" <<'EOF'
import math, os, statistics, sys
model, batch, fw, rounds, steps, tract_steps = sys.argv[1:7]
batch = int(batch)
vals = [[float(v) for v in a.split()] for a in sys.argv[7:]]
names = [f"PyTorch ({fw}), --bp", "rl-rewrite train --bp, ONNX Runtime CPU",
         "rl-rewrite train --every 2, ONNX Runtime CPU", "rl-rewrite train --bp, tract"]
optimizer = "AdamW" if model.startswith("vit") else "SGD"
med = {}
print(f"{model}, batch {batch}, {optimizer}; {rounds} interleaved rounds; {steps} steps per run "
      f"({tract_steps} on tract); {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}\n")
print("| run | median images/s | ms/step | runs (images/s) | peak RSS MiB |")
print("|---|---:|---:|---|---:|")
for k, name in enumerate(names):
    rates, mems = vals[2 * k], vals[2 * k + 1]
    if any(math.isnan(r) for r in rates):
        continue  # not run (tract on a ViT)
    m = statistics.median(rates)
    med[k] = (m, max(mems))
    print(f"| {name} | {m:.1f} | {1000 * batch / m:.0f} | {', '.join(f'{r:.1f}' for r in rates)} | "
          f"{max(mems):.0f} |")
print()
print(f"(a) rl-rewrite ORT CPU / PyTorch CPU eager: throughput {med[1][0] / med[0][0]:.2f}× (target ≥ 1.0×), "
      f"peak RSS {med[1][1] / med[0][1]:.2f}× (--every 2: {med[2][0] / med[0][0]:.2f}×, {med[2][1] / med[0][1]:.2f}×)")
print(f"(b) --every 2 / BP on ORT CPU: throughput {med[2][0] / med[1][0]:.2f}×, step time {med[1][0] / med[2][0]:.2f}×, "
      f"peak RSS {med[2][1] / med[1][1]:.2f}×")
if 3 in med:
    print(f"(c) ORT CPU / tract training throughput: {med[1][0] / med[3][0]:.1f}×")
EOF
