"""Optical strain on analytic fields; TV-L1 and Farneback recover a known translation."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

import merbench
from merbench import Clip
from merbench.errors import ConfigError, DataError
from merbench_plugins.flow import Flow, FlowImage, minmax_uint8, optical_strain

INTERIOR = (slice(16, -16), slice(16, -16))


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    """A smooth random texture (blurred noise stretched to 0..255), 96×96 RGB."""
    noise = np.random.default_rng(0).uniform(0, 255, (96, 96)).astype(np.float32)
    grey = cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 2.0), None, 0, 255, cv2.NORM_MINMAX)
    return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)


def shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, m, image.shape[1::-1], borderMode=cv2.BORDER_REFLECT)


# ------------------------------------------------------------------------------ strain

def grid(n: int = 9) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)  # axis 0 is y, axis 1 is x
    return x, y


@pytest.mark.parametrize("a, b", [(0.3, 0.0), (0.0, -0.2), (0.3, 0.4), (-1.5, 2.0)])
def test_strain_of_a_stretch(a: float, b: float) -> None:
    x, y = grid()
    np.testing.assert_allclose(optical_strain(a * x, b * y), np.hypot(a, b), atol=1e-12)


@pytest.mark.parametrize("c", [0.5, -2.0])
def test_strain_of_a_shear(c: float) -> None:
    x, y = grid()
    np.testing.assert_allclose(optical_strain(c * y, 0 * x), abs(c) / np.sqrt(2), atol=1e-12)
    # the mirrored shear (v = c·x) gives the same magnitude; rigid translation gives none
    np.testing.assert_allclose(optical_strain(0 * x, c * x), abs(c) / np.sqrt(2), atol=1e-12)
    np.testing.assert_allclose(optical_strain(0 * x + 3, 0 * x - 1), 0.0, atol=1e-12)


def test_strain_tells_the_axes_apart() -> None:
    """u = a·x stretches along x only: swapped gradients would read it as a shear (a/√2)."""
    x, y = grid()
    np.testing.assert_allclose(optical_strain(0.8 * x, 0 * y), 0.8, atol=1e-12)
    np.testing.assert_allclose(optical_strain(0 * x, 0.8 * x), 0.8 / np.sqrt(2), atol=1e-12)


# ------------------------------------------------------------------------------ flow

@pytest.mark.parametrize("method", ["tvl1", "farneback"])
@pytest.mark.parametrize("dx, dy", [(2.0, 0.0), (0.0, -2.0), (1.5, 1.0)])
def test_known_translation_is_recovered(texture: np.ndarray, method: str, dx: float,
                                        dy: float) -> None:
    frames = np.stack([texture, shifted(texture, dx / 2, dy / 2), shifted(texture, dx, dy)])
    flow = Flow(method=method)(Clip.from_array(frames, onset=0, apex=2, offset=2))
    assert flow.shape == (96, 96, 2) and flow.dtype == np.float32
    assert abs(flow[INTERIOR][..., 0].mean() - dx) < 0.3
    assert abs(flow[INTERIOR][..., 1].mean() - dy) < 0.3


def test_translation_has_no_strain(texture: np.ndarray) -> None:
    frames = np.stack([texture, shifted(texture, 2, 0)])
    out = Flow(method="farneback", strain=True)(Clip.from_array(frames, onset=0, apex=1))
    assert out.shape == (96, 96, 3) and out.dtype == np.float32
    assert out[INTERIOR][..., 2].mean() < 0.05
    np.testing.assert_allclose(out[..., 2], optical_strain(out[..., 0], out[..., 1]), atol=1e-5)


def test_flow_on_grey_frames(texture: np.ndarray) -> None:
    grey = texture[..., 0]
    frames = np.stack([grey, shifted(grey, 2, 0)])
    flow = Flow()(Clip.from_array(frames, onset=0, apex=1))
    assert abs(flow[INTERIOR][..., 0].mean() - 2) < 0.3


def test_missing_apex_uses_the_middle_frame(texture: np.ndarray) -> None:
    # 5 frames, only the middle one (index 2) moved: no apex -> (0 + 4) // 2 = 2
    frames = np.stack([texture, texture, shifted(texture, 2, 0), texture, texture])
    clip = Clip(lambda: frames, onset=0, apex=None, offset=4, sample_id="smic/s2/x")
    flow = Flow(method="farneback")(clip)
    assert abs(flow[INTERIOR][..., 0].mean() - 2) < 0.3
    # the annotated apex wins when there is one
    still = Flow(method="farneback")(clip.replace(apex=1))
    assert np.abs(still[INTERIOR]).max() < 0.05


def test_onset_after_apex_is_an_error_naming_the_sample(texture: np.ndarray) -> None:
    frames = np.stack([texture] * 3)
    clip = Clip(lambda: frames, onset=2, apex=0, offset=2, sample_id="casme2/sub09/EP02")
    with pytest.raises(DataError, match="casme2/sub09/EP02"):
        Flow()(clip)


# ------------------------------------------------------------------------------ flow image

def test_minmax_by_hand() -> None:
    np.testing.assert_array_equal(minmax_uint8(np.array([-1.0, 0.0, 1.0, 0.5])),
                                  [0, 128, 255, 191])  # 127.5 -> 128 (even), 191.25 -> 191
    np.testing.assert_array_equal(minmax_uint8(np.array([2.0, 6.0, 3.0])), [0, 255, 64])
    assert not minmax_uint8(np.full((3, 3), 4.2)).any()


def test_flow_image_scales_each_plane_and_orders_channels(texture: np.ndarray) -> None:
    frames = np.stack([texture, shifted(texture, 1.0, -0.5)])
    clip = Clip.from_array(frames, onset=0, apex=1)
    flow = Flow(method="farneback", strain=True)(clip)
    full = FlowImage(method="farneback", size=None)(clip)
    assert full.shape == (96, 96, 3) and full.dtype == np.uint8
    for k in range(3):
        np.testing.assert_array_equal(full[..., k], minmax_uint8(flow[..., k]))
        assert full[..., k].min() == 0 and full[..., k].max() == 255
    bgr = FlowImage(method="farneback", size=None, channels="svu")(clip)
    np.testing.assert_array_equal(bgr, full[..., ::-1])
    small = FlowImage(method="farneback")(clip)
    assert small.shape == (28, 28, 3) and small.dtype == np.uint8
    np.testing.assert_array_equal(small, cv2.resize(full, (28, 28), interpolation=cv2.INTER_AREA))


@pytest.mark.parametrize("params", [{"method": "horn"}, {"channels": "uvv"}, {"channels": "rgb"},
                                    {"size": 0}, {"farneback": (0.5, 3)}])
def test_bad_flow_parameters(params: dict) -> None:
    with pytest.raises(ConfigError):
        FlowImage(**params)


def test_registered() -> None:
    step = merbench.preprocessor("flow", method="farneback", strain=True)
    assert isinstance(step, Flow)
    assert step.get_params()["method"] == "farneback" and step.get_params()["strain"] is True
    image = merbench.preprocessor("flow-image", channels="svu")
    assert image.get_params() == {"method": "tvl1", "size": 28, "channels": "svu", "tau": 0.25,
                                  "lambda_": 0.15, "theta": 0.3, "warps": 5,
                                  "farneback": [0.5, 3, 15, 3, 5, 1.2]}
