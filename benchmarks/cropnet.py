"""Throughput and memory of CropNet at the seed's size (320×320 inputs, 10 crops of 160×160,
rexnet_100).

1. Steps: training images/s (augmentation + forward + backward + AdamP step, the per-batch
   work of ``TorchClassifier.fit``) and inference images/s (``predict_proba``: one image = one
   clip's ARS image), on the CPU (a short batch) and on the GPU when one is present (AMP and
   channels_last as in training), with the peak GPU memory.
2. Fit: one epoch of ``CropNet.fit`` at the default batch (32) on 32 images, each device
   in its own process: the micro-batch the memory budget chose (``MERBENCH_MEMORY_GB``), the
   peak memory (RSS on the CPU, ``torch.cuda.max_memory_allocated`` on the GPU), images/s and
   the full MEGC2019 composite LOSO extrapolated from it (68 folds, 442 samples, 30 epochs).

    python benchmarks/cropnet.py                               # both, CPU and CUDA if present
    python benchmarks/cropnet.py --part steps --device cpu --threads 2 --cpu-steps 3
    MERBENCH_MEMORY_GB=4 python benchmarks/cropnet.py --part fit --device cpu
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from merbench.training import make_optimizer, resolve_device
from merbench_plugins.cropnet import CropNet

#: MEGC2019 composite LOSO: 68 folds of 442 samples; CropNet's default epochs.
FOLDS, SAMPLES, EPOCHS = 68, 442, 30


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
        torch.cuda.reset_peak_memory_stats(device)
    model.module_ = module
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.integers(0, 256, (batch, 3, args.size, args.size), dtype=np.uint8))
    y = torch.from_numpy(rng.integers(0, args.classes, batch)).to(device)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=model.label_smoothing)
    opt = make_optimizer(model.optimizer, module.parameters(), model.lr, model.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and model.amp
                                  and not torch.cuda.is_bf16_supported())
    module.train()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        xb = model.augment(model._prepare(X, device))
        with model._autocast(device):
            loss = loss_fn(module(xb), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    _sync(device)
    train = batch * steps / (time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None

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
            "train_img_s": train, "infer_img_s": infer, "peak_gb": peak}


def fit_once(device_name: str, args: argparse.Namespace) -> dict:
    """One epoch of ``CropNet.fit`` at the default batch on 32 images (run in a fresh process,
    so the peak RSS is this training's)."""
    device = resolve_device(device_name)
    model = CropNet(num_classes=args.classes, size=args.size, crop=args.size // 2,
                    trunk=args.trunk, epochs=1, device=str(device), pretrained=False)
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (model.batch_size, args.size, args.size, 3), dtype=np.uint8)
    y = np.arange(model.batch_size) % args.classes
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    model.fit(X, y)
    _sync(device)
    seconds = time.perf_counter() - start
    train = len(X) / seconds
    images = np.repeat(X, 2, axis=0)
    start = time.perf_counter()
    model.predict_proba(images)
    _sync(device)
    infer = len(images) / (time.perf_counter() - start)
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "batch": model.batch_size, "micro_batch": model.micro_batch_, "seconds": seconds,
           "train_img_s": train, "infer_img_s": infer,
           "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}
    if device.type == "cuda":
        out["peak_gpu_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return out


def extrapolate(train_img_s: float, infer_img_s: float) -> float:
    """Seconds of the full composite LOSO: every fold trains EPOCHS epochs on the samples of
    the other subjects (67/68 of them on average) and predicts its own."""
    train = FOLDS * EPOCHS * SAMPLES * (FOLDS - 1) / FOLDS / train_img_s
    return train + SAMPLES / infer_img_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="all", help="cpu, cuda or all (cpu + cuda if present)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's)")
    parser.add_argument("--cpu-batch", type=int, default=4)
    parser.add_argument("--cpu-steps", type=int, default=3)
    parser.add_argument("--gpu-batch", type=int, default=32)
    parser.add_argument("--gpu-steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--trunk", default="rexnet_100")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--part", choices=("steps", "fit", "all"), default="all",
                        help="steps: step throughput; fit: one epoch of CropNet.fit at the "
                        "default batch (peak memory, micro-batch)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [d for d in ("cpu", "cuda") if args.device in ("all", d)
               and (d == "cpu" or torch.cuda.is_available())]
    load = f"load average {os.getloadavg()[0]:.2f} on {len(os.sched_getaffinity(0))} CPUs"
    if args.child:
        print(json.dumps(fit_once(args.child, args)))
        return
    if args.part in ("fit", "all"):
        for device in devices:
            cmd = [sys.executable, __file__, "--child", device, "--size", str(args.size),
                   "--trunk", args.trunk, "--classes", str(args.classes),
                   "--threads", str(args.threads)]
            r = json.loads(subprocess.run(cmd, capture_output=True, text=True,
                                          check=True).stdout.splitlines()[-1])
            peak = (f"peak GPU memory {r['peak_gpu_gb']:.2f} GB, " if "peak_gpu_gb" in r
                    else "") + f"peak RSS {r['peak_rss_gb']:.2f} GB"
            full = extrapolate(r["train_img_s"], r["infer_img_s"])
            print(f"{r['device']}: CropNet.fit, batch {r['batch']} in micro-batches of "
                  f"{r['micro_batch']} (MERBENCH_MEMORY_GB="
                  f"{os.environ.get('MERBENCH_MEMORY_GB', 'unset')}): {r['seconds']:.1f} s, "
                  f"train {r['train_img_s']:.2f} images/s, inference {r['infer_img_s']:.2f} "
                  f"images/s; {peak}; full MEGC2019 LOSO ({FOLDS} folds × {EPOCHS} epochs) "
                  f"≈ {full / 3600:.1f} h  [{load}]", flush=True)
    if args.part == "fit":
        return
    runs = []
    if "cpu" in devices:
        runs.append(("cpu", args.cpu_batch, args.cpu_steps, 1))
    if "cuda" in devices:
        torch.backends.cudnn.benchmark = True
        runs.append(("cuda", args.gpu_batch, args.gpu_steps, 3))
    for device, batch, steps, warmup in runs:
        r = bench(device, batch, steps, warmup, args)
        peak = f", peak GPU memory {r['peak_gb']:.2f} GB" if r["peak_gb"] is not None else ""
        print(f"{r['device']}: cropnet {args.trunk} {args.size}x{args.size} "
              f"({r['params']:,} params), batch {r['batch']}, {r['steps']} timed steps: "
              f"train {r['train_img_s']:.1f} images/s, inference {r['infer_img_s']:.1f} "
              f"clips/s (images/s){peak}; full MEGC2019 LOSO ≈ "
              f"{extrapolate(r['train_img_s'], r['infer_img_s']) / 3600:.1f} h  [{load}]",
              flush=True)


if __name__ == "__main__":
    main()
