"""Which deep models train folds side by side (``parallel_folds``): threads vs processes.

For each model, one training epoch through ``TorchClassifier.fit`` on synthetic inputs of the
model's size, timed three ways, interleaved (A, B, C, A, B, C, ...) so that changing load
from other processes hits all three alike; medians are printed:

- A: one process, 1 torch thread;
- B: one process, one thread per physical core;
- C: one process per physical core, 1 thread each, running at once (the time of one epoch
  is the wall time divided by the number of processes: the throughput of fold-parallel runs).

A model gains from fold-parallel training when C < B. Load is printed before and after.

    .venv/bin/python benchmarks/threads.py                       # ststnet, dual-inception
    .venv/bin/python benchmarks/threads.py --models cropnet --reps 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

MODELS = {  # name: (input shape, training samples, model parameters)
    "ststnet": ((28, 28, 3), 374, {}),
    "dual-inception": ((28, 28, 3), 374, {"val_fraction": 0.0}),
    # CropNet at half its size (160×160, crops of 80): its full size takes minutes per step
    "cropnet": ((160, 160, 3), 8, {"size": 160, "crop": 80, "pretrained": False,
                                    "batch_size": 8}),
}

CHILD = r"""
import json, sys, time
import numpy as np, torch
import merbench
name, shape, n, params, epochs, threads = json.loads(sys.argv[1])
torch.set_num_threads(threads)
rng = np.random.default_rng(0)
X = rng.integers(0, 256, (n, *shape)).astype(np.uint8)
y = np.arange(n) % 3
merbench.model(name, epochs=1, device="cpu", **params).fit(X[:16], y[:16])  # warm-up
start = time.perf_counter()
merbench.model(name, epochs=epochs, device="cpu", **params).fit(X, y)
print(json.dumps((time.perf_counter() - start) / epochs))
"""


def load() -> str:
    return f"load average {os.getloadavg()[0]:.2f} on {len(os.sched_getaffinity(0))} CPUs"


def run(name: str, epochs: int, threads: int, copies: int) -> float:
    """Seconds per epoch: one process, or ``copies`` at once (wall time / copies)."""
    shape, n, params = MODELS[name]
    arg = json.dumps([name, shape, n, params, epochs, threads])
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, arg], stdout=subprocess.PIPE,
                              text=True) for _ in range(copies)]
    # each copy times its own epochs (not its start-up) while the others run beside it
    return statistics.mean(float(p.communicate()[0]) for p in procs) / copies


def main() -> None:
    from merbench.executors import physical_cores

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ststnet", "dual-inception"],
                        choices=sorted(MODELS))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    cores = physical_cores()
    print(f"{cores} physical cores; {load()}")
    for name in args.models:
        epochs = 1 if name == "cropnet" else args.epochs
        times: dict[str, list[float]] = {"A": [], "B": [], "C": []}
        for _ in range(args.reps):
            times["A"].append(run(name, epochs, 1, 1))
            times["B"].append(run(name, epochs, cores, 1))
            times["C"].append(run(name, epochs, 1, cores))
        a, b, c = (statistics.median(times[k]) * 1000 for k in "ABC")
        print(f"{name}: ms per epoch (median of {args.reps}): A 1 process × 1 thread {a:.0f}, "
              f"B 1 process × {cores} threads {b:.0f}, C {cores} processes × 1 thread "
              f"{c:.0f} per epoch -> {'fold-parallel' if c < b else 'threads'} "
              f"(C/B {c / b:.2f}); {load()}", flush=True)


if __name__ == "__main__":
    main()
