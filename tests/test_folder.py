"""The folder dataset: precomputed images / .npy arrays listed in an index CSV."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import merbench
from merbench.errors import ConfigError, DataError

INDEX = """dataset,subject,clip,label,path
samm,6,6_1_2,0,flow/samm_6_1_2.png
smic,s1,s1_ne_01,1,arrays/s1_ne_01.npy
CASME2,1,EP02_01f,2,flow/casme2.png
samm,006,006_1_3,0,flow/missing.png
"""


@pytest.fixture()
def index_dir(tmp_path: Path) -> Path:
    (tmp_path / "flow").mkdir()
    (tmp_path / "arrays").mkdir()
    bgr = np.zeros((28, 28, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30  # blue, green, red as OpenCV stores
    bgr[0, 0] = (1, 2, 3)
    assert cv2.imwrite(str(tmp_path / "flow" / "samm_6_1_2.png"), bgr)
    assert cv2.imwrite(str(tmp_path / "flow" / "casme2.png"), bgr[..., ::-1])
    np.save(tmp_path / "arrays" / "s1_ne_01.npy", np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    (tmp_path / "index.csv").write_text(INDEX)
    return tmp_path


def test_ids_are_spelled_like_the_dataset_plugins(index_dir: Path) -> None:
    ds = merbench.dataset("folder", root=str(index_dir))
    assert [s.id for s in ds.samples] == ["samm/006/006_1_2", "smic/s01/s01_ne_01",
                                          "casme2/sub01/EP02_01f", "samm/006/006_1_3"]
    assert ds.datasets() == ["casme2", "samm", "smic"]
    assert [s.clip for s in ds.for_dataset("samm")] == ["006_1_2", "006_1_3"]
    assert ds.for_dataset("mmew") == []
    assert ds.samples[1].path == str(index_dir / "arrays" / "s1_ne_01.npy")


def test_bgr_as_read_and_rgb_reordered(index_dir: Path) -> None:
    ds = merbench.dataset("folder", root=str(index_dir))
    image = ds.load(ds.samples[0])
    assert image.shape == (28, 28, 3) and image.dtype == np.uint8
    assert image[5, 5].tolist() == [10, 20, 30] and image[0, 0].tolist() == [1, 2, 3]
    rgb = merbench.dataset("folder", root=str(index_dir), channels="rgb")
    assert rgb.load(rgb.samples[0])[5, 5].tolist() == [30, 20, 10]
    assert rgb.load(rgb.samples[2])[5, 5].tolist() == [10, 20, 30]
    assert rgb.load(rgb.samples[0]).flags.c_contiguous
    with pytest.raises(ConfigError, match="channels 'rgba'"):
        merbench.dataset("folder", root=str(index_dir), channels="rgba")


def test_npy_is_returned_as_stored(index_dir: Path) -> None:
    ds = merbench.dataset("folder", root=str(index_dir / "index.csv"), channels="rgb")
    array = ds.load(ds.samples[1])
    assert array.dtype == np.float32 and array.shape == (2, 3, 4)
    assert array[1, 2, 3] == 23.0


def test_megc2019_space_from_codes(index_dir: Path) -> None:
    ds = merbench.dataset("folder", root=str(index_dir))
    assert ds.classes("megc2019") == ["negative", "positive", "surprise"]
    assert ds.summary("megc2019")["classes"] == {"negative": 2, "positive": 1, "surprise": 1}
    assert ds.summary()["classes"] == {"0": 2, "1": 1, "2": 1}
    names = index_dir / "names.csv"
    names.write_text("dataset,subject,clip,label,path\nsmic,s1,s1_po_01,Positive,flow/casme2.png\n")
    assert merbench.dataset("folder", index=str(names)).label_spaces["megc2019"] == {
        "Positive": "positive"}
    other = index_dir / "other.csv"
    other.write_text("dataset,subject,clip,label,path\ncasme2,1,EP1,others,flow/casme2.png\n")
    assert "megc2019" not in merbench.dataset("folder", root=str(index_dir),
                                              index="other.csv").label_spaces


def test_missing_file_names_the_sample(index_dir: Path) -> None:
    ds = merbench.dataset("folder", root=str(index_dir))
    missing = ds.samples[3]
    with pytest.raises(DataError, match=r"samm/006/006_1_3: input file .*missing.png does not "):
        ds.load(missing)
    assert ds.check(ds.samples[0]) == []
    assert ds.check(missing)[0].startswith("samm/006/006_1_3: input file")


def test_bad_indexes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no index given"):
        merbench.dataset("folder")
    with pytest.raises(DataError, match="holds no index.csv"):
        merbench.dataset("folder", root=str(tmp_path))
    (tmp_path / "index.csv").write_text("dataset,subject,clip,path\nsamm,6,006_1_2,a.png\n")
    with pytest.raises(DataError, match="lacks column.s. label"):
        merbench.dataset("folder", root=str(tmp_path))
    (tmp_path / "index.csv").write_text("dataset,subject,clip,label,path\nsamm,6,006_1_2,0,\n")
    with pytest.raises(DataError, match="row 2 has no path"):
        merbench.dataset("folder", root=str(tmp_path))
