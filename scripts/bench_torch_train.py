"""PyTorch CPU eager training throughput of the zoo's CIFAR resnet (the baseline of scripts/bench_train.sh).

The network is written out here in PyTorch with the zoo's tensor names (torchvision layout, option-B
shortcuts), and its initial weights are loaded from the zoo's ONNX file with strict name and shape checks, so
both sides start from the same weights. Training matches `rl-rewrite train`: BatchNorm in training mode
(momentum 0.1), softmax cross-entropy, SGD momentum 0.9, weight decay 5e-4 on conv/fc weights only, batch B.
The data are random normal tensors generated before timing, so the figure is the training step alone (the
tool's figure includes its own data handling, which can only make it slower).

Usage: bench_torch_train.py MODEL.onnx BATCH STEPS   (prints one JSON line: images/s, ms/step, peak RSS)
"""
import json
import resource
import sys
import time

import onnx
import torch
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


def load_onnx_weights(net, path):
    model = onnx.load(path)
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
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
    depth = sum(1 for t in onnx.load(path).graph.initializer if t.name.endswith("conv2.weight"))
    net = CifarResNet(depth // 3)
    used, stored = load_onnx_weights(net, path)
    net.train()
    decay = [p for name, p in net.named_parameters() if name.endswith("weight") and p.dim() > 1]
    other = [p for name, p in net.named_parameters() if not (name.endswith("weight") and p.dim() > 1)]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": other, "weight_decay": 0.0}],
                          lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g))
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
