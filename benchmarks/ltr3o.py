"""Throughput of the LTR3O-style model at its default size (three-o stacks of 16 + 2 grey
112×112 frames; K = 5 training candidates, 8 test candidates, one shared ResNet-18).

Prints training samples/s (flip + candidate draw + forward of K candidates + CE + ranking loss +
backward + Adam step, the per-batch work of ``TorchClassifier.fit``) and inference samples/s
(``predict_proba``: 8 candidates per clip) on the CPU, and on the GPU when one is present (AMP
and channels_last as in training).

    python benchmarks/ltr3o.py                      # CPU (short) and CUDA if available
    python benchmarks/ltr3o.py --device cpu --threads 2 --cpu-steps 3
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from merbench.training import make_optimizer, resolve_device
from merbench_plugins.ltr3o import LTR3O


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(device_name: str, batch: int, steps: int, warmup: int, args: argparse.Namespace) -> dict:
    device = resolve_device(device_name)
    model = LTR3O(num_classes=3, batch_size=batch, device=str(device), pretrained=False,
                  candidates=args.candidates)
    shape = (args.frames + 2, args.size, args.size)
    module = model.build(3, shape).to(device)
    if device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    model.module_ = module
    model.criterion_ = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.integers(0, 256, (batch, *shape), dtype=np.uint8))
    y = torch.from_numpy(rng.integers(0, 3, batch)).to(device)
    opt = make_optimizer(model.optimizer, module.parameters(), model.lr, model.weight_decay)
    module.train()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start, cpu = time.perf_counter(), time.process_time()
        xb = model.augment(model._prepare(X, device))
        with model._autocast(device):
            loss, _ = model.loss(module(xb), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    train = batch * steps / (time.perf_counter() - start)
    train_cpu = batch * steps / (time.process_time() - cpu)

    clips = rng.integers(0, 256, (batch * steps, *shape), dtype=np.uint8)
    model.predict_proba(clips[:batch])  # warm-up
    _sync(device)
    start = time.perf_counter()
    model.predict_proba(clips)
    _sync(device)
    infer = len(clips) / (time.perf_counter() - start)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device": name, "batch": batch, "steps": steps, "train": train, "infer": infer,
            "train_cpu": train_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="all", help="cpu, cuda or all (cpu + cuda if present)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--cpu-batch", type=int, default=16)
    parser.add_argument("--cpu-steps", type=int, default=3)
    parser.add_argument("--gpu-batch", type=int, default=64)
    parser.add_argument("--gpu-steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--frames", type=int, default=16, help="occurring frames in a stack (F)")
    parser.add_argument("--candidates", type=int, default=5, help="training candidates (K)")
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
        print(f"{r['device']}: ltr3o {args.size}x{args.size}, K={args.candidates}, batch "
              f"{r['batch']}, {r['steps']} timed steps: train {r['train']:.1f} samples/s "
              f"({r['train'] * args.candidates:.1f} candidates/s; {r['train_cpu']:.2f} samples "
              f"per CPU-second, the figure to trust on a shared machine), inference "
              f"{r['infer']:.1f} clips/s (8 candidates each)")


if __name__ == "__main__":
    main()
