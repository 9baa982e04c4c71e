"""Clip validation and lazy frame reading from image folders and video files."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from merbench import Clip, Sample
from merbench.errors import DataError, ProtocolError
from merbench.types import Fold
from merbench.video import frame_number, index_frames, load_clip, read_folder, read_video


def _frames(t: int = 5, h: int = 8, w: int = 6) -> np.ndarray:
    return np.arange(t * h * w * 3, dtype=np.int64).reshape(t, h, w, 3).astype(np.uint8)


# -- Clip -------------------------------------------------------------------------------------
def test_from_array_defaults_and_indices() -> None:
    clip = Clip.from_array(_frames(7), onset=1, offset=5, sample_id="x/s1/c")
    assert (clip.onset, clip.apex, clip.offset, clip.end) == (1, 3, 5, 5)
    assert clip.apex_estimated is True  # no apex given: middle of onset..offset, flagged
    given = Clip.from_array(_frames(7), apex=2)
    assert (given.apex, given.offset, given.apex_estimated) == (2, 6, False)
    grey = Clip.from_array(np.zeros((4, 5, 6), np.uint8))
    assert grey.frames.shape == (4, 5, 6) and grey.n_frames == 4


def test_with_frames_keeps_indices_and_metadata() -> None:
    clip = Clip.from_array(_frames(6), onset=1, apex=2, offset=4, sample_id="x/s1/c")
    half = clip.with_frames(clip.frames[:, ::2, ::2], notes=("halved",))
    assert half.frames.shape == (6, 4, 3, 3)
    assert (half.onset, half.apex, half.offset, half.sample_id) == (1, 2, 4, "x/s1/c")
    assert half.notes == ("halved",) and clip.notes == ()
    with pytest.raises(DataError, match="x/s1/c: frames must be uint8"):
        clip.with_frames(clip.frames.astype(np.float32))


@pytest.mark.parametrize("kwargs, message", [
    ({"onset": 3, "offset": 1}, "onset 3 is after offset 1"),
    ({"onset": 1, "apex": 4, "offset": 3}, r"apex 4 is outside onset\.\.offset 1\.\.3"),
    ({"onset": 2, "apex": 1}, r"apex 1 is outside onset\.\.offset 2\.\.4"),
    ({"offset": 5}, "offset index 5 is outside the clip's 5 frames"),
    ({"onset": -1}, "onset index -1 is outside"),
])
def test_from_array_rejects_bad_indices(kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=f"x/s1/c: {message}"):
        Clip.from_array(_frames(5), sample_id="x/s1/c", **kwargs)


@pytest.mark.parametrize("frames, message", [
    (_frames().astype(np.float32), "frames must be uint8, got float32"),
    (_frames().astype(np.uint16), "frames must be uint8, got uint16"),
    (np.zeros((5, 8, 6, 4), np.uint8),
     r"must be \(T, H, W, 3\) or \(T, H, W\), got shape \(5, 8, 6, 4\)"),
    (np.zeros((8, 6), np.uint8), r"got shape \(8, 6\)"),
    (np.zeros((0, 8, 6, 3), np.uint8), "the clip has no frames"),
])
def test_from_array_rejects_bad_frames(frames: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=message):
        Clip.from_array(frames)


def test_frames_are_read_lazily_once() -> None:
    calls = []

    def loader() -> np.ndarray:
        calls.append(1)
        return _frames(3)

    clip = Clip(loader, onset=0, apex=1, offset=2, sample_id="x/s1/c")
    assert calls == []
    assert clip.frames.shape == (3, 8, 6, 3) and clip.frames.shape[0] == 3
    assert calls == [1]


def test_sample_ids_and_fold_overlap() -> None:
    s = Sample("samm", "006", "006_1_2", "negative", meta=(("k", 1),))
    assert (s.id, s.group, dict(s.meta)) == ("samm/006/006_1_2", "samm/006", {"k": 1})
    assert s.replace(label="positive").label == "positive" and s.label == "negative"
    with pytest.raises(ProtocolError, match="fold f: 1 samples in both train and test"):
        Fold(0, "f", ("a", "b"), ("b", "c"))


# -- image folders ------------------------------------------------------------------------------
def _write_png(path: Path, value: int, shape: tuple[int, int] = (6, 8)) -> None:
    image = np.full((*shape, 3), value, np.uint8)
    image[0, 0] = (value, 0, 255 - value)  # B, G, R as OpenCV writes
    assert cv2.imwrite(str(path), image)


def test_frame_numbers_come_from_the_file_name() -> None:
    assert frame_number("img46.jpg") == 46
    assert frame_number("reg_img46.jpg") == 46
    assert frame_number("006_05562.jpg") == 5562
    assert frame_number("s01_ne_01_frame0007.bmp") == 7
    assert frame_number("cover.png") is None


def test_folder_frames_are_ordered_by_number_not_by_name(tmp_path: Path) -> None:
    for number in (3, 10, 4):
        _write_png(tmp_path / f"img{number}.png", value=number * 10)
    (tmp_path / "notes.txt").write_text("not a frame")
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["img10.png", "img3.png", "img4.png"]
    assert {n: p.name for n, p in index_frames(tmp_path).items()} == {
        3: "img3.png", 4: "img4.png", 10: "img10.png"}
    frames = read_folder(tmp_path, [3, 4, 10])
    assert frames.shape == (3, 6, 8, 3) and frames.dtype == np.uint8
    assert frames[:, 3, 3, 0].tolist() == [30, 40, 100]
    assert frames[0, 0, 0].tolist() == [225, 0, 30]  # BGR on disk -> RGB in memory

    # a sample without onset/offset reads every frame present, in number order
    clip = load_clip(Sample("x", "s1", "c", "negative", path=str(tmp_path)))
    assert clip.frame_numbers == (3, 4, 10)
    assert clip.frames[:, 3, 3, 0].tolist() == [30, 40, 100]
    assert (clip.onset, clip.apex, clip.offset, clip.apex_estimated) == (0, 1, 2, True)


def test_annotated_sample_reads_onset_to_offset(tmp_path: Path) -> None:
    for number in range(20, 26):
        _write_png(tmp_path / f"reg_img{number}.png", value=number)
    clip = load_clip(Sample("x", "s1", "c", "negative", onset=21, apex=24, offset=25,
                            path=str(tmp_path)))
    assert clip.frame_numbers == (21, 22, 23, 24, 25)
    assert (clip.onset, clip.apex, clip.offset, clip.apex_estimated) == (0, 3, 4, False)
    assert clip.frames[:, 2, 2, 1].tolist() == [21, 22, 23, 24, 25]


def test_missing_frame_names_the_sample(tmp_path: Path) -> None:
    for number in (1, 2, 4):
        _write_png(tmp_path / f"img{number}.png", value=number)
    clip = load_clip(Sample("casme2", "sub01", "EP02_01f", "negative", onset=1, apex=2, offset=4,
                            path=str(tmp_path)))
    with pytest.raises(DataError, match=r"casme2/sub01/EP02_01f: 1 frame\(s\) missing in .*: 3"):
        clip.frames  # noqa: B018 - reading is the test


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_folder(tmp_path / "nope", [1])


def test_corrupt_frame_is_a_data_error(tmp_path: Path) -> None:
    _write_png(tmp_path / "img1.png", value=1)
    (tmp_path / "img2.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" * 10)
    clip = load_clip(Sample("x", "s1", "c", "negative", onset=1, apex=1, offset=2,
                            path=str(tmp_path)))
    with pytest.raises(DataError, match=r"x/s1/c: frame .*img2\.jpg is truncated"):
        clip.frames  # noqa: B018


def test_frames_of_different_sizes_are_refused(tmp_path: Path) -> None:
    _write_png(tmp_path / "img1.png", value=1, shape=(6, 8))
    _write_png(tmp_path / "img2.png", value=2, shape=(6, 8))
    _write_png(tmp_path / "img3.png", value=3, shape=(7, 8))
    with pytest.raises(DataError, match=r"x/s1/c: frame img3\.png is 8x7, the first frame is 8x6"):
        read_folder(tmp_path, [1, 2, 3], "x/s1/c")


def test_two_files_with_one_number_are_refused(tmp_path: Path) -> None:
    _write_png(tmp_path / "img1.png", value=1)
    _write_png(tmp_path / "img001.jpg", value=1)
    with pytest.raises(DataError, match="two frames carry number 1"):
        index_frames(tmp_path)


def test_grey_and_16_bit_frames_are_normalised(tmp_path: Path) -> None:
    assert cv2.imwrite(str(tmp_path / "f1.png"), np.full((4, 4), 77, np.uint8))
    assert cv2.imwrite(str(tmp_path / "f2.png"), np.full((4, 4), 257 * 200, np.uint16))
    frames = read_folder(tmp_path, [1, 2])
    assert frames.shape == (2, 4, 4, 3)
    assert frames[0].reshape(-1).tolist() == [77] * 48  # grey replicated to 3 channels
    assert frames[1].reshape(-1).tolist() == [200] * 48  # 16 bit scaled by 1/257


# -- video files --------------------------------------------------------------------------------
def _write_video(path: Path, n: int = 10) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (32, 24))
    assert writer.isOpened()
    for k in range(n):
        frame = np.zeros((24, 32, 3), np.uint8)
        frame[..., 2] = 20 * k  # red channel (BGR) carries the frame index
        frame[..., 0] = 100
        writer.write(frame)
    writer.release()


def test_video_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    _write_video(path)
    frames = read_video(path, 3, 6)
    assert frames.shape == (4, 24, 32, 3) and frames.dtype == np.uint8
    red = frames[..., 0].mean(axis=(1, 2))
    blue = frames[..., 2].mean(axis=(1, 2))
    np.testing.assert_allclose(red, [60, 80, 100, 120], atol=4)  # MJPG is lossy
    np.testing.assert_allclose(blue, 100, atol=4)

    clip = load_clip(Sample("samm", "006", "006_1_2", "negative", onset=3, apex=5, offset=6,
                            path=str(path)))
    assert clip.frame_numbers == (3, 4, 5, 6)
    assert (clip.onset, clip.apex, clip.offset) == (0, 2, 3)
    np.testing.assert_allclose(clip.frames[..., 0].mean(axis=(1, 2)), red, atol=1e-9)


def test_video_errors_name_the_sample(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    _write_video(path, n=5)
    with pytest.raises(DataError, match=r"samm/006/x: video .* has 5 frames \(0..4\); frame 5 is past its end"):
        clip = load_clip(Sample("samm", "006", "x", "negative", onset=3, offset=7, path=str(path)))
        clip.frames  # noqa: B018 - reading is the test
    with pytest.raises(DataError, match="a video sample needs onset and offset"):
        load_clip(Sample("samm", "006", "x", "negative", path=str(path)))
    with pytest.raises(DataError, match="does not exist"):
        read_video(tmp_path / "none.avi", 0, 1)


def test_apex_outside_the_clip_is_a_data_error(tmp_path: Path) -> None:
    import cv2

    from merbench.video import load_clip

    for k in range(1, 11):
        cv2.imwrite(str(tmp_path / f"img{k}.png"), np.full((8, 8, 3), k, np.uint8))
    for apex in (0, 12):
        sample = Sample("casme2", "sub01", "EP01", "x", onset=3, apex=apex, offset=10,
                        path=str(tmp_path))
        with pytest.raises(DataError, match="casme2/sub01/EP01: apex"):
            load_clip(sample)


def test_a_missing_apex_is_the_same_middle_frame_from_disk_and_from_memory(tmp_path: Path) -> None:
    import merbench
    from merbench.clips import resolve_apex

    frames = _frames(t=6, h=16, w=16)  # an even length: two middle frames, the lower is used
    for number, frame in enumerate(frames, start=10):
        cv2.imwrite(str(tmp_path / f"img{number}.png"), frame[..., ::-1])
    sample = Sample("x", "s1", "c1", "a", onset=10, apex=None, offset=15, path=str(tmp_path))
    disk = load_clip(sample)
    memory = Clip.from_array(frames)
    assert disk.apex == memory.apex == resolve_apex(memory.replace(apex=None))[0] == 2
    assert disk.apex_estimated and memory.apex_estimated
    ars = merbench.preprocessor("ars", n_key=3)
    np.testing.assert_array_equal(ars(disk), ars(memory))


# -- lazy frames: a step reads the frames it needs ---------------------------------------------
def _counting_clip(frames: np.ndarray) -> tuple[Clip, list[list[int]]]:
    reads: list[list[int]] = []

    def reader(indices: list[int]) -> np.ndarray:
        reads.append(list(indices))
        return frames[list(indices)]

    def loader() -> np.ndarray:
        reads.append(list(range(len(frames))))
        return frames

    return Clip(loader, onset=1, apex=4, offset=8, sample_id="x/s1/c", reader=reader,
                length=len(frames)), reads


def test_take_frame_and_iter_frames_read_only_what_is_asked() -> None:
    frames = _frames(10)
    clip, reads = _counting_clip(frames)
    assert clip.n_frames == 10 and reads == []  # the length is known without reading
    np.testing.assert_array_equal(clip.take([4, 1, 4]), frames[[4, 1, 4]])
    assert reads == [[1, 4]]  # each frame once, in order
    np.testing.assert_array_equal(clip.frame(7), frames[7])
    assert reads[-1] == [7]
    streamed = list(clip.iter_frames(2, 9, chunk=3))
    np.testing.assert_array_equal(np.stack(streamed), frames[2:9])
    assert reads[-3:] == [[2, 3, 4], [5, 6, 7], [8]]
    assert not clip.loaded
    with pytest.raises(DataError, match="x/s1/c: frame index 10 is outside the clip's 10 frames"):
        clip.take([10])
    np.testing.assert_array_equal(clip.frames, frames)  # the whole clip: one load, kept
    count = len(reads)
    clip.take([0, 1])
    assert len(reads) == count  # served from the loaded frames


def test_map_frames_transforms_lazily_and_replace_keeps_loaded_frames() -> None:
    frames = _frames(10)
    clip, reads = _counting_clip(frames)
    calls = []

    def double(f: np.ndarray) -> np.ndarray:
        calls.append(1)
        return (f // 2).astype(np.uint8)

    mapped = clip.map_frames(double, notes=("halved",))
    assert (mapped.n_frames, mapped.notes, calls) == (10, ("halved",), [])
    np.testing.assert_array_equal(mapped.take([1, 4]), frames[[1, 4]] // 2)
    assert len(calls) == 2 and reads == [[1, 4]]
    np.testing.assert_array_equal(mapped.frames, frames // 2)
    loaded = clip.replace(key_frames=(2, 3))
    loaded.frames  # noqa: B018
    again = loaded.replace(apex=5)
    assert again.loaded and again.frames is loaded.frames


def _folder_clip(tmp_path: Path, n: int = 30) -> Sample:
    for k in range(1, n + 1):
        cv2.imwrite(str(tmp_path / f"img{k}.png"), np.full((40, 48, 3), 4 * k, np.uint8))
    return Sample("x", "s1", "c", "negative", onset=3, apex=12, offset=25, path=str(tmp_path))


@pytest.mark.parametrize("method, n_read", [("diff-logreg", 2), ("apex-logreg", 1)])
def test_two_frame_methods_read_two_frame_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                method: str, n_read: int) -> None:
    import merbench
    import merbench.video as video

    sample = _folder_clip(tmp_path)
    read: list[str] = []
    real = video.read_image
    monkeypatch.setattr(video, "read_image", lambda p, w="": read.append(Path(p).name) or real(p, w))
    meth = merbench.method(method)
    x = meth.preprocess(load_clip(sample))
    assert len(read) == n_read and "img12.png" in read
    assert ("img3.png" in read) == (method == "diff-logreg")
    whole = meth.preprocess(Clip.from_array(load_clip(sample).frames, onset=0, apex=9))
    np.testing.assert_array_equal(x, whole)  # the same array as from the whole clip


def test_ars_reads_the_onset_and_key_frames_only(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import merbench
    import merbench.video as video

    sample = _folder_clip(tmp_path)
    read: list[str] = []
    real = video.read_image
    monkeypatch.setattr(video, "read_image", lambda p, w="": read.append(Path(p).name) or real(p, w))
    step = merbench.preprocessor("ars", n_key=5)
    lazy = step(load_clip(sample))
    # span 3..12 (apex 9 frames after onset < 10: end = min(onset + 10, offset) = 13); key
    # frames 5, 7, 9, 11, 13 -> frame numbers onset + k
    assert sorted(read, key=lambda n: int(n[3:-4])) == [f"img{k}.png" for k in (3, 5, 7, 9, 11, 13)]
    np.testing.assert_array_equal(lazy, step(Clip.from_array(load_clip(sample).frames, apex=9)))


def test_lbp_top_streams_the_span_with_the_same_result(tmp_path: Path) -> None:
    import merbench

    for k in range(1, 13):
        cv2.imwrite(str(tmp_path / f"img{k}.png"),
                    np.random.default_rng(k).integers(0, 256, (24, 24, 3), dtype=np.uint8))
    sample = Sample("x", "s1", "c", "negative", onset=1, apex=6, offset=12, path=str(tmp_path))
    step = merbench.preprocessor("lbp-top", blocks=(2, 2, 1), radii=(1, 1, 2))
    clip = load_clip(sample)
    lazy = step(clip)
    assert not clip.loaded  # streamed: never held as one RGB stack
    np.testing.assert_array_equal(lazy, step(Clip.from_array(load_clip(sample).frames, apex=5)))


def test_video_frames_are_read_alone(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (32, 24))
    for k in range(60):
        writer.write(np.full((24, 32, 3), 4 * k, np.uint8))
    writer.release()
    # the apex is more than 32 frames after the onset: read by seeking, not decoding between
    sample = Sample("x", "s1", "c", "negative", onset=5, apex=50, offset=58, path=str(path))
    clip = load_clip(sample)
    apex, onset = clip.take([clip.apex, clip.onset])
    whole = read_video(path, 5, 58)
    np.testing.assert_array_equal(apex, whole[45])
    np.testing.assert_array_equal(onset, whole[0])
    assert not clip.loaded


@pytest.mark.parametrize("name, cut, message", [
    ("img2.jpg", 0.6, "is truncated (no JPEG end-of-image marker)"),
    ("img2.jpg", 0.99, "is truncated (no JPEG end-of-image marker)"),
    ("img2.png", 0.6, "is truncated (no PNG IEND chunk)"),
    ("img2.bmp", 0.6, "is truncated"),
])
def test_truncated_frames_are_named(tmp_path: Path, name: str, cut: float, message: str,
                                    capfd: pytest.CaptureFixture[str]) -> None:
    from skimage import data

    for k in (1, 2):
        cv2.imwrite(str(tmp_path / f"img{k}{Path(name).suffix}"), data.astronaut()[:, :, ::-1])
    path = tmp_path / name
    blob = path.read_bytes()
    path.write_bytes(blob[:int(len(blob) * cut)])
    clip = load_clip(Sample("x", "s1", "c", "n", onset=1, apex=2, offset=2, path=str(tmp_path)))
    with pytest.raises(DataError, match=f"x/s1/c: frame .*{name} {re.escape(message)}"):
        clip.frame(1)
    assert "Premature end" not in capfd.readouterr().err  # nothing reached the decoder
    clip.frame(0)  # the intact frame still reads


def test_a_complete_jpeg_with_trailing_padding_reads(tmp_path: Path) -> None:
    ok, buf = cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))
    (tmp_path / "img1.jpg").write_bytes(buf.tobytes() + b"\x00" * 100)
    clip = load_clip(Sample("x", "s1", "c", "n", onset=1, apex=1, offset=1, path=str(tmp_path)))
    assert abs(int(clip.frame(0).mean()) - 90) <= 1
