"""STSTNet (METHODS §9): layer shapes and order, parameter count, the published state-dict keys
(zip and legacy torch files), refusal of mismatched weights, and a small training run."""
from __future__ import annotations

import copy
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from merbench_plugins import ststnet as st

import merbench
from merbench.errors import CheckpointError, ConfigError

# The state dict of the released code's STSTNet (christy1206/STSTNet main.py), 3 classes.
PUBLISHED = OrderedDict([
    ("conv1.weight", (3, 3, 3, 3)), ("conv1.bias", (3,)),
    ("conv2.weight", (5, 3, 3, 3)), ("conv2.bias", (5,)),
    ("conv3.weight", (8, 3, 3, 3)), ("conv3.bias", (8,)),
    ("bn1.weight", (3,)), ("bn1.bias", (3,)), ("bn1.running_mean", (3,)),
    ("bn1.running_var", (3,)), ("bn1.num_batches_tracked", ()),
    ("bn2.weight", (5,)), ("bn2.bias", (5,)), ("bn2.running_mean", (5,)),
    ("bn2.running_var", (5,)), ("bn2.num_batches_tracked", ()),
    ("bn3.weight", (8,)), ("bn3.bias", (8,)), ("bn3.running_mean", (8,)),
    ("bn3.running_var", (8,)), ("bn3.num_batches_tracked", ()),
    ("fc.weight", (3, 400)), ("fc.bias", (3,)),
])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def randomised(num_classes: int = 3, seed: int = 0) -> torch.nn.Module:
    """A module whose BatchNorm affine and running statistics are far from their defaults."""
    torch.manual_seed(seed)
    m = st.STSTNetModule(num_classes)
    with torch.no_grad():
        for bn in (m.bn1, m.bn2, m.bn3):
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
            bn.running_mean.uniform_(0.0, 100.0)
            bn.running_var.uniform_(50.0, 500.0)
            bn.num_batches_tracked.fill_(1000)
    return m.eval()


def flow_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic 28×28×3 uint8 'flow images': noise plus a bright 7×7 blob whose place (brows,
    left mouth corner, right mouth corner) is the class, jittered by ±2 px."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 90, (n, 28, 28, 3)).astype(np.uint8)
    y = np.arange(n) % 3
    places = [(4, 10), (17, 3), (17, 17)]
    for i in range(n):
        r, c = (p + rng.integers(-2, 3) for p in places[y[i]])
        X[i, r:r + 7, c:c + 7] = rng.integers(160, 256, 3)
    return X, y


def test_shapes_and_parameter_count():
    m = st.STSTNetModule(3).eval()
    x = torch.rand(2, 3, 28, 28) * 255
    assert m.streams(x).shape == (2, 16, 10, 10)
    assert m.features(x).shape == (2, 400)
    assert m(x).shape == (2, 3)
    # convs 3·(27+1) + 5·(27+1) + 8·(27+1) = 448; BN 2·16 = 32; fc 400·3 + 3 = 1203
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == 1683
    five = st.STSTNetModule(5)
    assert sum(p.numel() for p in five.parameters() if p.requires_grad) == 448 + 32 + 2005
    assert OrderedDict((k, tuple(v.shape)) for k, v in m.state_dict().items()) == PUBLISHED
    assert m.dropout.p == 0.5 and st.STSTNetModule(3, dropout=0.2).dropout.p == 0.2


