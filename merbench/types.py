"""Core value types: Sample, Clip, Fold, MethodSpec (frozen dataclasses)."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

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

    @functools.cached_property
    def frames(self) -> np.ndarray:
        return _check_frames(self.loader(), self.sample_id or "clip")

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

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
        return dataclasses.replace(self, loader=lambda: frames, **changes)

    def replace(self, **changes: Any) -> "Clip":
        return dataclasses.replace(self, **changes)

    @property
    def end(self) -> int:
        return self.n_frames - 1 if self.offset is None else self.offset


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
    ``--set`` overrides that make it fast enough for the demo (``{}`` for none).
    """

    steps: tuple[tuple[str, Mapping[str, Any]], ...]
    model: tuple[str, Mapping[str, Any]]
    description: str = ""
    demo: Mapping[str, Any] | None = None
