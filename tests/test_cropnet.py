"""CropNet (seed 000): CGPO geometry, Gaussian level, augmentation, parameter count, training,
pretrained-weight loading and explanations. Small trunks (timm ``test_*``) and 64×64 inputs
except where the paper's size is the point."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

import merbench
import merbench.explain as mexplain
from merbench.errors import CheckpointError, ConfigError
from merbench_plugins import cropnet as cn
from merbench.training import cached_timm_weights

SMALL = {"size": 64, "crop": 32, "trunk": "test_convnext", "feature_dim": 32, "device": "cpu"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def synth_ars(n: int, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """ARS-like images: dark residual noise plus one bright band, at the brows (class 0) or
    the mouth (class 1); flips and ±15° rotations keep the classes apart."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 30, (n, size, size, 3)).astype(np.uint8)
    y = np.arange(n) % 2
    for i in range(n):
        row = rng.integers(4, 12) if y[i] == 0 else rng.integers(40, 48)
        X[i, row:row + 12, 8:56] = rng.integers(180, 255)
    return X, y


@pytest.fixture(scope="module")
def fitted() -> tuple[cn.CropNet, np.ndarray, np.ndarray]:
    torch.set_num_threads(1)
    X, y = synth_ars(24, seed=0)
    model = merbench.model("cropnet", num_classes=2, epochs=8, batch_size=8, seed=0, **SMALL)
    return model.fit(X, y), X, y


# --------------------------------------------------------------------------- CGPO geometry

def test_crop_starts_paper_values():
    # stride 160·(1 − 0.3) = 112; 0, 112, then 224 would end at 384 > 320: clamped to 160
    assert cn.crop_starts(320, 160, 0.3) == [0, 112, 160]
    boxes = cn.crop_boxes(320, 160, 0.3)
    assert len(boxes) == 9
    assert boxes[0] == (0, 0) and boxes[1] == (0, 112) and boxes[2] == (0, 160)
    assert boxes[3] == (112, 0) and boxes[8] == (160, 160)
    # 32·0.7 = 22.4 -> stride 22: 0, 22, 44 -> clamped to 32
    assert cn.crop_starts(64, 32, 0.3) == [0, 22, 32]
    assert cn.crop_starts(320, 160, 0.0) == [0, 160]
    assert cn.crop_starts(320, 160, 0.5) == [0, 80, 160]


def test_crop_parameters_checked():
    with pytest.raises(ConfigError, match="larger than"):
        cn.crop_starts(100, 160, 0.3)
    with pytest.raises(ConfigError, match="alpha"):
        cn.crop_starts(320, 160, 1.0)


def test_gaussian_level_matches_cv2_pyrdown():
    x = torch.rand(2, 3, 64, 48)
    out = cn.pyr_down(x)
    assert out.shape == (2, 3, 32, 24)
    for c in range(3):
        np.testing.assert_allclose(out[1, c].numpy(), cv2.pyrDown(x[1, c].numpy()), atol=1e-6)
    odd = torch.rand(1, 1, 33, 21)
    np.testing.assert_allclose(cn.pyr_down(odd)[0, 0].numpy(), cv2.pyrDown(odd[0, 0].numpy()),
                               atol=1e-6)


# --------------------------------------------------------------------------- augmentation

def test_hsv_round_trip_and_known_colours():
    rgb = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.5]])
    hsv = cn.rgb_to_hsv(rgb.T.reshape(1, 3, 4, 1))[0, :, :, 0].T
    np.testing.assert_allclose(hsv.numpy(), [[0, 1, 1], [1 / 3, 1, 1], [2 / 3, 1, 1],
                                             [0, 0, 0.5]], atol=1e-6)
    x = torch.rand(2, 3, 8, 8)
    np.testing.assert_allclose(cn.hsv_to_rgb(cn.rgb_to_hsv(x)).numpy(), x.numpy(), atol=1e-5)


