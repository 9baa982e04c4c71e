"""Face alignment and key frames (METHODS.md section 1): steps ``face-crop`` and ``key-frames``.

``face-crop`` runs dlib once per clip, on the onset frame: the frontal face detector, then the
68-point shape predictor shipped by ``face-recognition-models`` (nothing is downloaded). One
affine matrix (rotate so the eye centres are level, crop the landmark box with a margin, scale to
``size``) is applied to every frame: faces barely move within a micro-expression, and one matrix
keeps the frame-to-frame differences that ARS, RRS and optical flow measure free of crop jitter.

Apex, clip span and key frames come from :mod:`merbench.clips`, which every frame step shares,
so all steps read the apex and key frames the same way.
"""
from __future__ import annotations

import importlib.util
import logging
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np

from merbench import Clip, Step, hookimpl
from merbench.clips import check_n_key, check_size, estimated_note, span_key_frames, where
from merbench.errors import ConfigError, DataError

log = logging.getLogger(__name__)

LANDMARK_MODEL = "shape_predictor_68_face_landmarks.dat"
LEFT_EYE = slice(36, 42)  # dlib 68-point indices; "left" as seen in the image
RIGHT_EYE = slice(42, 48)
MOUTH = slice(48, 68)

_models_lock = threading.Lock()
_models: tuple[Any, Any] | None = None


# --------------------------------------------------------------------------- dlib

def landmark_model_path() -> Path:
    """dlib's 68-point model inside ``face_recognition_models``, found without importing it
    (its ``__init__`` needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the dlib landmark model is missing: package face-recognition-models "
                        "is not installed", "pip install face-recognition-models")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / LANDMARK_MODEL
        if path.is_file():
            return path
    raise DataError(f"{LANDMARK_MODEL} is not inside face_recognition_models "
                    f"({', '.join(spec.submodule_search_locations)})",
                    "reinstall face-recognition-models")


def dlib_models() -> tuple[Any, Any]:
    """(frontal face detector, 68-point shape predictor), loaded once per process."""
    global _models
    with _models_lock:
        if _models is None:
            import dlib

            path = landmark_model_path()
            log.debug("loading dlib models (%s)", path)
            _models = (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(path)))
        return _models


def detect_landmarks(image: np.ndarray, upsample: int = 1) -> tuple[np.ndarray | None, int]:
    """68 (x, y) landmarks of the highest-scoring frontal face in an RGB or grey uint8 image,
    or None; also the number of faces found."""
    detector, predictor = dlib_models()
    image = np.ascontiguousarray(image)
    with _models_lock:  # dlib objects are not documented as thread-safe
        boxes, scores, _ = detector.run(image, upsample, 0.0)
        if len(boxes) == 0:
            return None, 0
        best = boxes[int(np.argmax(scores))]
        shape = predictor(image, best)
    points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    return points, len(boxes)


def alignment_matrix(landmarks: np.ndarray, size: int, margin: float,
                     where: str = "clip") -> np.ndarray:
    """The 3×3 affine matrix taking frame pixels to the aligned size×size crop.

    Rotation about the eye midpoint levels the eye centres; the crop is the square around the
    rotated landmarks' box, its side the box's larger side plus ``margin`` of it on each side.
    Pixel centres are integers, so the crop's edges map to -0.5 and size - 0.5.
    """
    import cv2

    left = landmarks[LEFT_EYE].mean(axis=0)
    right = landmarks[RIGHT_EYE].mean(axis=0)
    dx, dy = right - left
    angle = math.degrees(math.atan2(dy, dx))
    centre = (float((left[0] + right[0]) / 2), float((left[1] + right[1]) / 2))
    rotate = np.vstack([cv2.getRotationMatrix2D(centre, angle, 1.0), [0.0, 0.0, 1.0]])
    rotated = apply_affine(rotate, landmarks)
    low, high = rotated.min(axis=0), rotated.max(axis=0)
    side = float((high - low).max()) * (1.0 + 2.0 * margin)
    if side <= 0:
        raise DataError(f"{where}: the face landmarks have no extent",
                        "pass dlib's 68 (x, y) points in the frames' coordinates")
    box_centre = (low + high) / 2.0
    scale = size / side
    corner = box_centre - side / 2.0
    crop = np.array([[scale, 0.0, -scale * corner[0] - 0.5],
                     [0.0, scale, -scale * corner[1] - 0.5],
                     [0.0, 0.0, 1.0]])
    return crop @ rotate


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2) points through a 3×3 (or 2×3) affine matrix."""
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def centre_crop_matrix(height: int, width: int, size: int) -> np.ndarray:
    """The largest centred square of a frame, scaled to size×size."""
    side = min(height, width)
    scale = size / side
    x0, y0 = (width - side) / 2.0, (height - side) / 2.0
    return np.array([[scale, 0.0, -scale * (x0 - 0.5) - 0.5],
                     [0.0, scale, -scale * (y0 - 0.5) - 0.5],
                     [0.0, 0.0, 1.0]])


