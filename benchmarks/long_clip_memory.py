"""Peak memory of preprocessing one long clip, and of `merbench predict` on it (issue 17,
"Memory": frames are read lazily, only those a method's steps ask for).

Writes a long clip (default 2,000 frames of 640x480: the astronaut's face on a grey background,
a little noise per frame) as JPEG frames, and with --video as an MJPEG AVI, in a temporary
folder. Each measurement runs in a child process that prints its own peak RSS:

- ``preprocess METHOD``: ``Method.named(METHOD).preprocess(load_clip(...))``, no torch import:
  diff-logreg reads 2 frames; lbptop-svm streams every frame through the face crop into the
  cropped grey span; ars-cropnet's steps read the onset and key frames (landmarks from the
  onset frame);
- ``predict``: ``merbench predict`` with a diff-logreg checkpoint trained on synthetic data
  (the interpreter with torch imported is most of it: compare with the 12-frame clip).

The same numbers for older code: put its packages first on PYTHONPATH (``merbench``,
``merbench_plugins`` = plugins/, ``merbench_protocols``, ``merbench_leaderboard``).

    .venv/bin/python benchmarks/long_clip_memory.py [--frames 2000] [--video]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_REPORT = "\nfinally:\n    import resource\n    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, " \
          "file=sys.stderr)"
CLI = [sys.executable, "-c", "import sys\nfrom merbench.cli import main\ntry:\n"
       "    main(sys.argv[1:])" + _REPORT]
PREPROCESS = [sys.executable, "-c", "import sys\ntry:\n"
              "    from merbench.deploy import clip_sample\n"
              "    from merbench.methods import Method\n"
              "    from merbench.video import load_clip\n"
              "    x = Method.named(sys.argv[1], {}).preprocess(load_clip(clip_sample(sys.argv[2])))\n"
              "    print(x.shape, file=sys.stderr)" + _REPORT]


def write_clip(folder: Path, n: int, video: bool) -> list[tuple[str, Path]]:
    import cv2
    from skimage import data

    face = cv2.resize(data.astronaut()[:, :, ::-1], (400, 400), interpolation=cv2.INTER_AREA)
    base = np.full((480, 640, 3), 128, np.uint8)
    base[40:440, 120:520] = face
    rng = np.random.default_rng(0)
    frames_dir, short = folder / "frames", folder / "short"
    frames_dir.mkdir()
    short.mkdir()
    writer = cv2.VideoWriter(str(folder / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25,
                             (640, 480)) if video else None
    noisy = [np.clip(base.astype(np.int16) + rng.integers(-3, 4, base.shape), 0,
                     255).astype(np.uint8) for _ in range(8)]
    for t in range(n):
        frame = noisy[t % len(noisy)]
        cv2.imwrite(str(frames_dir / f"img{t + 1:05d}.jpg"), frame)
        if t < 12:
            cv2.imwrite(str(short / f"img{t + 1:05d}.jpg"), frame)
        if writer is not None:
            writer.write(frame)
    if writer is not None:
        writer.release()
    return [("12 frames", short), (f"{n} jpg", frames_dir)] + \
        ([(f"{n} avi", folder / "clip.avi")] if video else [])


def measure(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS of the child in MB, seconds)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = proc.stderr.strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].isdigit():
        sys.exit(f"{' '.join(cmd[3:])} failed:\n{proc.stderr}")
    return int(lines[-1]) / 1024.0, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--video", action="store_true", help="also read the clip from an AVI")
    parser.add_argument("--methods", nargs="+",
                        default=["diff-logreg", "lbptop-svm", "ars-cropnet"])
    parser.add_argument("--no-predict", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="merbench-bench-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        clips = write_clip(folder, args.frames, args.video)
        clip_mb = args.frames * 480 * 640 * 3 / 2**20
        print(f"clip: {args.frames} frames 640x480 RGB = {clip_mb:.0f} MB decoded "
              f"(written in {time.perf_counter() - t0:.1f} s)")
        for method in args.methods:
            for kind, path in clips:
                peak, seconds = measure(PREPROCESS + [method, str(path)])
                print(f"preprocess {method:12s} {kind:10s}: peak RSS {peak:6.0f} MB, "
                      f"{seconds:5.1f} s")
        if args.no_predict:
            return
        model = folder / "model.pt"
        subprocess.run(CLI[:3] + ["train", "-m", "diff-logreg", "-d", "synthetic", "--param",
                                  "subjects=3", "--param", "size=64", "-o", str(model)],
                       check=True, capture_output=True)
        for kind, path in clips:
            peak, seconds = measure(CLI + ["predict", str(model), str(path)])
            print(f"predict    diff-logreg  {kind:10s}: peak RSS {peak:6.0f} MB, {seconds:5.1f} s")


if __name__ == "__main__":
    main()
