"""Runs the graphs of the autodiff finite-difference tests in ONNX Runtime and compares with tract.

    RL_AUTODIFF_DUMP=/tmp/ad cargo test -p rl-passes --test autodiff_fd
    python passes/tests/ort_crosscheck.py /tmp/ad

Each model first passes onnx.checker (full check, strict shape inference). It then runs in ORT CPU in
float64 where ORT has float64 kernels for every op (compared with tract's float64 loss and gradients at
1e-9 relative); where ORT lacks a float64 kernel (Conv, ConvTranspose, AveragePool, ... are float32-only
on CPU) the model is converted to float32 and compared at 1e-4 relative, which still catches any
semantic difference (a wrong divisor, padding or routing is off by far more).

`NAME.native` is the same graph before the test's tract workarounds (native BatchNormalization in training
mode, LayerNormalization, Sigmoid, ...); it is run too, except training-mode Dropout (random in ORT), so
ORT's own forward op is compared with the standard-op definition the tract run used.
"""
import glob
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, numpy_helper


def shape_of(vi):
    return [d.dim_value for d in vi.type.tensor_type.shape.dim]


def to_f32(model):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.tensor_type.elem_type == TensorProto.DOUBLE:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
    for i, t in enumerate(g.initializer):
        if t.data_type == TensorProto.DOUBLE:
            a = numpy_helper.to_array(t).astype(np.float32)
            g.initializer[i].CopyFrom(numpy_helper.from_array(a, t.name))
    for n in g.node:
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.DOUBLE:
                a.i = TensorProto.FLOAT
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.DOUBLE:
                arr = numpy_helper.to_array(a.t).astype(np.float32)
                a.t.CopyFrom(numpy_helper.from_array(arr, a.t.name))
    return m


def main(folder):
    ort.set_default_logger_severity(3)
    failures = 0
    cases = []
    for path in sorted(glob.glob(os.path.join(folder, "*.onnx"))):
        cases.append((path, path))
        native = path[:-5] + ".native"
        if os.path.exists(native):
            m = onnx.load(native)
            if not any(n.op_type == "Dropout" and len(n.input) > 2 for n in m.graph.node):
                cases.append((native, path))
    for path, base in cases:
        name = os.path.basename(path)
        model = onnx.load(path)
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as e:  # noqa: BLE001
            print(f"FAIL {name}: onnx.checker: {e}")
            failures += 1
            continue
        raw = open(base[:-5] + ".bin", "rb").read()
        off = 0
        feeds = {}
        for vi in model.graph.input:
            s = shape_of(vi)
            n = int(np.prod(s)) if s else 1
            dt = np.float64 if vi.type.tensor_type.elem_type == TensorProto.DOUBLE else np.int64
            feeds[vi.name] = np.frombuffer(raw, dt, n, off).reshape(s)
            off += 8 * n
        expected = []
        for vi in model.graph.output:
            s = shape_of(vi)
            n = int(np.prod(s)) if s else 1
            expected.append(np.frombuffer(raw, np.float64, n, off).reshape(s))
            off += 8 * n
        precision, tol, m = "f64", 1e-9, model
        try:
            sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001
            precision, tol, m = "f32", 1e-4, to_f32(model)
            feeds = {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in feeds.items()}
            try:
                sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            except Exception as e:  # noqa: BLE001
                print(f"FAIL {name}: ORT load: {e}")
                failures += 1
                continue
        try:
            got = sess.run(None, feeds)
        except Exception as e:  # noqa: BLE001
            print(f"FAIL {name}: ORT run: {e}")
            failures += 1
            continue
        worst = 0.0
        for g, e in zip(got, expected):
            g = np.asarray(g, np.float64)
            err = np.abs(g - e) / np.maximum(1.0, np.maximum(np.abs(g), np.abs(e)))
            worst = max(worst, float(err.max()) if err.size else 0.0)
        status = "ok  " if worst <= tol else "FAIL"
        failures += worst > tol
        print(f"{status} {name}: ORT {precision}, worst relative difference {worst:.2e}")
    print(f"{len(cases) - failures}/{len(cases)} agree")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
