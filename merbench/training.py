"""The one torch training loop every deep model reuses, its settings and the weight loader.

A deep model plugin subclasses :class:`TorchClassifier`, declares its architecture parameters in
``__init__(self, ..., **training)`` and its own defaults for the shared training settings in a
``defaults`` class attribute, and defines ``build(num_classes, input_shape)`` returning its
``nn.Module``. Optional hooks: ``augment(batch)``, ``loss(output, target)`` (extra loss terms),
``logits(output)``, ``on_epoch_end(epoch)``, ``cam_layer(module)`` (the Grad-CAM target of the
default ``explain``).
Everything else lives here, once: the settings in :data:`TRAINING_SETTINGS` (optimizer, loss,
epochs, batches, learning-rate steps, class balancing, subject-disjoint validation and early
stopping, AMP and channels_last on CUDA), seeding, the resumable training state, local
pretrained-weight loading (:func:`load_pretrained`) and Grad-CAM explanations.
"""
from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np

from .base import Model
from .errors import CheckpointError, ConfigError, DataError

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA). CPU kernels are deterministic for a given
    thread count; CUDA kernels may not be bit-exact between runs."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def resolve_device(device: str = "auto") -> Any:
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available",
                          "use --device cpu or --device auto")
    return torch.device(device)


def make_optimizer(name: str, params: Any, lr: float, weight_decay: float,
                   momentum: float = 0.9) -> Any:
    import torch

    name = name.lower()
    if name in ("adam", "adamw"):
        # fused kernels: the same update (to ~1e-6) at a fraction of the per-step cost, which
        # dominates small-batch training on a CPU
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        params = list(params)
        try:
            return cls(params, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError):  # a device or dtype without fused support
            return cls(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamp":
        from adamp import AdamP

        return AdamP(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}", "use adam, adamw, sgd or adamp")


def subject_split(groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A boolean validation mask holding whole subjects (never a test subject: only training
    groups are passed in). At least one subject stays on each side."""
    subjects = np.array(sorted(set(groups.tolist())))
    if len(subjects) < 2:
        raise ConfigError("a validation split needs at least two training subjects",
                          "set val_fraction=0")
    rng = np.random.default_rng(seed)
    n_val = min(len(subjects) - 1, max(1, round(fraction * len(subjects))))
    val_subjects = set(rng.permutation(subjects)[:n_val].tolist())
    return np.array([g in val_subjects for g in groups.tolist()])



# -- the shared training settings ------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One training setting: its default, type, one-line meaning and a validity check."""

    default: Any
    type: type | tuple[type, ...]
    help: str
    check: Callable[[Any], bool] = field(default=lambda v: True, repr=False)
    expect: str = ""

    def validate(self, owner: str, name: str, value: Any) -> Any:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok or not self.check(value):
            expect = self.expect or " or ".join(t.__name__ for t in types)
            raise ConfigError(f"model {owner}: {name}={value!r} is invalid, expected {expect}",
                              f"{name}: {self.help}")
        return value


def _positive(v: Any) -> bool:
    return v > 0


def _non_negative(v: Any) -> bool:
    return v >= 0


#: Every training setting of every deep model, declared once. A model changes a default with
#: its ``defaults`` class attribute; users change a value with ``--set model.NAME=VALUE``.
TRAINING_SETTINGS: dict[str, Setting] = {
    "epochs": Setting(10, int, "passes over the training samples (the last epoch is the one "
                      "evaluated unless val_fraction > 0)", _positive, "a positive integer"),
    "batch_size": Setting(32, int, "samples per optimizer step (a last batch of one sample is "
                          "merged into the previous one)", _positive, "a positive integer"),
    "lr": Setting(1e-3, float, "learning rate", _positive, "a positive number"),
    "optimizer": Setting("adam", str, "adam | adamw | sgd | adamp",
                         lambda v: v.lower() in ("adam", "adamw", "sgd", "adamp"),
                         "one of adam, adamw, sgd, adamp"),
    "momentum": Setting(0.9, float, "SGD momentum (sgd only)", lambda v: 0 <= v < 1,
                        "a number in [0, 1)"),
    "weight_decay": Setting(0.0, float, "L2 weight decay", _non_negative, "a number >= 0"),
    "lr_step": Setting(0, int, "multiply the learning rate by lr_gamma every lr_step epochs "
                       "(0: constant)", _non_negative, "an integer >= 0"),
    "lr_gamma": Setting(0.1, float, "learning-rate factor of each lr_step", _positive,
                        "a positive number"),
    "label_smoothing": Setting(0.0, float, "cross-entropy label smoothing",
                               lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "class_weights": Setting(False, bool, "weight the cross-entropy by inverse class frequency"),
    "balanced_sampling": Setting(False, bool, "draw each epoch's samples class-balanced (with "
                                 "replacement), the oversampling of imbalanced MER sets"),
    "val_fraction": Setting(0.0, float, "fraction of the training subjects held out for early "
                            "stopping (whole subjects; 0: none, the last epoch is kept)",
                            lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "patience": Setting(10, int, "epochs without a better validation loss before stopping",
                        _positive, "a positive integer"),
    "input_scale": Setting(1 / 255, float, "inputs are multiplied by this (1/255 maps 0..255 "
                           "images to 0..1)", _positive, "a positive number"),
    "channels_first": Setting(False, bool, "inputs are already (N, C, H, W); otherwise "
                              "(N, H, W, C) images are transposed"),
    "amp": Setting(True, bool, "mixed precision on CUDA (bf16 where supported)"),
    "num_workers": Setting(0, int, "DataLoader worker processes on CUDA (0: whole-tensor "
                           "batches)", _non_negative, "an integer >= 0"),
    "micro_batch": Setting(0, int, "samples per forward/backward pass; a batch's gradients are "
                           "summed over its micro-batches before the optimizer step (0: the "
                           "whole batch, split automatically when it would not fit the memory "
                           "budget, MERBENCH_MEMORY_GB; BatchNorm then sees micro-batches)",
                           _non_negative, "an integer >= 0"),
}


# -- memory and the training state's timing ------------------------------------------------------
#: Training processes sharing this machine's memory (set in local worker processes).
MEMORY_SHARE = 1


def memory_budget(device: Any) -> tuple[float, str]:
    """(bytes one training may use, where that figure comes from): ``MERBENCH_MEMORY_GB``;
    else on CUDA 90 % of the device's free memory, on the CPU 80 % of the available memory
    shared among the worker processes training side by side."""
    forced = os.environ.get("MERBENCH_MEMORY_GB", "").strip()
    if forced:
        try:
            value = float(forced)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise ConfigError(f"MERBENCH_MEMORY_GB must be a positive number, got {forced!r}",
                              "e.g. MERBENCH_MEMORY_GB=8")
        return value * 1e9, f"MERBENCH_MEMORY_GB={forced}"
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        # blocks torch's caching allocator holds but no tensor uses are free to this process
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return 0.9 * free, "90 % of the free GPU memory"
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = float(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    if available is None:  # pragma: no cover
        return math.inf, "unknown available memory"
    share = max(1, MEMORY_SHARE)
    return 0.8 * available / share, ("80 % of the available memory" +
                                     (f" / {share} workers" if share > 1 else ""))


def state_interval() -> float:
    """Seconds between two saves of the resumable training state (``MERBENCH_STATE_SECONDS``,
    default 30; the end of a fit is always saved): each save costs a serialisation, which
    every epoch of a small model would pay for nothing."""
    text = os.environ.get("MERBENCH_STATE_SECONDS", "").strip()
    try:
        return float(text) if text else 30.0
    except ValueError:
        raise ConfigError(f"MERBENCH_STATE_SECONDS must be a number, got {text!r}") from None


def _setting_params() -> dict[str, inspect.Parameter]:
    return {name: inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=s.default,
                                    annotation=s.type)
            for name, s in TRAINING_SETTINGS.items()}


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive batches over n items; a last batch of one item joins the previous batch,
    since a one-sample training batch breaks BatchNorm ("Expected more than 1 value per
    channel") and gives a gradient from a single sample."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [slice(a, b) for a, b in zip(starts, starts[1:] + [n])]


# -- local pretrained weights ----------------------------------------------------------------
def load_failure(exc: BaseException) -> str:
    """Why torch could not load a file, in a few words: never torch's advice to load it with
    ``weights_only=False`` (that would run whatever code the file holds)."""
    import pickle

    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) or "weights only load failed" in text.lower():
        return "it holds Python objects that only unpickling could load, which merbench " \
               "refuses (it could run any code)"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return first if len(first) <= 160 else first[:157] + "..."


def read_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """A state dict from a safetensors or torch file (``weights_only=True``: no pickle), with
    common wrappers (``state_dict``, ``model``) and DataParallel's ``module.`` prefix removed."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist",
                              "pass the path of a local state dict (.safetensors, .pth, .bin)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise CheckpointError(f"cannot read weights {path}: {load_failure(exc)}",
                              "pass a state dict saved with torch.save or safetensors") from exc
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did: loaded keys, and the keys it could not match."""

    path: str
    loaded: list[str]
    missing: list[str]  # in the module, not in the file (and not declared new)
    unexpected: list[str]  # in the file, not in the module
    mismatched: list[str]  # in both, shapes differ
    skipped: list[str]  # classifier-head keys of the file, not loaded
    adapted: list[str]  # input convs whose channels were summed to fit (e.g. RGB -> grey)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self, names: Sequence[str] = ("missing", "unexpected", "mismatched")) -> str:
        parts = []
        for name in names:
            keys = getattr(self, name)
            if keys:
                parts.append(f"{name} {len(keys)}: {', '.join(keys[:4])}"
                             + (" ..." if len(keys) > 4 else ""))
        return "; ".join(parts)

    def describe(self) -> str:
        rest = self.problems(("missing", "unexpected", "mismatched", "skipped", "adapted"))
        return f"{len(self.loaded)} tensors loaded from {self.path}" + (f"; {rest}" if rest else "")


def load_pretrained(module: Any, path: str | os.PathLike, *, head: Sequence[str] = ("fc",
                    "classifier", "head", "last_linear"), new: Sequence[str] = (),
                    strict: bool = True, what: str = "",
                    fix: str = "pass the ImageNet state dict of the same architecture"
                    ) -> LoadReport:
    """Load a torchvision or timm state dict into ``module`` (or a part of it).

    The file's classifier head (keys under ``head``) is skipped; keys of ``module`` under a
    prefix in ``new`` are layers the file cannot have (e.g. attention units) and stay as they
    are. A file input conv with 3 channels loads into a 1-channel conv by summing over its
    channels (as timm's ``adapt_input_conv`` does). Any other missing, unexpected or mis-shaped
    key is a :class:`CheckpointError` naming them (``strict=False``: only reported)."""
    state = read_state_dict(path)

    def under(key: str, prefixes: Sequence[str]) -> bool:
        return any(key == p or key.startswith(p + ".") for p in prefixes)

    own = module.state_dict()
    skipped = sorted(k for k in state if under(k, head))
    state = {k: v for k, v in state.items() if not under(k, head)}
    adapted, mismatched = [], []
    for k in list(state):
        if k in own and tuple(state[k].shape) != tuple(own[k].shape):
            a, b = tuple(state[k].shape), tuple(own[k].shape)
            if len(a) == 4 and len(b) == 4 and a[0] == b[0] and a[2:] == b[2:] and b[1] == 1:
                state[k] = state[k].sum(dim=1, keepdim=True)
                adapted.append(k)
            else:
                mismatched.append(f"{k}: file {a} vs model {b}")
    bad_shape = {m.split(":", 1)[0] for m in mismatched}
    report = LoadReport(
        str(path), sorted(k for k in state if k in own and k not in bad_shape),
        sorted(k for k in own if k not in state and not under(k, (*head, *new))
               and not k.endswith("num_batches_tracked")),
        sorted(k for k in state if k not in own), mismatched, skipped, adapted)
    if strict and not report.ok:
        raise CheckpointError(f"weights {path} do not fit {what or type(module).__name__}: "
                              + report.problems(), fix)
    import torch

    with torch.no_grad():
        for k in report.loaded:
            own[k].copy_(state[k].to(own[k].dtype))
    log.info("%s: %s", what or type(module).__name__, report.describe())
    return report


def cached_timm_weights(model: Any) -> Path | None:
    """A timm model's pretrained file if it is already in the local Hugging Face hub or torch hub
    cache (a warm cache); nothing is downloaded. ``model`` may also be its ``pretrained_cfg``."""
    cfg = dict(model if isinstance(model, dict) else getattr(model, "pretrained_cfg", None) or {})
    if cfg.get("hf_hub_id"):
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - timm depends on it
            return None
        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(cfg["hf_hub_id"], filename)
            if isinstance(found, str):
                return Path(found)
    if cfg.get("url"):
        import torch

        path = Path(torch.hub.get_dir()) / "checkpoints" / cfg["url"].rsplit("/", 1)[-1]
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=16)
def _timm_pretrained_cfg(timm_name: str) -> dict:
    """A timm model's pretrained config, read once per process (building the model to read it
    costs ~0.5 s, once per fold otherwise). Only the config is cached: the cache folders are
    looked at on every call, so weights placed there mid-process are found."""
    import timm

    return dict(timm.create_model(timm_name, pretrained=False).pretrained_cfg or {})


def _cached_timm_file(timm_name: str) -> Path | None:
    return cached_timm_weights(_timm_pretrained_cfg(timm_name))


def resolve_pretrained(pretrained: str | bool | None, timm_name: str, what: str) -> Path | None:
    """Where a model's pretrained weights come from: ``PATH`` (a local file), ``None`` (timm's
    weights for ``timm_name`` if already cached locally, else random init), ``True`` (the cache,
    required) or ``False`` (random init). Nothing is ever downloaded."""
    if pretrained is False or (isinstance(pretrained, str) and pretrained.lower() in
                               ("", "none", "random", "false")):
        return None
    if pretrained is None or pretrained is True:
        path = _cached_timm_file(timm_name)
        if path is None and pretrained is True:
            raise CheckpointError(f"{what}: no cached ImageNet weights for {timm_name!r} (timm "
                                  "looks in the Hugging Face / torch hub cache)",
                                  "pass model.pretrained=PATH to a local weights file")
        return path
    path = Path(str(pretrained)).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{what}: weights file {path} does not exist",
                              "pass model.pretrained=PATH to a local state dict")
    return path


_MEMORY_ESTIMATES: dict[tuple[Any, ...], tuple[float, float]] = {}


def _same(t: Any) -> Any:
    return t


# -- the model base --------------------------------------------------------------------------
class TorchClassifier(Model):
    """Base for deep models: the shared training loop over numpy inputs.

    A subclass declares its architecture parameters and passes ``**training`` on::

        class TinyNet(TorchClassifier):
            defaults = {"epochs": 20, "lr": 1e-2}      # its own training defaults

            def __init__(self, hidden: int = 16, **training):
                super().__init__(**training)
                self.hidden = hidden

            def build(self, num_classes, input_shape): ...

    ``get_params`` then reports every setting of :data:`TRAINING_SETTINGS` with the model's
    effective default, and an unknown keyword is refused. Inputs: (N, H, W, C) images are moved
    to NCHW (``channels_first`` for arrays already so), (N, H, W) get a channel axis; values are
    multiplied by ``input_scale``. ``num_classes``, ``seed``, ``device``, ``train_state`` (where
    the resumable training state of this fit lives) and ``progress`` are supplied by the runner.
    """

    keyword_params: ClassVar[Mapping[str, inspect.Parameter]] = _setting_params()
    defaults: ClassVar[Mapping[str, Any]] = {}
    #: dotted name of the Grad-CAM target layer in the module ("" = the last Conv2d)
    cam_target: ClassVar[str] = ""
    #: train in the channels_last memory format on the CPU as well as on CUDA (where it always
    #: is): for models whose CPU kernels run faster so (measured: STSTNet's max-pool and
    #: BatchNorm, see benchmarks/ststnet.py). Weights loaded for evaluation stay as they are.
    cpu_channels_last: ClassVar[bool] = False

    def __init__(self, num_classes: int = 3, seed: int = 0, device: str = "auto",
                 train_state: str | None = None, progress: bool = False,
                 **training: Any) -> None:
        effective = {name: p.default for name, p in type(self).param_specs().items()}
        unknown = [k for k in training if k not in TRAINING_SETTINGS]
        if unknown:
            import difflib

            known = sorted(type(self).param_specs())
            close = difflib.get_close_matches(unknown[0], known, n=1)
            raise ConfigError(f"model {type(self).__name__} has no parameter {unknown[0]!r}"
                              + (f" (did you mean {close[0]!r}?)" if close else ""),
                              f"its parameters are: {', '.join(known)}")
        owner = type(self).__name__
        for name, setting in TRAINING_SETTINGS.items():
            value = training.get(name, effective[name])
            setattr(self, name, setting.validate(owner, name, value))
        self.num_classes = num_classes
        self.seed = seed
        self.device = device
        self.train_state = train_state
        self.progress = progress
        self.module_: Any = None
        self.history_: list[dict[str, float]] = []

    @classmethod
    def param_specs(cls) -> dict[str, inspect.Parameter]:
        from .base import init_params

        return init_params(cls)

    # -- to override -------------------------------------------------------------------------
    def build(self, num_classes: int, input_shape: tuple[int, ...]) -> Any:
        raise NotImplementedError

    def augment(self, batch: Any) -> Any:
        """Training-time augmentation of a float NCHW batch on the device (default: none)."""
        return batch

    def logits(self, output: Any) -> Any:
        """The (N, classes) logits in the module's output (models returning more override)."""
        return output

    def loss(self, output: Any, target: Any) -> Any:
        """The training loss of one batch: cross-entropy with the configured label smoothing
        and class weights (``self.criterion_``). Models with more terms return ``(total,
        {name: term})``; each term's epoch mean is kept in ``history_`` as ``loss_<name>``."""
        return self.criterion_(self.logits(output).float(), target)

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each training epoch (``epoch`` counts from 1; its record is already in
        ``history_``; the module is in training mode), e.g. to keep snapshots (default: none)."""

    def cam_layer(self, module: Any) -> Any:
        """The Grad-CAM target: ``cam_target`` if set, else the module's last Conv2d."""
        from torch import nn

        if self.cam_target:
            return module.get_submodule(self.cam_target)
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ConfigError(f"{type(self).__name__} has no convolution for Grad-CAM",
                              "set the model's cam_target to a layer with a feature map")
        return convs[-1]

    # -- data --------------------------------------------------------------------------------
    def to_tensor(self, X: np.ndarray) -> Any:
        """Numpy inputs -> a CPU tensor in NCHW (kept in its dtype; scaled per batch)."""
        import torch

        X = np.asarray(X)
        if X.ndim == 3:  # (N, H, W) grey
            X = X[:, None]
        elif X.ndim == 4 and not self.channels_first:
            X = X.transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(X))

    def _prepare(self, xb: Any, device: Any) -> Any:
        import torch

        last = xb.ndim == 4 and (device.type == "cuda" or getattr(self, "channels_last_", False))
        # one copy: the float conversion writes the memory format the module takes
        xb = xb.to(device, non_blocking=True).to(
            torch.float32, memory_format=torch.channels_last if last else torch.preserve_format)
        if self.input_scale != 1:
            xb = xb * self.input_scale
        return xb

    def _epoch_order(self, y: Any, shuffle: bool, gen: Any) -> Any:
        """Sample order of one epoch: a permutation, or a class-balanced draw with
        replacement (``balanced_sampling``)."""
        import torch

        n = y.shape[0]
        if not shuffle:
            return torch.arange(n)
        if self.balanced_sampling:
            counts = torch.bincount(y.cpu(), minlength=self.num_classes).double()
            weights = (1.0 / counts.clamp_min(1))[y.cpu()]
            return torch.multinomial(weights, n, replacement=True, generator=gen)
        return torch.randperm(n, generator=gen)

    def _batches(self, X: Any, y: Any, shuffle: bool, gen: Any, device: Any) -> Iterator[Any]:
        """Batches of one epoch (see :func:`batch_slices`); a DataLoader with pinned memory and
        worker processes on CUDA when ``num_workers`` > 0."""
        import torch

        order = self._epoch_order(y, shuffle, gen)
        slices = batch_slices(len(order), self.batch_size)
        if device.type == "cuda" and self.num_workers > 0:
            ds = torch.utils.data.TensorDataset(X, y)
            loader = torch.utils.data.DataLoader(
                ds, batch_sampler=[order[s].tolist() for s in slices],
                num_workers=self.num_workers, pin_memory=True)
            yield from loader
            return
        for s in slices:
            idx = order[s]
            yield X[idx], y[idx]

    def _autocast(self, device: Any) -> Any:
        import contextlib

        import torch

        if device.type == "cuda" and self.amp:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    def _micro_batch(self, module: Any, X: Any, device: Any) -> int:
        """Samples per forward/backward pass (the ``micro_batch`` setting): the whole batch,
        or equal parts that fit :func:`memory_budget` by :meth:`_memory_estimate`. A training
        that would not fit two samples per pass, or the ``micro_batch`` asked for, is refused
        here, before it starts, instead of being killed by the kernel midway."""
        batch = min(self.batch_size, len(X))
        budget, source = memory_budget(device)
        if budget == math.inf:
            return min(self.micro_batch or batch, batch)
        per_sample, fixed = self._memory_estimate(module, X, device)
        fits = int((budget - fixed) // per_sample) if per_sample > 0 else batch
        name, least = type(self).__name__, min(2, batch)

        def gb(n: int) -> str:
            return f"{(fixed + n * per_sample) / 1e9:.1f} GB"

        if self.micro_batch:
            want = min(self.micro_batch, batch)
            if want > fits:
                raise ConfigError(
                    f"{name}: model.micro_batch={self.micro_batch} needs about {gb(want)} to "
                    f"train, over the memory budget of {budget / 1e9:.1f} GB ({source})",
                    f"set model.micro_batch={fits}" if fits >= least else
                    "raise MERBENCH_MEMORY_GB, free memory, or train on a GPU (--device cuda)")
            return want
        if fits >= batch:
            return batch
        if fits < least:
            raise ConfigError(
                f"{name}: training needs about {gb(least)} even with {least} samples per pass "
                f"(model.micro_batch), over the memory budget of {budget / 1e9:.1f} GB "
                f"({source})", "raise MERBENCH_MEMORY_GB, free memory, or train on a GPU "
                "(--device cuda)")
        parts = math.ceil(batch / fits)
        micro = math.ceil(batch / parts)
        log.info("%s: batches of %d in %d micro-batches of <= %d (about %s per batch, budget "
                 "%.1f GB: %s)", name, batch, parts, micro, gb(batch), budget / 1e9, source)
        return micro

    def _memory_estimate(self, module: Any, X: Any, device: Any) -> tuple[float, float]:
        """(bytes per training sample, fixed bytes) of a training pass: one forward pass of
        two samples counting the tensors autograd keeps for the backward pass (the activations,
        which grow with the batch; ×1.5 for the gradients and buffers of the passes
        themselves) plus the float batch; fixed = weights, gradients and two optimizer states.
        Measured once per process for a configuration and input shape; buffers (BatchNorm
        statistics) and the random state are restored, so training is left untouched."""
        import json

        import torch

        params = {k: v for k, v in self.get_params().items()
                  if k not in ("seed", "train_state", "progress", "num_workers")}
        key = (type(self).__qualname__, json.dumps(params, sort_keys=True, default=str),
               tuple(X.shape[1:]), str(device))
        if key in _MEMORY_ESTIMATES:
            return _MEMORY_ESTIMATES[key]
        from torch.nn.parameter import is_lazy

        if any(is_lazy(p) for p in (*module.parameters(), *module.buffers())):
            return 0.0, 0.0  # lazy layers take their shape (and random init) in training
        fixed = 4.0 * sum(p.numel() * p.element_size() for p in module.parameters())
        own = {t.untyped_storage().data_ptr() for t in (*module.parameters(), *module.buffers())}
        kept: dict[int, int] = {}

        def pack(t: Any) -> Any:
            try:
                storage = t.untyped_storage()
                if storage.data_ptr() not in own:
                    kept[storage.data_ptr()] = storage.nbytes()
            except (RuntimeError, NotImplementedError):  # pragma: no cover - exotic tensors
                pass
            return t

        n = min(2, len(X))
        buffers = {k: b.detach().clone() for k, b in module.named_buffers()}
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
        was_training = module.training
        try:
            module.train()
            xb = self._prepare(X[:n], device)
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, _same):
                with self._autocast(device):
                    out = module(xb)
            del out
        except Exception as exc:  # noqa: BLE001 - no estimate: the whole batch is tried
            log.debug("%s: no memory estimate (%s)", type(self).__name__, exc)
            kept.clear()
        finally:
            with torch.no_grad():
                for k, b in module.named_buffers():
                    b.copy_(buffers[k])
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
            module.train(was_training)
        per_sample = 1.5 * sum(kept.values()) / n + 2 * 4 * X[0].numel() if kept else 0.0
        _MEMORY_ESTIMATES[key] = (per_sample, fixed)
        return per_sample, fixed

    def _terms(self, output: Any, target: Any) -> tuple[Any, dict[str, Any]]:
        out = self.loss(output, target)
        if isinstance(out, tuple):
            return out[0], dict(out[1])
        return out, {}

    # -- fit / predict -----------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> "TorchClassifier":
        import torch
        from torch import nn

        seed_everything(self.seed)
        device = resolve_device(self.device)
        y = np.asarray(y, dtype=np.int64)
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise ConfigError(f"labels must be 0..{self.num_classes - 1}, got {y.min()}..{y.max()}")
        val_mask = np.zeros(len(y), dtype=bool)
        if self.val_fraction > 0:
            if groups is None:
                raise ConfigError("val_fraction needs the training subjects (groups)")
            val_mask = subject_split(np.asarray(groups), self.val_fraction, self.seed)
        if int((~val_mask).sum()) < 2:
            raise ConfigError(f"{type(self).__name__} needs at least 2 training samples, got "
                              f"{int((~val_mask).sum())}", "use a protocol with more training "
                              "samples per fold, or a smaller val_fraction")
        Xt = self.to_tensor(X)
        yt = torch.from_numpy(y)
        if device.type == "cuda" and self.num_workers == 0:
            Xt, yt = Xt.to(device), yt.to(device)
        train_idx = torch.from_numpy(np.flatnonzero(~val_mask))
        val_idx = torch.from_numpy(np.flatnonzero(val_mask))
        Xtr, ytr = Xt[train_idx.to(Xt.device)], yt[train_idx.to(yt.device)]

        module = self.build(self.num_classes, tuple(Xt.shape[1:])).to(device)
        self.channels_last_ = device.type == "cuda" or (self.cpu_channels_last and Xt.ndim == 4)
        if self.channels_last_:
            module = module.to(memory_format=torch.channels_last)
        self.module_ = module
        weight = None
        if self.class_weights:
            counts = np.bincount(y[~val_mask], minlength=self.num_classes).astype(np.float64)
            weight = torch.tensor(len(y) / (self.num_classes * np.maximum(counts, 1)),
                                  dtype=torch.float32, device=device)
        self.criterion_ = nn.CrossEntropyLoss(weight=weight, label_smoothing=self.label_smoothing)
        trainable = [p for p in module.parameters() if p.requires_grad]
        opt = make_optimizer(self.optimizer, trainable, self.lr, self.weight_decay, self.momentum)
        sched = (torch.optim.lr_scheduler.StepLR(opt, self.lr_step, self.lr_gamma)
                 if self.lr_step else None)
        scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and self.amp
                                      and not torch.cuda.is_bf16_supported())
        gen = torch.Generator().manual_seed(self.seed)
        self.micro_batch_ = self._micro_batch(module, Xtr, device)
        self.history_ = []
        self._state_saved = time.monotonic()
        start_epoch, best, bad_epochs = self._resume(opt, sched, gen)
        epochs = range(start_epoch, self.epochs)
        if self.progress and sys.stderr.isatty():
            from tqdm import tqdm

            epochs = tqdm(epochs, desc="epochs", leave=False)
        self._epoch_clock = [time.monotonic(), time.monotonic(), start_epoch, start_epoch]
        for epoch in epochs:
            module.train()
            sums: dict[str, float] = {}
            count = 0
            for xb, yb in self._batches(Xtr, ytr, True, gen, device):
                xb = self.augment(self._prepare(xb, device))
                yb = yb.to(device, non_blocking=True)
                opt.zero_grad(set_to_none=True)
                n = len(yb)
                parts = batch_slices(n, self.micro_batch_) if self.micro_batch_ < n \
                    else [slice(0, n)]
                for part in parts:  # gradient accumulation: the batch mean's gradient
                    m = part.stop - part.start
                    with self._autocast(device):
                        loss, terms = self._terms(module(xb[part]), yb[part])
                    scaler.scale(loss if m == n else loss * (m / n)).backward()
                    for name, value in (("loss", loss),
                                        *((f"loss_{k}", v) for k, v in terms.items())):
                        sums[name] = sums.get(name, 0.0) + float(value.detach()) * m
                scaler.step(opt)
                scaler.update()
                count += n
            record = {"epoch": epoch + 1, **{k: v / max(count, 1) for k, v in sums.items()},
                      "lr": float(opt.param_groups[0]["lr"])}
            if sched is not None:
                sched.step()
            if len(val_idx):
                record["val_loss"] = self._loss(Xt[val_idx.to(Xt.device)],
                                                yt[val_idx.to(yt.device)], device)
                if record["val_loss"] < best[0]:
                    best = (record["val_loss"], {k: v.detach().clone()
                                                 for k, v in module.state_dict().items()})
                    bad_epochs = 0
                else:
                    bad_epochs += 1
            self.history_.append(record)
            self._report_epoch(record, epochs)
            self.on_epoch_end(epoch + 1)
            stop = bool(len(val_idx)) and bad_epochs >= self.patience
            self._save_train_state(opt, sched, gen, epoch + 1, best, bad_epochs,
                                   final=stop or epoch + 1 == self.epochs)
            if stop:
                log.info("early stop at epoch %d (validation subjects)", epoch + 1)
                break
        if best[1] is not None:
            module.load_state_dict(best[1])
        return self

    def _report_epoch(self, record: Mapping[str, float], bar: Any) -> None:
        """Training progress: the loss on the terminal's epoch bar; and a line on the
        ``merbench.progress`` log (shown when stderr is not a terminal) after the first epoch,
        then every tenth of the epochs or 30 s, and after the last."""
        from .logs import PROGRESS, context

        loss = record.get("loss", float("nan"))
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        now = time.monotonic()
        start, last_time, first_epoch, last_epoch = self._epoch_clock
        epoch = int(record["epoch"])
        every = max(1, math.ceil(self.epochs / 10))
        if not (epoch == first_epoch + 1 or epoch == self.epochs or epoch - last_epoch >= every
                or now - last_time >= 30):
            return
        self._epoch_clock[1], self._epoch_clock[3] = now, epoch
        elapsed = now - start
        left = elapsed / (epoch - first_epoch) * (self.epochs - epoch)
        val = f", val_loss {record['val_loss']:.4f}" if "val_loss" in record else ""
        PROGRESS.info("%s%s epoch %d/%d: loss %.4f%s (%.0f s, ~%.0f s left)", context(),
                      type(self).__name__, epoch, self.epochs, loss, val, elapsed, left)

    def _loss(self, X: Any, y: Any, device: Any) -> float:
        """The mean training loss (all terms) on held-out validation samples."""
        import torch

        self.module_.eval()
        total = 0.0
        with torch.no_grad():
            for xb, yb in self._batches(X, y, False, None, device):
                with self._autocast(device):
                    out = self.module_(self._prepare(xb, device))
                total += float(self._terms(out, yb.to(device))[0]) * len(yb)
        return total / max(len(y), 1)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        import torch

        if self.module_ is None:
            raise ConfigError(f"{type(self).__name__} is not fitted", "call fit() or load weights")
        device = next(self.module_.parameters()).device
        Xt = self.to_tensor(X)
        self.module_.eval()
        out = []
        with torch.no_grad():
            for start in range(0, Xt.shape[0], self.batch_size):
                xb = self._prepare(Xt[start:start + self.batch_size], device)
                with self._autocast(device):
                    logits = self.logits(self.module_(xb))
                out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.num_classes), dtype=np.float32)

    # -- explanations ------------------------------------------------------------------------
    def grad_cam(self, X: np.ndarray, targets: Sequence[int] | None = None) -> np.ndarray:
        """(N, H, W) Grad-CAM maps in [0, 1] of :meth:`cam_layer`, upsampled to the input size,
        for class ``targets`` (default: the predicted class)."""
        import torch
        import torch.nn.functional as F

        from .explain import grad_cam, normalise_maps

        if self.module_ is None:
            raise ConfigError(f"{type(self).__name__} is not fitted", "call fit() or load weights")
        module = self.module_
        device = next(module.parameters()).device
        Xt = self.to_tensor(X)
        layer = self.cam_layer(module)
        out = []
        for start in range(0, Xt.shape[0], self.batch_size):
            xb = self._prepare(Xt[start:start + self.batch_size], device)
            tb = None if targets is None else list(targets)[start:start + len(xb)]
            cams, _ = grad_cam(module, layer, xb, tb, forward=lambda x: self.logits(module(x)))
            out.append(F.interpolate(cams[:, None], size=tuple(xb.shape[-2:]), mode="bilinear",
                                     align_corners=False)[:, 0])
        return normalise_maps(torch.cat(out)).cpu().numpy()

    def display_images(self, X: np.ndarray) -> np.ndarray:
        """The inputs as H×W×3 uint8 images to draw explanations on (models whose inputs are
        not images, e.g. stacked frames or flow, override)."""
        from .explain import as_display_image

        return np.stack([as_display_image(x, self.channels_first) for x in np.asarray(X)])

    def explain(self, X: np.ndarray, out_dir: str | os.PathLike,
                targets: Sequence[int] | None = None, names: Sequence[str] | None = None,
                labels: Sequence[str] | None = None) -> list[Path]:
        """Write one Grad-CAM figure per input into ``out_dir`` (``gradcam_<name>.png``: the
        input beside its overlay, titled with the predicted class and probability, with a colour
        bar) and, for several inputs, a grid of all of them; returns the paths written.
        ``names``: file-name stems (default 0, 1, ...); ``labels``: class names for titles."""
        from .explain import save_cam_figure, save_cam_grid, safe_stem

        X = np.asarray(X)
        if names is not None and len(names) != len(X):
            raise ConfigError(f"explain: {len(names)} names for {len(X)} inputs")
        proba = self.predict_proba(X)
        cams = self.grad_cam(X, targets)
        images = self.display_images(X)
        classes = list(labels) if labels is not None else [str(k) for k in range(proba.shape[1])]
        titles = [f"predicted {classes[int(p.argmax())]} ({p.max():.2f})" for p in proba]
        stems = [safe_stem(names[i] if names is not None else i) for i in range(len(X))]
        out = Path(out_dir)
        written = [save_cam_figure(out / f"gradcam_{stem}.png", image, cam, f"{stem}: {title}")
                   for stem, image, cam, title in zip(stems, images, cams, titles)]
        if len(X) > 1:
            written.append(save_cam_grid(out / "gradcam_grid.png", images, cams,
                                         [f"{s}: {t}" for s, t in zip(stems, titles)]))
        return written

    # -- weights -----------------------------------------------------------------------------
    def input_shape(self, X: np.ndarray) -> tuple[int, ...]:
        return tuple(self.to_tensor(np.asarray(X)[:1]).shape[1:])

    def get_state(self) -> dict[str, Any]:
        if self.module_ is None:
            raise ConfigError(f"{type(self).__name__} is not fitted")
        return {name: t.detach().cpu().numpy() for name, t in self.module_.state_dict().items()}

    def set_state(self, state: dict[str, Any], input_shape: tuple[int, ...]) -> "TorchClassifier":
        import torch

        module = self.init_module(input_shape)
        module.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state.items()})
        return self

    def init_module(self, input_shape: tuple[int, ...]) -> Any:
        """Build the module without training, for a full saved state to be loaded next. A
        model whose ``build`` loads pretrained weights takes ``weights: bool = True`` and is
        built here with ``weights=False``: the saved state replaces every weight, so the
        pretrained file need not exist where a trained model is deployed."""
        skip = {"weights": False} if "weights" in inspect.signature(self.build).parameters else {}
        self.module_ = self.build(self.num_classes, input_shape, **skip).to(
            resolve_device(self.device))
        return self.module_

    def load_weights(self, path: str | os.PathLike, input_shape: tuple[int, ...]) -> "TorchClassifier":
        """Load a whole trained network (e.g. published per-fold weights, ``--checkpoints``):
        every key and shape must match the module exactly, else the mismatch is named."""
        module = self.init_module(input_shape)
        load_pretrained(module, path, head=(), what=type(self).__name__,
                        fix="pass weights saved from the same model and parameters")
        return self

    # -- resumable training state ------------------------------------------------------------
    def _config_key(self) -> str:
        """What a saved training state must agree with to be resumed."""
        import hashlib
        import json

        params = {k: v for k, v in self.get_params().items()
                  if k not in ("train_state", "progress", "device", "num_workers")}
        return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()

    def _save_train_state(self, opt: Any, sched: Any, gen: Any, epoch: int,
                          best: tuple[float, Any], bad_epochs: int, final: bool = False) -> None:
        """Training state after ``epoch`` (the runner gives each fold of each run its own
        file), written atomically so a kill never leaves half a file; at most every
        :func:`state_interval` seconds, and after the ``final`` epoch. Resuming from any saved
        epoch gives what an uninterrupted fit gives."""
        if not self.train_state or getattr(self, "state_unwritable_", False):
            return
        if not final and time.monotonic() - self._state_saved < state_interval():
            return
        import torch

        from .atomic import atomic_path

        try:
            with atomic_path(self.train_state) as tmp:
                torch.save({"config": self._config_key(), "epoch": epoch,
                            "model": self.module_.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict() if sched is not None else None,
                            "history": self.history_, "best_loss": best[0],
                            "best_state": best[1], "bad_epochs": bad_epochs,
                            "shuffle_rng": gen.get_state(),
                            "torch_rng": torch.get_rng_state()}, tmp)
        except DataError as exc:  # a full disk costs the resume point, not the training
            log.warning("%s; training goes on without a resume point", exc.problem)
            self.state_unwritable_ = True
            return
        self._state_saved = time.monotonic()

    def _resume(self, opt: Any, sched: Any, gen: Any) -> tuple[int, tuple[float, Any], int]:
        """Continue an interrupted fit from ``train_state``: (next epoch, best validation loss
        and state, epochs without improvement). A file from another configuration is ignored."""
        fresh: tuple[int, tuple[float, Any], int] = (0, (math.inf, None), 0)
        if not self.train_state or not Path(self.train_state).exists():
            return fresh
        import torch

        try:
            state = torch.load(self.train_state, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a damaged file: train from the start
            log.warning("cannot resume from %s (%s); training from the start", self.train_state,
                        exc)
            return fresh
        if state.get("config") != self._config_key():
            log.warning("%s holds another configuration's training; training from the start",
                        self.train_state)
            return fresh
        self.module_.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler") is not None:
            sched.load_state_dict(state["scheduler"])
        self.history_ = list(state.get("history", []))
        gen.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        log.info("resuming training from epoch %d (%s)", state["epoch"], self.train_state)
        return int(state["epoch"]), (float(state["best_loss"]), state["best_state"]), \
            int(state["bad_epochs"])
