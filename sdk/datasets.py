"""Datasets: MVTec-AD-layout folders and the ELPV solar cells, as lists of :class:`Sample`.

A dataset *spec* is a string:

* a folder path in the MVTec AD layout, either ``ROOT`` with ``category=NAME`` or ``ROOT/NAME`` directly::

      NAME/train/good/*.png              good training images
      NAME/test/good/*.png               good test images
      NAME/test/<defect>/*.png           anomalous test images
      NAME/ground_truth/<defect>/<stem>_mask.png   masks (optional; without them pixel metrics are skipped)

* a plain folder of good images (searched recursively; PNG, JPEG, BMP, TIFF, WebP), as anomalib's Folder data:
  the test set comes from ``test_good`` and ``test_defect`` folders (recursive), with optional ``masks`` matched
  to defect images by file stem (``part7.png`` ↔ ``part7.png`` or ``part7_mask.png``). A folder that is (or
  holds categories) in the MVTec layout is read as MVTec;

* ``elpv:mono`` or ``elpv:poly``: the ELPV electroluminescence solar cells of the ``elpv-dataset`` package
  (300x300 grey, image-level labels only). Split, fixed and seeded (seed :data:`ELPV_SPLIT_SEED`):

  - cells with defect probability 0 ("functional") are shuffled and halved: one half trains, the other half tests;
  - cells with defect probability 1 are test anomalies;
  - cells with probability 1/3 or 2/3 are **left out**: their annotators were unsure, so they are neither good
    training data nor a fair test label.

In both cases part of the good training images (``validation_fraction``, seeded) is held out as a validation set,
used only to calibrate the threshold and the score normalisation. Nothing is ever selected on the test set.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .contract import ImageSize
from .errors import DatasetError
from .image import IMAGE_SUFFIXES, SizeLike, list_images, prepare_image, read_image, resize_mask

if TYPE_CHECKING:
    from .metadata import ModelMetadata

PACKAGED_SCHEMES = ("elpv:",)
"""Spec prefixes of datasets that come from a package (the same on every machine), not from a folder."""
TRAIN_LOG = "train_log.json"
"""The trainer's local record in a run folder (full metadata, local paths included); exported models never carry
those paths, so a model opened in its run folder finds its training data through this file."""
ELPV_SPLIT_SEED = 20260101
"""Seed of the fixed ELPV good-cell split (independent of the training seed, so all runs share one test set)."""


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    Attributes:
        name: Identifier, unique within the dataset (e.g. ``test/broken_large/000.png``).
        label: 0 for good, 1 for anomalous.
        defect: Defect type (``good`` for good images).
        image_path: Path of the image file.
        mask_path: Path of the ground-truth mask, if any.
        has_mask_annotation: Whether the dataset has pixel annotations (then good images have an all-zero mask).
    """

    name: str
    label: int
    defect: str
    image_path: Path
    mask_path: Path | None = None
    has_mask_annotation: bool = False

    def load_image(self) -> np.ndarray:
        """The image as stored (BGR, grey or BGRA; see :func:`sdk.image.read_image`)."""
        return read_image(self.image_path)

    def load_mask(self, size: SizeLike) -> np.ndarray | None:
        """The binary ground-truth mask at the model size, all False for good images; None without annotation."""
        if not self.has_mask_annotation:
            return None
        if self.mask_path is None:
            return np.zeros(ImageSize.parse(size), dtype=bool)
        return resize_mask(read_image(self.mask_path), size)


@dataclass(frozen=True)
class DatasetSplit:
    """Train / validation / test samples of one dataset.

    Attributes:
        name: Human-readable name, e.g. ``bottle`` or ``elpv:mono``.
        spec: The spec it was loaded from.
        train: Good images to train on.
        validation: Good images held out from training for calibration.
        test: Good and anomalous test images.
    """

    name: str
    spec: str
    train: list[Sample]
    validation: list[Sample]
    test: list[Sample]

    @property
    def has_masks(self) -> bool:
        """Whether the test samples carry pixel annotations."""
        return any(s.has_mask_annotation for s in self.test)


FOLDER_TEST_KEYS = ("test_good", "test_defect", "masks")
"""The test-set folders of a plain-folder dataset, as ``load_dataset`` keywords and training-config keys."""


