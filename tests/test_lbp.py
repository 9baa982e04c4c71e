"""LBP-TOP / LBP-SIP: hand-worked codes, skimage agreement, layout of the feature vector."""
from __future__ import annotations

import itertools
import math
from fractions import Fraction

import cv2
import numpy as np
import pytest
from skimage import data
from skimage.feature import local_binary_pattern

import merbench
from merbench.errors import ConfigError, DataError
from merbench_plugins import lbp
from merbench_plugins.lbp import LBPSIP, LBPTOP, lbp_sip, lbp_top, lbp_top_codes, u2_lut


@pytest.fixture(scope="module")
def astronaut_grey() -> np.ndarray:
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)


def exact_sample(vol: np.ndarray, centre: tuple[int, ...], offset: tuple[float, ...]) -> Fraction:
    """Multilinear value at centre + offset in exact arithmetic (offsets as 5-decimal numbers),
    one voxel at a time: the slow reference the vectorised code must reproduce."""
    pos = [c + Fraction(round(o * 10**5), 10**5) for c, o in zip(centre, offset)]
    value = Fraction(0)
    for corner in itertools.product((0, 1), repeat=len(pos)):
        weight, index = Fraction(1), []
        for p, up in zip(pos, corner):
            lo = math.floor(p)
            frac = p - lo
            weight *= frac if up else 1 - frac
            index.append(lo + up if frac else lo)
        if weight:
            value += weight * int(vol[tuple(index)])
    return value


# -- mapping and geometry -------------------------------------------------------------------

def test_u2_mapping_by_hand():
    lut = u2_lut(8)
    # uniform 8-bit codes in increasing order: 0, 1, 2, 3, 4, 6, 7, 8, ...; 5 = 00000101 has
    # four circular transitions. Below 128 the uniform codes are 0 and the 7*8/2 = 28 runs of
    # ones inside bits 0..6: labels 0..28, so 128 -> 29 and 129 = 10000001 -> 30; 255 is the
    # last of the 58 uniform codes and 254 the one before.
    expected = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 6: 5, 7: 6, 8: 7, 128: 29, 129: 30, 254: 56,
                255: 57, 5: 58, 9: 58, 0b01010101: 58}
    assert {c: int(lut[c]) for c in expected} == expected
    assert lut.max() == 58 and len(np.unique(lut)) == 59
    assert (lut < 58).sum() == 58
    lut4 = u2_lut(4)  # 0101 and 1010 are the only non-uniform 4-bit codes
    assert [int(lut4[c]) for c in range(16)] == [0, 1, 2, 3, 4, 14, 5, 6, 7, 8, 14, 9, 10, 11, 12,
                                                  13]


def test_neighbour_positions_follow_methods_md():
    xy = lbp.plane_offsets("XY", 8, (1, 1, 4))
    assert xy[0] == (0.0, 0.0, 1.0)                # right
    assert xy[1] == (0.0, -0.70711, 0.70711)       # up-right: y - R sin θ
    assert xy[2] == (0.0, -1.0, 0.0)               # up
    xt = lbp.plane_offsets("XT", 8, (1, 1, 4))
    assert xt[2] == (4.0, 0.0, 0.0)                # t + R_t sin θ
    assert xt[1] == (2.82843, 0.0, 0.70711)
    yt = lbp.plane_offsets("YT", 8, (1, 1, 4))
    assert yt[0] == (4.0, 0.0, 0.0)                # t + R_t cos θ
    assert yt[2] == (0.0, -1.0, 0.0)               # y - R_y sin θ


# -- hand-worked codes ----------------------------------------------------------------------

FRAME = np.array([[30, 30, 32],
                  [30, 30, 20],
                  [60, 30, 0]], dtype=np.uint8)


def test_xy_code_by_hand_bilinear_and_nearest():
    """Centre 30, P = 8, R = 1; diagonal weights .70711/.29289 on each axis.

    p0 right 20 -> 0; p1 up-right .70711*(.29289*30+.70711*32) + .29289*(.29289*30+.70711*20)
    = 28.93 -> 0; p2 up 30 tie -> 1; p3 up-left: four 30s, a flat tie -> 1; p4 left 30 -> 1;
    p5 down-left .29289*30 + .70711*(.70711*60+.29289*30) = 45.0 -> 1; p6 down 30 -> 1;
    p7 down-right .29289*(.29289*30+.70711*20) + .70711*(.29289*30+.70711*0) = 12.93 -> 0.
    Code 4+8+16+32+64 = 124. Nearest takes the corners: p1 = 32 -> 1, p5 = 60, p7 = 0: 126.
    """
    vol = np.stack([FRAME] * 3)
    bil = lbp_top_codes(vol, (8, 8, 8), (1, 1, 1))[0]
    near = lbp_top_codes(vol, (8, 8, 8), (1, 1, 1), interpolation="nearest")[0]
    assert bil.shape == (1, 1, 1)
    assert int(bil[0, 0, 0]) == 124
    assert int(near[0, 0, 0]) == 126
    assert int(local_binary_pattern(FRAME, 8, 1, method="default")[1, 1]) == 124


