"""Seed 001's experiment as data: F1 after 10 and 50 epochs on a 70/30 split, sample-level (as
published, identity leaks: a test subject's other clips are in training) beside subject-disjoint
(honest), one row per method.

Published (seed 001, sample-level 70/30, F1 after 10 / 50 epochs): Micro-Attention CASME II
0.900 / 0.981, MMEW 0.649 / 0.982; prototype learning CASME II 0.956 / 0.972, MMEW 0.853 / 0.981.

On the built-in synthetic set (the real databases are licence-restricted and not shipped)::

    python benchmarks/seed001.py                       # 2 CPU threads, 64×64 inputs
    python benchmarks/seed001.py --size 224 --epochs 10,50 --pretrained ~/weights/resnet18.pth

On the real databases (the seed's table: CASME II 5 classes, MMEW 6 emotions; 224×224 as
published, ImageNet weights from a local file)::

    python benchmarks/seed001.py --data-root casme2=/data/CASME2 --data-root mmew=/data/MMEW \\
        --size 224 --pretrained ~/weights/resnet18.pth --device cuda

or one cell at a time with the CLI, e.g.
``merbench run -p mmew-holdout-samples -m apex-microattention --data-root mmew=/data/MMEW
--set model.epochs=10 --set model.pretrained=PATH``. F1 is the macro F1 over the protocol's
classes on the one test split (UF1; a class absent from the test split counts as undefined, see
the report's per-class table). Runs are stored (``--store``), so a rerun only adds what is new.

Add a method family by appending ``(method, {overrides})`` to :data:`ROWS`.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import merbench
from merbench.store import Store

#: (method, overrides) — one table row per entry and split.
ROWS: list[tuple[str, dict[str, Any]]] = [
    ("apex-microattention", {}),  # the seed's input: the face-cropped apex frame
    ("ars-microattention", {}),  # the same network on the ARS motion image
    ("flow-microattention", {}),  # ... and on the TV-L1 flow image
    ("apex-prototype", {}),  # seed 001 approach 2: the prototype network, same three inputs
    ("ars-prototype", {}),
    ("flow-prototype", {}),
]
#: (dataset, subject-disjoint protocol, sample-level protocol)
SPLITS = {"synthetic": ("synthetic-holdout", "synthetic-holdout-samples"),
          "casme2": ("casme2-holdout", "casme2-holdout-samples"),
          "mmew": ("mmew-holdout", "mmew-holdout-samples")}


def size_overrides(method: str, size: int | None) -> dict[str, Any]:
    """``<step>.size`` for every step of the method that has a size."""
    if size is None:
        return {}
    return {f"{step}.size": size for step, params in merbench.method(method).steps
            if "size" in params}


def training_speed(size: int, frozen: bool, batch: int = 16, steps: int = 3) -> dict[str, Any]:
    """Training images/s of the ResNet-18 micro-attention network on one batch (augmentation,
    forward, backward, Adam step), with a frozen backbone or all layers trained."""
    import numpy as np
    import torch

    from merbench.training import make_optimizer
    from merbench_plugins.microattention import MicroAttentionResNet

    model = MicroAttentionResNet(num_classes=5, pretrained=False, freeze_backbone=frozen,
                                 device="cpu")
    module = model.build(5, (3, size, size))
    model.module_ = module
    x = torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (batch, 3, size, size))
                         .astype(np.float32))
    y = torch.arange(batch) % 5
    opt = make_optimizer("adam", [p for p in module.parameters() if p.requires_grad], 1e-3, 0.0)
    module.train()
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(
            module(model.augment(model._prepare(x, torch.device("cpu")))), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {"img_s": batch * steps / (time.perf_counter() - start), **model.param_counts_}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", action="append", default=[], metavar="NAME=DIR",
                        help="casme2=DIR and/or mmew=DIR: run on the real databases")
    parser.add_argument("--epochs", default="10,50", help="comma-separated epoch counts")
    parser.add_argument("--size", type=int, default=64,
                        help="input side in pixels (the seed: 224; the synthetic frames are "
                             "64×64, larger only upsamples them); 0 keeps the methods' sizes")
    parser.add_argument("--subjects", type=int, default=10, help="synthetic subjects")
    parser.add_argument("--pretrained", default=None, help="local ResNet-18 state dict")
    parser.add_argument("--methods", default=None, help="comma-separated subset of ROWS")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", default=str(Path("merbench-results") / "seed001.sqlite"))
    parser.add_argument("--speed", action="store_true",
                        help="only measure CPU training images/s (frozen vs all layers)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.speed:
        for frozen in (True, False):
            r = training_speed(args.size or 224, frozen)
            print(f"resnet18 micro-attention {args.size or 224}×{args.size or 224}, "
                  f"{'frozen backbone' if frozen else 'all layers trained'}: {r['trainable']:,} "
                  f"trainable / {r['frozen']:,} frozen parameters, {r['img_s']:.1f} training "
                  f"images/s on {args.threads} CPU threads (batch 16)")
        return
    roots = dict(r.split("=", 1) for r in args.data_root)
    datasets = list(roots) or ["synthetic"]
    epochs = [int(e) for e in args.epochs.split(",")]
    rows = [r for r in ROWS if args.methods is None or r[0] in args.methods.split(",")]
    size = args.size or None
    params = {"synthetic": {"subjects": args.subjects}} if "synthetic" in datasets else {}
    store = Store(args.store)
    print(f"seed 001 table: datasets {', '.join(datasets)}; epochs {epochs}; inputs "
          f"{size or 'as the methods set'}; torch threads {args.threads}; device {args.device}; "
          f"seed {args.seed}; store {args.store}")
    header = (f"{'dataset':9} {'split':31} {'method':22} "
              + " ".join(f"{'F1@' + str(e):>7}" for e in epochs)
              + f" {'UAR@' + str(epochs[-1]):>7} {'n tr/te':>8} {'s':>6}  init")
    print(header)
    print("-" * len(header))
    for dataset in datasets:
        if dataset not in SPLITS:
            parser.error(f"no seed-001 protocols for {dataset!r}; use {', '.join(SPLITS)}")
        subject_split, sample_split = SPLITS[dataset]
        for protocol, split in ((sample_split, "sample-level (leaks identity)"),
                                (subject_split, "subject-disjoint")):
            for method, overrides in rows:
                cells, started, result = [], time.time(), None
                for e in epochs:
                    sets = {**size_overrides(method, size), **overrides, "model.epochs": e}
                    if args.pretrained and "model.pretrained" in merbench.method(method).params():
                        sets["model.pretrained"] = args.pretrained
                    result = merbench.run(protocol=protocol, method=method, overrides=sets,
                                          data_roots=roots, dataset_params=params,
                                          seed=args.seed, device=args.device, store=store)
                    cells.append(result.uf1)
                info = store.fold_info(result.run_id)[0]
                print(f"{dataset:9} {split:31} {method:22} "
                      + " ".join(f"{c:7.3f}" for c in cells)
                      + f" {result.uar:7.3f} {info['n_train']:>4}/{info['n_test']:<3}"
                      f" {time.time() - started:6.0f}  {info.get('init', '-')}", flush=True)
    print("F1 = macro F1 over the protocol's classes on the test split (UF1). Published "
          "(sample-level, 10/50 epochs): Micro-Attention CASME II 0.900/0.981, MMEW 0.649/0.982; "
          "prototype learning CASME II 0.956/0.972, MMEW 0.853/0.981.")


if __name__ == "__main__":
    main()