def load_dataset(
    spec: str, category: str | None = None, *, validation_fraction: float = 0.1, seed: int = 0,
    test_good: str | os.PathLike[str] | None = None, test_defect: str | os.PathLike[str] | None = None,
    masks: str | os.PathLike[str] | None = None,
) -> DatasetSplit:
    """Load a dataset from its spec (see the module docstring).

    Args:
        spec: Folder path or ``elpv:mono`` / ``elpv:poly``.
        category: MVTec category, when ``spec`` is the root holding several.
        validation_fraction: Fraction of the good training images held out for calibration (at least 2 images).
        seed: Seed of the validation hold-out.
        test_good: Plain folder only: good test images.
        test_defect: Plain folder only: defective test images.
        masks: Plain folder only: masks of the defective test images, matched by file stem.

    Raises:
        DatasetError: Unknown spec, missing or empty folders, too few images, test folders given with an MVTec or
            packaged dataset, a mask with no image or an image with no mask, two defect images of one stem, or a
            test image that is also a training image.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise DatasetError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    folders = {"test_good": test_good, "test_defect": test_defect, "masks": masks}
    packaged = spec.startswith(PACKAGED_SCHEMES)
    plain = not packaged and is_plain_folder(Path(spec), category)
    given = [f"--{key.replace('_', '-')}" for key, value in folders.items() if value]
    if given and not plain:
        raise DatasetError(f"{' '.join(given)} go with a plain folder of good images, not with {spec}")
    if packaged:
        name, train, test = _load_elpv(spec.split(":", 1)[1])
    elif plain:
        name, train, test = _load_folder(Path(spec), **folders)
    else:
        name, train, test = _load_mvtec(Path(spec), category)
    train, validation = _hold_out(train, validation_fraction, seed)
    return DatasetSplit(name=name, spec=spec, train=train, validation=validation, test=test)


def _hold_out(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    n_val = max(2, round(fraction * len(samples)))
    if len(samples) - n_val < 2:
        raise DatasetError(f"too few good training images ({len(samples)}) to hold out {n_val} for validation")
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    val_idx = set(order[:n_val])
    return (
        [s for i, s in enumerate(samples) if i not in val_idx],
        [s for i, s in enumerate(samples) if i in val_idx],
    )


def is_plain_folder(root: Path, category: str | None) -> bool:
    """Whether a folder spec is a plain folder of good images: not in the MVTec layout, holds no MVTec category,
    and no category is asked for."""
    if category or not root.is_dir() or (root / "train" / "good").is_dir():
        return False
    return not any((p / "train" / "good").is_dir() for p in root.iterdir() if p.is_dir())


def _folder_name(root: Path) -> str:
    """A readable name for a plain folder: its own, or its parent's when it is called ``good`` or ``train``."""
    for part in reversed(root.resolve().parts):
        if part not in ("good", "train", "images"):
            return part
    return root.name


def _images_in(folder: str | os.PathLike[str], role: str) -> list[Path]:
    path = Path(folder)
    if not path.is_dir():
        raise DatasetError(f"{role} folder not found: {path}")
    images = list_images(path, recursive=True)
    if not images:
        raise DatasetError(f"{role} folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}, searched recursively)")
    return images


