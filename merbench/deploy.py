"""Train a method on a whole dataset, save it, and predict new clips with the same steps.

A checkpoint is a torch file of plain values and tensors (loaded with ``weights_only=True``,
so no pickle): the method name, every parameter, the label names, the merbench version, the
input shape and the model's fitted state. ``predict`` refuses a checkpoint written by another
merbench version or whose method no longer resolves to the same parameters.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .atomic import atomic_path, make_dir
from .errors import CheckpointError, DataError
from .methods import Method
from .types import Sample

log = logging.getLogger(__name__)
FORMAT = "merbench-model/1"


def _to_tensors(state: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
            for k, v in state.items()}


def _to_numpy(state: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    return {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def train(method: str, dataset: str, root: str | None = None, labels: str = "native",
          overrides: Mapping[str, Any] | None = None, dataset_params: Mapping[str, Any] | None = None,
          seed: int = 0, device: str = "auto", output: str | Path = "model.pt",
          cache_dir: str | None = None, workers: int = 1, progress: bool = False
          ) -> dict[str, Any]:
    """Fit ``method`` on every sample of ``dataset`` (label space ``labels``); save a checkpoint.
    ``progress``: progress bars on a terminal (deep models log epoch lines either way)."""
    import torch

    from . import __version__
    from . import dataset as open_dataset
    from .executors import make_executor
    from .preprocess import preprocess

    meth = Method.named(method, overrides or {})
    params = dict(dataset_params or {})
    ds = open_dataset(dataset, root=root, **params) if root else open_dataset(dataset, **params)
    samples = ds.labelled(labels)
    classes = ds.classes(labels)
    with make_executor(workers) as executor:
        pre = preprocess(meth, {ds.name: ds}, samples, cache_root=cache_dir, executor=executor)
    X, kept = pre.X, pre.kept
    y = np.array([classes.index(s.label) for s in kept])
    absent = [c for k, c in enumerate(classes) if not (y == k).any()]
    if absent:
        raise DataError(f"{dataset}: no sample of class {absent[0]!r} in label space {labels!r}",
                        "choose a label space whose classes all have samples")
    model = meth.build_model(num_classes=len(classes), seed=seed, device=device,
                             progress=progress)
    model.fit(X, y, groups=np.array([s.group for s in kept]))
    input_shape = model.input_shape(X)
    ckpt = {"format": FORMAT, "merbench": __version__, "method": meth.name,
            "params": meth.params(), "overrides": {k: str(v) for k, v in (overrides or {}).items()},
            "labels": list(classes), "input_shape": list(input_shape),
            "trained_on": {"dataset": dataset, "labels": labels, "samples": len(kept),
                           "seed": seed},
            "init": getattr(model, "init_", None), "state": _to_tensors(model.get_state())}
    with atomic_path(output) as tmp:  # a failed save never destroys an existing good file
        torch.save(ckpt, tmp)
    return {k: v for k, v in ckpt.items() if k != "state"}


def load(path: str | Path) -> tuple[Method, Any, dict[str, Any]]:
    """(method, fitted model, checkpoint facts) from a checkpoint written by :func:`train`."""
    import torch

    from . import __version__

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        from .training import load_failure

        raise CheckpointError(f"{path} is not a merbench checkpoint: {load_failure(exc)}",
                              "make one with `merbench train`") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a merbench checkpoint ({FORMAT})",
                              "make one with `merbench train`")
    if ckpt["merbench"].split(".")[:2] != __version__.split(".")[:2]:
        raise CheckpointError(f"{path} was written by merbench {ckpt['merbench']}, this is "
                              f"{__version__}", "retrain it with this version (`merbench train`)")
    meth = Method.named(ckpt["method"], ckpt.get("overrides", {}))
    if meth.params() != ckpt["params"]:
        changed = sorted(k for k in set(meth.params()) | set(ckpt["params"])
                         if meth.params().get(k) != ckpt["params"].get(k))
        raise CheckpointError(f"{path}: method {meth.name!r} now resolves to other parameters "
                              f"({', '.join(changed[:4])})", "retrain the checkpoint")
    model = meth.build_model(num_classes=len(ckpt["labels"]), seed=0, device="cpu")
    model.set_state(_to_numpy(ckpt["state"]), tuple(ckpt["input_shape"]))
    return meth, model, ckpt


def clip_sample(path: str | Path, onset: int | None = None, apex: int | None = None,
                offset: int | None = None) -> Sample:
    """A Sample for a new clip: a frames folder (numbers in file names) or a video file."""
    from .video import VIDEO_EXTENSIONS, index_frames

    path = Path(path)
    if not path.exists():
        raise DataError(f"clip {path} does not exist", "give a frames folder or a video file")
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        import cv2

        cap = cv2.VideoCapture(str(path))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        first, last = 0, max(n - 1, 0)
    else:
        numbers = sorted(index_frames(path))
        if not numbers:
            raise DataError(f"{path} holds no numbered image frames")
        first, last = numbers[0], numbers[-1]
    onset = first if onset is None else onset
    offset = last if offset is None else offset
    return Sample("input", "-", path.name, "", onset, apex, offset,
                  apex_estimated=apex is None, path=str(path))


def open_input(clip: str | Path, onset: int | None = None, apex: int | None = None,
               offset: int | None = None, data_root: str | None = None,
               data_params: Mapping[str, Any] | None = None) -> tuple[Sample, Any]:
    """(sample, raw input) for a frames folder or video file, or for a sample id
    ``dataset/subject/clip`` of a registered dataset (read with its annotated onset, apex and
    offset; ``data_root`` / ``data_params`` open the dataset)."""
    from .video import load_clip

    text = str(clip)
    parts = text.split("/")
    if not Path(text).exists() and len(parts) == 3 and all(parts):
        from . import dataset as open_dataset
        from .plugins import registry

        if parts[0] in registry()["dataset"]:
            params = dict(data_params or {})
            ds = open_dataset(parts[0], root=data_root, **params) if data_root else \
                open_dataset(parts[0], **params)
            by_id = {s.id: s for s in ds.samples}
            if text not in by_id:
                import difflib

                close = difflib.get_close_matches(text, by_id, n=1)
                raise DataError(f"no sample {text!r} in dataset {parts[0]!r}",
                                f"did you mean {close[0]}?" if close else
                                f"e.g. {next(iter(by_id), '(none)')}")
            sample = by_id[text]
            return sample, ds.load(sample)
    sample = clip_sample(clip, onset, apex, offset)
    return sample, load_clip(sample)


def predict(checkpoint: str | Path, clip: str | Path, onset: int | None = None,
            apex: int | None = None, offset: int | None = None, data_root: str | None = None,
            data_params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Class probabilities for one new clip (or a dataset's sample by id, see
    :func:`open_input`), through the checkpoint's own preprocessing."""
    meth, model, ckpt = load(checkpoint)
    sample, raw = open_input(clip, onset, apex, offset, data_root, data_params)
    x = meth.preprocess(raw)
    proba = np.asarray(model.predict_proba(x[None]))[0]
    labels = ckpt["labels"]
    return {"clip": str(clip), "method": meth.name, "prediction": labels[int(np.argmax(proba))],
            "probabilities": {c: float(p) for c, p in zip(labels, proba)},
            "onset": sample.onset, "apex": sample.apex, "offset": sample.offset,
            "apex_estimated": sample.apex_estimated}


