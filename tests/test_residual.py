"""ARS and RRS against residual sums worked out by hand on tiny clips."""
from __future__ import annotations

import numpy as np
import pytest

import merbench
from merbench import Clip
from merbench.errors import ConfigError, DataError
from merbench.video import stack_frames
from merbench_plugins.face import KeyFrames
from merbench_plugins.residual import ARS, RRS

# Three 1×2 RGB frames. With onset 0, apex 2, offset 2 the span is 0..min(0 + 10, 2) = 0..2,
# gap = ceil(2 / 5) = 1 and the key frames are {1, 2, 2, 2, 2} = {1, 2}.
TINY = np.array([
    [[[10, 200, 0], [255, 0, 7]]],
    [[[20, 100, 255], [0, 1, 7]]],
    [[[30, 50, 255], [6, 255, 7]]],
], dtype=np.uint8)
# diff = |f1 - f0| + |f2 - f0|:
#   pixel 0: R 10 + 20 = 30, G 100 + 150 = 250, B 255 + 255 = 510
#   pixel 1: R 255 + 249 = 504, G 1 + 255 = 256, B 0 + 0 = 0
TINY_ARS = [[[30, 250, 254], [248, 0, 0]]]  # mod 256: 510 -> 254, 504 -> 248, 256 -> 0
TINY_RRS = [[[15, 125, 255], [252, 128, 0]]]  # min 0, max 510: x * 255 / 510 = x / 2


def tiny_clip(**kw: object) -> Clip:
    return Clip.from_array(TINY, onset=0, apex=2, offset=2, sample_id="t/s/tiny", **kw)


def test_ars_by_hand() -> None:
    out = ARS()(tiny_clip())
    assert out.dtype == np.uint8 and out.shape == (1, 2, 3)
    np.testing.assert_array_equal(out, TINY_ARS)


def test_rrs_by_hand() -> None:
    out = RRS()(tiny_clip())
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, TINY_RRS)


def test_repeated_key_frames_count_once() -> None:
    """Counting frame 2 four times would give B = 255 + 4 * 255 = 1275 -> 251 for pixel 0."""
    assert ARS(n_key=5)(tiny_clip())[0, 0, 2] == 254
    np.testing.assert_array_equal(ARS(n_key=2)(tiny_clip()), ARS(n_key=5)(tiny_clip()))


def test_ars_wraps_mod_256() -> None:
    # onset 0, apex 5, offset 5: span 0..5, gap = 1, key frames 1..5, each 255 away from the
    # onset in pixel 0 and equal to it in pixel 1: diff = 5 * 255 = 1275 = 4 * 256 + 251.
    frames = np.zeros((6, 1, 2, 3), np.uint8)
    frames[1:, 0, 0] = 255
    clip = Clip.from_array(frames, onset=0, apex=5, offset=5)
    np.testing.assert_array_equal(ARS()(clip), [[[251] * 3, [0] * 3]])
    np.testing.assert_array_equal(RRS()(clip), [[[255] * 3, [0] * 3]])


def test_single_key_frame_is_the_span_end() -> None:
    # n_key = 1: F = {2}; diff = |f2 - f0| = (20, 150, 255), (249, 255, 0); max 255, min 0.
    expected = [[[20, 150, 255], [249, 255, 0]]]
    np.testing.assert_array_equal(ARS(n_key=1)(tiny_clip()), expected)
    np.testing.assert_array_equal(RRS(n_key=1)(tiny_clip()), expected)


@pytest.mark.parametrize("step", [ARS(), RRS()])
def test_constant_clip_gives_zeros(step: ARS) -> None:
    clip = Clip.from_array(np.full((12, 4, 5, 3), 77, np.uint8), onset=0, apex=6, offset=11)
    out = step(clip)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8 and not out.any()


@pytest.mark.parametrize("step", [ARS(), RRS()])
def test_one_frame_span_gives_zeros(step: ARS) -> None:
    # onset = apex = offset = 1: the span is 1..1 and F = {1}
    frames = np.arange(3 * 2 * 2 * 3, dtype=np.uint8).reshape(3, 2, 2, 3) * 7
    assert not step(Clip.from_array(frames, onset=1, apex=1, offset=1)).any()


