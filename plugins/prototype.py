"""Prototype network: an interpretable classifier over learned prototypes (seed 001, approach 2).

After METHODS §7: Li, Liu, Chen, Rudin, "Deep Learning for Case-Based Reasoning through
Prototypes" (AAAI 2018, arXiv:1710.04806) and its released code, as adapted by seed 001.

- Encoder: ResNet-18 without its classifier, 512-d latent z = f(x) (the pooled features)
  [seed]; inputs in [0, 1] are normalised with ImageNet's mean/std inside the network (grey:
  their channel means) [ours]. ``pretrained``: a local state dict, the warm timm cache or random
  init (:func:`merbench.backbones.init_pretrained`; nothing is downloaded).
- Decoder g: Linear(512 -> 256·h0·w0) + ReLU (h0 = ⌈H/32⌉, w0 = ⌈W/32⌉), four
  ConvTranspose2d(4, stride 2) + BN + ReLU stages halving the channels 256 -> 16, a fifth to the
  input's channels with a sigmoid (inputs are in [0, 1]), and a bilinear resize to the input
  size where H or W is not a multiple of 32 [ours; Li et al. mirror their encoder with
  transposed convolutions].
- Prototype layer, two modes [seed / paper]: ``per_class`` (the seed): k prototypes per class
  (default 1), logit_c = −min_{j of class c} ||z − p_j||²; ``free`` (Li et al.): m class-agnostic
  prototypes (default 2 per class [ours]), d_j = ||z − p_j||², logits = dᵀW, W learned, no bias.
  Prototypes start U[0, 1) [code].
- Loss = λ_ce·CE + λ_rec·MSE(g(z), x) + λ_coh·cohesion + λ_sep·separation + λ_1·R1 + λ_2·R2, the
  minima over the mini-batch:
  cohesion = mean_i min_{j of class y_i} d_ij (each latent near its own class's prototype) [seed];
  separation = mean_i ReLU(margin − min_{j not of class y_i} d_ij) (latents at least ``margin``
  from other classes' prototypes, a hinge) [seed's term; hinge form ours];
  R1 = mean_j min_i d_ij (every prototype near some latent), R2 = mean_i min_j d_ij (every latent
  near some prototype) [paper].
  Defaults [ours, justified]: Li et al.'s released code weighs CE : rec : R1 : R2 as 20 : 1 : 1 : 1;
  the seed names CE, reconstruction, cohesion and separation without weights. Cohesion and
  separation are the class-aware forms of R2 and R1, so ``per_class`` takes 20 : 1 : 1 : 1 for
  CE : rec : cohesion : separation with R1 = R2 = 0, and ``free`` (whose prototypes have no class)
  takes Li et al.'s 20 : 1 : 1 : 1 for CE : rec : R1 : R2. A weight left None takes its mode's
  default. The reconstruction term is the per-pixel mean (MSE), so its scale does not depend on
  the image size (Li et al. sum over pixels: ×H·W·C). ``margin`` 10 [ours]: under the seed's
  logits a squared-distance gap of 10 already gives the own class odds of e^10 over another, so
  pushing other classes' prototypes further away would only inflate the latent scale.
- Training defaults [ours]: Adam, lr 1e-3, batch 32, 50 epochs (the seed compares 10 and 50; Li
  et al.: Adam 0.002, batch 250). Every term's epoch mean lands in the fold's history
  (``loss_ce``, ``loss_rec``, ``loss_cohesion`` ...), where the seed's observation that
  reconstruction improves later than classification can be read.

Explanations: :meth:`PrototypeNet.explain` (``merbench explain``) adds to the shared Grad-CAM
figures the decoded prototypes g(p_j) (``prototypes.png``, the seed's "what the model thinks
disgust looks like"), the snapshots asked for with ``snapshot_epochs`` (``snapshots.png``, the
seed's 10-vs-50-epoch comparison) and each input's nearest prototypes with their distances
(``nearest_<name>.png`` and ``.txt``). ``merbench explain-run RUN_ID`` draws, from the arrays
:meth:`PrototypeNet.fold_artifacts` stored with each fold, a t-SNE (scikit-learn) of the run's
test latents with the prototypes (``tsne.png``), the decoded prototypes and the nearest
prototypes of test samples; see :mod:`merbench_plugins.prototype_figures`.

Methods [ours]: ``apex-prototype`` (face crop, then the grey apex frame, as the ``apex-frame``
step gives it), ``ars-prototype`` (face crop, ARS with N_key 5) and ``flow-prototype`` (face
crop, TV-L1 onset -> apex flow + strain image). The face crop is 112 px, trading ResNet-18
resolution (a 4×4 last map) for CPU time; the image steps keep the crop's size, so
``--set face-crop.size=224`` changes all three.
"""
from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from merbench import MethodSpec, hookimpl
from merbench.errors import ConfigError
from merbench.training import TorchClassifier

