"""The built-in synthetic dataset: seeded, well-formed, motion where the class says."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import merbench
from merbench.errors import ConfigError


def _ds(**params):
    base = {"subjects": 4, "clips_per_class": 2, "size": 32, "frames": 20}
    return merbench.dataset("synthetic", **{**base, **params})


def _by_id(ds) -> dict:
    return {s.id: s for s in ds.samples}


def test_sample_counts_and_ids() -> None:
    ds = _ds()
    assert len(ds) == 24 and ds.subjects() == ["s01", "s02", "s03", "s04"]
    assert Counter(s.label for s in ds.samples) == {"negative": 8, "positive": 8, "surprise": 8}
    assert ds.samples[0].id == "synthetic/s01/neg_01" and ds.samples[-1].id == "synthetic/s04/sur_02"
    assert ds.classes() == ["negative", "positive", "surprise"]
    assert ds.summary() == {"samples": 24, "subjects": 4,
                            "classes": {"negative": 8, "positive": 8, "surprise": 8}}


def test_five_classes_and_the_megc2019_space() -> None:
    ds = _ds(classes=5, subjects=3, clips_per_class=1)
    assert ds.classes() == ["anger", "disgust", "happiness", "sadness", "surprise"]
    assert len(ds) == 15
    assert ds.summary("megc2019") == {"samples": 15, "subjects": 3,
                                      "classes": {"negative": 9, "positive": 3, "surprise": 3}}
    relabelled = ds.labelled("megc2019")
    assert {dict(s.meta)["native_label"] for s in relabelled if s.label == "negative"} == {
        "anger", "disgust", "sadness"}


def test_key_frames_are_ordered_for_frames_17_and_more() -> None:
    for frames in (17, 20, 36):
        ds = _ds(subjects=10, clips_per_class=3, frames=frames)
        for s in ds.samples:
            assert 0 <= s.onset < s.apex <= s.offset <= frames - 1, (frames, s)


@pytest.mark.parametrize("frames", [12, 16])
def test_key_frames_are_ordered_for_every_accepted_length(frames: int) -> None:
    ds = _ds(subjects=6, clips_per_class=3, frames=frames)
    bad = [s.id for s in ds.samples if not s.onset < s.apex <= s.offset]
    assert bad == []


def test_frames_shape_dtype_and_clip_indices() -> None:
    ds = _ds()
    s = ds.samples[5]
    clip = ds.load(s)
    assert clip.frames.shape == (s.offset - s.onset + 1, 32, 32, 3)
    assert clip.frames.dtype == np.uint8
    assert (clip.onset, clip.apex, clip.offset) == (0, s.apex - s.onset, s.offset - s.onset)
    assert clip.frame_numbers == tuple(range(s.onset, s.offset + 1))
    assert clip.sample_id == s.id
    clip.validate()


def test_deterministic_and_range_independent() -> None:
    a, b = _ds(), _ds()
    assert [(s.id, s.onset, s.apex, s.offset) for s in a.samples] == \
        [(s.id, s.onset, s.apex, s.offset) for s in b.samples]
    s = a.samples[7]
    whole = a.render(s)
    assert np.array_equal(whole, b.render(b.samples[7]))
    assert whole.shape == (20, 32, 32, 3)
    assert np.array_equal(a.render(s, 4, 9), whole[4:10])  # a frame is the same whatever range
    other = _ds(seed=1)
    assert not np.array_equal(other.render(_by_id(other)[s.id]), whole)
    assert _ds(noise=0.0, jitter=0.0).render(s).tolist() != whole.tolist()


def test_different_subjects_differ_in_appearance() -> None:
    ds = _ds(size=48, frames=24)
    by_id = _by_id(ds)

    def onset_frame(sid: str, d=ds, ids=by_id) -> np.ndarray:
        s = ids[sid]
        return d.render(s, s.onset, s.onset)[0].astype(np.float64)

    same = np.abs(onset_frame("synthetic/s01/neg_01") - onset_frame("synthetic/s01/pos_02")).mean()
    across = [np.abs(onset_frame("synthetic/s01/neg_01") - onset_frame(f"synthetic/s0{k}/neg_01")
                     ).mean() for k in (2, 3, 4)]
    assert same < 12 and min(across) > 25  # measured: 7.7 within, 36-44 across subjects
    flat = _ds(size=48, frames=24, appearance=0.0)
    flat_ids = _by_id(flat)
    assert np.abs(onset_frame("synthetic/s01/neg_01", flat, flat_ids)
                  - onset_frame("synthetic/s02/neg_01", flat, flat_ids)).mean() < 12


def test_motion_is_where_the_class_says_and_only_between_onset_and_offset() -> None:
    ds = _ds(subjects=2, clips_per_class=1, size=64, frames=36, noise=0.0, jitter=0.0,
             flicker=0.0, appearance=0.0)
    bands = {"brow": slice(14, 22), "lip": slice(35, 42)}
    for s in ds.samples:
        grey = ds.render(s).astype(np.float64).mean(axis=-1)
        motion = np.abs(grey[s.apex] - grey[s.onset])
        brow, lip = (motion[b].mean() for b in bands.values())
        if s.label == "positive":  # lip-corner pull
            assert lip > 4 and brow < 0.5, (s.id, brow, lip)
        else:  # brow lowering or raising
            assert brow > 4 and lip < 2, (s.id, brow, lip)
        assert np.array_equal(grey[0], grey[s.onset])  # still before onset
        assert np.array_equal(grey[s.offset], grey[s.onset])  # back to neutral at offset


@pytest.mark.parametrize("params, message", [
    ({"classes": 4}, "classes must be 3 or 5"),
    ({"subjects": 1}, "needs subjects >= 2"),
    ({"size": 8}, "size >= 16"),
])
def test_bad_parameters_are_config_errors(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        merbench.dataset("synthetic", **params)


def test_clips_are_rendered_once_and_cached_by_their_parameters(tmp_path, monkeypatch) -> None:
    from merbench_plugins.synthetic import Synthetic

    monkeypatch.setenv("MERBENCH_CACHE", str(tmp_path))
    ds = _ds()
    s = ds.samples[5]
    frames = ds.load(s).frames
    assert np.array_equal(frames, ds.render(s, s.onset, s.offset))
    path = ds.cache_path(s)
    assert path.is_file() and path.parent.parent == tmp_path / "synthetic"
    renders = []
    real_render = Synthetic.render
    monkeypatch.setattr(Synthetic, "render",
                        lambda self, *a: renders.append(a) or real_render(self, *a))
    assert np.array_equal(_ds().load(s).frames, frames)  # another instance, same parameters
    assert renders == []
    assert len({_ds(noise=1.0).cache_path(s), _ds(seed=1).cache_path(s), path}) == 3
    path.write_bytes(path.read_bytes()[:100])  # a damaged entry is rendered again
    assert np.array_equal(_ds().load(s).frames, frames)
    assert len(renders) == 1 and np.array_equal(np.load(path), frames)
