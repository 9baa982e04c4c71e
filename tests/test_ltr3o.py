"""LTR3O-style (seed 002, METHODS §8): the three-o step's frames, the per-pass candidate draws,
the ranking loss and magnification by hand, that no apex is read (poisoned apex, SMIC without
apex), training, and the explanation strip. Inputs 32×32, 1-6 epochs, random init."""
from __future__ import annotations

import math

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import merbench
from merbench import Clip
from merbench.errors import ConfigError, DataError
from merbench.methods import Method
from merbench.store import Store
from merbench_plugins import ltr3o as lt

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = {"three-o.size": 32, "three-o.frames": 6, "face-crop.size": 48, "model.epochs": 1,
         "model.candidates": 3, "model.test_candidates": 3, "model.pretrained": False}


def numbered(n: int, size: int = 8) -> np.ndarray:
    """(n, size, size, 3) frames whose grey value is 10 × the frame index."""
    return np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None] * 10, size * size * 3
                     ).reshape(n, size, size, 3)


class ApexRaises(Clip):
    """A clip whose apex (and its flag) cannot be read."""

    def __getattribute__(self, name: str):
        if name in ("apex", "apex_estimated"):
            raise AssertionError(f"{name} was read")
        return super().__getattribute__(name)


def no_apex_clip(frames: np.ndarray, onset: int, offset: int) -> ApexRaises:
    return ApexRaises(lambda: frames, onset=onset, offset=offset, sample_id="x/y/z")


# --------------------------------------------------------------------------- the step

def test_occurring_frames_evenly_inside_onset_offset():
    # 29 frames between 3 and 32, F = 4: 3 + round(k·29/5) = 3 + (6, 12, 17, 23)
    assert lt.occurring_indices(3, 32, 4).tolist() == [9, 15, 20, 26]
    assert lt.occurring_indices(5, 5, 3).tolist() == [5, 5, 5]
    assert lt.occurring_indices(0, 1, 2).tolist() == [0, 1]  # 1/3 and 2/3 of one frame
    rng = np.random.default_rng(0)
    for _ in range(300):
        onset = int(rng.integers(0, 50))
        end = onset + int(rng.integers(0, 80))
        idx = lt.occurring_indices(onset, end, int(rng.integers(1, 40)))
        assert idx.min() >= onset and idx.max() <= end and (np.diff(idx) >= 0).all()
        if end - onset > len(idx):  # room for them: strictly inside
            assert idx.min() > onset and idx.max() < end


def test_step_stacks_onset_occurring_offset_grey_and_never_reads_the_apex():
    frames = numbered(25)
    out = lt.ThreeO(frames=4, size=6)(no_apex_clip(frames, 2, 22))
    assert out.shape == (6, 6, 6) and out.dtype == np.uint8
    # onset 2, 2 + round(k·20/5) = 6, 10, 14, 18, offset 22
    assert out[:, 0, 0].tolist() == [20, 60, 100, 140, 180, 220]
    for apex in (None, 2, 12, 22):  # any apex gives the same stack
        clip = Clip.from_array(frames, onset=2, apex=apex, offset=22)
        np.testing.assert_array_equal(lt.ThreeO(frames=4, size=6)(clip), out)
    # the ablation does read it, so the poisoned clip is a real check
    with pytest.raises(AssertionError, match="apex was read"):
        lt.ThreeO(occurring="apex")(no_apex_clip(frames, 2, 22))
    apex = lt.ThreeO(occurring="apex", size=6)(Clip.from_array(frames, 2, 7, 22))
    assert apex[:, 0, 0].tolist() == [20, 70, 220]


def test_step_checks():
    for params in ({"frames": 0}, {"size": 0}, {"occurring": "middle"}):
        with pytest.raises(ConfigError):
            lt.ThreeO(**params)
    bad = Clip(lambda: numbered(5), onset=3, offset=9, sample_id="a/b/c")
    with pytest.raises(DataError, match="a/b/c: onset..offset 3..9"):
        lt.ThreeO()(bad)


def test_method_chain_output_does_not_depend_on_the_apex():
    ds = merbench.dataset("synthetic", subjects=2, clips_per_class=1, frames=20)
    for name, same in (("ltr3o", True), ("ltr3o-apex", False)):
        method = Method.named(name, {"three-o.size": 32, "face-crop.size": 48})
        steps = method.build_steps()
        for sample in ds.samples[:2]:
            clip = ds.load(sample)
            clip = clip.with_frames(clip.frames)  # rendered once
            outs = [method.preprocess(clip.replace(apex=a), steps)
                    for a in (clip.onset, clip.apex, clip.end)]
            assert outs[0].shape == ((18, 32, 32) if same else (3, 32, 32))
            assert all(np.array_equal(outs[0], o) for o in outs[1:]) == same


# --------------------------------------------------------------------------- draws, loss

