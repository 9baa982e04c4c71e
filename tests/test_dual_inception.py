"""Dual-Inception (Zhou et al. 2019): Inception branches, stream shapes, parameter count, which
input channels feed the streams, Keras-style initialisation, weights round trip and training."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from merbench_plugins import dual_inception as di

import merbench
from merbench.errors import CheckpointError, ConfigError
from merbench.training import subject_split


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_inception_branches_by_hand():
    """Width-1 block, every conv an averaging filter with zero bias, on a single impulse of
    height 9 at (10, 10): branch outputs are the impulse (1×1), its 3×3 box mean, its 5×5 box
    mean and its 3×3 max-dilation."""
    block = di.InceptionBlock(1, 1)
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0, 0].numel())
                m.bias.zero_()
    x = torch.zeros(1, 1, 21, 21)
    x[0, 0, 10, 10] = 9.0
    with torch.no_grad():
        out = block(x)[0]
    assert out.shape == (4, 21, 21)
    assert out[:, 10, 10].tolist() == pytest.approx([9.0, 1.0, 9.0 / 25, 9.0])
    assert out[:, 11, 11].tolist() == pytest.approx([0.0, 1.0, 9.0 / 25, 9.0])
    assert out[:, 12, 8].tolist() == pytest.approx([0.0, 0.0, 9.0 / 25, 0.0])
    assert out[:, 13, 10].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0])


def test_shapes_and_parameter_count():
    m = di.DualInceptionModule(3)
    x = torch.rand(2, 3, 28, 28)
    assert m.stream_x[0](x[:, :1]).shape == (2, 24, 28, 28)
    assert m.stream_x[:2](x[:, :1]).shape == (2, 24, 14, 14)
    assert m.stream_y(x[:, 1:2]).shape == (2, 64, 7, 7)
    assert m.features(x).shape == (2, 2 * 64 * 7 * 7)
    assert m(x).shape == (2, 3)
    # block(1, 6): 1×1s 4·(1·6+6) = 48, 3×3 6·6·9+6 = 330, 5×5 6·6·25+6 = 906 -> 1284
    # block(24, 16): 1×1s 4·(24·16+16) = 1600, 3×3 16·16·9+16 = 2320, 5×5 16·16·25+16 = 6416
    # -> 10336; two streams 2·11620 = 23240; fc1 6272·1024+1024; fc2 1024·3+3
    assert sum(p.numel() for p in m.parameters()) == 23240 + 6423552 + 3075 == 6449867


def test_streams_read_only_their_channels():
    torch.manual_seed(0)
    m = di.DualInceptionModule(3).eval()
    x = torch.rand(4, 3, 28, 28)
    with torch.no_grad():
        base = m(x)
        strain = x.clone()
        strain[:, 2] = torch.rand(4, 28, 28)
        torch.testing.assert_close(m(strain), base, rtol=0, atol=0)
        for c in (0, 1):
            moved = x.clone()
            moved[:, c] = torch.rand(4, 28, 28)
            assert (m(moved) - base).abs().max() > 1e-4
        # streams=(1, 0) with the stream weights swapped computes the same function
        swapped = di.DualInceptionModule(3, streams=(1, 0)).eval()
        swapped.stream_x.load_state_dict(m.stream_y.state_dict())
        swapped.stream_y.load_state_dict(m.stream_x.state_dict())
        swapped.fc1.load_state_dict(m.fc1.state_dict())
        swapped.fc2.load_state_dict(m.fc2.state_dict())
        half = m.fc1.weight.shape[1] // 2
        swapped.fc1.weight.copy_(torch.cat([m.fc1.weight[:, half:], m.fc1.weight[:, :half]], 1))
        torch.testing.assert_close(swapped(x), m(x), rtol=1e-5, atol=1e-6)


def test_keras_initialisation():
    m = di.DualInceptionModule(3)
    bound = math.sqrt(6 / (6272 + 1024))  # Glorot uniform of fc1
    assert 0.98 * bound < m.fc1.weight.abs().max() <= bound
    conv5 = m.stream_x[2].branch5[1][0]  # 16 → 16, 5×5: fan_in = fan_out = 400
    assert conv5.kernel_size == (5, 5)
    assert conv5.weight.abs().max() <= math.sqrt(6 / 800)
    biases = [b.detach() for n, b in m.named_parameters() if n.endswith("bias")]
    assert len(biases) == 2 * 2 * 6 + 2 and all(float(b.abs().max()) == 0 for b in biases)


def test_bad_streams_and_shapes_are_refused():
    with pytest.raises(ConfigError, match=r"streams=\(0, 3\)"):
        di.DualInception(streams=(0, 3), device="cpu").init_module((3, 28, 28))
    with pytest.raises(ConfigError, match="too small"):
        di.DualInception(device="cpu").init_module((3, 3, 3))
    with pytest.raises(ConfigError, match=r"\(C, H, W\)"):
        di.DualInception(device="cpu").init_module((28, 28))


def test_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    src = di.DualInceptionModule(3, hidden=32).eval()
    torch.save(src.state_dict(), tmp_path / "w.pth", _use_new_zipfile_serialization=False)
    model = di.DualInception(hidden=32, device="cpu").load_weights(tmp_path / "w.pth", (3, 28, 28))
    X = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 3)).astype(np.uint8)
    x = torch.from_numpy(X.transpose(0, 3, 1, 2).astype(np.float32)) / 255
    with torch.no_grad():
        want = torch.softmax(src(x), 1).numpy()
    np.testing.assert_allclose(model.predict_proba(X), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(CheckpointError, match=r"fc1\.weight: file \(32, 6272\) vs model"):
        di.DualInception(device="cpu").load_weights(tmp_path / "w.pth", (3, 28, 28))


def flow_pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic flow images whose class is the motion direction in a 10×10 patch: u > 0
    (class 0), u < 0 (class 1) or v < 0 (class 2), i.e. bright or dark on the min-max scaled u/v
    planes (128 = still); the strain plane is noise. Ten samples per subject."""
    rng = np.random.default_rng(seed)
    X = np.clip(rng.normal(128, 20, (n, 28, 28, 3)), 0, 255)
    X[..., 2] = rng.integers(0, 256, (n, 28, 28))
    y = np.arange(n) % 3
    for i in range(n):
        r, c = rng.integers(4, 14, 2)
        plane, sign = [(0, 1), (0, -1), (1, -1)][y[i]]
        X[i, r:r + 10, c:c + 10, plane] = 128 + sign * rng.uniform(70, 120)
    return X.astype(np.uint8), y, np.arange(n) // 10