@pytest.mark.parametrize("axis, codes", [
    # v grows with t: XY is flat (all ties, 255); XT bit p = [sin θ_p >= 0] -> p0..p4 = 31;
    # YT bit p = [cos θ_p >= 0] -> p0, p1, p2, p6, p7 = 199 (cos of π/2, 3π/2 is a tie).
    ("t", (255, 31, 199)),
    # v grows with x: XY and XT see x + R cos θ -> 199; YT has no x -> 255.
    ("x", (199, 199, 255)),
    # v grows with y: XY and YT see y - R sin θ -> [sin θ <= 0]: p0, p4..p7 = 241.
    ("y", (241, 255, 241)),
])
def test_codes_on_ramps_by_hand(axis, codes):
    t, y, x = np.meshgrid(np.arange(9), np.arange(6), np.arange(7), indexing="ij")
    vol = (20 + 10 * {"t": t, "x": x, "y": y}[axis]).astype(np.uint8)
    got = lbp_top_codes(vol, (8, 8, 8), (1, 1, 4))
    assert [c.shape for c in got] == [(1, 4, 5)] * 3
    for plane, want in zip(got, codes):
        assert np.all(plane == want)


def test_tie_on_a_diagonal_ramp_counts_as_one():
    """v = 10(x + y): the up-right and down-left neighbours (x ± .70711, y ∓ .70711) lie on
    the centre's iso-line, exact ties -> 1: code 1 + 2 + 32 + 64 + 128 = 227."""
    y, x = np.mgrid[0:7, 0:7]
    vol = np.stack([(10 + 10 * (x + y)).astype(np.uint8)] * 3)
    assert np.all(lbp_top_codes(vol, (8, 8, 8), (1, 1, 1))[0] == 227)


@pytest.mark.parametrize("points, radii, run_voxels", [
    ((8, 8, 8), (1, 1, 4), 1),          # one frame per run of the walk
    ((8, 6, 4), (1, 2, 3), 200),        # P and R differing per plane / axis, several runs
    ((12, 8, 8), (2.5, 1.5, 2), 1 << 20),  # P > 8 (uint16 codes), fractional radii, one run
])
def test_all_planes_match_a_voxel_by_voxel_reference(monkeypatch, points, radii, run_voxels):
    monkeypatch.setattr(lbp, "_CHUNK_VOXELS", run_voxels)
    vol = np.random.default_rng(3).integers(0, 6, (11, 8, 9), dtype=np.uint8)  # many ties
    vol[5:8, 2:6, 2:7] = 3  # and a flat patch
    codes = lbp_top_codes(vol, points, radii)
    bt, b = math.ceil(radii[2]), math.ceil(max(radii[:2]))
    for plane, P, got in zip(lbp.PLANES, points, codes):
        offsets = lbp.plane_offsets(plane, P, radii)
        assert got.shape == (11 - 2 * bt, 8 - 2 * b, 9 - 2 * b)
        for t, y, x in itertools.product(*(range(n) for n in got.shape)):
            centre = (t + bt, y + b, x + b)
            want = sum(1 << p for p, off in enumerate(offsets)
                       if exact_sample(vol, centre, off) >= int(vol[centre]))
            assert got[t, y, x] == want, (plane, t, y, x)


# -- agreement with skimage -----------------------------------------------------------------

@pytest.mark.parametrize("radius", [1, 2, 3, 2.5])
def test_xy_codes_match_skimage_except_exact_ties(astronaut_grey, radius):
    img = astronaut_grey
    b = math.ceil(radius)
    vol = np.stack([img[:, ::-1], img, img.T])  # the centre frame is frame 1
    ours = lbp_top_codes(vol, (8, 8, 8), (radius, radius, 1))[0][0].astype(int)
    ref = local_binary_pattern(img, 8, radius, method="default")[b:-b, b:-b].astype(int)
    assert ours.shape == ref.shape
    ys, xs = np.nonzero(ours != ref)
    # skimage's float arithmetic lands just below some exact ties; nothing else may differ
    assert len(ys) < 0.002 * ours.size
    offsets = lbp.plane_offsets("XY", 8, (radius, radius, 1))
    for y, x in zip(ys, xs):
        differ = ours[y, x] ^ ref[y, x]
        for p in range(8):
            if differ >> p & 1:
                value = exact_sample(img, (y + b, x + b), offsets[p][1:])
                assert value == int(img[y + b, x + b]), (y, x, p)
                assert ours[y, x] >> p & 1 == 1