def _load_folder(root: Path, test_good: str | os.PathLike[str] | None, test_defect: str | os.PathLike[str] | None,
                 masks: str | os.PathLike[str] | None) -> tuple[str, list[Sample], list[Sample]]:
    train_paths = _images_in(root, "training")
    train = [Sample(name=f"train/good/{p.relative_to(root).as_posix()}", label=0, defect="good", image_path=p)
             for p in train_paths]
    if masks and not test_defect:
        raise DatasetError("--masks needs --test-defect: masks belong to defective test images")
    annotated = masks is not None
    mask_by_stem: dict[str, Path] = {}
    if annotated:
        for p in _images_in(masks, "mask"):
            stem = p.stem.removesuffix("_mask")
            if stem in mask_by_stem:
                raise DatasetError(f"two masks for the stem {stem!r}: {mask_by_stem[stem]} and {p}")
            mask_by_stem[stem] = p
    test: list[Sample] = []
    if test_good:
        base = Path(test_good)
        test += [Sample(name=f"test/good/{p.relative_to(base).as_posix()}", label=0, defect="good", image_path=p,
                        has_mask_annotation=annotated) for p in _images_in(base, "good test")]
    if test_defect:
        base = Path(test_defect)
        stems: dict[str, Path] = {}
        for p in _images_in(base, "defect test"):
            if p.stem in stems and annotated:
                raise DatasetError(f"two defect images share the stem {p.stem!r} ({stems[p.stem]}, {p}): masks are "
                                   "matched by stem, so rename one")
            stems[p.stem] = p
            mask = mask_by_stem.get(p.stem) if annotated else None
            if annotated and mask is None:
                raise DatasetError(f"no mask for the defect image {p} in {masks} (looked for {p.stem}.* and "
                                   f"{p.stem}_mask.*)")
            defect = p.parent.name if p.parent != base else "defect"
            test.append(Sample(name=f"test/{defect}/{p.relative_to(base).as_posix()}", label=1, defect=defect,
                               image_path=p, mask_path=mask, has_mask_annotation=annotated))
        orphans = sorted(set(mask_by_stem) - set(stems))
        if orphans:
            raise DatasetError(f"{len(orphans)} mask(s) with no defect image: {', '.join(orphans[:5])}")
    shared = {p.resolve() for p in train_paths} & {s.image_path.resolve() for s in test}
    if shared:
        raise DatasetError(f"{len(shared)} test image(s) are also training images, e.g. {sorted(shared)[0]}: a "
                           "test set must never be trained on")
    return _folder_name(root), train, test


def _resolve_mvtec_root(root: Path, category: str | None) -> Path:
    if category:
        root = root / category
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    if not (root / "train" / "good").is_dir():
        subdirs = sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir())
        hint = f"; categories found here: {', '.join(subdirs)} (pass --category)" if subdirs else ""
        raise DatasetError(f"{root} is not in the MVTec AD layout (no train/good folder){hint}")
    return root


def _load_mvtec(root: Path, category: str | None) -> tuple[str, list[Sample], list[Sample]]:
    root = _resolve_mvtec_root(root, category)
    train = [
        Sample(name=f"train/good/{p.name}", label=0, defect="good", image_path=p)
        for p in list_images(root / "train" / "good")
    ]
    test: list[Sample] = []
    gt_root = root / "ground_truth"
    annotated = gt_root.is_dir()
    test_root = root / "test"
    if test_root.is_dir():
        for defect_dir in sorted(p for p in test_root.iterdir() if p.is_dir()):
            defect = defect_dir.name
            for p in list_images(defect_dir):
                mask = None
                if defect != "good" and annotated:
                    mask = gt_root / defect / f"{p.stem}_mask.png"
                    if not mask.is_file():
                        raise DatasetError(f"missing ground-truth mask {mask} for {p}")
                test.append(
                    Sample(
                        name=f"test/{defect}/{p.name}",
                        label=int(defect != "good"),
                        defect=defect,
                        image_path=p,
                        mask_path=mask,
                        has_mask_annotation=annotated,
                    )
                )
    if not train:
        raise DatasetError(f"no training images in {root / 'train' / 'good'}")
    return root.name, train, test


def elpv_labels_path() -> Path:
    """Path of the ``labels.csv`` shipped by the ``elpv-dataset`` package."""
    try:
        import elpv_dataset
    except ImportError as exc:
        raise DatasetError("the ELPV data needs the elpv-dataset package: pip install elpv-dataset") from exc
    return Path(os.path.dirname(elpv_dataset.__file__)) / "data" / "labels.csv"


def _load_elpv(cell_type: str) -> tuple[str, list[Sample], list[Sample]]:
    if cell_type not in ("mono", "poly"):
        raise DatasetError(f"unknown ELPV cell type {cell_type!r}: use elpv:mono or elpv:poly")
    labels = elpv_labels_path()
    rows = []
    for line in labels.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append((parts[0], float(parts[1]), parts[2]))
    rows = [r for r in rows if r[2] == cell_type]
    good = sorted(r[0] for r in rows if r[1] == 0.0)
    defective = sorted(r[0] for r in rows if r[1] == 1.0)
    random.Random(ELPV_SPLIT_SEED).shuffle(good)
    half = len(good) // 2
    base = labels.parent

    def sample(rel: str, split: str, label: int) -> Sample:
        return Sample(
            name=f"{split}/{rel}", label=label, defect="defective" if label else "good", image_path=base / rel
        )

    train = [sample(r, "train", 0) for r in sorted(good[:half])]
    test = [sample(r, "test", 0) for r in sorted(good[half:])] + [sample(r, "test", 1) for r in defective]
    return f"elpv:{cell_type}", train, test


