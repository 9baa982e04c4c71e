"""Wall time of STSTNet under the full MEGC2019 composite LOSO on a CPU (a script, not a test).

Writes 442 synthetic 28×28×3 uint8 "flow images" (noise plus a class-dependent blob), one per
sample id of the official composite list (68 subjects), as ``.npy`` files with a ``folder``
index, then prints, measured interleaved (the configurations alternate, so a change in load
from other processes hits them alike; medians):

1. per epoch of one LOSO fold's training (the published batch 256) on one torch thread:
   ``TorchClassifier.fit`` (the harness, with its resumable training state) against a plain
   PyTorch loop of the same network, data, optimizer and batch, with ``torch.optim.Adam`` as
   a user writes it and with its fused kernel (which the harness uses): the second ratio is
   the harness's own overhead;
2. the full 68-fold LOSO through ``merbench.run(..., inputs=...)`` with ``--workers`` 1, 2 and
   auto at two epoch counts: the seconds per epoch of the whole LOSO (the slope) and the fixed
   cost (the intercept) per setting, extrapolated to ``--full-epochs`` (500, the published
   count).

Load (``/proc/loadavg``) and the CPUs this process may use are printed before and after.

    .venv/bin/python benchmarks/ststnet.py                      # defaults: about 10 min idle
    .venv/bin/python benchmarks/ststnet.py --reps 1 --loso-epochs 1 4 --workers 2 auto
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
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


def load() -> str:
    return (f"load average {os.getloadavg()[0]:.2f} (1 min) on "
            f"{len(os.sched_getaffinity(0))} CPUs")


def first_fold(root: Path, listed: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """The training set of the first LOSO fold (every subject but the first)."""
    classes = list(merbench.protocol("megc2019-composite").classes)
    subjects = [sid.rsplit("/", 1)[0] for sid, _ in listed]
    train = [k for k, s in enumerate(subjects) if s != subjects[0]]
    return (np.stack([np.load(root / f"{k:03d}.npy") for k in train]),
            np.array([classes.index(listed[k][1]) for k in train]))


def harness_epoch(X: np.ndarray, y: np.ndarray, epochs: int, state: Path) -> float:
    """Seconds per epoch of ``TorchClassifier.fit`` (build, training state and all)."""
    state.unlink(missing_ok=True)
    model = merbench.model("ststnet", epochs=epochs, device="cpu", seed=0,
                           train_state=str(state))
    start = time.perf_counter()
    model.fit(X, y)
    return (time.perf_counter() - start) / epochs


def plain_epoch(X: np.ndarray, y: np.ndarray, epochs: int, fused: bool = False) -> float:
    """Seconds per epoch of the loop a user would write: the same network (the plugin's
    module), float inputs prepared once, a fresh permutation per epoch, batches of 256,
    cross-entropy and Adam with the same learning rate (``fused``: its fused kernel), in the
    memory format the harness trains it in (channels_last, ``STSTNet.cpu_channels_last``)."""
    from merbench_plugins.ststnet import STSTNet, module_class

    torch.manual_seed(0)
    start = time.perf_counter()
    fmt = torch.channels_last if STSTNet.cpu_channels_last else torch.contiguous_format
    net = module_class()(3, 3, (28, 28)).to(memory_format=fmt)
    opt = torch.optim.Adam(net.parameters(), lr=5e-5, **({"fused": True} if fused else {}))
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt = torch.from_numpy(X).permute(0, 3, 1, 2).float().contiguous(memory_format=fmt)
    yt = torch.from_numpy(y)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(yt))
        for i in range(0, len(yt), 256):
            idx = order[i:i + 256]
            loss = loss_fn(net(Xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (time.perf_counter() - start) / epochs


def loso(root: Path, epochs: int, workers: str) -> tuple[float, float]:
    """(wall seconds, UF1) of the 68-fold LOSO at ``epochs`` with ``workers``."""
    store = Store(root / f"runs-{workers}-{epochs}-{time.time_ns()}.sqlite")
    start = time.perf_counter()
    result = merbench.run(protocol="megc2019-composite", method="ststnet", inputs=str(root),
                          overrides={"model.epochs": epochs}, workers=workers, device="cpu",
                          store=store, cache_dir=str(root / "cache"), rerun=True)
    return time.perf_counter() - start, result.uf1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each measurement")
    parser.add_argument("--epochs", type=int, default=100,
                        help="epochs per harness / plain-loop measurement")
    parser.add_argument("--loso-epochs", type=int, nargs=2, default=(2, 12), metavar=("E1", "E2"),
                        help="the two epoch counts of the LOSO runs (slope and intercept)")
    parser.add_argument("--workers", nargs="+", default=["1", "2", "auto"])
    parser.add_argument("--full-epochs", type=int, default=500)
    parser.add_argument("--skip-loso", action="store_true", help="part 1 only")
    args = parser.parse_args()
    from merbench.executors import physical_cores

    print(f"torch {torch.__version__}, {physical_cores()} physical cores; {load()}")
    with tempfile.TemporaryDirectory(prefix="bench-ststnet-") as tmp:
        root = Path(tmp)
        listed = write_inputs(root)
        X, y = first_fold(root, listed)
        torch.set_num_threads(1)
        harness_epoch(X, y, 2, root / "state.pt")  # warm-up (imports, allocator)
        plain_epoch(X, y, 2)
        runs: dict[str, list[float]] = {"harness": [], "plain": [], "fused": []}
        for _ in range(args.reps):
            runs["harness"].append(harness_epoch(X, y, args.epochs, root / "state.pt"))
            runs["plain"].append(plain_epoch(X, y, args.epochs))
            runs["fused"].append(plain_epoch(X, y, args.epochs, fused=True))
        h, p, f = (statistics.median(runs[k]) * 1000 for k in ("harness", "plain", "fused"))
        print(f"1. one fold ({len(y)} training samples, batch 256), 1 thread, {args.epochs} "
              f"epochs × {args.reps}, ms/epoch: harness {h:.1f}, plain loop {p:.1f} (Adam), "
              f"{f:.1f} (fused Adam); harness/plain {h / p:.3f}, harness/plain-fused "
              f"{h / f:.3f}  [{load()}]", flush=True)
        cores = physical_cores()
        print(f"   full LOSO from this (68 folds × {args.full_epochs} epochs, one fold per core "
              f"on {cores} cores, folds scaling perfectly): "
              f"{68 * args.full_epochs * h / 1000 / cores / 60:.1f} min", flush=True)
        if args.skip_loso:
            return
        e1, e2 = args.loso_epochs
        walls: dict[tuple[str, int], list[float]] = {}
        uf1 = {}
        for _ in range(args.reps):
            for workers in args.workers:
                for epochs in (e1, e2):
                    wall, uf1[workers, epochs] = loso(root, epochs, workers)
                    walls.setdefault((workers, epochs), []).append(wall)
                    print(f"   LOSO workers={workers} epochs={epochs}: {wall:.1f} s  [{load()}]",
                          flush=True)
        print(f"2. full LOSO (68 folds, 442 samples), medians of {args.reps}; extrapolated to "
              f"{args.full_epochs} epochs = intercept + {args.full_epochs} × slope:")
        for workers in args.workers:
            w1, w2 = (statistics.median(walls[workers, e]) for e in (e1, e2))
            slope = (w2 - w1) / (e2 - e1)
            fixed = w1 - e1 * slope
            full = fixed + args.full_epochs * slope
            print(f"   --workers {workers:>4}: {w1:.1f} s at {e1} epochs, {w2:.1f} s at {e2}; "
                  f"{slope:.2f} s per epoch of the LOSO + {fixed:.1f} s fixed -> "
                  f"{full / 60:.1f} min for {args.full_epochs} epochs "
                  f"(UF1 at {e2} epochs {uf1[workers, e2]:.3f})")
        print(f"   [{load()}]")


if __name__ == "__main__":
    main()