log = logging.getLogger(__name__)

LATENT = 512  # ResNet-18's pooled features
MODES = ("per_class", "free")
#: per mode, the default of each loss weight left None (see the module docstring)
MODE_WEIGHTS = {"per_class": {"cohesion": 1.0, "separation": 1.0, "r1": 0.0, "r2": 0.0},
                "free": {"cohesion": 0.0, "separation": 0.0, "r1": 1.0, "r2": 1.0}}
_SNAPSHOT = "_snapshot_epoch."  # key prefix of decoded-prototype snapshots in a saved state
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ProtoOutput(NamedTuple):
    """What the module returns: the loss needs every part, a prediction only the logits."""

    logits: Any
    latent: Any
    reconstruction: Any
    distances: Any
    inputs: Any


def squared_distances(z: Any, prototypes: Any) -> Any:
    """(N, P) squared L2 distances ||z_i − p_j||² in float32 (exact differences, not the
    expanded form, which can go negative)."""
    return (z.float()[:, None, :] - prototypes.float()[None]).pow(2).sum(-1)


def per_class_logits(d: Any, num_classes: int, k: int) -> Any:
    """Seed logits: minus the squared distance to each class's nearest prototype; prototype j
    belongs to class j // k."""
    return -d.view(d.shape[0], num_classes, k).amin(-1)


def parse_epochs(value: Any) -> tuple[int, ...]:
    """``snapshot_epochs``: an int, "10,50", or a sequence of positive ints -> sorted tuple."""
    if value is None or value == "" or value == ():
        return ()
    items = value.split(",") if isinstance(value, str) else (
        [value] if isinstance(value, int) else list(value))
    try:
        epochs = sorted({int(v) for v in items})
    except (TypeError, ValueError):
        epochs = [0]
    if any(e < 1 for e in epochs):
        raise ConfigError(f"prototype-net: snapshot_epochs={value!r} is invalid",
                          "give positive epoch numbers, e.g. --set model.snapshot_epochs=10,50")
    return tuple(epochs)


