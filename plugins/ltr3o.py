"""LTR3O-style: learning to rank onset–occurring–offset (3O) candidates (seed 002, METHODS §8).

Only the abstract of Zhu et al., "Learning to Rank Onset-Occurring-Offset Representations for
Micro-Expression Recognition" is public to us [seed]: a 3O sample is (onset, occurring, offset)
with the occurring frame drawn at random from the clip (no apex spotting); several 3O candidates
per sample; modules score each candidate's expressiveness and a learning-to-rank objective
widens the gap between highly and lowly expressive candidates; motion magnification is among the
keywords. Everything else is the [ours] design of METHODS §8, every choice a parameter, so this
is reported as "LTR3O-style" until the paper's details can be checked:

- Step ``three-o`` (no random draw is cached): grey face frames stacked as (F + 2, S, S) uint8 =
  onset, F occurring frames evenly spaced strictly inside onset..offset
  (``onset + round((j + 1)(offset − onset) / (F + 1))``, j = 0..F−1), offset. It never reads
  the apex, so SMIC (no apex annotation) needs no middle-frame fallback. ``occurring="apex"``
  (the ``ltr3o-apex`` ablation) stacks (onset, annotated apex, offset) instead.
- Model ``ltr3o``: per sample and forward pass, K occurring slots of the F are drawn in
  training (``sampling`` uniform without replacement, or stratified: one per K equal strata)
  from torch's global generator, which the shared loop seeds and saves with the resumable
  training state, so every epoch draws anew, reproducibly; in evaluation ``test_candidates``
  evenly spaced slots (``round(k (F − 1) / (K − 1))``). Candidates (onset, occurring, offset) as
  3 channels, optionally motion-magnified (linear Eulerian style [ours]: occurring +
  α·G_σ*(occurring − onset)), go through one shared ResNet-18 as one batch; an MLP head gives
  each an expressiveness score s_k = sigmoid(·) ∈ (0, 1); features are summed with
  softmax(s / τ) weights (with τ = 1 the weights stay within a factor e of each other; a lower
  ``temperature`` sharpens them); a linear classifier.
- Loss = CE + λ·L_rank, L_rank = max(0, δ − (mean of the top half of s − mean of the bottom
  half)) (δ = 0.15; with K odd the median is left out); ``ranking="pairwise"``: the mean hinge
  over all (top-half, bottom-half) pairs. The sigmoid scores and δ = 0.15 follow the rank
  regularisation of SCN (Wang et al., CVPR 2020), which METHODS §8's hinge mirrors [ours].
- Defaults [ours]: K 5, 8 test candidates, F 16, 112×112, MLP 512→128→1, λ 1, τ 1, α 0 (off),
  Adam lr 1e-4, batch 16, 30 epochs, random horizontal flips; grey frames normalised with the
  ImageNet grey mean/std (0.449, 0.226). ``pretrained``: see
  :func:`merbench.training.resolve_pretrained` (nothing is downloaded).

Explanations: Grad-CAM of ``encoder.layer4`` per candidate, combined with the aggregation weights
(``gradcam_<name>.png``), and ``candidates_<name>.png``: each test candidate's occurring frame
with its score and weight, and its own Grad-CAM overlay. ``fold_artifacts`` stores the test
candidates' scores and slots per sample (expressiveness over the clip).
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from merbench import Clip, MethodSpec, Step, hookimpl
from merbench.clips import check_size, resize_image, resolve_apex, to_grey, where
from merbench.errors import ConfigError, DataError
from merbench.training import TorchClassifier

log = logging.getLogger(__name__)
GREY_MEAN, GREY_STD = 0.449, 0.226  # ImageNet RGB means / stds averaged [ours]


# --------------------------------------------------------------------------- the step

def occurring_indices(onset: int, end: int, frames: int) -> np.ndarray:
    """F frame indices evenly spaced strictly inside onset..end (repeats in short clips)."""
    k = np.arange(1, frames + 1)
    return onset + np.floor(k * (end - onset) / (frames + 1) + 0.5).astype(np.int64)


class ThreeO(Step):
    """Onset, F evenly spaced occurring frames, offset: grey, resized, stacked (F + 2, S, S).

    :param frames: F, occurring frames evenly spaced strictly inside onset..offset
    :param size: S, the frames' size (int or (height, width))
    :param occurring: span (never reads clip.apex) or apex (onset, annotated apex, offset; an
        estimated apex where the database has none, e.g. SMIC; frames is then unused)
    """

    name = "three-o"
    version = "1"

    def __init__(self, frames: int = 16, size: int | tuple[int, int] = 112,
                 occurring: str = "span") -> None:
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise ConfigError(f"step 'three-o': frames must be a positive integer, got {frames!r}",
                              "use e.g. frames=16")
        check_size(size, self.name, allow_none=False)
        if occurring not in ("span", "apex"):
            raise ConfigError(f"step 'three-o': unknown occurring {occurring!r}",
                              "use occurring='span' (no apex) or 'apex'")
        self.frames, self.size, self.occurring = frames, size, occurring

    def __call__(self, clip: Clip) -> np.ndarray:
        n, onset, end = clip.n_frames, clip.onset, clip.end
        if not 0 <= onset <= end < n:
            raise DataError(f"{where(clip)}: onset..offset {onset}..{end} is not inside the "
                            f"clip's {n} frames", "fix the annotation or add an erratum")
        if self.occurring == "apex":
            apex, estimated = resolve_apex(clip)
            if not onset <= apex <= end:
                raise DataError(f"{where(clip)}: apex {apex} is outside onset..offset "
                                f"{onset}..{end}", "fix the annotation or add an erratum")
            if estimated:
                log.info("%s: no annotated apex, estimated frame %d used", where(clip), apex)
            middle = np.array([apex])
        else:
            middle = occurring_indices(onset, end, self.frames)
        idx = [onset, *middle.tolist(), end]
        frames = clip.frames
        return np.stack([resize_image(to_grey(frames[i]), self.size) for i in idx])


# --------------------------------------------------------------------------- ranking, draws

def rank_loss(scores: Any, margin: float, mode: str = "halves") -> Any:
    """Hinge on the gap between the top and bottom half of each row of (N, K) scores, averaged
    over rows: ``halves`` max(0, δ − (mean top − mean bottom)); ``pairwise`` the mean of
    max(0, δ − (s_i − s_j)) over top i, bottom j. K < 2 has no halves: 0."""
    half = scores.shape[1] // 2
    if half == 0:
        return scores.sum() * 0.0
    s = scores.sort(dim=1, descending=True).values
    top, bottom = s[:, :half], s[:, -half:]
    if mode == "pairwise":
        return (margin - (top[:, :, None] - bottom[:, None, :])).clamp_min(0).mean()
    return (margin - (top.mean(1) - bottom.mean(1))).clamp_min(0).mean()


def eval_slots(pool: int, k: int) -> np.ndarray:
    """k evenly spaced slots of a pool of ``pool`` occurring frames, ends included."""
    if k == 1:
        return np.array([(pool - 1) // 2])
    return np.floor(np.arange(k) * (pool - 1) / (k - 1) + 0.5).astype(np.int64)


def draw_slots(n: int, pool: int, k: int, sampling: str) -> Any:
    """(n, k) random slots from torch's global CPU generator: ``uniform`` without replacement
    (with, when k > pool), ``stratified`` one uniform slot in each of k equal strata."""
    import torch

    if sampling == "stratified":
        u = torch.rand(n, k)
        return ((torch.arange(k) + u) * pool / k).floor().long().clamp_max(pool - 1)
    if k > pool:
        return torch.randint(pool, (n, k))
    return torch.rand(n, pool).argsort(dim=1)[:, :k]


def magnify(onset: Any, occurring: Any, alpha: float, blur: Any = None) -> Any:
    """Linear Eulerian-style magnification [ours]: occurring + α·G*(occurring − onset), in
    [0, 1]; ``blur`` a (1, 1, k, k) Gaussian (None: no spatial low-pass)."""
    import torch.nn.functional as F

    diff = occurring - onset
    if blur is not None:
        shape, p = diff.shape, blur.shape[-1] // 2
        flat = F.pad(diff.reshape(-1, 1, *shape[-2:]), (p, p, p, p), mode="replicate")
        diff = F.conv2d(flat, blur.to(diff.dtype)).reshape(shape)
    return (occurring + alpha * diff).clamp(0.0, 1.0)


# --------------------------------------------------------------------------- network

@functools.cache
def module_class() -> type:
    """Defined on first use: loading the plugin must not import torch."""
    import torch
    from torch import nn

    class LTR3OModule(nn.Module):
        """K candidates per sample -> shared ResNet-18 -> scores -> weighted features -> FC."""

        def __init__(self, encoder: nn.Module, num_classes: int, pool: int, candidates: int,
                     test_candidates: int, sampling: str, hidden: int, temperature: float,
                     alpha: float, sigma: float) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = nn.Sequential(nn.Linear(512, hidden), nn.ReLU(), nn.Linear(hidden, 1),
                                      nn.Sigmoid())
            self.classifier = nn.Linear(512, num_classes)
            self.pool, self.k, self.sampling = pool, candidates, sampling
            self.temperature, self.alpha = temperature, alpha
            self.register_buffer("eval_slots", torch.from_numpy(eval_slots(pool, test_candidates)),
                                 persistent=False)
            blur = None
            if alpha > 0 and sigma > 0:
                r = int(np.ceil(3 * sigma))
                g = torch.exp(-torch.arange(-r, r + 1.0) ** 2 / (2 * sigma ** 2))
                blur = (g[:, None] * g[None, :] / g.sum() ** 2).view(1, 1, 2 * r + 1, 2 * r + 1)
            self.register_buffer("blur", blur, persistent=False)

        def slots(self, n: int) -> torch.Tensor:
            """The occurring slots of this pass: fresh draws in training, fixed in evaluation."""
            if self.training:
                return draw_slots(n, self.pool, self.k, self.sampling)
            return self.eval_slots.cpu().expand(n, -1)

        def candidates(self, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
            """(N, F + 2, H, W) stacks -> (N, K, 3, H, W) (onset, occurring, offset)."""
            n, k = slots.shape
            occ = x[:, 1:-1].gather(1, slots.to(x.device).view(n, k, 1, 1).expand(
                n, k, *x.shape[-2:]))
            onset, offset = x[:, :1].expand_as(occ), x[:, -1:].expand_as(occ)
            if self.alpha > 0:
                occ = magnify(onset, occ, self.alpha, self.blur)
            return torch.stack((onset, occ, offset), dim=2)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            cand = self.candidates(x, self.slots(x.shape[0]))
            n, k = cand.shape[:2]
            flat = ((cand - GREY_MEAN) / GREY_STD).flatten(0, 1)
            if x.is_contiguous(memory_format=torch.channels_last) and x.device.type == "cuda":
                flat = flat.contiguous(memory_format=torch.channels_last)
            feats = self.encoder(flat).view(n, k, -1)
            scores = self.head(feats).squeeze(-1)
            weights = torch.softmax(scores.float() / self.temperature, dim=1).to(feats.dtype)
            return self.classifier((weights.unsqueeze(-1) * feats).sum(1)), scores

    LTR3OModule.__qualname__ = "LTR3OModule"
    return LTR3OModule


def __getattr__(name: str) -> Any:
    if name == "LTR3OModule":
        return module_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check(ok: bool, what: str, fix: str) -> None:
    if not ok:
        raise ConfigError(f"model ltr3o: {what}", fix)


class LTR3O(TorchClassifier):
    """LTR3O-style classifier of ``three-o`` stacks; see the module docstring for the sources.

    :param candidates: K occurring frames drawn per sample and pass in training
    :param test_candidates: evenly spaced occurring frames used at test time
    :param sampling: uniform (without replacement) or stratified (one per K equal strata)
    :param ranking: halves (hinge on top-half minus bottom-half mean score) or pairwise
    :param margin: δ, the score gap the ranking hinge asks for
    :param rank_weight: λ, the ranking loss's weight beside cross-entropy
    :param hidden: width of the expressiveness MLP
    :param temperature: τ of the softmax(s / τ) aggregation weights (lower: sharper)
    :param magnify: α of the motion magnification of occurring vs onset (0: off)
    :param magnify_sigma: Gaussian blur σ of the magnified difference
    :param flip: random horizontal flips in training
    :param pretrained: ResNet-18 weights: PATH, None (a warm local cache, else random), False
    """

    defaults = {"epochs": 30, "lr": 1e-4, "batch_size": 16, "channels_first": True}
    cam_target = "encoder.layer4"

    def __init__(self, candidates: int = 5, test_candidates: int = 8, sampling: str = "uniform",
                 ranking: str = "halves", margin: float = 0.15, rank_weight: float = 1.0,
                 hidden: int = 128, temperature: float = 1.0, magnify: float = 0.0,
                 magnify_sigma: float = 1.0, flip: bool = True,
                 pretrained: str | bool | None = None, **training: Any) -> None:
        super().__init__(**training)
        for name, value in (("candidates", candidates), ("test_candidates", test_candidates),
                            ("hidden", hidden)):
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                   f"{name} must be a positive integer, got {value!r}", f"use e.g. {name}=5")
        _check(sampling in ("uniform", "stratified"), f"unknown sampling {sampling!r}",
               "use sampling=uniform or stratified")
        _check(ranking in ("halves", "pairwise"), f"unknown ranking {ranking!r}",
               "use ranking=halves or pairwise")
        for name, value in (("margin", margin), ("rank_weight", rank_weight),
                            ("magnify", magnify), ("magnify_sigma", magnify_sigma)):
            _check(isinstance(value, (int, float)) and value >= 0,
                   f"{name} must be a number >= 0, got {value!r}", f"use e.g. {name}=0.15")
        _check(isinstance(temperature, (int, float)) and temperature > 0,
               f"temperature must be > 0, got {temperature!r}", "use temperature=1")
        self.candidates, self.test_candidates, self.sampling = candidates, test_candidates, sampling
        self.ranking, self.margin, self.rank_weight = ranking, margin, rank_weight
        self.hidden, self.temperature = hidden, temperature
        self.magnify, self.magnify_sigma, self.flip = magnify, magnify_sigma, flip
        self.pretrained = pretrained
        self.init_: str | None = None

    def build(self, num_classes: int, input_shape: tuple[int, ...],
              weights: bool = True) -> Any:
        from merbench.backbones import init_pretrained, resnet18

        _check(self.channels_first, "channels_first must be True: inputs are (F + 2, H, W) stacks",
               "drop the channels_first override")
        _check(len(input_shape) == 3 and input_shape[0] >= 3,
               f"needs (F + 2, H, W) onset/occurring/offset stacks, got {tuple(input_shape)}",
               "end the method with the three-o step")
        encoder = resnet18(num_classes=0)
        self.init_ = (init_pretrained(encoder, self.pretrained, "ltr3o encoder")
                      if weights else "saved-state")
        return module_class()(encoder, num_classes, input_shape[0] - 2, self.candidates,
                              self.test_candidates, self.sampling, self.hidden,
                              self.temperature, self.magnify, self.magnify_sigma)

    def augment(self, batch: Any) -> Any:
        """Random horizontal flips of whole stacks (torch's global generator) [ours]."""
        import torch

        if not self.flip:
            return batch
        flip = (torch.rand(batch.shape[0]) < 0.5).to(batch.device).view(-1, 1, 1, 1)
        return torch.where(flip, batch.flip(-1), batch)

    def logits(self, output: Any) -> Any:
        return output[0]

    def loss(self, output: Any, target: Any) -> Any:
        logits, scores = output
        ce = self.criterion_(logits.float(), target)
        rank = rank_loss(scores.float(), self.margin, self.ranking)
        return ce + self.rank_weight * rank, {"ce": ce, "rank": rank}

    # -- explanations ------------------------------------------------------------------------
    def candidate_maps(self, X: np.ndarray, targets: Sequence[int] | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Test candidates' (scores (N, K), weights (N, K), Grad-CAM maps (N, K, H, W))."""
        import torch
        import torch.nn.functional as F

        from merbench.explain import grad_cam, normalise_maps

        _check(self.module_ is not None, "not fitted", "call fit() or load weights")
        module, device = self.module_, next(self.module_.parameters()).device
        Xt, out = self.to_tensor(X), ([], [], [])
        for start in range(0, Xt.shape[0], self.batch_size):
            xb = self._prepare(Xt[start:start + self.batch_size], device)
            tb = None if targets is None else list(targets)[start:start + len(xb)]
            cams, _ = grad_cam(module, module.get_submodule(self.cam_target), xb, tb,
                               forward=lambda x: module(x)[0])
            with torch.no_grad():
                scores = module(xb)[1].float()
            cams = F.interpolate(cams[:, None], size=tuple(xb.shape[-2:]), mode="bilinear",
                                 align_corners=False)[:, 0]
            out[0].append(scores.cpu())
            out[1].append(torch.softmax(scores / self.temperature, dim=1).cpu())
            out[2].append(normalise_maps(cams).view(*scores.shape, *cams.shape[-2:]).cpu())
        return tuple(torch.cat(o).numpy() for o in out)  # type: ignore[return-value]

    def grad_cam(self, X: np.ndarray, targets: Sequence[int] | None = None) -> np.ndarray:
        """One map per sample: the candidates' maps summed with their aggregation weights."""
        import torch

        from merbench.explain import normalise_maps

        _, weights, maps = self.candidate_maps(X, targets)
        return normalise_maps(torch.from_numpy((weights[..., None, None] * maps).sum(1))).numpy()

    def display_images(self, X: np.ndarray) -> np.ndarray:
        """The onset frame of each stack (the face the maps lie on), as RGB."""
        return np.repeat(np.asarray(X)[:, 0, :, :, None], 3, axis=-1).astype(np.uint8)

    def candidate_scores(self, X: np.ndarray) -> np.ndarray:
        """(N, K) expressiveness scores of the test candidates."""
        import torch

        _check(self.module_ is not None, "not fitted", "call fit() or load weights")
        device, Xt, out = next(self.module_.parameters()).device, self.to_tensor(X), []
        self.module_.eval()
        with torch.no_grad():
            for start in range(0, Xt.shape[0], self.batch_size):
                with self._autocast(device):
                    out.append(self.module_(self._prepare(Xt[start:start + self.batch_size],
                                                          device))[1].float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.test_candidates), np.float32)

    def fold_artifacts(self, X_test: np.ndarray) -> dict[str, np.ndarray]:
        """Per test sample: the candidates' expressiveness scores and their occurring slots."""
        scores = self.candidate_scores(X_test)
        return {"scores": scores, "slots": np.tile(self.module_.eval_slots.cpu().numpy(),
                                                   (len(scores), 1))}

    def explain(self, X: np.ndarray, out_dir: str | Path, targets: Sequence[int] | None = None,
                names: Sequence[str] | None = None,
                labels: Sequence[str] | None = None) -> list[Path]:
        """The shared Grad-CAM figures plus ``candidates_<name>.png`` per sample: onset, each
        test candidate's occurring frame (as the network sees it) titled with its slot, score
        s and weight w (highest score boxed), offset; below, each candidate's Grad-CAM."""
        import torch

        from merbench.explain import new_figure, overlay, safe_stem, save_figure

        written = super().explain(X, out_dir, targets, names, labels)
        X = np.asarray(X)
        scores, weights, maps = self.candidate_maps(X, targets)
        slots = self.module_.eval_slots.cpu()
        device = next(self.module_.parameters()).device
        with torch.no_grad():
            x = torch.from_numpy(X).to(device).float() * self.input_scale
            frames = self.module_.candidates(x, slots.expand(len(X), -1))[:, :, 1].cpu()
        frames = np.clip(np.rint(frames.numpy() / self.input_scale), 0, 255).astype(np.uint8)
        k = len(slots)
        for i in range(len(X)):
            stem = safe_stem(names[i] if names is not None else i)
            fig = new_figure(1.3 * (k + 2), 3.0)
            axes = fig.subplots(2, k + 2)
            for ax in axes.flat:
                ax.set_axis_off()
            axes[0, 0].imshow(X[i, 0], cmap="gray", vmin=0, vmax=255)
            axes[0, 0].set_title("onset", fontsize=8)
            axes[0, -1].imshow(X[i, -1], cmap="gray", vmin=0, vmax=255)
            axes[0, -1].set_title("offset", fontsize=8)
            best = int(scores[i].argmax())
            for j in range(k):
                ax = axes[0, j + 1]
                ax.imshow(frames[i, j], cmap="gray", vmin=0, vmax=255)
                ax.set_title(f"slot {int(slots[j])}\ns={scores[i, j]:.3f} w={weights[i, j]:.3f}",
                             fontsize=7, color="red" if j == best else "black")
                axes[1, j + 1].imshow(overlay(frames[i, j], maps[i, j]))
            axes[1, 0].text(0.5, 0.5, "Grad-CAM", ha="center", va="center", fontsize=8,
                            transform=axes[1, 0].transAxes)
            fig.suptitle(f"{stem}: LTR3O-style candidates: occurring slot (of {X.shape[1] - 2} "
                         "evenly spaced in onset..offset), expressiveness s, weight w",
                         fontsize=9, y=1.04)
            written.append(save_figure(fig, Path(out_dir) / f"candidates_{stem}.png"))
        return written


# --------------------------------------------------------------------------- registration

@hookimpl
def register_preprocessors(register: Any) -> None:
    register("three-o", ThreeO, description="grey onset, F evenly spaced occurring frames and "
             "offset, stacked (F+2, S, S); no apex read (LTR3O-style, seed 002)")


@hookimpl
def register_models(register: Any) -> None:
    register("ltr3o", LTR3O, description="LTR3O-style: ranked onset-occurring-offset candidates "
             "through a shared ResNet-18 (seed 002, abstract only; design ours)")


@hookimpl
def register_methods(register: Any) -> None:
    face = ("face-crop", {"size": 112})
    register("ltr3o", MethodSpec(
        steps=(face, ("three-o", {"size": 112})), model=("ltr3o", {}),
        description="LTR3O-style (seed 002, design ours): face crop -> K random 3O candidates "
                    "ranked by expressiveness, shared ResNet-18; no apex used",
        tag="LTR3O-style"))
    register("ltr3o-apex", MethodSpec(
        steps=(face, ("three-o", {"size": 112, "occurring": "apex"})),
        model=("ltr3o", {"candidates": 1, "test_candidates": 1}),
        description="LTR3O-style ablation: one candidate, occurring = annotated apex",
        tag="LTR3O-style"))
