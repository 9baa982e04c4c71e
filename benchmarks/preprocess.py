"""Throughput of face-crop + ARS on 640×480 clips, cold and rerun (a script, not a test).

Each clip is ``--frames`` frames of scikit-image's astronaut pasted into a grey 640×480 canvas,
drifting by a fraction of a pixel per frame with a little noise, held in memory (no decoding
is timed). Prints:

- cold: dlib detection on the onset frame + one warpAffine per frame + ARS, per clip;
- the breakdown of a cold clip (detection, warping, ARS);
- rerun with precomputed landmarks on the Clip (dlib skipped: ``reuse_landmarks``);
- rerun through ``merbench.cache.Cache.get_or_compute`` (the runner's on-disk cache), keyed
  the way the runner keys a chain: sample id plus step names, versions and parameters.

    .venv/bin/python benchmarks/preprocess.py --clips 5 --frames 60 --size 320
"""
from __future__ import annotations

import argparse
import tempfile
import time
from typing import Callable

import cv2
import numpy as np
from skimage import data

from merbench import Clip
from merbench.cache import Cache
from merbench_plugins.face import FaceCrop, alignment_matrix, detect_landmarks, dlib_models, \
    warp_frames
from merbench_plugins.residual import ARS


def make_clip(index: int, n_frames: int, rng: np.random.Generator) -> Clip:
    """The astronaut's head and shoulders in a 640×480 canvas, drifting slowly."""
    face = data.astronaut()[:400, 40:460]  # 400×420
    canvas = np.full((480, 640, 3), 110, np.uint8)
    canvas[40:440, 110 + 10 * index:530 + 10 * index] = face
    frames = np.empty((n_frames, 480, 640, 3), np.uint8)
    for t in range(n_frames):
        m = np.float32([[1, 0, 0.05 * t], [0, 1, -0.03 * t]])
        frame = cv2.warpAffine(canvas, m, (640, 480), borderMode=cv2.BORDER_REPLICATE)
        noise = rng.integers(-2, 3, frame.shape, dtype=np.int16)
        frames[t] = np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    apex = n_frames // 2
    return Clip.from_array(frames, onset=0, apex=apex, offset=n_frames - 1,
                           sample_id=f"bench/s{index:02d}/c")


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def report(label: str, seconds: list[float], n_frames: int) -> None:
    per_clip = float(np.median(seconds))
    print(f"{label:<46} {per_clip * 1000:9.1f} ms/clip  {n_frames / per_clip:9.1f} frames/s  "
          f"(median of {len(seconds)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=5)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)

    rng = np.random.default_rng(0)
    clips = [make_clip(i, args.frames, rng) for i in range(args.clips)]
    crop, ars = FaceCrop(size=args.size), ARS(n_key=5)
    print(f"{args.clips} clips of {args.frames} frames 640x480 RGB, face-crop size {args.size}, "
          f"ARS n_key 5, cv2 threads {args.threads}")

    load, _ = timed(dlib_models)
    print(f"{'dlib model load (once per process)':<46} {load * 1000:9.1f} ms")

    cold, outputs = [], []
    for clip in clips:
        seconds, image = timed(lambda: ars(crop(clip)))
        cold.append(seconds)
        outputs.append(image)
    report("cold: face-crop + ARS", cold, args.frames)

    detect, warp, residual = [], [], []
    for clip in clips:
        t_detect, (points, _) = timed(lambda: detect_landmarks(clip.frames[clip.onset]))
        matrix = alignment_matrix(points, args.size, crop.margin)
        t_warp, frames = timed(lambda: warp_frames(clip.frames, matrix, args.size))
        t_ars, _ = timed(lambda: ars(clip.with_frames(frames)))
        detect.append(t_detect)
        warp.append(t_warp)
        residual.append(t_ars)
    report("  of which dlib detect + 68 landmarks", detect, args.frames)
    report(f"  of which warpAffine x {args.frames} frames", warp, args.frames)
    report("  of which ARS (6 frames, int32)", residual, args.frames)

    with_points = [c.replace(landmarks=detect_landmarks(c.frames[c.onset])[0]) for c in clips]
    rerun = []
    for clip, expected in zip(with_points, outputs):
        seconds, image = timed(lambda: ars(crop(clip)))
        assert np.array_equal(image, expected)
        rerun.append(seconds)
    report("rerun, precomputed landmarks (dlib skipped)", rerun, args.frames)

    chain = [[s.name, s.version, s.get_params()] for s in (crop, ars)]
    with tempfile.TemporaryDirectory() as root:
        cache = Cache(root)
        for clip in clips:
            cache.get_or_compute([clip.sample_id, chain], lambda: ars(crop(clip)))
        cached = []
        for clip, expected in zip(clips, outputs):
            seconds, image = timed(lambda: cache.get_or_compute([clip.sample_id, chain],
                                                                lambda: ars(crop(clip))))
            assert np.array_equal(image, expected)
            cached.append(seconds)
        assert cache.hits == len(clips) and cache.misses == len(clips)
    report("rerun, merbench.cache hit (.npy read + sha256)", cached, args.frames)


if __name__ == "__main__":
    main()
