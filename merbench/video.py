"""Lazy frame reading from image folders and video files.

Frames of an image folder are matched by the number in the file name (``img46.jpg`` is frame
46; ``006_05562.jpg`` is frame 5562), never by sort position: released databases skip numbers.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import DataError
from .types import Clip, Sample, middle_frame, stack_into

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


def image_problem(data: bytes, suffix: str) -> str | None:
    """Why an image file's bytes are truncated, or None. libjpeg decodes a JPEG cut short
    (grey bottom rows, one "Premature end of JPEG file" on stderr naming no file), so the end
    markers are checked before decoding: JPEG's end-of-image marker (FF D9, at most a little
    padding after it) and PNG's IEND chunk."""
    suffix = suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        if not data.startswith(b"\xff\xd8"):
            return "is not a JPEG file (no start-of-image marker)"
        end = data.rfind(b"\xff\xd9")
        if end < 0 or len(data) - (end + 2) > _JPEG_TAIL:
            return "is truncated (no JPEG end-of-image marker)"
    elif suffix == ".png":
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            return "is not a PNG file"
        if b"IEND" not in data[-32:]:
            return "is truncated (no PNG IEND chunk)"
    elif suffix == ".bmp" and len(data) >= 6:
        declared = int.from_bytes(data[2:6], "little")
        if data[:2] == b"BM" and declared > len(data):
            return f"is truncated ({len(data)} of the {declared} bytes its header declares)"
    return None


_JPEG_TAIL = 512  # bytes after the last end-of-image marker still taken as padding


def read_image(path: str | Path, where: str = "") -> np.ndarray:
    """One image file as (H, W, 3) uint8 RGB; a truncated or corrupt file is a DataError naming
    it (nothing reaches the decoder's stderr)."""
    import cv2

    path = Path(path)
    fix = "restore the file from the database release"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{where or path}: frame {path} cannot be read: "
                        f"{exc.strerror or exc}", fix) from exc
    problem = image_problem(data, path.suffix)
    if problem:
        raise DataError(f"{where or path}: frame {path} {problem}", fix)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        raise DataError(f"{where or path}: frame {path} is unreadable or corrupt", fix)
    return to_rgb_uint8(image, where or str(path))


def stack_frames(frames: list[np.ndarray], where: str, names: list[str]) -> np.ndarray:
    return stack_into(len(frames), frames, where, names)


class FolderFrames:
    """The frames with the given numbers of one image folder, read all or a few at a time."""

    def __init__(self, folder: str | Path, numbers: Sequence[int], where: str = "") -> None:
        self.folder = Path(folder)
        self.numbers = list(numbers)
        self.where = where or str(folder)
        self._index: dict[int, Path] | None = None

    def paths(self, positions: Sequence[int]) -> list[Path]:
        """The files at ``positions``. On first use every frame of the span must exist (a
        listing, no decoding): a gap is a broken clip or annotation even for a step that
        reads two frames."""
        if self._index is None:
            index = index_frames(self.folder)
            self._check(index, self.numbers)
            self._index = index
        wanted = [self.numbers[k] for k in positions]
        self._check(self._index, wanted)
        return [self._index[n] for n in wanted]

    def _check(self, index: dict[int, Path], wanted: Sequence[int]) -> None:
        missing = [n for n in wanted if n not in index]
        if missing:
            shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
            raise DataError(f"{self.where}: {len(missing)} frame(s) missing in {self.folder}: "
                            f"{shown}", "restore the frames or fix the onset/offset annotation")

    def read(self, positions: Sequence[int]) -> np.ndarray:
        """Frames at ``positions`` (0-based, into ``numbers``), as (k, H, W, 3)."""
        paths = self.paths(positions)
        return stack_into(len(paths), (read_image(p, self.where) for p in paths), self.where,
                          [p.name for p in paths])

    def read_all(self) -> np.ndarray:
        return self.read(range(len(self.numbers)))


def read_folder(folder: str | Path, numbers: list[int], where: str = "") -> np.ndarray:
    """Read frames with the given numbers from a folder as (T, H, W, 3) uint8 RGB."""
    return FolderFrames(folder, numbers, where).read_all()


