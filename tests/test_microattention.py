"""Micro-Attention (seed 001): the unit by hand, the starting point of the network, both
backbones, ImageNet-key loading, frozen transfer learning, the shared augmentation, Grad-CAM
localisation on clips whose motion is confined to a known region, explanations (API and CLI),
the apex-frame step and the seed's holdout protocols."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import merbench
from merbench import Clip
from merbench.augment import affine, random_crop_flip_rotate
from merbench.errors import CheckpointError, ConfigError
from merbench.protocols import load_protocol
from merbench.training import load_pretrained
from merbench_plugins import microattention as ma
from merbench_plugins.baseline import ApexDiff, ApexFrame

pytestmark = pytest.mark.usefixtures("one_torch_thread")

S = 64  # image side of the localisation clips; layer4 is then 2×2, one cell per quadrant
Q = S // 2


def _imagenet_file(tmp_path: Path, source: str = "torchvision") -> Path:
    """A randomly initialised ResNet-18 state dict in torchvision's or timm's format."""
    if source == "timm":
        import timm

        state = timm.create_model("resnet18", pretrained=False).state_dict()
    else:
        import torchvision

        state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / f"{source}_resnet18.pth"
    torch.save(state, path)
    return path


# --------------------------------------------------------------------------- the unit

def test_unit_by_hand() -> None:
    """M = sigmoid(mean_c(W·concat(s, a, b))) at one pixel, computed by hand; O = T + γ·T·M."""
    unit = ma.modules().MicroAttention(2, gate=None)
    w = torch.tensor([[1.0, 0.0, 2.0, 0.0, -1.0, 0.0],
                      [0.0, 1.0, 0.0, 0.0, 0.0, 3.0]]).view(2, 6, 1, 1)
    with torch.no_grad():
        unit.embed.weight.copy_(w)
    s = torch.tensor([0.5, -1.0]).view(1, 2, 1, 1)
    a = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    b = torch.tensor([0.25, 0.5]).view(1, 2, 1, 1)
    # channel 0: 0.5 + 2·1 − 0.25 = 2.25; channel 1: −1 + 3·0.5 = 0.5; mean 1.375
    with torch.no_grad():
        m = unit(s, a, b)
    expected = 1.0 / (1.0 + np.exp(-1.375))
    assert m.shape == (1, 1, 1, 1)
    assert float(m) == pytest.approx(expected, rel=1e-6)
    t = s + b
    np.testing.assert_allclose(unit.modulate(t, m).detach().numpy(),
                               (t * (1 + expected)).numpy(), rtol=1e-6)


def test_zero_conv_gives_constant_half_and_the_gate_starts_at_identity() -> None:
    torch.manual_seed(0)
    s, a, b = (torch.randn(2, 4, 5, 5) for _ in range(3))
    t = b + s
    literal = ma.modules().MicroAttention(4, gate=None)  # the seed's O = T + T·M
    torch.nn.init.zeros_(literal.embed.weight)
    torch.set_grad_enabled(False)
    m = literal(s, a, b)
    assert torch.equal(m, torch.full((2, 1, 5, 5), 0.5))
    assert torch.allclose(literal.modulate(t, m), 1.5 * t)  # why a gate is needed
    gated = ma.modules().MicroAttention(4, gate=0.0)  # default: random conv, γ = 0
    m = gated(s, a, b)
    assert m.std() > 0.01  # a real, non-constant map ...
    assert torch.equal(gated.modulate(t, m), t)  # ... that does not change T yet
    torch.set_grad_enabled(True)
    assert gated.gate.requires_grad


def test_resnet18_starts_as_the_plain_torchvision_network() -> None:
    import torchvision

    torch.manual_seed(0)
    plain = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    net = ma.build_network("resnet18", 3, 3).eval()
    own = net.state_dict()
    net.load_state_dict({k: plain.state_dict().get(k, v) for k, v in own.items()})
    x = torch.rand(2, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.equal(net(x), plain((x - mean) / std))
        for block in (net.layer1[0], net.layer4[1]):  # attention on: the output changes
            block.attention.gate.fill_(1.0)
        assert not torch.allclose(net(x), plain((x - mean) / std))


def test_resnet10_attention_is_inert_at_gate_zero() -> None:
    torch.manual_seed(0)
    net = ma.build_network("resnet10", 1, 4).eval()
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        before = net(x)
        for name in ma.STAGES:
            getattr(net, name)[0].attention.embed.weight.normal_()
        assert torch.equal(net(x), before)


@pytest.mark.parametrize("backbone,chans,params", [
    # ResNet-18 without fc 11,176,512 (+ conv1 for 1 channel: −6,272); units Σ 2·3C² over
    # C = 64..512 = 2,088,960 + 8 gates; fc 512·5 + 5
    ("resnet18", 3, 11_176_512 + 2_088_968 + 2_565),
    ("resnet18", 1, 11_176_512 - 6_272 + 2_088_968 + 2_565),
    # ResNet-10 (grey): stem 3,136 + 128; layer1 73,856; layer2 229,760; layer3 918,272;
    # layer4 3,671,552; head BN 1,024 = 4,897,728; input BN 2; units 3C² over C = 64..512 =
    # 1,044,480 + 4 gates; fc
    ("resnet10", 1, 4_897_728 + 2 + 1_044_484 + 2_565),
])
def test_shapes_and_parameter_counts(backbone: str, chans: int, params: int) -> None:
    net = ma.build_network(backbone, chans, 5)
    assert sum(p.numel() for p in net.parameters()) == params
    captured = []
    for name in ma.STAGES:
        getattr(net, name)[-1].attention.register_forward_hook(
            lambda _m, _i, out: captured.append(tuple(out.shape)))
    net.eval()
    with torch.no_grad():
        assert net(torch.rand(2, chans, 224, 224)).shape == (2, 5)
    assert captured == [(2, 1, 56, 56), (2, 1, 28, 28), (2, 1, 14, 14), (2, 1, 7, 7)]


def test_resnet10_layout() -> None:
    net = ma.build_network("resnet10", 1, 3)
    assert net.bn_input.num_features == 1 and net.bn_final.num_features == 512
    assert net.layer1[0].bn1 is None and net.layer1[0].shortcut is None  # plain first block
    for name in ("layer2", "layer3", "layer4"):
        block = getattr(net, name)[0]
        assert block.bn1 is not None and block.conv1.stride == (2, 2)
        assert block.shortcut.kernel_size == (1, 1) and block.shortcut.stride == (2, 2)
    assert all(m.bias is None for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert ma.attention_prefixes(net) == tuple(f"layer{k}.0.attention" for k in range(1, 5))


# --------------------------------------------------------------------------- weights

@pytest.mark.parametrize("source", ["torchvision", "timm"])
def test_imagenet_state_dict_loads_with_every_backbone_key(tmp_path: Path, source: str) -> None:
    path = _imagenet_file(tmp_path, source)
    net = ma.build_network("resnet18", 3, 5)
    report = load_pretrained(net, path, new=ma.attention_prefixes(net), head=("fc",))
    file_keys = set(torch.load(path, weights_only=True))
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert set(report.loaded) == {k for k in file_keys if not k.startswith("fc.")}
    assert report.skipped == ["fc.bias", "fc.weight"]
    grey = ma.build_network("resnet18", 1, 5)
    assert load_pretrained(grey, path, new=ma.attention_prefixes(grey)).adapted == ["conv1.weight"]


def _fit_tiny(**params: object) -> ma.MicroAttentionResNet:
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)
    y = np.arange(8) % 2
    model = ma.MicroAttentionResNet(num_classes=2, epochs=2, batch_size=4, device="cpu", **params)
    return model.fit(X, y)


def test_pretrained_backbone_frozen_bit_for_bit_and_attention_trained(tmp_path: Path) -> None:
    path = _imagenet_file(tmp_path)
    original = torch.load(path, weights_only=True)
    model = _fit_tiny(pretrained=str(path))
    assert model.init_ == f"pretrained:{path}, backbone frozen"
    assert model.param_counts_ == {"trainable": 2_088_968 + 1_026, "frozen": 11_176_512}
    state = model.module_.state_dict()
    for key, value in original.items():  # weights AND BatchNorm statistics untouched
        if not key.startswith("fc."):
            assert torch.equal(state[key], value), key
    for k in range(1, 5):
        unit = getattr(model.module_, f"layer{k}")[0].attention
        assert float(unit.gate.detach()) != 0.0
    torch.manual_seed(0)  # fit seeds torch with the model's seed (0) and builds first
    fresh = ma.build_network("resnet18", 3, 2)
    assert not torch.equal(state["layer1.0.attention.embed.weight"],
                           fresh.state_dict()["layer1.0.attention.embed.weight"])
    assert model.history_ and len(model.history_) == 2


def test_without_weights_everything_trains_and_fine_tuning_is_a_choice(tmp_path: Path) -> None:
    scratch = _fit_tiny(pretrained=False)
    assert scratch.init_ == "random, all layers trained"
    assert scratch.param_counts_["frozen"] == 0
    tuned = _fit_tiny(pretrained=str(_imagenet_file(tmp_path)), freeze_backbone=False)
    assert tuned.init_.endswith(", all layers trained") and tuned.param_counts_["frozen"] == 0


def test_weight_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no ImageNet weights"):
        ma.MicroAttentionResNet(backbone="resnet10", pretrained=True).build(3, (1, 64, 64))
    with pytest.raises(CheckpointError, match="do not fit"):
        ma.MicroAttentionResNet(backbone="resnet10", pretrained=str(_imagenet_file(tmp_path))
                                ).build(3, (1, 64, 64))
    with pytest.raises(ConfigError, match="unknown backbone"):
        ma.MicroAttentionResNet(backbone="resnet50")
    with pytest.raises(ConfigError, match="needs images"):
        ma.MicroAttentionResNet(pretrained=False).build(3, (10,))
    assert ma.MicroAttentionResNet(backbone="resnet10").build(3, (1, 32, 32)) is not None


# --------------------------------------------------------------------------- augmentation

def test_random_crop_is_resize_then_crop() -> None:
    """The authors' resize 224 -> 240 and 224 crop at offset (ox, oy) in one affine sample."""
    x = torch.rand(1, 2, 24, 24)
    margin, ox, oy = 8, 3, 6
    big = F.interpolate(x, size=(24 + margin,) * 2, mode="bilinear", align_corners=False)
    ref = big[..., oy:oy + 24, ox:ox + 24]
    shift = torch.tensor([[(2 * ox - margin) / 32, (2 * oy - margin) / 32]])
    out = affine(x, zoom=torch.tensor([32 / 24]), shift=shift, padding_mode="border")
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(affine(x, flip=torch.tensor([True])).numpy(),
                               x.flip(-1).numpy(), atol=1e-6)


