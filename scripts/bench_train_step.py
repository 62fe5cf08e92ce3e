"""One training step of a compiled step model on ONNX Runtime CPU: prints node count, median step time over
REPEATS steps (after one warm-up step, each step feeding the previous step's x.next back) and the process's peak
RSS. Usage: bench_train_step.py STEP.onnx [REPEATS]. Run by scripts/bench_train_step.sh."""
import json
import resource
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

path = sys.argv[1]
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
model = onnx.load(path)
manifest = json.loads(next(p.value for p in model.metadata_props if p.key == "replacement_learning.train"))
nodes = len(model.graph.node)
initial = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
options = ort.SessionOptions()
options.log_severity_level = 3  # the step file's inputs default to initializers, by design: no warnings
sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
rng = np.random.default_rng(0)
n = manifest["batch_size"]
shape = [i.type.tensor_type.shape for i in model.graph.input if i.name == manifest["input"]][0]
x = rng.standard_normal([d.dim_value for d in shape.dim]).astype(np.float32)
labels = rng.integers(0, 10, size=n).astype(np.int64)
tensors = manifest["params"] + manifest["state"]
feeds = {manifest["input"]: x, manifest["labels"]: labels, manifest["lr"]: np.array(0.1, np.float32)}
for t in tensors:
    feeds[t["name"]] = initial[t["name"]]
outs = [o.name for o in sess.get_outputs()]
times = []
for k in range(repeats + 1):
    t0 = time.perf_counter()
    res = dict(zip(outs, sess.run(None, feeds)))
    if k:
        times.append(time.perf_counter() - t0)
    for t in tensors:
        feeds[t["name"]] = res[t["next"]]
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{path}: {nodes} nodes, {len(manifest['params'])} trainable tensors, "
      f"step {1000 * float(np.median(times)):.1f} ms (median of {repeats}), loss {float(res['loss']):.4f}, "
      f"peak RSS {rss:.0f} MiB")
