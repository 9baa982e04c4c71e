"""Core value types: Sample, Clip, Fold, MethodSpec (frozen dataclasses)."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .errors import DataError


def middle_frame(first: int, last: int) -> int:
    """The one rule for a missing apex, everywhere (in memory and from disk): the middle of
    first..last, the lower of the two middle frames when the clip has an even length."""
    return (first + last) // 2


@dataclass(frozen=True)
class Sample:
    """One annotated micro-expression clip; metadata only, frames are read lazily.

    ``onset``/``apex``/``offset`` are frame *numbers* as the database writes them (the number
    in the frame file name for image folders, the 0-based index for video files).
    """

    dataset: str
    subject: str
    clip: str
    label: str
    onset: int | None = None
    apex: int | None = None
    offset: int | None = None
    apex_estimated: bool = False
    action_units: str = ""
    path: str = ""  # frames folder, video file, or precomputed input file
    meta: tuple[tuple[str, Any], ...] = ()  # extra facts (errata applied, native label, ...)

    @property
    def id(self) -> str:
        return f"{self.dataset}/{self.subject}/{self.clip}"

    @property
    def group(self) -> str:
        """The LOSO unit: a subject within its dataset."""
        return f"{self.dataset}/{self.subject}"

    def replace(self, **changes: Any) -> "Sample":
        return dataclasses.replace(self, **changes)


def _check_frames(frames: np.ndarray, where: str) -> np.ndarray:
    if not isinstance(frames, np.ndarray):
        raise DataError(f"{where}: frames must be a numpy array, got {type(frames).__name__}")
    if frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3):
        raise DataError(
            f"{where}: frames must be (T, H, W, 3) or (T, H, W), got shape {frames.shape}",
            "stack RGB or grey frames along the first axis",
        )
    if frames.dtype != np.uint8:
        raise DataError(
            f"{where}: frames must be uint8, got {frames.dtype}",
            "scale 16-bit or float frames to 0..255 and convert with .astype(np.uint8)",
        )
    if frames.shape[0] == 0:
        raise DataError(f"{where}: the clip has no frames")
    return frames


@dataclass(frozen=True, eq=False)
class Clip:
    """Frames of one sample (read on first access) plus key-frame indices into them.

    ``onset``, ``apex`` and ``offset`` index ``frames`` (0-based), unlike Sample's frame
    numbers. ``frame_numbers`` keeps the original numbers for reports.

    Frames are read as late and as few as possible: ``frames`` reads (and keeps) the whole
    clip, for steps that need every frame (LBP-TOP); ``frame(i)`` / ``take(indices)`` read
    only the frames asked for and ``iter_frames`` streams them, when the clip has a
    ``reader`` (indices -> (k, H, W[, 3]) frames) and a known ``length``, so a step that needs
    two frames of a 2,000-frame clip decodes two (and memory does not grow with the clip).
    """

    loader: Callable[[], np.ndarray] = field(repr=False)
    onset: int = 0
    apex: int | None = None
    offset: int | None = None
    apex_estimated: bool = False
    sample_id: str = ""
    frame_numbers: tuple[int, ...] | None = None
    landmarks: np.ndarray | None = field(default=None, repr=False)  # (68, 2) x, y in frames
    key_frames: tuple[int, ...] | None = None
    notes: tuple[str, ...] = ()  # corrections applied on the way (e.g. "centre crop fallback")
    reader: Callable[[Sequence[int]], np.ndarray] | None = field(default=None, repr=False)
    length: int | None = None  # the number of frames, when known without reading them

    @functools.cached_property
    def frames(self) -> np.ndarray:
        return _check_frames(self.loader(), self.sample_id or "clip")

    @property
    def loaded(self) -> bool:
        """True once ``frames`` has been read."""
        return "frames" in self.__dict__

    @property
    def n_frames(self) -> int:
        if self.length is not None and not self.loaded:
            return int(self.length)
        return int(self.frames.shape[0])

    def _lazy(self) -> bool:
        return self.reader is not None and self.length is not None and not self.loaded

    def take(self, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` (0-based, any order, repeats allowed) as (k, H, W[, 3]) uint8,
        reading only those when the clip can."""
        indices = [int(i) for i in indices]
        n = self.n_frames
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise DataError(f"{self.sample_id or 'clip'}: frame index {bad[0]} is outside the "
                            f"clip's {n} frames")
        if not self._lazy():
            return self.frames[indices]
        if not indices:
            raise DataError(f"{self.sample_id or 'clip'}: no frames asked for")
        unique = sorted(set(indices))
        read = _check_frames(np.asarray(self.reader(unique)), self.sample_id or "clip")  # type: ignore[misc]
        if read.shape[0] != len(unique):
            raise DataError(f"{self.sample_id or 'clip'}: {read.shape[0]} frames read for "
                            f"{len(unique)} asked")
        position = {k: j for j, k in enumerate(unique)}
        return read if unique == indices else read[[position[i] for i in indices]]

    def frame(self, index: int) -> np.ndarray:
        """One frame (H, W[, 3]) uint8, read alone when the clip can."""
        return self.take([index])[0]

    def iter_frames(self, start: int = 0, stop: int | None = None, chunk: int = 16
                    ) -> Iterator[np.ndarray]:
        """Frames start..stop-1 one by one, read ``chunk`` at a time (a long clip is streamed,
        never held whole, unless it is already loaded)."""
        stop = self.n_frames if stop is None else stop
        if not self._lazy():
            yield from self.frames[start:stop]
            return
        for first in range(start, stop, chunk):
            yield from self.take(range(first, min(first + chunk, stop)))

    def map_frames(self, fn: Callable[[np.ndarray], np.ndarray], **changes: Any) -> "Clip":
        """A new Clip whose frame i is ``fn(frame i)``, computed lazily: a later step that
        takes two frames transforms two."""
        where = self.sample_id or "clip"

        def loader() -> np.ndarray:
            return stack_into(self.n_frames, (fn(f) for f in self.iter_frames()), where)

        def reader(indices: Sequence[int]) -> np.ndarray:
            return np.stack([fn(f) for f in self.take(indices)])

        return dataclasses.replace(self, loader=loader, reader=reader, length=self.n_frames,
                                   **changes)

    @classmethod
    def from_array(
        cls,
        frames: np.ndarray,
        onset: int = 0,
        apex: int | None = None,
        offset: int | None = None,
        sample_id: str = "",
        **kwargs: Any,
    ) -> "Clip":
        """Wrap an in-memory (T,H,W,3) or (T,H,W) uint8 array; indices are into ``frames``.

        Without an apex the middle of onset..offset is used and flagged as estimated.
        """
        frames = _check_frames(np.asarray(frames), sample_id or "Clip.from_array")
        n = frames.shape[0]
        offset = n - 1 if offset is None else offset
        estimated = kwargs.pop("apex_estimated", apex is None)
        if apex is None:
            apex = middle_frame(onset, offset)
        clip = cls(lambda: frames, onset=onset, apex=apex, offset=offset,
                   apex_estimated=estimated, sample_id=sample_id, **kwargs)
        clip.__dict__["frames"] = frames
        clip.validate()
        return clip

    def validate(self) -> None:
        """Check the key indices against the frame count; errors name the sample."""
        n = self.n_frames
        where = self.sample_id or "clip"
        offset = n - 1 if self.offset is None else self.offset
        for name, value in (("onset", self.onset), ("apex", self.apex), ("offset", offset)):
            if value is not None and not 0 <= value < n:
                raise DataError(f"{where}: {name} index {value} is outside the clip's {n} frames")
        if self.onset > offset:
            raise DataError(f"{where}: onset {self.onset} is after offset {offset}")
        if self.apex is not None and not self.onset <= self.apex <= offset:
            raise DataError(
                f"{where}: apex {self.apex} is outside onset..offset {self.onset}..{offset}",
                "fix the annotation or add an erratum for this sample",
            )

    def with_frames(self, frames: np.ndarray, **changes: Any) -> "Clip":
        """A new Clip over transformed frames, keeping indices and metadata."""
        frames = _check_frames(frames, self.sample_id or "clip")
        clip = dataclasses.replace(self, loader=lambda: frames, reader=None, length=None,
                                   **changes)
        clip.__dict__["frames"] = frames
        return clip

    def replace(self, **changes: Any) -> "Clip":
        """A copy with ``changes``; frames already read are shared, not read again."""
        clip = dataclasses.replace(self, **changes)
        if self.loaded and not {"loader", "reader"} & set(changes):
            clip.__dict__["frames"] = self.__dict__["frames"]
        return clip

    @property
    def end(self) -> int:
        return self.n_frames - 1 if self.offset is None else self.offset


