"""Onset -> apex optical flow, optical strain and STSTNet flow images (METHODS.md section 3).

``flow`` returns float32 (u, v) or, with ``strain=True``, (u, v, strain) as H×W×2 / H×W×3;
``flow-image`` returns the uint8 image STSTNet reads: u, v and strain each min-max scaled to
0..255 per sample, resized to ``size``. Flow is computed on grey frames (RGB is converted with
OpenCV's luma weights; grey clips are used as they are). Without an annotated apex the middle
frame of onset..end is used (:func:`merbench.clips.resolve_apex`), which is logged.

Flow convention (OpenCV's): onset(y, x) ~ apex(y + v, x + u), so a face moving right has u > 0.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from merbench import Clip, Step, hookimpl
from merbench.errors import ConfigError

from merbench.clips import check_size, resize_image, resolve_apex, to_grey

log = logging.getLogger(__name__)

METHODS = ("tvl1", "farneback")
# OpenCV tutorial values for calcOpticalFlowFarneback [ours]:
# pyr_scale, levels, winsize, iterations, poly_n, poly_sigma
FARNEBACK = (0.5, 3, 15, 3, 5, 1.2)


def optical_strain(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Strain magnitude sqrt(u_x² + v_y² + ½(u_y + v_x)²) = sqrt(e_xx² + e_yy² + 2 e_xy²).

    ``np.gradient`` returns the derivative along axis 0 (y, rows) first, then axis 1 (x).
    """
    u_y, u_x = np.gradient(np.asarray(u, dtype=np.float64))
    v_y, v_x = np.gradient(np.asarray(v, dtype=np.float64))
    return np.sqrt(u_x ** 2 + v_y ** 2 + 0.5 * (u_y + v_x) ** 2)


def optical_flow(first: np.ndarray, second: np.ndarray, method: str = "tvl1",
                 tau: float = 0.25, lambda_: float = 0.15, theta: float = 0.3, warps: int = 5,
                 farneback: tuple[float, ...] = FARNEBACK) -> np.ndarray:
    """Dense flow first -> second on grey uint8 images as float32 H×W×2 (u, v)."""
    import cv2

    a, b = to_grey(first), to_grey(second)
    if method == "tvl1":
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(tau=tau, lambda_=lambda_, theta=theta,
                                                      warps=warps)
        flow = tvl1.calc(a, b, None)
    else:
        pyr_scale, levels, winsize, iterations, poly_n, poly_sigma = farneback
        flow = cv2.calcOpticalFlowFarneback(a, b, None, float(pyr_scale), int(levels),
                                            int(winsize), int(iterations), int(poly_n),
                                            float(poly_sigma), 0)
    return np.asarray(flow, dtype=np.float32)


def minmax_uint8(channel: np.ndarray) -> np.ndarray:
    """Scale one channel to 0..255 over its own min and max (rounded); a constant gives zeros."""
    low, high = float(channel.min()), float(channel.max())
    if high <= low:
        return np.zeros(channel.shape, dtype=np.uint8)
    return np.rint((channel - low) * (255.0 / (high - low))).astype(np.uint8)