def test_colour_jitter_per_sample_matches_torchvision():
    x = torch.rand(3, 3, 16, 16)
    b, c = torch.tensor([0.2, 1.0, 1.8]), torch.tensor([1.8, 0.5, 0.2])
    s = torch.tensor([0.7, 1.8, 0.2])
    h = torch.tensor([-0.5, 0.1, 0.45])
    out = cn.colour_jitter(x, b, c, s, h)
    for i in range(3):
        ref = TF.adjust_brightness(x[i], float(b[i]))
        ref = TF.adjust_contrast(ref, float(c[i]))
        ref = TF.adjust_saturation(ref, float(s[i]))
        ref = TF.adjust_hue(ref, float(h[i]))
        np.testing.assert_allclose(out[i].numpy(), ref.numpy(), atol=1e-5)


def test_rotate_matches_torchvision_and_rot90():
    x = torch.rand(2, 3, 20, 28)
    out = cn.rotate(x, torch.tensor([12.0, -15.0]))
    for i, angle in enumerate([12.0, -15.0]):
        ref = TF.rotate(x[i], angle, interpolation=InterpolationMode.BILINEAR)
        np.testing.assert_allclose(out[i].numpy(), ref.numpy(), atol=1e-4)
    sq = torch.rand(1, 3, 16, 16)
    np.testing.assert_allclose(cn.rotate(sq, torch.tensor([90.0])).numpy(),
                               torch.rot90(sq, 1, (2, 3)).numpy(), atol=1e-5)


def test_augment_follows_seed_order_and_ranges(monkeypatch):
    """Draws forced to known values: the result must equal torchvision's ops in the seed's
    order (jitter, grayscale, flip, rotation) with the seed's ranges."""
    model = cn.CropNet(**SMALL)
    x = torch.rand(2, 3, 24, 24)
    u = torch.tensor([[0.0, 1.0, 0.25, 0.0, 0.1, 0.3, 1.0],     # grey yes, flip yes, +15°
                      [1.0, 0.5, 0.75, 1.0, 0.9, 0.9, 0.0]])    # grey no, flip no, −15°
    monkeypatch.setattr(torch, "rand", lambda *a, **k: u.clone())
    out = model.augment(x)
    expected = [(0.2, 1.8, 0.6, -0.5, True, True, 15.0), (1.8, 1.0, 1.4, 0.5, False, False, -15.0)]
    for i, (b, c, s, h, grey, flip, angle) in enumerate(expected):
        ref = TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(
            TF.adjust_brightness(x[i], b), c), s), h)
        if grey:
            ref = TF.rgb_to_grayscale(ref, num_output_channels=3)
        if flip:
            ref = TF.horizontal_flip(ref)
        ref = TF.rotate(ref, angle, interpolation=InterpolationMode.BILINEAR)
        np.testing.assert_allclose(out[i].numpy(), ref.numpy(), atol=1e-4)


def test_augment_is_per_sample_seeded_and_keeps_channels_last():
    model = cn.CropNet(**SMALL)
    x = torch.rand(1, 3, 24, 24).expand(6, -1, -1, -1).contiguous(
        memory_format=torch.channels_last)
    torch.manual_seed(3)
    a = model.augment(x)
    torch.manual_seed(3)
    b = model.augment(x)
    assert torch.equal(a, b)
    assert a.is_contiguous(memory_format=torch.channels_last)
    assert a.min() >= 0 and a.max() <= 1
    # the same image, six different draws
    assert len({round(float(v), 5) for v in a.mean(dim=(1, 2, 3))}) == 6
    assert cn.CropNet(augmentation=False, **SMALL).augment(x) is x


# --------------------------------------------------------------------------- network

