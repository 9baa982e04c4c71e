"""merbench train -> predict -> explain on synthetic clips, and checkpoint refusals."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import merbench
from merbench.deploy import FORMAT, explain, load, predict, train
from merbench.errors import CheckpointError

SMALL = {"subjects": 3, "clips_per_class": 2, "size": 48, "frames": 16}


def _write_clip(folder: Path, label_index: int) -> tuple[merbench.Sample, Path]:
    ds = merbench.dataset("synthetic", **SMALL)
    sample = ds.samples[label_index * SMALL["clips_per_class"]]
    frames = ds.render(sample)
    folder.mkdir()
    for k, frame in enumerate(frames):  # numbered from 100 to check number-based look-up
        cv2.imwrite(str(folder / f"img{100 + k}.png"), frame[..., ::-1])
    return sample, folder


def test_train_predict_round_trip(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.pt"
    facts = train("diff-logreg", "synthetic", dataset_params=SMALL, output=ckpt,
                  cache_dir=str(tmp_path / "cache"))
    assert facts["labels"] == ["negative", "positive", "surprise"]
    assert facts["trained_on"]["samples"] == 18
    sample, folder = _write_clip(tmp_path / "clip", 1)
    out = predict(ckpt, folder, onset=100 + sample.onset, apex=100 + sample.apex,
                  offset=100 + sample.offset)
    assert set(out["probabilities"]) == {"negative", "positive", "surprise"}
    assert abs(sum(out["probabilities"].values()) - 1) < 1e-6
    # the checkpoint's model gives the same probabilities as the method's own preprocessing
    meth, model, _ = load(ckpt)
    clip = merbench.dataset("synthetic", **SMALL).load(sample)
    direct = model.predict_proba(meth.preprocess(clip)[None])[0]
    # PNG round trip is lossless, so the features and probabilities agree
    assert np.allclose(direct, [out["probabilities"][c] for c in facts["labels"]], atol=1e-6)


def test_checkpoint_from_another_version_or_params_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.pt"
    train("diff-logreg", "synthetic", dataset_params=SMALL, output=ckpt,
          cache_dir=str(tmp_path / "cache"))
    data = torch.load(ckpt, weights_only=True)
    data["merbench"] = "9.9.0"
    torch.save(data, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="written by merbench 9.9.0"):
        load(tmp_path / "old.pt")
    data = torch.load(ckpt, weights_only=True)
    data["params"]["apex-diff.size"] = 16
    torch.save(data, tmp_path / "changed.pt")
    with pytest.raises(CheckpointError, match="apex-diff.size"):
        load(tmp_path / "changed.pt")
    torch.save({"format": "something else"}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match=FORMAT):
        load(tmp_path / "foreign.pt")


def test_explain_writes_cropnet_pngs(tmp_path: Path) -> None:
    ckpt = tmp_path / "cropnet.pt"
    overrides = {"model.epochs": 1, "model.trunk": "test_convnext", "model.size": 64,
                 "model.crop": 32, "face-crop.size": 64, "face-crop.fallback": "centre",
                 "ars.size": 64, "model.pretrained": False}
    train("ars-cropnet", "synthetic", dataset_params={**SMALL, "subjects": 2,
                                                       "clips_per_class": 1},
          overrides=overrides, output=ckpt, cache_dir=str(tmp_path / "cache"))
    _, folder = _write_clip(tmp_path / "clip", 0)
    paths = explain(ckpt, folder, tmp_path / "ex")
    names = sorted(p.name for p in paths)
    assert names == ["gradcam_clip.png", "position_similarity.png"]
    for p in paths:
        image = cv2.imread(str(p))
        assert image is not None and image.size > 0


def test_explain_refuses_models_without_explanations(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.pt"
    train("diff-logreg", "synthetic", dataset_params=SMALL, output=ckpt,
          cache_dir=str(tmp_path / "cache"))
    _, folder = _write_clip(tmp_path / "clip", 0)
    with pytest.raises(CheckpointError, match="offers no explanations: it has no "
                       r"explain\(X, out_dir\) method") as info:
        explain(ckpt, folder, tmp_path / "ex")
    assert "every TorchClassifier has Grad-CAM" in info.value.fix


@pytest.mark.parametrize("method", ["flow-ststnet", "flow-dual-inception"])
def test_explain_every_deep_model_with_class_names(method: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  one_torch_thread) -> None:
    import merbench.explain as ex

    titles: list[str] = []
    original = ex.save_cam_figure

    def recording(path, image, cam, title):  # type: ignore[no-untyped-def]
        titles.append(title)
        return original(path, image, cam, title)

    monkeypatch.setattr(ex, "save_cam_figure", recording)
    data = {**SMALL, "size": 64, "clips_per_class": 1}
    ckpt = tmp_path / "model.pt"
    train(method, "synthetic", dataset_params=data, output=ckpt, cache_dir=str(tmp_path / "c"),
          overrides={"model.epochs": 1, "face-crop.size": 64})
    out = predict(ckpt, "synthetic/s01/neg_01", data_params=data)
    paths = explain(ckpt, "synthetic/s01/neg_01", tmp_path / "ex", data_params=data)
    assert [p.name for p in paths] == ["gradcam_neg_01.png"]
    # the title names the predicted class and its probability, as predict reports them
    p = out["probabilities"][out["prediction"]]
    assert titles == [f"neg_01: predicted {out['prediction']} ({p:.2f})"]
    image = cv2.imread(str(paths[0]))
    assert image is not None and image.shape[1] > 2 * image.shape[0] * 0.8  # input | overlay


def test_predict_a_dataset_sample_by_id(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.pt"
    train("diff-logreg", "synthetic", dataset_params=SMALL, output=ckpt,
          cache_dir=str(tmp_path / "cache"))
    by_id = predict(ckpt, "synthetic/s02/pos_01", data_params=SMALL)
    ds = merbench.dataset("synthetic", **SMALL)
    s = next(x for x in ds.samples if x.id == "synthetic/s02/pos_01")
    # read with its annotated frames, through the checkpoint's own preprocessing
    assert (by_id["onset"], by_id["apex"], by_id["offset"]) == (s.onset, s.apex, s.offset)
    meth, model, _ = load(ckpt)
    direct = model.predict_proba(meth.preprocess(ds.load(s))[None])[0]
    assert np.allclose(direct, [by_id["probabilities"][c] for c in ds.classes()])
    with pytest.raises(merbench.errors.DataError,
                       match=r"no sample .synthetic/s02/pos_09.*did you mean synthetic/s02/pos_0"):
        predict(ckpt, "synthetic/s02/pos_09", data_params=SMALL)