def test_test_slots_evenly_spaced_and_draws_in_range():
    assert lt.eval_slots(16, 8).tolist() == [0, 2, 4, 6, 9, 11, 13, 15]
    assert lt.eval_slots(16, 1).tolist() == [7] and lt.eval_slots(1, 3).tolist() == [0, 0, 0]
    torch.manual_seed(0)
    uniform = lt.draw_slots(500, 16, 5, "uniform")
    assert uniform.shape == (500, 5) and uniform.min() >= 0 and uniform.max() <= 15
    assert all(len(set(row)) == 5 for row in uniform.tolist())  # without replacement
    assert set(uniform.flatten().tolist()) == set(range(16))
    strata = lt.draw_slots(500, 16, 4, "stratified")
    for k in range(4):  # one slot in each quarter
        assert strata[:, k].min() >= 4 * k and strata[:, k].max() <= 4 * k + 3
    assert lt.draw_slots(3, 2, 5, "uniform").max() <= 1  # more candidates than slots


def test_rank_loss_by_hand():
    s = torch.tensor([[0.9, 0.1, 0.5, 0.7]])  # top .8, bottom .3: gap .5 > δ
    assert float(lt.rank_loss(s, 0.15)) == 0.0
    assert float(lt.rank_loss(s, 0.15, "pairwise")) == 0.0
    s = torch.tensor([[0.5, 0.45, 0.55, 0.5], [0.2, 0.3, 0.4, 0.5]])
    # row 1: top (.55, .5) .525, bottom (.5, .45) .475, gap .05 -> .10; row 2: gap .3 -> 0
    assert float(lt.rank_loss(s, 0.15)) == pytest.approx(0.05)
    # pairs row 1: .05, .10, 0, .05 -> hinges .10, .05, .15, .10; row 2: .2, .3, .1, .2 ->
    # hinges 0, 0, .05, 0; mean over all 8: .45 / 8
    assert float(lt.rank_loss(s, 0.15, "pairwise")) == pytest.approx(0.45 / 8)
    five = torch.tensor([[0.2, 0.3, 0.4, 0.5, 0.6]])  # median .4 left out: .55 - .25 = .3
    assert float(lt.rank_loss(five, 0.5)) == pytest.approx(0.2)
    assert float(lt.rank_loss(torch.tensor([[0.3]]), 0.15)) == 0.0
    g = torch.tensor([[0.5, 0.45, 0.55, 0.52]], requires_grad=True)  # gap .535 - .475
    loss = lt.rank_loss(g, 0.15)
    assert float(loss.detach()) == pytest.approx(0.09)
    loss.backward()  # descent raises the top half (.55, .52), lowers the bottom half
    np.testing.assert_allclose(g.grad.numpy(), [[0.5, 0.5, -0.5, -0.5]])


def test_magnification_by_hand():
    onset = torch.full((1, 1, 4, 4), 0.2)
    occ = onset.clone()
    occ[..., 1, 1] = 0.3
    out = lt.magnify(onset, occ, 2.0)
    assert float(out[0, 0, 1, 1]) == pytest.approx(0.5)
    assert float(out[0, 0, 0, 0]) == pytest.approx(0.2)
    assert float(lt.magnify(onset, occ, 20.0).max()) == 1.0  # clamped
    blur = torch.ones(1, 1, 3, 3) / 9
    mid = lt.magnify(onset, occ, 9.0, blur)  # difference .1 spread over 3×3: +.1 each
    assert float(mid[0, 0, 0, 0]) == pytest.approx(0.3)  # the window of (0, 0) holds (1, 1)
    assert float(mid[0, 0, 3, 3]) == pytest.approx(0.2)
    assert float(mid[0, 0, 1, 1]) == pytest.approx(0.4)


def test_candidates_are_onset_occurring_offset():
    module = lt.module_class()(torch.nn.Identity(), 3, 4, 2, 3, "uniform", 8, 1.0, 0.0, 0.0)
    x = torch.arange(6.0).view(1, 6, 1, 1).expand(2, 6, 2, 2)  # slot values 0..5
    cand = module.candidates(x, torch.tensor([[0, 3], [2, 2]]))
    assert cand.shape == (2, 2, 3, 2, 2)
    assert cand[..., 0, 0].tolist() == [[[0, 1, 5], [0, 4, 5]], [[0, 3, 5], [0, 3, 5]]]
    module.eval()
    assert module.slots(2).tolist() == [[0, 2, 3], [0, 2, 3]]
    magnified = lt.module_class()(torch.nn.Identity(), 3, 4, 2, 3, "uniform", 8, 1.0, 2.0, 0.0)
    cand = magnified.candidates(x / 20, torch.tensor([[0, 3], [2, 2]]))  # onset 0, offset .25
    np.testing.assert_allclose(cand[0, :, :, 0, 0].numpy(), [[0, 0.15, 0.25], [0, 0.6, 0.25]])