class VideoFrames:
    """Frames start..end (0-based, inclusive) of a video file, read all or a few at a time.

    A video that ends early is told apart from an annotation that runs past its end: the
    container's frame count says which (a truncated file still announces its full length)."""

    _SEEK_GAP = 32  # further ahead than this, seek instead of decoding the frames between

    def __init__(self, path: str | Path, start: int, end: int, where: str = "") -> None:
        self.path = Path(path)
        self.start, self.end = start, end
        self.where = where or str(path)

    def _open(self) -> Any:
        import cv2

        if not self.path.is_file():
            raise DataError(f"{self.where}: video file {self.path} does not exist")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise DataError(f"{self.where}: video {self.path} cannot be opened (damaged file or "
                            "unsupported codec)", "restore the file from the release, or "
                            "convert it, e.g. to MJPEG AVI")
        return cap

    def _ended(self, cap: Any, k: int) -> DataError:
        import cv2

        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if total > k:
            return DataError(f"{self.where}: video {self.path} is truncated or damaged: no frame "
                             f"{k} can be decoded although the file announces {total} frames",
                             "restore the file from the database release")
        return DataError(f"{self.where}: video {self.path} has {total} frames (0..{total - 1}); "
                         f"frame {k} is past its end", "check the offset annotation")

    def read(self, positions: Sequence[int]) -> np.ndarray:
        """Frames at ``positions`` (0-based from ``start``), in that order, as (k, H, W, 3)."""
        import cv2

        wanted = [self.start + int(p) for p in positions]
        cap = self._open()
        try:
            got: dict[int, np.ndarray] = {}
            current = None  # the frame number the next read returns
            for k in sorted(set(wanted)):
                if current is None or not current <= k <= current + self._SEEK_GAP:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, k)
                    current = k
                while current < k:  # decode forward, keeping nothing
                    if not cap.grab():
                        raise self._ended(cap, current)
                    current += 1
                ok, frame = cap.read()
                if not ok:
                    raise self._ended(cap, k)
                current = k + 1
                got[k] = to_rgb_uint8(frame, self.where)
        finally:
            cap.release()
        return stack_into(len(wanted), (got[k] for k in wanted), self.where,
                          [str(k) for k in wanted])

    def read_all(self) -> np.ndarray:
        return self.read(range(self.end - self.start + 1))


def read_video(path: str | Path, start: int, end: int, where: str = "") -> np.ndarray:
    """Read frames start..end (0-based, inclusive) of a video file as (T, H, W, 3) uint8 RGB."""
    return VideoFrames(path, start, end, where).read_all()


def clip_numbers(sample: Sample, folder: str | Path | None = None) -> list[int]:
    """The frame numbers onset..offset of a sample; without annotations, every frame present."""
    if sample.onset is not None and sample.offset is not None:
        if sample.onset > sample.offset:
            raise DataError(f"{sample.id}: onset {sample.onset} is after offset {sample.offset}",
                            "fix the annotation or add an erratum for this sample")
        return list(range(sample.onset, sample.offset + 1))
    if folder is None:
        raise DataError(f"{sample.id}: no onset/offset and no frames folder to read them from")
    numbers = sorted(index_frames(folder))
    if not numbers:
        raise DataError(f"{sample.id}: no frames in {folder}",
                        "restore the clip's frames from the release")
    return numbers


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def load_clip(sample: Sample) -> Clip:
    """A lazily read Clip over a sample's onset..offset frames (its ``path``): steps read the
    frames they need (``Clip.take``), or all of them (``Clip.frames``)."""
    path = Path(sample.path)
    source: FolderFrames | VideoFrames
    if is_video(path):
        if sample.onset is None or sample.offset is None:
            raise DataError(f"{sample.id}: a video sample needs onset and offset")
        numbers = clip_numbers(sample)
        source = VideoFrames(path, numbers[0], numbers[-1], sample.id)
    else:
        numbers = clip_numbers(sample, path)
        source = FolderFrames(path, numbers, sample.id)

    first = numbers[0]
    apex = sample.apex
    estimated = sample.apex_estimated
    if apex is None:
        apex, estimated = numbers[middle_frame(0, len(numbers) - 1)], True
    if not first <= apex <= numbers[-1]:
        raise DataError(f"{sample.id}: apex {apex} is outside onset..offset {first}..{numbers[-1]}",
                        "fix the annotation or add an erratum for this sample")
    return Clip(source.read_all, onset=0, apex=apex - first, offset=len(numbers) - 1,
                apex_estimated=estimated, sample_id=sample.id, frame_numbers=tuple(numbers),
                reader=source.read, length=len(numbers))


def source_files(sample: Sample) -> list[Path]:
    """The files a sample's clip is read from: its video, or its onset..offset frame files
    (every frame of the folder without onset/offset); [] when it has no path."""
    if not sample.path:
        return []
    path = Path(sample.path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    index = index_frames(path)
    if sample.onset is None or sample.offset is None:
        return [index[n] for n in sorted(index)]
    return [index[n] for n in range(sample.onset, sample.offset + 1) if n in index]


def fingerprint(paths: Sequence[Path]) -> list[list[Any]]:
    """A cheap fingerprint of files, computed without reading them: name, size, mtime_ns and
    ctime_ns each. ctime catches a file restored with its old mtime (``cp -p``, ``rsync -a``,
    tar): the system sets it on every change and no tool can set it back."""
    out: list[list[Any]] = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            out.append([p.name, None])
            continue
        out.append([p.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    return out
