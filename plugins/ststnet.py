"""STSTNet: the shallow triple-stream CNN of Liong et al. (2019) on optical flow + strain.

Follows the authors' released code (github.com/christy1206/STSTNet, ``main.py``) and METHODS §9:
three parallel streams Conv2d(3→3 / 3→5 / 3→8, 3×3, padding 2) → ReLU → BatchNorm →
MaxPool(3, stride 3, padding 1) → Dropout 0.5, concatenated (16×10×10 for a 28×28 input) →
AvgPool(2, 2) → flatten (400) → Linear(400 → classes) [code]. Module attribute names are the
published state-dict keys (conv1..3, bn1..3, fc), so the per-subject weight files the authors
released load through :meth:`TorchClassifier.load_weights` unchanged.

Defaults are the published training set-up [code + paper]: Adam, lr 5e-5, batch 256, 500 epochs
(the paper; the released script says 800: set ``model.epochs=800``), no augmentation, the last
epoch is the one evaluated (no validation split), inputs are raw 0–255 floats
(``input_scale=1.0``: the published weights were trained on ``cv2.imread`` images, BGR order,
so ``flow-ststnet`` asks ``flow-image`` for channels "svu" = strain, v, u; training from scratch
does not care, every stream sees all three channels).
[ours] The shared training loop reshuffles each epoch; the released script iterates its
training set in folder order without shuffling. [ours] ``amp=False`` by default: a 1.7k-parameter
net gains nothing from mixed precision on CUDA, and bf16 rounds raw 0–255 inputs by up to ±1.
"""
from __future__ import annotations

import functools
from typing import Any

from merbench import MethodSpec, hookimpl
from merbench.errors import ConfigError
from merbench.training import TorchClassifier

#: Output channels of the three streams (conv1, conv2, conv3), as in the released code.
STREAM_WIDTHS = (3, 5, 8)


def stream_size(size: int) -> int:
    """Spatial size after one stream: 3×3 conv with padding 2, then MaxPool(3, 3, padding 1)."""
    conv = size + 2 * 2 - 3 + 1
    return (conv + 2 * 1 - 3) // 3 + 1


