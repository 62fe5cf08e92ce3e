#!/usr/bin/env python3
"""PyTorch reference for rl-rewrite's training steps (driven by tests/torch_reference.rs).

Three stages, per model, all under one work folder DIR/<model>/:

  prepare  builds the torchvision model (seeded random weights, dropout and stochastic depth 0), exports it
           in training mode with the TorchScript exporter (BatchNormalization training_mode=1, Dropout), and
           writes the batches: model.onnx, state.pt (the exported weights), images.npy [T, N, C, H, W]
           float32, labels.npy [T, N] int64 and meta.json (shapes, optimizer settings).
  (the Rust test then trains with the tool: tool/<mode>/step.json and tool/<mode>/traj_<opt>.json, with
           the tensors as .npy; for the RepL mode also rewritten.onnx, whose metadata holds the plan)
  compare  recomputes everything with torch autograd in float64 (and in float32, for the allowed error) and
           writes report.json: per mode the loss error, every parameter's gradient error against its allowed
           error, the BatchNorm running statistics, and per optimizer the trajectory's loss differences.

Allowed error of a tensor T (a gradient, a running statistic, a final parameter):

    allowed(T) = K · max|T32 − T64| + FLOOR · max|T64|

where T64 is torch's float64 value and T32 torch's own float32 value of the same computation: the largest
error over float32 runs that differ only in how the start is rounded (as stored, and every trained value one
float32 step up or down at random, two seeds), since where the forward is ill-conditioned or the training
chaotic one run alone can land near float64 by chance. A gradient beyond that also gets what activations
within K · (torch float32 error) of a kink may change in it (kink_allowance). The tool
computes in float32 like torch, but in other kernels and another summation order (im2col products, blocked
NCHWc convolutions, its own weight-gradient kernel, BatchNorm written out in elementary ops), so its rounding
error is of the same order as torch's without being the same numbers: K = 10 allows an order of magnitude
more than torch's own float32 error; FLOOR = 1e-5 covers tensors that torch's float32 happens to compute
almost exactly (a bias gradient that is a plain sum) while still being 100× below any real error (a wrong
rule, a missing term, a biased variance is off by 1e-2 or more, relative).

Usage:
    python scripts/torch_reference.py prepare DIR MODEL
    python scripts/torch_reference.py compare DIR MODEL
    python scripts/torch_reference.py summary DIR          # markdown table of every report.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

K = 10.0
FLOOR = 1e-5
LOSS_REL_TOL = 1e-3
STEPS = 30
ULP_SEEDS = (1, 2)
CLASSES = 10
OPTIMIZERS = {
    "sgd": {"lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False},
    "adamw": {"lr": 1e-4, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01},
}


# --------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------


def build(name: str) -> tuple[nn.Module, int, int]:
    """The model (seeded weights), its image size and batch size."""
    import torchvision.models as tvm
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    c = CLASSES
    size, batch = 32, 4
    if name == "resnet18":
        m = tvm.resnet18(num_classes=c)
    elif name == "resnet50":
        m = tvm.resnet50(num_classes=c)
    elif name == "mobilenet_v2":
        m = tvm.mobilenet_v2(num_classes=c, dropout=0.0)
    elif name == "mobilenet_v3_small":
        m = tvm.mobilenet_v3_small(num_classes=c, dropout=0.0)
    elif name == "efficientnet_b0":
        m = tvm.efficientnet_b0(num_classes=c, dropout=0.0, stochastic_depth_prob=0.0)
    elif name == "convnext_tiny":
        m = tvm.convnext_tiny(num_classes=c, stochastic_depth_prob=0.0)
    elif name == "regnet_y_400mf":
        m = tvm.regnet_y_400mf(num_classes=c)
    elif name == "shufflenet_v2_x0_5":
        m = tvm.shufflenet_v2_x0_5(num_classes=c)
    elif name == "densenet121":
        m = tvm.densenet121(num_classes=c, drop_rate=0.0)
    elif name == "vit_small":
        m = VisionTransformer(
            image_size=32, patch_size=4, num_layers=4, num_heads=2, hidden_dim=32, mlp_dim=64,
            dropout=0.0, attention_dropout=0.0, num_classes=c,
        )
    else:
        raise SystemExit(f"unknown model {name!r}")
    # Random, not default, normalization parameters and statistics, so that no gradient or update is
    # trivially exact.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.BatchNorm2d, nn.LayerNorm)) and mod.weight is not None:
                mod.weight.copy_(0.8 + 0.4 * torch.rand(mod.weight.shape, generator=g))
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=g))
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_(0.1 * torch.randn(mod.running_mean.shape, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(mod.running_var.shape, generator=g))
    return m, size, batch


# --------------------------------------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------------------------------------


def prepare(work: Path, name: str) -> None:
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    model, size, batch = build(name)
    model.train()
    gen = np.random.default_rng(1234)
    images = gen.standard_normal((STEPS, batch, 3, size, size)).astype(np.float32)
    labels = gen.integers(0, CLASSES, size=(STEPS, batch)).astype(np.int64)
    np.save(d / "images.npy", images)
    np.save(d / "labels.npy", labels)
    x = torch.from_numpy(images[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The exporter traces the model with a forward pass in training mode, which updates the module's
        # BatchNorm running statistics once, and writes those updated values as the initializers. The copy
        # keeps the module untouched; the reference then starts from what the file holds (below).
        torch.onnx.export(
            copy.deepcopy(model),
            (x,),
            str(d / "model.onnx"),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["logits"],
            training=torch.onnx.TrainingMode.TRAINING,
            do_constant_folding=False,
        )
    # The torch reference starts from exactly the values the tool trains: every parameter and buffer read
    # back from the exported initializers by name, with their shapes checked.
    torch.save(state_from_onnx(model, d / "model.onnx"), d / "state.pt")
    meta = {
        "model": name,
        "image_size": size,
        "batch": batch,
        "steps": STEPS,
        "classes": CLASSES,
        "optimizers": OPTIMIZERS,
        "torch": torch.__version__.split("+")[0],
    }
    (d / "meta.json").write_text(json.dumps(meta, indent=1))


def state_from_onnx(model: nn.Module, path: Path) -> dict:
    """The model's state dict with every parameter and buffer taken from the ONNX file's initializers of the
    same name (shape and dtype checked); only BatchNorm's num_batches_tracked, which the export drops and
    nothing reads under a fixed momentum, keeps the module's value."""
    import onnx
    from onnx import numpy_helper

    inits = {t.name: t for t in onnx.load(str(path)).graph.initializer}
    state = {}
    for k, v in model.state_dict().items():
        if k not in inits:
            if k.endswith("num_batches_tracked"):
                state[k] = v.detach().clone()
                continue
            raise SystemExit(f"{path}: no initializer named {k!r}")
        a = numpy_helper.to_array(inits[k])
        if tuple(a.shape) != tuple(v.shape) or a.dtype != v.detach().numpy().dtype:
            raise SystemExit(f"{path}: initializer {k!r} is {a.dtype}{list(a.shape)}, the module's "
                             f"{v.dtype}{list(v.shape)}")
        state[k] = torch.from_numpy(a.copy())
    return state


