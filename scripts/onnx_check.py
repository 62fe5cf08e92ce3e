#!/usr/bin/env python3
"""Validate ONNX models with the reference checker and onnxruntime.

Used by the Rust integration tests:

    python scripts/onnx_check.py MODEL [MODEL...]

For every model:
  1. onnx.checker.check_model(path, full_check=True)  (the path is passed so
     external data next to the model is resolved);
  2. onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"]);
  3. one run on a deterministic input: for each graph input
       float types   -> (arange(n) % 17 / 17 - 0.5) reshaped to the input shape
       integer types -> zeros
       bool          -> False
       string        -> empty strings
     with every symbolic / unknown dimension resolved to 1.

Prints one JSON line per model on stdout:
  {"model": path, "checker": "ok", "ort": "ok",
   "outputs": {name: {"shape": [...], "first": [up to 10 values]}}}

On the first failure the error is printed to stderr and the exit code is 1.

Options:
  --no-ort        only run the checker (prints "ort": "skipped")
  --no-full-check run check_model without full_check (no strict shape inference)

Requirements: scripts/requirements-test.txt (onnx, onnxruntime, numpy).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import traceback

import numpy as np


def pattern(shape: list[int], dtype=np.float32) -> np.ndarray:
    """The deterministic test input: (arange(n) % 17 / 17 - 0.5)."""
    n = int(np.prod(shape)) if shape else 1
    return (np.arange(n) % 17 / 17 - 0.5).astype(dtype).reshape(shape)


_ORT_FLOAT = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
}
_ORT_INT = {
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
}


def make_feed(sess) -> dict:
    feed = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) and d >= 0 else 1 for d in (inp.shape or [])]
        t = inp.type
        if t in _ORT_FLOAT:
            feed[inp.name] = pattern(shape, _ORT_FLOAT[t])
        elif t in _ORT_INT:
            feed[inp.name] = np.zeros(shape, dtype=_ORT_INT[t])
        elif t == "tensor(bool)":
            feed[inp.name] = np.zeros(shape, dtype=bool)
        elif t == "tensor(string)":
            feed[inp.name] = np.full(shape, "", dtype=object)
        else:
            raise ValueError(f"unsupported input type {t} for input {inp.name!r}")
    return feed


def _jsonable(v):
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8", "replace")
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer, int)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        f = float(v)
        if math.isnan(f) or math.isinf(f):
            return str(f)
        return f
    if isinstance(v, str):
        return v
    return str(v)


def summarize(value) -> dict:
    if isinstance(value, np.ndarray):
        flat = value.reshape(-1)[:10]
        return {"shape": list(value.shape), "first": [_jsonable(x) for x in flat.tolist()]}
    if hasattr(value, "dense_shape") and hasattr(value, "values"):  # ORT SparseTensor
        vals = np.asarray(value.values()).reshape(-1)[:10]
        return {
            "shape": [int(d) for d in value.dense_shape()],
            "first": [_jsonable(x) for x in vals.tolist()],
            "kind": "sparse",
        }
    if isinstance(value, list):  # sequence output
        return {"shape": [len(value)], "first": [], "kind": "sequence"}
    if isinstance(value, dict):  # map output
        return {"shape": [len(value)], "first": [], "kind": "map"}
    return {"shape": [], "first": [_jsonable(value)]}


def check_one(path: str, run_ort: bool, full_check: bool) -> dict:
    import onnx

    onnx.checker.check_model(path, full_check=full_check)
    result = {"model": path, "checker": "ok"}
    if not run_ort:
        result["ort"] = "skipped"
        return result

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
    feed = make_feed(sess)
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, feed)
    result["ort"] = "ok"
    result["outputs"] = {n: summarize(v) for n, v in zip(names, values)}
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Run onnx.checker (full_check) and one onnxruntime inference per model."
    )
    ap.add_argument("models", nargs="+", metavar="MODEL")
    ap.add_argument("--no-ort", action="store_true", help="skip the onnxruntime run")
    ap.add_argument("--no-full-check", action="store_true", help="check_model without full_check")
    args = ap.parse_args(argv)

    for path in args.models:
        try:
            res = check_one(path, run_ort=not args.no_ort, full_check=not args.no_full_check)
        except Exception as e:  # noqa: BLE001 - report any failure
            print(f"{path}: {type(e).__name__}: {e}", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            return 1
        print(json.dumps(res, sort_keys=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