def test_layer_order_conv_relu_bn_maxpool():
    """Each stream is Conv → ReLU → BatchNorm → MaxPool(3, 3, pad 1): computed by hand from the
    module's own weights, and the conv → BN → ReLU order gives a different answer."""
    m = randomised()
    x = torch.rand(4, 3, 28, 28) * 255

    def stream(conv, bn, relu_first: bool):
        def norm(t):
            return F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias)

        h = F.conv2d(x, conv.weight, conv.bias, padding=2)
        h = norm(F.relu(h)) if relu_first else F.relu(norm(h))
        return F.max_pool2d(h, 3, stride=3, padding=1)

    pairs = ((m.conv1, m.bn1), (m.conv2, m.bn2), (m.conv3, m.bn3))
    with torch.no_grad():
        want = torch.cat([stream(c, b, True) for c, b in pairs], 1)
        swapped = torch.cat([stream(c, b, False) for c, b in pairs], 1)
        got = m.streams(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
        assert (got - swapped).abs().max() > 0.1
        torch.testing.assert_close(m(x), m.fc(F.avg_pool2d(want, 2).flatten(1)),
                                   rtol=1e-5, atol=1e-4)


def test_fused_streams_equal_separate_streams_in_training():
    """The one-conv fused forward does what three separate streams do, batch statistics and
    running-statistics updates included."""
    torch.manual_seed(1)
    a = st.STSTNetModule(3, dropout=0.0).train()
    b = copy.deepcopy(a)
    x = torch.rand(32, 3, 28, 28) * 255
    for _ in range(2):
        torch.testing.assert_close(a.streams(x), b.streams_reference(x), rtol=1e-5, atol=1e-4)
    for key, value in b.state_dict().items():
        torch.testing.assert_close(a.state_dict()[key], value, rtol=1e-5, atol=1e-4)
    assert int(a.bn2.num_batches_tracked) == 2


@pytest.mark.parametrize("legacy", [False, True])
def test_published_state_dict_loads_and_gives_same_logits(tmp_path, legacy):
    src = randomised()
    state = OrderedDict((k, src.state_dict()[k].clone()) for k in PUBLISHED)
    path = tmp_path / "sub01.pth"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    model = merbench.model("ststnet", device="cpu").load_weights(path, (3, 28, 28))
    X = np.random.default_rng(3).integers(0, 256, (5, 28, 28, 3)).astype(np.uint8)
    x = torch.from_numpy(X.transpose(0, 3, 1, 2).astype(np.float32))  # raw 0..255, no scaling
    with torch.no_grad():
        want = src(x)
        torch.testing.assert_close(model.module_.eval()(x), want, rtol=0, atol=0)
    np.testing.assert_allclose(model.predict_proba(X), torch.softmax(want, 1).numpy(),
                               rtol=1e-6, atol=1e-7)


def test_mismatched_weights_are_refused_by_name(tmp_path):
    state = OrderedDict((k, v.clone()) for k, v in randomised().state_dict().items())
    wrong_shape = OrderedDict(state, **{"fc.weight": torch.zeros(3, 401)})
    torch.save(wrong_shape, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"fc\.weight: file \(3, 401\) vs model \(3, 400\)"):
        st.STSTNet(device="cpu").load_weights(tmp_path / "shape.pth", (3, 28, 28))
    renamed = OrderedDict((k.replace("bn3.running_var", "bn3.running_variance"), v)
                          for k, v in state.items())
    torch.save(renamed, tmp_path / "key.pth", _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=r"missing 1: bn3\.running_var; "
                                              r"unexpected 1: bn3\.running_variance"):
        st.STSTNet(device="cpu").load_weights(tmp_path / "key.pth", (3, 28, 28))
    # 5-class weights do not fit a 3-class model
    torch.save(st.STSTNetModule(5).state_dict(), tmp_path / "five.pth")
    with pytest.raises(CheckpointError, match=r"fc\.bias: file \(5,\) vs model \(3,\)"):
        st.STSTNet(device="cpu").load_weights(tmp_path / "five.pth", (3, 28, 28))


def test_training_on_separable_flow_images_beats_chance():
    X, y = flow_images(240, seed=0)
    Xt, yt = flow_images(90, seed=1)
    model = st.STSTNet(epochs=25, batch_size=32, lr=1e-2, device="cpu", seed=0).fit(X, y)
    acc = float((model.predict(Xt) == yt).mean())
    assert acc >= 0.8, acc  # chance is 1/3
    assert len(model.history_) == 25 and model.history_[-1]["loss"] < model.history_[0]["loss"]
    # a fitted model travels to and from worker processes
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(again.predict_proba(Xt), model.predict_proba(Xt), atol=1e-6)


def test_defaults_and_input_checks():
    params = st.STSTNet().get_params()
    assert (params["epochs"], params["batch_size"], params["lr"], params["optimizer"]) == \
        (500, 256, 5e-5, "adam")
    assert params["input_scale"] == 1.0 and params["val_fraction"] == 0.0
    assert params["dropout"] == 0.5 and params["amp"] is False
    with pytest.raises(ConfigError, match="too small"):
        st.STSTNet(device="cpu").init_module((3, 1, 1))
    with pytest.raises(ConfigError, match=r"\(C, H, W\)"):
        st.STSTNet(device="cpu").init_module((28, 28))


def test_registered_model_and_methods():
    assert "ststnet" in merbench.names("model")
    plain = merbench.method("ststnet", {"model.epochs": 800})
    assert plain.steps == [] and plain.model_name == "ststnet"
    assert plain.build_model(num_classes=3).epochs == 800
    flow = merbench.method("flow-ststnet")
    assert flow.steps == [("face-crop", {"size": 128}),
                          ("flow-image", {"size": 28, "channels": "svu"})]
    assert flow.model_name == "ststnet"


def test_dropout_keeps_one_minus_p_scaled_and_is_off_in_evaluation():
    torch.manual_seed(0)
    m = st.STSTNetModule(3, dropout=0.5).train()
    h = torch.ones(64, 16, 10, 10)
    out = m.drop(h)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.5) < 0.01  # 102,400 draws: ±0.003 is 2 sigma
    assert torch.all(out[kept] == 2.0)  # kept values scaled by 1 / (1 - p)
    assert not torch.equal(m.drop(h), out)  # a fresh mask each pass
    assert torch.equal(m.eval().drop(h), h)
    assert torch.equal(st.STSTNetModule(3, dropout=0.0).train().drop(h), h)


def test_training_runs_channels_last_and_loaded_weights_stay_as_they_are(tmp_path):
    X = np.random.default_rng(0).integers(0, 255, (12, 28, 28, 3)).astype(np.uint8)
    y = np.arange(12) % 3
    model = merbench.model("ststnet", epochs=2, batch_size=6, device="cpu").fit(X, y)
    assert model.channels_last_
    assert model.module_.fc.weight.ndim == 2
    conv_in = model._prepare(model.to_tensor(X[:2]), torch.device("cpu"))
    assert conv_in.is_contiguous(memory_format=torch.channels_last)
    path = tmp_path / "w.pth"
    torch.save({k: v.contiguous() for k, v in model.module_.state_dict().items()}, path)
    loaded = merbench.model("ststnet", device="cpu").load_weights(path, (3, 28, 28))
    assert not getattr(loaded, "channels_last_", False)
    assert loaded._prepare(model.to_tensor(X[:2]), torch.device("cpu")).is_contiguous()
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), atol=1e-5)
