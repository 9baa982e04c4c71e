"""CropNet with the Cropped Gaussian Pyramid with Overlapping (seed 000, METHODS.md section 5).

Input: a 320×320×3 uint8 residual image (ARS / RRS, or a flow image for the seed's ablations).
CGPO: level 1 = the cv2.pyrDown-style Gaussian half (160×160, crop z_0); level 0 = the 320×320
image cut into 160×160 crops with overlap α = 0.3, i.e. stride round(160·(1 − α)) = 112 and the
last crop clamped to the border: starts 0, 112, 160 per axis, 3×3 crops z_1..z_9 in row-major
order. All 10 crops go through one shared timm trunk as one batch. Per crop, the seed's
Conv → BN → adaptive pooling → FC: for ReXNet the Conv → BN is the trunk's own final 1×1
ConvNormAct (185 → 1280, BN, SiLU, kept by timm's ``forward_features``), then global average
pooling and a shared FC to ``feature_dim``. Trainable position embeddings p_1..p_9 ~ N(0, 0.2)
(variance 0.2, std √0.2) are added to z_1..z_9; the ten vectors are concatenated, dropped out
and classified by one FC layer. The seed has no non-linearity between the per-crop FC and the
classifier, so p_i acts on the logits only as a learned bias; kept as written.

Parameters (5 classes, trunk ``rexnet_100``, ``feature_dim`` 3048): 7,600,198 = trunk 3,515,873
+ per-crop FC 1280·3048 + 3048 + position embeddings 9·3048 + classifier 30,480·5 + 5, close to
the seed's "about 7.6 M" [ours: feature_dim chosen to match]. (For 3 classes: 7,539,236.) The
seed's figure is also matched by timm ``rexnet_130`` with a 1000-d per-crop FC (7,616,096 for 5
classes): ``--set model.trunk=rexnet_130 --set model.feature_dim=1000``.

Training [ours unless marked]: label-smoothing cross-entropy (0.1) [seed: label smoothing],
AdamP [seed], lr 1e-3, 30 epochs, batch 32, dropout 0.2 before the classifier. Augmentation in the
seed's order, drawn per sample from torch's global generator: colour jitter (brightness, contrast,
saturation factors in [0.2, 1.8], hue shift in [−0.5, 0.5]; applied in that fixed order
[ours], torchvision's ColorJitter shuffles them), grayscale p 0.2, horizontal flip p 0.5,
rotation in [−15°, 15°] (bilinear, zero fill [ours]). Inputs are scaled to [0, 1] and normalised
with the trunk's ImageNet mean/std inside the network.

Init: ``pretrained=PATH`` loads a local timm state dict (.safetensors or a torch file) into the
trunk; ``None`` (default) uses timm's weights only if they are already in the local Hugging Face /
torch hub cache (never downloads); ``False`` forces random init; ``True`` requires the cache.
``model.init_`` records the outcome: ``"random"`` or ``"pretrained:PATH"`` (``"saved-state"``
when ``set_state`` / ``load_weights`` rebuilt the network for a trained state).

Explanations: ``model.explain(X, out_dir)`` writes the cosine-similarity heat map of p_1..p_9 and
per-sample Grad-CAM overlays (the trunk's last feature map, crop maps pasted back and averaged
where crops overlap) on the input image; see :meth:`CropNet.explain`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from merbench import MethodSpec, hookimpl
from merbench.augment import rotate
from merbench.errors import ConfigError
from merbench.training import TorchClassifier, load_pretrained, resolve_pretrained

log = logging.getLogger(__name__)

_GAUSS_1D = (1.0, 4.0, 6.0, 4.0, 1.0)  # cv2.pyrDown's 5-tap binomial kernel (/16 per axis)
_GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


# --------------------------------------------------------------------------- CGPO geometry

def crop_starts(size: int, crop: int, alpha: float) -> list[int]:
    """Crop offsets along one axis: stride round(crop·(1 − α)), the last one clamped so the
    crop ends at the border (320, 160, 0.3 -> [0, 112, 160])."""
    if crop > size:
        raise ConfigError(f"cropnet: crop {crop} is larger than the image size {size}",
                          "use crop <= size (the seed: size 320, crop 160)")
    if not 0.0 <= alpha < 1.0:
        raise ConfigError(f"cropnet: alpha must be in [0, 1), got {alpha}", "the seed uses 0.3")
    stride = max(1, round(crop * (1.0 - alpha)))
    count = math.ceil((size - crop) / stride) + 1
    return [min(i * stride, size - crop) for i in range(count)]


def crop_boxes(size: int, crop: int, alpha: float) -> list[tuple[int, int]]:
    """(top, left) of the level-0 crops z_1.. in row-major order."""
    starts = crop_starts(size, crop, alpha)
    return [(top, left) for top in starts for left in starts]


def gaussian_kernel(channels: int) -> Any:
    """cv2.pyrDown's 5×5 binomial kernel as a depthwise conv weight (channels, 1, 5, 5)."""
    import torch

    k1 = torch.tensor(_GAUSS_1D) / 16.0
    return (k1[:, None] * k1[None, :]).repeat(channels, 1, 1, 1)