def test_augmentation_draws_and_flow_mirror() -> None:
    x = torch.rand(64, 3, 16, 16)
    out = random_crop_flip_rotate(x, margin=0, flip=True, flip_negate=(0,),
                                  generator=torch.Generator().manual_seed(0))
    mirrored = torch.tensor([torch.allclose(o[1:], i[1:].flip(-1), atol=1e-5)
                             for o, i in zip(out, x)])
    kept = torch.tensor([torch.allclose(o, i, atol=1e-5) for o, i in zip(out, x)])
    assert bool((mirrored ^ kept).all()) and 16 < int(mirrored.sum()) < 48
    m = out[mirrored]
    np.testing.assert_allclose(m[:, 0].numpy(), (1.0 - x[mirrored][:, 0].flip(-1)).numpy(),
                               atol=1e-6)  # u changes sign under a mirror
    a = random_crop_flip_rotate(x, 4, 10.0, generator=torch.Generator().manual_seed(1))
    b = random_crop_flip_rotate(x, 4, 10.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a, x)


def test_model_augment_keeps_channels_last_and_can_be_off() -> None:
    model = ma.MicroAttentionResNet(pretrained=False)
    x = torch.rand(4, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    assert model.augment(x).is_contiguous(memory_format=torch.channels_last)
    assert ma.MicroAttentionResNet(augmentation=False).augment(x) is x


# --------------------------------------------------------------------------- Grad-CAM

def motion_clip(moving: bool, quadrant: int, seed: int) -> Clip:
    """A bright bar on a textured face-sized background, in one quadrant (0..3, row-major); it
    moves up or down by 4 px from onset to apex (``moving``) or stays still. Nothing else
    moves: the motion is confined to that quadrant."""
    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur(rng.uniform(0, 255, (S, S)).astype(np.float32), (0, 0), 2.0)
    r = (quadrant // 2) * Q + int(rng.integers(10, 16))
    c = (quadrant % 2) * Q + int(rng.integers(4, 8))
    d = int(rng.choice([-1, 1])) if moving else 0
    frames = []
    for t in range(8):
        f = bg.copy()
        k = d * min(t, 4)
        f[r + k:r + k + 4, c:c + 20] = 250
        frames.append(np.clip(f + rng.normal(0, 2, f.shape), 0, 255).astype(np.uint8))
    return Clip.from_array(np.stack(frames), onset=0, apex=4, offset=7)


@pytest.fixture(scope="module")
def localised() -> tuple[ma.MicroAttentionResNet, np.ndarray, list[int]]:
    """resnet10 trained from scratch on apex - onset differences: still (0) vs moving (1) bar,
    the bar in a random quadrant; test clips move in known quadrants."""
    torch.set_num_threads(1)
    step = ApexDiff(size=None)
    quadrants = np.random.default_rng(123).integers(0, 4, 32)
    X = np.stack([step(motion_clip(bool(i % 2), int(q), i)) for i, q in enumerate(quadrants)])
    model = ma.MicroAttentionResNet(backbone="resnet10", num_classes=2, epochs=8, batch_size=8,
                                    device="cpu")
    model.fit(X, np.arange(32) % 2)
    tested = [k % 4 for k in range(8)]
    Xt = np.stack([step(motion_clip(True, q, 1000 + k)) for k, q in enumerate(tested)])
    still = np.stack([step(motion_clip(False, q, 2000 + q)) for q in range(4)])
    assert (model.predict_proba(still).argmax(1) == 0).sum() >= 3
    return model, Xt, tested


@pytest.mark.slow
def test_grad_cam_heat_is_where_the_motion_is(localised) -> None:
    model, Xt, tested = localised
    assert (model.predict_proba(Xt).argmax(1) == 1).sum() >= 7
    cams = model.grad_cam(Xt, [1] * len(Xt))  # the evidence for "moving"
    assert cams.shape == (8, S, S) and cams.min() >= 0 and cams.max() <= 1
    inside, outside = [], []
    for cam, q in zip(cams, tested):
        mask = np.zeros((S, S), bool)
        mask[(q // 2) * Q:(q // 2 + 1) * Q, (q % 2) * Q:(q % 2 + 1) * Q] = True
        inside.append(cam[mask].mean())
        outside.append(cam[~mask].mean())
    inside, outside = np.array(inside), np.array(outside)
    assert (inside > outside).sum() >= 7  # measured: all 8, about 0.83 against 0.27
    assert inside.mean() > 2 * outside.mean()


@pytest.mark.slow
def test_explain_writes_gradcam_and_attention_pngs(localised, tmp_path: Path) -> None:
    model, Xt, _ = localised
    maps = model.attention_maps(Xt[:2])
    assert maps.shape == (2, 4, S, S) and 0 < maps.min() and maps.max() < 1
    paths = model.explain(Xt[:2], tmp_path, names=["a", "b"], labels=["still", "moving"])
    assert sorted(p.name for p in paths) == [
        "attention_a.png", "attention_b.png", "attention_grid.png", "gradcam_a.png",
        "gradcam_b.png", "gradcam_grid.png"]
    sizes = {}
    for p in paths:
        image = cv2.imread(str(p))
        assert image is not None and image.std() > 10, p.name
        sizes[p.name] = image.shape
    assert sizes["attention_grid.png"][0] > 1.5 * sizes["attention_a.png"][0]  # one row each
    assert sizes["attention_a.png"][1] > 1.5 * sizes["gradcam_a.png"][1]  # 6 panels vs 2


def test_cli_train_then_explain(tmp_path: Path, cli) -> None:
    """`merbench train` + `merbench explain` on a new clip (the deploy path)."""
    params = {"subjects": 2, "clips_per_class": 1, "size": 48, "frames": 16}
    ckpt = tmp_path / "ma.pt"
    sets = ["face-crop.size=48", "face-crop.fallback=centre", "apex-frame.size=48",
            "model.epochs=1", "model.pretrained=False", "model.batch_size=2"]
    args = ["train", "-m", "apex-microattention", "-d", "synthetic", "-o", str(ckpt)]
    args += [a for k, v in params.items() for a in ("--param", f"{k}={v}")]
    args += [a for s in sets for a in ("--set", s)]
    result = cli(*args)
    assert result.code == 0, result.err
    ds = merbench.dataset("synthetic", **params)
    folder = tmp_path / "clip"
    folder.mkdir()
    for k, frame in enumerate(ds.render(ds.samples[0])):
        cv2.imwrite(str(folder / f"img{k}.png"), frame[..., ::-1])
    result = cli("explain", str(ckpt), str(folder), "-o", str(tmp_path / "ex"))
    assert result.code == 0, result.err
    written = sorted(p.name for p in (tmp_path / "ex").iterdir())
    assert written == ["attention_clip.png", "gradcam_clip.png"]
    assert all(cv2.imread(str(tmp_path / "ex" / n)) is not None for n in written)


# --------------------------------------------------------------------------- inputs, methods

def test_apex_frame_grey_and_rgb() -> None:
    frames = np.zeros((5, 8, 8, 3), np.uint8)
    frames[3, ..., 0] = 200  # the apex frame is red
    clip = Clip.from_array(frames, onset=0, apex=3, offset=4)
    grey = ApexFrame(size=None)(clip)
    rgb = ApexFrame(size=4, grey=False)(clip)
    assert grey.shape == (8, 8) and grey.dtype == np.float32
    assert grey[0, 0] == pytest.approx(round(0.299 * 200))  # OpenCV's luma
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.float32
    assert (rgb[..., 0] == 200).all() and (rgb[..., 1:] == 0).all()
    with pytest.raises(ConfigError, match="size"):
        ApexFrame(size=0)


def test_methods_registered() -> None:
    face = ("face-crop", {"size": 224})
    apex = merbench.method("apex-microattention")
    assert apex.steps == [face, ("apex-frame", {"size": 224, "grey": False})]
    assert apex.model_name == "micro-attention"
    assert merbench.method("ars-microattention").steps[1] == ("ars", {"n_key": 5, "size": 224})
    flow = merbench.method("flow-microattention")
    assert flow.steps[1][0] == "flow-image" and flow.model_params["flip_negate"] == (0,)
    r10 = merbench.method("apex-microattention-r10")
    assert r10.steps[1] == ("apex-frame", {"size": 224, "grey": True})
    assert (r10.model_params["backbone"], r10.model_params["optimizer"]) == ("resnet10", "sgd")
    model = merbench.model("micro-attention", num_classes=3)
    assert (model.epochs, model.batch_size, model.backbone) == (50, 16, "resnet18")


def test_runner_records_init(tmp_path: Path, tiny) -> None:
    sets = {"face-crop.size": 32, "face-crop.fallback": "centre", "ars.size": 32,
            "model.epochs": 1, "model.pretrained": False, "model.batch_size": 8}
    result = merbench.run(protocol="synthetic-holdout", method="ars-microattention",
                          overrides=sets, dataset_params=tiny, store=str(tmp_path / "r.sqlite"),
                          cache_dir=str(tmp_path / "cache"))
    info = merbench.store.Store(tmp_path / "r.sqlite").fold_info(result.run_id)[0]
    assert info["init"] == "random, all layers trained" and len(info["history"]) == 1
    assert result.report["pooled"].uf1 >= 0


# --------------------------------------------------------------------------- protocols

@pytest.mark.parametrize("name,dataset,leaks", [
    ("mmew-holdout", "mmew", False), ("mmew-holdout-samples", "mmew", True),
    ("casme2-holdout-samples", "casme2", True)])
def test_seed_protocols(name: str, dataset: str, leaks: bool) -> None:
    proto = load_protocol(name)
    assert proto.kind == "holdout" and proto.leaks_identity is leaks
    assert proto.test_fraction == 0.3 and proto.datasets[0].name == dataset
    assert ("[leaks identity]" in proto.label) is leaks


def test_mmew_holdout_on_the_released_annotations(realdata: Path) -> None:
    roots = {"mmew": str(realdata / "annotations" / "mmew")}
    params = {"mmew": {"require_frames": False}}
    subject = load_protocol("mmew-holdout")
    samples = subject.load_samples(roots, params)
    assert len(samples) == 234 and subject.classes == (
        "anger", "disgust", "fear", "happiness", "sadness", "surprise")
    (fold,) = subject.folds(samples)
    test_subjects = {i.split("/")[1] for i in fold.test}
    assert len(test_subjects) == 9 and not test_subjects & {i.split("/")[1] for i in fold.train}
    (leaky,) = load_protocol("mmew-holdout-samples").folds(samples)
    assert len(leaky.test) == 71  # round(0.3 · n) per class: 2+22+5+11+4+27
    assert {i.split("/")[1] for i in leaky.test} & {i.split("/")[1] for i in leaky.train}
