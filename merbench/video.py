"""Lazy frame reading from image folders and video files.

Frames of an image folder are matched by the number in the file name (``img46.jpg`` is frame
46; ``006_05562.jpg`` is frame 5562), never by sort position: released databases skip numbers.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from .errors import DataError
from .types import Clip, Sample, middle_frame

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
VIDEO_EXTENSIONS = {".avi", ".mp4", ".mov", ".mkv", ".m4v", ".wmv", ".mpg", ".mpeg"}
_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def frame_number(name: str) -> int | None:
    """The last run of digits in a file stem: ``reg_img46`` -> 46, ``006_05562`` -> 5562."""
    match = _NUMBER.search(Path(name).stem)
    return int(match.group(1)) if match else None


def index_frames(folder: str | Path) -> dict[int, Path]:
    """Map frame number -> image file for one clip folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"frames folder {folder} does not exist",
                        "check --data-root and the dataset layout")
    frames: dict[int, Path] = {}
    for path in folder.iterdir():
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        number = frame_number(path.name)
        if number is None:
            continue
        if number in frames:
            raise DataError(f"{folder}: two frames carry number {number}: "
                            f"{frames[number].name} and {path.name}")
        frames[number] = path
    return frames


def to_rgb_uint8(image: np.ndarray, where: str) -> np.ndarray:
    """Normalise one decoded image to (H, W, 3) uint8 RGB.

    Documented corrections: grey frames are replicated to three channels; 16-bit frames are
    scaled to 8 bits (x / 257); an alpha channel is dropped. Anything else is an error.
    """
    import cv2

    if image.dtype == np.uint16:
        image = np.round(image / 257.0).astype(np.uint8)
    if image.dtype != np.uint8:
        raise DataError(f"{where}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"{where}: unsupported image shape {image.shape}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: str | Path, where: str = "") -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"{where or path}: frame {path} is unreadable or corrupt",
                        "restore the file from the database release")
    return to_rgb_uint8(image, where or str(path))


def stack_frames(frames: list[np.ndarray], where: str, names: list[str]) -> np.ndarray:
    shape = frames[0].shape
    for frame, name in zip(frames, names):
        if frame.shape != shape:
            raise DataError(f"{where}: frame {name} is {frame.shape[1]}x{frame.shape[0]}, the "
                            f"first frame is {shape[1]}x{shape[0]}",
                            "all frames of a clip must have one size")
    return np.stack(frames)


def read_folder(folder: str | Path, numbers: list[int], where: str = "") -> np.ndarray:
    """Read frames with the given numbers from a folder as (T, H, W, 3) uint8 RGB."""
    index = index_frames(folder)
    missing = [n for n in numbers if n not in index]
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise DataError(f"{where or folder}: {len(missing)} frame(s) missing in {folder}: {shown}",
                        "restore the frames or fix the onset/offset annotation")
    paths = [index[n] for n in numbers]
    return stack_frames([read_image(p, where) for p in paths], where or str(folder),
                        [p.name for p in paths])


def read_video(path: str | Path, start: int, end: int, where: str = "") -> np.ndarray:
    """Read frames start..end (0-based, inclusive) of a video file as (T, H, W, 3) uint8 RGB."""
    import cv2

    where = where or str(path)
    if not Path(path).is_file():
        raise DataError(f"{where}: video file {path} does not exist")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"{where}: video {path} cannot be opened", "check the file and codec")
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        frames = []
        for k in range(start, end + 1):
            ok, frame = cap.read()
            if not ok:
                raise DataError(f"{where}: video {path} ends before frame {k}",
                                "check the offset annotation")
            frames.append(to_rgb_uint8(frame, where))
    finally:
        cap.release()
    return stack_frames(frames, where, [str(k) for k in range(start, end + 1)])


def clip_numbers(sample: Sample, folder: str | Path | None = None) -> list[int]:
    """The frame numbers onset..offset of a sample; without annotations, every frame present."""
    if sample.onset is not None and sample.offset is not None:
        return list(range(sample.onset, sample.offset + 1))
    if folder is None:
        raise DataError(f"{sample.id}: no onset/offset and no frames folder to read them from")
    return sorted(index_frames(folder))


def load_clip(sample: Sample) -> Clip:
    """A lazily read Clip over a sample's onset..offset frames (its ``path``)."""
    path = Path(sample.path)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        if sample.onset is None or sample.offset is None:
            raise DataError(f"{sample.id}: a video sample needs onset and offset")
        numbers = list(range(sample.onset, sample.offset + 1))

        def loader() -> np.ndarray:
            return read_video(path, numbers[0], numbers[-1], sample.id)
    else:
        numbers = clip_numbers(sample, path)

        def loader() -> np.ndarray:
            return read_folder(path, numbers, sample.id)

    first = numbers[0]
    apex = sample.apex
    estimated = sample.apex_estimated
    if apex is None:
        apex, estimated = numbers[middle_frame(0, len(numbers) - 1)], True
    if not first <= apex <= numbers[-1]:
        raise DataError(f"{sample.id}: apex {apex} is outside onset..offset {first}..{numbers[-1]}",
                        "fix the annotation or add an erratum for this sample")
    return Clip(loader, onset=0, apex=apex - first, offset=len(numbers) - 1,
                apex_estimated=estimated, sample_id=sample.id, frame_numbers=tuple(numbers))
