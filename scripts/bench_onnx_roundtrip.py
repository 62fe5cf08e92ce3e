#!/usr/bin/env python3
"""Python baseline of scripts/bench_rewrite.sh: load an ONNX model and save it again.

    python scripts/bench_onnx_roundtrip.py IN OUT

Does exactly `onnx.load(IN)` followed by `onnx.save(model, OUT)` (external data, if
any, is loaded with the model as onnx.load does by default). Nothing is printed on
success, so the measured time is the load/save round trip plus interpreter start-up.

Requirements: onnx (pip install onnx).
"""

import sys

import onnx


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} IN OUT", file=sys.stderr)
        return 2
    model = onnx.load(argv[1])
    onnx.save(model, argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
