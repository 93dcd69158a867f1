"""Dataset specs, splits and masks (sdk.datasets) on the real MVTec bottle and ELPV data."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdk.datasets import ELPV_SPLIT_SEED, load_dataset
from sdk.errors import DatasetError


def test_mvtec_bottle_layout(bottle_dir: Path):
    ds = load_dataset(str(bottle_dir.parent), "bottle")
    assert ds.name == "bottle"
    assert len(ds.train) + len(ds.validation) == 209
    assert len(ds.validation) == round(0.1 * 209)
    assert {s.defect for s in ds.test} == {"good", "broken_large", "broken_small", "contamination"}
    assert sum(s.label for s in ds.test) == 63 and len(ds.test) == 83
    assert ds.has_masks
    # the same folder given directly gives the same split
    assert [s.name for s in load_dataset(str(bottle_dir)).validation] == [s.name for s in ds.validation]


def test_validation_is_disjoint_seeded_and_good_only(bottle_dir: Path):
    a = load_dataset(str(bottle_dir), seed=1)
    b = load_dataset(str(bottle_dir), seed=1)
    c = load_dataset(str(bottle_dir), seed=2)
    assert [s.name for s in a.validation] == [s.name for s in b.validation]
    assert [s.name for s in a.validation] != [s.name for s in c.validation]
    assert not {s.name for s in a.train} & {s.name for s in a.validation}
    assert all(s.label == 0 and s.name.startswith("train/good") for s in a.train + a.validation)


def test_masks_are_empty_for_good_and_set_for_defects(bottle_dir: Path):
    ds = load_dataset(str(bottle_dir))
    good = next(s for s in ds.test if s.label == 0)
    bad = next(s for s in ds.test if s.label == 1)
    assert not good.load_mask(64).any()
    mask = bad.load_mask(64)
    assert mask.shape == (64, 64) and mask.any()


def test_elpv_split_is_fixed_documented_and_excludes_uncertain_cells():
    pytest.importorskip("elpv_dataset", reason="elpv-dataset is installed by the dev extra")
    ds = load_dataset("elpv:mono")
    good_train = len(ds.train) + len(ds.validation)
    good_test = sum(1 for s in ds.test if s.label == 0)
    defective = sum(s.label for s in ds.test)
    # 588 functional mono cells halved; 313 mono cells with defect probability 1; 1/3 and 2/3 cells left out
    assert (good_train, good_test, defective) == (294, 294, 313)
    names = {s.name.split("/", 1)[1] for s in ds.train + ds.validation + ds.test}
    assert len(names) == 294 + 294 + 313
    again = load_dataset("elpv:mono")
    assert [s.name for s in again.test] == [s.name for s in ds.test]
    assert not ds.has_masks and ds.test[0].load_mask(32) is None
    image = ds.train[0].load_image()
    assert image.shape == (300, 300)
    assert ELPV_SPLIT_SEED  # the split seed is a documented constant


@pytest.mark.parametrize("spec", ["elpv:thin", "/nonexistent/folder"])
def test_bad_specs_raise_dataset_error(spec: str):
    with pytest.raises(DatasetError):
        load_dataset(spec)


def test_root_without_category_lists_categories(bottle_dir: Path):
    with pytest.raises(DatasetError, match="bottle"):
        load_dataset(str(bottle_dir.parent))
