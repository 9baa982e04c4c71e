"""Wall time of STSTNet under the full MEGC2019 composite LOSO on a CPU (a script, not a test).

Writes 442 synthetic 28×28×3 uint8 "flow images" (noise plus a class-dependent blob), one per
sample id of the official composite list (68 subjects), as ``.npy`` files with a ``folder``
index, then prints:

- one fold (the first test subject) fitted in this process with one torch thread;
- the full 68-fold LOSO through ``merbench.run(..., inputs=...)`` with ``--workers`` worker
  processes (the runner gives each ``cpu_count // workers`` torch threads): wall time and the
  per-fold seconds the runner recorded.

    .venv/bin/python benchmarks/ststnet.py --epochs 500 --workers 2
"""
from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import merbench
from merbench.store import Store

PLACES = {"negative": (4, 10), "positive": (17, 3), "surprise": (17, 17)}


def write_inputs(root: Path, seed: int = 0) -> list[tuple[str, str]]:
    """One synthetic flow image per composite sample; returns the (sample id, label) list."""
    rng = np.random.default_rng(seed)
    listed = list(merbench.protocol("megc2019-composite").sample_list)
    with open(root / "index.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["dataset", "subject", "clip", "label", "path"])
        for k, (sid, label) in enumerate(listed):
            dataset, subject, clip = sid.split("/")
            image = rng.integers(0, 90, (28, 28, 3)).astype(np.uint8)
            r, c = (p + rng.integers(-2, 3) for p in PLACES[label])
            image[r:r + 7, c:c + 7] = rng.integers(160, 256, 3)
            np.save(root / f"{k:03d}.npy", image)
            out.writerow([dataset, subject, clip, label, f"{k:03d}.npy"])
    return listed


def one_fold(root: Path, listed: list[tuple[str, str]], epochs: int) -> tuple[float, int]:
    """Fit one LOSO fold in this process (1 thread): (seconds, training samples)."""
    classes = list(merbench.protocol("megc2019-composite").classes)
    subjects = [sid.rsplit("/", 1)[0] for sid, _ in listed]
    test = subjects[0]
    train = [k for k, s in enumerate(subjects) if s != test]
    X = np.stack([np.load(root / f"{k:03d}.npy") for k in train])
    y = np.array([classes.index(listed[k][1]) for k in train])
    model = merbench.model("ststnet", epochs=epochs, device="cpu", seed=0)
    torch.set_num_threads(1)
    start = time.perf_counter()
    model.fit(X, y)
    return time.perf_counter() - start, len(train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-loso", action="store_true", help="time one fold only")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-ststnet-") as tmp:
        root = Path(tmp)
        listed = write_inputs(root)
        seconds, n_train = one_fold(root, listed, args.epochs)
        print(f"one fold, in process, 1 thread: {n_train} training samples, {args.epochs} epochs: "
              f"{seconds:.1f} s ({seconds / args.epochs * 1000:.1f} ms/epoch)")
        if args.skip_loso:
            return
        store = Store(root / "runs.sqlite")
        start = time.perf_counter()
        result = merbench.run(protocol="megc2019-composite", method="ststnet", inputs=str(root),
                              overrides={"model.epochs": args.epochs}, workers=args.workers,
                              device="cpu", store=store, cache_dir=str(root / "cache"))
        wall = time.perf_counter() - start
        folds = [info["seconds"] for info in store.fold_info(result.run_id).values()]
        print(f"full LOSO ({len(folds)} folds, {len(result.predictions)} samples), {args.epochs} "
              f"epochs, {args.workers} workers: {wall:.1f} s wall = {wall / 60:.1f} min")
        print(f"per fold (recorded in the workers): median {np.median(folds):.1f} s, "
              f"min {min(folds):.1f} s, max {max(folds):.1f} s, sum {sum(folds):.0f} s")
        print(f"synthetic-data sanity: UF1 {result.uf1:.3f}, UAR {result.uar:.3f} "
              f"(load average now {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
