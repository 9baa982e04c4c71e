"""LBP-TOP and LBP-SIP dynamic-texture features (METHODS.md §4) and the two LBP + SVM methods.

Both operators run on the grey clip over its whole span (onset..offset) and return one 1-D
float vector of per-block histograms. Everything is vectorised numpy: each neighbour of a plane
is sampled for all centre voxels at once as contiguous slices of the flattened volume (with
bilinear weights where it falls between pixels), the comparison bits are or-ed into codes, and
one ``np.bincount`` per plane counts ``block * n_codes + code``. The volume is walked in short
runs of frames so that the float intermediates stay in the CPU cache.

Choices made here where the reference is silent [ours]:

- neighbour offsets are rounded to 5 decimals, as ``skimage.feature.local_binary_pattern``
  does; this snaps axis-aligned neighbours exactly onto the grid and gives skimage's sampling;
- interpolated values are computed exactly (integers scaled by 10^5 per interpolated axis,
  exact in float64), so the tie ``g_p == g_c`` counts as 1 wherever it truly is a tie, on flat
  patches and on linear ramps alike. skimage's float arithmetic sometimes lands just below such
  a tie (about 1 neighbour in 10^3 on a face at R = 2..3); everywhere else the XY codes are
  skimage's;
- blocks split the *valid centre region* (the clip minus its border) as evenly as possible:
  centre ``k`` of ``n`` along an axis falls in block ``k * n_blocks // n``; block order in the
  vector is (row, column, time part), planes XY, XT, YT within each block.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from merbench import Clip, MethodSpec, Step, hookimpl
from merbench.clips import to_grey
from merbench.errors import ConfigError, DataError
from merbench.types import stack_into

PLANES = ("XY", "XT", "YT")
_CHUNK_VOXELS = 1 << 15  # voxels per run of frames: float64 temporaries (256 KB) stay in cache
_SCALE = 10 ** 5  # offsets are rounded to 5 decimals: k / _SCALE is exact

# ---------------------------------------------------------------------------------------------
# parameters


def _triple(value: Any, name: str, kind: type, step: str) -> tuple:
    """Normalise a parameter to a 3-tuple (``--set`` gives lists; a scalar means all three)."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        value = (value,) * 3
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ConfigError(f"{step}.{name} must be three numbers, got {value!r}",
                          f"e.g. --set {step}.{name}=(1,1,4)")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ConfigError(f"{step}.{name} must hold numbers, got {value!r}")
        if kind is int:
            if float(v) != int(v):
                raise ConfigError(f"{step}.{name} must hold whole numbers, got {value!r}")
            out.append(int(v))
        else:  # keep integral radii as ints so that (1, 1, 4) and (1.0, 1.0, 4.0) key alike
            out.append(int(v) if float(v).is_integer() else float(v))
    return tuple(out)