def load_prepared(samples: Sequence[Sample], size: SizeLike, *, desc: str = "loading",
                  progress: bool = True) -> np.ndarray:
    """Read and prepare images → (N, height, width, 3) uint8 RGB, exactly as the Detector prepares its input."""
    from tqdm import tqdm

    out = np.empty((len(samples), *ImageSize.parse(size), 3), dtype=np.uint8)
    for i, sample in enumerate(tqdm(samples, desc=desc, disable=not progress, leave=False)):
        out[i] = prepare_image(sample.load_image(), size)
    return out


def portable_spec(spec: str) -> str:
    """A dataset spec fit to ship in a model: a packaged spec as is, a folder by its name only."""
    return spec if spec.startswith(PACKAGED_SCHEMES) else Path(spec).name


def model_data(metadata: ModelMetadata, model_path: str | os.PathLike[str] | None = None) -> dict[str, str] | None:
    """Where a model's training data is on this machine: ``data`` (and a plain folder's ``test_good``,
    ``test_defect``, ``masks``) from the metadata when it records them as a packaged spec or as the trainer's local
    paths (a checkpoint's), else from the :data:`TRAIN_LOG` of the run folder holding ``model_path``; ``None``
    when neither says."""
    keys = ("data", *FOLDER_TEST_KEYS)
    training = metadata.training
    spec = training.get("data")
    if not spec:
        return None
    if spec.startswith(PACKAGED_SCHEMES) or Path(spec).is_absolute() or ("/" in spec and Path(spec).exists()):
        return {k: training[k] for k in keys if training.get(k)}  # a portable name has no "/": a local record
    if model_path is not None:
        try:
            local = json.loads((Path(model_path).parent / TRAIN_LOG).read_text(encoding="utf-8"))["training"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if local.get("data") and Path(local["data"]).name == Path(spec).name:
            return {k: local[k] for k in keys if local.get(k)}
    return None


def load_model_dataset(metadata: ModelMetadata, *, data: str | None = None, category: str | None = None,
                       model_path: str | os.PathLike[str] | None = None,
                       **test_folders: str | None) -> DatasetSplit:
    """The dataset split a model was trained with (same spec, category, validation fraction and seed).

    Args:
        metadata: The model's (or a checkpoint's) metadata.
        data: Dataset spec to use instead of the recorded one.
        category: MVTec category instead of the recorded one (with ``data``: the category of ``data``).
        model_path: The model file, whose run folder's :data:`TRAIN_LOG` may say where the data is here.
        **test_folders: ``test_good``, ``test_defect``, ``masks`` of a plain-folder dataset, instead of the
            recorded ones.

    Raises:
        DatasetError: The model records its data by name only and no local record says where it is.
    """
    training = metadata.training
    local = {"data": data} if data else model_data(metadata, model_path)
    if local is not None:
        local.update({k: v for k, v in test_folders.items() if v})  # given test folders replace recorded ones
    if local is None:
        raise DatasetError(
            f"the model records its training data by name only ({training.get('data')!r}, category "
            f"{training.get('category')!r}): pass the dataset (--data PATH)"
        )
    return load_dataset(
        local["data"],
        category if data else (category or training.get("category")),
        validation_fraction=training.get("validation_fraction", 0.1),
        seed=training.get("seed", 0),
        **{k: local.get(k) for k in FOLDER_TEST_KEYS},
    )


def reference_images(metadata: ModelMetadata, n_images: int, *, progress: bool = False,
                     model_path: str | os.PathLike[str] | None = None,
                     dataset: DatasetSplit | None = None) -> np.ndarray:
    """Up to ``n_images`` real prepared images of a model's own dataset: its held-out validation images first.

    Used by the export self-check and the benchmarks; nothing here is used to select or tune a model.

    Args:
        metadata: The model's metadata (its image size; its dataset unless ``dataset`` is given).
        n_images: How many images at most.
        progress: Show a progress bar.
        model_path: See :func:`load_model_dataset`.
        dataset: The model's dataset, when the caller has loaded it already.
    """
    dataset = dataset or load_model_dataset(metadata, model_path=model_path)
    samples = (dataset.validation + dataset.test)[:n_images]
    return load_prepared(samples, metadata.image_size, desc="reference images", progress=progress)
