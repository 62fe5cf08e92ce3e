#!/usr/bin/env bash
# The whole test suite. Installs what the tests need — a Python environment with onnx and onnxruntime==1.31.1
# (scripts/requirements-test.txt) for the onnx.checker and ONNX Runtime checks, torch and torchvision
# (scripts/requirements-torch.txt) for the PyTorch reference suite, and libonnxruntime in .ort/
# (scripts/setup-ort.sh) for the ONNX Runtime engine — then runs every cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${RL_TEST_VENV:-$HOME/.cache/rl-rewrite/test-venv}"
if ! "$venv/bin/python" -c 'import onnx, onnxruntime' >/dev/null 2>&1; then
    echo "setting up $venv (onnx, onnxruntime) ..."
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
fi
# The PyTorch reference suite (tests/torch_reference.rs); the default torch wheel brings its CUDA packages.
if ! "$venv/bin/python" -c 'import torch, torchvision, onnxscript' >/dev/null 2>&1; then
    echo "installing torch, torchvision and onnxscript into $venv (scripts/requirements-torch.txt) ..."
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-torch.txt
fi
export RL_PYTHON="$venv/bin/python"
# The ONNX Runtime library for the engine tests (tests/ort_engine.rs): .ort/ from scripts/setup-ort.sh, unless
# ORT_DYLIB_PATH or RL_ORT_DIR already names one. Under CI a failed set-up fails; locally the tests then fall back to
# the onnxruntime package of $RL_PYTHON.
if [[ -z "${ORT_DYLIB_PATH:-}" && -z "${RL_ORT_DIR:-}" ]]; then
    if ! compgen -G ".ort/libonnxruntime.so*" >/dev/null && ! bash scripts/setup-ort.sh; then
        [[ -z "${CI:-}" ]] || exit 1
        echo "warning: scripts/setup-ort.sh failed; the ONNX Runtime engine tests look for the library elsewhere" >&2
    fi
    if compgen -G ".ort/libonnxruntime.so*" >/dev/null; then
        export RL_ORT_DIR="$PWD/.ort"
    fi
fi
cargo test --workspace "$@"