def _positive_radius(value: Any, name: str, step: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not value > 0:
        raise ConfigError(f"{step}.{name} must be a positive number, got {value!r}")
    return int(value) if float(value).is_integer() else float(value)


def _check_blocks(blocks: tuple[int, ...], step: str) -> None:
    if min(blocks) < 1:
        raise ConfigError(f"{step}.blocks must be positive (rows, cols, time parts), "
                          f"got {blocks!r}")


def _choice(value: Any, name: str, allowed: Sequence[str], step: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{step}.{name} must be one of {', '.join(map(repr, allowed))}, "
                          f"got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# geometry and mappings


def _round5(v: float) -> float:
    return round(v, 5) + 0.0  # + 0.0 turns -0.0 into 0.0


def plane_offsets(plane: str, P: int, radii: Sequence[float]) -> list[tuple[float, float, float]]:
    """(dt, dy, dx) of neighbour p = 0..P-1 at angle 2πp/P, as METHODS.md §4 places them.

    XY: (x + R_x cos θ, y − R_y sin θ); XT: (x + R_x cos θ, t + R_t sin θ);
    YT: (y − R_y sin θ, t + R_t cos θ). Offsets are rounded to 5 decimals (as skimage).
    """
    rx, ry, rt = radii
    out = []
    for p in range(P):
        c, s = math.cos(2 * math.pi * p / P), math.sin(2 * math.pi * p / P)
        if plane == "XY":
            d = (0.0, -ry * s, rx * c)
        elif plane == "XT":
            d = (rt * s, 0.0, rx * c)
        elif plane == "YT":
            d = (rt * c, -ry * s, 0.0)
        else:
            raise ValueError(plane)
        out.append(tuple(_round5(v) for v in d))
    return out


def _nearest(v: float) -> float:
    """Round half away from zero, so that opposite neighbours stay symmetric."""
    return math.copysign(math.floor(abs(v) + 0.5), v) + 0.0


@functools.cache
def u2_lut(P: int) -> np.ndarray:
    """Uniform (u2) mapping of P-bit codes: codes with at most 2 circular 0/1 transitions get
    one label each in increasing code order (0..P(P-1)+1), all others the last, P(P-1)+2."""
    codes = np.arange(1 << P, dtype=np.int64)
    rotated = (codes >> 1) | ((codes & 1) << (P - 1))
    transitions = (((codes ^ rotated)[:, None] >> np.arange(P)) & 1).sum(axis=1)
    uniform = transitions <= 2
    lut = np.full(1 << P, P * (P - 1) + 2, dtype=np.int64)
    lut[uniform] = np.arange(int(uniform.sum()))
    lut.setflags(write=False)
    return lut


def n_bins(P: int, mapping: str) -> int:
    return P * (P - 1) + 3 if mapping == "u2" else 1 << P


# ---------------------------------------------------------------------------------------------
# the vectorised core


def grey_volume(clip: Any, where: str = "") -> np.ndarray:
    """The clip span onset..offset as a (T, H, W) uint8 grey volume.

    RGB frames are converted with OpenCV's RGB2GRAY luminance; grey frames are used as they are.
    A bare (T,H,W) or (T,H,W,3) uint8 array is accepted as the whole span.
    """
    if isinstance(clip, Clip):
        clip.validate()
        where = clip.sample_id or where
        # streamed and made grey frame by frame: a third of the RGB span, never all of it
        frames = stack_into(clip.end + 1 - clip.onset,
                            (to_grey(f) for f in clip.iter_frames(clip.onset, clip.end + 1)),
                            where)
    elif isinstance(clip, np.ndarray):
        frames = clip
    else:
        raise DataError(f"{where or 'LBP'}: expected a Clip or a uint8 array, "
                        f"got {type(clip).__name__}", "put the LBP step after a Clip step")
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or \
            (frames.ndim == 4 and frames.shape[-1] != 3):
        raise DataError(f"{where or 'LBP'}: frames must be (T,H,W) or (T,H,W,3) uint8, got "
                        f"{frames.dtype} {frames.shape}")
    if frames.ndim == 4:
        t, h, w, _ = frames.shape
        import cv2

        grey = cv2.cvtColor(np.ascontiguousarray(frames).reshape(t * h, w, 3), cv2.COLOR_RGB2GRAY)
        return grey.reshape(t, h, w)
    return np.ascontiguousarray(frames)


class _Sampler:
    """Neighbour samples for every centre of one run of frames, sharing partial interpolations.

    The volume is addressed flat: a neighbour at integer offset (dt, dy, dx) is the flat
    shift dt*H*W + dy*W + dx, so every operand is a contiguous 1-D slice (fast), and the centre
    range runs from the first to the last centre voxel of the run (border columns in between
    are computed and later dropped). Axes are interpolated in the order t, y, x; an axis with
    offset i + k/S (S = 10^5, offsets being rounded to 5 decimals) becomes
    ``(S - k) * a + k * b``. Values stay integers scaled by S^m (m = fractional axes so far),
    exact in float64, so comparisons with the centre (scaled alike) are exact: a neighbour that
    equals its centre, on a flat patch or a linear ramp, always gives bit 1. Results of each
    prefix of axes are kept, so e.g. the t-interpolated frames serve both the XT and YT planes.
    Buffers are reused from run to run.
    """

    def __init__(self, flat: np.ndarray, steps: tuple[int, int, int],
                 margins: tuple[int, int, int], run: int) -> None:
        self.flat, self.steps, self.margins = flat, steps, margins
        self._buffers: dict[Any, np.ndarray] = {}
        self._size = run + 2 * margins[0]  # the longest array a run computes
        self._float: tuple[np.ndarray, int] | None = None
        self.start(0, 0)

    def _buffer(self, key: Any, n: int, dtype: Any = np.float64) -> np.ndarray:
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = np.empty(self._size, dtype=dtype)
        return buf[:n]

    def start(self, s0: int, s1: int) -> None:
        """Begin a run of centres at flat positions s0..s1-1."""
        self.s0, self.s1 = s0, s1
        self._cache: dict[tuple, tuple[np.ndarray, int, int]] = {}
        self._centre: dict[int, np.ndarray] = {0: self.flat[s0:s1]}

    def _source(self) -> tuple[np.ndarray, int]:
        """The volume as float64, converted on first use (only fractional offsets need it)."""
        if self._float is None:
            self._float = (self.flat.astype(np.float64), 0)
        return self._float

    def centre(self, m: int) -> np.ndarray:
        """The centre values scaled by S^m (uint8 for m = 0)."""
        if m not in self._centre:
            src, base = self._source()
            out = self._buffer(("centre", m), self.s1 - self.s0)
            np.multiply(src[self.s0 - base:self.s1 - base], float(_SCALE ** m), out=out)
            self._centre[m] = out
        return self._centre[m]

    def sample(self, offset: tuple[float, float, float]) -> tuple[np.ndarray, int]:
        """Values of the neighbour at ``offset`` (dt, dy, dx) for the centre range, and m."""
        split = []
        for v in offset:
            i = math.floor(v)
            k = round((v - i) * _SCALE)
            split.append((i + 1, 0) if k == _SCALE else (i, k))
        fractional = any(k for _, k in split)
        arr, base = self._source() if fractional else (self.flat, 0)
        m = 0
        key: tuple = (fractional,)  # grid neighbours read (and compare) the uint8 volume
        for axis, (i, k) in enumerate(split):
            key += ((i, k),)
            hit = self._cache.get(key)
            if hit is not None:
                arr, base, m = hit
                continue
            step = self.steps[axis]
            if k == 0:  # on the grid along this axis: a shift, no copy
                base -= i * step
            else:
                lo, hi = self.s0 - self.margins[axis], self.s1 + self.margins[axis]
                a = arr[lo + i * step - base:hi + i * step - base]
                b = arr[lo + (i + 1) * step - base:hi + (i + 1) * step - base]
                out = self._buffer(key, hi - lo)
                tmp = self._buffer("tmp", hi - lo)
                np.multiply(a, float(_SCALE - k), out=out)
                np.multiply(b, float(k), out=tmp)
                out += tmp
                arr, base, m = out, lo, m + 1
            self._cache[key] = (arr, base, m)
        return arr[self.s0 - base:self.s1 - base], m


def _codes(sampler: _Sampler, offsets: Sequence[tuple[float, float, float]],
           out: np.ndarray) -> None:
    """P-bit codes (bit p = [g_p >= g_c]) of one plane for the centre range, into ``out``."""
    n = out.size
    bit = sampler._buffer("bit", n, bool)
    weighted = sampler._buffer(("weighted", out.dtype.str), n, out.dtype)
    out[...] = 0
    for p, off in enumerate(offsets):
        g, m = sampler.sample(off)
        np.greater_equal(g, sampler.centre(m), out=bit)
        np.multiply(bit.view(np.uint8), out.dtype.type(1 << p), out=weighted)
        out |= weighted


def _region(shape: tuple[int, ...], border: tuple[int, int, int], where: str,
            blocks: tuple[int, ...], what: str) -> None:
    """Raise when the border leaves fewer centres than blocks along an axis (t, y, x)."""
    need = (blocks[2], blocks[0], blocks[1])
    for size, b, k, name in zip(shape, border, need, ("frames", "rows", "columns")):
        if size - 2 * b < k:
            raise DataError(
                f"{where or 'clip'}: {size} {name} with a border of {b} leave "
                f"{max(size - 2 * b, 0)} centre {name} for {k} block(s) of {what}",
                "use a longer span / larger face, smaller radii or fewer blocks")


def _block_ids(shape: tuple[int, int, int], border: tuple[int, int, int],
               blocks: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Block of every pixel of a frame, flat (H*W,), in (row, column) order with n_blocks for
    the border; and the time part of every frame (-1 in the temporal border).

    Blocks split the centre region evenly: centre k of n falls in block k * n_blocks // n.
    """
    rows, cols, parts = blocks
    axes = []
    for size, b, nb in zip(shape, border, (parts, rows, cols)):
        n = size - 2 * b
        axis = np.full(size, -1, dtype=np.intp)
        axis[b:size - b] = np.arange(n) * nb // n
        axes.append(axis)
    part, by, bx = axes
    frame = (by[:, None] * cols + bx[None, :]) * parts
    frame[(by[:, None] < 0) | (bx[None, :] < 0)] = rows * cols * parts
    return frame.ravel(), part


def _histograms(codes: np.ndarray, ids: tuple[np.ndarray, np.ndarray], n_blocks: int,
                n_codes: int, mapping: str = "none") -> np.ndarray:
    """Counts per block, (n_blocks, n_labels): one bincount of block * n_codes + code per
    time part (codes flat over the volume, ``ids`` from :func:`_block_ids`)."""
    frame, part = ids
    n_frames = len(part)
    codes = codes.reshape(n_frames, -1)
    counts = np.zeros((n_blocks + 1) * n_codes, dtype=np.intp)
    for p in range(int(part.max()) + 1):
        frames = np.flatnonzero(part == p)
        scaled = np.where(frame < n_blocks, frame + p, n_blocks) * n_codes
        idx = scaled + codes[frames[0]:frames[-1] + 1]  # broadcast over the part's frames
        counts += np.bincount(idx.ravel(), minlength=(n_blocks + 1) * n_codes)
    counts = counts.reshape(n_blocks + 1, n_codes)[:n_blocks]
    if mapping == "none":
        return counts
    P = n_codes.bit_length() - 1
    order, labels, starts = _u2_groups(P)
    out = np.zeros((n_blocks, n_bins(P, "u2")), dtype=counts.dtype)
    out[:, labels] = np.add.reduceat(counts[:, order], starts, axis=1)
    return out


@functools.cache
def _u2_groups(P: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes sorted by u2 label, the labels that occur, and where each starts (for reduceat;
    for P <= 3 every code is uniform and the last label has no code)."""
    lut = u2_lut(P)
    order = np.argsort(lut, kind="stable")
    labels, starts = np.unique(lut[order], return_index=True)
    return order, labels, starts


def _walk(volume: np.ndarray, border: tuple[int, int, int],
          planes: Sequence[Sequence[tuple[float, float, float]]]) -> list[np.ndarray]:
    """Codes of each plane for every voxel of the volume, flat (T*H*W,); only centre voxels
    (outside ``border``) hold codes, the rest is 0. Runs of frames keep temporaries in cache."""
    T, H, W = volume.shape
    bt, by, bx = border
    steps = (H * W, W, 1)
    margins = (by * W + bx, bx, 0)  # reach of the axes still to interpolate after t, y, x
    flat = np.ascontiguousarray(volume).reshape(-1)
    out = [np.zeros(flat.size, dtype=np.uint8 if len(offs) <= 8 else np.uint16)
           for offs in planes]
    per_run = max(1, _CHUNK_VOXELS // (H * W))
    sampler = _Sampler(flat, steps, margins, per_run * H * W)
    for t0 in range(bt, T - bt, per_run):
        t1 = min(T - bt, t0 + per_run)
        s0 = t0 * H * W + by * W + bx
        s1 = (t1 - 1) * H * W + (H - by - 1) * W + (W - bx)
        sampler.start(s0, s1)
        for codes, offs in zip(out, planes):
            _codes(sampler, offs, codes[s0:s1])
    return out


def _top_geometry(points: Sequence[int], radii: Sequence[float], interpolation: str
                  ) -> tuple[tuple[int, int, int], list[list[tuple[float, float, float]]]]:
    """Border (t, y, x) and neighbour offsets of the XY, XT and YT planes."""
    rx, ry, rt = radii
    b = math.ceil(max(rx, ry))
    planes = []
    for plane, P in zip(PLANES, points):
        offs = plane_offsets(plane, P, radii)
        if interpolation == "nearest":
            offs = [tuple(_nearest(v) for v in o) for o in offs]
        planes.append(offs)
    return (math.ceil(rt), b, b), planes


def lbp_top_codes(volume: np.ndarray, points: Sequence[int] = (8, 8, 8),
                  radii: Sequence[float] = (1, 1, 4), interpolation: str = "bilinear",
                  where: str = "") -> list[np.ndarray]:
    """Raw LBP codes of the XY, XT and YT planes for every centre voxel, each (T', H', W').

    Centres skip a border of ceil(max(R_x, R_y)) pixels in space and ceil(R_t) frames in time.
    """
    border, planes = _top_geometry(points, radii, interpolation)
    _region(volume.shape, border, where, (1, 1, 1), "LBP-TOP")
    T, H, W = volume.shape
    bt, by, bx = border
    return [c.reshape(T, H, W)[bt:T - bt, by:H - by, bx:W - bx]
            for c in _walk(volume, border, planes)]


def lbp_top(volume: np.ndarray, points: Sequence[int] = (8, 8, 8),
            radii: Sequence[float] = (1, 1, 4), blocks: Sequence[int] = (8, 8, 1),
            interpolation: str = "bilinear", mapping: str = "u2", normalize: str = "block",
            where: str = "") -> np.ndarray:
    """LBP-TOP feature of a grey (T, H, W) uint8 volume: per block, XY, XT, YT histograms."""
    blocks = tuple(blocks)
    border, planes = _top_geometry(points, radii, interpolation)
    _region(volume.shape, border, where, blocks, "LBP-TOP")
    codes = _walk(volume, border, planes)
    ids = _block_ids(volume.shape, border, blocks)
    n_blocks = int(np.prod(blocks))
    hists = [_histograms(c, ids, n_blocks, 1 << P, mapping) for c, P in zip(codes, points)]
    if normalize == "block":
        feats = [h / h.sum(axis=1, keepdims=True) for h in hists]
    else:  # "global": each plane sums to 1 over all blocks
        n_centres = float(hists[0].sum())
        feats = [h / n_centres for h in hists]
    return np.concatenate(feats, axis=1).ravel()


def lbp_sip(volume: np.ndarray, radius: float = 1, radius_t: float = 1,
            blocks: Sequence[int] = (8, 8, 1), where: str = "") -> np.ndarray:
    """LBP-SIP feature: per block a 16-bin spatial and a 4-bin temporal histogram, each L1.

    Spatial bit p is the neighbour at angle 2πp/4 (p=0 right, 1 up, 2 left, 3 down, at
    ``radius``); temporal bit 0 is the same pixel ``radius_t`` frames earlier, bit 1 later.
    """
    blocks = tuple(blocks)
    b = math.ceil(radius)
    border = (math.ceil(radius_t), b, b)
    _region(volume.shape, border, where, blocks, "LBP-SIP")
    spatial = plane_offsets("XY", 4, (radius, radius, radius_t))
    temporal = [(_round5(-radius_t), 0.0, 0.0), (_round5(radius_t), 0.0, 0.0)]
    codes = _walk(volume, border, [spatial, temporal])
    ids = _block_ids(volume.shape, border, blocks)
    n_blocks = int(np.prod(blocks))
    hists = [_histograms(c, ids, n_blocks, n) for c, n in zip(codes, (16, 4))]
    feats = [h / h.sum(axis=1, keepdims=True) for h in hists]
    return np.concatenate(feats, axis=1).ravel()


# ---------------------------------------------------------------------------------------------
# steps


class LBPTOP(Step):
    """LBP-TOP histograms (XY, XT, YT planes) of the grey clip span onset..offset.

    Offsets are rounded to 5 decimals and blocks split the valid centre region, see the module
    docstring [ours].

    :param points: neighbours per plane (P_xy, P_xt, P_yt)
    :param radii: radii (R_x, R_y, R_t) in pixels and frames
    :param blocks: (rows, cols, time parts) the histograms are computed over
    :param interpolation: "bilinear" (as the Oulu code and skimage) or "nearest" (offsets
        rounded half away from zero)
    :param mapping: "u2" (P(P-1)+3 bins, 59 for P = 8) or "none" (2^P bins)
    :param normalize: "block" (each block's plane histogram sums to 1) or "global" [ours]
        (counts / number of centre voxels: each plane sums to 1 over all blocks)
    """

    name = "lbp-top"
    version = "1"

    def __init__(self, points: Sequence[int] = (8, 8, 8), radii: Sequence[float] = (1, 1, 4),
                 blocks: Sequence[int] = (8, 8, 1), interpolation: str = "bilinear",
                 mapping: str = "u2", normalize: str = "block") -> None:
        self.points = _triple(points, "points", int, self.name)
        if not all(2 <= p <= 16 for p in self.points):
            raise ConfigError(f"lbp-top.points must be between 2 and 16, got {self.points!r}",
                              "P = 8 is the usual choice")
        self.radii = _triple(radii, "radii", float, self.name)
        if min(self.radii) <= 0:
            raise ConfigError(f"lbp-top.radii must be positive, got {self.radii!r}")
        self.blocks = _triple(blocks, "blocks", int, self.name)
        _check_blocks(self.blocks, self.name)
        self.interpolation = _choice(interpolation, "interpolation", ("bilinear", "nearest"),
                                     self.name)
        self.mapping = _choice(mapping, "mapping", ("u2", "none"), self.name)
        self.normalize = _choice(normalize, "normalize", ("block", "global"), self.name)

    @property
    def n_features(self) -> int:
        return int(np.prod(self.blocks)) * sum(n_bins(p, self.mapping) for p in self.points)

    def __call__(self, clip: Any) -> np.ndarray:
        where = getattr(clip, "sample_id", "")
        return lbp_top(grey_volume(clip), self.points, self.radii, self.blocks,
                       self.interpolation, self.mapping, self.normalize, where=where)


class LBPSIP(Step):
    """LBP-SIP (six intersection points) histograms of the grey clip span onset..offset.

    4 spatial neighbours (16-bin code) and the same pixel before and after (4-bin code), per
    block; each part L1-normalised, 20 values per block.

    :param radius: distance of the 4 spatial neighbours in pixels
    :param radius_t: distance of the 2 temporal neighbours in frames
    :param blocks: (rows, cols, time parts) the histograms are computed over
    """

    name = "lbp-sip"
    version = "1"

    def __init__(self, radius: float = 1, radius_t: float = 1,
                 blocks: Sequence[int] = (8, 8, 1)) -> None:
        self.radius = _positive_radius(radius, "radius", self.name)
        self.radius_t = _positive_radius(radius_t, "radius_t", self.name)
        self.blocks = _triple(blocks, "blocks", int, self.name)
        _check_blocks(self.blocks, self.name)

    @property
    def n_features(self) -> int:
        return int(np.prod(self.blocks)) * 20

    def __call__(self, clip: Any) -> np.ndarray:
        where = getattr(clip, "sample_id", "")
        return lbp_sip(grey_volume(clip), self.radius, self.radius_t, self.blocks, where=where)


# ---------------------------------------------------------------------------------------------
# registration


@hookimpl
def register_preprocessors(register: Any) -> None:
    register("lbp-top", LBPTOP, description="LBP-TOP histograms (XY/XT/YT) of the grey clip")
    register("lbp-sip", LBPSIP, description="LBP-SIP histograms (six intersection points)")


@hookimpl
def register_methods(register: Any) -> None:
    # Parameters are spelled out so that every run records them (and --set can change them).
    register("lbptop-svm", MethodSpec(
        steps=(("face-crop", {"size": 128}),
               ("lbp-top", {"points": (8, 8, 8), "radii": (1, 1, 4), "blocks": (8, 8, 1),
                            "interpolation": "bilinear", "mapping": "u2",
                            "normalize": "block"})),
        model=("svm", {"kernel": "linear", "C": 1.0}),
        description="face crop 128, LBP-TOP (8x8x1 blocks, P=8, R=(1,1,4), u2), SVM", demo={}))
    register("lbpsip-svm", MethodSpec(
        steps=(("face-crop", {"size": 128}),
               ("lbp-sip", {"radius": 1, "radius_t": 1, "blocks": (8, 8, 1)})),
        model=("svm", {"kernel": "linear", "C": 1.0}),
        description="face crop 128, LBP-SIP (8x8x1 blocks, R=1, R_t=1), SVM", demo={}))
