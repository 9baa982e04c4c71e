"""Micro-Attention on residual networks (seed 001 approach 1; METHODS.md §6; Wang et al. 2018/2020).

Unit [seed + METHODS §6], in every residual block: for the shortcut output s, the first conv's
output after BN+ReLU a, the second conv's output b and T = b + s, Z = concat(s, a, b) (3C
channels) → 1×1 conv 3C → C (no bias) → mean over the C channels → sigmoid = M (1×H×W), and
the block gives O = T + γ·T·M (M broadcast over channels). γ [ours] is a learnable scalar per
unit initialised at 0 (``attention_gate``), so an untrained network computes exactly its plain
backbone — with the seed's literal O = T + T·M a fresh unit multiplies every block by about 1.5
(M ≈ 0.5), ×1.5⁸ ≈ 26 through ResNet-18, which wrecks frozen ImageNet features whose BN
statistics are fixed. ``attention_gate=None`` gives the literal formula (γ ≡ 1). (The 1×1 conv
followed by the channel mean is one 3C → 1 map with 3C² parameters, kept as the seed writes it;
the released Caffe net takes the mean as a fixed 1×1 conv with weights 1/C.) In ResNet-18's
post-activation blocks the block's ReLU follows O; ReLU(T)·(1 + γM) = ReLU(T·(1 + γM)) for
1 + γM > 0, so the order does not matter at γ ≥ −1.

Backbones: ``resnet18`` [seed] — torchvision's layout and keys (timm's are identical, so an
ImageNet state dict of either loads); inputs scaled to [0, 1] are normalised with ImageNet's
mean/std inside the net (their mean for 1-channel inputs, whose conv1 gets the RGB weights
summed). ``resnet10`` [METHODS §6: the authors' released network] — BatchNorm on the raw input,
conv1 7×7/2 64 → BN → ReLU → max-pool 3×3/2, four stages of one block (64, 128, 256, 512); the
first block plain (3×3 conv → BN-ReLU → 3×3 conv, identity shortcut), stages 2–4 pre-activation
(BN-ReLU on the input, 3×3/2 conv, BN-ReLU, 3×3 conv, 1×1/2 conv shortcut from the pre-activated
input), no conv biases, head BN-ReLU → global average pool → FC. The input BatchNorm keeps a
cumulative average (``momentum=None``) [ours]: raw-input statistics do not drift, and after few
steps PyTorch's 0.1 running average is still dominated by its initial variance of 1 (measured:
eval-mode predictions collapsed to one class after 32 steps on apex − onset differences). Both
backbones take any channel count (1 for grey, 3 for RGB / ARS / flow images).

Transfer learning [seed]: ``pretrained=PATH`` (a local torchvision/timm ResNet-18 state dict, or
a ``resnet10`` state dict of this layout) loads through :func:`merbench.backbones.init_pretrained`
(classifier skipped, attention units new); ``pretrained=None`` uses timm's resnet18 weights only
from a warm local cache (never downloads; resnet10: random). With weights the backbone is frozen
(``freeze_backbone=None`` → frozen iff weights were loaded): only the attention units and the
classifier train, and frozen BatchNorms stay in eval mode, so their ImageNet statistics are kept
bit for bit [ours]. ``init_`` records what happened; ``param_counts_`` the trainable and frozen
parameters (also logged).

Training [ours unless marked]: Adam, lr 1e-3, batch 16, 50 epochs (the seed's longer run); the
authors' augmentation [METHODS §6]: resize 224 → 240 and a random 224 crop (``random_crop=16``
pixels of margin, any square input size), plus a horizontal flip and a rotation in ±10° [ours];
``flip_negate`` names channels that change sign under a mirror (the u plane of flow images).
``apex-microattention-r10`` is the authors' recipe [METHODS §6]: resnet10 on grey apex frames,
SGD momentum 0.9, lr 0.01, weight decay 5e-6, batch 16, class-balanced oversampling, 2,500
iterations with lr × 0.1 every 500 — as epochs at CASME II's ~250 LOSO training samples
(16 iterations each): 160 epochs, lr step 32 [ours: the conversion].

Explanations: ``explain(X, out_dir)`` writes the shared Grad-CAM figures of the last stage
(:meth:`MicroAttentionResNet.cam_layer`) and ``attention_<name>.png``: input | Grad-CAM | M of the last block of each stage,
upsampled and overlaid (the seed's Figure 4), plus ``attention_grid.png`` for several inputs.
Maps are drawn on the model's input: the face for apex-frame methods, the ARS / flow image
otherwise.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np

from merbench import MethodSpec, hookimpl
from merbench.backbones import init_pretrained, resnet18
from merbench.errors import ConfigError
from merbench.training import TorchClassifier

log = logging.getLogger(__name__)

BACKBONES = ("resnet18", "resnet10")
STAGES = ("layer1", "layer2", "layer3", "layer4")
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@functools.cache
def modules() -> SimpleNamespace:
    """The ``nn.Module`` classes, defined on first use (listing plugins must not import torch)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class MicroAttention(nn.Module):
        """M = sigmoid(mean_C(conv1×1(concat(s, a, b)))); :meth:`modulate` gives T + γ·T·M."""

        def __init__(self, channels: int, gate: float | None) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3 * channels, channels, kernel_size=1, bias=False)
            self.gate = None if gate is None else nn.Parameter(torch.tensor(float(gate)))

        def forward(self, s: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.embed(torch.cat((s, a, b), 1)).mean(1, keepdim=True))

        def modulate(self, t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            return t + (t * m if self.gate is None else self.gate * (t * m))

    class BasicBlock(nn.Module):
        """torchvision's BasicBlock (same submodule names, so ImageNet keys load) + the unit."""

        def __init__(self, block: nn.Module, gate: float | None) -> None:
            super().__init__()
            self.conv1, self.bn1, self.relu = block.conv1, block.bn1, block.relu
            self.conv2, self.bn2, self.downsample = block.conv2, block.bn2, block.downsample
            self.attention = MicroAttention(block.conv2.out_channels, gate)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = x if self.downsample is None else self.downsample(x)
            a = self.relu(self.bn1(self.conv1(x)))
            b = self.bn2(self.conv2(a))
            t = b + s
            return self.relu(self.attention.modulate(t, self.attention(s, a, b)))

    class PreActBlock(nn.Module):
        """The released network's block: pre-activation (``preact``) or plain, identity or
        1×1-conv shortcut (from the pre-activated input), + the unit."""

        def __init__(self, cin: int, cout: int, stride: int, preact: bool,
                     gate: float | None) -> None:
            super().__init__()
            self.bn1 = nn.BatchNorm2d(cin) if preact else None
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                             if stride != 1 or cin != cout else None)
            self.attention = MicroAttention(cout, gate)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            p = x if self.bn1 is None else F.relu(self.bn1(x))
            s = x if self.shortcut is None else self.shortcut(p)
            a = F.relu(self.bn2(self.conv1(p)))
            b = self.conv2(a)
            return self.attention.modulate(b + s, self.attention(s, a, b))

    class MicroAttentionNet(nn.Module):
        """Stem → layer1..4 → (head BN-ReLU) → average pool → fc. Frozen BatchNorms (all of
        their parameters frozen) stay in eval mode in ``train()``."""

        def __init__(self, conv1: nn.Module, bn1: nn.Module, layers: Sequence[nn.Module],
                     fc: nn.Module, bn_input: nn.Module | None = None,
                     bn_final: nn.Module | None = None,
                     norm: tuple[Sequence[float], Sequence[float]] | None = None) -> None:
            super().__init__()
            self.bn_input = bn_input
            self.conv1, self.bn1 = conv1, bn1
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.bn_final = bn_final
            self.relu_final = nn.ReLU() if bn_final is not None else None
            self.fc = fc
            self.normalise = norm is not None
            mean, std = norm if norm is not None else ((0.0,), (1.0,))
            self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.normalise:
                x = (x - self.mean) / self.std
            if self.bn_input is not None:
                x = self.bn_input(x)
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            if self.bn_final is not None:
                x = self.relu_final(self.bn_final(x))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

        def train(self, mode: bool = True) -> "MicroAttentionNet":
            super().train(mode)
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d) and not any(p.requires_grad
                                                             for p in m.parameters()):
                    m.eval()
            return self

    return SimpleNamespace(MicroAttention=MicroAttention, BasicBlock=BasicBlock,
                           PreActBlock=PreActBlock, MicroAttentionNet=MicroAttentionNet)