def test_u2_histogram_is_skimage_nri_uniform_up_to_bin_order(astronaut_grey):
    crop = astronaut_grey[40:168, 160:288]  # a face region where all codes agree with skimage
    vol = np.stack([crop] * 3)
    ours = lbp_top_codes(vol, (8, 8, 8), (1, 1, 1))[0][0]
    default = local_binary_pattern(crop, 8, 1, method="default")[1:-1, 1:-1]
    assert np.array_equal(ours, default)
    nri = local_binary_pattern(crop, 8, 1, method="nri_uniform")[1:-1, 1:-1].astype(int)
    labels = u2_lut(8)[ours]
    pairs = set(zip(labels.ravel().tolist(), nri.ravel().tolist()))
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})  # a bijection
    feature = lbp_top(vol, (8, 8, 8), (1, 1, 1), blocks=(1, 1, 1), normalize="global")
    ours_hist = feature[:59] * ours.size
    ref_hist = np.bincount(nri.ravel(), minlength=59)
    permuted = np.zeros(59)
    for a, b in pairs:
        permuted[a] = ref_hist[b]
    np.testing.assert_allclose(ours_hist, permuted)
    np.testing.assert_allclose(np.sort(ours_hist), np.sort(ref_hist))


# -- the feature vector ---------------------------------------------------------------------