class Flow(Step):
    """Onset -> apex optical flow (float32 H×W×2 u, v; H×W×3 with ``strain=True``).

    :param method: "tvl1" (cv2.optflow.DualTVL1OpticalFlow_create; OpenCV defaults for what is
        not a parameter here) or "farneback"
    :param strain: add the optical strain magnitude as a third channel
    :param tau: TV-L1 time step
    :param lambda_: TV-L1 data-term weight (smaller: smoother flow)
    :param theta: TV-L1 coupling of the two energy terms
    :param warps: TV-L1 warps per pyramid level
    :param farneback: Farneback pyr_scale, levels, winsize, iterations, poly_n, poly_sigma
        [ours: OpenCV tutorial values]
    """

    name = "flow"
    version = "1"

    def __init__(self, method: str = "tvl1", strain: bool = False, tau: float = 0.25,
                 lambda_: float = 0.15, theta: float = 0.3, warps: int = 5,
                 farneback: tuple[float, ...] = FARNEBACK) -> None:
        if method not in METHODS:
            raise ConfigError(f"step {self.name!r}: unknown flow method {method!r}",
                              f"use one of {', '.join(METHODS)}")
        for key, value in (("tau", tau), ("lambda_", lambda_), ("theta", theta)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"step {self.name!r}: {key} must be a positive number, got "
                                  f"{value!r}", "use the default unless you know why")
        if isinstance(warps, bool) or not isinstance(warps, int) or warps < 1:
            raise ConfigError(f"step {self.name!r}: warps must be a positive integer, got "
                              f"{warps!r}", "use e.g. warps=5")
        if not isinstance(farneback, (tuple, list)) or len(tuple(farneback)) != 6:
            raise ConfigError(f"step {self.name!r}: farneback needs 6 values, got {farneback!r}",
                              "pyr_scale, levels, winsize, iterations, poly_n, poly_sigma")
        self.method = method
        self.strain = strain
        self.tau = tau
        self.lambda_ = lambda_
        self.theta = theta
        self.warps = warps
        self.farneback = tuple(farneback)

    def uv(self, clip: Clip) -> np.ndarray:
        """Flow from the onset frame to the apex (the middle frame when there is none)."""
        clip.validate()
        apex, estimated = resolve_apex(clip)
        where = clip.sample_id or "clip"
        if estimated:
            log.debug("%s: apex estimated, flow to frame %d", where, apex)
        if apex == clip.onset:
            log.warning("%s: apex is the onset frame, the flow is (near) zero", where)
        first, last = clip.take([clip.onset, apex])  # reads just these two
        return optical_flow(first, last, self.method, self.tau,
                            self.lambda_, self.theta, self.warps, self.farneback)

    def __call__(self, clip: Clip) -> np.ndarray:
        flow = self.uv(clip)
        if not self.strain:
            return flow
        strain = optical_strain(flow[..., 0], flow[..., 1]).astype(np.float32)
        return np.concatenate([flow, strain[..., None]], axis=2)


class FlowImage(Flow):
    """STSTNet input: u, v, strain each min-max scaled to 0..255 per sample, resized, uint8.

    :param channels: plane order by letter: "uvs" (u, v, strain); published STSTNet inputs are
        images read with OpenCV, i.e. BGR order of (u, v, strain) images: "svu"
    :param size: output side, or (height, width); None keeps the flow's size (area averaging
        when shrinking)
    """

    name = "flow-image"
    version = "1"

    def __init__(self, method: str = "tvl1", size: int | tuple[int, int] | None = 28,
                 channels: str = "uvs", tau: float = 0.25, lambda_: float = 0.15,
                 theta: float = 0.3, warps: int = 5,
                 farneback: tuple[float, ...] = FARNEBACK) -> None:
        super().__init__(method=method, strain=True, tau=tau, lambda_=lambda_, theta=theta,
                         warps=warps, farneback=farneback)
        check_size(size, self.name)
        if not isinstance(channels, str) or sorted(channels) != ["s", "u", "v"]:
            raise ConfigError(f"step 'flow-image': channels must order the letters u, v, s, "
                              f"got {channels!r}", "use 'uvs' or 'svu' (BGR-read STSTNet images)")
        self.size = size
        self.channels = channels

    def __call__(self, clip: Clip) -> np.ndarray:
        flow = self.uv(clip)
        planes = {"u": flow[..., 0], "v": flow[..., 1],
                  "s": optical_strain(flow[..., 0], flow[..., 1])}
        image = np.stack([minmax_uint8(planes[c]) for c in self.channels], axis=2)
        return resize_image(image, self.size)


@hookimpl
def register_preprocessors(register: Any) -> None:
    register("flow", Flow, description="onset->apex optical flow (TV-L1 or Farneback), "
             "optionally with optical strain, float32")
    register("flow-image", FlowImage, description="u, v, strain min-max scaled to 0..255 and "
             "resized (STSTNet input), uint8")
