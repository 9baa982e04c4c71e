"""face-crop on real faces (scikit-image's astronaut) and the seed's key-frame indices."""
from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
from skimage import data

import merbench
from merbench import Clip
from merbench.errors import ConfigError, DataError
from merbench_plugins import face
from merbench.clips import clip_span, key_frame_indices
from merbench_plugins.face import (LEFT_EYE, MOUTH, RIGHT_EYE, FaceCrop, KeyFrames,
                                   detect_landmarks)

# Where dlib puts the astronaut's features in skimage.data.astronaut() (512×512), learnt once
# with detect_landmarks: eye centres (mean of the 6 eye points) and mouth centre (20 points).
ASTRONAUT_LEFT_EYE = (203.2, 101.5)
ASTRONAUT_RIGHT_EYE = (246.5, 104.2)
ASTRONAUT_MOUTH = (223.3, 145.5)
# The same features in a face-crop (margin 0.15) as fractions of the output side: eyes level
# at 24% of the height, 36% of the width apart; mouth centred, at 60% of the height.
CROP_LEFT_EYE = (0.310, 0.244)
CROP_RIGHT_EYE = (0.668, 0.244)
CROP_MOUTH = (0.498, 0.597)


def features(landmarks: np.ndarray) -> np.ndarray:
    """(left eye, right eye, mouth) centres, 3×2."""
    return np.array([landmarks[LEFT_EYE].mean(0), landmarks[RIGHT_EYE].mean(0),
                     landmarks[MOUTH].mean(0)])


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def crop128(astronaut: np.ndarray) -> Clip:
    return FaceCrop(size=128)(Clip.from_array(np.stack([astronaut] * 3), sample_id="t/s/a"))


def rotated_clip(image: np.ndarray, angle: float, n: int = 5) -> np.ndarray:
    """n frames of the image rotated about the face by ``angle`` degrees, drifting by < 2 px."""
    frames = []
    for k in range(n):
        m = cv2.getRotationMatrix2D((224.0, 120.0), angle, 1.0)
        m[:, 2] += (0.4 * k, -0.3 * k)
        frames.append(cv2.warpAffine(image, m, (512, 512), borderMode=cv2.BORDER_REFLECT))
    return np.stack(frames)


def test_landmark_model_is_found_without_importing_the_package() -> None:
    path = face.landmark_model_path()
    assert path.name == "shape_predictor_68_face_landmarks.dat" and path.stat().st_size > 1e7
    assert "face_recognition_models" not in sys.modules


