"""Figures of the prototype network (:mod:`merbench_plugins.prototype`): decoded prototypes,
nearest prototypes of inputs, and the run-level t-SNE of test latents.

Kept apart from the model so the plugin module stays the network and its loss. Every figure is
drawn on matplotlib's Agg canvas and written atomically (:func:`merbench.explain.save_figure`).
The run-level figures read only the arrays each fold stored (``fold_artifacts(X_test)``), whose
sample ids the core has checked against the fold's test predictions.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from merbench.atomic import write_text
from merbench.explain import new_figure, save_figure

NEAREST = 3  # prototypes shown per input
NEAREST_ROWS = 8  # inputs drawn in a run's nearest.png (all of them are listed in nearest.txt)


def class_colour(c: int, n_classes: int) -> Any:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n_classes <= 10 else "tab20"]
    return cmap(int(c) % cmap.N)


def prototype_captions(owners: Sequence[int], classes: Sequence[str]) -> list[str]:
    """``p3 · disgust``: index and class of each prototype (``?`` for no class)."""
    return [f"p{j} · {classes[c] if 0 <= c < len(classes) else '?'}"
            for j, c in enumerate(owners)]


def save_image_rows(path: Path, rows: Sequence[tuple[str, np.ndarray, Sequence[str]]],
                    title: str) -> Path:
    """One row per (row title, (P, H, W, 3) uint8 images, a caption per image); a row repeats
    the captions only where they differ from the row above."""
    n_cols = max(len(images) for _, images, _ in rows)
    fig = new_figure(0.6 + 1.5 * n_cols, 0.5 + 1.75 * len(rows))
    fig.set_layout_engine("constrained")
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    previous: Sequence[str] = ()
    for r, (name, images, captions) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(images):
                ax.set_axis_off()
                continue
            ax.imshow(images[c])
            if list(captions) != list(previous):
                ax.set_title(captions[c], fontsize=7)
        axes[r][0].set_ylabel(name, fontsize=7)
        previous = captions
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def nearest_lines(idx: np.ndarray, dist: np.ndarray, owners: Sequence[int],
                  classes: Sequence[str]) -> list[str]:
    """``p0 negative 12.3; p2 surprise 40.1`` for each row of nearest prototypes."""
    caps = prototype_captions(owners, classes)
    return ["; ".join(f"{caps[j]} d²={d:.4g}" for j, d in zip(row_i, row_d))
            for row_i, row_d in zip(idx, dist)]


def save_nearest(stem: Path, entries: Sequence[tuple[str, np.ndarray]], idx: np.ndarray,
                 dist: np.ndarray, prototypes: Sequence[np.ndarray] | np.ndarray,
                 owners: Sequence[Any], classes: Sequence[str],
                 text: str | None = None) -> list[Path]:
    """``stem.png``: per entry (title, input image) the input beside its nearest decoded
    prototypes with their squared distances; ``stem.txt``: the same as text (or ``text``).
    ``prototypes``/``owners`` are one array for all entries, or one per entry (per fold)."""
    per_entry = isinstance(owners[0], (list, tuple, np.ndarray))
    n_cols = 1 + idx.shape[1]
    fig = new_figure(1.6 * n_cols + 0.4, 2.3 * len(entries) + 0.2)
    fig.set_layout_engine("constrained")
    lines = []
    for r, (sub, (title, image)) in enumerate(zip(np.atleast_1d(fig.subfigures(len(entries), 1)),
                                                   entries)):
        imgs = prototypes[r] if per_entry else prototypes
        own = owners[r] if per_entry else owners
        caps = prototype_captions(own, classes)
        sub.suptitle(title, fontsize=8)
        axes = sub.subplots(1, n_cols, squeeze=False)[0]
        for ax in axes:
            ax.set_axis_off()
        axes[0].imshow(image)
        axes[0].set_title("input", fontsize=7)
        for c, (j, d) in enumerate(zip(idx[r], dist[r]), start=1):
            axes[c].imshow(imgs[j])
            axes[c].set_title(f"{caps[j]}\nd² = {d:.4g}", fontsize=7)
        lines.append(f"{title}\n  nearest: "
                     f"{nearest_lines(idx[r:r + 1], dist[r:r + 1], own, classes)[0]}")
    png = save_figure(fig, stem.with_suffix(".png"))
    txt = write_text(stem.with_suffix(".txt"), text if text is not None else "\n".join(lines) + "\n")
    return [png, Path(txt)]


def tsne_embedding(latents: np.ndarray, prototypes: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-d t-SNE of the test latents and the prototypes embedded together (t-SNE has no
    transform for new points): rows = latents, then prototypes. Perplexity min(30, (n − 1)/3),
    at least 1, so that small folds still embed."""
    from sklearn.manifold import TSNE

    points = np.concatenate([latents, prototypes]).astype(np.float64)
    perplexity = float(min(30.0, max(1.0, (len(points) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed
                ).fit_transform(points)


def save_tsne(path: Path, panels: Sequence[dict[str, Any]], classes: Sequence[str]) -> Path:
    """One t-SNE panel per fold: test latents coloured by true class (hollow = misclassified),
    prototypes as stars in their class's colour."""
    from matplotlib.lines import Line2D

    n = len(panels)
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = -(-n // cols)
    fig = new_figure(4.2 * cols, 3.8 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    k = len(classes)
    for ax, p in zip(axes.flat, panels):
        xy, n_test = p["xy"], len(p["y_true"])
        for c in range(k):
            for correct in (True, False):
                sel = (p["y_true"] == c) & ((p["y_true"] == p["y_pred"]) == correct)
                if sel.any():
                    colour = class_colour(c, k)
                    ax.scatter(xy[:n_test][sel, 0], xy[:n_test][sel, 1], s=22,
                               facecolors=colour if correct else "none", edgecolors=colour)
        for j, (pt, c) in enumerate(zip(xy[n_test:], p["owners"])):
            ax.scatter([pt[0]], [pt[1]], marker="*", s=260, edgecolors="black", linewidths=0.8,
                       facecolors=class_colour(c, k) if c >= 0 else "white")
            ax.annotate(f"p{j}", pt, fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_title(p["title"], fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], marker="o", linestyle="", color=class_colour(c, k), label=name)
               for c, name in enumerate(classes)]
    handles += [Line2D([], [], marker="*", linestyle="", markersize=12, markerfacecolor="white",
                       markeredgecolor="black", label="prototype"),
                Line2D([], [], marker="o", linestyle="", markerfacecolor="none",
                       markeredgecolor="grey", label="misclassified")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=8)
    fig.suptitle("t-SNE of test latents (colour: true class) and prototypes", fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return save_figure(fig, path)


def explain_run(folds: Sequence[Any], classes: list[str], out: Path) -> list[Path]:
    """``tsne.png``, ``prototypes.png``, ``nearest.png`` / ``nearest.txt`` (every test sample
    in the text; in the figure one sample per fold in turn, classes interleaved) and
    ``snapshots.png`` when snapshots were kept, from each fold's artifacts
    (:class:`merbench.explain_run.FoldArtifacts`)."""
    from tabulate import tabulate

    index = {c: i for i, c in enumerate(classes)}
    panels, rows, snap_rows, table, per_fold = [], [], [], [], []
    for f in folds:
        a = f.arrays
        owners = [int(c) for c in a["prototype_classes"]]
        captions = prototype_captions(owners, classes)
        images = a["prototype_images"]
        y_true = np.array([index[c] for c in f.y_true])
        y_pred = np.array([index[c] for c in f.y_pred])
        panels.append({"xy": tsne_embedding(a["latents"], a["prototypes"]), "y_true": y_true,
                       "y_pred": y_pred, "owners": owners,
                       "title": f"{f.name}: {len(y_true)} test samples"})
        rows.append((f.name, images, captions))
        if "snapshot_epochs" in a:
            snap_rows += [(f"{f.name}, epoch {int(e)}", im, captions)
                          for e, im in zip(a["snapshot_epochs"], a["snapshot_images"])]
            snap_rows.append((f"{f.name}, final", images, captions))
        order = np.argsort(a["distances"], axis=1, kind="stable")[:, :NEAREST]
        dist = np.take_along_axis(a["distances"], order, axis=1)
        near = nearest_lines(order, dist, owners, classes)
        for i, sid in enumerate(f.sample_ids):
            table.append([sid, f.name, f.y_true[i], f.y_pred[i], near[i]])
        # the figure's order within a fold: the first sample of each class, then the second...
        rank = {i: sum(1 for k in range(i) if y_true[k] == y_true[i]) for i in range(len(y_true))}
        per_fold.append([(f"{f.sample_ids[i]}: true {f.y_true[i]}, predicted {f.y_pred[i]}",
                          a["inputs"][i], order[i], dist[i], images, owners)
                         for i in sorted(rank, key=lambda i: (rank[i], y_true[i]))])
    picked = [fold[i] for i in range(max(map(len, per_fold))) for fold in per_fold
              if i < len(fold)][:NEAREST_ROWS]
    written = [save_tsne(out / "tsne.png", panels, classes),
               save_image_rows(out / "prototypes.png", rows,
                               "decoded prototypes g(p_j), one row per fold")]
    if snap_rows:
        written.append(save_image_rows(out / "snapshots.png", snap_rows,
                                       "decoded prototypes during training"))
    text = tabulate(table, headers=["sample", "fold", "true", "predicted",
                                    "nearest prototypes (squared distance)"], tablefmt="simple")
    written += save_nearest(out / "nearest", [(e[0], e[1]) for e in picked],
                            np.stack([e[2] for e in picked]), np.stack([e[3] for e in picked]),
                            [e[4] for e in picked], [e[5] for e in picked], classes,
                            text=text + "\n")
    return written
