#!/usr/bin/env python3
"""Export small PyTorch models to ONNX with both PyTorch exporters.

Writes into tests/fixtures/exporters/:
  resnet_torchscript_eval.onnx      TorchScript exporter (dynamo=False), eval, opset 17
  resnet_dynamo_eval.onnx           torch.export based exporter (dynamo=True), eval
  resnet_torchscript_train.onnx     TorchScript exporter, TrainingMode.TRAINING,
                                    do_constant_folding=False (BatchNormalization
                                    training_mode=1, Dropout with ratio input)
  resnet_torchscript_external/model.onnx (+ model.onnx.data)
                                    the eval TorchScript export re-saved with every
                                    initializer stored as external data
  vit_torchscript_eval.onnx         TorchScript exporter, eval, opset 17
  vit_dynamo_eval.onnx              dynamo exporter, eval
  expected.json                     onnxruntime reference outputs (see below)

Reference outputs are computed with onnxruntime (CPU) on the deterministic input
    x = (np.arange(prod(shape)) % 17 / 17 - 0.5).astype(np.float32).reshape(shape)
with shape [1, 3, 16, 16]. No RNG is involved in the input.

Model weights come from torch.manual_seed(0) (ResNet) / torch.manual_seed(1) (ViT),
plus seeded random BatchNorm statistics so that BN folding is not a no-op.

Generated with torch 2.15.0 (CPU execution), onnx 1.23.2, onnxscript 0.7.2,
onnxruntime 1.31.1.

Usage:
    python scripts/gen_exporter_fixtures.py [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "exporters"
INPUT_SHAPE = [1, 3, 16, 16]
TS_OPSET = 17
# The dynamo exporter emits opset 18 at minimum.
DYNAMO_OPSET = 18


def det_input(shape) -> np.ndarray:
    n = int(np.prod(shape))
    return (np.arange(n) % 17 / 17 - 0.5).astype(np.float32).reshape(shape)


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class SmallResNet(nn.Module):
    """CIFAR-style ResNet: stem + 3 stages x 3 BasicBlocks (8, 16, 32 channels)."""

    def __init__(self, num_classes: int = 10, widths=(8, 16, 32), blocks: int = 3):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        layers = []
        cin = widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(cin, w, stride))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(p=0.1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(self.dropout(x))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class SmallViT(nn.Module):
    def __init__(self, img=16, patch=4, dim=32, depth=4, heads=2, mlp=64, num_classes=10):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        n = (img // patch) ** 2
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, N, D]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def make_resnet() -> SmallResNet:
    torch.manual_seed(0)
    m = SmallResNet()
    g = torch.Generator().manual_seed(100)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                c = mod.num_features
                mod.weight.copy_(0.8 + 0.4 * torch.rand(c, generator=g))
                mod.bias.copy_(0.1 * torch.randn(c, generator=g))
                mod.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return m


def make_vit() -> SmallViT:
    torch.manual_seed(1)
    m = SmallViT()
    g = torch.Generator().manual_seed(101)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.weight.copy_(0.8 + 0.4 * torch.rand(mod.weight.shape, generator=g))
                mod.bias.copy_(0.05 * torch.randn(mod.bias.shape, generator=g))
    return m


# --------------------------------------------------------------------------
# Export helpers
# --------------------------------------------------------------------------


def export_torchscript(model, path: Path, *, training=torch.onnx.TrainingMode.EVAL,
                       do_constant_folding=True):
    x = torch.from_numpy(det_input(INPUT_SHAPE))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=False,
            opset_version=TS_OPSET,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
            training=training,
            do_constant_folding=do_constant_folding,
        )


def export_dynamo(model, path: Path):
    x = torch.from_numpy(det_input(INPUT_SHAPE))
    batch = torch.export.Dim("batch", min=1, max=1024)
    prog = torch.onnx.export(
        model,
        (x,),
        dynamo=True,
        opset_version=DYNAMO_OPSET,
        input_names=["x"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: batch}},
        external_data=False,
        optimize=True,
    )
    prog.save(str(path), external_data=False)
    # The dynamo exporter records stack traces (absolute file paths) in node
    # metadata_props; rewrite them so no machine-specific path is committed.
    m = onnx.load(str(path))
    sanitize_paths(m)
    onnx.save(m, str(path))


def _path_replacements() -> list[tuple[str, str]]:
    import site
    import sysconfig

    reps = [(str(REPO_ROOT) + "/", ""), (str(REPO_ROOT), "<repo>")]
    dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    dirs.update(site.getsitepackages())
    for d in sorted(dirs, key=len, reverse=True):
        reps.append((d, "<site-packages>"))
    for d in sorted({sys.prefix, sys.base_prefix, sys.exec_prefix}, key=len, reverse=True):
        reps.append((d, "<python>"))
    return reps


def _sanitize_str(s: str, reps) -> str:
    for a, b in reps:
        s = s.replace(a, b)
    return s


def sanitize_paths(model: onnx.ModelProto) -> None:
    reps = _path_replacements()

    def fix_props(proto):
        for e in proto.metadata_props:
            e.value = _sanitize_str(e.value, reps)
        if proto.doc_string:
            proto.doc_string = _sanitize_str(proto.doc_string, reps)

    def fix_graph(g):
        fix_props(g)
        for coll in (g.input, g.output, g.value_info, g.initializer):
            for v in coll:
                fix_props(v)
        for n in g.node:
            fix_props(n)
            for a in n.attribute:
                if a.HasField("g"):
                    fix_graph(a.g)
                for sg in a.graphs:
                    fix_graph(sg)

    fix_props(model)
    fix_graph(model.graph)
    for f in model.functions:
        fix_props(f)
        for n in f.node:
            fix_props(n)


def ort_run(path: Path) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {sess.get_inputs()[0].name: det_input(INPUT_SHAPE)})
    return out


def describe(path: Path) -> dict:
    """Small structural summary used for README/report purposes."""
    m = onnx.load(str(path), load_external_data=False)
    ops = Counter(n.op_type for n in m.graph.node)
    init_names = {t.name for t in m.graph.initializer}
    consumers = Counter()
    for n in m.graph.node:
        for i in n.input:
            consumers[i] += 1
    ident_weights = [
        n.output[0] for n in m.graph.node if n.op_type == "Identity" and n.input[0] in init_names
    ]
    bn_training = [
        next((a.i for a in n.attribute if a.name == "training_mode"), 0)
        for n in m.graph.node
        if n.op_type == "BatchNormalization"
    ]
    return {
        "opsets": {o.domain or "ai.onnx": o.version for o in m.opset_import},
        "ir_version": m.ir_version,
        "ops": dict(sorted(ops.items())),
        "initializers": len(m.graph.initializer),
        "identity_on_initializer": len(ident_weights),
        "bn_training_mode": bn_training,
        "node_metadata_props": sum(len(n.metadata_props) for n in m.graph.node),
        "value_info_metadata_props": sum(len(v.metadata_props) for v in m.graph.value_info),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Export ResNet/ViT ONNX fixtures.")
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--summary", action="store_true", help="print a structural summary")
    args = ap.parse_args(argv)
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)

    x_t = torch.from_numpy(det_input(INPUT_SHAPE))
    files: dict[str, dict] = {}

    resnet = make_resnet().eval()
    vit = make_vit().eval()
    with torch.no_grad():
        ref = {"resnet": resnet(x_t).numpy(), "vit": vit(x_t).numpy()}

    export_torchscript(resnet, out / "resnet_torchscript_eval.onnx")
    files["resnet_torchscript_eval.onnx"] = {"model": "resnet", "mode": "eval"}

    export_dynamo(resnet, out / "resnet_dynamo_eval.onnx")
    files["resnet_dynamo_eval.onnx"] = {"model": "resnet", "mode": "eval"}

    # Training-mode export: the exporter switches the module to train mode.
    train_model = make_resnet()
    export_torchscript(
        train_model,
        out / "resnet_torchscript_train.onnx",
        training=torch.onnx.TrainingMode.TRAINING,
        do_constant_folding=False,
    )
    files["resnet_torchscript_train.onnx"] = {"model": "resnet", "mode": "train"}

    # All initializers external: re-save the eval TorchScript export.
    ext_dir = out / "resnet_torchscript_external"
    if ext_dir.exists():
        shutil.rmtree(ext_dir)
    ext_dir.mkdir()
    m = onnx.load(str(out / "resnet_torchscript_eval.onnx"))
    onnx.save(
        m,
        str(ext_dir / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    files["resnet_torchscript_external/model.onnx"] = {"model": "resnet", "mode": "eval"}

    export_torchscript(vit, out / "vit_torchscript_eval.onnx")
    files["vit_torchscript_eval.onnx"] = {"model": "vit", "mode": "eval"}

    export_dynamo(vit, out / "vit_dynamo_eval.onnx")
    files["vit_dynamo_eval.onnx"] = {"model": "vit", "mode": "eval"}

    expected = {
        "_input": {
            "shape": INPUT_SHAPE,
            "dtype": "float32",
            "formula": "(np.arange(prod(shape)) % 17 / 17 - 0.5).astype(np.float32).reshape(shape)",
            "seed": "none: the input is deterministic; weights from torch.manual_seed "
            "(resnet: 0, vit: 1) plus torch.Generator seeds 100/101 for BN/LN params",
            "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
            "torch": torch.__version__.split("+")[0],
            "onnx": onnx.__version__,
        }
    }
    for name, info in files.items():
        path = out / name
        entry = {"input_shape": INPUT_SHAPE, "input_name": "x", "output_name": "logits"}
        try:
            y = ort_run(path)
            entry["output_shape"] = list(y.shape)
            if info["mode"] == "train":
                # Dropout in training mode is random (no seed attribute), so only
                # the shape is stable.
                entry["first10"] = None
                entry["note"] = "training-mode Dropout is random; values not reproducible"
            else:
                entry["first10"] = [float(v) for v in y.reshape(-1)[:10]]
                diff = float(np.max(np.abs(y - ref[info["model"]])))
                entry["max_abs_diff_vs_torch"] = float(f"{diff:.3g}")
        except Exception as e:  # noqa: BLE001
            entry["ort_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        if args.summary:
            print(name, json.dumps(describe(path)))
        files[name] = entry
    expected.update(files)
    # One key per line, each value on a single line (compact but diffable).
    with open(out / "expected.json", "w") as f:
        f.write("{\n")
        items = list(expected.items())
        for i, (k, v) in enumerate(items):
            sep = "," if i + 1 < len(items) else ""
            f.write(f"  {json.dumps(k)}: {json.dumps(v)}{sep}\n")
        f.write("}\n")

    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(f"{p.relative_to(out)}: {p.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
