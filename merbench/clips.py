"""Helpers every frame step shares: apex handling, the seed's clip span and key frames,
grey conversion and resizing (METHODS.md §1). Lifted here so plugins do not import each other.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import ConfigError, DataError
from .types import Clip, middle_frame


def where(clip: Clip) -> str:
    """How errors name a clip: its sample id, or "clip" for an anonymous one."""
    return clip.sample_id or "clip"


def check_n_key(n_key: Any, step: str) -> None:
    if isinstance(n_key, bool) or not isinstance(n_key, int) or n_key < 1:
        raise ConfigError(f"step {step!r}: n_key must be a positive integer, got {n_key!r}",
                          "use e.g. n_key=5 (the seed's value)")


MAX_SIZE = 4096  # pixels per side: larger outputs are a typo, not a method


def check_size(size: Any, step: str, allow_none: bool = True) -> None:
    """``size`` is an int (square) or (height, width) of 1..MAX_SIZE; None keeps the input
    size."""
    if size is None and allow_none:
        return
    parts = size if isinstance(size, (tuple, list)) else (size,)
    if len(parts) not in (1, 2) or any(isinstance(p, bool) or not isinstance(p, int)
                                       or not 1 <= p <= MAX_SIZE for p in parts):
        raise ConfigError(f"step {step!r}: size must be a positive int (at most {MAX_SIZE}) or "
                          f"(height, width), got {size!r}", "use e.g. size=128")


def resize_image(image: np.ndarray, size: int | tuple[int, int] | list[int] | None) -> np.ndarray:
    """Resize an H×W(×C) image to ``size``: area averaging when shrinking, bilinear otherwise."""
    if size is None:
        return image
    import cv2

    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if image.shape[:2] == (height, width):
        return image
    shrink = height <= image.shape[0] and width <= image.shape[1]
    return cv2.resize(image, (width, height),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resolve_apex(clip: Clip) -> tuple[int, bool]:
    """The apex index and whether it is estimated.

    The annotated apex is used as it is (also when a loader already set an estimate and flagged
    it); without one, the middle frame of onset..end, flagged as estimated (SMIC has no apex).
    """
    if clip.apex is None:
        return middle_frame(clip.onset, clip.end), True
    return int(clip.apex), bool(clip.apex_estimated)


def clip_span(onset: int, apex: int, offset: int, where: str = "clip") -> tuple[int, int]:
    """The seed's clip span (eqs. 1-2): start = onset; end = min(onset + 10, offset) when the
    apex is less than 10 frames after the onset, else min(apex, offset)."""
    if apex < onset:
        raise DataError(f"{where}: onset {onset} is after apex {apex}",
                        "fix the annotation or add an erratum for this sample")
    if offset < onset:
        raise DataError(f"{where}: onset {onset} is after offset {offset}, the clip span is empty",
                        "fix the annotation or add an erratum for this sample")
    end = min(onset + 10, offset) if apex - onset < 10 else min(apex, offset)
    return onset, end


def key_frame_indices(start: int, end: int, n_key: int = 5) -> tuple[int, ...]:
    """Key frames F = {min(start + k*gap, end) : k = 1..n_key}, gap = ceil((end - start) / n_key).

    F is a set (sorted): in short clips a repeated frame counts once, so fewer than ``n_key``
    frames is normal; ``end == start`` gives F = {start}.
    """
    if end < start:
        raise DataError(f"clip span {start}..{end} is empty")
    gap = math.ceil((end - start) / n_key)
    return tuple(sorted({min(start + k * gap, end) for k in range(1, n_key + 1)}))


def span_key_frames(clip: Clip, n_key: int) -> tuple[int, tuple[int, ...], int, bool]:
    """(start, key frames, apex, apex estimated) of a clip, after checking its indices."""
    clip.validate()
    apex, estimated = resolve_apex(clip)
    start, end = clip_span(clip.onset, apex, clip.end, where(clip))
    return start, key_frame_indices(start, end, n_key), apex, estimated


def estimated_note(apex: int) -> str:
    return f"apex estimated: middle frame {apex} used"


def to_grey(frame: np.ndarray) -> np.ndarray:
    import cv2

    return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
