#!/usr/bin/env bash
# The whole test suite. Installs what the tests need — a Python environment with onnx and onnxruntime==1.31.1
# (scripts/requirements-test.txt) for the onnx.checker and ONNX Runtime checks — then runs every cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${RL_TEST_VENV:-$HOME/.cache/rl-rewrite/test-venv}"
if ! "$venv/bin/python" -c 'import onnx, onnxruntime' >/dev/null 2>&1; then
    echo "setting up $venv (onnx, onnxruntime) ..."
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
fi
export RL_PYTHON="$venv/bin/python"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rl-rewrite-target}"
cargo test --workspace "$@"