def explain(checkpoint: str | Path, clip: str | Path, out_dir: str | Path,
            onset: int | None = None, apex: int | None = None,
            offset: int | None = None, data_root: str | None = None,
            data_params: Mapping[str, Any] | None = None) -> list[Path]:
    """Save a model's explanations for one new clip as PNG files: every deep model's Grad-CAM
    figure (input beside overlay, titled with the predicted class name and probability, colour
    bar), plus what a model adds (e.g. CropNet's position-embedding similarity). Models without
    ``explain(X, out_dir, ...)`` are refused."""
    meth, model, ckpt = load(checkpoint)
    if not callable(getattr(model, "explain", None)):
        raise CheckpointError(
            f"model {meth.model_name!r} (method {meth.name!r}) offers no explanations: it has "
            "no explain(X, out_dir) method", "explain a deep model (every TorchClassifier has "
            "Grad-CAM, e.g. flow-ststnet, flow-dual-inception, ars-cropnet), or implement "
            "explain() in its plugin (see README, Writing a plugin)")
    sample, raw = open_input(clip, onset, apex, offset, data_root, data_params)
    x = meth.preprocess(raw)
    make_dir(out_dir, "output folder")
    return [Path(p) for p in model.explain(x[None], out_dir, names=[Path(sample.clip).stem],
                                           labels=list(ckpt["labels"]))]
