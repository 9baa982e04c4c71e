"""Geometric training augmentations shared by image models: one vectorised ``grid_sample`` per
batch, a different random draw per sample.

:func:`affine` composes a horizontal flip, a rotation about the centre, a zoom and a shift in
one resampling (one interpolation instead of a chain of them); :func:`rotate` and
:func:`random_crop_flip_rotate` are its two uses. The random crop reproduces "resize S to
S + margin, take a random S×S crop" exactly: a bilinear resize sampled at integer pixels is the
source sampled at the mapped positions, which is what one affine sample does.
"""
from __future__ import annotations

from typing import Any, Sequence

_PADDING = ("zeros", "border", "reflection")


def affine(x: Any, degrees: Any = None, zoom: Any = None, shift: Any = None, flip: Any = None,
           padding_mode: str = "zeros") -> Any:
    """Resample each image of an NCHW batch: output pixel p (normalised coordinates, centre 0)
    reads input ``R(θ) · F · p / zoom + shift``, where F mirrors x when ``flip``.

    ``degrees`` (N,) counter-clockwise for positive angles (as torchvision); ``zoom`` (N,) > 1
    enlarges; ``shift`` (N, 2) (x, y) in normalised units (2 = the image width / height);
    ``flip`` (N,) bool. ``None`` leaves that part out. Bilinear, ``padding_mode`` zeros | border
    | reflection outside the input."""
    import torch
    import torch.nn.functional as F

    if padding_mode not in _PADDING:
        raise ValueError(f"padding_mode must be one of {_PADDING}, got {padding_mode!r}")
    n, _, h, w = x.shape
    dev = x.device

    def per_sample(v: Any, default: float) -> Any:
        if v is None:
            return torch.full((n,), default, dtype=torch.float32, device=dev)
        return torch.as_tensor(v, dtype=torch.float32).to(dev).reshape(n)

    rad = torch.deg2rad(per_sample(degrees, 0.0))
    scale = 1.0 / per_sample(zoom, 1.0)
    sign = 1.0 - 2.0 * per_sample(None if flip is None else torch.as_tensor(flip).float(), 0.0)
    cos, sin = torch.cos(rad) * scale, torch.sin(rad) * scale
    theta = torch.zeros(n, 2, 3, dtype=torch.float32, device=dev)
    # the aspect ratio keeps rotations rigid on non-square images
    theta[:, 0, 0], theta[:, 0, 1] = cos * sign, -sin * h / w
    theta[:, 1, 0], theta[:, 1, 1] = sin * w / h * sign, cos
    if shift is not None:
        theta[:, :, 2] = torch.as_tensor(shift, dtype=torch.float32).to(dev).reshape(n, 2)
    grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode=padding_mode,
                         align_corners=False).to(x.dtype)


def rotate(x: Any, degrees: Any) -> Any:
    """Rotate each image of an NCHW batch about its centre by its own angle (counter-clockwise
    for positive angles, as torchvision), bilinear, zero fill."""
    return affine(x, degrees=degrees)


def random_crop_flip_rotate(x: Any, margin: int = 16, max_degrees: float = 0.0,
                            flip: bool = True, flip_negate: Sequence[int] = (),
                            padding_mode: str = "border", generator: Any = None) -> Any:
    """Per sample: resize the H×W image to (H + margin)×(W + margin) and take a random H×W crop
    at integer offsets 0..margin (the authors' 224 -> 240 -> random 224 of Micro-Attention:
    ``margin=16``), rotate by U(−max_degrees, max_degrees), mirror with probability 0.5.

    ``flip_negate``: channels whose values change sign under a horizontal mirror (the u plane of
    a flow image scaled to [0, 1]: u -> 1 − u); mirroring such inputs without it would teach the
    wrong direction. Draws come from torch's CPU generator (``generator`` or the global one), so
    CPU and CUDA runs augment alike."""
    import torch

    n, _, h, w = x.shape
    u = torch.rand(n, 4, generator=generator)
    degrees = (2.0 * u[:, 0] - 1.0) * max_degrees if max_degrees else None
    zoom = shift = None
    if margin:
        # offset o of the crop in the resized image -> shift (2·o − margin) / (size + margin)
        ox = torch.floor(u[:, 1] * (margin + 1)).clamp(max=margin)
        oy = torch.floor(u[:, 2] * (margin + 1)).clamp(max=margin)
        if h != w:
            raise ValueError(f"the random crop needs square images, got {h}×{w}")
        zoom = torch.full((n,), (h + margin) / h)
        shift = torch.stack(((2 * ox - margin) / (w + margin), (2 * oy - margin) / (h + margin)), 1)
    mirror = u[:, 3] < 0.5 if flip else None
    out = affine(x, degrees, zoom, shift, mirror, padding_mode)
    if flip and flip_negate:
        idx = list(flip_negate)
        m = mirror.to(x.device).view(-1, 1, 1, 1)
        out[:, idx] = torch.where(m, 1.0 - out[:, idx], out[:, idx])
    return out
