"""Model explanations shared by deep-model plugins: Grad-CAM, overlays and heat-map figures.

Grad-CAM (Selvaraju et al. 2017) is a few lines with a forward hook, so it lives here instead of
the ``grad-cam`` package, whose metadata requires ``opencv-python-headless`` and would install a
second ``cv2`` over opencv-contrib-python-headless (whose TV-L1 flow merbench needs). Figures are
drawn on matplotlib's Agg canvas directly (no pyplot state, no display needed).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, write_bytes
from .errors import ConfigError


def grad_cam(module: Any, layer: Any, x: Any, targets: Sequence[int] | Any | None = None,
             forward: Any = None) -> Any:
    """Grad-CAM maps of ``layer`` for the class scores ``targets`` (default: predicted class).

    ``module`` maps a float NCHW batch ``x`` to logits (N, C) (or ``forward(x)`` does, for
    modules whose output holds more than the logits); ``layer`` is one of its submodules
    whose output is an (M, K, h, w) activation map (M may differ from N, e.g. M = crops × N).
    Returns ``(cams (M, h, w), logits (N, C))``: cam = ReLU(Σ_k mean_hw(∂score/∂A_k) · A_k), in
    float32 and without autocast. The module is put in eval mode and left there.
    """
    import torch

    captured: list[Any] = []

    def hook(_mod: Any, _inp: Any, out: Any) -> None:
        captured.append(out[0] if isinstance(out, (tuple, list)) else out)

    module.eval()
    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            x = x.detach().float().requires_grad_(True)  # a graph even when weights are frozen
            logits = (forward or module)(x).float()
            if not captured:
                raise ConfigError(f"Grad-CAM target layer {type(layer).__name__} was not run by "
                                  "the model", "pass a submodule on the forward path")
            acts = captured[-1]
            if acts.ndim != 4:
                raise ConfigError(f"Grad-CAM needs an (N, C, h, w) activation map, the target "
                                  f"layer gives shape {tuple(acts.shape)}",
                                  "pick a convolutional layer")
            if targets is None:
                idx = logits.argmax(1)
            else:
                idx = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=logits.device)
            # samples are independent in eval mode, so one backward of the summed scores gives
            # every sample's own gradient
            score = logits.gather(1, idx.view(-1, 1)).sum()
            grads = torch.autograd.grad(score, acts)[0]
    finally:
        handle.remove()
    weights = grads.float().mean(dim=(2, 3), keepdim=True)
    cams = torch.relu((weights * acts.float()).sum(dim=1))
    return cams.detach(), logits.detach()


def normalise_maps(maps: Any) -> Any:
    """Scale each (h, w) map of an (M, h, w) tensor to [0, 1] (min-max; a flat map becomes 0)."""
    flat = maps.flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1)
    return (maps - lo) / (hi - lo).clamp_min(1e-12)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5,
            cmap: str = "jet") -> np.ndarray:
    """An H×W×3 uint8 blend of ``image`` (H×W×3 or H×W uint8) and a [0, 1] H×W map coloured
    with ``cmap``."""
    from matplotlib import colormaps

    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.shape[:2] != cam.shape:
        raise ConfigError(f"overlay: image {image.shape[:2]} and map {cam.shape} differ in size")
    heat = colormaps[cmap](np.clip(cam, 0.0, 1.0))[..., :3] * 255.0
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * heat
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def save_rgb(path: str | Path, image: np.ndarray) -> Path:
    """Write an H×W×3 RGB uint8 image as PNG (parents created)."""
    import cv2

    ok, data = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ConfigError(f"cannot encode {path} as PNG")
    return write_bytes(path, data.tobytes())


def save_matrix_heatmap(path: str | Path, matrix: np.ndarray, labels: Sequence[str],
                        title: str = "", vmin: float = -1.0, vmax: float = 1.0) -> Path:
    """A square matrix (e.g. cosine similarities) as an annotated PNG heat map."""
    matrix = np.asarray(matrix, dtype=float)
    n = len(labels)
    if matrix.shape != (n, n):
        raise ConfigError(f"heat map: matrix {matrix.shape} does not match {n} labels")
    fig = new_figure(1.0 + 0.55 * n, 0.6 + 0.55 * n)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(matrix, cmap="coolwarm", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(n), labels)
    ax.set_yticks(range(n), labels)
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return save_figure(fig, path)


def safe_stem(name: Any) -> str:
    """A file-name stem from a sample id or index (``casme2/sub01/EP02`` -> ``casme2_sub01_EP02``)."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("_") or "sample"