def build_network(backbone: str, in_chans: int, num_classes: int,
                  gate: float | None = 0.0) -> Any:
    """A randomly initialised micro-attention network (see the module docstring)."""
    from torch import nn

    ns = modules()
    if backbone == "resnet18":
        base = resnet18(in_chans=in_chans, num_classes=num_classes)
        layers = [nn.Sequential(*(ns.BasicBlock(b, gate) for b in getattr(base, name)))
                  for name in STAGES]
        mean, std = _IMAGENET if in_chans == 3 else ((float(np.mean(_IMAGENET[0])),) * in_chans,
                                                     (float(np.mean(_IMAGENET[1])),) * in_chans)
        return ns.MicroAttentionNet(base.conv1, base.bn1, layers, base.fc, norm=(mean, std))
    if backbone == "resnet10":
        widths = (64, 128, 256, 512)
        layers = [nn.Sequential(ns.PreActBlock(cin, cout, 1 if k == 0 else 2, k > 0, gate))
                  for k, (cin, cout) in enumerate(zip((64,) + widths[:-1], widths))]
        return ns.MicroAttentionNet(nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False),
                                    nn.BatchNorm2d(64), layers, nn.Linear(512, num_classes),
                                    bn_input=nn.BatchNorm2d(in_chans, momentum=None),
                                    bn_final=nn.BatchNorm2d(512))
    raise ConfigError(f"micro-attention: unknown backbone {backbone!r}",
                      f"use one of {', '.join(BACKBONES)}")