def pyr_down(x: Any, kernel: Any = None) -> Any:
    """cv2.pyrDown on an NCHW float batch: 5×5 binomial blur (reflect-101 border) then every
    second row and column; output ceil(H/2) × ceil(W/2). ``kernel``: a cached
    :func:`gaussian_kernel` already on the device."""
    import torch.nn.functional as F

    if kernel is None:
        kernel = gaussian_kernel(x.shape[1]).to(x.device)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel.to(x.dtype), stride=2,
                    groups=x.shape[1])


# --------------------------------------------------------------------------- augmentation

def grayscale(x: Any) -> Any:
    """(N, 3, H, W) -> (N, 1, H, W) luma, torchvision's weights."""
    r, g, b = x.unbind(1)
    return (_GREY[0] * r + _GREY[1] * g + _GREY[2] * b).unsqueeze(1)


def rgb_to_hsv(x: Any) -> Any:
    """(N, 3, H, W) RGB in [0, 1] -> HSV (hue in [0, 1)); ties resolved as torchvision does."""
    import torch

    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    delta = maxc - minc
    s = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    d = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, (g - b) / d,
                    torch.where(maxc == g, 2.0 + (b - r) / d, 4.0 + (r - g) / d))
    return torch.stack(((h / 6.0).remainder(1.0), s, maxc), 1)


def hsv_to_rgb(hsv: Any) -> Any:
    """Inverse of :func:`rgb_to_hsv` (closed form: c_n = v − v·s·clamp(min(k, 4 − k), 0, 1),
    k = (n + 6h) mod 6, n = 5, 3, 1 for R, G, B)."""
    import torch

    h, s, v = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    n = torch.arange(5.0, 0.0, -2.0, dtype=hsv.dtype, device=hsv.device).view(1, 3, 1, 1)
    k = (n + 6.0 * h).remainder(6.0)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def colour_jitter(x: Any, brightness: Any, contrast: Any, saturation: Any, hue: Any) -> Any:
    """torchvision's adjust_brightness / contrast / saturation / hue with one factor per sample
    ((N,) tensors), applied in that order to an (N, 3, H, W) batch in [0, 1]."""
    def col(v: Any) -> Any:
        return v.to(x.dtype).view(-1, 1, 1, 1)

    def blend(a: Any, other: Any, f: Any) -> Any:
        return (col(f) * a + (1.0 - col(f)) * other).clamp(0.0, 1.0)

    x = (x * col(brightness)).clamp(0.0, 1.0)
    x = blend(x, grayscale(x).mean(dim=(1, 2, 3), keepdim=True), contrast)
    x = blend(x, grayscale(x), saturation)
    hsv = rgb_to_hsv(x)
    hsv = hsv.clone()
    hsv[:, 0] = (hsv[:, 0] + hue.to(x.dtype).view(-1, 1, 1)).remainder(1.0)
    return hsv_to_rgb(hsv)


# --------------------------------------------------------------------------- network

