"""Absolute and relative residual sums, ARS and RRS (METHODS.md section 2; seed 000, eqs. 5-7).

Per pixel and channel, diff = sum over the key frames F of |Q_f - Q_start| (int32, vectorised).
ARS is diff mod 256, the uint8 wrap-around the seed writes; RRS min-max scales diff over the
whole image to 0..255 (rounded to nearest; a constant clip gives zeros). The clip span and key
frames are those of :mod:`merbench_plugins.face`, so a ``key-frames`` step and these agree.

RGB clips give an H×W×3 image; grey (T, H, W) clips give an H×W image (no channel is invented).
No face step is needed: a clip from ``Clip.from_array(frames, onset=..., apex=..., offset=...)``
works as it is.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from merbench import Clip, Step, hookimpl
from merbench.errors import DataError

from merbench.clips import check_n_key, check_size, resize_image, span_key_frames

log = logging.getLogger(__name__)


def residual_sum(frames: np.ndarray, start: int, key_frames: tuple[int, ...]) -> np.ndarray:
    """diff = sum_{f in F} |Q_f - Q_start| as int32, same shape as one frame."""
    base = frames[start].astype(np.int32)
    keys = frames[list(key_frames)].astype(np.int32)
    return np.abs(keys - base).sum(axis=0, dtype=np.int32)


def absolute_residual(diff: np.ndarray) -> np.ndarray:
    """ARS = diff mod 256 (eq. 5)."""
    return (diff % 256).astype(np.uint8)


def relative_residual(diff: np.ndarray, g_min: int = 0, g_max: int = 255) -> np.ndarray:
    """RRS = (diff - min) / (max - min) * (g_max - g_min) + g_min (eq. 7), rounded; a constant
    diff gives g_min everywhere instead of a division by zero."""
    low, high = int(diff.min()), int(diff.max())
    if high == low:
        return np.full(diff.shape, g_min, dtype=np.uint8)
    scaled = (diff - low).astype(np.float64) * ((g_max - g_min) / (high - low)) + g_min
    return np.rint(scaled).astype(np.uint8)


class _ResidualSum(Step):
    """Shared parameters of the residual images.

    :param n_key: number of key frames (None: the clip's key frames from a preceding key-frames
        step)
    :param size: output side, or (height, width); None keeps the frame size
    """

    version = "1"

    def __init__(self, n_key: int | None = 5, size: int | tuple[int, int] | None = None) -> None:
        if n_key is not None:
            check_n_key(n_key, self.name)
        check_size(size, self.name)
        self.n_key = n_key
        self.size = size

    def diff(self, clip: Clip) -> np.ndarray:
        if self.n_key is None:
            clip.validate()
            if not clip.key_frames:
                raise DataError(f"{clip.sample_id or 'clip'}: step {self.name!r} with n_key=None "
                                "needs clip.key_frames", "add a key-frames step before it, or "
                                "set n_key")
            start, keys = clip.onset, tuple(clip.key_frames)
            if any(not start <= k < clip.n_frames for k in keys):
                raise DataError(f"{clip.sample_id or 'clip'}: key frames {keys} are outside "
                                f"onset..last frame {start}..{clip.n_frames - 1}")
        else:
            start, keys, _, _ = span_key_frames(clip, self.n_key)
        frames = clip.take((start,) + tuple(keys))  # reads the key frames only
        return residual_sum(frames, 0, tuple(range(1, len(keys) + 1)))

    def transform(self, diff: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, clip: Clip) -> np.ndarray:
        return resize_image(self.transform(self.diff(clip)), self.size)


class ARS(_ResidualSum):
    """Absolute residual sum image: sum of |key frame - onset frame| mod 256, uint8."""

    name = "ars"

    def transform(self, diff: np.ndarray) -> np.ndarray:
        return absolute_residual(diff)


class RRS(_ResidualSum):
    """Relative residual sum image: the residual sum min-max scaled to 0..255, uint8."""

    name = "rrs"

    def transform(self, diff: np.ndarray) -> np.ndarray:
        return relative_residual(diff)


@hookimpl
def register_preprocessors(register: Any) -> None:
    register("ars", ARS, description="absolute residual sum image (key frames vs onset, mod 256)")
    register("rrs", RRS, description="relative residual sum image (min-max scaled to 0..255)")