def stack_into(n: int, frames: Iterable[np.ndarray], where: str,
               names: Sequence[str] | None = None) -> np.ndarray:
    """Stack ``n`` frames into one preallocated array (peak memory: the clip, not twice it);
    every frame must have the first one's shape."""
    out: np.ndarray | None = None
    count = 0
    for k, frame in enumerate(frames):
        if out is None:
            out = np.empty((n,) + frame.shape, dtype=frame.dtype)
        elif frame.shape != out.shape[1:]:
            name = names[k] if names is not None else str(k)
            raise DataError(f"{where}: frame {name} is {frame.shape[1]}x{frame.shape[0]}, the "
                            f"first frame is {out.shape[2]}x{out.shape[1]}",
                            "all frames of a clip must have one size")
        out[k] = frame
        count += 1
    if out is None or count != n:
        raise DataError(f"{where}: {count} frames read, {n} expected")
    return out


@dataclass(frozen=True)
class Fold:
    """One train/test split of a protocol. Ids are sample ids; they never overlap."""

    index: int
    name: str
    train: tuple[str, ...]
    test: tuple[str, ...]

    def __post_init__(self) -> None:
        overlap = set(self.train) & set(self.test)
        if overlap:
            from .errors import ProtocolError

            raise ProtocolError(f"fold {self.name}: {len(overlap)} samples in both train and test",
                                "a protocol's folds must keep test samples out of training")


@dataclass(frozen=True)
class MethodSpec:
    """A named recipe: preprocessing steps then a model, each with default parameters.

    ``steps`` is a sequence of (preprocessor name, params); ``model`` is (model name, params).
    An empty ``steps`` means the dataset already yields arrays (e.g. the ``folder`` dataset).
    ``demo``: ``None`` keeps the method out of ``merbench demo``; a mapping puts it in, with the
    ``--set`` overrides that make it fast enough for the demo (``{}`` for none). ``tag``: a few
    words every leaderboard row of the method carries, e.g. "LTR3O-style" for a design that is
    not yet checked against its paper.
    """

    steps: tuple[tuple[str, Mapping[str, Any]], ...]
    model: tuple[str, Mapping[str, Any]]
    description: str = ""
    demo: Mapping[str, Any] | None = None
    tag: str = ""
