"""The ``synthetic`` dataset: seeded micro-expressions on scikit-image's astronaut face.

Nothing to download (the astronaut photo is public domain and ships with scikit-image), so the
demo, the tests and any new plugin can run end to end. Each subject is the same face seen with
its own appearance (scale, shift, small rotation, colour gains, mirror, a fixed noise texture);
each class is a localized deformation of sub-pixel to ~2 px around the brows, nose or lip
corners that rises from onset to apex and decays to offset (200 fps timing); every frame adds
head jitter, illumination flicker and sensor noise. Appearance alone therefore says little about
the class, while onset -> apex motion says a lot: a motion-aware method clearly beats an
appearance-only one (at the defaults, LOSO UF1 about 0.78 for apex - onset differences against
0.59 for the apex frame alone, with chance at 1/3; see `merbench demo`).

[ours] A clip's frames are rendered once and kept in the merbench cache folder
(``synthetic/``, keyed by the generator version, every parameter and the sample), so the
methods of a demo or a grid, and every worker process, read them instead of rendering again.
"""
from __future__ import annotations

import hashlib
import io
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from merbench import Clip, Dataset, Sample, hookimpl
from merbench.errors import ConfigError

GENERATOR_VERSION = "1"

log = logging.getLogger(__name__)

# Face landmarks of the astronaut photo (dlib, 68 points), normalised to the face box
# x 150..300, y 50..200 used as the synthetic face crop.
_BOX = (150.0, 50.0, 150.0)  # x0, y0, side in astronaut pixels
_BROW_L, _BROW_R = (0.33, 0.27), (0.67, 0.29)
_BROW_IN_L, _BROW_IN_R = (0.42, 0.28), (0.58, 0.29)
_NOSE_L, _NOSE_R = (0.43, 0.47), (0.57, 0.47)
_LIP_L, _LIP_R = (0.34, 0.60), (0.64, 0.61)
_UPPER_LIP = (0.49, 0.57)

# class -> list of (centre, displacement direction (dx, dy) in units of the amplitude)
ACTIONS: dict[str, list[tuple[tuple[float, float], tuple[float, float]]]] = {
    # brow lowering (AU4) + nose wrinkle (AU9)
    "negative": [(_BROW_IN_L, (0.5, 1.0)), (_BROW_IN_R, (-0.5, 1.0)),
                 (_NOSE_L, (0.2, -0.8)), (_NOSE_R, (-0.2, -0.8))],
    # lip-corner pull (AU12)
    "positive": [(_LIP_L, (-1.0, -0.6)), (_LIP_R, (1.0, -0.6))],
    # brow raise (AU1+2)
    "surprise": [(_BROW_L, (0.0, -1.0)), (_BROW_R, (0.0, -1.0)),
                 (_BROW_IN_L, (0.0, -0.8)), (_BROW_IN_R, (0.0, -0.8))],
    # five-class extras
    "anger": [(_BROW_IN_L, (0.6, 1.0)), (_BROW_IN_R, (-0.6, 1.0))],
    "disgust": [(_NOSE_L, (0.2, -1.0)), (_NOSE_R, (-0.2, -1.0)), (_UPPER_LIP, (0.0, -0.8))],
    "sadness": [(_LIP_L, (0.0, 1.0)), (_LIP_R, (0.0, 1.0)), (_BROW_IN_L, (0.0, -0.7)),
                (_BROW_IN_R, (0.0, -0.7))],
}
ACTIONS["happiness"] = ACTIONS["positive"]
CLASS_SETS = {3: ("negative", "positive", "surprise"),
              5: ("anger", "disgust", "happiness", "sadness", "surprise")}
MEGC2019 = {"negative": "negative", "positive": "positive", "surprise": "surprise",
            "anger": "negative", "disgust": "negative", "sadness": "negative",
            "happiness": "positive"}


@lru_cache(maxsize=2)
def astronaut(mirrored: bool = False) -> np.ndarray:
    from skimage import data

    image = data.astronaut()
    return np.ascontiguousarray(image[:, ::-1] if mirrored else image)


