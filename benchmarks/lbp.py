"""Time LBP-TOP (and LBP-SIP) per clip on one core.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lbp.py [--repeat 20]

Clips are 128x128 grey crops of skimage's astronaut face with a small moving deformation,
the size the lbptop-svm method feeds the step. Target: under 0.1 s per clip. Reports the best
and the median over the repeats, wall-clock and CPU time (CPU time is the fairer number on a
shared machine).
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy is imported

import functools
import statistics
import time

import cv2
import numpy as np
from skimage import data
from threadpoolctl import threadpool_limits

from merbench_plugins.lbp import lbp_sip, lbp_top


def make_clip(n_frames: int, size: int = 128) -> np.ndarray:
    """A face crop whose lower half bends up and down over time (a smile-like warp)."""
    grey = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)[40:40 + size, 160:160 + size]
    grey = grey.astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = []
    for t in range(n_frames):
        amp = 3.0 * np.sin(np.pi * t / max(1, n_frames - 1))
        dy = amp * np.exp(-((yy - 0.75 * size) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 6) ** 2))
        frames.append(cv2.remap(grey, xx, (yy + dy).astype(np.float32), cv2.INTER_LINEAR))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def timed(fn, repeat: int) -> tuple[list[float], list[float]]:
    fn()  # warm-up: lookup tables, first allocations
    wall, cpu = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    cases = [
        ("LBP-TOP 60x128x128, blocks 8x8x1, P=8, R=(1,1,4)", make_clip(60),
         lambda v: lbp_top(v, (8, 8, 8), (1, 1, 4), (8, 8, 1))),
        ("LBP-TOP 10x128x128, blocks 8x8x1, P=8, R=(3,3,3)", make_clip(10),
         lambda v: lbp_top(v, (8, 8, 8), (3, 3, 3), (8, 8, 1))),
        ("LBP-SIP 60x128x128, blocks 8x8x1, R=1, R_t=1", make_clip(60),
         lambda v: lbp_sip(v, 1, 1, (8, 8, 1))),
    ]
    with threadpool_limits(limits=1):
        for name, clip, fn in cases:
            wall, cpu = timed(functools.partial(fn, clip), args.repeat)
            print(f"{name}: wall best {min(wall) * 1e3:.1f} ms, median "
                  f"{statistics.median(wall) * 1e3:.1f} ms; CPU best {min(cpu) * 1e3:.1f} ms, "
                  f"median {statistics.median(cpu) * 1e3:.1f} ms  ({args.repeat} runs)")


if __name__ == "__main__":
    main()
