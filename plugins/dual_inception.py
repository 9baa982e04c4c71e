"""Dual-Inception (Zhou, Mao & Xue, FG 2019): two Inception streams on horizontal and vertical flow.

What is followed, and from where ([code] = the authors' Keras release,
github.com/xly135846/MEGC2019, ``dual_inception.py``; [paper] = "Dual-Inception network for
cross-database micro-expression recognition", FG 2019; [ours] = chosen here where both are
silent or cannot be mirrored):

- Input: 28×28 images of the horizontal and vertical optical-flow components [paper + code];
  each stream reads one channel of the flow image, ``streams=(0, 1)`` = (u, v) of ``flow-image``.
  [ours] The released code feeds each component as a 3-channel image file (its making is not
  released); one channel carries the component here. Values ×1/255 [code: ``img / 255.0``].
- Each stream: Inception(6) → MaxPool 2 → Inception(16) → MaxPool 2 [code]. An Inception module
  of width w concatenates four ReLU branches: 1×1; 1×1 → 3×3; 1×1 → 5×5 (a true 5×5, not two
  3×3); MaxPool 3×3 stride 1 → 1×1, each with w channels, 'same' padding [code].
- Head: the two flattened streams (2 × 64 × 7 × 7) concatenated → Linear 1024 + ReLU → Linear
  classes [code]. Weights Glorot-uniform, biases zero (the Keras defaults) [code].
- Training: Adam lr 1e-4, batch 3, 40 epochs, cross-entropy, the weights of the epoch with the
  lowest validation loss kept (Keras ModelCheckpoint save_best_only) [code]; no class weights
  (the code's ``class_weight='auto'`` is ignored by Keras 2.2.4) [code]. [ours] The validation
  subjects are a random 20% of the training subjects (``val_fraction=0.2``, the
  ``validate_partion`` of the code's parameters.py); the released script instead validates on the
  other subjects of the test subject's own database and trains on the other two databases.
  ``patience=40`` keeps all 40 epochs, as the code does.
- [ours] The paper computes flow from onset to the *middle* frame; ``flow-dual-inception`` uses
  the onset→apex flow of ``flow-image`` (the apex is annotated in CASME II and SAMM).
"""
from __future__ import annotations

import functools
from typing import Any

from merbench import MethodSpec, hookimpl
from merbench.errors import ConfigError
from merbench.training import TorchClassifier

#: Branch widths of the first and second Inception module of each stream [code].
WIDTHS = (6, 16)


@functools.cache
def module_classes() -> tuple[type, type]:
    """(InceptionBlock, DualInceptionModule), defined on first use so that loading the plugin does
    not import torch; pickle finds them through the module ``__getattr__``."""
    import torch
    from torch import nn

    def conv(cin: int, cout: int, k: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU())

    class InceptionBlock(nn.Module):
        """Four parallel branches of ``width`` channels each, concatenated (4 × width out)."""

        def __init__(self, in_channels: int, width: int) -> None:
            super().__init__()
            self.branch1 = conv(in_channels, width, 1)
            self.branch3 = nn.Sequential(conv(in_channels, width, 1), conv(width, width, 3))
            self.branch5 = nn.Sequential(conv(in_channels, width, 1), conv(width, width, 5))
            self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1),
                                             conv(in_channels, width, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x),
                              self.branch_pool(x)], dim=1)

    class DualInceptionModule(nn.Module):
        """Horizontal- and vertical-flow Inception streams, concatenated, then two FC layers."""

        def __init__(self, num_classes: int = 3, in_channels: int = 3,
                     size: tuple[int, int] = (28, 28), streams: tuple[int, int] = (0, 1),
                     hidden: int = 1024) -> None:
            super().__init__()
            if len(streams) != 2 or not all(0 <= int(c) < in_channels for c in streams):
                raise ConfigError(f"dual-inception streams={tuple(streams)} must name two of the "
                                  f"input's {in_channels} channels",
                                  "use the (horizontal, vertical) flow channels, e.g. (0, 1)")
            h, w = (int(s) // 4 for s in size)
            if h < 1 or w < 1:
                raise ConfigError(f"dual-inception input {size[0]}×{size[1]} is too small",
                                  "feed 28×28 inputs (flow-image size=28)")
            self.channels = tuple(int(c) for c in streams)
            self.stream_x = self._stream()
            self.stream_y = self._stream()
            self.fc1 = nn.Linear(2 * 4 * WIDTHS[1] * h * w, hidden)
            self.fc2 = nn.Linear(hidden, num_classes)
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)

        @staticmethod
        def _stream() -> nn.Sequential:
            return nn.Sequential(InceptionBlock(1, WIDTHS[0]), nn.MaxPool2d(2),
                                 InceptionBlock(4 * WIDTHS[0], WIDTHS[1]), nn.MaxPool2d(2))

        def features(self, x: torch.Tensor) -> torch.Tensor:
            """The concatenated flattened stream outputs (N, 2 × 64 × 7 × 7 for 28×28)."""
            cx, cy = self.channels
            return torch.cat([torch.flatten(self.stream_x(x[:, cx:cx + 1]), 1),
                              torch.flatten(self.stream_y(x[:, cy:cy + 1]), 1)], dim=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(self.features(x))))

    InceptionBlock.__qualname__ = "InceptionBlock"
    DualInceptionModule.__qualname__ = "DualInceptionModule"
    return InceptionBlock, DualInceptionModule


def __getattr__(name: str) -> Any:
    if name in ("InceptionBlock", "DualInceptionModule"):
        return dict(zip(("InceptionBlock", "DualInceptionModule"), module_classes()))[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class DualInception(TorchClassifier):
    """Dual-Inception on 28×28 flow images; defaults from the authors' released code.

    :param streams: the input channels of the horizontal and vertical flow streams
    :param hidden: width of the fully connected layer after the two streams
    """

    defaults = {"epochs": 40, "batch_size": 3, "lr": 1e-4, "val_fraction": 0.2, "patience": 40}
    parallel_folds = True  # 28×28 inputs, batch 3: one thread per fold, folds side by side

    def __init__(self, streams: tuple[int, int] = (0, 1), hidden: int = 1024,
                 **training: Any) -> None:
        super().__init__(**training)
        self.streams = streams
        self.hidden = hidden

    def build(self, num_classes: int, input_shape: tuple[int, ...]) -> Any:
        if len(input_shape) != 3:
            raise ConfigError(f"dual-inception needs (C, H, W) images, got shape {input_shape}",
                              "feed H×W×3 flow images (flow-image step)")
        return module_classes()[1](num_classes, input_shape[0], input_shape[1:],
                                   tuple(self.streams), self.hidden)


@hookimpl
def register_models(register: Any) -> None:
    register("dual-inception", DualInception,
             description="Dual-Inception (Zhou et al. 2019): Inception streams on u and v flow")


@hookimpl
def register_methods(register: Any) -> None:
    register("flow-dual-inception", MethodSpec(
        steps=(("face-crop", {"size": 128}), ("flow-image", {"size": 28})),
        model=("dual-inception", {}),
        description="face crop → TV-L1 onset→apex flow, 28×28 → Dual-Inception"))
    register("dual-inception", MethodSpec(
        steps=(), model=("dual-inception", {}),
        description="Dual-Inception on precomputed 28×28 flow images (folder dataset)"))