def test_start_is_the_onset_frame() -> None:
    # onset 1, apex 3, offset 3: span 1..3, gap = ceil(2 / 2) = 1, F = {2, 3};
    # frame values 200 (before the onset, ignored), 10, 25, 4: diff = 15 + 6 = 21
    frames = np.array([200, 10, 25, 4], np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3),
                                                                             np.uint8)
    out = ARS(n_key=2)(Clip.from_array(frames, onset=1, apex=3, offset=3))
    assert (out == 21).all()


def test_missing_apex_uses_the_middle_frame() -> None:
    # frame k has value k; onset 0, offset 30, no apex -> apex 15 (estimated), span 0..15,
    # gap 3, F = {3, 6, 9, 12, 15}: diff = 45
    frames = np.arange(31, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 3), np.uint8)
    clip = Clip(lambda: frames, onset=0, apex=None, offset=30, sample_id="smic/s3/x")
    assert (ARS()(clip) == 45).all()


def test_key_frames_from_a_preceding_step() -> None:
    clip = KeyFrames(n_key=1)(tiny_clip())
    assert clip.key_frames == (2,)
    np.testing.assert_array_equal(ARS(n_key=None)(clip), ARS(n_key=1)(tiny_clip()))
    with pytest.raises(DataError, match="t/s/tiny: .*needs clip.key_frames"):
        ARS(n_key=None)(tiny_clip())


def test_grey_clip_gives_a_grey_image() -> None:
    # channel R of TINY as grey: diff = (30, 504); RRS: (x - 30) * 255 / 474 -> 0, 255
    clip = Clip.from_array(np.ascontiguousarray(TINY[..., 0]), onset=0, apex=2, offset=2)
    np.testing.assert_array_equal(ARS()(clip), [[30, 248]])
    np.testing.assert_array_equal(RRS()(clip), [[0, 255]])


def test_size_resizes_the_output() -> None:
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    frames[1:] = 7
    clip = Clip.from_array(frames, onset=0, apex=2, offset=2)  # diff = 14 everywhere
    out = ARS(size=4)(clip)
    assert out.shape == (4, 4, 3) and (out == 14).all()
    assert ARS(size=(2, 3))(clip).shape == (2, 3, 3)
    assert RRS(size=16)(clip).shape == (16, 16, 3)


def test_sixteen_bit_frames_are_an_error_naming_the_sample() -> None:
    clip = Clip(lambda: np.zeros((3, 4, 4, 3), np.uint16), onset=0, apex=1, offset=2,
                sample_id="casme2/sub02/EP01_11f")
    with pytest.raises(DataError, match="casme2/sub02/EP01_11f: frames must be uint8"):
        ARS()(clip)


def test_frames_of_another_size_are_an_error_naming_the_sample() -> None:
    def loader() -> np.ndarray:
        frames = [np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)]
        return stack_frames(frames, "samm/007/7_1", ["a.jpg", "b.jpg"])

    clip = Clip(loader, onset=0, apex=1, offset=1, sample_id="samm/007/7_1")
    with pytest.raises(DataError, match="samm/007/7_1: frame b.jpg is 5x4"):
        RRS()(clip)


def test_onset_after_apex_is_an_error_naming_the_sample() -> None:
    clip = Clip(lambda: TINY, onset=2, apex=1, offset=2, sample_id="casme2/sub05/EP1")
    with pytest.raises(DataError, match="casme2/sub05/EP1: apex 1 is outside onset..offset"):
        ARS()(clip)


@pytest.mark.parametrize("params", [{"n_key": 0}, {"size": -3}, {"size": (4, 4, 4)}])
def test_bad_parameters(params: dict) -> None:
    with pytest.raises(ConfigError):
        RRS(**params)


def test_registered() -> None:
    step = merbench.preprocessor("ars", n_key=3)
    assert isinstance(step, ARS) and step.get_params() == {"n_key": 3, "size": None}
    assert isinstance(merbench.preprocessor("rrs", size=320), RRS)