# --------------------------------------------------------------------------- training

def stacks(n: int, seed: int, pool: int = 6, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic 3O stacks: a noisy face-like background; the occurring frames show a bright
    blob (brows, left or right mouth corner = the class) rising and falling over the clip."""
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 120, (n, 1, size, size))
    X = np.repeat(base, pool + 2, axis=1) + rng.integers(0, 10, (n, pool + 2, size, size))
    y = np.arange(n) % 3
    places = [(4, 12), (20, 4), (20, 20)]
    profile = np.sin(np.linspace(0, np.pi, pool + 2))
    for i in range(n):
        r, c = places[y[i]]
        X[i, :, r:r + 8, c:c + 8] += (120 * profile[:, None, None]).astype(np.int64)
    return np.clip(X, 0, 255).astype(np.uint8), y


@pytest.fixture(scope="module")
def fitted():
    torch.set_num_threads(1)
    X, y = stacks(24, 0)
    model = merbench.model("ltr3o", num_classes=3, epochs=4, lr=1e-3, batch_size=12,
                           candidates=3, test_candidates=4, pretrained=False, seed=0,
                           device="cpu")
    return model.fit(X, y), X, y


def test_training_reduces_the_loss(fitted):
    model, _, _ = fitted
    h = model.history_
    assert len(h) == 4 and {"loss", "loss_ce", "loss_rank"} <= set(h[0])
    for r in h:
        assert r["loss"] == pytest.approx(r["loss_ce"] + r["loss_rank"], rel=1e-5)
        assert 0 <= r["loss_rank"] <= 0.15
    assert np.mean([r["loss"] for r in h[-2:]]) < 0.8 * np.mean([r["loss"] for r in h[:2]])
    assert h[-1]["loss_ce"] < h[0]["loss_ce"]
    assert model.init_ == "random"


def test_draws_differ_between_epochs_and_tests_are_fixed(monkeypatch):
    calls: list[torch.Tensor] = []
    draw = lt.draw_slots
    monkeypatch.setattr(lt, "draw_slots", lambda *a: calls.append(draw(*a)) or calls[-1])
    # no memory probe (a forward pass of two samples, random state restored): training's draws
    monkeypatch.setattr("merbench.training.memory_budget", lambda device: (math.inf, "test"))
    X, y = stacks(8, 1)

    def fit() -> tuple[list[torch.Tensor], np.ndarray]:
        calls.clear()
        model = merbench.model("ltr3o", num_classes=3, epochs=3, batch_size=8, candidates=3,
                               test_candidates=4, pretrained=False, seed=3, device="cpu")
        model.fit(X, y)
        drawn = list(calls)
        p = model.predict_proba(X)
        assert len(calls) == len(drawn)  # evaluation draws nothing
        np.testing.assert_array_equal(p, model.predict_proba(X))
        return drawn, p

    a, pa = fit()
    assert len(a) == 3 and all(d.shape == (8, 3) for d in a)  # one batch per epoch
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[1], a[2])
    b, pb = fit()  # the same seed: the same draws and predictions
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    np.testing.assert_array_equal(pa, pb)


def test_parameters_checked():
    for bad in ({"candidates": 0}, {"sampling": "greedy"}, {"ranking": "listwise"},
                {"margin": -1}, {"temperature": 0}):
        with pytest.raises(ConfigError, match="ltr3o"):
            merbench.model("ltr3o", **bad)
    model = merbench.model("ltr3o", channels_first=False, pretrained=False)
    with pytest.raises(ConfigError, match="channels_first"):
        model.build(3, (18, 32, 32))
    with pytest.raises(ConfigError, match="three-o"):
        merbench.model("ltr3o", pretrained=False).build(3, (2, 32, 32))


def test_explanations_and_fold_artifacts(fitted, tmp_path):
    model, X, _ = fitted
    paths = model.explain(X[:2], tmp_path, names=["smic/s01/s01_ne_01", "b"])
    names = {p.name for p in paths}
    assert {"candidates_smic_s01_s01_ne_01.png", "candidates_b.png", "gradcam_b.png",
            "gradcam_grid.png"} <= names
    strip = cv2.imread(str(tmp_path / "candidates_b.png"))
    assert strip is not None and strip.shape[1] > 2 * strip.shape[0]  # a strip
    scores, weights, maps = model.candidate_maps(X[:3])
    assert scores.shape == weights.shape == (3, 4) and maps.shape == (3, 4, 32, 32)
    np.testing.assert_allclose(weights.sum(1), 1, atol=1e-6)
    assert ((scores > 0) & (scores < 1)).all()
    art = model.fold_artifacts(X[:3])
    np.testing.assert_allclose(art["scores"], scores, atol=1e-5)
    assert art["slots"].tolist() == [[0, 2, 3, 5]] * 3
    cam = model.grad_cam(X[:3])
    assert cam.shape == (3, 32, 32) and cam.max() == pytest.approx(1.0)


# --------------------------------------------------------------------------- runs

def write_smic(root: Path, subjects: int = 2, frames: int = 12) -> None:
    """A SMIC-HS-like release (no apex anywhere) of synthetic 64×64 clips as PNG folders."""
    ds = merbench.dataset("synthetic", subjects=subjects, clips_per_class=1, frames=frames)
    short = {"negative": "ne", "positive": "po", "surprise": "sur"}
    for sample in ds.samples:
        s = int(sample.subject[1:])
        folder = root / "HS" / f"s{s}" / "micro" / sample.label / f"s{s}_{short[sample.label]}_01"
        folder.mkdir(parents=True)
        for t, frame in enumerate(ds.render(sample)):
            cv2.imwrite(str(folder / f"image{1000 + t}.png"),
                        cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))


def test_runs_on_smic_without_apex_and_poisoned_apex_changes_nothing(tmp_path, monkeypatch, cli):
    import merbench.video

    write_smic(tmp_path / "smic")
    kwargs = dict(protocol="smic-3class-loso", method="ltr3o", overrides=SMALL,
                  data_roots={"smic": str(tmp_path / "smic")}, device="cpu")
    first = merbench.run(store=tmp_path / "a.sqlite", cache_dir=str(tmp_path / "ca"), **kwargs)
    assert len(first.predictions) == 6 and first.report["pooled"].n == 6
    samples = merbench.dataset("smic", root=tmp_path / "smic").samples
    assert all(s.apex is None for s in samples)

    load = merbench.video.load_clip
    seen = []

    def poisoned(sample):  # the middle-frame fallback replaced by the onset / the offset
        clip = load(sample)
        seen.append(clip.apex)
        return clip.replace(apex=clip.onset if len(seen) % 2 else clip.end)

    monkeypatch.setattr(merbench.video, "load_clip", poisoned)
    second = merbench.run(store=tmp_path / "b.sqlite", cache_dir=str(tmp_path / "cb"), **kwargs)
    assert len(seen) == 6
    a = {p.sample_id: p.proba for p in Store(tmp_path / "a.sqlite").predictions(first.run_id)}
    b = {p.sample_id: p.proba for p in Store(tmp_path / "b.sqlite").predictions(second.run_id)}
    assert len(a) == 6 and a == b

    res = cli("leaderboard", "--protocol", "smic-3class-loso", "--store",
              str(tmp_path / "a.sqlite"), "--no-published", "--format", "csv")
    assert res.code == 0 and "ltr3o" in res.out


def test_methods_registered_as_ltr3o_style():
    for name in ("ltr3o", "ltr3o-apex"):
        assert name in merbench.names("method")
    params = Method.named("ltr3o", {}).params()
    assert params["three-o.occurring"] == "span" and params["three-o.frames"] == 16
    assert (params["model.candidates"], params["model.test_candidates"], params["model.margin"],
            params["model.channels_first"]) == (5, 8, 0.15, True)
    ablation = Method.named("ltr3o-apex", {})
    assert ablation.params()["three-o.occurring"] == "apex"
    assert ablation.params()["model.candidates"] == 1
    assert "LTR3O-style" in ablation.description
    assert "LTR3O-style" in Method.named("ltr3o", {}).description


def test_saved_state_round_trip(fitted, tmp_path):
    model, X, _ = fitted
    params = {k: v for k, v in model.get_params().items() if k != "pretrained"}
    missing = tmp_path / "not-there.safetensors"  # never read: the saved state replaces it
    again = merbench.model("ltr3o", **params, pretrained=str(missing))
    again.set_state(model.get_state(), model.input_shape(X))
    assert again.init_ == "saved-state"
    np.testing.assert_allclose(again.predict_proba(X[:4]), model.predict_proba(X[:4]), atol=1e-6)


def test_leaderboard_rows_say_ltr3o_style(tmp_path):
    from merbench.leaderboard import leaderboard_rows
    from merbench.store import Store

    st = Store(tmp_path / "s.sqlite")
    rid = st.create_run(key="k", protocol="synthetic-loso", method="ltr3o", params={}, seed=0,
                        versions={}, git_commit=None, device=None, host=None,
                        info={"classes": ["negative", "positive", "surprise"], "n_folds": 1})
    st.add_fold(rid, 0, "synthetic/s01", 0, "t",
                [("synthetic/s01/a", "negative", "negative", {"negative": 1.0})], {"n_test": 1})
    st.set_status(rid, "finished")
    (row,) = leaderboard_rows(st, "synthetic-loso", include_published=False, n_boot=0)
    assert row["method"].endswith("— LTR3O-style")
