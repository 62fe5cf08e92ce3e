#!/usr/bin/env bash
# Benchmark: rewrite of the zoo's vit-b (~330 MB) next to `cp` of the same file and next to a
# Python `onnx.load` + `onnx.save` round trip, all measured in one run, interleaved.
#
#   scripts/bench_rewrite.sh [--release] [--rounds N] [WORKDIR]
#
#   WORKDIR     where vit-b.onnx and the outputs go [default: ${TMPDIR:-/tmp}/rl-rewrite-bench]
#   --release   build and measure the release profile (default: dev, whose dependencies and
#               rl-passes crate are optimized)
#   --rounds N  rounds of the three commands [default: 5]
#
# Environment:
#   CARGO_TARGET_DIR  cargo's target folder [default: target in the repository]
#   RL_BENCH_VENV     Python venv with onnx, created with `pip install onnx` when missing
#                     [default: $HOME/.cache/rl-rewrite-bench-venv]
#   PYTHON            interpreter used to create the venv [default: python3]
#
# Each run is timed with /usr/bin/time -f '%e %M' (GNU time; Debian: apt-get install time). The
# wall time in the table is taken with bash's EPOCHREALTIME around that call (ms resolution;
# includes /usr/bin/time's own fork/exec, about a millisecond) and falls back to %e (10 ms
# resolution) without it; peak RSS is %M. Outputs are deleted between runs, and the page cache
# is warmed by reading the input once before the first round.
#
# Targets (acceptance): rl-rewrite median wall ≤ 1.5 × cp median wall; Python median wall ≥ 5 ×
# rl-rewrite median wall; rl-rewrite peak RSS (max over rounds) ≤ 1.3 × file size.
# Exit status: 0 when all targets pass, 1 when one fails, 2 on a usage or setup error.

set -euo pipefail

usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; }

profile=debug
rounds=5
workdir=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --release) profile=release; shift ;;
        --rounds)
            [[ $# -ge 2 ]] || { echo "error: --rounds needs a value" >&2; exit 2; }
            rounds="$2"; shift 2 ;;
        --rounds=*) rounds="${1#--rounds=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "error: unknown option $1" >&2; usage >&2; exit 2 ;;
        *)
            [[ -z "$workdir" ]] || { echo "error: one WORKDIR only" >&2; exit 2; }
            workdir="$1"; shift ;;
    esac
done
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "error: --rounds must be a positive integer" >&2; exit 2; }
workdir="${workdir:-${TMPDIR:-/tmp}/rl-rewrite-bench}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
roundtrip="$root/scripts/bench_onnx_roundtrip.py"

if [[ ! -x /usr/bin/time ]]; then
    echo "error: /usr/bin/time (GNU time) is missing; on Debian/Ubuntu: apt-get install time" >&2
    exit 2
fi

