"""The shared training loop (merbench/training.py): settings and their discovery, early stopping
on validation subjects, exact resume from the training state, the last-batch rule, every setting
reaching the optimizer and loss, the pretrained-weight loader and the default Grad-CAM explain."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import merbench
from merbench.errors import CheckpointError, ConfigError
from merbench.training import (TRAINING_SETTINGS, TorchClassifier, batch_slices, load_pretrained,
                               subject_split)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("key", ["model.seed", "model.train_state", "model.num_classes"])
def test_runner_owned_parameters_cannot_be_set(key: str) -> None:
    with pytest.raises(ConfigError, match="set by the runner"):
        merbench.method("ststnet", {key: 1})


def _data(n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    X = rng.integers(0, 90, (n, 28, 28, 3)).astype(np.uint8)
    for k, label in enumerate(y):
        X[k, 4 + 8 * label:10 + 8 * label, 4:10] = 250
    return X, y


def test_interrupted_training_resumes_exactly(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MERBENCH_STATE_SECONDS", "0")  # a state after every epoch
    X, y = _data()
    params = dict(epochs=6, lr=0.01, batch_size=16, device="cpu", seed=3)
    straight = merbench.model("ststnet", **params).fit(X, y)

    state = tmp_path / "fold000.pt"
    interrupted = merbench.model("ststnet", train_state=str(state), **params)
    calls = {"n": 0}

    def stop_after_three_epochs(batch):  # 3 batches per epoch
        calls["n"] += 1
        if calls["n"] > 9:
            raise KeyboardInterrupt
        return batch

    interrupted.augment = stop_after_three_epochs
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(X, y)
    assert torch.load(state, weights_only=True)["epoch"] == 3

    resumed = merbench.model("ststnet", train_state=str(state), **params).fit(X, y)
    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3, 4, 5, 6]
    for (k, a), b in zip(straight.module_.state_dict().items(),
                         resumed.module_.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k

    other = merbench.model("ststnet", train_state=str(state), **{**params, "lr": 0.02}).fit(X, y)
    assert [h["epoch"] for h in other.history_] == [1, 2, 3, 4, 5, 6]  # another config: fresh


def test_training_state_is_saved_by_wall_time_and_at_the_end(tmp_path: Path,
                                                              monkeypatch) -> None:
    import merbench.training as training

    clock = {"now": 0.0}
    monkeypatch.setattr(training.time, "monotonic", lambda: clock["now"])
    saved: list[int] = []
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: (saved.append(obj["epoch"]),
                                                      real_save(obj, f)))
    X, y = _data()
    model = merbench.model("ststnet", epochs=7, lr=0.01, batch_size=16, device="cpu", seed=3,
                           train_state=str(tmp_path / "state.pt"))

    def tick(batch):  # 3 batches per epoch: 12 s of "training" per epoch
        clock["now"] += 4.0
        return batch

    model.augment = tick
    model.fit(X, y)
    assert saved == [3, 6, 7]  # 36 s in, 36 s after that save (>= 30 s), and the last epoch
    saved.clear()
    clock["now"] = 0.0
    model.augment = lambda batch: batch  # a fast fit: the last epoch only
    (tmp_path / "state.pt").unlink()
    model.fit(X, y)
    assert saved == [7]


class Net(TorchClassifier):
    """A small conv net with BatchNorm (the layer a one-sample batch breaks)."""

    defaults = {"epochs": 3, "lr": 0.05, "batch_size": 2}

    def __init__(self, width: int = 4, **training) -> None:
        super().__init__(**training)
        self.width = width

    def build(self, num_classes, input_shape):
        from torch import nn

        return nn.Sequential(nn.Conv2d(input_shape[0], self.width, 3, padding=1),
                             nn.BatchNorm2d(self.width), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(self.width, num_classes))


# -- settings ---------------------------------------------------------------------------------
def test_settings_follow_the_class_hierarchy_with_the_models_defaults() -> None:
    params = Net(batch_size=7).get_params()
    assert set(TRAINING_SETTINGS) | {"width", "num_classes", "seed", "device", "train_state",
                                     "progress"} == set(params)
    assert (params["batch_size"], params["epochs"], params["lr"], params["width"]) == \
        (7, 3, 0.05, 4)
    assert params["optimizer"] == "adam" and params["patience"] == 10  # inherited defaults
    with pytest.raises(ConfigError, match=r"has no parameter 'bach_size' \(did you mean "
                                          r"'batch_size'\?\)"):
        Net(bach_size=3)
    for bad in ({"epochs": 0}, {"epochs": "abc"}, {"lr": -1.0}, {"optimizer": "rmsprop"},
                {"val_fraction": 1.0}, {"class_weights": "yes"}, {"batch_size": True}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Net(**bad)
    assert Net(lr=1).lr == 1.0 and isinstance(Net(lr=1).lr, float)  # ints are fine for floats


def test_defaults_may_only_name_inherited_settings() -> None:
    with pytest.raises(TypeError, match="not a setting it inherits"):
        type("Bad", (TorchClassifier,), {"defaults": {"widht": 3}})


def test_typo_in_a_set_key_is_one_line_naming_the_valid_keys(in_tmp, cli) -> None:
    res = cli("run", "--protocol", "synthetic-loso", "--method", "flow-ststnet",
              "--set", "model.bach_size=3")
    assert res.code != 0 and len(res.err.strip().splitlines()) == 1
    assert "did you mean model.batch_size?" in res.err and "valid keys: model.dropout" in res.err
    assert "model.num_classes" not in res.err  # runner-owned keys are not offered


# -- the loop ---------------------------------------------------------------------------------
def _images(n: int = 24, size: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class = which quarter of the image is bright; 6 subjects."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    X = rng.integers(0, 60, (n, size, size, 3)).astype(np.uint8)
    h = size // 2
    for k, label in enumerate(y):
        r, c = divmod(int(label), 2)
        X[k, r * h:(r + 1) * h, c * h:(c + 1) * h] = 220
    groups = np.array([f"s{k % 6}" for k in range(n)])
    return X, y, groups


def test_batch_slices_never_leave_a_one_sample_batch() -> None:
    assert batch_slices(5, 2) == [slice(0, 2), slice(2, 5)]
    assert batch_slices(4, 2) == [slice(0, 2), slice(2, 4)]
    assert batch_slices(1, 8) == [slice(0, 1)]
    assert batch_slices(9, 4) == [slice(0, 4), slice(4, 9)]
    # three training samples at batch size 2 (the ars-cropnet-nocgpo crash) train fine
    X, y, _ = _images(3)
    Net(epochs=2, device="cpu").fit(X, np.array([0, 1, 2]))
    with pytest.raises(ConfigError, match="at least 2 training samples"):
        Net(device="cpu").fit(X[:1], y[:1])


class NoNorm(TorchClassifier):
    """No BatchNorm, no dropout: a batch's gradient is the same whole or in micro-batches."""

    defaults = {"epochs": 3, "lr": 0.05, "batch_size": 16, "optimizer": "sgd"}

    def build(self, num_classes, input_shape):
        from torch import nn

        return nn.Sequential(nn.Conv2d(input_shape[0], 4, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


def test_micro_batches_accumulate_the_gradient_of_the_whole_batch() -> None:
    X, y, _ = _images(40)
    whole = NoNorm(device="cpu", seed=1).fit(X, y)
    parts = NoNorm(device="cpu", seed=1, micro_batch=5).fit(X, y)
    assert (whole.micro_batch_, parts.micro_batch_) == (16, 5)
    for (k, a), b in zip(whole.module_.state_dict().items(),
                         parts.module_.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k
    assert [h["loss"] for h in parts.history_] == pytest.approx(
        [h["loss"] for h in whole.history_], abs=1e-6)


def test_memory_estimate_counts_what_autograd_keeps_and_leaves_training_untouched() -> None:
    from torch import nn

    class Linear(TorchClassifier):
        def build(self, num_classes, input_shape):
            return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_classes))

    model = Linear(device="cpu")
    module = model.build(3, (3, 8, 8))
    X = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    per_sample, fixed = model._memory_estimate(module, X, torch.device("cpu"))
    # the Linear keeps its float input (2 samples × 192 floats = 1536 bytes): ×1.5 per sample,
    # plus the float batch twice (8 bytes per value); weights + gradients + 2 Adam states
    assert per_sample == 1.5 * 1536 / 2 + 8 * 192
    assert fixed == 4 * (192 * 3 + 3) * 4
    net = Net(device="cpu")
    module = net.build(3, (3, 8, 8))
    stats = {k: v.clone() for k, v in module.state_dict().items()}
    rng = torch.get_rng_state()
    net._memory_estimate(module, X, torch.device("cpu"))
    assert all(torch.equal(stats[k], v) for k, v in module.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_batch_over_the_memory_budget_is_split_or_refused_before_training(monkeypatch) -> None:
    X, y, _ = _images(40)
    monkeypatch.setattr(NoNorm, "_memory_estimate", lambda self, *a: (1e6, 1e6))
    monkeypatch.setenv("MERBENCH_MEMORY_GB", "0.0065")  # room for 5 samples of 1 MB
    model = NoNorm(device="cpu").fit(X, y)
    assert model.micro_batch_ == 4  # batch 16 in ceil(16 / 5) = 4 equal parts
    whole = NoNorm(device="cpu", batch_size=4).fit(X, y)  # fits: not split
    assert whole.micro_batch_ == 4
    with pytest.raises(ConfigError, match=r"model\.micro_batch=8 needs about .* over the "
                                          r"memory budget .*MERBENCH_MEMORY_GB") as err:
        NoNorm(device="cpu", micro_batch=8).fit(X, y)
    assert "set model.micro_batch=5" in str(err.value)
    monkeypatch.setenv("MERBENCH_MEMORY_GB", "0.0025")  # not even 2 samples
    trained = []
    model = NoNorm(device="cpu")
    model.augment = lambda batch: trained.append(1) or batch
    with pytest.raises(ConfigError, match="even with 2 samples per pass .*MERBENCH_MEMORY_GB"):
        model.fit(X, y)
    assert trained == []  # refused before the first step


def test_early_stopping_on_validation_subjects_keeps_the_best_epoch() -> None:
    X, y, groups = _images()
    mask = subject_split(groups, 0.34, seed=3)
    assert 0 < mask.sum() < len(mask)
    assert not set(groups[mask]) & set(groups[~mask])  # whole subjects on each side
    model = Net(epochs=40, patience=3, val_fraction=0.34, lr=0.5, seed=3, device="cpu")
    model.fit(X, y, groups=groups)
    losses = [h["val_loss"] for h in model.history_]
    best = int(np.argmin(losses))
    assert len(losses) < 40 and len(losses) == best + 1 + 3  # stopped `patience` after the best
    val = model._loss(model.to_tensor(X[mask]), torch.from_numpy(y[mask]), torch.device("cpu"))
    assert val == pytest.approx(losses[best], rel=1e-5)  # the best epoch's weights are kept
    with pytest.raises(ConfigError, match="needs the training subjects"):
        Net(val_fraction=0.3, device="cpu").fit(X, y)


def test_every_setting_reaches_the_optimizer_and_the_loss(monkeypatch) -> None:
    import merbench.training as training

    X, y, _ = _images(12)
    made = []
    real = training.make_optimizer
    monkeypatch.setattr(training, "make_optimizer", lambda *a, **k: made.append(real(*a, **k))
                        or made[-1])
    for name, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                      ("sgd", torch.optim.SGD)):
        Net(optimizer=name, lr=0.01, weight_decay=0.001, momentum=0.5, epochs=1,
            device="cpu").fit(X, y)
        group = made[-1].param_groups[0]
        assert isinstance(made[-1], cls) and group["lr"] == 0.01
        assert group["weight_decay"] == 0.001
        if name == "sgd":
            assert group["momentum"] == 0.5
    model = Net(label_smoothing=0.2, class_weights=True, epochs=1, device="cpu")
    model.fit(X[:9], np.array([0, 0, 0, 0, 0, 0, 1, 1, 2]))
    assert model.criterion_.label_smoothing == 0.2
    np.testing.assert_allclose(model.criterion_.weight.numpy(), [9 / 18, 9 / 6, 9 / 3])
    stepped = Net(lr=0.1, lr_step=2, lr_gamma=0.5, epochs=5, device="cpu").fit(X, y)
    assert [h["lr"] for h in stepped.history_] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    scaled = Net(input_scale=0.5, device="cpu")
    assert float(scaled._prepare(torch.full((1, 3, 2, 2), 10, dtype=torch.uint8),
                                 torch.device("cpu")).max()) == 5.0


def test_balanced_sampling_draws_classes_evenly() -> None:
    model = Net(balanced_sampling=True, num_classes=3)
    y = torch.tensor([0] * 80 + [1] * 15 + [2] * 5)
    order = model._epoch_order(y, True, torch.Generator().manual_seed(0))
    counts = np.bincount(y[order].numpy(), minlength=3)
    assert len(order) == 100 and counts.min() > 20  # 80/15/5 becomes about a third each
    plain = Net(num_classes=3)._epoch_order(y, True, torch.Generator().manual_seed(0))
    assert sorted(plain.tolist()) == list(range(100))


def test_extra_loss_terms_are_averaged_into_the_history() -> None:
    class TwoTerms(Net):
        def loss(self, output, target):
            ce = self.criterion_(output, target)
            penalty = output.pow(2).mean()
            return ce + 0.1 * penalty, {"ce": ce, "penalty": penalty}

    X, y, _ = _images(12)
    model = TwoTerms(epochs=2, device="cpu").fit(X, y)
    record = model.history_[-1]
    assert {"loss", "loss_ce", "loss_penalty", "lr", "epoch"} <= set(record)
    assert record["loss"] == pytest.approx(record["loss_ce"] + 0.1 * record["loss_penalty"],
                                           rel=1e-4)


# -- weights ----------------------------------------------------------------------------------
def test_a_torchvision_resnet18_state_dict_loads_into_the_shared_backbone(tmp_path: Path) -> None:
    import torchvision

    from merbench.backbones import init_pretrained, resnet18

    torch.manual_seed(0)
    src = torchvision.models.resnet18(weights=None)
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}},
               tmp_path / "r18.pth")
    net = resnet18()
    report = load_pretrained(net, tmp_path / "r18.pth", head=("fc",))
    assert report.ok and report.skipped == ["fc.bias", "fc.weight"] and not report.missing
    assert torch.equal(net.layer4[1].conv2.weight, src.layer4[1].conv2.weight)
    grey = resnet18(in_chans=1)
    assert init_pretrained(grey, str(tmp_path / "r18.pth"), "test") == \
        f"pretrained:{tmp_path / 'r18.pth'}"
    torch.testing.assert_close(grey.conv1.weight, src.conv1.weight.sum(1, keepdim=True))
    assert init_pretrained(resnet18(), False, "test") == "random"
    # new layers may be missing from the file; anything else is named
    state = {k: v for k, v in src.state_dict().items() if not k.startswith("layer4.1.bn2")}
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match=r"missing 4: layer4\.1\.bn2\.bias"):
        load_pretrained(resnet18(), tmp_path / "cut.pth")
    assert load_pretrained(resnet18(), tmp_path / "cut.pth", new=("layer4.1.bn2",)).ok
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pretrained(resnet18(), tmp_path / "nope.pth")