def as_display_image(x: np.ndarray, channels_first: bool = False) -> np.ndarray:
    """One model input as an H×W×3 uint8 picture: grey inputs are repeated, more than three
    channels keep the first three, float inputs are min-max scaled."""
    x = np.asarray(x)
    if x.ndim == 3 and channels_first:
        x = x.transpose(1, 2, 0)
    if x.ndim == 2:
        x = x[..., None]
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    x = x[..., :3]
    if x.dtype != np.uint8:
        x = x.astype(np.float64)
        lo, hi = float(x.min()), float(x.max())
        x = np.zeros_like(x) if hi <= lo else (x - lo) / (hi - lo) * 255.0
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x)


def new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure on an Agg canvas (no pyplot state, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _cam_axes(fig: Any, axes: Any, image: np.ndarray, cam: np.ndarray, title: str) -> None:
    """Input | overlay with a colour bar, on two axes."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    left, right = axes
    left.imshow(image)
    left.set_title("input", fontsize=8)
    right.imshow(overlay(image, cam))
    right.set_title("Grad-CAM", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps["jet"]), ax=right, fraction=0.046,
                 pad=0.04)
    if title:
        left.text(0.0, 1.18, title, transform=left.transAxes, fontsize=9)


def save_cam_figure(path: str | Path, image: np.ndarray, cam: np.ndarray, title: str = "") -> Path:
    """A PNG with the input beside its Grad-CAM overlay, a colour bar and a title."""
    fig = new_figure(6.4, 3.4)
    _cam_axes(fig, fig.subplots(1, 2), image, cam, title)
    return save_figure(fig, path)


def save_cam_grid(path: str | Path, images: Sequence[np.ndarray], cams: Sequence[np.ndarray],
                  titles: Sequence[str]) -> Path:
    """One page with a row (input | overlay) per sample."""
    n = len(images)
    fig = new_figure(6.4, 3.0 * n)
    axes = fig.subplots(n, 2, squeeze=False)
    for row, image, cam, title in zip(axes, images, cams, titles):
        _cam_axes(fig, row, image, cam, title)
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """Save a figure atomically; the format follows the suffix (.png, .svg, .pdf)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", bbox_inches="tight", **kwargs)
    return path


def save_overlay_grid(path: str | Path, images: Sequence[np.ndarray],
                      rows: Sequence[Sequence[tuple[np.ndarray, str]]],
                      row_titles: Sequence[str] = ()) -> Path:
    """One page, a row per sample: the input, then each (map in [0, 1], title) overlaid on it
    (e.g. Grad-CAM beside attention maps of several stages), one colour bar per row."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    if len(images) != len(rows) or not rows:
        raise ConfigError(f"overlay grid: {len(images)} images for {len(rows)} rows of maps")
    cols = 1 + max(len(r) for r in rows)
    fig = new_figure(2.1 * cols + 0.6, 2.3 * len(rows))
    axes = fig.subplots(len(rows), cols + 1, squeeze=False,
                        gridspec_kw={"width_ratios": [1.0] * cols + [0.06]})
    for k, (image, panels) in enumerate(zip(images, rows)):
        row = axes[k]
        row[0].imshow(image)
        row[0].set_title(row_titles[k] if k < len(row_titles) else "input", fontsize=8)
        for ax, (cam, title) in zip(row[1:], panels):
            ax.imshow(overlay(image, np.asarray(cam)))
            ax.set_title(title, fontsize=7)
        for ax in row[:-1]:
            ax.set_axis_off()
        fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps["jet"]), cax=row[-1])
    return save_figure(fig, path)