def attention_prefixes(module: Any) -> tuple[str, ...]:
    """State-dict prefixes of the attention units (``layer1.0.attention``, ...)."""
    return tuple(name for name, m in module.named_modules()
                 if isinstance(m, modules().MicroAttention))


class MicroAttentionResNet(TorchClassifier):
    """Residual network with a micro-attention unit in every block (seed 001, METHODS §6).

    :param backbone: resnet18 (the seed's; ImageNet keys load) or resnet10 (the authors'
        released network: one block per stage, input BatchNorm)
    :param pretrained: backbone weights: PATH (a local torchvision/timm state dict), None (timm's
        resnet18 weights from a warm local cache, else random), True (the cache, required), False
    :param freeze_backbone: train only the attention units and the classifier; None = frozen
        exactly when pretrained weights were loaded
    :param attention_gate: initial γ of O = T + γ·T·M (learnable; 0 starts as the plain
        backbone); None for the literal O = T + T·M
    :param augmentation: False turns off crop, flip and rotation together
    :param random_crop: margin in pixels of the random crop (resize to side + margin, crop
        back; 16 is the authors' 224 -> 240 -> 224)
    :param rotation: largest random rotation in degrees
    :param flip: random horizontal mirror
    :param flip_negate: input channels whose sign flips under a mirror (the u plane of flow)
    """

    defaults = {"epochs": 50, "batch_size": 16, "lr": 1e-3, "optimizer": "adam"}

    def __init__(self, backbone: str = "resnet18", pretrained: str | bool | None = None,
                 freeze_backbone: bool | None = None, attention_gate: float | None = 0.0,
                 augmentation: bool = True, random_crop: int = 16, rotation: float = 10.0,
                 flip: bool = True, flip_negate: tuple[int, ...] = (), **training: Any) -> None:
        super().__init__(**training)
        if backbone not in BACKBONES:
            raise ConfigError(f"micro-attention: unknown backbone {backbone!r}",
                              f"use one of {', '.join(BACKBONES)}")
        if isinstance(random_crop, bool) or not isinstance(random_crop, int) or random_crop < 0:
            raise ConfigError(f"micro-attention: random_crop must be an integer >= 0, got "
                              f"{random_crop!r}", "use 16 (the authors' 224 -> 240 -> 224)")
        self.backbone = backbone
        self.pretrained = pretrained
        self.freeze_backbone = freeze_backbone
        self.attention_gate = attention_gate
        self.augmentation = augmentation
        self.random_crop = random_crop
        self.rotation = rotation
        self.flip = flip
        self.flip_negate = tuple(flip_negate)
        self.init_: str | None = None
        self.param_counts_: dict[str, int] = {}

    # -- network -----------------------------------------------------------------------------
    def _weights(self) -> str | bool | None:
        """``pretrained`` as :func:`init_pretrained` takes it (resnet10 has no ImageNet file)."""
        if self.backbone == "resnet10" and (self.pretrained is None or self.pretrained is True):
            if self.pretrained is True:
                raise ConfigError("micro-attention resnet10 has no ImageNet weights",
                                  "pass model.pretrained=PATH to a resnet10 state dict of "
                                  "this layout, or use backbone=resnet18")
            return False
        return self.pretrained

    def build(self, num_classes: int, input_shape: tuple[int, ...], weights: bool = True) -> Any:
        """The network; ``weights=False`` skips ``pretrained`` (a saved state is loaded next)."""
        if len(input_shape) != 3:
            raise ConfigError(f"micro-attention needs images, got inputs of shape {input_shape}",
                              "end the method with an apex-frame / ars / flow-image step")
        net = build_network(self.backbone, int(input_shape[0]), num_classes, self.attention_gate)
        new = attention_prefixes(net)
        if weights:
            self.init_ = init_pretrained(net, self._weights(), f"micro-attention {self.backbone}",
                                         new=new)
        else:
            self.init_ = "saved-state"
        loaded = self.init_.startswith("pretrained:")
        freeze = loaded if self.freeze_backbone is None else self.freeze_backbone
        if freeze and weights:
            for name, p in net.named_parameters():
                if not any(name.startswith(q + ".") for q in (*new, "fc")):
                    p.requires_grad_(False)
            self.init_ += ", backbone frozen"
        elif weights:
            self.init_ += ", all layers trained"
        counts = {"trainable": 0, "frozen": 0}
        for p in net.parameters():
            counts["trainable" if p.requires_grad else "frozen"] += p.numel()
        self.param_counts_ = counts
        log.info("micro-attention %s: %s; %d trainable, %d frozen parameters", self.backbone,
                 self.init_, counts["trainable"], counts["frozen"])
        return net

    def augment(self, batch: Any) -> Any:
        """Random crop (resize + crop), mirror, rotation; one draw per sample."""
        import torch

        from merbench.augment import random_crop_flip_rotate

        if not self.augmentation:
            return batch
        channels_last = batch.is_contiguous(memory_format=torch.channels_last)
        x = random_crop_flip_rotate(batch, self.random_crop, self.rotation, self.flip,
                                    self.flip_negate)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    # -- explanations ------------------------------------------------------------------------
    def cam_layer(self, module: Any) -> Any:
        """The last stage's activated output: ``layer4`` (post-ReLU in ResNet-18's blocks), or
        resnet10's head BN-ReLU on it (its pre-activation blocks output unrectified sums)."""
        return module.layer4 if module.relu_final is None else module.relu_final

    def attention_maps(self, X: np.ndarray) -> np.ndarray:
        """(N, 4, H, W): M of the last block of each stage, upsampled (bilinear) to the input
        size; raw values in (0, 1), not rescaled."""
        import torch
        import torch.nn.functional as F

        if self.module_ is None:
            raise ConfigError("micro-attention is not fitted", "call fit() or load weights")
        module = self.module_
        device = next(module.parameters()).device
        Xt = self.to_tensor(X)
        captured: list[Any] = []
        hooks = [getattr(module, name)[-1].attention.register_forward_hook(
            lambda _m, _i, out: captured.append(out)) for name in STAGES]
        module.eval()
        out = []
        try:
            with torch.no_grad():
                for start in range(0, Xt.shape[0], self.batch_size):
                    captured.clear()
                    xb = self._prepare(Xt[start:start + self.batch_size], device)
                    module(xb)
                    out.append(torch.cat([F.interpolate(m.float(), size=tuple(xb.shape[-2:]),
                                                        mode="bilinear", align_corners=False)
                                          for m in captured], 1))
        finally:
            for h in hooks:
                h.remove()
        return torch.cat(out).cpu().numpy()

    def explain(self, X: np.ndarray, out_dir: str | Path, targets: Sequence[int] | None = None,
                names: Sequence[str] | None = None,
                labels: Sequence[str] | None = None) -> list[Path]:
        """The shared Grad-CAM figures plus ``attention_<name>.png`` (input | Grad-CAM | M per
        stage, each map min-max scaled for display, its raw range in the title) and, for
        several inputs, ``attention_grid.png``."""
        from merbench.explain import safe_stem, save_overlay_grid

        written = super().explain(X, out_dir, targets, names, labels)
        X = np.asarray(X)
        images = self.display_images(X)
        cams = self.grad_cam(X, targets)
        maps = self.attention_maps(X)
        proba = self.predict_proba(X)
        classes = list(labels) if labels is not None else [str(k) for k in range(proba.shape[1])]
        stems = [safe_stem(names[i] if names is not None else i) for i in range(len(X))]
        titles = [f"{stem}: {classes[int(p.argmax())]} ({p.max():.2f})"
                  for stem, p in zip(stems, proba)]
        rows = []
        for cam, m in zip(cams, maps):
            panels = [(cam, "Grad-CAM (last stage)")]
            for k, stage in enumerate(m):
                lo, hi = float(stage.min()), float(stage.max())
                scaled = (stage - lo) / (hi - lo) if hi > lo else np.zeros_like(stage)
                panels.append((scaled, f"M stage {k + 1} ({lo:.2f}-{hi:.2f})"))
            rows.append(panels)
        out = Path(out_dir)
        for stem, image, panels, title in zip(stems, images, rows, titles):
            written.append(save_overlay_grid(out / f"attention_{stem}.png", [image], [panels],
                                             [title]))
        if len(X) > 1:
            written.append(save_overlay_grid(out / "attention_grid.png", images, rows, titles))
        return written