# --------------------------------------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------------------------------------


def load_np(path: Path) -> np.ndarray:
    return np.load(path).astype(np.float64)


class Reference:
    """The exported model as a function of named tensors, in a given dtype, with RepL's integration when a
    plan is given: each replaced tensor is a·prev + b·next."""

    def __init__(self, work: Path, name: str, dtype: torch.dtype, plan=None, ab=None):
        self.model, _, _ = build(name)
        self.model.load_state_dict(torch.load(work / name / "state.pt"))
        self.model.to(dtype).train()
        self.dtype = dtype
        self.plan = plan or {"frozen": []}
        self.replaced = {p["tensor"]: (u["a"], u["b"], p["prev"], p["next"])
                         for u in self.plan["frozen"] for p in u["params"]}
        named = dict(self.model.named_parameters())
        self.params = {k: v.detach().clone() for k, v in named.items() if k not in self.replaced}
        for u in self.plan["frozen"]:
            for s in (u["a"], u["b"]):
                self.params[s] = torch.tensor(float(ab[s]), dtype=dtype)
        self.buffers = {k: v.detach().clone() for k, v in self.model.named_buffers()}
        self.bn_count, self.bn_momentum = {}, {}
        for mname, mod in self.model.named_modules():
            if isinstance(mod, nn.BatchNorm2d):
                self.bn_momentum[mname] = mod.momentum
                mod.register_forward_pre_hook(self._count_hook(mname))
            # Out of place, so that each activation's input stays a tensor of the graph (see kink_allowance).
            if getattr(mod, "inplace", False):
                mod.inplace = False
            if kinks_of(mod):
                mod.register_forward_hook(self._activation_hook(mname))
        self.capture = False
        self.activations = []

    def _count_hook(self, mname):
        def hook(_mod, inputs):
            x = inputs[0]
            self.bn_count[mname] = x.numel() // x.shape[1]
        return hook

    def _activation_hook(self, mname):
        def hook(mod, inputs, output):
            if self.capture:
                self.activations.append((mname, kinks_of(mod), inputs[0], output))
        return hook

    def perturb_one_ulp(self, seed: int) -> None:
        """Moves every trained value one float step up or down, at random (a rounding of the start as valid as
        the stored one)."""
        g = torch.Generator().manual_seed(seed)
        for k, v in self.params.items():
            up = torch.rand(v.shape, generator=g) < 0.5
            toward = torch.where(up, torch.full_like(v, math.inf), torch.full_like(v, -math.inf))
            self.params[k] = torch.nextafter(v, toward)

    def set_params(self, values: dict) -> None:
        for k, v in values.items():
            self.params[k] = v

    def loss(self, params: dict, x: np.ndarray, y: np.ndarray) -> torch.Tensor:
        merged = dict(params)
        for t, (a, b, prev, nxt) in self.replaced.items():
            merged[t] = params[a] * params[prev] + params[b] * params[nxt]
        merged.update(self.buffers)
        logits = functional_call(self.model, merged, (torch.from_numpy(x).to(self.dtype),))
        return F.cross_entropy(logits, torch.from_numpy(y))

    def step_grads(self, x, y):
        """(loss, gradients, running statistics after the step, BatchNorm input counts)."""
        leaves = {k: v.clone().requires_grad_(True) for k, v in self.params.items()}
        self.activations = []
        self.capture = True
        try:
            loss = self.loss(leaves, x, y)
        finally:
            self.capture = False
        outs = [a[3] for a in self.activations]
        grads = torch.autograd.grad(loss, list(leaves.values()) + outs, allow_unused=True, retain_graph=True)
        g = {k: (torch.zeros_like(leaves[k]) if gr is None else gr).detach()
             for k, gr in zip(leaves, grads)}
        # Kept for kink_allowance: the leaves, and per activation call its input, output and dL/d(output).
        self.leaves = leaves
        self.act_grads = [None if gr is None else gr.detach() for gr in grads[len(leaves):]]
        return float(loss.detach()), g

    def trajectory(self, opt_name: str, settings: dict, decay: dict, images, labels):
        leaves = {k: v.clone().requires_grad_(True) for k, v in self.params.items()}
        groups = [
            {"params": [v for k, v in leaves.items() if decay.get(k, True)]},
            {"params": [v for k, v in leaves.items() if not decay.get(k, True)], "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
        s = dict(settings)
        if opt_name == "sgd":
            opt = torch.optim.SGD(groups, lr=s["lr"], momentum=s["momentum"],
                                  weight_decay=s["weight_decay"], nesterov=s["nesterov"])
        else:
            opt = torch.optim.AdamW(groups, lr=s["lr"], betas=tuple(s["betas"]), eps=s["eps"],
                                    weight_decay=s["weight_decay"])
        losses = []
        for t in range(len(images)):
            opt.zero_grad(set_to_none=True)
            loss = self.loss(leaves, images[t], labels[t])
            loss.backward()
            for v in leaves.values():
                if v.grad is None:
                    v.grad = torch.zeros_like(v)
            opt.step()
            losses.append(float(loss))
        return losses, {k: v.detach() for k, v in leaves.items()}


def kinks_of(mod: nn.Module) -> list:
    """(point, jump of the derivative there) for each kink of an activation module; [] for smooth ones."""
    if isinstance(mod, nn.ReLU):
        return [(0.0, 1.0)]
    if isinstance(mod, nn.Hardtanh):  # ReLU6 is a Hardtanh(0, 6)
        return [(float(mod.min_val), 1.0), (float(mod.max_val), 1.0)]
    if isinstance(mod, nn.Hardswish):  # x·relu6(x+3)/6: derivative 0 | x/3 + 1/2 | 1
        return [(-3.0, 0.5), (3.0, 0.5)]
    if isinstance(mod, nn.Hardsigmoid):  # relu6(x+3)/6: derivative 0 | 1/6 | 0
        return [(-3.0, 1.0 / 6.0), (3.0, 1.0 / 6.0)]
    return []


MAX_KINK_ELEMENTS = 4000
KINK_BATCH = 32


def batched_vjp(z: torch.Tensor, leaves: list, cot: torch.Tensor) -> list:
    """The vector–Jacobian products of z with each cotangent cot[j], stacked: one vmapped backward, or one
    backward per cotangent where an op of the graph has no batching rule."""
    try:
        return list(torch.autograd.grad(z, leaves, grad_outputs=cot, retain_graph=True, allow_unused=True,
                                        is_grads_batched=True))
    except RuntimeError:
        rows = [torch.autograd.grad(z, leaves, grad_outputs=c, retain_graph=True, allow_unused=True)
                for c in cot]
        return [None if rows[0][k] is None else torch.stack([r[k] for r in rows]) for k in range(len(leaves))]


def float32_references(work: Path, name: str, plan, ab) -> list:
    """Torch's float32 references: the start as stored, then moved one float32 step at random per seed."""
    refs = []
    for seed in (None,) + ULP_SEEDS:
        ref = Reference(work, name, torch.float32, plan, ab)
        if seed is not None:
            ref.perturb_one_ulp(seed)
        refs.append(ref)
    return refs


def kink_allowance(r64: "Reference", r32s: list) -> tuple[dict, dict]:
    """What float32 rounding may legitimately change in the gradients at activation kinks.

    An activation input z whose float64 value lies within K · torch float32's error on that tensor (the
    allowance of every tensor here, without the floor) of a kink may be computed on either side of it by a
    correct float32 implementation, and the derivative there jumps (by 1 for ReLU and ReLU6,
    1/2 for Hardswish, 1/6 for Hardsigmoid). Flipping element i changes dL/dz by jump·dL/dy_i at i, and
    every parameter gradient by the vector–Jacobian product of z with that one-hot cotangent. Per parameter
    tensor, the allowance is the largest elementwise sum of |that change| over all such elements: a bound on
    any set of flips (exact per activation call, to first order across calls). Returns (allowance per
    parameter, summary)."""
    names = list(r64.leaves)
    leaves = [r64.leaves[k] for k in names]
    total = {k: torch.zeros_like(v) for k, v in r64.leaves.items()}
    count, calls = 0, 0
    for k_call, ((mname, kinks, z, _y), dy) in enumerate(zip(r64.activations, r64.act_grads)):
        if dy is None:
            continue
        z64 = z.detach()
        band = K * max(float((r.activations[k_call][2].detach().to(torch.float64) - z64).abs().max())
                       for r in r32s)
        for point, jump in kinks:
            near = ((z64 - point).abs() <= band).nonzero()
            if len(near) == 0:
                continue
            calls += 1
            count += len(near)
            if count > MAX_KINK_ELEMENTS:
                # Too close to the kinks for a per-element bound: no allowance (the failure stands, reported).
                return {}, {"elements": count, "activation_calls": calls, "too_many": True}
            for chunk in near.split(KINK_BATCH):
                # One one-hot cotangent per element, all of the chunk in one batched backward.
                cot = torch.zeros((len(chunk),) + tuple(z64.shape), dtype=z64.dtype)
                for j, idx in enumerate(chunk):
                    i = tuple(idx.tolist())
                    cot[(j,) + i] = jump * dy[i]
                for k, d in zip(names, batched_vjp(z, leaves, cot)):
                    if d is not None:
                        total[k] += d.detach().abs().sum(0)
    allowance = {k: float(v.max()) if v.numel() else 0.0 for k, v in total.items()}
    return allowance, {"elements": count, "activation_calls": calls}


def to64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).numpy()


def judge(tool: np.ndarray, t64: np.ndarray, t32, kink: float = 0.0) -> dict:
    """The tool's error on a tensor against its allowance; t32 is torch's float32 value, or a list of such
    values from runs that differ only in rounding (the largest error of them counts)."""
    err = float(np.max(np.abs(tool - t64))) if tool.size else 0.0
    t32s = t32 if isinstance(t32, list) else [t32]
    e32 = max(float(np.max(np.abs(t - t64))) for t in t32s) if tool.size else 0.0
    scale = float(np.max(np.abs(t64))) if tool.size else 0.0
    allowed = K * e32 + FLOOR * scale + kink
    ratio = err / allowed if allowed > 0 else (0.0 if err == 0 else math.inf)
    j = {"err": err, "torch32_err": e32, "max_abs": scale, "allowed": allowed, "ratio": ratio,
         "ok": bool(err <= allowed)}
    if kink:
        j["kink_allowance"] = kink
    return j


def read_plan(path: Path):
    import onnx

    m = onnx.load(str(path), load_external_data=True)
    plan = next(json.loads(e.value) for e in m.metadata_props if e.key == "replacement_learning.plan")
    inits = {t.name: t for t in m.graph.initializer}
    ab = {}
    for u in plan["frozen"]:
        for s in (u["a"], u["b"]):
            ab[s] = float(onnx.numpy_helper.to_array(inits[s]).reshape(()))
    return plan, ab


def compare_step(work: Path, name: str, mode: str, images, labels) -> dict:
    tool_dir = work / name / "tool" / mode
    step = json.loads((tool_dir / "step.json").read_text())
    plan, ab = (None, None)
    if mode != "bp":
        plan, ab = read_plan(work / name / "rewritten.onnx")
    x, y = images[0], labels[0]
    r64 = Reference(work, name, torch.float64, plan, ab)
    l64, g64 = r64.step_grads(x, y)
    # Torch's own float32 error: the largest over float32 runs that differ only in how the start is rounded (as
    # stored, and every trained value moved one float32 step up or down at random): where the forward is
    # ill-conditioned (BatchNorm over four values a channel), one run alone can land close to float64 by chance.
    r32s = float32_references(work, name, plan, ab)
    runs32 = [r.step_grads(x, y) for r in r32s]
    res = {"loss_tool": step["loss"], "loss_torch64": l64, "loss_torch32": runs32[0][0]}
    res["loss"] = judge(np.array([step["loss"]]), np.array([l64]), [np.array([l]) for l, _ in runs32])
    missing = [p["name"] for p in step["params"] if p["name"] not in g64]
    tool_grads = {p["name"]: load_np(tool_dir / p["file"]).reshape(-1)
                  for p in step["params"] if p["name"] in g64}

    def judge_grads(kink: dict) -> dict:
        return {k: judge(tool, to64(g64[k]).reshape(-1), [to64(g32[k]).reshape(-1) for _, g32 in runs32],
                         kink.get(k, 0.0))
                for k, tool in tool_grads.items()}

    grads = judge_grads({})
    # Only where a gradient is beyond its allowance: what activations within float32 noise of a kink allow.
    if any(not j["ok"] for j in grads.values()):
        kink, res["kinks"] = kink_allowance(r64, r32s)
        grads = judge_grads(kink)
    tool_names = {p["name"] for p in step["params"]}
    not_trained = sorted(k for k in g64 if k not in tool_names)
    stats = {}
    for s in step["state"]:
        if s["name"] not in r64.buffers:
            missing.append(s["name"])
            continue
        tool = load_np(tool_dir / s["file"]).reshape(-1)
        b64 = to64(r64.buffers[s["name"]]).reshape(-1)
        j = judge(tool, b64, [to64(r.buffers[s["name"]]).reshape(-1) for r in r32s])
        # How far the tool moved the statistic compared with torch (1 when they agree; 1.9 = 1 − 0.9² is an
        # update applied twice, as when the two sides start one update apart).
        v_start = to64(dict(build_state(work, name))[s["name"]]).reshape(-1)
        moved = b64 - v_start
        big = np.abs(moved) > 0.5 * np.max(np.abs(moved)) if moved.size else moved
        if np.any(big):
            j["update_ratio"] = float(np.median((tool - v_start)[big] / moved[big]))
        if s["name"].endswith("running_var") and not j["ok"]:
            # What a biased batch variance would have given: running_var = (1−m)·v + m·var_biased.
            mod = s["name"][: -len(".running_var")]
            n = r64.bn_count.get(mod)
            v0 = to64(dict(build_state(work, name))[s["name"]]).reshape(-1)
            m_ = r64.bn_momentum.get(mod, 0.1)
            unbiased = (b64 - (1 - m_) * v0) / m_
            if n and n > 1:
                biased = (1 - m_) * v0 + m_ * unbiased * (n - 1) / n
                j["matches_biased_variance"] = bool(np.max(np.abs(tool - biased)) <= j["allowed"])
        stats[s["name"]] = j
    res["grads"] = grads
    res["stats"] = stats
    res["missing_in_torch"] = missing
    res["not_trained_by_tool"] = not_trained
    worst = max(grads.items(), key=lambda kv: kv[1]["ratio"], default=(None, {"ratio": 0.0}))
    res["worst_grad"] = {"tensor": worst[0], **worst[1]}
    worst_s = max(stats.items(), key=lambda kv: kv[1]["ratio"], default=(None, {"ratio": 0.0}))
    res["worst_stat"] = {"tensor": worst_s[0], **worst_s[1]}
    res["failing_grads"] = sorted((k for k, v in grads.items() if not v["ok"]),
                                  key=lambda k: -grads[k]["ratio"])
    res["failing_stats"] = sorted((k for k, v in stats.items() if not v["ok"]),
                                  key=lambda k: -stats[k]["ratio"])
    if plan is not None:
        res["frozen_units"] = [u["unit"] for u in plan["frozen"]]
        res["ab"] = {k: grads.get(k) for u in plan["frozen"] for k in (u["a"], u["b"])}
    res["ok"] = bool(res["loss"]["ok"] and not res["failing_grads"] and not res["failing_stats"]
                     and not missing and not not_trained)
    return res


_STATE_CACHE = {}


def build_state(work: Path, name: str):
    if name not in _STATE_CACHE:
        _STATE_CACHE[name] = torch.load(work / name / "state.pt")
    return _STATE_CACHE[name].items()


def compare_traj(work: Path, name: str, mode: str, opt: str, images, labels) -> dict:
    tool_dir = work / name / "tool" / mode
    tj = json.loads((tool_dir / f"traj_{opt}.json").read_text())
    plan, ab = (None, None)
    if mode != "bp":
        plan, ab = read_plan(work / name / "rewritten.onnx")
    decay = {p["name"]: p["decay"] for p in tj["params"]}
    settings = OPTIMIZERS[opt]
    l64, p64 = Reference(work, name, torch.float64, plan, ab).trajectory(opt, settings, decay, images, labels)
    # Torch's own float32 error on a trajectory. Where the tool is beyond what one float32 run allows: the largest
    # over float32 runs that differ only in how the start is rounded (as stored, and each trained value moved one
    # float32 step up or down at random, two seeds). On a chaotic or noise-amplifying trajectory one run alone can
    # land close to float64 by chance.
    state = dict(build_state(work, name))
    tool_finals = {p["name"]: load_np(tool_dir / p["file"]).reshape(-1) for p in tj["params"] if p["name"] in p64}

    def evaluate(runs32: list) -> dict:
        tool_losses = tj["losses"]
        rel = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(tool_losses, l64)]
        rel32 = [max(abs(run[0][t] - b) / max(abs(b), 1e-12) for run in runs32) for t, b in enumerate(l64)]
        # Training BatchNorm networks at batch 4 on fresh batches is chaotic: torch's own float32 runs leave the
        # float64 one by more than 1e-3 within a few steps (a BatchNorm over 4 values, a ReLU or max-pool decision
        # flipping). A step passes within 1e-3, or, once torch's float32 runs have left by more, within K times the
        # largest difference they have shown up to that step.
        envelope = np.maximum.accumulate(np.array(rel32)) if rel32 else np.array([])
        step_ok = [r <= max(LOSS_REL_TOL, K * e) for r, e in zip(rel, envelope)]
        chaotic_from = next((t for t, r in enumerate(rel32) if r > LOSS_REL_TOL), None)
        finals = {}
        for k, tool in tool_finals.items():
            t64 = to64(p64[k]).reshape(-1)
            j = judge(tool, t64, [to64(run[1][k]).reshape(-1) for run in runs32])
            # How far the parameter moved, for scale.
            start = to64(state[k]).reshape(-1) if k in state else np.full_like(t64, ab.get(k, 0.0) if ab else 0.0)
            j["moved"] = float(np.max(np.abs(t64 - start)))
            finals[k] = j
        worst = max(finals.items(), key=lambda kv: kv[1]["ratio"], default=(None, {"ratio": 0.0}))
        res = {
            "losses_tool": tool_losses,
            "losses_torch64": l64,
            "max_rel_loss_diff": max(rel) if rel else math.inf,
            "torch32_max_rel_loss_diff": max(rel32),
            "rel_loss_diff": rel,
            "torch32_rel_loss_diff": rel32,
            "failing_steps": [t for t, ok in enumerate(step_ok) if not ok],
            "torch32_leaves_1e-3_at_step": chaotic_from,
            "steps": len(tool_losses),
            "worst_final_param": {"tensor": worst[0], **worst[1]},
            "failing_final_params": sorted((k for k, v in finals.items() if not v["ok"]),
                                           key=lambda k: -finals[k]["ratio"]),
        }
        res["ok"] = bool(len(tool_losses) == len(l64) and all(step_ok) and not res["failing_final_params"])
        return res

    refs32 = float32_references(work, name, plan, ab)
    runs32 = [refs32[0].trajectory(opt, settings, decay, images, labels)]
    res = evaluate(runs32)
    if not res["ok"]:
        runs32 += [r.trajectory(opt, settings, decay, images, labels) for r in refs32[1:]]
        res = evaluate(runs32)
    res["float32_runs"] = len(runs32)
    return res


