#!/usr/bin/env bash
# Benchmark: one training step of resnet32 (CIFAR, batch 128) on ONNX Runtime CPU, BP vs Replacement Learning
# with --every 2, in one run: step-graph node count, median step time and peak RSS (each model in its own
# process). Needs a Python with onnx and onnxruntime (RL_PYTHON, default: the test venv of scripts/test.sh).
# Usage: scripts/bench_train_step.sh [BATCH] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
batch="${1:-128}"
repeats="${2:-5}"
py="${RL_PYTHON:-$HOME/.cache/rl-rewrite/test-venv/bin/python}"
# The checkout's build folder, as for `cargo run` and scripts/test.sh.
target_dir="${CARGO_TARGET_DIR:-target}"
[[ "$target_dir" == /* ]] || target_dir="$PWD/$target_dir"
cargo build --quiet --bin rl-rewrite
bin="$target_dir/debug/rl-rewrite"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
"$bin" zoo resnet32 -o "$dir/r32.onnx" >/dev/null
"$bin" "$dir/r32.onnx" --every 2 -o "$dir/r32.rl.onnx" >/dev/null
"$bin" compile-train "$dir/r32.onnx" --batch "$batch" -o "$dir/bp_step.onnx" >/dev/null
"$bin" compile-train "$dir/r32.rl.onnx" --batch "$batch" -o "$dir/rl_step.onnx" >/dev/null
echo "resnet32, batch $batch, SGD (momentum 0.9, weight decay 5e-4), ONNX Runtime CPU:"
"$py" scripts/bench_train_step.py "$dir/bp_step.onnx" "$repeats" | sed "s|$dir/||"
"$py" scripts/bench_train_step.py "$dir/rl_step.onnx" "$repeats" | sed "s|$dir/||"