def _rng(*parts: Any) -> np.random.Generator:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def displacement(label: str, size: int, amplitude: float, sigma: float = 0.06) -> np.ndarray:
    """The apex motion field (H, W, 2) in output pixels for one class."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    field = np.zeros((size, size, 2), dtype=np.float32)
    for (cx, cy), (dx, dy) in ACTIONS[label]:
        bump = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
        field[..., 0] += amplitude * dx * bump
        field[..., 1] += amplitude * dy * bump
    return field


def profile(n: int, onset: int, apex: int, offset: int) -> np.ndarray:
    """0 before onset, raised-cosine rise to 1 at apex, decay to 0 at offset."""
    t = np.arange(n, dtype=np.float32)
    p = np.zeros(n, dtype=np.float32)
    rise = (t >= onset) & (t <= apex)
    p[rise] = 0.5 - 0.5 * np.cos(np.pi * (t[rise] - onset) / max(apex - onset, 1))
    fall = (t > apex) & (t <= offset)
    p[fall] = 0.5 + 0.5 * np.cos(np.pi * (t[fall] - apex) / max(offset - apex, 1))
    return p


class Synthetic(Dataset):
    """Seeded synthetic micro-expressions (astronaut face); sizes and difficulty are parameters.

    :param subjects: number of subjects
    :param clips_per_class: clips of each class per subject
    :param classes: 3 (negative, positive, surprise) or 5 classes
    :param size: frame side in pixels
    :param frames: frames per clip
    :param seed: seed of the whole set (same seed, same clips)
    :param amplitude: (min, max) apex displacement in output pixels
    :param jitter: head jitter std in pixels
    :param flicker: illumination gain std
    :param noise: sensor noise std in grey levels
    :param appearance: scale of the per-subject appearance change (0: identical faces)
    """

    name = "synthetic"

    def __init__(self, root: str | None = None, subjects: int = 10, clips_per_class: int = 3,
                 classes: int = 3, size: int = 64, frames: int = 36, seed: int = 0,
                 amplitude: tuple[float, float] = (0.8, 2.0), jitter: float = 0.1,
                 flicker: float = 0.02, noise: float = 2.0, appearance: float = 1.0) -> None:
        if classes not in CLASS_SETS:
            raise ConfigError(f"synthetic: classes must be 3 or 5, got {classes}")
        numbers = {"subjects": subjects, "clips_per_class": clips_per_class, "size": size,
                   "frames": frames, "seed": seed}
        wrong = [k for k, v in numbers.items() if isinstance(v, bool) or not isinstance(v, int)]
        if wrong:
            raise ConfigError(f"synthetic: {wrong[0]} must be an integer, got "
                              f"{numbers[wrong[0]]!r}")
        if subjects < 2 or clips_per_class < 1 or size < 16 or frames < 12:
            raise ConfigError("synthetic: needs subjects >= 2, clips_per_class >= 1, size >= 16, "
                              "frames >= 12")
        if size > 4096 or subjects * clips_per_class > 100_000 or frames > 100_000:
            raise ConfigError("synthetic: needs size <= 4096, frames <= 100000 and at most "
                              "100000 clips per class")
        reals = {"jitter": jitter, "flicker": flicker, "noise": noise, "appearance": appearance}
        if not isinstance(amplitude, (tuple, list)) or len(amplitude) != 2:
            raise ConfigError(f"synthetic: amplitude must be (low, high), got {amplitude!r}")
        reals.update({"amplitude[0]": amplitude[0], "amplitude[1]": amplitude[1]})
        bad = [k for k, v in reals.items()
               if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1e6]
        if bad:
            raise ConfigError(f"synthetic: {bad[0]} must be a number >= 0, got {reals[bad[0]]!r}")
        self.root = root
        self.subjects_n, self.clips_per_class, self.n_classes = subjects, clips_per_class, classes
        self.size, self.frames_n, self.seed = size, frames, seed
        self.amplitude = tuple(amplitude)
        self.jitter, self.flicker, self.noise, self.appearance = jitter, flicker, noise, appearance
        names = CLASS_SETS[classes]
        self.generator = generator = (
            f"synthetic-v{GENERATOR_VERSION} subjects={subjects} cpc={clips_per_class} "
            f"classes={classes} size={size} frames={frames} seed={seed} "
            f"amp={self.amplitude} jitter={jitter} flicker={flicker} noise={noise} "
            f"appearance={appearance}")
        samples = []
        for s in range(1, subjects + 1):
            for label in names:
                for k in range(1, clips_per_class + 1):
                    rng = _rng(seed, "timing", s, label, k)
                    onset = int(rng.integers(2, 6))
                    # rise 30-55 ms and decay 40-75 ms at 200 fps, kept inside short clips
                    apex = min(onset + int(rng.integers(6, 12)), frames - 3)
                    offset = min(frames - 1, apex + int(rng.integers(8, 16)))
                    samples.append(Sample("synthetic", f"s{s:02d}", f"{label[:3]}_{k:02d}", label,
                                          onset, apex, offset, path="",
                                          meta=(("generator", generator),)))
        spaces = {"megc2019": {n: MEGC2019[n] for n in names}}
        super().__init__(samples, label_spaces=spaces,
                         classes={"native": names, "megc2019": ("negative", "positive", "surprise")})

    def subject_transform(self, subject: str) -> tuple[np.ndarray, np.ndarray, bool, np.ndarray]:
        """(2x3 output->astronaut affine, per-channel gains, mirrored, fixed noise texture)."""
        rng = _rng(self.seed, "subject", subject)
        a = self.appearance
        scale = 1.0 + a * rng.uniform(-0.12, 0.12)
        angle = np.deg2rad(a * rng.uniform(-6, 6))
        shift = a * rng.uniform(-0.05, 0.05, size=2) * _BOX[2]
        gains = 1.0 + a * rng.uniform(-0.25, 0.25, size=3)
        mirror = bool(a > 0 and rng.random() < 0.5)
        texture = a * rng.normal(0, 4.0, size=(self.size, self.size, 3)).astype(np.float32)
        k = _BOX[2] / self.size * scale
        c, s = np.cos(angle) * k, np.sin(angle) * k
        cx, cy = self.size / 2, self.size / 2
        centre = np.array([_BOX[0] + _BOX[2] / 2, _BOX[1] + _BOX[2] / 2]) + shift
        # astronaut = R * (p - c_out) + centre
        matrix = np.array([[c, -s, centre[0] - c * cx + s * cy],
                           [s, c, centre[1] - s * cx - c * cy]], dtype=np.float32)
        return matrix, gains.astype(np.float32), mirror, texture

    def render(self, sample: Sample, start: int = 0, end: int | None = None) -> np.ndarray:
        """Frames start..end (inclusive; default all) of one sample as (T, H, W, 3) uint8.

        The random draws cover the whole clip, so a frame is the same whatever range is asked.
        """
        import cv2

        n, size = self.frames_n, self.size
        matrix, gains, mirror, texture = self.subject_transform(sample.subject)
        rng = _rng(self.seed, "clip", sample.id)
        amp = rng.uniform(*self.amplitude)
        field = displacement(sample.label, size, amp)
        if mirror:
            field = field[:, ::-1].copy()
            field[..., 0] *= -1
        prof = profile(n, sample.onset, sample.apex, sample.offset)
        src = astronaut(mirror)
        if mirror:  # mirror about the face centre column
            matrix = matrix.copy()
            matrix[0] *= -1
            matrix[0, 2] += src.shape[1] - 1
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        jitter = rng.normal(0, self.jitter, size=(n, 2)).astype(np.float32)
        gain_t = 1.0 + rng.normal(0, self.flicker, size=n).astype(np.float32)
        rng_seed = int(rng.integers(2**63))
        end = n - 1 if end is None else end
        out = np.empty((end - start + 1, size, size, 3), dtype=np.uint8)
        for t in range(start, end + 1):  # one vectorised remap per frame
            px = xx - prof[t] * field[..., 0] - jitter[t, 0]
            py = yy - prof[t] * field[..., 1] - jitter[t, 1]
            map_x = matrix[0, 0] * px + matrix[0, 1] * py + matrix[0, 2]
            map_y = matrix[1, 0] * px + matrix[1, 1] * py + matrix[1, 2]
            frame = cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            frame = frame.astype(np.float32) * gains * gain_t[t] + texture
            noise_t = np.random.default_rng([rng_seed, t]).standard_normal(
                frame.shape, dtype=np.float32)
            frame += self.noise * noise_t
            out[t - start] = np.clip(frame, 0, 255).astype(np.uint8)
        return out

    def cache_path(self, sample: Sample) -> Path:
        """Where the clip's frames (onset..offset) are cached: the key covers the generator
        version and every parameter (``generator``) and the sample."""
        from merbench.cache import default_cache_dir

        key = hashlib.sha256(f"{self.generator}|{sample.id}|{sample.onset}|"
                             f"{sample.offset}".encode()).hexdigest()
        return default_cache_dir() / "synthetic" / key[:2] / f"{key}.npy"

    def clip_frames(self, sample: Sample) -> np.ndarray:
        """Frames onset..offset of a sample: from the cache, else rendered and cached."""
        from merbench.atomic import write_bytes
        from merbench.errors import DataError

        path = self.cache_path(sample)
        expected = (sample.offset - sample.onset + 1, self.size, self.size, 3)
        try:
            frames = np.load(path, allow_pickle=False)
            if frames.shape == expected and frames.dtype == np.uint8:
                return frames
        except (OSError, ValueError, EOFError):  # absent or damaged: render again
            pass
        frames = self.render(sample, sample.onset, sample.offset)
        buf = io.BytesIO()
        np.save(buf, frames, allow_pickle=False)
        try:
            write_bytes(path, buf.getvalue())
        except DataError as exc:  # a read-only or full cache folder: render every time
            log.debug("synthetic frames not cached: %s", exc)
        return frames

    def load(self, sample: Sample) -> Clip:
        numbers = tuple(range(sample.onset, sample.offset + 1))

        def reader(positions: Sequence[int]) -> np.ndarray:  # the cached clip, rendered once
            return self.clip_frames(sample)[list(positions)]

        return Clip(lambda: self.clip_frames(sample), onset=0,
                    apex=sample.apex - sample.onset, offset=len(numbers) - 1,
                    sample_id=sample.id, frame_numbers=numbers, reader=reader,
                    length=len(numbers))


@hookimpl
def register_datasets(register):  # type: ignore[no-untyped-def]
    register("synthetic", Synthetic,
             description="Seeded synthetic micro-expressions on the astronaut face (built in)")
