"""Throughput of CropNet at the seed's size (320×320 inputs, 10 crops of 160×160, rexnet_100).

Prints training images/s (augmentation + forward + backward + AdamP step, the per-batch work of
``TorchClassifier.fit``) and inference images/s (``predict_proba``: one image = one clip's ARS
image) on the CPU, and on the GPU when one is present (AMP and channels_last as in training).

    python benchmarks/cropnet.py                     # CPU (short) and CUDA if available
    python benchmarks/cropnet.py --device cpu --threads 2 --steps 3
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from merbench.training import make_optimizer, resolve_device
from merbench_plugins.cropnet import CropNet


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(device_name: str, batch: int, steps: int, warmup: int, args: argparse.Namespace) -> dict:
    device = resolve_device(device_name)
    model = CropNet(num_classes=args.classes, size=args.size, crop=args.size // 2,
                    trunk=args.trunk, batch_size=batch, device=str(device), pretrained=False)
    module = model.build(args.classes, (3, args.size, args.size)).to(device)
    if device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    model.module_ = module
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.integers(0, 256, (batch, 3, args.size, args.size), dtype=np.uint8))
    y = torch.from_numpy(rng.integers(0, args.classes, batch)).to(device)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=model.label_smoothing)
    opt = make_optimizer(model.optimizer, module.parameters(), model.lr, model.weight_decay)
    module.train()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        xb = model.augment(model._prepare(X, device))
        with model._autocast(device):
            loss = loss_fn(module(xb), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    train = batch * steps / (time.perf_counter() - start)

    images = rng.integers(0, 256, (batch * steps, args.size, args.size, 3), dtype=np.uint8)
    model.predict_proba(images[:batch])  # warm-up
    _sync(device)
    start = time.perf_counter()
    model.predict_proba(images)
    _sync(device)
    infer = len(images) / (time.perf_counter() - start)
    params = sum(p.numel() for p in module.parameters())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device": name, "batch": batch, "steps": steps, "params": params,
            "train_img_s": train, "infer_img_s": infer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="all", help="cpu, cuda or all (cpu + cuda if present)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--cpu-batch", type=int, default=4)
    parser.add_argument("--cpu-steps", type=int, default=3)
    parser.add_argument("--gpu-batch", type=int, default=32)
    parser.add_argument("--gpu-steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--trunk", default="rexnet_100")
    parser.add_argument("--classes", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = []
    if args.device in ("all", "cpu"):
        runs.append(("cpu", args.cpu_batch, args.cpu_steps, 1))
    if args.device in ("all", "cuda") and torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        runs.append(("cuda", args.gpu_batch, args.gpu_steps, 3))
    for device, batch, steps, warmup in runs:
        r = bench(device, batch, steps, warmup, args)
        print(f"{r['device']}: cropnet {args.trunk} {args.size}x{args.size} "
              f"({r['params']:,} params), batch {r['batch']}, {r['steps']} timed steps: "
              f"train {r['train_img_s']:.1f} images/s, inference {r['infer_img_s']:.1f} "
              f"clips/s (images/s)")


if __name__ == "__main__":
    main()
