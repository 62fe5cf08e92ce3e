"""PyTorch CPU eager training throughput of a zoo model (the baseline of scripts/bench_train.sh).

Two zoo families, told apart by their tensors:
- the CIFAR resnets, written out here in PyTorch with the zoo's tensor names (torchvision layout, option-B
  shortcuts); trained with SGD momentum 0.9, weight decay 5e-4, BatchNorm in training mode (momentum 0.1);
- the ViTs (zoo `vit-*`, torchvision layout), as torchvision's own VisionTransformer (nn.MultiheadAttention,
  so PyTorch's fused attention kernels); trained with AdamW (lr 1e-3, β 0.9/0.999, ε 1e-8, weight decay 0.01).
The initial weights are loaded from the zoo's ONNX file with strict name and shape checks (the ViT's MatMul
weights, stored input-major for MatMul, transposed into nn.Linear's layout), so both sides start from the same
weights. Weight decay applies to tensors of rank ≥ 2 only, as in `rl-rewrite train`. Softmax cross-entropy,
batch B. The data are random normal tensors generated before timing, so the figure is the training step alone
(the tool's figure includes its own data handling, which can only make it slower).

Usage: bench_torch_train.py MODEL.onnx BATCH STEPS   (prints one JSON line: images/s, ms/step, peak RSS)
"""
import json
import re
import resource
import sys
import time

import onnx
import torch
import torchvision
from onnx import numpy_helper
from torch import nn


class Block(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, 0, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        s = x if self.downsample is None else self.downsample(x)
        return torch.relu(h + s)


class CifarResNet(nn.Module):
    def __init__(self, n, width=16, channels=3, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        for stage, planes in enumerate([width, 2 * width, 4 * width]):
            blocks = []
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(Block(cin, planes, stride))
                cin = planes
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.layer3(self.layer2(self.layer1(h)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))


def vit_weights(weights):
    """The zoo ViT's tensors under torchvision's names and layouts."""
    out = {}
    for name, value in weights.items():
        m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.*)", name)
        if m:
            name = f"encoder.layers.encoder_layer_{m[1]}.{m[2]}"
        # MatMul weights are [in, out]; nn.Linear (and in_proj_weight) keep [out, in].
        if re.search(r"(in_proj_weight|out_proj\.weight|mlp\.\d+\.weight)$", name):
            value = value.t().contiguous()
        out[name] = value
    return out


def heads_of(model):
    """The attention heads of a zoo ViT: the third entry of its first block's head-split shape constant."""
    for node in model.graph.node:
        if node.op_type == "Constant" and node.name.endswith("self_attention.heads_shape"):
            return int(numpy_helper.to_array(node.attribute[0].t)[2])
    sys.exit("the ViT has no Constant '…self_attention.heads_shape': not a zoo ViT")


def build(model, weights):
    """The PyTorch network for the zoo model `model` (initializers `weights`), and its optimizer."""
    if "class_token" in weights:
        d = weights["class_token"].shape[-1]
        depth = sum(1 for k in weights if k.endswith("ln_1.weight"))
        patch = weights["conv_proj.weight"].shape[-1]
        heads = heads_of(model)
        tokens = weights["encoder.pos_embedding"].shape[1]
        side = round((tokens - 1) ** 0.5) * patch
        net = torchvision.models.VisionTransformer(
            image_size=side, patch_size=patch, num_layers=depth, num_heads=heads, hidden_dim=d,
            mlp_dim=weights["encoder.layers.0.mlp.0.weight"].shape[1],
            num_classes=weights["heads.head.weight"].shape[0])
        return net, vit_weights(weights), (3, side, side), lambda groups: torch.optim.AdamW(
            [{"params": groups[0], "weight_decay": 0.01}, {"params": groups[1], "weight_decay": 0.0}],
            lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    depth = sum(1 for k in weights if k.endswith("conv2.weight"))
    return CifarResNet(depth // 3), weights, (3, 32, 32), lambda groups: torch.optim.SGD(
        [{"params": groups[0], "weight_decay": 5e-4}, {"params": groups[1], "weight_decay": 0.0}],
        lr=0.1, momentum=0.9)


def load_weights(net, weights, path):
    state = net.state_dict()
    loaded = {}
    for name, value in state.items():
        if name.endswith("num_batches_tracked"):
            loaded[name] = value
            continue
        if name not in weights:
            sys.exit(f"{path}: no initializer '{name}' for the PyTorch network")
        if tuple(weights[name].shape) != tuple(value.shape):
            sys.exit(f"{path}: '{name}' has shape {tuple(weights[name].shape)}, PyTorch wants {tuple(value.shape)}")
        loaded[name] = weights[name]
    net.load_state_dict(loaded, strict=True)
    n = len([k for k in state if not k.endswith("num_batches_tracked")])
    return n, len(weights)


def main():
    path, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    model = onnx.load(path)
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
    net, weights, image, make_optimizer = build(model, weights)
    used, stored = load_weights(net, weights, path)
    net.train()
    decay = [p for p in net.parameters() if p.dim() > 1]
    other = [p for p in net.parameters() if p.dim() <= 1]
    opt = make_optimizer((decay, other))
    classes = [v for k, v in net.state_dict().items() if k in ("fc.weight", "heads.head.weight")][0].shape[0]
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(batch, *image, generator=g), torch.randint(0, classes, (batch,), generator=g))
            for _ in range(4)]
    loss_fn = nn.CrossEntropyLoss()

    def step(k):
        x, y = data[k % len(data)]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return float(loss.detach())

    step(0)  # warm-up: oneDNN primitive creation
    t0 = time.perf_counter()
    for k in range(steps):
        loss = step(k + 1)
    elapsed = time.perf_counter() - t0
    print(json.dumps({
        "framework": f"pytorch {torch.__version__} eager CPU",
        "threads": torch.get_num_threads(),
        "tensors_loaded": used,
        "initializers": stored,
        "steps": steps,
        "ms_per_step": 1000 * elapsed / steps,
        "images_per_s": batch * steps / elapsed,
        "last_loss": loss,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
