"""STSTNet training on the CPU: the layout and dropout mask it trains with (channels_last,
``rand_like`` mask) against the default layout with ``nn.Dropout``'s ``bernoulli_`` mask,
interleaved in one process (A, B, A, B, ...), one torch thread, medians.

    .venv/bin/python benchmarks/ststnet_layout.py            # ~1 min idle
    .venv/bin/python benchmarks/ststnet_layout.py --reps 11 --epochs 50
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from merbench_plugins import ststnet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)  # a composite LOSO fold's size: 439 samples of 28×28×3
    X = rng.integers(0, 255, (439, 28, 28, 3)).astype(np.uint8)
    y = rng.integers(0, 3, 439)
    module = ststnet.module_class()
    rand_like_drop = module.drop

    def bernoulli_drop(self: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
        return F.dropout(h, self.dropout.p, self.training)

    def epoch_ms(current: bool) -> float:
        ststnet.STSTNet.cpu_channels_last = current
        module.drop = rand_like_drop if current else bernoulli_drop
        start = time.perf_counter()
        ststnet.STSTNet(num_classes=3, epochs=args.epochs, device="cpu").fit(X, y)
        return (time.perf_counter() - start) / args.epochs * 1000

    print(f"load average {os.getloadavg()[0]:.2f} (1 min)")
    old, new = [], []
    for _ in range(args.reps):
        old.append(epoch_ms(False))
        new.append(epoch_ms(True))
    ratio = statistics.median(b / a for a, b in zip(old, new))
    print(f"STSTNet ms/epoch (439 samples, batch 256, 1 thread, {args.epochs} epochs × "
          f"{args.reps}): default layout + bernoulli_ {statistics.median(old):.1f}, "
          f"channels_last + rand_like {statistics.median(new):.1f}; ratio {ratio:.3f}")
    print(f"load average {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
