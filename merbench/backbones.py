"""Backbones shared by deep-model plugins, so that plugins never import each other.

``resnet18`` is torchvision's ResNet-18 layout (timm's ``resnet18`` uses the same state-dict
keys), so an ImageNet state dict from either loads through :func:`init_pretrained`.
"""
from __future__ import annotations

from typing import Any, Sequence

from .training import load_pretrained, resolve_pretrained


def resnet18(in_chans: int = 3, num_classes: int = 0) -> Any:
    """A randomly initialised ResNet-18; ``num_classes=0`` replaces the classifier by an
    identity (the module then returns the 512-d pooled features); ``in_chans`` != 3 gets a
    conv1 of that many input channels (ImageNet weights are summed over RGB to fit one)."""
    import torchvision
    from torch import nn

    net = torchvision.models.resnet18(weights=None, num_classes=max(num_classes, 1))
    if in_chans != 3:
        net.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if num_classes == 0:
        net.fc = nn.Identity()
    return net


def init_pretrained(module: Any, pretrained: str | bool | None, what: str,
                    timm_name: str = "resnet18", new: Sequence[str] = (),
                    head: Sequence[str] = ("fc",)) -> str:
    """Apply a model's ``pretrained`` parameter (see :func:`merbench.training.resolve_pretrained`)
    to ``module``; returns the ``init_`` record: ``"random"`` or ``"pretrained:PATH"``.
    ``new``: key prefixes of layers the weights file cannot have (left as initialised)."""
    path = resolve_pretrained(pretrained, timm_name, what)
    if path is None:
        return "random"
    load_pretrained(module, path, head=head, new=new, what=what)
    return f"pretrained:{path}"