def warp_frame(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """``cv2.warpAffine`` of one frame to size×size (edges replicated)."""
    import cv2

    m = np.ascontiguousarray(matrix[:2], dtype=np.float64)
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def warp_frames(frames: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """One ``cv2.warpAffine`` per frame with the same matrix (edges replicated)."""
    out = np.empty((frames.shape[0], size, size) + frames.shape[3:], dtype=np.uint8)
    for t in range(frames.shape[0]):
        out[t] = warp_frame(frames[t], matrix, size)
    return out


# --------------------------------------------------------------------------- steps

class FaceCrop(Step):
    """Align (eyes level) and crop the face found on the onset frame; same transform for all frames.

    Of several faces the detector's highest-scoring one is kept. Output landmarks are in the
    cropped frames' coordinates.

    :param size: output side in pixels
    :param margin: [ours] fraction of the landmark box's larger side added on each side (the
        box runs from the eyebrows to the chin, so the margin leaves room for raised brows)
    :param search: how many frames after the onset to try when dlib finds no face on it
    :param fallback: None (a DataError naming the sample) or "centre" (the centred square,
        recorded in the run's fallback notes, landmarks None)
    :param upsample: dlib detector upsampling (1 finds faces down to about 40 px)
    :param reuse_landmarks: use landmarks already on the Clip (in its frames' coordinates, e.g.
        precomputed ones) instead of running dlib
    """

    name = "face-crop"
    version = "1"

    def __init__(self, size: int = 224, margin: float = 0.15, search: int = 5,
                 fallback: str | None = None, upsample: int = 1,
                 reuse_landmarks: bool = True) -> None:
        check_size(size, self.name, allow_none=False)
        if not isinstance(size, int):
            raise ConfigError(f"step 'face-crop': size must be one int (a square crop), "
                              f"got {size!r}", "use e.g. size=224")
        if fallback not in (None, "centre", "center"):
            raise ConfigError(f"step 'face-crop': unknown fallback {fallback!r}",
                              "use fallback=None (fail) or fallback='centre'")
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) \
                or not 0 <= margin < 5:
            raise ConfigError(f"step 'face-crop': margin {margin!r} is out of range",
                              "use a fraction such as 0.15")
        for name, value in (("search", search), ("upsample", upsample)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"step 'face-crop': {name} must be an integer >= 0, "
                                  f"got {value!r}", f"use e.g. {name}=1")
        self.size = size
        self.margin = margin
        self.search = search
        self.fallback = fallback
        self.upsample = upsample
        self.reuse_landmarks = reuse_landmarks

    def find_landmarks(self, clip: Clip) -> tuple[np.ndarray | None, list[str]]:
        """dlib on the onset frame, then on up to ``search`` following frames."""
        notes: list[str] = []
        for t in range(clip.onset, self._last_tried(clip) + 1):  # read one frame at a time
            points, found = detect_landmarks(clip.frame(t), self.upsample)
            if points is None:
                continue
            if t != clip.onset:
                notes.append(f"face-crop: no face on onset frame {clip.onset}, "
                             f"landmarks from frame {t}")
            if found > 1:
                notes.append(f"face-crop: {found} faces found, kept the highest-scoring")
            return points, notes
        return None, notes

    def _last_tried(self, clip: Clip) -> int:
        return min(clip.onset + self.search, clip.n_frames - 1)

    def __call__(self, clip: Clip) -> Clip:
        clip.validate()
        name = where(clip)
        notes: list[str] = []
        if self.reuse_landmarks and clip.landmarks is not None:
            points = np.asarray(clip.landmarks, dtype=np.float64)
            if points.shape != (68, 2):
                raise DataError(f"{name}: clip landmarks have shape {points.shape}, not (68, 2)",
                                "pass dlib's 68 (x, y) points or reuse_landmarks=False")
        else:
            points, notes = self.find_landmarks(clip)
        if points is None:
            tried = f"frames {clip.onset}..{self._last_tried(clip)}"
            if self.fallback is None:
                raise DataError(f"{name}: no face found in {tried}",
                                "check the frames, or use face-crop fallback='centre'")
            log.warning("%s: no face found in %s, centre crop used", name, tried)
            height, width = clip.frame(clip.onset).shape[:2]
            matrix = centre_crop_matrix(height, width, self.size)
            note = f"face-crop: no face found in {tried}, centre crop fallback"
            return self._warped(clip, matrix, landmarks=None, notes=clip.notes + (note,))
        matrix = alignment_matrix(points, self.size, self.margin, name)
        return self._warped(clip, matrix, landmarks=apply_affine(matrix, points),
                            notes=clip.notes + tuple(notes))

    def _warped(self, clip: Clip, matrix: np.ndarray, **changes: Any) -> Clip:
        """The clip with every frame warped by ``matrix``, lazily: a later step that reads
        two frames warps (and reads) two."""
        size = self.size
        return clip.map_frames(lambda frame: warp_frame(frame, matrix, size), **changes)


class KeyFrames(Step):
    """Store the clip span's key frames (METHODS.md section 1) in ``clip.key_frames``.

    Without an annotated apex the middle frame is used; the returned clip then carries it as an
    estimated apex (``apex_estimated`` and a note).

    :param n_key: number of key frames between onset and offset
    """

    name = "key-frames"
    version = "1"

    def __init__(self, n_key: int = 5) -> None:
        check_n_key(n_key, self.name)
        self.n_key = n_key

    def __call__(self, clip: Clip) -> Clip:
        _, frames, apex, estimated = span_key_frames(clip, self.n_key)
        notes = clip.notes
        if clip.apex is None:
            notes = notes + (estimated_note(apex),)
        return clip.replace(key_frames=frames, apex=apex, apex_estimated=estimated, notes=notes)


@hookimpl
def register_preprocessors(register: Any) -> None:
    register("face-crop", FaceCrop,
             description="dlib 68-point face alignment (eyes level) and crop, one transform per clip")
    register("key-frames", KeyFrames,
             description="the seed's clip span and N_key key frames, stored on the Clip")