def test_paper_size_parameter_count_and_position_embeddings():
    model = cn.CropNet(num_classes=5, device="cpu")
    assert (model.size, model.crop, model.alpha, model.trunk) == (320, 160, 0.3, "rexnet_100")
    torch.manual_seed(0)
    module = model.build(5, (3, 320, 320))
    trunk = sum(p.numel() for p in module.trunk.parameters())
    assert trunk == 3_515_873  # timm rexnet_100 without its classifier
    d = 3048
    total = sum(p.numel() for p in module.parameters())
    assert total == trunk + (1280 * d + d) + 9 * d + (10 * d * 5 + 5) == 7_600_198
    assert abs(total - 7.6e6) / 7.6e6 < 0.005
    assert module.pos.shape == (9, d)
    assert abs(float(module.pos.detach().std()) - math.sqrt(0.2)) < 0.01
    assert abs(float(module.pos.detach().mean())) < 0.01
    if cached_timm_weights(module.trunk.model) is None:
        assert model.init_ == "random"
    x = torch.rand(1, 3, 320, 320)
    xn = (x - module.mean) / module.std
    crops = module.crops(xn)
    assert crops.shape == (10, 3, 160, 160)
    assert torch.equal(crops[0], cn.pyr_down(xn)[0])
    assert torch.equal(crops[2], xn[0, :, 0:160, 112:272])
    assert torch.equal(crops[9], xn[0, :, 160:320, 160:320])
    module.eval()
    with torch.no_grad():
        assert module(x).shape == (1, 5)


def test_small_shapes_with_and_without_cgpo():
    x = torch.rand(3, 3, 64, 64)
    with_cgpo = cn.CropNet(num_classes=4, **SMALL).build(4, (3, 64, 64)).eval()
    without = cn.CropNet(num_classes=4, cgpo=False, **SMALL).build(4, (3, 64, 64)).eval()
    assert with_cgpo.classifier.in_features == 10 * 32 and with_cgpo.n_crops == 10
    assert without.classifier.in_features == 32 and without.pos is None
    with torch.no_grad():
        assert with_cgpo(x).shape == (3, 4)
        assert without(x).shape == (3, 4)
        assert with_cgpo(x.contiguous(memory_format=torch.channels_last)).shape == (3, 4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert with_cgpo(x).shape == (3, 4)


def test_input_checks():
    with pytest.raises(ConfigError, match="expects 64×64"):
        cn.CropNet(**SMALL).build(3, (3, 80, 80))
    with pytest.raises(ConfigError, match="size = 2·crop"):
        cn.CropNet(**{**SMALL, "crop": 24}).build(3, (3, 64, 64))
    with pytest.raises(ConfigError, match="H×W×3"):
        cn.CropNet(**SMALL).build(3, (1, 64, 64))
    with pytest.raises(ConfigError, match="no model"):
        cn.CropNet(**{**SMALL, "trunk": "no_such_net"}).build(3, (3, 64, 64))


def test_training_reduces_loss_and_learns(fitted):
    model, _, _ = fitted
    losses = [h["loss"] for h in model.history_]
    assert len(losses) == 8
    assert min(losses[-2:]) < 0.6 * losses[0], losses
    Xt, yt = synth_ars(16, seed=7)
    assert (model.predict(Xt) == yt).mean() >= 0.9
    assert model.optimizer == "adamp" and model.label_smoothing == 0.1


def test_same_seed_same_model():
    X, y = synth_ars(8, seed=2)
    probs = [cn.CropNet(num_classes=2, epochs=1, batch_size=4, seed=5, **SMALL).fit(X, y)
             .predict_proba(X) for _ in range(2)]
    np.testing.assert_array_equal(probs[0], probs[1])


# --------------------------------------------------------------------------- pretrained trunk

def _trunk_file(tmp_path, suffix: str):
    import timm

    torch.manual_seed(123)
    ref = timm.create_model("test_convnext")
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(ref.state_dict(), str(path))
    else:
        torch.save({"state_dict": ref.state_dict()}, path)
    return ref, path


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_file_is_loaded_and_recorded(tmp_path, suffix):
    ref, path = _trunk_file(tmp_path, suffix)
    model = cn.CropNet(pretrained=str(path), **SMALL)
    module = model.build(3, (3, 64, 64))
    assert model.init_ == f"pretrained:{path}"
    got = module.trunk.model.state_dict()
    for key, value in ref.state_dict().items():
        if not key.startswith("head.fc."):  # the ImageNet classifier is dropped
            assert torch.equal(got[key], value), key


def test_pretrained_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        cn.CropNet(pretrained=str(tmp_path / "none.pth"), **SMALL).build(3, (3, 64, 64))
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(2)}, bad)
    with pytest.raises(CheckpointError, match="do not fit"):
        cn.CropNet(pretrained=str(bad), **SMALL).build(3, (3, 64, 64))