def test_safetensors_weights_load(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    net = Net(device="cpu")
    module = net.init_module((3, 8, 8))
    save_file({k: v.contiguous() for k, v in module.state_dict().items()},
              str(tmp_path / "w.safetensors"))
    other = Net(device="cpu").load_weights(tmp_path / "w.safetensors", (3, 8, 8))
    for a, b in zip(module.state_dict().values(), other.module_.state_dict().values()):
        assert torch.equal(a, b)


def test_every_deep_model_explains_with_grad_cam(tmp_path: Path) -> None:
    import cv2

    X, y, _ = _images(12, size=16)
    model = Net(epochs=2, device="cpu").fit(X, y)
    paths = model.explain(X[:2], tmp_path, names=["casme2/sub01/EP1", "b"],
                          labels=["neg", "pos", "sur"])
    assert [p.name for p in paths] == ["gradcam_casme2_sub01_EP1.png", "gradcam_b.png",
                                       "gradcam_grid.png"]
    for path in paths:
        image = cv2.imread(str(path))
        assert image is not None and image.shape[0] > 100
    cams = model.grad_cam(X[:3])
    assert cams.shape == (3, 16, 16) and cams.min() >= 0 and cams.max() <= 1
    ststnet = merbench.model("ststnet", epochs=1, device="cpu")
    flows = np.random.default_rng(0).integers(0, 255, (6, 28, 28, 3)).astype(np.uint8)
    ststnet.fit(flows, np.arange(6) % 3)
    assert len(ststnet.explain(flows[:1], tmp_path / "st")) == 1