# --- build ---------------------------------------------------------------------------------------
build_args=(build --bin rl-rewrite)
[[ "$profile" == release ]] && build_args+=(--release)
echo "==> cargo ${build_args[*]}" >&2
(cd "$root" && cargo "${build_args[@]}") >&2
target_dir="${CARGO_TARGET_DIR:-target}"
[[ "$target_dir" == /* ]] || target_dir="$root/$target_dir"
bin="$target_dir/$profile/rl-rewrite"
[[ -x "$bin" ]] || { echo "error: no binary at $bin" >&2; exit 2; }

# --- Python venv ---------------------------------------------------------------------------------
venv="${RL_BENCH_VENV:-$HOME/.cache/rl-rewrite-bench-venv}"
if [[ ! -x "$venv/bin/python" ]]; then
    echo "==> creating venv $venv" >&2
    "${PYTHON:-python3}" -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c 'import onnx' 2>/dev/null; then
    echo "==> pip install onnx into $venv" >&2
    "$venv/bin/python" -m pip install --quiet onnx >&2
fi
py="$venv/bin/python"
onnx_version="$("$py" -c 'import onnx; print(onnx.__version__)')"

# --- model ---------------------------------------------------------------------------------------
mkdir -p "$workdir"
workdir="$(cd "$workdir" && pwd)"
model="$workdir/vit-b.onnx"
echo "==> rl-rewrite zoo vit-b -o $model" >&2
"$bin" zoo vit-b -o "$model" >&2
file_bytes="$(stat -c %s "$model")"

copy_out="$workdir/copy.onnx"
rl_out="$workdir/out.onnx"
py_out="$workdir/py.onnx"
log="$workdir/last-run.log"
results="$workdir/results.txt"
: > "$results"

clean_outputs() {
    rm -f "$copy_out" "$rl_out" "$py_out"
    sync "$workdir" 2>/dev/null || sync
}

# run NAME CMD...: one timed run, appends "NAME WALL_S RSS_KIB" to $results.
run() {
    local name="$1"; shift
    local tf="$workdir/time.txt" t0 t1 status=0 e m wall
    clean_outputs
    t0="${EPOCHREALTIME:-}"
    /usr/bin/time -f '%e %M' -o "$tf" "$@" > "$log" 2>&1 || status=$?
    t1="${EPOCHREALTIME:-}"
    if [[ $status -ne 0 ]]; then
        echo "error: $name exited with status $status: $*" >&2
        cat "$log" >&2
        exit 2
    fi
    # GNU time writes "Command exited with non-zero status" lines before the format; take the last.
    read -r e m < <(tail -n 1 "$tf")
    if [[ -n "$t0" && -n "$t1" ]]; then
        wall="$(awk -v a="${t0/,/.}" -v b="${t1/,/.}" 'BEGIN { printf "%.4f", b - a }')"
    else
        wall="$e"
    fi
    echo "$name $wall $m" >> "$results"
    printf '    %-10s %8.3f s %8.1f MiB\n' "$name" "$wall" "$(awk -v k="$m" 'BEGIN { print k / 1024 }')" >&2
}

echo "==> warming the page cache" >&2
cat "$model" > /dev/null
load_before="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

for ((r = 1; r <= rounds; r++)); do
    echo "==> round $r/$rounds" >&2
    run cp cp "$model" "$copy_out"
    run rl-rewrite "$bin" "$model" --every 2 -o "$rl_out"
    run python "$py" "$roundtrip" "$model" "$py_out"
done
clean_outputs
rm -f "$workdir/time.txt"
load_after="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

# --- report --------------------------------------------------------------------------------------
# stat NAME FIELD: median|min of wall, or max of rss (KiB).
median() { awk -v n="$1" '$1 == n { print $2 }' "$results" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
minimum() { awk -v n="$1" '$1 == n { print $2 }' "$results" | sort -g | head -n 1; }
peak_kib() { awk -v n="$1" '$1 == n && $3 > m { m = $3 } END { print m + 0 }' "$results"; }

cp_med="$(median cp)"
rl_med="$(median rl-rewrite)"
py_med="$(median python)"
rl_rss="$(peak_kib rl-rewrite)"

calc() { awk "BEGIN { printf \"$1\", $2 }"; }

echo
echo "### rl-rewrite benchmark: zoo vit-b, $rounds rounds ($profile profile)"
echo
echo "| command | median wall s | min wall s | peak RSS MiB | ratio to cp |"
echo "|---|---:|---:|---:|---:|"
for spec in "cp|cp vit-b.onnx copy.onnx" \
            "rl-rewrite|rl-rewrite vit-b.onnx --every 2 -o out.onnx" \
            "python|python bench_onnx_roundtrip.py vit-b.onnx py.onnx (onnx $onnx_version)"; do
    name="${spec%%|*}"
    label="${spec#*|}"
    med="$(median "$name")"
    printf '| `%s` | %.3f | %.3f | %.1f | %.2f× |\n' "$label" "$med" "$(minimum "$name")" \
        "$(calc '%.4f' "$(peak_kib "$name") / 1024")" "$(calc '%.4f' "$med / $cp_med")"
done
echo

file_mib="$(calc '%.1f' "$file_bytes / 1048576")"
rss_ratio="$(calc '%.3f' "$rl_rss * 1024 / $file_bytes")"
time_ratio="$(calc '%.3f' "$rl_med / $cp_med")"
speedup="$(calc '%.2f' "$py_med / $rl_med")"

verdict() { if awk "BEGIN { exit !($1) }"; then echo PASS; else echo FAIL; fi; }
t1="$(verdict "$time_ratio <= 1.5")"
t2="$(verdict "$speedup >= 5")"
t3="$(verdict "$rss_ratio <= 1.3")"

echo "- file size: $file_mib MiB ($file_bytes bytes)"
echo "- rl-rewrite peak RSS / file size: $rss_ratio"
echo "- rl-rewrite speed-up vs Python onnx: ${speedup}×"
echo "- target rl-rewrite ≤ 1.5× cp time: $t1 (${time_ratio}×)"
echo "- target ≥ 5× faster than Python onnx: $t2 (${speedup}×)"
echo "- target peak RSS ≤ 1.3× file size: $t3 (${rss_ratio}×)"
echo "- machine: $(nproc) CPUs, load average $load_before before, $load_after after; medians of interleaved runs, page cache warm"

[[ "$t1$t2$t3" == PASSPASSPASS ]]