@functools.cache
def module_class() -> type:
    """The ``nn.Module`` class, defined on first use so that loading the plugin does not import
    torch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Decoder(nn.Module):
        """Latent -> image in [0, 1] through transposed convolutions (see the module doc)."""

        def __init__(self, out_chans: int, size: tuple[int, int], width: int = 256,
                     stages: int = 5) -> None:
            super().__init__()
            self.size = (int(size[0]), int(size[1]))
            self.grid = (width, math.ceil(size[0] / 2 ** stages), math.ceil(size[1] / 2 ** stages))
            self.fc = nn.Linear(LATENT, width * self.grid[1] * self.grid[2])
            layers: list[nn.Module] = []
            c = width
            for _ in range(stages - 1):
                layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.BatchNorm2d(c // 2),
                           nn.ReLU(inplace=True)]
                c //= 2
            layers += [nn.ConvTranspose2d(c, out_chans, 4, 2, 1), nn.Sigmoid()]
            self.net = nn.Sequential(*layers)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            x = self.net(F.relu(self.fc(z)).view(-1, *self.grid))
            if tuple(x.shape[-2:]) != self.size:
                x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
            return x

    class PrototypeNetModule(nn.Module):
        def __init__(self, encoder: nn.Module, in_chans: int, size: tuple[int, int],
                     num_classes: int, mode: str, n_prototypes: int) -> None:
            super().__init__()
            self.encoder = encoder
            self.num_classes, self.mode = num_classes, mode
            mean = _MEAN if in_chans == 3 else (sum(_MEAN) / 3,) * in_chans
            std = _STD if in_chans == 3 else (sum(_STD) / 3,) * in_chans
            self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
            self.prototypes = nn.Parameter(torch.rand(n_prototypes, LATENT))
            self.k = n_prototypes // num_classes
            classes = (torch.arange(n_prototypes) // self.k if mode == "per_class"
                       else torch.full((n_prototypes,), -1))
            self.register_buffer("prototype_class", classes, persistent=False)
            self.last = nn.Linear(n_prototypes, num_classes, bias=False) if mode == "free" else None
            self.decoder = Decoder(in_chans, size)

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return self.encoder((x - self.mean) / self.std)

        def classify(self, d: torch.Tensor) -> torch.Tensor:
            if self.last is None:
                return per_class_logits(d, self.num_classes, self.k)
            return d @ self.last.weight.float().t()

        def distances(self, z: torch.Tensor) -> torch.Tensor:
            with torch.autocast(z.device.type, enabled=False):
                return squared_distances(z, self.prototypes)

        def forward(self, x: torch.Tensor) -> ProtoOutput:
            z = self.encode(x)
            # distances of hundreds need float32 logits: bf16 (AMP on CUDA) keeps ~3 digits
            with torch.autocast(x.device.type, enabled=False):
                d = squared_distances(z, self.prototypes)
                logits = self.classify(d)
            return ProtoOutput(logits, z, self.decoder(z), d, x)

    PrototypeNetModule.__qualname__ = "PrototypeNetModule"
    return PrototypeNetModule


def __getattr__(name: str) -> Any:
    if name == "PrototypeNetModule":
        return module_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class PrototypeNet(TorchClassifier):
    """ResNet-18 encoder + prototype layer + decoder (seed 001 approach 2, Li et al. 2018).

    :param mode: per_class (k prototypes per class, logits = -distance to the class's nearest)
        or free (m class-agnostic prototypes, logits = distances · W)
    :param k: prototypes per class (per_class)
    :param m: class-agnostic prototypes (free; default 2 per class)
    :param pretrained: ResNet-18 weights: PATH, None (a warm local cache, else random), False
    :param lambda_ce: weight of the cross-entropy
    :param lambda_rec: weight of the reconstruction MSE
    :param lambda_cohesion: weight of cohesion (latent near its class's prototype; None: mode
        default)
    :param lambda_separation: weight of separation (latent at least margin from other classes'
        prototypes; None: mode default)
    :param lambda_r1: weight of R1, every prototype near some latent (None: mode default)
    :param lambda_r2: weight of R2, every latent near some prototype (None: mode default)
    :param margin: separation hinge margin (squared distance)
    :param snapshot_epochs: epochs after which the decoded prototypes are kept (e.g. 10,50)
    """

    defaults = {"epochs": 50, "batch_size": 32, "lr": 1e-3}
    cam_target = "encoder.layer4"

    def __init__(self, mode: str = "per_class", k: int = 1, m: int | None = None,
                 pretrained: str | bool | None = None, lambda_ce: float = 20.0,
                 lambda_rec: float = 1.0, lambda_cohesion: float | None = None,
                 lambda_separation: float | None = None, lambda_r1: float | None = None,
                 lambda_r2: float | None = None, margin: float = 10.0,
                 snapshot_epochs: Any = (), **training: Any) -> None:
        super().__init__(**training)
        if mode not in MODES:
            raise ConfigError(f"prototype-net: unknown mode {mode!r}", "use per_class or free")
        if not isinstance(k, int) or k < 1 or (m is not None and (not isinstance(m, int) or m < 1)):
            raise ConfigError(f"prototype-net: k={k!r}, m={m!r} must be positive integers")
        if mode == "free" and k != 1:
            raise ConfigError("prototype-net: k (prototypes per class) is for mode per_class",
                              "in mode free set m, the number of class-agnostic prototypes")
        if mode == "per_class" and m is not None:
            raise ConfigError("prototype-net: m (class-agnostic prototypes) is for mode free",
                              "in mode per_class set k, the prototypes per class")
        self.mode, self.k, self.m = mode, k, m
        self.pretrained = pretrained
        self.lambda_ce, self.lambda_rec = lambda_ce, lambda_rec
        self.lambda_cohesion, self.lambda_separation = lambda_cohesion, lambda_separation
        self.lambda_r1, self.lambda_r2 = lambda_r1, lambda_r2
        weights = self.loss_weights()
        if any(not isinstance(w, (int, float)) or w < 0 for w in weights.values()):
            raise ConfigError(f"prototype-net: loss weights must be numbers >= 0, got {weights}")
        if mode == "free" and (weights["cohesion"] or weights["separation"]):
            raise ConfigError("prototype-net: cohesion and separation need class prototypes",
                              "use mode per_class, or R1/R2 (lambda_r1, lambda_r2) in mode free")
        self.margin = float(margin)
        self.snapshot_epochs = parse_epochs(snapshot_epochs)
        self.snapshots_: dict[int, np.ndarray] = {}
        self.init_: str | None = None

    def loss_weights(self) -> dict[str, float]:
        """Every term's weight, None resolved to the mode's default."""
        given = {"ce": self.lambda_ce, "rec": self.lambda_rec, "cohesion": self.lambda_cohesion,
                 "separation": self.lambda_separation, "r1": self.lambda_r1, "r2": self.lambda_r2}
        return {t: MODE_WEIGHTS[self.mode][t] if w is None else w for t, w in given.items()}

    @property
    def n_prototypes(self) -> int:
        if self.mode == "per_class":
            return self.k * self.num_classes
        return self.m if self.m is not None else 2 * self.num_classes

    # -- network -----------------------------------------------------------------------------
    def build(self, num_classes: int, input_shape: tuple[int, ...],
              weights: bool = True) -> Any:
        from merbench.backbones import init_pretrained, resnet18

        if len(input_shape) != 3 or min(input_shape[1:]) < 16:
            raise ConfigError(f"prototype-net needs (C, H, W) images of at least 16×16, got "
                              f"{tuple(input_shape)}", "end the method with an image step")
        encoder = resnet18(in_chans=input_shape[0], num_classes=0)
        self.init_ = (init_pretrained(encoder, self.pretrained, "prototype-net encoder")
                      if weights else "saved-state")
        return module_class()(encoder, input_shape[0], input_shape[1:], num_classes, self.mode,
                              self.n_prototypes)

    def logits(self, output: Any) -> Any:
        return output.logits

    def loss(self, output: Any, target: Any) -> Any:
        """(total, unweighted terms); terms with weight 0 are neither computed nor recorded,
        CE and reconstruction always are."""
        import torch.nn.functional as F

        w = self.loss_weights()
        d = output.distances
        terms = {"ce": self.criterion_(output.logits.float(), target),
                 "rec": F.mse_loss(output.reconstruction.float(), output.inputs.float())}
        if w["cohesion"] or w["separation"]:
            own = self.module_.prototype_class[None, :] == target[:, None]
            if w["cohesion"]:
                terms["cohesion"] = d.masked_fill(~own, math.inf).amin(1).mean()
            if w["separation"]:
                nearest_other = d.masked_fill(own, math.inf).amin(1)
                terms["separation"] = F.relu(self.margin - nearest_other).mean()
        if w["r1"]:
            terms["r1"] = d.amin(0).mean()
        if w["r2"]:
            terms["r2"] = d.amin(1).mean()
        return sum(w[t] * v for t, v in terms.items()), terms

    # -- prototypes --------------------------------------------------------------------------
    def _module(self) -> Any:
        if self.module_ is None:
            raise ConfigError("prototype-net is not fitted", "call fit() or load weights first")
        return self.module_

    def prototype_classes(self) -> np.ndarray:
        """The class of each prototype: its own (per_class), or the class its distance counts
        for most (free: the most negative weight of W, since logits = dᵀW)."""
        module = self._module()
        if module.last is None:
            return module.prototype_class.cpu().numpy()
        return module.last.weight.detach().float().argmin(0).cpu().numpy()

    def decoded_prototypes(self) -> np.ndarray:
        """g(p_j) for every prototype as (P, H, W, 3) uint8 pictures."""
        import torch

        from merbench.explain import as_display_image

        module = self._module()
        was_training = module.training
        module.eval()
        with torch.no_grad():
            images = module.decoder(module.prototypes.detach()).float().clamp(0, 1).cpu()
        module.train(was_training)
        images = np.rint(images.numpy() * 255).astype(np.uint8)
        return np.stack([as_display_image(im, channels_first=True) for im in images])

    def latents(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(latents (N, 512), squared distances to the prototypes (N, P)) of inputs X."""
        import torch

        module = self._module()
        device = next(module.parameters()).device
        Xt = self.to_tensor(X)
        module.eval()
        zs, ds = [], []
        with torch.no_grad():
            for start in range(0, Xt.shape[0], self.batch_size):
                z = module.encode(self._prepare(Xt[start:start + self.batch_size], device))
                zs.append(z.float().cpu())
                ds.append(module.distances(z).cpu())
        return torch.cat(zs).numpy(), torch.cat(ds).numpy()

    def nearest_prototypes(self, X: np.ndarray, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """(indices (N, n), squared distances (N, n)) of each input's n nearest prototypes."""
        _, d = self.latents(X)
        order = np.argsort(d, axis=1, kind="stable")[:, :min(n, d.shape[1])]
        return order, np.take_along_axis(d, order, axis=1)

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> "PrototypeNet":
        self.snapshots_ = {}
        self._first_epoch: int | None = None
        return super().fit(X, y, groups)

    def on_epoch_end(self, epoch: int) -> None:
        """Keep the decoded prototypes at each of ``snapshot_epochs``."""
        if self._first_epoch is None:  # a fit resumed from its training state starts later
            self._first_epoch = epoch
            lost = [e for e in self.snapshot_epochs if e < epoch]
            if lost:
                log.warning("prototype-net resumed at epoch %d: the snapshots of epochs %s were "
                            "not kept", epoch, ", ".join(map(str, lost)))
        if epoch in self.snapshot_epochs:
            self.snapshots_[epoch] = self.decoded_prototypes()

    def fold_artifacts(self, X_test: np.ndarray) -> dict[str, np.ndarray]:
        """Stored with each fold for ``merbench explain-run``: the test latents and distances,
        the prototypes with their classes, decoded prototypes (and snapshots) and the test
        inputs as pictures. Only ``X_test`` is used: no training sample enters a figure."""
        z, d = self.latents(X_test)
        out = {"latents": z, "distances": d,
               "prototypes": self._module().prototypes.detach().float().cpu().numpy(),
               "prototype_classes": self.prototype_classes(),
               "prototype_images": self.decoded_prototypes(),
               "inputs": self.display_images(X_test)}
        if self.snapshots_:
            epochs = sorted(self.snapshots_)
            out["snapshot_epochs"] = np.array(epochs)
            out["snapshot_images"] = np.stack([self.snapshots_[e] for e in epochs])
        return out

    # -- saved state -------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state.update({f"{_SNAPSHOT}{e}": im for e, im in self.snapshots_.items()})
        return state

    def set_state(self, state: dict[str, Any], input_shape: tuple[int, ...]) -> "PrototypeNet":
        super().set_state({k: v for k, v in state.items() if not k.startswith(_SNAPSHOT)},
                          input_shape)
        self.snapshots_ = {int(k[len(_SNAPSHOT):]): np.asarray(v) for k, v in state.items()
                           if k.startswith(_SNAPSHOT)}
        return self

    # -- explanations ------------------------------------------------------------------------
    def explain(self, X: np.ndarray, out_dir: str | Path, targets: Sequence[int] | None = None,
                names: Sequence[str] | None = None,
                labels: Sequence[str] | None = None) -> list[Path]:
        """The shared Grad-CAM figures, plus ``prototypes.png`` (decoded prototypes),
        ``snapshots.png`` (when ``snapshot_epochs`` were kept) and per input
        ``nearest_<name>.png`` / ``.txt`` (its nearest prototypes and their distances)."""
        from merbench.explain import safe_stem

        from . import prototype_figures as figs

        written = super().explain(X, out_dir, targets, names, labels)
        out = Path(out_dir)
        classes = list(labels) if labels is not None else [str(c) for c in
                                                            range(self.num_classes)]
        images, owners = self.decoded_prototypes(), self.prototype_classes()
        captions = figs.prototype_captions(owners, classes)
        written.append(figs.save_image_rows(out / "prototypes.png", [("final", images, captions)],
                                            "decoded prototypes g(p_j)"))
        if self.snapshots_:
            rows = [(f"epoch {e}", self.snapshots_[e], captions) for e in sorted(self.snapshots_)]
            written.append(figs.save_image_rows(out / "snapshots.png",
                                                rows + [("final", images, captions)],
                                                "decoded prototypes during training"))
        proba = self.predict_proba(X)
        idx, dist = self.nearest_prototypes(X)
        inputs = self.display_images(X)
        for i in range(len(X)):
            stem = safe_stem(names[i] if names is not None else i)
            title = f"{stem}: predicted {classes[int(proba[i].argmax())]} ({proba[i].max():.2f})"
            written += figs.save_nearest(out / f"nearest_{stem}", [(title, inputs[i])],
                                         idx[i:i + 1], dist[i:i + 1], images, owners, classes)
        return written

    @classmethod
    def explain_run(cls, folds: Sequence[Any], labels: Sequence[str],
                    out_dir: str | Path) -> list[Path]:
        """Run-level figures from each fold's stored artifacts (``merbench explain-run``)."""
        from . import prototype_figures as figs

        return figs.explain_run(folds, list(labels), Path(out_dir))


@hookimpl
def register_models(register: Any) -> None:
    register("prototype-net", PrototypeNet, description="Prototype network (seed 001, Li et al. "
             "2018): ResNet-18 encoder, prototypes, decoder; decoded prototypes explain")


FACE = ("face-crop", {"size": 112})


@hookimpl
def register_methods(register: Any) -> None:
    for name, step, text in (
        ("apex-prototype", ("apex-frame", {"size": None}),
         "face-cropped grey apex frame (112) -> prototype network (seed 001)"),
        ("ars-prototype", ("ars", {"n_key": 5, "size": None}),
         "face crop 112, ARS image (N_key 5) -> prototype network"),
        ("flow-prototype", ("flow-image", {"size": None}),
         "face crop 112, TV-L1 flow + strain image -> prototype network"),
    ):
        register(name, MethodSpec(steps=(FACE, step), model=("prototype-net", {}),
                                  description=text), description=text)