def test_dlib_models_load_once_per_process_and_only_when_a_face_step_runs() -> None:
    assert face.dlib_models() is face.dlib_models()
    import subprocess

    code = ("import sys, merbench; merbench.method('lbptop-svm').build_steps(); "
            "merbench.run; print('dlib' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]  # building the steps loads neither dlib nor torch


def test_dlib_finds_the_astronauts_eyes_and_mouth(astronaut: np.ndarray) -> None:
    points, found = detect_landmarks(astronaut)
    assert points.shape == (68, 2)
    assert found == 2  # a weak second "face" on the suit; the best-scoring one is kept
    expected = np.array([ASTRONAUT_LEFT_EYE, ASTRONAUT_RIGHT_EYE, ASTRONAUT_MOUTH])
    np.testing.assert_allclose(features(points), expected, atol=2.0)


def test_crop_puts_eyes_and_mouth_at_the_expected_places(crop128: Clip) -> None:
    assert crop128.frames.shape == (3, 128, 128, 3)
    got = features(crop128.landmarks) / 128
    np.testing.assert_allclose(got, [CROP_LEFT_EYE, CROP_RIGHT_EYE, CROP_MOUTH], atol=0.02)
    assert "face-crop: 2 faces found, kept the highest-scoring" in crop128.notes


def test_stored_landmarks_match_the_cropped_image(crop128: Clip) -> None:
    """dlib run again on the output frame finds the face where the stored landmarks say."""
    again, _ = detect_landmarks(crop128.frames[0])
    assert again is not None
    assert np.abs(again - crop128.landmarks).mean() < 1.5


@pytest.mark.parametrize("angle", [12.0, -10.0])
def test_rotated_drifting_face_is_levelled(astronaut: np.ndarray, angle: float) -> None:
    tilted, _ = detect_landmarks(rotated_clip(astronaut, angle)[0])
    eyes = features(tilted)
    assert abs(eyes[1, 1] - eyes[0, 1]) > 5  # the input really is tilted
    out = FaceCrop(size=128)(Clip.from_array(rotated_clip(astronaut, angle)))
    assert out.frames.shape == (5, 128, 128, 3)
    got = features(out.landmarks)
    assert abs(got[0, 1] - got[1, 1]) < 1e-6
    np.testing.assert_allclose(got / 128, [CROP_LEFT_EYE, CROP_RIGHT_EYE, CROP_MOUTH], atol=0.02)
    again = features(detect_landmarks(out.frames[0])[0])  # independent of the stored points
    assert abs(again[0, 1] - again[1, 1]) < 1.5


def test_one_detection_and_one_transform_per_clip(astronaut: np.ndarray,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = face.detect_landmarks
    monkeypatch.setattr(face, "detect_landmarks", lambda img, up=1: calls.append(1) or real(img, up))
    grey = np.full_like(astronaut, 90)
    out = FaceCrop(size=96)(Clip.from_array(np.stack([astronaut, astronaut, grey, astronaut])))
    assert len(calls) == 1
    np.testing.assert_array_equal(out.frames[0], out.frames[1])
    np.testing.assert_array_equal(out.frames[3], out.frames[0])
    assert (out.frames[2] == 90).all()


def test_face_is_searched_in_the_next_frames(astronaut: np.ndarray) -> None:
    blank = np.full_like(astronaut, 128)
    clip = Clip.from_array(np.stack([blank, blank, astronaut, astronaut]), sample_id="d/s/c")
    out = FaceCrop(size=64, search=3)(clip)
    assert "face-crop: no face on onset frame 0, landmarks from frame 2" in out.notes
    np.testing.assert_allclose(features(out.landmarks) / 64,
                               [CROP_LEFT_EYE, CROP_RIGHT_EYE, CROP_MOUTH], atol=0.02)
    with pytest.raises(DataError, match=r"d/s/c: no face found in frames 0\.\.1"):
        FaceCrop(size=64, search=1)(clip)


def test_no_face_is_a_data_error_naming_the_sample() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (3, 80, 80, 3), dtype=np.uint8)
    clip = Clip.from_array(noise, sample_id="casme2/sub01/EP02_01f")
    with pytest.raises(DataError, match="casme2/sub01/EP02_01f: no face found.*fallback='centre'"):
        FaceCrop(size=64)(clip)


def test_centre_fallback_is_the_centred_square_and_is_recorded() -> None:
    frames = np.broadcast_to(np.arange(80, dtype=np.uint8)[None, None, :, None],
                             (2, 60, 80, 3)).copy()
    frames[1] += 100
    out = FaceCrop(size=60, fallback="centre")(Clip.from_array(frames, sample_id="x/y/z"))
    np.testing.assert_array_equal(out.frames, frames[:, :, 10:70])
    assert out.landmarks is None
    assert out.notes == ("face-crop: no face found in frames 0..1, centre crop fallback",)


def test_given_landmarks_skip_dlib(astronaut: np.ndarray, crop128: Clip,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    points, _ = detect_landmarks(astronaut)

    def fail(*args: object) -> None:
        raise AssertionError("dlib must not run")

    monkeypatch.setattr(face, "detect_landmarks", fail)
    clip = Clip.from_array(np.stack([astronaut] * 3)).replace(landmarks=points)
    out = FaceCrop(size=128)(clip)
    np.testing.assert_array_equal(out.frames, crop128.frames)
    np.testing.assert_allclose(out.landmarks, crop128.landmarks)


def test_grey_clip_is_cropped(astronaut: np.ndarray) -> None:
    grey = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    out = FaceCrop(size=128)(Clip.from_array(np.stack([grey, grey])))
    assert out.frames.shape == (2, 128, 128)
    np.testing.assert_allclose(features(out.landmarks) / 128,
                               [CROP_LEFT_EYE, CROP_RIGHT_EYE, CROP_MOUTH], atol=0.02)


@pytest.mark.parametrize("params", [{"fallback": "left"}, {"size": 0}, {"size": (64, 64)},
                                    {"margin": -0.1}, {"search": -1}, {"upsample": 1.5}])
def test_bad_face_crop_parameters(params: dict) -> None:
    with pytest.raises(ConfigError):
        FaceCrop(**params)


def test_steps_are_registered() -> None:
    step = merbench.preprocessor("face-crop", size=320, margin=0.2)
    assert isinstance(step, FaceCrop) and step.name == "face-crop"
    assert step.get_params() == {"size": 320, "margin": 0.2, "search": 5, "fallback": None,
                                 "upsample": 1, "reuse_landmarks": True}
    assert merbench.preprocessor("key-frames", n_key=3).get_params() == {"n_key": 3}


# ------------------------------------------------------------------------------ key frames

@pytest.mark.parametrize("onset, apex, offset, n_key, span, expected", [
    # apex - onset >= 10: end = min(apex, offset); gap = ceil(20 / 5) = 4
    (0, 20, 30, 5, (0, 20), (4, 8, 12, 16, 20)),
    # apex - onset < 10: end = min(onset + 10, offset) = 10; gap = 2
    (0, 5, 30, 5, (0, 10), (2, 4, 6, 8, 10)),
    # gap = ceil(23 / 5) = 5; the last one is clamped to end: min(35, 33)
    (10, 33, 60, 5, (10, 33), (15, 20, 25, 30, 33)),
    # short clip: end = min(13, 7) = 7, gap = ceil(4 / 5) = 1: 4, 5, 6, 7, 7 -> four frames
    (3, 5, 7, 5, (3, 7), (4, 5, 6, 7)),
    # end = min(12, 4) = 4, gap = 1: 3, 4, 4, 4, 4 -> two frames
    (2, 2, 4, 5, (2, 4), (3, 4)),
    # the offset cuts the span: end = min(0 + 10, 6) = 6, gap = ceil(6 / 3) = 2
    (0, 3, 6, 3, (0, 6), (2, 4, 6)),
    # gap = ceil(15 / 4) = 4: 4, 8, 12, min(16, 15)
    (0, 15, 15, 4, (0, 15), (4, 8, 12, 15)),
    # a single key frame is the end
    (0, 20, 30, 1, (0, 20), (20,)),
    # onset = apex = offset: F = {start}
    (4, 4, 4, 5, (4, 4), (4,)),
])
def test_key_frames_by_hand(onset: int, apex: int, offset: int, n_key: int,
                            span: tuple[int, int], expected: tuple[int, ...]) -> None:
    assert clip_span(onset, apex, offset) == span
    assert key_frame_indices(*span, n_key) == expected
    clip = Clip.from_array(np.zeros((offset + 2, 2, 2), np.uint8), onset=onset, apex=apex,
                           offset=offset)
    assert KeyFrames(n_key=n_key)(clip).key_frames == expected


def test_key_frames_without_apex_use_the_middle_frame() -> None:
    frames = np.zeros((31, 2, 2, 3), np.uint8)
    clip = Clip(lambda: frames, onset=0, apex=None, offset=30, sample_id="smic/s1/c")
    out = KeyFrames()(clip)
    assert (out.apex, out.apex_estimated) == (15, True)  # end = min(15, 30); gap = 3
    assert out.key_frames == (3, 6, 9, 12, 15)
    assert out.notes == ("apex estimated: middle frame 15 used",)


def test_onset_after_apex_is_an_error_naming_the_sample() -> None:
    frames = np.zeros((6, 2, 2), np.uint8)
    clip = Clip(lambda: frames, onset=4, apex=2, offset=5, sample_id="samm/006/1_2")
    with pytest.raises(DataError, match="samm/006/1_2"):
        KeyFrames()(clip)
    with pytest.raises(DataError, match="samm/006/1_2: onset 4 is after apex 2"):
        clip_span(4, 2, 5, "samm/006/1_2")


@pytest.mark.parametrize("n_key", [0, -1, 2.5, True])
def test_bad_n_key(n_key: object) -> None:
    with pytest.raises(ConfigError, match="n_key"):
        KeyFrames(n_key=n_key)


@pytest.mark.parametrize("points", [np.zeros((68, 2)), np.ones((5, 2))])
def test_unusable_given_landmarks_are_an_error_naming_the_sample(points: np.ndarray) -> None:
    clip = Clip.from_array(np.zeros((2, 32, 32, 3), np.uint8), sample_id="mmew/s1/c")
    with pytest.raises(DataError, match="mmew/s1/c: .*landmarks"):
        FaceCrop(size=32)(clip.replace(landmarks=points))
