#!/usr/bin/env bash
# Puts the ONNX Runtime shared library into .ort/ at the repository root, where rl-rewrite looks for it.
#
#   bash scripts/setup-ort.sh          # onnxruntime 1.31.1 (CPU) from PyPI
#   bash scripts/setup-ort.sh --gpu    # onnxruntime-gpu 1.31.1 (CUDA 13 + cuDNN 9, which it does not include)
#
# The wheel for this machine's Python and platform is downloaded with `pip download --no-deps` into a temporary
# folder, and onnxruntime/capi/*.so* (libonnxruntime and its provider libraries) are extracted into .ort/.
# Idempotent: nothing is downloaded when .ort/ already holds that build. Set ORT_VERSION to pick another 1.x
# release (rl-rewrite needs 1.31 or newer), PYTHON for another interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

version="${ORT_VERSION:-1.31.1}"
package=onnxruntime
flavour=cpu
case "${1:-}" in
    "") ;;
    --gpu) package=onnxruntime-gpu; flavour=gpu ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup-ort.sh: unknown argument '$1' (use --gpu or nothing)" >&2; exit 2 ;;
esac

dest=.ort
stamp="$dest/BUILD"
want="$package==$version"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && compgen -G "$dest/libonnxruntime.so*" >/dev/null; then
    echo "setup-ort: $dest/ already holds $want"
    exit 0
fi

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null; then
    echo "setup-ort: '$python' not found; pip is needed to download the $package wheel" >&2
    exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp" "$dest.new"' EXIT
echo "setup-ort: downloading $want for $("$python" -c 'import sys, platform; print(f"Python {sys.version_info[0]}.{sys.version_info[1]}, {platform.system()} {platform.machine()}")') ..."
if ! "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        -d "$tmp" "$want" >"$tmp/pip.log" 2>&1; then
    cat "$tmp/pip.log" >&2
    echo "setup-ort: pip could not download $want (offline? no wheel for this platform?)" >&2
    exit 1
fi
wheel="$(ls "$tmp"/*.whl)"

# Extract with Python's zipfile (no unzip needed): every shared library in onnxruntime/capi/.
rm -rf "$tmp/lib"
mkdir -p "$tmp/lib"
"$python" - "$wheel" "$tmp/lib" <<'EOF'
import os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
n = 0
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        d, name = os.path.split(info.filename)
        if d == "onnxruntime/capi" and (".so" in name or name.endswith((".dylib", ".dll"))) and "pybind" not in name:
            with z.open(info) as src, open(os.path.join(out, name), "wb") as dst:
                dst.write(src.read())
            n += 1
if n == 0:
    sys.exit(f"no shared library under onnxruntime/capi/ in {wheel}")
EOF

main="$(cd "$tmp/lib" && ls libonnxruntime.so.* 2>/dev/null | head -n1 || true)"
if [[ -z "$main" ]]; then
    echo "setup-ort: the wheel holds no libonnxruntime.so.*" >&2
    exit 1
fi
ln -sf "$main" "$tmp/lib/libonnxruntime.so"

# Replace .ort/ as a whole, so a CPU and a GPU build never mix.
rm -rf "$dest.new"
mv "$tmp/lib" "$dest.new"
echo "$want" >"$dest.new/BUILD"
rm -rf "$dest"
mv "$dest.new" "$dest"
echo "setup-ort: $dest/ now holds $want ($flavour):"
ls -1 "$dest" | sed 's/^/  /'
if [[ $flavour == gpu ]]; then
    echo "setup-ort: the CUDA provider needs CUDA 13 and cuDNN 9 on LD_LIBRARY_PATH (e.g. the nvidia-*-cu13 Python packages)"
fi