# --------------------------------------------------------------------------- registration

@hookimpl
def register_models(register: Any) -> None:
    register("micro-attention", MicroAttentionResNet,
             description="ResNet-18 / ResNet-10 with a micro-attention unit in every residual "
                         "block (seed 001, Wang et al.)")


@hookimpl
def register_methods(register: Any) -> None:
    face = ("face-crop", {"size": 224})
    r10 = {"backbone": "resnet10", "optimizer": "sgd", "lr": 0.01, "momentum": 0.9,
           "weight_decay": 5e-6, "batch_size": 16, "balanced_sampling": True, "epochs": 160,
           "lr_step": 32}
    for name, step, model, text in (
        ("apex-microattention", ("apex-frame", {"size": 224, "grey": False}), {},
         "face-cropped RGB apex frame 224×224 -> ResNet-18 with micro-attention (seed 001)"),
        ("ars-microattention", ("ars", {"n_key": 5, "size": 224}), {},
         "ARS image 224×224 -> ResNet-18 with micro-attention (seed 001 on motion input)"),
        ("flow-microattention", ("flow-image", {"method": "tvl1", "size": 224}),
         {"flip_negate": (0,)},
         "TV-L1 onset->apex flow image (u, v, strain) 224×224 -> ResNet-18 with micro-attention"),
        ("apex-microattention-r10", ("apex-frame", {"size": 224, "grey": True}), r10,
         "face-cropped grey apex frame 224×224 -> the authors' ResNet-10 with micro-attention "
         "and their SGD recipe"),
    ):
        register(name, MethodSpec(steps=(face, step), model=("micro-attention", model),
                                  description=text), description=text)