def random_volume(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_feature_length_and_block_normalisation():
    vol = random_volume((12, 40, 40))
    f = lbp_top(vol)
    assert f.shape == (8 * 8 * 3 * 59,)
    np.testing.assert_allclose(f.reshape(64, 3, 59).sum(axis=2), 1.0)
    g = lbp_top(vol, normalize="global")
    np.testing.assert_allclose(g.reshape(64, 3, 59).sum(axis=(0, 2)), 1.0)
    # global keeps block sizes: centre k of 38 goes to block 8k // 38 -> 5,5,5,4,5,5,5,4 rows
    sizes = np.array([5, 5, 5, 4, 5, 5, 5, 4])
    share = np.outer(sizes, sizes).ravel() / 38**2
    for plane in range(3):
        np.testing.assert_allclose(g.reshape(64, 3, 59)[:, plane].sum(axis=1), share)
    assert lbp_top(vol, mapping="none").shape == (64 * 3 * 256,)
    assert lbp_top(vol, points=(8, 4, 16)).shape == (64 * (59 + 15 + 243),)
    # P = 3: all 8 codes are uniform, the non-uniform bin exists but stays empty
    small = lbp_top(vol, points=(3, 3, 3), blocks=(1, 1, 1)).reshape(3, 9)
    assert (small[:, 8] == 0).all() and np.allclose(small.sum(axis=1), 1.0)
    assert LBPTOP(points=(8, 4, 16)).n_features == 64 * (59 + 15 + 243)
    s = lbp_sip(vol)
    assert s.shape == (64 * 20,) == (LBPSIP().n_features,)
    np.testing.assert_allclose(s.reshape(64, 20)[:, :16].sum(axis=1), 1.0)
    np.testing.assert_allclose(s.reshape(64, 20)[:, 16:].sum(axis=1), 1.0)


def test_blocks_split_space_and_time():
    rng = np.random.default_rng(1)
    vol = rng.integers(0, 256, (9, 10, 10), dtype=np.uint8)
    vol[:, :, :6] = 77  # centres x = 1..8 -> block column 0 is x = 1..4, reading x <= 5
    f = lbp_top(vol, radii=(1, 1, 4), blocks=(1, 2, 1)).reshape(2, 3, 59)
    assert np.all(f[0, :, 57] == 1.0)  # all ties: code 255 -> bin 57 on every plane
    assert f[1, 0, 57] < 0.5
    vol = rng.integers(0, 256, (20, 8, 8), dtype=np.uint8)
    vol[:11] = 5  # centres t = 1..18: time part 0 is t = 1..9, reading t <= 10
    f = lbp_top(vol, radii=(1, 1, 1), blocks=(1, 1, 2)).reshape(2, 3, 59)
    assert np.all(f[0, :, 57] == 1.0) and f[1, 0, 57] < 0.5


def test_lbp_sip_by_hand():
    """Centre 50: right 60 -> 1, up 40 -> 0, left 50 tie -> 1, down 10 -> 0: spatial code 5;
    the centre pixel one frame earlier is 50 (tie, bit 0 = 1), one later 49 (bit 1 = 0): 1."""
    vol = np.full((3, 3, 3), 50, dtype=np.uint8)
    vol[1] = [[0, 40, 0], [50, 50, 60], [0, 10, 0]]
    vol[2, 1, 1] = 49
    f = lbp_sip(vol, blocks=(1, 1, 1))
    expected = np.zeros(20)
    expected[5] = expected[16 + 1] = 1.0
    np.testing.assert_array_equal(f, expected)


# -- steps, parameters, errors -------------------------------------------------------------

def test_step_uses_the_clip_span_and_grey_luminance(astronaut_grey):
    rgb = data.astronaut()[100:164, 150:214]
    frames = np.stack([np.roll(rgb, k, axis=0) for k in range(15)])
    clip = merbench.Clip.from_array(frames, onset=2, offset=12, sample_id="demo/s1/c1")
    step = merbench.preprocessor("lbp-top", radii=[1, 1, 2], blocks=[2, 2, 1])
    grey = cv2.cvtColor(frames.reshape(-1, 64, 3), cv2.COLOR_RGB2GRAY).reshape(15, 64, 64)
    np.testing.assert_array_equal(step(clip), lbp_top(grey[2:13], radii=(1, 1, 2),
                                                      blocks=(2, 2, 1)))
    grey_clip = merbench.Clip.from_array(grey, onset=2, offset=12)
    np.testing.assert_array_equal(step(grey_clip), step(clip))
    sip = merbench.preprocessor("lbp-sip", blocks=[2, 2, 1])
    np.testing.assert_array_equal(sip(clip), lbp_sip(grey[2:13], blocks=(2, 2, 1)))


def test_parameters_from_set_are_normalised():
    step = LBPTOP(points=[8, 8, 8], radii=[3.0, 3, 3], blocks=[4, 4, 2])
    assert step.points == (8, 8, 8) and step.radii == (3, 3, 3) and step.blocks == (4, 4, 2)
    assert step.get_params()["radii"] == [3, 3, 3]
    assert LBPTOP(radii=3).radii == (3, 3, 3)
    assert LBPSIP(blocks=[2, 2, 1], radius=2.0).blocks == (2, 2, 1)


@pytest.mark.parametrize("params", [
    {"interpolation": "cubic"}, {"mapping": "riu2"}, {"normalize": "l2"},
    {"points": (8, 8)}, {"points": (8, 8, 32)}, {"radii": (0, 1, 1)}, {"blocks": (0, 8, 1)},
    {"blocks": (8, 8, 1.5)}, {"radii": ("a", 1, 1)},
])
def test_bad_parameters_are_config_errors(params):
    with pytest.raises(ConfigError):
        LBPTOP(**params)


def test_short_clip_names_the_sample():
    clip = merbench.Clip.from_array(random_volume((6, 32, 32)), sample_id="casme2/sub01/EP02")
    with pytest.raises(DataError, match="casme2/sub01/EP02.*6 frames"):
        LBPTOP()(clip)  # R_t = 4 needs 9 frames


def test_methods_are_registered_with_overrides():
    if "face-crop" not in merbench.names("preprocessor"):
        pytest.skip("the face-crop step (plugins/face.py) is not registered")
    method = merbench.method("lbptop-svm", {"lbp-top.radii": "(3,3,3)", "model.C": "10"})
    assert [s for s, _ in method.steps] == ["face-crop", "lbp-top"]
    assert method.steps[0][1]["size"] == 128
    assert method.model_name == "svm" and method.model_params["C"] == 10
    assert method.build_steps()[1].radii == (3, 3, 3)
    params = method.params()  # what a run records
    assert params["lbp-top.radii"] == [3, 3, 3] and params["lbp-top.blocks"] == [8, 8, 1]
    assert params["lbp-top.points"] == [8, 8, 8] and params["model.kernel"] == "linear"
    assert merbench.method("lbptop-svm").params()["lbp-top.radii"] == [1, 1, 4]
    sip = merbench.method("lbpsip-svm", {"lbp-sip.blocks": "[4, 4, 1]"})
    assert sip.build_steps()[1].blocks == (4, 4, 1)


def test_lbp_top_and_svm_tell_motion_directions_apart(astronaut_grey):
    """Clips of the astronaut's face whose texture drifts up (class 0) or down (class 1):
    XT/YT codes see the direction; a linear SVM trained on 8 clips labels 4 new ones."""
    face = astronaut_grey[60:188, 160:288].astype(np.float32)
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)

    def clip(direction: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        oy, ox = rng.uniform(10, 50, 2).astype(np.float32)
        speed = np.float32(rng.uniform(0.6, 1.0) * direction)
        frames = [cv2.remap(face, xx + ox, yy + oy + speed * t, cv2.INTER_LINEAR)
                  for t in range(12)]
        return np.clip(np.stack(frames), 0, 255).astype(np.uint8)

    step = LBPTOP(blocks=(2, 2, 1), radii=(1, 1, 2))
    X = np.stack([step(clip(d, s)) for s in range(6) for d in (-1, 1)])
    y = np.array([0, 1] * 6)
    model = merbench.model("svm", num_classes=2).fit(X[:8], y[:8])
    assert (model.predict(X[8:]) == y[8:]).all()
