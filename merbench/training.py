"""The one torch training loop every deep model reuses.

A deep model plugin subclasses :class:`TorchClassifier`, defines ``build(num_classes,
input_shape)`` returning its ``nn.Module`` and, if it wants, ``augment(batch)``; everything
else (optimizer, loss, epochs, batches, subject-disjoint validation and early stopping,
AMP and channels_last on CUDA, seeding, checkpoints) lives here.
"""
from __future__ import annotations

import logging
import math
import os
import random
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .base import Model
from .errors import CheckpointError, ConfigError

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


def make_optimizer(name: str, params: Any, lr: float, weight_decay: float) -> Any:
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
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
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


class TorchClassifier(Model):
    """Base for deep models. Subclasses call ``super().__init__(**training kwargs)`` and define
    ``build``. Inputs are numpy arrays: (N, H, W, C) images are moved to NCHW; values are
    multiplied by ``input_scale`` (1/255 for 0..255 images unless a model says otherwise)."""

    def __init__(self, num_classes: int = 3, epochs: int = 10, batch_size: int = 32,
                 lr: float = 1e-3, optimizer: str = "adam", weight_decay: float = 0.0,
                 label_smoothing: float = 0.0, class_weights: bool = False,
                 val_fraction: float = 0.0, patience: int = 10, input_scale: float = 1 / 255,
                 channels_first: bool = False, device: str = "auto", amp: bool = True,
                 seed: int = 0, num_workers: int = 0, checkpoint: str | None = None,
                 progress: bool = False) -> None:
        self.num_classes = num_classes
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.class_weights = class_weights
        self.val_fraction = val_fraction
        self.patience = patience
        self.input_scale = input_scale
        self.channels_first = channels_first
        self.device = device
        self.amp = amp
        self.seed = seed
        self.num_workers = num_workers
        self.checkpoint = checkpoint
        self.progress = progress
        self.module_: Any = None
        self.history_: list[dict[str, float]] = []

    # -- to override -------------------------------------------------------------------------
    def build(self, num_classes: int, input_shape: tuple[int, ...]) -> Any:
        raise NotImplementedError

    def augment(self, batch: Any) -> Any:
        """Training-time augmentation of a float NCHW batch on the device (default: none)."""
        return batch

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

        xb = xb.to(device, non_blocking=True).float()
        if self.input_scale != 1:
            xb = xb * self.input_scale
        if device.type == "cuda" and xb.ndim == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb

    def _batches(self, X: Any, y: Any, shuffle: bool, gen: Any, device: Any) -> Iterator[Any]:
        """Whole-dataset tensors; a DataLoader with pinned memory when the set is big on CUDA."""
        import torch

        n = X.shape[0]
        if device.type == "cuda" and self.num_workers > 0:
            ds = torch.utils.data.TensorDataset(X, y)
            loader = torch.utils.data.DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle,
                                                 generator=gen, num_workers=self.num_workers,
                                                 pin_memory=True, persistent_workers=False)
            yield from loader
            return
        order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield X[idx], y[idx]

    def _autocast(self, device: Any) -> Any:
        import contextlib

        import torch

        if device.type == "cuda" and self.amp:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

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
        Xt = self.to_tensor(X)
        yt = torch.from_numpy(y)
        if device.type == "cuda" and self.num_workers == 0:
            Xt, yt = Xt.to(device), yt.to(device)
        train_idx = torch.from_numpy(np.flatnonzero(~val_mask))
        val_idx = torch.from_numpy(np.flatnonzero(val_mask))
        Xtr, ytr = Xt[train_idx.to(Xt.device)], yt[train_idx.to(yt.device)]

        module = self.build(self.num_classes, tuple(Xt.shape[1:])).to(device)
        if device.type == "cuda":
            module = module.to(memory_format=torch.channels_last)
        self.module_ = module
        weight = None
        if self.class_weights:
            counts = np.bincount(y[~val_mask], minlength=self.num_classes).astype(np.float64)
            weight = torch.tensor(len(y) / (self.num_classes * np.maximum(counts, 1)),
                                  dtype=torch.float32, device=device)
        loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=self.label_smoothing)
        opt = make_optimizer(self.optimizer, module.parameters(), self.lr, self.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and self.amp
                                      and not torch.cuda.is_bf16_supported())
        gen = torch.Generator().manual_seed(self.seed)
        self.history_ = []
        start_epoch, best, bad_epochs = self._resume(opt, gen)
        epochs = range(start_epoch, self.epochs)
        if self.progress and sys.stderr.isatty():
            from tqdm import tqdm

            epochs = tqdm(epochs, desc="epochs", leave=False)
        for epoch in epochs:
            module.train()
            total, count = 0.0, 0
            for xb, yb in self._batches(Xtr, ytr, True, gen, device):
                xb = self.augment(self._prepare(xb, device))
                yb = yb.to(device, non_blocking=True)
                with self._autocast(device):
                    loss = loss_fn(module(xb), yb)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                total += float(loss.detach()) * len(yb)
                count += len(yb)
            record = {"epoch": epoch + 1, "loss": total / max(count, 1)}
            if len(val_idx):
                record["val_loss"] = self._loss(Xt[val_idx.to(Xt.device)],
                                                yt[val_idx.to(yt.device)], loss_fn, device)
                if record["val_loss"] < best[0]:
                    best = (record["val_loss"], {k: v.detach().clone()
                                                 for k, v in module.state_dict().items()})
                    bad_epochs = 0
                else:
                    bad_epochs += 1
            self.history_.append(record)
            self._save_checkpoint(opt, gen, epoch + 1, best, bad_epochs)
            if len(val_idx) and bad_epochs >= self.patience:
                log.info("early stop at epoch %d (validation subjects)", epoch + 1)
                break
        if best[1] is not None:
            module.load_state_dict(best[1])
        return self

    def _loss(self, X: Any, y: Any, loss_fn: Any, device: Any) -> float:
        import torch

        self.module_.eval()
        total = 0.0
        with torch.no_grad():
            for xb, yb in self._batches(X, y, False, None, device):
                with self._autocast(device):
                    out = self.module_(self._prepare(xb, device))
                total += float(loss_fn(out.float(), yb.to(device))) * len(yb)
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
                    logits = self.module_(xb)
                out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.num_classes), dtype=np.float32)

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
        """Build the module without training (to load published weights)."""
        self.module_ = self.build(self.num_classes, input_shape).to(resolve_device(self.device))
        return self.module_

    def load_weights(self, path: str | os.PathLike, input_shape: tuple[int, ...]) -> "TorchClassifier":
        """Load a state dict (zip or legacy serialisation) with ``weights_only=True``; keys and
        shapes must match the module exactly, else the mismatch is named."""
        import torch

        module = self.init_module(input_shape)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"cannot read weights {path}: {exc}") from exc
        for wrapper in ("state_dict", "model"):  # common wrappers, incl. our own checkpoints
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} does not hold a state dict")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        own = module.state_dict()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if missing or extra or shapes:
            parts = ([f"missing keys {missing[:4]}"] if missing else []) + \
                    ([f"unexpected keys {extra[:4]}"] if extra else []) + shapes[:4]
            raise CheckpointError(f"weights {path} do not fit {type(self).__name__}: "
                                  + "; ".join(parts))
        module.load_state_dict(state)
        return self

    def _config_key(self) -> str:
        """What a saved training state must agree with to be resumed."""
        import hashlib
        import json

        params = {k: v for k, v in self.get_params().items()
                  if k not in ("checkpoint", "progress", "device", "num_workers")}
        return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()

    def _save_checkpoint(self, opt: Any, gen: Any, epoch: int, best: tuple[float, Any],
                         bad_epochs: int) -> None:
        """Training state after ``epoch`` (the runner gives each fold of each run its own
        file), written atomically so a kill never leaves half a file."""
        if not self.checkpoint:
            return
        import torch

        path = Path(self.checkpoint)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save({"config": self._config_key(), "epoch": epoch,
                    "model": self.module_.state_dict(), "optimizer": opt.state_dict(),
                    "history": self.history_, "best_loss": best[0], "best_state": best[1],
                    "bad_epochs": bad_epochs, "shuffle_rng": gen.get_state(),
                    "torch_rng": torch.get_rng_state()}, tmp)
        os.replace(tmp, path)

    def _resume(self, opt: Any, gen: Any) -> tuple[int, tuple[float, Any], int]:
        """Continue an interrupted fit from ``checkpoint``: (next epoch, best validation loss
        and state, epochs without improvement). A file from another configuration is ignored."""
        fresh: tuple[int, tuple[float, Any], int] = (0, (math.inf, None), 0)
        if not self.checkpoint or not Path(self.checkpoint).exists():
            return fresh
        import torch

        try:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a damaged file: train from the start
            log.warning("cannot resume from %s (%s); training from the start", self.checkpoint, exc)
            return fresh
        if state.get("config") != self._config_key():
            log.warning("%s holds another configuration's training; training from the start",
                        self.checkpoint)
            return fresh
        self.module_.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        self.history_ = list(state.get("history", []))
        gen.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        log.info("resuming training from epoch %d (%s)", state["epoch"], self.checkpoint)
        return int(state["epoch"]), (float(state["best_loss"]), state["best_state"]), \
            int(state["bad_epochs"])