def test_training_with_subject_validation_beats_chance():
    X, y, groups = flow_pairs(150, seed=0)
    Xt, yt, _ = flow_pairs(60, seed=1)
    model = di.DualInception(hidden=64, epochs=10, batch_size=16, lr=2e-3, device="cpu",
                             seed=0).fit(X, y, groups)
    assert len(model.history_) == 10 and "val_loss" in model.history_[0]
    # the weights kept are those of the epoch with the lowest loss on the validation subjects
    val = subject_split(groups, 0.2, 0)
    assert 0 < val.sum() < len(y) and len(set(groups[val])) == 3
    proba = model.predict_proba(X[val])
    val_loss = float(-np.log(proba[np.arange(val.sum()), y[val]]).mean())
    assert val_loss == pytest.approx(min(r["val_loss"] for r in model.history_), rel=1e-4)
    acc = float((model.predict(Xt) == yt).mean())
    assert acc >= 0.8, acc  # chance is 1/3


def test_defaults_and_registration():
    params = di.DualInception().get_params()
    assert (params["epochs"], params["batch_size"], params["lr"]) == (40, 3, 1e-4)
    assert params["val_fraction"] == 0.2 and params["patience"] == 40
    assert params["input_scale"] == pytest.approx(1 / 255) and params["streams"] == [0, 1]
    assert "dual-inception" in merbench.names("model")
    assert merbench.method("dual-inception").steps == []
    flow = merbench.method("flow-dual-inception", {"model.streams": "(1, 0)"})
    assert flow.steps == [("face-crop", {"size": 128}), ("flow-image", {"size": 28})]
    assert flow.build_model(num_classes=3).streams == (1, 0)
