"""The same LOSO runs on the three executors: serial, local processes, Ray (a local instance).

Two workloads, each run under every executor with identical settings:

- ``sklearn``: the synthetic LOSO (``--subjects`` folds) with ``diff-logreg`` (apex-difference
  images, logistic regression): tiny folds, so the executor's own cost shows;
- ``deep``: STSTNet on precomputed 28x28x3 inputs (noise plus a class-dependent blob; ``--subjects``
  folds, ``--epochs`` epochs): folds of a few seconds, as in a real deep-model LOSO.

For each executor it prints the wall time of a cold run (executor started for it: worker
processes spawned, or the Ray instance started, and their imports) and of a warm run (the same
executor again, ``rerun``), the sum of the per-fold seconds the runner recorded, and the overhead
per fold: ``(wall x slots - sum of fold seconds) / folds``, the slot-seconds each fold costs
besides its own fitting (planning, preprocessing or cache reads, shipping inputs, start-up,
idle slots at the end). Every fold uses one torch thread, so all executors must give identical
probabilities, which the script checks.

    .venv/bin/python benchmarks/executors.py --workers 2 --subjects 8 --epochs 20
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import merbench
from merbench.executors import Executor, make_executor
from merbench.store import Store

PLACES = {"negative": (4, 10), "positive": (17, 3), "surprise": (17, 17)}


def write_inputs(root: Path, subjects: int, clips: int = 3, seed: int = 0) -> Path:
    """28x28x3 'flow images' as .npy under synthetic ids, indexed for the folder dataset."""
    rng = np.random.default_rng(seed)
    index = root / "index.csv"
    with open(index, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["dataset", "subject", "clip", "label", "path"])
        for s in range(1, subjects + 1):
            for label, (r, c) in PLACES.items():
                for k in range(clips):
                    image = rng.integers(0, 90, (28, 28, 3)).astype(np.uint8)
                    dr, dc = rng.integers(-2, 3, 2)
                    image[r + dr:r + dr + 7, c + dc:c + dc + 7] = rng.integers(160, 256, 3)
                    name = f"s{s:02d}_{label[:3]}_{k}.npy"
                    np.save(root / name, image)
                    out.writerow(["synthetic", f"s{s:02d}", f"{label[:3]}_{k:02d}", label, name])
    return index


def timed(executor: Executor, store: Store, kwargs: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    result = merbench.run(executor=executor, store=store, rerun=True, **kwargs)
    wall = time.perf_counter() - start
    info = store.fold_info(result.run_id)
    probas = {p.sample_id: p.proba for p in store.predictions(result.run_id)}
    return {"wall": wall, "fold_s": sum(i["seconds"] for i in info.values()),
            "folds": len(info), "probas": probas, "uf1": result.uf1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="processes / Ray CPUs")
    parser.add_argument("--subjects", type=int, default=8, help="LOSO folds per workload")
    parser.add_argument("--epochs", type=int, default=20, help="STSTNet epochs per fold")
    parser.add_argument("--only", choices=["sklearn", "deep"], default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)  # the serial executor's folds: one thread, like every worker's
    import ray

    print(f"torch {torch.__version__}, ray {ray.__version__}, {os.cpu_count()} CPUs, load "
          f"average {os.getloadavg()[0]:.2f}, {args.workers} workers")
    with tempfile.TemporaryDirectory(prefix="bench-executors-") as tmp:
        root = Path(tmp)
        index = write_inputs(root, args.subjects)
        workloads = {
            "sklearn": dict(protocol="synthetic-loso", method="diff-logreg",
                            dataset_params={"synthetic": {"subjects": args.subjects}},
                            cache_dir=str(root / "cache")),
            "deep": dict(protocol="synthetic-loso", method="ststnet", inputs=str(index),
                         overrides={"model.epochs": args.epochs}, cache_dir=str(root / "cache")),
        }
        if args.only:
            workloads = {args.only: workloads[args.only]}
        merbench.run(store=Store(root / "warm.sqlite"), **workloads.get(
            "sklearn", workloads.get("deep")))  # fills the preprocessing cache: not timed
        rows = []
        for name, kwargs in workloads.items():
            reference = None
            for label, factory, slots in (
                    ("serial", lambda: make_executor(1), 1),
                    (f"processes ({args.workers})", lambda: make_executor(args.workers),
                     args.workers),
                    (f"ray local ({args.workers} CPUs)",
                     lambda: make_executor(args.workers, "ray"), args.workers)):
                store = Store(root / f"{name}-{label.split()[0]}.sqlite")
                start = time.perf_counter()
                with factory() as executor:
                    cold = timed(executor, store, kwargs)
                    cold["wall"] = time.perf_counter() - start  # with the executor's start
                    warm = timed(executor, store, kwargs)
                for run in (cold, warm):
                    if reference is None:
                        reference = run["probas"]
                    run["same"] = run["probas"] == reference
                rows.append((name, label, slots, cold, warm))
                print(f"{name:>7} {label:<22} cold {cold['wall']:6.1f} s  warm {warm['wall']:6.1f} s"
                      f"  folds {warm['folds']}  fold-seconds {warm['fold_s']:6.1f}  overhead/fold "
                      f"cold {(cold['wall'] * slots - cold['fold_s']) / cold['folds']:5.2f} s, "
                      f"warm {(warm['wall'] * slots - warm['fold_s']) / warm['folds']:5.2f} s  "
                      f"UF1 {warm['uf1']:.4f}  identical to serial: "
                      f"{'yes' if cold['same'] and warm['same'] else 'NO'}", flush=True)
        if not all(c["same"] and w["same"] for *_, c, w in rows):
            raise SystemExit("predictions differ between executors")


if __name__ == "__main__":
    main()