def _module_class() -> type:
    """Defined lazily so that listing plugins does not import torch."""
    import torch
    from torch import nn

    class Trunk(nn.Module):
        """A timm model's ``forward_features``: the unpooled final feature map (the Grad-CAM
        target layer)."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model.forward_features(x)

    class CropNetModule(nn.Module):
        def __init__(self, trunk: nn.Module, channels: int, num_classes: int, size: int,
                     crop: int, alpha: float, cgpo: bool, feature_dim: int, dropout: float,
                     pos_std: float, mean: Sequence[float], std: Sequence[float]) -> None:
            super().__init__()
            self.size, self.crop, self.cgpo = size, crop, cgpo
            self.boxes = crop_boxes(size, crop, alpha) if cgpo else []
            self.trunk = Trunk(trunk)
            self.fc = nn.Linear(channels, feature_dim)
            self.pos = (nn.Parameter(torch.randn(len(self.boxes), feature_dim) * pos_std)
                        if cgpo else None)
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Linear(self.n_crops * feature_dim, num_classes)
            self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("gauss", gaussian_kernel(3), persistent=False)

        @property
        def n_crops(self) -> int:
            return 1 + len(self.boxes) if self.cgpo else 1

        def crops(self, x: torch.Tensor) -> torch.Tensor:
            """(N, 3, S, S) -> (N·K, 3, c, c): z_0 = Gaussian level, then the level-0 crops."""
            if not self.cgpo:
                return x
            c = self.crop
            parts = [pyr_down(x, self.gauss)] + [x[:, :, t:t + c, l:l + c] for t, l in self.boxes]
            out = torch.stack(parts, 1).flatten(0, 1)
            if x.is_contiguous(memory_format=torch.channels_last):
                out = out.contiguous(memory_format=torch.channels_last)
            return out

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n = x.shape[0]
            x = (x - self.mean) / self.std
            feats = self.trunk(self.crops(x))
            z = self.fc(feats.mean(dim=(2, 3))).view(n, self.n_crops, -1)
            if self.pos is not None:
                z = torch.cat([z[:, :1], z[:, 1:] + self.pos.to(z.dtype)], 1)
            return self.classifier(self.dropout(z.flatten(1)))

    return CropNetModule


class CropNet(TorchClassifier):
    """CropNet (seed 000): CGPO crops -> shared timm trunk -> per-crop FC + position embeddings
    -> FC. See the module docstring for the parameters' sources.

    :param size: input image side in pixels (320 in the seed)
    :param crop: side of each CGPO crop (160: half the input)
    :param alpha: overlap of neighbouring crops (0.3: stride 112 for 160-pixel crops)
    :param cgpo: use the 10 CGPO crops; False classifies the whole image (the ablation)
    :param feature_dim: per-crop feature width after the shared FC
    :param trunk: timm model name of the shared trunk
    :param pretrained: PATH to local trunk weights, None (a warm timm cache, else random),
        True (the cache, required) or False (random init)
    :param dropout: dropout before the classifier
    :param pos_variance: variance of the position embeddings' normal init
    :param augmentation: colour jitter, greyscale, flip and rotation while training
    """

    defaults = {"epochs": 30, "batch_size": 32, "lr": 1e-3, "optimizer": "adamp",
                "label_smoothing": 0.1}
    # big: 320 crops of 160×160 per batch keep every core's threads busy, and a training
    # takes several GB (benchmarks/cropnet.py): one process, not one per core
    parallel_folds = False

    def __init__(self, size: int = 320, crop: int = 160, alpha: float = 0.3, cgpo: bool = True,
                 feature_dim: int = 3048, trunk: str = "rexnet_100",
                 pretrained: str | bool | None = None, dropout: float = 0.2,
                 pos_variance: float = 0.2, augmentation: bool = True, **training: Any) -> None:
        super().__init__(**training)
        self.size = size
        self.crop = crop
        self.alpha = alpha
        self.cgpo = cgpo
        self.feature_dim = feature_dim
        self.trunk = trunk
        self.pretrained = pretrained
        self.dropout = dropout
        self.pos_variance = pos_variance
        self.augmentation = augmentation
        self.init_: str | None = None

    # -- network -----------------------------------------------------------------------------
    def _check_shape(self, input_shape: tuple[int, ...]) -> None:
        if len(input_shape) != 3 or input_shape[0] != 3:
            raise ConfigError(f"cropnet needs H×W×3 images, got inputs of shape "
                              f"{tuple(input_shape)} (channels first)",
                              "end the method with an ars / rrs / flow-image step")
        if tuple(input_shape[1:]) != (self.size, self.size):
            raise ConfigError(f"cropnet expects {self.size}×{self.size} images, got "
                              f"{input_shape[1]}×{input_shape[2]}",
                              f"set model.size={input_shape[1]} (and model.crop to half of it) "
                              "or the image step's size to match")
        if self.cgpo and self.size != 2 * self.crop:
            raise ConfigError(f"cropnet with CGPO needs size = 2·crop (the Gaussian level is one "
                              f"crop), got size {self.size}, crop {self.crop}",
                              f"set model.crop={self.size // 2}")

    def _create_trunk(self) -> Any:
        import timm

        try:
            return timm.create_model(self.trunk, pretrained=False, num_classes=0)
        except RuntimeError as exc:  # timm: "Unknown model (...)"
            raise ConfigError(f"cropnet: timm has no model {self.trunk!r}",
                              "use a timm CNN name such as rexnet_100 or resnet18") from exc

    def _load_trunk_weights(self, model: Any) -> str:
        """Apply ``pretrained`` to the timm model; returns the ``init_`` record."""
        path = resolve_pretrained(self.pretrained, self.trunk, "cropnet")
        if path is None:
            return "random"
        load_pretrained(model, path, head=(str(dict(getattr(model, "pretrained_cfg", {}) or {})
                                                .get("classifier", "")) or "fc",),
                        what=f"cropnet trunk {self.trunk}")
        return f"pretrained:{path}"

    def build(self, num_classes: int, input_shape: tuple[int, ...],
              weights: bool = True) -> Any:
        """The network; ``weights=False`` skips ``pretrained`` (a full saved state is
        loaded next, see :meth:`~merbench.training.TorchClassifier.init_module`)."""
        import torch

        self._check_shape(input_shape)
        boxes = crop_boxes(self.size, self.crop, self.alpha) if self.cgpo else []
        model = self._create_trunk()
        self.init_ = self._load_trunk_weights(model) if weights else "saved-state"
        side = self.crop if self.cgpo else self.size
        model.eval()
        with torch.no_grad():
            probe = model.forward_features(torch.zeros(1, 3, side, side))
        model.train()
        if probe.ndim != 4:
            raise ConfigError(f"cropnet: trunk {self.trunk!r} gives {probe.ndim}-d features, "
                              "not a feature map", "use a convolutional timm model")
        cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
        log.debug("cropnet: %d crops, boxes %s", len(boxes) + 1, boxes)
        return _module_class()(model, probe.shape[1], num_classes, self.size, self.crop, self.alpha,
                          self.cgpo, self.feature_dim, self.dropout, math.sqrt(self.pos_variance),
                          cfg.get("mean", (0.485, 0.456, 0.406)),
                          cfg.get("std", (0.229, 0.224, 0.225)))

    def augment(self, batch: Any) -> Any:
        """The seed's four augmentations, in its order, one random draw per sample (torch's
        global CPU generator, so CPU and CUDA runs draw the same values)."""
        import torch

        if not self.augmentation:
            return batch
        channels_last = batch.is_contiguous(memory_format=torch.channels_last)
        u = torch.rand(batch.shape[0], 7).to(batch.device)
        x = colour_jitter(batch, 0.2 + 1.6 * u[:, 0], 0.2 + 1.6 * u[:, 1], 0.2 + 1.6 * u[:, 2],
                          u[:, 3] - 0.5)
        x = torch.where((u[:, 4] < 0.2).view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)
        x = torch.where((u[:, 5] < 0.5).view(-1, 1, 1, 1), x.flip(-1), x)
        x = rotate(x, 30.0 * u[:, 6] - 15.0)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    # -- explanations ------------------------------------------------------------------------
    def position_similarity(self) -> np.ndarray:
        """Cosine similarities of the position embeddings p_1..p_9 (row-major crops)."""
        import torch

        if self.module_ is None or self.module_.pos is None:
            raise ConfigError("cropnet has no position embeddings to compare",
                              "fit the model with cgpo=True first")
        p = torch.nn.functional.normalize(self.module_.pos.detach().float().cpu(), dim=1)
        return (p @ p.T).numpy()

    def grad_cam(self, X: np.ndarray, targets: Sequence[int] | None = None) -> np.ndarray:
        """(N, size, size) Grad-CAM maps in [0, 1] on the input image for class ``targets``
        (default: the predicted class). Each crop's map (the trunk's last feature map) is
        upsampled to the pixels it covers, z_0's to the whole image; overlapping maps are
        averaged."""
        import torch
        import torch.nn.functional as F

        from merbench.explain import grad_cam, normalise_maps

        if self.module_ is None:
            raise ConfigError("cropnet is not fitted", "call fit() or load weights first")
        module = self.module_
        device = next(module.parameters()).device
        Xt = self.to_tensor(X)
        s, c = self.size, self.crop
        out = []
        for start in range(0, Xt.shape[0], self.batch_size):
            xb = self._prepare(Xt[start:start + self.batch_size], device)
            tb = None if targets is None else list(targets)[start:start + len(xb)]
            cams, _ = grad_cam(module, module.trunk, xb, tb)
            n = xb.shape[0]
            if not module.cgpo:
                out.append(F.interpolate(cams[:, None], size=(s, s), mode="bilinear",
                                         align_corners=False)[:, 0])
                continue
            cams = cams.view(n, module.n_crops, *cams.shape[1:])
            total = F.interpolate(cams[:, :1], size=(s, s), mode="bilinear", align_corners=False)
            cover = torch.ones(1, 1, s, s, device=cams.device)
            up = F.interpolate(cams[:, 1:], size=(c, c), mode="bilinear", align_corners=False)
            for i, (t, left) in enumerate(module.boxes):
                total[:, :, t:t + c, left:left + c] += up[:, i:i + 1]
                cover[:, :, t:t + c, left:left + c] += 1
            out.append((total / cover)[:, 0])
        return normalise_maps(torch.cat(out)).cpu().numpy()

    def explain(self, X: np.ndarray, out_dir: str | Path, targets: Sequence[int] | None = None,
                names: Sequence[str] | None = None,
                labels: Sequence[str] | None = None) -> list[Path]:
        """The shared Grad-CAM figures (:meth:`TorchClassifier.explain`, with the crop maps of
        :meth:`grad_cam`) plus ``position_similarity.png``, the cosine similarities of the
        position embeddings (CGPO only)."""
        from merbench.explain import save_matrix_heatmap

        written = super().explain(X, out_dir, targets, names, labels)
        if self.cgpo:
            sim = self.position_similarity()
            written.append(save_matrix_heatmap(
                Path(out_dir) / "position_similarity.png", sim,
                [f"p{i + 1}" for i in range(len(sim))],
                title="cosine similarity of position embeddings (row-major crops)"))
        return written


# --------------------------------------------------------------------------- registration

@hookimpl
def register_models(register: Any) -> None:
    register("cropnet", CropNet, description="CropNet: CGPO crops + shared ReXNet trunk + "
             "position embeddings (seed 000)")


def _spec(image_step: tuple[str, dict[str, Any]], model: dict[str, Any], description: str
          ) -> MethodSpec:
    return MethodSpec(steps=(("face-crop", {"size": 320}), image_step),
                      model=("cropnet", model), description=description)


@hookimpl
def register_methods(register: Any) -> None:
    ars = ("ars", {"n_key": 5, "size": 320})
    for name, step, model, text in (
        ("ars-cropnet", ars, {}, "ARS image (N_key 5) -> CropNet with CGPO (seed 000)"),
        ("rrs-cropnet", ("rrs", {"n_key": 5, "size": 320}), {},
         "RRS image (N_key 5) -> CropNet with CGPO (seed 000)"),
        ("tvl1-cropnet", ("flow-image", {"method": "tvl1", "size": 320}), {},
         "TV-L1 flow image -> CropNet (seed 000 ablation)"),
        ("farneback-cropnet", ("flow-image", {"method": "farneback", "size": 320}), {},
         "Farneback flow image -> CropNet (seed 000 ablation)"),
        ("ars-cropnet-nocgpo", ars, {"cgpo": False},
         "ARS image -> CropNet on the whole image, no CGPO (seed 000 ablation)"),
    ):
        spec = _spec(step, model, text)
        register(name, spec, description=text)