@functools.cache
def module_class() -> type:
    """The ``nn.Module`` class, defined on first use: loading the plugin must not import torch
    (~3 s on every ``merbench`` command). Pickle finds it through the module ``__getattr__``."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class STSTNetModule(nn.Module):
        """Three shallow streams, each seeing the whole (u, v, strain) input."""

        def __init__(self, num_classes: int = 3, in_channels: int = 3,
                     size: tuple[int, int] = (28, 28), dropout: float = 0.5) -> None:
            super().__init__()
            h, w = (stream_size(int(s)) // 2 for s in size)
            if h < 1 or w < 1:
                raise ConfigError(f"STSTNet input {size[0]}×{size[1]} is too small",
                                  "feed 28×28 inputs (flow-image size=28)")
            a, b, c = STREAM_WIDTHS
            self.conv1 = nn.Conv2d(in_channels, a, kernel_size=3, padding=2)
            self.conv2 = nn.Conv2d(in_channels, b, kernel_size=3, padding=2)
            self.conv3 = nn.Conv2d(in_channels, c, kernel_size=3, padding=2)
            self.bn1 = nn.BatchNorm2d(a)
            self.bn2 = nn.BatchNorm2d(b)
            self.bn3 = nn.BatchNorm2d(c)
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=3, padding=1)
            self.avgpool = nn.AvgPool2d(kernel_size=2, stride=2)
            self.dropout = nn.Dropout(p=dropout)
            self.fc = nn.Linear(sum(STREAM_WIDTHS) * h * w, num_classes)

        def streams(self, x: torch.Tensor) -> torch.Tensor:
            """The concatenated stream outputs: (N, 16, 10, 10) for 28×28 inputs.

            The three streams share input, kernel size and padding and every later layer acts
            per channel, so they run as one 16-channel conv / BN / pool: the same arithmetic as
            three separate streams (:meth:`streams_reference`), ~1.2× faster on a CPU.
            Training runs it in channels_last (``STSTNet.cpu_channels_last``): max-pool and
            BatchNorm ~1.25× faster per step on a CPU, at the price of BatchNorm batch
            statistics computed to ~1e-4 relative precision instead of ~1e-7 on 0–255 inputs
            (far below the batch's own sampling noise); evaluation of loaded weights stays in
            the default layout, at full precision."""
            convs, bns = (self.conv1, self.conv2, self.conv3), (self.bn1, self.bn2, self.bn3)
            h = F.conv2d(x, torch.cat([c.weight for c in convs]),
                         torch.cat([c.bias for c in convs]), padding=2)
            h = self.relu(h)
            mean = torch.cat([b.running_mean for b in bns])
            var = torch.cat([b.running_var for b in bns])
            h = F.batch_norm(h, mean, var, torch.cat([b.weight for b in bns]),
                             torch.cat([b.bias for b in bns]), self.training,
                             self.bn1.momentum, self.bn1.eps)
            if self.training:  # F.batch_norm updated the concatenated copies in place
                with torch.no_grad():
                    for b, m, v in zip(bns, mean.split(STREAM_WIDTHS), var.split(STREAM_WIDTHS)):
                        b.running_mean.copy_(m)
                        b.running_var.copy_(v)
                        b.num_batches_tracked += 1
            return self.drop(self.maxpool(h))

        def drop(self, h: torch.Tensor) -> torch.Tensor:
            """``nn.Dropout``'s arithmetic (keep with probability 1 − p, scale kept values by
            1 / (1 − p)), the mask drawn with ``rand_like``: the CPU's ``bernoulli_`` takes
            twice as long (~7 ms a step at batch 256, an eighth of a training step)."""
            p = self.dropout.p
            if not self.training or p == 0:
                return h
            if p >= 1:
                return h * 0.0
            return h * ((torch.rand_like(h) >= p).to(h.dtype) * (1.0 / (1.0 - p)))

        def streams_reference(self, x: torch.Tensor) -> torch.Tensor:
            """The three streams one by one, exactly as the released code runs them."""
            return torch.cat([self.drop(self.maxpool(bn(self.relu(conv(x)))))
                              for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2),
                                               (self.conv3, self.bn3))], dim=1)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            """The flattened pooled features the classifier sees: (N, 400) for 28×28."""
            return torch.flatten(self.avgpool(self.streams(x)), 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.features(x))

    STSTNetModule.__qualname__ = "STSTNetModule"
    return STSTNetModule


def __getattr__(name: str) -> Any:
    if name == "STSTNetModule":
        return module_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class STSTNet(TorchClassifier):
    """STSTNet on 28×28×3 (u, v, strain) flow images, published defaults (METHODS §9).

    :param dropout: dropout after each stream's max-pooling (0.5 in the released code)
    """

    defaults = {"epochs": 500, "batch_size": 256, "lr": 5e-5, "input_scale": 1.0, "amp": False}
    parallel_folds = True  # 1.7k parameters: one thread per fold, folds side by side
    cpu_channels_last = True  # ~1.25× faster training steps on a CPU (see streams())
    cam_target = "maxpool"  # the fused streams' pooled 16-channel map (convs run functionally)

    def __init__(self, dropout: float = 0.5, **training: Any) -> None:
        super().__init__(**training)
        self.dropout = dropout

    def build(self, num_classes: int, input_shape: tuple[int, ...]) -> Any:
        if len(input_shape) != 3:
            raise ConfigError(f"STSTNet needs (C, H, W) images, got shape {input_shape}",
                              "feed H×W×3 flow images (flow-image step)")
        return module_class()(num_classes, input_shape[0], input_shape[1:], self.dropout)


@hookimpl
def register_models(register: Any) -> None:
    register("ststnet", STSTNet,
             description="STSTNet (Liong et al. 2019): shallow triple-stream CNN on flow + strain")


@hookimpl
def register_methods(register: Any) -> None:
    register("flow-ststnet", MethodSpec(
        steps=(("face-crop", {"size": 128}), ("flow-image", {"size": 28, "channels": "svu"})),
        model=("ststnet", {}),
        description="face crop → TV-L1 onset→apex flow + strain, 28×28 → STSTNet",
        # the published 500 epochs take ~1.5 min more on 2 cores; 100 keep the demo short
        demo={"model.epochs": 100}))
    register("ststnet", MethodSpec(
        steps=(), model=("ststnet", {}),
        description="STSTNet on precomputed 28×28×3 flow images (folder dataset)"))
