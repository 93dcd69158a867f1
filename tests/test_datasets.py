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


# ------------------------------------------------------------------------------------------- plain folders


def folder_spec(root: Path, defect: str = "broken_large") -> dict[str, str]:
    """A plain-folder view of an MVTec category: its train/good folder and one defect type with its masks."""
    return {"test_good": str(root / "test" / "good"), "test_defect": str(root / "test" / defect),
            "masks": str(root / "ground_truth" / defect)}


def test_a_plain_folder_gives_the_mvtec_split_of_the_same_images(bottle_dir: Path):
    mvtec = load_dataset(str(bottle_dir), seed=3)
    folder = load_dataset(str(bottle_dir / "train" / "good"), seed=3, **folder_spec(bottle_dir))
    assert folder.name == "bottle"
    for part in ("train", "validation"):
        assert [s.image_path for s in getattr(folder, part)] == [s.image_path for s in getattr(mvtec, part)]
    wanted = [s for s in mvtec.test if s.defect in ("good", "broken_large")]
    key = lambda s: (s.image_path, s.mask_path, s.label, s.has_mask_annotation)  # noqa: E731
    assert sorted(map(key, folder.test)) == sorted(map(key, wanted))
    unannotated = load_dataset(str(bottle_dir / "train" / "good"),
                               test_defect=str(bottle_dir / "test" / "broken_small"))
    assert not unannotated.has_masks and {s.label for s in unannotated.test} == {1}


def test_plain_folder_mistakes_are_clear_errors(bottle_subset: Path, tmp_path: Path):
    train_good = str(bottle_subset / "train" / "good")
    spec = folder_spec(bottle_subset)
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ((str(empty),), {}, "holds no images"),
        ((train_good,), {"masks": spec["masks"]}, "--masks needs --test-defect"),
        ((train_good,), {"test_good": train_good}, "also training images"),
        ((str(bottle_subset),), {"test_good": spec["test_good"]}, "go with a plain folder"),
        ((train_good,), {"test_defect": str(tmp_path / "missing")}, "folder not found"),
    ]
    orphan = tmp_path / "masks"
    orphan.mkdir()
    for mask in (bottle_subset / "ground_truth" / "broken_large").iterdir():
        (orphan / mask.name).write_bytes(mask.read_bytes())
    (orphan / "999_mask.png").write_bytes(mask.read_bytes())
    cases.append(((train_good,), {**spec, "masks": str(orphan)}, "mask\\(s\\) with no defect image: 999"))
    partial = tmp_path / "partial"
    partial.mkdir()
    for mask in sorted((bottle_subset / "ground_truth" / "broken_large").iterdir())[1:]:
        (partial / mask.name).write_bytes(mask.read_bytes())
    cases.append(((train_good,), {**spec, "masks": str(partial)}, "no mask for the defect image .*000.png"))
    mixed = tmp_path / "mixed"
    for defect in ("broken_large", "contamination"):  # 000.png in both: masks cannot be matched by stem
        (mixed / defect).mkdir(parents=True)
        for image in (bottle_subset / "test" / defect).iterdir():
            (mixed / defect / image.name).write_bytes(image.read_bytes())
    cases.append(((train_good,), {**spec, "test_defect": str(mixed)}, "share the stem"))
    for args, kwargs, message in cases:
        with pytest.raises(DatasetError, match=message):
            load_dataset(*args, **kwargs)
    with pytest.raises(DatasetError, match="pass --category"):  # an MVTec root is never read as a plain folder
        load_dataset(str(bottle_subset.parent))


def test_training_on_a_plain_folder_equals_training_on_the_mvtec_spec(bottle_subset: Path, tmp_path: Path, capsys):
    """Same images, seed and split: the same weights, so the same metrics; rdedge evaluate finds the recorded test
    folders through the run's train_log.json, and the exported model keeps their names only."""
    import json

    from export.onnx import export_onnx
    from rdedge.main import main
    from train.checkpoint import load_checkpoint

    common = ["--epochs", "1", "--image-size", "64", "--batch-size", "8", "--max-train-images", "12", "--quiet"]
    spec = folder_spec(bottle_subset)
    folder_args = ["--test-good", spec["test_good"], "--test-defect", spec["test_defect"], "--masks", spec["masks"]]
    assert main(["train", "--data", str(bottle_subset), "--out", str(tmp_path / "mvtec"), *common]) == 0
    held_out = load_checkpoint(tmp_path / "mvtec")[0].training["held_out_score_history"][0]
    assert (f"held-out good images (median score): {held_out:.4g} after the last epoch, lowest {held_out:.4g} after "
            "epoch 1") in capsys.readouterr().out
    assert main(["train", "--data", str(bottle_subset / "train" / "good"), "--out", str(tmp_path / "folder"),
                 *folder_args, *common]) == 0
    hashes = {run: load_checkpoint(tmp_path / run)[0].weights_sha256 for run in ("mvtec", "folder")}
    assert hashes["mvtec"] == hashes["folder"]
    report = export_onnx(tmp_path / "folder", check_images=2)
    assert report.metadata.training["masks"] == "broken_large" and "/" not in report.metadata.training["test_good"]
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "folder"), "--json", "--quiet"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert (metrics["n_images"], metrics["n_anomalous"]) == (7, 3) and metrics["pixel_auroc"] is not None