def test_local_cache_used_only_when_present(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torchhub"))
    empty = cn.CropNet(**SMALL)
    empty.build(3, (3, 64, 64))
    assert empty.init_ == "random"
    with pytest.raises(CheckpointError, match="no cached"):
        cn.CropNet(pretrained=True, **SMALL).build(3, (3, 64, 64))
    # the Hugging Face hub cache layout: models--ORG--NAME/{refs/main, snapshots/REV/FILE}
    import timm

    hub_id = timm.create_model("test_convnext").pretrained_cfg["hf_hub_id"]
    repo = tmp_path / "hub" / ("models--" + hub_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    ref, path = _trunk_file(repo / "snapshots" / "abc123", ".safetensors")
    path.rename(repo / "snapshots" / "abc123" / "model.safetensors")
    found = cn.CropNet(**SMALL)
    module = found.build(3, (3, 64, 64))
    assert found.init_ == f"pretrained:{repo / 'snapshots' / 'abc123' / 'model.safetensors'}"
    assert torch.equal(module.trunk.model.stem[0].weight, ref.stem[0].weight)
    forced = cn.CropNet(pretrained=False, **SMALL)
    forced.build(3, (3, 64, 64))
    assert forced.init_ == "random"


def test_saved_state_round_trip_without_the_pretrained_file(fitted, tmp_path):
    """A trained state reloads even where the ``pretrained`` file is absent (deployment)."""
    model, X, _ = fitted
    state = model.get_state()
    assert "pos" in state and not any(k in state for k in ("mean", "std", "gauss"))
    clone = cn.CropNet(num_classes=2, pretrained=str(tmp_path / "gone.pth"), **SMALL)
    clone.set_state(state, (3, 64, 64))
    assert clone.init_ == "saved-state"
    np.testing.assert_allclose(clone.predict_proba(X[:4]), model.predict_proba(X[:4]), atol=1e-6)


# --------------------------------------------------------------------------- explanations

def test_grad_cam_hand_computed():
    """logits_k = mean_hw(A_k): ∂score/∂A_t = 1/(hw) on channel t only, so the map is
    ReLU(A_t)/(hw)."""
    conv = torch.nn.Conv2d(3, 4, 1)
    net = torch.nn.Sequential(conv, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    x = torch.randn(2, 3, 5, 6)
    cams, logits = mexplain.grad_cam(net, conv, x, [1, 3])
    acts = conv(x).detach()
    expected = torch.stack([acts[0, 1], acts[1, 3]]).clamp_min(0) / 30.0
    np.testing.assert_allclose(cams.numpy(), expected.numpy(), atol=1e-6)
    assert logits.shape == (2, 4)


def test_crop_maps_pasted_back_and_averaged(fitted, monkeypatch):
    """Crop k's map set to the constant k: pixel values are the mean over the crops covering
    them (z_0 covers all), then min-max scaled. Starts 0, 22, 32 on 64×64 with crop 32."""
    model, X, _ = fitted

    def fake(module, layer, x, targets):
        return torch.arange(10, dtype=torch.float32).repeat(x.shape[0]).view(-1, 1, 1), None

    monkeypatch.setattr(mexplain, "grad_cam", fake)
    cams = model.grad_cam(X[:2])
    assert cams.shape == (2, 64, 64)
    # lowest: rows/cols < 22, crop 1 only; highest: rows >= 54 (start 32 only) and columns
    # 32..53 (starts 22 and 32), crops 8 and 9
    lo, hi = (0 + 1) / 2, (0 + 8 + 9) / 3
    assert cams[0, 0, 0] == pytest.approx(0.0)
    assert cams[0, 60, 40] == pytest.approx(1.0)
    assert cams[0, 63, 63] == pytest.approx(((0 + 9) / 2 - lo) / (hi - lo))  # crop 9 only
    # (25, 25): rows and columns starting at 0 and 22 -> crops 1, 2, 4, 5, plus z_0
    assert cams[1, 25, 25] == pytest.approx(((0 + 1 + 2 + 4 + 5) / 5 - lo) / (hi - lo))
    # (10, 40): rows from 0; columns from 22 and 32 -> crops 2, 3
    assert cams[1, 10, 40] == pytest.approx(((0 + 2 + 3) / 3 - lo) / (hi - lo))


def test_explain_writes_similarity_and_overlays(fitted, tmp_path):
    model, X, _ = fitted
    sim = model.position_similarity()
    assert sim.shape == (9, 9)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
    np.testing.assert_allclose(sim, sim.T, atol=1e-6)
    cams = model.grad_cam(X[:3])
    assert cams.shape == (3, 64, 64) and cams.min() >= 0 and cams.max() <= 1
    assert np.isclose(cams.reshape(3, -1).max(1), 1.0).all()
    paths = model.explain(X[:2], tmp_path / "exp", names=["casme2/sub01/EP02_01f", "b"])
    assert [p.name for p in paths] == ["gradcam_casme2_sub01_EP02_01f.png", "gradcam_b.png",
                                       "gradcam_grid.png", "position_similarity.png"]
    for path in paths:
        image = cv2.imread(str(path))
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100


def test_overlay_blend_values():
    image = np.full((2, 2, 3), 100, np.uint8)
    cam = np.array([[0.0, 1.0], [0.5, 0.5]])
    out = mexplain.overlay(image, cam, alpha=0.5, cmap="gray")
    # grey colormap: value v -> (v, v, v)·255; blend 0.5·100 + 0.5·255·v
    assert out[0, 0].tolist() == [50, 50, 50]
    assert out[0, 1].tolist() == [178, 178, 178]  # 50 + 127.5 = 177.5 -> 178


# --------------------------------------------------------------------------- methods

def test_methods_registered():
    ars = merbench.method("ars-cropnet", {"ars.n_key": "3"})
    assert ars.steps == [("face-crop", {"size": 320}), ("ars", {"n_key": 3, "size": 320})]
    assert ars.model_name == "cropnet" and ars.model_params == {}
    assert merbench.method("rrs-cropnet").steps[1] == ("rrs", {"n_key": 5, "size": 320})
    assert merbench.method("tvl1-cropnet").steps[1] == ("flow-image", {"method": "tvl1",
                                                                       "size": 320})
    assert merbench.method("farneback-cropnet").steps[1][1]["method"] == "farneback"
    assert merbench.method("ars-cropnet-nocgpo").model_params == {"cgpo": False}
    assert merbench.method("ars-cropnet", {"model.cgpo": "False"}).build_model().cgpo is False


def test_without_cgpo_a_last_batch_of_one_sample_trains() -> None:
    """ars-cropnet-nocgpo used to crash in ReXNet's BatchNorm ("Expected more than 1 value per
    channel") on 3 training samples at batch size 2: the shared loop never makes such a batch."""
    X = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3)).astype(np.uint8)
    model = cn.CropNet(num_classes=3, cgpo=False, epochs=1, batch_size=2, seed=0,
                       **{**SMALL, "trunk": "rexnet_100"})  # BatchNorm in its SE units
    model.fit(X, np.array([0, 1, 2]))
    assert model.predict_proba(X).shape == (3, 3)