def compare(work: Path, name: str) -> None:
    torch.set_num_threads(2)
    d = work / name
    images = np.load(d / "images.npy")
    labels = np.load(d / "labels.npy")
    report = {"model": name, "k": K, "floor": FLOOR, "loss_rel_tol": LOSS_REL_TOL, "modes": {}}
    for mode_dir in sorted((d / "tool").iterdir()):
        mode = mode_dir.name
        entry = {}
        skipped = mode_dir / "skipped.json"
        if skipped.exists():
            entry["skipped"] = json.loads(skipped.read_text())["reason"]
            entry["ok"] = True
            report["modes"][mode] = entry
            continue
        if (mode_dir / "step.json").exists():
            entry["step"] = compare_step(work, name, mode, images, labels)
        for opt in OPTIMIZERS:
            if (mode_dir / f"traj_{opt}.json").exists():
                entry[f"traj_{opt}"] = compare_traj(work, name, mode, opt, images, labels)
        entry["ok"] = all(v["ok"] for v in entry.values() if isinstance(v, dict))
        report["modes"][mode] = entry
    report["ok"] = all(m["ok"] for m in report["modes"].values())
    (d / "report.json").write_text(json.dumps(report, indent=1))
    print(summary_lines([report]))


# --------------------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------------------


def summary_lines(reports) -> str:
    rows = ["| model | mode | loss error | worst gradient error / allowed (tensor) | worst running statistic "
            "error / allowed | SGD max rel loss diff | AdamW max rel loss diff | result |",
            "|---|---|---:|---|---|---:|---:|---|"]
    for r in reports:
        for mode, e in r["modes"].items():
            if "skipped" in e:
                rows.append(f"| {r['model']} | {mode} | – | {e['skipped']} | – | – | – | – |")
                continue
            s = e.get("step", {})
            loss = s.get("loss", {}).get("err", float("nan"))
            wg = s.get("worst_grad", {})
            ws = s.get("worst_stat", {})

            def frac(w):
                if not w or w.get("tensor") is None:
                    return "–"
                note = " (biased variance)" if w.get("matches_biased_variance") else ""
                if "update_ratio" in w and abs(w["update_ratio"] - 1) > 0.01:
                    note += f" (moved {w['update_ratio']:.2f}× torch's update)"
                return f"{w['err']:.2e} / {w['allowed']:.2e} = {w['ratio']:.2g} ({w['tensor']}){note}"

            def traj(key):
                t = e.get(key)
                if t is None:
                    return "–"
                return f"{t['max_rel_loss_diff']:.1e} (torch f32 {t['torch32_max_rel_loss_diff']:.1e})"

            kinks = s.get("kinks")
            if kinks:
                wg_text = frac(wg) + (f"; {kinks['elements']} activations within float32 noise of a kink"
                                      + (" (too many to bound)" if kinks.get("too_many") else ""))
            else:
                wg_text = frac(wg)
            fails = []
            if s and not s["ok"]:
                fails.append(f"{len(s['failing_grads'])} grads, {len(s['failing_stats'])} stats")
                if s.get("missing_in_torch") or s.get("not_trained_by_tool"):
                    fails.append("name mismatch")
            for key in ("traj_sgd", "traj_adamw"):
                t = e.get(key)
                if t is not None and not t["ok"]:
                    fails.append(key[5:])
            result = "pass" if e["ok"] else "FAIL: " + ", ".join(fails)
            rows.append(f"| {r['model']} | {mode} | {loss:.1e} | {wg_text} | {frac(ws)} | {traj('traj_sgd')} "
                        f"| {traj('traj_adamw')} | {result} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["prepare", "compare", "summary"])
    ap.add_argument("work", type=Path)
    ap.add_argument("model", nargs="?")
    args = ap.parse_args(argv)
    if args.stage == "summary":
        reports = [json.loads(p.read_text()) for p in sorted(args.work.glob("*/report.json"))]
        print(summary_lines(reports))
        return 0
    if not args.model:
        ap.error("prepare and compare need a model")
    if args.stage == "prepare":
        prepare(args.work, args.model)
    else:
        compare(args.work, args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
